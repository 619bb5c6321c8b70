//! The local history: every accepted fix (also those the report stage did not keep for
//! sending) for `keep_days` of receiver time within `max_bytes`, in the buffer's file, so that
//! the back end can ask for a window of the full track again (`backfill`).
//!
//! In: accepted fixes ([`super::Buffer::remember`]). Each goes into the crash journal with the
//! buffer's next write to it (so it survives a crash as a queued fix does) and becomes a row
//! in the buffer's next commit (no commit or sync of its own). Out: a window of receiver time,
//! in time order, a page at a time ([`HistoryWindow`]). It never touches `fixes`, seqs or the
//! uplink: a fix in the history is published again only when asked for.
//!
//! Layout: `history(k INTEGER PRIMARY KEY, lat, lon, alt_mm, speed_mmps, course_mdeg, hdop_c,
//! sats, mode)`, the fix's values as `fixes` stores them. The key is the receiver time in ms
//! times 4, plus 0 to 3: rows sit in time order in one B-tree, appended at its end (50 bytes a
//! row with 1 KiB pages), and up to four different fixes of one millisecond (a receiver whose
//! clock went back) are all kept, while the same fix stored again (a crash journal replayed
//! after its commit) is not. The table is made when the history is on and dropped when it is
//! off (`keep_days = 0`: nothing of the track is kept); files of earlier versions gain it
//! without a version change (older agents ignore it).
//!
//! Counts: the rows as of a mark (the newest key then), the rows evicted and the fixes dropped
//! (by [`HistoryDrop`] reason) are written to `meta` every [`PERSIST_EVERY`] rows, with each
//! deletion and after a drop, riding in the commit; at open, the rows after the mark are
//! counted. (A count row in the table would dirty its last page with every commit and cost
//! SQLite's append-at-the-end split: 55% more WAL frames at 1 Hz, measured.) They reach
//! `/health` and the metrics through [`HistoryStatus`] (published with the buffer's status,
//! counted here, never queried) and `buffer stats` through [`HistoryStats`].
//!
//! Dropped: a fix that never becomes a row. At most `memory_ring` fixes wait for their rows
//! (a failing disk holds them all, and they are written when it is back); over it the oldest
//! waiting one goes, counted `memory` while the buffer runs on its memory ring (the store's own
//! queue while the file cannot be opened counts there too, [`History::dropped`]) and `backlog`
//! otherwise; a fifth different fix of one millisecond is counted `same_ms`.
//!
//! Expiry: rows older than `keep_days` by the agent's clock ([`crate::clock::Clock::utc_ms`],
//! the receiver's time when the host's disagrees) go in batches once the oldest is an hour
//! past it, so a fix is kept `keep_days` to `keep_days` + 1 h, and only once a fix came this
//! run (before it, the clock has no receiver to check the host against). `max_bytes` is held
//! as a number of rows at [`ROW_BYTES`] each (measured: `cargo bench --bench buffer`); over it
//! the oldest rows go, a hundredth at a time (counted, `BUFFER_HISTORY_EVICTED`).

use super::error::{classify, BufferError};
use super::schema::{fix_from_values, value_column_defs, value_columns, values};
use crate::config::HistorySettings;
use crate::fix::Fix;
use crate::status::{HistoryDrop, HistoryDropped, HistoryStatus};
use rusqlite::{Connection, OptionalExtension};
use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;
use tracing::warn;

/// Bytes a row takes in the file, its B-tree's pages included, with 1 KiB pages (49.4 to
/// 50.1 measured with every value present, `cargo bench --bench buffer`).
pub(crate) const ROW_BYTES: u64 = 50;
/// Rows inserted between two writes of the counts to `meta`.
const PERSIST_EVERY: u64 = 1000;
/// Expired rows go in batches: once the oldest is this far past `keep_days`.
const EXPIRE_SLACK_MS: i64 = 3_600_000;
/// Keys per millisecond (see the layout).
const KEYS_PER_MS: i64 = 4;

const CREATE: &str = concat!(
    "CREATE TABLE IF NOT EXISTS history (k INTEGER PRIMARY KEY, ",
    value_column_defs!(),
    ")"
);

