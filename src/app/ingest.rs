//! The ingest thread: receiver bytes to stored fixes.
//!
//! In: byte chunks from the GNSS source's bounded channel. Out: accepted fixes appended to
//! the [`Store`](super::store::Store), rejections counted, the uplink woken after each
//! commit, and a [`GnssView`] for health. One blocking thread, because decoding is cheap and
//! the buffer's sync is a blocking fsync.
//!
//! **When downstream stalls** (a slow disk holding a commit), this thread waits and the
//! source's channel (64 chunks of 256 bytes, ~1.7 s at 9600 baud) absorbs it; the serial
//! reader never blocks on it: when the channel is full it drops the chunk and counts it in
//! the source's status, which `/health` shows. It never exits on bad data; it ends when the
//! stop flag is raised (then the decoder is flushed and the buffer committed).

use super::store::SharedStore;
use crate::config::ValidateConfig;
use crate::error::Classified;
use crate::fix::FixMode;
use crate::gnss::source::SourceHandle;
use crate::gnss::{Decoded, Decoder, SentenceStats};
use crate::health::metrics::Metrics;
use crate::rejection::{Reason, ReasonCounts};
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
        } = self;
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
                committed |= handle(event, &mut validator, &source, &store, &metrics, &view, now);
            }
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
        // Shutdown: what the decoder holds, then one last commit.
        decoder.finish(&mut |e| events.push(e));
        let now = Instant::now();
        for event in events.drain(..) {
            handle(event, &mut validator, &source, &store, &metrics, &view, now);
        }
        report_sentences(&decoder, &mut reported, &metrics, &view);
        let closed = store.lock().close(Instant::now());
        if closed.lost > 0 {
            // A code of its own: the cause's code was logged (and throttled) long before.
            let (cause, error) = closed.cause.unwrap_or(("BUFFER_IO", String::new()));
            warn!(component = "buffer", code = "BUFFER_LOST", cause, lost = closed.lost,
                error = %error,
                "fixes held only in memory are lost: the buffer file could not be written at shutdown");
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
    source: &SourceHandle,
    store: &SharedStore,
    metrics: &Metrics,
    view: &Mutex<GnssView>,
    now: Instant,
) -> bool {
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
            let result = store.lock().append(&fix, now);
            let mut v = view.lock().unwrap_or_else(|p| p.into_inner());
            v.accepted += 1;
            v.last_fix_at = Some(now);
            v.last_fix_utc_ms = Some(fix.time_ms);
            v.last_fix_mode = Some(fix.mode);
            match result {
                Ok(committed) => committed.is_some(),
                Err(e) => {
                    v.append_errors += 1;
                    v.last_append_error = Some((e.code(), e.to_string()));
                    false
                }
            }
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
