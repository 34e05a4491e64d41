//! Publishing the CA bundle: `clientConfig.caBundle` of every webhook in a
//! MutatingWebhookConfiguration or ValidatingWebhookConfiguration.
//!
//! Each call reads the configuration, and for every webhook whose
//! `caBundle` differs sends one JSON patch (RFC 6902) with, per webhook,
//! a `test` that the entry at that index still has the expected name and an
//! `add` of `/webhooks/<i>/clientConfig/caBundle`. Nothing else in the
//! object is touched, so fields owned by Helm, GitOps tools or people stay
//! as they are; if the list was reordered in between, the `test` fails, the
//! API server rejects the whole patch, and the call reads and tries again.
//! When every webhook already has the bundle, no write is made at all, so
//! calling this every check interval is cheap and also repairs a bundle that
//! someone else reset.
//!
//! Why not server-side apply: applying a partial webhook list needs care
//! with list-map ownership and force-conflicts for every tool that also
//! applies the object; a guarded JSON patch states exactly the change and
//! nothing more.

use std::fmt;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::error::{Error, Result};
use crate::store::FIELD_MANAGER;

/// Which kind of webhook configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookKind {
    /// `admissionregistration.k8s.io/v1` MutatingWebhookConfiguration.
    Mutating,
    /// `admissionregistration.k8s.io/v1` ValidatingWebhookConfiguration.
    Validating,
}

/// A webhook configuration to publish the CA bundle to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebhookConfigRef {
    /// Mutating or validating.
    pub kind: WebhookKind,
    /// The configuration's name (they are cluster-scoped).
    pub name: String,
}

impl WebhookConfigRef {
    /// A MutatingWebhookConfiguration.
    pub fn mutating(name: &str) -> Self {
        Self {
            kind: WebhookKind::Mutating,
            name: name.to_owned(),
        }
    }

    /// A ValidatingWebhookConfiguration.
    pub fn validating(name: &str) -> Self {
        Self {
            kind: WebhookKind::Validating,
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for WebhookConfigRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            WebhookKind::Mutating => "MutatingWebhookConfiguration",
            WebhookKind::Validating => "ValidatingWebhookConfiguration",
        };
        write!(f, "{kind} {}", self.name)
    }
}

/// What [`patch_ca_bundle`] did to one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundlePatch {
    /// The configuration.
    pub config: WebhookConfigRef,
    /// Webhooks whose `caBundle` was set.
    pub patched: Vec<String>,
    /// Webhooks that already had it.
    pub unchanged: Vec<String>,
}

impl fmt::Display for CaBundlePatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} webhook(s) patched {:?}, {} already up to date",
            self.config,
            self.patched.len(),
            self.patched,
            self.unchanged.len()
        )
    }
}

const ATTEMPTS: u32 = 3;

/// Sets `clientConfig.caBundle = ca_bundle_pem` on every webhook of
/// `config`, as described in the [module docs](self). Fails if the
/// configuration does not exist.
pub async fn patch_ca_bundle(
    client: &Client,
    config: &WebhookConfigRef,
    ca_bundle_pem: &str,
) -> Result<CaBundlePatch> {
    let outcome = match config.kind {
        WebhookKind::Mutating => {
            patch_config(
                Api::<MutatingWebhookConfiguration>::all(client.clone()),
                config,
                ca_bundle_pem,
                |c| {
                    c.webhooks
                        .iter()
                        .flatten()
                        .map(|w| (w.name.clone(), w.client_config.ca_bundle.clone()))
                        .collect()
                },
            )
            .await?
        }
        WebhookKind::Validating => {
            patch_config(
                Api::<ValidatingWebhookConfiguration>::all(client.clone()),
                config,
                ca_bundle_pem,
                |c| {
                    c.webhooks
                        .iter()
                        .flatten()
                        .map(|w| (w.name.clone(), w.client_config.ca_bundle.clone()))
                        .collect()
                },
            )
            .await?
        }
    };
    outcome.ok_or_else(|| Error::WebhookConfigNotFound {
        config: config.to_string(),
    })
}

/// Like [`patch_ca_bundle`] for a name whose kind is not known: patches the
/// MutatingWebhookConfiguration and/or the ValidatingWebhookConfiguration
/// called `name`, whichever exist; fails if neither does.
pub async fn patch_ca_bundle_by_name(
    client: &Client,
    name: &str,
    ca_bundle_pem: &str,
) -> Result<Vec<CaBundlePatch>> {
    let mut done = Vec::new();
    for config in [
        WebhookConfigRef::mutating(name),
        WebhookConfigRef::validating(name),
    ] {
        match patch_ca_bundle(client, &config, ca_bundle_pem).await {
            Ok(outcome) => done.push(outcome),
            Err(Error::WebhookConfigNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    if done.is_empty() {
        return Err(Error::WebhookConfigNotFound {
            config: format!(
                "MutatingWebhookConfiguration or ValidatingWebhookConfiguration {name}"
            ),
        });
    }
    Ok(done)
}

type Webhooks = Vec<(String, Option<ByteString>)>;

async fn patch_config<K>(
    api: Api<K>,
    config: &WebhookConfigRef,
    ca_bundle_pem: &str,
    webhooks_of: impl Fn(&K) -> Webhooks,
) -> Result<Option<CaBundlePatch>>
where
    K: kube::Resource + Clone + fmt::Debug + serde::de::DeserializeOwned,
{
    let object = config.to_string();
    let wanted = ByteString(ca_bundle_pem.as_bytes().to_vec());
    let encoded = serde_json::to_value(&wanted).map_err(|e| Error::Parse {
        what: "the CA bundle".into(),
        reason: e.to_string(),
    })?;
    for attempt in 1..=ATTEMPTS {
        let Some(current) = api
            .get_opt(&config.name)
            .await
            .map_err(|e| Error::kube("get", &object, e))?
        else {
            return Ok(None);
        };
        let mut outcome = CaBundlePatch {
            config: config.clone(),
            patched: Vec::new(),
            unchanged: Vec::new(),
        };
        let mut ops = Vec::new();
        for (i, (name, bundle)) in webhooks_of(&current).into_iter().enumerate() {
            if bundle.as_ref() == Some(&wanted) {
                outcome.unchanged.push(name);
                continue;
            }
            ops.push(json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": name}));
            ops.push(json!({
                "op": "add",
                "path": format!("/webhooks/{i}/clientConfig/caBundle"),
                "value": encoded,
            }));
            outcome.patched.push(name);
        }
        if ops.is_empty() {
            return Ok(Some(outcome));
        }
        let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))
            .map_err(|e| Error::Parse {
                what: format!("the JSON patch for {object}"),
                reason: e.to_string(),
            })?;
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        match api
            .patch(&config.name, &params, &Patch::Json::<()>(patch))
            .await
        {
            Ok(_) => {
                tracing::info!(config = %object, webhooks = ?outcome.patched, "published caBundle");
                return Ok(Some(outcome));
            }
            // A failed `test` (list changed under us) or a write conflict.
            Err(kube::Error::Api(status))
                if (status.is_invalid() || status.is_conflict()) && attempt < ATTEMPTS =>
            {
                tracing::debug!(config = %object, attempt, "webhook list changed; retrying");
            }
            Err(e) => return Err(Error::kube("patch", &object, e)),
        }
    }
    Err(Error::TooManyConflicts {
        location: object,
        attempts: ATTEMPTS,
    })
}
