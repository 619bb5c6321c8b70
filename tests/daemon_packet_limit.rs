//! Issue 14 item 2 through the real binary: a broker whose packet limit is below the agent's
//! default messages (rumqttd's `max_payload_size`, about 4 KB, against batches of 50 fixes
//! in JSON, about 9 KB, with 10 in flight). The agent used to reconnect without end and
//! deliver nothing; it must learn the limit, say `MQTT_TOO_LARGE`, and deliver the whole
//! backlog with nothing dead-lettered. (mosquitto's `max_packet_size` is the same test in
//! `interop_mosquitto.rs`.)

mod support;

use gps_agent::sim::DriveSpec;
use std::collections::BTreeSet;
use std::time::Duration;
use support::agent::{expected_fixes, Agent};
use support::broker::{BrokerOptions, Subscriber, TestBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_over_the_brokers_packet_limit_is_delivered_in_full_with_the_default_window() {
    let dir = tempfile::tempdir().unwrap();
    let log = support::agent::drive_log(
        dir.path(),
        DriveSpec {
            epochs: 600,
            ..DriveSpec::default()
        },
    );
    let expected = expected_fixes(&log);
    let broker = TestBroker::start_with(BrokerOptions {
        max_payload_size: 4000,
        ..BrokerOptions::default()
    });
    let device = support::unique("truck");
    let mut sub = Subscriber::start(&broker, &format!("fleet/{device}/fixes")).await;
    // The default [mqtt] (batch_max 50, inflight 10, JSON) but for the broker.
    let agent = Agent::replay(
        dir.path(),
        &device,
        &broker.url(),
        &log.display().to_string(),
    );

    let seen = sub.fix_seqs(expected, Duration::from_secs(60)).await;
    let missing: Vec<u64> = (1..=expected).filter(|s| !seen.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "{} of {expected} missing; health {}",
        missing.len(),
        agent.get("/health").1
    );
    assert_eq!(seen, (1..=expected).collect::<BTreeSet<u64>>());

    // `acked_seq` is the highest seq acknowledged: a message resent after the narrowing
    // reconnect may still be on its way when the last one is acknowledged. Every fix must
    // be acknowledged and gone from the buffer in the end.
    let (_, h) = agent.wait_health(
        "the backlog acknowledged",
        Duration::from_secs(10),
        |_, h| {
            h["components"]["buffer"]["acked_seq"] == expected
                && h["components"]["buffer"]["depth"] == 0
        },
    );
    let mqtt = &h["components"]["mqtt"];
    let buffer = &h["components"]["buffer"];
    assert_eq!(buffer["dead_letters"], 0, "{h}");
    assert_eq!(buffer["depth"], 0, "{h}");
    let limit = mqtt["message_limit_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("the learned limit shows in health: {h}"));
    assert!(limit < 4000, "{h}");
    assert_eq!(mqtt["last_error"]["code"], "MQTT_TOO_LARGE", "{h}");
    // A few narrowing steps, not a reconnect loop.
    let reconnects = mqtt["reconnects"].as_u64().unwrap();
    assert!((1..=6).contains(&reconnects), "{h}");
    assert_eq!(mqtt["breaker"], "closed", "{h}");
    let steps: Vec<String> = agent
        .log_lines()
        .iter()
        .filter(|v| v["code"] == "MQTT_TOO_LARGE")
        .map(|v| format!("{} bytes -> cap {}", v["bytes"], v["cap"]))
        .collect();
    eprintln!(
        "narrowed: {}; {reconnects} reconnects, cap {limit} bytes",
        steps.join(", ")
    );
    let (code, _) = agent.terminate();
    assert_eq!(code, 0);
}
