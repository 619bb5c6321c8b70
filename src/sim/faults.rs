//! Labelled receiver faults: epochs that say something wrong with a valid checksum, each
//! carrying its label in [`super::SimEpoch::fault`] so a test can score what the agent
//! caught, kind by kind.
//!
//! In: the reading of an epoch (noise already applied) and the drive's state. Out: the
//! fault chosen for the epoch, if any, and its lines as printed. About `rate` of the epochs
//! with a fix get one fault each, the kind drawn evenly among those that fit the moment (a
//! frozen position needs a moving car; a repeated time needs an epoch before it). Faults
//! are printed as receivers print them: a changed reading goes through the ordinary
//! sentence printer, a changed field is rewritten in the printed line with a new checksum.
//! Its own random stream of the seed: the route and the noise stay the same with faults
//! on or off.

use core::fmt::Write as _;

use chrono::{DateTime, Datelike};

use super::rng::SplitMix64;
use super::sentences::{self, checksum, Line, Overflow, Reading, SentenceKind};

/// What went wrong in one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// The receiver repeats the last position with a new time while its speed says it
    /// moves (it lost the fix and keeps the last solution): runs of 1-3 epochs.
    Frozen,
    /// One epoch displaced 40-90 m (urban multipath), driving or standing.
    NearJump,
    /// One epoch displaced 2-30 km.
    FarJump,
    /// Position 0,0 with a valid status.
    NullIsland,
    /// Dead reckoning: GGA quality 6, FAA mode E.
    DeadReckoning,
    /// RMC status V, GGA quality 0, GSA no fix, the position still printed.
    StatusV,
    /// HDOP 12-40.
    HighHdop,
    /// One or two satellites.
    FewSatellites,
    /// RMC's position 300 m to 3 km from GGA's.
    Disagree,
    /// The epoch prints the time the previous epoch printed (its position is the new one).
    RepeatedTime,
    /// The date 1024 weeks early (an old firmware's GPS week rollover): must be corrected,
    /// the fix accepted with the right date.
    WeekRollover,
}

impl FaultKind {
    pub const ALL: [FaultKind; 11] = [
        FaultKind::Frozen,
        FaultKind::NearJump,
        FaultKind::FarJump,
        FaultKind::NullIsland,
        FaultKind::DeadReckoning,
        FaultKind::StatusV,
        FaultKind::HighHdop,
        FaultKind::FewSatellites,
        FaultKind::Disagree,
        FaultKind::RepeatedTime,
        FaultKind::WeekRollover,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Frozen => "frozen",
            FaultKind::NearJump => "near_jump",
            FaultKind::FarJump => "far_jump",
            FaultKind::NullIsland => "null_island",
            FaultKind::DeadReckoning => "dead_reckoning",
            FaultKind::StatusV => "status_v",
            FaultKind::HighHdop => "high_hdop",
            FaultKind::FewSatellites => "few_satellites",
            FaultKind::Disagree => "disagree",
            FaultKind::RepeatedTime => "repeated_time",
            FaultKind::WeekRollover => "week_rollover",
        }
    }

    /// The reason codes that catch this fault (the agent's `Reason::as_str`); empty for a
    /// fault the agent must correct and accept (week rollover).
    pub fn caught_as(self) -> &'static [&'static str] {
        match self {
            FaultKind::Frozen => &["frozen"],
            // At 10 Hz, 40 m in 0.1 s is also far beyond `max_speed_kmh`.
            FaultKind::NearJump => &["inconsistent", "speed_jump"],
            FaultKind::FarJump => &["speed_jump"],
            FaultKind::NullIsland => &["null_island"],
            FaultKind::DeadReckoning => &["estimated"],
            FaultKind::StatusV => &["no_fix"],
            FaultKind::HighHdop => &["hdop"],
            FaultKind::FewSatellites => &["satellites"],
            FaultKind::Disagree => &["disagree"],
            // When the epoch whose time is repeated was itself displaced (a near or far
            // jump), the repeat is two positions far apart for one time.
            FaultKind::RepeatedTime => &["duplicate_time", "disagree"],
            FaultKind::WeekRollover => &[],
        }
    }
}

/// How many faults, of which kinds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultSpec {
    /// Share of the epochs with a fix that get a fault, `0..=0.25`.
    pub rate: f64,
    /// The kinds drawn from (evenly, among those that fit the moment).
    pub kinds: &'static [FaultKind],
}

impl Default for FaultSpec {
    /// About 3% of epochs, every kind.
    fn default() -> Self {
        FaultSpec {
            rate: 0.03,
            kinds: &FaultKind::ALL,
        }
    }
}

impl FaultSpec {
    pub(crate) fn is_valid(&self) -> bool {
        (0.0..=0.25).contains(&self.rate) && !self.kinds.is_empty()
    }
}

