//! Reconnect pacing: exponential backoff with full jitter, as a pure state machine.
//!
//! The publisher tells it when a connection attempt failed (`on_failure(now)`) and when a
//! connection came up (`on_connected(now)`); it answers how long to wait before the next
//! attempt. Time comes in as an argument and randomness from an injected [`Jitter`], so tests
//! drive it without sleeping. It never sleeps, never touches the network, and never lets the
//! delay grow past `max`. The attempt counter is reset only when a connection stayed up for
//! `reset_after`: a cellular link that connects and drops at once must not be retried at the
//! initial rate forever.

use std::time::Duration;
use tokio::time::Instant;

/// The knobs of [`Backoff`]. Defaults follow the uplink issue: 1 s, doubling, at most 5 min,
/// reset after a minute of connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Ceiling of the first delay.
    pub initial: Duration,
    /// No delay is ever longer than this.
    pub max: Duration,
    /// A connection that stayed up this long counts as healthy: the next failure starts over
    /// from `initial`.
    pub reset_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(5 * 60),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// A tiny xorshift64* generator. Jitter only has to spread a fleet's reconnects apart, not
/// resist prediction, so a seeded PRNG is enough and keeps tests reproducible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xorshift64(u64);

impl Xorshift64 {
    /// Seeded as given; a zero seed (the one state xorshift cannot leave) is replaced.
    pub fn seeded(seed: u64) -> Self {
        Xorshift64(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// Seeded from the operating system, so vehicles that lost the same cell tower do not
    /// reconnect in lockstep. Falls back to the clock if the OS has no entropy to give.
    pub fn from_entropy() -> Self {
        let seed = getrandom::u64().unwrap_or_else(|_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
        Xorshift64::seeded(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..=bound` for jitter (modulo bias is irrelevant at these ranges).
    pub fn up_to(&mut self, bound: u64) -> u64 {
        match bound.checked_add(1) {
            Some(n) => self.next_u64() % n,
            None => self.next_u64(),
        }
    }
}

/// Where the randomness of a delay comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jitter {
    /// "Full jitter": each delay is uniform between zero and the current ceiling.
    Full(Xorshift64),
    /// Each delay is exactly the ceiling. For tests and for reading logs.
    Off,
}

impl Jitter {
    /// An extra delay uniform in `0..=max`; none with jitter off.
    pub fn spread(&mut self, max: Duration) -> Duration {
        match self {
            Jitter::Off => Duration::ZERO,
            Jitter::Full(_) => self.between(Duration::ZERO, max),
        }
    }

    /// A delay uniform in `lo..=hi` (millisecond steps); exactly `hi` with jitter off, so tests
    /// and logs see the ceiling. `lo` above `hi` is taken as `hi`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let lo = lo.min(hi);
        match self {
            Jitter::Off => hi,
            Jitter::Full(rng) => {
                let span = u64::try_from((hi - lo).as_millis()).unwrap_or(u64::MAX);
                lo + Duration::from_millis(rng.up_to(span))
            }
        }
    }
}

/// Exponential backoff state: how many attempts failed in a row and since when the link is up.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    jitter: Jitter,
    /// Failures since the last reset; the ceiling is `initial * 2^failures`, capped.
    failures: u32,
    /// When the current connection came up, if one is up.
    connected_since: Option<Instant>,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy, jitter: Jitter) -> Self {
        Backoff {
            policy,
            jitter,
            failures: 0,
            connected_since: None,
        }
    }

    /// A connection attempt failed, or an established connection broke. Returns how long to
    /// wait before the next attempt.
    pub fn on_failure(&mut self, now: Instant) -> Duration {
        if let Some(since) = self.connected_since.take() {
            if now.saturating_duration_since(since) >= self.policy.reset_after {
                self.failures = 0;
            }
        }
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        match &mut self.jitter {
            Jitter::Off => ceiling,
            Jitter::Full(rng) => {
                let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
                Duration::from_millis(rng.up_to(millis))
            }
        }
    }

    /// The connection is up (CONNACK accepted). The failure count is kept until the
    /// connection has stayed up for `reset_after`.
    pub fn on_connected(&mut self, now: Instant) {
        self.connected_since = Some(now);
    }

    /// Failures counted since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        // 2^20 s is far past any sane `max`; capping the exponent keeps the shift defined.
        let factor = 1u32 << self.failures.min(20);
        self.policy
            .initial
            .checked_mul(factor)
            .unwrap_or(self.policy.max)
            .min(self.policy.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn no_jitter() -> Backoff {
        Backoff::new(BackoffPolicy::default(), Jitter::Off)
    }

    #[test]
    fn delays_double_from_initial_up_to_max() {
        let mut b = no_jitter();
        let now = Instant::now();
        let delays: Vec<u64> = (0..12).map(|_| b.on_failure(now).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    #[test]
    fn the_delay_never_exceeds_max_even_after_thousands_of_failures() {
        let mut b = no_jitter();
        let now = Instant::now();
        for _ in 0..10_000 {
            assert!(b.on_failure(now) <= secs(300));
        }
        assert_eq!(b.on_failure(now), secs(300));
    }

    #[test]
    fn a_connection_that_drops_at_once_does_not_reset_the_delay() {
        let mut b = no_jitter();
        let t0 = Instant::now();
        for _ in 0..4 {
            b.on_failure(t0);
        }
        b.on_connected(t0);
        assert_eq!(b.on_failure(t0 + secs(5)), secs(16));
    }

    #[test]
    fn a_connection_that_stayed_up_resets_the_delay_to_initial() {
        let mut b = no_jitter();
        let t0 = Instant::now();
        for _ in 0..4 {
            b.on_failure(t0);
        }
        b.on_connected(t0);
        assert_eq!(b.on_failure(t0 + secs(60)), secs(1));
        assert_eq!(b.on_failure(t0 + secs(61)), secs(2));
    }

    #[test]
    fn full_jitter_stays_between_zero_and_the_ceiling_and_spreads_out() {
        let mut b = Backoff::new(
            BackoffPolicy::default(),
            Jitter::Full(Xorshift64::seeded(42)),
        );
        let now = Instant::now();
        for _ in 0..9 {
            b.on_failure(now);
        }
        // The ceiling is now at max; draws must vary and stay within it.
        let draws: Vec<Duration> = (0..200).map(|_| b.on_failure(now)).collect();
        assert!(draws.iter().all(|d| *d <= secs(300)));
        let below_half = draws.iter().filter(|d| **d < secs(150)).count();
        assert!(
            (50..150).contains(&below_half),
            "not uniform-ish: {below_half}/200 below half"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let now = Instant::now();
        let run = |seed| {
            let mut b = Backoff::new(
                BackoffPolicy::default(),
                Jitter::Full(Xorshift64::seeded(seed)),
            );
            (0..10).map(|_| b.on_failure(now)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn a_zero_seed_still_produces_varying_numbers() {
        let mut rng = Xorshift64::seeded(0);
        let a = rng.next_u64();
        let b = rng.next_u64();
        assert_ne!(a, b);
        assert_ne!(a, 0);
    }

    #[test]
    fn between_stays_in_its_range_and_is_the_ceiling_without_jitter() {
        let mut j = Jitter::Full(Xorshift64::seeded(9));
        let draws: Vec<Duration> = (0..500).map(|_| j.between(secs(2), secs(4))).collect();
        assert!(draws.iter().all(|d| (secs(2)..=secs(4)).contains(d)));
        assert!(draws.iter().any(|d| *d < Duration::from_millis(2100)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(3900)));
        assert_eq!(Jitter::Off.between(secs(2), secs(4)), secs(4));
        assert_eq!(Jitter::Off.between(secs(5), secs(4)), secs(4));
        assert_eq!(Jitter::Off.spread(secs(4)), Duration::ZERO);
        assert!(Jitter::Full(Xorshift64::seeded(1)).spread(secs(4)) <= secs(4));
    }

    #[test]
    fn entropy_seeded_generators_differ() {
        assert_ne!(Xorshift64::from_entropy(), Xorshift64::from_entropy());
    }
}
