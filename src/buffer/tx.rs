//! The write transaction of the moment and the counts it moves.
//!
//! [`Ledger`] keeps the counts twice: as of the last commit (in the file, they survive the
//! process) and inside the open transaction; a rollback restores the first. [`OpenTx`] is
//! what the open transaction holds that SQLite cannot give back after a failure: its fixes
//! (for the memory ring), the acknowledgements it deleted, and the appended fixes whose rows
//! wait for the commit. Neither touches SQLite.

use super::StoredFix;
use crate::fix::Fix;

/// Numbers that move with each write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counters {
    pub(super) last_seq: u64,
    /// Rows in `fixes` (acknowledged ones whose delete is still pending included).
    pub(super) depth: u64,
    pub(super) evicted: u64,
    pub(super) dead_letters: u64,
}

#[derive(Debug)]
pub(super) struct Ledger {
    /// As of the last commit: in the file, survives the process.
    committed: Counters,
    /// Inside the open transaction.
    current: Counters,
    /// `meta.evicted` as last written.
    persisted_evicted: u64,
}

impl Ledger {
    pub(super) fn new(counters: Counters) -> Self {
        Ledger {
            committed: counters,
            current: counters,
            persisted_evicted: counters.evicted,
        }
    }

    pub(super) fn current(&self) -> Counters {
        self.current
    }

    pub(super) fn committed(&self) -> Counters {
        self.committed
    }

    /// One more fix: its seq.
    pub(super) fn next_seq(&mut self) -> u64 {
        self.current.last_seq += 1;
        self.current.depth += 1;
        self.current.last_seq
    }

    /// One more seq, given to a record that goes straight to `dead_letters` (a crash
    /// journal record that is not a fix): counted there, not in the depth.
    pub(super) fn next_seq_dead_lettered(&mut self) -> u64 {
        self.current.last_seq += 1;
        self.current.dead_letters += 1;
        self.current.last_seq
    }

    /// Rows deleted in the transaction (acknowledged).
    pub(super) fn gone(&mut self, n: u64) {
        self.current.depth = self.current.depth.saturating_sub(n);
    }

    /// Rows evicted in the transaction by the capacity policy.
    pub(super) fn evicted(&mut self, n: u64) {
        self.current.depth = self.current.depth.saturating_sub(n);
        self.current.evicted += n;
    }

    /// A fix dropped from the memory ring: not transactional, it happened whatever the disk
    /// does next.
    pub(super) fn dropped_from_ring(&mut self) {
        self.current.evicted += 1;
        self.committed.evicted += 1;
    }

    /// Rows moved to `dead_letters` in the transaction.
    pub(super) fn set_aside(&mut self, n: u64) {
        self.current.depth = self.current.depth.saturating_sub(n);
        self.current.dead_letters += n;
    }

    /// Dead letters back to pending, committed by their own transaction.
    pub(super) fn requeued(&mut self, n: u64) {
        for c in [&mut self.current, &mut self.committed] {
            c.depth += n;
            c.dead_letters = c.dead_letters.saturating_sub(n);
        }
    }

    /// Another process changed the counts (committed by its own connection).
    pub(super) fn changed_outside(&mut self, depth: i64, dead_letters: i64) {
        for c in [&mut self.current, &mut self.committed] {
            c.depth = c.depth.saturating_add_signed(depth);
            c.dead_letters = c.dead_letters.saturating_add_signed(dead_letters);
        }
    }

    /// `meta.evicted` is behind the transaction's count.
    pub(super) fn evicted_unwritten(&self) -> bool {
        self.current.evicted != self.persisted_evicted
    }

    /// The transaction committed (its meta written).
    pub(super) fn commit(&mut self) {
        self.committed = self.current;
        self.persisted_evicted = self.current.evicted;
    }

    /// The transaction rolled back.
    pub(super) fn rollback(&mut self) {
        self.current = self.committed;
    }

    /// A new file: its own counts.
    pub(super) fn reset(&mut self, counters: Counters) {
        *self = Ledger::new(counters);
    }
}

/// The write transaction of one call.
#[derive(Debug, Default)]
pub(super) struct OpenTx {
    /// Fixes appended in it, in seq order: kept so a failed commit loses none of them.
    pub(super) fixes: Vec<Fix>,
    /// How many of the acknowledged seqs it deleted.
    pub(super) acks_applied: usize,
    /// It deleted the row of the newest seq (or gave a seq no row in `fixes` has), so
    /// `meta.last_seq` must be written.
    pub(super) deleted_newest: bool,
    /// The fixes `append` stored in it, with their seqs: unsynced once it commits.
    pub(super) appended: Vec<StoredFix>,
    /// How many of `appended` have their row written. The journal holds each fix from the
    /// moment it is appended; its row is written with the others at the commit (ten rows in
    /// a row cost a fraction of ten written an epoch apart), or sooner when a statement needs
    /// it (`Buffer::write_appended`).
    pub(super) written: usize,
}
