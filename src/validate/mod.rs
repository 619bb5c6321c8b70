//! Validation: an [`Epoch`] becomes an accepted [`Fix`] or a [`Rejection`] with a reason.
//!
//! In: epochs from `crate::gnss`, in receiver order ([`Validator::push`]). Out: one verdict
//! per epoch, in the same order, handed to a sink: at once for most, one epoch late for a
//! fix whose motion only its successor can judge ([`kinematics`]); [`Validator::finish`]
//! decides a fix still held when the input ends or falls quiet. State kept between epochs:
//! the last accepted fix (for `duplicate_time`, `speed_jump` and the motion check), a small
//! fixed-size track of jump candidates, at most one held fix; counters by reason. Never
//! reads the host clock, never does I/O, never allocates on the way through.
//!
//! # Order of the checks
//!
//! Several reasons can hold for one epoch; the first in this order is reported, chosen so
//! the reason says most about the receiver's state:
//!
//! 1. `estimated`: GGA quality 6-8, or FAA mode E/M/S on RMC, GLL, GNS or VTG. Before
//!    `no_fix`, because dead-reckoning receivers often pair mode E with RMC status `V`.
//! 2. `no_fix`: every status the epoch carries says no fix (RMC/GLL `V`, GGA quality 0, GNS
//!    mode N, GSA mode 1).
//! 3. `disagree` (status): some of those statuses say fix and others say no fix.
//! 4. `estimated`: FAA mode N on RMC, GLL or VTG while the statuses say fix (the spec counts N
//!    as estimated; when nothing claims a fix it is plainly `no_fix`, step 2).
//! 5. `incomplete`: no sentence gives both latitude and longitude.
//! 6. `out_of_range`: any reported value outside its physical range ([`ranges`]): latitude
//!    or longitude (NaN, infinite, beyond ±90/±180, 60 minutes or more), altitude outside
//!    -1,000..20,000 m, speed negative or above 200 m/s, course outside 0..360°, HDOP NaN,
//!    infinite or negative. (An HDOP under 0.1 or a satellite count over 99 is dropped from
//!    the fix instead: it stands without them.)
//! 7. `null_island`: the position is within 1e-6° of 0,0.
//! 8. `disagree` (position): two sentences' positions further apart than `disagree_m`.
//! 9. `incomplete`: no time of day, or no date.
//! 10. `time_invalid`: date before `not_before_year` and not rollover-corrected (see
//!     [`time`]).
//! 11. `duplicate_time`: time not after the last accepted (or held) fix's, or the same as
//!     the epoch before's (whatever its verdict: a receiver repeating its time is at fault
//!     either way); `disagree` instead when the last fix's time comes with a position further
//!     than `disagree_m` from that fix's (two receivers, or two solutions, for one instant). An earlier time is taken
//!     as a new timeline once `jump_confirm` otherwise-good epochs in a row agree on it
//!     (a receiver clock reset must not lock the agent out until the old time comes back).
//! 12. `hdop`: HDOP above `max_hdop` (equal passes).
//! 13. `satellites`: fewer than `min_sats` satellites, when the receiver says (equal passes).
//! 14. `frozen` (with `motion_check`): the position printed is the previous epoch's to the
//!     last digit while the receiver's speed guarantees a movement the print would show.
//! 15. `speed_jump`: implied speed from the last accepted fix above `max_speed_kmh` (equal
//!     passes), unless confirmed by the candidate track (see [`track`]).
//! 16. `inconsistent` (with `motion_check`): the position is off the track that the
//!     neighbouring fixes, the receiver's Doppler speed and course and the vehicle's limits
//!     allow, by more than GPS noise, and the next fix does not vouch for it (decided one
//!     epoch late; see [`kinematics`]).
//!
//! Position, time and quality come before the motion checks so that only an otherwise good
//! fix can become the anchor, a jump candidate or a witness for its neighbours.

