//! Manifest generation: offline injection into YAML (`tether manifests
//! inject`, like `istioctl kube-inject`) and the webhook's deployment bundle
//! (`tether manifests webhook`).
//!
//! YAML goes through `serde_norway`, a maintained fork of the deprecated
//! `serde_yaml` (same API, unsafe-libyaml-norway underneath, regular
//! releases); `serde_yml` was not chosen because RustSec lists it as
//! unsound and unmaintained. Documents are read as generic JSON values and
//! written back the same way, so fields this crate's k8s-openapi does not
//! know survive the round trip; only the pod template is read as a typed
//! object, and the injector's JSON patch is applied to the value.
//! [`inject_yaml_report`] also returns what it changed in each document
//! (read back from the `tether.dev/changes` annotation) and the injector's
//! warnings, which `tether manifests inject` prints on stderr.
//!
//! # The webhook bundle is safe on a shared cluster
//!
//! * **Opt-in by label.** The MutatingWebhookConfiguration's
//!   `objectSelector` matches only pods labelled `tether.dev/inject: "true"`
//!   (and, optionally, only namespaces with a label), so the API server
//!   never calls the webhook for any other pod and a webhook outage cannot
//!   block them.
//! * **`failurePolicy: Fail` only with a CA bundle.** For an opted-in pod,
//!   starting without its restore means an empty home directory that the
//!   user then works in, unsynced; refusing the pod until the webhook
//!   answers is the safe side, and its controller retries. But a `Fail`
//!   configuration with no `caBundle` refuses every selected pod until the
//!   webhook has patched one in, so [`WebhookManifestConfig::validate`]
//!   refuses `Fail` without [`WebhookManifestConfig::ca_bundle_pem`]: the
//!   admin makes the certificates first (`tether certs create`, into the
//!   Secret the webhook then finds and keeps) and generates the bundle with
//!   that CA embedded. `Ignore` needs no bundle.
//! * **The webhook Deployment** spreads its replicas over nodes and zones
//!   (topology spread, `ScheduleAnyway`: a hard rule would leave a replica
//!   Pending on a one-node or cordoned cluster, and the PodDisruptionBudget
//!   already covers drains), logs through `TETHER_LOG`, has no priority
//!   class unless one is given (see
//!   [`WebhookManifestConfig::priority_class_name`]) and sizes memory for
//!   the hardened server's bounded in-flight budget.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Namespace, ObjectFieldSelector,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    Service, ServiceAccount, ServicePort, ServiceSpec, TopologySpreadConstraint,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde_json::Value;

use crate::annotations::{self, SidecarMode};
use crate::builders;
use crate::inject::{self, Changes, InjectError, InjectionOutcome, InjectorConfig};
use crate::validate;
use crate::webhook::MUTATE_PATH;

/// Errors of manifest reading and generation.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A YAML document could not be parsed.
    #[error("document {document}: not valid YAML: {source}")]
    Parse {
        /// 1-based index of the document in the stream.
        document: usize,
        /// The parser's error (with line and column).
        source: serde_norway::Error,
    },
    /// A workload's pod template is not a valid PodTemplateSpec.
    #[error("document {document} ({kind} {name}): {reason}")]
    InvalidObject {
        /// 1-based index of the document.
        document: usize,
        /// Its kind.
        kind: String,
        /// Its name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The injector refused a pod template.
    #[error("document {document} ({kind} {name}): {source}")]
    Inject {
        /// 1-based index of the document.
        document: usize,
        /// Its kind.
        kind: String,
        /// Its name.
        name: String,
        /// The injector's reason (names the annotation).
        source: InjectError,
    },
    /// A webhook bundle setting is invalid.
    #[error("webhook manifest setting {setting}: {reason}")]
    Setting {
        /// Which setting.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A `tether manifests app` setting is invalid (named by its flag).
    #[error("{flag}: {reason}")]
    AppSetting {
        /// The flag, e.g. `--path`.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Output could not be serialised as YAML.
    #[error("writing YAML: {0}")]
    Write(#[source] serde_norway::Error),
}

/// Where the pod template sits in each workload kind tether understands.
pub fn pod_template_pointer(kind: &str) -> Option<PointerBuf> {
    let tokens: &[&str] = match kind {
        "Pod" => &[],
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return None,
    };
    Some(PointerBuf::from_tokens(tokens.iter().copied()))
}

/// Adds tether to every annotated pod template in a multi-document YAML
/// stream (Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs,
/// CronJobs); other documents and un-annotated templates pass unchanged.
/// Annotations are read from the pod template (`spec.template.metadata`),
/// exactly as the webhook would see them on the pod. Comments are not kept.
pub fn inject_yaml(input: &str, config: &InjectorConfig) -> Result<String, ManifestError> {
    inject_yaml_report(input, config).map(|(yaml, _)| yaml)
}

/// What [`inject_yaml_report`] did to one pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectionReport {
    /// 1-based index of the document in the stream.
    pub document: usize,
    /// The workload's kind.
    pub kind: String,
    /// The workload's name.
    pub name: String,
    /// What the injector added or changed.
    pub changes: Changes,
    /// The injector's warnings.
    pub warnings: Vec<String>,
}

impl std::fmt::Display for InjectionReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "document {} ({} {}): {}",
            self.document,
            self.kind,
            self.name,
            self.changes.describe()
        )
    }
}

