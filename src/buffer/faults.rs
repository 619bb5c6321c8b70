//! Faults: what went wrong with the disk or the file, and what the buffer holds meanwhile.
//!
//! It owns the disk's state (writable, or failing with the time of the next retry), the
//! memory ring of fixes that wait for it (bounded: the oldest is dropped when full), the
//! rescues of a file deleted or damaged under the agent (their retries and whether one is
//! running), the alarm that stays until restart, the last error (stamped with the agent's
//! clock when it happened), and the fixes lost for good. In: failures and recoveries as the
//! buffer meets them, and `now`. Out: the buffer's condition, whether a retry is due, the
//! next retry's time. It never touches SQLite or a file.

use super::error::BufferError;
use crate::clock::Clock;
use crate::error::{Classified, ErrorClass};
use crate::fix::Fix;
use crate::status::{LastError, Rescues, Status};
use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};
use tracing::warn;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disk {
    Writable,
    /// `cause`: the code of the failure, which is why the ring holds fixes.
    Failing {
        next_retry: Instant,
        cause: &'static str,
    },
}

#[derive(Debug)]
pub(super) struct Faults {
    disk: Disk,
    retry_every: Duration,
    /// Fixes waiting for the disk, oldest first; they get their seq when written.
    ring: VecDeque<Fix>,
    ring_cap: usize,
    /// Sticky until restart: a file moved aside or deleted under us.
    alarm: Status,
    last_error: Option<LastError>,
    /// The path was gone and writing the file back failed: try again then.
    restore_retry: Option<Instant>,
    /// The file is damaged and could not be moved aside yet.
    quarantine_due: Option<String>,
    /// Inside a rescue: a failure of the new file must not start another.
    rescuing: bool,
    /// Fixes that are gone for good: unreadable in a damaged file, or held only in memory
    /// when the agent stopped.
    lost: u64,
    rescues: Rescues,
    /// Stamps `last_error` (the wall clock of the agent's one clock).
    clock: Clock,
}

impl Faults {
    pub(super) fn new(ring_cap: usize, retry_every: Duration, clock: Clock) -> Self {
        Faults {
            disk: Disk::Writable,
            retry_every,
            ring: VecDeque::new(),
            ring_cap,
            alarm: Status::Healthy,
            last_error: None,
            restore_retry: None,
            quarantine_due: None,
            rescuing: false,
            lost: 0,
            rescues: Rescues::default(),
            clock,
        }
    }

    /// Stamp errors with the agent's clock (the daemon's, or a test's).
    pub(super) fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    pub(super) fn writable(&self) -> bool {
        self.disk == Disk::Writable
    }

    /// The disk may be tried again (it is writable, or its retry is due).
    pub(super) fn retry_due(&self, now: Instant) -> bool {
        match self.disk {
            Disk::Writable => true,
            Disk::Failing { next_retry, .. } => now >= next_retry,
        }
    }

