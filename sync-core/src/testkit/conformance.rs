//! The backend conformance suite.
//!
//! Every backend's tests implement [`Fixture`] for their real server and
//! call these functions, one `#[tokio::test]` each (or [`run_all`]). Each
//! check builds real files in a temporary directory, turns them into
//! checkpoints the way the engine does ([`detect()`](crate::detect()) against a
//! scratch [`Index`]), pushes them and restores into fresh directories.
//!
//! What is compared depends on the backend's [`Capabilities`]: empty
//! directories only if it keeps them, full permission bits or just the
//! executable bit, mtimes only if it keeps them. Directory modes are always
//! compared (for directories that survive).
//!
//! [`umask_round_trip`] changes the process's umask; like [`large_file`],
//! run it in a test binary of its own.
//!
//! [`large_file`] measures the process's peak resident memory around one
//! push and restore of a 200 MiB file; run it in a test binary of its own
//! (a file under `tests/` with no other test) so other tests' allocations do
//! not count.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use tempfile::TempDir;

use crate::backend::{Backend, BackendError, Capabilities, PushReceipt};
use crate::checkpoint::Checkpoint;
use crate::detect::{DirtySet, detect};
use crate::entry::{ContentHash, LocalKind, LocalStat};
use crate::index::Index;
use crate::path::RelPath;
use crate::restore::{ExistingPolicy, RestoreOptions};
use crate::rules::IgnoreRules;
use crate::source::Source;

/// One entry of a planted remote state ([`Hostile::Entries`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planted {
    /// A regular file with this content, recorded with this mode (in the
    /// format's own way: manifest, index, object metadata, git's modes file
    /// and tree mode).
    File {
        /// The stored name.
        path: String,
        /// Its content.
        content: Vec<u8>,
        /// The recorded mode, special bits included as given.
        mode: u32,
    },
    /// A directory recorded with this mode.
    Dir {
        /// The stored name.
        path: String,
        /// The recorded mode.
        mode: u32,
    },
}

/// A hostile remote state to plant, for [`hostile_state_is_refused`],
/// [`special_mode_bits_are_not_restored`] and
/// [`repository_directories_are_not_restored`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hostile {
    /// A regular file whose stored name is this string (`../x`, `/abs`,
    /// `a/../../x`, a name with NUL or backslash).
    Name(String),
    /// A symlink named `link` pointing at `target` (an absolute directory
    /// outside the destination), followed by a regular file `entry` that
    /// lies under the link (`link/x`).
    SymlinkThenEntry {
        /// The symlink's name.
        link: String,
        /// Where it points.
        target: String,
        /// A file under it.
        entry: String,
    },
    /// These entries, exactly as given (names are valid paths; the restore
    /// is expected to succeed but neutralise them).
    Entries(Vec<Planted>),
}

/// How a backend's tests give the suite remotes to work with.
#[async_trait]
pub trait Fixture: Send + Sync {
    /// A backend on a fresh, empty remote location (new prefix, new repo).
    async fn fresh(&self) -> Arc<dyn Backend>;

    /// A backend on a fresh remote whose newest state contains a regular
    /// file `ok.txt` (content `ok`) and the given hostile entry, written
    /// directly in the backend's storage format, bypassing validation.
    /// Returns `None` only if the format cannot represent that case at all
    /// (say why in the backend's tests).
    async fn plant_hostile(&self, case: &Hostile) -> Option<Arc<dyn Backend>>;
}

/// Builds trees, pushes them like the engine does, and restores them.
pub struct Workbench {
    /// Holds every temporary directory of the check.
    pub tmp: TempDir,
    /// The source tree.
    pub src: PathBuf,
    index: Index,
    backend: Arc<dyn Backend>,
}