/// [`inject_yaml`], also returning one [`InjectionReport`] per injected
/// pod template, so that nothing is changed silently.
pub fn inject_yaml_report(
    input: &str,
    config: &InjectorConfig,
) -> Result<(String, Vec<InjectionReport>), ManifestError> {
    let mut out = Vec::new();
    let mut reports = Vec::new();
    for (i, document) in serde_norway::Deserializer::from_str(input).enumerate() {
        let number = i + 1;
        let mut value: Value =
            serde::Deserialize::deserialize(document).map_err(|source| ManifestError::Parse {
                document: number,
                source,
            })?;
        if value.is_null() {
            continue;
        }
        inject_document(&mut value, number, config, &mut reports)?;
        out.push(value);
    }
    Ok((to_yaml_stream(&out)?, reports))
}

fn inject_document(
    value: &mut Value,
    document: usize,
    config: &InjectorConfig,
    reports: &mut Vec<InjectionReport>,
) -> Result<(), ManifestError> {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if kind == "List" {
        if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                inject_document(item, document, config, reports)?;
            }
        }
        return Ok(());
    }
    let Some(base) = pod_template_pointer(&kind) else {
        return Ok(());
    };
    let invalid = |reason: String| ManifestError::InvalidObject {
        document,
        kind: kind.clone(),
        name: name.clone(),
        reason,
    };
    let template_value = value
        .pointer(base.as_str())
        .cloned()
        .ok_or_else(|| invalid("has no pod template".into()))?;
    let template: PodTemplateSpec = serde_json::from_value(template_value)
        .map_err(|e| invalid(format!("pod template is not valid: {e}")))?;
    let metadata = template.metadata.unwrap_or_default();
    let outcome = inject::inject_template(&metadata, template.spec.as_ref(), &base, config)
        .map_err(|source| ManifestError::Inject {
            document,
            kind: kind.clone(),
            name: name.clone(),
            source,
        })?;
    if let InjectionOutcome::Patched { patch, warnings } = outcome {
        json_patch::patch(value, &patch)
            .map_err(|e| invalid(format!("applying the patch: {e}")))?;
        let mut changes_pointer = base.clone();
        changes_pointer.push_back("metadata");
        changes_pointer.push_back("annotations");
        changes_pointer.push_back(annotations::CHANGES);
        let changes = value
            .pointer(changes_pointer.as_str())
            .and_then(Value::as_str)
            .map(serde_json::from_str::<Changes>)
            .transpose()
            .map_err(|e| invalid(format!("reading back {}: {e}", annotations::CHANGES)))?
            .unwrap_or_default();
        reports.push(InjectionReport {
            document,
            kind: kind.clone(),
            name: name.clone(),
            changes,
            warnings,
        });
    }
    Ok(())
}

