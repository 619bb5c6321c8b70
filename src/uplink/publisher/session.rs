//! One connection, from CONNECT to its end: the per-connection state ([`Session`]: the rumqttc
//! client and its events, the acknowledgement window, what the session achieved, the watch on
//! a stalled path) and what the publisher does with it: connect, fill the window from the
//! source (holding live fixes for company in [`Linger`](crate::uplink::linger::Linger)),
//! map PUBACKs back to fixes, judge a dropped link (its size, or the path), and shut down
//! cleanly. Everything unacknowledged goes back to the source when the session ends; nothing
//! here decides when the next connection is made (that is `Reconnect`'s, in the publisher).

use super::{millis, Publisher};
use crate::error::{Classified, ErrorClass};
use crate::fix::Fix;
use crate::uplink::acks::{AckWindow, Acked};
use crate::uplink::error::{Phase, UplinkError};
use crate::uplink::limit::{Unacked, Verdict};
use crate::uplink::pace::Cost;
use crate::uplink::payload::{Encoded, FixBatch, LinkState};
use crate::uplink::probe::{probe, PathWatch};
use crate::uplink::profile::{Publish, SessionLimits};
use crate::uplink::reconnect::{Ending, Watch};
use crate::uplink::remote::Outbound;
use crate::uplink::source::FixSource;
use crate::uplink::tls::client_config;
use rumqttc::{
    AsyncClient, ConnectionError, Event, Incoming, LastWill, MqttOptions, Outgoing, QoS,
    TlsConfiguration, Transport,
};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How long a platform has to answer the request for its limits before the agent says it
/// goes on with its own settings (it went on from the start: nothing waits for the answer).
const LIMITS_ANSWER_WAIT: Duration = Duration::from_secs(10);

/// What one session was like, for pacing the next.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct SessionFacts {
    /// When CONNACK came.
    connected_at: Option<Instant>,
    /// A fixes message was acknowledged.
    delivered: bool,
    /// Any message (the status too) was acknowledged.
    proven: bool,
}

/// How a session failed, and what that means for the next attempt.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) error: UplinkError,
    pub(super) ending: Ending,
}

/// How one connection ended.
pub(super) enum SessionEnd {
    Shutdown,
    Failed(Failure),
    /// The credentials were about to expire (a signed token): closed cleanly, to connect
    /// again at once with new ones.
    Renew,
    /// A remote command asked for a new connection now.
    Reconnect,
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
            if facts.proven || lasted >= reset_after {
                // The broker took a message (fixes, or the status at connect: with `linger_s`
                // a session may deliver its first fixes only a minute in), or the session
                // lasted: a session that broke, not a refusal.
                Ending::Dropped
            } else {
                // Closed right after connecting, nothing acknowledged: the broker is refusing.
                Ending::Broker
            }
        }
        UplinkError::Stalled { .. } => Ending::PathReturned,
        UplinkError::BrokerLimit { .. } => Ending::Narrowed,
        _ => Ending::Broker,
    }
}

/// One connection's state: what the publisher keeps only while it is up.
pub(super) struct Session {
    client: AsyncClient,
    events: mpsc::Receiver<Result<Event, ConnectionError>>,
    window: AckWindow,
    facts: SessionFacts,
    /// Send whatever is pending at once (set at connect, cleared once the source is empty).
    flush_all: bool,
    /// The source said it has nothing more (until a fix is stored or an ack frees room).
    source_empty: bool,
    /// When the source was last asked (for the top-up of fixes held for company).
    asked_at: Instant,
    /// The last sign of progress: CONNACK, then each PUBACK.
    progress: Instant,
    path: PathWatch,
    /// When the credentials must be renewed by reconnecting (a token's expiry, less a
    /// margin).
    renew_at: Option<Instant>,
    /// When to say the platform did not answer the request for its limits.
    limits_due: Option<Instant>,
    /// Messages of one backfill message (split under the cap) waiting for room or pace.
    parts: VecDeque<Publish>,
}

impl<S: FixSource> Publisher<S> {
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

