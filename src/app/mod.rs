//! `gps-agent run`: the stages joined into one agent.
//!
//! ```text
//!  serial/file source ──chunks──> ingest thread ──append──> Store (SQLite buffer)
//!   (reader thread,     (bounded,   decode, validate          │        ▲
//!    never blocks)       64)                                   │ batches│ acks
//!                                                              ▼        │
//!                                                     uplink (Publisher) ──> MQTT broker
//!  report loop (1 s): health snapshot, metrics, /live heartbeat, systemd watchdog
//! ```
//!
//! A failing stage degrades the agent, never stops it: it starts without a receiver (the
//! serial source keeps reopening), without a broker (fixes wait in the buffer), and without a
//! writable disk (fixes wait in memory, see [`store`]). Only a broken configuration stops it
//! (exit 78, before anything starts).
//!
//! Shutdown (SIGTERM/SIGINT, or the caller's token): stop reading, flush the decoder, commit
//! the buffer, then let the uplink wait (bounded, `shutdown_grace`) for in-flight acks and
//! publish `offline`, then exit 0. SIGHUP reloads the configuration file: validation
//! thresholds apply at once; a changed `[mqtt]` (broker, credentials, timers, or a
//! certificate or password file replaced under the same path) makes the uplink finish its
//! connection as at shutdown and reconnect with the new settings; other changes are logged
//! as needing a restart.

pub mod clock;
pub mod ingest;
pub mod store;

use crate::config::{Config, SourceKind};
use crate::error::Classified;
use crate::gnss::source::{file, serial, SourceHandle};
use crate::health::metrics::Metrics;
use crate::health::server::{self, ServeOptions};
use crate::health::snapshot::{
    BreakerState, BufferHealth, Component, FixState, GnssHealth, HealthState, MqttHealth, Status,
};
use crate::uplink::publisher::{Publisher, PublisherSettings, UplinkStatus};
use ingest::{GnssView, Ingest};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::{Link, SharedStore, Store};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// How often health, metrics and the watchdog are brought up to date.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Pause between the connection ended for a `[mqtt]` reload and the new one.
const RELOAD_SETTLE: Duration = Duration::from_millis(500);
/// A receiver with no accepted fix for this long is reported degraded.
const FIX_STALE_AFTER: Duration = Duration::from_secs(30);

/// What a caller may set besides the configuration (tests, the demo).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The configuration file, for SIGHUP reloads.
    pub config_path: Option<PathBuf>,
    /// Health server limits (tests shorten the stream interval).
    pub serve: Option<ServeOptions>,
}

/// The running agent's handles, for the report loop.
struct Running {
    health: HealthState,
    metrics: Arc<Metrics>,
    source_status: Arc<crate::gnss::source::SourceStatus>,
    gnss_view: Arc<Mutex<GnssView>>,
    store: SharedStore,
    uplink: watch::Receiver<UplinkStatus>,
}

/// The uplink, once its settings can be made: a password file or TLS material that cannot
/// be read is a permanent error shown in health; it is retried every `permanent_retry_s`
/// (files are often provisioned after first boot) while fixes keep collecting in the buffer.
/// A reload (`reload`, the `[mqtt]` of each SIGHUP) whose settings differ from the running
/// ones ends the connection as at shutdown and serves on with the new settings.
async fn run_uplink(
    device: String,
    link: Link,
    status: watch::Sender<UplinkStatus>,
    stop: CancellationToken,
    mut reload: watch::Receiver<crate::config::MqttConfig>,
) {
    let mut mqtt = reload.borrow_and_update().clone();
    let settings = loop {
        match PublisherSettings::from_config(&mqtt, &device) {
            Ok(settings) => break settings,
            Err(e) => {
                error!(component = "mqtt", code = e.code(), class = e.class().as_str(), error = %e,
                    "uplink cannot start; fixes are buffered until it can");
                status.send_modify(|s| s.last_error = Some((e.code(), e.to_string())));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(mqtt.permanent_retry()) => {}
                    Ok(()) = reload.changed() => mqtt = reload.borrow_and_update().clone(),
                }
            }
        }
    };
    let mut publisher = Publisher::new(settings, link);
    let mut inner = publisher.status();
    loop {
        status.send_replace(inner.borrow_and_update().clone());
        let session_stop = stop.child_token();
        let current = publisher.settings().clone();
        let mut next = None;
        {
            let serve = publisher.serve(&session_stop);
            tokio::pin!(serve);
            loop {
                tokio::select! {
                    () = &mut serve => break,
                    Ok(()) = inner.changed() => {
                        status.send_replace(inner.borrow_and_update().clone());
                    }
                    Ok(()) = reload.changed(), if next.is_none() => {
                        let new = reload.borrow_and_update().clone();
                        match PublisherSettings::from_config(&new, &device) {
                            Ok(settings) if settings == current => {}
                            Ok(settings) => {
                                info!(component = "mqtt", broker = %new.url,
                                    "SIGHUP: [mqtt] changed; reconnecting with the new settings");
                                next = Some(settings);
                                session_stop.cancel();
                            }
                            Err(e) => {
                                warn!(component = "mqtt", code = e.code(), class = e.class().as_str(),
                                    error = %e, "SIGHUP: [mqtt] not applied; the running connection stays");
                            }
                        }
                    }
                }
            }
        }
        status.send_replace(inner.borrow_and_update().clone());
        let Some(settings) = next.filter(|_| !stop.is_cancelled()) else {
            return;
        };
        publisher.reconfigure(settings);
        // Let the broker finish the old session before the same client id connects again:
        // a broker that keys last wills by client id (rumqttd does) may otherwise fire the
        // new connection's will when the old one's end reaches it late.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RELOAD_SETTLE) => {}
        }
    }
}

