//! The local history (`[history]`, issue 21 item 4, its storage half): every accepted fix,
//! also those the report stage did not keep, stays `keep_days` within `max_bytes` in the
//! buffer's file, written in the buffer's own commits, covered by the crash journal, and read
//! back as a window of receiver time in time order, a page at a time. In-process on real
//! SQLite files, and through the real binary where a process matters (kill -9, the report
//! stage).

mod support;

use gps_agent::buffer::store::Store;
use gps_agent::buffer::{file_stats, open_read_only, Buffer, HistoryWindow, StoredFix};
use gps_agent::clock::Clock;
use gps_agent::config::{BufferSettings, HistorySettings};
use gps_agent::fix::{Fix, FixMode, Numbered};
use gps_agent::health::{snapshot, Metrics};
use gps_agent::sim::DriveSpec;
use gps_agent::status::StatusBoard;
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::{Duration, Instant};
use support::agent::{drive_log, replay_gnss, Agent};
use support::broker::{free_port, Subscriber, TestBroker};
use support::relay::Relay;
use support::shim::fault_env;

/// 2026-03-14T08:00:00Z, the simulator's default start: the clocks of these tests.
const T0: i64 = 1_773_475_200_000;
const DAY_MS: i64 = 86_400_000;

fn fix(time_ms: i64, i: u32) -> Fix {
    Fix {
        time_ms,
        lat: 48.137_154 + f64::from(i) * 1e-6,
        lon: 11.576_124 - f64::from(i) * 1e-6,
        alt_m: Some(519.0 + f64::from(i % 7)),
        speed_mps: Some(13.4),
        course_deg: Some(f64::from(i % 360)),
        hdop: Some(0.9),
        sats: Some(11),
        mode: FixMode::ThreeD,
        event: None,
    }
}

fn settings(dir: &Path, keep_days: u64, max_bytes: u64) -> BufferSettings {
    BufferSettings {
        path: dir.join("buffer.db"),
        history: HistorySettings {
            keep: (keep_days > 0).then(|| Duration::from_secs(keep_days * 86_400)),
            max_bytes,
            ..HistorySettings::default()
        },
        ..BufferSettings::default()
    }
}

/// A buffer whose clock reads `now_ms` (the agent's UTC: what expiry goes by).
fn open(cfg: &BufferSettings, now_ms: i64) -> Buffer {
    let (clock, _) = Clock::manual(now_ms);
    let (buf, _) = Buffer::open(cfg).unwrap();
    buf.with_clock(clock)
}

/// The whole window through the buffer's connection, `page` fixes at a time; the pages'
/// sizes too.
fn read_all(buf: &mut Buffer, mut w: HistoryWindow, page: usize) -> (Vec<Fix>, Vec<usize>) {
    let (mut all, mut sizes, mut out) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let more = buf.history_page(&mut w, page, &mut out).unwrap();
        sizes.push(out.len());
        all.extend_from_slice(&out);
        if !more {
            return (all, sizes);
        }
    }
}

fn history_rows(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT count(*) FROM history", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn every_remembered_fix_comes_back_in_its_window_in_time_order_a_page_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = settings(dir.path(), 7, 64 << 20);
    let mut buf = open(&cfg, T0 + 1000 * 1000);
    let now = Instant::now();
    // A thousand fixes a second apart, remembered out of order in one place (a receiver whose
    // clock went back and forth); every tenth one is also queued, as a report stage keeps it.
    let mut order: Vec<u32> = (0..1000).collect();
    order.swap(500, 510);
    for &i in &order {
        let f = fix(T0 + i64::from(i) * 1000, i);
        buf.remember(&f, now);
        if i % 10 == 0 {
            buf.append(&f, now).unwrap();
        }
    }
    buf.commit().unwrap();
    // Seconds 100 to 399, at most 250 of them, 64 a page.
    let w = HistoryWindow::new(T0 + 100_000, T0 + 399_000, 250);
    let (got, pages) = read_all(&mut buf, w, 64);
    let want: Vec<Fix> = (100..350)
        .map(|i| fix(T0 + i64::from(i) * 1000, i))
        .collect();
    assert_eq!(got, want);
    assert_eq!(pages, vec![64, 64, 64, 58]);
    // The queue holds only what was appended.
    assert_eq!(buf.stats().unwrap().depth, 100);
    assert_eq!(buf.stats().unwrap().history.map(|h| h.rows), Some(1000));
    // A reader of its own (a backfill next to the running daemon) reads the same.
    let conn = open_read_only(&cfg.path).unwrap();
    let mut w = HistoryWindow::new(T0 + 100_000, T0 + 399_000, 250);
    let (mut all, mut out) = (Vec::new(), Vec::new());
    while w.next_page(&conn, &cfg.path, 100, &mut out).unwrap() {
        all.extend_from_slice(&out);
    }
    all.extend_from_slice(&out);
    assert_eq!(all, want);
}

