//! Hostile store contents beyond the conformance suite's names: missing
//! blobs, blobs whose bytes do not match, truncated or swapped tree nodes
//! and records, duplicate names, deep and wide trees, oversized mirror
//! indexes, a head naming a missing snapshot. Each restore
//! must fail with an error naming the object and write nothing outside the
//! destination (and no file whose content is wrong).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path as FsPath;

use bytes::Bytes;
use common::{
    Store, StoreFixture, file_meta, key, meta_json, plant_head, plant_mirror_index, plant_snapshot,
    put_raw, unique,
};
use object_store::ObjectStoreExt;
use sync_core::{Backend, BackendError, Meta, RestoreOptions};
use sync_s3::{BackendOptions, Layout};

fn stores() -> Vec<Store> {
    common::all_stores()
}

/// Restores into `<tmp>/case/dest` and checks that nothing appeared next to
/// `dest`; returns the error's text.
async fn refused(b: &dyn Backend, tmp: &FsPath, want_object: &str) -> String {
    let case = tmp.join(unique("case"));
    let dest = case.join("dest");
    let err = match b.restore(&dest, &RestoreOptions::default()).await {
        Err(e) => e,
        Ok(r) => panic!("{}: hostile state restored: {r:?}", b.describe()),
    };
    let msg = err.to_string();
    assert!(
        matches!(err, BackendError::InvalidRemote { .. }),
        "{}: not reported as invalid remote data: {msg}",
        b.describe()
    );
    assert!(
        msg.contains(want_object),
        "{}: error does not name {want_object}: {msg}",
        b.describe()
    );
    // Refused before the destination was even created, or only it exists.
    let beside: Vec<_> = std::fs::read_dir(&case)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        beside.is_empty() || beside == ["dest"],
        "wrote outside the destination: {beside:?}"
    );
    msg
}

