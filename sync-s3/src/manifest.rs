//! The snapshots layout's formats, and the pure decisions about them.
//!
//! ```text
//! prefix/packs/<blake3 of the pack>      blobs back to back (no header)
//! prefix/index/<same id>                 PackIndex: blob hash → (offset, length) in that pack
//! prefix/snapshots/<snapshot id>         Manifest: every path of one checkpoint, with the
//!                                        pack, offset and length of each file's blob
//! prefix/heads/00000000000000000042      HeadRecord: which snapshot is newest; created
//!                                        with create-if-absent, written last
//! prefix/heads-floor/00000000000000000032  empty: heads below 32 are retired
//!                                        (see `crate::heads` for the protocol)
//! ```
//!
//! All are JSON: readable with any tool, and a manifest of 10,000 files is
//! about 2.5 MB. A manifest is self-contained (a restore needs no index), so
//! a reader needs one `LIST` and two `GET`s before it downloads content.
//! Everything read from the store is checked here before it is used:
//! formats, totals, pack ids (64 hex characters, so a key cannot be
//! steered elsewhere), blob lengths equal to file sizes.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sync_core::{BackendError, Change, Checkpoint, ContentHash, Meta};

use crate::decode::{CountError, count_entries};

/// `format` of a [`Manifest`].
pub const MANIFEST_FORMAT: &str = "tether-snapshot-1";
/// `format` of a [`HeadRecord`].
pub const HEAD_FORMAT: &str = "tether-head-1";
/// `format` of a [`PackIndex`].
pub const PACK_INDEX_FORMAT: &str = "tether-pack-index-1";
/// Most blobs one pack holds: a pack is sealed at this count even below
/// its target size, so its index stays small (about 7 MiB of JSON), and an
/// index listing more is refused.
pub const MAX_PACK_BLOBS: usize = 65_536;

/// Where a blob's bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlobLoc {
    /// The pack object's id (its BLAKE3, hex).
    pub pack: String,
    /// Byte offset in the pack.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
}

impl BlobLoc {
    /// The offset just past the blob, `None` if it passes `u64::MAX`.
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.length)
    }
}

/// One path of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The path as stored (validated with `RestorePlan` before use).
    pub path: String,
    /// What it is.
    #[serde(flatten)]
    pub meta: Meta,
    /// For regular files: where the content is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<BlobLoc>,
}

/// One checkpoint: the whole tree at that moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    /// The snapshot id (also the object's name).
    pub id: String,
    /// The snapshot this one was built on.
    #[serde(default)]
    pub parent: Option<String>,
    /// When it was written, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Regular files.
    pub files: u64,
    /// Content bytes.
    pub bytes: u64,
    /// Every path, sorted.
    pub entries: Vec<ManifestEntry>,
}

/// The newest snapshot, as recorded by a head generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadRecord {
    /// [`HEAD_FORMAT`].
    pub format: String,
    /// The snapshot id.
    pub snapshot: String,
    /// When it was written, milliseconds since the Unix epoch.
    pub time_ms: u64,
}

/// One blob inside a pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedBlob {
    /// Its content hash.
    pub hash: ContentHash,
    /// Byte offset in the pack.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
}

/// What a pack holds; written after the pack, so other writers (and a retry
/// after a failed push) reuse its blobs instead of uploading them again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackIndex {
    /// [`PACK_INDEX_FORMAT`].
    pub format: String,
    /// The pack's id.
    pub pack: String,
    /// Its blobs.
    pub blobs: Vec<PackedBlob>,
}

fn invalid(object: &str, reason: impl Into<String>) -> BackendError {
    BackendError::InvalidRemote {
        object: object.to_owned(),
        reason: reason.into(),
    }
}

/// True for 64 lower-case hex characters (a BLAKE3 in hex).
pub fn is_pack_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// True for a name this crate could have made: 1–64 of `[0-9a-z-]`.
pub fn is_snapshot_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'-'))
}

