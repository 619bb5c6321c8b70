//! Measuring a reporting policy on a whole drive, with everything in hand: the error of each
//! accepted fix against the track the back end redraws from the kept fixes, the longest
//! gap, and the offline reference: the fewest fixes any choice could keep under the same
//! bound, intervals and events. For `gps-agent parse --report` and the tests; never on the
//! daemon's path (it holds the whole drive in memory).

use super::cone::{distance_m, wrap_lon, Cone, Directions, Frame, EPS_SHARE};
use super::{Counts, Kept, Policy, Settings};
use crate::fix::{Event, Fix};

/// A drive through a [`Policy`].
#[derive(Debug, Clone)]
pub struct Run {
    pub settings: Settings,
    /// The accepted fixes, in order.
    pub accepted: Vec<Fix>,
    /// Indices into `accepted` of the kept fixes, in the order they were sent.
    pub kept: Vec<usize>,
    /// The kept fixes as sent (with their events).
    pub sent: Vec<Fix>,
    pub counts: Counts,
}

/// Run `fixes` through a fresh policy, then [`Policy::finish`].
pub fn run(settings: Settings, fixes: &[Fix]) -> Run {
    let mut policy = Policy::new(settings);
    let mut out = Kept::new();
    let mut r = Run {
        settings,
        accepted: fixes.to_vec(),
        kept: Vec::new(),
        sent: Vec::new(),
        counts: Counts::default(),
    };
    for (i, fix) in fixes.iter().enumerate() {
        policy.push(fix, &mut out);
        record(&mut r, i, &out);
    }
    policy.finish(&mut out);
    record(&mut r, fixes.len().saturating_sub(1), &out);
    r.counts = policy.counts();
    r
}

/// Map fixes sent after fix `upto` arrived back to their indices (the newest accepted fix
/// with the same time and position: a pending fix is always recent).
fn record(r: &mut Run, upto: usize, out: &Kept) {
    for k in out {
        let same = |f: &Fix| f.time_ms == k.time_ms && f.lat == k.lat && f.lon == k.lon;
        let floor = r.kept.last().map_or(0, |&i| i + 1);
        let found = (floor..=upto.min(r.accepted.len().saturating_sub(1)))
            .rev()
            .find(|&i| r.accepted.get(i).is_some_and(same));
        if let Some(i) = found {
            r.kept.push(i);
            r.sent.push(*k);
        }
    }
}

impl Run {
    /// Per accepted fix, whether the policy had the vehicle stopped there (after a kept
    /// `stop`, before the next kept `start`): the error bound does not apply to wander.
    pub fn parked(&self) -> Vec<bool> {
        let mut out = vec![false; self.accepted.len()];
        let mut parked = false;
        let mut next = self.kept.iter().zip(&self.sent).peekable();
        for (i, slot) in out.iter_mut().enumerate() {
            while let Some((&k, f)) = next.peek() {
                if k > i {
                    break;
                }
                match f.event {
                    Some(Event::Stop) => parked = true,
                    Some(Event::Start) => parked = false,
                    None => {}
                }
                next.next();
            }
            *slot = parked;
        }
        out
    }

    /// The synchronized distance of every accepted fix from the redrawn track: between the
    /// kept fixes before and after it, interpolated linearly in time (latitude and
    /// longitude), in metres. `None` while parked when `skip_parked`.
    pub fn errors(&self, skip_parked: bool) -> Vec<Option<f64>> {
        let parked = self.parked();
        let mut out = vec![None; self.accepted.len()];
        for w in self.kept.windows(2) {
            let (a, b) = (w[0], w[1]);
            for i in a..=b {
                if skip_parked && parked[i] {
                    continue;
                }
                out[i] = Some(sed(&self.accepted[i], &self.accepted[a], &self.accepted[b]));
            }
        }
        if let (Some(&first), Some(slot)) = (self.kept.first(), out.first_mut()) {
            if first == 0 && !(skip_parked && parked[0]) {
                *slot = Some(0.0);
            }
        }
        out
    }

    /// The longest time between consecutive kept fixes (same timeline), milliseconds.
    pub fn longest_gap_ms(&self) -> i64 {
        self.sent
            .windows(2)
            .map(|w| w[1].time_ms - w[0].time_ms)
            .max()
            .unwrap_or(0)
            .max(0)
    }

    /// What [`optimum`] finds for this run.
    pub fn optimum(&self) -> usize {
        optimum(self)
    }
}

