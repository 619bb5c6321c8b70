//! A real clustered broker (issue 20): the real daemon, fed a 1 Hz drive on a pty with
//! `linger_s = 0`, publishes to one node of a three-node RabbitMQ cluster (Debian's
//! rabbitmq-server with its MQTT plugin) and knows the other two as `fallback_urls`. Mid-drive
//! the node it publishes to loses its broker for 45 s (`rabbitmqctl stop_app`, then
//! `start_app`). A persistent subscriber (clean session off, QoS 1, its queue on a node that
//! stays up) must get every fix, and never wait more than 8 s for the next.
//!
//! `#[ignore]`d: `.ci/cluster.sh` starts the cluster, runs this with `--ignored` and
//! `GPS_AGENT_RABBITMQ=1` (a missing cluster then fails instead of skipping) and tears the
//! cluster down. It prints the figures of the README's "cluster node lost" row.

mod support;

use gps_agent::sim::DriveSpec;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::agent::{drive_log, expected_fixes, Agent};
use support::broker::Subscriber;
use support::pty::{feed_realtime, receiver_at};
use support::rabbitmq::Cluster;

/// The drive, one epoch a second: room for a warm-up, the outage and a while after it.
const DRIVE_EPOCHS: u32 = 100;
/// How long the node in use has no broker (from `stop_app` to `start_app`).
const NODE_DOWN: Duration = Duration::from_secs(45);
/// The bound on the longest wait for the next fix at the back end.
const MAX_SILENCE: Duration = Duration::from_secs(8);
/// Distinct fixes the subscriber has before the node stops: the agent publishes steadily.
const WARM_UP_SEQS: usize = 10;
/// Hang guards for conditions that take seconds when all is well.
const WARM_UP_WITHIN: Duration = Duration::from_secs(60);
const DELIVERED_WITHIN: Duration = Duration::from_secs(60);

/// Every fixes message as the subscriber received it: when, and the seqs it carried.
type Arrivals = Arc<Mutex<Vec<(Instant, Vec<u64>)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a RabbitMQ cluster: run .ci/cluster.sh"]
async fn losing_the_node_in_use_for_45_s_loses_no_fix_and_leaves_no_silence_over_8_s() {
    let Some(cluster) = Cluster::from_env() else {
        return;
    };
    assert_eq!(cluster.nodes.len(), 3, "{:?}", cluster.nodes);
    let dir = tempfile::tempdir().unwrap();
    let spec = DriveSpec {
        epochs: DRIVE_EPOCHS,
        rate_hz: 1,
        seed: 20,
        ..DriveSpec::default()
    };
    let expected = expected_fixes(&drive_log(dir.path(), spec.clone()));
    assert!(expected > 90, "{expected} fixes in the drive");

    let device = support::unique("truck");
    // The back end: on the third node, which never stops; its session's queue lives there.
    let mut sub = Subscriber::start_persistent(
        &cluster.nodes[2].for_subscriber(),
        &format!("fleet/{device}/fixes"),
        &support::unique("backend"),
    )
    .await;
    let arrivals: Arrivals = Arc::default();
    let collector = tokio::spawn({
        let arrivals = arrivals.clone();
        async move {
            while let Some(msg) = sub.next(Duration::from_secs(3600)).await {
                arrivals.lock().unwrap().push((msg.at, msg.fix_seqs()));
            }
        }
    });

    let link = dir.path().join("gps0");
    let receiver = receiver_at(&link);
    let gnss = format!("[gnss]\nsource = \"serial\"\npath = \"{}\"", link.display());
    let mqtt = format!(
        "url = \"{}\"\nfallback_urls = [\"{}\", \"{}\"]\nlinger_s = 0\n",
        cluster.nodes[0].url(),
        cluster.nodes[1].url(),
        cluster.nodes[2].url()
    );
    let agent = Agent::start_with_mqtt(dir.path(), &device, &gnss, &mqtt, &[]);
    let feeder = feed_realtime(spec, receiver);

    wait_for_seqs(&arrivals, WARM_UP_SEQS, WARM_UP_WITHIN, || {
        agent.get("/health").1
    })
    .await;
    let before = health_mqtt(&agent);
    let in_use = endpoint_node(&cluster, &before);
    assert_eq!(in_use, 0, "the agent starts on `url`: {before}");

    let stopped_at = Instant::now();
    tokio::task::block_in_place(|| cluster.stop_app(in_use));
    let stop_took = stopped_at.elapsed();
    tokio::time::sleep_until((stopped_at + NODE_DOWN).into()).await;
    let during = health_mqtt(&agent);
    let start_at = Instant::now();
    tokio::task::block_in_place(|| cluster.start_app(in_use));
    let start_took = start_at.elapsed();

    let (written, receiver) = feeder.join().unwrap();
    assert_eq!(written, DRIVE_EPOCHS, "the whole drive was fed");
    wait_for_seqs(&arrivals, expected as usize, DELIVERED_WITHIN, || {
        agent.get("/health").1
    })
    .await;
    let after = health_mqtt(&agent);
    drop(receiver);
    let (exit, _) = agent.terminate();
    collector.abort();

    let arrivals = arrivals.lock().unwrap();
    let mut copies: BTreeMap<u64, u64> = BTreeMap::new();
    for seq in arrivals.iter().flat_map(|(_, seqs)| seqs) {
        *copies.entry(*seq).or_insert(0) += 1;
    }
    let duplicates: u64 = copies.values().map(|n| n - 1).sum();
    let lost = (1..=expected).filter(|s| !copies.contains_key(s)).count();
    let (silence, silence_from) = longest_silence(&arrivals, None);
    let node_back = start_at + start_took;
    let (blind, blind_from) = longest_silence(&arrivals, Some((stopped_at, node_back)));
    let attempts = count(&during, "connect_attempts") - count(&before, "connect_attempts");
    let minutes = NODE_DOWN.as_secs_f64() / 60.0;
    println!(
        "cluster node lost: {} without its broker {:.1} s (stop_app took {:.1} s, start_app \
         {:.1} s); {expected} fixes at 1 Hz, linger_s 0; blind {:.2} s (the longest silence \
         while the node was down, from {:+.2} s after stop_app); longest silence of the \
         drive {:.2} s (at {:+.1} s); {attempts} connect attempts while it was down ({:.1} a \
         minute), {} reconnects in all; lost {lost}, {duplicates} duplicates; endpoint {} -> {} \
         -> {}",
        cluster.nodes[in_use].name,
        (node_back - stopped_at).as_secs_f64(),
        stop_took.as_secs_f64(),
        start_took.as_secs_f64(),
        blind.as_secs_f64(),
        since(blind_from, stopped_at),
        silence.as_secs_f64(),
        since(silence_from, stopped_at),
        attempts as f64 / minutes,
        count(&after, "reconnects"),
        before["endpoint"],
        during["endpoint"],
        after["endpoint"],
    );

    assert_eq!(exit, 0, "clean stop");
    assert_ne!(
        endpoint_node(&cluster, &during),
        in_use,
        "while its node was down the agent was on another: {during}"
    );
    assert_eq!(
        copies.keys().copied().collect::<Vec<u64>>(),
        (1..=expected).collect::<Vec<u64>>(),
        "every seq arrived, none extra"
    );
    assert!(
        silence <= MAX_SILENCE,
        "the back end heard nothing for {silence:?} (bound {MAX_SILENCE:?}); health while the \
         node was down: {during}"
    );
}

