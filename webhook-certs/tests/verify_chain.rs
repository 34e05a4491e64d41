//! Chain verification with rustls's webpki verifier: every SAN verifies,
//! a name outside the certificate does not, and neither does an expired or
//! not-yet-valid certificate; ECDSA and RSA alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use time::OffsetDateTime;
use webhook_certs::{CertBundle, CertRequest, KeyAlgorithm, RotationPolicy, generate_bundle};

fn unix(t: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(t.unix_timestamp() as u64))
}

fn verify(
    bundle: &CertBundle,
    trust_pem: &str,
    name: &str,
    at: OffsetDateTime,
) -> Result<(), String> {
    let verifier =
        WebPkiServerVerifier::builder_with_provider(common::roots(trust_pem), common::provider())
            .build()
            .unwrap();
    let chain: Vec<CertificateDer<'_>> = bundle
        .serving_chain()
        .iter()
        .map(|c| CertificateDer::from(c.der()))
        .collect();
    let name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &name, &[], unix(at))
        .map(drop)
        .map_err(|e| e.to_string())
}

fn check_every_san(algorithm: KeyAlgorithm) {
    let request = CertRequest::new("hook", "tether")
        .unwrap()
        .with_cluster_domain("corp.internal")
        .unwrap()
        .with_dns_name("hook.example.com")
        .unwrap()
        .with_ip("10.1.2.3".parse().unwrap())
        .with_ip("::1".parse().unwrap())
        .with_key_algorithm(algorithm);
    let now = OffsetDateTime::now_utc();
    let bundle = generate_bundle(&request, &RotationPolicy::default(), now).unwrap();
    let trust = bundle.ca_bundle_pem();
    let mut names = request.dns_names();
    names.extend(request.ip_addresses().iter().map(|ip| ip.to_string()));
    assert_eq!(names.len(), 7);
    for name in &names {
        verify(&bundle, &trust, name, now).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for wrong in [
        "other.tether.svc",
        "hook.other.svc",
        "hook.tether.svc.cluster.local",
        "10.1.2.4",
    ] {
        let err = verify(&bundle, &trust, wrong, now).unwrap_err();
        assert!(err.contains("not valid for name"), "{wrong}: {err}");
    }
    // Validity: 90 days by default; invalid after, and before notBefore.
    let err = verify(&bundle, &trust, "hook", now + time::Duration::days(91)).unwrap_err();
    assert!(err.contains("expired"), "{err}");
    let err = verify(&bundle, &trust, "hook", now - time::Duration::hours(1)).unwrap_err();
    assert!(err.contains("not valid yet"), "{err}");
    // A different CA is not trusted.
    let ecdsa = request.clone().with_key_algorithm(KeyAlgorithm::EcdsaP256);
    let stranger = generate_bundle(&ecdsa, &RotationPolicy::default(), now).unwrap();
    let err = verify(&bundle, &stranger.ca_bundle_pem(), "hook", now).unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[test]
fn ecdsa_chain_verifies_for_every_san_and_only_those() {
    check_every_san(KeyAlgorithm::EcdsaP256);
}

#[test]
fn rsa_chain_verifies_for_every_san_and_only_those() {
    check_every_san(KeyAlgorithm::Rsa2048);
}
