//! A push in format v2 (FORMAT.md "Write order and crash consistency"):
//! content → trees → snapshot → head → confirm.
//!
//! 1. **Read** the newest head and its snapshot ([`read_base`]).
//! 2. **Content**: every upserted file whose content this writer has not
//!    stored within the reuse window is framed (zstd where it pays),
//!    sealed (encrypted repositories) and appended to a pack; packs are
//!    uploaded as they fill ([`Packer`]). Files up to 4 MiB are one blob,
//!    larger ones 4 MiB chunks (streamed, never read whole).
//! 3. **Trees**: only the directories the checkpoint touches and their
//!    ancestors are rebuilt, deepest first ([`build_tree`]): each is read
//!    from the base, changed, and paged again; pages whose ids the writer
//!    read or wrote within the window are not stored again, so a one-file
//!    edit stores the leaf, the branch path and the ancestors' pages —
//!    O(depth), not O(tree).
//! 4. **Snapshot** record, then 5. the **head** generation with
//!    create-if-absent (the `heads` protocol), confirmed before the push is
//!    reported. A lost race re-bases: step 3 again on the newer head, the
//!    content already stored is reused.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt, stream};
use object_store::PutMode;
use sync_core::{BackendError, Change, Checkpoint, FileMeta, Meta, PushReceipt, RelPath, Source};

use super::format::{self, ChangeSummary, HeadRecord, SNAPSHOT_FORMAT, SnapshotRecord, Totals};
use super::node::{
    self, Chunk, ChunkList, Content, Entry, EntryKind, FileEntry, Loc, Node, NodeId, PackId,
};
use super::pages;
use super::read::{self, NodeCache, now_ms};
use super::repo::Repo;
use crate::heads::{Confirmation, CreateOutcome, Generations, delete_all};
use crate::store::{Remote, remote_err};
use crate::transfer::ByteBudget;

/// Heads: the newest 17 are kept (readers may be on them), older ones
/// retired in batches of 32 (see [`crate::heads`]).
pub(crate) const HEADS: Generations = Generations {
    dir: "heads",
    floor_dir: "heads-floor",
    keep: 17,
    batch: 32,
};
/// Head generations a push tries before it fails (as transient: the
/// engine keeps the checkpoint and retries later).
const MAX_ATTEMPTS: usize = 16;
/// Small files read ahead of the packer.
const READ_AHEAD: usize = 8;
/// Blobs at least this large are framed on a blocking thread (measured:
/// handing every 4 KiB blob to one cost more than it saved).
const BLOCKING_FRAME: usize = 64 << 10;

/// What a push needs besides the checkpoint.
pub(crate) struct Ctx<'a> {
    pub(crate) repo: &'a Repo,
    /// Nodes of bases this writer read or nodes it wrote (rule W1).
    pub(crate) cache: &'a NodeCache,
    /// Nodes read for anything else (conflict notes).
    pub(crate) read_cache: &'a NodeCache,
    pub(crate) budget: &'a ByteBudget,
    pub(crate) pack_size: usize,
    pub(crate) parts_in_flight: usize,
    pub(crate) reuse_window_ms: u64,
}

/// What a writer remembers between pushes.
#[derive(Debug, Default)]
pub(crate) struct WriterState {
    /// Content this writer stored, by plaintext hash, and when (FORMAT.md
    /// rule W2: reused only within the window).
    uploads: HashMap<[u8; 32], (Content, u64)>,
    /// The newest generation this writer confirmed (with the repository
    /// id): a remote whose newest is lower was rolled back.
    confirmed: Option<([u8; 16], u64)>,
}

impl WriterState {
    fn forget_old(&mut self, now: u64, window: u64) {
        self.uploads
            .retain(|_, (_, at)| now.saturating_sub(*at) < window);
    }
}

/// The newest state: head generation, its record, its snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Base {
    pub(crate) generation: u64,
    pub(crate) snapshot: SnapshotRecord,
    pub(crate) root: NodeId,
}

fn invalid(object: impl ToString, reason: impl Into<String>) -> BackendError {
    BackendError::InvalidRemote {
        object: object.to_string(),
        reason: reason.into(),
    }
}

