//! A TCP fault proxy between the agent and the broker, to play the cellular link.
//!
//! - [`FaultProxy::cut`]: close every connection and refuse new ones (the listening socket is
//!   closed, so connects fail with "connection refused") until [`FaultProxy::restore`].
//! - [`FaultProxy::stall`]: keep connections open but swallow every byte both ways, for
//!   existing and new connections: a link that hangs without closing.
//! - [`FaultProxy::delay`]: hold every chunk this long before forwarding it.
//! - [`FaultProxy::redirect`]: forward new connections to another upstream (a broker that
//!   came back on another port).
//! - [`FaultProxy::slam`]: accept new connections and close them at once: the path works,
//!   the broker (or a load balancer before it) will not talk.
//! - [`FaultProxy::blackhole`]: the link vanishes under established connections without a
//!   word (bytes swallowed, no reset) and new connects are refused; after `restore()` new
//!   connections work while the old ones stay silent, as a TCP connection does whose
//!   retransmission timer has backed off far past the outage.
//!
//! Runs on the test's tokio runtime. Each connection is two pump tasks; the proxy keeps no
//! queue of its own (a chunk is at most 16 KiB, read, then written or dropped).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Control {
    /// Bumped by every `cut()`; a connection from an earlier epoch closes.
    cut_epoch: u64,
    /// Refusing connections (between `cut()` and `restore()`).
    refusing: bool,
    stalled: bool,
    /// Accepting and closing at once.
    slamming: bool,
    /// Connections accepted before this generation swallow every byte (a blackhole).
    silent_before: u64,
    /// Generation of new connections: bumped by `blackhole()`.
    generation: u64,
    delay_ms: u64,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    control: watch::Sender<Control>,
    /// Whether the listening socket is open, as the accept task last set it.
    listening: watch::Receiver<bool>,
    accepted: Arc<AtomicU64>,
    upstream: Arc<Mutex<SocketAddr>>,
    listener_task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listen on a free loopback port and forward to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (control, _) = watch::channel(Control::default());
        let accepted = Arc::new(AtomicU64::new(0));
        let (listening_tx, listening) = watch::channel(true);
        let upstream = Arc::new(Mutex::new(upstream));
        let listener_task = tokio::spawn(serve(
            listener,
            addr,
            upstream.clone(),
            control.subscribe(),
            listening_tx,
            accepted.clone(),
        ));
        FaultProxy {
            addr,
            control,
            listening,
            accepted,
            upstream,
            listener_task,
        }
    }

    /// Forward connections accepted from now on to `upstream`.
    pub fn redirect(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap() = upstream;
    }

    /// `mqtt://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// Connections accepted and forwarded so far.
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Close every connection and refuse new ones; returns once connects are refused.
    pub async fn cut(&self) {
        self.control.send_modify(|c| {
            c.cut_epoch += 1;
            c.refusing = true;
            c.stalled = false;
        });
        self.wait_listening(false).await;
    }

    /// Accept and forward again, without stall or delay; returns once connects are accepted.
    pub async fn restore(&self) {
        self.control.send_modify(|c| {
            c.refusing = false;
            c.stalled = false;
            c.slamming = false;
            c.delay_ms = 0;
        });
        self.wait_listening(true).await;
    }

    async fn wait_listening(&self, want: bool) {
        let mut listening = self.listening.clone();
        let reached =
            tokio::time::timeout(Duration::from_secs(5), listening.wait_for(|l| *l == want)).await;
        assert!(
            matches!(reached, Ok(Ok(_))),
            "fault proxy listening={want} not reached"
        );
    }

    /// Close every connection and accept new ones only to close them at once.
    pub fn slam(&self) {
        self.control.send_modify(|c| {
            c.cut_epoch += 1;
            c.slamming = true;
        });
    }

    /// Swallow every byte of the established connections, for good, and refuse new ones
    /// until `restore()`; returns once connects are refused.
    pub async fn blackhole(&self) {
        self.control.send_modify(|c| {
            c.generation += 1;
            c.silent_before = c.generation;
            c.refusing = true;
        });
        self.wait_listening(false).await;
    }

    /// Keep connections open but drop every byte, both ways.
    pub fn stall(&self) {
        self.control.send_modify(|c| c.stalled = true);
    }

    /// Hold each chunk `ms` milliseconds before forwarding it.
    pub fn delay(&self, ms: u64) {
        self.control.send_modify(|c| c.delay_ms = ms);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Closes the listener; pumps end when they see the cut.
        self.control.send_modify(|c| c.cut_epoch += 1);
        self.listener_task.abort();
    }
}

async fn serve(
    listener: TcpListener,
    addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    mut control: watch::Receiver<Control>,
    listening: watch::Sender<bool>,
    accepted: Arc<AtomicU64>,
) {
    let mut listener = Some(listener);
    loop {
        let refusing = control.borrow_and_update().refusing;
        match (&listener, refusing) {
            // Closing the listening socket is what makes connects fail with "refused".
            (Some(_), true) => listener = None,
            (None, false) => listener = rebind(addr).await,
            _ => {}
        }
        listening.send_replace(listener.is_some());
        let Some(l) = &listener else {
            if control.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            changed = control.changed() => if changed.is_err() { return },
            conn = l.accept() => {
                let Ok((client, _)) = conn else { continue };
                if control.borrow().slamming {
                    drop(client);
                    continue;
                }
                let to = *upstream.lock().unwrap();
                let Ok(server) = TcpStream::connect(to).await else { continue };
                accepted.fetch_add(1, Ordering::Relaxed);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (epoch, generation) = {
                    let c = control.borrow();
                    (c.cut_epoch, c.generation)
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, control.clone(), epoch, generation));
                tokio::spawn(pump(sr, cw, control.clone(), epoch, generation));
            }
        }
    }
}

/// Bind the same address again after a cut (the port stays the proxy's; retried briefly in
/// case the old socket is still being torn down).
async fn rebind(addr: SocketAddr) -> Option<TcpListener> {
    for _ in 0..50 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return Some(l);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("fault proxy could not rebind {addr}");
    None
}

/// Forward one direction until either side closes or the connection is cut.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut control: watch::Receiver<Control>,
    epoch: u64,
    generation: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            changed = control.changed() => {
                if changed.is_err() || control.borrow().cut_epoch != epoch {
                    return;
                }
            }
            read = from.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let now = *control.borrow();
                if now.cut_epoch != epoch {
                    return;
                }
                if now.stalled || generation < now.silent_before {
                    continue;
                }
                if now.delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(now.delay_ms)).await;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
