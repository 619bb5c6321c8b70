//! One broker, several endpoints (`[mqtt] fallback_urls`, spec "One broker, several
//! endpoints"): the publisher reaches one rumqttd through two fronts, as a fleet reaches a
//! cluster through its nodes or two balancers. When the endpoint in use is unreachable or
//! refusing, the next is tried at once (the backoff and the breaker are set to an hour here:
//! any wait would outlast the test's deadlines; only the probe after a broken session comes
//! within 50 ms); the publisher stays on whichever works, and
//! `components.mqtt.endpoint` names it.

mod support;

use gps_agent::uplink::backoff::BackoffPolicy;
use gps_agent::uplink::breaker::BreakerPolicy;
use gps_agent::uplink::publisher::PublisherSettings;
use std::num::NonZeroU32;
use std::time::Duration;
use support::broker::TestBroker;
use support::front::{Front, Mode};
use support::proxy::FaultProxy;
use support::publisher::{fast_settings, start};
use support::source::{fix, MemSource};

const HOUR: Duration = Duration::from_secs(3600);

/// Settings for `url` then `fallback`, whose only quick way to a broker is to fail over.
fn settings(url: &str, fallback: &[String]) -> PublisherSettings {
    let device = support::unique("dev");
    let mut s = fast_settings(url, &device, "test");
    s.fallback = fallback
        .iter()
        .map(|u| gps_agent::config::BrokerUrl::parse(u).unwrap())
        .collect();
    s.backoff = BackoffPolicy {
        initial: HOUR,
        max: HOUR,
        reset_after: HOUR,
    };
    s.breaker = BreakerPolicy {
        failure_threshold: NonZeroU32::new(1).unwrap(),
        open_for: HOUR,
        open_max: HOUR,
    };
    // The probe after a broken session comes within the interval (50 ms); later ones
    // would wait up to an hour.
    s.probe.max = HOUR;
    s
}

