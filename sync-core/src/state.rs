//! The state directory: who it belongs to, and who is using it.
//!
//! A state directory holds the [`Index`](crate::index) of one synced
//! directory and one remote (and, for some backends, their local data).
//! Two rules keep it honest, and the library enforces both, so a program
//! embedding [`Engine`](crate::Engine) gets them without asking:
//!
//! * **Ownership.** The first use writes [`OWNER_FILE`]
//!   (`dir=<canonical dir> remote=<remote>`, mode `0600`); a later use by
//!   another directory or remote is refused with [`StateError::Foreign`].
//!   Its index describes another tree: syncing with it would push the
//!   wrong deletions. A user without a directory (listing history) may use
//!   any state directory of the same remote.
//! * **One user at a time.** [`StateDir::open`] takes an exclusive OS lock
//!   (`flock`, through [`std::fs::File::try_lock`]) on [`LOCK_FILE`] and
//!   holds it for as long as the [`StateDir`] lives; a second user is
//!   refused with [`StateError::Locked`], naming the holder's pid (written
//!   into the lock file). The kernel releases the lock when the holder
//!   exits, also when it is killed, so a crash never leaves it stuck.
//!
//! The directory is created `0700` and narrowed to `0700` when wider,
//! whatever the umask ([`create_state_dir`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::backend::{Backend, BackendError};
use crate::index::{Index, IndexError};
use crate::restore::{RestoreOptions, RestoreReport};

/// The file recording which directory and remote a state directory belongs to.
pub const OWNER_FILE: &str = "tether-owner";

/// The file locked while a state directory is in use; holds the pid of
/// the process holding the lock.
pub const LOCK_FILE: &str = "tether.lock";

/// A state directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// I/O on the state directory or one of its files.
    #[error("state directory {path}: cannot {op}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The state directory belongs to another directory or remote.
    #[error(
        "state directory {state_dir} belongs to another directory or remote ({owner}); use another state directory"
    )]
    Foreign {
        /// The state directory.
        state_dir: PathBuf,
        /// What its owner file says.
        owner: String,
    },
    /// Another process (or another engine in this one) is using it.
    #[error("state directory {state_dir} is in use by another tether process{}", holder_text(*.holder))]
    Locked {
        /// The state directory.
        state_dir: PathBuf,
        /// The pid written by the holder, if readable.
        holder: Option<u32>,
    },
}

fn holder_text(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Creates a state directory (and missing parents) with mode `0700`,
/// whatever the umask, and narrows an existing one to `0700` when it is
/// wider (a Kubernetes `emptyDir` starts `0777`). A directory this process
/// may not chmod (another owner) is left as it is, with a warning.
pub fn create_state_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = fs::metadata(dir)?;
    if meta.permissions().mode() & 0o077 != 0
        && let Err(e) = fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot make the state directory private (0700)");
    }
    Ok(())
}

/// The owner file's line for `dir` (none: a history listing) and `remote`.
fn owner_line(dir: Option<&Path>, remote: &str) -> String {
    match dir {
        Some(d) => format!("dir={} remote={remote}\n", d.display()),
        None => format!("remote={remote}\n"),
    }
}

/// Creates `state_dir` (`0700`) and claims it for the canonical directory
/// `dir` and `remote` (the remote as the user names it, a URL): writes the
/// owner file when there is none, refuses a state directory that belongs
/// to another directory or remote. Without a `dir` (a history listing)
/// nothing is written, and any state directory of the same remote is
/// accepted.
pub fn claim(state_dir: &Path, dir: Option<&Path>, remote: &str) -> Result<(), StateError> {
    create_state_dir(state_dir).map_err(io_err("create it", state_dir))?;
    match read_owner(state_dir)? {
        Some(stored) => check(state_dir, dir, remote, &stored),
        None if dir.is_none() => Ok(()),
        None => {
            let file = state_dir.join(OWNER_FILE);
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&file)
                .and_then(|mut f| f.write_all(owner_line(dir, remote).as_bytes()))
                .map_err(io_err("write the owner file", &file))
        }
    }
}

/// The owner file's content, `None` when there is none.
fn read_owner(state_dir: &Path) -> Result<Option<String>, StateError> {
    let file = state_dir.join(OWNER_FILE);
    match fs::read_to_string(&file) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read the owner file", &file)(e)),
    }
}

/// Refuses `dir` and `remote` when the owner file says `stored` and that
/// is someone else.
fn check(
    state_dir: &Path,
    dir: Option<&Path>,
    remote: &str,
    stored: &str,
) -> Result<(), StateError> {
    let expected = owner_line(dir, remote);
    let same = stored == expected
        || (dir.is_none()
            && stored
                .trim_end()
                .ends_with(&format!(" {}", expected.trim_end())));
    if same {
        Ok(())
    } else {
        Err(StateError::Foreign {
            state_dir: state_dir.to_path_buf(),
            owner: stored.trim().to_owned(),
        })
    }
}

/// A claimed state directory, locked for this process while it lives.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    dir: PathBuf,
    remote: String,
    /// Holds the lock; closing it releases the lock.
    _lock: File,
}

