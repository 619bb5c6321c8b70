//! The ingest thread: receiver bytes to stored fixes.
//!
//! In: the receiver's bytes: a serial port read by this thread itself, or a replayed log's
//! chunks from its reader thread's bounded channel, through the [`Pipeline`] (decode,
//! validate). Out: the accepted fixes the report stage keeps ([`crate::report`]) appended
//! to the [`Store`](crate::buffer::store::Store),
//! rejections and dropped fixes counted, the uplink woken after each sync, and the GNSS and
//! buffer status published on the board whenever they change. One blocking thread, because
//! decoding is cheap and the buffer's sync is a blocking fsync; one wake per epoch.
//!
//! **When downstream stalls** (a slow disk holding a sync), this thread waits and the port
//! goes unread meanwhile: the kernel keeps the receiver's bytes in the tty's buffers (the
//! line discipline's 4 KiB and the driver's flip buffers, at least 64 KiB: over a minute of a
//! 9600-baud receiver, several seconds of a 115200-baud one sending flat out). What would
//! overflow them is lost before the agent sees it and shows as a broken sentence at the
//! splice (counted). It never exits on bad data; it ends when the stop flag is raised (then
//! the pipeline is flushed and the buffer committed).

use crate::buffer::store::SharedStore;
use crate::config::{ReportConfig, ValidateConfig};
use crate::error::Classified;
use crate::fix::Fix;
use crate::gnss::source::{Next, SourceHandle, SourceStatus};
use crate::gnss::SentenceStats;
use crate::health::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::report::{Kept, Policy};
use crate::status::{GnssStatus, LastFix, StatusBoard};
use crate::validate::Verdict;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Longest wait for bytes before the thread looks around anyway (the stop flag, reloads):
/// otherwise it sleeps until the next thing falls due (a sync, a retry, the quiet end of an
/// epoch), so an idle agent is not woken ten times a second.
const MAX_IDLE: Duration = Duration::from_secs(1);

/// A line quiet this long ends the epoch being assembled (see [`Decoder::line_quiet`]).
/// Longer than any pause inside one receiver's burst and than the gap between bursts of a
/// 1 Hz receiver, so a regular stream is never cut by it: it fires when the receiver stops
/// sending, so the last fix before it stopped is stored too.
const EPOCH_QUIET: Duration = Duration::from_secs(1);

/// The report stage's gap: after this much silence its pending fixes are kept.
fn report_gap() -> Duration {
    Duration::from_millis(u64::try_from(crate::report::GAP_MS).unwrap_or(0))
}

/// Everything the thread needs.
pub struct Ingest {
    pub source: SourceHandle,
    pub store: SharedStore,
    pub metrics: Arc<Metrics>,
    pub board: StatusBoard,
    pub stop: Arc<AtomicBool>,
    pub require_checksum: bool,
    pub validate: ValidateConfig,
    /// New validation thresholds (SIGHUP reload).
    pub reload: Receiver<ValidateConfig>,
    pub report: ReportConfig,
    /// A new `[report]` (SIGHUP reload).
    pub report_reload: Receiver<ReportConfig>,
}