pub mod geo;
pub mod kinematics;
pub mod ranges;
pub mod time;
pub mod track;

pub use track::JUMP_TRACK_CAPACITY;

use tracing::debug;

use crate::config::ValidateConfig;
use crate::fix::{Fix, FixMode};
use crate::gnss::epoch::{Epoch, FaaMode};
use crate::rejection::{Reason, ReasonCounts, Rejection};
use kinematics::{Limits, Motion};
use track::{JumpTrack, Point, Verdict as JumpVerdict};

/// Knots to metres per second (1852 m / 3600 s, to the precision the issue fixes).
const KNOTS_TO_MPS: f64 = 0.514444;

/// Latitude and longitude both within this of zero: a receiver reporting nothing as 0,0.
pub const NULL_ISLAND_DEG: f64 = 1e-6;

fn point(fix: &Fix) -> Point {
    Point {
        time_ms: fix.time_ms,
        lat: fix.lat,
        lon: fix.lon,
    }
}

/// One epoch's outcome.
pub type Verdict = Result<Fix, Rejection>;

/// Judges epochs; keeps what the time, speed and motion checks need from earlier ones.
#[derive(Debug, Clone)]
pub struct Validator {
    cfg: ValidateConfig,
    limits: Limits,
    /// Otherwise-good epochs in a row that were earlier than the last accepted fix, each
    /// later than the one before: (time of the newest, how many). A receiver whose clock
    /// was reset, or a wrong future date accepted once, must not lock the agent out until
    /// the clock catches up: after `jump_confirm` of them the new timeline is taken.
    rewind: Option<(i64, u8)>,
    /// Date and time of day of the epoch before, as the receiver printed them.
    previous_stamp: Option<(chrono::NaiveDate, u32)>,
    track: JumpTrack,
    motion: Motion,
    counts: ReasonCounts,
    accepted: u64,
}

/// What one status-bearing sentence says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vote {
    Fix,
    NoFix,
}

/// Everything known about the epoch's time and position, for rejections and the fix.
#[derive(Debug, Clone, Copy)]
struct Known {
    time_ms: Option<i64>,
    time_of_day_ms: Option<u32>,
    lat: Option<f64>,
    lon: Option<f64>,
}

impl Known {
    fn of(fix: &Fix) -> Known {
        Known {
            time_ms: Some(fix.time_ms),
            time_of_day_ms: u32::try_from(fix.time_ms.rem_euclid(86_400_000)).ok(),
            lat: Some(fix.lat),
            lon: Some(fix.lon),
        }
    }

    fn reject(&self, reason: Reason, detail: &'static str) -> Rejection {
        Rejection {
            reason,
            time_ms: self.time_ms,
            time_of_day_ms: self.time_of_day_ms,
            // Non-finite values would serialise as `null`: leave them out instead.
            lat: self.lat.filter(|v| v.is_finite()),
            lon: self.lon.filter(|v| v.is_finite()),
            detail,
        }
    }
}

/// An epoch that passed every check of a single epoch (1-13).
struct Screened {
    fix: Fix,
    /// Its time is earlier than the last fix's and `jump_confirm` such epochs agree: the
    /// receiver's clock was reset and every earlier fix is on the abandoned timeline.
    new_timeline: bool,
}

impl Validator {
    pub fn new(cfg: ValidateConfig) -> Self {
        Validator {
            limits: Limits::of(&cfg),
            cfg,
            rewind: None,
            previous_stamp: None,
            track: JumpTrack::default(),
            motion: Motion::default(),
            counts: ReasonCounts::default(),
            accepted: 0,
        }
    }

