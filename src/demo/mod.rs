//! `gps-agent demo`: the whole agent working, with no set-up at all.
//!
//! A simulated receiver (the project's own NMEA simulator, [`crate::sim`]) writes a drive
//! through Munich into a pseudo-terminal, in real time, with a tunnel where the fix drops
//! out and a few corrupt lines. The real agent ([`crate::app::run`]) reads the other end of the
//! pseudo-terminal as its serial receiver, buffers every accepted fix in SQLite and publishes
//! it to an embedded broker (rumqttd) through a link the demo cuts for a while (a broker
//! outage). A subscriber counts what arrives. The demo prints the agent's health once a
//! second and the fixes as they arrive, then a summary: sent, received, lost (= 0).
//!
//! Everything lives on loopback and in a temporary directory that is removed at the end.
//! Demo-only code: behind the default `demo` cargo feature, which packaging leaves out.

mod broker;
mod link;

use crate::app::{self, RunOptions};
use crate::config::{Config, SourceKind};
use crate::sim::{Drive, DriveSpec};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const DEVICE: &str = "demo-truck";
/// The demo never runs longer than this, whatever the arguments.
const HARD_CAP: Duration = Duration::from_secs(180);

/// Knobs for tests (hidden from `--help`): a shorter drive, a faster receiver, a shorter
/// outage.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Epochs the simulated receiver sends.
    #[arg(long, default_value_t = 300, hide = true)]
    pub epochs: u32,
    /// Epochs per second (1, 5 or 10).
    #[arg(long, default_value_t = 5, hide = true)]
    pub rate: u8,
    /// Seconds the broker link stays cut.
    #[arg(long, default_value_t = 8, hide = true)]
    pub outage_s: u64,
}

/// What the subscriber saw.
#[derive(Debug, Default)]
struct Received {
    /// seq -> times received
    seqs: BTreeMap<u64, u32>,
    messages: u64,
    /// When the demo gave the link back, and when the first fixes arrived after that: the
    /// time the fleet's dispatch was blind although the link was up.
    restored_at: Option<Instant>,
    first_after_restore: Option<Instant>,
}

