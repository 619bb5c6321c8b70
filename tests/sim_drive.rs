//! The simulator's drives, read back by an independent reader: this file's own checksum
//! verifier and field parser (deliberately not the agent's decoder), checking that the bytes
//! are correct NMEA and say what the drive's truth says.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use gps_agent::sim::{Drive, DriveSpec, SentenceKind, SimEpoch, MPS_PER_KNOT};

// ---- an independent little NMEA reader -------------------------------------------------

/// The fields of a line whose checksum is right (talker+type first), or why not.
fn verified(line: &str) -> Result<Vec<&str>, String> {
    let inner = line
        .strip_prefix('$')
        .and_then(|l| l.strip_suffix("\r\n"))
        .ok_or_else(|| format!("not framed: {line:?}"))?;
    let (body, sum) = inner
        .split_once('*')
        .ok_or_else(|| format!("no checksum: {line:?}"))?;
    if sum.len() != 2
        || !sum
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
    {
        return Err(format!("bad checksum field: {line:?}"));
    }
    let want = u8::from_str_radix(sum, 16).map_err(|e| e.to_string())?;
    let got = body.bytes().fold(0u8, |a, b| a ^ b);
    if want != got {
        return Err(format!("checksum {want:02X} != {got:02X}: {line:?}"));
    }
    Ok(body.split(',').collect())
}

/// `ddmm.mmmm` + `N`/`S` (or `dddmm.mmmm` + `E`/`W`) to signed degrees.
fn coordinate(value: &str, hemisphere: &str, deg_width: usize) -> f64 {
    let (dot, _) = value.split_once('.').expect("a decimal point");
    assert_eq!(dot.len(), deg_width + 2, "{value}");
    let degrees: f64 = value[..deg_width].parse().unwrap();
    let minutes: f64 = value[deg_width..].parse().unwrap();
    assert!(minutes < 60.0, "{value}");
    let v = degrees + minutes / 60.0;
    match hemisphere {
        "N" | "E" => v,
        "S" | "W" => -v,
        other => panic!("hemisphere {other:?}"),
    }
}

/// `hhmmss.ss` to a time of day.
fn time_of_day(field: &str) -> NaiveTime {
    assert_eq!(field.len(), 9, "{field}");
    NaiveTime::parse_from_str(field, "%H%M%S%.f").unwrap()
}

/// `ddmmyy` to a date (20yy).
fn date(field: &str) -> NaiveDate {
    NaiveDate::parse_from_str(field, "%d%m%y").unwrap()
}

fn utc_ms(d: NaiveDate, t: NaiveTime) -> i64 {
    NaiveDateTime::new(d, t).and_utc().timestamp_millis()
}

