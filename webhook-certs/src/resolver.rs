//! Serving the current certificate from memory.
//!
//! [`CertResolver`] implements rustls's [`ResolvesServerCert`]: every TLS
//! handshake asks it for the certificate, and [`CertResolver::update`]
//! replaces that certificate atomically. Handshakes in flight finish with
//! the certificate they started with; the next one gets the new one. There
//! is no file to watch, so nothing waits for a kubelet to refresh a mounted
//! Secret (30–100 s in practice) and nothing restarts.

use std::sync::{Arc, PoisonError, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::bundle::CertBundle;
use crate::error::{Error, Result};

/// A server-certificate resolver whose certificate can be replaced at any
/// time. Share it as `Arc<CertResolver>`; it coerces to
/// `Arc<dyn ResolvesServerCert>`.
///
/// Until the first [`update`](CertResolver::update) it has no certificate
/// and handshakes fail (the server is not ready).
#[derive(Debug, Default)]
pub struct CertResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl CertResolver {
    /// A resolver without a certificate yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A resolver serving `bundle`'s serving chain.
    pub fn from_bundle(bundle: &CertBundle) -> Result<Self> {
        let resolver = Self::new();
        resolver.update(bundle)?;
        Ok(resolver)
    }

    /// Serves `bundle`'s chain (`tls.crt`) and key (`tls.key`) from the next
    /// handshake on. Returns whether the served chain changed. On error the
    /// previous certificate stays in place.
    pub fn update(&self, bundle: &CertBundle) -> Result<bool> {
        let chain: Vec<CertificateDer<'static>> = bundle
            .serving_chain()
            .iter()
            .map(|c| CertificateDer::from(c.der.clone()))
            .collect();
        {
            let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
            if current.as_ref().is_some_and(|k| k.cert == chain) {
                return Ok(false);
            }
        }
        let subject = &bundle.serving_cert().subject;
        let key = PrivateKeyDer::from_pem_slice(bundle.tls_key_pem().expose().as_bytes()).map_err(
            |_| Error::Parse {
                what: format!("the private key of serving certificate {subject:?}"),
                reason: "not a PEM private key".into(),
            },
        )?;
        let provider = rustls::crypto::ring::default_provider();
        let certified =
            CertifiedKey::from_der(chain, key, &provider).map_err(|source| Error::Rustls {
                what: format!("load serving certificate {subject:?}"),
                source,
            })?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(certified));
        tracing::info!(
            subject = %subject,
            serial = %bundle.serving_cert().serial,
            not_after = %bundle.serving_cert().not_after,
            "serving a new certificate"
        );
        Ok(true)
    }

    /// Whether a certificate is loaded (use it for readiness).
    pub fn has_certificate(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A rustls [`ServerConfig`] that gets its certificate from `resolver`:
/// ring crypto provider, TLS 1.2 and 1.3, no client authentication, no ALPN
/// (set `alpn_protocols` on the result, e.g. `h2` and `http/1.1` for an
/// HTTP server that speaks both).
pub fn server_config(resolver: Arc<CertResolver>) -> Result<ServerConfig> {
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|source| Error::Rustls {
                what: "choose TLS protocol versions".into(),
                source,
            })?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
    Ok(config)
}
