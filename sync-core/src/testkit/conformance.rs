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
//! executable bit, mtimes only if it keeps them.
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

use crate::backend::{Backend, Capabilities};
use crate::checkpoint::Checkpoint;
use crate::detect::{DirtySet, detect};
use crate::entry::{ContentHash, LocalKind, LocalStat};
use crate::index::Index;
use crate::restore::{ExistingPolicy, RestoreOptions};
use crate::rules::IgnoreRules;
use crate::source::Source;

/// A hostile remote state to plant, for [`hostile_state_is_refused`].
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

    /// The checkpoint the engine would push now (full comparison).
    pub fn checkpoint(&self) -> Checkpoint {
        let dirty = DirtySet {
            paths: Default::default(),
            rescan: true,
        };
        detect(
            &self.src,
            &IgnoreRules::none(),
            &self.index,
            &Checkpoint::new(),
            &dirty,
            &mut |_| {},
        )
        .checkpoint
    }

    /// Pushes `c` and records it in the scratch index.
    pub async fn push(&mut self, c: &Checkpoint) {
        let receipt = self
            .backend
            .push(c, &Source::new(&self.src))
            .await
            .unwrap_or_else(|e| panic!("push to {} failed: {e}", self.backend.describe()));
        self.index.apply(c, receipt.head).expect("index apply");
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
    /// A directory (only listed if the backend keeps empty ones).
    Dir,
    /// A regular file: hash, mode (or just the exec bit), mtime (if kept).
    File(ContentHash, u32, Option<i64>),
    /// A symlink and its target.
    Symlink(String),
}

/// Describes the tree at `root` for comparison under `caps`.
pub fn tree(root: &Path, caps: Capabilities) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
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
                    if caps.empty_dirs {
                        out.insert(rel, Node::Dir);
                    }
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
    out
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
    hostile_state_is_refused(fixture).await;
}
