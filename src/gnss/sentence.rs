//! Parsing: one checked sentence (`$GPRMC,...*hh`, from the framer) in, one small `Copy`
//! [`Observation`] out, with the `nmea` crate doing the field work.
//!
//! Only what validation uses is kept: RMC, GGA, GNS, GLL, GSA, VTG and ZDA from any talker
//! (GP, GN, GL, GA, GB, BD, QZ, ...). Proprietary (`$P...`) and other sentence types are
//! classified, not parsed. Where the `nmea` crate rejects what real receivers send (see
//! `../shared/nmea-corpus`), this module rescues the sentence instead of losing the fix:
//! pre-2.3 GLL without a mode field, GSA with empty DOP fields or a 4.11 system id that
//! contradicts the talker, GNS with three or four mode letters or an empty satellite count.
//! Nothing here allocates; nothing here judges a fix (that is `crate::validate`).

use chrono::{NaiveDate, NaiveTime, Timelike};
use nmea::sentences::{self as s, FixType};
use nmea::{NmeaSentence, SentenceType};

use super::observation::{
    FaaMode, GgaObs, GllObs, GnsObs, GnssSystem, GsaObs, RmcObs, UsedSats, VtgObs,
};

/// What one sentence said, reduced to what the epoch needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observation {
    Rmc {
        time_of_day_ms: Option<u32>,
        date: Option<NaiveDate>,
        obs: RmcObs,
    },
    Gga {
        time_of_day_ms: Option<u32>,
        obs: GgaObs,
    },
    Gns {
        time_of_day_ms: Option<u32>,
        obs: GnsObs,
    },
    Gll {
        time_of_day_ms: Option<u32>,
        obs: GllObs,
    },
    /// GSA carries no time: it belongs to the epoch being assembled.
    Gsa(GsaObs),
    /// VTG carries no time either.
    Vtg(VtgObs),
    Zda {
        time_of_day_ms: Option<u32>,
        date: Option<NaiveDate>,
    },
}

impl Observation {
    /// The UTC time of day the sentence carries, if any.
    pub fn time_of_day_ms(&self) -> Option<u32> {
        match *self {
            Observation::Rmc { time_of_day_ms, .. }
            | Observation::Gga { time_of_day_ms, .. }
            | Observation::Gns { time_of_day_ms, .. }
            | Observation::Gll { time_of_day_ms, .. }
            | Observation::Zda { time_of_day_ms, .. } => time_of_day_ms,
            Observation::Gsa(_) | Observation::Vtg(_) => None,
        }
    }
}

/// The outcome of parsing one checked sentence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Parsed {
    Observation(Observation),
    /// `$P...`: vendor sentences, skipped.
    Proprietary,
    /// Well-formed but of a type we do not use (GSV, TXT, RMB, AIS `!...`, ...).
    Unsupported,
    /// Framed and checksummed, but the fields could not be parsed.
    Malformed,
    /// Over the `nmea` crate's length limit.
    TooLong,
}

/// Parse one sentence as handed out by the framer (checksum already verified).
pub fn parse(text: &str) -> Parsed {
    let bytes = text.as_bytes();
    match bytes.first() {
        Some(b'$') => {}
        // AIS and other encapsulated `!` sentences: valid, not ours.
        Some(b'!') => return Parsed::Unsupported,
        _ => return Parsed::Malformed,
    }
    if bytes.get(1) == Some(&b'P') {
        return Parsed::Proprietary;
    }
    let sentence = match nmea::parse_nmea_sentence(text) {
        Ok(sentence) => sentence,
        Err(nmea::Error::SentenceLength(_)) => return Parsed::TooLong,
        // An address the crate does not know (`$GNTHS`, `$LOG108`): well-formed enough to
        // have passed its checksum, but nothing we could use.
        Err(_) => {
            return if is_plausible_address(bytes) {
                Parsed::Unsupported
            } else {
                Parsed::Malformed
            };
        }
    };
    let parsed = match sentence.message_id {
        SentenceType::RMC => rmc(&sentence),
        SentenceType::GGA => gga(&sentence),
        SentenceType::GNS => gns(sentence.data),
        SentenceType::GLL => gll(&sentence),
        SentenceType::GSA => gsa(&sentence),
        SentenceType::VTG => vtg(&sentence),
        SentenceType::ZDA => zda(&sentence),
        _ => return Parsed::Unsupported,
    };
    match parsed {
        Some(observation) => Parsed::Observation(observation),
        None => Parsed::Malformed,
    }
}

