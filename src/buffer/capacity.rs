//! Capacity: the buffer's limits (`max_fixes`, `max_bytes`) and the eviction policy that
//! keeps it within them, before a fix is stored: the N+1th fix evicts. The local history has
//! a budget of its own (`[history] max_bytes`, see `history.rs`): its bytes are left out
//! here, so the file holds up to both.
//!
//! In: the depth before each new fix, the files' sizes after each sync. Out: the rows
//! evicted (oldest first, or every second one of the oldest half), counted by the caller.
//! It only ever deletes rows of `fixes`, inside the caller's transaction.

use crate::config::{BufferSettings, EvictionPolicy};
use rusqlite::Connection;

#[derive(Debug)]
pub(super) struct Capacity {
    max_fixes: u64,
    max_bytes: u64,
    eviction: EvictionPolicy,
    /// The file's used pages passed `max_bytes` at the last sync.
    over_bytes: bool,
}

impl Capacity {
    pub(super) fn new(cfg: &BufferSettings) -> Self {
        Capacity {
            max_fixes: cfg.max_fixes.get(),
            max_bytes: cfg.max_bytes,
            eviction: cfg.eviction,
            over_bytes: false,
        }
    }

    /// A fix more would break a limit: room must be made first.
    pub(super) fn full(&self, depth: u64) -> bool {
        depth >= self.max_fixes || self.over_bytes
    }

    /// Makes room for one more fix in a buffer of `depth` fixes (every one of them with its
    /// row written; the history's rows take `history_bytes`), by the policy. Fixes in flight
    /// may be evicted too (counted); a later ack or release of their seq is then a no-op.
    /// Returns how many rows went.
    pub(super) fn make_room(
        &mut self,
        conn: &Connection,
        depth: u64,
        history_bytes: u64,
    ) -> rusqlite::Result<u64> {
        let over_count = depth >= self.max_fixes;
        let evicted = match (self.eviction, over_count) {
            (EvictionPolicy::Thin, _) if depth / 2 >= 2 => thin_oldest_half(conn, depth)?,
            (_, true) => drop_oldest(conn, depth + 1 - self.max_fixes)?,
            (_, false) => {
                let used = used_bytes(conn)?.saturating_sub(history_bytes);
                let per_fix = (used / depth.max(1)).max(1);
                let excess = used.saturating_sub(self.max_bytes);
                // A 1% margin, so the next appends do not each evict again.
                drop_oldest(conn, excess.div_ceil(per_fix) + (depth / 100).max(1))?
            }
        };
        self.over_bytes = false;
        Ok(evicted)
    }

    pub(super) fn policy(&self) -> EvictionPolicy {
        self.eviction
    }

    /// After a sync: the files' sizes (`bytes_seen`) bound the pages in use, so SQLite is
    /// asked (`used`) only near the limit; the history's rows (`history_bytes`) do not count.
    pub(super) fn after_sync(
        &mut self,
        bytes_seen: u64,
        history_bytes: u64,
        used: impl FnOnce() -> rusqlite::Result<u64>,
    ) {
        let limit = self.max_bytes.saturating_add(history_bytes);
        self.over_bytes = bytes_seen > limit && used().map(|u| u > limit).unwrap_or(false);
    }

    /// A new file: nothing in it is over.
    pub(super) fn new_file(&mut self) {
        self.over_bytes = false;
    }
}

fn drop_oldest(conn: &Connection, n: u64) -> rusqlite::Result<u64> {
    let n = n.min(i64::MAX as u64) as i64;
    let gone = conn.execute(
        "DELETE FROM fixes WHERE seq IN (SELECT seq FROM fixes ORDER BY seq LIMIT ?1)",
        [n],
    )?;
    Ok(gone as u64)
}

/// Drops every second fix (2nd, 4th, ...) of the oldest half: the old track keeps its
/// shape at half the density.
fn thin_oldest_half(conn: &Connection, depth: u64) -> rusqlite::Result<u64> {
    let half = (depth / 2).min(i64::MAX as u64) as i64;
    let gone = conn.execute(
        "DELETE FROM fixes WHERE seq IN (
             SELECT seq FROM (
                 SELECT seq, row_number() OVER (ORDER BY seq) AS n
                 FROM (SELECT seq FROM fixes ORDER BY seq LIMIT ?1)
             ) WHERE n % 2 = 0
         )",
        [half],
    )?;
    Ok(gone as u64)
}

/// Bytes of the pages in use (the file's pages less its free list).
pub(super) fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    // At every sync near the limit: kept prepared.
    let (pages, free, size): (i64, i64, i64) = conn
        .prepare_cached(
            "SELECT (SELECT page_count FROM pragma_page_count),
                (SELECT freelist_count FROM pragma_freelist_count),
                (SELECT page_size FROM pragma_page_size)",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok((pages - free).max(0) as u64 * size.max(0) as u64)
}