/// How kept fixes are grouped into messages, for [`payload_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// Up to this many fixes a message, as the uplink takes a backlog (`batch_max`).
    Count(usize),
    /// One message per this many milliseconds of receiver time: what a live fix waiting
    /// that long for company makes.
    Every(i64),
}

/// Payload bytes of `fixes` (numbered 1, 2, ... as the buffer would) in the JSON (`v` 1)
/// and the compact (`v` 2) encodings, and the number of messages; the stream id of the
/// buffer's form in each (and `device` in v1; v2's lean header leaves it to the topic), as
/// the daemon sends them.
pub fn payload_bytes(fixes: &[Fix], device: &str, batching: Batching) -> (usize, usize, usize) {
    use crate::uplink::{cbor, payload};
    let numbered: Vec<(u64, Fix)> = fixes
        .iter()
        .enumerate()
        .map(|(i, f)| (i as u64 + 1, *f))
        .collect();
    let mut groups: Vec<&[(u64, Fix)]> = Vec::new();
    match batching {
        Batching::Count(n) => groups.extend(numbered.chunks(n.max(1))),
        Batching::Every(ms) => {
            let mut start = 0;
            for i in 1..=numbered.len() {
                let split = numbered.get(i).is_none_or(|(_, f)| {
                    (f.time_ms - numbered[start].1.time_ms) >= ms.max(1)
                        || f.time_ms < numbered[start].1.time_ms
                });
                if split {
                    groups.push(&numbered[start..i]);
                    start = i;
                }
            }
        }
    }
    const STREAM: &str = "00000000000000000000000000000000";
    let (mut v1, mut v2, mut messages) = (0, 0, 0);
    for g in groups {
        let batch = payload::FixBatch {
            device,
            stream: STREAM,
            fixes: g,
        };
        let max = crate::config::MqttConfig::MAX_MESSAGE_BYTES as usize;
        let json = payload::encode(&batch, max);
        let compact = cbor::encode(&batch, max);
        v1 += json.messages.iter().map(|m| m.payload.len()).sum::<usize>();
        v2 += compact
            .messages
            .iter()
            .map(|m| m.payload.len())
            .sum::<usize>();
        messages += compact.messages.len();
    }
    (v1, v2, messages)
}

