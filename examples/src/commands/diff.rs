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
//! against the newest. `--local DIR` compares one checkpoint (default the
//! newest) with the directory as `tether sync` reads it: local files are
//! matched by BLAKE3 where the remote's content ids are BLAKE3 (snapshots,
//! mirror), else by fetching the remote version of each same-size file
//! (git blob ids).
//!
//! [`report`] is the one implementation: the command prints
//! [`Report::text`], the history page ([`crate::ui`]) renders the same
//! [`Report`] as HTML.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use sync_core::restore::PlanKind;
use sync_core::{Backend, Listed, Listing, RelPath};

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

/// Where the newer side of a diff comes from.
#[derive(Debug, Clone, Copy)]
pub enum Newer<'a> {
    /// A checkpoint id.
    Checkpoint(&'a str),
    /// The local directory, as `tether sync` would read it (ignore rules
    /// of `.tetherignore` and the defaults applied).
    Local(&'a Path),
}

/// One changed path of a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The path.
    pub path: RelPath,
    /// `A`, `M` or `D`.
    pub status: char,
    /// `M  a.ipynb  (1.2 KiB → 1.3 KiB)`.
    pub line: String,
    /// The content diff, line by line (notebooks cell by cell), when shown.
    pub detail: Vec<String>,
}

/// What changed between two states: what `tether diff` prints and the
/// history page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The older checkpoint.
    pub old: String,
    /// The newer checkpoint, or the local directory.
    pub new: String,
    /// The changed paths, in path order.
    pub files: Vec<FileReport>,
}

