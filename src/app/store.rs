//! The buffer as the running agent shares it: one [`Store`] behind a mutex, written by the
//! ingest thread and drained by the uplink through [`Link`] (the uplink's `FixSource`).
//!
//! The store also covers a disk that cannot be opened at all at startup (read-only file
//! system, missing mount): accepted fixes then wait in a bounded queue in memory
//! (`memory_ring` fixes, oldest dropped and counted when full) and the open is retried every
//! `disk_retry_s`; nothing is published before it is written to the buffer file.
//!
//! [`Link`] adds "live first": when there is a backlog, the newest fix goes out on its own
//! before the next oldest-first batch, each time a newer one has arrived, so dispatch sees
//! where the vehicle is now while the backlog drains without starving either.

use super::ingest::GnssView;
use crate::buffer::{Buffer, BufferError, BufferStats, StoredFix};
use crate::config::BufferConfig;
use crate::error::Classified;
use crate::fix::Fix;
use crate::health::metrics::Metrics;
use crate::uplink::error::UplinkError;
use crate::uplink::publisher::FixSource;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tracing::{error, info, warn};

/// The buffer file, or the queue that waits for it.
pub struct Store {
    cfg: BufferConfig,
    buffer: Option<Buffer>,
    /// Fixes accepted while the file could not be opened; bounded by `memory_ring`.
    waiting: VecDeque<Fix>,
    /// Fixes dropped from `waiting` because it was full.
    dropped_waiting: u64,
    next_open_at: Instant,
    /// The last failure to open the file: (code, message).
    open_error: Option<(&'static str, String)>,
    /// Fixes of `waiting` given up at shutdown.
    lost_waiting: u64,
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

/// What the rest of the agent sees of the store.
#[derive(Debug, Clone, Default)]
pub struct StoreView {
    pub stats: Option<BufferStats>,
    pub health: Option<crate::buffer::BufferHealth>,
    /// Set while the file cannot be opened: (code, message).
    pub open_error: Option<(&'static str, String)>,
    pub waiting: u64,
    pub dropped_waiting: u64,
    /// Fixes lost for good: the buffer's (damaged file, memory at shutdown) and the queue's.
    pub lost: u64,
    /// How often the buffer file was rescued while running.
    pub rescues: crate::buffer::Rescues,
}

impl StoreView {
    /// Fixes held in memory only: the buffer's ring, or the queue while there is no file.
    pub fn in_memory(&self) -> u64 {
        self.stats.as_ref().and_then(|s| s.in_memory).unwrap_or(0) + self.waiting
    }
}

impl Store {
    /// Opens the buffer file, or starts without it (and keeps trying) when it cannot be
    /// opened. Never fails: an agent without a disk still collects fixes.
    pub fn open(cfg: BufferConfig, now: Instant) -> Store {
        let mut store = Store {
            cfg,
            buffer: None,
            waiting: VecDeque::new(),
            dropped_waiting: 0,
            next_open_at: now,
            open_error: None,
            lost_waiting: 0,
        };
        store.try_open(now);
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
                info!(
                    component = "buffer",
                    path = %self.cfg.path.display(),
                    stream = buffer.stream(),
                    "buffer open"
                );
                self.buffer = Some(buffer);
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
                self.open_error = Some((e.code(), e.to_string()));
                self.next_open_at = now + self.cfg.disk_retry();
            }
        }
    }

    fn flush_waiting(&mut self, now: Instant) {
        let Some(buffer) = self.buffer.as_mut() else {
            return;
        };
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
        match self.buffer.as_mut() {
            Some(buffer) => buffer.append(fix, now).map(|a| a.synced_upto),
            None => {
                let cap = usize::try_from(self.cfg.memory_ring)
                    .unwrap_or(usize::MAX)
                    .max(1);
                if self.waiting.len() >= cap {
                    self.waiting.pop_front();
                    self.dropped_waiting += 1;
                }
                self.waiting.push_back(*fix);
                Ok(None)
            }
        }
    }

    /// Sync when due, retries of a failing disk or a missing file.
    pub fn tick(&mut self, now: Instant) -> Result<Option<u64>, BufferError> {
        if self.buffer.is_none() && now >= self.next_open_at {
            self.try_open(now);
        }
        match self.buffer.as_mut() {
            Some(b) => b.tick(now),
            None => Ok(None),
        }
    }

    /// Make everything durable now (acknowledgements, a sync); errors if fixes are left in
    /// memory only.
    pub fn commit(&mut self) -> Result<Option<u64>, BufferError> {
        match self.buffer.as_mut() {
            Some(b) => b.commit(),
            None => Ok(None),
        }
    }

    /// Power is failing (SIGPWR): sync now and every fix for a while. Returns the synced seq.
    pub fn power_fail(&mut self, now: Instant) -> Option<u64> {
        self.buffer.as_mut().and_then(|b| b.power_fail(now))
    }

    /// Shutdown: one more try of the file (open it, or write the memory ring to it), then
    /// make everything durable. What is still only in memory is lost with the process:
    /// counted and returned.
    pub fn close(&mut self, now: Instant) -> Closed {
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
                    cause: self.open_error.clone(),
                }
            }
        }
    }

    pub fn buffer_mut(&mut self) -> Option<&mut Buffer> {
        self.buffer.as_mut()
    }

    pub fn stream(&self) -> Option<String> {
        self.buffer.as_ref().map(|b| b.stream().to_owned())
    }

    pub fn view(&mut self) -> StoreView {
        let (stats, health) = match self.buffer.as_mut() {
            Some(b) => {
                let stats = match b.stats() {
                    Ok(s) => Some(s),
                    Err(e) => {
                        warn!(component = "buffer", code = e.code(), error = %e, "stats failed");
                        None
                    }
                };
                (stats, Some(b.health()))
            }
            None => (None, None),
        };
        // After the stats: reading them may have found the file damaged and rescued it.
        let (lost, rescues) = self
            .buffer
            .as_ref()
            .map(|b| (b.lost(), b.rescues()))
            .unwrap_or_default();
        StoreView {
            stats,
            health,
            open_error: self.open_error.clone(),
            waiting: self.waiting.len() as u64,
            dropped_waiting: self.dropped_waiting,
            lost: lost + self.lost_waiting,
            rescues,
        }
    }
}

