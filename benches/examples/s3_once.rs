//! One push or one restore through sync-s3, timed: the tether side of
//! `benches/s3-vs-peers.sh` (which wraps it in `/usr/bin/time -v` next to
//! rclone and restic on the same SeaweedFS server).
//!
//! ```text
//! s3_once push    <url> <dir>     # checkpoint of the whole directory, one push
//! s3_once restore <url> <dest>    # newest state into an empty directory
//! ```
//!
//! Credentials and endpoint come from the URL and the standard `AWS_*`
//! environment, exactly as the `tether` command will read them.

use std::path::PathBuf;
use std::time::Instant;

use sync_core::rules::IgnoreRules;
use sync_core::{Backend, Checkpoint, DirtySet, Index, RestoreOptions, Source, detect};
use sync_s3::{BackendOptions, ObjectStoreBackend};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [op, url, dir] = args.as_slice() else {
        return Err("usage: s3_once push|restore <url> <dir>".into());
    };
    let backend = ObjectStoreBackend::from_url(url, BackendOptions::default())?;
    let dir = PathBuf::from(dir);
    let started = Instant::now();
    match op.as_str() {
        "push" => {
            let state = tempfile::tempdir()?;
            let index = Index::open(state.path())?;
            let dirty = DirtySet {
                paths: Default::default(),
                rescan: true,
            };
            let found = detect(
                &dir,
                &IgnoreRules::none(),
                &index,
                &Checkpoint::new(),
                &dirty,
                &mut |_| {},
            );
            let c = found.checkpoint;
            let receipt = backend.push(&c, &Source::new(&dir)).await?;
            eprintln!(
                "pushed {} files ({} bytes) in {:.3} s, head {:?}",
                receipt.files_uploaded,
                receipt.bytes_uploaded,
                started.elapsed().as_secs_f64(),
                receipt.head
            );
        }
        "restore" => {
            let report = backend.restore(&dir, &RestoreOptions::default()).await?;
            eprintln!(
                "restored {} files ({} bytes) in {:.3} s",
                report.files_written,
                report.bytes_written,
                started.elapsed().as_secs_f64()
            );
        }
        other => return Err(format!("unknown operation {other:?}").into()),
    }
    Ok(())
}
