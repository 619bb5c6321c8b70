//! Buffer throughput with a deep backlog: 1,000,000 fixes already buffered, then appends/s
//! (each to the crash journal, a commit and a WAL sync every `commit_max`), drained fixes/s (next_batch + ack),
//! file bytes per buffered fix, and RSS before and after (it must not grow with depth). Then
//! wear: one simulated hour at 1 Hz and at 10 Hz of live traffic (each fix appended, synced
//! within the second, published and acknowledged), with the commits, syncs and checkpoints
//! the buffer made and the bytes the process wrote (`wchar`) and dirtied for the disk
//! (`write_bytes`, 0 on a RAM file system) from `/proc/self/io`; then the same hours with the
//! local history (`[history]`): every fix also remembered, all of them queued (`[report]
//! mode = "all"`) or one in twenty (about what `mode = "adaptive"` keeps), with the CPU the
//! simulated hour took (the buffer's calls of both the ingest thread and the
//! uplink) and the bytes a history row takes in the file. A plain `main` printing figures:
//! `cargo bench --bench buffer`. Targets: >= 100,000/s each, <= 64 bytes per fix.

use gps_agent::buffer::{Buffer, StoredFix};
use gps_agent::config::BufferConfig;
use gps_agent::fix::{Fix, FixMode};
use std::time::Duration;
use std::time::Instant;

/// The raw `[buffer]` section as an operator writes it, checked as the agent checks it.
fn checked(raw: &gps_agent::config::BufferConfig) -> gps_agent::config::BufferSettings {
    let mut problems = Vec::new();
    let settings = raw.check(&mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    settings
}

const BACKLOG: i64 = 1_000_000;
const MEASURED: i64 = 200_000;

fn fix(i: i64) -> Fix {
    fix_at(1_700_000_000_000 + i * 1000, i)
}

fn fix_at(time_ms: i64, i: i64) -> Fix {
    Fix {
        time_ms,
        lat: 41.574970205 + (i % 10_000) as f64 * 1e-6,
        lon: -93.750558641 - (i % 7_000) as f64 * 1e-6,
        alt_m: Some(278.02 + (i % 100) as f64),
        speed_mps: Some(13.4 + (i % 50) as f64 * 0.1),
        course_deg: Some((i % 360) as f64 + 0.308),
        hdop: Some(0.9),
        sats: Some(11),
        mode: FixMode::ThreeD,
        event: None,
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    if std::env::var_os("GPS_AGENT_BENCH_WEAR_ONLY").is_some() {
        wear();
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = BufferConfig {
        path: dir.path().join("buffer.db"),
        // Room for backlog + measured appends: this measures appending, not evicting.
        max_fixes: 10_000_000,
        max_bytes: 4 << 30,
        ..BufferConfig::default()
    };
    println!(
        "each fix to the crash journal; a commit (WAL, synchronous=NORMAL) and a sync every {} s or {} fixes",
        cfg.commit_interval_s, cfg.commit_max
    );
    let (mut buf, _) = Buffer::open(&checked(&cfg)).expect("open");
    let rss0 = rss_kib();

    let t = Instant::now();
    for i in 0..BACKLOG {
        buf.append(&fix(i), Instant::now()).expect("append");
    }
    buf.commit().expect("commit");
    let fill = t.elapsed().as_secs_f64();
    println!(
        "fill {BACKLOG} from empty: {:.0} appends/s",
        BACKLOG as f64 / fill
    );
    let rss1 = rss_kib();

    let t = Instant::now();
    for i in BACKLOG..BACKLOG + MEASURED {
        buf.append(&fix(i), Instant::now()).expect("append");
    }
    buf.commit().expect("commit");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "append {MEASURED} at depth {BACKLOG}: {:.0} appends/s",
        MEASURED as f64 / secs
    );

    let depth = buf.stats().expect("stats").depth;
    {
        let conn = rusqlite::Connection::open(&cfg.path).expect("open");
        let (pages, free, size): (i64, i64, i64) = conn
            .query_row(
                "SELECT (SELECT page_count FROM pragma_page_count),
                        (SELECT freelist_count FROM pragma_freelist_count),
                        (SELECT page_size FROM pragma_page_size)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("pragmas");
        println!(
            "bytes per buffered fix: {:.1} (used pages {} x {} B / {depth} fixes)",
            ((pages - free) * size) as f64 / depth as f64,
            pages - free,
            size
        );
    }

    let mut batch: Vec<StoredFix> = Vec::with_capacity(500);
    let mut seqs: Vec<u64> = Vec::with_capacity(500);
    let mut drained = 0i64;
    let t = Instant::now();
    while drained < MEASURED {
        buf.next_batch(500, &mut batch).expect("next_batch");
        seqs.clear();
        seqs.extend(batch.iter().map(|s| s.seq));
        buf.ack(&seqs).expect("ack");
        buf.tick(Instant::now()).expect("tick");
        drained += batch.len() as i64;
    }
    buf.commit().expect("commit");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "drain {drained} (next_batch 500 + ack) at depth ~{depth}: {:.0} fixes/s",
        drained as f64 / secs
    );
    let rss2 = rss_kib();
    println!("RSS: empty {rss0} KiB, at depth {BACKLOG} {rss1} KiB, after append+drain {rss2} KiB");
    drop(buf);
    wear();
}

/// The wear lines: today's (the queue alone), then with the local history.
fn wear() {
    for hz in [1, 10] {
        wear_hour(hz, Feed::Queue);
    }
    for feed in [Feed::HistoryAll, Feed::HistoryAdaptive] {
        for hz in [1, 10] {
            wear_hour(hz, feed);
        }
    }
}

/// What the simulated hour feeds the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    /// Every fix queued; no history (as before it).
    Queue,
    /// Every fix remembered and queued.
    HistoryAll,
    /// Every fix remembered, one in twenty queued.
    HistoryAdaptive,
}

/// CPU time of this (single-threaded) process so far, seconds: the first field of
/// `/proc/self/schedstat`, in nanoseconds (clock ticks would resolve a tenth of a second's
/// work to 10%).
fn cpu_s() -> f64 {
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1e9
}

/// (`wchar`, `write_bytes`) of this process, from `/proc/self/io`.
fn io_bytes() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("wchar:"), field("write_bytes:"))
}

