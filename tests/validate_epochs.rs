//! `Validator::check` on hand-built epochs: every reason with its exact threshold boundary,
//! the order of the checks, the fix's fields and their sources, the tunnel case, week
//! rollover, midnight, NaN and infinity.

use chrono::NaiveDate;
use gps_agent::config::ValidateSettings;
use gps_agent::fix::{Fix, FixMode};
use gps_agent::gnss::epoch::{
    Epoch, FaaMode, GgaObs, GllObs, GnsObs, GsaObs, RmcObs, UsedSats, VtgObs,
};
use gps_agent::rejection::{Reason, Rejection};
use gps_agent::validate::geo::{distance_m, speed_kmh};
use gps_agent::validate::Validator;

const LAT: f64 = 41.574970205;
const LON: f64 = -93.750558641;
/// 13:28:20.600 UTC.
const TOD: u32 = 48_500_600;
/// 2020-03-18T13:28:20.600Z.
const TIME_MS: i64 = 1_584_538_100_600;

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// A complete, healthy epoch: RMC + GGA + GSA agreeing, at `TOD` on 2020-03-18.
fn good_at(tod: u32, lat: f64, lon: f64) -> Epoch {
    Epoch {
        time_of_day_ms: Some(tod),
        date: Some(date(2020, 3, 18)),
        date_from_epoch: true,
        rmc: Some(RmcObs {
            valid: true,
            lat: Some(lat),
            lon: Some(lon),
            speed_knots: Some(3.25),
            course_deg: Some(92.308),
            faa_mode: Some(FaaMode::Autonomous),
        }),
        gga: Some(GgaObs {
            quality: Some(1),
            lat: Some(lat),
            lon: Some(lon),
            sats: Some(9),
            hdop: Some(1.0),
            alt_m: Some(278.02),
        }),
        gsa: Some(GsaObs {
            fix_mode: 3,
            hdop: Some(1.1),
            pdop: Some(1.8),
            vdop: Some(1.4),
            used: UsedSats::from_prns(1, 1..=8),
        }),
        ..Epoch::default()
    }
}

fn good() -> Epoch {
    good_at(TOD, LAT, LON)
}

fn validator() -> Validator {
    Validator::new(ValidateSettings::default())
}

fn with(f: impl FnOnce(&mut ValidateSettings)) -> Validator {
    let mut cfg = ValidateSettings::default();
    f(&mut cfg);
    Validator::new(cfg)
}

/// The reason a fresh default validator gives for `epoch`.
fn reason(epoch: &Epoch) -> Reason {
    rejected(&mut validator(), epoch).reason
}

/// One epoch through `push`, then `finish`: its verdict as if no epoch followed (a fix the
/// motion check holds for its successor is decided on what came before).
fn check(v: &mut Validator, epoch: &Epoch) -> Result<Fix, Rejection> {
    let mut out = Vec::new();
    v.push(epoch, &mut |x| out.push(x));
    v.finish(&mut |x| out.push(x));
    assert_eq!(out.len(), 1, "one verdict per epoch: {out:?}");
    out.pop().unwrap()
}

fn rejected(v: &mut Validator, epoch: &Epoch) -> Rejection {
    match check(v, epoch) {
        Ok(fix) => panic!("expected a rejection, got {fix:?}"),
        Err(r) => r,
    }
}

fn accepted(v: &mut Validator, epoch: &Epoch) -> Fix {
    match check(v, epoch) {
        Ok(fix) => fix,
        Err(r) => panic!("expected a fix, got {r:?}"),
    }
}

// ---- the fix -------------------------------------------------------------------------------

#[test]
fn a_complete_epoch_becomes_a_fix_with_every_field() {
    let mut v = validator();
    let fix = accepted(&mut v, &good());
    assert_eq!(fix.time_ms, TIME_MS);
    assert_eq!((fix.lat, fix.lon), (LAT, LON), "full f64 precision kept");
    assert_eq!(fix.alt_m, Some(278.02));
    assert_eq!(fix.speed_mps, Some(3.25 * 0.514444));
    assert_eq!(fix.course_deg, Some(92.308));
    assert_eq!(fix.hdop, Some(1.0), "GGA's HDOP before GSA's");
    assert_eq!(fix.sats, Some(9), "GGA's count before GSA's");
    assert_eq!(fix.mode, FixMode::ThreeD);
    assert_eq!(v.accepted(), 1);
    assert_eq!(v.counts().total(), 0);
}

