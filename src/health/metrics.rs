//! Prometheus metrics of the agent (`GET /metrics`), every name prefixed `gps_agent_`.
//!
//! Two kinds of series. Events are counted by the stage where they happen, through small
//! methods on a shared `Arc<Metrics>` (`sentences`, `fix_accepted`, `fix_rejected`,
//! `published`, `message_acked`): a few atomic operations each (the latency histogram takes a
//! short lock), safe on the hot path. States and totals the stages already publish on the
//! [`StatusBoard`] (buffer depth and size, evictions, dead letters, the local history's rows,
//! evictions and drops, reconnects, receiver outages, the breaker, the age of the last ack)
//! are read from the board at scrape time, so there is one source of truth and nothing to
//! keep in step. Label values are `&'static str` so a counter bump never allocates and the
//! set of series stays bounded.

use crate::rejection::Reason;
use crate::status::{BreakerState, HistoryDrop, PathState, StatusBoard};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Fix-to-ack latency buckets (seconds): from a healthy link (sub-second) to a vehicle that
/// spent a day out of coverage.
const LATENCY_BUCKETS: [f64; 14] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SentenceLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReportLabels {
    decision: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FixLabels {
    outcome: &'static str,
    reason: &'static str,
}

/// The agent's metrics. Share it as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    sentences: Family<SentenceLabels, Counter>,
    fixes: Family<FixLabels, Counter>,
    report: Family<ReportLabels, Counter>,
    published_fixes: Counter,
    published_messages: Counter,
    acks: Counter,
    fix_to_ack: Histogram,
    health_dropped: Family<DropLabels, Counter>,
    commands: Family<CommandLabels, Counter>,
}

/// A remote command's outcome: `ok`, `repeat` (an id answered before) or its error code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    result: &'static str,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The series read from the board at each scrape.
#[derive(Debug)]
struct BoardSeries {
    board: StatusBoard,
}

