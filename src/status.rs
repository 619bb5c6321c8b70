//! The one status vocabulary, and the [`StatusBoard`] every stage publishes into.
//!
//! Each stage pushes its own state here when it changes: the GNSS stage ([`GnssStatus`], from
//! the ingest thread), the buffer ([`BufferStatus`], after each commit, ack and open) and the
//! uplink ([`MqttStatus`], at each connect, failure, ack and breaker move). Nobody polls a
//! stage. `/health`, `/health/stream`, `/metrics` and systemd's `STATUS=` line are pure
//! functions of the board's [`Cells`] and the [`Clock`] (see `crate::health::snapshot`).
//!
//! A [`LastError`] is stamped when the error happens, with the wall clock of the board's
//! [`Clock`], and keeps that time until a newer error replaces it. Publishing takes one short,
//! uncontended lock and never waits for a reader: a stage never blocks on the endpoint.

use crate::clock::Clock;
use crate::error::{Classified, ErrorClass};
use crate::fix::FixMode;
use crate::rejection::ReasonCounts;
use serde::Serialize;
use std::collections::VecDeque;
use std::fmt::Display;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A component's (and the agent's) health. Ordered from best to worst, so the overall status
/// is the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
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

/// The uplink's circuit breaker, as `/health` and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    #[default]
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

/// Whether the network path to the broker works, as the uplink last saw it: a connection or a
/// reachability probe got through (`up`), or a probe or connect found the broker's port
/// unreachable (`down`); `unknown` before either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PathState {
    #[default]
    Unknown,
    Up,
    Down,
}

impl PathState {
    pub fn as_str(self) -> &'static str {
        match self {
            PathState::Unknown => "unknown",
            PathState::Up => "up",
            PathState::Down => "down",
        }
    }
}

/// The receiver's current fix, as the spec spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
pub enum FixState {
    #[default]
    #[serde(rename = "none")]
    None,
    #[serde(rename = "2d")]
    TwoD,
    #[serde(rename = "3d")]
    ThreeD,
}

impl FixState {
    pub fn as_str(self) -> &'static str {
        match self {
            FixState::None => "none",
            FixState::TwoD => "2d",
            FixState::ThreeD => "3d",
        }
    }
}

impl From<FixMode> for FixState {
    fn from(mode: FixMode) -> Self {
        match mode {
            FixMode::TwoD => FixState::TwoD,
            FixMode::ThreeD => FixState::ThreeD,
        }
    }
}

/// Longest `last_error.message` kept, in characters: error texts can embed peer data (paths, broker
/// replies); the endpoint must stay small.
const MAX_ERROR_MESSAGE: usize = 256;

/// A component's most recent error: stable code, class, human message, and the wall time
/// (Unix ms) at which it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    pub code: &'static str,
    pub class: ErrorClass,
    pub message: String,
    pub at_ms: i64,
}

impl LastError {
    /// `error`, as it happened at `at_ms` (wall clock, Unix ms).
    pub fn new<E: Classified + Display + ?Sized>(error: &E, at_ms: i64) -> Self {
        Self::from_parts(error.code(), error.class(), &error.to_string(), at_ms)
    }

    /// An error known by its code, class and message, as it happened at `at_ms`.
    pub fn from_parts(code: &'static str, class: ErrorClass, message: &str, at_ms: i64) -> Self {
        LastError {
            code,
            class,
            message: bounded_message(message),
            at_ms,
        }
    }
}

fn bounded_message(message: &str) -> String {
    match message.char_indices().nth(MAX_ERROR_MESSAGE) {
        Some((cut, _)) => format!("{}…", message.get(..cut).unwrap_or(message)),
        None => message.to_owned(),
    }
}

/// The newest accepted fix, as the GNSS stage last saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LastFix {
    /// When it was accepted (monotonic).
    pub at: Instant,
    pub mode: FixMode,
}

/// What the GNSS stage (source and ingest) publishes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GnssStatus {
    /// The receiver is open (serial) or the log is being read.
    pub connected: bool,
    /// Epochs accepted as fixes since start.
    pub accepted: u64,
    /// Rejected epochs since start, by reason.
    pub rejected: ReasonCounts,
    /// Accepted fixes the report policy kept (buffered) and dropped (never buffered).
    pub kept: u64,
    pub dropped_by_policy: u64,
    pub last_fix: Option<LastFix>,
    /// Times the receiver went away (unplugged, read errors, stuck and reopened).
    pub outages: u64,
    pub last_error: Option<LastError>,
}

