//! The uplink over the real SQLite buffer (the agent's `Link`), to a real broker: a large
//! backlog drains with every seq and the newest fix first; a link cut with the in-flight
//! window full loses nothing and duplicates stay within the window.

mod support;

use gps_agent::buffer::store::{SharedStore, Store};
use gps_agent::config::BufferConfig;
use gps_agent::fix::{Fix, FixMode};
use gps_agent::health::metrics::Metrics;
use gps_agent::status::StatusBoard;
use gps_agent::uplink::backoff::{BackoffPolicy, Jitter};
use gps_agent::uplink::link::Link;
use gps_agent::uplink::publisher::{Publisher, PublisherSettings};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::broker::{Subscriber, TestBroker};
use support::proxy::FaultProxy;
use tokio_util::sync::CancellationToken;

/// The raw `[buffer]` section as an operator writes it, checked as the agent checks it.
fn checked(raw: &gps_agent::config::BufferConfig) -> gps_agent::config::BufferSettings {
    let mut problems = Vec::new();
    let settings = raw.check(&mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    settings
}

fn fix(i: u64) -> Fix {
    Fix {
        time_ms: 1_790_000_000_000 + i as i64 * 1000,
        lat: 48.1 + i as f64 * 1e-6,
        lon: 11.5,
        alt_m: Some(520.25),
        speed_mps: Some(12.5),
        course_deg: Some(181.0),
        hdop: Some(0.8),
        sats: Some(11),
        mode: FixMode::ThreeD,
        event: None,
    }
}

/// A buffer file holding `n` committed fixes, seqs 1..=n.
fn backlog(dir: &Path, n: u64) -> SharedStore {
    let cfg = BufferConfig {
        path: dir.join("buffer.db"),
        ..BufferConfig::default()
    };
    let mut store = Store::open(checked(&cfg), StatusBoard::default(), Instant::now());
    for i in 1..=n {
        store.append(&fix(i), Instant::now()).unwrap();
    }
    store.commit().unwrap();
    SharedStore::new(store)
}

/// The uplink's source over `store`, and the board its publisher reports on.
fn link_over(store: &SharedStore) -> (Link, StatusBoard) {
    let board = StatusBoard::default();
    let metrics = Arc::new(Metrics::new(board.clone()));
    (
        Link::new(store.clone(), metrics, board.clock().clone()),
        board,
    )
}

fn settings(url: &str, device: &str) -> PublisherSettings {
    let mut s = PublisherSettings::new(url, device).unwrap();
    s.client_id = support::unique("agent");
    s.puback_timeout = Duration::from_secs(3);
    s.backoff = BackoffPolicy {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        reset_after: Duration::from_secs(1),
    };
    s.shutdown_grace = Duration::from_secs(2);
    s
}

/// Receive fix messages until every seq of 1..=n was seen (or `within` passes): the seqs of
/// each message in arrival order, and how often each seq came.
async fn receive_all(
    sub: &mut Subscriber,
    n: u64,
    within: Duration,
) -> (Vec<Vec<u64>>, BTreeMap<u64, u32>) {
    let mut messages = Vec::new();
    let mut counts = BTreeMap::new();
    let _ = support::wait::poll_async(within, async || {
        if let Some(msg) = sub.next(Duration::from_millis(100)).await {
            let seqs = msg.fix_seqs();
            for s in &seqs {
                *counts.entry(*s).or_insert(0) += 1;
            }
            messages.push(seqs);
        }
        counts.len() as u64 >= n
    })
    .await;
    (messages, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_fix_backlog_drains_with_every_seq_and_the_newest_goes_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = backlog(dir.path(), 10_000);
    let broker = TestBroker::start();
    let device = support::unique("truck");
    let mut sub = Subscriber::start(&broker, &format!("fleet/{device}/fixes")).await;

    let (link, board) = link_over(&store);
    let publisher =
        Publisher::new(settings(&broker.url(), &device), link, board).with_jitter(Jitter::Off);
    let stop = CancellationToken::new();
    let task = tokio::spawn(publisher.run(stop.clone()));

    let (messages, counts) = receive_all(&mut sub, 10_000, Duration::from_secs(60)).await;
    assert_eq!(counts.len(), 10_000, "every seq from 1 to 10,000 arrives");
    assert_eq!(counts.keys().next(), Some(&1));
    assert_eq!(counts.keys().last(), Some(&10_000));
    assert_eq!(
        messages[0],
        vec![10_000],
        "live first: the newest fix leads the drain"
    );
    assert_eq!(
        messages[1].first(),
        Some(&1),
        "then the backlog, oldest first"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    let depth = store.lock().depth();
    assert_eq!(depth, 0, "everything acknowledged left the buffer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_fixes_overtake_a_draining_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let store = backlog(dir.path(), 3_000);
    let broker = TestBroker::start();
    let proxy = FaultProxy::start(broker.addr).await;
    // A slow link, so the backlog takes a while.
    proxy.delay(20);
    let device = support::unique("truck");
    let mut sub = Subscriber::start(&broker, &format!("fleet/{device}/fixes")).await;
    let (link, board) = link_over(&store);
    let publisher =
        Publisher::new(settings(&proxy.url(), &device), link, board).with_jitter(Jitter::Off);
    let stop = CancellationToken::new();
    let task = tokio::spawn(publisher.run(stop.clone()));

    // The vehicle keeps moving: a new fix every 100 ms while the backlog drains.
    let writer_store = store.clone();
    let writer = tokio::spawn(async move {
        for i in 3_001..=3_005u64 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut s = writer_store.lock();
            s.append(&fix(i), Instant::now()).unwrap();
            s.commit().unwrap();
            drop(s);
            writer_store.notify_committed();
        }
    });
    let (messages, counts) = receive_all(&mut sub, 3_005, Duration::from_secs(60)).await;
    writer.await.unwrap();
    assert_eq!(counts.len(), 3_005, "nothing lost");
    let position = |seq: u64| messages.iter().position(|m| m.contains(&seq)).unwrap();
    let backlog_done = position(3_000).max(position(2_999));
    for live in 3_001..=3_005u64 {
        assert!(
            position(live) < backlog_done,
            "live fix {live} (message {}) waited for the backlog (done at message {backlog_done})",
            position(live)
        );
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_with_the_window_full_loses_nothing_and_duplicates_stay_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let n = 5_000;
    let store = backlog(dir.path(), n);
    let broker = TestBroker::start();
    let proxy = FaultProxy::start(broker.addr).await;
    proxy.delay(50);
    let device = support::unique("truck");
    let mut sub = Subscriber::start(&broker, &format!("fleet/{device}/fixes")).await;
    let s = settings(&proxy.url(), &device);
    let (window, batch) = (usize::from(s.window), s.batch_max);
    let (link, board) = link_over(&store);
    let publisher = Publisher::new(s, link, board.clone()).with_jitter(Jitter::Off);
    let stop = CancellationToken::new();
    let task = tokio::spawn(publisher.run(stop.clone()));

    // Cut twice while the slowed drain has the window full, then let it finish.
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for round in 1..=2u64 {
        let (_, seen) = receive_all(&mut sub, round * 300, Duration::from_secs(20)).await;
        for (k, v) in seen {
            *counts.entry(k).or_insert(0) += v;
        }
        assert!((counts.len() as u64) < n, "the cut must land mid-drain");
        proxy.cut().await;
        support::wait_for("the publisher to see the cut", || {
            !board.read().mqtt.connected
        })
        .await;
        proxy.restore().await;
    }
    proxy.delay(0);
    let (_, rest) = receive_all(&mut sub, n - counts.len() as u64, Duration::from_secs(60)).await;
    for (k, v) in rest {
        *counts.entry(k).or_insert(0) += v;
    }
    let (_, late) = receive_all(&mut sub, n - counts.len() as u64, Duration::from_secs(30)).await;
    for (k, v) in late {
        *counts.entry(k).or_insert(0) += v;
    }
    assert_eq!(counts.len() as u64, n, "no fix lost across the cuts");
    assert!(
        board.read().mqtt.reconnects >= 2,
        "both cuts forced a reconnect"
    );
    let reconnects = board.read().mqtt.reconnects.max(1) as usize;
    let duplicates: usize = counts
        .values()
        .map(|c| (*c as usize).saturating_sub(1))
        .sum();
    assert!(
        duplicates <= reconnects * window * batch,
        "{duplicates} duplicate fixes over {reconnects} reconnects exceed the window ({window} x {batch})"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}

/// The uplink asks the store again only when the last batch may have left fixes behind: a
/// short batch says the store is drained, a full one or a fix sent ahead of a backlog does
/// not, and what the next ask finds agrees with what was said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_says_drained_only_when_its_batch_took_everything_pending() {
    use gps_agent::uplink::publisher::FixSource;
    let dir = tempfile::tempdir().unwrap();
    let store = backlog(dir.path(), 10);
    let (mut link, _board) = link_over(&store);
    link.stream();

    // A backlog: the newest fix goes ahead alone, and the rest still wait.
    let ahead = link.next_batch(4).await.unwrap();
    assert_eq!(ahead.iter().map(|f| f.0).collect::<Vec<_>>(), vec![10]);
    assert!(
        !link.drained(),
        "a fix sent ahead of a backlog leaves it behind"
    );

    // A full batch may leave more.
    let full = link.next_batch(4).await.unwrap();
    assert_eq!(
        full.iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(!link.drained(), "a full batch says nothing of what is left");

    // A short one took the rest: the next ask finds nothing, as it said.
    let short = link.next_batch(8).await.unwrap();
    assert_eq!(short.len(), 5);
    assert!(link.drained());
    assert!(link.next_batch(8).await.unwrap().is_empty());

    // A release makes fixes pending again: the next ask finds them.
    link.release(&[2, 3]).await.unwrap();
    let again = link.next_batch(8).await.unwrap();
    assert_eq!(again.iter().map(|f| f.0).collect::<Vec<_>>(), vec![2, 3]);
    assert!(link.drained());
}

/// Live first is for a backlog of more than one message. What fits in one batch goes in one,
/// the newest with it, oldest first: the fixes of one sync interval are not split into a
/// lone newest fix and the rest (two messages, two trips through the blocking pool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_fixes_that_fit_one_batch_go_in_one_with_the_newest() {
    use gps_agent::uplink::publisher::FixSource;
    let dir = tempfile::tempdir().unwrap();
    let store = backlog(dir.path(), 10);
    let (mut link, _board) = link_over(&store);
    link.stream();

    let all = link.next_batch(10).await.unwrap();
    assert_eq!(
        all.iter().map(|f| f.0).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>(),
        "ten pending, a batch of ten: one batch, oldest first, the newest in it"
    );
    assert!(!link.drained(), "a full batch says nothing of what is left");
    assert!(link.next_batch(10).await.unwrap().is_empty());
    assert!(link.drained());
}

/// The uplink's runtime thread learns the buffer's stream without the store's lock, which the
/// ingest thread holds across each sync's `fdatasync` (on a worn SD card, up to seconds): the
/// runtime also serves `/health` and the MQTT connection, and must not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uplink_reads_the_stream_while_a_sync_holds_the_store() {
    use gps_agent::uplink::publisher::FixSource;
    let dir = tempfile::tempdir().unwrap();
    let store = backlog(dir.path(), 3);
    let expected = store.lock().stream().unwrap();
    let (link, _board) = link_over(&store);

    let held = store.lock();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || tx.send(link.stream()).unwrap());
    let read = rx.recv_timeout(Duration::from_secs(5));
    drop(held);
    reader.join().unwrap();
    assert_eq!(
        read.expect("the stream is read while the store is held"),
        expected
    );
}
