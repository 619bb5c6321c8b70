//! The ingest thread: receiver bytes to stored fixes.
//!
//! In: byte chunks from the GNSS source's bounded channel. Out: the accepted fixes the report
//! stage keeps ([`crate::report`]) appended to the [`Store`](super::store::Store), rejections
//! and dropped fixes counted, the uplink woken after each commit, and a [`GnssView`] for
//! health. One blocking thread, because decoding is cheap and
//! the buffer's commit is a blocking fsync.
//!
//! **When downstream stalls** (a slow disk holding a commit), this thread waits and the
//! source's channel (64 chunks of 256 bytes, ~1.7 s at 9600 baud) absorbs it; the serial
//! reader never blocks on it: when the channel is full it drops the chunk and counts it in
//! the source's status, which `/health` shows. It never exits on bad data; it ends when the
//! stop flag is raised (then the decoder is flushed and the buffer committed).

use super::store::SharedStore;
use crate::config::{ReportConfig, ValidateConfig};
use crate::error::Classified;
use crate::fix::{Fix, FixMode};
use crate::gnss::source::SourceHandle;
use crate::gnss::{Decoded, Decoder, SentenceStats};
use crate::health::metrics::Metrics;
use crate::rejection::{Reason, ReasonCounts};
use crate::report::{Kept, Policy};
use crate::validate::Validator;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// How long the thread waits for bytes before it ticks the buffer (group commit, disk
/// retries) anyway.
const IDLE_TICK: Duration = Duration::from_millis(100);

/// A line quiet this long ends the epoch being assembled (see [`Decoder::line_quiet`]).
/// Longer than any pause inside one receiver's burst and than the gap between bursts of a
/// 1 Hz receiver, so a regular stream is never cut by it: it fires when the receiver stops
/// sending, so the last fix before it stopped is stored too.
const EPOCH_QUIET: Duration = Duration::from_secs(1);

/// What health shows of the GNSS stage; updated by the ingest thread.
#[derive(Debug, Clone, Default)]
pub struct GnssView {
    pub accepted: u64,
    pub rejected: ReasonCounts,
    pub last_fix_at: Option<Instant>,
    /// The receiver's UTC (ms) of the newest accepted fix, with `last_fix_at`: the GNSS
    /// receiver as a clock (see [`super::clock`]).
    pub last_fix_utc_ms: Option<i64>,
    pub last_fix_mode: Option<FixMode>,
    pub last_seq_appended: u64,
    /// Accepted fixes the report stage kept (buffered) and dropped (never buffered).
    pub kept: u64,
    pub dropped_by_policy: u64,
    pub sentences: SentenceStats,
    /// Append failures (the buffer keeps the fix in memory; counted for health).
    pub append_errors: u64,
    pub last_append_error: Option<(&'static str, String)>,
}

/// Everything the thread needs.
pub struct Ingest {
    pub source: SourceHandle,
    pub store: SharedStore,
    pub metrics: Arc<Metrics>,
    pub view: Arc<Mutex<GnssView>>,
    pub stop: Arc<AtomicBool>,
    pub require_checksum: bool,
    pub validate: ValidateConfig,
    /// New validation thresholds (SIGHUP reload).
    pub reload: Receiver<ValidateConfig>,
    pub report: ReportConfig,
    /// A new `[report]` (SIGHUP reload).
    pub report_reload: Receiver<ReportConfig>,
}

/// The report stage as this thread drives it: which accepted fixes go to the buffer.
struct Reporting {
    policy: Policy,
    kept: Kept,
    /// Decided by the policies replaced on reloads (the counters run on across them).
    before: crate::report::Counts,
    /// When the last accepted fix came (host clock): after [`crate::report::GAP_MS`] of
    /// silence the fixes still pending are kept, as the last ones before a gap.
    last_fix_at: Option<Instant>,
}

impl Reporting {
    fn new(cfg: &ReportConfig) -> Self {
        Reporting {
            policy: Policy::from_config(cfg),
            kept: Kept::new(),
            before: crate::report::Counts::default(),
            last_fix_at: None,
        }
    }

