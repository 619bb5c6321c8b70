//! The sync schedule: when the open transaction must commit and the WAL be synced (an
//! interval after the first unsynced write, `commit_max` fixes, every write for a while
//! after SIGPWR), which seqs are synced (only those are handed to the uplink), what a power
//! cut could still take, when the files are looked at, and when the WAL is checkpointed.
//!
//! In: appends, commits, syncs and `now`. Out: [`SyncSchedule::due`], the wake the ingest
//! thread may sleep until ([`SyncSchedule::next_due`]). It never touches SQLite or a file.

use super::StoredFix;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the buffer asks SQLite whether another process changed the file, and looks
/// whether the path still names it.
const OUTSIDE_CHECK: Duration = Duration::from_secs(1);
/// After SIGPWR every commit is synced for this long: the hold-up time of a supercap or a
/// UPS's warning, then the power is gone or back.
const POWER_FAIL_WINDOW: Duration = Duration::from_secs(30);
/// WAL frames after which a sync also checkpoints (SQLite's own default threshold).
const CHECKPOINT_FRAMES: i32 = 1000;

#[derive(Debug)]
pub(super) struct SyncSchedule {
    interval: Duration,
    max: usize,
    /// Every seq up to this survives a power cut; only these are handed out.
    synced_seq: u64,
    /// Fixes committed since the last sync (at most `max`): what a power cut could take,
    /// and what a damaged file still has in memory.
    unsynced: Vec<StoredFix>,
    /// The first write not yet synced.
    dirty_since: Option<Instant>,
    /// SIGPWR: sync every commit until then.
    power_fail_until: Option<Instant>,
    /// The last append, and how late a sync or a look may be done so that it rides on the
    /// next epoch's wake: a little over the gap between the last two appends (the receiver's
    /// epoch), at most a quarter of the sync interval. [`SyncSchedule::next_due`] adds it, so
    /// the thread is not woken for a sync alone just before an epoch does the sync anyway.
    last_append_at: Option<Instant>,
    slack: Duration,
    next_look: Instant,
}

impl SyncSchedule {
    pub(super) fn new(interval: Duration, max: usize, synced_seq: u64, now: Instant) -> Self {
        SyncSchedule {
            interval,
            max,
            synced_seq,
            unsynced: Vec::new(),
            dirty_since: None,
            power_fail_until: None,
            last_append_at: None,
            slack: Duration::ZERO,
            next_look: now,
        }
    }

    pub(super) fn interval(&self) -> Duration {
        self.interval
    }

    /// Most fixes (or acknowledgements) a sync interval takes.
    pub(super) fn max(&self) -> usize {
        self.max
    }

    pub(super) fn slack(&self) -> Duration {
        self.slack
    }

    pub(super) fn synced_seq(&self) -> u64 {
        self.synced_seq
    }

    /// An append came at `now`: the receiver's epoch sets how late a sync may ride on the
    /// next one.
    pub(super) fn note_append(&mut self, now: Instant) {
        if let Some(before) = self.last_append_at {
            // A quarter over the gap: epochs jitter.
            let gap = now.saturating_duration_since(before);
            self.slack = (gap + gap / 4).min(self.interval / 4);
        }
        self.last_append_at = Some(now);
    }

    /// Something was written that a sync must make durable.
    pub(super) fn dirtied(&mut self, now: Instant) {
        self.dirty_since.get_or_insert(now);
    }

    pub(super) fn is_dirty(&self) -> bool {
        self.dirty_since.is_some()
    }

    /// A sync is due: the interval since the first unsynced write passed, `max` fixes wait
    /// (`open` of them in the transaction still open), or power is failing.
    pub(super) fn due(&self, now: Instant, open: usize) -> bool {
        let Some(since) = self.dirty_since else {
            return false;
        };
        now.saturating_duration_since(since) >= self.interval
            || self.unsynced.len() + open >= self.max
            || self.power_fail_until.is_some_and(|until| now < until)
    }

    /// These fixes were committed: unsynced until the next sync.
    pub(super) fn committed(&mut self, appended: &mut Vec<StoredFix>) {
        self.unsynced.append(appended);
    }

