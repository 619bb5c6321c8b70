//! Which accepted fixes are kept (buffered and sent): the `[report]` policy, between
//! validation and the buffer.
//!
//! In: accepted fixes, in the order validation accepted them. Out: the kept ones, each at
//! most a few epochs after it arrived, with `event` set on stops and starts; the others are
//! counted as dropped. Pure logic: no I/O, no clock (every decision follows from the fixes'
//! receiver times, except [`Policy::silence`], which the driver calls when the receiver has
//! gone quiet), no allocation per fix.
//!
//! `mode = "all"` keeps every fix. `mode = "adaptive"` keeps what the back end needs to redraw
//! the drive within `max_error_m`:
//!
//! - **Error bound.** The back end redraws the track by interpolating linearly in time between
//!   consecutive kept fixes. Every accepted fix while moving lies within `max_error_m` of that
//!   track (the synchronized Euclidean distance). An opening window decides it online: the
//!   last kept fix is the window's origin, the cone of [`cone`] holds what the fixes since
//!   then allow, and a new fix that would leave one of them outside the bound makes the fix
//!   before it the next kept one. So a kept fix is decided one epoch late.
//! - **Intervals.** No two consecutive kept fixes are more than `max_interval_s` apart while
//!   moving, `parked_interval_s` while stopped (unless the receiver itself was silent longer).
//! - **Stops and starts, with hysteresis.** Speed below `stop_speed_mps` for `stop_after_s`
//!   keeps the fix where that became true, with `"event":"stop"`. While stopped, the error
//!   bound does not apply: position wander sends nothing, only the parked heartbeat. Moving
//!   again (speed at or above `stop_speed_mps`, or farther than [`LEAVE_FACTOR`] x
//!   `max_error_m` from where it stopped) for [`START_CONFIRM_MS`] keeps the first moving fix
//!   with `"event":"start"` (decided that much later); a shorter spike of speed or position
//!   sends nothing. Whatever the window must send while a start is being confirmed (the fix
//!   moved beyond the bound) confirms it.
//! - **Gaps and time jumps.** When the receiver time goes back, or more than [`GAP_MS`] (at
//!   most `max_interval_s`) pass between two accepted fixes (a tunnel, a receiver restart),
//!   the fixes on both sides are kept: nothing is interpolated across a silence. The driver
//!   calls [`Policy::silence`] when no fix came for that long by its own clock, so the last
//!   fix before a tunnel is sent without waiting for the first one after it.
//! - **Nothing pending is lost**: [`Policy::finish`] (shutdown, reload) keeps the fixes whose
//!   fate was not decided yet.
//!
//! Fixes without a speed from the receiver (GGA-only) use the speed between positions at
//! least a second apart.

pub mod cone;
pub mod measure;

use crate::config::{ReportMode, ReportSettings};
use crate::fix::{Event, Fix};
use cone::{distance_m, Cone, Directions, Frame};

/// A silence between accepted fixes longer than this (or than `max_interval_s`, if shorter)
/// is a gap: the fixes on both sides are kept. Five seconds: several lost epochs at 1 Hz (an
/// underpass, a tunnel), far more than jitter of any receiver rate.
pub const GAP_MS: i64 = 5_000;
/// Moving again must last this long (at most `stop_after_s`) before it is a start: a speed
/// spike of a parked receiver lasts an epoch or two.
pub const START_CONFIRM_MS: i64 = 2_000;
/// While stopped, a fix this many times `max_error_m` from where the vehicle stopped counts
/// as moving even when its speed says otherwise (creeping in a queue below `stop_speed_mps`).
pub const LEAVE_FACTOR: f64 = 3.0;
/// Speed from positions (receivers without a speed) is measured over at least this long, so
/// position noise of a 10 Hz receiver does not read as speed.
const DERIVED_SPEED_BASE_MS: i64 = 1_000;

/// The checked `[report]` settings in the units the policy works in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub adaptive: bool,
    pub max_error_m: f64,
    pub max_interval_ms: i64,
    pub parked_interval_ms: i64,
    pub stop_speed_mps: f64,
    pub stop_after_ms: i64,
}

