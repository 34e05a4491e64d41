//! The webhook under hostile connection patterns, over real TLS on
//! loopback: idle, half-open and trickling connections beyond the
//! connection limit do not lock out a fresh AdmissionReview; every stalled
//! phase (TLS handshake, protocol detection, request head, body, idle
//! HTTP/2) is cut off by its timeout; an HTTP/2 stream flood with large
//! declared bodies never takes the server past its request-body byte
//! budget, and fresh requests are still answered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube_deploy::webhook::{
    ServerLimits, WebhookConfig, WebhookState, bind, serve, tls_server_config,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use webhook_certs::{CertRequest, CertResolver, RotationPolicy, generate_bundle};

const SERVICE_DNS: &str = "tether-webhook.tether-system.svc";
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Generous bound for anything that must happen "promptly".
const PROMPTLY: Duration = Duration::from_secs(5);

struct Server {
    addr: SocketAddr,
    state: WebhookState,
    ca_pem: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    async fn start(limits: ServerLimits) -> Self {
        let request = CertRequest::new("tether-webhook", "tether-system")
            .unwrap()
            .with_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let bundle = generate_bundle(
            &request,
            &RotationPolicy::default(),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        let resolver = Arc::new(CertResolver::from_bundle(&bundle).unwrap());
        let tls = Arc::new(tls_server_config(resolver).unwrap());
        let state = WebhookState::new(WebhookConfig {
            limits,
            ..WebhookConfig::default()
        });
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = state.clone();
        let task = tokio::spawn(async move {
            serve(listener, tls, served, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            state,
            ca_pem: bundle.ca_bundle_pem(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn client(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A TLS connection; panics if the server does not complete the
    /// handshake promptly (e.g. because it is at its connection limit).
    async fn tls(&self, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let handshake = tokio_rustls::TlsConnector::from(self.client(alpn))
            .connect(ServerName::try_from(SERVICE_DNS).unwrap(), tcp);
        timeout(PROMPTLY, handshake)
            .await
            .expect("the server completes a TLS handshake promptly")
            .unwrap()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            timeout(Duration::from_secs(30), task)
                .await
                .expect("the server stops")
                .unwrap();
        }
    }
}

/// Limits where nothing times out during a test unless it sets so.
fn patient() -> ServerLimits {
    ServerLimits {
        handshake_timeout: Duration::from_secs(120),
        header_timeout: Duration::from_secs(120),
        body_timeout: Duration::from_secs(120),
        idle_timeout: Duration::from_secs(120),
        ..ServerLimits::default()
    }
}

fn review_body() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0b6a3c3e-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "team-a",
            "operation": "CREATE",
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "nb", "namespace": "team-a", "annotations": {
                    "tether.dev/inject": "true",
                    "tether.dev/remote": "s3://bucket/alice",
                    "tether.dev/mount-path": "/home/jovyan"
                }},
                "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}
            }
        }
    }))
    .unwrap()
}

/// One fresh AdmissionReview on a new connection (HTTP/1.1 or HTTP/2 by
/// ALPN); returns the HTTP status and the parsed body.
async fn fresh_review(server: &Server, h2: bool) -> Result<(u16, Value), String> {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let tcp = TcpStream::connect(server.addr)
        .await
        .map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(server.client(alpn))
        .connect(ServerName::try_from(SERVICE_DNS).unwrap(), tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let request = hyper::Request::builder()
        .method("POST")
        .uri(format!("https://{SERVICE_DNS}/mutate"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(review_body())))
        .unwrap();
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?
    };
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

fn assert_injected(status: u16, body: &Value) {
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["response"]["uid"], "0b6a3c3e-0000-4000-8000-000000000001",
        "{body}"
    );
    assert_eq!(body["response"]["allowed"], true, "{body}");
    assert_eq!(body["response"]["patchType"], "JSONPatch", "{body}");
}

/// Reads until the peer closes (EOF or error) and returns what came;
/// `None` if it is still open after `within`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    timeout(within, read).await.ok().map(|()| seen)
}

