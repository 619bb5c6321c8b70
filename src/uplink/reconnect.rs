//! When to reconnect: following the network path, not a timer. A pure state machine: the
//! publisher tells it how each attempt, session and probe ended, with `now`, and it answers
//! with the next [`Step`]: a reachability probe or a full connection attempt, and when.
//!
//! Two kinds of trouble look alike to an MQTT client and need opposite answers:
//!
//! - **The network path is down** (a tunnel, no coverage, the broker's port refusing or not
//!   answering TCP, DNS failing). Nothing is wrong with the broker; the agent should be back
//!   the moment the path is. So: cheap reachability probes (a TCP connect to the broker's
//!   port, closed at once: no TLS, no MQTT) at a jittered interval whose ceiling is
//!   `probe_interval` plus a twentieth of the outage so far (1.4 s after 8 s, 3.25 s after
//!   45 s, 31 s after 10 min with the defaults), at most `probe_max`; a full connection the
//!   moment one succeeds. Neither the backoff nor the breaker hears of these failures, so
//!   neither adds blind time once the path is back, and no TLS handshake is spent while it is
//!   down.
//! - **A front end answers for a broker that is down** (a load balancer accepts TCP, and
//!   TLS when it terminates it, then closes before any MQTT comes back: AWS IoT, HiveMQ or
//!   EMQX Cloud, HAProxy while the broker behind restarts). The broker is as unreachable as
//!   behind a dead path, but probes would only find the front end. So full attempts, paced
//!   like probes ([`Reconnect::unserved_delay`]: jittered, thinning out with the outage, at
//!   most `probe_max`), and neither the backoff nor the breaker hears of them.
//! - **The broker refuses or misbehaves on a working path** (CONNACK refusals, the link
//!   dropped right after CONNACK, a TLS handshake that fails, PUBACKs that do not come while
//!   probes get through). Retrying soon will not help: exponential backoff with full jitter
//!   ([`Backoff`]) and the circuit breaker ([`Breaker`]), whose pause doubles up to
//!   `open_max`, so a broker that keeps refusing gets at most `3600 / open_max` full attempts
//!   an hour once the pause has grown (12 with the defaults, reached within 10 minutes).
//!
//! Ambiguous endings are settled by a probe. A session that carried fixes and then broke, or
//! a timeout (connect, ping, PUBACK), is followed by a probe within `probe_interval`: if
//! it fails, the path is down and the outage is timed from the break; if it succeeds at
//! once, a timeout counts against the broker and a broken session is reconnected at once
//! (a session that dropped soon after connecting still waits its backoff, so a broker
//! that keeps kicking the client, e.g. for a duplicate client id, is not hammered).
//!
//! Every interval is jittered (probes uniform in the upper half of their ceiling, the first
//! after a break and backoff delays uniform from zero, the breaker's pause plus up to a
//! quarter), so a fleet that lost one broker together does not come back in the same second.
//!
//! **Several endpoints** (`url` and `fallback_urls`: the nodes of a cluster, or balancers):
//! when the endpoint in use fails a full attempt (unreachable, refusing, or a probe after
//! its session broke finds it unreachable), the next is tried at once, past the backoff and
//! the breaker; the endpoint that works stays in use. The endpoints tried one after the other
//! since the last connection are one round, and only a round that failed on every endpoint
//! is paced, by the worst of its failures (a refusal anywhere: backoff, and one failure for
//! the breaker; all unreachable: probes, each to the next endpoint in turn). The next round
//! begins where the last did.
//!
//! While a session is up, [`StallWatch`] probes the path when PUBACKs stop coming: a probe
//! that fails and a later one that succeeds, with still no PUBACK, mean the link went away
//! and came back under an established connection, whose own retransmissions may take as long
//! again as the outage lasted; the publisher then reconnects at once.
//!
//! **Liveness.** From any state, whatever endings, probe results and reconfigurations came
//! before, the next step (a probe, or a full attempt) is due at most
//! [`ReconnectPolicy::longest_wait`] after the event that chose it: the longest of the
//! backoff's ceiling (`backoff_max_s`), the breaker's longest pause plus its jitter (a
//! quarter more), the wait after a permanent failure and the probes' ceiling. A full attempt
//! is let through at the very time it was scheduled ([`Reconnect::attempt`] agrees with the
//! step it was given), and a probe that gets through is followed by a full attempt within
//! the same bound; so while fixes or the status wait, the broker is tried at least once per
//! bound, or its path is probed. What `/health` shows of it ([`Reconnect::pacing`]: breaker,
//! path, time of the next step) is read from the machine with the step it chose, never kept
//! apart. `tests/uplink_liveness.rs` drives the machine with random sequences of every
//! ending, probe result, time jump and reconfiguration and checks all of it. (Before issue
//! 20 the breaker's jitter was added to an end of pause already moved up to `now`: once the
//! pause was over the gate moved with the clock, the trial was never let out, and an agent
//! whose broker refused five times never tried again.)

use crate::status::{BreakerState, PathState};
use crate::uplink::backoff::{Backoff, BackoffPolicy, Jitter, Xorshift64};
use crate::uplink::breaker::{Breaker, BreakerPolicy};
use std::time::Duration;
use tokio::time::Instant;

/// The probe ceiling grows by the outage's length divided by this: a path that has been down
/// for ten minutes is probed about every half minute, one down for eight seconds every
/// second and a half.
pub const PROBE_GROWTH_DIVISOR: u32 = 20;

/// After a front end closed a full attempt unserved, the ceiling of the next wait starts at
/// this many probe intervals: each attempt costs a TLS handshake and a CONNECT, twenty times
/// a probe's bytes, and a broker behind a balancer is rarely back within seconds.
pub const UNSERVED_CEILING: u32 = 20;

/// Full attempts against an unserved front end thin out with the square of the outage: the
/// wait is at least `outage² / (UNSERVED_THINNING x probe_max)`. With the defaults: at most
/// six attempts in the first minute, the next within 23 s of a broker back after a minute,
/// then one a minute from the second minute on.
pub const UNSERVED_THINNING: u32 = 3;

/// No PUBACK for this long while messages wait (and none acknowledged meanwhile): the
/// connection may be stalled, and [`StallWatch`] starts probing the path.
pub const STALL_AFTER: Duration = Duration::from_secs(3);

/// How the reachability probes are paced while the path is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbePolicy {
    /// Ceiling of the probe interval at the start of an outage (and of the first probe after
    /// a break).
    pub interval: Duration,
    /// The ceiling never grows past this.
    pub max: Duration,
}