/// The car must move at least this fast (m/s) for a frozen position to be a fault the
/// receiver's speed gives away (about 30 km/h: receivers lose the fix and keep the last
/// solution while driving).
const FROZEN_MIN_SPEED_MPS: f64 = 8.0;
/// No fault in the first epochs of a drive: the receiver has just started.
const SETTLE_EPOCHS: u32 = 10;
/// One GPS week-number rollover, days.
const ROLLOVER_DAYS: i64 = 1024 * 7;
const METRES_PER_DEGREE: f64 = 111_194.93;

/// The injector's state across a drive.
#[derive(Debug, Clone)]
pub(crate) struct Injector {
    spec: FaultSpec,
    rng: SplitMix64,
    /// Epochs of a frozen run still to come.
    frozen_left: u8,
    /// Position and altitude printed by the last clean epoch with a fix (what a frozen
    /// receiver repeats), and the time that epoch printed.
    last_clean: Option<(f64, f64, f64)>,
    /// The time the previous epoch printed.
    previous_time_ms: Option<i64>,
    /// The previous epoch's fault.
    previous: Option<FaultKind>,
}

/// One epoch's fault, with what it needs to print.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fault {
    pub kind: FaultKind,
    /// Displacement (north, east) in metres for jumps and the disagreeing RMC.
    offset_m: (f64, f64),
    /// HDOP or satellites printed instead.
    value: f64,
    /// The time printed.
    time_ms: i64,
}

impl Injector {
    pub(crate) fn new(spec: FaultSpec, rng: SplitMix64) -> Self {
        Injector {
            spec,
            rng,
            frozen_left: 0,
            last_clean: None,
            previous_time_ms: None,
            previous: None,
        }
    }

    /// The fault of epoch `index` with reading `r` (`None`: a clean epoch). Call once per
    /// epoch, in order.
    pub(crate) fn choose(&mut self, index: u32, r: &Reading) -> Option<Fault> {
        let fault = self.pick(index, r);
        if r.fix && fault.is_none() {
            self.last_clean = Some((r.lat, r.lon, r.alt_m));
        }
        if fault.is_none_or(|f| f.kind != FaultKind::Frozen) {
            self.frozen_left = 0;
        }
        self.previous = fault.map(|f| f.kind);
        self.previous_time_ms = Some(fault.map_or(r.time_ms, |f| f.time_ms));
        fault
    }

    fn pick(&mut self, index: u32, r: &Reading) -> Option<Fault> {
        if !r.fix || index < SETTLE_EPOCHS {
            return None;
        }
        let moving = r.speed_mps >= FROZEN_MIN_SPEED_MPS;
        if self.frozen_left > 0 && moving {
            self.frozen_left -= 1;
            return Some(self.fault(FaultKind::Frozen, r.time_ms));
        }
        if !self.rng.chance(self.spec.rate) {
            return None;
        }
        let fits = |kind: &FaultKind| match kind {
            FaultKind::Frozen => moving && self.previous.is_none() && self.last_clean.is_some(),
            FaultKind::RepeatedTime => self.previous_time_ms.is_some(),
            _ => true,
        };
        let n = self.spec.kinds.iter().filter(|k| fits(k)).count();
        let pick = self.rng.below(u32::try_from(n).ok()?) as usize;
        let kind = *self.spec.kinds.iter().filter(|k| fits(k)).nth(pick)?;
        if kind == FaultKind::Frozen {
            // This epoch and 0-2 more.
            self.frozen_left = self.rng.below(3) as u8;
        }
        Some(self.fault(kind, r.time_ms))
    }

    fn fault(&mut self, kind: FaultKind, time_ms: i64) -> Fault {
        let bearing = self.rng.range(0.0, core::f64::consts::TAU);
        let distance = match kind {
            FaultKind::NearJump => self.rng.range(40.0, 90.0),
            FaultKind::FarJump => self.rng.range(2_000.0, 30_000.0),
            FaultKind::Disagree => self.rng.range(300.0, 3_000.0),
            _ => 0.0,
        };
        let value = match kind {
            FaultKind::HighHdop => self.rng.range(12.0, 40.0),
            FaultKind::FewSatellites => f64::from(1 + self.rng.below(2)),
            _ => 0.0,
        };
        Fault {
            kind,
            offset_m: (distance * bearing.cos(), distance * bearing.sin()),
            value,
            time_ms: match (kind, self.previous_time_ms) {
                (FaultKind::RepeatedTime, Some(previous)) => previous,
                _ => time_ms,
            },
        }
    }

