//! The mirror layout: each file at `prefix/<path>`, browsable with any tool.
//!
//! ```text
//! prefix/<path>                                 the file's bytes; object metadata
//!                                               tetherblake3, tethermode, tethermtimens
//!                                               (where the store keeps metadata; read
//!                                               also: the legacy tether-blake3, …)
//! prefix/.tether/mirror/00000000000000000007    MirrorIndex: every path's Meta and the
//!                                               ETag its object had when tether wrote it
//! prefix/.tether/mirror-floor/00000000000000004 empty: generations below 4 are retired
//! ```
//!
//! **The objects are the truth; the index describes them.** A push deletes,
//! then uploads, then writes the next index generation (create-if-absent,
//! so two writers re-read and merge instead of overwriting each other's
//! index). A restore lists the objects: an object whose ETag matches the
//! index (quotes aside: Azure lists ETags unquoted) uses the index's mode, mtime and hash (verified while writing, no
//! extra request); any other object (written by another tool, or by a push
//! that failed before its index) uses its own object metadata, or a plain
//! 0644 file with the object's time when the store keeps none. Directories
//! and symlinks exist only in the index; so do directory modes (a directory
//! the index does not name, implied by an object key, is restored `0755`).
//! Only permission bits are ever applied, whatever a mode says. After a failed push every object
//! is still a complete version of its file, which is all the mirror
//! promises; use the snapshots layout for consistent restore points.
//! Objects without any index (another tool's, or a first push that died
//! before its index) are a state too: `head` reports generation `0` and
//! restore writes them. An S3 folder marker (`dir/`, zero bytes, which
//! object_store lists as `dir`) is restored as a directory.
//!
//! Index generations follow the head protocol of `crate::heads` (created
//! if absent, confirmed before a push is reported, retired behind a floor);
//! the index and the object listing are bounded by `max_entries`.
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
    BackendError, Change, Checkpoint, Listed, Meta, PushReceipt, RelPath, RemoteHead,
    RestoreOptions, RestoreReport, Source,
};

use crate::config::BackendOptions;
use crate::decode::{CountError, count_entries};
use crate::heads::{Confirmation, CreateOutcome, Generations};
use crate::store::{Remote, remote_err};
use crate::transfer::{self, UploadLimits};

/// The reserved top-level name.
pub(crate) const RESERVED: &str = ".tether";
/// Index generations: the newest 5 are kept (readers may be on them),
/// older ones retired in batches of 4 (see [`crate::heads`]).
const INDEX: Generations = Generations {
    dir: ".tether/mirror",
    floor_dir: ".tether/mirror-floor",
    keep: 5,
    batch: 4,
};
const INDEX_FORMAT: &str = "tether-mirror-index-1";
/// Index generations a push tries before it fails (as transient).
const MAX_ATTEMPTS: usize = 16;

/// Parses and checks a mirror index read from `object`, refusing one of
/// more than `max_entries` paths before building any of them. The one
/// decoder of index bytes (restore, push and `crate::fuzzing`).
fn decode_index(bytes: &[u8], object: &str, max_entries: u64) -> Result<MirrorIndex, BackendError> {
    let invalid = |reason: String| BackendError::InvalidRemote {
        object: object.to_owned(),
        reason,
    };
    count_entries(bytes, "entries", max_entries).map_err(|e| {
        invalid(match e {
            CountError::TooMany { .. } => e.to_string(),
            CountError::Json(e) => format!("not a valid mirror index (truncated or corrupt): {e}"),
        })
    })?;
    let index: MirrorIndex = serde_json::from_slice(bytes).map_err(|e| {
        invalid(format!(
            "not a valid mirror index (truncated or corrupt): {e}"
        ))
    })?;
    if index.format != INDEX_FORMAT {
        return Err(invalid(format!(
            "unknown mirror index format {:?}",
            index.format
        )));
    }
    Ok(index)
}

/// [`decode_index`] for `crate::fuzzing`: each path with its metadata and
/// recorded ETag.
#[allow(clippy::type_complexity)]
pub(crate) fn decode_index_entries(
    bytes: &[u8],
    object: &str,
    max_entries: u64,
) -> Result<Vec<(String, Meta, Option<String>)>, BackendError> {
    Ok(decode_index(bytes, object, max_entries)?
        .entries
        .into_iter()
        .map(|(name, e)| (name, e.meta, e.etag))
        .collect())
}

