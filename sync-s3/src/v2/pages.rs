//! One directory's sorted entries → its node tree: leaves cut at
//! content-defined page boundaries, grouped into branch levels (FORMAT.md,
//! "sync-s3 snapshots, format v2" → "Tree nodes (canonical binary)", the
//! "Page boundaries" rule, and "Ids" for the boundary key).
//!
//! A directory of at most [`SMALL_DIR`] (128) entries is one leaf. Above
//! that, walking the entries in name order, an entry closes its leaf iff
//! `u64::from_le_bytes(Hb(0x00 ‖ name)[0..8]) % 32 == 0`, or the leaf holds
//! 256 entries, or its encoding reached 512 KiB. Branch level `k` groups the
//! nodes below it the same way with `Hb(k ‖ first_name)`; level 8 takes
//! whatever is left. Because boundaries depend only on names (and the
//! repository's key), inserting, deleting or editing one entry changes one
//! leaf (two when the entry is, or was, a boundary) and the branch path above
//! it: the rest of the directory keeps its node ids, so a push writes only
//! those.
//!
//! Data flow: the push hands [`build_dir`] a directory's entries (child
//! directories already built, so their `subtree` ids are known) and gets
//! every node's canonical bytes and id, bottom-up (a node comes after every
//! node it names), and the directory's root id for its parent's entry. Each
//! node is checked with the reader's decoder before it is returned, so a
//! writer never stores a node its readers would refuse.

use blake3::Hasher;

use super::node::{
    self, Branch, Child, Entry, LeafWriter, Limits, MAX_LEVEL, Node, NodeError, NodeId,
};
use super::varint;

/// Average page (1 in 32 names is a boundary).
const BOUNDARY_MODULUS: u64 = 32;
/// A directory of at most this many entries is one leaf, whatever its
/// names (unless that leaf would reach [`MAX_PAGE_BYTES`]): paging pays
/// only where an edit would otherwise rewrite many entries, and each page
/// is one more object to read on restore. Measured on 10,000 × 4 KiB
/// files in 100 directories (SeaweedFS loopback): about 5.5 node objects
/// per directory paged at 32, one as a single leaf; the restore's GETs
/// fell from ≈ 660 to ≈ 210. An edit in such a directory rewrites at most
/// ≈ 128 × 48 B ≈ 6 KB of leaf.
pub(crate) const SMALL_DIR: usize = 128;
/// Most entries in a leaf, children in a branch, as the writer cuts them.
const MAX_PAGE_ITEMS: usize = 256;
/// A page is closed once its encoding reaches this many bytes.
const MAX_PAGE_BYTES: usize = 512 * 1024;
/// BLAKE3 `derive_key` context of a plaintext repository's boundary key.
const PLAIN_BOUNDARY_CONTEXT: &str = "tether 2026-11-30 v2 page boundary";

/// The key of `Hb`, the page-boundary hash.
#[derive(Clone)]
pub(crate) struct BoundaryKey([u8; 32]);

impl std::fmt::Debug for BoundaryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A subkey of the master secret in an encrypted repository.
        f.write_str("BoundaryKey(…)")
    }
}

impl Drop for BoundaryKey {
    fn drop(&mut self) {
        // In an encrypted repository a subkey of the master secret.
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl BoundaryKey {
    /// A plaintext repository's: `derive_key("tether 2026-11-30 v2 page boundary", repo_id)`.
    pub(crate) fn plaintext(repo_id: &[u8; 16]) -> Self {
        BoundaryKey(blake3::derive_key(PLAIN_BOUNDARY_CONTEXT, repo_id))
    }

    /// An encrypted repository's `boundary_key` (derived from the master
    /// secret by the crypto module).
    pub(crate) fn from_subkey(key: [u8; 32]) -> Self {
        BoundaryKey(key)
    }

    /// `u64::from_le_bytes(Hb(prefix ‖ name)[0..8]) % 32 == 0`.
    fn is_boundary(&self, prefix: u8, name: &str) -> bool {
        let mut h = Hasher::new_keyed(&self.0);
        h.update(&[prefix]);
        h.update(name.as_bytes());
        let mut first = [0; 8];
        first.copy_from_slice(&h.finalize().as_bytes()[..8]);
        u64::from_le_bytes(first) % BOUNDARY_MODULUS == 0
    }
}

/// One node to store under `trees/`: its id and canonical bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredNode {
    /// `node-id` of `bytes`.
    pub(crate) id: NodeId,
    /// Canonical node bytes (frame, then seal, before upload).
    pub(crate) bytes: Vec<u8>,
}

/// A directory's node tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirTree {
    /// Every node, bottom-up: leaves in name order, then each branch level.
    pub(crate) nodes: Vec<StoredNode>,
    /// The directory's root: its only leaf, or its top branch.
    pub(crate) root: NodeId,
}

