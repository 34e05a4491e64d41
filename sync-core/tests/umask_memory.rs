//! File and directory modes under umask 000 and 077, with the in-memory
//! backend. The umask is process-wide: this binary holds this one test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use sync_core::Backend;
use sync_core::testkit::MemoryBackend;
use sync_core::testkit::conformance::{self, Fixture, Hostile};

struct Memory;

#[async_trait]
impl Fixture for Memory {
    async fn fresh(&self) -> Arc<dyn Backend> {
        Arc::new(MemoryBackend::new())
    }

    async fn plant_hostile(&self, _case: &Hostile) -> Option<Arc<dyn Backend>> {
        None
    }
}

#[tokio::test]
async fn modes_round_trip_under_umask_000_and_077() {
    conformance::umask_round_trip(&Memory).await;
}
