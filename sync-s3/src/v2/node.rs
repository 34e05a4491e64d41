//! Tree nodes: typed structs, their canonical binary encoding, a strict
//! decoder and node ids (FORMAT.md, "sync-s3 snapshots, format v2" →
//! "Tree nodes (canonical binary)" and "Ids").
//!
//! ```text
//! leaf   = 'L'  npacks:uvarint  pack-id[32]×npacks  nentries:uvarint  entry×nentries
//! branch = 'B'  level:u8 (1..=8)  nchildren:uvarint  child×nchildren
//! child  = node-id[32]  first_name:bytes  entries_below:uvarint
//! list   = 'C'  npacks:uvarint  pack-id[32]×npacks  nchunks:uvarint  chunk×nchunks
//! ```
//!
//! Data flow: the writer builds [`Node`]s (usually through
//! [`super::pages`]), [`encode`]s them and names them by [`node_id`]; the
//! reader hands the bytes a frame decoded to [`decode_verified`] with the id
//! the parent named and gets a [`Node`] back, or a [`NodeError`] naming the
//! field.
//!
//! In memory a location names its pack by id ([`Loc::pack`]); the pack table
//! of the encoding is derived: the distinct packs in order of first use by
//! the node's locations (entries in order, chunks in order). So a `Node`
//! value has exactly one encoding, and the decoder refuses a table that is
//! out of that order, lists a pack twice or lists one nothing uses.
//!
//! The decoder checks every rule that one node's bytes can break; rules that
//! span nodes are the walker's: a `subtree` names an `'L'`/`'B'`, a content
//! list only `'C'`s (full ones but the last, whose chunk sizes add up to the
//! file's size), a branch's children are of `level − 1`, a child's
//! `first_name` is its subtree's first name and above the previous child's
//! last, `entries_below` matches what is decoded, a top branch has ≥ 2
//! children.

use std::collections::{HashMap, HashSet};
use std::fmt;

use super::varint::{self, VarintError};

/// First byte of a leaf.
pub(crate) const TAG_LEAF: u8 = b'L';
/// First byte of a branch.
pub(crate) const TAG_BRANCH: u8 = b'B';
/// First byte of a chunk list.
pub(crate) const TAG_LIST: u8 = b'C';
const KIND_FILE: u8 = 1;
const KIND_DIR: u8 = 2;
const KIND_SYMLINK: u8 = 3;
const FORM_EMPTY: u8 = 0x00;
const FORM_BLOB: u8 = 0x01;
const FORM_CHUNKS: u8 = 0x02;
const FORM_LISTS: u8 = 0x03;

/// Longest entry name, bytes.
pub(crate) const MAX_NAME_LEN: usize = 255;
/// Longest symlink target, bytes.
pub(crate) const MAX_TARGET_LEN: usize = 4096;
/// The only mode bits that exist (FORMAT.md "Modes").
pub(crate) const MAX_MODE: u32 = 0o777;
/// Highest branch level.
pub(crate) const MAX_LEVEL: u8 = 8;
/// Most chunks a file entry holds inline (content form 0x02).
pub(crate) const MAX_INLINE_CHUNKS: u64 = 1024;
/// Chunks per `'C'` node as the writer fills them (all full but the last).
pub(crate) const CHUNKS_PER_LIST: u64 = 16_384;
/// The v2 chunk size (`config.chunk_size`, fixed in version 2).
pub(crate) const CHUNK_SIZE: u64 = 4 * 1024 * 1024;
/// What framing and AEAD may add to a blob's stored length.
pub(crate) const STORED_OVERHEAD: u64 = 1024;

/// Bytes of the smallest possible entry, child and chunk: counts larger than
/// the bytes left can hold are refused before anything is allocated.
const MIN_ENTRY_LEN: usize = 2 + 1 + 2; // name(1) + kind + 1-byte symlink target
const MIN_CHILD_LEN: usize = 32 + 2 + 1;
const MIN_CHUNK_LEN: usize = 3 + 1 + 32;

/// A 32-byte id printed as 64 lower-hex digits.
macro_rules! id32 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub(crate) struct $name(pub(crate) [u8; 32]);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(blake3::Hash::from_bytes(self.0).to_hex().as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
    };
}

id32!(
    /// A node's id: the (keyed) BLAKE3 of its canonical bytes.
    NodeId
);
id32!(
    /// A pack's id: 32 random bytes (its key is `data/<xx>/<hex>`).
    PackId
);

/// The limits a reader enforces (FORMAT.md "Reader checks and limits").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Largest node, plain bytes.
    pub(crate) max_node_bytes: usize,
    /// Most entries in one leaf.
    pub(crate) max_leaf_entries: u64,
    /// Most children of one branch.
    pub(crate) max_branch_children: u64,
    /// Most chunks in one `'C'` node.
    pub(crate) max_list_chunks: u64,
    /// Most entries in one directory (`max_entries`); a leaf's count and a
    /// branch's sum of `entries_below` are refused above it.
    pub(crate) max_dir_entries: u64,
    /// The repository's chunk size (`config.chunk_size`).
    pub(crate) chunk_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_node_bytes: 4 * 1024 * 1024,
            max_leaf_entries: 4096,
            max_branch_children: 4096,
            max_list_chunks: 16_384,
            max_dir_entries: 500_000,
            chunk_size: CHUNK_SIZE,
        }
    }
}

/// One tree object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    /// A page of directory entries.
    Leaf(Leaf),
    /// Pages (or lower branches) of one directory.
    Branch(Branch),
    /// Part of the chunk list of a file with more than 1,024 chunks.
    List(ChunkList),
}

/// A page of one directory's entries, names strictly increasing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Leaf {
    /// The entries, sorted by name bytes.
    pub(crate) entries: Vec<Entry>,
}

/// One level of a large directory's page tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Branch {
    /// 1 above leaves, up to [`MAX_LEVEL`].
    pub(crate) level: u8,
    /// The children, `first_name` strictly increasing.
    pub(crate) children: Vec<Child>,
}

/// A branch's reference to a leaf or a lower branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Child {
    /// The child node.
    pub(crate) id: NodeId,
    /// The first entry name under it.
    pub(crate) first_name: String,
    /// How many entries are under it (a hint, checked by the walker).
    pub(crate) entries_below: u64,
}

/// Chunks of a huge file, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkList {
    /// 1..=16,384 chunks.
    pub(crate) chunks: Vec<Chunk>,
}

/// A named directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// One path component, 1–255 bytes.
    pub(crate) name: String,
    /// What it is.
    pub(crate) kind: EntryKind,
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// A regular file.
    File(FileEntry),
    /// A directory and the root of its node tree.
    Dir {
        /// Permission bits (≤ 0o777).
        mode: u32,
        /// Its leaf or top branch.
        subtree: NodeId,
    },
    /// A symbolic link (1–4,096 bytes, no NUL; never followed).
    Symlink {
        /// The link's target text.
        target: String,
    },
}

