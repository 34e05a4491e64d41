//! Reading existing certificates: what they cover, when they expire, who
//! signed them and whether a key belongs to them.
//!
//! rcgen writes certificates but cannot read their validity or SANs back, so
//! this module uses `x509-parser` (without default features; its `verify`
//! feature checks signatures with ring, which rustls already links). The
//! alternative, storing metadata next to the certificates, would trust a
//! side file over the certificate itself and break on certificates written
//! by other tools.

use std::fmt;
use std::net::IpAddr;

use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{Error, Result};

/// What one certificate says about itself.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertInfo {
    /// Subject distinguished name, e.g. `CN=hook.ns.svc`.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// DNS names in the subjectAltName extension (lowercase).
    pub dns_names: Vec<String>,
    /// IP addresses in the subjectAltName extension.
    pub ip_addresses: Vec<IpAddr>,
    /// Whether basicConstraints says CA:TRUE.
    pub is_ca: bool,
    pub(crate) der: Vec<u8>,
    pub(crate) spki: Vec<u8>,
    pub(crate) subject_der: Vec<u8>,
    pub(crate) issuer_der: Vec<u8>,
}

impl fmt::Debug for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertInfo")
            .field("subject", &self.subject)
            .field("issuer", &self.issuer)
            .field("serial", &self.serial)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("dns_names", &self.dns_names)
            .field("ip_addresses", &self.ip_addresses)
            .field("is_ca", &self.is_ca)
            .finish_non_exhaustive()
    }
}

impl CertInfo {
    /// Parses one DER certificate. `what` names it in the error.
    pub(crate) fn from_der(der: &[u8], what: &str) -> Result<Self> {
        let parse_err = |reason: String| Error::Parse {
            what: what.to_owned(),
            reason,
        };
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| parse_err(e.to_string()))?;
        if !rest.is_empty() {
            return Err(parse_err("trailing bytes after the certificate".into()));
        }
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(n) => dns_names.push(n.to_ascii_lowercase()),
                    GeneralName::IPAddress(bytes) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                            ip_addresses.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                            ip_addresses.push(IpAddr::from(v6));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string().replace(':', ""),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            dns_names,
            ip_addresses,
            is_ca: cert.is_ca(),
            der: der.to_vec(),
            spki: cert.public_key().raw.to_vec(),
            subject_der: cert.subject().as_raw().to_vec(),
            issuer_der: cert.issuer().as_raw().to_vec(),
        })
    }

    /// Whether `now` lies within the validity period.
    pub fn is_valid_at(&self, now: OffsetDateTime) -> bool {
        self.not_before <= now && now < self.not_after
    }

    /// Whether this certificate was issued by `issuer`: the issuer name
    /// matches the issuer's subject and the signature verifies with the
    /// issuer's public key.
    pub fn is_signed_by(&self, issuer: &CertInfo) -> bool {
        if self.issuer_der != issuer.subject_der {
            return false;
        }
        let Ok((_, me)) = X509Certificate::from_der(&self.der) else {
            return false;
        };
        let Ok((_, them)) = X509Certificate::from_der(&issuer.der) else {
            return false;
        };
        me.verify_signature(Some(them.public_key())).is_ok()
    }

    /// The certificate's DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The certificate as one PEM block.
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.der.clone()))
    }

    /// Whether `key_pem` is the private key of this certificate.
    pub(crate) fn matches_key(&self, key_pem: &str) -> bool {
        use rcgen::PublicKeyData;
        match rcgen::KeyPair::from_pem(key_pem) {
            Ok(key) => key.subject_public_key_info() == self.spki,
            Err(_) => false,
        }
    }
}

/// Parses every `CERTIFICATE` block of a PEM document (other blocks are
/// ignored). An empty result is an error: a PEM file with no certificate in
/// it is as useless as a missing one, and should say so.
pub(crate) fn parse_pem_certs(pem_text: &str, what: &str) -> Result<Vec<CertInfo>> {
    let blocks = pem::parse_many(pem_text).map_err(|e| Error::Parse {
        what: what.to_owned(),
        reason: e.to_string(),
    })?;
    let certs = blocks
        .iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .enumerate()
        .map(|(i, b)| CertInfo::from_der(b.contents(), &format!("{what} (certificate {})", i + 1)))
        .collect::<Result<Vec<_>>>()?;
    if certs.is_empty() {
        return Err(Error::Parse {
            what: what.to_owned(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// Concatenated PEM of several certificates.
pub(crate) fn certs_to_pem(certs: &[CertInfo]) -> String {
    certs.iter().map(CertInfo::to_pem).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::generate::{CertRequest, generate_ca, issue_serving_cert};
    use time::Duration;

    #[test]
    fn reads_names_validity_and_issuer_back() {
        let request = CertRequest::new("hook", "ns")
            .unwrap()
            .with_ip("::1".parse().unwrap());
        let now = OffsetDateTime::now_utc();
        let ca = generate_ca(&request, now, now + Duration::days(30), None).unwrap();
        let leaf = issue_serving_cert(&request, &ca.ca, now, now + Duration::days(2)).unwrap();
        let ca_info = &parse_pem_certs(&ca.ca.cert_pem, "ca").unwrap()[0];
        let leaf_info = &parse_pem_certs(&leaf.cert_pem, "leaf").unwrap()[0];
        assert_eq!(leaf_info.dns_names, request.dns_names());
        assert_eq!(leaf_info.ip_addresses, ["::1".parse::<IpAddr>().unwrap()]);
        assert!(leaf_info.is_signed_by(ca_info));
        assert!(!ca_info.is_signed_by(leaf_info));
        assert!(ca_info.is_signed_by(ca_info));
        assert!(leaf_info.is_valid_at(now));
        assert!(!leaf_info.is_valid_at(now + Duration::days(3)));
        assert!(leaf_info.matches_key(leaf.key_pem.expose()));
        assert!(!leaf_info.matches_key(ca.ca.key_pem.expose()));
        assert!(!leaf_info.matches_key("not a key"));
        // PEM round trip keeps the bytes.
        assert_eq!(
            parse_pem_certs(&leaf_info.to_pem(), "again").unwrap()[0],
            *leaf_info
        );
    }

    #[test]
    fn a_leaf_from_another_ca_with_the_same_name_is_not_signed_by_it() {
        let request = CertRequest::new("hook", "ns").unwrap();
        let now = OffsetDateTime::now_utc();
        let a = generate_ca(&request, now, now + Duration::days(30), None).unwrap();
        let b = generate_ca(&request, now, now + Duration::days(30), None).unwrap();
        let leaf = issue_serving_cert(&request, &a.ca, now, now + Duration::days(2)).unwrap();
        let leaf = &parse_pem_certs(&leaf.cert_pem, "leaf").unwrap()[0];
        let b = &parse_pem_certs(&b.ca.cert_pem, "b").unwrap()[0];
        assert!(!leaf.is_signed_by(b));
    }

    #[test]
    fn garbage_is_an_error_naming_the_input() {
        for input in [
            "",
            "hello",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            let err = parse_pem_certs(input, "tls.crt of test").unwrap_err();
            assert!(err.to_string().contains("tls.crt of test"), "{err}");
        }
    }
}