/// `$` + five alphanumerics + `,`: a sentence address, even if not one the crate knows.
fn is_plausible_address(bytes: &[u8]) -> bool {
    matches!(bytes.get(1..7), Some([a, b, c, d, e, b','])
        if [a, b, c, d, e].iter().all(|x| x.is_ascii_alphanumeric()))
}

/// Milliseconds since midnight. A leap second (`23:59:60`) is held at the last millisecond
/// of the day rather than spilling into the next one.
pub fn time_of_day_ms(t: NaiveTime) -> u32 {
    let ms = t.nanosecond().min(999_999_999) / 1_000_000;
    t.num_seconds_from_midnight() * 1000 + ms
}

/// Index of the latitude field among a sentence's data fields (after the address); the
/// longitude is two further on.
const RMC_LAT: usize = 2;
const GGA_LAT: usize = 1;
const GLL_LAT: usize = 0;
const GNS_LAT: usize = 1;

/// The coordinate `value` parsed from field `index` of `data`, or NaN when that field's
/// minutes are 60 or more: the crate reads `4860.000` as 49°, a place the receiver never
/// named. Validation rejects a NaN coordinate as `out_of_range` with every other impossible
/// value (`crate::validate::ranges`); this is only where the digits are still at hand.
fn minutes_checked(data: &str, index: usize, value: Option<f64>) -> Option<f64> {
    let sixty = data
        .split(',')
        .nth(index)
        .and_then(|field| field.parse::<f64>().ok())
        .is_some_and(|v| v.abs() % 100.0 >= 60.0);
    value.map(|v| if sixty { f64::NAN } else { v })
}

fn time(t: Option<NaiveTime>) -> Option<u32> {
    t.map(time_of_day_ms)
}

fn f64_of(v: Option<f32>) -> Option<f64> {
    v.map(f64::from)
}

fn faa(mode: s::FaaMode) -> FaaMode {
    match mode {
        s::FaaMode::Autonomous => FaaMode::Autonomous,
        s::FaaMode::Differential => FaaMode::Differential,
        s::FaaMode::Precise => FaaMode::Precise,
        s::FaaMode::FixedRtk => FaaMode::RtkFixed,
        s::FaaMode::FloatRtk => FaaMode::RtkFloat,
        s::FaaMode::Estimated => FaaMode::Estimated,
        s::FaaMode::Manual => FaaMode::Manual,
        s::FaaMode::Simulator => FaaMode::Simulator,
        s::FaaMode::DataNotValid => FaaMode::NotValid,
        s::FaaMode::Caution | s::FaaMode::Unsafe => FaaMode::Other,
    }
}

fn faa_letter(letter: u8) -> Option<FaaMode> {
    Some(match letter {
        b'A' => FaaMode::Autonomous,
        b'D' => FaaMode::Differential,
        b'P' => FaaMode::Precise,
        b'R' => FaaMode::RtkFixed,
        b'F' => FaaMode::RtkFloat,
        b'E' => FaaMode::Estimated,
        b'M' => FaaMode::Manual,
        b'S' => FaaMode::Simulator,
        b'N' => FaaMode::NotValid,
        b'C' | b'U' => FaaMode::Other,
        _ => return None,
    })
}

/// Rank for "best of the constellations": any measured mode beats an estimated one, and
/// estimated beats not valid, so one good constellation makes the GNS sentence usable.
fn faa_rank(mode: FaaMode) -> u8 {
    match mode {
        FaaMode::RtkFixed => 9,
        FaaMode::RtkFloat => 8,
        FaaMode::Precise => 7,
        FaaMode::Differential => 6,
        FaaMode::Autonomous => 5,
        FaaMode::Other => 4,
        FaaMode::Estimated => 3,
        FaaMode::Manual => 2,
        FaaMode::Simulator => 1,
        FaaMode::NotValid => 0,
    }
}

fn gga_quality(fix: FixType) -> u8 {
    match fix {
        FixType::Invalid => 0,
        FixType::Gps => 1,
        FixType::DGps => 2,
        FixType::Pps => 3,
        FixType::Rtk => 4,
        FixType::FloatRtk => 5,
        FixType::Estimated => 6,
        FixType::Manual => 7,
        FixType::Simulation => 8,
    }
}

