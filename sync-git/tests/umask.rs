//! File and directory modes under umask 000 and 077 through a bare
//! repository over `file://` (modes beyond the executable bit travel in
//! `.tether/modes`). The umask is process-wide: this binary holds this one
//! test.

mod common;

use common::{GitFixture, Server};
use sync_core::testkit::conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_round_trip_under_umask_000_and_077() {
    if let Some(f) = GitFixture::new(Server::File) {
        conformance::umask_round_trip(&f).await;
    }
}
