//! The four kinds of broker trouble that left the uplink of main 3007257 without a single
//! attempt for good once its breaker had opened (issue 20), through the real publisher, with
//! jitter on as in the field: a port that accepts and closes, CONNACK "server unavailable", a
//! broker that never answers CONNECT, and one that gives CONNACK but never a PUBACK. Each
//! lasts until the breaker has let at least two trials through (the stall came at the first),
//! then the broker works: every fix must arrive, and while the trouble lasts `/health` must
//! show the breaker as the state machine has it (it said "closed" after the timeouts).

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
