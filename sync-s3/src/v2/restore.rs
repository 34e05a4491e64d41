//! Restore, list and history in format v2 (FORMAT.md "Reader checks and
//! limits", "Snapshot record").
//!
//! **Restore** walks the snapshot depth-first ([`super::read::Walk`]),
//! one directory at a time: its directories and symlinks are created and
//! its files' should-write decisions made in one blocking pass, then its
//! files become fetch units — small blobs of one pack, gathered across
//! directories up to a pack size, as one ranged request ([`Pending`]),
//! each chunked file as a stream of chunks — sent through a
//! bounded channel to `concurrency` fetchers. Memory is therefore the
//! walk's (per directory) plus the fetchers' (bounded by the byte budget),
//! whatever the snapshot holds. Every blob is opened, unframed and checked
//! against its entry's length before a byte is written (a chunk against its
//! hash too); each file is checked against its entry's hash whole before
//! its temporary file is renamed (a small file's blob is that file, so it
//! is hashed once).
//!
//! **List** is the same walk without writing. **History** reads snapshot
//! records only, never a tree.

use std::collections::{BTreeMap, HashMap};
use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use object_store::{GetOptions, GetRange};
use sync_core::restore::{FileSpec, RestoreWriter};
use sync_core::{
    BackendError, ContentHash, FileMeta, HistoryEntry, Listed, Listing, Meta, RelPath,
    RestoreOptions, RestoreReport,
};

use super::format::{self, SnapshotRecord};
use super::node::{self, Chunk, Content, Entry, EntryKind, Loc, Node, NodeId, PackId};
use super::push::read_base;
use super::read::{self, NodeCache, Walk};
use super::repo::Repo;
use crate::store::remote_err;
use crate::transfer::{self, ByteBudget};

/// Fetch units queued ahead of the fetchers.
const QUEUE: usize = 64;
/// Snapshot records read at once by `history`.
const RECORD_READS: usize = 16;

fn invalid(object: impl ToString, reason: impl Into<String>) -> BackendError {
    BackendError::InvalidRemote {
        object: object.to_string(),
        reason: reason.into(),
    }
}

/// The snapshot `at` names, or the newest (`None`: nothing pushed yet).
pub(crate) async fn target(
    repo: &Repo,
    at: Option<&str>,
) -> Result<Option<(SnapshotRecord, NodeId)>, BackendError> {
    match at {
        Some(id) => match repo.get_snapshot(id).await? {
            Some(s) => Ok(Some(s)),
            None => Err(BackendError::NotFound {
                what: format!(
                    "snapshot {id:?} in {} (run `tether history` to list them)",
                    repo.remote.describe
                ),
            }),
        },
        None => Ok(read_base(repo).await?.map(|b| (b.snapshot, b.root))),
    }
}

/// An entry as sync-core records it.
fn meta_of(e: &Entry) -> Meta {
    match &e.kind {
        EntryKind::File(f) => Meta::File(FileMeta {
            size: f.size,
            mtime_ns: f.mtime_ns,
            mode: f.mode,
            hash: ContentHash::from_bytes(f.hash),
        }),
        EntryKind::Dir { mode, .. } => Meta::Dir { mode: *mode },
        EntryKind::Symlink { target } => Meta::Symlink {
            target: target.clone(),
        },
    }
}