/// Runs the agent until `shutdown` is cancelled; returns when everything is committed and
/// the uplink has said goodbye. Errors only for what cannot start at all.
pub async fn run(cfg: Config, opts: RunOptions, shutdown: CancellationToken) -> Result<(), String> {
    let started = Instant::now();
    let health = HealthState::new();
    let metrics = Arc::new(Metrics::with_clock(Arc::clone(health.clock())));
    let server_stop = CancellationToken::new();

    // Health endpoint first, so operators see the agent come up.
    let server_task = match server::bind(&cfg.health.listen).await {
        Ok(listener) => {
            info!(component = "health", listen = %cfg.health.listen, "health endpoint listening");
            let (h, m, t) = (health.clone(), Arc::clone(&metrics), server_stop.clone());
            let options = opts.serve.clone().unwrap_or_default();
            Some(tokio::spawn(server::serve_with(listener, h, m, t, options)))
        }
        Err(e) => {
            error!(component = "health", code = e.code(), class = e.class().as_str(), error = %e,
                "health endpoint not available; the agent runs on without it");
            None
        }
    };

    if cfg.report.mode == crate::config::ReportMode::Adaptive {
        warn!(
            component = "agent",
            code = "CONFIG_UNSUPPORTED",
            "report.mode = \"adaptive\" is not implemented in this version; every accepted fix is sent"
        );
    }

    // The buffer (or the memory queue that waits for it).
    let store = SharedStore::new(Store::open(cfg.buffer.clone(), Instant::now()));

    // The receiver.
    let stop_reading = Arc::new(AtomicBool::new(false));
    let source = spawn_source(&cfg, Arc::clone(&stop_reading))?;
    let source_status = Arc::clone(&source.status);

    // Ingest: decode, validate, append.
    let gnss_view = Arc::new(Mutex::new(GnssView::default()));
    let (reload_tx, reload_rx) = std::sync::mpsc::channel();
    let ingest = Ingest {
        source,
        store: store.clone(),
        metrics: Arc::clone(&metrics),
        view: Arc::clone(&gnss_view),
        stop: Arc::clone(&stop_reading),
        require_checksum: cfg.gnss.require_checksum,
        validate: cfg.validate.clone(),
        reload: reload_rx,
    };
    let ingest_thread = std::thread::Builder::new()
        .name("ingest".into())
        .spawn(move || ingest.run())
        .map_err(|e| format!("cannot start the ingest thread: {e}"))?;

    // Uplink.
    let (uplink_tx, uplink) = watch::channel(UplinkStatus {
        breaker: "closed",
        ..UplinkStatus::default()
    });
    let uplink_stop = CancellationToken::new();
    let link = Link::new(store.clone(), Arc::clone(&metrics)).with_gnss(Arc::clone(&gnss_view));
    let (mqtt_reload_tx, mqtt_reload) = watch::channel(cfg.mqtt.clone());
    let uplink_task = tokio::spawn(run_uplink(
        cfg.device.id.clone(),
        link,
        uplink_tx,
        uplink_stop.clone(),
        mqtt_reload,
    ));
    let reloads = Reloads {
        validate: reload_tx,
        mqtt: mqtt_reload_tx,
    };

    let running = Running {
        health: health.clone(),
        metrics: Arc::clone(&metrics),
        source_status,
        gnss_view,
        store: store.clone(),
        uplink,
    };
    let notifier = crate::notify::Notifier::from_env();
    let watchdog_every = notifier.watchdog_interval();
    let mut last_watchdog: Option<Instant> = None;
    notifier.ready();
    info!(
        component = "agent",
        version = env!("CARGO_PKG_VERSION"),
        systemd = notifier.is_active(),
        device = %cfg.device.id,
        startup_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "agent started"
    );

    // The main loop: report, and react to SIGHUP, until told to stop.
    let mut hup = signal_stream(tokio::signal::unix::SignalKind::hangup());
    // SIGPWR: a UPS or supercap power-fail daemon says the power is going.
    let mut pwr = signal_stream(tokio::signal::unix::SignalKind::from_raw(libc::SIGPWR));
    let mut interval = tokio::time::interval(REPORT_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut current = cfg;
    let mut reported = Reported::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = interval.tick() => {
                let line = report(&running, &mut reported);
                crate::logging::report_suppressed();
                // The watchdog is fed only while the stages really run: a dead ingest thread
                // stops it, and systemd restarts the agent.
                if !ingest_thread.is_finished() {
                    let due = watchdog_every.is_some_and(|every| {
                        last_watchdog.is_none_or(|t| t.elapsed() >= every)
                    });
                    if due {
                        notifier.watchdog();
                        last_watchdog = Some(Instant::now());
                    }
                } else {
                    error!(component = "agent", code = "AGENT_INGEST_DEAD", class = "critical",
                        "ingest thread ended; the watchdog is no longer fed");
                }
                notifier.status(&line);
            }
            Some(()) = recv_signal(&mut hup) => {
                reload(&opts, &mut current, &reloads);
            }
            Some(()) = recv_signal(&mut pwr) => {
                let s = store.clone();
                let synced = tokio::task::spawn_blocking(move || s.lock().power_fail(Instant::now()))
                    .await
                    .ok()
                    .flatten();
                store.notify_committed();
                warn!(component = "buffer", signal = "SIGPWR", synced_seq = synced,
                    "power failing: buffer synced, and every fix is synced at once for 30 s");
            }
        }
    }

    // Shutdown, in the order that loses nothing.
    notifier.stopping();
    notifier.status("stopping: committing the buffer, waiting for acks");
    info!(
        component = "agent",
        "stopping: reading stops, buffer commits, uplink drains"
    );
    stop_reading.store(true, Ordering::Relaxed);
    let accepted = tokio::task::spawn_blocking(move || ingest_thread.join())
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or(0);
    uplink_stop.cancel();
    if let Err(e) = uplink_task.await {
        warn!(component = "mqtt", error = %e, "uplink task ended abnormally");
    }
    let _ = report(&running, &mut reported);
    server_stop.cancel();
    if let Some(t) = server_task {
        let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
    }
    let view = store.lock().view();
    let depth = view.stats.map(|s| s.depth).unwrap_or(0);
    info!(
        component = "agent",
        accepted,
        buffered = depth,
        lost = view.lost,
        "stopped"
    );
    Ok(())
}

