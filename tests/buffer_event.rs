//! A fix's `event` (stop/start, from adaptive reporting) in the buffer: stored, handed out,
//! kept by dead letters and requeue, and a version 2 file migrated to version 3 with its
//! fixes and stream intact.

use gps_agent::buffer::{Buffer, StoredFix, APPLICATION_ID, SCHEMA_VERSION};
use gps_agent::config::BufferSettings;
use gps_agent::fix::{Event, Fix, FixMode};
use std::path::Path;
use std::time::Instant;

fn fix(i: i64, event: Option<Event>) -> Fix {
    Fix {
        time_ms: 1_773_475_200_000 + i * 1000,
        lat: 48.137154 + i as f64 * 1e-6,
        lon: 11.576124,
        alt_m: Some(519.5),
        speed_mps: Some(0.0),
        course_deg: None,
        hdop: Some(0.9),
        sats: Some(10),
        mode: FixMode::ThreeD,
        event,
    }
}

fn cfg(dir: &Path) -> BufferSettings {
    BufferSettings {
        path: dir.join("buffer.db"),
        ..BufferSettings::default()
    }
}

fn pending(buf: &mut Buffer) -> Vec<StoredFix> {
    let mut out = Vec::new();
    buf.next_batch(100, &mut out).unwrap();
    buf.release(&out.iter().map(|s| s.seq).collect::<Vec<_>>());
    out
}

#[test]
fn events_are_stored_and_come_back_with_their_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = Buffer::open(&cfg(dir.path())).unwrap();
    let now = Instant::now();
    buf.append(&fix(0, None), now).unwrap();
    buf.append(&fix(1, Some(Event::Stop)), now).unwrap();
    buf.append(&fix(2, Some(Event::Start)), now).unwrap();
    buf.commit().unwrap();
    drop(buf);
    let (mut buf, _) = Buffer::open(&cfg(dir.path())).unwrap();
    let events: Vec<Option<Event>> = pending(&mut buf).iter().map(|s| s.fix.event).collect();
    assert_eq!(events, vec![None, Some(Event::Stop), Some(Event::Start)]);
}

#[test]
fn a_dead_letter_keeps_its_event_through_requeue() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buf, _) = Buffer::open(&cfg(dir.path())).unwrap();
    buf.append(&fix(0, Some(Event::Stop)), Instant::now())
        .unwrap();
    buf.commit().unwrap();
    let out = pending(&mut buf);
    buf.dead_letter(&[out[0].seq], "X", "test").unwrap();
    buf.commit().unwrap();
    let conn = rusqlite::Connection::open(&cfg(dir.path()).path).unwrap();
    let listed = gps_agent::buffer::list_dead_letters(&conn, &cfg(dir.path()).path, 10).unwrap();
    assert_eq!(listed[0].fix["event"], "stop");
    drop(conn);
    assert_eq!(buf.requeue_dead_letters().unwrap(), 1);
    let back = pending(&mut buf);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].fix, fix(0, Some(Event::Stop)));
}

#[test]
fn a_version_2_file_is_migrated_to_3_keeping_stream_fixes_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    {
        // Version 2 as it was written: no `event` column.
        let conn = rusqlite::Connection::open(&c.path).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
             CREATE TABLE fixes (seq INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL,
                 lat REAL NOT NULL, lon REAL NOT NULL, alt_mm INTEGER, speed_mmps INTEGER,
                 course_mdeg INTEGER, hdop_c INTEGER, sats INTEGER, mode INTEGER NOT NULL);
             CREATE TABLE dead_letters (seq INTEGER PRIMARY KEY, code TEXT NOT NULL,
                 reason TEXT NOT NULL, time_ms INTEGER NOT NULL, payload TEXT NOT NULL);
             INSERT INTO meta VALUES ('stream', 'ffeeddccbbaa99887766554433221100'),
                 ('last_seq', 12), ('evicted', 3);
             INSERT INTO fixes VALUES (11, 1584538100600, 41.5, -93.5, 278020, NULL, NULL, 100, 9, 3);
             INSERT INTO dead_letters VALUES (10, 'MQTT_TOO_LARGE', 'r', 1, '{{\"seq\":10,\"time\":\"2020-03-18T13:28:19.600Z\",\"lat\":41.4,\"lon\":-93.4,\"mode\":\"2d\"}}');
             PRAGMA application_id = {APPLICATION_ID};
             PRAGMA user_version = 2;"
        ))
        .unwrap();
    }
    let (mut buf, report) = Buffer::open(&c).unwrap();
    assert_eq!(report.moved_aside, None);
    assert_eq!(buf.stream(), "ffeeddccbbaa99887766554433221100");
    let out = pending(&mut buf);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].seq, out[0].fix.event), (11, None));
    assert_eq!(out[0].fix.alt_m, Some(278.02));
    assert_eq!(
        buf.append(&fix(0, Some(Event::Start)), Instant::now())
            .unwrap()
            .seq,
        Some(13),
        "seqs go on after the migration"
    );
    buf.commit().unwrap();
    assert_eq!(buf.requeue_dead_letters().unwrap(), 1);
    let all = pending(&mut buf);
    let got: Vec<(u64, Option<Event>)> = all.iter().map(|s| (s.seq, s.fix.event)).collect();
    assert_eq!(got, vec![(10, None), (11, None), (13, Some(Event::Start))]);
    drop(buf);
    let conn = rusqlite::Connection::open(&c.path).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 3);
}
