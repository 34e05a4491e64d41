//! Moving bytes: uploads from a [`Source`] and downloads into a
//! [`RestoreWriter`], both with bounded memory.
//!
//! * Upload of a file smaller than the large-file threshold: read whole
//!   (verified against the checkpoint's hash) and sent in one `PUT`.
//! * Upload of a larger file: a multipart upload fed chunk by chunk from the
//!   verifying [`SourceReader`](sync_core::source::SourceReader); it is
//!   completed only after the reader confirmed the whole file matches its
//!   hash, and aborted otherwise, so a changed file never becomes an object.
//!   Memory: `(parts_in_flight + 1) × part_size` plus one 1 MiB read chunk.
//! * Download: the response body is streamed to a blocking task that feeds
//!   [`FileWrite`](sync_core::restore::FileWrite) through a channel of four
//!   256 KiB batches. `FileWrite::commit` verifies size and hash before the
//!   rename, so a blob whose bytes do not match is never written as the
//!   file.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, PutMultipartOptions, PutOptions, PutPayload,
    WriteMultipart,
};
use sync_core::restore::{FileSpec, RestoreError, RestoreWriter};
use sync_core::{BackendError, FileMeta, RelPath, Source};

use crate::store::{Remote, remote_err};

/// Object metadata names of the mirror layout, as written: the content's
/// BLAKE3 hash (hex), the permission bits (octal) and the modification time
/// (nanoseconds since the epoch). Only lowercase ASCII letters and digits:
/// Azure requires C# identifiers (no `-`), S3 and GCS lowercase names
/// anyway, and HTTP proxies such as nginx drop request headers containing
/// `_` by default (`underscores_in_headers off`). They travel as
/// `x-amz-meta-tetherblake3`, `x-goog-meta-tetherblake3`,
/// `x-ms-meta-tetherblake3`.
pub(crate) const ATTR_NAMES: AttrNames = AttrNames {
    hash: "tetherblake3",
    mode: "tethermode",
    mtime_ns: "tethermtimens",
};
/// The names earlier tether versions wrote (refused by Azure, fine on S3 and GCS):
/// still read, so existing S3 and GCS mirrors restore with their metadata.
pub(crate) const LEGACY_ATTR_NAMES: AttrNames = AttrNames {
    hash: "tether-blake3",
    mode: "tether-mode",
    mtime_ns: "tether-mtime-ns",
};

/// One set of the three metadata names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttrNames {
    pub hash: &'static str,
    pub mode: &'static str,
    pub mtime_ns: &'static str,
}

/// The attributes describing `meta` (the current names only).
pub(crate) fn file_attributes(meta: &FileMeta) -> Attributes {
    let mut a = Attributes::new();
    a.insert(
        Attribute::Metadata(ATTR_NAMES.hash.into()),
        AttributeValue::from(meta.hash.to_hex()),
    );
    a.insert(
        Attribute::Metadata(ATTR_NAMES.mode.into()),
        AttributeValue::from(format!("{:o}", meta.mode)),
    );
    a.insert(
        Attribute::Metadata(ATTR_NAMES.mtime_ns.into()),
        AttributeValue::from(meta.mtime_ns.to_string()),
    );
    a
}

/// Reads a [`FileSpec`] back from object attributes, where present: the
/// current names when they make a complete, valid set, else the legacy
/// names (an object pushed by an older tether), else `None`.
pub(crate) fn spec_from_attributes(a: &Attributes, size: u64) -> Option<FileSpec> {
    spec_from_names(a, size, ATTR_NAMES).or_else(|| spec_from_names(a, size, LEGACY_ATTR_NAMES))
}

fn spec_from_names(a: &Attributes, size: u64, names: AttrNames) -> Option<FileSpec> {
    let get = |k: &'static str| a.get(&Attribute::Metadata(k.into())).map(|v| v.as_ref());
    let hash = sync_core::ContentHash::from_hex(get(names.hash)?)?;
    let mode = u32::from_str_radix(get(names.mode)?, 8).ok()? & 0o7777;
    let mtime_ns = get(names.mtime_ns)?.parse::<i64>().ok()?;
    Some(FileSpec {
        mode,
        mtime_ns: Some(mtime_ns),
        size: Some(size),
        hash: Some(hash),
    })
}