impl Default for ProbePolicy {
    fn default() -> Self {
        ProbePolicy {
            interval: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

/// Everything that paces reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReconnectPolicy {
    pub probe: ProbePolicy,
    pub backoff: BackoffPolicy,
    pub breaker: BreakerPolicy,
    /// Wait after a permanent failure (credentials, certificates).
    pub permanent_retry: Duration,
    /// Endpoints of the broker (`url` and `fallback_urls`); 0 counts as 1.
    pub endpoints: usize,
}

impl ReconnectPolicy {
    /// How many endpoints the broker has: at least one.
    pub fn endpoints(&self) -> usize {
        self.endpoints.max(1)
    }

    /// The liveness bound (see the module's doc): no step is ever scheduled further ahead
    /// than this.
    pub fn longest_wait(&self) -> Duration {
        let pause = self.breaker.longest_pause();
        [
            self.backoff.max,
            pause.saturating_add(pause / BREAKER_JITTER_DIVISOR),
            self.permanent_retry,
            self.probe.max.max(self.probe.interval),
        ]
        .into_iter()
        .max()
        .unwrap_or_default()
    }
}

/// The breaker's pause is spread by up to this fraction of itself, drawn when it opens.
const BREAKER_JITTER_DIVISOR: u32 = 4;

/// What `/health` shows of the pacing (`breaker`, `path`, `retry_in_s`), read from the
/// machine together with the step it chose: one reading, so the three never disagree with
/// each other or with what the loop then does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    pub breaker: BreakerState,
    pub path: PathState,
    /// When the next probe or full attempt is due; `None` while one is under way or a
    /// session is up.
    pub next_at: Option<Instant>,
    /// The endpoint in use (an index into `url` and then `fallback_urls`): the one
    /// connected, or the one the next probe or attempt goes to.
    pub endpoint: usize,
}

/// How a full attempt or a session ended, as far as pacing is concerned (the publisher
/// sorts its errors into these; see `publisher::session`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// TCP could not reach the broker's port: refused, unreachable, DNS failed.
    Unreachable,
    /// The port took the connection (TCP, and TLS when the front end terminates it) and
    /// closed it before any MQTT came back: a load balancer whose broker is down behind it.
    /// Paced like probes, never by the backoff or the breaker.
    Unserved,
    /// The path works but the broker refused or misbehaved: a CONNACK refusal, the link
    /// dropped right after connecting, a failed TLS handshake, a protocol error.
    Broker,
    /// Something stopped answering in time (connect, ping, PUBACK): path or broker, a
    /// probe tells.
    Stalled,
    /// A session that carried fixes broke (reset, closed): a probe tells whether the path
    /// went down.
    Dropped,
    /// The broker dropped the link over a message's size; the next connection carries a
    /// smaller one, so it is made soon and counts against nobody.
    Narrowed,
    /// [`StallWatch`] saw the path go down and come back under a stalled session.
    PathReturned,
    /// Retrying soon will not help (credentials, certificates): `permanent_retry`.
    Permanent,
}

/// What to do next, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A reachability probe (TCP connect to the broker's port, closed at once).
    Probe { at: Instant },
    /// A full connection attempt (TCP, TLS, MQTT CONNECT).
    Connect { at: Instant },
}

impl Step {
    pub fn at(&self) -> Instant {
        match self {
            Step::Probe { at } | Step::Connect { at } => *at,
        }
    }
}

/// Why the path is being probed: decides what a probe that succeeds at once means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suspicion {
    /// A full attempt could not reach the port.
    Unreachable,
    /// A timeout: if the path works, the broker did not answer.
    Stalled,
    /// An established session broke.
    Dropped,
}

/// How the endpoint in use failed a full attempt, from the mildest to the worst: the worst of
/// a round across the endpoints paces the next round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    /// Its port could not be reached: probe the path.
    Unreachable,
    /// Its front end took the connection and closed it: full attempts paced like probes.
    Unserved,
    /// It refused or misbehaved: backoff and the breaker.
    Refused,
    /// It refused for good (credentials, certificates): `permanent_retry`.
    Permanent,
}

/// The endpoints tried one after the other since the last connection, each at once after the
/// one before failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Round {
    /// Where the round began: where the next round begins.
    first: usize,
    tried: usize,
    worst: Fault,
}

/// An outage being probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probing {
    /// When the path was first suspected or seen down: the outage's age sets the interval.
    since: Instant,
    /// A probe (or a full attempt) found the path down.
    seen_down: bool,
    why: Suspicion,
}

/// The reconnect state: backoff and breaker for the broker, probing for the path.
#[derive(Debug, Clone)]
pub struct Reconnect {
    policy: ReconnectPolicy,
    jitter: Jitter,
    backoff: Backoff,
    breaker: Breaker,
    /// Added to the breaker's pause, drawn each time it opens.
    breaker_jitter: Duration,
    probing: Option<Probing>,
    /// No full attempt before this: the backoff's or the permanent wait.
    not_before: Option<Instant>,
    path: PathState,
    /// The endpoint in use (index into the broker's endpoints).
    endpoint: usize,
    /// Endpoints tried in turn since the last connection, when more than one is known.
    round: Option<Round>,
    /// Since when front ends have been closing full attempts unserved (the broker behind
    /// them down): its age paces the next attempt.
    unserved_since: Option<Instant>,
    /// The next step is a full attempt on the next endpoint of a round, due at once and let
    /// through whatever the backoff or breaker say: they pace rounds, not endpoints.
    failing_over: bool,
}

impl Reconnect {
    pub fn new(policy: ReconnectPolicy, jitter: Jitter) -> Self {
        let mut jitter = jitter;
        // The backoff draws from its own generator, seeded from ours, so the two sequences
        // are not the same numbers twice.
        let backoff_jitter = match &mut jitter {
            Jitter::Full(rng) => Jitter::Full(Xorshift64::seeded(rng.next_u64())),
            Jitter::Off => Jitter::Off,
        };
        Reconnect {
            policy,
            jitter,
            backoff: Backoff::new(policy.backoff, backoff_jitter),
            breaker: Breaker::new(policy.breaker),
            breaker_jitter: Duration::ZERO,
            probing: None,
            not_before: None,
            path: PathState::Unknown,
            endpoint: 0,
            round: None,
            unserved_since: None,
            failing_over: false,
        }
    }

    /// The first step after start: a full attempt now.
    pub fn first(&mut self, now: Instant) -> Step {
        Step::Connect { at: now }
    }

    /// A full attempt is due at `now`: `None` lets it go (as the breaker's trial when it was
    /// open); `Some(step)` says when instead.
    pub fn attempt(&mut self, now: Instant) -> Option<Step> {
        if std::mem::take(&mut self.failing_over) {
            return None;
        }
        let gate = self.gate(now);
        if gate > now {
            return Some(Step::Connect { at: gate });
        }
        if self.breaker.try_acquire(now) {
            None
        } else {
            Some(Step::Connect {
                at: self.breaker_gate(now).max(now + self.policy.probe.interval),
            })
        }
    }

