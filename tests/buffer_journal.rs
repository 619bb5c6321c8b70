//! The crash journal (`<buffer>-fixlog`) as an attacker or a careless installer meets it: the
//! defects 1 to 5 of issue 22's second probe, each through the real binary. A record is
//! forged here as anyone who reads `src/buffer/journal.rs` can forge one: the layout and an
//! FNV-1a checksum. Faults of the journal alone come from the power-cut shim with its
//! directory set to the journal's path.

mod support;

use gps_agent::sim::DriveSpec;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::agent::{drive_log, expected_fixes, read_log, stored_rows, Agent};
use support::broker::{free_port, ReceivedFix, Subscriber, TestBroker};
use support::shim::fault_env;

const RECORD_LEN: usize = 88;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A journal record: what one fix of the journal says, checksum and all.
#[derive(Clone, Copy)]
struct Forged {
    seq: u64,
    time_ms: i64,
    lat: f64,
    lon: f64,
    alt_m: Option<f64>,
    speed_mps: Option<f64>,
    course_deg: Option<f64>,
    hdop: Option<f64>,
}

impl Forged {
    fn good(seq: u64, time_ms: i64) -> Forged {
        Forged {
            seq,
            time_ms,
            lat: 48.1,
            lon: 11.5,
            alt_m: Some(520.0),
            speed_mps: Some(12.5),
            course_deg: Some(90.0),
            hdop: Some(0.9),
        }
    }

    fn bytes(&self, stream: &str) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        let mut present = 0u8;
        let fields = [self.alt_m, self.speed_mps, self.course_deg, self.hdop];
        for (bit, v) in fields.iter().enumerate() {
            if v.is_some() {
                present |= 1 << bit;
            }
        }
        b[..4].copy_from_slice(&[b'G', b'J', 1, present]);
        b[4..12].copy_from_slice(&fnv1a(stream.as_bytes()).to_le_bytes());
        b[12..20].copy_from_slice(&self.seq.to_le_bytes());
        b[20..28].copy_from_slice(&self.time_ms.to_le_bytes());
        let values = [self.lat, self.lon]
            .into_iter()
            .chain(fields.map(|v| v.unwrap_or(0.0)));
        for (i, v) in values.enumerate() {
            b[28 + 8 * i..36 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        // No satellites; 3D; no event.
        b[77] = 3;
        let sum = fnv1a(&b[..80]);
        b[80..].copy_from_slice(&sum.to_le_bytes());
        b
    }
}

fn journal_of(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-fixlog", db.display()))
}

fn stream_of(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT value FROM meta WHERE key = 'stream'", [], |r| {
        r.get(0)
    })
    .unwrap()
}

/// Writes `records` into the journal from its start, as an attacker with the state
/// directory would (over the zeros a clean stop left).
fn forge(db: &Path, records: &[Forged]) {
    use std::os::unix::fs::FileExt;
    let stream = stream_of(db);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(journal_of(db))
        .unwrap();
    for (i, r) in records.iter().enumerate() {
        file.write_all_at(&r.bytes(&stream), (i * RECORD_LEN) as u64)
            .unwrap();
    }
}

/// The journal's slots: the seq of one that holds a record (by its magic; 0 for a record of
/// the local history alone), `None` for zeros.
fn journal_slots(db: &Path) -> Vec<Option<u64>> {
    journal_records(db)
        .into_iter()
        .map(|r| r.map(|(seq, _)| seq))
        .collect()
}

/// The journal's slots: (seq, whether the fix is the local history's too) of one that holds
/// a record, `None` for zeros.
fn journal_records(db: &Path) -> Vec<Option<(u64, bool)>> {
    let bytes = std::fs::read(journal_of(db)).unwrap_or_default();
    bytes
        .chunks_exact(RECORD_LEN)
        .map(|c| {
            let seq = u64::from_le_bytes(c[12..20].try_into().unwrap());
            // A queued fix's presence bit 32: the history's too.
            c.starts_with(b"GJ")
                .then_some((seq, seq == 0 || c[3] & 32 != 0))
        })
        .collect()
}