impl Workbench {
    /// A workbench pushing to `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let src = tmp.path().join("src");
        fs::create_dir(&src).expect("create src");
        let index = Index::open(&tmp.path().join("state")).expect("index");
        Workbench {
            tmp,
            src,
            index,
            backend,
        }
    }

    /// Writes a file (creating parents) in the source tree.
    pub fn write(&self, rel: &str, content: &[u8]) {
        let p = self.src.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, content).expect("write");
    }

    /// The checkpoint the engine would push now (full comparison), based,
    /// as the engine's are, on the head the index last recorded.
    pub fn checkpoint(&self) -> Checkpoint {
        let dirty = DirtySet {
            paths: Default::default(),
            rescan: true,
        };
        let mut c = detect(
            &self.src,
            &IgnoreRules::none(),
            &self.index,
            &Checkpoint::new(),
            &dirty,
            &mut |_| {},
        )
        .checkpoint;
        c.set_base(self.index.remote_head().map(str::to_owned));
        c
    }

    /// Pushes `c`, records it in the scratch index and returns the receipt.
    pub async fn push(&mut self, c: &Checkpoint) -> PushReceipt {
        self.try_push(c)
            .await
            .unwrap_or_else(|e| panic!("push to {} failed: {e}", self.backend.describe()))
    }

    /// Pushes `c` and, when it succeeds, records it in the scratch index
    /// (a failed push leaves the index as it was, as the engine does).
    pub async fn try_push(&mut self, c: &Checkpoint) -> Result<PushReceipt, BackendError> {
        let receipt = self.backend.push(c, &Source::new(&self.src)).await?;
        self.index
            .apply(c, receipt.head.clone())
            .expect("index apply");
        Ok(receipt)
    }

    /// Pushes whatever changed in the source tree.
    pub async fn sync(&mut self) -> Checkpoint {
        let c = self.checkpoint();
        self.push(&c).await;
        c
    }

    /// Restores the newest state into a new directory and returns it.
    pub async fn restore_new(&self, name: &str) -> PathBuf {
        let dest = self.tmp.path().join(name);
        self.backend
            .restore(&dest, &RestoreOptions::default())
            .await
            .unwrap_or_else(|e| panic!("restore from {} failed: {e}", self.backend.describe()));
        dest
    }

    /// Asserts that `dest` holds what the source tree holds, as far as the
    /// backend's capabilities go.
    pub fn assert_same(&self, dest: &Path) {
        let caps = self.backend.capabilities();
        let want = tree(&self.src, caps);
        let got = tree(dest, caps);
        if want != got {
            let only_src: Vec<_> = want
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .collect();
            let only_dest: Vec<_> = got
                .iter()
                .filter(|(k, v)| want.get(*k) != Some(v))
                .collect();
            panic!(
                "{}: restored tree differs.\n  expected (missing or different in restore): {only_src:#?}\n  restored (unexpected): {only_dest:#?}",
                self.backend.describe()
            );
        }
    }
}

/// A comparable description of one node of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory and its permission bits (listed if it holds a file or
    /// symlink somewhere below, or if the backend keeps empty ones).
    Dir(u32),
    /// A regular file: hash, mode (or just the exec bit), mtime (if kept).
    File(ContentHash, u32, Option<i64>),
    /// A symlink and its target.
    Symlink(String),
}

/// Describes the tree at `root` for comparison under `caps`.
pub fn tree(root: &Path, caps: Capabilities) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut dirs = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for ent in fs::read_dir(&dir).expect("read_dir") {
            let ent = ent.expect("dir entry");
            let full = ent.path();
            let rel = full
                .strip_prefix(root)
                .expect("prefix")
                .to_string_lossy()
                .into_owned();
            let st = LocalStat::from_metadata(&fs::symlink_metadata(&full).expect("lstat"));
            match st.kind {
                LocalKind::Dir => {
                    dirs.push((rel, st.mode));
                    stack.push(full);
                }
                LocalKind::File => {
                    let content = fs::read(&full).expect("read");
                    let mode = if caps.full_mode {
                        st.mode
                    } else {
                        st.mode & 0o100
                    };
                    out.insert(
                        rel,
                        Node::File(
                            ContentHash::of(&content),
                            mode,
                            caps.mtime.then_some(st.mtime_ns),
                        ),
                    );
                }
                LocalKind::Symlink => {
                    let t = fs::read_link(&full)
                        .expect("readlink")
                        .to_string_lossy()
                        .into_owned();
                    out.insert(rel, Node::Symlink(t));
                }
                LocalKind::Special => {}
            }
        }
    }
    for (rel, mode) in dirs {
        let below = format!("{rel}/");
        let holds_content = out
            .range(below.clone()..)
            .take_while(|(k, _)| k.starts_with(&below))
            .any(|(_, n)| !matches!(n, Node::Dir(_)));
        if caps.empty_dirs || holds_content {
            out.insert(rel, Node::Dir(mode));
        }
    }
    out
}

