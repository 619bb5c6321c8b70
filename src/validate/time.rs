//! Receiver time of an epoch: date + time of day as Unix milliseconds (UTC), with the GPS
//! week-rollover correction.
//!
//! Receivers with an old firmware count GPS weeks in 10 bits and, 1024 weeks (~19.6 years)
//! after their build, report dates in the past. The rule needs no host clock (the host
//! clock of a gateway without RTC is the least trustworthy clock on board): a date before
//! Jan 1 of `not_before_year` is moved forward by 1024 weeks, at most twice, and accepted
//! only if it lands in `[not_before, not_before + 1024 weeks)`; otherwise it is invalid.

use chrono::{Days, NaiveDate};

/// One GPS week-number rollover: 1024 weeks.
pub const ROLLOVER_DAYS: u64 = 1024 * 7;

/// How many rollovers are corrected at most (a receiver two rollovers behind exists; three
/// would be a 1960s date: garbage, not an old firmware).
const MAX_ROLLOVERS: usize = 2;

/// The date to use, rollover-corrected when `rollover_fix` allows, or why it is invalid.
pub fn corrected_date(
    date: NaiveDate,
    not_before_year: i32,
    rollover_fix: bool,
) -> Result<NaiveDate, &'static str> {
    let not_before =
        NaiveDate::from_ymd_opt(not_before_year, 1, 1).ok_or("not_before_year out of range")?;
    if date >= not_before {
        return Ok(date);
    }
    if !rollover_fix {
        return Err("date before not_before_year (rollover_fix off)");
    }
    let window_end = not_before
        .checked_add_days(Days::new(ROLLOVER_DAYS))
        .ok_or("not_before_year out of range")?;
    let mut corrected = date;
    for _ in 0..MAX_ROLLOVERS {
        corrected = corrected
            .checked_add_days(Days::new(ROLLOVER_DAYS))
            .ok_or("date out of range")?;
        if corrected >= not_before {
            return if corrected < window_end {
                Ok(corrected)
            } else {
                Err("date outside the window after week-rollover correction")
            };
        }
    }
    Err("date too early even after two week-rollover corrections")
}

/// Unix milliseconds (UTC) of `date` + `time_of_day_ms`; `None` when out of range.
pub fn unix_ms(date: NaiveDate, time_of_day_ms: u32) -> Option<i64> {
    let midnight = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis();
    midnight.checked_add(i64::from(time_of_day_ms))
}

/// Unix ms of 1980-01-01: no fix is earlier (GPS time began on 1980-01-06, and
/// `not_before_year` is 1980 at the earliest, see `crate::config::ValidateConfig`).
const EARLIEST_MS: i64 = 315_532_800_000;

/// A fix's time that did not come from [`unix_ms`] (a stored record): valid only where the
/// validator could have given it (not before 1980) and RFC 3339 can print it (years up to
/// 9999).
pub fn stored_ms(time_ms: i64) -> Result<i64, &'static str> {
    let mut text = [0u8; crate::fix::RFC3339_MS_LEN];
    if time_ms < EARLIEST_MS {
        Err("time before 1980")
    } else if crate::fix::write_time_ms(time_ms, &mut text).is_none() {
        Err("time not printable as RFC 3339 (the year 10000 or later)")
    } else {
        Ok(time_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn a_stored_time_is_valid_from_1980_to_the_last_printable_millisecond() {
        let first = unix_ms(d(1980, 1, 1), 0).unwrap();
        assert_eq!(stored_ms(first), Ok(first));
        assert!(stored_ms(first - 1).is_err());
        let last = unix_ms(d(9999, 12, 31), 86_399_999).unwrap();
        assert_eq!(stored_ms(last), Ok(last));
        assert!(stored_ms(last + 1).is_err());
        assert!(stored_ms(i64::MAX).is_err() && stored_ms(i64::MIN).is_err());
    }

    #[test]
    fn a_date_from_one_rollover_ago_is_moved_forward_1024_weeks() {
        // 2001-08-02 + 1024 weeks = 2021-03-18.
        assert_eq!(
            corrected_date(d(2001, 8, 2), 2020, true),
            Ok(d(2021, 3, 18))
        );
    }

    #[test]
    fn a_date_from_two_rollovers_ago_is_moved_forward_twice() {
        assert_eq!(
            corrected_date(d(1982, 1, 15), 2020, true),
            Ok(d(2021, 4, 16))
        );
    }

    #[test]
    fn a_date_three_rollovers_ago_is_invalid() {
        assert!(corrected_date(d(1962, 1, 1), 2020, true).is_err());
    }

    #[test]
    fn without_rollover_fix_an_old_date_is_invalid_and_a_current_one_passes() {
        assert!(corrected_date(d(2019, 12, 31), 2020, false).is_err());
        assert_eq!(
            corrected_date(d(2020, 1, 1), 2020, false),
            Ok(d(2020, 1, 1))
        );
    }

    #[test]
    fn unix_ms_adds_the_time_of_day_to_midnight_utc() {
        assert_eq!(unix_ms(d(2020, 3, 18), 48_500_600), Some(1_584_538_100_600));
    }
}
