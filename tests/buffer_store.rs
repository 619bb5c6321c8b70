//! The buffer on real SQLite files: group commit, draining, capacity policies, disk full,
//! migration, damaged files, and the CLI's view of the same file.

use gps_agent::buffer::{Buffer, StoredFix, APPLICATION_ID, SCHEMA_VERSION};
use gps_agent::config::{BufferConfig, EvictionPolicy};
use gps_agent::error::Classified;
use gps_agent::fix::{Fix, FixMode};
use gps_agent::status::Status;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The raw `[buffer]` section as an operator writes it, checked as the agent checks it.
fn checked(raw: &gps_agent::config::BufferConfig) -> gps_agent::config::BufferSettings {
    let mut problems = Vec::new();
    let settings = raw.check(&mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    settings
}

fn fix(i: i64) -> Fix {
    Fix {
        time_ms: 1_584_538_100_600 + i * 1000,
        lat: 41.574970205 + i as f64 * 1e-6,
        lon: -93.750558641,
        alt_m: Some(278.02),
        speed_mps: if i % 2 == 0 { Some(1.673) } else { None },
        course_deg: Some(92.308),
        hdop: Some(1.2),
        sats: Some(9),
        mode: FixMode::ThreeD,
        event: None,
    }
}

fn cfg(dir: &Path) -> BufferConfig {
    BufferConfig {
        path: dir.join("buffer.db"),
        commit_interval_s: 1.0,
        commit_max: 1000,
        ..BufferConfig::default()
    }
}

/// Appends `n` fixes (numbered from `from`) and commits them.
fn fill(buf: &mut Buffer, from: i64, n: i64, now: Instant) {
    for i in from..from + n {
        buf.append(&fix(i), now).unwrap();
    }
    buf.commit().unwrap();
}

fn seqs(v: &[StoredFix]) -> Vec<u64> {
    v.iter().map(|s| s.seq).collect()
}

/// The names in `dir` that start with `prefix`.
fn names(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

fn all_seqs(path: &Path) -> Vec<u64> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn.prepare("SELECT seq FROM fixes ORDER BY seq").unwrap();
    let rows = stmt.query_map([], |r| r.get::<_, i64>(0)).unwrap();
    rows.map(|r| r.unwrap() as u64).collect()
}

#[test]
fn a_fix_round_trips_with_its_seq_and_the_payload_precision() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, report) = Buffer::open(&checked(&cfg(dir.path()))).unwrap();
    assert_eq!(report.moved_aside, None);
    assert_eq!(buf.stream().len(), 32);
    assert!(buf.stream().chars().all(|c| c.is_ascii_hexdigit()));
    let now = Instant::now();
    let a = buf.append(&fix(0), now).unwrap();
    let b = buf.append(&fix(1), now).unwrap();
    assert_eq!((a.seq, b.seq), (Some(1), Some(2)));
    buf.commit().unwrap();
    let mut out = Vec::new();
    buf.next_batch(10, &mut out).unwrap();
    assert_eq!(
        out,
        vec![
            StoredFix {
                seq: 1,
                fix: fix(0)
            },
            StoredFix {
                seq: 2,
                fix: fix(1)
            }
        ]
    );
}

#[test]
fn a_fix_is_committed_at_once_and_handed_out_only_once_synced() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = Buffer::open(&checked(&cfg(dir.path()))).unwrap();
    let t0 = Instant::now();
    let a = buf.append(&fix(0), t0).unwrap();
    assert_eq!((a.seq, a.synced_upto), (Some(1), None));
    assert_eq!(buf.committed_seq(), 1, "survives the process at once");
    assert_eq!(
        all_seqs(&dir.path().join("buffer.db")),
        Vec::<u64>::new(),
        "in the crash journal; SQLite's transaction commits at the sync"
    );
    let mut out = Vec::new();
    buf.next_batch(10, &mut out).unwrap();
    assert!(
        out.is_empty(),
        "a fix a power cut could take is not published"
    );
    assert_eq!(buf.newest_pending().unwrap(), None);
    assert_eq!(buf.tick(t0 + Duration::from_millis(999)).unwrap(), None);
    assert_eq!(buf.tick(t0 + Duration::from_secs(1)).unwrap(), Some(1));
    assert_eq!(buf.synced_seq(), 1);
    buf.next_batch(10, &mut out).unwrap();
    assert_eq!(seqs(&out), vec![1]);
}