/// Every entry of a snapshot, in path order.
pub(crate) async fn list(
    repo: &Repo,
    cache: &NodeCache,
    at: Option<&str>,
) -> Result<Listing, BackendError> {
    let Some((snap, root)) = target(repo, at).await? else {
        return Ok(Listing::default());
    };
    let mut entries = Vec::new();
    let mut walk = Walk::new(repo, cache, root, Vec::new());
    while let Some((_, items)) = walk.next_dir().await? {
        for (path, e) in items {
            entries.push(Listed::from_meta(path, &meta_of(&e)));
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Listing {
        id: Some(snap.id),
        entries,
    })
}

/// Snapshot names `history` keeps from one listing (the newest).
const MAX_LISTED: usize = 200_000;

/// Checkpoints that became head, newest first, at most `limit`: the chain
/// of parents from the head, read from records only; where forget removed
/// a parent, the chain goes on at the next older record.
pub(crate) async fn history(repo: &Repo, limit: usize) -> Result<Vec<HistoryEntry>, BackendError> {
    let Some(base) = read_base(repo).await? else {
        return Ok(Vec::new());
    };
    // Every name (they sort by time; at most MAX_LISTED, the newest), the
    // newest `limit + 8` read concurrently; a chain that leaves them is
    // followed one record at a time. A parent that is gone (removed by
    // forget) is stepped over to the next older record.
    let dir = repo.remote.key(format::SNAPSHOTS)?;
    let mut names: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut listing = repo.remote.store.list(Some(&dir));
    while let Some(m) = listing.next().await {
        let m = m.map_err(|e| remote_err("list", &dir, e))?;
        if let Some(id) = m.location.filename().and_then(format::parse_snapshot_id) {
            names.insert(id.to_owned());
            if names.len() > MAX_LISTED {
                names.pop_first();
            }
        }
    }
    drop(listing);
    let batch: Vec<String> = names
        .iter()
        .rev()
        .take(limit.saturating_add(8))
        .cloned()
        .collect();
    let mut records: HashMap<String, SnapshotRecord> = stream::iter(batch)
        .map(|n| async move { Ok::<_, BackendError>(repo.get_snapshot(&n).await?.map(|(r, _)| r)) })
        .buffer_unordered(RECORD_READS)
        .try_filter_map(|r| async move { Ok(r) })
        .map_ok(|r| (r.id.clone(), r))
        .try_collect()
        .await?;
    let mut out = Vec::new();
    let mut next = Some(base.snapshot);
    let mut seen = std::collections::HashSet::new();
    while let Some(rec) = next.take() {
        if out.len() >= limit {
            break;
        }
        if !seen.insert(rec.id.clone()) {
            return Err(invalid(
                repo.remote.key(&format::snapshot_rel(&rec.id))?,
                format!(
                    "the chain of parents comes back to snapshot {} (a cycle): refused as corrupt or hostile",
                    rec.id
                ),
            ));
        }
        out.push(HistoryEntry {
            id: rec.id.clone(),
            time: std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(rec.time_ms)),
            files: rec.totals.files,
            bytes: rec.totals.bytes,
        });
        let mut want = rec.parent.clone().or(rec.rewrites.clone());
        while let Some(id) = want.take() {
            next = match records.remove(&id) {
                Some(r) => Some(r),
                None => repo.get_snapshot(&id).await?.map(|(r, _)| r),
            };
            if next.is_none() {
                // Forgotten: the next older record that exists, if any
                // (ids sort by time; each miss is dropped, so this ends).
                names.remove(&id);
                want = names.range(..rec.id.clone()).next_back().cloned();
            }
        }
    }
    Ok(out)
}

/// A file to write and where its content is.
struct Wanted {
    path: RelPath,
    spec: FileSpec,
    entry: node::FileEntry,
}

/// A one-blob file: where it goes, its spec, its blob, hash and size.
type SmallFile = (RelPath, FileSpec, Loc, [u8; 32], u64);

/// What one fetcher does.
enum Unit {
    /// Small blobs of one pack: one ranged request.
    Blobs(PackId, Vec<SmallFile>),
    /// One file of several chunks, streamed.
    Chunked(Wanted),
    /// Empty files (no request).
    Empty(Vec<(RelPath, FileSpec)>),
}

