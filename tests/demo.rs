//! `gps-agent demo` as a newcomer runs it (shortened): it ends by itself, loses nothing, and
//! says so.

#![cfg(feature = "demo")]

use std::process::Command;

#[test]
fn the_demo_runs_a_drive_through_an_outage_and_reports_nothing_lost() {
    let out = Command::new(env!("CARGO_BIN_EXE_gps-agent"))
        .args(["demo", "--epochs", "120", "--rate", "10", "--outage-s", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("broker link cut"), "{stdout}");
    assert!(stdout.contains("broker link restored"), "{stdout}");
    assert!(
        stdout.contains("   health "),
        "the health stream is shown: {stdout}"
    );
    let lost = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("lost"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no summary: {stdout}"));
    assert_eq!(lost, "0", "{stdout}");
    let accepted: u64 = stdout
        .lines()
        .filter(|l| l.contains("fixes accepted"))
        .find_map(|l| l.trim().strip_prefix("agent"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no accepted count: {stdout}"));
    assert!(
        accepted >= 90,
        "most of the 120 epochs have a fix: {stdout}"
    );
    assert!(
        stdout.contains("no_fix"),
        "the tunnel shows as no_fix: {stdout}"
    );
    assert!(
        stdout.contains("checksum"),
        "corrupt lines show as checksum: {stdout}"
    );
    // The demo measures it itself: from giving the link back to the first fix its
    // subscriber received. The agent probes the broker's port while it is unreachable and
    // connects as soon as it answers (about a second and a half after a short outage);
    // before, backoff and the breaker kept it away for up to a minute.
    let blind: f64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("blind"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no blind time in the summary: {stdout}"));
    assert!(
        blind < 10.0,
        "blind {blind} s after the link returned: {stdout}"
    );

    // Only the demo's own story on the terminal; the logs in a file named at both ends.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim().is_empty(), "nothing on stderr: {stderr}");
    for line in stdout.lines() {
        assert!(
            !line.starts_with('{')
                && !line.contains(" INFO ")
                && !line.contains(" WARN ")
                && !line.contains(" ERROR "),
            "a log line on the demo's terminal: {line}"
        );
    }
    let named: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once("logs ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_whitespace().last())
        .map(|p| p.trim_end_matches(')'))
        .collect();
    assert_eq!(
        named.len(),
        2,
        "the log file named at the start and the end: {stdout}"
    );
    assert_eq!(named[0], named[1]);
    let log = std::fs::read_to_string(named[0]).expect("the named log file");
    let _ = std::fs::remove_file(named[0]);
    assert!(log.contains("agent started"), "{log}");
    assert!(
        !log.contains("SIM_WRITE"),
        "a normal start has no write warning: {log}"
    );
}
