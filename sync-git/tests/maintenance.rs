//! The local bare repository is packed in the background once it holds
//! many loose objects (`GitOptions::gc_loose_objects`), and keeps working
//! from the pack: the next checkpoint builds on packed trees, and a restore
//! reads packed blobs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{GitFixture, Server, git, server_file};
use sync_core::{
    Backend, Checkpoint, ContentHash, FileMeta, Meta, RelPath, RestoreOptions, Source,
};
use sync_git::GitBackend;

/// Loose objects (every fan-out directory) and packs in a bare repository.
fn objects(repo: &Path) -> (usize, usize) {
    let mut loose = 0;
    let mut packs = 0;
    for entry in std::fs::read_dir(repo.join("objects")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name.len() == 2 && name.chars().all(|c| c.is_ascii_hexdigit()) {
            loose += std::fs::read_dir(entry.path()).unwrap().count();
        } else if name == "pack" {
            packs += std::fs::read_dir(entry.path())
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension() == Some("pack".as_ref()))
                .count();
        }
    }
    (loose, packs)
}

/// Writes `count` files with fixed contents (so their blob ids, and which
/// fan-out directories they land in, are the same in every run).
fn many_files(root: &Path, count: usize) -> Checkpoint {
    let mut c = Checkpoint::new();
    for i in 0..count {
        let name = format!("notes/{:02}/n{i}.txt", i % 20);
        let content = format!("note number {i}\n");
        let p = root.join(&name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &content).unwrap();
        c.upsert(
            RelPath::new(name).unwrap(),
            Meta::File(FileMeta {
                size: content.len() as u64,
                mtime_ns: 0,
                mode: 0o644,
                hash: ContentHash::of(content.as_bytes()),
            }),
        );
    }
    c
}

fn backend(f: &GitFixture, url: &str, gc_loose_objects: usize) -> GitBackend {
    let mut options = f.options();
    options.gc_loose_objects = gc_loose_objects;
    GitBackend::from_url(url, options).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_loose_objects_are_packed_after_a_push_and_stay_usable() {
    let f = GitFixture::new(Server::File).unwrap();
    let src = f.tmp.path().join("src");
    let checkpoint = many_files(&src, 2_000);

    // Never packing: 2,000 blobs and 22 trees stay loose (the precondition:
    // one of them lands in objects/17, the directory git's estimate reads).
    let (url, _) = f.new_repo();
    let never = backend(&f, &url, 0);
    never.push(&checkpoint, &Source::new(&src)).await.unwrap();
    let (loose, packs) = objects(never.local_repository());
    assert!(loose > 2_000, "{loose} loose objects");
    assert_eq!(packs, 0);
    assert!(
        std::fs::read_dir(never.local_repository().join("objects/17"))
            .is_ok_and(|mut d| d.next().is_some())
    );

    // Packing above 1,000: the push starts a gc in the background.
    let (url, server) = f.new_repo();
    let packing = backend(&f, &url, 1_000);
    let first = packing.push(&checkpoint, &Source::new(&src)).await.unwrap();
    let repo = packing.local_repository().to_path_buf();
    // A one-shot process waits for it before exiting.
    packing.wait_background(Duration::from_secs(120)).await;
    assert_eq!(objects(&repo), (0, 1), "(loose, packs) after the gc");
    let d = repo.to_str().unwrap();
    git(&["--git-dir", d, "fsck", "--no-dangling"], &repo);

    // The next checkpoint rewrites a packed tree and reads packed blobs.
    std::fs::write(src.join("notes/03/n3.txt"), "changed\n").unwrap();
    let mut change = Checkpoint::new();
    change.upsert(
        RelPath::new("notes/03/n3.txt").unwrap(),
        Meta::File(FileMeta {
            size: 8,
            mtime_ns: 0,
            mode: 0o644,
            hash: ContentHash::of(b"changed\n"),
        }),
    );
    let second = packing.push(&change, &Source::new(&src)).await.unwrap();
    assert_ne!(second.head, first.head);
    assert_eq!(
        server_file(&server, "main", "notes/03/n3.txt").as_deref(),
        Some("changed\n")
    );
    assert_eq!(
        server_file(&server, "main", "notes/04/n4.txt").as_deref(),
        Some("note number 4\n")
    );

    // A restore of the first checkpoint reads every blob from the pack.
    let dest = f.tmp.path().join("restored");
    let report = packing
        .restore(
            &dest,
            &RestoreOptions {
                at: first.head.clone(),
                ..RestoreOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(report.files_written, 2_000);
    assert_eq!(
        std::fs::read_to_string(dest.join("notes/03/n3.txt")).unwrap(),
        "note number 3\n"
    );
}
