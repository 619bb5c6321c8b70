//! The publisher: the async loop that moves fixes from a [`FixSource`] (the buffer) to the
//! broker and reports back what was acknowledged.
//!
//! One connection at a time ([`session`]: a fresh rumqttc client and event loop per
//! connection, clean session, dropped when the link breaks, so rumqttc never replays its own
//! copies of messages behind the acknowledgement window; the window releases every
//! unacknowledged fix back to the source instead). Between connections, [`Publisher::serve`]
//! does what [`Reconnect`] says, and nothing else: a reachability probe or a full attempt,
//! through which of the broker's endpoints (`url`, then `fallback_urls`), and when. After
//! every step it shows on the status board what the machine now has (breaker, path, endpoint,
//! the next step's time: [`Publisher::show`], the one writer of those) and what the loop did
//! (attempts, probes, when it last tried: the facts `/health` judges a wedge by).
//!
//! It publishes a retained `online` status after connecting; `offline` is the last will and
//! is published on a clean shutdown. Nothing else goes over the uplink (no periodic status,
//! no metrics) but, with a [`RemotePort`] attached (`[commands] enabled`), the command
//! topic's subscription, the requests handed on as bytes, and the answers and backfill
//! messages the commands stage sends back (see [`crate::uplink::remote`]). Live fixes wait for company ([`Linger`]); messages are capped at what the
//! broker was seen to take ([`MessageLimit`]). It never acknowledges a fix without its
//! PUBACK, never holds more than `window` messages, and never exits on a link failure: only
//! the shutdown token ends [`Publisher::run`].

mod session;

use crate::config::BrokerUrl;
use crate::error::Classified;
use crate::status::{MqttStatus, PathState, StatusBoard};
use crate::uplink::backoff::{Jitter, Xorshift64};
use crate::uplink::limit::MessageLimit;
use crate::uplink::linger::Linger;
use crate::uplink::pace::Pace;
use crate::uplink::probe::probe;
use crate::uplink::profile::{self, Profile, SessionLimits};
use crate::uplink::reconnect::{Ending, Reconnect, Step};
use crate::uplink::remote::RemotePort;
use crate::uplink::settings::tls_made;
use session::{Failure, SessionEnd};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use crate::uplink::credentials::{Password, TlsClient};
pub use crate::uplink::limit::REJECTED_AFTER_DISCONNECTS;
pub use crate::uplink::settings::PublisherSettings;
pub use crate::uplink::source::FixSource;

pub struct Publisher<S: FixSource> {
    settings: PublisherSettings,
    source: S,
    /// The platform's contract: who the agent is, where and how fixes and its state go.
    profile: Box<dyn Profile>,
    reconnect: Reconnect,
    /// What the broker was seen to take: caps each message's payload.
    limit: MessageLimit,
    /// The limit as it was before the last verdict that a dropped link was over a message's
    /// size, until the next connection confirms the broker was there (a probe that a load
    /// balancer answers cannot tell a broker that dropped a message from one that died).
    judged: Option<MessageLimit>,
    /// The TLS client configuration and the fingerprint of the files it was made from:
    /// reused by every connection (session resumption), made again when a file changed.
    tls: Option<(u64, Arc<rustls::ClientConfig>)>,
    /// Where the uplink publishes its state (`components.mqtt`).
    board: StatusBoard,
    connections: u64,
    /// Live fixes taken from the source and waiting for company (in flight for the source
    /// until published or released).
    linger: Linger,
    /// The stream the source was last asked about: the source hands out only fixes of the
    /// stream it last told, and every message is labelled with it.
    stream: String,
    /// The remote commands' seam, when `[commands] enabled`: each connection subscribes to
    /// the command topic and publishes what the commands stage sends.
    remote: Option<RemotePort>,
    /// What the platform said of its limits (ThingsBoard's session limits), kept across
    /// connections until it says otherwise or the settings change.
    platform: SessionLimits,
    /// The platform's rate limits, with what was sent under them (kept across connections:
    /// the platform counts per device, not per connection).
    pace: Pace,
    /// When the pace lets the next fixes message go (set when one had to wait).
    paced_until: Option<Instant>,
    /// The connection whose limits request was answered last.
    limits_answered: u64,
    /// An unanswered or unreadable limits request was said (once).
    limits_said: bool,
}