/// The content bytes transfers may hold in memory at once
/// ([`BackendOptions::max_buffered_bytes`](crate::BackendOptions::max_buffered_bytes)):
/// a file read whole before its upload, the read-ahead of the packer, the
/// parts of a multipart upload in flight, a batch of ranges downloaded for
/// a restore. Each transfer takes its share before it reads and gives it
/// back when the bytes are gone; a single transfer larger than the whole
/// budget takes all of it (it runs alone). Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct ByteBudget {
    permits: Arc<tokio::sync::Semaphore>,
    total: u32,
    held: Arc<std::sync::atomic::AtomicU64>,
    peak: Arc<std::sync::atomic::AtomicU64>,
}

/// A share of a [`ByteBudget`]; returned when dropped.
#[derive(Debug)]
pub(crate) struct BudgetShare {
    _permit: tokio::sync::OwnedSemaphorePermit,
    bytes: u64,
    held: Arc<std::sync::atomic::AtomicU64>,
}

impl Drop for BudgetShare {
    fn drop(&mut self) {
        self.held
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

impl ByteBudget {
    /// A budget of `bytes` (at most 4 GiB − 1; validated in the options).
    pub fn new(bytes: usize) -> Self {
        let total = u32::try_from(bytes).unwrap_or(u32::MAX).max(1);
        ByteBudget {
            permits: Arc::new(tokio::sync::Semaphore::new(total as usize)),
            total,
            held: Arc::default(),
            peak: Arc::default(),
        }
    }

    /// Waits until `bytes` are free and takes them (a share larger than
    /// the whole budget waits for all of it).
    pub async fn take(&self, bytes: u64) -> Result<BudgetShare, BackendError> {
        use std::sync::atomic::Ordering;
        let n = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, self.total);
        let permit = Arc::clone(&self.permits)
            .acquire_many_owned(n)
            .await
            .map_err(|e| BackendError::transient("transfer", "memory budget", e))?;
        // What is really held, for `peak`.
        let now = self
            .held
            .fetch_add(bytes, Ordering::Relaxed)
            .saturating_add(bytes);
        self.peak.fetch_max(now, Ordering::Relaxed);
        Ok(BudgetShare {
            _permit: permit,
            bytes,
            held: Arc::clone(&self.held),
        })
    }

    /// The most bytes held at once so far.
    pub fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Bytes a streamed download holds at most: the response chunk plus the
/// writer's channel of four 256 KiB batches.
pub(crate) const STREAM_BUFFER: u64 = 2 << 20;

/// How large uploads are cut.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UploadLimits {
    pub large_file_threshold: u64,
    pub part_size: usize,
    pub parts_in_flight: usize,
}

/// Uploads one file to `key`, verified against `meta`; returns the ETag.
// The budget is shared by every transfer of the backend; the rest says
// what to upload and how.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn upload_file(
    remote: &Remote,
    key: &Path,
    path: &RelPath,
    meta: &FileMeta,
    source: &Source,
    attributes: Attributes,
    limits: UploadLimits,
    budget: &ByteBudget,
) -> Result<Option<String>, BackendError> {
    use std::sync::atomic::Ordering;
    // Held until the upload is done: a small file's bytes, or a large
    // file's parts in flight plus the one being filled and a read chunk.
    let in_memory = if meta.size < limits.large_file_threshold {
        meta.size
    } else {
        let parts = u64::try_from(limits.parts_in_flight.saturating_add(1)).unwrap_or(u64::MAX);
        parts
            .saturating_mul(limits.part_size as u64)
            .saturating_add(1 << 20)
            .min(meta.size)
    };
    let _share = budget.take(in_memory).await?;
    let attributes = if remote.attributes.load(Ordering::Relaxed) {
        attributes
    } else {
        Attributes::new()
    };
    // A store that keeps no metadata (the local filesystem) refuses it:
    // remember that and send the object without.
    let refused = |e: &object_store::Error, a: &Attributes| {
        matches!(e, object_store::Error::NotImplemented { .. }) && !a.is_empty()
    };
    if meta.size < limits.large_file_threshold {
        let bytes = source.read_all(path, meta).await?;
        let put = |attributes: Attributes| {
            let payload = PutPayload::from(bytes.clone());
            async move {
                let opts = PutOptions {
                    attributes,
                    ..PutOptions::default()
                };
                remote.store.put_opts(key, payload, opts).await
            }
        };
        let r = match put(attributes.clone()).await {
            Err(e) if refused(&e, &attributes) => {
                remote.attributes.store(false, Ordering::Relaxed);
                put(Attributes::new()).await
            }
            other => other,
        }
        .map_err(|e| remote_err("put", key, e))?;
        return Ok(r.e_tag);
    }
    let start = |attributes: Attributes| async move {
        remote
            .store
            .put_multipart_opts(
                key,
                PutMultipartOptions {
                    attributes,
                    ..PutMultipartOptions::default()
                },
            )
            .await
    };
    let upload = match start(attributes.clone()).await {
        Err(e) if refused(&e, &attributes) => {
            remote.attributes.store(false, Ordering::Relaxed);
            start(Attributes::new()).await
        }
        other => other,
    }
    .map_err(|e| remote_err("start multipart upload", key, e))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, limits.part_size);
    let mut reader = source.open(path, meta).await?.with_chunk_size(1 << 20);
    loop {
        match reader.next_chunk().await {
            Ok(Some(chunk)) => {
                if let Err(e) = writer.wait_for_capacity(limits.parts_in_flight).await {
                    // The upload is unusable; nothing was completed.
                    return Err(remote_err("upload part", key, e));
                }
                writer.put(chunk);
            }
            Ok(None) => break,
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::debug!(error = %abort, key = %key, "could not abort a multipart upload");
                }
                return Err(e);
            }
        }
    }
    let r = writer
        .finish()
        .await
        .map_err(|e| remote_err("complete multipart upload", key, e))?;
    Ok(r.e_tag)
}

