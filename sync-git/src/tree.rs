//! Trees: building a commit's tree by editing the previous one, comparing
//! trees, deciding whether two writers' changes overlap, and listing a tree
//! for a restore.
//!
//! Everything here works on the local bare repository through gix and does
//! no network I/O. Paths are byte strings (`BString`) as git stores them;
//! only restore turns them into [`RelPath`]s (through
//! [`RestorePlan`](sync_core::restore::RestorePlan)).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};

use gix::ObjectId;
use gix::bstr::{BStr, BString, ByteSlice};
use gix::objs::tree::EntryKind;
use sync_core::{BackendError, Change, Checkpoint, Meta, RelPath, Source};

/// A non-tree entry of a tree: what a path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Leaf {
    /// Blob, executable blob, symlink or submodule commit.
    pub kind: EntryKind,
    /// The object.
    pub id: ObjectId,
}

/// Changed paths, each with the entry it holds afterwards (`None`: deleted).
pub(crate) type Changes = BTreeMap<BString, Option<Leaf>>;

/// An error from the local repository, as a backend error.
pub(crate) fn local_error(
    what: &str,
    err: impl std::fmt::Display + std::fmt::Debug,
) -> BackendError {
    // gix's messages ("Could not write loose object header") do not say
    // why; the cause is in the error's chain, which Debug shows.
    let message = if is_disk_full(&format!("{err:?}")) || is_disk_full(&err.to_string()) {
        format!("{DISK_FULL}: {err}")
    } else {
        err.to_string()
    };
    BackendError::Remote {
        operation: "local repository",
        location: what.to_owned(),
        message,
        transient: true,
    }
}

/// How a local error caused by a full disk starts (the backend adds where).
pub(crate) const DISK_FULL: &str = "disk full";

/// Whether an error text says the disk is full (ENOSPC).
pub(crate) fn is_disk_full(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("no space left on device") || t.contains("storagefull") || t.contains("os error 28")
}

/// One decoded tree entry.
#[derive(Debug, Clone)]
pub(crate) struct TreeEntry {
    pub name: BString,
    pub kind: EntryKind,
    pub id: ObjectId,
}

/// Reads and decodes trees, each at most once.
pub(crate) struct TreeReader<'r> {
    repo: &'r gix::Repository,
    cache: HashMap<ObjectId, std::rc::Rc<Vec<TreeEntry>>>,
}

impl<'r> TreeReader<'r> {
    pub fn new(repo: &'r gix::Repository) -> Self {
        TreeReader {
            repo,
            cache: HashMap::new(),
        }
    }

    /// The entries of tree `id`, in stored order.
    pub fn entries(&mut self, id: ObjectId) -> Result<std::rc::Rc<Vec<TreeEntry>>, BackendError> {
        if let Some(e) = self.cache.get(&id) {
            return Ok(e.clone());
        }
        let entries = if id.is_empty_tree() {
            Vec::new()
        } else {
            let obj = self
                .repo
                .find_object(id)
                .map_err(|e| local_error(&format!("tree {id}"), e))?;
            if obj.kind != gix::objs::Kind::Tree {
                return Err(BackendError::InvalidRemote {
                    object: format!("tree {id}"),
                    reason: format!("is a {}, not a tree", obj.kind),
                });
            }
            let refs = gix::objs::TreeRefIter::from_bytes(&obj.data, id.kind())
                .entries()
                .map_err(|e| BackendError::InvalidRemote {
                    object: format!("tree {id}"),
                    reason: e.to_string(),
                })?;
            refs.into_iter()
                .map(|e| TreeEntry {
                    name: e.filename.to_owned(),
                    kind: e.mode.kind(),
                    id: e.oid.to_owned(),
                })
                .collect()
        };
        let rc = std::rc::Rc::new(entries);
        self.cache.insert(id, rc.clone());
        Ok(rc)
    }

