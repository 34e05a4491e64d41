//! A fault-injecting TCP proxy for tests: put it in front of a real server
//! (SeaweedFS, a git HTTP server) and switch, while the test runs, between
//! passing traffic through and hanging, delaying, dropping, cutting
//! responses short or answering HTTP 503.
//!
//! It runs on its own tokio runtime in a background thread, so plain
//! (non-async) tests can use it; dropping the proxy stops it and closes
//! every connection. Counters ([`FaultProxy::requests`],
//! [`FaultProxy::held`]) let a test wait for an event ("a request is being
//! held") instead of sleeping.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// Forward nothing more, in either direction, on any connection (new
    /// ones are accepted and then ignored): a black hole. Connections held
    /// this way stay dead after the mode changes, as after a real network
    /// partition.
    Hang,
    /// Wait this long before forwarding each chunk a client sends (about
    /// one delay per request).
    Delay(Duration),
    /// Close new connections at once and stop existing ones.
    Drop,
    /// Forward at most this many response bytes per connection, then close.
    Cut(usize),
    /// Answer this fraction (0.0–1.0) of requests with `503 Service
    /// Unavailable` (deterministically: every 1/ratio-th request).
    Error503(f64),
}

#[derive(Debug)]
struct Shared {
    mode: Mutex<Mode>,
    requests: AtomicU64,
    held: AtomicU64,
    /// Accumulates the 503 ratio; a request fails when it passes 1.
    error_budget: Mutex<f64>,
}

impl Shared {
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap()
    }
}

/// The proxy; see the module docs.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`
    /// (`host:port`).
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream: SocketAddr = upstream.parse().expect("upstream must be ip:port");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Pass),
            requests: AtomicU64::new(0),
            held: AtomicU64::new(0),
            error_budget: Mutex::new(0.0),
        });
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let s = Arc::clone(&shared);
        runtime.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let _ = connection(client, upstream, s).await;
                });
            }
        });
        FaultProxy {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    /// `127.0.0.1:port` of the proxy.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches the mode; applies to every connection from the next chunk.
    pub fn set(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// HTTP requests seen (chunks from a client that start with a method).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Chunks held back by [`Mode::Hang`] so far.
    pub fn held(&self) -> u64 {
        self.shared.held.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

const METHODS: [&[u8]; 6] = [b"GET ", b"PUT ", b"POST ", b"HEAD ", b"DELETE ", b"PATCH "];

async fn hang_forever(s: &Shared) -> std::io::Result<()> {
    s.held.fetch_add(1, Ordering::SeqCst);
    std::future::pending::<()>().await;
    Ok(())
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    s: Arc<Shared>,
) -> std::io::Result<()> {
    match s.mode() {
        Mode::Drop => return Ok(()),
        Mode::Hang => {
            // Accept, then never answer; keep the socket open.
            let _client = client;
            return hang_forever(&s).await;
        }
        _ => {}
    }
    let server = TcpStream::connect(upstream).await?;
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let (s1, s2) = (Arc::clone(&s), Arc::clone(&s));
    // Responses the client-side pump writes itself (503) go through this.
    let (to_client_tx, mut to_client_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = cr.read(&mut buf).await?;
            if n == 0 {
                sw.shutdown().await?;
                return Ok::<(), std::io::Error>(());
            }
            let chunk = &buf[..n];
            let is_request = METHODS.iter().any(|m| chunk.starts_with(m));
            if is_request {
                s1.requests.fetch_add(1, Ordering::SeqCst);
            }
            match s1.mode() {
                Mode::Pass | Mode::Cut(_) => {}
                Mode::Hang => return hang_forever(&s1).await,
                Mode::Drop => return Ok(()),
                Mode::Delay(d) => tokio::time::sleep(d).await,
                Mode::Error503(ratio) => {
                    if is_request {
                        let fail = {
                            let mut b = s1.error_budget.lock().unwrap();
                            *b += ratio;
                            if *b >= 1.0 {
                                *b -= 1.0;
                                true
                            } else {
                                false
                            }
                        };
                        if fail {
                            let body = "<Error><Code>ServiceUnavailable</Code></Error>";
                            let resp = format!(
                                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = to_client_tx.send(resp.into_bytes()).await;
                            // The other pump writes it and ends the connection.
                            std::future::pending::<()>().await;
                        }
                    }
                }
            }
            sw.write_all(chunk).await?;
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0usize;
        loop {
            let n = tokio::select! {
                r = sr.read(&mut buf) => r?,
                Some(resp) = to_client_rx.recv() => {
                    cw.write_all(&resp).await?;
                    cw.shutdown().await?;
                    return Ok(());
                }
            };
            if n == 0 {
                cw.shutdown().await?;
                return Ok::<(), std::io::Error>(());
            }
            let mut chunk = &buf[..n];
            match s2.mode() {
                Mode::Hang => return hang_forever(&s2).await,
                Mode::Drop => return Ok(()),
                Mode::Cut(limit) => {
                    let room = limit.saturating_sub(sent);
                    if room < chunk.len() {
                        chunk = &chunk[..room];
                        cw.write_all(chunk).await?;
                        return Ok(());
                    }
                }
                _ => {}
            }
            sent += chunk.len();
            cw.write_all(chunk).await?;
        }
    };
    // Either side ending (or failing) ends the connection.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
    Ok(())
}
