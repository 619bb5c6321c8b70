//! Store-and-forward buffer in SQLite: every accepted fix is stored here, gets its `seq`, and
//! stays until the broker acknowledged it (or the capacity policy evicts it, counted).
//!
//! In: accepted [`Fix`]es from validation ([`Buffer::append`]), acks, releases and dead
//! letters from the uplink. Out: batches oldest first ([`Buffer::next_batch`]), the newest
//! fix for "live first" ([`Buffer::newest_pending`]), [`BufferStats`] and [`BufferHealth`].
//! It must never hand out a fix before it is committed, never reuse or skip a seq within a
//! stream, never delete a file, and never panic on an I/O error.
//!
//! **Durability and wear.** Appends join one open transaction that is committed every
//! `commit_interval_s` (default 1 s) or every `commit_max` fixes, whichever comes first
//! (group commit). The file is in WAL mode with `synchronous = FULL`, so a commit costs one
//! fsync of the WAL; a checkpoint (every ~1000 WAL pages, i.e. every few thousand fixes)
//! costs two more (WAL, then the main file). At the default of one fix per second this is
//! 3,600 commits and about 3,600 fsyncs per hour (one 4 KiB WAL frame each, ~14 MiB/h of
//! writes), which SD cards and eMMC take for years. **Loss window:** a power cut loses at
//! most the fixes of the open transaction, i.e. at most `commit_interval_s` of fixes (or
//! `commit_max`, if fewer); raise the interval to trade that window for fewer writes.
//!
//! **Seq.** A fix gets `seq = last_seq + 1` inside the transaction that stores it; if that
//! transaction rolls back, the counter goes back too, so no gap is left. Fixes that had
//! provisional seqs in a failed transaction are kept in memory and numbered again when they
//! reach the disk. Acknowledged fixes are deleted; `meta.last_seq` is written in any
//! transaction that deletes, so a seq is never given out twice.
//!
//! **Faults.** When the disk cannot be written (`SQLITE_FULL`, read-only file system, I/O
//! error), fixes go to a bounded ring in memory (`memory_ring` fixes, oldest dropped and
//! counted when full), health says `BUFFER_DISK_FULL` (degraded), and the disk is retried
//! every `disk_retry_s`. Ring fixes get their seq only when they are written to disk, so
//! seqs stay contiguous; they are not published before that. A file that is damaged or not
//! ours at startup is renamed to `<path>.corrupt-<utc>` and a new stream begins
//! (`BUFFER_CORRUPT`, unhealthy until restart).
//!
//! **In flight** is kept in memory only: after a restart every unacknowledged fix is pending.

mod error;
mod file_ops;
pub mod schema;

pub use error::BufferError;
pub use file_ops::{file_stats, list_dead_letters, requeue_dead_letters, BufferStats, DeadLetter};
pub use schema::{open_existing, open_read_only, APPLICATION_ID, SCHEMA_VERSION};

use crate::config::{BufferConfig, EvictionPolicy};
use crate::error::{Classified, ErrorClass};
use crate::fix::Fix;
use error::classify;
use rusqlite::Connection;
use schema::{
    data_version, insert_fix, read_meta_u64, read_stream, row_to_fix, Unusable, FIX_COLUMNS,
};
use serde::Serialize;
use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// A fix as stored, with its seq.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredFix {
    pub seq: u64,
    pub fix: Fix,
}

/// What [`Buffer::append`] did with a fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The fix's seq, or `None` when it is held in the memory ring (disk failing); it gets
    /// its seq when it reaches the disk.
    pub seq: Option<u64>,
    /// Set when this call committed: every seq up to this one is durable.
    pub committed_upto: Option<u64>,
}

/// What [`Buffer::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The damaged file was renamed to this, and a new stream started.
    pub moved_aside: Option<PathBuf>,
    /// Why it was moved aside.
    pub corrupt_reason: Option<String>,
}

/// Status of the buffer component in `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BufferStatus {
    Healthy,
    /// Fixes wait in memory because the disk cannot be written.
    Degraded,
    /// A corrupt file was moved aside at startup: raise an alarm until restart.
    Unhealthy,
}

