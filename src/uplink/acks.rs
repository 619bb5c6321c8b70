//! `AckWindow`: which fixes a PUBACK acknowledges.
//!
//! rumqttc does not return the packet id of a publish (bytebeamio/rumqtt issues 349, 805).
//! What it guarantees, read from rumqttc 0.25.1 (`eventloop.rs`, `state.rs`):
//!
//! - `AsyncClient::publish` sends one `Request::Publish` into a FIFO channel; the event loop
//!   takes requests from it one at a time, in order, and `MqttState::outgoing_publish` gives
//!   each QoS 1 publish the next packet id and emits exactly one `Outgoing::Publish(pkid)`.
//! - On a packet-id collision (the broker acked out of order) the publish is parked, an
//!   `Outgoing::AwaitAck` is emitted instead, no further request is taken from the channel
//!   until the colliding id is acked, and then the parked publish is emitted as
//!   `Outgoing::Publish(pkid)`. The order of `Outgoing::Publish` events is therefore the order
//!   of `publish` calls.
//! - `Incoming::PubAck(p)` carries the id of the acknowledged publish.
//!
//! So: [`AckWindow::submit`] right after each `publish` call (status messages included, with
//! no seqs), [`AckWindow::on_outgoing_publish`] for each `Outgoing::Publish`, and
//! [`AckWindow::on_puback`] for each PUBACK. On any disconnect [`AckWindow::on_disconnect`]
//! returns every unacknowledged seq to release; the publisher must then drop that rumqttc
//! client and event loop, because rumqttc would otherwise replay its own copies.
//!
//! It never acknowledges a seq without a PUBACK for the packet that carried it, and it holds
//! at most `window` messages (bounded memory, bounded loss of work on a disconnect).

use crate::uplink::error::UplinkError;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// A message handed to rumqttc, not yet seen on the wire.
#[derive(Debug)]
struct Submitted {
    seqs: Vec<u64>,
    bytes: usize,
    at: Instant,
}

/// A message rumqttc wrote with packet id `pkid`, waiting for its PUBACK.
#[derive(Debug)]
struct InFlight {
    pkid: u16,
    seqs: Vec<u64>,
    bytes: usize,
    sent_at: Instant,
}

/// A message the broker acknowledged: the seqs it carried and its payload size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub seqs: Vec<u64>,
    pub bytes: usize,
}

/// Messages between `publish` and PUBACK, in publish order.
#[derive(Debug)]
pub struct AckWindow {
    window: usize,
    puback_timeout: Duration,
    /// Handed to rumqttc, no `Outgoing::Publish` yet. Oldest first.
    submitted: VecDeque<Submitted>,
    /// On the wire, oldest first. At most `window` entries, so a linear search is fine.
    in_flight: VecDeque<InFlight>,
}

impl AckWindow {
    /// `window` is clamped to at least 1: a zero window would never publish.
    pub fn new(window: usize, puback_timeout: Duration) -> Self {
        let window = window.max(1);
        AckWindow {
            window,
            puback_timeout,
            submitted: VecDeque::with_capacity(window),
            in_flight: VecDeque::with_capacity(window),
        }
    }

