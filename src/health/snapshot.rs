//! The health snapshot (the JSON of `GET /health`) and [`HealthState`], the shared handle the
//! stages publish into.
//!
//! In: each stage calls its setter (`set_gnss`, `set_buffer`, `set_mqtt`) with plain facts and
//! monotonic instants, `record_error` with any [`Classified`] error, and the main loop calls
//! `heartbeat`. Out: [`HealthState::snapshot`] builds a [`Snapshot`] with ages computed at
//! that moment from the injected [`Clock`], and [`HealthState::subscribe`] tells
//! `/health/stream` when something an operator would notice changed. This module must never
//! block a stage: setters take one short, uncontended lock and never wait for a reader.
//!
//! Status rule (worst wins): each stage decides its own component `status`; the overall
//! `status` is the worst of the three: any `unhealthy` component makes the agent `unhealthy`,
//! else any `degraded` makes it `degraded`, else it is `healthy`. Before a stage has published
//! anything its component starts as: gnss `degraded` (no fix yet: a cold start is normal,
//! not a failure), buffer `healthy` (empty), mqtt `degraded` (not connected yet).

use crate::error::Classified;
use crate::rejection::{Reason, ReasonCounts};
use chrono::{DateTime, Utc};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use std::collections::VecDeque;
use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Longest `last_error.message` kept: error texts can embed peer data (paths, broker
/// replies); the endpoint must stay small.
const MAX_ERROR_MESSAGE: usize = 256;
/// Samples of `acked_seq` kept to estimate the drain rate (one per second at most).
const DRAIN_SAMPLES: usize = 16;
/// The drain rate is estimated over at most this much recent history, so an old burst does
/// not promise a fast drain after the link went quiet.
const DRAIN_WINDOW: Duration = Duration::from_secs(60);
/// Minimum spacing of drain samples; stages may publish far more often.
const DRAIN_SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Time as the health module sees it: monotonic for ages, wall clock for `time` and
/// `last_error.at`. Injectable so tests control ages without sleeping.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
    fn wall(&self) -> DateTime<Utc>;
}

/// The host's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    wall_base: DateTime<Utc>,
    offset_ms: AtomicU64,
}

impl ManualClock {
    pub fn new(wall_base: DateTime<Utc>) -> Self {
        ManualClock {
            base: Instant::now(),
            wall_base,
            offset_ms: AtomicU64::new(0),
        }
    }

    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    fn offset(&self) -> Duration {
        Duration::from_millis(self.offset_ms.load(Ordering::SeqCst))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base.checked_add(self.offset()).unwrap_or(self.base)
    }
    fn wall(&self) -> DateTime<Utc> {
        chrono::Duration::from_std(self.offset())
            .ok()
            .and_then(|d| self.wall_base.checked_add_signed(d))
            .unwrap_or(self.wall_base)
    }
}

/// A component's (and the agent's) health. Ordered from best to worst, so the overall status
/// is the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Healthy,
    Degraded,
    Unhealthy,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }
}

/// The receiver's current fix, as the spec spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum FixState {
    #[serde(rename = "none")]
    None,
    #[serde(rename = "2d")]
    TwoD,
    #[serde(rename = "3d")]
    ThreeD,
}

impl From<crate::fix::FixMode> for FixState {
    fn from(mode: crate::fix::FixMode) -> Self {
        match mode {
            crate::fix::FixMode::TwoD => FixState::TwoD,
            crate::fix::FixMode::ThreeD => FixState::ThreeD,
        }
    }
}

/// The uplink's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// The three components of the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    Gnss,
    Buffer,
    Mqtt,
}

impl Component {
    fn slot(self) -> usize {
        match self {
            Component::Gnss => 0,
            Component::Buffer => 1,
            Component::Mqtt => 2,
        }
    }
}

/// What the GNSS stage publishes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GnssHealth {
    pub status: Status,
    pub fix: FixState,
    /// When the last fix was accepted (host monotonic clock); `None` before the first.
    pub last_fix_at: Option<Instant>,
    /// Rejected epochs since start, by reason.
    pub rejected: ReasonCounts,
}

impl Default for GnssHealth {
    fn default() -> Self {
        GnssHealth {
            status: Status::Degraded,
            fix: FixState::None,
            last_fix_at: None,
            rejected: ReasonCounts::default(),
        }
    }
}

