//! `tether diff --from URL [OLD [NEW]] [--path P] [--stat]`: what changed
//! between two checkpoints.
//!
//! Both states are listed ([`Backend::list`]);
//! paths are added, deleted or modified (content, kind or mode). Without
//! `--stat`, a modified notebook is shown cell by cell (the `notebook`
//! crate: cells added, removed, moved and changed, outputs summarised,
//! execution counts ignored), and so is any modified file that `--path`
//! names exactly (as a line diff when it is not a notebook); both versions
//! are fetched verified, as `tether cat` does. Default: the newest
//! checkpoint against the one before it; with one id, that checkpoint
//! against the newest.

use std::collections::BTreeMap;
use std::process::ExitCode;

use sync_core::restore::PlanKind;
use sync_core::{Backend, Listed, RelPath};

use super::{context, human_bytes};
use crate::cli::DiffArgs;
use crate::error::CliError;

/// Files larger than this are not diffed by content.
const MAX_SHOWN: u64 = 8 << 20;

/// One changed path.
#[derive(Debug, PartialEq, Eq)]
pub enum Changed<'a> {
    /// Only in the newer state.
    Added(&'a Listed),
    /// Only in the older state.
    Deleted(&'a Listed),
    /// In both, different.
    Modified(&'a Listed, &'a Listed),
}

/// The paths that differ between `old` and `new` (at or under `only`), in
/// path order.
pub fn compare<'a>(
    old: &'a [Listed],
    new: &'a [Listed],
    only: Option<&RelPath>,
) -> Vec<Changed<'a>> {
    let keep = |e: &&Listed| only.is_none_or(|p| e.path.starts_with(p));
    let a: BTreeMap<&str, &Listed> = old
        .iter()
        .filter(keep)
        .map(|e| (e.path.as_str(), e))
        .collect();
    let b: BTreeMap<&str, &Listed> = new
        .iter()
        .filter(keep)
        .map(|e| (e.path.as_str(), e))
        .collect();
    let mut out = Vec::new();
    let mut paths: Vec<&str> = a.keys().chain(b.keys()).copied().collect();
    paths.sort_unstable();
    paths.dedup();
    for p in paths {
        match (a.get(p), b.get(p)) {
            (None, Some(n)) => out.push(Changed::Added(n)),
            (Some(o), None) => out.push(Changed::Deleted(o)),
            (Some(o), Some(n)) => {
                if o.kind != n.kind
                    || o.content != n.content
                    || o.mode != n.mode
                    || o.target != n.target
                {
                    out.push(Changed::Modified(o, n));
                }
            }
            (None, None) => {}
        }
    }
    out
}

fn size(e: &Listed) -> String {
    match (e.kind, e.size) {
        (PlanKind::Dir, _) => "folder".into(),
        (PlanKind::Symlink, _) => format!("-> {}", e.target.as_deref().unwrap_or("")),
        (PlanKind::File, Some(n)) => human_bytes(n),
        (PlanKind::File, None) => "?".into(),
    }
}

fn line(c: &Changed<'_>) -> String {
    match c {
        Changed::Added(n) => format!("A  {}  ({})", n.path, size(n)),
        Changed::Deleted(o) => format!("D  {}  ({})", o.path, size(o)),
        Changed::Modified(o, n) => {
            let mut what = if o.kind != n.kind || o.content != n.content || o.target != n.target {
                format!("{} → {}", size(o), size(n))
            } else {
                String::new()
            };
            if o.mode != n.mode {
                if !what.is_empty() {
                    what.push_str(", ");
                }
                let m = |m: Option<u32>| m.map_or_else(|| "?".into(), |m| format!("{m:o}"));
                what.push_str(&format!("mode {} → {}", m(o.mode), m(n.mode)));
            }
            format!("M  {}  ({what})", n.path)
        }
    }
}

/// The two checkpoint ids to compare.
async fn ids(backend: &dyn Backend, args: &DiffArgs) -> Result<Option<(String, String)>, CliError> {
    if let (Some(a), Some(b)) = (&args.old, &args.new) {
        return Ok(Some((a.clone(), b.clone())));
    }
    let remote = backend.describe();
    let history = backend
        .history(2)
        .await
        .map_err(|e| context(e, format!("listing the history of {remote}")))?;
    Ok(match (&args.old, history.as_slice()) {
        (Some(a), [newest, ..]) => Some((a.clone(), newest.id.clone())),
        (None, [newest, before, ..]) => Some((before.id.clone(), newest.id.clone())),
        _ => None,
    })
}

/// Runs `tether diff`.
pub async fn run(args: DiffArgs) -> Result<ExitCode, CliError> {
    let backend = super::open_remote(&args.from, &args.remote)?;
    let remote = backend.describe();
    let Some((old_id, new_id)) = ids(backend.as_ref(), &args).await? else {
        println!("{remote} has fewer than two checkpoints: nothing to compare");
        return Ok(ExitCode::SUCCESS);
    };
    let list = |id: String| {
        let backend = &backend;
        let remote = &remote;
        async move {
            backend.list(Some(&id)).await.map_err(|e| match e {
                sync_core::BackendError::NotFound { what } => CliError::usage(format!(
                    "{remote} has no {what}: `tether history --from URL` lists the ids it keeps"
                )),
                e => context(e, format!("listing {id} of {remote}")),
            })
        }
    };
    let old = list(old_id.clone()).await?;
    let new = list(new_id.clone()).await?;
    let changes = compare(&old.entries, &new.entries, args.path.as_ref());
    let mut out = format!("{old_id} → {new_id}\n");
    let tmp = super::cat::private_temp_dir()?;
    for c in &changes {
        out.push_str(&line(c));
        out.push('\n');
        let Changed::Modified(o, n) = c else {
            continue;
        };
        let notebook = n.path.as_str().ends_with(".ipynb");
        let named = args.path.as_ref() == Some(&n.path);
        if args.stat || !(notebook || named) || o.kind != PlanKind::File || n.kind != PlanKind::File
        {
            continue;
        }
        if o.size.unwrap_or(0).max(n.size.unwrap_or(0)) > MAX_SHOWN {
            out.push_str("   (too large to show here: compare with `tether cat`)\n");
            continue;
        }
        let a =
            super::cat::fetch_file(backend.as_ref(), Some(&old_id), &o.path, tmp.path()).await?;
        let b =
            super::cat::fetch_file(backend.as_ref(), Some(&new_id), &n.path, tmp.path()).await?;
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| CliError::runtime(format!("{}: {e}", p.display())))
        };
        let options = notebook::DiffOptions {
            metadata: args.notebook_metadata,
        };
        for l in notebook::diff_or_text(&read(&a)?, &read(&b)?, options).lines() {
            out.push_str("   ");
            out.push_str(l);
            out.push('\n');
        }
    }
    let count = |f: fn(&Changed<'_>) -> bool| changes.iter().filter(|c| f(c)).count();
    out.push_str(&format!(
        "{} added, {} modified, {} deleted\n",
        count(|c| matches!(c, Changed::Added(_))),
        count(|c| matches!(c, Changed::Modified(..))),
        count(|c| matches!(c, Changed::Deleted(_))),
    ));
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}
