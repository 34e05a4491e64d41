//! The snapshots layout: packed content-addressed blobs, one manifest per
//! checkpoint, a head written last with create-if-absent.
//!
//! **Push**: read the head and its manifest (cached between pushes), learn
//! which blobs exist (the head's manifest, plus pack indexes written in the
//! last reuse window — [`REUSE_WINDOW`] by default — by anyone, such as an
//! earlier attempt that failed mid-way; what this process remembers of
//! older packs is forgotten, as `prune` may delete them), upload only
//! missing blobs (small files packed, large files as their own multipart
//! pack), check that unreferenced packs older than the window still exist,
//! write the new manifest, then create head
//! generation `n + 1` and confirm it is part of the newest state
//! ([`crate::heads`]). If another writer created it first (or it turned
//! out orphaned), re-read the newest manifest, re-apply this checkpoint on
//! top of it (the newest word about each path wins) and try the next
//! number. The receipt's `conflict` names the paths both writers changed
//! since this writer's base ([`Checkpoint::base`]: its last confirmed push
//! or restore, however long ago the other change landed) and the snapshot
//! that keeps the other version.
//!
//! **Restore**: head → manifest (size-capped, checked), paths validated with
//! `RestorePlan`, packs checked to exist and be long enough, then small
//! blobs fetched as byte ranges in batches of at most one pack size and
//! large ones streamed; every file is verified against its hash by
//! `RestoreWriter` before it is renamed into place.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt, stream};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStoreExt, PutMode};
use sync_core::restore::{FileSpec, PlanKind, RestorePlan, RestoreWriter};
use sync_core::{
    BackendError, Change, Checkpoint, ContentHash, FileMeta, HistoryEntry, Meta, PushReceipt,
    RelPath, RemoteHead, RestoreOptions, RestoreReport, Source,
};

use crate::config::BackendOptions;
use crate::heads::{Confirmation, CreateOutcome, Generations, delete_all};
use crate::manifest::{
    BlobLoc, HEAD_FORMAT, HeadRecord, Manifest, ManifestEntry, Merge, PACK_INDEX_FORMAT,
    PackBuilder, PackIndex, PackedBlob, SealedPack, contested_paths, is_pack_id, is_snapshot_id,
    new_snapshot_id,
};
use crate::store::{Remote, remote_err};
use crate::transfer::{self, UploadLimits};

/// Heads: the newest 17 are kept (readers may be on them), older ones
/// retired in batches of 32 (see [`crate::heads`]).
const HEADS: Generations = Generations {
    dir: "heads",
    floor_dir: "heads-floor",
    keep: 17,
    batch: 32,
};
/// Head generations a push tries before it fails (as transient: the
/// engine keeps the checkpoint and retries later).
const MAX_ATTEMPTS: usize = 16;
/// Blobs known only from a pack index (not from the head's manifest) are
/// reused only if that index is younger than this; `prune` never deletes
/// anything younger than its `min_age`, which should be well above it.
pub const REUSE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Small files read ahead of the packer.
const READ_AHEAD: usize = 8;
/// A pack index larger than this is not read (one of
/// [`MAX_PACK_BLOBS`](crate::manifest::MAX_PACK_BLOBS) blobs is about 7 MiB).
const MAX_INDEX_BYTES: u64 = 16 << 20;
/// Pack indexes read at once (memory: each up to [`MAX_INDEX_BYTES`]).
const INDEX_LOADS: usize = 4;
/// Recent pack indexes considered per push.
const MAX_FRESH_INDEXES: usize = 4096;

/// A file to restore: where, how, and where its blob is.
type WantedFile = (RelPath, FileSpec, BlobLoc);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A time read from the remote (ms since the epoch), or `None` when the
/// platform cannot represent it (far beyond year 9999 is hostile anyway).
fn time_of(ms: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

/// What `prune` should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneOptions {
    /// Keep only the newest this many snapshots (the head's is always kept);
    /// `None` keeps every snapshot and only removes unreferenced packs.
    pub keep_last: Option<usize>,
    /// Never delete a pack younger than this (default 1 h): a push in
    /// progress may have uploaded it and not yet written its manifest.
    pub min_age: Duration,
    /// Report what would be deleted without deleting.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            keep_last: None,
            min_age: Duration::from_secs(3600),
            dry_run: false,
        }
    }
}

/// What `prune` did (or would do, with `dry_run`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Snapshots whose manifests were deleted.
    pub snapshots_deleted: Vec<String>,
    /// Unreferenced packs deleted.
    pub packs_deleted: u64,
    /// Their bytes.
    pub bytes_deleted: u64,
    /// Unreferenced packs kept because they are younger than `min_age`.
    pub packs_kept_young: u64,
    /// Packs still referenced.
    pub packs_referenced: u64,
}

#[derive(Debug, Default)]
struct WriterState {
    /// The newest head generation seen and its manifest.
    head: Option<(u64, Arc<Manifest>)>,
    /// Blobs known from pack indexes (ours or recent ones of others).
    known: HashMap<ContentHash, BlobLoc>,
    /// When each pack in `known` was written (ms since the epoch; for our
    /// own, when the push that wrote it started). Blobs of a pack older
    /// than the reuse window are forgotten: prune may delete it.
    pack_times: HashMap<String, u64>,
    loaded_indexes: HashSet<String>,
}

impl WriterState {
    /// Forgets blobs whose pack is older than `window`, as of `now_ms`.
    fn forget_old_packs(&mut self, now_ms: u64, window: Duration) {
        let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let young = |t: &u64| now_ms.saturating_sub(*t) < window;
        self.pack_times.retain(|_, t| young(t));
        let pack_times = &self.pack_times;
        self.known
            .retain(|_, loc| pack_times.contains_key(&loc.pack));
    }

