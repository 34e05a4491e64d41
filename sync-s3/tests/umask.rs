//! File and directory modes under umask 000 and 077 through SeaweedFS,
//! Azurite (snapshots and mirror), `file://` and `memory://`. The umask is
//! process-wide: this binary holds this one test, which runs the stores one
//! after the other.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Store, StoreFixture};
use sync_core::testkit::conformance;
use sync_s3::Layout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_round_trip_under_umask_000_and_077() {
    let mut stores = vec![Store::File, Store::Memory];
    stores.extend(Store::s3());
    stores.extend(Store::azure());
    for store in stores {
        for layout in [Layout::Snapshots, Layout::Mirror] {
            let f = StoreFixture::new(store.clone(), layout);
            conformance::umask_round_trip(&f).await;
        }
    }
}