/// An HTTP/1.1 POST head declaring `length` body bytes.
fn post_head(length: usize) -> String {
    format!(
        "POST /mutate HTTP/1.1\r\nhost: {SERVICE_DNS}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_half_open_and_trickling_connections_do_not_lock_out_a_fresh_review() {
    const LIMIT: usize = 16;
    let server = Server::start(ServerLimits {
        max_connections: LIMIT,
        ..patient()
    })
    .await;

    // Four kinds of squatters, 12 of each: 48 connections for 16 slots,
    // none of which ever completes a request.
    let mut tcp_only = Vec::new();
    let mut tls_idle = Vec::new();
    let mut preface_only = Vec::new();
    let mut trickling = Vec::new();
    for _ in 0..12 {
        tcp_only.push(TcpStream::connect(server.addr).await.unwrap());
    }
    for _ in 0..12 {
        tls_idle.push(server.tls(&[b"http/1.1"]).await);
    }
    for _ in 0..12 {
        let mut s = server.tls(&[b"h2"]).await;
        s.write_all(H2_PREFACE).await.unwrap();
        s.flush().await.unwrap();
        preface_only.push(s);
    }
    for _ in 0..12 {
        let mut s = server.tls(&[b"http/1.1"]).await;
        s.write_all(post_head(1000).as_bytes()).await.unwrap();
        s.write_all(b"{\"apiVersion\"").await.unwrap();
        s.flush().await.unwrap();
        trickling.push(s);
    }

    // Fresh reviews, over HTTP/1.1 and HTTP/2, are still answered.
    for h2 in [false, true] {
        let (status, body) = timeout(PROMPTLY, fresh_review(&server, h2))
            .await
            .unwrap_or_else(|_| panic!("no answer within {PROMPTLY:?} (h2: {h2})"))
            .unwrap();
        assert_injected(status, &body);
    }
    // 48 squatters for 16 slots, then one fresh connection: at least 33
    // were closed to make room, the oldest first. (The second fresh
    // connection needs one more eviction only if the server has not yet
    // seen the first one close after its answer: a race, so not counted.)
    assert!(
        server.state.metrics().evicted_connections() >= 33,
        "{:?}",
        server.state.metrics()
    );
    assert!(server.state.open_connections() <= LIMIT);
    let mut first = tcp_only.remove(0);
    assert!(
        closed_within(&mut first, PROMPTLY).await.is_some(),
        "the oldest squatter is closed"
    );
    drop((tcp_only, tls_idle, preface_only, trickling));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stalled_phase_is_cut_off_by_its_timeout() {
    let short = Duration::from_millis(500);
    let server = Server::start(ServerLimits {
        handshake_timeout: short,
        header_timeout: short,
        body_timeout: short,
        idle_timeout: Duration::from_secs(1),
        ..ServerLimits::default()
    })
    .await;

    // TCP connected, TLS never started; and a ClientHello cut short.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        closed_within(&mut silent, PROMPTLY).await.is_some(),
        "no TLS at all"
    );
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    assert!(
        closed_within(&mut partial, PROMPTLY).await.is_some(),
        "a partial ClientHello"
    );

    // TLS done, then nothing: neither ALPN nor bytes to detect a protocol.
    let mut nothing = server.tls(&[]).await;
    assert!(
        closed_within(&mut nothing, PROMPTLY).await.is_some(),
        "TLS then silence (protocol detection)"
    );
    // TLS done with ALPN, then nothing.
    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let mut s = server.tls(&[alpn]).await;
        assert!(
            closed_within(&mut s, PROMPTLY).await.is_some(),
            "TLS ({}) then silence",
            String::from_utf8_lossy(alpn)
        );
    }
    // Only the HTTP/2 preface (with and without ALPN).
    for alpn in [&[&b"h2"[..]][..], &[][..]] {
        let mut s = server.tls(alpn).await;
        s.write_all(H2_PREFACE).await.unwrap();
        s.flush().await.unwrap();
        assert!(
            closed_within(&mut s, PROMPTLY).await.is_some(),
            "HTTP/2 preface only"
        );
    }
    // Half an HTTP/1 request head.
    let mut half_head = server.tls(&[b"http/1.1"]).await;
    half_head
        .write_all(b"POST /mutate HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    half_head.flush().await.unwrap();
    assert!(
        closed_within(&mut half_head, PROMPTLY).await.is_some(),
        "half a request head"
    );

    // A body that never completes: HTTP/1 and HTTP/2 get 408.
    let mut slow_body = server.tls(&[b"http/1.1"]).await;
    slow_body
        .write_all(post_head(1000).as_bytes())
        .await
        .unwrap();
    slow_body.write_all(b"{\"apiVersion\"").await.unwrap();
    slow_body.flush().await.unwrap();
    let seen = closed_within(&mut slow_body, PROMPTLY)
        .await
        .expect("a trickled body ends the request");
    assert!(
        seen.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&seen)
    );

    let tls = server.tls(&[b"h2"]).await;
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    let h2_conn = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = hyper::Request::builder()
        .method("POST")
        .uri(format!("https://{SERVICE_DNS}/mutate"))
        .header("content-length", "1000")
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    body.send_data(Bytes::from_static(b"{\"apiVersion\""), false)
        .unwrap();
    let response = timeout(PROMPTLY, response)
        .await
        .expect("a trickled HTTP/2 body is answered")
        .unwrap();
    assert_eq!(response.status(), 408);
    // Then the connection is idle and closed by the server after the idle
    // timeout (GOAWAY, then the connection future ends), although the
    // client keeps it.
    drop((body, response));
    timeout(PROMPTLY, h2_conn)
        .await
        .expect("an idle HTTP/2 connection is closed")
        .unwrap()
        .ok();
    drop(client);

    // After all this, the server still answers.
    let (status, body) = timeout(PROMPTLY, fresh_review(&server, true))
        .await
        .unwrap()
        .unwrap();
    assert_injected(status, &body);
    server.stop().await;
}

