//! `gps-agent parse --report` through the real binary, on the simulator's tour: what adaptive
//! reporting would keep of a capture, and what it would cost.

mod support;

use gps_agent::sim::DriveSpec;
use std::process::Command;

fn parse_report(config: Option<&std::path::Path>, log: &std::path::Path) -> (String, String, i32) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gps-agent"));
    cmd.env_remove("GPS_AGENT_CONFIG")
        .arg("parse")
        .arg("--report");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd.arg(log).output().unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// The number after `key` in `text`.
fn number_after(text: &str, key: &str) -> f64 {
    let rest = &text[text.find(key).unwrap_or_else(|| panic!("{key} in {text}")) + key.len()..];
    let n: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    n.parse()
        .unwrap_or_else(|_| panic!("a number after {key} in {text}"))
}

#[test]
fn parse_report_tells_what_adaptive_reporting_keeps_and_costs() {
    let dir = tempfile::tempdir().unwrap();
    let log = support::agent::drive_log(dir.path(), DriveSpec::tour());
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[report]\nmode = \"adaptive\"\nmax_error_m = 10\n").unwrap();
    let (out, err, code) = parse_report(Some(&config), &log);
    println!("{out}");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("1800 fixes accepted"), "{err}");
    assert!(out.starts_with("report: adaptive, max_error_m 10"), "{out}");
    let kept = number_after(&out, "kept:");
    assert!((40.0..=150.0).contains(&kept), "{out}");
    let optimum = number_after(&out, "keeps");
    assert!(kept <= 1.3 * optimum, "{out}");
    assert!(number_after(&out, "while moving: max") <= 10.0, "{out}");
    assert!(number_after(&out, "95th percentile") <= 10.0, "{out}");
    // A light of more than 30 s and the parked spell.
    assert!(out.contains("events: 2 stop, 2 start"), "{out}");
    assert!(out.contains("in messages of 50 (mqtt.batch_max)"), "{out}");
    assert!(out.contains("one message a minute"), "{out}");
    let v2 = number_after(&out, "v2 CBOR");
    let v1 = number_after(&out, "v1 JSON");
    assert!(v2 * 6.0 < v1, "{out}");

    // With the defaults (mode = "all"): every fix kept, no error.
    let (out, _, code) = parse_report(None, &log);
    assert_eq!(code, 0);
    assert!(
        out.contains("kept: 1800 of 1800 accepted fixes (100.0%)"),
        "{out}"
    );
    assert!(out.contains("max 0.00 m"), "{out}");

    // --report and --all do not go together.
    let out = Command::new(env!("CARGO_BIN_EXE_gps-agent"))
        .args(["parse", "--report", "--all"])
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
