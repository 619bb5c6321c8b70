//! An in-memory [`FixSource`] standing in for the SQLite buffer: fixes by seq, handed out
//! once until acked, released or dead-lettered, with the contract asserted on every call, and
//! a journal of what happened to it in order ([`Happened`]), so that tests count events
//! instead of waiting for time to pass.

use gps_agent::error::{Classified, ErrorClass};
use gps_agent::fix::{Fix, FixMode};
use gps_agent::uplink::error::UplinkError;
use gps_agent::uplink::publisher::FixSource;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
#[error("never fails")]
pub struct NeverFails;

impl Classified for NeverFails {
    fn code(&self) -> &'static str {
        "TEST"
    }
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

/// What happened to the source, in order, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happened {
    /// The test stored these seqs.
    Pushed(Vec<u64>),
    /// The publisher asked for a batch and got `got` fixes; `drained`: nothing was left.
    Asked { got: usize, drained: bool },
    /// The publisher said these seqs were acknowledged.
    Acked(Vec<u64>),
    /// The publisher handed these seqs back.
    Released(Vec<u64>),
}

#[derive(Default, Debug)]
struct Store {
    journal: Vec<(std::time::Instant, Happened)>,
    pending: BTreeMap<u64, Fix>,
    in_flight: BTreeSet<u64>,
    acked: BTreeSet<u64>,
    dead: Vec<(u64, &'static str)>,
    /// Fixes per message the publisher reported as handed to the connection.
    published: Vec<usize>,
    next_seq: u64,
    /// `next_batch` calls, and whether the last one left nothing pending.
    asked: u64,
    drained: bool,
}

#[derive(Clone)]
pub struct MemSource {
    store: Arc<Mutex<Store>>,
    stored: Arc<Notify>,
    /// While true, `release` does not return: a buffer stuck under the uplink.
    hold_releases: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for MemSource {
    fn default() -> Self {
        MemSource {
            store: Arc::default(),
            stored: Arc::default(),
            hold_releases: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }
}

impl MemSource {
    pub fn push(&self, fixes: impl IntoIterator<Item = Fix>) {
        let mut s = self.store.lock().unwrap();
        let mut seqs = Vec::new();
        for f in fixes {
            s.next_seq += 1;
            let seq = s.next_seq;
            s.pending.insert(seq, f);
            seqs.push(seq);
        }
        s.journal
            .push((std::time::Instant::now(), Happened::Pushed(seqs)));
        drop(s);
        self.stored.notify_one();
    }
    pub fn acked(&self) -> BTreeSet<u64> {
        self.store.lock().unwrap().acked.clone()
    }
    pub fn acked_count(&self) -> usize {
        self.store.lock().unwrap().acked.len()
    }
    pub fn in_flight(&self) -> usize {
        self.store.lock().unwrap().in_flight.len()
    }
    pub fn dead(&self) -> Vec<(u64, &'static str)> {
        self.store.lock().unwrap().dead.clone()
    }
    /// How often the publisher asked for a batch.
    pub fn asked(&self) -> u64 {
        self.store.lock().unwrap().asked
    }
    /// Everything that happened to the source so far, in order, with when.
    pub fn journal(&self) -> Vec<(std::time::Instant, Happened)> {
        self.store.lock().unwrap().journal.clone()
    }
    /// Make `release` hang until called again with `false` (a buffer whose disk stalls).
    pub fn hold_releases(&self, hold: bool) {
        self.hold_releases.send_replace(hold);
    }
    /// Fixes per message published, in order.
    pub fn published(&self) -> Vec<usize> {
        self.store.lock().unwrap().published.clone()
    }
}

impl FixSource for MemSource {
    type Error = NeverFails;

    fn stream(&self) -> String {
        "mem-stream".into()
    }

    async fn next_batch(&mut self, max: usize) -> Result<Vec<(u64, Fix)>, NeverFails> {
        let mut s = self.store.lock().unwrap();
        let batch: Vec<(u64, Fix)> = s
            .pending
            .iter()
            .filter(|(seq, _)| !s.in_flight.contains(seq))
            .take(max)
            .map(|(seq, f)| (*seq, *f))
            .collect();
        for (seq, _) in &batch {
            s.in_flight.insert(*seq);
        }
        s.asked += 1;
        s.drained = s.pending.keys().all(|seq| s.in_flight.contains(seq));
        let asked = Happened::Asked {
            got: batch.len(),
            drained: s.drained,
        };
        s.journal.push((std::time::Instant::now(), asked));
        Ok(batch)
    }

    fn drained(&self) -> bool {
        self.store.lock().unwrap().drained
    }

    async fn fixes_pending(&mut self) {
        self.stored.notified().await
    }

    async fn ack(&mut self, seqs: &[u64]) -> Result<(), NeverFails> {
        let mut s = self.store.lock().unwrap();
        for seq in seqs {
            assert!(s.in_flight.remove(seq), "acked seq {seq} was not in flight");
            s.pending.remove(seq);
            s.acked.insert(*seq);
        }
        s.journal
            .push((std::time::Instant::now(), Happened::Acked(seqs.to_vec())));
        Ok(())
    }

    async fn release(&mut self, seqs: &[u64]) -> Result<(), NeverFails> {
        let mut held = self.hold_releases.subscribe();
        let _ = held.wait_for(|hold| !*hold).await;
        let mut s = self.store.lock().unwrap();
        for seq in seqs {
            assert!(
                s.in_flight.remove(seq),
                "released seq {seq} was not in flight"
            );
        }
        s.journal
            .push((std::time::Instant::now(), Happened::Released(seqs.to_vec())));
        Ok(())
    }

    fn published(&mut self, fixes: usize) {
        self.store.lock().unwrap().published.push(fixes);
    }

    async fn dead_letter(&mut self, seq: u64, why: &UplinkError) -> Result<(), NeverFails> {
        let mut s = self.store.lock().unwrap();
        assert!(
            s.in_flight.remove(&seq),
            "dead-lettered seq {seq} was not in flight"
        );
        s.pending.remove(&seq);
        s.dead.push((seq, why.code()));
        Ok(())
    }
}

/// A plausible fix, distinct per `i`.
pub fn fix(i: u64) -> Fix {
    Fix {
        time_ms: 1_700_000_000_000 + i as i64 * 1000,
        lat: 48.1 + i as f64 * 1e-5,
        lon: 11.5,
        alt_m: Some(520.25),
        speed_mps: Some(12.5),
        course_deg: Some(181.0),
        hdop: Some(0.8),
        sats: Some(11),
        mode: FixMode::ThreeD,
        event: None,
    }
}
