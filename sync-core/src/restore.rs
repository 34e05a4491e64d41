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
//! A non-empty destination follows an explicit [`ExistingPolicy`].

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::entry::{ContentHash, Entry, FileMeta, LocalKind, LocalStat, Meta};
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
    /// Permission bits to set.
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

/// Writes restored entries into a destination directory. Methods take `&self`
/// so a backend can write several files in parallel (share it in an `Arc`).
#[derive(Debug)]
pub struct RestoreWriter {
    dest: PathBuf,
    policy: ExistingPolicy,
    progress: Arc<RestoreProgress>,
    report: Mutex<RestoreReport>,
}

impl RestoreWriter {
    /// Prepares `dest` (created if missing). With [`ExistingPolicy::Fail`] a
    /// non-empty `dest` is refused here, before anything is written.
    /// `settings` is an [`ExistingPolicy`] or `&RestoreOptions` (whose
    /// progress counters the writer then updates).
    pub fn open(dest: &Path, settings: impl Into<WriterSettings>) -> Result<Self, RestoreError> {
        let WriterSettings { policy, progress } = settings.into();
        fs::create_dir_all(dest).map_err(io_err("create", dest))?;
        let meta = fs::symlink_metadata(dest).map_err(io_err("stat", dest))?;
        if !meta.is_dir() {
            return Err(RestoreError::Io {
                op: "open",
                path: dest.to_path_buf(),
                source: io::Error::other("not a directory"),
            });
        }
        if policy == ExistingPolicy::Fail
            && fs::read_dir(dest)
                .map_err(io_err("list", dest))?
                .next()
                .is_some()
        {
            return Err(RestoreError::DestinationNotEmpty(dest.to_path_buf()));
        }
        Ok(RestoreWriter {
            dest: dest.to_path_buf(),
            policy,
            progress: progress.unwrap_or_default(),
            report: Mutex::new(RestoreReport::default()),
        })
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
        let mut guard = self
            .report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Makes sure every ancestor of `path` is a real directory under `dest`,
    /// creating missing ones, refusing symlinks and files.
    fn prepare_parent(&self, path: &RelPath) -> Result<PathBuf, RestoreError> {
        for anc in path.ancestors() {
            let full = anc.to_path(&self.dest);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => {}
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
                    match fs::create_dir(&full) {
                        Ok(()) => {}
                        // Created concurrently by another writer task.
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(io_err("create directory", &full)(e)),
                    }
                    // Re-check: it must be a directory we can enter safely.
                    let m = fs::symlink_metadata(&full).map_err(io_err("stat", &full))?;
                    if !m.is_dir() {
                        return Err(RestoreError::ThroughNonDirectory {
                            path: path.clone(),
                            parent: anc,
                            what: "not a directory",
                        });
                    }
                }
                Err(e) => return Err(io_err("stat", &full)(e)),
            }
        }
        Ok(path.to_path(&self.dest))
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
    /// keeps a newer local file.
    pub fn should_write(&self, path: &RelPath, spec: &FileSpec) -> Result<bool, RestoreError> {
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
            && local.mode == spec.mode
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
        let (tmp, file) = create_temp(&parent)?;
        Ok(FileWrite {
            writer: self,
            path: path.clone(),
            full,
            tmp: Some(tmp),
            file: Some(file),
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

    /// Creates the directory `path` (and its parents).
    pub fn create_dir(&self, path: &RelPath) -> Result<(), RestoreError> {
        let full = self.prepare_parent(path)?;
        match Self::local_stat(&full)? {
            Some(s) if s.kind == LocalKind::Dir => {}
            Some(_) => {
                return Err(RestoreError::TypeConflict {
                    path: path.clone(),
                    local: "file or symlink",
                });
            }
            None => match fs::create_dir(&full) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("create directory", &full)(e)),
            },
        }
        self.with_report(|r| {
            r.entries.push(Entry {
                path: path.clone(),
                meta: Meta::Dir,
            })
        });
        self.entry_done();
        Ok(())
    }

    /// Creates the symlink `path` pointing at `target` (never followed).
    pub fn create_symlink(&self, path: &RelPath, target: &str) -> Result<(), RestoreError> {
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
        let tmp = parent.join(temp_name());
        std::os::unix::fs::symlink(target, &tmp).map_err(io_err("create symlink", &tmp))?;
        if let Err(e) = fs::rename(&tmp, &full) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("rename into place", &full)(e));
        }
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

    /// The report, with entries in path order.
    pub fn finish(self, head: Option<String>) -> RestoreReport {
        let mut report = self
            .report
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        report.entries.sort_by(|a, b| a.path.cmp(&b.path));
        report.head = head;
        report
    }
}

fn temp_name() -> String {
    format!(".tether-restore-{:016x}.tmp", rand::random::<u64>())
}

fn create_temp(parent: &Path) -> Result<(PathBuf, File), RestoreError> {
    loop {
        let tmp = parent.join(temp_name());
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("create temporary file", &tmp)(e)),
        }
    }
}

/// A file being restored; see [`RestoreWriter::begin_file`].
#[derive(Debug)]
pub struct FileWrite<'a> {
    writer: &'a RestoreWriter,
    path: RelPath,
    full: PathBuf,
    tmp: Option<PathBuf>,
    file: Option<File>,
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
        let tmp = self.tmp.as_deref().unwrap_or(&self.full);
        match self.file.as_mut() {
            Some(f) => f.write_all(bytes).map_err(io_err("write", tmp)),
            None => Err(io_err("write", tmp)(io::Error::other("already committed"))),
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
        let (Some(file), Some(tmp)) = (self.file.take(), self.tmp.clone()) else {
            return Err(io_err("commit", &self.full)(io::Error::other(
                "already committed",
            )));
        };
        let mode = self.spec.mode & 0o7777;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err("set mode of", &tmp))?;
        if let Some(ns) = self.spec.mtime_ns {
            let t = filetime::FileTime::from_unix_time(
                ns.div_euclid(1_000_000_000),
                ns.rem_euclid(1_000_000_000) as u32,
            );
            filetime::set_file_handle_times(&file, None, Some(t))
                .map_err(io_err("set mtime of", &tmp))?;
        }
        let meta = file.metadata().map_err(io_err("stat", &tmp))?;
        drop(file);
        fs::rename(&tmp, &self.full).map_err(io_err("rename into place", &self.full))?;
        self.tmp = None;
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

impl Drop for FileWrite<'_> {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
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
        w.create_dir(&p("empty")).unwrap();
        let report = w.finish(Some("h1".into()));
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
        assert_eq!(paths, ["a/b/c.txt", "a/link", "empty"]);
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
        w.create_dir(&p("d")).unwrap();
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
        assert!(w.create_dir(&p("l/d")).is_err());
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
        assert_eq!(w.finish(None).kept_local, [p("f")]);
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
        let r = w.finish(None);
        assert_eq!((r.unchanged, r.files_written), (1, 0));
    }
}
