//! The Kubernetes calls, checked against recorded requests: a kube `Client`
//! over a tower-test mock service; each exchange asserts method, path,
//! query, content type and body, and answers like the API server does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::SystemTime;

use http::{Method, Request, Response};
use k8s_openapi::ByteString;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::Handle;
use webhook_certs::{
    CertBundle, CertRequest, CertRotation, Error, RotationPolicy, SecretStore, WebhookConfigRef,
    ensure_certs, generate_bundle, patch_ca_bundle, patch_ca_bundle_by_name,
};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

const SECRET_PATH: &str = "/api/v1/namespaces/tether/secrets/hook-tls";
const MUTATING_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/tether";
const VALIDATING_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/tether";

fn mock() -> (Client, ApiHandle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

fn request() -> CertRequest {
    CertRequest::new("hook", "tether").unwrap()
}

/// One recorded request: asserts what it must be and returns its JSON body.
async fn expect(
    handle: &mut ApiHandle,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    status: u16,
    response: Value,
) -> Value {
    let (req, send) = handle.next_request().await.expect("a request");
    assert_eq!(req.method(), method, "{}", req.uri());
    assert_eq!(req.uri().path(), path);
    if method != Method::GET {
        let query = req.uri().query().unwrap_or_default();
        assert!(query.contains("fieldManager=webhook-certs"), "{query}");
    }
    if let Some(ct) = content_type {
        assert_eq!(req.headers()["content-type"], ct);
    }
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    send.send_response(
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&response).unwrap()))
            .unwrap(),
    );
    body
}

/// After the client is dropped: no request was left unanswered.
async fn expect_no_more(mut handle: ApiHandle) {
    assert!(
        handle.next_request().await.is_none(),
        "unexpected extra request"
    );
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("{reason} (recorded)"), "reason": reason, "code": code})
}

fn b64(text: &str) -> Value {
    serde_json::to_value(ByteString(text.as_bytes().to_vec())).unwrap()
}

fn unb64(value: &Value) -> String {
    let bytes: ByteString = serde_json::from_value(value.clone()).unwrap();
    String::from_utf8(bytes.0).unwrap()
}

fn secret_json(bundle: &CertBundle, rv: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "hook-tls", "namespace": "tether", "resourceVersion": rv},
        "data": {
            "ca.crt": b64(&bundle.ca_bundle_pem()),
            "ca.key": b64(bundle.ca_key_pem().expose()),
            "tls.crt": b64(&bundle.tls_crt_pem()),
            "tls.key": b64(bundle.tls_key_pem().expose()),
        }
    })
}

#[tokio::test]
async fn secret_is_created_if_absent_then_patched_with_its_resource_version() {
    let (client, mut handle) = mock();
    let api = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::GET,
            SECRET_PATH,
            None,
            404,
            status(404, "NotFound"),
        )
        .await;
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), "/api/v1/namespaces/tether/secrets");
        let mut created: Value =
            serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
        assert_eq!(created["type"], "kubernetes.io/tls");
        assert_eq!(created["metadata"]["name"], "hook-tls");
        assert_eq!(created["metadata"]["namespace"], "tether");
        assert_eq!(
            created["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "webhook-certs"
        );
        assert!(created["metadata"].get("resourceVersion").is_none());
        let keys: Vec<&String> = created["data"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["ca.crt", "ca.key", "tls.crt", "tls.key"]);
        assert!(unb64(&created["data"]["ca.key"]).contains("PRIVATE KEY"));
        created["metadata"]["resourceVersion"] = json!("1");
        send.send_response(
            Response::builder()
                .status(201)
                .body(Body::from(serde_json::to_vec(&created).unwrap()))
                .unwrap(),
        );

        // Second run, with one more name: read, then a merge patch that
        // carries resourceVersion 1 and keeps the CA.
        expect(
            &mut handle,
            Method::GET,
            SECRET_PATH,
            None,
            200,
            created.clone(),
        )
        .await;
        let mut patched = created.clone();
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(req.uri().path(), SECRET_PATH);
        assert_eq!(
            req.headers()["content-type"],
            "application/merge-patch+json"
        );
        let patch: Value =
            serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
        assert_eq!(patch["metadata"], json!({"resourceVersion": "1"}));
        assert_eq!(patch.as_object().unwrap().len(), 2, "{patch}");
        assert_eq!(patch["data"]["ca.crt"], created["data"]["ca.crt"]);
        assert_eq!(patch["data"]["ca.key"], created["data"]["ca.key"]);
        assert_ne!(patch["data"]["tls.crt"], created["data"]["tls.crt"]);
        patched["data"] = patch["data"].clone();
        patched["metadata"]["resourceVersion"] = json!("2");
        send.send_response(
            Response::builder()
                .status(200)
                .body(Body::from(serde_json::to_vec(&patched).unwrap()))
                .unwrap(),
        );
        handle
    });

    let store = SecretStore::new(client.clone(), "tether", "hook-tls");
    let policy = RotationPolicy::default();
    let first = ensure_certs(&store, &request(), &policy, SystemTime::now())
        .await
        .unwrap();
    assert!(first.written);
    let wider = request().with_dns_name("hook.example.com").unwrap();
    let second = ensure_certs(&store, &wider, &policy, SystemTime::now())
        .await
        .unwrap();
    assert!(second.written);
    assert_eq!(second.bundle.current_ca(), first.bundle.current_ca());
    drop((store, client));
    expect_no_more(api.await.unwrap()).await;
}

