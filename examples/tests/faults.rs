//! The `tether` binary under faults (issue 11): a remote that hangs or is
//! slow (SeaweedFS behind the fault-injecting proxy of `common::proxy`), a
//! file that never stops changing, a full state directory (a real tmpfs),
//! and SIGTERM while a push hangs. Real processes, real signals; the
//! assertions are on exit codes, generous timing bounds, `/metrics`,
//! `/readyz` and what a restore from the remote gives.
//!
//! The S3 tests need the test bed (skipped without it unless
//! TETHER_TESTBED=1); the tmpfs tests need root (to mount) and are skipped
//! otherwise unless TETHER_TESTBED=1.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::proxy::{FaultProxy, Mode};
use common::*;

const LIMIT: Duration = Duration::from_secs(60);

type Tree = std::collections::BTreeMap<String, Option<Vec<u8>>>;

use sync_core::testkit::testbed_var;

/// SeaweedFS from the test bed, reached through a fault proxy.
struct S3 {
    endpoint: String,
    key: String,
    secret: String,
    bucket: String,
    proxy: FaultProxy,
    prefix: String,
}

impl S3 {
    fn new(name: &str) -> Option<S3> {
        let endpoint = testbed_var("TETHER_TEST_S3_ENDPOINT")?;
        let key = testbed_var("TETHER_TEST_S3_ACCESS_KEY")?;
        let secret = testbed_var("TETHER_TEST_S3_SECRET_KEY")?;
        let bucket = testbed_var("TETHER_TEST_S3_BUCKET")?;
        let upstream = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Some(S3 {
            proxy: FaultProxy::start(&upstream),
            prefix: format!("faults-{name}-{}-{nanos}", std::process::id()),
            endpoint,
            key,
            secret,
            bucket,
        })
    }

    /// The remote URL through the proxy.
    fn proxied(&self) -> String {
        format!(
            "s3://{}/{}?endpoint={}&allow_http=true",
            self.bucket,
            self.prefix,
            self.proxy.url()
        )
    }

    /// The same remote, straight to SeaweedFS.
    fn direct(&self) -> String {
        format!(
            "s3://{}/{}?endpoint={}&allow_http=true",
            self.bucket, self.prefix, self.endpoint
        )
    }

    fn tether(&self, sb: &Sandbox) -> Command {
        let mut c = sb.tether();
        c.env("AWS_ACCESS_KEY_ID", &self.key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_REGION", "us-east-1");
        c
    }

    fn spawn(&self, sb: &Sandbox, args: &[&str]) -> Child {
        self.tether(sb)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The remote's newest state, restored straight from SeaweedFS.
    fn restored(&self, sb: &Sandbox, name: &str) -> Tree {
        self.try_restored(sb, name)
            .unwrap_or_else(|e| panic!("restore: {e}"))
    }

    fn try_restored(&self, sb: &Sandbox, name: &str) -> Result<Tree, String> {
        let out = self
            .tether(sb)
            .args(["restore", name, "--from", &self.direct(), "--state-dir"])
            .arg(sb.path(&format!("{name}-state")))
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(stderr(&out));
        }
        Ok(tree(&sb.path(name)))
    }
}

fn metrics(port: u16) -> Option<String> {
    http_get(port, "/metrics").map(|(_, text)| text)
}

fn ready(port: u16) -> Option<u16> {
    http_get(port, "/readyz").map(|(status, _)| status)
}

/// Issue 11 item 2: SIGTERM while a push hangs exits within `--grace`
/// (plus slack), exit 1, naming how many paths are unsaved; nothing is lost
/// for the next run.
#[test]
fn sigterm_during_a_hung_push_exits_within_grace() {
    let Some(s3) = S3::new("grace") else { return };
    let sb = Sandbox::new();
    let work = sb.path("work");
    fs::create_dir(&work).unwrap();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let url = s3.proxied();
    let mut child = s3.spawn(
        &sb,
        &[
            "sync",
            "work",
            "--to",
            &url,
            "--state-dir",
            "state",
            "--debounce",
            "100ms",
            "--max-latency",
            "1s",
            "--http-bind",
            &bind,
            "--grace",
            "3s",
        ],
    );
    wait_for("/readyz 200", LIMIT, || ready(port).filter(|s| *s == 200));
    s3.proxy.set(Mode::Hang);
    for i in 0..20 {
        fs::write(work.join(format!("f{i:02}.txt")), format!("file {i}")).unwrap();
    }
    // The push is in flight once the proxy holds its first request.
    wait_for("a push held by the proxy", LIMIT, || {
        (s3.proxy.held() > 0).then_some(())
    });
    let t = Instant::now();
    sigterm(&child);
    let (code, err) = wait_exit(&mut child, Duration::from_secs(180));
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(3 + 5),
        "exited {took:?} after SIGTERM with --grace 3s; stderr: {err}"
    );
    assert_eq!(code, 1, "stderr: {err}");
    assert!(err.contains("20 paths not saved within 3s"), "{err}");
    assert!(err.contains("f00.txt"), "{err}");