/// What the buffer stage publishes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BufferHealth {
    pub status: Status,
    /// Fixes stored and not yet acknowledged.
    pub depth: u64,
    /// Receiver time (ms since the Unix epoch) of the oldest stored fix. Receiver time, not an
    /// `Instant`, because the oldest fix may predate this process (kept across restarts).
    pub oldest_time_ms: Option<i64>,
    /// Highest `seq` the broker acknowledged; 0 before the first (seqs start at 1).
    pub acked_seq: u64,
    pub evicted: u64,
    pub dead_letters: u64,
    /// Fixes held in memory only (disk failing, file not open), part of `depth`.
    pub in_memory: u64,
}

impl Default for BufferHealth {
    fn default() -> Self {
        BufferHealth {
            status: Status::Healthy,
            depth: 0,
            oldest_time_ms: None,
            acked_seq: 0,
            evicted: 0,
            dead_letters: 0,
            in_memory: 0,
        }
    }
}

/// What the MQTT uplink publishes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MqttHealth {
    pub status: Status,
    pub connected: bool,
    pub breaker: BreakerState,
    /// Reconnections since start (the first connection is not one).
    pub reconnects: u64,
    /// When the broker last acknowledged a message (host monotonic clock).
    pub last_ack_at: Option<Instant>,
}

impl Default for MqttHealth {
    fn default() -> Self {
        MqttHealth {
            status: Status::Degraded,
            connected: false,
            breaker: BreakerState::Closed,
            reconnects: 0,
            last_ack_at: None,
        }
    }
}

/// A component's most recent error: stable code, human message, wall time (RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    pub code: &'static str,
    pub message: String,
    pub at: String,
}

/// `components.gnss` of the snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GnssSnapshot {
    pub status: Status,
    pub fix: FixState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_fix_age_s: Option<f64>,
    pub rejected: RejectedCounts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
}

/// `components.buffer` of the snapshot. `oldest_age_s` is left out when the buffer is empty,
/// `drain_eta_s` when no drain rate is known yet (no acknowledgements in the last minute
/// while fixes wait); it is 0 when the buffer is empty.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BufferSnapshot {
    pub status: Status,
    pub depth: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_age_s: Option<f64>,
    pub acked_seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_eta_s: Option<f64>,
    pub evicted: u64,
    pub dead_letters: u64,
    pub in_memory: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
}

/// `components.mqtt` of the snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MqttSnapshot {
    pub status: Status,
    pub connected: bool,
    pub breaker: BreakerState,
    pub reconnects: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ack_age_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Components {
    pub gnss: GnssSnapshot,
    pub buffer: BufferSnapshot,
    pub mqtt: MqttSnapshot,
}

/// The whole `GET /health` answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub status: Status,
    /// Host wall time of the snapshot, RFC 3339 UTC with milliseconds.
    pub time: String,
    pub uptime_s: f64,
    pub version: &'static str,
    pub components: Components,
}

/// Rejections by reason code: every code of the spec is present (0 when none), in the stable
/// order of [`Reason::ALL`], so dashboards see a fixed set of keys.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RejectedCounts(pub ReasonCounts);

impl Serialize for RejectedCounts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(Reason::ALL.len()))?;
        for reason in Reason::ALL {
            m.serialize_entry(reason.as_str(), &self.0.get(reason))?;
        }
        m.end()
    }
}

