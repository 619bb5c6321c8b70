//! The real binary as a daemon: `gps-agent run` with a replayed drive, an in-process broker
//! (rumqttd), a fault proxy between them, and the health endpoint, as an operator sees it.

mod support;

use gps_agent::sim::DriveSpec;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::agent::{expected_fixes, quick_retry_mqtt, replay_gnss, Agent};
use support::broker::{Subscriber, TestBroker};
use support::proxy::FaultProxy;

/// A drive of `epochs` seconds with a tunnel and a few corrupt lines, as a log file.
fn drive_log(dir: &Path, epochs: u32) -> PathBuf {
    support::agent::drive_log(
        dir,
        DriveSpec {
            epochs,
            tunnel: Some((epochs / 3, 8)),
            corrupt_every: Some(97),
            ..DriveSpec::default()
        },
    )
}

/// Collect fix seqs (and statuses) until every one of 1..=n arrived, or time runs out.
async fn collect(sub: &mut Subscriber, n: u64, within: Duration) -> (BTreeSet<u64>, Vec<String>) {
    let mut seqs = BTreeSet::new();
    let mut statuses = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while (seqs.len() as u64) < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(msg) = sub.next(left).await else {
            break;
        };
        let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        if msg.topic.ends_with("/status") {
            statuses.push(v["state"].as_str().unwrap_or("").to_string());
            continue;
        }
        assert_eq!(v["v"], 1);
        for f in v["fixes"].as_array().unwrap() {
            seqs.insert(f["seq"].as_u64().unwrap());
        }
    }
    (seqs, statuses)
}

