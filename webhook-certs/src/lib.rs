//! `webhook-certs`: TLS for a Kubernetes admission webhook that makes,
//! stores, publishes and rotates its own certificates — no cert-manager, no
//! init container, no restart.
//!
//! The API server calls admission webhooks only over HTTPS and must be told
//! which CA to trust (`clientConfig.caBundle`). This crate gives any Rust
//! webhook (tether's `kube-deploy` is one user) a CA, a serving certificate
//! for its Service, a place to keep them, the `caBundle` patch, a rustls
//! resolver that swaps certificates in memory, and a loop that renews all of
//! it ahead of expiry.
//!
//! # What it does not do
//!
//! * It does not run the HTTPS server: it hands you a
//!   [`rustls::ServerConfig`] ([`server_config`]) for tokio-rustls, hyper,
//!   axum-server or anything else that takes one.
//! * It does not create the webhook configurations, the Service or RBAC; it
//!   patches the `caBundle` of configurations that exist.
//! * It does not inject into CRD conversion webhooks or APIService objects.
//! * It does not talk to cert-manager or any external CA.
//!
//! # How data flows
//!
//! ```text
//!  CertRequest (service, namespace, extra names)      RotationPolicy      now
//!          │                                               │               │
//!          ▼                                               ▼               ▼
//!  CertStore::load ──► PemFiles ──► plan (pure) ──► RenewalPlan ──► apply (rcgen)
//!   (DirStore | SecretStore)                                             │
//!          ▲                                                             ▼
//!          └───────── CertStore::save (compare-and-swap) ◄────────── CertBundle
//!                                                                        │
//!                          CertResolver::update (rustls, in memory) ◄────┤
//!                          patch_ca_bundle (every webhook's caBundle) ◄──┘
//! ```
//!
//! [`ensure_certs`] is one load–plan–apply–save round; [`CertRotation`]
//! adds the resolver and the `caBundle` and repeats it every check interval.
//!
//! # Using it
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> Result<(), webhook_certs::Error> {
//! use std::time::{Duration, SystemTime};
//! use webhook_certs::*;
//!
//! let rotation = CertRotation::new(
//!     SecretStore::new(client.clone(), "tether", "tether-webhook-tls"),
//!     CertRequest::new("tether-webhook", "tether")?,
//!     RotationPolicy::default(),
//! )
//! .publish_to(client, vec![WebhookConfigRef::mutating("tether")]);
//! rotation.reconcile(SystemTime::now()).await?; // certificates before serving
//! let tls: rustls::ServerConfig = server_config(rotation.resolver())?;
//! tokio::spawn(rotation.run(Duration::from_secs(3600))); // renew forever
//! # drop(tls); Ok(()) }
//! ```
//!
//! The three steps of a `tether certs` command line are one call each:
//! `create` is [`ensure_certs`], `patch` is [`patch_ca_bundle`] or
//! [`patch_ca_bundle_by_name`] with [`CertBundle::ca_bundle_pem`], and
//! `show` prints [`describe`].
//!
//! # Design choices
//!
//! * **Decisions are pure.** Whether to renew, rotate or drop a CA is
//!   decided by a function of the stored certificates, the request, the
//!   policy and an injected `now` ([`RenewalPlan`]); tests drive whole
//!   rotations with a fake clock. I/O sits at the edges (stores, kube,
//!   rustls).
//! * **Certificates are read back with `x509-parser`.** rcgen writes but
//!   cannot read validity or SANs; reading them from the certificate itself
//!   (not a side file of metadata) also handles certificates written by
//!   other tools, and a certificate whose names no longer match is reissued
//!   (the failure of one-shot generators that "do nothing if the Secret
//!   exists").
//! * **Defaults** (see [`RotationPolicy`]): ECDSA P-256 keys (RSA-2048 with
//!   [`KeyAlgorithm::Rsa2048`]); CA 5 years, rotated 180 days ahead; serving
//!   certificate 90 days, renewed 30 days ahead; old CA kept 24 h after the
//!   switch; check every hour.
//! * **One CA for all replicas.** The CA key is stored with the
//!   certificates (`ca.key`; in a Secret, protected by RBAC — see
//!   [`SecretStore`]), and every save is a compare-and-swap (create-if-absent,
//!   then `resourceVersion` preconditions), so replicas that start together
//!   converge on the first writer's CA instead of fighting.
//! * **CA rotation with overlap and a cross-signed bridge.** A rotating CA
//!   is replaced by a new one that the old one cross-signs; the bundle
//!   carries both CAs until every replica serves a certificate of the new
//!   one (`ca_overlap` ≥ check interval), then drops the old one. The
//!   serving chain includes the cross-signed certificate, so even a client
//!   still holding the old bundle verifies the new certificate, until the
//!   old CA expires. Details in [`renewal`].
//! * **No file watching.** The resolver swaps the certificate in memory, so
//!   no pod waits 30–100 s for a kubelet to refresh a mounted Secret.
//! * **Every webhook, precisely.** `caBundle` is set on every webhook of a
//!   configuration by a JSON patch guarded by `test` operations, touching
//!   nothing else (see [`publish`]).
//! * **Keys stay secret.** Private keys live in [`PrivateKeyPem`] (redacted
//!   `Debug`, zeroed on drop); no log line or error contains one.

#![forbid(unsafe_code)]

pub mod bundle;
mod error;
mod generate;
mod inspect;
pub mod publish;
pub mod renewal;
mod resolver;
mod rotation;
pub mod store;

pub use bundle::{CertBundle, PemFiles, PrivateKeyPem};
pub use error::{Error, Result};
pub use generate::{BACKDATE, CertRequest, DEFAULT_CLUSTER_DOMAIN, KeyAlgorithm};
pub use inspect::CertInfo;
pub use publish::{
    CaBundlePatch, WebhookConfigRef, WebhookKind, patch_ca_bundle, patch_ca_bundle_by_name,
};
pub use renewal::{NewCaReason, NewServingReason, RenewalPlan, RotationPolicy, generate_bundle};
pub use resolver::{CertResolver, server_config};
pub use rotation::{CertRotation, CertsDescription, Ensured, Reconciled, describe, ensure_certs};
pub use store::{CertStore, DirStore, Revision, SecretStore, Snapshot};
