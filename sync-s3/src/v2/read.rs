//! Reading trees (FORMAT.md "Tree nodes", "Reader checks and limits"):
//! one directory's entries from its node tree, a path's entry, and a
//! depth-first walk of a whole snapshot.
//!
//! A directory is read whole ([`read_dir`]): its top node, then its
//! branch levels (children fetched concurrently, in order), checking what
//! spans nodes — a child's level, its `first_name`, its `entries_below`,
//! names increasing across leaves — and refusing a directory above
//! `max_entries` from the branch's hint before any leaf is read. Memory is
//! therefore per directory, never per repository. [`Walk`] visits a
//! snapshot depth-first holding only the directories still to visit (their
//! names and subtree ids), charged against `max_tree_memory`; restore,
//! `list` and (later) `check` and prune's mark are built on it.
//!
//! Node ids are hashes of the bytes they name, verified on every read, so
//! a node can never name itself or an ancestor; depth and total entries
//! are bounded anyway.

use std::collections::HashMap;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt, stream};
use parking_lot::Mutex;
use sync_core::{BackendError, RelPath};

use super::node::{Entry, EntryKind, Node, NodeId};
use super::repo::Repo;

/// Deepest directory nesting a reader follows.
pub(crate) const MAX_DEPTH: usize = 512;
/// Nodes fetched at once within one directory.
const NODE_READS: usize = 8;

/// Decoded nodes by id, kept between pushes (ids are immutable, so a hit
/// is never stale). Bounded by plain bytes; cleared when full.
#[derive(Debug, Default)]
pub(crate) struct NodeCache {
    /// Nodes with when each was last read from or written to the store
    /// (ms), and their summed weight.
    inner: Mutex<(HashMap<NodeId, Cached>, usize)>,
}

/// A cached node and when it was last seen in the store (ms).
type Cached = (Arc<Node>, u64);

/// Bytes of decoded nodes the cache keeps (FORMAT.md: 32 MiB).
const CACHE_BYTES: usize = 32 << 20;

fn node_weight(n: &Node) -> usize {
    match n {
        Node::Leaf(l) => 64 + l.entries.iter().map(|e| 96 + e.name.len()).sum::<usize>(),
        Node::Branch(b) => {
            64 + b
                .children
                .iter()
                .map(|c| 64 + c.first_name.len())
                .sum::<usize>()
        }
        Node::List(c) => 64 + c.chunks.len() * 96,
    }
}

impl NodeCache {
    fn get(&self, id: &NodeId) -> Option<Arc<Node>> {
        self.inner.lock().0.get(id).map(|(n, _)| Arc::clone(n))
    }

    fn put(&self, id: NodeId, node: Arc<Node>, seen_ms: u64) {
        let w = node_weight(&node);
        if w > CACHE_BYTES / 8 {
            return;
        }
        let mut g = self.inner.lock();
        if g.1 + w > CACHE_BYTES {
            g.0.clear();
            g.1 = 0;
        }
        if g.0.insert(id, (node, seen_ms)).is_none() {
            g.1 += w;
        }
    }

    /// Remembers a node this writer stored at `seen_ms` (so the next push
    /// reads it free, and does not store it again within the window).
    pub(crate) fn remember(&self, id: NodeId, node: Node, seen_ms: u64) {
        self.put(id, Arc::new(node), seen_ms);
    }

