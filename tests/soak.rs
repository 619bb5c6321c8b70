//! Soak: the real daemon fed a 10 Hz drive (with a tunnel and damaged lines) on a
//! pseudo-terminal, while a seeded chaos schedule cuts, stalls and slows its link to rumqttd.
//! Afterwards every accepted fix has arrived, duplicates stay within one in-flight window per
//! reconnect, `/health` answered throughout, the agent's memory stayed bounded, and SIGTERM
//! leaves an empty buffer.
//!
//! `GPS_AGENT_SOAK_SECS` sets the length: 30 s by default (the version `cargo test` and CI
//! run); for a long soak, e.g. an hour:
//! `GPS_AGENT_SOAK_SECS=3600 cargo test --release --test soak -- --nocapture`.

mod support;

use gps_agent::sim::DriveSpec;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::agent::{drive_log, expected_fixes, Agent};
use support::broker::{Subscriber, TestBroker};
use support::proxy::FaultProxy;
use support::pty::{feed_realtime, receiver_at};

/// xorshift64*: a reproducible chaos schedule without another crate.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Milliseconds in `lo..hi`.
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

const INFLIGHT: u64 = 10;
const BATCH_MAX: u64 = 50;
/// Far above what the agent needs (about 10 MiB): only a leak crosses it.
const RSS_CEILING_KIB: u64 = 128 * 1024;

#[derive(Debug, Default)]
struct Chaos {
    cuts: u32,
    stalls: u32,
    delays: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drive_through_a_flapping_link_loses_nothing_and_stays_bounded() {
    let secs: u32 = std::env::var("GPS_AGENT_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
        .max(10);
    let dir = tempfile::tempdir().unwrap();
    let spec = DriveSpec {
        epochs: secs * 10,
        rate_hz: 10,
        tunnel: Some((secs * 10 / 3, 50)),
        corrupt_every: Some(97),
        seed: 7,
        ..DriveSpec::default()
    };
    // The same drive as a log, for `parse` to say which fixes the agent must deliver.
    let expected = expected_fixes(&drive_log(dir.path(), spec.clone()));
    assert!(expected > u64::from(secs) * 8, "{expected}");

    let broker = TestBroker::start();
    let proxy = FaultProxy::start(broker.addr).await;
    let device = support::unique("truck");
    let mut sub = Subscriber::start(&broker, &format!("fleet/{device}/fixes")).await;
    // Every copy of every seq that reaches the broker.
    let received: Arc<Mutex<BTreeMap<u64, u32>>> = Arc::default();
    let collector = tokio::spawn({
        let received = received.clone();
        async move {
            while let Some(msg) = sub.next(Duration::from_secs(3600)).await {
                let mut r = received.lock().unwrap();
                for seq in msg.fix_seqs() {
                    *r.entry(seq).or_insert(0) += 1;
                }
            }
        }
    });

    let link = dir.path().join("gps0");
    let receiver = receiver_at(&link);
    let gnss = format!("[gnss]\nsource = \"serial\"\npath = \"{}\"", link.display());
    let mqtt = format!(
        "url = \"{}\"\ninflight = {INFLIGHT}\nbatch_max = {BATCH_MAX}\npuback_timeout_s = 2\n\
         keep_alive_s = 5\nbackoff_initial_s = 0.1\nbackoff_max_s = 1\nopen_for_s = 2\n",
        proxy.url()
    );
    let agent = Agent::start_with_mqtt(dir.path(), &device, &gnss, &mqtt, &[]);

    let feeder = feed_realtime(spec, receiver);

    // The chaos schedule, for the length of the drive; health and memory sampled meanwhile.
    let mut prng = Prng(0x50AC);
    let mut chaos = Chaos::default();
    let mut rss = Vec::new();
    let end = Instant::now() + Duration::from_secs(u64::from(secs));
    while Instant::now() < end {
        let (calm, fault) = (prng.ms(1000, 4000), prng.ms(500, 3500));
        tokio::time::sleep(calm).await;
        match prng.next() % 3 {
            0 => {
                chaos.cuts += 1;
                proxy.cut().await;
                tokio::time::sleep(fault).await;
                proxy.restore().await;
            }
            1 => {
                // A link that hangs, then is dropped (as a carrier NAT drops it): the stall
                // swallows bytes, so the connection must not resume afterwards.
                chaos.stalls += 1;
                proxy.stall();
                tokio::time::sleep(fault + Duration::from_secs(1)).await;
                proxy.cut().await;
                proxy.restore().await;
            }
            _ => {
                chaos.delays += 1;
                proxy.delay(prng.next() % 300);
                tokio::time::sleep(fault).await;
                proxy.delay(0);
            }
        }
        // The endpoint answers whatever the link does (a stuck one panics the read).
        let (_, h) = tokio::task::block_in_place(|| agent.get("/health"));
        assert!(h["status"].is_string(), "{h}");
        rss.push(agent.rss_kib());
    }
    proxy.restore().await;
    proxy.delay(0);
    let (written, receiver) = feeder.join().unwrap();
    assert_eq!(written, secs * 10, "the whole drive was fed");

    // Everything arrives once the link holds.
    let deadline = Instant::now() + Duration::from_secs(60);
    while (received.lock().unwrap().len() as u64) < expected {
        assert!(
            Instant::now() < deadline,
            "{} of {expected} seqs arrived; health: {}",
            received.lock().unwrap().len(),
            agent.get("/health").1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, h) = tokio::task::block_in_place(|| agent.get("/health"));
    let reconnects = h["components"]["mqtt"]["reconnects"].as_u64().unwrap();
    rss.push(agent.rss_kib());
    drop(receiver);
    let (exit, db) = agent.terminate();
    collector.abort();

    let received = received.lock().unwrap();
    let seqs: Vec<u64> = received.keys().copied().collect();
    assert_eq!(
        seqs,
        (1..=expected).collect::<Vec<u64>>(),
        "every seq, none extra"
    );
    let duplicates: u64 = received.values().map(|&n| u64::from(n - 1)).sum();
    println!(
        "soak: {secs} s, {} epochs at 10 Hz, {expected} fixes delivered, {duplicates} duplicates, \
         {reconnects} reconnects; chaos {chaos:?}; RSS KiB first {} max {} last {}",
        secs * 10,
        rss.first().unwrap_or(&0),
        rss.iter().max().unwrap_or(&0),
        rss.last().unwrap_or(&0),
    );
    assert!(
        chaos.cuts + chaos.stalls > 0 && reconnects > 0,
        "the link really flapped: {chaos:?}, {reconnects} reconnects"
    );
    assert!(
        duplicates <= (reconnects + 1) * INFLIGHT * BATCH_MAX,
        "{duplicates} duplicates over {reconnects} reconnects"
    );
    assert!(
        rss.iter().all(|&kib| kib > 0 && kib < RSS_CEILING_KIB),
        "RSS samples (KiB): {rss:?}"
    );
    assert_eq!(exit, 0);
    let depth = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM fixes", [], |r| r.get::<_, i64>(0))
        .unwrap();
    assert_eq!(depth, 0, "everything acknowledged left the buffer");
}
