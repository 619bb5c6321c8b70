//! Power cuts, simulated below the process: `tests/powercut/shim.c`, compiled here with the
//! system `cc` and loaded with `LD_PRELOAD`, gives the tracked files a volatile write cache
//! (what was not synced may be lost, partly kept, torn at 512-byte sectors, or kept out of
//! order; see the shim's header). At a cut it rewrites the files to one such outcome and ends
//! the process at once, as the power would.
//!
//! 1. `gps-agent buffer crash-writer` appends (each fix to the crash journal, a commit and a
//!    sync every 20 fixes),
//!    drains the oldest, checkpoints often, and is cut at a random write or sync;
//!    2,000 cuts by default in two lanes (`GPS_AGENT_POWERCUTS=N` for more). After each cut
//!    the buffer is opened as the agent opens it at start (what the crash journal kept goes
//!    into the file, nothing is moved aside), then the file opens, `integrity_check` passes, the stream is the same, the seqs left run
//!    without a gap, every seq the writer reported synced is there or was acknowledged, no
//!    fix whose acknowledgement was synced comes back, and the next run numbers on from the
//!    file's last seq. The files live in `/dev/shm` when it exists: the shim, not the disk,
//!    decides what survives, and real fsyncs would only slow the test.
//! 2. The real daemon on a pty at 10 Hz, cut several times through the shim's control file
//!    and started again: each cut costs at most the sync interval (1 s of fixes) plus the
//!    epoch being assembled; after SIGPWR, at most the epoch being assembled.

mod support;

use gps_agent::sim::DriveSpec;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::agent::{recover_buffer, stored_rows, Agent};
use support::relay::Relay;
use support::shim::powercut_shim;
use support::Prng;

/// A scratch directory on a RAM file system when there is one.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new().prefix("powercut").tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

/// What one writer reported before the power went.
#[derive(Debug, Default, Clone, Copy)]
struct Reported {
    first_committed: Option<u64>,
    committed: u64,
    synced: u64,
    acked_issued: u64,
    acked_synced: u64,
}

/// What a lane knows across its cuts.
#[derive(Debug, Default, Clone)]
struct Lane {
    stream: Option<String>,
    /// Highest seq ever reported synced: there, or acknowledged.
    synced: u64,
    /// Highest seq whose acknowledgement was synced: never back.
    acked_synced: u64,
    /// Highest seq acknowledged at all: a seq may be gone only up to here.
    acked_issued: u64,
    /// The file's last seq after the previous cut: the next run goes on from it.
    last_seq: Option<u64>,
}

