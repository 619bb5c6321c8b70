//! The demo's cellular link: a TCP relay between the agent and the broker that the demo cuts
//! for a while (an outage), then restores.
//!
//! A cut closes every relayed connection and the listening socket itself, so the agent's
//! connects are refused, as they are when a vehicle's path to the broker is gone; a relay
//! that kept accepting and dropped each connection would look like a broker refusing the
//! device instead, which the agent (rightly) treats with backoff and its circuit breaker.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A relay on a loopback port to `upstream`.
pub struct Link {
    pub addr: SocketAddr,
    /// `true` while the link is up; every change of the count behind it is a cut.
    state: watch::Sender<(bool, u64)>,
}

impl Link {
    pub async fn start(upstream: SocketAddr) -> Result<Link, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("link: {e}"))?;
        let addr = listener.local_addr().map_err(|e| format!("link: {e}"))?;
        let (state, _) = watch::channel((true, 0u64));
        tokio::spawn(relay(listener, addr, upstream, state.subscribe()));
        Ok(Link { addr, state })
    }

    /// Drop every connection and refuse new ones.
    pub fn cut(&self) {
        self.state.send_modify(|(up, cuts)| {
            *up = false;
            *cuts += 1;
        });
    }

    pub fn restore(&self) {
        self.state.send_modify(|(up, _)| *up = true);
    }
}

async fn relay(
    listener: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut state: watch::Receiver<(bool, u64)>,
) {
    let mut listener = Some(listener);
    loop {
        let (up, cuts) = *state.borrow_and_update();
        match (&listener, up) {
            // Closing the listening socket is what makes connects fail with "refused".
            (Some(_), false) => listener = None,
            (None, true) => listener = rebind(addr).await,
            _ => {}
        }
        let Some(l) = &listener else {
            if state.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            conn = l.accept() => {
                let Ok((mut client, _)) = conn else { continue };
                let mut cut = state.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|(_, n)| *n != cuts) => {}
                    }
                });
            }
        }
    }
}

/// Listen on the same port again after a cut (retried briefly while the old socket is torn
/// down).
async fn rebind(addr: SocketAddr) -> Option<TcpListener> {
    for _ in 0..50 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return Some(l);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