/// The mode of `path` (not following a symlink), with special bits.
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn build_varied_tree(w: &Workbench) {
    w.write("notebooks/analysis.ipynb", br#"{"cells": []}"#);
    w.write("notebooks/deep/er/still/data.csv", b"a,b\n1,2\n");
    w.write("empty-file", b"");
    w.write(
        "unicode \u{e9}\u{e8} \u{65e5}\u{672c}/na\u{ef}ve file.txt",
        "caf\u{e9}".as_bytes(),
    );
    w.write("with spaces/a b c.md", b"# title\n");
    w.write("bin/run.sh", b"#!/bin/sh\necho hi\n");
    let run = w.src.join("bin/run.sh");
    let mut perm = fs::metadata(&run).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    fs::set_permissions(&run, perm).expect("chmod");
    fs::create_dir_all(w.src.join("empty/dir")).expect("mkdir");
    std::os::unix::fs::symlink("../notebooks/analysis.ipynb", w.src.join("bin/link"))
        .expect("symlink");
}

/// A varied tree round-trips: nested directories, empty directories (if
/// kept), a 0-byte file, unicode and spaces in names, an executable, and a
/// symlink inside the tree.
pub async fn round_trip(fixture: &dyn Fixture) {
    let mut w = Workbench::new(fixture.fresh().await);
    build_varied_tree(&w);
    w.sync().await;
    let dest = w.restore_new("restored").await;
    w.assert_same(&dest);
    let head = w.backend.head().await.expect("head");
    assert!(
        head.is_some(),
        "{}: no head after a push",
        w.backend.describe()
    );
}

/// Deletes (of files and whole subtrees) and renames (of files and
/// directories) propagate.
pub async fn deletes_and_renames(fixture: &dyn Fixture) {
    let mut w = Workbench::new(fixture.fresh().await);
    build_varied_tree(&w);
    w.write("old-name.txt", b"moving");
    w.write("gone/sub/x", b"x");
    w.sync().await;
    fs::rename(w.src.join("old-name.txt"), w.src.join("new-name.txt")).expect("rename");
    fs::rename(w.src.join("notebooks"), w.src.join("notes")).expect("rename dir");
    fs::remove_dir_all(w.src.join("gone")).expect("rm -r");
    fs::remove_file(w.src.join("empty-file")).expect("rm");
    let c = w.sync().await;
    assert!(c.deletes().count() >= 4, "expected deletes in {c:?}");
    let dest = w.restore_new("restored").await;
    w.assert_same(&dest);
    assert!(!dest.join("old-name.txt").exists());
    assert!(!dest.join("gone").exists());
}

/// Pushing the same checkpoint twice changes nothing.
pub async fn idempotent_push(fixture: &dyn Fixture) {
    let mut w = Workbench::new(fixture.fresh().await);
    build_varied_tree(&w);
    let c = w.checkpoint();
    w.push(&c).await;
    w.push(&c).await;
    let dest = w.restore_new("restored").await;
    w.assert_same(&dest);
    // And a retried delete of something already gone is fine too.
    fs::remove_file(w.src.join("with spaces/a b c.md")).expect("rm");
    let d = w.checkpoint();
    w.push(&d).await;
    w.push(&d).await;
    let dest = w.restore_new("restored2").await;
    w.assert_same(&dest);
}

/// A non-empty destination follows the chosen policy.
pub async fn restore_policies(fixture: &dyn Fixture) {
    let backend = fixture.fresh().await;
    let mut w = Workbench::new(Arc::clone(&backend));
    w.write("shared.txt", b"remote version");
    w.write("remote-only.txt", b"r");
    w.sync().await;
    let dest = w.tmp.path().join("dest");
    fs::create_dir(&dest).expect("mkdir");
    fs::write(dest.join("shared.txt"), b"local version").expect("write");
    fs::write(dest.join("local-only.txt"), b"l").expect("write");

    // Fail: refused, nothing touched.
    let err = backend
        .restore(
            &dest,
            &RestoreOptions {
                at: None,
                existing: ExistingPolicy::Fail,
                ..Default::default()
            },
        )
        .await
        .expect_err("restore into a non-empty directory must fail by default");
    assert!(
        err.to_string().contains("not empty"),
        "unclear error: {err}"
    );
    assert_eq!(
        fs::read(dest.join("shared.txt")).expect("read"),
        b"local version"
    );
    assert!(!dest.join("remote-only.txt").exists());

    // KeepNewer: a local file newer than the remote keeps its content.
    let future = filetime::FileTime::from_unix_time(4_000_000_000, 0);
    filetime::set_file_mtime(dest.join("shared.txt"), future).expect("mtime");
    let report = backend
        .restore(
            &dest,
            &RestoreOptions {
                at: None,
                existing: ExistingPolicy::KeepNewer,
                ..Default::default()
            },
        )
        .await
        .expect("keep-newer restore");
    let caps = backend.capabilities();
    if caps.mtime {
        assert_eq!(
            fs::read(dest.join("shared.txt")).expect("read"),
            b"local version"
        );
        assert_eq!(report.kept_local.len(), 1, "{report:?}");
    }
    assert_eq!(fs::read(dest.join("remote-only.txt")).expect("read"), b"r");

    // Overwrite: remote wins, local-only files stay.
    backend
        .restore(
            &dest,
            &RestoreOptions {
                at: None,
                existing: ExistingPolicy::Overwrite,
                ..Default::default()
            },
        )
        .await
        .expect("overwrite restore");
    assert_eq!(
        fs::read(dest.join("shared.txt")).expect("read"),
        b"remote version"
    );
    assert_eq!(fs::read(dest.join("local-only.txt")).expect("read"), b"l");
}

/// A subpath restore ([`RestoreOptions::paths`]) writes the selected
/// paths and what lies below them, and touches nothing else: not other
/// files, not local-only files, not the mode of a selected path's parent.
/// A path the state does not hold is `NotFound`, naming it.
pub async fn subpath_restore(fixture: &dyn Fixture) {
    use std::os::unix::fs::PermissionsExt;
    let backend = fixture.fresh().await;
    let mut w = Workbench::new(Arc::clone(&backend));
    w.write("work/nb/a.ipynb", b"remote a");
    w.write("work/nb/deep/b.txt", b"remote b");
    w.write("work/other.txt", b"remote other");
    w.write("top.txt", b"remote top");
    w.sync().await;
    let dest = w.tmp.path().join("dest");
    fs::create_dir_all(dest.join("work/nb")).expect("mkdir");
    fs::write(dest.join("work/nb/a.ipynb"), b"broken a").expect("write");
    fs::write(dest.join("work/nb/local.txt"), b"local").expect("write");
    fs::write(dest.join("work/other.txt"), b"local other").expect("write");
    fs::write(dest.join("top.txt"), b"local top").expect("write");
    fs::set_permissions(dest.join("work"), fs::Permissions::from_mode(0o750)).expect("chmod");
    let only = |paths: &[&str]| RestoreOptions {
        existing: ExistingPolicy::Overwrite,
        paths: paths
            .iter()
            .map(|p| RelPath::new(*p).expect("path"))
            .collect(),
        ..Default::default()
    };
    backend
        .restore(&dest, &only(&["work/nb"]))
        .await
        .unwrap_or_else(|e| panic!("{}: subpath restore: {e}", backend.describe()));
    let read = |p: &str| fs::read(dest.join(p)).expect("read");
    assert_eq!(
        read("work/nb/a.ipynb"),
        b"remote a",
        "{}",
        backend.describe()
    );
    assert_eq!(read("work/nb/deep/b.txt"), b"remote b");
    assert_eq!(read("work/nb/local.txt"), b"local");
    assert_eq!(
        read("work/other.txt"),
        b"local other",
        "{}: restored outside the path",
        backend.describe()
    );
    assert_eq!(read("top.txt"), b"local top");
    let mode = fs::metadata(dest.join("work"))
        .expect("stat")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        mode,
        0o750,
        "{}: the parent's mode was changed",
        backend.describe()
    );

    // One file, into an empty directory: its parents are created.
    let single = w.tmp.path().join("single");
    backend
        .restore(&single, &only(&["work/other.txt"]))
        .await
        .expect("one file");
    assert_eq!(
        fs::read(single.join("work/other.txt")).expect("read"),
        b"remote other"
    );
    assert!(!single.join("top.txt").exists());
    assert!(!single.join("work/nb").exists());

    // A path that is not there: NotFound, naming it; nothing written.
    let none = w.tmp.path().join("none");
    let err = backend
        .restore(&none, &only(&["work/nb", "work/missing.txt"]))
        .await
        .expect_err("a missing path must be refused");
    assert!(
        matches!(err, BackendError::NotFound { .. })
            && err.to_string().contains("work/missing.txt"),
        "{}: {err}",
        backend.describe()
    );
    assert!(
        !none.join("work").exists(),
        "{}: wrote before refusing",
        backend.describe()
    );
    // A prefix of a name is not a path: `work/n` does not select `work/nb`.
    let err = backend
        .restore(&none, &only(&["work/n"]))
        .await
        .expect_err("a partial name selects nothing");
    assert!(matches!(err, BackendError::NotFound { .. }), "{err}");
}

