//! The buffer as the running agent shares it: one [`Store`] behind a mutex, written by the
//! ingest thread and drained by the uplink (`crate::uplink::link::Link`).
//!
//! The store also covers a disk that cannot be opened at all at startup (read-only file
//! system, missing mount): accepted fixes then wait in a bounded queue in memory
//! (`memory_ring` fixes, oldest dropped and counted when full) and the open is retried every
//! `disk_retry_s`; nothing is published before it is written to the buffer file.
//!
//! The store publishes the buffer's [`BufferStatus`](crate::status::BufferStatus) on the
//! status board after every change (an append, a commit, an ack, an open): whoever changed it
//! calls [`Store::publish`], under the lock it already holds; nobody polls it.

use super::{Buffer, BufferError};
use crate::config::BufferSettings;
use crate::error::Classified;
use crate::fix::Fix;
use crate::status::{LastError, Status, StatusBoard};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::Notify;
use tracing::{error, warn};

/// The buffer file, or the queue that waits for it.
pub struct Store {
    cfg: BufferSettings,
    buffer: Option<Buffer>,
    /// Fixes accepted while the file could not be opened; bounded by `memory_ring`.
    waiting: VecDeque<Fix>,
    /// Fixes dropped from `waiting` because it was full.
    dropped_waiting: u64,
    /// Accepted fixes for the local history while the file could not be opened; bounded by
    /// `memory_ring` too.
    waiting_history: VecDeque<Fix>,
    /// Fixes dropped from `waiting_history` because it was full: the history's count of
    /// `memory` drops once the file is open (handed to it then).
    dropped_waiting_history: u64,
    next_open_at: Instant,
    /// The last failure to open the file, stamped when it happened.
    open_error: Option<LastError>,
    board: StatusBoard,
    /// Something changed since the last [`Store::publish`].
    changed: bool,
    /// The buffer's status key as last published: a change the store did not cause (a
    /// rescue found by a tick, acknowledgements written with the next fix) shows in it.
    published_key: Option<super::StatusKey>,
    /// Fixes of `waiting` given up at shutdown.
    lost_waiting: u64,
    /// The stream as last published, for the uplink to read without the store's lock
    /// (which the ingest thread holds across a sync).
    stream_cell: Arc<Mutex<String>>,
}

/// What [`Store::close`] could not keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closed {
    /// Fixes held only in memory (or in a file no longer at its path) when the agent
    /// stopped: gone with the process. Counted in `lost`.
    pub lost: u64,
    /// Why they could not be written: (code, message).
    pub cause: Option<(&'static str, String)>,
}

impl Store {
    /// Opens the buffer file, or starts without it (and keeps trying) when it cannot be
    /// opened. Never fails: an agent without a disk still collects fixes.
    pub fn open(cfg: BufferSettings, board: StatusBoard, now: Instant) -> Store {
        let mut store = Store {
            cfg,
            buffer: None,
            waiting: VecDeque::new(),
            dropped_waiting: 0,
            waiting_history: VecDeque::new(),
            dropped_waiting_history: 0,
            next_open_at: now,
            open_error: None,
            board,
            changed: true,
            published_key: None,
            lost_waiting: 0,
            stream_cell: Arc::new(Mutex::new(String::new())),
        };
        store.try_open(now);
        store.publish();
        store
    }

    fn try_open(&mut self, now: Instant) {
        match Buffer::open(&self.cfg) {
            Ok((buffer, report)) => {
                if let Some(moved) = &report.moved_aside {
                    error!(
                        component = "buffer",
                        code = "BUFFER_CORRUPT",
                        class = "critical",
                        moved_to = %moved.display(),
                        reason = report.corrupt_reason.as_deref().unwrap_or(""),
                        "damaged buffer file moved aside; a new stream begins"
                    );
                }
                self.buffer = Some(buffer.with_clock(self.board.clock().clone()));
                self.open_error = None;
                self.flush_waiting(now);
            }
            Err(e) => {
                warn!(
                    component = "buffer",
                    code = e.code(),
                    class = e.class().as_str(),
                    path = %self.cfg.path.display(),
                    error = %e,
                    "buffer file cannot be opened; holding fixes in memory"
                );
                self.open_error = Some(self.board.error_now(&e));
                self.next_open_at = now + self.cfg.disk_retry;
            }
        }
        self.changed = true;
    }

