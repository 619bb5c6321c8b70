//! The broker's packet limit, learned from what it takes and what it drops the link over.
//!
//! An MQTT 5 broker announces its Maximum Packet Size in CONNACK; the client here speaks
//! MQTT 3.1.1 (rumqttc's v4 client), and a 3.1.1 broker says nothing: mosquitto with
//! `max_packet_size`, rumqttd with `max_payload_size`, AWS IoT at 128 KiB simply close the
//! connection when a larger PUBLISH arrives. With several messages in flight the agent cannot
//! tell which one it was: the broker closing a socket with unread data sends a reset, which
//! discards the PUBACKs it wrote for the messages before.
//!
//! So [`MessageLimit`] remembers the largest payload that was acknowledged and the smallest
//! that was dropped when the drop could only have been that message, and keeps a cap on the
//! payload of the messages the publisher builds:
//!
//! - a drop with several unacknowledged messages larger than anything acknowledged: the cap
//!   halves from the largest of them and the window narrows to one message, so the next
//!   drop, if any, names its message;
//! - a drop that can only have been one message (a window of one, or the only one larger
//!   than what got through): that size is dropped for good, the cap halves below it;
//! - a single fix that alone is larger than anything that got through, and dropped
//!   [`REJECTED_AFTER_DISCONNECTS`] times, is one the broker will never take (dead-lettered);
//! - a drop when every message in flight was no larger than one already acknowledged says
//!   nothing about size: the caller treats it as the broker misbehaving;
//! - once a message of at least half the cap got through, the window opens again; after
//!   [`ACKS_BEFORE_RAISING`] acknowledged messages the cap moves halfway back up towards the
//!   smallest size dropped (doubling when none is known), so a limit learned from a flaky
//!   link does not keep messages small for good.
//!
//! The cap never goes below the largest payload acknowledged. Pure: no I/O, no clock.

/// Drops of the same single-fix message, larger than anything acknowledged, before it is
/// declared one the broker will never take. Three: one drop is a flaky link, three in a row
/// with the same fix alone is the fix.
pub const REJECTED_AFTER_DISCONNECTS: u32 = 3;

/// Messages acknowledged at a lowered cap before it is raised halfway back up.
pub const ACKS_BEFORE_RAISING: u32 = 1000;

/// A fixes message that was in flight when the broker dropped the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unacked {
    /// The first seq it carried (identifies a single-fix message across sessions).
    pub first_seq: u64,
    pub fixes: usize,
    /// Payload bytes.
    pub bytes: usize,
}