/// [`Backend::list`] shows what a restore would write, with sizes and
/// content ids that tell changed files from unchanged ones across
/// checkpoints; an unknown checkpoint is refused.
pub async fn listing(fixture: &dyn Fixture) {
    use crate::restore::PlanKind;
    let backend = fixture.fresh().await;
    let empty = backend.list(None).await.expect("listing an empty remote");
    assert!(empty.entries.is_empty() && empty.id.is_none(), "{empty:?}");
    let mut w = Workbench::new(Arc::clone(&backend));
    w.write("nb/a.ipynb", b"version 1");
    w.write("nb/b.txt", b"stays");
    w.write("top.txt", b"12345");
    std::os::unix::fs::symlink("nb/b.txt", w.src.join("link")).expect("symlink");
    let c = w.checkpoint();
    let first = w.push(&c).await.head;
    w.write("nb/a.ipynb", b"version 2");
    w.sync().await;
    let now = backend.list(None).await.expect("list");
    let describe = backend.describe();
    let paths: Vec<(&str, PlanKind)> = now
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e.kind))
        .collect();
    for want in [
        ("nb", PlanKind::Dir),
        ("nb/a.ipynb", PlanKind::File),
        ("nb/b.txt", PlanKind::File),
        ("top.txt", PlanKind::File),
        ("link", PlanKind::Symlink),
    ] {
        assert!(
            paths.contains(&want),
            "{describe}: {want:?} not in {paths:?}"
        );
    }
    assert_eq!(paths.len(), 5, "{describe}: {paths:?}");
    let get = |l: &crate::backend::Listing, p: &str| {
        l.entries
            .iter()
            .find(|e| e.path.as_str() == p)
            .cloned()
            .unwrap_or_else(|| panic!("{describe}: {p} not listed"))
    };
    assert_eq!(get(&now, "top.txt").size, Some(5), "{describe}");
    assert_eq!(get(&now, "link").target.as_deref(), Some("nb/b.txt"));
    assert!(get(&now, "nb/a.ipynb").content.is_some(), "{describe}");
    if backend.capabilities().history {
        let then = backend
            .list(first.as_deref())
            .await
            .unwrap_or_else(|e| panic!("{describe}: listing {first:?}: {e}"));
        assert_eq!(then.id, first);
        assert_ne!(
            get(&then, "nb/a.ipynb").content,
            get(&now, "nb/a.ipynb").content,
            "{describe}: an edited file keeps its content id"
        );
        assert_eq!(
            get(&then, "nb/b.txt").content,
            get(&now, "nb/b.txt").content,
            "{describe}: an unchanged file changed its content id"
        );
        let err = backend
            .list(Some("0000000000000-0000000000000000"))
            .await
            .expect_err("an unknown checkpoint must be refused");
        assert!(
            matches!(err, BackendError::NotFound { .. }),
            "{describe}: {err}"
        );
    }
}