    /// Fixes committed outside an append (the memory ring flushed): kept as unsynced while
    /// they fit in an interval's worth (a larger flush is synced at once by its caller).
    pub(super) fn committed_in_bulk(&mut self, fixes: impl ExactSizeIterator<Item = StoredFix>) {
        if self.unsynced.len() + fixes.len() <= self.max {
            self.unsynced.extend(fixes);
        }
    }

    /// The WAL was synced (or the file replaced by a synced copy): everything committed up to
    /// `seq` survives a power cut.
    pub(super) fn synced(&mut self, seq: u64) {
        self.dirty_since = None;
        self.synced_seq = seq;
        self.unsynced.clear();
    }

    /// The unsynced fixes, taken (a damaged file: they are salvaged from memory).
    pub(super) fn take_unsynced(&mut self) -> Vec<StoredFix> {
        std::mem::take(&mut self.unsynced)
    }

    /// SIGPWR: every commit is synced for the next 30 s.
    pub(super) fn power_fail(&mut self, now: Instant) {
        self.power_fail_until = Some(now + POWER_FAIL_WINDOW);
    }

    /// The once-a-second look at the files is due (and scheduled again).
    pub(super) fn look_due(&mut self, now: Instant) -> bool {
        if now < self.next_look {
            return false;
        }
        self.next_look = now + OUTSIDE_CHECK;
        true
    }

    /// When this room next wants a wake: the look, the sync, each waiting `slack` for the
    /// next epoch's append; during a power failure with something unsynced, `last_now`
    /// (at once).
    pub(super) fn next_due(&self, last_now: Instant) -> Instant {
        let mut at = self.next_look + self.slack;
        if let Some(t) = self.dirty_since {
            at = at.min(t + self.interval + self.slack);
        }
        if self.power_fail_until.is_some() && self.dirty_since.is_some() {
            at = at.min(last_now);
        }
        at
    }
}

/// When a sync also checkpoints: the WAL's length in frames after the last commit (SQLite's
/// WAL hook keeps it), against the threshold.
#[derive(Debug)]
pub(super) struct Checkpoints {
    frames: Arc<AtomicI32>,
    every: i32,
}

impl Checkpoints {
    pub(super) fn new(frames: Arc<AtomicI32>) -> Self {
        Checkpoints {
            frames,
            every: CHECKPOINT_FRAMES,
        }
    }

    /// The WAL hook of a new connection.
    pub(super) fn follow(&mut self, frames: Arc<AtomicI32>) {
        self.frames = frames;
    }

    pub(super) fn set_every(&mut self, frames: i32) {
        self.every = frames.max(1);
    }

    pub(super) fn due(&self) -> bool {
        self.frames.load(Ordering::Relaxed) >= self.every
    }

    /// A checkpoint copied `done` of the WAL's `log` frames.
    pub(super) fn done(&self, log: i64, done: i64) {
        let left = (log - done).clamp(0, i64::from(i32::MAX)) as i32;
        self.frames.store(left, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_falls_due_an_interval_after_the_first_write_and_waits_for_the_next_epoch() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut s = SyncSchedule::new(second, 500, 0, t0);
        assert!(s.look_due(t0));
        assert!(!s.due(t0, 0));
        let epoch = Duration::from_millis(100);
        s.note_append(t0);
        s.note_append(t0 + epoch);
        s.dirtied(t0 + epoch);
        assert_eq!(s.slack(), epoch + epoch / 4);
        assert!(!s.due(t0 + second, 1));
        assert!(s.due(t0 + epoch + second, 1));
        // The look (a second after the first) comes before the sync; each waits the slack.
        assert_eq!(s.next_due(t0), t0 + second + epoch + epoch / 4);
        assert!(s.due(t0 + epoch, 500), "commit_max fixes");
        s.synced(7);
        assert_eq!((s.synced_seq(), s.is_dirty()), (7, false));
    }

    #[test]
    fn after_sigpwr_every_write_is_due_at_once() {
        let t0 = Instant::now();
        let mut s = SyncSchedule::new(Duration::from_secs(1), 500, 0, t0);
        s.power_fail(t0);
        s.dirtied(t0);
        assert!(s.due(t0, 1));
        assert_eq!(s.next_due(t0), t0);
        s.synced(1);
        let after = t0 + POWER_FAIL_WINDOW;
        s.dirtied(after);
        assert!(!s.due(after, 1), "the window is over");
    }
}
