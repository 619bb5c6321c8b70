//! Bytes per driving hour on the wire, as a carrier bills them: the real daemon (this
//! build's binary) reads the simulator's half-hour tour at 1 Hz in real time (city blocks,
//! roundabouts, ten minutes of highway, a parked spell; an open-sky receiver's noise) and
//! publishes over TLS to a real mosquitto, once per configuration, all at the same time.
//! Counted from the kernel's socket statistics of the agent's connections to the broker
//! (`ss -tinE`: TCP_INFO `bytes_acked` + `bytes_received`, plus 52 bytes of IPv4 and TCP
//! header with timestamps per segment both ways, `segs_out` + `segs_in`), from the first
//! SYN to the last FIN: TLS handshakes, MQTT, keep-alive pings, the status message, probes.
//!
//! **First connection, full or resumed**: a "resumed" configuration starts with the TLS
//! tickets an earlier run of the agent left beside its buffer (a short run against the same
//! broker before the tour, not counted), as every trip after the first does; a "full" one
//! starts without. Before the tour, a **bare connection** of each kind is measured on its
//! own: the agent connects, publishes its retained status, and stops (the handshake,
//! CONNECT, the status, `offline`, DISCONNECT and the FIN; no fix).
//!
//! **The floor** beside each measurement: what the same messages cost with nothing on the wire
//! but what the protocols require, computed (segments x 52, plus TLS records, MQTT framing and
//! payload). Each fixes message, as the bench's own subscriber received it: its QoS 1 PUBLISH
//! (fixed header, topic, packet id, payload) and PUBACK (4 bytes), two TLS 1.3 records (22
//! bytes each: header, content type, AEAD tag), three TCP/IP segments (the PUBLISH, the PUBACK
//! that acknowledges it, the client's ACK). One PINGREQ and PINGRESP (two records, three
//! segments) for each keep-alive that passed without a message. And the connection: the TLS
//! handshake's own bytes (both flights and the broker's tickets, counted above TCP by a
//! handshake of the bench with the agent's TLS configuration, full and then resumed from the
//! ticket file as a restarted agent does), CONNECT and CONNACK, the retained `online` status
//! and `offline` with their PUBACKs, DISCONNECT, each in a record; segments: SYN and SYN-ACK,
//! the ClientHello, the broker's flight (1448 bytes a segment), the client's Finished with
//! CONNECT, the tickets with CONNACK, the status, its PUBACK and the ACK of it, `offline`, its
//! PUBACK, DISCONNECT with the FIN, the broker's FIN and the last ACK.
//!
//! Run as root with `unshare` and `ip` (as CI's containers are), it re-executes itself in a
//! network namespace whose loopback has a 1500-byte MTU, so messages are cut into segments
//! as on a real link; otherwise it uses the host's loopback (64 KiB MTU: fewer, larger
//! segments, a lower bound) and says so.
//!
//! `.ci/wire.sh` installs mosquitto (idempotently) and runs it; `cargo bench --bench wire`
//! skips, saying why, when mosquitto is missing. The whole tour takes 30 minutes;
//! `--minutes N` runs its first N minutes (per-hour figures from those). Target (issue 23):
//! <= 20 KB per driving hour for adaptive 10 m, CBOR, `linger_s = 60`, defaults otherwise,
//! the trip's (resumed) handshake included.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use gps_agent::fix::Fix;
use gps_agent::uplink::payload::{status_payload, LinkState};
use gps_agent::uplink::tls::{client_config, TlsSettings};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::agent::Agent;
use support::broker::{free_port, wait_accepting, Subscriber, TestBroker};
use support::certs::TestPki;
use support::drives::{fixed_rules, nmea, nmea_keeping, tour};

/// Set in the re-executed child that runs inside the network namespace.
const IN_NETNS: &str = "GPS_AGENT_WIRE_NETNS";
/// Bytes of IPv4 (20) and TCP with the timestamp option (32) per segment.
const HEADER_BYTES: u64 = 52;
/// A TLS 1.3 record's own bytes: 5 of header, the inner content type, a 16-byte AEAD tag.
const RECORD_BYTES: u64 = 22;
/// `keep_alive_s` unless a configuration says otherwise.
const KEEP_ALIVE_S: f64 = 240.0;
/// TCP payload of a full segment at a 1500-byte MTU with timestamps.
const MSS: u64 = 1448;