/// A regular file's metadata and where its content is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileEntry {
    /// Permission bits (≤ 0o777).
    pub(crate) mode: u32,
    /// Length in bytes.
    pub(crate) size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub(crate) mtime_ns: i64,
    /// BLAKE3 of the whole content.
    pub(crate) hash: [u8; 32],
    /// Where the content is; its form follows from `size`.
    pub(crate) content: Content,
}

/// Where a file's content is (the form is fixed by the size: 0 → `Empty`,
/// ≤ one chunk → `Blob`, ≤ 1,024 chunks → `Chunks`, more → `Lists`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Content {
    /// 0x00: the empty file.
    Empty,
    /// 0x01: one blob of `size` plain bytes.
    Blob(Loc),
    /// 0x02: 2..=1,024 chunks inline.
    Chunks(Vec<Chunk>),
    /// 0x03: `'C'` nodes holding the chunks.
    Lists(Vec<NodeId>),
}

/// Where one stored blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    /// The pack holding it.
    pub(crate) pack: PackId,
    /// Its first byte in the pack.
    pub(crate) offset: u64,
    /// Its stored (framed, maybe sealed) length.
    pub(crate) stored_len: u64,
}

/// One chunk of a large file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// Where it is stored.
    pub(crate) loc: Loc,
    /// Its plaintext length.
    pub(crate) plain_len: u64,
    /// BLAKE3 of its plaintext.
    pub(crate) hash: [u8; 32],
}

/// Why a node's bytes were refused. Messages name the field.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NodeError {
    /// The node is larger than [`Limits::max_node_bytes`].
    #[error("node of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// No bytes at all.
    #[error("empty node (no tag byte)")]
    Empty,
    /// A tag other than `L`, `B`, `C`.
    #[error("unknown node tag {0:#04x}: written by a newer tether?")]
    UnknownTag(u8),
    /// The bytes end inside a field.
    #[error("{field}: truncated (the node ends inside it)")]
    Truncated {
        /// The field.
        field: &'static str,
    },
    /// A field's varint is invalid.
    #[error("{field}: {source}")]
    Varint {
        /// The field.
        field: &'static str,
        /// Why.
        #[source]
        source: VarintError,
    },
    /// A count above its limit.
    #[error("{field} {count} exceeds the limit of {limit}")]
    CountLimit {
        /// The field.
        field: &'static str,
        /// The count read.
        count: u64,
        /// The limit.
        limit: u64,
    },
    /// A count that the remaining bytes cannot hold.
    #[error("{field} {count} cannot fit in the {remaining} bytes left")]
    CountExceedsInput {
        /// The field.
        field: &'static str,
        /// The count read.
        count: u64,
        /// Bytes left in the node.
        remaining: usize,
    },
    /// A count outside the range the format allows.
    #[error("{field} {count} is outside {min}..={max}")]
    CountRange {
        /// The field.
        field: &'static str,
        /// The count read.
        count: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A length-prefixed field too long (or empty).
    #[error("{field}: length {len} is outside 1..={max}")]
    Length {
        /// The field.
        field: &'static str,
        /// The length read.
        len: u64,
        /// Its maximum.
        max: usize,
    },
    /// A name that is not one valid path component.
    #[error("{field} {name:?}: {reason}")]
    Name {
        /// The field.
        field: &'static str,
        /// The name (lossy UTF-8).
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// Names not strictly increasing.
    #[error(
        "{field} {name:?} does not sort after {prev:?} (names must strictly increase: no duplicates, byte order)"
    )]
    Order {
        /// The field.
        field: &'static str,
        /// The previous name.
        prev: String,
        /// The offending name.
        name: String,
    },
    /// An unknown entry kind.
    #[error("unknown entry kind {0}: written by a newer tether?")]
    UnknownKind(u8),
    /// An unknown content form.
    #[error("unknown content form {0:#04x}: written by a newer tether?")]
    UnknownContentForm(u8),
    /// Mode bits beyond 0o777.
    #[error("mode {0:#o} has bits beyond 0o777")]
    Mode(u64),
    /// Size, content form and chunk lengths do not agree.
    #[error("content: {0}")]
    Content(String),
    /// A location's pack index out of the table.
    #[error("loc pack index {index} is not below npacks {npacks}")]
    PackIndex {
        /// The index read.
        index: u64,
        /// The table's length.
        npacks: u64,
    },
    /// A pack table that is not canonical.
    #[error("pack table: {0}")]
    PackTable(String),
    /// `offset + stored_len` overflows.
    #[error("loc offset {offset} + stored_len {stored_len} overflows")]
    LocOverflow {
        /// The offset.
        offset: u64,
        /// The stored length.
        stored_len: u64,
    },
    /// A stored length out of range.
    #[error("loc stored_len {stored_len} is outside 1..={max}")]
    StoredLen {
        /// The stored length.
        stored_len: u64,
        /// chunk_size + 1 KiB.
        max: u64,
    },
    /// A bad symlink target.
    #[error("symlink target: {0}")]
    Target(&'static str),
    /// A branch level out of range.
    #[error("branch level {0} is outside 1..=8")]
    Level(u8),
    /// `entries_below` out of range.
    #[error("branch child {name:?}: entries_below {count} (must be ≥ 1, the sum ≤ {limit})")]
    EntriesBelow {
        /// The child's first name.
        name: String,
        /// The value read.
        count: u64,
        /// The directory entry limit.
        limit: u64,
    },
    /// Bytes after the last field.
    #[error("{0} trailing bytes after the node")]
    Trailing(usize),
    /// An error inside one entry, with its name.
    #[error("entry {name:?}: {source}")]
    InEntry {
        /// The entry's name.
        name: String,
        /// What is wrong with it.
        #[source]
        source: Box<NodeError>,
    },
    /// The bytes do not hash to the id they were fetched by.
    #[error("content does not match its id {expected} (it hashes to {actual})")]
    IdMismatch {
        /// The id the parent named.
        expected: NodeId,
        /// The id of the bytes.
        actual: NodeId,
    },
}

/// The id of a node's canonical bytes: `blake3::hash`, or
/// `blake3::keyed_hash(id_key, ..)` in an encrypted repository.
pub(crate) fn node_id(canonical: &[u8], id_key: Option<&[u8; 32]>) -> NodeId {
    let hash = match id_key {
        None => blake3::hash(canonical),
        Some(key) => blake3::keyed_hash(key, canonical),
    };
    NodeId(*hash.as_bytes())
}

