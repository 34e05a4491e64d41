//! The webhook bundle validates for Kubernetes 1.29 and the newest bundled
//! schema, `kubectl kustomize` accepts it as a resource, and it is safe on a
//! shared cluster: only opted-in pods reach the webhook, no `Fail`
//! configuration exists without a CA bundle, and the Deployment is HA.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "support/policy.rs"]
mod policy;

use std::process::Command;

use common::*;
use kube_deploy::manifests::{
    FailurePolicy, ReinvocationPolicy, WebhookManifestConfig, webhook_bundle,
};
use policy::*;
use serde_json::Value;

/// A CA certificate as `tether certs create` would store in `ca.crt`.
fn ca_pem() -> String {
    rcgen::generate_simple_self_signed(vec!["tether-webhook.tether-system.svc".into()])
        .unwrap()
        .cert
        .pem()
}

fn with_ca() -> WebhookManifestConfig {
    WebhookManifestConfig {
        ca_bundle_pem: Some(ca_pem()),
        ..WebhookManifestConfig::default()
    }
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind).unwrap()
}

#[test]
fn default_bundle_has_every_object_an_admin_needs() {
    let yaml = webhook_bundle(&with_ca()).unwrap();
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

/// The API server sends the webhook only pods labelled
/// `tether.dev/inject: "true"`: an unrelated pod, a pod with only the old
/// annotation, and the webhook's own pods are never sent, so a webhook
/// outage cannot block them.
#[test]
fn only_opted_in_pods_reach_the_webhook() {
    let docs = yaml_documents(&webhook_bundle(&with_ca()).unwrap());
    let webhook = &find(&docs, "MutatingWebhookConfiguration")["webhooks"][0];
    let selector = &webhook["objectSelector"];
    assert_eq!(selector["matchLabels"]["tether.dev/inject"], "true");

    let jupyter = yaml_documents(&fixture("jupyterhub-singleuser.yaml")).remove(0);
    assert!(selector_matches(selector, &jupyter["metadata"]["labels"]));
    let restricted = yaml_documents(&fixture("restricted-no-fsgroup.yaml")).remove(0);
    assert!(selector_matches(
        selector,
        &restricted["metadata"]["labels"]
    ));

    let unrelated = yaml_documents(&fixture("unrelated.yaml"));
    let plain = find(&unrelated, "Pod");
    assert!(!selector_matches(selector, &plain["metadata"]["labels"]));
    // Annotation only (offline injection's form): not sent.
    let job = yaml_documents(&fixture("job.yaml")).remove(0);
    assert!(!selector_matches(
        selector,
        &job["spec"]["template"]["metadata"]["labels"]
    ));
    // The webhook's own pods, even if someone labelled them.
    let deployment = find(&docs, "Deployment");
    let mut own = deployment["spec"]["template"]["metadata"]["labels"].clone();
    own["tether.dev/inject"] = "true".into();
    assert!(!selector_matches(selector, &own));
    // Opted-in pods in kube-system and the webhook's namespace are not sent.
    let ns = &webhook["namespaceSelector"];
    for (name, sent) in [
        ("jhub", true),
        ("kube-system", false),
        ("tether-system", false),
    ] {
        let labels = serde_json::json!({"kubernetes.io/metadata.name": name});
        assert_eq!(selector_matches(ns, &labels), sent, "{name}");
    }
    // Updates of existing pods never go through it.
    assert_eq!(
        webhook["rules"][0]["operations"],
        serde_json::json!(["CREATE"])
    );
}

#[test]
fn namespace_label_narrows_the_selection_further() {
    let config = WebhookManifestConfig {
        namespace_label: Some(("tether.dev/injection".into(), "enabled".into())),
        ..with_ca()
    };
    let docs = yaml_documents(&webhook_bundle(&config).unwrap());
    let ns = &find(&docs, "MutatingWebhookConfiguration")["webhooks"][0]["namespaceSelector"];
    let labelled = serde_json::json!({"kubernetes.io/metadata.name": "jhub", "tether.dev/injection": "enabled"});
    let bare = serde_json::json!({"kubernetes.io/metadata.name": "jhub"});
    assert!(selector_matches(ns, &labelled));
    assert!(!selector_matches(ns, &bare));
    let bad = WebhookManifestConfig {
        namespace_label: Some(("bad key!".into(), "x".into())),
        ..with_ca()
    };
    assert!(webhook_bundle(&bad).is_err());
}

/// No `Fail` configuration ever exists without a valid CA bundle: the
/// generator refuses it; with the bundle it is embedded as `caBundle`.
#[test]
fn fail_needs_the_ca_bundle_from_the_start() {
    let err = webhook_bundle(&WebhookManifestConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("ca_bundle_pem"), "{err}");
    assert!(err.contains("tether certs create"), "{err}");

    for garbage in [
        "",
        "not pem",
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
    ] {
        let config = WebhookManifestConfig {
            ca_bundle_pem: Some(garbage.into()),
            ..WebhookManifestConfig::default()
        };
        assert!(webhook_bundle(&config).is_err(), "{garbage:?} accepted");
    }

    let pem = ca_pem();
    let config = WebhookManifestConfig {
        ca_bundle_pem: Some(pem.clone()),
        ..WebhookManifestConfig::default()
    };
    let yaml = webhook_bundle(&config).unwrap();
    let docs = yaml_documents(&yaml);
    let webhook = &find(&docs, "MutatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(webhook["failurePolicy"], "Fail");
    let typed: k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration =
        serde_json::from_value(find(&docs, "MutatingWebhookConfiguration").clone()).unwrap();
    let bundle = typed.webhooks.unwrap()[0]
        .client_config
        .ca_bundle
        .clone()
        .unwrap()
        .0;
    assert_eq!(String::from_utf8(bundle).unwrap(), pem);
    assert_valid_for_kubernetes(&[("with-ca", yaml)]);

    // Ignore never blocks a pod, so it needs no bundle.
    let ignore = WebhookManifestConfig {
        failure_policy: FailurePolicy::Ignore,
        ..WebhookManifestConfig::default()
    };
    let docs = yaml_documents(&webhook_bundle(&ignore).unwrap());
    let webhook = &find(&docs, "MutatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(webhook["failurePolicy"], "Ignore");
    assert!(webhook["clientConfig"].get("caBundle").is_none());
}

#[test]
fn the_webhook_deployment_is_highly_available_and_logs_through_tether_log() {
    let docs = yaml_documents(&webhook_bundle(&with_ca()).unwrap());
    let deployment = find(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(env.contains(&"TETHER_LOG"), "{env:?}");
    assert!(!env.contains(&"RUST_LOG"), "{env:?}");
    assert_eq!(deployment["spec"]["replicas"], 2);
    // Spread over nodes (and zones) by the pods' own labels.
    let spread = pod["topologySpreadConstraints"].as_array().unwrap();
    let keys: Vec<&str> = spread
        .iter()
        .map(|c| c["topologyKey"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    );
    for c in spread {
        assert!(selector_matches(
            &c["labelSelector"],
            &deployment["spec"]["template"]["metadata"]["labels"]
        ));
    }
    // No priority class unless asked for.
    assert!(pod.get("priorityClassName").is_none());
    assert_eq!(container["resources"]["limits"]["memory"], "256Mi");
    assert_eq!(container["resources"]["requests"]["memory"], "64Mi");
    assert!(container["resources"]["limits"].get("cpu").is_none());
    assert_eq!(restricted_violations(pod), Vec::<String>::new());
    let pdb = find(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);

    let config = WebhookManifestConfig {
        priority_class_name: Some("system-cluster-critical".into()),
        ..with_ca()
    };
    let yaml = webhook_bundle(&config).unwrap();
    let docs = yaml_documents(&yaml);
    assert_eq!(
        find(&docs, "Deployment")["spec"]["template"]["spec"]["priorityClassName"],
        "system-cluster-critical"
    );
    assert_valid_for_kubernetes(&[("priority", yaml)]);
    let bad = WebhookManifestConfig {
        priority_class_name: Some("Not_A_Name".into()),
        ..with_ca()
    };
    assert!(webhook_bundle(&bad).is_err());
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
        ca_bundle_pem: Some(ca_pem()),
        ..WebhookManifestConfig::default()
    };
    let yaml = webhook_bundle(&config).unwrap();
    let docs = yaml_documents(&yaml);
    let mwc = find(&docs, "MutatingWebhookConfiguration");
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
    let pdb = find(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_valid_for_kubernetes(&[("configured", yaml)]);
}

#[test]
fn kustomize_accepts_the_bundle_as_a_resource() {
    let Some(kubectl) = testbed_var("TETHER_TEST_KUBECTL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bundle = webhook_bundle(&with_ca()).unwrap();
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
    // What kustomize renders still validates.
    assert_valid_for_kubernetes(&[(
        "kustomized",
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )]);
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