/// A new snapshot id: the time first, so ids sort by age, then randomness
/// so two writers in the same millisecond differ.
pub fn new_snapshot_id(time_ms: u64, random: u32) -> String {
    format!("{time_ms:013}-{random:08x}")
}

impl Manifest {
    /// A manifest of `entries` (any order; sorted here).
    pub fn new(
        id: String,
        parent: Option<String>,
        time_ms: u64,
        entries: BTreeMap<String, ManifestEntry>,
    ) -> Self {
        let entries: Vec<ManifestEntry> = entries.into_values().collect();
        let files = entries
            .iter()
            .filter(|e| e.meta.as_file().is_some())
            .count() as u64;
        let bytes = entries
            .iter()
            .fold(0u64, |sum, e| sum.saturating_add(e.meta.size()));
        Manifest {
            format: MANIFEST_FORMAT.into(),
            id,
            parent,
            time_ms,
            files,
            bytes,
            entries,
        }
    }

    /// JSON bytes.
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Parses and checks a manifest read from `object`, refusing one of
    /// more than `max_entries` paths before building any of them.
    pub fn decode(bytes: &[u8], object: &str, max_entries: u64) -> Result<Manifest, BackendError> {
        count_entries(bytes, "entries", max_entries).map_err(|e| match e {
            CountError::TooMany { .. } => invalid(object, e.to_string()),
            CountError::Json(e) => invalid(
                object,
                format!("not a valid snapshot manifest (truncated or corrupt): {e}"),
            ),
        })?;
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| {
            invalid(
                object,
                format!("not a valid snapshot manifest (truncated or corrupt): {e}"),
            )
        })?;
        m.check(object)?;
        Ok(m)
    }

    /// Checks what can be checked without the packs.
    pub fn check(&self, object: &str) -> Result<(), BackendError> {
        if self.format != MANIFEST_FORMAT {
            return Err(invalid(
                object,
                format!("unknown manifest format {:?}", self.format),
            ));
        }
        let (mut files, mut bytes) = (0u64, 0u64);
        for e in &self.entries {
            match (&e.meta, &e.blob) {
                (Meta::File(f), Some(loc)) => {
                    if !is_pack_id(&loc.pack) {
                        return Err(invalid(
                            object,
                            format!("{:?} names an invalid pack id {:?}", e.path, loc.pack),
                        ));
                    }
                    if loc.end().is_none() {
                        return Err(invalid(
                            object,
                            format!(
                                "{:?}: blob offset {} and length {} are out of range (their sum passes 2^64)",
                                e.path, loc.offset, loc.length
                            ),
                        ));
                    }
                    if loc.length != f.size {
                        return Err(invalid(
                            object,
                            format!(
                                "{:?}: blob length {} does not match the file size {}",
                                e.path, loc.length, f.size
                            ),
                        ));
                    }
                    files += 1;
                    bytes = bytes.checked_add(f.size).ok_or_else(|| {
                        invalid(object, "the files' sizes add up past 2^64 bytes")
                    })?;
                }
                (Meta::File(_), None) => {
                    return Err(invalid(
                        object,
                        format!("{:?} is a file without content", e.path),
                    ));
                }
                (_, Some(_)) => {
                    return Err(invalid(
                        object,
                        format!("{:?} is not a file but has content", e.path),
                    ));
                }
                (_, None) => {}
            }
        }
        if files != self.files || bytes != self.bytes {
            return Err(invalid(
                object,
                format!(
                    "totals say {} files and {} bytes but the entries hold {files} and {bytes} (truncated or edited)",
                    self.files, self.bytes
                ),
            ));
        }
        Ok(())
    }

    /// The entries by path.
    pub fn by_path(&self) -> BTreeMap<String, ManifestEntry> {
        self.entries
            .iter()
            .map(|e| (e.path.clone(), e.clone()))
            .collect()
    }

    /// Every blob this manifest references, by hash.
    pub fn blob_locations(&self) -> impl Iterator<Item = (ContentHash, &BlobLoc)> {
        self.entries
            .iter()
            .filter_map(|e| match (&e.meta, &e.blob) {
                (Meta::File(f), Some(loc)) => Some((f.hash, loc)),
                _ => None,
            })
    }
}

