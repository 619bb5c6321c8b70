//! The platform's rate limits, kept: at most `count` of something in any `period`, for each
//! `count:seconds` pair the platform gives (ThingsBoard's `getSessionLimits`, see
//! `profile::thingsboard`). Three kinds are counted: all messages, telemetry messages, and
//! the telemetry's data points; every pair of every kind holds at once.
//!
//! A sliding window, not a token bucket: a bucket of `count` refilled over `period` lets
//! through up to twice `count` in one period (a full bucket, then its refill), and a platform
//! that counts windows would refuse the second half. Each window keeps what was sent in at
//! most [`SLOTS`] slots of `period / SLOTS`, a send counted as if it happened at the end of
//! its slot: it leaves the window a little late, never early, so the count is never
//! underestimated, and the memory is bounded whatever the rate.
//!
//! Pure: the caller passes `now`. What must wait is the caller's to hold back; messages
//! that are not the caller's to hold (the state, an answer) are counted all the same with
//! [`Pace::charge`], and later ones wait for them.

use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Slots a window's period is kept in.
pub const SLOTS: u32 = 64;

/// At most `count` in any `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub period: Duration,
}

/// `"200:1,6000:60"` as rates; `None`: not that form (a pair of `0:0` or an empty string
/// means no limit: no rates).
pub fn parse_rates(text: &str) -> Option<Vec<Rate>> {
    let mut out = Vec::new();
    for pair in text
        .split([',', ';'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (count, seconds) = pair.split_once(':')?;
        let count: u64 = count.trim().parse().ok()?;
        let seconds: u64 = seconds.trim().parse().ok()?;
        if count == 0 && seconds == 0 {
            continue;
        }
        if seconds == 0 {
            return None;
        }
        if out.len() == MAX_RATES {
            // More pairs than any platform gives: an answer that cannot be meant.
            return None;
        }
        out.push(Rate {
            count,
            period: Duration::from_secs(seconds),
        });
    }
    Some(out)
}

/// Most `count:seconds` pairs of one kind (ThingsBoard gives three: a second, a minute, an
/// hour); each pair keeps [`SLOTS`] slots.
pub const MAX_RATES: usize = 16;

/// What a platform allows, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rates {
    pub messages: Vec<Rate>,
    pub telemetry_messages: Vec<Rate>,
    pub telemetry_points: Vec<Rate>,
}

/// What one message costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// Telemetry (fixes), or another message.
    pub telemetry: bool,
    /// Data points it carries (0 unless telemetry).
    pub points: u64,
}

impl Cost {
    pub const OTHER: Cost = Cost {
        telemetry: false,
        points: 0,
    };

    pub fn telemetry(points: u64) -> Cost {
        Cost {
            telemetry: true,
            points,
        }
    }
}

#[derive(Debug, Clone)]
struct Window {
    rate: Rate,
    slot: Duration,
    /// (slot start, amount), oldest first; at most `SLOTS + 1` after `expire`.
    sent: VecDeque<(Instant, u64)>,
    total: u64,
}

impl Window {
    fn new(rate: Rate) -> Self {
        Window {
            rate,
            slot: (rate.period / SLOTS).max(Duration::from_millis(1)),
            sent: VecDeque::new(),
            total: 0,
        }
    }

    /// When what was sent in the slot starting at `start` has left the window.
    fn leaves(&self, start: Instant) -> Instant {
        start + self.slot + self.rate.period
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(start, amount)) = self.sent.front() {
            if self.leaves(start) > now {
                break;
            }
            self.total -= amount;
            self.sent.pop_front();
        }
    }

    /// When `amount` more fits (`now`: it does). An amount above the whole window waits for
    /// an empty window: it can never fit, and the rest must not wait for ever behind it.
    fn fits_at(&self, now: Instant, amount: u64) -> Instant {
        let allowed = self.rate.count.saturating_sub(amount.min(self.rate.count));
        let mut total = self.total;
        let mut at = now;
        for &(start, sent) in &self.sent {
            if total <= allowed {
                break;
            }
            total -= sent;
            at = at.max(self.leaves(start));
        }
        at
    }

    fn take(&mut self, now: Instant, amount: u64) {
        if amount == 0 {
            return;
        }
        self.expire(now);
        match self.sent.back_mut() {
            Some((start, sent)) if *start + self.slot > now => *sent += amount,
            _ => self.sent.push_back((now, amount)),
        }
        self.total += amount;
    }
}

/// Every window of a platform's rates, with what was sent.
#[derive(Debug, Clone, Default)]
pub struct Pace {
    rates: Rates,
    messages: Vec<Window>,
    telemetry_messages: Vec<Window>,
    telemetry_points: Vec<Window>,
}

impl Pace {
    pub fn new(rates: Rates) -> Self {
        let windows = |r: &[Rate]| r.iter().copied().map(Window::new).collect();
        Pace {
            messages: windows(&rates.messages),
            telemetry_messages: windows(&rates.telemetry_messages),
            telemetry_points: windows(&rates.telemetry_points),
            rates,
        }
    }

    pub fn rates(&self) -> &Rates {
        &self.rates
    }

    /// New rates; what was sent stays counted in the windows that stay the same.
    pub fn set(&mut self, rates: Rates) {
        if rates != self.rates {
            let mut next = Pace::new(rates);
            for (old, new) in [
                (&self.messages, &mut next.messages),
                (&self.telemetry_messages, &mut next.telemetry_messages),
                (&self.telemetry_points, &mut next.telemetry_points),
            ] {
                for w in new.iter_mut() {
                    if let Some(o) = old.iter().find(|o| o.rate.period == w.rate.period) {
                        w.sent = o.sent.clone();
                        w.total = o.total;
                    }
                }
            }
            *self = next;
        }
    }

