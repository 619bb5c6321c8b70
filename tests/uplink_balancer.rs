//! Behind a load balancer, through the real binary (issue 20). The harness's front end
//! ([`support::front`]) balances to rumqttd; when the broker behind it stops, the front takes
//! every connection and closes it at once, as HAProxy or a cloud balancer does. Before issue
//! 20 that read as a broker refusing: after five, the breaker opened and the agent never
//! tried again.
//!
//! - `cargo test` runs one agent with the product's defaults through a 60 s broker outage:
//!   at most 6 full attempts in that minute, the first fix acknowledged at most 30 s after
//!   the broker is back, nothing lost, the breaker closed throughout.
//! - `a_fleet_behind_a_balancer_...` (ignored; `bash .ci/balancer.sh` runs it) starts 100
//!   agents (`GPS_AGENT_FLEET`), each its own process, state directory and health port, and
//!   takes the broker away twice: for a minute (95% back within 60 s, no second with more
//!   than 20% of them reconnecting) and for ten (after the first two minutes, at most one
//!   full attempt a minute each). `GPS_AGENT_BALANCER_SCALE` (default 1) runs it that many
//!   times faster: the outages and `probe_interval_s` / `probe_max_s` shrink together, and
//!   since the pacing is proportional to those two, every count is the same and every time
//!   scales (CI runs it at 0.25: outages of 15 s and 150 s).
//!
//! Every figure is printed (`-- --nocapture`) for the README's outage table.

mod support;

use gps_agent::sim::DriveSpec;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};
use support::agent::{log_time, Agent};
use support::broker::{Received, Subscriber, TestBroker};
use support::front::Front;

/// The `[mqtt]` body for an agent behind `front`: the product's defaults (linger 60 s), the
/// probes' pace shrunk by `scale`.
fn mqtt(front: &Front, scale: f64) -> String {
    format!(
        "url = \"{}\"\nlinger_s = 60\nprobe_interval_s = {}\nprobe_max_s = {}\n",
        front.url(),
        scale,
        60.0 * scale
    )
}

/// A 1 Hz drive read in real time, `secs` long.
fn drive(dir: &Path, secs: u32) -> String {
    let log = support::agent::drive_log(
        dir,
        DriveSpec {
            epochs: secs,
            rate_hz: 1,
            ..DriveSpec::default()
        },
    );
    format!(
        "[gnss]\nsource = \"file\"\npath = \"{}\"\npace = \"realtime\"",
        log.display()
    )
}

fn connect_attempts(agent: &Agent) -> u64 {
    let (_, h) = agent.get("/health");
    h["components"]["mqtt"]["connect_attempts"]
        .as_u64()
        .unwrap_or_else(|| panic!("no connect_attempts in {h}"))
}

/// When the agent's log says `message` first at or after `since`.
fn logged_after(agent: &Agent, message: &str, since: SystemTime) -> Option<SystemTime> {
    agent
        .log_lines()
        .iter()
        .filter(|v| v["message"] == message)
        .map(log_time)
        .find(|t| *t >= since)
}

/// Fix deliveries the subscriber saw until it was quiet for `quiet`: seq -> times.
async fn deliveries(sub: &mut Subscriber, quiet: Duration) -> BTreeMap<u64, u32> {
    let mut seen = BTreeMap::new();
    while let Some(msg) = sub.next(quiet).await {
        for seq in Received::fix_seqs(&msg) {
            *seen.entry(seq).or_insert(0) += 1;
        }
    }
    seen
}

/// `(last_seq, depth)` of a stopped agent's buffer.
fn buffer_stats(db: &Path) -> (u64, u64) {
    let out = Command::new(env!("CARGO_BIN_EXE_gps-agent"))
        .args(["buffer", "stats", "--db"])
        .arg(db)
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        stats["last_seq"].as_u64().unwrap(),
        stats["depth"].as_u64().unwrap(),
    )
}

