//! The conformance suite's 200 MiB check on a `file://` bare repository:
//! blobs are written with gix's streaming writer and restored through
//! `git cat-file`, so peak memory must stay far below the file size. A test
//! binary of its own, so no other test's allocations count.

#![allow(clippy::expect_used)]

mod common;

use common::{GitFixture, Server};
use sync_core::testkit::conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_file_round_trips_with_bounded_memory() {
    let fixture = GitFixture::new(Server::File).expect("file:// needs no server");
    let growth = conformance::large_file(&fixture, 200 << 20, 64 << 20).await;
    eprintln!("peak RSS grew by {} MiB for a 200 MiB file", growth >> 20);
}