#[test]
fn the_position_comes_from_gga_then_gns_then_rmc_then_gll() {
    // Four positions a few metres apart (within disagree_m), each slightly different.
    let p = |i: f64| (LAT + i * 1e-5, LON);
    let mut e = good();
    e.gga = e.gga.map(|g| GgaObs {
        lat: Some(p(0.0).0),
        ..g
    });
    e.gns = Some(GnsObs {
        mode: Some(FaaMode::Autonomous),
        lat: Some(p(1.0).0),
        lon: Some(LON),
        ..GnsObs::default()
    });
    e.rmc = e.rmc.map(|r| RmcObs {
        lat: Some(p(2.0).0),
        ..r
    });
    e.gll = Some(GllObs {
        valid: true,
        lat: Some(p(3.0).0),
        lon: Some(LON),
        faa_mode: None,
    });
    assert_eq!(accepted(&mut validator(), &e).lat, p(0.0).0);
    e.gga = None;
    assert_eq!(accepted(&mut validator(), &e).lat, p(1.0).0);
    e.gns = None;
    assert_eq!(accepted(&mut validator(), &e).lat, p(2.0).0);
    e.rmc = None;
    assert_eq!(accepted(&mut validator(), &e).lat, p(3.0).0);
}

#[test]
fn a_sentence_with_half_a_position_gives_way_to_the_next() {
    let mut e = good();
    e.gga = e.gga.map(|g| GgaObs {
        lon: None,
        lat: Some(LAT + 1e-5),
        ..g
    });
    assert_eq!(
        accepted(&mut validator(), &e).lat,
        LAT,
        "RMC's, GGA has no longitude"
    );
}

#[test]
fn the_mode_is_gsa_s_and_without_gsa_3d_when_an_altitude_is_given() {
    let mut e = good();
    e.gsa = e.gsa.map(|g| GsaObs { fix_mode: 2, ..g });
    assert_eq!(
        accepted(&mut validator(), &e).mode,
        FixMode::TwoD,
        "GSA 2 wins over altitude"
    );
    e.gsa = None;
    assert_eq!(
        accepted(&mut validator(), &e).mode,
        FixMode::ThreeD,
        "GGA altitude"
    );
    e.gga = None;
    let fix = accepted(&mut validator(), &e);
    assert_eq!((fix.mode, fix.alt_m), (FixMode::TwoD, None), "RMC only");
    e.gns = Some(GnsObs {
        mode: Some(FaaMode::Differential),
        lat: Some(LAT),
        lon: Some(LON),
        alt_m: Some(12.5),
        ..GnsObs::default()
    });
    let fix = accepted(&mut validator(), &e);
    assert_eq!(
        (fix.mode, fix.alt_m),
        (FixMode::ThreeD, Some(12.5)),
        "GNS altitude"
    );
}

#[test]
fn speed_and_course_come_from_vtg_when_rmc_has_none() {
    let mut e = good();
    e.rmc = e.rmc.map(|r| RmcObs {
        speed_knots: None,
        course_deg: None,
        ..r
    });
    e.vtg = Some(VtgObs {
        course_deg: Some(10.5),
        speed_knots: Some(10.0),
        faa_mode: Some(FaaMode::Autonomous),
    });
    let fix = accepted(&mut validator(), &e);
    assert_eq!(fix.speed_mps, Some(10.0 * 0.514444));
    assert_eq!(fix.course_deg, Some(10.5));
    e.vtg = None;
    let fix = accepted(&mut validator(), &e);
    assert_eq!(
        (fix.speed_mps, fix.course_deg),
        (None, None),
        "omitted when nobody said"
    );
}

