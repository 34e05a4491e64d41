//! `tether cat PATH --from URL [--at ID]`: one file of a remote state on
//! stdout.
//!
//! The file is restored on its own (a subpath restore, so it is verified
//! against its recorded size and hash before it gets its name) into a
//! private temporary directory, then copied to stdout and removed: what
//! reaches stdout has been verified, and a large file is streamed from
//! disk, never held in memory. Needs free space in `$TMPDIR` for the file.

use std::process::ExitCode;

use sync_core::{BackendError, ExistingPolicy, RestoreOptions};

use super::context;
use crate::cli::CatArgs;
use crate::error::CliError;
use crate::paths::{self, BaseDirs};

/// Runs `tether cat`.
pub async fn run(args: CatArgs) -> Result<ExitCode, CliError> {
    let url = args.from.trim();
    if url.is_empty() {
        return Err(CliError::usage("--from URL is empty"));
    }
    let state_dir = match &args.remote.state_dir {
        Some(s) => super::absolute(s)?,
        None => paths::remote_state_dir(&BaseDirs::from_env(), url)?,
    };
    sync_core::state::claim(&state_dir, None, url)?;
    let backend = crate::remote::open_backend(url, &args.remote.options(None), &state_dir)?;
    let remote = backend.describe();
    let tmp = tempfile::Builder::new()
        .prefix("tether-cat-")
        .tempdir()
        .map_err(|e| CliError::runtime(format!("creating a temporary directory: {e}")))?;
    let dest = tmp.path().join("state");
    let options = RestoreOptions {
        at: args.at.clone(),
        existing: ExistingPolicy::Fail,
        paths: vec![args.path.clone()],
        ..Default::default()
    };
    backend
        .restore(&dest, &options)
        .await
        .map_err(|e| match e {
            BackendError::NotFound { what } if what.starts_with("path ") => CliError::runtime(
                format!("{remote} has no {what}: `tether restore DIR --from URL` writes the whole state to look at"),
            ),
            BackendError::NotFound { what } => CliError::usage(format!(
                "{remote} has no {what}: `tether history --from URL` lists the ids it keeps"
            )),
            e => context(e, format!("reading {} from {remote}", args.path)),
        })?;
    let file = args.path.to_path(&dest);
    let meta = std::fs::symlink_metadata(&file)
        .map_err(|e| CliError::runtime(format!("{}: {e}", args.path)))?;
    if meta.is_dir() {
        return Err(CliError::usage(format!(
            "{} is a directory: use `tether restore DIR --from URL --path {}`",
            args.path, args.path
        )));
    }
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&file)
            .map_err(|e| CliError::runtime(format!("{}: {e}", args.path)))?;
        return Err(CliError::usage(format!(
            "{} is a symbolic link to {}",
            args.path,
            target.display()
        )));
    }
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