    /// CONNACK accepted: the path is up, the outage (if any) is over.
    pub fn on_connected(&mut self, now: Instant) {
        self.backoff.on_connected(now);
        self.path = PathState::Up;
        self.probing = None;
        self.not_before = None;
        self.round = None;
        self.unserved_since = None;
        self.failing_over = false;
    }

    /// The connection carried a message both ways: the broker works (the breaker closes).
    pub fn on_proven(&mut self) {
        self.breaker.on_success();
    }

    /// A full attempt or a session ended at `now`.
    pub fn on_end(&mut self, now: Instant, ending: Ending) -> Step {
        match ending {
            Ending::Broker => self.blame(now, Fault::Refused),
            Ending::Permanent => self.blame(now, Fault::Permanent),
            Ending::Unreachable => self.blame(now, Fault::Unreachable),
            Ending::Unserved => self.blame(now, Fault::Unserved),
            Ending::Stalled => self.probe_soon(now, Suspicion::Stalled),
            Ending::Dropped => {
                // A session that dropped soon after connecting counts (backoff resets only
                // after `reset_after` up): a broker that keeps kicking the client is not
                // hammered. After a long session the wait is within `initial`.
                let wait = self.backoff.on_failure(now);
                self.not_before = Some(now + wait);
                self.probe_soon(now, Suspicion::Dropped)
            }
            Ending::Narrowed => {
                self.breaker.release_trial();
                let wait = self
                    .jitter
                    .between(Duration::ZERO, self.policy.probe.interval);
                // A session is over, so no backoff waits; the breaker's gate still holds.
                Step::Connect {
                    at: (now + wait).max(self.gate(now)),
                }
            }
            Ending::PathReturned => {
                self.breaker.release_trial();
                self.path = PathState::Up;
                self.not_before = None;
                Step::Connect {
                    at: self.breaker_gate(now),
                }
            }
        }
    }

    /// A probe started earlier ended at `now`: the broker's port accepted a TCP connection
    /// (`reachable`) or not.
    pub fn on_probe(&mut self, now: Instant, reachable: bool) -> Step {
        let Some(probing) = self.probing.as_mut() else {
            return Step::Connect { at: self.gate(now) };
        };
        if !reachable {
            if !probing.seen_down {
                // The first sign that the endpoint's path is down (after a drop or a
                // timeout): as a full attempt that could not reach it.
                probing.seen_down = true;
                return self.blame(now, Fault::Unreachable);
            }
            // Still down: the next probe goes to the next endpoint (the path to another
            // node may be back first).
            let since = probing.since;
            self.endpoint = (self.endpoint + 1) % self.policy.endpoints();
            self.path = PathState::Down;
            return Step::Probe {
                at: now + self.probe_delay(now.saturating_duration_since(since)),
            };
        }
        self.path = PathState::Up;
        let Probing { seen_down, why, .. } = *probing;
        if seen_down {
            // The path was down and is back: that explains every failure since, so no
            // backoff wait; only a breaker opened by the broker before still gates.
            self.not_before = None;
            return Step::Connect {
                at: self.breaker_gate(now),
            };
        }
        if why == Suspicion::Stalled {
            // The path answers at once: the broker (or its side) did not.
            return self.blame(now, Fault::Refused);
        }
        Step::Connect { at: self.gate(now) }
    }

    /// The endpoint in use failed a full attempt. While endpoints of the broker are left
    /// untried in this round, the next is tried at once; when all have failed, the worst of
    /// their failures paces the next round, which begins where this one did.
    fn blame(&mut self, now: Instant, fault: Fault) -> Step {
        let endpoints = self.policy.endpoints();
        let round = self.round.get_or_insert(Round {
            first: self.endpoint,
            tried: 0,
            worst: fault,
        });
        round.tried += 1;
        round.worst = round.worst.max(fault);
        if round.tried < endpoints {
            self.endpoint = (self.endpoint + 1) % endpoints;
            self.failing_over = true;
            return Step::Connect { at: now };
        }
        let Round { first, worst, .. } = *round;
        self.round = None;
        self.endpoint = first;
        self.pace(now, worst)
    }

    /// The next step after a round of full attempts (one, with a single endpoint) that all
    /// failed, the worst as `fault`.
    fn pace(&mut self, now: Instant, fault: Fault) -> Step {
        match fault {
            Fault::Refused => {
                // The broker's port took the connection: the path works.
                self.path = PathState::Up;
                self.broker_failed(now);
                Step::Connect { at: self.gate(now) }
            }
            Fault::Permanent => {
                self.broker_failed(now);
                self.not_before = Some(now + self.policy.permanent_retry);
                Step::Connect { at: self.gate(now) }
            }
            Fault::Unserved => {
                // The front end answers, the broker behind it does not: no verdict on the
                // broker, and probes would only find the front end.
                self.breaker.release_trial();
                self.path = PathState::Up;
                let since = *self.unserved_since.get_or_insert(now);
                let wait = self.unserved_delay(now.saturating_duration_since(since));
                self.not_before = Some(now + wait);
                Step::Connect { at: self.gate(now) }
            }
            Fault::Unreachable => {
                self.breaker.release_trial();
                self.path = PathState::Down;
                let since = self.probing.map_or(now, |p| p.since);
                self.probing = Some(Probing {
                    since,
                    seen_down: true,
                    why: Suspicion::Unreachable,
                });
                Step::Probe {
                    at: now + self.probe_delay(now.saturating_duration_since(since)),
                }
            }
        }
    }

    /// The ceiling of the probe interval after an outage of `outage_for`.
    pub fn probe_ceiling(&self, outage_for: Duration) -> Duration {
        let probe = self.policy.probe;
        (probe.interval + outage_for / PROBE_GROWTH_DIVISOR).min(probe.max.max(probe.interval))
    }

    /// A probe delay for an outage of `outage_for`: uniform in the upper half of the ceiling.
    pub fn probe_delay(&mut self, outage_for: Duration) -> Duration {
        let ceiling = self.probe_ceiling(outage_for);
        self.jitter.between(ceiling / 2, ceiling)
    }

