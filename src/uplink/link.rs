//! The uplink's source of fixes: the shared buffer store, seen through the publisher's
//! [`FixSource`] trait. Batches out, acks, releases and dead letters in; "live first" and
//! the fix-to-ack latency live here.
//!
//! **Live first**: when there is a backlog, the newest fix goes out on its own before the
//! next oldest-first batch, each time a newer one has arrived, so dispatch sees where the
//! vehicle is now while the backlog drains without starving either.
//!
//! Every call that touches SQLite runs on tokio's blocking pool, never on a runtime worker;
//! after each change the store publishes the buffer's status on the board.

use crate::buffer::store::{SharedStore, Store};
use crate::buffer::{BufferError, StoredFix};
use crate::clock::Clock;
use crate::error::Classified;
use crate::fix::Fix;
use crate::health::metrics::Metrics;
use crate::uplink::error::UplinkError;
use crate::uplink::source::FixSource;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// The uplink's view of the store.
pub struct Link {
    store: SharedStore,
    metrics: Arc<Metrics>,
    /// "Now" for fix ages: the receiver-checked UTC of the agent's clock.
    clock: Clock,
    /// The stream last told to the uplink: fixes of another one (the buffer started a new
    /// stream after a damaged file) wait until the uplink has asked again, so they never
    /// go out under the old stream's id.
    told_stream: Arc<Mutex<String>>,
    /// Newest seq already sent ahead of the backlog.
    live_seq: u64,
    /// The last batch was short and not a fix sent ahead of a backlog: nothing was left.
    drained: bool,
    /// Receiver time of each fix in flight, for the fix-to-ack latency. Bounded by what the
    /// uplink may hold in flight (window x batch); cleared on release.
    in_flight_times: HashMap<u64, i64>,
}

impl Link {
    pub fn new(store: SharedStore, metrics: Arc<Metrics>, clock: Clock) -> Self {
        Link {
            store,
            metrics,
            clock,
            told_stream: Arc::new(Mutex::new(String::new())),
            live_seq: 0,
            drained: false,
            in_flight_times: HashMap::new(),
        }
    }

    /// Run `f` on the store in the blocking pool; when it `changes` what is waiting (acks,
    /// dead letters), the store publishes its new status.
    async fn with_store<T: Send + 'static>(
        &self,
        changes: bool,
        f: impl FnOnce(&mut Store) -> Result<T, BufferError> + Send + 'static,
    ) -> Result<T, LinkError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = store.lock();
            let result = f(&mut store);
            if changes {
                store.mark_changed();
                store.publish();
            }
            result
        })
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
        let stream = self.store.stream();
        stream.clone_into(&mut self.told_stream.lock().unwrap_or_else(|p| p.into_inner()));
        stream
    }

    async fn next_batch(&mut self, max: usize) -> Result<Vec<(u64, Fix)>, LinkError> {
        let live_seq = self.live_seq;
        let told = Arc::clone(&self.told_stream);
        self.drained = false;
        // The batch, and whether it is a fix sent ahead of a backlog.
        let (batch, ahead): (Vec<StoredFix>, bool) = self
            .with_store(false, move |store| {
                let Some(buffer) = store.buffer_mut() else {
                    return Ok((Vec::new(), false));
                };
                if *told.lock().unwrap_or_else(|p| p.into_inner()) != buffer.stream() {
                    return Ok((Vec::new(), false));
                }
                // Oldest first. What fits in one batch goes together, the newest with it.
                let mut out = Vec::with_capacity(max);
                buffer.next_batch(max, &mut out)?;
                if out.len() < max {
                    return Ok((out, false));
                }
                // A backlog of more than a batch: live first, a newer fix than the last sent
                // ahead goes alone while the older ones wait.
                if let Some(newest) = buffer.newest_pending()? {
                    if newest.seq > live_seq {
                        let seqs: Vec<u64> = out.iter().map(|o| o.seq).collect();
                        buffer.release(&seqs);
                        return Ok((vec![newest], true));
                    }
                    buffer.release(&[newest.seq]);
                }
                Ok((out, false))
            })
            .await?;
        self.drained = !ahead && batch.len() < max;
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

    fn drained(&self) -> bool {
        self.drained
    }

    async fn fixes_pending(&mut self) {
        self.store.committed().await;
    }

    async fn ack(&mut self, seqs: &[u64]) -> Result<(), LinkError> {
        let now_ms = self.clock.utc_ms();
        let latencies: Vec<Duration> = seqs
            .iter()
            .filter_map(|s| self.in_flight_times.remove(s))
            .map(|t| Duration::from_millis(u64::try_from(now_ms.saturating_sub(t)).unwrap_or(0)))
            .collect();
        self.metrics.message_acked(latencies);
        let owned = seqs.to_vec();
        self.with_store(true, move |store| match store.buffer_mut() {
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
        self.with_store(false, move |store| {
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
        let code = why.code();
        let reason = why.to_string();
        self.with_store(true, move |store| match store.buffer_mut() {
            Some(b) => b.dead_letter(&[seq], code, &reason),
            None => Ok(()),
        })
        .await
    }
}