#[test]
fn hdop_and_satellites_fall_back_to_gns_then_gsa() {
    let mut e = good();
    e.gga = e.gga.map(|g| GgaObs {
        hdop: None,
        sats: None,
        ..g
    });
    e.gns = Some(GnsObs {
        mode: Some(FaaMode::Autonomous),
        lat: Some(LAT),
        lon: Some(LON),
        sats: Some(14),
        hdop: Some(0.7),
        alt_m: None,
    });
    let fix = accepted(&mut validator(), &e);
    assert_eq!((fix.hdop, fix.sats), (Some(0.7), Some(14)));
    e.gns = None;
    let fix = accepted(&mut validator(), &e);
    assert_eq!((fix.hdop, fix.sats), (Some(1.1), Some(8)), "GSA's");
    e.gsa = e.gsa.map(|g| GsaObs {
        used: UsedSats::default(),
        ..g
    });
    assert_eq!(
        accepted(&mut validator(), &e).sats,
        None,
        "a GSA listing none says nothing"
    );
}

// ---- what the receiver says about its fix --------------------------------------------------

/// An epoch with time and date and nothing else.
fn bare() -> Epoch {
    Epoch {
        time_of_day_ms: Some(TOD),
        date: Some(date(2020, 3, 18)),
        date_from_epoch: true,
        ..Epoch::default()
    }
}

#[test]
fn each_no_fix_status_alone_is_no_fix() {
    let cases = [
        Epoch {
            rmc: Some(RmcObs {
                valid: false,
                ..RmcObs::default()
            }),
            ..bare()
        },
        Epoch {
            gga: Some(GgaObs {
                quality: Some(0),
                ..GgaObs::default()
            }),
            ..bare()
        },
        Epoch {
            gsa: Some(GsaObs {
                fix_mode: 1,
                ..GsaObs::default()
            }),
            ..bare()
        },
        Epoch {
            gll: Some(GllObs {
                valid: false,
                ..GllObs::default()
            }),
            ..bare()
        },
        Epoch {
            gns: Some(GnsObs {
                mode: Some(FaaMode::NotValid),
                ..GnsObs::default()
            }),
            ..bare()
        },
    ];
    for e in cases {
        assert_eq!(reason(&e), Reason::NoFix, "{e:?}");
    }
}

#[test]
fn a_cold_receiver_saying_no_fix_everywhere_is_no_fix_not_incomplete() {
    // RMC V with mode N and empty fields, GGA 0, GSA 1, no date: the usual start-up chatter.
    let e = Epoch {
        time_of_day_ms: Some(TOD),
        rmc: Some(RmcObs {
            valid: false,
            faa_mode: Some(FaaMode::NotValid),
            ..RmcObs::default()
        }),
        gga: Some(GgaObs::default()),
        gsa: Some(GsaObs {
            fix_mode: 1,
            ..GsaObs::default()
        }),
        ..Epoch::default()
    };
    let r = rejected(&mut validator(), &e);
    assert_eq!(r.reason, Reason::NoFix);
    assert_eq!(
        (r.time_ms, r.lat, r.lon),
        (None, None, None),
        "nothing known, nothing made up"
    );
}

#[test]
fn dead_reckoning_manual_and_simulator_are_estimated() {
    for q in [6, 7, 8] {
        let mut e = good();
        e.gga = e.gga.map(|g| GgaObs {
            quality: Some(q),
            ..g
        });
        assert_eq!(reason(&e), Reason::Estimated, "GGA quality {q}");
    }
    for mode in [FaaMode::Estimated, FaaMode::Manual, FaaMode::Simulator] {
        let mut e = good();
        e.rmc = e.rmc.map(|r| RmcObs {
            faa_mode: Some(mode),
            ..r
        });
        assert_eq!(reason(&e), Reason::Estimated, "RMC {mode:?}");
        let mut e = good();
        e.vtg = Some(VtgObs {
            faa_mode: Some(mode),
            ..VtgObs::default()
        });
        assert_eq!(reason(&e), Reason::Estimated, "VTG {mode:?}");
        let mut e = good();
        e.gll = Some(GllObs {
            valid: true,
            lat: Some(LAT),
            lon: Some(LON),
            faa_mode: Some(mode),
        });
        assert_eq!(reason(&e), Reason::Estimated, "GLL {mode:?}");
        let mut e = good();
        e.gns = Some(GnsObs {
            mode: Some(mode),
            lat: Some(LAT),
            lon: Some(LON),
            ..GnsObs::default()
        });
        assert_eq!(reason(&e), Reason::Estimated, "GNS {mode:?}");
    }
}