/// `(lost, duplicates)`: seqs the agent stored that neither arrived nor wait in its buffer,
/// and deliveries beyond the first of a seq.
fn tally(seen: &BTreeMap<u64, u32>, last_seq: u64, depth: u64) -> (u64, u64) {
    let distinct = seen.keys().filter(|s| (1..=last_seq).contains(*s)).count() as u64;
    let duplicates = seen.values().map(|n| u64::from(n - 1)).sum();
    (last_seq.saturating_sub(distinct + depth), duplicates)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a real minute of outage, two in all: bash .ci/balancer.sh runs it"]
async fn behind_a_balancer_a_minute_without_the_broker_costs_six_attempts_at_most_and_30_s() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start();
    let front = Front::start(broker.addr).await;
    let device = support::unique("truck");
    let mut sub = Subscriber::start(&broker, &format!("fleet/{device}/fixes")).await;
    let gnss = drive(dir.path(), 260);
    let agent = Agent::start_with_mqtt(dir.path(), &device, &gnss, &mqtt(&front, 1.0), &[]);
    // A session that has carried fixes (the first message goes when its first fix has
    // lingered its 60 s): the broker's loss then breaks a session in use, as in the field.
    agent.wait_health("a first ack", Duration::from_secs(90), |_, h| {
        h["components"]["buffer"]["acked_seq"].as_u64() > Some(0)
    });

    let outage = Duration::from_secs(60);
    let attempts_before = connect_attempts(&agent);
    let down = Instant::now();
    front.backend_down();
    agent.wait_health(
        "the broker's loss noticed",
        Duration::from_secs(10),
        |_, h| h["components"]["mqtt"]["connected"] == false,
    );
    tokio::time::sleep(outage.saturating_sub(down.elapsed()) / 2).await;
    let (_, h) = agent.get("/health");
    let m = &h["components"]["mqtt"];
    assert_eq!(m["breaker"], "closed", "{h}");
    assert_eq!(m["path"], "up", "the balancer answers: {h}");
    assert!(m["retry_in_s"].as_f64().is_some(), "{h}");
    tokio::time::sleep(outage.saturating_sub(down.elapsed())).await;
    // What the agent controls of the blind time: when, by its own schedule, it looks again.
    let (_, h) = agent.wait_health(
        "the next attempt scheduled",
        Duration::from_secs(30),
        |_, h| h["components"]["mqtt"]["retry_in_s"].is_f64(),
    );
    let next_look = h["components"]["mqtt"]["retry_in_s"].as_f64().unwrap();
    let attempts = connect_attempts(&agent) - attempts_before;
    let connections = front.accepted_since(down);
    front.backend_up();
    let up = SystemTime::now();

    let acked = support::wait::poll_async(Duration::from_secs(90), async || {
        logged_after(&agent, "first fixes acknowledged on this connection", up)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "nothing acknowledged 90 s after the broker came back:\n{}",
            std::fs::read_to_string(&agent.log).unwrap_or_default()
        )
    });
    let blind = acked.duration_since(up).unwrap_or_default();
    let (_, h) = agent.get("/health");
    assert_eq!(h["components"]["mqtt"]["breaker"], "closed", "{h}");

    let (code, db) = agent.terminate();
    assert_eq!(code, 0);
    let (last_seq, depth) = buffer_stats(&db);
    let seen = deliveries(&mut sub, Duration::from_millis(500)).await;
    let (lost, duplicates) = tally(&seen, last_seq, depth);
    eprintln!(
        "behind a balancer, 60 s broker outage, 1 agent: first fix acknowledged {:.2} s after \
         the broker returned (next attempt was due in {next_look:.2} s); {attempts} full \
         attempts in the minute ({connections} TCP connections at the balancer, probes \
         included); lost {lost}, duplicates {duplicates} ({last_seq} fixes stored)",
        blind.as_secs_f64()
    );
    assert!(attempts <= 6, "{attempts} attempts in the minute");
    // The blind time is wall time (printed above); the schedule is what must be short.
    assert!(next_look <= 30.0, "next attempt due in {next_look} s");
    assert_eq!(lost, 0);
}

