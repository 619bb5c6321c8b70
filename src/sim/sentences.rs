//! NMEA 0183 output of the simulator: the sentences a receiver prints for one epoch, with
//! their checksums, and the ways a line gets damaged on the wire.
//!
//! In: what the receiver knows at an instant ([`Reading`]). Out: finished lines
//! (`$...*hh\r\n`) in fixed-capacity strings. Formats follow NMEA 0183 2.3 as u-blox and
//! most chipsets print it: `hhmmss.ss`, `ddmm.mmmm`/`dddmm.mmmm` with `N/S/E/W`, `ddmmyy`,
//! speed in knots. This module never decides what the receiver knows; it only prints it.

use core::fmt::Write as _;

use chrono::{DateTime, Datelike};

use super::rng::SplitMix64;

/// Longest line this module can print, `$` to `\n`. NMEA says 82; RTK-like precision
/// (8 decimals of minutes) goes past that, as real RTK receivers do.
pub const LINE_CAPACITY: usize = 96;

/// One printed line, `$` to `\r\n`, ASCII only.
pub type Line = heapless::String<LINE_CAPACITY>;

/// Metres per second in one knot (1852 m / 3600 s).
pub const MPS_PER_KNOT: f64 = 1852.0 / 3600.0;

/// The sentences of one epoch, in the order receivers send them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SentenceKind {
    Rmc,
    Gga,
    Gsa,
    Vtg,
}

impl SentenceKind {
    pub const ALL: [SentenceKind; 4] = [
        SentenceKind::Rmc,
        SentenceKind::Gga,
        SentenceKind::Gsa,
        SentenceKind::Vtg,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SentenceKind::Rmc => "RMC",
            SentenceKind::Gga => "GGA",
            SentenceKind::Gsa => "GSA",
            SentenceKind::Vtg => "VTG",
        }
    }
}

/// How a line was damaged on its way from the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Corruption {
    /// One digit between `$` and `*` changed into another digit: plausible data that only the
    /// checksum can catch.
    FlippedByte,
    /// The two checksum digits do not match the body.
    BadChecksum,
    /// The line stops early, before its `*hh`, and ends with `\r\n` (a receiver that flushed
    /// a half-written line). Caught by requiring a checksum (`gnss.require_checksum`).
    Truncated,
}

impl Corruption {
    /// Choose one kind, evenly.
    pub(crate) fn pick(rng: &mut SplitMix64) -> Corruption {
        match rng.below(3) {
            0 => Corruption::FlippedByte,
            1 => Corruption::BadChecksum,
            _ => Corruption::Truncated,
        }
    }
}

/// What the receiver knows at one epoch, as it will print it: a [`Drive`](super::Drive)
/// makes one per epoch; [`super::write_reading`] prints one made elsewhere.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// UTC, milliseconds since the Unix epoch (printed to the 10 ms `hhmmss.ss` says).
    pub time_ms: i64,
    /// A fix: without one, positions are printed empty and the statuses say so.
    pub fix: bool,
    pub lat: f64,
    pub lon: f64,
    pub alt_m: f64,
    /// Geoid separation printed in GGA (metres, above ellipsoid).
    pub geoid_sep_m: f64,
    pub speed_mps: f64,
    /// `None` while standing still: receivers leave course empty when it means nothing.
    pub course_deg: Option<f64>,
    pub sats: u8,
    pub hdop: f64,
    /// PRNs used in the fix, first `sats` of them.
    pub prns: [u8; 12],
    pub talker: [u8; 2],
    /// Decimals of minutes in latitude and longitude.
    pub precision: u8,
}