/// The last error, as `/health` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    pub code: &'static str,
    pub class: ErrorClass,
    pub message: String,
    /// Host time, RFC 3339.
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BufferHealth {
    pub status: BufferStatus,
    pub last_error: Option<LastError>,
}

/// Numbers that move with each write; a copy as of the last commit is restored on rollback.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    last_seq: u64,
    depth: u64,
    evicted: u64,
    dead_letters: u64,
}

/// The open group-commit transaction.
#[derive(Debug)]
struct OpenTx {
    since: Instant,
    /// Fixes appended in it, in seq order: kept so a failed commit loses none of them.
    fixes: Vec<Fix>,
    /// Rows left `fixes` in it, so `meta.last_seq` must be written before commit.
    deleted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disk {
    Writable,
    Failing { next_retry: Instant },
}

/// The store. Owns its SQLite connection; not `Sync`: one task uses it.
pub struct Buffer {
    conn: Connection,
    path: PathBuf,
    commit_interval: Duration,
    commit_max: usize,
    max_fixes: u64,
    max_bytes: u64,
    eviction: EvictionPolicy,
    memory_ring: usize,
    disk_retry: Duration,
    stream: String,
    committed: Counters,
    current: Counters,
    /// `meta.evicted` as last written.
    persisted_evicted: u64,
    tx: Option<OpenTx>,
    in_flight: BTreeSet<u64>,
    ring: VecDeque<Fix>,
    disk: Disk,
    /// The file's used pages passed `max_bytes` at the last commit.
    over_bytes: bool,
    /// The latest `now` a caller gave; stamps transactions opened by acks.
    last_now: Instant,
    moved_aside: bool,
    last_error: Option<LastError>,
    /// `PRAGMA data_version` as last seen: it moves when another connection commits (the
    /// `buffer requeue` CLI next to the running daemon).
    data_version: i64,
    next_outside_check: Instant,
}

/// How often [`Buffer::tick`] asks SQLite whether another process changed the file.
const OUTSIDE_CHECK: Duration = Duration::from_secs(1);

fn secs(s: f64) -> Duration {
    if s.is_finite() && s > 0.0 {
        Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
    } else {
        Duration::ZERO
    }
}

fn now_rfc3339() -> String {
    crate::fix::format_time_ms(chrono::Utc::now().timestamp_millis())
}

impl Buffer {
    /// Opens (or creates) the buffer at `cfg.path`, migrating an older file and moving a
    /// damaged one aside.
    pub fn open(cfg: &BufferConfig) -> Result<(Buffer, OpenReport), BufferError> {
        let path = cfg.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| BufferError::File {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut report = OpenReport::default();
        let conn = match schema::open_checked(&path) {
            Ok(conn) => conn,
            Err(Unusable::Fatal(e)) => return Err(e),
            Err(Unusable::Corrupt(reason)) => {
                let to = schema::move_aside(&path)?;
                error!(code = "BUFFER_CORRUPT", path = %path.display(), moved_to = %to.display(),
                    reason = %reason, "buffer file unusable, moved aside; new stream started");
                report.moved_aside = Some(to);
                report.corrupt_reason = Some(reason);
                match schema::open_checked(&path) {
                    Ok(conn) => conn,
                    Err(Unusable::Fatal(e)) => return Err(e),
                    Err(Unusable::Corrupt(detail)) => {
                        return Err(BufferError::Corrupt { path, detail })
                    }
                }
            }
        };
        let io = |op| {
            let path = path.clone();
            move |e| classify(&path, op, e)
        };
        let stream = read_stream(&conn)
            .map_err(io("read meta"))?
            .unwrap_or_default();
        let max_of = |sql: &str| -> rusqlite::Result<u64> {
            let v: Option<i64> = conn.query_row(sql, [], |r| r.get(0))?;
            Ok(v.unwrap_or(0).max(0) as u64)
        };
        let last_seq = read_meta_u64(&conn, "last_seq")
            .map_err(io("read meta"))?
            .max(max_of("SELECT max(seq) FROM fixes").map_err(io("read fixes"))?)
            .max(max_of("SELECT max(seq) FROM dead_letters").map_err(io("read dead letters"))?);
        let depth = max_of("SELECT count(*) FROM fixes").map_err(io("count fixes"))?;
        let dead_letters =
            max_of("SELECT count(*) FROM dead_letters").map_err(io("count dead letters"))?;
        let evicted = read_meta_u64(&conn, "evicted").map_err(io("read meta"))?;
        let counters = Counters {
            last_seq,
            depth,
            evicted,
            dead_letters,
        };
        let data_version = data_version(&conn).map_err(io("read data_version"))?;
        info!(path = %path.display(), stream = %stream, depth, last_seq, "buffer open");
        let last_error = report.corrupt_reason.as_ref().map(|reason| LastError {
            code: "BUFFER_CORRUPT",
            class: ErrorClass::Critical,
            message: format!(
                "moved aside to {}: {reason}",
                report
                    .moved_aside
                    .as_deref()
                    .unwrap_or(Path::new(""))
                    .display()
            ),
            at: now_rfc3339(),
        });
        let buffer = Buffer {
            conn,
            path,
            commit_interval: secs(cfg.commit_interval_s),
            commit_max: (cfg.commit_max as usize).max(1),
            max_fixes: cfg.max_fixes.max(1),
            max_bytes: cfg.max_bytes,
            eviction: cfg.eviction,
            memory_ring: (cfg.memory_ring as usize).max(1),
            disk_retry: secs(cfg.disk_retry_s),
            stream,
            committed: counters,
            current: counters,
            persisted_evicted: evicted,
            tx: None,
            in_flight: BTreeSet::new(),
            ring: VecDeque::new(),
            disk: Disk::Writable,
            over_bytes: false,
            last_now: Instant::now(),
            moved_aside: report.moved_aside.is_some(),
            last_error,
            data_version,
            next_outside_check: Instant::now(),
        };
        Ok((buffer, report))
    }

    /// The stream id of this file (32 hex chars).
    pub fn stream(&self) -> &str {
        &self.stream
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last seq that is durable on disk.
    pub fn committed_seq(&self) -> u64 {
        self.committed.last_seq
    }

    /// Stores a fix. Never loses it on a disk failure: it then waits in the memory ring.
    /// Commits when the group is full or its interval has passed.
    pub fn append(&mut self, fix: &Fix, now: Instant) -> Result<Appended, BufferError> {
        self.last_now = now;
        if self.disk != Disk::Writable || !self.ring.is_empty() {
            // Once fixes wait in memory, later ones queue behind them to keep the order.
            self.hold_in_ring(*fix);
            let committed_upto = self.retry_disk(now, false);
            return Ok(Appended {
                seq: None,
                committed_upto,
            });
        }
        match self.append_to_disk(fix, now) {
            Ok(seq) => {
                let due = self.tx.as_ref().is_some_and(|tx| {
                    tx.fixes.len() >= self.commit_max
                        || now.saturating_duration_since(tx.since) >= self.commit_interval
                });
                let committed_upto = if due { self.commit_or_hold(now) } else { None };
                // A failed commit moved this fix to the ring: it has no seq yet.
                let seq = (self.disk == Disk::Writable).then_some(seq);
                Ok(Appended {
                    seq,
                    committed_upto,
                })
            }
            Err(e) => {
                self.fail(e, "append", now);
                self.hold_in_ring(*fix);
                Ok(Appended {
                    seq: None,
                    committed_upto: None,
                })
            }
        }
    }

    /// Commits if the group's interval has passed, and retries a failing disk when due.
    /// Returns the committed seq when a commit happened. Call it at least every
    /// `commit_interval_s` (and every `disk_retry_s`): without appends or ticks an open
    /// group stays open, and the loss window grows with it.
    pub fn tick(&mut self, now: Instant) -> Result<Option<u64>, BufferError> {
        self.last_now = now;
        if self.disk != Disk::Writable {
            return Ok(self.retry_disk(now, false));
        }
        if now >= self.next_outside_check {
            self.next_outside_check = now + OUTSIDE_CHECK;
            self.notice_outside_writes();
        }
        let due = self
            .tx
            .as_ref()
            .is_some_and(|tx| now.saturating_duration_since(tx.since) >= self.commit_interval);
        Ok(if due { self.commit_or_hold(now) } else { None })
    }

    /// Commits now (shutdown), retrying a failing disk at once. Errors if fixes are left in
    /// memory only.
    pub fn commit(&mut self) -> Result<Option<u64>, BufferError> {
        let now = self.last_now;
        let committed = if self.disk != Disk::Writable {
            self.retry_disk(now, true)
        } else {
            self.commit_or_hold(now)
        };
        if !self.ring.is_empty() {
            return Err(BufferError::DiskFull {
                path: self.path.clone(),
                detail: self
                    .last_error
                    .as_ref()
                    .map_or_else(String::new, |e| e.message.clone()),
                held: self.ring.len(),
            });
        }
        Ok(committed)
    }

    /// Up to `limit` committed fixes, oldest first, skipping those in flight; they are in
    /// flight from now on until [`ack`](Self::ack) or [`release`](Self::release).
    pub fn next_batch(
        &mut self,
        limit: usize,
        out: &mut Vec<StoredFix>,
    ) -> Result<(), BufferError> {
        out.clear();
        if limit == 0 {
            return Ok(());
        }
        self.collect_pending("ASC", limit, out)
    }

    /// The newest committed fix not in flight (for "live first"); it is in flight from now on.
    pub fn newest_pending(&mut self) -> Result<Option<StoredFix>, BufferError> {
        let mut out = Vec::with_capacity(1);
        self.collect_pending("DESC", 1, &mut out)?;
        Ok(out.pop())
    }

    fn collect_pending(
        &mut self,
        order: &str,
        limit: usize,
        out: &mut Vec<StoredFix>,
    ) -> Result<(), BufferError> {
        let path = &self.path;
        let io = |e| classify(path, "read pending", e);
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT seq, {FIX_COLUMNS} FROM fixes WHERE seq <= ?1 ORDER BY seq {order}"
            ))
            .map_err(io)?;
        // Rows are stepped lazily: the scan stops after `limit` fixes plus those in flight.
        let mut rows = stmt
            .query([self.committed.last_seq.min(i64::MAX as u64) as i64])
            .map_err(io)?;
        while out.len() < limit {
            let Some(row) = rows.next().map_err(io)? else {
                break;
            };
            // Fixes in flight are the oldest pending ones, met on every scan: skip them on
            // their seq alone rather than decoding each (most of the uplink's CPU at 10 Hz).
            let seq: i64 = row.get(0).map_err(io)?;
            if self.in_flight.contains(&(seq as u64)) {
                continue;
            }
            let (seq, fix) = row_to_fix(row).map_err(io)?;
            out.push(StoredFix { seq, fix });
        }
        drop(rows);
        drop(stmt);
        self.in_flight.extend(out.iter().map(|s| s.seq));
        Ok(())
    }

