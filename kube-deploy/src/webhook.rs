//! The mutating admission webhook: AdmissionReview v1 in, JSONPatch out.
//!
//! Three layers, innermost first:
//! - [`review`] is a pure function from a request body to an HTTP status and
//!   a response body; it holds every decision (what to skip, what to deny,
//!   which patch to return) and never panics on any input;
//! - [`router`] wraps it in an axum [`Router`] with `/mutate`, `/healthz`
//!   and `/metrics`, a body-size limit and the metrics;
//! - [`serve`] accepts TCP connections, terminates TLS with a caller-given
//!   [`rustls::ServerConfig`] and hands each connection to hyper (HTTP/1.1
//!   and HTTP/2, as the API server may use either).
//!
//! TLS certificates are not this module's business: pass a `ServerConfig`
//! built around a certificate resolver (see [`tls_server_config`]), and a
//! resolver that swaps certificates in memory (webhook-certs offers one)
//! rotates them without a restart, because rustls asks the resolver on every
//! handshake.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::core::v1::Pod;
use rustls::server::ResolvesServerCert;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::admission::{self, Verdict};
use crate::inject::{self, InjectError, InjectionOutcome, InjectorConfig};
use crate::metrics::{AdmissionOutcome, WebhookMetrics};

/// Path the MutatingWebhookConfiguration points at.
pub const MUTATE_PATH: &str = "/mutate";
/// The only AdmissionReview version this webhook speaks.
pub const ADMISSION_API_VERSION: &str = "admission.k8s.io/v1";
/// Default request body limit. The API server's own limit on an object is
/// about 1.5 MiB (etcd's), and a review carries at most the object and the
/// old object, so 3 MiB leaves room without inviting memory abuse.
pub const DEFAULT_MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// Time a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send an HTTP/1 request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 1024;

/// Settings of the webhook's request handling.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Injector defaults.
    pub injector: InjectorConfig,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// Namespaces whose pods always pass unchanged, even if the
    /// MutatingWebhookConfiguration's selector lets them through (by
    /// default `kube-system`; add the webhook's own namespace).
    pub skip_namespaces: BTreeSet<String>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            injector: InjectorConfig::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            skip_namespaces: ["kube-system".to_owned()].into_iter().collect(),
        }
    }
}

/// Errors of the server itself (not of a request).
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Binding or reading the listening socket failed.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// Address being bound.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS configuration could not be built.
    #[error("building the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The answer to one admission request: an HTTP status, a body, and what
/// happened (for metrics and logs).
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewAnswer {
    /// 200 for every AdmissionReview response (allowed or denied), 400 for a
    /// body that is not a usable AdmissionReview v1.
    pub status: u16,
    /// JSON body: an AdmissionReview for 200, `{"error": "…"}` otherwise.
    pub body: Vec<u8>,
    /// What happened.
    pub outcome: AdmissionOutcome,
}

fn bad_request(message: String) -> ReviewAnswer {
    let body = serde_json::to_vec(&serde_json::json!({ "error": message }))
        .unwrap_or_else(|_| b"{\"error\":\"bad request\"}".to_vec());
    ReviewAnswer {
        status: 400,
        body,
        outcome: AdmissionOutcome::Error,
    }
}

fn answer(uid: &str, verdict: Verdict<'_>, outcome: AdmissionOutcome) -> ReviewAnswer {
    match admission::response_body(uid, verdict) {
        Ok(body) => ReviewAnswer {
            status: 200,
            body,
            outcome,
        },
        Err(e) => {
            tracing::error!(error = %e, "serialising an AdmissionReview response");
            ReviewAnswer {
                status: 500,
                body: b"{\"error\":\"could not serialise the response\"}".to_vec(),
                outcome: AdmissionOutcome::Error,
            }
        }
    }
}

