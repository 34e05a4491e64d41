//! [`Source`]: how backends read file contents from the synced directory.
//!
//! A backend never opens files itself. It asks the `Source` for a reader for
//! one checkpoint entry, and the reader hashes what it hands out. At the end
//! of the file it checks that the bytes match the checkpoint's size and hash;
//! if the file changed since the checkpoint was built, the last read fails
//! with [`SourceChangedError`] (mapped to
//! [`BackendError::SourceChanged`]), so a
//! backend can never record a hash for bytes other than those it sent.
//!
//! Files are opened with `O_NOFOLLOW`: a file replaced by a symlink is
//! refused, never followed.
//!
//! **Settled copies.** A file that keeps changing during every push (a log
//! appended to several times a second) would never verify. The engine then
//! takes a *settled copy* (`copy_settled`): the file is copied into the
//! state directory while being hashed, and the copy counts only if the
//! file's size and mtime were the same before and after (the same test
//! change detection uses for a consistent hash). `Source::use_copy` makes
//! readers serve that copy for the path, so the bytes pushed are one
//! consistent read of the file, verified like any other.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;

use crate::backend::BackendError;
use crate::entry::{FileMeta, LocalKind, LocalStat};
use crate::path::RelPath;

/// Default size of the chunks [`SourceReader::next_chunk`] returns.
pub const DEFAULT_CHUNK: usize = 1 << 20;

/// Carried inside an [`io::Error`] when a file no longer matches its
/// checkpoint entry.
#[derive(Debug, thiserror::Error)]
#[error("{path} changed after its checkpoint was built")]
pub struct SourceChangedError {
    /// The file that changed.
    pub path: RelPath,
}

/// The synced directory, as backends see it.
#[derive(Debug, Clone)]
pub struct Source {
    root: PathBuf,
    /// Settled copies served instead of the live file (shared by clones).
    copies: Arc<RwLock<HashMap<RelPath, PathBuf>>>,
}

impl Source {
    /// A source rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Source {
            root: root.into(),
            copies: Arc::default(),
        }
    }

    /// The synced directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Serves the settled copy `file` (see `copy_settled`) for `path`
    /// from now on, in this source and all its clones.
    pub(crate) fn use_copy(&self, path: RelPath, file: PathBuf) {
        self.copies.write().insert(path, file);
    }

    /// Stops serving a copy for `path`; returns the copy's file (the
    /// caller removes it).
    pub(crate) fn drop_copy(&self, path: &RelPath) -> Option<PathBuf> {
        self.copies.write().remove(path)
    }

    /// The paths served from settled copies.
    pub(crate) fn copied_paths(&self) -> Vec<RelPath> {
        self.copies.read().keys().cloned().collect()
    }

    fn open_file(&self, path: &RelPath, meta: &FileMeta) -> Result<File, BackendError> {
        let copy = self.copies.read().get(path).cloned();
        let full = copy.unwrap_or_else(|| path.to_path(&self.root));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&full)
            .map_err(|e| match e.raw_os_error() {
                // Gone, or replaced by a symlink or directory: it changed.
                Some(libc::ENOENT) | Some(libc::ELOOP) | Some(libc::EISDIR) => {
                    BackendError::SourceChanged { path: path.clone() }
                }
                _ => BackendError::SourceIo {
                    path: path.clone(),
                    source: e,
                },
            })?;
        let m = file.metadata().map_err(|e| BackendError::SourceIo {
            path: path.clone(),
            source: e,
        })?;
        if !m.is_file() || m.len() != meta.size {
            return Err(BackendError::SourceChanged { path: path.clone() });
        }
        Ok(file)
    }

    /// A blocking reader for `path` that verifies `meta` at end of file; use
    /// it from blocking code (for example inside `spawn_blocking`).
    pub fn open_blocking(
        &self,
        path: &RelPath,
        meta: &FileMeta,
    ) -> Result<BlockingSourceReader, BackendError> {
        Ok(BlockingSourceReader {
            file: self.open_file(path, meta)?,
            check: Verifier::new(path, meta),
        })
    }

    /// An async chunked reader for `path` that verifies `meta` at the end.
    pub async fn open(
        &self,
        path: &RelPath,
        meta: &FileMeta,
    ) -> Result<SourceReader, BackendError> {
        let this = self.clone();
        let (p, m) = (path.clone(), meta.clone());
        let inner = tokio::task::spawn_blocking(move || this.open_blocking(&p, &m))
            .await
            .map_err(|e| BackendError::SourceIo {
                path: path.clone(),
                source: io::Error::other(e),
            })??;
        Ok(SourceReader {
            inner: Some(inner),
            chunk: DEFAULT_CHUNK,
        })
    }

    /// Reads a whole (small) file, verified against `meta`.
    pub async fn read_all(&self, path: &RelPath, meta: &FileMeta) -> Result<Bytes, BackendError> {
        let this = self.clone();
        let (p, m) = (path.clone(), meta.clone());
        tokio::task::spawn_blocking(move || {
            let mut r = this.open_blocking(&p, &m)?;
            let mut buf = Vec::with_capacity(usize::try_from(m.size).unwrap_or(0));
            r.read_to_end(&mut buf)
                .map_err(|e| BackendError::from_source_io(&p, e))?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(|e| BackendError::SourceIo {
            path: path.clone(),
            source: io::Error::other(e),
        })?
    }
}

/// How often `copy_settled` tries before giving up on a file.
pub(crate) const COPY_ATTEMPTS: usize = 5;

/// Copies the regular file `full` to `dest` (created or replaced) while
/// hashing it, and returns the copy's entry: its size and hash, the
/// original's mtime and mode. The copy counts only when the original's
/// size and mtime did not move while it was read; otherwise it is tried
/// again, up to `COPY_ATTEMPTS` times. `Ok(None)`: the file is gone, is
/// not a regular file any more, or never held still. Blocking.
pub(crate) fn copy_settled(full: &Path, dest: &Path) -> io::Result<Option<FileMeta>> {
    use std::io::Write;
    let mut buf = vec![0u8; 128 * 1024];
    for _ in 0..COPY_ATTEMPTS {
        let mut f = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(full)
        {
            Ok(f) => f,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ELOOP)) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let before = LocalStat::from_metadata(&f.metadata()?);
        if before.kind != LocalKind::File {
            return Ok(None);
        }
        let mut out = File::create(dest)?;
        let mut hasher = blake3::Hasher::new();
        let mut len = 0u64;
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    out.write_all(&buf[..n])?;
                    len += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let after = LocalStat::from_metadata(&f.metadata()?);
        if before == after && after.size == len {
            out.sync_data()?;
            return Ok(Some(FileMeta {
                size: len,
                mtime_ns: after.mtime_ns,
                mode: after.mode,
                hash: crate::entry::ContentHash::from(hasher.finalize()),
            }));
        }
    }
    Ok(None)
}