/// Maps a restore error for content that came from `object`: a content
/// mismatch is bad remote data and names the object.
pub(crate) fn restore_err(object: &Path, e: RestoreError) -> BackendError {
    match e {
        RestoreError::ContentMismatch { path, what } => BackendError::InvalidRemote {
            object: object.to_string(),
            reason: format!(
                "its bytes for {path} do not match the recorded {what}; {path} was not written"
            ),
        },
        other => BackendError::Restore(other),
    }
}

/// Decides in a blocking task whether `path` must be written.
pub(crate) async fn should_write(
    writer: &Arc<RestoreWriter>,
    path: &RelPath,
    spec: &FileSpec,
) -> Result<bool, BackendError> {
    let (w, p, s) = (Arc::clone(writer), path.clone(), spec.clone());
    tokio::task::spawn_blocking(move || w.should_write(&p, &s))
        .await
        .map_err(|e| join_err(path, e))?
        .map_err(BackendError::Restore)
}

fn join_err(path: &RelPath, e: tokio::task::JoinError) -> BackendError {
    BackendError::Restore(RestoreError::Io {
        op: "write",
        path: path.as_str().into(),
        source: std::io::Error::other(e),
    })
}

/// Writes files whose content is in memory, in one blocking task.
pub(crate) async fn write_files(
    writer: &Arc<RestoreWriter>,
    object: &Path,
    files: Vec<(RelPath, FileSpec, Bytes)>,
) -> Result<(), BackendError> {
    let Some(first) = files.first().map(|f| f.0.clone()) else {
        return Ok(());
    };
    let w = Arc::clone(writer);
    let object = object.clone();
    tokio::task::spawn_blocking(move || {
        for (path, spec, bytes) in files {
            // Straight from the downloaded bytes: `write_file` would copy
            // them through a fresh 256 KiB buffer, zeroed for each file
            // (measured: the largest CPU cost of a mirror restore of
            // 10,000 × 4 KiB files).
            let mut file = w
                .begin_file(&path, &spec)
                .map_err(|e| restore_err(&object, e))?;
            file.write_chunk(&bytes)
                .map_err(|e| restore_err(&object, e))?;
            file.commit().map_err(|e| restore_err(&object, e))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| join_err(&first, e))?
}

enum Piece {
    Data(Bytes),
    End,
}

/// Streams `body` (the content of `object`) into `path`.
pub(crate) async fn write_stream(
    writer: &Arc<RestoreWriter>,
    object: &Path,
    path: &RelPath,
    spec: &FileSpec,
    mut body: BoxStream<'static, Result<Bytes, object_store::Error>>,
) -> Result<(), BackendError> {
    const BATCH: usize = 256 << 10;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Piece>(4);
    let (w, p, s) = (Arc::clone(writer), path.clone(), spec.clone());
    let obj = object.clone();
    let task = tokio::task::spawn_blocking(move || -> Result<bool, BackendError> {
        let mut file = w.begin_file(&p, &s).map_err(|e| restore_err(&obj, e))?;
        while let Some(piece) = rx.blocking_recv() {
            match piece {
                Piece::Data(b) => file.write_chunk(&b).map_err(|e| restore_err(&obj, e))?,
                Piece::End => {
                    file.commit().map_err(|e| restore_err(&obj, e))?;
                    return Ok(true);
                }
            }
        }
        // The download failed: dropping `file` removes the temporary file.
        Ok(false)
    });
    let mut batch = BytesMut::new();
    let mut download_error = None;
    let mut receiver_gone = false;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => {
                batch.extend_from_slice(&c);
                if batch.len() >= BATCH
                    && tx.send(Piece::Data(batch.split().freeze())).await.is_err()
                {
                    receiver_gone = true;
                    break;
                }
            }
            Err(e) => {
                download_error = Some(remote_err("get", object, e));
                break;
            }
        }
    }
    if download_error.is_none() && !receiver_gone {
        if !batch.is_empty() {
            let _ = tx.send(Piece::Data(batch.freeze())).await;
        }
        let _ = tx.send(Piece::End).await;
    }
    drop(tx);
    let written = task.await.map_err(|e| join_err(path, e))??;
    match download_error {
        Some(e) => Err(e),
        None if !written => Err(BackendError::transient(
            "get",
            object.to_string(),
            format!("download of {path} ended early"),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip() {
        let meta = FileMeta {
            size: 3,
            mtime_ns: 1_700_000_000_123_456_789,
            mode: 0o755,
            hash: sync_core::ContentHash::of(b"abc"),
        };
        let a = file_attributes(&meta);
        let spec = spec_from_attributes(&a, 3).unwrap();
        assert_eq!(spec, FileSpec::from(&meta));
        assert!(spec_from_attributes(&Attributes::new(), 3).is_none());
    }

    /// Valid Azure metadata names (C# identifiers), lowercase (S3 and GCS
    /// fold case), no `_` (dropped by nginx-style proxies by default).
    #[test]
    fn attribute_names_are_valid_everywhere() {
        let a = file_attributes(&FileMeta {
            size: 0,
            mtime_ns: 0,
            mode: 0o644,
            hash: sync_core::ContentHash::of(b""),
        });
        let mut n = 0;
        for (k, _) in a.iter() {
            let Attribute::Metadata(name) = k else {
                panic!("not user metadata: {k:?}")
            };
            n += 1;
            assert!(
                name.starts_with(|c: char| c.is_ascii_lowercase())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
                "{name} is not lowercase letters and digits"
            );
        }
        assert_eq!(n, 3);
    }

    /// Objects pushed before the rename carry only the legacy names; a
    /// complete current set wins over the legacy one.
    #[test]
    fn legacy_names_are_read_and_current_names_preferred() {
        let old = FileMeta {
            size: 3,
            mtime_ns: 1_600_000_000_000_000_000,
            mode: 0o600,
            hash: sync_core::ContentHash::of(b"old"),
        };
        let new = FileMeta {
            size: 3,
            mtime_ns: 1_700_000_000_000_000_000,
            mode: 0o755,
            hash: sync_core::ContentHash::of(b"new"),
        };
        let mut legacy = Attributes::new();
        for (k, v) in [
            (LEGACY_ATTR_NAMES.hash, old.hash.to_hex()),
            (LEGACY_ATTR_NAMES.mode, format!("{:o}", old.mode)),
            (LEGACY_ATTR_NAMES.mtime_ns, old.mtime_ns.to_string()),
        ] {
            legacy.insert(Attribute::Metadata(k.into()), AttributeValue::from(v));
        }
        assert_eq!(spec_from_attributes(&legacy, 3), Some(FileSpec::from(&old)));
        let mut both = legacy.clone();
        for (k, v) in file_attributes(&new).iter() {
            both.insert(k.clone(), v.clone());
        }
        assert_eq!(spec_from_attributes(&both, 3), Some(FileSpec::from(&new)));
        // An incomplete current set does not hide a complete legacy one.
        let mut partial = legacy;
        partial.insert(
            Attribute::Metadata(ATTR_NAMES.hash.into()),
            AttributeValue::from(new.hash.to_hex()),
        );
        assert_eq!(
            spec_from_attributes(&partial, 3),
            Some(FileSpec::from(&old))
        );
    }
}
