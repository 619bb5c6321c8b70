//! What one sentence says, once parsed: small `Copy` observations (`RmcObs`, `GgaObs`, ...)
//! with the receiver's own units and no judgement. `sentence` makes them from NMEA text;
//! `epoch` groups the observations of one UTC time into an `Epoch`.

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
        matches!(
            self,
            FaaMode::Estimated | FaaMode::Manual | FaaMode::Simulator
        )
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
    /// Fix quality 0-8 (0 invalid, 1 GPS, 2 DGPS, 4/5 RTK, 6 estimated, 7 manual, 8 simulator);
    /// `None` when the field was empty (it then says nothing about the fix).
    pub quality: Option<u8>,
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
    /// Satellites listed as used, over the GSAs of the epoch, each once.
    pub used: UsedSats,
}

impl GsaObs {
    /// How many distinct satellites the epoch's GSAs list as used.
    pub fn sats_used(&self) -> u8 {
        self.used.len()
    }
}

/// GNSS system of a GSA, as NMEA 4.10's system id numbers them (1 GPS, 2 GLONASS, 3 Galileo,
/// 4 BeiDou, 5 QZSS, 6 NavIC); 0 when neither the sentence nor its talker says (a `GN`
/// talker before 4.10, whose PRN ranges keep the systems apart).
pub type GnssSystem = u8;

/// The satellites an epoch's GSAs list as used, each once, keyed by system and PRN. Receivers
/// repeat a constellation under two talkers (Quectel EG25-G sends `$GPGSA` and
/// `$GNGSA,...,1` with the same PRNs); summing the GSAs would count those satellites twice.
/// Fixed size and `Copy`: no heap per epoch. Beyond 64 satellites the rest are not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsedSats {
    keys: [u16; Self::MAX],
    len: u8,
}

impl Default for UsedSats {
    fn default() -> Self {
        UsedSats {
            keys: [0; Self::MAX],
            len: 0,
        }
    }
}

impl UsedSats {
    pub const MAX: usize = 64;

    /// The satellites `prns` of `system`.
    pub fn from_prns(system: GnssSystem, prns: impl IntoIterator<Item = u32>) -> UsedSats {
        let mut used = UsedSats::default();
        for prn in prns {
            used.insert(system, prn);
        }
        used
    }

    pub fn insert(&mut self, system: GnssSystem, prn: u32) {
        let key = (u16::from(system & 0x3F) << 10) | prn.min(1023) as u16;
        let len = usize::from(self.len);
        if len < Self::MAX && !self.keys[..len].contains(&key) {
            self.keys[len] = key;
            self.len += 1;
        }
    }

    pub fn merge(&mut self, other: &UsedSats) {
        for &key in &other.keys[..usize::from(other.len)] {
            self.insert((key >> 10) as u8, u32::from(key & 0x3FF));
        }
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// VTG: course and speed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VtgObs {
    pub course_deg: Option<f64>,
    pub speed_knots: Option<f64>,
    pub faa_mode: Option<FaaMode>,
}
