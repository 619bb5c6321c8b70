//! Store-and-forward buffer in SQLite: every accepted fix is stored here, gets its `seq`, and
//! stays until the broker acknowledged it (or the capacity policy evicts it, counted).
//!
//! In: accepted [`Fix`]es from validation ([`Buffer::append`]), acks, releases and dead
//! letters from the uplink. Out: batches oldest first ([`Buffer::next_batch`]), the newest
//! fix for "live first" ([`Buffer::newest_pending`]), [`BufferStats`] and its
//! [`BufferStatus`](crate::status::BufferStatus) for the status board.
//! It must never hand out a fix before it would survive a power cut, never reuse or skip a
//! seq within a stream, never delete a file that holds fixes (only its own temporary ones),
//! and never panic on an I/O error.
//!
//! **Two tiers of durability.** Each appended fix is inserted into a write transaction that
//! stays open until the next sync, and written, as one `write` of 88 bytes, to the crash
//! journal beside the file (`<path>-fixlog`, see `journal.rs`): in the kernel when `append`
//! returns, so the fix survives the process (SIGKILL, OOM, panic) at once, and the agent's
//! next start stores what the journal holds. At most `commit_interval_s` later (or after
//! `commit_max` fixes, or at once after SIGPWR, see [`Buffer::power_fail`]) the transaction
//! commits (a `write` of its WAL frames, the file in WAL mode with `synchronous = NORMAL`),
//! one `fdatasync` of the WAL makes it survive a power cut too, and the journal is emptied
//! (and made whole again if an outsider deleted, replaced or truncated it, see
//! `Journal::mend`).
//! Only fixes that survive a power cut are handed to the uplink: a seq the broker has seen
//! can never come back after a cut and be given to another fix. Acknowledgements are not
//! urgent (a lost one is a duplicate, never a loss): their deletes ride along in the next
//! transaction. The WAL is checkpointed into the main file at a sync once it holds ~1000
//! frames (SQLite syncs the WAL before and the main file after). Another connection (the
//! `buffer` CLI beside the running daemon) sees a fix once its transaction committed: within
//! `commit_interval_s`. Where the journal cannot be opened or written, each fix is committed
//! on its own, as an earlier version did for all of them: the same guarantees at about ten
//! more system calls per fix; the buffer is degraded meanwhile (`BUFFER_JOURNAL`, or
//! `BUFFER_JOURNAL_REFUSED` for a path that is not a plain file of ours) and opening the
//! journal is tried again every `disk_retry_s`. Replayed records are checked as live fixes
//! are; one that fails is set aside as a dead letter and the others flow.
//!
//! **Wear.** What reaches the flash is each sync's WAL frames (the pages the interval's fixes
//! changed, so new files use 1 KiB pages, see [`schema`]), the checkpoints, which copy those
//! pages into the main file, and the journal's 88 bytes per fix (overwritten with zeros at
//! each sync, in blocks the file already has). `cargo bench --bench buffer` prints
//! the commits, syncs and checkpoints. **Loss windows:** SIGKILL: none of what was appended;
//! power cut: at most `commit_interval_s` of fixes (or `commit_max`, if fewer), plus the
//! epoch a sync due between two epochs waits for (see [`Buffer::next_wake`]).
//!
//! **Seq.** A fix gets `seq = last_seq + 1` inside the transaction that stores it; if that
//! transaction rolls back, the counter goes back too, so no gap is left. `meta.last_seq` is
//! written in any transaction that deletes the newest row, so a seq is never given out twice.
//!
//! **Faults.** When the disk cannot be written (`SQLITE_FULL`, read-only file system, I/O
//! error, a failed sync), fixes go to a bounded ring in memory (`memory_ring` fixes, oldest
//! dropped and counted when full), health says `BUFFER_DISK_FULL` or `BUFFER_IO` (degraded),
//! and the disk is retried every `disk_retry_s`. Ring fixes get their seq only when they are
//! written to disk, so seqs stay contiguous; they are not published before that. A row that
//! cannot be read back is set aside as a dead letter (`BUFFER_CORRUPT_RECORD`) and the queue
//! flows on.
//!
//! **The file under the agent's feet** (see `files.rs` and `rescue.rs`). A file that is damaged
//! or not ours at startup is renamed to `<path>.corrupt-<utc>` and a new stream begins
//! (`BUFFER_CORRUPT`, unhealthy until restart). While running, after each commit the path is
//! compared with the open file: deleted or replaced (`BUFFER_FILE_GONE`), the open file is
//! copied back to the path and the agent goes on there, same stream and seqs; truncated or
//! reading as corrupt (`BUFFER_CORRUPT`), it is moved aside, a new stream begins and what can
//! still be read (SQLite's page cache, the WAL, the fixes not yet synced, the ring) is
//! written to the new file; what cannot is counted as lost.
//!
//! **In flight** is kept in memory only: after a restart every unacknowledged fix is pending.

//!
//! **Rooms.** The buffer's state is split by what it is about, each part owning its fields
//! and answering its own questions: `deliveries.rs` (what the uplink holds and has
//! acknowledged), `schedule.rs` (when to commit, sync, look and checkpoint; what is synced),
//! `faults.rs` (the disk's state, the memory ring, rescues, the last error, what is lost),
//! `capacity.rs` (the limits and the eviction policy), `tx.rs` (the open transaction and the
//! counts it moves), `journal.rs` (the crash journal), `history.rs` (the local history),
//! `answers.rs` (the remote commands' answered ids). This file joins them around the one
//! SQLite connection.

mod answers;
mod capacity;
mod deliveries;
mod error;
mod faults;
mod file_ops;
mod files;
mod history;
mod journal;
mod rescue;
mod schedule;
pub mod schema;
pub mod store;
mod tx;

pub use answers::AnswerRow;
pub use error::BufferError;
pub use file_ops::{file_stats, list_dead_letters, requeue_dead_letters, BufferStats, DeadLetter};
pub use history::{HistoryStats, HistoryWindow};
pub use schema::{open_existing, open_read_only, APPLICATION_ID, SCHEMA_VERSION};

use crate::clock::Clock;
use crate::config::BufferSettings;
use crate::error::{Classified, ErrorClass};
use crate::fix::Fix;
pub use crate::status::Rescues;
use crate::status::{BufferStatus, HistoryDrop, HistoryStatus, Status};
use capacity::{used_bytes, Capacity};
use deliveries::Deliveries;
use error::{classify, failure_of, Failure};
use faults::Faults;
use files::{Verdict, Watch};
use history::History;
use journal::CrashJournal;
use rusqlite::{Connection, OptionalExtension};
use schedule::{Checkpoints, SyncSchedule};
use schema::{
    data_version, insert_fix, read_meta_u64, read_stream, row_to_fix, Unusable, FIX_COLUMNS,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};
use tx::{Counters, Ledger, OpenTx};

/// A fix as stored, with its seq.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredFix {
    pub seq: u64,
    pub fix: Fix,
}

/// What [`Buffer::append`] did with a fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The fix's seq once committed (it survives the process from here), or `None` when it
    /// is held in the memory ring (disk failing); it gets its seq when it reaches the disk.
    pub seq: Option<u64>,
    /// Set when this call synced: every seq up to this one survives a power cut and may be
    /// handed to the uplink.
    pub synced_upto: Option<u64>,
}