/// The canonical bytes of `node`. The caller keeps the rules the decoder
/// checks (names valid and strictly increasing, modes ≤ 0o777, the content
/// form matching the size …); [`super::pages`] does for directories.
pub(crate) fn encode(node: &Node) -> Vec<u8> {
    match node {
        Node::Leaf(leaf) => {
            let mut w = LeafWriter::default();
            for e in &leaf.entries {
                w.push(e);
            }
            w.finish()
        }
        Node::Branch(branch) => {
            let mut out = vec![TAG_BRANCH, branch.level];
            varint::put(&mut out, branch.children.len() as u64);
            for c in &branch.children {
                put_child(&mut out, c);
            }
            out
        }
        Node::List(list) => {
            let mut table = PackTable::default();
            let mut body = Vec::new();
            for c in &list.chunks {
                put_chunk(&mut body, &mut table, c);
            }
            table.assemble(TAG_LIST, list.chunks.len() as u64, &body)
        }
    }
}

/// Decodes `bytes` after checking they hash to `expected`.
pub(crate) fn decode_verified(
    bytes: &[u8],
    expected: &NodeId,
    id_key: Option<&[u8; 32]>,
    limits: &Limits,
) -> Result<Node, NodeError> {
    if bytes.len() > limits.max_node_bytes {
        return Err(NodeError::TooLarge {
            len: bytes.len(),
            limit: limits.max_node_bytes,
        });
    }
    let actual = node_id(bytes, id_key);
    if actual != *expected {
        return Err(NodeError::IdMismatch {
            expected: *expected,
            actual,
        });
    }
    decode(bytes, limits)
}

/// Decodes one node, refusing anything but its canonical encoding within
/// `limits`.
pub(crate) fn decode(bytes: &[u8], limits: &Limits) -> Result<Node, NodeError> {
    if bytes.len() > limits.max_node_bytes {
        return Err(NodeError::TooLarge {
            len: bytes.len(),
            limit: limits.max_node_bytes,
        });
    }
    let mut r = Reader { buf: bytes, pos: 0 };
    let tag = r.u8("node tag").map_err(|_| NodeError::Empty)?;
    let node = match tag {
        TAG_LEAF => Node::Leaf(decode_leaf(&mut r, limits)?),
        TAG_BRANCH => Node::Branch(decode_branch(&mut r, limits)?),
        TAG_LIST => Node::List(decode_list(&mut r, limits)?),
        other => return Err(NodeError::UnknownTag(other)),
    };
    if r.remaining() != 0 {
        return Err(NodeError::Trailing(r.remaining()));
    }
    Ok(node)
}

// ---------------------------------------------------------------- encoding

/// Packs in order of first use, and their indexes.
#[derive(Default)]
struct PackTable {
    ids: Vec<PackId>,
    index: HashMap<PackId, u64>,
}

impl PackTable {
    fn index_of(&mut self, pack: PackId) -> u64 {
        let next = self.ids.len() as u64;
        *self.index.entry(pack).or_insert_with(|| {
            self.ids.push(pack);
            next
        })
    }

    /// `tag npacks table count body`.
    fn assemble(&self, tag: u8, count: u64, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len(count) + body.len());
        out.push(tag);
        varint::put(&mut out, self.ids.len() as u64);
        for p in &self.ids {
            out.extend_from_slice(&p.0);
        }
        varint::put(&mut out, count);
        out.extend_from_slice(body);
        out
    }

    /// Bytes of everything but the body.
    fn encoded_len(&self, count: u64) -> usize {
        1 + varint::len(self.ids.len() as u64) + 32 * self.ids.len() + varint::len(count)
    }
}

/// A leaf built one entry at a time, its exact encoded length known after
/// each (entries already written keep their pack indexes: first-use order).
#[derive(Default)]
pub(crate) struct LeafWriter {
    table: PackTable,
    body: Vec<u8>,
    count: u64,
}

impl LeafWriter {
    /// Appends `entry` (the caller keeps names increasing).
    pub(crate) fn push(&mut self, entry: &Entry) {
        put_bytes(&mut self.body, entry.name.as_bytes());
        match &entry.kind {
            EntryKind::File(f) => {
                self.body.push(KIND_FILE);
                varint::put(&mut self.body, u64::from(f.mode));
                varint::put(&mut self.body, f.size);
                self.body.extend_from_slice(&f.mtime_ns.to_le_bytes());
                self.body.extend_from_slice(&f.hash);
                match &f.content {
                    Content::Empty => self.body.push(FORM_EMPTY),
                    Content::Blob(loc) => {
                        self.body.push(FORM_BLOB);
                        put_loc(&mut self.body, &mut self.table, loc);
                    }
                    Content::Chunks(chunks) => {
                        self.body.push(FORM_CHUNKS);
                        varint::put(&mut self.body, chunks.len() as u64);
                        for c in chunks {
                            put_chunk(&mut self.body, &mut self.table, c);
                        }
                    }
                    Content::Lists(ids) => {
                        self.body.push(FORM_LISTS);
                        varint::put(&mut self.body, ids.len() as u64);
                        for id in ids {
                            self.body.extend_from_slice(&id.0);
                        }
                    }
                }
            }
            EntryKind::Dir { mode, subtree } => {
                self.body.push(KIND_DIR);
                varint::put(&mut self.body, u64::from(*mode));
                self.body.extend_from_slice(&subtree.0);
            }
            EntryKind::Symlink { target } => {
                self.body.push(KIND_SYMLINK);
                put_bytes(&mut self.body, target.as_bytes());
            }
        }
        self.count += 1;
    }

    /// Entries pushed so far.
    pub(crate) fn len(&self) -> u64 {
        self.count
    }

    /// The exact length [`LeafWriter::finish`] would return now.
    pub(crate) fn encoded_len(&self) -> usize {
        self.table.encoded_len(self.count) + self.body.len()
    }

    /// The leaf's canonical bytes.
    pub(crate) fn finish(self) -> Vec<u8> {
        self.table.assemble(TAG_LEAF, self.count, &self.body)
    }
}

