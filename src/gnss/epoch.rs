//! Epoch assembly: the sentences that share one UTC time become one [`Epoch`], what the
//! receiver said about that instant, sentence by sentence, before any judgement.
//!
//! Validation (`crate::validate`) turns an `Epoch` into a `Fix` or a `Rejection`; this module
//! never judges, it only groups. An epoch is emitted once, when a sentence of a later time
//! arrives (or the input ends), never mixed with the next one.

use chrono::NaiveDate;

/// FAA mode indicator (NMEA 2.3+), on RMC, GLL, GNS and VTG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaaMode {
    Autonomous,
    Differential,
    Precise,
    RtkFixed,
    RtkFloat,
    /// E: dead reckoning.
    Estimated,
    /// M: manual input.
    Manual,
    /// S: simulator.
    Simulator,
    /// N: data not valid.
    NotValid,
    /// Vendor quirks (Quectel `C`, `U`): treated as valid, as gpsd does.
    Other,
}

impl FaaMode {
    /// E, M, S: a position the receiver did not measure.
    pub fn is_estimated(self) -> bool {
        matches!(self, FaaMode::Estimated | FaaMode::Manual | FaaMode::Simulator)
    }
}

/// RMC: status, position, speed, course, date.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RmcObs {
    /// Status `A` (true) or `V` (false).
    pub valid: bool,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub speed_knots: Option<f64>,
    pub course_deg: Option<f64>,
    pub faa_mode: Option<FaaMode>,
}

/// GGA: quality, position, satellites, HDOP, altitude.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GgaObs {
    /// Fix quality 0-8 (0 invalid, 1 GPS, 2 DGPS, 4/5 RTK, 6 estimated, 7 manual, 8 simulator).
    pub quality: u8,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub sats: Option<u8>,
    pub hdop: Option<f64>,
    /// Altitude above mean sea level, metres.
    pub alt_m: Option<f64>,
}

/// GNS: the multi-constellation GGA. `mode` is the best of its per-constellation mode letters.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GnsObs {
    pub mode: Option<FaaMode>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub sats: Option<u8>,
    pub hdop: Option<f64>,
    pub alt_m: Option<f64>,
}

/// GLL: position and status.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GllObs {
    pub valid: bool,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub faa_mode: Option<FaaMode>,
}

/// GSA (possibly several per epoch, one per constellation): the best fix mode and DOPs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GsaObs {
    /// 1 no fix, 2 2D, 3 3D: the highest seen in the epoch.
    pub fix_mode: u8,
    pub hdop: Option<f64>,
    pub pdop: Option<f64>,
    pub vdop: Option<f64>,
    /// Satellites listed as used, summed over the GSAs of the epoch.
    pub sats_used: u8,
}

/// VTG: course and speed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VtgObs {
    pub course_deg: Option<f64>,
    pub speed_knots: Option<f64>,
    pub faa_mode: Option<FaaMode>,
}

/// What the sentences of one UTC time said. Plain data, `Copy`, no heap.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Epoch {
    /// UTC time of day shared by the epoch's sentences, milliseconds since midnight.
    pub time_of_day_ms: Option<u32>,
    /// UTC date, from this epoch's RMC or ZDA, or carried from an earlier epoch (rolled over
    /// at midnight). `date_from_epoch` says which.
    pub date: Option<NaiveDate>,
    /// True when `date` came from a sentence of this epoch, false when carried forward.
    pub date_from_epoch: bool,
    pub rmc: Option<RmcObs>,
    pub gga: Option<GgaObs>,
    pub gns: Option<GnsObs>,
    pub gll: Option<GllObs>,
    pub gsa: Option<GsaObs>,
    pub vtg: Option<VtgObs>,
    /// Sentences that belonged here by order but were dropped (bad checksum and the like).
    pub dropped_sentences: u16,
}
