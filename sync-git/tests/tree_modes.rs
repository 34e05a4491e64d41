//! Tree entries with modes git never writes (`140000`, `20000`, `100600`)
//! are refused naming the path and the mode, and a commit's `.tether/modes`
//! is metadata: applied, never restored into the directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{GitFixture, Server, write_tree};
use gix::objs::Write as _;
use sync_core::{Backend, RestoreOptions};

type RawEntry = (&'static str, Vec<u8>, gix::ObjectId);

/// Plants a commit as `main` whose root tree `build` makes; returns the URL.
fn plant(f: &GitFixture, build: impl FnOnce(&gix::Repository) -> Vec<RawEntry>) -> String {
    let (url, dir) = f.new_repo();
    let repo = gix::open(&dir).unwrap();
    let mut root = build(&repo);
    root.push(("100644", b"ok.txt".to_vec(), blob(&repo, b"ok")));
    common::sort_git_order(&mut root);
    let tree = write_tree(&repo, &root);
    let sig = gix::actor::Signature {
        name: "attacker".into(),
        email: "a@example.com".into(),
        time: gix::date::Time::now_utc(),
    };
    let commit = gix::objs::Commit {
        tree,
        parents: Default::default(),
        author: sig.clone(),
        committer: sig,
        encoding: None,
        message: "planted".into(),
        extra_headers: Vec::new(),
    };
    let id = repo.write_object(&commit).unwrap().detach();
    repo.reference(
        "refs/heads/main",
        id,
        gix::refs::transaction::PreviousValue::Any,
        "plant",
    )
    .unwrap();
    url
}

fn blob(repo: &gix::Repository, data: &[u8]) -> gix::ObjectId {
    repo.objects.write_buf(gix::objs::Kind::Blob, data).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_tree_entry_modes_are_named() {
    let Some(f) = GitFixture::new(Server::File) else {
        return;
    };
    for (mode, name) in [("140000", "sock"), ("20000", "odd"), ("100600", "narrow")] {
        let url = plant(&f, |repo| {
            vec![(mode, name.as_bytes().to_vec(), blob(repo, b"x"))]
        });
        let dest = f.tmp.path().join(format!("dest-{mode}"));
        let err = f
            .backend_for(&url)
            .restore(&dest, &RestoreOptions::default())
            .await
            .expect_err("restored a tree with an unsupported mode");
        let msg = err.to_string();
        assert!(
            msg.contains("unsupported git tree entry mode")
                && msg.contains(mode)
                && msg.contains(name),
            "unclear error for mode {mode}: {msg}"
        );
        assert!(!dest.join(name).exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_modes_file_is_applied_but_never_restored() {
    let Some(f) = GitFixture::new(Server::File) else {
        return;
    };
    let url = plant(&f, |repo| {
        let modes = blob(
            repo,
            br#"{"format":"tether-git-modes-1","modes":{"ok.txt":"600"}}"#,
        );
        let tether = write_tree(repo, &[("100644", b"modes".to_vec(), modes)]);
        vec![("40000", b".tether".to_vec(), tether)]
    });
    let dest = f.tmp.path().join("dest-modes");
    f.backend_for(&url)
        .restore(&dest, &RestoreOptions::default())
        .await
        .unwrap();
    assert!(!dest.join(".tether").exists(), ".tether restored");
    let mode = std::fs::metadata(dest.join("ok.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A modes file with a mode that is not octal is refused, naming it.
    let url = plant(&f, |repo| {
        let modes = blob(
            repo,
            br#"{"format":"tether-git-modes-1","modes":{"ok.txt":"rwx"}}"#,
        );
        let tether = write_tree(repo, &[("100644", b"modes".to_vec(), modes)]);
        vec![("40000", b".tether".to_vec(), tether)]
    });
    let err = f
        .backend_for(&url)
        .restore(&f.tmp.path().join("dest-bad"), &RestoreOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(".tether/modes"), "{err}");
}

/// A chain of `levels` trees, each holding `names`, every one pointing at
/// the next level's single tree; the last holds one file. Tiny to store,
/// `names.len() ^ levels` paths when expanded.
fn shared_chain(repo: &gix::Repository, levels: usize, names: &[&str]) -> gix::ObjectId {
    let mut tree = write_tree(repo, &[("100644", b"f".to_vec(), blob(repo, b"leaf"))]);
    for _ in 0..levels {
        let entries: Vec<RawEntry> = names
            .iter()
            .map(|n| ("40000", n.as_bytes().to_vec(), tree))
            .collect();
        tree = write_tree(repo, &entries);
    }
    tree
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trees_that_share_subtrees_into_billions_of_paths_are_refused() {
    let Some(f) = GitFixture::new(Server::File) else {
        return;
    };
    // 2^40 paths from 41 small tree objects.
    let url = plant(&f, |repo| {
        vec![(
            "40000",
            b"bomb".to_vec(),
            shared_chain(repo, 40, &["a", "b"]),
        )]
    });
    let backend = f.backend_for(&url);
    let dest = f.tmp.path().join("dest-bomb");
    let err = backend
        .restore(&dest, &RestoreOptions::default())
        .await
        .expect_err("restored a tree bomb");
    let msg = err.to_string();
    assert!(
        msg.contains("more than 500000 entries") && msg.contains("max_entries"),
        "unclear error: {msg}"
    );
    assert!(!dest.join("bomb").exists());
    // History counts each distinct subtree once: it answers, saturating
    // nothing here (2^40 files fits), without expanding the paths.
    let history = backend.history(5).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].files, (1u64 << 40) + 1);
    // A writer on top of it re-bases against it without expanding it.
    let src = f.tmp.path().join("src-bomb");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("new.txt"), b"new").unwrap();
    let mut cp = sync_core::Checkpoint::new();
    cp.upsert(
        sync_core::RelPath::new("new.txt").unwrap(),
        sync_core::Meta::File(sync_core::FileMeta {
            size: 3,
            mtime_ns: 0,
            mode: 0o644,
            hash: sync_core::ContentHash::of(b"new"),
        }),
    );
    backend
        .push(&cp, &sync_core::Source::new(&src))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_past_the_length_limit_is_refused() {
    let Some(f) = GitFixture::new(Server::File) else {
        return;
    };
    // 1,000 levels of `dddd/`: paths of 5,000 bytes. (git itself refuses
    // to serve trees nested past `core.maxTreeDepth`, 2,048 by default.)
    let url = plant(&f, |repo| {
        vec![(
            "40000",
            b"deep".to_vec(),
            shared_chain(repo, 1000, &["dddd"]),
        )]
    });
    let backend = f.backend_for(&url);
    let dest = f.tmp.path().join("dest-deep");
    let msg = backend
        .restore(&dest, &RestoreOptions::default())
        .await
        .expect_err("restored a 5,000-byte path")
        .to_string();
    assert!(
        msg.contains("longer than 4096 bytes"),
        "unclear error: {msg}"
    );
    assert!(!dest.join("deep").exists());
    // History walks it without recursion and counts its one file.
    let history = backend.history(5).await.unwrap();
    assert_eq!(history[0].files, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_entries_is_configurable() {
    let Some(f) = GitFixture::new(Server::File) else {
        return;
    };
    let url = plant(&f, |repo| {
        (0..20)
            .map(|i| ("100644", format!("f{i:02}").into_bytes(), blob(repo, b"x")))
            .collect()
    });
    let mut options = f.options();
    options.max_entries = 10;
    let backend = sync_git::GitBackend::from_url(&url, options).unwrap();
    let msg = backend
        .restore(&f.tmp.path().join("dest-cap"), &RestoreOptions::default())
        .await
        .expect_err("restored 21 entries with max_entries 10")
        .to_string();
    assert!(msg.contains("more than 10 entries"), "unclear error: {msg}");
    let mut options = f.options();
    options.max_entries = 21;
    let backend = sync_git::GitBackend::from_url(&url, options).unwrap();
    let report = backend
        .restore(&f.tmp.path().join("dest-fits"), &RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(report.files_written, 21);
}
