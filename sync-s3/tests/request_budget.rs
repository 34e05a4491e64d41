//! One request budget for the store (issue 14, item 10): a backend never
//! has more than `concurrency` requests in flight, whatever runs at once
//! on it — here a push and a restore together, in both layouts — and a
//! budget of a single request is enough for every operation (nothing
//! waits for a request while holding another: a listing or a `GET` body).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::interposer::Interposer;
use sync_core::{
    Backend, Checkpoint, ContentHash, FileMeta, Meta, RelPath, RestoreOptions, Source,
};
use sync_s3::{BackendOptions, Layout, ObjectStoreBackend};

const FILES: usize = 40;

/// Writes `FILES` files under `root/dir` and returns the checkpoint adding them.
fn files(root: &std::path::Path, dir: &str) -> Checkpoint {
    let mut c = Checkpoint::new();
    c.upsert(RelPath::new(dir).unwrap(), Meta::dir(0o755));
    std::fs::create_dir_all(root.join(dir)).unwrap();
    for i in 0..FILES {
        let rel = format!("{dir}/f{i:03}");
        let content = format!("{dir} {i} ").repeat(300).into_bytes();
        std::fs::write(root.join(&rel), &content).unwrap();
        c.upsert(
            RelPath::new(rel).unwrap(),
            Meta::File(FileMeta {
                size: content.len() as u64,
                mtime_ns: 1_700_000_000_000_000_000,
                mode: 0o644,
                hash: ContentHash::of(&content),
            }),
        );
    }
    c
}

fn backend(store: Arc<Interposer>, layout: Layout, concurrency: usize) -> ObjectStoreBackend {
    ObjectStoreBackend::new(
        store,
        "budget",
        "memory (counted)",
        BackendOptions {
            layout,
            concurrency,
            use_env: false,
            // Several packs per push in the snapshots layout.
            pack_size: 64 << 10,
            ..BackendOptions::default()
        },
    )
    .unwrap()
}

async fn a_push_and_a_restore_at_once_share_one_budget(layout: Layout) {
    const BUDGET: usize = 4;
    // Every request takes a moment, so streams overlap.
    let store = Interposer::new(
        Arc::new(object_store::memory::InMemory::new()),
        Duration::from_millis(3),
    );
    let b = backend(Arc::clone(&store), layout, BUDGET);
    let src = tempfile::tempdir().unwrap();
    b.push(&files(src.path(), "a"), &Source::new(src.path()))
        .await
        .unwrap();
    let more = files(src.path(), "b");
    let dest = tempfile::tempdir().unwrap();
    let source = Source::new(src.path());
    let options = RestoreOptions::default();
    let (pushed, restored) = tokio::join!(b.push(&more, &source), b.restore(dest.path(), &options));
    pushed.unwrap();
    let report = restored.unwrap();
    assert!(report.files_written >= FILES as u64, "{layout}: {report:?}");
    for i in 0..FILES {
        let rel = format!("a/f{i:03}");
        assert_eq!(
            std::fs::read(dest.path().join(&rel)).unwrap(),
            std::fs::read(src.path().join(&rel)).unwrap(),
            "{layout}: {rel}"
        );
    }
    let peak = store.peak_in_flight();
    assert!(
        peak <= BUDGET,
        "{layout}: {peak} requests in flight at once, budget {BUDGET}"
    );
    assert!(peak > 1, "{layout}: nothing ran in parallel ({peak})");
}

#[tokio::test]
async fn mirror_push_and_restore_share_one_budget() {
    a_push_and_a_restore_at_once_share_one_budget(Layout::Mirror).await;
}

#[tokio::test]
async fn snapshots_push_and_restore_share_one_budget() {
    a_push_and_a_restore_at_once_share_one_budget(Layout::Snapshots).await;
}

/// Push (enough times to retire old generations), restore and history
/// with one request at a time.
async fn everything_works_one_request_at_a_time(layout: Layout) {
    let store = Interposer::new(
        Arc::new(object_store::memory::InMemory::new()),
        Duration::ZERO,
    );
    let b = backend(Arc::clone(&store), layout, 1);
    let src = tempfile::tempdir().unwrap();
    let run = async {
        for round in 0..12 {
            b.push(
                &files(src.path(), &format!("r{round}")),
                &Source::new(src.path()),
            )
            .await
            .unwrap();
        }
        let dest = tempfile::tempdir().unwrap();
        let report = b
            .restore(dest.path(), &RestoreOptions::default())
            .await
            .unwrap();
        assert_eq!(report.files_written, 12 * FILES as u64, "{layout}");
        if layout == Layout::Snapshots {
            assert!(!b.history(5).await.unwrap().is_empty());
        }
    };
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap_or_else(|_| panic!("{layout}: stuck with a budget of one request"));
    assert_eq!(store.peak_in_flight(), 1, "{layout}");
}

#[tokio::test]
async fn mirror_works_one_request_at_a_time() {
    everything_works_one_request_at_a_time(Layout::Mirror).await;
}

#[tokio::test]
async fn snapshots_work_one_request_at_a_time() {
    everything_works_one_request_at_a_time(Layout::Snapshots).await;
}