fn run_writer(dir: &Path, seed: u64, after: u64) -> (Reported, Option<i32>) {
    let db = dir.join("buffer.db");
    let child = Command::new(env!("CARGO_BIN_EXE_gps-agent"))
        .args([
            "buffer",
            "crash-writer",
            // Syncs by count only, never by time: a run is the same every time it is
            // replayed with the same seed and cut point.
            "--commit-ms",
            "600000",
            "--commit-max",
            "20",
            "--ack-every",
            "2",
            "--ack-batch",
            "25",
            "--checkpoint-frames",
            "40",
            "--db",
        ])
        .arg(&db)
        .env("LD_PRELOAD", powercut_shim())
        .env("POWERCUT_DIR", dir)
        .env("POWERCUT_AFTER", after.to_string())
        .env("POWERCUT_SEED", seed.to_string())
        .env("POWERCUT_LOG", dir.join("cuts.log"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let mut r = Reported::default();
    for line in BufReader::new(&output.stdout[..]).lines() {
        let line = line.unwrap();
        let (kind, seq) = line.split_once(' ').unwrap();
        let seq: u64 = seq.parse().unwrap();
        match kind {
            "c" => {
                r.first_committed.get_or_insert(seq);
                r.committed = seq;
            }
            "s" => r.synced = seq,
            "i" => r.acked_issued = seq,
            "A" => r.acked_synced = seq,
            "a" => {}
            other => panic!("unknown line {other:?}"),
        }
    }
    (r, output.status.code())
}

/// The file after a cut, read without the shim and without changing it (no checkpoint on
/// close: the next writer must meet the WAL as the cut left it).
fn inspect(db: &Path) -> Option<(String, Vec<u64>, u64)> {
    if !db.exists() {
        return None;
    }
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok", "integrity_check");
    let app_id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .unwrap();
    if app_id == 0 {
        // Cut while the file was being created: nothing in it was ever synced.
        return None;
    }
    assert_eq!(app_id, gps_agent::buffer::APPLICATION_ID);
    let stream: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'stream'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let seqs: Vec<u64> = conn
        .prepare("SELECT seq FROM fixes ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|s| s.unwrap() as u64)
        .collect();
    let meta_last: i64 = conn
        .query_row("SELECT value FROM meta WHERE key = 'last_seq'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let last = (meta_last.max(0) as u64).max(seqs.last().copied().unwrap_or(0));
    Some((stream, seqs, last))
}

/// Cuts per file: then a fresh one (small files keep each check quick).
const CUTS_PER_FILE: u64 = 250;

/// One lane: cuts `from..to` on one file (a fresh file every `CUTS_PER_FILE` cuts). Returns
/// the seqs synced over the lane, for the summary.
fn lane(lane_no: u64, from: u64, to: u64) -> u64 {
    let mut prng = Prng(0xC0FF_EE00 + lane_no);
    let mut dir = scratch();
    let mut state = Lane::default();
    let mut synced_total = 0;
    for cut in 0..to {
        let seed = prng.next();
        // Mostly mid-run; one in eight early, while the file is created or recovered.
        let after = if prng.next().is_multiple_of(8) {
            1 + prng.next() % 40
        } else {
            1 + prng.next() % 400
        };
        if cut < from {
            continue;
        }
        if cut > from && cut.is_multiple_of(CUTS_PER_FILE) {
            dir = scratch();
            state = Lane::default();
        }
        if std::env::var_os("GPS_AGENT_POWERCUT_KEEP").is_some() && cut + 1 == to {
            let kept = dir.path().with_extension("before-last");
            let _ = Command::new("cp")
                .arg("-a")
                .arg(dir.path())
                .arg(&kept)
                .status();
            println!(
                "lane {lane_no}: the file before cut {cut} kept in {}",
                kept.display()
            );
        }
        let replay =
            format!("lane {lane_no} cut {cut}: POWERCUT_SEED={seed} POWERCUT_AFTER={after}");
        let (r, code) = run_writer(dir.path(), seed, after);
        assert_eq!(
            code,
            Some(137),
            "{replay}: the writer did not end at the cut"
        );
        let db = dir.path().join("buffer.db");
        recover_buffer(&db);
        let moved: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".corrupt-") || n.contains(".displaced-"))
            .collect();
        assert!(
            moved.is_empty(),
            "{replay}: the writer moved the file aside: {moved:?}\n{}",
            std::fs::read_to_string(dir.path().join("cuts.log")).unwrap_or_default()
        );
        // The run went on from the file the previous cut left.
        if let (Some(first), Some(last)) = (r.first_committed, state.last_seq) {
            assert_eq!(
                first,
                last + 1,
                "{replay}: numbering did not go on from the file"
            );
        }
        state.synced = state.synced.max(r.synced);
        state.acked_synced = state.acked_synced.max(r.acked_synced);
        state.acked_issued = state.acked_issued.max(r.acked_issued);
        synced_total += r.synced.saturating_sub(r.first_committed.unwrap_or(1) - 1);
        let Some((stream, seqs, last)) = inspect(&db) else {
            assert_eq!(
                state.synced, 0,
                "{replay}: the file is gone after seq {} was synced",
                state.synced
            );
            state = Lane::default();
            continue;
        };
        if state.stream.as_ref().is_some_and(|s| *s != stream) {
            assert_eq!(
                state.synced, 0,
                "{replay}: a new stream after seqs were synced"
            );
            state = Lane::default();
        }
        state.stream = Some(stream);
        if let (Some(&min), Some(&max)) = (seqs.first(), seqs.last()) {
            assert_eq!(
                seqs.len() as u64,
                max - min + 1,
                "{replay}: a gap in {min}..={max}"
            );
            assert!(
                min > state.acked_synced,
                "{replay}: seq {min} is back after its ack was synced ({})",
                state.acked_synced
            );
            assert!(
                min - 1 <= state.acked_issued,
                "{replay}: seqs up to {} gone, only {} acknowledged",
                min - 1,
                state.acked_issued
            );
        } else {
            assert!(
                state.synced <= state.acked_issued,
                "{replay}: the file is empty, seq {} was synced and never acknowledged",
                state.synced
            );
        }
        assert!(
            last >= state.synced,
            "{replay}: synced up to {}, the file ends at {last}",
            state.synced
        );
        state.last_seq = Some(last);
    }
    synced_total
}

/// `GPS_AGENT_POWERCUT_REPLAY=lane:from:to` replays cuts `from..to` of one lane (start
/// `from` at a multiple of 250, where that lane began a fresh file);
/// `GPS_AGENT_POWERCUT_KEEP=1` keeps a copy of the files before the last cut.
#[test]
fn power_cuts_never_lose_a_synced_fix_nor_break_the_file() {
    let total: u64 = std::env::var("GPS_AGENT_POWERCUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    powercut_shim();
    let started = Instant::now();
    let replay: Option<Vec<u64>> = std::env::var("GPS_AGENT_POWERCUT_REPLAY")
        .ok()
        .map(|v| v.split(':').map(|n| n.parse().unwrap()).collect());
    if let Some([lane_no, from, to]) = replay.as_deref() {
        lane(*lane_no, *from, *to);
        return;
    }
    let lanes: Vec<_> = (0..2)
        .map(|n| std::thread::spawn(move || lane(n, 0, total / 2 + total % 2 * (1 - n))))
        .collect();
    let synced: u64 = lanes.into_iter().map(|l| l.join().unwrap()).sum();
    println!(
        "{total} power cuts in {:.0} s: the file always opened and passed integrity_check, \
         {synced} synced fixes all survived",
        started.elapsed().as_secs_f64()
    );
}

/// The real daemon on a pty under the shim, with a control file to cut the power.
struct Rig {
    dir: tempfile::TempDir,
    relay: Relay,
    gnss: String,
    buffer: String,
    ctl: PathBuf,
    device: String,
    nowhere: String,
    drive: Vec<i64>,
}

impl Rig {
    fn new(epochs: u32) -> Rig {
        let dir = scratch();
        let spec = DriveSpec {
            rate_hz: 10,
            epochs,
            ..DriveSpec::default()
        };
        let drive = gps_agent::sim::Drive::new(spec.clone())
            .unwrap()
            .map(|e| {
                assert!(e.is_good(), "a clean drive: every epoch makes a fix");
                e.time_ms
            })
            .collect();
        let link = dir.path().join("gps0");
        let relay = Relay::start(&link, spec, 0x5EED);
        let gnss = format!("[gnss]\nsource = \"serial\"\npath = \"{}\"", link.display());
        let db = dir.path().join("state").join("buffer.db");
        let buffer = format!("[buffer]\npath = \"{}\"", db.display());
        Rig {
            ctl: dir.path().join("power"),
            device: support::unique("truck"),
            nowhere: format!("mqtt://{}", support::broker::free_port()),
            dir,
            relay,
            gnss,
            buffer,
            drive,
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("state").join("buffer.db")
    }

    /// The agent with the power on, reading the feed; returns it with the count of lines
    /// fed before it started.
    fn start(&self) -> (Agent, u64) {
        std::fs::write(&self.ctl, "ok").unwrap();
        let env = [
            ("LD_PRELOAD", powercut_shim().display().to_string()),
            (
                "POWERCUT_DIR",
                self.dir.path().join("state").display().to_string(),
            ),
            ("POWERCUT_CTL", self.ctl.display().to_string()),
            ("POWERCUT_SEED", "7".to_string()),
        ];
        let agent = Agent::start_with_buffer(
            self.dir.path(),
            &self.device,
            &self.gnss,
            &self.buffer,
            &self.nowhere,
            &env,
        );
        agent.wait_log("gnss device open", |v| v["message"] == "gnss device open");
        let lines = self.relay.lines.load(Ordering::SeqCst);
        self.relay.resume();
        (agent, lines)
    }

    /// Cuts the power under `agent` once it has handled every sentence it was fed (so what
    /// the cut costs is the buffer's doing, not a busy machine's lag): returns the receiver
    /// time of the newest epoch the agent had read in full.
    fn cut(&self, (agent, lines_before): (Agent, u64)) -> i64 {
        self.relay.quiesce();
        let fed = self.relay.written.load(Ordering::SeqCst) as usize;
        let lines = self.relay.lines.load(Ordering::SeqCst) - lines_before;
        let mut handled = 0.0;
        let caught_up = support::wait::poll(Duration::from_secs(10), || {
            handled = agent
                .raw("/metrics")
                .lines()
                .filter(|l| l.starts_with("gps_agent_nmea_sentences_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
            handled as u64 >= lines
        });
        assert!(
            caught_up.is_some(),
            "the agent handled {handled} of {lines} sentences"
        );
        std::fs::write(&self.ctl, "cut").unwrap();
        let code = agent.wait_exit(Duration::from_secs(10));
        assert_eq!(code, Some(137), "the daemon ended at the cut");
        self.drive[fed.saturating_sub(1)]
    }
}

#[test]
fn power_cuts_under_the_daemon_cost_at_most_the_sync_interval_each() {
    let cuts = 4;
    let rig = Rig::new(200);
    let mut prng = Prng(0xF00D);
    let mut worst_ms = 0;
    for k in 0..cuts {
        let running = rig.start();
        std::thread::sleep(Duration::from_millis(1500 + prng.next() % 1500));
        let newest_fed = rig.cut(running);
        let kept = stored_rows(&rig.db());
        let seqs: Vec<u64> = kept.iter().map(|r| r.0).collect();
        assert_eq!(
            seqs,
            (1..=kept.len() as u64).collect::<Vec<_>>(),
            "cut {k}: seqs without a gap"
        );
        // Everything but the last second (the sync interval) and the epoch being assembled.
        let newest_kept = kept.last().map_or(0, |r| r.1);
        let window = newest_fed - newest_kept;
        worst_ms = worst_ms.max(window);
        // The sync interval (1 s), the ingest thread's tick (0.1 s), the epoch in assembly.
        assert!(
            window <= 1000 + 100 + 100,
            "cut {k}: the fixes of the last {window} ms before the cut were lost"
        );
    }
    let moved: Vec<_> = std::fs::read_dir(rig.dir.path().join("state"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".corrupt-"))
        .collect();
    assert!(moved.is_empty(), "a cut file was moved aside: {moved:?}");
    println!("{cuts} power cuts under the daemon at 10 Hz: at most {worst_ms} ms of fixes lost");
}

#[test]
fn after_sigpwr_a_power_cut_costs_only_the_epoch_being_assembled() {
    let rig = Rig::new(120);
    let running = rig.start();
    let agent = &running.0;
    std::thread::sleep(Duration::from_millis(1500));
    agent.signal("-PWR");
    let line = agent.wait_log("the SIGPWR sync", |v| v["signal"] == "SIGPWR");
    let synced = line["synced_seq"]
        .as_u64()
        .expect("the synced seq is logged");
    assert!(synced > 0, "{line}");
    // A long sync interval would lose a second; after SIGPWR every fix is synced at once.
    std::thread::sleep(Duration::from_millis(1200));
    let newest_fed = rig.cut(running);
    let kept = stored_rows(&rig.db());
    assert!(
        kept.len() as u64 >= synced,
        "{} fixes kept, {synced} were synced at SIGPWR",
        kept.len()
    );
    let newest_kept = kept.last().map_or(0, |r| r.1);
    assert!(
        newest_fed - newest_kept <= 100,
        "after SIGPWR the fixes of the last {} ms were lost",
        newest_fed - newest_kept
    );
    let kept_times: BTreeSet<i64> = kept.iter().map(|r| r.1).collect();
    assert_eq!(kept_times.len(), kept.len());
}
