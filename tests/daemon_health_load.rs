//! The real binary's health endpoint under a hostile local load: clients that hold every
//! connection slot by sending a byte a second (and reconnect whenever cut), or that pipeline
//! requests without reading the answers, must not keep a watchdog's `/live` probe or an
//! operator's `/health` out; methods other than GET and HEAD are 405 whatever they name.

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

/// The agent replaying the simulator's default drive, with its directory and broker.
fn replaying_agent() -> (tempfile::TempDir, TestBroker, Agent) {
    let dir = tempfile::tempdir().unwrap();
    let log = drive_log(dir.path(), gps_agent::sim::DriveSpec::default());
    let broker = TestBroker::start();
    let device = support::unique("truck");
    let agent = Agent::replay(
        dir.path(),
        &device,
        &broker.url(),
        &log.display().to_string(),
    );
    (dir, broker, agent)
}

/// A client of the endpoint run on a thread of its own until `stop`, counting its
/// connections.
type Client = fn(SocketAddr, Arc<AtomicBool>, Arc<AtomicU64>);

/// The agent replaying the default drive, and `clients` threads running `client` against its
/// health endpoint.
struct Load {
    _dir: tempfile::TempDir,
    _broker: TestBroker,
    agent: Agent,
    stop: Arc<AtomicBool>,
    connects: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Started, and built up: returns once the clients have made `connections`.
    fn start(clients: usize, client: Client, connections: u64) -> Load {
        let (dir, broker, agent) = replaying_agent();
        let stop = Arc::new(AtomicBool::new(false));
        let connects = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (stop, connects) = (Arc::clone(&stop), Arc::clone(&connects));
                let addr = agent.health;
                std::thread::spawn(move || client(addr, stop, connects))
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while connects.load(Ordering::Relaxed) < connections {
            assert!(Instant::now() < deadline, "the load never built up");
            std::thread::sleep(Duration::from_millis(20));
        }
        Load {
            _dir: dir,
            _broker: broker,
            agent,
            stop,
            connects,
            threads,
        }
    }

    /// The clients stopped: the connections they made.
    fn stop(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        self.connects.load(Ordering::Relaxed)
    }
}

fn starved_probes(clients: usize) {
    // Until the dribblers hold every slot (32) and then some are cut and back.
    let mut load = Load::start(clients, dribbler, clients as u64 + 8);
    let agent = &load.agent;
    // `/live` and `/health` on the watchdog's lane; `/metrics` only by taking the slot of a
    // dribbler (idle: no request of it in progress).
    let mut failures = Vec::new();
    for i in 0..30 {
        let path = ["/live", "/health", "/metrics"][i % 3];
        match probe_body(agent.health, path) {
            Ok((200, _)) => {}
            // /health says 503 while the agent is not healthy: an answer, not a refusal.
            Ok((503, body)) if path == "/health" && !body.contains("\"too_busy\"") => {}
            other => failures.push(format!("{path}: {other:?}")),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    load.stop();
    let agent = load.agent;
    assert!(
        failures.is_empty(),
        "{} of 30 probes failed under {clients} dribbling clients: {failures:?}",
        failures.len()
    );
    // The slots taken and the refusals are counted and logged, not silent.
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

/// A client that pipelines 1,000 `GET /metrics` on a connection without reading a byte of
/// the answers and opens another, again and again until `stop`, holding the last 50 open.
/// Counts its connections.
fn pipeliner(addr: SocketAddr, stop: Arc<AtomicBool>, connects: Arc<AtomicU64>) {
    let requests = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
    let mut held = std::collections::VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(addr) else {
            continue;
        };
        connects.fetch_add(1, Ordering::Relaxed);
        // Bounded: the agent stops reading once its answers fill the socket.
        let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
        let _ = s.write_all(&requests);
        held.push_back(s);
        if held.len() > 50 {
            held.pop_front();
        }
    }
}

/// A fresh connection asking `GET path` as a watchdog would: the status code and the body,
/// or why not.
fn probe_body(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
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
    let code = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line: {text:?}"))?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    Ok((code, body.to_owned()))
}

#[test]
fn four_clients_pipelining_metrics_without_reading_never_get_live_or_health_refused() {
    // Until the flood has opened more connections than the endpoint has slots (32).
    let mut load = Load::start(4, pipeliner, 64);
    let agent = &load.agent;
    let (mut answers, mut slowest) = (Vec::new(), Duration::ZERO);
    for i in 0..60 {
        let path = if i % 2 == 0 { "/live" } else { "/health" };
        let asked = Instant::now();
        answers.push((path, probe_body(agent.health, path)));
        slowest = slowest.max(asked.elapsed());
    }
    let flood = load.stop();
    println!("60 probes under a flood of {flood} connections: the slowest answered in {slowest:?}");
    let refused: Vec<_> = answers
        .iter()
        .filter(|(path, a)| match a {
            Ok((200, _)) => false,
            // /health says 503 while the agent is not healthy: an answer, not a refusal.
            Ok((503, body)) => *path == "/live" || body.contains("\"too_busy\""),
            _ => true,
        })
        .collect();
    assert!(
        refused.is_empty(),
        "{} of 60 probes refused or failed under a flood of {flood} connections: {refused:?}",
        refused.len()
    );
    let (exit, _) = load.agent.terminate();
    assert_eq!(exit, 0);
}

#[test]
fn options_star_and_connect_are_405_like_every_other_method() {
    let (_dir, _broker, agent) = replaying_agent();
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