fn rmc(sentence: &NmeaSentence<'_>) -> Option<Observation> {
    let d = match s::parse_rmc(copy(sentence)) {
        Ok(d) => d,
        // Motorola Oncore writes a magnetic variation without its E/W (`0,N`); we never use
        // the variation, so blank it rather than lose the sentence.
        Err(_) => reparse_with(sentence, &[(9, ""), (10, "")], s::parse_rmc)?,
    };
    Some(Observation::Rmc {
        time_of_day_ms: time(d.fix_time),
        date: d.fix_date,
        obs: RmcObs {
            valid: !matches!(d.status_of_fix, s::rmc::RmcStatusOfFix::Invalid),
            lat: minutes_checked(sentence.data, RMC_LAT, d.lat),
            lon: minutes_checked(sentence.data, RMC_LAT + 2, d.lon),
            speed_knots: f64_of(d.speed_over_ground),
            course_deg: f64_of(d.true_course),
            faa_mode: d.faa_mode.map(faa),
        },
    })
}

fn gga(sentence: &NmeaSentence<'_>) -> Option<Observation> {
    let (d, quality_given) = match s::parse_gga(copy(sentence)) {
        Ok(d) => (d, true),
        // MyGuide 3100 leaves the quality field empty while it has no fix; the crate wants a
        // digit. Read the rest of the sentence and let the quality say nothing.
        Err(_) if sentence.data.split(',').nth(5) == Some("") => {
            (reparse_with(sentence, &[(5, "0")], s::parse_gga)?, false)
        }
        Err(_) => return None,
    };
    Some(Observation::Gga {
        time_of_day_ms: time(d.fix_time),
        obs: GgaObs {
            quality: d.fix_type.map(gga_quality).filter(|_| quality_given),
            lat: minutes_checked(sentence.data, GGA_LAT, d.latitude),
            lon: minutes_checked(sentence.data, GGA_LAT + 2, d.longitude),
            sats: d.fix_satellites.map(|n| u8::try_from(n).unwrap_or(u8::MAX)),
            hdop: f64_of(d.hdop),
            alt_m: f64_of(d.altitude),
        },
    })
}

fn gll(sentence: &NmeaSentence<'_>) -> Option<Observation> {
    let d = match s::parse_gll(copy(sentence)) {
        Ok(d) => d,
        // Before NMEA 2.3 GLL ended at the status field; the crate insists on the mode
        // field's comma. Give it an empty mode field instead of losing the position.
        Err(_) => {
            let mut data: heapless::String<{ super::framer::MAX_SENTENCE_LEN + 1 }> =
                heapless::String::new();
            data.push_str(sentence.data).ok()?;
            data.push(',').ok()?;
            s::parse_gll(NmeaSentence {
                data: &data,
                ..copy(sentence)
            })
            .ok()?
        }
    };
    Some(Observation::Gll {
        time_of_day_ms: time(d.fix_time),
        obs: GllObs {
            valid: d.valid,
            lat: minutes_checked(sentence.data, GLL_LAT, d.latitude),
            lon: minutes_checked(sentence.data, GLL_LAT + 2, d.longitude),
            faa_mode: d.faa_mode.map(faa),
        },
    })
}

fn gsa(sentence: &NmeaSentence<'_>) -> Option<Observation> {
    let system = gsa_system(sentence.talker_id, sentence.data);
    match s::parse_gsa(copy(sentence)) {
        Ok(d) => Some(Observation::Gsa(GsaObs {
            fix_mode: match d.mode2 {
                s::gsa::GsaMode2::NoFix => 1,
                s::gsa::GsaMode2::Fix2D => 2,
                s::gsa::GsaMode2::Fix3D => 3,
            },
            hdop: f64_of(d.hdop),
            pdop: f64_of(d.pdop),
            vdop: f64_of(d.vdop),
            used: UsedSats::from_prns(system, d.fix_sats_prn.iter().copied()),
        })),
        Err(_) => gsa_tolerant(sentence.data, system).map(Observation::Gsa),
    }
}

