//! Reading the local tree: stat-only walks and stable content hashes.
//!
//! [`walk`] lists a subtree with `lstat` only (no content is read), skipping
//! ignored paths, and reports each directory it enters so the watcher can add
//! its inotify watch *before* the directory is listed: a file created while
//! the walk runs is either listed or reported by inotify. Names that cannot
//! be synced portably (not UTF-8, containing a backslash) and sockets, FIFOs
//! and devices are skipped with a warning, and so are names git treats as a
//! repository directory (`.git` in any case and its aliases, see
//! [`is_repository_component`](crate::path::is_repository_component)): tether
//! never pushes them on any backend, so a remote never holds a `.git` that
//! tether put there, and restore skips them too.
//!
//! [`hash_file`] reads a file once and compares `fstat` before and after; if
//! the size or mtime moved, the file changed while it was read and it is read
//! again (up to [`HASH_ATTEMPTS`] times), so a hash always belongs to one
//! consistent version of the file.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::entry::{ContentHash, LocalKind, LocalStat};
use crate::path::RelPath;
use crate::rules::IgnoreRules;

/// How often [`hash_file`] reads a file that keeps changing before giving up.
pub const HASH_ATTEMPTS: usize = 3;

/// A file's content hash and the `fstat` that goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashedFile {
    /// Metadata of the version that was hashed.
    pub stat: LocalStat,
    /// Its BLAKE3 hash.
    pub hash: ContentHash,
}

/// Carried inside an [`io::Error`] when a file changed during every attempt
/// to hash it; the caller tries again later.
#[derive(Debug, thiserror::Error)]
#[error("file kept changing while it was read")]
pub struct KeptChanging;

/// Hashes the regular file at `full` without following symlinks.
pub fn hash_file(full: &Path) -> io::Result<HashedFile> {
    let mut buf = vec![0u8; 128 * 1024];
    for _ in 0..HASH_ATTEMPTS {
        let mut f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(full)?;
        let before = LocalStat::from_metadata(&f.metadata()?);
        if before.kind != LocalKind::File {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let mut hasher = blake3::Hasher::new();
        let mut len = 0u64;
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    len += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let after = LocalStat::from_metadata(&f.metadata()?);
        if before == after && after.size == len {
            return Ok(HashedFile {
                stat: after,
                hash: hasher.finalize().into(),
            });
        }
    }
    Err(io::Error::other(KeptChanging))
}

/// True when `err` is [`hash_file`] giving up on a file that kept changing.
pub fn is_kept_changing(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|e| e.is::<KeptChanging>())
}

/// `lstat` of `full`, `None` if it does not exist (or a parent is not a
/// directory any more).
pub fn lstat(full: &Path) -> io::Result<Option<LocalStat>> {
    match fs::symlink_metadata(full) {
        Ok(m) => Ok(Some(LocalStat::from_metadata(&m))),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Reads a symlink's target as UTF-8 text.
pub fn read_link_text(full: &Path) -> io::Result<String> {
    let t = fs::read_link(full)?;
    t.into_os_string().into_string().map_err(|t| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("symlink target {t:?} is not UTF-8"),
        )
    })
}