/// What counts as a change for `/health/stream`: what an operator watching would notice.
/// Counters and ages are left out on purpose; they move all the time and the once-a-second
/// line shows them anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChangeKey {
    statuses: [Status; 3],
    fix: FixState,
    connected: bool,
    breaker: BreakerState,
    errors: [Option<(&'static str, String)>; 3],
}

/// Recent `(when, acked_seq)` samples, to turn acknowledgements into a drain rate.
#[derive(Debug, Default)]
struct DrainRate {
    samples: VecDeque<(Instant, u64)>,
}

impl DrainRate {
    fn record(&mut self, now: Instant, acked_seq: u64) {
        if let Some(&(at, seq)) = self.samples.back() {
            if acked_seq < seq {
                // A new stream (buffer file recreated): the old history says nothing.
                self.samples.clear();
            } else if now.saturating_duration_since(at) < DRAIN_SAMPLE_EVERY {
                return;
            }
        }
        self.samples.push_back((now, acked_seq));
        while self.samples.len() > DRAIN_SAMPLES {
            self.samples.pop_front();
        }
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|&(at, _)| now.saturating_duration_since(at) > DRAIN_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Fixes acknowledged per second over the recent window, counting the silence since the
    /// newest sample (acks that stopped are a rate going to zero, not a frozen one).
    fn per_second(&self, now: Instant) -> Option<f64> {
        let (first_at, first_seq) = *self.samples.front()?;
        let (_, last_seq) = *self.samples.back()?;
        let span = now.saturating_duration_since(first_at).as_secs_f64();
        let acked = last_seq.saturating_sub(first_seq) as f64;
        if span <= 0.0 || acked <= 0.0 {
            return None;
        }
        Some(acked / span)
    }
}

#[derive(Debug)]
struct Cells {
    gnss: GnssHealth,
    buffer: BufferHealth,
    mqtt: MqttHealth,
    errors: [Option<LastError>; 3],
    drain: DrainRate,
    heartbeat: Instant,
}

impl Cells {
    fn change_key(&self) -> ChangeKey {
        ChangeKey {
            statuses: [self.gnss.status, self.buffer.status, self.mqtt.status],
            fix: self.gnss.fix,
            connected: self.mqtt.connected,
            breaker: self.mqtt.breaker,
            errors: self.errors.clone().map(|e| e.map(|e| (e.code, e.at))),
        }
    }
}

struct Inner {
    clock: Arc<dyn Clock>,
    started: Instant,
    cells: Mutex<Cells>,
    /// Bumped on every change (see [`ChangeKey`]); `/health/stream` waits on it.
    changes: watch::Sender<u64>,
}

/// The shared health handle: cheap to clone, one per stage.
#[derive(Clone)]
pub struct HealthState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthState").finish_non_exhaustive()
    }
}

impl Default for HealthState {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthState {
    /// A state on the host's clocks.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        let (changes, _) = watch::channel(0);
        HealthState {
            inner: Arc::new(Inner {
                clock,
                started: now,
                cells: Mutex::new(Cells {
                    gnss: GnssHealth::default(),
                    buffer: BufferHealth::default(),
                    mqtt: MqttHealth::default(),
                    errors: [None, None, None],
                    drain: DrainRate::default(),
                    heartbeat: now,
                }),
                changes,
            }),
        }
    }

    /// The state's clock, for stages that want instants on the same time base.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The current instant on the state's clock (use it for `last_fix_at`, `last_ack_at`).
    pub fn now(&self) -> Instant {
        self.inner.clock.now()
    }

