//! A 200 MiB file round-trips in the mirror layout with bounded memory. Its own
//! test binary, so no other test's allocations count towards the peak.
//! Against SeaweedFS when the test bed runs, else a `file://` store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Store, StoreFixture};
use sync_core::testkit::conformance;
use sync_s3::Layout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_file_streams_with_bounded_memory() {
    let store = if std::env::var("TETHER_TEST_S3_ENDPOINT").is_ok() {
        match Store::s3() {
            Some(s) => s,
            None => return,
        }
    } else {
        Store::File
    };
    let fixture = StoreFixture::new(store, Layout::Mirror);
    // Upload holds (parts_in_flight + 1) × part_size = 40 MiB; a restore
    // streams in 256 KiB batches. 96 MiB leaves room for the HTTP stack.
    let growth = conformance::large_file(&fixture, 200 << 20, 96 << 20).await;
    eprintln!("peak memory grew by {} MiB", growth >> 20);
}