    /// The wait before the next full attempt after a front end closed one unserved, the
    /// broker behind it down for `outage_for`: uniform in the upper half of a ceiling that
    /// starts at [`UNSERVED_CEILING`] probe intervals and grows by a twentieth of the outage
    /// (as the probes' does), and never shorter than the outage's square over
    /// [`UNSERVED_THINNING`] times `probe_max` (so at most one attempt per `probe_max` once
    /// the outage is 1.7 times that old); never longer than `probe_max`.
    pub fn unserved_delay(&mut self, outage_for: Duration) -> Duration {
        let probe = self.policy.probe;
        let max = probe.max.max(probe.interval);
        let ceiling = probe
            .interval
            .saturating_mul(UNSERVED_CEILING)
            .saturating_add(outage_for / PROBE_GROWTH_DIVISOR)
            .min(max);
        let age = outage_for.as_secs_f64();
        let thinned = age * age / (f64::from(UNSERVED_THINNING) * max.as_secs_f64());
        let floor = Duration::try_from_secs_f64(thinned).unwrap_or(max).min(max);
        let lo = (ceiling / 2).max(floor);
        self.jitter.between(lo, ceiling.max(lo))
    }

    pub fn path(&self) -> PathState {
        self.path
    }

    /// What `/health` shows, with `next` the step the loop is about to wait for (`None`
    /// while a probe or an attempt is under way, or a session is up).
    pub fn pacing(&self, next: Option<Step>) -> Pacing {
        Pacing {
            breaker: self.breaker.status(),
            path: self.path,
            next_at: next.map(|step| step.at()),
            endpoint: self.endpoint,
        }
    }

    /// The endpoint in use: the one connected, or the one the next probe or attempt goes to
    /// (an index into `url` and then `fallback_urls`).
    pub fn endpoint(&self) -> usize {
        self.endpoint
    }

    /// The liveness bound of this machine's policy.
    pub fn longest_wait(&self) -> Duration {
        self.policy.longest_wait()
    }

    pub fn breaker(&self) -> BreakerState {
        self.breaker.status()
    }

    /// Since when the current outage (or suspicion) runs, if one does.
    pub fn outage_since(&self) -> Option<Instant> {
        self.probing.map(|p| p.since)
    }

    fn probe_soon(&mut self, now: Instant, why: Suspicion) -> Step {
        if why != Suspicion::Stalled {
            self.breaker.release_trial();
        }
        // A timeout keeps the breaker's trial out: the probe gives its verdict (a working
        // path: the broker failed the trial; a dead one: no verdict).
        self.probing = Some(Probing {
            since: now,
            seen_down: false,
            why,
        });
        let wait = self
            .jitter
            .between(Duration::ZERO, self.policy.probe.interval);
        Step::Probe { at: now + wait }
    }

    fn broker_failed(&mut self, now: Instant) {
        let wait = self.backoff.on_failure(now);
        self.not_before = Some(now + wait);
        let before = self.breaker.state();
        self.breaker.on_failure(now);
        if self.breaker.state() != before && self.breaker.status() == BreakerState::Open {
            let pause = self.breaker.pause();
            self.breaker_jitter = self.jitter.spread(pause / BREAKER_JITTER_DIVISOR);
        }
    }

    /// The earliest full attempt the backoff, a permanent wait and the breaker allow.
    fn gate(&self, now: Instant) -> Instant {
        self.not_before
            .unwrap_or(now)
            .max(self.breaker_gate(now))
            .max(now)
    }

    /// The earliest full attempt the breaker allows: the end of its pause plus the jitter
    /// drawn when it opened, both counted from when it opened (so the gate stands still
    /// while the clock runs towards it); `now` in any other state.
    fn breaker_gate(&self, now: Instant) -> Instant {
        match self.breaker.open_until() {
            Some(end) => end.checked_add(self.breaker_jitter).unwrap_or(end).max(now),
            None => now,
        }
    }
}

/// What [`StallWatch`] says after a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Probe again at this time.
    ProbeAt(Instant),
    /// The path answers and never failed: the connection is slow, not cut; stop probing
    /// and let the PUBACK timeout decide.
    Stop,
    /// The path went down and came back while the session stalled: reconnect now.
    Reconnect,
}

/// Probes the path while an established session waits for PUBACKs that do not come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StallWatch {
    /// When the session stopped making progress.
    pub since: Instant,
    seen_down: bool,
}

impl StallWatch {
    pub fn new(since: Instant) -> Self {
        StallWatch {
            since,
            seen_down: false,
        }
    }

    /// A probe ended at `now`; `pacing` gives the (jittered) interval for the next.
    pub fn on_probe(&mut self, now: Instant, reachable: bool, pacing: &mut Reconnect) -> Watch {
        match (reachable, self.seen_down) {
            (true, true) => Watch::Reconnect,
            (true, false) => Watch::Stop,
            (false, _) => {
                self.seen_down = true;
                pacing.path = PathState::Down;
                let delay = pacing.probe_delay(now.saturating_duration_since(self.since));
                Watch::ProbeAt(now + delay)
            }
        }
    }

