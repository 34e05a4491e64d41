//! Snapshots format v2, beyond the conformance suite: a one-file edit
//! stores O(depth) objects and bytes; any sequence of checkpoints restores
//! exactly at every snapshot (property test, plaintext and encrypted); an
//! encrypted repository's objects reveal no file name or content, and a
//! tampered, swapped, truncated or replayed unit is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::interposer::Interposer;
use common::{Store, StoreFixture, key, unique};
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use proptest::prelude::*;
use sync_core::testkit::conformance::Workbench;
use sync_core::{Backend, BackendError, RestoreOptions};
use sync_s3::{BackendOptions, EncryptionKey, Layout, ObjectStoreBackend};

/// A generated key file (`tether key generate` writes this form).
const KEY: &str = "tether-key-1:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc";
const OTHER_KEY: &str = "tether-key-1:CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg";

fn key_opt(k: &str) -> Option<EncryptionKey> {
    Some(EncryptionKey::from_bytes(k.as_bytes().to_vec()))
}

fn on(store: Arc<dyn ObjectStore>, prefix: &str, key: Option<EncryptionKey>) -> ObjectStoreBackend {
    ObjectStoreBackend::new(
        store,
        prefix,
        "memory (v2 test)",
        BackendOptions {
            use_env: false,
            encryption_key: key,
            ..BackendOptions::default()
        },
    )
    .unwrap()
}

/// Every object under the backend's prefix: (key, bytes).
async fn objects(b: &ObjectStoreBackend) -> Vec<(String, Bytes)> {
    let all: Vec<_> = b
        .store()
        .list(Some(b.prefix()))
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let mut out = Vec::new();
    for m in all {
        let bytes = b
            .store()
            .get(&m.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        out.push((m.location.to_string(), bytes));
    }
    out
}

/// Issue 17's P8 tree: 10,000 files of 2 KiB in 50 directories; then one
/// line appended to one file. Counted at the store: what the edit's push
/// sends must not grow with the tree (restic 0.14 adds 16.5 KB here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_file_edit_stores_o_depth_objects_and_bytes() {
    for encrypted in [false, true] {
        let counted = Interposer::new(
            Arc::new(object_store::memory::InMemory::new()),
            Duration::ZERO,
        );
        let b = Arc::new(on(
            counted.clone(),
            "p8",
            if encrypted { key_opt(KEY) } else { None },
        ));
        let mut w = Workbench::new(b.clone());
        for d in 0..50 {
            for f in 0..200 {
                let mut content = format!("dir {d} file {f}\n").repeat(120).into_bytes();
                content.truncate(2048);
                w.write(&format!("dir{d:02}/file{f:03}.txt"), &content);
            }
        }
        w.sync().await;
        let (puts_before, bytes_before) = counted.puts();
        let edited = w.src.join("dir17/file042.txt");
        let mut content = std::fs::read(&edited).unwrap();
        content.extend_from_slice(b"one more line\n");
        std::fs::write(&edited, content).unwrap();
        let c = w.sync().await;
        assert_eq!(c.len(), 1, "{c:?}");
        let (puts_after, bytes_after) = counted.puts();
        let (puts, bytes) = (puts_after - puts_before, bytes_after - bytes_before);
        eprintln!("one-file edit, encrypted={encrypted}: {puts} PUTs, {bytes} bytes");
        assert!(
            puts <= 10,
            "encrypted={encrypted}: {puts} PUTs for a one-file edit"
        );
        assert!(
            bytes <= 16_500,
            "encrypted={encrypted}: {bytes} bytes for a one-file edit (restic: 16,500)"
        );
        let dest = w.restore_new("restored").await;
        w.assert_same(&dest);
    }
}

