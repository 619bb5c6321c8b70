//! The circuit breaker in front of the broker: stops connection attempts after repeated
//! failures of the broker, then lets exactly one trial attempt through after a pause that
//! doubles with each failed trial, up to `open_max`.
//!
//! It owns only its state ([`State`]); the reconnect policy ([`super::reconnect`]) reports
//! outcomes (`on_success`, `on_failure(now)`) and asks `try_acquire(now)` before each full
//! connection attempt. Only the broker's failures reach it (refusals, connections dropped
//! right after CONNACK, PUBACK timeouts while the path works): a network path that is down
//! is the probes' business and never opens it. Time is passed in. It never sleeps and never
//! decides how long to back off inside the closed state (that is [`super::backoff`]); it only
//! gates attempts. The growing pause is what bounds a broker that keeps refusing to at most
//! `3600 / open_max` full attempts an hour once it is reached (12 with the defaults, 5 min).
//! [`Breaker::status`] is what `/health` shows as `components.mqtt.breaker`.

use std::num::NonZeroU32;
use std::time::Duration;
use tokio::time::Instant;

/// The breaker's knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures (connect failure, PUBACK timeout) that open the breaker.
    pub failure_threshold: NonZeroU32,
    /// How long it stays open the first time before one trial attempt is let through.
    pub open_for: Duration,
    /// Each failed trial doubles the pause, up to this.
    pub open_max: Duration,
}

impl BreakerPolicy {
    /// The longest pause: `open_max`, never below `open_for` (a policy that says otherwise
    /// means "no growth").
    pub fn longest_pause(&self) -> Duration {
        self.open_max.max(self.open_for)
    }
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failure_threshold: NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN),
            open_for: Duration::from_secs(60),
            open_max: Duration::from_secs(300),
        }
    }
}

/// Where the breaker stands.
///
/// ```text
///   Closed --(failures reach threshold)--> Open (pause open_for)
///   Open   --(pause elapsed, try_acquire)--> HalfOpen (the trial attempt is out)
///   HalfOpen --(trial succeeded)--> Closed
///   HalfOpen --(trial failed)--> Open (pause doubled, at most open_max)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Attempts go through; counting consecutive failures.
    Closed { failures: u32 },
    /// No attempts until `since + pause`.
    Open { since: Instant, pause: Duration },
    /// One trial attempt is out; every other attempt is refused until it reports back.
    /// `since` and `pause` are those of the open state that just ended: the next pause
    /// doubles it, and a trial that ends without a verdict returns to it.
    HalfOpen { since: Instant, pause: Duration },
}

