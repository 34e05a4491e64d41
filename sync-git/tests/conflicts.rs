//! A second writer pushes to the same branch between two checkpoints: a
//! second tether pod (its own state directory) on every transport, and a
//! person with the git CLI. Disjoint changes are rebased onto theirs;
//! overlapping ones go to a conflict branch, reported in the receipt, and
//! nothing from either side is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{GitFixture, Server, git, server_branches, server_file, server_ref};
use sync_core::{
    Backend, Checkpoint, ContentHash, FileMeta, Meta, PushReceipt, RelPath, RestoreOptions, Source,
};

/// Writes `files` under `root` and returns the checkpoint upserting them.
fn write(root: &Path, files: &[(&str, &str)]) -> Checkpoint {
    let mut c = Checkpoint::new();
    for (name, content) in files {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        c.upsert(
            RelPath::new(*name).unwrap(),
            Meta::File(FileMeta {
                size: m.len(),
                mtime_ns: 0,
                mode: m.permissions().mode() & 0o7777,
                hash: ContentHash::of(content.as_bytes()),
            }),
        );
    }
    c
}

async fn push(b: &dyn Backend, root: &Path, c: &Checkpoint) -> PushReceipt {
    b.push(c, &Source::new(root))
        .await
        .unwrap_or_else(|e| panic!("push to {} failed: {e}", b.describe()))
}

async fn disjoint_changes_are_rebased(f: &GitFixture) {
    let (url, dir) = f.new_repo();
    let (a, b) = (f.backend_for(&url), f.backend_for(&url));
    let (src_a, src_b) = (f.tmp.path().join("a"), f.tmp.path().join("b"));
    let r1 = push(
        &*a,
        &src_a,
        &write(&src_a, &[("a.txt", "a1"), ("shared/x", "x")]),
    )
    .await;
    assert_eq!(r1.conflict, None);
    // Another pod adds its own file between A's checkpoints.
    let r2 = push(&*b, &src_b, &write(&src_b, &[("b.txt", "b1")])).await;
    assert_eq!(r2.conflict, None);
    let theirs = r2.head.clone().unwrap();
    // A's next checkpoint touches only its own file.
    let r3 = push(&*a, &src_a, &write(&src_a, &[("a.txt", "a2")])).await;
    assert_eq!(r3.conflict, None, "disjoint changes reported as a conflict");
    let head = r3.head.clone().unwrap();
    assert_eq!(
        server_ref(&dir, "refs/heads/main").as_deref(),
        Some(head.as_str())
    );
    assert_eq!(server_file(&dir, "main", "a.txt").as_deref(), Some("a2"));
    assert_eq!(server_file(&dir, "main", "b.txt").as_deref(), Some("b1"));
    assert_eq!(server_file(&dir, "main", "shared/x").as_deref(), Some("x"));
    // Linear history containing the other writer's commit, no merges.
    let d = dir.to_str().unwrap();
    assert_eq!(
        git(&["--git-dir", d, "rev-list", "--count", "main"], &dir).trim(),
        "3"
    );
    assert_eq!(
        git(&["--git-dir", d, "rev-list", "--merges", "main"], &dir).trim(),
        ""
    );
    git(
        &[
            "--git-dir",
            d,
            "merge-base",
            "--is-ancestor",
            &theirs,
            "main",
        ],
        &dir,
    );
    assert_eq!(server_branches(&dir), vec!["main".to_string()]);
    let history = a.history(10).await.unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[0].id, head);
    assert_eq!((history[0].files, history[0].bytes), (3, 5));
}