/// The GNSS system a GSA's satellites belong to: NMEA 4.10's system id (the field after
/// VDOP) when it is there, else the talker's system, else 0 (`GN` before 4.10).
fn gsa_system(talker: &str, data: &str) -> GnssSystem {
    let id = data
        .split(',')
        .nth(17)
        .and_then(|f| f.trim().parse::<u8>().ok())
        .filter(|id| (1..=15).contains(id));
    id.unwrap_or(match talker {
        "GP" => 1,
        "GL" => 2,
        "GA" => 3,
        "GB" | "BD" => 4,
        "GQ" | "QZ" => 5,
        "GI" => 6,
        _ => 0,
    })
}

/// GSA as Garmin, Oncore, PolaRx and BeiDou receivers send it: DOP fields left empty, or a
/// fourth DOP read by the crate as a contradicting system id. Fields: mode1, mode2, 12 (or
/// more) PRNs, PDOP, HDOP, VDOP[, system id].
fn gsa_tolerant(data: &str, system: GnssSystem) -> Option<GsaObs> {
    let mut fields = data.split(',');
    let _mode1 = fields.next()?;
    let fix_mode = match fields.next()? {
        "1" => 1,
        "2" => 2,
        "3" => 3,
        _ => return None,
    };
    // The PRN block is 12 fields by the standard; count what is there.
    let mut used = UsedSats::default();
    for _ in 0..12 {
        let prn = fields.next()?;
        if !prn.is_empty() {
            used.insert(system, prn.parse::<u32>().ok()?);
        }
    }
    let pdop = opt_f64(fields.next())?;
    let hdop = opt_f64(fields.next())?;
    let vdop = opt_f64(fields.next())?;
    Some(GsaObs {
        fix_mode,
        hdop,
        pdop,
        vdop,
        used,
    })
}

/// An optional numeric field: `Some(None)` when empty or absent, `None` when garbage.
fn opt_f64(field: Option<&str>) -> Option<Option<f64>> {
    match field {
        None | Some("") => Some(None),
        Some(v) => v.parse::<f64>().ok().filter(|v| v.is_finite()).map(Some),
    }
}

/// GNS is split by hand and its fields parsed with the crate's own time and position
/// parsers (so precision is the same as RMC/GGA): the crate accepts at most two mode letters
/// and a non-empty satellite count, while Quectel and BeiDou receivers send `AAN`, `ANNA`
/// and an empty count when there is no fix. Fields: time, lat, N/S, lon, E/W, mode letters,
/// sats, HDOP, altitude, geoid separation, age, station[, nav status].
fn gns(data: &str) -> Option<Observation> {
    let mut fields = data.split(',');
    let time_field = fields.next()?;
    let time_of_day_ms = if time_field.is_empty() {
        None
    } else {
        Some(time_of_day_ms(nmea_hms(time_field)?))
    };
    let (lat, lon) = lat_lon(&mut fields)?;
    let mode = fields
        .next()?
        .bytes()
        .map(faa_letter)
        .try_fold(None::<FaaMode>, |best, m| {
            let m = m?;
            Some(Some(match best {
                Some(b) if faa_rank(b) >= faa_rank(m) => b,
                _ => m,
            }))
        })?;
    let sats = match fields.next()? {
        "" => None,
        n => Some(u8::try_from(n.parse::<u32>().ok()?).unwrap_or(u8::MAX)),
    };
    let hdop = opt_f64(fields.next())?;
    let alt_m = opt_f64(fields.next())?;
    Some(Observation::Gns {
        time_of_day_ms,
        obs: GnsObs {
            mode,
            lat: minutes_checked(data, GNS_LAT, lat),
            lon: minutes_checked(data, GNS_LAT + 2, lon),
            sats,
            hdop,
            alt_m,
        },
    })
}

/// The crate's `hhmmss.sss` parser, which reads the seconds up to the next comma: give it
/// one, from a small stack copy.
fn nmea_hms(field: &str) -> Option<NaiveTime> {
    let mut buf: heapless::String<24> = heapless::String::new();
    buf.push_str(field).ok()?;
    buf.push(',').ok()?;
    let (_, t) = s::utils::parse_hms(&buf).ok()?;
    Some(t)
}