#[tokio::test]
async fn a_replica_that_loses_the_create_race_adopts_the_winners_ca() {
    let now = SystemTime::now();
    let winner = generate_bundle(&request(), &RotationPolicy::default(), now.into()).unwrap();
    let winner_json = secret_json(&winner, "7");
    let (client, mut handle) = mock();
    let api = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::GET,
            SECRET_PATH,
            None,
            404,
            status(404, "NotFound"),
        )
        .await;
        expect(
            &mut handle,
            Method::POST,
            "/api/v1/namespaces/tether/secrets",
            Some("application/json"),
            409,
            status(409, "AlreadyExists"),
        )
        .await;
        expect(
            &mut handle,
            Method::GET,
            SECRET_PATH,
            None,
            200,
            winner_json,
        )
        .await;
        handle
    });
    let store = SecretStore::new(client.clone(), "tether", "hook-tls");
    let ensured = ensure_certs(&store, &request(), &RotationPolicy::default(), now)
        .await
        .unwrap();
    assert!(!ensured.written);
    assert_eq!(ensured.bundle, winner);
    drop((store, client));
    expect_no_more(api.await.unwrap()).await;
}

#[tokio::test]
async fn a_stale_resource_version_is_retried_from_a_fresh_read() {
    let now = SystemTime::now();
    let complete = generate_bundle(&request(), &RotationPolicy::default(), now.into()).unwrap();
    let mut incomplete = secret_json(&complete, "5");
    incomplete["data"]
        .as_object_mut()
        .unwrap()
        .remove("tls.crt");
    let fresh = secret_json(&complete, "6");
    let (client, mut handle) = mock();
    let api = tokio::spawn(async move {
        expect(&mut handle, Method::GET, SECRET_PATH, None, 200, incomplete).await;
        let patch = expect(
            &mut handle,
            Method::PATCH,
            SECRET_PATH,
            Some("application/merge-patch+json"),
            409,
            status(409, "Conflict"),
        )
        .await;
        assert_eq!(patch["metadata"]["resourceVersion"], "5");
        expect(&mut handle, Method::GET, SECRET_PATH, None, 200, fresh).await;
        handle
    });
    let store = SecretStore::new(client.clone(), "tether", "hook-tls");
    let ensured = ensure_certs(&store, &request(), &RotationPolicy::default(), now)
        .await
        .unwrap();
    assert!(!ensured.written);
    assert_eq!(ensured.bundle, complete);
    drop((store, client));
    expect_no_more(api.await.unwrap()).await;
}

