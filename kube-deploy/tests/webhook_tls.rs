//! End to end: the webhook served over TLS on loopback with a certificate
//! from webhook-certs, verified by the client against the caBundle that
//! `webhook_bundle` publishes; hostile and malformed AdmissionReviews each
//! get a clear refusal; the certificate rotates in memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube_deploy::manifests::{WebhookManifestConfig, webhook_objects};
use kube_deploy::metrics::AdmissionOutcome;
use kube_deploy::webhook::{WebhookConfig, WebhookState, bind, serve, tls_server_config};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use webhook_certs::{CertBundle, CertRequest, CertResolver, RotationPolicy, generate_bundle};

const SERVICE_DNS: &str = "tether-webhook.tether-system.svc";

fn make_bundle() -> CertBundle {
    let request = CertRequest::new("tether-webhook", "tether-system")
        .unwrap()
        .with_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    generate_bundle(
        &request,
        &RotationPolicy::default(),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap()
}

/// The caBundle exactly as the published MutatingWebhookConfiguration
/// carries it (base64 in YAML, decoded by k8s-openapi).
fn published_ca_bundle(bundle: &CertBundle) -> Vec<u8> {
    let config = WebhookManifestConfig {
        ca_bundle_pem: Some(bundle.ca_bundle_pem()),
        ..Default::default()
    };
    let objects = webhook_objects(&config).unwrap();
    let mwc = objects
        .into_iter()
        .find(|o| o["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(mwc).unwrap();
    let webhook = &mwc.webhooks.unwrap()[0];
    assert_eq!(
        webhook
            .client_config
            .service
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/mutate")
    );
    webhook.client_config.ca_bundle.clone().unwrap().0
}

fn client_config(ca_bundle_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_bundle_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

struct Response {
    status: u16,
    body: Value,
}

async fn request(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<Response, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls));
    let name = ServerName::try_from(SERVICE_DNS).unwrap();
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", SERVICE_DNS)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Ok(Response { status, body })
}

/// POSTs `body` over HTTP/1.1 on a raw TLS stream, writing and reading at
/// once; returns the status and the whole answer as text. A write that
/// fails because the server answered and closed first is not an error.
async fn oversized_request(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls));
    let stream = connector
        .connect(ServerName::try_from(SERVICE_DNS).unwrap(), tcp)
        .await
        .unwrap();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut message = format!(
        "POST /mutate HTTP/1.1\r\nhost: {SERVICE_DNS}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    message.extend_from_slice(body);
    let write = tokio::spawn(async move {
        let _ = writer.write_all(&message).await;
        let _ = writer.flush().await;
        writer
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        reader.read_to_end(&mut answer),
    )
    .await;
    drop(write.await);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "nb", "namespace": "team-a", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}
    })
}

fn good_annotations() -> Value {
    json!({
        "tether.dev/inject": "true",
        "tether.dev/remote": "s3://bucket/alice",
        "tether.dev/mount-path": "/home/jovyan"
    })
}

fn with(key: &str, value: &str) -> Value {
    let mut a = good_annotations();
    a[key] = Value::String(value.into());
    a
}

