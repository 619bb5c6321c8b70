//! Crashes, as near as a test gets without pulling the plug (that is `tests/powercut.rs`).
//!
//! 1. A real `gps-agent buffer crash-writer` process appends at full speed (each fix to the
//!    crash journal, SQLite's commit at each sync), and is killed with SIGKILL at random
//!    moments. After each kill the buffer is opened as the agent opens it at start (the
//!    journal's fixes go into the file), then the file must open and pass `quick_check`; the seqs acknowledged and the seqs left must together run from 1
//!    without a gap (the writer drains the oldest as an uplink would); every seq reported
//!    committed is there or was acknowledged; no seq whose ack was committed comes back. The
//!    same file is reused, so each run also proves that numbering continues after recovery.
//! 2. The real daemon (`gps-agent run`) on a pty at 10 Hz is killed with SIGKILL a dozen
//!    times and started again; at the end its buffer is compared with `gps-agent parse` of the
//!    same feed: a kill may cost the epoch being assembled, nothing more
//!    (`GPS_AGENT_KILLS=N` for more kills).

mod support;

use gps_agent::sim::DriveSpec;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use support::agent::{parse_times, recover_buffer, stored_rows, Agent};
use support::relay::Relay;
use support::Prng;

const SEED: u64 = 0x005E_ED0F_C4A5_u64;
const KILLS: usize = 50;

/// What a killed writer reported before it died.
#[derive(Debug, Default, Clone, Copy)]
struct Reported {
    /// Highest seq reported committed (`c N`).
    committed: u64,
    /// Highest seq whose ack a commit made durable (`a N`): every seq up to it is gone.
    acked_durable: u64,
    /// Highest seq acknowledged at all (`i N`): a seq may be gone only if acknowledged.
    acked_issued: u64,
    /// Synced (`s N`, `A N`): a SIGKILL does not need them; parsed to keep the protocol whole.
    synced: u64,
    acked_synced: u64,
}

/// Kills one writer between 20 and 150 ms after its first commit.
fn run_and_kill(db: &Path, delay: Duration) -> Reported {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gps-agent"))
        .args([
            "buffer",
            "crash-writer",
            "--commit-ms",
            "2",
            "--commit-max",
            "100",
            "--ack-every",
            "2",
            "--ack-batch",
            "50",
            "--db",
        ])
        .arg(db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut r = Reported::default();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let (kind, seq) = line.trim().split_once(' ').unwrap();
            let seq: u64 = seq.parse().unwrap();
            let slot = match kind {
                "c" => &mut r.committed,
                "a" => &mut r.acked_durable,
                "i" => &mut r.acked_issued,
                "s" => &mut r.synced,
                "A" => &mut r.acked_synced,
                other => panic!("unknown line {other:?}"),
            };
            assert!(seq >= *slot, "{kind} seqs only grow: {seq} after {slot}");
            *slot = seq;
            if kind == "c" {
                let _ = tx.send(seq);
            }
        }
        r
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("writer printed no commit within 10 s");
    std::thread::sleep(delay);
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap()
}