/// Reads the newest head and the snapshot it names (`None`: never pushed).
pub(crate) async fn read_base(repo: &Repo) -> Result<Option<Base>, BackendError> {
    let Some((n, bytes)) = HEADS.latest(&repo.remote, repo.head_limit()).await? else {
        return Ok(None);
    };
    let key = HEADS.key(&repo.remote, n)?;
    let head = repo.decode_head(n, &bytes, &key)?;
    let Some((snapshot, root)) = repo.get_snapshot(&head.snapshot).await? else {
        return Err(invalid(
            &key,
            format!("names snapshot {}, which is missing", head.snapshot),
        ));
    };
    if snapshot.parent != head.parent_snapshot && snapshot.rewrites != head.parent_snapshot {
        return Err(invalid(
            &key,
            format!(
                "the chain of heads is broken: the head names parent {:?}, its snapshot {:?}",
                head.parent_snapshot, snapshot.parent
            ),
        ));
    }
    Ok(Some(Base {
        generation: n,
        snapshot,
        root,
    }))
}

/// Refuses a remote whose newest generation is below one this writer
/// confirmed (FORMAT.md "Head protocol v2", rule 2).
fn check_rollback(
    repo: &Repo,
    state: &WriterState,
    base: Option<&Base>,
) -> Result<(), BackendError> {
    if let Some((id, confirmed)) = state.confirmed
        && id == repo.id
    {
        let newest = base.map_or(0, |b| b.generation);
        if newest < confirmed {
            return Err(BackendError::permanent(
                "push",
                repo.remote.describe.clone(),
                format!(
                    "the remote's newest head is generation {newest}, but this writer confirmed generation {confirmed}: heads were deleted (rolled back or replaced by an older copy). Refusing to push onto an older state; restart tether after checking the remote"
                ),
            ));
        }
    }
    Ok(())
}

/// Applies `checkpoint`: see the module doc.
pub(crate) async fn push(
    ctx: &Ctx<'_>,
    state: &mut WriterState,
    checkpoint: &Checkpoint,
    source: &Source,
) -> Result<PushReceipt, BackendError> {
    let repo = ctx.repo;
    let started = now_ms();
    state.forget_old(started, ctx.reuse_window_ms);
    let (files_uploaded, bytes_uploaded) = upload(ctx, state, checkpoint, source).await?;
    let summary = ChangeSummary {
        upserts: checkpoint.upserts().count() as u64,
        deletes: checkpoint.deletes().count() as u64,
        bytes_uploaded,
    };
    for _attempt in 0..MAX_ATTEMPTS {
        let base = read_base(repo).await?;
        check_rollback(repo, state, base.as_ref())?;
        let (root, totals) = build_tree(ctx, state, base.as_ref(), checkpoint).await?;
        let time_ms = now_ms();
        let id = format::new_snapshot_id(time_ms);
        let parent = base.as_ref().map(|b| b.snapshot.id.clone());
        let record = SnapshotRecord {
            format: SNAPSHOT_FORMAT.into(),
            id: id.clone(),
            parent: parent.clone(),
            time_ms,
            host: host(),
            tether: env!("CARGO_PKG_VERSION").into(),
            root: root.to_string(),
            totals,
            change: summary,
            rewrites: None,
        };
        let (skey, sbytes) = repo.snapshot_unit(&record)?;
        repo.remote
            .put(&skey, sbytes, PutMode::Overwrite)
            .await
            .map_err(|e| remote_err("put", &skey, e))?;
        let next = HEADS.next(&repo.remote, base.as_ref().map(|b| b.generation))?;
        verify_aged_uploads(ctx, state).await?;
        let head = HeadRecord {
            format: format::HEAD_FORMAT.into(),
            generation: next,
            snapshot: id.clone(),
            parent_snapshot: parent,
            time_ms,
        };
        let why = match HEADS
            .create(&repo.remote, next, repo.head_unit(&head)?)
            .await?
        {
            CreateOutcome::Created(written) => match HEADS.confirm(&repo.remote, &written).await? {
                Confirmation::Confirmed { newest, floor } => {
                    state.confirmed = Some((repo.id, newest.max(next)));
                    HEADS.retire(&repo.remote, newest, floor, false).await;
                    let conflict = match (checkpoint.base(), base.as_ref()) {
                        (Some(own), Some(b)) if own != b.snapshot.id => {
                            conflict_note(ctx, own, b, checkpoint, &id).await
                        }
                        _ => None,
                    };
                    return Ok(PushReceipt {
                        head: Some(id),
                        files_uploaded,
                        bytes_uploaded,
                        conflict,
                    });
                }
                Confirmation::Orphaned(why) => {
                    HEADS.remove_orphan(&repo.remote, &written).await;
                    why
                }
            },
            CreateOutcome::Taken => format!("another writer created head generation {next} first"),
        };
        tracing::info!(remote = %repo.remote.describe, reason = %why, "the head moved; re-basing this checkpoint");
        // Never became head: remove it so history stays honest.
        delete_all(&repo.remote, vec![skey]).await;
    }
    Err(BackendError::transient(
        "push",
        repo.remote.describe.clone(),
        format!(
            "the head kept moving under concurrent writers ({MAX_ATTEMPTS} attempts); the checkpoint is kept and retried"
        ),
    ))
}