/// Documents as one YAML stream. Strings that a YAML 1.1 reader would take
/// for something else — `off`, `yes`, `on`, `n` (booleans there), `1:30`
/// (a number), `~` — are single-quoted: `kubectl` and the API server read
/// YAML 1.1, while serde_norway quotes only what YAML 1.2 would misread, so
/// `TETHER_RETENTION: off` would reach the pod as `false`.
pub(crate) fn to_yaml_stream<T: Serialize>(documents: &[T]) -> Result<String, ManifestError> {
    let mut text = String::new();
    // A token no document holds stands for each quoted string while the
    // serializer runs (it writes such tokens plain), then becomes the string
    // in single quotes.
    let nonce = format!("{:016x}", rand_token());
    for document in documents {
        let value = serde_norway::to_value(document).map_err(ManifestError::Write)?;
        let mut quoted = Vec::new();
        let value = protect_yaml11(value, &nonce, &mut quoted);
        let mut yaml = serde_norway::to_string(&value).map_err(ManifestError::Write)?;
        for (i, original) in quoted.iter().enumerate().rev() {
            yaml = yaml.replace(&token(&nonce, i), &format!("'{original}'"));
        }
        text.push_str("---\n");
        text.push_str(&yaml);
    }
    Ok(text)
}

fn token(nonce: &str, i: usize) -> String {
    format!("tether-yaml-quoted-{nonce}-{i}-")
}

fn rand_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// True for a plain scalar YAML 1.1 reads as a boolean, null or number
/// (over-quoting is harmless: any string that starts with a digit, sign
/// or dot and holds only hex digits, signs, dots, colons, underscores and
/// `x`/`o` is quoted).
fn yaml11_ambiguous(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
        "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "~", "null", "Null", "NULL",
    ];
    WORDS.contains(&s)
        || (s
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || b"+-.".contains(&b))
            && s.bytes().any(|b| b.is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() || b"+-._:xXoO".contains(&b)))
}

fn protect_yaml11(
    value: serde_norway::Value,
    nonce: &str,
    quoted: &mut Vec<String>,
) -> serde_norway::Value {
    use serde_norway::Value;
    match value {
        Value::String(s) if yaml11_ambiguous(&s) && !s.contains('\'') => {
            quoted.push(s);
            Value::String(token(nonce, quoted.len() - 1))
        }
        Value::Sequence(items) => Value::Sequence(
            items
                .into_iter()
                .map(|v| protect_yaml11(v, nonce, quoted))
                .collect(),
        ),
        Value::Mapping(map) => Value::Mapping(
            map.into_iter()
                .map(|(k, v)| {
                    (
                        protect_yaml11(k, nonce, quoted),
                        protect_yaml11(v, nonce, quoted),
                    )
                })
                .collect(),
        ),
        other => other,
    }
}

/// What the API server does when the webhook cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Refuse the pod: an opted-in pod never starts without its restore.
    /// Only pods labelled `tether.dev/inject: "true"` wait for the webhook
    /// (two replicas and a PodDisruptionBudget keep that short). Needs the
    /// CA bundle in the configuration from the start.
    #[default]
    Fail,
    /// Admit the pod unchanged: the cluster never blocks on tether, but an
    /// annotated pod may start with an empty directory and no sync.
    Ignore,
}

impl FailurePolicy {
    fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "Fail",
            Self::Ignore => "Ignore",
        }
    }
}

/// Whether the API server calls the webhook again after later webhooks
/// changed the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReinvocationPolicy {
    /// Call again (the injector is idempotent, so this is safe, and it sees
    /// containers other webhooks added).
    #[default]
    IfNeeded,
    /// Call once.
    Never,
}

impl ReinvocationPolicy {
    fn as_str(self) -> &'static str {
        match self {
            Self::IfNeeded => "IfNeeded",
            Self::Never => "Never",
        }
    }
}