#[test]
fn dead_reckoning_with_rmc_status_v_is_estimated_not_no_fix() {
    let mut e = good();
    e.rmc = e.rmc.map(|r| RmcObs {
        valid: false,
        faa_mode: Some(FaaMode::Estimated),
        ..r
    });
    e.gga = e.gga.map(|g| GgaObs {
        quality: Some(6),
        ..g
    });
    assert_eq!(reason(&e), Reason::Estimated);
}

#[test]
fn faa_mode_n_beside_a_claimed_fix_is_estimated() {
    let mut e = good();
    e.rmc = e.rmc.map(|r| RmcObs {
        faa_mode: Some(FaaMode::NotValid),
        ..r
    });
    assert_eq!(reason(&e), Reason::Estimated);
    let mut e = good();
    e.vtg = Some(VtgObs {
        faa_mode: Some(FaaMode::NotValid),
        ..VtgObs::default()
    });
    assert_eq!(reason(&e), Reason::Estimated);
}

#[test]
fn vendor_mode_letters_are_treated_as_valid() {
    let mut e = good();
    e.rmc = e.rmc.map(|r| RmcObs {
        faa_mode: Some(FaaMode::Other),
        ..r
    });
    accepted(&mut validator(), &e);
}

#[test]
fn rmc_and_gga_status_apart_is_disagree_both_ways() {
    let mut e = good();
    e.gga = e.gga.map(|g| GgaObs {
        quality: Some(0),
        ..g
    });
    assert_eq!(reason(&e), Reason::Disagree, "RMC A, GGA 0");
    let mut e = good();
    e.rmc = e.rmc.map(|r| RmcObs { valid: false, ..r });
    assert_eq!(reason(&e), Reason::Disagree, "RMC V, GGA 1");
}

// ---- the position --------------------------------------------------------------------------

#[test]
fn positions_further_apart_than_disagree_m_disagree_and_exactly_that_far_pass() {
    let (lat2, lon2) = (LAT + 0.0004, LON + 0.0003);
    let d = distance_m(LAT, LON, lat2, lon2);
    assert!(d > 40.0 && d < 60.0, "{d}");
    let mut e = good();
    e.rmc = e.rmc.map(|r| RmcObs {
        lat: Some(lat2),
        lon: Some(lon2),
        ..r
    });
    accepted(&mut with(|c| c.disagree_m = d), &e);
    let r = rejected(&mut with(|c| c.disagree_m = d * (1.0 - 1e-9)), &e);
    assert_eq!(r.reason, Reason::Disagree);
    assert_eq!(
        (r.lat, r.lon),
        (Some(LAT), Some(LON)),
        "the GGA position, as preferred"
    );
}

#[test]
fn gll_and_gns_positions_are_compared_too() {
    let mut e = good();
    e.gll = Some(GllObs {
        valid: true,
        lat: Some(LAT + 0.01),
        lon: Some(LON),
        faa_mode: None,
    });
    assert_eq!(reason(&e), Reason::Disagree);
    let mut e = good();
    e.gns = Some(GnsObs {
        mode: Some(FaaMode::Autonomous),
        lat: Some(LAT),
        lon: Some(LON - 0.01),
        ..GnsObs::default()
    });
    assert_eq!(reason(&e), Reason::Disagree);
}

fn at(lat: f64, lon: f64) -> Epoch {
    good_at(TOD, lat, lon)
}