impl State {
    /// The name `/health` and metrics use.
    pub fn status(&self) -> crate::status::BreakerState {
        match self {
            State::Closed { .. } => crate::status::BreakerState::Closed,
            State::Open { .. } => crate::status::BreakerState::Open,
            State::HalfOpen { .. } => crate::status::BreakerState::HalfOpen,
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

    /// May a connection attempt be made now? In the open state, once the pause has passed,
    /// the first caller gets the trial attempt and the breaker goes half-open.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { since, pause } => {
                if now.saturating_duration_since(since) >= pause {
                    self.go(State::HalfOpen { since, pause });
                    true
                } else {
                    false
                }
            }
            // The trial attempt is already out.
            State::HalfOpen { .. } => false,
        }
    }

    /// While open: when the pause ends (`since + pause`, as it was set when the breaker
    /// opened; never moved to the caller's `now`, so a caller that adds jitter to it gets a
    /// time that stands still). `None` when closed (nothing to wait for) and half-open (the
    /// trial is out: the wait is for its verdict, not for a time).
    pub fn open_until(&self) -> Option<Instant> {
        match self.state {
            State::Open { since, pause } => Some(since + pause),
            State::Closed { .. } | State::HalfOpen { .. } => None,
        }
    }

    /// The pause of the open state (zero otherwise), for the caller's jitter.
    pub fn pause(&self) -> Duration {
        match self.state {
            State::Open { pause, .. } => pause,
            _ => Duration::ZERO,
        }
    }

    /// The attempt succeeded (connected and, for a trial, the link carried traffic).
    pub fn on_success(&mut self) {
        match self.state {
            State::Closed { .. } | State::HalfOpen { .. } => self.go(State::Closed { failures: 0 }),
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

    /// The broker failed an attempt (refused, dropped the link right after connecting, did
    /// not acknowledge on a working path).
    pub fn on_failure(&mut self, now: Instant) {
        match self.state {
            State::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= self.policy.failure_threshold.get() {
                    let pause = self.policy.open_for.min(self.open_max());
                    self.go(State::Open { since: now, pause });
                } else {
                    self.go(State::Closed { failures });
                }
            }
            State::HalfOpen { pause, .. } => {
                let pause = pause.saturating_mul(2).min(self.open_max());
                self.go(State::Open { since: now, pause });
            }
            // A late failure of an attempt made before opening: the pause already runs.
            State::Open { .. } => {}
        }
    }

    /// The trial attempt ended without a verdict on the broker (the network path was down,
    /// or the attempt was given up for another reason): back to open with the pause that had
    /// already passed, so the next attempt is the trial again. A no-op in any other state.
    pub fn release_trial(&mut self) {
        if let State::HalfOpen { since, pause } = self.state {
            self.go(State::Open { since, pause });
        }
    }

    fn open_max(&self) -> Duration {
        self.policy.longest_pause()
    }

    /// Every state change goes through here, so an impossible transition is caught in tests
    /// (debug builds) and merely logged in the field.
    fn go(&mut self, next: State) {
        use State::*;
        let allowed = matches!(
            (self.state, next),
            (Closed { .. }, Closed { .. })
                | (Closed { .. }, Open { .. })
                | (Open { .. }, HalfOpen { .. })
                | (HalfOpen { .. }, Closed { .. })
                | (HalfOpen { .. }, Open { .. })
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
            open_max: Duration::from_secs(open_for_s * 5),
        })
    }

    fn open(since: Instant, pause_s: u64) -> State {
        State::Open {
            since,
            pause: Duration::from_secs(pause_s),
        }
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
        assert_eq!(b.state(), open(t0, 10));
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
        assert_eq!(b.state(), open(t0, 10));
        assert_eq!(b.open_until(), Some(t0 + secs(10)));
    }

    #[test]
    fn half_open_lets_exactly_one_probe_through() {
        let mut b = breaker(1, 10);
        let t0 = Instant::now();
        b.on_failure(t0);
        assert!(b.try_acquire(t0 + secs(10)));
        assert_eq!(
            b.state(),
            State::HalfOpen {
                since: t0,
                pause: secs(10)
            }
        );
        assert_eq!(b.state().status().as_str(), "half_open");
        assert!(!b.try_acquire(t0 + secs(10)));
        assert!(!b.try_acquire(t0 + secs(1000)));
        assert_eq!(b.open_until(), None);
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
    fn a_failed_trial_reopens_the_breaker_for_twice_the_pause() {
        let mut b = breaker(2, 10);
        let t0 = Instant::now();
        b.on_failure(t0);
        b.on_failure(t0);
        let trial_at = t0 + secs(12);
        assert!(b.try_acquire(trial_at));
        b.on_failure(trial_at);
        assert_eq!(b.state(), open(trial_at, 20));
        assert!(!b.try_acquire(trial_at + secs(19)));
        assert!(b.try_acquire(trial_at + secs(20)));
    }

    #[test]
    fn the_pause_doubles_up_to_open_max_and_a_success_starts_over() {
        let mut b = breaker(1, 10);
        let mut t = Instant::now();
        b.on_failure(t);
        let mut pauses = vec![b.pause().as_secs()];
        for _ in 0..5 {
            t += b.pause();
            assert!(b.try_acquire(t));
            b.on_failure(t);
            pauses.push(b.pause().as_secs());
        }
        assert_eq!(pauses, [10, 20, 40, 50, 50, 50]);
        t += b.pause();
        assert!(b.try_acquire(t));
        b.on_success();
        b.on_failure(t);
        assert_eq!(b.state(), open(t, 10));
    }

    #[test]
    fn an_open_max_below_open_for_means_a_fixed_pause() {
        let mut b = Breaker::new(BreakerPolicy {
            failure_threshold: NonZeroU32::new(1).unwrap(),
            open_for: secs(30),
            open_max: secs(5),
        });
        let t0 = Instant::now();
        b.on_failure(t0);
        assert_eq!(b.pause(), secs(30));
        assert!(b.try_acquire(t0 + secs(30)));
        b.on_failure(t0 + secs(30));
        assert_eq!(b.pause(), secs(30));
    }

    #[test]
    fn a_trial_without_a_verdict_leaves_the_next_attempt_to_be_the_trial() {
        let mut b = breaker(1, 10);
        let t0 = Instant::now();
        b.on_failure(t0);
        assert!(b.try_acquire(t0 + secs(10)));
        b.release_trial();
        assert_eq!(b.state(), open(t0, 10));
        assert!(b.try_acquire(t0 + secs(11)));
        b.on_failure(t0 + secs(11));
        assert_eq!(
            b.pause(),
            secs(20),
            "the pause grows only on a real verdict"
        );
        b.release_trial();
        assert_eq!(b.state(), open(t0 + secs(11), 20), "no-op while open");
    }

    #[test]
    fn a_late_failure_while_open_does_not_extend_the_pause() {
        let mut b = breaker(1, 10);
        let t0 = Instant::now();
        b.on_failure(t0);
        b.on_failure(t0 + secs(5));
        assert_eq!(b.state(), open(t0, 10));
    }
}