#[test]
fn appended_fixes_survive_the_process_before_any_sync_and_numbering_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    let t0 = Instant::now();
    for i in 0..3 {
        assert_eq!(buf.append(&fix(i), t0).unwrap().synced_upto, None);
    }
    // What a SIGKILL would leave now: the files as the kernel has them (a copy while the
    // buffer is open; its transaction is not committed).
    let crashed = tempfile::tempdir().unwrap();
    for suffix in ["", "-wal", "-fixlog"] {
        let name = format!("buffer.db{suffix}");
        std::fs::copy(dir.path().join(&name), crashed.path().join(&name)).unwrap();
    }
    let c2 = cfg(crashed.path());
    assert!(
        all_seqs(&c2.path).is_empty(),
        "nothing committed to the file"
    );
    let (mut again, _) = Buffer::open(&checked(&c2)).unwrap();
    assert_eq!(again.stream(), buf.stream());
    assert_eq!(all_seqs(&c2.path), vec![1, 2, 3], "stored at open");
    assert_eq!(again.synced_seq(), 3, "and synced: they may be handed out");
    assert_eq!(again.append(&fix(3), t0).unwrap().seq, Some(4));
    again.commit().unwrap();
    let mut out = Vec::new();
    again.next_batch(10, &mut out).unwrap();
    assert_eq!(seqs(&out), vec![1, 2, 3, 4]);
    assert_eq!(out[2].fix, fix(2), "the journal keeps a fix as it was");
    drop(again);
    let (third, _) = Buffer::open(&checked(&c2)).unwrap();
    assert_eq!(
        third.committed_seq(),
        4,
        "a journal emptied by the sync adds nothing"
    );
}

#[test]
fn depth_counts_each_acknowledgement_once_while_the_transaction_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = Buffer::open(&checked(&cfg(dir.path()))).unwrap();
    let t0 = Instant::now();
    fill(&mut buf, 0, 10, t0);
    buf.commit().unwrap();
    let mut out = Vec::new();
    buf.next_batch(10, &mut out).unwrap();
    buf.ack(&[1, 2, 3]).unwrap();
    assert_eq!(buf.stats().unwrap().depth, 7);
    // This append's transaction deletes 1..=3 and stays open until the sync.
    buf.append(&fix(10), t0).unwrap();
    assert_eq!(buf.stats().unwrap().depth, 8);
    buf.ack(&[4, 5]).unwrap();
    assert_eq!(
        buf.stats().unwrap().depth,
        6,
        "1..=3 deleted, 4 and 5 waiting"
    );
    buf.commit().unwrap();
    assert_eq!(buf.stats().unwrap().depth, 6);
    buf.tick(t0 + Duration::from_secs(5)).unwrap();
    buf.commit().unwrap();
    assert_eq!(
        all_seqs(&dir.path().join("buffer.db")),
        (6..=11).collect::<Vec<_>>()
    );
}

#[test]
fn a_sync_comes_after_commit_max_fixes_even_before_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.commit_max = 3;
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    let t0 = Instant::now();
    let r: Vec<_> = (0..4)
        .map(|i| buf.append(&fix(i), t0).unwrap().synced_upto)
        .collect();
    assert_eq!(r, vec![None, None, Some(3), None]);
    assert_eq!((buf.committed_seq(), buf.synced_seq()), (4, 3));
}

#[test]
fn after_a_power_fail_signal_every_fix_is_synced_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = Buffer::open(&checked(&cfg(dir.path()))).unwrap();
    let t0 = Instant::now();
    buf.append(&fix(0), t0).unwrap();
    assert_eq!(buf.power_fail(t0), Some(1), "synced at once");
    let a = buf.append(&fix(1), t0).unwrap();
    assert_eq!(a.synced_upto, Some(2), "and each fix after it");
    let later = t0 + Duration::from_secs(31);
    let b = buf.append(&fix(2), later).unwrap();
    assert_eq!(b.synced_upto, None, "the window ends");
}

#[test]
fn next_batch_goes_oldest_first_and_skips_fixes_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = Buffer::open(&checked(&cfg(dir.path()))).unwrap();
    fill(&mut buf, 0, 10, Instant::now());
    let mut a = Vec::new();
    let mut b = Vec::new();
    buf.next_batch(3, &mut a).unwrap();
    buf.next_batch(3, &mut b).unwrap();
    assert_eq!(seqs(&a), vec![1, 2, 3]);
    assert_eq!(seqs(&b), vec![4, 5, 6]);
    let newest = buf.newest_pending().unwrap().unwrap();
    assert_eq!(newest.seq, 10, "live first: the newest fix");
    assert_eq!(
        buf.newest_pending().unwrap().unwrap().seq,
        9,
        "10 is in flight now"
    );
    buf.next_batch(10, &mut b).unwrap();
    assert_eq!(seqs(&b), vec![7, 8]);
}