/// A broker that dies behind the balancer while a message is in flight looks, to the probe
/// that judges a dropped link, like one that dropped the link over the message's size (the
/// balancer answers the probe). The verdict (messages capped at half) stands only until the
/// next attempt: one the balancer closes unserved withdraws it, and the backlog goes out
/// uncapped once the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_dying_behind_a_balancer_with_a_message_in_flight_does_not_shrink_messages() {
    use support::proxy::FaultProxy;
    use support::publisher::{fast_settings, start};
    use support::source::{fix, MemSource};
    let broker = TestBroker::start();
    let front = Front::start(broker.addr).await;
    // The link to the balancer, slowed so that a message is in flight when the broker dies.
    let link = FaultProxy::start(front.addr).await;
    let device = support::unique("dev");
    let mut s = fast_settings(&link.url(), &device, "test");
    s.puback_timeout = Duration::from_secs(30);
    // A second between the narrowed reconnect and the next unserved one: long enough to
    // see the verdict on the board.
    s.probe.interval = Duration::from_secs(1);
    s.probe.max = Duration::from_secs(1);
    let mut run = start(s, MemSource::default());
    run.wait_status("connected", |s| s.connected).await;
    link.delay(400);
    run.source.push((1..=5).map(fix));
    support::wait_for("a message in flight", || run.source.in_flight() > 0).await;
    front.backend_down();
    let judged = run.wait_error("MQTT_TOO_LARGE").await;
    assert!(judged.message_limit.is_some(), "{judged:?}");
    run.wait_status("the verdict withdrawn", |s| {
        s.message_limit.is_none() && s.last_error.as_ref().map(|e| e.code) == Some("MQTT_CONNECT")
    })
    .await;
    front.backend_up();
    link.delay(0);
    run.wait_acked(5).await;
    let st = run.status();
    assert_eq!(st.message_limit, None, "{st:?}");
    assert_eq!(st.breaker.as_str(), "closed");
    run.stop().await;
}

/// One agent of the fleet: its process, and the balancer port it alone uses (so that each
/// connection the balancer accepts is known to be this agent's).
struct Member {
    agent: Agent,
    front: Front,
    device: String,
    _dir: tempfile::TempDir,
}

/// Every fix delivery the broker passed on, per device: seq -> times.
type Delivered = std::sync::Arc<std::sync::Mutex<BTreeMap<String, BTreeMap<u64, u32>>>>;

/// A subscriber to every agent's fixes, counting deliveries in the background.
async fn count_deliveries(broker: &TestBroker) -> Delivered {
    let mut sub = Subscriber::start(broker, "fleet/+/fixes").await;
    let delivered = Delivered::default();
    let counted = delivered.clone();
    tokio::spawn(async move {
        while let Some(msg) = sub.rx.recv().await {
            let device = msg.topic.split('/').nth(1).unwrap_or_default().to_string();
            let mut all = counted.lock().unwrap();
            let seen = all.entry(device).or_default();
            for seq in msg.fix_seqs() {
                *seen.entry(seq).or_insert(0) += 1;
            }
        }
    });
    delivered
}

/// The figures of one outage across the fleet.
struct FleetOutage {
    /// Per agent: from the broker's return to its first fix acknowledged (`None`: not back
    /// within the wait).
    back: Vec<Option<Duration>>,
    /// Reconnections after the return (the first connection each agent made once the
    /// broker was back), per (scaled) second since it.
    per_second: BTreeMap<u64, usize>,
    /// Per agent: full attempts (connections it spoke on) in each (scaled) minute of the
    /// outage, from the moment the broker stopped.
    per_minute: Vec<Vec<usize>>,
    /// Per agent: all its connections to the balancer during the outage, probes included.
    connections: Vec<usize>,
}

