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
    Service, ServiceAccount, ServicePort, ServiceSpec,
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

use crate::annotations::SidecarMode;
use crate::builders;
use crate::inject::{self, InjectError, InjectionOutcome, InjectorConfig};
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
    let mut out = Vec::new();
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
        inject_document(&mut value, number, config)?;
        out.push(value);
    }
    to_yaml_stream(&out)
}

fn inject_document(
    value: &mut Value,
    document: usize,
    config: &InjectorConfig,
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
                inject_document(item, document, config)?;
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
    if let InjectionOutcome::Patched { patch, .. } = outcome {
        json_patch::patch(value, &patch)
            .map_err(|e| invalid(format!("applying the patch: {e}")))?;
    }
    Ok(())
}

fn to_yaml_stream<T: Serialize>(documents: &[T]) -> Result<String, ManifestError> {
    let mut text = String::new();
    for document in documents {
        text.push_str("---\n");
        text.push_str(&serde_norway::to_string(document).map_err(ManifestError::Write)?);
    }
    Ok(text)
}

/// What the API server does when the webhook cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Refuse the pod: an annotated pod never starts without its restore.
    /// Pods in every selected namespace wait for the webhook, so pair this
    /// with two replicas (the default) and the PodDisruptionBudget.
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
    /// PEM CA bundle to put in `clientConfig.caBundle`; leave unset when the
    /// webhook patches its own (webhook-certs does).
    pub ca_bundle_pem: Option<String>,
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
        vec![
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
        ]
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

/// A typed object with its `apiVersion` and `kind` for serialisation.
fn typed<K: k8s_openapi::Resource + Serialize>(object: &K) -> Value {
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
                name: "RUST_LOG".into(),
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
                ("cpu".to_owned(), Quantity("50m".into())),
                ("memory".to_owned(), Quantity("32Mi".into())),
            ])),
            // Coherent with the server's defaults (`ServerLimits`): at most
            // 32 MiB of request bodies in flight, plus connections and
            // answers; measured peaks are in BENCHMARKS.md.
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("128Mi".into()),
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
    let object_selector = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "app.kubernetes.io/name".into(),
            operator: "NotIn".into(),
            values: Some(vec![config.name.clone()]),
        }]),
        match_labels: None,
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

    #[test]
    fn bundle_excludes_kube_system_and_itself() {
        let config = WebhookManifestConfig::default();
        let objects = webhook_objects(&config).unwrap_or_default();
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
        assert_eq!(webhook["failurePolicy"], "Fail");
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
        let objects = webhook_objects(&WebhookManifestConfig::default()).unwrap_or_default();
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
                ..WebhookManifestConfig::default()
            },
            WebhookManifestConfig {
                namespace: "Bad".into(),
                ..WebhookManifestConfig::default()
            },
            WebhookManifestConfig {
                image: "not an image".into(),
                ..WebhookManifestConfig::default()
            },
            WebhookManifestConfig {
                port: 443,
                ..WebhookManifestConfig::default()
            },
            WebhookManifestConfig {
                name: "1webhook".into(),
                ..WebhookManifestConfig::default()
            },
        ];
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
