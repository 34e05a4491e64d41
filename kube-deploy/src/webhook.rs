//! The mutating admission webhook: AdmissionReview v1 in, JSONPatch out.
//!
//! Three layers, innermost first:
//! - [`review`] is a pure function from a request body to an HTTP status and
//!   a response body; it holds every decision (what to skip, what to deny,
//!   which patch to return) and never panics on any input;
//! - [`router`] wraps it in an axum [`Router`] with `/mutate`, `/healthz`
//!   and `/metrics`; `/mutate` reads its body under a size limit, a
//!   deadline and the server-wide byte budget, and feeds the metrics;
//! - [`serve`] accepts TCP connections, terminates TLS with a caller-given
//!   [`rustls::ServerConfig`] and hands each connection to hyper (HTTP/1.1
//!   and HTTP/2, as the API server may use either).
//!
//! TLS certificates are not this module's business: pass a `ServerConfig`
//! built around a certificate resolver (see [`tls_server_config`]), and a
//! resolver that swaps certificates in memory (webhook-certs offers one)
//! rotates them without a restart, because rustls asks the resolver on every
//! handshake.
//!
//! # Hostile clients
//!
//! Anyone who can reach the port can connect; with `failurePolicy: Fail` a
//! webhook that stops answering stops pod creation. [`ServerLimits`] keeps
//! every client's hold on the server bounded in time and memory:
//! - time: a TLS handshake deadline; a deadline for the first request head
//!   (covering hyper-util's protocol detection, which has no timer of its
//!   own, and an HTTP/2 connection that sends only its preface); hyper's
//!   HTTP/1 header timeout for later heads; a whole-request deadline from
//!   head to last body byte; an idle timeout on connections with no request
//!   in flight; HTTP/2 keep-alive pings;
//! - connections: at [`ServerLimits::max_connections`] a new connection is
//!   still accepted, and the connection idle the longest (since it opened or
//!   last completed a request) is closed to make room (also when accepting
//!   fails for lack of file descriptors): idle, half-open and trickling
//!   clients are the ones that go, not the next request;
//! - memory: few HTTP/2 streams per connection and small flow-control
//!   windows, so a client cannot make hyper buffer much unread data; and a
//!   server-wide budget on request-body bytes held
//!   ([`ServerLimits::body_budget_bytes`]): when it is exhausted the newest
//!   request cancels the oldest unfinished bodies (answered 503), or gets
//!   503 itself after [`ServerLimits::budget_wait`].

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::core::v1::Pod;
use rustls::server::ResolvesServerCert;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::admission::{self, Verdict};
use crate::annotations::{AnnotationVerdict, TetherRequest};
use crate::budget::{ByteBudget, Refused};
use crate::connections::{Admission, ConnectionActivity, Connections, Slot, Tracked};
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
/// hyper's HTTP/1 read buffer cap, which also bounds a request head.
const HTTP1_MAX_BUF_BYTES: usize = 64 * 1024;
/// How long a connection being closed (idle, or at shutdown) may take to
/// finish what it is sending before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long the server waits for open connections at shutdown.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// Time and size limits of the server, each chosen so that a client that
/// connects and then stalls, trickles or floods holds the server for a
/// bounded time and memory. The defaults suit the generated Deployment
/// (128 Mi memory limit, the API server's webhook timeout of at most 30 s).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerLimits {
    /// Time to finish the TLS handshake. Default 10 s: a handshake on a
    /// cluster network takes milliseconds; the slack covers a loaded node.
    pub handshake_timeout: Duration,
    /// Time from the end of the handshake to the first complete request
    /// head (this covers HTTP version detection and an HTTP/2 connection
    /// that sends only its preface), and for HTTP/1 from the end of a
    /// response to the next head. Default 10 s.
    pub header_timeout: Duration,
    /// Whole-request deadline: from the request head to its last body byte;
    /// a body not complete by then is answered 408. Default 10 s, the API
    /// server's default webhook timeout, after which it has given up anyway.
    pub body_timeout: Duration,
    /// A connection with no request in flight for this long is closed
    /// (HTTP/2 with a GOAWAY). Default 30 s: the API server keeps its
    /// connection busy under load and reconnects cheaply when idle.
    pub idle_timeout: Duration,
    /// Interval of HTTP/2 keep-alive pings. Default 30 s.
    pub h2_keep_alive_interval: Duration,
    /// A ping not answered within this closes the connection. Default 10 s.
    pub h2_keep_alive_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection. Default 32: the API server
    /// multiplexes concurrent admissions on one connection, and 32 answers
    /// in flight take about 3 ms of CPU; more only lets one client hold more.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 initial stream window, bytes: what a client may send on a
    /// stream before the server reads it. Default 64 KiB (the protocol's
    /// default): a typical review fits, larger ones flow as they are read.
    pub h2_stream_window: u32,
    /// HTTP/2 connection window, bytes: unread data a connection may have
    /// buffered across its streams. Default 128 KiB.
    pub h2_connection_window: u32,
    /// Open connections (including ones still in the TLS handshake). At the
    /// cap, the connection idle the longest is closed for the newcomer.
    /// Default 1024: a few API server replicas need a few; each idle
    /// connection costs tens of KiB.
    pub max_connections: usize,
    /// Request-body bytes held at once across every connection; raised to
    /// at least the body limit. Default 32 MiB: ten maximal (3 MiB)
    /// reviews at once, a quarter of the Deployment's 128 Mi limit.
    pub body_budget_bytes: usize,
    /// How long a request waits for the budget (after cancelling older
    /// unfinished bodies) before it is answered 503. Default 1 s.
    pub budget_wait: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            h2_keep_alive_interval: Duration::from_secs(30),
            h2_keep_alive_timeout: Duration::from_secs(10),
            h2_max_concurrent_streams: 32,
            h2_stream_window: 64 * 1024,
            h2_connection_window: 128 * 1024,
            max_connections: 1024,
            body_budget_bytes: 32 * 1024 * 1024,
            budget_wait: Duration::from_secs(1),
        }
    }
}

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
    /// Time and size limits of the server.
    pub limits: ServerLimits,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            injector: InjectorConfig::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            skip_namespaces: ["kube-system".to_owned()].into_iter().collect(),
            limits: ServerLimits::default(),
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

