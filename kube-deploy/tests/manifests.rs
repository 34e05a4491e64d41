//! The webhook bundle validates for Kubernetes 1.29 and the newest bundled
//! schema, and `kubectl kustomize` accepts it as a resource.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;
use kube_deploy::manifests::{
    FailurePolicy, ReinvocationPolicy, WebhookManifestConfig, webhook_bundle,
};

#[test]
fn default_bundle_has_every_object_an_admin_needs() {
    let yaml = webhook_bundle(&WebhookManifestConfig::default()).unwrap();
    let kinds: Vec<String> = yaml_documents(&yaml)
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "MutatingWebhookConfiguration"
        ]
    );
    assert_valid_for_kubernetes(&[("bundle", yaml)]);
}

#[test]
fn configured_bundle_validates() {
    let config = WebhookManifestConfig {
        namespace: "platform-tether".into(),
        failure_policy: FailurePolicy::Ignore,
        reinvocation_policy: ReinvocationPolicy::Never,
        timeout_seconds: 10,
        replicas: 1,
        excluded_namespaces: vec!["monitoring".into()],
        namespace_label: Some(("tether.dev/injection".into(), "enabled".into())),
        ca_bundle_pem: Some(
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        ),
        ..WebhookManifestConfig::default()
    };
    let yaml = webhook_bundle(&config).unwrap();
    let docs = yaml_documents(&yaml);
    let mwc = docs
        .iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    let webhook = &mwc["webhooks"][0];
    assert_eq!(webhook["failurePolicy"], "Ignore");
    assert_eq!(webhook["reinvocationPolicy"], "Never");
    assert_eq!(webhook["timeoutSeconds"], 10);
    assert_eq!(
        webhook["namespaceSelector"]["matchLabels"]["tether.dev/injection"],
        "enabled"
    );
    assert_eq!(
        webhook["namespaceSelector"]["matchExpressions"][0]["values"],
        serde_json::json!(["kube-system", "platform-tether", "monitoring"])
    );
    assert!(webhook["clientConfig"]["caBundle"].is_string());
    let pdb = docs
        .iter()
        .find(|d| d["kind"] == "PodDisruptionBudget")
        .unwrap();
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_valid_for_kubernetes(&[("configured", yaml)]);
}

#[test]
fn kustomize_accepts_the_bundle_as_a_resource() {
    let Some(kubectl) = testbed_var("TETHER_TEST_KUBECTL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bundle = webhook_bundle(&WebhookManifestConfig::default()).unwrap();
    std::fs::write(dir.path().join("tether-webhook.yaml"), &bundle).unwrap();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - tether-webhook.yaml\ncommonLabels:\n  team: platform\n",
    )
    .unwrap();
    let output = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered = yaml_documents(&String::from_utf8_lossy(&output.stdout));
    assert_eq!(rendered.len(), yaml_documents(&bundle).len());
    assert!(
        rendered
            .iter()
            .all(|d| d["metadata"]["labels"]["team"] == "platform")
    );
}

#[test]
fn the_validator_would_catch_a_bad_manifest() {
    // Guards the other tests: an unknown field must be refused in --strict.
    let bad = "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers: [{name: a, image: b, restartPolicyy: Always}]\n";
    if let Some(result) = kubernetes_validate(&[("bad", bad.to_owned())]) {
        let err = result.expect_err("an unknown field must be refused");
        assert!(err.contains("restartPolicyy"), "{err}");
    }
}