/// Synchronized Euclidean distance of `fix` from the segment `a`-`b` (by time).
pub fn sed(fix: &Fix, a: &Fix, b: &Fix) -> f64 {
    let span = b.time_ms - a.time_ms;
    let u = if span > 0 {
        ((fix.time_ms - a.time_ms) as f64 / span as f64).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let lat = a.lat + u * (b.lat - a.lat);
    let lon = a.lon + u * wrap_lon(b.lon - a.lon);
    distance_m(lat, lon, fix.lat, fix.lon)
}

/// Largest and 95th-percentile of measured errors (0 when none).
pub fn max_and_p95(errors: &[Option<f64>]) -> (f64, f64) {
    let mut e: Vec<f64> = errors.iter().flatten().copied().collect();
    if e.is_empty() {
        return (0.0, 0.0);
    }
    e.sort_by(f64::total_cmp);
    let p95 = e[(e.len() * 95).div_ceil(100).saturating_sub(1)];
    (e[e.len() - 1], p95)
}

/// The fewest fixes that keep every moving fix within `max_error_m` (the exact distance,
/// not the cone's polygons), with at most `max_interval_s` between kept fixes while moving and
/// `parked_interval_s` while stopped, keeping the same fixes the rules themselves name: the
/// first and last, the stop and start fixes `run` chose, and both sides of every gap. Solved
/// exactly as a shortest path over the fixes (Imai and Iri), segment by segment between those
/// fixes; parked segments by the farthest-reach greedy, optimal for a pure interval rule.
pub fn optimum(run: &Run) -> usize {
    let fixes = &run.accepted;
    let s = &run.settings;
    let n = fixes.len();
    if n == 0 {
        return 0;
    }
    let mut must: Vec<usize> = vec![0, n - 1];
    for (&i, f) in run.kept.iter().zip(&run.sent) {
        if f.event.is_some() {
            must.push(i);
        }
    }
    for i in 1..n {
        let dt = fixes[i].time_ms - fixes[i - 1].time_ms;
        if dt <= 0 || dt > s.gap_ms() {
            must.push(i - 1);
            must.push(i);
        }
    }
    must.sort_unstable();
    must.dedup();
    let parked = run.parked();
    let dirs = Directions::new();
    let mut total = 1;
    for w in must.windows(2) {
        let (a, b) = (w[0], w[1]);
        total += if parked[a] {
            parked_segment(fixes, a, b, s.parked_interval_ms)
        } else {
            moving_segment(fixes, a, b, s, &dirs)
        };
    }
    total
}

/// Fixes kept after `a` up to and including `b` under the interval rule alone.
fn parked_segment(fixes: &[Fix], a: usize, b: usize, interval_ms: i64) -> usize {
    let mut at = a;
    let mut count = 0;
    while at < b {
        let mut next = at + 1;
        while next < b && fixes[next + 1].time_ms - fixes[at].time_ms <= interval_ms {
            next += 1;
        }
        at = next;
        count += 1;
    }
    count
}

/// Fixes kept after `a` up to and including `b`, fewest possible, under the error bound and
/// `max_interval_s`.
fn moving_segment(fixes: &[Fix], a: usize, b: usize, s: &Settings, dirs: &Directions) -> usize {
    let eps = s.max_error_m;
    let mut best = vec![usize::MAX; b - a + 1];
    best[0] = 0;
    for i in a..b {
        let here = best[i - a];
        if here == usize::MAX {
            continue;
        }
        let frame = Frame::at(fixes[i].lat, fixes[i].lon);
        let (mut inner, mut outer) = (Cone::open(), Cone::open());
        for j in i + 1..=b {
            let dt_ms = fixes[j].time_ms - fixes[i].time_ms;
            if dt_ms > s.max_interval_ms {
                break;
            }
            let dt = dt_ms as f64 / 1000.0;
            let (x, y) = frame.metres(fixes[j].lat, fixes[j].lon);
            let valid = if inner.admits(dirs, x, y, dt) {
                true
            } else if !outer.admits(dirs, x, y, dt) {
                false
            } else {
                (i + 1..j).all(|k| sed(&fixes[k], &fixes[i], &fixes[j]) <= eps)
            };
            if valid && here + 1 < best[j - a] {
                best[j - a] = here + 1;
            }
            inner.add(dirs, x, y, dt, eps * EPS_SHARE);
            outer.add_circumscribed(dirs, x, y, dt, eps / EPS_SHARE);
        }
    }
    // Consecutive fixes always make a valid step (a gap is a segment end), so `b` is reached.
    best[b - a]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::FixMode;

    fn at(t_s: f64, east: f64, north: f64) -> Fix {
        let (lat, lon) = Frame::at(48.0, 11.0).position(east, north);
        Fix {
            time_ms: (t_s * 1000.0) as i64,
            lat,
            lon,
            alt_m: None,
            speed_mps: Some(10.0),
            course_deg: None,
            hdop: None,
            sats: None,
            mode: FixMode::ThreeD,
            event: None,
        }
    }

    #[test]
    fn the_synchronized_distance_interpolates_in_time_not_along_the_path() {
        let a = at(0.0, 0.0, 0.0);
        let b = at(10.0, 100.0, 0.0);
        // On the line but a second early: 10 m behind where the track puts it.
        assert!((sed(&at(3.0, 20.0, 0.0), &a, &b) - 10.0).abs() < 0.01);
        assert!((sed(&at(5.0, 50.0, 7.0), &a, &b) - 7.0).abs() < 0.01);
    }

    #[test]
    fn the_optimum_keeps_a_corner_and_the_ends_of_a_right_angle() {
        // 10 m/s east for 20 s, then north for 20 s: the corner is needed, nothing else.
        let mut fixes: Vec<Fix> = (0..=20)
            .map(|t| at(f64::from(t), 10.0 * f64::from(t), 0.0))
            .collect();
        fixes.extend((1..=20).map(|t| at(20.0 + f64::from(t), 200.0, 10.0 * f64::from(t))));
        let s = Settings::adaptive(5.0);
        let r = run(s, &fixes);
        assert_eq!(r.optimum(), 3);
        assert_eq!(r.kept.len(), 3, "{:?}", r.kept);
        let (max, _) = max_and_p95(&r.errors(false));
        assert!(max <= 5.0);
    }

    #[test]
    fn percentiles_are_taken_from_the_measured_fixes() {
        let e: Vec<Option<f64>> = (1..=100)
            .map(|i| Some(f64::from(i)))
            .chain([None])
            .collect();
        assert_eq!(max_and_p95(&e), (100.0, 95.0));
        assert_eq!(max_and_p95(&[]), (0.0, 0.0));
    }
}