/// Most JSON objects a pod may contain. Each becomes a typed struct of up
/// to ~2 KiB (a `Container` with its probes inline), so a 3 MiB body of
/// `{"name":""}` entries would otherwise expand to over 500 MB. A real pod
/// has tens to hundreds of objects.
pub const MAX_POD_OBJECTS: usize = 10_000;
/// Most JSON members and array elements a pod may contain (each becomes at
/// least a 24-byte `String` or map entry).
pub const MAX_POD_ELEMENTS: usize = 100_000;

/// A pod's annotations, all that is read of a pod too complex to parse.
#[derive(Debug, Default, serde::Deserialize)]
struct AnnotationsOnly {
    #[serde(default)]
    metadata: AnnotationsOnlyMeta,
}

#[derive(Debug, Default, serde::Deserialize)]
struct AnnotationsOnlyMeta {
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// Counts objects and members/elements of `json` (outside strings) and
/// refuses before typed parsing when a count exceeds its cap, so memory is
/// bounded by what is parsed, not only by the body's size.
fn check_complexity(json: &str) -> Result<(), String> {
    let (mut objects, mut elements) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' => objects += 1,
            b',' => elements += 1,
            _ => {}
        }
        if objects > MAX_POD_OBJECTS || elements > MAX_POD_ELEMENTS {
            return Err(format!(
                "the pod object is too complex (more than {MAX_POD_OBJECTS} objects or {MAX_POD_ELEMENTS} elements)"
            ));
        }
    }
    Ok(())
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
    if let Err(message) = check_complexity(object.get()) {
        // Only the annotations are read (everything else is skipped
        // without allocating): a pod that does not ask for tether passes.
        return match serde_json::from_str::<AnnotationsOnly>(object.get()) {
            Ok(only) => match TetherRequest::from_annotations(&only.metadata.annotations) {
                Ok(AnnotationVerdict::NotRequested | AnnotationVerdict::AlreadyInjected) => allow(),
                _ => deny(message),
            },
            Err(_) => deny(message),
        };
    }
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
            // Client-supplied strings go in as string values (quoted and
            // escaped by the text log format, escaped by JSON), never
            // through `%`/Display, so control characters cannot forge lines.
            tracing::info!(namespace, pod = pod_name, reason = e.to_string(), "denied");
            deny(e.to_string())
        }
        Err(e @ InjectError::Serialize { .. }) => {
            tracing::error!(
                namespace,
                pod = pod_name,
                error = e.to_string(),
                "internal error"
            );
            answer(
                uid,
                Verdict::Deny("tether: internal error building the patch".into()),
                AdmissionOutcome::Error,
            )
        }
    }
}