impl Ingest {
    /// Runs until the stop flag is raised; then flushes the pipeline, commits the buffer and
    /// stops the source. Returns the fixes accepted.
    pub fn run(self) -> u64 {
        let Ingest {
            mut source,
            store,
            metrics,
            board,
            stop,
            require_checksum,
            validate,
            reload,
            report,
            report_reload,
        } = self;
        let mut pipeline = Pipeline::new(require_checksum, validate);
        let mut stage = Stage {
            reporting: Reporting::new(&report),
            source: Arc::clone(&source.status),
            store: &store,
            metrics: &metrics,
            board: &board,
            gnss: GnssStatus::default(),
            reported: SentenceStats::default(),
        };
        let mut source_done = false;
        let mut last_bytes_at = Instant::now();
        let mut quiet_flushed = true;
        loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if let Ok(cfg) = reload.try_recv() {
                // Thresholds change; the track of earlier fixes starts afresh, once a fix
                // held for its successor's verdict has had one.
                let now = Instant::now();
                let mut committed = false;
                pipeline.revalidate(cfg, &mut |v| committed |= stage.record(v, now));
                if committed {
                    store.notify_committed();
                }
            }
            if let Ok(cfg) = report_reload.try_recv() {
                // Fixes pending under the old rules are kept; the new ones start afresh.
                stage.report_reload(&cfg, Instant::now());
            }
            let wait = {
                let now = Instant::now();
                let mut until = store.lock().next_wake().min(now + MAX_IDLE);
                if !quiet_flushed {
                    until = until.min(last_bytes_at + EPOCH_QUIET);
                }
                if let Some(due) = stage.report_due() {
                    until = until.min(due);
                }
                until
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1))
            };
            let mut committed = false;
            if source_done {
                std::thread::sleep(wait);
            } else {
                match source.next_chunk(wait, pipeline.receiver_time()) {
                    Next::Chunk(chunk) => {
                        let now = Instant::now();
                        pipeline.feed(&chunk, &mut |v| committed |= stage.record(v, now));
                        last_bytes_at = now;
                        quiet_flushed = false;
                    }
                    Next::Quiet => {
                        // The receiver fell silent: no successor will come to judge a fix
                        // the validator holds, so it is decided now (and stored before a
                        // power cut).
                        if !quiet_flushed && last_bytes_at.elapsed() >= EPOCH_QUIET {
                            let now = Instant::now();
                            pipeline.line_quiet(&mut |v| committed |= stage.record(v, now));
                            quiet_flushed = true;
                        }
                    }
                    Next::Done => {
                        // A replayed log ended: keep the agent running (it still drains).
                        let now = Instant::now();
                        pipeline.finish(&mut |v| committed |= stage.record(v, now));
                        source_done = true;
                    }
                }
            }
            stage.pass(committed, &pipeline, Instant::now(), false);
        }
        // Shutdown: what the pipeline holds, then one last commit.
        let now = Instant::now();
        let mut committed = false;
        pipeline.finish(&mut |v| committed |= stage.record(v, now));
        stage.pass(committed, &pipeline, now, true);
        drop(stage);
        source.close();
        pipeline.accepted()
    }
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

    /// Kept and dropped so far, across reloads.
    fn totals(&self) -> (u64, u64) {
        let c = self.policy.counts();
        (self.before.kept + c.kept, self.before.dropped + c.dropped)
    }
}

/// The stage: what the pipeline's verdicts become (counts, the report policy, the buffer),
/// what it publishes, and the handles it writes to.
struct Stage<'a> {
    reporting: Reporting,
    source: Arc<SourceStatus>,
    store: &'a SharedStore,
    metrics: &'a Metrics,
    board: &'a StatusBoard,
    /// The GNSS status as last published.
    gnss: GnssStatus,
    /// Sentence counters already passed on to metrics (they take deltas).
    reported: SentenceStats,
}