    /// The broker has these: they leave the buffer (durable with the next commit; a crash
    /// before it only means they are sent again).
    pub fn ack(&mut self, seqs: &[u64]) -> Result<(), BufferError> {
        for seq in seqs {
            self.in_flight.remove(seq);
        }
        if seqs.is_empty() {
            return Ok(());
        }
        let now = self.last_now;
        let result = self.begin(now).and_then(|()| {
            let mut stmt = self
                .conn
                .prepare_cached("DELETE FROM fixes WHERE seq = ?1")?;
            let mut gone = 0u64;
            for &seq in seqs {
                gone += stmt.execute([seq.min(i64::MAX as u64) as i64])? as u64;
            }
            Ok(gone)
        });
        match result {
            Ok(gone) => {
                self.current.depth = self.current.depth.saturating_sub(gone);
                self.mark_deleted();
                Ok(())
            }
            Err(e) => Err(self.fail(e, "ack", now)),
        }
    }

    /// Not delivered (disconnect): back to pending, sent again by the next batch.
    pub fn release(&mut self, seqs: &[u64]) {
        for seq in seqs {
            self.in_flight.remove(seq);
        }
    }

    /// The broker will never take these: move them to `dead_letters` with a code and reason.
    pub fn dead_letter(
        &mut self,
        seqs: &[u64],
        code: &str,
        reason: &str,
    ) -> Result<(), BufferError> {
        for seq in seqs {
            self.in_flight.remove(seq);
        }
        if seqs.is_empty() {
            return Ok(());
        }
        let now = self.last_now;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let result = self
            .begin(now)
            .and_then(|()| file_ops::move_to_dead_letters(&self.conn, seqs, code, reason, now_ms));
        match result {
            Ok(moved) => {
                self.current.depth = self.current.depth.saturating_sub(moved);
                self.current.dead_letters += moved;
                self.mark_deleted();
                warn!(
                    code = "BUFFER_DEAD_LETTER",
                    dead_code = code,
                    reason,
                    count = moved,
                    "fixes dead-lettered"
                );
                Ok(())
            }
            Err(e) => Err(self.fail(e, "dead_letter", now)),
        }
    }