    /// An accepted fix in; what the policy keeps goes to the buffer.
    fn push(&mut self, fix: &Fix, to: &Sinks<'_>, now: Instant) -> bool {
        self.last_fix_at = Some(now);
        self.policy.push(fix, &mut self.kept);
        self.store(to, now)
    }

    /// No accepted fix for a gap's length: keep what is pending (the last fix before it).
    fn tick(&mut self, to: &Sinks<'_>, now: Instant) -> bool {
        let quiet = self.last_fix_at.is_some_and(|t| {
            now.saturating_duration_since(t) >= Duration::from_millis(crate::report::GAP_MS as u64)
        });
        if !quiet || self.policy.pending() == 0 {
            return false;
        }
        self.policy.silence(&mut self.kept);
        self.store(to, now)
    }

    /// New settings (SIGHUP) or shutdown: nothing pending is lost.
    fn finish(&mut self, to: &Sinks<'_>, now: Instant, next: Option<&ReportConfig>) -> bool {
        self.policy.finish(&mut self.kept);
        let committed = self.store(to, now);
        if let Some(cfg) = next {
            let c = self.policy.counts();
            self.before.kept += c.kept;
            self.before.dropped += c.dropped;
            self.policy = Policy::from_config(cfg);
        }
        committed
    }

    /// Buffer what the policy kept; count what it decided. True when the buffer committed.
    fn store(&mut self, to: &Sinks<'_>, now: Instant) -> bool {
        let mut committed = false;
        let mut failed: Option<(u64, &'static str, String)> = None;
        if !self.kept.is_empty() {
            let mut store = to.store.lock();
            for fix in &self.kept {
                match store.append(fix, now) {
                    Ok(c) => committed |= c.is_some(),
                    Err(e) => {
                        let n = failed.as_ref().map_or(0, |f| f.0);
                        failed = Some((n + 1, e.code(), e.to_string()));
                    }
                }
            }
        }
        self.kept.clear();
        let c = self.policy.counts();
        let (kept, dropped) = (self.before.kept + c.kept, self.before.dropped + c.dropped);
        let mut v = to.view.lock().unwrap_or_else(|p| p.into_inner());
        to.metrics.report_decided(
            kept.saturating_sub(v.kept),
            dropped.saturating_sub(v.dropped_by_policy),
        );
        (v.kept, v.dropped_by_policy) = (kept, dropped);
        if let Some((n, code, message)) = failed {
            v.append_errors += n;
            v.last_append_error = Some((code, message));
        }
        committed
    }
}

/// Where the ingest thread's results go.
struct Sinks<'a> {
    store: &'a SharedStore,
    metrics: &'a Metrics,
    view: &'a Mutex<GnssView>,
}

impl Ingest {
    /// Runs until the stop flag is raised; then flushes the decoder, commits the buffer and
    /// stops the source. Returns the fixes accepted.
    pub fn run(self) -> u64 {
        let Ingest {
            source,
            store,
            metrics,
            view,
            stop,
            require_checksum,
            validate,
            reload,
            report,
            report_reload,
        } = self;
        let mut reporting = Reporting::new(&report);
        let mut decoder = Decoder::new(require_checksum);
        let mut validator = Validator::new(validate);
        let mut reported = SentenceStats::default();
        let mut source_done = false;
        let mut events: Vec<Decoded> = Vec::with_capacity(16);
        let mut last_bytes_at = Instant::now();
        let mut quiet_flushed = true;
        loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if let Ok(cfg) = reload.try_recv() {
                // Thresholds change; the track of earlier fixes starts afresh.
                validator = Validator::new(cfg);
            }
            let sinks = Sinks {
                store: &store,
                metrics: &metrics,
                view: &view,
            };
            if let Ok(cfg) = report_reload.try_recv() {
                // Fixes pending under the old rules are kept; the new ones start afresh.
                if reporting.finish(&sinks, Instant::now(), Some(&cfg)) {
                    store.notify_committed();
                }
            }
            if source_done {
                std::thread::sleep(IDLE_TICK);
            } else {
                match source.chunks.recv_timeout(IDLE_TICK) {
                    Ok(chunk) => {
                        decoder.feed(&chunk, &mut |e| events.push(e));
                        last_bytes_at = Instant::now();
                        quiet_flushed = false;
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        if !quiet_flushed && last_bytes_at.elapsed() >= EPOCH_QUIET {
                            decoder.line_quiet(&mut |e| events.push(e));
                            quiet_flushed = true;
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        // A replayed log ended: keep the agent running (it still drains).
                        decoder.finish(&mut |e| events.push(e));
                        source_done = true;
                    }
                }
            }
            let now = Instant::now();
            let mut committed = false;
            for event in events.drain(..) {
                committed |= handle(event, &mut validator, &mut reporting, &source, &sinks, now);
            }
            committed |= reporting.tick(&sinks, now);
            match store.lock().tick(now) {
                Ok(Some(_)) => committed = true,
                Ok(None) => {}
                Err(e) => warn!(component = "buffer", code = e.code(), error = %e, "tick failed"),
            }
            if committed {
                store.notify_committed();
            }
            report_sentences(&decoder, &mut reported, &metrics, &view);
        }
        // Shutdown: what the decoder holds, what the report stage has not decided yet, then
        // one last commit.
        decoder.finish(&mut |e| events.push(e));
        let now = Instant::now();
        let sinks = Sinks {
            store: &store,
            metrics: &metrics,
            view: &view,
        };
        for event in events.drain(..) {
            handle(event, &mut validator, &mut reporting, &source, &sinks, now);
        }
        reporting.finish(&sinks, now, None);
        report_sentences(&decoder, &mut reported, &metrics, &view);
        if let Err(e) = store.lock().commit() {
            warn!(component = "buffer", code = e.code(), error = %e, "final commit failed");
        }
        store.notify_committed();
        drop(source.chunks);
        validator.accepted()
    }
}

/// One decoder event; returns true when the buffer committed.
fn handle(
    event: Decoded,
    validator: &mut Validator,
    reporting: &mut Reporting,
    source: &SourceHandle,
    to: &Sinks<'_>,
    now: Instant,
) -> bool {
    let (metrics, view) = (to.metrics, to.view);
    let epoch = match event {
        Decoded::Epoch(epoch) => epoch,
        Decoded::BadChecksum => {
            metrics.fix_rejected(Reason::Checksum);
            view.lock()
                .unwrap_or_else(|p| p.into_inner())
                .rejected
                .add(Reason::Checksum);
            return false;
        }
    };
    if let Some(t) = epoch.time_of_day_ms {
        source.status.note_epoch_time(t);
    }
    match validator.check(&epoch) {
        Ok(fix) => {
            metrics.fix_accepted();
            {
                let mut v = view.lock().unwrap_or_else(|p| p.into_inner());
                v.accepted += 1;
                v.last_fix_at = Some(now);
                v.last_fix_utc_ms = Some(fix.time_ms);
                v.last_fix_mode = Some(fix.mode);
            }
            reporting.push(&fix, to, now)
        }
        Err(rejection) => {
            metrics.fix_rejected(rejection.reason);
            view.lock()
                .unwrap_or_else(|p| p.into_inner())
                .rejected
                .add(rejection.reason);
            debug!(
                component = "validate",
                reason = rejection.reason.as_str(),
                detail = rejection.detail,
                "epoch rejected"
            );
            false
        }
    }
}

/// Sentence counters into metrics (as deltas) and the health view.
fn report_sentences(
    decoder: &Decoder,
    reported: &mut SentenceStats,
    metrics: &Metrics,
    view: &Mutex<GnssView>,
) {
    let now = *decoder.stats();
    if now == *reported {
        return;
    }
    let pairs: [(&'static str, u64, u64); 9] = [
        ("ok", now.ok, reported.ok),
        ("checksum", now.checksum, reported.checksum),
        (
            "missing_checksum",
            now.missing_checksum,
            reported.missing_checksum,
        ),
        ("too_long", now.too_long, reported.too_long),
        ("non_ascii", now.non_ascii, reported.non_ascii),
        ("nul", now.nul, reported.nul),
        ("malformed", now.malformed, reported.malformed),
        ("proprietary", now.proprietary, reported.proprietary),
        ("unsupported", now.unsupported, reported.unsupported),
    ];
    for (result, n, before) in pairs {
        metrics.sentences(result, n.saturating_sub(before));
    }
    *reported = now;
    view.lock().unwrap_or_else(|p| p.into_inner()).sentences = now;
}