/// The oldest fix's time and the file's size as last looked up (see [`Buffer::status`]).
#[derive(Debug, Clone, Copy)]
struct LookedUp {
    at: Instant,
    oldest_time_ms: Option<i64>,
    bytes: u64,
}

/// How often [`Buffer::status`] looks up the oldest fix and the file's size at most.
const LOOK_UP_EVERY: Duration = Duration::from_secs(1);

/// The parts of the buffer's status that a change of shows (see [`Buffer::status_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusKey {
    condition: Status,
    depth: u64,
    in_memory: u64,
    evicted: u64,
    dead_letters: u64,
    lost: u64,
    rescues: Rescues,
    error: Option<(&'static str, i64)>,
    history: HistoryStatus,
}

/// What [`Buffer::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The damaged file was renamed to this, and a new stream started.
    pub moved_aside: Option<PathBuf>,
    /// Why it was moved aside.
    pub corrupt_reason: Option<String>,
}

/// The store. Owns its SQLite connection; not `Sync`: one task uses it.
pub struct Buffer {
    conn: Connection,
    path: PathBuf,
    stream: String,
    /// The counts, as committed and inside the open transaction.
    ledger: Ledger,
    tx: Option<OpenTx>,
    deliveries: Deliveries,
    schedule: SyncSchedule,
    checkpoints: Checkpoints,
    faults: Faults,
    capacity: Capacity,
    /// Appended fixes survive the process through it while their transaction stays open
    /// until the sync.
    journal: CrashJournal,
    /// Every accepted fix, for `backfill` (see `history.rs`).
    history: History,
    watch: Watch,
    /// `PRAGMA data_version` as last seen: it moves when another connection commits (the
    /// `buffer requeue` CLI next to the running daemon).
    data_version: i64,
    /// The latest `now` a caller gave; stamps transactions opened by acks.
    last_now: Instant,
    io: IoCounts,
    looked_up: std::cell::Cell<Option<LookedUp>>,
}

/// What the buffer asked of the disk so far (the wear bench prints it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounts {
    /// Transactions committed (WAL appends, no fsync).
    pub commits: u64,
    /// `fdatasync`s of the WAL.
    pub syncs: u64,
    /// Checkpoints that copied frames into the main file (SQLite syncs the WAL and the main
    /// file in each).
    pub checkpoints: u64,
}

/// An open, checked connection with everything the buffer keeps beside it.
struct Opened {
    conn: Connection,
    stream: String,
    counters: Counters,
    data_version: i64,
    watch: Watch,
    wal_frames: Arc<AtomicI32>,
}
/// Takes over a connection from [`schema::open_checked`]: reads the counters, registers the
/// WAL hook (which also turns SQLite's automatic checkpoint off: we checkpoint at a sync),
/// and makes what is in the file durable (a fresh file's name included).
fn adopt(mut conn: Connection, path: &Path) -> Result<Opened, BufferError> {
    let io = |op| {
        let path = path.to_path_buf();
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
    let data_version = data_version(&conn).map_err(io("read data_version"))?;
    let wal_frames = Arc::new(AtomicI32::new(0));
    let frames = Arc::clone(&wal_frames);
    conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages| {
        frames.store(pages, Ordering::Relaxed);
        Ok(())
    }))
    .map_err(io("wal hook"))?;
    let file_err = |source| BufferError::File {
        path: path.to_path_buf(),
        source,
    };
    let watch = Watch::new(path).map_err(file_err)?;
    // Whatever an earlier run committed and did not sync is synced now, so everything in
    // the file may be handed out.
    watch.sync_wal().map_err(|source| BufferError::Sync {
        path: path.to_path_buf(),
        source,
    })?;
    files::sync_file(path).map_err(file_err)?;
    files::sync_dir(path).map_err(file_err)?;
    Ok(Opened {
        conn,
        stream,
        counters: Counters {
            last_seq,
            depth,
            evicted,
            dead_letters,
        },
        data_version,
        watch,
        wal_frames,
    })
}

impl Buffer {
    /// Opens (or creates) the buffer at `cfg.path`, migrating an older file and moving a
    /// damaged one aside.
    pub fn open(cfg: &BufferSettings) -> Result<(Buffer, OpenReport), BufferError> {
        let path = cfg.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| BufferError::File {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        schema::remove_leftover_temps(&path);
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
        let opened = adopt(conn, &path)?;
        let counters = opened.counters;
        info!(component = "buffer", path = %path.display(), stream = %opened.stream,
            depth = counters.depth, last_seq = counters.last_seq, "buffer open");
        let mut faults = Faults::new(cfg.memory_ring.get(), cfg.disk_retry, Clock::system());
        if let Some(reason) = &report.corrupt_reason {
            faults.raise_alarm(Status::Unhealthy);
            faults.set_error(
                "BUFFER_CORRUPT",
                ErrorClass::Critical,
                format!(
                    "moved aside to {}: {reason}",
                    report
                        .moved_aside
                        .as_deref()
                        .unwrap_or(Path::new(""))
                        .display()
                ),
            );
        }
        let now = Instant::now();
        let mut buffer = Buffer {
            conn: opened.conn,
            path,
            stream: opened.stream,
            ledger: Ledger::new(counters),
            tx: None,
            deliveries: Deliveries::default(),
            schedule: SyncSchedule::new(
                cfg.commit_interval,
                cfg.commit_max.get(),
                counters.last_seq,
                now,
            ),
            checkpoints: Checkpoints::new(opened.wal_frames),
            faults,
            capacity: Capacity::new(cfg),
            journal: CrashJournal::new(cfg.disk_retry),
            history: History::new(&cfg.history, cfg.memory_ring.get()),
            watch: opened.watch,
            data_version: opened.data_version,
            last_now: now,
            io: IoCounts::default(),
            looked_up: std::cell::Cell::new(None),
        };
        buffer.attach_history();
        buffer.replay_journal(now);
        Ok((buffer, report))
    }

    /// Stamp errors with the agent's clock (the daemon's, or a test's).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.faults.set_clock(clock);
        self
    }