    /// Dead letters back to pending with their own seqs, in a transaction of its own (the
    /// open group is committed first). Returns how many.
    pub fn requeue_dead_letters(&mut self) -> Result<u64, BufferError> {
        let now = self.last_now;
        self.commit_or_hold(now);
        if self.tx.is_some() || self.disk != Disk::Writable {
            return Err(BufferError::DiskFull {
                path: self.path.clone(),
                detail: "requeue needs a writable disk".into(),
                held: self.ring.len(),
            });
        }
        let n = file_ops::requeue_dead_letters(&self.conn, &self.path)?;
        for c in [&mut self.current, &mut self.committed] {
            c.depth += n;
            c.dead_letters = c.dead_letters.saturating_sub(n);
        }
        Ok(n)
    }

    /// Another process committed to the file (`gps-agent buffer requeue` while the daemon
    /// runs): recount what it can change, the pending fixes and the dead letters. Its rows are
    /// already visible to [`next_batch`](Self::next_batch); this keeps depth and health true.
    /// Our own commits do not move `data_version`, so this costs one pragma per call unless
    /// someone else wrote. An outside commit cannot land inside our open group (SQLite has one
    /// writer), so the difference of the count applies to the committed counters as well.
    fn notice_outside_writes(&mut self) {
        let version = match data_version(&self.conn) {
            Ok(v) => v,
            Err(e) => {
                debug!(component = "buffer", error = %e, "data_version unreadable");
                return;
            }
        };
        if version == self.data_version {
            return;
        }
        self.data_version = version;
        let count = |sql: &str| -> rusqlite::Result<u64> {
            let n: i64 = self.conn.query_row(sql, [], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        };
        let (depth, dead_letters) = match (
            count("SELECT count(*) FROM fixes"),
            count("SELECT count(*) FROM dead_letters"),
        ) {
            (Ok(d), Ok(l)) => (d, l),
            (Err(e), _) | (_, Err(e)) => {
                debug!(component = "buffer", error = %e, "recount after an outside write failed");
                return;
            }
        };
        let depth_delta = depth as i64 - self.current.depth as i64;
        let letters_delta = dead_letters as i64 - self.current.dead_letters as i64;
        if depth_delta == 0 && letters_delta == 0 {
            return;
        }
        for c in [&mut self.current, &mut self.committed] {
            c.depth = c.depth.saturating_add_signed(depth_delta);
            c.dead_letters = c.dead_letters.saturating_add_signed(letters_delta);
        }
        info!(
            component = "buffer",
            depth,
            dead_letters,
            "buffer changed by another process (buffer requeue?); counts refreshed"
        );
    }

    /// Depth, ends, counters; cheap (the depth is kept counted).
    pub fn stats(&mut self) -> Result<BufferStats, BufferError> {
        let depth = self.current.depth + self.ring.len() as u64;
        let mut s = file_ops::stats_with_depth(&self.conn, &self.path, depth)?;
        s.last_seq = s.last_seq.max(self.current.last_seq);
        s.evicted = self.current.evicted;
        s.dead_letters = self.current.dead_letters;
        s.in_flight = Some(self.in_flight.len() as u64);
        s.in_memory = Some(self.ring.len() as u64);
        Ok(s)
    }

    pub fn health(&self) -> BufferHealth {
        let status = if self.moved_aside {
            BufferStatus::Unhealthy
        } else if self.disk != Disk::Writable || !self.ring.is_empty() {
            BufferStatus::Degraded
        } else {
            BufferStatus::Healthy
        };
        BufferHealth {
            status,
            last_error: self.last_error.clone(),
        }
    }

    /// Fault injection and hard cap: the file may not grow beyond `pages` pages (this
    /// connection only). Tests use it to make the disk "full".
    #[doc(hidden)]
    pub fn set_max_page_count(&mut self, pages: u64) -> Result<u64, BufferError> {
        self.conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|v| v.max(0) as u64)
            .map_err(|e| classify(&self.path, "max_page_count", e))
    }