#[test]
fn latitude_and_longitude_limits_are_inclusive() {
    for (lat, lon) in [(90.0, 0.5), (-90.0, 0.5), (10.0, 180.0), (10.0, -180.0)] {
        accepted(&mut validator(), &at(lat, lon));
    }
    for (lat, lon) in [
        (90.000001, 0.5),
        (-90.000001, 0.5),
        (10.0, 180.000001),
        (10.0, -180.000001),
    ] {
        let r = rejected(&mut validator(), &at(lat, lon));
        assert_eq!(r.reason, Reason::OutOfRange, "{lat},{lon}");
        assert_eq!(
            (r.lat, r.lon),
            (Some(lat), Some(lon)),
            "known values are kept"
        );
    }
}

#[test]
fn nan_and_infinite_positions_are_out_of_range_and_left_out_of_the_rejection() {
    for (lat, lon) in [
        (f64::NAN, LON),
        (LAT, f64::NAN),
        (f64::INFINITY, LON),
        (LAT, f64::NEG_INFINITY),
    ] {
        let r = rejected(&mut validator(), &at(lat, lon));
        assert_eq!(r.reason, Reason::OutOfRange, "{lat},{lon}");
        assert!(
            r.lat.is_none_or(f64::is_finite) && r.lon.is_none_or(f64::is_finite),
            "{r:?}"
        );
        assert_eq!(r.time_ms, Some(TIME_MS));
    }
}

#[test]
fn a_nan_in_a_sentence_that_is_not_the_preferred_one_is_still_out_of_range() {
    let mut e = good();
    e.rmc = e.rmc.map(|r| RmcObs {
        lat: Some(f64::NAN),
        ..r
    });
    assert_eq!(reason(&e), Reason::OutOfRange);
}

#[test]
fn nan_or_infinite_hdop_altitude_or_speed_are_out_of_range() {
    let mut e = good();
    e.gga = e.gga.map(|g| GgaObs {
        hdop: Some(f64::NAN),
        ..g
    });
    assert_eq!(
        reason(&e),
        Reason::OutOfRange,
        "NaN HDOP would slip past the hdop check"
    );
    let mut e = good();
    e.gga = e.gga.map(|g| GgaObs {
        alt_m: Some(f64::INFINITY),
        ..g
    });
    assert_eq!(reason(&e), Reason::OutOfRange);
    let mut e = good();
    e.rmc = e.rmc.map(|r| RmcObs {
        speed_knots: Some(f64::NAN),
        ..r
    });
    assert_eq!(reason(&e), Reason::OutOfRange);
}

#[test]
fn zero_zero_within_a_millionth_of_a_degree_is_null_island() {
    for (lat, lon) in [(0.0, 0.0), (1e-6, -1e-6), (-1e-6, 1e-6)] {
        assert_eq!(reason(&at(lat, lon)), Reason::NullIsland, "{lat},{lon}");
    }
    for (lat, lon) in [(2e-6, 0.0), (0.0, -2e-6), (0.0, 9.5)] {
        accepted(&mut validator(), &at(lat, lon));
    }
}

#[test]
fn an_epoch_without_a_position_is_incomplete_with_its_time() {
    let mut e = good();
    e.gga = e.gga.map(|g| GgaObs {
        lat: None,
        lon: None,
        ..g
    });
    e.rmc = e.rmc.map(|r| RmcObs {
        lat: None,
        lon: None,
        ..r
    });
    let r = rejected(&mut validator(), &e);
    assert_eq!(r.reason, Reason::Incomplete);
    assert_eq!((r.time_ms, r.lat, r.lon), (Some(TIME_MS), None, None));
}

#[test]
fn half_a_position_is_incomplete_and_keeps_the_half() {
    let mut e = good();
    e.gga = e.gga.map(|g| GgaObs { lon: None, ..g });
    e.rmc = e.rmc.map(|r| RmcObs { lon: None, ..r });
    let r = rejected(&mut validator(), &e);
    assert_eq!(
        (r.reason, r.lat, r.lon),
        (Reason::Incomplete, Some(LAT), None)
    );
}

// ---- the time ------------------------------------------------------------------------------

#[test]
fn an_epoch_without_time_or_date_is_incomplete_with_its_position() {
    let mut e = good();
    e.time_of_day_ms = None;
    let r = rejected(&mut validator(), &e);
    assert_eq!(
        (r.reason, r.time_ms, r.lat),
        (Reason::Incomplete, None, Some(LAT))
    );
    let mut e = good();
    e.date = None;
    let r = rejected(&mut validator(), &e);
    assert_eq!(
        (r.reason, r.time_ms, r.lon),
        (Reason::Incomplete, None, Some(LON))
    );
}