/// Shared state of the server: configuration, metrics, the request-body
/// byte budget and the connection table.
#[derive(Debug, Clone)]
pub struct WebhookState {
    config: Arc<WebhookConfig>,
    metrics: WebhookMetrics,
    budget: ByteBudget,
    connections: Connections,
}

impl WebhookState {
    /// Creates the state with fresh metrics.
    pub fn new(config: WebhookConfig) -> Self {
        let metrics = WebhookMetrics::new();
        let budget = ByteBudget::new(
            config.limits.body_budget_bytes.max(config.max_body_bytes),
            metrics.in_flight_body_bytes_gauge(),
        );
        let connections = Connections::new(
            config.limits.max_connections,
            metrics.open_connections_gauge(),
            metrics.evicted_connections_counter(),
        );
        Self {
            config: Arc::new(config),
            metrics,
            budget,
            connections,
        }
    }

    /// The metrics, to read counts in tests or serve them elsewhere.
    pub fn metrics(&self) -> &WebhookMetrics {
        &self.metrics
    }

    /// The configuration.
    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// Request-body bytes held right now, across every connection (never
    /// more than [`Self::body_budget_bytes`]).
    pub fn in_flight_body_bytes(&self) -> usize {
        self.budget.in_flight()
    }

    /// The most request-body bytes ever held at once.
    pub fn peak_in_flight_body_bytes(&self) -> usize {
        self.budget.peak()
    }

    /// The effective body budget: [`ServerLimits::body_budget_bytes`],
    /// raised to at least the body limit.
    pub fn body_budget_bytes(&self) -> usize {
        self.budget.capacity()
    }

    /// Connections open right now (each holding a slot of
    /// [`ServerLimits::max_connections`]).
    pub fn open_connections(&self) -> usize {
        self.connections.len()
    }
}

fn json_response(status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error_response(status: StatusCode, message: &str) -> Response {
    let body = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
    let mut response = json_response(status.as_u16(), body);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

/// Why a request body could not be read.
#[derive(Debug)]
enum BodyError {
    TooLarge,
    BadLength,
    Timeout,
    Busy,
    Evicted,
    Read(axum::Error),
}

impl BodyError {
    fn response(&self, state: &WebhookState) -> Response {
        let limits = &state.config.limits;
        match self {
            Self::TooLarge => error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body exceeds {} bytes", state.config.max_body_bytes),
            ),
            Self::BadLength => {
                error_response(StatusCode::BAD_REQUEST, "invalid content-length header")
            }
            Self::Timeout => error_response(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "request body not complete within {} s",
                    limits.body_timeout.as_secs_f64()
                ),
            ),
            Self::Busy => error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many request bytes in flight; retry",
            ),
            Self::Evicted => error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "request body abandoned for newer requests; retry",
            ),
            Self::Read(e) => error_response(
                StatusCode::BAD_REQUEST,
                &format!("could not read the request body: {e}"),
            ),
        }
    }
}

