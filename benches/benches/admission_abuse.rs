//! The admission webhook under abuse (issue 12, items 8 and 9), against a
//! real `tether webhook` process on loopback, so its memory is its own:
//!
//! 1. **held connections**: 1,100 connections opened and held (a quarter
//!    TCP only, never starting TLS; a quarter TLS then silence; a quarter
//!    only the HTTP/2 preface; a quarter an HTTP/1 POST whose body is never
//!    finished), then fresh AdmissionReviews (new connection, TLS, HTTP/2
//!    and HTTP/1.1) timed from connect to the end of the answer. Goal < 1 s.
//! 2. **stream flood**: one (then, in a fresh process, two) HTTP/2
//!    connections opening 200 streams each, every stream declaring a body
//!    of 3 MiB − 1 byte and sending all but its last byte as fast as flow
//!    control lets, held for `ABUSE_FLOOD_SECONDS` (default 15); a fresh
//!    review every second meanwhile. Reports the server's peak RSS (VmHWM
//!    from /proc). Goal < 128 MiB, the generated Deployment's limit.
//!
//! Run (the `tether` binary must be built first; `ulimit -n` must allow
//! ~2,300 descriptors per process):
//!
//! ```text
//! cargo build -p examples [--release]
//! ulimit -n 8192; cargo bench -p benches --bench admission_abuse
//! ```
//!
//! `TETHER_BIN` overrides the binary (default: `tether` next to the bench's
//! target directory, release if built, else debug).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const SERVICE: &str = "tether-webhook";
const NAMESPACE: &str = "tether-system";
const SERVICE_DNS: &str = "tether-webhook.tether-system.svc";
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HELD_CONNECTIONS: usize = 1_100;
const FLOOD_STREAMS: usize = 200;
const DECLARED: usize = 3 * 1024 * 1024 - 1;

fn tether_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TETHER_BIN") {
        return bin.into();
    }
    // target/<profile>/deps/admission_abuse-<hash>
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    for profile in ["release", "debug"] {
        let bin = target.join(profile).join("tether");
        if bin.exists() {
            return bin;
        }
    }
    panic!(
        "no tether binary under {}: run `cargo build -p examples` or set TETHER_BIN",
        target.display()
    );
}

struct ServerProcess {
    child: Child,
    addr: std::net::SocketAddr,
    client: Arc<rustls::ClientConfig>,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(tether_bin())
            .args(["webhook", "--service", SERVICE, "--namespace", NAMESPACE])
            .arg("--cert-dir")
            .arg(dir.path())
            .arg("--bind")
            .arg(addr.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // Ready when the CA is written and the port accepts (bounded wait).
        let ca = dir.path().join("ca.crt");
        let started = Instant::now();
        loop {
            if ca.exists() && TcpStream::connect(addr).await.is_ok() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "tether webhook did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let pem = std::fs::read(&ca).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Self {
            child,
            addr,
            client: Arc::new(client),
            _dir: dir,
        }
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    async fn tls(
        &self,
        alpn: &[u8],
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let mut config = (*self.client).clone();
        if !alpn.is_empty() {
            config.alpn_protocols = vec![alpn.to_vec()];
        }
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(SERVICE_DNS).unwrap(), tcp)
            .await
    }

    /// One AdmissionReview on a new connection: (time, status, patched).
    async fn fresh_review(&self, h2: bool) -> Result<(Duration, u16, bool), String> {
        let started = Instant::now();
        let stream = self
            .tls(if h2 { b"h2" } else { b"http/1.1" })
            .await
            .map_err(|e| e.to_string())?;
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
            sender.send_request(request).await
        } else {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            sender.send_request(request).await
        }
        .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok((
            started.elapsed(),
            status,
            body["response"]["patchType"] == "JSONPatch",
        ))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn review_body() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "e911857d-c318-11e8-bbad-025000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "jhub", "operation": "CREATE",
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "jupyter-alice", "namespace": "jhub", "annotations": {
                    "tether.dev/inject": "true",
                    "tether.dev/remote": "s3://notebooks/users/alice",
                    "tether.dev/mount-path": "/home/jovyan"}},
                "spec": {"containers": [{"name": "notebook", "image": "quay.io/jupyter/base-notebook:2024-07-29"}]}}
        }
    }))
    .unwrap()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn held_connections() {
    let server = ServerProcess::start().await;
    let started = Instant::now();
    let mut held: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let mut failures = 0;
    for i in 0..HELD_CONNECTIONS {
        match i % 4 {
            0 => match TcpStream::connect(server.addr).await {
                Ok(tcp) => held.push(Box::new(tcp)),
                Err(_) => failures += 1,
            },
            kind => {
                let alpn: &[u8] = if kind == 2 { b"h2" } else { b"http/1.1" };
                let Ok(mut tls) = server.tls(alpn).await else {
                    failures += 1;
                    continue;
                };
                let sent = match kind {
                    2 => tls.write_all(H2_PREFACE).await,
                    3 => {
                        tls.write_all(
                            format!("POST /mutate HTTP/1.1\r\nhost: {SERVICE_DNS}\r\ncontent-length: 100000\r\n\r\n{{\"apiVersion\"").as_bytes(),
                        )
                        .await
                    }
                    _ => Ok(()),
                };
                let _ = sent;
                let _ = tls.flush().await;
                held.push(Box::new(tls));
            }
        }
    }
    println!(
        "held connections: opened {} of {HELD_CONNECTIONS} ({failures} failed) in {:.1} s against `tether webhook` (default limits: 1024 connections)",
        held.len(),
        started.elapsed().as_secs_f64()
    );
    let mut worst = Duration::ZERO;
    for round in 0..5 {
        for h2 in [true, false] {
            let answered =
                tokio::time::timeout(Duration::from_secs(10), server.fresh_review(h2)).await;
            match answered {
                Ok(Ok((took, status, patched))) => {
                    worst = worst.max(took);
                    println!(
                        "  fresh review {round} over {}: HTTP {status}, patched {patched}, {:.1} ms",
                        if h2 { "HTTP/2" } else { "HTTP/1.1" },
                        ms(took)
                    );
                }
                Ok(Err(e)) => println!("  fresh review {round}: failed: {e}"),
                Err(_) => println!("  fresh review {round}: no answer within 10 s"),
            }
        }
    }
    println!(
        "  slowest fresh review {:.1} ms (goal < 1000 ms); server VmHWM {} MiB",
        ms(worst),
        server.status_kib("VmHWM:") / 1024
    );
    drop(held);
}