/// Lists everything below `start` (the whole tree when `None`), stat only.
///
/// Returns `(path, stat)` for files, directories and symlinks that are not
/// ignored, parents before children. `on_dir` is called with the full path of
/// every directory before it is listed, `start` included (the root when
/// `None`). Unreadable directories are reported in the warnings and skipped.
pub fn walk(
    root: &Path,
    rules: &IgnoreRules,
    start: Option<&RelPath>,
    on_dir: &mut dyn FnMut(&Path),
) -> Vec<(RelPath, LocalStat)> {
    let mut out = Vec::new();
    let mut stack: Vec<Option<RelPath>> = vec![start.cloned()];
    while let Some(dir) = stack.pop() {
        let full_dir = match &dir {
            Some(d) => d.to_path(root),
            None => root.to_path_buf(),
        };
        on_dir(&full_dir);
        let entries = match fs::read_dir(&full_dir) {
            Ok(e) => e,
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(dir = %full_dir.display(), error = %e, "cannot list directory; skipped");
                }
                continue;
            }
        };
        for ent in entries {
            let Ok(ent) = ent else { continue };
            let full = ent.path();
            let name = ent.file_name();
            let Some(name) = name.to_str() else {
                tracing::warn!(path = %full.display(), "name is not UTF-8; not synced");
                continue;
            };
            let rel = match &dir {
                Some(d) => d.join(name),
                None => RelPath::new(name),
            };
            let rel = match rel {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(path = %full.display(), error = %e, "name cannot be synced portably; skipped");
                    continue;
                }
            };
            if rel.repository_component().is_some() {
                warn_repository_once(&rel);
                continue;
            }
            let stat = match fs::symlink_metadata(&full) {
                Ok(m) => LocalStat::from_metadata(&m),
                Err(_) => continue, // vanished since read_dir
            };
            let is_dir = stat.kind == LocalKind::Dir;
            if rules.is_ignored(&rel, is_dir) {
                continue;
            }
            match stat.kind {
                LocalKind::Special => {
                    tracing::warn!(path = %rel, "socket, FIFO or device; skipped");
                    continue;
                }
                LocalKind::Dir => stack.push(Some(rel.clone())),
                LocalKind::File | LocalKind::Symlink => {}
            }
            out.push((rel, stat));
        }
    }
    out
}

/// Warns once per process about each skipped repository directory (a
/// polling watcher rescans every few seconds; one line per `.git` is
/// enough). Remembers at most 10,000 paths, then stays quiet.
pub(crate) fn warn_repository_once(path: &RelPath) {
    use parking_lot::Mutex;
    use std::collections::HashSet;
    use std::sync::OnceLock;
    static WARNED: OnceLock<Mutex<HashSet<RelPath>>> = OnceLock::new();
    let mut warned = WARNED.get_or_init(Default::default).lock();
    if warned.len() < 10_000 && warned.insert(path.clone()) {
        tracing::warn!(%path, "a git repository directory (.git); not synced");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::IgnoreConfig;

    #[test]
    fn hash_matches_content() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"content").unwrap();
        let h = hash_file(&f).unwrap();
        assert_eq!(h.hash, ContentHash::of(b"content"));
        assert_eq!(h.stat.size, 7);
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
        assert!(
            hash_file(&dir.path().join("l")).is_err(),
            "symlink followed"
        );
    }

    #[test]
    fn walk_lists_skips_ignored_and_reports_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        fs::create_dir_all(r.join("a/b")).unwrap();
        fs::create_dir_all(r.join(".ipynb_checkpoints")).unwrap();
        fs::write(r.join("a/b/f"), b"x").unwrap();
        fs::write(r.join("a/x.swp"), b"x").unwrap();
        fs::write(r.join(".ipynb_checkpoints/c"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", r.join("link")).unwrap();
        // Repository directories (and files named like them) are not synced.
        fs::create_dir_all(r.join("a/.git/hooks")).unwrap();
        fs::write(r.join("a/.git/hooks/pre-commit"), b"x").unwrap();
        fs::create_dir_all(r.join(".GIT")).unwrap();
        fs::write(r.join("a/b/.Git"), b"gitdir: /x").unwrap();
        let rules = IgnoreRules::load(r, &IgnoreConfig::default()).unwrap();
        let mut dirs = Vec::new();
        let mut got: Vec<_> = walk(r, &rules, None, &mut |d| dirs.push(d.to_path_buf()))
            .into_iter()
            .map(|(p, s)| (p.to_string(), s.kind))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("a".to_string(), LocalKind::Dir),
                ("a/b".to_string(), LocalKind::Dir),
                ("a/b/f".to_string(), LocalKind::File),
                ("link".to_string(), LocalKind::Symlink),
            ]
        );
        assert_eq!(dirs.len(), 3, "{dirs:?}"); // root, a, a/b; not the ignored dir
    }
}
