//! `tether ls --from URL [--at ID] [PATH] [--long] [--recursive]`: the
//! files of a stored state, from [`Backend::list`](sync_core::Backend::list).

use std::process::ExitCode;

use sync_core::restore::PlanKind;
use sync_core::{Listed, Listing, RelPath};

use super::{context, human_bytes};
use crate::cli::LsArgs;
use crate::error::CliError;

/// `rwxr-x---` for `0o750`.
fn mode_text(kind: PlanKind, mode: Option<u32>) -> String {
    let lead = match kind {
        PlanKind::Dir => 'd',
        PlanKind::Symlink => 'l',
        PlanKind::File => '-',
    };
    let Some(mode) = mode else {
        return format!("{lead}?????????");
    };
    let mut s = String::from(lead);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// The entries `ls` shows: `path`'s children (or everything below it with
/// `recursive`), or `path` itself when it is not a folder; `None` when the
/// state does not hold `path`.
pub fn select<'a>(
    listing: &'a Listing,
    path: Option<&RelPath>,
    recursive: bool,
) -> Option<Vec<&'a Listed>> {
    if let Some(p) = path {
        let own = listing.entries.iter().find(|e| &e.path == p)?;
        if own.kind != PlanKind::Dir {
            return Some(vec![own]);
        }
    }
    let depth = |r: &RelPath| r.as_str().matches('/').count();
    let base = path.map_or(0, |p| depth(p) + 1);
    Some(
        listing
            .entries
            .iter()
            .filter(|e| match path {
                Some(p) => e.path.starts_with(p) && e.path != *p,
                None => true,
            })
            .filter(|e| recursive || depth(&e.path) == base)
            .collect(),
    )
}

fn line(e: &Listed, long: bool) -> String {
    let mut name = e.path.to_string();
    if e.kind == PlanKind::Dir {
        name.push('/');
    }
    if let Some(t) = &e.target {
        name.push_str(&format!(" -> {t}"));
    }
    if !long {
        return name;
    }
    let size = e.size.map_or_else(|| "-".into(), human_bytes);
    let time = e
        .mtime
        .map(|t| {
            humantime::format_rfc3339_seconds(t)
                .to_string()
                .replace('T', " ")
                .trim_end_matches('Z')
                .to_owned()
        })
        .unwrap_or_else(|| "-".repeat(19));
    format!("{} {size:>10} {time} {name}", mode_text(e.kind, e.mode))
}

/// Runs `tether ls`.
pub async fn run(args: LsArgs) -> Result<ExitCode, CliError> {
    let backend = super::open_remote(&args.from, &args.remote)?;
    let remote = backend.describe();
    let listing = backend
        .list(args.at.as_deref())
        .await
        .map_err(|e| match e {
            sync_core::BackendError::NotFound { what } => CliError::usage(format!(
                "{remote} has no {what}: `tether history --from URL` lists the ids it keeps"
            )),
            e => context(e, format!("listing {remote}")),
        })?;
    if listing.id.is_none() {
        println!("{remote} is empty (a fresh location: nothing has been pushed there yet)");
        return Ok(ExitCode::SUCCESS);
    }
    let shown = select(&listing, args.path.as_ref(), args.recursive).ok_or_else(|| {
        CliError::runtime(format!(
            "{remote} has no path {} in {}: `tether ls --from URL` lists the top",
            args.path
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            listing.id.as_deref().unwrap_or("its newest state")
        ))
    })?;
    let mut out = String::new();
    for e in shown {
        out.push_str(&line(e, args.long));
        out.push('\n');
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_like_ls() {
        assert_eq!(mode_text(PlanKind::Dir, Some(0o750)), "drwxr-x---");
        assert_eq!(mode_text(PlanKind::File, Some(0o644)), "-rw-r--r--");
        assert_eq!(mode_text(PlanKind::Symlink, None), "l?????????");
    }
}