    // The next run (remote healthy again) saves everything.
    s3.proxy.set(Mode::Pass);
    let out = s3
        .tether(&sb)
        .args([
            "sync",
            "work",
            "--to",
            &url,
            "--state-dir",
            "state",
            "--once",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s3.restored(&sb, "copy"), tree(&work));
}

/// Issue 11 item 4: readiness turns 503 while a remote hangs (no push fails
/// or succeeds), the age of the oldest unsaved change is exported, and
/// after the remote returns the sidecar catches up within seconds.
#[test]
fn readiness_follows_a_hanging_remote_and_recovers_quickly() {
    let Some(s3) = S3::new("hang") else { return };
    let sb = Sandbox::new();
    let work = sb.path("work");
    fs::create_dir(&work).unwrap();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let url = s3.proxied();
    let mut child = s3
        .tether(&sb)
        // An environment variable: older builds ignore it and still run.
        .env("TETHER_REQUEST_TIMEOUT", "2s")
        .args([
            "sync",
            "work",
            "--to",
            &url,
            "--state-dir",
            "state",
            "--debounce",
            "100ms",
            "--max-latency",
            "1s",
            "--http-bind",
            &bind,
            "--unready-after",
            "3s",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("/readyz 200", LIMIT, || ready(port).filter(|s| *s == 200));
    s3.proxy.set(Mode::Hang);
    let t = Instant::now();
    fs::write(work.join("notes.md"), "written while the remote hangs").unwrap();
    wait_for(
        "/readyz 503 during the hang",
        Duration::from_secs(20),
        || ready(port).filter(|s| *s == 503),
    );
    assert!(t.elapsed() < Duration::from_secs(20));
    let text = metrics(port).unwrap();
    let age = metric(&text, "tether_oldest_unsaved_change_seconds").expect("gauge missing");
    assert!(age > 3.0, "{text}");

    s3.proxy.set(Mode::Pass);
    let back = Instant::now();
    wait_for("caught up", LIMIT, || {
        let text = metrics(port)?;
        (metric(&text, "tether_pending_paths")? == 0.0
            && metric(&text, "tether_oldest_unsaved_change_seconds")? == 0.0
            && ready(port)? == 200)
            .then_some(())
    });
    let took = back.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "caught up {took:?} after the remote returned"
    );
    sigterm(&child);
    let (code, err) = wait_exit(&mut child, LIMIT);
    assert_eq!(code, 0, "{err}");
    assert_eq!(s3.restored(&sb, "copy"), tree(&work));
}

/// Issue 11 item 3: a log appended to four times a second, with 300 ms per
/// request, does not stop the notebook (or the log) from being saved, and
/// the interrupted pushes are counted.
#[test]
fn a_busy_log_does_not_stall_checkpoints() {
    let Some(s3) = S3::new("busy") else { return };
    let sb = Sandbox::new();
    let work = sb.path("work");
    fs::create_dir(&work).unwrap();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let url = s3.proxied();
    let mut child = s3.spawn(
        &sb,
        &[
            "sync",
            "work",
            "--to",
            &url,
            "--state-dir",
            "state",
            "--debounce",
            "200ms",
            "--max-latency",
            "2s",
            "--http-bind",
            &bind,
            "--grace",
            "20s",
        ],
    );
    wait_for("/readyz 200", LIMIT, || ready(port).filter(|s| *s == 200));
    s3.proxy.set(Mode::Delay(Duration::from_millis(300)));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let log = work.join("train.log");
    let writer = {
        let (stop, log) = (stop.clone(), log.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut f = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap();
                writeln!(f, "step {n} loss {:.4}", 1.0 / (n as f64 + 1.0)).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    fs::write(work.join("analysis.ipynb"), "{\"cells\": [\"plot\"]}").unwrap();
    // Both are on the remote while the log keeps changing.
    let mut attempt = 0;
    let remote = wait_for("notebook and log saved", LIMIT, || {
        let text = metrics(port)?;
        if metric(&text, "tether_files_pushed_total")? < 2.0 {
            return None;
        }
        attempt += 1;
        let remote = s3.try_restored(&sb, &format!("during{attempt}")).ok()?;
        (remote.contains_key("analysis.ipynb") && remote.contains_key("train.log"))
            .then_some(remote)
    });
    let text = metrics(port).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(
        remote.get("analysis.ipynb"),
        Some(&Some(b"{\"cells\": [\"plot\"]}".to_vec()))
    );
    let pushed_log = remote
        .get("train.log")
        .cloned()
        .flatten()
        .expect("train.log never saved");
    let local_log = fs::read(&log).unwrap();
    assert!(
        !pushed_log.is_empty() && local_log.starts_with(&pushed_log),
        "the pushed log is not one consistent read of the file"
    );
    assert!(
        metric(&text, "tether_source_changed_total").is_some(),
        "{text}"
    );
    s3.proxy.set(Mode::Pass);
    sigterm(&child);
    let (code, err) = wait_exit(&mut child, LIMIT);
    assert_eq!(code, 0, "{err}");
    assert_eq!(s3.restored(&sb, "after"), tree(&work));
}

/// Other faults of the proxy: a remote that answers 503 half the time,
/// drops connections or cuts responses short still ends up with
/// everything, and the binary reports nothing saved that is not.
#[test]
fn flaky_remote_converges() {
    let Some(s3) = S3::new("flaky") else { return };
    let sb = Sandbox::new();
    let work = sb.path("work");
    fs::create_dir_all(work.join("sub")).unwrap();
    for i in 0..10 {
        fs::write(
            work.join(format!("sub/f{i}")),
            vec![i as u8; 10_000 * (i + 1)],
        )
        .unwrap();
    }
    let url = s3.proxied();
    for mode in [Mode::Error503(0.5), Mode::Cut(2_000), Mode::Drop] {
        s3.proxy.set(mode);
        let out = s3
            .tether(&sb)
            .args([
                "sync",
                "work",
                "--to",
                &url,
                "--state-dir",
                "state",
                "--once",
                "--grace",
                "3s",
            ])
            .output()
            .unwrap();
        // Either everything is saved (exit 0), or the failure is named.
        if !out.status.success() {
            assert_eq!(out.status.code(), Some(1), "{mode:?}: {}", stderr(&out));
            assert!(
                stderr(&out).contains("not saved within 3s"),
                "{mode:?}: {}",
                stderr(&out)
            );
        }
    }
    s3.proxy.set(Mode::Pass);
    let out = s3
        .tether(&sb)
        .args([
            "sync",
            "work",
            "--to",
            &url,
            "--state-dir",
            "state",
            "--once",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s3.proxy.requests() > 0);
    assert_eq!(s3.restored(&sb, "copy"), tree(&work));
}

// ------------------------------------------------------------ full disk

/// A tmpfs of `size` mounted at `path` (root only); unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(path.to_owned())),
            other => {
                let why = match other {
                    Ok(o) => stderr(&o),
                    Err(e) => e.to_string(),
                };
                let root = Command::new("id")
                    .arg("-u")
                    .output()
                    .is_ok_and(|o| stdout(&o).trim() == "0");
                assert!(
                    !(root && std::env::var("TETHER_TESTBED").as_deref() == Ok("1")),
                    "cannot mount a tmpfs as root: {why}"
                );
                println!("skipped: cannot mount a tmpfs ({why})");
                None
            }
        }
    }

    /// Fills the file system; returns the filler file.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut f = fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Issue 11 item 7: pushes succeed but the index cannot be written. That is
/// counted and turns readiness 503; once there is room the change is
/// recorded, the journal has no torn line, and a restart pushes nothing.
#[test]
fn a_full_state_directory_is_visible_and_the_index_stays_consistent() {
    let sb = Sandbox::new();
    let Some(state) = Tmpfs::mount(&sb.path("state"), "512k") else {
        return;
    };
    let work = sb.path("work");
    fs::create_dir(&work).unwrap();
    fs::write(work.join("first.txt"), "before the disk filled up").unwrap();
    let store = sb.url("store");
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
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
            &bind,
            "--unready-after",
            "2s",
        ],
    );
    wait_for("/readyz 200", LIMIT, || ready(port).filter(|s| *s == 200));
    let filler = state.fill();
    // Enough paths that their journal record needs a fresh page of the
    // tmpfs (a small one could fit in the journal's last page).
    for i in 0..50 {
        fs::write(
            work.join(format!("second-{i:02}.txt")),
            format!("written while the state dir is full {i}"),
        )
        .unwrap();
    }
    wait_for("an index write failure counted", LIMIT, || {
        let text = metrics(port)?;
        (metric(&text, "tether_index_write_failures_total")? >= 1.0).then_some(())
    });
    wait_for("/readyz 503", LIMIT, || ready(port).filter(|s| *s == 503));

    fs::remove_file(filler).unwrap();
    wait_for("recovered", LIMIT, || {
        let text = metrics(port)?;
        (metric(&text, "tether_pending_paths")? == 0.0
            && metric(&text, "tether_oldest_unsaved_change_seconds")? == 0.0
            && ready(port)? == 200)
            .then_some(())
    });
    sigterm(&child);
    let (code, err) = wait_exit(&mut child, LIMIT);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("disk") || err.contains("No space"),
        "the failure was not logged: {err}"
    );

