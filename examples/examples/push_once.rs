//! Pushes a directory to a store once, from library code, without the
//! `tether` command: `sync_s3::ObjectStoreBackend` + `sync_core::Engine`,
//! then `flush()` and `shutdown()`. This is what `tether sync DIR --once`
//! does.
//!
//! Run: `cargo run -p examples --example push_once -- ./my-work file:///tmp/tether-demo`
//! (any object-store URL works: `s3://bucket/prefix` with `AWS_*` set, …).

use std::sync::Arc;
use std::time::Duration;

use sync_core::{Engine, EngineConfig};
use sync_s3::{BackendOptions, ObjectStoreBackend};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(url)) = (args.next(), args.next()) else {
        return Err("usage: push_once DIR URL".into());
    };
    let backend = Arc::new(ObjectStoreBackend::from_url(
        &url,
        BackendOptions::default(),
    )?);
    // The index lives outside the directory; a temporary one means "push everything".
    let state = tempfile::tempdir()?;
    let engine = Engine::start(EngineConfig::new(&dir, state.path()), backend).await?;
    engine.flush().await?;
    let status = engine.status();
    let report = engine.shutdown(Duration::from_secs(10)).await;
    println!(
        "pushed {} files, {} bytes to {url}; head {}; everything saved: {}",
        status.files_pushed,
        status.bytes_pushed,
        status.remote_head.as_deref().unwrap_or("-"),
        report.flushed
    );
    Ok(())
}