    /// Whether a probe has found the path down during this stall.
    pub fn seen_down(&self) -> bool {
        self.seen_down
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ms(m: u64) -> Duration {
        Duration::from_millis(m)
    }

    fn policy() -> ReconnectPolicy {
        ReconnectPolicy {
            probe: ProbePolicy::default(),
            backoff: BackoffPolicy::default(),
            breaker: BreakerPolicy {
                failure_threshold: NonZeroU32::new(5).unwrap(),
                open_for: secs(60),
                open_max: secs(300),
            },
            permanent_retry: secs(600),
            endpoints: 1,
        }
    }

    fn exact() -> Reconnect {
        Reconnect::new(policy(), Jitter::Off)
    }

    fn jittered(seed: u64) -> Reconnect {
        Reconnect::new(policy(), Jitter::Full(Xorshift64::seeded(seed)))
    }

    /// Drive an outage of the path from `t0` to `back`: the session broke at `t0`, every
    /// probe before `back` fails. Returns the step after the first probe at or after `back`,
    /// and the probes made.
    fn outage(r: &mut Reconnect, t0: Instant, back: Instant) -> (Step, u32) {
        let mut step = r.on_end(t0, Ending::Dropped);
        let mut probes = 0;
        loop {
            let Step::Probe { at } = step else {
                return (step, probes);
            };
            probes += 1;
            step = r.on_probe(at, at >= back);
        }
    }

    /// What a full attempt meets on the broker's side, in these tests' small world.
    #[derive(Debug, Clone, Copy)]
    enum Answer {
        /// The attempt ends `after` it began, with `ending`, without a session.
        Fails { after: Duration, ending: Ending },
        /// CONNACK, then no PUBACK: the session ends `after` it began, with `ending`.
        Unproven { after: Duration, ending: Ending },
        /// CONNACK and PUBACKs: the broker works.
        Works,
    }

    /// The publisher's loop over the machine, as `Publisher::serve` runs it, from `t0` until
    /// a full attempt meets a working broker or the clock passes `until`. Probes always get
    /// through (the broker's port answers throughout). Returns the times of the full attempts
    /// and how often a full attempt due at its time was put off instead (never, if `/health`'s
    /// retry time is to mean anything).
    fn serve(
        r: &mut Reconnect,
        t0: Instant,
        until: Instant,
        answer: impl Fn(Instant) -> Answer,
    ) -> (Vec<Instant>, u32) {
        let (mut attempts, mut put_off) = (Vec::new(), 0);
        let mut step = r.first(t0);
        while step.at() <= until {
            let now = step.at();
            step = match step {
                Step::Probe { .. } => r.on_probe(now, true),
                Step::Connect { .. } => match r.attempt(now) {
                    Some(later) => {
                        put_off += 1;
                        later
                    }
                    None => {
                        attempts.push(now);
                        match answer(now) {
                            Answer::Fails { after, ending } => r.on_end(now + after, ending),
                            Answer::Unproven { after, ending } => {
                                r.on_connected(now);
                                r.on_end(now + after, ending)
                            }
                            Answer::Works => {
                                r.on_connected(now);
                                r.on_proven();
                                break;
                            }
                        }
                    }
                },
            };
        }
        (attempts, put_off)
    }

    /// The broker misbehaves as `trouble` says for six minutes (the longest the probe
    /// tried), then works. Across seeds, with jitter on: the first full attempt after it
    /// works comes within the liveness bound (plus the last attempt's own duration), no
    /// full attempt is ever put off at its time, and the broker is back in use.
    fn comes_back_after(trouble: Answer) {
        let spell = secs(360);
        for seed in 1..40 {
            let t0 = Instant::now();
            let mut r = jittered(seed);
            let bound = r.longest_wait();
            let fixed = t0 + spell;
            let (attempts, put_off) = serve(&mut r, t0, fixed + secs(900), |now| {
                if now < fixed {
                    trouble
                } else {
                    Answer::Works
                }
            });
            assert_eq!(put_off, 0, "seed {seed}: {attempts:?}");
            assert!(
                attempts.len() >= 5,
                "seed {seed}: {} attempts",
                attempts.len()
            );
            let last = *attempts.last().unwrap();
            assert!(
                last >= fixed,
                "seed {seed}: no attempt after the broker came back"
            );
            let before = attempts.iter().rev().nth(1).copied().unwrap_or(t0);
            let takes = match trouble {
                Answer::Fails { after, .. } | Answer::Unproven { after, .. } => after,
                Answer::Works => Duration::ZERO,
            };
            assert!(
                last - before <= bound + takes + r.policy.probe.interval,
                "seed {seed}: {:?} between the last two attempts",
                last - before
            );
            for pair in attempts.windows(2) {
                assert!(pair[1] - pair[0] <= bound + takes + r.policy.probe.interval);
            }
            assert_eq!(r.breaker(), BreakerState::Closed, "seed {seed}");
        }
    }

    #[test]
    fn a_port_that_accepts_and_closes_for_six_minutes_is_tried_again_once_it_works() {
        // As main 3007257 classed it (a reset or EOF while connecting: the broker's refusal),
        // and as it is classed now (a front end whose broker is down).
        for ending in [Ending::Broker, Ending::Unserved] {
            comes_back_after(Answer::Fails {
                after: ms(1),
                ending,
            });
        }
    }

    #[test]
    fn a_broker_answering_connack_3_for_six_minutes_is_tried_again_once_it_works() {
        comes_back_after(Answer::Fails {
            after: ms(20),
            ending: Ending::Broker,
        });
    }

    #[test]
    fn a_broker_that_never_answers_connect_for_six_minutes_is_tried_again_once_it_works() {
        // The connect times out (rumqttc's 5 s); the probe after it gets through at once.
        comes_back_after(Answer::Fails {
            after: secs(5),
            ending: Ending::Stalled,
        });
    }

    #[test]
    fn a_broker_that_never_sends_puback_for_six_minutes_is_tried_again_once_it_works() {
        // CONNACK, then the PUBACK timeout (30 s) ends each session.
        comes_back_after(Answer::Unproven {
            after: secs(30),
            ending: Ending::Stalled,
        });
    }

    #[test]
    fn a_trial_session_that_gets_no_puback_on_a_working_path_doubles_the_pause() {
        let t0 = Instant::now();
        let mut r = exact();
        let mut now = t0;
        let mut trial_pauses = Vec::new();
        for _ in 0..7 {
            assert_eq!(r.attempt(now), None);
            let was_open = r.breaker() == BreakerState::HalfOpen;
            r.on_connected(now);
            let Step::Probe { at } = r.on_end(now + secs(30), Ending::Stalled) else {
                panic!()
            };
            now = r.on_probe(at, true).at();
            if was_open {
                trial_pauses.push(r.breaker.pause().as_secs());
            }
        }
        assert_eq!(r.breaker(), BreakerState::Open);
        assert_eq!(trial_pauses, [120, 240]);
    }

    /// A balancer closes every full attempt unserved from `t0` until `back`, then the broker
    /// behind it works. The times of the full attempts.
    fn behind_a_balancer(seed: u64, t0: Instant, back: Instant) -> Vec<Instant> {
        let mut r = jittered(seed);
        let (attempts, put_off) = serve(&mut r, t0, back + secs(600), |now| {
            if now < back {
                Answer::Fails {
                    after: ms(2),
                    ending: Ending::Unserved,
                }
            } else {
                Answer::Works
            }
        });
        assert_eq!(put_off, 0);
        assert_eq!(r.breaker(), BreakerState::Closed, "seed {seed}");
        attempts
    }

    #[test]
    fn behind_a_balancer_a_minute_down_costs_at_most_six_attempts_and_is_over_within_23_s() {
        for seed in 1..500 {
            let t0 = Instant::now();
            let back = t0 + secs(60);
            let attempts = behind_a_balancer(seed, t0, back);
            let during = attempts.iter().filter(|a| **a < back).count();
            assert!(during <= 6, "seed {seed}: {during} attempts in the minute");
            let first_back = *attempts.last().unwrap();
            assert!(first_back >= back);
            assert!(
                first_back - back <= secs(23),
                "seed {seed}: {:?} after the return",
                first_back - back
            );
        }
    }

    #[test]
    fn behind_a_balancer_ten_minutes_down_cost_at_most_one_attempt_a_minute_after_the_second() {
        for seed in 1..200 {
            let t0 = Instant::now();
            let back = t0 + secs(600);
            let attempts = behind_a_balancer(seed, t0, back);
            for minute in 2..10 {
                let from = t0 + secs(60 * minute);
                let n = attempts
                    .iter()
                    .filter(|a| **a >= from && **a < from + secs(60))
                    .count();
                assert!(n <= 1, "seed {seed}: {n} attempts in minute {minute}");
            }
            let first_back = *attempts.last().unwrap();
            assert!(first_back - back <= secs(60), "seed {seed}");
        }
    }

    #[test]
    fn behind_a_balancer_a_fleet_comes_back_spread_out() {
        // 100 agents lost their broker behind one balancer in the same second; it is back
        // after a minute. No second sees more than a fifth of them back.
        let t0 = Instant::now();
        let back = t0 + secs(60);
        let mut per_second = std::collections::BTreeMap::new();
        for agent in 0..100 {
            let start = t0 + ms(agent * 10);
            let first_back = *behind_a_balancer(1000 + agent, start, back).last().unwrap();
            *per_second
                .entry((first_back - back).as_secs())
                .or_insert(0u32) += 1;
        }
        let busiest = per_second.values().max().copied().unwrap_or(0);
        assert!(busiest <= 20, "{per_second:?}");
        assert!(per_second.keys().all(|s| *s <= 23), "{per_second:?}");
    }

    #[test]
    fn an_unserved_attempt_releases_the_trial_and_backs_off_nothing() {
        let t0 = Instant::now();
        let mut r = exact();
        for _ in 0..5 {
            r.on_end(t0, Ending::Broker);
        }
        let trial = r.gate(t0);
        assert_eq!(r.attempt(trial), None);
        let step = r.on_end(trial, Ending::Unserved);
        assert_eq!(r.breaker(), BreakerState::Open, "no verdict on the broker");
        // The pause is over: only the unserved wait (20 s at first) remains.
        assert_eq!(
            step,
            Step::Connect {
                at: trial + secs(20)
            }
        );
        assert_eq!(r.path(), PathState::Up);
    }

    #[test]
    fn the_gate_of_an_open_breaker_stands_still_while_the_clock_runs_past_it() {
        for seed in 1..50 {
            let t0 = Instant::now();
            let mut r = jittered(seed);
            for _ in 0..5 {
                r.on_end(t0, Ending::Broker);
            }
            let gate = r.gate(t0);
            assert!(gate >= t0 + secs(60), "seed {seed}");
            for later in [secs(1), secs(60), secs(600)] {
                assert_eq!(r.gate(gate + later), gate + later, "seed {seed}");
            }
            assert_eq!(
                r.attempt(gate),
                None,
                "seed {seed}: the trial goes at the gate"
            );
            assert_eq!(r.breaker(), BreakerState::HalfOpen);
        }
    }

    #[test]
    fn the_liveness_bound_is_the_longest_wait_of_the_policy() {
        let r = exact();
        // Permanent retry (600 s) beyond the breaker's 300 s and its quarter of jitter.
        assert_eq!(r.longest_wait(), secs(600));
        let mut p = policy();
        p.permanent_retry = secs(10);
        assert_eq!(p.longest_wait(), secs(375));
        p.breaker.open_for = secs(1000);
        assert_eq!(p.longest_wait(), secs(1250));
    }

    fn endpoints(n: usize) -> Reconnect {
        let mut p = policy();
        p.endpoints = n;
        Reconnect::new(p, Jitter::Off)
    }

    #[test]
    fn an_unreachable_endpoint_is_followed_at_once_by_the_next_and_the_one_that_works_stays() {
        let t0 = Instant::now();
        let mut r = endpoints(3);
        assert_eq!(r.attempt(t0), None);
        assert_eq!(r.endpoint(), 0);
        assert_eq!(r.on_end(t0, Ending::Unreachable), Step::Connect { at: t0 });
        assert_eq!(r.endpoint(), 1);
        assert_eq!(r.attempt(t0), None);
        r.on_connected(t0);
        r.on_proven();
        assert_eq!(r.endpoint(), 1, "stays on the endpoint that works");
        // Its session breaks and the probe after it fails: the next endpoint, at once.
        let broke = t0 + secs(600);
        let Step::Probe { at } = r.on_end(broke, Ending::Dropped) else {
            panic!()
        };
        assert_eq!(r.endpoint(), 1, "the probe goes to the endpoint in use");
        assert_eq!(r.on_probe(at, false), Step::Connect { at });
        assert_eq!(r.endpoint(), 2);
        assert_eq!(
            r.attempt(at),
            None,
            "the backoff after the drop paces rounds only"
        );
        assert_eq!(r.breaker(), BreakerState::Closed);
    }

    #[test]
    fn a_refusing_endpoint_is_followed_at_once_and_a_round_counts_once_against_the_broker() {
        let t0 = Instant::now();
        let mut r = endpoints(2);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..5 {
            assert_eq!(r.attempt(now), None);
            assert_eq!(r.on_end(now, Ending::Broker), Step::Connect { at: now });
            assert_eq!(r.endpoint(), 1);
            assert_eq!(r.attempt(now), None);
            let step = r.on_end(now, Ending::Broker);
            assert_eq!(r.endpoint(), 0, "the next round begins where this one did");
            waits.push((step.at() - now).as_secs());
            now = step.at();
        }
        // One backoff step (1, 2, 4, 8 s) per round of two refusals, then the breaker.
        assert_eq!(waits, [1, 2, 4, 8, 60]);
        assert_eq!(r.breaker(), BreakerState::Open);
    }

    #[test]
    fn the_worst_failure_of_a_round_paces_the_next() {
        let t0 = Instant::now();
        // Unreachable, then refused: the broker refuses, so backoff rather than probes.
        let mut r = endpoints(2);
        r.on_end(t0, Ending::Unreachable);
        let step = r.on_end(t0, Ending::Broker);
        assert_eq!(step, Step::Connect { at: t0 + secs(1) });
        assert_eq!(r.path(), PathState::Up);
        // All unreachable: probes, and each failed probe goes to the next endpoint.
        let mut r = endpoints(3);
        r.on_end(t0, Ending::Unreachable);
        r.on_end(t0, Ending::Unreachable);
        let Step::Probe { mut at } = r.on_end(t0, Ending::Unreachable) else {
            panic!()
        };
        assert_eq!(r.path(), PathState::Down);
        let mut probed = vec![r.endpoint()];
        for _ in 0..5 {
            let Step::Probe { at: next } = r.on_probe(at, false) else {
                panic!()
            };
            probed.push(r.endpoint());
            at = next;
        }
        assert_eq!(probed, [0, 1, 2, 0, 1, 2]);
        // The one that answers is connected to at once.
        assert_eq!(r.on_probe(at, true), Step::Connect { at });
        assert_eq!(r.endpoint(), 2);
        // A permanent refusal anywhere in a round waits permanent_retry.
        let mut r = endpoints(2);
        r.on_end(t0, Ending::Permanent);
        assert_eq!(
            r.on_end(t0, Ending::Unreachable),
            Step::Connect { at: t0 + secs(600) }
        );
    }

    #[test]
    fn with_one_endpoint_a_failed_probe_after_a_drop_probes_on() {
        let t0 = Instant::now();
        let mut r = exact();
        r.on_connected(t0);
        let Step::Probe { at } = r.on_end(t0 + secs(600), Ending::Dropped) else {
            panic!()
        };
        let Step::Probe { at: next } = r.on_probe(at, false) else {
            panic!()
        };
        assert_eq!(next, at + ms(1050));
        assert_eq!(r.endpoint(), 0);
        assert_eq!(r.outage_since(), Some(t0 + secs(600)));
    }

    #[test]
    fn the_probe_ceiling_grows_by_a_twentieth_of_the_outage_up_to_the_max() {
        let r = exact();
        assert_eq!(r.probe_ceiling(Duration::ZERO), secs(1));
        assert_eq!(r.probe_ceiling(secs(8)), ms(1400));
        assert_eq!(r.probe_ceiling(secs(45)), ms(3250));
        assert_eq!(r.probe_ceiling(secs(600)), secs(31));
        assert_eq!(r.probe_ceiling(secs(1180)), secs(60));
        assert_eq!(r.probe_ceiling(secs(86_400)), secs(60));
    }

    #[test]
    fn probe_delays_are_jittered_in_the_upper_half_of_the_ceiling() {
        let mut r = jittered(3);
        let draws: Vec<Duration> = (0..400).map(|_| r.probe_delay(secs(45))).collect();
        assert!(draws.iter().all(|d| (ms(1625)..=ms(3250)).contains(d)));
        let mut distinct = draws.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 300, "{}", distinct.len());
    }

