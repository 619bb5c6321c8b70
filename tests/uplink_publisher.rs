//! The publisher loop end to end: an in-memory fix source (standing in for the SQLite
//! buffer), rumqttc through the fault proxy, a real rumqttd, a subscriber on the broker side.
//!
//! The invariant behind every test: a seq the source was told is acked really reached the
//! broker, and every stored seq eventually does.

mod support;

use gps_agent::fix::{Fix, FixMode};
use gps_agent::uplink::breaker::BreakerPolicy;
use gps_agent::uplink::payload::{encode, FixBatch};
use gps_agent::uplink::publisher::PublisherSettings;
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use support::broker::{Subscriber, TestBroker};
use support::front::{Front, Mode};
use support::proxy::FaultProxy;

use support::publisher::{fast_settings, start};
use support::source::{fix, Happened, MemSource};

/// Settings for tests: short timers, small batches, unique device and topics.
fn settings(url: &str, device: &str) -> PublisherSettings {
    let mut s = fast_settings(url, device, "test");
    s.batch_max = 7;
    s.window = 3;
    s
}

/// What the subscriber saw on the fixes topic (seq -> times) and the status payloads.
#[derive(Default)]
struct Seen {
    seqs: BTreeMap<u64, usize>,
    statuses: Vec<String>,
}

