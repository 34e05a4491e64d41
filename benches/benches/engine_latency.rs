//! Edit-to-checkpoint latency of the engine with a 50 ms quiet period:
//! the time from a `write` returning to the checkpoint being handed to the
//! backend, over 300 separate edits. Prints p50 and p99 (criterion reports
//! means and medians only, so this harness measures percentiles itself).
//!
//! `cargo bench -p benches --bench engine_latency`

// Tests and benchmarks fail loudly: unwrap/expect are the point here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sync_core::{
    Backend, BackendError, Capabilities, Checkpoint, Engine, EngineConfig, Policy, PushReceipt,
    RemoteHead, RestoreOptions, RestoreReport, Source,
};

#[derive(Debug)]
struct Signalling {
    inner: benches::NullBackend,
    tx: std::sync::Mutex<mpsc::Sender<Instant>>,
}

#[async_trait]
impl Backend for Signalling {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn head(&self) -> Result<Option<RemoteHead>, BackendError> {
        self.inner.head().await
    }
    async fn push(&self, c: &Checkpoint, s: &Source) -> Result<PushReceipt, BackendError> {
        let at = Instant::now();
        if let Ok(tx) = self.tx.lock() {
            let _ = tx.send(at);
        }
        self.inner.push(c, s).await
    }
    async fn restore(
        &self,
        d: &std::path::Path,
        o: &RestoreOptions,
    ) -> Result<RestoreReport, BackendError> {
        self.inner.restore(d, o).await
    }
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent; keep
    // that quick.
    let edits = if std::env::args().any(|a| a == "--bench") {
        300
    } else {
        5
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("root");
    benches::make_tree(&root, 1_000, 100).expect("tree");
    let (tx, rx) = mpsc::channel();
    let backend = Arc::new(Signalling {
        inner: benches::NullBackend::default(),
        tx: std::sync::Mutex::new(tx),
    });
    let mut cfg = EngineConfig::new(&root, tmp.path().join("state"));
    let quiet = Duration::from_millis(50);
    cfg.policy = Policy {
        quiet,
        ..Policy::default()
    };
    let handle = rt.block_on(Engine::start(cfg, backend)).expect("engine");
    // The start-up push of the 1,000 files.
    rx.recv_timeout(Duration::from_secs(60))
        .expect("start-up push");
    while handle.status().pending_paths > 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    while rx.try_recv().is_ok() {}

    let mut samples = Vec::with_capacity(edits);
    for i in 0..edits {
        let file = root.join(format!("d{:04}/f{:06}.txt", (i % 1000) / 100, i % 1000));
        let t0 = Instant::now();
        std::fs::write(&file, format!("edit {i}")).expect("write");
        let pushed = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("checkpoint");
        samples.push(pushed.saturating_duration_since(t0));
        std::thread::sleep(Duration::from_millis(100));
    }
    let p50 = benches::quantile(&mut samples, 0.50);
    let p99 = benches::quantile(&mut samples, 0.99);
    let max = samples.last().copied().unwrap_or_default();
    println!(
        "edit-to-checkpoint, quiet {} ms, {} edits: p50 {:.1} ms (quiet + {:.1}), p99 {:.1} ms (quiet + {:.1}), max {:.1} ms",
        quiet.as_millis(),
        edits,
        p50.as_secs_f64() * 1e3,
        (p50.saturating_sub(quiet)).as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        (p99.saturating_sub(quiet)).as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    drop(handle);
}
