//! sync-core's backend conformance suite, for both layouts, against
//! SeaweedFS (the test bed's real S3 server), `file://` and `memory://`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Store, StoreFixture};
use sync_core::testkit::conformance;
use sync_s3::Layout;

macro_rules! suite {
    ($modname:ident, $store:expr, $layout:expr) => {
        mod $modname {
            use super::*;

            fn fixture() -> Option<StoreFixture> {
                let store: Option<Store> = $store;
                Some(StoreFixture::new(store?, $layout))
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn round_trip() {
                let Some(f) = fixture() else { return };
                conformance::round_trip(&f).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn deletes_and_renames() {
                let Some(f) = fixture() else { return };
                conformance::deletes_and_renames(&f).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn idempotent_push() {
                let Some(f) = fixture() else { return };
                conformance::idempotent_push(&f).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn restore_policies() {
                let Some(f) = fixture() else { return };
                conformance::restore_policies(&f).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn modes_round_trip() {
                let Some(f) = fixture() else { return };
                conformance::modes_round_trip(&f).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn special_mode_bits_are_not_restored() {
                let Some(f) = fixture() else { return };
                conformance::special_mode_bits_are_not_restored(&f).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn repository_directories_are_not_restored() {
                let Some(f) = fixture() else { return };
                conformance::repository_directories_are_not_restored(&f).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn hostile_state_is_refused() {
                let Some(f) = fixture() else { return };
                conformance::hostile_state_is_refused(&f).await;
            }
        }
    };
}

suite!(s3_snapshots, Store::s3(), Layout::Snapshots);
suite!(s3_mirror, Store::s3(), Layout::Mirror);
suite!(file_snapshots, Some(Store::File), Layout::Snapshots);
suite!(file_mirror, Some(Store::File), Layout::Mirror);
suite!(memory_snapshots, Some(Store::Memory), Layout::Snapshots);
suite!(memory_mirror, Some(Store::Memory), Layout::Mirror);
