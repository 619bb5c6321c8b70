//! Sources: where receiver bytes come from, a serial port ([`serial`]) or a replayed log
//! ([`file`]), in one common shape.
//!
//! A source hands fixed-size byte chunks ([`Chunk`], no heap) to its consumer, which feeds
//! them to the [`Pipeline`](crate::pipeline::Pipeline): a serial port is read in the
//! consumer's own thread ([`serial::direct`]: one wake per epoch), a log file by a reader
//! thread of its own through a bounded `sync_channel` ([`file::spawn`]). Either way it keeps
//! its condition in a shared [`SourceStatus`]
//! (connected, outages, stuck events, last error, per-code error counts) for health
//! reporting. A source never decodes and never decides what a fix is: the receiver's time
//! the serial port's stuck watch needs is handed to each read by the consumer, whose
//! pipeline owns it. It stops promptly when its stop flag is raised or its consumer hangs
//! up.

pub mod file;
pub mod serial;
pub mod stuck;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::error::{ErrorCounts, GnssError};
use crate::clock::Clock;
use crate::error::Classified;
use crate::status::LastError;

/// Bytes per chunk: a whole epoch of a busy multi-constellation receiver (a dozen sentences),
/// so the consumer wakes once an epoch.
pub const CHUNK_LEN: usize = 1024;

/// A piece of the byte stream. Fixed capacity, `Clone`, never on the heap.
pub type Chunk = heapless::Vec<u8, CHUNK_LEN>;

/// Chunks in flight between a replayed log's reader thread and its consumer: 32 x 1 KiB,
/// bounded memory; the reader waits when they are all taken (backpressure).
pub const CHANNEL_CAPACITY: usize = 32;

/// How long a blocked source waits between attempts to hand over a chunk; also the
/// granularity at which it notices the stop flag.
const POLL: Duration = Duration::from_millis(10);

/// A source's condition, shared between its thread and the rest of the agent.
#[derive(Debug)]
pub struct SourceStatus {
    connected: AtomicBool,
    outages: AtomicU64,
    stuck: AtomicU64,
    bytes: AtomicU64,
    errors: ErrorCounts,
    last_error: Mutex<Option<LastError>>,
    /// How long the current session may be stuck before the port is reopened (ms).
    stuck_limit_ms: AtomicU64,
    /// Stamps `last_error` when it happens.
    clock: Clock,
}

impl Default for SourceStatus {
    fn default() -> Self {
        SourceStatus {
            connected: AtomicBool::new(false),
            outages: AtomicU64::new(0),
            stuck: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: ErrorCounts::default(),
            last_error: Mutex::new(None),
            stuck_limit_ms: AtomicU64::new(0),
            clock: Clock::system(),
        }
    }
}

impl SourceStatus {
    /// The device is open (serial), or the file is being read.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
    /// Times the source was lost (device gone, open failed after it had been lost).
    pub fn outages(&self) -> u64 {
        self.outages.load(Ordering::Relaxed)
    }
    /// Times the receiver was found stuck and the port reopened.
    pub fn stuck_events(&self) -> u64 {
        self.stuck.load(Ordering::Relaxed)
    }
    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    pub fn errors(&self) -> &ErrorCounts {
        &self.errors
    }
    pub fn last_error(&self) -> Option<LastError> {
        self.last_error.lock().ok().and_then(|g| g.clone())
    }

    /// How long the current session may be stuck before the port is reopened: `stuck_after`,
    /// or more while a receiver stays stuck.
    pub fn stuck_limit(&self) -> Duration {
        Duration::from_millis(self.stuck_limit_ms.load(Ordering::Relaxed))
    }