/// Waits until `n` distinct seqs have arrived; `health` says why not when `within` passes.
async fn wait_for_seqs(
    arrivals: &Arrivals,
    n: usize,
    within: Duration,
    health: impl Fn() -> serde_json::Value,
) {
    let deadline = Instant::now() + within;
    loop {
        let distinct = {
            let a = arrivals.lock().unwrap();
            let mut seqs: Vec<u64> = a.iter().flat_map(|(_, s)| s.iter().copied()).collect();
            seqs.sort_unstable();
            seqs.dedup();
            seqs.len()
        };
        if distinct >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{distinct} of {n} seqs arrived within {within:?}; health: {}",
            tokio::task::block_in_place(&health)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `/health` `components.mqtt`.
fn health_mqtt(agent: &Agent) -> serde_json::Value {
    let (_, h) = tokio::task::block_in_place(|| agent.get("/health"));
    h["components"]["mqtt"].clone()
}

/// The node whose URL `/health` names as the endpoint in use.
fn endpoint_node(cluster: &Cluster, mqtt: &serde_json::Value) -> usize {
    let endpoint = mqtt["endpoint"]
        .as_str()
        .unwrap_or_else(|| panic!("no endpoint in /health: {mqtt}"));
    cluster
        .node_at(endpoint)
        .unwrap_or_else(|| panic!("endpoint {endpoint} is none of {:?}", cluster.nodes))
}

fn count(mqtt: &serde_json::Value, key: &str) -> u64 {
    mqtt[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in /health: {mqtt}"))
}

/// The longest time between two consecutive arrivals, and when it began; with `during`, only
/// the silences that overlap it.
fn longest_silence(
    arrivals: &[(Instant, Vec<u64>)],
    during: Option<(Instant, Instant)>,
) -> (Duration, Option<Instant>) {
    arrivals
        .windows(2)
        .filter(|w| during.is_none_or(|(from, to)| w[0].0 <= to && w[1].0 >= from))
        .map(|w| (w[1].0.duration_since(w[0].0), Some(w[0].0)))
        .max_by_key(|(gap, _)| *gap)
        .unwrap_or((Duration::ZERO, None))
}

/// Seconds from `origin` to `t` (negative before it; NaN without `t`).
fn since(t: Option<Instant>, origin: Instant) -> f64 {
    match t {
        None => f64::NAN,
        Some(t) => match t.checked_duration_since(origin) {
            Some(d) => d.as_secs_f64(),
            None => -origin.duration_since(t).as_secs_f64(),
        },
    }
}
