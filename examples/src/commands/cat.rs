//! `tether cat PATH --from URL [--at ID]`: one file of a remote state on
//! stdout.
//!
//! The file is restored on its own (a subpath restore, so it is verified
//! against its recorded size and hash before it gets its name) into a
//! private temporary directory, then copied to stdout and removed: what
//! reaches stdout has been verified, and a large file is streamed from
//! disk, never held in memory. Needs free space in `$TMPDIR` for the file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sync_core::{Backend, BackendError, ExistingPolicy, RelPath, RestoreOptions};

use super::context;
use crate::cli::CatArgs;
use crate::error::CliError;

/// A private temporary directory (removed when dropped).
pub fn private_temp_dir() -> Result<tempfile::TempDir, CliError> {
    tempfile::Builder::new()
        .prefix("tether-")
        .tempdir()
        .map_err(|e| CliError::runtime(format!("creating a temporary directory: {e}")))
}

/// Restores the one file `path` of `at` (newest: `None`) under `tmp` and
/// returns where it is, verified. A folder or symlink is a usage error, a
/// missing path a runtime error naming it.
pub async fn fetch_file(
    backend: &dyn Backend,
    at: Option<&str>,
    path: &RelPath,
    tmp: &Path,
) -> Result<PathBuf, CliError> {
    let remote = backend.describe();
    // One fresh directory per file: several files of one state may be
    // fetched into the same `tmp` (a diff of two notebooks).
    static FETCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = FETCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dest = tmp.join(format!("fetch-{n}"));
    let options = RestoreOptions {
        at: at.map(str::to_owned),
        existing: ExistingPolicy::Fail,
        paths: vec![path.clone()],
        ..Default::default()
    };
    backend
        .restore(&dest, &options)
        .await
        .map_err(|e| match e {
            BackendError::NotFound { what } if what.starts_with("path ") => CliError::runtime(
                format!("{remote} has no {what}: `tether ls --from URL` lists what it holds"),
            ),
            BackendError::NotFound { what } => CliError::usage(format!(
                "{remote} has no {what}: `tether history --from URL` lists the ids it keeps"
            )),
            e => context(e, format!("reading {path} from {remote}")),
        })?;
    let file = path.to_path(&dest);
    let meta =
        std::fs::symlink_metadata(&file).map_err(|e| CliError::runtime(format!("{path}: {e}")))?;
    if meta.is_dir() {
        return Err(CliError::usage(format!(
            "{path} is a directory: use `tether ls --from URL {path}` or `tether restore DIR --from URL --path {path}`"
        )));
    }
    if meta.file_type().is_symlink() {
        let target =
            std::fs::read_link(&file).map_err(|e| CliError::runtime(format!("{path}: {e}")))?;
        return Err(CliError::usage(format!(
            "{path} is a symbolic link to {}",
            target.display()
        )));
    }
    Ok(file)
}

/// Runs `tether cat`.
pub async fn run(args: CatArgs) -> Result<ExitCode, CliError> {
    let backend = super::open_remote(&args.from, &args.remote)?;
    let tmp = private_temp_dir()?;
    let file = fetch_file(backend.as_ref(), args.at.as_deref(), &args.path, tmp.path()).await?;
    let path = args.path.clone();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&file)?;
        let mut out = std::io::stdout().lock();
        std::io::copy(&mut f, &mut out)?;
        std::io::Write::flush(&mut out)
    })
    .await
    .map_err(|e| CliError::runtime(format!("writing {path}: {e}")))?
    .map_err(|e| CliError::runtime(format!("writing {path} to stdout: {e}")))?;
    drop(tmp);
    Ok(ExitCode::SUCCESS)
}