impl Reading {
    /// A fix at `lat`, `lon` at `time_ms` as an ordinary GPS receiver prints it: standing
    /// still at sea level, 8 satellites, HDOP 1, 4 decimals of minutes.
    pub fn new(time_ms: i64, lat: f64, lon: f64) -> Reading {
        Reading {
            time_ms,
            fix: true,
            lat,
            lon,
            alt_m: 0.0,
            geoid_sep_m: super::GEOID_SEPARATION_M,
            speed_mps: 0.0,
            course_deg: None,
            sats: 8,
            hdop: 1.0,
            prns: [2, 5, 7, 9, 13, 15, 18, 21, 24, 26, 29, 30],
            talker: *b"GP",
            precision: 4,
        }
    }
}

/// Why a line could not be printed: only a spec this module was never meant to see (checked
/// by the drive's constructor), so the caller logs and skips it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overflow;

impl From<core::fmt::Error> for Overflow {
    fn from(_: core::fmt::Error) -> Self {
        Overflow
    }
}

/// XOR of the bytes between `$` and `*`, as NMEA defines the checksum.
pub fn checksum(body: &[u8]) -> u8 {
    body.iter().fold(0u8, |acc, b| acc ^ b)
}

/// Print one sentence of the reading, `$` to `\r\n`.
pub(crate) fn sentence(kind: SentenceKind, r: &Reading) -> Result<Line, Overflow> {
    let mut line = Line::new();
    line.push('$').map_err(|_| Overflow)?;
    for b in r.talker {
        line.push(char::from(b)).map_err(|_| Overflow)?;
    }
    line.push_str(kind.as_str()).map_err(|_| Overflow)?;
    match kind {
        SentenceKind::Rmc => rmc(&mut line, r)?,
        SentenceKind::Gga => gga(&mut line, r)?,
        SentenceKind::Gsa => gsa(&mut line, r)?,
        SentenceKind::Vtg => vtg(&mut line, r)?,
    }
    let sum = checksum(line.as_bytes().get(1..).unwrap_or_default());
    write!(line, "*{sum:02X}\r\n")?;
    Ok(line)
}

/// `$xxRMC,time,status,lat,N,lon,E,knots,course,ddmmyy,magvar,E/W,mode`
fn rmc(line: &mut Line, r: &Reading) -> Result<(), Overflow> {
    line.push(',').map_err(|_| Overflow)?;
    time_of_day(line, r.time_ms)?;
    if r.fix {
        line.push_str(",A,").map_err(|_| Overflow)?;
        coordinate(line, r.lat, 2, r.precision, 'N', 'S')?;
        line.push(',').map_err(|_| Overflow)?;
        coordinate(line, r.lon, 3, r.precision, 'E', 'W')?;
        write!(line, ",{:.3},", r.speed_mps / MPS_PER_KNOT)?;
        if let Some(c) = r.course_deg {
            write!(line, "{c:.2}")?;
        }
        line.push(',').map_err(|_| Overflow)?;
        date(line, r.time_ms)?;
        line.push_str(",,,A").map_err(|_| Overflow)?;
    } else {
        // A receiver without a fix still knows the time from its clock; position fields are
        // empty and the FAA mode says "not valid".
        line.push_str(",V,,,,,,,").map_err(|_| Overflow)?;
        date(line, r.time_ms)?;
        line.push_str(",,,N").map_err(|_| Overflow)?;
    }
    Ok(())
}

/// `$xxGGA,time,lat,N,lon,E,quality,sats,hdop,alt,M,geoid,M,age,station`
fn gga(line: &mut Line, r: &Reading) -> Result<(), Overflow> {
    line.push(',').map_err(|_| Overflow)?;
    time_of_day(line, r.time_ms)?;
    if r.fix {
        line.push(',').map_err(|_| Overflow)?;
        coordinate(line, r.lat, 2, r.precision, 'N', 'S')?;
        line.push(',').map_err(|_| Overflow)?;
        coordinate(line, r.lon, 3, r.precision, 'E', 'W')?;
        write!(
            line,
            ",1,{:02},{:.2},{:.1},M,{:.1},M,,",
            r.sats, r.hdop, r.alt_m, r.geoid_sep_m
        )?;
    } else {
        line.push_str(",,,,,0,00,99.99,,,,,,")
            .map_err(|_| Overflow)?;
    }
    Ok(())
}

