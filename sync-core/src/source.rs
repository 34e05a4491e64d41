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

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use crate::backend::BackendError;
use crate::entry::FileMeta;
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
}

impl Source {
    /// A source rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Source { root: root.into() }
    }

    /// The synced directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn open_file(&self, path: &RelPath, meta: &FileMeta) -> Result<File, BackendError> {
        let full = path.to_path(&self.root);
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
