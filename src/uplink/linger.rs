//! Linger: live fixes held back to share a message with the ones after them. A pure type:
//! the publisher hands it fixes with their ages and `now`, and asks when they are due and
//! when to look for more; it never sleeps, reads a clock or touches the source.
//!
//! On a cellular link a message costs about 230 bytes of MQTT, TLS and TCP/IP besides its
//! payload, so a live fix waits up to `linger` for company. A fix already `linger` old by the
//! receiver's clock (a backlog) is never held. The held fixes are due when the first of them
//! has waited its `linger` (counted from its receiver time, so never longer than `linger` from
//! when it was taken), or at once when they make a full message (`batch_max`). While they
//! wait, the source is asked again only when their pace says a full message may be waiting
//! ([`Linger::top_up_after`]), at most every [`TOP_UP_MIN`]: a 10 Hz receiver does not wake
//! the uplink ten times a second, nor a 1 Hz one thirty times per message.

use crate::fix::Fix;
use std::time::Duration;
use tokio::time::Instant;

/// The shortest wait between two asks for more while fixes are held.
pub const TOP_UP_MIN: Duration = Duration::from_secs(2);

/// Fixes held for company, and when the first of them is due.
#[derive(Debug, Clone)]
pub struct Linger {
    linger: Duration,
    batch_max: usize,
    held: Vec<(u64, Fix)>,
    due: Option<Instant>,
}

impl Linger {
    /// `linger` zero holds nothing.
    pub fn new(linger: Duration, batch_max: usize) -> Self {
        Linger {
            linger,
            batch_max: batch_max.max(1),
            held: Vec::new(),
            due: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether fixes of these ages (by the receiver's clock) would wait for company: all
    /// younger than `linger`, and lingering at all.
    pub fn would_hold(&self, ages: impl IntoIterator<Item = Duration>) -> bool {
        !self.linger.is_zero() && ages.into_iter().all(|age| age < self.linger)
    }

    /// Hold `batch` (each with its age) from `now`: due when the oldest has waited `linger`
    /// since its receiver time. Returns the held fixes when they now make a full message
    /// (they are then no longer held).
    pub fn hold(
        &mut self,
        now: Instant,
        batch: impl IntoIterator<Item = ((u64, Fix), Duration)>,
    ) -> Option<Vec<(u64, Fix)>> {
        for (fix, age) in batch {
            let due = now + self.linger.saturating_sub(age);
            self.due = Some(self.due.map_or(due, |d| d.min(due)));
            self.held.push(fix);
        }
        (self.held.len() >= self.batch_max).then(|| self.take())
    }

    /// Whether the held fixes should go at `now`: the first has waited its `linger`, or
    /// they make a full message.
    pub fn is_due(&self, now: Instant) -> bool {
        !self.held.is_empty()
            && (self.held.len() >= self.batch_max || self.due.is_some_and(|due| due <= now))
    }

    /// When the first held fix has waited its `linger`; `None` when nothing is held.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Everything held, oldest first; nothing is held after.
    pub fn take(&mut self) -> Vec<(u64, Fix)> {
        self.due = None;
        std::mem::take(&mut self.held)
    }

    /// How long after the last ask to ask the source again while fixes are held: when the
    /// held fixes' pace (by receiver time) says a full message may be waiting, never sooner
    /// than [`TOP_UP_MIN`]. (The due time comes first when it is nearer.)
    pub fn top_up_after(&self) -> Duration {
        let n = self.held.len();
        let (Some((_, first)), Some((_, last))) = (self.held.first(), self.held.last()) else {
            return TOP_UP_MIN;
        };
        if n < 2 || n >= self.batch_max {
            return TOP_UP_MIN;
        }
        let span_ms = u64::try_from(last.time_ms.saturating_sub(first.time_ms)).unwrap_or(0);
        let per_fix_ms = span_ms / (n as u64 - 1);
        let missing = (self.batch_max - n) as u64;
        Duration::from_millis(per_fix_ms.saturating_mul(missing)).max(TOP_UP_MIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(seq: u64, time_ms: i64) -> (u64, Fix) {
        (seq, Fix::bare(time_ms, 48.1, 11.5))
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_live_fix_is_due_when_it_has_waited_linger_since_its_receiver_time() {
        let t0 = Instant::now();
        let mut l = Linger::new(secs(60), 50);
        // Taken 2 s after the receiver printed it: due 58 s from now.
        assert!(l.would_hold([secs(2)]));
        assert_eq!(l.hold(t0, [(fix(1, 0), secs(2))]), None);
        assert_eq!(l.due(), Some(t0 + secs(58)));
        assert!(!l.is_due(t0 + secs(57)));
        // A later fix does not put the first one off.
        assert_eq!(
            l.hold(t0 + secs(10), [(fix(2, 10_000), Duration::ZERO)]),
            None
        );
        assert_eq!(l.due(), Some(t0 + secs(58)));
        assert!(l.is_due(t0 + secs(58)));
        let held = l.take();
        assert_eq!(held.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2]);
        assert!(l.is_empty() && l.due().is_none() && !l.is_due(t0 + secs(3600)));
    }

    #[test]
    fn a_backlog_and_a_zero_linger_are_never_held() {
        let l = Linger::new(secs(60), 50);
        assert!(!l.would_hold([secs(1), secs(60)]));
        assert!(!Linger::new(Duration::ZERO, 50).would_hold([Duration::ZERO]));
    }

    #[test]
    fn held_fixes_that_make_a_full_message_go_at_once() {
        let t0 = Instant::now();
        let mut l = Linger::new(secs(60), 3);
        assert_eq!(
            l.hold(t0, [(fix(1, 0), secs(0)), (fix(2, 1000), secs(0))]),
            None
        );
        let full = l.hold(t0, [(fix(3, 2000), secs(0))]).unwrap();
        assert_eq!(full.len(), 3);
        assert!(l.is_empty());
    }

    #[test]
    fn the_source_is_asked_again_at_the_pace_the_held_fixes_came() {
        let t0 = Instant::now();
        let mut l = Linger::new(secs(30), 7);
        assert_eq!(l.top_up_after(), TOP_UP_MIN, "nothing held");
        l.hold(t0, [(fix(1, 0), secs(0))]);
        assert_eq!(l.top_up_after(), TOP_UP_MIN, "one fix says no pace");
        // Four fixes a second apart, three missing for a full message: in 3 s.
        l.hold(
            t0,
            (2..=4).map(|i| (fix(i, (i as i64 - 1) * 1000), secs(0))),
        );
        assert_eq!(l.top_up_after(), secs(3));
        // At 10 Hz the pace would say 0.3 s: never sooner than TOP_UP_MIN.
        let mut fast = Linger::new(secs(30), 7);
        fast.hold(t0, (1..=4).map(|i| (fix(i, i as i64 * 100), secs(0))));
        assert_eq!(fast.top_up_after(), TOP_UP_MIN);
    }
}