fn put_bytes(out: &mut Vec<u8>, data: &[u8]) {
    varint::put(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn put_loc(out: &mut Vec<u8>, table: &mut PackTable, loc: &Loc) {
    varint::put(out, table.index_of(loc.pack));
    varint::put(out, loc.offset);
    varint::put(out, loc.stored_len);
}

fn put_chunk(out: &mut Vec<u8>, table: &mut PackTable, c: &Chunk) {
    put_loc(out, table, &c.loc);
    varint::put(out, c.plain_len);
    out.extend_from_slice(&c.hash);
}

/// Appends one branch child's encoding.
pub(crate) fn put_child(out: &mut Vec<u8>, c: &Child) {
    out.extend_from_slice(&c.id.0);
    put_bytes(out, c.first_name.as_bytes());
    varint::put(out, c.entries_below);
}

// ---------------------------------------------------------------- decoding

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], NodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(NodeError::Truncated { field })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, NodeError> {
        Ok(self.take(1, field)?[0])
    }

    fn id(&mut self, field: &'static str) -> Result<[u8; 32], NodeError> {
        let mut out = [0; 32];
        out.copy_from_slice(self.take(32, field)?);
        Ok(out)
    }

    fn uvarint(&mut self, field: &'static str) -> Result<u64, NodeError> {
        let (v, n) = varint::get(&self.buf[self.pos..]).map_err(|source| match source {
            VarintError::Truncated => NodeError::Truncated { field },
            source => NodeError::Varint { field, source },
        })?;
        self.pos += n;
        Ok(v)
    }

    /// A count ≤ `limit` whose items (each ≥ `min_item` bytes) fit in what
    /// is left: safe to preallocate.
    fn count(
        &mut self,
        field: &'static str,
        limit: u64,
        min_item: usize,
    ) -> Result<usize, NodeError> {
        let count = self.uvarint(field)?;
        if count > limit {
            return Err(NodeError::CountLimit {
                field,
                count,
                limit,
            });
        }
        let remaining = self.remaining();
        let fits = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(min_item))
            .is_some_and(|need| need <= remaining);
        if !fits {
            return Err(NodeError::CountExceedsInput {
                field,
                count,
                remaining,
            });
        }
        // Fits in usize: checked just above.
        Ok(usize::try_from(count).unwrap_or(0))
    }

    /// `len:uvarint data[len]` with `len ≤ max`.
    fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], NodeError> {
        let len = self.uvarint(field)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= max)
            .ok_or(NodeError::Length { field, len, max })?;
        self.take(len, field)
    }

    fn name(&mut self, field: &'static str) -> Result<String, NodeError> {
        let raw = self.bytes(field, MAX_NAME_LEN)?;
        let bad = |reason| NodeError::Name {
            field,
            name: String::from_utf8_lossy(raw).into_owned(),
            reason,
        };
        if raw.is_empty() {
            return Err(bad("empty"));
        }
        let name = std::str::from_utf8(raw).map_err(|_| bad("not valid UTF-8"))?;
        if name.contains('/') {
            return Err(bad("contains '/' (not one path component)"));
        }
        // The one place that decides which path components are acceptable.
        if sync_core::RelPath::new(name).is_err() {
            return Err(bad(
                "not a valid path component (NUL, backslash, '.' or '..')",
            ));
        }
        Ok(name.to_owned())
    }
}

/// A decoded pack table and the first-use order check.
struct TableReader {
    ids: Vec<PackId>,
    next_new: u64,
}

impl TableReader {
    fn read(r: &mut Reader<'_>) -> Result<Self, NodeError> {
        let n = r.count("npacks", u64::MAX, 32)?;
        let mut ids = Vec::with_capacity(n);
        let mut seen = HashSet::with_capacity(n);
        for _ in 0..n {
            let id = PackId(r.id("pack-id")?);
            if !seen.insert(id) {
                return Err(NodeError::PackTable(format!("pack {id} is listed twice")));
            }
            ids.push(id);
        }
        Ok(TableReader { ids, next_new: 0 })
    }

    fn resolve(&mut self, index: u64) -> Result<PackId, NodeError> {
        let npacks = self.ids.len() as u64;
        let pack = usize::try_from(index)
            .ok()
            .and_then(|i| self.ids.get(i))
            .ok_or(NodeError::PackIndex { index, npacks })?;
        if index > self.next_new {
            return Err(NodeError::PackTable(format!(
                "pack index {index} used before index {} (the table must be in order of first use)",
                self.next_new
            )));
        }
        if index == self.next_new {
            self.next_new += 1;
        }
        Ok(*pack)
    }

    fn finish(self) -> Result<(), NodeError> {
        let unused = self.ids.len() as u64 - self.next_new;
        if unused != 0 {
            return Err(NodeError::PackTable(format!(
                "{unused} listed packs are never used"
            )));
        }
        Ok(())
    }
}

fn decode_loc(r: &mut Reader<'_>, t: &mut TableReader, limits: &Limits) -> Result<Loc, NodeError> {
    let index = r.uvarint("loc pack")?;
    let pack = t.resolve(index)?;
    let offset = r.uvarint("loc offset")?;
    let stored_len = r.uvarint("loc stored_len")?;
    let max = limits.chunk_size.saturating_add(STORED_OVERHEAD);
    if stored_len == 0 || stored_len > max {
        return Err(NodeError::StoredLen { stored_len, max });
    }
    if offset.checked_add(stored_len).is_none() {
        return Err(NodeError::LocOverflow { offset, stored_len });
    }
    Ok(Loc {
        pack,
        offset,
        stored_len,
    })
}

/// `count` chunks; every one but the last exactly `chunk_size`, the last
/// 1..=`chunk_size`. Returns them and the checked sum of their lengths.
fn decode_chunks(
    r: &mut Reader<'_>,
    t: &mut TableReader,
    count: usize,
    limits: &Limits,
) -> Result<(Vec<Chunk>, u64), NodeError> {
    let mut chunks = Vec::with_capacity(count);
    let mut total: u64 = 0;
    for i in 0..count {
        let loc = decode_loc(r, t, limits)?;
        let plain_len = r.uvarint("chunk plain_len")?;
        let hash = r.id("chunk_hash")?;
        let last = i + 1 == count;
        let ok = if last {
            (1..=limits.chunk_size).contains(&plain_len)
        } else {
            plain_len == limits.chunk_size
        };
        if !ok {
            return Err(NodeError::Content(format!(
                "chunk {i} of {count} has plain_len {plain_len}; chunks are exactly {} bytes but the last (1..={})",
                limits.chunk_size, limits.chunk_size
            )));
        }
        total = total
            .checked_add(plain_len)
            .ok_or_else(|| NodeError::Content("chunk lengths overflow".to_owned()))?;
        chunks.push(Chunk {
            loc,
            plain_len,
            hash,
        });
    }
    Ok((chunks, total))
}

fn decode_leaf(r: &mut Reader<'_>, limits: &Limits) -> Result<Leaf, NodeError> {
    let mut table = TableReader::read(r)?;
    let limit = limits.max_leaf_entries.min(limits.max_dir_entries);
    let n = r.count("nentries", limit, MIN_ENTRY_LEN)?;
    let mut entries: Vec<Entry> = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.name("entry name")?;
        if let Some(prev) = entries.last()
            && prev.name.as_bytes() >= name.as_bytes()
        {
            return Err(NodeError::Order {
                field: "entry name",
                prev: prev.name.clone(),
                name,
            });
        }
        let kind = decode_entry_body(r, &mut table, limits).map_err(|e| NodeError::InEntry {
            name: name.clone(),
            source: Box::new(e),
        })?;
        entries.push(Entry { name, kind });
    }
    table.finish()?;
    Ok(Leaf { entries })
}