#[test]
fn ack_removes_release_returns_and_restart_makes_in_flight_pending_again() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    fill(&mut buf, 0, 6, Instant::now());
    let mut out = Vec::new();
    buf.next_batch(4, &mut out).unwrap();
    buf.ack(&[1, 2]).unwrap();
    buf.release(&[3]);
    buf.next_batch(10, &mut out).unwrap();
    assert_eq!(seqs(&out), vec![3, 5, 6], "4 is still in flight");
    buf.commit().unwrap();
    let stats = buf.stats().unwrap();
    assert_eq!(
        (stats.depth, stats.oldest_seq, stats.last_seq),
        (4, Some(3), 6)
    );
    drop(buf);
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    buf.next_batch(10, &mut out).unwrap();
    assert_eq!(seqs(&out), vec![3, 4, 5, 6]);
}

#[test]
fn acking_the_newest_fixes_never_lets_their_seqs_be_reused() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    fill(&mut buf, 0, 3, Instant::now());
    buf.ack(&[1, 2, 3]).unwrap();
    buf.commit().unwrap();
    drop(buf);
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    assert_eq!(buf.stats().unwrap().last_seq, 3);
    assert_eq!(buf.append(&fix(3), Instant::now()).unwrap().seq, Some(4));
}

#[test]
fn dead_letters_leave_the_queue_are_listed_and_requeue_with_their_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = Buffer::open(&checked(&cfg(dir.path()))).unwrap();
    fill(&mut buf, 0, 4, Instant::now());
    let mut out = Vec::new();
    buf.next_batch(2, &mut out).unwrap();
    buf.dead_letter(&[2], "MQTT_PAYLOAD_TOO_LARGE", "broker refused")
        .unwrap();
    buf.release(&[1]);
    buf.commit().unwrap();
    buf.next_batch(10, &mut out).unwrap();
    assert_eq!(seqs(&out), vec![1, 3, 4]);
    let s = buf.stats().unwrap();
    assert_eq!((s.depth, s.dead_letters), (3, 1));
    let conn = gps_agent::buffer::open_read_only(&dir.path().join("buffer.db")).unwrap();
    let letters = gps_agent::buffer::list_dead_letters(&conn, dir.path(), 10).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].seq, letters[0].code.as_str()),
        (2, "MQTT_PAYLOAD_TOO_LARGE")
    );
    assert_eq!(letters[0].fix["seq"], 2);
    assert_eq!(buf.requeue_dead_letters().unwrap(), 1);
    buf.release(&[1, 3, 4]);
    buf.next_batch(10, &mut out).unwrap();
    assert_eq!(seqs(&out), vec![1, 2, 3, 4]);
    assert_eq!(out[1].fix, fix(1), "requeued fix is the same fix");
    assert_eq!(buf.stats().unwrap().dead_letters, 0);
}

fn capped(dir: &Path, n: u64, policy: EvictionPolicy) -> BufferConfig {
    BufferConfig {
        max_fixes: n,
        eviction: policy,
        ..cfg(dir)
    }
}

#[test]
fn drop_oldest_evicts_exactly_one_fix_on_the_append_after_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let c = capped(dir.path(), 8, EvictionPolicy::DropOldest);
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    fill(&mut buf, 0, 8, Instant::now());
    assert_eq!(buf.stats().unwrap().evicted, 0, "N fixes fit");
    fill(&mut buf, 8, 1, Instant::now());
    assert_eq!(all_seqs(&c.path), (2..=9).collect::<Vec<_>>());
    assert_eq!(buf.stats().unwrap().evicted, 1);
    drop(buf);
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    assert_eq!(
        buf.stats().unwrap().evicted,
        1,
        "the count survives a restart"
    );
}

#[test]
fn thin_drops_every_second_fix_of_the_oldest_half_on_the_append_after_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let c = capped(dir.path(), 8, EvictionPolicy::Thin);
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    fill(&mut buf, 0, 8, Instant::now());
    assert_eq!(all_seqs(&c.path), (1..=8).collect::<Vec<_>>());
    fill(&mut buf, 8, 1, Instant::now());
    assert_eq!(all_seqs(&c.path), vec![1, 3, 5, 6, 7, 8, 9]);
    assert_eq!(buf.stats().unwrap().evicted, 2);
}

#[test]
fn thin_with_too_few_fixes_to_halve_drops_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let c = capped(dir.path(), 2, EvictionPolicy::Thin);
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    fill(&mut buf, 0, 3, Instant::now());
    assert_eq!(all_seqs(&c.path), vec![2, 3]);
    assert_eq!(buf.stats().unwrap().evicted, 1);
}

