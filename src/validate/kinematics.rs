//! Motion consistency: does a fix sit where its neighbours, the receiver's own Doppler speed
//! and course and what a road vehicle can do put it? Catches what no single epoch reveals:
//! a **frozen** position (the receiver repeats its last solution with a new time while its
//! speed says it moves) and an **inconsistent** one (urban multipath moving one epoch 40-90 m,
//! driving or standing, well under `max_speed_kmh`).
//!
//! In: otherwise-good fixes (every earlier check passed), in receiver order. Out: for each,
//! accept now, hold for one epoch, or reject; and for a held fix, the verdict once the next
//! one is known. State: the last accepted fix (the anchor), the last otherwise-good fix, at
//! most one held fix, and the print precision the receiver uses. Fixed size; no clock but
//! the receiver's time; no allocation.
//!
//! # The physics
//!
//! Between two fixes `dt` apart, with Doppler speeds `v0`, `v1` (accurate to about 0.1 m/s,
//! independent of the position error) and a vehicle whose acceleration in any direction
//! stays under `A` (`max_accel_mps2`: braking, pulling away and cornering share the tyres'
//! grip) and whose heading turns at most `Ω` (`max_yaw_rate_dps`, and `A / v` at speed):
//! - the path length lies in `v̄·dt ± (A·dt²/4 + σv·dt)` (`A·dt²/4` is the most that
//!   accelerating then braking can add between two known speeds);
//! - the heading never strays more than `Ω·dt/2` from the chord, so with both courses known
//!   the displacement lies within `A·dt²/4 + σv·dt + s·sin(Ω·dt/2 + σc)` of the trapezoid
//!   `dt/2·(v0·u(c0) + v1·u(c1))`; without a usable course (standing, crawling, a receiver
//!   that leaves it empty) its length lies between `s_lo·cos(Ω·dt/2)` and `s_hi`.
//!
//! What is left over is position noise: `position_noise_m` times the larger HDOP (at least
//! 1), plus the print's own rounding. A fix outside by more than that is inconsistent.
//!
//! The kinematic freedom grows as `dt²`, so a comparison across a long gap (a tunnel, a run
//! of rejected epochs, a slow receiver) proves nothing either way. A comparison is
//! *informative* when that freedom stays under twice `position_noise_m`: only then can it
//! speak for or against a fix. This is what scales the thresholds with the rate: at 10 Hz
//! the freedom is centimetres and noise decides; at 1 Hz in a city it is about 10 m.
//!
//! # Deciding one epoch late
//!
//! A fix that agrees (informatively) with the anchor is accepted at once: the common case,
//! no delay. Any other is held until the next otherwise-good fix `N` arrives, and then:
//! - accepted if `N` agrees with it: by Doppler (`N` is where the held fix's speed and course
//!   lead) or by smoothness (the held fix continues the line from the fix before it, and `N`
//!   continues it further). A real discontinuity (tunnel exit, ferry, receiver restart,
//!   an anchor that was itself off) is followed by fixes that agree with each other, so
//!   the agent re-anchors at once and is never locked out; smoothness alone also carries a
//!   receiver whose Doppler is biased;
//! - rejected if `N` agrees on neither count and informatively contradicts it on one (an
//!   isolated outlier: the track goes on as if it never happened);
//! - otherwise (no usable `N`: the next epoch failed another check, jumped away from both
//!   the held fix and the anchor's track, or the input ended or fell quiet) accepted unless
//!   the anchor contradicted it.
//!
//! A held fix the anchor contradicted and `N` rescued leaves `N` to wait for its own
//! successor rather than be accepted on the word of the fix it vouched for: two outliers in
//! a row that happen to agree would otherwise carry each other.
//!
//! **Frozen** needs no look-ahead: the position printed is the previous one to the last
//! digit while the Doppler speeds guarantee a movement the print would show. The print's
//! step is inferred from the digits the receiver prints (the most decimals of minutes seen),
//! so a receiver printing `ddmm.mm` (18 m steps) is not called frozen at walking pace, and a
//! 10 Hz receiver crawling less than one step per epoch is not either.

use super::geo::north_east_m;
use crate::config::ValidateSettings;
use crate::fix::Fix;

