//! The publisher: the async loop that moves fixes from a [`FixSource`] (the buffer) to the
//! broker and reports back what was acknowledged.
//!
//! One connection at a time. For each connection a fresh rumqttc client and event loop are
//! made (clean session) and dropped when the link breaks, so rumqttc never replays its own
//! copies of messages behind the [`AckWindow`]; the window releases every unacknowledged fix
//! back to the source instead. When to connect, and when to probe the network path instead,
//! and through which of the broker's endpoints (`url`, then `fallback_urls`), is
//! [`Reconnect`]'s decision: reachability probes while the path is down, backoff and the
//! breaker while the broker refuses; a stalled connection whose path went away and came back
//! is replaced at once ([`StallWatch`]). It publishes a retained `online` status after
//! connecting; `offline` is the last will and is published on a clean shutdown. Nothing else
//! goes over the uplink: no periodic status, no metrics.
//!
//! **Linger**: a live fix waits up to `linger` to share a message with later ones (on a
//! cellular link a message costs about 230 bytes of MQTT, TLS and TCP/IP on top of its
//! payload). Whatever is pending when a connection comes up, and any fix older than `linger`
//! by the receiver's clock (a backlog), goes at once. **Size**: messages are capped at what
//! the broker was seen to take ([`MessageLimit`]), learned from the links it drops.
//!
//! It never acknowledges a fix without its PUBACK, never holds more than `window` messages,
//! and never exits on a link failure: only the shutdown token ends [`Publisher::run`].

use crate::config::{BrokerUrl, MqttSettings, PayloadFormat};
use crate::error::{Classified, ErrorClass};
use crate::fix::Fix;
use crate::status::{MqttStatus, PathState, StatusBoard};
use crate::uplink::acks::{AckWindow, Acked};
use crate::uplink::backoff::{BackoffPolicy, Jitter, Xorshift64};
use crate::uplink::breaker::BreakerPolicy;
use crate::uplink::cbor;
use crate::uplink::error::{Phase, UplinkError};
use crate::uplink::limit::{MessageLimit, Unacked, Verdict};
use crate::uplink::payload::{self, status_payload, Encoded, FixBatch, LinkState, Topics};
use crate::uplink::reconnect::{
    Ending, ProbePolicy, Reconnect, ReconnectPolicy, StallWatch, Step, Watch, PROBE_TIMEOUT,
    STALL_AFTER,
};
use crate::uplink::tls::{client_config, TlsSettings};
use rumqttc::{
    AsyncClient, ConnectionError, Event, Incoming, LastWill, MqttOptions, Outgoing, QoS,
    TlsConfiguration, Transport,
};
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use crate::uplink::limit::REJECTED_AFTER_DISCONNECTS;

/// Where fixes come from and where their fate goes: the buffer implements this.
///
/// A fix handed out by `next_batch` is "in flight" until it is acked, released or
/// dead-lettered; `next_batch` must not hand it out again before that.
pub trait FixSource: Send {
    type Error: Classified + std::error::Error + Send + Sync + 'static;

    /// The buffer's stream id (`stream` in payloads).
    fn stream(&self) -> String;

    /// Up to `max` pending fixes that are not in flight, oldest first; empty when none.
    fn next_batch(
        &mut self,
        max: usize,
    ) -> impl Future<Output = Result<Vec<(u64, Fix)>, Self::Error>> + Send;

    /// The last `next_batch` handed out everything pending at the time: asking again at once
    /// would find nothing new (fixes stored since show through `fixes_pending`). `false` when
    /// unknown, and after a batch that left fixes behind.
    fn drained(&self) -> bool {
        false
    }

    /// Resolves when `next_batch` may have something new (a fix was stored). May resolve
    /// spuriously; the publisher also retries on its own every `idle_poll`.
    fn fixes_pending(&mut self) -> impl Future<Output = ()> + Send;

    /// The broker acknowledged these seqs: they may leave the buffer.
    fn ack(&mut self, seqs: &[u64]) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// These seqs were not acknowledged (link broke): pending again.
    fn release(&mut self, seqs: &[u64]) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// One message carrying `fixes` fixes was handed to the broker connection (for metrics;
    /// a batch may go out as several messages, or not at all).
    fn published(&mut self, fixes: usize) {
        let _ = fixes;
    }

    /// The broker will never take this fix: set it aside, counted.
    fn dead_letter(
        &mut self,
        seq: u64,
        why: &UplinkError,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// A password: its `Debug` and `Display` never show it, so it cannot reach a log line or a
/// panic message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(text: impl Into<String>) -> Self {
        Password(text.into())
    }

    /// The password itself, for the CONNECT packet only.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// The first line of `path` (a trailing newline is not part of the password). Errors
    /// name the file, never its contents.
    pub fn from_file(path: &Path) -> Result<Self, UplinkError> {
        use std::io::Read;
        // A password file is a line; a wrong path (a log, a device) must not be read whole.
        const MAX_BYTES: u64 = 64 * 1024;
        let fail = |why: String| UplinkError::TlsConfig {
            path: path.to_path_buf(),
            why,
        };
        let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        let mut text = String::new();
        file.take(MAX_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| fail(e.to_string()))?;
        let line = text.lines().next().unwrap_or_default();
        if line.is_empty() {
            return Err(fail("the password file is empty".into()));
        }
        Ok(Password(line.to_owned()))
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// The rustls client configuration built once from the settings' TLS files. Reused by every
/// connection, so rustls' session cache lets a reconnect resume the last TLS session (no
/// certificate chain on the wire, one round trip less). Always equal in comparisons: what it
/// is made of is `TlsSettings` and `tls_files`.
#[derive(Clone, Default)]
pub struct TlsClient(Option<Arc<rustls::ClientConfig>>);

impl TlsClient {
    pub fn config(&self) -> Option<&Arc<rustls::ClientConfig>> {
        self.0.as_ref()
    }
}

impl PartialEq for TlsClient {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "TlsClient(built)"
        } else {
            "TlsClient(none)"
        })
    }
}

