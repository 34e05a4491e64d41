//! The edges: one reconcile step over a store (`ensure_certs`), a readable
//! description of a store (`describe`), and the long-running loop that keeps
//! store, resolver and `caBundle` in step (`CertRotation`).

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kube::Client;
use time::OffsetDateTime;

use crate::bundle::{CertBundle, Existing};
use crate::error::{Error, Result};
use crate::generate::CertRequest;
use crate::inspect::CertInfo;
use crate::publish::{CaBundlePatch, WebhookConfigRef, patch_ca_bundle};
use crate::renewal::{RenewalPlan, RotationPolicy, renew};
use crate::resolver::CertResolver;
use crate::store::CertStore;

/// How many load–decide–save rounds [`ensure_certs`] tries when other
/// writers keep winning.
const MAX_ATTEMPTS: u32 = 5;

/// What [`ensure_certs`] found and did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Ensured {
    /// The certificates now in the store.
    pub bundle: CertBundle,
    /// What this call decided (a no-op plan when the stored ones were reused
    /// or another writer's were adopted).
    pub plan: RenewalPlan,
    /// Whether this call wrote to the store.
    pub written: bool,
}

/// Makes sure `store` holds certificates for `request` that are valid at
/// `now` under `policy`: reuses what is there when it still fits, otherwise
/// renews what is due (see [`RotationPolicy`] and [`RenewalPlan`]) and saves
/// the result with the store's compare-and-swap. When another writer saved
/// first, loads again and decides again, so concurrent replicas end up with
/// the winner's CA.
///
/// This is `tether certs create`: `ensure_certs(&store, &request,
/// &RotationPolicy::default(), SystemTime::now())`.
pub async fn ensure_certs(
    store: &(impl CertStore + ?Sized),
    request: &CertRequest,
    policy: &RotationPolicy,
    now: SystemTime,
) -> Result<Ensured> {
    policy.validate()?;
    let now = OffsetDateTime::from(now);
    let location = store.location();
    for _ in 0..MAX_ATTEMPTS {
        let snapshot = store.load().await?;
        let existing = Existing::from_files(&snapshot.files, &location);
        if !snapshot.revision.is_absent() && !existing.problems.is_empty() {
            tracing::warn!(store = %location, problems = ?existing.problems, "stored certificates are incomplete");
        }
        let (plan, bundle) = renew(&existing, request, policy, now)?;
        let bundle = bundle.ok_or_else(|| Error::Parse {
            what: format!("the certificates in {location}"),
            reason: "inconsistent after planning".into(),
        })?;
        if plan.is_noop() {
            return Ok(Ensured {
                bundle,
                plan,
                written: false,
            });
        }
        match store.save(&bundle, &snapshot.revision).await {
            Ok(()) => {
                tracing::info!(store = %location, "certificates renewed: {plan}");
                return Ok(Ensured {
                    bundle,
                    plan,
                    written: true,
                });
            }
            Err(Error::Conflict { .. }) => {
                tracing::debug!(store = %location, "another writer was first; reloading");
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::TooManyConflicts {
        location,
        attempts: MAX_ATTEMPTS,
    })
}

/// What a store holds, for people (`tether certs show`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CertsDescription {
    /// The store.
    pub location: String,
    /// When the description was made (for "expires in").
    pub now: OffsetDateTime,
    /// The CA whose key is stored, if any.
    pub current_ca: Option<CertInfo>,
    /// Other CAs in the bundle (kept for a rotation overlap).
    pub other_cas: Vec<CertInfo>,
    /// The serving chain, leaf first (empty if missing or unusable).
    pub serving_chain: Vec<CertInfo>,
    /// What is missing or inconsistent.
    pub problems: Vec<String>,
}

/// Reads `store` and describes its certificates: names and expiry.
pub async fn describe(
    store: &(impl CertStore + ?Sized),
    now: SystemTime,
) -> Result<CertsDescription> {
    let location = store.location();
    let snapshot = store.load().await?;
    let existing = Existing::from_files(&snapshot.files, &location);
    let problems = if snapshot.revision.is_absent() {
        vec![format!("{location}: empty")]
    } else {
        existing.problems
    };
    Ok(CertsDescription {
        location,
        now: OffsetDateTime::from(now),
        current_ca: existing.current_ca.map(|(ca, _)| ca),
        other_cas: existing.other_cas,
        serving_chain: existing.serving.map(|(chain, _)| chain).unwrap_or_default(),
        problems,
    })
}

impl fmt::Display for CertsDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "certificates in {}", self.location)?;
        let line = |f: &mut fmt::Formatter<'_>, role: &str, c: &CertInfo| {
            let left = c.not_after - self.now;
            writeln!(
                f,
                "  {role:<13} {}\n  {:<13} expires {} ({})",
                c.subject,
                "",
                c.not_after,
                if left.is_negative() {
                    "EXPIRED".to_owned()
                } else {
                    format!("in {} days", left.whole_days())
                }
            )
        };
        if let Some(ca) = &self.current_ca {
            line(f, "CA (current)", ca)?;
        }
        for ca in &self.other_cas {
            line(f, "CA (previous)", ca)?;
        }
        for (i, c) in self.serving_chain.iter().enumerate() {
            if i == 0 {
                line(f, "serving", c)?;
                let mut names = c.dns_names.clone();
                names.extend(c.ip_addresses.iter().map(|ip| ip.to_string()));
                writeln!(f, "  {:<13} names {}", "", names.join(", "))?;
            } else {
                line(f, "intermediate", c)?;
            }
        }
        for problem in &self.problems {
            writeln!(f, "  problem: {problem}")?;
        }
        Ok(())
    }
}