/// Doppler speed allowance, m/s: receivers specify about 0.1 m/s (1σ); three times that.
pub const SPEED_NOISE_MPS: f64 = 0.3;
/// Below this speed a course is not used: its noise (about `SPEED_NOISE_MPS / v` radians)
/// would be wider than the turn it describes, and receivers print anything when standing.
pub const COURSE_MIN_SPEED_MPS: f64 = 1.5;
/// A comparison is informative when the vehicle's freedom over it stays under this many
/// times `position_noise_m`.
pub const INFORMATIVE_FACTOR: f64 = 2.0;
/// A frozen print must hide at least this much guaranteed movement beyond two print steps,
/// metres.
pub const FROZEN_MARGIN_M: f64 = 0.3;
/// `A / v` would be infinite standing still; the yaw rate limit takes over below this.
const SLOWEST_MPS: f64 = 0.1;
/// Metres in one minute of latitude.
const METRES_PER_MINUTE: f64 = 1852.0;
/// Most decimals of minutes a receiver prints (RTK: 7 or 8).
const MAX_DECIMALS: u8 = 8;

/// The configured vehicle and receiver, in the units the checks use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest acceleration in any direction, m/s².
    pub accel_mps2: f64,
    /// Largest yaw rate, rad/s.
    pub yaw_rate_rps: f64,
    /// Position noise allowance at HDOP 1, metres.
    pub noise_m: f64,
}

impl Limits {
    pub fn of(cfg: &ValidateSettings) -> Self {
        Limits {
            accel_mps2: cfg.max_accel_mps2,
            yaw_rate_rps: cfg.max_yaw_rate_dps.to_radians(),
            noise_m: cfg.position_noise_m,
        }
    }
}

/// One comparison between fixes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Leg {
    /// How far the later fix lies outside what the vehicle could do, metres (0 inside).
    pub excess_m: f64,
    /// What noise and print rounding may add, metres.
    pub noise_m: f64,
    /// How much room the vehicle's own freedom leaves, metres.
    pub freedom_m: f64,
}

impl Leg {
    pub fn consistent(&self) -> bool {
        self.excess_m <= self.noise_m
    }

    pub fn informative(&self, lim: &Limits) -> bool {
        self.freedom_m <= INFORMATIVE_FACTOR * lim.noise_m
    }

    /// Evidence for the later fix.
    pub fn agrees(&self, lim: &Limits) -> bool {
        self.informative(lim) && self.consistent()
    }

    /// Evidence against it.
    pub fn contradicts(&self, lim: &Limits) -> bool {
        self.informative(lim) && !self.consistent()
    }
}

fn seconds(a: &Fix, b: &Fix) -> Option<f64> {
    let dt = b.time_ms.checked_sub(a.time_ms)? as f64 / 1000.0;
    (dt > 0.0).then_some(dt)
}

fn displacement(a: &Fix, b: &Fix) -> (f64, f64) {
    north_east_m(a.lat, a.lon, b.lat, b.lon)
}

/// Noise allowance of a comparison whose worst fix has HDOP `hdop`, with print step `step_m`.
fn noise_allowance(lim: &Limits, hdop: f64, step_m: f64) -> f64 {
    lim.noise_m * hdop.max(1.0) + 2.0 * step_m
}

fn worst_hdop(fixes: &[&Fix]) -> f64 {
    fixes.iter().filter_map(|f| f.hdop).fold(1.0, f64::max)
}

/// Path-length bounds and the heading freedom between two fixes with Doppler speeds.
struct Travel {
    /// Shortest and longest path, metres.
    s_lo: f64,
    s_hi: f64,
    /// Most the heading can stray from the chord over the leg, radians (at most π/2).
    half_turn: f64,
    /// `A·dt²/4 + σv·dt`: what speed changes between the samples can add or take.
    along: f64,
}

fn travel(v0: f64, v1: f64, dt: f64, lim: &Limits) -> Travel {
    let mean = 0.5 * (v0 + v1);
    let along = lim.accel_mps2 * dt * dt / 4.0 + SPEED_NOISE_MPS * dt;
    // The slowest the vehicle can have been in between: the yaw rate a tyre allows is A/v.
    let slowest = (v0.min(v1) - lim.accel_mps2 * dt / 2.0 - SPEED_NOISE_MPS).max(SLOWEST_MPS);
    let yaw = lim.yaw_rate_rps.min(lim.accel_mps2 / slowest);
    Travel {
        s_lo: (mean * dt - along).max(0.0),
        s_hi: mean * dt + along,
        half_turn: (yaw * dt / 2.0).min(core::f64::consts::FRAC_PI_2),
        along,
    }
}