    /// Whether node `id` was read from or written to the store at or after
    /// `since_ms` (FORMAT.md rule W1: only then is it not stored again).
    pub(crate) fn seen_since(&self, id: &NodeId, since_ms: u64) -> bool {
        self.inner
            .lock()
            .0
            .get(id)
            .is_some_and(|(_, seen)| *seen >= since_ms)
    }
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn invalid(object: impl ToString, reason: impl Into<String>) -> BackendError {
    BackendError::InvalidRemote {
        object: object.to_string(),
        reason: reason.into(),
    }
}

/// A directory's name for messages (`/` for the root).
pub(crate) fn shown(dir: Option<&RelPath>) -> String {
    dir.map_or_else(|| "/".to_owned(), |d| d.as_str().to_owned())
}

/// Node `id`, from the cache or the store.
pub(crate) async fn node(
    repo: &Repo,
    cache: &NodeCache,
    id: &NodeId,
) -> Result<Arc<Node>, BackendError> {
    if let Some(n) = cache.get(id) {
        return Ok(n);
    }
    let n = Arc::new(repo.get_node(id).await?);
    cache.put(*id, Arc::clone(&n), now_ms());
    Ok(n)
}

/// Every entry of the directory whose node tree starts at `root`, in name
/// order, checked across nodes. `dir` names it in errors.
pub(crate) async fn read_dir(
    repo: &Repo,
    cache: &NodeCache,
    root: &NodeId,
    dir: Option<&RelPath>,
) -> Result<Vec<Entry>, BackendError> {
    let max = repo.limits.max_dir_entries;
    let top = node(repo, cache, root).await?;
    let object = || format!("tree of {} (node {root})", shown(dir));
    match &*top {
        Node::Leaf(l) => {
            if l.entries.len() as u64 > max {
                return Err(too_many(dir, l.entries.len() as u64, max));
            }
            Ok(l.entries.clone())
        }
        Node::List(_) => Err(invalid(object(), "a directory names a chunk list")),
        Node::Branch(b) => {
            if b.children.len() < 2 {
                return Err(invalid(
                    object(),
                    "a directory's top branch has one child (it should be that child)",
                ));
            }
            let hinted = b
                .children
                .iter()
                .try_fold(0u64, |sum, c| sum.checked_add(c.entries_below))
                .unwrap_or(u64::MAX);
            if hinted > max {
                return Err(too_many(dir, hinted, max));
            }
            let mut out: Vec<Entry> = Vec::new();
            read_branch(repo, cache, b.level, &b.children, &mut out, dir).await?;
            if out.len() as u64 != hinted {
                return Err(invalid(
                    object(),
                    format!(
                        "its branches promise {hinted} entries, its leaves hold {}",
                        out.len()
                    ),
                ));
            }
            Ok(out)
        }
    }
}

fn too_many(dir: Option<&RelPath>, count: u64, max: u64) -> BackendError {
    BackendError::InvalidRemote {
        object: format!("tree of {}", shown(dir)),
        reason: format!(
            "a directory of {count} entries, more than max_entries ({max}): refused before reading it (raise ?max_entries= if it is real)"
        ),
    }
}

/// Appends the entries under `children` (of a branch at `level`) to `out`.
fn read_branch<'a>(
    repo: &'a Repo,
    cache: &'a NodeCache,
    level: u8,
    children: &'a [super::node::Child],
    out: &'a mut Vec<Entry>,
    dir: Option<&'a RelPath>,
) -> futures::future::BoxFuture<'a, Result<(), BackendError>> {
    Box::pin(async move {
        let ids: Vec<NodeId> = children.iter().map(|c| c.id).collect();
        let nodes: Vec<Arc<Node>> = stream::iter(ids)
            .map(|id| async move { node(repo, cache, &id).await })
            .buffered(NODE_READS)
            .try_collect()
            .await?;
        for (c, n) in children.iter().zip(nodes) {
            let object = || format!("tree of {} (node {})", shown(dir), c.id);
            let before = out.len();
            match (&*n, level) {
                (Node::Leaf(l), 1) => {
                    let first = l.entries.first().map(|e| e.name.as_str());
                    if first != Some(c.first_name.as_str()) {
                        return Err(invalid(
                            object(),
                            "a leaf's first name is not the one its branch records",
                        ));
                    }
                    if let (Some(prev), Some(f)) = (out.last(), first)
                        && prev.name.as_bytes() >= f.as_bytes()
                    {
                        return Err(invalid(
                            object(),
                            format!(
                                "names out of order across leaves ({:?} then {f:?}): duplicate or unsorted entries",
                                prev.name
                            ),
                        ));
                    }
                    out.extend(l.entries.iter().cloned());
                }
                (Node::Branch(b), l) if l > 1 && b.level + 1 == l => {
                    if b.children.first().map(|x| x.first_name.as_str())
                        != Some(c.first_name.as_str())
                    {
                        return Err(invalid(
                            object(),
                            "a branch's first name is not the one its parent records",
                        ));
                    }
                    read_branch(repo, cache, b.level, &b.children, out, dir).await?;
                }
                _ => {
                    return Err(invalid(
                        object(),
                        format!(
                            "a child of a level-{level} branch is not a node of level {}",
                            level - 1
                        ),
                    ));
                }
            }
            if (out.len() - before) as u64 != c.entries_below {
                return Err(invalid(
                    object(),
                    format!(
                        "its branch promises {} entries, it holds {}",
                        c.entries_below,
                        out.len() - before
                    ),
                ));
            }
        }
        Ok(())
    })
}