    /// The options of the next connection, and when its credentials must be renewed.
    fn mqtt_options(&mut self) -> Result<(MqttOptions, Option<Instant>), UplinkError> {
        let broker = self.broker().clone();
        let wall = std::time::SystemTime::now();
        let identity = self.profile.identity(wall);
        let renew_at = identity
            .renew_at
            .map(|at| Instant::now() + at.duration_since(wall).unwrap_or(Duration::ZERO));
        let mut o = MqttOptions::new(identity.client_id, broker.host.clone(), broker.port);
        if broker.tls {
            let config = self.tls_config()?;
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
        }
        o.set_clean_session(true);
        o.set_keep_alive(self.settings.keep_alive);
        o.set_inflight(self.settings.window.max(1));
        // Payload plus topic plus MQTT header: the payload limit is what `encode` enforces.
        let packet_max = self.settings.max_message_bytes + self.profile.fixes_topic().len() + 64;
        let incoming_max = if self.remote.is_some() {
            crate::uplink::remote::MAX_INCOMING_BYTES
        } else {
            16 * 1024
        };
        o.set_max_packet_size(packet_max.max(incoming_max), packet_max);
        let will = self.profile.will();
        o.set_last_will(LastWill::new(
            will.topic,
            will.payload,
            QoS::AtLeastOnce,
            will.retain,
        ));
        if let Some((user, password)) = &identity.credentials {
            o.set_credentials(user.clone(), password.reveal());
        }
        Ok((o, renew_at))
    }