#[tokio::test]
async fn a_secret_of_another_type_is_not_taken_over() {
    let (client, mut handle) = mock();
    let api = tokio::spawn(async move {
        let opaque = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "hook-tls", "namespace": "tether", "resourceVersion": "3"},
            "data": {"password": b64("hunter2")}});
        expect(&mut handle, Method::GET, SECRET_PATH, None, 200, opaque).await;
        handle
    });
    let store = SecretStore::new(client.clone(), "tether", "hook-tls");
    let err = ensure_certs(
        &store,
        &request(),
        &RotationPolicy::default(),
        SystemTime::now(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::SecretType { .. }), "{err}");
    assert!(err.to_string().contains("tether/hook-tls"), "{err}");
    assert!(err.to_string().contains("Opaque"), "{err}");
    drop((store, client));
    expect_no_more(api.await.unwrap()).await;
}

fn webhook(name: &str, ca_bundle: Option<&str>) -> Value {
    let mut client_config =
        json!({"service": {"name": "hook", "namespace": "tether", "path": "/mutate", "port": 443}});
    if let Some(bundle) = ca_bundle {
        client_config["caBundle"] = b64(bundle);
    }
    json!({"name": name, "clientConfig": client_config, "sideEffects": "None",
           "admissionReviewVersions": ["v1"], "failurePolicy": "Fail",
           "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]})
}

fn config(kind: &str, webhooks: Vec<Value>) -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
           "metadata": {"name": "tether", "resourceVersion": "42"}, "webhooks": webhooks})
}

#[tokio::test]
async fn ca_bundle_is_set_on_every_webhook_with_a_guarded_json_patch() {
    let bundle = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let (client, mut handle) = mock();
    let api = tokio::spawn(async move {
        let before = config(
            "MutatingWebhookConfiguration",
            vec![
                webhook("a.tether.dev", Some("old bundle")),
                webhook("b.tether.dev", None),
                webhook("c.tether.dev", Some(bundle)),
            ],
        );
        expect(
            &mut handle,
            Method::GET,
            MUTATING_PATH,
            None,
            200,
            before.clone(),
        )
        .await;
        let patch = expect(
            &mut handle,
            Method::PATCH,
            MUTATING_PATH,
            Some("application/json-patch+json"),
            200,
            before,
        )
        .await;
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/webhooks/0/name", "value": "a.tether.dev"},
                {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": b64(bundle)},
                {"op": "test", "path": "/webhooks/1/name", "value": "b.tether.dev"},
                {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": b64(bundle)},
            ])
        );
        // Second call: everything is up to date, so only a read.
        let after = config(
            "MutatingWebhookConfiguration",
            vec![
                webhook("a.tether.dev", Some(bundle)),
                webhook("b.tether.dev", Some(bundle)),
                webhook("c.tether.dev", Some(bundle)),
            ],
        );
        expect(&mut handle, Method::GET, MUTATING_PATH, None, 200, after).await;
        handle
    });
    let target = WebhookConfigRef::mutating("tether");
    let first = patch_ca_bundle(&client, &target, bundle).await.unwrap();
    assert_eq!(first.patched, ["a.tether.dev", "b.tether.dev"]);
    assert_eq!(first.unchanged, ["c.tether.dev"]);
    let second = patch_ca_bundle(&client, &target, bundle).await.unwrap();
    assert!(second.patched.is_empty());
    assert_eq!(second.unchanged.len(), 3);
    drop(client);
    expect_no_more(api.await.unwrap()).await;
}

#[tokio::test]
async fn a_failed_test_operation_is_retried_against_the_new_list() {
    let bundle = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let (client, mut handle) = mock();
    let api = tokio::spawn(async move {
        let before = config(
            "ValidatingWebhookConfiguration",
            vec![webhook("a", None), webhook("b", None)],
        );
        expect(&mut handle, Method::GET, VALIDATING_PATH, None, 200, before).await;
        expect(
            &mut handle,
            Method::PATCH,
            VALIDATING_PATH,
            None,
            422,
            status(422, "Invalid"),
        )
        .await;
        // Someone removed "a" in between: the patch now targets index 0 = "b".
        let reordered = config("ValidatingWebhookConfiguration", vec![webhook("b", None)]);
        expect(
            &mut handle,
            Method::GET,
            VALIDATING_PATH,
            None,
            200,
            reordered.clone(),
        )
        .await;
        let patch = expect(
            &mut handle,
            Method::PATCH,
            VALIDATING_PATH,
            None,
            200,
            reordered,
        )
        .await;
        assert_eq!(
            patch[0],
            json!({"op": "test", "path": "/webhooks/0/name", "value": "b"})
        );
        assert_eq!(patch.as_array().unwrap().len(), 2);
        handle
    });
    let outcome = patch_ca_bundle(&client, &WebhookConfigRef::validating("tether"), bundle)
        .await
        .unwrap();
    assert_eq!(outcome.patched, ["b"]);
    drop(client);
    expect_no_more(api.await.unwrap()).await;
}