/// `b` judged from `a` by `a`'s and `b`'s Doppler speed and course. `None` when either
/// lacks a speed, or `b` is not later.
pub fn doppler_leg(a: &Fix, b: &Fix, lim: &Limits, step_m: f64) -> Option<Leg> {
    let dt = seconds(a, b)?;
    let (v0, v1) = (a.speed_mps?.max(0.0), b.speed_mps?.max(0.0));
    let t = travel(v0, v1, dt, lim);
    let (north, east) = displacement(a, b);
    let noise_m = noise_allowance(lim, worst_hdop(&[a, b]), step_m);
    let courses = match (a.course_deg, b.course_deg) {
        (Some(c0), Some(c1)) if v0.min(v1) >= COURSE_MIN_SPEED_MPS => Some((c0, c1)),
        _ => None,
    };
    let leg = match courses {
        Some((c0, c1)) => {
            let (c0, c1) = (c0.to_radians(), c1.to_radians());
            let pred_n = 0.5 * dt * (v0 * c0.cos() + v1 * c1.cos());
            let pred_e = 0.5 * dt * (v0 * c0.sin() + v1 * c1.sin());
            let course_noise = (SPEED_NOISE_MPS / v0.min(v1)).atan();
            let swing = (t.half_turn + course_noise).min(core::f64::consts::FRAC_PI_2);
            let freedom_m = t.along + t.s_hi * swing.sin();
            let residual = (north - pred_n).hypot(east - pred_e);
            Leg {
                excess_m: (residual - freedom_m).max(0.0),
                noise_m,
                freedom_m,
            }
        }
        None => {
            let d = north.hypot(east);
            let d_lo = t.s_lo * t.half_turn.cos();
            Leg {
                excess_m: (d - t.s_hi).max(d_lo - d).max(0.0),
                noise_m,
                freedom_m: t.s_hi - d_lo,
            }
        }
    };
    Some(leg)
}

/// `n` judged by the line through `b` and `p` (positions only, no Doppler): constant
/// velocity from `b` to `p`, carried on to `n`. `None` unless the three are in time order.
pub fn smooth_leg(b: &Fix, p: &Fix, n: &Fix, lim: &Limits, step_m: f64) -> Option<Leg> {
    let (dt1, dt2) = (seconds(b, p)?, seconds(p, n)?);
    let (n1, e1) = displacement(b, p);
    let (n2, e2) = displacement(p, n);
    let ratio = dt2 / dt1;
    let residual = (n2 - n1 * ratio).hypot(e2 - e1 * ratio);
    // The velocity changes between the middles of the two intervals: by at most A·mid in
    // size, and its direction by at most Ω·mid.
    let mid = 0.5 * (dt1 + dt2);
    let speed = n1.hypot(e1) / dt1;
    let yaw = lim
        .yaw_rate_rps
        .min(lim.accel_mps2 / speed.max(SLOWEST_MPS));
    let swing = (yaw * mid).min(core::f64::consts::FRAC_PI_2);
    let freedom_m = lim.accel_mps2 * mid * dt2 + speed * dt2 * swing.sin();
    // Three noisy positions: `n` once, `p` (1 + ratio) times, `b` ratio times.
    let noise_m = (1.0 + ratio) * noise_allowance(lim, worst_hdop(&[b, p, n]), step_m);
    Some(Leg {
        excess_m: (residual - freedom_m).max(0.0),
        noise_m,
        freedom_m,
    })
}

/// `p` repeats `prev`'s printed position while both Doppler speeds guarantee a movement the
/// print would show.
pub fn frozen(prev: &Fix, p: &Fix, lim: &Limits, step_m: f64) -> bool {
    let Some(dt) = seconds(prev, p) else {
        return false;
    };
    let (Some(v0), Some(v1)) = (prev.speed_mps, p.speed_mps) else {
        return false;
    };
    let t = travel(v0.max(0.0), v1.max(0.0), dt, lim);
    let (north, east) = displacement(prev, p);
    // The same print: less than half a longitude step apart (a real step is a whole one).
    let same = north.hypot(east) <= 0.5 * step_m * p.lat.to_radians().cos();
    same && t.s_lo * t.half_turn.cos() >= 2.0 * step_m + FROZEN_MARGIN_M
}