/// Hashes bytes as they pass and checks them against the expected entry.
#[derive(Debug)]
struct Verifier {
    path: RelPath,
    expected: FileMeta,
    hasher: blake3::Hasher,
    seen: u64,
}

impl Verifier {
    fn new(path: &RelPath, expected: &FileMeta) -> Self {
        Verifier {
            path: path.clone(),
            expected: expected.clone(),
            hasher: blake3::Hasher::new(),
            seen: 0,
        }
    }

    fn changed(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            SourceChangedError {
                path: self.path.clone(),
            },
        )
    }

    /// Accounts for `buf`; fails as soon as the file is longer than expected.
    fn update(&mut self, buf: &[u8]) -> io::Result<()> {
        self.seen += buf.len() as u64;
        if self.seen > self.expected.size {
            return Err(self.changed());
        }
        self.hasher.update(buf);
        Ok(())
    }

    /// At end of file: the bytes seen must be exactly the expected ones.
    fn finish(&self) -> io::Result<()> {
        if self.seen != self.expected.size
            || crate::entry::ContentHash::from(self.hasher.finalize()) != self.expected.hash
        {
            return Err(self.changed());
        }
        Ok(())
    }
}

/// Blocking reader returned by [`Source::open_blocking`]. Its final `read`
/// (the one returning 0) fails with [`SourceChangedError`] inside an
/// [`io::Error`] if the content differs from the checkpoint.
#[derive(Debug)]
pub struct BlockingSourceReader {
    file: File,
    check: Verifier,
}

impl BlockingSourceReader {
    /// The file's expected size (from the checkpoint).
    pub fn size(&self) -> u64 {
        self.check.expected.size
    }
}

impl Read for BlockingSourceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if n == 0 {
            self.check.finish()?;
        } else {
            self.check.update(&buf[..n])?;
        }
        Ok(n)
    }
}

/// Async chunked reader returned by [`Source::open`].
#[derive(Debug)]
pub struct SourceReader {
    inner: Option<BlockingSourceReader>,
    chunk: usize,
}

impl SourceReader {
    /// Sets the size of the chunks returned by [`next_chunk`](Self::next_chunk).
    pub fn with_chunk_size(mut self, bytes: usize) -> Self {
        self.chunk = bytes.max(1);
        self
    }

