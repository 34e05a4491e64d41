//! A webhook built on the crate keeps serving through a full CA rotation:
//! real TLS handshakes on loopback, hour by hour of a fake clock, with
//! clients holding the bundle from before the rotation, the bundle published
//! at the rotation, the bundle after it, and whatever is current.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use webhook_certs::{CertRequest, CertRotation, DirStore, RotationPolicy, server_config};

const HOUR: Duration = Duration::from_secs(3600);

fn policy() -> RotationPolicy {
    // Same shape as the defaults, scaled down to hours.
    RotationPolicy {
        ca_validity: 100 * HOUR,
        ca_renew_before: 30 * HOUR,
        serving_validity: 20 * HOUR,
        serving_renew_before: 5 * HOUR,
        ca_overlap: 2 * HOUR,
    }
}

fn at(hours: u64) -> (SystemTime, OffsetDateTime) {
    let t = SystemTime::UNIX_EPOCH
        + Duration::from_secs(1_800_000_000)
        + HOUR * u32::try_from(hours).unwrap();
    (t, OffsetDateTime::from(t))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_old_and_new_bundles_connect_throughout_a_ca_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let request = CertRequest::new("hook", "tether")
        .unwrap()
        .with_ip("127.0.0.1".parse().unwrap());
    let rotation = CertRotation::new(DirStore::new(dir.path()), request, policy());
    let first = rotation.reconcile(at(0).0).await.unwrap();
    let old_bundle = first.ensured.bundle.ca_bundle_pem();
    let addr = common::start_server(server_config(rotation.resolver()).unwrap());

    let mut rotation_bundle: Option<String> = None; // [new, old], published at the switch
    let mut after_bundle: Option<String> = None; // [new], after the overlap
    let mut bundle_sizes = Vec::new();
    let mut served_leaves = Vec::new();
    for hour in 0..=99 {
        let (t, now) = at(hour);
        let step = rotation.reconcile(t).await.unwrap();
        let bundle = &step.ensured.bundle;
        let current = bundle.ca_bundle_pem();
        if bundle_sizes.last() != Some(&bundle.ca_certs().len()) {
            bundle_sizes.push(bundle.ca_certs().len());
            match bundle.ca_certs().len() {
                2 => rotation_bundle = Some(current.clone()),
                1 if rotation_bundle.is_some() => after_bundle = Some(current.clone()),
                _ => {}
            }
        }

        for name in [
            "hook",
            "hook.tether",
            "hook.tether.svc",
            "hook.tether.svc.cluster.local",
            "127.0.0.1",
        ] {
            let leaf = common::handshake(addr, name, &current, now)
                .unwrap_or_else(|e| panic!("hour {hour}, {name}, current bundle: {e}"));
            // The server presents exactly the stored serving certificate:
            // swapped in memory, no restart.
            assert_eq!(leaf, bundle.serving_cert().der(), "hour {hour}");
        }
        common::handshake(addr, "hook.tether.svc", &old_bundle, now)
            .unwrap_or_else(|e| panic!("hour {hour}, bundle from before the rotation: {e}"));
        if let Some(b) = &rotation_bundle {
            common::handshake(addr, "hook.tether.svc", b, now)
                .unwrap_or_else(|e| panic!("hour {hour}, bundle of the rotation: {e}"));
        }
        if let Some(b) = &after_bundle {
            common::handshake(addr, "hook.tether.svc", b, now)
                .unwrap_or_else(|e| panic!("hour {hour}, bundle after the rotation: {e}"));
        }
        assert!(
            common::handshake(addr, "other.tether.svc", &current, now).is_err(),
            "hour {hour}: a name outside the certificate must fail"
        );
        if served_leaves.last() != Some(&bundle.serving_cert().serial) {
            served_leaves.push(bundle.serving_cert().serial.clone());
        }
    }
    // One CA, then old+new during the overlap, then the new one alone.
    assert_eq!(bundle_sizes, [1, 2, 1]);
    // Serving certificates were renewed several times along the way.
    assert!(served_leaves.len() >= 5, "{served_leaves:?}");

    // Once the old CA has expired, only a client that never refreshed its
    // bundle is left behind; everyone else keeps connecting.
    let (t, now) = at(101);
    let step = rotation.reconcile(t).await.unwrap();
    let current = step.ensured.bundle.ca_bundle_pem();
    assert!(common::handshake(addr, "hook.tether.svc", &old_bundle, now).is_err());
    common::handshake(addr, "hook.tether.svc", &current, now).unwrap();
    common::handshake(addr, "hook.tether.svc", after_bundle.as_ref().unwrap(), now).unwrap();
}

#[tokio::test]
async fn a_resolver_without_a_certificate_refuses_handshakes() {
    let rotation = CertRotation::new(
        DirStore::new(tempfile::tempdir().unwrap().path().join("never")),
        CertRequest::new("hook", "tether").unwrap(),
        RotationPolicy::default(),
    );
    assert!(!rotation.resolver().has_certificate());
    let addr = common::start_server(server_config(rotation.resolver()).unwrap());
    let any = webhook_certs::generate_bundle(
        &CertRequest::new("hook", "tether").unwrap(),
        &RotationPolicy::default(),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let now = OffsetDateTime::now_utc();
    assert!(common::handshake(addr, "hook.tether.svc", &any.ca_bundle_pem(), now).is_err());
}

#[tokio::test]
async fn the_rotation_loop_stores_and_serves_on_its_first_tick() {
    let dir = tempfile::tempdir().unwrap();
    let rotation = CertRotation::new(
        DirStore::new(dir.path()),
        CertRequest::new("hook", "tether").unwrap(),
        RotationPolicy::default(),
    );
    let resolver = rotation.resolver();
    let task = tokio::spawn(rotation.run(HOUR));
    for _ in 0..200 {
        if resolver.has_certificate() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(resolver.has_certificate());
    assert!(!task.is_finished(), "the loop keeps running");
    task.abort();
    let on_disk = std::fs::read_to_string(dir.path().join("tls.crt")).unwrap();
    let addr = common::start_server(server_config(resolver).unwrap());
    let ca = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    let leaf = common::handshake(addr, "hook.tether.svc", &ca, OffsetDateTime::now_utc()).unwrap();
    use rustls::pki_types::pem::PemObject;
    let stored_leaf = rustls::pki_types::CertificateDer::pem_slice_iter(on_disk.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(leaf, stored_leaf.as_ref(), "serves what it stored");
}