/// What the buffer publishes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BufferStatus {
    /// The buffer's own judgement: healthy; degraded while fixes wait in memory for a disk
    /// that cannot be written or opened; unhealthy after a damaged file was moved aside.
    pub condition: Status,
    /// Fixes waiting for the broker: in the file, plus those held in memory.
    pub depth: u64,
    /// Of `depth`, the fixes held in memory (no seq yet) while the disk fails.
    pub in_memory: u64,
    /// Receiver time (Unix ms) of the oldest waiting fix.
    pub oldest_time_ms: Option<i64>,
    /// Fixes dropped by the capacity policy (file and memory) since the file was made.
    pub evicted: u64,
    pub dead_letters: u64,
    /// Size of the file plus its WAL.
    pub bytes: u64,
    /// Fixes gone for good: unreadable in a damaged file, or held only in memory when the
    /// agent stopped.
    pub lost: u64,
    /// How often the file had to be rescued while the agent ran.
    pub rescues: Rescues,
    pub last_error: Option<LastError>,
    /// The local history in the buffer's file (`[history]`).
    pub history: HistoryStatus,
}

/// What the local history holds and what it could not keep, as the buffer publishes it
/// (counted where it happens, in `buffer/history.rs`; no query per publish).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryStatus {
    /// Accepted fixes are kept this run: `keep_days` > 0 and the table could be made.
    pub on: bool,
    /// `[history] keep_days` (zero when off by config).
    pub keep: Duration,
    /// Rows in the file (those of the open transaction included).
    pub rows: u64,
    /// Rows evicted by `max_bytes` since the table was made.
    pub evicted: u64,
    /// Accepted fixes that never became rows, by reason, since the table was made.
    pub dropped: HistoryDropped,
    /// Receiver time (Unix ms) of the oldest row, as last known.
    pub oldest_ms: Option<i64>,
}

/// Why an accepted fix never became a row of the local history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HistoryDrop {
    /// More fixes waited for a commit than `memory_ring` while the file took writes (the
    /// crash journal gave back more than that at open).
    Backlog,
    /// A fifth different fix of one millisecond of receiver time (the key holds four).
    SameMs,
    /// More fixes than `memory_ring` accepted while the buffer ran on its memory ring (the
    /// disk failing, or the file not open): the oldest waiting one went.
    Memory,
}

impl HistoryDrop {
    pub const ALL: [HistoryDrop; 3] = [
        HistoryDrop::Backlog,
        HistoryDrop::SameMs,
        HistoryDrop::Memory,
    ];

    /// The metric's `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryDrop::Backlog => "backlog",
            HistoryDrop::SameMs => "same_ms",
            HistoryDrop::Memory => "memory",
        }
    }
}

/// Fixes the history dropped, by [`HistoryDrop`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryDropped {
    pub backlog: u64,
    pub same_ms: u64,
    pub memory: u64,
}

impl HistoryDropped {
    pub fn get(&self, reason: HistoryDrop) -> u64 {
        match reason {
            HistoryDrop::Backlog => self.backlog,
            HistoryDrop::SameMs => self.same_ms,
            HistoryDrop::Memory => self.memory,
        }
    }

    pub fn add(&mut self, reason: HistoryDrop, n: u64) {
        let slot = match reason {
            HistoryDrop::Backlog => &mut self.backlog,
            HistoryDrop::SameMs => &mut self.same_ms,
            HistoryDrop::Memory => &mut self.memory,
        };
        *slot = slot.saturating_add(n);
    }

    /// All reasons.
    pub fn total(&self) -> u64 {
        HistoryDrop::ALL
            .iter()
            .fold(0u64, |t, &r| t.saturating_add(self.get(r)))
    }
}

/// How the buffer's file was rescued while the agent ran, counted for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rescues {
    /// The path no longer named the open file; it was written back (`BUFFER_FILE_GONE`).
    pub restored: u64,
    /// The file was damaged or truncated; moved aside, new stream (`BUFFER_CORRUPT`).
    pub quarantined: u64,
    /// Rows set aside as dead letters because they could not be read back
    /// (`BUFFER_CORRUPT_RECORD`).
    pub corrupt_records: u64,
}