impl StateDir {
    /// Creates (`0700`), locks and claims ([`claim`]) `path` for the
    /// canonical directory `dir` and `remote`. Blocking file system work;
    /// fails at once (does not wait) when another user holds the lock.
    pub fn open(path: &Path, dir: &Path, remote: &str) -> Result<StateDir, StateError> {
        create_state_dir(path).map_err(io_err("create it", path))?;
        let lock_path = path.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err("open the lock file", &lock_path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                // Belonging to someone else is the more useful news (it
                // does not go away when the other user stops).
                if let Some(stored) = read_owner(path)? {
                    check(path, Some(dir), remote, &stored)?;
                }
                let mut text = String::new();
                let holder = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(StateError::Locked {
                    state_dir: path.to_path_buf(),
                    holder,
                });
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(io_err("lock the lock file", &lock_path)(e));
            }
        }
        // Claimed under the lock, so two first users cannot both write it.
        claim(path, Some(dir), remote)?;
        // Best effort: the pid only improves the message of the next user.
        let pid = std::process::id();
        if let Err(e) = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{pid}"))
        {
            tracing::debug!(file = %lock_path.display(), error = %e, "cannot write the pid into the lock file");
        }
        Ok(StateDir {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            remote: remote.to_owned(),
            _lock: file,
        })
    }

    /// The state directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The synced directory it belongs to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The remote it belongs to.
    pub fn remote(&self) -> &str {
        &self.remote
    }
}

/// What [`restore_and_seed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// The remote holds nothing yet: the directory was left as it is and
    /// the index emptied.
    EmptyRemote,
    /// The remote state was written and the index seeded with it.
    Done(RestoreReport),
}

/// [`restore_and_seed`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeedError {
    /// The backend could not restore (nothing was recorded in the index).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The restore is done but the index could not record it: the next
    /// sync compares the tree with the remote from scratch.
    #[error("restored, but the index in {state_dir} could not record it: {source}")]
    Index {
        /// The state directory.
        state_dir: PathBuf,
        /// Why.
        #[source]
        source: IndexError,
    },
}

/// Restores `backend`'s state (the newest, or `options.at`) into the
/// directory `state` belongs to, then seeds the index in `state` with what
/// was restored, so an engine started next pushes nothing back. An empty
/// remote (and no `at`) leaves the directory alone and empties the index.
///
/// Holding `state` guarantees the index is the directory's and no engine
/// uses it meanwhile. The index is written off the async workers.
///
/// A subpath restore ([`RestoreOptions::paths`]) leaves the index as it
/// is: it says nothing about the rest of the directory, and the next sync
/// compares the restored files with the index like any local edit.
pub async fn restore_and_seed(
    backend: &dyn Backend,
    state: &StateDir,
    options: &RestoreOptions,
) -> Result<Restored, SeedError> {
    if !options.paths.is_empty() {
        return Ok(Restored::Done(backend.restore(state.dir(), options).await?));
    }
    let restored = if options.at.is_none() && backend.head().await?.is_none() {
        Restored::EmptyRemote
    } else {
        Restored::Done(backend.restore(state.dir(), options).await?)
    };
    let state_dir = state.path().to_path_buf();
    let written = tokio::task::spawn_blocking(move || {
        let r = Index::open(&state_dir).and_then(|mut index| match &restored {
            Restored::EmptyRemote => index.replace_all(std::iter::empty(), None),
            Restored::Done(report) => {
                index.replace_all(report.entries.iter().cloned(), report.head.clone())
            }
        });
        r.map(|()| restored)
    })
    .await;
    let index_err = |source| SeedError::Index {
        state_dir: state.path().to_path_buf(),
        source,
    };
    match written {
        Ok(r) => r.map_err(index_err),
        Err(e) => Err(index_err(IndexError::Io {
            op: "write",
            path: state.path().to_path_buf(),
            source: io::Error::other(e),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_is_checked() {
        let t = tempfile::tempdir().unwrap();
        let s = t.path().join("state");
        let w = Some(Path::new("/w"));
        // A history listing does not claim.
        claim(&s, None, "file:///s").unwrap();
        assert!(!s.join(OWNER_FILE).exists());
        claim(&s, w, "file:///s").unwrap();
        claim(&s, w, "file:///s").unwrap();
        for (dir, remote) in [(Some(Path::new("/v")), "file:///s"), (w, "file:///t")] {
            let err = claim(&s, dir, remote).unwrap_err();
            assert!(matches!(err, StateError::Foreign { .. }), "{err}");
            assert!(err.to_string().contains("dir=/w remote=file:///s"), "{err}");
        }
        // History may read a sync's state directory of the same remote only.
        claim(&s, None, "file:///s").unwrap();
        assert!(claim(&s, None, "file:///t").is_err());
    }

    #[test]
    fn state_directory_and_its_files_are_private() {
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("state");
        fs::create_dir(&state).unwrap();
        fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
        let _s = StateDir::open(&state, Path::new("/w"), "file:///s").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(OWNER_FILE)), 0o600);
        assert_eq!(mode(&state.join(LOCK_FILE)), 0o600);
    }

    #[test]
    fn a_second_user_is_refused_until_the_first_is_gone() {
        let t = tempfile::tempdir().unwrap();
        let open = || StateDir::open(t.path(), Path::new("/w"), "file:///s");
        let first = open().unwrap();
        let err = open().unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StateError::Locked { .. }), "{msg}");
        assert!(
            msg.contains(&t.path().display().to_string())
                && msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        // Another directory hears that it is not theirs, not that it is busy.
        let err = StateDir::open(t.path(), Path::new("/v"), "file:///s").unwrap_err();
        assert!(matches!(err, StateError::Foreign { .. }), "{err}");
        drop(first);
        open().unwrap();
    }
}