    fn set_stuck_limit(&self, limit: Duration) {
        let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        self.stuck_limit_ms.store(ms, Ordering::Relaxed);
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    fn add_bytes(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn count_outage(&self) {
        self.outages.fetch_add(1, Ordering::Relaxed);
    }

    fn count_stuck(&self) {
        self.stuck.fetch_add(1, Ordering::Relaxed);
    }

    /// Count the error, remember it as the last one, and log it with its code.
    fn record(&self, error: &GnssError) {
        self.errors.record(error);
        tracing::warn!(code = error.code(), class = error.class().as_str(), error = %error, "gnss source");
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(LastError::new(error, self.clock.wall_ms()));
        }
    }
}

/// What [`SourceHandle::next_chunk`] got.
#[derive(Debug)]
// A chunk moves by value, as it does through the channel: no heap on the hot path.
#[allow(clippy::large_enum_variant)]
pub enum Next {
    Chunk(Chunk),
    /// Nothing within the wait.
    Quiet,
    /// The source ended (a replayed log is over, or its reader thread stopped).
    Done,
}

/// A running source: take its bytes with [`next_chunk`](Self::next_chunk) (or drain
/// `chunks` of a threaded one); watch `status`; raise the stop flag and `join` to end.
#[derive(Debug)]
pub struct SourceHandle {
    /// A threaded source's channel (a direct one's is closed and empty).
    pub chunks: Receiver<Chunk>,
    pub status: Arc<SourceStatus>,
    thread: Option<JoinHandle<()>>,
    /// A serial port read in the consumer's own thread.
    direct: Option<serial::SerialReader>,
}

impl SourceHandle {
    fn threaded(
        chunks: Receiver<Chunk>,
        status: Arc<SourceStatus>,
        thread: JoinHandle<()>,
    ) -> Self {
        SourceHandle {
            chunks,
            status,
            thread: Some(thread),
            direct: None,
        }
    }

    fn direct(reader: serial::SerialReader, status: Arc<SourceStatus>) -> Self {
        let (_, chunks) = std::sync::mpsc::sync_channel(0);
        SourceHandle {
            chunks,
            status,
            thread: None,
            direct: Some(reader),
        }
    }

    /// The next bytes, waiting at most `wait`. `receiver_time` is the newest UTC time of day
    /// (ms) the consumer's pipeline has seen ([`Pipeline::receiver_time`]): a serial port
    /// judges by it whether the receiver is stuck repeating one epoch; a log file has no use
    /// for it.
    ///
    /// [`Pipeline::receiver_time`]: crate::pipeline::Pipeline::receiver_time
    pub fn next_chunk(&mut self, wait: Duration, receiver_time: Option<u32>) -> Next {
        if let Some(reader) = self.direct.as_mut() {
            return reader
                .next(wait, receiver_time)
                .map_or(Next::Quiet, Next::Chunk);
        }
        match self.chunks.recv_timeout(wait) {
            Ok(chunk) => Next::Chunk(chunk),
            Err(RecvTimeoutError::Timeout) => Next::Quiet,
            Err(RecvTimeoutError::Disconnected) => Next::Done,
        }
    }

    /// Wait for the reader thread (after raising its stop flag, or at end of a file); a
    /// direct source's port is closed.
    pub fn join(mut self) {
        if let Some(reader) = self.direct.as_mut() {
            reader.close();
        }
        // A panicking reader thread already printed its message; nothing more to do here.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// The consumer is done: a direct source's port is closed; a threaded source's channel
    /// is dropped, so its thread ends at its next hand-over (its stop flag is raised too).
    pub fn close(mut self) {
        if let Some(reader) = self.direct.as_mut() {
            reader.close();
        }
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_some_and(JoinHandle::is_finished)
    }
}

/// Hand a chunk to the consumer, waiting while the channel is full. False when the
/// consumer hung up or the stop flag was raised: the reader thread should end.
fn deliver(tx: &SyncSender<Chunk>, mut chunk: Chunk, stop: &AtomicBool) -> bool {
    loop {
        match tx.try_send(chunk) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(back)) => {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                chunk = back;
                std::thread::sleep(POLL);
            }
        }
    }
}

/// Sleep `total`, waking early when `stop` is raised. False when stopped.
fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) -> bool {
    let deadline = Instant::now() + total;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep(POLL.max(Duration::from_millis(1)).min(deadline - now));
    }
}