/// Runs the demo; returns the exit code (0 when nothing was lost). `log` is where the
/// agent's and the broker's logs go (set up by the caller), named on the terminal.
pub fn run(args: &DemoArgs, log: Option<&std::path::Path>) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let dir = std::env::temp_dir().join(format!("gps-agent-demo-{}", std::process::id()));
    if let Some(log) = log {
        println!(
            "(the agent's and the broker's logs go to {})",
            log.display()
        );
    }
    let code = runtime.block_on(async {
        match tokio::time::timeout(HARD_CAP, demo(args, &dir)).await {
            Ok(Ok(code)) => code,
            Ok(Err(e)) => {
                eprintln!("demo: {e}");
                1
            }
            Err(_) => {
                eprintln!("demo: did not finish within {} s", HARD_CAP.as_secs());
                1
            }
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(log) = log {
        println!(
            "(the agent's and the broker's logs are in {})",
            log.display()
        );
    }
    code
}

async fn demo(args: &DemoArgs, dir: &std::path::Path) -> Result<i32, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("temporary directory: {e}"))?;
    let spec = DriveSpec {
        epochs: args.epochs.max(10),
        rate_hz: args.rate,
        tunnel: Some((
            args.epochs / 3,
            (u32::from(args.rate) * 5).min(args.epochs / 6),
        )),
        corrupt_every: Some(53),
        ..DriveSpec::demo()
    };
    let truth: Vec<_> = Drive::new(spec.clone())
        .map_err(|e| e.to_string())?
        .collect();
    let drive_s = f64::from(spec.epochs) / f64::from(spec.rate_hz.max(1));

    // The broker, and the link to it that the demo will cut.
    let broker_addr = tokio::task::spawn_blocking(broker::start)
        .await
        .map_err(|e| e.to_string())??;
    let link = link::Link::start(broker_addr).await?;

    // The receiver: a pseudo-terminal pair; the agent opens the slave by its path.
    let (master, slave) =
        serialport::TTYPort::pair().map_err(|e| format!("pseudo-terminal: {e}"))?;
    let device_path = serialport::SerialPort::name(&slave)
        .map(PathBuf::from)
        .ok_or("pseudo-terminal without a name")?;
    drop(slave);

    let health_addr = broker::free_port()?;
    let mut cfg = Config::default();
    cfg.device.id = DEVICE.into();
    cfg.gnss.source = SourceKind::Serial;
    cfg.gnss.path = device_path.clone();
    cfg.buffer.path = dir.join("buffer.db");
    cfg.buffer.commit_interval_s = 0.2;
    cfg.mqtt.url = format!("mqtt://{}", link.addr);
    // Every fix on its own message, as it comes: the demo shows live tracking (a fleet on
    // a data plan lets fixes linger for company instead, see `[mqtt] linger_s`).
    cfg.mqtt.linger_s = 0.0;
    cfg.health.listen = health_addr.to_string();
    let buffer_path = cfg.buffer.path.clone();
    let cfg = crate::config::check(&cfg).map_err(|e| format!("demo configuration: {e}"))?;

    println!("gps-agent demo: a simulated drive, the real agent, an embedded broker");
    println!(
        "  receiver    {} (pseudo-terminal), {} epochs at {} Hz = {:.0} s, tunnel and corrupt lines",
        device_path.display(),
        spec.epochs,
        spec.rate_hz,
        drive_s
    );
    println!("  broker      mqtt://{broker_addr} (embedded rumqttd), reached through a link the demo cuts");
    println!(
        "  agent       health http://{health_addr}/health, buffer {}",
        buffer_path.display()
    );
    println!("  subscriber  fleet/{DEVICE}/#");
    println!();

    // The subscriber, straight to the broker.
    let received = Arc::new(Mutex::new(Received::default()));
    let subscriber = subscribe(broker_addr, Arc::clone(&received)).await?;

    // The agent.
    let agent_stop = CancellationToken::new();
    let agent = tokio::spawn(app::run(cfg, RunOptions::default(), agent_stop.clone()));

    // The receiver starts sending once the agent has opened its end.
    receiver_open(health_addr).await;
    let feeding = Arc::new(AtomicBool::new(true));
    let stop_feeder = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (spec, feeding, stop) = (spec.clone(), Arc::clone(&feeding), Arc::clone(&stop_feeder));
        std::thread::spawn(move || feed(spec, master, &stop, &feeding))
    };

    // Health once a second, and the outage in the middle of the drive.
    let watcher_stop = CancellationToken::new();
    let watcher = tokio::spawn(watch_health(health_addr, watcher_stop.clone()));
    let outage_at = Duration::from_secs_f64(drive_s * 0.45);
    let interrupted = tokio::select! {
        _ = outage(&link, outage_at, Duration::from_secs(args.outage_s), &received) => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    // Until the drive ends.
    let interrupted = interrupted
        || tokio::select! {
            _ = wait_flag_clear(&feeding) => false,
            _ = tokio::signal::ctrl_c() => true,
        };
    if interrupted {
        println!("\n(interrupted)");
    }
    stop_feeder.store(true, Ordering::Relaxed);
    // Until the buffer has drained (or 60 s).
    if !interrupted {
        tokio::select! {
            _ = drained(health_addr, &received) => {}
            _ = tokio::time::sleep(Duration::from_secs(60)) => println!("(the buffer did not drain within 60 s)"),
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    let last = get_health(health_addr).await.unwrap_or(Value::Null);
    watcher_stop.cancel();
    let _ = watcher.await;
    agent_stop.cancel();
    let agent_result = agent.await.map_err(|e| e.to_string())?;
    subscriber.abort();
    let _master = feeder.join();
    agent_result.map_err(|e| e.to_string())?;
    // What the agent stored, from its buffer file (health may be a second behind).
    let db = dir.join("buffer.db");
    let stored = crate::buffer::open_read_only(&db)
        .and_then(|conn| crate::buffer::file_stats(&conn, &db))
        .map(|s| s.last_seq)
        .ok();

    Ok(summary(&truth, &last, stored, &received))
}

/// Write the drive into the pseudo-terminal at its rate. Until the agent has opened its end,
/// writes fail: start over until the drive goes through.
fn feed(
    spec: DriveSpec,
    mut master: serialport::TTYPort,
    stop: &AtomicBool,
    feeding: &AtomicBool,
) -> serialport::TTYPort {
    while !stop.load(Ordering::Relaxed) {
        let Ok(drive) = Drive::new(spec.clone()) else {
            break;
        };
        if crate::sim::write_realtime(drive, &mut master, stop).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    feeding.store(false, Ordering::Relaxed);
    // Keep the master open: closing it would hang up the terminal before the agent read all.
    master
}

async fn wait_flag_clear(flag: &AtomicBool) {
    while flag.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn outage(link: &link::Link, at: Duration, length: Duration, received: &Mutex<Received>) {
    tokio::time::sleep(at).await;
    link.cut();
    println!(
        "!! broker link cut: the agent keeps collecting into its buffer for {} s",
        length.as_secs()
    );
    tokio::time::sleep(length).await;
    link.restore();
    received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .restored_at = Some(Instant::now());
    println!("!! broker link restored: the backlog drains, the newest fix first");
}

/// Until the agent's health says the receiver is open (at most 10 s): a simulated receiver
/// that talks into a terminal nobody has opened gets only write errors.
async fn receiver_open(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(v) = get_health(addr).await {
            if v["components"]["gnss"]["connected"] == true {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn subscribe(
    broker: SocketAddr,
    received: Arc<Mutex<Received>>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let mut options = MqttOptions::new("demo-subscriber", broker.ip().to_string(), broker.port());
    options.set_keep_alive(Duration::from_secs(10));
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    let (client, mut events) = AsyncClient::new(options, 16);
    client
        .subscribe(format!("fleet/{DEVICE}/#"), QoS::AtLeastOnce)
        .await
        .map_err(|e| format!("subscriber: {e}"))?;
    Ok(tokio::spawn(async move {
        let _client = client;
        let mut printed_upto = 0u64;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let Ok(v) = serde_json::from_slice::<Value>(&p.payload) else {
                        continue;
                    };
                    if p.topic.ends_with("/status") {
                        println!("<- status {}", v["state"].as_str().unwrap_or("?"));
                        continue;
                    }
                    let fixes = v["fixes"].as_array().cloned().unwrap_or_default();
                    let mut r = received.lock().unwrap_or_else(|e| e.into_inner());
                    r.messages += 1;
                    if r.restored_at.is_some() && r.first_after_restore.is_none() {
                        r.first_after_restore = Some(Instant::now());
                    }
                    for f in &fixes {
                        if let Some(seq) = f["seq"].as_u64() {
                            *r.seqs.entry(seq).or_insert(0) += 1;
                        }
                    }
                    let distinct = r.seqs.len() as u64;
                    drop(r);
                    // A line per 25 fixes, and for every message of a drain.
                    if distinct >= printed_upto + 25 || fixes.len() > 1 {
                        printed_upto = distinct;
                        if let (Some(first), Some(last)) = (fixes.first(), fixes.last()) {
                            println!(
                                "<- fixes seq {}..{} ({} in this message, {distinct} distinct so far), newest {:.5},{:.5} at {}",
                                first["seq"], last["seq"], fixes.len(),
                                last["lat"].as_f64().unwrap_or(0.0), last["lon"].as_f64().unwrap_or(0.0),
                                last["time"].as_str().unwrap_or("?")
                            );
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }))
}

async fn watch_health(addr: SocketAddr, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Some(v) = get_health(addr).await {
                    println!("   health {}", crate::cli::status::watch_line(&v));
                }
            }
        }
    }
}

/// The agent's `/health` snapshot (any status code: a 503 still carries it).
async fn get_health(addr: SocketAddr) -> Option<Value> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut text = Vec::new();
        s.read_to_end(&mut text).await.ok()?;
        let text = String::from_utf8_lossy(&text).into_owned();
        let body = text.split_once("\r\n\r\n")?.1.to_owned();
        serde_json::from_str(&body).ok()
    };
    tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .ok()
        .flatten()
}

/// Until the buffer is empty and the subscriber has every acknowledged seq.
/// Until the agent has stored the drive's last fix (an epoch is complete only when the next
/// begins, or after a second of silence: the last one is stored that second after the drive
/// ends), its buffer is empty and the subscriber has every fix it kept.
async fn drained(addr: SocketAddr, received: &Mutex<Received>) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    loop {
        if let Some(v) = get_health(addr).await {
            let depth = v["components"]["buffer"]["depth"]
                .as_u64()
                .unwrap_or(u64::MAX);
            let kept = v["components"]["gnss"]["kept"].as_u64().unwrap_or(0);
            let have = received.lock().map(|r| r.seqs.len() as u64).unwrap_or(0);
            if depth == 0 && kept > 0 && have >= kept {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn summary(
    truth: &[crate::sim::SimEpoch],
    last: &Value,
    stored: Option<u64>,
    received: &Mutex<Received>,
) -> i32 {
    let sent = truth.len();
    let with_fix = truth.iter().filter(|e| e.fix).count();
    let corrupt = truth.iter().filter(|e| e.is_corrupted()).count();
    // Every accepted fix got the next seq in the buffer: the last seq is the count.
    let accepted = stored.unwrap_or_else(|| {
        last["components"]["buffer"]["acked_seq"]
            .as_u64()
            .unwrap_or(0)
            + last["components"]["buffer"]["depth"].as_u64().unwrap_or(0)
    });
    let rejected: Vec<String> = last["components"]["gnss"]["rejected"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect()
        })
        .unwrap_or_default();
    let r = received.lock().unwrap_or_else(|e| e.into_inner());
    let distinct = r.seqs.len() as u64;
    let duplicates: u64 = r
        .seqs
        .values()
        .map(|n| u64::from(n.saturating_sub(1)))
        .sum();
    let missing = (1..=accepted).filter(|s| !r.seqs.contains_key(s)).count() as u64;
    println!();
    println!("summary");
    println!("  simulator   {sent} epochs sent: {with_fix} with a fix, {} in the tunnel without one, {corrupt} with a corrupt line", sent - with_fix);
    println!(
        "  agent       {accepted} fixes accepted and buffered; rejected: {}",
        if rejected.is_empty() {
            "none".to_string()
        } else {
            rejected.join(", ")
        }
    );
    println!(
        "  broker      {distinct} distinct fixes received in {} messages, {duplicates} duplicates",
        r.messages
    );
    println!("  lost        {missing}");
    match (r.restored_at, r.first_after_restore) {
        (Some(restored), Some(first)) => println!(
            "  blind       {:.1} s from the link's return to the first fix received",
            first.saturating_duration_since(restored).as_secs_f64()
        ),
        (Some(_), None) => println!("  blind       no fix arrived after the link returned"),
        _ => {}
    }
    if missing == 0 && accepted > 0 {
        0
    } else {
        1
    }
}
