//! Who gets one of the health endpoint's connection slots when they are all taken.
//!
//! `/live` is what watchdogs poll and `/health` what operators ask: a local process holding
//! every slot with connections that send a byte a second (and reconnect when cut) must not
//! starve them. The rule: a connection that has sent its whole request head gets a slot, if
//! need be by taking it from the connection that has been idle the longest (no request in
//! progress for at least [`PREEMPT_IDLE`]: one still dribbling its head, or a keep-alive
//! between requests); streams are never taken. A connection that arrives while all slots are
//! taken waits in a bounded waiting room until its head is complete ([`SCREEN_BUDGET`] at
//! most); when the room is full, the one that has waited longest is answered 503 and closed
//! to make room. A real client sends its head in one packet and passes through the room in
//! a millisecond; one dribbling a byte a second never completes its head and never keeps
//! anyone out. Every refusal and every taken slot is counted (`/metrics`) and logged
//! (throttled, code `HEALTH_BUSY`).
//!
//! **The watchdog's lane**: a client that pipelines request after request on each of its
//! connections is never idle, so no slot can be taken from it, and a flood of them fills the
//! waiting room with complete heads that compete for every slot freed. So `/live` and
//! `/health` (`GET` or `HEAD`, no other path) do not compete: when every slot is taken they
//! are answered on one of [`LANE_SLOTS`] slots kept for them alone, one request per
//! connection (closed after the answer, so pipelining gains nothing there), taken before
//! the waiting room when the head is already there.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// A slot idle this long (no request in progress) may be given to a connection with a
/// complete request head. Longer than a response takes to leave on loopback, so an answer
/// being written is never cut.
pub const PREEMPT_IDLE: Duration = Duration::from_millis(100);
/// How long a connection that arrived while all slots were taken may take to send its whole
/// request head.
pub const SCREEN_BUDGET: Duration = Duration::from_secs(1);
/// Connections waiting for a slot at once; the longest waiting is refused to make room.
pub const MAX_WAITING: usize = 64;
/// Slots kept for `/live` and `/health` while every other is taken. Each answers one
/// request in microseconds and is free again, so a few serve a watchdog and an operator
/// even when something floods these two paths too.
pub const LANE_SLOTS: usize = 4;

#[derive(Debug)]
struct Slot {
    /// `None` while a request is being answered.
    idle_since: Option<Instant>,
    /// A `/health/stream` answer: never taken.
    stream: bool,
    /// Cancelled when the slot is given to another connection.
    evict: CancellationToken,
}

#[derive(Debug, Default)]
struct Table {
    slots: HashMap<u64, Slot>,
    /// Waiting connections in arrival order: id, whether its head is complete, and the token
    /// that refuses it.
    waiting: VecDeque<(u64, bool, CancellationToken)>,
}

/// The slots, the waiting room and the watchdog's lane.
#[derive(Debug)]
pub struct Slots {
    permits: Arc<Semaphore>,
    lane: Arc<Semaphore>,
    table: Mutex<Table>,
    next_id: AtomicU64,
}

/// A connection's slot: released when dropped.
#[derive(Debug)]
pub struct Lease {
    id: u64,
    slots: Arc<Slots>,
    evict: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

/// A place in the waiting room: left when dropped.
#[derive(Debug)]
pub struct Waiting {
    id: u64,
    slots: Arc<Slots>,
    /// Cancelled when the room is full and this connection has waited longest.
    pub refused: CancellationToken,
}

impl Slots {
    pub fn new(max_connections: usize) -> Arc<Self> {
        Arc::new(Slots {
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
            lane: Arc::new(Semaphore::new(LANE_SLOTS)),
            table: Mutex::new(Table::default()),
            next_id: AtomicU64::new(0),
        })
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A free slot, if there is one.
    pub fn try_lease(self: &Arc<Self>, now: Instant) -> Option<Lease> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some(self.lease(permit, now))
    }

    /// A slot within `within`: free, or taken from the longest-idle connection. `None` when
    /// every slot is busy answering (or streaming) for that long.
    pub async fn lease_for_complete_head(self: &Arc<Self>, within: Duration) -> Option<Lease> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(lease) = self.try_lease(Instant::now()) {
                return Some(lease);
            }
            let freed = self.preempt(Instant::now());
            let wait = if freed {
                // The evicted connection drops its permit as soon as its task sees the token.
                Duration::from_millis(100)
            } else {
                PREEMPT_IDLE
            };
            let until = (tokio::time::Instant::now() + wait).min(deadline);
            if let Ok(Ok(permit)) =
                tokio::time::timeout_at(until, self.permits.clone().acquire_owned()).await
            {
                return Some(self.lease(permit, Instant::now()));
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// A slot of the watchdog's lane within `within` (for one `/live` or `/health`
    /// request); `None` when the lane stays full that long.
    pub async fn lane(&self, within: Duration) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout(within, self.lane.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
    }

    fn lease(self: &Arc<Self>, permit: OwnedSemaphorePermit, now: Instant) -> Lease {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evict = CancellationToken::new();
        self.table().slots.insert(
            id,
            Slot {
                idle_since: Some(now),
                stream: false,
                evict: evict.clone(),
            },
        );
        Lease {
            id,
            slots: Arc::clone(self),
            evict,
            _permit: permit,
        }
    }

    /// Evict the connection idle the longest (at least [`PREEMPT_IDLE`]); false when none is.
    fn preempt(&self, now: Instant) -> bool {
        let table = self.table();
        let victim = table
            .slots
            .iter()
            .filter(|(_, s)| !s.stream && !s.evict.is_cancelled())
            .filter_map(|(id, s)| s.idle_since.map(|since| (*id, since)))
            .filter(|(_, since)| now.saturating_duration_since(*since) >= PREEMPT_IDLE)
            .min_by_key(|(_, since)| *since)
            .map(|(id, _)| id);
        match victim.and_then(|id| table.slots.get(&id)) {
            Some(slot) => {
                slot.evict.cancel();
                true
            }
            None => false,
        }
    }

    /// A place in the waiting room; when it is full, the connection that has waited longest
    /// without completing its head is refused to make room (the longest waiting of all, if
    /// every one has a complete head).
    pub fn wait(self: &Arc<Self>) -> Waiting {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let refused = CancellationToken::new();
        let mut table = self.table();
        while table.waiting.len() >= MAX_WAITING {
            let victim = table
                .waiting
                .iter()
                .position(|(_, complete, _)| !complete)
                .unwrap_or(0);
            if let Some((_, _, token)) = table.waiting.remove(victim) {
                token.cancel();
            }
        }
        table.waiting.push_back((id, false, refused.clone()));
        Waiting {
            id,
            slots: Arc::clone(self),
            refused,
        }
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Slot)) {
        if let Some(slot) = self.table().slots.get_mut(&id) {
            f(slot);
        }
    }
}

impl Lease {
    /// A request head arrived: its answer is being made.
    pub fn busy(&self) {
        self.slots.update(self.id, |s| s.idle_since = None);
    }

