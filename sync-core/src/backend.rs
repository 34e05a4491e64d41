//! The [`Backend`] trait: where checkpoints go and where restores come from.
//!
//! # The contract
//!
//! * **Push is all-or-error.** [`Backend::push`] returns `Ok` only once the
//!   checkpoint is durable in the remote: a restore started after `Ok` sees
//!   every change in it. On `Err` the remote may hold some of the data (blobs,
//!   objects) but must still restore to a *consistent* state: either the one
//!   before the push or, for layouts without atomic snapshots (a mirror of
//!   plain objects), a state in which every object is a complete version of
//!   its file.
//! * **Push is retryable.** After an error the engine pushes the same
//!   checkpoint again, or the same checkpoint merged with newer changes. A
//!   backend must accept that without duplicating or losing anything:
//!   upserts carry full metadata and deletes of absent paths are no-ops.
//! * **Content is read from a [`Source`] as a stream.** A
//!   large file is never held whole in memory. The readers check that the
//!   bytes match the hash the checkpoint recorded; if a file changed since the
//!   checkpoint was built, reading it fails with
//!   [`BackendError::SourceChanged`] and the backend must not record that path
//!   (the engine rebuilds the checkpoint and retries).
//! * **Restore never writes outside its destination.** Backends turn their
//!   listing into a [`RestorePlan`](crate::restore::RestorePlan) (which refuses
//!   `..`, absolute names, NUL, backslash and paths through symlinks) and write
//!   through a [`RestoreWriter`](crate::restore::RestoreWriter), which applies
//!   the [`ExistingPolicy`](crate::restore::ExistingPolicy) for a non-empty
//!   destination and writes every file via a temporary file and a rename.
//! * **Nothing secret in `describe` or errors.** URLs are shown without
//!   credentials.

use std::path::Path;
use std::time::SystemTime;

use async_trait::async_trait;

use crate::checkpoint::Checkpoint;
use crate::path::RelPath;
use crate::restore::{RestoreError, RestoreOptions, RestoreReport};
use crate::source::Source;

/// What a backend can keep; the conformance suite checks accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Empty directories survive a round trip.
    pub empty_dirs: bool,
    /// Full permission bits (`0o777`) of files survive; directory modes
    /// survive on every backend (see FORMAT.md, "Modes").
    pub full_mode: bool,
    /// Modification times survive.
    pub mtime: bool,
    /// Earlier checkpoints can be listed and restored (`history`, `at`).
    pub history: bool,
}

/// The newest state of the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteHead {
    /// Backend-specific identifier (commit id, snapshot id, generation).
    pub id: String,
    /// When that state was written, if the backend knows.
    pub time: Option<SystemTime>,
}

/// What a successful push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReceipt {
    /// The remote head after the push (commit id, snapshot id), if any.
    pub head: Option<String>,
    /// Files whose content was uploaded (deduplicated content is not counted).
    pub files_uploaded: u64,
    /// Content bytes uploaded.
    pub bytes_uploaded: u64,
    /// Set when the push could not go where it should because another writer
    /// changed the same paths: the checkpoint was saved elsewhere (for example
    /// a git conflict branch) and this says where. Nothing was lost.
    pub conflict: Option<String>,
}

/// One checkpoint kept by a backend with history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Identifier accepted by [`RestoreOptions::at`].
    pub id: String,
    /// When it was written.
    pub time: Option<SystemTime>,
    /// Regular files in that state.
    pub files: u64,
    /// Content bytes in that state.
    pub bytes: u64,
}

/// A stored state, as [`Backend::list`] reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The snapshot or commit listed (`None`: nothing was pushed yet).
    pub id: Option<String>,
    /// Its entries, in path order.
    pub entries: Vec<Listed>,
}

/// One entry of a [`Listing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Where it is.
    pub path: RelPath,
    /// What it is: file, directory or symlink.
    pub kind: crate::restore::PlanKind,
    /// Content size (files), when the backend keeps it.
    pub size: Option<u64>,
    /// Permission bits, when the backend keeps them.
    pub mode: Option<u32>,
    /// Modification time (files), when the backend keeps it.
    pub mtime: Option<SystemTime>,
    /// The symlink's target.
    pub target: Option<String>,
    /// An id of the content that two entries of one backend share exactly
    /// when their bytes are the same (BLAKE3, a git blob id, an ETag):
    /// what `diff` compares.
    pub content: Option<String>,
}

impl Listed {
    /// The entry for `meta` as tether records it (manifests, indexes).
    pub fn from_meta(path: RelPath, meta: &crate::entry::Meta) -> Self {
        use crate::entry::Meta;
        use crate::restore::PlanKind;
        match meta {
            Meta::File(f) => Listed {
                path,
                kind: PlanKind::File,
                size: Some(f.size),
                mode: Some(f.mode & crate::entry::PERMISSION_BITS),
                mtime: time_of_ns(f.mtime_ns),
                target: None,
                content: Some(f.hash.to_hex()),
            },
            Meta::Dir { mode } => Listed {
                path,
                kind: PlanKind::Dir,
                size: None,
                mode: Some(mode & crate::entry::PERMISSION_BITS),
                mtime: None,
                target: None,
                content: None,
            },
            Meta::Symlink { target } => Listed {
                path,
                kind: PlanKind::Symlink,
                size: None,
                mode: None,
                mtime: None,
                target: Some(target.clone()),
                content: None,
            },
        }
    }
}