/// The counts a transaction moves; a rollback restores the committed ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    rows: u64,
    /// Evicted by `max_bytes` since the table was made.
    evicted: u64,
    /// Rows inserted since the counts were written to `meta`.
    unwritten: u64,
    /// Fixes that never became rows since the table was made. Those dropped outside a
    /// transaction (over `cap`) are added to the committed tally too: a rollback keeps them.
    dropped: HistoryDropped,
    /// `dropped` as last written to `meta`.
    dropped_written: HistoryDropped,
}

impl Tally {
    fn stats(&self) -> HistoryStats {
        HistoryStats {
            rows: self.rows,
            evicted: self.evicted,
            dropped: self.dropped.total(),
        }
    }
}

#[derive(Debug)]
pub(super) struct History {
    /// `None`: off.
    keep_ms: Option<i64>,
    /// `keep_days` as configured (the history may be off this run all the same).
    keep: Duration,
    max_rows: u64,
    /// Accepted fixes whose rows no commit has written yet, oldest first, at most `cap`.
    pending: VecDeque<Fix>,
    cap: usize,
    /// How many of `pending` the open transaction has written.
    written: usize,
    current: Tally,
    committed: Tally,
    /// The oldest row's time, as last known (it only decides when to look for expired rows).
    oldest_ms: Option<i64>,
    /// A fix came this run: the agent's clock has the receiver to go by.
    seen: bool,
    /// Journal records of the history written since the last sync.
    journaled: usize,
    /// Fixes taken off `pending` over `cap` whose rows only the open transaction holds: if
    /// it rolls back, they are dropped.
    popped_written: u64,
}

/// What the history holds, for `buffer stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HistoryStats {
    pub rows: u64,
    /// Fixes evicted by `max_bytes` since the table was made.
    pub evicted: u64,
    /// Accepted fixes that never became rows since the table was made (every reason).
    pub dropped: u64,
}

impl History {
    pub(super) fn new(settings: &HistorySettings, cap: usize) -> History {
        let keep_ms = settings
            .keep
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        History {
            keep_ms,
            keep: settings.keep.unwrap_or_default(),
            max_rows: (settings.max_bytes / ROW_BYTES).max(1),
            pending: VecDeque::new(),
            cap,
            written: 0,
            current: Tally::default(),
            committed: Tally::default(),
            oldest_ms: None,
            seen: false,
            journaled: 0,
            popped_written: 0,
        }
    }

    pub(super) fn on(&self) -> bool {
        self.keep_ms.is_some()
    }

