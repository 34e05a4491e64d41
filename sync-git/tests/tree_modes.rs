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