#[test]
fn a_fix_remembered_a_moment_ago_is_in_its_window_before_the_sync_commits_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = settings(dir.path(), 7, 64 << 20);
    let mut buf = open(&cfg, T0 + 10_000);
    let now = Instant::now();
    for i in 0..3 {
        buf.remember(&fix(T0 + i64::from(i) * 1000, i), now);
    }
    let (got, _) = read_all(&mut buf, HistoryWindow::new(T0, T0 + 10_000, 10), 10);
    assert_eq!(got.len(), 3);
    // Not committed yet: a reader of its own does not see them.
    let conn = open_read_only(&cfg.path).unwrap();
    let mut out = Vec::new();
    HistoryWindow::new(T0, T0 + 10_000, 10)
        .next_page(&conn, &cfg.path, 10, &mut out)
        .unwrap();
    assert!(out.is_empty());
    buf.commit().unwrap();
    HistoryWindow::new(T0, T0 + 10_000, 10)
        .next_page(&conn, &cfg.path, 10, &mut out)
        .unwrap();
    assert_eq!(out, got);
}

#[test]
fn the_same_fix_twice_is_kept_once_and_other_fixes_of_one_millisecond_are_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = settings(dir.path(), 7, 64 << 20);
    let mut buf = open(&cfg, T0);
    let now = Instant::now();
    for i in 0..3 {
        buf.remember(&fix(T0, i), now);
        buf.remember(&fix(T0, i), now);
    }
    buf.commit().unwrap();
    let (got, _) = read_all(&mut buf, HistoryWindow::new(T0, T0, 10), 10);
    assert_eq!(got, vec![fix(T0, 0), fix(T0, 1), fix(T0, 2)]);
}

#[test]
fn the_history_rides_in_the_buffers_commits_and_syncs_and_adds_none_of_its_own() {
    // Five simulated minutes of a 10 Hz receiver, each fix queued, synced within the second,
    // acknowledged at once: with and without every fix also in the history.
    let count = |history: bool| {
        let dir = tempfile::tempdir().unwrap();
        let keep = if history { 7 } else { 0 };
        let mut buf = open(&settings(dir.path(), keep, 64 << 20), T0 + 300_000);
        let t0 = Instant::now();
        let mut batch: Vec<StoredFix> = Vec::new();
        for k in 0..3000u32 {
            let now = t0 + Duration::from_millis(100) * k;
            let f = fix(T0 + i64::from(k) * 100, k);
            buf.remember(&f, now);
            buf.append(&f, now).unwrap();
            buf.tick(now).unwrap();
            buf.next_batch(50, &mut batch).unwrap();
            let seqs: Vec<u64> = batch.iter().map(|s| s.seq).collect();
            buf.ack(&seqs).unwrap();
        }
        buf.commit().unwrap();
        let io = buf.io_counts();
        drop(buf);
        let rows = if history {
            history_rows(&dir.path().join("buffer.db"))
        } else {
            0
        };
        (io.commits, io.syncs, rows)
    };
    let (commits, syncs, _) = count(false);
    assert_eq!(count(true), (commits, syncs, 3000));
}