/// `$xxGSA,A,mode,prn x12,pdop,hdop,vdop`
fn gsa(line: &mut Line, r: &Reading) -> Result<(), Overflow> {
    let used = if r.fix {
        usize::from(r.sats.min(12))
    } else {
        0
    };
    line.push_str(if r.fix { ",A,3" } else { ",A,1" })
        .map_err(|_| Overflow)?;
    for (i, prn) in r.prns.iter().enumerate() {
        if i < used {
            write!(line, ",{prn:02}")?;
        } else {
            line.push(',').map_err(|_| Overflow)?;
        }
    }
    if r.fix {
        // PDOP and VDOP in their usual proportion to HDOP for a car's open sky.
        write!(
            line,
            ",{:.2},{:.2},{:.2}",
            r.hdop * 1.6,
            r.hdop,
            r.hdop * 1.25
        )?;
    } else {
        line.push_str(",99.99,99.99,99.99").map_err(|_| Overflow)?;
    }
    Ok(())
}

/// `$xxVTG,course,T,,M,knots,N,kmh,K,mode`
fn vtg(line: &mut Line, r: &Reading) -> Result<(), Overflow> {
    if r.fix {
        line.push(',').map_err(|_| Overflow)?;
        if let Some(c) = r.course_deg {
            write!(line, "{c:.2}")?;
        }
        write!(
            line,
            ",T,,M,{:.3},N,{:.3},K,A",
            r.speed_mps / MPS_PER_KNOT,
            r.speed_mps * 3.6
        )?;
    } else {
        line.push_str(",,T,,M,,N,,K,N").map_err(|_| Overflow)?;
    }
    Ok(())
}

/// `hhmmss.ss` of the UTC time of day.
fn time_of_day(line: &mut Line, time_ms: i64) -> Result<(), Overflow> {
    let tod = time_ms.rem_euclid(86_400_000);
    let (h, m, s, cs) = (
        tod / 3_600_000,
        tod / 60_000 % 60,
        tod / 1000 % 60,
        tod % 1000 / 10,
    );
    write!(line, "{h:02}{m:02}{s:02}.{cs:02}")?;
    Ok(())
}

/// `ddmmyy` of the UTC date. Times outside chrono's range are refused by the drive's
/// constructor; should one get here, the field stays empty, as a receiver without a date.
fn date(line: &mut Line, time_ms: i64) -> Result<(), Overflow> {
    if let Some(t) = DateTime::from_timestamp_millis(time_ms) {
        write!(
            line,
            "{:02}{:02}{:02}",
            t.day(),
            t.month(),
            t.year().rem_euclid(100)
        )?;
    }
    Ok(())
}

/// `ddmm.mmmm,N` (or `dddmm.mmmm,E` with `deg_width` 3), `decimals` decimals of minutes.
///
/// Rounded once, in integers, so 59.99999' never prints as `60.0000`.
fn coordinate(
    line: &mut Line,
    value: f64,
    deg_width: usize,
    decimals: u8,
    positive: char,
    negative: char,
) -> Result<(), Overflow> {
    let scale = 10u64.checked_pow(u32::from(decimals)).ok_or(Overflow)?;
    // 180° in 1e-8 minutes is about 1.1e12: far inside u64 and exact in f64.
    let total = (value.abs() * 60.0 * scale as f64).round() as u64;
    let per_degree = 60 * scale;
    let degrees = total / per_degree;
    let minutes = total % per_degree / scale;
    let fraction = total % scale;
    let hemisphere = if value < 0.0 { negative } else { positive };
    let d = usize::from(decimals);
    write!(
        line,
        "{degrees:0deg_width$}{minutes:02}.{fraction:0d$},{hemisphere}"
    )?;
    Ok(())
}

