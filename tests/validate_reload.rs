//! The motion check's `[validate]` keys are applied on SIGHUP, through the real binary: a
//! 10 Hz drive with frozen positions replayed at the receiver's pace; the frozen epochs are
//! rejected until the operator switches the check off and reloads, and accepted after.

mod support;

use gps_agent::sim::{Drive, DriveSpec, FaultKind, FaultSpec};
use std::time::Duration;
use support::agent::Agent;
use support::broker::TestBroker;

/// `gps_agent_fixes_total` by outcome: (accepted, rejected as frozen, rejected in all).
fn fix_totals(agent: &Agent) -> (u64, u64, u64) {
    let metrics = agent.raw("/metrics");
    let (mut accepted, mut frozen, mut rejected) = (0, 0, 0);
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("gps_agent_fixes_total{") else {
            continue;
        };
        let n: u64 = rest.rsplit(' ').next().unwrap().parse().unwrap();
        if rest.contains("outcome=\"accepted\"") {
            accepted += n;
        } else {
            rejected += n;
            if rest.contains("reason=\"frozen\"") {
                frozen += n;
            }
        }
    }
    (accepted, frozen, rejected)
}

#[test]
fn sighup_applies_the_motion_check_keys_to_the_running_validator() {
    let dir = tempfile::tempdir().unwrap();
    // 15 s at 10 Hz; about one epoch in seven starts a frozen run of 1-3 epochs.
    let spec = DriveSpec {
        rate_hz: 10,
        epochs: 150,
        faults: Some(FaultSpec {
            rate: 0.15,
            kinds: &[FaultKind::Frozen],
        }),
        ..DriveSpec::default()
    };
    let frozen_in_drive = Drive::new(spec.clone())
        .unwrap()
        .filter(|e| e.fault == Some(FaultKind::Frozen))
        .count() as u64;
    assert!(frozen_in_drive >= 15, "{frozen_in_drive}");
    let log = support::agent::drive_log(dir.path(), spec);
    let broker = TestBroker::start();
    let gnss = format!(
        "[gnss]\nsource = \"file\"\npath = \"{}\"\npace = \"realtime\"",
        log.display()
    );
    let agent = Agent::start(
        dir.path(),
        &support::unique("truck"),
        &gnss,
        &broker.url(),
        &[],
    );

    // The default check rejects the frozen epochs as they come.
    support::wait::until("3 frozen epochs rejected", Duration::from_secs(60), || {
        fix_totals(&agent).1 >= 3
    });

    // The operator switches the check off (and touches the other new keys) and reloads.
    let text = std::fs::read_to_string(&agent.config).unwrap();
    let text = text.replace(
        "[mqtt]\n",
        "[validate]\nmotion_check = false\nmax_accel_mps2 = 4.0\nmax_yaw_rate_dps = 30.0\nposition_noise_m = 20.0\n\n[mqtt]\n",
    );
    std::fs::write(&agent.config, text).unwrap();
    agent.signal("-HUP");
    agent.wait_log("thresholds reloaded", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("validation thresholds reloaded"))
    });
    let (_, frozen_at_reload, _) = fix_totals(&agent);

    // Every epoch gets its verdict by the end of the drive.
    let mut totals = (0, 0, 0);
    let (accepted, frozen, rejected) = support::wait::poll(Duration::from_secs(90), || {
        totals = fix_totals(&agent);
        (totals.0 + totals.2 >= 150).then_some(totals)
    })
    .unwrap_or_else(|| panic!("not every epoch judged: {totals:?}"));
    assert_eq!(accepted + rejected, 150);
    // One frozen epoch may have been on its way through the old validator.
    assert!(
        frozen <= frozen_at_reload + 1,
        "frozen {frozen}, {frozen_at_reload} at the reload"
    );
    assert!(
        frozen < frozen_in_drive,
        "the frozen epochs after the reload were accepted: {frozen} of {frozen_in_drive}"
    );
    assert_eq!(rejected, frozen, "nothing else was rejected");
    let (exit, _) = agent.terminate();
    assert_eq!(exit, 0);
}
