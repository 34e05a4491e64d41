//! Where tether keeps things on the local machine: the default store and
//! the default state directory. Pure functions take the environment as
//! arguments so they are tested without touching the real one. (Claiming
//! and locking a state directory is sync-core's job: `sync_core::state`.)

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::CliError;

/// The environment variables the defaults depend on.
#[derive(Debug, Clone, Default)]
pub struct BaseDirs {
    /// `$HOME`.
    pub home: Option<PathBuf>,
    /// `$XDG_DATA_HOME`.
    pub data_home: Option<PathBuf>,
    /// `$XDG_STATE_HOME`.
    pub state_home: Option<PathBuf>,
}

fn absolute(v: Option<OsString>) -> Option<PathBuf> {
    v.map(PathBuf::from)
        .filter(|p| p.is_absolute() && !p.as_os_str().is_empty())
}

impl BaseDirs {
    /// Reads `HOME`, `XDG_DATA_HOME` and `XDG_STATE_HOME` (relative values
    /// are ignored, as the XDG specification says).
    pub fn from_env() -> Self {
        BaseDirs {
            home: absolute(std::env::var_os("HOME")),
            data_home: absolute(std::env::var_os("XDG_DATA_HOME")),
            state_home: absolute(std::env::var_os("XDG_STATE_HOME")),
        }
    }

    /// `$XDG_DATA_HOME/tether`, else `$HOME/.local/share/tether`.
    pub fn data_dir(&self) -> Result<PathBuf, CliError> {
        self.data_home
            .clone()
            .or_else(|| self.home.as_ref().map(|h| h.join(".local/share")))
            .map(|d| d.join("tether"))
            .ok_or_else(|| {
                CliError::usage("neither XDG_DATA_HOME nor HOME is set: give a remote with --to")
            })
    }

    /// `$XDG_STATE_HOME/tether`, else `$HOME/.local/state/tether`.
    pub fn state_dir(&self) -> Result<PathBuf, CliError> {
        self.state_home
            .clone()
            .or_else(|| self.home.as_ref().map(|h| h.join(".local/state")))
            .map(|d| d.join("tether"))
            .ok_or_else(|| {
                CliError::usage(
                    "neither XDG_STATE_HOME nor HOME is set: give a state directory with --state-dir or TETHER_STATE_DIR",
                )
            })
    }
}

/// A short stable name for `parts`: 16 hex digits of their BLAKE3 hash.
pub fn short_hash(parts: &[&str]) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().to_hex()[..16].to_owned()
}

/// A readable, unique name for a directory: its last component and a hash
/// of the whole canonical path.
fn dir_label(dir: &Path) -> String {
    let base: String = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{base}-{}", short_hash(&[&dir.to_string_lossy()]))
}

/// The default store of `dir` (canonical): a `file://` URL under the data
/// directory, `…/tether/store/<name>-<hash>`.
pub fn default_store_url(base: &BaseDirs, dir: &Path) -> Result<String, CliError> {
    let store = base.data_dir()?.join("store").join(dir_label(dir));
    Ok(file_url(&store))
}

/// The default state directory of `dir` (canonical) synced with `remote`:
/// `…/tether/<name>-<hash of dir and remote>` under the state directory.
pub fn default_state_dir(base: &BaseDirs, dir: &Path, remote: &str) -> Result<PathBuf, CliError> {
    let name = dir_label(dir);
    let hash = short_hash(&[&dir.to_string_lossy(), remote]);
    let prefix = name.rsplit_once('-').map_or(name.as_str(), |(p, _)| p);
    Ok(base.state_dir()?.join(format!("{prefix}-{hash}")))
}

/// The state directory of a command without a synced directory (`history`):
/// keyed by the remote only.
pub fn remote_state_dir(base: &BaseDirs, remote: &str) -> Result<PathBuf, CliError> {
    Ok(base
        .state_dir()?
        .join("remotes")
        .join(short_hash(&[remote])))
}

/// `file://` URL of an absolute path, percent-encoding what URLs cannot hold.
pub fn file_url(path: &Path) -> String {
    let mut out = String::from("file://");
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether `dir` has nothing worth keeping: missing, or holding only
/// `lost+found` (what a freshly formatted volume contains) and temporary
/// files of an interrupted restore (which the next restore removes).
pub fn is_effectively_empty(dir: &Path) -> Result<bool, CliError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => {
            return Err(CliError::usage(format!(
                "cannot read directory {}: {e}",
                dir.display()
            )));
        }
    };
    for entry in entries {
        let entry = entry.map_err(|e| {
            CliError::runtime(format!("cannot read directory {}: {e}", dir.display()))
        })?;
        let name = entry.file_name();
        let leftover = name
            .to_str()
            .is_some_and(sync_core::restore::is_restore_temp_name);
        if name != "lost+found" && !leftover {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Creates `dir` if needed and returns its canonical path.
///
/// Only the last component is created: a typo in a parent (`/hmoe/me/work`)
/// must not silently make a whole new tree that is then synced.
pub fn prepare_dir(dir: &Path) -> Result<PathBuf, CliError> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if !m.is_dir() && !m.file_type().is_symlink() => {
            return Err(CliError::usage(format!(
                "{} is a file, not a directory: give the directory to keep in sync",
                dir.display()
            )));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(CliError::usage(format!(
                    "cannot create {}: its parent {} does not exist (only the last component is created; check for a typo)",
                    dir.display(),
                    parent.display()
                )));
            }
            std::fs::create_dir(dir).map_err(|e| {
                CliError::usage(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        Err(e) => {
            return Err(CliError::usage(format!(
                "cannot read directory {}: {e}",
                dir.display()
            )));
        }
    }
    let canonical = std::fs::canonicalize(dir)
        .map_err(|e| CliError::usage(format!("cannot resolve directory {}: {e}", dir.display())))?;
    if !canonical.is_dir() {
        return Err(CliError::usage(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> BaseDirs {
        BaseDirs {
            home: Some("/home/ann".into()),
            data_home: None,
            state_home: Some("/xdg/state".into()),
        }
    }

    #[test]
    fn defaults_follow_xdg_then_home() {
        let b = base();
        let url = default_store_url(&b, Path::new("/work/my notes")).unwrap();
        assert!(
            url.starts_with("file:///home/ann/.local/share/tether/store/my_notes-"),
            "{url}"
        );
        let state = default_state_dir(&b, Path::new("/work/my notes"), "s3://b/p").unwrap();
        assert!(
            state.starts_with("/xdg/state/tether"),
            "{}",
            state.display()
        );
        let other = default_state_dir(&b, Path::new("/work/my notes"), "s3://b/q").unwrap();
        assert_ne!(state, other, "another remote gets another index");
        assert!(BaseDirs::default().data_dir().is_err());
        assert!(BaseDirs::default().state_dir().is_err());
    }

    #[test]
    fn file_urls_are_percent_encoded() {
        assert_eq!(file_url(Path::new("/a b/c%d")), "file:///a%20b/c%25d");
    }

    #[test]
    fn emptiness_ignores_lost_and_found() {
        let t = tempfile::tempdir().unwrap();
        assert!(is_effectively_empty(&t.path().join("missing")).unwrap());
        std::fs::create_dir(t.path().join("lost+found")).unwrap();
        assert!(is_effectively_empty(t.path()).unwrap());
        std::fs::write(t.path().join(".tether-restore-0123456789abcdef.tmp"), "x").unwrap();
        assert!(is_effectively_empty(t.path()).unwrap());
        std::fs::write(t.path().join("a"), "x").unwrap();
        assert!(!is_effectively_empty(t.path()).unwrap());
    }
}
