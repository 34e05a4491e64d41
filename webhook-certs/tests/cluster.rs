//! Against a real cluster (`$KUBECONFIG`): `cargo test -p webhook-certs
//! --test cluster -- --ignored`. Uses namespace `$TETHER_TEST_NAMESPACE`
//! (default `default`); creates a Secret and a ValidatingWebhookConfiguration
//! that matches no object, and deletes both at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::SystemTime;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use webhook_certs::{
    CertRequest, RotationPolicy, SecretStore, WebhookConfigRef, ensure_certs, patch_ca_bundle,
};

#[tokio::test]
#[ignore = "needs a Kubernetes cluster in $KUBECONFIG"]
async fn secret_store_and_ca_bundle_on_a_real_cluster() {
    let client = Client::try_default()
        .await
        .expect("a cluster in $KUBECONFIG");
    let namespace = std::env::var("TETHER_TEST_NAMESPACE").unwrap_or_else(|_| "default".into());
    let name = format!("webhook-certs-test-{}", std::process::id());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());

    let webhook = |hook: &str| {
        json!({"name": hook, "sideEffects": "None", "admissionReviewVersions": ["v1"],
               "failurePolicy": "Ignore",
               "objectSelector": {"matchLabels": {"webhook-certs-test": "never-matches"}},
               "clientConfig": {"service": {"name": "webhook-certs-test", "namespace": namespace}},
               "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                          "resources": ["configmaps"]}]})
    };
    let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [webhook("one.webhook-certs.test"), webhook("two.webhook-certs.test")],
    }))
    .unwrap();
    configs
        .create(&PostParams::default(), &config)
        .await
        .unwrap();

    let (client2, secrets2, configs2) = (client.clone(), secrets.clone(), configs.clone());
    let (name2, namespace2) = (name.clone(), namespace.clone());
    let outcome = async move {
        let (client, secrets, configs, name, namespace) =
            (client2, secrets2, configs2, name2, namespace2);
        let store = SecretStore::new(client.clone(), &namespace, &name);
        let request = CertRequest::new("webhook-certs-test", &namespace).unwrap();
        let policy = RotationPolicy::default();
        let first = ensure_certs(&store, &request, &policy, SystemTime::now())
            .await
            .unwrap();
        assert!(first.written);
        let again = ensure_certs(&store, &request, &policy, SystemTime::now())
            .await
            .unwrap();
        assert!(!again.written);
        assert_eq!(again.bundle, first.bundle);
        let stored = secrets.get(&name).await.unwrap();
        assert_eq!(stored.type_.as_deref(), Some("kubernetes.io/tls"));

        let bundle = first.bundle.ca_bundle_pem();
        let patched = patch_ca_bundle(&client, &WebhookConfigRef::validating(&name), &bundle)
            .await
            .unwrap();
        assert_eq!(patched.patched.len(), 2);
        let live = configs.get(&name).await.unwrap();
        for hook in live.webhooks.unwrap() {
            assert_eq!(hook.client_config.ca_bundle.unwrap().0, bundle.as_bytes());
            assert!(hook.client_config.service.is_some(), "service kept");
        }
    };
    let result = tokio::spawn(outcome).await;
    let _ = secrets.delete(&name, &DeleteParams::default()).await;
    let _ = configs.delete(&name, &DeleteParams::default()).await;
    result.unwrap();
}