    /// The entry at `path` (components separated by `/`) under tree `root`.
    pub fn lookup(
        &mut self,
        root: ObjectId,
        path: &BStr,
    ) -> Result<Option<TreeEntry>, BackendError> {
        let mut current = root;
        let mut comps = path.split(|b| *b == b'/').peekable();
        while let Some(name) = comps.next() {
            let entries = self.entries(current)?;
            let last = comps.peek().is_none();
            let found = entries
                .iter()
                .find(|e| e.name.as_bytes() == name && (last || e.kind == EntryKind::Tree));
            match found {
                Some(e) if last => return Ok(Some(e.clone())),
                Some(e) => current = e.id,
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Every changed leaf between trees `a` and `b` (either may be absent),
    /// with the entry in `b`. Identical subtrees are skipped without being
    /// read.
    pub fn diff(
        &mut self,
        a: Option<ObjectId>,
        b: Option<ObjectId>,
    ) -> Result<Changes, BackendError> {
        let mut out = Changes::new();
        let mut stack = vec![(BString::default(), a, b)];
        while let Some((prefix, a, b)) = stack.pop() {
            if a == b {
                continue;
            }
            let split = |entries: &[TreeEntry]| {
                let mut trees = BTreeMap::new();
                let mut leaves = BTreeMap::new();
                for e in entries {
                    if e.kind == EntryKind::Tree {
                        trees.insert(e.name.clone(), e.id);
                    } else {
                        leaves.insert(
                            e.name.clone(),
                            Leaf {
                                kind: e.kind,
                                id: e.id,
                            },
                        );
                    }
                }
                (trees, leaves)
            };
            let (a_trees, a_leaves) = match a {
                Some(id) => split(&self.entries(id)?),
                None => Default::default(),
            };
            let (b_trees, b_leaves) = match b {
                Some(id) => split(&self.entries(id)?),
                None => Default::default(),
            };
            let join = |name: &BString| -> BString {
                if prefix.is_empty() {
                    name.clone()
                } else {
                    let mut p = prefix.clone();
                    p.push(b'/');
                    p.extend_from_slice(name);
                    p
                }
            };
            for name in a_leaves.keys().chain(b_leaves.keys()) {
                let (x, y) = (a_leaves.get(name), b_leaves.get(name));
                if x != y {
                    out.insert(join(name), y.copied());
                }
            }
            for name in a_trees.keys().chain(b_trees.keys()) {
                let (x, y) = (a_trees.get(name).copied(), b_trees.get(name).copied());
                if x != y {
                    stack.push((join(name), x, y));
                }
            }
        }
        Ok(out)
    }

    /// Regular files and their total size under tree `id` (for history).
    pub fn totals(
        &mut self,
        id: ObjectId,
        memo: &mut HashMap<ObjectId, (u64, u64)>,
    ) -> Result<(u64, u64), BackendError> {
        if let Some(t) = memo.get(&id) {
            return Ok(*t);
        }
        let mut files = 0;
        let mut bytes = 0;
        for e in self.entries(id)?.iter() {
            match e.kind {
                EntryKind::Tree => {
                    let (f, b) = self.totals(e.id, memo)?;
                    files += f;
                    bytes += b;
                }
                EntryKind::Blob | EntryKind::BlobExecutable => {
                    files += 1;
                    bytes += self
                        .repo
                        .find_header(e.id)
                        .map_err(|err| local_error(&format!("blob {}", e.id), err))?
                        .size();
                }
                EntryKind::Link | EntryKind::Commit => {}
            }
        }
        memo.insert(id, (files, bytes));
        Ok((files, bytes))
    }

    /// Every entry under `root` as `(path, entry)`, trees included, depth
    /// first. Names are joined with `/` exactly as stored, so hostile names
    /// (`..`, names containing `/` or `\`) reach the restore plan unchanged.
    pub fn list(&mut self, root: ObjectId) -> Result<Vec<(BString, TreeEntry)>, BackendError> {
        let mut out = Vec::new();
        let mut stack: Vec<(Option<BString>, ObjectId)> = vec![(None, root)];
        while let Some((prefix, id)) = stack.pop() {
            for e in self.entries(id)?.iter() {
                let path = match &prefix {
                    None => e.name.clone(),
                    Some(p) => {
                        let mut p = p.clone();
                        p.push(b'/');
                        p.extend_from_slice(&e.name);
                        p
                    }
                };
                if e.kind == EntryKind::Tree {
                    stack.push((Some(path.clone()), e.id));
                }
                out.push((path, e.clone()));
            }
        }
        Ok(out)
    }
}

/// Whether git can store `path`: every component must pass git's own
/// checks (no `.git`, no NTFS aliases of it). Names like that are skipped
/// with a warning instead of failing every push.
pub(crate) fn git_can_store(path: &RelPath, symlink: bool) -> bool {
    let opts = gix::validate::path::component::Options {
        protect_windows: false,
        protect_hfs: false,
        protect_ntfs: true,
    };
    let comps: Vec<&str> = path.as_str().split('/').collect();
    comps.iter().enumerate().all(|(i, c)| {
        let mode = (symlink && i + 1 == comps.len())
            .then_some(gix::validate::path::component::Mode::Symlink);
        gix::validate::path::component(c.as_bytes().as_bstr(), mode, opts).is_ok()
    })
}

/// Reads a source file while keeping the first I/O error, so a
/// [`SourceChanged`](BackendError::SourceChanged) is recognised even after
/// gix wrapped the error in its own.
struct KeepError<R> {
    inner: R,
    error: Option<io::Error>,
}

impl<R: Read> Read for KeepError<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let shown = io::Error::new(e.kind(), e.to_string());
                self.error = Some(e);
                Err(shown)
            }
        }
    }
}