/// What a configuration's agent reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Drive {
    /// Every epoch of the tour.
    All,
    /// The fixes a fixed-rule tracker keeps (30 s / 100 m / 10 deg), at the tour's pace.
    FixedRules,
}

/// One configuration under measurement.
struct Case {
    name: &'static str,
    drive: Drive,
    /// `[report]` and `[mqtt]` bodies; or, with `file`, a shipped configuration file whose
    /// sections are used as they are (device, receiver, buffer, broker and health set here).
    report: &'static str,
    mqtt: &'static str,
    file: Option<&'static str>,
    /// Start with the tickets of an earlier run: the first connection resumes.
    resumed: bool,
}

const fn case(name: &'static str, drive: Drive, report: &'static str, mqtt: &'static str) -> Case {
    Case {
        name,
        drive,
        report,
        mqtt,
        file: None,
        resumed: false,
    }
}

const ADAPTIVE_10: &str = "mode = \"adaptive\"\nmax_error_m = 10\n";

const CASES: [Case; 11] = [
    case("every fix, JSON, defaults", Drive::All, "", ""),
    case(
        "fixed rules 30 s / 100 m / 10 deg, CBOR, defaults",
        Drive::FixedRules,
        "",
        "payload = \"cbor\"\n",
    ),
    case(
        "adaptive 10 m, CBOR, `linger_s = 60`",
        Drive::All,
        ADAPTIVE_10,
        "payload = \"cbor\"\nlinger_s = 60\n",
    ),
    Case {
        resumed: true,
        ..case(
            "adaptive 10 m, CBOR, `linger_s = 60`",
            Drive::All,
            ADAPTIVE_10,
            "payload = \"cbor\"\nlinger_s = 60\n",
        )
    },
    case(
        "adaptive 10 m, CBOR, `linger_s = 120`",
        Drive::All,
        ADAPTIVE_10,
        "payload = \"cbor\"\nlinger_s = 120\n",
    ),
    Case {
        resumed: true,
        ..case(
            "adaptive 10 m, CBOR, `linger_s = 120`",
            Drive::All,
            ADAPTIVE_10,
            "payload = \"cbor\"\nlinger_s = 120\n",
        )
    },
    case(
        "adaptive 10 m, CBOR, `linger_s = 300`",
        Drive::All,
        ADAPTIVE_10,
        "payload = \"cbor\"\nlinger_s = 300\n",
    ),
    Case {
        resumed: true,
        ..case(
            "adaptive 10 m, CBOR, `linger_s = 300`",
            Drive::All,
            ADAPTIVE_10,
            "payload = \"cbor\"\nlinger_s = 300\n",
        )
    },
    Case {
        resumed: true,
        ..case(
            "adaptive 25 m, CBOR, `linger_s = 60`",
            Drive::All,
            "mode = \"adaptive\"\nmax_error_m = 25\n",
            "payload = \"cbor\"\nlinger_s = 60\n",
        )
    },
    Case {
        file: Some("config/cellular.toml"),
        ..case("`config/cellular.toml` as shipped", Drive::All, "", "")
    },
    Case {
        file: Some("config/cellular.toml"),
        resumed: true,
        ..case("`config/cellular.toml` as shipped", Drive::All, "", "")
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

/// The connections to `port`: how many, bytes both ways, segments both ways.
fn account(seen: &Seen, port: u16) -> (usize, u64, u64) {
    let seen = seen.lock().unwrap();
    let conns: Vec<&Counters> = seen
        .iter()
        .filter(|((_, peer), _)| *peer == port)
        .map(|(_, c)| c)
        .collect();
    (
        conns.len(),
        conns.iter().map(|c| c.bytes_acked + c.bytes_received).sum(),
        conns.iter().map(|c| c.segs_out + c.segs_in).sum(),
    )
}

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

/// A message the bench's subscriber received: when, on which topic, how many payload bytes.
#[derive(Debug, Clone)]
struct Heard {
    at: Instant,
    topic: String,
    payload: u64,
}

/// An MQTT packet whose variable header and payload take `remaining` bytes: with its fixed
/// header (type and remaining length).
fn mqtt_packet(remaining: u64) -> u64 {
    let length_bytes = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + length_bytes + remaining
}

/// A QoS 1 PUBLISH of `payload` bytes on `topic`.
fn publish(topic: &str, payload: u64) -> u64 {
    mqtt_packet(2 + topic.len() as u64 + 2 + payload)
}

/// The floor of one QoS 1 message of `payload` bytes on `topic`: PUBLISH and PUBACK (4
/// bytes) in a TLS record each, three segments.
fn message_floor(topic: &str, payload: u64) -> u64 {
    publish(topic, payload) + 4 + 2 * RECORD_BYTES + 3 * HEADER_BYTES
}

/// A TLS handshake's bytes above TCP: the broker's first flight (ServerHello to Finished),
/// and everything both ways (the broker's tickets after it included).
#[derive(Debug, Clone, Copy)]
struct Handshake {
    server_flight: u64,
    total: u64,
}

/// The floor of one connection of `device` with `handshake` (see the module's doc).
fn connection_floor(device: &str, handshake: Handshake) -> u64 {
    let status = format!("fleet/{device}/status");
    let will = status_payload(LinkState::Offline, device).len() as u64;
    // Protocol name, level, flags, keep-alive; client id, will topic, will message.
    let connect = mqtt_packet(10 + 2 + device.len() as u64 + 2 + status.len() as u64 + 2 + will);
    let online = status_payload(LinkState::Online, device).len() as u64;
    let mqtt = [
        connect,
        4,
        publish(&status, online),
        4,
        publish(&status, will),
        4,
        2,
    ];
    let records = mqtt.len() as u64 * RECORD_BYTES + mqtt.iter().sum::<u64>();
    let tickets = handshake.total.saturating_sub(handshake.server_flight);
    let segments =
        2 + 1 + handshake.server_flight.div_ceil(MSS) + 1 + tickets.div_ceil(MSS) + 3 + 5;
    handshake.total + records + segments * HEADER_BYTES
}

/// Counts what passes through a stream, both ways.
struct Counted<S> {
    inner: S,
    read: Arc<std::sync::atomic::AtomicU64>,
    written: Arc<std::sync::atomic::AtomicU64>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.read.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        poll
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &poll {
            self.written
                .fetch_add(*n as u64, std::sync::atomic::Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One TLS handshake with `settings` (a client configuration made as the agent makes it,
/// its tickets in the settings' file) to `addr`, waiting for the broker's tickets after it;
/// its bytes above TCP, and whether it resumed.
async fn handshake(addr: SocketAddr, settings: &TlsSettings) -> (Handshake, bool) {
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncReadExt;
    let config = client_config(settings).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = Counted {
        inner: tcp,
        read: read.clone(),
        written: written.clone(),
    };
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, counted)
        .await
        .unwrap();
    let server_flight = read.load(Ordering::Relaxed);
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    // The broker's tickets come after its Finished; nothing else comes until MQTT speaks.
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_millis(500), tls.read(&mut buf)).await;
    let total = read.load(Ordering::Relaxed) + written.load(Ordering::Relaxed);
    (
        Handshake {
            server_flight,
            total,
        },
        resumed,
    )
}

/// A PINGREQ and its PINGRESP (2 bytes each), a record each, three segments.
const PING_FLOOR: u64 = 2 + 2 + 2 * RECORD_BYTES + 3 * HEADER_BYTES;

/// The pings MQTT needs between messages at `times` (and the connection's `start` and
/// `end`): one per whole keep-alive without a packet.
fn pings_needed(start: Instant, times: &[Instant], end: Instant, keep_alive_s: f64) -> u64 {
    let mut last = start;
    let mut pings = 0;
    for &t in times.iter().chain([&end]) {
        let gap = t.saturating_duration_since(last).as_secs_f64();
        pings += (gap / keep_alive_s).floor() as u64;
        last = t;
    }
    pings
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

/// The keep-alive a configuration's agent runs with.
fn keep_alive_s(case: &Case) -> f64 {
    let from_file = case.file.and_then(|file| {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file));
        let table: toml::Table = toml::from_str(&text.ok()?).ok()?;
        table.get("mqtt")?.get("keep_alive_s")?.as_integer()
    });
    let from_case = case
        .mqtt
        .lines()
        .find_map(|l| l.strip_prefix("keep_alive_s = "))
        .and_then(|v| v.trim().parse().ok());
    from_file.or(from_case).map_or(KEEP_ALIVE_S, |k| k as f64)
}

/// An agent of one configuration: its directory, device id and broker port.
struct Slot {
    dir: PathBuf,
    device: String,
    addr: SocketAddr,
}

impl Slot {
    /// Start the agent reading `log`: the case's sections, or its shipped file with the
    /// bench's device, receiver, buffer, broker and health.
    fn start(&self, case: &Case, log: &Path, pki: &TestPki) -> Agent {
        let url = format!("mqtts://localhost:{}", self.addr.port());
        let Some(file) = case.file else {
            let gnss = format!(
                "[gnss]\nsource = \"file\"\npath = \"{}\"\npace = \"realtime\"\n\n[report]\n{}",
                log.display(),
                case.report
            );
            let mqtt = format!(
                "url = \"{url}\"\nca_file = \"{}\"\n{}{}",
                pki.ca.display(),
                case.mqtt,
                // The agent's default is 60 s; the test harness would otherwise set 0.
                if case.mqtt.contains("linger_s") {
                    ""
                } else {
                    "linger_s = 60\n"
                }
            );
            return Agent::start_with_mqtt(&self.dir, &self.device, &gnss, &mqtt, &[]);
        };
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let mut config: toml::Table = toml::from_str(&std::fs::read_to_string(shipped).unwrap())
            .expect("a shipped configuration parses");
        let mut set = |section: &str, key: &str, value: toml::Value| {
            config
                .entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap()
                .insert(key.to_owned(), value);
        };
        let health = free_port();
        let db = self.dir.join("buffer.db");
        set("device", "id", self.device.clone().into());
        set("gnss", "source", "file".into());
        set("gnss", "path", log.display().to_string().into());
        set("gnss", "pace", "realtime".into());
        set("buffer", "path", db.display().to_string().into());
        set("mqtt", "url", url.into());
        set("mqtt", "ca_file", pki.ca.display().to_string().into());
        set("health", "listen", health.to_string().into());
        let path = self.dir.join("config.toml");
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        let log = self.dir.join("agent.log");
        Agent::restart(&path, health, &db, &log)
    }

    /// The agent's TLS ticket file.
    fn tickets(&self) -> PathBuf {
        self.dir.join("buffer.db.tls-tickets")
    }

    /// Run the agent on an empty receiver log until it is connected and its tickets are on
    /// disk, then stop it: what every trip after the first finds beside its buffer.
    async fn prime(&self, case: &Case, empty: &Path, pki: &TestPki) {
        let agent = self.start(case, empty, pki);
        wait_connected(&agent, &self.tickets()).await;
        let (code, _) = agent.terminate();
        assert_eq!(code, 0);
    }
}

/// Until the agent is connected and its ticket file is there.
async fn wait_connected(agent: &Agent, tickets: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, h) = agent.get("/health");
        if h["components"]["mqtt"]["connected"] == true && tickets.exists() {
            return;
        }
        assert!(Instant::now() < deadline, "agent not connected: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    let all_log = dir.path().join("all.nmea");
    let fixed_log = dir.path().join("fixed.nmea");
    let empty_log = dir.path().join("empty.nmea");
    std::fs::write(&all_log, nmea(&fixes)).unwrap();
    // Every epoch printed, those fixed rules skip without a fix: the replay keeps the
    // drive's pace (a log of the kept fixes alone would be replayed with its gaps cut to
    // the file source's longest pause, 2 s, and look like a faster drive).
    let kept_set: std::collections::HashSet<usize> = kept_at.iter().copied().collect();
    std::fs::write(&fixed_log, nmea_keeping(&fixes, |i| kept_set.contains(&i))).unwrap();
    std::fs::write(&empty_log, "").unwrap();

    // One TLS listener per case and per bare connection, so each agent's connections are
    // told apart by port; a plain one for the bench's subscriber.
    let slot = |name: String| Slot {
        dir: {
            let d = dir.path().join(&name);
            std::fs::create_dir_all(&d).unwrap();
            d
        },
        device: name,
        addr: free_port(),
    };
    // Nine characters, like "truck-042"; one client id per agent.
    let slots: Vec<Slot> = (0..CASES.len())
        .map(|i| slot(format!("truck-{i:03}")))
        .collect();
    let bare = [slot("truck-900".into()), slot("truck-901".into())];
    let sub_addr = free_port();
    // The bench's own TLS handshakes, for the floor.
    let hello_addr = free_port();
    let mut conf = String::from("per_listener_settings true\npersistence false\n");
    conf += "log_dest stderr\nlog_type error\nlog_type warning\nuser root\n";
    conf += &format!(
        "listener {} 127.0.0.1\nallow_anonymous true\n",
        sub_addr.port()
    );
    for addr in slots
        .iter()
        .chain(&bare)
        .map(|s| s.addr)
        .chain([hello_addr])
    {
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
    for addr in slots
        .iter()
        .chain(&bare)
        .map(|s| s.addr)
        .chain([sub_addr, hello_addr])
    {
        assert!(wait_accepting(addr, Duration::from_secs(5)), "mosquitto");
    }

    // The TLS handshake's own bytes, full, then resumed from the ticket file it left.
    let hello = TlsSettings {
        ca_file: Some(pki.ca.clone()),
        tickets: Some(dir.path().join("hello.tls-tickets")),
        ..TlsSettings::default()
    };
    let (full, resumed) = handshake(hello_addr, &hello).await;
    assert!(!resumed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.path().join("hello.tls-tickets").exists() {
        assert!(Instant::now() < deadline, "no ticket file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (short, resumed) = handshake(hello_addr, &hello).await;
    assert!(resumed, "a handshake from the ticket file resumes");
    let handshakes = [full, short];

    // Tickets for the resumed agents, from a run each before anything is counted.
    let bare_case = case("a bare connection", Drive::All, "", "");
    for (case, s) in CASES.iter().zip(&slots).filter(|(c, _)| c.resumed) {
        s.prime(case, &empty_log, &pki).await;
    }
    bare[1].prime(&bare_case, &empty_log, &pki).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The kernel's account of every connection as it closes; a snapshot before the end
    // catches any still open.
    let seen: Seen = Arc::default();
    // Line-buffered: ss's events must reach the reader before ss is stopped.
    let mut ss = Command::new("stdbuf")
        .args(["-oL", "ss", "-tinEH"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ss (iproute2)");
    let events = BufReader::new(ss.stdout.take().unwrap());
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || record(events.lines().map_while(Result::ok), &seen))
    };
    let heard: Arc<Mutex<Vec<Heard>>> = Arc::default();
    let mut sub = Subscriber::start(&TestBroker { addr: sub_addr }, "fleet/#").await;
    let listener = {
        let heard = heard.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next(Duration::from_secs(3600)).await {
                heard.lock().unwrap().push(Heard {
                    at: Instant::now(),
                    topic: m.topic,
                    payload: m.payload.len() as u64,
                });
            }
        })
    };

    // A bare connection of each kind: connect, status, stop.
    for s in &bare {
        let agent = s.start(&bare_case, &empty_log, &pki);
        wait_connected(&agent, &s.tickets()).await;
        let (code, _) = agent.terminate();
        assert_eq!(code, 0);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    println!(
        "wire: {} of the tour ({} fixes at 1 Hz, {} kept by fixed rules), {} configurations at once over TLS 1.3 to mosquitto, {}",
        if minutes.is_some() { "the first minutes" } else { "all" },
        fixes.len(),
        kept_at.len(),
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
        .zip(&slots)
        .map(|(case, s)| {
            let log = match case.drive {
                Drive::All => &all_log,
                Drive::FixedRules => &fixed_log,
            };
            s.start(case, log, &pki)
        })
        .collect();

    // Until the drive has been read (realtime), then a clean stop: what lingers goes out.
    let drive = Duration::from_secs_f64(hours * 3600.0);
    while started.elapsed() < drive + Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    // What each agent kept, before the stop.
    let kept: Vec<u64> = agents
        .iter()
        .map(|agent| {
            let (_, h) = agent.get("/health");
            h["components"]["gnss"]["kept"].as_u64().unwrap_or(0)
        })
        .collect();
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
    let ended = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = ss.kill();
    let _ = ss.wait();
    let _ = reader.join();
    listener.abort();
    let _ = mosquitto.kill();
    let _ = mosquitto.wait();

    if std::env::var_os("GPS_AGENT_WIRE_KEEP").is_some() {
        println!("wire: logs kept in {}", dir.keep().display());
    }

    let bare_cost: Vec<(u64, u64)> = bare
        .iter()
        .map(|s| {
            let (conns, bytes, segs) = account(&seen, s.addr.port());
            assert_eq!(conns, 1, "one bare connection");
            (bytes + HEADER_BYTES * segs, segs)
        })
        .collect();
    println!();
    println!(
        "a bare connection, measured (TCP open and close, TLS 1.3 handshake, CONNECT, the retained status, `offline`, DISCONNECT): full {} B in {} segments, resumed {} B in {} segments; its floor: full {} B, resumed {} B",
        bare_cost[0].0,
        bare_cost[0].1,
        bare_cost[1].0,
        bare_cost[1].1,
        connection_floor(&bare[0].device, handshakes[0]),
        connection_floor(&bare[1].device, handshakes[1]),
    );
    println!(
        "the TLS handshake above TCP (both ways, the broker's tickets included): full {} B (its first flight {} B), resumed {} B (its first flight {} B)",
        handshakes[0].total, handshakes[0].server_flight, handshakes[1].total, handshakes[1].server_flight
    );
    println!();
    println!("| configuration | first connection | fixes kept | messages | payload per kept fix | connections | segments | measured, per driving hour | floor, per driving hour | above the floor |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let heard = heard.lock().unwrap();
    for ((case, s), &sent) in CASES.iter().zip(&slots).zip(&kept) {
        let (conns, payload, segments) = account(&seen, s.addr.port());
        let total = payload + HEADER_BYTES * segments;
        let fixes_topic = format!("fleet/{}/fixes", s.device);
        let mine: Vec<&Heard> = heard.iter().filter(|m| m.topic == fixes_topic).collect();
        let keep_alive_s = keep_alive_s(case);
        let times: Vec<Instant> = mine.iter().map(|m| m.at).collect();
        let pings = pings_needed(started, &times, ended, keep_alive_s);
        let floor = connection_floor(&s.device, handshakes[usize::from(case.resumed)])
            + mine
                .iter()
                .map(|m| message_floor(&m.topic, m.payload))
                .sum::<u64>()
            + pings * PING_FLOOR;
        let payload_bytes: u64 = mine.iter().map(|m| m.payload).sum();
        let per_hour = |b: u64| b as f64 / 1000.0 / hours;
        println!(
            "| {} | {} | {sent} | {} | {:.1} B | {conns} | {segments} | {:.1} KB | {:.1} KB | {:+.1} KB |",
            case.name,
            if case.resumed { "resumed" } else { "full" },
            mine.len(),
            payload_bytes as f64 / sent.max(1) as f64,
            per_hour(total),
            per_hour(floor),
            per_hour(total) - per_hour(floor),
        );
    }
    println!();
    println!(
        "({:.2} driving hours; KB = 1000 bytes; bytes_acked + bytes_received + {HEADER_BYTES} per segment; `bash .ci/wire.sh{}`)",
        hours,
        minutes.map_or(String::new(), |m| format!(" --minutes {m}"))
    );
}
