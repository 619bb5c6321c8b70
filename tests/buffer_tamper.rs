//! The buffer file in careless hands while the real daemon runs (issue 14, items 1, 3, 7):
//! deleted, truncated, or unwritable when the agent is told to stop. Each test drives the
//! real binary and checks what a fleet operator would: the alarm in `/health`, metrics and
//! log, and whether the backlog still reaches the broker.

mod support;

use gps_agent::sim::DriveSpec;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::agent::{drive_log, expected_fixes, quick_retry_mqtt, read_log, Agent};
use support::broker::{Subscriber, TestBroker};
use support::proxy::FaultProxy;
use support::relay::Relay;
use support::shim::fault_env;

const BACKLOG: u32 = 5000;

/// (stream, seq, receiver time) of every fix in the messages received until `n` distinct
/// times arrived (or `within` passed).
async fn collect(
    sub: &mut Subscriber,
    n: usize,
    within: Duration,
) -> (BTreeSet<String>, BTreeSet<u64>, BTreeSet<String>) {
    let (mut streams, mut seqs, mut times) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let _ = support::wait::poll_async(within, async || {
        if let Some(msg) = sub.next(Duration::from_millis(100)).await {
            if msg.topic.ends_with("/fixes") {
                let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
                streams.insert(v["stream"].as_str().unwrap().to_string());
                for f in v["fixes"].as_array().unwrap() {
                    seqs.insert(f["seq"].as_u64().unwrap());
                    times.insert(f["time"].as_str().unwrap().to_string());
                }
            }
        }
        times.len() >= n
    })
    .await;
    (streams, seqs, times)
}

fn stream_of(db: &Path) -> String {
    let conn = gps_agent::buffer::open_read_only(db).unwrap();
    conn.query_row("SELECT value FROM meta WHERE key = 'stream'", [], |r| {
        r.get(0)
    })
    .unwrap()
}

fn files_named(dir: &Path, part: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(part))
        .collect()
}

/// A daemon that has buffered the whole of a `BACKLOG`-fix drive with its broker away.
struct Backlogged {
    dir: tempfile::TempDir,
    broker: TestBroker,
    proxy: FaultProxy,
    agent: Agent,
    device: String,
    stream: String,
}

async fn backlogged() -> Backlogged {
    let dir = tempfile::tempdir().unwrap();
    let spec = DriveSpec {
        rate_hz: 10,
        epochs: BACKLOG,
        ..DriveSpec::default()
    };
    let log = drive_log(dir.path(), spec);
    assert_eq!(expected_fixes(&log), u64::from(BACKLOG));
    let broker = TestBroker::start();
    let proxy = FaultProxy::start(broker.addr).await;
    proxy.cut().await;
    let device = support::unique("truck");
    let gnss = format!(
        "[gnss]\nsource = \"file\"\npath = \"{}\"\npace = \"fast\"",
        log.display()
    );
    let agent = Agent::start_with_mqtt(
        dir.path(),
        &device,
        &gnss,
        &quick_retry_mqtt(&proxy.url()),
        &[],
    );
    agent.wait_health("the backlog buffered", Duration::from_secs(60), |_, h| {
        h["components"]["buffer"]["depth"] == BACKLOG
    });
    let stream = stream_of(&agent.db);
    Backlogged {
        dir,
        broker,
        proxy,
        agent,
        device,
        stream,
    }
}

