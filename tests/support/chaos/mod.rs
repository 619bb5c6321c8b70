//! The chaos run (issue 11 item 4): the real daemon on a pseudo-terminal fed a 10 Hz drive
//! with about 1% damaged lines, publishing through the fault proxy to a broker (mosquitto
//! when it is installed, else rumqttd in-process), watched by an independent subscriber,
//! while a seeded schedule ([`schedule`]) SIGKILLs the agent (restarted as systemd would,
//! with the same configuration and buffer file), restarts the broker, cuts and stalls the
//! link, unplugs the receiver and fills the buffer's disk. At the end, after a drain, the
//! fixes delivered are held against `gps-agent parse` of exactly the bytes the port carried
//! ([`tally`]).
//!
//! The configuration is the product's defaults but for the paths, the broker's address and
//! the health port: the run measures what a vehicle would live through.

pub mod disk;
pub mod receiver;
pub mod schedule;
pub mod tally;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gps_agent::fix::Fix;
use gps_agent::sim::DriveSpec;

use super::agent::Agent;
use super::broker::{Subscriber, TestBroker};
use super::mosquitto::{Mosquitto, MosquittoOptions};
use super::proxy::FaultProxy;
use super::wait;
use disk::SmallDisk;
use receiver::{Fate, Receiver};
use schedule::{Fault, FaultKind, Schedule, Timing};
use tally::{Delivery, Evidence, Injected, Life, Tally};

/// Seconds of drive the run is asked for (`GPS_AGENT_CHAOS_SECS`); the default is what
/// `cargo test` runs.
pub const SECS_ENV: &str = "GPS_AGENT_CHAOS_SECS";
/// The schedule's seed (`GPS_AGENT_CHAOS_SEED`, decimal or 0x-hex).
pub const SEED_ENV: &str = "GPS_AGENT_CHAOS_SEED";
/// `mosquitto` or `rumqttd` (`GPS_AGENT_CHAOS_BROKER`); by default mosquitto when installed.
pub const BROKER_ENV: &str = "GPS_AGENT_CHAOS_BROKER";
/// Set (to anything): keep the run's directory (agent log, the NMEA fed and unfed) and
/// print where it is (`GPS_AGENT_CHAOS_KEEP`).
pub const KEEP_ENV: &str = "GPS_AGENT_CHAOS_KEEP";
/// Seconds the final drain may take before the run gives up on the rest
/// (`GPS_AGENT_CHAOS_DRAIN_S`): a hang guard, not a target.
pub const DRAIN_ENV: &str = "GPS_AGENT_CHAOS_DRAIN_S";

/// The short schedule `cargo test` runs: every kind of fault, two SIGKILLs.
pub const DEFAULT_SECS: u64 = 100;
/// The default seed: CI replays the same schedule every time.
pub const DEFAULT_SEED: u64 = 0xC4A0_5011;
/// Receiver rate and damage: 10 Hz, one line in a hundred damaged.
const RATE_HZ: u8 = 10;
const CORRUPT_EVERY: u32 = 100;
/// The buffer's tmpfs: room for hours of backlog, and small enough to fill at once.
const DISK_MIB: u64 = 32;
/// How long the disk stays full (the figure).
const DISK_FULL: Duration = Duration::from_secs(30);
/// A drain is over once the agent's buffer is empty and nothing arrived for this long.
const DRAIN_QUIET: Duration = Duration::from_secs(5);
/// Runs this long or longer get the long faults (cuts of 30-60 s).
const LONG_RUN_SECS: u64 = 600;
/// After each fault the run waits for a fix printed after its end to arrive before the
/// next calm begins, so that each blind time is the agent's answer to one fault; an agent
/// that stays blind this long is reported and the schedule goes on.
const RECOVERY_GUARD: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Mosquitto,
    Rumqttd,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub secs: u64,
    pub broker: BrokerKind,
    pub drain_guard: Duration,
}