impl<S: FixSource> Publisher<S> {
    pub fn new(settings: PublisherSettings, source: S, board: StatusBoard) -> Self {
        let reconnect = Reconnect::new(
            settings.reconnect_policy(),
            Jitter::Full(Xorshift64::from_entropy()),
        );
        let p = Publisher {
            profile: profile_of(&settings),
            limit: MessageLimit::new(settings.max_message_bytes),
            judged: None,
            tls: tls_made(&settings),
            linger: Linger::new(settings.linger, settings.batch_max),
            settings,
            source,
            reconnect,
            board,
            connections: 0,
            stream: String::new(),
            remote: None,
            platform: SessionLimits::default(),
            pace: Pace::default(),
            paced_until: None,
            limits_answered: 0,
            limits_said: false,
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
        self.profile = profile_of(&settings);
        self.reconnect = Reconnect::new(
            settings.reconnect_policy(),
            Jitter::Full(Xorshift64::from_entropy()),
        );
        self.limit = MessageLimit::new(settings.max_message_bytes);
        self.judged = None;
        self.tls = tls_made(&settings);
        // Nothing is held between sessions: every session releases what lingered.
        self.linger = Linger::new(settings.linger, settings.batch_max);
        self.platform = SessionLimits::default();
        self.pace = Pace::default();
        self.paced_until = None;
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
    pub(super) fn broker(&self) -> &BrokerUrl {
        self.settings.endpoint(self.reconnect.endpoint())
    }

    /// Take remote commands through `port` (see [`crate::uplink::remote`]).
    pub fn with_remote(mut self, port: RemotePort) -> Self {
        self.remote = Some(port);
        self
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
        while !shutdown.is_cancelled() {
            // What the machine now has, and the very wait the loop then sleeps.
            self.show(Some(step), |_| {});
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(step.at()) => {}
            }
            let next = match step {
                Step::Probe { .. } => self.probe_once(shutdown).await,
                Step::Connect { .. } => match self.reconnect.attempt(Instant::now()) {
                    Some(later) => Some(later),
                    None => self.attempt_once(shutdown).await,
                },
            };
            // `None`: shut down while probing or connected.
            let Some(next) = next else { return };
            step = next;
        }
    }

    /// A reachability probe of the endpoint in use, now; the next step.
    async fn probe_once(&mut self, shutdown: &CancellationToken) -> Option<Step> {
        let at = self.board.clock().now();
        self.show(None, |m| m.last_try_at = Some(at));
        let probed = self.broker().clone();
        let reachable = tokio::select! {
            _ = shutdown.cancelled() => return None,
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
        Some(next)
    }

    /// A full attempt (the machine let it through), and the session if it connects, until
    /// it ends; the next step.
    async fn attempt_once(&mut self, shutdown: &CancellationToken) -> Option<Step> {
        let at = self.board.clock().now();
        self.show(None, |m| {
            m.connect_attempts += 1;
            m.last_try_at = Some(at);
        });
        match self.session(shutdown).await {
            SessionEnd::Shutdown => None,
            SessionEnd::Failed(failure) => Some(self.after_failure(failure)),
            SessionEnd::Renew => {
                // Planned: new credentials before the old expire. Soon, and against nobody.
                let step = self.reconnect.on_end(Instant::now(), Ending::Narrowed);
                info!(
                    profile = self.profile.name().as_str(),
                    "credentials renewed: reconnecting"
                );
                self.show(Some(step), |m| m.connected = false);
                Some(step)
            }
            SessionEnd::Reconnect => {
                // Asked remotely: breaker and backoff start afresh, the next attempt is now.
                self.reconnect = Reconnect::new(
                    self.settings.reconnect_policy(),
                    Jitter::Full(Xorshift64::from_entropy()),
                );
                info!(broker = %self.broker(), "reconnecting now, as a remote command asked");
                self.show(None, |m| m.connected = false);
                Some(self.reconnect.first(Instant::now()))
            }
        }
    }

    /// Pace the next step after a failed attempt or session, say so in the log and on the
    /// board.
    fn after_failure(&mut self, failure: Failure) -> Step {
        let now = Instant::now();
        let failed = self.broker().clone();
        if matches!(failure.ending, Ending::Unserved | Ending::Unreachable) {
            if let Some(limit) = self.judged.take() {
                // The broker was away, not dropping a message it could not take.
                info!(broker = %failed, "broker away after the drop: the size verdict is withdrawn");
                self.limit = limit;
                let learned = self.limit.learned();
                self.board.mqtt(|m| m.message_limit = learned);
            }
        }
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
    pub(super) fn show(&self, next: Option<Step>, more: impl FnOnce(&mut MqttStatus)) {
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
    pub(super) fn count_probe(&self, reachable: bool) {
        self.board.mqtt(|m| {
            if reachable {
                m.probes_ok += 1;
            } else {
                m.probes_failed += 1;
            }
        });
    }
}

/// The profile these settings speak.
fn profile_of(s: &PublisherSettings) -> Box<dyn Profile> {
    profile::for_settings(
        &s.profile,
        &s.device,
        &s.topic_prefix,
        &s.client_id,
        &s.credentials,
        s.payload,
    )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
