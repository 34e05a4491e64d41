//! Pure certificate generation with rcgen: what a webhook's certificates
//! contain, and nothing about where they are kept or when they are made.
//!
//! * The CA is self-signed, `basicConstraints CA:TRUE, pathlen:1` (one level
//!   below it is needed for the cross-signed CA of a rotation), key usages
//!   `keyCertSign`, `cRLSign`, `digitalSignature`. Its common name carries
//!   the service and a short key identifier, so two CAs of one service never
//!   share a subject and a verifier can never confuse them.
//! * A rotated CA also gets a *cross-signed* copy: the same subject and key,
//!   issued by the old CA (`pathlen:0`, expiring with the old CA). Served
//!   after the leaf, it lets a client that still trusts only the old CA
//!   verify a leaf signed by the new one.
//! * The serving certificate is `CA:FALSE` with `digitalSignature` (plus
//!   `keyEncipherment` for RSA keys, which older TLS 1.2 clients expect),
//!   extended key usage `serverAuth`, and the SANs of
//!   [`CertRequest::dns_names`] and [`CertRequest::ip_addresses`].
//! * Every certificate is back-dated by [`BACKDATE`] so a node whose clock is
//!   a little behind does not see it as "not yet valid".

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::bundle::PrivateKeyPem;
use crate::error::{Error, Result};

/// How far before "now" every generated certificate's `notBefore` lies, to
/// tolerate clocks that lag behind the clock of the pod that made it.
pub const BACKDATE: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// The default Kubernetes cluster domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// Which kind of key the CA and the serving certificate get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256: small, fast to generate (well under a
    /// millisecond) and accepted by every Kubernetes API server. The default.
    #[default]
    EcdsaP256,
    /// RSA with a 2048-bit modulus and SHA-256 signatures, for environments
    /// whose policy demands RSA. Generation takes tens to hundreds of
    /// milliseconds. Needs the `rsa` cargo feature (on by default).
    #[cfg(feature = "rsa")]
    Rsa2048,
}

/// What a webhook's serving certificate must cover: the Kubernetes Service in
/// front of the webhook, plus any extra DNS names and IP addresses.
///
/// Build one with [`CertRequest::new`] and the `with_*` methods; every input
/// is validated, so an invalid name is an error here rather than a
/// certificate nobody can verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRequest {
    service: String,
    namespace: String,
    cluster_domain: String,
    extra_dns_names: Vec<String>,
    extra_ips: Vec<IpAddr>,
    key_algorithm: KeyAlgorithm,
}

impl CertRequest {
    /// A request for the Service `service` in namespace `namespace`, with the
    /// cluster domain `cluster.local`, no extra names and ECDSA P-256 keys.
    pub fn new(service: &str, namespace: &str) -> Result<Self> {
        Ok(Self {
            service: validate_label("service", service)?,
            namespace: validate_label("namespace", namespace)?,
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_owned(),
            extra_dns_names: Vec::new(),
            extra_ips: Vec::new(),
            key_algorithm: KeyAlgorithm::default(),
        })
    }

    /// Use another cluster domain than `cluster.local` for the fully
    /// qualified SAN (`svc.ns.svc.<domain>`).
    pub fn with_cluster_domain(mut self, domain: &str) -> Result<Self> {
        self.cluster_domain = validate_dns_name("cluster domain", domain, false)?;
        Ok(self)
    }

    /// Add a DNS name to the serving certificate (a leading `*.` wildcard is
    /// allowed). Names are compared case-insensitively and stored lowercase.
    pub fn with_dns_name(mut self, name: &str) -> Result<Self> {
        let name = validate_dns_name("extra DNS name", name, true)?;
        if !self.extra_dns_names.contains(&name) {
            self.extra_dns_names.push(name);
        }
        Ok(self)
    }