    /// Print sentence `kind` of reading `r` as the fault has it.
    pub(crate) fn print(
        &self,
        kind: SentenceKind,
        r: &Reading,
        fault: &Fault,
    ) -> Result<Line, Overflow> {
        let mut reading = Reading {
            time_ms: fault.time_ms,
            ..*r
        };
        match fault.kind {
            FaultKind::Frozen => {
                if let Some((lat, lon, alt)) = self.last_clean {
                    (reading.lat, reading.lon, reading.alt_m) = (lat, lon, alt);
                }
            }
            FaultKind::NearJump | FaultKind::FarJump => displace(&mut reading, fault.offset_m),
            FaultKind::Disagree if kind == SentenceKind::Rmc => {
                displace(&mut reading, fault.offset_m)
            }
            FaultKind::NullIsland => (reading.lat, reading.lon) = (0.0, 0.0),
            _ => {}
        }
        let line = sentences::sentence(kind, &reading)?;
        // At most one field of one sentence changes; its new text is written here.
        let mut text: heapless::String<16> = heapless::String::new();
        let field = match (fault.kind, kind) {
            (FaultKind::DeadReckoning, SentenceKind::Gga) => Some((5, "6")),
            (FaultKind::DeadReckoning, SentenceKind::Rmc) => Some((11, "E")),
            (FaultKind::DeadReckoning, SentenceKind::Vtg) => Some((8, "E")),
            (FaultKind::StatusV, SentenceKind::Rmc) => Some((1, "V")),
            (FaultKind::StatusV, SentenceKind::Gga) => Some((5, "0")),
            (FaultKind::StatusV, SentenceKind::Gsa) => Some((1, "1")),
            (FaultKind::HighHdop, SentenceKind::Gga | SentenceKind::Gsa) => {
                write!(text, "{:.2}", fault.value)?;
                Some((if kind == SentenceKind::Gga { 7 } else { 15 }, ""))
            }
            (FaultKind::FewSatellites, SentenceKind::Gga) => {
                write!(text, "{:02}", fault.value as u8)?;
                Some((6, ""))
            }
            (FaultKind::WeekRollover, SentenceKind::Rmc) => {
                let early = r.time_ms - ROLLOVER_DAYS * 86_400_000;
                let t = DateTime::from_timestamp_millis(early).ok_or(Overflow)?;
                write!(
                    text,
                    "{:02}{:02}{:02}",
                    t.day(),
                    t.month(),
                    t.year().rem_euclid(100)
                )?;
                Some((8, ""))
            }
            _ => None,
        };
        match field {
            Some((index, fixed)) => {
                let value = if text.is_empty() {
                    fixed
                } else {
                    text.as_str()
                };
                rewrite(&line, index, value)
            }
            None => Ok(line),
        }
    }
}

/// Move the reading `(north, east)` metres.
fn displace(r: &mut Reading, (north, east): (f64, f64)) {
    r.lat += north / METRES_PER_DEGREE;
    r.lon += east / (METRES_PER_DEGREE * r.lat.to_radians().cos());
}

/// `line` with data field `index` (0 being the field after the address) replaced by `value`
/// and its checksum made right again.
fn rewrite(line: &Line, index: usize, value: &str) -> Result<Line, Overflow> {
    let star = line.find('*').ok_or(Overflow)?;
    let body = line.get(1..star).ok_or(Overflow)?;
    let mut out = Line::new();
    out.push('$').map_err(|_| Overflow)?;
    for (i, field) in body.split(',').enumerate() {
        if i > 0 {
            out.push(',').map_err(|_| Overflow)?;
        }
        let text = if i == index + 1 { value } else { field };
        out.push_str(text).map_err(|_| Overflow)?;
    }
    let sum = checksum(out.as_bytes().get(1..).unwrap_or_default());
    write!(out, "*{sum:02X}\r\n")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_field_gets_a_right_checksum() {
        let line: Line =
            "$GPGGA,080000.00,4808.2292,N,01134.5674,E,1,09,1.16,519.0,M,47.0,M,,*5B\r\n"
                .try_into()
                .unwrap();
        let out = rewrite(&line, 7, "25.00").unwrap();
        assert!(out.starts_with("$GPGGA,080000.00,4808.2292,N,01134.5674,E,1,09,25.00,519.0,"));
        let star = out.find('*').unwrap();
        let sum = checksum(&out.as_bytes()[1..star]);
        assert_eq!(&out[star + 1..star + 3], format!("{sum:02X}"));
        assert!(out.ends_with("\r\n"));
    }

    #[test]
    fn every_kind_has_a_name_and_all_but_rollover_a_catching_reason() {
        for kind in FaultKind::ALL {
            assert!(!kind.as_str().is_empty());
            assert_eq!(
                kind.caught_as().is_empty(),
                kind == FaultKind::WeekRollover,
                "{kind:?}"
            );
        }
    }
}