/// The P1/P2 benchmark's shape (100 directories of 100 small files): a
/// restore reads each directory as one node, and the content of
/// neighbouring directories (packed together) in shared requests, not
/// several nodes and one request per directory (≈ 650 GETs before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_of_small_directories_needs_few_requests() {
    for encrypted in [false, true] {
        let counted = Interposer::new(
            Arc::new(object_store::memory::InMemory::new()),
            Duration::ZERO,
        );
        let b = Arc::new(on(
            counted.clone(),
            "p2",
            if encrypted { key_opt(KEY) } else { None },
        ));
        let mut w = Workbench::new(b.clone());
        for i in 0..10_000 {
            let content = format!("file {i}\n").repeat(100).into_bytes();
            w.write(&format!("d{:02}/f{i:05}.txt", i % 100), &content);
        }
        w.sync().await;
        // A fresh reader: nothing of the push in its node cache.
        let reader = on(
            counted.clone(),
            "p2",
            if encrypted { key_opt(KEY) } else { None },
        );
        let before = counted.gets();
        let dest = w.tmp.path().join("restored");
        reader
            .restore(&dest, &RestoreOptions::default())
            .await
            .unwrap();
        let gets = counted.gets() - before;
        eprintln!("restore of 10,000 files in 100 directories, encrypted={encrypted}: {gets} GETs");
        // Marker, keys, head, snapshot, the root and 100 directory nodes,
        // and the content of 10,000 files (≈ 10 MB before compression).
        assert!(gets <= 130, "encrypted={encrypted}: {gets} GETs");
        w.assert_same(&dest);
    }
}

/// The source tree as (path → what it is): kind, mode, content.
fn snapshot_of(root: &FsPath) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o777;
            let what = if m.is_dir() {
                stack.push(p.clone());
                format!("dir {mode:o}")
            } else {
                let c = std::fs::read(&p).unwrap();
                format!("file {mode:o} {}", String::from_utf8_lossy(&c))
            };
            out.insert(rel, what);
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Op {
    Write(String, u8, bool),
    Delete(String),
    Mkdir(String),
    Rename(String, String),
}

fn path_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c.txt"]), 1..=3)
        .prop_map(|parts| parts.join("/"))
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (path_strategy(), 0u8..4, any::<bool>()).prop_map(|(p, c, x)| Op::Write(p, c, x)),
        1 => path_strategy().prop_map(Op::Delete),
        1 => path_strategy().prop_map(Op::Mkdir),
        1 => (path_strategy(), path_strategy()).prop_map(|(a, b)| Op::Rename(a, b)),
    ]
}

/// Applies `op` to the source tree (a file where a directory is, and the
/// reverse, replace what is there: dir ↔ file swaps).
fn apply(root: &FsPath, op: &Op) {
    let rm = |p: &FsPath| match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).unwrap(),
        Ok(_) => std::fs::remove_file(p).unwrap(),
        Err(_) => {}
    };
    // Anything in the way of `p`'s parents that is not a directory goes.
    let clear_parents = |p: &FsPath| {
        let mut cur = root.to_path_buf();
        let rel = p.strip_prefix(root).unwrap();
        let parts: Vec<_> = rel.components().collect();
        for c in &parts[..parts.len().saturating_sub(1)] {
            cur.push(c);
            if std::fs::symlink_metadata(&cur).is_ok_and(|m| !m.is_dir()) {
                std::fs::remove_file(&cur).unwrap();
            }
        }
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    };
    match op {
        Op::Write(p, c, exec) => {
            let p = root.join(p);
            clear_parents(&p);
            if p.is_dir() {
                rm(&p);
            }
            std::fs::write(&p, format!("content {c}\n").repeat(usize::from(*c) * 7 + 1)).unwrap();
            let mode = if *exec { 0o755 } else { 0o644 };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        Op::Delete(p) => rm(&root.join(p)),
        Op::Mkdir(p) => {
            let p = root.join(p);
            clear_parents(&p);
            if !p.is_dir() {
                rm(&p);
                std::fs::create_dir(&p).unwrap();
            }
        }
        Op::Rename(a, b) => {
            let (a, b) = (root.join(a), root.join(b));
            if a == b
                || b.starts_with(&a)
                || a.starts_with(&b)
                || std::fs::symlink_metadata(&a).is_err()
            {
                return;
            }
            clear_parents(&b);
            rm(&b);
            std::fs::rename(&a, &b).unwrap();
        }
    }
}