    /// Add an IP address to the serving certificate (for a webhook reached by
    /// `clientConfig.url` with an IP, or for tests on loopback).
    pub fn with_ip(mut self, ip: IpAddr) -> Self {
        if !self.extra_ips.contains(&ip) {
            self.extra_ips.push(ip);
        }
        self
    }

    /// Choose the key algorithm for certificates generated from now on.
    /// Existing certificates are not regenerated because of this choice; the
    /// next renewal (or CA rotation) uses it.
    pub fn with_key_algorithm(mut self, algorithm: KeyAlgorithm) -> Self {
        self.key_algorithm = algorithm;
        self
    }

    /// The Service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The key algorithm for new keys.
    pub fn key_algorithm(&self) -> KeyAlgorithm {
        self.key_algorithm
    }

    /// Every DNS name the serving certificate covers, in this order: `svc`,
    /// `svc.ns`, `svc.ns.svc`, `svc.ns.svc.<cluster domain>`, then the extra
    /// names. No duplicates.
    pub fn dns_names(&self) -> Vec<String> {
        let (s, n, d) = (&self.service, &self.namespace, &self.cluster_domain);
        let mut names = vec![
            s.clone(),
            format!("{s}.{n}"),
            format!("{s}.{n}.svc"),
            format!("{s}.{n}.svc.{d}"),
        ];
        for extra in &self.extra_dns_names {
            if !names.contains(extra) {
                names.push(extra.clone());
            }
        }
        names
    }

    /// The IP addresses the serving certificate covers.
    pub fn ip_addresses(&self) -> &[IpAddr] {
        &self.extra_ips
    }
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub(crate) struct PemPair {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: PrivateKeyPem,
}

/// A freshly generated CA, with its cross-signed copy when an old CA signed it.
#[derive(Debug)]
pub(crate) struct NewCa {
    pub(crate) ca: PemPair,
    pub(crate) cross_signed_pem: Option<String>,
}

/// Generates a CA valid from `now - BACKDATE` to `not_after`. With
/// `cross_signer`, also issues the new CA's certificate from that old CA,
/// valid until `min(not_after, old CA's notAfter)` (`old_not_after`).
pub(crate) fn generate_ca(
    request: &CertRequest,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
    cross_signer: Option<(&PemPair, OffsetDateTime)>,
) -> Result<NewCa> {
    let key = generate_key(request.key_algorithm, "generate the CA key")?;
    let mut params = CertificateParams::default();
    params.not_before = backdated(now);
    params.not_after = not_after;
    let key_id = params.key_identifier(&key);
    let short_id: String = key_id.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "webhook-certs");
    dn.push(
        DnType::CommonName,
        format!(
            "webhook-certs CA {}.{} {short_id}",
            request.service, request.namespace
        ),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params
        .self_signed(&key)
        .map_err(Error::generate("self-sign the CA certificate"))?;

    let cross_signed_pem = match cross_signer {
        None => None,
        Some((old, old_not_after)) => {
            let old_issuer = load_issuer(old)?;
            let mut cross = params.clone();
            cross.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            cross.not_after = not_after.min(old_not_after);
            cross.use_authority_key_identifier_extension = true;
            let cert = cross
                .signed_by(&key, &old_issuer)
                .map_err(Error::generate("cross-sign the new CA with the old CA"))?;
            Some(cert.pem())
        }
    };
    Ok(NewCa {
        ca: PemPair {
            cert_pem: cert.pem(),
            key_pem: PrivateKeyPem::new(key.serialize_pem()),
        },
        cross_signed_pem,
    })
}

/// Issues a serving certificate for `request` from `ca`, valid from
/// `now - BACKDATE` to `not_after`.
pub(crate) fn issue_serving_cert(
    request: &CertRequest,
    ca: &PemPair,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<PemPair> {
    let issuer = load_issuer(ca)?;
    let key = generate_key(request.key_algorithm, "generate the serving key")?;
    let mut params = CertificateParams::default();
    params.not_before = backdated(now);
    params.not_after = not_after;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("{}.{}.svc", request.service, request.namespace),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    #[cfg(feature = "rsa")]
    if request.key_algorithm == KeyAlgorithm::Rsa2048 {
        params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let mut sans = Vec::new();
    for name in request.dns_names() {
        let ia5 = name.clone().try_into().map_err(|_| Error::InvalidName {
            what: "DNS name",
            value: name,
            reason: "not an IA5 string",
        })?;
        sans.push(SanType::DnsName(ia5));
    }
    sans.extend(
        request
            .ip_addresses()
            .iter()
            .copied()
            .map(SanType::IpAddress),
    );
    params.subject_alt_names = sans;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(Error::generate("sign the serving certificate"))?;
    Ok(PemPair {
        cert_pem: cert.pem(),
        key_pem: PrivateKeyPem::new(key.serialize_pem()),
    })
}

fn backdated(now: OffsetDateTime) -> OffsetDateTime {
    // BACKDATE is a small constant, so the conversion cannot fail.
    now - Duration::seconds(BACKDATE.as_secs() as i64)
}

fn load_issuer(ca: &PemPair) -> Result<Issuer<'static, KeyPair>> {
    let key = KeyPair::from_pem(ca.key_pem.expose()).map_err(|e| Error::Parse {
        what: "the CA private key".into(),
        reason: key_error_reason(&e),
    })?;
    Issuer::from_ca_cert_pem(&ca.cert_pem, key).map_err(|e| Error::Parse {
        what: "the CA certificate".into(),
        reason: e.to_string(),
    })
}

/// rcgen's error text for keys never contains key bytes, but keep the
/// message generic anyway: it ends up in logs.
fn key_error_reason(e: &rcgen::Error) -> String {
    match e {
        rcgen::Error::PemError(_) => "not a PEM document".into(),
        _ => "not a PKCS#8 ECDSA P-256/P-384, Ed25519 or RSA private key".into(),
    }
}

fn generate_key(algorithm: KeyAlgorithm, action: &'static str) -> Result<KeyPair> {
    match algorithm {
        KeyAlgorithm::EcdsaP256 => {
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(Error::generate(action))
        }
        #[cfg(feature = "rsa")]
        KeyAlgorithm::Rsa2048 => {
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
                .map_err(|e| Error::RsaKeyGeneration(e.to_string()))?;
            let der = key
                .to_pkcs8_der()
                .map_err(|e| Error::RsaKeyGeneration(e.to_string()))?;
            let pkcs8 = rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_bytes());
            KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)
                .map_err(Error::generate(action))
        }
    }
}