    /// Takes the file `conn` holds (at open, and after a rescue switched files): makes the
    /// table (or drops it when the history is off) and reads its counts. Outside a
    /// transaction.
    pub(super) fn attach(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        self.written = 0;
        self.oldest_ms = None;
        if !self.on() {
            let exists: Option<i64> = conn
                .query_row(
                    "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'history'",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_some() {
                conn.execute_batch(
                    "BEGIN IMMEDIATE;
                     DROP TABLE history;
                     DELETE FROM meta WHERE key IN ('history_rows', 'history_mark', 'history_evicted',
                       'history_dropped_backlog', 'history_dropped_same_ms', 'history_dropped_memory');
                     COMMIT;",
                )?;
            }
            self.current = Tally::default();
            self.committed = self.current;
            return Ok(());
        }
        conn.execute_batch(CREATE)?;
        self.current = stored_tally(conn)?;
        self.committed = self.current;
        self.oldest_ms = oldest_ms(conn)?;
        Ok(())
    }

    /// An accepted fix, for the next commit; `over`: why the oldest waiting one goes if more
    /// than `cap` wait. Returns `false` when the history is off.
    pub(super) fn remember(&mut self, fix: Fix, over: HistoryDrop) -> bool {
        if !self.on() {
            return false;
        }
        self.seen = true;
        self.push(fix, over);
        true
    }

    /// A fix the crash journal gave back at open.
    pub(super) fn replayed(&mut self, fix: Fix) {
        if self.on() {
            self.push(fix, HistoryDrop::Backlog);
        }
    }

    fn push(&mut self, fix: Fix, over: HistoryDrop) {
        if self.pending.len() >= self.cap {
            self.pending.pop_front();
            if self.written > 0 {
                // Its row is in the open transaction already.
                self.written -= 1;
                self.popped_written += 1;
            } else {
                self.dropped(over, 1);
            }
        }
        self.pending.push_back(fix);
    }

    /// `n` accepted fixes will never be rows (outside any transaction: a rollback keeps the
    /// count; the next commit writes it to `meta`). A no-op when the history is off.
    pub(super) fn dropped(&mut self, reason: HistoryDrop, n: u64) {
        if n == 0 || !self.on() {
            return;
        }
        self.current.dropped.add(reason, n);
        self.committed.dropped.add(reason, n);
        warn!(
            component = "buffer",
            code = "BUFFER_HISTORY_DROPPED",
            reason = reason.as_str(),
            count = n,
            dropped = self.current.dropped.total(),
            "local history: more fixes wait for their rows than memory_ring; the oldest is not kept"
        );
    }

    /// The history cannot be kept this run (its table could not be made or read).
    pub(super) fn turn_off(&mut self) {
        self.keep_ms = None;
        self.pending.clear();
        self.written = 0;
    }

    /// Fixes waiting for their rows.
    pub(super) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// A history record went into the crash journal.
    pub(super) fn journaled(&mut self) {
        self.journaled += 1;
    }

    /// History records in the crash journal since the last sync (they need room there).
    pub(super) fn journaled_since_sync(&self) -> usize {
        self.journaled
    }

    /// The WAL was synced and the journal emptied.
    pub(super) fn synced(&mut self) {
        self.journaled = 0;
    }

    /// Bytes the history's rows take, as the capacity of the buffer's own fixes leaves them
    /// out.
    pub(super) fn bytes(&self) -> u64 {
        self.current.rows.saturating_mul(ROW_BYTES)
    }

    pub(super) fn stats(&self) -> Option<HistoryStats> {
        self.on().then(|| self.current.stats())
    }

    /// What the buffer publishes of the history (no SQL: the counts kept here).
    pub(super) fn status(&self) -> HistoryStatus {
        HistoryStatus {
            on: self.on(),
            keep: self.keep,
            rows: self.current.rows,
            evicted: self.current.evicted,
            dropped: self.current.dropped,
            oldest_ms: self.oldest_ms.filter(|_| self.current.rows > 0),
        }
    }

    /// In the open transaction: the pending rows, then expiry (`now_ms`: the agent's UTC) and
    /// eviction when due, then the counts when due.
    pub(super) fn write(&mut self, conn: &Connection, now_ms: i64) -> rusqlite::Result<()> {
        let Some(keep_ms) = self.keep_ms else {
            return Ok(());
        };
        while let Some(fix) = self.pending.get(self.written) {
            match insert(conn, fix)? {
                Inserted::New => {
                    self.current.rows += 1;
                    self.current.unwritten += 1;
                    self.oldest_ms =
                        Some(self.oldest_ms.map_or(fix.time_ms, |o| o.min(fix.time_ms)));
                }
                Inserted::Again => {}
                // In the transaction: a rollback takes the count back with the fix.
                Inserted::NoKey => self.current.dropped.add(HistoryDrop::SameMs, 1),
            }
            self.written += 1;
        }
        let mut deleted = false;
        let cutoff = now_ms.saturating_sub(keep_ms);
        if self.seen
            && self
                .oldest_ms
                .is_some_and(|o| o < cutoff.saturating_sub(EXPIRE_SLACK_MS))
        {
            let gone = conn
                .prepare_cached("DELETE FROM history WHERE k < ?1")?
                .execute([cutoff.saturating_mul(KEYS_PER_MS)])?;
            self.current.rows = self.current.rows.saturating_sub(gone as u64);
            deleted = true;
        }
        if self.current.rows > self.max_rows {
            let excess = self.current.rows - self.max_rows;
            // A hundredth at a time, so the next commits do not each evict again.
            let n = excess.max(self.max_rows / 100).min(i64::MAX as u64) as i64;
            let gone = conn
                .prepare_cached(
                    "DELETE FROM history WHERE k IN (SELECT k FROM history ORDER BY k LIMIT ?1)",
                )?
                .execute([n])? as u64;
            self.current.rows = self.current.rows.saturating_sub(gone);
            self.current.evicted += gone;
            deleted = true;
            warn!(
                component = "buffer",
                code = "BUFFER_HISTORY_EVICTED",
                evicted = gone,
                rows = self.current.rows,
                "local history at max_bytes; the oldest fixes evicted"
            );
        }
        if deleted {
            self.oldest_ms = oldest_ms(conn)?;
        }
        let dropped = self.current.dropped != self.current.dropped_written;
        if deleted || dropped || self.current.unwritten >= PERSIST_EVERY {
            let mark: Option<i64> = conn
                .prepare_cached("SELECT max(k) FROM history")?
                .query_row([], |r| r.get(0))?;
            let mut stmt = conn.prepare_cached("INSERT OR REPLACE INTO meta VALUES (?1, ?2)")?;
            stmt.execute(rusqlite::params!["history_rows", self.current.rows as i64])?;
            stmt.execute(rusqlite::params!["history_mark", mark.unwrap_or(-1)])?;
            stmt.execute(rusqlite::params![
                "history_evicted",
                self.current.evicted as i64
            ])?;
            for reason in HistoryDrop::ALL {
                let n = self.current.dropped.get(reason).min(i64::MAX as u64) as i64;
                stmt.execute(rusqlite::params![dropped_key(reason), n])?;
            }
            self.current.unwritten = 0;
            self.current.dropped_written = self.current.dropped;
        }
        Ok(())
    }

    /// The transaction that wrote the pending rows committed.
    pub(super) fn committed(&mut self) {
        self.pending.drain(..self.written.min(self.pending.len()));
        self.written = 0;
        self.popped_written = 0;
        self.committed = self.current;
    }

    /// The transaction rolled back (the disk failed): its rows are pending again, but for
    /// those taken off `pending` meanwhile.
    pub(super) fn rolled_back(&mut self) {
        self.written = 0;
        self.current = self.committed;
        let popped = std::mem::take(&mut self.popped_written);
        self.dropped(HistoryDrop::Memory, popped);
    }
}

enum Inserted {
    New,
    /// The same fix was stored already.
    Again,
    /// Four other fixes of its millisecond are stored already (or its time has no key).
    NoKey,
}

fn insert(conn: &Connection, fix: &Fix) -> rusqlite::Result<Inserted> {
    let Some(base) = fix.time_ms.checked_mul(KEYS_PER_MS) else {
        return Ok(Inserted::NoKey);
    };
    let v = values(fix);
    for k in base..base + KEYS_PER_MS {
        let new = conn
            .prepare_cached(concat!(
                "INSERT OR IGNORE INTO history (k, ",
                value_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ))?
            .execute(rusqlite::params![k, v.0, v.1, v.2, v.3, v.4, v.5, v.6, v.7])?;
        if new == 1 {
            return Ok(Inserted::New);
        }
        // Taken: the same fix again, or another of the same millisecond.
        let (lat, lon): (f64, f64) = conn
            .prepare_cached("SELECT lat, lon FROM history WHERE k = ?1")?
            .query_row([k], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if lat == fix.lat && lon == fix.lon {
            return Ok(Inserted::Again);
        }
    }
    Ok(Inserted::NoKey)
}

fn oldest_ms(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    let k: Option<i64> = conn
        .prepare_cached("SELECT k FROM history ORDER BY k LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(k.map(|k| k.div_euclid(KEYS_PER_MS)))
}

/// The `meta` key of a reason's count of dropped fixes.
fn dropped_key(reason: HistoryDrop) -> &'static str {
    match reason {
        HistoryDrop::Backlog => "history_dropped_backlog",
        HistoryDrop::SameMs => "history_dropped_same_ms",
        HistoryDrop::Memory => "history_dropped_memory",
    }
}

/// The status of a history whose file is not open (yet): on as configured, nothing known of
/// its rows; `in_memory` fixes dropped from the store's queue meanwhile.
pub(crate) fn unopened_status(settings: &HistorySettings, in_memory: u64) -> HistoryStatus {
    let mut dropped = HistoryDropped::default();
    dropped.add(HistoryDrop::Memory, in_memory);
    HistoryStatus {
        on: settings.keep.is_some(),
        keep: settings.keep.unwrap_or_default(),
        dropped,
        ..HistoryStatus::default()
    }
}

/// The counts of the history in the file `conn` holds: as written to `meta`, with the rows
/// after its mark counted (a table without counts is counted whole).
fn stored_tally(conn: &Connection) -> rusqlite::Result<Tally> {
    let meta = |key: &str| -> rusqlite::Result<Option<i64>> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    };
    let (rows, mark) = match (meta("history_rows")?, meta("history_mark")?) {
        (Some(rows), Some(mark)) => (rows.max(0) as u64, mark),
        _ => (0, i64::MIN),
    };
    let after: i64 = conn.query_row("SELECT count(*) FROM history WHERE k > ?1", [mark], |r| {
        r.get(0)
    })?;
    let mut dropped = HistoryDropped::default();
    for reason in HistoryDrop::ALL {
        dropped.add(
            reason,
            meta(dropped_key(reason))?.unwrap_or(0).max(0) as u64,
        );
    }
    Ok(Tally {
        rows: rows + after.max(0) as u64,
        evicted: meta("history_evicted")?.unwrap_or(0).max(0) as u64,
        unwritten: 0,
        dropped,
        dropped_written: dropped,
    })
}

/// The history's counts in a buffer file, for `buffer stats` (next to the running daemon);
/// `None` when the file has no history.
pub(crate) fn file_history_stats(
    conn: &Connection,
    path: &Path,
) -> Result<Option<HistoryStats>, BufferError> {
    let io = |op| move |e| classify(path, op, e);
    let exists: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'history'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(io("read schema"))?;
    match exists {
        Some(_) => stored_tally(conn)
            .map(|t| Some(t.stats()))
            .map_err(io("count history")),
        None => Ok(None),
    }
}

/// A window of receiver time in the local history, read a page at a time in time order, so
/// that a backfill streams it at its own pace without holding it in memory: it keeps only
/// where the next page starts and how many fixes it may still give. Rows written after it
/// began are read if they fall in what is left of the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryWindow {
    /// The key the next page starts at.
    next: i64,
    /// The last key of the window.
    last: i64,
    /// Fixes it may still give (`max_fixes`).
    left: u64,
}