fn spawn_source(cfg: &Config, stop: Arc<AtomicBool>) -> Result<SourceHandle, String> {
    let spawned = match cfg.gnss.source {
        SourceKind::Serial => serial::spawn(serial::SerialSettings::from_config(&cfg.gnss), stop),
        SourceKind::File => file::spawn(file::FileSettings::from_config(&cfg.gnss), stop),
    };
    spawned.map_err(|e| format!("cannot start the GNSS source thread: {e}"))
}

type SignalStream = Option<tokio::signal::unix::Signal>;

fn signal_stream(kind: tokio::signal::unix::SignalKind) -> SignalStream {
    match tokio::signal::unix::signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(component = "agent", error = %e, "cannot listen for a signal");
            None
        }
    }
}

async fn recv_signal(s: &mut SignalStream) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Where a SIGHUP reload sends what can change without a restart.
struct Reloads {
    /// Validation thresholds, to the ingest thread.
    validate: std::sync::mpsc::Sender<crate::config::ValidateConfig>,
    /// `[mqtt]`, to the uplink: sent on every SIGHUP, as a password or certificate file may
    /// have changed under the same settings; the uplink reconnects only when they differ.
    mqtt: watch::Sender<crate::config::MqttConfig>,
}

/// Re-read the configuration file: validation thresholds apply now, `[mqtt]` at a
/// reconnect made for it, the rest is logged as needing a restart.
fn reload(opts: &RunOptions, current: &mut Config, to: &Reloads) {
    let Some(path) = &opts.config_path else {
        info!(
            component = "agent",
            "SIGHUP: no configuration file to reload"
        );
        return;
    };
    match crate::config::load(path) {
        Ok(new) => {
            if new.validate != current.validate {
                let _ = to.validate.send(new.validate.clone());
                info!(
                    component = "agent",
                    "SIGHUP: validation thresholds reloaded"
                );
            }
            to.mqtt.send_replace(new.mqtt.clone());
            for (name, changed) in [
                ("device", new.device != current.device),
                ("gnss", new.gnss != current.gnss),
                ("report", new.report != current.report),
                ("buffer", new.buffer != current.buffer),
                ("health", new.health != current.health),
            ] {
                if changed {
                    warn!(
                        component = "agent",
                        section = name,
                        "SIGHUP: this section changed and needs a restart to apply"
                    );
                }
            }
            *current = new;
        }
        Err(e) => {
            warn!(component = "agent", code = e.code(), error = %e,
                "SIGHUP: configuration not reloaded; the running one stays");
        }
    }
}

