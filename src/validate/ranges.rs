//! The physical range of every field a fix carries, decided here and nowhere else.
//!
//! A sentence with a valid checksum can still say what no receiver on a road vehicle can
//! mean: a speed of 1e30 knots, a course of -720°, an altitude of -1e8 m, an HDOP of 1e-320.
//! Each field has a range and an action for a value outside it:
//! - **reject** (`out_of_range`): the value belongs to the position solution (latitude,
//!   longitude, altitude, speed, course); a solution that prints nonsense in one of them is
//!   not trusted in the others either;
//! - **drop**: the value is a quality figure the fix stands without (HDOP below what any
//!   satellite geometry gives, which receivers print as `0.0` when they did not compute it;
//!   more satellites than the systems have). The fix is kept without the field, so nothing
//!   downstream (the buffer's scaled integers, the payload, `parse`) ever sees it.
//!
//! Whatever passes fits the buffer's scaled integers exactly, so `parse` and the daemon's
//! payload print the same numbers for the same sentence. Latitude and longitude minutes of 60
//! or more are caught where the sentence's text is still at hand (`crate::gnss::sentence`
//! marks such a coordinate NaN) and rejected here with the rest. [`stored`] applies the same
//! ranges to a whole fix that did not come through the validator (the buffer's crash journal).

use crate::fix::Fix;

/// Largest speed over ground, m/s (720 km/h): far above any road vehicle, far below what a
/// broken field says. Negative speeds are rejected too.
pub const SPEED_MAX_MPS: f64 = 200.0;
/// Altitude above mean sea level, metres: the Dead Sea shore is at -430 m, the highest road
/// at about 5,800 m; an aircraft's receiver stays under 20 km.
pub const ALT_MIN_M: f64 = -1_000.0;
pub const ALT_MAX_M: f64 = 20_000.0;
/// Course over ground, degrees true: `[0, 360]`, with 360 read as 0.
pub const COURSE_MAX_DEG: f64 = 360.0;
/// Below this an HDOP is not a measurement (the best geometry of a full sky is about 0.4):
/// the field is dropped.
pub const HDOP_MIN: f64 = 0.1;
/// More satellites used than this is not a count (GGA's field has two digits): dropped.
pub const SATS_MAX: u8 = 99;

/// Why a value is out of range, for the rejection's detail.
pub fn latitude(v: f64) -> Result<f64, &'static str> {
    if v.is_finite() && v.abs() <= 90.0 {
        Ok(v)
    } else {
        Err("latitude NaN, infinite, beyond ±90 or with 60 minutes or more")
    }
}

pub fn longitude(v: f64) -> Result<f64, &'static str> {
    if v.is_finite() && v.abs() <= 180.0 {
        Ok(v)
    } else {
        Err("longitude NaN, infinite, beyond ±180 or with 60 minutes or more")
    }
}

pub fn altitude(v: f64) -> Result<f64, &'static str> {
    if (ALT_MIN_M..=ALT_MAX_M).contains(&v) {
        Ok(v)
    } else {
        Err("altitude outside -1,000..20,000 m")
    }
}

/// Speed in knots as the sentence gives it, checked in m/s.
pub fn speed_knots(knots: f64, knots_to_mps: f64) -> Result<f64, &'static str> {
    speed_mps(knots * knots_to_mps).map(|_| knots)
}

/// Speed over ground in m/s.
pub fn speed_mps(mps: f64) -> Result<f64, &'static str> {
    if (0.0..=SPEED_MAX_MPS).contains(&mps) {
        Ok(mps)
    } else {
        Err("speed negative, beyond 200 m/s or NaN")
    }
}

/// Course in `[0, 360]`; 360 comes back as 0 (the same direction, and `[0, 360)` is what a
/// fix says).
pub fn course(v: f64) -> Result<f64, &'static str> {
    if (0.0..COURSE_MAX_DEG).contains(&v) {
        Ok(v)
    } else if v == COURSE_MAX_DEG {
        Ok(0.0)
    } else {
        Err("course outside 0..360° or NaN")
    }
}

/// HDOP: NaN, infinite or negative rejects the epoch; a finite value below [`HDOP_MIN`] is
/// no measurement (`Ok(None)`: dropped).
pub fn hdop(v: f64) -> Result<Option<f64>, &'static str> {
    if !v.is_finite() || v < 0.0 {
        Err("HDOP NaN, infinite or negative")
    } else if v < HDOP_MIN {
        Ok(None)
    } else {
        Ok(Some(v))
    }
}

/// Satellites used: beyond [`SATS_MAX`] the count is dropped.
pub fn sats(n: u8) -> Option<u8> {
    (n <= SATS_MAX).then_some(n)
}

