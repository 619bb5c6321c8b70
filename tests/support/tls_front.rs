//! A TLS front for the in-process broker: it terminates TLS (rustls, certificates from
//! [`TestPki`]) and forwards the plain MQTT bytes to rumqttd, so the agent's `mqtts://` path
//! runs against the same real broker as the rest of the suite.
//!
//! Why not rumqttd's own TLS: its `verify-client-cert` feature is compile-time and global, so
//! one test binary could not have a server-only TLS listener and a mutual-TLS one; it would
//! also pull a second rustls (0.22) into the build. The front is a few lines on the rustls the
//! agent already uses, and it records what a broker's TLS layer saw: the SNI name the client
//! sent, whether a client certificate was presented, and every failed handshake.
//!
//! Bounded: one task per connection, no queue of its own (`copy_bidirectional` moves at most
//! its buffer at a time); a handshake that does not finish within 5 s is counted as failed.

use super::certs::TestPki;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Whether the front asks for a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Server authentication only.
    None,
    /// Mutual TLS: a certificate signed by the test CA is required.
    Required,
}

/// What the front saw of one successful handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The SNI name the client sent (`None` when it sent none, e.g. for an IP address).
    pub sni: Option<String>,
    /// The client presented a certificate (that the verifier accepted).
    pub client_cert: bool,
    /// The client resumed an earlier session (a ticket from this front) instead of a full
    /// handshake with the certificate chain.
    pub resumed: bool,
}

pub struct TlsFront {
    pub addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    task: tokio::task::JoinHandle<()>,
}

fn server_config(pki: &TestPki, auth: ClientAuth) -> ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server_cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&pki.server_key).unwrap();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Required => {
            let mut roots = RootCertStore::empty();
            for ca in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
                roots.add(ca.unwrap()).unwrap();
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder.with_single_cert(chain, key).unwrap()
}

impl TlsFront {
    /// Listen on a free loopback port; forward each TLS connection's plain bytes to `upstream`.
    pub async fn start(upstream: SocketAddr, pki: &TestPki, auth: ClientAuth) -> TlsFront {
        let acceptor = TlsAcceptor::from(Arc::new(server_config(pki, auth)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (accepted, failed, handshakes) =
                (accepted.clone(), failed.clone(), handshakes.clone());
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(serve(
                        tcp,
                        acceptor.clone(),
                        upstream,
                        failed.clone(),
                        handshakes.clone(),
                    ));
                }
            }
        });
        TlsFront {
            addr,
            accepted,
            failed,
            handshakes,
            task,
        }
    }

    /// `mqtts://HOST:PORT` of the front, `host` being the name the agent dials (and sends
    /// as SNI): `localhost` or `127.0.0.1`.
    pub fn url(&self, host: &str) -> String {
        format!("mqtts://{host}:{}", self.addr.port())
    }

    /// TCP connections accepted so far (each one a connection attempt of the agent).
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Handshakes that failed (refused certificate, missing client certificate, timeout).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// The successful handshakes, in order.
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }
}

async fn serve(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    upstream: SocketAddr,
    failed: Arc<AtomicU64>,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
) {
    let mut tls = match tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(_)) | Err(_) => {
            failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    {
        let (_, session) = tls.get_ref();
        handshakes.lock().unwrap().push(Handshake {
            sni: session.server_name().map(str::to_owned),
            client_cert: session
                .peer_certificates()
                .is_some_and(|certs| !certs.is_empty()),
            resumed: session.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        });
    }
    let Ok(mut up) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}
