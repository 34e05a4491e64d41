//! An unreachable remote: the real engine keeps retrying pushes, with the
//! git error in its status, and nothing is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sync_core::{Engine, EngineConfig, RetryConfig};
use sync_git::{GitBackend, GitOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_remote_is_retried_with_the_error_in_status() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("notebook.ipynb"), b"{}").unwrap();
    // Port 1 on loopback: nothing listens, connections are refused at once.
    let url = "git://127.0.0.1:1/nowhere.git";
    let backend =
        Arc::new(GitBackend::from_url(url, GitOptions::new(tmp.path().join("git"))).unwrap());
    let mut config = EngineConfig::new(&src, tmp.path().join("engine"));
    config.retry = RetryConfig {
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
    };
    let engine = Engine::start(config, backend).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let s = engine.status();
        if s.push_failures >= 3 || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.push_failures >= 3, "not retried: {status:?}");
    let err = status.last_error.clone().expect("no error in status");
    assert!(
        err.contains("127.0.0.1"),
        "error does not name the remote: {err}"
    );
    assert!(err.contains("fetch") || err.contains("push"), "{err}");
    assert!(status.failing_since.is_some());
    assert_eq!(status.checkpoints_pushed, 0);
    let report = engine.shutdown(Duration::from_millis(300)).await;
    assert!(!report.flushed);
    assert!(
        report
            .unsaved
            .iter()
            .any(|p| p.as_str() == "notebook.ipynb"),
        "{report:?}"
    );
}