impl Options {
    /// From the environment, with the defaults `cargo test` runs.
    pub fn from_env() -> Options {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let seed = var(SEED_ENV).map_or(DEFAULT_SEED, |v| {
            let v = v.trim();
            v.strip_prefix("0x")
                .map_or_else(|| v.parse(), |hex| u64::from_str_radix(hex, 16))
                .unwrap_or_else(|e| panic!("{SEED_ENV}={v}: {e}"))
        });
        let secs = var(SECS_ENV).map_or(DEFAULT_SECS, |v| {
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{SECS_ENV}={v}: {e}"))
        });
        let broker = match var(BROKER_ENV).as_deref() {
            Some("mosquitto") => BrokerKind::Mosquitto,
            Some("rumqttd") => BrokerKind::Rumqttd,
            Some(other) => panic!("{BROKER_ENV}={other}: mosquitto or rumqttd"),
            None if mosquitto_installed() => BrokerKind::Mosquitto,
            None => BrokerKind::Rumqttd,
        };
        let drain_s = var(DRAIN_ENV).map_or(900, |v| {
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{DRAIN_ENV}={v}: {e}"))
        });
        Options {
            seed,
            secs,
            broker,
            drain_guard: Duration::from_secs(drain_s),
        }
    }

    /// The command that runs this schedule again.
    pub fn replay(&self) -> String {
        format!(
            "{SEED_ENV}={:#x} {SECS_ENV}={} cargo test --test chaos -- --nocapture",
            self.seed, self.secs
        )
    }
}

fn mosquitto_installed() -> bool {
    Command::new("mosquitto")
        .arg("-h")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// What a run did and came to.
pub struct Outcome {
    pub tally: Tally,
    /// Lines describing the run (setup, faults, drain), for the test's output.
    pub notes: Vec<String>,
}

/// The broker the agent publishes to, restartable.
enum Broker {
    Mosquitto(Mosquitto),
    /// rumqttd cannot be stopped in-process: a restart is a fresh broker the proxy sends
    /// the agent to (with nothing of the old one's state), and a subscriber of its own; the
    /// old broker keeps delivering what it had to its subscriber.
    Rumqttd(TestBroker),
}

impl Broker {
    fn start(kind: BrokerKind) -> Broker {
        match kind {
            BrokerKind::Mosquitto => Broker::Mosquitto(Mosquitto::start(
                &MosquittoOptions {
                    persistence: true,
                    ..MosquittoOptions::default()
                },
                None,
            )),
            BrokerKind::Rumqttd => Broker::Rumqttd(TestBroker::start()),
        }
    }

    fn agent_addr(&self) -> SocketAddr {
        match self {
            Broker::Mosquitto(m) => m.agent_addr,
            Broker::Rumqttd(b) => b.addr,
        }
    }

    fn for_subscriber(&self) -> TestBroker {
        match self {
            Broker::Mosquitto(m) => m.for_subscriber(),
            Broker::Rumqttd(b) => TestBroker { addr: b.addr },
        }
    }
}

/// The subscriber side: every fix received, with its arrival time.
struct Watch {
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    /// Receiver time of the newest fix delivered.
    newest: Arc<AtomicI64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    filter: String,
}

impl Watch {
    async fn subscribe(&mut self, broker: &TestBroker) {
        let mut sub =
            Subscriber::start_persistent(broker, &self.filter, &super::unique("chaos-sub")).await;
        let deliveries = self.deliveries.clone();
        let newest = self.newest.clone();
        self.tasks.push(tokio::spawn(async move {
            while let Some(msg) = sub.next(Duration::from_secs(24 * 3600)).await {
                let fixes = msg.fixes();
                for f in &fixes {
                    newest.fetch_max(f.fix.time_ms, Ordering::Relaxed);
                }
                let mut d = deliveries.lock().unwrap();
                d.extend(fixes.into_iter().map(|fix| Delivery { fix, at: msg.at }));
            }
        }));
    }

    /// Wait until a fix of receiver time `time_ms` or later has arrived; false after `within`.
    async fn wait_newest(&self, time_ms: i64, within: Duration) -> bool {
        wait::poll_async(within, async || {
            self.newest.load(Ordering::Relaxed) >= time_ms
        })
        .await
        .is_some()
    }

    fn count(&self) -> usize {
        self.deliveries.lock().unwrap().len()
    }

    fn delivered_times(&self) -> BTreeSet<i64> {
        self.deliveries
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.fix.fix.time_ms)
            .collect()
    }

    fn stop(self) -> Vec<Delivery> {
        for t in &self.tasks {
            t.abort();
        }
        std::mem::take(&mut *self.deliveries.lock().unwrap())
    }
}