/// Settings of `tether manifests webhook`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookManifestConfig {
    /// Namespace the webhook runs in (excluded from injection).
    pub namespace: String,
    /// Name of the ServiceAccount, Deployment, Service, PDB, RBAC objects
    /// and the MutatingWebhookConfiguration.
    pub name: String,
    /// Name of the TLS Secret the webhook keeps its certificates in.
    pub secret_name: String,
    /// Image of the webhook itself (runs `tether webhook`).
    pub image: String,
    /// Injector defaults passed to the webhook (its `--sidecar-image`,
    /// `--sidecar-mode`, `--grace-seconds`).
    pub injector: InjectorConfig,
    /// Webhook replicas (the PDB keeps at least one up when > 1).
    pub replicas: i32,
    /// Container port of the webhook's HTTPS listener.
    pub port: u16,
    /// What the API server does when the webhook is unreachable.
    pub failure_policy: FailurePolicy,
    /// Seconds the API server waits for an answer (1–30).
    pub timeout_seconds: i32,
    /// Re-invocation after other webhooks.
    pub reinvocation_policy: ReinvocationPolicy,
    /// Namespaces never sent to the webhook besides `kube-system` and
    /// [`Self::namespace`].
    pub excluded_namespaces: Vec<String>,
    /// When set, only namespaces carrying this label (`key`, `value`) are
    /// sent to the webhook; when unset, every namespace except the excluded
    /// ones is.
    pub namespace_label: Option<(String, String)>,
    /// PEM CA bundle to put in `clientConfig.caBundle` (the `ca.crt` of
    /// the certificates in [`Self::secret_name`]); required with
    /// [`FailurePolicy::Fail`], so that no `Fail` configuration ever exists
    /// without a bundle. The webhook keeps it current afterwards.
    pub ca_bundle_pem: Option<String>,
    /// `priorityClassName` of the webhook's pods. Default none: the webhook
    /// gates only opted-in pods, so it is not cluster-critical, and
    /// `system-cluster-critical` outside `kube-system` is refused by quota
    /// on some managed clusters (GKE's `gcp-critical-pods`). Set it where
    /// preempting the webhook must not stall opted-in pods.
    pub priority_class_name: Option<String>,
}

impl Default for WebhookManifestConfig {
    fn default() -> Self {
        Self {
            namespace: "tether-system".into(),
            name: "tether-webhook".into(),
            secret_name: "tether-webhook-tls".into(),
            image: inject::DEFAULT_IMAGE.into(),
            injector: InjectorConfig::default(),
            replicas: 2,
            port: 8443,
            failure_policy: FailurePolicy::Fail,
            timeout_seconds: 5,
            reinvocation_policy: ReinvocationPolicy::IfNeeded,
            excluded_namespaces: Vec::new(),
            namespace_label: None,
            ca_bundle_pem: None,
            priority_class_name: None,
        }
    }
}

impl WebhookManifestConfig {
    /// Checks names, image references, port and timeout.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let setting = |setting: &'static str| {
            move |reason: String| ManifestError::Setting { setting, reason }
        };
        validate::dns1123_label(&self.namespace).map_err(setting("namespace"))?;
        // Service names must be DNS-1035 labels (start with a letter).
        validate::dns1123_label(&self.name).map_err(setting("name"))?;
        if !self.name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(setting("name")(
                "must start with a letter (it names a Service)".into(),
            ));
        }
        validate::dns1123_subdomain(&self.secret_name).map_err(setting("secret_name"))?;
        validate::image_reference(&self.image).map_err(setting("image"))?;
        validate::image_reference(&self.injector.image).map_err(setting("injector.image"))?;
        for ns in &self.excluded_namespaces {
            validate::dns1123_label(ns).map_err(setting("excluded_namespaces"))?;
        }
        if !(1..=30).contains(&self.timeout_seconds) {
            return Err(setting("timeout_seconds")("must be from 1 to 30".into()));
        }
        if self.port < 1024 {
            return Err(setting("port")(
                "must be 1024 or above (the webhook runs unprivileged)".into(),
            ));
        }
        if self.replicas < 1 {
            return Err(setting("replicas")("must be at least 1".into()));
        }
        if let Some(class) = &self.priority_class_name {
            validate::dns1123_subdomain(class).map_err(setting("priority_class_name"))?;
        }
        if let Some((key, value)) = &self.namespace_label {
            validate::label(key, value).map_err(setting("namespace_label"))?;
        }
        match &self.ca_bundle_pem {
            Some(pem) => check_ca_bundle(pem).map_err(setting("ca_bundle_pem"))?,
            None if self.failure_policy == FailurePolicy::Fail => {
                return Err(setting("ca_bundle_pem")(
                    "failurePolicy Fail needs the CA bundle from the start (else every opted-in pod is refused until the webhook patches one in): make the certificates first with `tether certs create` and pass their ca.crt, or use failurePolicy Ignore".into(),
                ));
            }
            None => {}
        }
        Ok(())
    }

    /// The arguments of the webhook container: `tether webhook --bind
    /// 0.0.0.0:PORT --service NAME --secret SECRET --webhook-config NAME
    /// --sidecar-image IMAGE --sidecar-mode MODE --grace-seconds N`; the
    /// namespace comes from `TETHER_NAMESPACE` (downward API).
    pub fn container_args(&self) -> Vec<String> {
        let mode = match self.injector.sidecar_mode {
            SidecarMode::Native => "native",
            SidecarMode::Container => "container",
        };
        let mut args = vec![
            "webhook".into(),
            "--bind".into(),
            format!("0.0.0.0:{}", self.port),
            "--service".into(),
            self.name.clone(),
            "--secret".into(),
            self.secret_name.clone(),
            "--webhook-config".into(),
            self.name.clone(),
            "--sidecar-image".into(),
            self.injector.image.clone(),
            "--sidecar-mode".into(),
            mode.into(),
            "--grace-seconds".into(),
            self.injector.grace_seconds.to_string(),
        ];
        if self.injector.retention != crate::annotations::Retention::DEFAULT {
            args.push("--retention".into());
            args.push(self.injector.retention.to_string());
        }
        args
    }

    /// Every namespace the webhook never sees.
    pub fn all_excluded_namespaces(&self) -> Vec<String> {
        let mut all = vec!["kube-system".to_owned(), self.namespace.clone()];
        for ns in &self.excluded_namespaces {
            if !all.contains(ns) {
                all.push(ns.clone());
            }
        }
        all
    }

    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), self.name.clone()),
            ("app.kubernetes.io/part-of".to_owned(), "tether".to_owned()),
            (
                "app.kubernetes.io/component".to_owned(),
                "admission-webhook".to_owned(),
            ),
        ])
    }

    fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("app.kubernetes.io/name".to_owned(), self.name.clone())])
    }

    fn meta(&self, name: &str, namespaced: bool) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: namespaced.then(|| self.namespace.clone()),
            labels: Some(self.labels()),
            ..ObjectMeta::default()
        }
    }
}

