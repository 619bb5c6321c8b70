//! The publisher: the async loop that moves fixes from a [`FixSource`] (the buffer) to the
//! broker and reports back what was acknowledged.
//!
//! One connection at a time. For each connection a fresh rumqttc client and event loop are
//! made (clean session) and dropped when the link breaks, so rumqttc never replays its own
//! copies of messages behind the [`AckWindow`]; the window releases every unacknowledged fix
//! back to the source instead. Between connections it waits as [`Backoff`] (transient
//! failures) or `permanent_retry` (permanent ones) says, and never while the [`Breaker`] is
//! open. It publishes a retained `online` status after connecting; `offline` is the last
//! will and is published on a clean shutdown.
//!
//! It never acknowledges a fix without its PUBACK, never holds more than `window` messages,
//! and never exits on a link failure: only the shutdown token ends [`Publisher::run`].

use crate::config::{BrokerUrl, MqttSettings, PayloadFormat};
use crate::error::Classified;
use crate::fix::Fix;
use crate::status::StatusBoard;
use crate::uplink::acks::AckWindow;
use crate::uplink::backoff::{Backoff, BackoffPolicy, Jitter, Xorshift64};
use crate::uplink::breaker::{Breaker, BreakerPolicy};
use crate::uplink::cbor;
use crate::uplink::error::{Phase, UplinkError};
use crate::uplink::payload::{encode, status_payload, FixBatch, LinkState, Topics};
use crate::uplink::tls::{client_config, TlsSettings};
use rumqttc::{
    AsyncClient, ConnectionError, Event, Incoming, LastWill, MqttOptions, Outgoing, QoS,
    TlsConfiguration, Transport,
};
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

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

/// Everything the publisher needs to know: the checked `[mqtt]` settings
/// ([`PublisherSettings::from_settings`]) with the password and TLS material read.
#[derive(Debug, Clone, PartialEq)]
pub struct PublisherSettings {
    pub broker: BrokerUrl,
    pub client_id: String,
    pub device: String,
    pub topic_prefix: String,
    /// User name and password sent in CONNECT.
    pub credentials: Option<(String, Password)>,
    /// CA, client certificate and server name for `mqtts://`; ignored for `mqtt://`.
    pub tls: TlsSettings,
    /// [`TlsSettings::files_fingerprint`] when the settings were made: the files are read at
    /// each connection, so settings equal but for this mean a file was replaced under its path.
    pub tls_files: u64,
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
    pub keep_alive: Duration,
    pub backoff: BackoffPolicy,
    pub breaker: BreakerPolicy,
    /// Wait after a permanent failure (bad credentials, refused client id).
    pub permanent_retry: Duration,
    /// At shutdown, how long to wait for PUBACKs of messages in flight.
    pub shutdown_grace: Duration,
    /// How often to ask the source again when it said nothing is pending.
    pub idle_poll: Duration,
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
        if mqtt.broker.tls {
            client_config(&tls)?;
        }
        Ok(PublisherSettings {
            broker: mqtt.broker.clone(),
            client_id: mqtt.client_id.clone(),
            device: device.to_owned(),
            topic_prefix: mqtt.topic_prefix.clone(),
            credentials,
            tls_files: tls.files_fingerprint(),
            tls,
            batch_max: mqtt.batch_max.get(),
            max_message_bytes: mqtt.max_message_bytes,
            payload: mqtt.payload,
            window: mqtt.inflight.get(),
            puback_timeout: mqtt.puback_timeout,
            keep_alive: mqtt.keep_alive,
            backoff: BackoffPolicy {
                initial: mqtt.backoff_initial,
                max: mqtt.backoff_max.max(mqtt.backoff_initial),
                reset_after: mqtt.backoff_reset_after,
            },
            breaker: BreakerPolicy {
                failure_threshold: mqtt.failure_threshold,
                open_for: mqtt.open_for,
            },
            permanent_retry: mqtt.permanent_retry,
            shutdown_grace: SHUTDOWN_GRACE,
            idle_poll: IDLE_POLL,
        })
    }
}