    // ---- internals ----

    fn begin(&mut self, now: Instant) -> rusqlite::Result<()> {
        if self.tx.is_none() {
            // IMMEDIATE: take the write lock now, so a `requeue` from the CLI waits for us
            // (or we for it, up to busy_timeout) instead of failing mid-group.
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            self.tx = Some(OpenTx {
                since: now,
                fixes: Vec::with_capacity(self.commit_max.min(4096)),
                deleted: false,
            });
        }
        Ok(())
    }

    fn mark_deleted(&mut self) {
        if let Some(tx) = self.tx.as_mut() {
            tx.deleted = true;
        }
    }

    fn append_to_disk(&mut self, fix: &Fix, now: Instant) -> rusqlite::Result<u64> {
        self.begin(now)?;
        self.make_room()?;
        let seq = self.current.last_seq + 1;
        insert_fix(&self.conn, seq, fix)?;
        self.current.last_seq = seq;
        self.current.depth += 1;
        if let Some(tx) = self.tx.as_mut() {
            tx.fixes.push(*fix);
        }
        Ok(seq)
    }

    /// Capacity policy, before a fix is stored: the N+1th fix evicts. Fixes in flight may be
    /// evicted too (counted); a later ack or release of their seq is then a no-op.
    fn make_room(&mut self) -> rusqlite::Result<()> {
        let over_count = self.current.depth >= self.max_fixes;
        if !over_count && !self.over_bytes {
            return Ok(());
        }
        let depth = self.current.depth;
        let evicted = match (self.eviction, over_count) {
            (EvictionPolicy::Thin, _) if depth / 2 >= 2 => self.thin_oldest_half()?,
            (_, true) => self.drop_oldest(depth + 1 - self.max_fixes)?,
            (_, false) => {
                let used = self.used_bytes()?;
                let per_fix = (used / depth.max(1)).max(1);
                let excess = used.saturating_sub(self.max_bytes);
                // A 1% margin, so the next appends do not each evict again.
                self.drop_oldest(excess.div_ceil(per_fix) + (depth / 100).max(1))?
            }
        };
        self.over_bytes = false;
        if evicted > 0 {
            self.current.depth = self.current.depth.saturating_sub(evicted);
            self.current.evicted += evicted;
            self.mark_deleted();
            warn!(code = "BUFFER_EVICTED", evicted, policy = ?self.eviction, depth = self.current.depth,
                "buffer full, fixes evicted by policy");
        }
        Ok(())
    }