#[test]
fn fixes_older_than_keep_days_expire_in_hourly_batches() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = settings(dir.path(), 7, 64 << 20);
    let now_ms = T0 + 10 * DAY_MS;
    let mut buf = open(&cfg, now_ms);
    let now = Instant::now();
    // One fix an hour for the last ten days.
    let times: Vec<i64> = (0..240).map(|h| now_ms - (240 - h) * 3_600_000).collect();
    for (i, &t) in times.iter().enumerate() {
        buf.remember(&fix(t, i as u32), now);
    }
    buf.commit().unwrap();
    let (kept, _) = read_all(&mut buf, HistoryWindow::new(0, now_ms, 1_000), 500);
    let cutoff = now_ms - 7 * DAY_MS;
    let want: Vec<i64> = times.iter().copied().filter(|t| *t >= cutoff).collect();
    assert_eq!(kept.iter().map(|f| f.time_ms).collect::<Vec<_>>(), want);
    // Less than an hour past keep_days waits for the next batch.
    buf.remember(&fix(now_ms + 1000, 999), now);
    buf.commit().unwrap();
    assert_eq!(
        buf.stats().unwrap().history.map(|h| h.rows),
        Some(want.len() as u64 + 1)
    );
}

/// A buffer of `cfg` that remembered 3000 fixes, a second apart from [`T0`], ticked every
/// 100 and committed.
fn remember_3000(cfg: &BufferSettings) -> Buffer {
    let mut buf = open(cfg, T0 + 3000 * 1000);
    let now = Instant::now();
    for i in 0..3000u32 {
        buf.remember(&fix(T0 + i64::from(i) * 1000, i), now);
        if i % 100 == 99 {
            buf.tick(now + Duration::from_secs(u64::from(i))).unwrap();
        }
    }
    buf.commit().unwrap();
    buf
}

#[test]
fn over_max_bytes_the_oldest_fixes_go_first_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    // 64 KiB: 1310 rows of 50 bytes.
    let cfg = settings(dir.path(), 7, 65_536);
    let mut buf = remember_3000(&cfg);
    let stats = buf.stats().unwrap().history.unwrap();
    assert!(stats.rows <= 1310, "{stats:?}");
    assert_eq!(stats.rows + stats.evicted, 3000, "{stats:?}");
    let (kept, _) = read_all(
        &mut buf,
        HistoryWindow::new(T0, T0 + 3000 * 1000, 5000),
        1000,
    );
    let first = 3000 - stats.rows as u32;
    let want: Vec<i64> = (first..3000).map(|i| T0 + i64::from(i) * 1000).collect();
    assert_eq!(kept.iter().map(|f| f.time_ms).collect::<Vec<_>>(), want);
    // The counts come back at the next start (written to meta, the rows after it counted).
    drop(buf);
    let mut buf = open(&cfg, T0 + 3000 * 1000);
    assert_eq!(buf.stats().unwrap().history, Some(stats));
}

/// The value of the sample `series` (name and labels, as written) in a metrics text.
fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn fixes_evicted_by_max_bytes_reach_the_health_snapshot_and_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    // 64 KiB: 1310 rows of 50 bytes.
    let cfg = settings(dir.path(), 7, 65_536);
    let mut buf = remember_3000(&cfg);
    let board = StatusBoard::new(Clock::manual(T0 + 3000 * 1000).0);
    board.buffer(|b| *b = buf.status());
    let stats = buf.stats().unwrap().history.unwrap();
    assert!(stats.evicted >= 3000 - 1310, "{stats:?}");
    let h = serde_json::to_value(snapshot(&board.read(), board.clock())).unwrap();
    let first = T0 + (stats.evicted as i64) * 1000;
    assert_eq!(
        h["components"]["buffer"]["history"],
        serde_json::json!({
            "on": true,
            "keep_days": 7.0,
            "rows": stats.rows,
            "evicted": stats.evicted,
            "dropped": 0,
            "oldest": gps_agent::fix::format_time_ms(first),
        })
    );
    let text = Metrics::new(board.clone()).encode().unwrap();
    assert_eq!(metric(&text, "gps_agent_history_rows"), Some(stats.rows));
    assert_eq!(
        metric(&text, "gps_agent_history_evicted_total"),
        Some(stats.evicted)
    );
    for reason in ["backlog", "same_ms", "memory"] {
        let series = format!("gps_agent_history_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&text, &series), Some(0), "{text}");
    }
}

