//! The health snapshot: the JSON of `GET /health`, a pure function of what the stages
//! published on the [`StatusBoard`](crate::status::StatusBoard) and of the [`Clock`].
//!
//! Ages are computed at the moment of the snapshot: monotonic ones (`uptime_s`,
//! `last_fix_age_s`, `last_ack_age_s`) from the clock's instant, `oldest_age_s` from the
//! receiver-checked UTC ([`Clock::utc_ms`]) because the oldest fix may predate this process,
//! `time` and `last_error.at` from the wall clock.
//!
//! Status rule (worst wins): gnss is `healthy` while the receiver is connected and a fix was
//! accepted in the last [`FIX_STALE_AFTER`], else `degraded` (a cold start is normal, not a
//! failure); buffer is what the buffer judged itself (`degraded` while fixes wait in memory,
//! `unhealthy` after a damaged file was moved aside); mqtt is `healthy` while connected, else
//! `degraded`, and `unhealthy` when wedged. The overall `status` is the worst of the three.
//!
//! **Wedged** (`MQTT_WEDGED`): not connected (so the status, and any buffered fixes, wait to
//! be sent) and no probe or full attempt begun for longer than the reconnect policy's
//! liveness bound plus the longest an attempt takes (`MqttStatus::wedge_after`). Counted
//! from facts the uplink's loop records when it acts (`MqttStatus::last_try_at`), never from
//! what its state machine says it will do (breaker, `retry_at`), so a machine that keeps
//! promising an attempt it never makes is caught, and so is a loop stuck anywhere else.

use crate::clock::Clock;
use crate::rejection::{Reason, ReasonCounts};
use crate::status::{BreakerState, Cells, FixState, HistoryStatus, LastError, PathState, Status};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use std::time::{Duration, Instant};

/// A receiver with no accepted fix for this long is reported degraded, its fix `none`.
pub const FIX_STALE_AFTER: Duration = Duration::from_secs(30);

/// The code of a wedged uplink.
pub const MQTT_WEDGED: &str = "MQTT_WEDGED";

/// `last_error` as the snapshot shows it: code, message, RFC 3339 time it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorView {
    pub code: &'static str,
    pub message: String,
    pub at: String,
}

impl From<&LastError> for ErrorView {
    fn from(e: &LastError) -> Self {
        ErrorView {
            code: e.code,
            message: e.message.clone(),
            at: crate::fix::format_time_ms(e.at_ms),
        }
    }
}

/// `components.gnss` of the snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GnssSnapshot {
    pub status: Status,
    /// The receiver is open (serial) or its log is being read.
    pub connected: bool,
    pub fix: FixState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_fix_age_s: Option<f64>,
    pub rejected: RejectedCounts,
    /// Accepted fixes kept by `[report]` (buffered and sent) and dropped by it, since start.
    pub kept: u64,
    pub dropped_by_policy: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ErrorView>,
}

/// `components.buffer` of the snapshot. `oldest_age_s` is left out when the buffer is empty,
/// `drain_eta_s` when no drain rate is known (no acknowledgements in the last minute while
/// fixes wait, or the uplink is down: an estimate would promise what cannot happen); it is 0
/// when the buffer is empty.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BufferSnapshot {
    pub status: Status,
    pub depth: u64,
    /// Of `depth`, fixes held in memory while the disk cannot be written.
    pub in_memory: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_age_s: Option<f64>,
    pub acked_seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_eta_s: Option<f64>,
    pub evicted: u64,
    pub dead_letters: u64,
    /// The local history in the buffer's file.
    pub history: HistorySnapshot,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ErrorView>,
}

/// `components.buffer.history` of the snapshot: every key always present (`oldest` null
/// without rows), so a dashboard sees a fixed set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistorySnapshot {
    /// Accepted fixes are kept this run (`keep_days` > 0 and the table usable).
    pub on: bool,
    /// As configured (0: off).
    pub keep_days: f64,
    pub rows: u64,
    /// Rows evicted by `max_bytes` since the table was made.
    pub evicted: u64,
    /// Accepted fixes that never became rows, every reason (the metrics split them).
    pub dropped: u64,
    /// Receiver time of the oldest row, RFC 3339.
    pub oldest: Option<String>,
}