/// The hostile cases every backend must refuse.
pub fn hostile_cases(outside: &Path) -> Vec<Hostile> {
    vec![
        Hostile::Name("../x".into()),
        Hostile::Name("/etc/tether-conformance-x".into()),
        Hostile::Name("a/../../x".into()),
        Hostile::Name("a\0b".into()),
        Hostile::Name("a\\..\\..\\x".into()),
        Hostile::SymlinkThenEntry {
            link: "l".into(),
            target: outside.display().to_string(),
            entry: "l/x".into(),
        },
    ]
}

/// Hostile remote state is refused with a clear error and nothing is
/// written outside the destination.
pub async fn hostile_state_is_refused(fixture: &dyn Fixture) {
    let tmp = tempfile::tempdir().expect("tmp");
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    let mut planted = 0;
    for (i, case) in hostile_cases(&outside).into_iter().enumerate() {
        let Some(backend) = fixture.plant_hostile(&case).await else {
            eprintln!("{case:?}: not representable in this backend's format");
            continue;
        };
        planted += 1;
        let dest = tmp.path().join(format!("case{i}/a/b/dest"));
        let result = backend.restore(&dest, &RestoreOptions::default()).await;
        let err = match result {
            Err(e) => e,
            Ok(r) => panic!(
                "{}: hostile state {case:?} was restored: {r:?}",
                backend.describe()
            ),
        };
        let msg = err.to_string();
        assert!(msg.len() > 10, "unclear error for {case:?}: {msg}");
        // Nothing next to the destination, nothing in `outside`, no /etc file.
        let case_root = tmp.path().join(format!("case{i}"));
        let mut stray = Vec::new();
        for dir in [
            case_root.clone(),
            case_root.join("a"),
            case_root.join("a/b"),
        ] {
            for ent in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                if !matches!(name.as_str(), "a" | "b" | "dest") {
                    stray.push(ent.path());
                }
            }
        }
        assert!(
            stray.is_empty(),
            "{case:?} wrote outside the destination: {stray:?}"
        );
        assert_eq!(
            fs::read_dir(&outside).expect("ls").count(),
            0,
            "{case:?} wrote through a symlink"
        );
        assert!(!Path::new("/etc/tether-conformance-x").exists());
        assert!(!tmp.path().join("x").exists());
    }
    assert!(
        planted >= 3,
        "the fixture planted only {planted} hostile cases"
    );
}

