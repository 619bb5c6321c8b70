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
//! more system calls per fix.
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

mod error;
mod file_ops;
mod files;
mod journal;
mod rescue;
pub mod schema;
pub mod store;

pub use error::BufferError;
pub use file_ops::{file_stats, list_dead_letters, requeue_dead_letters, BufferStats, DeadLetter};
pub use schema::{open_existing, open_read_only, APPLICATION_ID, SCHEMA_VERSION};

use crate::clock::Clock;
use crate::config::{BufferSettings, EvictionPolicy};
use crate::error::{Classified, ErrorClass};
use crate::fix::Fix;
pub use crate::status::Rescues;
use crate::status::{BufferStatus, LastError, Status};
use error::{classify, failure_of, Failure};
use files::{Verdict, Watch};
use journal::Journal;
use rusqlite::{Connection, OptionalExtension};
use schema::{
    data_version, insert_fix, read_meta_u64, read_stream, row_to_fix, Unusable, FIX_COLUMNS,
};
use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
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
}

/// What [`Buffer::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The damaged file was renamed to this, and a new stream started.
    pub moved_aside: Option<PathBuf>,
    /// Why it was moved aside.
    pub corrupt_reason: Option<String>,
}

/// Numbers that move with each write; a copy as of the last commit is restored on rollback.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    last_seq: u64,
    /// Rows in `fixes` (acknowledged ones whose delete is still pending included).
    depth: u64,
    evicted: u64,
    dead_letters: u64,
}

