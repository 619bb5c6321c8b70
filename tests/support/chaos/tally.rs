//! What a chaos run comes to: the fixes the agent could have accepted (`gps-agent parse` of
//! exactly the bytes its port carried) against what an independent subscriber received,
//! keyed by receiver time (a `seq` is only unique within a buffer file's stream).
//!
//! Pure bookkeeping over what the run recorded, so it can be checked on made-up evidence.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::Instant;

use gps_agent::fix::Fix;

use super::receiver::{Fate, Printed};
use super::schedule::FaultKind;
use crate::support::broker::ReceivedFix;

/// A fault as it was injected.
#[derive(Debug, Clone, Copy)]
pub struct Injected {
    pub kind: FaultKind,
    pub start: Instant,
    /// When the fault was over: the link restored, the broker accepting, the receiver
    /// plugged back in, the ballast deleted, the killed agent started again.
    pub end: Instant,
}

/// One agent process.
#[derive(Debug, Clone, Copy)]
pub struct Life {
    pub start: Instant,
    /// When it was SIGKILLed (`None`: it lived to the end of the run).
    pub killed: Option<Instant>,
}

/// A fix as the subscriber received it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub fix: ReceivedFix,
    pub at: Instant,
}

/// Everything a run recorded.
#[derive(Debug, Default)]
pub struct Evidence {
    /// Every epoch the receiver printed, in order.
    pub printed: Vec<Printed>,
    /// The fixes `parse` accepts from the bytes the port carried, by receiver time (ms).
    pub accepted: BTreeMap<i64, Fix>,
    /// Receiver times of the fixes `parse` accepts from what was printed while nobody could
    /// read it.
    pub accepted_unfed: BTreeSet<i64>,
    pub deliveries: Vec<Delivery>,
    pub faults: Vec<Injected>,
    /// The agent processes, in order.
    pub lives: Vec<Life>,
    /// When the drain was over.
    pub end: Option<Instant>,
}

/// Fixes the receiver printed that no agent could read, by why.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Excluded {
    /// From a SIGKILL until the restarted agent opened the port.
    pub agent_down: usize,
    pub unplugged: usize,
    /// The agent alive but its port closed: reopening after a replug or a stuck receiver.
    pub port_closed: usize,
    /// An agent held the port but the write timed out (it was not reading).
    pub write_failed: usize,
}

impl Excluded {
    pub fn total(&self) -> usize {
        self.agent_down + self.unplugged + self.port_closed + self.write_failed
    }
}

/// A fix the agent could have accepted and never delivered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lost {
    pub time_ms: i64,
    /// The agent process that read it (index into [`Evidence::lives`]).
    pub life: usize,
    /// Seconds from when it was printed to that agent's SIGKILL, if it was killed.
    pub before_kill_s: Option<f64>,
}

/// Time from a fault's end to the first delivery of a fix printed after that end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Blind {
    pub kind: FaultKind,
    /// Its place in the schedule.
    pub index: usize,
    /// When it started (seconds after the first epoch was printed) and how long it held.
    pub at_s: f64,
    pub held_s: f64,
    pub secs: f64,
    /// false: nothing printed after the fault arrived before the run ended.
    pub ended: bool,
}

#[derive(Debug, Clone)]
pub struct Tally {
    pub faults: usize,
    /// Fixes `parse` accepts from the bytes the port carried.
    pub fixes: usize,
    /// Of those, delivered at least once.
    pub delivered: usize,
    pub lost: Vec<Lost>,
    /// Deliveries beyond the first of the same fix.
    pub duplicates: usize,
    pub p99_fix_to_ack_s: f64,
    pub blind: Vec<Blind>,
    pub excluded: Excluded,
    /// Receiver times of delivered fixes `parse` did not accept from the bytes fed.
    pub unexpected: Vec<i64>,
    /// Receiver times of delivered fixes whose position differs from `parse`'s.
    pub mismatched: Vec<i64>,
    /// `(stream, seq)` pairs delivered with two different fixes.
    pub seq_conflicts: usize,
    /// Stream ids seen (a new one only when a buffer file was moved aside).
    pub streams: usize,
    /// The longest time the subscriber received nothing, and when it began (seconds after
    /// the first epoch was printed): what a dispatcher watching the vehicle lived through,
    /// faults included.
    pub silence: (f64, f64),
    /// Per agent process: whether it was killed, and how many fixes it lost.
    pub lives: Vec<(bool, usize)>,
}

/// Positions agree to the compact payload's resolution (1e-7 degree) and a rounding.
const SAME_POSITION_DEG: f64 = 1.5e-7;