    /// Most data points one telemetry message may carry (`None`: no limit).
    pub fn max_points(&self) -> Option<u64> {
        self.rates.telemetry_points.iter().map(|r| r.count).min()
    }

    fn windows(&mut self, cost: Cost) -> impl Iterator<Item = (&mut Window, u64)> {
        let t = u64::from(cost.telemetry);
        self.messages
            .iter_mut()
            .map(|w| (w, 1))
            .chain(self.telemetry_messages.iter_mut().map(move |w| (w, t)))
            .chain(
                self.telemetry_points
                    .iter_mut()
                    .map(move |w| (w, cost.points)),
            )
            .filter(|(_, amount)| *amount > 0)
    }

    /// When a message of `cost` may go: `None` now, else the instant it fits every window.
    pub fn wait(&mut self, now: Instant, cost: Cost) -> Option<Instant> {
        let at = self
            .windows(cost)
            .map(|(w, amount)| {
                w.expire(now);
                w.fits_at(now, amount)
            })
            .max()?;
        (at > now).then_some(at)
    }

    /// Count a message of `cost` sent at `now` (whether or not it had to wait).
    pub fn charge(&mut self, now: Instant, cost: Cost) {
        for (w, amount) in self.windows(cost) {
            w.take(now, amount);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_with_more_rate_pairs_than_any_platform_gives_is_refused() {
        let many = vec!["1:1"; MAX_RATES + 1].join(",");
        assert_eq!(parse_rates(&many), None);
        let most = vec!["1:1"; MAX_RATES].join(",");
        assert_eq!(parse_rates(&most).map(|r| r.len()), Some(MAX_RATES));
    }

    fn rate(count: u64, seconds: u64) -> Rate {
        Rate {
            count,
            period: Duration::from_secs(seconds),
        }
    }

    #[test]
    fn rates_read_as_the_platform_writes_them_and_nonsense_is_refused() {
        assert_eq!(
            parse_rates("200:1,6000:60,14000:3600"),
            Some(vec![rate(200, 1), rate(6000, 60), rate(14000, 3600)])
        );
        assert_eq!(parse_rates(""), Some(vec![]));
        assert_eq!(parse_rates("0:0,"), Some(vec![]));
        assert_eq!(parse_rates("10:0"), None);
        assert_eq!(parse_rates("ten:1"), None);
        assert_eq!(parse_rates("10"), None);
    }

    /// Sends as fast as the pace lets, for a simulated minute, and checks every window of
    /// every rate by the send times themselves.
    #[test]
    fn sending_whenever_the_pace_allows_never_exceeds_any_window() {
        let rates = Rates {
            messages: vec![rate(5, 1), rate(40, 10)],
            telemetry_messages: vec![rate(3, 1)],
            telemetry_points: vec![rate(20, 2)],
        };
        let mut pace = Pace::new(rates.clone());
        let start = Instant::now();
        let mut now = start;
        let mut sends: Vec<(Instant, Cost)> = Vec::new();
        let mut i = 0u64;
        while now < start + Duration::from_secs(60) {
            // Every fourth message is the state; telemetry carries 1 to 9 points.
            let cost = if i % 4 == 3 {
                Cost::OTHER
            } else {
                Cost::telemetry(1 + i % 9)
            };
            match pace.wait(now, cost) {
                None => {
                    pace.charge(now, cost);
                    sends.push((now, cost));
                    i += 1;
                }
                Some(at) => {
                    assert!(at > now);
                    now = at;
                }
            }
        }
        let check = |r: &Rate, amount: &dyn Fn(&Cost) -> u64| {
            for (from, _) in &sends {
                let n: u64 = sends
                    .iter()
                    .filter(|(t, _)| *t >= *from && *t < *from + r.period)
                    .map(|(_, c)| amount(c))
                    .sum();
                assert!(n <= r.count, "{n} in {:?} from {from:?}", r.period);
            }
        };
        for r in &rates.messages {
            check(r, &|_| 1);
        }
        for r in &rates.telemetry_messages {
            check(r, &|c| u64::from(c.telemetry));
        }
        for r in &rates.telemetry_points {
            check(r, &|c| c.points);
        }
        // And it kept going near the tightest rate: 10 points a second at 5 a message on
        // average is 2 telemetry messages a second, with a state message for every three:
        // 160 a minute, less the slots' rounding.
        assert!(sends.len() >= 120, "{}", sends.len());
    }

    #[test]
    fn a_message_above_a_whole_window_waits_for_an_empty_window_not_for_ever() {
        let mut pace = Pace::new(Rates {
            telemetry_points: vec![rate(5, 1)],
            ..Rates::default()
        });
        let t0 = Instant::now();
        pace.charge(t0, Cost::telemetry(2));
        let at = pace.wait(t0, Cost::telemetry(9)).unwrap();
        assert!(at <= t0 + Duration::from_secs(2), "{at:?}");
        assert_eq!(pace.wait(at, Cost::telemetry(9)), None);
    }

    #[test]
    fn new_rates_keep_what_was_sent_in_the_windows_they_share() {
        let mut pace = Pace::new(Rates {
            messages: vec![rate(2, 1)],
            ..Rates::default()
        });
        let t0 = Instant::now();
        pace.charge(t0, Cost::OTHER);
        pace.charge(t0, Cost::OTHER);
        pace.set(Rates {
            messages: vec![rate(2, 1), rate(100, 60)],
            ..Rates::default()
        });
        assert!(
            pace.wait(t0, Cost::OTHER).is_some(),
            "the second still full"
        );
        assert_eq!(Pace::default().wait(t0, Cost::telemetry(1000)), None);
    }
}
