//! Outage recovery through the real binary. The agent reads a drive in real time; its link to
//! rumqttd runs through the harness's fault proxy, which is cut (connections closed, connects
//! refused: the path to the broker is gone) for a while and then restored. Measured: from the
//! moment the proxy accepts again to the agent's own log line saying the first fixes of the
//! new connection were acknowledged (its timestamp, not the test's polling).
//!
//! Targets (issue 11): 3 s after an 8 s outage, 5 s after a 45 s one. Asserted with margin
//! for a busy machine (4 s and 10 s) that the old pacing, backoff plus a breaker opened by
//! the refused connects (4.7 s and 77 s measured), would still fail. The 8 s outage runs by
//! default; `GPS_AGENT_LONG_OUTAGE=1` adds the 45 s one. Both with the cellular defaults
//! (`linger_s = 60`: whatever waited during the outage goes at once on the new connection).

mod support;

use gps_agent::sim::DriveSpec;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};
use support::agent::{log_time, Agent};
use support::broker::{Subscriber, TestBroker};
use support::proxy::FaultProxy;

/// What one outage cost, as the agent saw it.
struct Recovery {
    /// From the proxy accepting again to the first fixes acknowledged.
    blind: Duration,
    /// Reachability probes and full connection attempts during the whole run.
    probes: u64,
    connect_attempts: u64,
}

async fn outage_recovery(outage: Duration) -> Recovery {
    let dir = tempfile::tempdir().unwrap();
    // 5 Hz, long enough for a few seconds before the cut and a few after the return.
    let epochs = 5 * (outage.as_secs() as u32 + 20);
    let log = support::agent::drive_log(
        dir.path(),
        DriveSpec {
            epochs,
            rate_hz: 5,
            ..DriveSpec::default()
        },
    );
    let broker = TestBroker::start();
    let proxy = FaultProxy::start(broker.addr).await;
    let device = support::unique("truck");
    let mut sub = Subscriber::start(&broker, &format!("fleet/{device}/fixes")).await;
    let gnss = format!(
        "[gnss]\nsource = \"file\"\npath = \"{}\"\npace = \"realtime\"",
        log.display()
    );
    let mqtt = format!("url = \"{}\"\nlinger_s = 60", proxy.url());
    let agent = Agent::start_with_mqtt(dir.path(), &device, &gnss, &mqtt, &[]);
    agent.wait_health("a first ack", Duration::from_secs(15), |_, h| {
        h["components"]["buffer"]["acked_seq"].as_u64() > Some(0)
    });

    proxy.cut().await;
    agent.wait_health("the cut noticed", Duration::from_secs(10), |_, h| {
        h["components"]["mqtt"]["connected"] == false
    });
    tokio::time::sleep(outage).await;
    proxy.restore().await;
    let restored = SystemTime::now();

    let first_ack = {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let found = agent.log_lines().into_iter().find(|v| {
                v["message"] == "first fixes acknowledged on this connection"
                    && log_time(v) >= restored
            });
            if let Some(line) = found {
                break line;
            }
            assert!(
                Instant::now() < deadline,
                "no fixes acknowledged after the link returned:\n{}",
                std::fs::read_to_string(&agent.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let blind = log_time(&first_ack)
        .duration_since(restored)
        .unwrap_or_default();

    let (_, h) = agent.get("/health");
    let mqtt = &h["components"]["mqtt"];
    assert_eq!(mqtt["breaker"], "closed", "{h}");
    assert_eq!(mqtt["path"], "up", "{h}");
    let probes = mqtt["probes"].as_u64().unwrap();
    let connect_attempts = mqtt["connect_attempts"].as_u64().unwrap();
    let metrics = agent.raw("/metrics");
    let failed_probes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gps_agent_mqtt_probes_total{result=\"failed\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no failed probes in the metrics:\n{metrics}"));
    assert!(failed_probes > 0, "{metrics}");

    // Nothing lost: every seq the agent stored reached the broker or is still buffered.
    let (code, db) = agent.terminate();
    assert_eq!(code, 0);
    let out = Command::new(env!("CARGO_BIN_EXE_gps-agent"))
        .args(["buffer", "stats", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let last_seq = stats["last_seq"].as_u64().unwrap();
    let depth = stats["depth"].as_u64().unwrap();
    let seen: BTreeSet<u64> = sub.fix_seqs_until_quiet(Duration::from_millis(500)).await;
    assert!(seen.iter().all(|s| (1..=last_seq).contains(s)));
    assert!(
        seen.len() as u64 + depth >= last_seq,
        "{} delivered + {depth} buffered < {last_seq} stored",
        seen.len()
    );
    Recovery {
        blind,
        probes,
        connect_attempts,
    }
}

/// The figures the README quotes.
fn report(outage: &str, r: &Recovery) {
    eprintln!(
        "{outage} outage: first fixes acknowledged {:.2} s after the link returned; {} probes, {} full connection attempts",
        r.blind.as_secs_f64(),
        r.probes,
        r.connect_attempts
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_8_s_outage_fixes_are_acknowledged_again_within_seconds_of_the_return() {
    let r = outage_recovery(Duration::from_secs(8)).await;
    report("8 s", &r);
    assert!(r.blind < Duration::from_secs(4), "blind {:?}", r.blind);
    // Probes while the port refused; one full attempt at start, one after the return.
    assert!(r.probes >= 4, "{}", r.probes);
    assert_eq!(r.connect_attempts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_45_s_outage_fixes_are_acknowledged_again_within_seconds_of_the_return() {
    if std::env::var_os("GPS_AGENT_LONG_OUTAGE").is_none() {
        eprintln!("the 45 s outage runs with GPS_AGENT_LONG_OUTAGE=1: skipped");
        return;
    }
    let r = outage_recovery(Duration::from_secs(45)).await;
    report("45 s", &r);
    assert!(r.blind < Duration::from_secs(10), "blind {:?}", r.blind);
    assert_eq!(r.connect_attempts, 2);
}
