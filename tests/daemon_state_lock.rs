//! One agent per buffer, through the real binary: a second `run` on the same configuration
//! exits at once (75, `AGENT_STATE_LOCKED`, naming the first) while the first runs on, the
//! `buffer` commands still work beside it, and a killed agent leaves no lock behind.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::agent::{drive_log, Agent};
use support::broker::TestBroker;

/// `gps-agent run --config config` to its end. A hang guard only: an agent that does not
/// stop by itself is killed and the test fails.
fn run_to_end(config: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gps-agent"))
        .args(["run", "--log-format", "json", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the second agent ran on beside the first:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// An agent replaying the simulator's default drive in `dir`.
fn replaying(dir: &Path, broker: &TestBroker) -> Agent {
    let log = drive_log(dir, gps_agent::sim::DriveSpec::default());
    let device = support::unique("truck");
    Agent::replay(dir, &device, &broker.url(), &log.display().to_string())
}

fn lock_file(db: &Path) -> String {
    format!("{}.lock", db.display())
}

#[test]
fn a_second_agent_on_the_same_buffer_exits_75_at_once_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start();
    let first = replaying(dir.path(), &broker);

    let second = run_to_end(&first.config);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(75), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "gps-agent run: another gps-agent (pid {}) runs on this buffer (it holds {}); one agent per buffer\n",
            first.pid(),
            lock_file(&first.db)
        )
    );
    let logged: Vec<serde_json::Value> = String::from_utf8_lossy(&second.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        logged
            .iter()
            .any(|v| v["code"] == "AGENT_STATE_LOCKED" && v["level"] == "ERROR"),
        "{logged:?}"
    );
    assert!(
        !logged.iter().any(|v| v["message"] == "agent started"),
        "nothing of the second started: {logged:?}"
    );

    // The first runs on, and the buffer commands work beside it.
    assert_eq!(first.get("/live").0, 200);
    let stats = Command::new(env!("CARGO_BIN_EXE_gps-agent"))
        .args(["buffer", "stats", "--config"])
        .arg(&first.config)
        .output()
        .unwrap();
    assert!(
        stats.status.success(),
        "{}",
        String::from_utf8_lossy(&stats.stderr)
    );
    let (exit, _) = first.terminate();
    assert_eq!(exit, 0);
}

#[test]
fn an_agent_killed_with_sigkill_leaves_no_lock_behind() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start();
    let first = replaying(dir.path(), &broker);
    let (config, health, db, agent_log) = (
        first.config.clone(),
        first.health,
        first.db.clone(),
        first.log.clone(),
    );
    first.kill();
    // The file stays; the kernel let go of its lock with the process.
    assert!(Path::new(&lock_file(&db)).exists());
    // Returns once the new agent's health endpoint answers: it started.
    let again = Agent::restart(&config, health, &db, &agent_log);
    assert_eq!(again.get("/live").0, 200);
    assert_eq!(
        std::fs::read_to_string(lock_file(&db)).unwrap(),
        format!("{}\n", again.pid()),
        "the new holder's pid"
    );
    let (exit, _) = again.terminate();
    assert_eq!(exit, 0);
}
