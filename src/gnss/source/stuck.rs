//! Is the receiver stuck? A pure state machine: the serial session tells it when bytes came
//! and what receiver time the decoder saw last, with the host's monotonic `now`; it answers
//! whether the receiver is stuck and how long the next session may be stuck before the port
//! is reopened again. It never reads a clock, sleeps or touches the port.
//!
//! **Stuck** is either of:
//! - no bytes at all for `limit` (a receiver that went quiet while its port stays open);
//! - the receiver's time not advancing for `limit` of the host's monotonic time, however many
//!   sentences arrive (frozen firmware repeating one epoch, at any rate: ten times a second
//!   or once a minute). The time is the newest UTC time of day of any sentence, so it counts
//!   even when the repeats never complete an epoch. A receiver that has not said any time
//!   yet (a cold start before the first fix) is judged by silence only.
//!
//! **Reopening ever less often**: a receiver that stays stuck (nothing on the line, firmware
//! that never recovers) is reopened after `stuck_after`, then after twice that, up to
//! [`STUCK_LIMIT_MAX`]; once its time advances in a session, the next limit is back to
//! `stuck_after`.

use std::time::{Duration, Instant};

/// The longest a stuck receiver is left before the port is reopened again: a receiver that
/// stays stuck is retried every few minutes, not every `stuck_after` all night.
pub const STUCK_LIMIT_MAX: Duration = Duration::from_secs(300);

/// What made the receiver stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stuck {
    /// No bytes for the limit.
    Silent,
    /// Bytes, but the receiver's time stood still for the limit.
    TimeFrozen,
}

impl Stuck {
    pub fn as_str(self) -> &'static str {
        match self {
            Stuck::Silent => "no bytes",
            Stuck::TimeFrozen => "receiver time not advancing",
        }
    }
}

/// One session's watch.
#[derive(Debug, Clone)]
pub struct StuckWatch {
    limit: Duration,
    last_bytes: Instant,
    /// The receiver time last seen, and since when it has had that value.
    time: Option<(u32, Instant)>,
    /// The time advanced at least once in this session.
    progressed: bool,
}

impl StuckWatch {
    /// A session that opened at `now` and may be stuck for `limit`.
    pub fn new(limit: Duration, now: Instant) -> Self {
        StuckWatch {
            limit,
            last_bytes: now,
            time: None,
            progressed: false,
        }
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Bytes arrived.
    pub fn bytes(&mut self, now: Instant) {
        self.last_bytes = now;
    }

    /// The newest receiver time of day (ms) the decoder has seen, if any.
    pub fn receiver_time(&mut self, time_of_day_ms: Option<u32>, now: Instant) {
        let Some(t) = time_of_day_ms else { return };
        match self.time {
            Some((last, _)) if last == t => {}
            Some(_) => {
                self.time = Some((t, now));
                self.progressed = true;
            }
            // The first time seen in this session starts the clock; it is not progress.
            None => self.time = Some((t, now)),
        }
    }

    /// Stuck as of `now`, and why; `None` while the receiver is well.
    pub fn verdict(&self, now: Instant) -> Option<Stuck> {
        if now.saturating_duration_since(self.last_bytes) > self.limit {
            return Some(Stuck::Silent);
        }
        match self.time {
            Some((_, since)) if now.saturating_duration_since(since) > self.limit => {
                Some(Stuck::TimeFrozen)
            }
            _ => None,
        }
    }

    /// The limit for the session after this one ended stuck: back to `stuck_after` when the
    /// receiver's time advanced in this session (a fresh fault), doubled up to
    /// [`STUCK_LIMIT_MAX`] when it did not (the same fault going on).
    pub fn next_limit(&self, stuck_after: Duration) -> Duration {
        if self.progressed {
            stuck_after
        } else {
            self.limit
                .saturating_mul(2)
                .min(STUCK_LIMIT_MAX.max(stuck_after))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn watch(limit_s: u64) -> (StuckWatch, Instant) {
        let t0 = Instant::now();
        (StuckWatch::new(Duration::from_secs(limit_s), t0), t0)
    }

    #[test]
    fn silence_is_stuck_just_after_the_limit_not_at_it() {
        let (w, t0) = watch(10);
        let limit = Duration::from_secs(10);
        assert_eq!(w.verdict(t0 + limit), None);
        assert_eq!(w.verdict(t0 + limit + MS), Some(Stuck::Silent));
    }

    #[test]
    fn one_epoch_repeated_ten_times_a_second_is_stuck_after_the_limit() {
        let (mut w, t0) = watch(10);
        let frozen = Some(43_200_000);
        for tenth in 0..=100u64 {
            let now = t0 + Duration::from_millis(100 * tenth);
            w.bytes(now);
            w.receiver_time(frozen, now);
            assert_eq!(w.verdict(now), None, "at {tenth} tenths");
        }
        let now = t0 + Duration::from_millis(10_100);
        w.bytes(now);
        w.receiver_time(frozen, now);
        assert_eq!(w.verdict(now), Some(Stuck::TimeFrozen));
        assert_eq!(
            w.next_limit(Duration::from_secs(10)),
            Duration::from_secs(20)
        );
    }

    #[test]
    fn a_receiver_whose_time_advances_is_never_stuck_at_1_hz_or_10_hz() {
        for period_ms in [1_000u64, 100] {
            let (mut w, t0) = watch(2);
            for k in 0..1_000u64 {
                let now = t0 + Duration::from_millis(period_ms * k);
                w.bytes(now);
                w.receiver_time(Some(u32::try_from(k * period_ms).unwrap()), now);
                assert_eq!(w.verdict(now), None);
            }
            assert_eq!(w.next_limit(Duration::from_secs(2)), Duration::from_secs(2));
        }
    }

    #[test]
    fn a_cold_start_without_any_time_is_judged_by_silence_only() {
        let (mut w, t0) = watch(10);
        let now = t0 + Duration::from_secs(60);
        w.bytes(now);
        w.receiver_time(None, now);
        assert_eq!(w.verdict(now), None);
    }

    #[test]
    fn the_first_time_seen_starts_the_clock_without_counting_as_progress() {
        let (mut w, t0) = watch(10);
        w.receiver_time(Some(5_000), t0 + Duration::from_secs(5));
        let late = t0 + Duration::from_secs(15);
        w.bytes(late);
        assert_eq!(w.verdict(late), None, "frozen for 10 s exactly");
        w.bytes(late + MS);
        assert_eq!(w.verdict(late + MS), Some(Stuck::TimeFrozen));
        assert_eq!(
            w.next_limit(Duration::from_secs(10)),
            Duration::from_secs(20)
        );
    }

    #[test]
    fn the_reopen_limit_doubles_to_five_minutes_and_resets_after_progress() {
        let stuck_after = Duration::from_millis(200);
        let mut limit = stuck_after;
        let mut seen = Vec::new();
        for _ in 0..14 {
            let w = StuckWatch::new(limit, Instant::now());
            limit = w.next_limit(stuck_after);
            seen.push(limit.as_millis());
        }
        assert_eq!(
            seen,
            [
                400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 51_200, 102_400, 204_800, 300_000,
                300_000, 300_000, 300_000
            ]
        );
        let (mut w, t0) = (StuckWatch::new(limit, Instant::now()), Instant::now());
        w.receiver_time(Some(1_000), t0);
        w.receiver_time(Some(2_000), t0);
        assert_eq!(w.next_limit(stuck_after), stuck_after);
        // A stuck_after above the ceiling is never lowered to it.
        let long = Duration::from_secs(600);
        assert_eq!(StuckWatch::new(long, t0).next_limit(long), long);
    }
}
