//! Power cut, as near as a test gets: a real `gps-agent buffer crash-writer` process appends
//! at full speed with group commit and is killed with SIGKILL at random moments. After each
//! kill the file must open, pass `quick_check`, hold seqs 1..=n without a gap, and hold every
//! seq the writer reported as committed. The same file is reused, so each run also proves
//! that numbering continues correctly after recovery.

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

/// Kills one writer between 20 and 150 ms after its first commit; returns the highest seq it
/// reported as committed.
fn run_and_kill(db: &Path, delay: Duration) -> u64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gps-agent"))
        .args([
            "buffer",
            "crash-writer",
            "--commit-ms",
            "2",
            "--commit-max",
            "100",
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
        let mut max = 0u64;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let seq: u64 = line.trim().parse().unwrap();
            assert!(seq >= max, "committed seqs only grow: {seq} after {max}");
            max = seq;
            let _ = tx.send(seq);
        }
        max
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("writer printed no commit within 10 s");
    std::thread::sleep(delay);
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap()
}

fn check_file(db: &Path, reported: u64, run: usize) -> u64 {
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
    // Nothing is acknowledged by the writer, so every seq from 1 must still be there.
    assert_eq!(min, Some(1), "run {run}");
    let max = max.unwrap() as u64;
    assert_eq!(count as u64, max, "run {run}: a gap in 1..={max}");
    assert!(
        max >= reported,
        "run {run}: reported committed {reported}, file ends at {max}"
    );
    max
}

#[test]
fn every_committed_fix_survives_sigkill_and_seqs_stay_contiguous_from_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("buffer.db");
    let mut prng = Prng(SEED);
    let mut last_max = 0;
    let mut stream = None;
    for run in 0..KILLS {
        let delay = Duration::from_millis(20 + prng.next() % 131);
        let reported = run_and_kill(&db, delay);
        assert!(reported > last_max, "run {run}: the writer made progress");
        last_max = check_file(&db, reported, run);
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
}