/// Rule W2 for a slow push: content this writer stored more than the
/// reuse window ago is no longer protected by prune's grace period on its
/// own, so before a head names it, check that it is still there. Missing →
/// a transient error: the engine retries the checkpoint, which stores it
/// again (the stale uploads are forgotten).
async fn verify_aged_uploads(ctx: &Ctx<'_>, state: &mut WriterState) -> Result<(), BackendError> {
    let now = now_ms();
    let mut keys: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for (content, at) in state.uploads.values() {
        if now.saturating_sub(*at) < ctx.reuse_window_ms {
            continue;
        }
        match content {
            Content::Empty => {}
            Content::Blob(loc) => {
                keys.insert(format::pack_rel(&loc.pack));
            }
            Content::Chunks(chunks) => {
                keys.extend(chunks.iter().map(|c| format::pack_rel(&c.loc.pack)));
            }
            Content::Lists(ids) => keys.extend(ids.iter().map(format::node_rel)),
        }
    }
    if keys.is_empty() {
        return Ok(());
    }
    let remote = &ctx.repo.remote;
    let missing: Vec<String> = stream::iter(keys)
        .map(|rel| async move {
            let key = remote.key(&rel)?;
            match object_store::ObjectStoreExt::head(&*remote.store, &key).await {
                Ok(_) => Ok(None),
                Err(object_store::Error::NotFound { .. }) => Ok(Some(key.to_string())),
                Err(e) => Err(remote_err("head", &key, e)),
            }
        })
        .buffer_unordered(remote.requests)
        .try_filter_map(|m| async move { Ok(m) })
        .try_collect()
        .await?;
    if missing.is_empty() {
        return Ok(());
    }
    state.uploads.clear();
    Err(BackendError::transient(
        "push",
        remote.describe.clone(),
        format!(
            "{} object(s) this push stored more than the reuse window ago are gone (removed by prune while the push was slow), e.g. {}; the checkpoint is kept and pushed again",
            missing.len(),
            missing[0]
        ),
    ))
}

fn host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty() && h.len() <= 255)
        .unwrap_or_else(|| "unknown".into())
}

/// What a path is, compared for conflicts (not where its bytes are).
fn same(a: &Option<Entry>, b: &Option<Entry>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => match (&a.kind, &b.kind) {
            (EntryKind::File(x), EntryKind::File(y)) => x.hash == y.hash && x.mode == y.mode,
            (EntryKind::Dir { mode: x, .. }, EntryKind::Dir { mode: y, .. }) => x == y,
            (EntryKind::Symlink { target: x }, EntryKind::Symlink { target: y }) => x == y,
            _ => false,
        },
        _ => false,
    }
}

