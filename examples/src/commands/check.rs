//! `tether check --from URL [--read-data | --read-data-subset N%]`:
//! verifies a repository (`ObjectStoreBackend::check`) and prints the
//! counts and every problem. Exit 0 only when no problem was found; 1 when
//! problems were found or the check could not finish (unreachable store);
//! 2 for usage errors (bad flags, a git or mirror-layout remote, a missing
//! or wrong key).

use std::process::ExitCode;

use sync_core::Backend as _;
use sync_s3::{CheckOptions, ReadData};

use crate::cli::CheckArgs;
use crate::error::CliError;
use crate::maintenance::{check_text, context, open};

/// Runs `tether check`.
pub async fn run(args: CheckArgs) -> Result<ExitCode, CliError> {
    let read_data = match (args.read_data, args.read_data_subset) {
        (true, _) => ReadData::All,
        (false, Some(p)) => ReadData::Subset(p),
        (false, None) => ReadData::None,
    };
    let backend = open(&args.remote.from, &args.remote.options())?;
    let remote = backend.describe();
    let report = backend
        .check(&CheckOptions::new(read_data))
        .await
        .map_err(|e| context(e, format!("check of {remote}")))?;
    print!("{}", check_text(&report));
    if report.is_ok() {
        Ok(ExitCode::SUCCESS)
    } else {
        let n = report.problems.len();
        Err(CliError::runtime(format!(
            "{remote}: {n} {} found (listed above)",
            if n == 1 { "problem" } else { "problems" }
        )))
    }
}
