//! Keep-alive against a real mosquitto, whose own log (`log_type all`, in whole seconds)
//! tells what the agent sent and when: the agent pings only after a whole keep-alive in which
//! it sent nothing, so a session that publishes more often never pings and an idle one pings
//! each keep-alive and stays connected; a frozen agent (SIGSTOP) is declared offline by the
//! broker (its last will) once 1.5 keep-alives have passed since its last packet. The real
//! binary, so the agent can be frozen as a process.
//!
//! `#[ignore]`d like `tests/interop_mosquitto.rs`; `.ci/interop.sh` runs them.

mod support;

use gps_agent::sim::DriveSpec;
use std::time::Duration;
use support::agent::{drive_log, Agent};
use support::broker::Subscriber;
use support::mosquitto::{available, Mosquitto, MosquittoOptions};

/// What the broker logged of one client: `(second, what)` of each packet received from it
/// (`PUBLISH`, `PINGREQ`, ...; `CONNECT` for the connection), the keep-alive each CONNECT
/// asked for, and when the broker timed the client out.
#[derive(Debug, Default)]
struct Heard {
    packets: Vec<(u64, String)>,
    keep_alive: Vec<u64>,
    timed_out: Vec<u64>,
}

impl Heard {
    fn of(log: &str, client: &str) -> Heard {
        let mut heard = Heard::default();
        for line in log.lines() {
            let Some((second, text)) = line.split_once(": ") else {
                continue;
            };
            let Ok(second) = second.parse::<u64>() else {
                continue;
            };
            if let Some(rest) = text.strip_prefix("Received ") {
                let mut words = rest.split_whitespace();
                let (Some(kind), Some("from"), Some(who)) =
                    (words.next(), words.next(), words.next())
                else {
                    continue;
                };
                if who == client {
                    heard.packets.push((second, kind.to_owned()));
                }
            } else if let Some(flags) = text
                .strip_prefix("New client connected")
                .and_then(|t| t.split_once(&format!(" as {client} (")))
                .map(|(_, flags)| flags)
            {
                heard.packets.push((second, "CONNECT".to_owned()));
                // "(p2, c1, k240)."
                let k: Option<u64> = flags
                    .split([',', ')', ' '])
                    .find_map(|f| f.strip_prefix('k')?.parse().ok());
                heard.keep_alive.extend(k);
            } else if text == format!("Client {client} has exceeded timeout, disconnecting.") {
                heard.timed_out.push(second);
            }
        }
        heard
    }

    fn count(&self, kind: &str) -> usize {
        self.packets.iter().filter(|(_, k)| k == kind).count()
    }

    /// For each PINGREQ, the whole seconds since the client's packet before it.
    fn ping_gaps(&self) -> Vec<u64> {
        self.packets
            .windows(2)
            .filter(|w| w[1].1 == "PINGREQ")
            .map(|w| w[1].0 - w[0].0)
            .collect()
    }
}

/// Mosquitto logging every packet, a subscriber to the device's topics, and the agent
/// replaying `epochs` of a 1 Hz drive in real time with `keep_alive_s = keep_alive`.
struct Rig {
    _dir: tempfile::TempDir,
    broker: Mosquitto,
    device: String,
    sub: Subscriber,
    agent: Agent,
}

