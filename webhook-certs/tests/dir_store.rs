//! The directory store through the public API: layout and modes, reuse,
//! regeneration when names change, repair of broken files, compare-and-swap,
//! and concurrent writers converging on one CA.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::time::SystemTime;

use webhook_certs::{
    CertRequest, CertStore, DirStore, Error, RotationPolicy, describe, ensure_certs,
    generate_bundle,
};

fn request() -> CertRequest {
    CertRequest::new("hook", "tether").unwrap()
}

#[tokio::test]
async fn writes_pem_files_with_key_modes_and_reuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::new(dir.path().join("certs"));
    let now = SystemTime::now();
    let first = ensure_certs(&store, &request(), &RotationPolicy::default(), now)
        .await
        .unwrap();
    assert!(first.written);

    let path = dir.path().join("certs");
    for (name, mode) in [
        ("ca.crt", 0o644),
        ("ca.key", 0o600),
        ("tls.crt", 0o644),
        ("tls.key", 0o600),
    ] {
        let meta = std::fs::metadata(path.join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
    }
    assert_eq!(
        std::fs::read_to_string(path.join("ca.crt")).unwrap(),
        first.bundle.ca_bundle_pem()
    );
    assert_eq!(
        std::fs::read_to_string(path.join("tls.key")).unwrap(),
        first.bundle.tls_key_pem().expose()
    );
    let leftovers: Vec<_> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let again = ensure_certs(&store, &request(), &RotationPolicy::default(), now)
        .await
        .unwrap();
    assert!(!again.written);
    assert!(again.plan.is_noop());
    assert_eq!(again.bundle, first.bundle);
}

#[tokio::test]
async fn changed_names_reissue_the_serving_certificate_under_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::new(dir.path());
    let now = SystemTime::now();
    let policy = RotationPolicy::default();
    let first = ensure_certs(&store, &request(), &policy, now)
        .await
        .unwrap();
    let wider = request().with_dns_name("hook.example.com").unwrap();
    let second = ensure_certs(&store, &wider, &policy, now).await.unwrap();
    assert!(second.written);
    assert_eq!(second.bundle.current_ca(), first.bundle.current_ca());
    assert!(
        second
            .bundle
            .serving_cert()
            .dns_names
            .contains(&"hook.example.com".to_owned())
    );
    let text = describe(&store, now).await.unwrap().to_string();
    assert!(text.contains("hook.example.com"), "{text}");
    assert!(text.contains("CA (current)"), "{text}");
    assert!(
        text.contains("expires") && text.contains(" days)"),
        "{text}"
    );
}

#[tokio::test]
async fn broken_files_are_repaired_and_described() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::new(dir.path());
    let now = SystemTime::now();
    let policy = RotationPolicy::default();
    let first = ensure_certs(&store, &request(), &policy, now)
        .await
        .unwrap();
    std::fs::write(dir.path().join("tls.crt"), "not a certificate").unwrap();
    let text = describe(&store, now).await.unwrap().to_string();
    assert!(text.contains("problem: could not parse tls.crt"), "{text}");
    let repaired = ensure_certs(&store, &request(), &policy, now)
        .await
        .unwrap();
    assert!(repaired.written);
    assert_eq!(repaired.bundle.current_ca(), first.bundle.current_ca());
    assert_ne!(repaired.bundle.serving_cert(), first.bundle.serving_cert());
    assert!(describe(&store, now).await.unwrap().problems.is_empty());
}

#[tokio::test]
async fn save_refuses_a_stale_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::new(dir.path());
    let now = time::OffsetDateTime::now_utc();
    let bundle = generate_bundle(&request(), &RotationPolicy::default(), now).unwrap();
    let empty = store.load().await.unwrap();
    assert!(empty.revision.is_absent());
    store.save(&bundle, &empty.revision).await.unwrap();
    let other = generate_bundle(&request(), &RotationPolicy::default(), now).unwrap();
    let err = store.save(&other, &empty.revision).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert!(err.to_string().contains(&dir.path().display().to_string()));
    // Still the first bundle on disk.
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.files.ca_crt, Some(bundle.ca_bundle_pem()));
    store.save(&other, &loaded.revision).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_converge_on_one_ca() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let store = DirStore::new(dir.path());
            tokio::spawn(async move {
                ensure_certs(&store, &request(), &RotationPolicy::default(), now).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap().unwrap());
    }
    let on_disk = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    for result in &results {
        assert_eq!(result.bundle.ca_bundle_pem(), on_disk);
    }
    assert_eq!(results.iter().filter(|r| r.written).count(), 1);
}
