//! The repository marker (FORMAT.md "Repository marker"): every open
//! checks what the prefix holds, so a URL pointed at the wrong place gets a
//! configuration error naming what is there — never "empty, nothing to
//! restore" — and the first push refuses a store that ignores
//! create-if-absent unless the URL declares a single writer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::interposer::Interposer;
use common::{Store, StoreFixture, key, put_raw, unique};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::memory::InMemory;
use sync_core::testkit::conformance::Workbench;
use sync_core::{Backend, BackendError, RestoreOptions};
use sync_s3::{BackendOptions, Layout, ObjectStoreBackend};

fn stores() -> Vec<Store> {
    let mut v = vec![Store::Memory, Store::File];
    v.extend(Store::s3());
    v
}

fn marker_rel(layout: Layout) -> &'static str {
    match layout {
        Layout::Snapshots => "config",
        Layout::Mirror => ".tether/config",
    }
}

async fn get_json(b: &ObjectStoreBackend, rel: &str) -> Option<serde_json::Value> {
    match b.store().get(&key(b, rel)).await {
        Ok(r) => Some(serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("get {rel}: {e}"),
    }
}

async fn keys(b: &ObjectStoreBackend) -> Vec<String> {
    let prefix = b.prefix().clone();
    let mut v: Vec<String> = b
        .store()
        .list(Some(&prefix))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    v.sort();
    v
}

/// Pushes one file through `b` and returns the push's result.
async fn push_one(b: Arc<ObjectStoreBackend>) -> Result<(), BackendError> {
    let w = Workbench::new(b.clone());
    w.write("notebook.ipynb", b"{}");
    let c = w.checkpoint();
    b.push(&c, &sync_core::Source::new(&w.src))
        .await
        .map(|_| ())
}

fn config_error(r: Result<impl std::fmt::Debug, BackendError>, want: &str) -> String {
    match r {
        Err(e @ BackendError::Config(_)) => {
            let msg = e.to_string();
            assert!(msg.contains(want), "{msg:?} does not mention {want:?}");
            msg
        }
        other => panic!("expected a configuration error mentioning {want:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_prefix_is_fresh_and_the_first_push_writes_the_marker() {
    for store in stores() {
        for layout in [Layout::Snapshots, Layout::Mirror] {
            let f = StoreFixture::new(store.clone(), layout);
            let name = unique("marker-fresh");
            let b = Arc::new(f.backend(&name));
            assert!(b.head().await.unwrap().is_none());
            if layout == Layout::Snapshots {
                assert!(b.history(10).await.unwrap().is_empty());
            }
            assert!(
                get_json(&b, marker_rel(layout)).await.is_none(),
                "reading wrote a marker"
            );
            push_one(b.clone()).await.unwrap();
            let m = get_json(&b, marker_rel(layout))
                .await
                .unwrap_or_else(|| panic!("{layout}: no marker after the first push"));
            assert_eq!(m["format"], "tether-repository");
            let version = if layout == Layout::Snapshots { 2 } else { 1 };
            assert_eq!(m["version"], version);
            assert_eq!(m["layout"], layout.to_string());
            assert_eq!(m["writers"], "multi", "{store:?} enforces create-if-absent");
            assert_eq!(m["id"].as_str().unwrap().len(), 32);
            // The probe object is gone.
            assert!(
                !keys(&b).await.iter().any(|k| k.contains("probe/")),
                "{:?}",
                keys(&b).await
            );
            // A second backend on the same prefix reads it and pushes on.
            let again = Arc::new(f.same_remote(&name, &b));
            push_one(again).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_layout_is_refused_by_name_and_nothing_is_written() {
    for store in stores() {
        for (written, asked) in [
            (Layout::Snapshots, Layout::Mirror),
            (Layout::Mirror, Layout::Snapshots),
        ] {
            let f = StoreFixture::new(store.clone(), written);
            let name = unique("marker-other");
            let b = Arc::new(f.backend(&name));
            push_one(b.clone()).await.unwrap();
            let before = keys(&b).await;
            let g = StoreFixture {
                layout: asked,
                ..StoreFixture::new(store.clone(), asked)
            };
            // Same prefix, other layout (memory needs the same store object).
            let wrong = Arc::new(match store {
                Store::Memory => ObjectStoreBackend::new(
                    Arc::clone(b.store()),
                    b.prefix().as_ref(),
                    "memory",
                    BackendOptions {
                        layout: asked,
                        ..BackendOptions::default()
                    },
                )
                .unwrap(),
                Store::File => {
                    let (url, options) = f.url(&name);
                    let url = url.replace(&format!("layout={written}"), &format!("layout={asked}"));
                    ObjectStoreBackend::from_url(&url, options).unwrap()
                }
                _ => {
                    let (url, options) = g.url(&name);
                    ObjectStoreBackend::from_url(&url, options).unwrap()
                }
            });
            let want = match written {
                Layout::Snapshots => "snapshots",
                Layout::Mirror => "mirror",
            };
            let dest = g.tmp.path().join("dest");
            config_error(wrong.restore(&dest, &RestoreOptions::default()).await, want);
            config_error(wrong.head().await, want);
            config_error(push_one(wrong.clone()).await, want);
            assert!(!dest.exists(), "restore created {}", dest.display());
            assert_eq!(
                keys(&b).await,
                before,
                "{asked} wrote into a {written} prefix"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_without_a_marker_are_refused_as_snapshots_and_read_as_a_mirror() {
    for store in stores() {
        let f = StoreFixture::new(store.clone(), Layout::Snapshots);
        let name = unique("marker-foreign");
        let b = Arc::new(f.backend(&name));
        put_raw(&b, "notes.txt", &b"someone else's"[..]).await;
        put_raw(&b, "data/x.csv", &b"1,2"[..]).await;
        let before = keys(&b).await;
        let dest = f.tmp.path().join("dest");
        let msg = config_error(
            b.restore(&dest, &RestoreOptions::default()).await,
            "no tether repository marker",
        );
        assert!(msg.contains("data/") && msg.contains("notes.txt"), "{msg}");
        config_error(b.head().await, "notes.txt");
        config_error(b.history(5).await, "notes.txt");
        config_error(push_one(b.clone()).await, "notes.txt");
        assert_eq!(keys(&b).await, before, "a refused push wrote objects");
        assert!(!dest.exists());

        // The mirror layout reads other tools' objects as files (mirror.rs).
        let m = Arc::new(match store {
            Store::Memory => ObjectStoreBackend::new(
                Arc::clone(b.store()),
                b.prefix().as_ref(),
                "memory",
                BackendOptions {
                    layout: Layout::Mirror,
                    ..BackendOptions::default()
                },
            )
            .unwrap(),
            _ => {
                let (url, options) = f.url(&name);
                ObjectStoreBackend::from_url(
                    &url.replace("layout=snapshots", "layout=mirror"),
                    options,
                )
                .unwrap()
            }
        });
        let report = m.restore(&dest, &RestoreOptions::default()).await.unwrap();
        assert_eq!(report.files_written, 2, "{report:?}");
        assert_eq!(std::fs::read(dest.join("data/x.csv")).unwrap(), b"1,2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_from_a_newer_tether_is_refused() {
    for layout in [Layout::Snapshots, Layout::Mirror] {
        let f = StoreFixture::new(Store::Memory, layout);
        let name = unique("marker-newer");
        let b = Arc::new(f.backend(&name));
        let newer = if layout == Layout::Snapshots { 3 } else { 2 };
        let marker = format!(
            r#"{{"format":"tether-repository","version":{newer},"layout":"{layout}","id":"0123456789abcdef0123456789abcdef","created_ms":1,"created_by":"tether 9","writers":"multi","encryption":null}}"#
        );
        put_raw(&b, marker_rel(layout), marker.into_bytes()).await;
        let dest = f.tmp.path().join("dest");
        config_error(
            b.restore(&dest, &RestoreOptions::default()).await,
            "newer tether",
        );
        config_error(push_one(b.clone()).await, "newer tether");
        assert!(!dest.exists());
        // Garbage where the marker belongs is invalid remote data, named.
        put_raw(&b, marker_rel(layout), &b"<html>"[..]).await;
        let fresh = Arc::new(f.same_remote(&name, &b));
        match fresh.head().await {
            Err(e @ BackendError::InvalidRemote { .. }) => {
                assert!(e.to_string().contains(marker_rel(layout)), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_from_before_markers_is_read_and_marked_by_the_next_push() {
    // Snapshots format v1 (with or without its marker) is refused by name.
    {
        let f = StoreFixture::new(Store::Memory, Layout::Snapshots);
        let b = Arc::new(f.backend(&unique("marker-v1")));
        put_raw(&b, "heads/00000000000000000001", &b"{}"[..]).await;
        put_raw(&b, "snapshots/1700000000000-0000abcd", &b"{}"[..]).await;
        let dest = f.tmp.path().join("dest");
        let msg = config_error(
            b.restore(&dest, &RestoreOptions::default()).await,
            "format v1",
        );
        assert!(msg.contains("format 2 only"), "{msg}");
        config_error(push_one(b.clone()).await, "format v1");
        put_raw(
            &b,
            "config",
            &br#"{"format":"tether-repository","version":1,"layout":"snapshots","id":"0123456789abcdef0123456789abcdef","created_ms":1,"created_by":"tether 0.8","writers":"multi"}"#[..],
        )
        .await;
        let again = Arc::new(f.same_remote("", &b));
        config_error(again.head().await, "format v1");
    }
    for layout in [Layout::Mirror] {
        let f = StoreFixture::new(Store::Memory, layout);
        let name = unique("marker-legacy");
        let b = Arc::new(f.backend(&name));
        push_one(b.clone()).await.unwrap();
        b.store()
            .delete(&key(&b, marker_rel(layout)))
            .await
            .unwrap();
        let old = Arc::new(f.same_remote(&name, &b));
        let dest = f.tmp.path().join("dest");
        let report = old
            .restore(&dest, &RestoreOptions::default())
            .await
            .unwrap();
        assert_eq!(report.files_written, 1);
        assert!(get_json(&old, marker_rel(layout)).await.is_none());
        push_one(old.clone()).await.unwrap();
        assert!(get_json(&old, marker_rel(layout)).await.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_ignores_create_if_absent_is_refused_unless_single_writer() {
    for layout in [Layout::Snapshots, Layout::Mirror] {
        let lying = Interposer::ignoring_create_if_absent(Arc::new(InMemory::new()));
        let options = BackendOptions {
            layout,
            ..BackendOptions::default()
        };
        let b = Arc::new(
            ObjectStoreBackend::new(lying.clone(), "p", "lying store", options.clone()).unwrap(),
        );
        let msg = config_error(push_one(b.clone()).await, "single_writer=true");
        assert!(msg.contains("If-None-Match"), "{msg}");
        assert!(keys(&b).await.is_empty(), "{:?}", keys(&b).await);

        let single = Arc::new(
            ObjectStoreBackend::new(
                lying,
                "p",
                "lying store",
                BackendOptions {
                    single_writer: true,
                    ..options
                },
            )
            .unwrap(),
        );
        push_one(single.clone()).await.unwrap();
        let m = get_json(&single, marker_rel(layout)).await.unwrap();
        assert_eq!(m["writers"], "single");
        assert!(single.head().await.unwrap().is_some());
    }
}

#[test]
fn single_writer_is_a_url_parameter() {
    let b =
        ObjectStoreBackend::from_url("memory://m/p?single_writer=true", BackendOptions::default());
    assert!(b.is_ok());
    let e = ObjectStoreBackend::from_url(
        "memory://m/p?single_writer=maybe",
        BackendOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("single_writer"), "{e}");
}
