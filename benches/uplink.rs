//! Uplink throughput against a local mosquitto: 100,000 fixes drained through our
//! `Publisher` (in-memory source, default batch 50 and window 10), then the same payloads
//! through a bare rumqttc QoS 1 client with the same window, in the same run. Prints fixes/s,
//! messages/s, ours as % of bare, and bytes on the wire per fix.
//!
//! Needs `mosquitto` on PATH; without it, says so and exits 0. Run: `cargo bench --bench
//! uplink`. Targets: >= 20,000 fixes/s and >= 80 % of bare.

use gps_agent::error::{Classified, ErrorClass};
use gps_agent::fix::{Fix, FixMode};
use gps_agent::uplink::backoff::Jitter;
use gps_agent::uplink::error::UplinkError;
use gps_agent::uplink::payload::{encode, FixBatch, Topics};
use gps_agent::uplink::publisher::{FixSource, Publisher, PublisherSettings};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const FIXES: usize = 100_000;
const DEVICE: &str = "bench-truck";
const STREAM: &str = "bench-stream";

#[derive(Debug, thiserror::Error)]
#[error("never fails")]
struct NeverFails;

impl Classified for NeverFails {
    fn code(&self) -> &'static str {
        "BENCH"
    }
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

/// The buffer's contract, as cheaply as possible: a queue of seqs to hand out (released
/// ones go back to the front), a counter of acks.
struct MemSource {
    fixes: Vec<Fix>,
    ready: VecDeque<u64>,
    acked: Arc<AtomicUsize>,
    all_acked: Arc<Notify>,
}

impl FixSource for MemSource {
    type Error = NeverFails;

    fn stream(&self) -> String {
        STREAM.into()
    }

    async fn next_batch(&mut self, max: usize) -> Result<Vec<(u64, Fix)>, NeverFails> {
        let n = max.min(self.ready.len());
        Ok(self
            .ready
            .drain(..n)
            .filter_map(|seq| {
                let i = usize::try_from(seq).ok()?.checked_sub(1)?;
                Some((seq, *self.fixes.get(i)?))
            })
            .collect())
    }

    async fn fixes_pending(&mut self) {
        std::future::pending().await
    }

    async fn ack(&mut self, seqs: &[u64]) -> Result<(), NeverFails> {
        let total = self.acked.fetch_add(seqs.len(), Ordering::Relaxed) + seqs.len();
        if total >= self.fixes.len() {
            self.all_acked.notify_one();
        }
        Ok(())
    }

    async fn release(&mut self, seqs: &[u64]) -> Result<(), NeverFails> {
        for seq in seqs.iter().rev() {
            self.ready.push_front(*seq);
        }
        Ok(())
    }

    async fn dead_letter(&mut self, _seq: u64, _why: &UplinkError) -> Result<(), NeverFails> {
        Ok(())
    }
}

fn fix(i: u64) -> Fix {
    Fix {
        time_ms: 1_700_000_000_000 + i as i64 * 1000,
        lat: 48.137_154_3 + (i % 1000) as f64 * 1e-6,
        lon: 11.576_124_9 - (i % 700) as f64 * 1e-6,
        alt_m: Some(520.25),
        speed_mps: Some(12.5),
        course_deg: Some(181.0),
        hdop: Some(0.8),
        sats: Some(11),
        mode: FixMode::ThreeD,
        event: None,
    }
}

struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_mosquitto() -> Option<Mosquitto> {
    let dir = tempfile::tempdir().ok()?;
    let addr = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?;
    let conf = dir.path().join("mosquitto.conf");
    let mut text = format!(
        "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n",
        addr.port()
    );
    if std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0) {
        text += "user root\n";
    }
    std::fs::write(&conf, text).ok()?;
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let broker = Mosquitto {
        child,
        addr,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Some(broker);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Our publisher: seconds to get every fix acknowledged.
async fn run_ours(url: &str) -> Duration {
    let acked = Arc::new(AtomicUsize::new(0));
    let all_acked = Arc::new(Notify::new());
    let source = MemSource {
        fixes: (1..=FIXES as u64).map(fix).collect(),
        ready: (1..=FIXES as u64).collect(),
        acked: acked.clone(),
        all_acked: all_acked.clone(),
    };
    let mut settings = PublisherSettings::new(url, DEVICE).unwrap();
    settings.client_id = "bench-ours".into();
    let publisher = Publisher::new(settings, source, gps_agent::status::StatusBoard::default())
        .with_jitter(Jitter::Off);
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(publisher.run(shutdown.clone()));
    let waited = tokio::time::timeout(Duration::from_secs(120), all_acked.notified()).await;
    let elapsed = started.elapsed();
    shutdown.cancel();
    let _ = task.await;
    if waited.is_err() {
        eprintln!(
            "ours: only {} of {FIXES} acked in 120 s",
            acked.load(Ordering::Relaxed)
        );
    }
    elapsed
}

/// What the bare client sends.
enum BareInput {
    /// Fixes, encoded batch by batch in the send loop as our publisher must: the fair
    /// comparison.
    Fixes(Vec<(u64, Fix)>, usize, usize),
    /// Payloads encoded beforehand: rumqttc and mosquitto alone.
    Payloads(Vec<Vec<u8>>),
}

/// The same payloads through bare rumqttc QoS 1 with the same window.
async fn run_bare(addr: SocketAddr, topic: &str, input: BareInput, window: u16) -> Duration {
    let mut options = MqttOptions::new("bench-bare", addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(window);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, usize::from(window) + 2);
    let total = match &input {
        BareInput::Fixes(fixes, batch_max, _) => fixes.len().div_ceil(*batch_max),
        BareInput::Payloads(p) => p.len(),
    };
    let started = Instant::now();
    let topic = topic.to_owned();
    let sender = tokio::spawn(async move {
        let publish = |payload: Vec<u8>| client.publish(&topic, QoS::AtLeastOnce, false, payload);
        match input {
            BareInput::Payloads(payloads) => {
                for payload in payloads {
                    if publish(payload).await.is_err() {
                        return;
                    }
                }
            }
            BareInput::Fixes(fixes, batch_max, max_bytes) => {
                for chunk in fixes.chunks(batch_max) {
                    let batch = FixBatch {
                        device: DEVICE,
                        stream: STREAM,
                        fixes: chunk,
                    };
                    for m in encode(&batch, max_bytes).messages {
                        if publish(m.payload).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    let mut acked = 0;
    while acked < total {
        match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => {
                eprintln!("bare: {e}");
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    sender.abort();
    elapsed
}

/// Bytes of one QoS 1 PUBLISH carrying `payload` plus its PUBACK.
fn wire_bytes(topic: &str, payload: usize) -> usize {
    let remaining = 2 + topic.len() + 2 + payload;
    let length_bytes = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + length_bytes + remaining + 4
}

fn main() {
    let Some(broker) = start_mosquitto() else {
        println!("uplink bench: mosquitto not on PATH or did not start; skipped");
        return;
    };
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    else {
        println!("uplink bench: no tokio runtime");
        return;
    };
    let settings = PublisherSettings::new("mqtt://unused", DEVICE).unwrap();
    let topics = Topics::new(&settings.topic_prefix, DEVICE);
    let fixes: Vec<(u64, Fix)> = (1..=FIXES as u64).map(|i| (i, fix(i))).collect();
    let mut payloads = Vec::new();
    for chunk in fixes.chunks(settings.batch_max) {
        let batch = FixBatch {
            device: DEVICE,
            stream: STREAM,
            fixes: chunk,
        };
        payloads.extend(
            encode(&batch, settings.max_message_bytes)
                .messages
                .into_iter()
                .map(|m| m.payload),
        );
    }
    let messages = payloads.len();
    let payload_bytes: usize = payloads.iter().map(Vec::len).sum();
    let wire: usize = payloads
        .iter()
        .map(|p| wire_bytes(&topics.fixes, p.len()))
        .sum();

    // Best of three: a run is a fraction of a second, so one scheduling hiccup on a shared
    // 2-core machine would dominate a single sample.
    let url = format!("mqtt://{}", broker.addr);
    let best = |runs: Vec<Duration>| runs.into_iter().min().unwrap_or(Duration::MAX);
    let ours = best((0..3).map(|_| runtime.block_on(run_ours(&url))).collect());
    let bare_input = || {
        BareInput::Fixes(
            fixes.clone(),
            settings.batch_max,
            settings.max_message_bytes,
        )
    };
    let bare = best(
        (0..3)
            .map(|_| {
                let input = bare_input();
                runtime.block_on(run_bare(broker.addr, &topics.fixes, input, settings.window))
            })
            .collect(),
    );
    let bare_pre = best(
        (0..3)
            .map(|_| {
                let input = BareInput::Payloads(payloads.clone());
                runtime.block_on(run_bare(broker.addr, &topics.fixes, input, settings.window))
            })
            .collect(),
    );

    let rate = |d: Duration, n: usize| n as f64 / d.as_secs_f64().max(1e-9);
    let ours_fps = rate(ours, FIXES);
    let bare_fps = rate(bare, FIXES);
    println!(
        "uplink bench: {FIXES} fixes in {messages} messages (batch {}, window {})",
        settings.batch_max, settings.window
    );
    println!(
        "  ours: {:>8.0} fixes/s {:>7.0} messages/s ({:.2} s)",
        ours_fps,
        rate(ours, messages),
        ours.as_secs_f64()
    );
    println!(
        "  bare: {:>8.0} fixes/s {:>7.0} messages/s ({:.2} s)",
        bare_fps,
        rate(bare, messages),
        bare.as_secs_f64()
    );
    println!(
        "  bare, payloads encoded beforehand: {:>8.0} fixes/s",
        rate(bare_pre, FIXES)
    );
    println!(
        "  ours/bare (both encoding): {:.0} %",
        100.0 * ours_fps / bare_fps.max(1e-9)
    );
    println!(
        "  bytes per fix: {:.1} payload, {:.1} on the wire (PUBLISH + PUBACK)",
        payload_bytes as f64 / FIXES as f64,
        wire as f64 / FIXES as f64
    );
    println!(
        "  targets: >= 20000 fixes/s: {}; >= 80 % of bare: {}",
        if ours_fps >= 20_000.0 {
            "met"
        } else {
            "MISSED"
        },
        if ours_fps >= 0.8 * bare_fps {
            "met"
        } else {
            "MISSED"
        }
    );
}