/// A fix that did not come from the validator (a record of the buffer's crash journal,
/// which whoever can write the agent's state directory can forge, checksum and all) put
/// through the same ranges with the same actions: `Err` where a live epoch would be
/// rejected as `out_of_range`, the field dropped where a live one would be. Its time must be
/// one the validator can give and RFC 3339 can print ([`super::time::stored_ms`]).
pub fn stored(fix: &Fix) -> Result<Fix, &'static str> {
    let mut checked = *fix;
    checked.time_ms = super::time::stored_ms(fix.time_ms)?;
    checked.lat = latitude(fix.lat)?;
    checked.lon = longitude(fix.lon)?;
    checked.alt_m = fix.alt_m.map(altitude).transpose()?;
    checked.speed_mps = fix.speed_mps.map(speed_mps).transpose()?;
    checked.course_deg = fix.course_deg.map(course).transpose()?;
    checked.hdop = fix.hdop.map(hdop).transpose()?.flatten();
    checked.sats = fix.sats.and_then(sats);
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: f64 = 0.514444;

    #[test]
    fn each_range_holds_its_ends_and_refuses_beyond() {
        assert!(latitude(90.0).is_ok() && latitude(-90.0).is_ok());
        assert!(latitude(90.000_001).is_err() && latitude(f64::NAN).is_err());
        assert!(longitude(-180.0).is_ok() && longitude(180.1).is_err());
        assert!(altitude(-1_000.0).is_ok() && altitude(20_000.0).is_ok());
        assert!(altitude(-1_000.1).is_err() && altitude(-1e8).is_err());
        assert!(altitude(1e308).is_err() && altitude(f64::INFINITY).is_err());
        assert!(speed_knots(0.0, K).is_ok());
        assert!(speed_knots(200.0 / K, K).is_ok());
        assert!(speed_knots(201.0 / K, K).is_err());
        assert!(speed_knots(-50.0, K).is_err() && speed_knots(1e30, K).is_err());
        assert!(speed_knots(f64::NAN, K).is_err());
    }

    #[test]
    fn course_360_is_north_and_negative_or_wider_courses_are_refused() {
        assert_eq!(course(360.0), Ok(0.0));
        assert_eq!(course(359.99), Ok(359.99));
        assert_eq!(course(0.0), Ok(0.0));
        assert!(course(-720.0).is_err() && course(360.01).is_err());
        assert!(course(-0.01).is_err() && course(f64::NAN).is_err());
    }

    fn fix() -> Fix {
        Fix {
            time_ms: 1_700_000_000_000,
            lat: 48.1,
            lon: 11.5,
            alt_m: Some(520.0),
            speed_mps: Some(13.0),
            course_deg: Some(90.0),
            hdop: Some(0.9),
            sats: Some(9),
            mode: crate::fix::FixMode::ThreeD,
            event: None,
        }
    }

    #[test]
    fn a_stored_fix_is_refused_where_a_live_epoch_would_be_and_loses_what_a_live_one_drops() {
        assert_eq!(stored(&fix()), Ok(fix()));
        let with = |f: fn(&mut Fix)| {
            let mut x = fix();
            f(&mut x);
            stored(&x)
        };
        assert!(with(|f| f.lat = f64::NAN).is_err());
        assert!(with(|f| f.lat = 1000.0).is_err());
        assert!(with(|f| f.lon = -5000.0).is_err());
        assert!(with(|f| f.alt_m = Some(9_223_372_036_854_776.0)).is_err());
        assert!(with(|f| f.speed_mps = Some(-1.0)).is_err());
        assert!(with(|f| f.course_deg = Some(9999.0)).is_err());
        assert!(with(|f| f.hdop = Some(-3.0)).is_err());
        assert!(with(|f| f.time_ms = i64::MAX).is_err());
        // +10000-01-01T00:00:00.000Z
        assert!(with(|f| f.time_ms = 253_402_300_800_000).is_err());
        assert_eq!(
            with(|f| f.course_deg = Some(360.0)).map(|f| f.course_deg),
            Ok(Some(0.0))
        );
        assert_eq!(with(|f| f.hdop = Some(0.0)).map(|f| f.hdop), Ok(None));
        assert_eq!(with(|f| f.sats = Some(200)).map(|f| f.sats), Ok(None));
    }

    #[test]
    fn a_vanishing_hdop_is_dropped_and_a_negative_one_refused() {
        assert_eq!(hdop(1e-320), Ok(None));
        assert_eq!(hdop(0.0), Ok(None));
        assert_eq!(hdop(0.099), Ok(None));
        assert_eq!(hdop(HDOP_MIN), Ok(Some(HDOP_MIN)));
        assert_eq!(hdop(99.99), Ok(Some(99.99)));
        assert!(hdop(-0.5).is_err() && hdop(f64::INFINITY).is_err());
        assert_eq!(sats(99), Some(99));
        assert_eq!(sats(100), None);
    }
}
