//! The real binary as a daemon under test: a config written for the test, the agent's JSON
//! log captured, its health endpoint queried over plain HTTP/1.1, signals sent with `kill`.

use super::broker::free_port;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Agent {
    child: Child,
    pub health: SocketAddr,
    pub db: PathBuf,
    pub config: PathBuf,
    /// The agent's stdout: its JSON log lines.
    pub log: PathBuf,
}

/// The body of an `[mqtt]` section for `url` whose retries fit a test's wait: with the
/// defaults (backoff to 5 min, breaker open for 60 s after 5 failures) a broker that is away
/// for a few seconds at start can, with unlucky jitter, keep the agent off it for a minute.
pub fn quick_retry_mqtt(url: &str) -> String {
    format!("url = \"{url}\"\nbackoff_initial_s = 0.1\nbackoff_max_s = 1\nopen_for_s = 2\n")
}

/// The `[gnss]` section replaying the NMEA log `source` as fast as it can.
pub fn replay_gnss(source: &str) -> String {
    format!("[gnss]\nsource = \"file\"\npath = \"{source}\"\npace = \"fast\"")
}

impl Agent {
    /// The agent replaying the NMEA log `source` as fast as it can.
    pub fn replay(dir: &Path, device: &str, mqtt_url: &str, source: &str) -> Agent {
        Self::start(dir, device, &replay_gnss(source), mqtt_url, &[])
    }

    /// The agent with the given `[gnss]` section, broker and extra environment; returns
    /// once its health endpoint answers.
    pub fn start(
        dir: &Path,
        device: &str,
        gnss: &str,
        mqtt_url: &str,
        env: &[(&str, String)],
    ) -> Agent {
        let db = dir.join("buffer.db");
        let buffer = format!(
            "[buffer]\npath = \"{}\"\ncommit_interval_s = 0.2",
            db.display()
        );
        Self::start_with_buffer(dir, device, gnss, &buffer, mqtt_url, env)
    }

    /// As [`Agent::start`], with the `[buffer]` section given.
    pub fn start_with_buffer(
        dir: &Path,
        device: &str,
        gnss: &str,
        buffer: &str,
        mqtt_url: &str,
        env: &[(&str, String)],
    ) -> Agent {
        let mqtt = format!("url = \"{mqtt_url}\"");
        Self::launch(dir, device, gnss, buffer, &mqtt, env)
    }

    /// As [`Agent::start`], with the body of the `[mqtt]` section given (TLS, credentials).
    pub fn start_with_mqtt(
        dir: &Path,
        device: &str,
        gnss: &str,
        mqtt: &str,
        env: &[(&str, String)],
    ) -> Agent {
        let buffer = format!(
            "[buffer]\npath = \"{}\"\ncommit_interval_s = 0.2",
            dir.join("buffer.db").display()
        );
        Self::launch(dir, device, gnss, &buffer, mqtt, env)
    }

    /// As [`Agent::start`], with the `[buffer]` section and the body of `[mqtt]` given.
    pub fn start_with_sections(
        dir: &Path,
        device: &str,
        gnss: &str,
        buffer: &str,
        mqtt: &str,
        env: &[(&str, String)],
    ) -> Agent {
        Self::launch(dir, device, gnss, buffer, mqtt, env)
    }

    fn launch(
        dir: &Path,
        device: &str,
        gnss: &str,
        buffer: &str,
        mqtt: &str,
        env: &[(&str, String)],
    ) -> Agent {
        let health = free_port();
        let db = dir.join("buffer.db");
        let config = dir.join("config.toml");
        // Tests wait for delivery, not for company: fixes go at once unless the test's own
        // [mqtt] says how long they linger.
        let mqtt = if mqtt.contains("linger_s") {
            mqtt.to_owned()
        } else {
            format!("{mqtt}\nlinger_s = 0")
        };
        std::fs::write(
            &config,
            format!(
                "[device]\nid = \"{device}\"\n\n{gnss}\n\n{buffer}\n\n\
                 [mqtt]\n{mqtt}\n\n[health]\nlisten = \"{health}\"\n"
            ),
        )
        .unwrap();
        let log = dir.join("agent.log");
        std::fs::File::create(&log).unwrap();
        Self::spawn(&config, health, &db, &log, env)
    }

    /// The agent of `config` started again after it died, as systemd restarts it: the same
    /// configuration, buffer file and health port; its log is appended to `log`.
    pub fn restart(config: &Path, health: SocketAddr, db: &Path, log: &Path) -> Agent {
        Self::spawn(config, health, db, log, &[])
    }