    /// Judge one epoch. `out` receives, in receiver order, the verdict on the fix held from
    /// the previous epoch (if this epoch decides it) and then this epoch's verdict (unless it
    /// is held in turn): zero, one or two calls. Counts every verdict.
    pub fn push(&mut self, epoch: &Epoch, out: &mut impl FnMut(Verdict)) {
        let screened = match self.screen(epoch) {
            Ok(s) => s,
            Err(rejection) => {
                // This epoch cannot vouch for the held fix, nor speak against it.
                self.settle(None, out);
                self.deliver(Err(rejection), out);
                return;
            }
        };
        let fix = screened.fix;
        if screened.new_timeline {
            self.settle(None, out);
            // The old anchor is on the abandoned timeline: start the tracks afresh.
            self.track = JumpTrack::default();
            self.motion.reset();
        }
        let motion_check = self.cfg.motion_check;
        if motion_check && self.motion.frozen(&fix, &self.limits) {
            self.settle(None, out);
            let detail = "position repeated while the receiver's speed says it moved";
            self.deliver(Err(Known::of(&fix).reject(Reason::Frozen, detail)), out);
            return;
        }
        // The held fix is judged by this one, unless this one jumped away from it: a far
        // jump says nothing about its neighbours. But if it lies where the last accepted fix
        // and its Doppler put it, it is no jump; the held fix is the odd one out.
        let max_speed = self.cfg.max_speed_kmh;
        let p = point(&fix);
        let witness = self.motion.held().is_some_and(|held| {
            point(held).speed_to(&p) <= max_speed || self.motion.on_track(&fix, &self.limits)
        });
        self.settle(witness.then_some(&fix), out);

        match self.track.judge(&p, max_speed, self.cfg.jump_confirm) {
            JumpVerdict::Jump => {
                self.track.hold(p, max_speed);
                let detail = "implied speed above max_speed_kmh";
                self.deliver(Err(Known::of(&fix).reject(Reason::SpeedJump, detail)), out);
            }
            JumpVerdict::Confirmed => {
                self.motion.restart_at(&fix);
                self.accept(fix, out);
            }
            JumpVerdict::Consistent => {
                if !motion_check || self.motion.arrive(&fix, &self.limits) {
                    self.accept(fix, out);
                }
                // Otherwise held: the next epoch (or `finish`) decides it.
            }
        }
    }

    /// The input ended or fell quiet: decide the held fix, if any, without a successor. The
    /// state stays: later epochs are judged against the same anchor.
    pub fn finish(&mut self, out: &mut impl FnMut(Verdict)) {
        self.settle(None, out);
    }

    /// A fix is held for the next epoch's verdict (so output that must keep receiver order,
    /// like `parse --all`'s checksum lines, waits for it).
    pub fn is_holding(&self) -> bool {
        self.motion.held().is_some()
    }

    /// Rejections by reason.
    pub fn counts(&self) -> &ReasonCounts {
        &self.counts
    }

    /// Epochs accepted as fixes.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Decide the held fix, if any, with `next` as its witness.
    fn settle(&mut self, next: Option<&Fix>, out: &mut impl FnMut(Verdict)) {
        let Some((fix, accepted)) = self.motion.decide(next, &self.limits) else {
            return;
        };
        if accepted {
            self.accept(fix, out);
        } else {
            let detail = "off the track its neighbours and Doppler speed allow";
            self.deliver(
                Err(Known::of(&fix).reject(Reason::Inconsistent, detail)),
                out,
            );
        }
    }

    fn accept(&mut self, fix: Fix, out: &mut impl FnMut(Verdict)) {
        self.track.accept(point(&fix));
        self.rewind = None;
        self.deliver(Ok(fix), out);
    }

    fn deliver(&mut self, verdict: Verdict, out: &mut impl FnMut(Verdict)) {
        match &verdict {
            Ok(_) => self.accepted += 1,
            Err(rejection) => {
                self.counts.add(rejection.reason);
                debug!(
                    reason = rejection.reason.as_str(),
                    detail = rejection.detail,
                    time_ms = rejection.time_ms,
                    "epoch rejected"
                );
            }
        }
        out(verdict);
    }

