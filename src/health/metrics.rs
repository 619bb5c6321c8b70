//! Prometheus metrics of the agent (`GET /metrics`), every name prefixed `gps_agent_`.
//!
//! In: the stages call small counting methods on a shared `Arc<Metrics>` (`sentence`,
//! `fix_accepted`, `fix_rejected`, `set_buffer`, `published`, `message_acked`, ...). Out:
//! [`Metrics::encode`] renders the OpenMetrics text exposition. Every method is a few atomic
//! operations (the latency histogram takes a short lock): safe on the hot path, never
//! blocking on a scrape. Label values are `&'static str` so a counter bump never allocates and
//! the set of series stays bounded.

use super::snapshot::{BreakerState, Clock, SystemClock};
use crate::rejection::Reason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
struct FixLabels {
    outcome: &'static str,
    reason: &'static str,
}

/// The agent's metrics. Share it as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    clock: Arc<dyn Clock>,
    started: Instant,
    sentences: Family<SentenceLabels, Counter>,
    fixes: Family<FixLabels, Counter>,
    buffer_depth: Gauge,
    buffer_bytes: Gauge,
    buffer_evicted: Counter,
    buffer_lost: Counter,
    buffer_rescues: Family<CodeLabels, Counter>,
    dead_letters: Counter,
    published_fixes: Counter,
    published_messages: Counter,
    acks: Counter,
    reconnects: Counter,
    source_outages: Counter,
    source_dropped: Counter,
    breaker: Gauge,
    last_ack_age: Gauge<f64, AtomicU64>,
    fix_to_ack: Histogram,
    last_ack: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let mut registry = Registry::with_prefix("gps_agent");
        let sentences = Family::<SentenceLabels, Counter>::default();
        let fixes = Family::<FixLabels, Counter>::default();
        let buffer_depth = Gauge::default();
        let buffer_bytes = Gauge::default();
        let buffer_evicted = Counter::default();
        let buffer_lost = Counter::default();
        let buffer_rescues = Family::<CodeLabels, Counter>::default();
        let dead_letters = Counter::default();
        let published_fixes = Counter::default();
        let published_messages = Counter::default();
        let acks = Counter::default();
        let reconnects = Counter::default();
        let source_outages = Counter::default();
        let source_dropped = Counter::default();
        let breaker = Gauge::default();
        let last_ack_age = Gauge::<f64, AtomicU64>::default();
        let fix_to_ack = Histogram::new(LATENCY_BUCKETS);

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
            "gnss_outages",
            "Times the receiver went away (unplugged, read errors, stuck and reopened)",
            source_outages.clone(),
        );
        registry.register(
            "gnss_dropped_chunks",
            "Receiver byte chunks dropped because ingest was not keeping up (256 bytes each)",
            source_dropped.clone(),
        );
        registry.register(
            "buffer_depth",
            "Fixes stored and not yet acknowledged",
            buffer_depth.clone(),
        );
        registry.register_with_unit(
            "buffer",
            "Size of the buffer database file",
            Unit::Bytes,
            buffer_bytes.clone(),
        );
        registry.register(
            "buffer_evicted",
            "Fixes evicted from a full buffer",
            buffer_evicted.clone(),
        );
        registry.register(
            "buffer_lost",
            "Fixes lost for good: held only in memory when the agent stopped, or unreadable in a buffer file damaged while running",
            buffer_lost.clone(),
        );
        registry.register(
            "buffer_rescues",
            "Buffer file rescued while running, by code: BUFFER_FILE_GONE (deleted or replaced, written back), BUFFER_CORRUPT (damaged or truncated, moved aside, new stream), BUFFER_CORRUPT_RECORD (unreadable rows set aside)",
            buffer_rescues.clone(),
        );
        registry.register(
            "buffer_dead_letters",
            "Fixes set aside as undeliverable",
            dead_letters.clone(),
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
        registry.register(
            "mqtt_reconnects",
            "Reconnections to the broker",
            reconnects.clone(),
        );
        registry.register(
            "mqtt_breaker_state",
            "Circuit breaker: 0 closed, 1 half_open, 2 open",
            breaker.clone(),
        );
        registry.register_with_unit(
            "mqtt_last_ack_age",
            "Time since the broker last acknowledged a message (since start before the first)",
            Unit::Seconds,
            last_ack_age.clone(),
        );
        registry.register_with_unit(
            "fix_to_ack_latency",
            "From the fix's receiver time to the broker acknowledging it (on the receiver clock when the system clock is off)",
            Unit::Seconds,
            fix_to_ack.clone(),
        );

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

        let started = clock.now();
        Metrics {
            registry,
            clock,
            started,
            sentences,
            fixes,
            buffer_depth,
            buffer_bytes,
            buffer_evicted,
            buffer_lost,
            buffer_rescues,
            dead_letters,
            published_fixes,
            published_messages,
            acks,
            reconnects,
            source_outages,
            source_dropped,
            breaker,
            last_ack_age,
            fix_to_ack,
            last_ack: Mutex::new(None),
        }
    }

    /// One NMEA sentence read, by result (`ok`, `checksum`, `unsupported`, ... as the GNSS
    /// stage names them; keep the set small and static).
    pub fn sentence(&self, result: &'static str) {
        self.sentences
            .get_or_create(&SentenceLabels { result })
            .inc();
    }

    /// `n` more sentences with this result (the decoder counts; the agent reports deltas).
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

    /// The buffer's current depth (fixes) and file size (bytes).
    pub fn set_buffer(&self, depth: u64, bytes: u64) {
        self.buffer_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        self.buffer_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub fn buffer_evicted(&self, fixes: u64) {
        self.buffer_evicted.inc_by(fixes);
    }

    /// `fixes` more fixes lost for good (a delta).
    pub fn buffer_lost(&self, fixes: u64) {
        self.buffer_lost.inc_by(fixes);
    }

    /// The buffer file was rescued `n` more times for `code` (a delta; 0 registers the series).
    pub fn buffer_rescued(&self, code: &'static str, n: u64) {
        self.buffer_rescues
            .get_or_create(&CodeLabels { code })
            .inc_by(n);
    }

    pub fn dead_lettered(&self, fixes: u64) {
        self.dead_letters.inc_by(fixes);
    }

    /// One message carrying `fixes` fixes was published.
    pub fn published(&self, fixes: u64) {
        self.published_messages.inc();
        self.published_fixes.inc_by(fixes);
    }

    /// The broker acknowledged one message; `latencies` are, for each fix it carried, the time
    /// from acceptance to this acknowledgement.
    pub fn message_acked(&self, latencies: impl IntoIterator<Item = Duration>) {
        self.acks.inc();
        for latency in latencies {
            self.fix_to_ack.observe(latency.as_secs_f64());
        }
        let now = self.clock.now();
        *self
            .last_ack
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(now);
    }

    /// `n` more receiver outages and `dropped` more chunks dropped (deltas).
    pub fn source(&self, outages: u64, dropped: u64) {
        self.source_outages.inc_by(outages);
        self.source_dropped.inc_by(dropped);
    }

    pub fn reconnected(&self) {
        self.reconnects.inc();
    }

    pub fn set_breaker(&self, state: BreakerState) {
        self.breaker.set(match state {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        });
    }

    /// The OpenMetrics text exposition (ends with `# EOF`). Ages are computed now.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let now = self.clock.now();
        let since = self
            .last_ack
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .unwrap_or(self.started);
        self.last_ack_age
            .set(now.saturating_duration_since(since).as_secs_f64());
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::snapshot::ManualClock;
    use chrono::DateTime;

    #[test]
    fn counters_show_up_with_the_prefix_and_labels() {
        let m = Metrics::new();
        m.sentence("ok");
        m.sentence("ok");
        m.fix_accepted();
        m.fix_rejected(Reason::Hdop);
        m.published(3);
        m.set_breaker(BreakerState::Open);
        let text = m.encode().unwrap();
        assert!(text.contains("gps_agent_nmea_sentences_total{result=\"ok\"} 2"));
        assert!(text.contains("gps_agent_fixes_total{outcome=\"accepted\",reason=\"none\"} 1"));
        assert!(text.contains("gps_agent_fixes_total{outcome=\"rejected\",reason=\"hdop\"} 1"));
        assert!(text.contains("gps_agent_fixes_total{outcome=\"rejected\",reason=\"checksum\"} 0"));
        assert!(text.contains("gps_agent_published_fixes_total 3"));
        assert!(text.contains("gps_agent_mqtt_breaker_state 2"));
        assert!(text.ends_with("# EOF\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("gps_agent_"), "unprefixed: {line}");
        }
    }

    #[test]
    fn latency_lands_in_its_bucket_and_ack_age_is_computed_at_scrape() {
        let clock = Arc::new(ManualClock::new(DateTime::from_timestamp(0, 0).unwrap()));
        let m = Metrics::with_clock(clock.clone());
        m.message_acked([Duration::from_millis(700), Duration::from_secs(7200)]);
        clock.advance(Duration::from_secs(42));
        let text = m.encode().unwrap();
        assert!(text.contains("gps_agent_fix_to_ack_latency_seconds_bucket{le=\"1.0\"} 1"));
        assert!(text.contains("gps_agent_fix_to_ack_latency_seconds_bucket{le=\"21600.0\"} 2"));
        assert!(text.contains("gps_agent_mqtt_last_ack_age_seconds 42.0"));
        assert!(text.contains("gps_agent_mqtt_acks_total 1"));
    }
}