impl Settings {
    /// `mode = "adaptive"` with this bound and the other keys at their documented defaults.
    pub fn adaptive(max_error_m: f64) -> Settings {
        Settings::from_config(&ReportSettings {
            mode: ReportMode::Adaptive,
            max_error_m,
            ..ReportSettings::default()
        })
    }

    /// The checked `[report]` in the policy's units (whole milliseconds; the check keeps
    /// every duration within a day, so the conversion is exact to the millisecond).
    pub fn from_config(cfg: &ReportSettings) -> Settings {
        let ms = |s: f64| (s * 1000.0).round() as i64;
        Settings {
            adaptive: cfg.mode == ReportMode::Adaptive,
            max_error_m: cfg.max_error_m,
            max_interval_ms: ms(cfg.max_interval_s),
            parked_interval_ms: ms(cfg.parked_interval_s),
            stop_speed_mps: cfg.stop_speed_mps,
            stop_after_ms: ms(cfg.stop_after_s),
        }
    }

    /// A silence longer than this is a gap.
    pub fn gap_ms(&self) -> i64 {
        GAP_MS.min(self.max_interval_ms)
    }

    /// How long moving again must last to be a start.
    pub fn start_confirm_ms(&self) -> i64 {
        START_CONFIRM_MS.min(self.stop_after_ms)
    }

    /// Distance from the stop beyond which a stopped vehicle is moving.
    pub fn leave_m(&self) -> f64 {
        LEAVE_FACTOR * self.max_error_m
    }
}

/// The fixes one call keeps, oldest first. At most four: the fixes pending before a gap (a
/// start being confirmed and the window's last fix), and the new fix itself.
pub type Kept = heapless::Vec<Fix, 4>;

/// Fixes decided so far. `accepted = kept + dropped + pending`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub kept: u64,
    pub dropped: u64,
}

#[derive(Debug, Clone, Copy)]
struct Departure {
    /// Receiver time of the first moving fix.
    since_ms: i64,
    fix: Fix,
    /// Already sent (as a heartbeat or beside a gap): the start then goes on the next fix
    /// sent.
    sent: bool,
}

#[derive(Debug, Clone, Copy)]
enum Motion {
    Moving {
        /// Receiver time of the first fix of the current run below `stop_speed_mps`.
        slow_since: Option<i64>,
    },
    Stopped {
        /// Where the vehicle stopped.
        rest: (f64, f64),
        departure: Option<Departure>,
    },
}

/// The cone's origin: the last kept fix, or the first fix of a start being confirmed.
#[derive(Debug, Clone, Copy)]
struct Origin {
    time_ms: i64,
    frame: Frame,
}

impl Origin {
    fn of(fix: &Fix) -> Origin {
        Origin {
            time_ms: fix.time_ms,
            frame: Frame::at(fix.lat, fix.lon),
        }
    }

    /// `(x, y, dt_s)` of a later fix.
    fn offset(&self, fix: &Fix) -> (f64, f64, f64) {
        let (x, y) = self.frame.metres(fix.lat, fix.lon);
        (x, y, (fix.time_ms - self.time_ms) as f64 / 1000.0)
    }
}

/// Speed for the stop and start rules: the receiver's, else from positions.
#[derive(Debug, Clone, Copy, Default)]
struct SpeedSource {
    base: Option<(i64, f64, f64)>,
    derived: Option<f64>,
}

impl SpeedSource {
    fn sample(&mut self, fix: &Fix) -> Option<f64> {
        if let Some(v) = fix.speed_mps.filter(|v| v.is_finite()) {
            self.base = Some((fix.time_ms, fix.lat, fix.lon));
            self.derived = Some(v);
            return Some(v);
        }
        match self.base {
            Some((t, lat, lon)) if fix.time_ms - t >= DERIVED_SPEED_BASE_MS => {
                let dt = (fix.time_ms - t) as f64 / 1000.0;
                self.derived = Some(distance_m(lat, lon, fix.lat, fix.lon) / dt);
                self.base = Some((fix.time_ms, fix.lat, fix.lon));
            }
            Some((t, ..)) if fix.time_ms >= t => {}
            _ => {
                self.base = Some((fix.time_ms, fix.lat, fix.lon));
                self.derived = None;
            }
        }
        self.derived
    }
}