    /// The code of the failure the disk is failing with.
    pub(super) fn failing_cause(&self) -> Option<&'static str> {
        match self.disk {
            Disk::Writable => None,
            Disk::Failing { cause, .. } => Some(cause),
        }
    }

    /// A write failed with `err`: fixes wait in the ring, the disk is retried in
    /// `disk_retry_s`.
    pub(super) fn disk_failing(&mut self, err: &BufferError, path: &Path, now: Instant) {
        self.disk = Disk::Failing {
            next_retry: now + self.retry_every,
            cause: err.code(),
        };
        warn!(code = err.code(), path = %path.display(), held = self.ring.len(), error = %err,
            "buffer write failed; fixes held in memory until the disk works again");
        self.set_error(err.code(), err.class(), err.to_string());
    }

    /// The disk took a write again.
    pub(super) fn disk_back(&mut self) {
        self.disk = Disk::Writable;
    }

    /// "Now" in UTC ms by the agent's clock: the receiver's time when the host's disagrees
    /// with it (see [`Clock::utc_ms`]).
    pub(super) fn utc_ms(&self) -> i64 {
        self.clock.utc_ms()
    }

    /// The wall clock of the agent's clock, in Unix ms (what dead letters are stamped with).
    pub(super) fn wall_ms(&self) -> i64 {
        self.clock.wall_ms()
    }

    pub(super) fn set_error(&mut self, code: &'static str, class: ErrorClass, message: String) {
        self.last_error = Some(LastError::from_parts(
            code,
            class,
            &message,
            self.clock.wall_ms(),
        ));
    }

    pub(super) fn last_error(&self) -> Option<&LastError> {
        self.last_error.as_ref()
    }

    /// Keeps a fix for the disk. Returns `true` when the ring was full and its oldest fix
    /// was dropped for it.
    pub(super) fn hold(&mut self, fix: Fix) -> bool {
        let dropped = self.ring.len() >= self.ring_cap;
        if dropped {
            self.ring.pop_front();
        }
        self.ring.push_back(fix);
        dropped
    }

    pub(super) fn held(&self) -> &VecDeque<Fix> {
        &self.ring
    }

    /// The ring reached the disk.
    pub(super) fn clear_held(&mut self) {
        self.ring.clear();
    }

    /// The agent stops with the ring (and `also` fixes of a file not at its path) unwritten:
    /// they are lost. Returns how many.
    pub(super) fn abandon(&mut self, also: u64) -> u64 {
        let n = self.ring.len() as u64 + also;
        self.ring.clear();
        self.lost += n;
        n
    }

    pub(super) fn count_lost(&mut self, n: u64) {
        self.lost += n;
    }

    pub(super) fn lost(&self) -> u64 {
        self.lost
    }

    pub(super) fn rescues(&self) -> Rescues {
        self.rescues
    }

    pub(super) fn rescues_mut(&mut self) -> &mut Rescues {
        &mut self.rescues
    }

    /// The alarm rises to at least `to` and stays until restart.
    pub(super) fn raise_alarm(&mut self, to: Status) {
        self.alarm = self.alarm.max(to);
    }

    /// Writing a deleted file back failed: try again in `disk_retry_s`.
    pub(super) fn restore_failed(&mut self, now: Instant) {
        self.restore_retry = Some(now + self.retry_every);
    }

    pub(super) fn restored(&mut self) {
        self.restore_retry = None;
    }

    /// A file could not be written back to its path (the fixes are safe only while the agent
    /// runs).
    pub(super) fn restore_pending(&self) -> bool {
        self.restore_retry.is_some()
    }

    /// The retry of writing the file back is due (or there is none waiting).
    pub(super) fn restore_due(&self, now: Instant) -> bool {
        self.restore_retry.is_none_or(|at| now >= at)
    }

    /// A retry of writing the file back is waiting and due now.
    pub(super) fn restore_waiting_due(&self, now: Instant) -> bool {
        self.restore_retry.is_some_and(|at| now >= at)
    }

    /// At shutdown: a waiting retry is made due at once.
    pub(super) fn restore_now(&mut self, now: Instant) {
        if self.restore_retry.is_some() {
            self.restore_retry = Some(now);
        }
    }

    /// The damaged file could not be moved aside: fixes wait in memory; the quarantine is
    /// tried again with the disk.
    pub(super) fn quarantine_failed(&mut self, reason: String, now: Instant) {
        self.alarm = Status::Unhealthy;
        self.disk = Disk::Failing {
            next_retry: now + self.retry_every,
            cause: "BUFFER_CORRUPT",
        };
        self.quarantine_due = Some(reason);
    }

    /// A quarantine waiting for its retry, taken.
    pub(super) fn take_quarantine_due(&mut self) -> Option<String> {
        self.quarantine_due.take()
    }

    pub(super) fn quarantine_pending(&self) -> bool {
        self.quarantine_due.is_some()
    }

    /// A damaged file was moved aside and a new stream began in a fresh file.
    pub(super) fn quarantined(&mut self) {
        self.restore_retry = None;
        self.quarantine_due = None;
        self.disk = Disk::Writable;
    }

    /// Starts a rescue; `false` when one is running already.
    pub(super) fn begin_rescue(&mut self) -> bool {
        !std::mem::replace(&mut self.rescuing, true)
    }

    pub(super) fn end_rescue(&mut self) {
        self.rescuing = false;
    }

    pub(super) fn rescuing(&self) -> bool {
        self.rescuing
    }

    /// The files may not be looked at now: a rescue runs or waits for its retry.
    pub(super) fn looks_paused(&self, now: Instant) -> bool {
        self.rescuing
            || self.quarantine_due.is_some()
            || self.restore_retry.is_some_and(|at| now < at)
    }

    /// When a retry falls due: the disk's, the file's write-back.
    pub(super) fn next_retry(&self) -> Option<Instant> {
        let disk = match self.disk {
            Disk::Failing { next_retry, .. } => Some(next_retry),
            Disk::Writable => None,
        };
        match (disk, self.restore_retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The buffer's own judgement of itself: healthy; degraded while fixes wait in memory
    /// or after the file was written back; unhealthy after a damaged file was moved aside
    /// or while a rescue is pending.
    pub(super) fn condition(&self) -> Status {
        let transient = if self.disk != Disk::Writable || !self.ring.is_empty() {
            Status::Degraded
        } else {
            Status::Healthy
        };
        // The fixes are safe only while the agent runs.
        let unrescued = if self.restore_retry.is_some() || self.quarantine_due.is_some() {
            Status::Unhealthy
        } else {
            Status::Healthy
        };
        self.alarm.max(transient).max(unrescued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(i: i64) -> Fix {
        Fix::bare(1_700_000_000_000 + i, 48.1, 11.5)
    }

    #[test]
    fn a_full_ring_drops_its_oldest_fix_and_says_so() {
        let mut f = Faults::new(2, Duration::from_secs(5), Clock::system());
        assert!(!f.hold(fix(1)));
        assert!(!f.hold(fix(2)));
        assert!(f.hold(fix(3)));
        let times: Vec<i64> = f.held().iter().map(|x| x.time_ms % 10).collect();
        assert_eq!(times, vec![2, 3]);
        assert_eq!(f.condition(), Status::Degraded);
        assert_eq!(f.abandon(0), 2);
        assert_eq!((f.lost(), f.condition()), (2, Status::Healthy));
    }

    #[test]
    fn a_failing_disk_is_retried_after_the_interval_and_named_in_the_condition() {
        let t0 = Instant::now();
        let mut f = Faults::new(8, Duration::from_secs(5), Clock::system());
        let err = BufferError::DiskFull {
            path: "b.db".into(),
            detail: "full".into(),
        };
        f.disk_failing(&err, Path::new("b.db"), t0);
        assert_eq!(f.condition(), Status::Degraded);
        assert!(!f.retry_due(t0 + Duration::from_secs(4)));
        assert!(f.retry_due(t0 + Duration::from_secs(5)));
        assert_eq!(f.next_retry(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(f.last_error().map(|e| e.code), Some("BUFFER_DISK_FULL"));
        assert_eq!(f.failing_cause(), Some("BUFFER_DISK_FULL"));
        f.disk_back();
        assert_eq!((f.condition(), f.next_retry()), (Status::Healthy, None));
    }
}