/// Builds the tree [`modes_round_trip`] checks: a `0600` key in a `0700`
/// `.ssh`, a `0640` file in a `0755` directory, a `0750` directory, a
/// `0711` directory holding only a subdirectory with a file, and a `0700`
/// executable.
fn build_mode_tree(w: &Workbench) {
    w.write(".ssh/id_ed25519", b"-----BEGIN OPENSSH PRIVATE KEY-----\n");
    w.write(".ssh/config", b"Host *\n");
    w.write("pub/notes.txt", b"notes");
    w.write("team/shared.txt", b"shared");
    w.write("outer/inner/deep.txt", b"deep");
    w.write("bin/tool", b"#!/bin/sh\n");
    chmod(&w.src.join(".ssh/id_ed25519"), 0o600);
    chmod(&w.src.join(".ssh/config"), 0o644);
    chmod(&w.src.join(".ssh"), 0o700);
    chmod(&w.src.join("pub/notes.txt"), 0o640);
    chmod(&w.src.join("pub"), 0o755);
    chmod(&w.src.join("team/shared.txt"), 0o660);
    chmod(&w.src.join("team"), 0o750);
    chmod(&w.src.join("outer"), 0o711);
    chmod(&w.src.join("outer/inner"), 0o755);
    chmod(&w.src.join("bin/tool"), 0o700);
}

/// Asserts the modes [`build_mode_tree`] set, exactly.
fn assert_mode_tree(dest: &Path, what: &str) {
    for (rel, mode) in [
        (".ssh", 0o700),
        (".ssh/id_ed25519", 0o600),
        (".ssh/config", 0o644),
        ("pub", 0o755),
        ("pub/notes.txt", 0o640),
        ("team", 0o750),
        ("team/shared.txt", 0o660),
        ("outer", 0o711),
        ("outer/inner", 0o755),
        ("bin/tool", 0o700),
    ] {
        let got = mode_of(&dest.join(rel));
        assert_eq!(
            got, mode,
            "{what}: {rel} restored {got:o}, recorded {mode:o}"
        );
    }
}