/// A Kubernetes Service or namespace name: an RFC 1123 label.
fn validate_label(what: &'static str, value: &str) -> Result<String> {
    let reason = label_problem(value);
    match reason {
        Some(reason) => Err(Error::InvalidName {
            what,
            value: value.to_owned(),
            reason,
        }),
        None => Ok(value.to_owned()),
    }
}

fn label_problem(label: &str) -> Option<&'static str> {
    dns1123::label(label).err().map(dns1123::Problem::reason)
}

/// A DNS name: dot-separated labels, lowercased, at most 253 characters, an
/// optional trailing dot removed, and (if allowed) a leading `*.` wildcard.
fn validate_dns_name(what: &'static str, value: &str, allow_wildcard: bool) -> Result<String> {
    let err = |reason| Error::InvalidName {
        what,
        value: value.to_owned(),
        reason,
    };
    let lower = value.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.len() > 253 {
        return Err(err("longer than 253 characters"));
    }
    let rest = match name.strip_prefix("*.") {
        Some(rest) if allow_wildcard => rest,
        Some(_) => return Err(err("wildcards are not allowed here")),
        None => name,
    };
    for label in rest.split('.') {
        if let Some(reason) = label_problem(label) {
            return Err(err(reason));
        }
    }
    Ok(name.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn sans_cover_every_service_form_plus_extras() {
        let request = CertRequest::new("hook", "tether")
            .and_then(|r| r.with_cluster_domain("corp.example"))
            .and_then(|r| r.with_dns_name("Hook.Example.COM."))
            .and_then(|r| r.with_dns_name("hook")) // duplicate of a built-in form
            .map(|r| r.with_ip("127.0.0.1".parse().unwrap()))
            .unwrap();
        assert_eq!(
            request.dns_names(),
            [
                "hook",
                "hook.tether",
                "hook.tether.svc",
                "hook.tether.svc.corp.example",
                "hook.example.com"
            ]
        );
        assert_eq!(request.ip_addresses().len(), 1);
    }

    #[test]
    fn invalid_names_are_rejected_with_context() {
        for (service, namespace) in [
            ("", "ns"),
            ("Hook", "ns"),
            ("hook", "-ns"),
            ("ho_ok", "ns"),
            ("hook", &"n".repeat(64)),
        ] {
            let err = CertRequest::new(service, namespace).unwrap_err();
            assert!(matches!(err, Error::InvalidName { .. }), "{err}");
        }
        let request = CertRequest::new("hook", "ns").unwrap();
        assert!(request.clone().with_cluster_domain("*.local").is_err());
        assert!(request.clone().with_dns_name("a..b").is_err());
        assert!(request.clone().with_dns_name("*.hook.example").is_ok());
        let err = request.with_dns_name("bad name").unwrap_err();
        assert!(err.to_string().contains("bad name"), "{err}");
    }

    #[test]
    fn serving_certificate_has_server_auth_key_usage_and_sans() {
        let request = CertRequest::new("hook", "ns")
            .unwrap()
            .with_ip("10.0.0.1".parse().unwrap());
        let now = OffsetDateTime::now_utc();
        let ca = generate_ca(&request, now, now + Duration::days(10), None).unwrap();
        let leaf = issue_serving_cert(&request, &ca.ca, now, now + Duration::days(1)).unwrap();
        let der = pem_to_der(&leaf.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(!cert.is_ca());
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature());
        assert!(!ku.key_cert_sign());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth);
        assert!(!eku.client_auth);
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(san.general_names.len(), 5);
        assert_eq!(
            cert.validity().not_before.to_datetime(),
            (now - Duration::seconds(300))
                .replace_nanosecond(0)
                .unwrap()
        );

        let der = pem_to_der(&ca.ca.cert_pem);
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(ca_cert.is_ca());
        let ku = ca_cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert!(
            ca_cert
                .subject()
                .to_string()
                .contains("webhook-certs CA hook.ns")
        );
    }

    #[test]
    fn two_cas_of_one_service_never_share_a_subject() {
        let request = CertRequest::new("hook", "ns").unwrap();
        let now = OffsetDateTime::now_utc();
        let subject = |pem: &str| {
            let der = pem_to_der(pem);
            let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
            c.subject().to_string()
        };
        let a = generate_ca(&request, now, now + Duration::days(1), None).unwrap();
        let b = generate_ca(&request, now, now + Duration::days(1), None).unwrap();
        assert_ne!(subject(&a.ca.cert_pem), subject(&b.ca.cert_pem));
    }

    #[cfg(feature = "rsa")]
    #[test]
    fn rsa_keys_sign_and_carry_key_encipherment() {
        let request = CertRequest::new("hook", "ns")
            .unwrap()
            .with_key_algorithm(KeyAlgorithm::Rsa2048);
        let now = OffsetDateTime::now_utc();
        let ca = generate_ca(&request, now, now + Duration::days(10), None).unwrap();
        let leaf = issue_serving_cert(&request, &ca.ca, now, now + Duration::days(1)).unwrap();
        let der = pem_to_der(&leaf.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            cert.public_key().algorithm.algorithm,
            x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION
        );
        assert!(cert.key_usage().unwrap().unwrap().value.key_encipherment());
    }

    fn pem_to_der(pem: &str) -> Vec<u8> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        pem.contents
    }
}