#[test]
fn a_date_before_not_before_year_is_time_invalid_without_rollover_fix() {
    let mut v = with(|c| c.rollover_fix = false);
    let mut e = good();
    e.date = Some(date(2019, 12, 31));
    let r = rejected(&mut v, &e);
    assert_eq!(r.reason, Reason::TimeInvalid);
    assert_eq!(
        r.time_ms,
        Some(TIME_MS - 78 * 86_400_000),
        "the uncorrected time, as known"
    );
    e.date = Some(date(2020, 1, 1));
    accepted(&mut v, &e);
}

#[test]
fn a_week_rollover_date_is_corrected_by_1024_weeks() {
    let mut e = good();
    e.date = Some(date(2001, 8, 2));
    let fix = accepted(&mut validator(), &e);
    let expected = date(2021, 3, 18)
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis();
    assert_eq!(fix.time_ms, expected + i64::from(TOD));
}

#[test]
fn rollover_correction_reaches_back_exactly_two_rollovers() {
    // 2020-01-01 minus 2 x 1024 weeks is 1980-10-01: corrected to 2020-01-01 itself.
    let mut e = good();
    e.date = Some(date(1980, 10, 1));
    let fix = accepted(&mut validator(), &e);
    let expected = date(2020, 1, 1)
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis();
    assert_eq!(fix.time_ms, expected + i64::from(TOD));
    // One day earlier would need a third rollover.
    e.date = Some(date(1980, 9, 30));
    assert_eq!(reason(&e), Reason::TimeInvalid);
    // One rollover back lands on not_before exactly.
    e.date = Some(date(2000, 5, 17));
    let fix = accepted(&mut validator(), &e);
    assert_eq!(fix.time_ms, expected + i64::from(TOD));
}

#[test]
fn the_same_time_twice_is_duplicate_time_and_so_is_an_earlier_one() {
    let mut v = validator();
    accepted(&mut v, &good());
    assert_eq!(rejected(&mut v, &good()).reason, Reason::DuplicateTime);
    let r = rejected(&mut v, &good_at(TOD - 1, LAT, LON));
    assert_eq!(
        (r.reason, r.time_ms),
        (Reason::DuplicateTime, Some(TIME_MS - 1))
    );
    accepted(&mut v, &good_at(TOD + 1, LAT, LON));
}

#[test]
fn a_clock_that_went_back_is_followed_once_jump_confirm_good_epochs_agree() {
    // A fix from a wrong future time was accepted (or the receiver's clock was reset):
    // later real fixes are all "earlier". They are rejected until `jump_confirm` (3) good
    // epochs in a row agree on the new timeline, then the agent follows it: never locked out.
    let mut v = validator();
    accepted(&mut v, &good_at(TOD + 3_600_000, LAT, LON));
    for i in 0..2 {
        let r = rejected(&mut v, &good_at(TOD + i * 1000, LAT, LON));
        assert_eq!(r.reason, Reason::DuplicateTime);
    }
    let fix = accepted(&mut v, &good_at(TOD + 2000, LAT, LON));
    assert_eq!(fix.time_ms, TIME_MS + 2000);
    accepted(&mut v, &good_at(TOD + 3000, LAT, LON));
    // And the new timeline's own duplicates are still duplicates.
    assert_eq!(
        rejected(&mut v, &good_at(TOD + 3000, LAT, LON)).reason,
        Reason::DuplicateTime
    );
}

#[test]
fn earlier_epochs_that_do_not_advance_among_themselves_never_take_over() {
    let mut v = validator();
    accepted(&mut v, &good_at(TOD + 3_600_000, LAT, LON));
    // The same earlier time over and over (a stuck receiver replaying a cycle).
    for _ in 0..10 {
        let r = rejected(&mut v, &good_at(TOD, LAT, LON));
        assert_eq!(r.reason, Reason::DuplicateTime);
    }
}

