//! A broker that drops the link every time the same message reaches it (rumqttd with a small
//! `max_payload_size`): the agent learns the limit from the message dropped, dead-letters the
//! one fix that alone is too large as `MQTT_REJECTED` and delivers all the others.

mod support;

use gps_agent::fix::Fix;
use gps_agent::uplink::backoff::{BackoffPolicy, Jitter};
use gps_agent::uplink::breaker::BreakerPolicy;
use gps_agent::uplink::payload::{encode, FixBatch};
use gps_agent::uplink::publisher::{Publisher, PublisherSettings, REJECTED_AFTER_DISCONNECTS};
use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::time::Duration;
use support::broker::{BrokerOptions, Subscriber, TestBroker};
use support::source::{fix, MemSource};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// A fix without the optional fields: the smallest message.
fn small(i: u64) -> Fix {
    Fix {
        alt_m: None,
        speed_mps: None,
        course_deg: None,
        hdop: None,
        sats: None,
        ..fix(i)
    }
}

fn payload_len(device: &str, fixes: &[(u64, Fix)]) -> usize {
    let batch = FixBatch {
        device,
        stream: "mem-stream",
        fixes,
    };
    let encoded = encode(&batch, 1 << 20);
    assert_eq!(encoded.messages.len(), 1);
    encoded.messages[0].payload.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fix_the_broker_always_drops_the_link_over_is_dead_lettered_and_the_rest_arrive() {
    let device = support::unique("dev");
    // Seqs 1-4 and 6-8 are small fixes, seq 5 a full one. The broker takes one small fix
    // per message, not two, and not the full one.
    let one_small = payload_len(&device, &[(1, small(1))]);
    let two_small = payload_len(&device, &[(1, small(1)), (2, small(2))]);
    let one_full = payload_len(&device, &[(5, fix(5))]);
    let limit = (one_small + one_full.min(two_small)) / 2;
    assert!(one_small < limit && limit < one_full && limit < two_small);

    let broker = TestBroker::start_with(BrokerOptions {
        max_payload_size: limit,
        ..BrokerOptions::default()
    });
    let mut sub = Subscriber::start(&broker, &format!("test/{device}/fixes")).await;

    let source = MemSource::default();
    source.push((1..=4).map(small));
    source.push([fix(5)]);
    source.push((6..=8).map(small));

    let mut s = PublisherSettings::new(&broker.url(), &device).unwrap();
    s.client_id = support::unique("agent");
    s.topic_prefix = "test".into();
    s.batch_max = 4;
    s.window = 1;
    s.puback_timeout = Duration::from_secs(2);
    s.backoff = BackoffPolicy {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(100),
        reset_after: Duration::from_secs(10),
    };
    s.breaker = BreakerPolicy {
        failure_threshold: NonZeroU32::new(100).unwrap(),
        open_for: Duration::from_millis(500),
        open_max: Duration::from_millis(500),
    };
    s.idle_poll = Duration::from_millis(100);
    let board = gps_agent::status::StatusBoard::default();
    let publisher = Publisher::new(s, source.clone(), board.clone()).with_jitter(Jitter::Off);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(publisher.run(shutdown.clone()));

    let settled = support::wait::poll_async(Duration::from_secs(20), async || {
        source.acked_count() >= 7 && !source.dead().is_empty()
    })
    .await;
    assert!(
        settled.is_some(),
        "acked {:?}, dead {:?}, status {:?}",
        source.acked(),
        source.dead(),
        board.read().mqtt
    );
    shutdown.cancel();
    let source = timeout(Duration::from_secs(10), task)
        .await
        .expect("publisher did not stop")
        .unwrap();

    assert_eq!(source.dead(), vec![(5, "MQTT_REJECTED")]);
    let expected: BTreeSet<u64> = [1, 2, 3, 4, 6, 7, 8].into();
    assert_eq!(source.acked(), expected);
    assert_eq!(source.in_flight(), 0);

    let mut seen = BTreeSet::new();
    while let Some(msg) = sub.next(Duration::from_millis(300)).await {
        let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        for f in v["fixes"].as_array().unwrap() {
            seen.insert(f["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(seen, expected);
    // The 4-fix message dropped once: the cap halves below it (one small fix a message);
    // then seq 5 alone, larger than anything taken, dropped three times in a row.
    let mqtt = board.read().mqtt;
    assert!(
        mqtt.reconnects > u64::from(REJECTED_AFTER_DISCONNECTS),
        "{mqtt:?}"
    );
    let four_small = payload_len(&device, &(1..=4).map(|i| (i, small(i))).collect::<Vec<_>>());
    assert!(
        mqtt.message_limit.is_some_and(|cap| cap < four_small),
        "the learned cap is below the message dropped: {mqtt:?}"
    );
}
