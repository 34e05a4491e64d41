//! Retention from the command line: `tether forget`, `prune` and `check`
//! against real stores (`file://` always; the test bed's SeaweedFS when
//! its variables are set, required with TETHER_TESTBED=1), a prune killed
//! mid-way, and the sidecar's background maintenance.
//!
//! Forget keeps a snapshot that stopped being the newest less than the
//! writers' reuse window + 5 minutes ago (by the store's clock), so
//! snapshots pushed by a test are always "too recent": the tests assert
//! that protection on every store, and for an actual removal age the
//! records on the `file://` store (its `LastModified` is the file's mtime)
//! instead of waiting 15 minutes.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use common::*;
use sync_core::testkit::testbed_var;

/// A store the tests run against: its URL and the environment it needs.
struct Store {
    name: &'static str,
    url: String,
    env: Vec<(&'static str, String)>,
}

impl Store {
    fn run(&self, sb: &Sandbox, args: &[&str]) -> Output {
        let mut c = sb.tether();
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.args(args).output().unwrap()
    }
}

fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("maint-{tag}-{}-{nanos}", std::process::id())
}

/// `file://` in the sandbox, and SeaweedFS when the test bed runs.
fn stores(sb: &Sandbox, tag: &str) -> Vec<Store> {
    let mut out = vec![Store {
        name: "file",
        url: sb.url("store"),
        env: Vec::new(),
    }];
    if let (Some(endpoint), Some(key), Some(secret), Some(bucket)) = (
        testbed_var("TETHER_TEST_S3_ENDPOINT"),
        testbed_var("TETHER_TEST_S3_ACCESS_KEY"),
        testbed_var("TETHER_TEST_S3_SECRET_KEY"),
        testbed_var("TETHER_TEST_S3_BUCKET"),
    ) {
        out.push(Store {
            name: "s3",
            url: format!(
                "s3://{bucket}/{}?endpoint={endpoint}&allow_http=true",
                unique(tag)
            ),
            env: vec![
                ("AWS_ACCESS_KEY_ID", key),
                ("AWS_SECRET_ACCESS_KEY", secret),
                ("AWS_REGION", "us-east-1".into()),
            ],
        });
    }
    out
}

/// Pushes `n` checkpoints of `w` (one file changed each), `--once` each.
fn push_versions(sb: &Sandbox, store: &Store, n: usize) {
    let w = sb.path("w");
    fs::create_dir_all(&w).unwrap();
    fs::write(w.join("keep.txt"), "unchanged\n").unwrap();
    for i in 0..n {
        fs::write(w.join("notes.md"), format!("version {i}\n").repeat(200)).unwrap();
        let out = store.run(sb, &["sync", "w", "--to", &store.url, "--once"]);
        assert!(out.status.success(), "{}: {}", store.name, stderr(&out));
        // A one-shot push never starts maintenance.
        assert!(
            !stderr(&out).contains("background maintenance"),
            "{}",
            stderr(&out)
        );
    }
}

/// The snapshot ids `tether history` lists, newest first.
fn history(sb: &Sandbox, store: &Store) -> Vec<String> {
    let out = store.run(sb, &["history", "--from", &store.url]);
    assert!(out.status.success(), "{}: {}", store.name, stderr(&out));
    stdout(&out)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect()
}

/// Sets the mtime (the `file://` store's `LastModified`) of every file
/// under `dir` to `age` ago.
fn age_files(dir: &Path, age: Duration) {
    let when = SystemTime::now() - age;
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            age_files(&path, age);
        } else {
            fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
    }
}