/// The store, shared between the ingest thread and the uplink.
#[derive(Clone)]
pub struct SharedStore {
    inner: Arc<Mutex<Store>>,
    /// Woken when fixes were committed (the uplink may have something new).
    committed: Arc<Notify>,
}

impl SharedStore {
    pub fn new(store: Store) -> Self {
        SharedStore {
            inner: Arc::new(Mutex::new(store)),
            committed: Arc::new(Notify::new()),
        }
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
}

/// Error for [`Link`]: the buffer's, or the blocking task that ran it died.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Buffer(#[from] BufferError),
    #[error("buffer task failed: {0}")]
    Task(String),
}

impl Classified for LinkError {
    fn code(&self) -> &'static str {
        match self {
            LinkError::Buffer(e) => e.code(),
            LinkError::Task(_) => "BUFFER_TASK",
        }
    }
    fn class(&self) -> crate::error::ErrorClass {
        match self {
            LinkError::Buffer(e) => e.class(),
            LinkError::Task(_) => crate::error::ErrorClass::Critical,
        }
    }
}

/// The uplink's view of the store: batches out, acks in; "live first" and the fix-to-ack
/// latency live here.
pub struct Link {
    store: SharedStore,
    metrics: Arc<Metrics>,
    /// The stream last told to the uplink: fixes of another one (the buffer started a new
    /// stream after a damaged file) wait until the uplink has asked again, so they never
    /// go out under the old stream's id.
    told_stream: Arc<Mutex<String>>,
    /// Newest seq already sent ahead of the backlog.
    live_seq: u64,
    /// Receiver time of each fix in flight, for the fix-to-ack latency. Bounded by what the
    /// uplink may hold in flight (window x batch); cleared on release.
    in_flight_times: HashMap<u64, i64>,
    /// The GNSS stage's view: its newest fix makes the receiver a clock for fix ages when the
    /// system clock is wrong (see [`super::clock`]).
    gnss: Option<Arc<Mutex<GnssView>>>,
}

impl Link {
    pub fn new(store: SharedStore, metrics: Arc<Metrics>) -> Self {
        Link {
            store,
            metrics,
            told_stream: Arc::new(Mutex::new(String::new())),
            live_seq: 0,
            in_flight_times: HashMap::new(),
            gnss: None,
        }
    }

    /// Measure fix ages against the receiver's clock when the system clock disagrees with it.
    pub fn with_gnss(mut self, view: Arc<Mutex<GnssView>>) -> Self {
        self.gnss = Some(view);
        self
    }