    /// The answer is made; the connection idles until its next request.
    pub fn idle(&self) {
        let now = Instant::now();
        self.slots.update(self.id, |s| s.idle_since = Some(now));
    }

    /// The answer is a stream: the slot is never taken from it.
    pub fn streaming(&self) {
        self.slots.update(self.id, |s| s.stream = true);
    }

    /// Cancelled when the slot is given to another connection.
    pub fn evicted(&self) -> &CancellationToken {
        &self.evict
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.slots.table().slots.remove(&self.id);
    }
}

impl Waiting {
    /// Its whole request head is here: it is refused to make room only after every waiting
    /// connection still dribbling.
    pub fn head_complete(&self) {
        let id = self.id;
        if let Some(w) = self.slots.table().waiting.iter_mut().find(|w| w.0 == id) {
            w.1 = true;
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let id = self.id;
        self.slots.table().waiting.retain(|(w, _, _)| *w != id);
    }
}

/// Whether a complete request head asks what the lane serves: `GET` or `HEAD` of `/live`
/// or `/health` (a query included: it is answered, with a 400).
pub fn for_lane(head: &[u8]) -> bool {
    let path = head
        .strip_prefix(b"GET ")
        .or_else(|| head.strip_prefix(b"HEAD "));
    path.is_some_and(|p| {
        [&b"/live"[..], b"/health"].iter().any(|want| {
            p.strip_prefix(*want)
                .is_some_and(|rest| rest.starts_with(b" ") || rest.starts_with(b"?"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lane_serves_live_and_health_and_nothing_else() {
        for head in [
            &b"GET /live HTTP/1.1\r\n\r\n"[..],
            b"HEAD /health HTTP/1.1\r\n\r\n",
            b"GET /health?verbose HTTP/1.1\r\n\r\n",
        ] {
            assert!(for_lane(head), "{}", String::from_utf8_lossy(head));
        }
        for head in [
            &b"GET /metrics HTTP/1.1\r\n\r\n"[..],
            b"GET /health/stream HTTP/1.1\r\n\r\n",
            b"GET /lively HTTP/1.1\r\n\r\n",
            b"POST /live HTTP/1.1\r\n\r\n",
            b"GET /live",
        ] {
            assert!(!for_lane(head), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn the_longest_idle_slot_is_taken_and_never_a_busy_one_or_a_stream() {
        let slots = Slots::new(3);
        let t0 = Instant::now();
        let old = slots.try_lease(t0).unwrap();
        let newer = slots.try_lease(t0 + Duration::from_millis(50)).unwrap();
        let stream = slots.try_lease(t0).unwrap();
        stream.streaming();
        assert!(slots.try_lease(t0).is_none(), "all three taken");
        // Nothing idle long enough yet.
        assert!(!slots.preempt(t0 + PREEMPT_IDLE - Duration::from_millis(1)));
        let later = t0 + Duration::from_secs(1);
        assert!(slots.preempt(later));
        assert!(old.evicted().is_cancelled());
        assert!(!newer.evicted().is_cancelled());
        assert!(!stream.evicted().is_cancelled());
        // A connection answering a request is not taken.
        newer.busy();
        assert!(!slots.preempt(later), "the old one is already going");
        drop(old);
        assert!(slots.try_lease(later).is_some());
    }

    #[test]
    fn a_full_waiting_room_refuses_the_one_waiting_longest() {
        let slots = Slots::new(1);
        let mut room: Vec<Waiting> = (0..MAX_WAITING).map(|_| slots.wait()).collect();
        assert!(room.iter().all(|w| !w.refused.is_cancelled()));
        let newcomer = slots.wait();
        assert!(room[0].refused.is_cancelled());
        assert!(room[1..].iter().all(|w| !w.refused.is_cancelled()));
        assert!(!newcomer.refused.is_cancelled());
        // One with a complete head is passed over for one still dribbling.
        room[1].head_complete();
        let pushing = slots.wait();
        assert!(!room[1].refused.is_cancelled());
        assert!(room[2].refused.is_cancelled());
        assert!(!pushing.refused.is_cancelled());
        // Leaving frees a place without refusing anyone.
        room.truncate(10);
        let another = slots.wait();
        assert!(!another.refused.is_cancelled());
        assert!(room[3..].iter().all(|w| !w.refused.is_cancelled()));
    }
}