/// Writes one source file as a blob, streaming (never whole in memory).
fn write_file_blob(
    repo: &gix::Repository,
    source: &Source,
    path: &RelPath,
    meta: &sync_core::FileMeta,
) -> Result<ObjectId, BackendError> {
    use gix::objs::Write as _;
    let reader = source.open_blocking(path, meta)?;
    let mut reader = KeepError {
        inner: reader,
        error: None,
    };
    match repo
        .objects
        .write_stream(gix::objs::Kind::Blob, meta.size, &mut reader)
    {
        Ok(id) => Ok(id),
        Err(e) => match reader.error.take() {
            Some(io) => Err(BackendError::from_source_io(path, io)),
            None => Err(local_error(&format!("writing blob for {path}"), e)),
        },
    }
}

/// Applies `checkpoint` to `base` (a tree id; the empty tree for a first
/// commit) and writes the new tree. Only trees on the paths of changed
/// entries are rewritten. Returns the tree and the paths skipped because git
/// cannot store them.
pub(crate) fn apply_checkpoint(
    repo: &gix::Repository,
    base: ObjectId,
    checkpoint: &Checkpoint,
    source: &Source,
) -> Result<(ObjectId, Vec<RelPath>), BackendError> {
    let mut reader = TreeReader::new(repo);
    let mut editor = repo
        .edit_tree(base)
        .map_err(|e| local_error(&format!("tree {base}"), e))?
        .detach();
    let mut skipped = Vec::new();
    let edit_err = |path: &RelPath| {
        let path = path.clone();
        move |e: gix::Error| local_error(&format!("editing {path}"), e)
    };
    // Removals first, so an upsert below a path replaced in the same
    // checkpoint (file became directory) is never undone.
    for (path, change) in checkpoint.iter() {
        match change {
            Change::Delete => {
                editor
                    .remove(path.as_str().split('/'))
                    .map_err(edit_err(path))?;
            }
            Change::Upsert(Meta::Dir) => {
                // Git keeps no directories; a directory that replaced a file
                // or symlink only removes that entry.
                if let Some(e) = reader.lookup(base, path.as_str().into())?
                    && e.kind != EntryKind::Tree
                {
                    editor
                        .remove(path.as_str().split('/'))
                        .map_err(edit_err(path))?;
                }
            }
            Change::Upsert(_) => {}
        }
    }
    for (path, change) in checkpoint.iter() {
        let (kind, id) = match change {
            Change::Upsert(Meta::File(f)) => {
                if !git_can_store(path, false) {
                    skipped.push(path.clone());
                    continue;
                }
                let kind = if f.executable() {
                    EntryKind::BlobExecutable
                } else {
                    EntryKind::Blob
                };
                (kind, write_file_blob(repo, source, path, f)?)
            }
            Change::Upsert(Meta::Symlink { target }) => {
                if !git_can_store(path, true) {
                    skipped.push(path.clone());
                    continue;
                }
                let id = repo
                    .write_blob(target.as_bytes())
                    .map_err(|e| local_error(&format!("writing symlink {path}"), e))?
                    .detach();
                (EntryKind::Link, id)
            }
            Change::Upsert(Meta::Dir) | Change::Delete => continue,
        };
        editor
            .upsert(path.as_str().split('/'), kind, id)
            .map_err(edit_err(path))?;
    }
    let tree = editor
        .write(|t| repo.write_object(t).map(gix::Id::detach))
        .map_err(|e| local_error("writing trees", e))?;
    Ok((tree, skipped))
}