impl HeadRecord {
    /// JSON bytes.
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Parses and checks a head read from `object`.
    pub fn decode(bytes: &[u8], object: &str) -> Result<HeadRecord, BackendError> {
        let h: HeadRecord = serde_json::from_slice(bytes)
            .map_err(|e| invalid(object, format!("not a valid head record: {e}")))?;
        if h.format != HEAD_FORMAT {
            return Err(invalid(
                object,
                format!("unknown head format {:?}", h.format),
            ));
        }
        if !is_snapshot_id(&h.snapshot) {
            return Err(invalid(
                object,
                format!("names an invalid snapshot id {:?}", h.snapshot),
            ));
        }
        Ok(h)
    }
}

impl PackIndex {
    /// JSON bytes.
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Parses and checks an index read from `object` (at most
    /// [`MAX_PACK_BLOBS`] blobs: more than any pack tether writes).
    pub fn decode(bytes: &[u8], object: &str) -> Result<PackIndex, BackendError> {
        count_entries(bytes, "blobs", MAX_PACK_BLOBS as u64)
            .map_err(|e| invalid(object, format!("not a valid pack index: {e}")))?;
        let p: PackIndex = serde_json::from_slice(bytes)
            .map_err(|e| invalid(object, format!("not a valid pack index: {e}")))?;
        if p.format != PACK_INDEX_FORMAT || !is_pack_id(&p.pack) {
            return Err(invalid(object, "unknown format or invalid pack id"));
        }
        if let Some(b) = p
            .blobs
            .iter()
            .find(|b| b.offset.checked_add(b.length).is_none())
        {
            return Err(invalid(
                object,
                format!(
                    "blob {} has offset {} and length {}: out of range (their sum passes 2^64)",
                    b.hash, b.offset, b.length
                ),
            ));
        }
        Ok(p)
    }
}

/// Applies `checkpoint` to `base`: the newest word about each path wins.
/// Every upserted file's hash must be in `locations`.
pub fn apply_checkpoint(
    base: &BTreeMap<String, ManifestEntry>,
    checkpoint: &Checkpoint,
    locations: &HashMap<ContentHash, BlobLoc>,
) -> Result<BTreeMap<String, ManifestEntry>, ContentHash> {
    let mut out = base.clone();
    for (path, change) in checkpoint.iter() {
        match change {
            Change::Upsert(meta) => {
                let blob = match meta {
                    Meta::File(f) => Some(locations.get(&f.hash).cloned().ok_or(f.hash)?),
                    _ => None,
                };
                out.insert(
                    path.to_string(),
                    ManifestEntry {
                        path: path.to_string(),
                        meta: meta.clone(),
                        blob,
                    },
                );
            }
            Change::Delete => {
                out.remove(path.as_str());
            }
        }
    }
    Ok(out)
}

/// One entry of a manifest being written, borrowed from the base manifest
/// or from the checkpoint; serialises exactly like [`ManifestEntry`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct EntryRef<'a> {
    /// The path.
    pub path: &'a str,
    /// What it is.
    #[serde(flatten)]
    pub meta: &'a Meta,
    /// For regular files: where the content is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob: Option<&'a BlobLoc>,
}

impl<'a> From<&'a ManifestEntry> for EntryRef<'a> {
    fn from(e: &'a ManifestEntry) -> Self {
        EntryRef {
            path: &e.path,
            meta: &e.meta,
            blob: e.blob.as_ref(),
        }
    }
}

/// `base`'s entries sorted by path, each path once (the last one wins, as
/// a `BTreeMap` built from them would keep). Manifests this crate writes
/// are sorted already: then this borrows them as they are; a remote one
/// that is not costs one pointer per entry.
fn sorted_entries(base: &[ManifestEntry]) -> Vec<&ManifestEntry> {
    let mut refs: Vec<&ManifestEntry> = base.iter().collect();
    if !base.windows(2).all(|w| w[0].path < w[1].path) {
        // Stable: equal paths keep their order, so the last is the newest.
        refs.sort_by(|a, b| a.path.cmp(&b.path));
        refs.reverse();
        refs.dedup_by(|a, b| a.path == b.path);
        refs.reverse();
    }
    refs
}

