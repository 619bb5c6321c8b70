//! The circuit breaker in front of the broker: stops connection attempts after repeated
//! failures, then lets exactly one probe through after a pause.
//!
//! It owns only its state ([`State`]); the publisher reports outcomes (`on_success`,
//! `on_failure(now)`) and asks `try_acquire(now)` before each connection attempt. Time is
//! passed in. It never sleeps and never decides how long to back off inside the closed state
//! (that is [`super::backoff`]); it only gates attempts. [`Breaker::status`] is what `/health`
//! shows as `components.mqtt.breaker`.

use std::num::NonZeroU32;
use std::time::Duration;
use tokio::time::Instant;

/// The breaker's knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures (connect failure, PUBACK timeout) that open the breaker.
    pub failure_threshold: NonZeroU32,
    /// How long it stays open before one probe is let through.
    pub open_for: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failure_threshold: NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN),
            open_for: Duration::from_secs(60),
        }
    }
}

/// Where the breaker stands.
///
/// ```text
///   Closed --(failures reach threshold)--> Open
///   Open   --(open_for elapsed, try_acquire)--> HalfOpen (the probe is out)
///   HalfOpen --(probe succeeded)--> Closed
///   HalfOpen --(probe failed)--> Open
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Attempts go through; counting consecutive failures.
    Closed { failures: u32 },
    /// No attempts until `since + open_for`.
    Open { since: Instant },
    /// One probe attempt is out; every other attempt is refused until it reports back.
    HalfOpen,
}

impl State {
    /// The name `/health` and metrics use.
    pub fn status(&self) -> crate::status::BreakerState {
        match self {
            State::Closed { .. } => crate::status::BreakerState::Closed,
            State::Open { .. } => crate::status::BreakerState::Open,
            State::HalfOpen => crate::status::BreakerState::HalfOpen,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Breaker {
    policy: BreakerPolicy,
    state: State,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        Breaker {
            policy,
            state: State::Closed { failures: 0 },
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Where it stands, in the status vocabulary (`/health`, metrics).
    pub fn status(&self) -> crate::status::BreakerState {
        self.state.status()
    }

    /// May a connection attempt be made now? In the open state, once `open_for` has passed,
    /// the first caller gets the probe and the breaker goes half-open.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { since } => {
                if now.saturating_duration_since(since) >= self.policy.open_for {
                    self.go(State::HalfOpen);
                    true
                } else {
                    false
                }
            }
            // The probe is already out.
            State::HalfOpen => false,
        }
    }

    /// When the next attempt may be made: now when closed, never (`None`) while the probe is
    /// out, the end of the pause when open.
    pub fn next_attempt_at(&self, now: Instant) -> Option<Instant> {
        match self.state {
            State::Closed { .. } => Some(now),
            State::Open { since } => Some((since + self.policy.open_for).max(now)),
            State::HalfOpen => None,
        }
    }

    /// The attempt succeeded (connected and, for a probe, the link carried traffic).
    pub fn on_success(&mut self) {
        match self.state {
            State::Closed { .. } | State::HalfOpen => self.go(State::Closed { failures: 0 }),
            // Nothing may succeed while open: no attempt was allowed. Stay open rather than
            // trust an outcome the breaker never let through.
            State::Open { .. } => {
                tracing::warn!(
                    code = "MQTT_BREAKER_MISUSE",
                    state = self.state.status().as_str(),
                    "success reported while the breaker is open; ignored"
                );
            }
        }
    }

    /// The attempt failed (connect failure, PUBACK timeout, link broke).
    pub fn on_failure(&mut self, now: Instant) {
        match self.state {
            State::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= self.policy.failure_threshold.get() {
                    self.go(State::Open { since: now });
                } else {
                    self.go(State::Closed { failures });
                }
            }
            State::HalfOpen => self.go(State::Open { since: now }),
            // A late failure of an attempt made before opening: the pause already runs.
            State::Open { .. } => {}
        }
    }

