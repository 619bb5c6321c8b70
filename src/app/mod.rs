//! `gps-agent run`: the stages joined into one agent.
//!
//! ```text
//!  serial port ──read by──> ingest thread ──append──> Store (SQLite buffer + crash journal)
//!  (or a log file's        decode, validate,        │        ▲
//!   reader thread)         report                   │ batches│ acks
//!                                                              ▼        │
//!                                            uplink (Publisher over Link) ──> MQTT broker
//!                                                 requests │ ▲ answers, backfill
//!                                                          ▼ │
//!                                            commands stage (crate::commands, [commands])
//!  each stage publishes its status on the StatusBoard when it changes; /health and /metrics
//!  read the board; the main loop only heartbeats (/live, systemd watchdog) and reloads (on
//!  SIGHUP, and when the commands stage applied or rolled back a configuration).
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
//! thresholds and `[report]` apply at once; a changed `[mqtt]` (broker, credentials, timers,
//! or a certificate or password file replaced under the same path) makes the uplink finish its
//! connection as at shutdown and reconnect with the new settings; other changes are logged
//! as needing a restart.

pub mod config_file;
pub mod ingest;
pub mod lock;

use crate::buffer::store::{SharedStore, Store};
use crate::clock::Clock;
use crate::commands::remote_config::AtStart;
use crate::commands::stage::StageContext;
use crate::config::{GnssSource, MqttSettings, ReportSettings, Settings, ValidateSettings};
use crate::error::Classified;
use crate::gnss::source::{file, serial, SourceHandle};
use crate::health::metrics::Metrics;
use crate::health::server::{self, ServeOptions};
use crate::health::snapshot::status_line;
use crate::status::StatusBoard;
use crate::uplink::link::Link;
use crate::uplink::publisher::{Publisher, PublisherSettings};
use crate::uplink::remote::{self, RemotePort};
use ingest::Ingest;
use lock::{LockError, StateLock};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// How often the main loop shows it is alive (`/live`, systemd's `STATUS=`), when systemd's
/// watchdog does not ask for more often: well inside `/live`'s 30 s, rare enough that an
/// idle agent stays asleep.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// Pause between the connection ended for a `[mqtt]` reload and the new one.
const RELOAD_SETTLE: Duration = Duration::from_millis(500);

/// What a caller may set besides the configuration (tests, the demo).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The configuration file, for SIGHUP reloads.
    pub config_path: Option<PathBuf>,
    /// Health server limits (tests shorten the stream interval).
    pub serve: Option<ServeOptions>,
    /// The agent's clock; the system's when `None`.
    pub clock: Option<Clock>,
    /// What the start found owed of a configuration set remotely (see
    /// [`crate::commands::remote_config::recover`], run before the file was read).
    pub remote_config: Option<AtStart>,
    /// The configuration file's text as read at start (what `config.get` answers until a
    /// reload puts another in force).
    pub config_text: Option<String>,
}

