//! Lists the checkpoints a store keeps and restores one of them into an
//! empty directory, with `Backend::history` and `Backend::restore`: what
//! `tether history` and `tether restore --at` do.
//!
//! Run: `cargo run -p examples --example restore_at -- file:///tmp/tether-demo ./restored [ID]`
//! (without ID, the oldest listed checkpoint is restored).

use sync_core::{Backend, RestoreOptions};
use sync_s3::{BackendOptions, ObjectStoreBackend};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(dest)) = (args.next(), args.next()) else {
        return Err("usage: restore_at URL DEST [ID]".into());
    };
    let backend = ObjectStoreBackend::from_url(&url, BackendOptions::default())?;
    let history = backend.history(10).await?;
    for entry in &history {
        println!("{}  {} files  {} bytes", entry.id, entry.files, entry.bytes);
    }
    let at = match args.next() {
        Some(id) => id,
        None => history
            .last()
            .ok_or("the store has no checkpoints")?
            .id
            .clone(),
    };
    let options = RestoreOptions {
        at: Some(at.clone()),
        ..RestoreOptions::default()
    };
    let report = backend.restore(dest.as_ref(), &options).await?;
    println!(
        "restored {} files from {at} into {dest}",
        report.files_written
    );
    Ok(())
}
