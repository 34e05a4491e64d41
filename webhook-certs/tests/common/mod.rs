//! Helpers shared by the integration tests: a rustls TLS server on loopback
//! serving through a `CertResolver`, and clients that trust a given PEM
//! bundle and check certificates at a fake time.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use time::OffsetDateTime;

/// A clock fixed at one instant, for rustls's certificate checks.
#[derive(Debug)]
pub struct FixedTime(pub OffsetDateTime);

impl rustls::time_provider::TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        let secs = u64::try_from(self.0.unix_timestamp()).ok()?;
        Some(UnixTime::since_unix_epoch(Duration::from_secs(secs)))
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A root store with every certificate of a PEM bundle.
pub fn roots(bundle_pem: &str) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    assert!(!roots.is_empty());
    Arc::new(roots)
}

/// Starts a TLS server on 127.0.0.1 (ephemeral port) that answers "ping"
/// with "pong". It runs until the test process ends.
pub fn start_server(config: ServerConfig) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Arc::new(config);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(tcp) = stream else { continue };
            let config = Arc::clone(&config);
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(conn) = ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut buf = [0u8; 4];
                if tls.read_exact(&mut buf).is_ok() && &buf == b"ping" {
                    let _ = tls.write_all(b"pong");
                    let _ = tls.flush();
                }
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    addr
}

/// Connects to `addr` as `server_name`, trusting `bundle_pem`, checking
/// validity at `now`. Returns the DER of the leaf the server presented.
pub fn handshake(
    addr: SocketAddr,
    server_name: &str,
    bundle_pem: &str,
    now: OffsetDateTime,
) -> Result<Vec<u8>, String> {
    let config = ClientConfig::builder_with_details(provider(), Arc::new(FixedTime(now)))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(bundle_pem))
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"ping").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).map_err(|e| e.to_string())?;
    if &buf != b"pong" {
        return Err(format!("unexpected answer {buf:?}"));
    }
    let leaf = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no peer certificate")?;
    Ok(leaf.to_vec())
}
