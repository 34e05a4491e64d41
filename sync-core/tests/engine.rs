//! The engine with real files and inotify, pushing to the recording memory
//! backend.

// Tests and benchmarks fail loudly: unwrap/expect are the point here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sync_core::testkit::MemoryBackend;
use sync_core::{
    Engine, EngineConfig, EngineError, EngineHandle, FlushError, Meta, Policy, Restored,
    RetryConfig, StateDir, StateError, Status, restore_and_seed,
};
use tempfile::TempDir;

struct Fx {
    tmp: TempDir,
    root: PathBuf,
    state: PathBuf,
    backend: MemoryBackend,
}

fn fx() -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let state = tmp.path().join("state");
    fs::create_dir(&root).unwrap();
    Fx {
        root,
        state,
        backend: MemoryBackend::new(),
        tmp,
    }
}

impl Fx {
    fn config(&self, quiet_ms: u64) -> EngineConfig {
        let mut c = EngineConfig::new(&self.root, &self.state);
        c.policy = Policy {
            quiet: Duration::from_millis(quiet_ms),
            max_latency: Duration::from_secs(10),
            ..Policy::default()
        };
        c.retry = RetryConfig {
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
        };
        c
    }

    async fn start(&self, quiet_ms: u64) -> EngineHandle {
        Engine::start(self.config(quiet_ms), Arc::new(self.backend.clone()))
            .await
            .unwrap()
    }

    fn write(&self, rel: &str, content: &[u8]) {
        let p = self.root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    /// Files in the backend's newest state, with their content.
    fn remote_files(&self) -> Vec<(String, Vec<u8>)> {
        self.backend
            .state()
            .into_iter()
            .filter_map(|(p, m)| match m {
                Meta::File(f) => Some((p, self.backend.blob(&f.hash).unwrap().to_vec())),
                _ => None,
            })
            .collect()
    }

    /// Files on disk, with their content.
    fn local_files(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        walk(&self.root, &self.root, &mut out);
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            walk(root, &e.path(), out);
        } else if ft.is_file() {
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((rel, fs::read(e.path()).unwrap()));
        }
    }
}