#[test]
fn fixes_the_store_could_not_hold_while_no_file_opened_are_counted_as_memory_drops() {
    let dir = tempfile::tempdir().unwrap();
    // A plain file where the buffer's directory should be: it cannot be made or opened.
    let missing = dir.path().join("not-mounted-yet");
    std::fs::write(&missing, b"").unwrap();
    let cfg = BufferSettings {
        memory_ring: NonZeroUsize::new(4).unwrap(),
        ..settings(&missing, 7, 64 << 20)
    };
    let board = StatusBoard::new(Clock::manual(T0).0);
    let t0 = Instant::now();
    let mut store = Store::open(cfg.clone(), board.clone(), t0);
    for i in 0..10u32 {
        store.remember(&fix(T0 + i64::from(i) * 1000, i), t0);
    }
    store.publish();
    let history = board.read().buffer.history;
    assert!(history.on);
    assert_eq!((history.rows, history.dropped.memory), (0, 6));
    // The file can be opened now: the four newest become rows, the count goes with them.
    std::fs::remove_file(&missing).unwrap();
    store.tick(t0 + cfg.disk_retry).unwrap();
    store.commit().unwrap();
    store.publish();
    let history = board.read().buffer.history;
    assert_eq!(history.rows, 4);
    assert_eq!(history.dropped.total(), 6);
    assert_eq!(history.dropped.memory, 6);
    assert_eq!(history.oldest_ms, Some(T0 + 6000));
    drop(store);
    let conn = open_read_only(&cfg.path).unwrap();
    let stats = file_stats(&conn, &cfg.path).unwrap().history.unwrap();
    assert_eq!((stats.rows, stats.evicted, stats.dropped), (4, 0, 6));
}

#[test]
fn keep_days_0_keeps_nothing_and_removes_what_an_earlier_run_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut buf = open(&settings(dir.path(), 7, 64 << 20), T0);
    buf.remember(&fix(T0, 1), Instant::now());
    buf.commit().unwrap();
    drop(buf);
    assert_eq!(history_rows(&dir.path().join("buffer.db")), 1);
    let mut buf = open(&settings(dir.path(), 0, 64 << 20), T0);
    buf.remember(&fix(T0 + 1000, 2), Instant::now());
    buf.commit().unwrap();
    assert_eq!(buf.stats().unwrap().history, None);
    let mut out = Vec::new();
    let mut w = HistoryWindow::new(0, i64::MAX / 8, 10);
    assert!(!buf.history_page(&mut w, 10, &mut out).unwrap());
    assert!(out.is_empty());
    drop(buf);
    let conn = rusqlite::Connection::open(dir.path().join("buffer.db")).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'history'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);
}