    /// The file's expected size (from the checkpoint).
    pub fn size(&self) -> u64 {
        self.inner.as_ref().map_or(0, |r| r.size())
    }

    /// The next chunk of at most the chunk size, or `None` at the end once
    /// the content has been verified.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, BackendError> {
        let Some(mut inner) = self.inner.take() else {
            return Ok(None);
        };
        // Never allocate more than what is left (plus one byte to see EOF).
        let left = inner.check.expected.size.saturating_sub(inner.check.seen);
        let chunk = self.chunk.min(
            usize::try_from(left)
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        );
        let path = inner.check.path.clone();
        let (inner, res) = tokio::task::spawn_blocking(move || {
            let mut buf = BytesMut::zeroed(chunk);
            let mut filled = 0;
            let res = loop {
                match inner.read(&mut buf[filled..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        filled += n;
                        if filled == chunk {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            buf.truncate(filled);
            (inner, res.map(|()| buf.freeze()))
        })
        .await
        .map_err(|e| BackendError::SourceIo {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        let bytes = res.map_err(|e| BackendError::from_source_io(&path, e))?;
        if bytes.is_empty() {
            return Ok(None);
        }
        self.inner = Some(inner);
        Ok(Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::ContentHash;

    fn meta_of(content: &[u8]) -> FileMeta {
        FileMeta {
            size: content.len() as u64,
            mtime_ns: 0,
            mode: 0o644,
            hash: ContentHash::of(content),
        }
    }

    #[tokio::test]
    async fn reads_in_chunks_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        std::fs::write(dir.path().join("f"), &content).unwrap();
        let src = Source::new(dir.path());
        let p = RelPath::new("f").unwrap();
        let mut r = src
            .open(&p, &meta_of(&content))
            .await
            .unwrap()
            .with_chunk_size(4096);
        let mut got = Vec::new();
        while let Some(c) = r.next_chunk().await.unwrap() {
            assert!(c.len() <= 4096);
            got.extend_from_slice(&c);
        }
        assert_eq!(got, content);
        assert_eq!(src.read_all(&p, &meta_of(&content)).await.unwrap(), content);
    }

    #[tokio::test]
    async fn changed_content_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"abcd").unwrap();
        let src = Source::new(dir.path());
        let p = RelPath::new("f").unwrap();
        // Same size, different bytes: only the hash can tell.
        let err = src.read_all(&p, &meta_of(b"abce")).await.unwrap_err();
        assert!(matches!(err, BackendError::SourceChanged { .. }), "{err}");
        // Different size: refused at open.
        let err = src.read_all(&p, &meta_of(b"abcdef")).await.unwrap_err();
        assert!(matches!(err, BackendError::SourceChanged { .. }), "{err}");
        // Blocking reader: the error surfaces through io::Read.
        let mut r = src.open_blocking(&p, &meta_of(b"abce")).unwrap();
        let e = std::io::copy(&mut r, &mut std::io::sink()).unwrap_err();
        assert!(matches!(
            BackendError::from_source_io(&p, e),
            BackendError::SourceChanged { .. }
        ));
    }

    #[tokio::test]
    async fn a_settled_copy_is_served_instead_of_the_live_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("log"), b"line 1\n").unwrap();
        let copy = dir.path().join("copy");
        let meta = copy_settled(&root.join("log"), &copy).unwrap().unwrap();
        assert_eq!(meta.hash, ContentHash::of(b"line 1\n"));
        // The live file moves on; the copy is what gets pushed.
        std::fs::write(root.join("log"), b"line 1\nline 2\n").unwrap();
        let src = Source::new(&root);
        let p = RelPath::new("log").unwrap();
        assert!(src.read_all(&p, &meta).await.is_err());
        src.clone().use_copy(p.clone(), copy.clone());
        assert_eq!(src.read_all(&p, &meta).await.unwrap(), &b"line 1\n"[..]);
        assert_eq!(src.drop_copy(&p), Some(copy));
        assert!(
            copy_settled(&root.join("missing"), &dir.path().join("c2"))
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn symlinks_and_missing_files_are_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("real"), b"x").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        let src = Source::new(dir.path());
        for name in ["link", "missing"] {
            let err = src
                .read_all(&RelPath::new(name).unwrap(), &meta_of(b"x"))
                .await
                .unwrap_err();
            assert!(
                matches!(err, BackendError::SourceChanged { .. }),
                "{name}: {err}"
            );
        }
    }
}