/// Decimals of minutes needed to print `degrees` exactly (0 to 8).
pub fn minute_decimals(degrees: f64) -> u8 {
    let minutes = degrees.abs().fract() * 60.0;
    let mut scaled = minutes;
    for k in 0..MAX_DECIMALS {
        // A thousandth of the last digit: well above the rounding of a parsed f64 (about
        // 1e-13 minutes, 4e-5 of an eighth decimal), well below any real digit.
        if (scaled - scaled.round()).abs() < 1e-3 {
            return k;
        }
        scaled *= 10.0;
    }
    MAX_DECIMALS
}

/// A fix waiting for its successor.
#[derive(Debug, Clone, Copy)]
struct Held {
    fix: Fix,
    /// The otherwise-good fix before it (for smoothness).
    before: Option<Fix>,
    /// The anchor informatively contradicted it.
    contradicted: bool,
}

/// The motion check's state. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Motion {
    /// The last accepted fix.
    anchor: Option<Fix>,
    /// The last otherwise-good fix, whatever became of it.
    previous: Option<Fix>,
    held: Option<Held>,
    /// Most decimals of minutes seen: the receiver's print precision (a print with trailing
    /// zeros shows fewer, so the most seen converges on the truth within a few epochs).
    decimals: u8,
    /// The last held fix was accepted against its anchor's word, on the next fix's: that
    /// next fix may not now be accepted on the word of the fix it vouched for (two outliers
    /// in a row that happen to agree would carry each other), so it is held in turn.
    vouched: bool,
}

impl Motion {
    /// The print step of latitude, metres.
    pub fn step_m(&self) -> f64 {
        METRES_PER_MINUTE * 10f64.powi(-i32::from(self.decimals))
    }

    /// The fix held for a later verdict, if any.
    pub fn held(&self) -> Option<&Fix> {
        self.held.as_ref().map(|h| &h.fix)
    }

    /// Whether `fix`, a new otherwise-good fix, repeats the previous one's position while
    /// moving. If so it becomes the previous fix (a run of frozen epochs is caught epoch by
    /// epoch) and must be rejected; otherwise nothing changes. Call before anything else
    /// for each fix: a frozen fix neither decides the held one nor is judged further.
    pub fn frozen(&mut self, fix: &Fix, lim: &Limits) -> bool {
        // A flag for a fix that never arrived (it jumped) does not carry over.
        self.vouched = false;
        self.decimals = self
            .decimals
            .max(minute_decimals(fix.lat))
            .max(minute_decimals(fix.lon));
        let step = self.step_m();
        let is_frozen = self
            .previous
            .is_some_and(|prev| frozen(&prev, fix, lim, step));
        if is_frozen {
            self.previous = Some(*fix);
        }
        is_frozen
    }

    /// A new otherwise-good, not frozen fix, after the held one (if any) was decided
    /// ([`Motion::decide`]): true when it agrees with the anchor (accept now, it is the new
    /// anchor), false when it is held for the next one's verdict.
    pub fn arrive(&mut self, fix: &Fix, lim: &Limits) -> bool {
        let step = self.step_m();
        let before = self.previous.replace(*fix);
        let leg = self
            .anchor
            .as_ref()
            .and_then(|a| doppler_leg(a, fix, lim, step));
        if leg.is_some_and(|l| l.agrees(lim)) && !std::mem::take(&mut self.vouched) {
            self.anchor = Some(*fix);
            return true;
        }
        self.held = Some(Held {
            fix: *fix,
            before,
            contradicted: leg.is_some_and(|l| l.contradicts(lim)),
        });
        false
    }

    /// `fix` lies within what the anchor's and its own Doppler allow, however long the leg
    /// (an uninformative leg still bounds a far jump).
    pub fn on_track(&self, fix: &Fix, lim: &Limits) -> bool {
        self.anchor
            .as_ref()
            .and_then(|a| doppler_leg(a, fix, lim, self.step_m()))
            .is_some_and(|l| l.consistent())
    }