/// The report stage. One per fix stream; rebuilt (after [`finish`](Self::finish)) when the
/// settings change.
#[derive(Debug, Clone)]
pub struct Policy {
    s: Settings,
    dirs: Directions,
    motion: Motion,
    /// The last kept fix.
    anchor: Option<Fix>,
    origin: Option<Origin>,
    cone: Cone,
    /// The newest fix after the origin, not decided yet: while moving, a valid end of the
    /// window; while stopped, the parked heartbeat if one falls due.
    candidate: Option<Fix>,
    /// Receiver time of the previous accepted fix.
    last_ms: Option<i64>,
    speed: SpeedSource,
    counts: Counts,
}

impl Policy {
    pub fn new(settings: Settings) -> Policy {
        Policy {
            s: settings,
            dirs: Directions::new(),
            motion: Motion::Moving { slow_since: None },
            anchor: None,
            origin: None,
            cone: Cone::open(),
            candidate: None,
            last_ms: None,
            speed: SpeedSource::default(),
            counts: Counts::default(),
        }
    }

    pub fn from_config(cfg: &ReportSettings) -> Policy {
        Policy::new(Settings::from_config(cfg))
    }

    pub fn settings(&self) -> &Settings {
        &self.s
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Fixes received whose fate is not decided yet (0 to 2).
    pub fn pending(&self) -> u64 {
        let departing = matches!(
            self.motion,
            Motion::Stopped {
                departure: Some(Departure { sent: false, .. }),
                ..
            }
        );
        u64::from(departing) + u64::from(self.candidate.is_some())
    }

    /// One accepted fix in; `out` gets the fixes kept by this step (its own or earlier ones),
    /// oldest first.
    pub fn push(&mut self, fix: &Fix, out: &mut Kept) {
        out.clear();
        if !self.s.adaptive {
            self.emit(*fix, None, out);
            return;
        }
        let fix = Fix {
            event: None,
            ..*fix
        };
        let speed = self.speed.sample(&fix);
        let Some(last) = self.last_ms.replace(fix.time_ms) else {
            self.motion = Motion::Moving {
                slow_since: self.is_slow(speed).then_some(fix.time_ms),
            };
            self.emit(fix, None, out);
            self.restart_cone_at(&fix);
            return;
        };
        let dt = fix.time_ms - last;
        if dt <= 0 || dt > self.s.gap_ms() {
            self.across_gap(fix, dt <= 0, speed, out);
        } else if matches!(self.motion, Motion::Moving { .. }) {
            self.moving(fix, speed, out);
        } else {
            self.stopped(fix, speed, out);
        }
    }

    /// The receiver has been quiet (no accepted fix) for a while by the driver's clock: keep
    /// what is pending, as the fixes before a gap are kept.
    pub fn silence(&mut self, out: &mut Kept) {
        out.clear();
        if self.s.adaptive {
            self.flush(out);
        }
    }

    /// End of the stream (shutdown, new settings): keep every fix not decided yet.
    pub fn finish(&mut self, out: &mut Kept) {
        self.silence(out);
    }

    fn is_slow(&self, speed: Option<f64>) -> bool {
        speed.is_some_and(|v| v < self.s.stop_speed_mps)
    }

    fn moving(&mut self, fix: Fix, speed: Option<f64>, out: &mut Kept) {
        let slow = speed.map(|v| v < self.s.stop_speed_mps);
        let stop_due = match &mut self.motion {
            Motion::Moving { slow_since } => {
                match slow {
                    Some(true) => {
                        slow_since.get_or_insert(fix.time_ms);
                    }
                    Some(false) => *slow_since = None,
                    // No speed at all yet: the run goes on as it was.
                    None => {}
                }
                slow_since.is_some_and(|s| fix.time_ms - s >= self.s.stop_after_ms)
            }
            Motion::Stopped { .. } => false,
        };
        self.advance(fix, out);
        if stop_due {
            // `advance` leaves the new fix as the window's end: a valid one to keep.
            self.candidate = None;
            self.emit(fix, Some(Event::Stop), out);
            self.restart_cone_at(&fix);
            self.motion = Motion::Stopped {
                rest: (fix.lat, fix.lon),
                departure: None,
            };
        }
    }

    fn stopped(&mut self, fix: Fix, speed: Option<f64>, out: &mut Kept) {
        let Motion::Stopped { rest, .. } = self.motion else {
            return;
        };
        let far = distance_m(rest.0, rest.1, fix.lat, fix.lon) > self.s.leave_m();
        let moving = far || speed.is_some_and(|v| v >= self.s.stop_speed_mps);
        self.parked_heartbeat(&fix, out);
        let Motion::Stopped { departure, .. } = &mut self.motion else {
            // The heartbeat had to send from a start being confirmed, which confirmed it.
            self.advance(fix, out);
            return;
        };
        match (departure.as_mut(), moving) {
            (None, false) => {
                if self.candidate.replace(fix).is_some() {
                    self.counts.dropped += 1;
                }
            }
            (None, true) => {
                if self.candidate.take().is_some() {
                    self.counts.dropped += 1;
                }
                *departure = Some(Departure {
                    since_ms: fix.time_ms,
                    fix,
                    sent: false,
                });
                self.restart_cone_at(&fix);
            }
            (Some(d), false) => {
                // A spike: the vehicle still stands. The start and the window behind it go.
                let unsent = u64::from(!d.sent);
                let window = u64::from(self.candidate.take().is_some());
                self.counts.dropped += unsent + window;
                *departure = None;
                self.candidate = Some(fix);
            }
            (Some(d), true) => {
                let since = d.since_ms;
                self.advance(fix, out);
                let still_departing = matches!(
                    self.motion,
                    Motion::Stopped {
                        departure: Some(_),
                        ..
                    }
                );
                if still_departing && fix.time_ms - since >= self.s.start_confirm_ms() {
                    self.confirm_start(out);
                }
            }
        }
    }

    /// While stopped: the newest pending fix is kept when the next would leave a longer gap
    /// than `parked_interval_s` after the last kept one.
    fn parked_heartbeat(&mut self, fix: &Fix, out: &mut Kept) {
        let Some(anchor) = self.anchor else { return };
        if fix.time_ms - anchor.time_ms <= self.s.parked_interval_ms {
            return;
        }
        if matches!(
            self.motion,
            Motion::Stopped {
                departure: Some(_),
                ..
            }
        ) {
            self.send_departure(out);
            // Only a receiver slower than the intervals gets here; the window's fix then
            // goes too, which confirms the start.
            let since_kept = fix.time_ms - self.anchor.map_or(fix.time_ms, |a| a.time_ms);
            if since_kept > self.s.parked_interval_ms {
                self.keep_candidate(out);
            }
        } else if let Some(c) = self.candidate.take() {
            self.emit(c, None, out);
            self.restart_cone_at(&c);
        }
    }

    /// The opening window: `fix` becomes its end if the cone admits it; otherwise the end
    /// before it is kept and the window starts again there. Also keeps the end before a fix
    /// that would stretch the window past `max_interval_s`.
    fn advance(&mut self, fix: Fix, out: &mut Kept) {
        let Some(origin) = self.origin else {
            self.emit(fix, None, out);
            self.restart_cone_at(&fix);
            return;
        };
        if fix.time_ms - origin.time_ms > self.s.max_interval_ms {
            self.keep_candidate(out);
        }
        let Some(origin) = self.origin else { return };
        let (mut x, mut y, mut dt) = origin.offset(&fix);
        if !self.cone.admits(&self.dirs, x, y, dt) {
            self.keep_candidate(out);
            if let Some(origin) = self.origin {
                (x, y, dt) = origin.offset(&fix);
            }
        }
        if self.candidate.replace(fix).is_some() {
            self.counts.dropped += 1;
        }
        let eps = self.s.max_error_m * cone::EPS_SHARE;
        self.cone.add(&self.dirs, x, y, dt, eps);
    }

    /// Keep the window's end (if any) and start the window there. From a start being
    /// confirmed, this confirms it: the vehicle moved beyond what the bound allows.
    fn keep_candidate(&mut self, out: &mut Kept) {
        let Some(c) = self.candidate.take() else {
            return;
        };
        let mut event = None;
        if let Motion::Stopped {
            departure: Some(d), ..
        } = self.motion
        {
            if d.sent {
                event = Some(Event::Start);
            } else {
                self.emit(d.fix, Some(Event::Start), out);
            }
            self.motion = Motion::Moving { slow_since: None };
        }
        self.emit(c, event, out);
        self.restart_cone_at(&c);
    }

    /// Moving again for long enough: the first moving fix is kept as the start (or, when it
    /// was already sent, the newest fix).
    fn confirm_start(&mut self, out: &mut Kept) {
        let Motion::Stopped {
            departure: Some(d), ..
        } = self.motion
        else {
            return;
        };
        self.motion = Motion::Moving { slow_since: None };
        if d.sent {
            if let Some(c) = self.candidate.take() {
                self.emit(c, Some(Event::Start), out);
                self.restart_cone_at(&c);
            }
        } else {
            // The window from the start fix holds; only the origin is now sent.
            self.emit(d.fix, Some(Event::Start), out);
        }
    }

    /// Keep everything pending, without deciding a start: the fixes before a gap, at
    /// shutdown, on a reload.
    fn flush(&mut self, out: &mut Kept) {
        self.send_departure(out);
        if let Some(c) = self.candidate.take() {
            self.emit(c, None, out);
            self.restart_cone_at(&c);
        }
    }

    /// Send the first fix of a start being confirmed, if not sent yet, without an event (the
    /// start is not decided). The cone keeps its origin: it is this fix.
    fn send_departure(&mut self, out: &mut Kept) {
        if let Motion::Stopped {
            departure: Some(d), ..
        } = &mut self.motion
        {
            if !d.sent {
                d.sent = true;
                let start = d.fix;
                self.emit(start, None, out);
            }
        }
    }

    fn across_gap(&mut self, fix: Fix, backwards: bool, speed: Option<f64>, out: &mut Kept) {
        self.flush(out);
        let slow = self.is_slow(speed);
        let mut event = None;
        match &mut self.motion {
            Motion::Moving { slow_since } => {
                if !slow {
                    *slow_since = None;
                } else if backwards || slow_since.is_none() {
                    // A new timeline: the slow run starts again from here.
                    *slow_since = Some(fix.time_ms);
                }
                if slow_since.is_some_and(|s| fix.time_ms - s >= self.s.stop_after_ms) {
                    event = Some(Event::Stop);
                    self.motion = Motion::Stopped {
                        rest: (fix.lat, fix.lon),
                        departure: None,
                    };
                }
            }
            Motion::Stopped { rest, departure } => {
                let far = distance_m(rest.0, rest.1, fix.lat, fix.lon) > self.s.leave_m();
                let moving = far || speed.is_some_and(|v| v >= self.s.stop_speed_mps);
                *departure = moving.then_some(Departure {
                    since_ms: fix.time_ms,
                    fix,
                    sent: true,
                });
            }
        }
        self.emit(fix, event, out);
        self.restart_cone_at(&fix);
    }

    fn emit(&mut self, fix: Fix, event: Option<Event>, out: &mut Kept) {
        let kept = Fix { event, ..fix };
        // Bounded by construction (see `Kept`); a full list would mean a logic error, and
        // losing the fix silently is the one thing not to do: count it as dropped instead.
        if out.push(kept).is_ok() {
            self.counts.kept += 1;
        } else {
            self.counts.dropped += 1;
        }
        self.anchor = Some(kept);
    }

    fn restart_cone_at(&mut self, fix: &Fix) {
        self.origin = Some(Origin::of(fix));
        self.cone = Cone::open();
    }
}

#[cfg(test)]
mod tests;
