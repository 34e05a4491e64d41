//! [`Checkpoint`]: an ordered, de-duplicated set of changes to push together.
//!
//! A checkpoint is a *delta* against the state the backend already holds:
//! upserts carry the full new [`Meta`] (so applying one twice is harmless) and
//! deletes name every path that disappeared (a deleted directory expands to
//! every path the index had under it, so backends never reason about
//! subtrees). When a push fails, the engine keeps the checkpoint and
//! [`merge`](Checkpoint::merge)s newer changes into it: the newest word about
//! each path wins, so a retried push never sends stale content and never
//! loses a change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::entry::{Entry, Meta};
use crate::path::RelPath;

/// One change to one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Change {
    /// The path now is `meta` (created or modified).
    Upsert(Meta),
    /// The path no longer exists.
    Delete,
}

/// Changes keyed by path, iterated in path order (a directory before its
/// contents).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    changes: BTreeMap<RelPath, Change>,
    /// See [`Checkpoint::base`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base: Option<String>,
}

/// Totals of a checkpoint, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Paths upserted (files, symlinks, directories).
    pub upserts: u64,
    /// Paths deleted.
    pub deletes: u64,
    /// Regular files upserted.
    pub files: u64,
    /// Content bytes of the regular files upserted.
    pub bytes: u64,
}

impl Checkpoint {
    /// An empty checkpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// The remote head this writer's copy was last in sync with (the head
    /// its last push confirmed or its restore came from; the engine sets it
    /// from its index), if known. A backend that keeps history reports a
    /// conflict when another writer changed one of this checkpoint's paths
    /// since then, even if that happened long before this push began.
    pub fn base(&self) -> Option<&str> {
        self.base.as_deref()
    }

    /// Sets [`Checkpoint::base`].
    pub fn set_base(&mut self, head: Option<String>) {
        self.base = head;
    }

    /// Records that `path` now is `meta`, replacing any earlier change to it.
    pub fn upsert(&mut self, path: RelPath, meta: Meta) {
        self.changes.insert(path, Change::Upsert(meta));
    }

    /// Records that `path` was deleted, replacing any earlier change to it.
    pub fn delete(&mut self, path: RelPath) {
        self.changes.insert(path, Change::Delete);
    }

    /// Folds a newer checkpoint into this one: for each path the newer change
    /// wins.
    pub fn merge(&mut self, newer: Checkpoint) {
        self.changes.extend(newer.changes);
    }

    /// The change recorded for `path`.
    pub fn get(&self, path: &RelPath) -> Option<&Change> {
        self.changes.get(path)
    }

    /// Removes the change recorded for `path`.
    pub fn remove(&mut self, path: &RelPath) -> Option<Change> {
        self.changes.remove(path)
    }

    /// All changes in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&RelPath, &Change)> {
        self.changes.iter()
    }

    /// The upserts as entries, in path order.
    pub fn upserts(&self) -> impl Iterator<Item = Entry> + '_ {
        self.changes.iter().filter_map(|(p, c)| match c {
            Change::Upsert(meta) => Some(Entry {
                path: p.clone(),
                meta: meta.clone(),
            }),
            Change::Delete => None,
        })
    }

    /// The deleted paths, in path order.
    pub fn deletes(&self) -> impl Iterator<Item = &RelPath> {
        self.changes.iter().filter_map(|(p, c)| match c {
            Change::Delete => Some(p),
            Change::Upsert(_) => None,
        })
    }

    /// Every path touched.
    pub fn paths(&self) -> impl Iterator<Item = &RelPath> {
        self.changes.keys()
    }

    /// Number of changed paths.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Counts of upserts, deletes, files and bytes.
    pub fn stats(&self) -> CheckpointStats {
        let mut s = CheckpointStats::default();
        for c in self.changes.values() {
            match c {
                Change::Upsert(meta) => {
                    s.upserts += 1;
                    if let Meta::File(f) = meta {
                        s.files += 1;
                        s.bytes += f.size;
                    }
                }
                Change::Delete => s.deletes += 1,
            }
        }
        s
    }

    /// A one-line human summary, for logs and commit messages.
    pub fn summary(&self) -> String {
        let s = self.stats();
        format!(
            "{} upserted ({} files, {} bytes), {} deleted",
            s.upserts, s.files, s.bytes, s.deletes
        )
    }
}

impl FromIterator<(RelPath, Change)> for Checkpoint {
    fn from_iter<I: IntoIterator<Item = (RelPath, Change)>>(iter: I) -> Self {
        Checkpoint {
            changes: iter.into_iter().collect(),
            base: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{ContentHash, FileMeta};

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn file(content: &[u8]) -> Meta {
        Meta::File(FileMeta {
            size: content.len() as u64,
            mtime_ns: 1,
            mode: 0o644,
            hash: ContentHash::of(content),
        })
    }

    #[test]
    fn later_change_to_a_path_wins_and_paths_are_unique() {
        let mut c = Checkpoint::new();
        c.upsert(p("b"), file(b"1"));
        c.upsert(p("a"), file(b"1"));
        c.delete(p("b"));
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&p("b")), Some(&Change::Delete));
        let order: Vec<_> = c.paths().map(|p| p.as_str().to_owned()).collect();
        assert_eq!(order, ["a", "b"]);
    }

    #[test]
    fn merge_keeps_older_changes_and_prefers_newer() {
        let mut old = Checkpoint::new();
        old.upsert(p("x"), file(b"old"));
        old.upsert(p("kept"), file(b"k"));
        let mut new = Checkpoint::new();
        new.upsert(p("x"), file(b"new"));
        new.delete(p("gone"));
        old.merge(new);
        assert_eq!(old.len(), 3);
        assert_eq!(old.get(&p("x")), Some(&Change::Upsert(file(b"new"))));
        assert!(old.get(&p("kept")).is_some());
        assert_eq!(old.get(&p("gone")), Some(&Change::Delete));
    }

    #[test]
    fn stats_count_files_and_bytes() {
        let mut c = Checkpoint::new();
        c.upsert(p("a"), file(b"12345"));
        c.upsert(p("d"), Meta::dir(0o755));
        c.delete(p("z"));
        let s = c.stats();
        assert_eq!((s.upserts, s.deletes, s.files, s.bytes), (2, 1, 1, 5));
    }
}