/// One HTTP/2 connection opening `FLOOD_STREAMS` streams of `DECLARED`
/// bytes, each sending all but its last byte; a stream that is answered
/// (503 when the budget sheds it) is replaced by the next one, until
/// `FLOOD_STREAMS` have been opened.
async fn flood_connection(server: &ServerProcess) -> tokio::task::JoinSet<Option<u16>> {
    let tls = server.tls(b"h2").await.unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_max_send_streams(1)
        .handshake::<_, Bytes>(tls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let chunk = Bytes::from(vec![b' '; 16 * 1024]);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..FLOOD_STREAMS {
        let client = client.clone();
        let chunk = chunk.clone();
        tasks.spawn(async move {
            let mut client = client.ready().await.ok()?;
            let request = hyper::Request::builder()
                .method("POST")
                .uri(format!("https://{SERVICE_DNS}/mutate"))
                .header("content-length", DECLARED.to_string())
                .body(())
                .unwrap();
            let (response, mut body) = client.send_request(request, false).ok()?;
            let mut response = std::pin::pin!(response);
            let mut left = DECLARED - 1;
            while left > 0 {
                body.reserve_capacity(left.min(chunk.len()));
                let capacity = tokio::select! {
                    capacity = std::future::poll_fn(|cx| body.poll_capacity(cx)) => capacity,
                    answered = &mut response => return answered.ok().map(|r| r.status().as_u16()),
                };
                let n = match capacity {
                    Some(Ok(n)) => n.min(left),
                    _ => return None,
                };
                if n > 0 {
                    body.send_data(chunk.slice(..n), false).ok()?;
                    left -= n;
                }
            }
            let answered = (&mut response).await;
            drop(body);
            answered.ok().map(|r| r.status().as_u16())
        });
    }
    tasks
}

async fn stream_flood(connections: usize, seconds: u64) {
    let server = ServerProcess::start().await;
    let baseline = server.status_kib("VmHWM:");
    let mut floods = Vec::new();
    for _ in 0..connections {
        floods.push(flood_connection(&server).await);
    }
    let started = Instant::now();
    let mut reviews = Vec::new();
    let mut peak_rss = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_rss = peak_rss.max(server.status_kib("VmRSS:"));
        let answered =
            tokio::time::timeout(Duration::from_secs(10), server.fresh_review(true)).await;
        reviews.push(match answered {
            Ok(Ok((took, status, patched))) => format!(
                "{status}{} {:.0} ms",
                if patched { "" } else { " (no patch)" },
                ms(took)
            ),
            Ok(Err(e)) => format!("error: {e}"),
            Err(_) => "no answer in 10 s".to_owned(),
        });
    }
    let hwm = server.status_kib("VmHWM:");
    let mut answered = std::collections::BTreeMap::<String, usize>::new();
    for mut tasks in floods {
        // Streams still open (all but the last byte sent) are counted as
        // "held"; answered ones by status.
        while let Some(joined) = tasks.try_join_next() {
            let Ok(result) = joined else { continue };
            let key = match result {
                Some(status) => format!("HTTP {status}"),
                None => "reset".to_owned(),
            };
            *answered.entry(key).or_default() += 1;
        }
        tasks.abort_all();
    }
    println!(
        "stream flood: {connections} connection(s) × {FLOOD_STREAMS} streams declaring {DECLARED} bytes, held {seconds} s"
    );
    println!(
        "  server VmHWM {} MiB (at start {} MiB; sampled VmRSS max {} MiB; goal < 128 MiB)",
        hwm / 1024,
        baseline / 1024,
        peak_rss / 1024
    );
    println!("  flood streams answered so far: {answered:?}");
    println!("  fresh reviews during the flood (status, time): {reviews:?}");
}

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`: skip.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds = std::env::var("ABUSE_FLOOD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        held_connections().await;
        stream_flood(1, seconds).await;
        stream_flood(2, seconds).await;
    });
}