/// systemd's `RestartSec` from the unit the package installs: a killed agent is started
/// again after it, as on the vehicle.
pub fn restart_sec() -> Duration {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/gps-agent.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("RestartSec="))
        .expect("RestartSec= in the unit");
    let secs: f64 = value
        .trim()
        .trim_end_matches('s')
        .parse()
        .expect("RestartSec in seconds");
    Duration::from_secs_f64(secs)
}

/// Everything a run sets up: the broker behind the proxy, the subscriber, the receiver, the
/// agent and its disk, and what happened to each so far.
struct Rig {
    dir: tempfile::TempDir,
    disk: Option<SmallDisk>,
    broker: Broker,
    proxy: FaultProxy,
    watch: Watch,
    receiver: Receiver,
    agent: Option<Agent>,
    config: PathBuf,
    health: SocketAddr,
    db: PathBuf,
    log: PathBuf,
    lives: Vec<Life>,
    faults: Vec<Injected>,
    notes: Vec<String>,
}

impl Rig {
    /// Set everything up and start the agent; returns once it holds the port.
    async fn start(kind: BrokerKind, disk: Option<SmallDisk>, dir: tempfile::TempDir) -> Rig {
        let broker = Broker::start(kind);
        let proxy = FaultProxy::start(broker.agent_addr()).await;
        let device = super::unique("chaos");
        let mut watch = Watch {
            deliveries: Arc::default(),
            newest: Arc::new(AtomicI64::new(i64::MIN)),
            tasks: Vec::new(),
            filter: format!("fleet/{device}/fixes"),
        };
        watch.subscribe(&broker.for_subscriber()).await;
        let link = dir.path().join("gps0");
        let receiver = Receiver::plug_in(&link);
        let db = dir.path().join("state/buffer.db");
        let gnss = format!("[gnss]\nsource = \"serial\"\npath = \"{}\"", link.display());
        let buffer = format!("[buffer]\npath = \"{}\"", db.display());
        let agent = tokio::task::block_in_place(|| {
            Agent::start_with_buffer(dir.path(), &device, &gnss, &buffer, &proxy.url(), &[])
        });
        let rig = Rig {
            config: agent.config.clone(),
            health: agent.health,
            log: agent.log.clone(),
            agent: Some(agent),
            db,
            dir,
            disk,
            broker,
            proxy,
            watch,
            receiver,
            lives: vec![Life {
                start: Instant::now(),
                killed: None,
            }],
            faults: Vec::new(),
            notes: Vec::new(),
        };
        wait::until_async(
            "the agent to open the port",
            Duration::from_secs(60),
            async || rig.receiver.held(),
        )
        .await;
        rig
    }

    /// Inject `fault`, hold it, end it; then wait until a fix printed after its end has
    /// arrived (the agent recovered), so the next fault meets a recovered agent.
    async fn inject(&mut self, fault: &Fault) {
        let start = Instant::now();
        let mut end = None;
        match fault.kind {
            FaultKind::Kill => {
                let agent = self.agent.take().expect("an agent runs");
                tokio::task::block_in_place(|| agent.kill());
                self.lives.last_mut().unwrap().killed = Some(start);
                tokio::time::sleep(fault.hold).await;
                // The fault is over when systemd starts the agent: its start-up is blind.
                let restarted = Instant::now();
                end = Some(restarted);
                self.lives.push(Life {
                    start: restarted,
                    killed: None,
                });
                let (config, health, db, log) = (&self.config, self.health, &self.db, &self.log);
                self.agent = Some(tokio::task::block_in_place(|| {
                    Agent::restart(config, health, db, log)
                }));
            }
            FaultKind::BrokerRestart => match &mut self.broker {
                Broker::Mosquitto(m) => {
                    tokio::task::block_in_place(|| m.stop());
                    tokio::time::sleep(fault.hold).await;
                    tokio::task::block_in_place(|| m.start_again());
                }
                Broker::Rumqttd(b) => {
                    self.proxy.cut().await;
                    tokio::time::sleep(fault.hold).await;
                    *b = tokio::task::block_in_place(TestBroker::start);
                    self.watch.subscribe(&TestBroker { addr: b.addr }).await;
                    self.proxy.redirect(b.addr);
                    self.proxy.restore().await;
                }
            },
            FaultKind::LinkCut => {
                self.proxy.cut().await;
                tokio::time::sleep(fault.hold).await;
                self.proxy.restore().await;
            }
            FaultKind::LinkStall => {
                // Bytes are swallowed, not delayed, so the connection cannot resume: it ends
                // as a carrier NAT ends a hung flow.
                self.proxy.stall();
                tokio::time::sleep(fault.hold).await;
                self.proxy.cut().await;
                self.proxy.restore().await;
            }
            FaultKind::Unplug => {
                tokio::task::block_in_place(|| self.receiver.unplug());
                tokio::time::sleep(fault.hold).await;
                self.receiver.replug();
            }
            FaultKind::DiskFull => {
                let disk = self
                    .disk
                    .as_ref()
                    .expect("disk-full faults need the small disk");
                tokio::task::block_in_place(|| disk.fill());
                tokio::time::sleep(fault.hold).await;
                disk.free();
            }
        }
        let end = end.unwrap_or_else(Instant::now);
        self.faults.push(Injected {
            kind: fault.kind,
            start,
            end,
        });
        let due = self.receiver.time_due(end);
        if !self.watch.wait_newest(due, RECOVERY_GUARD).await {
            self.notes.push(format!(
                "fault #{} ({}): no fix printed after it arrived within {RECOVERY_GUARD:?}",
                self.faults.len() - 1,
                fault.kind
            ));
        }
    }

