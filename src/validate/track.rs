//! The `speed_jump` state: the last accepted position and a small, fixed-size track of
//! candidate positions that jumped away from it.
//!
//! A jump is usually a glitch (multipath, a bad first fix) and is rejected. But if the jump
//! was real (a tunnel with no fixes, a ferry, a truck moved on a trailer, a bad fix that was
//! accepted as the anchor), the new fixes keep agreeing with each other; after
//! `jump_confirm` of them in a row the latest is accepted and becomes the anchor, so the
//! agent is never locked out. The track holds at most [`JUMP_TRACK_CAPACITY`] points: no
//! allocation, no growth.

use super::geo::{distance_m, speed_kmh};

/// Most candidates held; also the largest `validate.jump_confirm` the config accepts.
pub const JUMP_TRACK_CAPACITY: usize = crate::config::ValidateSettings::MAX_JUMP_CONFIRM as usize;

/// A position at a receiver time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub time_ms: i64,
    pub lat: f64,
    pub lon: f64,
}

impl Point {
    /// Implied speed from `self` to `later`, km/h.
    pub fn speed_to(&self, later: &Point) -> f64 {
        let d = distance_m(self.lat, self.lon, later.lat, later.lon);
        speed_kmh(d, later.time_ms.saturating_sub(self.time_ms))
    }
}

/// What the track says about a new point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Consistent with the anchor (or the first point ever): accept.
    Consistent,
    /// A jump, confirmed by `jump_confirm` consistent candidates: accept.
    Confirmed,
    /// A jump, not (yet) confirmed: reject.
    Jump,
}

#[derive(Debug, Clone, Default)]
pub struct JumpTrack {
    /// The last accepted position.
    anchor: Option<Point>,
    /// Consecutive positions that jumped from the anchor and agree with each other.
    candidates: heapless::Vec<Point, JUMP_TRACK_CAPACITY>,
}

impl JumpTrack {
    /// The last accepted point.
    pub fn anchor(&self) -> Option<&Point> {
        self.anchor.as_ref()
    }

    /// Judge `point` against the anchor and the candidates. Does not change state: call
    /// [`JumpTrack::accept`] or [`JumpTrack::hold`] with the outcome, so a fix rejected by a
    /// later check never moves the anchor.
    pub fn judge(&self, point: &Point, max_speed_kmh: f64, jump_confirm: u8) -> Verdict {
        let Some(anchor) = &self.anchor else {
            return Verdict::Consistent;
        };
        if anchor.speed_to(point) <= max_speed_kmh {
            return Verdict::Consistent;
        }
        // `point` would join the track if it agrees with the newest candidate. The bar is
        // capped at the capacity so an unchecked, oversized `jump_confirm` cannot lock out.
        let joined = match self.candidates.last() {
            Some(last) if last.speed_to(point) <= max_speed_kmh => self.candidates.len() + 1,
            _ => 1,
        };
        if joined >= usize::from(jump_confirm).clamp(1, JUMP_TRACK_CAPACITY) {
            Verdict::Confirmed
        } else {
            Verdict::Jump
        }
    }

    /// `point` was accepted: it is the new anchor, and the candidates are spent.
    pub fn accept(&mut self, point: Point) {
        self.anchor = Some(point);
        self.candidates.clear();
    }

    /// `point` jumped: extend the candidate track, or start a new one when it does not agree
    /// with the newest candidate.
    pub fn hold(&mut self, point: Point, max_speed_kmh: f64) {
        let agrees = self
            .candidates
            .last()
            .is_some_and(|last| last.speed_to(&point) <= max_speed_kmh);
        if !agrees || self.candidates.is_full() {
            self.candidates.clear();
        }
        // Cannot fail: cleared above when full.
        let _ = self.candidates.push(point);
    }

    /// Candidates currently held.
    pub fn candidates(&self) -> usize {
        self.candidates.len()
    }
}