fn review(object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "e911857d-c318-11e8-bbad-025000000001",
            "kind": {"group": "", "version": "v1", "kind": object["kind"]},
            "resource": {"group": "", "version": "v1",
                "resource": if object["kind"] == "Pod" { "pods" } else { "configmaps" }},
            "namespace": "team-a",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": object
        }
    })
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_over_tls_end_to_end() {
    let bundle = make_bundle();
    let resolver = Arc::new(CertResolver::from_bundle(&bundle).unwrap());
    let tls = Arc::new(tls_server_config(resolver.clone()).unwrap());
    let state = WebhookState::new(WebhookConfig::default());
    let metrics = state.metrics().clone();
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, tls, state, async {
        let _ = stopped.await;
    }));

    // The client trusts only what the published MutatingWebhookConfiguration says.
    let ca_bundle = published_ca_bundle(&bundle);
    assert_eq!(ca_bundle, bundle.ca_bundle_pem().into_bytes());
    let client = client_config(&ca_bundle);

    // 1. An annotated pod gets a patch that yields exactly one sidecar.
    let pod_value = pod(good_annotations());
    let r = request(
        addr,
        &client,
        "POST",
        "/mutate",
        bytes(&review(pod_value.clone())),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let response = &r.body["response"];
    assert_eq!(response["allowed"], true);
    assert_eq!(response["uid"], "e911857d-c318-11e8-bbad-025000000001");
    assert_eq!(response["patchType"], "JSONPatch");
    let patch_bytes = base64::engine::general_purpose::STANDARD
        .decode(
            response["patch"]
                .as_str()
                .expect("the patch is a base64 string"),
        )
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch_bytes).unwrap();
    let mut patched = pod_value;
    json_patch::patch(&mut patched, &patch).unwrap();
    assert_eq!(common::tether_containers(&patched["spec"], "sync").len(), 1);
    let yaml = serde_norway::to_string(&patched).unwrap();
    common::assert_valid_for_kubernetes(&[("patched-over-tls", yaml)]);

    // 2. Unchanged: a non-Pod object and a pod without the annotation.
    let config_map =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}});
    for object in [config_map, pod(json!({"app": "x"}))] {
        let r = request(addr, &client, "POST", "/mutate", bytes(&review(object)))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body["response"]["allowed"], true);
        assert!(r.body["response"].get("patch").is_none());
    }

    // 3. Malformed requests: HTTP 4xx with a message.
    let mut wrong_version = review(pod(good_annotations()));
    wrong_version["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut missing_uid = review(pod(good_annotations()));
    missing_uid["request"]
        .as_object_mut()
        .unwrap()
        .remove("uid");
    let huge = {
        let mut v = review(pod(good_annotations()));
        v["request"]["object"]["metadata"]["annotations"]["padding"] =
            json!("x".repeat(5 * 1024 * 1024));
        bytes(&v)
    };
    let malformed: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "wrong apiVersion",
            bytes(&wrong_version),
            400,
            "admission.k8s.io/v1beta1",
        ),
        ("missing uid", bytes(&missing_uid), 400, "uid"),
        (
            "invalid JSON",
            b"{\"apiVersion\": \"admission.k8s.io/v1\", ".to_vec(),
            400,
            "not an AdmissionReview",
        ),
    ];
    // The server answers 413 as soon as the declared length is too big and
    // closes, while the client may still be writing: read the answer
    // while writing, and ignore the failed write (both are allowed).
    let (status, text) = oversized_request(addr, &client, &huge).await;
    assert_eq!(status, 413, "5 MiB body: {text}");
    assert!(text.contains("exceeds"), "5 MiB body: {text}");
    for (case, body, status, needle) in malformed {
        let r = request(addr, &client, "POST", "/mutate", body)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(r.status, status, "{case}: {}", r.body);
        let message = r.body["error"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{case}: {message}");
    }

    // 4. Hostile annotations: denied, naming the annotation, echoing no secret.
    let hostile = [
        (
            "newline",
            with("tether.dev/mount-path", "/home/jovyan\n/etc"),
            "tether.dev/mount-path",
        ),
        (
            "shell metacharacters",
            with("tether.dev/remote", "s3://bucket/p;$(reboot)"),
            "tether.dev/remote",
        ),
        (
            "invalid image",
            with("tether.dev/image", "Ghcr.io/x/y:tag:again"),
            "tether.dev/image",
        ),
        (
            "embedded credentials",
            with(
                "tether.dev/remote",
                "https://bob:hunter2@git.example.com/r.git",
            ),
            "tether.dev/remote",
        ),
    ];
    for (case, annotations, key) in hostile {
        let r = request(
            addr,
            &client,
            "POST",
            "/mutate",
            bytes(&review(pod(annotations))),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{case}");
        assert_eq!(r.body["response"]["allowed"], false, "{case}");
        let message = r.body["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            message.contains(&format!("annotation {key}")),
            "{case}: {message}"
        );
        assert!(
            !message.contains("hunter2") && !message.contains('\n'),
            "{case}: {message}"
        );
    }

    // 5. Health and metrics.
    let r = request(addr, &client, "GET", "/healthz", Vec::new())
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(metrics.count(AdmissionOutcome::Injected), 1);
    assert_eq!(metrics.count(AdmissionOutcome::Skipped), 2);
    assert_eq!(metrics.count(AdmissionOutcome::Error), 4);
    assert_eq!(metrics.count(AdmissionOutcome::Denied), 4);
    let r = request(addr, &client, "GET", "/metrics", Vec::new())
        .await
        .unwrap();
    let text = r.body.as_str().unwrap_or_default().to_owned();
    assert!(text.contains("tether_webhook_denials_total 4"), "{text}");
    assert!(
        text.contains("tether_webhook_admission_duration_seconds_count 11"),
        "{text}"
    );

    // 6. A client trusting another CA is refused at the handshake.
    let other = make_bundle();
    let stranger = client_config(other.ca_bundle_pem().as_bytes());
    let err = request(addr, &stranger, "GET", "/healthz", Vec::new())
        .await
        .err()
        .unwrap_or_default();
    assert!(err.starts_with("TLS:"), "{err}");

    // 7. In-memory rotation: after the resolver switches to the new bundle,
    // new connections present it, without restarting the server.
    assert!(resolver.update(&other).unwrap());
    let r = request(addr, &stranger, "GET", "/healthz", Vec::new())
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    // A fresh client config: the old one could resume its TLS 1.3 session,
    // which skips certificate verification.
    let old_ca_only = client_config(&ca_bundle);
    let err = request(addr, &old_ca_only, "GET", "/healthz", Vec::new())
        .await
        .err()
        .unwrap_or_default();
    assert!(
        err.starts_with("TLS:"),
        "old CA must no longer verify: {err}"
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