/// The verified fields of the epoch's sentence of `kind`.
fn fields(epoch: &SimEpoch, kind: SentenceKind) -> Vec<String> {
    let s = epoch
        .sentences
        .iter()
        .find(|s| s.kind == kind)
        .unwrap_or_else(|| panic!("{kind:?} missing"));
    verified(&s.line)
        .unwrap()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// What RMC says: time, position, speed (m/s), course.
struct RmcRead {
    time_ms: i64,
    lat: f64,
    lon: f64,
    speed_mps: f64,
    course: Option<f64>,
}

fn rmc(epoch: &SimEpoch) -> RmcRead {
    let f = fields(epoch, SentenceKind::Rmc);
    assert_eq!(f.len(), 13, "{f:?}");
    assert_eq!(f[2], "A");
    RmcRead {
        time_ms: utc_ms(date(&f[9]), time_of_day(&f[1])),
        lat: coordinate(&f[3], &f[4], 2),
        lon: coordinate(&f[5], &f[6], 3),
        speed_mps: f[7].parse::<f64>().unwrap() * MPS_PER_KNOT,
        course: (!f[8].is_empty()).then(|| f[8].parse().unwrap()),
    }
}

/// Metres between two WGS84 positions, locally (the ellipsoid's radii at their mean latitude).
fn metres(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (n, e) = north_east(a, b);
    n.hypot(e)
}

fn north_east(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    let phi = (0.5 * (a.0 + b.0)).to_radians();
    let e2 = 6.694_379_990_14e-3;
    let w = (1.0 - e2 * phi.sin().powi(2)).sqrt();
    let meridian = 6_378_137.0 * (1.0 - e2) / (w * w * w);
    let prime = 6_378_137.0 / w;
    let mut dlon = b.1 - a.1;
    if dlon > 180.0 {
        dlon -= 360.0;
    } else if dlon < -180.0 {
        dlon += 360.0;
    }
    (
        (b.0 - a.0).to_radians() * meridian,
        dlon.to_radians() * prime * phi.cos(),
    )
}

fn angle_apart(a: f64, b: f64) -> f64 {
    let d = (a - b).rem_euclid(360.0);
    d.min(360.0 - d)
}

fn drive(spec: DriveSpec) -> Vec<SimEpoch> {
    Drive::new(spec).unwrap().collect()
}

fn bytes(spec: DriveSpec) -> Vec<u8> {
    let mut out = Vec::new();
    for e in Drive::new(spec).unwrap() {
        e.write_nmea(&mut out);
    }
    out
}

// ---- the tests ------------------------------------------------------------------------------

#[test]
fn every_checksum_is_valid_except_on_the_damaged_lines() {
    let spec = DriveSpec {
        epochs: 300,
        rate_hz: 5,
        corrupt_every: Some(7),
        tunnel: Some((100, 40)),
        ..DriveSpec::default()
    };
    let mut lines = 0usize;
    let mut damaged = 0usize;
    for epoch in drive(spec) {
        for s in &epoch.sentences {
            lines += 1;
            assert!(
                s.line.starts_with('$') && s.line.ends_with("\r\n"),
                "{:?}",
                s.line
            );
            assert_eq!(s.line.matches("\r\n").count(), 1, "one line is one line");
            match s.corruption {
                None => assert!(verified(&s.line).is_ok(), "{:?}", verified(&s.line)),
                Some(kind) => {
                    damaged += 1;
                    assert!(
                        verified(&s.line).is_err(),
                        "{kind:?} left {:?} valid",
                        s.line
                    );
                }
            }
        }
        assert_eq!(
            epoch.is_corrupted(),
            epoch.sentences.iter().any(|s| s.corruption.is_some())
        );
    }
    assert_eq!(lines, 300 * 4);
    assert_eq!(damaged, lines / 7, "exactly every 7th line");
}

#[test]
fn the_same_seed_gives_identical_bytes_and_another_seed_another_drive() {
    let spec = DriveSpec::demo();
    let a = bytes(spec.clone());
    assert_eq!(a, bytes(spec.clone()));
    let other = bytes(DriveSpec {
        seed: spec.seed + 1,
        ..spec
    });
    assert_ne!(a, other);
}

#[test]
fn damaging_lines_never_changes_where_the_car_goes() {
    let clean = drive(DriveSpec::default());
    let damaged = drive(DriveSpec {
        corrupt_every: Some(3),
        ..DriveSpec::default()
    });
    assert_eq!(clean.len(), damaged.len());
    for (c, d) in clean.iter().zip(&damaged) {
        assert_eq!(
            (c.time_ms, c.lat, c.lon, c.speed_mps),
            (d.time_ms, d.lat, d.lon, d.speed_mps)
        );
        assert_eq!((c.sats, c.hdop, c.fix), (d.sats, d.hdop, d.fix));
    }
}

#[test]
fn printed_fields_parse_back_to_the_truth_within_their_precision() {
    let places = [
        ((48.137_154, 11.576_124), *b"GP", 4u8, 1u8), // Munich: N, E
        ((-23.550_52, -46.633_31), *b"GN", 8, 10),    // São Paulo: S, W, RTK-like
        ((41.574_97, -93.750_56), *b"GP", 6, 5),      // Des Moines: N, W
    ];
    for (start, talker, decimals, rate_hz) in places {
        let spec = DriveSpec {
            start,
            talker,
            precision_decimals: decimals,
            rate_hz,
            epochs: 900,
            seed: 77,
            ..DriveSpec::default()
        };
        // Half a unit of the last printed decimal of minutes, in degrees.
        let half_unit = 0.5 * 10f64.powi(-i32::from(decimals)) / 60.0 + 1e-12;
        let talker = std::str::from_utf8(&talker).unwrap();
        for e in drive(spec) {
            let r = rmc(&e);
            assert_eq!(r.time_ms, e.time_ms);
            assert!((r.lat - e.lat).abs() <= half_unit, "{} vs {}", r.lat, e.lat);
            assert!((r.lon - e.lon).abs() <= half_unit, "{} vs {}", r.lon, e.lon);
            assert!((r.speed_mps - e.speed_mps).abs() <= 0.0005 * MPS_PER_KNOT + 1e-9);
            match r.course {
                Some(c) => assert!(angle_apart(c, e.course_deg) <= 0.005 + 1e-9),
                None => assert!(e.speed_mps < 0.1, "course missing at {} m/s", e.speed_mps),
            }

            let g = fields(&e, SentenceKind::Gga);
            let rm = fields(&e, SentenceKind::Rmc);
            assert_eq!(g[0], format!("{talker}GGA"));
            assert_eq!(g.len(), 15, "{g:?}");
            assert_eq!(g[1], rm[1], "GGA and RMC share the time");
            assert_eq!(
                g[2..6],
                rm[3..7],
                "GGA and RMC share the position, to the digit"
            );
            assert_eq!(g[6], "1");
            assert_eq!(g[7].parse::<u8>().unwrap(), e.sats);
            assert!(e.sats >= 4 && e.sats <= 12);
            assert_eq!(g[8].parse::<f64>().unwrap(), e.hdop);
            assert!((g[9].parse::<f64>().unwrap() - e.alt_m).abs() <= 0.05 + 1e-9);
            assert_eq!(g[10], "M");

            let s = fields(&e, SentenceKind::Gsa);
            assert_eq!((s[1].as_str(), s[2].as_str()), ("A", "3"));
            let used = s[3..15].iter().filter(|p| !p.is_empty()).count();
            assert_eq!(used, usize::from(e.sats));
            assert_eq!(s[16], g[8], "GSA and GGA share the HDOP");

            let v = fields(&e, SentenceKind::Vtg);
            assert_eq!(v[1], rm[8], "VTG and RMC share the course");
            assert_eq!(v[5], rm[7], "VTG and RMC share the speed in knots");
            let kmh: f64 = v[7].parse().unwrap();
            assert!((kmh - e.speed_mps * 3.6).abs() <= 0.0005 + 1e-9);
            assert_eq!(v[9], "A");
        }
    }
}

#[test]
fn ordinary_lines_stay_within_the_nmea_length_limit() {
    for e in drive(DriveSpec::demo()) {
        for s in &e.sentences {
            assert!(s.line.len() <= 82, "{} bytes: {:?}", s.line.len(), s.line);
        }
    }
}

#[test]
fn implied_speeds_stay_city_like_and_agree_with_the_printed_speeds() {
    for (rate_hz, decimals) in [(1u8, 4u8), (5, 4), (10, 6), (10, 4)] {
        let spec = DriveSpec {
            rate_hz,
            precision_decimals: decimals,
            epochs: 1200,
            seed: 5,
            ..DriveSpec::default()
        };
        let dt = 1.0 / f64::from(rate_hz);
        // Printed positions are off by up to half a unit of their last decimal of minutes
        // (1852 m per minute of latitude) at each end.
        let quantum_m = 1852.0 * 10f64.powi(-i32::from(decimals));
        let epochs = drive(spec);
        let mut fastest = 0.0f64;
        let mut checked_courses = 0;
        for w in epochs.windows(2) {
            let (a, b) = (rmc(&w[0]), rmc(&w[1]));
            let d = metres((a.lat, a.lon), (b.lat, b.lon));
            let implied = d / dt;
            let printed = 0.5 * (a.speed_mps + b.speed_mps);
            fastest = fastest.max(implied).max(a.speed_mps);
            assert!(implied * 3.6 < 200.0, "{implied} m/s");
            let tolerance = 1.5 * quantum_m / dt + 0.01 * printed + 0.01;
            assert!(
                (implied - printed).abs() <= tolerance,
                "{rate_hz} Hz: implied {implied} vs printed {printed} (± {tolerance})"
            );
            if let (Some(ca), Some(cb)) = (a.course, b.course) {
                if d > 10.0 * quantum_m {
                    let (n, e) = north_east((a.lat, a.lon), (b.lat, b.lon));
                    let bearing = e.atan2(n).to_degrees().rem_euclid(360.0);
                    let half_turn = 0.5 * angle_apart(ca, cb);
                    let mean = if angle_apart(ca + 2.0 * half_turn, cb) < 1e-6 {
                        ca + half_turn
                    } else {
                        ca - half_turn
                    };
                    // Rounded positions blur the bearing of a short step.
                    let tolerance = 0.3 + (1.5 * quantum_m / d).atan().to_degrees();
                    assert!(
                        angle_apart(bearing, mean) <= tolerance,
                        "course {ca}..{cb} but moved toward {bearing} (± {tolerance})"
                    );
                    checked_courses += 1;
                }
            }
        }
        assert!(fastest * 3.6 > 50.0, "the car never got going: {fastest}");
        assert!(checked_courses > 100, "{checked_courses}");
    }
}

#[test]
fn tunnel_epochs_print_no_fix_and_the_car_comes_out_further_on() {
    // Whatever the car was doing at the portal (cruising, braking, waiting at a light).
    for seed in 0..12 {
        tunnel_drive(seed);
    }
}

fn tunnel_drive(seed: u64) {
    let spec = DriveSpec {
        tunnel: Some((120, 30)),
        epochs: 200,
        seed,
        ..DriveSpec::default()
    };
    let epochs = drive(spec);
    for e in &epochs[120..150] {
        assert!(!e.fix && e.sats == 0);
        let r = fields(e, SentenceKind::Rmc);
        assert_eq!(r[2], "V");
        assert!(r[3..9].iter().all(String::is_empty), "{r:?}");
        assert_eq!(r[12], "N");
        assert_eq!(
            utc_ms(date(&r[9]), time_of_day(&r[1])),
            e.time_ms,
            "time still known"
        );
        let g = fields(e, SentenceKind::Gga);
        assert_eq!(g[6], "0");
        assert!(g[2..6].iter().all(String::is_empty), "{g:?}");
        assert_eq!(fields(e, SentenceKind::Gsa)[2], "1");
        assert_eq!(fields(e, SentenceKind::Vtg)[9], "N");
    }
    assert!(epochs[..120].iter().chain(&epochs[150..]).all(|e| e.fix));

    let (before, after) = (rmc(&epochs[119]), rmc(&epochs[150]));
    let jump = metres((before.lat, before.lon), (after.lat, after.lon));
    let seconds = (after.time_ms - before.time_ms) as f64 / 1000.0;
    assert_eq!(seconds, 31.0);
    // What the car drove meanwhile, from the truth's speeds (trapezoids, as it integrates).
    let driven: f64 = epochs[119..=150]
        .windows(2)
        .map(|w| 0.5 * (w[0].speed_mps + w[1].speed_mps))
        .sum();
    assert!(jump > 200.0, "seed {seed}: only {jump} m further on");
    assert!(jump / seconds * 3.6 < 200.0);
    assert!(
        (jump - driven).abs() <= 0.01 * driven + 1.0,
        "seed {seed}: jumped {jump} m, drove {driven} m: the road in a tunnel is straight"
    );
    // The receiver comes back with few satellites and gains more.
    assert_eq!(epochs[150].sats, 4);
    assert!(epochs[150].hdop > epochs[170].hdop);
    assert!(epochs[170].sats >= 7);
}

#[test]
fn printed_time_strictly_increases_by_the_period() {
    for rate_hz in [1u8, 5, 10] {
        let spec = DriveSpec {
            rate_hz,
            epochs: 400,
            tunnel: Some((50, 20)),
            ..DriveSpec::default()
        };
        let period = 1000 / i64::from(rate_hz);
        let times: Vec<i64> = drive(spec)
            .iter()
            .map(|e| {
                let f = fields(e, SentenceKind::Rmc);
                let t = utc_ms(date(&f[9]), time_of_day(&f[1]));
                assert_eq!(t, e.time_ms);
                t
            })
            .collect();
        assert!(times.windows(2).all(|w| w[1] - w[0] == period));
    }
}

#[test]
fn the_date_advances_at_midnight() {
    // 2026-12-31T23:59:58Z, 5 Hz, 4 s: over midnight and into a new year.
    let spec = DriveSpec {
        start_time_ms: 1_798_761_598_000,
        rate_hz: 5,
        epochs: 20,
        tunnel: Some((8, 4)),
        ..DriveSpec::default()
    };
    let mut dates = Vec::new();
    for e in drive(spec) {
        let f = fields(&e, SentenceKind::Rmc);
        let t = utc_ms(date(&f[9]), time_of_day(&f[1]));
        assert_eq!(t, e.time_ms, "{f:?}");
        dates.push(f[9].clone());
    }
    assert_eq!(dates[0], "311226");
    assert_eq!(dates[9], "311226");
    assert_eq!(dates[10], "010127");
    assert_eq!(dates[19], "010127");
}

#[test]
fn the_nmea_crate_the_decoder_uses_accepts_every_intact_line() {
    // Not the end-to-end test (that goes through the agent's decoder); an early warning that
    // the simulator prints something the parsing library refuses.
    let specs = [
        DriveSpec::demo(),
        DriveSpec {
            talker: *b"GN",
            precision_decimals: 8,
            start: (-33.868_82, 151.209_29),
            rate_hz: 10,
            epochs: 600,
            tunnel: Some((100, 50)),
            ..DriveSpec::default()
        },
    ];
    for spec in specs {
        let half_unit = 0.5 * 10f64.powi(-i32::from(spec.precision_decimals)) / 60.0 + 1e-9;
        for e in drive(spec) {
            for s in e.sentences.iter().filter(|s| s.corruption.is_none()) {
                let text = s.line.trim_end_matches("\r\n");
                let parsed = nmea::parse_str(text)
                    .unwrap_or_else(|err| panic!("nmea refused {text:?}: {err:?}"));
                match parsed {
                    nmea::ParseResult::RMC(r) => {
                        assert_eq!(r.lat.is_some(), e.fix);
                        if let (Some(lat), Some(lon)) = (r.lat, r.lon) {
                            assert!((lat - e.lat).abs() <= half_unit, "{text}");
                            assert!((lon - e.lon).abs() <= half_unit, "{text}");
                        }
                        assert!(r.fix_date.is_some() && r.fix_time.is_some());
                    }
                    nmea::ParseResult::GGA(g) => {
                        assert_eq!(g.latitude.is_some(), e.fix);
                        assert_eq!(g.fix_satellites, Some(u32::from(e.sats)));
                    }
                    nmea::ParseResult::GSA(_) | nmea::ParseResult::VTG(_) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
}
