//! Restoring remote state into a directory, safely, for every backend.
//!
//! Two steps, both shared by all backends so hostile remote data is handled
//! the same way everywhere:
//!
//! 1. [`RestorePlan::validate`] checks the remote listing before anything is
//!    written: every name must be a valid [`RelPath`] (no `..`, absolute path,
//!    NUL or backslash), appear once, and not lie under a symlink or a file of
//!    the same listing. One bad name fails the whole restore.
//! 2. [`RestoreWriter`] writes entries. It re-checks at write time that no
//!    existing component of the target's parent is a symlink (so even a
//!    pre-existing symlink in a non-empty destination is never followed),
//!    writes each file to a temporary file in the same directory, verifies
//!    size and hash when the backend knows them, sets mode and mtime, then
//!    renames it into place. A file whose bytes do not match is never
//!    written. Per-file `fsync` is not done (a restore interrupted by a node
//!    crash is redone by the next init container); the temporary-file rename
//!    guarantees no half-written file is ever visible under its real name.
//!
//! What the writer never does, whatever the remote says: set setuid, setgid
//! or sticky bits (only [`PERMISSION_BITS`] are applied); make a file or
//! directory wider than recorded, even for a moment, whatever the umask
//! (files start `0600`, directories `0700`, and get their recorded modes at
//! the rename and in [`RestoreWriter::finish`]); write into a git repository
//! directory (`.git` and its aliases are skipped with a warning, as push
//! skips them); leave its own temporary files behind for long (a later
//! restore removes names matching [`is_restore_temp_name`], and only those).
//!
//! A non-empty destination follows an explicit [`ExistingPolicy`].

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::entry::{
    ContentHash, DEFAULT_DIR_MODE, Entry, FileMeta, LocalKind, LocalStat, Meta, PERMISSION_BITS,
};
use crate::path::{PathError, RelPath};

/// What to do when the destination already has content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExistingPolicy {
    /// Refuse to restore into a non-empty directory (the default: nothing
    /// local can be lost).
    #[default]
    Fail,
    /// Replace local files that differ from the remote; local files the remote
    /// does not have are left alone.
    Overwrite,
    /// Like `Overwrite`, but keep a local file whose mtime is newer than the
    /// remote one (it is then pushed by the next sync).
    KeepNewer,
}

impl std::str::FromStr for ExistingPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fail" => Ok(Self::Fail),
            "overwrite" => Ok(Self::Overwrite),
            "keep-newer" => Ok(Self::KeepNewer),
            other => Err(format!(
                "unknown policy {other:?} (expected fail, overwrite or keep-newer)"
            )),
        }
    }
}

/// Options for [`Backend::restore`](crate::Backend::restore).
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// A snapshot or commit id; `None` means the newest state.
    pub at: Option<String>,
    /// What to do with a non-empty destination.
    pub existing: ExistingPolicy,
    /// Live counters for a progress bar, updated as entries are written.
    pub progress: Option<Arc<RestoreProgress>>,
    /// Restore only these paths and what lies below them (empty: the whole
    /// state). Nothing else in the destination is touched, not even the
    /// modes of the selected paths' parent directories; a selected path the
    /// state does not hold is [`BackendError::NotFound`](crate::BackendError::NotFound).
    pub paths: Vec<RelPath>,
}

impl RestoreOptions {
    /// True when `path` is to be restored ([`RestoreOptions::paths`]).
    pub fn selects(&self, path: &RelPath) -> bool {
        self.paths.is_empty() || self.paths.iter().any(|p| path.starts_with(p))
    }

    /// Checks that every selected path is in `listing` (the whole state's
    /// paths): the first one that is not becomes a
    /// [`BackendError::NotFound`](crate::BackendError::NotFound) naming it
    /// and `state` (a snapshot or commit, as the user would name it).
    pub fn check_selected<'a>(
        &self,
        listing: impl IntoIterator<Item = &'a RelPath>,
        state: &str,
    ) -> Result<(), crate::BackendError> {
        if self.paths.is_empty() {
            return Ok(());
        }
        let mut found = vec![false; self.paths.len()];
        for path in listing {
            for (i, p) in self.paths.iter().enumerate() {
                if path.starts_with(p) {
                    found[i] = true;
                }
            }
        }
        match found.iter().position(|f| !f) {
            Some(i) => Err(crate::BackendError::NotFound {
                what: format!("path {} in {state}", self.paths[i]),
            }),
            None => Ok(()),
        }
    }
}

/// Live counters of a running restore, shared with whoever draws progress.
///
/// The [`RestoreWriter`] counts entries done (written, already up to date
/// or kept) and content bytes written; a backend that knows the size of the
/// state it restores sets the totals with [`RestoreWriter::expect_total`].
#[derive(Debug, Default)]
pub struct RestoreProgress {
    entries_done: AtomicU64,
    bytes_done: AtomicU64,
    entries_total: AtomicU64,
    bytes_total: AtomicU64,
}

impl RestoreProgress {
    /// Entries done so far.
    pub fn entries_done(&self) -> u64 {
        self.entries_done.load(Ordering::Relaxed)
    }
    /// Content bytes written so far.
    pub fn bytes_done(&self) -> u64 {
        self.bytes_done.load(Ordering::Relaxed)
    }
    /// Entries in the restored state, 0 until the backend knows.
    pub fn entries_total(&self) -> u64 {
        self.entries_total.load(Ordering::Relaxed)
    }
    /// Content bytes in the restored state, 0 until the backend knows.
    pub fn bytes_total(&self) -> u64 {
        self.bytes_total.load(Ordering::Relaxed)
    }
}

/// How a [`RestoreWriter`] is set up: an [`ExistingPolicy`] alone, or the
/// whole [`RestoreOptions`] (which also carries progress counters).
#[derive(Debug, Clone, Default)]
pub struct WriterSettings {
    policy: ExistingPolicy,
    progress: Option<Arc<RestoreProgress>>,
}

impl From<ExistingPolicy> for WriterSettings {
    fn from(policy: ExistingPolicy) -> Self {
        WriterSettings {
            policy,
            progress: None,
        }
    }
}

