//! sync-core's backend conformance suite against bare repositories on every
//! transport: `file://` (no server), git daemon (`git://`), smart HTTP with
//! basic auth (`http://`) and sshd (`ssh://`), the last three started by
//! `scripts/testbed/git-*.sh`.

mod common;

use common::{GitFixture, Server};
use sync_core::testkit::conformance;

macro_rules! suite {
    ($server:ident, $module:ident) => {
        mod $module {
            use super::*;

            fn fixture() -> Option<GitFixture> {
                GitFixture::new(Server::$server)
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn round_trip() {
                if let Some(f) = fixture() {
                    conformance::round_trip(&f).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn deletes_and_renames() {
                if let Some(f) = fixture() {
                    conformance::deletes_and_renames(&f).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn idempotent_push() {
                if let Some(f) = fixture() {
                    conformance::idempotent_push(&f).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn restore_policies() {
                if let Some(f) = fixture() {
                    conformance::restore_policies(&f).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn modes_round_trip() {
                if let Some(f) = fixture() {
                    conformance::modes_round_trip(&f).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn special_mode_bits_are_not_restored() {
                if let Some(f) = fixture() {
                    conformance::special_mode_bits_are_not_restored(&f).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn repository_directories_are_not_restored() {
                if let Some(f) = fixture() {
                    conformance::repository_directories_are_not_restored(&f).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn hostile_state_is_refused() {
                if let Some(f) = fixture() {
                    conformance::hostile_state_is_refused(&f).await;
                }
            }
        }
    };
}

suite!(File, file);
suite!(Daemon, daemon);
suite!(Http, http);
suite!(Ssh, ssh);