/// Why a directory could not be paged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PageError {
    /// Entries not in strictly increasing name order.
    #[error(
        "directory entries out of order: {name:?} after {prev:?} (names must strictly increase)"
    )]
    Order {
        /// The previous name.
        prev: String,
        /// The offending name.
        name: String,
    },
    /// More entries than readers accept in one directory.
    #[error("directory of {count} entries exceeds the limit of {limit} (max_entries)")]
    TooManyEntries {
        /// Entries given.
        count: usize,
        /// `max_dir_entries`.
        limit: u64,
    },
    /// After 8 branch levels, still more children than a branch may hold.
    #[error("directory needs a top branch of {children} children, more than {limit}")]
    TooWide {
        /// Children left at level 8.
        children: usize,
        /// `max_branch_children`.
        limit: u64,
    },
    /// A node the writer built is one its readers would refuse.
    #[error("refusing to write a tree node readers would refuse: {0}")]
    Invalid(#[source] NodeError),
}

/// Pages one directory. `entries` must be sorted by name bytes, without
/// duplicates; an empty slice gives the shared empty leaf `'L' 0 0`.
pub(crate) fn build_dir(
    entries: &[Entry],
    key: &BoundaryKey,
    id_key: Option<&[u8; 32]>,
    limits: &Limits,
) -> Result<DirTree, PageError> {
    if entries.len() as u64 > limits.max_dir_entries {
        return Err(PageError::TooManyEntries {
            count: entries.len(),
            limit: limits.max_dir_entries,
        });
    }
    for pair in entries.windows(2) {
        if pair[0].name.as_bytes() >= pair[1].name.as_bytes() {
            return Err(PageError::Order {
                prev: pair[0].name.clone(),
                name: pair[1].name.clone(),
            });
        }
    }
    let mut nodes = Vec::new();
    let mut store = |bytes: Vec<u8>| -> Result<NodeId, PageError> {
        node::decode(&bytes, limits).map_err(PageError::Invalid)?;
        let id = node::node_id(&bytes, id_key);
        nodes.push(StoredNode { id, bytes });
        Ok(id)
    };

    // A small directory: one leaf.
    if !entries.is_empty() && entries.len() <= SMALL_DIR {
        let mut leaf = LeafWriter::default();
        for e in entries {
            leaf.push(e);
        }
        if leaf.encoded_len() < MAX_PAGE_BYTES {
            let root = store(leaf.finish())?;
            return Ok(DirTree { nodes, root });
        }
    }

    // Leaves.
    let mut level: Vec<Child> = Vec::new();
    let mut leaf = LeafWriter::default();
    let mut first: Option<&str> = None;
    for (i, e) in entries.iter().enumerate() {
        leaf.push(e);
        let first_name = *first.get_or_insert(e.name.as_str());
        let close = i + 1 == entries.len()
            || key.is_boundary(0, &e.name)
            || leaf.len() as usize >= MAX_PAGE_ITEMS
            || leaf.encoded_len() >= MAX_PAGE_BYTES;
        if close {
            let done = std::mem::take(&mut leaf);
            let entries_below = done.len();
            let id = store(done.finish())?;
            level.push(Child {
                id,
                first_name: first_name.to_owned(),
                entries_below,
            });
            first = None;
        }
    }
    if level.is_empty() {
        let root = store(node::encode(&Node::Leaf(node::Leaf::default())))?;
        return Ok(DirTree { nodes, root });
    }

    // Branch levels until one node is left.
    let mut k: u8 = 1;
    while level.len() > 1 {
        if k == MAX_LEVEL && level.len() as u64 > limits.max_branch_children {
            return Err(PageError::TooWide {
                children: level.len(),
                limit: limits.max_branch_children,
            });
        }
        let mut above = Vec::new();
        let mut group: Vec<Child> = Vec::new();
        let mut group_bytes = 0usize;
        let count = level.len();
        for (i, c) in level.into_iter().enumerate() {
            let mut enc = Vec::new();
            node::put_child(&mut enc, &c);
            group_bytes += enc.len();
            // 'B' level nchildren, then the children.
            let encoded = 2 + varint::len(group.len() as u64 + 1) + group_bytes;
            let boundary = k < MAX_LEVEL
                && (key.is_boundary(k, &c.first_name)
                    || group.len() + 1 >= MAX_PAGE_ITEMS
                    || encoded >= MAX_PAGE_BYTES);
            group.push(c);
            if boundary || i + 1 == count {
                let children = std::mem::take(&mut group);
                group_bytes = 0;
                let first_name = children[0].first_name.clone();
                let entries_below = children.iter().map(|c| c.entries_below).sum();
                let id = store(node::encode(&Node::Branch(Branch { level: k, children })))?;
                above.push(Child {
                    id,
                    first_name,
                    entries_below,
                });
            }
        }
        level = above;
        k += 1;
    }
    let root = level[0].id;
    Ok(DirTree { nodes, root })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::v2::frame;
    use crate::v2::node::{Content, EntryKind, FileEntry, Loc, PackId};

    fn key() -> BoundaryKey {
        BoundaryKey::plaintext(&[0x42; 16])
    }

    fn file_entry(name: String, n: u64) -> Entry {
        Entry {
            name,
            kind: EntryKind::File(FileEntry {
                mode: 0o644,
                size: 2048,
                mtime_ns: 1_764_500_000_000_000_000 + n as i64 * 1_000_003,
                hash: *blake3::hash(&n.to_le_bytes()).as_bytes(),
                content: Content::Blob(Loc {
                    pack: PackId(*blake3::hash(&(n * 2049 / (8 << 20)).to_be_bytes()).as_bytes()),
                    offset: n * 2049 % (8 << 20),
                    stored_len: 2049,
                }),
            }),
        }
    }

    fn files(n: u64) -> Vec<Entry> {
        (0..n)
            .map(|i| file_entry(format!("file-{i:05}.txt"), i))
            .collect()
    }

    fn build(entries: &[Entry]) -> DirTree {
        build_dir(entries, &key(), None, &Limits::default()).unwrap()
    }

    /// Walks the tree from its root the way a reader would, checking every
    /// cross-node rule, and returns the entries and the leaves' sizes.
    fn walk(t: &DirTree) -> (Vec<Entry>, Vec<usize>) {
        let by_id: std::collections::HashMap<_, _> =
            t.nodes.iter().map(|n| (n.id, &n.bytes)).collect();
        let limits = Limits::default();
        let get = |id: &NodeId| node::decode_verified(by_id[id], id, None, &limits).unwrap();
        let mut entries = Vec::new();
        let mut leaves = Vec::new();
        fn go(
            n: Node,
            want_level: Option<u8>,
            get: &dyn Fn(&NodeId) -> Node,
            entries: &mut Vec<Entry>,
            leaves: &mut Vec<usize>,
        ) -> u64 {
            match n {
                Node::Leaf(l) => {
                    assert!(
                        want_level.is_none_or(|k| k == 0),
                        "a leaf under a branch of level > 1"
                    );
                    leaves.push(l.entries.len());
                    let n = l.entries.len() as u64;
                    entries.extend(l.entries);
                    n
                }
                Node::Branch(b) => {
                    assert!(want_level.is_none_or(|k| k == b.level));
                    let mut total = 0;
                    for c in b.children {
                        let before = entries.len();
                        let below = go(get(&c.id), Some(b.level - 1), get, entries, leaves);
                        assert_eq!(below, c.entries_below);
                        assert_eq!(entries[before].name, c.first_name);
                        total += below;
                    }
                    total
                }
                Node::List(_) => panic!("a chunk list in a directory tree"),
            }
        }
        go(get(&t.root), None, &get, &mut entries, &mut leaves);
        // Bottom-up: every node comes after the nodes it names.
        let mut seen = HashSet::new();
        for n in &t.nodes {
            if let Node::Branch(b) = node::decode(&n.bytes, &limits).unwrap() {
                assert!(b.children.iter().all(|c| seen.contains(&c.id)));
            }
            seen.insert(n.id);
        }
        (entries, leaves)
    }

    #[test]
    fn empty_and_small_directories() {
        let t = build(&[]);
        assert_eq!(t.nodes.len(), 1);
        assert_eq!(t.nodes[0].bytes, b"L\x00\x00");
        assert_eq!(t.root, node::node_id(b"L\x00\x00", None));
        // One leaf: the leaf is the directory.
        let few: Vec<Entry> = files(200)
            .into_iter()
            .filter(|e| !key().is_boundary(0, &e.name))
            .take(5)
            .collect();
        let t = build(&few);
        assert_eq!(t.nodes.len(), 1);
        assert_eq!(t.root, t.nodes[0].id);
        assert_eq!(walk(&t).0, few);
        // Keyed ids in an encrypted repository.
        let k = build_dir(&few, &key(), Some(&[9; 32]), &Limits::default()).unwrap();
        assert_eq!(k.nodes[0].bytes, t.nodes[0].bytes);
        assert_ne!(k.root, t.root);
    }

    #[test]
    fn a_directory_of_up_to_128_entries_is_one_leaf() {
        let entries = files(SMALL_DIR as u64 + 1);
        // Boundaries fall among the first 128 names (about 4 of them).
        let cuts = entries[..SMALL_DIR]
            .iter()
            .filter(|e| key().is_boundary(0, &e.name))
            .count();
        assert!(cuts >= 2, "{cuts}");
        let t = build(&entries[..SMALL_DIR]);
        assert_eq!(t.nodes.len(), 1);
        assert_eq!(t.root, t.nodes[0].id);
        assert_eq!(walk(&t).0, &entries[..SMALL_DIR]);
        // One more entry: paged at the boundaries again.
        let t = build(&entries);
        let (back, leaves) = walk(&t);
        assert_eq!(back, entries);
        assert!(leaves.len() > 2, "{leaves:?}");
    }

    #[test]
    fn refuses_unsorted_duplicate_and_invalid_entries() {
        let mut e = files(3);
        e.swap(0, 1);
        assert!(matches!(
            build_dir(&e, &key(), None, &Limits::default()),
            Err(PageError::Order { .. })
        ));
        let mut e = files(3);
        e[1].name = e[0].name.clone();
        assert!(matches!(
            build_dir(&e, &key(), None, &Limits::default()),
            Err(PageError::Order { .. })
        ));
        let mut e = files(3);
        if let EntryKind::File(f) = &mut e[2].kind {
            f.mode = 0o4755;
        }
        let err = build_dir(&e, &key(), None, &Limits::default()).unwrap_err();
        assert!(err.to_string().contains("mode 0o4755"), "{err}");
        let small = Limits {
            max_dir_entries: 2,
            ..Limits::default()
        };
        assert!(matches!(
            build_dir(&files(3), &key(), None, &small),
            Err(PageError::TooManyEntries { .. })
        ));
    }

    #[test]
    fn ten_thousand_entries_page_near_32() {
        let entries = files(10_000);
        let t = build(&entries);
        let (back, leaves) = walk(&t);
        assert_eq!(back, entries);
        let mean = 10_000.0 / leaves.len() as f64;
        assert!(
            (24.0..=40.0).contains(&mean),
            "mean leaf {mean:.1} entries, {} leaves",
            leaves.len()
        );
        assert!(leaves.iter().all(|&n| (1..=256).contains(&n)), "{leaves:?}");
        assert!(matches!(
            node::decode(&t.nodes.last().unwrap().bytes, &Limits::default()).unwrap(),
            Node::Branch(_)
        ));
    }

    #[test]
    fn pages_cap_at_256_entries_and_512_kib() {
        // Only non-boundary names: every leaf is closed by the 256 cap.
        let names: Vec<Entry> = files(2000)
            .into_iter()
            .filter(|e| !key().is_boundary(0, &e.name))
            .take(700)
            .collect();
        let t = build(&names);
        let (back, leaves) = walk(&t);
        assert_eq!(back, names);
        assert_eq!(leaves, [256, 256, 188]);
        // Entries of ~44 KB (1,024 inline chunks): the 512 KiB rule closes.
        let cs = node::CHUNK_SIZE;
        let big: Vec<Entry> = names
            .iter()
            .take(40)
            .enumerate()
            .map(|(i, e)| {
                let chunk = |j: u64| node::Chunk {
                    loc: Loc {
                        pack: PackId([i as u8; 32]),
                        offset: j * cs,
                        stored_len: cs,
                    },
                    plain_len: cs,
                    hash: [j as u8; 32],
                };
                Entry {
                    name: e.name.clone(),
                    kind: EntryKind::File(FileEntry {
                        mode: 0o600,
                        size: 1024 * cs,
                        mtime_ns: 0,
                        hash: [1; 32],
                        content: Content::Chunks((0..1024).map(chunk).collect()),
                    }),
                }
            })
            .collect();
        let t = build(&big);
        let (back, leaves) = walk(&t);
        assert_eq!(back, big);
        assert!(leaves.len() >= 3, "{leaves:?}");
        let leaf_sizes: Vec<usize> = t
            .nodes
            .iter()
            .filter(|n| n.bytes[0] == node::TAG_LEAF)
            .map(|n| n.bytes.len())
            .collect();
        for (i, len) in leaf_sizes.iter().enumerate() {
            assert!(*len < 512 * 1024 + 50_000, "leaf {i}: {len} bytes");
            if i + 1 < leaf_sizes.len() {
                assert!(*len >= 512 * 1024, "leaf {i} closed early: {len} bytes");
            }
        }
    }

    fn ids(t: &DirTree) -> HashSet<NodeId> {
        t.nodes.iter().map(|n| n.id).collect()
    }

    /// (leaves, branches) among `t`'s nodes whose ids are not in `other`.
    fn new_nodes(t: &DirTree, other: &HashSet<NodeId>) -> (usize, usize) {
        let fresh: Vec<_> = t.nodes.iter().filter(|n| !other.contains(&n.id)).collect();
        let leaves = fresh
            .iter()
            .filter(|n| n.bytes[0] == node::TAG_LEAF)
            .count();
        (leaves, fresh.len() - leaves)
    }

    #[test]
    fn one_insert_or_delete_touches_two_leaves_and_the_branch_path() {
        let all = files(10_050);
        // Every 201st entry held back, to be inserted.
        let extra: Vec<Entry> = all.iter().skip(7).step_by(201).cloned().collect();
        let base: Vec<Entry> = all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % 201 != 7)
            .map(|(_, e)| e)
            .collect();
        assert_eq!(base.len(), 10_000);
        let t0 = build(&base);
        let ids0 = ids(&t0);
        let levels = t0
            .nodes
            .iter()
            .filter(|n| n.bytes[0] == node::TAG_BRANCH)
            .map(|n| n.bytes[1])
            .max()
            .unwrap();
        let mut single_leaf = 0;
        let mut trials = 0;
        for x in extra.iter() {
            // Insert x.
            let mut with = base.clone();
            let at = with.partition_point(|e| e.name < x.name);
            with.insert(at, x.clone());
            let t1 = build(&with);
            let (leaves, branches) = new_nodes(&t1, &ids0);
            let (gone_leaves, gone_branches) = new_nodes(&t0, &ids(&t1));
            assert!(
                leaves <= 2 && gone_leaves <= 2,
                "insert {}: {leaves} new, {gone_leaves} gone leaves",
                x.name
            );
            assert!(
                branches <= 2 * levels as usize && gone_branches <= 2 * levels as usize,
                "insert {}",
                x.name
            );
            single_leaf += usize::from(leaves == 1 && branches == levels as usize);
            trials += 1;
        }
        for i in (0..base.len()).step_by(199) {
            // Delete entry i.
            let mut without = base.clone();
            let gone = without.remove(i);
            let t1 = build(&without);
            let (leaves, branches) = new_nodes(&t1, &ids0);
            assert!(
                leaves <= 2 && branches <= 2 * levels as usize,
                "delete {}",
                gone.name
            );
            // Edit entry i (new content, same name): exactly one leaf and the path.
            let mut edited = base.clone();
            edited[i] = file_entry(gone.name.clone(), 99_999_999);
            let t2 = build(&edited);
            assert_eq!(
                new_nodes(&t2, &ids0),
                (1, levels as usize),
                "edit {}",
                gone.name
            );
        }
        // Most inserts are not boundaries: one leaf and one branch per level.
        assert!(single_leaf * 10 >= trials * 8, "{single_leaf} of {trials}");
    }

    /// The stored bytes (zstd frames, plaintext repository) of the
    /// directory nodes a one-file edit writes: file `file` of directory
    /// `dir` in a tree of `ndirs` directories × `nfiles` files of 2 KiB,
    /// paged with `key`. Returns (tag, canonical bytes, stored bytes) per
    /// node.
    fn p8_edit(
        key: &BoundaryKey,
        (ndirs, nfiles): (u64, u64),
        dir: usize,
        file: usize,
    ) -> Vec<(char, usize, usize)> {
        let limits = Limits::default();
        // Zero-padded to the widest index, so names sort like their numbers.
        let (fw, dw) = (
            (nfiles - 1).to_string().len(),
            (ndirs - 1).to_string().len(),
        );
        let dir_files = |d: u64| -> Vec<Entry> {
            (0..nfiles)
                .map(|i| file_entry(format!("notebook-{i:0fw$}.ipynb"), d * nfiles + i))
                .collect()
        };
        let tree = |dirs: &[Vec<Entry>]| -> (Vec<DirTree>, DirTree) {
            let subs: Vec<DirTree> = dirs
                .iter()
                .map(|d| build_dir(d, key, None, &limits).unwrap())
                .collect();
            let root_entries: Vec<Entry> = subs
                .iter()
                .enumerate()
                .map(|(i, s)| Entry {
                    name: format!("project-{i:0dw$}"),
                    kind: EntryKind::Dir {
                        mode: 0o755,
                        subtree: s.root,
                    },
                })
                .collect();
            let root = build_dir(&root_entries, key, None, &limits).unwrap();
            (subs, root)
        };
        let mut dirs: Vec<Vec<Entry>> = (0..ndirs).map(dir_files).collect();
        let (subs0, root0) = tree(&dirs);
        let before: HashSet<NodeId> = subs0.iter().chain([&root0]).flat_map(ids).collect();
        // Edit one file: new content (+1 line), in a new pack, new mtime.
        if let EntryKind::File(f) = &mut dirs[dir][file].kind {
            f.size += 40;
            f.hash = [0xee; 32];
            f.mtime_ns += 60_000_000_000;
            f.content = Content::Blob(Loc {
                pack: PackId([0xfe; 32]),
                offset: 0,
                stored_len: 2089,
            });
        }
        let (subs1, root1) = tree(&dirs);
        let mut written = Vec::new();
        for t in subs1.iter().chain([&root1]) {
            for n in &t.nodes {
                if !before.contains(&n.id) {
                    written.push((
                        n.bytes[0] as char,
                        n.bytes.len(),
                        frame::encode_record(&n.bytes).len(),
                    ));
                }
            }
        }
        written
    }

    /// P8 (FORMAT.md "Estimate"): node bytes of a one-file edit in a
    /// 10,000-file tree of 50 directories (2 KiB files), over 16 repository
    /// ids (each pages differently) and edited files. Run with
    /// `--nocapture` to see the figures.
    #[test]
    fn p8_one_file_edit_node_bytes() {
        let mut totals = Vec::new();
        for r in 0u8..16 {
            let key = BoundaryKey::plaintext(&[r; 16]);
            let (dir, file) = (usize::from(r) * 3 % 50, usize::from(r) * 37 % 200);
            let written = p8_edit(&key, (50, 200), dir, file);
            let total: usize = written.iter().map(|w| w.2).sum();
            let shape: Vec<String> = written
                .iter()
                .map(|(t, p, s)| format!("{t} {p}→{s}"))
                .collect();
            println!(
                "P8 repo {r:2} edit {dir:2}/{file:3}: {} nodes, {total:5} bytes stored [{}]",
                written.len(),
                shape.join(", ")
            );
            // A directory leaf and its branch path (≤ 2 levels at 200
            // entries), the root leaf and its branch path.
            assert!(written.len() <= 6, "{written:?}");
            totals.push(total);
        }
        totals.sort_unstable();
        let mean = totals.iter().sum::<usize>() / totals.len();
        println!(
            "P8 node bytes per one-file edit: min {} mean {mean} max {}",
            totals[0],
            totals[totals.len() - 1]
        );
        // FORMAT.md estimates ≈ 5,000 bytes of nodes (leaf 3,000 + branch
        // 300 + root 1,700); restic's whole edit is 16.5 KB.
        assert!(totals[totals.len() - 1] <= 8_000, "{totals:?}");
    }

    /// P8 at 100,000 files, both shapes FORMAT.md estimates: 50 directories
    /// of 2,000 and 500 of 200 (4 repository ids each; `--nocapture`).
    #[test]
    fn p8_at_100k_files() {
        for shape in [(50u64, 2000u64), (500, 200)] {
            let mut totals = Vec::new();
            for r in 0u8..4 {
                let key = BoundaryKey::plaintext(&[r; 16]);
                let dir = (usize::from(r) * 13 + 5) % shape.0 as usize;
                let file = (usize::from(r) * 377 + 11) % shape.1 as usize;
                let written = p8_edit(&key, shape, dir, file);
                totals.push(written.iter().map(|w| w.2).sum::<usize>());
                assert!(written.len() <= 8, "{written:?}");
            }
            let mean = totals.iter().sum::<usize>() / totals.len();
            println!(
                "P8 node bytes, {} directories × {} files: {totals:?}, mean {mean}",
                shape.0, shape.1
            );
            assert!(totals.iter().all(|&t| t <= 12_000), "{totals:?}");
        }
    }
}
