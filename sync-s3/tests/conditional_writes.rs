//! Create-if-absent (`PutMode::Create`), which the head protocol of both
//! layouts relies on (`heads/<n>`, `.tether/mirror/<n>`: a taken number
//! means another writer won), checked on every store the tests run:
//! SeaweedFS (S3 `If-None-Match: *`), Azurite (Azure `If-None-Match: *`),
//! `file://` and `memory://`. A second create of a key must be refused
//! with `AlreadyExists` or `Precondition` (what `heads.rs` reads as
//! "taken") and leave the first object as it was; of several creates
//! racing for one key exactly one succeeds. FORMAT.md records the results.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::{Store, StoreFixture, key, unique};
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sync_core::Backend as _;
use sync_s3::Layout;

fn create_opts() -> PutOptions {
    PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    }
}

fn taken(r: &object_store::Result<object_store::PutResult>) -> bool {
    matches!(
        r,
        Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. })
    )
}

async fn create_if_absent_is_enforced(store: Store) {
    let f = StoreFixture::new(store, Layout::Snapshots);
    let b = f.backend(&unique("conditional"));
    let s = b.store();

    // A second create of one key is refused; the first object stays.
    let k = key(&b, "heads/00000000000000000001");
    s.put_opts(&k, PutPayload::from_static(b"first"), create_opts())
        .await
        .unwrap_or_else(|e| panic!("{}: first create: {e}", b.describe()));
    let second = s
        .put_opts(&k, PutPayload::from_static(b"second"), create_opts())
        .await;
    assert!(
        taken(&second),
        "{}: a create of an existing key was not refused as taken: {second:?}",
        b.describe()
    );
    let got = s.get(&k).await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], b"first", "{}", b.describe());
    if let Err(e) = &second {
        eprintln!("{}: second create refused: {e}", b.describe());
    }

    // Writers racing for one number: exactly one wins.
    const RACERS: usize = 8;
    let k = key(&b, "heads/00000000000000000002");
    let results = futures::future::join_all((0..RACERS).map(|i| {
        let (s, k) = (std::sync::Arc::clone(s), k.clone());
        async move {
            let body = Bytes::from(format!("writer {i}"));
            (
                body.clone(),
                s.put_opts(&k, PutPayload::from(body), create_opts()).await,
            )
        }
    }))
    .await;
    let winners: Vec<&Bytes> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(body, _)| body)
        .collect();
    for (_, r) in &results {
        assert!(
            r.is_ok() || taken(r),
            "{}: a racing create failed otherwise: {r:?}",
            b.describe()
        );
    }
    assert_eq!(
        winners.len(),
        1,
        "{}: {} of {RACERS} racing creates succeeded",
        b.describe(),
        winners.len()
    );
    let got = s.get(&k).await.unwrap().bytes().await.unwrap();
    assert_eq!(&got, winners[0], "{}", b.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_enforces_create_if_absent() {
    let Some(store) = Store::s3() else { return };
    create_if_absent_is_enforced(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_enforces_create_if_absent() {
    let Some(store) = Store::azure() else { return };
    create_if_absent_is_enforced(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_enforces_create_if_absent() {
    create_if_absent_is_enforced(Store::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_enforces_create_if_absent() {
    create_if_absent_is_enforced(Store::Memory).await;
}