#[test]
fn a_date_carried_across_midnight_gives_the_next_day() {
    let mut v = validator();
    let before = good_at(86_399_000, LAT, LON);
    let first = accepted(&mut v, &before);
    // Just after midnight, GGA only: the decoder carried the date and rolled it over.
    let after = Epoch {
        time_of_day_ms: Some(0),
        date: Some(date(2020, 3, 19)),
        date_from_epoch: false,
        gga: before.gga,
        ..Epoch::default()
    };
    let second = accepted(&mut v, &after);
    assert_eq!(second.time_ms - first.time_ms, 1000);
}

#[test]
fn a_carried_date_that_was_not_rolled_over_is_caught_as_going_backwards() {
    let mut v = validator();
    accepted(&mut v, &good_at(86_399_000, LAT, LON));
    let stale = Epoch {
        time_of_day_ms: Some(0),
        date_from_epoch: false,
        rmc: None,
        ..good()
    };
    assert_eq!(rejected(&mut v, &stale).reason, Reason::DuplicateTime);
}

// ---- quality -------------------------------------------------------------------------------

#[test]
fn hdop_equal_to_max_hdop_passes_and_above_is_rejected() {
    let mut e = good();
    e.gga = e.gga.map(|g| GgaObs {
        hdop: Some(2.5),
        ..g
    });
    accepted(&mut with(|c| c.max_hdop = 2.5), &e);
    let r = rejected(&mut with(|c| c.max_hdop = 2.49), &e);
    assert_eq!(
        (r.reason, r.time_ms, r.lat, r.lon),
        (Reason::Hdop, Some(TIME_MS), Some(LAT), Some(LON))
    );
}

#[test]
fn satellites_equal_to_min_sats_pass_and_fewer_are_rejected() {
    let mut e = good();
    e.gga = e.gga.map(|g| GgaObs { sats: Some(4), ..g });
    accepted(&mut with(|c| c.min_sats = 4), &e);
    assert_eq!(
        rejected(&mut with(|c| c.min_sats = 5), &e).reason,
        Reason::Satellites
    );
}

#[test]
fn an_unknown_satellite_count_is_not_rejected() {
    let mut e = good();
    e.gga = e.gga.map(|g| GgaObs { sats: None, ..g });
    e.gsa = None;
    accepted(&mut with(|c| c.min_sats = 12), &e);
}

// ---- movement ------------------------------------------------------------------------------

/// A fix `secs` seconds after `TOD`, `north_m` metres north of `LAT`, without speed or
/// course: these tests are about the implied speed alone; with no Doppler to compare, the
/// motion check has nothing to say (its own tests are in `validate_motion.rs`).
fn moved(secs: u32, north_m: f64) -> Epoch {
    let mut e = good_at(TOD + secs * 1000, LAT + north_m / 111_195.0, LON);
    e.rmc = e.rmc.map(|r| RmcObs {
        speed_knots: None,
        course_deg: None,
        ..r
    });
    e
}

#[test]
fn the_first_fix_is_accepted_wherever_it_is() {
    accepted(&mut validator(), &moved(0, 1_000_000.0));
}

#[test]
fn an_implied_speed_equal_to_max_speed_passes_and_above_is_a_jump() {
    let a = good();
    let b = moved(10, 500.0);
    let (la, lb) = (a.gga.unwrap(), b.gga.unwrap());
    let kmh = speed_kmh(
        distance_m(
            la.lat.unwrap(),
            la.lon.unwrap(),
            lb.lat.unwrap(),
            lb.lon.unwrap(),
        ),
        10_000,
    );
    assert!((kmh - 180.0).abs() < 0.5, "{kmh}");
    let mut v = with(|c| c.max_speed_kmh = kmh);
    accepted(&mut v, &a);
    accepted(&mut v, &b);
    let mut v = with(|c| c.max_speed_kmh = kmh * (1.0 - 1e-9));
    accepted(&mut v, &a);
    assert_eq!(rejected(&mut v, &b).reason, Reason::SpeedJump);
}

