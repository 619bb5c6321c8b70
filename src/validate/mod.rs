//! Validation: an [`Epoch`] becomes an accepted [`Fix`] or a [`Rejection`] with a reason.
//!
//! In: epochs from `crate::gnss`, in receiver order. Out: a `Fix` (to the buffer) or a
//! `Rejection` (counted, logged, printed by `parse --all`). State kept between epochs: the last
//! accepted fix (for `duplicate_time` and `speed_jump`) and a small fixed-size track of jump
//! candidates; counters by reason. Never reads the host clock, never does I/O, never
//! allocates on the way through.
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
//! 6. `out_of_range`: any reported latitude/longitude NaN, infinite or beyond ±90/±180, or a
//!    NaN/infinite/negative HDOP, or a NaN/infinite altitude, speed or course.
//! 7. `null_island`: the position is within 1e-6° of 0,0.
//! 8. `disagree` (position): two sentences' positions further apart than `disagree_m`.
//! 9. `incomplete`: no time of day, or no date.
//! 10. `time_invalid`: date before `not_before_year` and not rollover-corrected (see
//!     [`time`]).
//! 11. `duplicate_time`: time not after the last accepted fix's. An earlier time is taken
//!     as a new timeline once `jump_confirm` otherwise-good epochs in a row agree on it
//!     (a receiver clock reset must not lock the agent out until the old time comes back).
//! 12. `hdop`: HDOP above `max_hdop` (equal passes).
//! 13. `satellites`: fewer than `min_sats` satellites, when the receiver says (equal passes).
//! 14. `speed_jump`: implied speed from the last accepted fix above `max_speed_kmh` (equal
//!     passes), unless confirmed by the candidate track (see [`track`]).
//!
//! Position, time and quality come before the speed check so that only an otherwise good
//! fix can become the anchor or a jump candidate.

pub mod geo;
pub mod time;
pub mod track;

pub use track::JUMP_TRACK_CAPACITY;

use tracing::debug;

use crate::config::ValidateConfig;
use crate::fix::{Fix, FixMode};
use crate::gnss::epoch::{Epoch, FaaMode};
use crate::rejection::{Reason, ReasonCounts, Rejection};
use track::{JumpTrack, Point, Verdict};

/// Knots to metres per second (1852 m / 3600 s, to the precision the issue fixes).
const KNOTS_TO_MPS: f64 = 0.514444;

/// Latitude and longitude both within this of zero: a receiver reporting nothing as 0,0.
pub const NULL_ISLAND_DEG: f64 = 1e-6;

/// Judges epochs; keeps what the speed and time checks need from earlier ones.
#[derive(Debug, Clone)]
pub struct Validator {
    cfg: ValidateConfig,
    /// Time of the last accepted fix.
    last_time_ms: Option<i64>,
    /// Otherwise-good epochs in a row that were earlier than the last accepted fix, each
    /// later than the one before: (time of the newest, how many). A receiver whose clock
    /// was reset, or a wrong future date accepted once, must not lock the agent out until
    /// the clock catches up: after `jump_confirm` of them the new timeline is taken.
    rewind: Option<(i64, u8)>,
    track: JumpTrack,
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
    lat: Option<f64>,
    lon: Option<f64>,
}

impl Known {
    fn reject(&self, reason: Reason, detail: &'static str) -> Rejection {
        Rejection {
            reason,
            time_ms: self.time_ms,
            // Non-finite values would serialise as `null`: leave them out instead.
            lat: self.lat.filter(|v| v.is_finite()),
            lon: self.lon.filter(|v| v.is_finite()),
            detail,
        }
    }
}

impl Validator {
    pub fn new(cfg: ValidateConfig) -> Self {
        Validator {
            cfg,
            last_time_ms: None,
            rewind: None,
            track: JumpTrack::default(),
            counts: ReasonCounts::default(),
            accepted: 0,
        }
    }