/// Checks that a CA bundle is PEM with at least one certificate and
/// nothing else.
fn check_ca_bundle(pem: &str) -> Result<(), String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::{self, PemObject};
    let mut count = 0usize;
    for item in <(pem::SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes()) {
        match item {
            Ok((pem::SectionKind::Certificate, der)) => {
                if CertificateDer::from(der).is_empty() {
                    return Err("holds an empty certificate".into());
                }
                count += 1;
            }
            Ok((kind, _)) => {
                return Err(format!(
                    "holds a {kind:?} section; only CERTIFICATE sections belong in a CA bundle"
                ));
            }
            Err(e) => return Err(format!("is not valid PEM: {e}")),
        }
    }
    if count == 0 {
        return Err("holds no PEM certificate".into());
    }
    Ok(())
}

/// A typed object with its `apiVersion` and `kind` for serialisation.
pub(crate) fn typed<K: k8s_openapi::Resource + Serialize>(object: &K) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "apiVersion".into(),
            Value::String(K::API_VERSION.to_owned()),
        );
        map.insert("kind".into(), Value::String(K::KIND.to_owned()));
    }
    value
}

/// CPU request of the webhook container (no CPU limit: throttling an
/// admission webhook turns into API server timeouts).
pub const WEBHOOK_CPU_REQUEST: &str = "50m";
/// Memory request of the webhook container.
pub const WEBHOOK_MEMORY_REQUEST: &str = "64Mi";
/// Memory limit of the webhook container: twice the 128 MiB peak the
/// hardening work bounds the server to under a stream flood (issue 12),
/// which an unbounded server exceeded fivefold (640 MB); the headroom is
/// for the TLS and certificate-renewal work beside it.
pub const WEBHOOK_MEMORY_LIMIT: &str = "256Mi";