impl Stage<'_> {
    /// After the verdicts of a wake (`committed`: the buffer committed meanwhile): tick the
    /// buffer (group commit, disk retries; at the end a final commit), wake the uplink after
    /// a commit, and publish what changed.
    fn pass(&mut self, mut committed: bool, pipeline: &Pipeline, now: Instant, last: bool) {
        committed |= if last {
            self.reporting.policy.finish(&mut self.reporting.kept);
            self.store_kept(now)
        } else {
            self.report_silence(now)
        };
        {
            let mut store = self.store.lock();
            if last {
                // One more try of the file, then everything durable; what is still only in
                // memory is gone with the process, and said so.
                let closed = store.close(now);
                if closed.lost > 0 {
                    // A code of its own: the cause's code was logged (and throttled) long
                    // before.
                    let (cause, error) = closed.cause.unwrap_or(("BUFFER_IO", String::new()));
                    warn!(component = "buffer", code = "BUFFER_LOST", cause, lost = closed.lost,
                        error = %error,
                        "fixes held only in memory are lost: the buffer file could not be written at shutdown");
                }
            } else {
                match store.tick(now) {
                    Ok(Some(_)) => committed = true,
                    Ok(None) => {}
                    Err(e) => {
                        warn!(component = "buffer", code = e.code(), error = %e, "buffer tick failed")
                    }
                }
            }
            store.publish();
        }
        if committed || last {
            self.store.notify_committed();
        }
        report_sentences(pipeline.sentences(), &mut self.reported, self.metrics);
        self.publish();
    }

    /// One verdict: an accepted fix stored, a rejection counted; true when the buffer
    /// committed.
    fn record(&mut self, verdict: Verdict, now: Instant) -> bool {
        match verdict {
            Ok(fix) => {
                self.metrics.fix_accepted();
                self.board.clock().note_fix(fix.time_ms);
                self.gnss.accepted += 1;
                self.gnss.last_fix = Some(LastFix {
                    at: self.board.clock().now(),
                    mode: fix.mode,
                });
                self.report(&fix, now)
            }
            Err(rejection) => {
                self.metrics.fix_rejected(rejection.reason);
                self.gnss.rejected.add(rejection.reason);
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

    /// An accepted fix to the report policy; what it keeps goes to the buffer. True when the
    /// buffer committed.
    fn report(&mut self, fix: &Fix, now: Instant) -> bool {
        // Every accepted fix, whatever the policy decides, stays in the local history.
        self.store.lock().remember(fix, now);
        self.reporting.last_fix_at = Some(now);
        self.reporting.policy.push(fix, &mut self.reporting.kept);
        self.store_kept(now)
    }

    /// When the report stage's silence rule next falls due, if fixes are pending.
    fn report_due(&self) -> Option<Instant> {
        if self.reporting.policy.pending() == 0 {
            return None;
        }
        self.reporting.last_fix_at.map(|t| t + report_gap())
    }

    /// No accepted fix for a gap's length: keep what is pending (the last fix before it).
    fn report_silence(&mut self, now: Instant) -> bool {
        let gap = report_gap();
        let quiet = self
            .reporting
            .last_fix_at
            .is_some_and(|t| now.saturating_duration_since(t) >= gap);
        if !quiet || self.reporting.policy.pending() == 0 {
            return false;
        }
        self.reporting.policy.silence(&mut self.reporting.kept);
        self.store_kept(now)
    }

    /// New `[report]` settings (SIGHUP): what is pending under the old ones is kept.
    fn report_reload(&mut self, cfg: &ReportConfig, now: Instant) {
        self.reporting.policy.finish(&mut self.reporting.kept);
        if self.store_kept(now) {
            self.store.notify_committed();
        }
        let c = self.reporting.policy.counts();
        self.reporting.before.kept += c.kept;
        self.reporting.before.dropped += c.dropped;
        self.reporting.policy = Policy::from_config(cfg);
    }

    /// Buffer what the policy kept, count what it decided. True when the buffer committed. An
    /// append that fails keeps the fix in the buffer's memory ring; the buffer's status says
    /// so.
    fn store_kept(&mut self, now: Instant) -> bool {
        let mut committed = false;
        if !self.reporting.kept.is_empty() {
            let mut store = self.store.lock();
            for fix in &self.reporting.kept {
                committed |= matches!(store.append(fix, now), Ok(Some(_)));
            }
        }
        self.reporting.kept.clear();
        let (kept, dropped) = self.reporting.totals();
        self.metrics.report_decided(
            kept.saturating_sub(self.gnss.kept),
            dropped.saturating_sub(self.gnss.dropped_by_policy),
        );
        (self.gnss.kept, self.gnss.dropped_by_policy) = (kept, dropped);
        committed
    }

    /// The source's condition joins what ingest counted; published when it changed.
    fn publish(&mut self) {
        let status = &self.source;
        // The error first: the source counts an outage before it records its error, so the
        // counts read after it include the one it is about.
        self.gnss.last_error = status.last_error();
        self.gnss.connected = status.connected();
        self.gnss.outages = status.outages() + status.stuck_events();
        let current = self.gnss.clone();
        self.board.gnss(|g| {
            if *g != current {
                *g = current;
            }
        });
    }
}

/// Sentence counters into metrics (as deltas).
fn report_sentences(stats: &SentenceStats, reported: &mut SentenceStats, metrics: &Metrics) {
    let now = *stats;
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
}
