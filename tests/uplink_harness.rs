//! The test harness itself: the fault proxy does what the uplink tests rely on it doing.

mod support;

use std::time::Duration;
use support::broker::TestBroker;
use support::proxy::FaultProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(5);

/// An upstream that echoes every byte back.
async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn roundtrip(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    s.write_all(b"ping").await.ok()?;
    let mut buf = [0u8; 4];
    match timeout(within, s.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(buf.to_vec()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_closes_connections_and_refuses_new_ones_until_restored() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    assert_eq!(roundtrip(&mut s, T).await.as_deref(), Some(&b"ping"[..]));

    proxy.cut().await;
    let mut buf = [0u8; 1];
    let eof = timeout(T, s.read(&mut buf)).await.unwrap();
    assert!(
        matches!(eof, Ok(0) | Err(_)),
        "connection not closed: {eof:?}"
    );
    // `cut()` returns once the listener is closed: refused at once, no waiting.
    let refused = TcpStream::connect(proxy.addr).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

    // `restore()` returns once it listens again: accepted at once.
    proxy.restore().await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    assert_eq!(roundtrip(&mut s, T).await.as_deref(), Some(&b"ping"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_keeps_the_connection_open_but_delivers_nothing() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    proxy.stall();
    assert_eq!(roundtrip(&mut s, Duration::from_millis(300)).await, None);
    proxy.restore().await;
    // Still the same open connection; bytes swallowed during the stall stay lost.
    assert_eq!(roundtrip(&mut s, T).await.as_deref(), Some(&b"ping"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_holds_each_chunk_back() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    proxy.delay(150);
    let started = std::time::Instant::now();
    assert!(roundtrip(&mut s, T).await.is_some());
    // Once on the way in, once on the way back.
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn the_test_broker_accepts_connections_once_started() {
    let broker = TestBroker::start();
    assert!(support::broker::wait_accepting(
        broker.addr,
        Duration::from_millis(100)
    ));
    assert!(broker.url().starts_with("mqtt://127.0.0.1:"));
}
