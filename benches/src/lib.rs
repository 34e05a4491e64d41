//! Helpers shared by the benchmarks in `benches/` and the measuring
//! binaries in `src/bin/`: tree generators, a backend that stores nothing,
//! and percentiles. Figures and the commands that produce them are in
//! BENCHMARKS.md.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sync_core::{
    Backend, BackendError, Capabilities, Change, Checkpoint, Meta, PushReceipt, RemoteHead,
    RestoreOptions, RestoreReport, Source,
};

/// Creates `files` small files under `root`, `per_dir` files per directory.
pub fn make_tree(root: &Path, files: usize, per_dir: usize) -> std::io::Result<()> {
    for i in 0..files {
        let dir = root.join(format!("d{:04}", i / per_dir.max(1)));
        if i % per_dir.max(1) == 0 {
            std::fs::create_dir_all(&dir)?;
        }
        std::fs::write(
            dir.join(format!("f{i:06}.txt")),
            format!("file number {i}\n"),
        )?;
    }
    Ok(())
}

/// The `q`-quantile (0.0..=1.0) of `samples` (sorted in place).
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    let idx = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[idx.min(samples.len() - 1)]
}

/// A backend that reads (and verifies) every pushed file and keeps nothing,
/// so benchmarks measure the engine, not storage.
#[derive(Debug, Default)]
pub struct NullBackend {
    pushes: std::sync::atomic::AtomicU64,
}

#[async_trait]
impl Backend for NullBackend {
    fn describe(&self) -> String {
        "null backend".into()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            empty_dirs: true,
            full_mode: true,
            mtime: true,
            history: false,
        }
    }

    async fn head(&self) -> Result<Option<RemoteHead>, BackendError> {
        let n = self.pushes.load(std::sync::atomic::Ordering::Relaxed);
        Ok((n > 0).then(|| RemoteHead {
            id: n.to_string(),
            time: None,
        }))
    }

    async fn push(
        &self,
        checkpoint: &Checkpoint,
        source: &Source,
    ) -> Result<PushReceipt, BackendError> {
        let mut receipt = PushReceipt::default();
        for (path, change) in checkpoint.iter() {
            if let Change::Upsert(Meta::File(f)) = change {
                let mut r = source.open(path, f).await?;
                while let Some(chunk) = r.next_chunk().await? {
                    receipt.bytes_uploaded += chunk.len() as u64;
                }
                receipt.files_uploaded += 1;
            }
        }
        let n = self
            .pushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        receipt.head = Some(n.to_string());
        Ok(receipt)
    }

    async fn restore(
        &self,
        _dest: &Path,
        _options: &RestoreOptions,
    ) -> Result<RestoreReport, BackendError> {
        Err(BackendError::Unsupported {
            backend: self.describe(),
            what: "restore",
        })
    }
}
