//! Why an epoch (or a sentence) did not become an accepted fix.
//!
//! The reason codes are part of the outside interface (`parse --all` output, `/health`
//! `components.gnss.rejected`, metrics labels): never rename one.

use serde::Serialize;

/// Reason codes of `../shared/spec/INTERFACE.md`, and those the README's validation section
/// adds to its list (`frozen`, `inconsistent`). New codes go at the end: the order is the
/// stable order of metrics and health maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A sentence failed its checksum (or had none where one is required).
    Checksum,
    /// The receiver said it has no fix (RMC `V`, GGA quality 0, GSA mode 1).
    NoFix,
    /// Dead reckoning, manual input or simulator (GGA quality 6-8, FAA mode E/M/S/N).
    Estimated,
    /// Sentences of one epoch contradict each other (positions or status apart).
    Disagree,
    /// A value outside its physical range (`crate::validate::ranges`), NaN or infinite.
    OutOfRange,
    /// 0,0: a receiver's way of saying nothing.
    NullIsland,
    /// HDOP above the configured maximum.
    Hdop,
    /// Fewer satellites than the configured minimum.
    Satellites,
    /// Implied speed from the previous fix above `max_speed_kmh`.
    SpeedJump,
    /// Time before 2020, or a GPS week-rollover date that was not corrected.
    TimeInvalid,
    /// Same time as, or earlier than, the previous accepted fix.
    DuplicateTime,
    /// Not enough in the epoch to make a fix (no position, no time or no date).
    Incomplete,
    /// The position repeats the previous epoch's while the receiver's speed says it moved.
    Frozen,
    /// The position is off the track its neighbours, the receiver's speed and course and
    /// the vehicle's limits allow.
    Inconsistent,
}

impl Reason {
    /// Every reason, in a stable order (for metrics and health maps).
    pub const ALL: [Reason; 14] = [
        Reason::Checksum,
        Reason::NoFix,
        Reason::Estimated,
        Reason::Disagree,
        Reason::OutOfRange,
        Reason::NullIsland,
        Reason::Hdop,
        Reason::Satellites,
        Reason::SpeedJump,
        Reason::TimeInvalid,
        Reason::DuplicateTime,
        Reason::Incomplete,
        Reason::Frozen,
        Reason::Inconsistent,
    ];

    /// The stable code, as in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Checksum => "checksum",
            Reason::NoFix => "no_fix",
            Reason::Estimated => "estimated",
            Reason::Disagree => "disagree",
            Reason::OutOfRange => "out_of_range",
            Reason::NullIsland => "null_island",
            Reason::Hdop => "hdop",
            Reason::Satellites => "satellites",
            Reason::SpeedJump => "speed_jump",
            Reason::TimeInvalid => "time_invalid",
            Reason::DuplicateTime => "duplicate_time",
            Reason::Incomplete => "incomplete",
            Reason::Frozen => "frozen",
            Reason::Inconsistent => "inconsistent",
        }
    }

    /// Index into [`Reason::ALL`], for fixed-size counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// An epoch that was not accepted, with whatever of time and position was known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rejection {
    pub reason: Reason,
    /// Receiver time, milliseconds since the Unix epoch (UTC), when date and time were known.
    pub time_ms: Option<i64>,
    /// The receiver's UTC time of day (ms) when it printed one, with or without a date (an
    /// epoch of GGA alone has no date): which epoch this was.
    pub time_of_day_ms: Option<u32>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// A short human explanation for logs (`"GGA quality 6"`); not a stable code.
    pub detail: &'static str,
}

impl Rejection {
    pub fn new(reason: Reason, detail: &'static str) -> Self {
        Rejection {
            reason,
            time_ms: None,
            time_of_day_ms: None,
            lat: None,
            lon: None,
            detail,
        }
    }
}

/// Counters by reason, fixed size (no allocation on the hot path).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReasonCounts([u64; Reason::ALL.len()]);

impl ReasonCounts {
    pub fn add(&mut self, reason: Reason) {
        self.0[reason.index()] += 1;
    }
    pub fn get(&self, reason: Reason) -> u64 {
        self.0[reason.index()]
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    /// Non-zero counts, in the stable order of [`Reason::ALL`].
    pub fn iter(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        Reason::ALL
            .iter()
            .map(|r| (*r, self.get(*r)))
            .filter(|(_, n)| *n > 0)
    }
}