/// Opens `streams` POST streams on one HTTP/2 connection, each declaring
/// `declared` body bytes and sending all but the last, as fast as flow
/// control lets; returns when every stream has sent its part or been
/// answered, and keeps the streams open until `hold` is dropped.
async fn flood(
    server: &Server,
    streams: usize,
    declared: usize,
    hold: tokio::sync::watch::Receiver<()>,
) -> tokio::task::JoinSet<Option<u16>> {
    let tls = server.tls(&[b"h2"]).await;
    let (client, connection) = h2::client::Builder::new()
        .initial_max_send_streams(1)
        .handshake::<_, Bytes>(tls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut tasks = tokio::task::JoinSet::new();
    let chunk = Bytes::from(vec![b' '; 16 * 1024]);
    for _ in 0..streams {
        let client = client.clone();
        let chunk = chunk.clone();
        let mut hold = hold.clone();
        tasks.spawn(async move {
            let mut client = client.ready().await.ok()?;
            let request = hyper::Request::builder()
                .method("POST")
                .uri(format!("https://{SERVICE_DNS}/mutate"))
                .header("content-length", declared.to_string())
                .body(())
                .unwrap();
            let (response, mut body) = client.send_request(request, false).ok()?;
            let mut response = std::pin::pin!(response);
            let mut left = declared - 1;
            while left > 0 {
                body.reserve_capacity(left.min(chunk.len()));
                let capacity = tokio::select! {
                    capacity = std::future::poll_fn(|cx| body.poll_capacity(cx)) => capacity,
                    answered = &mut response => {
                        return answered.ok().map(|r| r.status().as_u16());
                    }
                };
                let n = match capacity {
                    Some(Ok(n)) => n.min(left),
                    _ => return None,
                };
                if n == 0 {
                    continue;
                }
                body.send_data(chunk.slice(..n), false).ok()?;
                left -= n;
            }
            tokio::select! {
                answered = &mut response => answered.ok().map(|r| r.status().as_u16()),
                _ = hold.changed() => None,
            }
        });
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_flood_stays_within_the_byte_budget() {
    const DECLARED: usize = 3 * 1024 * 1024 - 1;
    let budget = 8 * 1024 * 1024;
    let server = Server::start(ServerLimits {
        body_budget_bytes: budget,
        ..patient()
    })
    .await;
    assert_eq!(server.state.body_budget_bytes(), budget);

    // Two connections, 200 streams each, every body one byte short.
    let (release, hold) = tokio::sync::watch::channel(());
    let mut floods = Vec::new();
    for _ in 0..2 {
        floods.push(flood(&server, 200, DECLARED, hold.clone()).await);
    }
    // Wait (bounded) until the flood has pushed the budget to within one
    // maximal body of full; check the bound on every look.
    let state = server.state.clone();
    let pressed = timeout(Duration::from_secs(60), async {
        loop {
            let now = state.in_flight_body_bytes();
            assert!(now <= budget, "{now} > {budget}");
            if now + DECLARED >= budget {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(pressed.is_ok(), "the flood never reached the budget");

    // Fresh reviews still get their answer, while the flood goes on.
    for h2 in [false, true, false, true] {
        let (status, body) = timeout(Duration::from_secs(10), fresh_review(&server, h2))
            .await
            .unwrap_or_else(|_| panic!("no answer during the flood (h2: {h2})"))
            .unwrap();
        assert_injected(status, &body);
    }
    let peak = server.state.peak_in_flight_body_bytes();
    assert!(peak <= budget, "peak {peak} over the budget {budget}");
    assert!(
        server.state.metrics().shed_count() >= 1,
        "older flood streams were cancelled: {:?}",
        server.state.metrics()
    );
    drop(release);
    for mut tasks in floods {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    server.stop().await;
}