/// A checkpoint applied to a base manifest, as a lazy merge of the two
/// sorted sequences: nothing of the base is copied, so building and
/// writing a manifest of `n` entries costs its JSON, not another `n`
/// entries in memory.
#[derive(Debug)]
pub struct Merge<'a> {
    base: Vec<&'a ManifestEntry>,
    checkpoint: &'a Checkpoint,
    locations: &'a HashMap<ContentHash, BlobLoc>,
}

impl<'a> Merge<'a> {
    /// `checkpoint` applied to `base` (any order): the newest word about
    /// each path wins. Every upserted file's hash must be in `locations`;
    /// the first that is not is the error.
    pub fn new(
        base: &'a [ManifestEntry],
        checkpoint: &'a Checkpoint,
        locations: &'a HashMap<ContentHash, BlobLoc>,
    ) -> Result<Self, ContentHash> {
        for (_, change) in checkpoint.iter() {
            if let Change::Upsert(Meta::File(f)) = change
                && !locations.contains_key(&f.hash)
            {
                return Err(f.hash);
            }
        }
        Ok(Merge {
            base: sorted_entries(base),
            checkpoint,
            locations,
        })
    }

    /// The resulting entries in path order.
    pub fn iter(&self) -> impl Iterator<Item = EntryRef<'a>> + '_ {
        let mut base = self.base.iter().copied().peekable();
        let mut changes = self.checkpoint.iter().peekable();
        let locations = self.locations;
        std::iter::from_fn(move || {
            loop {
                let take_base = match (base.peek(), changes.peek()) {
                    (None, None) => return None,
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (Some(b), Some((p, _))) => b.path.as_str() < p.as_str(),
                };
                if take_base {
                    return base.next().map(EntryRef::from);
                }
                let (path, change) = changes.next()?;
                // The checkpoint's word replaces the base's entry.
                if base.peek().is_some_and(|b| b.path == path.as_str()) {
                    base.next();
                }
                match change {
                    Change::Upsert(meta) => {
                        let blob = match meta {
                            Meta::File(f) => locations.get(&f.hash),
                            _ => None,
                        };
                        return Some(EntryRef {
                            path: path.as_str(),
                            meta,
                            blob,
                        });
                    }
                    Change::Delete => continue,
                }
            }
        })
    }

    /// Regular files and content bytes of the result.
    pub fn totals(&self) -> (u64, u64) {
        self.iter()
            .fold((0u64, 0u64), |(files, bytes), e| match e.meta {
                Meta::File(f) => (files + 1, bytes.saturating_add(f.size)),
                _ => (files, bytes),
            })
    }

    /// The manifest's JSON, written straight from the merge in chunks of
    /// about 1 MiB (no copy of the entries, no doubling buffer): the same
    /// bytes [`Manifest::encode`] gives for the merged manifest.
    pub fn encode(
        &self,
        id: &str,
        parent: Option<&str>,
        time_ms: u64,
    ) -> (object_store::PutPayload, u64, u64) {
        let (files, bytes) = self.totals();
        let out = ManifestOut {
            format: MANIFEST_FORMAT,
            id,
            parent,
            time_ms,
            files,
            bytes,
            entries: EntriesOut(self),
        };
        (json_payload(&out), files, bytes)
    }

