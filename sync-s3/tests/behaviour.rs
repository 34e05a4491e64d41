//! Layout behaviour through the public API: history and restore of any
//! snapshot, packing and deduplication, two writers racing for the head,
//! and the mirror's browsable objects.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use common::{Store, StoreFixture, key, unique};
use futures::TryStreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use sync_core::testkit::conformance::Workbench;
use sync_core::{Backend, BackendError, RestoreOptions, Source};
use sync_s3::{BackendOptions, Layout, ObjectStoreBackend};

fn stores() -> Vec<Store> {
    common::all_stores()
}

async fn count(b: &ObjectStoreBackend, dir: &str) -> usize {
    b.store()
        .list(Some(&key(b, dir)))
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_restore_of_any_snapshot() {
    for store in stores() {
        let f = StoreFixture::new(store, Layout::Snapshots);
        let b = Arc::new(f.backend(&unique("history")));
        let mut w = Workbench::new(b.clone());
        w.write("a.txt", b"version 1");
        let r1 = w.sync().await;
        let first = b.head().await.unwrap().unwrap().id;
        w.write("a.txt", b"version two");
        w.write("b.txt", b"new");
        w.sync().await;
        let h = b.history(10).await.unwrap();
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[1].id, first);
        assert_eq!((h[0].files, h[0].bytes), (2, 14));
        assert_eq!((h[1].files, h[1].bytes), (1, 9));
        assert_eq!(b.history(1).await.unwrap().len(), 1);
        let dest = w.tmp.path().join("old");
        let report = b
            .restore(
                &dest,
                &RestoreOptions {
                    at: Some(first.clone()),
                    ..RestoreOptions::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(report.head.as_deref(), Some(first.as_str()));
        assert_eq!(std::fs::read(dest.join("a.txt")).unwrap(), b"version 1");
        assert!(!dest.join("b.txt").exists());
        let err = b
            .restore(
                &w.tmp.path().join("none"),
                &RestoreOptions {
                    at: Some("0000000000000-00000000".into()),
                    ..RestoreOptions::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, BackendError::NotFound { .. }), "{err}");
        drop(r1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_are_packed_and_unchanged_content_is_not_uploaded_again() {
    for store in stores() {
        let f = StoreFixture::new(store, Layout::Snapshots);
        let b = Arc::new(f.backend(&unique("packing")));
        let mut w = Workbench::new(b.clone());
        for i in 0..500 {
            w.write(
                &format!("d{}/f{i}.txt", i % 7),
                format!("file {i}").as_bytes(),
            );
        }
        let c = w.checkpoint();
        let receipt = b.push(&c, &Source::new(&w.src)).await.unwrap();
        assert_eq!(receipt.files_uploaded, 500);
        w.push(&c).await;
        // 500 small files: one pack (no index: trees hold locations).
        assert_eq!(count(&b, "data").await, 1);
        assert_eq!(count(&b, "index").await, 0);
        w.write("extra.txt", b"one more");
        w.write("copy.txt", b"file 3"); // same content as d3/f3.txt
        let c = w.checkpoint();
        let receipt = b.push(&c, &Source::new(&w.src)).await.unwrap();
        assert_eq!(receipt.files_uploaded, 1, "{receipt:?}");
        w.push(&c).await;
        let dest = w.restore_new("restored").await;
        w.assert_same(&dest);
    }
}

/// A store that runs `hook` once, just before the first write of a head
/// generation: another writer moving the head at the worst moment.
struct RaceStore {
    inner: Arc<dyn ObjectStore>,
    hook: Mutex<Option<BoxFuture<'static, ()>>>,
}

impl std::fmt::Debug for RaceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RaceStore")
    }
}

impl std::fmt::Display for RaceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RaceStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for RaceStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let key = location.as_ref();
        if key.contains("/heads/") || key.contains("/.tether/mirror/") {
            let hook = self.hook.lock().unwrap().take();
            if let Some(h) = hook {
                h.await;
            }
        }
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loser_of_a_head_race_rebases_and_nothing_is_lost() {
    for layout in [Layout::Snapshots, Layout::Mirror] {
        let shared: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let opts = BackendOptions {
            layout,
            ..BackendOptions::default()
        };
        let race = Arc::new(RaceStore {
            inner: Arc::clone(&shared),
            hook: Mutex::new(None),
        });
        let a =
            Arc::new(ObjectStoreBackend::new(race.clone(), "p", "writer a", opts.clone()).unwrap());
        let b =
            Arc::new(ObjectStoreBackend::new(Arc::clone(&shared), "p", "writer b", opts).unwrap());

        let mut wa = Workbench::new(a.clone());
        wa.write("shared.txt", b"base");
        wa.sync().await;

        let wb = Workbench::new(b.clone());
        wb.write("shared.txt", b"b's version");
        wb.write("only-b.txt", b"b");
        let cb = wb.checkpoint();
        let src_b = wb.src.clone();
        let b2 = b.clone();
        *race.hook.lock().unwrap() = Some(Box::pin(async move {
            b2.push(&cb, &Source::new(&src_b)).await.unwrap();
        }));

        wa.write("shared.txt", b"a's version");
        wa.write("only-a.txt", b"a");
        let ca = wa.checkpoint();
        let receipt = a.push(&ca, &Source::new(&wa.src)).await.unwrap();
        if layout == Layout::Snapshots {
            let conflict = receipt.conflict.clone().expect("the race must be reported");
            assert!(conflict.contains("shared.txt"), "{conflict}");
            // B's version survives in history.
            let h = b.history(10).await.unwrap();
            assert_eq!(h.len(), 3, "{h:?}");
            let dest = wa.tmp.path().join("b-version");
            b.restore(
                &dest,
                &RestoreOptions {
                    at: Some(h[1].id.clone()),
                    ..RestoreOptions::default()
                },
            )
            .await
            .unwrap();
            assert_eq!(
                std::fs::read(dest.join("shared.txt")).unwrap(),
                b"b's version"
            );
        }
        // The head has both writers' files. Snapshots: A's checkpoint was
        // re-based on B's, so A's version of the contested file wins.
        // Mirror: objects are last-writer-wins (B's upload came last) and
        // the merged index must not make that object unrestorable.
        let dest = wa.tmp.path().join("merged");
        b.restore(&dest, &RestoreOptions::default()).await.unwrap();
        let names: BTreeSet<_> = std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names,
            BTreeSet::from([
                "only-a.txt".into(),
                "only-b.txt".into(),
                "shared.txt".into()
            ]),
            "{layout}"
        );
        let want: &[u8] = match layout {
            Layout::Snapshots => b"a's version",
            Layout::Mirror => b"b's version",
        };
        assert_eq!(std::fs::read(dest.join("shared.txt")).unwrap(), want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_objects_are_plain_files_with_metadata() {
    for store in stores() {
        let f = StoreFixture::new(store.clone(), Layout::Mirror);
        let b = Arc::new(f.backend(&unique("mirror")));
        let mut w = Workbench::new(b.clone());
        w.write("notes/a b [1].txt", b"hello");
        w.sync().await;
        let k = key(&b, "notes/a b [1].txt");
        let got = b.store().get(&k).await.unwrap();
        let attrs = got.attributes.clone();
        assert_eq!(&got.bytes().await.unwrap()[..], b"hello");
        if store.keeps_metadata() {
            let get = |name: &'static str| {
                attrs
                    .get(&object_store::Attribute::Metadata(name.into()))
                    .map(|v| v.as_ref().to_owned())
            };
            let [hash, mode, mtime] = common::METADATA_NAMES;
            assert_eq!(
                get(hash),
                Some(sync_core::ContentHash::of(b"hello").to_hex()),
                "{}",
                b.describe()
            );
            assert!(get(mode).is_some() && get(mtime).is_some(), "{attrs:?}");
            // Only the current names are written.
            for old in common::LEGACY_METADATA_NAMES {
                assert_eq!(get(old), None, "{}", b.describe());
            }
        }
        // Deletes propagate.
        std::fs::remove_file(w.src.join("notes/a b [1].txt")).unwrap();
        w.sync().await;
        assert!(matches!(
            b.store().head(&k).await,
            Err(object_store::Error::NotFound { .. })
        ));
        // An object put there by another tool is restored too.
        common::put_raw(&b, "from-another-tool.txt", Bytes::from_static(b"x")).await;
        let dest = w.restore_new("restored").await;
        assert_eq!(
            std::fs::read(dest.join("from-another-tool.txt")).unwrap(),
            b"x"
        );
        // The reserved name is refused, with a clear error.
        w.write(".tether/x", b"x");
        let c = w.checkpoint();
        let err = b.push(&c, &Source::new(&w.src)).await.unwrap_err();
        assert!(err.to_string().contains(".tether"), "{err}");
        assert!(b.history(1).await.is_err());
    }
}

/// A mirror pushed by an earlier tether carries `tether-blake3`,
/// `tether-mode`, `tether-mtime-ns` (S3, GCS; Azure never accepted them):
/// such an object, with no index describing it, still restores with its
/// mode and time. And when both sets are there, the current names win.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_objects_with_legacy_metadata_names_restore_with_them() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let stores: Vec<Store> = stores()
        .into_iter()
        .filter(|s| matches!(s, Store::S3 { .. } | Store::Memory))
        .collect();
    for store in stores {
        let f = StoreFixture::new(store, Layout::Mirror);
        let b = f.backend(&unique("legacy-meta"));
        let mut old = common::file_meta(b"old");
        old.mode = 0o600;
        old.mtime_ns = 1_500_000_000_123_456_789;
        common::put_with_metadata_named(
            &b,
            "old.txt",
            Bytes::from_static(b"old"),
            &old,
            common::LEGACY_METADATA_NAMES,
        )
        .await;
        // Both sets, disagreeing: the current one is used.
        let mut both = common::file_meta(b"both");
        both.mode = 0o640;
        both.mtime_ns = 1_600_000_000_000_000_000;
        let k = key(&b, "both.txt");
        let mut attributes = object_store::Attributes::new();
        for (names, mode, mtime) in [
            (
                common::LEGACY_METADATA_NAMES,
                0o755,
                1_400_000_000_000_000_000i64,
            ),
            (common::METADATA_NAMES, both.mode, both.mtime_ns),
        ] {
            for (n, v) in
                names
                    .into_iter()
                    .zip([both.hash.to_hex(), format!("{mode:o}"), mtime.to_string()])
            {
                attributes.insert(
                    object_store::Attribute::Metadata(n.into()),
                    object_store::AttributeValue::from(v),
                );
            }
        }
        b.store()
            .put_opts(
                &k,
                PutPayload::from_static(b"both"),
                PutOptions {
                    attributes,
                    ..PutOptions::default()
                },
            )
            .await
            .unwrap();
        let dest = f.tmp.path().join(unique("dest"));
        b.restore(&dest, &RestoreOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", b.describe()));
        for (name, content, meta) in [("old.txt", &b"old"[..], &old), ("both.txt", b"both", &both)]
        {
            let path = dest.join(name);
            assert_eq!(std::fs::read(&path).unwrap(), content);
            let m = std::fs::metadata(&path).unwrap();
            assert_eq!(
                m.permissions().mode() & 0o7777,
                meta.mode,
                "{}: {name}",
                b.describe()
            );
            let mtime_ns = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
            assert_eq!(
                mtime_ns,
                i128::from(meta.mtime_ns),
                "{}: {name}",
                b.describe()
            );
        }
    }
}

#[test]
fn bad_urls_are_config_errors_without_secrets() {
    let opts = BackendOptions {
        use_env: false,
        ..BackendOptions::default()
    };
    let e = ObjectStoreBackend::from_url("s3://b/p?secret_key=TOPSECRET", opts.clone())
        .unwrap_err()
        .to_string();
    assert!(!e.contains("TOPSECRET"), "{e}");
    let e = ObjectStoreBackend::from_url("s3://b/p?concurrency=0", opts.clone())
        .unwrap_err()
        .to_string();
    assert!(e.contains("concurrency"), "{e}");
    let b = ObjectStoreBackend::from_url("memory://x/y?layout=mirror", opts).unwrap();
    assert_eq!(b.layout(), Layout::Mirror);
    assert!(b.describe().contains("memory://x/y") && b.describe().contains("mirror"));
}

/// A writer whose edit was made on an old base (another writer changed the
/// same file since its last push, long before this push began) gets a
/// conflict, with the other version kept in history; a writer whose
/// changes are disjoint from what changed since its base gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_on_an_old_base_is_a_conflict_even_without_a_race() {
    let shared: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let open = |writer: &str| {
        Arc::new(
            ObjectStoreBackend::new(Arc::clone(&shared), "p", writer, BackendOptions::default())
                .unwrap(),
        )
    };
    let (a, b) = (open("writer a"), open("writer b"));
    let mut wa = Workbench::new(a.clone());
    wa.write("nb.ipynb", b"base");
    let first = wa.sync().await;
    assert_eq!(first.base(), None);

    // B edits the notebook and pushes: nothing changed since its base.
    let mut wb = Workbench::new(b.clone());
    wb.write("nb.ipynb", b"b's version");
    let c = wb.checkpoint();
    let rb = wb.push(&c).await;
    assert_eq!(rb.conflict, None, "b's push is not a conflict");

    // Later, A (still on its own last push) edits the same notebook.
    wa.write("nb.ipynb", b"a's version");
    let c = wa.checkpoint();
    assert!(c.base().is_some());
    let ra = wa.push(&c).await;
    let conflict = ra.conflict.expect("both changed nb.ipynb since a's base");
    assert!(conflict.contains("nb.ipynb"), "{conflict}");
    assert!(
        conflict.contains(rb.head.as_deref().unwrap()),
        "names the snapshot keeping b's version: {conflict}"
    );

    // B, on its own last push, adds another file: disjoint, no conflict.
    wb.write("b-notes.txt", b"b");
    let c = wb.checkpoint();
    assert_eq!(wb.push(&c).await.conflict, None);
    // Nothing lost: A's version is the head, B's in the history.
    let dest = wa.restore_new("newest").await;
    assert_eq!(
        std::fs::read(dest.join("nb.ipynb")).unwrap(),
        b"a's version"
    );
    let dest = wa.tmp.path().join("b-version");
    a.restore(
        &dest,
        &RestoreOptions {
            at: rb.head.clone(),
            ..RestoreOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read(dest.join("nb.ipynb")).unwrap(),
        b"b's version"
    );
}