impl Collector for BoardSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let cells = self.board.read();
        let now = self.board.clock().now();
        let (gnss, buffer, mqtt) = (&cells.gnss, &cells.buffer, &cells.mqtt);
        let history = &buffer.history;
        let counters: [(&str, &str, Option<Unit>, u64); 7] = [
            (
                "gnss_outages",
                "Times the receiver went away (unplugged, read errors, stuck and reopened)",
                None,
                gnss.outages,
            ),
            (
                "buffer_evicted",
                "Fixes evicted from a full buffer (file or memory), since the file was made",
                None,
                buffer.evicted,
            ),
            (
                "buffer_dead_letters",
                "Fixes set aside as undeliverable, now in the file",
                None,
                buffer.dead_letters,
            ),
            (
                "mqtt_reconnects",
                "Reconnections to the broker",
                None,
                mqtt.reconnects,
            ),
            (
                "buffer_lost",
                "Fixes lost for good: held only in memory when the agent stopped, or unreadable \
                 in a buffer file damaged while running",
                None,
                buffer.lost,
            ),
            (
                "mqtt_connect_attempts",
                "Full connection attempts to the broker (TCP, TLS, MQTT CONNECT)",
                None,
                mqtt.connect_attempts,
            ),
            (
                "history_evicted",
                "Rows of the local history evicted by [history] max_bytes, since its table was made",
                None,
                history.evicted,
            ),
        ];
        for (name, help, unit, value) in counters {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, unit.as_ref(), c.metric_type())?)?;
        }
        let rescues = buffer.rescues;
        let mut family = encoder.encode_descriptor(
            "buffer_rescues",
            "Buffer file rescued while running, by code: BUFFER_FILE_GONE (deleted or replaced, \
             written back), BUFFER_CORRUPT (damaged or truncated, moved aside, new stream), \
             BUFFER_CORRUPT_RECORD (unreadable rows set aside)",
            None,
            MetricType::Counter,
        )?;
        for (code, n) in [
            ("BUFFER_FILE_GONE", rescues.restored),
            ("BUFFER_CORRUPT", rescues.quarantined),
            ("BUFFER_CORRUPT_RECORD", rescues.corrupt_records),
        ] {
            ConstCounter::new(n).encode(family.encode_family(&CodeLabels { code })?)?;
        }
        {
            let probes = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(
                "mqtt_probes",
                "Reachability probes of the broker's port (TCP connect, closed at once) while the path was down or a connection stalled, by result",
                None,
                probes.metric_type(),
            )?;
            for (result, n) in [("ok", mqtt.probes_ok), ("failed", mqtt.probes_failed)] {
                ConstCounter::new(n).encode(family.encode_family(&ProbeLabels { result })?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "history_dropped",
            "Accepted fixes that never became rows of the local history, since its table was made, \
             by reason: backlog (more waited for a commit than memory_ring), same_ms (a fifth \
             fix of one millisecond), memory (more than memory_ring while the buffer ran on its \
             memory ring)",
            None,
            MetricType::Counter,
        )?;
        for reason in HistoryDrop::ALL {
            ConstCounter::new(history.dropped.get(reason)).encode(family.encode_family(
                &DropLabels {
                    reason: reason.as_str(),
                },
            )?)?;
        }
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let breaker = match mqtt.breaker {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        let path = match mqtt.path {
            PathState::Unknown => 0,
            PathState::Up => 1,
            PathState::Down => 2,
        };
        let gauges: [(&str, &str, Option<Unit>, i64); 7] = [
            (
                "buffer_depth",
                "Fixes stored and not yet acknowledged (file and memory)",
                None,
                to_i64(buffer.depth),
            ),
            (
                "buffer_in_memory",
                "Fixes held in memory while the disk cannot be written",
                None,
                to_i64(buffer.in_memory),
            ),
            (
                "buffer",
                "Size of the buffer database file and its WAL",
                Some(Unit::Bytes),
                to_i64(buffer.bytes),
            ),
            (
                "mqtt_breaker_state",
                "Circuit breaker: 0 closed, 1 half_open, 2 open",
                None,
                breaker,
            ),
            (
                "mqtt_path_state",
                "Network path to the broker: 0 unknown, 1 up, 2 down",
                None,
                path,
            ),
            (
                "mqtt_message_limit",
                "Largest message payload sent, when a broker limit below max_message_bytes was learned (0: none)",
                Some(Unit::Bytes),
                i64::try_from(mqtt.message_limit.unwrap_or(0)).unwrap_or(i64::MAX),
            ),
            (
                "history_rows",
                "Fixes in the local history (0 while it is off)",
                None,
                to_i64(history.rows),
            ),
        ];
        for (name, help, unit, value) in gauges {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, unit.as_ref(), g.metric_type())?)?;
        }
        let since = mqtt.last_ack_at.unwrap_or(cells.started);
        let age = ConstGauge::new(now.saturating_duration_since(since).as_secs_f64());
        age.encode(encoder.encode_descriptor(
            "mqtt_last_ack_age",
            "Time since the broker last acknowledged a message (since start before the first)",
            Some(&Unit::Seconds),
            age.metric_type(),
        )?)?;
        Ok(())
    }
}

