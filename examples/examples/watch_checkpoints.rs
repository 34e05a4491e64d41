//! Watches a directory and prints each checkpoint as the engine pushes it,
//! to an in-memory store: the debounce policy at work, with nothing to set
//! up. Edit files in the directory in another terminal; stop with Ctrl-C
//! (pending changes are flushed first).
//!
//! Run: `cargo run -p examples --example watch_checkpoints -- ./my-work`

use std::sync::Arc;
use std::time::Duration;

use sync_core::{Engine, EngineConfig, Policy};
use sync_s3::{BackendOptions, ObjectStoreBackend};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: watch_checkpoints DIR")?;
    let backend = Arc::new(ObjectStoreBackend::from_url(
        "memory://watch-demo",
        BackendOptions::default(),
    )?);
    let state = tempfile::tempdir()?;
    let mut config = EngineConfig::new(&dir, state.path());
    // Push 500 ms after the last change, at most 5 s after the first one.
    config.policy = Policy {
        quiet: Duration::from_millis(500),
        max_latency: Duration::from_secs(5),
        ..Policy::default()
    };
    let engine = Engine::start(config, backend).await?;
    println!("watching {dir}; edit files there, Ctrl-C to stop");
    let mut seen = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                let s = engine.status();
                if s.checkpoints_pushed > seen {
                    seen = s.checkpoints_pushed;
                    println!(
                        "checkpoint {seen}: {} files / {} bytes pushed so far, head {}, took {:?}",
                        s.files_pushed,
                        s.bytes_pushed,
                        s.remote_head.as_deref().unwrap_or("-"),
                        s.last_push_duration.unwrap_or_default()
                    );
                }
                if let Some(e) = &s.last_error {
                    println!("push failing: {e}");
                }
            }
        }
    }
    let report = engine.shutdown(Duration::from_secs(10)).await;
    println!("stopped; everything saved: {}", report.flushed);
    Ok(())
}
