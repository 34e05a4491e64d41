//! `tether prune --from URL [--dry-run] [--grace DURATION]`: deletes the
//! packs and tree nodes no snapshot references and the store dated before
//! the grace period (`ObjectStoreBackend::prune`, under the repository's
//! maintenance lease); prints what it freed.

use std::process::ExitCode;

use sync_core::Backend as _;

use crate::cli::PruneArgs;
use crate::error::CliError;
use crate::maintenance::{context, open, prune_options, prune_text};

/// Runs `tether prune`.
pub async fn run(args: PruneArgs) -> Result<ExitCode, CliError> {
    let options = prune_options(&args.prune_flags, args.dry_run);
    let backend = open(&args.remote.from, &args.remote.options())?;
    let remote = backend.describe();
    let report = backend
        .prune(&options)
        .await
        .map_err(|e| context(e, format!("prune on {remote}")))?;
    print!("{}", prune_text(&report, options.grace));
    Ok(ExitCode::SUCCESS)
}