#[test]
fn the_byte_limit_evicts_oldest_fixes_when_the_file_outgrows_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = BufferConfig {
        max_bytes: 64 * 1024,
        ..cfg(dir.path())
    };
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    for k in 0..10 {
        fill(&mut buf, k * 1000, 1000, Instant::now());
    }
    let s = buf.stats().unwrap();
    assert!(s.evicted > 0, "evictions counted: {s:?}");
    assert_eq!(s.depth + s.evicted, 10_000);
    assert_eq!(s.newest_seq, Some(10_000));
}

#[test]
fn a_full_disk_keeps_fixes_in_memory_and_writes_them_with_contiguous_seqs_when_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let c = BufferConfig {
        commit_max: 10,
        disk_retry_s: 30.0,
        ..cfg(dir.path())
    };
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    let t0 = Instant::now();
    fill(&mut buf, 0, 5, t0);
    // Clamped to the current size: the file may not grow, so the group that needs a new
    // page fails with SQLITE_FULL.
    let pages = buf.set_max_page_count(1).unwrap();
    assert!(pages < 100, "{pages}");
    let mut in_ring = 0;
    for i in 5..3000 {
        if buf.append(&fix(i), t0).unwrap().seq.is_none() {
            in_ring += 1;
        }
    }
    assert!(in_ring > 0, "the disk never filled");
    let h = buf.status();
    assert_eq!(h.condition, Status::Degraded);
    assert_eq!(h.last_error.unwrap().code, "BUFFER_DISK_FULL");
    let committed = buf.committed_seq();
    assert_eq!(
        buf.tick(t0 + Duration::from_secs(29)).unwrap(),
        None,
        "not retried early"
    );
    buf.set_max_page_count(1_000_000).unwrap();
    assert_eq!(buf.tick(t0 + Duration::from_secs(30)).unwrap(), Some(3000));
    assert!(committed < 3000);
    assert_eq!(buf.status().condition, Status::Healthy);
    assert_eq!(all_seqs(&c.path), (1..=3000).collect::<Vec<_>>());
    let mut out = Vec::new();
    buf.next_batch(5000, &mut out).unwrap();
    let times: Vec<i64> = out.iter().map(|s| s.fix.time_ms).collect();
    assert_eq!(
        times,
        (0..3000).map(|i| fix(i).time_ms).collect::<Vec<_>>(),
        "in order"
    );
}

#[test]
fn the_memory_ring_drops_its_oldest_fix_when_full_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = BufferConfig {
        memory_ring: 4,
        commit_max: 1,
        ..cfg(dir.path())
    };
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    let t0 = Instant::now();
    fill(&mut buf, 0, 1, t0);
    buf.set_max_page_count(1).unwrap();
    for i in 1..200 {
        buf.append(&fix(i), t0).unwrap();
    }
    let s = buf.stats().unwrap();
    assert_eq!(s.in_memory, Some(4));
    assert_eq!(s.evicted + 4 + s.depth - 4, 200, "{s:?}");
    let err = buf.commit().unwrap_err();
    assert_eq!(err.code(), "BUFFER_DISK_FULL");
}

fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

fn assert_moved_aside(dir: &Path, make: impl FnOnce(&Path)) {
    let c = cfg(dir);
    make(&c.path);
    let original = std::fs::read(&c.path).unwrap();
    let (mut buf, report) = Buffer::open(&checked(&c)).unwrap();
    let moved: PathBuf = report.moved_aside.clone().expect("moved aside");
    let name = moved.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("buffer.db.corrupt-"), "{name}");
    assert_eq!(
        std::fs::read(&moved).unwrap(),
        original,
        "the data is kept as it was"
    );
    let h = buf.status();
    assert_eq!(h.condition, Status::Unhealthy);
    assert_eq!(h.last_error.unwrap().code, "BUFFER_CORRUPT");
    assert_eq!(
        buf.append(&fix(0), Instant::now()).unwrap().seq,
        Some(1),
        "a new stream"
    );
}

#[test]
fn random_bytes_are_moved_aside_and_a_new_stream_starts() {
    let dir = tempfile::tempdir().unwrap();
    assert_moved_aside(dir.path(), |p| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let bytes: Vec<u8> = (0..8192)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        write_file(p, &bytes);
    });
}

#[test]
fn a_text_file_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    assert_moved_aside(dir.path(), |p| write_file(p, b"[buffer]\npath = 'oops'\n"));
}