impl Tally {
    pub fn new(e: &Evidence) -> Tally {
        let printed_at: HashMap<i64, Instant> =
            e.printed.iter().map(|p| (p.time_ms, p.at)).collect();
        let end = e.end.unwrap_or_else(Instant::now);

        let mut first: HashMap<i64, Instant> = HashMap::new();
        let mut copies = 0usize;
        let mut by_seq: HashMap<(&str, u64), i64> = HashMap::new();
        let mut seq_conflicts = 0;
        let mut unexpected = BTreeSet::new();
        let mut mismatched = BTreeSet::new();
        for d in &e.deliveries {
            let t = d.fix.fix.time_ms;
            copies += 1;
            let seen = first.entry(t).or_insert(d.at);
            *seen = (*seen).min(d.at);
            if *by_seq
                .entry((d.fix.stream.as_str(), d.fix.seq))
                .or_insert(t)
                != t
            {
                seq_conflicts += 1;
            }
            match e.accepted.get(&t) {
                None => {
                    unexpected.insert(t);
                }
                Some(want) => {
                    let off = (want.lat - d.fix.fix.lat)
                        .abs()
                        .max((want.lon - d.fix.fix.lon).abs());
                    if off > SAME_POSITION_DEG {
                        mismatched.insert(t);
                    }
                }
            }
        }
        let streams = e
            .deliveries
            .iter()
            .map(|d| d.fix.stream.as_str())
            .collect::<BTreeSet<_>>()
            .len();

        // Which agent process read a fix: the one alive when it was printed (a killed
        // agent's unread bytes wait in the port for the next, but those it read die with it).
        let life_of = |at: Instant| e.lives.iter().rposition(|l| l.start <= at).unwrap_or(0);
        let mut lost = Vec::new();
        let mut latencies = Vec::new();
        for t in e.accepted.keys() {
            let Some(&at) = printed_at.get(t) else {
                continue;
            };
            match first.get(t) {
                Some(&got) => latencies.push(got.saturating_duration_since(at).as_secs_f64()),
                None => {
                    let life = life_of(at);
                    let before_kill_s = e.lives[life]
                        .killed
                        .map(|k| k.saturating_duration_since(at).as_secs_f64());
                    lost.push(Lost {
                        time_ms: *t,
                        life,
                        before_kill_s,
                    });
                }
            }
        }
        latencies.sort_by(f64::total_cmp);
        let p99_fix_to_ack_s = percentile(&latencies, 0.99);

        let lives = e
            .lives
            .iter()
            .enumerate()
            .map(|(i, l)| {
                (
                    l.killed.is_some(),
                    lost.iter().filter(|x| x.life == i).count(),
                )
            })
            .collect();

        Tally {
            faults: e.faults.len(),
            fixes: e.accepted.len(),
            delivered: e.accepted.keys().filter(|t| first.contains_key(t)).count(),
            lost,
            duplicates: copies - first.len(),
            p99_fix_to_ack_s,
            blind: blind_times(e, &printed_at, end),
            excluded: excluded(e),
            unexpected: unexpected.into_iter().collect(),
            mismatched: mismatched.into_iter().collect(),
            seq_conflicts,
            streams,
            silence: silence(e),
            lives,
        }
    }

    /// The longest blind time of the run.
    pub fn max_blind(&self) -> Option<Blind> {
        self.blind
            .iter()
            .copied()
            .max_by(|a, b| a.secs.total_cmp(&b.secs))
    }

    /// The run's last line.
    pub fn last_line(&self) -> String {
        format!(
            "faults={} fixes={} delivered={} lost={} duplicates={} p99_fix_to_ack_s={:.2} \
             max_blind_s={:.2}",
            self.faults,
            self.fixes,
            self.delivered,
            self.lost.len(),
            self.duplicates,
            self.p99_fix_to_ack_s,
            self.max_blind().map_or(0.0, |b| b.secs)
        )
    }

    /// What the last line does not say: exclusions, losses by cause, blind time by kind.
    pub fn details(&self) -> Vec<String> {
        let x = self.excluded;
        let mut lines = vec![format!(
            "excluded={} fixes the receiver printed while no agent could read them (not in \
             fixes): {} agent down (SIGKILL until the restarted agent opened the port), {} \
             receiver unplugged, {} port closed by a running agent (reopening), {} writes \
             timed out",
            x.total(),
            x.agent_down,
            x.unplugged,
            x.port_closed,
            x.write_failed
        )];
        let kills = self.lives.iter().filter(|(k, _)| *k).count();
        let mut by_kill = String::new();
        for (i, (killed, n)) in self.lives.iter().enumerate() {
            if *n > 0 {
                let what = if *killed { "killed" } else { "not killed" };
                let _ = write!(by_kill, " agent#{i} ({what}) {n};");
            }
        }
        lines.push(format!(
            "lost={} over {kills} SIGKILLs (target: at most 1 per SIGKILL, 0 otherwise):{}",
            self.lost.len(),
            if by_kill.is_empty() {
                " none".to_string()
            } else {
                by_kill
            }
        ));
        for l in self.lost.iter().take(20) {
            lines.push(format!(
                "  lost fix {} read by agent#{}{}",
                gps_agent::fix::format_time_ms(l.time_ms),
                l.life,
                l.before_kill_s
                    .map(|s| format!(", printed {s:.2} s before its SIGKILL"))
                    .unwrap_or_default()
            ));
        }
        let mut kinds: BTreeMap<FaultKind, (usize, f64, usize)> = BTreeMap::new();
        for b in &self.blind {
            let k = kinds.entry(b.kind).or_default();
            k.0 += 1;
            if b.secs >= k.1 {
                (k.1, k.2) = (b.secs, b.index);
            }
        }
        let mut blind = String::new();
        for (kind, (n, max, index)) in &kinds {
            let _ = write!(blind, " {kind} x{n} max {max:.2} (fault #{index});");
        }
        lines.push(format!("blind_s after each kind of fault:{blind}"));
        for b in &self.blind {
            lines.push(format!(
                "  fault #{} {} at {:.1} s, held {:.1} s, blind {:.2} s{}",
                b.index,
                b.kind,
                b.at_s,
                b.held_s,
                b.secs,
                if b.ended {
                    ""
                } else {
                    " (to the end of the run)"
                }
            ));
        }
        lines.push(format!(
            "longest silence at the subscriber: {:.2} s, from {:.1} s into the drive",
            self.silence.0, self.silence.1
        ));
        lines.push(format!(
            "unexpected={} mismatched={} seq_conflicts={} streams={}",
            self.unexpected.len(),
            self.mismatched.len(),
            self.seq_conflicts,
            self.streams
        ));
        lines
    }