/// Everything the publisher needs to know: the checked `[mqtt]` settings
/// ([`PublisherSettings::from_settings`]) with the password and TLS material read.
#[derive(Debug, Clone, PartialEq)]
pub struct PublisherSettings {
    /// `mqtt.url`: the broker's first endpoint.
    pub broker: BrokerUrl,
    /// `mqtt.fallback_urls`: its further endpoints, tried in turn after `broker`.
    pub fallback: Vec<BrokerUrl>,
    pub client_id: String,
    pub device: String,
    pub topic_prefix: String,
    /// User name and password sent in CONNECT.
    pub credentials: Option<(String, Password)>,
    /// CA, client certificate and server name for `mqtts://`; ignored for `mqtt://`.
    pub tls: TlsSettings,
    /// [`TlsSettings::files_fingerprint`] when the settings were made: settings equal but
    /// for this mean a file was replaced under its path.
    pub tls_files: u64,
    /// The client configuration built from `tls` (for `mqtts://`).
    pub tls_client: TlsClient,
    /// Fixes taken from the source per message (before splitting by size).
    pub batch_max: usize,
    /// Largest payload of one message.
    pub max_message_bytes: usize,
    /// JSON (`v` 1) or the compact CBOR (`v` 2).
    pub payload: PayloadFormat,
    /// Messages between publish and PUBACK.
    pub window: u16,
    /// A message without PUBACK this long means the link is broken.
    pub puback_timeout: Duration,
    /// TCP, TLS and CONNECT together must be done (CONNACK received) within this; whole
    /// seconds, at least one (rumqttc's resolution).
    pub connect_timeout: Duration,
    pub keep_alive: Duration,
    /// How long a live fix may wait for company; zero sends each at once.
    pub linger: Duration,
    /// Reachability probes while the path to the broker is down.
    pub probe: ProbePolicy,
    pub backoff: BackoffPolicy,
    pub breaker: BreakerPolicy,
    /// Wait after a permanent failure (bad credentials, refused client id).
    pub permanent_retry: Duration,
    /// At shutdown, how long to wait for PUBACKs of messages in flight.
    pub shutdown_grace: Duration,
    /// How often to ask the source again when it said nothing is pending.
    pub idle_poll: Duration,
    /// Beyond the liveness bound, how long a probe or an attempt and its wind-down may take
    /// before `/health` calls the uplink wedged ([`PublisherSettings::wedge_after`]).
    pub wedge_margin: Duration,
}

impl PublisherSettings {
    /// The defaults of `[mqtt]` for a device named `device` talking to `url` (tests, tools);
    /// the password and TLS files of the defaults are none, so only the URL can fail.
    pub fn new(url: &str, device: &str) -> Result<Self, UplinkError> {
        let broker = BrokerUrl::parse(url).map_err(|why| UplinkError::BadUrl {
            url: url.to_owned(),
            why,
        })?;
        Self::from_settings(&MqttSettings::for_broker(broker, device), device)
    }

    /// From checked `[mqtt]` settings. Reads the password file and builds the TLS
    /// configuration once, so a missing or broken file is reported at start-up
    /// (`MQTT_TLS_CONFIG`, permanent) rather than on every reconnect.
    pub fn from_settings(mqtt: &MqttSettings, device: &str) -> Result<Self, UplinkError> {
        let credentials = match (&mqtt.username, &mqtt.password_file) {
            (Some(user), Some(path)) => Some((user.clone(), Password::from_file(path)?)),
            (Some(user), None) => Some((user.clone(), Password::new(""))),
            (None, _) => None,
        };
        let tls = TlsSettings {
            ca_file: mqtt.ca_file.clone(),
            client_cert: mqtt.client_cert.clone(),
            client_key: mqtt.client_key.clone(),
            server_name: mqtt.server_name.clone(),
        };
        let tls_client = if mqtt.broker.tls {
            TlsClient(Some(client_config(&tls)?))
        } else {
            TlsClient(None)
        };
        let backoff_max = mqtt.backoff_max.max(mqtt.backoff_initial);
        Ok(PublisherSettings {
            broker: mqtt.broker.clone(),
            fallback: mqtt.fallback.clone(),
            client_id: mqtt.client_id.clone(),
            device: device.to_owned(),
            topic_prefix: mqtt.topic_prefix.clone(),
            credentials,
            tls_files: tls.files_fingerprint(),
            tls,
            tls_client,
            batch_max: mqtt.batch_max.get(),
            max_message_bytes: mqtt.max_message_bytes,
            payload: mqtt.payload,
            window: mqtt.inflight.get(),
            puback_timeout: mqtt.puback_timeout,
            connect_timeout: CONNECT_TIMEOUT,
            keep_alive: mqtt.keep_alive,
            linger: mqtt.linger,
            probe: ProbePolicy {
                interval: mqtt.probe_interval,
                max: mqtt.probe_max.max(mqtt.probe_interval),
            },
            backoff: BackoffPolicy {
                initial: mqtt.backoff_initial,
                max: backoff_max,
                reset_after: mqtt.backoff_reset_after,
            },
            // The breaker's pause grows to the backoff's ceiling: a broker that keeps
            // refusing is tried at most 3600 / backoff_max_s times an hour.
            breaker: BreakerPolicy {
                failure_threshold: mqtt.failure_threshold,
                open_for: mqtt.open_for,
                open_max: backoff_max,
            },
            permanent_retry: mqtt.permanent_retry,
            shutdown_grace: SHUTDOWN_GRACE,
            idle_poll: IDLE_POLL,
            wedge_margin: WEDGE_MARGIN,
        })
    }

    fn reconnect_policy(&self) -> ReconnectPolicy {
        ReconnectPolicy {
            probe: self.probe,
            backoff: self.backoff,
            breaker: self.breaker,
            permanent_retry: self.permanent_retry,
            endpoints: 1 + self.fallback.len(),
        }
    }

    /// Not connected and no probe or attempt begun for longer than this: wedged
    /// (`MQTT_WEDGED` in `/health`). The liveness bound of the reconnect policy plus
    /// `wedge_margin`.
    pub fn wedge_after(&self) -> Duration {
        self.reconnect_policy()
            .longest_wait()
            .saturating_add(self.wedge_margin)
    }

    /// Endpoint `i` of the broker: `broker`, then `fallback` (wrapping around).
    pub fn endpoint(&self, i: usize) -> &BrokerUrl {
        let n = 1 + self.fallback.len();
        match i % n {
            0 => &self.broker,
            k => self.fallback.get(k - 1).unwrap_or(&self.broker),
        }
    }
}

/// Beyond the liveness bound, what a probe (5 s), an attempt (5 s) and the wind-down of a
/// session (reading rumqttc's last events, releasing fixes to the buffer) may take before
/// the uplink counts as wedged.
const WEDGE_MARGIN: Duration = Duration::from_secs(60);
/// How long a full attempt may take, from TCP to CONNACK: rumqttc's default.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// At shutdown, how long to wait for PUBACKs of messages in flight (and for `offline`).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often to ask the buffer again when it said nothing is pending (a wake-up is also
/// sent after every commit).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// While live fixes wait for company, the source is asked for more (not at every commit)
/// when the held fixes' pace says a full message (`batch_max` fixes) may be waiting, but no
/// sooner than this: seldom enough that a 10 Hz receiver does not wake the uplink ten times
/// a second, and a 1 Hz one not thirty times for each message it lingers for.
const HOLD_TOP_UP: Duration = Duration::from_secs(2);