/// `gps-agent parse`'s fixes of `log`: the JSON lines it prints. (Compared as text: parsing
/// them back would round some last digits.)
fn parsed(log: &Path) -> Vec<String> {
    support::agent::parse(log)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The whole history of `db` as a backfill reads it beside the daemon, each fix printed as
/// `parse` prints its output (numbered from 0).
fn backfill_of(db: &Path) -> Vec<String> {
    let conn = open_read_only(db).unwrap();
    let mut w = HistoryWindow::new(0, T0 + 365 * DAY_MS, u64::MAX);
    let (mut all, mut out) = (Vec::new(), Vec::new());
    loop {
        let more = w.next_page(&conn, db, 100, &mut out).unwrap();
        all.extend_from_slice(&out);
        if !more {
            break;
        }
    }
    all.iter()
        .enumerate()
        .map(|(i, fix)| serde_json::to_string(&Numbered { seq: i as u64, fix }).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_fix_is_in_the_history_also_those_the_report_stage_did_not_send() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start();
    let device = support::unique("truck");
    let mut sub = Subscriber::start(&broker, &format!("fleet/{device}/fixes")).await;
    let log = drive_log(
        dir.path(),
        DriveSpec {
            epochs: 600,
            ..DriveSpec::default()
        },
    );
    let want = parsed(&log);
    // The adaptive policy keeps a small share for sending.
    let gnss = format!(
        "{}\n\n[report]\nmode = \"adaptive\"",
        replay_gnss(log.to_str().unwrap())
    );
    let agent = Agent::start(dir.path(), &device, &gnss, &broker.url(), &[]);
    let (_, h) = agent.wait_health("every fix decided", Duration::from_secs(30), |_, h| {
        let g = &h["components"]["gnss"];
        let decided =
            g["kept"].as_u64().unwrap_or(0) + g["dropped_by_policy"].as_u64().unwrap_or(0);
        decided == want.len() as u64
    });
    let kept = h["components"]["gnss"]["kept"].as_u64().unwrap();
    assert!(kept < want.len() as u64 / 2, "{h}");
    // The operator sees them all in the history, not just the kept ones: /health and
    // /metrics (rows are counted as the buffer's commits write them).
    let accepted = want.len() as u64;
    let (_, h) = agent.wait_health("every fix a row", Duration::from_secs(30), |_, h| {
        h["components"]["buffer"]["history"]["rows"] == accepted
    });
    let first: serde_json::Value = serde_json::from_str(&want[0]).unwrap();
    assert_eq!(
        h["components"]["buffer"]["history"],
        serde_json::json!({
            "on": true,
            "keep_days": 7.0,
            "rows": accepted,
            "evicted": 0,
            "dropped": 0,
            "oldest": first["time"],
        })
    );
    let text = agent.raw("/metrics");
    assert_eq!(metric(&text, "gps_agent_history_rows"), Some(accepted));
    assert_eq!(metric(&text, "gps_agent_history_evicted_total"), Some(0));
    let sent = sub.fix_seqs(kept, Duration::from_secs(30)).await;
    assert_eq!(sent.len() as u64, kept);
    let (code, db) = agent.terminate();
    assert_eq!(code, 0);
    assert_eq!(
        backfill_of(&db),
        want,
        "the history is the parse of the same input"
    );
}

#[test]
fn the_history_of_a_killed_agent_is_what_the_crash_journal_held() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("buffer.db");
    let log = drive_log(
        dir.path(),
        DriveSpec {
            rate_hz: 10,
            epochs: 300,
            ..DriveSpec::default()
        },
    );
    let want = parsed(&log);
    let gnss = format!(
        "[gnss]\nsource = \"file\"\npath = \"{}\"\npace = \"realtime\"\n\n\
         [report]\nmode = \"adaptive\"",
        log.display()
    );
    // No commit for 30 s: what was accepted lives in the journal alone.
    let buffer = format!(
        "[buffer]\npath = \"{}\"\ncommit_interval_s = 30",
        db.display()
    );
    let nowhere = format!("mqtt://{}", free_port());
    let device = support::unique("truck");
    let agent = Agent::start_with_buffer(dir.path(), &device, &gnss, &buffer, &nowhere, &[]);
    agent.wait_health("fixes accepted", Duration::from_secs(20), |_, h| {
        h["components"]["gnss"]["kept"].as_u64().unwrap_or(0)
            + h["components"]["gnss"]["dropped_by_policy"]
                .as_u64()
                .unwrap_or(0)
            >= 20
    });
    let (config, health, agent_log) = (agent.config.clone(), agent.health, agent.log.clone());
    agent.kill();
    // The next start reads no new drive: its history is what the journal kept.
    std::fs::write(&log, b"").unwrap();
    let agent = Agent::restart(&config, health, &db, &agent_log);
    agent.wait_log("the replay", |v| {
        v["message"] == "fixes the crash journal held stored in the buffer"
    });
    let (code, db) = agent.terminate();
    assert_eq!(code, 0);
    let got = backfill_of(&db);
    // Every fix accepted before the kill, in order, none twice: a prefix of the drive. (A
    // fix the motion check held for its successor had not been accepted yet.)
    assert!(got.len() >= 20, "{} fixes", got.len());
    assert_eq!(got[..], want[..got.len()]);
}

/// A history counts what the memory ring could not hold for it while the disk failed, and
/// writes the rest when the disk is back: every accepted fix is a row or counted as dropped
/// (`memory`), in `/health`, `/metrics` and `buffer stats`. The real daemon on a pty at
/// 10 Hz, its buffer under the power-cut shim whose control file fails every write with
/// ENOSPC on demand (as `tests/buffer_faults.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixes_the_memory_ring_cannot_hold_for_the_history_are_counted_and_the_rest_written_later()
{
    let dir = tempfile::tempdir().unwrap();
    let spec = DriveSpec {
        rate_hz: 10,
        epochs: 300,
        ..DriveSpec::default()
    };
    let link = dir.path().join("gps0");
    let relay = Relay::start(&link, spec.clone(), 0x4157);
    let ctl = dir.path().join("disk");
    std::fs::write(&ctl, "ok").unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let db = state.join("buffer.db");
    let env = fault_env(&state, &ctl);
    let gnss = format!("[gnss]\nsource = \"serial\"\npath = \"{}\"", link.display());
    // Two seconds of fixes fill the ring.
    let buffer = format!(
        "[buffer]\npath = \"{}\"\ncommit_interval_s = 0.2\nmemory_ring = 20\ndisk_retry_s = 0.5",
        db.display()
    );
    let nowhere = format!("url = \"mqtt://{}\"", free_port());
    let device = support::unique("truck");
    let agent = Agent::start_with_sections(dir.path(), &device, &gnss, &buffer, &nowhere, &env);
    agent.wait_log("gnss device open", |v| v["message"] == "gnss device open");
    relay.resume();
    let history = |h: &serde_json::Value, key: &str| {
        h["components"]["buffer"]["history"][key]
            .as_u64()
            .unwrap_or(0)
    };
    agent.wait_health("rows", Duration::from_secs(20), |_, h| {
        history(h, "rows") > 0
    });
    std::fs::write(&ctl, "enospc").unwrap();
    agent.wait_health("fixes dropped", Duration::from_secs(20), |_, h| {
        h["components"]["buffer"]["last_error"]["code"] == "BUFFER_DISK_FULL"
            && history(h, "dropped") >= 10
    });
    std::fs::write(&ctl, "ok").unwrap();
    relay.drain(Duration::from_secs(60));
    let accepted = |h: &serde_json::Value| {
        h["components"]["gnss"]["kept"].as_u64().unwrap_or(0)
            + h["components"]["gnss"]["dropped_by_policy"]
                .as_u64()
                .unwrap_or(0)
    };
    // Each accepted fix a row or dropped, none both: the ring's 20 went in after the fault.
    let (_, h) = agent.wait_health("every fix accounted", Duration::from_secs(30), |_, h| {
        h["components"]["buffer"]["in_memory"] == 0
            && accepted(h) > 0
            && history(h, "rows") + history(h, "dropped") == accepted(h)
    });
    let dropped = history(&h, "dropped");
    assert!(dropped >= 10, "{h}");
    assert_eq!(history(&h, "evicted"), 0);
    let text = agent.raw("/metrics");
    let series = |reason: &str| format!("gps_agent_history_dropped_total{{reason=\"{reason}\"}}");
    assert_eq!(metric(&text, &series("memory")), Some(dropped), "{text}");
    assert_eq!(metric(&text, &series("backlog")), Some(0));
    assert_eq!(metric(&text, &series("same_ms")), Some(0));
    let rows = history(&h, "rows");
    // (`terminate` names the default path; this buffer lives under the shim's directory.)
    let (code, _) = agent.terminate();
    assert_eq!(code, 0);
    drop(relay);
    // Written to the file with its commits: `buffer stats` beside it says the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gps-agent"))
        .args(["buffer", "stats", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Every epoch of the drive is accepted by now: the last at shutdown, when the motion
    // check no longer waits for its successor.
    let rows_now = u64::from(spec.epochs) - dropped;
    assert!(rows_now >= rows, "{rows_now} < {rows}");
    assert_eq!(
        stats["history"],
        serde_json::json!({"rows": rows_now, "evicted": 0, "dropped": dropped}),
        "{stats}"
    );
}