fn dead_letters(db: &Path) -> Vec<(u64, String, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT seq, code, reason FROM dead_letters ORDER BY seq")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows
}

/// An agent that delivered a first drive and stopped cleanly (its journal emptied), with the
/// broker and a subscriber to its fixes: (dir, broker, subscriber, config, health, db, log,
/// fixes delivered).
struct Stopped {
    dir: tempfile::TempDir,
    /// Kept running for the restart.
    _broker: TestBroker,
    sub: Subscriber,
    agent_config: PathBuf,
    health: std::net::SocketAddr,
    db: PathBuf,
    log: PathBuf,
    delivered: u64,
}

fn spec(start_time_ms: i64, seed: u64) -> DriveSpec {
    DriveSpec {
        rate_hz: 10,
        epochs: 60,
        start_time_ms,
        seed,
        ..DriveSpec::default()
    }
}

async fn first_drive_delivered_and_stopped() -> Stopped {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start();
    let device = support::unique("truck");
    let mut sub = Subscriber::start(&broker, &format!("fleet/{device}/fixes")).await;
    let log = drive_log(dir.path(), spec(DriveSpec::default().start_time_ms, 1));
    let n = expected_fixes(&log);
    let agent = Agent::replay(dir.path(), &device, &broker.url(), log.to_str().unwrap());
    let seqs = sub.fix_seqs(n, Duration::from_secs(30)).await;
    assert_eq!(seqs, (1..=n).collect(), "the first drive arrives whole");
    let (health, config, agent_log) = (agent.health, agent.config.clone(), agent.log.clone());
    let (code, db) = agent.terminate();
    assert_eq!(code, 0);
    assert!(
        journal_slots(&db).iter().all(Option::is_none),
        "a clean stop empties the journal"
    );
    Stopped {
        dir,
        _broker: broker,
        sub,
        agent_config: config,
        health,
        db,
        log: agent_log,
        delivered: n,
    }
}

/// The fixes the subscriber receives with a seq above `after` (a fix of the first drive sent
/// again, as the spec allows, is passed over), until `count` distinct seqs came or 30 s
/// passed.
async fn fixes_after(sub: &mut Subscriber, after: u64, count: u64) -> Vec<ReceivedFix> {
    let mut got: Vec<ReceivedFix> = Vec::new();
    let mut seqs = BTreeSet::new();
    let _ = support::wait::poll_async(Duration::from_secs(30), async || {
        if let Some(msg) = sub.next(Duration::from_millis(100)).await {
            for f in msg.fixes().into_iter().filter(|f| f.seq > after) {
                if seqs.insert(f.seq) {
                    got.push(f);
                }
            }
        }
        seqs.len() as u64 >= count
    })
    .await;
    got
}