/// At shutdown, how long to wait for PUBACKs of messages in flight (and for `offline`).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often to ask the buffer again when it said nothing is pending (a wake-up is also
/// sent after every commit).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Consecutive sessions that ended with the broker dropping the link right after the same
/// first message, before that message is declared one the broker will never take. Three:
/// one drop is a flaky link, three in a row with the same message at the head is the message.
pub const REJECTED_AFTER_DISCONNECTS: u32 = 3;

/// The message at the head of the queue that the broker keeps dropping the link over.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Suspect {
    /// Seqs the message carried.
    seqs: Vec<u64>,
    bytes: usize,
    disconnects: u32,
}

/// How one connection ended.
enum SessionEnd {
    Shutdown,
    Failed(UplinkError),
}

pub struct Publisher<S: FixSource> {
    settings: PublisherSettings,
    source: S,
    topics: Topics,
    backoff: Backoff,
    breaker: Breaker,
    /// Where the uplink publishes its state (`components.mqtt`).
    board: StatusBoard,
    connections: u64,
    /// The head message under suspicion of being one the broker never takes.
    suspect: Option<Suspect>,
    /// Fixes per message now: `batch_max`, or less while a message the broker keeps
    /// dropping the link over is narrowed down to the one fix that it cannot take.
    batch_cap: usize,
    /// Fixes messages acknowledged since `batch_cap` was last lowered or raised.
    acked_at_cap: u32,
}

/// What one session learned about the first fixes message it sent.
#[derive(Debug, Default)]
struct HeadMessage {
    /// Seqs and payload size of the first fixes message submitted in the session.
    first: Option<(Vec<u64>, usize)>,
    /// Whether it (or any fixes message) got its PUBACK: then the broker takes it.
    acked: bool,
}

/// Fixes messages acknowledged at a lowered `batch_cap` before it is doubled again: a broker
/// limit that was real keeps pushing it down, a run of bad luck on the link does not keep
/// the agent on small messages for good.
const ACKS_BEFORE_RAISING_CAP: u32 = 1000;

/// What a publisher derives from its settings: topics, reconnect pacing, the breaker and the
/// fixes per message.
fn from_settings(settings: &PublisherSettings) -> (Topics, Backoff, Breaker, usize) {
    (
        Topics::new(&settings.topic_prefix, &settings.device),
        Backoff::new(settings.backoff, Jitter::Full(Xorshift64::from_entropy())),
        Breaker::new(settings.breaker),
        settings.batch_max.max(1),
    )
}

impl<S: FixSource> Publisher<S> {
    pub fn new(settings: PublisherSettings, source: S, board: StatusBoard) -> Self {
        let (topics, backoff, breaker, batch_cap) = from_settings(&settings);
        let state = breaker.status();
        board.mqtt(|m| m.breaker = state);
        Publisher {
            settings,
            source,
            topics,
            backoff,
            breaker,
            board,
            connections: 0,
            suspect: None,
            batch_cap,
            acked_at_cap: 0,
        }
    }

    /// New settings for the next [`Publisher::serve`] (a SIGHUP reload): topics, pacing, the
    /// breaker and the message size start afresh from them, as in [`Publisher::new`]; the
    /// connection count and the acks go on, and the last error is cleared.
    pub fn reconfigure(&mut self, settings: PublisherSettings) {
        (self.topics, self.backoff, self.breaker, self.batch_cap) = from_settings(&settings);
        self.settings = settings;
        self.suspect = None;
        self.acked_at_cap = 0;
        let breaker = self.breaker.status();
        self.board.mqtt(|m| {
            m.breaker = breaker;
            m.last_error = None;
        });
    }

    pub fn settings(&self) -> &PublisherSettings {
        &self.settings
    }