/// A recorded mtime in nanoseconds as a time (`None` if it does not fit).
fn time_of_ns(ns: i64) -> Option<SystemTime> {
    let d = std::time::Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(d)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(d)
    }
}

/// Errors from a backend.
///
/// Messages name the object, path or URL involved and never contain
/// credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// A source file no longer matches the checkpoint (it changed after the
    /// checkpoint was built). The engine rebuilds the checkpoint and retries.
    #[error("{path} changed while it was being pushed")]
    SourceChanged {
        /// The file that changed.
        path: RelPath,
    },
    /// A source file could not be read.
    #[error("reading {path}: {source}")]
    SourceIo {
        /// The file.
        path: RelPath,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The remote could not be reached or refused the request. `transient`
    /// errors (timeouts, 5xx, connection resets) are worth retrying soon.
    #[error("{operation} {location}: {message}")]
    Remote {
        /// What was attempted (`put`, `fetch`, `push`...).
        operation: &'static str,
        /// The object, ref or URL, without credentials.
        location: String,
        /// What went wrong.
        message: String,
        /// Whether retrying soon may help.
        transient: bool,
    },
    /// Remote data is malformed or hostile (bad manifest, hash mismatch,
    /// path escaping the destination). Restore refuses it and writes nothing
    /// outside the destination.
    #[error("invalid remote data in {object}: {reason}")]
    InvalidRemote {
        /// The object, ref or key at fault.
        object: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Restoring into the destination failed.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// The requested checkpoint or remote does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The backend does not offer this operation.
    #[error("{backend} does not support {what}")]
    Unsupported {
        /// The backend's description.
        backend: String,
        /// The operation.
        what: &'static str,
    },
    /// The backend's configuration is unusable (bad URL, missing credentials).
    #[error("configuration: {0}")]
    Config(String),
}

impl BackendError {
    /// Converts an I/O error from a [`Source`] reader, recovering
    /// [`BackendError::SourceChanged`] when that is what it carries.
    pub fn from_source_io(path: &RelPath, err: std::io::Error) -> Self {
        if err
            .get_ref()
            .is_some_and(|inner| inner.is::<crate::source::SourceChangedError>())
        {
            BackendError::SourceChanged { path: path.clone() }
        } else {
            BackendError::SourceIo {
                path: path.clone(),
                source: err,
            }
        }
    }

    /// True for errors that retrying will not fix without someone changing
    /// something (credentials, the URL, a missing bucket or repository):
    /// [`BackendError::Config`] and non-transient [`BackendError::Remote`].
    /// One-shot commands stop on them; the engine keeps retrying slowly, as
    /// the bucket may be created later.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            BackendError::Config(_)
                | BackendError::Remote {
                    transient: false,
                    ..
                }
        )
    }

    /// A remote error that may go away on retry.
    pub fn transient(
        operation: &'static str,
        location: impl Into<String>,
        message: impl std::fmt::Display,
    ) -> Self {
        BackendError::Remote {
            operation,
            location: location.into(),
            message: message.to_string(),
            transient: true,
        }
    }

    /// A remote error that retrying soon will not fix (auth, not found).
    pub fn permanent(
        operation: &'static str,
        location: impl Into<String>,
        message: impl std::fmt::Display,
    ) -> Self {
        BackendError::Remote {
            operation,
            location: location.into(),
            message: message.to_string(),
            transient: false,
        }
    }
}

/// A place checkpoints are pushed to and restored from.
///
/// Object safe: engines hold an `Arc<dyn Backend>`. See the module
/// documentation for the contract every implementation keeps; the
/// `testkit` feature's conformance suite checks it.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// A short description safe to log (URL without credentials).
    fn describe(&self) -> String;

    /// What this backend keeps.
    fn capabilities(&self) -> Capabilities;

    /// The newest remote state, or `None` if nothing was ever pushed.
    async fn head(&self) -> Result<Option<RemoteHead>, BackendError>;

    /// Applies `checkpoint` to the remote state, reading file contents from
    /// `source`. See the module docs for the durability and retry contract.
    async fn push(
        &self,
        checkpoint: &Checkpoint,
        source: &Source,
    ) -> Result<PushReceipt, BackendError>;

    /// Writes the newest state (or the one named by `options.at`) into
    /// `dest`, which is created if missing.
    async fn restore(
        &self,
        dest: &Path,
        options: &RestoreOptions,
    ) -> Result<RestoreReport, BackendError>;

    /// Earlier checkpoints, newest first, at most `limit`.
    async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, BackendError> {
        let _ = limit;
        Err(BackendError::Unsupported {
            backend: self.describe(),
            what: "history",
        })
    }

    /// Every entry of the newest state (or the one named by `at`), in path
    /// order, without writing anything (`tether ls`, `tether diff`).
    /// Paths are validated as a restore validates them.
    async fn list(&self, at: Option<&str>) -> Result<Listing, BackendError> {
        let _ = at;
        Err(BackendError::Unsupported {
            backend: self.describe(),
            what: "listing a stored state",
        })
    }

    /// Waits up to `limit` for housekeeping the backend runs in the
    /// background after pushes (sync-git packs its local repository), so a
    /// process that pushes once and exits lets it finish. A long-running
    /// sidecar need not call it. The default has nothing to wait for.
    async fn wait_background(&self, limit: std::time::Duration) {
        let _ = limit;
    }
}