#[test]
fn after_a_tunnel_the_new_position_is_accepted_once_jump_confirm_fixes_agree() {
    let mut v = validator(); // jump_confirm = 3, max 300 km/h
    accepted(&mut v, &moved(0, 0.0));
    // 60 s of tunnel, then 20 km further: 1200 km/h implied.
    for i in 0..2 {
        let r = rejected(&mut v, &moved(60 + i, 20_000.0 + 20.0 * f64::from(i)));
        assert_eq!(r.reason, Reason::SpeedJump, "candidate {i}");
    }
    let fix = accepted(&mut v, &moved(62, 20_040.0));
    assert_eq!(fix.time_ms, TIME_MS + 62_000);
    // The new anchor holds: the next fix along the road is plainly accepted.
    accepted(&mut v, &moved(63, 20_060.0));
    assert_eq!(v.counts().get(Reason::SpeedJump), 2);
    assert_eq!(v.accepted(), 3);
}

#[test]
fn a_single_glitch_is_rejected_and_does_not_move_the_anchor() {
    let mut v = validator();
    accepted(&mut v, &moved(0, 0.0));
    assert_eq!(
        rejected(&mut v, &moved(1, 5_000.0)).reason,
        Reason::SpeedJump
    );
    accepted(&mut v, &moved(2, 20.0));
    // The glitch's candidate track was spent: another lone glitch is a jump again.
    assert_eq!(
        rejected(&mut v, &moved(3, 5_000.0)).reason,
        Reason::SpeedJump
    );
    accepted(&mut v, &moved(4, 40.0));
}

#[test]
fn jumps_that_disagree_with_each_other_are_never_confirmed() {
    let mut v = validator();
    accepted(&mut v, &moved(0, 0.0));
    for i in 1..=8u32 {
        let far = if i % 2 == 0 { 30_000.0 } else { -30_000.0 };
        assert_eq!(
            rejected(&mut v, &moved(i, far)).reason,
            Reason::SpeedJump,
            "fix {i}"
        );
    }
}

#[test]
fn an_epoch_rejected_for_another_reason_does_not_count_towards_confirmation() {
    let mut v = validator();
    accepted(&mut v, &moved(0, 0.0));
    assert_eq!(
        rejected(&mut v, &moved(60, 20_000.0)).reason,
        Reason::SpeedJump
    );
    let mut poor = moved(61, 20_010.0);
    poor.gga = poor.gga.map(|g| GgaObs {
        hdop: Some(50.0),
        ..g
    });
    assert_eq!(rejected(&mut v, &poor).reason, Reason::Hdop);
    assert_eq!(
        rejected(&mut v, &moved(62, 20_020.0)).reason,
        Reason::SpeedJump
    );
    accepted(&mut v, &moved(63, 20_030.0));
}

#[test]
fn jump_confirm_sets_how_many_agreeing_fixes_it_takes() {
    let mut v = with(|c| c.jump_confirm = 5);
    accepted(&mut v, &moved(0, 0.0));
    for i in 0..4 {
        assert_eq!(
            rejected(&mut v, &moved(60 + i, 20_000.0 + 10.0 * f64::from(i))).reason,
            Reason::SpeedJump
        );
    }
    accepted(&mut v, &moved(64, 20_040.0));
}

#[test]
fn a_long_gap_with_a_plausible_distance_is_accepted_directly() {
    let mut v = validator();
    accepted(&mut v, &moved(0, 0.0));
    // 10 minutes, 15 km: 90 km/h.
    accepted(&mut v, &moved(600, 15_000.0));
}

// ---- counting ------------------------------------------------------------------------------

#[test]
fn counts_hold_rejections_by_reason_and_accepted_is_counted_apart() {
    let mut v = validator();
    accepted(&mut v, &good());
    rejected(&mut v, &good());
    rejected(&mut v, &good());
    rejected(&mut v, &at(0.0, 0.0));
    accepted(&mut v, &moved(1, 5.0));
    assert_eq!(v.accepted(), 2);
    assert_eq!(v.counts().get(Reason::DuplicateTime), 2);
    assert_eq!(v.counts().get(Reason::NullIsland), 1);
    assert_eq!(v.counts().total(), 3);
}