    /// The merged manifest, built by moving `base`'s entries (no copy of
    /// their strings). `base` must be the manifest this merge was made
    /// from; the caller gives it up.
    pub fn into_manifest(
        checkpoint: &Checkpoint,
        locations: &HashMap<ContentHash, BlobLoc>,
        base: Vec<ManifestEntry>,
        header: (String, Option<String>, u64),
    ) -> Manifest {
        let (id, parent, time_ms) = header;
        let sorted = base.windows(2).all(|w| w[0].path < w[1].path);
        let base: Vec<ManifestEntry> = if sorted {
            base
        } else {
            let map: BTreeMap<String, ManifestEntry> =
                base.into_iter().map(|e| (e.path.clone(), e)).collect();
            map.into_values().collect()
        };
        let mut entries = Vec::with_capacity(base.len().saturating_add(checkpoint.len()));
        let mut base = base.into_iter().peekable();
        for (path, change) in checkpoint.iter() {
            while let Some(b) = base.next_if(|b| b.path.as_str() < path.as_str()) {
                entries.push(b);
            }
            base.next_if(|b| b.path == path.as_str());
            if let Change::Upsert(meta) = change {
                let blob = match meta {
                    Meta::File(f) => locations.get(&f.hash).cloned(),
                    _ => None,
                };
                entries.push(ManifestEntry {
                    path: path.to_string(),
                    meta: meta.clone(),
                    blob,
                });
            }
        }
        entries.extend(base);
        entries.shrink_to_fit();
        let (files, bytes) = entries
            .iter()
            .fold((0u64, 0u64), |(n, b), e| match &e.meta {
                Meta::File(f) => (n + 1, b.saturating_add(f.size)),
                _ => (n, b),
            });
        Manifest {
            format: MANIFEST_FORMAT.into(),
            id,
            parent,
            time_ms,
            files,
            bytes,
            entries,
        }
    }
}

/// [`Manifest`]'s fields in its order, entries borrowed.
#[derive(Serialize)]
struct ManifestOut<'a> {
    format: &'a str,
    id: &'a str,
    parent: Option<&'a str>,
    time_ms: u64,
    files: u64,
    bytes: u64,
    entries: EntriesOut<'a>,
}

struct EntriesOut<'a>(&'a Merge<'a>);

impl Serialize for EntriesOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

/// `value` as JSON in chunks of about 1 MiB, ready to upload: no single
/// buffer that doubles as it grows (a 25 MB document would otherwise
/// briefly take 48 MB).
pub(crate) fn json_payload<T: Serialize + ?Sized>(value: &T) -> object_store::PutPayload {
    let mut w = ChunkWriter::default();
    // Writing to memory cannot fail, and every value here serialises.
    let _ = serde_json::to_writer(&mut w, value);
    w.finish()
}

/// `value` as JSON in one buffer of exactly its size: serialised twice,
/// first only to count, so the buffer never doubles while it grows.
pub(crate) fn json_bytes<T: Serialize + ?Sized>(value: &T) -> Bytes {
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
    Bytes::from(buf)
}

/// Collects written bytes in chunks of about [`CHUNK`](ChunkWriter::CHUNK).
#[derive(Default)]
struct ChunkWriter {
    done: Vec<Bytes>,
    current: Vec<u8>,
}

impl ChunkWriter {
    const CHUNK: usize = 1 << 20;