impl Rig {
    async fn start(keep_alive: u64, epochs: u32) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start(
            &MosquittoOptions {
                log_packets: true,
                ..MosquittoOptions::default()
            },
            None,
        );
        let device = support::unique("truck");
        let sub = Subscriber::start(&broker.for_subscriber(), &format!("fleet/{device}/#")).await;
        let log = drive_log(
            dir.path(),
            DriveSpec {
                epochs,
                ..DriveSpec::default()
            },
        );
        let gnss = format!(
            "[gnss]\nsource = \"file\"\npath = \"{}\"\npace = \"realtime\"",
            log.display()
        );
        let mqtt = format!(
            "url = \"{}\"\nkeep_alive_s = {keep_alive}\n",
            broker.agent_url(false)
        );
        let agent = Agent::start_with_mqtt(dir.path(), &device, &gnss, &mqtt, &[]);
        Rig {
            _dir: dir,
            broker,
            device,
            sub,
            agent,
        }
    }

    fn heard(&self) -> Heard {
        Heard::of(&self.broker.log(), &self.device)
    }

    /// Wait until what the broker heard of the agent satisfies `done`.
    async fn until(&self, what: &str, done: impl Fn(&Heard) -> bool) -> Heard {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let heard = self.heard();
            if done(&heard) {
                return heard;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waiting for {what}: {heard:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The next status message the subscriber receives (`online`, `offline`).
    async fn status(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = self.sub.next(left).await.expect("a status message");
            if msg.topic.ends_with("/status") {
                let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
                return v["state"].as_str().unwrap().to_owned();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto: run .ci/interop.sh"]
async fn a_session_pings_only_after_a_whole_keep_alive_without_a_packet_and_stays_connected() {
    if !available() {
        return;
    }
    // A fix a second for 25 s, with a keep-alive of 5 s; then idle.
    let rig = Rig::start(5, 25).await;
    let flowing = rig
        .until("the drive's fixes", |h| h.count("PUBLISH") >= 20)
        .await;
    // Three pings once the fixes stopped: three keep-alives idle.
    let heard = rig.until("three pings", |h| h.count("PINGREQ") >= 3).await;
    assert_eq!(
        flowing.count("PINGREQ"),
        0,
        "pinged while publishing: {flowing:?}"
    );
    // Every ping came a whole keep-alive after the packet before it (the broker counts whole
    // seconds: 5 s can read as 4). rumqttc as published pinged every 5 s from the CONNACK on,
    // one second or less after a fix.
    let gaps = heard.ping_gaps();
    assert!(
        gaps.iter().all(|g| (4..=6).contains(g)),
        "{gaps:?}: {heard:?}"
    );
    // One connection all along, never timed out by the broker.
    assert_eq!(heard.count("CONNECT"), 1, "{heard:?}");
    assert!(heard.timed_out.is_empty(), "{heard:?}");
    let (_, health) = rig.agent.get("/health");
    assert_eq!(health["components"]["mqtt"]["connected"], true, "{health}");
    assert_eq!(health["components"]["mqtt"]["reconnects"], 0, "{health}");
    assert_eq!(rig.agent.terminate().0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto: run .ci/interop.sh"]
async fn a_frozen_agent_is_declared_offline_one_and_a_half_keep_alives_after_its_last_packet() {
    if !available() {
        return;
    }
    let keep_alive = 4;
    let mut rig = Rig::start(keep_alive, 3).await;
    assert_eq!(rig.status().await, "online");
    // Idle and pinging: the connection is kept alive by pings alone.
    rig.until("a ping", |h| h.count("PINGREQ") >= 1).await;
    rig.agent.signal("-STOP");
    assert_eq!(rig.status().await, "offline", "the last will");
    let heard = rig.heard();
    rig.agent.signal("-CONT");
    // The broker was told the keep-alive, and timed the frozen agent out by it.
    assert_eq!(heard.keep_alive, [keep_alive], "{heard:?}");
    assert_eq!(heard.timed_out.len(), 1, "{heard:?}");
    let last = heard.packets.iter().map(|(s, _)| *s).max().unwrap();
    let silent = heard.timed_out[0] - last;
    // mosquitto 2.0 times a client out at its first keep-alive sweep (one every 6 s of its
    // whole-second clock) after more than 1.5 keep-alives without a packet: 6 s here, so
    // between 7 and 13 s after the last one.
    let limit = keep_alive * 3 / 2;
    assert!(
        (limit + 1..=limit + 7).contains(&silent),
        "offline {silent} s after the last packet: {heard:?}"
    );
    assert_eq!(rig.agent.terminate().0, 0);
}