#[test]
fn a_zero_length_file_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    assert_moved_aside(dir.path(), |p| write_file(p, b""));
}

#[test]
fn a_truncated_file_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    fill(&mut buf, 0, 5000, Instant::now());
    drop(buf); // the last connection checkpoints the WAL into the main file
    let bytes = std::fs::read(&c.path).unwrap();
    assert!(bytes.len() > 16 * 4096, "{}", bytes.len());
    let old_stream = {
        let conn = rusqlite::Connection::open(&c.path).unwrap();
        conn.query_row("SELECT value FROM meta WHERE key='stream'", [], |r| {
            r.get::<_, String>(0)
        })
        .unwrap()
    };
    write_file(&c.path, &bytes[..bytes.len() / 2]);
    let (buf, report) = Buffer::open(&checked(&c)).unwrap();
    assert!(report.moved_aside.is_some(), "{report:?}");
    assert_ne!(buf.stream(), old_stream);
}

#[test]
fn a_database_of_another_application_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    assert_moved_aside(dir.path(), |p| {
        let conn = rusqlite::Connection::open(p).unwrap();
        conn.execute_batch("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'x');")
            .unwrap();
    });
}

#[test]
fn a_version_1_file_is_migrated_keeping_its_stream_and_fixes() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    {
        // Version 1 as it was written: no dead_letters table, no evicted counter.
        let conn = rusqlite::Connection::open(&c.path).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
             CREATE TABLE fixes (seq INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL,
                 lat REAL NOT NULL, lon REAL NOT NULL, alt_mm INTEGER, speed_mmps INTEGER,
                 course_mdeg INTEGER, hdop_c INTEGER, sats INTEGER, mode INTEGER NOT NULL);
             INSERT INTO meta VALUES ('stream', '00112233445566778899aabbccddeeff'), ('last_seq', 7);
             INSERT INTO fixes VALUES (6, 1584538100600, 41.5, -93.5, 278020, NULL, NULL, 100, 9, 3);
             INSERT INTO fixes VALUES (7, 1584538101600, 41.6, -93.6, NULL, 1673, 92308, NULL, NULL, 2);
             PRAGMA application_id = {APPLICATION_ID};
             PRAGMA user_version = 1;"
        ))
        .unwrap();
    }
    let (mut buf, report) = Buffer::open(&checked(&c)).unwrap();
    assert_eq!(report.moved_aside, None);
    assert_eq!(buf.stream(), "00112233445566778899aabbccddeeff");
    let mut out = Vec::new();
    buf.next_batch(10, &mut out).unwrap();
    assert_eq!(seqs(&out), vec![6, 7]);
    assert_eq!(out[0].fix.alt_m, Some(278.02));
    assert_eq!(out[1].fix.speed_mps, Some(1.673));
    assert_eq!(out[1].fix.mode, FixMode::TwoD);
    buf.dead_letter(&[6], "X", "y").unwrap();
    assert_eq!(buf.append(&fix(0), Instant::now()).unwrap().seq, Some(8));
    drop(buf);
    let conn = rusqlite::Connection::open(&c.path).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
}

#[test]
fn a_file_from_a_newer_agent_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    {
        let conn = rusqlite::Connection::open(&c.path).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value);
             PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 99;"
        ))
        .unwrap();
    }
    let err = Buffer::open(&checked(&c)).err().expect("refused");
    assert_eq!(err.code(), "BUFFER_SCHEMA");
    assert!(c.path.exists());
}

#[test]
fn cli_stats_prints_the_spec_keys_while_the_daemon_holds_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    fill(&mut buf, 0, 5, Instant::now());
    buf.ack(&[1]).unwrap();
    buf.dead_letter(&[2], "X", "test").unwrap();
    buf.commit().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gps-agent"))
        .args(["buffer", "stats", "--db"])
        .arg(&c.path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "depth",
        "oldest_seq",
        "newest_seq",
        "last_seq",
        "oldest_time",
        "newest_time",
        "stream",
        "bytes",
        "evicted",
        "dead_letters",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["depth"], 3);
    assert_eq!(v["oldest_seq"], 3);
    assert_eq!(v["newest_seq"], 5);
    assert_eq!(v["last_seq"], 5);
    assert_eq!(v["dead_letters"], 1);
    assert_eq!(v["stream"], buf.stream());
    assert_eq!(v["oldest_time"], "2020-03-18T13:28:22.600Z");
    assert!(v["bytes"].as_u64().unwrap() > 0);
}