/// Every file under `dir` (recursively).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn forget_keeps_snapshots_a_writer_may_still_build_on() {
    let sb = Sandbox::new();
    for store in stores(&sb, "recent") {
        push_versions(&sb, &store, 4);
        let before = history(&sb, &store);
        assert_eq!(before.len(), 4, "{}: {before:?}", store.name);

        let out = store.run(
            &sb,
            &[
                "forget",
                "--from",
                &store.url,
                "--keep-last",
                "2",
                "--dry-run",
            ],
        );
        let text = stdout(&out);
        assert!(out.status.success(), "{}: {}", store.name, stderr(&out));
        // Every snapshot is listed with its verdict and why.
        assert_eq!(text.lines().count(), 6, "{text}");
        let line = |id: &str| text.lines().find(|l| l.starts_with(id)).unwrap().to_owned();
        assert!(line(&before[0]).contains("newest, last snapshot"), "{text}");
        assert!(line(&before[1]).contains("keep") && line(&before[1]).contains("last snapshot"));
        for id in &before[2..] {
            let l = line(id);
            assert!(
                l.contains("too recent") && l.contains("a writer may still build on it"),
                "{l}"
            );
        }
        assert!(
            text.contains("4 kept, 0 would be removed (dry run"),
            "{text}"
        );

        // Not a dry run: the protection holds, nothing is removed yet.
        let out = store.run(&sb, &["forget", "--from", &store.url, "--keep-last", "2"]);
        assert!(out.status.success(), "{}: {}", store.name, stderr(&out));
        assert!(
            stdout(&out).contains("4 kept, 0 removed"),
            "{}",
            stdout(&out)
        );
        assert_eq!(history(&sb, &store), before, "{}", store.name);

        // No rule: a usage error, nothing touched.
        let out = store.run(&sb, &["forget", "--from", &store.url]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("no retention rule"),
            "{}",
            stderr(&out)
        );
        // The same policy as a spec, in a dry run with --prune.
        let out = store.run(
            &sb,
            &[
                "forget",
                "--from",
                &store.url,
                "--policy",
                "last=2",
                "--prune",
                "--dry-run",
            ],
        );
        assert!(out.status.success(), "{}: {}", store.name, stderr(&out));
        assert!(stdout(&out).contains("would delete: "), "{}", stdout(&out));
    }
}

