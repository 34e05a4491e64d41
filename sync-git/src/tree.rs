//! Trees: building a commit's tree by editing the previous one, comparing
//! trees, deciding whether two writers' changes overlap, and listing a tree
//! for a restore.
//!
//! Everything here works on the local bare repository through gix and does
//! no network I/O. Paths are byte strings (`BString`) as git stores them;
//! only restore turns them into [`RelPath`]s (through
//! [`RestorePlan`](sync_core::restore::RestorePlan)).
//!
//! Permission bits other than the executable bit, and directory modes, do
//! not fit in a git tree: they live in a small JSON file in the commit,
//! [`MODES_PATH`] (`.tether/modes`), listing only the paths whose mode
//! differs from git's default (`0644`, `0755` for executables and
//! directories); see [`Modes`]. The top-level name `.tether` is reserved
//! for it: a user path there is skipped with a warning on push, and a
//! restore never writes it into the directory.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
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
    /// The mode exactly as stored (gix reads `140000` as a tree and any
    /// unknown type as a submodule; restore refuses those by this value).
    pub mode: u32,
}

/// The entry modes git writes (plus `100664`, which old git wrote and git
/// still accepts); anything else in a tree is refused by restore.
const SUPPORTED_MODES: [u32; 6] = [0o40000, 0o100644, 0o100755, 0o100664, 0o120000, 0o160000];

/// Refuses a tree entry whose mode git would not write.
pub(crate) fn check_mode(path: &BStr, mode: u32) -> Result<(), BackendError> {
    if SUPPORTED_MODES.contains(&mode) {
        return Ok(());
    }
    Err(BackendError::InvalidRemote {
        object: format!("tree entry {:?}", path.to_str_lossy()),
        reason: format!(
            "unsupported git tree entry mode {mode:o} (tether restores files 100644/100755, symlinks 120000 and trees 40000)"
        ),
    })
}

/// The raw modes of a tree object's entries, in order; `None` when the
/// data is not a well-formed tree.
fn raw_modes(data: &[u8], hash_len: usize) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let sp = data.get(i..)?.iter().position(|b| *b == b' ')?;
        let text = data.get(i..i + sp)?;
        if text.is_empty() || text.len() > 7 {
            return None;
        }
        let mut mode = 0u32;
        for b in text {
            if !(b'0'..=b'7').contains(b) {
                return None;
            }
            mode = mode * 8 + u32::from(b - b'0');
        }
        i += sp + 1;
        let nul = data.get(i..)?.iter().position(|b| *b == 0)?;
        i = i.checked_add(nul + 1 + hash_len)?;
        if i > data.len() {
            return None;
        }
        out.push(mode);
    }
    Some(out)
}

/// The longest path a tree may hold, in bytes (Linux's `PATH_MAX`): a
/// longer one could not be created, and refusing it bounds how deep a
/// listing goes (every level adds at least two bytes).
pub(crate) const MAX_PATH_BYTES: usize = 4096;

/// Reads and decodes trees, each at most once.
///
/// A tree names its subtrees by id, so a small hostile repository can share
/// one subtree many times over (a few KB that expand to billions of paths)
/// or nest thousands of levels deep. Every walk here therefore counts the
/// entries it expands and stops with [`BackendError::InvalidRemote`] past
/// `max_entries` (see [`GitOptions::max_entries`](crate::GitOptions::max_entries)),
/// refuses paths longer than [`MAX_PATH_BYTES`], and never recurses.
pub(crate) struct TreeReader<'r> {
    repo: &'r gix::Repository,
    cache: HashMap<ObjectId, std::rc::Rc<Vec<TreeEntry>>>,
    max_entries: u64,
}

impl<'r> TreeReader<'r> {
    /// A reader that expands at most `max_entries` entries per walk.
    pub fn new(repo: &'r gix::Repository, max_entries: u64) -> Self {
        TreeReader {
            repo,
            cache: HashMap::new(),
            max_entries,
        }
    }