    /// The verdict on the held fix, given the next otherwise-good one (`None`: there will be
    /// none to judge by). Returns the held fix and whether it is accepted; it is no longer
    /// held. When accepted, it is the new anchor.
    pub fn decide(&mut self, next: Option<&Fix>, lim: &Limits) -> Option<(Fix, bool)> {
        let held = self.held.take()?;
        let step = self.step_m();
        let by_doppler = next.and_then(|n| doppler_leg(&held.fix, n, lim, step));
        let by_line = match (held.before, next) {
            (Some(b), Some(n)) => smooth_leg(&b, &held.fix, n, lim, step),
            _ => None,
        };
        let legs = [by_doppler, by_line];
        let accept = if legs.iter().flatten().any(|l| l.agrees(lim)) {
            true
        } else if legs.iter().flatten().any(|l| l.contradicts(lim)) {
            false
        } else {
            !held.contradicted
        };
        if accept {
            self.anchor = Some(held.fix);
            self.vouched = held.contradicted && next.is_some();
        }
        Some((held.fix, accept))
    }

    /// Start afresh around `fix` (a confirmed jump or time reset): anchor and previous.
    pub fn restart_at(&mut self, fix: &Fix) {
        self.anchor = Some(*fix);
        self.previous = Some(*fix);
        self.held = None;
        self.vouched = false;
    }

