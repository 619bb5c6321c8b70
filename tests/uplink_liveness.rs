//! The reconnect state machine's liveness, property-tested: driven as the publisher drives it
//! (a probe or a full attempt at each step's time, then what it met), with random sequences of
//! every ending, probe results, late wake-ups and SIGHUP-style reconfiguration (a fresh machine
//! from new settings), from any history:
//!
//! - the next step is never due further ahead than the policy's liveness bound
//!   (`ReconnectPolicy::longest_wait`), measured from the event that chose it;
//! - a full attempt is let through at the time it was scheduled, and a probe that gets
//!   through leads to a full attempt: what `/health` says (`retry_in_s`) is what happens;
//! - what `/health` shows of the pacing (breaker, path, next step) is the machine's own
//!   state and the step it chose.
//!
//! Before issue 20 the first property failed after five refusals with jitter on: the
//! breaker's gate moved with the clock and the trial never came.

use gps_agent::uplink::backoff::{BackoffPolicy, Jitter, Xorshift64};
use gps_agent::uplink::breaker::BreakerPolicy;
use gps_agent::uplink::reconnect::{Ending, Pacing, ProbePolicy, Reconnect, ReconnectPolicy, Step};
use proptest::prelude::*;
use std::num::NonZeroU32;
use std::time::Duration;
use tokio::time::Instant;

/// Every ending the publisher can report.
const ENDINGS: [Ending; 8] = [
    Ending::Unreachable,
    Ending::Unserved,
    Ending::Broker,
    Ending::Stalled,
    Ending::Dropped,
    Ending::Narrowed,
    Ending::PathReturned,
    Ending::Permanent,
];

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A policy within the ranges `check-config` accepts (scaled down so that runs stay short
/// in simulated time, and up to the long settings an operator may choose).
fn policies() -> impl Strategy<Value = ReconnectPolicy> {
    (
        (50u64..10_000, 0u64..600_000),
        (50u64..10_000, 0u64..600_000, 100u64..120_000),
        (1u32..10, 100u64..600_000, any::<bool>(), 0u64..600_000),
        (1_000u64..3_600_000, 1usize..5),
    )
        .prop_map(
            |(
                (probe_interval, probe_extra),
                (initial, backoff_extra, reset_after),
                (threshold, open_for, open_max_is_backoff, open_extra),
                (permanent, endpoints),
            )| {
                let backoff_max = ms(initial + backoff_extra);
                ReconnectPolicy {
                    probe: ProbePolicy {
                        interval: ms(probe_interval),
                        max: ms(probe_interval + probe_extra),
                    },
                    backoff: BackoffPolicy {
                        initial: ms(initial),
                        max: backoff_max,
                        reset_after: ms(reset_after),
                    },
                    breaker: BreakerPolicy {
                        failure_threshold: NonZeroU32::new(threshold).unwrap(),
                        open_for: ms(open_for),
                        // As the publisher builds it (the backoff's ceiling), or anything.
                        open_max: if open_max_is_backoff {
                            backoff_max
                        } else {
                            ms(open_extra)
                        },
                    },
                    permanent_retry: ms(permanent),
                    endpoints,
                }
            },
        )
}

/// What one full attempt met.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// It ended after `takes`, before CONNACK.
    Fails { takes: Duration, ending: Ending },
    /// CONNACK after `takes`; a message acknowledged or not; the session ended after `lasts`.
    Session {
        takes: Duration,
        proven: bool,
        lasts: Duration,
        ending: Ending,
    },
}

/// What the world does at the next step, or a reload.
#[derive(Debug, Clone, Copy)]
enum Event {
    Step {
        /// The loop woke this much after the step's time (a suspended process, a busy core).
        late: Duration,
        /// For a probe: whether the port answered, and after how long.
        reachable: bool,
        probe_takes: Duration,
        /// For a full attempt.
        outcome: Outcome,
    },
    /// SIGHUP with a changed `[mqtt]`: a fresh machine from these settings.
    Reload(ReconnectPolicy),
}