    /// Counts one more expanded entry of the walk from `root`; refuses the
    /// tree past the limit.
    fn count(&self, seen: &mut u64, root: ObjectId) -> Result<(), BackendError> {
        *seen = seen.saturating_add(1);
        if *seen > self.max_entries {
            return Err(BackendError::InvalidRemote {
                object: format!("tree {root}"),
                reason: format!(
                    "expands to more than {} entries, the most tether reads; refusing it (if the tree is genuine, raise the limit with ?max_entries=N on the remote URL)",
                    self.max_entries
                ),
            });
        }
        Ok(())
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
            let modes = raw_modes(&obj.data, id.kind().len_in_bytes())
                .filter(|m| m.len() == refs.len())
                .ok_or_else(|| BackendError::InvalidRemote {
                    object: format!("tree {id}"),
                    reason: "malformed tree entry modes".into(),
                })?;
            refs.into_iter()
                .zip(modes)
                .map(|(e, mode)| TreeEntry {
                    name: e.filename.to_owned(),
                    kind: e.mode.kind(),
                    id: e.oid.to_owned(),
                    mode,
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
        let root = b
            .or(a)
            .unwrap_or_else(|| ObjectId::empty_tree(gix::hash::Kind::Sha1));
        let mut seen = 0u64;
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
            for name in a_leaves.keys().chain(b_leaves.keys()) {
                let (x, y) = (a_leaves.get(name), b_leaves.get(name));
                if x != y {
                    self.count(&mut seen, root)?;
                    out.insert(join_path(&prefix, name, root)?, y.copied());
                }
            }
            for name in a_trees.keys().chain(b_trees.keys()) {
                let (x, y) = (a_trees.get(name).copied(), b_trees.get(name).copied());
                if x != y {
                    self.count(&mut seen, root)?;
                    stack.push((join_path(&prefix, name, root)?, x, y));
                }
            }
        }
        Ok(out)
    }

    /// Regular files and their total size under tree `id` (for history),
    /// saturating: each distinct subtree is summed once (`memo`), so shared
    /// subtrees cost nothing to count, and depth is bounded by
    /// [`MAX_PATH_BYTES`] without recursion.
    pub fn totals(
        &mut self,
        id: ObjectId,
        memo: &mut HashMap<ObjectId, (u64, u64)>,
    ) -> Result<(u64, u64), BackendError> {
        // Post-order walk: a frame is summed once all its subtrees are.
        let mut stack = vec![id];
        let mut seen = 0u64;
        while let Some(&top) = stack.last() {
            if memo.contains_key(&top) {
                stack.pop();
                continue;
            }
            if stack.len() > MAX_PATH_BYTES / 2 {
                return Err(BackendError::InvalidRemote {
                    object: format!("tree {id}"),
                    reason: format!(
                        "nests deeper than {} levels; refusing it",
                        MAX_PATH_BYTES / 2
                    ),
                });
            }
            let entries = self.entries(top)?;
            let pending: Vec<ObjectId> = entries
                .iter()
                .filter(|e| e.kind == EntryKind::Tree && !memo.contains_key(&e.id))
                .map(|e| e.id)
                .collect();
            if !pending.is_empty() {
                for child in pending {
                    self.count(&mut seen, id)?;
                    stack.push(child);
                }
                continue;
            }
            let (mut files, mut bytes) = (0u64, 0u64);
            for e in entries.iter() {
                match e.kind {
                    EntryKind::Tree => {
                        let (f, b) = memo.get(&e.id).copied().unwrap_or_default();
                        files = files.saturating_add(f);
                        bytes = bytes.saturating_add(b);
                    }
                    EntryKind::Blob | EntryKind::BlobExecutable => {
                        files = files.saturating_add(1);
                        bytes = bytes.saturating_add(
                            self.repo
                                .find_header(e.id)
                                .map_err(|err| local_error(&format!("blob {}", e.id), err))?
                                .size(),
                        );
                    }
                    EntryKind::Link | EntryKind::Commit => {}
                }
            }
            memo.insert(top, (files, bytes));
            stack.pop();
        }
        Ok(memo.get(&id).copied().unwrap_or_default())
    }

    /// Every entry under `root` as `(path, entry)`, trees included, depth
    /// first. Names are joined with `/` exactly as stored, so hostile names
    /// (`..`, names containing `/` or `\`) reach the restore plan unchanged.
    pub fn list(&mut self, root: ObjectId) -> Result<Vec<(BString, TreeEntry)>, BackendError> {
        let mut out = Vec::new();
        let mut seen = 0u64;
        let mut stack: Vec<(BString, ObjectId)> = vec![(BString::default(), root)];
        while let Some((prefix, id)) = stack.pop() {
            for e in self.entries(id)?.iter() {
                self.count(&mut seen, root)?;
                let path = join_path(&prefix, &e.name, root)?;
                check_mode(path.as_bstr(), e.mode)?;
                if e.kind == EntryKind::Tree {
                    stack.push((path.clone(), e.id));
                }
                out.push((path, e.clone()));
            }
        }
        Ok(out)
    }
}

/// `prefix/name` (just `name` at the top), refused past [`MAX_PATH_BYTES`].
fn join_path(prefix: &[u8], name: &[u8], root: ObjectId) -> Result<BString, BackendError> {
    let len = if prefix.is_empty() {
        name.len()
    } else {
        prefix.len().saturating_add(1).saturating_add(name.len())
    };
    if len > MAX_PATH_BYTES {
        return Err(BackendError::InvalidRemote {
            object: format!("tree {root}"),
            reason: format!(
                "holds a path longer than {MAX_PATH_BYTES} bytes (under {:?}); refusing it",
                String::from_utf8_lossy(&prefix[..prefix.len().min(80)])
            ),
        });
    }
    let mut p = BString::from(Vec::with_capacity(len));
    if !prefix.is_empty() {
        p.extend_from_slice(prefix);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    Ok(p)
}

/// Where a commit keeps the modes its tree cannot hold.
pub(crate) const MODES_PATH: &str = ".tether/modes";
/// `format` of the modes file.
const MODES_FORMAT: &str = "tether-git-modes-1";
/// A modes file larger than this is refused (about a million entries).
const MAX_MODES_BYTES: u64 = 64 << 20;

/// True for the reserved top-level name `.tether` and everything below it.
pub(crate) fn is_reserved(path: &[u8]) -> bool {
    path == b".tether" || path.starts_with(b".tether/")
}

/// The mode git's tree implies for a file: `0755` if executable, else `0644`.
pub(crate) fn default_file_mode(executable: bool) -> u32 {
    if executable { 0o755 } else { 0o644 }
}

/// The mode to restore for a file: the recorded one when it agrees with the
/// tree's executable bit (a plain `git commit` that flipped the bit without
/// updating the modes file wins), else git's default.
pub(crate) fn file_mode(recorded: Option<u32>, executable: bool) -> u32 {
    match recorded {
        Some(m) if (m & 0o111 != 0) == executable => m & sync_core::PERMISSION_BITS,
        _ => default_file_mode(executable),
    }
}

/// The modes file: path → permission bits, for the paths whose mode is not
/// git's default. Written only when non-empty.
///
/// ```json
/// {"format":"tether-git-modes-1","modes":{".ssh":"700",".ssh/id_ed25519":"600"}}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Modes(BTreeMap<String, u32>);

#[derive(Serialize, Deserialize)]
struct ModesFile {
    format: String,
    modes: BTreeMap<String, String>,
}

impl Modes {
    /// The recorded mode of `path`, if any.
    pub fn get(&self, path: &str) -> Option<u32> {
        self.0.get(path).copied()
    }

    /// Records `mode` for `path`, or nothing when it is `default`.
    fn set(&mut self, path: &str, mode: u32, default: u32) {
        let mode = mode & sync_core::PERMISSION_BITS;
        if mode == default {
            self.0.remove(path);
        } else {
            self.0.insert(path.to_owned(), mode);
        }
    }

    /// Parses a modes file read from `object`.
    pub fn decode(bytes: &[u8], object: &str) -> Result<Modes, BackendError> {
        let invalid = |reason: String| BackendError::InvalidRemote {
            object: object.to_owned(),
            reason,
        };
        let file: ModesFile = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("not a valid modes file: {e}")))?;
        if file.format != MODES_FORMAT {
            return Err(invalid(format!("unknown modes format {:?}", file.format)));
        }
        let mut out = BTreeMap::new();
        for (path, text) in file.modes {
            let mode = (!text.is_empty() && text.len() <= 4)
                .then(|| u32::from_str_radix(&text, 8).ok())
                .flatten()
                .ok_or_else(|| invalid(format!("{path:?} has an invalid mode {text:?}")))?;
            out.insert(path, mode);
        }
        Ok(Modes(out))
    }