    #[test]
    fn after_an_8_s_outage_the_full_attempt_follows_the_first_probe_that_gets_through() {
        let t0 = Instant::now();
        let back = t0 + secs(8);
        let mut r = exact();
        let (step, probes) = outage(&mut r, t0, back);
        let Step::Connect { at } = step else {
            panic!("{step:?}")
        };
        // The first successful probe came at most one ceiling (1.4 s) after the path
        // returned, and the full attempt at once: no backoff, no breaker.
        assert!(at >= back && at <= back + ms(1400), "{:?}", at - back);
        assert!((5..=9).contains(&probes), "{probes}");
        assert_eq!(r.path(), PathState::Up);
        assert_eq!(r.attempt(at), None);
        assert_eq!(r.breaker(), BreakerState::Closed);
    }

    #[test]
    fn after_a_45_s_outage_the_first_full_attempt_is_within_3_25_s_of_the_return() {
        for seed in 1..200 {
            let t0 = Instant::now();
            let back = t0 + secs(45);
            let mut r = jittered(seed);
            let (step, probes) = outage(&mut r, t0, back);
            let at = step.at();
            assert!(matches!(step, Step::Connect { .. }));
            assert!(at <= back + ms(3250), "seed {seed}: {:?}", at - back);
            assert!(probes < 40, "seed {seed}: {probes} probes");
            assert_eq!(r.attempt(at), None, "seed {seed}");
        }
    }