/// Four fields `ddmm.mmmm,N,dddmm.mmmm,E`, all empty or all present.
fn lat_lon<'a>(fields: &mut impl Iterator<Item = &'a str>) -> Option<(Option<f64>, Option<f64>)> {
    let (lat, ns, lon, ew) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    if lat.is_empty() && ns.is_empty() && lon.is_empty() && ew.is_empty() {
        return Some((None, None));
    }
    let mut buf: heapless::String<64> = heapless::String::new();
    for (i, part) in [lat, ns, lon, ew].iter().enumerate() {
        if i > 0 {
            buf.push(',').ok()?;
        }
        buf.push_str(part).ok()?;
    }
    let (rest, (lat, lon)) = s::utils::do_parse_lat_lon(&buf).ok()?;
    rest.is_empty().then_some((Some(lat), Some(lon)))
}

fn vtg(sentence: &NmeaSentence<'_>) -> Option<Observation> {
    let d = s::parse_vtg(copy(sentence)).ok()?;
    // The crate does not read VTG's NMEA 2.3 mode field (the ninth); we need it to tell
    // dead reckoning from a measured course.
    let faa_mode = sentence
        .data
        .split(',')
        .nth(8)
        .and_then(|f| f.bytes().next())
        .and_then(faa_letter);
    Some(Observation::Vtg(VtgObs {
        course_deg: f64_of(d.true_course),
        speed_knots: f64_of(d.speed_over_ground),
        faa_mode,
    }))
}

fn zda(sentence: &NmeaSentence<'_>) -> Option<Observation> {
    let d = match s::parse_zda(copy(sentence)) {
        Ok(d) => d,
        // Firefly receivers write the local zone as `+00`; the crate only knows a `-` sign.
        // The zone does not matter for UTC: drop the `+`.
        Err(_) => {
            let mut data: heapless::String<{ super::framer::MAX_SENTENCE_LEN }> =
                heapless::String::new();
            for c in sentence.data.chars().filter(|c| *c != '+') {
                data.push(c).ok()?;
            }
            s::parse_zda(NmeaSentence {
                data: &data,
                ..copy(sentence)
            })
            .ok()?
        }
    };
    Some(Observation::Zda {
        time_of_day_ms: time(d.utc_time),
        date: d.utc_date(),
    })
}

/// Parse `sentence` again with some fields replaced (`(0-based index, new text)`), on the
/// stack: for receivers that write a field the crate rejects but the sentence is worth
/// keeping.
fn reparse_with<T>(
    sentence: &NmeaSentence<'_>,
    fields: &[(usize, &str)],
    parse: impl for<'a> FnOnce(NmeaSentence<'a>) -> Result<T, nmea::Error<'a>>,
) -> Option<T> {
    let mut data = heapless::String::<{ super::framer::MAX_SENTENCE_LEN }>::new();
    for (i, field) in sentence.data.split(',').enumerate() {
        if i > 0 {
            data.push(',').ok()?;
        }
        let text = fields
            .iter()
            .find_map(|&(at, text)| (at == i).then_some(text))
            .unwrap_or(field);
        data.push_str(text).ok()?;
    }
    parse(NmeaSentence {
        data: &data,
        ..copy(sentence)
    })
    .ok()
}