/// What the MQTT uplink publishes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqttStatus {
    pub connected: bool,
    pub breaker: BreakerState,
    /// Connections made after the first.
    pub reconnects: u64,
    /// When the broker last acknowledged a message (monotonic).
    pub last_ack_at: Option<Instant>,
    /// Highest seq acknowledged; 0 before the first (seqs start at 1).
    pub acked_seq: u64,
    /// While not connected: when the next connection attempt or reachability probe is due
    /// (monotonic).
    pub retry_at: Option<Instant>,
    /// The network path to the broker, as the last connection or probe saw it.
    pub path: PathState,
    /// The broker's endpoint in use (`mqtt.url` or one of `mqtt.fallback_urls`): the one
    /// connected to, or where the next probe or attempt goes; empty before the uplink runs.
    pub endpoint: String,
    /// Reachability probes (TCP connects to the broker's port) that got through, and that
    /// did not.
    pub probes_ok: u64,
    pub probes_failed: u64,
    /// Full connection attempts (TCP, TLS, MQTT CONNECT) since start.
    pub connect_attempts: u64,
    /// When the uplink last began a probe or a full attempt, or lost its connection
    /// (monotonic): facts the wedge check counts from, whatever the pacing says.
    pub last_try_at: Option<Instant>,
    /// Not connected and nothing tried for longer than this: the uplink is wedged
    /// (`MQTT_WEDGED`). The reconnect policy's liveness bound plus the longest an attempt
    /// may take; `None` until the uplink runs.
    pub wedge_after: Option<Duration>,
    /// The largest message payload the uplink sends now, when it learned that the broker
    /// drops larger ones (below `max_message_bytes`); `None` while no limit was learned.
    pub message_limit: Option<usize>,
    pub last_error: Option<LastError>,
}

/// The three components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    Gnss,
    Buffer,
    Mqtt,
}