    /// "Now" for fix ages, in UTC ms.
    fn age_base_ms(&self) -> i64 {
        let last_fix = self.gnss.as_ref().and_then(|view| {
            let v = view.lock().unwrap_or_else(|p| p.into_inner());
            v.last_fix_utc_ms.zip(v.last_fix_at)
        });
        super::clock::age_base_ms(
            chrono::Utc::now().timestamp_millis(),
            super::clock::gnss_now_ms(last_fix, Instant::now()),
        )
    }

    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, BufferError> + Send + 'static,
    ) -> Result<T, LinkError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&mut store.lock()))
            .await
            .map_err(|e| LinkError::Task(e.to_string()))?
            .map_err(LinkError::from)
    }
}

/// In-flight times kept at most: far above window x batch_max (10 x 50).
const MAX_TRACKED: usize = 65_536;

impl FixSource for Link {
    type Error = LinkError;

    fn stream(&self) -> String {
        let stream = self.store.lock().stream().unwrap_or_default();
        stream.clone_into(&mut self.told_stream.lock().unwrap_or_else(|p| p.into_inner()));
        stream
    }

    async fn next_batch(&mut self, max: usize) -> Result<Vec<(u64, Fix)>, LinkError> {
        let live_seq = self.live_seq;
        let told = Arc::clone(&self.told_stream);
        let batch: Vec<StoredFix> = self
            .with_store(move |store| {
                let Some(buffer) = store.buffer_mut() else {
                    return Ok(Vec::new());
                };
                if *told.lock().unwrap_or_else(|p| p.into_inner()) != buffer.stream() {
                    return Ok(Vec::new());
                }
                // Live first: a newer fix than the last sent ahead, while older ones wait.
                if let Some(newest) = buffer.newest_pending()? {
                    let mut oldest = Vec::with_capacity(1);
                    buffer.next_batch(1, &mut oldest)?;
                    let backlog = oldest.first().is_some_and(|o| o.seq < newest.seq);
                    let oldest_seqs: Vec<u64> = oldest.iter().map(|o| o.seq).collect();
                    buffer.release(&oldest_seqs);
                    if backlog && newest.seq > live_seq {
                        return Ok(vec![newest]);
                    }
                    buffer.release(&[newest.seq]);
                }
                let mut out = Vec::with_capacity(max);
                buffer.next_batch(max, &mut out)?;
                Ok(out)
            })
            .await?;
        if let [only] = batch.as_slice() {
            self.live_seq = self.live_seq.max(only.seq);
        }
        if self.in_flight_times.len() + batch.len() > MAX_TRACKED {
            self.in_flight_times.clear();
        }
        for s in &batch {
            self.in_flight_times.insert(s.seq, s.fix.time_ms);
        }
        Ok(batch.into_iter().map(|s| (s.seq, s.fix)).collect())
    }

    async fn fixes_pending(&mut self) {
        self.store.committed.notified().await;
    }

    async fn ack(&mut self, seqs: &[u64]) -> Result<(), LinkError> {
        let now_ms = self.age_base_ms();
        let latencies: Vec<Duration> = seqs
            .iter()
            .filter_map(|s| self.in_flight_times.remove(s))
            .map(|t| Duration::from_millis(u64::try_from(now_ms.saturating_sub(t)).unwrap_or(0)))
            .collect();
        self.metrics.message_acked(latencies);
        let owned = seqs.to_vec();
        self.with_store(move |store| match store.buffer_mut() {
            Some(b) => b.ack(&owned),
            None => Ok(()),
        })
        .await
    }

    async fn release(&mut self, seqs: &[u64]) -> Result<(), LinkError> {
        for s in seqs {
            self.in_flight_times.remove(s);
        }
        let owned = seqs.to_vec();
        self.with_store(move |store| {
            if let Some(b) = store.buffer_mut() {
                b.release(&owned);
            }
            Ok(())
        })
        .await
    }

    fn published(&mut self, fixes: usize) {
        self.metrics.published(fixes as u64);
    }

    async fn dead_letter(&mut self, seq: u64, why: &UplinkError) -> Result<(), LinkError> {
        self.in_flight_times.remove(&seq);
        self.metrics.dead_lettered(1);
        let code = why.code();
        let reason = why.to_string();
        self.with_store(move |store| match store.buffer_mut() {
            Some(b) => b.dead_letter(&[seq], code, &reason),
            None => Ok(()),
        })
        .await
    }
}