    /// Judge one epoch. Keeps state (last accepted fix, jump candidates) for speed and time
    /// checks; counts the outcome.
    pub fn check(&mut self, epoch: &Epoch) -> Result<Fix, Rejection> {
        let outcome = self.judge(epoch);
        match &outcome {
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
        outcome
    }

    /// Rejections by reason.
    pub fn counts(&self) -> &ReasonCounts {
        &self.counts
    }

    /// Epochs accepted as fixes.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    fn judge(&mut self, epoch: &Epoch) -> Result<Fix, Rejection> {
        let position = primary_position(epoch);
        let mut known = Known {
            time_ms: match (epoch.date, epoch.time_of_day_ms) {
                (Some(date), Some(tod)) => time::unix_ms(date, tod),
                _ => None,
            },
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
        let earlier = match self.last_time_ms {
            Some(last) if time_ms == last => {
                return Err(known.reject(Reason::DuplicateTime, "same time as the last fix"))
            }
            Some(last) => time_ms < last,
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
        if earlier {
            let run = match self.rewind {
                Some((newest, n)) if time_ms > newest => n.saturating_add(1),
                _ => 1,
            };
            self.rewind = Some((time_ms, run));
            if run < self.cfg.jump_confirm.max(1) {
                return Err(known.reject(Reason::DuplicateTime, "earlier than the last fix"));
            }
            // The old anchor is on the abandoned timeline: start the track afresh.
            self.track = JumpTrack::default();
        }

        // 14: movement since the last accepted fix.
        let point = Point { time_ms, lat, lon };
        let max_speed = self.cfg.max_speed_kmh;
        match self.track.judge(&point, max_speed, self.cfg.jump_confirm) {
            Verdict::Consistent | Verdict::Confirmed => {
                self.track.accept(point);
                self.last_time_ms = Some(time_ms);
                self.rewind = None;
                Ok(fix)
            }
            Verdict::Jump => {
                self.track.hold(point, max_speed);
                Err(known.reject(Reason::SpeedJump, "implied speed above max_speed_kmh"))
            }
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

/// Step 6: values no receiver can mean.
fn out_of_range(e: &Epoch) -> Option<&'static str> {
    let bad_lat = |v: &f64| !v.is_finite() || v.abs() > 90.0;
    let bad_lon = |v: &f64| !v.is_finite() || v.abs() > 180.0;
    if lats(e).iter().flatten().any(bad_lat) {
        return Some("latitude NaN, infinite or beyond ±90");
    }
    if lons(e).iter().flatten().any(bad_lon) {
        return Some("longitude NaN, infinite or beyond ±180");
    }
    let hdops = [
        e.gga.and_then(|s| s.hdop),
        e.gns.and_then(|s| s.hdop),
        e.gsa.and_then(|s| s.hdop),
    ];
    if hdops.iter().flatten().any(|h| !h.is_finite() || *h < 0.0) {
        return Some("HDOP NaN, infinite or negative");
    }
    let others = [
        e.gga.and_then(|s| s.alt_m),
        e.gns.and_then(|s| s.alt_m),
        e.rmc.and_then(|s| s.speed_knots),
        e.rmc.and_then(|s| s.course_deg),
        e.vtg.and_then(|s| s.speed_knots),
        e.vtg.and_then(|s| s.course_deg),
    ];
    if others.iter().flatten().any(|v| !v.is_finite()) {
        return Some("altitude, speed or course NaN or infinite");
    }
    None
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

/// The fix, each field from the first sentence that has it:
/// position GGA > GNS > RMC > GLL; speed/course RMC > VTG; HDOP GGA > GNS > GSA;
/// satellites GGA > GNS > GSA; altitude GGA > GNS).
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
            .or(e.vtg.and_then(|s| s.course_deg)),
        hdop: e
            .gga
            .and_then(|s| s.hdop)
            .or(e.gns.and_then(|s| s.hdop))
            .or(e.gsa.and_then(|s| s.hdop)),
        sats: e
            .gga
            .and_then(|s| s.sats)
            .or(e.gns.and_then(|s| s.sats))
            // A GSA listing no satellites says nothing about how many were used.
            .or(e.gsa.map(|s| s.sats_used()).filter(|n| *n > 0)),
        mode,
        event: None,
    }
}
