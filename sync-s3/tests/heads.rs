//! The head protocol under concurrent writers (sync-s3's `heads` module):
//! a push reported as pushed is always part of the newest state.
//!
//! * A slow writer overtaken by many pushes of another one while its own
//!   push is in flight (the case where an old number had been retired
//!   and could be created again).
//! * A model-based run: three writers at different speeds pushing their
//!   own new files and one shared file; afterwards every reported change
//!   must be in the newest state, or (shared file) superseded by a write
//!   that started after it was reported.
//! * A remote whose newest generation is `u64::MAX` is refused, naming the
//!   object, and nothing is reported pushed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path as FsPath;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::interposer::Interposer;
use common::{Store, StoreFixture, plant_head, plant_snapshot, put_raw, unique};
use sync_core::{
    Backend, BackendError, Checkpoint, ContentHash, FileMeta, Meta, RelPath, RestoreOptions, Source,
};
use sync_s3::{BackendOptions, Layout, ObjectStoreBackend};

fn stores() -> Vec<Store> {
    let mut v = vec![Store::Memory];
    v.extend(Store::s3());
    v.extend(Store::azure());
    v
}

/// One writer: its own source tree and a backend (maybe on a slow link).
struct Writer {
    name: String,
    backend: Arc<ObjectStoreBackend>,
    src: tempfile::TempDir,
}

impl Writer {
    fn new(name: &str, first: &ObjectStoreBackend, layout: Layout, delay: Duration) -> Self {
        Self::on(
            name,
            Interposer::new(Arc::clone(first.store()), delay),
            first,
            layout,
        )
    }

    fn on(name: &str, store: Arc<Interposer>, first: &ObjectStoreBackend, layout: Layout) -> Self {
        let backend = ObjectStoreBackend::new(
            store,
            first.prefix().as_ref(),
            name,
            BackendOptions {
                layout,
                ..BackendOptions::default()
            },
        )
        .unwrap();
        Writer {
            name: name.into(),
            backend: Arc::new(backend),
            src: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes `rel` and adds it to `c`.
    fn write(&self, c: &mut Checkpoint, rel: &str, content: &str) {
        let p = self.src.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        c.upsert(
            RelPath::new(rel).unwrap(),
            Meta::File(FileMeta {
                size: content.len() as u64,
                mtime_ns: 1_700_000_000_000_000_000,
                mode: 0o644,
                hash: ContentHash::of(content.as_bytes()),
            }),
        );
    }

    /// Makes the empty directory `rel` and adds it to `c` (in the mirror
    /// layout only the index holds it).
    fn mkdir(&self, c: &mut Checkpoint, rel: &str) {
        std::fs::create_dir_all(self.src.path().join(rel)).unwrap();
        c.upsert(RelPath::new(rel).unwrap(), Meta::dir(0o755));
    }

    /// Pushes `c` until the backend reports success (transient failures,
    /// such as "the head kept moving", are retried as the engine would).
    async fn push_until_saved(&self, c: &Checkpoint) -> sync_core::PushReceipt {
        let mut last = None;
        for _ in 0..200 {
            match self.backend.push(c, &Source::new(self.src.path())).await {
                Ok(r) => return r,
                Err(
                    e @ BackendError::Remote {
                        transient: true, ..
                    },
                ) => last = Some(e),
                Err(e) => panic!("{}: push failed: {e}", self.name),
            }
        }
        panic!("{}: never saved: {last:?}", self.name)
    }
}

/// The newest state (restored into a new directory): files (name →
/// content) and empty directories (name → `<dir>`).
async fn newest_files(b: &ObjectStoreBackend) -> BTreeMap<String, String> {
    let dest = tempfile::tempdir().unwrap();
    let root = dest.path().join("r");
    b.restore(&root, &RestoreOptions::default()).await.unwrap();
    let mut out = BTreeMap::new();
    collect(&root, &root, &mut out);
    out
}

const DIR: &str = "<dir>";

fn collect(root: &FsPath, dir: &FsPath, out: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            if std::fs::read_dir(&p).unwrap().next().is_none() {
                out.insert(rel, DIR.into());
            }
            collect(root, &p, out);
        } else {
            out.insert(rel, std::fs::read_to_string(&p).unwrap());
        }
    }
}