fn endings() -> impl Strategy<Value = Ending> {
    prop::sample::select(ENDINGS.to_vec())
}

fn outcomes() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => (0u64..40_000, endings())
            .prop_map(|(takes, ending)| Outcome::Fails { takes: ms(takes), ending }),
        1 => (0u64..5_000, any::<bool>(), 0u64..900_000, endings()).prop_map(
            |(takes, proven, lasts, ending)| Outcome::Session {
                takes: ms(takes),
                proven,
                lasts: ms(lasts),
                ending,
            }
        ),
    ]
}

fn events() -> impl Strategy<Value = Event> {
    prop_oneof![
        30 => (
            prop_oneof![3 => Just(0u64), 1 => 0u64..3_600_000],
            any::<bool>(),
            0u64..5_000,
            outcomes(),
        )
            .prop_map(|(late, reachable, probe_takes, outcome)| Event::Step {
                late: ms(late),
                reachable,
                probe_takes: ms(probe_takes),
                outcome,
            }),
        1 => policies().prop_map(Event::Reload),
    ]
}

fn jitter(seed: Option<u64>) -> Jitter {
    seed.map_or(Jitter::Off, |s| Jitter::Full(Xorshift64::seeded(s)))
}

/// The step the machine chose at `chosen_at`: within the bound, and `/health` shows it.
fn check(r: &Reconnect, step: Step, chosen_at: Instant) -> Result<(), TestCaseError> {
    let bound = r.longest_wait();
    prop_assert!(
        step.at() >= chosen_at && step.at() - chosen_at <= bound,
        "{step:?} chosen at {chosen_at:?} is {:?} ahead; the bound is {bound:?}",
        step.at().saturating_duration_since(chosen_at)
    );
    prop_assert_eq!(
        r.pacing(Some(step)),
        Pacing {
            breaker: r.breaker(),
            path: r.path(),
            next_at: Some(step.at()),
            endpoint: r.endpoint(),
        }
    );
    Ok(())
}

/// 1024 histories by default; `GPS_AGENT_LIVENESS_CASES` runs more.
fn cases() -> u32 {
    std::env::var("GPS_AGENT_LIVENESS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn from_any_history_the_next_step_comes_within_the_bound_and_health_says_what_happens(
        policy in policies(),
        seed in prop::option::weighted(0.8, any::<u64>()),
        history in prop::collection::vec(events(), 1..150),
    ) {
        let mut now = Instant::now();
        let mut r = Reconnect::new(policy, jitter(seed));
        let mut step = r.first(now);
        check(&r, step, now)?;
        for (i, event) in history.into_iter().enumerate() {
            let (late, reachable, probe_takes, outcome) = match event {
                Event::Reload(policy) => {
                    r = Reconnect::new(policy, jitter(seed.map(|s| s ^ i as u64)));
                    step = r.first(now);
                    check(&r, step, now)?;
                    continue;
                }
                Event::Step { late, reachable, probe_takes, outcome } => {
                    (late, reachable, probe_takes, outcome)
                }
            };
            now = now.max(step.at()) + late;
            step = match step {
                Step::Probe { .. } => {
                    now += probe_takes;
                    let next = r.on_probe(now, reachable);
                    if reachable {
                        prop_assert!(
                            matches!(next, Step::Connect { .. }),
                            "a probe that got through leads to {next:?}"
                        );
                    }
                    next
                }
                Step::Connect { .. } => {
                    // The step said a full attempt at this time: it goes.
                    prop_assert_eq!(r.attempt(now), None, "a full attempt due at its time was put off");
                    match outcome {
                        Outcome::Fails { takes, ending } => {
                            now += takes;
                            r.on_end(now, ending)
                        }
                        Outcome::Session { takes, proven, lasts, ending } => {
                            now += takes;
                            r.on_connected(now);
                            if proven {
                                r.on_proven();
                            }
                            now += lasts;
                            r.on_end(now, ending)
                        }
                    }
                }
            };
            check(&r, step, now)?;
        }
    }
}