/// `NmeaSentence` is not `Copy`; its fields are.
fn copy<'a>(sentence: &NmeaSentence<'a>) -> NmeaSentence<'a> {
    NmeaSentence {
        talker_id: sentence.talker_id,
        message_id: sentence.message_id,
        data: sentence.data,
        checksum: sentence.checksum,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gnss::framer::xor;

    /// A sentence with its correct checksum.
    fn sentence(body: &str) -> String {
        format!("${body}*{:02X}", xor(body.as_bytes()))
    }

    fn obs(body: &str) -> Observation {
        match parse(&sentence(body)) {
            Parsed::Observation(o) => o,
            other => panic!("{body}: {other:?}"),
        }
    }

    fn close(a: Option<f64>, b: f64, tol: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() <= tol)
    }

    #[test]
    fn rmc_gives_time_date_status_position_speed_course_and_mode() {
        let o = obs("GNRMC,003956.00,A,4552.65403,S,17030.00668,E,0.025,12.5,120419,,,A,V");
        let Observation::Rmc {
            time_of_day_ms,
            date,
            obs,
        } = o
        else {
            panic!("{o:?}")
        };
        assert_eq!(time_of_day_ms, Some((39 * 60 + 56) * 1000));
        assert_eq!(date, NaiveDate::from_ymd_opt(2019, 4, 12));
        assert!(obs.valid);
        assert!(close(obs.lat, -(45.0 + 52.65403 / 60.0), 1e-12));
        assert!(close(obs.lon, 170.0 + 30.00668 / 60.0, 1e-12));
        assert!(close(obs.speed_knots, 0.025, 1e-6));
        assert!(close(obs.course_deg, 12.5, 1e-6));
        assert_eq!(obs.faa_mode, Some(FaaMode::Autonomous));
    }

    #[test]
    fn sixty_minutes_or_more_make_a_coordinate_nan_in_every_positioned_sentence() {
        let lat_of = |o: Observation| match o {
            Observation::Rmc { obs, .. } => (obs.lat, obs.lon),
            Observation::Gga { obs, .. } => (obs.lat, obs.lon),
            Observation::Gll { obs, .. } => (obs.lat, obs.lon),
            Observation::Gns { obs, .. } => (obs.lat, obs.lon),
            other => panic!("{other:?}"),
        };
        let is_nan = |v: Option<f64>| v.is_some_and(f64::is_nan);
        for body in [
            "GPRMC,080000.00,A,4860.0000,N,01134.5000,E,0.0,,180324,,,A",
            "GPGGA,080000.00,4860.0000,N,01134.5000,E,1,09,1.0,520.0,M,47.0,M,,",
            "GPGLL,4860.0000,N,01134.5000,E,080000.00,A,A",
            "GNGNS,080000.00,4860.0000,N,01134.5000,E,AA,09,1.0,520.0,47.0,,",
        ] {
            let (lat, lon) = lat_of(obs(body));
            assert!(is_nan(lat) && !is_nan(lon), "{body}: {lat:?} {lon:?}");
        }
        let (lat, lon) = lat_of(obs(
            "GPRMC,080000.00,A,4859.9999,N,01160.5,E,0.0,,180324,,,A",
        ));
        assert!(
            lat.is_some_and(|v| (v - 48.999_998).abs() < 1e-6),
            "{lat:?}"
        );
        assert!(is_nan(lon), "{lon:?}");
    }

    #[test]
    fn gga_gives_quality_satellites_hdop_and_altitude() {
        let o = obs("GPGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,");
        let Observation::Gga {
            time_of_day_ms,
            obs,
        } = o
        else {
            panic!("{o:?}")
        };
        assert_eq!(time_of_day_ms, Some((9 * 3600 + 27 * 60 + 50) * 1000));
        assert_eq!(obs.quality, Some(1));
        assert_eq!(obs.sats, Some(8));
        assert!(close(obs.hdop, 1.03, 1e-6));
        assert!(close(obs.alt_m, 61.7, 1e-5));
        assert!(close(obs.lon, -(6.0 + 30.3372 / 60.0), 1e-12));
    }

    #[test]
    fn gga_with_an_empty_quality_keeps_its_other_fields_and_gives_no_quality() {
        // MyGuide 3100 while it has no fix.
        let o = obs("GPGGA,105025.80,5612.9999,N,00306.7096,W,,2,60.000,160.002,M,,M,,");
        let Observation::Gga { obs, .. } = o else {
            panic!("{o:?}")
        };
        assert_eq!((obs.quality, obs.sats), (None, Some(2)));
        assert!(close(obs.hdop, 60.0, 1e-9));
        assert!(close(obs.lat, 56.0 + 12.9999 / 60.0, 1e-12));
        // Another broken field beside it still makes the sentence malformed.
        let broken = sentence("GPGGA,105025.80,5612.9999,N,00306.7096,W,,zz,60.000,160.002,M,,M,,");
        assert!(
            matches!(parse(&broken), Parsed::Malformed),
            "{:?}",
            parse(&broken)
        );
    }

    #[test]
    fn rtk_precision_of_eight_decimal_minutes_survives_to_a_nanodegree() {
        let o = obs(
            "GNGGA,123519.00,4807.03800001,N,01131.00000007,E,4,12,0.5,545.4,M,46.9,M,1.0,0000",
        );
        let Observation::Gga { obs, .. } = o else {
            panic!("{o:?}")
        };
        assert!(close(obs.lat, 48.0 + 7.03800001 / 60.0, 1e-12));
        assert!((obs.lat.unwrap_or(0.0) - 48.117300000167).abs() < 1e-9);
        assert!(close(obs.lon, 11.0 + 31.00000007 / 60.0, 1e-12));
        assert_eq!(obs.quality, Some(4));
    }

    #[test]
    fn every_talker_is_accepted() {
        for talker in ["GP", "GN", "GL", "GA", "GB", "BD", "QZ"] {
            let o = obs(&format!(
                "{talker}RMC,120000,A,4807.038,N,01131.000,E,,,230394,,"
            ));
            assert!(matches!(o, Observation::Rmc { .. }), "{talker}: {o:?}");
        }
    }

    #[test]
    fn gns_with_quectel_three_letter_modes_takes_the_best_letter() {
        let o = obs("GNGNS,191533.98,3645.828239,N,03124.652575,E,AAN,08,3.1,-80.3,32.0,,,V");
        let Observation::Gns {
            time_of_day_ms,
            obs,
        } = o
        else {
            panic!("{o:?}")
        };
        assert_eq!(
            time_of_day_ms,
            Some((19 * 3600 + 15 * 60 + 33) * 1000 + 980)
        );
        assert_eq!(obs.mode, Some(FaaMode::Autonomous));
        assert_eq!(obs.sats, Some(8));
        assert!(close(obs.alt_m, -80.3, 1e-9));
        assert!(close(obs.lat, 36.0 + 45.828239 / 60.0, 1e-12));
    }

    #[test]
    fn gns_without_a_fix_has_no_position_and_not_valid_mode() {
        let o = obs("GNGNS,191434.96,,,,,NNN,,,,,,");
        let Observation::Gns { obs, .. } = o else {
            panic!("{o:?}")
        };
        assert_eq!(obs.mode, Some(FaaMode::NotValid));
        assert_eq!((obs.lat, obs.sats), (None, None));
    }

    #[test]
    fn gll_of_nmea_before_2_3_without_mode_field_is_rescued() {
        let o = obs("GPGLL,5029.3800,N,10441.0389,W,021613.949,A");
        let Observation::Gll {
            time_of_day_ms,
            obs,
        } = o
        else {
            panic!("{o:?}")
        };
        assert_eq!(time_of_day_ms, Some((2 * 3600 + 16 * 60 + 13) * 1000 + 949));
        assert!(obs.valid);
        assert_eq!(obs.faa_mode, None);
        assert!(close(obs.lat, 50.0 + 29.38 / 60.0, 1e-12));
    }

    #[test]
    fn gll_with_mode_and_without_time() {
        let o = obs("GNGLL,,,,,,V,N");
        assert_eq!(o.time_of_day_ms(), None);
        let Observation::Gll { obs, .. } = o else {
            panic!("{o:?}")
        };
        assert!(!obs.valid);
        assert_eq!(obs.faa_mode, Some(FaaMode::NotValid));
    }

    #[test]
    fn gsa_gives_mode_dops_and_used_satellites() {
        let Observation::Gsa(g) = obs("GPGSA,A,3,,,,,,16,18,,22,24,,,3.6,2.1,2.2") else {
            panic!()
        };
        assert_eq!((g.fix_mode, g.sats_used()), (3, 4));
        assert!(close(g.hdop, 2.1, 1e-6));
    }

    #[test]
    fn gsa_with_empty_dops_or_a_fourth_dop_is_rescued() {
        let Observation::Gsa(g) = obs("GPGSA,A,2,01,03,,14,,,,,,,,,3.1,3.1,") else {
            panic!()
        };
        assert_eq!((g.fix_mode, g.sats_used(), g.vdop), (2, 3, None));
        let Observation::Gsa(g) = obs("BDGSA,A,3,02,03,04,,,,,,,,,,2.1,1.1,1.8,1.2") else {
            panic!()
        };
        assert_eq!((g.fix_mode, g.sats_used()), (3, 3));
        assert!(close(g.hdop, 1.1, 1e-9));
    }

    #[test]
    fn a_constellation_repeated_under_two_talkers_counts_its_satellites_once() {
        // Quectel EG25-G: GPS under GP and again under GN with system id 1.
        let used = |line: &str| match obs(line) {
            Observation::Gsa(g) => g.used,
            other => panic!("{other:?}"),
        };
        let mut all = used("GPGSA,A,3,08,10,16,18,27,,,,,,,,1.2,0.9,0.9,1");
        all.merge(&used("GNGSA,A,3,08,10,16,18,27,,,,,,,,1.2,0.9,0.9,1"));
        all.merge(&used("GNGSA,A,3,69,76,78,85,,,,,,,,,1.2,0.9,0.9,2"));
        assert_eq!(all.len(), 9);
        // The same PRN in two systems is two satellites (NMEA 4.10 numbers per system).
        let mut two = used("GNGSA,A,3,03,,,,,,,,,,,,1.6,0.9,1.3,1");
        two.merge(&used("GNGSA,A,3,03,,,,,,,,,,,,1.6,0.9,1.3,3"));
        assert_eq!(two.len(), 2);
        // A fourth DOP is not a system id: the talker says BeiDou.
        let mut bd = used("BDGSA,A,3,02,03,04,,,,,,,,,,2.1,1.1,1.8,1.2");
        bd.merge(&used("GBGSA,A,3,02,03,04,,,,,,,,,,2.1,1.1,1.8"));
        assert_eq!(bd.len(), 3);
    }

    #[test]
    fn vtg_gives_course_speed_and_mode() {
        let Observation::Vtg(v) = obs("GPVTG,237.8,T,234.1,M,1.4,N,2.7,K,A") else {
            panic!()
        };
        assert!(close(v.course_deg, 237.8, 1e-4));
        assert!(close(v.speed_knots, 1.4, 1e-6));
        assert_eq!(v.faa_mode, Some(FaaMode::Autonomous));
        let Observation::Vtg(v) = obs("GPVTG,,T,,M,,N,,K,N") else {
            panic!()
        };
        assert_eq!((v.course_deg, v.faa_mode), (None, Some(FaaMode::NotValid)));
    }

    #[test]
    fn zda_gives_time_and_a_four_digit_year_date() {
        let o = obs("GPZDA,160012.71,11,03,2004,-1,00");
        assert_eq!(
            o,
            Observation::Zda {
                time_of_day_ms: Some((16 * 3600 + 12) * 1000 + 710),
                date: NaiveDate::from_ymd_opt(2004, 3, 11),
            }
        );
    }

    #[test]
    fn rmc_with_a_variation_missing_its_direction_is_rescued() {
        let o = obs("GPRMC,212607.891,V,,,,,,,181207,0,N");
        let Observation::Rmc { date, obs, .. } = o else {
            panic!("{o:?}")
        };
        assert_eq!(date, NaiveDate::from_ymd_opt(2007, 12, 18));
        assert!(!obs.valid);
    }

    #[test]
    fn zda_with_a_plus_signed_zone_is_rescued() {
        let o = obs("GPZDA,005947.00,08,07,2010,+00,00");
        assert_eq!(
            o,
            Observation::Zda {
                time_of_day_ms: Some((59 * 60 + 47) * 1000),
                date: NaiveDate::from_ymd_opt(2010, 7, 8),
            }
        );
    }

    #[test]
    fn proprietary_unsupported_and_malformed_are_told_apart() {
        assert_eq!(
            parse(&sentence("PGRME,15.0,M,45.0,M,25.0,M")),
            Parsed::Proprietary
        );
        assert_eq!(parse(&sentence("GPGSV,1,1,00,,,,")), Parsed::Unsupported);
        assert_eq!(parse(&sentence("GNTHS,244.28,A")), Parsed::Unsupported);
        assert_eq!(
            parse(&sentence("AIVDM,1,1,,A,13u?etPv2;0n:dDPwUM1U1Cb069D,0")),
            Parsed::Unsupported
        );
        assert_eq!(
            parse("!AIVDM,1,1,,A,13u?etPv2;0n:dDPwUM1U1Cb069D,0*23"),
            Parsed::Unsupported
        );
        assert_eq!(
            parse(&sentence(
                "GPGGA,105025.80,5612.9999,N,00306.7096,W,x,2,60.000,160.002,M,,M,,"
            )),
            Parsed::Malformed
        );
        assert_eq!(parse(&sentence("GPRMC,xx")), Parsed::Malformed);
    }

    #[test]
    fn leap_second_stays_within_its_day() {
        let t = NaiveTime::from_hms_milli_opt(23, 59, 59, 1500).unwrap_or_default();
        assert_eq!(time_of_day_ms(t), 86_399_999);
    }
}