/// One simulated hour of live traffic at `hz`, as the daemon runs it: the ingest thread ticks
/// every 100 ms and appends each fix (and remembers it, with the history), the uplink takes
/// what is synced and acknowledges it at once; the clock is advanced by hand.
fn wear_hour(hz: u64, feed: Feed) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = BufferConfig {
        path: dir.path().join("buffer.db"),
        ..BufferConfig::default()
    };
    let (mut buf, _) = Buffer::open(&checked(&cfg)).expect("open");
    let before = buf.io_counts();
    let (wchar0, disk0) = io_bytes();
    let cpu0 = cpu_s();
    // The history keeps what is younger than keep_days by the agent's clock: an hour that
    // just ended.
    let start_ms = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let t0 = Instant::now();
    let tick = Duration::from_millis(100);
    let ticks_per_fix = 10 / hz;
    let mut batch: Vec<StoredFix> = Vec::new();
    let mut seqs: Vec<u64> = Vec::new();
    for k in 0..36_000u32 {
        let now = t0 + tick * k;
        if u64::from(k) % ticks_per_fix == 0 {
            let n = u64::from(k) / ticks_per_fix;
            match feed {
                Feed::Queue => {
                    buf.append(&fix(i64::from(k)), now).expect("append");
                }
                Feed::HistoryAll | Feed::HistoryAdaptive => {
                    let f = fix_at(start_ms + i64::from(k) * 100, i64::from(k));
                    buf.remember(&f, now);
                    if feed == Feed::HistoryAll || n.is_multiple_of(20) {
                        buf.append(&f, now).expect("append");
                    }
                }
            }
        }
        buf.tick(now).expect("tick");
        buf.next_batch(50, &mut batch).expect("next_batch");
        seqs.clear();
        seqs.extend(batch.iter().map(|s| s.seq));
        buf.ack(&seqs).expect("ack");
    }
    buf.commit().expect("commit");
    let cpu = cpu_s() - cpu0;
    let (wchar1, disk1) = io_bytes();
    let io = buf.io_counts();
    let history = buf.stats().expect("stats").history;
    drop(buf);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let what = match feed {
        Feed::Queue => "",
        Feed::HistoryAll => ", history, every fix queued",
        Feed::HistoryAdaptive => ", history, 1 in 20 queued",
    };
    println!(
        "wear, 1 h at {hz} Hz{what}: {} commits, {} WAL syncs, {} checkpoints; written {:.1} MiB (wchar), dirtied for the disk {:.1} MiB (write_bytes); CPU {cpu:.3} s",
        io.commits - before.commits,
        io.syncs - before.syncs,
        io.checkpoints - before.checkpoints,
        mib(wchar1 - wchar0),
        mib(disk1 - disk0),
    );
    if let Some(h) = history.filter(|h| h.rows > 0) {
        let conn = rusqlite::Connection::open(&cfg.path).expect("open");
        let pages: i64 = conn
            .query_row(
                "SELECT count(*) FROM dbstat WHERE name = 'history'",
                [],
                |r| r.get(0),
            )
            .unwrap_or(0);
        println!(
            "  history: {} rows, {:.1} bytes per row in the file (1 KiB pages)",
            h.rows,
            (pages * 1024) as f64 / h.rows as f64
        );
    }
}
