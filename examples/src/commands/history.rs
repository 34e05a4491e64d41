//! `tether history --from URL`: the checkpoints a remote keeps.

use std::process::ExitCode;
use std::time::SystemTime;

use super::{context, human_bytes};
use crate::cli::HistoryArgs;
use crate::error::CliError;
use crate::paths::{self, BaseDirs};

/// A table of history entries: id, time (UTC), files, bytes.
pub fn table(entries: &[sync_core::HistoryEntry]) -> String {
    // Snapshot ids are 24 characters wide, git commit ids 40.
    let w = entries.iter().map(|e| e.id.len()).fold(24, usize::max);
    let mut out = format!(
        "{:<w$} {:<20} {:>8} {:>12}\n",
        "ID", "TIME (UTC)", "FILES", "BYTES"
    );
    for e in entries {
        let time = e.time.map_or_else(|| "-".into(), utc);
        out.push_str(&format!(
            "{:<w$} {:<20} {:>8} {:>12}\n",
            e.id,
            time,
            e.files,
            human_bytes(e.bytes)
        ));
    }
    out
}

/// `t` as RFC 3339 in UTC. The time comes from the remote, so it may be
/// anything: humantime panics outside 1970 ..= 9999 (its `Display` fails),
/// so such a time is shown as seconds relative to the epoch instead.
pub fn utc(t: SystemTime) -> String {
    const YEAR_10000: u64 = 253_402_300_800;
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) if d.as_secs() < YEAR_10000 => humantime::format_rfc3339_seconds(t).to_string(),
        Ok(d) => format!("@{}s (invalid)", d.as_secs()),
        Err(e) => format!("@-{}s (invalid)", e.duration().as_secs()),
    }
}

/// Runs `tether history`.
pub async fn run(args: HistoryArgs) -> Result<ExitCode, CliError> {
    let url = match (args.from.as_deref().map(str::trim), &args.dir) {
        (Some(u), _) if !u.is_empty() => u.to_owned(),
        (_, Some(dir)) => {
            let canonical = std::fs::canonicalize(dir).map_err(|e| {
                CliError::usage(format!("cannot resolve directory {}: {e}", dir.display()))
            })?;
            paths::default_store_url(&BaseDirs::from_env(), &canonical)?
        }
        _ => {
            return Err(CliError::usage(
                "give the remote (--from URL) or the synced directory whose local store to list (DIR)",
            ));
        }
    };
    let backend = super::open_remote(&url, &args.remote)?;
    let entries = backend
        .history(args.limit)
        .await
        .map_err(|e| context(e, format!("listing the history of {}", backend.describe())))?;
    if entries.is_empty() {
        println!("{} has no checkpoints yet", backend.describe());
    } else {
        print!("{}", table(&entries));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn table_has_one_row_per_entry() {
        let t = table(&[sync_core::HistoryEntry {
            id: "00000000000000000002".into(),
            time: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
            files: 3,
            bytes: 2048,
        }]);
        assert_eq!(t.lines().count(), 2);
        assert!(t.contains("2027-01-15T08:00:00Z"), "{t}");
        assert!(t.contains("2.0 KiB"), "{t}");
    }

    #[test]
    fn any_remote_time_is_printed_without_panicking() {
        let far = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::MAX);
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(5);
        let last = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799);
        let entries: Vec<_> = [far, before, last]
            .into_iter()
            .map(|t| sync_core::HistoryEntry {
                id: "x".into(),
                time: Some(t),
                files: u64::MAX,
                bytes: u64::MAX,
            })
            .collect();
        let t = table(&entries);
        assert!(t.contains("@18446744073709551s (invalid)"), "{t}");
        assert!(t.contains("@-5s (invalid)"), "{t}");
        assert!(t.contains("9999-12-31T23:59:59Z"), "{t}");
    }
}