    /// Messages submitted and not yet acknowledged.
    pub fn len(&self) -> usize {
        self.submitted.len() + self.in_flight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages it holds at most.
    pub fn capacity(&self) -> usize {
        self.window
    }

    /// Hold at most `window` messages from now on (a platform's in-flight limit); what is
    /// in flight beyond it stays, and no more goes until it is below.
    pub fn narrow(&mut self, window: usize) {
        self.window = self.window.min(window.max(1));
    }

    /// May another message be published now?
    pub fn has_room(&self) -> bool {
        self.len() < self.window
    }

    /// Record a message just handed to `AsyncClient::publish`, with the seqs it carries (none
    /// for a status message). Refused (returns the seqs back) when the window is full.
    pub fn submit(&mut self, seqs: Vec<u64>, now: Instant) -> Result<(), Vec<u64>> {
        self.submit_sized(seqs, 0, now)
    }

    /// As [`AckWindow::submit`], remembering the payload size (for learning the broker's
    /// packet limit, see `super::limit`).
    pub fn submit_sized(
        &mut self,
        seqs: Vec<u64>,
        bytes: usize,
        now: Instant,
    ) -> Result<(), Vec<u64>> {
        if !self.has_room() {
            return Err(seqs);
        }
        self.submitted.push_back(Submitted {
            seqs,
            bytes,
            at: now,
        });
        Ok(())
    }

    /// rumqttc wrote the oldest submitted message with packet id `pkid`.
    pub fn on_outgoing_publish(&mut self, pkid: u16, now: Instant) -> Result<(), UplinkError> {
        if self.in_flight.iter().any(|m| m.pkid == pkid) {
            return Err(UplinkError::AckMismatch {
                detail: "packet id reused while still in flight",
                pkid,
            });
        }
        let Some(next) = self.submitted.pop_front() else {
            return Err(UplinkError::AckMismatch {
                detail: "publish on the wire that was never submitted",
                pkid,
            });
        };
        self.in_flight.push_back(InFlight {
            pkid,
            seqs: next.seqs,
            bytes: next.bytes,
            sent_at: now,
        });
        Ok(())
    }

    /// The broker acknowledged packet `pkid`: the seqs it carried are delivered. `None` for an
    /// id that is not in flight (nothing is acknowledged on a guess).
    pub fn on_puback(&mut self, pkid: u16) -> Option<Vec<u64>> {
        self.on_puback_message(pkid).map(|m| m.seqs)
    }

    /// As [`AckWindow::on_puback`], with the message's payload size.
    pub fn on_puback_message(&mut self, pkid: u16) -> Option<Acked> {
        let at = self.in_flight.iter().position(|m| m.pkid == pkid)?;
        self.in_flight.remove(at).map(|m| Acked {
            seqs: m.seqs,
            bytes: m.bytes,
        })
    }

    /// The messages not yet acknowledged, in the order they were submitted: the seqs each
    /// carries and its payload size.
    pub fn unacked(&self) -> impl Iterator<Item = (&[u64], usize)> {
        self.in_flight
            .iter()
            .map(|m| (m.seqs.as_slice(), m.bytes))
            .chain(self.submitted.iter().map(|m| (m.seqs.as_slice(), m.bytes)))
    }

    /// Since when the oldest unacknowledged message waits (submitted or sent), if any.
    pub fn oldest_since(&self) -> Option<Instant> {
        let sent = self.in_flight.front().map(|m| m.sent_at);
        let queued = self.submitted.front().map(|m| m.at);
        [sent, queued].into_iter().flatten().min()
    }

    /// The connection is gone: every seq not acknowledged is pending again, oldest first.
    /// The window is empty afterwards.
    pub fn on_disconnect(&mut self) -> Vec<u64> {
        let mut seqs = Vec::new();
        for m in self.in_flight.drain(..) {
            seqs.extend(m.seqs);
        }
        for m in self.submitted.drain(..) {
            seqs.extend(m.seqs);
        }
        seqs
    }

    /// The oldest message waiting longer than the PUBACK timeout, if any: the link is to be
    /// treated as broken. Messages not yet on the wire count from their submission, so a
    /// link that stalls before rumqttc can even write is caught too.
    pub fn overdue(&self, now: Instant) -> Option<UplinkError> {
        let sent = self.in_flight.front().map(|m| (Some(m.pkid), m.sent_at));
        let queued = self.submitted.front().map(|m| (None, m.at));
        [sent, queued]
            .into_iter()
            .flatten()
            .filter(|(_, since)| now.saturating_duration_since(*since) >= self.puback_timeout)
            .min_by_key(|(_, since)| *since)
            .map(|(pkid, since)| UplinkError::AckTimeout {
                pkid,
                waited: now.saturating_duration_since(since),
            })
    }

    /// When the oldest waiting message becomes overdue: the driver sleeps until then.
    pub fn next_deadline(&self) -> Option<Instant> {
        let sent = self.in_flight.front().map(|m| m.sent_at);
        let queued = self.submitted.front().map(|m| m.at);
        [sent, queued]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t + self.puback_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Classified;

    fn window(n: usize) -> AckWindow {
        AckWindow::new(n, Duration::from_secs(30))
    }

    #[test]
    fn pubacks_map_back_to_the_batches_in_publish_order() {
        let t = Instant::now();
        let mut w = window(10);
        w.submit(vec![1, 2, 3], t).unwrap();
        w.submit(vec![4, 5], t).unwrap();
        w.on_outgoing_publish(7, t).unwrap();
        w.on_outgoing_publish(8, t).unwrap();
        assert_eq!(w.on_puback(8), Some(vec![4, 5]));
        assert_eq!(w.on_puback(7), Some(vec![1, 2, 3]));
        assert!(w.is_empty());
    }

    #[test]
    fn a_puback_for_an_unknown_or_repeated_packet_acknowledges_nothing() {
        let t = Instant::now();
        let mut w = window(10);
        w.submit(vec![1], t).unwrap();
        assert_eq!(w.on_puback(1), None, "not on the wire yet");
        w.on_outgoing_publish(1, t).unwrap();
        assert_eq!(w.on_puback(2), None);
        assert_eq!(w.on_puback(1), Some(vec![1]));
        assert_eq!(w.on_puback(1), None);
    }

    #[test]
    fn the_window_refuses_more_than_its_size_until_an_ack_frees_a_slot() {
        let t = Instant::now();
        let mut w = window(2);
        w.submit(vec![1], t).unwrap();
        w.submit(vec![2], t).unwrap();
        assert!(!w.has_room());
        assert_eq!(w.submit(vec![3], t), Err(vec![3]));
        w.on_outgoing_publish(1, t).unwrap();
        assert!(!w.has_room(), "on the wire still counts");
        w.on_puback(1).unwrap();
        assert!(w.has_room());
        w.submit(vec![3], t).unwrap();
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn a_status_message_takes_a_slot_and_acknowledges_no_fix() {
        let t = Instant::now();
        let mut w = window(4);
        w.submit(vec![], t).unwrap();
        w.submit(vec![1, 2], t).unwrap();
        w.on_outgoing_publish(1, t).unwrap();
        w.on_outgoing_publish(2, t).unwrap();
        assert_eq!(w.on_puback(1), Some(vec![]));
        assert_eq!(w.on_puback(2), Some(vec![1, 2]));
    }

    #[test]
    fn a_disconnect_releases_exactly_the_unacknowledged_seqs_oldest_first() {
        let t = Instant::now();
        let mut w = window(10);
        for batch in [vec![1, 2], vec![3], vec![4, 5], vec![6]] {
            w.submit(batch, t).unwrap();
        }
        w.on_outgoing_publish(1, t).unwrap();
        w.on_outgoing_publish(2, t).unwrap();
        w.on_outgoing_publish(3, t).unwrap();
        assert_eq!(w.on_puback(2), Some(vec![3]));
        assert_eq!(w.on_disconnect(), vec![1, 2, 4, 5, 6]);
        assert!(w.is_empty());
        assert_eq!(w.on_disconnect(), Vec::<u64>::new());
    }

    #[test]
    fn packet_ids_may_be_reused_after_a_disconnect() {
        let t = Instant::now();
        let mut w = window(4);
        w.submit(vec![1], t).unwrap();
        w.on_outgoing_publish(1, t).unwrap();
        w.on_disconnect();
        w.submit(vec![1], t).unwrap();
        w.on_outgoing_publish(1, t).unwrap();
        assert_eq!(w.on_puback(1), Some(vec![1]));
    }

    #[test]
    fn sizes_come_back_with_the_ack_and_the_unacked_list_keeps_the_order_sent() {
        let t = Instant::now();
        let mut w = window(4);
        w.submit(vec![], t).unwrap();
        w.submit_sized(vec![1, 2], 900, t).unwrap();
        w.submit_sized(vec![3], 400, t + Duration::from_secs(1))
            .unwrap();
        w.on_outgoing_publish(1, t).unwrap();
        w.on_outgoing_publish(2, t).unwrap();
        assert_eq!(w.oldest_since(), Some(t));
        let unacked: Vec<(Vec<u64>, usize)> = w.unacked().map(|(s, b)| (s.to_vec(), b)).collect();
        assert_eq!(unacked, [(vec![], 0), (vec![1, 2], 900), (vec![3], 400)]);
        assert_eq!(
            w.on_puback_message(2),
            Some(Acked {
                seqs: vec![1, 2],
                bytes: 900
            })
        );
        w.on_puback(1).unwrap();
        assert_eq!(w.oldest_since(), Some(t + Duration::from_secs(1)));
    }

    #[test]
    fn a_publish_that_was_never_submitted_is_a_mismatch() {
        let t = Instant::now();
        let mut w = window(4);
        let e = w.on_outgoing_publish(1, t).unwrap_err();
        assert_eq!(e.code(), "MQTT_ACK_MISMATCH");
    }

    #[test]
    fn a_packet_id_reused_while_in_flight_is_a_mismatch() {
        let t = Instant::now();
        let mut w = window(4);
        w.submit(vec![1], t).unwrap();
        w.submit(vec![2], t).unwrap();
        w.on_outgoing_publish(1, t).unwrap();
        let e = w.on_outgoing_publish(1, t).unwrap_err();
        assert_eq!(e.code(), "MQTT_ACK_MISMATCH");
    }

    #[test]
    fn a_message_without_puback_past_the_timeout_is_overdue() {
        let t0 = Instant::now();
        let mut w = window(4);
        assert!(w.overdue(t0).is_none());
        assert_eq!(w.next_deadline(), None);
        w.submit(vec![1], t0).unwrap();
        w.on_outgoing_publish(9, t0 + Duration::from_secs(1))
            .unwrap();
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_secs(31)));
        assert!(w.overdue(t0 + Duration::from_secs(30)).is_none());
        let e = w.overdue(t0 + Duration::from_secs(31)).unwrap();
        assert_eq!(e.code(), "MQTT_ACK_TIMEOUT");
        assert!(matches!(e, UplinkError::AckTimeout { pkid: Some(9), .. }));
    }

    #[test]
    fn a_message_stuck_before_the_wire_is_overdue_from_its_submission() {
        let t0 = Instant::now();
        let mut w = window(4);
        w.submit(vec![1], t0).unwrap();
        let e = w.overdue(t0 + Duration::from_secs(30)).unwrap();
        assert!(matches!(e, UplinkError::AckTimeout { pkid: None, .. }));
    }

    #[test]
    fn an_ack_clears_the_deadline() {
        let t0 = Instant::now();
        let mut w = window(4);
        w.submit(vec![1], t0).unwrap();
        w.on_outgoing_publish(1, t0).unwrap();
        w.on_puback(1).unwrap();
        assert!(w.overdue(t0 + Duration::from_secs(3600)).is_none());
        assert_eq!(w.next_deadline(), None);
    }
}
