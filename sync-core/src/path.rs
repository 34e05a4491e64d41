//! [`RelPath`]: a validated path relative to the synced directory.
//!
//! Every path that crosses a crate boundary — from the watcher to the index,
//! from a checkpoint to a backend, from remote state back to a restore — is a
//! `RelPath`. Its constructor is the single place that decides which names are
//! acceptable, so hostile remote state (`../x`, `/etc/x`, `a/../../x`, names
//! with NUL or backslash) is refused in one place for every backend.
//!
//! [`is_repository_component`] is the one check for names git treats as a
//! repository directory (`.git` in any case, and git's NTFS aliases of it):
//! such paths are never pushed (the scan skips them) and never restored
//! (the restore writer skips them with a warning), on every backend. They
//! stay valid `RelPath`s so that old indexes and manifests that hold them
//! still load; they are filtered where files are read or written.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a string is not an acceptable relative path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path is empty.
    #[error("empty path")]
    Empty,
    /// The path starts with `/`.
    #[error("absolute path {0:?}")]
    Absolute(String),
    /// A component is `..` (or `.`), which could step outside the tree.
    #[error("path {0:?} contains a `.` or `..` component")]
    DotComponent(String),
    /// A component is empty (`a//b` or a trailing `/`).
    #[error("path {0:?} contains an empty component")]
    EmptyComponent(String),
    /// The path contains a NUL byte.
    #[error("path {0:?} contains a NUL byte")]
    Nul(String),
    /// The path contains a backslash, a separator on Windows.
    #[error("path {0:?} contains a backslash")]
    Backslash(String),
    /// A local file name is not valid UTF-8.
    #[error("path {0:?} is not valid UTF-8")]
    NotUtf8(PathBuf),
    /// A local path is not inside the synced directory.
    #[error("path {0:?} is outside the synced directory")]
    Outside(PathBuf),
}

/// True when `component` (one path component) is a name git treats as a
/// repository directory, or refuses in trees for that reason: `.git` in any
/// letter case, and git's NTFS aliases of it, which git refuses on every
/// platform by default (`core.protectNTFS`): `.git` followed by dots or
/// spaces (`.git.`, `.GIT `), the 8.3 short name `git~1`, and NTFS stream
/// forms (`.git::$INDEX_ALLOCATION`). HFS+ aliases (`.git` with ignorable
/// Unicode code points) are not included: Linux file systems do not fold
/// them into `.git`, and git on Linux does not refuse them either.
///
/// ```
/// use sync_core::is_repository_component;
/// assert!(is_repository_component(".git") && is_repository_component(".GiT"));
/// assert!(is_repository_component("git~1") && is_repository_component(".git. "));
/// assert!(!is_repository_component(".gitignore") && !is_repository_component("git"));
/// ```
pub fn is_repository_component(component: &str) -> bool {
    let lower = component.to_ascii_lowercase();
    let name = lower.split(':').next().unwrap_or_default();
    let name = if name.len() < lower.len() {
        // An NTFS stream name: `.git::$INDEX_ALLOCATION`, `.git:x`.
        name
    } else {
        name.trim_end_matches(['.', ' '])
    };
    name == ".git" || name == "git~1"
}

/// A relative, normalised, `/`-separated path inside the synced directory.
///
/// Invariants (checked by [`RelPath::new`]): non-empty, no leading `/`, no
/// empty, `.` or `..` components, no NUL and no backslash. Joining a `RelPath`
/// onto a directory therefore always yields a path inside that directory
/// (symlinks aside, which restore checks separately).
///
/// Ordering is byte-wise on the string, so a directory sorts before
/// everything under it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelPath(String);

impl RelPath {
    /// Validates `s` as a relative path.
    ///
    /// ```
    /// use sync_core::RelPath;
    /// assert!(RelPath::new("notebooks/a b.ipynb").is_ok());
    /// assert!(RelPath::new("../x").is_err());
    /// assert!(RelPath::new("/etc/x").is_err());
    /// assert!(RelPath::new("a/../../x").is_err());
    /// ```
    pub fn new(s: impl Into<String>) -> Result<Self, PathError> {
        let s = s.into();
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.starts_with('/') {
            return Err(PathError::Absolute(s));
        }
        if s.contains('\0') {
            return Err(PathError::Nul(s));
        }
        if s.contains('\\') {
            return Err(PathError::Backslash(s));
        }
        for c in s.split('/') {
            if c.is_empty() {
                return Err(PathError::EmptyComponent(s));
            }
            if c == "." || c == ".." {
                return Err(PathError::DotComponent(s));
            }
        }
        Ok(RelPath(s))
    }

    /// The path of `full` relative to `root`, for a local file found by the
    /// watcher or a scan.
    pub fn from_local(root: &Path, full: &Path) -> Result<Self, PathError> {
        let rel = full
            .strip_prefix(root)
            .map_err(|_| PathError::Outside(full.to_path_buf()))?;
        let mut out = String::new();
        for comp in rel.components() {
            match comp {
                Component::Normal(c) => {
                    let c = c
                        .to_str()
                        .ok_or_else(|| PathError::NotUtf8(full.to_path_buf()))?;
                    if !out.is_empty() {
                        out.push('/');
                    }
                    out.push_str(c);
                }
                Component::CurDir => {}
                _ => return Err(PathError::Outside(full.to_path_buf())),
            }
        }
        RelPath::new(out)
    }