impl Report {
    /// The text `tether diff` prints.
    pub fn text(&self) -> String {
        let mut out = format!("{} → {}\n", self.old, self.new);
        for f in &self.files {
            out.push_str(&f.line);
            out.push('\n');
            for l in &f.detail {
                out.push_str("   ");
                out.push_str(l);
                out.push('\n');
            }
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// `1 added, 2 modified, 0 deleted`.
    pub fn summary(&self) -> String {
        let count = |c: char| self.files.iter().filter(|f| f.status == c).count();
        format!(
            "{} added, {} modified, {} deleted",
            count('A'),
            count('M'),
            count('D')
        )
    }
}

/// Lists checkpoint `id`, a missing id being a usage error that says how
/// to list the ids.
pub async fn list_checkpoint(backend: &dyn Backend, id: &str) -> Result<Listing, CliError> {
    let remote = backend.describe();
    backend.list(Some(id)).await.map_err(|e| match e {
        sync_core::BackendError::NotFound { what } => CliError::usage(format!(
            "{remote} has no {what}: `tether history --from URL` lists the ids it keeps"
        )),
        e => context(e, format!("listing {id} of {remote}")),
    })
}

/// Compares checkpoint `old_id` with `new` (at or under `only`). Without
/// `stat`, modified notebooks (and a modified file `only` names exactly)
/// get a content diff, both versions fetched verified (`tether cat`);
/// `metadata` also reports notebooks' execution counts and metadata.
pub async fn report(
    backend: &dyn Backend,
    old_id: &str,
    new: Newer<'_>,
    only: Option<&RelPath>,
    stat: bool,
    metadata: bool,
) -> Result<Report, CliError> {
    let old = list_checkpoint(backend, old_id).await?;
    let tmp = super::cat::private_temp_dir()?;
    let (new_name, mut new_entries) = match new {
        Newer::Checkpoint(id) => (id.to_owned(), list_checkpoint(backend, id).await?.entries),
        Newer::Local(dir) => (
            dir.display().to_string(),
            local_entries(backend, old_id, &old.entries, dir, tmp.path()).await?,
        ),
    };
    let mut old_entries = old.entries;
    if let Newer::Local(_) = new
        && !backend.capabilities().empty_dirs
    {
        // Folders exist only through their files there.
        old_entries.retain(|e| e.kind != PlanKind::Dir);
        new_entries.retain(|e| e.kind != PlanKind::Dir);
    }
    let changes = compare(&old_entries, &new_entries, only);
    let mut files = Vec::with_capacity(changes.len());
    for c in &changes {
        let (status, path) = match c {
            Changed::Added(n) => ('A', &n.path),
            Changed::Deleted(o) => ('D', &o.path),
            Changed::Modified(_, n) => ('M', &n.path),
        };
        let mut f = FileReport {
            path: path.clone(),
            status,
            line: line(c),
            detail: Vec::new(),
        };
        if let Changed::Modified(o, n) = c {
            let notebook = n.path.as_str().ends_with(".ipynb");
            let named = only == Some(&n.path);
            if !stat && (notebook || named) && o.kind == PlanKind::File && n.kind == PlanKind::File
            {
                if o.size.unwrap_or(0).max(n.size.unwrap_or(0)) > MAX_SHOWN {
                    f.detail
                        .push("(too large to show here: compare with `tether cat`)".into());
                } else {
                    let a =
                        super::cat::fetch_file(backend, Some(old_id), &o.path, tmp.path()).await?;
                    let b = match new {
                        Newer::Checkpoint(id) => {
                            super::cat::fetch_file(backend, Some(id), &n.path, tmp.path()).await?
                        }
                        Newer::Local(dir) => n.path.to_path(dir),
                    };
                    let read = |p: &Path| {
                        std::fs::read(p)
                            .map_err(|e| CliError::runtime(format!("{}: {e}", p.display())))
                    };
                    let options = notebook::DiffOptions { metadata };
                    f.detail = notebook::diff_or_text(&read(&a)?, &read(&b)?, options)
                        .lines()
                        .map(str::to_owned)
                        .collect();
                }
            }
        }
        files.push(f);
    }
    Ok(Report {
        old: old_id.to_owned(),
        new: new_name,
        files,
    })
}

/// True when `content` is a BLAKE3 hash in hex (the snapshots layout's and
/// the mirror's content ids), which a local file's hash can be compared to.
fn is_blake3_hex(content: &str) -> bool {
    content.len() == 64 && content.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Reads up to `buf.len()` bytes, fewer only at the end.
fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// True when the files at `a` and `b` hold the same bytes (read in
/// blocks, never whole).
fn same_bytes(a: &Path, b: &Path) -> std::io::Result<bool> {
    let mut fa = std::fs::File::open(a)?;
    let mut fb = std::fs::File::open(b)?;
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// The BLAKE3 hash of the file at `p` in hex, read in blocks.
fn blake3_hex(p: &Path) -> std::io::Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(p)?)?;
    Ok(h.finalize().to_hex().to_string())
}

/// The entries of the local directory `dir` as `tether sync` reads it
/// (default ignore patterns and `.tetherignore`; `.git` skipped), with the
/// walk done off the async threads.
fn walk_local(dir: &Path) -> Result<Vec<Listed>, CliError> {
    let config = sync_core::IgnoreConfig {
        defaults: true,
        file: Some(".tetherignore".into()),
        patterns: Vec::new(),
    };
    let rules = sync_core::IgnoreRules::load(dir, &config).map_err(|e| {
        CliError::usage(format!(
            "reading the ignore rules of {}: {e}",
            dir.display()
        ))
    })?;
    let mut out = Vec::new();
    let mut stack: Vec<Option<RelPath>> = vec![None];
    while let Some(sub) = stack.pop() {
        let full_dir = sub
            .as_ref()
            .map_or_else(|| dir.to_path_buf(), |s| s.to_path(dir));
        let entries = std::fs::read_dir(&full_dir)
            .map_err(|e| CliError::runtime(format!("listing {}: {e}", full_dir.display())))?;
        for ent in entries {
            let ent =
                ent.map_err(|e| CliError::runtime(format!("listing {}: {e}", full_dir.display())))?;
            let Some(name) = ent.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(rel) = (match &sub {
                Some(s) => s.join(&name),
                None => RelPath::new(name),
            }) else {
                continue;
            };
            if rel.repository_component().is_some() {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(ent.path()) else {
                continue; // vanished
            };
            let ft = meta.file_type();
            if rules.is_ignored(&rel, ft.is_dir()) {
                continue;
            }
            use std::os::unix::fs::PermissionsExt;
            let mode = Some(meta.permissions().mode() & sync_core::PERMISSION_BITS);
            let (kind, size, target) = if ft.is_dir() {
                stack.push(Some(rel.clone()));
                (PlanKind::Dir, None, None)
            } else if ft.is_symlink() {
                let t = std::fs::read_link(ent.path())
                    .ok()
                    .map(|t| t.to_string_lossy().into_owned());
                (PlanKind::Symlink, None, t)
            } else if ft.is_file() {
                (PlanKind::File, Some(meta.len()), None)
            } else {
                continue;
            };
            out.push(Listed {
                path: rel,
                kind,
                size,
                mode: if kind == PlanKind::Symlink {
                    None
                } else {
                    mode
                },
                mtime: meta.modified().ok(),
                target,
                content: None,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The local directory's entries, with `content` set to the remote
/// entry's id exactly when the local file holds the same bytes: compared
/// by BLAKE3 where the remote's ids are BLAKE3 hashes, else (git blob ids,
/// ETags) by fetching the remote version of each same-size file. Where the
/// backend keeps only the executable bit, only that bit of the mode is
/// compared.
async fn local_entries(
    backend: &dyn Backend,
    old_id: &str,
    old: &[Listed],
    dir: &Path,
    tmp: &Path,
) -> Result<Vec<Listed>, CliError> {
    let root = dir.to_path_buf();
    let mut local = tokio::task::spawn_blocking(move || walk_local(&root))
        .await
        .map_err(|e| CliError::runtime(format!("reading {}: {e}", dir.display())))??;
    let remote: BTreeMap<&RelPath, &Listed> = old.iter().map(|e| (&e.path, e)).collect();
    let full_mode = backend.capabilities().full_mode;
    for l in &mut local {
        let Some(r) = remote.get(&l.path) else {
            continue;
        };
        if !full_mode && l.kind == r.kind {
            let exec = |m: Option<u32>| m.map(|m| m & 0o111 != 0);
            if l.kind != PlanKind::File || exec(l.mode) == exec(r.mode) {
                l.mode = r.mode;
            }
        }
        if l.kind != PlanKind::File || r.kind != PlanKind::File {
            continue;
        }
        let full = l.path.to_path(dir);
        let same = if l.size != r.size {
            false
        } else if let Some(id) = r.content.as_deref().filter(|c| is_blake3_hex(c)) {
            let f = full.clone();
            let hex = tokio::task::spawn_blocking(move || blake3_hex(&f))
                .await
                .map_err(|e| CliError::runtime(format!("hashing {}: {e}", full.display())))?
                .map_err(|e| CliError::runtime(format!("hashing {}: {e}", full.display())))?;
            hex.eq_ignore_ascii_case(id)
        } else {
            let fetched = super::cat::fetch_file(backend, Some(old_id), &r.path, tmp).await?;
            let f = full.clone();
            tokio::task::spawn_blocking(move || same_bytes(&fetched, &f))
                .await
                .map_err(|e| CliError::runtime(format!("reading {}: {e}", full.display())))?
                .map_err(|e| CliError::runtime(format!("reading {}: {e}", full.display())))?
        };
        l.content = if same {
            r.content.clone()
        } else {
            Some("local".into())
        };
    }
    Ok(local)
}

/// Runs `tether diff`.
pub async fn run(args: DiffArgs) -> Result<ExitCode, CliError> {
    let backend = super::open_remote(&args.from, &args.remote)?;
    let remote = backend.describe();
    let report = match &args.local {
        Some(dir) => {
            if args.new.is_some() {
                return Err(CliError::usage(
                    "--local compares one checkpoint with DIR: give at most one id",
                ));
            }
            let dir = super::absolute(dir)?;
            if !dir.is_dir() {
                return Err(CliError::usage(format!(
                    "{} is not a directory",
                    dir.display()
                )));
            }
            let old_id = match &args.old {
                Some(a) => a.clone(),
                None => match backend
                    .head()
                    .await
                    .map_err(|e| context(e, format!("reading the head of {remote}")))?
                {
                    Some(h) => h.id,
                    None => {
                        println!("{remote} has no checkpoints: nothing to compare");
                        return Ok(ExitCode::SUCCESS);
                    }
                },
            };
            report(
                backend.as_ref(),
                &old_id,
                Newer::Local(&dir),
                args.path.as_ref(),
                args.stat,
                args.notebook_metadata,
            )
            .await?
        }
        None => {
            let Some((old_id, new_id)) = ids(backend.as_ref(), &args).await? else {
                println!("{remote} has fewer than two checkpoints: nothing to compare");
                return Ok(ExitCode::SUCCESS);
            };
            report(
                backend.as_ref(),
                &old_id,
                Newer::Checkpoint(&new_id),
                args.path.as_ref(),
                args.stat,
                args.notebook_metadata,
            )
            .await?
        }
    };
    print!("{}", report.text());
    Ok(ExitCode::SUCCESS)
}