/// Paths this checkpoint changed that another writer also changed since
/// this writer's own base `own`; the receipt's note, if any.
async fn conflict_note(
    ctx: &Ctx<'_>,
    own: &str,
    base: &Base,
    checkpoint: &Checkpoint,
    id: &str,
) -> Option<String> {
    let old_root = match ctx.repo.get_snapshot(own).await {
        Ok(Some((_, root))) => root,
        Ok(None) => {
            tracing::debug!(
                snapshot = own,
                "this writer's base snapshot is gone; cannot tell conflicts since it"
            );
            return None;
        }
        Err(e) => {
            tracing::warn!(snapshot = own, error = %e, "cannot read this writer's base snapshot; cannot tell conflicts since it");
            return None;
        }
    };
    let mut contested = Vec::new();
    for path in checkpoint.paths() {
        let old = read::lookup(ctx.repo, ctx.read_cache, &old_root, path).await;
        let new = read::lookup(ctx.repo, ctx.read_cache, &base.root, path).await;
        match (old, new) {
            (Ok(o), Ok(n)) if !same(&o, &n) => contested.push(path.as_str().to_owned()),
            (Ok(_), Ok(_)) => {}
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot compare with another writer's snapshot");
                return None;
            }
        }
    }
    (!contested.is_empty()).then(|| {
        format!(
            "another writer changed {} in snapshot {}; this checkpoint's version is now the head ({id}), theirs stays in snapshot {}",
            contested.join(", "),
            base.snapshot.id,
            base.snapshot.id
        )
    })
}

/// Appends stored units to packs and uploads each pack when it is full,
/// at most `max_in_flight` at once (each upload its own task, so uploads
/// progress while the next pack fills).
struct Packer {
    remote: Remote,
    pack_size: usize,
    max_in_flight: usize,
    buf: Vec<u8>,
    id: PackId,
    in_flight: FuturesUnordered<tokio::task::JoinHandle<Result<(), BackendError>>>,
}

fn join_err(e: tokio::task::JoinError) -> BackendError {
    BackendError::transient("put", "pack upload", e)
}

impl Packer {
    fn new(remote: Remote, pack_size: usize, max_in_flight: usize) -> Self {
        Packer {
            remote,
            pack_size,
            max_in_flight: max_in_flight.max(1),
            buf: Vec::new(),
            id: format::new_pack_id(),
            in_flight: FuturesUnordered::new(),
        }
    }

    async fn add(&mut self, unit: &[u8]) -> Result<Loc, BackendError> {
        if !self.buf.is_empty() && self.buf.len().saturating_add(unit.len()) > self.pack_size {
            self.seal().await?;
        }
        let offset = self.buf.len() as u64;
        self.buf.extend_from_slice(unit);
        Ok(Loc {
            pack: self.id,
            offset,
            stored_len: unit.len() as u64,
        })
    }

    async fn seal(&mut self) -> Result<(), BackendError> {
        while self.in_flight.len() >= self.max_in_flight {
            if let Some(r) = self.in_flight.next().await {
                r.map_err(join_err)??;
            }
        }
        let bytes = Bytes::from(std::mem::take(&mut self.buf));
        let id = std::mem::replace(&mut self.id, format::new_pack_id());
        let key = self.remote.key(&format::pack_rel(&id))?;
        let remote = self.remote.clone();
        self.in_flight.push(tokio::spawn(async move {
            remote
                .put(&key, bytes, PutMode::Overwrite)
                .await
                .map_err(|e| remote_err("put", &key, e))
                .map(|_| ())
        }));
        Ok(())
    }

