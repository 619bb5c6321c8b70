//! Bytes per driving hour on the wire, as a carrier bills them: the real daemon (this
//! build's binary) reads the simulator's half-hour tour at 1 Hz in real time (city blocks,
//! roundabouts, ten minutes of highway, a parked spell; an open-sky receiver's noise) and
//! publishes over TLS to a real mosquitto, once per configuration, all at the same time.
//! Counted from the kernel's socket statistics of the agent's connections to the broker
//! (`ss -tinE`: TCP_INFO `bytes_acked` + `bytes_received`, plus 52 bytes of IPv4 and TCP
//! header with timestamps per segment both ways, `segs_out` + `segs_in`), from the first
//! SYN to the last FIN: TLS handshakes, MQTT, keep-alive pings, the status message, probes.
//!
//! Run as root with `unshare` and `ip` (as CI's containers are), it re-executes itself in a
//! network namespace whose loopback has a 1500-byte MTU, so messages are cut into segments
//! as on a real link; otherwise it uses the host's loopback (64 KiB MTU: fewer, larger
//! segments, a lower bound) and says so.
//!
//! `.ci/wire.sh` installs mosquitto (idempotently) and runs it; `cargo bench --bench wire`
//! skips, saying why, when mosquitto is missing. The whole tour takes 30 minutes;
//! `--minutes N` runs its first N minutes (per-hour figures from those). Target: <= 20 KB per
//! driving hour for adaptive 10 m, CBOR, `linger_s = 60` (issue 10).

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use gps_agent::fix::Fix;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::agent::Agent;
use support::broker::{free_port, wait_accepting};
use support::certs::TestPki;
use support::drives::{fixed_rules, nmea, nmea_keeping, tour};

/// Set in the re-executed child that runs inside the network namespace.
const IN_NETNS: &str = "GPS_AGENT_WIRE_NETNS";
/// Bytes of IPv4 (20) and TCP with the timestamp option (32) per segment.
const HEADER_BYTES: u64 = 52;

/// One configuration under measurement.
struct Case {
    name: &'static str,
    /// Fixed rules applied to the drive before the receiver prints it.
    fixed_rules: bool,
    report: &'static str,
    mqtt: &'static str,
}

const CASES: [Case; 8] = [
    Case {
        name: "every fix, JSON, before: each at once, keep-alive 30 s",
        fixed_rules: false,
        report: "",
        mqtt: "linger_s = 0\nkeep_alive_s = 30\n",
    },
    Case {
        name: "every fix, JSON, defaults",
        fixed_rules: false,
        report: "",
        mqtt: "",
    },
    Case {
        name: "fixed rules 30 s / 100 m / 10 deg, JSON, defaults",
        fixed_rules: true,
        report: "",
        mqtt: "",
    },
    Case {
        name: "fixed rules 30 s / 100 m / 10 deg, CBOR, defaults",
        fixed_rules: true,
        report: "",
        mqtt: "payload = \"cbor\"\n",
    },
    Case {
        name: "adaptive 10 m, CBOR, linger_s = 60 (defaults otherwise)",
        fixed_rules: false,
        report: "mode = \"adaptive\"\nmax_error_m = 10\n",
        mqtt: "payload = \"cbor\"\nlinger_s = 60\n",
    },
    Case {
        name: "adaptive 25 m, CBOR, linger_s = 60",
        fixed_rules: false,
        report: "mode = \"adaptive\"\nmax_error_m = 25\n",
        mqtt: "payload = \"cbor\"\nlinger_s = 60\n",
    },
    Case {
        name: "adaptive 10 m, CBOR, linger_s = 120",
        fixed_rules: false,
        report: "mode = \"adaptive\"\nmax_error_m = 10\n",
        mqtt: "payload = \"cbor\"\nlinger_s = 120\n",
    },
    Case {
        name: "adaptive 10 m, CBOR, linger_s = 300",
        fixed_rules: false,
        report: "mode = \"adaptive\"\nmax_error_m = 10\n",
        mqtt: "payload = \"cbor\"\nlinger_s = 300\n",
    },
];

/// What the kernel counted for one connection (the largest values seen: counters only grow).
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    bytes_acked: u64,
    bytes_received: u64,
    segs_out: u64,
    segs_in: u64,
}

impl Counters {
    fn merge(&mut self, other: Counters) {
        self.bytes_acked = self.bytes_acked.max(other.bytes_acked);
        self.bytes_received = self.bytes_received.max(other.bytes_received);
        self.segs_out = self.segs_out.max(other.segs_out);
        self.segs_in = self.segs_in.max(other.segs_in);
    }
}

