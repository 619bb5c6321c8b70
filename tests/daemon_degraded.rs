//! The real binary when things are missing or busy: started with no receiver and no broker
//! it says degraded, then healthy once both appear; a storm of health requests leaves ingest
//! and delivery unaffected.

mod support;

use gps_agent::sim::{Drive, DriveSpec};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::agent::{drive_log, expected_fixes, quick_retry_mqtt, Agent};
use support::broker::{Subscriber, TestBroker};
use support::proxy::FaultProxy;
use support::pty::receiver_at;
use support::wait;

fn get(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status: u16 = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_receiver_and_no_broker_it_is_degraded_then_healthy_when_both_appear() {
    let dir = tempfile::tempdir().unwrap();
    let device_path: PathBuf = dir.path().join("gps0");
    let broker = TestBroker::start();
    let proxy = FaultProxy::start(broker.addr).await;
    proxy.cut().await;
    let device = support::unique("truck");
    let gnss = format!(
        "[gnss]\nsource = \"serial\"\npath = \"{}\"",
        device_path.display()
    );
    let agent = Agent::start_with_mqtt(
        dir.path(),
        &device,
        &gnss,
        &quick_retry_mqtt(&proxy.url()),
        &[],
    );

    // Nothing there: degraded (503), and it says why.
    let (code, h) = agent.wait_health("the missing receiver", Duration::from_secs(10), |_, h| {
        h["components"]["gnss"]["last_error"]["code"]
            .as_str()
            .is_some_and(|c| c.starts_with("GNSS_"))
    });
    assert_eq!(code, 503, "{h}");
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["components"]["gnss"]["fix"], "none", "{h}");
    assert_eq!(h["components"]["mqtt"]["connected"], false, "{h}");
    assert!(
        h["components"]["gnss"]["last_error"]["code"]
            .as_str()
            .is_some_and(|c| c.starts_with("GNSS_")),
        "{h}"
    );

    // The receiver is plugged in and the broker comes back.
    let mut master = receiver_at(&device_path);
    let stop = Arc::new(AtomicBool::new(false));
    let feeder_stop = Arc::clone(&stop);
    let feeder = std::thread::spawn(move || {
        let spec = DriveSpec {
            rate_hz: 5,
            epochs: 300,
            ..DriveSpec::default()
        };
        // Until the agent opens the device, the pty refuses writes: start the drive over
        // until it goes through.
        wait::until(
            "the agent to open the receiver",
            Duration::from_secs(60),
            || {
                let drive = Drive::new(spec.clone()).unwrap();
                let written = gps_agent::sim::write_realtime(drive, &mut master, &feeder_stop);
                written.is_ok() || feeder_stop.load(Ordering::Relaxed)
            },
        );
        master
    });
    proxy.restore().await;
    let mut sub = Subscriber::start(&broker, &format!("fleet/{device}/fixes")).await;

    let (_, h) = tokio::task::block_in_place(|| {
        agent.wait_health("healthy", Duration::from_secs(30), |code, _| code == 200)
    });
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["components"]["mqtt"]["connected"], true);
    assert_eq!(h["components"]["gnss"]["fix"], "3d", "{h}");
    assert!(
        sub.next(Duration::from_secs(5)).await.is_some(),
        "fixes reach the broker"
    );
    stop.store(true, Ordering::Relaxed);
    let _master = feeder.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_health_requests_from_fifty_connections_leave_ingest_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    // 10 s of receiver output at 10 Hz, replayed in real time while the endpoint is hammered.
    let spec = DriveSpec {
        rate_hz: 10,
        epochs: 100,
        ..DriveSpec::default()
    };
    let log = drive_log(dir.path(), spec);
    let expected = expected_fixes(&log);
    assert_eq!(expected, 100);
    let broker = TestBroker::start();
    let device = support::unique("truck");
    let mut sub = Subscriber::start(&broker, &format!("fleet/{device}/fixes")).await;
    let gnss = format!(
        "[gnss]\nsource = \"file\"\npath = \"{}\"\npace = \"realtime\"",
        log.display()
    );
    let agent = Agent::start(dir.path(), &device, &gnss, &broker.url(), &[]);

    let answered = Arc::new(AtomicU64::new(0));
    let addr = agent.health;
    let clients: Vec<_> = (0..50)
        .map(|i| {
            let answered = Arc::clone(&answered);
            std::thread::spawn(move || {
                for j in 0..20 {
                    let path = match (i + j) % 4 {
                        0 => "/health",
                        1 => "/metrics",
                        2 => "/nope",
                        _ => "/live",
                    };
                    let (code, _) = get(addr, path);
                    if code != 0 {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert!(
        answered.load(Ordering::Relaxed) >= 900,
        "most requests answered (others refused cleanly)"
    );

    let seqs = sub.fix_seqs(expected, Duration::from_secs(30)).await;
    assert_eq!(
        seqs,
        (1..=expected).collect::<BTreeSet<u64>>(),
        "every fix still delivered"
    );
    let (_, h) = agent.get("/health");
    let rejected: u64 = h["components"]["gnss"]["rejected"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|v| v.as_u64())
        .sum();
    assert_eq!(rejected, 0, "no epoch lost or rejected under load: {h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_writable_disk_it_holds_fixes_in_memory_and_stores_them_when_the_disk_comes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DriveSpec {
        epochs: 40,
        ..DriveSpec::default()
    };
    let log = dir.path().join("drive.nmea");
    gps_agent::sim::write_log(
        Drive::new(spec).unwrap(),
        std::fs::File::create(&log).unwrap(),
    )
    .unwrap();
    // The state directory's place is taken by a file: the buffer cannot be created.
    let state = dir.path().join("state");
    std::fs::write(&state, b"not a directory").unwrap();
    let db = state.join("gps-agent").join("buffer.db");
    let buffer = format!(
        "[buffer]\npath = \"{}\"\ncommit_interval_s = 0.2\ndisk_retry_s = 0.5",
        db.display()
    );
    let gnss = format!("[gnss]\nsource = \"file\"\npath = \"{}\"", log.display());
    let broker = TestBroker::start();
    let device = support::unique("truck");
    let mut sub = Subscriber::start(&broker, &format!("fleet/{device}/fixes")).await;
    let agent = Agent::start_with_buffer(dir.path(), &device, &gnss, &buffer, &broker.url(), &[]);

    let (code, h) = tokio::task::block_in_place(|| {
        agent.wait_health(
            "40 fixes held in memory",
            Duration::from_secs(10),
            |_, h| h["components"]["buffer"]["depth"] == 40,
        )
    });
    let b = &h["components"]["buffer"];
    assert_eq!(code, 503, "{h}");
    assert_eq!(b["status"], "degraded", "{h}");
    assert_eq!(b["last_error"]["code"], "BUFFER_OPEN", "{h}");
    // Nothing published before it is stored: nothing acknowledged while held (a count, not a
    // quiet spell).
    assert_eq!(b["acked_seq"], 0, "{h}");

    // The disk comes back: the held fixes are stored, numbered 1..40, and delivered.
    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir(&state).unwrap();
    let seqs = sub.fix_seqs(40, Duration::from_secs(20)).await;
    assert_eq!(seqs, (1..=40).collect::<BTreeSet<u64>>());
    assert!(db.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_fix_before_the_receiver_falls_silent_is_stored_and_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DriveSpec {
        epochs: 5,
        ..DriveSpec::default()
    };
    let expected = expected_fixes(&drive_log(dir.path(), spec.clone()));
    assert_eq!(expected, 5);
    let broker = TestBroker::start();
    let device = support::unique("truck");
    let mut sub = Subscriber::start(&broker, &format!("fleet/{device}/fixes")).await;
    let link = dir.path().join("gps0");
    let mut master = receiver_at(&link);
    let gnss = format!("[gnss]\nsource = \"serial\"\npath = \"{}\"", link.display());
    let agent = Agent::start(dir.path(), &device, &gnss, &broker.url(), &[]);

    // Five epochs in one go, then nothing: the receiver stopped, the line stays open. An
    // epoch ends when the next one begins, so the fifth has no successor.
    let mut bytes = Vec::new();
    gps_agent::sim::write_log(Drive::new(spec).unwrap(), &mut bytes).unwrap();
    tokio::task::block_in_place(|| {
        wait::until(
            "the agent to open the device",
            Duration::from_secs(10),
            || master.write_all(&bytes).is_ok(),
        )
    });
    let seqs = sub.fix_seqs(5, Duration::from_secs(10)).await;
    assert_eq!(
        seqs,
        (1..=5).collect::<BTreeSet<u64>>(),
        "the fifth fix too"
    );
    tokio::task::block_in_place(|| {
        agent.wait_health("acked_seq 5", Duration::from_secs(5), |_, h| {
            h["components"]["buffer"]["acked_seq"] == 5
        })
    });
    drop(master);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_repeating_one_epoch_ten_times_a_second_is_reported_stuck_and_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("gps0");
    let mut master = receiver_at(&link);
    let gnss = format!(
        "[gnss]\nsource = \"serial\"\npath = \"{}\"\nstuck_after_s = 2",
        link.display()
    );
    let broker = TestBroker::start();
    let agent = Agent::start(
        dir.path(),
        &support::unique("truck"),
        &gnss,
        &broker.url(),
        &[],
    );
    // Frozen firmware: the same epoch (same time, same place) every 0.1 s.
    let epoch = {
        let body = "GPRMC,120005.00,A,4807.03800,N,01131.00000,E,9.5,54.7,140326,,,A";
        let sum = body.bytes().fold(0u8, |a, b| a ^ b);
        format!("${body}*{sum:02X}\r\n")
    };
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = master.write_all(epoch.as_bytes());
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let (_, h) = agent.wait_health("GNSS_STUCK", Duration::from_secs(30), |_, h| {
        h["components"]["gnss"]["last_error"]["code"] == "GNSS_STUCK"
    });
    assert!(
        h["components"]["gnss"]["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("time not advancing")),
        "{h}"
    );
    assert_eq!(h["components"]["gnss"]["status"], "degraded", "{h}");
    // Reported stuck means reopened: counted with the receiver's outages.
    let metrics = agent.raw("/metrics");
    let outages: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gps_agent_gnss_outages_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(outages >= 1, "{metrics}");
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    let (exit, _) = agent.terminate();
    assert_eq!(exit, 0);
}