fn webhook_deployment(config: &WebhookManifestConfig) -> Deployment {
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("https".to_owned()),
            scheme: Some("HTTPS".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        ..Probe::default()
    };
    let container = Container {
        name: "webhook".into(),
        image: Some(config.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["tether".into()]),
        args: Some(config.container_args()),
        env: Some(vec![
            EnvVar {
                name: "TETHER_NAMESPACE".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.namespace".into(),
                        api_version: None,
                    }),
                    ..EnvVarSource::default()
                }),
            },
            EnvVar {
                // The binary reads TETHER_LOG (--log-level), not RUST_LOG.
                name: "TETHER_LOG".into(),
                value: Some("info".into()),
                value_from: None,
            },
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("https".into()),
            container_port: i32::from(config.port),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe("/healthz", 5)),
        liveness_probe: Some(probe("/healthz", 20)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity(WEBHOOK_CPU_REQUEST.into())),
                ("memory".to_owned(), Quantity(WEBHOOK_MEMORY_REQUEST.into())),
            ])),
            // Coherent with the server's defaults (`ServerLimits`): at most
            // 32 MiB of request bodies in flight, plus connections and
            // answers; measured peaks are in BENCHMARKS.md.
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity(WEBHOOK_MEMORY_LIMIT.into()),
            )])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(builders::security_context()),
        ..Container::default()
    };
    Deployment {
        metadata: config.meta(&config.name, true),
        spec: Some(DeploymentSpec {
            replicas: Some(config.replicas),
            selector: LabelSelector {
                match_labels: Some(config.selector_labels()),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(config.labels()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(config.name.clone()),
                    priority_class_name: config.priority_class_name.clone(),
                    topology_spread_constraints: Some(
                        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
                            .into_iter()
                            .map(|key| TopologySpreadConstraint {
                                max_skew: 1,
                                topology_key: key.into(),
                                when_unsatisfiable: "ScheduleAnyway".into(),
                                label_selector: Some(LabelSelector {
                                    match_labels: Some(config.selector_labels()),
                                    match_expressions: None,
                                }),
                                match_label_keys: Some(vec!["pod-template-hash".into()]),
                                ..TopologySpreadConstraint::default()
                            })
                            .collect(),
                    ),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn mutating_webhook_configuration(config: &WebhookManifestConfig) -> MutatingWebhookConfiguration {
    let namespace_selector = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".into(),
            operator: "NotIn".into(),
            values: Some(config.all_excluded_namespaces()),
        }]),
        match_labels: config
            .namespace_label
            .as_ref()
            .map(|(k, v)| BTreeMap::from([(k.clone(), v.clone())])),
    };
    // Only pods that opted in by label; never the webhook's own pods.
    let object_selector = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "app.kubernetes.io/name".into(),
            operator: "NotIn".into(),
            values: Some(vec![config.name.clone()]),
        }]),
        match_labels: Some(BTreeMap::from([(
            annotations::INJECT_LABEL.to_owned(),
            "true".to_owned(),
        )])),
    };
    MutatingWebhookConfiguration {
        metadata: config.meta(&config.name, false),
        webhooks: Some(vec![MutatingWebhook {
            name: format!("{}.tether.dev", config.name),
            admission_review_versions: vec!["v1".into()],
            client_config: WebhookClientConfig {
                service: Some(ServiceReference {
                    name: config.name.clone(),
                    namespace: config.namespace.clone(),
                    path: Some(MUTATE_PATH.into()),
                    port: Some(443),
                }),
                ca_bundle: config
                    .ca_bundle_pem
                    .as_ref()
                    .map(|pem| ByteString(pem.clone().into_bytes())),
                url: None,
            },
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into()]),
                resources: Some(vec!["pods".into()]),
                scope: Some("Namespaced".into()),
            }]),
            failure_policy: Some(config.failure_policy.as_str().into()),
            match_policy: Some("Equivalent".into()),
            namespace_selector: Some(namespace_selector),
            object_selector: Some(object_selector),
            side_effects: "None".into(),
            timeout_seconds: Some(config.timeout_seconds),
            reinvocation_policy: Some(config.reinvocation_policy.as_str().into()),
            match_conditions: None,
        }]),
    }
}