/// The long-running side of the crate: keeps one webhook's certificates
/// renewed in a store, served by a [`CertResolver`], and published as
/// `caBundle` of its webhook configurations.
///
/// ```no_run
/// # async fn demo(client: kube::Client) -> Result<(), webhook_certs::Error> {
/// use std::time::{Duration, SystemTime};
/// use webhook_certs::*;
///
/// let rotation = CertRotation::new(
///     SecretStore::new(client.clone(), "tether", "tether-webhook-tls"),
///     CertRequest::new("tether-webhook", "tether")?,
///     RotationPolicy::default(),
/// )
/// .publish_to(client, vec![WebhookConfigRef::mutating("tether")]);
/// // First certificate before serving; fail fast if it cannot be had.
/// rotation.reconcile(SystemTime::now()).await?;
/// let tls = server_config(rotation.resolver())?;
/// tokio::spawn(rotation.run(Duration::from_secs(3600)));
/// // ... serve HTTPS with `tls` (tokio-rustls, hyper, axum-server ...).
/// # drop(tls); Ok(()) }
/// ```
pub struct CertRotation {
    store: Arc<dyn CertStore>,
    request: CertRequest,
    policy: RotationPolicy,
    resolver: Arc<CertResolver>,
    publish: Option<(Client, Vec<WebhookConfigRef>)>,
}

impl fmt::Debug for CertRotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertRotation")
            .field("store", &self.store)
            .field("request", &self.request)
            .field("policy", &self.policy)
            .field(
                "publish_to",
                &self.publish.as_ref().map(|(_, configs)| configs),
            )
            .finish_non_exhaustive()
    }
}

/// What one [`CertRotation::reconcile`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Reconciled {
    /// The store step.
    pub ensured: Ensured,
    /// Whether the resolver now serves a different chain.
    pub serving_changed: bool,
    /// The caBundle publications (empty without [`CertRotation::publish_to`]).
    pub published: Vec<CaBundlePatch>,
}

/// Wait after a failed reconcile before trying again (capped at the check
/// interval).
const RETRY_AFTER: Duration = Duration::from_secs(30);

impl CertRotation {
    /// Rotation of `request`'s certificates in `store` under `policy`, with
    /// a fresh, empty resolver.
    pub fn new(
        store: impl CertStore + 'static,
        request: CertRequest,
        policy: RotationPolicy,
    ) -> Self {
        Self {
            store: Arc::new(store),
            request,
            policy,
            resolver: Arc::new(CertResolver::new()),
            publish: None,
        }
    }

    /// Also publish the CA bundle to these webhook configurations on every
    /// reconcile.
    pub fn publish_to(mut self, client: Client, configs: Vec<WebhookConfigRef>) -> Self {
        self.publish = Some((client, configs));
        self
    }

    /// The resolver this rotation updates; give it to
    /// [`server_config`](crate::server_config).
    pub fn resolver(&self) -> Arc<CertResolver> {
        Arc::clone(&self.resolver)
    }

    /// One step at time `now`: [`ensure_certs`] on the store, then the
    /// resolver, then the `caBundle` of every configured webhook
    /// configuration (only webhooks whose bundle differs are written).
    pub async fn reconcile(&self, now: SystemTime) -> Result<Reconciled> {
        let ensured = ensure_certs(self.store.as_ref(), &self.request, &self.policy, now).await?;
        let serving_changed = self.resolver.update(&ensured.bundle)?;
        let mut published = Vec::new();
        if let Some((client, configs)) = &self.publish {
            let bundle = ensured.bundle.ca_bundle_pem();
            for config in configs {
                published.push(patch_ca_bundle(client, config, &bundle).await?);
            }
        }
        Ok(Reconciled {
            ensured,
            serving_changed,
            published,
        })
    }

    /// Reconciles every `check_interval`, forever (until the task is
    /// dropped or aborted). Failures are logged and retried after at most
    /// 30 s; they never end the loop. Returns at once with an error only
    /// when the settings are unusable: a zero interval, an invalid policy,
    /// or a `ca_overlap` shorter than `check_interval` (replicas must have
    /// a chance to load the new certificate before the old CA leaves the
    /// bundle).
    pub async fn run(self, check_interval: Duration) -> Result<Infallible> {
        self.policy.validate()?;
        if check_interval.is_zero() || self.policy.ca_overlap < check_interval {
            return Err(Error::InvalidPolicy(format!(
                "check interval {check_interval:?} must be positive and not longer than ca_overlap {:?}",
                self.policy.ca_overlap
            )));
        }
        loop {
            let wait = match self.reconcile(SystemTime::now()).await {
                Ok(_) => check_interval,
                Err(e) => {
                    tracing::warn!(store = %self.store.location(), error = %e, "certificate reconcile failed; retrying");
                    RETRY_AFTER.min(check_interval)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}