    /// Forgets every blob of `pack`.
    fn forget_pack(&mut self, pack: &str) {
        self.pack_times.remove(pack);
        self.known.retain(|_, loc| loc.pack != pack);
    }
}

/// The snapshots layout over one remote.
#[derive(Debug)]
pub(crate) struct Snapshots {
    remote: Remote,
    options: BackendOptions,
    state: tokio::sync::Mutex<WriterState>,
    /// File content held in memory by transfers (`max_buffered_bytes`).
    pub(crate) budget: transfer::ByteBudget,
}

impl Snapshots {
    pub fn new(remote: Remote, options: BackendOptions) -> Self {
        Snapshots {
            remote,
            budget: transfer::ByteBudget::new(options.max_buffered_bytes),
            options,
            state: tokio::sync::Mutex::new(WriterState::default()),
        }
    }

    fn pack_key(&self, id: &str) -> Result<Path, BackendError> {
        self.remote
            .key(&format!("packs/{}/{id}", id.get(..2).unwrap_or(id)))
    }

    fn index_key(&self, id: &str) -> Result<Path, BackendError> {
        self.remote.key(&format!("index/{id}"))
    }

    fn snapshot_key(&self, id: &str) -> Result<Path, BackendError> {
        self.remote.key(&format!("snapshots/{id}"))
    }

    async fn read_head(&self) -> Result<Option<(u64, HeadRecord)>, BackendError> {
        let Some((n, bytes)) = HEADS.latest(&self.remote, 1 << 20).await? else {
            return Ok(None);
        };
        let key = HEADS.key(&self.remote, n)?;
        Ok(Some((n, HeadRecord::decode(&bytes, key.as_ref())?)))
    }

    async fn load_manifest(&self, id: &str) -> Result<Option<Manifest>, BackendError> {
        if !is_snapshot_id(id) {
            return Ok(None);
        }
        let key = self.snapshot_key(id)?;
        let Some((bytes, _)) = self
            .remote
            .get_bounded(&key, self.options.max_manifest_bytes)
            .await?
        else {
            return Ok(None);
        };
        let m = Manifest::decode(&bytes, key.as_ref(), self.options.max_entries)?;
        if m.id != id {
            return Err(BackendError::InvalidRemote {
                object: key.to_string(),
                reason: format!("claims to be snapshot {:?}", m.id),
            });
        }
        Ok(Some(m))
    }

    /// The head's manifest, or `None` for an empty remote; a head naming a
    /// missing snapshot is an error naming the head object.
    async fn head_manifest(&self) -> Result<Option<(u64, Manifest)>, BackendError> {
        let Some((n, head)) = self.read_head().await? else {
            return Ok(None);
        };
        match self.load_manifest(&head.snapshot).await? {
            Some(m) => Ok(Some((n, m))),
            None => Err(BackendError::InvalidRemote {
                object: HEADS.key(&self.remote, n)?.to_string(),
                reason: format!(
                    "points at snapshot {:?}, but {} does not exist",
                    head.snapshot,
                    self.snapshot_key(&head.snapshot)
                        .map(|k| k.to_string())
                        .unwrap_or_default()
                ),
            }),
        }
    }

    pub async fn head(&self) -> Result<Option<RemoteHead>, BackendError> {
        Ok(self.read_head().await?.map(|(_, h)| RemoteHead {
            id: h.snapshot,
            time: time_of(h.time_ms),
        }))
    }

    /// The head to build on, from the cache when it is still the newest.
    async fn current_base(
        &self,
        state: &mut WriterState,
    ) -> Result<Option<(u64, Arc<Manifest>)>, BackendError> {
        let newest = HEADS.newest(&self.remote).await?;
        match (newest, &state.head) {
            (None, _) => {
                state.head = None;
                Ok(None)
            }
            (Some(n), Some((cached, m))) if *cached == n => Ok(Some((n, Arc::clone(m)))),
            (Some(_), _) => {
                let base = self.head_manifest().await?.map(|(n, m)| (n, Arc::new(m)));
                state.head = base.clone();
                Ok(base)
            }
        }
    }