/// Connections seen by `ss`, by (local port, peer port).
type Seen = Arc<Mutex<HashMap<(u16, u16), Counters>>>;

fn field(info: &str, name: &str) -> u64 {
    info.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn port(addr: &str) -> Option<u16> {
    addr.rsplit(':').next()?.parse().ok()
}

/// Parse `ss -tin` output (a socket line, then its indented info line) into `seen`.
fn record(lines: impl Iterator<Item = String>, seen: &Seen) {
    let mut socket: Option<(u16, u16)> = None;
    for line in lines {
        if !line.starts_with(char::is_whitespace) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            socket = match cols.as_slice() {
                [_, _, _, local, peer, ..] => port(local).zip(port(peer)),
                _ => None,
            };
            continue;
        }
        let Some(key) = socket.take() else { continue };
        let c = Counters {
            bytes_acked: field(&line, "bytes_acked"),
            bytes_received: field(&line, "bytes_received"),
            segs_out: field(&line, "segs_out"),
            segs_in: field(&line, "segs_in"),
        };
        seen.lock().unwrap().entry(key).or_default().merge(c);
    }
}

fn main() {
    let minutes: Option<u64> = std::env::args()
        .skip_while(|a| a != "--minutes")
        .nth(1)
        .and_then(|m| m.parse().ok());
    if Command::new("mosquitto")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        assert!(
            std::env::var_os("GPS_AGENT_MOSQUITTO").is_none(),
            "GPS_AGENT_MOSQUITTO is set but mosquitto is not on PATH"
        );
        println!("wire: mosquitto not on PATH, skipped (.ci/wire.sh installs it and runs this)");
        return;
    }
    let netns = if std::env::var_os(IN_NETNS).is_some() {
        true
    } else if let Some(code) = reexec_in_netns() {
        std::process::exit(code);
    } else {
        false
    };
    if netns {
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up", "mtu", "1500"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(up, "cannot bring up the namespace's loopback");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(measure(minutes, netns));
}

/// Run this bench again inside a new network namespace; `None` when that is not possible
/// (not root, no `unshare`).
fn reexec_in_netns() -> Option<i32> {
    let exe = std::env::current_exe().ok()?;
    let probe = Command::new("unshare")
        .args(["-n", "true"])
        .stderr(Stdio::null())
        .status()
        .ok()?;
    if !probe.success() {
        return None;
    }
    let status = Command::new("unshare")
        .arg("-n")
        .arg(exe)
        .args(std::env::args().skip(1))
        .env(IN_NETNS, "1")
        .status()
        .ok()?;
    Some(status.code().unwrap_or(1))
}