fn ok_entry() -> (String, Meta, Option<Bytes>) {
    (
        "ok.txt".into(),
        Meta::File(file_meta(b"ok")),
        Some(Bytes::from_static(b"ok")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_with_a_missing_blob_is_refused() {
    for store in stores() {
        let f = StoreFixture::new(store, Layout::Snapshots);
        let b = f.backend(&unique("missing-blob"));
        plant_snapshot(&b, vec![ok_entry()]).await;
        // Delete every pack.
        let packs: Vec<_> = {
            use futures::TryStreamExt;
            b.store()
                .list(Some(&key(&b, "data")))
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
        };
        assert_eq!(packs.len(), 1);
        b.store().delete(&packs[0].location).await.unwrap();
        let msg = refused(&b, f.tmp.path(), packs[0].location.as_ref()).await;
        assert!(msg.contains("missing"), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_blob_with_wrong_bytes_is_never_written() {
    for store in stores() {
        let f = StoreFixture::new(store, Layout::Snapshots);
        let b = f.backend(&unique("bad-blob"));
        // The manifest says "ok" but the pack holds "xx" at that place.
        let meta = Meta::File(file_meta(b"ok"));
        plant_snapshot(
            &b,
            vec![("ok.txt".into(), meta, Some(Bytes::from_static(b"xx")))],
        )
        .await;
        let case = f.tmp.path().join(unique("case"));
        let dest = case.join("dest");
        let err = b
            .restore(&dest, &RestoreOptions::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/data/") || err.contains("data/"),
            "error does not name the pack: {err}"
        );
        assert!(
            err.contains("ok.txt") && err.contains("do not match"),
            "{err}"
        );
        assert!(!dest.join("ok.txt").exists(), "mismatching blob written");
        let left: Vec<_> = std::fs::read_dir(&dest).unwrap().collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_tree_node_or_record_is_refused() {
    for store in stores() {
        let f = StoreFixture::new(store, Layout::Snapshots);
        for dir in ["trees", "snapshots"] {
            let b = f.backend(&unique("truncated"));
            plant_snapshot(&b, vec![ok_entry()]).await;
            let k = only_object(&b, dir).await;
            let full = b.store().get(&k).await.unwrap().bytes().await.unwrap();
            b.store()
                .put(&k, full.slice(..full.len() / 2).into())
                .await
                .unwrap();
            // Refused as invalid remote data naming the object (a node
            // no longer hashes to its id; a record no longer parses).
            refused(&b, f.tmp.path(), k.as_ref()).await;
        }
    }
}

/// The one object under `dir`.
async fn only_object(b: &sync_s3::ObjectStoreBackend, dir: &str) -> object_store::path::Path {
    use futures::TryStreamExt;
    let all: Vec<_> = b
        .store()
        .list(Some(&key(b, dir)))
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "{dir}: {all:?}");
    all[0].location.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stored_under_another_id_is_refused() {
    for store in stores() {
        let f = StoreFixture::new(store, Layout::Snapshots);
        let b = f.backend(&unique("swapped"));
        plant_snapshot(
            &b,
            vec![
                ok_entry(),
                (
                    "d/x.txt".into(),
                    Meta::File(file_meta(b"x")),
                    Some(Bytes::from_static(b"x")),
                ),
            ],
        )
        .await;
        use futures::TryStreamExt;
        let nodes: Vec<_> = b
            .store()
            .list(Some(&key(&b, "trees")))
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        assert_eq!(nodes.len(), 2);
        // Swap the two nodes' bytes.
        let a = b
            .store()
            .get(&nodes[0].location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let c = b
            .store()
            .get(&nodes[1].location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        b.store().put(&nodes[0].location, c.into()).await.unwrap();
        b.store().put(&nodes[1].location, a.into()).await.unwrap();
        let msg = refused(&b, f.tmp.path(), "trees/").await;
        assert!(msg.contains("does not match its id"), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_names_and_deep_nesting_are_refused() {
    for store in stores() {
        let f = StoreFixture::new(store, Layout::Snapshots);
        let b = f.backend(&unique("dup"));
        let evil = || Meta::File(file_meta(b"evil"));
        plant_snapshot(
            &b,
            vec![
                ok_entry(),
                ("ok.txt".into(), evil(), Some(Bytes::from_static(b"evil"))),
            ],
        )
        .await;
        let msg = refused(&b, f.tmp.path(), "trees/").await;
        assert!(msg.contains("strictly increase"), "{msg}");

        // 600 nested directories: deeper than readers follow (512).
        let b = f.backend(&unique("deep"));
        let deep = vec!["d"; 600].join("/") + "/f";
        plant_snapshot(&b, vec![(deep, evil(), Some(Bytes::from_static(b"evil")))]).await;
        let msg = refused(&b, f.tmp.path(), "tree of").await;
        assert!(msg.contains("deeper than 512"), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_above_max_entries_is_refused_before_its_entries_are_used() {
    for store in stores() {
        let mut f = StoreFixture::new(store, Layout::Snapshots);
        f.options = BackendOptions {
            max_entries: 100,
            ..BackendOptions::default()
        };
        let b = f.backend(&unique("wide"));
        let entries: Vec<_> = (0..150)
            .map(|i| (format!("f{i:04}"), Meta::File(file_meta(b"")), None))
            .collect();
        plant_snapshot(&b, entries).await;
        let msg = refused(&b, f.tmp.path(), "trees/").await;
        assert!(msg.contains("exceeds the limit of 100"), "{msg}");

        // A directory claiming a million entries: refused from the
        // branch's counts (by the node decoder), before a page is read.
        let f = StoreFixture::new(f.store.clone(), Layout::Snapshots);
        let b = f.backend(&unique("million"));
        sync_s3::testing::plant_wide_directory(&b, 1_000_000)
            .await
            .unwrap();
        let msg = refused(&b, f.tmp.path(), "trees/").await;
        assert!(
            msg.contains("entries_below") && msg.contains("500000"),
            "{msg}"
        );
        // The same shape claiming what it holds restores.
        let b = f.backend(&unique("two"));
        sync_s3::testing::plant_wide_directory(&b, 2).await.unwrap();
        let dest = f.tmp.path().join(unique("two"));
        b.restore(&dest, &RestoreOptions::default()).await.unwrap();
        assert!(std::fs::symlink_metadata(dest.join("b")).is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_naming_a_missing_snapshot_is_refused() {
    for store in stores() {
        let f = StoreFixture::new(store, Layout::Snapshots);
        let b = f.backend(&unique("dangling-head"));
        plant_head(&b, 1, "1700000000000-00000000deadbeef").await;
        let msg = refused(&b, f.tmp.path(), &format!("heads/{:020}", 1)).await;
        assert!(
            msg.contains("1700000000000-00000000deadbeef") && msg.contains("missing"),
            "{msg}"
        );
        // A head naming something that is not a snapshot id at all.
        let b = f.backend(&unique("evil-head"));
        plant_head(&b, 1, "../../etc").await;
        refused(&b, f.tmp.path(), &format!("heads/{:020}", 1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_object_not_matching_its_index_hash_is_never_written() {
    for store in stores() {
        let f = StoreFixture::new(store, Layout::Mirror);
        let b = f.backend(&unique("mirror-bad"));
        put_raw(&b, "ok.txt", Bytes::from_static(b"xx")).await;
        let etag = b.store().head(&key(&b, "ok.txt")).await.unwrap().e_tag;
        let mut entry = meta_json(&Meta::File(file_meta(b"ok")));
        entry["etag"] = serde_json::json!(etag);
        plant_mirror_index(&b, serde_json::json!({ "ok.txt": entry })).await;
        let case = f.tmp.path().join(unique("case"));
        let dest = case.join("dest");
        let err = b
            .restore(&dest, &RestoreOptions::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ok.txt") && err.contains("do not match"),
            "{err}"
        );
        assert!(!dest.join("ok.txt").exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_truncated_or_oversized_index_is_refused() {
    for store in stores() {
        let f = StoreFixture::new(store.clone(), Layout::Mirror);
        let b = f.backend(&unique("mirror-trunc"));
        put_raw(
            &b,
            ".tether/mirror/00000000000000000001",
            "{\"format\":\"tether-mirror-index-1\",\"time_ms\":0,\"entr",
        )
        .await;
        let msg = refused(&b, f.tmp.path(), ".tether/mirror/00000000000000000001").await;
        assert!(msg.contains("truncated"), "{msg}");

        let mut f = StoreFixture::new(store, Layout::Mirror);
        f.options.max_manifest_bytes = 100;
        let b = f.backend(&unique("mirror-big"));
        let entries: serde_json::Map<_, _> = (0..20)
            .map(|i| (format!("f{i}"), meta_json(&Meta::dir(0o755))))
            .collect();
        plant_mirror_index(&b, serde_json::Value::Object(entries)).await;
        let msg = refused(&b, f.tmp.path(), ".tether/mirror/00000000000000000001").await;
        assert!(msg.contains("more than the 100 bytes"), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_with_too_many_entries_is_refused_before_it_is_built() {
    // One more than the default limit (500,000), about 17 MB: under the
    // byte cap, so only counting can refuse it.
    let n = 500_000;
    let mut stores = vec![Store::Memory];
    stores.extend(Store::s3());
    for store in stores {
        let f = StoreFixture::new(store, Layout::Mirror);
        let b = f.backend(&unique("many-entries"));
        let mut s = String::from(
            "{\"format\":\"tether-mirror-index-1\",\"time_ms\":0,\"entries\":{\"../evil\":{\"type\":\"dir\"}",
        );
        for i in 0..n {
            s.push_str(&format!(",\"d{i:07}\":{{\"type\":\"dir\"}}"));
        }
        s.push_str("}}");
        put_raw(&b, &format!(".tether/mirror/{:020}", 1), s).await;
        let msg = refused(&b, f.tmp.path(), ".tether/mirror/00000000000000000001").await;
        assert!(msg.contains("more than 500000 entries"), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_of_parents_is_refused_not_followed_forever() {
    for store in stores() {
        let f = StoreFixture::new(store, Layout::Snapshots);
        let b = f.backend(&unique("cycle"));
        let a = plant_snapshot(&b, vec![ok_entry()]).await;
        let other = sync_s3::testing::plant_record(&b, Some(&a)).await.unwrap();
        // a's parent is `other`, whose parent is a.
        sync_s3::testing::set_parent(&b, &a, Some(&other))
            .await
            .unwrap();
        sync_s3::testing::plant_head(&b, 1, &a, Some(&other))
            .await
            .unwrap();
        let err = b.history(1000).await.unwrap_err().to_string();
        assert!(err.contains("cycle") && err.contains(&a), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_objects_without_an_index_are_restored_not_reported_empty() {
    use std::os::unix::fs::PermissionsExt;
    use sync_core::testkit::conformance::Workbench;
    for store in stores() {
        let f = StoreFixture::new(store.clone(), Layout::Mirror);
        let b = std::sync::Arc::new(f.backend(&unique("no-index")));
        // A first push that died after its uploads, before its index.
        let mut w = Workbench::new(b.clone());
        w.write("a.txt", b"alpha");
        w.write("d/b.txt", b"beta");
        std::fs::set_permissions(w.src.join("a.txt"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        w.sync().await;
        let index: Vec<_> = {
            use futures::TryStreamExt;
            b.store()
                .list(Some(&key(&b, ".tether")))
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
        };
        assert!(!index.is_empty());
        for o in index {
            b.store().delete(&o.location).await.unwrap();
        }
        // And a file another tool uploaded.
        put_raw(&b, "other.txt", Bytes::from_static(b"other")).await;

        let head = b.head().await.unwrap();
        assert!(
            head.is_some(),
            "{}: objects but no index reported as an empty remote",
            b.describe()
        );
        let dest = w.tmp.path().join("restored");
        b.restore(&dest, &RestoreOptions::default()).await.unwrap();
        assert_eq!(std::fs::read(dest.join("a.txt")).unwrap(), b"alpha");
        assert_eq!(std::fs::read(dest.join("d/b.txt")).unwrap(), b"beta");
        assert_eq!(std::fs::read(dest.join("other.txt")).unwrap(), b"other");
        if !matches!(store, Store::File) {
            // The object metadata carried the mode.
            let mode = std::fs::metadata(dest.join("a.txt"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o640, "{}", b.describe());
        }
    }
}

/// `PUT`s a zero-byte S3 folder marker `prefix/rel/` with curl (object_store
/// cannot name a key ending in `/`).
fn put_folder_marker(b: &sync_s3::ObjectStoreBackend, store: &Store, rel: &str) {
    let Store::S3 {
        endpoint,
        access_key,
        secret_key,
        bucket,
    } = store
    else {
        unreachable!()
    };
    let url = format!("{endpoint}/{bucket}/{}/{rel}/", b.prefix());
    let out = std::process::Command::new("curl")
        .args(["-s", "-f", "-X", "PUT", "--data-binary", ""])
        .args(["--aws-sigv4", "aws:amz:us-east-1:s3"])
        .arg("--user")
        .arg(format!("{access_key}:{secret_key}"))
        .arg(&url)
        .output()
        .expect("run curl");
    assert!(out.status.success(), "PUT {url}: {:?}", out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_folder_markers_restore_as_directories() {
    let mut stores = vec![Store::Memory];
    stores.extend(Store::s3());
    for store in stores {
        let f = StoreFixture::new(store.clone(), Layout::Mirror);
        let first = f.backend(&unique("markers"));
        let b = match &store {
            Store::Memory => {
                let marker = |rel: &str| key(&first, rel);
                let store = common::interposer::Interposer::with_folder_markers(
                    std::sync::Arc::clone(first.store()),
                    vec![marker("dir"), marker("empty")],
                );
                sync_s3::ObjectStoreBackend::new(
                    store,
                    first.prefix().as_ref(),
                    "memory with folder markers",
                    BackendOptions {
                        layout: Layout::Mirror,
                        ..BackendOptions::default()
                    },
                )
                .unwrap()
            }
            _ => {
                put_folder_marker(&first, &store, "dir");
                put_folder_marker(&first, &store, "empty");
                first
            }
        };
        put_raw(&b, "dir/x.txt", Bytes::from_static(b"x")).await;
        assert!(b.head().await.unwrap().is_some());
        let dest = f.tmp.path().join(unique("dest"));
        b.restore(&dest, &RestoreOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", b.describe()));
        assert_eq!(std::fs::read(dest.join("dir/x.txt")).unwrap(), b"x");
        assert!(dest.join("empty").is_dir(), "{}", b.describe());
        assert_eq!(std::fs::read_dir(dest.join("empty")).unwrap().count(), 0);
    }
}