#[tokio::test]
async fn patch_by_name_finds_whichever_kind_exists() {
    let bundle = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let (client, mut handle) = mock();
    let api = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::GET,
            MUTATING_PATH,
            None,
            404,
            status(404, "NotFound"),
        )
        .await;
        let validating = config("ValidatingWebhookConfiguration", vec![webhook("v", None)]);
        expect(
            &mut handle,
            Method::GET,
            VALIDATING_PATH,
            None,
            200,
            validating.clone(),
        )
        .await;
        expect(
            &mut handle,
            Method::PATCH,
            VALIDATING_PATH,
            None,
            200,
            validating,
        )
        .await;
        // Neither exists.
        expect(
            &mut handle,
            Method::GET,
            MUTATING_PATH,
            None,
            404,
            status(404, "NotFound"),
        )
        .await;
        expect(
            &mut handle,
            Method::GET,
            VALIDATING_PATH,
            None,
            404,
            status(404, "NotFound"),
        )
        .await;
        handle
    });
    let done = patch_ca_bundle_by_name(&client, "tether", bundle)
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].config, WebhookConfigRef::validating("tether"));
    let err = patch_ca_bundle_by_name(&client, "tether", bundle)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WebhookConfigNotFound { .. }), "{err}");
    drop(client);
    expect_no_more(api.await.unwrap()).await;
}

#[tokio::test]
async fn reconcile_stores_serves_and_publishes() {
    let (client, mut handle) = mock();
    let api = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::GET,
            SECRET_PATH,
            None,
            404,
            status(404, "NotFound"),
        )
        .await;
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.method(), Method::POST);
        let created: Value =
            serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
        send.send_response(
            Response::builder()
                .status(201)
                .body(Body::from(serde_json::to_vec(&created).unwrap()))
                .unwrap(),
        );
        let before = config(
            "MutatingWebhookConfiguration",
            vec![webhook("inject.tether.dev", None)],
        );
        expect(
            &mut handle,
            Method::GET,
            MUTATING_PATH,
            None,
            200,
            before.clone(),
        )
        .await;
        let patch = expect(&mut handle, Method::PATCH, MUTATING_PATH, None, 200, before).await;
        // The published bundle is the stored ca.crt.
        assert_eq!(patch[1]["value"], created["data"]["ca.crt"]);
        handle
    });
    let rotation = CertRotation::new(
        SecretStore::new(client.clone(), "tether", "hook-tls"),
        request(),
        RotationPolicy::default(),
    )
    .publish_to(client.clone(), vec![WebhookConfigRef::mutating("tether")]);
    assert!(!rotation.resolver().has_certificate());
    let step = rotation.reconcile(SystemTime::now()).await.unwrap();
    assert!(step.ensured.written);
    assert!(step.serving_changed);
    assert!(rotation.resolver().has_certificate());
    assert_eq!(step.published.len(), 1);
    assert_eq!(step.published[0].patched, ["inject.tether.dev"]);
    drop((rotation, client));
    expect_no_more(api.await.unwrap()).await;
}

#[tokio::test]
async fn run_refuses_an_overlap_shorter_than_the_check_interval() {
    let (client, _handle) = mock();
    let rotation = CertRotation::new(
        SecretStore::new(client, "tether", "hook-tls"),
        request(),
        RotationPolicy::default(),
    );
    let err = rotation
        .run(std::time::Duration::from_secs(2 * 24 * 3600))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidPolicy(_)), "{err}");
}