    fn flush_waiting(&mut self, now: Instant) {
        let Some(buffer) = self.buffer.as_mut() else {
            return;
        };
        buffer.history_dropped_unopened(std::mem::take(&mut self.dropped_waiting_history));
        while let Some(fix) = self.waiting_history.pop_front() {
            buffer.remember(&fix, now);
        }
        while let Some(fix) = self.waiting.pop_front() {
            if let Err(e) = buffer.append(&fix, now) {
                // The buffer keeps such fixes in its own ring; only log.
                warn!(component = "buffer", code = e.code(), error = %e, "append failed");
            }
        }
    }

    /// Store an accepted fix (or queue it while there is no file). Returns the seq synced up
    /// to when this call synced (fixes up to it may be published).
    pub fn append(&mut self, fix: &Fix, now: Instant) -> Result<Option<u64>, BufferError> {
        self.changed = true;
        match self.buffer.as_mut() {
            Some(buffer) => buffer.append(fix, now).map(|a| a.synced_upto),
            None => {
                if self.waiting.len() >= self.cfg.memory_ring.get() {
                    self.waiting.pop_front();
                    self.dropped_waiting += 1;
                }
                self.waiting.push_back(*fix);
                Ok(None)
            }
        }
    }

    /// An accepted fix for the local history (every one, kept for sending or not): see
    /// [`Buffer::remember`]. Held in memory while there is no file.
    pub fn remember(&mut self, fix: &Fix, now: Instant) {
        match self.buffer.as_mut() {
            Some(buffer) => buffer.remember(fix, now),
            None if self.cfg.history.keep.is_some() => {
                if self.waiting_history.len() >= self.cfg.memory_ring.get() {
                    self.waiting_history.pop_front();
                    self.dropped_waiting_history += 1;
                    self.changed = true;
                }
                self.waiting_history.push_back(*fix);
            }
            None => {}
        }
    }

    /// Sync when due, retries of a failing disk or a missing file.
    pub fn tick(&mut self, now: Instant) -> Result<Option<u64>, BufferError> {
        if self.buffer.is_none() && now >= self.next_open_at {
            self.try_open(now);
        }
        let ticked = match self.buffer.as_mut() {
            Some(b) => b.tick(now),
            None => Ok(None),
        };
        if !matches!(ticked, Ok(None)) {
            self.changed = true;
        }
        ticked
    }

    /// When [`Store::tick`] next has something to do (see [`Buffer::next_wake`]); without a
    /// file, when opening it is tried again.
    pub fn next_wake(&self) -> Instant {
        match &self.buffer {
            Some(b) => b.next_wake(),
            None => self.next_open_at,
        }
    }

    /// Make everything durable now (acknowledgements, a sync); errors if fixes are left in
    /// memory only.
    pub fn commit(&mut self) -> Result<Option<u64>, BufferError> {
        self.changed = true;
        match self.buffer.as_mut() {
            Some(b) => b.commit(),
            None => Ok(None),
        }
    }

    /// Power is failing (SIGPWR): sync now and every fix for a while. Returns the synced seq.
    pub fn power_fail(&mut self, now: Instant) -> Option<u64> {
        self.changed = true;
        self.buffer.as_mut().and_then(|b| b.power_fail(now))
    }

    /// Shutdown: one more try of the file (open it, or write the memory ring to it), then
    /// make everything durable. What is still only in memory is lost with the process:
    /// counted and returned.
    pub fn close(&mut self, now: Instant) -> Closed {
        self.changed = true;
        if self.buffer.is_none() {
            self.try_open(now);
        }
        match self.buffer.as_mut() {
            Some(b) => match b.commit() {
                Ok(_) => Closed::default(),
                Err(e) => Closed {
                    lost: b.abandon(),
                    cause: Some((e.code(), e.to_string())),
                },
            },
            None => {
                let lost = self.waiting.len() as u64;
                self.waiting.clear();
                self.lost_waiting += lost;
                Closed {
                    lost,
                    cause: self
                        .open_error
                        .as_ref()
                        .map(|e| (e.code, e.message.clone())),
                }
            }
        }
    }

