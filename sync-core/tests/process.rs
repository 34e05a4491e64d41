//! Tests that need the engine in a separate process: SIGKILL in the middle
//! of a burst, the inotify watch limit, and inotify queue overflow.
//!
//! This binary has no libtest harness: run with `TETHER_ENGINE_CHILD` set it
//! *is* the child (an engine pushing to a persistent recording backend,
//! writing its status to a file); otherwise it runs each scenario, spawning
//! itself as the child, and prints `N passed, N failed`.

// Tests and benchmarks fail loudly: unwrap/expect are the point here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sync_core::testkit::MemoryBackend;
use sync_core::{Engine, EngineConfig, Meta, Policy, RetryConfig};

/// One scenario: `Err` carries what went wrong.
type Scenario = fn() -> Result<(), String>;

fn main() -> ExitCode {
    if std::env::var_os("TETHER_ENGINE_CHILD").is_some() {
        return child_main();
    }
    let scenarios: [(&str, Scenario); 3] = [
        (
            "sigkill_mid_burst_loses_nothing_and_repeats_nothing",
            sigkill_mid_burst,
        ),
        ("watch_limit_falls_back_to_polling", watch_limit_fallback),
        ("queue_overflow_is_reconciled_by_a_rescan", queue_overflow),
    ];
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed) = (0, 0);
    for (name, f) in scenarios {
        if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        let t = Instant::now();
        match f() {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.1}s)", t.elapsed().as_secs_f64());
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED\n  {e}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------- child side

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(name).unwrap_or_else(|| panic!("{name} unset")))
}

