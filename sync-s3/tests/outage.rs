//! Outage: the real engine pushes 2,000 files to SeaweedFS; the server is
//! killed in the middle of the push and started again 20 s later. The
//! engine's status shows the error while the server is down, pushes resume
//! by themselves, and in the end the store restores to exactly the
//! directory. Both layouts, one after the other (they share the server).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Store, StoreFixture, unique};
use sync_core::testkit::conformance::tree;
use sync_core::testkit::testbed_var;
use sync_core::{Backend, Engine, EngineConfig, Policy, RestoreOptions, RetryConfig};
use sync_s3::{BackendOptions, Layout};

fn control(script: &str, testbed_dir: &str, action: &str) {
    let status = Command::new("bash")
        .arg(script)
        .arg(action)
        .env("TETHER_TESTBED_DIR", testbed_dir)
        .status()
        .expect("run the SeaweedFS control script");
    assert!(status.success(), "seaweedfs.sh {action} failed");
}

async fn outage(layout: Layout, store: Store, script: &str, testbed_dir: &str) {
    let mut f = StoreFixture::new(store, layout);
    f.options = BackendOptions {
        // Small packs and little parallelism: the push is many requests
        // long, so the server dies in the middle of it.
        pack_size: 64 << 10,
        concurrency: 4,
        request_retries: 1,
        request_retry_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ..BackendOptions::default()
    };
    let name = unique("outage");
    let backend = Arc::new(f.backend(&name));
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for i in 0..2000 {
        let dir = src.join(format!("d{:02}", i % 40));
        std::fs::create_dir_all(&dir).unwrap();
        let mut content = vec![(i % 251) as u8; 4096];
        content[..8].copy_from_slice(&(i as u64).to_le_bytes());
        std::fs::write(dir.join(format!("f{i:04}.bin")), content).unwrap();
    }
    let mut config = EngineConfig::new(&src, tmp.path().join("state"));
    config.policy = Policy {
        quiet: Duration::from_millis(50),
        max_latency: Duration::from_millis(200),
        max_batch_files: 100,
        ..Policy::default()
    };
    config.retry = RetryConfig {
        min_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(2),
    };
    let engine = Engine::start(config, backend.clone()).await.unwrap();

    // Kill the server once the first batch is confirmed: the rest of the
    // 2,000 files are still to come.
    let deadline = Instant::now() + Duration::from_secs(60);
    while engine.status().checkpoints_pushed == 0 {
        assert!(Instant::now() < deadline, "no batch was pushed within 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    control(script, testbed_dir, "kill");
    let killed_at = Instant::now();
    let pushed_before = engine.status().checkpoints_pushed;

    // While the server is down the error shows in the status.
    let mut seen_error = None;
    while killed_at.elapsed() < Duration::from_secs(20) {
        let s = engine.status();
        if let Some(e) = s.last_error {
            seen_error = Some((e, s.pending_paths, s.push_failures));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (error, pending, failures) = seen_error.expect("status never showed the outage");
    assert!(
        failures > 0 && pending > 0,
        "{error}: {pending} pending, {failures} failures"
    );
    eprintln!("{layout}: while down: {error} ({pending} paths pending)");
    control(script, testbed_dir, "start");

    // The engine retries by itself; flush waits for it.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match engine.flush().await {
            Ok(()) => break,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "still failing after restart: {e}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    let status = engine.status();
    assert!(status.last_error.is_none(), "{status:?}");
    assert!(status.checkpoints_pushed > pushed_before);
    let report = engine.shutdown(Duration::from_secs(30)).await;
    assert!(report.flushed && report.unsaved.is_empty(), "{report:?}");

    // A fresh backend (no caches) restores exactly the directory.
    let reader = f.backend(&name);
    let dest = tmp.path().join("restored");
    reader
        .restore(&dest, &RestoreOptions::default())
        .await
        .unwrap();
    let caps = reader.capabilities();
    let want = tree(&src, caps);
    let got = tree(&dest, caps);
    assert_eq!(want.len(), got.len(), "{layout}: entry count differs");
    assert!(
        want == got,
        "{layout}: restored tree differs from the directory"
    );
    assert_eq!(
        want.values()
            .filter(|n| matches!(n, sync_core::testkit::conformance::Node::File(..)))
            .count(),
        2000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_push_and_restarted_20s_later() {
    let Some(store) = Store::s3() else { return };
    let Some(script) = testbed_var("TETHER_TEST_S3_CONTROL") else {
        return;
    };
    let Some(testbed_dir) = testbed_var("TETHER_TEST_S3_TESTBED_DIR") else {
        return;
    };
    for layout in [Layout::Snapshots, Layout::Mirror] {
        outage(layout, store.clone(), &script, &testbed_dir).await;
    }
}