    /// Where the run misses the loss target, or delivered what it should not have.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (i, (killed, n)) in self.lives.iter().enumerate() {
            let allowed = usize::from(*killed);
            if *n > allowed {
                let how = if *killed {
                    "SIGKILLed, so at most 1"
                } else {
                    "never killed, so 0"
                };
                v.push(format!("agent#{i} lost {n} fixes ({how})"));
            }
        }
        if !self.mismatched.is_empty() {
            v.push(format!(
                "{} fixes delivered with another position than parse gives, first at {}",
                self.mismatched.len(),
                gps_agent::fix::format_time_ms(self.mismatched[0])
            ));
        }
        if self.seq_conflicts > 0 {
            v.push(format!(
                "{} (stream, seq) pairs delivered with two different fixes",
                self.seq_conflicts
            ));
        }
        v
    }
}

/// The value at quantile `q` of sorted `values` (nearest rank); 0 for none.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn blind_times(e: &Evidence, printed_at: &HashMap<i64, Instant>, end: Instant) -> Vec<Blind> {
    let mut arrivals: Vec<(Instant, Instant)> = e
        .deliveries
        .iter()
        .filter_map(|d| printed_at.get(&d.fix.fix.time_ms).map(|&p| (d.at, p)))
        .collect();
    arrivals.sort_by_key(|(at, _)| *at);
    let t0 = e.printed.first().map_or(end, |p| p.at);
    e.faults
        .iter()
        .enumerate()
        .map(|(index, f)| {
            let from = arrivals.partition_point(|(at, _)| *at < f.end);
            let next = arrivals[from..]
                .iter()
                .find(|(_, printed)| *printed >= f.end)
                .map(|(at, _)| *at);
            Blind {
                kind: f.kind,
                index,
                at_s: f.start.saturating_duration_since(t0).as_secs_f64(),
                held_s: (f.end - f.start).as_secs_f64(),
                secs: next
                    .unwrap_or(end)
                    .saturating_duration_since(f.end)
                    .as_secs_f64(),
                ended: next.is_some(),
            }
        })
        .collect()
}

fn silence(e: &Evidence) -> (f64, f64) {
    let Some(t0) = e.printed.first().map(|p| p.at) else {
        return (0.0, 0.0);
    };
    let mut arrivals: Vec<Instant> = e.deliveries.iter().map(|d| d.at).collect();
    arrivals.sort();
    let mut last = t0;
    let mut longest = (0.0, 0.0);
    for at in arrivals {
        let gap = at.saturating_duration_since(last).as_secs_f64();
        if gap > longest.0 {
            longest = (gap, last.saturating_duration_since(t0).as_secs_f64());
        }
        last = last.max(at);
    }
    longest
}

fn excluded(e: &Evidence) -> Excluded {
    // An agent is down from its SIGKILL until the port carries an epoch again; a closed
    // port at any other time is a running agent's doing.
    let mut kills = e.lives.iter().filter_map(|l| l.killed).peekable();
    let mut down = false;
    let mut x = Excluded::default();
    for p in &e.printed {
        while kills.next_if(|k| *k <= p.at).is_some() {
            down = true;
        }
        let counted = e.accepted_unfed.contains(&p.time_ms);
        match p.fate {
            Fate::Fed => down = false,
            _ if !counted => {}
            Fate::Unplugged => x.unplugged += 1,
            Fate::WriteFailed => x.write_failed += 1,
            Fate::PortClosed if down => x.agent_down += 1,
            Fate::PortClosed => x.port_closed += 1,
        }
    }
    x
}
