//! The certificate material of one webhook, as stored and as served.
//!
//! A store holds four PEM documents (the names follow the `kubernetes.io/tls`
//! Secret convention):
//!
//! | file      | content                                                        |
//! |-----------|----------------------------------------------------------------|
//! | `ca.crt`  | every CA clients must trust: the current CA first, then CAs kept for the rotation overlap. This is the `caBundle`. |
//! | `ca.key`  | the current CA's private key (PKCS#8), so restarts and replicas keep one CA |
//! | `tls.crt` | the serving certificate, then intermediates (the cross-signed CA during and after a rotation) |
//! | `tls.key` | the serving certificate's private key (PKCS#8)                 |
//!
//! [`PemFiles`] is what a store found (any part may be missing or broken);
//! [`CertBundle`] is a complete, checked set that can be served and saved.

use std::fmt;

use zeroize::Zeroizing;

use crate::inspect::{CertInfo, certs_to_pem, parse_pem_certs};

/// A PEM-encoded private key. Its `Debug` output is redacted and its memory
/// is zeroed on drop; it never appears in logs or error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyPem(Zeroizing<String>);

impl PrivateKeyPem {
    /// Wraps a PEM private key.
    pub fn new(pem: String) -> Self {
        Self(Zeroizing::new(pem))
    }

    /// The PEM text. Handle with care: this is the secret.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem(<redacted>)")
    }
}

/// The four PEM documents as a store found them; any may be absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PemFiles {
    /// `ca.crt`: the CA bundle.
    pub ca_crt: Option<String>,
    /// `ca.key`: the current CA's key.
    pub ca_key: Option<PrivateKeyPem>,
    /// `tls.crt`: serving certificate chain.
    pub tls_crt: Option<String>,
    /// `tls.key`: serving key.
    pub tls_key: Option<PrivateKeyPem>,
}

impl PemFiles {
    /// Whether no file is present at all.
    pub fn is_empty(&self) -> bool {
        self.ca_crt.is_none()
            && self.ca_key.is_none()
            && self.tls_crt.is_none()
            && self.tls_key.is_none()
    }
}

/// A complete, consistent set of webhook certificates: the trusted CAs, the
/// current CA's key, and a serving chain with its key, where the serving
/// certificate is signed by the current CA.
///
/// Produced by [`ensure_certs`](crate::ensure_certs) and
/// [`generate_bundle`](crate::generate_bundle); consumed by stores,
/// [`CertResolver::update`](crate::CertResolver::update) and
/// [`patch_ca_bundle`](crate::patch_ca_bundle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertBundle {
    pub(crate) ca_certs: Vec<CertInfo>,
    pub(crate) ca_key: PrivateKeyPem,
    pub(crate) serving_chain: Vec<CertInfo>,
    pub(crate) serving_key: PrivateKeyPem,
}

impl CertBundle {
    /// `ca.crt`: PEM of every trusted CA, current first. Publish this as the
    /// webhook configurations' `caBundle`.
    pub fn ca_bundle_pem(&self) -> String {
        certs_to_pem(&self.ca_certs)
    }

    /// `ca.key`: the current CA's private key.
    pub fn ca_key_pem(&self) -> &PrivateKeyPem {
        &self.ca_key
    }

    /// `tls.crt`: PEM of the serving certificate followed by intermediates.
    pub fn tls_crt_pem(&self) -> String {
        certs_to_pem(&self.serving_chain)
    }

    /// `tls.key`: the serving certificate's private key.
    pub fn tls_key_pem(&self) -> &PrivateKeyPem {
        &self.serving_key
    }

    /// The CA that signs serving certificates now.
    pub fn current_ca(&self) -> &CertInfo {
        // Invariant: a CertBundle always has at least the current CA.
        &self.ca_certs[0]
    }

    /// Every CA in the bundle, current first.
    pub fn ca_certs(&self) -> &[CertInfo] {
        &self.ca_certs
    }

    /// The serving (leaf) certificate.
    pub fn serving_cert(&self) -> &CertInfo {
        // Invariant: the chain always starts with the leaf.
        &self.serving_chain[0]
    }

    /// The serving chain, leaf first.
    pub fn serving_chain(&self) -> &[CertInfo] {
        &self.serving_chain
    }

    /// The four PEM documents to store.
    pub fn to_pem_files(&self) -> PemFiles {
        PemFiles {
            ca_crt: Some(self.ca_bundle_pem()),
            ca_key: Some(self.ca_key.clone()),
            tls_crt: Some(self.tls_crt_pem()),
            tls_key: Some(self.serving_key.clone()),
        }
    }

    /// Checks PEM files and turns them into a bundle; `None` with the
    /// reasons when something is missing or inconsistent (used by
    /// [`describe`](crate::describe) and by tests).
    pub(crate) fn from_existing(existing: &Existing) -> Option<Self> {
        let (ca, ca_key) = existing.current_ca.clone()?;
        let (chain, serving_key) = existing.serving.clone()?;
        if !chain[0].is_signed_by(&ca) {
            return None;
        }
        let mut ca_certs = vec![ca];
        ca_certs.extend(existing.other_cas.iter().cloned());
        Some(CertBundle {
            ca_certs,
            ca_key,
            serving_chain: chain,
            serving_key,
        })
    }
}

/// What could be salvaged from a store's files: the parts that parse and
/// whose keys match. Problems are kept as text for logs and `describe`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Existing {
    /// The certificate of `ca.crt` that matches `ca.key`.
    pub(crate) current_ca: Option<(CertInfo, PrivateKeyPem)>,
    /// The other certificates of `ca.crt`.
    pub(crate) other_cas: Vec<CertInfo>,
    /// `tls.crt` (leaf first) when its leaf matches `tls.key`.
    pub(crate) serving: Option<(Vec<CertInfo>, PrivateKeyPem)>,
    /// Why parts were discarded.
    pub(crate) problems: Vec<String>,
}

impl Existing {
    /// Parses what a store holds at `location`; never fails.
    pub(crate) fn from_files(files: &PemFiles, location: &str) -> Self {
        let mut existing = Existing::default();
        let mut ca_certs = Vec::new();
        match &files.ca_crt {
            None => existing.problems.push(format!("{location}: no ca.crt")),
            Some(text) => match parse_pem_certs(text, &format!("ca.crt in {location}")) {
                Ok(certs) => ca_certs = certs,
                Err(e) => existing.problems.push(e.to_string()),
            },
        }
        match &files.ca_key {
            None => existing.problems.push(format!("{location}: no ca.key")),
            Some(key) => {
                match ca_certs
                    .iter()
                    .position(|c| c.is_ca && c.matches_key(key.expose()))
                {
                    Some(i) => existing.current_ca = Some((ca_certs.remove(i), key.clone())),
                    None => existing.problems.push(format!(
                        "{location}: ca.key matches no CA certificate in ca.crt"
                    )),
                }
            }
        }
        existing.other_cas = ca_certs;

        match (&files.tls_crt, &files.tls_key) {
            (Some(text), Some(key)) => {
                match parse_pem_certs(text, &format!("tls.crt in {location}")) {
                    Ok(chain) if chain[0].matches_key(key.expose()) => {
                        existing.serving = Some((chain, key.clone()));
                    }
                    Ok(_) => existing.problems.push(format!(
                        "{location}: tls.key does not match the certificate in tls.crt"
                    )),
                    Err(e) => existing.problems.push(e.to_string()),
                }
            }
            (None, _) => existing.problems.push(format!("{location}: no tls.crt")),
            (_, None) => existing.problems.push(format!("{location}: no tls.key")),
        }
        existing
    }
}