    // Every journal line is a whole record.
    if let Ok(journal) = fs::read_to_string(sb.path("state/journal.jsonl")) {
        for line in journal.lines() {
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_ok(),
                "torn journal line: {line:?}"
            );
        }
    }
    // The index knows both files: a restart pushes nothing again.
    let out = sb.run(&[
        "sync",
        "work",
        "--to",
        &store,
        "--state-dir",
        "state",
        "--once",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("pushed 0 files"), "{}", stdout(&out));
    let out = sb.run(&[
        "restore",
        "copy",
        "--from",
        &store,
        "--state-dir",
        "copy-state",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tree(&sb.path("copy")), tree(&work));
    drop(state);
}

/// Issue 11 item 7, git: a full state directory says so, instead of gix's
/// "Could not write loose object header".
#[test]
fn git_says_the_state_directory_is_full() {
    let sb = Sandbox::new();
    let Some(state) = Tmpfs::mount(&sb.path("state"), "1m") else {
        return;
    };
    let bare = sb.path("notes.git");
    assert!(
        Command::new("git")
            .args(["init", "-q", "--bare", "-b", "main"])
            .arg(&bare)
            .status()
            .unwrap()
            .success()
    );
    let url = format!("file://{}", bare.display());
    let work = sb.path("work");
    fs::create_dir(&work).unwrap();
    fs::write(work.join("a.txt"), "a").unwrap();
    let out = sb.run(&[
        "sync",
        "work",
        "--to",
        &url,
        "--state-dir",
        "state",
        "--once",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let filler = state.fill();
    fs::write(work.join("b.txt"), "some new content that needs a blob").unwrap();
    let out = sb.run(&[
        "sync",
        "work",
        "--to",
        &url,
        "--state-dir",
        "state",
        "--once",
        "--grace",
        "2s",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let state_dir = fs::canonicalize(sb.path("state")).unwrap();
    assert!(
        err.contains("disk full in state directory") && err.contains(&*state_dir.to_string_lossy()),
        "{err}"
    );
    fs::remove_file(filler).unwrap();
    let out = sb.run(&[
        "sync",
        "work",
        "--to",
        &url,
        "--state-dir",
        "state",
        "--once",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    drop(state);
}