/// The entry at `path` in the tree rooted at `root` (`None`: not there, or
/// a parent is not a directory). Reads one directory per component.
pub(crate) async fn lookup(
    repo: &Repo,
    cache: &NodeCache,
    root: &NodeId,
    path: &RelPath,
) -> Result<Option<Entry>, BackendError> {
    let mut dir_id = *root;
    let mut dir: Option<RelPath> = None;
    let parts: Vec<&str> = path.as_str().split('/').collect();
    for (i, name) in parts.iter().enumerate() {
        let entries = read_dir(repo, cache, &dir_id, dir.as_ref()).await?;
        let Ok(at) = entries.binary_search_by(|e| e.name.as_bytes().cmp(name.as_bytes())) else {
            return Ok(None);
        };
        let e = entries[at].clone();
        if i + 1 == parts.len() {
            return Ok(Some(e));
        }
        match e.kind {
            EntryKind::Dir { subtree, .. } => dir_id = subtree,
            _ => return Ok(None),
        }
        let next = match &dir {
            None => RelPath::new(*name),
            Some(d) => d.join(name),
        };
        dir = Some(
            next.map_err(|e| invalid(format!("tree of {}", shown(dir.as_ref())), e.to_string()))?,
        );
    }
    Ok(None)
}

/// A depth-first walk of one snapshot: yields each directory's entries
/// with their paths, holding only directories still to visit.
pub(crate) struct Walk<'a> {
    repo: &'a Repo,
    cache: &'a NodeCache,
    /// Directories still to visit: (path, depth, subtree).
    stack: Vec<(Option<RelPath>, usize, NodeId)>,
    /// Bytes charged for `stack`.
    held: u64,
    /// Entries yielded so far.
    total: u64,
    /// Only directories on the way to or below these are read (empty: all).
    only: Vec<RelPath>,
}

/// Directories whose top nodes one prefetch reads.
const PREFETCH: usize = 32;
/// Pages below those top nodes one prefetch reads at most.
const PREFETCH_PAGES: usize = 128;
/// Nodes a prefetch reads at once (each at most 4 MiB: the in-flight
/// bound).
const PREFETCH_READS: usize = 16;

/// Bytes charged per pending directory beyond its path.
const PENDING_COST: u64 = 96;

impl<'a> Walk<'a> {
    /// A walk from `root`, reading only what `only` needs (empty: all).
    pub(crate) fn new(
        repo: &'a Repo,
        cache: &'a NodeCache,
        root: NodeId,
        only: Vec<RelPath>,
    ) -> Self {
        Walk {
            repo,
            cache,
            stack: vec![(None, 0, root)],
            held: 0,
            total: 0,
            only,
        }
    }

    fn wanted(&self, path: &RelPath) -> bool {
        self.only.is_empty()
            || self
                .only
                .iter()
                .any(|p| path.starts_with(p) || p.starts_with(path))
    }

