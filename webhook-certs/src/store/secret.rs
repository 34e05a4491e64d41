//! Certificates in a Kubernetes Secret (see [`SecretStore`]).

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};

use super::{CertStore, Revision, RevisionKind, Snapshot};
use crate::bundle::{CertBundle, PemFiles, PrivateKeyPem};
use crate::error::{Error, Result};

/// The Secret type this store writes and expects.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// The field manager named in this crate's writes (visible in
/// `metadata.managedFields`).
pub const FIELD_MANAGER: &str = "webhook-certs";

/// Certificates in a Kubernetes Secret.
///
/// The Secret has type `kubernetes.io/tls` (so anything that reads TLS
/// Secrets understands `tls.crt`/`tls.key`), plus `ca.crt` (the CA bundle)
/// and `ca.key` (the current CA's private key).
///
/// Keeping the CA key in the Secret is what lets restarts and replicas reuse
/// one CA instead of each making its own. It is protected the way any Secret
/// is: by RBAC (grant the webhook's ServiceAccount `get` and `patch` on this
/// one Secret by `resourceNames`, and `create` on Secrets in the namespace;
/// nobody else needs access), by encryption at rest if the cluster enables
/// it, and by this crate never logging it. The trade-off: whoever can read
/// the Secret can mint certificates this webhook's clients trust, which is
/// no more than reading `tls.key` already allows for impersonating the
/// webhook itself.
///
/// Concurrency: the first write is a `POST` (create-if-absent: a second
/// replica gets `409 AlreadyExists`), later writes are JSON merge patches
/// that carry the `metadata.resourceVersion` they were based on (a stale one
/// gets `409 Conflict`). Merge patches touch only the four data keys, so
/// labels, annotations and other keys set by others survive.
#[derive(Clone)]
pub struct SecretStore {
    api: Api<Secret>,
    namespace: String,
    name: String,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStore")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SecretStore {
    /// The Secret `name` in `namespace`, reached through `client`.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    fn object(&self) -> String {
        format!("Secret {}/{}", self.namespace, self.name)
    }

    fn data(bundle: &CertBundle) -> BTreeMap<String, ByteString> {
        let files = bundle.to_pem_files();
        let mut data = BTreeMap::new();
        let entries = [
            ("ca.crt", files.ca_crt),
            ("ca.key", files.ca_key.map(|k| k.expose().to_owned())),
            ("tls.crt", files.tls_crt),
            ("tls.key", files.tls_key.map(|k| k.expose().to_owned())),
        ];
        for (key, value) in entries {
            if let Some(value) = value {
                data.insert(key.to_owned(), ByteString(value.into_bytes()));
            }
        }
        data
    }
}

fn text(data: &BTreeMap<String, ByteString>, key: &str, object: &str) -> Option<String> {
    let bytes = data.get(key)?;
    match String::from_utf8(bytes.0.clone()) {
        Ok(text) => Some(text),
        Err(_) => {
            tracing::warn!(%object, key, "ignoring a data key that is not UTF-8 text");
            None
        }
    }
}

#[async_trait]
impl CertStore for SecretStore {
    fn location(&self) -> String {
        self.object()
    }

    async fn load(&self) -> Result<Snapshot> {
        let object = self.object();
        let Some(secret) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| Error::kube("get", &object, e))?
        else {
            return Ok(Snapshot {
                files: PemFiles::default(),
                revision: Revision::absent(),
            });
        };
        if let Some(found) = secret.type_.as_deref()
            && found != TLS_SECRET_TYPE
        {
            return Err(Error::SecretType {
                object: format!("{}/{}", self.namespace, self.name),
                found: found.to_owned(),
            });
        }
        let data = secret.data.unwrap_or_default();
        let files = PemFiles {
            ca_crt: text(&data, "ca.crt", &object),
            ca_key: text(&data, "ca.key", &object).map(PrivateKeyPem::new),
            tls_crt: text(&data, "tls.crt", &object),
            tls_key: text(&data, "tls.key", &object).map(PrivateKeyPem::new),
        };
        let rv = secret.metadata.resource_version.unwrap_or_default();
        Ok(Snapshot {
            files,
            revision: Revision(RevisionKind::ResourceVersion(rv)),
        })
    }

    async fn save(&self, bundle: &CertBundle, expected: &Revision) -> Result<()> {
        let object = self.object();
        let conflict = || Error::Conflict {
            location: object.clone(),
        };
        let result = match &expected.0 {
            RevisionKind::Absent => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        labels: Some(BTreeMap::from([(
                            "app.kubernetes.io/managed-by".to_owned(),
                            FIELD_MANAGER.to_owned(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    type_: Some(TLS_SECRET_TYPE.to_owned()),
                    data: Some(Self::data(bundle)),
                    ..Secret::default()
                };
                let params = PostParams {
                    field_manager: Some(FIELD_MANAGER.to_owned()),
                    ..PostParams::default()
                };
                self.api
                    .create(&params, &secret)
                    .await
                    .map(drop)
                    .map_err(|e| ("create", e))
            }
            RevisionKind::ResourceVersion(rv) => {
                let patch = serde_json::json!({
                    "metadata": { "resourceVersion": rv },
                    "data": Self::data(bundle),
                });
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.to_owned()),
                    ..PatchParams::default()
                };
                self.api
                    .patch(&self.name, &params, &Patch::Merge(&patch))
                    .await
                    .map(drop)
                    .map_err(|e| ("patch", e))
            }
            RevisionKind::Contents(_) => return Err(conflict()),
        };
        match result {
            Ok(()) => {
                tracing::debug!(%object, "wrote certificates");
                Ok(())
            }
            // 409: created or changed by someone else; 404: deleted since we
            // read it. Either way: load again and decide again.
            Err((_, kube::Error::Api(status)))
                if status.is_conflict() || status.is_already_exists() || status.is_not_found() =>
            {
                Err(conflict())
            }
            Err((action, e)) => Err(Error::kube(action, &object, e)),
        }
    }
}