    /// Checks 1-13: everything one epoch shows on its own, and its time against the last
    /// accepted or held fix.
    fn screen(&mut self, epoch: &Epoch) -> Result<Screened, Rejection> {
        // The receiver's own date and time, uncorrected, of this epoch and the one before
        // (whatever its verdict): a receiver repeating its time is at fault either way.
        let stamp = epoch.date.zip(epoch.time_of_day_ms);
        let repeated =
            stamp.is_some() && core::mem::replace(&mut self.previous_stamp, stamp) == stamp;
        let position = primary_position(epoch);
        let mut known = Known {
            time_ms: match (epoch.date, epoch.time_of_day_ms) {
                (Some(date), Some(tod)) => time::unix_ms(date, tod),
                _ => None,
            },
            time_of_day_ms: epoch.time_of_day_ms,
            lat: position.map(|p| p.0).or_else(|| any_lat(epoch)),
            lon: position.map(|p| p.1).or_else(|| any_lon(epoch)),
        };

        // 1-4: what the receiver says about its own fix.
        if let Some(detail) = estimated(epoch) {
            return Err(known.reject(Reason::Estimated, detail));
        }
        match status(epoch) {
            (true, false) => return Err(known.reject(Reason::NoFix, no_fix_detail(epoch))),
            (true, true) => {
                return Err(known.reject(Reason::Disagree, "status: fix and no fix in one epoch"))
            }
            _ => {}
        }
        if let Some(detail) = not_valid_mode(epoch) {
            return Err(known.reject(Reason::Estimated, detail));
        }

        // 5-8: the position.
        let Some((lat, lon)) = position else {
            return Err(known.reject(Reason::Incomplete, "no position"));
        };
        if let Some(detail) = out_of_range(epoch) {
            return Err(known.reject(Reason::OutOfRange, detail));
        }
        if lat.abs() <= NULL_ISLAND_DEG && lon.abs() <= NULL_ISLAND_DEG {
            return Err(known.reject(Reason::NullIsland, "position 0,0"));
        }
        if let Some(detail) = positions_apart(epoch, self.cfg.disagree_m) {
            return Err(known.reject(Reason::Disagree, detail));
        }

        // 9-11: the time.
        let Some(time_of_day_ms) = epoch.time_of_day_ms else {
            return Err(known.reject(Reason::Incomplete, "no time of day"));
        };
        let Some(date) = epoch.date else {
            return Err(known.reject(Reason::Incomplete, "no date"));
        };
        let date = time::corrected_date(date, self.cfg.not_before_year, self.cfg.rollover_fix)
            .map_err(|detail| known.reject(Reason::TimeInvalid, detail))?;
        let time_ms = time::unix_ms(date, time_of_day_ms)
            .ok_or_else(|| known.reject(Reason::TimeInvalid, "date out of range"))?;
        known.time_ms = Some(time_ms);
        let earlier = match self.latest() {
            Some((last, last_lat, last_lon)) if time_ms == last => {
                return Err(
                    if geo::distance_m(lat, lon, last_lat, last_lon) > self.cfg.disagree_m {
                        known.reject(Reason::Disagree, "two positions apart for one time")
                    } else {
                        known.reject(Reason::DuplicateTime, "same time as the last fix")
                    },
                );
            }
            // The epoch before was rejected, but a receiver repeating its time is at fault
            // whatever became of the first one.
            _ if repeated => {
                return Err(known.reject(Reason::DuplicateTime, "same time as the epoch before"));
            }
            Some((last, _, _)) => time_ms < last,
            None => false,
        };

        // 12-13: quality.
        let fix = build_fix(epoch, time_ms, lat, lon);
        if fix.hdop.is_some_and(|h| h > self.cfg.max_hdop) {
            return Err(known.reject(Reason::Hdop, "HDOP above max_hdop"));
        }
        if fix.sats.is_some_and(|n| n < self.cfg.min_sats) {
            return Err(known.reject(Reason::Satellites, "fewer satellites than min_sats"));
        }

        // 11 (continued): an earlier time is rejected, unless `jump_confirm` good epochs in
        // a row agree on the new timeline (checked after quality, so only good fixes count).
        let mut new_timeline = false;
        if earlier {
            let run = match self.rewind {
                Some((newest, n)) if time_ms > newest => n.saturating_add(1),
                _ => 1,
            };
            self.rewind = Some((time_ms, run));
            if run < self.cfg.jump_confirm.max(1) {
                return Err(known.reject(Reason::DuplicateTime, "earlier than the last fix"));
            }
            new_timeline = true;
        }
        Ok(Screened { fix, new_timeline })
    }

