//! Admission latency of kube-deploy's webhook (goal P7: p99 ≤ 2 ms at
//! 1,000 requests/s over TLS on loopback).
//!
//! Two parts:
//! 1. criterion: `review()` alone (parse, inject, serialise) for an annotated
//!    JupyterHub-like pod, and for a pod that passes unchanged;
//! 2. an open-loop load generator: the real server (`serve` with TLS from
//!    webhook-certs) on 127.0.0.1 in its own runtime on its own thread(s),
//!    as `tether webhook` is its own process; a client on a current-thread
//!    runtime with one HTTP/2 connection (as the API server keeps); a
//!    request scheduled every 1 ms for `ADMISSION_SECONDS` (default 10)
//!    after a 1 s warm-up, paced by an OS thread (tokio's millisecond timer
//!    would make the generator itself up to 1 ms late). Each latency is
//!    measured from the request's *scheduled* time to the end of its
//!    response, so a stall counts against every request it delays (no
//!    coordinated omission). Prints p50, p90, p99, p99.9 and max, and the
//!    generator's own lateness (scheduled → request started) so a slow
//!    generator can be told from a slow server.
//!
//! Run: `cargo bench -p benches --bench admission`
//! (`ADMISSION_SECONDS=30` for a longer run, `ADMISSION_SERVER_WORKERS=2`
//! to give the server two worker threads instead of one). Client and server
//! share the machine's cores.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube_deploy::webhook::{WebhookConfig, WebhookState, bind, review, serve, tls_server_config};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

const SERVICE_DNS: &str = "tether-webhook.tether-system.svc";
const RATE_PER_SECOND: u64 = 1_000;
/// Worker threads of the server's runtime by default: one core for the
/// server, the other for the client (which stands in for the API server, on
/// another machine in a cluster). `ADMISSION_SERVER_WORKERS=2` gives the
/// server both cores, as `tether webhook` takes one worker per core, and then
/// server and client compete for them.
const SERVER_WORKERS: usize = 1;

fn review_body(annotated: bool) -> Vec<u8> {
    let annotations = if annotated {
        json!({
            "hub.jupyter.org/username": "alice",
            "tether.dev/inject": "true",
            "tether.dev/remote": "s3://notebooks/users/alice?layout=snapshots",
            "tether.dev/mount-path": "/home/jovyan",
            "tether.dev/credentials-secret": "alice-s3"
        })
    } else {
        json!({"hub.jupyter.org/username": "alice"})
    };
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "jupyter-alice", "namespace": "jhub", "annotations": annotations,
            "labels": {"app": "jupyterhub", "component": "singleuser-server"}},
        "spec": {
            "securityContext": {"fsGroup": 100},
            "initContainers": [{"name": "block-cloud-metadata", "image": "quay.io/jupyterhub/k8s-network-tools:4.0.0",
                "command": ["iptables", "-A", "OUTPUT", "-d", "169.254.169.254", "-j", "DROP"]}],
            "containers": [{"name": "notebook", "image": "quay.io/jupyter/base-notebook:2024-07-29",
                "args": ["jupyterhub-singleuser"], "ports": [{"containerPort": 8888, "name": "notebook-port"}],
                "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "2Gi"}},
                "volumeMounts": [{"name": "volume-alice", "mountPath": "/home/jovyan"}]}],
            "volumes": [{"name": "volume-alice", "persistentVolumeClaim": {"claimName": "claim-alice"}}]
        }
    });
    let review: Value = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "e911857d-c318-11e8-bbad-025000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "jhub", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:jhub:hub"},
            "object": pod
        }
    });
    serde_json::to_vec(&review).unwrap()
}

fn bench_review(c: &mut Criterion) {
    let config = WebhookConfig::default();
    let annotated = review_body(true);
    let plain = review_body(false);
    assert_eq!(
        review(&annotated, &config).outcome,
        kube_deploy::metrics::AdmissionOutcome::Injected
    );
    c.bench_function("admission/review_inject", |b| {
        b.iter(|| review(&annotated, &config))
    });
    c.bench_function("admission/review_passthrough", |b| {
        b.iter(|| review(&plain, &config))
    });
}