/// Counters already passed on to metrics (they take deltas).
#[derive(Debug, Default)]
struct Reported {
    evicted: u64,
    lost: u64,
    rescues: crate::buffer::Rescues,
    reconnects: u64,
    outages: u64,
    dropped_chunks: u64,
}

/// Bring health and metrics up to date; heartbeat for `/live`. Returns a one-line summary
/// (systemd's `STATUS=`).
fn report(r: &Running, reported: &mut Reported) -> String {
    let now = r.health.now();
    let gnss = r
        .gnss_view
        .lock()
        .map(|g| g.clone())
        .unwrap_or_else(|p| p.into_inner().clone());

    // GNSS.
    let fresh = gnss
        .last_fix_at
        .is_some_and(|t| now.saturating_duration_since(t) < FIX_STALE_AFTER);
    let fix = match (fresh, gnss.last_fix_mode) {
        (true, Some(crate::fix::FixMode::ThreeD)) => FixState::ThreeD,
        (true, Some(crate::fix::FixMode::TwoD)) => FixState::TwoD,
        _ => FixState::None,
    };
    let gnss_status = if r.source_status.connected() && fresh {
        Status::Healthy
    } else {
        Status::Degraded
    };
    r.health.set_gnss(GnssHealth {
        status: gnss_status,
        fix,
        last_fix_at: gnss.last_fix_at,
        rejected: gnss.rejected,
    });
    let (outages, dropped) = (
        r.source_status.outages() + r.source_status.stuck_events(),
        r.source_status.dropped_chunks(),
    );
    r.metrics.source(
        outages.saturating_sub(reported.outages),
        dropped.saturating_sub(reported.dropped_chunks),
    );
    reported.outages = reported.outages.max(outages);
    reported.dropped_chunks = reported.dropped_chunks.max(dropped);
    if let Some(e) = r.source_status.last_error() {
        let at_ms =
            e.at.duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0);
        r.health.set_error(
            Component::Gnss,
            e.code,
            &e.message,
            crate::fix::format_time_ms(at_ms),
        );
    }

    // Buffer.
    let view = r.store.lock().view();
    let (mut status, mut depth, mut oldest, mut evicted, mut dead, mut bytes) =
        (Status::Healthy, 0, None, 0, 0, 0);
    if let Some(s) = &view.stats {
        depth = s.depth;
        evicted = s.evicted;
        dead = s.dead_letters;
        bytes = s.bytes;
        oldest = s
            .oldest_time
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis());
    }
    if let Some(h) = &view.health {
        status = match h.status {
            crate::buffer::BufferStatus::Healthy => Status::Healthy,
            crate::buffer::BufferStatus::Degraded => Status::Degraded,
            crate::buffer::BufferStatus::Unhealthy => Status::Unhealthy,
        };
        if let Some(e) = &h.last_error {
            r.health
                .set_error(Component::Buffer, e.code, &e.message, e.at.clone());
        }
    }
    if let Some((code, message)) = &view.open_error {
        status = status.max(Status::Degraded);
        depth = view.waiting;
        let at = crate::fix::format_time_ms(chrono::Utc::now().timestamp_millis());
        r.health.set_error(Component::Buffer, code, message, at);
    }
    let uplink = r.uplink.borrow().clone();
    r.health.set_buffer(BufferHealth {
        status,
        depth,
        oldest_time_ms: oldest,
        acked_seq: uplink.acked_seq.unwrap_or(0),
        evicted: evicted + view.dropped_waiting,
        dead_letters: dead,
        in_memory: view.in_memory(),
    });
    r.metrics.set_buffer(depth, bytes);
    let all_evicted = evicted + view.dropped_waiting;
    r.metrics
        .buffer_evicted(all_evicted.saturating_sub(reported.evicted));
    reported.evicted = all_evicted.max(reported.evicted);
    r.metrics
        .buffer_lost(view.lost.saturating_sub(reported.lost));
    reported.lost = view.lost.max(reported.lost);
    let (now_r, was) = (view.rescues, reported.rescues);
    for (code, n, before) in [
        ("BUFFER_FILE_GONE", now_r.restored, was.restored),
        ("BUFFER_CORRUPT", now_r.quarantined, was.quarantined),
        (
            "BUFFER_CORRUPT_RECORD",
            now_r.corrupt_records,
            was.corrupt_records,
        ),
    ] {
        r.metrics.buffer_rescued(code, n.saturating_sub(before));
    }
    reported.rescues = now_r;

    // MQTT.
    let breaker = match uplink.breaker {
        "open" => BreakerState::Open,
        "half_open" => BreakerState::HalfOpen,
        _ => BreakerState::Closed,
    };
    r.health.set_mqtt(MqttHealth {
        status: if uplink.connected {
            Status::Healthy
        } else {
            Status::Degraded
        },
        connected: uplink.connected,
        breaker,
        reconnects: uplink.reconnects,
        last_ack_at: uplink.last_ack_at.map(|t| t.into_std()),
    });
    if let Some((code, message)) = &uplink.last_error {
        let at = crate::fix::format_time_ms(chrono::Utc::now().timestamp_millis());
        r.health.set_error(Component::Mqtt, code, message, at);
    }
    r.metrics.set_breaker(breaker);
    for _ in reported.reconnects..uplink.reconnects {
        r.metrics.reconnected();
    }
    reported.reconnects = reported.reconnects.max(uplink.reconnects);

    r.health.heartbeat();
    format!(
        "fix {}, {} accepted, {} rejected; buffer {} pending; mqtt {}, acked seq {}",
        match fix {
            FixState::ThreeD => "3d",
            FixState::TwoD => "2d",
            FixState::None => "none",
        },
        gnss.accepted,
        gnss.rejected.total(),
        depth,
        if uplink.connected {
            "connected"
        } else {
            "disconnected"
        },
        uplink.acked_seq.unwrap_or(0)
    )
}