    /// Time and position of the newest fix accepted or held.
    fn latest(&self) -> Option<(i64, f64, f64)> {
        let accepted = self.track.anchor().map(|p| (p.time_ms, p.lat, p.lon));
        let held = self.motion.held().map(|f| (f.time_ms, f.lat, f.lon));
        match (accepted, held) {
            (Some(a), Some(h)) => Some(if h.0 >= a.0 { h } else { a }),
            (a, h) => a.or(h),
        }
    }
}

/// Position from GGA, else GNS, else RMC, else GLL: the first sentence with both values.
fn primary_position(e: &Epoch) -> Option<(f64, f64)> {
    positions(e)
        .into_iter()
        .flatten()
        .next()
        .map(|(_, lat, lon)| (lat, lon))
}

/// The epoch's complete positions, in order of preference, with the sentence's name.
fn positions(e: &Epoch) -> [Option<(&'static str, f64, f64)>; 4] {
    let both = |name, lat: Option<f64>, lon: Option<f64>| Some((name, lat?, lon?));
    [
        e.gga.and_then(|s| both("GGA", s.lat, s.lon)),
        e.gns.and_then(|s| both("GNS", s.lat, s.lon)),
        e.rmc.and_then(|s| both("RMC", s.lat, s.lon)),
        e.gll.and_then(|s| both("GLL", s.lat, s.lon)),
    ]
}

/// Every latitude reported, complete position or not.
fn lats(e: &Epoch) -> [Option<f64>; 4] {
    [
        e.gga.and_then(|s| s.lat),
        e.gns.and_then(|s| s.lat),
        e.rmc.and_then(|s| s.lat),
        e.gll.and_then(|s| s.lat),
    ]
}

/// Every longitude reported, complete position or not.
fn lons(e: &Epoch) -> [Option<f64>; 4] {
    [
        e.gga.and_then(|s| s.lon),
        e.gns.and_then(|s| s.lon),
        e.rmc.and_then(|s| s.lon),
        e.gll.and_then(|s| s.lon),
    ]
}

fn any_lat(e: &Epoch) -> Option<f64> {
    lats(e).into_iter().flatten().next()
}

fn any_lon(e: &Epoch) -> Option<f64> {
    lons(e).into_iter().flatten().next()
}

/// Step 1: a position the receiver did not measure.
fn estimated(e: &Epoch) -> Option<&'static str> {
    if let Some(gga) = e.gga {
        match gga.quality {
            Some(6) => return Some("GGA quality 6 (dead reckoning)"),
            Some(7) => return Some("GGA quality 7 (manual input)"),
            Some(8) => return Some("GGA quality 8 (simulator)"),
            _ => {}
        }
    }
    let modes = [
        ("RMC", e.rmc.and_then(|s| s.faa_mode)),
        ("GLL", e.gll.and_then(|s| s.faa_mode)),
        ("GNS", e.gns.and_then(|s| s.mode)),
        ("VTG", e.vtg.and_then(|s| s.faa_mode)),
    ];
    modes
        .into_iter()
        .find_map(|(name, mode)| match (name, mode?) {
            ("RMC", FaaMode::Estimated) => Some("RMC mode E (dead reckoning)"),
            ("RMC", FaaMode::Manual) => Some("RMC mode M (manual input)"),
            ("RMC", FaaMode::Simulator) => Some("RMC mode S (simulator)"),
            ("GLL", m) if m.is_estimated() => Some("GLL mode E/M/S (not measured)"),
            ("GNS", m) if m.is_estimated() => Some("GNS mode E/M/S (not measured)"),
            ("VTG", m) if m.is_estimated() => Some("VTG mode E/M/S (not measured)"),
            _ => None,
        })
}

