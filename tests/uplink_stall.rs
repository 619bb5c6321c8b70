//! The four kinds of broker trouble that left the uplink of main 3007257 without a single
//! attempt for good once its breaker had opened (issue 20), through the real publisher, with
//! jitter on as in the field: a port that accepts and closes, CONNACK "server unavailable", a
//! broker that never answers CONNECT, and one that gives CONNACK but never a PUBACK. Each
//! lasts until the breaker has let at least two trials through (the stall came at the first),
//! then the broker works: every fix must arrive, and while the trouble lasts `/health` must
//! show the breaker as the state machine has it (it said "closed" after the timeouts).
//!
//! And a wedged uplink is visible: stuck without a probe or an attempt for longer than the
//! liveness bound allows, `/health` says `MQTT_WEDGED`, unhealthy, and `status` exits 2.

mod support;

use gps_agent::status::{BreakerState, MqttStatus};
use gps_agent::uplink::backoff::{Jitter, Xorshift64};
use gps_agent::uplink::breaker::BreakerPolicy;
use std::num::NonZeroU32;
use std::time::Duration;
use support::broker::TestBroker;
use support::front::{Front, Mode};
use support::publisher::{fast_settings, start_with_jitter, Running};
use support::source::{fix, MemSource};

const THRESHOLD: u32 = 3;

/// A publisher through a front set to `trouble`, its breaker opening after three failures
/// (for 0.3 s at first), jitter seeded.
async fn in_trouble(trouble: Mode) -> (TestBroker, Front, Running) {
    let broker = TestBroker::start();
    let front = Front::start(broker.addr).await;
    front.set(trouble);
    let device = support::unique("dev");
    let mut s = fast_settings(&front.url(), &device, "test");
    s.breaker = BreakerPolicy {
        failure_threshold: NonZeroU32::new(THRESHOLD).unwrap(),
        open_for: Duration::from_millis(300),
        open_max: Duration::from_millis(600),
    };
    s.connect_timeout = Duration::from_secs(1);
    s.puback_timeout = Duration::from_secs(1);
    let source = MemSource::default();
    source.push((1..=5).map(fix));
    let run = start_with_jitter(s, source, Jitter::Full(Xorshift64::seeded(20)));
    (broker, front, run)
}

/// The trouble lasts until `attempts` full attempts were made; then the broker works and
/// every fix arrives.
async fn comes_back(front: &Front, run: &mut Running, attempts: u64) {
    let what = format!("{attempts} full attempts");
    run.wait_status(&what, |s| s.connect_attempts >= attempts)
        .await;
    front.set(Mode::Balance);
    run.wait_acked(5).await;
    let st = run.status();
    assert!(st.connected, "{st:?}");
    assert_eq!(st.breaker, BreakerState::Closed, "{st:?}");
}

/// While the broker refuses, `/health` shows the breaker open once the machine opened it.
async fn breaker_shown_open(run: &mut Running) -> MqttStatus {
    run.wait_status("the breaker shown open", |s| {
        s.breaker == BreakerState::Open
    })
    .await;
    run.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_that_accepts_and_closes_is_tried_again_until_the_broker_behind_it_works() {
    let (_broker, front, mut run) = in_trouble(Mode::AcceptClose).await;
    comes_back(&front, &mut run, u64::from(THRESHOLD) + 3).await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_answering_connack_3_is_tried_again_after_the_breaker_opened_until_it_works() {
    let (_broker, front, mut run) = in_trouble(Mode::Refuse(3)).await;
    let st = breaker_shown_open(&mut run).await;
    assert_eq!(st.last_error.unwrap().code, "MQTT_UNAVAILABLE");
    comes_back(&front, &mut run, u64::from(THRESHOLD) + 2).await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_never_answers_connect_is_tried_again_after_the_breaker_opened_until_it_works(
) {
    let (_broker, front, mut run) = in_trouble(Mode::Silent).await;
    let st = breaker_shown_open(&mut run).await;
    assert_eq!(st.last_error.unwrap().code, "MQTT_TIMEOUT");
    comes_back(&front, &mut run, u64::from(THRESHOLD) + 2).await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_never_sends_puback_is_tried_again_after_the_breaker_opened_until_it_works() {
    let (_broker, front, mut run) = in_trouble(Mode::NoPuback).await;
    let st = breaker_shown_open(&mut run).await;
    assert_eq!(st.last_error.unwrap().code, "MQTT_ACK_TIMEOUT");
    comes_back(&front, &mut run, u64::from(THRESHOLD) + 2).await;
    run.stop().await;
}

/// The uplink stuck where no state machine sees it: the buffer does not return from taking
/// back the fixes of a broken session. From the facts the loop records (no probe, no attempt
/// since the break), `/health` calls it wedged and `gps-agent status` exits 2; once the
/// buffer answers, the uplink goes on and the wedge is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uplink_that_stops_trying_is_reported_wedged_and_status_exits_2() {
    use gps_agent::health::snapshot::snapshot;
    use gps_agent::health::{serve_with, Metrics, ServeOptions};
    use gps_agent::status::Status;
    use support::proxy::FaultProxy;
    let broker = TestBroker::start();
    let proxy = FaultProxy::start(broker.addr).await;
    let device = support::unique("dev");
    let mut s = fast_settings(&proxy.url(), &device, "test");
    s.wedge_margin = Duration::from_secs(1);
    let bound = s.wedge_after();
    let source = MemSource::default();
    source.push((1..=5).map(fix));
    let run = start_with_jitter(s, source, Jitter::Off);
    run.wait_acked(5).await;
    let health = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", health.local_addr().unwrap());
    let stop_health = tokio_util::sync::CancellationToken::new();
    tokio::spawn(serve_with(
        health,
        run.board.clone(),
        std::sync::Arc::new(Metrics::new(run.board.clone())),
        stop_health.clone(),
        ServeOptions::default(),
    ));

    // Fixes in flight on a stalled link, then the link is cut: the session ends and hands
    // them back to a buffer that does not return.
    run.source.hold_releases(true);
    proxy.stall();
    run.source.push((6..=10).map(fix));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while run.source.in_flight() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing went in flight"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.cut().await;
    let wedged = |board: &gps_agent::status::StatusBoard| {
        let s = snapshot(&board.read(), board.clock());
        let mqtt = s.components.mqtt;
        mqtt.last_error.filter(|_| mqtt.status == Status::Unhealthy)
    };
    let deadline = std::time::Instant::now() + bound + Duration::from_secs(15);
    let error = loop {
        if let Some(e) = wedged(&run.board) {
            break e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reported wedged: {:?}",
            run.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(error.code, "MQTT_WEDGED");
    let mut out = Vec::new();
    assert_eq!(gps_agent::cli::status::once(&url, &mut out).await, 2);
    assert!(
        String::from_utf8_lossy(&out).contains("MQTT_WEDGED"),
        "{}",
        String::from_utf8_lossy(&out)
    );

    run.source.hold_releases(false);
    proxy.restore().await;
    run.wait_acked(10).await;
    assert!(wedged(&run.board).is_none());
    stop_health.cancel();
    run.stop().await;
}