async fn drain(sub: &mut Subscriber, seen: &mut Seen, quiet: Duration) {
    while let Some(msg) = sub.next(quiet).await {
        let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        if msg.topic.ends_with("/status") {
            seen.statuses.push(v["state"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(v["v"], 1);
            assert_eq!(v["stream"], "mem-stream");
            for f in v["fixes"].as_array().unwrap() {
                *seen.seqs.entry(f["seq"].as_u64().unwrap()).or_insert(0) += 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stored_fix_is_published_and_acknowledged_and_the_status_says_online() {
    let broker = TestBroker::start();
    let device = support::unique("dev");
    let mut sub = Subscriber::start(&broker, &format!("test/{device}/#")).await;
    let source = MemSource::default();
    source.push((1..=60).map(fix));
    let mut run = start(settings(&broker.url(), &device), source);

    run.wait_acked(60).await;
    // More fixes while connected: woken by the source, not by polling.
    run.source.push((61..=80).map(fix));
    run.wait_acked(80).await;
    run.wait_status("connected", |s| s.connected && s.acked_seq == (80))
        .await;
    assert_eq!(run.status().breaker.as_str(), "closed");

    let mut seen = Seen::default();
    drain(&mut sub, &mut seen, Duration::from_millis(300)).await;
    assert_eq!(seen.statuses.first().map(String::as_str), Some("online"));
    let acked = run.source.acked();
    assert_eq!(acked, (1..=80).collect());
    assert!(acked.iter().all(|s| seen.seqs.contains_key(s)));
    let source = run.stop().await;
    assert_eq!(source.in_flight(), 0);
    assert_eq!(
        source.published().iter().sum::<usize>(),
        80,
        "no reconnect: each once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixes_in_flight_when_the_link_is_cut_are_released_and_delivered_after_reconnect() {
    let broker = TestBroker::start();
    let proxy = FaultProxy::start(broker.addr).await;
    let device = support::unique("dev");
    let mut sub = Subscriber::start(&broker, &format!("test/{device}/fixes")).await;
    let source = MemSource::default();
    source.push((1..=30).map(fix));
    let mut run = start(settings(&proxy.url(), &device), source);
    run.wait_acked(30).await;

    // Slow the link so messages are in flight, then cut it with fixes still coming in.
    proxy.delay(30);
    run.source.push((31..=200).map(fix));
    // Cut once the slowed stream is moving: some acked, most still to go.
    run.wait_acked(31).await;
    proxy.cut().await;
    // The failure is put on the board after the session handed its fixes back.
    run.wait_status("the cut recorded", |s| {
        !s.connected && s.last_error.is_some()
    })
    .await;
    let acked_at_cut = run.source.acked().len();
    assert!(
        (31..200).contains(&acked_at_cut),
        "the cut should land mid-stream ({acked_at_cut} acked)"
    );
    assert_eq!(run.source.in_flight(), 0, "everything unacked was released");
    let released: usize = run
        .source
        .journal()
        .iter()
        .map(|(_, h)| match h {
            Happened::Released(seqs) => seqs.len(),
            _ => 0,
        })
        .sum();
    assert!(released > 0, "the cut left fixes in flight to release");
    proxy.restore().await;

    run.wait_acked(200).await;
    run.wait_status("reconnected", |s| s.connected && s.reconnects >= 1)
        .await;
    let mut seen = Seen::default();
    drain(&mut sub, &mut seen, Duration::from_millis(300)).await;
    let missing: Vec<_> = (1..=200).filter(|s| !seen.seqs.contains_key(s)).collect();
    assert!(
        missing.is_empty(),
        "acked but never reached the broker: {missing:?}"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_link_is_dropped_after_the_puback_timeout_and_its_fixes_go_out_again() {
    let broker = TestBroker::start();
    let proxy = FaultProxy::start(broker.addr).await;
    let device = support::unique("dev");
    let mut s = settings(&proxy.url(), &device);
    s.puback_timeout = Duration::from_millis(500);
    let source = MemSource::default();
    let mut run = start(s, source);
    run.wait_status("connected", |s| s.connected).await;

    proxy.stall();
    run.source.push((1..=10).map(fix));
    run.wait_status("failed on the PUBACK timeout", |s| {
        s.last_error.as_ref().map(|e| e.code) == Some("MQTT_ACK_TIMEOUT")
    })
    .await;
    assert!(
        run.source.acked().is_empty(),
        "nothing acked over a stalled link"
    );
    proxy.restore().await;
    run.wait_acked(10).await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_port_is_probed_without_full_attempts_and_never_opens_the_breaker() {
    let broker = TestBroker::start();
    let proxy = FaultProxy::start(broker.addr).await;
    proxy.cut().await;
    let device = support::unique("dev");
    let mut s = settings(&proxy.url(), &device);
    s.breaker = BreakerPolicy {
        failure_threshold: NonZeroU32::new(3).unwrap(),
        open_for: Duration::from_secs(60),
        open_max: Duration::from_secs(60),
    };
    let source = MemSource::default();
    source.push((1..=5).map(fix));
    let mut run = start(s, source);

    run.wait_status("ten failed probes", |s| s.probes_failed >= 10)
        .await;
    {
        let st = run.status();
        assert_eq!(st.last_error.clone().unwrap().code, "MQTT_CONNECT");
        assert!(!st.connected);
        assert_eq!(st.path.as_str(), "down");
        assert_eq!(st.breaker.as_str(), "closed", "{st:?}");
        assert_eq!(st.connect_attempts, 1, "only probes while the port refuses");
    }
    proxy.restore().await;
    run.wait_acked(5).await;
    let st = run.status();
    assert!(st.connected && st.path.as_str() == "up", "{st:?}");
    assert_eq!(
        st.connect_attempts, 2,
        "one full attempt, after a probe got through"
    );
    assert_eq!(st.breaker.as_str(), "closed");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_refuses_every_connect_opens_the_breaker_and_a_good_trial_closes_it() {
    let broker = TestBroker::start();
    let front = Front::start(broker.addr).await;
    front.set(Mode::Refuse(3));
    let device = support::unique("dev");
    let mut s = settings(&front.url(), &device);
    s.breaker = BreakerPolicy {
        failure_threshold: NonZeroU32::new(3).unwrap(),
        open_for: Duration::from_millis(700),
        open_max: Duration::from_millis(1400),
    };
    let source = MemSource::default();
    source.push((1..=5).map(fix));
    let mut run = start(s, source);

    run.wait_status("open", |s| s.breaker.as_str() == "open")
        .await;
    {
        let st = run.status();
        assert!(!st.connected);
        assert_eq!(st.path.as_str(), "up", "the port answers: {st:?}");
        assert_eq!(st.connect_attempts, 3, "{st:?}");
        assert_eq!(st.last_error.clone().unwrap().code, "MQTT_UNAVAILABLE");
    }
    front.set(Mode::Balance);
    run.wait_acked(5).await;
    run.wait_status("closed", |s| s.breaker.as_str() == "closed" && s.connected)
        .await;
    run.stop().await;
}

/// A balancer whose broker is down takes each connection and closes it before CONNACK: not
/// a refusal. Attempts go on at the probes' pace, the breaker never hears of them, and the
/// first after the broker is back connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_closing_every_connection_never_opens_the_breaker() {
    let broker = TestBroker::start();
    let front = Front::start(broker.addr).await;
    front.backend_down();
    let device = support::unique("dev");
    let mut s = settings(&front.url(), &device);
    s.breaker = BreakerPolicy {
        failure_threshold: NonZeroU32::new(3).unwrap(),
        open_for: Duration::from_secs(3600),
        open_max: Duration::from_secs(3600),
    };
    s.backoff.initial = Duration::from_secs(3600);
    s.backoff.max = Duration::from_secs(3600);
    let source = MemSource::default();
    source.push((1..=5).map(fix));
    let mut run = start(s, source);

    run.wait_status("ten attempts", |s| s.connect_attempts >= 10)
        .await;
    {
        let st = run.status();
        assert_eq!(st.breaker.as_str(), "closed", "{st:?}");
        assert_eq!(st.path.as_str(), "up", "the balancer answers: {st:?}");
        assert_eq!(st.probes_ok + st.probes_failed, 0, "{st:?}");
        assert_eq!(st.last_error.clone().unwrap().code, "MQTT_CONNECT");
    }
    front.backend_up();
    run.wait_acked(5).await;
    assert_eq!(run.status().breaker.as_str(), "closed");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_says_offline_and_leaves_nothing_in_flight() {
    let broker = TestBroker::start();
    let device = support::unique("dev");
    let mut sub = Subscriber::start(&broker, &format!("test/{device}/status")).await;
    let source = MemSource::default();
    source.push((1..=20).map(fix));
    let mut s = settings(&broker.url(), &device);
    // Nothing is in flight at the stop, so the grace for PUBACKs is never waited: an hour
    // of it would outlast the harness's 10 s for the stop.
    s.shutdown_grace = Duration::from_secs(3600);
    let run = start(s, source);
    run.wait_acked(20).await;

    let source = run.stop().await;
    assert_eq!(source.in_flight(), 0);

    let mut seen = Seen::default();
    drain(&mut sub, &mut seen, Duration::from_millis(500)).await;
    assert_eq!(seen.statuses, ["online", "offline"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_will_says_offline_when_the_link_dies() {
    let broker = TestBroker::start();
    let proxy = FaultProxy::start(broker.addr).await;
    let device = support::unique("dev");
    let mut sub = Subscriber::start(&broker, &format!("test/{device}/status")).await;
    let mut run = start(settings(&proxy.url(), &device), MemSource::default());
    run.wait_status("connected", |s| s.connected).await;
    let mut seen = Seen::default();
    drain(&mut sub, &mut seen, Duration::from_millis(300)).await;
    assert_eq!(seen.statuses, ["online"]);

    proxy.cut().await;
    drain(&mut sub, &mut seen, Duration::from_millis(1000)).await;
    assert_eq!(seen.statuses, ["online", "offline"]);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fix_no_message_can_carry_is_dead_lettered_and_the_rest_still_go_out() {
    let broker = TestBroker::start();
    let device = support::unique("dev");
    let mut s = settings(&broker.url(), &device);
    let source = MemSource::default();
    let small = Fix {
        alt_m: None,
        speed_mps: None,
        course_deg: None,
        hdop: None,
        sats: None,
        mode: FixMode::TwoD,
        ..fix(1)
    };
    // Room for one small fix in the envelope, not for a full one.
    let one_small = [(1, small)];
    let batch = FixBatch {
        device: &device,
        stream: "mem-stream",
        fixes: &one_small,
    };
    s.max_message_bytes = encode(&batch, usize::MAX).messages[0].payload.len();
    source.push([small, fix(2), small, small]);
    let run = start(s, source);
    run.wait_acked(3).await;
    assert_eq!(run.source.acked(), [1, 3, 4].into_iter().collect());
    assert_eq!(run.source.dead(), vec![(2, "MQTT_TOO_LARGE")]);
    assert_eq!(
        run.source.published(),
        [1, 1, 1],
        "one batch went out as three messages, and metrics see three"
    );
    run.stop().await;
}

/// A broker that answers every CONNECT with CONNACK "not authorized" (return code 5), as
/// mosquitto does for a revoked device. rumqttd cannot: it closes without a CONNACK.
async fn refusing_broker() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let attempts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = attempts.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                if matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
                    let _ = s.write_all(&[0x20, 0x02, 0x00, 0x05]).await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            });
        }
    });
    (addr, attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_the_broker_refuses_is_reported_as_mqtt_auth_and_not_retried_in_a_tight_loop() {
    let (addr, attempts) = refusing_broker().await;
    let device = support::unique("dev");
    let mut s = settings(&format!("mqtt://{addr}"), &device);
    s.permanent_retry = Duration::from_secs(30);
    let source = MemSource::default();
    source.push((1..=3).map(fix));
    let mut run = start(s, source);

    let status = run.wait_error("MQTT_AUTH").await;
    // Backoff alone would retry within 50 ms; a permanent failure waits permanent_retry,
    // the very wait the publisher sleeps and reports.
    let retry_in = status
        .retry_at
        .map(|at| at.saturating_duration_since(std::time::Instant::now()));
    assert!(
        retry_in.is_some_and(|r| r > Duration::from_secs(25)),
        "{retry_in:?}"
    );
    assert_eq!(attempts.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert!(run.source.acked().is_empty());
    assert_eq!(run.source.in_flight(), 0);
    run.stop().await;
}

/// A fix taken now, by the host's clock (the board's clock in these tests).
fn live(i: u64) -> Fix {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    Fix {
        time_ms: now_ms,
        ..fix(i)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_fixes_linger_for_company_a_backlog_does_not_and_nothing_else_is_published() {
    let broker = TestBroker::start();
    let device = support::unique("dev");
    let mut sub = Subscriber::start(&broker, &format!("test/{device}/#")).await;
    let mut s = settings(&broker.url(), &device);
    s.linger = Duration::from_secs(2);
    let mut run = start(s, MemSource::default());
    run.wait_status("connected", |s| s.connected).await;

    // Five live fixes, stored one after the other: one message, once the first has waited
    // `linger` (when it goes is the linger's own test, `uplink::linger`).
    for i in 1..=5 {
        run.source.push([live(i)]);
    }
    run.wait_acked(5).await;
    assert_eq!(run.source.published(), [5], "one message for the five");

    // A backlog (fixes older than `linger`) goes at once, taking the lingering one along.
    run.source.push([live(6)]);
    run.source.push((7..=26).map(fix));
    run.wait_acked(26).await;
    assert_eq!(
        run.source.published()[1..].iter().sum::<usize>(),
        21,
        "{:?}",
        run.source.published()
    );
    let source = run.stop().await;
    assert_eq!(source.in_flight(), 0);

    // Over the uplink: fixes and the retained status (online, then offline at the stop),
    // nothing else.
    let mut topics = Vec::new();
    while let Some(msg) = sub.next(Duration::from_millis(300)).await {
        topics.push(msg.topic.rsplit('/').next().unwrap().to_owned());
    }
    let statuses = topics.iter().filter(|t| *t == "status").count();
    let fixes = topics.iter().filter(|t| *t == "fixes").count();
    assert_eq!(statuses, 2, "{topics:?}");
    assert_eq!(fixes + statuses, topics.len(), "{topics:?}");
    assert_eq!(fixes, source.published().len(), "{topics:?}");
}

/// The journal from the acknowledgement of `seq` on.
fn after_ack_of(journal: &[(std::time::Instant, Happened)], seq: u64) -> Vec<Happened> {
    let from = journal
        .iter()
        .position(|(_, h)| matches!(h, Happened::Acked(seqs) if seqs.contains(&seq)))
        .unwrap_or_else(|| panic!("seq {seq} never acked: {journal:?}"));
    journal[from..].iter().map(|(_, h)| h.clone()).collect()
}

/// Until the journal shows, after the acknowledgement of `seq`, the ask its PUBACK causes
/// (the publisher is then waiting for the source: a new fix is what it asks for next).
async fn settled_after(source: &MemSource, seq: u64) {
    support::wait_for("the ask after the PUBACK", || {
        let journal = source.journal();
        journal
            .iter()
            .any(|(_, h)| matches!(h, Happened::Acked(seqs) if seqs.contains(&seq)))
            && matches!(
                after_ack_of(&journal, seq).last(),
                Some(Happened::Asked { got: 0, .. })
            )
    })
    .await;
}

/// A batch shorter than asked for took everything pending: the publisher does not ask again
/// at once to learn that (each ask is a round trip through the blocking pool in the agent),
/// only when something may have changed: new fixes, or an ack that frees the window. Counted
/// in the source's journal: once the connection's first round is over, every ask follows a
/// fix stored or acknowledged since the ask before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_batch_is_not_followed_by_an_ask_that_can_only_find_nothing() {
    let broker = TestBroker::start();
    let device = support::unique("dev");
    let mut s = settings(&broker.url(), &device);
    s.linger = Duration::ZERO;
    // No polling in this test's time: every ask has a cause.
    s.idle_poll = Duration::from_secs(600);
    let run = start(s, MemSource::default());
    run.source.push((1..=3).map(fix));
    run.wait_acked(3).await;
    settled_after(&run.source, 3).await;
    run.source.push((4..=6).map(fix));
    run.wait_acked(6).await;
    settled_after(&run.source, 6).await;
    run.source.push([fix(7)]);
    run.wait_acked(7).await;
    settled_after(&run.source, 7).await;
    let source = run.stop().await;
    assert_eq!(source.in_flight(), 0);
    assert_eq!(source.published(), [3, 3, 1]);

    // After the first round: push, the ask that takes it (short), its PUBACK, the ask the
    // PUBACK causes (empty): nothing more.
    let asks = |got| Happened::Asked { got, drained: true };
    assert_eq!(
        after_ack_of(&source.journal(), 3),
        [
            Happened::Acked(vec![1, 2, 3]),
            asks(0),
            Happened::Pushed(vec![4, 5, 6]),
            asks(3),
            Happened::Acked(vec![4, 5, 6]),
            asks(0),
            Happened::Pushed(vec![7]),
            asks(1),
            Happened::Acked(vec![7]),
            asks(0),
        ]
    );
}

/// Fixes held for company are topped up when their pace says a full message may be
/// waiting, not every two seconds: at one fix a second, with three missing from a full
/// message, the source is asked again three seconds after the ask that took them (the old
/// beat asked after two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_fixes_are_topped_up_at_the_pace_they_come_not_on_a_fixed_beat() {
    let broker = TestBroker::start();
    let device = support::unique("dev");
    let mut s = settings(&broker.url(), &device);
    s.linger = Duration::from_secs(30);
    s.idle_poll = Duration::from_secs(600);
    let run = start(s, MemSource::default());
    // The connection's own asks (after CONNACK, and after the status message's PUBACK),
    // with nothing to find.
    support::wait_for("the connection's two asks", || {
        let asks = run.source.journal();
        asks.iter()
            .filter(|(_, h)| matches!(h, Happened::Asked { .. }))
            .count()
            == 2
    })
    .await;
    // Four live fixes a second apart by receiver time: four held, three missing for
    // batch_max (7).
    let now = live(0).time_ms;
    run.source.push((1..=4).map(|i| Fix {
        time_ms: now - (4 - i as i64) * 1000,
        ..fix(i)
    }));
    // The ask that took them, then the top-up ask after it.
    let took = |journal: &[(std::time::Instant, Happened)]| {
        journal
            .iter()
            .position(|(_, h)| matches!(h, Happened::Asked { got: 4, .. }))
    };
    support::wait_for("the ask that takes the four, and the next", || {
        let journal = run.source.journal();
        took(&journal).is_some_and(|i| {
            journal[i + 1..]
                .iter()
                .any(|(_, h)| matches!(h, Happened::Asked { .. }))
        })
    })
    .await;
    let journal = run.source.journal();
    let i = took(&journal).unwrap();
    let (next_at, _) = journal[i + 1..]
        .iter()
        .find(|(_, h)| matches!(h, Happened::Asked { .. }))
        .unwrap();
    let gap = *next_at - journal[i].0;
    assert!(
        gap >= Duration::from_millis(2_900),
        "asked again after {gap:?}, before the pace said so (3 s): {journal:?}"
    );
    assert!(run.source.published().is_empty(), "still lingering");
    let source = run.stop().await;
    assert_eq!(source.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_path_vanished_under_is_replaced_once_probes_see_it_back() {
    let broker = TestBroker::start();
    let proxy = FaultProxy::start(broker.addr).await;
    let device = support::unique("dev");
    let mut s = settings(&proxy.url(), &device);
    // Only the stall watch can end the stalled session within the test's waits.
    s.puback_timeout = Duration::from_secs(60);
    s.keep_alive = Duration::from_secs(60);
    let source = MemSource::default();
    source.push((1..=10).map(fix));
    let mut run = start(s, source);
    run.wait_acked(10).await;

    // The path vanishes without a reset (a tunnel): nothing acknowledged, new connects
    // refused; the old connection stays silent even after the path is back.
    proxy.blackhole().await;
    run.source.push((11..=30).map(fix));
    run.wait_status("the path seen down", |s| s.path.as_str() == "down")
        .await;
    assert!(run.status().connected, "the session itself does not know");
    proxy.restore().await;
    run.wait_acked(30).await;
    let st = run.wait_error("MQTT_STALLED").await;
    assert!(st.reconnects >= 1, "{st:?}");
    assert_eq!(st.breaker.as_str(), "closed", "{st:?}");
    run.stop().await;
}