fn check_sequence(ops: Vec<Op>, encrypted: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let b = Arc::new(on(
            store,
            "model",
            if encrypted { key_opt(KEY) } else { None },
        ));
        let mut w = Workbench::new(b.clone());
        let mut states = Vec::new();
        for op in &ops {
            apply(&w.src, op);
            w.sync().await;
            let id = b.head().await.unwrap().map(|h| h.id);
            states.push((id, snapshot_of(&w.src)));
        }
        for (i, (id, want)) in states.iter().enumerate() {
            let Some(id) = id else { continue };
            let dest = w.tmp.path().join(format!("at-{i}"));
            b.restore(
                &dest,
                &RestoreOptions {
                    at: Some(id.clone()),
                    ..RestoreOptions::default()
                },
            )
            .await
            .unwrap();
            let got = snapshot_of(&dest);
            assert_eq!(&got, want, "after step {i} ({:?}) of {ops:?}", ops[i]);
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any sequence of adds, edits, deletes, renames, mode changes and
    /// dir ↔ file swaps restores, at every snapshot id, exactly the tree
    /// that was pushed then.
    #[test]
    fn every_snapshot_restores_exactly_its_tree(ops in prop::collection::vec(op_strategy(), 1..8), encrypted in any::<bool>()) {
        check_sequence(ops, encrypted);
    }
}

/// Writes two files with recognisable names and content, and pushes them.
async fn push_secrets(w: &mut Workbench) {
    w.write(
        "secret-name-XYZZY.txt",
        &b"plaintext-marker-PLUGH ".repeat(50),
    );
    w.write(
        "notes/other-secret-name.md",
        b"plaintext-marker-PLUGH again",
    );
    w.sync().await;
}

/// An encrypted repository of two snapshots ([`push_secrets`], then one
/// more file).
async fn encrypted_repo(store: Arc<dyn ObjectStore>, prefix: &str) -> Arc<ObjectStoreBackend> {
    let b = Arc::new(on(store, prefix, key_opt(KEY)));
    let mut w = Workbench::new(b.clone());
    push_secrets(&mut w).await;
    w.write("notes/second.md", b"second push");
    w.sync().await;
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_repository_reveals_no_name_or_content() {
    let mut stores: Vec<Store> = vec![Store::Memory, Store::File];
    stores.extend(Store::s3());
    for store in stores {
        let mut f = StoreFixture::new(store, Layout::Snapshots);
        f.options.encryption_key = key_opt(KEY);
        let b = Arc::new(f.backend(&unique("secret")));
        let mut w = Workbench::new(b.clone());
        push_secrets(&mut w).await;
        let all = objects(&b).await;
        assert!(all.len() >= 5, "{all:?}");
        for (k, bytes) in &all {
            for needle in ["XYZZY", "secret-name", "PLUGH", "notes"] {
                assert!(!k.contains(needle), "object name {k} reveals {needle}");
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{k} holds {needle} in plaintext"
                );
            }
        }
        let dest = w.restore_new("restored").await;
        w.assert_same(&dest);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_key_is_a_configuration_error() {
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    encrypted_repo(Arc::clone(&store), "keys").await;
    let dest = tempfile::tempdir().unwrap();
    for (k, want) in [
        (None, "the repository is encrypted"),
        (key_opt(OTHER_KEY), "does not open this repository"),
        (key_opt("tether-key-1:short"), "encryption key"),
    ] {
        let b = on(Arc::clone(&store), "keys", k);
        let e = b
            .restore(&dest.path().join("x"), &RestoreOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, BackendError::Config(_)), "{e:?}");
        assert!(e.to_string().contains(want), "{e}");
        assert!(!e.to_string().contains("BwcH"), "the key leaked: {e}");
    }
    // A key given for a plaintext repository is refused too.
    let b = Arc::new(on(Arc::clone(&store), "plain", None));
    let mut w = Workbench::new(b);
    w.write("a", b"a");
    w.sync().await;
    let e = on(Arc::clone(&store), "plain", key_opt(KEY))
        .head()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not encrypted"), "{e}");
}

/// Restores into a fresh directory and returns the error, checking that
/// nothing was renamed into place.
async fn refused(b: &ObjectStoreBackend, want: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    let e = b
        .restore(&dest, &RestoreOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(want), "{e}");
    let written: Vec<_> = std::fs::read_dir(&dest)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        written.iter().all(|n| n.to_string_lossy() == "notes"),
        "written despite the refusal: {written:?}"
    );
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_swapped_truncated_or_replayed_units_are_refused() {
    let fresh = || -> Arc<dyn ObjectStore> { Arc::new(object_store::memory::InMemory::new()) };
    let under =
        |b: &ObjectStoreBackend, all: &[(String, Bytes)], dir: &str| -> Vec<(String, Bytes)> {
            let p = format!("{}/{dir}/", b.prefix());
            all.iter()
                .filter(|(k, _)| k.starts_with(&p))
                .cloned()
                .collect()
        };
    let put = |b: &ObjectStoreBackend, k: &str, v: Bytes| {
        let store = Arc::clone(b.store());
        let k = object_store::path::Path::from(k);
        async move { store.put(&k, v.into()).await.unwrap() }
    };

    // One flipped byte in any tree node, pack or snapshot record.
    for dir in ["trees", "data", "snapshots"] {
        let store = fresh();
        let b = encrypted_repo(Arc::clone(&store), "t").await;
        let all = objects(&b).await;
        for (k, v) in under(&b, &all, dir) {
            let mut bad = v.to_vec();
            let mid = bad.len() / 2;
            bad[mid] ^= 1;
            put(&b, &k, Bytes::from(bad)).await;
        }
        let b = on(Arc::clone(&store), "t", key_opt(KEY));
        refused(&b, "does not authenticate").await;
    }
    // Two snapshot records swapped.
    {
        let store = fresh();
        let b = encrypted_repo(Arc::clone(&store), "s").await;
        let snaps = under(&b, &objects(&b).await, "snapshots");
        assert_eq!(snaps.len(), 2);
        put(&b, &snaps[0].0, snaps[1].1.clone()).await;
        put(&b, &snaps[1].0, snaps[0].1.clone()).await;
        let b = on(Arc::clone(&store), "s", key_opt(KEY));
        refused(&b, "does not authenticate").await;
    }
    // A truncated pack.
    {
        let store = fresh();
        let b = encrypted_repo(Arc::clone(&store), "tr").await;
        for (k, v) in under(&b, &objects(&b).await, "data") {
            put(&b, &k, v.slice(..v.len() / 2)).await;
        }
        let b = on(Arc::clone(&store), "tr", key_opt(KEY));
        let tmp = tempfile::tempdir().unwrap();
        let e = b
            .restore(&tmp.path().join("d"), &RestoreOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                BackendError::InvalidRemote { .. } | BackendError::Remote { .. }
            ),
            "{e:?}"
        );
    }
    // An old head replayed under a newer generation number.
    {
        let store = fresh();
        let b = encrypted_repo(Arc::clone(&store), "r").await;
        let heads = under(&b, &objects(&b).await, "heads");
        assert_eq!(heads.len(), 2, "{heads:?}");
        let first = heads
            .iter()
            .find(|(k, _)| k.ends_with("00000000000000000001"))
            .unwrap();
        put(
            &b,
            key(&b, "heads/00000000000000000003").as_ref(),
            first.1.clone(),
        )
        .await;
        let b = on(Arc::clone(&store), "r", key_opt(KEY));
        refused(&b, "does not authenticate").await;
    }
    // The marker rewritten to say "plaintext", or with another mac.
    {
        let store = fresh();
        let b = encrypted_repo(Arc::clone(&store), "m").await;
        let marker = String::from_utf8(
            objects(&b)
                .await
                .into_iter()
                .find(|(k, _)| k.ends_with("/config"))
                .unwrap()
                .1
                .to_vec(),
        )
        .unwrap();
        let start = marker.find(",\"encryption\"").unwrap();
        let plain = format!("{}}}", &marker[..start]);
        put(&b, key(&b, "config").as_ref(), Bytes::from(plain)).await;
        let e = on(Arc::clone(&store), "m", key_opt(KEY))
            .head()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not encrypted"), "{e}");
        // Without the key, sealed units are not mistaken for plaintext.
        assert!(on(Arc::clone(&store), "m", None).head().await.is_err());
        let mac_at = marker.find("\"mac\":\"").unwrap() + 7;
        let mut altered = marker.clone().into_bytes();
        altered[mac_at] = if altered[mac_at] == b'0' { b'1' } else { b'0' };
        put(&b, key(&b, "config").as_ref(), Bytes::from(altered)).await;
        let e = on(Arc::clone(&store), "m", key_opt(KEY))
            .head()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("altered"), "{e}");
    }
}
