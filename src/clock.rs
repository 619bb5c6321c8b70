//! The agent's one clock: monotonic time for ages and timers, the host's wall clock for
//! stamps, and the GNSS receiver as a clock for fix ages.
//!
//! Health (`uptime_s`, `last_fix_age_s`, `oldest_age_s`, `time`, `last_error.at`), metrics
//! (`last_ack_age`, the fix-to-ack latency) and the uplink's ack bookkeeping all read time
//! through one [`Clock`] handle, injected at start: [`Clock::system`] in the daemon,
//! [`Clock::manual`] in tests, which then move time with [`ManualTime::advance`] instead of
//! sleeping.
//!
//! **Fix ages.** A fix carries the receiver's UTC. Its age needs a "now" on the same time base.
//! The gateway's system clock is the natural one, but a box without a battery-backed RTC boots
//! in the past and may run for hours before NTP reaches it over a cellular link, which would
//! make every latency zero or months long. So the receiver is a clock too: the UTC of the
//! newest accepted fix plus the monotonic time since it was accepted ([`Clock::note_fix`]).
//! [`Clock::utc_ms`] trusts the system clock while it agrees with that estimate within
//! [`TRUST_SYSTEM_WITHIN`] (the estimate runs up to one epoch late, as an epoch is complete
//! only when the next begins), and uses the estimate otherwise; before the first fix there is
//! only the system clock.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest disagreement between the system clock and the GNSS estimate that still counts as
/// agreement: above a few epochs of assembly delay, far below any unsynchronised RTC.
pub const TRUST_SYSTEM_WITHIN: Duration = Duration::from_secs(10);

/// Where time comes from: the host, or a test's hand.
trait TimeSource: Send + Sync + 'static {
    fn now(&self) -> Instant;
    /// Host wall clock, milliseconds since the Unix epoch.
    fn wall_ms(&self) -> i64;
}

struct SystemTime;

impl TimeSource for SystemTime {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall_ms(&self) -> i64 {
        system_wall_ms()
    }
}

/// The host's wall clock in Unix milliseconds (0 before 1970: a clock that far off is no
/// clock).
fn system_wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Time that moves only when a test says so.
#[derive(Debug)]
pub struct ManualTime {
    base: Instant,
    offset_ms: AtomicU64,
    wall_base_ms: AtomicI64,
}

impl ManualTime {
    /// Move both clocks forward.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Set the wall clock (a gateway whose RTC is wrong, or NTP stepping it), keeping the
    /// monotonic clock where it is.
    pub fn set_wall_ms(&self, wall_ms: i64) {
        let offset = i64::try_from(self.offset_ms.load(Ordering::SeqCst)).unwrap_or(i64::MAX);
        self.wall_base_ms
            .store(wall_ms.saturating_sub(offset), Ordering::SeqCst);
    }

    fn offset(&self) -> Duration {
        Duration::from_millis(self.offset_ms.load(Ordering::SeqCst))
    }
}

impl TimeSource for ManualTime {
    fn now(&self) -> Instant {
        self.base.checked_add(self.offset()).unwrap_or(self.base)
    }
    fn wall_ms(&self) -> i64 {
        let offset = i64::try_from(self.offset_ms.load(Ordering::SeqCst)).unwrap_or(i64::MAX);
        self.wall_base_ms
            .load(Ordering::SeqCst)
            .saturating_add(offset)
    }
}

/// The newest accepted fix: its receiver UTC and when it was accepted.
#[derive(Debug, Clone, Copy)]
struct LastFix {
    utc_ms: i64,
    at: Instant,
}

/// The clock handle: cheap to clone, shared by every stage.
#[derive(Clone)]
pub struct Clock {
    source: Arc<dyn TimeSource>,
    last_fix: Arc<Mutex<Option<LastFix>>>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock").finish_non_exhaustive()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    /// The host's clocks.
    pub fn system() -> Clock {
        Clock::from_source(Arc::new(SystemTime))
    }

    /// A clock for tests, starting at `wall_ms` on the wall clock; returns the hand that
    /// moves it.
    pub fn manual(wall_ms: i64) -> (Clock, Arc<ManualTime>) {
        let time = Arc::new(ManualTime {
            base: Instant::now(),
            offset_ms: AtomicU64::new(0),
            wall_base_ms: AtomicI64::new(wall_ms),
        });
        (Clock::from_source(time.clone()), time)
    }

