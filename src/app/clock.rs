//! Which clock fix ages are measured against.
//!
//! A fix carries the receiver's UTC. Its age (the fix-to-ack latency in `/metrics`) needs a
//! "now" on the same time base. The gateway's system clock is the natural one, but a box
//! without a battery-backed RTC boots in the past and may run for hours before NTP reaches it
//! over a cellular link, which would make every latency zero or months long. So the GNSS
//! receiver is used as a clock too: the UTC of the newest accepted fix plus the monotonic time
//! since it was accepted. The system clock is trusted while it agrees with that estimate
//! within [`TRUST_SYSTEM_WITHIN`] (the estimate runs up to one epoch late, as an epoch is
//! complete only when the next begins); otherwise the estimate is used. With no fix accepted
//! in this run yet there is only the system clock.

use std::time::{Duration, Instant};

/// Largest disagreement between the system clock and the GNSS estimate that still counts as
/// agreement: above a few epochs of assembly delay, far below any unsynchronised RTC.
pub const TRUST_SYSTEM_WITHIN: Duration = Duration::from_secs(10);

/// The receiver's UTC now (ms), from the newest accepted fix's UTC and when it was accepted.
pub fn gnss_now_ms(last_fix: Option<(i64, Instant)>, now: Instant) -> Option<i64> {
    let (utc_ms, at) = last_fix?;
    let since = i64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(i64::MAX);
    Some(utc_ms.saturating_add(since))
}

/// "Now" in UTC ms for fix ages: the system clock when it agrees with the GNSS estimate (or
/// when there is none), else the estimate.
pub fn age_base_ms(system_ms: i64, gnss_ms: Option<i64>) -> i64 {
    let within = i64::try_from(TRUST_SYSTEM_WITHIN.as_millis()).unwrap_or(i64::MAX);
    match gnss_ms {
        Some(g) if system_ms.abs_diff(g) > within.unsigned_abs() => g,
        _ => system_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARCH_2026: i64 = 1_773_475_200_000;

    #[test]
    fn the_estimate_is_the_last_fix_plus_the_monotonic_time_since() {
        let at = Instant::now();
        let later = at + Duration::from_millis(2_500);
        assert_eq!(
            gnss_now_ms(Some((MARCH_2026, at)), later),
            Some(MARCH_2026 + 2_500)
        );
        assert_eq!(gnss_now_ms(None, later), None);
        // An instant before the fix (cannot happen, but must not go backwards).
        assert_eq!(gnss_now_ms(Some((MARCH_2026, later)), at), Some(MARCH_2026));
    }

    #[test]
    fn a_system_clock_that_agrees_is_used() {
        assert_eq!(
            age_base_ms(MARCH_2026 + 900, Some(MARCH_2026)),
            MARCH_2026 + 900
        );
        assert_eq!(
            age_base_ms(MARCH_2026 - 9_000, Some(MARCH_2026)),
            MARCH_2026 - 9_000
        );
        assert_eq!(age_base_ms(MARCH_2026, None), MARCH_2026);
    }

    #[test]
    fn a_system_clock_in_the_past_or_future_gives_way_to_the_receiver() {
        // A gateway booted at the epoch, or at its firmware's build date, before NTP.
        assert_eq!(age_base_ms(0, Some(MARCH_2026)), MARCH_2026);
        assert_eq!(
            age_base_ms(MARCH_2026 - 86_400_000, Some(MARCH_2026)),
            MARCH_2026
        );
        // One running hours ahead.
        assert_eq!(
            age_base_ms(MARCH_2026 + 3 * 3_600_000, Some(MARCH_2026)),
            MARCH_2026
        );
        assert_eq!(
            age_base_ms(MARCH_2026 + 10_001, Some(MARCH_2026)),
            MARCH_2026
        );
        assert_eq!(age_base_ms(i64::MIN, Some(i64::MAX)), i64::MAX);
    }
}
