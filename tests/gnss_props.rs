//! Properties of the decoder: no input panics it, and any valid RMC/GGA it is given comes
//! back with its values.

use gps_agent::gnss::sentence::{parse, Observation, Parsed};
use gps_agent::gnss::{Decoded, Decoder};
use proptest::prelude::*;

fn checksum(body: &str) -> u8 {
    body.bytes().fold(0, |a, b| a ^ b)
}

/// `ddmm.mmmmmmmm` (or `dddmm...`) and hemisphere for decimal degrees, 8 decimal minutes.
fn nmea_coordinate(deg: f64, width: usize, pos: char, neg: char) -> (String, char) {
    let hemi = if deg < 0.0 { neg } else { pos };
    let abs = deg.abs();
    let whole = abs.trunc();
    let minutes = (abs - whole) * 60.0;
    (
        format!("{:0width$}{:011.8}", whole as u32, minutes, width = width),
        hemi,
    )
}

fn talker() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["GP", "GN", "GL", "GA", "GB", "BD", "QZ"])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_byte_sequence_panics_the_decoder(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        cuts in prop::collection::vec(1usize..64, 1..32),
        require in any::<bool>(),
    ) {
        let mut decoder = Decoder::new(require);
        let mut n = 0u64;
        let mut sink = |d: Decoded| if let Decoded::Epoch(_) = d { n += 1 };
        let mut rest: &[u8] = &bytes;
        for cut in cuts.iter().cycle() {
            if rest.is_empty() { break; }
            let (a, b) = rest.split_at((*cut).min(rest.len()));
            decoder.feed(a, &mut sink);
            rest = b;
        }
        decoder.finish(&mut sink);
        prop_assert_eq!(decoder.stats().epochs, n);
    }

    #[test]
    fn nmea_shaped_noise_does_not_panic_the_decoder(
        lines in prop::collection::vec("[$!#*,.0-9A-Z\r\n\u{0}]{0,120}", 0..40),
    ) {
        let mut decoder = Decoder::new(false);
        let mut sink = |_d: Decoded| {};
        for l in &lines {
            decoder.feed(l.as_bytes(), &mut sink);
        }
        decoder.finish(&mut sink);
    }

    #[test]
    fn a_generated_rmc_parses_back_to_its_values(
        talker in talker(),
        lat in -89.99999f64..89.99999,
        lon in -179.99999f64..179.99999,
        h in 0u32..24, m in 0u32..60, s in 0u32..60, cs in 0u32..100,
        day in 1u32..29, month in 1u32..13, year in 0u32..100,
    ) {
        let (la, ns) = nmea_coordinate(lat, 2, 'N', 'S');
        let (lo, ew) = nmea_coordinate(lon, 3, 'E', 'W');
        let body = format!("{talker}RMC,{h:02}{m:02}{s:02}.{cs:02},A,{la},{ns},{lo},{ew},1.5,87.25,{day:02}{month:02}{year:02},,,A");
        let text = format!("${body}*{:02X}", checksum(&body));
        let Parsed::Observation(Observation::Rmc { time_of_day_ms, date, obs }) = parse(&text) else {
            return Err(TestCaseError::fail(format!("{text} did not parse")));
        };
        prop_assert!((obs.lat.unwrap_or(f64::NAN) - lat).abs() < 1e-9, "{} vs {}", obs.lat.unwrap_or(f64::NAN), lat);
        prop_assert!((obs.lon.unwrap_or(f64::NAN) - lon).abs() < 1e-9);
        prop_assert_eq!(time_of_day_ms, Some(((h * 60 + m) * 60 + s) * 1000 + cs * 10));
        let full_year = if year >= 83 { 1900 + year } else { 2000 + year };
        prop_assert_eq!(date, chrono::NaiveDate::from_ymd_opt(full_year as i32, month, day));
        prop_assert!(obs.valid);
    }

    #[test]
    fn a_generated_gga_parses_back_to_its_values_through_the_decoder(
        talker in talker(),
        lat in -89.99999f64..89.99999,
        lon in -179.99999f64..179.99999,
        h in 0u32..24, m in 0u32..60, s in 0u32..60,
        quality in 0u8..9, sats in 0u8..40,
    ) {
        let (la, ns) = nmea_coordinate(lat, 2, 'N', 'S');
        let (lo, ew) = nmea_coordinate(lon, 3, 'E', 'W');
        let body = format!("{talker}GGA,{h:02}{m:02}{s:02}.00,{la},{ns},{lo},{ew},{quality},{sats:02},0.9,545.4,M,46.9,M,,");
        let text = format!("${body}*{:02X}\r\n", checksum(&body));
        let mut decoder = Decoder::new(true);
        let mut epochs = Vec::new();
        decoder.feed(text.as_bytes(), &mut |d| epochs.push(d));
        decoder.finish(&mut |d| epochs.push(d));
        let [Decoded::Epoch(e)] = epochs.as_slice() else {
            return Err(TestCaseError::fail(format!("{text}: {epochs:?}")));
        };
        let gga = e.gga.unwrap_or_default();
        prop_assert!((gga.lat.unwrap_or(f64::NAN) - lat).abs() < 1e-9);
        prop_assert!((gga.lon.unwrap_or(f64::NAN) - lon).abs() < 1e-9);
        prop_assert_eq!((gga.quality, gga.sats), (Some(quality), Some(sats)));
        prop_assert_eq!(e.time_of_day_ms, Some(((h * 60 + m) * 60 + s) * 1000));
    }
}