#[test]
fn cli_lists_and_requeues_dead_letters_and_fails_with_a_json_line_on_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    fill(&mut buf, 0, 3, Instant::now());
    buf.dead_letter(&[1, 3], "MQTT_REJECTED", "bad topic")
        .unwrap();
    buf.commit().unwrap();
    drop(buf);
    let run = |args: &[&str], db: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gps-agent"))
            .arg("buffer")
            .args(args)
            .arg("--db")
            .arg(db)
            .output()
            .unwrap()
    };
    let out = run(&["dead-letters"], &c.path);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["seq"], 1);
    assert_eq!(lines[1]["code"], "MQTT_REJECTED");
    let out = run(&["requeue"], &c.path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(all_seqs(&c.path), vec![1, 2, 3]);
    let out = run(&["stats"], &dir.path().join("missing.db"));
    assert_eq!(out.status.code(), Some(1));
    let err: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error"], "BUFFER_OPEN");
}

#[test]
fn a_requeue_by_another_process_shows_in_the_open_stores_depth_at_the_next_tick() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    fill(&mut buf, 0, 5, Instant::now());
    buf.dead_letter(&[2, 4], "MQTT_REJECTED", "bad topic")
        .unwrap();
    buf.commit().unwrap();
    let s = buf.stats().unwrap();
    assert_eq!((s.depth, s.dead_letters), (3, 2));

    // The operator's CLI, next to the running store.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gps-agent"))
        .args(["buffer", "requeue", "--db"])
        .arg(&c.path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A group open (uncommitted append) when the store notices: its own row counts once.
    let t0 = Instant::now();
    buf.append(&fix(5), t0).unwrap();
    buf.tick(t0 + Duration::from_millis(1100)).unwrap();
    let s = buf.stats().unwrap();
    assert_eq!((s.depth, s.dead_letters), (6, 0), "{s:?}");
    buf.commit().unwrap();
    let mut out = Vec::new();
    buf.next_batch(10, &mut out).unwrap();
    assert_eq!(seqs(&out), vec![1, 2, 3, 4, 5, 6]);
    buf.ack(&[1, 2, 3, 4, 5, 6]).unwrap();
    buf.commit().unwrap();
    assert_eq!(buf.stats().unwrap().depth, 0);

    // Nothing changed outside since: another tick leaves the counts alone.
    buf.tick(t0 + Duration::from_secs(3)).unwrap();
    let s = buf.stats().unwrap();
    assert_eq!((s.depth, s.dead_letters), (0, 0));
    drop(buf);
    let (mut again, _) = Buffer::open(&checked(&c)).unwrap();
    assert_eq!(again.stats().unwrap().depth, 0, "the counts were true");
}

#[test]
fn a_file_deleted_under_the_open_buffer_is_written_back_with_its_stream_and_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    let t0 = Instant::now();
    fill(&mut buf, 0, 300, t0);
    let stream = buf.stream().to_string();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = c.path.clone().into_os_string();
        p.push(suffix);
        std::fs::remove_file(PathBuf::from(p)).unwrap();
    }
    // The next commit notices.
    assert_eq!(buf.append(&fix(300), t0).unwrap().seq, Some(301));
    let h = buf.status();
    assert_eq!(h.condition, Status::Degraded);
    assert_eq!(h.last_error.unwrap().code, "BUFFER_FILE_GONE");
    assert_eq!(buf.rescues().restored, 1);
    buf.commit().unwrap();
    assert_eq!(all_seqs(&c.path), (1..=301).collect::<Vec<_>>());
    drop(buf);
    let (again, report) = Buffer::open(&checked(&c)).unwrap();
    assert_eq!(report.moved_aside, None);
    assert_eq!(again.stream(), stream, "the same stream goes on");
}

#[test]
fn a_file_replaced_under_the_open_buffer_is_moved_aside_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    let t0 = Instant::now();
    fill(&mut buf, 0, 10, t0);
    let other = dir.path().join("other");
    write_file(&other, b"someone else's file");
    std::fs::rename(&other, &c.path).unwrap();
    buf.append(&fix(10), t0).unwrap();
    assert_eq!(buf.status().last_error.unwrap().code, "BUFFER_FILE_GONE");
    let displaced = names(dir.path(), "buffer.db.displaced-");
    assert!(
        displaced
            .iter()
            .any(|n| std::fs::read(dir.path().join(n)).unwrap() == b"someone else's file"),
        "kept: {displaced:?}"
    );
    assert_eq!(all_seqs(&c.path), (1..=11).collect::<Vec<_>>());
}