/// Reads an AdmissionReview request body and decides the answer. Pure
/// apart from a log line per decision; never panics.
///
/// - Not JSON, not an `admission.k8s.io/v1` `AdmissionReview`, no
///   `request`, or a request without `uid`, `kind`, `resource` or
///   `operation` (or an empty `uid`) → HTTP 400 with `{"error": "…"}`.
/// - Not a `pods` CREATE (other kinds, sub-resources, UPDATE, DELETE…), a
///   namespace in `skip_namespaces`, a pod without the annotation, or an
///   already injected pod → allowed unchanged.
/// - Invalid annotations or a pod that cannot carry tether → denied, with
///   a message that names the annotation.
/// - Otherwise → allowed with a JSONPatch adding tether; the patch is sent
///   base64-encoded, the documented JSON form of the API's `[]byte`.
pub fn review(body: &[u8], config: &WebhookConfig) -> ReviewAnswer {
    let review: admission::ReviewIn<'_> = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(e) => return bad_request(format!("body is not an AdmissionReview: {e}")),
    };
    if review.api_version != ADMISSION_API_VERSION || review.kind != "AdmissionReview" {
        return bad_request(format!(
            "unsupported {}/{}: this webhook speaks {ADMISSION_API_VERSION} AdmissionReview",
            review.api_version, review.kind
        ));
    }
    let Some(request) = review.request else {
        return bad_request("AdmissionReview has no request".into());
    };
    if request.uid.is_empty() {
        return bad_request("AdmissionReview request has an empty uid".into());
    }
    let uid = request.uid.as_str();
    let allow = || answer(uid, Verdict::Allow, AdmissionOutcome::Skipped);
    let deny = |message: String| {
        answer(
            uid,
            Verdict::Deny(format!("tether: {message}")),
            AdmissionOutcome::Denied,
        )
    };

    let is_pod = request.kind.group.is_empty()
        && request.kind.kind == "Pod"
        && request.resource.resource == "pods"
        && request.sub_resource.as_deref().is_none_or(str::is_empty);
    if !is_pod || request.operation != "CREATE" {
        return allow();
    }
    let namespace = request.namespace.as_deref().unwrap_or_default();
    if config.skip_namespaces.contains(namespace) {
        return allow();
    }
    // serde maps `"object": null` to `None` as well as a missing field.
    let Some(object) = request.object else {
        return deny("the CREATE request carries no pod object".into());
    };
    let pod: Pod = match serde_json::from_str(object.get()) {
        Ok(pod) => pod,
        Err(e) => return deny(format!("the object is not a valid Pod: {e}")),
    };
    let pod_name = pod
        .metadata
        .name
        .as_deref()
        .or(pod.metadata.generate_name.as_deref())
        .unwrap_or("");
    match inject::inject(&pod, &config.injector) {
        Ok(InjectionOutcome::NotRequested) | Ok(InjectionOutcome::AlreadyInjected) => allow(),
        Ok(InjectionOutcome::Patched { patch, warnings }) => {
            let patch = match serde_json::to_vec(&patch) {
                Ok(patch) => patch,
                Err(e) => {
                    tracing::error!(error = %e, "serialising a JSON patch");
                    return answer(
                        uid,
                        Verdict::Deny("tether: internal error serialising the patch".into()),
                        AdmissionOutcome::Error,
                    );
                }
            };
            let warnings: Vec<String> = warnings.iter().map(|w| format!("tether: {w}")).collect();
            tracing::info!(namespace, pod = pod_name, uid, "injected tether");
            answer(
                uid,
                Verdict::Patch {
                    patch: &patch,
                    warnings: &warnings,
                },
                AdmissionOutcome::Injected,
            )
        }
        Err(e @ (InjectError::Annotation(_) | InjectError::PodSpec(_))) => {
            tracing::info!(namespace, pod = pod_name, reason = %e, "denied");
            deny(e.to_string())
        }
        Err(e @ InjectError::Serialize { .. }) => {
            tracing::error!(namespace, pod = pod_name, error = %e, "internal error");
            answer(
                uid,
                Verdict::Deny("tether: internal error building the patch".into()),
                AdmissionOutcome::Error,
            )
        }
    }
}

/// Shared state of the router.
#[derive(Debug, Clone)]
pub struct WebhookState {
    config: Arc<WebhookConfig>,
    metrics: WebhookMetrics,
}

impl WebhookState {
    /// Creates the state with fresh metrics.
    pub fn new(config: WebhookConfig) -> Self {
        Self {
            config: Arc::new(config),
            metrics: WebhookMetrics::new(),
        }
    }

    /// The metrics, to read counts in tests or serve them elsewhere.
    pub fn metrics(&self) -> &WebhookMetrics {
        &self.metrics
    }
}

fn json_response(status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn mutate(
    State(state): State<WebhookState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("request body exceeds {} bytes", state.config.max_body_bytes)
            } else {
                format!("could not read the request body: {rejection}")
            };
            state
                .metrics
                .record(AdmissionOutcome::Error, started.elapsed());
            let body =
                serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
            return json_response(status.as_u16(), body);
        }
    };
    let answer = review(&body, &state.config);
    state.metrics.record(answer.outcome, started.elapsed());
    json_response(answer.status, answer.body)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(state): State<WebhookState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The webhook's HTTP routes: `POST /mutate`, `GET /healthz`,
/// `GET /metrics`; bodies above `max_body_bytes` get HTTP 413.
pub fn router(state: WebhookState) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route(MUTATE_PATH, post(mutate))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// A rustls server configuration (ring provider, TLS 1.2 and 1.3, ALPN h2
/// and http/1.1) that asks `resolver` for the certificate on every
/// handshake, so a resolver updated in memory rotates without a restart.
pub fn tls_server_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<rustls::ServerConfig, WebhookError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Binds `addr` (e.g. `0.0.0.0:8443`) and returns the listener, for
/// [`serve`].
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, WebhookError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| WebhookError::Listen {
            addr: addr.to_string(),
            source,
        })
}

