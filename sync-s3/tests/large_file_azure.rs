//! A 200 MiB file round-trips through Azurite (the Azure Blob emulator) in
//! both layouts, one after the other, with bounded memory (the peak is
//! reset before each). Its own test binary, so no other test's allocations
//! count towards the peak. Skipped when the Azurite test bed is not running
//! (a failure under `TETHER_TESTBED=1`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Store, StoreFixture};
use sync_core::testkit::conformance;
use sync_s3::Layout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_file_streams_with_bounded_memory_on_azure() {
    let Some(store) = Store::azure() else { return };
    for layout in [Layout::Snapshots, Layout::Mirror] {
        let fixture = StoreFixture::new(store.clone(), layout);
        // As large_file_{snapshots,mirror}.rs: uploads hold
        // (parts_in_flight + 1) × part_size = 40 MiB (Azure: staged
        // blocks), restores stream in 256 KiB batches.
        let growth = conformance::large_file(&fixture, 200 << 20, 96 << 20).await;
        eprintln!("{layout}: peak memory grew by {} MiB", growth >> 20);
    }
}