/// A request body read into memory, with its share of the byte budget
/// (released when this is dropped).
struct ReadBody {
    bytes: Vec<u8>,
    _reservation: crate::budget::Reservation,
}

/// Reads and drops up to `limit` bytes of `body`, until `deadline`.
async fn discard(mut body: axum::body::Body, limit: usize, deadline: tokio::time::Instant) {
    let mut seen = 0usize;
    while seen <= limit {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    seen = seen.saturating_add(data.len());
                }
            }
            _ => return,
        }
    }
}

/// Reads `body` whole: at most `max_body_bytes`, by `deadline`, taking every
/// byte of buffer capacity from the budget before growing the buffer.
async fn read_body(
    state: &WebhookState,
    headers: &HeaderMap,
    mut body: axum::body::Body,
    deadline: tokio::time::Instant,
) -> Result<ReadBody, BodyError> {
    let max = state.config.max_body_bytes;
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(value) => {
            let length = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(BodyError::BadLength)?;
            match usize::try_from(length) {
                Ok(length) if length <= max => Some(length),
                _ => {
                    // Read (and drop) up to the limit before answering 413,
                    // so an HTTP/1 client still writing its body sees the
                    // answer rather than a reset connection.
                    discard(body, max, deadline).await;
                    return Err(BodyError::TooLarge);
                }
            }
        }
    };
    let mut reservation = state.budget.reserve();
    let mut bytes: Vec<u8> = Vec::new();
    let mut held = 0usize;
    let budget_wait = state.config.limits.budget_wait;
    loop {
        let frame = tokio::select! {
            biased;
            () = reservation.cancelled() => return Err(BodyError::Evicted),
            frame = tokio::time::timeout_at(deadline, body.frame()) => frame,
        };
        let data = match frame {
            Err(_elapsed) => return Err(BodyError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Read(e)),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => data,
                Err(_trailers) => continue,
            },
        };
        let needed = bytes
            .len()
            .checked_add(data.len())
            .filter(|n| *n <= max)
            .ok_or(BodyError::TooLarge)?;
        if needed > held {
            // Double (at least 16 KiB), but no further than the declared
            // length while the body keeps to it, and never past the limit.
            let mut target = needed.max(held.saturating_mul(2)).max(16 * 1024);
            if let Some(declared) = declared
                && needed <= declared
            {
                target = target.min(declared);
            }
            let target = target.min(max);
            let wait = (tokio::time::Instant::now() + budget_wait).min(deadline);
            reservation
                .acquire(target - held, wait)
                .await
                .map_err(|refused| match refused {
                    Refused::Exhausted => BodyError::Busy,
                    Refused::Evicted => BodyError::Evicted,
                })?;
            bytes.reserve_exact(target - bytes.len());
            held = target;
        }
        bytes.extend_from_slice(&data);
    }
    Ok(ReadBody {
        bytes,
        _reservation: reservation,
    })
}

async fn mutate(State(state): State<WebhookState>, request: Request) -> Response {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + state.config.limits.body_timeout;
    let (parts, body) = request.into_parts();
    let body = match read_body(&state, &parts.headers, body, deadline).await {
        Ok(body) => body,
        Err(e) => {
            state
                .metrics
                .record(AdmissionOutcome::Error, started.elapsed());
            if matches!(e, BodyError::Busy | BodyError::Evicted) {
                state.metrics.record_shed();
            }
            return e.response(&state);
        }
    };
    // The latency histogram measures answering, not the client's upload.
    let started = Instant::now();
    let _answering = parts
        .extensions
        .get::<ConnectionActivity>()
        .map(|activity| activity.0.answering());
    let answer = review(&body.bytes, &state.config);
    drop(body);
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
/// `GET /metrics`. A `/mutate` body above `max_body_bytes` gets HTTP 413,
/// one not complete within [`ServerLimits::body_timeout`] 408, one that
/// cannot get its share of the byte budget 503 (with `Retry-After`).
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(mutate))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
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