    fn finish(mut self) -> object_store::PutPayload {
        if !self.current.is_empty() {
            self.done.push(Bytes::from(self.current));
        }
        self.done.into_iter().collect()
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.current.capacity() == 0 {
            self.current.reserve_exact(Self::CHUNK);
        }
        self.current.extend_from_slice(buf);
        if self.current.len() >= Self::CHUNK {
            let full = std::mem::take(&mut self.current);
            self.done.push(Bytes::from(full));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Paths of `checkpoint` that another writer changed between `old_base`
/// (what this push started from) and `new_base` (the head it lost to).
pub fn contested_paths(
    old_base: &BTreeMap<String, ManifestEntry>,
    new_base: &BTreeMap<String, ManifestEntry>,
    checkpoint: &Checkpoint,
) -> Vec<String> {
    checkpoint
        .iter()
        .filter(|(p, change)| {
            let theirs = new_base.get(p.as_str()).map(|e| &e.meta);
            let ours = match change {
                Change::Upsert(m) => Some(m),
                Change::Delete => None,
            };
            // Changed on their side, to something other than ours.
            old_base.get(p.as_str()).map(|e| &e.meta) != theirs && theirs != ours
        })
        .map(|(p, _)| p.to_string())
        .collect()
}

/// Small files packed into one object.
#[derive(Debug, Default)]
pub struct PackBuilder {
    buf: Vec<u8>,
    blobs: Vec<PackedBlob>,
    seen: HashSet<ContentHash>,
}

/// A finished pack: its id, bytes and index.
#[derive(Debug, Clone)]
pub struct SealedPack {
    /// BLAKE3 of `bytes`, hex.
    pub id: String,
    /// The pack's content.
    pub bytes: Bytes,
    /// What it holds.
    pub index: PackIndex,
}

impl PackBuilder {
    /// An empty pack expecting about `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        PackBuilder {
            buf: Vec::with_capacity(capacity),
            ..Self::default()
        }
    }

    /// Appends a blob unless the pack has it already.
    pub fn add(&mut self, hash: ContentHash, content: &[u8]) {
        if self.seen.insert(hash) {
            self.blobs.push(PackedBlob {
                hash,
                offset: self.buf.len() as u64,
                length: content.len() as u64,
            });
            self.buf.extend_from_slice(content);
        }
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True once no more blobs should be added ([`MAX_PACK_BLOBS`]).
    pub fn is_full_of_blobs(&self) -> bool {
        self.blobs.len() >= MAX_PACK_BLOBS
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Finishes the pack.
    pub fn seal(self) -> SealedPack {
        let id = blake3::hash(&self.buf).to_hex().to_string();
        SealedPack {
            index: PackIndex {
                format: PACK_INDEX_FORMAT.into(),
                pack: id.clone(),
                blobs: self.blobs,
            },
            id,
            bytes: Bytes::from(self.buf),
        }
    }
}

impl SealedPack {
    /// Where each blob landed.
    pub fn locations(&self) -> impl Iterator<Item = (ContentHash, BlobLoc)> + '_ {
        self.index.blobs.iter().map(|b| {
            (
                b.hash,
                BlobLoc {
                    pack: self.id.clone(),
                    offset: b.offset,
                    length: b.length,
                },
            )
        })
    }
}

/// Groups the ranges to fetch from one pack into batches of at most
/// `max_batch` bytes (a range larger than that is a batch of its own), so a
/// restore holds at most one batch per request in flight in memory.
pub fn batch_ranges(mut ranges: Vec<(u64, u64)>, max_batch: u64) -> Vec<Vec<(u64, u64)>> {
    ranges.sort_unstable();
    ranges.dedup();
    let mut out: Vec<Vec<(u64, u64)>> = Vec::new();
    let mut current: Vec<(u64, u64)> = Vec::new();
    let mut size = 0u64;
    for (offset, length) in ranges {
        if !current.is_empty() && size.saturating_add(length) > max_batch {
            out.push(std::mem::take(&mut current));
            size = 0;
        }
        size = size.saturating_add(length);
        current.push((offset, length));
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_core::{FileMeta, RelPath};

    fn file(content: &[u8]) -> Meta {
        Meta::File(FileMeta {
            size: content.len() as u64,
            mtime_ns: 5,
            mode: 0o644,
            hash: ContentHash::of(content),
        })
    }

    fn sample() -> (Manifest, SealedPack) {
        let mut pack = PackBuilder::with_capacity(16);
        pack.add(ContentHash::of(b"aa"), b"aa");
        pack.add(ContentHash::of(b"bbb"), b"bbb");
        pack.add(ContentHash::of(b"aa"), b"aa");
        let sealed = pack.seal();
        let locs: HashMap<_, _> = sealed.locations().collect();
        let mut c = Checkpoint::new();
        c.upsert(RelPath::new("a").unwrap(), file(b"aa"));
        c.upsert(RelPath::new("d/b").unwrap(), file(b"bbb"));
        c.upsert(RelPath::new("d").unwrap(), Meta::dir(0o750));
        c.upsert(
            RelPath::new("l").unwrap(),
            Meta::Symlink { target: "a".into() },
        );
        let entries = apply_checkpoint(&BTreeMap::new(), &c, &locs).unwrap();
        (
            Manifest::new("0000000000001-00000001".into(), None, 1, entries),
            sealed,
        )
    }

    #[test]
    fn packs_deduplicate_and_locate_blobs() {
        let (_, sealed) = sample();
        assert_eq!(&sealed.bytes[..], b"aabbb");
        assert_eq!(sealed.id, blake3::hash(b"aabbb").to_hex().to_string());
        let locs: Vec<_> = sealed
            .locations()
            .map(|(_, l)| (l.offset, l.length))
            .collect();
        assert_eq!(locs, [(0, 2), (2, 3)]);
        let back = PackIndex::decode(&sealed.index.encode(), "i").unwrap();
        assert_eq!(back, sealed.index);
    }

    #[test]
    fn manifest_round_trips_and_counts() {
        let (m, _) = sample();
        assert_eq!((m.files, m.bytes), (2, 5));
        let paths: Vec<_> = m.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a", "d", "d/b", "l"]);
        let back = Manifest::decode(&m.encode(), "m", 100).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn bad_manifests_are_refused_naming_the_object() {
        let (m, _) = sample();
        let bytes = m.encode();
        let e = Manifest::decode(&bytes[..bytes.len() / 2], "p/snapshots/x", 100).unwrap_err();
        assert!(e.to_string().contains("p/snapshots/x") && e.to_string().contains("truncated"));

        let mut wrong_total = m.clone();
        wrong_total.entries.pop();
        wrong_total.entries.remove(0);
        assert!(wrong_total.check("m").is_err());

        let mut evil_pack = m.clone();
        evil_pack.entries[0].blob.as_mut().unwrap().pack = "../../x".into();
        assert!(
            evil_pack
                .check("m")
                .unwrap_err()
                .to_string()
                .contains("invalid pack id")
        );

        let mut wrong_len = m.clone();
        wrong_len.entries[0].blob.as_mut().unwrap().length = 1;
        assert!(wrong_len.check("m").is_err());

        let mut no_blob = m;
        no_blob.entries[0].blob = None;
        assert!(no_blob.check("m").is_err());
    }

    /// Two files of 2^63 bytes each: their sum passes 2^64, so no byte
    /// total is true; one saturating at `u64::MAX` must not pass for it.
    #[test]
    fn byte_totals_past_2_pow_64_are_refused() {
        let (mut m, _) = sample();
        for e in &mut m.entries {
            if let (Meta::File(f), Some(loc)) = (&mut e.meta, &mut e.blob) {
                f.size = 1 << 63;
                loc.offset = 0;
                loc.length = 1 << 63;
            }
        }
        m.bytes = u64::MAX;
        let e = Manifest::decode(&m.encode(), "p/snapshots/x", 100).unwrap_err();
        assert!(e.to_string().contains("p/snapshots/x"), "{e}");
    }

    #[test]
    fn heads_and_ids() {
        let h = HeadRecord {
            format: HEAD_FORMAT.into(),
            snapshot: new_snapshot_id(1_700_000_000_000, 0xabc),
            time_ms: 1,
        };
        assert_eq!(h.snapshot, "1700000000000-00000abc");
        assert_eq!(HeadRecord::decode(&h.encode(), "h").unwrap(), h);
        let evil = HeadRecord {
            snapshot: "../x".into(),
            ..h
        };
        assert!(HeadRecord::decode(&evil.encode(), "h").is_err());
        assert!(is_snapshot_id("0001-ab") && !is_snapshot_id("A") && !is_snapshot_id(""));
        assert!(new_snapshot_id(1, 0) < new_snapshot_id(2, 0));
    }

    #[test]
    fn applying_a_checkpoint_needs_every_blob_and_deletes() {
        let (m, _) = sample();
        let base = m.by_path();
        let mut c = Checkpoint::new();
        c.delete(RelPath::new("a").unwrap());
        c.upsert(RelPath::new("new").unwrap(), file(b"zz"));
        let missing = apply_checkpoint(&base, &c, &HashMap::new()).unwrap_err();
        assert_eq!(missing, ContentHash::of(b"zz"));
        let loc = BlobLoc {
            pack: "f".repeat(64),
            offset: 0,
            length: 2,
        };
        let locs = HashMap::from([(ContentHash::of(b"zz"), loc)]);
        let out = apply_checkpoint(&base, &c, &locs).unwrap();
        assert!(!out.contains_key("a") && out.contains_key("new") && out.contains_key("d/b"));
    }

    /// The streamed merge writes the bytes the copying code wrote
    /// (`apply_checkpoint` + `Manifest::new` + `encode`), and the manifest
    /// built in place equals the decoded one; an unsorted base with a
    /// repeated path (a hand-edited remote) is read as a `BTreeMap` would.
    #[test]
    fn the_streamed_merge_writes_what_the_copying_code_wrote() {
        let (m, sealed) = sample();
        let mut locs: HashMap<_, _> = sealed.locations().collect();
        let zz = BlobLoc {
            pack: "f".repeat(64),
            offset: 0,
            length: 2,
        };
        locs.insert(ContentHash::of(b"zz"), zz);
        let mut c = Checkpoint::new();
        c.delete(RelPath::new("a").unwrap());
        c.upsert(RelPath::new("0first").unwrap(), file(b"zz"));
        c.upsert(RelPath::new("d/b").unwrap(), file(b"aa"));
        c.upsert(RelPath::new("zlast").unwrap(), Meta::dir(0o700));
        c.delete(RelPath::new("never-was").unwrap());
        let mut unsorted = m.clone();
        unsorted.entries.reverse();
        let mut dup = unsorted.entries[0].clone();
        dup.meta = Meta::Symlink {
            target: "older".into(),
        };
        unsorted.entries.insert(0, dup);
        for base in [m, unsorted] {
            let id = "0000000000002-00000002";
            let old = Manifest::new(
                id.into(),
                Some(base.id.clone()),
                7,
                apply_checkpoint(&base.by_path(), &c, &locs).unwrap(),
            );
            let merge = Merge::new(&base.entries, &c, &locs).unwrap();
            let (payload, files, bytes) = merge.encode(id, Some(&base.id), 7);
            let written: Vec<u8> = payload.iter().flat_map(|b| b.to_vec()).collect();
            assert_eq!(written, old.encode().to_vec());
            assert_eq!((files, bytes), (old.files, old.bytes));
            let built = Merge::into_manifest(
                &c,
                &locs,
                base.entries.clone(),
                (id.into(), Some(base.id.clone()), 7),
            );
            assert_eq!(built, old);
            assert_eq!(Manifest::decode(&written, "m", 100).unwrap(), old);
        }
        let mut missing = Checkpoint::new();
        missing.upsert(RelPath::new("x").unwrap(), file(b"not uploaded"));
        assert_eq!(
            Merge::new(&[], &missing, &locs).unwrap_err(),
            ContentHash::of(b"not uploaded")
        );
    }

    #[test]
    fn contested_paths_are_those_another_writer_changed() {
        let (m, _) = sample();
        let old = m.by_path();
        let mut theirs = old.clone();
        theirs.get_mut("a").unwrap().meta = file(b"other");
        theirs.remove("l");
        let mut mine = Checkpoint::new();
        mine.upsert(RelPath::new("a").unwrap(), file(b"mine"));
        mine.upsert(RelPath::new("d/b").unwrap(), file(b"mine"));
        assert_eq!(contested_paths(&old, &theirs, &mine), ["a"]);
    }

    #[test]
    fn range_batches_are_bounded() {
        let b = batch_ranges(vec![(10, 5), (0, 5), (5, 5), (0, 5), (100, 50)], 10);
        assert_eq!(
            b,
            vec![vec![(0, 5), (5, 5)], vec![(10, 5)], vec![(100, 50)]]
        );
    }
}
