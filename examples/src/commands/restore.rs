//! `tether restore DIR --from URL [--at ID]`: for init containers. Exits 0
//! only when DIR holds the complete state, and seeds the index in the state
//! directory so the sidecar that follows pushes nothing.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use sync_core::{Backend, BackendError, RestoreOptions, Restored, SeedError, StateDir};

use super::{context, human_bytes, open_workspace};
use crate::cli::RestoreArgs;
use crate::error::CliError;

/// Restores `backend`'s state into the directory `state` belongs to and
/// seeds its index ([`sync_core::restore_and_seed`]), drawing a progress
/// bar meanwhile.
pub async fn restore_into(
    backend: &Arc<dyn Backend>,
    state: &StateDir,
    options: &RestoreOptions,
) -> Result<Restored, CliError> {
    let remote = backend.describe();
    let dir = state.dir();
    let progress = Arc::new(sync_core::RestoreProgress::default());
    let options = RestoreOptions {
        progress: Some(Arc::clone(&progress)),
        ..options.clone()
    };
    let bar = crate::progress::restore_bar(format!("restoring {remote}"));
    let restore = sync_core::restore_and_seed(backend.as_ref(), state, &options);
    tokio::pin!(restore);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    let result = loop {
        tokio::select! {
            r = &mut restore => break r,
            _ = tick.tick() => crate::progress::update_restore_bar(&bar, &progress),
        }
    };
    bar.finish_and_clear();
    result.map_err(|e| match e {
        SeedError::Backend(BackendError::Restore(
            sync_core::restore::RestoreError::DestinationNotEmpty(d),
        )) => CliError::usage(format!(
            "{} is not empty and --existing is fail: use --existing keep-newer (keep newer local files) or --existing overwrite",
            d.display()
        )),
        SeedError::Backend(BackendError::NotFound { what }) if what.starts_with("path ") => {
            CliError::runtime(format!(
                "{remote} has no {what}: restore the whole state into an empty directory to see what it holds"
            ))
        }
        SeedError::Backend(BackendError::NotFound { what }) if options.at.is_some() => {
            CliError::usage(format!(
                "{remote} has no {what}: `tether history --from URL` lists the ids it keeps"
            ))
        }
        SeedError::Backend(e) => context(e, format!("restoring {remote} into {}", dir.display())),
        e => CliError::runtime(e),
    })
}

/// One line describing a restore.
pub fn summary(restored: &Restored, remote: &str, dir: &Path) -> String {
    match restored {
        Restored::EmptyRemote => format!(
            "{remote} is empty (a fresh location: nothing has been pushed there yet); nothing to restore into {}",
            dir.display()
        ),
        Restored::Done(r) => {
            let mut line = format!(
                "restored {} ({}) from {remote}{} into {}",
                super::files(r.files_written),
                human_bytes(r.bytes_written),
                r.head
                    .as_deref()
                    .map(|h| format!(" at {h}"))
                    .unwrap_or_default(),
                dir.display()
            );
            if r.unchanged > 0 {
                line.push_str(&format!("; {} already up to date", r.unchanged));
            }
            if !r.kept_local.is_empty() {
                line.push_str(&format!(
                    "; kept {} newer local file(s) (the next sync pushes them)",
                    r.kept_local.len()
                ));
            }
            line
        }
    }
}

/// `tether restore --as-copy`: [`sync_core::restore_copies`] into DIR,
/// without its state directory (a running `tether sync` holds that), then
/// one line per copy.
async fn run_as_copy(args: RestoreArgs) -> Result<ExitCode, CliError> {
    let dir = crate::paths::prepare_dir(&args.dir)?;
    let url = match args.from.as_deref().map(str::trim) {
        Some(u) if !u.is_empty() => u.to_owned(),
        _ => crate::paths::default_store_url(&crate::paths::BaseDirs::from_env(), &dir)?,
    };
    let backend = super::open_remote(&url, &args.remote)?;
    let remote = backend.describe();
    let options = RestoreOptions {
        at: args.at.clone(),
        paths: args.paths.clone(),
        ..Default::default()
    };
    let report = sync_core::restore_copies(backend.as_ref(), &dir, &options)
        .await
        .map_err(|e| match e {
            BackendError::NotFound { what } if what.starts_with("path ") => CliError::runtime(
                format!("{remote} has no {what}: `tether ls --from URL` lists what it holds"),
            ),
            BackendError::NotFound { what } => CliError::usage(format!(
                "{remote} has no {what}: `tether history --from URL` lists the ids it keeps"
            )),
            e => context(
                e,
                format!("restoring copies from {remote} into {}", dir.display()),
            ),
        })?;
    let mut out = String::new();
    for c in &report.copies {
        out.push_str(&format!(
            "restored {} as {}\n",
            c.original,
            c.copy.to_path(&dir).display()
        ));
    }
    out.push_str(&format!(
        "{} ({}) from {remote}{}; nothing was replaced\n",
        super::files(report.copies.len() as u64),
        human_bytes(report.bytes_written),
        report
            .head
            .as_deref()
            .map(|h| format!(" at {h}"))
            .unwrap_or_default(),
    ));
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// Runs `tether restore`.
pub async fn run(args: RestoreArgs) -> Result<ExitCode, CliError> {
    if args.as_copy {
        return run_as_copy(args).await;
    }
    let ws = open_workspace(&args.dir, args.from.as_deref(), &args.remote, None)?;
    let options = RestoreOptions {
        at: args.at.clone(),
        existing: args.existing,
        paths: args.paths.clone(),
        ..Default::default()
    };
    let mut signals = super::StopSignals::new()?;
    let restored = tokio::select! {
        r = restore_into(&ws.backend, &ws.state, &options) => r?,
        sig = signals.recv() => {
            return Err(CliError::runtime(format!(
                "{sig} during restore: {} is incomplete", ws.dir.display()
            )));
        }
    };
    let line = summary(&restored, &ws.backend.describe(), &ws.dir);
    // The result goes to stdout once; the log has it at debug only.
    tracing::debug!(dir = %ws.dir.display(), remote = %ws.backend.describe(), "{line}");
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}