/// Applies leaf changes (from [`TreeReader::diff`]) to tree `onto`. A
/// deletion removes only a file or symlink, never a directory the other
/// side created at that path.
pub(crate) fn apply_changes<'a>(
    repo: &gix::Repository,
    onto: ObjectId,
    changes: impl IntoIterator<Item = (&'a BString, &'a Option<Leaf>)>,
) -> Result<ObjectId, BackendError> {
    let mut editor = repo
        .edit_tree(onto)
        .map_err(|e| local_error(&format!("tree {onto}"), e))?
        .detach();
    let changes: Vec<_> = changes.into_iter().collect();
    for (path, leaf) in &changes {
        if leaf.is_none() {
            editor
                .remove_if_leaf(path.split(|b| *b == b'/'))
                .map_err(|e| local_error(&format!("editing {path}"), e))?;
        }
    }
    for (path, leaf) in &changes {
        if let Some(leaf) = leaf {
            editor
                .upsert(path.split(|b| *b == b'/'), leaf.kind, leaf.id)
                .map_err(|e| local_error(&format!("editing {path}"), e))?;
        }
    }
    editor
        .write(|t| repo.write_object(t).map(gix::Id::detach))
        .map_err(|e| local_error("writing trees", e))
}

fn is_ancestor(anc: &[u8], path: &[u8]) -> bool {
    path.len() > anc.len() && path.starts_with(anc) && path[anc.len()] == b'/'
}

/// The paths where our changes and theirs (both relative to the same base)
/// collide: the same path changed to different results, or one side put a
/// file where the other needs a directory. Identical changes on both sides
/// are not a conflict.
pub(crate) fn overlapping(ours: &Changes, theirs: &Changes) -> Vec<BString> {
    let mut out = Vec::new();
    for (path, our) in ours {
        let collides = match theirs.get(path) {
            Some(their) => their != our,
            None => {
                // They made an ancestor of our path a file or symlink.
                let ancestor_taken = path
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'/')
                    .any(|(i, _)| matches!(theirs.get(path[..i].as_bstr()), Some(Some(_))));
                // We made a file or symlink where they have entries below.
                let below_taken = our.is_some()
                    && theirs
                        .range::<BStr, _>((
                            std::ops::Bound::Excluded(path.as_bstr()),
                            std::ops::Bound::Unbounded,
                        ))
                        .take_while(|(p, _)| p.starts_with(path.as_bytes()))
                        .any(|(p, v)| v.is_some() && is_ancestor(path, p));
                ancestor_taken || below_taken
            }
        };
        if collides {
            out.push(path.clone());
        }
    }
    out
}