    fn cells(&self) -> MutexGuard<'_, Cells> {
        // A panic elsewhere while holding the lock leaves plain data behind, still readable;
        // health must keep answering rather than propagate the poison.
        self.inner
            .cells
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Cells, Instant)) {
        let now = self.inner.clock.now();
        let changed = {
            let mut cells = self.cells();
            let before = cells.change_key();
            f(&mut cells, now);
            cells.change_key() != before
        };
        if changed {
            self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    pub fn set_gnss(&self, gnss: GnssHealth) {
        self.update(|c, _| c.gnss = gnss);
    }

    pub fn set_buffer(&self, buffer: BufferHealth) {
        self.update(|c, now| {
            c.drain.record(now, buffer.acked_seq);
            c.buffer = buffer;
        });
    }

    pub fn set_mqtt(&self, mqtt: MqttHealth) {
        self.update(|c, _| c.mqtt = mqtt);
    }

    /// Remember `error` as the component's `last_error` (code, message, now).
    pub fn record_error<E: Classified + Display + ?Sized>(&self, component: Component, error: &E) {
        let at = crate::fix::format_time_ms(self.inner.clock.wall().timestamp_millis());
        let last = LastError {
            code: error.code(),
            message: bounded_message(&error.to_string()),
            at,
        };
        self.update(|c, _| {
            if let Some(slot) = c.errors.get_mut(component.slot()) {
                *slot = Some(last);
            }
        });
    }

    /// Set the component's `last_error` from one a stage already recorded (its own code,
    /// message and time), e.g. the buffer's or the serial source's.
    pub fn set_error(&self, component: Component, code: &'static str, message: &str, at: String) {
        let last = LastError {
            code,
            message: bounded_message(message),
            at,
        };
        self.update(|c, _| {
            if let Some(slot) = c.errors.get_mut(component.slot()) {
                if slot.as_ref() != Some(&last) {
                    *slot = Some(last);
                }
            }
        });
    }

    /// Forget the component's `last_error` (e.g. after a sustained recovery).
    pub fn clear_error(&self, component: Component) {
        self.update(|c, _| {
            if let Some(slot) = c.errors.get_mut(component.slot()) {
                *slot = None;
            }
        });
    }

    /// The main loop is alive. `/live` answers 200 while the last heartbeat is recent.
    pub fn heartbeat(&self) {
        let now = self.inner.clock.now();
        self.cells().heartbeat = now;
    }

    /// Time since the last heartbeat (or since start, before the first).
    pub fn since_heartbeat(&self) -> Duration {
        let now = self.inner.clock.now();
        now.saturating_duration_since(self.cells().heartbeat)
    }

    /// A receiver that sees a new value whenever the snapshot changed in a way an operator
    /// would notice (statuses, fix, connection, breaker, a new error).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// The snapshot now, ages computed from the clock.
    pub fn snapshot(&self) -> Snapshot {
        let now = self.inner.clock.now();
        let wall = self.inner.clock.wall();
        let (gnss, buffer, mqtt, errors, rate) = {
            let c = self.cells();
            (
                c.gnss,
                c.buffer,
                c.mqtt,
                c.errors.clone(),
                c.drain.per_second(now),
            )
        };
        let [gnss_error, buffer_error, mqtt_error] = errors;
        let age = |at: Option<Instant>| at.map(|at| seconds(now.saturating_duration_since(at)));
        let oldest_age_s = buffer.oldest_time_ms.map(|t| {
            let ms = wall.timestamp_millis().saturating_sub(t).max(0);
            round_ms(ms as f64 / 1000.0)
        });
        let drain_eta_s = if buffer.depth == 0 {
            Some(0.0)
        } else {
            rate.map(|r| round_ms(buffer.depth as f64 / r))
        };
        Snapshot {
            status: gnss.status.max(buffer.status).max(mqtt.status),
            time: crate::fix::format_time_ms(wall.timestamp_millis()),
            uptime_s: seconds(now.saturating_duration_since(self.inner.started)),
            version: env!("CARGO_PKG_VERSION"),
            components: Components {
                gnss: GnssSnapshot {
                    status: gnss.status,
                    fix: gnss.fix,
                    last_fix_age_s: age(gnss.last_fix_at),
                    rejected: RejectedCounts(gnss.rejected),
                    last_error: gnss_error,
                },
                buffer: BufferSnapshot {
                    status: buffer.status,
                    depth: buffer.depth,
                    oldest_age_s,
                    acked_seq: buffer.acked_seq,
                    drain_eta_s,
                    evicted: buffer.evicted,
                    dead_letters: buffer.dead_letters,
                    in_memory: buffer.in_memory,
                    last_error: buffer_error,
                },
                mqtt: MqttSnapshot {
                    status: mqtt.status,
                    connected: mqtt.connected,
                    breaker: mqtt.breaker,
                    reconnects: mqtt.reconnects,
                    last_ack_age_s: age(mqtt.last_ack_at),
                    last_error: mqtt_error,
                },
            },
        }
    }
}

fn seconds(d: Duration) -> f64 {
    round_ms(d.as_secs_f64())
}

/// Millisecond resolution: more digits would only be noise in the JSON.
fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

fn bounded_message(message: &str) -> String {
    match message.char_indices().nth(MAX_ERROR_MESSAGE) {
        Some((cut, _)) => format!("{}…", message.get(..cut).unwrap_or(message)),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;

    #[derive(Debug, thiserror::Error)]
    #[error("broker refused: {0}")]
    struct Refused(String);

    impl Classified for Refused {
        fn code(&self) -> &'static str {
            "MQTT_REFUSED"
        }
        fn class(&self) -> ErrorClass {
            ErrorClass::Transient
        }
    }

    fn manual() -> (Arc<ManualClock>, HealthState) {
        let wall = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
        let clock = Arc::new(ManualClock::new(wall));
        let state = HealthState::with_clock(clock.clone());
        (clock, state)
    }

    #[test]
    fn worst_component_decides_the_overall_status() {
        let (_, state) = manual();
        state.set_gnss(GnssHealth {
            status: Status::Healthy,
            ..Default::default()
        });
        state.set_mqtt(MqttHealth {
            status: Status::Healthy,
            ..Default::default()
        });
        assert_eq!(state.snapshot().status, Status::Healthy);
        state.set_buffer(BufferHealth {
            status: Status::Degraded,
            ..Default::default()
        });
        assert_eq!(state.snapshot().status, Status::Degraded);
        state.set_mqtt(MqttHealth {
            status: Status::Unhealthy,
            ..Default::default()
        });
        assert_eq!(state.snapshot().status, Status::Unhealthy);
    }

    #[test]
    fn a_fresh_state_is_degraded_until_a_fix_and_a_connection() {
        let (_, state) = manual();
        let snap = state.snapshot();
        assert_eq!(snap.status, Status::Degraded);
        assert_eq!(snap.components.gnss.fix, FixState::None);
        assert!(snap.components.gnss.last_fix_age_s.is_none());
    }

    #[test]
    fn ages_grow_with_the_clock() {
        let (clock, state) = manual();
        state.set_gnss(GnssHealth {
            status: Status::Healthy,
            fix: FixState::ThreeD,
            last_fix_at: Some(state.now()),
            rejected: ReasonCounts::default(),
        });
        state.set_mqtt(MqttHealth {
            last_ack_at: Some(state.now()),
            ..Default::default()
        });
        clock.advance(Duration::from_millis(2_500));
        let snap = state.snapshot();
        assert_eq!(snap.components.gnss.last_fix_age_s, Some(2.5));
        assert_eq!(snap.components.mqtt.last_ack_age_s, Some(2.5));
        assert_eq!(snap.uptime_s, 2.5);
        assert_eq!(snap.time, "2023-11-14T22:13:22.500Z");
    }

    #[test]
    fn oldest_age_comes_from_the_receiver_time_of_the_oldest_fix() {
        let (_, state) = manual();
        state.set_buffer(BufferHealth {
            depth: 3,
            oldest_time_ms: Some(1_700_000_000_000 - 90_000),
            ..Default::default()
        });
        assert_eq!(state.snapshot().components.buffer.oldest_age_s, Some(90.0));
    }

    #[test]
    fn drain_eta_follows_the_acknowledgement_rate() {
        let (clock, state) = manual();
        let mut buffer = BufferHealth {
            depth: 100,
            ..Default::default()
        };
        state.set_buffer(buffer);
        assert_eq!(state.snapshot().components.buffer.drain_eta_s, None);
        for _ in 0..10 {
            clock.advance(Duration::from_secs(1));
            buffer.acked_seq += 10;
            state.set_buffer(buffer);
        }
        // 100 acked in 10 s, 100 waiting: about 10 s to drain.
        assert_eq!(state.snapshot().components.buffer.drain_eta_s, Some(10.0));
        buffer.depth = 0;
        state.set_buffer(buffer);
        assert_eq!(state.snapshot().components.buffer.drain_eta_s, Some(0.0));
    }

    #[test]
    fn a_recorded_error_carries_code_message_and_time_until_cleared() {
        let (_, state) = manual();
        state.record_error(Component::Mqtt, &Refused("x".repeat(1000)));
        let snap = state.snapshot();
        let err = snap.components.mqtt.last_error.unwrap();
        assert_eq!(err.code, "MQTT_REFUSED");
        assert!(err.message.starts_with("broker refused: x"));
        assert!(err.message.chars().count() <= MAX_ERROR_MESSAGE + 1);
        assert_eq!(err.at, "2023-11-14T22:13:20.000Z");
        assert!(snap.components.gnss.last_error.is_none());
        state.clear_error(Component::Mqtt);
        assert!(state.snapshot().components.mqtt.last_error.is_none());
    }

    #[test]
    fn only_noticeable_changes_wake_the_stream() {
        let (_, state) = manual();
        let rx = state.subscribe();
        state.set_buffer(BufferHealth {
            depth: 5,
            ..Default::default()
        });
        assert!(
            !rx.has_changed().unwrap(),
            "a depth change alone is not news"
        );
        state.set_mqtt(MqttHealth {
            connected: true,
            ..Default::default()
        });
        assert!(rx.has_changed().unwrap(), "a connection is news");
    }

    #[test]
    fn json_has_the_spec_keys_and_omits_unknown_ages() {
        let (_, state) = manual();
        let v = serde_json::to_value(state.snapshot()).unwrap();
        assert_eq!(v["status"], "degraded");
        assert_eq!(v["components"]["gnss"]["fix"], "none");
        assert_eq!(v["components"]["gnss"]["rejected"]["checksum"], 0);
        assert_eq!(v["components"]["mqtt"]["breaker"], "closed");
        assert!(v["components"]["gnss"].get("last_fix_age_s").is_none());
        assert!(v["components"]["gnss"].get("last_error").is_none());
    }
}