    #[test]
    fn a_long_outage_makes_no_full_attempt_until_the_path_is_back_and_probes_thin_out() {
        let t0 = Instant::now();
        let mut r = jittered(11);
        let mut step = r.on_end(t0, Ending::Dropped);
        let (mut probes_first_10_min, mut probes_next_hour) = (0, 0);
        while let Step::Probe { at } = step {
            let age = at - t0;
            if age < secs(600) {
                probes_first_10_min += 1;
            } else if age < secs(4200) {
                probes_next_hour += 1;
            } else {
                break;
            }
            step = r.on_probe(at, false);
        }
        assert!(matches!(step, Step::Probe { .. }), "never a full attempt");
        // 31 s to 60 s ceilings, drawn from their upper half: 60 to 120 an hour.
        assert!((60..=120).contains(&probes_next_hour), "{probes_next_hour}");
        assert!(probes_first_10_min < 120, "{probes_first_10_min}");
        assert_eq!(r.path(), PathState::Down);
    }

    #[test]
    fn a_refused_connect_is_the_path_and_never_opens_the_breaker() {
        let t0 = Instant::now();
        let mut r = exact();
        let mut now = t0;
        let mut step = r.on_end(now, Ending::Unreachable);
        for _ in 0..50 {
            let Step::Probe { at } = step else {
                panic!("{step:?}")
            };
            now = at;
            step = r.on_probe(now, false);
        }
        assert_eq!(r.breaker(), BreakerState::Closed);
        let step = r.on_probe(now + secs(1), true);
        assert_eq!(step, Step::Connect { at: now + secs(1) });
    }

    #[test]
    fn broker_failures_back_off_and_open_the_breaker_at_the_threshold() {
        let t0 = Instant::now();
        let mut r = exact();
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..5 {
            assert_eq!(r.attempt(now), None);
            let step = r.on_end(now, Ending::Broker);
            let Step::Connect { at } = step else {
                panic!("{step:?}")
            };
            waits.push((at - now).as_secs());
            now = at;
        }
        // Backoff ceilings without jitter 1, 2, 4, 8, then the breaker's 60 s.
        assert_eq!(waits, [1, 2, 4, 8, 60]);
        assert_eq!(r.breaker(), BreakerState::Open);
    }

    #[test]
    fn after_ten_minutes_of_a_refusing_broker_full_attempts_are_at_most_12_an_hour() {
        for seed in 1..100 {
            let t0 = Instant::now();
            let mut r = jittered(seed);
            let mut now = t0;
            let mut attempts = Vec::new();
            while now < t0 + secs(600 + 3600) {
                match r.attempt(now) {
                    None => {
                        attempts.push(now - t0);
                        now = r.on_end(now, Ending::Broker).at();
                    }
                    Some(later) => now = later.at(),
                }
            }
            let late: Vec<_> = attempts.iter().filter(|a| **a >= secs(600)).collect();
            assert!(late.len() <= 12, "seed {seed}: {} in the hour", late.len());
            for pair in late.windows(2) {
                assert!(*pair[1] - *pair[0] >= secs(300), "seed {seed}: {pair:?}");
            }
        }
    }