/// See the module doc.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn restore(
    repo: &Arc<Repo>,
    cache: &NodeCache,
    budget: &ByteBudget,
    pack_size: u64,
    dest: &FsPath,
    options: &RestoreOptions,
) -> Result<RestoreReport, BackendError> {
    let Some((snap, root)) = target(repo, options.at.as_deref()).await? else {
        options.check_selected([], &repo.remote.describe)?;
        let writer = RestoreWriter::open(dest, options)?;
        return Ok(writer.finish(None)?);
    };
    // Every selected path must exist before anything is written.
    for p in &options.paths {
        if read::lookup(repo, cache, &root, p).await?.is_none() {
            return Err(BackendError::NotFound {
                what: format!("path {p} in snapshot {}", snap.id),
            });
        }
    }
    let writer = Arc::new(RestoreWriter::open(dest, options)?);
    if options.paths.is_empty() {
        let t = snap.totals;
        let entries = t.files.saturating_add(t.dirs).saturating_add(t.symlinks);
        writer.expect_total(entries, t.bytes);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Unit>(QUEUE);
    let producer = async {
        let mut walk = Walk::new(repo, cache, root, options.paths.clone());
        let mut pending = Pending::new(pack_size);
        while let Some((_, items)) = walk.next_dir().await? {
            let units = prepare_dir(&writer, options, items, &mut pending).await?;
            for u in units {
                if tx.send(u).await.is_err() {
                    // The fetchers stopped on an error; theirs is reported.
                    return Ok(());
                }
            }
        }
        for u in pending.drain() {
            if tx.send(u).await.is_err() {
                return Ok(());
            }
        }
        drop(tx);
        Ok::<(), BackendError>(())
    };
    let consumer = tokio_stream_of(rx)
        .map(|u| fetch_unit(repo, budget, &writer, u))
        .buffer_unordered(repo.remote.requests)
        .try_collect::<Vec<()>>();
    let (p, c) = futures::join!(producer, consumer);
    c?;
    p?;
    let writer = Arc::into_inner(writer).ok_or_else(|| {
        BackendError::transient("restore", dest.display().to_string(), "writer still in use")
    })?;
    Ok(writer.finish(Some(snap.id))?)
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Creates one directory's directories and symlinks, decides which files
/// to write (one blocking pass), and cuts the files into fetch units (small
/// blobs go to `pending`, sent when their batch is full).
async fn prepare_dir(
    writer: &Arc<RestoreWriter>,
    options: &RestoreOptions,
    items: Vec<(RelPath, Entry)>,
    pending: &mut Pending,
) -> Result<Vec<Unit>, BackendError> {
    let selected: Vec<(RelPath, Entry)> = items
        .into_iter()
        .filter(|(p, _)| options.selects(p))
        .collect();
    if selected.is_empty() {
        return Ok(Vec::new());
    }
    let w = Arc::clone(writer);
    let wanted = tokio::task::spawn_blocking(move || -> Result<Vec<Wanted>, BackendError> {
        let mut wanted = Vec::new();
        for (path, e) in selected {
            match e.kind {
                EntryKind::Dir { mode, .. } => w.create_dir(&path, mode)?,
                EntryKind::Symlink { target } => w.create_symlink(&path, &target)?,
                EntryKind::File(f) => {
                    let spec = FileSpec {
                        mode: f.mode,
                        mtime_ns: Some(f.mtime_ns),
                        size: Some(f.size),
                        hash: Some(ContentHash::from_bytes(f.hash)),
                    };
                    if w.should_write(&path, &spec)? {
                        wanted.push(Wanted {
                            path,
                            spec,
                            entry: f,
                        });
                    }
                }
            }
        }
        Ok(wanted)
    })
    .await
    .map_err(|e| BackendError::transient("restore", "directory", e))??;
    let mut units = Vec::new();
    let mut empty = Vec::new();
    for w in wanted {
        match &w.entry.content {
            Content::Empty => empty.push((w.path, w.spec)),
            Content::Blob(loc) => {
                let (loc, hash, size) = (*loc, w.entry.hash, w.entry.size);
                units.extend(pending.add((w.path, w.spec, loc, hash, size)));
            }
            Content::Chunks(_) | Content::Lists(_) => units.push(Unit::Chunked(w)),
        }
    }
    if !empty.is_empty() {
        units.push(Unit::Empty(empty));
    }
    if pending.over() {
        units.extend(pending.drain());
    }
    Ok(units)
}

/// Most files one [`Unit::Blobs`] writes.
const UNIT_FILES: usize = 4096;
/// Bytes of waiting files (their paths plus [`FILE_COST`] each) that
/// [`Pending`] holds before it sends every batch as it is.
const PENDING_BYTES: u64 = 4 << 20;
/// Bytes charged per waiting file beyond its path.
const FILE_COST: u64 = 192;

/// Small blobs waiting to become fetch units, gathered across directories:
/// a push packs files in path order, so neighbouring directories share a
/// pack and one ranged request serves many of them (measured on 10,000 ×
/// 4 KiB files in 100 directories: 100 requests of 400 KiB became 6 of up
/// to 8 MiB). A pack's batch is sent once it holds a pack size of stored
/// bytes or [`UNIT_FILES`] files; all are sent once they hold more than
/// [`PENDING_BYTES`], and at the end of the walk.
struct Pending {
    by_pack: BTreeMap<PackId, (Vec<SmallFile>, u64)>,
    held: u64,
    max_bytes: u64,
}

fn cost(f: &SmallFile) -> u64 {
    FILE_COST.saturating_add(f.0.as_str().len() as u64)
}

impl Pending {
    fn new(max_bytes: u64) -> Self {
        Pending {
            by_pack: BTreeMap::new(),
            held: 0,
            max_bytes,
        }
    }

    /// Adds one file; returns its pack's batch if that is now full.
    fn add(&mut self, f: SmallFile) -> Option<Unit> {
        let (pack, len, c) = (f.2.pack, f.2.stored_len, cost(&f));
        let (batch, bytes) = self.by_pack.entry(pack).or_default();
        // At most one pack size of stored bytes per request.
        let full = if !batch.is_empty() && bytes.saturating_add(len) > self.max_bytes {
            *bytes = 0;
            Some(std::mem::take(batch))
        } else {
            None
        };
        *bytes = bytes.saturating_add(len);
        batch.push(f);
        self.held = self.held.saturating_add(c);
        let full = full.or_else(|| {
            (batch.len() >= UNIT_FILES).then(|| {
                *bytes = 0;
                std::mem::take(batch)
            })
        })?;
        let freed = full.iter().fold(0u64, |s, f| s.saturating_add(cost(f)));
        self.held = self.held.saturating_sub(freed);
        Some(Self::unit(pack, full))
    }

    /// Whether the waiting files should be sent now.
    fn over(&self) -> bool {
        self.held > PENDING_BYTES
    }

    fn unit(pack: PackId, mut files: Vec<SmallFile>) -> Unit {
        files.sort_by_key(|f| f.2.offset);
        Unit::Blobs(pack, files)
    }

    /// Every batch, as units.
    fn drain(&mut self) -> Vec<Unit> {
        self.held = 0;
        std::mem::take(&mut self.by_pack)
            .into_iter()
            .filter(|(_, (files, _))| !files.is_empty())
            .map(|(pack, (files, _))| Self::unit(pack, files))
            .collect()
    }
}

fn join_err(e: tokio::task::JoinError) -> BackendError {
    BackendError::transient("restore", "write", e)
}

async fn fetch_unit(
    repo: &Arc<Repo>,
    budget: &ByteBudget,
    writer: &Arc<RestoreWriter>,
    unit: Unit,
) -> Result<(), BackendError> {
    match unit {
        Unit::Empty(files) => {
            let object = repo.remote.key(format::DATA)?;
            let files = files
                .into_iter()
                .map(|(p, s)| (p, s, Bytes::new()))
                .collect();
            transfer::write_files(writer, &object, files).await
        }
        Unit::Blobs(pack, files) => {
            let key = repo.remote.key(&format::pack_rel(&pack))?;
            let mut ranges: Vec<std::ops::Range<u64>> = Vec::with_capacity(files.len());
            for f in &files {
                let loc = f.2;
                if loc.stored_len > repo.blob_limit(f.4) {
                    return Err(invalid(
                        &key,
                        format!(
                            "{}: a stored length of {} for {} bytes",
                            f.0, loc.stored_len, f.4
                        ),
                    ));
                }
                let end = loc
                    .offset
                    .checked_add(loc.stored_len)
                    .ok_or_else(|| invalid(&key, format!("{}: offset and length overflow", f.0)))?;
                ranges.push(loc.offset..end);
            }
            let mut uniq = ranges.clone();
            uniq.sort_by_key(|r| (r.start, r.end));
            uniq.dedup();
            let held = uniq
                .iter()
                .fold(0u64, |s, r| s.saturating_add(r.end - r.start));
            let _share = budget.take(held).await?;
            let fetched = repo
                .remote
                .store
                .get_ranges(&key, &uniq)
                .await
                .map_err(|e| match e {
                    object_store::Error::NotFound { .. } => invalid(
                        &key,
                        format!("missing, but snapshot trees name it (for {})", files[0].0),
                    ),
                    e => remote_err("get", &key, e),
                })?;
            let by_range: HashMap<(u64, u64), Bytes> = uniq
                .iter()
                .zip(fetched)
                .map(|(r, b)| ((r.start, r.end), b))
                .collect();
            let repo = Arc::clone(repo);
            let w = Arc::clone(writer);
            tokio::task::spawn_blocking(move || -> Result<(), BackendError> {
                for ((path, spec, _, hash, size), r) in files.into_iter().zip(ranges) {
                    let stored = by_range.get(&(r.start, r.end)).cloned().unwrap_or_default();
                    if stored.len() as u64 != r.end - r.start {
                        return Err(invalid(&key, format!("too short for {path}")));
                    }
                    // The writer checks the hash of what it writes (the
                    // entry's, in `spec`) before the file gets its name.
                    let plain = repo.open_whole_file_blob(
                        &stored,
                        &hash,
                        size,
                        &format_args!("{key} (for {path})"),
                    )?;
                    let mut f = w
                        .begin_file(&path, &spec)
                        .map_err(|e| transfer::restore_err(&key, e))?;
                    f.write_chunk(&plain)
                        .map_err(|e| transfer::restore_err(&key, e))?;
                    f.commit().map_err(|e| transfer::restore_err(&key, e))?;
                }
                Ok(())
            })
            .await
            .map_err(join_err)?
        }
        Unit::Chunked(w) => fetch_chunked(repo, budget, writer, w).await,
    }
}

/// The chunks of a chunked file, checked against its size.
async fn chunks_of(repo: &Repo, w: &Wanted) -> Result<Vec<Chunk>, BackendError> {
    let object = || format!("tree entry {}", w.path);
    let chunks = match &w.entry.content {
        Content::Chunks(c) => c.clone(),
        Content::Lists(ids) => {
            let mut all = Vec::new();
            for id in ids {
                match repo.get_node(id).await? {
                    Node::List(l) => all.extend(l.chunks),
                    _ => return Err(invalid(object(), format!("node {id} is not a chunk list"))),
                }
                if all.len() as u64 > w.entry.size / node::CHUNK_SIZE + 1 {
                    return Err(invalid(object(), "more chunks than its size needs"));
                }
            }
            all
        }
        _ => Vec::new(),
    };
    let expected = w.entry.size.div_ceil(node::CHUNK_SIZE);
    let mut sum = 0u64;
    for (i, c) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        if (!last && c.plain_len != node::CHUNK_SIZE)
            || c.plain_len == 0
            || c.plain_len > node::CHUNK_SIZE
        {
            return Err(invalid(
                object(),
                format!("chunk {i} is {} bytes", c.plain_len),
            ));
        }
        sum = sum.saturating_add(c.plain_len);
    }
    if chunks.len() as u64 != expected || sum != w.entry.size {
        return Err(invalid(
            object(),
            format!(
                "{} chunks of {sum} bytes for a file of {} bytes",
                chunks.len(),
                w.entry.size
            ),
        ));
    }
    Ok(chunks)
}

/// Streams a chunked file: each chunk fetched (one ahead), opened and
/// checked, then written by one blocking task that owns the file.
async fn fetch_chunked(
    repo: &Arc<Repo>,
    budget: &ByteBudget,
    writer: &Arc<RestoreWriter>,
    w: Wanted,
) -> Result<(), BackendError> {
    let chunks = chunks_of(repo, &w).await?;
    // Each chunk travels with its share of the byte budget, given back once
    // it is written: the budget bounds every chunked file's chunks at once.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<u8>, transfer::BudgetShare)>(1);
    let (wr, path, spec) = (Arc::clone(writer), w.path.clone(), w.spec.clone());
    let r2 = Arc::clone(repo);
    let task = tokio::task::spawn_blocking(move || -> Result<bool, BackendError> {
        let object = r2.remote.key(format::DATA)?;
        let mut file = wr
            .begin_file(&path, &spec)
            .map_err(|e| transfer::restore_err(&object, e))?;
        let mut n = 0usize;
        while let Some((plain, share)) = rx.blocking_recv() {
            file.write_chunk(&plain)
                .map_err(|e| transfer::restore_err(&object, e))?;
            drop(share);
            n += 1;
        }
        if n == 0 {
            return Ok(false);
        }
        file.commit()
            .map_err(|e| transfer::restore_err(&object, e))?;
        Ok(true)
    });
    let total = chunks.len();
    let sent: Result<usize, BackendError> = async {
        let mut fetched = stream::iter(chunks)
            .map(|c| async move {
                let key = repo.remote.key(&format::pack_rel(&c.loc.pack))?;
                if c.loc.stored_len > repo.blob_limit(c.plain_len) {
                    return Err(invalid(&key, "a chunk's stored length exceeds its limit"));
                }
                let end = c
                    .loc
                    .offset
                    .checked_add(c.loc.stored_len)
                    .ok_or_else(|| invalid(&key, "offset and length overflow"))?;
                // One share covers the larger of the stored bytes and the
                // plaintext they open into.
                let share = budget.take(c.loc.stored_len.max(c.plain_len)).await?;
                let opts = GetOptions {
                    range: Some(GetRange::Bounded(c.loc.offset..end)),
                    ..GetOptions::default()
                };
                let res = repo
                    .remote
                    .store
                    .get_opts(&key, opts)
                    .await
                    .map_err(|e| remote_err("get", &key, e))?;
                let bytes = res.bytes().await.map_err(|e| remote_err("get", &key, e))?;
                if bytes.len() as u64 != c.loc.stored_len {
                    return Err(invalid(&key, "a chunk's range came back short"));
                }
                // Opened (decrypted, unframed, hash checked) on a blocking
                // thread of its own, while the next chunk downloads and the
                // previous one is written.
                let r = Arc::clone(repo);
                let plain = tokio::task::spawn_blocking(move || {
                    r.open_blob(&bytes, &c.hash, c.plain_len, &key)
                })
                .await
                .map_err(join_err)??;
                Ok::<_, BackendError>((plain, share))
            })
            .buffered(2);
        let mut n = 0;
        while let Some(r) = fetched.next().await {
            let (plain, share) = r?;
            if tx.send((plain, share)).await.is_err() {
                break;
            }
            n += 1;
        }
        Ok(n)
    }
    .await;
    drop(tx);
    let written = task.await.map_err(join_err)??;
    let n = sent?;
    if !written || n != total {
        return Err(BackendError::transient(
            "get",
            w.path.to_string(),
            "the download ended early",
        ));
    }
    Ok(())
}