async fn overlapping_changes_go_to_a_conflict_branch(f: &GitFixture) {
    let (url, dir) = f.new_repo();
    let (a, b) = (f.backend_for(&url), f.backend_for(&url));
    let (src_a, src_b) = (f.tmp.path().join("a"), f.tmp.path().join("b"));
    push(
        &*a,
        &src_a,
        &write(&src_a, &[("a.txt", "v1"), ("c.txt", "c")]),
    )
    .await;
    // Another pod edits the same notebook.
    push(&*b, &src_b, &write(&src_b, &[("a.txt", "theirs")])).await;
    let r = push(
        &*a,
        &src_a,
        &write(&src_a, &[("a.txt", "ours"), ("d.txt", "new")]),
    )
    .await;
    let conflict = r.conflict.clone().expect("overlap not reported");
    assert!(
        conflict.starts_with("tether/conflict/test-pod/"),
        "{conflict}"
    );
    assert!(conflict.contains("a.txt"), "{conflict}");
    // The branch keeps their version plus our non-overlapping change...
    assert_eq!(
        server_file(&dir, "main", "a.txt").as_deref(),
        Some("theirs")
    );
    assert_eq!(server_file(&dir, "main", "d.txt").as_deref(), Some("new"));
    assert_eq!(server_file(&dir, "main", "c.txt").as_deref(), Some("c"));
    assert_eq!(r.head, server_ref(&dir, "refs/heads/main"));
    // ...and the conflict branch has our whole state.
    let branch = conflict.split(' ').next().unwrap();
    assert!(server_branches(&dir).contains(&branch.to_string()));
    assert_eq!(server_file(&dir, branch, "a.txt").as_deref(), Some("ours"));
    assert_eq!(server_file(&dir, branch, "d.txt").as_deref(), Some("new"));
    // It can be restored by commit id (not on the synced branch).
    let conflict_commit = server_ref(&dir, &format!("refs/heads/{branch}")).unwrap();
    let dest = f.tmp.path().join("restored-conflict");
    let report = a
        .restore(
            &dest,
            &RestoreOptions {
                at: Some(conflict_commit.clone()),
                ..RestoreOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(report.head.as_deref(), Some(conflict_commit.as_str()));
    assert_eq!(std::fs::read_to_string(dest.join("a.txt")).unwrap(), "ours");
    // Work carries on: the next checkpoint lands on the branch normally.
    let next = push(&*a, &src_a, &write(&src_a, &[("c.txt", "c2")])).await;
    assert_eq!(next.conflict, None);
    assert_eq!(server_file(&dir, "main", "c.txt").as_deref(), Some("c2"));
    assert_eq!(
        server_file(&dir, "main", "a.txt").as_deref(),
        Some("theirs")
    );
}

/// A person clones the repository, edits and pushes with the git CLI.
async fn person_with_git_cli(f: &GitFixture) {
    let (url, dir) = f.new_repo();
    let a = f.backend_for(&url);
    let src = f.tmp.path().join("a");
    push(
        &*a,
        &src,
        &write(&src, &[("notes.md", "one"), ("nb.ipynb", "{}")]),
    )
    .await;
    let clone = f.tmp.path().join("clone");
    git(
        &["clone", "-q", &url, clone.to_str().unwrap()],
        f.tmp.path(),
    );
    std::fs::write(clone.join("README.md"), "by a person").unwrap();
    std::fs::write(clone.join("nb.ipynb"), "{\"person\": 1}").unwrap();
    git(&["add", "-A"], &clone);
    git(
        &[
            "-c",
            "user.name=P",
            "-c",
            "user.email=p@example.com",
            "commit",
            "-qm",
            "person",
        ],
        &clone,
    );
    git(&["push", "-q", "origin", "main"], &clone);
    // Disjoint: rebased.
    let r = push(&*a, &src, &write(&src, &[("notes.md", "two")])).await;
    assert_eq!(r.conflict, None);
    assert_eq!(
        server_file(&dir, "main", "README.md").as_deref(),
        Some("by a person")
    );
    assert_eq!(
        server_file(&dir, "main", "notes.md").as_deref(),
        Some("two")
    );
    // Overlapping: the person's notebook stays, ours goes to a branch.
    git(&["pull", "-q", "--rebase", "origin", "main"], &clone);
    std::fs::write(clone.join("nb.ipynb"), "{\"person\": 2}").unwrap();
    git(
        &[
            "-c",
            "user.name=P",
            "-c",
            "user.email=p@example.com",
            "commit",
            "-qam",
            "person 2",
        ],
        &clone,
    );
    git(&["push", "-q", "origin", "main"], &clone);
    let r = push(&*a, &src, &write(&src, &[("nb.ipynb", "{\"pod\": 1}")])).await;
    let conflict = r.conflict.expect("overlap not reported");
    let branch = conflict.split(' ').next().unwrap();
    assert_eq!(
        server_file(&dir, "main", "nb.ipynb").as_deref(),
        Some("{\"person\": 2}")
    );
    assert_eq!(
        server_file(&dir, branch, "nb.ipynb").as_deref(),
        Some("{\"pod\": 1}")
    );
    assert_eq!(
        server_file(&dir, branch, "notes.md").as_deref(),
        Some("two")
    );
}

macro_rules! conflict_tests {
    ($server:ident, $module:ident) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn disjoint_changes_are_rebased() {
                if let Some(f) = GitFixture::new(Server::$server) {
                    super::disjoint_changes_are_rebased(&f).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn overlapping_changes_go_to_a_conflict_branch() {
                if let Some(f) = GitFixture::new(Server::$server) {
                    super::overlapping_changes_go_to_a_conflict_branch(&f).await;
                }
            }
        }
    };
}

conflict_tests!(File, file);
conflict_tests!(Daemon, daemon);
conflict_tests!(Http, http);
conflict_tests!(Ssh, ssh);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn person_with_git_cli_over_git_daemon() {
    if let Some(f) = GitFixture::new(Server::Daemon) {
        person_with_git_cli(&f).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn person_with_git_cli_over_file() {
    if let Some(f) = GitFixture::new(Server::File) {
        person_with_git_cli(&f).await;
    }
}

/// Two writers racing on one notebook: every checkpoint of one of them
/// conflicts, and all those conflicts land on one branch, whose history
/// holds each conflicting version in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_conflicts_coalesce_into_one_branch_per_episode() {
    let Some(f) = GitFixture::new(Server::File) else {
        return;
    };
    let (url, dir) = f.new_repo();
    let (a, b) = (f.backend_for(&url), f.backend_for(&url));
    let (src_a, src_b) = (f.tmp.path().join("a"), f.tmp.path().join("b"));
    push(&*a, &src_a, &write(&src_a, &[("nb.ipynb", "a0")])).await;
    let mut branches = Vec::new();
    for round in 1..=5 {
        let theirs = format!("b{round}");
        let r = push(&*b, &src_b, &write(&src_b, &[("nb.ipynb", &theirs)])).await;
        assert_eq!(r.conflict, None, "round {round}: b built on the newest");
        let ours = format!("a{round}");
        let r = push(&*a, &src_a, &write(&src_a, &[("nb.ipynb", &ours)])).await;
        let conflict = r.conflict.expect("both changed nb.ipynb since a's base");
        let branch = conflict.split(' ').next().unwrap().to_owned();
        assert_eq!(
            server_file(&dir, &branch, "nb.ipynb").as_deref(),
            Some(ours.as_str()),
            "round {round}: the branch holds the newest conflicting version"
        );
        branches.push(branch);
    }
    branches.dedup();
    assert_eq!(branches.len(), 1, "one branch per episode: {branches:?}");
    let conflict_branches: Vec<String> = server_branches(&dir)
        .into_iter()
        .filter(|b| b.starts_with("tether/conflict/"))
        .collect();
    assert_eq!(conflict_branches, branches);
    // Its history keeps every conflicting version, newest first.
    let log = common::git(
        &[
            "--git-dir",
            dir.to_str().unwrap(),
            "log",
            "--format=%H",
            &branches[0],
        ],
        &dir,
    );
    let versions: Vec<String> = log
        .lines()
        .take(5)
        .map(|c| server_file(&dir, c, "nb.ipynb").unwrap())
        .collect();
    assert_eq!(versions, ["a5", "a4", "a3", "a2", "a1"]);
    // The synced branch kept the other writer's newest version.
    assert_eq!(server_file(&dir, "main", "nb.ipynb").as_deref(), Some("b5"));
}