impl Stopped {
    /// The agent started again on the same configuration, reading a second drive an hour
    /// after the first; returns it and the fixes that drive holds.
    fn restart_with_second_drive(&self) -> (Agent, u64) {
        let later = DriveSpec::default().start_time_ms + 3_600_000;
        let log = drive_log(self.dir.path(), spec(later, 2));
        let n = expected_fixes(&log);
        let agent = Agent::restart(&self.agent_config, self.health, &self.db, &self.log);
        (agent, n)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_journal_record_with_a_nan_latitude_is_dead_lettered_and_the_fixes_after_it_flow()
{
    let mut s = first_drive_delivered_and_stopped().await;
    let n = s.delivered;
    let mut bad = Forged::good(n + 1, DriveSpec::default().start_time_ms + 60_000);
    bad.lat = f64::NAN;
    forge(&s.db, &[bad]);
    let (agent, m) = s.restart_with_second_drive();
    // The bad record takes seq n+1 into the dead letters; the second drive follows it.
    let got = fixes_after(&mut s.sub, n, m).await;
    let seqs: BTreeSet<u64> = got.iter().map(|f| f.seq).collect();
    assert_eq!(seqs, (n + 2..=n + 1 + m).collect::<BTreeSet<u64>>());
    let (_, h) = agent.wait_health("the dead letter", Duration::from_secs(10), |_, h| {
        h["components"]["buffer"]["dead_letters"] == 1
    });
    let buffer = &h["components"]["buffer"];
    assert_eq!(buffer["last_error"]["code"], "BUFFER_CORRUPT_RECORD", "{h}");
    assert_eq!(buffer["in_memory"], 0, "{h}");
    let (code, db) = agent.terminate();
    assert_eq!(code, 0);
    let letters = dead_letters(&db);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        (letters[0].0, letters[0].1.as_str()),
        (n + 1, "BUFFER_CORRUPT_RECORD")
    );
    assert!(letters[0].2.contains("latitude"), "{letters:?}");
    assert!(
        journal_slots(&db).iter().all(Option::is_none),
        "the journal is emptied"
    );
    let lines = read_log(&s.log);
    let stopped: Vec<_> = lines.iter().filter(|v| v["message"] == "stopped").collect();
    assert_eq!(stopped.len(), 2);
    assert_eq!(stopped[1]["lost"], 0, "{:?}", stopped[1]);
    assert!(
        !lines.iter().any(|v| v["code"] == "BUFFER_LOST"
            || v["code"] == "BUFFER_DISK_FULL"
            || v["cause"] == "BUFFER_DISK_FULL"),
        "nothing lost, no full disk"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_records_out_of_range_or_with_unprintable_times_are_dead_lettered_like_live_ones()
{
    let mut s = first_drive_delivered_and_stopped().await;
    let n = s.delivered;
    let t = DriveSpec::default().start_time_ms + 60_000;
    let good = Forged::good(0, t);
    let mut records: Vec<Forged> = vec![
        Forged {
            lat: 1000.0,
            ..good
        },
        Forged {
            lon: -5000.0,
            ..good
        },
        Forged {
            alt_m: Some(9_223_372_036_854_776.0),
            ..good
        },
        Forged {
            speed_mps: Some(-1.0),
            ..good
        },
        Forged {
            course_deg: Some(9999.0),
            ..good
        },
        Forged {
            hdop: Some(-3.0),
            ..good
        },
        Forged {
            time_ms: i64::MAX,
            ..good
        },
        // +10000-01-01T00:00:00.000Z
        Forged {
            time_ms: 253_402_300_800_000,
            ..good
        },
        good,
    ];
    for (i, r) in records.iter_mut().enumerate() {
        r.seq = n + 1 + i as u64;
        if r.time_ms == t {
            r.time_ms += i as i64 * 100;
        }
    }
    forge(&s.db, &records);
    let (agent, m) = s.restart_with_second_drive();
    // The valid record (n+9) and the second drive arrive; the others never do.
    let got = fixes_after(&mut s.sub, n, m + 1).await;
    let seqs: BTreeSet<u64> = got.iter().map(|f| f.seq).collect();
    assert_eq!(seqs, (n + 9..=n + 9 + m).collect::<BTreeSet<u64>>());
    let replayed = got.iter().find(|f| f.seq == n + 9).unwrap();
    assert_eq!((replayed.fix.time_ms, replayed.fix.lat), (t + 800, 48.1));
    let (code, db) = agent.terminate();
    assert_eq!(code, 0);
    let letters = dead_letters(&db);
    let refused: Vec<(u64, &str)> = letters.iter().map(|l| (l.0, l.1.as_str())).collect();
    assert_eq!(
        refused,
        (n + 1..=n + 8)
            .map(|seq| (seq, "BUFFER_CORRUPT_RECORD"))
            .collect::<Vec<_>>()
    );
    let why: Vec<&str> = letters.iter().map(|l| l.2.as_str()).collect();
    for (i, word) in [
        "latitude",
        "longitude",
        "altitude",
        "speed",
        "course",
        "HDOP",
        "time",
        "RFC 3339",
    ]
    .iter()
    .enumerate()
    {
        assert!(why[i].contains(word), "{word}: {why:?}");
    }
}

#[test]
fn a_journal_path_that_is_a_symlink_is_refused_with_a_code_and_its_target_left_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("buffer.db");
    let theirs = dir.path().join("thesis.txt");
    let text: Vec<u8> = (0..8893u32).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(&theirs, &text).unwrap();
    std::os::unix::fs::symlink(&theirs, journal_of(&db)).unwrap();
    let log = drive_log(dir.path(), spec(DriveSpec::default().start_time_ms, 3));
    let n = expected_fixes(&log);
    let nowhere = format!("mqtt://{}", free_port());
    let agent = Agent::replay(dir.path(), "truck-7", &nowhere, log.to_str().unwrap());
    let (_, h) = agent.wait_health("the refused journal", Duration::from_secs(10), |_, h| {
        h["components"]["buffer"]["depth"] == n
    });
    let buffer = &h["components"]["buffer"];
    assert_eq!(buffer["status"], "degraded", "{h}");
    assert_eq!(
        buffer["last_error"]["code"], "BUFFER_JOURNAL_REFUSED",
        "{h}"
    );
    let (code, db) = agent.terminate();
    assert_eq!(code, 0);
    assert_eq!(
        std::fs::read(&theirs).unwrap(),
        text,
        "the target is untouched"
    );
    assert!(std::fs::symlink_metadata(journal_of(&db))
        .unwrap()
        .file_type()
        .is_symlink());
    // Without the journal every fix was committed on its own: all of them are stored.
    assert_eq!(stored_rows(&db).len() as u64, n);
}

#[test]
fn a_journal_truncated_while_running_then_a_kill_keeps_the_records_written_behind_the_hole() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("buffer.db");
    let log = drive_log(dir.path(), spec(DriveSpec::default().start_time_ms, 4));
    let gnss = format!(
        "[gnss]\nsource = \"file\"\npath = \"{}\"\npace = \"realtime\"",
        log.display()
    );
    // No sync for 30 s: the fixes live in the journal alone (and SQLite's open transaction).
    let buffer = format!(
        "[buffer]\npath = \"{}\"\ncommit_interval_s = 30",
        db.display()
    );
    let nowhere = format!("mqtt://{}", free_port());
    let agent = Agent::start_with_buffer(dir.path(), "truck-8", &gnss, &buffer, &nowhere, &[]);
    let wait_records = |at_least: usize| {
        support::wait::until(
            format!("{at_least} journal records"),
            Duration::from_secs(20),
            || journal_slots(&db).iter().filter(|s| s.is_some()).count() >= at_least,
        )
    };
    wait_records(5);
    std::fs::OpenOptions::new()
        .write(true)
        .open(journal_of(&db))
        .unwrap()
        .set_len(0)
        .unwrap();
    wait_records(5);
    let (config, health, agent_log) = (agent.config.clone(), agent.health, agent.log.clone());
    agent.kill();
    let slots = journal_records(&db);
    // Queued fixes, and fixes of the local history (which the journal holds as well).
    let behind = slots.iter().flatten().filter(|(seq, _)| *seq > 0).count();
    let history = slots.iter().flatten().filter(|(_, h)| *h).count();
    let hole = slots.iter().take_while(|s| s.is_none()).count();
    assert!(hole > 0, "the records went on behind a hole of zeros");
    // The next start reads no new drive: what it stores is what the journal kept.
    std::fs::write(&log, b"").unwrap();
    let agent = Agent::restart(&config, health, &db, &agent_log);
    let line = agent.wait_log("the replay", |v| {
        v["message"] == "fixes the crash journal held stored in the buffer"
    });
    assert_eq!(line["replayed"], behind as u64, "{line}");
    let (code, db) = agent.terminate();
    assert_eq!(code, 0);
    assert_eq!(stored_rows(&db).len(), behind);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let kept: i64 = conn
        .query_row("SELECT count(*) FROM history", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept as usize, history);
}

/// The agent reading a two-minute 10 Hz drive in real time (no broker), with the files whose
/// paths start with `shimmed` behind the power-cut shim, whose faults `ctl` names ("ok" at
/// first), and `disk_retry_s` as given.
fn realtime_under_shim(dir: &Path, db: &Path, shimmed: &Path, ctl: &Path, retry_s: f64) -> Agent {
    std::fs::write(ctl, "ok").unwrap();
    let log = drive_log(
        dir,
        DriveSpec {
            rate_hz: 10,
            epochs: 1200,
            ..DriveSpec::default()
        },
    );
    let gnss = format!(
        "[gnss]\nsource = \"file\"\npath = \"{}\"\npace = \"realtime\"",
        log.display()
    );
    let buffer = format!(
        "[buffer]\npath = \"{}\"\ndisk_retry_s = {retry_s}",
        db.display()
    );
    let env = fault_env(shimmed, ctl);
    let nowhere = format!("mqtt://{}", free_port());
    let device = support::unique("truck");
    Agent::start_with_buffer(dir, &device, &gnss, &buffer, &nowhere, &env)
}

#[test]
fn a_journal_without_space_or_read_only_shows_in_health_and_is_used_again_when_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("buffer.db");
    let ctl = dir.path().join("journal-disk");
    let agent = realtime_under_shim(dir.path(), &db, &journal_of(&db), &ctl, 1.0);
    let buffer_is = |what: &str, status: &'static str, says: Vec<&'static str>| {
        agent.wait_health(what, Duration::from_secs(20), move |_, h| {
            let b = &h["components"]["buffer"];
            let message = b["last_error"]["message"].as_str().unwrap_or("");
            b["status"] == status
                && b["depth"].as_u64() > Some(0)
                && says.iter().all(|s| message.contains(s))
        })
    };
    buffer_is("a healthy buffer", "healthy", vec![]);
    for (fault, says) in [
        ("enospc", "No space left on device"),
        ("erofs", "Read-only file system"),
    ] {
        std::fs::write(&ctl, fault).unwrap();
        // Given up: it could not even be emptied (each fix is committed on its own).
        let (_, h) = buffer_is(
            fault,
            "degraded",
            vec!["crash journal", "empty failed", says],
        );
        assert_eq!(
            h["components"]["buffer"]["last_error"]["code"], "BUFFER_JOURNAL",
            "{h}"
        );
        let used_again = agent.log_count("crash journal in use again");
        std::fs::write(&ctl, "ok").unwrap();
        buffer_is("the journal back", "healthy", vec![]);
        assert_eq!(
            agent.log_count("crash journal in use again"),
            used_again + 1,
            "{fault}: opened again by a retry"
        );
    }
    let (code, _) = agent.terminate();
    assert_eq!(code, 0);
}

#[test]
fn fixes_held_in_memory_by_a_failing_device_at_shutdown_are_reported_lost_to_it_not_to_a_full_disk()
{
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let db = state.join("buffer.db");
    let ctl = dir.path().join("disk");
    // A long retry: only the stop tries the disk again.
    let agent = realtime_under_shim(dir.path(), &db, &state, &ctl, 600.0);
    agent.wait_log("buffer open", |v| v["message"] == "buffer open");
    std::fs::write(&ctl, "eio").unwrap();
    agent.wait_health("fixes held in memory", Duration::from_secs(20), |_, h| {
        let b = &h["components"]["buffer"];
        b["last_error"]["code"] == "BUFFER_IO" && b["in_memory"].as_u64() > Some(0)
    });
    let log = agent.log.clone();
    let (code, _) = agent.terminate();
    assert_eq!(code, 0);
    let lines = read_log(&log);
    let warn = lines
        .iter()
        .find(|v| v["code"] == "BUFFER_LOST")
        .unwrap_or_else(|| panic!("no BUFFER_LOST in {lines:#?}"));
    assert_eq!(warn["cause"], "BUFFER_IO", "{warn}");
    assert!(warn["lost"].as_u64() > Some(0), "{warn}");
}