#[test]
fn a_file_truncated_under_the_open_buffer_is_quarantined_and_what_it_held_is_salvaged() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    let t0 = Instant::now();
    fill(&mut buf, 0, 3000, t0);
    let mut out = Vec::new();
    buf.next_batch(5, &mut out).unwrap();
    buf.ack(&[1, 2]).unwrap();
    // 3..=5 are in flight at the uplink when the file goes.
    let old_stream = buf.stream().to_string();
    buf.tick(t0 + Duration::from_secs(2)).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&c.path)
        .unwrap()
        .set_len(0)
        .unwrap();
    buf.append(&fix(3000), t0 + Duration::from_secs(2)).unwrap();
    let h = buf.status();
    assert_eq!(h.condition, Status::Unhealthy);
    assert_eq!(h.last_error.unwrap().code, "BUFFER_CORRUPT");
    assert_ne!(buf.stream(), old_stream, "a new stream");
    let s = buf.stats().unwrap();
    assert_eq!(
        s.depth, 2999,
        "acknowledged ones left out, nothing lost: {s:?}"
    );
    assert_eq!(s.lost, Some(0));
    // The uplink's late acks of the old stream's 3..=5 must not hit the new stream's 3..=5,
    // so nothing is handed out until they are resolved.
    buf.commit().unwrap();
    buf.next_batch(10, &mut out).unwrap();
    assert!(out.is_empty(), "held back while old seqs are in flight");
    buf.ack(&[3, 4]).unwrap();
    buf.release(&[5]);
    buf.next_batch(10, &mut out).unwrap();
    assert_eq!(seqs(&out), (1..=10).collect::<Vec<_>>());
    assert_eq!(out[0].fix, fix(2), "oldest first, renumbered");
    assert_eq!(all_seqs(&c.path).len(), 2999, "in the new file");
    assert!(
        !names(dir.path(), "buffer.db.corrupt-").is_empty(),
        "the damaged file is kept"
    );
}

#[test]
fn a_row_that_does_not_read_back_is_set_aside_and_the_queue_flows_on() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    fill(&mut buf, 0, 5, Instant::now());
    {
        let conn = rusqlite::Connection::open(&c.path).unwrap();
        conn.execute("UPDATE fixes SET lat = 'garbage' WHERE seq = 2", [])
            .unwrap();
    }
    let mut out = Vec::new();
    buf.next_batch(10, &mut out).unwrap();
    assert_eq!(seqs(&out), vec![1, 3, 4, 5]);
    let h = buf.status();
    assert_eq!(h.last_error.unwrap().code, "BUFFER_CORRUPT_RECORD");
    assert_eq!(buf.stats().unwrap().dead_letters, 1);
    let conn = gps_agent::buffer::open_read_only(&c.path).unwrap();
    let letters = gps_agent::buffer::list_dead_letters(&conn, &c.path, 10).unwrap();
    assert_eq!(
        (letters[0].seq, letters[0].code.as_str()),
        (2, "BUFFER_CORRUPT_RECORD")
    );
    assert_eq!(letters[0].fix["corrupt_row"][1], "'garbage'");
    // There is no fix to send again: requeue leaves it.
    assert_eq!(buf.requeue_dead_letters().unwrap(), 0);
}

#[test]
fn a_creation_cut_short_leaves_nothing_at_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    // What a power cut during an earlier creation left: our temporary file, not the path.
    write_file(&dir.path().join(".buffer.db.new-4242"), b"");
    let (buf, report) = Buffer::open(&checked(&c)).unwrap();
    assert_eq!(report.moved_aside, None);
    assert_eq!(buf.status().condition, Status::Healthy);
    assert_eq!(names(dir.path(), ".buffer.db.new-"), Vec::<String>::new());
}

/// A fix is in the crash journal from its `append`; its row is written with the others at the
/// commit. Until then the buffer's own figures still count it: depth, the oldest fix's time,
/// the ends `stats` reports, and the capacity policy, which evicts the oldest fix even when
/// all of them were appended since the commit.
#[test]
fn fixes_appended_since_the_commit_count_everywhere_before_their_rows_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let c = BufferConfig {
        max_fixes: 3,
        ..cfg(dir.path())
    };
    let (mut buf, _) = Buffer::open(&checked(&c)).unwrap();
    let t0 = Instant::now();
    for i in 0..2 {
        assert_eq!(buf.append(&fix(i), t0).unwrap().seq, Some(i as u64 + 1));
    }
    let status = buf.status();
    assert_eq!(status.depth, 2);
    assert_eq!(status.oldest_time_ms, Some(fix(0).time_ms));
    let s = buf.stats().unwrap();
    assert_eq!(
        (s.depth, s.oldest_seq, s.newest_seq, s.last_seq),
        (2, Some(1), Some(2), 2)
    );
    assert!(all_seqs(&c.path).is_empty(), "not committed yet");

    // Over the cap before any commit: the oldest of the appended fixes makes room.
    for i in 2..5 {
        buf.append(&fix(i), t0).unwrap();
    }
    let s = buf.stats().unwrap();
    assert_eq!((s.depth, s.evicted, s.oldest_seq), (3, 2, Some(3)));
    buf.commit().unwrap();
    assert_eq!(all_seqs(&c.path), vec![3, 4, 5]);
}

