//! The real binary's health endpoint under a hostile local load: clients that hold every
//! connection slot by sending a byte a second (and reconnect whenever cut) must not keep a
//! watchdog's `/live` probe or an operator's `/health` out; methods other than GET and HEAD
//! are 405 whatever they name.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::agent::{drive_log, Agent};
use support::broker::TestBroker;

/// A client that connects, sends one byte of a request head a second, and connects again
/// whenever the agent cuts it, until `stop`. Counts its connections.
fn dribbler(addr: SocketAddr, stop: Arc<AtomicBool>, connects: Arc<AtomicU64>) {
    let head = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(addr) else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        connects.fetch_add(1, Ordering::Relaxed);
        let _ = s.set_read_timeout(Some(Duration::from_millis(1000)));
        for byte in head.iter().cycle() {
            if stop.load(Ordering::Relaxed) || s.write_all(&[*byte]).is_err() {
                break;
            }
            // A byte a second; a read that returns means the agent answered or cut us.
            let mut buf = [0u8; 512];
            match s.read(&mut buf) {
                Ok(_) => break,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
    }
}

/// A fresh connection asking `GET path` as a watchdog would: the status code, or why not.
fn probe(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("read: {e}"))?;
    text.get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line: {text:?}"))
}

fn starved_probes(clients: usize) {
    let dir = tempfile::tempdir().unwrap();
    let log = drive_log(dir.path(), gps_agent::sim::DriveSpec::default());
    let broker = TestBroker::start();
    let agent = Agent::replay(
        dir.path(),
        &support::unique("truck"),
        &broker.url(),
        &log.display().to_string(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let connects = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, connects, addr) = (Arc::clone(&stop), Arc::clone(&connects), agent.health);
            std::thread::spawn(move || dribbler(addr, stop, connects))
        })
        .collect();
    // Until the dribblers hold every slot (32) and then some are cut and back.
    let deadline = Instant::now() + Duration::from_secs(30);
    while connects.load(Ordering::Relaxed) < clients as u64 + 8 {
        assert!(Instant::now() < deadline, "the load never built up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut failures = Vec::new();
    for i in 0..20 {
        let path = if i % 2 == 0 { "/live" } else { "/health" };
        match probe(agent.health, path) {
            Ok(200 | 503) if path == "/health" => {}
            Ok(200) => {}
            other => failures.push(format!("{path}: {other:?}")),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of 20 probes failed under {clients} dribbling clients: {failures:?}",
        failures.len()
    );
    // The refusals are counted and logged, not silent.
    let metrics = agent.raw("/metrics");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("gps_agent_health_connections_dropped_total{") && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    assert!(
        agent.log_lines().iter().any(|v| v["code"] == "HEALTH_BUSY"),
        "the refusals are logged with their code"
    );
    let (exit, _) = agent.terminate();
    assert_eq!(exit, 0);
}

#[test]
fn thirty_two_dribbling_clients_do_not_keep_out_a_live_probe() {
    starved_probes(32);
}

#[test]
fn two_hundred_dribbling_clients_do_not_keep_out_a_live_probe() {
    starved_probes(200);
}

#[test]
fn options_star_and_connect_are_405_like_every_other_method() {
    let dir = tempfile::tempdir().unwrap();
    let log = drive_log(dir.path(), gps_agent::sim::DriveSpec::default());
    let broker = TestBroker::start();
    let agent = Agent::replay(
        dir.path(),
        &support::unique("truck"),
        &broker.url(),
        &log.display().to_string(),
    );
    for head in [
        "OPTIONS * HTTP/1.1\r\n",
        "CONNECT example.com:443 HTTP/1.1\r\n",
        "DELETE /nowhere HTTP/1.1\r\n",
        "POST /health HTTP/1.1\r\n",
    ] {
        let (status, headers, body) = agent.request(head);
        assert_eq!(status, 405, "{head}");
        assert!(
            headers.to_ascii_lowercase().contains("allow: get, head"),
            "{head}: {headers}"
        );
        assert_eq!(body["error"], "method_not_allowed", "{head}");
    }
    let (exit, _) = agent.terminate();
    assert_eq!(exit, 0);
}