    /// Wait until every fix in `accepted` has arrived, or the agent's buffer is empty and
    /// nothing more comes (or the guard passes); returns when the drain was over.
    async fn drain(&mut self, accepted: &BTreeMap<i64, Fix>, guard: Duration) -> Instant {
        let begin = Instant::now();
        let mut last_count = (self.watch.count(), Instant::now());
        let drained = wait::poll_async(guard, async || {
            let got = self.watch.delivered_times();
            if accepted.keys().all(|t| got.contains(t)) {
                return true;
            }
            let count = self.watch.count();
            if count != last_count.0 {
                last_count = (count, Instant::now());
            }
            let depth = tokio::task::block_in_place(|| buffer_depth(self.health));
            depth == Some(0) && last_count.1.elapsed() >= DRAIN_QUIET
        })
        .await
        .is_some();
        if !drained {
            let agent = self.agent.as_ref().expect("an agent runs");
            let health = tokio::task::block_in_place(|| agent.raw("/health"));
            self.notes
                .push(format!("drain guard of {guard:?} hit; health: {health}"));
        }
        // Late duplicates of what was in flight.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let end = Instant::now();
        self.notes.push(format!(
            "drain {:.1} s{}",
            (end - begin).as_secs_f64(),
            if drained { "" } else { " (gave up)" }
        ));
        end
    }

    /// SIGTERM the agent, noting its exit and last health.
    fn stop_agent(&mut self) {
        let agent = self.agent.take().expect("an agent runs");
        let health = agent.raw("/health");
        let (exit, _) = agent.terminate();
        self.notes
            .push(format!("agent exit code after SIGTERM: {exit}"));
        if let Ok(h) = serde_json::from_str::<serde_json::Value>(&health) {
            self.notes.push(format!(
                "last agent's health: mqtt reconnects {}, buffer depth {}",
                h["components"]["mqtt"]["reconnects"], h["components"]["buffer"]["depth"]
            ));
        }
        let codes = log_codes(&self.log);
        self.notes
            .push(format!("agent log, warnings and errors by code: {codes:?}"));
        // SQLite reuses its WAL and free pages, so a full disk is felt only while the file
        // must grow (early in a run, or with a backlog beyond any before it).
        let spells = self
            .faults
            .iter()
            .filter(|f| f.kind == FaultKind::DiskFull)
            .count();
        if spells > 0 {
            self.notes.push(format!(
                "disk-full spells: {spells}, felt by the agent (BUFFER_DISK_FULL logged, at \
                 most once a minute): {}",
                codes.get("BUFFER_DISK_FULL").unwrap_or(&0)
            ));
        }
    }
}