fn buffer_depth(db: &Path) -> u64 {
    let out = Command::new(env!("CARGO_BIN_EXE_gps-agent"))
        .args(["buffer", "stats", "--db"])
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["depth"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_delivers_every_accepted_fix_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let log = drive_log(dir.path(), 180);
    let expected = expected_fixes(&log);
    assert!(
        expected > 150,
        "the drive should give most of its fixes: {expected}"
    );
    let broker = TestBroker::start();
    let device = support::unique("truck");
    let mut sub = Subscriber::start(&broker, &format!("fleet/{device}/#")).await;

    let agent = Agent::replay(
        dir.path(),
        &device,
        &broker.url(),
        &log.display().to_string(),
    );
    let (seqs, statuses) = collect(&mut sub, expected, Duration::from_secs(30)).await;
    let want: BTreeSet<u64> = (1..=expected).collect();
    assert_eq!(seqs, want, "every seq from 1 to {expected} arrives");
    assert!(statuses.iter().any(|s| s == "online"), "{statuses:?}");

    // Health as the spec names it; the uplink publishes each ack as it comes. `acked_seq` is
    // the highest seq acknowledged (live first may send the newest ahead of the backlog):
    // every ack is in once nothing waits in the buffer either.
    let (code, h) = agent.wait_health("every ack", Duration::from_secs(10), |_, h| {
        h["components"]["buffer"]["acked_seq"] == expected
            && h["components"]["buffer"]["depth"] == 0
    });
    for key in ["status", "time", "uptime_s", "version"] {
        assert!(h.get(key).is_some(), "missing {key}: {h}");
    }
    let c = &h["components"];
    for key in ["status", "fix", "rejected"] {
        assert!(c["gnss"].get(key).is_some(), "gnss.{key}: {h}");
    }
    for key in ["status", "depth", "acked_seq", "evicted", "dead_letters"] {
        assert!(c["buffer"].get(key).is_some(), "buffer.{key}: {h}");
    }
    for key in ["status", "connected", "breaker", "reconnects"] {
        assert!(c["mqtt"].get(key).is_some(), "mqtt.{key}: {h}");
    }
    assert_eq!(c["mqtt"]["connected"], true, "{h}");
    assert_eq!(c["buffer"]["acked_seq"], expected, "{h}");
    assert!(
        c["gnss"]["rejected"]["checksum"].as_u64().unwrap() > 0,
        "corrupt lines counted: {h}"
    );
    // The replayed log has ended, so the receiver is no longer fresh: degraded, 503.
    assert!(code == 200 || code == 503);
    let (live, _) = agent.get("/live");
    assert_eq!(live, 200);

    // `status --config` finds the agent through the file's `[health] listen`.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gps-agent"))
        .args(["status", "--config"])
        .arg(&agent.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(if code == 200 { 0 } else { 1 }),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("acked seq"), "{text}");

    // Metrics: the stages' counters under the gps_agent_ prefix.
    let metrics = agent.raw("/metrics");
    for name in [
        "gps_agent_fixes_total{",
        "gps_agent_nmea_sentences_total{",
        "gps_agent_buffer_depth",
        "gps_agent_published_fixes_total",
        "gps_agent_mqtt_acks_total",
        "gps_agent_gnss_outages_total",
        "gps_agent_fix_to_ack_latency_seconds_bucket",
        "gps_agent_mqtt_breaker_state",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    assert!(
        metrics.contains(&format!(
            "gps_agent_fixes_total{{outcome=\"accepted\",reason=\"none\"}} {expected}"
        )),
        "accepted fixes counted: {metrics}"
    );
    // Fix-to-ack latency on the receiver's clock: the replayed drive is dated March 2026,
    // months from this machine's clock, and replayed at once, so every fix is acknowledged
    // within the drive's span (180 s) of the newest one, none months late.
    let sample = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing: {metrics}"))
    };
    let observed = sample("gps_agent_fix_to_ack_latency_seconds_count ");
    assert!(observed >= expected, "{observed} of {expected}: {metrics}");
    assert_eq!(
        sample("gps_agent_fix_to_ack_latency_seconds_bucket{le=\"300.0\"} "),
        observed,
        "fix ages measured against the receiver's clock: {metrics}"
    );

    // The stream: JSON Lines with the snapshot's keys.
    let first = agent.first_stream_line();
    assert!(
        first["components"]["mqtt"]["breaker"].is_string(),
        "{first}"
    );
    assert!(
        first["status"].is_string() && first["uptime_s"].is_number(),
        "{first}"
    );

    // Bad requests get JSON errors carrying the request id, echoed in the header.
    let (code, headers, body) = agent.request("GET /nope HTTP/1.1\r\nX-Request-ID: abc-123\r\n");
    assert_eq!(code, 404);
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("x-request-id: abc-123"),
        "{headers}"
    );
    assert_eq!(body["error"], "not_found");
    assert_eq!(body["request_id"], "abc-123");
    assert_eq!(body["status_code"], 404);
    let (code, _, body) = agent.request("POST /health HTTP/1.1\r\nContent-Length: 0\r\n");
    assert_eq!(code, 405);
    assert!(
        body["request_id"].as_str().is_some_and(|id| !id.is_empty()),
        "made when absent"
    );

    let (exit, db) = agent.terminate();
    assert_eq!(exit, 0, "SIGTERM is a clean stop");
    // A clean shutdown publishes the retained `offline` status itself.
    let mut offline = false;
    while let Some(msg) = sub.next(Duration::from_secs(3)).await {
        if msg.topic.ends_with("/status") && msg.payload.windows(9).any(|w| w == b"\"offline\"") {
            offline = true;
            break;
        }
    }
    assert!(offline, "offline status published on SIGTERM");
    assert_eq!(
        buffer_depth(&db),
        0,
        "everything acknowledged left the buffer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_without_a_broker_buffers_reports_degraded_and_delivers_when_it_comes() {
    let dir = tempfile::tempdir().unwrap();
    let log = drive_log(dir.path(), 60);
    let expected = expected_fixes(&log);
    let broker = TestBroker::start();
    let proxy = FaultProxy::start(broker.addr).await;
    proxy.cut().await;
    let device = support::unique("truck");
    let mut sub = Subscriber::start(&broker, &format!("fleet/{device}/#")).await;

    let agent = Agent::start_with_mqtt(
        dir.path(),
        &device,
        &replay_gnss(&log.display().to_string()),
        &quick_retry_mqtt(&proxy.url()),
        &[],
    );
    // Everything is read and buffered while the broker is unreachable.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, h) = agent.get("/health");
        let depth = h["components"]["buffer"]["depth"].as_u64().unwrap_or(0);
        if depth == expected {
            assert_eq!(code, 503, "no broker: not healthy");
            assert_eq!(h["status"], "degraded", "{h}");
            assert_eq!(h["components"]["mqtt"]["connected"], false);
            assert!(
                h["components"]["mqtt"]["last_error"]["code"].is_string(),
                "{h}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "fixes not buffered: {h}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        sub.next(Duration::from_millis(300)).await.is_none(),
        "nothing got through"
    );

    // The broker comes back: the backlog drains, nothing lost.
    proxy.restore().await;
    let (seqs, _) = collect(&mut sub, expected, Duration::from_secs(30)).await;
    assert_eq!(seqs, (1..=expected).collect::<BTreeSet<u64>>());
    let (exit, db) = agent.terminate();
    assert_eq!(exit, 0);
    assert_eq!(buffer_depth(&db), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_it_says_ready_feeds_the_watchdog_and_says_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let log = drive_log(dir.path(), 30);
    let broker = TestBroker::start();
    let device = support::unique("truck");
    let env = [
        ("NOTIFY_SOCKET", socket_path.display().to_string()),
        // WatchdogSec=2: a ping at least every second.
        ("WATCHDOG_USEC", "2000000".to_string()),
    ];
    let agent = Agent::start(
        dir.path(),
        &device,
        &format!(
            "[gnss]
source = \"file\"
path = \"{}\"",
            log.display()
        ),
        &broker.url(),
        &env,
    );
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && !(seen.iter().any(|m: &String| m == "READY=1")
            && seen.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2
            && seen
                .iter()
                .any(|m| m.starts_with("STATUS=") && m.contains(": fix ")))
    {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification within 10 s");
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(
        seen.first().map(String::as_str),
        Some("READY=1"),
        "{seen:?}"
    );
    assert!(
        seen.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2,
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|m| m.starts_with("STATUS=") && m.contains(": fix ")),
        "{seen:?}"
    );
    let (exit, _) = agent.terminate();
    assert_eq!(exit, 0);
    let mut rest = Vec::new();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 512];
    while let Ok(n) = socket.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(rest.iter().any(|m| m == "STOPPING=1"), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_new_thresholds_and_names_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = drive_log(dir.path(), 20);
    let broker = TestBroker::start();
    let device = support::unique("truck");
    let agent = Agent::replay(
        dir.path(),
        &device,
        &broker.url(),
        &log.display().to_string(),
    );
    agent.wait_log("agent started", |v| v["message"] == "agent started");
    assert_eq!(
        agent.wait_log("started", |v| v["message"] == "agent started")["component"],
        "agent",
        "JSON logs on stdout carry a component"
    );

    let text = std::fs::read_to_string(&agent.config).unwrap();
    let text = text.replace("[mqtt]\n", "[validate]\nmax_hdop = 4.5\n\n[mqtt]\n");
    let text = text.replace("pace = \"fast\"", "pace = \"fast\"\nstuck_after_s = 20");
    std::fs::write(&agent.config, text).unwrap();
    agent.signal("-HUP");
    agent.wait_log("thresholds reloaded", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("validation thresholds reloaded"))
    });
    let restart = agent.wait_log("needs a restart", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("needs a restart"))
    });
    assert_eq!(restart["section"], "gnss");
    assert_eq!(
        reload_reconnects(&agent),
        0,
        "[mqtt] did not change, the uplink stays connected"
    );

    // A broken file is refused and the running configuration stays.
    std::fs::write(&agent.config, "[gnss]\nbaud = 12\n").unwrap();
    agent.signal("-HUP");
    let refused = agent.wait_log("not reloaded", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("not reloaded"))
    });
    assert_eq!(refused["code"], "CONFIG_INVALID");
    let (code, _) = agent.get("/live");
    assert_eq!(code, 200, "still running");
    let (exit, _) = agent.terminate();
    assert_eq!(exit, 0);
}