/// Damage a finished line as `kind` says; `rng` chooses where. Returns the damaged line and
/// the damage done: a line with no digit to flip (a no-fix VTG) gets a wrong checksum
/// instead, so every chosen line really is damaged. `None` only for a line without `*`,
/// which this module never prints.
pub(crate) fn corrupt(
    line: &Line,
    kind: Corruption,
    rng: &mut SplitMix64,
) -> Option<(Line, Corruption)> {
    let bytes = line.as_bytes();
    let star = bytes.iter().position(|b| *b == b'*')?;
    let digits = bytes
        .iter()
        .take(star)
        .filter(|b| b.is_ascii_digit())
        .count();
    let kind = match kind {
        Corruption::FlippedByte if digits == 0 => Corruption::BadChecksum,
        other => other,
    };
    let mut out = Line::new();
    match kind {
        Corruption::FlippedByte => {
            let target = rng.below(u32::try_from(digits).ok()?) as usize;
            // A different digit, never the same one: the line must really change.
            let shift = 1 + rng.below(9) as u8;
            let mut seen = 0usize;
            for (i, b) in bytes.iter().enumerate() {
                let mut c = *b;
                if i < star && c.is_ascii_digit() {
                    if seen == target {
                        c = b'0' + (c - b'0' + shift) % 10;
                    }
                    seen += 1;
                }
                out.push(char::from(c)).ok()?;
            }
        }
        Corruption::BadChecksum => {
            let body = bytes.get(1..star)?;
            let wrong = checksum(body) ^ (1 + rng.below(255) as u8);
            out.push_str(line.get(..star)?).ok()?;
            write!(out, "*{wrong:02X}\r\n").ok()?;
        }
        Corruption::Truncated => {
            // Keep at least `$xxYYY,` so the line still looks like the start of a sentence.
            let keep_min = 7usize.min(star);
            let span = u32::try_from(star - keep_min).ok()?;
            let cut = keep_min + rng.below(span) as usize;
            out.push_str(line.get(..cut)?).ok()?;
            out.push_str("\r\n").ok()?;
        }
    }
    Some((out, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading() -> Reading {
        Reading {
            time_ms: 1_773_446_400_000 + 12 * 3_600_000 + 35 * 60_000 + 19_000 + 250,
            fix: true,
            lat: 48.1173,
            lon: 11.516_666_7,
            alt_m: 545.4,
            geoid_sep_m: 46.9,
            speed_mps: 22.4 * MPS_PER_KNOT,
            course_deg: Some(84.4),
            sats: 8,
            hdop: 0.9,
            prns: [4, 5, 9, 12, 17, 24, 25, 29, 0, 0, 0, 0],
            talker: *b"GP",
            precision: 4,
        }
    }

    fn text(line: &Line) -> &str {
        line.as_str()
    }

    #[test]
    fn checksum_matches_the_textbook_gga_example() {
        let body = b"GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,";
        assert_eq!(checksum(body), 0x47);
    }

    #[test]
    fn a_fixed_epoch_prints_the_usual_receiver_lines() {
        let r = reading();
        let rmc = sentence(SentenceKind::Rmc, &r).unwrap();
        assert!(
            text(&rmc).starts_with(
                "$GPRMC,123519.25,A,4807.0380,N,01131.0000,E,22.400,84.40,140326,,,A*"
            ),
            "{rmc}"
        );
        let gga = sentence(SentenceKind::Gga, &r).unwrap();
        assert!(
            text(&gga).starts_with(
                "$GPGGA,123519.25,4807.0380,N,01131.0000,E,1,08,0.90,545.4,M,46.9,M,,*"
            ),
            "{gga}"
        );
        let gsa = sentence(SentenceKind::Gsa, &r).unwrap();
        assert!(
            text(&gsa).starts_with("$GPGSA,A,3,04,05,09,12,17,24,25,29,,,,,1.44,0.90,1.12*"),
            "{gsa}"
        );
        let vtg = sentence(SentenceKind::Vtg, &r).unwrap();
        assert!(
            text(&vtg).starts_with("$GPVTG,84.40,T,,M,22.400,N,41.485,K,A*"),
            "{vtg}"
        );
        for line in [rmc, gga, gsa, vtg] {
            assert!(line.ends_with("\r\n"));
            let star = line.find('*').unwrap();
            let sum = u8::from_str_radix(&line[star + 1..star + 3], 16).unwrap();
            assert_eq!(sum, checksum(&line.as_bytes()[1..star]));
        }
    }

    #[test]
    fn a_receiver_without_a_fix_prints_empty_positions() {
        let r = Reading {
            fix: false,
            ..reading()
        };
        let lines: Vec<Line> = SentenceKind::ALL
            .iter()
            .map(|k| sentence(*k, &r).unwrap())
            .collect();
        assert!(lines[0].starts_with("$GPRMC,123519.25,V,,,,,,,140326,,,N*"));
        assert!(lines[1].starts_with("$GPGGA,123519.25,,,,,0,00,99.99,,,,,,*"));
        assert!(lines[2].starts_with("$GPGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99*"));
        assert!(lines[3].starts_with("$GPVTG,,T,,M,,N,,K,N*"));
    }

    #[test]
    fn minutes_that_round_up_to_sixty_carry_into_the_degrees() {
        let mut line = Line::new();
        coordinate(&mut line, -(12.0 + 59.999_999 / 60.0), 3, 4, 'E', 'W').unwrap();
        assert_eq!(line.as_str(), "01300.0000,W");
        let mut line = Line::new();
        coordinate(&mut line, -33.868_82, 2, 8, 'N', 'S').unwrap();
        assert_eq!(line.as_str(), "3352.12920000,S");
    }

    #[test]
    fn the_widest_rtk_lines_still_fit_their_capacity() {
        let r = Reading {
            lat: -89.999_999_99,
            lon: -179.999_999_99,
            alt_m: -9999.9,
            geoid_sep_m: -99.9,
            speed_mps: 99.0,
            course_deg: Some(359.99),
            sats: 12,
            hdop: 99.99,
            prns: [99; 12],
            talker: *b"GN",
            precision: 8,
            ..reading()
        };
        for k in SentenceKind::ALL {
            assert!(sentence(k, &r).is_ok(), "{k:?} overflowed");
        }
    }

    #[test]
    fn a_line_without_digits_gets_a_wrong_checksum_instead_of_a_flipped_digit() {
        let r = Reading {
            fix: false,
            ..reading()
        };
        let vtg = sentence(SentenceKind::Vtg, &r).unwrap();
        let mut rng = SplitMix64::new(4, 0);
        let (bad, done) = corrupt(&vtg, Corruption::FlippedByte, &mut rng).unwrap();
        assert_eq!(done, Corruption::BadChecksum);
        assert_ne!(bad, vtg);
    }

    #[test]
    fn every_corruption_breaks_the_checksum_or_removes_it() {
        let line = sentence(SentenceKind::Gga, &reading()).unwrap();
        let mut rng = SplitMix64::new(3, 0);
        for _ in 0..200 {
            for kind in [
                Corruption::FlippedByte,
                Corruption::BadChecksum,
                Corruption::Truncated,
            ] {
                let (bad, done) = corrupt(&line, kind, &mut rng).unwrap();
                assert_eq!(done, kind, "a GGA always has digits to flip");
                assert_ne!(bad, line);
                assert!(bad.starts_with("$GPGGA") && bad.ends_with("\r\n"));
                match bad.find('*') {
                    Some(star) => {
                        let sum = u8::from_str_radix(&bad[star + 1..star + 3], 16).unwrap();
                        assert_ne!(sum, checksum(&bad.as_bytes()[1..star]), "{bad}");
                    }
                    None => assert_eq!(kind, Corruption::Truncated),
                }
            }
        }
    }
}
