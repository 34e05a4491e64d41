//! `max_buffered_bytes` is honoured: pushes and restores of many files
//! that each fit the budget never hold more file content in memory at
//! once than the budget, whatever `concurrency` allows (issue 11, item 8).
//! A push past the read limits is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use sync_core::{
    Backend, Checkpoint, ContentHash, ExistingPolicy, FileMeta, Meta, RelPath, RestoreOptions,
    Source,
};
use sync_s3::{BackendOptions, Layout, ObjectStoreBackend};

const FILES: usize = 48;
const SIZE: usize = 300 << 10;
const BUDGET: usize = 1 << 20;

/// Writes `FILES` distinct files of `SIZE` bytes under `root` and returns
/// the checkpoint that adds them.
fn tree(root: &std::path::Path) -> Checkpoint {
    let mut c = Checkpoint::new();
    c.upsert(RelPath::new("d").unwrap(), Meta::dir(0o755));
    for i in 0..FILES {
        let rel = format!("d/f{i:03}");
        let content: Vec<u8> = (0..SIZE).map(|j| ((i * 31 + j) % 251) as u8).collect();
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join(&rel), &content).unwrap();
        c.upsert(
            RelPath::new(rel).unwrap(),
            Meta::File(FileMeta {
                size: SIZE as u64,
                mtime_ns: 1_700_000_000_000_000_000,
                mode: 0o644,
                hash: ContentHash::of(&content),
            }),
        );
    }
    c
}

fn files_under(root: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(root.join("d")).unwrap() {
        let e = e.unwrap();
        out.insert(
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read(e.path()).unwrap(),
        );
    }
    out
}

async fn push_and_restore_within_budget(layout: Layout) {
    let src = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let c = tree(src.path());
    let options = BackendOptions {
        layout,
        concurrency: 32,
        // Packs of 1 MiB: several packs, and restore batches to bound.
        pack_size: 1 << 20,
        max_buffered_bytes: BUDGET,
        ..BackendOptions::default()
    };
    let url = format!("file://{}", store.path().display());
    let backend = ObjectStoreBackend::from_url(&url, options.clone()).unwrap();
    backend.push(&c, &Source::new(src.path())).await.unwrap();
    let pushed_peak = backend.buffered_peak();
    assert!(pushed_peak > 0, "{layout}: nothing was counted");
    assert!(
        pushed_peak <= BUDGET as u64,
        "{layout}: the push held {pushed_peak} bytes of content at once, budget {BUDGET}"
    );

    // A fresh backend (as the init container is) restores.
    let backend = ObjectStoreBackend::from_url(&url, options).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let report = backend
        .restore(
            dest.path(),
            &RestoreOptions {
                existing: ExistingPolicy::Overwrite,
                ..RestoreOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(report.entries.len(), FILES + 1);
    let restored_peak = backend.buffered_peak();
    assert!(restored_peak > 0, "{layout}: nothing was counted");
    assert!(
        restored_peak <= BUDGET as u64,
        "{layout}: the restore held {restored_peak} bytes of content at once, budget {BUDGET}"
    );
    assert_eq!(files_under(dest.path()), files_under(src.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_push_and_restore_hold_at_most_the_budget() {
    push_and_restore_within_budget(Layout::Snapshots).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirror_push_and_restore_hold_at_most_the_budget() {
    push_and_restore_within_budget(Layout::Mirror).await;
}

#[test]
fn the_budget_is_validated_and_read_from_the_url() {
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}?max_buffered_bytes=2MiB", store.path().display());
    assert!(ObjectStoreBackend::from_url(&url, BackendOptions::default()).is_ok());
    for bad in ["1KiB", "5GiB"] {
        let url = format!("file://{}?max_buffered_bytes={bad}", store.path().display());
        let e = ObjectStoreBackend::from_url(&url, BackendOptions::default()).unwrap_err();
        assert!(e.to_string().contains("max_buffered_bytes"), "{e}");
    }
}

/// A tree larger than the read limits is refused by the push, clearly,
/// instead of writing a manifest or index that restores then refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_past_the_read_limits_is_refused_and_the_remote_stays_restorable() {
    for layout in [Layout::Snapshots, Layout::Mirror] {
        let src = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let c = tree(src.path());
        let url = format!("file://{}", store.path().display());
        let small = BackendOptions {
            layout,
            max_entries: 10,
            ..BackendOptions::default()
        };
        let backend = ObjectStoreBackend::from_url(&url, small.clone()).unwrap();
        let e = backend
            .push(&c, &Source::new(src.path()))
            .await
            .unwrap_err();
        let msg = e.to_string();
        // The mirror counts paths; snapshots (format v2) count entries per
        // directory.
        let counted = match layout {
            Layout::Mirror => format!("{} paths", FILES + 1),
            Layout::Snapshots => format!("directory d: directory of {FILES} entries"),
        };
        assert!(
            msg.contains("max_entries") && msg.contains(&counted),
            "{layout}: {msg}"
        );
        assert!(
            matches!(
                e,
                sync_core::BackendError::Remote {
                    transient: false,
                    ..
                }
            ),
            "{layout}: {e:?}"
        );
        // Nothing became a head a restore would refuse.
        let head = backend.head().await.unwrap();
        match layout {
            Layout::Snapshots => assert_eq!(head, None, "{layout}"),
            // The mirror's objects are there (they are the truth), with no
            // index generation: generation "0".
            Layout::Mirror => assert_eq!(head.map(|h| h.id), Some("0".into()), "{layout}"),
        }
        // Within the limits, the same tree pushes.
        let roomy = BackendOptions {
            max_entries: (FILES + 1) as u64,
            ..small
        };
        let backend = ObjectStoreBackend::from_url(&url, roomy).unwrap();
        backend.push(&c, &Source::new(src.path())).await.unwrap();
    }
}