    /// Forget every earlier fix (a new timeline).
    pub fn reset(&mut self) {
        *self = Motion {
            decimals: self.decimals,
            ..Motion::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::FixMode;

    #[test]
    fn minute_decimals_reads_the_print_precision_back() {
        // 48°07.038' (3 decimals), 11°31.0000' (0), 8 decimals of an RTK receiver.
        assert_eq!(minute_decimals(48.0 + 7.038 / 60.0), 3);
        assert_eq!(minute_decimals(11.0 + 31.0 / 60.0), 0);
        assert_eq!(minute_decimals(-(121.0 + 18.844_677_7 / 60.0)), 7);
        assert_eq!(minute_decimals(44.0 + 4.130_602_41 / 60.0), 8);
        assert_eq!(minute_decimals(48.0 + 7.1234 / 60.0), 4);
    }

    /// Metres per degree on the sphere `north_east_m` uses.
    const M_PER_DEG: f64 = 111_194.926_644_558_74;

    /// A fix at `t_s` seconds, `north_m`/`east_m` from 48°N 11°E, Doppler `speed` and
    /// `course` (`None`: left empty, as receivers do standing still).
    fn at(t_s: f64, north_m: f64, east_m: f64, speed: f64, course: Option<f64>) -> Fix {
        Fix {
            time_ms: (t_s * 1000.0).round() as i64,
            lat: 48.0 + north_m / M_PER_DEG,
            lon: 11.0
                + east_m / (M_PER_DEG * (48.0f64 + 0.5 * north_m / M_PER_DEG).to_radians().cos()),
            alt_m: None,
            speed_mps: Some(speed),
            course_deg: course,
            hdop: Some(1.0),
            sats: Some(9),
            mode: FixMode::ThreeD,
            event: None,
        }
    }

    fn fix(t_s: f64, north_m: f64, speed: f64, course: f64) -> Fix {
        at(t_s, north_m, 0.0, speed, Some(course))
    }

    fn lim() -> Limits {
        Limits::of(&ValidateSettings::default())
    }

    /// The last position of `b` that `doppler_leg` from `a` still calls consistent, moving
    /// `b` away from where `a`'s and `b`'s Doppler put it along `(north, east)` (a unit
    /// vector), found by bisection to a millimetre.
    fn edge(a: &Fix, b: &Fix, dir: (f64, f64), step: f64) -> f64 {
        let moved = |d: f64| {
            let (n0, e0) = north_east_m(48.0, 11.0, b.lat, b.lon);
            Fix {
                hdop: b.hdop,
                ..at(
                    b.time_ms as f64 / 1000.0,
                    n0 + d * dir.0,
                    e0 + d * dir.1,
                    b.speed_mps.unwrap(),
                    b.course_deg,
                )
            }
        };
        let (mut lo, mut hi) = (0.0, 500.0);
        while hi - lo > 1e-3 {
            let mid = 0.5 * (lo + hi);
            if doppler_leg(a, &moved(mid), &lim(), step)
                .unwrap()
                .consistent()
            {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    #[test]
    fn moving_at_one_hertz_a_fix_may_stray_noise_plus_the_turn_and_speed_freedom() {
        // 14 m/s north, 1 s: along = A/4 + 0.3 = 2.8 m; slowest 14 - 5 - 0.3 = 8.7 m/s, so
        // the yaw limit is A/v = 1.149 rad/s (66°/s) capped at 60°/s: half turn 30° plus
        // course noise atan(0.3/14); freedom = 2.8 + (14 + 2.8)·sin(30° + 1.23°).
        let a = fix(0.0, 0.0, 14.0, 0.0);
        let b = fix(1.0, 14.0, 14.0, 0.0);
        let leg = doppler_leg(&a, &b, &lim(), 0.0).unwrap();
        let swing = 30f64.to_radians() + (0.3f64 / 14.0).atan();
        let freedom = 2.8 + 16.8 * swing.sin();
        assert!((leg.freedom_m - freedom).abs() < 1e-9, "{leg:?}");
        assert_eq!(leg.noise_m, 12.0);
        assert!(leg.informative(&lim()));
        // Sideways and ahead, the boundary is freedom + noise from the predicted point.
        for dir in [(0.0, 1.0), (1.0, 0.0), (-1.0, 0.0)] {
            let d = edge(&a, &b, dir, 0.0);
            assert!((d - (freedom + 12.0)).abs() < 0.01, "{dir:?}: {d}");
        }
    }

    #[test]
    fn moving_at_ten_hertz_noise_decides_and_hdop_widens_it() {
        let a = fix(0.0, 0.0, 14.0, 90.0);
        let mut b = at(0.1, 0.0, 1.4, 14.0, Some(90.0));
        let leg = doppler_leg(&a, &b, &lim(), 0.0).unwrap();
        // along = 10·0.01/4 + 0.03; half turn 3°.
        assert!(leg.freedom_m < 0.2, "{leg:?}");
        let d = edge(&a, &b, (1.0, 0.0), 0.0);
        assert!((d - (leg.freedom_m + 12.0)).abs() < 0.01, "{d}");
        // HDOP 2.5 on either end: 2.5 times the noise allowance.
        b.hdop = Some(2.5);
        let d = edge(&a, &b, (1.0, 0.0), 0.0);
        assert!((d - (leg.freedom_m + 30.0)).abs() < 0.01, "{d}");
        // A coarse print (2 decimals of minutes: 18.52 m steps) adds two steps.
        b.hdop = Some(1.0);
        let d = edge(&a, &b, (1.0, 0.0), 18.52);
        assert!((d - (leg.freedom_m + 12.0 + 37.04)).abs() < 0.01, "{d}");
    }

    #[test]
    fn parked_a_fix_may_wander_noise_plus_what_the_doppler_allows_in_any_direction() {
        for (dt, rate) in [(1.0, "1 Hz"), (0.1, "10 Hz")] {
            let a = at(0.0, 0.0, 0.0, 0.05, None);
            let b = at(dt, 0.0, 0.0, 0.07, None);
            // No course: the displacement's length must lie within [0, s_hi] plus noise.
            let s_hi = 0.06 * dt + 10.0 * dt * dt / 4.0 + 0.3 * dt;
            for dir in [(1.0, 0.0), (0.0, -1.0), (0.6, 0.8)] {
                let d = edge(&a, &b, dir, 0.0);
                assert!((d - (s_hi + 12.0)).abs() < 0.01, "{rate} {dir:?}: {d}");
            }
            let leg = doppler_leg(&a, &b, &lim(), 0.0).unwrap();
            assert!(leg.informative(&lim()), "{rate}");
        }
    }

    #[test]
    fn a_leg_is_informative_while_the_vehicles_freedom_stays_under_twice_the_noise() {
        // Parked: freedom = A·dt²/4 + (0.3 + 0.05)·dt <= 24 m up to dt ≈ 3.03 s.
        let a = at(0.0, 0.0, 0.0, 0.05, None);
        let informative = |dt: f64| {
            let b = at(dt, 0.0, 0.0, 0.05, None);
            doppler_leg(&a, &b, &lim(), 0.0)
                .unwrap()
                .informative(&lim())
        };
        assert!(informative(3.0));
        assert!(!informative(3.1));
        // Moving at 14 m/s the turn freedom adds up faster.
        for (dt, expect) in [(0.1, true), (1.0, true), (2.0, false)] {
            let a = fix(0.0, 0.0, 14.0, 0.0);
            let b = fix(dt, 14.0 * dt, 14.0, 0.0);
            let leg = doppler_leg(&a, &b, &lim(), 0.2).unwrap();
            assert!(leg.consistent(), "{dt}: {leg:?}");
            assert_eq!(leg.informative(&lim()), expect, "{dt}: {leg:?}");
        }
    }

    /// The slowest Doppler speed at which an unchanged print is called frozen, by
    /// bisection.
    fn frozen_from(dt: f64, step: f64) -> f64 {
        let stuck = |v: f64| frozen(&fix(0.0, 0.0, v, 0.0), &fix(dt, 0.0, v, 0.0), &lim(), step);
        let (mut lo, mut hi) = (0.0, 60.0);
        while hi - lo > 1e-4 {
            let mid = 0.5 * (lo + hi);
            if stuck(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }

    #[test]
    fn frozen_needs_a_guaranteed_movement_of_two_print_steps_and_a_margin() {
        let step = 1852e-4; // 4 decimals of minutes
        let need = 2.0 * step + FROZEN_MARGIN_M;
        // 1 Hz: s_lo = v - 2.8; the yaw limit (60°/s, the slowest speed being ~0) gives a
        // half turn of 30°: d_lo = (v - 2.8)·cos 30°.
        let v1 = frozen_from(1.0, step);
        assert!(
            (v1 - (2.8 + need / 30f64.to_radians().cos())).abs() < 1e-3,
            "{v1}"
        );
        // 10 Hz: s_lo = 0.1·v - 0.055, half turn 3°.
        let v10 = frozen_from(0.1, step);
        assert!(
            (v10 - (0.055 + need / 3f64.to_radians().cos()) / 0.1).abs() < 1e-3,
            "{v10}"
        );
        // The case (9 m/s) is caught at both rates; walking pace never is.
        assert!(v1 < 9.0 && v10 < 9.0);
        assert!(!frozen(
            &fix(0.0, 0.0, 1.4, 0.0),
            &fix(0.1, 0.0, 1.4, 0.0),
            &lim(),
            step
        ));
        // A receiver printing 2 decimals (18.5 m steps) is not frozen at city speeds.
        assert!(frozen_from(1.0, 18.52) > 40.0);
        // A position that moved by a print step is not the same print.
        let moved = fix(1.0, 0.3, 20.0, 0.0);
        assert!(!frozen(&fix(0.0, 0.0, 20.0, 0.0), &moved, &lim(), step));
        // Standing still, a repeated print is what a parked receiver does.
        assert!(!frozen(
            &at(0.0, 0.0, 0.0, 0.1, None),
            &at(1.0, 0.0, 0.0, 0.1, None),
            &lim(),
            step
        ));
    }

    #[test]
    fn the_line_through_two_fixes_vouches_for_a_third_within_noise_and_freedom() {
        // 10 Hz, 14 m/s east: b, p, n on a line.
        let b = at(0.0, 0.0, 0.0, 14.0, Some(90.0));
        let p = at(0.1, 0.0, 1.4, 14.0, Some(90.0));
        let n = at(0.2, 0.0, 2.8, 14.0, Some(90.0));
        let leg = smooth_leg(&b, &p, &n, &lim(), 0.0).unwrap();
        assert!(leg.agrees(&lim()), "{leg:?}");
        // Noise counts twice (three positions), freedom is A·mid·dt2 plus the turn.
        assert_eq!(leg.noise_m, 24.0);
        let off = at(0.2, 24.0 + leg.freedom_m + 0.01, 2.8, 14.0, Some(90.0));
        assert!(smooth_leg(&b, &p, &off, &lim(), 0.0)
            .unwrap()
            .contradicts(&lim()));
        let near = at(0.2, 24.0 + leg.freedom_m - 0.01, 2.8, 14.0, Some(90.0));
        assert!(smooth_leg(&b, &p, &near, &lim(), 0.0)
            .unwrap()
            .agrees(&lim()));
    }
}