fn decode_mode(r: &mut Reader<'_>) -> Result<u32, NodeError> {
    let mode = r.uvarint("mode")?;
    match u32::try_from(mode) {
        Ok(m) if m <= MAX_MODE => Ok(m),
        _ => Err(NodeError::Mode(mode)),
    }
}

fn decode_entry_body(
    r: &mut Reader<'_>,
    t: &mut TableReader,
    limits: &Limits,
) -> Result<EntryKind, NodeError> {
    match r.u8("entry kind")? {
        KIND_FILE => {
            let mode = decode_mode(r)?;
            let size = r.uvarint("size")?;
            let mut mtime = [0; 8];
            mtime.copy_from_slice(r.take(8, "mtime_ns")?);
            let mtime_ns = i64::from_le_bytes(mtime);
            let hash = r.id("hash")?;
            let content = decode_content(r, t, size, limits)?;
            Ok(EntryKind::File(FileEntry {
                mode,
                size,
                mtime_ns,
                hash,
                content,
            }))
        }
        KIND_DIR => {
            let mode = decode_mode(r)?;
            let subtree = NodeId(r.id("subtree")?);
            Ok(EntryKind::Dir { mode, subtree })
        }
        KIND_SYMLINK => {
            let raw = r.bytes("symlink target", MAX_TARGET_LEN)?;
            if raw.is_empty() {
                return Err(NodeError::Target("empty"));
            }
            if raw.contains(&0) {
                return Err(NodeError::Target("contains a NUL byte"));
            }
            let target =
                std::str::from_utf8(raw).map_err(|_| NodeError::Target("not valid UTF-8"))?;
            Ok(EntryKind::Symlink {
                target: target.to_owned(),
            })
        }
        other => Err(NodeError::UnknownKind(other)),
    }
}

/// The content form a file of `size` bytes must have, and its chunk count.
fn expected_form(size: u64, chunk_size: u64) -> (u8, u64) {
    let chunks = size.div_ceil(chunk_size.max(1));
    match size {
        0 => (FORM_EMPTY, 0),
        s if s <= chunk_size => (FORM_BLOB, 1),
        _ if chunks <= MAX_INLINE_CHUNKS => (FORM_CHUNKS, chunks),
        _ => (FORM_LISTS, chunks.div_ceil(CHUNKS_PER_LIST)),
    }
}

fn decode_content(
    r: &mut Reader<'_>,
    t: &mut TableReader,
    size: u64,
    limits: &Limits,
) -> Result<Content, NodeError> {
    let form = r.u8("content form")?;
    if form > FORM_LISTS {
        return Err(NodeError::UnknownContentForm(form));
    }
    let (want, count) = expected_form(size, limits.chunk_size);
    if form != want {
        return Err(NodeError::Content(format!(
            "form {form:#04x} does not fit size {size} (a file of that size is stored as form {want:#04x})"
        )));
    }
    match form {
        FORM_EMPTY => Ok(Content::Empty),
        FORM_BLOB => Ok(Content::Blob(decode_loc(r, t, limits)?)),
        FORM_CHUNKS => {
            let n = r.count("nchunks", MAX_INLINE_CHUNKS, MIN_CHUNK_LEN)?;
            if n as u64 != count {
                return Err(NodeError::Content(format!(
                    "{n} chunks for size {size}; it takes {count}"
                )));
            }
            let (chunks, total) = decode_chunks(r, t, n, limits)?;
            if total != size {
                return Err(NodeError::Content(format!(
                    "chunks add up to {total} bytes, size is {size}"
                )));
            }
            Ok(Content::Chunks(chunks))
        }
        _ => {
            let n = r.count("nlists", count, 32)?;
            if n as u64 != count {
                return Err(NodeError::Content(format!(
                    "{n} chunk lists for size {size}; it takes {count}"
                )));
            }
            let mut ids = Vec::with_capacity(n);
            for _ in 0..n {
                ids.push(NodeId(r.id("chunk list node-id")?));
            }
            Ok(Content::Lists(ids))
        }
    }
}

fn decode_branch(r: &mut Reader<'_>, limits: &Limits) -> Result<Branch, NodeError> {
    let level = r.u8("branch level")?;
    if !(1..=MAX_LEVEL).contains(&level) {
        return Err(NodeError::Level(level));
    }
    let n = r.count("nchildren", limits.max_branch_children, MIN_CHILD_LEN)?;
    if n == 0 {
        return Err(NodeError::CountRange {
            field: "nchildren",
            count: 0,
            min: 1,
            max: limits.max_branch_children,
        });
    }
    let mut children: Vec<Child> = Vec::with_capacity(n);
    let mut total: u64 = 0;
    for _ in 0..n {
        let id = NodeId(r.id("child node-id")?);
        let first_name = r.name("child first_name")?;
        if let Some(prev) = children.last()
            && prev.first_name.as_bytes() >= first_name.as_bytes()
        {
            return Err(NodeError::Order {
                field: "child first_name",
                prev: prev.first_name.clone(),
                name: first_name,
            });
        }
        let entries_below = r.uvarint("entries_below")?;
        total = total
            .checked_add(entries_below)
            .filter(|&t| t <= limits.max_dir_entries)
            .unwrap_or(u64::MAX);
        if entries_below == 0 || total > limits.max_dir_entries {
            return Err(NodeError::EntriesBelow {
                name: first_name,
                count: entries_below,
                limit: limits.max_dir_entries,
            });
        }
        children.push(Child {
            id,
            first_name,
            entries_below,
        });
    }
    Ok(Branch { level, children })
}