    async fn finish(mut self) -> Result<(), BackendError> {
        if !self.buf.is_empty() {
            self.seal().await?;
        }
        let mut first = None;
        while let Some(r) = self.in_flight.next().await {
            if let Err(e) = r.map_err(join_err).and_then(|r| r) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Frames and seals one blob, on a blocking thread when it is large.
async fn blob_unit(repo: &Repo, plain: Bytes, hash: [u8; 32]) -> Result<Vec<u8>, BackendError> {
    if plain.len() < BLOCKING_FRAME {
        return repo.blob_unit(&plain, &hash);
    }
    // The repository's keys stay on this thread: frame on the blocking
    // one (zstd is the cost), seal here.
    let compression = repo.compression;
    let frame = tokio::task::spawn_blocking(move || super::frame::encode_blob(&plain, compression))
        .await
        .map_err(|e| BackendError::transient("push", "compress", e))?;
    repo.seal_frame_as_blob(frame, &hash)
}

/// Stores the content of every upserted file this writer has not stored
/// within the window; returns (files, bytes) uploaded.
async fn upload(
    ctx: &Ctx<'_>,
    state: &mut WriterState,
    checkpoint: &Checkpoint,
    source: &Source,
) -> Result<(u64, u64), BackendError> {
    // In path order, so that one directory's files sit next to each other
    // in a pack and a restore fetches them with one ranged request.
    let mut missing: Vec<(RelPath, FileMeta)> = Vec::new();
    let mut seen: std::collections::HashSet<[u8; 32]> = std::collections::HashSet::new();
    for (path, change) in checkpoint.iter() {
        if let Change::Upsert(Meta::File(f)) = change
            && f.size > 0
            && !state.uploads.contains_key(f.hash.as_bytes())
            && seen.insert(*f.hash.as_bytes())
        {
            missing.push((path.clone(), f.clone()));
        }
    }
    drop(seen);
    if missing.is_empty() {
        return Ok((0, 0));
    }
    let files = missing.len() as u64;
    let bytes = missing
        .iter()
        .fold(0u64, |s, (_, f)| s.saturating_add(f.size));
    let (large, small): (Vec<_>, Vec<_>) = missing
        .into_iter()
        .partition(|(_, f)| f.size > node::CHUNK_SIZE);
    let repo = ctx.repo;
    let mut packer = Packer::new(repo.remote.clone(), ctx.pack_size, ctx.parts_in_flight);
    let mut done: Vec<([u8; 32], Content)> = Vec::new();
    let result: Result<(), BackendError> = async {
        let mut reads = stream::iter(small)
            .map(|(path, meta)| async move {
                let share = ctx.budget.take(meta.size).await?;
                let plain = source.read_all(&path, &meta).await?;
                let hash = *meta.hash.as_bytes();
                let unit = blob_unit(repo, plain, hash).await?;
                Ok::<_, BackendError>((hash, unit, share))
            })
            .buffered(READ_AHEAD);
        while let Some(r) = reads.next().await {
            let (hash, unit, _share) = r?;
            let loc = packer.add(&unit).await?;
            done.push((hash, Content::Blob(loc)));
        }
        drop(reads);
        for (path, meta) in large {
            let content = upload_chunked(ctx, &mut packer, source, &path, &meta).await?;
            done.push((*meta.hash.as_bytes(), content));
        }
        Ok(())
    }
    .await;
    // Nothing counts as stored until its pack is.
    let finished = packer.finish().await;
    result?;
    finished?;
    let now = now_ms();
    for (hash, content) in done {
        state.uploads.insert(hash, (content, now));
    }
    Ok((files, bytes))
}

/// A file larger than one chunk: 4 MiB chunks, each a blob, streamed.
async fn upload_chunked(
    ctx: &Ctx<'_>,
    packer: &mut Packer,
    source: &Source,
    path: &RelPath,
    meta: &FileMeta,
) -> Result<Content, BackendError> {
    let repo = ctx.repo;
    let chunk_size = usize::try_from(node::CHUNK_SIZE).unwrap_or(usize::MAX);
    let mut reader = source.open(path, meta).await?.with_chunk_size(chunk_size);
    let mut chunks: Vec<Chunk> = Vec::new();
    loop {
        let share = ctx.budget.take(node::CHUNK_SIZE).await?;
        let Some(plain) = reader.next_chunk().await? else {
            break;
        };
        let plain_len = plain.len() as u64;
        let hash = *blake3::hash(&plain).as_bytes();
        let unit = blob_unit(repo, plain, hash).await?;
        let loc = packer.add(&unit).await?;
        drop(share);
        chunks.push(Chunk {
            loc,
            plain_len,
            hash,
        });
    }
    if chunks.len() as u64 <= node::MAX_INLINE_CHUNKS {
        return Ok(Content::Chunks(chunks));
    }
    // More than 1,024 chunks (> 4 GiB): chunk-list nodes.
    let mut ids = Vec::new();
    for part in chunks.chunks(usize::try_from(node::CHUNKS_PER_LIST).unwrap_or(usize::MAX)) {
        let bytes = node::encode(&Node::List(ChunkList {
            chunks: part.to_vec(),
        }));
        let id = node::node_id(&bytes, repo.id_key());
        let (key, unit) = repo.node_unit(&pages::StoredNode { id, bytes })?;
        // Its chunks' packs must exist before it: they are uploaded by
        // `finish`, which runs before any tree names this list; a list
        // written early names packs in flight, which nothing reads yet.
        repo.remote
            .put(&key, unit, PutMode::Overwrite)
            .await
            .map_err(|e| remote_err("put", &key, e))?;
        ids.push(id);
    }
    Ok(Content::Lists(ids))
}

/// One directory's pending changes: name → new metadata (`None`: deleted).
type DirChanges<'a> = BTreeMap<String, Option<&'a Meta>>;

fn depth(d: &Option<RelPath>) -> usize {
    d.as_ref().map_or(0, |p| p.as_str().split('/').count())
}

fn split(path: &RelPath) -> (Option<RelPath>, String) {
    (path.parent(), path.file_name().to_owned())
}

/// Rebuilds the directories `checkpoint` touches on `base`, stores their
/// new nodes, and returns the new root and the snapshot's totals.
async fn build_tree(
    ctx: &Ctx<'_>,
    state: &WriterState,
    base: Option<&Base>,
    checkpoint: &Checkpoint,
) -> Result<(NodeId, Totals), BackendError> {
    let repo = ctx.repo;
    let mut per_dir: BTreeMap<Option<RelPath>, DirChanges<'_>> = BTreeMap::new();
    for (path, change) in checkpoint.iter() {
        let (dir, name) = split(path);
        let v = match change {
            Change::Upsert(m) => Some(m),
            // Covered by an ancestor that is deleted or replaced by a
            // file or symlink: rebuilding its directory would bring the
            // ancestor back as a directory.
            Change::Delete
                if path.ancestors().any(|a| {
                    matches!(
                        checkpoint.get(&a),
                        Some(Change::Delete | Change::Upsert(Meta::File(_) | Meta::Symlink { .. }))
                    )
                }) =>
            {
                continue;
            }
            Change::Delete => None,
        };
        per_dir.entry(dir).or_default().insert(name, v);
    }
    // Every ancestor of a changed directory is rebuilt too.
    let mut dirs: BTreeSet<Option<RelPath>> = BTreeSet::new();
    for d in per_dir.keys() {
        let mut cur = d.clone();
        loop {
            if !dirs.insert(cur.clone()) {
                break;
            }
            match cur {
                None => break,
                Some(p) => cur = p.parent(),
            }
        }
    }
    let mut order: Vec<Option<RelPath>> = dirs.into_iter().collect();
    order.sort_by_key(|d| std::cmp::Reverse(depth(d)));

    let mut totals = base.map(|b| b.snapshot.totals).unwrap_or_default();
    let mut built: HashMap<Option<RelPath>, NodeId> = HashMap::new();
    // Rebuilt directories by parent: (name, new subtree).
    let mut built_children: HashMap<Option<RelPath>, Vec<(String, NodeId)>> = HashMap::new();
    let seen_since = now_ms().saturating_sub(ctx.reuse_window_ms);
    let empty: DirChanges<'_> = BTreeMap::new();
    let mut empty_stored = false;
    let mut nodes = NodeWriter {
        pending: Vec::new(),
        ids: std::collections::HashSet::new(),
        bytes: 0,
        seen_since,
    };
    for d in order {
        let deleted_here = d.as_ref().is_some_and(|p| {
            !matches!(
                checkpoint.get(p),
                None | Some(Change::Upsert(Meta::Dir { .. }))
            )
        });
        let old_entries = match (base, deleted_here) {
            (Some(b), false) => match dir_id(ctx, &b.root, d.as_ref()).await? {
                Some(id) => read::read_dir(repo, ctx.cache, &id, d.as_ref()).await?,
                None => Vec::new(),
            },
            _ => Vec::new(),
        };
        let mut map: BTreeMap<String, Entry> = old_entries
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        let changes = per_dir.get(&d).unwrap_or(&empty);
        for (name, change) in changes {
            let path = match &d {
                None => RelPath::new(name.clone()),
                Some(p) => p.join(name),
            }
            .map_err(|e| BackendError::permanent("push", name.clone(), e.to_string()))?;
            let old = map.remove(name);
            let rebuilt = built.contains_key(&Some(path.clone()));
            let old_dir = matches!(
                &old,
                Some(Entry {
                    kind: EntryKind::Dir { .. },
                    ..
                })
            );
            let new_dir = matches!(change, Some(Meta::Dir { .. }));
            if let Some(old) = &old
                && !(old_dir && (rebuilt || new_dir))
            {
                subtract(ctx, &mut totals, old).await?;
            }
            let Some(meta) = change else { continue };
            let kind = match meta {
                Meta::File(f) => {
                    let content = if f.size == 0 {
                        Content::Empty
                    } else {
                        state
                            .uploads
                            .get(f.hash.as_bytes())
                            .map(|(c, _)| c.clone())
                            .ok_or_else(|| {
                                BackendError::transient(
                                    "push",
                                    repo.remote.describe.clone(),
                                    format!("the content of {path} was not uploaded"),
                                )
                            })?
                    };
                    totals.files = totals.files.saturating_add(1);
                    totals.bytes = totals.bytes.saturating_add(f.size);
                    EntryKind::File(FileEntry {
                        mode: f.mode & node::MAX_MODE,
                        size: f.size,
                        mtime_ns: f.mtime_ns,
                        hash: *f.hash.as_bytes(),
                        content,
                    })
                }
                Meta::Symlink { target } => {
                    totals.symlinks = totals.symlinks.saturating_add(1);
                    EntryKind::Symlink {
                        target: target.clone(),
                    }
                }
                Meta::Dir { mode } => {
                    let subtree = match &old {
                        Some(Entry {
                            kind: EntryKind::Dir { subtree, .. },
                            ..
                        }) => *subtree,
                        _ => {
                            if !empty_stored {
                                let tree = pages::build_dir(
                                    &[],
                                    repo.boundary(),
                                    repo.id_key(),
                                    &repo.limits,
                                )
                                .map_err(|e| BackendError::permanent("push", "/", e.to_string()))?;
                                nodes.add(ctx, tree.nodes).await?;
                                empty_stored = true;
                            }
                            empty_dir_id(repo)
                        }
                    };
                    if !old_dir {
                        totals.dirs = totals.dirs.saturating_add(1);
                    }
                    EntryKind::Dir {
                        mode: mode & node::MAX_MODE,
                        subtree,
                    }
                }
            };
            map.insert(
                name.clone(),
                Entry {
                    name: name.clone(),
                    kind,
                },
            );
        }
        // Rebuilt subdirectories get their new subtree.
        for (name, id) in built_children.remove(&d).unwrap_or_default() {
            let mode = match map.get(&name).map(|e| &e.kind) {
                Some(EntryKind::Dir { mode, .. }) => *mode,
                _ => {
                    totals.dirs = totals.dirs.saturating_add(1);
                    sync_core::entry::DEFAULT_DIR_MODE
                }
            };
            map.insert(
                name.clone(),
                Entry {
                    name,
                    kind: EntryKind::Dir { mode, subtree: id },
                },
            );
        }
        let entries: Vec<Entry> = map.into_values().collect();
        let tree = pages::build_dir(&entries, repo.boundary(), repo.id_key(), &repo.limits)
            .map_err(|e| {
                BackendError::permanent(
                    "push",
                    repo.remote.describe.clone(),
                    format!("directory {}: {e}", read::shown(d.as_ref())),
                )
            })?;
        nodes.add(ctx, tree.nodes).await?;
        if let Some(p) = &d {
            built_children
                .entry(p.parent())
                .or_default()
                .push((p.file_name().to_owned(), tree.root));
        }
        built.insert(d, tree.root);
    }
    let root = match built.get(&None) {
        Some(r) => *r,
        None => match base {
            Some(b) => b.root,
            None => {
                let tree = pages::build_dir(&[], repo.boundary(), repo.id_key(), &repo.limits)
                    .map_err(|e| BackendError::permanent("push", "/", e.to_string()))?;
                nodes.add(ctx, tree.nodes).await?;
                tree.root
            }
        },
    };
    nodes.flush(ctx).await?;
    Ok((root, totals))
}

/// The id of the shared empty directory leaf.
fn empty_dir_id(repo: &Repo) -> NodeId {
    node::node_id(
        &node::encode(&Node::Leaf(node::Leaf::default())),
        repo.id_key(),
    )
}

/// Collects the nodes a push builds and stores them in batches of about
/// [`NODE_BATCH_BYTES`], each batch `concurrency` requests wide: one round
/// of requests for many directories instead of one per directory, with
/// memory bounded by the batch. Nodes reach the store in batches, not
/// strictly bottom-up; nothing names them until the head is created, after
/// every batch.
struct NodeWriter {
    pending: Vec<pages::StoredNode>,
    /// Ids in `pending` (a directory's empty subdirectories share a node).
    ids: std::collections::HashSet<NodeId>,
    bytes: usize,
    seen_since: u64,
}

/// Bytes of node encodings collected before a batch is stored.
const NODE_BATCH_BYTES: usize = 4 << 20;

impl NodeWriter {
    async fn add(
        &mut self,
        ctx: &Ctx<'_>,
        nodes: Vec<pages::StoredNode>,
    ) -> Result<(), BackendError> {
        for n in nodes {
            if ctx.cache.seen_since(&n.id, self.seen_since) || !self.ids.insert(n.id) {
                continue;
            }
            self.bytes = self.bytes.saturating_add(n.bytes.len());
            self.pending.push(n);
        }
        if self.bytes >= NODE_BATCH_BYTES {
            self.flush(ctx).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, ctx: &Ctx<'_>) -> Result<(), BackendError> {
        let batch = std::mem::take(&mut self.pending);
        self.ids.clear();
        self.bytes = 0;
        store_nodes(ctx, batch, self.seen_since).await
    }
}

async fn store_nodes(
    ctx: &Ctx<'_>,
    nodes: Vec<pages::StoredNode>,
    seen_since: u64,
) -> Result<(), BackendError> {
    let repo = ctx.repo;
    let fresh: Vec<pages::StoredNode> = nodes
        .into_iter()
        .filter(|n| !ctx.cache.seen_since(&n.id, seen_since))
        .collect();
    let stored: Vec<(NodeId, Node)> = stream::iter(fresh)
        .map(|n| async move {
            let (key, unit) = repo.node_unit(&n)?;
            repo.remote
                .put(&key, unit, PutMode::Overwrite)
                .await
                .map_err(|e| remote_err("put", &key, e))?;
            let decoded = node::decode(&n.bytes, &repo.limits)
                .map_err(|e| BackendError::permanent("push", key.to_string(), e.to_string()))?;
            Ok::<_, BackendError>((n.id, decoded))
        })
        .buffer_unordered(repo.remote.requests)
        .try_collect()
        .await?;
    let now = now_ms();
    for (id, n) in stored {
        ctx.cache.remember(id, n, now);
    }
    Ok(())
}

/// The subtree id of directory `d` in the tree at `root` (`None`: not a
/// directory there).
async fn dir_id(
    ctx: &Ctx<'_>,
    root: &NodeId,
    d: Option<&RelPath>,
) -> Result<Option<NodeId>, BackendError> {
    let Some(d) = d else {
        return Ok(Some(*root));
    };
    match read::lookup(ctx.repo, ctx.cache, root, d).await? {
        Some(Entry {
            kind: EntryKind::Dir { subtree, .. },
            ..
        }) => Ok(Some(subtree)),
        _ => Ok(None),
    }
}

/// Takes a removed or replaced entry out of the totals (a directory's
/// whole subtree: read only when a directory is removed).
async fn subtract(ctx: &Ctx<'_>, totals: &mut Totals, old: &Entry) -> Result<(), BackendError> {
    match &old.kind {
        EntryKind::File(f) => {
            totals.files = totals.files.saturating_sub(1);
            totals.bytes = totals.bytes.saturating_sub(f.size);
        }
        EntryKind::Symlink { .. } => totals.symlinks = totals.symlinks.saturating_sub(1),
        EntryKind::Dir { subtree, .. } => {
            totals.dirs = totals.dirs.saturating_sub(1);
            let mut walk = read::Walk::new(ctx.repo, ctx.cache, *subtree, Vec::new());
            while let Some((_, entries)) = walk.next_dir().await? {
                for (_, e) in entries {
                    match &e.kind {
                        EntryKind::File(f) => {
                            totals.files = totals.files.saturating_sub(1);
                            totals.bytes = totals.bytes.saturating_sub(f.size);
                        }
                        EntryKind::Symlink { .. } => {
                            totals.symlinks = totals.symlinks.saturating_sub(1)
                        }
                        EntryKind::Dir { .. } => totals.dirs = totals.dirs.saturating_sub(1),
                    }
                }
            }
        }
    }
    Ok(())
}