/// File and directory permission bits round-trip exactly (a `0600` key
/// does not come back world-readable, a `0700` directory does not come
/// back `0755`), and a change of mode alone (file or directory) is pushed.
pub async fn modes_round_trip(fixture: &dyn Fixture) {
    let mut w = Workbench::new(fixture.fresh().await);
    build_mode_tree(&w);
    w.sync().await;
    let dest = w.restore_new("restored").await;
    let what = w.backend.describe();
    assert_mode_tree(&dest, &what);
    w.assert_same(&dest);
    // Only modes change: the key is loosened and the directory tightened.
    chmod(&w.src.join("pub/notes.txt"), 0o600);
    chmod(&w.src.join("team"), 0o700);
    let c = w.sync().await;
    assert_eq!(c.len(), 2, "{what}: mode-only changes not detected: {c:?}");
    let dest = w.restore_new("restored-after-chmod").await;
    assert_eq!(mode_of(&dest.join("pub/notes.txt")), 0o600, "{what}");
    assert_eq!(mode_of(&dest.join("team")), 0o700, "{what}");
    w.assert_same(&dest);
}

/// [`modes_round_trip`] under umask `000` and `077`, plus the state
/// directory (`0700`) and index files (`0600`) under each. Changes the
/// process's umask: run it in a test binary of its own.
pub async fn umask_round_trip(fixture: &dyn Fixture) {
    use rustix::fs::Mode;
    let before = rustix::process::umask(Mode::empty());
    for umask in [0o000, 0o077] {
        rustix::process::umask(Mode::from_bits_truncate(umask));
        let mut w = Workbench::new(fixture.fresh().await);
        let what = format!("{} under umask {umask:03o}", w.backend.describe());
        build_mode_tree(&w);
        w.sync().await;
        let state = w.tmp.path().join("state");
        assert_eq!(mode_of(&state), 0o700, "{what}: state directory");
        for ent in fs::read_dir(&state).expect("ls state").flatten() {
            let m = mode_of(&ent.path());
            assert_eq!(m & 0o077, 0, "{what}: {} is {m:o}", ent.path().display());
        }
        let dest = w.restore_new("restored").await;
        assert_mode_tree(&dest, &what);
        w.assert_same(&dest);
        // Nothing in the restored tree is wider than in the source.
        let (src, got) = (
            tree(&w.src, w.backend.capabilities()),
            tree(&dest, w.backend.capabilities()),
        );
        assert_eq!(src, got, "{what}");
    }
    rustix::process::umask(before);
}