/// The write transaction of one call.
#[derive(Debug, Default)]
struct OpenTx {
    /// Fixes appended in it, in seq order: kept so a failed commit loses none of them.
    fixes: Vec<Fix>,
    /// How many of `Buffer::acked` it deleted.
    acks_applied: usize,
    /// It deleted the row of the newest seq, so `meta.last_seq` must be written.
    deleted_newest: bool,
    /// The fixes `append` stored in it, with their seqs: unsynced once it commits.
    appended: Vec<StoredFix>,
    /// How many of `appended` have their row written. The journal holds each fix from the
    /// moment it is appended; its row is written with the others at the commit (ten rows in
    /// a row cost a fraction of ten written an epoch apart), or sooner when a statement needs
    /// it ([`Buffer::write_appended`]).
    written: usize,
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
    sync_interval: Duration,
    sync_max: usize,
    max_fixes: u64,
    max_bytes: u64,
    eviction: EvictionPolicy,
    memory_ring: usize,
    disk_retry: Duration,
    stream: String,
    /// As of the last commit: in the file, survives the process.
    committed: Counters,
    /// Inside the open transaction.
    current: Counters,
    /// Every seq up to this survives a power cut; only these are handed out.
    synced_seq: u64,
    /// Fixes committed since the last sync (at most `sync_max`): what a power cut could take,
    /// and what a damaged file still has in memory.
    unsynced: Vec<StoredFix>,
    /// The first commit not yet synced.
    dirty_since: Option<Instant>,
    /// `meta.evicted` as last written.
    persisted_evicted: u64,
    tx: Option<OpenTx>,
    /// Handed out and not yet resolved; acknowledged seqs stay here until their delete is
    /// committed, so they are not handed out again.
    in_flight: BTreeSet<u64>,
    /// Acknowledged; deleted by the next write transaction.
    acked: Vec<u64>,
    ack_since: Option<Instant>,
    /// Seqs of a previous stream still in flight at the uplink when the stream changed: their
    /// acks must not delete the new stream's fixes of the same numbers, so nothing new is
    /// handed out until they are resolved (or `STALE_WAIT` passed).
    stale: BTreeSet<u64>,
    stale_since: Option<Instant>,
    ring: VecDeque<Fix>,
    disk: Disk,
    /// The file's used pages passed `max_bytes` at the last sync.
    over_bytes: bool,
    /// The latest `now` a caller gave; stamps transactions opened by acks.
    last_now: Instant,
    /// Sticky until restart: a file moved aside or deleted under us.
    alarm: Status,
    last_error: Option<LastError>,
    /// `PRAGMA data_version` as last seen: it moves when another connection commits (the
    /// `buffer requeue` CLI next to the running daemon).
    data_version: i64,
    next_outside_check: Instant,
    /// The last append, and how late a sync or a look may be done so that it rides on the
    /// next epoch's wake: a little over the gap between the last two appends (the receiver's
    /// epoch), at most a quarter of the sync interval. [`Buffer::next_wake`] adds it, so the
    /// thread is not woken for a sync alone just before an epoch does the sync anyway.
    last_append_at: Option<Instant>,
    slack: Duration,
    watch: Watch,
    /// Frames in the WAL after the last commit (SQLite's WAL hook).
    wal_frames: Arc<AtomicI32>,
    checkpoint_frames: i32,
    /// SIGPWR: sync every commit until then.
    power_fail_until: Option<Instant>,
    /// The path was gone and writing the file back failed: try again then.
    restore_retry: Option<Instant>,
    /// The file is damaged and could not be moved aside yet.
    quarantine_due: Option<String>,
    /// Inside a rescue: a failure of the new file must not start another.
    rescuing: bool,
    /// Fixes that are gone for good: unreadable in a damaged file, or held only in memory
    /// when the agent stopped.
    lost: u64,
    rescues: Rescues,
    io: IoCounts,
    /// Stamps `last_error` (the wall clock of the agent's one clock).
    clock: Clock,
    looked_up: std::cell::Cell<Option<LookedUp>>,
    /// The crash journal: appended fixes survive the process through it while their
    /// transaction stays open until the sync. `None` when it could not be opened: then each
    /// fix is committed on its own.
    journal: Option<Journal>,
    /// A journal write failed: each fix is committed on its own until a sync empties it.
    journal_failed: bool,
    /// The last seq written to the journal (of the current stream).
    journaled_seq: u64,
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

/// How often [`Buffer::tick`] asks SQLite whether another process changed the file, and
/// looks whether the path still names it.
const OUTSIDE_CHECK: Duration = Duration::from_secs(1);
/// WAL frames after which a sync also checkpoints (SQLite's own default threshold).
const CHECKPOINT_FRAMES: i32 = 1000;
/// After SIGPWR every commit is synced for this long: the hold-up time of a supercap or a
/// UPS's warning, then the power is gone or back.
const POWER_FAIL_WINDOW: Duration = Duration::from_secs(30);
/// Longest wait for the uplink to resolve an old stream's seqs (a PUBACK or a disconnect
/// comes far sooner).
const STALE_WAIT: Duration = Duration::from_secs(60);

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
        let clock = Clock::system();
        let last_error = report.corrupt_reason.as_ref().map(|reason| {
            LastError::from_parts(
                "BUFFER_CORRUPT",
                ErrorClass::Critical,
                &format!(
                    "moved aside to {}: {reason}",
                    report
                        .moved_aside
                        .as_deref()
                        .unwrap_or(Path::new(""))
                        .display()
                ),
                clock.wall_ms(),
            )
        });
        let now = Instant::now();
        let mut buffer = Buffer {
            conn: opened.conn,
            path,
            sync_interval: cfg.commit_interval,
            sync_max: cfg.commit_max.get(),
            max_fixes: cfg.max_fixes.get(),
            max_bytes: cfg.max_bytes,
            eviction: cfg.eviction,
            memory_ring: cfg.memory_ring.get(),
            disk_retry: cfg.disk_retry,
            stream: opened.stream,
            committed: counters,
            current: counters,
            synced_seq: counters.last_seq,
            unsynced: Vec::new(),
            dirty_since: None,
            persisted_evicted: counters.evicted,
            tx: None,
            in_flight: BTreeSet::new(),
            acked: Vec::new(),
            ack_since: None,
            stale: BTreeSet::new(),
            stale_since: None,
            ring: VecDeque::new(),
            disk: Disk::Writable,
            over_bytes: false,
            last_now: now,
            alarm: if report.moved_aside.is_some() {
                Status::Unhealthy
            } else {
                Status::Healthy
            },
            last_error,
            data_version: opened.data_version,
            next_outside_check: now,
            last_append_at: None,
            slack: Duration::ZERO,
            watch: opened.watch,
            wal_frames: opened.wal_frames,
            checkpoint_frames: CHECKPOINT_FRAMES,
            power_fail_until: None,
            restore_retry: None,
            quarantine_due: None,
            rescuing: false,
            lost: 0,
            rescues: Rescues::default(),
            io: IoCounts::default(),
            clock,
            looked_up: std::cell::Cell::new(None),
            journal: None,
            journal_failed: false,
            journaled_seq: 0,
        };
        buffer.replay_journal(now);
        Ok((buffer, report))
    }

    /// Stamp errors with the agent's clock (the daemon's, or a test's).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
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
        self.committed.last_seq.max(self.journaled_seq)
    }

    /// The last seq synced: it survives a power cut, and fixes up to it are handed out.
    pub fn synced_seq(&self) -> u64 {
        self.synced_seq
    }

    /// Stores a fix: in the crash journal at once (it survives the process), committed and
    /// synced when the interval, `commit_max` or a power failure says so. Never loses it on a
    /// disk failure: it then waits in the memory ring.
    pub fn append(&mut self, fix: &Fix, now: Instant) -> Result<Appended, BufferError> {
        self.last_now = now;
        if let Some(before) = self.last_append_at {
            // A quarter over the gap: epochs jitter.
            let gap = now.saturating_duration_since(before);
            self.slack = (gap + gap / 4).min(self.sync_interval / 4);
        }
        self.last_append_at = Some(now);
        if self.disk != Disk::Writable || !self.ring.is_empty() {
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
            if self.journal_append(seq, fix) {
                // In the journal: it survives the process; SQLite commits at the sync.
                self.dirty_since.get_or_insert(now);
            } else {
                self.commit_open(now)?;
            }
            Ok(seq)
        })();
        match result {
            Ok(seq) => {
                let stream_before = self.rescues.quarantined;
                self.look_open(now);
                let synced_upto = if self.disk == Disk::Writable && self.sync_due(now) {
                    self.sync_or_hold(now)
                } else {
                    None
                };
                // A quarantine renumbered it in a new stream.
                let seq = (self.rescues.quarantined == stream_before).then_some(seq);
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
        self.expire_stale(now);
        if self.disk != Disk::Writable {
            return Ok(self.retry_disk(now, false));
        }
        if self.restore_retry.is_some_and(|at| now >= at) {
            self.look(now);
        }
        if now >= self.next_outside_check {
            self.next_outside_check = now + OUTSIDE_CHECK;
            self.notice_outside_writes();
            // Without fixes there are no commits to look after: look once a second anyway.
            self.look(now);
        }
        let acks_due = self.ack_since.is_some_and(|t| {
            now.saturating_duration_since(t) >= self.sync_interval
                || self.acked.len() >= self.sync_max
        });
        if acks_due {
            self.flush_acks(now);
        }
        if self.disk == Disk::Writable && self.sync_due(now) {
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
        let slack = self.slack;
        let mut at = self.next_outside_check + slack;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                at = at.min(t);
            }
        };
        consider(self.dirty_since.map(|t| t + self.sync_interval + slack));
        consider(self.ack_since.map(|t| t + self.sync_interval + slack));
        consider(self.stale_since.map(|t| t + STALE_WAIT));
        consider(self.restore_retry);
        if let Disk::Failing { next_retry } = self.disk {
            consider(Some(next_retry));
        }
        if self.power_fail_until.is_some() && self.dirty_since.is_some() {
            consider(Some(self.last_now));
        }
        at
    }

    /// Power is failing (SIGPWR): sync now, and every commit for the next 30 s. Returns the
    /// synced seq.
    pub fn power_fail(&mut self, now: Instant) -> Option<u64> {
        self.last_now = now;
        self.power_fail_until = Some(now + POWER_FAIL_WINDOW);
        if self.disk != Disk::Writable {
            return self.retry_disk(now, true);
        }
        self.flush_acks(now);
        self.sync_or_hold(now)
    }

    /// Makes everything durable now (shutdown): pending acknowledgements, the memory ring
    /// (one more try of a failing disk, or of writing a deleted file back), a sync. Errors
    /// if fixes are left in memory only.
    pub fn commit(&mut self) -> Result<Option<u64>, BufferError> {
        let now = self.last_now;
        if self.restore_retry.is_some() {
            self.restore_retry = Some(now);
            self.look(now);
        }
        let synced = if self.disk != Disk::Writable {
            self.retry_disk(now, true)
        } else {
            self.flush_acks(now);
            if self.disk == Disk::Writable {
                self.sync_or_hold(now)
            } else {
                None
            }
        };
        if !self.ring.is_empty() {
            return Err(BufferError::DiskFull {
                path: self.path.clone(),
                detail: self
                    .last_error
                    .as_ref()
                    .map_or_else(String::new, |e| e.message.clone()),
            });
        }
        if self.restore_retry.is_some() {
            return Err(BufferError::FileGone {
                path: self.path.clone(),
                detail: "the open file could not be written back to its path".into(),
            });
        }
        Ok(synced)
    }

    /// Acknowledgements whose deletes no commit has written yet.
    pub fn acks_waiting(&self) -> usize {
        self.acked.len()
    }

    /// Fixes that would be lost if the process ended now: those held in memory only, and
    /// the whole file while it could not be written back to its path.
    pub fn at_risk(&self) -> u64 {
        let file = if self.restore_retry.is_some() {
            self.current.depth.saturating_sub(self.acks_unapplied())
        } else {
            0
        };
        self.ring.len() as u64 + file
    }

    /// The agent stops and cannot keep what [`at_risk`](Self::at_risk) counts (the disk
    /// still fails, or the file could not be written back): counts them as lost, forgets
    /// the ring, and returns how many.
    pub fn abandon(&mut self) -> u64 {
        let n = self.at_risk();
        self.ring.clear();
        self.lost += n;
        n
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
        if !self.stale.is_empty() {
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
            let mut rows = stmt.query([self.synced_seq.min(i64::MAX as u64) as i64])?;
            while out.len() < limit {
                let Some(row) = rows.next()? else {
                    break;
                };
                // Fixes in flight are the oldest pending ones, met on every scan: skip them
                // on their seq alone rather than decoding each (most of the uplink's CPU at
                // 10 Hz).
                let seq: i64 = row.get(0)?;
                if self.in_flight.contains(&(seq.max(0) as u64)) {
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
        self.in_flight.extend(out.iter().map(|s| s.seq));
        Ok(())
    }

    /// The broker has these: they leave the buffer with the next write (a crash before it
    /// only means they are sent again).
    pub fn ack(&mut self, seqs: &[u64]) -> Result<(), BufferError> {
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
            self.ack_since.get_or_insert(self.last_now);
        }
        if self.acked.len() >= self.sync_max && self.disk == Disk::Writable {
            let now = self.last_now;
            self.flush_acks(now);
        }
        Ok(())
    }

    /// Not delivered (disconnect): back to pending, sent again by the next batch.
    pub fn release(&mut self, seqs: &[u64]) {
        for seq in seqs {
            self.stale.remove(seq);
            if !self.acked.contains(seq) {
                self.in_flight.remove(seq);
            }
        }
    }

    /// The broker will never take these: move them to `dead_letters` with a code and reason.
    pub fn dead_letter(
        &mut self,
        seqs: &[u64],
        code: &str,
        reason: &str,
    ) -> Result<(), BufferError> {
        let seqs: Vec<u64> = seqs
            .iter()
            .copied()
            .filter(|seq| {
                self.in_flight.remove(seq);
                !self.stale.remove(seq)
            })
            .collect();
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
        self.flush_acks(now);
        if self.disk != Disk::Writable {
            return Err(BufferError::DiskFull {
                path: self.path.clone(),
                detail: "requeue needs a writable disk".into(),
            });
        }
        let n = file_ops::requeue_dead_letters(&self.conn, &self.path)?;
        for c in [&mut self.current, &mut self.committed] {
            c.depth += n;
            c.dead_letters = c.dead_letters.saturating_sub(n);
        }
        self.dirty_since.get_or_insert(now);
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
        let depth_delta = depth as i64 - self.current.depth as i64;
        let letters_delta = dead_letters as i64 - self.current.dead_letters as i64;
        // The outside commit is in the file, synced by its own connection (FULL).
        self.dirty_since.get_or_insert(self.last_now);
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
        s.last_seq = s.last_seq.max(self.current.last_seq);
        s.evicted = self.current.evicted;
        s.dead_letters = self.current.dead_letters;
        s.in_flight = Some(self.in_flight.len().saturating_sub(self.acked.len()) as u64);
        s.in_memory = Some(self.ring.len() as u64);
        s.lost = Some(self.lost);
        Ok(s)
    }

    /// Fixes waiting for the broker: in the file (less those acknowledged) and in memory.
    fn depth(&self) -> u64 {
        self.current.depth.saturating_sub(self.acks_unapplied()) + self.ring.len() as u64
    }

    /// Acknowledged seqs whose rows are still counted in `current.depth`: those the open
    /// transaction has not deleted yet (it stays open across appends until the sync).
    fn acks_unapplied(&self) -> u64 {
        let applied = self.tx.as_ref().map_or(0, |tx| tx.acks_applied);
        self.acked.len().saturating_sub(applied) as u64
    }

    /// Fixes lost for good so far (see [`Buffer::abandon`] and the rescue of a damaged
    /// file).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// How often the file had to be rescued while running.
    pub fn rescues(&self) -> Rescues {
        self.rescues
    }

    /// The buffer's own judgement of itself: healthy; degraded while fixes wait in memory
    /// or after the file was written back; unhealthy after a damaged file was moved aside
    /// or while a rescue is pending.
    fn condition(&self) -> Status {
        let transient = if self.disk != Disk::Writable || !self.ring.is_empty() {
            Status::Degraded
        } else {
            Status::Healthy
        };
        // The fixes are safe only while the agent runs.
        let unrescued = if self.restore_retry.is_some() || self.quarantine_due.is_some() {
            Status::Unhealthy
        } else {
            Status::Healthy
        };
        self.alarm.max(transient).max(unrescued)
    }

    /// What moves the buffer's published status, cheaply (no SQL, no `stat`): when it
    /// differs from the last one published, the status is published again.
    pub fn status_key(&self) -> StatusKey {
        StatusKey {
            condition: self.condition(),
            depth: self.depth(),
            in_memory: self.ring.len() as u64,
            evicted: self.current.evicted,
            dead_letters: self.current.dead_letters,
            lost: self.lost,
            rescues: self.rescues,
            error: self.last_error.as_ref().map(|e| (e.code, e.at_ms)),
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
                    .or_else(|| self.ring.front().map(|f| f.time_ms)),
                Err(e) => {
                    debug!(component = "buffer", error = %e, "oldest fix unreadable");
                    self.ring.front().map(|f| f.time_ms)
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
        BufferStatus {
            condition: self.condition(),
            depth,
            in_memory: self.ring.len() as u64,
            oldest_time_ms: looked.oldest_time_ms.filter(|_| depth > 0),
            evicted: self.current.evicted,
            dead_letters: self.current.dead_letters,
            bytes: looked.bytes,
            lost: self.lost,
            rescues: self.rescues,
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

    /// Commits, syncs and checkpoints so far.
    pub fn io_counts(&self) -> IoCounts {
        self.io
    }

    /// Test knob: checkpoint at a sync once the WAL holds `frames` frames (power-cut tests
    /// exercise checkpoints and WAL restarts within a short run).
    #[doc(hidden)]
    pub fn set_checkpoint_frames(&mut self, frames: i32) {
        self.checkpoint_frames = frames.max(1);
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
        if self.acked.is_empty() {
            return Ok(());
        }
        let mut gone = 0u64;
        {
            let mut stmt = self
                .conn
                .prepare_cached("DELETE FROM fixes WHERE seq = ?1")?;
            for &seq in &self.acked {
                gone += stmt.execute([seq.min(i64::MAX as u64) as i64])? as u64;
            }
        }
        self.current.depth = self.current.depth.saturating_sub(gone);
        let newest = self.current.last_seq;
        let deleted_newest = self.acked.contains(&newest);
        if let Some(tx) = self.tx.as_mut() {
            tx.acks_applied = self.acked.len();
            tx.deleted_newest |= deleted_newest;
        }
        Ok(())
    }

    /// Writes the acknowledged deletes now, in a transaction of their own.
    fn flush_acks(&mut self, now: Instant) {
        if self.acked.is_empty() || self.disk != Disk::Writable {
            return;
        }
        let result = self.begin(now).and_then(|()| self.commit_open(now));
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
        self.current.last_seq += 1;
        self.current.depth += 1;
        Ok(self.current.last_seq)
    }

    /// Capacity policy, before a fix is stored: the N+1th fix evicts. Fixes in flight may be
    /// evicted too (counted); a later ack or release of their seq is then a no-op.
    fn make_room(&mut self) -> rusqlite::Result<()> {
        let over_count = self.current.depth >= self.max_fixes;
        if !over_count && !self.over_bytes {
            return Ok(());
        }
        // Eviction picks the oldest rows: every fix counted in the depth has its row first.
        self.write_appended()?;
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
            if self.current.depth == 0 {
                if let Some(tx) = self.tx.as_mut() {
                    tx.deleted_newest = true;
                }
            }
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
        // At every sync: kept prepared.
        let (pages, free, size): (i64, i64, i64) = self
            .conn
            .prepare_cached(
                "SELECT (SELECT page_count FROM pragma_page_count),
                    (SELECT freelist_count FROM pragma_freelist_count),
                    (SELECT page_size FROM pragma_page_size)",
            )?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok((pages - free).max(0) as u64 * size.max(0) as u64)
    }

    /// Commits the open transaction: from here it survives the process.
    fn commit_open(&mut self, now: Instant) -> rusqlite::Result<()> {
        self.write_appended()?;
        let Some(tx) = self.tx.as_ref() else {
            return Ok(());
        };
        if tx.deleted_newest || self.current.evicted != self.persisted_evicted {
            let mut stmt = self
                .conn
                .prepare_cached("UPDATE meta SET value = ?2 WHERE key = ?1")?;
            stmt.execute(rusqlite::params!["last_seq", self.current.last_seq as i64])?;
            stmt.execute(rusqlite::params!["evicted", self.current.evicted as i64])?;
        }
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.io.commits += 1;
        let mut tx = self.tx.take().unwrap_or_default();
        self.unsynced.append(&mut tx.appended);
        for seq in self.acked.drain(..tx.acks_applied.min(self.acked.len())) {
            self.in_flight.remove(&seq);
        }
        if self.acked.is_empty() {
            self.ack_since = None;
        }
        self.committed = self.current;
        self.persisted_evicted = self.current.evicted;
        self.dirty_since.get_or_insert(now);
        Ok(())
    }

    fn sync_due(&self, now: Instant) -> bool {
        let Some(since) = self.dirty_since else {
            return false;
        };
        let open = self.tx.as_ref().map_or(0, |tx| tx.appended.len());
        now.saturating_duration_since(since) >= self.sync_interval
            || self.unsynced.len() + open >= self.sync_max
            || self.power_fail_until.is_some_and(|until| now < until)
    }

    /// Syncs the WAL (and checkpoints when it is long). Returns the synced seq, or `None`
    /// when the sync failed (the disk is then failing).
    fn sync_or_hold(&mut self, now: Instant) -> Option<u64> {
        // The fixes the journal holds go into the file first, in one transaction.
        if self.commit_pending(now).is_err() {
            return None;
        }
        let verdict = self.watch.check_all(&self.path);
        if verdict != Verdict::Fine && self.restore_retry.is_none_or(|at| now >= at) {
            // The rescue leaves a new, synced file behind, or the old one to retry.
            self.on_verdict(verdict, now);
            if self.disk != Disk::Writable {
                return None;
            }
        }
        if let Err(source) = self.watch.sync_wal() {
            self.fail_sync(source, now);
            return None;
        }
        self.io.syncs += 1;
        self.dirty_since = None;
        self.synced_seq = self.committed.last_seq;
        self.unsynced.clear();
        self.clear_journal();
        // The files' sizes bound the pages in use: SQLite is asked only near the limit.
        self.over_bytes = self.watch.bytes_seen() > self.max_bytes
            && self
                .used_bytes()
                .map(|u| u > self.max_bytes)
                .unwrap_or(false);
        if self.wal_frames.load(Ordering::Relaxed) >= self.checkpoint_frames {
            self.checkpoint(now);
        }
        Some(self.synced_seq)
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
                let left = (log - done).clamp(0, i64::from(i32::MAX)) as i32;
                self.wal_frames.store(left, Ordering::Relaxed);
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
        if self.rescuing
            || self.quarantine_due.is_some()
            || self.restore_retry.is_some_and(|at| now < at)
        {
            return;
        }
        let verdict = self.watch.check_open();
        if verdict != Verdict::Fine {
            self.on_verdict(verdict, now);
        }
    }

    /// After a commit: is the path still our file? One `stat`.
    fn look(&mut self, now: Instant) {
        if self.rescuing
            || self.quarantine_due.is_some()
            || self.restore_retry.is_some_and(|at| now < at)
        {
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
        if let Disk::Failing { next_retry } = self.disk {
            if !force && now < next_retry {
                return None;
            }
        }
        if let Some(reason) = self.quarantine_due.take() {
            self.quarantine(reason, now);
            if self.quarantine_due.is_some() {
                return None;
            }
        }
        let mut seqs = Vec::with_capacity(self.ring.len());
        let result = (|| {
            self.begin(now)?;
            for i in 0..self.ring.len() {
                let Some(fix) = self.ring.get(i).copied() else {
                    break;
                };
                seqs.push(self.insert(&fix)?);
            }
            self.commit_open(now)
        })();
        match result {
            Ok(()) => {
                let flushed = self.ring.len();
                if self.unsynced.len() + flushed <= self.sync_max {
                    self.unsynced.extend(
                        seqs.iter()
                            .zip(self.ring.iter())
                            .map(|(&seq, &fix)| StoredFix { seq, fix }),
                    );
                }
                self.ring.clear();
                self.disk = Disk::Writable;
                info!(path = %self.path.display(), flushed, committed_seq = self.committed.last_seq,
                    "buffer disk writable again, memory ring flushed");
                self.look(now);
                if self.disk == Disk::Writable {
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
        self.disk_failing(&err, now);
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
        self.disk_failing(&err, now);
    }

    fn disk_failing(&mut self, err: &BufferError, now: Instant) {
        self.disk = Disk::Failing {
            next_retry: now + self.disk_retry,
        };
        warn!(code = err.code(), path = %self.path.display(), held = self.ring.len(), error = %err,
            "buffer write failed; fixes held in memory until the disk works again");
        self.set_error(err.code(), err.class(), err.to_string());
    }

    fn set_error(&mut self, code: &'static str, class: ErrorClass, message: String) {
        self.last_error = Some(LastError::from_parts(
            code,
            class,
            &message,
            self.clock.wall_ms(),
        ));
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

    /// Counts a fix in the open transaction and keeps it there twice: for the ring if the
    /// transaction fails, for `unsynced` once it commits. Its row is written at the commit,
    /// or sooner when a statement needs it ([`Buffer::write_appended`]). Returns its seq.
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
            return Ok(());
        }
        self.commit_open(now)
            .map_err(|e| self.fail(e, "commit", now))
    }

    /// Writes the appended fix to the crash journal. `false` when there is none, or it failed
    /// (then the fix's transaction must commit now, and each fix after it until a sync
    /// empties the journal).
    fn journal_append(&mut self, seq: u64, fix: &Fix) -> bool {
        if self.journal_failed {
            return false;
        }
        let Some(journal) = self.journal.as_mut() else {
            return false;
        };
        match journal.append(seq, fix) {
            Ok(()) => {
                self.journaled_seq = seq;
                true
            }
            Err(e) => {
                warn!(component = "buffer", path = %journal.path().display(), error = %e,
                    "crash journal write failed; committing each fix until the next sync");
                self.journal_failed = true;
                false
            }
        }
    }

    /// After a sync: everything the journal held is durable in the file (unless fixes wait in
    /// the ring, which the journal may still be the only copy of on disk).
    fn clear_journal(&mut self) {
        if self.tx.is_some() || !self.ring.is_empty() {
            return;
        }
        let Some(journal) = self.journal.as_mut() else {
            return;
        };
        match journal.clear().and_then(|()| journal.mend()) {
            Ok(mended) => {
                self.journal_failed = false;
                if let Some(what) = mended {
                    warn!(component = "buffer", path = %journal.path().display(), what,
                        "crash journal changed from outside; made whole again");
                }
            }
            Err(e) => {
                // It would only grow: commit each fix on its own from here.
                warn!(component = "buffer", path = %journal.path().display(), error = %e,
                    "crash journal cannot be emptied or made whole; committing each fix on its own");
                self.journal = None;
            }
        }
    }

    /// A new stream began (a damaged file was replaced): the journal's next records are its.
    pub(super) fn journal_new_stream(&mut self) {
        self.journaled_seq = 0;
        if let Some(journal) = self.journal.as_mut() {
            journal.set_stream(&self.stream);
        }
    }

    /// At open: the fixes a crash left in the journal and not in the file go in, then a
    /// sync empties it. Records of this stream the file already has are skipped; records of
    /// another stream (the file was replaced since) or after a gap are stored as new fixes,
    /// with the next seqs, rather than lost.
    fn replay_journal(&mut self, now: Instant) {
        // Room for a sync interval's fixes, and some over for the appends of a failing sync.
        let room = self.sync_max.saturating_add(64);
        let (journal, found) = match Journal::open(&self.path, &self.stream, room) {
            Ok(opened) => opened,
            Err(e) => {
                warn!(component = "buffer", path = %journal::path_of(&self.path).display(),
                    error = %e, "crash journal unusable; committing each fix on its own");
                return;
            }
        };
        let tag = journal.tag();
        let empty = journal.is_empty();
        self.journal = Some(journal);
        let last = self.committed.last_seq;
        let (mut replayed, mut renumbered) = (0u64, 0u64);
        let mut pending = found
            .iter()
            .filter(|(t, seq, _)| *t != tag || *seq > last)
            .peekable();
        if pending.peek().is_some() {
            let result = (|| -> rusqlite::Result<()> {
                self.begin(now)?;
                for (t, seq, fix) in pending {
                    if *t != tag || *seq != self.current.last_seq + 1 {
                        renumbered += 1;
                    }
                    self.insert_appended(fix)?;
                    replayed += 1;
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
                last_seq = self.committed.last_seq,
                "fixes the crash journal held stored in the buffer"
            );
        }
        if (replayed > 0 || !empty) && self.disk == Disk::Writable {
            self.sync_or_hold(now);
        }
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

    fn expire_stale(&mut self, now: Instant) {
        if self.stale.is_empty() {
            self.stale_since = None;
        } else if self
            .stale_since
            .is_some_and(|t| now.saturating_duration_since(t) >= STALE_WAIT)
        {
            warn!(component = "buffer", seqs = self.stale.len(),
                "an old stream's fixes were never resolved by the uplink; handing out the new stream");
            self.stale.clear();
            self.stale_since = None;
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
        self.current.depth = self.current.depth.saturating_sub(moved);
        self.current.dead_letters += moved;
        self.commit_open(now)?;
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
                self.rescues.corrupt_records += moved;
                let seqs: Vec<u64> = rows.iter().map(|r| r.0).collect();
                let message = format!(
                    "{moved} unreadable fix rows set aside as dead letters (seqs {seqs:?}): {}",
                    rows.first().map_or("", |r| r.1.as_str())
                );
                warn!(component = "buffer", code = "BUFFER_CORRUPT_RECORD", count = moved, seqs = ?seqs,
                    "unreadable buffer rows set aside as dead letters; the queue flows on");
                self.set_error("BUFFER_CORRUPT_RECORD", ErrorClass::Permanent, message);
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
        if self.disk == Disk::Writable && (!self.acked.is_empty() || self.dirty_since.is_some()) {
            let now = self.last_now;
            self.flush_acks(now);
            if self.disk == Disk::Writable {
                let _ = self.sync_or_hold(now);
            }
        }
    }
}
