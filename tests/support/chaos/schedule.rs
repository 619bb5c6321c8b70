//! The seeded fault schedule: which faults, in which order, how long each holds and how much
//! calm lies before it. Everything follows from the seed and the run's length, so a seed
//! printed by a failing run replays the same schedule (the agent's own timing, which the
//! schedule meets at other moments, is what a replay cannot repeat).

use std::fmt;
use std::time::Duration;

use crate::support::Prng;

/// What the run does to the agent or its surroundings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// SIGKILL of the agent (an OOM kill, a watchdog, a panic); restarted after systemd's
    /// `RestartSec` with the same configuration and buffer file.
    Kill,
    /// The broker stops (SIGTERM) and comes back on the same port after the hold.
    BrokerRestart,
    /// The link refuses connections and drops those it had (a dead zone).
    LinkCut,
    /// The link swallows every byte without closing, then is dropped (a carrier NAT dropping
    /// a hung flow).
    LinkStall,
    /// The receiver is unplugged and plugged back in under the same udev name.
    Unplug,
    /// The buffer's file system is full.
    DiskFull,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Kill,
        FaultKind::BrokerRestart,
        FaultKind::LinkCut,
        FaultKind::LinkStall,
        FaultKind::Unplug,
        FaultKind::DiskFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::BrokerRestart => "broker_restart",
            FaultKind::LinkCut => "link_cut",
            FaultKind::LinkStall => "link_stall",
            FaultKind::Unplug => "unplug",
            FaultKind::DiskFull => "disk_full",
        }
    }

    /// How many an hour of chaos holds (an hour meets the minimums: 24 SIGKILLs, 6
    /// broker restarts, 12 link faults, 6 unplugs, 2 disk-full spells), and how many a
    /// short run keeps at least, so that every kind is present.
    fn per_hour_and_least(self) -> (f64, usize) {
        match self {
            FaultKind::Kill => (24.0, 2),
            FaultKind::BrokerRestart | FaultKind::LinkCut | FaultKind::LinkStall => (6.0, 1),
            FaultKind::Unplug => (6.0, 1),
            FaultKind::DiskFull => (2.0, 1),
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One fault of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    /// Quiet time before it starts (after the previous fault ended).
    pub calm_before: Duration,
    /// How long the fault holds (for a kill: the restart delay).
    pub hold: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub faults: Vec<Fault>,
    /// Quiet time after the last fault, before the drive ends.
    pub tail: Duration,
}

/// Fault durations and the spacing between faults, the same for every seed.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// systemd's `RestartSec`: how long a killed agent stays down.
    pub restart_after: Duration,
    /// How long the disk stays full.
    pub disk_full: Duration,
    /// A run long enough for long faults (cuts of 30-60 s, stalls and unplugs up to 20 and
    /// 15 s); a short run keeps each fault to a few seconds.
    pub long: bool,
}

/// Least calm between two faults: enough for a healthy agent to show it recovered.
const CALM_LEAST: Duration = Duration::from_secs(3);
/// Quiet time before the first fault and after the last.
pub const LEAD_IN: Duration = Duration::from_secs(5);

impl Schedule {
    /// The schedule of `seed` for a drive of about `secs` seconds; `kinds` are the faults
    /// this machine can inject (disk full needs a file system of the run's own). When the
    /// faults' holds and least calm exceed `secs`, the drive is longer than asked.
    pub fn new(seed: u64, secs: u64, kinds: &[FaultKind], timing: Timing) -> Schedule {
        let mut rng = Draw::new(seed);
        let mut faults = Vec::new();
        for &kind in kinds {
            let (per_hour, least) = kind.per_hour_and_least();
            let n = ((per_hour * secs as f64 / 3600.0).round() as usize).max(least);
            for _ in 0..n {
                let hold = hold(kind, timing, &mut rng);
                faults.push(Fault {
                    kind,
                    calm_before: CALM_LEAST,
                    hold,
                });
            }
        }
        // Fisher-Yates: the kinds interleave in an order of the seed.
        for i in (1..faults.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            faults.swap(i, j);
        }
        // The calm left over is shared out in random portions.
        let busy: Duration = faults.iter().map(|f| f.hold + f.calm_before).sum();
        let spare = Duration::from_secs(secs).saturating_sub(busy + 2 * LEAD_IN);
        let weights: Vec<u64> = faults.iter().map(|_| 1 + rng.below(1000)).collect();
        let total: u64 = weights.iter().sum::<u64>().max(1);
        for (fault, w) in faults.iter_mut().zip(&weights) {
            fault.calm_before += spare.mul_f64(*w as f64 / total as f64);
        }
        if let Some(first) = faults.first_mut() {
            first.calm_before = first.calm_before.max(LEAD_IN);
        }
        Schedule {
            faults,
            tail: LEAD_IN,
        }
    }

    /// How long the drive runs: every calm, every hold and the tail (and, in a run, the
    /// waits for the agent to recover after each fault).
    pub fn length(&self) -> Duration {
        self.faults
            .iter()
            .map(|f| f.calm_before + f.hold)
            .sum::<Duration>()
            + self.tail
    }

    pub fn count(&self, kind: FaultKind) -> usize {
        self.faults.iter().filter(|f| f.kind == kind).count()
    }
}

/// How long one fault of `kind` holds.
fn hold(kind: FaultKind, timing: Timing, rng: &mut Draw) -> Duration {
    // Milliseconds from 1 s up to the short run's or the long run's bound.
    let upto = |rng: &mut Draw, short: u64, long: u64| {
        rng.between(1_000, if timing.long { long } else { short })
    };
    match kind {
        FaultKind::Kill => timing.restart_after,
        FaultKind::DiskFull => timing.disk_full,
        FaultKind::BrokerRestart => upto(rng, 5_000, 10_000),
        // The two cases, 8 s and 45 s, lie in these ranges.
        FaultKind::LinkCut if timing.long && rng.below(3) == 0 => rng.between(30_000, 60_000),
        FaultKind::LinkCut => upto(rng, 10_000, 12_000),
        FaultKind::LinkStall => upto(rng, 6_000, 20_000),
        FaultKind::Unplug => upto(rng, 6_000, 15_000),
    }
}

/// The schedule's randomness: the harness's xorshift, with the draws it needs.
struct Draw(Prng);

impl Draw {
    /// Any seed works: splitmix64's finaliser (a bijection) spreads seeds that differ in a
    /// bit or two over the whole state, and only one seed lands on xorshift's fixed point 0.
    fn new(seed: u64) -> Draw {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Draw(Prng(z.max(1)))
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is far below what a schedule notices).
    fn below(&mut self, n: u64) -> u64 {
        self.0.next() % n
    }

    /// Milliseconds in `lo..hi`.
    fn between(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(lo_ms + self.below(hi_ms - lo_ms))
    }
}