    fn drop_oldest(&mut self, n: u64) -> rusqlite::Result<u64> {
        let n = n.min(i64::MAX as u64) as i64;
        let gone = self.conn.execute(
            "DELETE FROM fixes WHERE seq IN (SELECT seq FROM fixes ORDER BY seq LIMIT ?1)",
            [n],
        )?;
        Ok(gone as u64)
    }

    /// Drops every second fix (2nd, 4th, ...) of the oldest half: the old track keeps its
    /// shape at half the density.
    fn thin_oldest_half(&mut self) -> rusqlite::Result<u64> {
        let half = (self.current.depth / 2).min(i64::MAX as u64) as i64;
        let gone = self.conn.execute(
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

    fn used_bytes(&self) -> rusqlite::Result<u64> {
        let (pages, free, size): (i64, i64, i64) = self.conn.query_row(
            "SELECT (SELECT page_count FROM pragma_page_count),
                    (SELECT freelist_count FROM pragma_freelist_count),
                    (SELECT page_size FROM pragma_page_size)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        Ok((pages - free).max(0) as u64 * size.max(0) as u64)
    }

    /// Commits the open group; on failure its fixes go to the ring. Returns the committed
    /// seq when a commit happened.
    fn commit_or_hold(&mut self, now: Instant) -> Option<u64> {
        match self.commit_open() {
            Ok(seq) => seq,
            Err(e) => {
                self.fail(e, "commit", now);
                None
            }
        }
    }

    fn commit_open(&mut self) -> rusqlite::Result<Option<u64>> {
        let Some(tx) = self.tx.as_ref() else {
            return Ok(None);
        };
        if tx.deleted || self.current.evicted != self.persisted_evicted {
            let mut stmt = self
                .conn
                .prepare_cached("UPDATE meta SET value = ?2 WHERE key = ?1")?;
            stmt.execute(rusqlite::params!["last_seq", self.current.last_seq as i64])?;
            stmt.execute(rusqlite::params!["evicted", self.current.evicted as i64])?;
        }
        self.conn.execute_batch("COMMIT")?;
        self.tx = None;
        self.committed = self.current;
        self.persisted_evicted = self.current.evicted;
        self.over_bytes = self
            .used_bytes()
            .map(|u| u > self.max_bytes)
            .unwrap_or(false);
        Ok(Some(self.committed.last_seq))
    }

    /// Writes the ring to disk if the retry is due (or `force`d), in one transaction.
    fn retry_disk(&mut self, now: Instant, force: bool) -> Option<u64> {
        if let Disk::Failing { next_retry } = self.disk {
            if !force && now < next_retry {
                return None;
            }
        }
        let result = (|| {
            self.begin(now)?;
            for i in 0..self.ring.len() {
                let Some(fix) = self.ring.get(i).copied() else {
                    break;
                };
                self.make_room()?;
                let seq = self.current.last_seq + 1;
                insert_fix(&self.conn, seq, &fix)?;
                self.current.last_seq = seq;
                self.current.depth += 1;
            }
            self.commit_open()
        })();
        match result {
            Ok(committed) => {
                let flushed = self.ring.len();
                self.ring.clear();
                self.disk = Disk::Writable;
                info!(path = %self.path.display(), flushed, committed_seq = self.committed.last_seq,
                    "buffer disk writable again, memory ring flushed");
                committed
            }
            Err(e) => {
                self.fail(e, "retry", now);
                None
            }
        }
    }

    /// Rolls the open group back, keeps its fixes in the ring, and schedules a disk retry.
    fn fail(&mut self, e: rusqlite::Error, op: &'static str, now: Instant) -> BufferError {
        self.rollback_to_ring();
        self.disk = Disk::Failing {
            next_retry: now + self.disk_retry,
        };
        let err = classify(&self.path, op, e);
        let err = match err {
            BufferError::DiskFull { path, detail, .. } => BufferError::DiskFull {
                path,
                detail,
                held: self.ring.len(),
            },
            other => other,
        };
        warn!(code = err.code(), path = %self.path.display(), held = self.ring.len(), error = %err,
            "buffer write failed; fixes held in memory until the disk works again");
        self.last_error = Some(LastError {
            code: err.code(),
            class: err.class(),
            message: err.to_string(),
            at: now_rfc3339(),
        });
        err
    }

    fn rollback_to_ring(&mut self) {
        if let Some(tx) = self.tx.take() {
            if !self.conn.is_autocommit() {
                // SQLite may have rolled back by itself (SQLITE_FULL); then this is a no-op.
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            for fix in tx.fixes {
                self.hold_in_ring(fix);
            }
        }
        self.current = self.committed;
    }

    fn hold_in_ring(&mut self, fix: Fix) {
        if self.ring.len() >= self.memory_ring {
            self.ring.pop_front();
            // Not transactional: it happened, whatever the disk does next.
            self.current.evicted += 1;
            self.committed.evicted += 1;
            warn!(
                code = "BUFFER_EVICTED",
                evicted = 1,
                held = self.ring.len(),
                "memory ring full while the disk fails, oldest held fix dropped"
            );
        }
        self.ring.push_back(fix);
    }
}

impl Drop for Buffer {
    /// A clean stop commits the open group (the daemon calls [`Buffer::commit`] first and
    /// logs its result; this is the safety net).
    fn drop(&mut self) {
        if self.tx.is_some() {
            let now = self.last_now;
            let _ = self.commit_or_hold(now);
        }
    }
}