/// Whether an accept error means the process is out of file descriptors
/// (EMFILE, ENFILE), which closing a connection cures.
fn out_of_descriptors(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(23 | 24))
}

/// Serves [`router`]`(state)` over TLS on `listener` until `shutdown`
/// completes, then lets open connections finish their requests (up to
/// 10 s).
///
/// Every connection is bounded by `state`'s [`ServerLimits`] (see the
/// module docs). Accept errors are logged and retried after a short pause,
/// never fatal; when they say the process is out of file descriptors, the
/// connection idle the longest is closed first.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: WebhookState,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WebhookError> {
    let acceptor = TlsAcceptor::from(tls);
    let app = router(state.clone());
    let limits = Arc::new(state.config.limits.clone());
    let connections = state.connections.clone();
    let (stopping_tx, stopping) = watch::channel(false);
    let tasks = task_count::TaskCount::default();
    let mut shutdown = std::pin::pin!(shutdown);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admission webhook listening");
    }
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    if out_of_descriptors(&e) && connections.evict_one() {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
        };
        let slot = loop {
            let freed = connections.freed();
            let mut freed = std::pin::pin!(freed);
            freed.as_mut().enable();
            match connections.admit() {
                Admission::Admitted(slot) => break Some(slot),
                // Every connection is answering a request: those finish
                // within milliseconds.
                Admission::Full => tokio::select! {
                    () = &mut shutdown => break None,
                    () = freed => {}
                },
            }
        };
        let Some(slot) = slot else { break };
        let _ = tcp.set_nodelay(true);
        let connection = ServedConnection {
            acceptor: acceptor.clone(),
            app: app.clone(),
            limits: Arc::clone(&limits),
            stopping: stopping.clone(),
            peer,
        };
        let task = tasks.start();
        tokio::spawn(async move {
            connection.run(tcp, slot).await;
            drop(task);
        });
    }
    tracing::info!("admission webhook stopping; draining connections");
    let _ = stopping_tx.send(true);
    if tokio::time::timeout(SHUTDOWN_DRAIN, tasks.all_done())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10 s; closing");
    }
    Ok(())
}

/// Counting the connection tasks, to wait for them at shutdown.
mod task_count {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Notify;

    #[derive(Debug, Default)]
    pub(super) struct TaskCount(Arc<(AtomicUsize, Notify)>);

    pub(super) struct Running(Arc<(AtomicUsize, Notify)>);

    impl TaskCount {
        pub(super) fn start(&self) -> Running {
            self.0.0.fetch_add(1, Ordering::AcqRel);
            Running(Arc::clone(&self.0))
        }