fn decode_list(r: &mut Reader<'_>, limits: &Limits) -> Result<ChunkList, NodeError> {
    let mut table = TableReader::read(r)?;
    let n = r.count("nchunks", limits.max_list_chunks, MIN_CHUNK_LEN)?;
    if n == 0 {
        return Err(NodeError::CountRange {
            field: "nchunks",
            count: 0,
            min: 1,
            max: limits.max_list_chunks,
        });
    }
    let (chunks, _) = decode_chunks(r, &mut table, n, limits)?;
    table.finish()?;
    Ok(ChunkList { chunks })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pack(b: u8) -> PackId {
        PackId([b; 32])
    }

    fn file(name: &str, size: u64, content: Content) -> Entry {
        Entry {
            name: name.to_owned(),
            kind: EntryKind::File(FileEntry {
                mode: 0o644,
                size,
                mtime_ns: -5,
                hash: [7; 32],
                content,
            }),
        }
    }

    fn blob(p: u8, offset: u64, stored_len: u64) -> Loc {
        Loc {
            pack: pack(p),
            offset,
            stored_len,
        }
    }

    fn chunk(p: u8, plain_len: u64) -> Chunk {
        Chunk {
            loc: blob(p, 0, 100),
            plain_len,
            hash: [9; 32],
        }
    }

    /// A leaf with every kind of entry and every content form.
    fn sample_leaf() -> Leaf {
        let cs = CHUNK_SIZE;
        Leaf {
            entries: vec![
                file("a", 0, Content::Empty),
                file("b.txt", 2048, Content::Blob(blob(2, 10, 2049))),
                file(
                    "c",
                    cs * 2 + 1,
                    Content::Chunks(vec![chunk(1, cs), chunk(2, cs), chunk(3, 1)]),
                ),
                file("d", cs * 1025, Content::Lists(vec![NodeId([4; 32])])),
                Entry {
                    name: "dir".into(),
                    kind: EntryKind::Dir {
                        mode: 0o755,
                        subtree: NodeId([5; 32]),
                    },
                },
                Entry {
                    name: "link".into(),
                    kind: EntryKind::Symlink {
                        target: "../x".into(),
                    },
                },
                Entry {
                    name: "ü".into(),
                    kind: EntryKind::Symlink { target: "y".into() },
                },
            ],
        }
    }

    fn dec(bytes: &[u8]) -> Result<Node, NodeError> {
        decode(bytes, &Limits::default())
    }

    fn leaf_bytes(entries: Vec<Entry>) -> Vec<u8> {
        encode(&Node::Leaf(Leaf { entries }))
    }

    #[test]
    fn round_trips() {
        let nodes = [
            Node::Leaf(sample_leaf()),
            Node::Leaf(Leaf::default()),
            Node::Branch(Branch {
                level: 1,
                children: vec![
                    Child {
                        id: NodeId([1; 32]),
                        first_name: "a".into(),
                        entries_below: 3,
                    },
                    Child {
                        id: NodeId([2; 32]),
                        first_name: "m".into(),
                        entries_below: 40,
                    },
                ],
            }),
            Node::List(ChunkList {
                chunks: vec![chunk(1, CHUNK_SIZE), chunk(1, CHUNK_SIZE), chunk(2, 5)],
            }),
        ];
        for n in nodes {
            let bytes = encode(&n);
            assert_eq!(dec(&bytes).unwrap(), n);
            let id = node_id(&bytes, None);
            assert_eq!(
                decode_verified(&bytes, &id, None, &Limits::default()).unwrap(),
                n
            );
        }
    }

    #[test]
    fn golden_bytes() {
        // An accidental change of the layout fails here.
        assert_eq!(encode(&Node::Leaf(Leaf::default())), b"L\x00\x00");
        let leaf = leaf_bytes(vec![
            file("a", 3, Content::Blob(blob(0xab, 300, 4))),
            Entry {
                name: "l".into(),
                kind: EntryKind::Symlink { target: "t".into() },
            },
        ]);
        let mut want = b"L\x01".to_vec();
        want.extend([0xab; 32]);
        want.extend(b"\x02\x01a\x01\xa4\x03\x03");
        want.extend((-5i64).to_le_bytes());
        want.extend([7; 32]);
        want.extend(b"\x01\x00\xac\x02\x04");
        want.extend(b"\x01l\x03\x01t");
        assert_eq!(leaf, want);
        assert_eq!(
            node_id(b"L\x00\x00", None).to_string(),
            blake3::hash(b"L\x00\x00").to_hex().as_str()
        );
        assert_ne!(
            node_id(b"L\x00\x00", Some(&[1; 32])),
            node_id(b"L\x00\x00", None)
        );
    }

    #[test]
    fn pack_table_is_first_use_order() {
        let bytes = leaf_bytes(vec![
            file("a", 1, Content::Blob(blob(9, 0, 2))),
            file("b", 1, Content::Blob(blob(3, 0, 2))),
            file("c", 1, Content::Blob(blob(9, 2, 2))),
        ]);
        assert_eq!(bytes[1], 2);
        assert_eq!(bytes[2..34], [9; 32]);
        assert_eq!(bytes[34..66], [3; 32]);
    }

    fn err(bytes: &[u8]) -> String {
        match dec(bytes) {
            Ok(n) => panic!("accepted {n:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn refuses_duplicate_and_unsorted_names() {
        let sym = |n: &str| Entry {
            name: n.into(),
            kind: EntryKind::Symlink { target: "t".into() },
        };
        let e = err(&leaf_bytes(vec![sym("a"), sym("a")]));
        assert!(e.contains("\"a\" does not sort after \"a\""), "{e}");
        let e = err(&leaf_bytes(vec![sym("b"), sym("a")]));
        assert!(
            e.contains("entry name \"a\" does not sort after \"b\""),
            "{e}"
        );
        let child = |n: &str| Child {
            id: NodeId([1; 32]),
            first_name: n.into(),
            entries_below: 1,
        };
        let b = encode(&Node::Branch(Branch {
            level: 1,
            children: vec![child("x"), child("x")],
        }));
        assert!(err(&b).contains("child first_name \"x\" does not sort after"));
    }

    #[test]
    fn refuses_bad_names() {
        let sym = |n: &str| Entry {
            name: n.into(),
            kind: EntryKind::Symlink { target: "t".into() },
        };
        for bad in ["", ".", "..", "a/b", "a\\b", "a\0b", &"x".repeat(256)] {
            // A second entry so the count fits the bytes; the bad name is first.
            let pad = Entry {
                name: "~".into(),
                kind: EntryKind::Symlink {
                    target: "padding".into(),
                },
            };
            let e = err(&leaf_bytes(vec![sym(bad), pad]));
            assert!(e.starts_with("entry name"), "{bad:?}: {e}");
        }
        // Invalid UTF-8: 0xff.
        let mut b = leaf_bytes(vec![sym("a")]);
        b[4] = 0xff;
        assert!(err(&b).contains("not valid UTF-8"));
        assert!(dec(&leaf_bytes(vec![sym(&"x".repeat(255))])).is_ok());
    }

    #[test]
    fn refuses_setuid_modes() {
        let mut e = file("a", 0, Content::Empty);
        if let EntryKind::File(f) = &mut e.kind {
            f.mode = 0o4755;
        }
        assert_eq!(
            err(&leaf_bytes(vec![e])),
            "entry \"a\": mode 0o4755 has bits beyond 0o777"
        );
        let d = Entry {
            name: "d".into(),
            kind: EntryKind::Dir {
                mode: 0o1777,
                subtree: NodeId([0; 32]),
            },
        };
        assert!(err(&leaf_bytes(vec![d])).contains("mode 0o1777"));
    }

    #[test]
    fn refuses_non_minimal_varints() {
        // nentries 0 spelled `80 00`.
        assert!(err(b"L\x00\x80\x00").contains("nentries: not minimally encoded"));
        assert!(err(b"L\x80\x00\x00").contains("npacks: not minimally encoded"));
    }

    #[test]
    fn refuses_counts_beyond_limits_without_allocating() {
        // 2^62 entries in 12 bytes: refused on the number, nothing reserved.
        let mut b = b"L\x00".to_vec();
        varint::put(&mut b, 1 << 62);
        assert!(err(&b).contains("nentries 4611686018427387904 exceeds the limit of 4096"));
        // Within the limit, but the bytes cannot hold them.
        let mut b = b"L\x00".to_vec();
        varint::put(&mut b, 4000);
        b.extend([0; 10]);
        assert!(err(&b).contains("nentries 4000 cannot fit in the 10 bytes left"));
        let mut b = b"L".to_vec();
        varint::put(&mut b, u64::MAX);
        assert!(err(&b).contains("npacks"));
        let mut b = b"B\x01".to_vec();
        varint::put(&mut b, 5000);
        assert!(err(&b).contains("nchildren 5000 exceeds the limit of 4096"));
        let mut b = b"C\x00".to_vec();
        varint::put(&mut b, 16_385);
        assert!(err(&b).contains("nchunks 16385 exceeds the limit of 16384"));
        // Limits are the caller's.
        let small = Limits {
            max_leaf_entries: 1,
            ..Limits::default()
        };
        let sym = |n: &str| Entry {
            name: n.into(),
            kind: EntryKind::Symlink { target: "t".into() },
        };
        assert!(decode(&leaf_bytes(vec![sym("a"), sym("b")]), &small).is_err());
        let big = leaf_bytes(vec![sym("a")]);
        let tiny = Limits {
            max_node_bytes: big.len() - 1,
            ..Limits::default()
        };
        assert!(matches!(
            decode(&big, &tiny),
            Err(NodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn refuses_pack_index_out_of_range_and_bad_tables() {
        let good = leaf_bytes(vec![file("a", 1, Content::Blob(blob(1, 0, 2)))]);
        // The loc's pack index is the byte after the content form 0x01.
        let at = good.len() - 3;
        assert_eq!(good[at - 1], FORM_BLOB);
        let mut b = good.clone();
        b[at] = 1;
        assert!(
            err(&b).contains("loc pack index 1 is not below npacks 1"),
            "{}",
            err(&b)
        );
        // A table listing a pack nobody uses.
        let mut b = b"L\x01".to_vec();
        b.extend([1; 32]);
        b.push(0);
        assert!(err(&b).contains("1 listed packs are never used"));
        // The same pack twice.
        let two = leaf_bytes(vec![
            file("a", 1, Content::Blob(blob(1, 0, 2))),
            file("b", 1, Content::Blob(blob(2, 0, 2))),
        ]);
        let mut b = two.clone();
        b.copy_within(2..34, 34);
        assert!(err(&b).contains("listed twice"));
        // Out of first-use order: swap the two indexes.
        let mut b = two;
        // One entry: name 2, kind 1, mode 2, size 1, mtime 8, hash 32, form 1, loc 3.
        let first = b.len() - 3 - 50;
        assert_eq!(b[first], 0);
        b[first] = 1;
        let n = b.len();
        b[n - 3] = 0;
        assert!(err(&b).contains("order of first use"), "{}", err(&b));
    }

    #[test]
    fn refuses_offset_overflow_and_stored_len() {
        let e = err(&leaf_bytes(vec![file(
            "a",
            1,
            Content::Blob(blob(1, u64::MAX, 2)),
        )]));
        assert!(
            e.contains("offset 18446744073709551615 + stored_len 2 overflows"),
            "{e}"
        );
        let e = err(&leaf_bytes(vec![file(
            "a",
            1,
            Content::Blob(blob(1, 0, CHUNK_SIZE + 1025)),
        )]));
        assert!(
            e.contains("stored_len 4195329 is outside 1..=4195328"),
            "{e}"
        );
        assert!(
            err(&leaf_bytes(vec![file(
                "a",
                1,
                Content::Blob(blob(1, 0, 0))
            )]))
            .contains("stored_len 0")
        );
    }

    #[test]
    fn refuses_content_not_fitting_size() {
        let cs = CHUNK_SIZE;
        for (size, content) in [
            (1, Content::Empty),
            (0, Content::Blob(blob(1, 0, 1))),
            (cs + 1, Content::Blob(blob(1, 0, 1))),
            (cs, Content::Chunks(vec![chunk(1, cs - 1), chunk(1, 1)])),
            (cs + 2, Content::Chunks(vec![chunk(1, cs), chunk(1, 1)])),
            (cs + 1, Content::Chunks(vec![chunk(1, cs - 1), chunk(1, 2)])),
            (cs * 1024, Content::Lists(vec![NodeId([1; 32])])),
            (
                cs * 1024 * 16_384 + 1,
                Content::Lists(vec![NodeId([1; 32])]),
            ),
        ] {
            let e = err(&leaf_bytes(vec![file("a", size, content.clone())]));
            assert!(
                e.starts_with("entry \"a\": content:"),
                "{size} {content:?}: {e}"
            );
        }
    }

    #[test]
    fn refuses_symlink_targets() {
        let sym = |t: &str| Entry {
            name: "s".into(),
            kind: EntryKind::Symlink { target: t.into() },
        };
        let other = Entry {
            name: "t".into(),
            kind: EntryKind::Symlink {
                target: "padding".into(),
            },
        };
        assert_eq!(
            err(&leaf_bytes(vec![sym(""), other])),
            "entry \"s\": symlink target: empty"
        );
        assert!(err(&leaf_bytes(vec![sym("a\0b")])).contains("NUL"));
        assert!(
            err(&leaf_bytes(vec![sym(&"t".repeat(4097))]))
                .contains("symlink target: length 4097 is outside 1..=4096")
        );
        assert!(dec(&leaf_bytes(vec![sym(&"t".repeat(4096))])).is_ok());
    }

    #[test]
    fn refuses_trailing_unknown_and_bad_branches() {
        let mut b = encode(&Node::Leaf(sample_leaf()));
        b.push(0);
        assert_eq!(err(&b), "1 trailing bytes after the node");
        assert_eq!(
            err(b"X"),
            "unknown node tag 0x58: written by a newer tether?"
        );
        assert_eq!(err(b""), "empty node (no tag byte)");
        let mut b = leaf_bytes(vec![Entry {
            name: "s".into(),
            kind: EntryKind::Symlink { target: "t".into() },
        }]);
        b[5] = 4;
        assert_eq!(
            err(&b),
            "entry \"s\": unknown entry kind 4: written by a newer tether?"
        );
        let mut b = leaf_bytes(vec![file("a", 0, Content::Empty)]);
        let n = b.len();
        b[n - 1] = 4;
        assert_eq!(
            err(&b),
            "entry \"a\": unknown content form 0x04: written by a newer tether?"
        );
        let child = Child {
            id: NodeId([1; 32]),
            first_name: "x".into(),
            entries_below: 1,
        };
        for level in [0, 9] {
            let b = encode(&Node::Branch(Branch {
                level,
                children: vec![child.clone()],
            }));
            assert!(err(&b).contains("branch level"));
        }
        assert!(err(b"B\x01\x00").contains("nchildren 0 is outside"));
        assert!(err(b"C\x00\x00").contains("nchunks 0 is outside"));
        let zero = Child {
            entries_below: 0,
            ..child.clone()
        };
        assert!(
            err(&encode(&Node::Branch(Branch {
                level: 1,
                children: vec![zero]
            })))
            .contains("entries_below 0")
        );
        let many = Child {
            entries_below: 500_001,
            ..child
        };
        assert!(
            err(&encode(&Node::Branch(Branch {
                level: 1,
                children: vec![many]
            })))
            .contains("entries_below")
        );
        // Truncation anywhere is refused, never a panic.
        let full = encode(&Node::Leaf(sample_leaf()));
        for cut in 0..full.len() {
            assert!(dec(&full[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn refuses_id_mismatch() {
        let bytes = encode(&Node::Leaf(sample_leaf()));
        let id = node_id(&bytes, None);
        let limits = Limits::default();
        let e = decode_verified(&bytes, &id, Some(&[3; 32]), &limits).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("content does not match its id {id}")),
            "{e}"
        );
        let mut tampered = bytes.clone();
        let n = tampered.len();
        tampered[n - 1] ^= 1;
        assert!(matches!(
            decode_verified(&tampered, &id, None, &limits),
            Err(NodeError::IdMismatch { .. })
        ));
        let keyed = node_id(&bytes, Some(&[3; 32]));
        assert!(decode_verified(&bytes, &keyed, Some(&[3; 32]), &limits).is_ok());
    }

    // ------------------------------------------------ property tests

    fn arb_id() -> impl Strategy<Value = [u8; 32]> {
        // Few distinct values, so pack tables get reused and repeated.
        (0u8..4).prop_map(|b| [b; 32])
    }

    fn arb_loc() -> impl Strategy<Value = Loc> {
        (arb_id(), any::<u64>(), 1..=CHUNK_SIZE + STORED_OVERHEAD).prop_map(
            |(p, offset, stored_len)| Loc {
                pack: PackId(p),
                offset: offset.min(u64::MAX - stored_len),
                stored_len,
            },
        )
    }

    fn arb_chunks(n: usize, last: u64) -> impl Strategy<Value = Vec<Chunk>> {
        proptest::collection::vec((arb_loc(), arb_id()), n).prop_map(move |v| {
            let count = v.len();
            v.into_iter()
                .enumerate()
                .map(|(i, (loc, hash))| Chunk {
                    loc,
                    plain_len: if i + 1 == count { last } else { CHUNK_SIZE },
                    hash,
                })
                .collect()
        })
    }

    fn arb_file() -> impl Strategy<Value = EntryKind> {
        let cs = CHUNK_SIZE;
        let content = prop_oneof![
            Just((0u64, Content::Empty)).boxed(),
            (1..=cs, arb_loc())
                .prop_map(|(s, l)| (s, Content::Blob(l)))
                .boxed(),
            (2usize..6, 1..=cs)
                .prop_flat_map(|(n, last)| arb_chunks(n, last).prop_map(move |c| {
                    ((n as u64 - 1) * CHUNK_SIZE + last, Content::Chunks(c))
                }))
                .boxed(),
            (1u64..3, 0..CHUNK_SIZE * CHUNKS_PER_LIST)
                .prop_map(|(n, extra)| {
                    let size = MAX_INLINE_CHUNKS * CHUNK_SIZE
                        + (n - 1) * CHUNK_SIZE * CHUNKS_PER_LIST
                        + extra
                        + 1;
                    let lists = expected_form(size, CHUNK_SIZE).1;
                    (
                        size,
                        Content::Lists((0..lists).map(|i| NodeId([i as u8; 32])).collect()),
                    )
                })
                .boxed(),
        ];
        (0..=MAX_MODE, any::<i64>(), arb_id(), content).prop_map(
            |(mode, mtime_ns, hash, (size, content))| {
                EntryKind::File(FileEntry {
                    mode,
                    size,
                    mtime_ns,
                    hash,
                    content,
                })
            },
        )
    }

    fn arb_kind() -> impl Strategy<Value = EntryKind> {
        prop_oneof![
            arb_file(),
            (0..=MAX_MODE, arb_id()).prop_map(|(mode, s)| EntryKind::Dir {
                mode,
                subtree: NodeId(s)
            }),
            "[^\0]{1,40}".prop_map(|target| EntryKind::Symlink { target }),
        ]
    }

    pub(crate) fn arb_names(max: usize) -> impl Strategy<Value = Vec<String>> {
        proptest::collection::btree_set("[a-zA-Z0-9._ ü-]{1,12}", 0..max)
            .prop_map(|s| s.into_iter().filter(|n| n != "." && n != "..").collect())
    }

    fn arb_node() -> impl Strategy<Value = Node> {
        let leaf = arb_names(12)
            .prop_flat_map(|names| {
                let n = names.len();
                (Just(names), proptest::collection::vec(arb_kind(), n))
            })
            .prop_map(|(names, kinds)| {
                Node::Leaf(Leaf {
                    entries: names
                        .into_iter()
                        .zip(kinds)
                        .map(|(name, kind)| Entry { name, kind })
                        .collect(),
                })
            });
        let branch = (
            1..=MAX_LEVEL,
            arb_names(8).prop_filter("non-empty", |n| !n.is_empty()),
        )
            .prop_flat_map(|(level, names)| {
                let n = names.len();
                (
                    Just(level),
                    Just(names),
                    proptest::collection::vec((arb_id(), 1u64..1000), n),
                )
            })
            .prop_map(|(level, names, rest)| {
                Node::Branch(Branch {
                    level,
                    children: names
                        .into_iter()
                        .zip(rest)
                        .map(|(first_name, (id, entries_below))| Child {
                            id: NodeId(id),
                            first_name,
                            entries_below,
                        })
                        .collect(),
                })
            });
        let list = (1usize..6, 1..=CHUNK_SIZE)
            .prop_flat_map(|(n, last)| arb_chunks(n, last))
            .prop_map(|chunks| Node::List(ChunkList { chunks }));
        prop_oneof![leaf, branch, list]
    }

    proptest! {
        #[test]
        fn encode_decode_is_identity(node in arb_node()) {
            let bytes = encode(&node);
            let back = dec(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&back, &node);
            // And the encoding is canonical: re-encoding gives the same bytes.
            prop_assert_eq!(encode(&back), bytes);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = dec(&bytes);
        }

        #[test]
        fn decode_never_panics_on_mutations(node in arb_node(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
            let mut bytes = encode(&node);
            for (at, v) in flips {
                let n = bytes.len();
                bytes[at % n] = v;
            }
            if let Ok(n) = dec(&bytes) {
                // Whatever is accepted is canonical.
                prop_assert_eq!(encode(&n), bytes);
            }
        }
    }
}