/// The uplink, once its settings can be made: a password file or TLS material that cannot
/// be read is a permanent error shown in health; it is retried every `permanent_retry_s`
/// (files are often provisioned after first boot) while fixes keep collecting in the buffer.
/// A reload (`reload`, the `[mqtt]` of each SIGHUP) whose settings differ from the running
/// ones ends the connection as at shutdown and serves on with the new settings.
async fn run_uplink(
    device: String,
    link: Link,
    board: StatusBoard,
    stop: CancellationToken,
    mut reload: watch::Receiver<MqttSettings>,
    remote: Option<RemotePort>,
) {
    let mut mqtt = reload.borrow_and_update().clone();
    let settings = loop {
        match PublisherSettings::from_settings(&mqtt, &device) {
            Ok(settings) => break settings,
            Err(e) => {
                error!(component = "mqtt", code = e.code(), class = e.class().as_str(), error = %e,
                    "uplink cannot start; fixes are buffered until it can");
                let error = board.error_now(&e);
                board.mqtt(|m| m.last_error = Some(error));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(mqtt.permanent_retry) => {}
                    Ok(()) = reload.changed() => mqtt = reload.borrow_and_update().clone(),
                }
            }
        }
    };
    let mut publisher = Publisher::new(settings, link, board);
    if let Some(port) = remote {
        publisher = publisher.with_remote(port);
    }
    loop {
        let session_stop = stop.child_token();
        let current = publisher.settings().clone();
        let mut next = None;
        {
            let serve = publisher.serve(&session_stop);
            tokio::pin!(serve);
            loop {
                tokio::select! {
                    () = &mut serve => break,
                    Ok(()) = reload.changed(), if next.is_none() => {
                        let new = reload.borrow_and_update().clone();
                        match PublisherSettings::from_settings(&new, &device) {
                            Ok(settings) if settings == current => {
                                info!(component = "mqtt",
                                    "SIGHUP: [mqtt] unchanged; the connection stays");
                            }
                            Ok(settings) => {
                                info!(component = "mqtt", broker = %new.broker,
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

/// Why the agent did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another agent runs on this buffer (see [`lock`]).
    #[error(transparent)]
    Locked(LockError),
    /// A stage's thread could not be started.
    #[error("{0}")]
    Stage(String),
}

impl Classified for StartError {
    fn code(&self) -> &'static str {
        match self {
            StartError::Locked(e) => e.code(),
            StartError::Stage(_) => "AGENT_START",
        }
    }

    fn class(&self) -> crate::error::ErrorClass {
        match self {
            StartError::Locked(e) => e.class(),
            StartError::Stage(_) => crate::error::ErrorClass::Critical,
        }
    }
}

/// Runs the agent until `shutdown` is cancelled; returns when everything is committed and
/// the uplink has said goodbye. Errors only for what cannot start at all: before anything
/// else, the state lock ([`lock`]): another agent on this buffer stops this one at once.
pub async fn run(
    cfg: Settings,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let started = Instant::now();
    let mut state_lock = match StateLock::acquire(&cfg.buffer.path) {
        Ok((lock, None)) => lock,
        Ok((lock, Some(e))) => {
            error!(component = "agent", code = e.code(), class = e.class().as_str(), error = %e,
                "running without the state lock; tried again at each heartbeat");
            lock
        }
        Err(e) => return Err(StartError::Locked(e)),
    };
    let board = StatusBoard::new(opts.clock.clone().unwrap_or_default());
    let metrics = Arc::new(Metrics::new(board.clone()));
    let server_stop = CancellationToken::new();

    // Health endpoint first, so operators see the agent come up.
    let server_task = match server::bind(cfg.health.listen).await {
        Ok(listener) => {
            let (b, m, t) = (board.clone(), Arc::clone(&metrics), server_stop.clone());
            let options = opts.serve.clone().unwrap_or_default();
            Some(tokio::spawn(server::serve_with(listener, b, m, t, options)))
        }
        Err(e) => {
            error!(component = "health", code = e.code(), class = e.class().as_str(), error = %e,
                "health endpoint not available; the agent runs on without it");
            None
        }
    };

    // The buffer (or the memory queue that waits for it).
    let store = SharedStore::new(Store::open(
        cfg.buffer.clone(),
        board.clone(),
        Instant::now(),
    ));

    // The receiver.
    let stop_reading = Arc::new(AtomicBool::new(false));
    let source = spawn_source(&cfg, Arc::clone(&stop_reading)).map_err(StartError::Stage)?;

    // Ingest: decode, validate, append.
    let (reload_tx, reload_rx) = std::sync::mpsc::channel();
    let (report_reload_tx, report_reload_rx) = std::sync::mpsc::channel();
    let ingest = Ingest {
        source,
        store: store.clone(),
        metrics: Arc::clone(&metrics),
        board: board.clone(),
        stop: Arc::clone(&stop_reading),
        require_checksum: cfg.gnss.require_checksum,
        validate: cfg.validate.clone(),
        reload: reload_rx,
        report: cfg.report.clone(),
        report_reload: report_reload_rx,
    };
    let ingest_thread = std::thread::Builder::new()
        .name("ingest".into())
        .spawn(move || ingest.run())
        .map_err(|e| StartError::Stage(format!("cannot start the ingest thread: {e}")))?;

    // Uplink.
    let uplink_stop = CancellationToken::new();
    let link = Link::new(store.clone(), Arc::clone(&metrics), board.clock().clone());
    let (mqtt_reload_tx, mqtt_reload) = watch::channel(cfg.mqtt.clone());
    // Remote commands (`[commands] enabled`): their stage, and its seam into the uplink.
    let (apply_tx, mut apply_rx) = tokio::sync::mpsc::channel::<()>(1);
    let (in_force_tx, in_force) = watch::channel(opts.config_text.clone().map(|text| {
        Arc::new(config_file::Loaded {
            settings: cfg.clone(),
            text,
        })
    }));
    let commands_stop = CancellationToken::new();
    let (port, commands_task) = if cfg.commands.enabled {
        let (port, stage) = remote::pair();
        let ctx = StageContext {
            settings: cfg.clone(),
            config_path: opts.config_path.clone(),
            store: store.clone(),
            board: board.clone(),
            metrics: Arc::clone(&metrics),
            apply: apply_tx,
            in_force,
            at_start: opts.remote_config.clone().unwrap_or(AtStart::Nothing),
        };
        let task = tokio::spawn(crate::commands::stage::run(
            ctx,
            stage,
            commands_stop.clone(),
        ));
        (Some(port), Some(task))
    } else {
        (None, None)
    };
    let uplink_task = tokio::spawn(run_uplink(
        cfg.device.id.clone(),
        link,
        board.clone(),
        uplink_stop.clone(),
        mqtt_reload,
        port,
    ));
    let reloads = Reloads {
        validate: reload_tx,
        report: report_reload_tx,
        mqtt: mqtt_reload_tx,
        in_force: in_force_tx,
    };

    let notifier = crate::notify::Notifier::from_env();
    let heartbeat_every = notifier
        .watchdog_interval()
        .map_or(HEARTBEAT_EVERY, |w| w.min(HEARTBEAT_EVERY));
    notifier.ready();
    info!(
        component = "agent",
        version = env!("CARGO_PKG_VERSION"),
        systemd = notifier.is_active(),
        device = %cfg.device.id,
        startup_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "agent started"
    );

    // The main loop: heartbeat, tell systemd what changed, react to SIGHUP, until told to
    // stop. The stages publish their own state; nothing here polls them.
    let mut hup = signal_stream(tokio::signal::unix::SignalKind::hangup());
    let mut heartbeat = tokio::time::interval(heartbeat_every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changes = board.subscribe();
    // SIGPWR: a UPS or supercap power-fail daemon says the power is going.
    let mut pwr = signal_stream(tokio::signal::unix::SignalKind::from_raw(libc::SIGPWR));
    let mut current = cfg;
    let mut ingest_dead_reported = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = heartbeat.tick() => {
                board.heartbeat();
                if let Err(e) = state_lock.refresh() {
                    error!(component = "agent", code = e.code(), class = e.class().as_str(),
                        error = %e, "the state lock is not held");
                }
                crate::logging::report_suppressed();
                // The watchdog is fed only while the stages really run: a dead ingest thread
                // stops it, and systemd restarts the agent.
                if !ingest_thread.is_finished() {
                    notifier.watchdog();
                } else if !ingest_dead_reported {
                    ingest_dead_reported = true;
                    error!(component = "agent", code = "AGENT_INGEST_DEAD", class = "critical",
                        "ingest thread ended; the watchdog is no longer fed");
                }
                notifier.status(&status_line(&board.read(), board.clock()));
            }
            Ok(()) = changes.changed() => {
                changes.borrow_and_update();
                notifier.status(&status_line(&board.read(), board.clock()));
            }
            Some(()) = recv_signal(&mut hup) => {
                reload(&opts, &mut current, &reloads);
            }
            Some(()) = apply_rx.recv() => {
                // A configuration set remotely (or rolled back): applied as SIGHUP does.
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
    commands_stop.cancel();
    if let Some(t) = commands_task {
        let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
    }
    server_stop.cancel();
    if let Some(t) = server_task {
        let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
    }
    let (depth, lost) = {
        let store = store.lock();
        (store.depth(), store.lost())
    };
    info!(
        component = "agent",
        accepted,
        buffered = depth,
        lost,
        "stopped"
    );
    Ok(())
}

fn spawn_source(cfg: &Settings, stop: Arc<AtomicBool>) -> Result<SourceHandle, String> {
    let spawned = match &cfg.gnss.source {
        // Read by the ingest thread itself: one wake per epoch, not two.
        GnssSource::Serial { path, baud } => Ok(serial::direct(serial::SerialSettings::new(
            path.clone(),
            *baud,
            cfg.gnss.stuck_after,
        ))),
        GnssSource::File { path, pace } => file::spawn(
            file::FileSettings {
                path: path.clone(),
                pace: *pace,
            },
            stop,
        ),
    };
    spawned.map_err(|e| format!("cannot start the GNSS source thread: {e}"))
}

pub(crate) type SignalStream = Option<tokio::signal::unix::Signal>;

pub(crate) fn signal_stream(kind: tokio::signal::unix::SignalKind) -> SignalStream {
    match tokio::signal::unix::signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(component = "agent", error = %e, "cannot listen for a signal");
            None
        }
    }
}

pub(crate) async fn recv_signal(s: &mut SignalStream) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Where a SIGHUP reload sends what can change without a restart.
struct Reloads {
    /// Validation thresholds, to the ingest thread.
    validate: std::sync::mpsc::Sender<ValidateSettings>,
    /// `[report]`, to the ingest thread.
    report: std::sync::mpsc::Sender<ReportSettings>,
    /// `[mqtt]`, to the uplink: sent on every SIGHUP, as a password or certificate file may
    /// have changed under the same settings; the uplink reconnects only when they differ.
    mqtt: watch::Sender<MqttSettings>,
    /// The file in force, its settings and text, to the commands stage (`config.get`
    /// answers it, not the file on disk, which may have been edited since).
    in_force: watch::Sender<Option<Arc<config_file::Loaded>>>,
}

/// Re-read the configuration file: validation thresholds and `[report]` apply now, `[mqtt]`
/// at a reconnect made for it, the rest is logged as needing a restart.
fn reload(opts: &RunOptions, current: &mut Settings, to: &Reloads) {
    let Some(path) = &opts.config_path else {
        info!(
            component = "agent",
            "SIGHUP: no configuration file to reload"
        );
        return;
    };
    match config_file::load(path) {
        Ok(loaded) => {
            let new = loaded.settings.clone();
            to.in_force.send_replace(Some(Arc::new(loaded)));
            if new.validate != current.validate {
                let _ = to.validate.send(new.validate.clone());
                info!(
                    component = "agent",
                    "SIGHUP: validation thresholds reloaded"
                );
            }
            if new.report != current.report {
                let _ = to.report.send(new.report.clone());
                info!(component = "agent", mode = ?new.report.mode,
                    "SIGHUP: [report] reloaded; fixes pending under the old rules are kept");
            }
            to.mqtt.send_replace(new.mqtt.clone());
            for (name, changed) in [
                ("device", new.device != current.device),
                ("gnss", new.gnss != current.gnss),
                ("buffer", new.buffer != current.buffer),
                ("health", new.health != current.health),
                ("commands", new.commands != current.commands),
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
