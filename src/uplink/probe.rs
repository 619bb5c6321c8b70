//! Reachability probes: a bare TCP connect to the broker's port, closed at once ([`probe`]),
//! and the watch on the path while a session's PUBACKs do not come ([`PathWatch`]).
//!
//! When to probe and what a result means is the pure state machines' business
//! ([`super::reconnect`]: `Reconnect` between sessions, `StallWatch` during one); this room
//! owns the I/O and the timers. A probe never sends a byte of TLS or MQTT, and never takes
//! longer than [`PROBE_TIMEOUT`].

use crate::config::BrokerUrl;
use crate::uplink::reconnect::{Reconnect, StallWatch, Watch, STALL_AFTER};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;

/// How long a probe's TCP connect may take before it counts as failed: the kernel sends the
/// SYN at 0, 1 and 3 s, so a radio waking up or a slow cell still gets through.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A reachability probe: a TCP connection to the broker's port, closed at once with a reset
/// (no TLS, no MQTT, no FIN exchange: four segments, about 220 bytes on the wire, none when the
/// path is down). True when some address of the host accepted it within [`PROBE_TIMEOUT`];
/// a name that does not resolve is a path that is down.
pub async fn probe(host: String, port: u16) -> bool {
    let attempt = async move {
        let addrs = tokio::net::lookup_host((host.as_str(), port)).await.ok()?;
        for addr in addrs {
            if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
                // A reset rather than a FIN: the broker learns nothing but a closed socket
                // either way, and the exchange is two segments shorter.
                let _ = stream.set_zero_linger();
                return Some(());
            }
        }
        None
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, attempt).await,
        Ok(Some(()))
    )
}

/// The path, watched while a session waits for PUBACKs that do not come: from when messages
/// have waited [`STALL_AFTER`] without progress, probes at the times [`StallWatch`] says,
/// until progress clears it. Holds the timers and the probe under way, so a session's loop
/// waits on one future ([`PathWatch::probed`]) for all of it.
#[derive(Default)]
pub struct PathWatch {
    watch: Option<StallWatch>,
    /// When the next probe goes.
    next: Option<Instant>,
    /// The probe under way.
    probe: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
}

impl PathWatch {
    /// Progress (a PUBACK): the stall, if any, is over.
    pub fn clear(&mut self) {
        *self = PathWatch::default();
    }

    /// Resolves with when a probe of `target` ended and whether it got through, while a
    /// stall is watched; the watch begins once messages have waited since `waiting` for
    /// [`STALL_AFTER`], with a probe at once. Pending when there is nothing to watch.
    /// Cancel-safe: a timer that ran and a probe under way are kept for the next call.
    pub async fn probed(
        &mut self,
        waiting: Option<Instant>,
        target: &BrokerUrl,
    ) -> (Instant, bool) {
        loop {
            if let Some(under_way) = self.probe.as_mut() {
                let reachable = under_way.await;
                self.probe = None;
                return (Instant::now(), reachable);
            }
            match (self.watch.is_some(), self.next, waiting) {
                (true, Some(at), _) => {
                    tokio::time::sleep_until(at).await;
                    self.next = None;
                    self.probe = Some(Box::pin(probe(target.host.clone(), target.port)));
                }
                (false, _, Some(since)) => {
                    tokio::time::sleep_until(since + STALL_AFTER).await;
                    self.watch = Some(StallWatch::new(since));
                    self.next = Some(Instant::now());
                }
                _ => std::future::pending::<()>().await,
            }
        }
    }

    /// A probe ended at `now`: what the stall watch makes of it (`pacing` paces the next
    /// probe and learns the path); `None` when no stall is watched.
    pub fn on_probe(
        &mut self,
        now: Instant,
        reachable: bool,
        pacing: &mut Reconnect,
    ) -> Option<Watch> {
        let verdict = self.watch.as_mut()?.on_probe(now, reachable, pacing);
        if let Watch::ProbeAt(at) = verdict {
            self.next = Some(at);
        }
        Some(verdict)
    }

    /// Since when the session has made no progress, while a stall is watched.
    pub fn stalled_since(&self) -> Option<Instant> {
        self.watch.map(|w| w.since)
    }
}