    /// Loads pack indexes written recently by anyone. Bounded: at most
    /// [`MAX_FRESH_INDEXES`] indexes are considered per push, each at most
    /// [`MAX_INDEX_BYTES`] and [`MAX_PACK_BLOBS`](crate::manifest::MAX_PACK_BLOBS)
    /// blobs, [`INDEX_LOADS`] at a time, and the blobs learned this way stop
    /// at `max_entries`. Reuse is an optimisation: an index that is too
    /// large or invalid is skipped with a warning, not an error.
    async fn refresh_indexes(&self, state: &mut WriterState) -> Result<(), BackendError> {
        let dir = self.remote.key("index")?;
        let cutoff = chrono_cutoff(self.options.reuse_window);
        let mut young: HashMap<String, (Path, u64)> = HashMap::new();
        let mut listing = self.remote.store.list(Some(&dir));
        while let Some(o) = listing.next().await {
            let o = o.map_err(|e| remote_err("list", &dir, e))?;
            let name = o.location.filename().unwrap_or("").to_owned();
            let written = o.last_modified.timestamp_millis();
            if !is_pack_id(&name) || written < cutoff {
                continue;
            }
            if young.len() >= MAX_FRESH_INDEXES {
                tracing::warn!(object = %dir, limit = MAX_FRESH_INDEXES, "more recent pack indexes than this; reusing blobs of the first ones only");
                break;
            }
            young.insert(name, (o.location, u64::try_from(written).unwrap_or(0)));
        }
        drop(listing);
        // Remember only names still in the window: the set stays bounded.
        state.loaded_indexes.retain(|n| young.contains_key(n));
        let fresh: Vec<(String, Path)> = young
            .iter()
            .filter(|(n, _)| !state.loaded_indexes.contains(*n))
            .map(|(n, (k, _))| (n.clone(), k.clone()))
            .collect();
        let mut loads = stream::iter(fresh)
            .map(|(name, key)| async move {
                let index = match self.remote.get_bounded(&key, MAX_INDEX_BYTES).await {
                    Ok(Some((bytes, _))) => PackIndex::decode(&bytes, key.as_ref()),
                    Ok(None) => return Ok((name, None)),
                    Err(e) => Err(e),
                };
                match index {
                    Ok(i) if i.pack == name => Ok((name, Some(i))),
                    Ok(_) => {
                        tracing::warn!(object = %key, "ignoring a pack index naming another pack");
                        Ok((name, None))
                    }
                    Err(BackendError::InvalidRemote { object, reason }) => {
                        tracing::warn!(%object, %reason, "ignoring an invalid pack index");
                        Ok((name, None))
                    }
                    Err(e) => Err(e),
                }
            })
            // Narrower than the request budget: bounds the index bytes
            // held at once (INDEX_LOADS × MAX_INDEX_BYTES).
            .buffer_unordered(INDEX_LOADS.min(self.remote.requests));
        let limit = usize::try_from(self.options.max_entries).unwrap_or(usize::MAX);
        while let Some(loaded) = loads.next().await {
            let (name, index) = loaded?;
            if let Some(index) = index {
                if state.known.len().saturating_add(index.blobs.len()) > limit {
                    tracing::warn!(
                        limit,
                        "too many blobs known from pack indexes; not reusing more"
                    );
                    continue;
                }
                let written = young.get(&name).map_or(0, |(_, t)| *t);
                state
                    .pack_times
                    .entry(index.pack.clone())
                    .or_insert(written);
                for b in index.blobs {
                    state.known.entry(b.hash).or_insert(BlobLoc {
                        pack: index.pack.clone(),
                        offset: b.offset,
                        length: b.length,
                    });
                }
            }
            state.loaded_indexes.insert(name);
        }
        Ok(())
    }

