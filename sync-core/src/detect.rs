//! Change detection: from dirty paths to a [`Checkpoint`].
//!
//! The watcher only says *where* something may have changed. [`detect`]
//! looks: it `lstat`s each dirty path and compares it with the *previous*
//! state, which is the index (what the backend confirmed) overlaid with the
//! changes still waiting to be pushed. A file is hashed only when its size,
//! mtime or mode differ from that previous state. A dirty directory is walked
//! (this is how files created inside a just-created directory, or a directory
//! moved into the tree, are found) and every previously known path below a
//! vanished one becomes a delete. A full rescan is the same comparison over
//! the whole tree.
//!
//! A file named in the dirty set itself (inotify reported an event for it)
//! is always hashed: a tool that restores size and mtime after changing
//! content (`rsync -t`, `cp -p`, some sync clients) would otherwise go
//! unnoticed. Files found by walking are hashed only when size, mtime or
//! mode moved, unless [`detect_with`]'s `hash_all` asks for every one. So content
//! changed behind tether's back *while it was not running*, with size and
//! mtime restored, is found only by a start with `hash_all` (the
//! `--verify-hashes` option) — the same limitation as rsync's and restic's
//! default change detection.
//!
//! Outcomes per path: an upsert or delete in the checkpoint; an index-only
//! refresh when only the mtime moved (an identical save); or "unstable" when
//! the file kept changing while it was hashed (it stays dirty and is looked at
//! again on the next round).

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use crate::checkpoint::{Change, Checkpoint};
use crate::entry::{Entry, FileMeta, LocalKind, LocalStat, Meta};
use crate::index::Index;
use crate::path::RelPath;
use crate::rules::IgnoreRules;
use crate::scan;

/// Paths that may have changed since the last look.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirtySet {
    /// Individual paths.
    pub paths: BTreeSet<RelPath>,
    /// The whole tree must be compared (start-up, inotify overflow, polling).
    pub rescan: bool,
}

impl DirtySet {
    /// True when there is nothing to look at.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && !self.rescan
    }

    /// Number of dirty paths (a pending rescan counts as one).
    pub fn len(&self) -> usize {
        self.paths.len() + usize::from(self.rescan)
    }
}

/// What [`detect`] found.
#[derive(Debug, Default)]
pub struct Detected {
    /// Changes to push.
    pub checkpoint: Checkpoint,
    /// Entries whose content is unchanged but whose mtime moved: written to
    /// the index without a push.
    pub refreshed: Vec<Entry>,
    /// Files that kept changing while being hashed; still dirty.
    pub unstable: Vec<RelPath>,
}

struct Detector<'a> {
    root: &'a Path,
    rules: &'a IgnoreRules,
    index: &'a Index,
    pending: &'a Checkpoint,
    on_dir: &'a mut dyn FnMut(&Path),
    dirty: &'a DirtySet,
    hash_all: bool,
    out: Detected,
    seen: HashSet<RelPath>,
}

/// Compares `dirty` paths of the tree at `root` with the index overlaid with
/// `pending` (changes built earlier but not yet confirmed). `on_dir` is called
/// for every directory walked, before it is listed, so the caller can watch it.
pub fn detect(
    root: &Path,
    rules: &IgnoreRules,
    index: &Index,
    pending: &Checkpoint,
    dirty: &DirtySet,
    on_dir: &mut dyn FnMut(&Path),
) -> Detected {
    detect_with(root, rules, index, pending, dirty, false, on_dir)
}

/// [`detect`], hashing every file looked at when `hash_all` is true, even
/// those whose size, mtime and mode match the previous state (a verifying
/// rescan, `--verify-hashes`).
pub fn detect_with(
    root: &Path,
    rules: &IgnoreRules,
    index: &Index,
    pending: &Checkpoint,
    dirty: &DirtySet,
    hash_all: bool,
    on_dir: &mut dyn FnMut(&Path),
) -> Detected {
    let mut d = Detector {
        root,
        rules,
        index,
        pending,
        on_dir,
        dirty,
        hash_all,
        out: Detected::default(),
        seen: HashSet::new(),
    };
    if dirty.rescan {
        d.walk_and_compare(None);
    }
    for p in &dirty.paths {
        d.look_at(p);
    }
    d.out
}

