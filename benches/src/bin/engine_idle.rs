//! Resident memory and idle wake-ups of the sync engine on a tree of N
//! files (default 10,000): creates the tree, runs the engine until the
//! start-up push is done, waits, then reads VmRSS/VmHWM and counts the
//! context switches of every engine thread over 10 s of idleness.
//!
//! `cargo run --release -p benches --bin engine_idle -- 100000`

// Tests and benchmarks fail loudly: unwrap/expect are the point here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

fn proc_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Context switches (voluntary + involuntary) per thread, except `skip`.
fn switches(skip: &str) -> std::collections::HashMap<String, u64> {
    let mut out = std::collections::HashMap::new();
    for t in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let tid = t.file_name().to_string_lossy().into_owned();
        if tid == skip {
            continue;
        }
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let total = status
            .lines()
            .filter_map(|l| {
                l.strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            })
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .sum();
        out.insert(tid, total);
    }
    out
}

fn main() {
    let files: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("root");
    benches::make_tree(&root, files, 100).expect("tree");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cfg = sync_core::EngineConfig::new(&root, tmp.path().join("state"));
    let handle = rt
        .block_on(sync_core::Engine::start(
            cfg,
            Arc::new(benches::NullBackend::default()),
        ))
        .expect("engine");
    loop {
        let s = handle.status();
        if s.scanned && s.pending_paths == 0 && s.checkpoints_pushed > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    let rss = proc_kb("VmRSS:");
    let hwm = proc_kb("VmHWM:");
    let me = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let before = switches(&me);
    std::thread::sleep(Duration::from_secs(10));
    let after = switches(&me);
    // Threads that exited meanwhile (idle blocking-pool threads) did
    // nothing more after the first sample.
    let wakeups: u64 = after
        .iter()
        .map(|(t, n)| n.saturating_sub(before.get(t).copied().unwrap_or(0)))
        .sum();
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0);
    println!(
        "files={files} idle_rss_mib={:.1} peak_rss_mib={:.1} wakeups_in_10s={} threads={threads} watch_mode={:?}",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        wakeups,
        handle.status().watch_mode
    );
}
