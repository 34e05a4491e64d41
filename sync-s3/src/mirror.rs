//! The mirror layout: each file at `prefix/<path>`, browsable with any tool.
//!
//! ```text
//! prefix/<path>                                 the file's bytes; object metadata
//!                                               tether-blake3, tether-mode, tether-mtime-ns
//!                                               (where the store keeps metadata)
//! prefix/.tether/mirror/00000000000000000007    MirrorIndex: every path's Meta and the
//!                                               ETag its object had when tether wrote it
//! ```
//!
//! **The objects are the truth; the index describes them.** A push deletes,
//! then uploads, then writes the next index generation (create-if-absent,
//! so two writers re-read and merge instead of overwriting each other's
//! index). A restore lists the objects: an object whose ETag matches the
//! index uses the index's mode, mtime and hash (verified while writing, no
//! extra request); any other object (written by another tool, or by a push
//! that failed before its index) uses its own object metadata, or a plain
//! 0644 file with the object's time when the store keeps none. Directories
//! and symlinks exist only in the index. After a failed push every object
//! is still a complete version of its file, which is all the mirror
//! promises; use the snapshots layout for consistent restore points.
//!
//! The top-level name `.tether` is reserved in this layout.

use std::collections::BTreeMap;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt, stream};
use object_store::path::Path;
use object_store::{GetOptions, ObjectMeta};
use serde::{Deserialize, Serialize};
use sync_core::restore::{FileSpec, PlanKind, RestorePlan, RestoreWriter};
use sync_core::{
    BackendError, Change, Checkpoint, Meta, PushReceipt, RelPath, RemoteHead, RestoreOptions,
    RestoreReport, Source,
};

use crate::config::BackendOptions;
use crate::store::{CreateOutcome, Generations, Remote, remote_err};
use crate::transfer::{self, UploadLimits};

pub(crate) mod fuzzing;