/// The broker behind every member's balancer port stops for `outage`; `minute` and `second`
/// are the scaled ones.
async fn fleet_outage(
    fleet: &[Member],
    outage: Duration,
    minute: Duration,
    second: Duration,
) -> FleetOutage {
    let down = Instant::now();
    for m in fleet {
        m.front.backend_down();
    }
    tokio::time::sleep_until((down + outage).into()).await;
    let up_at = Instant::now();
    for m in fleet {
        m.front.backend_up();
    }
    let up = SystemTime::now();
    let minutes = (outage.as_secs_f64() / minute.as_secs_f64()).round() as usize;
    let per_minute = fleet
        .iter()
        .map(|m| {
            let mut counts = vec![0; minutes];
            for at in m.front.attempts() {
                if at >= down && at < up_at {
                    let i = ((at - down).as_secs_f64() / minute.as_secs_f64()) as usize;
                    if let Some(n) = counts.get_mut(i) {
                        *n += 1;
                    }
                }
            }
            counts
        })
        .collect();

    let connections: Vec<usize> = fleet
        .iter()
        .map(|m| {
            let all = m.front.accepted();
            all.iter().filter(|at| **at >= down && **at < up_at).count()
        })
        .collect();
    // The agent with the most connections says when each was (s since the broker stopped;
    // `a` a full attempt, `p` a probe).
    if let Some((i, _)) = connections.iter().enumerate().max_by_key(|(_, n)| **n) {
        let attempts = fleet[i].front.attempts();
        let timeline: Vec<String> = fleet[i]
            .front
            .accepted()
            .into_iter()
            .filter(|at| *at >= down && *at < up_at)
            .map(|at| {
                let kind = if attempts.contains(&at) { 'a' } else { 'p' };
                format!("{:.2}{kind}", (at - down).as_secs_f64())
            })
            .collect();
        eprintln!("busiest agent's connections: {}", timeline.join(" "));
        let down_wall = SystemTime::now() - down.elapsed();
        for v in fleet[i].agent.log_lines() {
            let t = log_time(&v);
            if t >= down_wall && t <= up {
                let since = t.duration_since(down_wall).unwrap_or_default();
                eprintln!("  {:.2} s {v}", since.as_secs_f64());
            }
        }
    }

    let wait = Duration::from_secs(120).max(outage * 2);
    let mut back = vec![None; fleet.len()];
    let _ = support::wait::poll_async(wait, async || {
        for (i, m) in fleet.iter().enumerate() {
            if back[i].is_none() {
                back[i] = logged_after(&m.agent, "first fixes acknowledged on this connection", up)
                    .map(|t| t.duration_since(up).unwrap_or_default());
            }
        }
        back.iter().all(Option::is_some)
    })
    .await;
    let mut per_second = BTreeMap::new();
    for (m, back) in fleet.iter().zip(&back) {
        let reconnect = m.front.accepted().into_iter().find(|at| *at >= up_at);
        if let Some(at) = reconnect {
            let s = ((at - up_at).as_secs_f64() / second.as_secs_f64()) as u64;
            *per_second.entry(s).or_insert(0) += 1;
        }
        // A straggler says why: its connections and what its log said since the return.
        if back.is_none_or(|b| b > outage.max(minute)) {
            let lines: Vec<String> = m
                .agent
                .log_lines()
                .iter()
                .filter(|v| log_time(v) >= up)
                .take(12)
                .map(|v| {
                    let t = log_time(v).duration_since(up).unwrap_or_default();
                    format!("{:.2} s {v}", t.as_secs_f64())
                })
                .collect();
            eprintln!(
                "straggler: first connection {:?} after the return, back {back:?}; log since:\n  {}",
                reconnect.map(|at| at - up_at),
                lines.join("\n  ")
            );
        }
    }
    FleetOutage {
        back,
        per_second,
        per_minute,
        connections,
    }
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "100 agent processes for 13 minutes (3.5 at GPS_AGENT_BALANCER_SCALE=0.25): bash .ci/balancer.sh"]
async fn a_fleet_behind_a_balancer_comes_back_spread_out_and_thins_its_attempts_in_a_long_outage() {
    let size = env_f64("GPS_AGENT_FLEET", 100.0) as usize;
    let scale = env_f64("GPS_AGENT_BALANCER_SCALE", 1.0);
    let scaled = |s: f64| Duration::from_secs_f64(s * scale);
    let broker = TestBroker::start();
    let delivered = count_deliveries(&broker).await;
    let run_secs = (scale * (60.0 + 600.0) + 240.0) as u32;
    let mut fleet = Vec::with_capacity(size);
    for i in 0..size {
        let dir = tempfile::tempdir().unwrap();
        let gnss = drive(dir.path(), run_secs);
        let device = format!("{}-{i}", support::unique("fleet"));
        let front = Front::start(broker.addr).await;
        let agent = Agent::start_with_mqtt(dir.path(), &device, &gnss, &mqtt(&front, scale), &[]);
        fleet.push(Member {
            agent,
            front,
            device,
            _dir: dir,
        });
    }
    for m in &fleet {
        m.agent
            .wait_health("a connection", Duration::from_secs(120), |_, h| {
                h["components"]["mqtt"]["connected"] == true
            });
    }
    eprintln!("{size} agents up and connected; scale {scale}");

    // A minute without the broker.
    let short = fleet_outage(&fleet, scaled(60.0), scaled(60.0), scaled(1.0)).await;
    let mut back: Vec<Duration> = short.back.iter().flatten().copied().collect();
    back.sort();
    let p95 = back
        .get((size * 95).div_ceil(100).saturating_sub(1))
        .copied();
    let busiest = short.per_second.values().max().copied().unwrap_or(0);
    let most_in_minute = short
        .per_minute
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or(0);
    let most_connections = short.connections.iter().max().copied().unwrap_or(0);
    eprintln!(
        "fleet of {size} behind a balancer, {:.0} s outage: back {}/{size}, p95 {:.2} s, max {:.2} s \
         after the return; busiest (scaled) second {busiest} reconnections ({:.0}%); at most \
         {most_in_minute} full attempts ({most_connections} connections, probes included) in \
         the outage's minute per agent",
        60.0 * scale,
        back.len(),
        p95.map_or(f64::NAN, |d| d.as_secs_f64()),
        back.last().map_or(f64::NAN, |d| d.as_secs_f64()),
        100.0 * busiest as f64 / size as f64
    );

    // Ten minutes without it.
    let long = fleet_outage(&fleet, scaled(600.0), scaled(60.0), scaled(1.0)).await;
    let late_max = long
        .per_minute
        .iter()
        .flat_map(|minutes| minutes.iter().skip(2))
        .max()
        .copied()
        .unwrap_or(0);
    let late_mean = long
        .per_minute
        .iter()
        .map(|minutes| minutes.iter().skip(2).sum::<usize>() as f64 / 8.0)
        .sum::<f64>()
        / size as f64;
    let long_back: Vec<Duration> = long.back.iter().flatten().copied().collect();
    eprintln!(
        "fleet of {size} behind a balancer, {:.0} s outage: after the first two minutes at most \
         {late_max} full attempts in any minute per agent (mean {late_mean:.2} a minute); back \
         {}/{size}, max {:.2} s after the return",
        600.0 * scale,
        long_back.len(),
        long_back.iter().max().map_or(f64::NAN, |d| d.as_secs_f64())
    );

    // Every agent stops (flushing what it holds), then the subscriber goes quiet.
    let mut stopped = Vec::with_capacity(size);
    for m in fleet {
        let (code, db) = m.agent.terminate();
        assert_eq!(code, 0);
        // The directory stays until the buffer is read.
        stopped.push((m.device, db, m._dir));
    }
    // The agents are stopped: wait until what they had acked has reached the subscriber (a
    // real loss shows below once the guard passes).
    let stats: Vec<(u64, u64)> = stopped.iter().map(|(_, db, _)| buffer_stats(db)).collect();
    let _ = support::wait::poll_async(Duration::from_secs(30), async || {
        let all = delivered.lock().unwrap();
        stopped
            .iter()
            .zip(&stats)
            .all(|((device, _, _), (last_seq, depth))| {
                tally(
                    all.get(device).unwrap_or(&BTreeMap::new()),
                    *last_seq,
                    *depth,
                )
                .0 == 0
            })
    })
    .await;
    let (mut lost, mut duplicates, mut stored) = (0, 0, 0);
    for (device, db, _) in &stopped {
        let (last_seq, depth) = buffer_stats(db);
        let all = delivered.lock().unwrap();
        let (l, d) = tally(all.get(device).unwrap_or(&BTreeMap::new()), last_seq, depth);
        lost += l;
        duplicates += d;
        stored += last_seq;
    }
    eprintln!("fleet of {size}: lost {lost}, duplicates {duplicates} of {stored} fixes stored");
    assert_eq!(lost, 0);
    assert!(p95.is_some_and(|d| d <= scaled(60.0)), "p95 {p95:?}");
    assert!(busiest * 5 <= size, "{:?}", short.per_second);
    assert!(
        late_max <= 1,
        "{late_max} attempts in a minute after the first two"
    );
    assert!(
        most_in_minute <= 6,
        "{most_in_minute} attempts in the minute's outage"
    );
    assert_eq!(
        long_back.len(),
        size,
        "every agent back after the long outage"
    );
}