/// Steps 2-3: the status votes of the epoch, as (some say no fix, some say fix).
fn status(e: &Epoch) -> (bool, bool) {
    let votes = [
        e.rmc.map(|s| if s.valid { Vote::Fix } else { Vote::NoFix }),
        // An empty quality field casts no vote.
        e.gga
            .and_then(|s| s.quality)
            .map(|q| if q == 0 { Vote::NoFix } else { Vote::Fix }),
        e.gns.and_then(|s| s.mode).map(|m| {
            if m == FaaMode::NotValid {
                Vote::NoFix
            } else {
                Vote::Fix
            }
        }),
        e.gll.map(|s| if s.valid { Vote::Fix } else { Vote::NoFix }),
        e.gsa.and_then(|s| match s.fix_mode {
            1 => Some(Vote::NoFix),
            2 | 3 => Some(Vote::Fix),
            // 0: the epoch's GSA carried no mode; nothing to count.
            _ => None,
        }),
    ];
    let no_fix = votes.contains(&Some(Vote::NoFix));
    let fix = votes.contains(&Some(Vote::Fix));
    (no_fix, fix)
}

fn no_fix_detail(e: &Epoch) -> &'static str {
    if e.rmc.is_some_and(|s| !s.valid) {
        "RMC status V"
    } else if e.gga.is_some_and(|s| s.quality == Some(0)) {
        "GGA quality 0"
    } else if e.gll.is_some_and(|s| !s.valid) {
        "GLL status V"
    } else if e.gns.is_some_and(|s| s.mode == Some(FaaMode::NotValid)) {
        "GNS mode N"
    } else {
        "GSA mode 1"
    }
}

/// Step 4: FAA mode N (data not valid) beside statuses that claim a fix.
fn not_valid_mode(e: &Epoch) -> Option<&'static str> {
    let n = Some(FaaMode::NotValid);
    if e.rmc.is_some_and(|s| s.faa_mode == n) {
        Some("RMC mode N (data not valid)")
    } else if e.gll.is_some_and(|s| s.faa_mode == n) {
        Some("GLL mode N (data not valid)")
    } else if e.vtg.is_some_and(|s| s.faa_mode == n) {
        Some("VTG mode N (data not valid)")
    } else {
        None
    }
}

/// Step 6: values no receiver on a road vehicle can mean, in any sentence of the epoch
/// (the ranges and their reasons are [`ranges`]'s).
fn out_of_range(e: &Epoch) -> Option<&'static str> {
    let hdops = [
        e.gga.and_then(|s| s.hdop),
        e.gns.and_then(|s| s.hdop),
        e.gsa.and_then(|s| s.hdop),
    ];
    let alts = [e.gga.and_then(|s| s.alt_m), e.gns.and_then(|s| s.alt_m)];
    let speeds = [
        e.rmc.and_then(|s| s.speed_knots),
        e.vtg.and_then(|s| s.speed_knots),
    ];
    let courses = [
        e.rmc.and_then(|s| s.course_deg),
        e.vtg.and_then(|s| s.course_deg),
    ];
    let hdop = hdops
        .into_iter()
        .flatten()
        .find_map(|h| ranges::hdop(h).err());
    first_err(lats(e).into_iter().flatten().map(ranges::latitude))
        .or_else(|| first_err(lons(e).into_iter().flatten().map(ranges::longitude)))
        .or(hdop)
        .or_else(|| first_err(alts.into_iter().flatten().map(ranges::altitude)))
        .or_else(|| {
            first_err(
                speeds
                    .into_iter()
                    .flatten()
                    .map(|k| ranges::speed_knots(k, KNOTS_TO_MPS)),
            )
        })
        .or_else(|| first_err(courses.into_iter().flatten().map(ranges::course)))
}