    pub async fn push(
        &self,
        checkpoint: &Checkpoint,
        source: &Source,
    ) -> Result<PushReceipt, BackendError> {
        let mut state = self.state.lock().await;
        let started_ms = now_ms();
        state.forget_old_packs(started_ms, self.options.reuse_window);
        let mut base = self.current_base(&mut state).await?;
        // Another writer's snapshots since this writer's own base (its last
        // confirmed push or restore) that changed this checkpoint's paths
        // are a conflict, however long ago they landed.
        let mut contested: Vec<String> = Vec::new();
        let mut lost_to: Option<String> = None;
        if let (Some(own), Some((_, newest))) = (checkpoint.base(), &base)
            && own != newest.id
        {
            match self.load_manifest(own).await {
                Ok(Some(old)) => {
                    contested = contested_paths(&old.by_path(), &newest.by_path(), checkpoint);
                    lost_to = Some(newest.id.clone());
                }
                Ok(None) => {
                    tracing::debug!(
                        snapshot = own,
                        "this writer's base snapshot is gone; cannot tell conflicts since it"
                    )
                }
                Err(e) => {
                    tracing::warn!(snapshot = own, error = %e, "cannot read this writer's base snapshot; cannot tell conflicts since it")
                }
            }
        }
        self.refresh_indexes(&mut state).await?;
        // Where this checkpoint's blobs are already: only its own hashes
        // are looked up, so this stays the size of the checkpoint, not of
        // the tree.
        let wanted: HashSet<ContentHash> = checkpoint
            .iter()
            .filter_map(|(_, c)| match c {
                Change::Upsert(Meta::File(f)) => Some(f.hash),
                _ => None,
            })
            .collect();
        let mut locations: HashMap<ContentHash, BlobLoc> = wanted
            .iter()
            .filter_map(|h| state.known.get(h).map(|l| (*h, l.clone())))
            .collect();
        if let Some((_, m)) = &base {
            for (h, loc) in m.blob_locations() {
                if wanted.contains(&h) {
                    locations.insert(h, loc.clone());
                }
            }
        }
        drop(wanted);
        // Blobs to upload, once each.
        let mut missing: BTreeMap<ContentHash, (RelPath, FileMeta)> = BTreeMap::new();
        for (path, change) in checkpoint.iter() {
            if let Change::Upsert(Meta::File(f)) = change
                && !locations.contains_key(&f.hash)
            {
                missing
                    .entry(f.hash)
                    .or_insert_with(|| (path.clone(), f.clone()));
            }
        }
        let files_uploaded = missing.len() as u64;
        let bytes_uploaded = missing
            .values()
            .fold(0u64, |sum, (_, f)| sum.saturating_add(f.size));
        let mut uploaded: Vec<(ContentHash, BlobLoc)> = Vec::new();
        let result = self
            .upload_missing(missing.into_values().collect(), source, &mut uploaded)
            .await;
        // Whatever landed is reusable by a retry, even if the push failed.
        for (h, loc) in uploaded {
            state
                .pack_times
                .entry(loc.pack.clone())
                .or_insert(started_ms);
            state.known.insert(h, loc.clone());
            locations.insert(h, loc);
        }
        result?;

        for attempt in 0..MAX_ATTEMPTS {
            // Uploads may have taken long: build on the newest head (one
            // LIST when nothing moved).
            if attempt == 0 {
                let newest = self.current_base(&mut state).await?;
                if newest.as_ref().map(|(n, _)| *n) != base.as_ref().map(|(n, _)| *n) {
                    self.note_rebase(
                        &mut base,
                        newest,
                        checkpoint,
                        &mut locations,
                        &mut contested,
                        &mut lost_to,
                    );
                }
            }
            // Against the base this attempt builds on: after a re-base, a
            // pack the old base referenced may be referenced no more.
            self.check_reused_packs(
                &mut state,
                checkpoint,
                &locations,
                base.as_ref().map(|(_, m)| &**m),
            )
            .await?;
            let next = HEADS.next(&self.remote, base.as_ref().map(|(n, _)| *n))?;
            // The new manifest is written straight from the base and the
            // checkpoint (no copy of the tree's entries); the cached head
            // is updated in place once the push is confirmed.
            let id = new_snapshot_id(now_ms(), rand::random());
            let parent = base.as_ref().map(|(_, m)| m.id.clone());
            let time_ms = now_ms();
            let payload = {
                let base_entries = base.as_ref().map_or(&[][..], |(_, m)| &m.entries[..]);
                let merge = Merge::new(base_entries, checkpoint, &locations).map_err(|h| {
                    BackendError::transient(
                        "push",
                        self.remote.describe.clone(),
                        format!("blob {h} was not uploaded"),
                    )
                })?;
                // A manifest that readers with these limits would refuse is
                // not written: the remote would become unrestorable.
                let paths = merge.iter().count() as u64;
                if paths > self.options.max_entries {
                    return Err(self.too_large(format!(
                        "{paths} paths, more than max_entries ({})",
                        self.options.max_entries
                    )));
                }
                let payload = merge.encode(&id, parent.as_deref(), time_ms).0;
                if payload.content_length() as u64 > self.options.max_manifest_bytes {
                    return Err(self.too_large(format!(
                        "{} bytes of manifest, more than max_manifest_bytes ({})",
                        payload.content_length(),
                        self.options.max_manifest_bytes
                    )));
                }
                payload
            };
            let key = self.snapshot_key(&id)?;
            self.remote
                .put(&key, payload, PutMode::Create)
                .await
                .map_err(|e| remote_err("put", &key, e))?;
            let head = HeadRecord {
                format: HEAD_FORMAT.into(),
                snapshot: id.clone(),
                time_ms,
            };
            let why = match HEADS.create(&self.remote, next, head.encode()).await? {
                CreateOutcome::Created(written) => {
                    match HEADS.confirm(&self.remote, &written).await? {
                        Confirmation::Confirmed { newest, floor } => {
                            // The base's entries move into the new head
                            // (copied only if someone else still holds them).
                            state.head = None;
                            if newest == next {
                                let old = match base.take() {
                                    Some((_, m)) => Arc::try_unwrap(m)
                                        .map_or_else(|m| m.entries.clone(), |m| m.entries),
                                    None => Vec::new(),
                                };
                                let manifest = Merge::into_manifest(
                                    checkpoint,
                                    &locations,
                                    old,
                                    (id.clone(), parent, time_ms),
                                );
                                state.head = Some((next, Arc::new(manifest)));
                            }
                            HEADS.retire(&self.remote, newest, floor, false).await;
                            // A re-base that touched none of this
                            // checkpoint's paths is no conflict.
                            let conflict = lost_to.filter(|_| !contested.is_empty()).map(|other| {
                                format!(
                                    "another writer changed {} in snapshot {other}; this checkpoint's version is now the head ({id}), theirs stays in snapshot {other}",
                                    contested.join(", ")
                                )
                            });
                            return Ok(PushReceipt {
                                head: Some(id),
                                files_uploaded,
                                bytes_uploaded,
                                conflict,
                            });
                        }
                        Confirmation::Orphaned(why) => {
                            HEADS.remove_orphan(&self.remote, &written).await;
                            why
                        }
                    }
                }
                CreateOutcome::Taken => {
                    format!("another writer created head generation {next} first")
                }
            };
            // Never became head: remove it so history stays honest.
            tracing::info!(remote = %self.remote.describe, reason = %why, "the head moved; re-basing this checkpoint");
            delete_all(&self.remote, vec![key]).await;
            let newer = self.head_manifest().await?.map(|(n, m)| (n, Arc::new(m)));
            state.head = newer.clone();
            self.note_rebase(
                &mut base,
                newer,
                checkpoint,
                &mut locations,
                &mut contested,
                &mut lost_to,
            );
        }
        Err(BackendError::transient(
            "push",
            self.remote.describe.clone(),
            format!(
                "the head kept moving under concurrent writers ({MAX_ATTEMPTS} attempts); the checkpoint is kept and retried"
            ),
        ))
    }

    /// The refusal of a snapshot larger than the configured read limits.
    fn too_large(&self, what: String) -> BackendError {
        BackendError::permanent(
            "push",
            self.remote.describe.clone(),
            format!(
                "the new snapshot would hold {what}, which a restore with these limits refuses to read; nothing was recorded as pushed. Raise the URL's ?max_entries= and ?max_manifest_bytes= (about 250 bytes per path) for every tether that reads this remote, and the containers' memory with them (about 1 KiB per path)"
            ),
        )
    }

    /// Moves `base` to `newer` (another writer's head): records the paths
    /// both changed and prefers the new head's blob locations (referenced,
    /// so prune keeps them).
    fn note_rebase(
        &self,
        base: &mut Option<(u64, Arc<Manifest>)>,
        newer: Option<(u64, Arc<Manifest>)>,
        checkpoint: &Checkpoint,
        locations: &mut HashMap<ContentHash, BlobLoc>,
        contested: &mut Vec<String>,
        lost_to: &mut Option<String>,
    ) {
        let old_entries = base.as_ref().map(|(_, m)| m.by_path()).unwrap_or_default();
        let new_entries = newer.as_ref().map(|(_, m)| m.by_path()).unwrap_or_default();
        for p in contested_paths(&old_entries, &new_entries, checkpoint) {
            if !contested.contains(&p) {
                contested.push(p);
            }
        }
        if let Some((_, m)) = &newer {
            for (h, loc) in m.blob_locations() {
                locations.insert(h, loc.clone());
            }
            *lost_to = Some(m.id.clone());
        }
        *base = newer;
    }

