//! Where the uplink's fixes come from and where their fate goes: the [`FixSource`] trait, which
//! the buffer implements ([`super::link`]) and the tests' in-memory source too. Fixes flow out
//! in batches by `seq`; acks, releases and dead letters flow back. The trait only says what a
//! source promises; it holds no state and does no I/O.

use crate::error::Classified;
use crate::fix::Fix;
use crate::uplink::error::UplinkError;
use std::future::Future;

/// Where fixes come from and where their fate goes: the buffer implements this.
///
/// A fix handed out by `next_batch` is "in flight" until it is acked, released or
/// dead-lettered; `next_batch` must not hand it out again before that.
pub trait FixSource: Send {
    type Error: Classified + std::error::Error + Send + Sync + 'static;

    /// The buffer's stream id (`stream` in payloads).
    fn stream(&self) -> String;

    /// Up to `max` pending fixes that are not in flight, oldest first; empty when none.
    fn next_batch(
        &mut self,
        max: usize,
    ) -> impl Future<Output = Result<Vec<(u64, Fix)>, Self::Error>> + Send;

    /// The last `next_batch` handed out everything pending at the time: asking again at once
    /// would find nothing new (fixes stored since show through `fixes_pending`). `false` when
    /// unknown, and after a batch that left fixes behind.
    fn drained(&self) -> bool {
        false
    }

    /// Resolves when `next_batch` may have something new (a fix was stored). May resolve
    /// spuriously; the publisher also retries on its own every `idle_poll`.
    fn fixes_pending(&mut self) -> impl Future<Output = ()> + Send;

    /// The broker acknowledged these seqs: they may leave the buffer.
    fn ack(&mut self, seqs: &[u64]) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// These seqs were not acknowledged (link broke): pending again.
    fn release(&mut self, seqs: &[u64]) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// One message carrying `fixes` fixes was handed to the broker connection (for metrics;
    /// a batch may go out as several messages, or not at all).
    fn published(&mut self, fixes: usize) {
        let _ = fixes;
    }

    /// The broker will never take this fix: set it aside, counted.
    fn dead_letter(
        &mut self,
        seq: u64,
        why: &UplinkError,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}