impl From<&RestoreOptions> for WriterSettings {
    fn from(o: &RestoreOptions) -> Self {
        WriterSettings {
            policy: o.existing,
            progress: o.progress.clone(),
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// The remote state restored (commit or snapshot id), if the backend has one.
    pub head: Option<String>,
    /// Every entry that now matches the remote, with its local metadata and
    /// BLAKE3 hash: enough to seed the index so the next sync pushes nothing.
    pub entries: Vec<Entry>,
    /// Files written.
    pub files_written: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Local files left as they were because they already matched.
    pub unchanged: u64,
    /// Local files kept instead of the remote version (`KeepNewer`).
    pub kept_local: Vec<RelPath>,
    /// Remote entries not restored because they lie in a git repository
    /// directory (`.git`; see
    /// [`is_repository_component`](crate::path::is_repository_component)).
    pub skipped: Vec<RelPath>,
}

/// Why a restore refused or failed. Names the path or object at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The destination is not empty and the policy is `Fail`.
    #[error("destination {0} is not empty (choose a restore policy: overwrite or keep-newer)")]
    DestinationNotEmpty(PathBuf),
    /// A remote name is not an acceptable relative path.
    #[error("refusing remote entry {name:?} in {object}: {reason}")]
    HostilePath {
        /// The name as the remote stores it.
        name: String,
        /// Where it came from (manifest, commit, key).
        object: String,
        /// Why it is refused.
        reason: PathError,
    },
    /// A remote entry lies under a symlink or file of the same listing, or
    /// a local component of its parent is a symlink.
    #[error("refusing {path}: its parent {parent} is not a plain directory ({what})")]
    ThroughNonDirectory {
        /// The entry.
        path: RelPath,
        /// The offending ancestor.
        parent: RelPath,
        /// What the ancestor is.
        what: &'static str,
    },
    /// A remote listing names the same path twice.
    #[error("remote listing {object} names {path} twice")]
    Duplicate {
        /// The path.
        path: RelPath,
        /// The listing.
        object: String,
    },
    /// Downloaded content does not match its recorded size or hash.
    #[error("content of {path} does not match its recorded {what}; not written")]
    ContentMismatch {
        /// The entry.
        path: RelPath,
        /// `size` or `hash`.
        what: &'static str,
    },
    /// The local path is a directory where a file or symlink should go (or
    /// the reverse) and the policy does not allow replacing it.
    #[error("{path} exists locally as a {local}; not replaced")]
    TypeConflict {
        /// The entry.
        path: RelPath,
        /// What is there locally.
        local: &'static str,
    },
    /// A remote symlink whose target cannot be created (empty, NUL byte,
    /// too long).
    #[error("refusing symlink {path}: {reason}")]
    InvalidSymlink {
        /// The entry.
        path: RelPath,
        /// What is wrong with its target.
        reason: String,
    },
    /// A backend tried to write into a git repository directory (`.git`),
    /// which is never restored; backends ask
    /// [`RestoreWriter::should_write`] first, which skips such paths.
    #[error("refusing {path}: a git repository directory (.git) is never restored")]
    RepositoryDirectory {
        /// The entry.
        path: RelPath,
    },
    /// A local I/O error.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The local path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RestoreError + 'a {
    move |source| RestoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The kind of a listed remote entry, for [`RestorePlan::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
}

impl PlanKind {
    /// The kind of an entry recorded as `meta`.
    pub fn of(meta: &Meta) -> Self {
        match meta {
            Meta::File(_) => PlanKind::File,
            Meta::Dir { .. } => PlanKind::Dir,
            Meta::Symlink { .. } => PlanKind::Symlink,
        }
    }
}

/// A validated remote listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePlan {
    /// The validated paths, in the listing's order.
    pub paths: Vec<RelPath>,
}

impl RestorePlan {
    /// Validates a remote listing of `(name, kind)`; `object` names the
    /// listing (manifest key, commit id) for error messages.
    pub fn validate<S: AsRef<str>>(
        items: impl IntoIterator<Item = (S, PlanKind)>,
        object: &str,
    ) -> Result<RestorePlan, RestoreError> {
        let mut kinds = std::collections::HashMap::new();
        let mut paths = Vec::new();
        for (name, kind) in items {
            let name = name.as_ref();
            let path = RelPath::new(name).map_err(|reason| RestoreError::HostilePath {
                name: name.to_owned(),
                object: object.to_owned(),
                reason,
            })?;
            if kinds.insert(path.clone(), kind).is_some() {
                return Err(RestoreError::Duplicate {
                    path,
                    object: object.to_owned(),
                });
            }
            paths.push(path);
        }
        for path in &paths {
            for anc in path.ancestors() {
                let what = match kinds.get(&anc) {
                    Some(PlanKind::Symlink) => "a symlink",
                    Some(PlanKind::File) => "a file",
                    _ => continue,
                };
                return Err(RestoreError::ThroughNonDirectory {
                    path: path.clone(),
                    parent: anc,
                    what,
                });
            }
        }
        Ok(RestorePlan { paths })
    }
}

/// What the backend knows about a file it is about to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Permission bits to set; only [`PERMISSION_BITS`] are applied (a
    /// remote can never make a restored file setuid, setgid or sticky).
    pub mode: u32,
    /// Modification time to set, if the backend keeps one.
    pub mtime_ns: Option<i64>,
    /// Expected size, if known; more or fewer bytes fail the write.
    pub size: Option<u64>,
    /// Expected BLAKE3 hash, if known; a mismatch fails the write.
    pub hash: Option<ContentHash>,
}

impl From<&FileMeta> for FileSpec {
    fn from(m: &FileMeta) -> Self {
        FileSpec {
            mode: m.mode,
            mtime_ns: Some(m.mtime_ns),
            size: Some(m.size),
            hash: Some(m.hash),
        }
    }
}

/// The prefix of every temporary file (or symlink) a restore creates next to
/// its final name. The full name is this prefix, 16 ASCII letters or digits
/// (the first 8 name the restore that made it) and [`TEMP_SUFFIX`].
pub const TEMP_PREFIX: &str = ".tether-restore-";
/// The suffix of a restore's temporary files.
pub const TEMP_SUFFIX: &str = ".tmp";
const TEMP_RANDOM: usize = 16;
const SESSION_LEN: usize = 8;

/// True when `name` is exactly a restore temporary file's name:
/// [`TEMP_PREFIX`], 16 ASCII letters or digits, [`TEMP_SUFFIX`].
pub fn is_restore_temp_name(name: &str) -> bool {
    name.strip_prefix(TEMP_PREFIX)
        .and_then(|r| r.strip_suffix(TEMP_SUFFIX))
        .is_some_and(|mid| {
            mid.len() == TEMP_RANDOM && mid.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// The longest symlink target Linux accepts (`PATH_MAX` less the NUL).
const MAX_SYMLINK_TARGET: usize = 4095;

/// What the writer knows about a directory whose mode it sets at the end.
#[derive(Debug, Clone, Copy, Default)]
struct DirState {
    /// The recorded mode, if the backend gave one.
    mode: Option<u32>,
    /// Created by this restore (rather than found).
    created: bool,
}

/// Writes restored entries into a destination directory. Methods take `&self`
/// so a backend can write several files in parallel (share it in an `Arc`).
///
/// Modes: files are written to `0600` temporary files and get their
/// recorded mode just before the rename; directories are created `0700` and
/// get their recorded mode in [`finish`](Self::finish), deepest first, after
/// everything inside them is written. So nothing is ever wider than
/// recorded, whatever the umask, and a read-only directory can still be
/// filled. Only [`PERMISSION_BITS`] are ever set.
///
/// Paths with a git repository component (`.git`, see
/// [`is_repository_component`](crate::path::is_repository_component)) are
/// skipped with a warning and listed in [`RestoreReport::skipped`].
///
/// Leftover temporary files of an interrupted restore (names matching
/// [`is_restore_temp_name`] exactly) are removed from every existing
/// directory the writer enters, before it writes there.
#[derive(Debug)]
pub struct RestoreWriter {
    dest: PathBuf,
    policy: ExistingPolicy,
    progress: Arc<RestoreProgress>,
    report: Mutex<RestoreReport>,
    /// Directories whose mode is set by `finish`.
    dirs: Mutex<BTreeMap<RelPath, DirState>>,
    /// Existing directories already cleared of leftover temporary files.
    cleaned: Mutex<HashSet<PathBuf>>,
    /// Repository directories already warned about.
    warned: Mutex<HashSet<RelPath>>,
    /// Names this writer's temporary files with; leftovers of other
    /// sessions are removed, this session's never.
    session: String,
}

impl RestoreWriter {
    /// Prepares `dest` (created if missing). With [`ExistingPolicy::Fail`] a
    /// non-empty `dest` is refused here, before anything is written
    /// (leftover temporary files of an interrupted restore do not count:
    /// they are removed first).
    /// `settings` is an [`ExistingPolicy`] or `&RestoreOptions` (whose
    /// progress counters the writer then updates).
    pub fn open(dest: &Path, settings: impl Into<WriterSettings>) -> Result<Self, RestoreError> {
        let WriterSettings { policy, progress } = settings.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DEFAULT_DIR_MODE)
            .create(dest)
            .map_err(io_err("create", dest))?;
        let meta = fs::symlink_metadata(dest).map_err(io_err("stat", dest))?;
        if !meta.is_dir() {
            return Err(RestoreError::Io {
                op: "open",
                path: dest.to_path_buf(),
                source: io::Error::other("not a directory"),
            });
        }
        let session: String = (0..SESSION_LEN)
            .map(|_| char::from(b"0123456789abcdef"[rand::random_range(0..16)]))
            .collect();
        let writer = RestoreWriter {
            dest: dest.to_path_buf(),
            policy,
            progress: progress.unwrap_or_default(),
            report: Mutex::new(RestoreReport::default()),
            dirs: Mutex::default(),
            cleaned: Mutex::default(),
            warned: Mutex::default(),
            session,
        };
        writer.clean_once(dest);
        if policy == ExistingPolicy::Fail
            && fs::read_dir(dest)
                .map_err(io_err("list", dest))?
                .next()
                .is_some()
        {
            return Err(RestoreError::DestinationNotEmpty(dest.to_path_buf()));
        }
        Ok(writer)
    }

    /// The destination directory.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Tells progress observers how many entries and content bytes the
    /// restored state holds.
    pub fn expect_total(&self, entries: u64, bytes: u64) {
        self.progress
            .entries_total
            .store(entries, Ordering::Relaxed);
        self.progress.bytes_total.store(bytes, Ordering::Relaxed);
    }

    fn entry_done(&self) {
        self.progress.entries_done.fetch_add(1, Ordering::Relaxed);
    }

    fn with_report<T>(&self, f: impl FnOnce(&mut RestoreReport) -> T) -> T {
        f(&mut self.report.lock())
    }

    /// Removes leftover temporary files of other (interrupted) restores
    /// from the existing directory `dir`, once per directory.
    fn clean_once(&self, dir: &Path) {
        if !self.cleaned.lock().insert(dir.to_path_buf()) {
            return;
        }
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for ent in entries.flatten() {
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            if !is_restore_temp_name(name) || name[TEMP_PREFIX.len()..].starts_with(&self.session) {
                continue;
            }
            // Only files and symlinks: a directory with that name is not ours.
            let Ok(ft) = ent.file_type() else { continue };
            if !(ft.is_file() || ft.is_symlink()) {
                continue;
            }
            let full = ent.path();
            match fs::remove_file(&full) {
                Ok(()) => {
                    tracing::info!(path = %full.display(), "removed a temporary file left by an interrupted restore")
                }
                Err(e) => {
                    tracing::warn!(path = %full.display(), error = %e, "cannot remove a temporary file left by an interrupted restore")
                }
            }
        }
    }

    /// True (after a warning and a note in the report) when `path` lies in
    /// a git repository directory, which is never restored.
    fn skip_repository(&self, path: &RelPath) -> bool {
        let Some(root) = path.repository_root() else {
            return false;
        };
        if self.warned.lock().insert(root.clone()) {
            tracing::warn!(path = %root, "skipping a git repository directory (.git) in the remote state; tether never restores one");
        }
        self.with_report(|r| r.skipped.push(path.clone()));
        self.entry_done();
        true
    }

    /// Makes sure every ancestor of `path` is a real directory under `dest`,
    /// creating missing ones (mode `0700` until [`finish`](Self::finish)),
    /// refusing symlinks and files, and clearing leftovers from existing ones.
    fn prepare_parent(&self, path: &RelPath) -> Result<PathBuf, RestoreError> {
        for anc in path.ancestors() {
            let full = anc.to_path(&self.dest);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => {
                    let ours = self.dirs.lock().get(&anc).is_some_and(|d| d.created);
                    if !ours {
                        self.clean_once(&full);
                    }
                }
                Ok(m) => {
                    return Err(RestoreError::ThroughNonDirectory {
                        path: path.clone(),
                        parent: anc,
                        what: if m.file_type().is_symlink() {
                            "a local symlink"
                        } else {
                            "a local file"
                        },
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.make_dir(path, &anc, &full)?;
                }
                Err(e) => return Err(io_err("stat", &full)(e)),
            }
        }
        Ok(path.to_path(&self.dest))
    }

    /// Creates the missing directory `dir` with mode `0700`.
    fn make_dir(&self, path: &RelPath, dir: &RelPath, full: &Path) -> Result<(), RestoreError> {
        match fs::DirBuilder::new().mode(0o700).create(full) {
            Ok(()) => {
                self.dirs.lock().entry(dir.clone()).or_default().created = true;
            }
            // Created concurrently by another writer task.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create directory", full)(e)),
        }
        // Re-check: it must be a directory we can enter safely.
        let m = fs::symlink_metadata(full).map_err(io_err("stat", full))?;
        if !m.is_dir() {
            return Err(RestoreError::ThroughNonDirectory {
                path: path.clone(),
                parent: dir.clone(),
                what: "not a directory",
            });
        }
        Ok(())
    }

    fn local_stat(full: &Path) -> Result<Option<LocalStat>, RestoreError> {
        match fs::symlink_metadata(full) {
            Ok(m) => Ok(Some(LocalStat::from_metadata(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat", full)(e)),
        }
    }

    /// Decides whether a remote file must be written, before it is
    /// downloaded. Returns `false` (and records it) when the local file
    /// already has the expected content, or when [`ExistingPolicy::KeepNewer`]
    /// keeps a newer local file, or when the path lies in a git repository
    /// directory (skipped).
    pub fn should_write(&self, path: &RelPath, spec: &FileSpec) -> Result<bool, RestoreError> {
        if self.skip_repository(path) {
            return Ok(false);
        }
        let full = self.prepare_parent(path)?;
        let Some(local) = Self::local_stat(&full)? else {
            return Ok(true);
        };
        if local.kind != LocalKind::File {
            return Ok(true);
        }
        if self.policy == ExistingPolicy::KeepNewer
            && spec.mtime_ns.is_some_and(|remote| local.mtime_ns > remote)
        {
            self.with_report(|r| r.kept_local.push(path.clone()));
            self.entry_done();
            return Ok(false);
        }
        if let (Some(size), Some(hash)) = (spec.size, spec.hash)
            && local.size == size
            && local.mode == spec.mode & PERMISSION_BITS
        {
            let local_hash = crate::scan::hash_file(&full).map_err(io_err("hash", &full))?;
            if local_hash.hash == hash {
                self.with_report(|r| {
                    r.unchanged += 1;
                    r.entries.push(Entry {
                        path: path.clone(),
                        meta: Meta::File(FileMeta {
                            size,
                            mtime_ns: local_hash.stat.mtime_ns,
                            mode: local_hash.stat.mode,
                            hash,
                        }),
                    });
                });
                self.entry_done();
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Starts writing the file at `path`: returns a handle to feed the
    /// content to, then [`FileWrite::commit`]. Dropping the handle without
    /// committing removes the temporary file.
    pub fn begin_file(
        &self,
        path: &RelPath,
        spec: &FileSpec,
    ) -> Result<FileWrite<'_>, RestoreError> {
        if path.repository_component().is_some() {
            return Err(RestoreError::RepositoryDirectory { path: path.clone() });
        }
        let full = self.prepare_parent(path)?;
        if let Some(local) = Self::local_stat(&full)?
            && local.kind == LocalKind::Dir
        {
            return Err(RestoreError::TypeConflict {
                path: path.clone(),
                local: "directory",
            });
        }
        let parent = full.parent().unwrap_or(&self.dest).to_path_buf();
        let prefix = format!("{TEMP_PREFIX}{}", self.session);
        let tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(TEMP_SUFFIX)
            .rand_bytes(TEMP_RANDOM - SESSION_LEN)
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(&parent)
            .map_err(io_err("create a temporary file in", &parent))?;
        Ok(FileWrite {
            writer: self,
            path: path.clone(),
            full,
            tmp: Some(tmp),
            spec: spec.clone(),
            hasher: blake3::Hasher::new(),
            written: 0,
        })
    }

    /// Writes a whole file from a blocking reader (convenience over
    /// [`begin_file`](Self::begin_file)).
    pub fn write_file(
        &self,
        path: &RelPath,
        spec: &FileSpec,
        mut content: impl Read,
    ) -> Result<(), RestoreError> {
        let mut w = self.begin_file(path, spec)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match content.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("read content for", &w.full)(e)),
            };
            w.write_chunk(&buf[..n])?;
        }
        w.commit()
    }

    /// Creates the directory `path` (and its parents); it gets the
    /// permission bits of `mode` in [`finish`](Self::finish).
    pub fn create_dir(&self, path: &RelPath, mode: u32) -> Result<(), RestoreError> {
        if self.skip_repository(path) {
            return Ok(());
        }
        let full = self.prepare_parent(path)?;
        match Self::local_stat(&full)? {
            Some(s) if s.kind == LocalKind::Dir => {}
            Some(_) => {
                return Err(RestoreError::TypeConflict {
                    path: path.clone(),
                    local: "file or symlink",
                });
            }
            None => self.make_dir(path, path, &full)?,
        }
        self.dirs.lock().entry(path.clone()).or_default().mode = Some(mode & PERMISSION_BITS);
        self.entry_done();
        Ok(())
    }

    /// Creates the symlink `path` pointing at `target` (never followed).
    /// An empty target, one with a NUL byte or one longer than Linux
    /// accepts is refused naming the path.
    pub fn create_symlink(&self, path: &RelPath, target: &str) -> Result<(), RestoreError> {
        if self.skip_repository(path) {
            return Ok(());
        }
        let invalid = |reason: String| RestoreError::InvalidSymlink {
            path: path.clone(),
            reason,
        };
        if target.is_empty() {
            return Err(invalid("its target is empty".into()));
        }
        if target.contains('\0') {
            return Err(invalid("its target contains a NUL byte".into()));
        }
        if target.len() > MAX_SYMLINK_TARGET {
            return Err(invalid(format!(
                "its target is {} bytes long (the limit is {MAX_SYMLINK_TARGET})",
                target.len()
            )));
        }
        let full = self.prepare_parent(path)?;
        match Self::local_stat(&full)? {
            Some(s) if s.kind == LocalKind::Dir => {
                return Err(RestoreError::TypeConflict {
                    path: path.clone(),
                    local: "directory",
                });
            }
            Some(s)
                if s.kind == LocalKind::Symlink
                    && fs::read_link(&full).ok().as_deref() == Some(Path::new(target)) =>
            {
                self.record_symlink(path, target);
                return Ok(());
            }
            _ => {}
        }
        let parent = full.parent().unwrap_or(&self.dest);
        let prefix = format!("{TEMP_PREFIX}{}", self.session);
        let tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(TEMP_SUFFIX)
            .rand_bytes(TEMP_RANDOM - SESSION_LEN)
            .make_in(parent, |p| std::os::unix::fs::symlink(target, p))
            .map_err(io_err("create a temporary symlink in", parent))?;
        tmp.persist(&full)
            .map_err(|e| io_err("rename into place", &full)(e.error))?;
        self.record_symlink(path, target);
        Ok(())
    }

    fn record_symlink(&self, path: &RelPath, target: &str) {
        self.entry_done();
        self.with_report(|r| {
            r.entries.push(Entry {
                path: path.clone(),
                meta: Meta::Symlink {
                    target: target.to_owned(),
                },
            })
        });
    }

    /// Sets every directory's mode (deepest first, so a directory is
    /// closed only after everything inside it is written) and returns the
    /// report, with entries in path order. Directories the restore created
    /// without a recorded mode get [`DEFAULT_DIR_MODE`]; existing ones
    /// without a recorded mode are left as they are.
    pub fn finish(self, head: Option<String>) -> Result<RestoreReport, RestoreError> {
        let dirs = std::mem::take(&mut *self.dirs.lock());
        let mut dir_entries = Vec::with_capacity(dirs.len());
        for (path, state) in dirs.into_iter().rev() {
            let mode = match state {
                DirState {
                    mode: Some(mode), ..
                } => mode,
                DirState {
                    mode: None,
                    created: true,
                } => DEFAULT_DIR_MODE,
                DirState {
                    mode: None,
                    created: false,
                } => continue,
            };
            let full = path.to_path(&self.dest);
            let actual = set_dir_mode(&full, mode & PERMISSION_BITS)?;
            dir_entries.push(Entry {
                path,
                meta: Meta::dir(actual),
            });
        }
        let mut report = self.report.into_inner();
        report.entries.extend(dir_entries);
        report.entries.sort_by(|a, b| a.path.cmp(&b.path));
        report.skipped.sort();
        report.head = head;
        Ok(report)
    }
}

/// Sets the permission bits of the directory `full` without following a
/// symlink put in its place; returns the mode it then has.
fn set_dir_mode(full: &Path, mode: u32) -> Result<u32, RestoreError> {
    let dir = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(full)
        .map_err(io_err("open directory", full))?;
    dir.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err("set mode of", full))?;
    let meta = dir.metadata().map_err(io_err("stat", full))?;
    Ok(LocalStat::from_metadata(&meta).mode)
}

/// A file being restored; see [`RestoreWriter::begin_file`].
#[derive(Debug)]
pub struct FileWrite<'a> {
    writer: &'a RestoreWriter,
    path: RelPath,
    full: PathBuf,
    /// The temporary file (removed when dropped uncommitted).
    tmp: Option<tempfile::NamedTempFile>,
    spec: FileSpec,
    hasher: blake3::Hasher,
    written: u64,
}

impl FileWrite<'_> {
    /// Appends content. Fails as soon as more bytes arrive than expected.
    pub fn write_chunk(&mut self, bytes: &[u8]) -> Result<(), RestoreError> {
        self.written += bytes.len() as u64;
        if self.spec.size.is_some_and(|s| self.written > s) {
            return Err(RestoreError::ContentMismatch {
                path: self.path.clone(),
                what: "size",
            });
        }
        self.hasher.update(bytes);
        self.writer
            .progress
            .bytes_done
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        match self.tmp.as_mut() {
            Some(f) => {
                let res = f.as_file_mut().write_all(bytes);
                res.map_err(io_err("write", f.path()))
            }
            None => Err(io_err("write", &self.full)(io::Error::other(
                "already committed",
            ))),
        }
    }

    /// Verifies size and hash, sets mode and mtime, and renames the file
    /// into place.
    pub fn commit(mut self) -> Result<(), RestoreError> {
        let hash = ContentHash::from(self.hasher.finalize());
        if self.spec.size.is_some_and(|s| s != self.written) {
            return Err(RestoreError::ContentMismatch {
                path: self.path.clone(),
                what: "size",
            });
        }
        if self.spec.hash.is_some_and(|h| h != hash) {
            return Err(RestoreError::ContentMismatch {
                path: self.path.clone(),
                what: "hash",
            });
        }
        let Some(tmp) = self.tmp.take() else {
            return Err(io_err("commit", &self.full)(io::Error::other(
                "already committed",
            )));
        };
        let mode = self.spec.mode & PERMISSION_BITS;
        let file = tmp.as_file();
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err("set mode of", tmp.path()))?;
        if let Some(ns) = self.spec.mtime_ns {
            let t = filetime::FileTime::from_unix_time(
                ns.div_euclid(1_000_000_000),
                ns.rem_euclid(1_000_000_000) as u32,
            );
            filetime::set_file_handle_times(file, None, Some(t))
                .map_err(io_err("set mtime of", tmp.path()))?;
        }
        let meta = file.metadata().map_err(io_err("stat", tmp.path()))?;
        tmp.persist(&self.full)
            .map_err(|e| io_err("rename into place", &self.full)(e.error))?;
        let stat = LocalStat::from_metadata(&meta);
        let entry = Entry {
            path: self.path.clone(),
            meta: Meta::File(FileMeta {
                size: self.written,
                mtime_ns: stat.mtime_ns,
                mode: stat.mode,
                hash,
            }),
        };
        let written = self.written;
        self.writer.entry_done();
        self.writer.with_report(|r| {
            r.files_written += 1;
            r.bytes_written += written;
            r.entries.push(entry);
        });
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Restoring a copy beside the original (`tether restore --as-copy`, the
// history page's "restore a copy").

/// One path [`restore_copies`] brought back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredCopy {
    /// The path as the stored state holds it.
    pub original: RelPath,
    /// Where its copy now is, beside it: `name (tether YYYY-MM-DD HH:MM).ext`.
    pub copy: RelPath,
}

/// What [`restore_copies`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiesReport {
    /// The state the copies come from (snapshot or commit id), if known.
    pub head: Option<String>,
    /// The time in the copies' names: the checkpoint's, or now when the
    /// backend does not tell.
    pub time: std::time::SystemTime,
    /// One per selected path, in the order selected.
    pub copies: Vec<RestoredCopy>,
    /// Content bytes written.
    pub bytes_written: u64,
}

/// `YYYY-MM-DD HH:MM` in UTC; a time outside years 0..=9999 as `@<seconds>`.
fn stamp(t: std::time::SystemTime) -> String {
    let secs = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    };
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(d) if d.year() >= 0 => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute()
        ),
        _ => format!("@{secs}"),
    }
}

/// The name of the `n`th (from 1) copy of `name` made from a state of time
/// `time`: `a (tether 2026-12-01 05:40).ipynb`, then
/// `a (tether 2026-12-01 05:40, 2).ipynb`. The extension is what follows
/// the last dot, unless the name starts with its only dot (`.bashrc`).
pub fn copy_name(name: &str, time: std::time::SystemTime, n: u32) -> String {
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    };
    let count = if n > 1 {
        format!(", {n}")
    } else {
        String::new()
    };
    format!("{stem} (tether {}{count}){ext}", stamp(time))
}

/// How many numbered names [`restore_copies`] tries before giving up.
const MAX_COPY_NAMES: u32 = 1000;

/// Restores the paths `options.paths` select (files, symlinks or folders)
/// of the newest state (or `options.at`) into `dir`, each under a new name
/// beside its original ([`copy_name`]); nothing that exists is ever
/// replaced or changed.
///
/// Data flow: the selected paths are restored by the backend (verified as
/// every restore is) into a private directory inside `dir` whose name the
/// sync engine ignores ([`TEMP_PREFIX`]…[`TEMP_SUFFIX`]); each is then
/// given its final name in one step that fails rather than replace
/// anything (`link(2)` for files and symlinks; for a folder an empty
/// folder claims the name, then the restored one is renamed over it), so
/// the copy appears whole or not at all. The private directory is removed
/// at the end, also on failure. Missing parents of a copy are created; a
/// parent that is a symlink is refused.
pub async fn restore_copies(
    backend: &dyn crate::Backend,
    dir: &Path,
    options: &RestoreOptions,
) -> Result<CopiesReport, crate::BackendError> {
    if options.paths.is_empty() {
        return Err(crate::BackendError::Config(
            "restoring a copy needs the paths to restore".into(),
        ));
    }
    // A selected path below another selected one comes with it.
    let mut selected: Vec<RelPath> = Vec::new();
    for p in &options.paths {
        if !options.paths.iter().any(|q| q != p && p.starts_with(q)) && !selected.contains(p) {
            selected.push(p.clone());
        }
    }
    let time = match &options.at {
        None => backend.head().await.ok().flatten().and_then(|h| h.time),
        Some(at) => backend
            .history(10_000)
            .await
            .ok()
            .and_then(|h| h.into_iter().find(|e| &e.id == at))
            .and_then(|e| e.time),
    }
    .unwrap_or_else(std::time::SystemTime::now);

    let root = dir.to_path_buf();
    let staging = tokio::task::spawn_blocking(move || {
        fs::create_dir_all(&root).map_err(io_err("creating", &root))?;
        tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .suffix(TEMP_SUFFIX)
            .rand_bytes(TEMP_RANDOM)
            .tempdir_in(&root)
            .map_err(io_err("creating a staging directory in", &root))
    })
    .await
    .map_err(|e| crate::BackendError::Config(format!("staging task failed: {e}")))??;
    let report = backend
        .restore(
            staging.path(),
            &RestoreOptions {
                existing: ExistingPolicy::Fail,
                paths: selected.clone(),
                ..options.clone()
            },
        )
        .await?;
    let root = dir.to_path_buf();
    let copies = tokio::task::spawn_blocking(move || -> Result<_, RestoreError> {
        let mut copies = Vec::new();
        for original in selected {
            let from = original.to_path(staging.path());
            if fs::symlink_metadata(&from).is_err() {
                // Skipped by the writer (a `.git` directory).
                continue;
            }
            let copy = place_copy(&root, &original, &from, time)?;
            copies.push(RestoredCopy { original, copy });
        }
        staging
            .close()
            .map_err(io_err("removing the staging directory in", &root))?;
        Ok(copies)
    })
    .await
    .map_err(|e| crate::BackendError::Config(format!("copy task failed: {e}")))??;
    Ok(CopiesReport {
        head: report.head,
        time,
        copies,
        bytes_written: report.bytes_written,
    })
}

/// Gives the restored `from` its copy name beside `original` under `root`.
fn place_copy(
    root: &Path,
    original: &RelPath,
    from: &Path,
    time: std::time::SystemTime,
) -> Result<RelPath, RestoreError> {
    // The parent must be plain directories all the way (created if missing).
    if let Some(parent) = original.parent() {
        let mut chain: Vec<RelPath> = parent.ancestors().collect();
        chain.reverse();
        for a in chain {
            let full = a.to_path(root);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => {}
                Ok(m) => {
                    return Err(RestoreError::ThroughNonDirectory {
                        path: original.clone(),
                        parent: a,
                        what: if m.file_type().is_symlink() {
                            "a symlink"
                        } else {
                            "a file"
                        },
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&full).map_err(io_err("creating", &full))?;
                }
                Err(e) => return Err(io_err("reading", &full)(e)),
            }
        }
    }
    let is_dir = fs::symlink_metadata(from)
        .map_err(io_err("reading", from))?
        .is_dir();
    for n in 1..=MAX_COPY_NAMES {
        let name = copy_name(original.file_name(), time, n);
        let copy = match original.parent() {
            Some(p) => p.join(&name),
            None => RelPath::new(name),
        }
        .map_err(|reason| RestoreError::HostilePath {
            name: original.to_string(),
            object: "the copy's name".into(),
            reason,
        })?;
        let to = copy.to_path(root);
        let claimed = if is_dir {
            fs::create_dir(&to)
        } else {
            // link(2) never replaces: the name is taken whole or not at all.
            fs::hard_link(from, &to)
        };
        match claimed {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("creating", &to)(e)),
        }
        if is_dir {
            // Replaces only the empty folder just created; a folder that
            // is no longer empty makes the rename fail, not replace it.
            fs::rename(from, &to).map_err(io_err("renaming into", &to))?;
        }
        return Ok(copy);
    }
    Err(RestoreError::Io {
        op: "finding a free name for the copy of",
        path: original.to_path(root),
        source: io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{MAX_COPY_NAMES} copies exist"),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn spec_of(content: &[u8]) -> FileSpec {
        FileSpec {
            mode: 0o640,
            mtime_ns: Some(1_600_000_000_123_456_789),
            size: Some(content.len() as u64),
            hash: Some(ContentHash::of(content)),
        }
    }

    #[test]
    fn plan_refuses_hostile_listings() {
        use PlanKind::*;
        for bad in ["../x", "/etc/x", "a/../../x", "a\0b", "a\\b"] {
            let err = RestorePlan::validate([(bad, File)], "manifest m").unwrap_err();
            assert!(
                matches!(err, RestoreError::HostilePath { .. }),
                "{bad:?}: {err}"
            );
            assert!(err.to_string().contains("manifest m"));
        }
        let err = RestorePlan::validate([("l", Symlink), ("l/x", File)], "m").unwrap_err();
        assert!(
            matches!(err, RestoreError::ThroughNonDirectory { .. }),
            "{err}"
        );
        let err = RestorePlan::validate([("f", File), ("f/x", File)], "m").unwrap_err();
        assert!(
            matches!(err, RestoreError::ThroughNonDirectory { .. }),
            "{err}"
        );
        let err = RestorePlan::validate([("a", File), ("a", File)], "m").unwrap_err();
        assert!(matches!(err, RestoreError::Duplicate { .. }), "{err}");
        let ok = RestorePlan::validate([("d", Dir), ("d/x", File), ("l", Symlink)], "m").unwrap();
        assert_eq!(ok.paths.len(), 3);
    }

    #[test]
    fn writes_files_with_mode_and_mtime_and_reports_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("dest");
        let w = RestoreWriter::open(&dest, ExistingPolicy::Fail).unwrap();
        w.write_file(&p("a/b/c.txt"), &spec_of(b"hello"), &b"hello"[..])
            .unwrap();
        w.create_symlink(&p("a/link"), "b/c.txt").unwrap();
        w.create_dir(&p("empty"), 0o755).unwrap();
        let report = w.finish(Some("h1".into())).unwrap();
        let full = dest.join("a/b/c.txt");
        assert_eq!(fs::read(&full).unwrap(), b"hello");
        let m = fs::metadata(&full).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o640);
        assert_eq!(
            LocalStat::from_metadata(&m).mtime_ns,
            1_600_000_000_123_456_789
        );
        assert_eq!(
            fs::read_link(dest.join("a/link")).unwrap(),
            Path::new("b/c.txt")
        );
        assert!(dest.join("empty").is_dir());
        assert_eq!(report.files_written, 1);
        assert_eq!(report.head.as_deref(), Some("h1"));
        let paths: Vec<_> = report.entries.iter().map(|e| e.path.as_str()).collect();
        // Directories the restore created are reported too (with their modes).
        assert_eq!(paths, ["a", "a/b", "a/b/c.txt", "a/link", "empty"]);
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dest.join("a/b")).unwrap().count(), 1);
    }

    #[test]
    fn progress_counts_entries_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let progress = Arc::new(RestoreProgress::default());
        let options = RestoreOptions {
            progress: Some(Arc::clone(&progress)),
            ..RestoreOptions::default()
        };
        let w = RestoreWriter::open(dir.path(), &options).unwrap();
        w.expect_total(3, 5);
        assert_eq!((progress.entries_total(), progress.bytes_total()), (3, 5));
        w.create_dir(&p("d"), 0o755).unwrap();
        w.write_file(&p("d/f"), &spec_of(b"hello"), &b"hello"[..])
            .unwrap();
        w.create_symlink(&p("l"), "d/f").unwrap();
        assert_eq!((progress.entries_done(), progress.bytes_done()), (3, 5));
    }

    #[test]
    fn mismatching_content_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let w = RestoreWriter::open(dir.path(), ExistingPolicy::Fail).unwrap();
        let err = w
            .write_file(&p("f"), &spec_of(b"hello"), &b"hellx"[..])
            .unwrap_err();
        assert!(
            matches!(err, RestoreError::ContentMismatch { what: "hash", .. }),
            "{err}"
        );
        let err = w
            .write_file(&p("g"), &spec_of(b"hello"), &b"hello!"[..])
            .unwrap_err();
        assert!(
            matches!(err, RestoreError::ContentMismatch { what: "size", .. }),
            "{err}"
        );
        let err = w
            .write_file(&p("h"), &spec_of(b"hello"), &b"hell"[..])
            .unwrap_err();
        assert!(
            matches!(err, RestoreError::ContentMismatch { what: "size", .. }),
            "{err}"
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temp files left"
        );
    }

    #[test]
    fn never_writes_through_a_local_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        let dest = dir.path().join("dest");
        fs::create_dir_all(&outside).unwrap();
        fs::create_dir_all(&dest).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("l")).unwrap();
        let w = RestoreWriter::open(&dest, ExistingPolicy::Overwrite).unwrap();
        let err = w
            .write_file(&p("l/x"), &spec_of(b"x"), &b"x"[..])
            .unwrap_err();
        assert!(
            matches!(err, RestoreError::ThroughNonDirectory { .. }),
            "{err}"
        );
        assert!(w.create_dir(&p("l/d"), 0o755).is_err());
        assert!(w.create_symlink(&p("l/s"), "/etc").is_err());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn existing_policies() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"local").unwrap();
        let err = RestoreWriter::open(dir.path(), ExistingPolicy::Fail).unwrap_err();
        assert!(matches!(err, RestoreError::DestinationNotEmpty(_)));

        // KeepNewer keeps a local file newer than the remote one...
        let w = RestoreWriter::open(dir.path(), ExistingPolicy::KeepNewer).unwrap();
        let mut old = spec_of(b"remote");
        old.mtime_ns = Some(0);
        assert!(!w.should_write(&p("f"), &old).unwrap());
        assert_eq!(w.finish(None).unwrap().kept_local, [p("f")]);
        // ...and Overwrite replaces it.
        let w = RestoreWriter::open(dir.path(), ExistingPolicy::Overwrite).unwrap();
        assert!(w.should_write(&p("f"), &old).unwrap());
        w.write_file(&p("f"), &old, &b"remote"[..]).unwrap();
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"remote");
        // An identical local file is not rewritten.
        let w = RestoreWriter::open(dir.path(), ExistingPolicy::Overwrite).unwrap();
        let mut same = spec_of(b"remote");
        same.mode = 0o640;
        assert!(!w.should_write(&p("f"), &same).unwrap());
        let r = w.finish(None).unwrap();
        assert_eq!((r.unchanged, r.files_written), (1, 0));
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn special_mode_bits_are_never_set() {
        let dir = tempfile::tempdir().unwrap();
        let w = RestoreWriter::open(dir.path(), ExistingPolicy::Fail).unwrap();
        let mut spec = spec_of(b"x");
        spec.mode = 0o7755;
        w.write_file(&p("suid"), &spec, &b"x"[..]).unwrap();
        spec.mode = 0o2777;
        w.write_file(&p("sgid"), &spec, &b"x"[..]).unwrap();
        w.create_dir(&p("sticky"), 0o1777).unwrap();
        w.create_dir(&p("setgid-dir"), 0o2755).unwrap();
        let report = w.finish(None).unwrap();
        assert_eq!(mode_of(&dir.path().join("suid")), 0o755);
        assert_eq!(mode_of(&dir.path().join("sgid")), 0o777);
        assert_eq!(mode_of(&dir.path().join("sticky")), 0o777);
        assert_eq!(mode_of(&dir.path().join("setgid-dir")), 0o755);
        for e in &report.entries {
            let mode = match &e.meta {
                Meta::File(f) => f.mode,
                Meta::Dir { mode } => *mode,
                Meta::Symlink { .. } => 0,
            };
            assert_eq!(mode & !0o777, 0, "{e:?}");
        }
    }

    #[test]
    fn directory_modes_are_applied_last_and_nothing_starts_wider() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("dest");
        let w = RestoreWriter::open(&dest, ExistingPolicy::Fail).unwrap();
        w.create_dir(&p("ro"), 0o500).unwrap();
        w.create_dir(&p("ro/open"), 0o777).unwrap();
        let mut spec = spec_of(b"k");
        spec.mode = 0o644;
        // While a file is being written its directory is 0700 and the
        // temporary file 0600, whatever is recorded.
        let mut f = w.begin_file(&p("ro/open/key"), &spec).unwrap();
        f.write_chunk(b"k").unwrap();
        assert_eq!(mode_of(&dest.join("ro")), 0o700);
        assert_eq!(mode_of(&dest.join("ro/open")), 0o700);
        let tmp: Vec<_> = fs::read_dir(dest.join("ro/open"))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(tmp.len(), 1);
        assert_eq!(mode_of(&tmp[0].path()), 0o600);
        f.commit().unwrap();
        spec.mode = 0o600;
        w.write_file(&p("implicit/deeper/secret"), &spec, &b"k"[..])
            .unwrap();
        let report = w.finish(None).unwrap();
        assert_eq!(mode_of(&dest.join("ro")), 0o500);
        assert_eq!(mode_of(&dest.join("ro/open")), 0o777);
        assert_eq!(mode_of(&dest.join("ro/open/key")), 0o644);
        assert_eq!(mode_of(&dest.join("implicit/deeper/secret")), 0o600);
        // Directories without a recorded mode get the default.
        assert_eq!(mode_of(&dest.join("implicit")), 0o755);
        assert_eq!(mode_of(&dest.join("implicit/deeper")), 0o755);
        let ro = report.entries.iter().find(|e| e.path == p("ro")).unwrap();
        assert_eq!(ro.meta, Meta::Dir { mode: 0o500 });
        fs::set_permissions(dest.join("ro"), fs::Permissions::from_mode(0o700)).unwrap();
    }

    #[test]
    fn repository_directories_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let w = RestoreWriter::open(dir.path(), ExistingPolicy::Fail).unwrap();
        let spec = spec_of(b"x");
        for bad in [
            ".git/hooks/pre-commit",
            ".GIT/config",
            "sub/.git",
            "a/git~1/x",
        ] {
            assert!(!w.should_write(&p(bad), &spec).unwrap(), "{bad}");
            assert!(matches!(
                w.write_file(&p(bad), &spec, &b"x"[..]),
                Err(RestoreError::RepositoryDirectory { .. })
            ));
        }
        w.create_dir(&p(".git"), 0o755).unwrap();
        w.create_dir(&p("sub/.Git/hooks"), 0o755).unwrap();
        w.create_symlink(&p(".git/hooks/post-checkout"), "/bin/sh")
            .unwrap();
        assert!(w.should_write(&p("a/.gitignore"), &spec).unwrap());
        let report = w.finish(None).unwrap();
        assert_eq!(report.skipped.len(), 7, "{:?}", report.skipped);
        // Nothing was written (`a` was created for the .gitignore check only).
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["a"]);
        assert_eq!(fs::read_dir(dir.path().join("a")).unwrap().count(), 0);
    }

    #[test]
    fn unusable_symlink_targets_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let w = RestoreWriter::open(dir.path(), ExistingPolicy::Fail).unwrap();
        let long = "x".repeat(5000);
        for (target, words) in [
            ("", "empty"),
            ("a\0b", "NUL"),
            (long.as_str(), "5000 bytes"),
        ] {
            let err = w.create_symlink(&p("d/link"), target).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("d/link") && msg.contains(words), "{msg}");
            assert!(!msg.contains(".tmp"), "{msg}");
        }
    }

    #[test]
    fn leftover_temporary_files_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path();
        fs::create_dir(dest.join("sub")).unwrap();
        let leftovers = [
            ".tether-restore-0123456789abcdef.tmp",
            "sub/.tether-restore-AbCdEf0123456789.tmp",
        ];
        let lookalikes = [
            ".tether-restore-0123456789abcde.tmp",
            ".tether-restore-0123456789abcdef0.tmp",
            ".tether-restore-0123456789abcdef.tmp.keep",
            "x.tether-restore-0123456789abcdef.tmp",
            ".tether-restore-0123456789abcd-f.tmp",
            ".tether-restore-0123456789abcdef.TMP",
            "sub/tether-restore-0123456789abcdef.tmp",
            "sub/.tether-restore-0123456789abcdef.tmp/inside",
        ];
        for f in leftovers.iter().chain(&lookalikes) {
            let full = dest.join(f);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(full, b"x").unwrap();
        }
        std::os::unix::fs::symlink("/etc", dest.join(".tether-restore-SYMLINK000000000.tmp"))
            .unwrap();
        let w = RestoreWriter::open(dest, ExistingPolicy::Overwrite).unwrap();
        w.write_file(&p("sub/f"), &spec_of(b"f"), &b"f"[..])
            .unwrap();
        w.finish(None).unwrap();
        for f in leftovers {
            assert!(!dest.join(f).exists(), "{f} left");
        }
        assert!(fs::symlink_metadata(dest.join(".tether-restore-SYMLINK000000000.tmp")).is_err());
        assert!(Path::new("/etc").is_dir());
        for f in lookalikes {
            assert!(dest.join(f).exists(), "{f} removed");
        }
        // A destination holding only leftovers counts as empty.
        let only = dir.path().join("only");
        fs::create_dir(&only).unwrap();
        fs::write(only.join(".tether-restore-0000000000000000.tmp"), b"x").unwrap();
        RestoreWriter::open(&only, ExistingPolicy::Fail).unwrap();
        assert_eq!(fs::read_dir(&only).unwrap().count(), 0);
    }

    #[test]
    fn copy_names_keep_the_extension_and_count_up() {
        use std::time::{Duration, UNIX_EPOCH};
        let t = UNIX_EPOCH + Duration::from_secs(1_796_103_600); // 2026-12-01 05:40 UTC
        assert_eq!(
            copy_name("analysis.ipynb", t, 1),
            "analysis (tether 2026-12-01 05:40).ipynb"
        );
        assert_eq!(
            copy_name("a.tar.gz", t, 2),
            "a.tar (tether 2026-12-01 05:40, 2).gz"
        );
        assert_eq!(
            copy_name(".bashrc", t, 1),
            ".bashrc (tether 2026-12-01 05:40)"
        );
        assert_eq!(copy_name("data", t, 1), "data (tether 2026-12-01 05:40)");
        // Any time a remote reports gives a name, never a panic.
        assert_eq!(
            copy_name("x", UNIX_EPOCH + Duration::from_secs(u64::MAX / 4), 1),
            format!("x (tether @{})", u64::MAX / 4)
        );
        assert!(copy_name("x", UNIX_EPOCH - Duration::from_secs(5), 1).contains("1969-12-31"));
    }
}