    /// JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        let file = ModesFile {
            format: MODES_FORMAT.into(),
            modes: self
                .0
                .iter()
                .map(|(p, m)| (p.clone(), format!("{m:o}")))
                .collect(),
        };
        serde_json::to_vec(&file).unwrap_or_default()
    }

    /// The modes file of tree `tree` (empty when it has none).
    pub fn read(
        repo: &gix::Repository,
        reader: &mut TreeReader<'_>,
        tree: ObjectId,
    ) -> Result<Modes, BackendError> {
        let Some(e) = reader.lookup(tree, MODES_PATH.into())? else {
            return Ok(Modes::default());
        };
        let object = format!("{MODES_PATH} in tree {tree}");
        if !matches!(e.kind, EntryKind::Blob | EntryKind::BlobExecutable) {
            return Err(BackendError::InvalidRemote {
                object,
                reason: "is not a regular file".into(),
            });
        }
        let size = repo
            .find_header(e.id)
            .map_err(|err| local_error(&format!("blob {}", e.id), err))?
            .size();
        if size > MAX_MODES_BYTES {
            return Err(BackendError::InvalidRemote {
                object,
                reason: format!("{size} bytes, more than the {MAX_MODES_BYTES} allowed"),
            });
        }
        let blob = repo
            .find_object(e.id)
            .map_err(|err| local_error(&format!("blob {}", e.id), err))?;
        Modes::decode(&blob.data, &object)
    }

    /// Applies the mode changes of `checkpoint` (reserved and skipped paths
    /// excluded).
    fn apply(&mut self, checkpoint: &Checkpoint, skipped: &[RelPath]) {
        for (path, change) in checkpoint.iter() {
            if is_reserved(path.as_str().as_bytes()) || skipped.contains(path) {
                continue;
            }
            match change {
                Change::Upsert(Meta::File(f)) => {
                    self.set(path.as_str(), f.mode, default_file_mode(f.executable()));
                }
                Change::Upsert(Meta::Dir { mode }) => {
                    self.set(path.as_str(), *mode, sync_core::DEFAULT_DIR_MODE);
                }
                Change::Upsert(Meta::Symlink { .. }) | Change::Delete => {
                    self.0.remove(path.as_str());
                }
            }
        }
    }
}

