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
