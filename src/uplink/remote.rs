//! The uplink's side of the remote commands: a seam, no command logic. While a [`RemotePort`]
//! is attached, each connection subscribes to `{prefix}/{device}/cmd` (QoS 1), hands every
//! request's bytes to the commands stage as they came, and publishes what that stage sends
//! back ([`Outbound`]): answers on `.../cmd/result` and backfill messages on `.../backfill`
//! (QoS 1, not retained), each through the acknowledgement window like any message, and a
//! reconnect when asked. Both directions are bounded channels: a request that finds the
//! stage's inbox full is dropped and counted (the back end asks again under the same id);
//! answers wait in the stage until the window has room, so fixes keep their share.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Largest message the uplink reads while it takes commands: twice the largest request the
/// commands stage reads, so that a request over that limit is still read and refused with
/// its id; a larger one ends the connection once (rumqttc cannot skip a packet), and is not
/// sent again (clean session).
pub const MAX_INCOMING_BYTES: usize = 128 * 1024;

/// Most requests waiting for the commands stage.
pub const INBOX: usize = 16;
/// Most answers and backfill messages waiting for the uplink.
pub const OUTBOX: usize = 8;

/// What the commands stage sends the uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// An answer, published on `.../cmd/result`.
    Answer(Vec<u8>),
    /// A fixes message of a backfill, published on `.../backfill`.
    Backfill(Vec<u8>),
    /// End the connection now (after what was sent before) and connect again at once, with
    /// the breaker and backoff reset.
    Reconnect,
}

/// The uplink's ends of the two channels.
#[derive(Debug)]
pub struct RemotePort {
    pub requests: mpsc::Sender<Vec<u8>>,
    pub outbox: mpsc::Receiver<Outbound>,
    /// Requests dropped because the inbox was full (the stage counts them in metrics).
    pub dropped: Arc<AtomicU64>,
}

/// The commands stage's ends.
#[derive(Debug)]
pub struct RemoteStage {
    pub requests: mpsc::Receiver<Vec<u8>>,
    pub outbox: mpsc::Sender<Outbound>,
    pub dropped: Arc<AtomicU64>,
}

/// A connected pair.
pub fn pair() -> (RemotePort, RemoteStage) {
    let (req_tx, req_rx) = mpsc::channel(INBOX);
    let (out_tx, out_rx) = mpsc::channel(OUTBOX);
    let dropped = Arc::new(AtomicU64::new(0));
    (
        RemotePort {
            requests: req_tx,
            outbox: out_rx,
            dropped: Arc::clone(&dropped),
        },
        RemoteStage {
            requests: req_rx,
            outbox: out_tx,
            dropped,
        },
    )
}