    /// The stream id of this file (32 hex chars).
    pub fn stream(&self) -> &str {
        &self.stream
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last seq that survives the process: committed to the file, or written to the
    /// crash journal.
    pub fn committed_seq(&self) -> u64 {
        self.ledger
            .committed()
            .last_seq
            .max(self.journal.journaled_seq())
    }

    /// The last seq synced: it survives a power cut, and fixes up to it are handed out.
    pub fn synced_seq(&self) -> u64 {
        self.schedule.synced_seq()
    }

    /// Stores a fix: in the crash journal at once (it survives the process), committed and
    /// synced when the interval, `commit_max` or a power failure says so. Never loses it on a
    /// disk failure: it then waits in the memory ring.
    pub fn append(&mut self, fix: &Fix, now: Instant) -> Result<Appended, BufferError> {
        self.last_now = now;
        self.schedule.note_append(now);
        if !self.faults.writable() || !self.faults.held().is_empty() {
            // Once fixes wait in memory, later ones queue behind them to keep the order.
            self.hold_in_ring(*fix);
            let synced_upto = self.retry_disk(now, false);
            return Ok(Appended {
                seq: None,
                synced_upto,
            });
        }
        let result = (|| {
            self.begin(now)?;
            let seq = self.insert_appended(fix)?;
            let journaled = self.journal.append(seq, fix).unwrap_or_else(|e| {
                warn!(component = "buffer", code = e.code(), class = e.class().as_str(), error = %e,
                    "crash journal write failed; committing each fix until the next sync");
                self.faults.set_error(e.code(), e.class(), e.to_string());
                false
            });
            if journaled {
                // In the journal: it survives the process; SQLite commits at the sync.
                self.schedule.dirtied(now);
            } else {
                self.commit_open(now)?;
            }
            Ok(seq)
        })();
        match result {
            Ok(seq) => {
                let stream_before = self.faults.rescues().quarantined;
                self.look_open(now);
                let synced_upto = if self.faults.writable() && self.sync_due(now) {
                    self.sync_or_hold(now)
                } else {
                    None
                };
                // A quarantine renumbered it in a new stream.
                let seq = (self.faults.rescues().quarantined == stream_before).then_some(seq);
                Ok(Appended { seq, synced_upto })
            }
            Err(e) => {
                let held = self.tx.as_ref().is_some_and(|tx| !tx.fixes.is_empty());
                self.fail(e, "append", now);
                if !held {
                    self.hold_in_ring(*fix);
                }
                Ok(Appended {
                    seq: None,
                    synced_upto: None,
                })
            }
        }
    }

    /// Syncs when due, flushes acknowledgements, retries a failing disk or a file that could
    /// not be written back. Returns the synced seq when a sync happened. Call it at least
    /// every `commit_interval_s` (and every `disk_retry_s`): without appends or ticks the
    /// power-cut window grows.
    pub fn tick(&mut self, now: Instant) -> Result<Option<u64>, BufferError> {
        self.last_now = now;
        self.flush_journal(now);
        let expired = self.deliveries.expire_stale(now);
        if expired > 0 {
            warn!(component = "buffer", seqs = expired,
                "an old stream's fixes were never resolved by the uplink; handing out the new stream");
        }
        if !self.faults.writable() {
            return Ok(self.retry_disk(now, false));
        }
        if self.faults.restore_waiting_due(now) {
            self.look(now);
        }
        if self.journal.retry_due(now) {
            self.replay_journal(now);
        }
        if self.schedule.look_due(now) {
            self.notice_outside_writes();
            // Without fixes there are no commits to look after: look once a second anyway.
            self.look(now);
        }
        if self
            .deliveries
            .acks_due(now, self.schedule.interval(), self.schedule.max())
        {
            // A sync due now commits the history's rows anyway: in the same commit.
            let sync = self.sync_due(now);
            self.flush_acks(now, sync);
        }
        if self.faults.writable() && self.sync_due(now) {
            return Ok(self.sync_or_hold(now));
        }
        Ok(None)
    }

    /// When [`Buffer::tick`] next has something to do: a sync or an acknowledgement flush
    /// falling due, a disk or rescue retry, the once-a-second look at the file, an old
    /// stream's wait running out. The caller may sleep until then (an idle agent stays
    /// asleep between them).
    pub fn next_wake(&self) -> Instant {
        // The sync, the acks' flush and the look wait for the next epoch's append when one
        // is due within `slack`: one wake for both.
        let mut at = self.schedule.next_due(self.last_now);
        let others = [
            self.deliveries
                .next_due(self.schedule.interval(), self.schedule.slack()),
            self.faults.next_retry(),
            self.journal.next_retry(),
        ];
        for t in others.into_iter().flatten() {
            at = at.min(t);
        }
        at
    }

    /// Power is failing (SIGPWR): sync now, and every commit for the next 30 s. Returns the
    /// synced seq.
    pub fn power_fail(&mut self, now: Instant) -> Option<u64> {
        self.last_now = now;
        self.schedule.power_fail(now);
        if !self.faults.writable() {
            return self.retry_disk(now, true);
        }
        self.flush_acks(now, true);
        self.sync_or_hold(now)
    }

    /// Makes everything durable now (shutdown): pending acknowledgements, the memory ring
    /// (one more try of a failing disk, or of writing a deleted file back), a sync. Errors
    /// if fixes are left in memory only.
    pub fn commit(&mut self) -> Result<Option<u64>, BufferError> {
        let now = self.last_now;
        if self.faults.restore_pending() {
            self.faults.restore_now(now);
            self.look(now);
        }
        let synced = if !self.faults.writable() {
            self.retry_disk(now, true)
        } else {
            self.flush_acks(now, true);
            if self.faults.writable() {
                self.sync_or_hold(now)
            } else {
                None
            }
        };
        if !self.faults.held().is_empty() {
            // Named by what holds them: a full disk, a failing device, a damaged file.
            return Err(BufferError::Held {
                path: self.path.clone(),
                cause: self.faults.failing_cause().unwrap_or("BUFFER_IO"),
                detail: self
                    .faults
                    .last_error()
                    .map_or_else(String::new, |e| e.message.clone()),
            });
        }
        if self.faults.restore_pending() {
            return Err(BufferError::FileGone {
                path: self.path.clone(),
                detail: "the open file could not be written back to its path".into(),
            });
        }
        Ok(synced)
    }

    /// An accepted fix for the local history (every one, whether the report stage keeps it
    /// for sending or not; see `history.rs`). It goes into the crash journal with the next
    /// write to it (the next [`append`](Self::append), or the next [`tick`](Self::tick)) and
    /// becomes a row in the next commit. While the buffer runs on its memory ring it waits in
    /// memory (at most `memory_ring` fixes; beyond that the oldest is counted dropped,
    /// `memory`) and is written when the disk is back. A no-op when the history is off.
    pub fn remember(&mut self, fix: &Fix, now: Instant) {
        let on_ring = !self.faults.writable() || !self.faults.held().is_empty();
        let over = if on_ring {
            HistoryDrop::Memory
        } else {
            HistoryDrop::Backlog
        };
        if !self.history.remember(*fix, over) {
            return;
        }
        self.last_now = now;
        if self.journal.stage(fix) {
            self.history.journaled();
        }
        if on_ring {
            // Written with the memory ring when the disk is back.
            return;
        }
        // The row goes into the open transaction at the commit: a sync is now due in time.
        match self.begin(now) {
            Ok(()) => self.schedule.dirtied(now),
            Err(e) => {
                self.fail(e, "history", now);
            }
        }
    }

    /// `n` accepted fixes the store could not keep for the history while the file was not
    /// open (its queue held `memory_ring`): counted as dropped (`memory`).
    pub fn history_dropped_unopened(&mut self, n: u64) {
        self.history.dropped(HistoryDrop::Memory, n);
    }

    /// The next page of a window of the local history (see [`HistoryWindow::next_page`]),
    /// read through the buffer's own connection: rows not yet committed included. Returns
    /// whether more may follow; nothing when the history is off.
    pub fn history_page(
        &mut self,
        window: &mut HistoryWindow,
        limit: usize,
        out: &mut Vec<Fix>,
    ) -> Result<bool, BufferError> {
        out.clear();
        if !self.history.on() {
            return Ok(false);
        }
        // The rows of the fixes remembered since the last commit, so the page misses none:
        // written into the open transaction (its commit comes with the next sync).
        let now = self.last_now;
        let writable = self.faults.writable() && self.faults.held().is_empty();
        if self.history.pending() > 0 && writable {
            let now_ms = self.faults.utc_ms();
            self.begin(now)
                .and_then(|()| self.history.write(&self.conn, now_ms))
                .map_err(|e| self.fail(e, "history", now))?;
            self.schedule.dirtied(now);
        }
        window.next_page(&self.conn, &self.path, limit, out)
    }

    /// The remote commands' answered ids that expire after `now_ms` (see `answers.rs`).
    pub fn answers(&mut self, now_ms: i64) -> Result<Vec<AnswerRow>, BufferError> {
        answers::load(&self.conn, now_ms).map_err(|e| classify(&self.path, "read answers", e))
    }

    /// Records answered ids durably before their answers go out: written in the open
    /// transaction with whatever it holds, committed and synced now (a sync the schedule
    /// would have made later anyway). On a failing disk nothing is recorded and the error
    /// says why; the fixes are handled as on any failed write.
    pub fn record_answers(&mut self, rows: &[AnswerRow], now: Instant) -> Result<(), BufferError> {
        self.last_now = now;
        if !self.faults.writable() || !self.faults.held().is_empty() {
            return Err(BufferError::DiskFull {
                path: self.path.clone(),
                detail: "the disk is failing; answered ids are kept in memory".into(),
            });
        }
        let now_ms = self.faults.utc_ms();
        if let Err(e) = self
            .begin(now)
            .and_then(|()| answers::write(&self.conn, rows, now_ms))
        {
            return Err(self.fail(e, "write answers", now));
        }
        self.schedule.dirtied(now);
        match self.sync_or_hold(now) {
            Some(_) => Ok(()),
            None => Err(BufferError::DiskFull {
                path: self.path.clone(),
                detail: "the sync failed; answered ids are kept in memory".into(),
            }),
        }
    }

    /// Acknowledgements whose deletes no commit has written yet.
    pub fn acks_waiting(&self) -> usize {
        self.deliveries.acked().len()
    }

    /// Fixes that would be lost if the process ended now: those held in memory only, and
    /// the whole file while it could not be written back to its path.
    pub fn at_risk(&self) -> u64 {
        self.faults.held().len() as u64 + self.file_at_risk()
    }

    /// The file's fixes while it could not be written back to its path.
    fn file_at_risk(&self) -> u64 {
        if self.faults.restore_pending() {
            self.ledger
                .current()
                .depth
                .saturating_sub(self.acks_unapplied())
        } else {
            0
        }
    }

    /// The agent stops and cannot keep what [`at_risk`](Self::at_risk) counts (the disk
    /// still fails, or the file could not be written back): counts them as lost, forgets
    /// the ring, and returns how many.
    pub fn abandon(&mut self) -> u64 {
        let file = self.file_at_risk();
        self.faults.abandon(file)
    }

    /// Up to `limit` synced fixes, oldest first, skipping those in flight; they are in
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

    /// The newest synced fix not in flight (for "live first"); it is in flight from now on.
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
        if self.deliveries.blocked() {
            // An old stream's acks may still come: hand out nothing they could hit.
            return Ok(());
        }
        let mut corrupt_rows = Vec::new();
        let scanned = (|| -> rusqlite::Result<()> {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT seq, {FIX_COLUMNS} FROM fixes WHERE seq <= ?1 ORDER BY seq {order}"
            ))?;
            // Rows are stepped lazily: the scan stops after `limit` fixes plus those in
            // flight.
            let mut rows = stmt.query([self.schedule.synced_seq().min(i64::MAX as u64) as i64])?;
            while out.len() < limit {
                let Some(row) = rows.next()? else {
                    break;
                };
                // Fixes in flight are the oldest pending ones, met on every scan: skip them
                // on their seq alone rather than decoding each (most of the uplink's CPU at
                // 10 Hz).
                let seq: i64 = row.get(0)?;
                if self.deliveries.is_out(seq.max(0) as u64) {
                    continue;
                }
                match row_to_fix(row) {
                    Ok((seq, fix)) => out.push(StoredFix { seq, fix }),
                    Err(e) => {
                        let seq: i64 = row.get(0)?;
                        corrupt_rows.push((seq.max(0) as u64, e.to_string()));
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = scanned {
            out.clear();
            let now = self.last_now;
            let err = classify(&self.path, "read pending", e);
            if matches!(err, BufferError::Corrupt { .. }) {
                self.quarantine(err.to_string(), now);
            }
            return Err(err);
        }
        if !corrupt_rows.is_empty() {
            self.set_aside_corrupt_rows(&corrupt_rows);
        }
        self.deliveries.hand_out(out.iter().map(|s| s.seq));
        Ok(())
    }

    /// The broker has these: they leave the buffer with the next write (a crash before it
    /// only means they are sent again).
    pub fn ack(&mut self, seqs: &[u64]) -> Result<(), BufferError> {
        let full = self
            .deliveries
            .ack(seqs, self.last_now, self.schedule.max());
        if full && self.faults.writable() {
            let now = self.last_now;
            self.flush_acks(now, false);
        }
        Ok(())
    }

    /// Not delivered (disconnect): back to pending, sent again by the next batch.
    pub fn release(&mut self, seqs: &[u64]) {
        self.deliveries.release(seqs);
    }

    /// The broker will never take these: move them to `dead_letters` with a code and reason.
    pub fn dead_letter(
        &mut self,
        seqs: &[u64],
        code: &str,
        reason: &str,
    ) -> Result<(), BufferError> {
        let seqs = self.deliveries.give_up(seqs);
        if seqs.is_empty() {
            return Ok(());
        }
        let now = self.last_now;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let result = self.set_aside(now, |conn| {
            file_ops::move_to_dead_letters(conn, &seqs, code, reason, now_ms)
        });
        match result {
            Ok(moved) => {
                warn!(
                    code = "BUFFER_DEAD_LETTER",
                    dead_code = code,
                    reason,
                    count = moved,
                    "fixes dead-lettered"
                );
                self.look(now);
                Ok(())
            }
            Err(e) => Err(self.fail(e, "dead_letter", now)),
        }
    }

    /// Dead letters back to pending with their own seqs, in a transaction of its own (pending
    /// acknowledgements are written first). Returns how many.
    pub fn requeue_dead_letters(&mut self) -> Result<u64, BufferError> {
        let now = self.last_now;
        self.commit_pending(now)?;
        self.flush_acks(now, false);
        if !self.faults.writable() {
            return Err(BufferError::DiskFull {
                path: self.path.clone(),
                detail: "requeue needs a writable disk".into(),
            });
        }
        let n = file_ops::requeue_dead_letters(&self.conn, &self.path)?;
        self.ledger.requeued(n);
        self.schedule.dirtied(now);
        Ok(n)
    }

    /// Another process committed to the file (`gps-agent buffer requeue` while the daemon
    /// runs): recount what it can change, the pending fixes and the dead letters. Its rows are
    /// already visible to [`next_batch`](Self::next_batch) once synced; this keeps depth and
    /// health true. Our own commits do not move `data_version`, so this costs one pragma per
    /// call unless someone else wrote.
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
        // The recount compares rows with the depth, which counts the appended fixes.
        if self.write_appended_or_fail().is_err() {
            return;
        }
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
        let current = self.ledger.current();
        let depth_delta = depth as i64 - current.depth as i64;
        let letters_delta = dead_letters as i64 - current.dead_letters as i64;
        // The outside commit is in the file, synced by its own connection (FULL).
        self.schedule.dirtied(self.last_now);
        if depth_delta == 0 && letters_delta == 0 {
            return;
        }
        self.ledger.changed_outside(depth_delta, letters_delta);
        info!(
            component = "buffer",
            depth,
            dead_letters,
            "buffer changed by another process (buffer requeue?); counts refreshed"
        );
    }

    /// Depth, ends, counters; cheap (the depth is kept counted).
    pub fn stats(&mut self) -> Result<BufferStats, BufferError> {
        self.write_appended_or_fail()?;
        let result = file_ops::stats_with_depth(&self.conn, &self.path, self.depth());
        let mut s = match result {
            Ok(s) => s,
            Err(BufferError::Corrupt { detail, .. }) => {
                let now = self.last_now;
                self.quarantine(format!("reading stats: {detail}"), now);
                file_ops::stats_with_depth(&self.conn, &self.path, self.depth())?
            }
            Err(e) => return Err(e),
        };
        let current = self.ledger.current();
        s.last_seq = s.last_seq.max(current.last_seq);
        s.evicted = current.evicted;
        s.dead_letters = current.dead_letters;
        s.in_flight = Some(self.deliveries.unacked());
        s.in_memory = Some(self.faults.held().len() as u64);
        s.lost = Some(self.faults.lost());
        s.history = self.history.stats();
        Ok(s)
    }

    /// Fixes waiting for the broker: in the file (less those acknowledged) and in memory.
    fn depth(&self) -> u64 {
        self.ledger
            .current()
            .depth
            .saturating_sub(self.acks_unapplied())
            + self.faults.held().len() as u64
    }

    /// Acknowledged seqs whose rows are still counted in the depth: those the open
    /// transaction has not deleted yet (it stays open across appends until the sync).
    fn acks_unapplied(&self) -> u64 {
        let applied = self.tx.as_ref().map_or(0, |tx| tx.acks_applied);
        self.deliveries.acked().len().saturating_sub(applied) as u64
    }

    /// Fixes lost for good so far (see [`Buffer::abandon`] and the rescue of a damaged
    /// file).
    pub fn lost(&self) -> u64 {
        self.faults.lost()
    }

    /// How often the file had to be rescued while running.
    pub fn rescues(&self) -> Rescues {
        self.faults.rescues()
    }

    /// The buffer's own judgement of itself: the faults' (see `faults.rs`), and degraded
    /// while the crash journal cannot be used (each fix is then committed on its own: safe,
    /// at more wear; `BUFFER_JOURNAL` or `BUFFER_JOURNAL_REFUSED` says why).
    fn condition(&self) -> Status {
        let journal = if self.journal.degraded() {
            Status::Degraded
        } else {
            Status::Healthy
        };
        self.faults.condition().max(journal)
    }

    /// What moves the buffer's published status, cheaply (no SQL, no `stat`): when it
    /// differs from the last one published, the status is published again.
    pub fn status_key(&self) -> StatusKey {
        let current = self.ledger.current();
        StatusKey {
            condition: self.condition(),
            depth: self.depth(),
            in_memory: self.faults.held().len() as u64,
            evicted: current.evicted,
            dead_letters: current.dead_letters,
            lost: self.faults.lost(),
            rescues: self.faults.rescues(),
            error: self.faults.last_error().map(|e| (e.code, e.at_ms)),
            history: self.history.status(),
        }
    }

    /// What the buffer publishes on the status board: its condition, the counts it keeps,
    /// the oldest waiting fix's time (one rowid lookup) and the file's size (two `stat`s).
    ///
    /// A 10 Hz receiver changes the status ten times a second; the oldest fix's time and the
    /// file's size are looked up again at most once a second (sooner when the buffer fills
    /// from empty): ages in `/health` are in seconds anyway.
    pub fn status(&self) -> BufferStatus {
        let depth = self.depth();
        let held = self.faults.held();
        let fresh = self.looked_up.get().filter(|l| {
            self.last_now.saturating_duration_since(l.at) < LOOK_UP_EVERY
                && (l.oldest_time_ms.is_some() || depth == 0)
        });
        let looked = fresh.unwrap_or_else(|| {
            let oldest_on_disk = self
                .conn
                .prepare_cached("SELECT time_ms FROM fixes ORDER BY seq LIMIT 1")
                .and_then(|mut stmt| stmt.query_row([], |r| r.get::<_, i64>(0)).optional());
            let oldest_time_ms = match oldest_on_disk {
                // Fixes appended since the commit may have no row yet.
                Ok(on_disk) => on_disk
                    .or_else(|| self.tx.as_ref()?.appended.first().map(|s| s.fix.time_ms))
                    .or_else(|| held.front().map(|f| f.time_ms)),
                Err(e) => {
                    debug!(component = "buffer", error = %e, "oldest fix unreadable");
                    held.front().map(|f| f.time_ms)
                }
            };
            let looked = LookedUp {
                at: self.last_now,
                oldest_time_ms,
                bytes: file_ops::file_bytes(&self.path),
            };
            self.looked_up.set(Some(looked));
            looked
        });
        let current = self.ledger.current();
        BufferStatus {
            condition: self.condition(),
            depth,
            in_memory: held.len() as u64,
            oldest_time_ms: looked.oldest_time_ms.filter(|_| depth > 0),
            evicted: current.evicted,
            dead_letters: current.dead_letters,
            bytes: looked.bytes,
            lost: self.faults.lost(),
            rescues: self.faults.rescues(),
            last_error: self.faults.last_error().cloned(),
            history: self.history.status(),
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

    /// Commits, syncs and checkpoints so far.
    pub fn io_counts(&self) -> IoCounts {
        self.io
    }

    /// Test knob: checkpoint at a sync once the WAL holds `frames` frames (power-cut tests
    /// exercise checkpoints and WAL restarts within a short run).
    #[doc(hidden)]
    pub fn set_checkpoint_frames(&mut self, frames: i32) {
        self.checkpoints.set_every(frames);
    }

    // ---- internals ----

    fn begin(&mut self, _now: Instant) -> rusqlite::Result<()> {
        if self.tx.is_none() {
            // IMMEDIATE: take the write lock now, so a `requeue` from the CLI waits for us
            // (or we for it, up to busy_timeout) instead of failing mid-transaction.
            self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
            self.tx = Some(OpenTx::default());
            self.apply_acks()?;
        }
        Ok(())
    }

    /// Deletes the acknowledged rows in the open transaction.
    fn apply_acks(&mut self) -> rusqlite::Result<()> {
        let acked = self.deliveries.acked();
        if acked.is_empty() {
            return Ok(());
        }
        let mut gone = 0u64;
        {
            let mut stmt = self
                .conn
                .prepare_cached("DELETE FROM fixes WHERE seq = ?1")?;
            for &seq in acked {
                gone += stmt.execute([seq.min(i64::MAX as u64) as i64])? as u64;
            }
        }
        self.ledger.gone(gone);
        let deleted_newest = self.deliveries.is_acked(self.ledger.current().last_seq);
        let applied = self.deliveries.acked().len();
        if let Some(tx) = self.tx.as_mut() {
            tx.acks_applied = applied;
            tx.deleted_newest |= deleted_newest;
        }
        Ok(())
    }

    /// Writes the acknowledged deletes now, in a transaction of their own. The history's
    /// pending rows go with them only when a sync follows (`history`): otherwise they wait for
    /// the sync's commit (the journal holds them meanwhile), rather than this commit writing
    /// the history's last page once more.
    fn flush_acks(&mut self, now: Instant, history: bool) {
        if self.deliveries.acked().is_empty() || !self.faults.writable() {
            return;
        }
        let result = self
            .begin(now)
            .and_then(|()| self.commit_open_with(now, history));
        match result {
            Ok(()) => self.look(now),
            Err(e) => {
                self.fail(e, "ack", now);
            }
        }
    }

    fn insert(&mut self, fix: &Fix) -> rusqlite::Result<u64> {
        let seq = self.next_seq()?;
        insert_fix(&self.conn, seq, fix)?;
        Ok(seq)
    }

    /// Makes room by the capacity policy and counts one more fix: its seq. A failed write
    /// after it rolls the counts back with the transaction ([`Buffer::rollback_to_ring`]).
    fn next_seq(&mut self) -> rusqlite::Result<u64> {
        self.make_room()?;
        Ok(self.ledger.next_seq())
    }

    /// Capacity policy, before a fix is stored (see `capacity.rs`).
    fn make_room(&mut self) -> rusqlite::Result<()> {
        if !self.capacity.full(self.ledger.current().depth) {
            return Ok(());
        }
        // Eviction picks the oldest rows: every fix counted in the depth has its row first.
        self.write_appended()?;
        let evicted = self.capacity.make_room(
            &self.conn,
            self.ledger.current().depth,
            self.history.bytes(),
        )?;
        if evicted > 0 {
            self.ledger.evicted(evicted);
            let depth = self.ledger.current().depth;
            if depth == 0 {
                if let Some(tx) = self.tx.as_mut() {
                    tx.deleted_newest = true;
                }
            }
            warn!(code = "BUFFER_EVICTED", evicted, policy = ?self.capacity.policy(), depth,
                "buffer full, fixes evicted by policy");
        }
        Ok(())
    }

    /// Commits the open transaction, the history's pending rows with it: from here it
    /// survives the process.
    fn commit_open(&mut self, now: Instant) -> rusqlite::Result<()> {
        self.commit_open_with(now, true)
    }

    /// [`Buffer::commit_open`], the history's pending rows written or left for a later commit
    /// (`history`: false; they stay in the journal, which is not emptied before they are in
    /// the file).
    fn commit_open_with(&mut self, now: Instant, history: bool) -> rusqlite::Result<()> {
        self.write_appended()?;
        let Some(tx) = self.tx.as_ref() else {
            return Ok(());
        };
        if history || self.journal.degraded() {
            let now_ms = self.faults.utc_ms();
            self.history.write(&self.conn, now_ms)?;
        }
        if tx.deleted_newest || self.ledger.evicted_unwritten() {
            let current = self.ledger.current();
            let mut stmt = self
                .conn
                .prepare_cached("UPDATE meta SET value = ?2 WHERE key = ?1")?;
            stmt.execute(rusqlite::params!["last_seq", current.last_seq as i64])?;
            stmt.execute(rusqlite::params!["evicted", current.evicted as i64])?;
        }
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.io.commits += 1;
        let mut tx = self.tx.take().unwrap_or_default();
        self.schedule.committed(&mut tx.appended);
        self.deliveries.applied(tx.acks_applied);
        self.ledger.commit();
        self.history.committed();
        self.schedule.dirtied(now);
        Ok(())
    }

    fn sync_due(&self, now: Instant) -> bool {
        let open = self.tx.as_ref().map_or(0, |tx| tx.appended.len());
        // The history's records need room in the journal too (it holds twice `commit_max`).
        let history = self.history.journaled_since_sync();
        self.schedule.due(now, open) || (self.schedule.is_dirty() && history >= self.schedule.max())
    }

    /// Syncs the WAL (and checkpoints when it is long). Returns the synced seq, or `None`
    /// when the sync failed (the disk is then failing).
    fn sync_or_hold(&mut self, now: Instant) -> Option<u64> {
        // The fixes the journal holds go into the file first, in one transaction.
        if self.commit_pending(now).is_err() {
            return None;
        }
        let verdict = self.watch.check_all(&self.path);
        if verdict != Verdict::Fine && self.faults.restore_due(now) {
            // The rescue leaves a new, synced file behind, or the old one to retry.
            self.on_verdict(verdict, now);
            if !self.faults.writable() {
                return None;
            }
        }
        if let Err(source) = self.watch.sync_wal() {
            self.fail_sync(source, now);
            return None;
        }
        self.io.syncs += 1;
        self.schedule.synced(self.ledger.committed().last_seq);
        self.clear_journal(now);
        let conn = &self.conn;
        self.capacity
            .after_sync(self.watch.bytes_seen(), self.history.bytes(), || {
                used_bytes(conn)
            });
        if self.checkpoints.due() {
            self.checkpoint(now);
        }
        Some(self.schedule.synced_seq())
    }

    /// Copies the WAL into the main file (SQLite syncs both); a reader of the CLI may hold
    /// part of it back until the next sync.
    fn checkpoint(&mut self, now: Instant) {
        let result = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            });
        match result {
            Ok((log, done)) => {
                if done > 0 {
                    self.io.checkpoints += 1;
                }
                self.checkpoints.done(log, done);
                debug!(
                    component = "buffer",
                    frames = log,
                    checkpointed = done,
                    "checkpoint"
                );
            }
            Err(e) => match failure_of(&e) {
                Failure::Corrupt => {
                    let reason = format!("checkpoint: {e}");
                    self.quarantine(reason, now);
                }
                Failure::Disk => {
                    self.fail(e, "checkpoint", now);
                }
                Failure::Other => {
                    debug!(component = "buffer", error = %e, "checkpoint deferred");
                }
            },
        }
    }

    /// After an append: is the open file still linked and whole? One `fstat`, no path
    /// lookup (the path itself is looked at each sync and once a second).
    fn look_open(&mut self, now: Instant) {
        if self.faults.looks_paused(now) {
            return;
        }
        let verdict = self.watch.check_open();
        if verdict != Verdict::Fine {
            self.on_verdict(verdict, now);
        }
    }

    /// After a commit: is the path still our file? One `stat`.
    fn look(&mut self, now: Instant) {
        if self.faults.looks_paused(now) {
            return;
        }
        let verdict = self.watch.check_db(&self.path);
        if verdict != Verdict::Fine {
            self.on_verdict(verdict, now);
        }
    }

    fn on_verdict(&mut self, verdict: Verdict, now: Instant) {
        match verdict {
            Verdict::Fine => {}
            Verdict::Gone { which } => {
                // The copy is made of what is committed: the journal's fixes go in first.
                if self.commit_pending(now).is_ok() {
                    self.restore(which, now);
                }
            }
            Verdict::Shrunk { was, now: len } => self.quarantine(
                format!("the file shrank from {was} to {len} bytes while open (truncated?)"),
                now,
            ),
        }
    }

    /// Writes the ring to disk if the retry is due (or `force`d), in one transaction, and
    /// syncs. Returns the synced seq when that worked.
    fn retry_disk(&mut self, now: Instant, force: bool) -> Option<u64> {
        if !force && !self.faults.retry_due(now) {
            return None;
        }
        if let Some(reason) = self.faults.take_quarantine_due() {
            self.quarantine(reason, now);
            if self.faults.quarantine_pending() {
                return None;
            }
        }
        let mut seqs = Vec::with_capacity(self.faults.held().len());
        let result = (|| {
            self.begin(now)?;
            for i in 0..self.faults.held().len() {
                let Some(fix) = self.faults.held().get(i).copied() else {
                    break;
                };
                seqs.push(self.insert(&fix)?);
            }
            self.commit_open(now)
        })();
        match result {
            Ok(()) => {
                let flushed = self.faults.held().len();
                self.schedule.committed_in_bulk(
                    seqs.iter()
                        .zip(self.faults.held().iter())
                        .map(|(&seq, &fix)| StoredFix { seq, fix }),
                );
                self.faults.clear_held();
                self.faults.disk_back();
                info!(path = %self.path.display(), flushed,
                    committed_seq = self.ledger.committed().last_seq,
                    "buffer disk writable again, memory ring flushed");
                self.look(now);
                if self.faults.writable() {
                    self.sync_or_hold(now)
                } else {
                    None
                }
            }
            Err(e) => {
                self.fail(e, "retry", now);
                None
            }
        }
    }

    /// Rolls the open transaction back, keeps its fixes in the ring, and schedules a disk
    /// retry; a damaged file is quarantined instead.
    fn fail(&mut self, e: rusqlite::Error, op: &'static str, now: Instant) -> BufferError {
        self.rollback_to_ring();
        let err = classify(&self.path, op, e);
        if matches!(err, BufferError::Corrupt { .. }) {
            self.quarantine(err.to_string(), now);
            return err;
        }
        self.faults.disk_failing(&err, &self.path, now);
        err
    }

    /// A sync failed: what was committed since the last sync may not be on the disk (after a
    /// failed `fsync` Linux may drop the dirty pages), so nothing more is handed out or
    /// written until a retry syncs again.
    fn fail_sync(&mut self, source: std::io::Error, now: Instant) {
        let err = BufferError::Sync {
            path: self.path.clone(),
            source,
        };
        self.faults.disk_failing(&err, &self.path, now);
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
        self.ledger.rollback();
        self.history.rolled_back();
    }

    /// Counts a fix in the open transaction and keeps it there twice: for the ring if the
    /// transaction fails, for the unsynced fixes once it commits. Its row is written at the
    /// commit, or sooner when a statement needs it ([`Buffer::write_appended`]). Returns its
    /// seq.
    fn insert_appended(&mut self, fix: &Fix) -> rusqlite::Result<u64> {
        let Some(tx) = self.tx.as_mut() else {
            return self.insert(fix);
        };
        tx.fixes.push(*fix);
        let seq = self.next_seq()?;
        if let Some(tx) = self.tx.as_mut() {
            tx.appended.push(StoredFix { seq, fix: *fix });
        }
        Ok(seq)
    }

    /// Writes the rows of the open transaction's appended fixes that are not written yet.
    /// Every statement that reads or deletes rows of `fixes` beyond the synced ones, and the
    /// commit, come after it.
    fn write_appended(&mut self) -> rusqlite::Result<()> {
        let Some(tx) = self.tx.as_mut() else {
            return Ok(());
        };
        while let Some(s) = tx.appended.get(tx.written) {
            insert_fix(&self.conn, s.seq, &s.fix)?;
            tx.written += 1;
        }
        Ok(())
    }

    /// [`Buffer::write_appended`] for a caller outside the write path: a failure is handled
    /// as every failed write is ([`Buffer::fail`]) and returned.
    fn write_appended_or_fail(&mut self) -> Result<(), BufferError> {
        let now = self.last_now;
        self.write_appended()
            .map_err(|e| self.fail(e, "append", now))
    }

    /// Commits the open transaction, if any (the fixes the journal holds); a failure is
    /// handled as every failed write is ([`Buffer::fail`]) and returned.
    fn commit_pending(&mut self, now: Instant) -> Result<(), BufferError> {
        if self.tx.is_none() {
            // Rows of the history a commit of acknowledgements left pending get a transaction
            // of their own (while the disk takes writes; else the ring's retry writes them).
            let writable = self.faults.writable() && self.faults.held().is_empty();
            if self.history.pending() == 0 || !writable {
                return Ok(());
            }
            self.begin(now).map_err(|e| self.fail(e, "commit", now))?;
        }
        self.commit_open(now)
            .map_err(|e| self.fail(e, "commit", now))
    }

    /// After a sync: everything the journal held is durable in the file (unless fixes wait in
    /// the ring, which the journal may still be the only copy of on disk).
    fn clear_journal(&mut self, now: Instant) {
        if self.tx.is_some() || !self.faults.held().is_empty() || self.history.pending() > 0 {
            return;
        }
        let cleared = self.journal.clear(now);
        if cleared.is_ok() {
            self.history.synced();
        }
        match cleared {
            Ok(None) => {}
            Ok(Some(what)) => {
                warn!(
                    component = "buffer",
                    what, "crash journal changed from outside; made whole again"
                );
            }
            Err(e) => {
                // It would only grow: each fix is committed on its own until a retry opens
                // it again.
                warn!(component = "buffer", code = e.code(), class = e.class().as_str(), error = %e,
                    "crash journal cannot be emptied or made whole; committing each fix on its own until it can");
                self.faults.set_error(e.code(), e.class(), e.to_string());
            }
        }
    }

    /// The history's table in the file the buffer holds now (at open, and after a rescue
    /// switched files). A history that cannot be made or read is off for this run: the
    /// buffer's own work goes on.
    pub(super) fn attach_history(&mut self) {
        if let Err(e) = self.history.attach(&self.conn) {
            let err = classify(&self.path, "open history", e);
            warn!(component = "buffer", code = err.code(), error = %err,
                "local history unavailable this run; accepted fixes are not kept for backfill");
            self.history.turn_off();
        }
    }

    /// Writes the journal's staged history records; a failure is handled as a failed append
    /// is: what the journal does not hold is committed now.
    fn flush_journal(&mut self, now: Instant) {
        if let Err(e) = self.journal.flush() {
            warn!(component = "buffer", code = e.code(), class = e.class().as_str(), error = %e,
                "crash journal write failed; committing each fix until the next sync");
            self.faults.set_error(e.code(), e.class(), e.to_string());
            let _ = self.commit_pending(now);
        }
    }

    /// A new stream began (a damaged file was replaced): the journal's next records are its.
    pub(super) fn journal_new_stream(&mut self) {
        self.journal.new_stream(&self.stream);
    }

    /// At open (and when a journal that could not be used is tried again): the fixes a crash
    /// left in the journal and not in the file go in, then a sync empties it. Records of this
    /// stream the file already has are skipped; records of another stream (the file was
    /// replaced since) or after a gap are stored as new fixes, with the next seqs, rather than
    /// lost. A record is checked as the validator checks a live fix
    /// ([`crate::validate::ranges::stored`]): one that fails takes its seq into
    /// `dead_letters` (`BUFFER_CORRUPT_RECORD`, counted) and the others flow.
    fn replay_journal(&mut self, now: Instant) {
        // Room for a sync interval's fixes and as many history records, and some over for the
        // appends of a failing sync.
        let room = self.schedule.max().saturating_mul(2).saturating_add(64);
        let retry = self.journal.tag().is_none() && self.journal.next_retry().is_some();
        let found = match self.journal.open(&self.path, &self.stream, room, now) {
            Ok(found) => found,
            Err(e) => {
                warn!(component = "buffer", code = e.code(), class = e.class().as_str(), error = %e,
                    "crash journal unusable; committing each fix on its own until it can be used");
                self.faults.set_error(e.code(), e.class(), e.to_string());
                return;
            }
        };
        let Some(tag) = self.journal.tag() else {
            return;
        };
        let skipped = self.journal.skipped();
        if skipped > 0 && !found.is_empty() {
            warn!(component = "buffer", skipped,
                "crash journal records that do not check out read past (zeroed by a truncation from outside, or torn by a power cut)");
        }
        let empty = self.journal.is_empty();
        let last = self.ledger.committed().last_seq;
        let now_ms = self.faults.wall_ms();
        let (mut replayed, mut renumbered) = (0u64, 0u64);
        let mut refused: Vec<(u64, &'static str)> = Vec::new();
        // Seq 0: a record of the history alone (see `Journal::stage`).
        let (history, queued): (Vec<&journal::Record>, Vec<&journal::Record>) =
            found.iter().partition(|(_, seq, _)| *seq == 0);
        let mut history_refused = 0u64;
        for (_, _, fix) in history {
            match crate::validate::ranges::stored(fix) {
                Ok(fix) => self.history.replayed(fix),
                Err(_) => history_refused += 1,
            }
        }
        let mut pending = queued
            .into_iter()
            .filter(|(t, seq, _)| *t != tag || *seq > last)
            .peekable();
        if pending.peek().is_some() || self.history.pending() > 0 {
            let result = (|| -> rusqlite::Result<()> {
                self.begin(now)?;
                for (t, seq, fix) in pending {
                    if *t != tag || *seq != self.ledger.current().last_seq + 1 {
                        renumbered += 1;
                    }
                    match crate::validate::ranges::stored(fix) {
                        Ok(fix) => {
                            self.insert_appended(&fix)?;
                            replayed += 1;
                        }
                        Err(why) => {
                            let given = self.ledger.next_seq_dead_lettered();
                            if let Some(tx) = self.tx.as_mut() {
                                tx.deleted_newest = true;
                            }
                            file_ops::set_aside_journal_record(
                                &self.conn, given, *seq, fix, why, now_ms,
                            )?;
                            refused.push((given, why));
                        }
                    }
                }
                self.commit_open(now)
            })();
            if let Err(e) = result {
                self.fail(e, "replay journal", now);
                return;
            }
            info!(
                component = "buffer",
                replayed,
                renumbered,
                refused = refused.len(),
                history_refused,
                last_seq = self.ledger.committed().last_seq,
                "fixes the crash journal held stored in the buffer"
            );
        }
        if history_refused > 0 {
            warn!(
                component = "buffer",
                code = "BUFFER_CORRUPT_RECORD",
                count = history_refused,
                "crash journal records of the history that are not valid fixes dropped"
            );
        }
        if let Some(&(_, why)) = refused.first() {
            let seqs: Vec<u64> = refused.iter().map(|r| r.0).collect();
            self.faults.rescues_mut().corrupt_records += refused.len() as u64;
            warn!(component = "buffer", code = "BUFFER_CORRUPT_RECORD", count = refused.len(),
                seqs = ?seqs, reason = why,
                "crash journal records that are not valid fixes set aside as dead letters; the others flow");
            self.faults.set_error(
                "BUFFER_CORRUPT_RECORD",
                ErrorClass::Permanent,
                format!(
                    "{} crash journal records set aside as dead letters (seqs {seqs:?}): {why}",
                    refused.len()
                ),
            );
        }
        if (replayed > 0 || !refused.is_empty() || !empty) && self.faults.writable() {
            // Empties the journal: the write that proves it usable again after a failure.
            self.sync_or_hold(now);
        }
        if retry && !self.journal.degraded() {
            info!(component = "buffer", "crash journal in use again");
        }
    }

    fn hold_in_ring(&mut self, fix: Fix) {
        if self.faults.hold(fix) {
            self.ledger.dropped_from_ring();
            warn!(
                code = "BUFFER_EVICTED",
                evicted = 1,
                held = self.faults.held().len(),
                "memory ring full while the disk fails, oldest held fix dropped"
            );
        }
    }

    /// Moves rows from `fixes` to `dead_letters` (`mv` returns how many) in a transaction of
    /// its own, keeping the counts.
    fn set_aside(
        &mut self,
        now: Instant,
        mv: impl FnOnce(&Connection) -> rusqlite::Result<u64>,
    ) -> rusqlite::Result<u64> {
        self.begin(now)?;
        let moved = mv(&self.conn)?;
        self.ledger.set_aside(moved);
        self.commit_open_with(now, false)?;
        Ok(moved)
    }

    /// Rows that cannot be read back into a fix (a damaged record inside a sound page):
    /// set aside as dead letters with their raw columns, so the queue behind them flows.
    fn set_aside_corrupt_rows(&mut self, rows: &[(u64, String)]) {
        let now = self.last_now;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let result = self.set_aside(now, |conn| {
            let mut moved = 0;
            for (seq, why) in rows {
                moved += file_ops::set_aside_corrupt_row(conn, *seq, why, now_ms)?;
            }
            Ok(moved)
        });
        match result {
            Ok(moved) => {
                self.faults.rescues_mut().corrupt_records += moved;
                let seqs: Vec<u64> = rows.iter().map(|r| r.0).collect();
                let message = format!(
                    "{moved} unreadable fix rows set aside as dead letters (seqs {seqs:?}): {}",
                    rows.first().map_or("", |r| r.1.as_str())
                );
                warn!(component = "buffer", code = "BUFFER_CORRUPT_RECORD", count = moved, seqs = ?seqs,
                    "unreadable buffer rows set aside as dead letters; the queue flows on");
                self.faults
                    .set_error("BUFFER_CORRUPT_RECORD", ErrorClass::Permanent, message);
                self.look(now);
            }
            Err(e) => {
                self.fail(e, "set aside corrupt rows", now);
            }
        }
    }
}

impl Drop for Buffer {
    /// A clean stop writes pending acknowledgements and syncs (the daemon calls
    /// [`Buffer::commit`] first and logs its result; this is the safety net).
    fn drop(&mut self) {
        if self.faults.writable()
            && (!self.deliveries.acked().is_empty() || self.schedule.is_dirty())
        {
            let now = self.last_now;
            self.flush_acks(now, true);
            if self.faults.writable() {
                let _ = self.sync_or_hold(now);
            }
        }
    }
}