/// The reserved top-level name.
pub(crate) const RESERVED: &str = ".tether";
const INDEX: Generations = Generations {
    dir: ".tether/mirror",
};
const INDEX_FORMAT: &str = "tether-mirror-index-1";
/// Index generations kept besides the newest (readers may be on them).
const KEEP_GENERATIONS: u64 = 4;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IndexEntry {
    #[serde(flatten)]
    meta: Meta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MirrorIndex {
    format: String,
    time_ms: u64,
    entries: BTreeMap<String, IndexEntry>,
}

impl Default for MirrorIndex {
    fn default() -> Self {
        MirrorIndex {
            format: INDEX_FORMAT.into(),
            time_ms: 0,
            entries: BTreeMap::new(),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// True when `path` lies in the name space the layout reserves.
pub(crate) fn is_reserved(path: &str) -> bool {
    path == RESERVED || path.starts_with(".tether/")
}

/// Applies a checkpoint to the index (pure).
fn apply(
    index: &mut MirrorIndex,
    checkpoint: &Checkpoint,
    etags: &BTreeMap<RelPath, Option<String>>,
) {
    for (path, change) in checkpoint.iter() {
        match change {
            Change::Upsert(meta) => {
                index.entries.insert(
                    path.to_string(),
                    IndexEntry {
                        meta: meta.clone(),
                        etag: etags.get(path).cloned().flatten(),
                    },
                );
            }
            Change::Delete => {
                index.entries.remove(path.as_str());
            }
        }
    }
}

/// The mirror layout over one remote.
#[derive(Debug)]
pub(crate) struct Mirror {
    remote: Remote,
    options: BackendOptions,
    /// The newest index generation this process wrote or read.
    cache: tokio::sync::Mutex<Option<(u64, MirrorIndex)>>,
}

impl Mirror {
    pub fn new(remote: Remote, options: BackendOptions) -> Self {
        Mirror {
            remote,
            options,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    async fn load_index(&self) -> Result<Option<(u64, MirrorIndex)>, BackendError> {
        let Some((n, bytes)) = INDEX
            .latest(&self.remote, self.options.max_manifest_bytes)
            .await?
        else {
            return Ok(None);
        };
        let key = INDEX.key(&self.remote, n)?;
        let index: MirrorIndex =
            serde_json::from_slice(&bytes).map_err(|e| BackendError::InvalidRemote {
                object: key.to_string(),
                reason: format!("not a valid mirror index (truncated or corrupt): {e}"),
            })?;
        if index.format != INDEX_FORMAT {
            return Err(BackendError::InvalidRemote {
                object: key.to_string(),
                reason: format!("unknown mirror index format {:?}", index.format),
            });
        }
        Ok(Some((n, index)))
    }

    pub async fn head(&self) -> Result<Option<RemoteHead>, BackendError> {
        Ok(INDEX.list(&self.remote).await?.last().map(|n| RemoteHead {
            id: n.to_string(),
            time: None,
        }))
    }

    fn limits(&self) -> UploadLimits {
        UploadLimits {
            large_file_threshold: self.options.large_file_threshold,
            part_size: self.options.part_size,
            parts_in_flight: self.options.parts_in_flight,
        }
    }

    pub async fn push(
        &self,
        checkpoint: &Checkpoint,
        source: &Source,
    ) -> Result<PushReceipt, BackendError> {
        if let Some(p) = checkpoint.paths().find(|p| is_reserved(p.as_str())) {
            return Err(BackendError::permanent(
                "push",
                format!("{} ({p})", self.remote.describe),
                "the mirror layout keeps its index under the top-level name .tether; rename that path or use the snapshots layout",
            ));
        }
        let mut cache = self.cache.lock().await;
        if cache.is_none() {
            *cache = self.load_index().await?;
        }
        let concurrency = self.options.concurrency;
        // Deletes first: on a filesystem store, a file replaced by a
        // directory of the same name must go before its children arrive.
        // Directories and symlinks have no object.
        let not_an_object = |p: &RelPath| {
            cache.as_ref().is_some_and(|(_, index)| {
                index
                    .entries
                    .get(p.as_str())
                    .is_some_and(|e| !matches!(e.meta, Meta::File(_)))
            })
        };
        let deletes: Vec<Path> = checkpoint
            .deletes()
            .filter(|p| !not_an_object(p))
            .map(|p| self.remote.key(p.as_str()))
            .collect::<Result<_, _>>()?;
        stream::iter(deletes)
            .map(|key| async move { self.remote.delete(&key).await })
            .buffer_unordered(concurrency)
            .try_collect::<Vec<()>>()
            .await?;

        let limits = self.limits();
        let files: Vec<_> = checkpoint
            .iter()
            .filter_map(|(p, c)| match c {
                Change::Upsert(Meta::File(f)) => Some((p.clone(), f.clone())),
                _ => None,
            })
            .collect();
        let uploaded: Vec<(RelPath, Option<String>, u64)> = stream::iter(files)
            .map(|(path, meta)| async move {
                let key = self.remote.key(path.as_str())?;
                let attrs = transfer::file_attributes(&meta);
                let etag =
                    transfer::upload_file(&self.remote, &key, &path, &meta, source, attrs, limits)
                        .await?;
                Ok::<_, BackendError>((path, etag, meta.size))
            })
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        let files_uploaded = uploaded.len() as u64;
        let bytes_uploaded = uploaded.iter().map(|u| u.2).sum();
        let etags: BTreeMap<RelPath, Option<String>> =
            uploaded.into_iter().map(|(p, e, _)| (p, e)).collect();

        // The index: next generation, merged again if another writer won.
        for _attempt in 0..16 {
            let (n, mut index) = match cache.take() {
                Some(c) => c,
                None => self.load_index().await?.unwrap_or_default(),
            };
            apply(&mut index, checkpoint, &etags);
            index.time_ms = now_ms();
            let bytes = bytes::Bytes::from(serde_json::to_vec(&index).unwrap_or_default());
            match INDEX.create(&self.remote, n + 1, bytes).await? {
                CreateOutcome::Created => {
                    *cache = Some((n + 1, index));
                    INDEX.trim(&self.remote, n + 1, KEEP_GENERATIONS + 1).await;
                    return Ok(PushReceipt {
                        head: Some((n + 1).to_string()),
                        files_uploaded,
                        bytes_uploaded,
                        conflict: None,
                    });
                }
                CreateOutcome::Conflict => {
                    tracing::debug!(remote = %self.remote.describe, generation = n + 1, "another writer updated the mirror index; merging");
                }
            }
        }
        Err(BackendError::transient(
            "push",
            self.remote.describe.clone(),
            "the mirror index kept changing under concurrent writers",
        ))
    }

    pub async fn restore(
        &self,
        dest: &FsPath,
        options: &RestoreOptions,
    ) -> Result<RestoreReport, BackendError> {
        if options.at.is_some() {
            return Err(BackendError::Unsupported {
                backend: self.remote.describe.clone(),
                what: "restoring an earlier checkpoint (the mirror layout keeps only the newest state; use the snapshots layout for history)",
            });
        }
        let (generation, index) = match self.load_index().await? {
            Some((n, i)) => (Some(n), i),
            None => (None, MirrorIndex::default()),
        };
        let index_object = match generation {
            Some(n) => INDEX.key(&self.remote, n)?.to_string(),
            None => format!("{} (no index)", self.remote.describe),
        };
        // The objects: everything under the prefix except the index.
        let listing_prefix =
            (!self.remote.prefix.as_ref().is_empty()).then_some(&self.remote.prefix);
        let objects: Vec<ObjectMeta> = self
            .remote
            .store
            .list(listing_prefix)
            .map_err(|e| remote_err("list", &self.remote.prefix, e))
            .try_filter(|o| {
                let keep = self
                    .remote
                    .relative(&o.location)
                    .is_some_and(|r| !is_reserved(r));
                async move { keep }
            })
            .try_collect()
            .await?;
        let mut names: BTreeMap<String, PlanKind> = BTreeMap::new();
        for (name, e) in &index.entries {
            let kind = match e.meta {
                Meta::File(_) => PlanKind::File,
                Meta::Dir => PlanKind::Dir,
                Meta::Symlink { .. } => PlanKind::Symlink,
            };
            names.insert(name.clone(), kind);
        }
        for o in &objects {
            if let Some(rel) = self.remote.relative(&o.location) {
                names.insert(rel.to_owned(), PlanKind::File);
            }
        }
        // Hostile names (in the index or as keys) fail the whole restore
        // here, before anything is written.
        let described = format!(
            "{index_object} and the objects under {}",
            self.remote.describe
        );
        RestorePlan::validate(names.iter().map(|(n, k)| (n.as_str(), *k)), &described)?;
        let writer = Arc::new(RestoreWriter::open(dest, options)?);
        writer.expect_total(names.len() as u64, objects.iter().map(|o| o.size).sum());
        let object_names: std::collections::HashSet<&str> = objects
            .iter()
            .filter_map(|o| self.remote.relative(&o.location))
            .collect();
        {
            let w = Arc::clone(&writer);
            let others: Vec<(RelPath, Meta)> = index
                .entries
                .iter()
                .filter(|(n, e)| {
                    !matches!(e.meta, Meta::File(_)) && !object_names.contains(n.as_str())
                })
                .map(|(n, e)| {
                    Ok((
                        RelPath::new(n.as_str()).map_err(|_| bad_name(n))?,
                        e.meta.clone(),
                    ))
                })
                .collect::<Result<_, BackendError>>()?;
            tokio::task::spawn_blocking(move || -> Result<(), BackendError> {
                for (path, meta) in others {
                    match meta {
                        Meta::Dir => w.create_dir(&path)?,
                        Meta::Symlink { target } => w.create_symlink(&path, &target)?,
                        Meta::File(_) => {}
                    }
                }
                Ok(())
            })
            .await
            .map_err(|e| BackendError::transient("restore", dest.display().to_string(), e))??;
        }
        // Which objects to fetch: objects the index describes are decided in
        // one blocking pass (stat calls only); the others once their own
        // metadata has been read.
        let mut planned: Vec<(ObjectMeta, RelPath, Option<FileSpec>)> = Vec::new();
        for o in objects {
            let rel = self.remote.relative(&o.location).unwrap_or_default();
            let path = RelPath::new(rel).map_err(|_| bad_name(rel))?;
            let known = index.entries.get(rel).and_then(|e| match &e.meta {
                Meta::File(f) if f.size == o.size && e.etag.is_some() && e.etag == o.e_tag => {
                    Some(FileSpec::from(f))
                }
                _ => None,
            });
            planned.push((o, path, known));
        }
        let w = Arc::clone(&writer);
        let planned: Vec<(ObjectMeta, RelPath, Option<FileSpec>)> =
            tokio::task::spawn_blocking(move || -> Result<_, BackendError> {
                let mut keep = Vec::with_capacity(planned.len());
                for (o, path, known) in planned {
                    match &known {
                        Some(spec) if !w.should_write(&path, spec)? => {}
                        _ => keep.push((o, path, known)),
                    }
                }
                Ok(keep)
            })
            .await
            .map_err(|e| BackendError::transient("restore", dest.display().to_string(), e))??;
        stream::iter(planned)
            .map(|(o, path, known)| {
                let writer = &writer;
                async move { self.restore_object(writer, &o, &path, known).await }
            })
            .buffer_unordered(self.options.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        let writer = Arc::into_inner(writer).ok_or_else(|| {
            BackendError::transient("restore", dest.display().to_string(), "writer still in use")
        })?;
        Ok(writer.finish(generation.map(|n| n.to_string())))
    }

    async fn restore_object(
        &self,
        writer: &Arc<RestoreWriter>,
        object: &ObjectMeta,
        path: &RelPath,
        known: Option<FileSpec>,
    ) -> Result<(), BackendError> {
        let key = &object.location;
        let res = match self.remote.store.get_opts(key, GetOptions::default()).await {
            Ok(r) => r,
            // Deleted since the listing: nothing to restore.
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(remote_err("get", key, e)),
        };
        let spec = match known {
            Some(s) => s,
            None => {
                let spec = transfer::spec_from_attributes(&res.attributes, res.meta.size)
                    .unwrap_or_else(|| FileSpec {
                        mode: 0o644,
                        mtime_ns: res.meta.last_modified.timestamp_nanos_opt().or(Some(0)),
                        size: Some(res.meta.size),
                        hash: None,
                    });
                if !transfer::should_write(writer, path, &spec).await? {
                    return Ok(());
                }
                spec
            }
        };
        if res.meta.size < self.options.large_file_threshold {
            let bytes = res.bytes().await.map_err(|e| remote_err("get", key, e))?;
            transfer::write_files(writer, key, vec![(path.clone(), spec, bytes)]).await
        } else {
            transfer::write_stream(writer, key, path, &spec, res.into_stream()).await
        }
    }
}

fn bad_name(name: &str) -> BackendError {
    BackendError::InvalidRemote {
        object: name.to_owned(),
        reason: "not a valid relative path".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_core::{ContentHash, FileMeta};

    #[test]
    fn reserved_names() {
        assert!(is_reserved(".tether") && is_reserved(".tether/mirror/1"));
        assert!(!is_reserved(".tetherx") && !is_reserved("a/.tether"));
    }

    #[test]
    fn index_applies_checkpoints_and_round_trips() {
        let f = |c: &[u8]| {
            Meta::File(FileMeta {
                size: c.len() as u64,
                mtime_ns: 1,
                mode: 0o600,
                hash: ContentHash::of(c),
            })
        };
        let mut index = MirrorIndex::default();
        let mut c = Checkpoint::new();
        let a = RelPath::new("a").unwrap();
        c.upsert(a.clone(), f(b"x"));
        c.upsert(RelPath::new("d").unwrap(), Meta::Dir);
        let etags = BTreeMap::from([(a.clone(), Some("\"e1\"".to_string()))]);
        apply(&mut index, &c, &etags);
        assert_eq!(index.entries["a"].etag.as_deref(), Some("\"e1\""));
        assert_eq!(index.entries["d"].etag, None);
        let json = serde_json::to_vec(&index).unwrap();
        assert_eq!(serde_json::from_slice::<MirrorIndex>(&json).unwrap(), index);
        let mut d = Checkpoint::new();
        d.delete(a);
        apply(&mut index, &d, &BTreeMap::new());
        assert_eq!(index.entries.keys().collect::<Vec<_>>(), ["d"]);
    }
}