    /// Before a snapshot may reference packs that no snapshot referenced
    /// yet and that are older than the reuse window (a push that ran long,
    /// or blobs reused from an earlier attempt), checks they still exist:
    /// `prune` may have deleted them. A missing one is forgotten and the
    /// push fails as transient, so the retry uploads those blobs again.
    async fn check_reused_packs(
        &self,
        state: &mut WriterState,
        checkpoint: &Checkpoint,
        locations: &HashMap<ContentHash, BlobLoc>,
        base: Option<&Manifest>,
    ) -> Result<(), BackendError> {
        let window = u64::try_from(self.options.reuse_window.as_millis()).unwrap_or(u64::MAX);
        let now = now_ms();
        let referenced: HashSet<&str> = base
            .map(|m| m.blob_locations().map(|(_, l)| l.pack.as_str()).collect())
            .unwrap_or_default();
        let mut to_check: BTreeSet<String> = BTreeSet::new();
        for (_, change) in checkpoint.iter() {
            if let Change::Upsert(Meta::File(f)) = change
                && let Some(loc) = locations.get(&f.hash)
                && !referenced.contains(loc.pack.as_str())
                && state
                    .pack_times
                    .get(&loc.pack)
                    .is_none_or(|t| now.saturating_sub(*t) >= window)
            {
                to_check.insert(loc.pack.clone());
            }
        }
        let missing: Vec<String> = stream::iter(to_check)
            .map(|pack| async move {
                let key = self.pack_key(&pack)?;
                match self.remote.store.head(&key).await {
                    Ok(_) => Ok(None),
                    Err(object_store::Error::NotFound { .. }) => Ok(Some(pack)),
                    Err(e) => Err(remote_err("head", &key, e)),
                }
            })
            .buffer_unordered(self.remote.requests)
            .try_filter_map(|m| async move { Ok(m) })
            .try_collect()
            .await?;
        if missing.is_empty() {
            return Ok(());
        }
        for pack in &missing {
            state.forget_pack(pack);
        }
        Err(BackendError::transient(
            "push",
            self.remote.describe.clone(),
            format!(
                "{} pack(s) this checkpoint would reuse were deleted meanwhile (by prune?), e.g. {}; the retry uploads their blobs again",
                missing.len(),
                missing[0]
            ),
        ))
    }