criterion_group!(benches, bench_review);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn load_over_tls(seconds: u64) {
    let request = webhook_certs::CertRequest::new("tether-webhook", "tether-system")
        .unwrap()
        .with_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let bundle = webhook_certs::generate_bundle(
        &request,
        &webhook_certs::RotationPolicy::default(),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let resolver = Arc::new(webhook_certs::CertResolver::from_bundle(&bundle).unwrap());
    let tls = Arc::new(tls_server_config(resolver).unwrap());
    // The server gets its own runtime on its own threads, as `tether
    // webhook` is its own process next to the API server: the client's
    // work is not queued behind the server's tasks or the other way round.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let workers = std::env::var("ADMISSION_SERVER_WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SERVER_WORKERS);
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            serve(
                listener,
                tls,
                WebhookState::new(WebhookConfig::default()),
                async {
                    let _ = stopped.await;
                },
            )
            .await
        })
    });
    let addr = addr_rx.recv().unwrap();

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle.ca_bundle_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from(SERVICE_DNS).unwrap(), tcp)
        .await
        .unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);

    let body = Bytes::from(review_body(true));
    let send = |sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
                body: Bytes,
                scheduled: Instant| async move {
        let lag = scheduled.elapsed();
        let request = hyper::Request::builder()
            .method("POST")
            .uri(format!("https://{SERVICE_DNS}/mutate"))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .unwrap();
        let mut sender = sender;
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let _ = response.into_body().collect().await.unwrap();
        (scheduled.elapsed(), lag)
    };

    let total = (seconds + 1) * RATE_PER_SECOND;
    let warmup = RATE_PER_SECOND as usize;
    let period = Duration::from_nanos(1_000_000_000 / RATE_PER_SECOND);
    let start = Instant::now() + Duration::from_millis(50);
    // The pacer is an OS thread: tokio's timer rounds every deadline up to
    // the next millisecond, which would add up to 1 ms of the generator's
    // own lateness to each latency. `thread::sleep` wakes within tens of µs.
    let (tick_tx, mut tick_rx) = tokio::sync::mpsc::unbounded_channel();
    let pacer = std::thread::spawn(move || {
        for i in 0..total {
            let scheduled = start + period * i as u32;
            if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if tick_tx.send(scheduled).is_err() {
                break;
            }
        }
    });
    let mut tasks = Vec::with_capacity(total as usize);
    while let Some(scheduled) = tick_rx.recv().await {
        tasks.push(tokio::spawn(send(sender.clone(), body.clone(), scheduled)));
    }
    pacer.join().unwrap();
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.push(task.await.unwrap());
    }
    let elapsed = start.elapsed();
    let (mut measured, mut lags): (Vec<Duration>, Vec<Duration>) =
        latencies.split_off(warmup).into_iter().unzip();
    measured.sort();
    lags.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "admission over TLS (HTTP/2, loopback, server on {workers} worker thread(s)): {} requests at {RATE_PER_SECOND}/s in {:.1} s after a 1 s warm-up\n  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
        measured.len(),
        elapsed.as_secs_f64(),
        ms(percentile(&measured, 0.50)),
        ms(percentile(&measured, 0.90)),
        ms(percentile(&measured, 0.99)),
        ms(percentile(&measured, 0.999)),
        ms(*measured.last().unwrap()),
    );
    println!(
        "  of which the generator's own lateness (scheduled → request started): p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        ms(percentile(&lags, 0.50)),
        ms(percentile(&lags, 0.99)),
        ms(*lags.last().unwrap()),
    );
    stop.send(()).unwrap();
    server.join().unwrap().unwrap();
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();

    // `cargo test --benches` runs bench targets with `--bench` absent; keep
    // that quick by skipping the 11 s load run unless benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds = std::env::var("ADMISSION_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(load_over_tls(seconds));
}