/// Each `reconnecting with the new settings` line of the agent's log.
fn reload_reconnects(agent: &Agent) -> usize {
    agent.log_count("reconnecting with the new settings")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_new_broker_reconnects_there_and_delivers_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let log = drive_log(dir.path(), 60);
    let expected = expected_fixes(&log);
    let broker = TestBroker::start();
    let device = support::unique("truck");
    let mut sub = Subscriber::start(&broker, &format!("fleet/{device}/#")).await;
    // Configured for a broker that is not there (a port nobody listens on).
    let nowhere = format!("mqtt://{}", support::broker::free_port());
    let agent = Agent::replay(dir.path(), &device, &nowhere, &log.display().to_string());
    agent.wait_log("fixes buffered", |v| {
        v["message"] == "uplink failed" && v["code"] == "MQTT_CONNECT"
    });
    let (code, health) = agent.get("/health");
    assert_eq!(code, 503, "{health}");
    assert_eq!(health["components"]["mqtt"]["connected"], false, "{health}");

    // The operator fixes the broker address and reloads (systemctl reload).
    let text = std::fs::read_to_string(&agent.config).unwrap();
    std::fs::write(&agent.config, text.replace(&nowhere, &broker.url())).unwrap();
    agent.signal("-HUP");
    agent.wait_log("reconnect for the reload", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("reconnecting with the new settings"))
    });
    let (seqs, statuses) = collect(&mut sub, expected, Duration::from_secs(60)).await;
    assert_eq!(
        seqs,
        (1..=expected).collect::<BTreeSet<u64>>(),
        "every buffered fix arrives at the new broker"
    );
    assert!(statuses.iter().any(|s| s == "online"), "{statuses:?}");
    agent.wait_health(
        "connected, buffer empty",
        Duration::from_secs(10),
        |_, h| {
            h["components"]["mqtt"]["connected"] == true && h["components"]["buffer"]["depth"] == 0
        },
    );

    // A reload whose [mqtt] cannot be used (an empty password file) leaves the running
    // connection alone; one with nothing changed in [mqtt] does not reconnect.
    let empty = dir.path().join("password");
    std::fs::write(&empty, "").unwrap();
    let good = std::fs::read_to_string(&agent.config).unwrap();
    let broken = good.replace(
        "[mqtt]\n",
        &format!(
            "[mqtt]\nusername = \"truck\"\npassword_file = \"{}\"\n",
            empty.display()
        ),
    );
    std::fs::write(&agent.config, broken).unwrap();
    agent.signal("-HUP");
    // check-config's own check refuses the file whole (as `systemctl reload` would have);
    // the running connection stays.
    let refused = agent.wait_log("the reload refused", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("configuration not reloaded"))
    });
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("mqtt.password_file") && e.contains("MQTT_TLS_CONFIG")),
        "{refused}"
    );
    std::fs::write(&agent.config, &good).unwrap();
    agent.signal("-HUP");
    agent.wait_log("the unchanged [mqtt] kept", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("[mqtt] unchanged"))
    });
    assert_eq!(
        reload_reconnects(&agent),
        1,
        "only the first reload changed [mqtt]"
    );
    let (_, health) = agent.get("/health");
    assert_eq!(health["components"]["mqtt"]["connected"], true, "{health}");
    assert_eq!(health["components"]["mqtt"]["reconnects"], 0, "{health}");

    // A timer changed while connected: the connection ends as at shutdown (`offline`) and
    // a new one begins (`online`), counted as a reconnect.
    let _ = sub.fix_seqs_until_quiet(Duration::from_millis(300)).await;
    std::fs::write(
        &agent.config,
        good.replace("[mqtt]\n", "[mqtt]\nkeep_alive_s = 45\n"),
    )
    .unwrap();
    agent.signal("-HUP");
    let mut statuses = Vec::new();
    while statuses.len() < 2 {
        let Some(msg) = sub.next(Duration::from_secs(10)).await else {
            break;
        };
        if msg.topic.ends_with("/status") {
            let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
            statuses.push(v["state"].as_str().unwrap_or("").to_string());
        }
    }
    assert_eq!(statuses, ["offline", "online"]);
    assert_eq!(reload_reconnects(&agent), 2);
    let mut late = Subscriber::start(&broker, &format!("fleet/{device}/status")).await;
    let retained = late
        .next(Duration::from_secs(5))
        .await
        .expect("retained status");
    let v: serde_json::Value = serde_json::from_slice(&retained.payload).unwrap();
    assert_eq!(
        v["state"], "online",
        "what a dashboard sees after the reload"
    );
    agent.wait_health("connected, 1 reconnect", Duration::from_secs(10), |_, h| {
        let mqtt = &h["components"]["mqtt"];
        mqtt["connected"] == true && mqtt["reconnects"] == 1
    });
    let (exit, _) = agent.terminate();
    assert_eq!(exit, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_requeued_by_the_cli_while_it_runs_are_delivered_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    // A buffer left with three dead letters by an earlier run.
    {
        let cfg = gps_agent::config::BufferSettings {
            path: dir.path().join("buffer.db"),
            ..Default::default()
        };
        let (mut buf, _) = gps_agent::buffer::Buffer::open(&cfg).unwrap();
        let now = Instant::now();
        for i in 0..3 {
            let fix = gps_agent::fix::Fix {
                time_ms: 1_700_000_000_000 + i * 1000,
                lat: 48.85,
                lon: 2.35,
                alt_m: None,
                speed_mps: None,
                course_deg: None,
                hdop: Some(0.9),
                sats: Some(9),
                mode: gps_agent::fix::FixMode::ThreeD,
                event: None,
            };
            buf.append(&fix, now).unwrap();
        }
        buf.commit().unwrap();
        buf.dead_letter(&[1, 2, 3], "MQTT_REJECTED", "refused by an old ACL")
            .unwrap();
        buf.commit().unwrap();
    }
    let log = drive_log(dir.path(), 20);
    let expected = expected_fixes(&log);
    let broker = TestBroker::start();
    let device = support::unique("truck");
    let mut sub = Subscriber::start(&broker, &format!("fleet/{device}/fixes")).await;
    let agent = Agent::replay(
        dir.path(),
        &device,
        &broker.url(),
        &log.display().to_string(),
    );
    let seqs = sub.fix_seqs(expected, Duration::from_secs(20)).await;
    assert_eq!(seqs, (4..=3 + expected).collect::<BTreeSet<u64>>());
    let buffer_health = |agent: &Agent| agent.get("/health").1["components"]["buffer"].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while buffer_health(&agent)["depth"] != 0 {
        assert!(Instant::now() < deadline, "{}", buffer_health(&agent));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(buffer_health(&agent)["dead_letters"], 3);

    let out = Command::new(env!("CARGO_BIN_EXE_gps-agent"))
        .args(["buffer", "requeue", "--db"])
        .arg(&agent.db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seqs = sub.fix_seqs(3, Duration::from_secs(20)).await;
    assert_eq!(seqs, (1..=3).collect::<BTreeSet<u64>>());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let b = buffer_health(&agent);
        if b["depth"] == 0 && b["dead_letters"] == 0 && b["acked_seq"] == 3 + expected {
            break;
        }
        assert!(Instant::now() < deadline, "health never caught up: {b}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (exit, db) = agent.terminate();
    assert_eq!(exit, 0);
    assert_eq!(buffer_depth(&db), 0);
}