/// Writes `modes` into tree `tree` as [`MODES_PATH`] (removing the file
/// when `modes` is empty); returns the new tree.
pub(crate) fn write_modes(
    repo: &gix::Repository,
    tree: ObjectId,
    modes: &Modes,
) -> Result<ObjectId, BackendError> {
    let mut editor = repo
        .edit_tree(tree)
        .map_err(|e| local_error(&format!("tree {tree}"), e))?
        .detach();
    let path = MODES_PATH.split('/');
    if modes.0.is_empty() {
        editor
            .remove(path)
            .map_err(|e| local_error(&format!("editing {MODES_PATH}"), e))?;
    } else {
        let id = repo
            .write_blob(modes.encode())
            .map_err(|e| local_error(&format!("writing {MODES_PATH}"), e))?
            .detach();
        editor
            .upsert(path, EntryKind::Blob, id)
            .map_err(|e| local_error(&format!("editing {MODES_PATH}"), e))?;
    }
    editor
        .write(|t| repo.write_object(t).map(gix::Id::detach))
        .map_err(|e| local_error("writing trees", e))
}

/// Three-way merge of modes files for a rebase: per path, our change wins
/// when only we changed it (and the path is not in `overlap`), theirs
/// otherwise; a path both sides changed to different modes is added to
/// `overlap` (a conflict, like a content change on both sides).
pub(crate) fn merge_modes(
    base: &Modes,
    ours: &Modes,
    theirs: &Modes,
    overlap: &mut Vec<BString>,
) -> Modes {
    let mut out = BTreeMap::new();
    let paths: std::collections::BTreeSet<&String> = base
        .0
        .keys()
        .chain(ours.0.keys())
        .chain(theirs.0.keys())
        .collect();
    for path in paths {
        let (b, o, t) = (base.get(path), ours.get(path), theirs.get(path));
        let key = BString::from(path.as_str());
        if o != b && t != b && o != t && !overlap.contains(&key) {
            overlap.push(key.clone());
        }
        let take_ours = o != b && !overlap.contains(&key);
        if let Some(m) = if take_ours { o } else { t } {
            out.insert(path.clone(), m);
        }
    }
    Modes(out)
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
    // Only lookups: nothing is expanded.
    let mut reader = TreeReader::new(repo, u64::MAX);
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
        if is_reserved(path.as_str().as_bytes()) {
            // `.tether` holds the modes file; the user's own is not synced.
            if matches!(change, Change::Upsert(_)) {
                skipped.push(path.clone());
            }
            continue;
        }
        match change {
            Change::Delete => {
                editor
                    .remove(path.as_str().split('/'))
                    .map_err(edit_err(path))?;
            }
            Change::Upsert(Meta::Dir { .. }) => {
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
    // All objects first, into one vector allocated up front, then the tree
    // edits: an allocation that lives on between two object writes (an
    // editor entry) would split the heap hole the previous object's
    // compressor state left, and the heap would grow by that state's size
    // for every file (3 GB at 10,000 files with glibc's defaults).
    let mut written: Vec<(&RelPath, EntryKind, ObjectId)> = Vec::with_capacity(checkpoint.len());
    for (path, change) in checkpoint.iter() {
        if is_reserved(path.as_str().as_bytes()) {
            continue;
        }
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
            Change::Upsert(Meta::Dir { .. }) | Change::Delete => continue,
        };
        written.push((path, kind, id));
    }
    for (path, kind, id) in written {
        editor
            .upsert(path.as_str().split('/'), kind, id)
            .map_err(edit_err(path))?;
    }
    let tree = editor
        .write(|t| repo.write_object(t).map(gix::Id::detach))
        .map_err(|e| local_error("writing trees", e))?;
    let base_modes = Modes::read(repo, &mut reader, base)?;
    let mut modes = base_modes.clone();
    modes.apply(checkpoint, &skipped);
    let tree = if modes == base_modes {
        tree
    } else {
        write_modes(repo, tree, &modes)?
    };
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
        for bad in [".git/config", "a/.git", "a/.GIT/x", "x/git~1/y", ".git. /x"] {
            assert!(!git_can_store(&RelPath::new(bad).unwrap(), false), "{bad}");
        }
        for ok in ["a/.gitignore", "notes/git.md", "CON", "a:b"] {
            assert!(git_can_store(&RelPath::new(ok).unwrap(), false), "{ok}");
        }
    }

    fn modes(items: &[(&str, u32)]) -> Modes {
        Modes(items.iter().map(|(p, m)| (p.to_string(), *m)).collect())
    }

    #[test]
    fn modes_file_round_trips_and_refuses_garbage() {
        let m = modes(&[(".ssh", 0o700), (".ssh/id", 0o600)]);
        let bytes = m.encode();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"format":"tether-git-modes-1","modes":{".ssh":"700",".ssh/id":"600"}}"#
        );
        assert_eq!(Modes::decode(&bytes, "m").unwrap(), m);
        for bad in [
            r#"{"format":"x","modes":{}}"#,
            r#"{"format":"tether-git-modes-1","modes":{"a":"rwx"}}"#,
            r#"{"format":"tether-git-modes-1","modes":{"a":"77777"}}"#,
            r#"{"format":"tether-git-modes-1","modes":{"a":""}}"#,
            r#"{"format":"tether-git-modes-1","modes":{"a":"-1"}}"#,
            "[",
        ] {
            let e = Modes::decode(bad.as_bytes(), ".tether/modes in tree x").unwrap_err();
            assert!(e.to_string().contains(".tether/modes"), "{e}");
        }
    }

    #[test]
    fn recorded_file_modes_apply_only_with_a_matching_executable_bit() {
        assert_eq!(file_mode(Some(0o600), false), 0o600);
        assert_eq!(file_mode(Some(0o7700), true), 0o700);
        // A plain git commit flipped the bit: the tree wins.
        assert_eq!(file_mode(Some(0o600), true), 0o755);
        assert_eq!(file_mode(Some(0o750), false), 0o644);
        assert_eq!(file_mode(None, true), 0o755);
    }

    #[test]
    fn modes_merge_path_by_path() {
        let base = modes(&[("a", 0o600), ("b", 0o600), ("c", 0o600)]);
        // We loosened a, they tightened d and dropped c: no conflict.
        let ours = modes(&[("b", 0o600), ("c", 0o600)]);
        let theirs = modes(&[("a", 0o600), ("b", 0o600), ("d", 0o700)]);
        let mut overlap = Vec::new();
        let merged = merge_modes(&base, &ours, &theirs, &mut overlap);
        assert!(overlap.is_empty());
        assert_eq!(merged, modes(&[("b", 0o600), ("d", 0o700)]));
        // Both changed b differently: a conflict, theirs kept on the branch.
        let ours = modes(&[("a", 0o600), ("b", 0o640), ("c", 0o600)]);
        let theirs = modes(&[("a", 0o600), ("b", 0o700), ("c", 0o600)]);
        let merged = merge_modes(&base, &ours, &theirs, &mut overlap);
        assert_eq!(overlap, vec![BString::from("b")]);
        assert_eq!(merged.get("b"), Some(0o700));
    }

    #[test]
    fn raw_tree_modes_are_read_exactly() {
        let mut data = Vec::new();
        for (mode, name) in [("140000", "s"), ("40000", "t"), ("100644", "f")] {
            data.extend_from_slice(format!("{mode} {name}\0").as_bytes());
            data.extend_from_slice(&[7u8; 20]);
        }
        assert_eq!(
            raw_modes(&data, 20),
            Some(vec![0o140000, 0o40000, 0o100644])
        );
        assert_eq!(raw_modes(&data[..data.len() - 1], 20), None);
        assert!(check_mode(b"s".as_bstr(), 0o140000).is_err());
        assert!(check_mode(b"x".as_bstr(), 0o20000).is_err());
        assert!(check_mode(b"t".as_bstr(), 0o40000).is_ok());
        let e = check_mode(b"dir/sock".as_bstr(), 0o140000)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unsupported git tree entry mode 140000") && e.contains("dir/sock"),
            "{e}"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod walk_tests {
    use super::*;

    /// A chain of `levels` single-entry trees named `d`, ending in a file.
    fn chain(repo: &gix::Repository, levels: usize) -> ObjectId {
        use gix::objs::Write as _;
        let write = |mode: &str, name: &[u8], id: ObjectId| {
            let mut buf = format!("{mode} ").into_bytes();
            buf.extend_from_slice(name);
            buf.push(0);
            buf.extend_from_slice(id.as_bytes());
            repo.objects.write_buf(gix::objs::Kind::Tree, &buf).unwrap()
        };
        let blob = repo.objects.write_buf(gix::objs::Kind::Blob, b"x").unwrap();
        let mut tree = write("100644", b"f", blob);
        for _ in 0..levels {
            tree = write("40000", b"d", tree);
        }
        tree
    }

    #[test]
    fn totals_walk_deep_trees_without_recursion_and_refuse_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let repo = gix::init_bare(dir.path()).unwrap();
        let mut reader = TreeReader::new(&repo, u64::MAX);
        let ok = chain(&repo, MAX_PATH_BYTES / 2 - 1);
        assert_eq!(reader.totals(ok, &mut HashMap::new()).unwrap(), (1, 1));
        let deep = chain(&repo, 5_000);
        let err = reader.totals(deep, &mut HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("nests deeper than"), "{err}");
        // The listing stops at the path length, the diff too.
        assert!(
            reader
                .list(deep)
                .unwrap_err()
                .to_string()
                .contains("longer than 4096")
        );
        let err = reader.diff(None, Some(deep)).unwrap_err();
        assert!(err.to_string().contains("longer than 4096"), "{err}");
    }
}