/// Snapshots layout: every id in `heads` is on the newest head's chain.
async fn assert_in_history(b: &ObjectStoreBackend, heads: &[String]) {
    let chain: HashSet<String> = b
        .history(usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect();
    for h in heads {
        assert!(
            chain.contains(h),
            "{}: snapshot {h} was reported pushed but is not in the history of the newest head",
            b.describe()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_writer_overtaken_by_many_pushes_is_never_reported_lost() {
    for store in stores() {
        for layout in [Layout::Snapshots, Layout::Mirror] {
            let f = StoreFixture::new(store.clone(), layout);
            let first = f.backend(&unique("overtaken"));
            let fast = Arc::new(Writer::new("fast", &first, layout, Duration::ZERO));
            let slow_store = Interposer::new(Arc::clone(first.store()), Duration::ZERO);
            let slow = Writer::on("slow", Arc::clone(&slow_store), &first, layout);

            let mut c = Checkpoint::new();
            fast.write(&mut c, "fast.txt", "fast 0");
            fast.push_until_saved(&c).await;
            let mut c = Checkpoint::new();
            slow.write(&mut c, "slow.txt", "slow 1");
            slow.push_until_saved(&c).await;

            // The slow writer's next push has read the head; before it
            // writes the next generation, the fast writer pushes 60 times
            // (enough for old generations to be retired).
            let fast2 = Arc::clone(&fast);
            slow_store.before_next_generation(Box::pin(async move {
                for i in 1..=60 {
                    let mut c = Checkpoint::new();
                    fast2.write(&mut c, "fast.txt", &format!("fast {i}"));
                    fast2.push_until_saved(&c).await;
                }
            }));
            let mut c = Checkpoint::new();
            slow.write(&mut c, "slow.txt", "slow 2");
            slow.write(&mut c, "slow-new.txt", "new");
            slow.mkdir(&mut c, "slow-dir");
            let receipt = slow.push_until_saved(&c).await;

            let files = newest_files(&first).await;
            let context = format!("{} ({layout}): newest state {files:?}", first.describe());
            assert_eq!(
                files.get("slow.txt").map(String::as_str),
                Some("slow 2"),
                "{context}"
            );
            assert_eq!(
                files.get("slow-new.txt").map(String::as_str),
                Some("new"),
                "{context}"
            );
            assert_eq!(
                files.get("slow-dir").map(String::as_str),
                Some(DIR),
                "{context}"
            );
            assert_eq!(
                files.get("fast.txt").map(String::as_str),
                Some("fast 60"),
                "{context}"
            );
            if layout == Layout::Snapshots {
                assert_in_history(&first, &[receipt.head.unwrap()]).await;
            }
        }
    }
}

/// One reported write of the model.
#[derive(Debug, Clone)]
struct Saved {
    writer: usize,
    path: String,
    content: Option<String>,
    started: u64,
    reported: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_at_different_speeds_lose_nothing_reported() {
    for store in stores() {
        // (name, delay per request in ms, checkpoints): the slow writer's
        // push spans many of the fast writer's (which take longer on a
        // real server).
        let writers_spec: [(&str, u64, usize); 3] = match store {
            Store::Memory => [("fast", 0, 40), ("medium", 4, 12), ("slow", 30, 5)],
            _ => [("fast", 0, 60), ("medium", 10, 12), ("slow", 150, 4)],
        };
        for layout in [Layout::Snapshots, Layout::Mirror] {
            let f = StoreFixture::new(store.clone(), layout);
            let first = f.backend(&unique("model"));
            let clock = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            for (i, (name, delay, rounds)) in writers_spec.iter().enumerate() {
                let w = Writer::new(name, &first, layout, Duration::from_millis(*delay));
                let clock = Arc::clone(&clock);
                let rounds = *rounds;
                tasks.push(tokio::spawn(async move {
                    let mut saved: Vec<Saved> = Vec::new();
                    let mut heads = Vec::new();
                    for round in 0..rounds {
                        let mut c = Checkpoint::new();
                        let mut changes = Vec::new();
                        // A new file every round: a lost push stays lost.
                        let own = format!("{}/r{round}.txt", w.name);
                        let text = format!("{} round {round}", w.name);
                        w.write(&mut c, &own, &text);
                        changes.push((own, Some(text.clone())));
                        let dir = format!("{}/d{round}", w.name);
                        w.mkdir(&mut c, &dir);
                        changes.push((dir, Some(DIR.to_string())));
                        if round % 3 == 1 {
                            w.write(&mut c, "shared.txt", &text);
                            changes.push(("shared.txt".to_string(), Some(text.clone())));
                        }
                        if round % 4 == 3 {
                            let gone = format!("{}/r{}.txt", w.name, round - 2);
                            std::fs::remove_file(w.src.path().join(&gone)).unwrap();
                            c.delete(RelPath::new(&gone).unwrap());
                            changes.push((gone, None));
                        }
                        let started = clock.fetch_add(1, Ordering::SeqCst);
                        let receipt = w.push_until_saved(&c).await;
                        let reported = clock.fetch_add(1, Ordering::SeqCst);
                        heads.extend(receipt.head);
                        for (path, content) in changes {
                            saved.push(Saved {
                                writer: i,
                                path,
                                content,
                                started,
                                reported,
                            });
                        }
                    }
                    (saved, heads)
                }));
            }
            let mut saved = Vec::new();
            let mut heads = Vec::new();
            for t in tasks {
                let (s, h) = t.await.unwrap();
                saved.extend(s);
                heads.extend(h);
            }

            let files = newest_files(&first).await;
            let context = format!("{} ({layout})", first.describe());
            // Own paths: the last reported word about each is in the newest state.
            let mut last: BTreeMap<&str, &Saved> = BTreeMap::new();
            for s in saved.iter().filter(|s| s.path != "shared.txt") {
                let e = last.entry(&s.path).or_insert(s);
                if s.reported > e.reported {
                    *e = s;
                }
            }
            for (path, s) in &last {
                assert_eq!(
                    files.get(*path),
                    s.content.as_ref(),
                    "{context}: {path} (writer {}) reported saved as {:?} but the newest state has {:?}",
                    s.writer,
                    s.content,
                    files.get(*path)
                );
            }
            // The shared file: a reported version that no write started
            // after its report superseded.
            let shared: Vec<&Saved> = saved.iter().filter(|s| s.path == "shared.txt").collect();
            let got = files.get("shared.txt");
            let winner = shared
                .iter()
                .find(|s| s.content.as_ref() == got)
                .unwrap_or_else(|| {
                    panic!("{context}: shared.txt is {got:?}, never reported saved")
                });
            let later: Vec<_> = shared
                .iter()
                .filter(|s| s.started > winner.reported)
                .collect();
            assert!(
                later.is_empty(),
                "{context}: shared.txt is {got:?}, but these writes started after it was reported: {later:?}"
            );
            // Nothing else appeared.
            let expected: HashSet<&str> = last
                .iter()
                .filter(|(_, s)| s.content.is_some())
                .map(|(p, _)| *p)
                .chain(got.map(|_| "shared.txt"))
                .collect();
            let present: HashSet<&str> = files.keys().map(String::as_str).collect();
            assert_eq!(present, expected, "{context}");
            if layout == Layout::Snapshots {
                assert_in_history(&first, &heads).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_at_the_maximum_is_refused_and_nothing_is_reported_pushed() {
    for store in stores() {
        for layout in [Layout::Snapshots, Layout::Mirror] {
            let f = StoreFixture::new(store.clone(), layout);
            let b = f.backend(&unique("max-gen"));
            let object = match layout {
                Layout::Snapshots => {
                    let id = plant_snapshot(&b, vec![]).await;
                    plant_head(&b, u64::MAX, &id).await;
                    format!("heads/{}", u64::MAX)
                }
                Layout::Mirror => {
                    let index = serde_json::json!({
                        "format": "tether-mirror-index-1",
                        "time_ms": 0,
                        "entries": {},
                    });
                    let rel = format!(".tether/mirror/{}", u64::MAX);
                    put_raw(&b, &rel, serde_json::to_vec(&index).unwrap()).await;
                    rel
                }
            };
            let before = generations(&b, layout).await;
            let w = Writer {
                name: "w".into(),
                backend: Arc::new(b),
                src: tempfile::tempdir().unwrap(),
            };
            let mut c = Checkpoint::new();
            w.write(&mut c, "a.txt", "a");
            let err = w
                .backend
                .push(&c, &Source::new(w.src.path()))
                .await
                .expect_err("a push past u64::MAX must not be reported");
            let msg = err.to_string();
            assert!(
                matches!(err, BackendError::InvalidRemote { .. }),
                "{layout}: {msg}"
            );
            assert!(
                msg.contains(&object) && msg.contains("refusing"),
                "{layout}: {msg}"
            );
            // Nothing was written: no generation wrapped around to 0 or 1.
            assert_eq!(generations(&w.backend, layout).await, before, "{layout}");
        }
    }
}

/// The generation objects of the layout.
async fn generations(b: &ObjectStoreBackend, layout: Layout) -> Vec<String> {
    use futures::TryStreamExt;
    let dir = match layout {
        Layout::Snapshots => "heads",
        Layout::Mirror => ".tether/mirror",
    };
    let mut v: Vec<String> = b
        .store()
        .list(Some(&common::key(b, dir)))
        .map_ok(|o| o.location.to_string())
        .try_collect()
        .await
        .unwrap();
    v.sort();
    v
}