/// Waits (bounded) until `cond` holds for the engine's status.
async fn wait_for(h: &EngineHandle, what: &str, cond: impl Fn(&Status) -> bool) -> Status {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = h.status();
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn settle(h: &EngineHandle) -> Status {
    wait_for(h, "everything pushed", |s| {
        s.scanned && s.pending_paths == 0 && s.checkpoints_pushed > 0
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_5000_files_lands_in_few_checkpoints() {
    let f = fx();
    let h = f.start(1000).await;
    wait_for(&h, "start-up scan", |s| s.scanned).await;
    for i in 0..5000 {
        f.write(
            &format!("burst/d{}/f{i}.txt", i % 50),
            format!("file {i}").as_bytes(),
        );
    }
    // "Nothing pending" can be true while events are still queued in the
    // kernel, so wait for the files themselves (bounded).
    let deadline = Instant::now() + Duration::from_secs(60);
    while f.remote_files().len() < 5000 {
        assert!(
            Instant::now() < deadline,
            "only {} of 5000 files pushed",
            f.remote_files().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    settle(&h).await;
    let pushes = f.backend.pushes();
    let files: usize = pushes
        .iter()
        .map(|p| p.upserts.iter().filter(|(_, h)| h.is_some()).count())
        .sum();
    assert_eq!(files, 5000, "every file pushed exactly once");
    assert!(
        pushes.len() <= 5,
        "5000 files took {} checkpoints",
        pushes.len()
    );
    assert_eq!(f.remote_files(), f.local_files());
    let r = h.shutdown(Duration::from_secs(5)).await;
    assert!(r.flushed, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editor_style_save_is_one_upsert() {
    let f = fx();
    f.write("notebook.ipynb", b"v1");
    let h = f.start(300).await;
    settle(&h).await;
    let before = f.backend.pushes().len();
    // Write a temporary file, then rename it over the original.
    f.write(".notebook.ipynb.tmp-123", b"v2 with more bytes");
    fs::rename(
        f.root.join(".notebook.ipynb.tmp-123"),
        f.root.join("notebook.ipynb"),
    )
    .unwrap();
    wait_for(&h, "second push", |s| {
        s.checkpoints_pushed as usize > before && s.pending_paths == 0
    })
    .await;
    let pushes = f.backend.pushes();
    let last = &pushes[before..];
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(last[0].upserts.len(), 1, "{:?}", last[0]);
    assert_eq!(last[0].upserts[0].0.as_str(), "notebook.ipynb");
    assert!(
        last[0].deletes.is_empty(),
        "the temp file was never pushed, so nothing to delete"
    );
    assert_eq!(f.remote_files(), f.local_files());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_directories_renames_and_subtree_deletes_propagate() {
    let f = fx();
    f.write("keep/a.txt", b"a");
    f.write("old/sub/b.txt", b"b");
    f.write("doomed/x/y/z.txt", b"z");
    let h = f.start(200).await;
    settle(&h).await;
    // A directory created with content already in it.
    fs::create_dir_all(f.root.join("fresh/deep/er")).unwrap();
    fs::write(f.root.join("fresh/deep/er/c.txt"), b"c").unwrap();
    fs::rename(f.root.join("old"), f.root.join("new")).unwrap();
    fs::remove_dir_all(f.root.join("doomed")).unwrap();
    // And a file inside the renamed directory changes afterwards: its watch
    // must follow the new name.
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.write("new/sub/b.txt", b"b2");
    f.write("fresh/deep/er/d.txt", b"d");
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_for(&h, "all pushed", |s| s.pending_paths == 0).await;
    h.flush().await.unwrap();
    assert_eq!(f.remote_files(), f.local_files());
    let state = f.backend.state();
    assert!(
        !state
            .keys()
            .any(|k| k.starts_with("old") || k.starts_with("doomed")),
        "{state:?}"
    );
    assert!(state.get("fresh/deep").is_some_and(Meta::is_dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_pushes_are_retried_with_newer_changes_merged() {
    let f = fx();
    let h = f.start(100).await;
    settle_or_idle(&h).await;
    f.backend.fail_next(3);
    f.write("a.txt", b"first");
    let s = wait_for(&h, "a failure", |s| s.push_failures >= 1).await;
    assert!(
        s.last_error
            .as_deref()
            .unwrap_or("")
            .contains("injected failure"),
        "{s:?}"
    );
    assert!(s.failing_since.is_some());
    f.write("a.txt", b"second");
    f.write("b.txt", b"b");
    let s = wait_for(&h, "recovery", |s| {
        s.last_error.is_none() && s.checkpoints_pushed >= 1 && s.pending_paths == 0
    })
    .await;
    assert!(s.push_failures >= 3, "{s:?}");
    assert_eq!(f.remote_files(), f.local_files());
    // The stale "first" version was never pushed.
    let pushes = f.backend.pushes();
    let first = sync_core::ContentHash::of(b"first");
    assert!(
        !pushes
            .iter()
            .flat_map(|p| &p.upserts)
            .any(|(_, h)| *h == Some(first))
    );
    h.shutdown(Duration::from_secs(5)).await;
}

async fn settle_or_idle(h: &EngineHandle) {
    wait_for(h, "start-up scan", |s| s.scanned && s.pending_paths == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_pending_changes_within_the_grace_period() {
    let f = fx();
    let h = f.start(60_000).await; // quiet period far longer than the test
    settle_or_idle(&h).await;
    f.write("late.txt", b"saved on the way out");
    wait_for(&h, "the change noticed", |s| s.pending_paths > 0).await;
    let r = h.shutdown(Duration::from_secs(10)).await;
    assert!(r.flushed, "{r:?}");
    assert!(r.unsaved.is_empty());
    assert_eq!(f.remote_files(), f.local_files());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reports_what_it_could_not_save() {
    let f = fx();
    let h = f.start(60_000).await;
    settle_or_idle(&h).await;
    f.backend.fail_next(1_000);
    f.write("unsaved.txt", b"x");
    wait_for(&h, "the change noticed", |s| s.pending_paths > 0).await;
    let r = h.shutdown(Duration::from_millis(800)).await;
    assert!(!r.flushed);
    assert_eq!(
        r.unsaved.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        ["unsaved.txt"]
    );
    assert!(
        r.last_error
            .unwrap_or_default()
            .contains("injected failure")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_pushes_only_what_changed_while_stopped() {
    let f = fx();
    for i in 0..100 {
        f.write(&format!("f{i}"), format!("{i}").as_bytes());
    }
    let h = f.start(100).await;
    settle(&h).await;
    assert!(h.shutdown(Duration::from_secs(5)).await.flushed);
    let before = f.backend.pushes().len();

    f.write("f7", b"changed while stopped");
    fs::remove_file(f.root.join("f8")).unwrap();
    let h = f.start(100).await;
    wait_for(&h, "catch-up push", |s| {
        s.scanned && s.pending_paths == 0 && s.checkpoints_pushed == 1
    })
    .await;
    let pushes = f.backend.pushes();
    assert_eq!(pushes.len(), before + 1);
    let p = &pushes[before];
    assert_eq!(
        p.upserts
            .iter()
            .map(|(p, _)| p.as_str())
            .collect::<Vec<_>>(),
        ["f7"]
    );
    assert_eq!(
        p.deletes.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        ["f8"]
    );
    h.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_remote_gets_everything_again() {
    let f = fx();
    f.write("a", b"a");
    let h = f.start(100).await;
    settle(&h).await;
    h.shutdown(Duration::from_secs(5)).await;
    // The remote is replaced by an empty one (bucket wiped, repo re-created).
    let f2 = Fx {
        backend: MemoryBackend::new(),
        ..f
    };
    let h = f2.start(100).await;
    settle(&h).await;
    assert_eq!(f2.remote_files(), f2.local_files());
    h.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_dir_of_another_directory_or_remote_is_refused() {
    let f = fx();
    f.write("a", b"a");
    let h = f.start(100).await;
    settle(&h).await;
    h.shutdown(Duration::from_secs(5)).await;
    // Another directory with the same state directory: its index would
    // make the engine push deletions of everything the other one holds.
    let other = f.tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    let cfg = EngineConfig::new(&other, &f.state);
    let err = Engine::start(cfg, Arc::new(f.backend.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::State(StateError::Foreign { .. })),
        "{err}"
    );
    assert!(
        err.to_string().contains("belongs to another directory"),
        "{err}"
    );
    // The same directory with another remote.
    let mut cfg = f.config(100);
    cfg.remote = Some("s3://elsewhere/x".into());
    let err = Engine::start(cfg, Arc::new(f.backend.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::State(StateError::Foreign { .. })),
        "{err}"
    );
    assert_eq!(f.backend.state().len(), 1, "nothing was pushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_cannot_share_a_state_dir() {
    let f = fx();
    let first = f.start(100).await;
    first.flush().await.unwrap();
    let err = Engine::start(f.config(100), Arc::new(f.backend.clone()))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, EngineError::State(StateError::Locked { .. })),
        "{msg}"
    );
    assert!(
        msg.contains(&f.state.display().to_string())
            && msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    // Free again once the first has stopped.
    first.shutdown(Duration::from_secs(5)).await;
    let second = f.start(100).await;
    second.flush().await.unwrap();
    second.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_and_seed_leaves_nothing_to_push() {
    let f = fx();
    f.write("a/b.txt", b"hello");
    f.write("c", b"sea");
    let h = f.start(100).await;
    settle(&h).await;
    h.shutdown(Duration::from_secs(5)).await;
    let pushed = f.backend.pushes().len();

    // A fresh directory and state directory, restored from the remote.
    let fresh = f.tmp.path().join("fresh");
    let state = f.tmp.path().join("fresh-state");
    fs::create_dir(&fresh).unwrap();
    let fresh = fs::canonicalize(&fresh).unwrap();
    let backend: Arc<dyn sync_core::Backend> = Arc::new(f.backend.clone());
    let locked = StateDir::open(&state, &fresh, &backend.describe()).unwrap();
    let restored = restore_and_seed(backend.as_ref(), &locked, &Default::default())
        .await
        .unwrap();
    assert!(
        matches!(restored, Restored::Done(ref r) if r.files_written == 2),
        "{restored:?}"
    );
    // The engine takes over the locked state directory and pushes nothing.
    let h = Engine::start_with(EngineConfig::new(&fresh, &state), backend, locked)
        .await
        .unwrap();
    h.flush().await.unwrap();
    let s = h.status();
    assert_eq!((s.files_pushed, s.checkpoints_pushed), (0, 0), "{s:?}");
    assert_eq!(f.backend.pushes().len(), pushed);
    h.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn state_dir_inside_the_tree_is_refused() {
    let f = fx();
    let cfg = EngineConfig::new(&f.root, f.root.join(".tether"));
    let err = Engine::start(cfg, Arc::new(f.backend.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::StateInsideRoot { .. }), "{err}");
    let cfg = EngineConfig::new(f.tmp.path().join("missing"), &f.state);
    let err = Engine::start(cfg, Arc::new(f.backend.clone()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    // The cause travels as a source, not flattened into a string.
    let source = std::error::Error::source(&err).expect("a source");
    let io = source
        .downcast_ref::<std::io::Error>()
        .expect("an io::Error");
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_carries_the_backend_error() {
    let f = fx();
    let h = f.start(100).await;
    h.flush().await.unwrap();
    f.backend.fail_next(1);
    f.write("a.txt", b"a");
    wait_for(&h, "the change noticed", |s| s.pending_paths >= 1).await;
    let err = h.flush().await.unwrap_err();
    let FlushError::Push(e) = &err else {
        panic!("not a push error: {err:?}")
    };
    assert!(e.to_string().contains("injected failure"), "{e}");
    h.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_mode_finds_changes_without_inotify() {
    let f = fx();
    let mut cfg = f.config(50);
    cfg.use_inotify = false;
    cfg.poll_interval = Duration::from_millis(200);
    let h = Engine::start(cfg, Arc::new(f.backend.clone()))
        .await
        .unwrap();
    settle_or_idle(&h).await;
    assert!(matches!(
        h.status().watch_mode,
        sync_core::WatchMode::Polling { .. }
    ));
    f.write("polled.txt", b"p");
    wait_for(&h, "polled change", |s| {
        s.checkpoints_pushed >= 1 && s.pending_paths == 0
    })
    .await;
    assert_eq!(f.remote_files(), f.local_files());
    assert!(h.status().rescans >= 2);
    h.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_ignore_file_applies_while_running() {
    let f = fx();
    f.write("notes.txt", b"n");
    f.write("logs/a.log", b"a");
    let h = f.start(200).await;
    settle(&h).await;
    assert!(f.backend.state().contains_key("logs/a.log"));
    let remote_ignore_file = |f: &Fx| {
        f.remote_files()
            .into_iter()
            .find(|(p, _)| p == ".tetherignore")
            .map(|(_, c)| c)
    };
    let wait_for_remote_ignore_file = |content: &'static [u8]| {
        let f = &f;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while remote_ignore_file(f).as_deref() != Some(content) {
                assert!(Instant::now() < deadline, "the ignore file never arrived");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // Ignore *.log and dotfiles. `.*` matches the ignore file itself, which
    // is still seen and synced. The log already pushed leaves the newest
    // state, new ones are never pushed; the local files stay.
    f.write(".tetherignore", b"*.log\n.*\n");
    wait_for_remote_ignore_file(b"*.log\n.*\n").await;
    f.write("logs/b.log", b"b");
    f.write("logs/c.txt", b"c");
    f.write(".hidden", b"h");
    tokio::time::sleep(Duration::from_millis(400)).await;
    h.flush().await.unwrap();
    let state = f.backend.state();
    for gone in ["logs/a.log", "logs/b.log", ".hidden"] {
        assert!(!state.contains_key(gone), "{gone} synced: {state:?}");
    }
    assert!(state.contains_key("logs/c.txt"), "{state:?}");
    assert!(
        f.root.join("logs/a.log").exists(),
        "a local file was touched"
    );

    // A broken rule keeps the previous rules (and is reported in the log).
    let broken: &[u8] = b"*.log\n.*\n[z-a]\n";
    f.write(".tetherignore", broken);
    assert!(sync_core::IgnoreRules::load(&f.root, &sync_core::IgnoreConfig::default()).is_err());
    wait_for_remote_ignore_file(b"*.log\n.*\n[z-a]\n").await;
    f.write("logs/d.log", b"d");
    tokio::time::sleep(Duration::from_millis(400)).await;
    h.flush().await.unwrap();
    assert!(!f.backend.state().contains_key("logs/d.log"));

    // Un-ignore: the rescan finds every file, old and new.
    f.write(".tetherignore", b"# nothing ignored\n");
    wait_for_remote_ignore_file(b"# nothing ignored\n").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    h.flush().await.unwrap();
    let state = f.backend.state();
    for p in ["logs/a.log", "logs/b.log", "logs/d.log", ".hidden"] {
        assert!(state.contains_key(p), "{p} missing: {state:?}");
    }
    assert_eq!(f.remote_files(), f.local_files());
}

// ------------------------------------------------- issue 11: faults

/// Issue 11 item 2: the shutdown deadline covers a push already in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_a_push_that_hangs() {
    let f = fx();
    let h = f.start(50).await;
    settle_or_idle(&h).await;
    f.backend.set_push_delay(None); // the remote stops answering
    let started = f.backend.pushes_started();
    f.write("hung.txt", b"never confirmed");
    f.write("also.txt", b"never confirmed either");
    // Wait for the push to be in flight before asking to stop.
    let deadline = Instant::now() + Duration::from_secs(30);
    while f.backend.pushes_started() == started {
        assert!(Instant::now() < deadline, "no push started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(30), h.shutdown(Duration::from_secs(1)))
        .await
        .expect("shutdown waited for the hung push");
    let took = t.elapsed();
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
    assert!(!r.flushed, "{r:?}");
    let unsaved: Vec<&str> = r.unsaved.iter().map(|p| p.as_str()).collect();
    assert_eq!(unsaved, ["also.txt", "hung.txt"], "{r:?}");
    assert!(
        r.last_error.as_deref().unwrap_or("").contains("deadline"),
        "{r:?}"
    );
}

/// Issue 11 item 3: a file appended to during every push neither blocks
/// the other files nor stays unsaved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changing_during_every_push_does_not_block_the_others() {
    let f = fx();
    let h = f.start(100).await;
    settle_or_idle(&h).await;
    f.backend.set_push_delay(Some(Duration::from_millis(300)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let log = f.root.join("train.log");
    let writer = {
        let (stop, log) = (Arc::clone(&stop), log.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut file = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap();
                writeln!(file, "step {n} loss {}", 1.0 / (n as f64 + 1.0)).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    f.write("notebook.ipynb", b"{\"cells\": []}");
    let notebook = sync_core::ContentHash::of(b"{\"cells\": []}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let remote_hash = |name: &str| match f.backend.state().get(name) {
        Some(Meta::File(m)) => Some(m.hash),
        _ => None,
    };
    while remote_hash("notebook.ipynb") != Some(notebook) || remote_hash("train.log").is_none() {
        assert!(
            Instant::now() < deadline,
            "not saved while train.log kept changing; status {:#?}",
            h.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let s = h.status();
    assert!(s.source_changed >= 1, "{s:#?}");
    // What was pushed of the log is one consistent read: a prefix of it.
    let pushed = f
        .remote_files()
        .into_iter()
        .find(|(p, _)| p == "train.log")
        .unwrap()
        .1;
    let local = fs::read(&log).unwrap();
    assert!(!pushed.is_empty() && local.starts_with(&pushed));
    // Once it stops changing, the final version is saved too.
    let r = h.shutdown(Duration::from_secs(10)).await;
    assert!(r.flushed, "{r:?}");
    assert_eq!(f.remote_files(), f.local_files());
}

/// Issue 11 item 9: same size, same mtime, new content, while running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_size_and_mtime_with_new_content_is_noticed_while_running() {
    let f = fx();
    f.write("data.csv", b"1,2,3");
    let h = f.start(100).await;
    settle(&h).await;
    let mtime = filetime::FileTime::from_last_modification_time(
        &fs::metadata(f.root.join("data.csv")).unwrap(),
    );
    f.write("data.csv", b"4,5,6");
    filetime::set_file_mtime(f.root.join("data.csv"), mtime).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while f.remote_files() != f.local_files() {
        assert!(
            Instant::now() < deadline,
            "the new content was never pushed; status {:#?}",
            h.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.shutdown(Duration::from_secs(5)).await;
}

/// Issue 11 item 9, restart case: only `verify_hashes` finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_hashes_finds_content_changed_while_stopped() {
    let f = fx();
    f.write("data.csv", b"1,2,3");
    let h = f.start(100).await;
    settle(&h).await;
    assert!(h.shutdown(Duration::from_secs(5)).await.flushed);
    let mtime = filetime::FileTime::from_last_modification_time(
        &fs::metadata(f.root.join("data.csv")).unwrap(),
    );
    f.write("data.csv", b"4,5,6");
    filetime::set_file_mtime(f.root.join("data.csv"), mtime).unwrap();
    // The documented limitation: a plain start trusts size and mtime.
    let h = f.start(100).await;
    h.flush().await.unwrap();
    assert_ne!(f.remote_files(), f.local_files());
    h.shutdown(Duration::from_secs(5)).await;
    let mut cfg = f.config(100);
    cfg.verify_hashes = true;
    let h = Engine::start(cfg, Arc::new(f.backend.clone()))
        .await
        .unwrap();
    h.flush().await.unwrap();
    assert_eq!(f.remote_files(), f.local_files());
    h.shutdown(Duration::from_secs(5)).await;
}

/// Issue 11 item 7: a push whose index record cannot be written is not
/// confirmed: it is counted, stays pending, and is pushed again once the
/// state directory has room; the index on disk stays consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_write_failure_keeps_the_change_pending() {
    let f = fx();
    f.write("a.txt", b"a");
    let h = f.start(50).await;
    settle(&h).await;
    // A full disk, for the journal only: every write fails with ENOSPC.
    let journal = f.state.join("journal.jsonl");
    let kept = fs::read(&journal).unwrap_or_default();
    let _ = fs::remove_file(&journal);
    std::os::unix::fs::symlink("/dev/full", &journal).unwrap();
    let pushed_before = f.backend.pushes().len();
    f.write("b.txt", b"b");
    let s = wait_for(&h, "an index write failure", |s| {
        s.index_write_failures >= 1
    })
    .await;
    assert!(
        f.backend.pushes().len() > pushed_before,
        "pushed to the remote"
    );
    assert!(s.pending_paths >= 1, "{s:#?}");
    assert!(s.oldest_unsaved_change.is_some(), "{s:#?}");
    assert!(
        s.last_error.as_deref().unwrap_or("").contains("index"),
        "{s:#?}"
    );
    // Room again.
    fs::remove_file(&journal).unwrap();
    fs::write(&journal, kept).unwrap();
    wait_for(&h, "recovery", |s| {
        s.pending_paths == 0 && s.last_error.is_none() && s.oldest_unsaved_change.is_none()
    })
    .await;
    assert!(h.shutdown(Duration::from_secs(5)).await.flushed);
    // The index on disk knows b.txt: a restart pushes nothing.
    let before = f.backend.pushes().len();
    let h = f.start(50).await;
    h.flush().await.unwrap();
    assert_eq!(
        f.backend.pushes().len(),
        before,
        "pushed again after restart"
    );
    h.shutdown(Duration::from_secs(5)).await;
}

/// Issue 11 item 4: after an outage the push is retried as soon as the
/// remote answers a probe, not after the remaining backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_cuts_a_long_backoff_short() {
    let f = fx();
    let mut cfg = f.config(50);
    cfg.retry = RetryConfig {
        min_delay: Duration::from_secs(60),
        max_delay: Duration::from_secs(60),
    };
    let h = Engine::start(cfg, Arc::new(f.backend.clone()))
        .await
        .unwrap();
    settle_or_idle(&h).await;
    f.backend.fail_next(1);
    f.write("a.txt", b"a");
    wait_for(&h, "a failure", |s| s.push_failures == 1).await;
    let t = Instant::now();
    wait_for(&h, "recovery", |s| {
        s.pending_paths == 0 && s.last_error.is_none()
    })
    .await;
    let took = t.elapsed();
    assert!(
        took < sync_core::engine::PROBE_INTERVAL + Duration::from_secs(10),
        "caught up after {took:?}"
    );
    h.shutdown(Duration::from_secs(5)).await;
}

/// Issue 14 item 1: every write extends the quiet period, also for a file
/// that is already dirty: a file appended to every 300 ms for 5 s (quiet
/// period 1 s, max latency 10 s) is pushed once, after the writes stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_writes_to_a_dirty_file_extend_the_quiet_period() {
    use std::io::Write;
    let f = fx();
    let h = f.start(1000).await;
    wait_for(&h, "start-up scan", |s| s.scanned).await;
    let before = f.backend.pushes().len();
    let log = f.root.join("train.log");
    let mut longest_gap = Duration::ZERO;
    let mut last_write = Instant::now();
    for step in 0..17 {
        longest_gap = longest_gap.max(last_write.elapsed());
        last_write = Instant::now();
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        writeln!(file, "step {step}").unwrap();
        drop(file);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let pushed_while_writing = f.backend.pushes().len() - before;
    let deadline = Instant::now() + Duration::from_secs(30);
    while f.remote_files() != f.local_files() {
        assert!(Instant::now() < deadline, "train.log never pushed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    settle(&h).await;
    // (A machine so loaded that a 300 ms sleep took a whole quiet period
    // gives the engine a real quiet period: nothing to assert then.)
    if longest_gap < Duration::from_millis(900) {
        assert_eq!(
            pushed_while_writing, 0,
            "pushed while it was still being written every 300 ms"
        );
        assert_eq!(f.backend.pushes().len() - before, 1, "pushed once");
    } else {
        eprintln!("writes were {longest_gap:?} apart; quiet-period assertions skipped");
    }
    let r = h.shutdown(Duration::from_secs(5)).await;
    assert!(r.flushed, "{r:?}");
}

/// Copies every file of `from` into `to` (same relative paths).
fn copy_tree(from: &Path, to: &Path) {
    let mut files = Vec::new();
    walk(from, from, &mut files);
    for (rel, content) in files {
        let p = to.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_directory_pushes_no_deletes_until_it_is_repopulated() {
    let f = fx();
    for i in 0..300 {
        f.write(&format!("d{}/f{i}", i % 3), format!("{i}").as_bytes());
    }
    let h = f.start(100).await;
    settle(&h).await;
    h.shutdown(Duration::from_secs(5)).await;
    let saved = f.tmp.path().join("saved");
    copy_tree(&f.root, &saved);

    // The volume "failed to mount": the same directory, empty, beside the
    // existing index. One new file is written meanwhile.
    fs::remove_dir_all(&f.root).unwrap();
    fs::create_dir(&f.root).unwrap();
    f.write("new.txt", b"still saved");
    let pushes_before = f.backend.pushes().len();
    let h = f.start(100).await;
    let s = wait_for(&h, "deletes held back", |s| {
        s.scanned && s.withheld_deletes > 0 && s.pending_paths == s.withheld_deletes
    })
    .await;
    // 300 files and their 3 directories.
    assert_eq!(s.withheld_deletes, 303, "{s:#?}");
    let err = h.flush().await.unwrap_err();
    assert!(
        matches!(
            err,
            FlushError::MassDelete {
                deletes: 303,
                files_deleted: 300,
                files: 301
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("mass-delete guard"), "{err}");
    // Everything else was pushed; no delete reached the remote.
    let pushes = f.backend.pushes();
    assert!(pushes[pushes_before..].iter().all(|p| p.deletes.is_empty()));
    let remote = f.remote_files();
    assert_eq!(
        remote.len(),
        301,
        "the remote keeps all 300 and the new file"
    );
    assert!(remote.contains(&("new.txt".into(), b"still saved".to_vec())));

    // Repopulated (the volume mounts after all): nothing is deleted, the
    // guard lets go.
    copy_tree(&saved, &f.root);
    let s = wait_for(&h, "guard released", |s| {
        s.withheld_deletes == 0 && s.pending_paths == 0
    })
    .await;
    assert_eq!(s.withheld_deletes, 0);
    h.flush().await.unwrap();
    let pushes = f.backend.pushes();
    assert!(pushes[pushes_before..].iter().all(|p| p.deletes.is_empty()));
    assert_eq!(f.remote_files(), f.local_files());
    let report = h.shutdown(Duration::from_secs(5)).await;
    assert!(report.flushed, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_deletes_are_pushed_without_the_guard_and_small_ones_always() {
    let f = fx();
    for i in 0..200 {
        f.write(&format!("f{i:03}"), format!("{i}").as_bytes());
    }
    let h = f.start(100).await;
    settle(&h).await;
    // 90 deletes: below the 100-file floor, pushed at once.
    for i in 0..90 {
        fs::remove_file(f.root.join(format!("f{i:03}"))).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while f.remote_files().len() != 110 {
        assert!(Instant::now() < deadline, "90 deletes never pushed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 110 − 5 = 105 deletes of 110 files: held back …
    for i in 90..195 {
        fs::remove_file(f.root.join(format!("f{i:03}"))).unwrap();
    }
    wait_for(&h, "deletes held back", |s| s.withheld_deletes == 105).await;
    assert!(matches!(
        h.flush().await,
        Err(FlushError::MassDelete { deletes: 105, .. })
    ));
    let report = h.shutdown(Duration::from_secs(5)).await;
    assert!(!report.flushed);
    assert_eq!(report.unsaved.len(), 105, "{report:?}");
    assert_eq!(f.remote_files().len(), 110);
    // … and pushed by an engine run without the guard (the user confirmed).
    let mut config = f.config(100);
    config.delete_guard = None;
    let h = Engine::start(config, Arc::new(f.backend.clone()))
        .await
        .unwrap();
    wait_for(&h, "deletes pushed", |s| s.scanned && s.pending_paths == 0).await;
    h.flush().await.unwrap();
    assert_eq!(f.remote_files(), f.local_files());
    assert_eq!(f.remote_files().len(), 5);
    h.shutdown(Duration::from_secs(5)).await;
}
