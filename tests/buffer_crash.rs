//! Power cut, as near as a test gets: a real `gps-agent buffer crash-writer` process appends
//! at full speed, a commit per fix, and is killed with SIGKILL at random moments. After each
//! kill the file must open and pass `quick_check`; the seqs acknowledged and the seqs left must
//! together run from 1 without a gap (the writer drains the oldest as an uplink would); every
//! seq reported committed is there or was acknowledged; no seq whose ack was committed comes
//! back. The same file is reused, so each run also proves that numbering continues after
//! recovery.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// xorshift64*: reproducible kill moments without another crate.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

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

/// Checks the file after a kill against everything the writers reported so far (`acked_*`
/// accumulated over the runs); returns the highest seq in the file.
fn check_file(db: &Path, committed: u64, acked_durable: u64, acked_issued: u64, run: usize) -> u64 {
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