fn endpoint(url: &str) -> String {
    gps_agent::config::BrokerUrl::parse(url)
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_first_endpoint_is_followed_at_once_by_the_next() {
    let broker = TestBroker::start();
    let a = FaultProxy::start(broker.addr).await;
    let b = FaultProxy::start(broker.addr).await;
    a.cut().await;
    let source = MemSource::default();
    source.push((1..=5).map(fix));
    let run = start(settings(&a.url(), &[b.url()]), source);
    run.wait_acked(5).await;
    let st = run.status();
    assert!(st.connected, "{st:?}");
    assert_eq!(st.endpoint, endpoint(&b.url()));
    assert_eq!(st.connect_attempts, 2, "{st:?}");
    assert_eq!(st.probes_ok + st.probes_failed, 0, "{st:?}");
    assert_eq!(st.breaker.as_str(), "closed");
    assert_eq!(st.last_error.as_ref().map(|e| e.code), Some("MQTT_CONNECT"));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_endpoint_in_use_goes_away_the_session_moves_to_the_next_at_once_and_stays() {
    let broker = TestBroker::start();
    let a = FaultProxy::start(broker.addr).await;
    let b = FaultProxy::start(broker.addr).await;
    let c = FaultProxy::start(broker.addr).await;
    let source = MemSource::default();
    source.push((1..=5).map(fix));
    let run = start(settings(&a.url(), &[b.url(), c.url()]), source);
    run.wait_acked(5).await;
    assert_eq!(run.status().endpoint, endpoint(&a.url()));

    // The node in use stops (its port closes): the probe after the break fails, the next
    // node is connected to at once, and the session stays there when the first comes back.
    a.cut().await;
    run.source.push((6..=10).map(fix));
    run.wait_acked(10).await;
    a.restore().await;
    let st = run.status();
    assert!(st.connected, "{st:?}");
    assert_eq!(st.endpoint, endpoint(&b.url()), "{st:?}");
    assert_eq!(st.connect_attempts, 2, "{st:?}");
    assert_eq!(st.reconnects, 1, "{st:?}");
    run.source.push((11..=15).map(fix));
    run.wait_acked(15).await;
    assert_eq!(run.status().endpoint, endpoint(&b.url()));
    assert_eq!(run.status().reconnects, 1);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_endpoint_is_followed_at_once_and_its_refusal_opens_no_breaker() {
    let broker = TestBroker::start();
    let refusing = Front::start(broker.addr).await;
    refusing.set(Mode::Refuse(3));
    let b = FaultProxy::start(broker.addr).await;
    let source = MemSource::default();
    source.push((1..=5).map(fix));
    let run = start(settings(&refusing.url(), &[b.url()]), source);
    run.wait_acked(5).await;
    let st = run.status();
    assert_eq!(st.endpoint, endpoint(&b.url()));
    assert_eq!(st.connect_attempts, 2, "{st:?}");
    // The breaker (threshold 1 here) hears of a round across the endpoints only once it has
    // failed whole: this one ended on a working endpoint.
    assert_eq!(st.breaker.as_str(), "closed", "{st:?}");
    assert_eq!(refusing.accepted().len(), 1);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_endpoint_refuses_the_round_waits_the_backoff_and_the_breaker_counts_it_once() {
    let broker = TestBroker::start();
    let a = Front::start(broker.addr).await;
    let b = Front::start(broker.addr).await;
    a.set(Mode::Refuse(3));
    b.set(Mode::Refuse(3));
    let mut s = settings(&a.url(), &[b.url()]);
    s.breaker.failure_threshold = NonZeroU32::new(2).unwrap();
    let source = MemSource::default();
    source.push((1..=5).map(fix));
    let mut run = start(s, source);
    run.wait_status("a round refused and its backoff scheduled", |s| {
        s.connect_attempts == 2 && s.retry_at.is_some()
    })
    .await;
    let st = run.status();
    assert_eq!(st.breaker.as_str(), "closed", "one failure of two: {st:?}");
    assert_eq!(
        st.endpoint,
        endpoint(&a.url()),
        "the next round begins at the first"
    );
    let wait = st
        .retry_at
        .unwrap()
        .saturating_duration_since(std::time::Instant::now());
    assert!(
        wait > HOUR / 2,
        "the backoff (an hour, no jitter): {wait:?}"
    );
    assert_eq!((a.accepted().len(), b.accepted().len()), (1, 1));
    run.stop().await;
}

/// The real binary: a first endpoint that refuses connects, a fallback that works. Every
/// fix arrives through the fallback and `/health` names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_publishes_through_a_fallback_url_and_health_names_it() {
    use support::agent::{drive_log, expected_fixes, Agent};
    let dir = tempfile::tempdir().unwrap();
    let log = drive_log(
        dir.path(),
        gps_agent::sim::DriveSpec {
            epochs: 20,
            ..gps_agent::sim::DriveSpec::default()
        },
    );
    let broker = TestBroker::start();
    let down = FaultProxy::start(broker.addr).await;
    down.cut().await;
    let b = FaultProxy::start(broker.addr).await;
    let device = support::unique("truck");
    let mqtt = format!(
        "url = \"{}\"\nfallback_urls = [\"{}\"]\nbackoff_max_s = 3600\n",
        down.url(),
        b.url()
    );
    let gnss = support::agent::replay_gnss(&log.display().to_string());
    let agent = Agent::start_with_mqtt(dir.path(), &device, &gnss, &mqtt, &[]);
    let want = expected_fixes(&log);
    let (_, h) = agent.wait_health("every fix acknowledged", Duration::from_secs(30), |_, h| {
        h["components"]["buffer"]["acked_seq"].as_u64() == Some(want)
    });
    let mqtt = &h["components"]["mqtt"];
    assert_eq!(mqtt["endpoint"], endpoint(&b.url()), "{h}");
    assert_eq!(mqtt["connected"], true, "{h}");
    assert_eq!(mqtt["connect_attempts"], 2, "{h}");
    let (code, _) = agent.terminate();
    assert_eq!(code, 0);
}

/// `check-config` through the real binary names a bad fallback by its index and line.
#[test]
fn check_config_names_a_bad_fallback_url_by_index_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "[mqtt]\nurl = \"mqtt://a\"\nfallback_urls = [\n  \"mqtt://b\",\n  \"mqtt://c:0\",\n]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gps-agent"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(": mqtt.fallback_urls[1] (line 5): \"mqtt://c:0\": port"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
}