impl Detector<'_> {
    /// The state the backend will hold once pending changes are pushed.
    fn previous(&self, p: &RelPath) -> Option<&Meta> {
        match self.pending.get(p) {
            Some(Change::Upsert(m)) => Some(m),
            Some(Change::Delete) => None,
            None => self.index.get(p),
        }
    }

    /// Every path known (confirmed or pending) strictly below `dir`.
    fn known_under(&self, dir: Option<&RelPath>) -> Vec<RelPath> {
        let below = |p: &RelPath| dir.is_none_or(|d| p.starts_with(d) && p != d);
        let confirmed: Box<dyn Iterator<Item = (&RelPath, &Meta)>> = match dir {
            Some(d) => Box::new(self.index.under(d)),
            None => Box::new(self.index.iter()),
        };
        let mut out: Vec<RelPath> = confirmed
            .filter(|(p, _)| !matches!(self.pending.get(p), Some(Change::Delete)))
            .map(|(p, _)| p.clone())
            .collect();
        out.extend(
            self.pending
                .iter()
                .filter(|(p, c)| {
                    matches!(c, Change::Upsert(_)) && below(p) && self.index.get(p).is_none()
                })
                .map(|(p, _)| p.clone()),
        );
        out
    }

    fn look_at(&mut self, p: &RelPath) {
        if self.seen.contains(p) {
            return;
        }
        if self.rules.is_ignored(p, false) {
            return;
        }
        if p.repository_component().is_some() {
            // Never synced (see `path::is_repository_component`); what the
            // index still holds below it goes at the next rescan.
            return;
        }
        let full = p.to_path(self.root);
        match scan::lstat(&full) {
            Ok(None) => self.delete_tree(p),
            Ok(Some(st)) => {
                if st.kind == LocalKind::Dir {
                    if self.rules.is_ignored(p, true) {
                        return;
                    }
                    self.compare(p, st);
                    self.walk_and_compare(Some(p));
                } else {
                    self.compare(p, st);
                }
            }
            Err(e) => {
                tracing::warn!(path = %p, error = %e, "cannot stat; will look again");
                self.out.unstable.push(p.clone());
            }
        }
    }

    fn walk_and_compare(&mut self, dir: Option<&RelPath>) {
        let listed = scan::walk(self.root, self.rules, dir, self.on_dir);
        for (p, st) in listed {
            self.compare(&p, st);
        }
        // Whatever was known below `dir` and not seen now is gone.
        let gone: Vec<RelPath> = self
            .known_under(dir)
            .into_iter()
            .filter(|p| !self.seen.contains(p))
            .collect();
        for p in gone {
            self.emit_delete(p);
        }
    }

    fn delete_tree(&mut self, p: &RelPath) {
        for q in self.known_under(Some(p)) {
            self.emit_delete(q);
        }
        if self.previous(p).is_some() {
            self.emit_delete(p.clone());
        }
        self.seen.insert(p.clone());
    }

    fn emit_delete(&mut self, p: RelPath) {
        if self.previous(&p).is_some() {
            self.out.checkpoint.delete(p.clone());
        }
        self.seen.insert(p);
    }

    fn emit_upsert(&mut self, p: &RelPath, meta: Meta) {
        if self.previous(p) != Some(&meta) {
            self.out.checkpoint.upsert(p.clone(), meta);
        }
    }

    fn compare(&mut self, p: &RelPath, st: LocalStat) {
        if !self.seen.insert(p.clone()) {
            return;
        }
        let full = p.to_path(self.root);
        match st.kind {
            LocalKind::Dir => self.emit_upsert(p, Meta::dir(st.mode)),
            LocalKind::Symlink => match scan::read_link_text(&full) {
                Ok(target) => self.emit_upsert(p, Meta::Symlink { target }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.delete_tree(p),
                Err(e) => tracing::warn!(path = %p, error = %e, "symlink not synced"),
            },
            LocalKind::Special => {
                tracing::warn!(path = %p, "socket, FIFO or device; not synced");
                if self.previous(p).is_some() {
                    self.out.checkpoint.delete(p.clone());
                }
            }
            LocalKind::File => self.compare_file(p, st, &full),
        }
    }

    fn compare_file(&mut self, p: &RelPath, st: LocalStat, full: &Path) {
        let prev = self.previous(p).and_then(Meta::as_file).cloned();
        let forced = self.hash_all || self.dirty.paths.contains(p);
        if let Some(f) = &prev
            && f.size == st.size
            && f.mtime_ns == st.mtime_ns
            && f.mode == st.mode
            && !forced
        {
            return; // unchanged, no need to read it
        }
        let hashed = match scan::hash_file(full) {
            Ok(h) => h,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.delete_tree(p);
                return;
            }
            Err(e) if scan::is_kept_changing(&e) => {
                self.out.unstable.push(p.clone());
                return;
            }
            Err(e) => {
                tracing::warn!(path = %p, error = %e, "cannot read; will look again");
                self.out.unstable.push(p.clone());
                return;
            }
        };
        let meta = FileMeta {
            size: hashed.stat.size,
            mtime_ns: hashed.stat.mtime_ns,
            mode: hashed.stat.mode,
            hash: hashed.hash,
        };
        if prev.as_ref() == Some(&meta) {
            return; // hashed because forced, and truly unchanged
        }
        let confirmed_same_content = self.pending.get(p).is_none()
            && prev
                .as_ref()
                .is_some_and(|f| f.hash == meta.hash && f.size == meta.size && f.mode == meta.mode);
        if confirmed_same_content {
            self.out.refreshed.push(Entry {
                path: p.clone(),
                meta: Meta::File(meta),
            });
        } else {
            self.emit_upsert(p, Meta::File(meta));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::IgnoreConfig;
    use std::fs;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    struct Fx {
        _tmp: tempfile::TempDir,
        root: std::path::PathBuf,
        index: Index,
        rules: IgnoreRules,
    }

    fn fx() -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        let index = Index::open(&tmp.path().join("state")).unwrap();
        let rules = IgnoreRules::load(&root, &IgnoreConfig::default()).unwrap();
        Fx {
            _tmp: tmp,
            root,
            index,
            rules,
        }
    }

    impl Fx {
        fn run(&self, pending: &Checkpoint, dirty: DirtySet) -> Detected {
            detect(
                &self.root,
                &self.rules,
                &self.index,
                pending,
                &dirty,
                &mut |_| {},
            )
        }
        fn rescan(&self) -> Detected {
            self.run(
                &Checkpoint::new(),
                DirtySet {
                    paths: BTreeSet::new(),
                    rescan: true,
                },
            )
        }
        fn dirty(&self, paths: &[&str]) -> Detected {
            self.run(
                &Checkpoint::new(),
                DirtySet {
                    paths: paths.iter().map(|s| p(s)).collect(),
                    rescan: false,
                },
            )
        }
        fn confirm(&mut self, d: &Detected) {
            self.index.apply(&d.checkpoint, None).unwrap();
        }
    }

    fn ops(c: &Checkpoint) -> Vec<String> {
        c.iter()
            .map(|(p, ch)| match ch {
                Change::Upsert(Meta::File(_)) => format!("+{p}"),
                Change::Upsert(Meta::Dir { .. }) => format!("+{p}/"),
                Change::Upsert(Meta::Symlink { target }) => format!("+{p}->{target}"),
                Change::Delete => format!("-{p}"),
            })
            .collect()
    }

    #[test]
    fn rescan_finds_new_changed_and_deleted() {
        let mut f = fx();
        fs::create_dir_all(f.root.join("d/e")).unwrap();
        fs::write(f.root.join("d/e/x"), b"1").unwrap();
        fs::write(f.root.join("y"), b"1").unwrap();
        std::os::unix::fs::symlink("y", f.root.join("l")).unwrap();
        let d = f.rescan();
        assert_eq!(
            ops(&d.checkpoint),
            ["+d/", "+d/e/", "+d/e/x", "+l->y", "+y"]
        );
        f.confirm(&d);
        assert!(
            f.rescan().checkpoint.is_empty(),
            "second scan found changes"
        );

        fs::write(f.root.join("y"), b"22").unwrap();
        fs::remove_dir_all(f.root.join("d")).unwrap();
        let d = f.rescan();
        assert_eq!(ops(&d.checkpoint), ["-d", "-d/e", "-d/e/x", "+y"]);
    }

    #[test]
    fn new_directory_with_content_is_walked() {
        let mut f = fx();
        f.confirm(&f.rescan());
        fs::create_dir_all(f.root.join("new/sub")).unwrap();
        fs::write(f.root.join("new/sub/a"), b"a").unwrap();
        let d = f.dirty(&["new"]);
        assert_eq!(ops(&d.checkpoint), ["+new/", "+new/sub/", "+new/sub/a"]);
    }

    #[test]
    fn rename_of_a_directory_gives_deletes_and_upserts() {
        let mut f = fx();
        fs::create_dir_all(f.root.join("a")).unwrap();
        fs::write(f.root.join("a/f"), b"f").unwrap();
        f.confirm(&f.rescan());
        fs::rename(f.root.join("a"), f.root.join("b")).unwrap();
        let d = f.dirty(&["a", "b"]);
        assert_eq!(ops(&d.checkpoint), ["-a", "-a/f", "+b/", "+b/f"]);
    }

    #[test]
    fn identical_save_only_refreshes_the_index() {
        let mut f = fx();
        fs::write(f.root.join("n"), b"same").unwrap();
        f.confirm(&f.rescan());
        // Rewrite with identical bytes but a different mtime.
        fs::write(f.root.join("n"), b"same").unwrap();
        filetime::set_file_mtime(f.root.join("n"), filetime::FileTime::from_unix_time(1, 0))
            .unwrap();
        let d = f.dirty(&["n"]);
        assert!(d.checkpoint.is_empty());
        assert_eq!(d.refreshed.len(), 1);
    }

    #[test]
    fn revert_while_a_push_is_pending_is_detected() {
        let mut f = fx();
        fs::write(f.root.join("r"), b"v1").unwrap();
        f.confirm(&f.rescan());
        // v2 was built into a checkpoint whose push failed...
        fs::write(f.root.join("r"), b"v2").unwrap();
        let pending = f.dirty(&["r"]).checkpoint;
        assert_eq!(ops(&pending), ["+r"]);
        // ...then the user reverted to v1: the revert must be pushed too.
        fs::write(f.root.join("r"), b"v1").unwrap();
        let d = f.run(
            &pending,
            DirtySet {
                paths: [p("r")].into(),
                rescan: false,
            },
        );
        let Some(Change::Upsert(Meta::File(m))) = d.checkpoint.get(&p("r")) else {
            panic!("revert not detected: {:?}", ops(&d.checkpoint));
        };
        assert_eq!(m.hash, crate::entry::ContentHash::of(b"v1"));
    }

    #[test]
    fn ignored_paths_are_not_synced() {
        let mut f = fx();
        fs::create_dir_all(f.root.join(".ipynb_checkpoints")).unwrap();
        fs::write(f.root.join(".ipynb_checkpoints/a"), b"a").unwrap();
        fs::write(f.root.join("b.swp"), b"b").unwrap();
        assert!(f.rescan().checkpoint.is_empty());
        assert!(
            f.dirty(&[".ipynb_checkpoints", "b.swp"])
                .checkpoint
                .is_empty()
        );
        f.confirm(&f.rescan());
    }
}
