//! Test support for backends and engines (feature `testkit`).
//!
//! * [`conformance`]: the suite every [`Backend`](crate::Backend) runs against
//!   its real server, like object_store's `integration.rs`. A backend is done
//!   when it passes the same suite as the others.
//! * [`MemoryBackend`]: a recording backend that keeps state in memory (and
//!   optionally in a directory, so it survives a process being killed); it
//!   proves the engine and the suite itself.
//! * [`testbed_var`]: reads a test server's endpoint from the environment,
//!   skipping locally but failing in CI when the server is missing.

// Test support: failing loudly (expect/panic) is the point here.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod conformance;

/// Declares module `$module` with one `#[tokio::test]` per check of the
/// [`conformance`] suite, each run on the fixture `$fixture` (an
/// expression of type `Option<impl Fixture>`; `None` skips, for a test
/// server that is not running). The calling crate needs tokio's `macros`
/// and `rt-multi-thread` features as dev-dependencies.
///
/// ```ignore
/// sync_core::conformance_suite!(file_snapshots, Some(MyFixture::new()));
/// ```
#[macro_export]
macro_rules! conformance_suite {
    ($module:ident, $fixture:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_suite!(@tests $fixture;
                round_trip,
                deletes_and_renames,
                idempotent_push,
                restore_policies,
                subpath_restore,
                listing,
                modes_round_trip,
                special_mode_bits_are_not_restored,
                repository_directories_are_not_restored,
                hostile_state_is_refused
            );
        }
    };
    (@tests $fixture:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(fixture) = $fixture else { return };
                $crate::testkit::conformance::$check(&fixture).await;
            }
        )*
    };
}
mod memory;

pub use memory::{MemoryBackend, PushRecord};

/// Reads the environment variable `name` that `scripts/test.sh` sets for a
/// real test server. Returns `None` (and prints that the test is skipped)
/// when it is unset — unless `TETHER_TESTBED=1`, where a missing server is
/// a failure, so CI never skips silently.
///
/// # Panics
/// When `TETHER_TESTBED=1` and `name` is unset.
pub fn testbed_var(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            if std::env::var("TETHER_TESTBED").as_deref() == Ok("1") {
                panic!(
                    "{name} is not set although TETHER_TESTBED=1: the test bed did not start its server"
                );
            }
            eprintln!(
                "skipping: {name} is not set (run scripts/test.sh to start the test servers)"
            );
            None
        }
    }
}