/// A commit message listing what changed: a summary line, then one line per
/// path (`A`dded, `M`odified, `D`eleted), at most `max_lines` of them.
pub(crate) fn commit_message(
    title: &str,
    changes: &BTreeMap<BString, (bool, Option<Leaf>)>,
    max_lines: usize,
) -> String {
    let added = changes
        .values()
        .filter(|(existed, n)| !existed && n.is_some())
        .count();
    let deleted = changes.values().filter(|(_, n)| n.is_none()).count();
    let modified = changes.len() - added - deleted;
    let mut msg = format!("{title}: {added} added, {modified} modified, {deleted} deleted\n\n");
    for (path, (existed, new)) in changes.iter().take(max_lines) {
        let flag = match (existed, new) {
            (false, Some(_)) => 'A',
            (true, Some(_)) => 'M',
            (_, None) => 'D',
        };
        msg.push(flag);
        msg.push(' ');
        msg.push_str(&path.to_str_lossy());
        msg.push('\n');
    }
    if changes.len() > max_lines {
        msg.push_str(&format!("… and {} more\n", changes.len() - max_lines));
    }
    msg
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn leaf(n: u8) -> Option<Leaf> {
        let mut bytes = [0u8; 20];
        bytes[0] = n;
        Some(Leaf {
            kind: EntryKind::Blob,
            id: ObjectId::from_bytes_or_panic(&bytes),
        })
    }

    fn changes(items: &[(&str, Option<Leaf>)]) -> Changes {
        items.iter().map(|(p, l)| (BString::from(*p), *l)).collect()
    }

    #[test]
    fn disjoint_changes_do_not_overlap() {
        let ours = changes(&[("a.txt", leaf(1)), ("dir/x", None)]);
        let theirs = changes(&[("b.txt", leaf(2)), ("dir/y", leaf(3)), ("dirx", leaf(4))]);
        assert!(overlapping(&ours, &theirs).is_empty());
    }

    #[test]
    fn same_path_different_result_overlaps_but_identical_does_not() {
        let ours = changes(&[("a.txt", leaf(1)), ("same", leaf(5)), ("gone", None)]);
        let theirs = changes(&[("a.txt", leaf(2)), ("same", leaf(5)), ("gone", None)]);
        assert_eq!(overlapping(&ours, &theirs), vec![BString::from("a.txt")]);
        // We deleted what they modified.
        let ours = changes(&[("n.ipynb", None)]);
        let theirs = changes(&[("n.ipynb", leaf(9))]);
        assert_eq!(overlapping(&ours, &theirs).len(), 1);
    }

    #[test]
    fn file_versus_directory_overlaps() {
        // They made `d` a file; we add `d/x`.
        let ours = changes(&[("d/x", leaf(1))]);
        let theirs = changes(&[("d", leaf(2))]);
        assert_eq!(overlapping(&ours, &theirs), vec![BString::from("d/x")]);
        // We made `d` a file; they added `d/y`.
        let ours = changes(&[("d", leaf(1))]);
        let theirs = changes(&[("d/y", leaf(2))]);
        assert_eq!(overlapping(&ours, &theirs), vec![BString::from("d")]);
        // `d` deleted by us, `d.txt` added by them: unrelated.
        let ours = changes(&[("d", None)]);
        let theirs = changes(&[("d.txt", leaf(2)), ("d/z", None)]);
        assert!(overlapping(&ours, &theirs).is_empty());
    }

    #[test]
    fn commit_message_lists_changes_and_caps_them() {
        let mut c = BTreeMap::new();
        c.insert(BString::from("new"), (false, leaf(1)));
        c.insert(BString::from("old"), (true, None));
        c.insert(BString::from("edited"), (true, leaf(2)));
        let m = commit_message("tether", &c, 2);
        assert!(
            m.starts_with("tether: 1 added, 1 modified, 1 deleted\n\n"),
            "{m}"
        );
        assert!(m.contains("M edited\nA new\n"), "{m}");
        assert!(m.contains("… and 1 more"), "{m}");
    }

    #[test]
    fn dot_git_is_not_storable() {
        for bad in [".git/config", "a/.git", "a/.GIT/x", "x/git~1/y"] {
            assert!(!git_can_store(&RelPath::new(bad).unwrap(), false), "{bad}");
        }
        for ok in ["a/.gitignore", "notes/git.md", "CON", "a:b"] {
            assert!(git_can_store(&RelPath::new(ok).unwrap(), false), "{ok}");
        }
    }
}