/// A reachability probe: a TCP connection to the broker's port, closed at once with a reset
/// (no TLS, no MQTT, no FIN exchange: four segments, about 220 bytes on the wire, none when the
/// path is down). True when some address of the host accepted it within [`PROBE_TIMEOUT`];
/// a name that does not resolve is a path that is down.
pub async fn probe(host: String, port: u16) -> bool {
    let attempt = async move {
        let addrs = tokio::net::lookup_host((host.as_str(), port)).await.ok()?;
        for addr in addrs {
            if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
                // A reset rather than a FIN: the broker learns nothing but a closed socket
                // either way, and the exchange is two segments shorter.
                let _ = stream.set_zero_linger();
                return Some(());
            }
        }
        None
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, attempt).await,
        Ok(Some(()))
    )
}

/// What one session was like, for pacing the next.
#[derive(Debug, Default, Clone, Copy)]
struct SessionFacts {
    /// When CONNACK came.
    connected_at: Option<Instant>,
    /// A fixes message was acknowledged.
    delivered: bool,
    /// Any message (the status too) was acknowledged.
    proven: bool,
}

/// How a session failed, and what that means for the next attempt.
#[derive(Debug)]
struct Failure {
    error: UplinkError,
    ending: Ending,
}

/// How one connection ended.
enum SessionEnd {
    Shutdown,
    Failed(Failure),
}

/// What pacing makes of an error that ended an attempt or a session.
fn ending_of(error: &UplinkError, facts: &SessionFacts, reset_after: Duration) -> Ending {
    if error.class() == ErrorClass::Permanent {
        return Ending::Permanent;
    }
    match error {
        // TCP never got through (refused, unreachable, DNS, timed out in the kernel); a
        // connection accepted (and TLS, if the front end terminates it) and then closed or
        // reset before CONNACK, nothing of MQTT received, is a front end whose broker is down.
        // (A TLS alert or certificate error is `Tls`, a CONNACK refusal `Auth`, `Refused`
        // or `Unavailable`: the broker's, below.)
        UplinkError::Connect { source, .. } => {
            use std::io::ErrorKind as K;
            match source.kind() {
                K::ConnectionReset | K::ConnectionAborted | K::UnexpectedEof | K::BrokenPipe => {
                    Ending::Unserved
                }
                _ => Ending::Unreachable,
            }
        }
        UplinkError::Timeout { .. } | UplinkError::AckTimeout { .. } => Ending::Stalled,
        UplinkError::Io { .. } => {
            let lasted = facts.connected_at.map_or(Duration::ZERO, |at| {
                Instant::now().saturating_duration_since(at)
            });
            if facts.delivered || lasted >= reset_after {
                Ending::Dropped
            } else {
                // Closed right after connecting, nothing delivered: the broker is refusing.
                Ending::Broker
            }
        }
        UplinkError::Stalled { .. } => Ending::PathReturned,
        UplinkError::BrokerLimit { .. } => Ending::Narrowed,
        _ => Ending::Broker,
    }
}

pub struct Publisher<S: FixSource> {
    settings: PublisherSettings,
    source: S,
    topics: Topics,
    reconnect: Reconnect,
    /// What the broker was seen to take: caps each message's payload.
    limit: MessageLimit,
    /// The TLS client configuration and the fingerprint of the files it was made from:
    /// reused by every connection (session resumption), made again when a file changed.
    tls: Option<(u64, Arc<rustls::ClientConfig>)>,
    /// Where the uplink publishes its state (`components.mqtt`).
    board: StatusBoard,
    connections: u64,
    /// Live fixes taken from the source and waiting for company (in flight for the source
    /// until published or released).
    held: Vec<(u64, Fix)>,
    /// When the first of `held` has waited `linger`.
    held_due: Option<Instant>,
    /// The stream the source was last asked about: the source hands out only fixes of the
    /// stream it last told, and every message is labelled with it.
    stream: String,
}

impl<S: FixSource> Publisher<S> {
    pub fn new(settings: PublisherSettings, source: S, board: StatusBoard) -> Self {
        let reconnect = Reconnect::new(
            settings.reconnect_policy(),
            Jitter::Full(Xorshift64::from_entropy()),
        );
        let p = Publisher {
            topics: Topics::new(&settings.topic_prefix, &settings.device),
            limit: MessageLimit::new(settings.max_message_bytes),
            tls: tls_of(&settings),
            settings,
            source,
            reconnect,
            board,
            connections: 0,
            held: Vec::new(),
            held_due: None,
            stream: String::new(),
        };
        let wedge_after = p.settings.wedge_after();
        p.show(None, |m| {
            m.message_limit = None;
            m.wedge_after = Some(wedge_after);
        });
        p
    }

    /// New settings for the next [`Publisher::serve`] (a SIGHUP reload): topics, pacing, the
    /// breaker and the learned message limit start afresh from them, as in
    /// [`Publisher::new`]; the connection count and the acks go on, and the last error is
    /// cleared.
    pub fn reconfigure(&mut self, settings: PublisherSettings) {
        self.topics = Topics::new(&settings.topic_prefix, &settings.device);
        self.reconnect = Reconnect::new(
            settings.reconnect_policy(),
            Jitter::Full(Xorshift64::from_entropy()),
        );
        self.limit = MessageLimit::new(settings.max_message_bytes);
        self.tls = tls_of(&settings);
        self.settings = settings;
        let wedge_after = self.settings.wedge_after();
        self.show(None, |m| {
            m.last_error = None;
            m.message_limit = None;
            m.wedge_after = Some(wedge_after);
        });
    }

    pub fn settings(&self) -> &PublisherSettings {
        &self.settings
    }

    /// The endpoint in use: connected to, or where the next probe or attempt goes.
    fn broker(&self) -> &BrokerUrl {
        self.settings.endpoint(self.reconnect.endpoint())
    }