/// Run the chaos schedule of `options` and tally it.
pub async fn run(options: &Options) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let (disk, left_out) = match SmallDisk::mount(&dir.path().join("state"), DISK_MIB) {
        Ok(d) => (Some(d), None),
        Err(why) => {
            eprintln!("chaos: no disk-full faults: {why}");
            (None, Some(format!("disk full left out: {why}")))
        }
    };
    let kinds: Vec<FaultKind> = FaultKind::ALL
        .into_iter()
        .filter(|k| *k != FaultKind::DiskFull || disk.is_some())
        .collect();
    let schedule = Schedule::new(
        options.seed,
        options.secs,
        &kinds,
        Timing {
            restart_after: restart_sec(),
            disk_full: DISK_FULL,
            long: options.secs >= LONG_RUN_SECS,
        },
    );
    let mut rig = Rig::start(options.broker, disk, dir).await;
    rig.notes.extend(left_out);
    let counts: Vec<String> = FaultKind::ALL
        .iter()
        .map(|k| format!("{k}={}", schedule.count(*k)))
        .collect();
    rig.notes.push(format!(
        "seed={:#x} drive {:.0} s at {RATE_HZ} Hz planned (and the waits for recovery), \
         broker {:?}, faults {}",
        options.seed,
        schedule.length().as_secs_f64(),
        options.broker,
        counts.join(" ")
    ));

    rig.receiver.print(
        DriveSpec {
            // Room for the schedule and the waits for recovery: the drive is stopped when
            // the schedule is done.
            epochs: u32::try_from((schedule.length().as_secs() * 2 + 3600) * u64::from(RATE_HZ))
                .unwrap(),
            rate_hz: RATE_HZ,
            corrupt_every: Some(CORRUPT_EVERY),
            seed: options.seed,
            ..DriveSpec::default()
        },
        rig.dir.path(),
    );
    for fault in &schedule.faults {
        tokio::time::sleep(fault.calm_before).await;
        rig.inject(fault).await;
    }
    tokio::time::sleep(schedule.tail).await;
    let feed = rig.receiver.stop();
    if let (Some(first), Some(last)) = (feed.printed.first(), feed.printed.last()) {
        rig.notes.push(format!(
            "drive ran {:.0} s ({} epochs)",
            (last.at - first.at).as_secs_f64(),
            feed.printed.len()
        ));
    }

    let accepted = parse(&rig.config, &feed.fed);
    let accepted_unfed: BTreeSet<i64> = parse(&rig.config, &feed.unfed).into_keys().collect();
    let end = rig.drain(&accepted, options.drain_guard).await;
    tokio::task::block_in_place(|| rig.stop_agent());

    let fates = feed
        .printed
        .iter()
        .fold(BTreeMap::<String, usize>::new(), |mut m, p| {
            *m.entry(format!("{:?}", p.fate)).or_default() += 1;
            m
        });
    rig.notes.push(format!("epochs printed by fate: {fates:?}"));
    if feed.printed.iter().any(|p| p.fate == Fate::WriteFailed) {
        rig.notes
            .push("some writes to the port timed out: an agent held it without reading".into());
    }
    let Rig {
        dir,
        disk,
        receiver,
        watch,
        lives,
        faults,
        mut notes,
        ..
    } = rig;
    let evidence = Evidence {
        printed: feed.printed,
        accepted,
        accepted_unfed,
        deliveries: watch.stop(),
        faults,
        lives,
        end: Some(end),
    };
    drop(receiver);
    drop(disk);
    if std::env::var_os(KEEP_ENV).is_some() {
        notes.push(format!("kept {}", dir.keep().display()));
    }
    Outcome {
        tally: Tally::new(&evidence),
        notes,
    }
}

/// How often each `code` appears in the agent's warnings and errors.
fn log_codes(log: &Path) -> BTreeMap<String, usize> {
    let mut codes = BTreeMap::<String, usize>::new();
    for v in super::agent::read_log(log) {
        let serious = matches!(v["level"].as_str(), Some("WARN" | "ERROR"));
        if let (true, Some(code)) = (serious, v["code"].as_str()) {
            *codes.entry(code.to_string()).or_default() += 1;
        }
    }
    codes
}

/// `/health`'s buffer depth, `None` when the agent does not answer.
fn buffer_depth(health: SocketAddr) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&health, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["components"]["buffer"]["depth"].as_u64()
}

/// The fixes `gps-agent parse` accepts from `log` under the agent's configuration, by
/// receiver time.
fn parse(config: &Path, log: &PathBuf) -> BTreeMap<i64, Fix> {
    let out = Command::new(env!("CARGO_BIN_EXE_gps-agent"))
        .env_remove("GPS_AGENT_CONFIG")
        .arg("--config")
        .arg(config)
        .arg("parse")
        .arg(log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "parse {}: {}",
        log.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let (_, fix) = gps_agent::fix::fix_from_json(&v).unwrap();
            (fix.time_ms, fix)
        })
        .collect()
}