fn first_err(values: impl IntoIterator<Item = Result<f64, &'static str>>) -> Option<&'static str> {
    values.into_iter().find_map(Result::err)
}

/// Step 8: two sentences of the epoch placing the receiver further apart than `limit_m`.
fn positions_apart(e: &Epoch, limit_m: f64) -> Option<&'static str> {
    let all = positions(e);
    for (i, a) in all.iter().enumerate() {
        for b in all.iter().skip(i + 1) {
            if let (Some((_, lat1, lon1)), Some((_, lat2, lon2))) = (a, b) {
                if geo::distance_m(*lat1, *lon1, *lat2, *lon2) > limit_m {
                    return Some(pair_detail(a, b));
                }
            }
        }
    }
    None
}

fn pair_detail(a: &Option<(&str, f64, f64)>, b: &Option<(&str, f64, f64)>) -> &'static str {
    match (a.map(|p| p.0), b.map(|p| p.0)) {
        (Some("GGA"), Some("GNS")) => "GGA and GNS positions apart",
        (Some("GGA"), Some("RMC")) => "GGA and RMC positions apart",
        (Some("GGA"), Some("GLL")) => "GGA and GLL positions apart",
        (Some("GNS"), Some("RMC")) => "GNS and RMC positions apart",
        (Some("GNS"), Some("GLL")) => "GNS and GLL positions apart",
        (Some("RMC"), Some("GLL")) => "RMC and GLL positions apart",
        _ => "positions apart",
    }
}

/// The fix, each field from the first sentence that has it (in range: step 6 rejected the
/// epoch for any value [`ranges`] refuses; what it drops is skipped here):
/// position GGA > GNS > RMC > GLL; speed/course RMC > VTG; HDOP GGA > GNS > GSA;
/// satellites GGA > GNS > GSA; altitude GGA > GNS.
fn build_fix(e: &Epoch, time_ms: i64, lat: f64, lon: f64) -> Fix {
    let alt_m = e.gga.and_then(|s| s.alt_m).or(e.gns.and_then(|s| s.alt_m));
    let mode = match e.gsa.map(|s| s.fix_mode) {
        Some(3) => FixMode::ThreeD,
        Some(2) => FixMode::TwoD,
        _ if alt_m.is_some() => FixMode::ThreeD,
        _ => FixMode::TwoD,
    };
    Fix {
        time_ms,
        lat,
        lon,
        alt_m,
        speed_mps: e
            .rmc
            .and_then(|s| s.speed_knots)
            .or(e.vtg.and_then(|s| s.speed_knots))
            .map(|knots| knots * KNOTS_TO_MPS),
        course_deg: e
            .rmc
            .and_then(|s| s.course_deg)
            .or(e.vtg.and_then(|s| s.course_deg))
            .and_then(|c| ranges::course(c).ok()),
        hdop: [
            e.gga.and_then(|s| s.hdop),
            e.gns.and_then(|s| s.hdop),
            e.gsa.and_then(|s| s.hdop),
        ]
        .into_iter()
        .flatten()
        .find_map(|h| ranges::hdop(h).ok().flatten()),
        sats: e
            .gga
            .and_then(|s| s.sats)
            .and_then(ranges::sats)
            .or(e.gns.and_then(|s| s.sats).and_then(ranges::sats))
            // A GSA listing no satellites says nothing about how many were used.
            .or(e.gsa.map(|s| s.sats_used()).filter(|n| *n > 0)),
        mode,
        event: None,
    }
}