fn metric(agent: &Agent, line_start: &str) -> Option<f64> {
    agent
        .raw("/metrics")
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_buffer_file_under_the_daemon_loses_nothing_and_keeps_stream_and_seqs() {
    let b = backlogged().await;
    let db = b.agent.db.clone();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    let (_, h) = b
        .agent
        .wait_health("the alarm", Duration::from_secs(10), |_, h| {
            h["components"]["buffer"]["last_error"]["code"] == "BUFFER_FILE_GONE"
        });
    let buffer = &h["components"]["buffer"];
    assert_eq!(buffer["status"], "degraded", "{h}");
    assert_eq!(buffer["depth"], BACKLOG, "{h}");
    assert!(db.exists(), "written back to the path");
    assert_eq!(stream_of(&db), b.stream, "the same stream");
    let conn = gps_agent::buffer::open_read_only(&db).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM fixes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, i64::from(BACKLOG), "every fix in the file at the path");
    drop(conn);
    assert_eq!(
        metric(
            &b.agent,
            "gps_agent_buffer_rescues_total{code=\"BUFFER_FILE_GONE\"}"
        ),
        Some(1.0)
    );
    b.agent.wait_log("the alarm in the log", |v| {
        v["code"] == "BUFFER_FILE_GONE" && v["level"] == "ERROR"
    });

    // The broker comes back: the whole backlog arrives, in the stream it began in.
    let mut sub = Subscriber::start(&b.broker, &format!("fleet/{}/fixes", b.device)).await;
    b.proxy.restore().await;
    let (streams, seqs, times) =
        collect(&mut sub, BACKLOG as usize, Duration::from_secs(120)).await;
    assert_eq!(times.len(), BACKLOG as usize, "the whole backlog arrives");
    assert_eq!(seqs, (1..=u64::from(BACKLOG)).collect());
    assert_eq!(streams, BTreeSet::from([b.stream.clone()]));

    // And the file at the path is the one the next start goes on with: same stream, seqs on.
    let (code, _) = b.agent.terminate();
    assert_eq!(code, 0);
    let spec = DriveSpec {
        rate_hz: 10,
        epochs: 30,
        start_time_ms: DriveSpec::default().start_time_ms + i64::from(BACKLOG) * 100 + 10_000,
        ..DriveSpec::default()
    };
    let log = b.dir.path().join("more.nmea");
    gps_agent::sim::write_log(
        gps_agent::sim::Drive::new(spec).unwrap(),
        std::fs::File::create(&log).unwrap(),
    )
    .unwrap();
    let gnss = format!(
        "[gnss]\nsource = \"file\"\npath = \"{}\"\npace = \"fast\"",
        log.display()
    );
    let _agent = Agent::start(b.dir.path(), &b.device, &gnss, &b.broker.url(), &[]);
    let (streams, seqs, _) = collect(&mut sub, 30, Duration::from_secs(30)).await;
    assert_eq!(streams, BTreeSet::from([b.stream.clone()]));
    assert_eq!(
        seqs,
        (u64::from(BACKLOG) + 1..=u64::from(BACKLOG) + 30).collect()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncating_the_buffer_file_under_the_daemon_is_corruption_and_the_backlog_still_arrives() {
    let b = backlogged().await;
    let db = b.agent.db.clone();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(0)
        .unwrap();
    let (code, h) = b
        .agent
        .wait_health("the alarm", Duration::from_secs(10), |_, h| {
            h["components"]["buffer"]["last_error"]["code"] == "BUFFER_CORRUPT"
        });
    let buffer = &h["components"]["buffer"];
    assert_eq!(code, 503);
    assert_eq!(buffer["status"], "unhealthy", "{h}");
    assert_eq!(buffer["depth"], BACKLOG, "not a drained buffer: {h}");
    let moved = files_named(b.dir.path(), "buffer.db.corrupt-");
    assert!(!moved.is_empty(), "the damaged file is kept, moved aside");
    let new_stream = stream_of(&db);
    assert_ne!(new_stream, b.stream, "a new stream");
    assert_eq!(
        metric(
            &b.agent,
            "gps_agent_buffer_rescues_total{code=\"BUFFER_CORRUPT\"}"
        ),
        Some(1.0)
    );
    assert_eq!(metric(&b.agent, "gps_agent_buffer_lost_total"), Some(0.0));

    let mut sub = Subscriber::start(&b.broker, &format!("fleet/{}/fixes", b.device)).await;
    b.proxy.restore().await;
    let (streams, seqs, times) =
        collect(&mut sub, BACKLOG as usize, Duration::from_secs(120)).await;
    assert_eq!(times.len(), BACKLOG as usize, "the whole backlog arrives");
    assert_eq!(
        seqs,
        (1..=u64::from(BACKLOG)).collect(),
        "renumbered from 1"
    );
    assert_eq!(streams, BTreeSet::from([new_stream]));
}

/// The daemon on a paused pty feed, its buffer under the power-cut shim for faults.
struct DiskRig {
    dir: tempfile::TempDir,
    relay: Relay,
    ctl: PathBuf,
    agent: Agent,
}

fn disk_rig(epochs: u32, disk_retry_s: f64, ctl_at_start: &str) -> DiskRig {
    let dir = tempfile::tempdir().unwrap();
    let spec = DriveSpec {
        rate_hz: 10,
        epochs,
        ..DriveSpec::default()
    };
    let link = dir.path().join("gps0");
    let relay = Relay::start(&link, spec, 0xD15C);
    let ctl = dir.path().join("disk");
    std::fs::write(&ctl, ctl_at_start).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let env = fault_env(&state, &ctl);
    let gnss = format!("[gnss]\nsource = \"serial\"\npath = \"{}\"", link.display());
    let buffer = format!(
        "[buffer]\npath = \"{}\"\ndisk_retry_s = {disk_retry_s}",
        state.join("buffer.db").display()
    );
    let nowhere = format!("mqtt://{}", support::broker::free_port());
    let agent = Agent::start_with_buffer(
        dir.path(),
        &support::unique("truck"),
        &gnss,
        &buffer,
        &nowhere,
        &env,
    );
    agent.wait_log("gnss device open", |v| v["message"] == "gnss device open");
    DiskRig {
        dir,
        relay,
        ctl,
        agent,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_full_disk_from_the_start_says_what_it_loses() {
    let rig = disk_rig(60, 5.0, "enospc");
    rig.relay.resume();
    rig.relay.drain(Duration::from_secs(30));
    let (_, h) = rig
        .agent
        .wait_health("fixes held in memory", Duration::from_secs(10), |_, h| {
            h["components"]["buffer"]["in_memory"] == 60
        });
    let buffer = &h["components"]["buffer"];
    let held = buffer["in_memory"].as_u64().unwrap();
    assert_eq!(buffer["depth"], held, "{h}");
    assert_eq!(buffer["status"], "degraded", "{h}");
    assert_eq!(buffer["last_error"]["code"], "BUFFER_DISK_FULL", "{h}");
    let message = buffer["last_error"]["message"].as_str().unwrap();
    assert!(!message.contains("0 fixes"), "no stale count: {message}");
    let log = rig.agent.log.clone();
    let (code, _) = rig.agent.terminate();
    assert_eq!(code, 0);
    let lines = read_log(&log);
    let warn = lines
        .iter()
        .find(|v| v["level"] == "WARN" && v["lost"].is_u64())
        .unwrap_or_else(|| panic!("no WARN with the count in {lines:#?}"));
    assert_eq!(warn["code"], "BUFFER_LOST", "{warn}");
    assert_eq!(warn["cause"], "BUFFER_DISK_FULL", "{warn}");
    assert_eq!(warn["lost"], held, "{warn}");
    let stopped = lines
        .iter()
        .find(|v| v["message"] == "stopped")
        .expect("the stopped line");
    assert_eq!(stopped["lost"], warn["lost"], "{stopped}");
    assert_eq!(stopped["buffered"], 0, "{stopped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_fixes_in_the_memory_ring_writes_them_if_the_disk_came_back_else_counts_them()
{
    for disk_back in [false, true] {
        // A long retry: only the stop tries the disk again.
        let rig = disk_rig(40, 600.0, "ok");
        rig.agent
            .wait_log("buffer open", |v| v["message"] == "buffer open");
        std::fs::write(&rig.ctl, "enospc").unwrap();
        rig.relay.resume();
        rig.relay.drain(Duration::from_secs(30));
        let (_, h) =
            rig.agent
                .wait_health("fixes held in memory", Duration::from_secs(10), |_, h| {
                    h["components"]["buffer"]["in_memory"] == 40
                });
        let held = h["components"]["buffer"]["in_memory"].as_u64().unwrap();
        assert_eq!(h["components"]["buffer"]["depth"], held, "{h}");
        if disk_back {
            std::fs::write(&rig.ctl, "ok").unwrap();
        }
        let log = rig.agent.log.clone();
        let db = rig.dir.path().join("state").join("buffer.db");
        let (code, _) = rig.agent.terminate();
        assert_eq!(code, 0);
        let lines = read_log(&log);
        let warn = lines
            .iter()
            .find(|v| v["level"] == "WARN" && v["lost"].is_u64());
        let conn = rusqlite::Connection::open(&db).unwrap();
        let stored: i64 = conn
            .query_row("SELECT count(*) FROM fixes", [], |r| r.get(0))
            .unwrap();
        if disk_back {
            assert!(warn.is_none(), "nothing lost: {warn:?}");
            assert_eq!(stored as u64, held, "the ring reached the file");
        } else {
            let warn = warn.unwrap_or_else(|| panic!("no WARN with the count in {lines:#?}"));
            assert_eq!(warn["code"], "BUFFER_LOST", "{warn}");
            assert_eq!(warn["cause"], "BUFFER_DISK_FULL", "{warn}");
            assert_eq!(warn["lost"], held, "{warn}");
            assert_eq!(stored, 0);
        }
    }
}
