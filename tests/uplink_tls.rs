//! `mqtts://` against the in-process broker: rumqttd behind the harness's TLS front
//! (tests/support/tls_front.rs), with a CA, server and client certificates made in the test
//! (rcgen). TLS, mutual TLS, the SNI name the agent sends, the `server_name` override, refused
//! certificates (permanent `MQTT_TLS`, one attempt per `permanent_retry`) and a link cut in
//! the middle of a TLS drain. The same cases run against mosquitto in CI's interop step.

mod support;

use gps_agent::uplink::publisher::PublisherSettings;
use gps_agent::uplink::tls::TlsSettings;
use std::collections::BTreeSet;
use std::time::Duration;
use support::broker::{Subscriber, TestBroker};
use support::certs::TestPki;
use support::proxy::FaultProxy;
use support::publisher::{fast_settings, start};
use support::source::{fix, MemSource};
use support::tls_front::{ClientAuth, Handshake, TlsFront};

fn settings(url: &str, device: &str) -> PublisherSettings {
    let mut s = fast_settings(url, device, "tls");
    s.batch_max = 20;
    s.window = 5;
    s.puback_timeout = Duration::from_secs(3);
    s.permanent_retry = Duration::from_secs(30);
    s
}

fn trusting(pki: &TestPki) -> TlsSettings {
    TlsSettings {
        ca_file: Some(pki.ca.clone()),
        ..TlsSettings::default()
    }
}

fn with_client_cert(pki: &TestPki) -> TlsSettings {
    TlsSettings {
        client_cert: Some(pki.client_cert.clone()),
        client_key: Some(pki.client_key.clone()),
        ..trusting(pki)
    }
}

/// Publish `n` fixes through `settings` and check a plain subscriber on the broker saw every
/// seq and nothing stayed in flight.
async fn every_seq_arrives(broker: &TestBroker, settings: PublisherSettings, n: u64) {
    let mut sub = Subscriber::start(broker, &format!("tls/{}/#", settings.device)).await;
    let source = MemSource::default();
    source.push((1..=n).map(fix));
    let run = start(settings, source);
    run.wait_acked(n as usize).await;
    let seen = sub.fix_seqs_until_quiet(Duration::from_millis(500)).await;
    let source = run.stop().await;
    assert_eq!(seen, (1..=n).collect::<BTreeSet<u64>>());
    assert_eq!(source.in_flight(), 0);
    assert!(source.dead().is_empty(), "{:?}", source.dead());
}

