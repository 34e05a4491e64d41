//! `tether forget --from URL [--keep-* …] [--policy SPEC] [--dry-run]
//! [--prune]`: removes the snapshots the policy does not keep
//! (`ObjectStoreBackend::forget`), or with `--prune` forgets and prunes
//! under one lease (`ObjectStoreBackend::maintain`). Prints every snapshot
//! with keep or remove and why.

use std::process::ExitCode;

use sync_core::Backend as _;

use crate::cli::ForgetArgs;
use crate::error::CliError;
use crate::maintenance::{context, forget_policy, forget_text, open, prune_options, prune_text};

/// Runs `tether forget`.
pub async fn run(args: ForgetArgs) -> Result<ExitCode, CliError> {
    let policy = forget_policy(args.policy, &args.keep)?;
    if !args.prune && (args.prune_flags.grace.is_some() || args.prune_flags.lease_ttl.is_some()) {
        return Err(CliError::usage(
            "--grace applies to pruning: add --prune, or run `tether prune`",
        ));
    }
    let backend = open(&args.remote.from, &args.remote.options())?;
    let remote = backend.describe();
    tracing::debug!(%policy, remote = %remote, "forget");
    if args.prune {
        let options = prune_options(&args.prune_flags, args.dry_run);
        let report = backend
            .maintain(&policy, &options)
            .await
            .map_err(|e| context(e, format!("forget + prune on {remote}")))?;
        print!("{}", forget_text(&report.forget));
        print!("{}", prune_text(&report.prune, options.grace));
    } else {
        let report = backend
            .forget(&policy, args.dry_run)
            .await
            .map_err(|e| context(e, format!("forget on {remote}")))?;
        print!("{}", forget_text(&report));
        if !args.dry_run && report.removed() > 0 {
            println!(
                "the removed snapshots' data stays until `tether prune --from URL` (or forget --prune) deletes what nothing references"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
