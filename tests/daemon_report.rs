//! The real daemon with `[report] mode = "adaptive"` and `[mqtt] payload = "cbor"`: it sends
//! exactly the fixes the policy keeps (the same as the offline run over the same drive), as
//! compact messages, counts the dropped ones in `/health` and `/metrics`, keeps the fix still
//! pending when the drive ends, and applies a new `[report]` on SIGHUP.

mod support;

use gps_agent::fix::Fix;
use gps_agent::report::measure::run;
use gps_agent::report::Settings;
use gps_agent::sim::{Drive, DriveSpec};
use gps_agent::uplink::cbor;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;
use support::agent::{quick_retry_mqtt, replay_gnss, Agent};
use support::broker::{Subscriber, TestBroker};
use support::drives::accepted;
use support::pty::receiver_at;

const ADAPTIVE: &str = "[report]\nmode = \"adaptive\"\nmax_error_m = 10.0\n";

fn settings() -> Settings {
    Settings::adaptive(10.0)
}

/// Fixes received (decoded from v2) until `n` distinct seqs came or `within` passed.
async fn receive(sub: &mut Subscriber, n: usize, within: Duration) -> BTreeMap<u64, Fix> {
    let mut got = BTreeMap::new();
    let _ = support::wait::poll_async(within, async || {
        if let Some(msg) = sub.next(Duration::from_millis(100)).await {
            assert!(
                (0xa0..=0xbf).contains(&msg.payload[0]),
                "a CBOR map on the fixes topic"
            );
            for (seq, fix) in cbor::decode(&msg.payload).unwrap().fixes {
                got.insert(seq, fix);
            }
        }
        got.len() >= n
    })
    .await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_sends_what_the_policy_keeps_as_compact_messages_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DriveSpec::tour();
    let log = support::agent::drive_log(dir.path(), spec.clone());
    let fixes = accepted(spec);
    let offline = run(settings(), &fixes);
    let want = offline.sent.len();
    let broker = TestBroker::start();
    let device = support::unique("truck");
    let mut sub = Subscriber::start(&broker, &format!("fleet/{device}/fixes")).await;
    let gnss = format!("{}\n\n{ADAPTIVE}", replay_gnss(&log.display().to_string()));
    let mqtt = format!("{}payload = \"cbor\"\n", quick_retry_mqtt(&broker.url()));
    let agent = Agent::start_with_mqtt(dir.path(), &device, &gnss, &mqtt, &[]);

    let got = receive(&mut sub, want, Duration::from_secs(60)).await;
    assert_eq!(got.len(), want, "every kept fix arrives, the last one too");
    let seqs: Vec<u64> = got.keys().copied().collect();
    assert_eq!(seqs, (1..=want as u64).collect::<Vec<_>>());
    for ((seq, back), sent) in got.iter().zip(&offline.sent) {
        assert_eq!(back.time_ms, sent.time_ms, "seq {seq}");
        assert!((back.lat - sent.lat).abs() <= 0.5e-7, "seq {seq}");
        assert!((back.lon - sent.lon).abs() <= 0.5e-7, "seq {seq}");
        assert_eq!(back.event, sent.event, "seq {seq}");
    }
    assert!(got.values().any(|f| f.event.is_some()));

    let (_, h) = agent.wait_health("the policy's counters", Duration::from_secs(10), |_, h| {
        h["components"]["gnss"]["kept"] == want
    });
    let gnss = &h["components"]["gnss"];
    assert_eq!(
        gnss["dropped_by_policy"].as_u64(),
        Some((fixes.len() - want) as u64),
        "{h}"
    );
    let metrics = agent.raw("/metrics");
    assert!(
        metrics.contains(&format!(
            "gps_agent_report_fixes_total{{decision=\"kept\"}} {want}"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "gps_agent_report_fixes_total{{decision=\"dropped\"}} {}",
        fixes.len() - want
    )));
    assert_eq!(
        agent.log_count("not implemented"),
        0,
        "adaptive is no longer refused"
    );
    let (code, _) = agent.terminate();
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_report_mode_and_keeps_what_was_pending() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("gps0");
    let mut master = receiver_at(&link);
    let broker = TestBroker::start();
    let device = support::unique("truck");
    let mut sub = Subscriber::start(&broker, &format!("fleet/{device}/fixes")).await;
    let serial = format!("[gnss]\nsource = \"serial\"\npath = \"{}\"", link.display());
    let mqtt = format!("{}payload = \"cbor\"\n", quick_retry_mqtt(&broker.url()));
    let agent = Agent::start_with_mqtt(
        dir.path(),
        &device,
        &format!("{serial}\n\n{ADAPTIVE}"),
        &mqtt,
        &[],
    );
    let epochs: Vec<Vec<u8>> = Drive::new(DriveSpec {
        epochs: 240,
        seed: 11,
        ..DriveSpec::default()
    })
    .unwrap()
    .map(|e| {
        let mut b = Vec::new();
        e.write_nmea(&mut b);
        b
    })
    .collect();
    let decided = |h: &serde_json::Value| {
        let g = &h["components"]["gnss"];
        g["kept"].as_u64().unwrap_or(0) + g["dropped_by_policy"].as_u64().unwrap_or(0)
    };

    // First half, adaptive. Until the agent opens the device the pty may refuse writes.
    support::wait::until("the agent to open the pty", Duration::from_secs(10), || {
        master.write_all(&epochs[0]).is_ok()
    });
    // Paced at 50 epochs a second: faster than life, slower than a flood the serial reader
    // would have to drop (and count) at a full channel.
    let pace = Duration::from_millis(20);
    for e in &epochs[1..120] {
        master.write_all(e).unwrap();
        std::thread::sleep(pace);
    }
    let (_, h) = agent.wait_health("120 fixes decided", Duration::from_secs(20), |_, h| {
        decided(h) >= 119
    });
    let dropped_before = h["components"]["gnss"]["dropped_by_policy"]
        .as_u64()
        .unwrap();
    assert!(dropped_before > 60, "adaptive drops most fixes: {h}");

    // SIGHUP with mode = "all": the second half is sent whole.
    let config = std::fs::read_to_string(&agent.config).unwrap();
    std::fs::write(
        &agent.config,
        config.replace("mode = \"adaptive\"", "mode = \"all\""),
    )
    .unwrap();
    agent.signal("-HUP");
    agent.wait_log("[report] reloaded", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("[report] reloaded"))
    });
    for e in &epochs[120..] {
        master.write_all(e).unwrap();
        std::thread::sleep(pace);
    }
    let (_, h) = agent.wait_health("240 fixes decided", Duration::from_secs(20), |_, h| {
        decided(h) >= 240
    });
    let g = &h["components"]["gnss"];
    assert_eq!(
        g["dropped_by_policy"].as_u64(),
        Some(dropped_before),
        "nothing dropped after the reload: {h}"
    );
    let kept = g["kept"].as_u64().unwrap();
    let got = receive(&mut sub, kept as usize, Duration::from_secs(30)).await;
    assert_eq!(got.len() as u64, kept);
    // Every fix of the second half arrived: 120 consecutive seconds at the end.
    let times: Vec<i64> = got.values().map(|f| f.time_ms).collect();
    let last = *times.last().unwrap();
    let tail = times.iter().filter(|t| **t > last - 120_000).count();
    assert_eq!(tail, 120, "the fixes after the reload are all sent");
    let (code, _) = agent.terminate();
    assert_eq!(code, 0);
}