    /// Start the binary on `config`, appending its log to `log`; returns once its health
    /// endpoint answers.
    fn spawn(
        config: &Path,
        health: SocketAddr,
        db: &Path,
        log: &Path,
        env: &[(&str, String)],
    ) -> Agent {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gps-agent"))
            .args(["run", "--log-format", "json", "--config"])
            .arg(config)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::from(out))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let agent = Agent {
            child,
            health,
            db: db.to_path_buf(),
            config: config.to_path_buf(),
            log: log.to_path_buf(),
        };
        // A hang guard only: a busy machine may take a while to start a debug build.
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(agent.health).is_err() {
            assert!(Instant::now() < deadline, "health endpoint did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (an OOM kill, a watchdog, a crash), then reaped.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// (HTTP status, JSON body) of `GET path`.
    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let mut s = TcpStream::connect(self.health).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let status: u16 = text[9..12].parse().unwrap();
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        (
            status,
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// (status, raw headers, JSON body) of a raw request head (`"GET /x HTTP/1.1\r\n..."`).
    pub fn request(&self, head: &str) -> (u16, String, serde_json::Value) {
        let mut s = TcpStream::connect(self.health).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "{head}Host: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let status: u16 = text[9..12].parse().unwrap();
        let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (
            status,
            headers.to_string(),
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// The raw body of `GET path`.
    pub fn raw(&self, path: &str) -> String {
        let mut s = TcpStream::connect(self.health).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }

    /// The first JSON line of `/health/stream` (chunked: the line is inside the first chunk).
    pub fn first_stream_line(&self) -> serde_json::Value {
        let mut s = TcpStream::connect(self.health).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET /health/stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let n = s.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some(line) = text.lines().find(|l| l.starts_with('{')) {
                return serde_json::from_str(line).unwrap();
            }
        }
        panic!(
            "no stream line within 5 s: {}",
            String::from_utf8_lossy(&got)
        );
    }

    /// Resident memory of the agent process (`VmRSS`), KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// The agent's log so far, as JSON values (lines that are not JSON are skipped).
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        read_log(&self.log)
    }

    /// Log lines so far whose `message` contains `text`.
    pub fn log_count(&self, text: &str) -> usize {
        self.log_lines()
            .iter()
            .filter(|v| v["message"].as_str().is_some_and(|m| m.contains(text)))
            .count()
    }

    /// Wait until a log line (JSON) satisfies `pred`.
    pub fn wait_log(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(v) = self.log_lines().into_iter().find(|v| pred(v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no log line {what} in:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Poll `/health` until `pred(code, snapshot)` holds (fail after `within`); returns that
    /// answer.
    pub fn wait_health(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(u16, &serde_json::Value) -> bool,
    ) -> (u16, serde_json::Value) {
        let deadline = Instant::now() + within;
        loop {
            let (code, h) = self.get("/health");
            if pred(code, &h) {
                return (code, h);
            }
            assert!(Instant::now() < deadline, "no {what} in health: {code} {h}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the agent to end by itself (a simulated power cut ends it): its exit code,
    /// `None` if a signal ended it. Panics after `within`.
    pub fn wait_exit(mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "agent still running after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit code (within 15 s).
    pub fn terminate(mut self) -> (i32, PathBuf) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code().unwrap_or(-1), self.db.clone());
            }
            assert!(
                Instant::now() < deadline,
                "agent did not stop within 15 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Write the simulator's drive for `spec` as an NMEA log in `dir`.
pub fn drive_log(dir: &Path, spec: gps_agent::sim::DriveSpec) -> PathBuf {
    let path = dir.join("drive.nmea");
    let file = std::fs::File::create(&path).unwrap();
    gps_agent::sim::write_log(gps_agent::sim::Drive::new(spec).unwrap(), file).unwrap();
    path
}

/// The JSON lines `gps-agent parse` prints for `log`: one per accepted fix.
pub fn parse(log: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_gps-agent"))
        .env_remove("GPS_AGENT_CONFIG")
        .arg("parse")
        .arg(log)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How many fixes `gps-agent parse` accepts from `log`: the daemon must deliver exactly
/// these seqs.
pub fn expected_fixes(log: &Path) -> u64 {
    parse(log).lines().count() as u64
}

/// Receiver times (ms) of the fixes `gps-agent parse` accepts from `log`.
pub fn parse_times(log: &Path) -> std::collections::BTreeSet<i64> {
    parse(log)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            chrono::DateTime::parse_from_rfc3339(v["time"].as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        })
        .collect()
}

/// (seq, receiver time in ms) of every fix in a buffer file, in seq order, after checking
/// the file's integrity.
pub fn stored_rows(db: &Path) -> Vec<(u64, i64)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok", "{}", db.display());
    let mut stmt = conn
        .prepare("SELECT seq, time_ms FROM fixes ORDER BY seq")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows
}

/// When the agent wrote a log line (its `timestamp`, not when a test read it).
pub fn log_time(line: &serde_json::Value) -> std::time::SystemTime {
    let text = line["timestamp"]
        .as_str()
        .expect("a timestamp on every log line");
    let t = chrono::DateTime::parse_from_rfc3339(text).unwrap();
    std::time::SystemTime::UNIX_EPOCH
        + Duration::from_micros(u64::try_from(t.timestamp_micros()).unwrap())
}

/// The JSON lines of an agent's log file (for after the agent has stopped).
pub fn read_log(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// What the agent does first at its next start, after a crash or a power cut: open the buffer,
/// which stores what the crash journal kept and syncs it (no eviction, as the crash writer
/// runs). Nothing to do when the file did not survive.
pub fn recover_buffer(db: &Path) {
    if !db.exists() {
        return;
    }
    let cfg = gps_agent::config::BufferSettings {
        path: db.to_path_buf(),
        max_fixes: std::num::NonZeroU64::MAX,
        max_bytes: u64::MAX / 2,
        ..gps_agent::config::BufferSettings::default()
    };
    let (buf, _) = gps_agent::buffer::Buffer::open(&cfg).unwrap();
    drop(buf);
}
