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

use crate::error::Classified;
use crate::fix::Fix;
use crate::uplink::acks::AckWindow;
use crate::uplink::backoff::{Backoff, BackoffPolicy, Jitter, Xorshift64};
use crate::uplink::breaker::{Breaker, BreakerPolicy};
use crate::uplink::error::{Phase, UplinkError};
use crate::uplink::payload::{encode, status_payload, FixBatch, LinkState, Topics};
use rumqttc::{
    AsyncClient, ConnectionError, Event, Incoming, LastWill, MqttOptions, Outgoing, QoS,
};
use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
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

    /// The broker will never take this fix: set it aside, counted.
    fn dead_letter(
        &mut self,
        seq: u64,
        why: &UplinkError,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Everything the publisher needs to know. [`PublisherSettings::new`] fills the documented
/// defaults.
#[derive(Debug, Clone)]
pub struct PublisherSettings {
    /// `mqtt://host:port` (TLS comes later).
    pub url: String,
    pub client_id: String,
    pub device: String,
    pub topic_prefix: String,
    pub credentials: Option<(String, String)>,
    /// Fixes taken from the source per message (before splitting by size).
    pub batch_max: usize,
    /// Largest payload of one message.
    pub max_message_bytes: usize,
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
    pub fn new(url: &str, device: &str) -> Self {
        PublisherSettings {
            url: url.to_owned(),
            client_id: format!("gps-agent-{device}"),
            device: device.to_owned(),
            topic_prefix: "fleet".into(),
            credentials: None,
            batch_max: 50,
            max_message_bytes: 64 * 1024,
            window: 10,
            puback_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(30),
            backoff: BackoffPolicy::default(),
            breaker: BreakerPolicy::default(),
            permanent_retry: Duration::from_secs(10 * 60),
            shutdown_grace: Duration::from_secs(5),
            idle_poll: Duration::from_secs(1),
        }
    }
}

/// What `/health` shows of the uplink (`components.mqtt`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UplinkStatus {
    pub connected: bool,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// Connections made after the first.
    pub reconnects: u64,
    pub last_ack_at: Option<Instant>,
    /// Highest seq acknowledged so far.
    pub acked_seq: Option<u64>,
    /// `(code, message)` of the last failure.
    pub last_error: Option<(&'static str, String)>,
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
    status: watch::Sender<UplinkStatus>,
    connections: u64,
}

impl<S: FixSource> Publisher<S> {
    pub fn new(settings: PublisherSettings, source: S) -> Self {
        let topics = Topics::new(&settings.topic_prefix, &settings.device);
        let backoff = Backoff::new(settings.backoff, Jitter::Full(Xorshift64::from_entropy()));
        let breaker = Breaker::new(settings.breaker);
        let (status, _) = watch::channel(UplinkStatus {
            breaker: breaker.state().as_str(),
            ..UplinkStatus::default()
        });
        Publisher {
            settings,
            source,
            topics,
            backoff,
            breaker,
            status,
            connections: 0,
        }
    }

    /// Replace the jitter source (tests turn it off or seed it).
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.backoff = Backoff::new(self.settings.backoff, jitter);
        self
    }

    /// Follow the uplink's state (for `/health`).
    pub fn status(&self) -> watch::Receiver<UplinkStatus> {
        self.status.subscribe()
    }

    /// Publish until `shutdown` is cancelled; returns the source (nothing left in flight).
    pub async fn run(mut self, shutdown: CancellationToken) -> S {
        loop {
            if shutdown.is_cancelled() {
                return self.source;
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
                tokio::select! {
                    _ = shutdown.cancelled() => return self.source,
                    _ = tokio::time::sleep_until(until) => continue,
                }
            }
            self.publish_breaker();
            match self.session(&shutdown).await {
                SessionEnd::Shutdown => return self.source,
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
                        broker = %self.settings.url,
                        retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        breaker = self.breaker.state().as_str(),
                        error = %err,
                        "uplink failed"
                    );
                    self.status.send_modify(|s| {
                        s.connected = false;
                        s.breaker = self.breaker.state().as_str();
                        s.last_error = Some((err.code(), err.to_string()));
                    });
                    tokio::select! {
                        _ = shutdown.cancelled() => return self.source,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    fn publish_breaker(&self) {
        let name = self.breaker.state().as_str();
        self.status.send_if_modified(|s| {
            let changed = s.breaker != name;
            s.breaker = name;
            changed
        });
    }

    fn mqtt_options(&self) -> Result<MqttOptions, UplinkError> {
        let (host, port) = parse_url(&self.settings.url)?;
        let mut o = MqttOptions::new(self.settings.client_id.clone(), host, port);
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
            o.set_credentials(user.clone(), password.clone());
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
        let end = self
            .drive(&client, &mut events, &mut window, shutdown)
            .await;
        let released = window.on_disconnect();
        if !released.is_empty() {
            debug!(count = released.len(), "releasing unacknowledged fixes");
            if let Err(e) = self.source.release(&released).await {
                warn!(code = e.code(), error = %e, "buffer refused release");
            }
        }
        end
    }

    async fn drive(
        &mut self,
        client: &AsyncClient,
        events: &mut mpsc::Receiver<Result<Event, ConnectionError>>,
        window: &mut AckWindow,
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
                        &self.settings.url,
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
        self.status.send_modify(|s| {
            s.connected = true;
            s.reconnects = reconnects;
        });
        info!(broker = %self.settings.url, reconnects, "uplink connected");

        if let Err(e) = self.submit_status(client, window, LinkState::Online) {
            return SessionEnd::Failed(e);
        }
        let mut proven = false;
        let mut source_empty = false;

        loop {
            if !source_empty {
                match self.fill(client, window).await {
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
                                &self.settings.url,
                                Phase::Connected,
                                e,
                            ))
                        }
                        None => return SessionEnd::Failed(UplinkError::ClientClosed),
                    };
                    match self.on_event(event, window).await {
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
                let newest = seqs.iter().max().copied();
                self.status.send_modify(|s| {
                    s.last_ack_at = Some(Instant::now());
                    if newest > s.acked_seq {
                        s.acked_seq = newest;
                    }
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
    ) -> Result<bool, UplinkError> {
        let stream = self.source.stream();
        // Bounded: each round either fills a window slot or finds the source empty.
        for _ in 0..=window_slots(window, self.settings.window) {
            if !window.has_room() {
                return Ok(false);
            }
            let batch = match self.source.next_batch(self.settings.batch_max.max(1)).await {
                Ok(b) => b,
                Err(e) => {
                    warn!(code = e.code(), error = %e, "buffer could not hand out fixes");
                    return Ok(true);
                }
            };
            if batch.is_empty() {
                return Ok(true);
            }
            let encoded = encode(
                &FixBatch {
                    device: &self.settings.device,
                    stream: &stream,
                    fixes: &batch,
                },
                self.settings.max_message_bytes,
            );
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
                if client
                    .try_publish(&self.topics.fixes, QoS::AtLeastOnce, false, message.payload)
                    .is_err()
                {
                    client_gone = true;
                    unsent.extend(message.seqs);
                    continue;
                }
                if let Err(seqs) = window.submit(message.seqs, Instant::now()) {
                    // Unreachable (room was checked), but never lose track of a fix.
                    unsent.extend(seqs);
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
        self.status.send_modify(|s| s.connected = false);
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

/// `mqtt://host:port` (port defaults to 1883) into host and port.
pub fn parse_url(url: &str) -> Result<(String, u16), UplinkError> {
    let bad = |why: &'static str| UplinkError::BadUrl {
        url: url.to_owned(),
        why,
    };
    let rest = if let Some(rest) = url.strip_prefix("mqtt://") {
        rest
    } else if url.starts_with("mqtts://") {
        return Err(bad("TLS (mqtts://) is not supported yet"));
    } else {
        return Err(bad("expected mqtt://host:port"));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        // An IPv6 literal without port: `[::1]`.
        Some((h, p)) if !p.ends_with(']') => {
            let port = p.parse::<u16>().map_err(|_| bad("port is not a number"))?;
            (h, port)
        }
        _ => (rest, 1883),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_and_port_with_1883_by_default() {
        assert_eq!(
            parse_url("mqtt://broker.example:1884").unwrap(),
            ("broker.example".into(), 1884)
        );
        assert_eq!(
            parse_url("mqtt://10.0.0.1").unwrap(),
            ("10.0.0.1".into(), 1883)
        );
        assert_eq!(
            parse_url("mqtt://[::1]:1883").unwrap(),
            ("::1".into(), 1883)
        );
    }

    #[test]
    fn tls_and_other_schemes_are_permanent_url_errors_for_now() {
        for url in ["mqtts://b:8883", "http://b", "mqtt://:1883", "mqtt://b:x"] {
            let e = parse_url(url).unwrap_err();
            assert_eq!(e.code(), "MQTT_URL", "{url}");
            assert_eq!(e.class(), crate::error::ErrorClass::Permanent);
        }
    }
}