/// A sync falling due between two epochs waits for the next one (a little over one epoch,
/// at most a quarter of the interval) instead of waking the ingest thread on its own just
/// before it: at 10 Hz the thread never has a reason to wake between epochs, and each sync
/// takes the interval's fixes with the epoch that ends it.
#[test]
fn a_sync_due_between_two_epochs_rides_on_the_next_epochs_append() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = Buffer::open(&checked(&cfg(dir.path()))).unwrap();
    let t0 = Instant::now();
    let at = |i: u64| t0 + Duration::from_millis(100 * i);
    // As the ingest thread does: an append, then a tick, at each epoch.
    let mut synced = Vec::new();
    for i in 0..22 {
        let appended = buf.append(&fix(i as i64), at(i)).unwrap().synced_upto;
        let ticked = buf.tick(at(i)).unwrap();
        synced.push(appended.or(ticked));
        if i > 0 {
            assert!(
                buf.next_wake() > at(i + 1),
                "epoch {i}: a wake of its own {:?} after the start",
                buf.next_wake() - t0
            );
        }
    }
    let mut expected = vec![None; 22];
    expected[10] = Some(11);
    expected[21] = Some(22);
    assert_eq!(synced, expected);
    // No epoch comes: the sync is not late by more than the slack.
    buf.append(&fix(22), at(22)).unwrap();
    assert!(buf.next_wake() <= at(22) + Duration::from_millis(1_000 + 125));
}

/// An outsider deletes, replaces or truncates the crash journal while the agent runs. The
/// sync after it makes the journal whole again: the fixes appended after that sync survive
/// the process (they would go into a file no restart reads, after a delete or a rename over
/// it), nothing of a replacement is taken for a fix, and a truncated journal has its room
/// (no `ENOSPC` halfway through an interval) again.
#[test]
fn a_journal_deleted_replaced_or_truncated_is_made_whole_at_the_next_sync() {
    for harm in ["delete", "replace", "truncate"] {
        let dir = tempfile::tempdir().unwrap();
        let (mut buf, _) = Buffer::open(&checked(&cfg(dir.path()))).unwrap();
        let journal = dir.path().join("buffer.db-fixlog");
        let room = std::fs::metadata(&journal).unwrap().len();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        buf.append(&fix(0), at(0)).unwrap();
        assert_eq!(buf.tick(at(1_000)).unwrap(), Some(1));
        match harm {
            "delete" => std::fs::remove_file(&journal).unwrap(),
            "replace" => {
                // Another process's file renamed over it: a stale copy of a full journal.
                let other = dir.path().join("other");
                std::fs::write(&other, vec![0x47u8; room as usize]).unwrap();
                std::fs::rename(&other, &journal).unwrap();
            }
            _ => std::fs::OpenOptions::new()
                .write(true)
                .open(&journal)
                .unwrap()
                .set_len(0)
                .unwrap(),
        }
        buf.append(&fix(1), at(1_100)).unwrap();
        assert_eq!(buf.tick(at(2_100)).unwrap(), Some(2), "{harm}");
        assert_eq!(
            std::fs::metadata(&journal).unwrap().len(),
            room,
            "{harm}: the journal has its room again"
        );
        buf.append(&fix(2), at(2_200)).unwrap();
        buf.append(&fix(3), at(2_300)).unwrap();

        // What a SIGKILL would leave now.
        let crashed = tempfile::tempdir().unwrap();
        for suffix in ["", "-wal", "-fixlog"] {
            let name = format!("buffer.db{suffix}");
            std::fs::copy(dir.path().join(&name), crashed.path().join(&name)).unwrap();
        }
        let c2 = cfg(crashed.path());
        let (again, _) = Buffer::open(&checked(&c2)).unwrap();
        assert_eq!(again.stream(), buf.stream());
        assert_eq!(
            all_seqs(&c2.path),
            vec![1, 2, 3, 4],
            "{harm}: the fixes after the mend survive the process, and only they"
        );
    }
}