/// Samples of `acked_seq` kept to estimate the drain rate (one per second at most).
const DRAIN_SAMPLES: usize = 16;
/// The drain rate is estimated over at most this much recent history, so an old burst does
/// not promise a fast drain after the link went quiet.
const DRAIN_WINDOW: Duration = Duration::from_secs(60);
/// Minimum spacing of drain samples; the uplink may publish far more often.
const DRAIN_SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Recent `(when, acked_seq)` samples, to turn acknowledgements into a drain rate.
#[derive(Debug, Default, Clone)]
pub struct DrainRate {
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
    pub fn per_second(&self, now: Instant) -> Option<f64> {
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

/// Everything the stages published, as one value.
#[derive(Debug, Clone)]
pub struct Cells {
    pub gnss: GnssStatus,
    pub buffer: BufferStatus,
    pub mqtt: MqttStatus,
    pub drain: DrainRate,
    /// The main loop's last sign of life (`/live`).
    pub heartbeat: Instant,
    /// When the agent started.
    pub started: Instant,
}

/// What counts as a change for `/health/stream`: what an operator watching would notice.
/// Counters and ages are left out on purpose; they move all the time and the once-a-second
/// line shows them anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChangeKey {
    gnss_connected: bool,
    fix: Option<FixMode>,
    buffer: Status,
    connected: bool,
    breaker: BreakerState,
    path: PathState,
    errors: [Option<(&'static str, i64)>; 3],
}

impl Cells {
    fn change_key(&self) -> ChangeKey {
        let error = |e: &Option<LastError>| e.as_ref().map(|e| (e.code, e.at_ms));
        ChangeKey {
            gnss_connected: self.gnss.connected,
            fix: self.gnss.last_fix.map(|f| f.mode),
            buffer: self.buffer.condition,
            connected: self.mqtt.connected,
            breaker: self.mqtt.breaker,
            path: self.mqtt.path,
            errors: [
                error(&self.gnss.last_error),
                error(&self.buffer.last_error),
                error(&self.mqtt.last_error),
            ],
        }
    }
}

struct Inner {
    clock: Clock,
    cells: Mutex<Cells>,
    /// Bumped on every change (see [`ChangeKey`]); `/health/stream` waits on it.
    changes: watch::Sender<u64>,
}

/// The shared board: cheap to clone, one handle per stage.
#[derive(Clone)]
pub struct StatusBoard {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StatusBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusBoard").finish_non_exhaustive()
    }
}

impl Default for StatusBoard {
    fn default() -> Self {
        StatusBoard::new(Clock::system())
    }
}

impl StatusBoard {
    pub fn new(clock: Clock) -> Self {
        let now = clock.now();
        let (changes, _) = watch::channel(0);
        StatusBoard {
            inner: Arc::new(Inner {
                clock,
                cells: Mutex::new(Cells {
                    gnss: GnssStatus::default(),
                    buffer: BufferStatus::default(),
                    mqtt: MqttStatus::default(),
                    drain: DrainRate::default(),
                    heartbeat: now,
                    started: now,
                }),
                changes,
            }),
        }
    }

    /// The board's clock: the one the agent runs on.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// `error` as it happens now, stamped with the board's wall clock.
    pub fn error_now<E: Classified + Display + ?Sized>(&self, error: &E) -> LastError {
        LastError::new(error, self.inner.clock.wall_ms())
    }

    fn cells(&self) -> MutexGuard<'_, Cells> {
        // A panic elsewhere while holding the lock leaves plain data behind, still readable;
        // health must keep answering rather than propagate the poison.
        self.inner
            .cells
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Cells)) {
        let changed = {
            let mut cells = self.cells();
            let before = cells.change_key();
            f(&mut cells);
            cells.change_key() != before
        };
        if changed {
            self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The GNSS stage publishes.
    pub fn gnss(&self, f: impl FnOnce(&mut GnssStatus)) {
        self.update(|c| f(&mut c.gnss));
    }

    /// The buffer publishes.
    pub fn buffer(&self, f: impl FnOnce(&mut BufferStatus)) {
        self.update(|c| f(&mut c.buffer));
    }

    /// The uplink publishes; acknowledgements feed the drain rate.
    pub fn mqtt(&self, f: impl FnOnce(&mut MqttStatus)) {
        let now = self.inner.clock.now();
        self.update(|c| {
            f(&mut c.mqtt);
            c.drain.record(now, c.mqtt.acked_seq);
        });
    }

    /// The main loop is alive.
    pub fn heartbeat(&self) {
        let now = self.inner.clock.now();
        self.cells().heartbeat = now;
    }

    /// Everything published so far.
    pub fn read(&self) -> Cells {
        self.cells().clone()
    }

    /// A receiver that sees a new value whenever the state changed in a way an operator
    /// would notice (connection, fix, breaker, a buffer condition, a new error).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Refused;
    impl Display for Refused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("refused")
        }
    }
    impl Classified for Refused {
        fn code(&self) -> &'static str {
            "MQTT_REFUSED"
        }
        fn class(&self) -> ErrorClass {
            ErrorClass::Permanent
        }
    }

    #[test]
    fn an_error_keeps_the_time_it_happened_at() {
        let (clock, hand) = Clock::manual(1_773_475_200_000);
        let board = StatusBoard::new(clock);
        let error = board.error_now(&Refused);
        board.mqtt(|m| m.last_error = Some(error));
        hand.advance(Duration::from_secs(30));
        board.mqtt(|m| m.reconnects += 1);
        let at = board
            .read()
            .mqtt
            .last_error
            .map(|e| (e.code, e.class, e.at_ms));
        assert_eq!(
            at,
            Some(("MQTT_REFUSED", ErrorClass::Permanent, 1_773_475_200_000))
        );
    }

    #[test]
    fn only_noticeable_changes_wake_subscribers() {
        let board = StatusBoard::default();
        let mut rx = board.subscribe();
        rx.borrow_and_update();
        board.gnss(|g| g.accepted += 10);
        assert!(!rx.has_changed().unwrap(), "a counter is not a change");
        board.mqtt(|m| m.connected = true);
        assert!(rx.has_changed().unwrap(), "a connection is");
        rx.borrow_and_update();
        board.mqtt(|m| m.connected = true);
        assert!(!rx.has_changed().unwrap(), "the same state again is not");
        let error = board.error_now(&Refused);
        board.buffer(|b| b.last_error = Some(error));
        assert!(rx.has_changed().unwrap(), "a new error is");
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let long = "é".repeat(300);
        let cut = bounded_message(&long);
        assert_eq!(cut.chars().count(), MAX_ERROR_MESSAGE + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(bounded_message("short"), "short");
    }
}