    /// The first component that is a git repository directory name (see
    /// [`is_repository_component`]), if any: such a path is never synced.
    pub fn repository_component(&self) -> Option<&str> {
        self.0.split('/').find(|c| is_repository_component(c))
    }

    /// The path up to and including its first repository component
    /// (`a/.git` for `a/.git/hooks/x`), if it has one.
    pub fn repository_root(&self) -> Option<RelPath> {
        let mut end = 0;
        for c in self.0.split('/') {
            end += c.len();
            if is_repository_component(c) {
                return Some(RelPath(self.0[..end].to_owned()));
            }
            end += 1;
        }
        None
    }

    /// The path as a `/`-separated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path joined onto `root`.
    pub fn to_path(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }

    /// The parent directory, or `None` at the top level.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rfind('/').map(|i| RelPath(self.0[..i].to_owned()))
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// `self` joined with one more component (`name` is validated).
    pub fn join(&self, name: &str) -> Result<RelPath, PathError> {
        RelPath::new(format!("{}/{}", self.0, name))
    }

    /// Every proper ancestor, nearest last: `a/b/c` gives `a`, `a/b`.
    pub fn ancestors(&self) -> impl Iterator<Item = RelPath> + '_ {
        self.0
            .match_indices('/')
            .map(|(i, _)| RelPath(self.0[..i].to_owned()))
    }

    /// True when `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        self.0 == other.0
            || (self.0.len() > other.0.len()
                && self.0.starts_with(&other.0)
                && self.0.as_bytes()[other.0.len()] == b'/')
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl TryFrom<String> for RelPath {
    type Error = PathError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        RelPath::new(s)
    }
}

impl TryFrom<&str> for RelPath {
    type Error = PathError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        RelPath::new(s)
    }
}

impl From<RelPath> for String {
    fn from(p: RelPath) -> String {
        p.0
    }
}

impl std::borrow::Borrow<str> for RelPath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for RelPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in [
            "a",
            "a/b",
            "a b/ü ñ.ipynb",
            ".hidden",
            "a/.b",
            "...",
            "a..b",
        ] {
            assert!(RelPath::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_hostile_names() {
        for bad in [
            "",
            "/etc/x",
            "../x",
            "a/../../x",
            "a/./b",
            ".",
            "a//b",
            "a/",
            "a\0b",
            "a\\b",
            "..\\x",
        ] {
            assert!(RelPath::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn repository_components_in_any_case_and_alias() {
        for bad in [
            ".git",
            ".GIT",
            ".Git",
            ".git.",
            ".git ",
            ".git. .",
            "GIT~1",
            "git~1",
            ".git::$INDEX_ALLOCATION",
            ".GIT:x",
        ] {
            assert!(is_repository_component(bad), "{bad:?}");
        }
        for ok in [
            ".gitignore",
            ".gitmodules",
            ".github",
            "git",
            "x.git",
            ".git~1",
            "git~2",
            "..git",
            "a:.git",
        ] {
            assert!(!is_repository_component(ok), "{ok:?}");
        }
        let p = RelPath::new("sub/.GIT/hooks/pre-commit").unwrap();
        assert_eq!(p.repository_component(), Some(".GIT"));
        assert_eq!(p.repository_root().unwrap().as_str(), "sub/.GIT");
        assert_eq!(
            RelPath::new(".git")
                .unwrap()
                .repository_root()
                .unwrap()
                .as_str(),
            ".git"
        );
        assert!(
            RelPath::new("a/.gitignore")
                .unwrap()
                .repository_root()
                .is_none()
        );
    }

    #[test]
    fn deserialising_validates() {
        let r: Result<RelPath, _> = serde_json::from_str("\"../x\"");
        assert!(r.is_err());
        let ok: RelPath = serde_json::from_str("\"a/b\"").unwrap();
        assert_eq!(ok.as_str(), "a/b");
    }

    #[test]
    fn from_local_strips_root() {
        let p = RelPath::from_local(Path::new("/r"), Path::new("/r/a/b")).unwrap();
        assert_eq!(p.as_str(), "a/b");
        assert!(RelPath::from_local(Path::new("/r"), Path::new("/s/a")).is_err());
        assert!(RelPath::from_local(Path::new("/r"), Path::new("/r")).is_err());
    }

    #[test]
    fn parents_and_prefixes() {
        let p = RelPath::new("a/b/c").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert_eq!(p.file_name(), "c");
        let anc: Vec<_> = p.ancestors().map(|a| a.0).collect();
        assert_eq!(anc, ["a", "a/b"]);
        assert!(p.starts_with(&RelPath::new("a/b").unwrap()));
        assert!(!p.starts_with(&RelPath::new("a/b/c/d").unwrap()));
        assert!(
            !RelPath::new("ab")
                .unwrap()
                .starts_with(&RelPath::new("a").unwrap())
        );
        assert!(RelPath::new("a").unwrap().parent().is_none());
    }
}