    fn from_source(source: Arc<dyn TimeSource>) -> Clock {
        Clock {
            source,
            last_fix: Arc::new(Mutex::new(None)),
        }
    }

    /// Monotonic now: for ages, intervals and deadlines.
    pub fn now(&self) -> Instant {
        self.source.now()
    }

    /// The host's wall clock, Unix milliseconds: for `time` and `last_error.at` stamps.
    pub fn wall_ms(&self) -> i64 {
        self.source.wall_ms()
    }

    /// The receiver's UTC of a fix just accepted: from now on the receiver is a clock too.
    pub fn note_fix(&self, utc_ms: i64) {
        let at = self.now();
        *self.last_fix.lock().unwrap_or_else(|p| p.into_inner()) = Some(LastFix { utc_ms, at });
    }

    /// "Now" in UTC ms for fix ages: the wall clock while it agrees with the receiver's
    /// estimate (or when there is none yet), else the estimate.
    pub fn utc_ms(&self) -> i64 {
        let last = *self.last_fix.lock().unwrap_or_else(|p| p.into_inner());
        let estimate = last.map(|f| receiver_now_ms(f, self.now()));
        age_base_ms(self.wall_ms(), estimate)
    }
}

/// The receiver's UTC now (ms): the newest fix's UTC plus the monotonic time since.
fn receiver_now_ms(fix: LastFix, now: Instant) -> i64 {
    let since =
        i64::try_from(now.saturating_duration_since(fix.at).as_millis()).unwrap_or(i64::MAX);
    fix.utc_ms.saturating_add(since)
}

/// The system clock when it agrees with the receiver's estimate (or when there is none),
/// else the estimate.
fn age_base_ms(system_ms: i64, receiver_ms: Option<i64>) -> i64 {
    let within = TRUST_SYSTEM_WITHIN.as_millis().min(u128::from(u64::MAX)) as u64;
    match receiver_ms {
        Some(r) if system_ms.abs_diff(r) > within => r,
        _ => system_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARCH_2026: i64 = 1_773_475_200_000;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let (clock, hand) = Clock::manual(MARCH_2026);
        let t0 = clock.now();
        assert_eq!(clock.wall_ms(), MARCH_2026);
        hand.advance(Duration::from_millis(2_500));
        assert_eq!(clock.now() - t0, Duration::from_millis(2_500));
        assert_eq!(clock.wall_ms(), MARCH_2026 + 2_500);
        hand.set_wall_ms(0);
        assert_eq!(clock.wall_ms(), 0);
        assert_eq!(clock.now() - t0, Duration::from_millis(2_500));
    }

    #[test]
    fn before_any_fix_fix_ages_use_the_system_clock() {
        let (clock, _) = Clock::manual(MARCH_2026);
        assert_eq!(clock.utc_ms(), MARCH_2026);
    }

    #[test]
    fn the_receiver_estimate_is_the_last_fix_plus_the_monotonic_time_since() {
        // A gateway booted at the epoch, before NTP.
        let (clock, hand) = Clock::manual(0);
        clock.note_fix(MARCH_2026);
        hand.advance(Duration::from_millis(2_500));
        assert_eq!(clock.utc_ms(), MARCH_2026 + 2_500);
    }

    #[test]
    fn a_system_clock_that_agrees_with_the_receiver_is_used() {
        let (clock, hand) = Clock::manual(MARCH_2026 + 900);
        clock.note_fix(MARCH_2026);
        assert_eq!(clock.utc_ms(), MARCH_2026 + 900);
        hand.set_wall_ms(MARCH_2026 - 9_000);
        assert_eq!(clock.utc_ms(), MARCH_2026 - 9_000);
    }

    #[test]
    fn a_system_clock_in_the_past_or_future_gives_way_to_the_receiver() {
        let (clock, hand) = Clock::manual(MARCH_2026 - 86_400_000);
        clock.note_fix(MARCH_2026);
        assert_eq!(clock.utc_ms(), MARCH_2026);
        hand.set_wall_ms(MARCH_2026 + 3 * 3_600_000);
        assert_eq!(clock.utc_ms(), MARCH_2026);
        hand.set_wall_ms(MARCH_2026 + 10_001);
        assert_eq!(clock.utc_ms(), MARCH_2026);
        assert_eq!(age_base_ms(i64::MIN, Some(i64::MAX)), i64::MAX);
    }
}