    /// Reads the next few directories' top nodes at once, into the cache,
    /// when the next one is not there yet, then the pages of those that
    /// are one branch level deep: two round trips for many small
    /// directories instead of two each. Bounded in count (and each node by
    /// its size limit), so memory stays a few nodes whatever the
    /// directories hold. Errors are left for `next_dir`.
    async fn prefetch(&self) {
        let next: Vec<NodeId> = self
            .stack
            .iter()
            .rev()
            .take(PREFETCH)
            .map(|(_, _, id)| *id)
            .collect();
        if next.first().is_none_or(|id| self.cache.get(id).is_some()) {
            return;
        }
        let (repo, cache) = (self.repo, self.cache);
        // Directories of a few pages: their pages too, at most
        // PREFETCH_PAGES in all. Only ids are kept, not the top nodes.
        let pages: Vec<NodeId> = stream::iter(next)
            .map(|id| async move {
                match node(repo, cache, &id).await.as_deref() {
                    Ok(Node::Branch(b)) if b.level == 1 => {
                        b.children.iter().map(|c| c.id).collect::<Vec<_>>()
                    }
                    _ => Vec::new(),
                }
            })
            .buffered(PREFETCH_READS)
            .flat_map(stream::iter)
            .take(PREFETCH_PAGES)
            .collect()
            .await;
        stream::iter(pages)
            .for_each_concurrent(PREFETCH_READS, |id| async move {
                let _ = node(repo, cache, &id).await;
            })
            .await;
    }

    /// The next directory: its path (`None` = the root) and its entries
    /// with their full paths, in name order. `None` when done.
    pub(crate) async fn next_dir(
        &mut self,
    ) -> Result<Option<(Option<RelPath>, Vec<(RelPath, Entry)>)>, BackendError> {
        self.prefetch().await;
        let Some((dir, depth, id)) = self.stack.pop() else {
            return Ok(None);
        };
        self.held = self
            .held
            .saturating_sub(PENDING_COST + dir.as_ref().map_or(0, |d| d.as_str().len() as u64));
        let entries = read_dir(self.repo, self.cache, &id, dir.as_ref()).await?;
        self.total = self.total.saturating_add(entries.len() as u64);
        if self.total > self.repo.max_total_entries {
            return Err(invalid(
                format!("tree of {}", shown(dir.as_ref())),
                format!(
                    "the snapshot holds more than {} entries (max_total_entries): refused",
                    self.repo.max_total_entries
                ),
            ));
        }
        let mut out = Vec::with_capacity(entries.len());
        let mut subdirs = Vec::new();
        for e in entries {
            let path = match &dir {
                None => RelPath::new(e.name.clone()),
                Some(d) => d.join(&e.name),
            }
            .map_err(|err| {
                invalid(
                    format!("tree of {}", shown(dir.as_ref())),
                    format!("entry {:?}: {err}", e.name),
                )
            })?;
            if !self.wanted(&path) {
                continue;
            }
            if let EntryKind::Dir { subtree, .. } = &e.kind {
                if depth + 1 > MAX_DEPTH {
                    return Err(invalid(
                        format!("tree of {}", path),
                        format!("directories nested deeper than {MAX_DEPTH}: refused"),
                    ));
                }
                subdirs.push((Some(path.clone()), depth + 1, *subtree));
            }
            out.push((path, e));
        }
        for s in subdirs.into_iter().rev() {
            self.held = self
                .held
                .saturating_add(PENDING_COST + s.0.as_ref().map_or(0, |d| d.as_str().len() as u64));
            self.stack.push(s);
        }
        if self.held > self.repo.max_tree_memory {
            return Err(invalid(
                format!("tree of {}", shown(dir.as_ref())),
                format!(
                    "more directories waiting to be read than fit in max_tree_memory ({} bytes): trees larger than tether restores within its memory bound",
                    self.repo.max_tree_memory
                ),
            ));
        }
        Ok(Some((dir, out)))
    }
}