/// What a drop meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing in flight was larger than what the broker took before: not about size.
    NotSize,
    /// About size: messages are capped at `cap` bytes from now on; `bytes` is the message
    /// blamed.
    Narrowed { bytes: usize, cap: usize },
    /// This single fix (`first_seq`) alone is more than the broker takes: set it aside.
    Reject {
        first_seq: u64,
        bytes: usize,
        drops: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageLimit {
    /// `max_message_bytes`: never exceeded.
    configured: usize,
    cap: usize,
    largest_ok: usize,
    smallest_dropped: Option<usize>,
    /// A window of one message until a message of at least half the cap got through.
    narrowing: bool,
    acked_at_cap: u32,
    /// The single-fix message dropped last, and how many times in a row.
    single: Option<(u64, u32)>,
}

impl MessageLimit {
    pub fn new(configured: usize) -> Self {
        MessageLimit {
            configured,
            cap: configured,
            largest_ok: 0,
            smallest_dropped: None,
            narrowing: false,
            acked_at_cap: 0,
            single: None,
        }
    }

    /// The platform's own limit on a payload (ThingsBoard's `maxPayloadSize`): the cap and
    /// everything learned from now on stay within it, as within `max_message_bytes`.
    pub fn bound(&mut self, platform: usize) {
        self.configured = self.configured.min(platform.max(1));
        self.cap = self.cap.min(self.configured);
    }

    /// Largest payload of a message ever: `max_message_bytes`, or the platform's limit.
    pub fn most(&self) -> usize {
        self.configured
    }

    /// Largest payload of a message now.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The cap when it is below `max_message_bytes` (a limit was learned).
    pub fn learned(&self) -> Option<usize> {
        (self.cap < self.configured).then_some(self.cap)
    }

    /// Messages in flight at once: one while narrowing, else `configured`.
    pub fn window(&self, configured: usize) -> usize {
        if self.narrowing {
            1
        } else {
            configured.max(1)
        }
    }

    pub fn largest_ok(&self) -> usize {
        self.largest_ok
    }

    pub fn smallest_dropped(&self) -> Option<usize> {
        self.smallest_dropped
    }

    /// The broker acknowledged a fixes message of `bytes` payload.
    pub fn on_acked(&mut self, bytes: usize) {
        self.largest_ok = self.largest_ok.max(bytes);
        if self.smallest_dropped.is_some_and(|d| d <= self.largest_ok) {
            // Taken now at a size once dropped: that drop was not about size.
            self.smallest_dropped = None;
        }
        if self.single.is_some_and(|_| bytes > 0) {
            self.single = None;
        }
        if self.narrowing && self.largest_ok.saturating_mul(2) >= self.cap {
            self.narrowing = false;
        }
        if self.cap < self.configured {
            self.acked_at_cap = self.acked_at_cap.saturating_add(1);
            if self.acked_at_cap >= ACKS_BEFORE_RAISING {
                self.acked_at_cap = 0;
                let up = match self.smallest_dropped {
                    Some(d) => self.largest_ok.max(self.cap) + (d.saturating_sub(self.cap)) / 2,
                    None => self.cap.saturating_mul(2),
                };
                let ceiling = self
                    .smallest_dropped
                    .map_or(self.configured, |d| d.saturating_sub(1))
                    .min(self.configured);
                self.cap = up.min(ceiling).max(self.cap);
            }
        }
    }

    /// Whether a drop with these messages unacknowledged could be about size (one of them is
    /// larger than anything acknowledged). The caller checks the path before it blames the
    /// size: a link that was cut also leaves messages unacknowledged.
    pub fn blames_size(&self, unacked: &[Unacked]) -> bool {
        unacked.iter().any(|m| m.bytes > self.largest_ok)
    }

    /// The broker closed the link, the path to it still working, with these fixes messages
    /// unacknowledged, in the order they were sent.
    pub fn on_dropped(&mut self, unacked: &[Unacked]) -> Verdict {
        let mut candidates = unacked.iter().filter(|m| m.bytes > self.largest_ok);
        let Some(first) = candidates.next().copied() else {
            return Verdict::NotSize;
        };
        if let Some(largest) = candidates.map(|m| m.bytes).max() {
            // Several could have been it. The largest is the likeliest (a small one before
            // it was probably taken, its PUBACK lost in the reset): halve from it, then one
            // message at a time until a drop names its message.
            let largest = largest.max(first.bytes);
            self.narrowing = true;
            self.lower_to(largest / 2);
            return Verdict::Narrowed {
                bytes: largest,
                cap: self.cap,
            };
        }
        self.smallest_dropped = Some(
            self.smallest_dropped
                .map_or(first.bytes, |d| d.min(first.bytes)),
        );
        if first.fixes > 1 {
            self.narrowing = true;
            self.single = None;
            self.lower_to(first.bytes / 2);
            return Verdict::Narrowed {
                bytes: first.bytes,
                cap: self.cap,
            };
        }
        let drops = match self.single {
            Some((seq, n)) if seq == first.first_seq => n.saturating_add(1),
            _ => 1,
        };
        if drops >= REJECTED_AFTER_DISCONNECTS {
            self.single = None;
            return Verdict::Reject {
                first_seq: first.first_seq,
                bytes: first.bytes,
                drops,
            };
        }
        self.single = Some((first.first_seq, drops));
        Verdict::Narrowed {
            bytes: first.bytes,
            cap: self.cap,
        }
    }

    /// Lower the cap to `bytes`, never below what was acknowledged.
    fn lower_to(&mut self, bytes: usize) {
        let new = bytes.max(self.largest_ok).max(1);
        if new < self.cap {
            self.cap = new;
            self.acked_at_cap = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(first_seq: u64, fixes: usize, bytes: usize) -> Unacked {
        Unacked {
            first_seq,
            fixes,
            bytes,
        }
    }

    #[test]
    fn a_full_window_dropped_narrows_to_one_message_at_half_the_largest_suspect() {
        let mut l = MessageLimit::new(65_536);
        l.on_acked(250);
        // A live fix alone ahead of the backlog, its PUBACK lost in the broker's reset.
        let mut window = vec![msg(600, 1, 270)];
        window.extend((0..9).map(|i| msg(i * 50 + 1, 50, 9_000)));
        assert_eq!(
            l.on_dropped(&window),
            Verdict::Narrowed {
                bytes: 9_000,
                cap: 4_500
            }
        );
        assert_eq!(l.window(10), 1);
        assert_eq!(l.learned(), Some(4_500));
        assert_eq!(l.smallest_dropped(), None, "not attributable");
        // One message at a time: 4.5 KB dropped names itself, the cap halves below it.
        assert_eq!(
            l.on_dropped(&[msg(1, 25, 4_480)]),
            Verdict::Narrowed {
                bytes: 4_480,
                cap: 2_240
            }
        );
        assert_eq!(l.smallest_dropped(), Some(4_480));
        // 2.2 KB gets through: at least half the cap, the window opens again.
        l.on_acked(2_230);
        assert_eq!(l.window(10), 10);
        assert_eq!(l.cap(), 2_240);
    }

    #[test]
    fn a_drop_with_nothing_larger_than_what_got_through_is_not_about_size() {
        let mut l = MessageLimit::new(65_536);
        l.on_acked(9_000);
        assert!(!l.blames_size(&[msg(1, 50, 9_000)]));
        assert!(l.blames_size(&[msg(1, 50, 9_001)]));
        assert_eq!(
            l.on_dropped(&[msg(1, 50, 9_000), msg(51, 50, 8_000)]),
            Verdict::NotSize
        );
        assert_eq!(l.on_dropped(&[]), Verdict::NotSize);
        assert_eq!(l.cap(), 65_536);
        assert_eq!(l.window(10), 10);
    }

    #[test]
    fn the_only_message_larger_than_what_got_through_is_blamed_even_in_a_full_window() {
        let mut l = MessageLimit::new(65_536);
        l.on_acked(3_000);
        let verdict = l.on_dropped(&[msg(1, 10, 2_000), msg(11, 40, 7_000), msg(51, 5, 1_000)]);
        assert_eq!(
            verdict,
            Verdict::Narrowed {
                bytes: 7_000,
                cap: 3_500
            }
        );
        assert_eq!(l.smallest_dropped(), Some(7_000));
    }

    #[test]
    fn the_cap_never_goes_below_what_was_acknowledged() {
        let mut l = MessageLimit::new(65_536);
        l.on_acked(4_000);
        assert_eq!(
            l.on_dropped(&[msg(1, 30, 5_000)]),
            Verdict::Narrowed {
                bytes: 5_000,
                cap: 4_000
            }
        );
    }

    #[test]
    fn a_single_fix_dropped_three_times_alone_is_rejected_and_a_different_one_starts_over() {
        let mut l = MessageLimit::new(65_536);
        l.on_acked(300);
        for n in 1..REJECTED_AFTER_DISCONNECTS {
            assert!(
                matches!(l.on_dropped(&[msg(5, 1, 900)]), Verdict::Narrowed { .. }),
                "drop {n}"
            );
        }
        assert_eq!(
            l.on_dropped(&[msg(5, 1, 900)]),
            Verdict::Reject {
                first_seq: 5,
                bytes: 900,
                drops: 3
            }
        );
        // The count is per fix.
        assert!(matches!(
            l.on_dropped(&[msg(6, 1, 900)]),
            Verdict::Narrowed { .. }
        ));
        assert!(matches!(
            l.on_dropped(&[msg(7, 1, 900)]),
            Verdict::Narrowed { .. }
        ));
        assert!(matches!(
            l.on_dropped(&[msg(6, 1, 900)]),
            Verdict::Narrowed { .. }
        ));
    }

    #[test]
    fn a_single_fix_no_larger_than_what_got_through_is_never_rejected() {
        let mut l = MessageLimit::new(65_536);
        l.on_acked(1_000);
        for _ in 0..10 {
            assert_eq!(l.on_dropped(&[msg(5, 1, 900)]), Verdict::NotSize);
        }
    }

    #[test]
    fn a_size_that_gets_through_later_clears_its_drop() {
        let mut l = MessageLimit::new(65_536);
        l.on_dropped(&[msg(1, 50, 9_000)]);
        assert_eq!(l.smallest_dropped(), Some(9_000));
        l.on_acked(9_100);
        assert_eq!(l.smallest_dropped(), None);
    }

    #[test]
    fn after_enough_acks_the_cap_moves_halfway_back_towards_the_smallest_drop() {
        let mut l = MessageLimit::new(65_536);
        l.on_dropped(&[msg(1, 50, 9_000)]);
        assert_eq!(l.cap(), 4_500);
        for _ in 0..ACKS_BEFORE_RAISING - 1 {
            l.on_acked(4_400);
        }
        assert_eq!(l.cap(), 4_500);
        l.on_acked(4_400);
        assert_eq!(l.cap(), 6_750);
        // Without a known drop (all cleared), it doubles, up to the configured maximum.
        let mut l = MessageLimit::new(10_000);
        l.on_dropped(&[msg(1, 50, 9_000), msg(51, 50, 9_000)]);
        assert_eq!(l.cap(), 4_500);
        for _ in 0..ACKS_BEFORE_RAISING {
            l.on_acked(4_000);
        }
        assert_eq!(l.cap(), 9_000);
        for _ in 0..ACKS_BEFORE_RAISING {
            l.on_acked(8_000);
        }
        assert_eq!(l.cap(), 10_000);
        assert_eq!(l.learned(), None);
    }
}