impl Metrics {
    /// Metrics whose state series come from `board`.
    pub fn new(board: StatusBoard) -> Self {
        let mut registry = Registry::with_prefix("gps_agent");
        let sentences = Family::<SentenceLabels, Counter>::default();
        let fixes = Family::<FixLabels, Counter>::default();
        let report = Family::<ReportLabels, Counter>::default();
        let published_fixes = Counter::default();
        let published_messages = Counter::default();
        let acks = Counter::default();
        let fix_to_ack = Histogram::new(LATENCY_BUCKETS);
        let health_dropped = Family::<DropLabels, Counter>::default();
        let commands = Family::<CommandLabels, Counter>::default();

        registry.register(
            "nmea_sentences",
            "NMEA sentences read, by result",
            sentences.clone(),
        );
        registry.register(
            "fixes",
            "Epochs validated, by outcome (accepted|rejected) and rejection reason",
            fixes.clone(),
        );
        registry.register(
            "report_fixes",
            "Accepted fixes by the report stage's decision: kept (buffered and sent) or dropped (by [report], never buffered)",
            report.clone(),
        );
        registry.register(
            "published_fixes",
            "Fixes handed to the broker",
            published_fixes.clone(),
        );
        registry.register(
            "published_messages",
            "MQTT messages published",
            published_messages.clone(),
        );
        registry.register(
            "mqtt_acks",
            "MQTT messages acknowledged by the broker (PUBACK)",
            acks.clone(),
        );
        registry.register_with_unit(
            "fix_to_ack_latency",
            "From the fix's receiver time to the broker acknowledging it (on the receiver clock when the system clock is off)",
            Unit::Seconds,
            fix_to_ack.clone(),
        );
        registry.register(
            "health_connections_dropped",
            "Health endpoint connections refused or closed while every slot was taken, by reason \
             (slow_head, busy, waiting_room_full, evicted_idle)",
            health_dropped.clone(),
        );
        registry.register(
            "commands",
            "Remote commands handled, by result (ok, repeat, the error code, or CMD_DROPPED: not read, the commands stage was busy)",
            commands.clone(),
        );
        registry.register_collector(Box::new(BoardSeries { board }));
        for result in ["ok", "repeat", "CMD_DROPPED"]
            .into_iter()
            .chain(crate::commands::error::CommandError::CODES)
        {
            drop(commands.get_or_create(&CommandLabels { result }));
        }

        // Pre-create every fix series so `rate()` sees zeros rather than missing series.
        drop(fixes.get_or_create(&FixLabels {
            outcome: "accepted",
            reason: "none",
        }));
        for reason in Reason::ALL {
            drop(fixes.get_or_create(&FixLabels {
                outcome: "rejected",
                reason: reason.as_str(),
            }));
        }

        for decision in ["kept", "dropped"] {
            drop(report.get_or_create(&ReportLabels { decision }));
        }

        Metrics {
            registry,
            sentences,
            fixes,
            report,
            published_fixes,
            published_messages,
            acks,
            fix_to_ack,
            health_dropped,
            commands,
        }
    }

    /// One remote command handled, with this outcome (`ok`, `repeat`, or an error code).
    pub fn command(&self, result: &'static str) {
        self.commands_by(result, 1);
    }

    /// `n` more remote commands with this outcome.
    pub fn commands_by(&self, result: &'static str, n: u64) {
        if n > 0 {
            self.commands
                .get_or_create(&CommandLabels { result })
                .inc_by(n);
        }
    }

    /// `n` more sentences with this result (`ok`, `checksum`, `unsupported`, ... as the GNSS
    /// stage names them; keep the set small and static).
    pub fn sentences(&self, result: &'static str, n: u64) {
        if n > 0 {
            self.sentences
                .get_or_create(&SentenceLabels { result })
                .inc_by(n);
        }
    }

    pub fn fix_accepted(&self) {
        self.fixes
            .get_or_create(&FixLabels {
                outcome: "accepted",
                reason: "none",
            })
            .inc();
    }

    pub fn fix_rejected(&self, reason: Reason) {
        self.fixes
            .get_or_create(&FixLabels {
                outcome: "rejected",
                reason: reason.as_str(),
            })
            .inc();
    }

    /// `kept` and `dropped` more accepted fixes decided by the report stage (deltas).
    pub fn report_decided(&self, kept: u64, dropped: u64) {
        for (decision, n) in [("kept", kept), ("dropped", dropped)] {
            if n > 0 {
                self.report
                    .get_or_create(&ReportLabels { decision })
                    .inc_by(n);
            }
        }
    }

