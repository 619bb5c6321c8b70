//! `AckWindow` against a real broker: rumqttc publishing through the fault proxy to an
//! in-process rumqttd, a subscriber on the broker side seeing what really arrived.
//!
//! What must hold: a seq is acknowledged only when the broker acknowledged the message that
//! carried it; after a broken link, exactly the unacknowledged seqs are released; and with a
//! fresh client per connection nothing is replayed behind our back.

mod support;

use gps_agent::fix::{Fix, FixMode};
use gps_agent::uplink::acks::AckWindow;
use gps_agent::uplink::payload::{encode, FixBatch, Topics};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;
use support::broker::{Subscriber, TestBroker};
use support::proxy::FaultProxy;
use tokio::time::{timeout, Instant};

const STEP: Duration = Duration::from_secs(5);

fn fix(seq: u64) -> Fix {
    Fix {
        time_ms: 1_700_000_000_000 + seq as i64 * 1000,
        lat: 52.0 + seq as f64 * 1e-5,
        lon: 13.0,
        alt_m: Some(40.5),
        speed_mps: Some(3.2),
        course_deg: None,
        hdop: Some(0.9),
        sats: Some(8),
        mode: FixMode::ThreeD,
        event: None,
    }
}

/// `count` batches of 1 to 3 consecutive seqs, starting at `first`.
fn batches(first: u64, count: usize) -> Vec<Vec<u64>> {
    let mut next = first;
    (0..count)
        .map(|i| {
            let len = 1 + (i as u64 % 3);
            let b: Vec<u64> = (next..next + len).collect();
            next += len;
            b
        })
        .collect()
}

/// One rumqttc connection with its AckWindow, as the publisher will drive it.
struct Link {
    client: AsyncClient,
    eventloop: EventLoop,
    window: AckWindow,
    topics: Topics,
    device: String,
    /// Batches acknowledged, in PUBACK order.
    acked: Vec<Vec<u64>>,
    /// `Outgoing::Publish` events seen.
    on_wire: usize,
}

impl Link {
    async fn connect(addr: SocketAddr, device: &str, window: usize) -> Link {
        let mut options =
            MqttOptions::new(support::unique("pub"), addr.ip().to_string(), addr.port());
        options.set_clean_session(true);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_inflight(u16::try_from(window).unwrap());
        options.set_max_packet_size(1024 * 1024, 1024 * 1024);
        let (client, eventloop) = AsyncClient::new(options, window);
        let mut link = Link {
            client,
            eventloop,
            window: AckWindow::new(window, Duration::from_millis(800)),
            topics: Topics::new("test", device),
            device: device.to_owned(),
            acked: Vec::new(),
            on_wire: 0,
        };
        let connack = timeout(STEP, link.eventloop.poll()).await.unwrap().unwrap();
        assert!(
            matches!(connack, Event::Incoming(Incoming::ConnAck(_))),
            "{connack:?}"
        );
        link
    }

    /// Encode `seqs` as one message, hand it to rumqttc and record it in the window.
    fn publish(&mut self, seqs: &[u64]) {
        let fixes: Vec<(u64, Fix)> = seqs.iter().map(|s| (*s, fix(*s))).collect();
        let enc = encode(
            &FixBatch {
                device: &self.device,
                stream: "stream-1",
                fixes: &fixes,
            },
            64 * 1024,
        );
        assert_eq!(enc.messages.len(), 1);
        let message = enc.messages.into_iter().next().unwrap();
        assert!(self.window.has_room());
        self.client
            .try_publish(&self.topics.fixes, QoS::AtLeastOnce, false, message.payload)
            .unwrap();
        self.window.submit(message.seqs, Instant::now()).unwrap();
    }

    /// Poll rumqttc once and feed the window.
    async fn step(&mut self) -> Result<(), rumqttc::ConnectionError> {
        let event = timeout(STEP, self.eventloop.poll())
            .await
            .expect("event loop silent for 5 s")?;
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                self.window
                    .on_outgoing_publish(pkid, Instant::now())
                    .unwrap();
                self.on_wire += 1;
            }
            Event::Incoming(Incoming::PubAck(ack)) => {
                let seqs = self
                    .window
                    .on_puback(ack.pkid)
                    .expect("PUBACK for a packet the window does not know");
                self.acked.push(seqs);
            }
            _ => {}
        }
        Ok(())
    }

    /// Publish every batch with at most `window` in flight; return once all are acked.
    async fn publish_all(&mut self, batches: &[Vec<u64>]) {
        let mut rest = batches.iter();
        let target = self.acked.len() + batches.len();
        // A hang guard around driving rumqttc (no poll interval: every event is stepped).
        let all_acked = timeout(Duration::from_secs(20), async {
            while self.acked.len() < target {
                while self.window.has_room() {
                    match rest.next() {
                        Some(b) => self.publish(b),
                        None => break,
                    }
                }
                self.step().await.unwrap();
            }
        })
        .await;
        assert!(all_acked.is_ok(), "not all batches acked within 20 s");
    }
}