impl From<&HistoryStatus> for HistorySnapshot {
    fn from(h: &HistoryStatus) -> Self {
        HistorySnapshot {
            on: h.on,
            keep_days: round_ms(h.keep.as_secs_f64() / 86_400.0),
            rows: h.rows,
            evicted: h.evicted,
            dropped: h.dropped.total(),
            oldest: h.oldest_ms.map(crate::fix::format_time_ms),
        }
    }
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
    /// While not connected: seconds until the next connection attempt or reachability
    /// probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_s: Option<f64>,
    /// The network path to the broker as the last connection or probe found it: `up`,
    /// `down` (the broker's port unreachable: probing), `unknown` before either.
    pub path: PathState,
    /// The broker's endpoint in use (`mqtt.url` or one of `mqtt.fallback_urls`), as
    /// `mqtt://host:port`: connected to, or where the next probe or attempt goes. Left out
    /// before the uplink runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Reachability probes made since start (TCP connects to the broker's port).
    pub probes: u64,
    /// Full connection attempts (TCP, TLS, MQTT CONNECT) since start.
    pub connect_attempts: u64,
    /// The largest message payload sent now, when the broker was found to drop larger ones
    /// (below `max_message_bytes`); left out otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_limit_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ErrorView>,
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

/// Rejections by reason code: every code is present (0 when none), in the stable order of
/// [`Reason::ALL`], so dashboards see a fixed set of keys.
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

/// The snapshot of `cells` now.
pub fn snapshot(cells: &Cells, clock: &Clock) -> Snapshot {
    let now = clock.now();
    let (gnss, buffer, mqtt) = (&cells.gnss, &cells.buffer, &cells.mqtt);
    let age = |at: Option<Instant>| at.map(|at| seconds(now.saturating_duration_since(at)));

    let fresh = gnss
        .last_fix
        .filter(|f| now.saturating_duration_since(f.at) < FIX_STALE_AFTER);
    let gnss_status = if gnss.connected && fresh.is_some() {
        Status::Healthy
    } else {
        Status::Degraded
    };
    let wedged = wedged(cells, clock);
    let mqtt_status = if mqtt.connected {
        Status::Healthy
    } else if wedged.is_some() {
        Status::Unhealthy
    } else {
        Status::Degraded
    };

    let oldest_age_s = buffer.oldest_time_ms.filter(|_| buffer.depth > 0).map(|t| {
        let ms = clock.utc_ms().saturating_sub(t).max(0);
        round_ms(ms as f64 / 1000.0)
    });
    let drain_eta_s = if buffer.depth == 0 {
        Some(0.0)
    } else if !mqtt.connected {
        None
    } else {
        cells
            .drain
            .per_second(now)
            .map(|r| round_ms(buffer.depth as f64 / r))
    };
    Snapshot {
        status: gnss_status.max(buffer.condition).max(mqtt_status),
        time: crate::fix::format_time_ms(clock.wall_ms()),
        uptime_s: seconds(now.saturating_duration_since(cells.started)),
        version: env!("CARGO_PKG_VERSION"),
        components: Components {
            gnss: GnssSnapshot {
                status: gnss_status,
                connected: gnss.connected,
                fix: fresh.map_or(FixState::None, |f| f.mode.into()),
                last_fix_age_s: age(gnss.last_fix.map(|f| f.at)),
                rejected: RejectedCounts(gnss.rejected),
                kept: gnss.kept,
                dropped_by_policy: gnss.dropped_by_policy,
                last_error: gnss.last_error.as_ref().map(ErrorView::from),
            },
            buffer: BufferSnapshot {
                status: buffer.condition,
                depth: buffer.depth,
                in_memory: buffer.in_memory,
                oldest_age_s,
                acked_seq: mqtt.acked_seq,
                drain_eta_s,
                evicted: buffer.evicted,
                dead_letters: buffer.dead_letters,
                history: HistorySnapshot::from(&buffer.history),
                last_error: buffer.last_error.as_ref().map(ErrorView::from),
            },
            mqtt: MqttSnapshot {
                status: mqtt_status,
                connected: mqtt.connected,
                breaker: mqtt.breaker,
                reconnects: mqtt.reconnects,
                last_ack_age_s: age(mqtt.last_ack_at),
                retry_in_s: mqtt
                    .retry_at
                    .filter(|_| !mqtt.connected)
                    .map(|at| seconds(at.saturating_duration_since(now))),
                path: mqtt.path,
                endpoint: Some(mqtt.endpoint.clone()).filter(|e| !e.is_empty()),
                probes: mqtt.probes_ok.saturating_add(mqtt.probes_failed),
                connect_attempts: mqtt.connect_attempts,
                message_limit_bytes: mqtt.message_limit,
                last_error: wedged.or_else(|| mqtt.last_error.as_ref().map(ErrorView::from)),
            },
        },
    }
}

/// `MQTT_WEDGED` as `last_error` shows it, when the uplink is wedged (see the module's doc):
/// `at` is when the bound ran out.
fn wedged(cells: &Cells, clock: &Clock) -> Option<ErrorView> {
    let mqtt = &cells.mqtt;
    let bound = mqtt.wedge_after.filter(|_| !mqtt.connected)?;
    let since = mqtt.last_try_at.unwrap_or(cells.started);
    let now = clock.now();
    let idle = now.saturating_duration_since(since);
    if idle <= bound {
        return None;
    }
    let over = u64::try_from((idle - bound).as_millis()).unwrap_or(u64::MAX);
    let at_ms = clock
        .wall_ms()
        .saturating_sub(i64::try_from(over).unwrap_or(i64::MAX));
    let waiting = match cells.buffer.depth {
        0 => "the status waits".to_string(),
        n => format!("{n} fixes and the status wait"),
    };
    Some(ErrorView {
        code: MQTT_WEDGED,
        message: format!(
            "no probe or connection attempt for {} s while {waiting} (at most {} s may pass)",
            idle.as_secs(),
            bound.as_secs()
        ),
        at: crate::fix::format_time_ms(at_ms),
    })
}

/// One line for systemd's `STATUS=`: what an operator running `systemctl status` wants.
pub fn status_line(cells: &Cells, clock: &Clock) -> String {
    let s = snapshot(cells, clock);
    format!(
        "{}: fix {}, {} accepted, {} rejected; buffer {} pending; mqtt {}, acked seq {}",
        s.status.as_str(),
        s.components.gnss.fix.as_str(),
        cells.gnss.accepted,
        cells.gnss.rejected.total(),
        s.components.buffer.depth,
        if s.components.mqtt.connected {
            "connected"
        } else {
            "disconnected"
        },
        s.components.buffer.acked_seq
    )
}

fn seconds(d: Duration) -> f64 {
    round_ms(d.as_secs_f64())
}

/// Millisecond resolution: more digits would only be noise in the JSON.
fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Classified, ErrorClass};
    use crate::fix::FixMode;
    use crate::status::{LastFix, StatusBoard};

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

    const WALL: i64 = 1_700_000_000_000;

    fn manual() -> (std::sync::Arc<crate::clock::ManualTime>, StatusBoard) {
        let (clock, hand) = Clock::manual(WALL);
        (hand, StatusBoard::new(clock))
    }

    fn snap(board: &StatusBoard) -> Snapshot {
        snapshot(&board.read(), board.clock())
    }

    fn healthy(board: &StatusBoard) {
        let at = board.clock().now();
        board.gnss(|g| {
            g.connected = true;
            g.last_fix = Some(LastFix {
                at,
                mode: FixMode::ThreeD,
            });
        });
        board.mqtt(|m| m.connected = true);
    }

    #[test]
    fn worst_component_decides_the_overall_status() {
        let (_, board) = manual();
        healthy(&board);
        assert_eq!(snap(&board).status, Status::Healthy);
        board.buffer(|b| b.condition = Status::Degraded);
        assert_eq!(snap(&board).status, Status::Degraded);
        board.buffer(|b| b.condition = Status::Unhealthy);
        assert_eq!(snap(&board).status, Status::Unhealthy);
    }

    #[test]
    fn a_fresh_state_is_degraded_until_a_fix_and_a_connection() {
        let (_, board) = manual();
        let s = snap(&board);
        assert_eq!(s.status, Status::Degraded);
        assert_eq!(s.components.gnss.fix, FixState::None);
        assert!(s.components.gnss.last_fix_age_s.is_none());
    }

    #[test]
    fn a_fix_older_than_the_stale_limit_degrades_the_receiver() {
        let (hand, board) = manual();
        healthy(&board);
        hand.advance(FIX_STALE_AFTER - Duration::from_millis(1));
        assert_eq!(snap(&board).components.gnss.fix, FixState::ThreeD);
        hand.advance(Duration::from_millis(1));
        let s = snap(&board);
        assert_eq!(s.components.gnss.fix, FixState::None);
        assert_eq!(s.components.gnss.status, Status::Degraded);
    }

    #[test]
    fn ages_grow_with_the_clock() {
        let (hand, board) = manual();
        healthy(&board);
        board.gnss(|g| (g.kept, g.dropped_by_policy) = (4, 56));
        let at = board.clock().now();
        board.mqtt(|m| m.last_ack_at = Some(at));
        hand.advance(Duration::from_millis(2_500));
        let s = snap(&board);
        assert_eq!(s.components.gnss.last_fix_age_s, Some(2.5));
        assert_eq!(
            (s.components.gnss.kept, s.components.gnss.dropped_by_policy),
            (4, 56)
        );
        assert_eq!(s.components.mqtt.last_ack_age_s, Some(2.5));
        assert_eq!(s.uptime_s, 2.5);
        assert_eq!(s.time, "2023-11-14T22:13:22.500Z");
    }

    #[test]
    fn oldest_age_comes_from_the_receiver_time_of_the_oldest_fix() {
        let (_, board) = manual();
        board.buffer(|b| {
            b.depth = 3;
            b.oldest_time_ms = Some(WALL - 90_000);
        });
        assert_eq!(snap(&board).components.buffer.oldest_age_s, Some(90.0));
    }

    #[test]
    fn oldest_age_follows_the_receiver_when_the_host_clock_is_wrong() {
        let (hand, board) = manual();
        // A gateway that booted in 1970: the receiver says it is WALL.
        hand.set_wall_ms(0);
        board.clock().note_fix(WALL);
        board.buffer(|b| {
            b.depth = 3;
            b.oldest_time_ms = Some(WALL - 90_000);
        });
        assert_eq!(snap(&board).components.buffer.oldest_age_s, Some(90.0));
    }

    #[test]
    fn drain_eta_follows_the_acknowledgement_rate_while_connected() {
        let (hand, board) = manual();
        board.buffer(|b| b.depth = 100);
        board.mqtt(|m| m.connected = true);
        assert_eq!(snap(&board).components.buffer.drain_eta_s, None);
        for _ in 0..10 {
            hand.advance(Duration::from_secs(1));
            board.mqtt(|m| m.acked_seq += 10);
        }
        // 100 acked in 10 s, 100 waiting: about 10 s to drain.
        assert_eq!(snap(&board).components.buffer.drain_eta_s, Some(10.0));
        board.mqtt(|m| m.connected = false);
        assert_eq!(
            snap(&board).components.buffer.drain_eta_s,
            None,
            "no promise while the broker is away"
        );
        board.buffer(|b| b.depth = 0);
        assert_eq!(snap(&board).components.buffer.drain_eta_s, Some(0.0));
    }

    #[test]
    fn an_error_shows_code_message_and_the_time_it_happened() {
        let (hand, board) = manual();
        let e = board.error_now(&Refused("x".repeat(1000)));
        board.mqtt(|m| m.last_error = Some(e));
        hand.advance(Duration::from_secs(5));
        let s = snap(&board);
        let err = s.components.mqtt.last_error.unwrap();
        assert_eq!(err.code, "MQTT_REFUSED");
        assert!(err.message.starts_with("broker refused: x"));
        assert_eq!(err.at, "2023-11-14T22:13:20.000Z");
        assert!(s.components.gnss.last_error.is_none());
    }

    #[test]
    fn an_uplink_that_tries_nothing_for_longer_than_its_bound_is_wedged_whatever_it_promises() {
        let (hand, board) = manual();
        healthy(&board);
        let at = board.clock().now();
        let error = board.error_now(&Refused("x".into()));
        board.buffer(|b| b.depth = 12);
        board.mqtt(|m| {
            m.connected = false;
            m.last_error = Some(error);
            m.last_try_at = Some(at);
            m.wedge_after = Some(Duration::from_secs(600));
            // What the state machine promises is not evidence: an attempt in a second,
            // forever.
            m.breaker = BreakerState::Open;
            m.retry_at = Some(at + Duration::from_secs(1));
        });
        hand.advance(Duration::from_secs(600));
        let s = snap(&board);
        assert_eq!(s.components.mqtt.status, Status::Degraded);
        assert_eq!(s.components.mqtt.last_error.unwrap().code, "MQTT_REFUSED");
        hand.advance(Duration::from_secs(5));
        let s = snap(&board);
        assert_eq!(s.status, Status::Unhealthy);
        assert_eq!(s.components.mqtt.status, Status::Unhealthy);
        let e = s.components.mqtt.last_error.unwrap();
        assert_eq!(e.code, "MQTT_WEDGED");
        assert_eq!(
            e.message,
            "no probe or connection attempt for 605 s while 12 fixes and the status wait \
             (at most 600 s may pass)"
        );
        assert_eq!(e.at, "2023-11-14T22:23:20.000Z", "when the bound ran out");
        assert!(status_line(&board.read(), board.clock()).starts_with("unhealthy"));
        // A probe or an attempt (a fact the loop records) ends it.
        let now = board.clock().now();
        board.mqtt(|m| m.last_try_at = Some(now));
        assert_eq!(snap(&board).components.mqtt.status, Status::Degraded);
    }

    #[test]
    fn a_connected_uplink_or_one_not_yet_running_is_never_wedged() {
        let (hand, board) = manual();
        healthy(&board);
        hand.advance(Duration::from_secs(100_000));
        // Not running yet (no bound published): degraded only.
        board.mqtt(|m| m.connected = false);
        assert_eq!(snap(&board).components.mqtt.status, Status::Degraded);
        // Running, never tried: counted from the start.
        board.mqtt(|m| m.wedge_after = Some(Duration::from_secs(60)));
        let e = snap(&board).components.mqtt.last_error.unwrap();
        assert_eq!(e.code, "MQTT_WEDGED");
        assert!(
            e.message.contains("while the status waits"),
            "{}",
            e.message
        );
        board.mqtt(|m| m.connected = true);
        assert_eq!(snap(&board).components.mqtt.status, Status::Healthy);
    }

    #[test]
    fn json_has_the_spec_keys_and_omits_unknown_ages() {
        let (_, board) = manual();
        let v = serde_json::to_value(snap(&board)).unwrap();
        assert_eq!(v["status"], "degraded");
        assert_eq!(v["components"]["gnss"]["fix"], "none");
        assert_eq!(v["components"]["gnss"]["rejected"]["checksum"], 0);
        assert_eq!(v["components"]["mqtt"]["breaker"], "closed");
        assert_eq!(v["components"]["mqtt"]["path"], "unknown");
        assert_eq!(v["components"]["mqtt"]["probes"], 0);
        assert!(v["components"]["mqtt"].get("message_limit_bytes").is_none());
        assert_eq!(v["components"]["buffer"]["acked_seq"], 0);
        assert!(v["components"]["gnss"].get("last_fix_age_s").is_none());
        assert!(v["components"]["gnss"].get("last_error").is_none());
        assert!(v["components"]["buffer"].get("oldest_age_s").is_none());
    }
}
