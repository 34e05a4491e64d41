//! The `tether` binary end to end on `file://` stores: watching, SIGTERM
//! flush, `--once`, restore, history, readiness and metrics.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn sync_follows_edits_and_sigterm_flushes_everything() {
    let sb = Sandbox::new();
    let work = sb.path("work");
    fs::create_dir(&work).unwrap();
    let port = free_port();
    let port_s = format!("127.0.0.1:{port}");
    let store = sb.url("store");
    let mut child = spawn(
        &sb,
        &[
            "sync",
            "work",
            "--to",
            &store,
            "--state-dir",
            "state",
            "--debounce",
            "100ms",
            "--max-latency",
            "1s",
            "--http-bind",
            &port_s,
            "--grace",
            "20s",
        ],
    );
    // Empty directory and empty store: ready once the first round is done.
    wait_for("/healthz", LIMIT, || {
        http_get(port, "/healthz").filter(|(s, _)| *s == 200)
    });
    wait_for("/readyz", LIMIT, || {
        http_get(port, "/readyz").filter(|(s, _)| *s == 200)
    });

    fs::write(work.join("a.txt"), "first").unwrap();
    fs::write(work.join("b.txt"), "bee").unwrap();
    fs::write(work.join("c.txt"), "sea").unwrap();
    fs::create_dir(work.join("sub")).unwrap();
    fs::write(work.join("sub/d.txt"), "dee").unwrap();
    let metrics = wait_for("4 files pushed", LIMIT, || {
        let (_, text) = http_get(port, "/metrics")?;
        (metric(&text, "tether_files_pushed_total")? >= 4.0).then_some(text)
    });
    assert!(
        metric(&metrics, "tether_checkpoints_pushed_total").unwrap() >= 1.0,
        "{metrics}"
    );
    assert!(metric(&metrics, "tether_last_success_timestamp_seconds").unwrap() > 1.0e9);
    assert_eq!(metric(&metrics, "tether_ready"), Some(1.0), "{metrics}");
    assert!(
        metrics.contains("tether_push_duration_seconds_count"),
        "{metrics}"
    );
    assert!(metrics.contains("tether_pending_paths"), "{metrics}");
    assert!(
        metrics.contains("tether_push_failures_total 0"),
        "{metrics}"
    );

    // Edit, rename, delete, create, then stop at once: the flush saves it.
    fs::write(work.join("a.txt"), "second version").unwrap();
    fs::rename(work.join("b.txt"), work.join("sub/b2.txt")).unwrap();
    fs::remove_file(work.join("c.txt")).unwrap();
    fs::write(work.join("e.txt"), "new").unwrap();
    sigterm(&child);
    let (code, err) = wait_exit(&mut child, LIMIT);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(err.contains("everything is saved"), "{err}");

    let out = sb.run(&["restore", "copy", "--from", &store, "--state-dir", "state2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tree(&sb.path("copy")), tree(&work));
    assert!(tree(&work).contains_key("sub/b2.txt"));
    assert!(!tree(&work).contains_key("c.txt"));
}

#[test]
fn once_pushes_and_exits_then_restore_and_history_see_it() {
    let sb = Sandbox::new();
    let work = sb.path("work");
    fs::create_dir_all(work.join("notebooks")).unwrap();
    fs::write(work.join("notebooks/a.ipynb"), "{\"cells\": []}").unwrap();
    fs::write(work.join("data.csv"), "x,y\n1,2\n").unwrap();
    fs::write(work.join("scratch.swp"), "ignored by default").unwrap();
    let store = sb.url("store");

    let out = sb.run(&["sync", "work", "--to", &store, "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("pushed 2 files"), "{}", stdout(&out));

    let hist = sb.run(&["history", "--from", &store]);
    assert!(hist.status.success(), "{}", stderr(&hist));
    let rows: Vec<String> = stdout(&hist).lines().skip(1).map(str::to_owned).collect();
    assert_eq!(rows.len(), 1, "{}", stdout(&hist));
    let id = rows[0].split_whitespace().next().unwrap().to_owned();

    // A second --once with nothing changed pushes nothing and adds no checkpoint.
    let again = sb.run(&["sync", "work", "--to", &store, "--once"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("pushed 0 files"),
        "{}",
        stdout(&again)
    );

    // Change and push again, then restore the first checkpoint by id.
    fs::write(work.join("data.csv"), "x,y\n1,2\n3,4\n").unwrap();
    let third = sb.run(&["sync", "work", "--to", &store, "--once"]);
    assert!(third.status.success(), "{}", stderr(&third));
    let out = sb.run(&["restore", "old", "--from", &store, "--at", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(sb.path("old/data.csv")).unwrap(),
        "x,y\n1,2\n"
    );

    // Restore into an empty directory gives the newest state (ignored files excepted).
    let out = sb.run(&["restore", "new", "--from", &store]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut expected = tree(&work);
    expected.remove("scratch.swp");
    assert_eq!(tree(&sb.path("new")), expected);
}

#[test]
fn restore_seeds_the_index_so_the_next_sync_pushes_nothing() {
    let sb = Sandbox::new();
    let store = sb.url("store");
    fs::create_dir(sb.path("src")).unwrap();
    fs::write(sb.path("src/f.txt"), "hello").unwrap();
    assert!(
        sb.run(&["sync", "src", "--to", &store, "--once"])
            .status
            .success()
    );

    // The init container and the sidecar share TETHER_STATE_DIR.
    let pod_state = sb.path("pod-state");
    let restore = sb
        .tether()
        .env("TETHER_STATE_DIR", &pod_state)
        .env("TETHER_REMOTE", &store)
        .args(["restore", "pod"])
        .output()
        .unwrap();
    assert!(restore.status.success(), "{}", stderr(&restore));
    let sync = sb
        .tether()
        .env("TETHER_STATE_DIR", &pod_state)
        .env("TETHER_REMOTE", &store)
        .args(["sync", "pod", "--once"])
        .output()
        .unwrap();
    assert!(sync.status.success(), "{}", stderr(&sync));
    assert!(
        stdout(&sync).contains("pushed 0 files"),
        "{}",
        stdout(&sync)
    );

    // The same state directory refuses another directory.
    let other = sb
        .tether()
        .env("TETHER_STATE_DIR", &pod_state)
        .args(["sync", "src", "--to", &store, "--once"])
        .output()
        .unwrap();
    assert_eq!(other.status.code(), Some(2), "{}", stderr(&other));
    assert!(
        stderr(&other).contains("belongs to another directory"),
        "{}",
        stderr(&other)
    );
}

#[test]
fn sync_restores_an_empty_directory_first_and_restore_of_an_empty_remote_succeeds() {
    let sb = Sandbox::new();
    let store = sb.url("store");
    let out = sb.run(&["restore", "fresh", "--from", &store]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("nothing to restore"),
        "{}",
        stdout(&out)
    );

    fs::create_dir(sb.path("a")).unwrap();
    fs::write(sb.path("a/k.txt"), "kept").unwrap();
    assert!(
        sb.run(&["sync", "a", "--to", &store, "--once"])
            .status
            .success()
    );
    // A new, empty directory on the same store is restored before syncing,
    // so the first push deletes nothing.
    let out = sb.run(&["sync", "b", "--to", &store, "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(sb.path("b/k.txt")).unwrap(), "kept");
}

#[test]
fn the_default_store_needs_no_remote() {
    let sb = Sandbox::new();
    fs::create_dir(sb.path("my-work")).unwrap();
    fs::write(sb.path("my-work/n.txt"), "note").unwrap();
    let out = sb.run(&["sync", "my-work", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(".local/share/tether/store/my-work-"),
        "{}",
        stdout(&out)
    );
    // restore without --from uses the same default store of that directory
    fs::remove_file(sb.path("my-work/n.txt")).unwrap();
    let out = sb.run(&["restore", "my-work"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(sb.path("my-work/n.txt")).unwrap(),
        "note"
    );
}

#[test]
fn readiness_fails_and_metrics_count_failures_while_the_remote_is_unreachable() {
    let sb = Sandbox::new();
    fs::create_dir(sb.path("work")).unwrap();
    fs::write(sb.path("work/x.txt"), "x").unwrap();
    let port = free_port();
    let dead = free_port();
    let url = format!("git://127.0.0.1:{dead}/nothing.git");
    let bind = format!("127.0.0.1:{port}");
    let mut child = spawn(
        &sb,
        &[
            "sync",
            "work",
            "--to",
            &url,
            "--http-bind",
            &bind,
            "--grace",
            "1s",
            "--restore",
            "never",
        ],
    );
    let (status, body) = wait_for("a failed push", LIMIT, || {
        let (_, text) = http_get(port, "/metrics")?;
        (metric(&text, "tether_push_failures_total")? >= 1.0).then_some(())?;
        http_get(port, "/readyz")
    });
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("first push not done yet"), "{body}");
    let (_, text) = http_get(port, "/metrics").unwrap();
    assert_eq!(metric(&text, "tether_ready"), Some(0.0), "{text}");
    assert!(
        metric(&text, "tether_pending_paths").unwrap() >= 1.0,
        "{text}"
    );

    // SIGTERM cannot save x.txt: exit 1 with a message naming it.
    sigterm(&child);
    let (code, err) = wait_exit(&mut child, LIMIT);
    assert_eq!(code, 1, "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("tether: 1 path not saved within 1s: x.txt"),
        "{err}"
    );
}

/// Issue 11 item 5, end to end with separate processes and state
/// directories: a conflict is reported exactly when a path changed on both
/// sides since the writer's base — here an edit of a notebook another pod
/// saved earlier (no race), on snapshots and git; disjoint edits report
/// none; on git, repeated conflicts land on one branch.
#[test]
fn conflicts_are_reported_exactly_when_both_writers_changed_a_path() {
    let sb = Sandbox::new();
    fs::create_dir(sb.path("git.git")).unwrap();
    let git = std::process::Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(sb.path("git.git"))
        .status();
    let mut remotes = vec![("snapshots", sb.url("store"))];
    if git.is_ok_and(|s| s.success()) {
        remotes.push(("git", sb.url("git.git")));
    }
    for (name, url) in remotes {
        let (a, b) = (format!("{name}-a"), format!("{name}-b"));
        let (sa, sbs) = (format!("{name}-state-a"), format!("{name}-state-b"));
        let once = |dir: &str, state: &str| {
            let out = sb.run(&["sync", dir, "--to", &url, "--state-dir", state, "--once"]);
            assert!(out.status.success(), "{name}: {}", stderr(&out));
            stderr(&out)
        };
        let conflicts = |log: &str| log.matches("another writer changed the same paths").count();
        fs::create_dir(sb.path(&a)).unwrap();
        fs::write(sb.path(&a).join("nb.ipynb"), "base").unwrap();
        assert_eq!(conflicts(&once(&a, &sa)), 0);
        // Pod B starts from A's save and edits the notebook.
        let out = sb.run(&["restore", &b, "--from", &url, "--state-dir", &sbs]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        fs::write(sb.path(&b).join("nb.ipynb"), "b's version").unwrap();
        assert_eq!(conflicts(&once(&b, &sbs)), 0, "{name}: b was up to date");
        // Later, A edits the same notebook on its old base: a conflict.
        // Then B edits it again. On snapshots A's version became the head
        // (B's stays in history), so B's edit conflicts too; on git A's
        // version went to a conflict branch and the branch kept B's, so B
        // is up to date.
        let mut branches = [
            std::collections::BTreeSet::new(),
            std::collections::BTreeSet::new(),
        ];
        for round in 0..2 {
            for (i, (dir, state)) in [(&a, &sa), (&b, &sbs)].into_iter().enumerate() {
                fs::write(sb.path(dir).join("nb.ipynb"), format!("{dir} {round}")).unwrap();
                let log = once(dir, state);
                let expected = usize::from(i == 0 || name == "snapshots");
                assert_eq!(
                    conflicts(&log),
                    expected,
                    "{name} {dir} round {round}: {log}"
                );
                assert!(expected == 0 || log.contains("nb.ipynb"), "{name}: {log}");
                if let Some(at) = log.find("tether/conflict/") {
                    branches[i].insert(log[at..].split([' ', '"']).next().unwrap().to_owned());
                }
            }
        }
        if name == "git" {
            // One branch per writer per episode, across restarts.
            assert_eq!(branches[0].len(), 1, "{branches:?}");
            assert!(branches[1].is_empty(), "{branches:?}");
        }
        // Disjoint edits: no conflict.
        fs::write(sb.path(&a).join("a-notes.txt"), "a").unwrap();
        assert_eq!(conflicts(&once(&a, &sa)), 0, "{name}: disjoint");
    }
}

#[test]
fn a_second_sync_on_the_same_state_dir_is_refused_until_the_first_is_gone() {
    let sb = Sandbox::new();
    fs::create_dir(sb.path("work")).unwrap();
    fs::write(sb.path("work/a.txt"), "a").unwrap();
    let store = sb.url("store");
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut first = spawn(
        &sb,
        &[
            "sync",
            "work",
            "--to",
            &store,
            "--state-dir",
            "state",
            "--http-bind",
            &bind,
        ],
    );
    // The state directory is locked before the HTTP server starts.
    wait_for("/healthz", LIMIT, || {
        http_get(port, "/healthz").filter(|(s, _)| *s == 200)
    });
    let state = fs::canonicalize(sb.path("state")).unwrap();
    for args in [
        &[
            "sync",
            "work",
            "--to",
            &store,
            "--state-dir",
            "state",
            "--once",
        ][..],
        &[
            "restore",
            "work",
            "--from",
            &store,
            "--state-dir",
            "state",
            "--existing",
            "overwrite",
        ][..],
    ] {
        let second = sb.run(args);
        let err = stderr(&second);
        assert_eq!(second.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "state directory {} is in use by another tether process (pid {})",
                state.display(),
                first.id()
            )),
            "{args:?}: {err}"
        );
    }
    // SIGKILL: no clean-up runs, the kernel releases the lock.
    first.kill().unwrap();
    first.wait().unwrap();
    let again = sb.run(&[
        "sync",
        "work",
        "--to",
        &store,
        "--state-dir",
        "state",
        "--once",
    ]);
    assert!(again.status.success(), "{}", stderr(&again));
}