    async fn upload_missing(
        &self,
        files: Vec<(RelPath, FileMeta)>,
        source: &Source,
        uploaded: &mut Vec<(ContentHash, BlobLoc)>,
    ) -> Result<(), BackendError> {
        let threshold = self.options.large_file_threshold;
        let (large, small): (Vec<_>, Vec<_>) =
            files.into_iter().partition(|(_, f)| f.size >= threshold);
        let (small_result, large_result) = {
            let small_fut = self.upload_small(small, source);
            let large_fut = self.upload_large(large, source);
            futures::join!(small_fut, large_fut)
        };
        // Record both sides' successes before reporting either's failure.
        let mut first_err = None;
        for r in [small_result, large_result] {
            match r {
                (locs, None) => uploaded.extend(locs),
                (locs, Some(e)) => {
                    uploaded.extend(locs);
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn put_pack(
        &self,
        pack: SealedPack,
    ) -> Result<Vec<(ContentHash, BlobLoc)>, BackendError> {
        let key = self.pack_key(&pack.id)?;
        self.remote
            .put(&key, pack.bytes.clone(), PutMode::Overwrite)
            .await
            .map_err(|e| remote_err("put", &key, e))?;
        let ikey = self.index_key(&pack.id)?;
        self.remote
            .put(&ikey, pack.index.encode(), PutMode::Overwrite)
            .await
            .map_err(|e| remote_err("put", &ikey, e))?;
        Ok(pack.locations().collect())
    }

    /// Packs small files: read ahead, fill a pack, upload it while the next
    /// one fills. Memory: `READ_AHEAD × large_file_threshold` plus
    /// `(parts_in_flight + 1) × pack_size`.
    async fn upload_small(
        &self,
        files: Vec<(RelPath, FileMeta)>,
        source: &Source,
    ) -> (Vec<(ContentHash, BlobLoc)>, Option<BackendError>) {
        let mut done = Vec::new();
        let mut in_flight = FuturesUnordered::new();
        let mut pack = PackBuilder::with_capacity(self.options.pack_size);
        let mut reads = stream::iter(files)
            .map(|(path, meta)| async move {
                // Held until the bytes are copied into the pack.
                let share = self.budget.take(meta.size).await?;
                let bytes = source.read_all(&path, &meta).await?;
                Ok::<_, BackendError>((meta.hash, bytes, share))
            })
            // Bounds the files read ahead of the packer (memory; they
            // make no requests).
            .buffered(READ_AHEAD.min(self.remote.requests).max(1));
        let max_in_flight = self.options.parts_in_flight.max(1);
        let mut error = None;
        loop {
            let next = reads.next().await;
            let seal = match &next {
                Some(Ok((hash, bytes, _share))) => {
                    pack.add(*hash, bytes);
                    pack.len() >= self.options.pack_size || pack.is_full_of_blobs()
                }
                Some(Err(_)) => false,
                None => !pack.is_empty(),
            };
            if let Some(Err(e)) = next {
                error = Some(e);
                break;
            }
            if seal {
                let full = std::mem::replace(
                    &mut pack,
                    PackBuilder::with_capacity(self.options.pack_size),
                );
                while in_flight.len() >= max_in_flight {
                    match in_flight.next().await {
                        Some(Ok(locs)) => done.extend::<Vec<_>>(locs),
                        Some(Err(e)) => {
                            error = Some(e);
                            break;
                        }
                        None => break,
                    }
                }
                if error.is_some() {
                    break;
                }
                in_flight.push(self.put_pack(full.seal()));
            }
            if next.is_none() {
                break;
            }
        }
        while let Some(r) = in_flight.next().await {
            match r {
                Ok(locs) => done.extend(locs),
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        (done, error)
    }

    /// Large files: each its own pack (named by its hash), multipart, two
    /// files at a time.
    async fn upload_large(
        &self,
        files: Vec<(RelPath, FileMeta)>,
        source: &Source,
    ) -> (Vec<(ContentHash, BlobLoc)>, Option<BackendError>) {
        let limits = UploadLimits {
            large_file_threshold: self.options.large_file_threshold,
            part_size: self.options.part_size,
            parts_in_flight: self.options.parts_in_flight,
        };
        let results: Vec<Result<(ContentHash, BlobLoc), BackendError>> = stream::iter(files)
            .map(|(path, meta)| async move {
                let mut id = meta.hash.to_hex().to_string();
                let mut key = self.pack_key(&id)?;
                // An existing pack named by this content is reused only
                // while it is young: no snapshot references it (or the blob
                // would be known), so a prune may delete an old one at any
                // moment — even one that listed it before we could renew
                // it. An old one is therefore left alone and the content
                // goes to a pack of a fresh name, which no earlier listing
                // can hold.
                let window = self.options.reuse_window.as_millis();
                let exists = match self.remote.store.head(&key).await {
                    Ok(m) if m.size == meta.size => {
                        let age =
                            i128::from(now_ms()) - i128::from(m.last_modified.timestamp_millis());
                        if age >= window as i128 {
                            id = fresh_pack_id(&id);
                            key = self.pack_key(&id)?;
                            false
                        } else {
                            true
                        }
                    }
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => false,
                    Err(e) => return Err(remote_err("head", &key, e)),
                };
                if !exists {
                    transfer::upload_file(
                        &self.remote,
                        &key,
                        &path,
                        &meta,
                        source,
                        object_store::Attributes::new(),
                        limits,
                        &self.budget,
                    )
                    .await?;
                }
                let index = PackIndex {
                    format: PACK_INDEX_FORMAT.into(),
                    pack: id.clone(),
                    blobs: vec![PackedBlob {
                        hash: meta.hash,
                        offset: 0,
                        length: meta.size,
                    }],
                };
                let ikey = self.index_key(&id)?;
                self.remote
                    .put(&ikey, index.encode(), PutMode::Overwrite)
                    .await
                    .map_err(|e| remote_err("put", &ikey, e))?;
                Ok((
                    meta.hash,
                    BlobLoc {
                        pack: id,
                        offset: 0,
                        length: meta.size,
                    },
                ))
            })
            // Bounds memory, not requests: each file holds its parts in
            // flight (its ByteBudget share) until it is complete.
            .buffer_unordered(2)
            .collect()
            .await;
        let mut done = Vec::new();
        let mut error = None;
        for r in results {
            match r {
                Ok(x) => done.push(x),
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        (done, error)
    }

    /// The manifest of snapshot `at` (`NotFound` if it is not there), or of
    /// the newest state (`None` for an empty remote).
    async fn manifest_at(&self, at: Option<&str>) -> Result<Option<Manifest>, BackendError> {
        match at {
            Some(id) => {
                self.load_manifest(id)
                    .await?
                    .map(Some)
                    .ok_or_else(|| BackendError::NotFound {
                        what: format!("snapshot {id:?} in {}", self.remote.describe),
                    })
            }
            None => Ok(self.head_manifest().await?.map(|(_, m)| m)),
        }
    }

    /// Every entry of the newest state or of `at`.
    pub async fn list(&self, at: Option<&str>) -> Result<sync_core::Listing, BackendError> {
        let Some(manifest) = self.manifest_at(at).await? else {
            return Ok(sync_core::Listing::default());
        };
        let object = self.snapshot_key(&manifest.id)?.to_string();
        let plan = RestorePlan::validate(
            manifest
                .entries
                .iter()
                .map(|e| (e.path.as_str(), PlanKind::of(&e.meta))),
            &object,
        )?;
        Ok(sync_core::Listing {
            entries: plan
                .paths
                .into_iter()
                .zip(&manifest.entries)
                .map(|(p, e)| sync_core::Listed::from_meta(p, &e.meta))
                .collect(),
            id: Some(manifest.id),
        })
    }

    pub async fn restore(
        &self,
        dest: &FsPath,
        options: &RestoreOptions,
    ) -> Result<RestoreReport, BackendError> {
        let Some(manifest) = self.manifest_at(options.at.as_deref()).await? else {
            // Nothing was ever pushed: an empty restore.
            options.check_selected([], &self.remote.describe)?;
            let writer = RestoreWriter::open(dest, options)?;
            return Ok(writer.finish(None)?);
        };
        let object = self.snapshot_key(&manifest.id)?.to_string();
        let plan = RestorePlan::validate(
            manifest
                .entries
                .iter()
                .map(|e| (e.path.as_str(), PlanKind::of(&e.meta))),
            &object,
        )?;
        options.check_selected(&plan.paths, &format!("snapshot {}", manifest.id))?;
        let writer = Arc::new(RestoreWriter::open(dest, options)?);
        // Directories, symlinks and the should-write decisions: one
        // blocking pass (stat calls, no network).
        let items: Vec<(RelPath, ManifestEntry)> = plan
            .paths
            .into_iter()
            .zip(manifest.entries)
            .filter(|(path, _)| options.selects(path))
            .collect();
        if options.paths.is_empty() {
            writer.expect_total(items.len() as u64, manifest.bytes);
        } else {
            let bytes = items
                .iter()
                .filter_map(|(_, e)| e.meta.as_file().map(|f| f.size))
                .fold(0u64, u64::saturating_add);
            writer.expect_total(items.len() as u64, bytes);
        }
        let w = Arc::clone(&writer);
        let wanted: Vec<WantedFile> =
            tokio::task::spawn_blocking(move || -> Result<_, BackendError> {
                let mut wanted = Vec::new();
                for (path, entry) in items {
                    match (entry.meta, entry.blob) {
                        (Meta::Dir { mode }, _) => w.create_dir(&path, mode)?,
                        (Meta::Symlink { target }, _) => w.create_symlink(&path, &target)?,
                        (Meta::File(f), Some(loc)) => {
                            let spec = FileSpec::from(&f);
                            if w.should_write(&path, &spec)? {
                                wanted.push((path, spec, loc));
                            }
                        }
                        (Meta::File(_), None) => {}
                    }
                }
                Ok(wanted)
            })
            .await
            .map_err(|e| BackendError::transient("restore", dest.display().to_string(), e))??;

        // Every pack must exist and be long enough before anything is fetched.
        let mut by_pack: BTreeMap<String, Vec<WantedFile>> = BTreeMap::new();
        for item in wanted {
            by_pack.entry(item.2.pack.clone()).or_default().push(item);
        }
        let checks: Vec<(String, u64, RelPath)> = by_pack
            .iter()
            .map(|(pack, items)| {
                // Checked when the manifest was read (`Manifest::check`).
                let end = items
                    .iter()
                    .map(|i| i.2.end().unwrap_or(u64::MAX))
                    .max()
                    .unwrap_or(0);
                (pack.clone(), end, items[0].0.clone())
            })
            .collect();
        stream::iter(checks)
            .map(|(pack, end, first)| {
                let object = object.clone();
                async move {
                    let key = self.pack_key(&pack)?;
                    match self.remote.store.head(&key).await {
                        Ok(m) if m.size >= end => Ok(()),
                        Ok(m) => Err(BackendError::InvalidRemote {
                            object: key.to_string(),
                            reason: format!(
                                "{} bytes long, but {object} needs {end} (for {first})",
                                m.size
                            ),
                        }),
                        Err(object_store::Error::NotFound { .. }) => {
                            Err(BackendError::InvalidRemote {
                                object: key.to_string(),
                                reason: format!("missing, but {object} references it for {first}"),
                            })
                        }
                        Err(e) => Err(remote_err("head", &key, e)),
                    }
                }
            })
            .buffer_unordered(self.remote.requests)
            .try_collect::<Vec<()>>()
            .await?;

        // Work units: a batch of small blobs of one pack, or one large blob.
        let mut units: Vec<(String, Vec<WantedFile>)> = Vec::new();
        for (pack, items) in by_pack {
            let (large, small): (Vec<_>, Vec<_>) = items
                .into_iter()
                .partition(|i| i.2.length >= self.options.large_file_threshold);
            for item in large {
                units.push((pack.clone(), vec![item]));
            }
            // Batches of at most one pack size of distinct ranges (as
            // `batch_ranges` cuts them); files sharing a range stay
            // together. The items move into their batch, no copies.
            let mut small = small;
            small.sort_unstable_by_key(|i| (i.2.offset, i.2.length));
            // A batch is held in memory until written: within the budget.
            let max_batch = (self.options.pack_size as u64).min(self.budget.total());
            let mut batch: Vec<WantedFile> = Vec::new();
            let mut size = 0u64;
            for item in small {
                let range = (item.2.offset, item.2.length);
                let repeat = batch
                    .last()
                    .is_some_and(|l| (l.2.offset, l.2.length) == range);
                if !repeat {
                    if !batch.is_empty() && size.saturating_add(range.1) > max_batch {
                        units.push((pack.clone(), std::mem::take(&mut batch)));
                        size = 0;
                    }
                    size = size.saturating_add(range.1);
                }
                batch.push(item);
            }
            if !batch.is_empty() {
                units.push((pack.clone(), batch));
            }
        }
        stream::iter(units)
            .map(|(pack, items)| {
                let writer = &writer;
                async move { self.restore_unit(writer, &pack, items).await }
            })
            .buffer_unordered(self.remote.requests)
            .try_collect::<Vec<()>>()
            .await?;
        let writer = Arc::into_inner(writer).ok_or_else(|| {
            BackendError::transient("restore", dest.display().to_string(), "writer still in use")
        })?;
        Ok(writer.finish(Some(manifest.id))?)
    }

    async fn restore_unit(
        &self,
        writer: &Arc<RestoreWriter>,
        pack: &str,
        items: Vec<WantedFile>,
    ) -> Result<(), BackendError> {
        let key = self.pack_key(pack)?;
        if let [(path, spec, loc)] = items.as_slice()
            && loc.length >= self.options.large_file_threshold
        {
            let opts = GetOptions {
                range: Some(GetRange::Bounded(loc.offset..loc.end().unwrap_or(u64::MAX))),
                ..GetOptions::default()
            };
            let _share = self.budget.take(transfer::STREAM_BUFFER).await?;
            let res = self
                .remote
                .store
                .get_opts(&key, opts)
                .await
                .map_err(|e| remote_err("get", &key, e))?;
            return transfer::write_stream(writer, &key, path, spec, res.into_stream()).await;
        }
        let mut ranges: Vec<std::ops::Range<u64>> = items
            .iter()
            .map(|i| i.2.offset..i.2.end().unwrap_or(u64::MAX))
            .collect();
        ranges.sort_by_key(|r| (r.start, r.end));
        ranges.dedup();
        // Empty files need no request (and some stores refuse empty ranges).
        ranges.retain(|r| !r.is_empty());
        // Held until the files are written.
        let in_memory = ranges
            .iter()
            .fold(0u64, |sum, r| sum.saturating_add(r.end - r.start));
        let _share = self.budget.take(in_memory).await?;
        let fetched: Vec<Bytes> = if ranges.is_empty() {
            Vec::new()
        } else {
            self.remote
                .store
                .get_ranges(&key, &ranges)
                .await
                .map_err(|e| remote_err("get", &key, e))?
        };
        let by_range: HashMap<(u64, u64), Bytes> = ranges
            .iter()
            .zip(fetched)
            .map(|(r, b)| ((r.start, r.end), b))
            .collect();
        let files = items
            .into_iter()
            .map(|(path, spec, loc)| {
                let bytes = by_range
                    .get(&(loc.offset, loc.end().unwrap_or(u64::MAX)))
                    .cloned()
                    .unwrap_or_default();
                (path, spec, bytes)
            })
            .collect();
        transfer::write_files(writer, &key, files).await
    }

    /// Checkpoints that became head, newest first: the chain from the head
    /// through each manifest's parent (a manifest that lost a race and was
    /// re-based is not part of it; its re-based successor is).
    pub async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, BackendError> {
        let mut out = Vec::new();
        let Some((_, head)) = self.read_head().await? else {
            return Ok(out);
        };
        let mut next = Some(head.snapshot);
        // A parent chain that comes back to itself would never end.
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(id) = next.take() {
            if out.len() >= limit {
                break;
            }
            if !seen.insert(id.clone()) {
                return Err(BackendError::InvalidRemote {
                    object: self.snapshot_key(&id)?.to_string(),
                    reason:
                        "its chain of parents comes back to it (a cycle): edited by hand or hostile"
                            .into(),
                });
            }
            match self.load_manifest(&id).await {
                Ok(Some(m)) => {
                    next = m.parent.clone();
                    out.push(HistoryEntry {
                        id: m.id,
                        time: time_of(m.time_ms),
                        files: m.files,
                        bytes: m.bytes,
                    });
                }
                // Pruned (or never written): the chain ends here.
                Ok(None) => {}
                Err(BackendError::InvalidRemote { object, reason }) if !out.is_empty() => {
                    tracing::warn!(%object, %reason, "history stops at an unreadable snapshot");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub async fn prune(&self, options: &PruneOptions) -> Result<PruneReport, BackendError> {
        let mut writer_state = self.state.lock().await;
        let mut report = PruneReport::default();
        let cutoff = chrono_cutoff(options.min_age);
        // The committed chain, newest first (id → position).
        let chain: HashMap<String, usize> = self
            .history(usize::MAX)
            .await?
            .into_iter()
            .enumerate()
            .map(|(pos, h)| (h.id, pos))
            .collect();
        // A listing holds a request permit while it is read (see
        // `Remote::with_request_budget`): each is collected — only the
        // names that matter, one short record each — and dropped before
        // any other request.
        let dir = self.remote.key("snapshots")?;
        let listed: Vec<(String, Path, i64)> = self
            .remote
            .store
            .list(Some(&dir))
            .map_err(|e| remote_err("list", &dir, e))
            .try_filter_map(|o| async move {
                let id = o.location.filename().unwrap_or("").to_owned();
                Ok(is_snapshot_id(&id)
                    .then(|| (id, o.location, o.last_modified.timestamp_millis())))
            })
            .try_collect()
            .await?;
        let mut ids = Vec::new();
        for (id, location, last_modified) in listed {
            let drop = match options.keep_last {
                None => false,
                Some(keep) => match chain.get(&id) {
                    // Committed history beyond the newest `keep` (the head
                    // itself always stays).
                    Some(pos) => *pos >= keep.max(1),
                    // Not in the chain: a lost race or an interrupted push;
                    // young ones may still be about to become head.
                    None => last_modified <= cutoff,
                },
            };
            if drop {
                if !options.dry_run {
                    self.remote.delete(&location).await?;
                }
                report.snapshots_deleted.push(id);
            } else {
                ids.push(id);
            }
        }
        // What the remaining snapshots reference. Any unreadable manifest
        // stops the prune: deleting on uncertain grounds could lose data.
        let mut referenced: HashSet<String> = HashSet::new();
        for id in &ids {
            let m = self.load_manifest(id).await?.ok_or_else(|| {
                BackendError::transient(
                    "prune",
                    self.remote.describe.clone(),
                    format!("snapshot {id} disappeared during prune; try again"),
                )
            })?;
            referenced.extend(m.blob_locations().map(|(_, l)| l.pack.clone()));
        }
        let dir = self.remote.key("packs")?;
        let mut doomed: Vec<(String, Path, u64)> = Vec::new();
        let mut packs = self.remote.store.list(Some(&dir));
        while let Some(p) = packs.next().await {
            let p = p.map_err(|e| remote_err("list", &dir, e))?;
            let id = p.location.filename().unwrap_or("").to_owned();
            if !is_pack_id(&id) {
                continue;
            }
            if referenced.contains(&id) {
                report.packs_referenced += 1;
            } else if p.last_modified.timestamp_millis() > cutoff {
                report.packs_kept_young += 1;
            } else {
                doomed.push((id, p.location, p.size));
            }
        }
        drop(packs);
        for (id, location, size) in doomed {
            if !options.dry_run {
                // The index first: nobody reuses a pack that is going.
                self.remote.delete(&self.index_key(&id)?).await?;
                self.remote.delete(&location).await?;
            }
            report.packs_deleted += 1;
            report.bytes_deleted = report.bytes_deleted.saturating_add(size);
        }
        if !options.dry_run
            && let Some(n) = HEADS.newest(&self.remote).await?
        {
            let floor = HEADS.floor(&self.remote).await?;
            HEADS.retire(&self.remote, n, floor, true).await;
        }
        if !options.dry_run {
            // Blobs this process remembered may be gone now.
            writer_state.known.clear();
            writer_state.loaded_indexes.clear();
        }
        Ok(report)
    }
}

/// A pack id (64 hex digits) for content `id` that no other pack has.
fn fresh_pack_id(id: &str) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(id.as_bytes());
    hasher.update(&rand::random::<[u8; 16]>());
    hasher.finalize().to_hex().to_string()
}

/// `now - age` in milliseconds since the epoch.
fn chrono_cutoff(age: Duration) -> i64 {
    let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
    now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
}