#[test]
fn forget_then_prune_frees_old_snapshots_and_check_passes_after() {
    let sb = Sandbox::new();
    let store = stores(&sb, "free").remove(0);
    push_versions(&sb, &store, 5);
    let before = history(&sb, &store);
    assert_eq!(before.len(), 5);
    // An hour ago by the store's clock: no longer protected.
    age_files(&sb.path("store/snapshots"), Duration::from_secs(3600));

    let out = store.run(&sb, &["forget", "--from", &store.url, "--keep-last", "2"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("2 kept, 3 removed"), "{text}");
    for id in &before[2..] {
        let l = text.lines().find(|l| l.starts_with(id.as_str())).unwrap();
        assert!(
            l.contains("removed") && l.contains("no rule keeps it"),
            "{l}"
        );
    }
    assert_eq!(history(&sb, &store), before[..2]);

    // Prune with the default grace: everything is younger, so it waits.
    let out = store.run(&sb, &["prune", "--from", &store.url, "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("would delete: 0 objects"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("waiting: 0 "), "{}", stdout(&out));
    let data_before = files_under(&sb.path("store/data")).len();
    // --grace 0s: warned about, and frees the three versions' data.
    let out = store.run(&sb, &["prune", "--from", &store.url, "--grace", "0s"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("safe only while no writer pushes"),
        "{}",
        stderr(&out)
    );
    let deleted: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("deleted: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(deleted >= 3, "{text}");
    assert!(files_under(&sb.path("store/data")).len() < data_before);

    let out = store.run(&sb, &["check", "--from", &store.url, "--read-data"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("no problems found"),
        "{}",
        stdout(&out)
    );
    // Both kept snapshots restore.
    for (i, id) in before[..2].iter().enumerate() {
        let dest = format!("r{i}");
        let out = store.run(&sb, &["restore", &dest, "--from", &store.url, "--at", id]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            fs::read_to_string(sb.path(&dest).join("notes.md")).unwrap(),
            format!("version {}\n", 4 - i).repeat(200)
        );
    }
}

#[test]
fn check_names_a_missing_pack_and_a_flipped_byte() {
    let sb = Sandbox::new();
    let store = stores(&sb, "check").remove(0);
    push_versions(&sb, &store, 2);
    let out = store.run(
        &sb,
        &["check", "--from", &store.url, "--read-data-subset", "100%"],
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));

    let mut packs = files_under(&sb.path("store/data"));
    packs.sort();
    assert!(packs.len() >= 2, "{packs:?}");
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();

    // One flipped byte: the structure is intact, the content is not.
    let flipped = &packs[0];
    let mut bytes = fs::read(flipped).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(flipped, &bytes).unwrap();
    let out = store.run(&sb, &["check", "--from", &store.url, "--read-data"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("problem: "))
        .collect();
    assert!(!problems.is_empty(), "{text}");
    assert!(
        problems.iter().any(|p| p.contains(&name(flipped))),
        "{text}"
    );
    assert!(
        stderr(&out).contains("found (listed above)"),
        "{}",
        stderr(&out)
    );

    // A deleted pack: found by the structure check alone.
    let gone = &packs[1];
    fs::remove_file(gone).unwrap();
    let out = store.run(&sb, &["check", "--from", &store.url]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("problem: ") && l.contains(&name(gone))),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_prune_killed_mid_way_leaves_a_repository_check_passes_and_a_later_prune_finishes() {
    let sb = Sandbox::new();
    let store = stores(&sb, "kill").remove(0);
    push_versions(&sb, &store, 3);
    // Plenty of garbage (unreferenced packs), so the prune runs for a while.
    const GARBAGE: usize = 20_000;
    for i in 0..GARBAGE {
        let hex = format!("{:064x}", 0xfeed_0000_u64 + i as u64)
            .chars()
            .rev()
            .collect::<String>();
        let dir = sb.path("store/data").join(&hex[..2]);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(&hex), b"garbage").unwrap();
    }
    let total = files_under(&sb.path("store/data")).len();
    // One request at a time makes the deletes slow enough to interrupt.
    let url = format!("{}?concurrency=1", store.url);
    let mut child = sb
        .tether()
        .args(["prune", "--from", &url, "--grace", "0s"])
        .env("TETHER_LEASE_TTL", "30s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once it has deleted some (not all) of the garbage.
    wait_for(
        "the prune to start deleting",
        Duration::from_secs(120),
        || {
            let left = files_under(&sb.path("store/data")).len();
            (left + 500 <= total).then_some(())
        },
    );
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        None,
        "the prune finished before it was killed"
    );
    let left = files_under(&sb.path("store/data")).len();
    assert!(left > total - GARBAGE, "nothing left to interrupt: {left}");

    // The killed prune still holds the lease: another is refused (exit 1).
    let out = store.run(&sb, &["prune", "--from", &store.url, "--grace", "0s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("another maintainer holds the maintenance lease"),
        "{}",
        stderr(&out)
    );
    // Nothing a snapshot needs is gone.
    let out = store.run(&sb, &["check", "--from", &store.url, "--read-data"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    // Once the lease expires (30 s after its last renewal), a prune takes
    // it over and finishes the job.
    let done = wait_for(
        "a later prune to take the lease over",
        Duration::from_secs(120),
        || {
            let out = store.run(&sb, &["prune", "--from", &store.url, "--grace", "0s"]);
            if out.status.success() {
                return Some(out);
            }
            assert!(
                stderr(&out).contains("another maintainer holds"),
                "{}",
                stderr(&out)
            );
            std::thread::sleep(Duration::from_secs(1));
            None
        },
    );
    assert!(stdout(&done).contains("deleted: "), "{}", stdout(&done));
    assert_eq!(files_under(&sb.path("store/data")).len(), total - GARBAGE);
    let out = store.run(&sb, &["check", "--from", &store.url, "--read-data"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    for id in history(&sb, &store) {
        let out = store.run(
            &sb,
            &[
                "restore",
                &format!("r-{id}"),
                "--from",
                &store.url,
                "--at",
                &id,
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

#[test]
fn maintenance_commands_refuse_git_and_the_mirror_layout() {
    let sb = Sandbox::new();
    let bare = sb.path("notes.git");
    let ok = Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&bare)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let git = format!("file://{}", bare.display());
    let mirror = format!("{}?layout=mirror", sb.url("mirror"));
    fs::create_dir(sb.path("w")).unwrap();
    fs::write(sb.path("w/a.txt"), "a").unwrap();
    let out = sb.run(&["sync", "w", "--to", &mirror, "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for args in [&["forget", "--keep-last", "1"][..], &["prune"], &["check"]] {
        let out = sb.run(&[args, &["--from", git.as_str()][..]].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("work on object-store remotes")
                && stderr(&out).contains("a git remote keeps every checkpoint"),
            "{args:?}: {}",
            stderr(&out)
        );
        let out = sb.run(&[args, &["--from", mirror.as_str()][..]].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("does not support") && stderr(&out).contains("mirror layout"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

/// `tether sync` with an HTTP port; returns the child and the port.
fn sync_sidecar(sb: &Sandbox, store: &Store, extra: &[&str]) -> (std::process::Child, u16) {
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut c = sb.tether();
    for (k, v) in &store.env {
        c.env(k, v);
    }
    let child = c
        .args(["sync", "w", "--to", &store.url, "--http-bind", &bind])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, port)
}

fn metrics(port: u16) -> Option<String> {
    http_get(port, "/metrics").map(|(_, body)| body)
}

#[test]
fn the_sidecar_maintains_its_remote_in_the_background() {
    let sb = Sandbox::new();
    for store in stores(&sb, "sidecar") {
        push_versions(&sb, &store, 3);
        let (mut child, port) = sync_sidecar(
            &sb,
            &store,
            &[
                "--maintenance-interval",
                "1s",
                "--keep-last",
                "1",
                "--prune-grace",
                "0s",
            ],
        );
        let text = wait_for(
            "a maintenance run in /metrics",
            Duration::from_secs(120),
            || {
                let m = metrics(port)?;
                (metric(&m, "tether_maintenance_last_success_timestamp_seconds")? > 0.0)
                    .then_some(m)
            },
        );
        assert!(
            metric(&text, "tether_maintenance_runs_total").unwrap() >= 1.0,
            "{text}"
        );
        assert_eq!(
            metric(&text, "tether_maintenance_failures_total"),
            Some(0.0),
            "{text}"
        );
        // keep-last 1, but the other two were superseded just now.
        assert_eq!(
            metric(&text, "tether_maintenance_snapshots_kept"),
            Some(3.0),
            "{text}"
        );
        // A change is still pushed while maintenance runs every second.
        fs::write(sb.path("w/new.txt"), store.name).unwrap();
        wait_for("the new file's push", Duration::from_secs(60), || {
            (metric(&metrics(port)?, "tether_files_pushed_total")? >= 1.0).then_some(())
        });
        sigterm(&child);
        let (code, err) = wait_exit(&mut child, Duration::from_secs(60));
        assert_eq!(code, 0, "{}: {err}", store.name);
        assert!(
            err.contains("background maintenance (forget + prune) enabled"),
            "{err}"
        );
        assert!(err.contains("keep-last") || err.contains("last=1"), "{err}");
        assert!(err.contains("maintenance done"), "{err}");
        let out = store.run(&sb, &["check", "--from", &store.url, "--read-data"]);
        assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    }
}

#[test]
fn retention_off_and_remotes_without_history_run_no_maintenance() {
    let sb = Sandbox::new();
    let store = stores(&sb, "off").remove(0);
    push_versions(&sb, &store, 1);
    let bare = sb.path("notes.git");
    assert!(
        Command::new("git")
            .args(["init", "-q", "--bare", "-b", "main"])
            .arg(&bare)
            .status()
            .unwrap()
            .success()
    );
    let git = Store {
        name: "git",
        url: format!("file://{}", bare.display()),
        env: Vec::new(),
    };
    let mirror = Store {
        name: "mirror",
        url: format!("{}?layout=mirror", sb.url("mirror")),
        env: Vec::new(),
    };
    for (store, extra, log) in [
        (&store, &["--retention", "off"][..], "retention is off"),
        (&git, &[], "retention does not apply to git remotes"),
        (
            &mirror,
            &[],
            "retention does not apply to the mirror layout",
        ),
    ] {
        let (mut child, port) = sync_sidecar(
            &sb,
            store,
            &[extra, &["--maintenance-interval", "1s"][..]].concat(),
        );
        wait_for("the first push", Duration::from_secs(60), || {
            (metric(&metrics(port)?, "tether_ready")? == 1.0).then_some(())
        });
        // Several intervals pass (there is no event for "nothing ran").
        std::thread::sleep(Duration::from_secs(3));
        let text = metrics(port).unwrap();
        assert_eq!(
            metric(&text, "tether_maintenance_runs_total"),
            Some(0.0),
            "{text}"
        );
        sigterm(&child);
        let (code, err) = wait_exit(&mut child, Duration::from_secs(60));
        assert_eq!(code, 0, "{}: {err}", store.name);
        assert!(err.contains(log), "{}: {err}", store.name);
        assert!(!err.contains("maintenance done"), "{err}");
    }
    // --retention off with a --keep-* flag contradicts itself.
    let out = sb.run(&[
        "sync",
        "w",
        "--to",
        &store.url,
        "--retention",
        "off",
        "--keep-last",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("contradicts"), "{}", stderr(&out));
}