/// The agent against a front that will refuse its handshake: `MQTT_TLS`, not connected, and
/// exactly one attempt within two seconds (backoff alone would retry within 50 ms).
async fn refused_permanently(front: &TlsFront, s: PublisherSettings) {
    let source = MemSource::default();
    source.push((1..=3).map(fix));
    let mut run = start(s, source);
    let status = run.wait_error("MQTT_TLS").await;
    assert!(!status.connected, "{status:?}");
    // Not retried before permanent_retry: the wait the publisher reports is the one it
    // sleeps, and so far there was one attempt.
    let retry_in = status
        .retry_at
        .map(|at| at.saturating_duration_since(std::time::Instant::now()));
    assert!(
        retry_in.is_some_and(|r| r > Duration::from_secs(20)),
        "{retry_in:?}"
    );
    assert_eq!(
        front.connections(),
        1,
        "a permanent TLS failure is not retried before permanent_retry"
    );
    let source = run.stop().await;
    assert!(source.acked().is_empty());
    assert_eq!(source.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_checked_against_our_ca_delivers_every_fix_and_sends_the_broker_name_as_sni() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let broker = TestBroker::start();
    let front = TlsFront::start(broker.addr, &pki, ClientAuth::None).await;

    let mut s = settings(&front.url("localhost"), &support::unique("dev"));
    s.tls = trusting(&pki);
    every_seq_arrives(&broker, s, 200).await;

    let handshakes = front.handshakes();
    assert!(!handshakes.is_empty());
    for h in handshakes {
        assert_eq!(
            h,
            Handshake {
                sni: Some("localhost".into()),
                client_cert: false,
                resumed: false,
            }
        );
    }
    assert_eq!(front.failed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_presents_our_client_certificate_and_delivers_every_fix() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let broker = TestBroker::start();
    let front = TlsFront::start(broker.addr, &pki, ClientAuth::Required).await;

    let mut s = settings(&front.url("localhost"), &support::unique("dev"));
    s.tls = with_client_cert(&pki);
    every_seq_arrives(&broker, s, 200).await;

    let handshakes = front.handshakes();
    assert!(!handshakes.is_empty());
    assert!(handshakes.iter().all(|h| h.client_cert), "{handshakes:?}");
    assert_eq!(front.failed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_client_certificate_mutual_tls_is_refused_as_permanent_mqtt_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let broker = TestBroker::start();
    let front = TlsFront::start(broker.addr, &pki, ClientAuth::Required).await;

    let mut s = settings(&front.url("localhost"), &support::unique("dev"));
    s.tls = trusting(&pki);
    refused_permanently(&front, s).await;
    assert_eq!(front.failed(), 1, "the front refused the handshake");
    assert!(front.handshakes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_from_an_unknown_ca_is_refused_as_permanent_mqtt_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let broker = TestBroker::start();
    let front = TlsFront::start(broker.addr, &pki, ClientAuth::None).await;

    let mut s = settings(&front.url("localhost"), &support::unique("dev"));
    s.tls = TlsSettings {
        ca_file: Some(pki.other_ca.clone()),
        ..TlsSettings::default()
    };
    refused_permanently(&front, s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_name_checks_the_certificate_against_that_name_when_dialling_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let broker = TestBroker::start();
    let front = TlsFront::start(broker.addr, &pki, ClientAuth::None).await;

    // Dialling 127.0.0.1 and checking the certificate for `localhost`: delivered. The URL's
    // host is an address, so rustls sends no SNI (documented in the README).
    let mut s = settings(&front.url("127.0.0.1"), &support::unique("dev"));
    s.tls = TlsSettings {
        server_name: Some("localhost".into()),
        ..trusting(&pki)
    };
    every_seq_arrives(&broker, s, 50).await;
    assert!(front.handshakes().iter().all(|h| h.sni.is_none()));

    // A name the certificate does not carry: refused, permanently.
    let front = TlsFront::start(broker.addr, &pki, ClientAuth::None).await;
    let mut s = settings(&front.url("127.0.0.1"), &support::unique("dev"));
    s.tls = TlsSettings {
        server_name: Some("broker.elsewhere.example".into()),
        ..trusting(&pki)
    };
    refused_permanently(&front, s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_cut_in_the_middle_of_a_mutual_tls_drain_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let broker = TestBroker::start();
    let front = TlsFront::start(broker.addr, &pki, ClientAuth::Required).await;
    // The cellular link between the agent and the broker's TLS front.
    let proxy = FaultProxy::start(front.addr).await;
    let port = proxy.addr.port();

    let device = support::unique("dev");
    let mut sub = Subscriber::start(&broker, &format!("tls/{device}/#")).await;
    let mut s = settings(&format!("mqtts://localhost:{port}"), &device);
    s.tls = with_client_cert(&pki);
    // Slow the drain so the cut lands in the middle of it.
    proxy.delay(20);
    let n = 2000;
    let source = MemSource::default();
    source.push((1..=n).map(fix));
    let mut run = start(s, source);
    run.wait_acked_or(200, Duration::from_secs(20), String::new)
        .await;
    proxy.cut().await;
    let acked_at_cut = run.source.acked_count();
    assert!(acked_at_cut < n as usize, "the cut came after the drain");
    run.wait_status("the cut seen", |s| !s.connected).await;
    proxy.restore().await;
    proxy.delay(0);
    run.wait_acked(n as usize).await;
    run.wait_status("reconnected", |s| s.connected && s.reconnects >= 1)
        .await;
    let seen = sub.fix_seqs_until_quiet(Duration::from_millis(500)).await;
    let source = run.stop().await;
    assert_eq!(seen, (1..=n).collect::<BTreeSet<u64>>());
    assert_eq!(source.in_flight(), 0);
    let handshakes = front.handshakes();
    assert!(
        handshakes.len() >= 2,
        "a second TLS session: {handshakes:?}"
    );
    assert!(handshakes.iter().all(|h| h.client_cert));
    // The client configuration is kept across connections: the new session resumes the
    // first (no certificate chains on the wire, one round trip less).
    assert!(!handshakes[0].resumed);
    assert!(handshakes[1..].iter().all(|h| h.resumed), "{handshakes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_resumes_the_tls_session_instead_of_a_full_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let broker = TestBroker::start();
    let front = TlsFront::start(broker.addr, &pki, ClientAuth::None).await;
    let proxy = FaultProxy::start(front.addr).await;
    let device = support::unique("dev");
    let mut s = settings(&format!("mqtts://localhost:{}", proxy.addr.port()), &device);
    s.tls = trusting(&pki);
    let source = MemSource::default();
    source.push((1..=10).map(fix));
    let run = start(s, source);
    run.wait_acked(10).await;
    for round in 1..=2u64 {
        proxy.cut().await;
        proxy.restore().await;
        run.source.push((1..=10).map(|i| fix(round * 10 + i)));
        run.wait_acked(10 * (round as usize + 1)).await;
    }
    run.stop().await;
    let handshakes = front.handshakes();
    assert_eq!(handshakes.len(), 3, "{handshakes:?}");
    assert_eq!(
        handshakes.iter().map(|h| h.resumed).collect::<Vec<_>>(),
        [false, true, true]
    );
}
