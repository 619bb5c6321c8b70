//! `[mqtt] payload = "cbor"` against a real broker (rumqttd in-process): the subscriber gets
//! compact v2 messages with the lean header, and the decoder reads them back to exactly the buffered fixes
//! (within the payload's resolution), every seq once, and the buffer empties.

mod support;

use gps_agent::buffer::store::{SharedStore, Store};
use gps_agent::config::{BufferSettings, PayloadFormat};
use gps_agent::fix::{Event, Fix, FixMode};
use gps_agent::health::metrics::Metrics;
use gps_agent::status::StatusBoard;
use gps_agent::uplink::backoff::Jitter;
use gps_agent::uplink::cbor;
use gps_agent::uplink::link::Link;
use gps_agent::uplink::publisher::{Publisher, PublisherSettings};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::broker::{Subscriber, TestBroker};
use tokio_util::sync::CancellationToken;

fn fix(i: u64) -> Fix {
    Fix {
        time_ms: 1_790_000_000_000 + i as i64 * 7_000,
        lat: 48.137_154_321 + i as f64 * 3e-4,
        lon: 11.576_124_987 - i as f64 * 2e-4,
        alt_m: if i.is_multiple_of(5) {
            None
        } else {
            Some(520.25 + i as f64)
        },
        speed_mps: Some(12.5),
        course_deg: Some(181.0),
        hdop: Some(0.8),
        sats: Some(11),
        mode: FixMode::ThreeD,
        event: match i % 40 {
            10 => Some(Event::Stop),
            11 => Some(Event::Start),
            _ => None,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_receives_compact_messages_that_decode_to_the_buffered_fixes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BufferSettings {
        path: dir.path().join("buffer.db"),
        ..BufferSettings::default()
    };
    let board = StatusBoard::default();
    let mut store = Store::open(cfg, board.clone(), Instant::now());
    let n = 300u64;
    for i in 1..=n {
        store.append(&fix(i), Instant::now()).unwrap();
    }
    store.commit().unwrap();
    let store = SharedStore::new(store);

    let broker = TestBroker::start();
    let device = support::unique("truck");
    let mut sub = Subscriber::start(&broker, &format!("fleet/{device}/fixes")).await;
    let mut s = PublisherSettings::new(&broker.url(), &device).unwrap();
    s.client_id = support::unique("agent");
    s.payload = PayloadFormat::Cbor;
    // Small messages, so the batches of 50 split by size too.
    s.max_message_bytes = 1024;
    let metrics = Arc::new(Metrics::new(board.clone()));
    let link = Link::new(store.clone(), metrics, board.clock().clone());
    let publisher = Publisher::new(s, link, board).with_jitter(Jitter::Off);
    let stop = CancellationToken::new();
    let task = tokio::spawn(publisher.run(stop.clone()));

    let mut got: BTreeMap<u64, Fix> = BTreeMap::new();
    let mut messages = 0;
    let _ = support::wait::poll_async(Duration::from_secs(60), async || {
        let Some(msg) = sub.next(Duration::from_millis(100)).await else {
            return false;
        };
        assert!(
            (0xa0..=0xbf).contains(&msg.payload[0]),
            "a CBOR map, not JSON"
        );
        assert!(msg.payload.len() <= 1024);
        let decoded = cbor::decode(&msg.payload).unwrap();
        // The lean header: the topic names the device; the stream id goes as its 16 bytes.
        assert_eq!(decoded.device, None);
        assert_eq!(decoded.stream, store.lock().stream().unwrap());
        for (seq, f) in decoded.fixes {
            got.insert(seq, f);
        }
        messages += 1;
        got.len() as u64 >= n
    })
    .await;
    assert_eq!(got.len() as u64, n, "every seq arrives");
    assert!(messages > 6, "{messages} messages");
    for (seq, back) in &got {
        let sent = fix(*seq);
        assert_eq!(back.time_ms, sent.time_ms);
        assert!((back.lat - sent.lat).abs() <= 0.5e-7);
        assert!((back.lon - sent.lon).abs() <= 0.5e-7);
        assert_eq!(back.alt_m.is_some(), sent.alt_m.is_some());
        if let (Some(a), Some(b)) = (back.alt_m, sent.alt_m) {
            assert!((a - b).abs() <= 0.05 + 1e-9);
        }
        assert_eq!(back.speed_mps, sent.speed_mps);
        assert_eq!(back.event, sent.event, "seq {seq}");
        assert_eq!((back.sats, back.mode), (sent.sats, sent.mode));
    }
    // The buffer empties as the PUBACKs arrive.
    support::wait::until_async("an empty buffer", Duration::from_secs(30), async || {
        store.lock().depth() == 0
    })
    .await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}