/// The webhook's complete deployment as typed objects, in apply order:
/// Namespace, ServiceAccount, ClusterRole + ClusterRoleBinding (only its
/// own MutatingWebhookConfiguration, by `resourceNames`), Role + RoleBinding
/// (its own Secret by `resourceNames`, plus `create` on Secrets in its own
/// namespace, which Kubernetes cannot restrict by name), Deployment,
/// Service, PodDisruptionBudget and the MutatingWebhookConfiguration.
pub fn webhook_objects(config: &WebhookManifestConfig) -> Result<Vec<Value>, ManifestError> {
    config.validate()?;
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: config.name.clone(),
        namespace: Some(config.namespace.clone()),
        api_group: None,
    };
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(config.namespace.clone()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/part-of".to_owned(), "tether".to_owned()),
                (
                    "pod-security.kubernetes.io/enforce".to_owned(),
                    "restricted".to_owned(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let service_account = ServiceAccount {
        metadata: config.meta(&config.name, true),
        automount_service_account_token: Some(true),
        ..ServiceAccount::default()
    };
    let cluster_role = ClusterRole {
        metadata: config.meta(&config.name, false),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["admissionregistration.k8s.io".into()]),
            resources: Some(vec!["mutatingwebhookconfigurations".into()]),
            resource_names: Some(vec![config.name.clone()]),
            verbs: vec!["get".into(), "patch".into(), "update".into()],
            non_resource_urls: None,
        }]),
        aggregation_rule: None,
    };
    let cluster_role_binding = ClusterRoleBinding {
        metadata: config.meta(&config.name, false),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: config.name.clone(),
        },
        subjects: Some(vec![subject.clone()]),
    };
    let role = Role {
        metadata: config.meta(&config.name, true),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["secrets".into()]),
                resource_names: Some(vec![config.secret_name.clone()]),
                verbs: vec!["get".into(), "patch".into(), "update".into()],
                non_resource_urls: None,
            },
            PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["secrets".into()]),
                resource_names: None,
                verbs: vec!["create".into()],
                non_resource_urls: None,
            },
        ]),
    };
    let role_binding = RoleBinding {
        metadata: config.meta(&config.name, true),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: config.name.clone(),
        },
        subjects: Some(vec![subject]),
    };
    let service = Service {
        metadata: config.meta(&config.name, true),
        spec: Some(ServiceSpec {
            selector: Some(config.selector_labels()),
            ports: Some(vec![ServicePort {
                name: Some("https".into()),
                port: 443,
                target_port: Some(IntOrString::String("https".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let pdb = PodDisruptionBudget {
        metadata: config.meta(&config.name, true),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: (config.replicas > 1).then_some(IntOrString::Int(1)),
            max_unavailable: (config.replicas <= 1).then_some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(config.selector_labels()),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    };
    Ok(vec![
        typed(&namespace),
        typed(&service_account),
        typed(&cluster_role),
        typed(&cluster_role_binding),
        typed(&role),
        typed(&role_binding),
        typed(&webhook_deployment(config)),
        typed(&service),
        typed(&pdb),
        typed(&mutating_webhook_configuration(config)),
    ])
}

/// [`webhook_objects`] as a multi-document YAML stream, ready for
/// `kubectl apply -f` or as a kustomize resource.
pub fn webhook_bundle(config: &WebhookManifestConfig) -> Result<String, ManifestError> {
    to_yaml_stream(&webhook_objects(config)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Strings YAML 1.1 (kubectl, the API server, PyYAML) would read as a
    /// boolean, null or number come out quoted, in keys and values, and
    /// read back as the same strings; everything else stays plain.
    #[test]
    fn yaml_1_1_ambiguous_strings_are_quoted() {
        let doc = serde_json::json!({
            "env": [
                {"name": "TETHER_RETENTION", "value": "off"},
                {"name": "A", "value": "yes"},
                {"name": "B", "value": "1:30"},
                {"name": "C", "value": "~"},
                {"name": "D", "value": "0x1F"},
                {"name": "E", "value": "plain words"},
                {"name": "F", "value": "within=1h,hourly=48"},
            ],
            "on": "N",
        });
        let text = to_yaml_stream(std::slice::from_ref(&doc)).unwrap();
        for quoted in ["'off'", "'yes'", "'1:30'", "'~'", "'0x1F'", "'on':", "'N'"] {
            assert!(text.contains(quoted), "{quoted} in\n{text}");
        }
        assert!(text.contains("value: plain words"), "{text}");
        assert!(text.contains("value: within=1h,hourly=48"), "{text}");
        assert!(!text.contains("tether-yaml-quoted"), "{text}");
        let back: serde_json::Value =
            serde_norway::from_str(text.trim_start_matches("---\n")).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn template_pointers_by_kind() {
        assert_eq!(
            pod_template_pointer("Pod").map(|p| p.to_string()),
            Some(String::new())
        );
        assert_eq!(
            pod_template_pointer("Job").map(|p| p.to_string()),
            Some("/spec/template".into())
        );
        assert_eq!(
            pod_template_pointer("CronJob").map(|p| p.to_string()),
            Some("/spec/jobTemplate/spec/template".into())
        );
        assert_eq!(pod_template_pointer("ConfigMap"), None);
    }

    /// `Ignore`, so that no CA bundle is needed in these unit tests.
    fn ignore() -> WebhookManifestConfig {
        WebhookManifestConfig {
            failure_policy: FailurePolicy::Ignore,
            ..WebhookManifestConfig::default()
        }
    }

    #[test]
    fn bundle_excludes_kube_system_and_itself() {
        let config = ignore();
        let objects = webhook_objects(&config).unwrap();
        let mwc = objects
            .iter()
            .find(|o| o["kind"] == "MutatingWebhookConfiguration")
            .cloned()
            .unwrap_or_default();
        let webhook = &mwc["webhooks"][0];
        let excluded = &webhook["namespaceSelector"]["matchExpressions"][0]["values"];
        assert_eq!(
            excluded,
            &serde_json::json!(["kube-system", "tether-system"])
        );
        assert_eq!(webhook["sideEffects"], "None");
        assert_eq!(webhook["failurePolicy"], "Ignore");
        assert_eq!(webhook["reinvocationPolicy"], "IfNeeded");
        assert_eq!(
            webhook["rules"][0]["operations"],
            serde_json::json!(["CREATE"])
        );
        assert_eq!(
            webhook["objectSelector"]["matchExpressions"][0]["values"][0],
            "tether-webhook"
        );
    }

    #[test]
    fn rbac_is_limited_by_resource_names() {
        let objects = webhook_objects(&ignore()).unwrap();
        for kind in ["ClusterRole", "Role"] {
            let role = objects
                .iter()
                .find(|o| o["kind"] == kind)
                .cloned()
                .unwrap_or_default();
            for rule in role["rules"].as_array().cloned().unwrap_or_default() {
                let verbs = rule["verbs"].as_array().cloned().unwrap_or_default();
                if verbs == [serde_json::json!("create")] {
                    assert_eq!(rule["resources"], serde_json::json!(["secrets"]));
                } else {
                    assert!(
                        rule["resourceNames"]
                            .as_array()
                            .is_some_and(|n| n.len() == 1),
                        "{rule}"
                    );
                }
            }
        }
    }

    #[test]
    fn settings_are_validated() {
        let bad = [
            WebhookManifestConfig {
                timeout_seconds: 31,
                ..ignore()
            },
            WebhookManifestConfig {
                namespace: "Bad".into(),
                ..ignore()
            },
            WebhookManifestConfig {
                image: "not an image".into(),
                ..ignore()
            },
            WebhookManifestConfig {
                port: 443,
                ..ignore()
            },
            WebhookManifestConfig {
                name: "1webhook".into(),
                ..ignore()
            },
            // Fail without a CA bundle.
            WebhookManifestConfig::default(),
        ];
        assert!(webhook_bundle(&ignore()).is_ok());
        for config in bad {
            assert!(webhook_bundle(&config).is_err(), "{config:?}");
        }
    }

    #[test]
    fn unannotated_and_foreign_documents_pass_through() {
        let input = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: b\n---\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: a\n    image: b\n";
        let out = inject_yaml(input, &InjectorConfig::default()).unwrap_or_default();
        assert_eq!(out.matches("---\n").count(), 2, "{out}");
        assert!(!out.contains("tether"), "{out}");
    }

    #[test]
    fn refusals_name_the_document_and_annotation() {
        let input = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata:\n      labels: {a: b}\n      annotations:\n        tether.dev/inject: \"true\"\n        tether.dev/mount-path: /data\n    spec:\n      containers: [{name: a, image: b}]\n";
        let err = inject_yaml(input, &InjectorConfig::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("document 1 (Deployment web)"), "{err}");
        assert!(err.contains("tether.dev/remote"), "{err}");
        let err = inject_yaml("a: [", &InjectorConfig::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("document 1"), "{err}");
    }
}