/// Checks the file after a kill and the recovery against everything the writers reported so
/// far (`acked_*` accumulated over the runs); returns the highest seq in the file.
fn check_file(db: &Path, committed: u64, acked_durable: u64, acked_issued: u64, run: usize) -> u64 {
    recover_buffer(db);
    let conn = rusqlite::Connection::open(db).unwrap();
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok", "run {run}");
    let (count, min, max): (i64, Option<i64>, Option<i64>) = conn
        .query_row("SELECT count(*), min(seq), max(seq) FROM fixes", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    // The writers ack 50 of every 200 fixes, so a backlog always remains.
    let (min, max) = (min.unwrap() as u64, max.unwrap() as u64);
    assert_eq!(
        count as u64,
        max - min + 1,
        "run {run}: a gap in {min}..={max}"
    );
    assert!(
        max >= committed,
        "run {run}: reported committed {committed}, file ends at {max}"
    );
    // 1..min-1 are gone: each of them was acknowledged, and every durable ack stayed gone.
    assert!(
        min - 1 <= acked_issued,
        "run {run}: seqs up to {} gone, only {acked_issued} acknowledged",
        min - 1
    );
    assert!(
        min > acked_durable,
        "run {run}: seq {min} is back after its ack was committed ({acked_durable})"
    );
    max
}

#[test]
fn every_committed_fix_survives_sigkill_and_seqs_stay_contiguous_from_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("buffer.db");
    let mut prng = Prng(SEED);
    let mut last_max = 0;
    let (mut acked_durable, mut acked_issued) = (0, 0);
    let mut stream = None;
    for run in 0..KILLS {
        let delay = Duration::from_millis(20 + prng.next() % 131);
        let reported = run_and_kill(&db, delay);
        assert!(
            reported.committed > last_max,
            "run {run}: the writer made progress and numbered on from {last_max}"
        );
        acked_durable = acked_durable.max(reported.acked_durable);
        acked_issued = acked_issued.max(reported.acked_issued);
        last_max = check_file(&db, reported.committed, acked_durable, acked_issued, run);
        let conn = rusqlite::Connection::open(&db).unwrap();
        let s: String = conn
            .query_row("SELECT value FROM meta WHERE key = 'stream'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(
            stream.get_or_insert_with(|| s.clone()),
            &s,
            "run {run}: same stream"
        );
    }
    assert!(last_max > 1000, "the writers appended at speed: {last_max}");
    assert!(acked_durable > 100, "the writers drained: {acked_durable}");
}

#[test]
fn sigkill_of_the_daemon_loses_at_most_the_epoch_being_assembled_per_kill() {
    let kills: u32 = std::env::var("GPS_AGENT_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let dir = tempfile::tempdir().unwrap();
    let spec = DriveSpec {
        rate_hz: 10,
        epochs: 12 * kills + 40,
        ..DriveSpec::default()
    };
    let log = support::agent::drive_log(dir.path(), spec.clone());
    let expected = parse_times(&log);
    let link = dir.path().join("gps0");
    let relay = Relay::start(&link, spec, SEED);
    let gnss = format!("[gnss]\nsource = \"serial\"\npath = \"{}\"", link.display());
    // The default sync interval: a SIGKILL must not need the sync.
    let db = dir.path().join("buffer.db");
    let buffer = format!("[buffer]\npath = \"{}\"", db.display());
    // No broker: everything stays in the buffer, where the test counts it.
    let nowhere = format!("mqtt://{}", support::broker::free_port());
    let device = support::unique("truck");
    let start = || {
        let agent = Agent::start_with_buffer(dir.path(), &device, &gnss, &buffer, &nowhere, &[]);
        agent.wait_log("gnss device open", |v| v["message"] == "gnss device open");
        relay.resume();
        agent
    };
    let mut prng = Prng(SEED ^ 0xDAE0);
    for _ in 0..kills {
        let agent = start();
        std::thread::sleep(Duration::from_millis(300 + prng.next() % 900));
        relay.quiesce();
        agent.signal("-KILL");
        drop(agent);
    }
    let agent = start();
    relay.drain(Duration::from_secs(120));
    let (code, _) = agent.terminate();
    assert_eq!(code, 0);

    let rows = stored_rows(&db);
    let seqs: Vec<u64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(
        seqs,
        (1..=rows.len() as u64).collect::<Vec<_>>(),
        "seqs run from 1 without a gap over {kills} kills"
    );
    let stored: BTreeSet<i64> = rows.iter().map(|r| r.1).collect();
    assert_eq!(stored.len(), rows.len(), "no fix stored twice");
    let extra: Vec<_> = stored.difference(&expected).collect();
    assert!(extra.is_empty(), "fixes parse does not make: {extra:?}");
    let lost: Vec<_> = expected.difference(&stored).collect();
    println!(
        "{kills} SIGKILLs: {} of {} fixes stored, {} lost",
        stored.len(),
        expected.len(),
        lost.len()
    );
    assert!(
        lost.len() <= kills as usize,
        "{} fixes lost over {kills} kills (at most the epoch being assembled each): {lost:?}",
        lost.len()
    );
}