/// A remote recording setuid, setgid or sticky bits (on files and
/// directories) restores without them: the permission bits only.
pub async fn special_mode_bits_are_not_restored(fixture: &dyn Fixture) {
    let case = Hostile::Entries(vec![
        Planted::Dir {
            path: "shared".into(),
            mode: 0o3777,
        },
        Planted::File {
            path: "shared/suid".into(),
            content: b"#!/bin/sh\n".to_vec(),
            mode: 0o7755,
        },
        Planted::File {
            path: "sgid".into(),
            content: b"x".to_vec(),
            mode: 0o2755,
        },
        Planted::File {
            path: "sticky".into(),
            content: b"y".to_vec(),
            mode: 0o1644,
        },
    ]);
    let backend = fixture
        .plant_hostile(&case)
        .await
        .expect("every backend can record modes");
    let tmp = tempfile::tempdir().expect("tmp");
    let dest = tmp.path().join("dest");
    let what = backend.describe();
    backend
        .restore(&dest, &RestoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{what}: restore failed: {e}"));
    for rel in ["shared", "shared/suid", "sgid", "sticky", "ok.txt"] {
        let m = mode_of(&dest.join(rel));
        assert_eq!(m & 0o7000, 0, "{what}: {rel} restored with mode {m:o}");
    }
    assert_eq!(
        fs::read(dest.join("shared/suid")).expect("read"),
        b"#!/bin/sh\n"
    );
}

/// A remote holding git repository directories (`.git/hooks/pre-commit`,
/// `.GIT/config`, a `sub/.git` file) restores everything else and none of
/// them, and says so in the report.
pub async fn repository_directories_are_not_restored(fixture: &dyn Fixture) {
    let file = |path: &str, content: &[u8], mode| Planted::File {
        path: path.into(),
        content: content.to_vec(),
        mode,
    };
    let case = Hostile::Entries(vec![
        Planted::Dir {
            path: ".git".into(),
            mode: 0o755,
        },
        file(
            ".git/hooks/pre-commit",
            b"#!/bin/sh\ntouch /tmp/owned\n",
            0o755,
        ),
        file(
            ".GIT/config",
            b"[core]\n\tfsmonitor = touch /tmp/owned\n",
            0o644,
        ),
        file("sub/.git", b"gitdir: /tmp/elsewhere\n", 0o644),
        file("sub/keep.txt", b"keep", 0o644),
    ]);
    let Some(backend) = fixture.plant_hostile(&case).await else {
        panic!("every backend can store .git names (they are valid paths)");
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dest = tmp.path().join("dest");
    let what = backend.describe();
    let report = backend
        .restore(&dest, &RestoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{what}: restore failed: {e}"));
    for gone in [".git", ".GIT", "sub/.git"] {
        assert!(
            fs::symlink_metadata(dest.join(gone)).is_err(),
            "{what}: {gone} was restored"
        );
    }
    assert_eq!(fs::read(dest.join("ok.txt")).expect("read"), b"ok");
    assert_eq!(fs::read(dest.join("sub/keep.txt")).expect("read"), b"keep");
    assert!(
        report.skipped.len() >= 3,
        "{what}: skipped paths not reported: {report:?}"
    );
    assert!(
        report
            .entries
            .iter()
            .all(|e| e.path.repository_component().is_none()),
        "{what}: {report:?}"
    );
}

/// Peak resident memory of this process (VmHWM), in bytes.
pub fn peak_rss() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets the peak-RSS counter (Linux: `echo 5 > /proc/self/clear_refs`).
pub fn reset_peak_rss() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

/// A file of `size` bytes round-trips through push and restore while the
/// process's peak memory grows by less than `max_growth` bytes. Returns the
/// growth measured. Run it in a test binary of its own.
pub async fn large_file(fixture: &dyn Fixture, size: u64, max_growth: u64) -> u64 {
    let mut w = Workbench::new(fixture.fresh().await);
    {
        let f = fs::File::create(w.src.join("big.bin")).expect("create");
        let mut f = std::io::BufWriter::with_capacity(1 << 20, f);
        let mut block = vec![0u8; 1 << 20];
        let mut written = 0u64;
        let mut n = 0u64;
        while written < size {
            // Different content per MiB so no layer can deduplicate it away.
            n += 1;
            for (i, chunk) in block.chunks_mut(8).enumerate() {
                chunk.copy_from_slice(
                    &(n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64).to_le_bytes(),
                );
            }
            let take = (size - written).min(block.len() as u64) as usize;
            f.write_all(&block[..take]).expect("write");
            written += take as u64;
        }
        f.flush().expect("flush");
    }
    let c = w.checkpoint();
    reset_peak_rss();
    let base = peak_rss();
    w.push(&c).await;
    let dest = w.restore_new("restored").await;
    let growth = peak_rss().saturating_sub(base);
    w.assert_same(&dest);
    assert!(
        growth < max_growth,
        "{}: peak memory grew by {} MiB for a {} MiB file (limit {} MiB)",
        w.backend.describe(),
        growth >> 20,
        size >> 20,
        max_growth >> 20
    );
    growth
}

/// Every check but [`large_file`].
pub async fn run_all(fixture: &dyn Fixture) {
    round_trip(fixture).await;
    deletes_and_renames(fixture).await;
    idempotent_push(fixture).await;
    restore_policies(fixture).await;
    subpath_restore(fixture).await;
    listing(fixture).await;
    hostile_state_is_refused(fixture).await;
    modes_round_trip(fixture).await;
    special_mode_bits_are_not_restored(fixture).await;
    repository_directories_are_not_restored(fixture).await;
}