    /// Replace the jitter source (tests turn it off or seed it).
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.reconnect = Reconnect::new(self.settings.reconnect_policy(), jitter);
        self
    }

    /// Publish until `shutdown` is cancelled; returns the source (nothing left in flight).
    pub async fn run(mut self, shutdown: CancellationToken) -> S {
        self.serve(&shutdown).await;
        self.source
    }

    /// As [`Publisher::run`], keeping the publisher, so that it can be
    /// [reconfigured](Publisher::reconfigure) and served again.
    pub async fn serve(&mut self, shutdown: &CancellationToken) {
        let mut step = self.reconnect.first(Instant::now());
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            self.show(Some(step), |_| {});
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(step.at()) => {}
            }
            step = match step {
                Step::Probe { .. } => {
                    let at = self.board.clock().now();
                    self.show(None, |m| m.last_try_at = Some(at));
                    let probed = self.broker().clone();
                    let reachable = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = probe(probed.host.clone(), probed.port) => r,
                    };
                    let before = self.reconnect.path();
                    let outage = self.reconnect.outage_since();
                    let next = self.reconnect.on_probe(Instant::now(), reachable);
                    self.count_probe(reachable);
                    match (before, self.reconnect.path()) {
                        (PathState::Down, PathState::Up) => info!(
                            broker = %probed,
                            outage_ms = outage.map_or(0, |since| millis(since.elapsed())),
                            "broker reachable again; connecting"
                        ),
                        (b, PathState::Down) if b != PathState::Down => info!(
                            broker = %probed,
                            "broker unreachable; probing its port until it answers"
                        ),
                        _ => debug!(reachable, "probe"),
                    }
                    next
                }
                Step::Connect { .. } => match self.reconnect.attempt(Instant::now()) {
                    Some(later) => later,
                    None => {
                        let at = self.board.clock().now();
                        self.show(None, |m| {
                            m.connect_attempts += 1;
                            m.last_try_at = Some(at);
                        });
                        match self.session(shutdown).await {
                            SessionEnd::Shutdown => return,
                            SessionEnd::Failed(failure) => self.after_failure(failure),
                        }
                    }
                },
            };
        }
    }

    /// Pace the next step after a failed attempt or session, say so in the log and on the
    /// board.
    fn after_failure(&mut self, failure: Failure) -> Step {
        let now = Instant::now();
        let failed = self.broker().clone();
        let step = self.reconnect.on_end(now, failure.ending);
        let err = &failure.error;
        warn!(
            code = err.code(),
            class = err.class().as_str(),
            broker = %failed,
            endpoint = %self.broker(),
            ending = ?failure.ending,
            next = match step { Step::Probe { .. } => "probe", Step::Connect { .. } => "connect" },
            retry_in_ms = millis(step.at().saturating_duration_since(now)),
            breaker = self.reconnect.breaker().as_str(),
            error = %err,
            "uplink failed"
        );
        let error = self.board.error_now(err);
        let at = self.board.clock().now();
        // One update: a reader never sees the new error beside the old retry time.
        self.show(Some(step), |m| {
            m.connected = false;
            m.last_error = Some(error);
            m.last_try_at = Some(at);
        });
        step
    }

    /// What `/health` shows of the pacing: the breaker, the path and when `next` (the step
    /// the loop is about to wait for, the very wait it then sleeps) is due, read from the
    /// machine in one piece ([`Reconnect::pacing`]); `more` changes in the same update. The
    /// only place these three are written, after every change of the machine, so they never
    /// disagree with it or with each other.
    fn show(&self, next: Option<Step>, more: impl FnOnce(&mut MqttStatus)) {
        let pacing = self.reconnect.pacing(next);
        let now = Instant::now();
        let retry_at = pacing
            .next_at
            .map(|at| self.board.clock().now() + at.saturating_duration_since(now));
        let endpoint = self.settings.endpoint(pacing.endpoint).to_string();
        self.board.mqtt(|m| {
            m.breaker = pacing.breaker;
            m.path = pacing.path;
            m.retry_at = retry_at;
            m.endpoint = endpoint;
            more(m);
        });
    }

    /// A probe ended: counted (the path it found is shown with the next step).
    fn count_probe(&self, reachable: bool) {
        self.board.mqtt(|m| {
            if reachable {
                m.probes_ok += 1;
            } else {
                m.probes_failed += 1;
            }
        });
    }

    /// The TLS configuration for the next connection: the one made before, unless a CA,
    /// certificate or key file changed since (a renewed certificate is used at the next
    /// reconnect without a restart).
    fn tls_config(&mut self) -> Result<Arc<rustls::ClientConfig>, UplinkError> {
        let files = self.settings.tls.files_fingerprint();
        if let Some((made_from, config)) = &self.tls {
            if *made_from == files {
                return Ok(Arc::clone(config));
            }
        }
        let config = client_config(&self.settings.tls)?;
        self.tls = Some((files, Arc::clone(&config)));
        Ok(config)
    }

    fn mqtt_options(&mut self) -> Result<MqttOptions, UplinkError> {
        let broker = self.broker().clone();
        let mut o = MqttOptions::new(
            self.settings.client_id.clone(),
            broker.host.clone(),
            broker.port,
        );
        if broker.tls {
            let config = self.tls_config()?;
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
        }
        o.set_clean_session(true);
        o.set_keep_alive(self.settings.keep_alive);
        o.set_inflight(self.settings.window.max(1));
        // Payload plus topic plus MQTT header: the payload limit is what `encode` enforces.
        let packet_max = self.settings.max_message_bytes + self.topics.fixes.len() + 64;
        o.set_max_packet_size(packet_max.max(16 * 1024), packet_max);
        o.set_last_will(LastWill::new(
            self.topics.status.clone(),
            status_payload(LinkState::Offline, &self.settings.device),
            QoS::AtLeastOnce,
            true,
        ));
        if let Some((user, password)) = &self.settings.credentials {
            o.set_credentials(user.clone(), password.reveal());
        }
        Ok(o)
    }

    /// One connection, from CONNECT to its end. Everything unacknowledged (and every fix
    /// still lingering) is released before this returns.
    async fn session(&mut self, shutdown: &CancellationToken) -> SessionEnd {
        let mut facts = SessionFacts::default();
        let options = match self.mqtt_options() {
            Ok(o) => o,
            Err(e) => {
                let ending = ending_of(&e, &facts, self.settings.backoff.reset_after);
                return SessionEnd::Failed(Failure { error: e, ending });
            }
        };
        let window_size = self.limit.window(usize::from(self.settings.window.max(1)));
        // Room for the window, the status message and the DISCONNECT: try_publish never
        // finds the channel full.
        let (client, mut eventloop) = AsyncClient::new(options, window_size + 2);
        eventloop
            .network_options
            .set_connection_timeout(self.settings.connect_timeout.as_secs().max(1));
        // The event loop runs in its own task so that no `poll()` is ever cancelled halfway;
        // the session reads its events from a bounded channel. Dropping the task drops the
        // rumqttc state with it: nothing it still holds is ever sent.
        let (events_tx, mut events) = mpsc::channel::<Result<Event, ConnectionError>>(64);
        let pump = tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await;
                let failed = event.is_err();
                if events_tx.send(event).await.is_err() || failed {
                    return;
                }
            }
        });
        let _abort_pump = AbortOnDrop(pump);

        let mut window = AckWindow::new(window_size, self.settings.puback_timeout);
        let end = self
            .drive(&client, &mut events, &mut window, &mut facts, shutdown)
            .await;
        drop(_abort_pump);
        if matches!(end, SessionEnd::Failed(_)) {
            // Gone now, before its fixes are handed back (which waits on the buffer): what
            // `/health` says, and where the wedge check counts from.
            let at = self.board.clock().now();
            self.board.mqtt(|m| {
                m.connected = false;
                m.last_try_at = Some(at);
            });
        }
        let unacked: Vec<Unacked> = window
            .unacked()
            .filter_map(|(seqs, bytes)| {
                Some(Unacked {
                    first_seq: *seqs.first()?,
                    fixes: seqs.len(),
                    bytes,
                })
            })
            .collect();
        let mut released = window.on_disconnect();
        released.extend(self.held.drain(..).map(|(seq, _)| seq));
        self.held_due = None;
        let end = match end {
            SessionEnd::Failed(mut failure) => {
                if let Some((seq, why)) = self
                    .judge_drop(&mut failure, &unacked, &facts, shutdown)
                    .await
                {
                    released.retain(|s| *s != seq);
                    warn!(code = why.code(), seq, error = %why, "fix dead-lettered");
                    if let Err(e) = self.source.dead_letter(seq, &why).await {
                        warn!(code = e.code(), error = %e, "buffer refused dead letter");
                    }
                }
                SessionEnd::Failed(failure)
            }
            shutdown => shutdown,
        };
        if !released.is_empty() {
            debug!(count = released.len(), "releasing unacknowledged fixes");
            if let Err(e) = self.source.release(&released).await {
                warn!(code = e.code(), error = %e, "buffer refused release");
            }
        }
        end
    }

    /// After the broker closed an established link: was it over a message's size? Only
    /// when some unacknowledged message was larger than anything acknowledged, and only if
    /// the path still works (a probe), since a cut link leaves messages unacknowledged too.
    /// Returns a single fix to dead-letter, and why, when it alone is more than the broker
    /// takes.
    async fn judge_drop(
        &mut self,
        failure: &mut Failure,
        unacked: &[Unacked],
        facts: &SessionFacts,
        shutdown: &CancellationToken,
    ) -> Option<(u64, UplinkError)> {
        if facts.connected_at.is_none()
            || !matches!(failure.error, UplinkError::Io { .. })
            || !self.limit.blames_size(unacked)
        {
            return None;
        }
        let reachable = tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = probe(self.broker().host.clone(), self.broker().port) => r,
        };
        self.count_probe(reachable);
        if !reachable {
            failure.ending = Ending::Unreachable;
            return None;
        }
        let verdict = self.limit.on_dropped(unacked);
        let learned = self.limit.learned();
        self.board.mqtt(|m| m.message_limit = learned);
        match verdict {
            Verdict::NotSize => None,
            Verdict::Narrowed { bytes, cap } => {
                warn!(
                    code = "MQTT_TOO_LARGE",
                    bytes,
                    cap,
                    largest_ok = self.limit.largest_ok(),
                    window = self.limit.window(usize::from(self.settings.window)),
                    "broker dropped the link after a message larger than any it took; sending smaller messages (check mqtt.max_message_bytes against the broker's limit)"
                );
                failure.error = UplinkError::BrokerLimit { bytes, cap };
                failure.ending = Ending::Narrowed;
                None
            }
            Verdict::Reject {
                first_seq,
                bytes,
                drops,
            } => {
                failure.error = UplinkError::Rejected {
                    bytes,
                    disconnects: drops,
                };
                failure.ending = Ending::Narrowed;
                Some((
                    first_seq,
                    UplinkError::Rejected {
                        bytes,
                        disconnects: drops,
                    },
                ))
            }
        }
    }

    async fn drive(
        &mut self,
        client: &AsyncClient,
        events: &mut mpsc::Receiver<Result<Event, ConnectionError>>,
        window: &mut AckWindow,
        facts: &mut SessionFacts,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let failed = |error: UplinkError, facts: &SessionFacts, reset_after| {
            let ending = ending_of(&error, facts, reset_after);
            SessionEnd::Failed(Failure { error, ending })
        };
        let reset_after = self.settings.backoff.reset_after;
        // Until CONNACK.
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return SessionEnd::Shutdown,
                e = events.recv() => e,
            };
            match event {
                Some(Ok(Event::Incoming(Incoming::ConnAck(_)))) => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let e = UplinkError::from_connection(
                        &self.broker().to_string(),
                        Phase::Connecting,
                        e,
                    );
                    return failed(e, facts, reset_after);
                }
                None => return failed(UplinkError::ClientClosed, facts, reset_after),
            }
        }
        let now = Instant::now();
        self.reconnect.on_connected(now);
        facts.connected_at = Some(now);
        self.connections += 1;
        let reconnects = self.connections.saturating_sub(1);
        self.show(None, |m| {
            m.connected = true;
            m.reconnects = reconnects;
        });
        info!(broker = %self.broker(), reconnects, window = window.capacity(),
            "uplink connected");

        if let Err(e) = self.submit_status(client, window, LinkState::Online) {
            return failed(e, facts, reset_after);
        }
        // Whatever is pending now goes at once: the link was away (or the agent was).
        let mut flush_all = true;
        let mut source_empty = false;
        // The last sign of progress: CONNACK, then each PUBACK.
        let mut progress = now;
        let mut stall: Option<StallWatch> = None;
        let mut stall_next: Option<Instant> = None;
        let mut stall_probe: Option<Pin<Box<dyn Future<Output = bool> + Send>>> = None;
        // When the source was last asked (for the top-up of fixes held for company).
        let mut asked_at = now;

        loop {
            if !source_empty || self.held_is_due(Instant::now()) {
                asked_at = Instant::now();
                match self.fill(client, window, &mut flush_all).await {
                    Ok(empty) => source_empty = empty,
                    Err(UplinkError::ClientClosed) => {
                        // rumqttc's event loop ended: the reason is in its last event.
                        let e = self.last_event_error(events, window, facts).await;
                        return failed(e, facts, reset_after);
                    }
                    Err(e) => return failed(e, facts, reset_after),
                }
            }
            // No PUBACK for STALL_AFTER while messages wait: watch the path.
            let waiting = window.oldest_since().map(|since| since.max(progress));
            let stall_check = match (stall, waiting) {
                (None, Some(since)) => Some(since + STALL_AFTER),
                _ => None,
            };
            if let (Some(at), Some(since)) = (stall_check, waiting) {
                if at <= Instant::now() {
                    stall = Some(StallWatch::new(since));
                    stall_next = Some(Instant::now());
                    continue;
                }
            }
            let deadline = window.next_deadline();
            // While live fixes wait for company the source is asked again when a full message
            // may be waiting (a full message goes then) or when they are due, not at every
            // commit: the fixes arriving meanwhile wait in the buffer and go with them.
            let wait_source = source_empty && window.has_room() && self.held.is_empty();
            let top_up = (source_empty && window.has_room() && !self.held.is_empty())
                .then(|| asked_at + self.top_up_after());
            let held_due = self.held_due.filter(|_| window.has_room());
            tokio::select! {
                _ = shutdown.cancelled() => {
                    return self.shut_down(client, events, window).await;
                }
                _ = sleep_until_opt(deadline) => {
                    if let Some(e) = window.overdue(Instant::now()) {
                        return failed(e, facts, reset_after);
                    }
                }
                _ = sleep_until_opt(stall_check) => {}
                _ = sleep_until_opt(stall_next), if stall_probe.is_none() => {
                    stall_next = None;
                    let (host, port) = (self.broker().host.clone(), self.broker().port);
                    stall_probe = Some(Box::pin(probe(host, port)));
                }
                reachable = poll_opt(&mut stall_probe) => {
                    stall_probe = None;
                    self.count_probe(reachable);
                    let now = Instant::now();
                    let Some(watch) = stall.as_mut() else { continue };
                    match watch.on_probe(now, reachable, &mut self.reconnect) {
                        Watch::ProbeAt(at) => stall_next = Some(at),
                        Watch::Stop => {}
                        Watch::Reconnect => {
                            let waited = now.saturating_duration_since(watch.since);
                            info!(broker = %self.broker(), waited_ms = millis(waited),
                                "the path to the broker went down and came back under a stalled connection; reconnecting");
                            return failed(UplinkError::Stalled { waited }, facts, reset_after);
                        }
                    }
                    self.show(None, |_| {});
                }
                _ = sleep_until_opt(held_due) => {}
                _ = sleep_until_opt(top_up) => source_empty = false,
                _ = self.source.fixes_pending(), if wait_source => source_empty = false,
                _ = tokio::time::sleep(self.settings.idle_poll), if wait_source => {
                    source_empty = false
                }
                event = events.recv() => {
                    let event = match event {
                        Some(Ok(e)) => e,
                        Some(Err(e)) => {
                            let e = UplinkError::from_connection(
                                &self.broker().to_string(),
                                Phase::Connected,
                                e,
                            );
                            return failed(e, facts, reset_after);
                        }
                        None => return failed(UplinkError::ClientClosed, facts, reset_after),
                    };
                    match self.on_event(event, window).await {
                        Ok(Some(acked)) => {
                            progress = Instant::now();
                            stall = None;
                            stall_next = None;
                            stall_probe = None;
                            if !acked.seqs.is_empty() && !facts.delivered {
                                facts.delivered = true;
                                // The moment dispatch sees fixes again after a connect: what
                                // outage-recovery is measured by.
                                info!(
                                    since_connect_ms = millis(progress.saturating_duration_since(now)),
                                    acked_seq = acked.seqs.iter().max().copied().unwrap_or(0),
                                    "first fixes acknowledged on this connection"
                                );
                            }
                            if !facts.proven {
                                // The link carried a message both ways: the broker works.
                                facts.proven = true;
                                self.reconnect.on_proven();
                                self.show(None, |_| {});
                            }
                            // An ack freed room: ask the source again. (Other events, such
                            // as rumqttc's note that a PUBLISH went out, free none: asking
                            // after them would only find what the last ask left.)
                            if window.has_room() {
                                source_empty = false;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => return failed(e, facts, reset_after),
                    }
                }
            }
        }
    }

    /// Why rumqttc's event loop ended, from the events it sent before it did (PUBACKs among
    /// them still acknowledge their fixes); `ClientClosed` when it said nothing.
    async fn last_event_error(
        &mut self,
        events: &mut mpsc::Receiver<Result<Event, ConnectionError>>,
        window: &mut AckWindow,
        facts: &mut SessionFacts,
    ) -> UplinkError {
        // Bounded: the pump has ended or is ending, its channel holds at most 64 events.
        for _ in 0..=64 {
            let event = tokio::time::timeout(Duration::from_secs(1), events.recv()).await;
            match event {
                Ok(Some(Ok(e))) => {
                    if let Ok(Some(acked)) = self.on_event(e, window).await {
                        if !facts.proven {
                            facts.proven = true;
                            self.reconnect.on_proven();
                        }
                        facts.delivered |= !acked.seqs.is_empty();
                    }
                }
                Ok(Some(Err(e))) => {
                    return UplinkError::from_connection(
                        &self.broker().to_string(),
                        Phase::Connected,
                        e,
                    )
                }
                Ok(None) | Err(_) => break,
            }
        }
        UplinkError::ClientClosed
    }

    /// Feed rumqttc an event; returns the message a PUBACK acknowledged.
    async fn on_event(
        &mut self,
        event: Event,
        window: &mut AckWindow,
    ) -> Result<Option<Acked>, UplinkError> {
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                window.on_outgoing_publish(pkid, Instant::now())?;
                Ok(None)
            }
            Event::Incoming(Incoming::PubAck(ack)) => {
                let Some(acked) = window.on_puback_message(ack.pkid) else {
                    return Err(UplinkError::AckMismatch {
                        detail: "PUBACK for a packet not in flight",
                        pkid: ack.pkid,
                    });
                };
                if !acked.seqs.is_empty() {
                    self.limit.on_acked(acked.bytes);
                    if let Err(e) = self.source.ack(&acked.seqs).await {
                        // The fixes stay in the buffer and go out again: a duplicate, not a
                        // loss.
                        warn!(code = e.code(), error = %e, "buffer refused ack");
                    }
                }
                let newest = acked.seqs.iter().max().copied().unwrap_or(0);
                let at = self.board.clock().now();
                let learned = self.limit.learned();
                self.board.mqtt(|m| {
                    m.last_ack_at = Some(at);
                    m.acked_seq = m.acked_seq.max(newest);
                    m.message_limit = learned;
                });
                Ok(Some(acked))
            }
            _ => Ok(None),
        }
    }

    /// How long after the last ask to ask again while fixes are held: when the held fixes'
    /// pace (by receiver time) says `batch_max` may be reached, never sooner than
    /// [`HOLD_TOP_UP`]. The linger deadline comes first when it is nearer.
    fn top_up_after(&self) -> Duration {
        let n = self.held.len();
        let (Some((_, first)), Some((_, last))) = (self.held.first(), self.held.last()) else {
            return HOLD_TOP_UP;
        };
        if n < 2 || n >= self.settings.batch_max {
            return HOLD_TOP_UP;
        }
        let span_ms = u64::try_from(last.time_ms.saturating_sub(first.time_ms)).unwrap_or(0);
        let per_fix_ms = span_ms / (n as u64 - 1);
        let missing = (self.settings.batch_max - n) as u64;
        Duration::from_millis(per_fix_ms.saturating_mul(missing)).max(HOLD_TOP_UP)
    }

    /// Whether lingering fixes have waited long enough (or make a full message).
    fn held_is_due(&self, now: Instant) -> bool {
        !self.held.is_empty()
            && (self.held.len() >= self.settings.batch_max
                || self.held_due.is_some_and(|due| due <= now))
    }

    /// A fix's age by the agent's clock (receiver-checked UTC), zero for a fix from the
    /// future.
    fn age(&self, fix: &Fix) -> Duration {
        let ms = self
            .board
            .clock()
            .utc_ms()
            .saturating_sub(fix.time_ms)
            .max(0);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    /// Take fixes from the source while the window has room; lingering ones are held until
    /// due. Returns whether the source had nothing more to give. `flush_all`: send whatever
    /// is pending at once (set at connect, cleared once the source is empty).
    async fn fill(
        &mut self,
        client: &AsyncClient,
        window: &mut AckWindow,
        flush_all: &mut bool,
    ) -> Result<bool, UplinkError> {
        // Asked first: the source hands out fixes of the stream it last told only.
        let stream = self.source.stream();
        if stream != self.stream {
            // A new stream (the buffer file was replaced): what was held for company belongs
            // to the old one and goes out under its name.
            if !self.held.is_empty() {
                let held = std::mem::take(&mut self.held);
                self.held_due = None;
                self.publish_fixes(client, window, held).await?;
            }
            self.stream = stream;
        }
        let now = Instant::now();
        if self.held_is_due(now) {
            // Due: whatever is pending goes now, and the held fixes join the first batch
            // (the source was not asked while they waited, so most of it is still there).
            *flush_all = true;
        }
        let linger = self.settings.linger;
        // Bounded: each round either fills a window slot, holds a batch, or finds the
        // source empty; held fixes go out once they make a full message.
        for _ in 0..=window_slots(window, self.settings.window) + self.settings.batch_max {
            if !window.has_room() {
                return Ok(false);
            }
            let batch = match self.source.next_batch(self.settings.batch_max).await {
                Ok(b) => b,
                Err(e) => {
                    warn!(code = e.code(), error = %e, "buffer could not hand out fixes");
                    return Ok(true);
                }
            };
            // The batch emptied the source: no need to ask again (a blocking-pool round trip)
            // to learn that nothing is left.
            let drained = self.source.drained();
            if batch.is_empty() {
                if *flush_all && !self.held.is_empty() {
                    let held = std::mem::take(&mut self.held);
                    self.held_due = None;
                    self.publish_fixes(client, window, held).await?;
                }
                *flush_all = false;
                return Ok(true);
            }
            let live = !*flush_all
                && !linger.is_zero()
                && batch.iter().all(|(_, fix)| self.age(fix) < linger);
            if live {
                // Wait for company, at most until the oldest has waited `linger` since its
                // receiver time (and never longer than `linger` from now).
                let due = batch
                    .iter()
                    .map(|(_, fix)| now + linger.saturating_sub(self.age(fix)))
                    .min()
                    .unwrap_or(now + linger);
                self.held_due = Some(self.held_due.map_or(due, |d| d.min(due)));
                self.held.extend(batch);
                if self.held.len() >= self.settings.batch_max {
                    let held = std::mem::take(&mut self.held);
                    self.held_due = None;
                    self.publish_fixes(client, window, held).await?;
                }
                if drained {
                    return Ok(true);
                }
                continue;
            }
            // Out now. Fixes held for company join the message when they fit in one batch.
            let mut fixes = batch;
            if !self.held.is_empty() {
                let held = std::mem::take(&mut self.held);
                self.held_due = None;
                if held.len() + fixes.len() <= self.settings.batch_max {
                    fixes.extend(held);
                    fixes.sort_by_key(|(seq, _)| *seq);
                } else {
                    self.publish_fixes(client, window, held).await?;
                }
            }
            self.publish_fixes(client, window, fixes).await?;
            if drained {
                *flush_all = false;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Encode `fixes` (oldest first) under the message cap and publish as many messages as
    /// the window takes; the rest go back to the source. A fix that does not fit the learned
    /// cap alone goes alone under `max_message_bytes`; one that does not fit that is
    /// dead-lettered.
    async fn publish_fixes(
        &mut self,
        client: &AsyncClient,
        window: &mut AckWindow,
        fixes: Vec<(u64, Fix)>,
    ) -> Result<(), UplinkError> {
        let stream = self.stream.clone();
        let cap = self.limit.cap();
        let configured = self.settings.max_message_bytes;
        let encode = |fixes: &[(u64, Fix)], max: usize| -> Encoded {
            let batch = FixBatch {
                device: &self.settings.device,
                stream: &stream,
                fixes,
            };
            match self.settings.payload {
                PayloadFormat::Json => payload::encode(&batch, max),
                PayloadFormat::Cbor => cbor::encode(&batch, max),
            }
        };
        let encoded = encode(&fixes, cap);
        let mut messages = encoded.messages;
        let mut dead = Vec::new();
        for (seq, why) in encoded.dead_letters {
            let alone = (cap < configured && matches!(why, UplinkError::TooLarge { .. }))
                .then(|| fixes.iter().find(|(s, _)| *s == seq))
                .flatten()
                .and_then(|one| encode(std::slice::from_ref(one), configured).messages.pop());
            match alone {
                Some(message) => messages.push(message),
                None => dead.push((seq, why)),
            }
        }
        for (seq, why) in &dead {
            warn!(code = why.code(), seq, error = %why, "fix dead-lettered");
            if let Err(e) = self.source.dead_letter(*seq, why).await {
                warn!(code = e.code(), error = %e, "buffer refused dead letter");
            }
        }
        messages.sort_by_key(|m| m.seqs.first().copied());
        // Seqs of messages that did not go out (no room, client gone): back to the source.
        let mut unsent: Vec<u64> = Vec::new();
        let mut client_gone = false;
        for message in messages {
            if client_gone || !window.has_room() {
                unsent.extend(message.seqs);
                continue;
            }
            let bytes = message.payload.len();
            if client
                .try_publish(&self.topics.fixes, QoS::AtLeastOnce, false, message.payload)
                .is_err()
            {
                client_gone = true;
                unsent.extend(message.seqs);
                continue;
            }
            let count = message.seqs.len();
            match window.submit_sized(message.seqs, bytes, Instant::now()) {
                Ok(()) => self.source.published(count),
                // Unreachable (room was checked), but never lose track of a fix.
                Err(seqs) => unsent.extend(seqs),
            }
        }
        if !unsent.is_empty() {
            self.release_quietly(&unsent).await;
        }
        if client_gone {
            return Err(UplinkError::ClientClosed);
        }
        Ok(())
    }

    async fn release_quietly(&mut self, seqs: &[u64]) {
        if let Err(e) = self.source.release(seqs).await {
            warn!(code = e.code(), error = %e, "buffer refused release");
        }
    }

    fn submit_status(
        &self,
        client: &AsyncClient,
        window: &mut AckWindow,
        state: LinkState,
    ) -> Result<(), UplinkError> {
        let payload = status_payload(state, &self.settings.device);
        client
            .try_publish(&self.topics.status, QoS::AtLeastOnce, true, payload)
            .map_err(|_| UplinkError::ClientClosed)?;
        window
            .submit(Vec::new(), Instant::now())
            .map_err(|_| UplinkError::AckMismatch {
                detail: "no room in the window for the status message",
                pkid: 0,
            })
    }

    /// Clean shutdown: send what lingers, wait (bounded) for PUBACKs in flight, say
    /// `offline`, disconnect.
    async fn shut_down(
        &mut self,
        client: &AsyncClient,
        events: &mut mpsc::Receiver<Result<Event, ConnectionError>>,
        window: &mut AckWindow,
    ) -> SessionEnd {
        if !self.held.is_empty() {
            // What lingers goes out, with what arrived since (as far as the window takes
            // it). A failure here leaves the fixes in the window or released: pending again.
            let mut flush = true;
            let _ = self.fill(client, window, &mut flush).await;
        }
        let grace_until = Instant::now() + self.settings.shutdown_grace;
        while !window.is_empty() {
            let event = tokio::select! {
                _ = tokio::time::sleep_until(grace_until) => break,
                e = events.recv() => e,
            };
            match event {
                Some(Ok(e)) => {
                    if self.on_event(e, window).await.is_err() {
                        break;
                    }
                }
                _ => return SessionEnd::Shutdown,
            }
        }
        // What is still unacknowledged goes back to the buffer for the next run; a late
        // PUBACK for it finds nothing in the window and acknowledges nothing.
        let released = window.on_disconnect();
        if !released.is_empty() {
            self.release_quietly(&released).await;
        }
        if self
            .submit_status(client, window, LinkState::Offline)
            .is_err()
        {
            return SessionEnd::Shutdown;
        }
        // Wait (bounded) for the offline status to be acknowledged, then disconnect: a clean
        // DISCONNECT discards the last will, so `offline` must have arrived first.
        let until = Instant::now() + self.settings.shutdown_grace;
        let mut offline_acked = false;
        while !offline_acked {
            let event = tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                e = events.recv() => e,
            };
            match event {
                Some(Ok(e)) => match self.on_event(e, window).await {
                    Ok(Some(_)) => offline_acked = true,
                    Ok(None) => {}
                    Err(_) => break,
                },
                _ => return SessionEnd::Shutdown,
            }
        }
        if offline_acked && client.try_disconnect().is_ok() {
            // Let the event loop write the DISCONNECT (bounded).
            let until = Instant::now() + Duration::from_secs(1);
            loop {
                let event = tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    e = events.recv() => e,
                };
                match event {
                    Some(Ok(Event::Outgoing(Outgoing::Disconnect))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                }
            }
        }
        // Without a clean DISCONNECT the broker publishes the last will: `offline` either way.
        info!(offline_acked, "uplink shut down");
        let at = self.board.clock().now();
        self.board.mqtt(|m| {
            m.connected = false;
            m.last_try_at = Some(at);
        });
        SessionEnd::Shutdown
    }
}

/// The TLS configuration the settings were made with, and the fingerprint of its files.
fn tls_of(settings: &PublisherSettings) -> Option<(u64, Arc<rustls::ClientConfig>)> {
    settings
        .tls_client
        .config()
        .map(|config| (settings.tls_files, Arc::clone(config)))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Slots the window has, as a loop bound for `fill`.
fn window_slots(window: &AckWindow, size: u16) -> usize {
    usize::from(size).saturating_sub(window.len()) + 1
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The output of `future`, or never when there is none.
async fn poll_opt<F: Future + Unpin>(future: &mut Option<F>) -> F::Output {
    match future {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    fn mqtt(section: &str) -> MqttSettings {
        parse_str(&format!("[device]\nid = \"truck-7\"\n[mqtt]\n{section}"))
            .unwrap()
            .mqtt
    }

    #[test]
    fn a_bad_url_is_a_permanent_url_error() {
        for url in ["http://b", "mqtt://:1883", "mqtt://b:x", "mqtts://b:99999"] {
            let e = PublisherSettings::new(url, "truck-1").unwrap_err();
            assert_eq!(e.code(), "MQTT_URL", "{url}");
            assert_eq!(e.class(), crate::error::ErrorClass::Permanent);
        }
    }

    #[test]
    fn a_password_never_shows_in_debug_output() {
        let mut s = PublisherSettings::new("mqtt://b", "truck-1").unwrap();
        s.credentials = Some(("truck-1".into(), Password::new("hunter2")));
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn a_password_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(Password::from_file(&path).unwrap().reveal(), "s3cret");
        std::fs::write(&path, "").unwrap();
        let e = Password::from_file(&path).unwrap_err();
        assert_eq!(e.code(), "MQTT_TLS_CONFIG");
    }

    #[test]
    fn settings_map_every_key_and_the_client_id_defaults_to_the_device_id() {
        let m = mqtt(
            "batch_max = 20\nmax_message_bytes = 4096\ninflight = 4\npuback_timeout_s = 7.5
backoff_initial_s = 2.0\nbackoff_max_s = 90.0\nbackoff_reset_after_s = 30.0
failure_threshold = 9\nopen_for_s = 12.0\npermanent_retry_s = 120.0\nkeep_alive_s = 45
payload = \"cbor\"\n",
        );
        let s = PublisherSettings::from_settings(&m, "truck-7").unwrap();
        assert_eq!(s.payload, PayloadFormat::Cbor);
        assert_eq!(s.client_id, "truck-7");
        assert_eq!(s.device, "truck-7");
        assert_eq!(s.broker.to_string(), "mqtt://127.0.0.1:1883");
        assert_eq!(s.batch_max, 20);
        assert_eq!(s.max_message_bytes, 4096);
        assert_eq!(s.window, 4);
        assert_eq!(s.puback_timeout, Duration::from_millis(7500));
        assert_eq!(s.backoff.initial, Duration::from_secs(2));
        assert_eq!(s.backoff.max, Duration::from_secs(90));
        assert_eq!(s.backoff.reset_after, Duration::from_secs(30));
        assert_eq!(s.breaker.failure_threshold.get(), 9);
        assert_eq!(s.breaker.open_for, Duration::from_secs(12));
        assert_eq!(s.permanent_retry, Duration::from_secs(120));
        assert_eq!(s.keep_alive, Duration::from_secs(45));
        assert!(s.credentials.is_none());

        let named = mqtt("client_id = \"custom\"\n");
        let s = PublisherSettings::from_settings(&named, "truck-7").unwrap();
        assert_eq!(s.client_id, "custom");
        // The tools' defaults are the file's defaults.
        let tools = PublisherSettings::new("mqtt://127.0.0.1", "truck-7").unwrap();
        let file = PublisherSettings::from_settings(&mqtt(""), "truck-7").unwrap();
        assert_eq!(tools, file);
    }

    #[test]
    fn an_unreadable_password_file_is_tls_config() {
        let mut m = mqtt("username = \"truck-7\"\n");
        m.password_file = Some("/nonexistent/password".into());
        let e = PublisherSettings::from_settings(&m, "truck-7").unwrap_err();
        assert_eq!(e.code(), "MQTT_TLS_CONFIG");
    }
}