/// `gps-agent run`: load the configuration, start the runtime, run until a signal.
pub fn main(config_path: &std::path::Path) -> i32 {
    let cfg = match crate::config::load(config_path) {
        Ok(cfg) => cfg,
        Err(crate::config::ConfigError::Invalid { problems }) => {
            for p in &problems {
                error!(component = "config", code = "CONFIG_INVALID", problem = %p,
                    path = %config_path.display(), "configuration invalid");
                eprintln!("{}: {}", config_path.display(), p);
            }
            return crate::cli::EXIT_CONFIG;
        }
        Err(e) => {
            error!(component = "config", code = e.code(), error = %e, "configuration unreadable");
            eprintln!("{}: {}", config_path.display(), e);
            return crate::cli::EXIT_CONFIG;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("gps-agent")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(component = "agent", error = %e, "cannot start the async runtime");
            return 1;
        }
    };
    let opts = RunOptions {
        config_path: Some(config_path.to_path_buf()),
        serve: None,
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = tokio::spawn(cancel_on_terminate(shutdown.clone()));
        let result = run(cfg, opts, shutdown).await;
        signals.abort();
        match result {
            Ok(()) => 0,
            Err(e) => {
                error!(component = "agent", error = %e, "agent could not start");
                1
            }
        }
    })
}

/// SIGTERM or SIGINT cancel `token` (a second one is left to the default: the agent is
/// already stopping within bounded time).
async fn cancel_on_terminate(token: CancellationToken) {
    use tokio::signal::unix::SignalKind;
    let mut term = signal_stream(SignalKind::terminate());
    let mut int = signal_stream(SignalKind::interrupt());
    tokio::select! {
        Some(()) = recv_signal(&mut term) => info!(component = "agent", signal = "SIGTERM", "shutdown requested"),
        Some(()) = recv_signal(&mut int) => info!(component = "agent", signal = "SIGINT", "shutdown requested"),
    }
    token.cancel();
}