async fn measure(minutes: Option<u64>, netns: bool) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let mut fixes: Vec<Fix> = tour(2026);
    if let Some(m) = minutes {
        let end = fixes[0].time_ms + i64::try_from(m * 60_000).unwrap();
        fixes.retain(|f| f.time_ms <= end);
    }
    let hours = (fixes[fixes.len() - 1].time_ms - fixes[0].time_ms + 1000) as f64 / 3.6e6;
    let kept_at = fixed_rules(&fixes);
    let kept: Vec<Fix> = kept_at.iter().map(|&i| fixes[i]).collect();
    let all_log = dir.path().join("all.nmea");
    let fixed_log = dir.path().join("fixed.nmea");
    std::fs::write(&all_log, nmea(&fixes)).unwrap();
    // Every epoch printed, those fixed rules skip without a fix: the replay keeps the
    // drive's pace (a log of the kept fixes alone would be replayed with its gaps cut to
    // the file source's longest pause, 2 s, and look like a faster drive).
    let kept_set: std::collections::HashSet<usize> = kept_at.iter().copied().collect();
    std::fs::write(&fixed_log, nmea_keeping(&fixes, |i| kept_set.contains(&i))).unwrap();

    // One TLS listener per case, so each agent's connections are told apart by port.
    let ports: Vec<SocketAddr> = CASES.iter().map(|_| free_port()).collect();
    let mut conf = String::from("per_listener_settings true\npersistence false\n");
    conf += "log_dest stderr\nlog_type error\nlog_type warning\nuser root\n";
    for addr in &ports {
        conf += &format!(
            "listener {} 127.0.0.1\nallow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\n",
            addr.port(),
            pki.ca.display(),
            pki.server_cert.display(),
            pki.server_key.display()
        );
    }
    std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
    let mut mosquitto = Command::new("mosquitto")
        .arg("-c")
        .arg(dir.path().join("mosquitto.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("mosquitto.log")).unwrap(),
        ))
        .spawn()
        .expect("mosquitto");
    for addr in &ports {
        assert!(wait_accepting(*addr, Duration::from_secs(5)), "mosquitto");
    }

    // The kernel's account of every connection as it closes; a snapshot before the end
    // catches any still open.
    let seen: Seen = Arc::default();
    let mut ss = Command::new("ss")
        .args(["-tinEH"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ss (iproute2)");
    let events = BufReader::new(ss.stdout.take().unwrap());
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || record(events.lines().map_while(Result::ok), &seen))
    };

    println!(
        "wire: {} of the tour ({} fixes at 1 Hz, {} kept by fixed rules), {} cases at once over TLS to mosquitto, {}",
        if minutes.is_some() { "the first minutes" } else { "all" },
        fixes.len(),
        kept.len(),
        CASES.len(),
        if netns {
            "in a network namespace (loopback MTU 1500)"
        } else {
            "on the host loopback (MTU 64 KiB: segments undercounted)"
        }
    );
    let started = Instant::now();
    let agents: Vec<Agent> = CASES
        .iter()
        .zip(&ports)
        .enumerate()
        .map(|(i, (case, addr))| {
            let case_dir = dir.path().join(format!("case{i}"));
            std::fs::create_dir_all(&case_dir).unwrap();
            let log = if case.fixed_rules {
                &fixed_log
            } else {
                &all_log
            };
            let gnss = format!(
                "[gnss]\nsource = \"file\"\npath = \"{}\"\npace = \"realtime\"\n\n[report]\n{}",
                log.display(),
                case.report
            );
            let mqtt = format!(
                "url = \"mqtts://localhost:{}\"\nca_file = \"{}\"\n{}{}",
                addr.port(),
                pki.ca.display(),
                case.mqtt,
                if case.mqtt.contains("linger_s") {
                    ""
                } else {
                    "linger_s = 60\n"
                }
            );
            // Nine characters, like "truck-042"; one client id per case.
            let device = format!("truck-04{i}");
            Agent::start_with_mqtt(&case_dir, &device, &gnss, &mqtt, &[])
        })
        .collect();

    // Until the drive has been read (realtime), then a clean stop: what lingers goes out.
    let drive = Duration::from_secs_f64(hours * 3600.0);
    while started.elapsed() < drive + Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let mut states = Vec::new();
    for agent in &agents {
        let (_, h) = agent.get("/health");
        let metrics = agent.raw("/metrics");
        let messages: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("gps_agent_published_messages_total "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        states.push((h, messages));
    }
    let snapshot = Command::new("ss").args(["-tinH"]).output().unwrap();
    record(
        String::from_utf8_lossy(&snapshot.stdout)
            .lines()
            .map(str::to_owned),
        &seen,
    );
    for agent in agents {
        let (code, _) = agent.terminate();
        assert_eq!(code, 0);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = ss.kill();
    let _ = ss.wait();
    let _ = reader.join();
    let _ = mosquitto.kill();
    let _ = mosquitto.wait();

    if std::env::var_os("GPS_AGENT_WIRE_KEEP").is_some() {
        println!("wire: logs kept in {}", dir.keep().display());
    }
    println!();
    println!("| configuration | fixes sent | messages | TLS connections | TCP payload both ways | segments | KB per driving hour |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let seen = seen.lock().unwrap();
    for ((case, addr), (h, messages)) in CASES.iter().zip(&ports).zip(&states) {
        let conns: Vec<Counters> = seen
            .iter()
            .filter(|((_, peer), _)| *peer == addr.port())
            .map(|(_, c)| *c)
            .collect();
        let payload: u64 = conns.iter().map(|c| c.bytes_acked + c.bytes_received).sum();
        let segments: u64 = conns.iter().map(|c| c.segs_out + c.segs_in).sum();
        let total = payload + HEADER_BYTES * segments;
        let sent = h["components"]["gnss"]["kept"].as_u64().unwrap_or(0);
        println!(
            "| {} | {sent} | {messages} | {} | {payload} B | {segments} | {:.1} KB |",
            case.name,
            conns.len(),
            total as f64 / 1000.0 / hours
        );
    }
    println!();
    println!(
        "({:.2} driving hours; KB = 1000 bytes; bytes_acked + bytes_received + {HEADER_BYTES} per segment; `cargo bench --bench wire{}`)",
        hours,
        minutes.map_or(String::new(), |m| format!(" -- --minutes {m}"))
    );
}