impl HistoryWindow {
    /// The fixes of receiver time `from_ms..=to_ms`, at most `max_fixes` of them (the oldest).
    pub fn new(from_ms: i64, to_ms: i64, max_fixes: u64) -> HistoryWindow {
        HistoryWindow {
            next: from_ms.saturating_mul(KEYS_PER_MS),
            last: to_ms
                .saturating_mul(KEYS_PER_MS)
                .saturating_add(KEYS_PER_MS - 1),
            left: max_fixes,
        }
    }

    /// Nothing more to read.
    pub fn done(&self) -> bool {
        self.left == 0 || self.next > self.last
    }

    /// The next page of at most `limit` fixes into `out` (cleared first), from the file
    /// `conn` holds (the daemon's, or a reader's of its own: WAL readers do not block it).
    /// Returns whether more may follow.
    pub fn next_page(
        &mut self,
        conn: &Connection,
        path: &Path,
        limit: usize,
        out: &mut Vec<Fix>,
    ) -> Result<bool, BufferError> {
        out.clear();
        let n = (limit as u64).min(self.left);
        if n == 0 || self.done() {
            return Ok(false);
        }
        let read = (|| -> rusqlite::Result<Option<i64>> {
            let mut stmt = conn.prepare_cached(concat!(
                "SELECT k, ",
                value_columns!(),
                " FROM history WHERE k >= ?1 AND k <= ?2 ORDER BY k LIMIT ?3"
            ))?;
            let mut rows = stmt.query(rusqlite::params![
                self.next,
                self.last,
                n.min(i64::MAX as u64) as i64
            ])?;
            let mut last = None;
            while let Some(row) = rows.next()? {
                let k: i64 = row.get(0)?;
                out.push(fix_from_values(row, 1, k.div_euclid(KEYS_PER_MS), None)?);
                last = Some(k);
            }
            Ok(last)
        })();
        let last = read.map_err(|e| classify(path, "read history", e))?;
        self.left -= out.len() as u64;
        match last {
            Some(k) if (out.len() as u64) == n => {
                self.next = k.saturating_add(1);
                Ok(!self.done())
            }
            _ => {
                // Fewer than asked: the window is read to its end.
                self.next = self.last.saturating_add(1);
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_773_475_200_000;

    fn fix(time_ms: i64, i: u32) -> Fix {
        Fix::bare(time_ms, 48.137_154 + f64::from(i) * 1e-6, 11.576_124)
    }

    /// A file with the buffer's `meta` table, and a history on it of `cap` pending fixes.
    fn attached(conn: &Connection, cap: usize) -> History {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
        )
        .unwrap();
        let mut history = History::new(&HistorySettings::default(), cap);
        history.attach(conn).unwrap();
        history
    }

    /// The pending rows in one transaction, committed.
    fn commit(history: &mut History, conn: &Connection) {
        conn.execute_batch("BEGIN").unwrap();
        history.write(conn, T0).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        history.committed();
    }

    fn dropped(history: &History) -> HistoryDropped {
        history.status().dropped
    }

    #[test]
    fn a_fifth_fix_of_one_millisecond_is_dropped_as_same_ms_once_even_after_a_rollback() {
        let conn = Connection::open_in_memory().unwrap();
        let mut history = attached(&conn, 100);
        for i in 0..5 {
            history.remember(fix(T0, i), HistoryDrop::Backlog);
        }
        // A transaction that wrote them and rolled back takes the count back with the rows.
        conn.execute_batch("BEGIN").unwrap();
        history.write(&conn, T0).unwrap();
        assert_eq!(dropped(&history).same_ms, 1);
        conn.execute_batch("ROLLBACK").unwrap();
        history.rolled_back();
        assert_eq!(dropped(&history), HistoryDropped::default());
        commit(&mut history, &conn);
        let status = history.status();
        assert_eq!(status.rows, 4);
        assert_eq!(
            status.dropped,
            HistoryDropped {
                same_ms: 1,
                ..HistoryDropped::default()
            }
        );
        assert_eq!(status.oldest_ms, Some(T0));
        assert_eq!(history.stats().map(|s| s.dropped), Some(1));
        // Written to `meta` with that commit: the next start (or `buffer stats`) counts it.
        let again = attached(&conn, 100);
        assert_eq!(again.status().dropped.same_ms, 1);
        assert_eq!(again.status().rows, 4);
    }

    #[test]
    fn over_cap_the_oldest_pending_fix_is_dropped_by_the_reason_the_caller_gives() {
        let conn = Connection::open_in_memory().unwrap();
        let mut history = attached(&conn, 3);
        for i in 0..5 {
            history.remember(fix(T0 + i64::from(i), i), HistoryDrop::Memory);
        }
        history.replayed(fix(T0 + 10, 10));
        assert_eq!(
            dropped(&history),
            HistoryDropped {
                memory: 2,
                backlog: 1,
                ..HistoryDropped::default()
            }
        );
        commit(&mut history, &conn);
        // The three newest became rows; a drop outside a transaction survives a rollback.
        assert_eq!(history.status().rows, 3);
        assert_eq!(history.status().oldest_ms, Some(T0 + 3));
        history.rolled_back();
        assert_eq!(dropped(&history).total(), 3);
        assert_eq!(attached(&conn, 3).status().dropped.total(), 3);
    }

    #[test]
    fn a_fix_pushed_out_while_its_row_waits_in_a_transaction_that_rolls_back_is_dropped() {
        let conn = Connection::open_in_memory().unwrap();
        let mut history = attached(&conn, 2);
        history.remember(fix(T0, 0), HistoryDrop::Backlog);
        history.remember(fix(T0 + 1, 1), HistoryDrop::Backlog);
        conn.execute_batch("BEGIN").unwrap();
        history.write(&conn, T0).unwrap();
        // Its row is in the open transaction: not dropped while that may commit.
        history.remember(fix(T0 + 2, 2), HistoryDrop::Backlog);
        assert_eq!(dropped(&history).total(), 0);
        conn.execute_batch("ROLLBACK").unwrap();
        history.rolled_back();
        assert_eq!(
            dropped(&history),
            HistoryDropped {
                memory: 1,
                ..HistoryDropped::default()
            }
        );
        commit(&mut history, &conn);
        assert_eq!(history.status().rows, 2);
    }
}