/// Whether two ETags (both present) name the same object version. Azure
/// quotes the ETag in `PUT` and `HEAD` answers (`"0x8DC…"`) but not in
/// listings (`0x8DC…`), so the quotes are not part of the comparison.
fn same_etag(a: Option<&str>, b: Option<&str>) -> bool {
    fn bare(t: &str) -> &str {
        t.trim_matches('"')
    }
    matches!((a, b), (Some(a), Some(b)) if !bare(a).is_empty() && bare(a) == bare(b))
}

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
    /// File content held in memory by transfers (`max_buffered_bytes`).
    pub(crate) budget: transfer::ByteBudget,
}

impl Mirror {
    pub fn new(remote: Remote, options: BackendOptions) -> Self {
        Mirror {
            remote,
            budget: transfer::ByteBudget::new(options.max_buffered_bytes),
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
        let index = decode_index(&bytes, key.as_ref(), self.options.max_entries)?;
        Ok(Some((n, index)))
    }

    /// The newest index generation; `"0"` for objects without an index
    /// (uploaded by another tool, or a first push that died before its
    /// index): there is something to restore.
    pub async fn head(&self) -> Result<Option<RemoteHead>, BackendError> {
        if let Some(n) = INDEX.newest(&self.remote).await? {
            return Ok(Some(RemoteHead {
                id: n.to_string(),
                time: None,
            }));
        }
        let mut objects = self.list_objects();
        match objects.next().await {
            Some(Ok(_)) => Ok(Some(RemoteHead {
                id: "0".into(),
                time: None,
            })),
            Some(Err(e)) => Err(e),
            None => Ok(None),
        }
    }

    /// The objects under the prefix, the reserved name excluded.
    fn list_objects(&self) -> futures::stream::BoxStream<'_, Result<ObjectMeta, BackendError>> {
        let listing_prefix =
            (!self.remote.prefix.as_ref().is_empty()).then_some(&self.remote.prefix);
        self.remote
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
            .boxed()
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
            .buffer_unordered(self.remote.requests)
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
                let etag = transfer::upload_file(
                    &self.remote,
                    &key,
                    &path,
                    &meta,
                    source,
                    attrs,
                    limits,
                    &self.budget,
                )
                .await?;
                Ok::<_, BackendError>((path, etag, meta.size))
            })
            .buffer_unordered(self.remote.requests)
            .try_collect()
            .await?;
        let files_uploaded = uploaded.len() as u64;
        let bytes_uploaded = uploaded.iter().fold(0u64, |sum, u| sum.saturating_add(u.2));
        let etags: BTreeMap<RelPath, Option<String>> =
            uploaded.into_iter().map(|(p, e, _)| (p, e)).collect();

        // The index: next generation, confirmed as part of the newest
        // state (crate::heads), merged again if another writer won.
        for _attempt in 0..MAX_ATTEMPTS {
            let (base, mut index) = match cache.take() {
                Some((n, i)) => (Some(n), i),
                None => match self.load_index().await? {
                    Some((n, i)) => (Some(n), i),
                    None => (None, MirrorIndex::default()),
                },
            };
            let next = INDEX.next(&self.remote, base)?;
            apply(&mut index, checkpoint, &etags);
            // An index that readers with these limits would refuse is not
            // written (the objects are uploaded; a restore would list more
            // of them than max_entries allows too).
            if index.entries.len() as u64 > self.options.max_entries {
                let n = index.entries.len();
                *cache = None;
                return Err(BackendError::permanent(
                    "push",
                    self.remote.describe.clone(),
                    format!(
                        "the mirror index would list {n} paths, more than max_entries ({}), which a restore with these limits refuses; nothing was recorded as pushed. Raise the URL's ?max_entries= and ?max_manifest_bytes= (about 200 bytes per path) for every tether that reads this remote, and the containers' memory with them",
                        self.options.max_entries
                    ),
                ));
            }
            index.time_ms = now_ms();
            let bytes = json_bytes(&index);
            if bytes.len() as u64 > self.options.max_manifest_bytes {
                let n = bytes.len();
                *cache = None;
                return Err(BackendError::permanent(
                    "push",
                    self.remote.describe.clone(),
                    format!(
                        "the mirror index would be {n} bytes, more than max_manifest_bytes ({}), which a restore with these limits refuses; nothing was recorded as pushed. Raise the URL's ?max_manifest_bytes= for every tether that reads this remote",
                        self.options.max_manifest_bytes
                    ),
                ));
            }
            let why = match INDEX.create(&self.remote, next, bytes).await? {
                CreateOutcome::Created(written) => {
                    match INDEX.confirm(&self.remote, &written).await? {
                        Confirmation::Confirmed { newest, floor } => {
                            if newest == next {
                                *cache = Some((next, index));
                            }
                            INDEX.retire(&self.remote, newest, floor, false).await;
                            return Ok(PushReceipt {
                                head: Some(next.to_string()),
                                files_uploaded,
                                bytes_uploaded,
                                conflict: None,
                            });
                        }
                        Confirmation::Orphaned(why) => {
                            INDEX.remove_orphan(&self.remote, &written).await;
                            why
                        }
                    }
                }
                CreateOutcome::Taken => {
                    format!("another writer created index generation {next} first")
                }
            };
            tracing::debug!(remote = %self.remote.describe, reason = %why, "another writer updated the mirror index; merging");
        }
        Err(BackendError::transient(
            "push",
            self.remote.describe.clone(),
            format!(
                "the mirror index kept changing under concurrent writers ({MAX_ATTEMPTS} attempts); the checkpoint is kept and retried"
            ),
        ))
    }

    /// The current state, as [`Mirror::restore`] would write it: the
    /// index's directories and symlinks, and every object (with the
    /// index's metadata when its ETag matches, else the object's size and
    /// time).
    pub async fn list(&self, at: Option<&str>) -> Result<sync_core::Listing, BackendError> {
        if at.is_some() {
            return Err(BackendError::Unsupported {
                backend: self.remote.describe.clone(),
                what: "listing an earlier checkpoint (the mirror layout keeps only the newest state)",
            });
        }
        let (loaded, objects) = tokio::try_join!(self.load_index(), self.all_objects())?;
        let (generation, index) = match loaded {
            Some((n, i)) => (Some(n), i),
            None => (None, MirrorIndex::default()),
        };
        let (markers, objects) = self.split_folder_markers(objects, &index);
        /// What is known of one listed name.
        enum Item {
            Recorded(Meta),
            Object(ObjectMeta),
            Marker,
        }
        let mut items: BTreeMap<String, Item> = BTreeMap::new();
        for (name, e) in &index.entries {
            if !matches!(e.meta, Meta::File(_)) {
                items.insert(name.clone(), Item::Recorded(e.meta.clone()));
            }
        }
        for o in objects {
            let Some(rel) = self.remote.relative(&o.location).map(str::to_owned) else {
                continue;
            };
            let known = index.entries.get(&rel).and_then(|e| match &e.meta {
                Meta::File(f)
                    if f.size == o.size && same_etag(e.etag.as_deref(), o.e_tag.as_deref()) =>
                {
                    Some(e.meta.clone())
                }
                _ => None,
            });
            items.insert(rel, known.map_or(Item::Object(o), Item::Recorded));
        }
        for m in &markers {
            items.entry(m.as_str().to_owned()).or_insert(Item::Marker);
        }
        let kind = |item: &Item| match item {
            Item::Recorded(meta) => PlanKind::of(meta),
            Item::Marker => PlanKind::Dir,
            Item::Object(_) => PlanKind::File,
        };
        let described = match generation {
            Some(n) => INDEX.key(&self.remote, n)?.to_string(),
            None => format!("{} (no index)", self.remote.describe),
        };
        let plan =
            RestorePlan::validate(items.iter().map(|(n, i)| (n.as_str(), kind(i))), &described)?;
        let entries = plan
            .paths
            .into_iter()
            .zip(items.into_values())
            .map(|(path, item)| match item {
                Item::Recorded(meta) => Listed::from_meta(path, &meta),
                Item::Marker => Listed::from_meta(
                    path,
                    &Meta::Dir {
                        mode: sync_core::entry::DEFAULT_DIR_MODE,
                    },
                ),
                Item::Object(o) => Listed {
                    path,
                    kind: PlanKind::File,
                    size: Some(o.size),
                    mode: None,
                    mtime: Some(o.last_modified.into()),
                    target: None,
                    content: o
                        .e_tag
                        .as_deref()
                        .map(|t| format!("etag:{}", t.trim_matches('"'))),
                },
            })
            .collect();
        Ok(sync_core::Listing {
            id: generation.map(|n| n.to_string()),
            entries,
        })
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
        // The index and the listing at once (two requests of the budget).
        let (loaded, objects) = tokio::try_join!(self.load_index(), self.all_objects())?;
        let (generation, index) = match loaded {
            Some((n, i)) => (Some(n), i),
            None => (None, MirrorIndex::default()),
        };
        let index_object = match generation {
            Some(n) => INDEX.key(&self.remote, n)?.to_string(),
            None => format!("{} (no index)", self.remote.describe),
        };
        let (markers, objects) = self.split_folder_markers(objects, &index);
        let mut names: BTreeMap<String, PlanKind> = BTreeMap::new();
        for (name, e) in &index.entries {
            names.insert(name.clone(), PlanKind::of(&e.meta));
        }
        for o in &objects {
            if let Some(rel) = self.remote.relative(&o.location) {
                names.insert(rel.to_owned(), PlanKind::File);
            }
        }
        for m in &markers {
            names.entry(m.as_str().to_owned()).or_insert(PlanKind::Dir);
        }
        // Hostile names (in the index or as keys) fail the whole restore
        // here, before anything is written.
        let described = format!(
            "{index_object} and the objects under {}",
            self.remote.describe
        );
        let plan = RestorePlan::validate(names.iter().map(|(n, k)| (n.as_str(), *k)), &described)?;
        options.check_selected(&plan.paths, &self.remote.describe)?;
        // Every name once more: not kept through the downloads.
        let total = plan.paths.iter().filter(|p| options.selects(p)).count() as u64;
        drop(plan);
        drop(names);
        // A subpath restore: only what lies at or under the selected paths.
        let selected = |name: &str| RelPath::new(name).is_ok_and(|p| options.selects(&p));
        let objects: Vec<ObjectMeta> = objects
            .into_iter()
            .filter(|o| self.remote.relative(&o.location).is_some_and(selected))
            .collect();
        let markers: Vec<RelPath> = markers.into_iter().filter(|m| options.selects(m)).collect();
        let writer = Arc::new(RestoreWriter::open(dest, options)?);
        writer.expect_total(
            total,
            objects
                .iter()
                .fold(0u64, |sum, o| sum.saturating_add(o.size)),
        );
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
                    !matches!(e.meta, Meta::File(_))
                        && !object_names.contains(n.as_str())
                        && selected(n)
                })
                .map(|(n, e)| {
                    Ok((
                        RelPath::new(n.as_str()).map_err(|_| bad_name(n))?,
                        e.meta.clone(),
                    ))
                })
                .collect::<Result<_, BackendError>>()?;
            let markers: Vec<RelPath> = markers
                .into_iter()
                .filter(|m| !index.entries.contains_key(m.as_str()))
                .collect();
            tokio::task::spawn_blocking(move || -> Result<(), BackendError> {
                // A folder marker records no mode: the default, like a
                // directory an older writer recorded without one.
                for path in markers {
                    w.create_dir(&path, sync_core::entry::DEFAULT_DIR_MODE)?;
                }
                for (path, meta) in others {
                    match meta {
                        Meta::Dir { mode } => w.create_dir(&path, mode)?,
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
                Meta::File(f)
                    if f.size == o.size && same_etag(e.etag.as_deref(), o.e_tag.as_deref()) =>
                {
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
            .buffer_unordered(self.remote.requests)
            .try_collect::<Vec<()>>()
            .await?;
        let writer = Arc::into_inner(writer).ok_or_else(|| {
            BackendError::transient("restore", dest.display().to_string(), "writer still in use")
        })?;
        Ok(writer.finish(generation.map(|n| n.to_string()))?)
    }

    /// Everything under the prefix except the index, at most
    /// `max_entries` objects.
    async fn all_objects(&self) -> Result<Vec<ObjectMeta>, BackendError> {
        let mut objects: Vec<ObjectMeta> = Vec::new();
        let mut listing = self.list_objects();
        while let Some(o) = listing.next().await {
            if objects.len() as u64 >= self.options.max_entries {
                return Err(BackendError::InvalidRemote {
                    object: self.remote.describe.clone(),
                    reason: format!(
                        "holds more than {} objects, the most tether restores (max_entries)",
                        self.options.max_entries
                    ),
                });
            }
            objects.push(o?);
        }
        Ok(objects)
    }

    /// Separates S3 "folder markers" (a zero-byte `dir/`, made by consoles
    /// and some tools, which object_store lists as `dir`) from the files:
    /// a zero-byte object that other objects or index entries lie under
    /// is a directory. (One with nothing under it is recognised when its
    /// `GET` finds no `dir`, in [`Self::restore_object`].)
    fn split_folder_markers(
        &self,
        objects: Vec<ObjectMeta>,
        index: &MirrorIndex,
    ) -> (Vec<RelPath>, Vec<ObjectMeta>) {
        let all: std::collections::BTreeSet<&str> = objects
            .iter()
            .filter_map(|o| self.remote.relative(&o.location))
            .chain(index.entries.keys().map(String::as_str))
            .collect();
        let has_children = |name: &str| {
            let under = format!("{name}/");
            all.range(under.as_str()..)
                .next()
                .is_some_and(|n| n.starts_with(&under))
        };
        let is_marker: Vec<Option<RelPath>> = objects
            .iter()
            .map(|o| {
                self.remote
                    .relative(&o.location)
                    .filter(|rel| o.size == 0 && has_children(rel))
                    .and_then(|rel| RelPath::new(rel).ok())
            })
            .collect();
        drop(all);
        let mut markers = Vec::new();
        let mut files = Vec::with_capacity(objects.len());
        for (o, marker) in objects.into_iter().zip(is_marker) {
            match marker {
                Some(path) => markers.push(path),
                None => files.push(o),
            }
        }
        (markers, files)
    }

    async fn restore_object(
        &self,
        writer: &Arc<RestoreWriter>,
        object: &ObjectMeta,
        path: &RelPath,
        known: Option<FileSpec>,
    ) -> Result<(), BackendError> {
        let key = &object.location;
        // Memory before the request (a GET holds a request permit until
        // its body is read: see `Remote::with_request_budget`), sized by
        // the listing.
        let buffered = object.size < self.options.large_file_threshold;
        let share = self
            .budget
            .take(if buffered {
                object.size
            } else {
                transfer::STREAM_BUFFER
            })
            .await?;
        let res = match self.remote.store.get_opts(key, GetOptions::default()).await {
            Ok(r) => r,
            // Listed with zero bytes but no object of that name: a folder
            // marker (`dir/`) — an empty directory.
            Err(object_store::Error::NotFound { .. }) if object.size == 0 && known.is_none() => {
                let (w, p) = (Arc::clone(writer), path.clone());
                return tokio::task::spawn_blocking(move || {
                    w.create_dir(&p, sync_core::entry::DEFAULT_DIR_MODE)
                })
                .await
                .map_err(|e| BackendError::transient("restore", path.to_string(), e))?
                .map_err(BackendError::from);
            }
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
        // An object rewritten larger since the listing is streamed: its
        // memory stays that of a stream (the chunk in hand and the
        // writer's batches), whatever its size.
        let result = if buffered && res.meta.size <= object.size {
            let bytes = res.bytes().await.map_err(|e| remote_err("get", key, e))?;
            transfer::write_files(writer, key, vec![(path.clone(), spec, bytes)]).await
        } else {
            transfer::write_stream(writer, key, path, &spec, res.into_stream()).await
        };
        drop(share);
        result
    }
}

fn bad_name(name: &str) -> BackendError {
    BackendError::InvalidRemote {
        object: name.to_owned(),
        reason: "not a valid relative path".into(),
    }
}

/// `value` as JSON in one buffer of exactly its size: serialised twice,
/// first only to count, so the buffer never doubles while it grows.
pub(crate) fn json_bytes<T: Serialize + ?Sized>(value: &T) -> bytes::Bytes {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    let mut buf = Vec::with_capacity(count.0);
    let _ = serde_json::to_writer(&mut buf, value);
    bytes::Bytes::from(buf)
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
        c.upsert(RelPath::new("d").unwrap(), Meta::dir(0o700));
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

    #[test]
    fn etags_compare_without_quotes() {
        assert!(same_etag(Some("\"0x8DC1\""), Some("0x8DC1")));
        assert!(same_etag(Some("\"abc\""), Some("\"abc\"")));
        assert!(!same_etag(Some("\"abc\""), Some("abd")));
        assert!(!same_etag(None, Some("abc")));
        assert!(!same_etag(Some("\"\""), Some("")));
        assert!(!same_etag(None, None));
    }
}