    /// One message carrying `fixes` fixes was published.
    pub fn published(&self, fixes: u64) {
        self.published_messages.inc();
        self.published_fixes.inc_by(fixes);
    }

    /// The broker acknowledged one message; `latencies` are, for each fix it carried, the time
    /// from the fix's receiver UTC to this acknowledgement.
    pub fn message_acked(&self, latencies: impl IntoIterator<Item = Duration>) {
        self.acks.inc();
        for latency in latencies {
            self.fix_to_ack.observe(latency.as_secs_f64());
        }
    }

    /// A health connection refused or closed for want of a slot (`reason` from a small fixed
    /// set: see `health::admission`).
    pub fn health_dropped(&self, reason: &'static str) {
        self.health_dropped
            .get_or_create(&DropLabels { reason })
            .inc();
    }

    /// The OpenMetrics text exposition (ends with `# EOF`). Board series are read now.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;

    #[test]
    fn counters_show_up_with_the_prefix_and_labels() {
        let board = StatusBoard::default();
        let m = Metrics::new(board.clone());
        m.sentences("ok", 2);
        m.fix_accepted();
        m.fix_rejected(Reason::Hdop);
        m.published(3);
        board.mqtt(|s| s.breaker = BreakerState::Open);
        board.buffer(|b| b.evicted = 7);
        let text = m.encode().unwrap();
        assert!(text.contains("gps_agent_nmea_sentences_total{result=\"ok\"} 2"));
        assert!(text.contains("gps_agent_fixes_total{outcome=\"accepted\",reason=\"none\"} 1"));
        assert!(text.contains("gps_agent_fixes_total{outcome=\"rejected\",reason=\"hdop\"} 1"));
        assert!(text.contains("gps_agent_fixes_total{outcome=\"rejected\",reason=\"checksum\"} 0"));
        m.report_decided(3, 40);
        let text = m.encode().unwrap();
        assert!(text.contains("gps_agent_report_fixes_total{decision=\"kept\"} 3"));
        assert!(text.contains("gps_agent_report_fixes_total{decision=\"dropped\"} 40"));
        assert!(text.contains("gps_agent_published_fixes_total 3"));
        assert!(text.contains("gps_agent_mqtt_breaker_state 2"));
        board.mqtt(|s| {
            s.probes_ok = 3;
            s.probes_failed = 9;
            s.connect_attempts = 4;
            s.path = PathState::Down;
        });
        let text = m.encode().unwrap();
        assert!(
            text.contains("gps_agent_mqtt_probes_total{result=\"ok\"} 3"),
            "{text}"
        );
        assert!(text.contains("gps_agent_mqtt_probes_total{result=\"failed\"} 9"));
        assert!(text.contains("gps_agent_mqtt_connect_attempts_total 4"));
        assert!(text.contains("gps_agent_mqtt_path_state 2"));
        assert!(text.contains("gps_agent_buffer_evicted_total 7"));
        assert!(text.ends_with("# EOF\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("gps_agent_"), "unprefixed: {line}");
        }
    }

    #[test]
    fn latency_lands_in_its_bucket_and_ack_age_is_computed_at_scrape() {
        let (clock, hand) = Clock::manual(0);
        let board = StatusBoard::new(clock);
        let m = Metrics::new(board.clone());
        m.message_acked([Duration::from_millis(700), Duration::from_secs(7200)]);
        let at = board.clock().now();
        board.mqtt(|s| s.last_ack_at = Some(at));
        hand.advance(Duration::from_secs(42));
        let text = m.encode().unwrap();
        assert!(text.contains("gps_agent_fix_to_ack_latency_seconds_bucket{le=\"1.0\"} 1"));
        assert!(text.contains("gps_agent_fix_to_ack_latency_seconds_bucket{le=\"21600.0\"} 2"));
        assert!(text.contains("gps_agent_mqtt_last_ack_age_seconds 42.0"));
        assert!(text.contains("gps_agent_mqtt_acks_total 1"));
    }
}