    /// Every state change goes through here, so an impossible transition is caught in tests
    /// (debug builds) and merely logged in the field.
    fn go(&mut self, next: State) {
        use State::*;
        let allowed = matches!(
            (self.state, next),
            (Closed { .. }, Closed { .. })
                | (Closed { .. }, Open { .. })
                | (Open { .. }, HalfOpen)
                | (HalfOpen, Closed { .. })
                | (HalfOpen, Open { .. })
        );
        debug_assert!(allowed, "breaker transition {:?} -> {:?}", self.state, next);
        if !allowed {
            tracing::warn!(
                code = "MQTT_BREAKER_MISUSE",
                from = self.state.status().as_str(),
                to = next.status().as_str(),
                "unexpected breaker transition"
            );
        }
        if self.state.status() != next.status() {
            tracing::info!(
                from = self.state.status().as_str(),
                to = next.status().as_str(),
                "breaker"
            );
        }
        self.state = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, open_for_s: u64) -> Breaker {
        Breaker::new(BreakerPolicy {
            failure_threshold: NonZeroU32::new(threshold).unwrap(),
            open_for: Duration::from_secs(open_for_s),
        })
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_new_breaker_is_closed_and_lets_attempts_through() {
        let mut b = breaker(3, 10);
        assert_eq!(b.state(), State::Closed { failures: 0 });
        assert!(b.try_acquire(Instant::now()));
        assert_eq!(b.state().status().as_str(), "closed");
    }

    #[test]
    fn it_opens_exactly_at_the_failure_threshold() {
        let mut b = breaker(3, 10);
        let t0 = Instant::now();
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!(b.state(), State::Closed { failures: 2 });
        assert!(b.try_acquire(t0));
        b.on_failure(t0);
        assert_eq!(b.state(), State::Open { since: t0 });
        assert_eq!(b.state().status().as_str(), "open");
    }

    #[test]
    fn a_success_in_between_restarts_the_failure_count() {
        let mut b = breaker(3, 10);
        let t0 = Instant::now();
        b.on_failure(t0);
        b.on_failure(t0);
        b.on_success();
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!(b.state(), State::Closed { failures: 2 });
    }

    #[test]
    fn it_stays_open_until_open_for_has_passed() {
        let mut b = breaker(1, 10);
        let t0 = Instant::now();
        b.on_failure(t0);
        assert!(!b.try_acquire(t0));
        assert!(!b.try_acquire(t0 + secs(9)));
        assert_eq!(b.state(), State::Open { since: t0 });
        assert_eq!(b.next_attempt_at(t0 + secs(3)), Some(t0 + secs(10)));
    }

    #[test]
    fn half_open_lets_exactly_one_probe_through() {
        let mut b = breaker(1, 10);
        let t0 = Instant::now();
        b.on_failure(t0);
        assert!(b.try_acquire(t0 + secs(10)));
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(b.state().status().as_str(), "half_open");
        assert!(!b.try_acquire(t0 + secs(10)));
        assert!(!b.try_acquire(t0 + secs(1000)));
        assert_eq!(b.next_attempt_at(t0 + secs(11)), None);
    }

    #[test]
    fn a_successful_probe_closes_the_breaker() {
        let mut b = breaker(2, 10);
        let t0 = Instant::now();
        b.on_failure(t0);
        b.on_failure(t0);
        assert!(b.try_acquire(t0 + secs(10)));
        b.on_success();
        assert_eq!(b.state(), State::Closed { failures: 0 });
        assert!(b.try_acquire(t0 + secs(10)));
    }

    #[test]
    fn a_failed_probe_reopens_the_breaker_for_another_full_pause() {
        let mut b = breaker(2, 10);
        let t0 = Instant::now();
        b.on_failure(t0);
        b.on_failure(t0);
        let probe_at = t0 + secs(12);
        assert!(b.try_acquire(probe_at));
        b.on_failure(probe_at);
        assert_eq!(b.state(), State::Open { since: probe_at });
        assert!(!b.try_acquire(probe_at + secs(9)));
        assert!(b.try_acquire(probe_at + secs(10)));
    }

    #[test]
    fn a_late_failure_while_open_does_not_extend_the_pause() {
        let mut b = breaker(1, 10);
        let t0 = Instant::now();
        b.on_failure(t0);
        b.on_failure(t0 + secs(5));
        assert_eq!(b.state(), State::Open { since: t0 });
    }
}