/// Serves `app` over TLS on `listener` until `shutdown` completes, then
/// lets open connections finish their requests (up to 10 s).
///
/// Each connection gets [`HANDSHAKE_TIMEOUT`] to finish TLS and
/// [`HEADER_READ_TIMEOUT`] per HTTP/1 request head; at most
/// [`MAX_CONNECTIONS`] are served at once. Accept errors (e.g. too many open
/// files) are logged and retried after a short pause, never fatal.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WebhookError> {
    let acceptor = TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admission webhook listening");
    }
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            builder.http2().timer(TokioTimer::new());
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("admission webhook stopping; draining connections");
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10 s; closing");
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::{Value, json};

    fn review_json(object: Value) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "team-a",
                "operation": "CREATE",
                "userInfo": {"username": "alice"},
                "object": object,
                "dryRun": false
            }
        })
    }

    fn annotated_pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "nb", "namespace": "team-a", "annotations": {
                "tether.dev/inject": "true",
                "tether.dev/remote": "s3://bucket/alice",
                "tether.dev/mount-path": "/work"
            }},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]}
        })
    }

    fn run(value: &Value) -> (ReviewAnswer, Value) {
        let body = serde_json::to_vec(value).unwrap_or_default();
        let answer = review(&body, &WebhookConfig::default());
        let parsed = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        (answer, parsed)
    }

    #[test]
    fn annotated_pod_gets_a_patch_with_the_uid() {
        let (answer, body) = run(&review_json(annotated_pod()));
        assert_eq!(answer.status, 200);
        assert_eq!(answer.outcome, AdmissionOutcome::Injected);
        assert_eq!(
            body["response"]["uid"],
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
        assert_eq!(body["response"]["allowed"], true);
        assert_eq!(body["response"]["patchType"], "JSONPatch");
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
        // A []byte field in JSON: base64, standard alphabet, padded.
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body["response"]["patch"].as_str().unwrap_or_default())
            .unwrap_or_default();
        let patch: json_patch::Patch =
            serde_json::from_slice(&bytes).unwrap_or(json_patch::Patch(vec![]));
        let mut pod = annotated_pod();
        assert!(json_patch::patch(&mut pod, &patch).is_ok());
        assert_eq!(
            pod["metadata"]["annotations"]["tether.dev/status"],
            "injected"
        );
    }

    #[test]
    fn skipped_requests_are_allowed_without_a_patch() {
        let mut update = review_json(annotated_pod());
        update["request"]["operation"] = json!("UPDATE");
        let mut kube_system = review_json(annotated_pod());
        kube_system["request"]["namespace"] = json!("kube-system");
        let mut subresource = review_json(annotated_pod());
        subresource["request"]["subResource"] = json!("ephemeralcontainers");
        let mut plain = review_json(annotated_pod());
        plain["request"]["object"]["metadata"]["annotations"] = json!({});
        for case in [update, kube_system, subresource, plain] {
            let (answer, body) = run(&case);
            assert_eq!(answer.outcome, AdmissionOutcome::Skipped, "{case}");
            assert_eq!(body["response"]["allowed"], true);
            assert!(body["response"].get("patch").is_none());
        }
    }

    #[test]
    fn a_pod_create_without_an_object_is_denied() {
        let mut null_object = review_json(annotated_pod());
        null_object["request"]["object"] = Value::Null;
        let mut no_object = review_json(annotated_pod());
        no_object["request"]
            .as_object_mut()
            .map(|r| r.remove("object"));
        for case in [null_object, no_object] {
            let (answer, body) = run(&case);
            assert_eq!(answer.outcome, AdmissionOutcome::Denied, "{case}");
            assert_eq!(body["response"]["allowed"], false);
            assert!(
                body["response"]["status"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("no pod object"))
            );
        }
        // A DELETE carries no object and passes.
        let mut delete = review_json(Value::Null);
        delete["request"]["operation"] = json!("DELETE");
        assert_eq!(run(&delete).0.outcome, AdmissionOutcome::Skipped);
    }

    #[test]
    fn malformed_bodies_get_400_with_a_message() {
        let cases: Vec<Vec<u8>> = vec![
            b"{not json".to_vec(),
            b"".to_vec(),
            b"[]".to_vec(),
            serde_json::to_vec(
                &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
            )
            .unwrap_or_default(),
        ];
        for body in cases {
            let answer = review(&body, &WebhookConfig::default());
            assert_eq!(answer.status, 400, "{}", String::from_utf8_lossy(&body));
            let parsed: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
            assert!(parsed["error"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
}