    #[test]
    fn the_breaker_pause_is_jittered_so_a_fleet_spreads_out() {
        let t0 = Instant::now();
        let ends: Vec<Instant> = (1..50)
            .map(|seed| {
                let mut r = jittered(seed);
                for _ in 0..5 {
                    r.on_end(t0, Ending::Broker);
                }
                assert_eq!(r.breaker(), BreakerState::Open);
                r.gate(t0)
            })
            .collect();
        assert!(ends
            .iter()
            .all(|e| *e >= t0 + secs(60) && *e <= t0 + secs(75)));
        let mut distinct = ends.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 40);
    }

    #[test]
    fn a_broken_session_is_probed_within_the_first_interval_and_reconnected_at_once_if_the_path_works(
    ) {
        let t0 = Instant::now();
        let mut r = exact();
        assert_eq!(r.attempt(t0), None);
        r.on_connected(t0);
        r.on_proven();
        // Up for ten minutes, then the broker restarts: the probe within 1 s gets through.
        let broke = t0 + secs(600);
        let step = r.on_end(broke, Ending::Dropped);
        assert_eq!(
            step,
            Step::Probe {
                at: broke + secs(1)
            }
        );
        let next = r.on_probe(broke + secs(1), true);
        // Backoff after a long session: within `initial` of the break (1 s).
        assert_eq!(
            next,
            Step::Connect {
                at: broke + secs(1)
            }
        );
        assert_eq!(r.breaker(), BreakerState::Closed);
    }

    #[test]
    fn a_session_dropped_soon_after_connecting_waits_a_growing_backoff() {
        let t0 = Instant::now();
        let mut r = exact();
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..4 {
            assert_eq!(r.attempt(now), None);
            r.on_connected(now);
            r.on_proven();
            let dropped = now + secs(2);
            let Step::Probe { at } = r.on_end(dropped, Ending::Dropped) else {
                panic!()
            };
            let step = r.on_probe(at, true);
            waits.push((step.at() - dropped).as_secs());
            now = step.at();
        }
        assert_eq!(waits, [1, 2, 4, 8]);
        assert_eq!(r.breaker(), BreakerState::Closed, "each session was proven");
    }

    #[test]
    fn a_timeout_on_a_working_path_counts_against_the_broker_but_on_a_dead_one_does_not() {
        let t0 = Instant::now();
        // The path answers the probe at once: the broker stalled.
        let mut r = exact();
        r.on_connected(t0);
        let Step::Probe { at } = r.on_end(t0 + secs(30), Ending::Stalled) else {
            panic!()
        };
        let step = r.on_probe(at, true);
        assert_eq!(step, Step::Connect { at: at + secs(1) });

        // The probe fails: the stall was the path; when it is back, at once.
        let mut r = exact();
        r.on_connected(t0);
        let stalled = t0 + secs(30);
        let Step::Probe { at } = r.on_end(stalled, Ending::Stalled) else {
            panic!()
        };
        let Step::Probe { at } = r.on_probe(at, false) else {
            panic!()
        };
        assert_eq!(r.path(), PathState::Down);
        assert_eq!(r.on_probe(at, true), Step::Connect { at });
        for _ in 0..10 {
            r.on_end(at, Ending::Unreachable);
        }
        assert_eq!(r.breaker(), BreakerState::Closed);
    }

    #[test]
    fn a_breaker_opened_by_the_broker_still_gates_after_a_link_outage_but_adds_nothing_else() {
        let t0 = Instant::now();
        let mut r = exact();
        for _ in 0..5 {
            r.on_end(t0, Ending::Broker);
        }
        assert_eq!(r.breaker(), BreakerState::Open);
        // The trial attempt at the end of the pause finds the path down.
        let trial = t0 + secs(60);
        assert_eq!(r.attempt(trial), None);
        assert_eq!(r.breaker(), BreakerState::HalfOpen);
        let Step::Probe { at } = r.on_end(trial, Ending::Unreachable) else {
            panic!()
        };
        assert_eq!(r.breaker(), BreakerState::Open, "the trial is void");
        // The path returns: the trial goes at once, the pause having passed.
        let step = r.on_probe(at, true);
        assert_eq!(step, Step::Connect { at });
        assert_eq!(r.attempt(at), None);
        assert_eq!(r.breaker(), BreakerState::HalfOpen);
        r.on_connected(at);
        r.on_proven();
        assert_eq!(r.breaker(), BreakerState::Closed);
    }

    #[test]
    fn a_permanent_failure_waits_permanent_retry() {
        let t0 = Instant::now();
        let mut r = exact();
        assert_eq!(
            r.on_end(t0, Ending::Permanent),
            Step::Connect { at: t0 + secs(600) }
        );
        assert_eq!(
            r.attempt(t0 + secs(599)).map(|s| s.at()),
            Some(t0 + secs(600))
        );
    }

    #[test]
    fn narrowing_reconnects_within_the_first_interval_and_counts_against_nobody() {
        let t0 = Instant::now();
        let mut r = exact();
        for _ in 0..20 {
            assert_eq!(
                r.on_end(t0, Ending::Narrowed),
                Step::Connect { at: t0 + secs(1) }
            );
        }
        assert_eq!(r.breaker(), BreakerState::Closed);
        assert_eq!(r.attempt(t0 + secs(1)), None);
    }

    #[test]
    fn a_failed_full_attempt_after_a_probe_keeps_the_outage_clock() {
        let t0 = Instant::now();
        let mut r = exact();
        r.on_end(t0, Ending::Unreachable);
        // A probe gets through at 100 s, the full attempt does not: a flapping path.
        let at = t0 + secs(100);
        assert!(matches!(r.on_probe(at, true), Step::Connect { .. }));
        let step = r.on_end(at, Ending::Unreachable);
        // The interval is that of a 100 s outage (1 + 5 = 6 s), not of a fresh one.
        assert_eq!(step, Step::Probe { at: at + secs(6) });
        assert_eq!(r.outage_since(), Some(t0));
    }

    #[test]
    fn the_stall_watch_reconnects_only_after_the_path_was_seen_down_and_back() {
        let t0 = Instant::now();
        let mut r = exact();
        let mut w = StallWatch::new(t0);
        assert_eq!(w.on_probe(t0 + secs(1), true, &mut r), Watch::Stop);

        let mut w = StallWatch::new(t0);
        let Watch::ProbeAt(at) = w.on_probe(t0 + secs(1), false, &mut r) else {
            panic!()
        };
        assert_eq!(at, t0 + secs(1) + ms(1050));
        assert!(w.seen_down());
        assert_eq!(r.path(), PathState::Down);
        assert!(matches!(w.on_probe(at, false, &mut r), Watch::ProbeAt(_)));
        assert_eq!(w.on_probe(at + secs(2), true, &mut r), Watch::Reconnect);
        assert_eq!(
            r.on_end(at + secs(2), Ending::PathReturned),
            Step::Connect { at: at + secs(2) }
        );
        assert_eq!(r.path(), PathState::Up);
    }
}