/// Seqs the subscriber saw, with how often, until `want` distinct seqs arrived and then
/// `quiet` passed without any message (to catch late duplicates).
async fn collect_seqs(
    sub: &mut Subscriber,
    want: usize,
    quiet: Duration,
) -> (BTreeMap<u64, usize>, Vec<Vec<u64>>) {
    let mut seen = BTreeMap::new();
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let wait = if seen.len() >= want {
            quiet
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        let Some(msg) = sub.next(wait).await else {
            break;
        };
        let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        let seqs: Vec<u64> = v["fixes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["seq"].as_u64().unwrap())
            .collect();
        for s in &seqs {
            *seen.entry(*s).or_insert(0) += 1;
        }
        messages.push(seqs);
    }
    (seen, messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_puback_acknowledges_the_batch_the_broker_received_in_publish_order() {
    let broker = TestBroker::start();
    let proxy = FaultProxy::start(broker.addr).await;
    let device = support::unique("dev");
    let mut sub = Subscriber::start(&broker, &format!("test/{device}/fixes")).await;

    let all = batches(1, 40);
    let mut link = Link::connect(proxy.addr, &device, 4).await;
    link.publish_all(&all).await;

    // The broker acks in order, so a correct mapping gives back the batches in publish order;
    // any off-by-one in the packet id bookkeeping shows up here.
    assert_eq!(link.acked, all);
    assert!(link.window.is_empty());

    let total: usize = all.iter().map(Vec::len).sum();
    let (seen, messages) = collect_seqs(&mut sub, total, Duration::from_millis(300)).await;
    assert_eq!(
        messages, all,
        "the broker forwarded exactly the acked batches"
    );
    assert!(seen.values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_a_stall_and_a_cut_only_what_the_broker_acked_is_acked_and_the_rest_released() {
    let broker = TestBroker::start();
    let proxy = FaultProxy::start(broker.addr).await;
    let device = support::unique("dev");
    let mut sub = Subscriber::start(&broker, &format!("test/{device}/fixes")).await;

    let all = batches(1, 13);
    let (before, during) = all.split_at(10);

    let mut link = Link::connect(proxy.addr, &device, 4).await;
    link.publish_all(before).await;
    assert_eq!(link.acked, before);

    // The link hangs: rumqttc writes the next three messages, none reaches the broker.
    proxy.stall();
    for b in during {
        link.publish(b);
    }
    let on_wire_before = link.on_wire;
    while link.on_wire < on_wire_before + during.len() {
        link.step().await.unwrap();
    }
    // The link breaks for good. Every event up to the disconnect is stepped, so a wrongly
    // routed PUBACK that came while stalled is counted below (an event boundary, not a
    // quiet spell).
    proxy.cut().await;
    let err = loop {
        if let Err(e) = link.step().await {
            break e;
        }
    };
    assert_eq!(
        link.acked.len(),
        before.len(),
        "nothing acked while stalled"
    );
    let released = link.window.on_disconnect();
    let expected: Vec<u64> = during.iter().flatten().copied().collect();
    assert_eq!(
        released, expected,
        "released exactly the unacked seqs ({err})"
    );
    let acked: BTreeSet<u64> = link.acked.iter().flatten().copied().collect();
    assert!(released.iter().all(|s| !acked.contains(s)));

    // Back with a fresh client: the released fixes go out again, once.
    drop(link);
    proxy.restore().await;
    let mut link = Link::connect(proxy.addr, &device, 4).await;
    link.publish_all(std::slice::from_ref(&released)).await;
    assert_eq!(link.acked, vec![released]);

    let total: usize = all.iter().map(Vec::len).sum();
    let (seen, _) = collect_seqs(&mut sub, total, Duration::from_millis(500)).await;
    assert_eq!(seen.len(), total, "every seq reached the broker: {seen:?}");
    let dupes: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "replayed behind our back: {dupes:?}");
    assert!(proxy.connections() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_link_is_caught_by_the_puback_timeout_before_keepalive_notices() {
    let broker = TestBroker::start();
    let proxy = FaultProxy::start(broker.addr).await;
    let device = support::unique("dev");

    let mut link = Link::connect(proxy.addr, &device, 4).await;
    link.publish_all(&batches(1, 2)).await;

    proxy.stall();
    let started = Instant::now();
    link.publish(&[100, 101]);
    let overdue = loop {
        if let Some(e) = link.window.overdue(Instant::now()) {
            break e;
        }
        let until = link.window.next_deadline().unwrap();
        // Sleep until the deadline while still driving rumqttc (it must not ack anything).
        if let Ok(step) =
            timeout(until.saturating_duration_since(Instant::now()), link.step()).await
        {
            step.unwrap();
        }
    };
    eprintln!("caught {:?} after the publish", started.elapsed());
    // Before keepalive: every step until now succeeded (keepalive noticing is an error
    // there), and it is the window's PUBACK timeout that fired.
    assert!(
        matches!(
            overdue,
            gps_agent::uplink::error::UplinkError::AckTimeout { .. }
        ),
        "{overdue:?}"
    );
    // Not early: by the window's own clock, its deadline is the 800 ms after the publish,
    // and nothing is overdue before it.
    let due = link.window.next_deadline().unwrap();
    assert!(due >= started + Duration::from_millis(800));
    assert!(link
        .window
        .overdue(due - Duration::from_millis(1))
        .is_none());
    assert_eq!(link.window.on_disconnect(), vec![100, 101]);
}