fn env_ms(name: &str, default: u64) -> Duration {
    Duration::from_millis(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

fn child_main() -> ExitCode {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut cfg = EngineConfig::new(
            env_path("TETHER_CHILD_ROOT"),
            env_path("TETHER_CHILD_STATE"),
        );
        cfg.policy = Policy {
            quiet: env_ms("TETHER_CHILD_QUIET_MS", 50),
            ..Policy::default()
        };
        cfg.poll_interval = env_ms("TETHER_CHILD_POLL_MS", 30_000);
        cfg.retry = RetryConfig {
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
        };
        let backend = MemoryBackend::persistent(&env_path("TETHER_CHILD_BACKEND")).unwrap();
        let status_file = env_path("TETHER_CHILD_STATUS");
        let h = Engine::start(cfg, Arc::new(backend)).await.unwrap();
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        loop {
            let s = h.status();
            let text = format!(
                "scanned={}\npending={}\npushed={}\nrescans={}\nmode={:?}\n",
                s.scanned, s.pending_paths, s.checkpoints_pushed, s.rescans, s.watch_mode
            );
            let tmp = status_file.with_extension("tmp");
            // The parent's directory gone means the parent gave up: stop.
            if fs::write(&tmp, text)
                .and_then(|()| fs::rename(&tmp, &status_file))
                .is_err()
            {
                break;
            }
            tokio::select! {
                _ = term.recv() => break,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        let r = h.shutdown(Duration::from_secs(10)).await;
        if r.flushed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        }
    })
}

// --------------------------------------------------------------- parent side

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    backend_dir: PathBuf,
    status: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        Fixture {
            root,
            state: tmp.path().join("state"),
            backend_dir: tmp.path().join("backend"),
            status: tmp.path().join("status"),
            _tmp: tmp,
        }
    }

    fn command(&self, wrapper: &[&str], poll_ms: u64) -> Command {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = if wrapper.is_empty() {
            Command::new(&exe)
        } else {
            let mut c = Command::new(wrapper[0]);
            c.args(&wrapper[1..]).arg(&exe);
            c
        };
        cmd.env("TETHER_ENGINE_CHILD", "1")
            .env("TETHER_CHILD_ROOT", &self.root)
            .env("TETHER_CHILD_STATE", &self.state)
            .env("TETHER_CHILD_BACKEND", &self.backend_dir)
            .env("TETHER_CHILD_STATUS", &self.status)
            .env("TETHER_CHILD_POLL_MS", poll_ms.to_string());
        cmd
    }

    fn spawn(&self, wrapper: &[&str], poll_ms: u64) -> Result<Child, String> {
        let _ = fs::remove_file(&self.status);
        self.command(wrapper, poll_ms)
            .spawn()
            .map_err(|e| format!("spawn child: {e}"))
    }

    fn status(&self) -> Option<std::collections::HashMap<String, String>> {
        let text = fs::read_to_string(&self.status).ok()?;
        Some(
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    fn wait_status(
        &self,
        child: &mut Child,
        what: &str,
        cond: impl Fn(&std::collections::HashMap<String, String>) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(s) = self.status()
                && cond(&s)
            {
                return Ok(());
            }
            if let Ok(Some(code)) = child.try_wait() {
                return Err(format!("child exited ({code}) while waiting for {what}"));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "timed out waiting for {what}; status {:?}",
                    self.status()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn settled(&self, child: &mut Child) -> Result<(), String> {
        // Nothing left to push: no checkpoint pushed for a while, and the
        // dirty set seen empty since the last one. In polling mode every
        // rescan marks all paths dirty for a moment, so "pending stayed 0
        // for N ms" never holds there; the push count is what settles.
        let mut last_pushed: Option<String> = None;
        let mut since = Instant::now();
        let mut empty_seen = false;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(s) = self.status().filter(|s| s["scanned"] == "true") {
                if last_pushed.as_ref() != Some(&s["pushed"]) {
                    last_pushed = Some(s["pushed"].clone());
                    since = Instant::now();
                    empty_seen = false;
                }
                empty_seen |= s["pending"] == "0";
                if empty_seen && since.elapsed() > Duration::from_millis(1000) {
                    return Ok(());
                }
            }
            if let Ok(Some(code)) = child.try_wait() {
                return Err(format!("child exited ({code}) before settling"));
            }
            if Instant::now() > deadline {
                return Err(format!("never settled; status {:?}", self.status()));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn terminate(&self, mut child: Child) -> Result<(), String> {
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .map_err(|e| e.to_string())?;
        let code = child.wait().map_err(|e| e.to_string())?;
        if !code.success() {
            return Err(format!("child did not flush on SIGTERM: {code}"));
        }
        Ok(())
    }

    fn backend(&self) -> MemoryBackend {
        MemoryBackend::persistent(&self.backend_dir).unwrap()
    }

    fn write(&self, rel: &str, content: &[u8]) {
        let p = self.root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    /// The backend's newest state equals the directory.
    fn check_equal(&self) -> Result<(), String> {
        let b = self.backend();
        let mut remote: Vec<(String, Vec<u8>)> = b
            .state()
            .into_iter()
            .filter_map(|(p, m)| match m {
                Meta::File(f) => Some((p, b.blob(&f.hash).map(|x| x.to_vec()).unwrap_or_default())),
                _ => None,
            })
            .collect();
        remote.sort();
        let mut local = Vec::new();
        collect(&self.root, &self.root, &mut local);
        local.sort();
        if remote != local {
            let differing: Vec<_> = remote
                .iter()
                .zip(&local)
                .filter(|(r, l)| r.0 == l.0 && r.1 != l.1)
                .map(|(r, l)| {
                    format!(
                        "{}: remote {:?} local {:?}",
                        r.0,
                        String::from_utf8_lossy(&r.1),
                        String::from_utf8_lossy(&l.1)
                    )
                })
                .take(5)
                .collect();
            if !differing.is_empty() {
                return Err(format!("content differs: {differing:?}"));
            }
            let r: Vec<_> = remote.iter().map(|x| &x.0).collect();
            let l: Vec<_> = local.iter().map(|x| &x.0).collect();
            return Err(format!(
                "backend differs from directory: {} remote vs {} local files\nremote-only {:?}\nlocal-only {:?}",
                remote.len(),
                local.len(),
                r.iter()
                    .filter(|x| !l.contains(x))
                    .take(10)
                    .collect::<Vec<_>>(),
                l.iter()
                    .filter(|x| !r.contains(x))
                    .take(10)
                    .collect::<Vec<_>>()
            ));
        }
        Ok(())
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            collect(root, &e.path(), out);
        } else if ft.is_file() {
            out.push((
                e.path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                fs::read(e.path()).unwrap(),
            ));
        }
    }
}

/// Kills the engine with SIGKILL in the middle of a burst, keeps editing
/// while it is down, restarts it: the backend ends equal to the directory,
/// and nothing confirmed before the kill is pushed again (except possibly
/// the one push the backend confirmed but the index had not yet recorded).
fn sigkill_mid_burst() -> Result<(), String> {
    let sc = Fixture::new();
    let mut child = sc.spawn(&[], 30_000)?;
    sc.wait_status(&mut child, "start-up scan", |s| s["scanned"] == "true")?;
    for round in 0..10 {
        for i in 0..300 {
            if round == 5 && i == 150 {
                // Mid-burst, once some checkpoints are confirmed.
                let deadline = Instant::now() + Duration::from_secs(60);
                while sc.backend().pushes().len() < 2 {
                    if Instant::now() > deadline {
                        return Err("no checkpoint confirmed before the kill".into());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                child.kill().map_err(|e| e.to_string())?;
                child.wait().map_err(|e| e.to_string())?;
            }
            sc.write(
                &format!("r{round}/f{i}.txt"),
                format!("round {round} file {i}").as_bytes(),
            );
        }
        std::thread::sleep(Duration::from_millis(120));
    }
    // More edits while nothing runs.
    sc.write("r0/f0.txt", b"edited while down");
    fs::remove_file(sc.root.join("r1/f1.txt")).map_err(|e| e.to_string())?;
    let before = sc.backend().pushes();
    if before.is_empty() {
        return Err("nothing was pushed before the kill".into());
    }

    let mut child = sc.spawn(&[], 30_000)?;
    sc.settled(&mut child)?;
    sc.terminate(child)?;
    sc.check_equal()?;

    let after = sc.backend().pushes();
    let confirmed: std::collections::HashSet<_> = before[..before.len() - 1]
        .iter()
        .flat_map(|p| p.upserts.iter().cloned())
        .collect();
    let repeated: Vec<_> = after[before.len()..]
        .iter()
        .flat_map(|p| p.upserts.iter())
        .filter(|u| confirmed.contains(u))
        .collect();
    if !repeated.is_empty() {
        return Err(format!(
            "{} confirmed upserts were pushed again, e.g. {:?}",
            repeated.len(),
            &repeated[..repeated.len().min(5)]
        ));
    }
    println!(
        "  {} pushes before the kill, {} after the restart",
        before.len(),
        after.len() - before.len()
    );
    Ok(())
}

fn require(what: &str, ok: bool) -> Result<bool, String> {
    if ok {
        return Ok(true);
    }
    if std::env::var("TETHER_TESTBED").as_deref() == Ok("1") {
        return Err(format!("{what} is required when TETHER_TESTBED=1"));
    }
    println!("  skipped: {what} is not available");
    Ok(false)
}

/// With the inotify watch limit set below the tree's directory count (in a
/// user namespace of its own, so nothing else on the machine is affected),
/// the engine says why and keeps syncing by periodic rescans.
fn watch_limit_fallback() -> Result<(), String> {
    let unshare_ok = Command::new("unshare")
        .args(["-Ur", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !require("unshare -Ur (user namespaces)", unshare_ok)? {
        return Ok(());
    }
    let sc = Fixture::new();
    for d in 0..20 {
        sc.write(&format!("d{d}/file.txt"), b"x");
    }
    let wrapper = [
        "unshare",
        "-Ur",
        "sh",
        "-c",
        "echo 5 > /proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\"",
    ];
    let mut child = sc.spawn(&wrapper, 300)?;
    sc.wait_status(&mut child, "polling mode", |s| {
        s["scanned"] == "true"
            && s["mode"].contains("Polling")
            && s["mode"].contains("max_user_watches")
    })?;
    sc.settled(&mut child)?;
    sc.write("d19/new.txt", b"found by a rescan");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sc.backend().state().contains_key("d19/new.txt") {
        if Instant::now() > deadline {
            return Err("a change in an unwatched directory was never pushed".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    sc.terminate(child)?;
    sc.check_equal()
}

/// Restores a sysctl when dropped.
struct SysctlGuard(&'static str, String);

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        let _ = fs::write(self.0, &self.1);
    }
}

/// With a tiny inotify queue a burst overflows it; the engine reconciles
/// with a full rescan and pushes everything.
fn queue_overflow() -> Result<(), String> {
    const KNOB: &str = "/proc/sys/fs/inotify/max_queued_events";
    let old = fs::read_to_string(KNOB).map_err(|e| e.to_string())?;
    let writable = fs::write(KNOB, old.trim()).is_ok();
    if !require("root (to lower fs.inotify.max_queued_events)", writable)? {
        return Ok(());
    }
    let sc = Fixture::new();
    let mut child;
    {
        // The limit applies to inotify instances created while it is low.
        let _guard = SysctlGuard(KNOB, old.trim().to_owned());
        fs::write(KNOB, "16").map_err(|e| e.to_string())?;
        child = sc.spawn(&[], 30_000)?;
        sc.wait_status(&mut child, "start-up scan", |s| s["scanned"] == "true")?;
    }
    for i in 0..2000 {
        sc.write(&format!("burst/{}/f{i}", i % 20), format!("{i}").as_bytes());
    }
    sc.settled(&mut child)?;
    let rescans: u64 = sc
        .status()
        .and_then(|s| s["rescans"].parse().ok())
        .unwrap_or(0);
    sc.terminate(child)?;
    sc.check_equal()?;
    if rescans < 2 {
        return Err(format!(
            "expected a rescan after the overflow, saw {rescans} rescans in total"
        ));
    }
    Ok(())
}