    /// Fixes lost for good: the buffer's (damaged file, memory at shutdown) and the queue's.
    pub fn lost(&self) -> u64 {
        self.buffer.as_ref().map_or(0, Buffer::lost) + self.lost_waiting
    }

    /// The buffer, for the uplink's batches, acks and dead letters.
    pub fn buffer_mut(&mut self) -> Option<&mut Buffer> {
        self.buffer.as_mut()
    }

    /// What is waiting changed outside the store's own calls (an ack, a dead letter): the
    /// next [`Store::publish`] sends it.
    pub fn mark_changed(&mut self) {
        self.changed = true;
    }

    pub fn stream(&self) -> Option<String> {
        self.buffer.as_ref().map(|b| b.stream().to_owned())
    }

    /// Fixes waiting (file and memory), for the log line at shutdown.
    pub fn depth(&self) -> u64 {
        match &self.buffer {
            Some(b) => b.status().depth,
            None => self.waiting.len() as u64,
        }
    }

    /// Publish the buffer's status on the board if anything changed since the last time.
    pub fn publish(&mut self) {
        {
            let stream = self.buffer.as_ref().map_or("", |b| b.stream());
            let mut cell = self.stream_cell.lock().unwrap_or_else(|p| p.into_inner());
            if *cell != stream {
                stream.clone_into(&mut cell);
            }
        }
        let key = self.buffer.as_ref().map(Buffer::status_key);
        let moved = key != self.published_key;
        if !std::mem::take(&mut self.changed) && !moved {
            return;
        }
        self.published_key = key;
        let status = match &self.buffer {
            Some(b) => b.status(),
            None => crate::status::BufferStatus {
                condition: Status::Degraded,
                depth: self.waiting.len() as u64,
                in_memory: self.waiting.len() as u64,
                oldest_time_ms: self.waiting.front().map(|f| f.time_ms),
                evicted: self.dropped_waiting,
                last_error: self.open_error.clone(),
                history: super::history::unopened_status(
                    &self.cfg.history,
                    self.dropped_waiting_history,
                ),
                ..Default::default()
            },
        };
        let (dropped, lost_waiting) = (self.dropped_waiting, self.lost_waiting);
        let has_file = self.buffer.is_some();
        self.board.buffer(|b| {
            *b = status;
            if has_file {
                b.evicted += dropped;
            }
            b.lost += lost_waiting;
        });
    }
}

/// The store, shared between the ingest thread and the uplink.
#[derive(Clone)]
pub struct SharedStore {
    inner: Arc<Mutex<Store>>,
    /// Woken when fixes were committed (the uplink may have something new).
    committed: Arc<Notify>,
    /// The buffer's stream as the store last published it ("" without a file).
    stream: Arc<Mutex<String>>,
}

impl SharedStore {
    pub fn new(store: Store) -> Self {
        let stream = Arc::clone(&store.stream_cell);
        SharedStore {
            inner: Arc::new(Mutex::new(store)),
            committed: Arc::new(Notify::new()),
            stream,
        }
    }

    /// The buffer's stream as last published (after each pass of the ingest thread), read
    /// without waiting for the store: for the uplink's runtime thread, which must not wait
    /// for an `fdatasync`. It may lag a stream change by one pass; the store itself is the
    /// judge of which fixes a stream may take (see `Link`).
    pub fn stream(&self) -> String {
        self.stream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The store. A panic elsewhere while holding the lock leaves SQLite's own state
    /// consistent (transactions), so a poisoned lock is used as it is.
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tell the uplink that new fixes may be ready.
    pub fn notify_committed(&self) {
        self.committed.notify_one();
    }

    /// Resolves when fixes were committed since the last call (or spuriously).
    pub async fn committed(&self) {
        self.committed.notified().await;
    }
}