        pub(super) async fn all_done(&self) {
            loop {
                let notified = self.0.1.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                if self.0.0.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            if self.0.0.fetch_sub(1, Ordering::AcqRel) == 1 {
                self.0.1.notify_waiters();
            }
        }
    }
}

/// One accepted connection and what its task needs.
struct ServedConnection {
    acceptor: TlsAcceptor,
    app: Router,
    limits: Arc<ServerLimits>,
    stopping: watch::Receiver<bool>,
    peer: SocketAddr,
}

impl ServedConnection {
    async fn run(mut self, tcp: TcpStream, slot: Slot) {
        let peer = self.peer;
        let activity = Arc::clone(slot.activity());
        let handshake =
            tokio::time::timeout(self.limits.handshake_timeout, self.acceptor.accept(tcp));
        let tls = tokio::select! {
            () = activity.close_requested() => {
                tracing::debug!(%peer, "closing a connection in its TLS handshake for a newer one");
                return;
            }
            _ = self.stopping.wait_for(|s| *s) => return,
            tls = handshake => match tls {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            },
        };
        let limits = &self.limits;
        // The protocol the client chose with ALPN, so hyper-util's
        // detection (reading the first bytes) only runs without ALPN.
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(HTTP1_MAX_BUF_BYTES);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .initial_stream_window_size(limits.h2_stream_window)
            .initial_connection_window_size(limits.h2_connection_window)
            .adaptive_window(false)
            .keep_alive_interval(limits.h2_keep_alive_interval)
            .keep_alive_timeout(limits.h2_keep_alive_timeout);
        let builder = match alpn.as_deref() {
            Some(b"h2") => builder.http2_only(),
            Some(b"http/1.1") => builder.http1_only(),
            _ => builder,
        };
        let service = Tracked {
            inner: TowerToHyperService::new(self.app.clone()),
            activity: Arc::clone(&activity),
        };
        let connection = builder.serve_connection(TokioIo::new(tls), service);
        let mut connection = std::pin::pin!(connection);
        let mut closing: Option<tokio::time::Instant> = None;
        loop {
            let changed = activity.changed();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            // The idle deadline: the first request head must come within
            // the header timeout, later ones within the idle timeout.
            let idle_since = activity.idle_since();
            let idle_deadline = idle_since.map(|since| {
                since
                    + if activity.seen_request() {
                        limits.idle_timeout
                    } else {
                        limits.header_timeout
                    }
            });
            let wake = match (closing, idle_deadline) {
                (Some(hard), _) => Some(hard),
                (None, idle) => idle,
            };
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let stopping = async {
                if closing.is_some() {
                    std::future::pending::<()>().await;
                }
                let _ = self.stopping.wait_for(|s| *s).await;
            };
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = activity.close_requested() => {
                    tracing::debug!(%peer, "closing the connection idle the longest for a newer one");
                    return;
                }
                () = stopping => {
                    connection.as_mut().graceful_shutdown();
                    closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                }
                () = sleep => {
                    if closing.is_some() {
                        tracing::debug!(%peer, "connection did not close in time; dropping it");
                        return;
                    }
                    // Still idle since the same moment (no request came in
                    // while the timer ran).
                    if idle_since.is_some() && activity.idle_since() == idle_since {
                        if !activity.seen_request() {
                            // Nothing to finish, and hyper's HTTP/2
                            // graceful close waits for a preface that may
                            // never come: drop.
                            tracing::debug!(%peer, "no request head in time; closing");
                            return;
                        }
                        tracing::debug!(%peer, "closing an idle connection");
                        connection.as_mut().graceful_shutdown();
                        closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                    }
                }
                () = changed => {}
            }
        }
    }
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
    fn a_pod_too_complex_to_parse_cheaply_is_denied_before_parsing() {
        // ~2.6 MiB of minimal containers: ~2 KiB each once typed.
        let mut many_containers = annotated_pod();
        many_containers["spec"]["containers"] = Value::Array(vec![json!({"name": ""}); 220_000]);
        let mut many_args = annotated_pod();
        many_args["spec"]["containers"][0]["args"] = Value::Array(vec![json!(""); 200_000]);
        for pod in [many_containers, many_args] {
            let (answer, body) = run(&review_json(pod));
            assert_eq!(answer.outcome, AdmissionOutcome::Denied);
            let message = body["response"]["status"]["message"]
                .as_str()
                .unwrap_or_default();
            assert!(message.contains("too complex"), "{message}");
        }
        // Without the tether annotation such a pod passes unchanged.
        let mut plain = annotated_pod();
        plain["metadata"]["annotations"] = json!({"app": "x"});
        plain["spec"]["containers"] = Value::Array(vec![json!({"name": ""}); 220_000]);
        assert_eq!(
            run(&review_json(plain)).0.outcome,
            AdmissionOutcome::Skipped
        );
        // Braces and commas inside strings do not count.
        let mut braces = annotated_pod();
        braces["metadata"]["annotations"]["note"] = json!("{,}\\\"{".repeat(50_000));
        assert_eq!(check_complexity(&braces.to_string()), Ok(()));
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
