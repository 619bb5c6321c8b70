//! Deliveries: which seqs the uplink holds (handed out, not yet resolved), which it has
//! acknowledged (their rows are deleted by the next write transaction), and which belong to
//! a stream the file no longer has (stale: their acks must not hit the new stream's fixes of
//! the same numbers).
//!
//! In: seqs handed out by a scan, acks, releases and dead letters from the uplink, the
//! commit that applied some acks, a new stream. Out: whether a seq may be handed out,
//! the acks a transaction must apply, when they fall due. It never touches SQLite: the
//! buffer applies what this room says.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Longest wait for the uplink to resolve an old stream's seqs (a PUBACK or a disconnect
/// comes far sooner).
pub(super) const STALE_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub(super) struct Deliveries {
    /// Handed out and not yet resolved; acknowledged seqs stay here until their delete is
    /// committed, so they are not handed out again.
    in_flight: BTreeSet<u64>,
    /// Acknowledged; deleted by the next write transaction.
    acked: Vec<u64>,
    ack_since: Option<Instant>,
    /// Seqs of a previous stream still in flight at the uplink when the stream changed: their
    /// acks must not delete the new stream's fixes of the same numbers, so nothing new is
    /// handed out until they are resolved (or [`STALE_WAIT`] passed).
    stale: BTreeSet<u64>,
    stale_since: Option<Instant>,
}

impl Deliveries {
    /// An old stream's acks may still come: nothing may be handed out.
    pub(super) fn blocked(&self) -> bool {
        !self.stale.is_empty()
    }

    /// Handed out and not resolved (acknowledged ones whose delete is pending included).
    pub(super) fn is_out(&self, seq: u64) -> bool {
        self.in_flight.contains(&seq)
    }

    pub(super) fn hand_out(&mut self, seqs: impl IntoIterator<Item = u64>) {
        self.in_flight.extend(seqs);
    }

    /// The broker has these. Returns whether the acks waiting reached `max` (a transaction
    /// of their own is then due at once).
    pub(super) fn ack(&mut self, seqs: &[u64], now: Instant, max: usize) -> bool {
        for &seq in seqs {
            if self.stale.remove(&seq) {
                // An old stream's fix: its number means another fix now.
                self.in_flight.remove(&seq);
                continue;
            }
            self.in_flight.insert(seq);
            self.acked.push(seq);
        }
        if !self.acked.is_empty() {
            self.ack_since.get_or_insert(now);
        }
        self.acked.len() >= max
    }

    /// Not delivered (disconnect): back to pending.
    pub(super) fn release(&mut self, seqs: &[u64]) {
        for seq in seqs {
            self.stale.remove(seq);
            if !self.acked.contains(seq) {
                self.in_flight.remove(seq);
            }
        }
    }

    /// The broker will never take these: resolved here; returns those of the current stream
    /// (an old stream's seqs name other fixes now).
    pub(super) fn give_up(&mut self, seqs: &[u64]) -> Vec<u64> {
        seqs.iter()
            .copied()
            .filter(|seq| {
                self.in_flight.remove(seq);
                !self.stale.remove(seq)
            })
            .collect()
    }

    /// Acknowledged seqs, oldest acknowledgement first: what a transaction deletes.
    pub(super) fn acked(&self) -> &[u64] {
        &self.acked
    }

    /// Whether `seq` was acknowledged.
    pub(super) fn is_acked(&self, seq: u64) -> bool {
        self.acked.contains(&seq)
    }

    /// A commit deleted the first `applied` acknowledged rows: they are resolved.
    pub(super) fn applied(&mut self, applied: usize) {
        for seq in self.acked.drain(..applied.min(self.acked.len())) {
            self.in_flight.remove(&seq);
        }
        if self.acked.is_empty() {
            self.ack_since = None;
        }
    }

    /// The acknowledgements' deletes fall due: an interval after the first, or `max` of
    /// them.
    pub(super) fn acks_due(&self, now: Instant, interval: Duration, max: usize) -> bool {
        self.ack_since.is_some_and(|t| {
            now.saturating_duration_since(t) >= interval || self.acked.len() >= max
        })
    }

    /// Handed out and not acknowledged.
    pub(super) fn unacked(&self) -> u64 {
        self.in_flight.len().saturating_sub(self.acked.len()) as u64
    }

    /// The old stream's seqs were never resolved within [`STALE_WAIT`]: forget them (the new
    /// stream is handed out). Returns how many were forgotten.
    pub(super) fn expire_stale(&mut self, now: Instant) -> usize {
        if self.stale.is_empty() {
            self.stale_since = None;
            return 0;
        }
        if self
            .stale_since
            .is_some_and(|t| now.saturating_duration_since(t) >= STALE_WAIT)
        {
            let n = self.stale.len();
            self.stale.clear();
            self.stale_since = None;
            return n;
        }
        0
    }

    /// When this room next wants a wake: the acks' flush (`interval` after the first, plus
    /// `slack`) and the old stream's wait running out.
    pub(super) fn next_due(&self, interval: Duration, slack: Duration) -> Option<Instant> {
        let flush = self.ack_since.map(|t| t + interval + slack);
        let stale = self.stale_since.map(|t| t + STALE_WAIT);
        match (flush, stale) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A new stream began (the file was replaced): what the uplink still holds of the old
    /// one is stale; the acknowledged seqs are returned (their fixes are delivered, and
    /// must not be salvaged into the new stream).
    pub(super) fn new_stream(&mut self, now: Instant) -> BTreeSet<u64> {
        let acked: BTreeSet<u64> = self.acked.drain(..).collect();
        self.stale = std::mem::take(&mut self.in_flight)
            .difference(&acked)
            .copied()
            .collect();
        self.stale_since = (!self.stale.is_empty()).then_some(now);
        self.ack_since = None;
        acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_stays_in_flight_until_its_delete_is_committed() {
        let mut d = Deliveries::default();
        let now = Instant::now();
        d.hand_out([1, 2, 3]);
        assert!(!d.ack(&[1, 2], now, 10));
        assert!(d.is_out(1) && d.is_acked(1));
        assert_eq!(d.unacked(), 1);
        d.applied(1);
        assert!(!d.is_out(1) && d.is_out(2) && d.acked() == [2]);
        d.applied(1);
        assert_eq!(d.next_due(Duration::from_secs(1), Duration::ZERO), None);
    }

    #[test]
    fn an_old_streams_seqs_block_hand_out_until_resolved_or_expired() {
        let mut d = Deliveries::default();
        let t0 = Instant::now();
        d.hand_out([4, 5, 6]);
        d.ack(&[4], t0, 10);
        let acked = d.new_stream(t0);
        assert_eq!(acked.into_iter().collect::<Vec<_>>(), vec![4]);
        assert!(d.blocked());
        // An ack of an old seq resolves it and is not counted as the new stream's.
        d.ack(&[5], t0, 10);
        assert!(d.acked().is_empty());
        assert_eq!(d.expire_stale(t0 + STALE_WAIT / 2), 0);
        assert_eq!(
            d.next_due(Duration::from_secs(1), Duration::ZERO),
            Some(t0 + STALE_WAIT)
        );
        assert_eq!(d.expire_stale(t0 + STALE_WAIT), 1);
        assert!(!d.blocked());
    }
}