    /// Replace the jitter source (tests turn it off or seed it).
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.backoff = Backoff::new(self.settings.backoff, jitter);
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
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let now = Instant::now();
            if !self.breaker.try_acquire(now) {
                self.publish_breaker();
                // Open: wait for the end of the pause (half-open never reaches here: the probe
                // is the session that just ended and reported back).
                let until = self
                    .breaker
                    .next_attempt_at(now)
                    .unwrap_or(now + self.settings.breaker.open_for);
                self.publish_retry(until.saturating_duration_since(now));
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(until) => continue,
                }
            }
            self.publish_breaker();
            match self.session(shutdown).await {
                SessionEnd::Shutdown => return,
                SessionEnd::Failed(err) => {
                    let now = Instant::now();
                    self.breaker.on_failure(now);
                    let wait = match err.class() {
                        crate::error::ErrorClass::Permanent => {
                            // Permanent failures still count, so the breaker and backoff
                            // stay honest, but the wait is the long one.
                            self.backoff.on_failure(now);
                            self.settings.permanent_retry
                        }
                        _ => self.backoff.on_failure(now),
                    };
                    warn!(
                        code = err.code(),
                        class = err.class().as_str(),
                        broker = %self.settings.broker,
                        retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        breaker = self.breaker.status().as_str(),
                        error = %err,
                        "uplink failed"
                    );
                    let (breaker, error) = (self.breaker.status(), self.board.error_now(&err));
                    let retry_at = self.board.clock().now() + wait;
                    self.board.mqtt(|m| {
                        m.connected = false;
                        m.breaker = breaker;
                        m.last_error = Some(error);
                        m.retry_at = Some(retry_at);
                    });
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    fn publish_breaker(&self) {
        let state = self.breaker.status();
        self.board.mqtt(|m| m.breaker = state);
    }

    /// The next connection attempt is `wait` from now: `/health` shows it, and it is the
    /// very wait the loop then sleeps.
    fn publish_retry(&self, wait: Duration) {
        let at = self.board.clock().now() + wait;
        self.board.mqtt(|m| m.retry_at = Some(at));
    }

    fn mqtt_options(&self) -> Result<MqttOptions, UplinkError> {
        let broker = &self.settings.broker;
        let mut o = MqttOptions::new(
            self.settings.client_id.clone(),
            broker.host.clone(),
            broker.port,
        );
        if broker.tls {
            // Built per connection: a renewed certificate on disk is used at the next
            // reconnect without a restart.
            let config = client_config(&self.settings.tls)?;
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

    /// One connection, from CONNECT to its end. Everything unacknowledged is released before
    /// this returns.
    async fn session(&mut self, shutdown: &CancellationToken) -> SessionEnd {
        let options = match self.mqtt_options() {
            Ok(o) => o,
            Err(e) => return SessionEnd::Failed(e),
        };
        let window_size = usize::from(self.settings.window.max(1));
        // Room for the window, the status message and the DISCONNECT: try_publish never
        // finds the channel full.
        let (client, mut eventloop) = AsyncClient::new(options, window_size + 2);
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
        let mut head = HeadMessage::default();
        let end = self
            .drive(&client, &mut events, &mut window, &mut head, shutdown)
            .await;
        let mut released = window.on_disconnect();
        if let Some((seqs, why)) = self.judge_head(&head, &end) {
            released.retain(|seq| !seqs.contains(seq));
            for seq in seqs {
                warn!(code = why.code(), seq, error = %why, "fix dead-lettered");
                if let Err(e) = self.source.dead_letter(seq, &why).await {
                    warn!(code = e.code(), error = %e, "buffer refused dead letter");
                }
            }
        }
        if !released.is_empty() {
            debug!(count = released.len(), "releasing unacknowledged fixes");
            if let Err(e) = self.source.release(&released).await {
                warn!(code = e.code(), error = %e, "buffer refused release");
            }
        }
        end
    }

    /// After a session: did the broker drop the link over the first fixes message again?
    /// Returns the seqs to dead-letter, and why, once the same single-fix message was dropped
    /// [`REJECTED_AFTER_DISCONNECTS`] times in a row. A multi-fix message is not given up:
    /// the batch is halved until the one fix the broker cannot take stands alone.
    fn judge_head(
        &mut self,
        head: &HeadMessage,
        end: &SessionEnd,
    ) -> Option<(Vec<u64>, UplinkError)> {
        if head.acked {
            self.suspect = None;
            let full = self.settings.batch_max.max(1);
            if self.batch_cap < full && self.acked_at_cap >= ACKS_BEFORE_RAISING_CAP {
                self.batch_cap = self.batch_cap.saturating_mul(2).min(full);
                self.acked_at_cap = 0;
                info!(batch_cap = self.batch_cap, "fixes per message raised again");
            }
            return None;
        }
        // Only a link the broker closed counts: a refused connect, a timeout or a shutdown
        // says nothing about the message.
        let SessionEnd::Failed(err) = end else {
            return None;
        };
        if err.code() != "MQTT_IO" {
            return None;
        }
        let (seqs, bytes) = head.first.as_ref()?;
        let disconnects = match &self.suspect {
            Some(s) if s.seqs == *seqs => s.disconnects.saturating_add(1),
            _ => 1,
        };
        self.suspect = Some(Suspect {
            seqs: seqs.clone(),
            bytes: *bytes,
            disconnects,
        });
        if disconnects < REJECTED_AFTER_DISCONNECTS {
            return None;
        }
        self.suspect = None;
        if seqs.len() > 1 {
            self.batch_cap = (seqs.len() / 2).max(1);
            self.acked_at_cap = 0;
            warn!(
                code = "MQTT_REJECTED",
                bytes,
                disconnects,
                batch_cap = self.batch_cap,
                "broker keeps dropping the link after the same message; sending fewer fixes per message (check mqtt.max_message_bytes against the broker's limit)"
            );
            return None;
        }
        Some((
            seqs.clone(),
            UplinkError::Rejected {
                bytes: *bytes,
                disconnects,
            },
        ))
    }

    async fn drive(
        &mut self,
        client: &AsyncClient,
        events: &mut mpsc::Receiver<Result<Event, ConnectionError>>,
        window: &mut AckWindow,
        head: &mut HeadMessage,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
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
                    return SessionEnd::Failed(UplinkError::from_connection(
                        &self.settings.broker.to_string(),
                        Phase::Connecting,
                        e,
                    ))
                }
                None => return SessionEnd::Failed(UplinkError::ClientClosed),
            }
        }
        let now = Instant::now();
        self.backoff.on_connected(now);
        self.connections += 1;
        let reconnects = self.connections.saturating_sub(1);
        self.board.mqtt(|m| {
            m.connected = true;
            m.reconnects = reconnects;
            m.retry_at = None;
        });
        info!(broker = %self.settings.broker, reconnects, "uplink connected");

        if let Err(e) = self.submit_status(client, window, LinkState::Online) {
            return SessionEnd::Failed(e);
        }
        let mut proven = false;
        let mut source_empty = false;

        loop {
            if !source_empty {
                match self.fill(client, window, head).await {
                    Ok(empty) => source_empty = empty,
                    Err(e) => return SessionEnd::Failed(e),
                }
            }
            let deadline = window.next_deadline();
            let wait_source = source_empty && window.has_room();
            tokio::select! {
                _ = shutdown.cancelled() => {
                    return self.shut_down(client, events, window).await;
                }
                _ = sleep_until_opt(deadline) => {
                    if let Some(e) = window.overdue(Instant::now()) {
                        return SessionEnd::Failed(e);
                    }
                }
                _ = self.source.fixes_pending(), if wait_source => source_empty = false,
                _ = tokio::time::sleep(self.settings.idle_poll), if wait_source => {
                    source_empty = false
                }
                event = events.recv() => {
                    let event = match event {
                        Some(Ok(e)) => e,
                        Some(Err(e)) => {
                            return SessionEnd::Failed(UplinkError::from_connection(
                                &self.settings.broker.to_string(),
                                Phase::Connected,
                                e,
                            ))
                        }
                        None => return SessionEnd::Failed(UplinkError::ClientClosed),
                    };
                    let result = self.on_event(event, window).await;
                    if matches!(&result, Ok(Some(seqs)) if !seqs.is_empty()) {
                        head.acked = true;
                        self.acked_at_cap = self.acked_at_cap.saturating_add(1);
                    }
                    match result {
                        Ok(Some(_acked)) if !proven => {
                            // The link carried a message both ways: a probe succeeded.
                            proven = true;
                            self.breaker.on_success();
                            self.publish_breaker();
                        }
                        Ok(_) => {}
                        Err(e) => return SessionEnd::Failed(e),
                    }
                    // An ack freed room: ask the source again.
                    if window.has_room() {
                        source_empty = false;
                    }
                }
            }
        }
    }

    /// Feed rumqttc an event; returns the seqs a PUBACK acknowledged.
    async fn on_event(
        &mut self,
        event: Event,
        window: &mut AckWindow,
    ) -> Result<Option<Vec<u64>>, UplinkError> {
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                window.on_outgoing_publish(pkid, Instant::now())?;
                Ok(None)
            }
            Event::Incoming(Incoming::PubAck(ack)) => {
                let Some(seqs) = window.on_puback(ack.pkid) else {
                    return Err(UplinkError::AckMismatch {
                        detail: "PUBACK for a packet not in flight",
                        pkid: ack.pkid,
                    });
                };
                if !seqs.is_empty() {
                    if let Err(e) = self.source.ack(&seqs).await {
                        // The fixes stay in the buffer and go out again: a duplicate, not a
                        // loss.
                        warn!(code = e.code(), error = %e, "buffer refused ack");
                    }
                }
                let newest = seqs.iter().max().copied().unwrap_or(0);
                let at = self.board.clock().now();
                self.board.mqtt(|m| {
                    m.last_ack_at = Some(at);
                    m.acked_seq = m.acked_seq.max(newest);
                });
                Ok(Some(seqs))
            }
            _ => Ok(None),
        }
    }

    /// Take fixes from the source while the window has room. Returns whether the source had
    /// nothing more to give.
    async fn fill(
        &mut self,
        client: &AsyncClient,
        window: &mut AckWindow,
        head: &mut HeadMessage,
    ) -> Result<bool, UplinkError> {
        let stream = self.source.stream();
        // Bounded: each round either fills a window slot or finds the source empty.
        for _ in 0..=window_slots(window, self.settings.window) {
            if !window.has_room() {
                return Ok(false);
            }
            let batch = match self.source.next_batch(self.batch_cap.max(1)).await {
                Ok(b) => b,
                Err(e) => {
                    warn!(code = e.code(), error = %e, "buffer could not hand out fixes");
                    return Ok(true);
                }
            };
            if batch.is_empty() {
                return Ok(true);
            }
            let fixes = FixBatch {
                device: &self.settings.device,
                stream: &stream,
                fixes: &batch,
            };
            let encoded = match self.settings.payload {
                PayloadFormat::Json => encode(&fixes, self.settings.max_message_bytes),
                PayloadFormat::Cbor => cbor::encode(&fixes, self.settings.max_message_bytes),
            };
            for (seq, why) in &encoded.dead_letters {
                warn!(code = why.code(), seq, error = %why, "fix dead-lettered");
                if let Err(e) = self.source.dead_letter(*seq, why).await {
                    warn!(code = e.code(), error = %e, "buffer refused dead letter");
                }
            }
            // Seqs of messages that did not go out (no room, client gone): back to the source.
            let mut unsent: Vec<u64> = Vec::new();
            let mut client_gone = false;
            for message in encoded.messages {
                if client_gone || !window.has_room() {
                    unsent.extend(message.seqs);
                    continue;
                }
                if head.first.is_none() {
                    head.first = Some((message.seqs.clone(), message.payload.len()));
                }
                if client
                    .try_publish(&self.topics.fixes, QoS::AtLeastOnce, false, message.payload)
                    .is_err()
                {
                    client_gone = true;
                    unsent.extend(message.seqs);
                    continue;
                }
                let fixes = message.seqs.len();
                match window.submit(message.seqs, Instant::now()) {
                    Ok(()) => self.source.published(fixes),
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
        }
        Ok(false)
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

    /// Clean shutdown: wait (bounded) for PUBACKs in flight, say `offline`, disconnect.
    async fn shut_down(
        &mut self,
        client: &AsyncClient,
        events: &mut mpsc::Receiver<Result<Event, ConnectionError>>,
        window: &mut AckWindow,
    ) -> SessionEnd {
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
        self.board.mqtt(|m| m.connected = false);
        SessionEnd::Shutdown
    }
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