    /// One connection, from CONNECT to its end. Everything unacknowledged (and every fix
    /// still lingering) is released before this returns.
    pub(super) async fn session(&mut self, shutdown: &CancellationToken) -> SessionEnd {
        let (options, renew_at) = match self.mqtt_options() {
            Ok(o) => o,
            Err(e) => {
                let facts = SessionFacts::default();
                let ending = ending_of(&e, &facts, self.settings.backoff.reset_after);
                return SessionEnd::Failed(Failure { error: e, ending });
            }
        };
        let window_size = self
            .limit
            .window(usize::from(self.settings.window.max(1)))
            .min(self.platform.max_inflight.unwrap_or(usize::MAX));
        // Room for the window, the status message and what the profile sends at connect,
        // the SUBSCRIBEs and the DISCONNECT: try_publish never finds the channel full.
        let (client, mut eventloop) = AsyncClient::new(options, window_size + 8);
        eventloop
            .network_options
            .set_connection_timeout(self.settings.connect_timeout.as_secs().max(1));
        // The event loop runs in its own task so that no `poll()` is ever cancelled halfway;
        // the session reads its events from a bounded channel. Dropping the task drops the
        // rumqttc state with it: nothing it still holds is ever sent.
        let (events_tx, events) = mpsc::channel::<Result<Event, ConnectionError>>(64);
        let pump = tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await;
                let failed = event.is_err();
                if events_tx.send(event).await.is_err() || failed {
                    return;
                }
            }
        });
        let abort_pump = AbortOnDrop(pump);
        let now = Instant::now();
        let mut s = Session {
            client,
            events,
            window: AckWindow::new(window_size, self.settings.puback_timeout),
            facts: SessionFacts::default(),
            flush_all: true,
            source_empty: false,
            asked_at: now,
            progress: now,
            path: PathWatch::default(),
            renew_at,
            limits_due: None,
            parts: VecDeque::new(),
        };
        let end = self.drive(&mut s, shutdown).await;
        drop(abort_pump);
        if matches!(end, SessionEnd::Failed(_)) {
            // Gone now, before its fixes are handed back (which waits on the buffer): what
            // `/health` says, and where the wedge check counts from.
            let at = self.board.clock().now();
            self.board.mqtt(|m| {
                m.connected = false;
                m.last_try_at = Some(at);
            });
        }
        let unacked: Vec<Unacked> = s
            .window
            .unacked()
            .filter_map(|(seqs, bytes)| {
                Some(Unacked {
                    first_seq: *seqs.first()?,
                    fixes: seqs.len(),
                    bytes,
                })
            })
            .collect();
        let mut released = s.window.on_disconnect();
        released.extend(self.linger.take().into_iter().map(|(seq, _)| seq));
        let end = match end {
            SessionEnd::Failed(mut failure) => {
                if let Some((seq, why)) = self
                    .judge_drop(&mut failure, &unacked, &s.facts, shutdown)
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
            self.release_quietly(&released).await;
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
        let before = self.limit.clone();
        let verdict = self.limit.on_dropped(unacked);
        if verdict != Verdict::NotSize {
            // A balancer answers the probe for a broker that died behind it: if the next
            // attempt finds the broker away, this verdict is withdrawn.
            self.judged = Some(before);
        }
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

    /// Until CONNACK: the connection is up, the status goes out, and the machine and
    /// `/health` hear of it.
    async fn connect(
        &mut self,
        s: &mut Session,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionEnd> {
        let reset_after = self.settings.backoff.reset_after;
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return Err(SessionEnd::Shutdown),
                e = s.events.recv() => e,
            };
            let error = match event {
                Some(Ok(Event::Incoming(Incoming::ConnAck(_)))) => break,
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    UplinkError::from_connection(&self.broker().to_string(), Phase::Connecting, e)
                }
                None => UplinkError::ClientClosed,
            };
            return Err(failed(error, &s.facts, reset_after));
        }
        let now = Instant::now();
        self.reconnect.on_connected(now);
        // The broker is there: a size verdict before this connection stands.
        self.judged = None;
        s.facts.connected_at = Some(now);
        s.progress = now;
        s.asked_at = now;
        self.connections += 1;
        let reconnects = self.connections.saturating_sub(1);
        self.show(None, |m| {
            m.connected = true;
            m.reconnects = reconnects;
        });
        info!(broker = %self.broker(), reconnects, window = s.window.capacity(),
            "uplink connected");
        self.submit_status(&s.client, &mut s.window, LinkState::Online)
            .map_err(|e| failed(e, &s.facts, reset_after))?;
        let commands = self.remote.is_some();
        // Clean session: each connection subscribes again (the profile's command channel
        // when commands are on, and what its platform expects of any device), before what
        // the platform answers.
        for filter in self.profile.subscriptions(commands) {
            s.client
                .try_subscribe(filter, QoS::AtLeastOnce)
                .map_err(|_| failed(UplinkError::ClientClosed, &s.facts, reset_after))?;
        }
        let extras = self.profile.on_connect(commands);
        let ask = self.profile.limits_request();
        if ask.is_some() {
            s.limits_due = Some(now + LIMITS_ANSWER_WAIT);
        }
        for extra in extras.into_iter().chain(ask) {
            // Announcements the platform keeps (Cumulocity's supported operations) and the
            // request for its limits: with a window of one, the next connection sends them.
            if s.window.has_room() {
                self.submit(&s.client, &mut s.window, extra)
                    .map_err(|e| failed(e, &s.facts, reset_after))?;
            }
        }
        Ok(())
    }

    /// The platform's answer about its limits: what it allows caps the messages (their
    /// bytes, through the packet limit), the window and the pace from now on; an answer
    /// that cannot be read leaves the settings as they are.
    fn on_limits(&mut self, answer: Result<SessionLimits, String>, window: &mut AckWindow) {
        self.limits_answered = self.connections;
        let limits = match answer {
            Ok(l) => l,
            Err(why) => {
                if !std::mem::replace(&mut self.limits_said, true) {
                    warn!(code = "MQTT_LIMITS_UNREADABLE", class = "transient",
                        profile = self.profile.name().as_str(), error = %why,
                        "the platform's answer about its session limits cannot be read; the settings' limits stay");
                }
                return;
            }
        };
        if let Some(bytes) = limits.max_payload_bytes {
            self.limit.bound(bytes);
        }
        if let Some(n) = limits.max_inflight {
            window.narrow(n);
        }
        self.pace.set(limits.rates.clone());
        info!(
            profile = self.profile.name().as_str(),
            max_payload_bytes = limits.max_payload_bytes,
            max_inflight = limits.max_inflight,
            rates = ?limits.rates,
            message_cap = self.limit.cap(),
            window = window.capacity(),
            "the platform's session limits apply"
        );
        self.platform = limits;
    }

    /// The connected session: fixes out as the window and the source allow, PUBACKs in,
    /// the path watched while they do not come, until the link fails or shutdown.
    async fn drive(&mut self, s: &mut Session, shutdown: &CancellationToken) -> SessionEnd {
        let reset_after = self.settings.backoff.reset_after;
        if let Err(end) = self.connect(s, shutdown).await {
            return end;
        }
        loop {
            let now = Instant::now();
            if let Err(e) = self.send_parts(s) {
                return failed(e, &s.facts, reset_after);
            }
            if !s.source_empty || self.linger.is_due(now) {
                s.asked_at = now;
                match self.fill(s).await {
                    Ok(empty) => s.source_empty = empty,
                    Err(UplinkError::ClientClosed) => {
                        // rumqttc's event loop ended: the reason is in its last event.
                        let e = self.last_event_error(s).await;
                        return failed(e, &s.facts, reset_after);
                    }
                    Err(e) => return failed(e, &s.facts, reset_after),
                }
            }
            // While live fixes wait for company the source is asked again when a full message
            // may be waiting (a full message goes then) or when they are due, not at every
            // commit: the fixes arriving meanwhile wait in the buffer and go with them.
            let room = s.window.has_room();
            let wait_source = s.source_empty && room && self.linger.is_empty();
            let top_up = (s.source_empty && room && !self.linger.is_empty())
                .then(|| s.asked_at + self.linger.top_up_after());
            let held_due = self.linger.due().filter(|_| room);
            // No PUBACK for STALL_AFTER while messages wait: the path is watched.
            let waiting = s.window.oldest_since().map(|since| since.max(s.progress));
            let target = self.broker().clone();
            tokio::select! {
                _ = shutdown.cancelled() => return self.shut_down(s, Closing::Shutdown).await,
                _ = sleep_until_opt(s.renew_at) => return self.shut_down(s, Closing::Renew).await,
                _ = sleep_until_opt(s.window.next_deadline()) => {
                    if let Some(e) = s.window.overdue(Instant::now()) {
                        return failed(e, &s.facts, reset_after);
                    }
                }
                (at, reachable) = s.path.probed(waiting, &target) => {
                    self.count_probe(reachable);
                    if let Some(Watch::Reconnect) = s.path.on_probe(at, reachable, &mut self.reconnect) {
                        let waited = at.saturating_duration_since(s.path.stalled_since().unwrap_or(at));
                        info!(broker = %target, waited_ms = millis(waited),
                            "the path to the broker went down and came back under a stalled connection; reconnecting");
                        return failed(UplinkError::Stalled { waited }, &s.facts, reset_after);
                    }
                    self.show(None, |_| {});
                }
                _ = sleep_until_opt(held_due) => {}
                _ = sleep_until_opt(self.paced_until) => {
                    self.paced_until = None;
                    s.source_empty = false;
                }
                _ = sleep_until_opt(s.limits_due) => {
                    s.limits_due = None;
                    if self.limits_answered != self.connections
                        && !std::mem::replace(&mut self.limits_said, true)
                    {
                        info!(profile = self.profile.name().as_str(),
                            waited_ms = millis(LIMITS_ANSWER_WAIT),
                            "the platform did not answer the request for its session limits (an older version); the settings' limits stay");
                    }
                }
                _ = sleep_until_opt(top_up) => s.source_empty = false,
                _ = self.source.fixes_pending(), if wait_source => s.source_empty = false,
                _ = tokio::time::sleep(self.settings.idle_poll), if wait_source => {
                    s.source_empty = false
                }
                event = s.events.recv() => {
                    if let Err(e) = self.on_session_event(s, event).await {
                        return failed(e, &s.facts, reset_after);
                    }
                }
                Some(out) = recv_remote(&mut self.remote), if room && s.parts.is_empty() => {
                    match self.send_remote(s, out) {
                        Ok(true) => return self.end_for_reconnect(s).await,
                        Ok(false) => {}
                        Err(e) => return failed(e, &s.facts, reset_after),
                    }
                }
            }
        }
    }

    /// What the commands stage sent: an answer or a backfill message goes out through the
    /// window (which has room); `Ok(true)` when the connection is to end for a reconnect.
    fn send_remote(&mut self, s: &mut Session, out: Outbound) -> Result<bool, UplinkError> {
        // Where the platform takes it (the profile routes answers back to the call); a
        // backfill message within the same cap as the fixes messages.
        let messages: Vec<Publish> = match &out {
            Outbound::Reconnect => return Ok(true),
            Outbound::Answer(p) => self.profile.answer(p).into_iter().collect(),
            Outbound::Backfill(p) => self.profile.backfill(p, self.limit.cap()),
        };
        if messages.is_empty() {
            warn!(
                code = "CMD_UNROUTED",
                class = "permanent",
                profile = self.profile.name().as_str(),
                "a command's answer or backfill message has nowhere to go on this platform; dropped"
            );
            return Ok(false);
        }
        s.parts.extend(messages);
        self.send_parts(s)?;
        Ok(false)
    }

    /// The messages of the commands stage waiting, as far as the window and the pace let.
    fn send_parts(&mut self, s: &mut Session) -> Result<(), UplinkError> {
        while let Some(next) = s.parts.front() {
            if !s.window.has_room() {
                break;
            }
            let now = Instant::now();
            if let Some(at) = self.pace.wait(now, cost_of(next)) {
                self.paced_until = Some(at);
                break;
            }
            let Some(next) = s.parts.pop_front() else {
                break;
            };
            self.submit(&s.client, &mut s.window, next)?;
        }
        Ok(())
    }

    /// A remote `reconnect`: what was sent before it is written, then a clean DISCONNECT
    /// (bounded), and the session ends. Its unacknowledged fixes go back to the buffer.
    async fn end_for_reconnect(&mut self, s: &mut Session) -> SessionEnd {
        if s.client.try_disconnect().is_ok() {
            let until = Instant::now() + Duration::from_secs(1);
            loop {
                let event = tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    e = s.events.recv() => e,
                };
                match event {
                    Some(Ok(Event::Outgoing(Outgoing::Disconnect))) | Some(Err(_)) | None => break,
                    Some(Ok(e)) => {
                        let _ = self.on_event(e, &mut s.window).await;
                    }
                }
            }
        }
        SessionEnd::Reconnect
    }

    /// An event of the connected session: a PUBACK is progress, and may prove the broker
    /// and free room in the window; an error ends the session.
    async fn on_session_event(
        &mut self,
        s: &mut Session,
        event: Option<Result<Event, ConnectionError>>,
    ) -> Result<(), UplinkError> {
        let event = match event {
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                return Err(UplinkError::from_connection(
                    &self.broker().to_string(),
                    Phase::Connected,
                    e,
                ))
            }
            None => return Err(UplinkError::ClientClosed),
        };
        let Some(acked) = self.on_event(event, &mut s.window).await? else {
            return Ok(());
        };
        s.progress = Instant::now();
        s.path.clear();
        if !acked.seqs.is_empty() && !s.facts.delivered {
            s.facts.delivered = true;
            // The moment dispatch sees fixes again after a connect: what outage-recovery is
            // measured by.
            let since_connect = s
                .progress
                .saturating_duration_since(s.facts.connected_at.unwrap_or(s.progress));
            info!(
                since_connect_ms = millis(since_connect),
                acked_seq = acked.seqs.iter().max().copied().unwrap_or(0),
                "first fixes acknowledged on this connection"
            );
        }
        if !s.facts.proven {
            // The link carried a message both ways: the broker works.
            s.facts.proven = true;
            self.reconnect.on_proven();
            self.show(None, |_| {});
        }
        // An ack freed room: ask the source again. (Other events, such as rumqttc's note
        // that a PUBLISH went out, free none: asking after them would only find what the
        // last ask left.)
        if s.window.has_room() {
            s.source_empty = false;
        }
        Ok(())
    }

    /// Why rumqttc's event loop ended, from the events it sent before it did (PUBACKs among
    /// them still acknowledge their fixes); `ClientClosed` when it said nothing.
    async fn last_event_error(&mut self, s: &mut Session) -> UplinkError {
        // Bounded: the pump has ended or is ending, its channel holds at most 64 events.
        for _ in 0..=64 {
            let event = tokio::time::timeout(Duration::from_secs(1), s.events.recv()).await;
            match event {
                Ok(Some(Ok(e))) => {
                    if let Ok(Some(acked)) = self.on_event(e, &mut s.window).await {
                        if !s.facts.proven {
                            s.facts.proven = true;
                            self.reconnect.on_proven();
                        }
                        s.facts.delivered |= !acked.seqs.is_empty();
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
            Event::Incoming(Incoming::Publish(p)) => {
                match self.profile.limits(&p.topic, &p.payload) {
                    Some(answer) => self.on_limits(answer, window),
                    None => self.on_request(&p.topic, &p.payload),
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// A message on a subscribed topic: a request goes to the commands stage as it came
    /// (rumqttc has acknowledged it); when the stage's inbox is full it is dropped and said.
    fn on_request(&mut self, topic: &str, payload: &[u8]) {
        let Some(remote) = &self.remote else { return };
        let now_ms = self.board.clock().utc_ms();
        for request in self
            .profile
            .requests(topic, payload, self.connections, now_ms)
        {
            self.hand_over(remote, request);
        }
    }

    /// One request to the commands stage; dropped and said when its inbox is full.
    fn hand_over(&self, remote: &crate::uplink::remote::RemotePort, request: Vec<u8>) {
        let bytes = request.len();
        if remote.requests.try_send(request).is_err() {
            remote
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            warn!(
                code = "CMD_DROPPED",
                class = "transient",
                bytes,
                "remote command dropped: the commands stage is busy or stopped"
            );
        }
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

    /// Take fixes from the source while the window has room; live ones wait in the linger
    /// until due. Returns whether the source had nothing more to give.
    async fn fill(&mut self, s: &mut Session) -> Result<bool, UplinkError> {
        // Asked first: the source hands out fixes of the stream it last told only.
        let stream = self.source.stream();
        if stream != self.stream {
            // A new stream (the buffer file was replaced): what was held for company belongs
            // to the old one and goes out under its name.
            if !self.linger.is_empty() {
                let held = self.linger.take();
                self.publish_fixes(&s.client, &mut s.window, held).await?;
            }
            self.stream = stream;
        }
        let now = Instant::now();
        if self.linger.is_due(now) {
            // Due: whatever is pending goes now, and the held fixes join the first batch
            // (the source was not asked while they waited, so most of it is still there).
            s.flush_all = true;
        }
        // Bounded: each round either fills a window slot, holds a batch, or finds the
        // source empty; held fixes go out once they make a full message.
        for _ in 0..=window_slots(&s.window, self.settings.window) + self.settings.batch_max {
            if !s.window.has_room() || self.paced_until.is_some_and(|at| at > Instant::now()) {
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
                if s.flush_all && !self.linger.is_empty() {
                    let held = self.linger.take();
                    self.publish_fixes(&s.client, &mut s.window, held).await?;
                }
                s.flush_all = false;
                return Ok(true);
            }
            let ages: Vec<Duration> = batch.iter().map(|(_, fix)| self.age(fix)).collect();
            if !s.flush_all && self.linger.would_hold(ages.iter().copied()) {
                // Wait for company, at most until the oldest has waited `linger` since its
                // receiver time; a full message goes at once.
                if let Some(full) = self.linger.hold(now, batch.into_iter().zip(ages)) {
                    self.publish_fixes(&s.client, &mut s.window, full).await?;
                }
                if drained {
                    return Ok(true);
                }
                continue;
            }
            // Out now. Fixes held for company join the message when they fit in one batch.
            let mut fixes = batch;
            if !self.linger.is_empty() {
                let held = self.linger.take();
                if held.len() + fixes.len() <= self.settings.batch_max {
                    fixes.extend(held);
                    fixes.sort_by_key(|(seq, _)| *seq);
                } else {
                    self.publish_fixes(&s.client, &mut s.window, held).await?;
                }
            }
            self.publish_fixes(&s.client, &mut s.window, fixes).await?;
            if drained {
                s.flush_all = false;
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
        let most = self.limit.most();
        // Data points count only against a platform's data-point rates: without one (every
        // profile but a ThingsBoard that gave them), nothing is built per fix here.
        let points: HashMap<u64, u64> = if self.pace.max_points().is_some() {
            fixes
                .iter()
                .map(|(seq, fix)| (*seq, self.profile.points(fix)))
                .collect()
        } else {
            HashMap::new()
        };
        let encode = |fixes: &[(u64, Fix)], max: usize| -> Encoded {
            let batch = FixBatch {
                device: &self.settings.device,
                stream: &stream,
                fixes,
            };
            self.profile.encode(&batch, max)
        };
        // No message carries more data points than the platform takes in its smallest
        // window.
        let mut messages = Vec::new();
        let mut dead_letters = Vec::new();
        for group in by_points(&fixes, self.pace.max_points(), |seq| {
            points.get(&seq).copied().unwrap_or(1)
        }) {
            let e = encode(group, cap);
            messages.extend(e.messages);
            dead_letters.extend(e.dead_letters);
        }
        let mut dead = Vec::new();
        for (seq, why) in dead_letters {
            let alone = (cap < most && matches!(why, UplinkError::TooLarge { .. }))
                .then(|| fixes.iter().find(|(s, _)| *s == seq))
                .flatten()
                .and_then(|one| encode(std::slice::from_ref(one), most).messages.pop());
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
        let mut paced = false;
        for message in messages {
            if client_gone || paced || !window.has_room() {
                unsent.extend(message.seqs);
                continue;
            }
            let cost = Cost::telemetry(
                message
                    .seqs
                    .iter()
                    .map(|seq| points.get(seq).copied().unwrap_or(1))
                    .sum(),
            );
            if let Some(at) = self.pace.wait(Instant::now(), cost) {
                // The platform's rate: this and what follows wait in the buffer.
                self.paced_until = Some(at);
                paced = true;
                unsent.extend(message.seqs);
                continue;
            }
            let bytes = message.payload.len();
            if client
                .try_publish(
                    self.profile.fixes_topic(),
                    QoS::AtLeastOnce,
                    false,
                    message.payload,
                )
                .is_err()
            {
                client_gone = true;
                unsent.extend(message.seqs);
                continue;
            }
            let count = message.seqs.len();
            self.pace.charge(Instant::now(), cost);
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
        &mut self,
        client: &AsyncClient,
        window: &mut AckWindow,
        state: LinkState,
    ) -> Result<(), UplinkError> {
        self.submit(client, window, self.profile.status(state))
    }

    /// A message that carries no fix (the state, a command's answer, a backfill message),
    /// published at QoS 1 through the acknowledgement window.
    fn submit(
        &mut self,
        client: &AsyncClient,
        window: &mut AckWindow,
        message: Publish,
    ) -> Result<(), UplinkError> {
        // Counted against the platform's rates whether or not it could wait: later fixes
        // wait for it.
        self.pace.charge(Instant::now(), cost_of(&message));
        client
            .try_publish(
                message.topic,
                QoS::AtLeastOnce,
                message.retain,
                message.payload,
            )
            .map_err(|_| UplinkError::ClientClosed)?;
        window
            .submit(Vec::new(), Instant::now())
            .map_err(|_| UplinkError::AckMismatch {
                detail: "no room in the window for a message without fixes",
                pkid: 0,
            })
    }

    /// Clean shutdown: send what lingers, wait (bounded) for PUBACKs in flight, say
    /// `offline`, disconnect. To renew the credentials only the PUBACKs are waited for:
    /// what lingers goes with the next session, and the agent is not going offline.
    async fn shut_down(&mut self, s: &mut Session, closing: Closing) -> SessionEnd {
        let ended = match closing {
            Closing::Shutdown => SessionEnd::Shutdown,
            Closing::Renew => SessionEnd::Renew,
        };
        if closing == Closing::Shutdown && !self.linger.is_empty() {
            // What lingers goes out, with what arrived since (as far as the window takes
            // it). A failure here leaves the fixes in the window or released: pending again.
            s.flush_all = true;
            let _ = self.fill(s).await;
        }
        let Session {
            client,
            events,
            window,
            ..
        } = s;
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
                _ => return ended,
            }
        }
        // What is still unacknowledged goes back to the buffer for the next run; a late
        // PUBACK for it finds nothing in the window and acknowledges nothing.
        let released = window.on_disconnect();
        if !released.is_empty() {
            self.release_quietly(&released).await;
        }
        if closing == Closing::Shutdown
            && self
                .submit_status(client, window, LinkState::Offline)
                .is_err()
        {
            return SessionEnd::Shutdown;
        }
        // Wait (bounded) for the offline status to be acknowledged, then disconnect: a clean
        // DISCONNECT discards the last will, so `offline` must have arrived first.
        let until = Instant::now() + self.settings.shutdown_grace;
        let mut offline_acked = closing == Closing::Renew;
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
                _ => return ended,
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
        info!(offline_acked, closing = ?closing, "uplink session closed");
        let at = self.board.clock().now();
        self.board.mqtt(|m| {
            m.connected = false;
            m.last_try_at = Some(at);
        });
        ended
    }
}

/// Why a session closes cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// The agent stops: `offline` first.
    Shutdown,
    /// New credentials: the agent stays online.
    Renew,
}

/// How a session ended, as pacing sees it.
fn failed(error: UplinkError, facts: &SessionFacts, reset_after: Duration) -> SessionEnd {
    let ending = ending_of(&error, facts, reset_after);
    SessionEnd::Failed(Failure { error, ending })
}

/// What a message that carries no fix of the window costs against the platform's rates.
fn cost_of(message: &Publish) -> Cost {
    if message.points > 0 {
        Cost::telemetry(message.points)
    } else {
        Cost::OTHER
    }
}

/// `fixes` in runs of at most `max` data points each (by `points` of a seq), at least one
/// fix a run; one run when there is no limit.
fn by_points(
    fixes: &[(u64, Fix)],
    max: Option<u64>,
    points: impl Fn(u64) -> u64,
) -> Vec<&[(u64, Fix)]> {
    let Some(max) = max else {
        return vec![fixes];
    };
    let mut runs = Vec::new();
    let (mut start, mut sum) = (0, 0);
    for (i, (seq, _)) in fixes.iter().enumerate() {
        let p = points(*seq);
        if i > start && sum + p > max {
            runs.push(&fixes[start..i]);
            (start, sum) = (i, 0);
        }
        sum += p;
    }
    if start < fixes.len() {
        runs.push(&fixes[start..]);
    }
    runs
}

/// Slots the window has, as a loop bound for `fill`.
fn window_slots(window: &AckWindow, size: u16) -> usize {
    usize::from(size).saturating_sub(window.len()) + 1
}

/// The next message of the commands stage; pending for ever without one.
async fn recv_remote(remote: &mut Option<crate::uplink::remote::RemotePort>) -> Option<Outbound> {
    match remote {
        Some(r) => r.outbox.recv().await,
        None => std::future::pending().await,
    }
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
    use std::io;

    fn connect(kind: io::ErrorKind) -> UplinkError {
        UplinkError::Connect {
            broker: "mqtt://b:1883".into(),
            source: io::Error::new(kind, "x"),
        }
    }

    fn io_error() -> UplinkError {
        UplinkError::Io {
            broker: "mqtt://b:1883".into(),
            source: io::Error::new(io::ErrorKind::ConnectionReset, "x"),
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_connection_closed_before_connack_is_unserved_and_a_refused_one_unreachable() {
        let facts = SessionFacts::default();
        for kind in [
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::UnexpectedEof,
            io::ErrorKind::BrokenPipe,
        ] {
            assert_eq!(ending_of(&connect(kind), &facts, MINUTE), Ending::Unserved);
        }
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::HostUnreachable,
            io::ErrorKind::TimedOut,
        ] {
            assert_eq!(
                ending_of(&connect(kind), &facts, MINUTE),
                Ending::Unreachable
            );
        }
        let unavailable = UplinkError::Unavailable {
            broker: "mqtt://b:1883".into(),
        };
        assert_eq!(ending_of(&unavailable, &facts, MINUTE), Ending::Broker);
    }

    #[test]
    fn a_young_session_that_broke_is_a_refusal_only_if_nothing_was_acknowledged() {
        let young = SessionFacts {
            connected_at: Some(Instant::now()),
            ..SessionFacts::default()
        };
        assert_eq!(ending_of(&io_error(), &young, MINUTE), Ending::Broker);
        let status_acked = SessionFacts {
            proven: true,
            ..young
        };
        assert_eq!(
            ending_of(&io_error(), &status_acked, MINUTE),
            Ending::Dropped
        );
        assert_eq!(
            ending_of(&io_error(), &young, Duration::ZERO),
            Ending::Dropped,
            "a session that lasted reset_after"
        );
    }
}
