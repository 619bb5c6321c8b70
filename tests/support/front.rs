//! A front end before the broker: a load balancer, or a broker in trouble. Each new
//! connection meets what the front is set to ([`Front::set`]):
//!
//! - [`Mode::Balance`]: a load balancer. It accepts, connects to its backend and forwards
//!   both ways; while the backend is down ([`Front::backend_down`]: its forwarded
//!   connections close, as a broker that died closes them) it closes each client's
//!   connection without a byte, as HAProxy, an AWS NLB or any TCP balancer does whose
//!   backend does not answer; [`Front::backend_up`] brings it back.
//! - [`Mode::AcceptClose`]: accepted and closed at once, whatever the backend.
//! - [`Mode::Refuse`]: the CONNECT is answered with a CONNACK carrying that return code (3:
//!   server unavailable, as a broker overloaded or restarting sends), then closed.
//! - [`Mode::Silent`]: accepted and read, never answered (a broker that never answers
//!   CONNECT).
//! - [`Mode::NoPuback`]: CONNECT answered with CONNACK 0, then nothing ever again: no
//!   PUBACK, no PINGRESP.
//!
//! Every accepted connection is counted with its time, and whether the client said
//! anything on it ([`Front::attempts`]: a full attempt sends CONNECT, or a TLS ClientHello;
//! a reachability probe sends nothing and resets), so a test can tell attempts per minute.
//! While the backend is down the balancer gives a client 100 ms to speak before it closes
//! (the time a balancer spends trying its backend). Runs on the test's tokio runtime; each connection is one or two tasks that end
//! when either side closes, and nothing is queued beyond one 16 KiB chunk per direction.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Balance,
    AcceptClose,
    Refuse(u8),
    Silent,
    NoPuback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Control {
    mode: Mode,
    /// Whether the backend takes connections.
    backend_up: bool,
    /// Bumped when the backend goes down: forwarded connections of an earlier epoch close.
    epoch: u64,
}

/// One accepted connection: when, and whether the client sent a byte on it.
struct Conn {
    at: Instant,
    spoke: Arc<AtomicBool>,
}

pub struct Front {
    pub addr: SocketAddr,
    control: watch::Sender<Control>,
    accepted: Arc<Mutex<Vec<Conn>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Front {
    /// Listen on a free loopback port before `backend`, balancing.
    pub async fn start(backend: SocketAddr) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (control, _) = watch::channel(Control {
            mode: Mode::Balance,
            backend_up: true,
            epoch: 0,
        });
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(serve(
            listener,
            backend,
            control.subscribe(),
            accepted.clone(),
        ));
        Front {
            addr,
            control,
            accepted,
            task,
        }
    }

    /// `mqtt://127.0.0.1:PORT` of the front.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// What new connections meet from now on.
    pub fn set(&self, mode: Mode) {
        self.control.send_modify(|c| c.mode = mode);
    }

    /// The broker behind the balancer stops: its connections close, new ones are closed by
    /// the balancer at once.
    pub fn backend_down(&self) {
        self.control.send_modify(|c| {
            c.backend_up = false;
            c.epoch += 1;
        });
    }

    /// The broker behind the balancer is back.
    pub fn backend_up(&self) {
        self.control.send_modify(|c| c.backend_up = true);
    }

    /// Connections accepted so far, each by the time it was accepted.
    pub fn accepted(&self) -> Vec<Instant> {
        self.accepted.lock().unwrap().iter().map(|c| c.at).collect()
    }

    /// Of those, the ones the client spoke on (full attempts, not probes).
    pub fn attempts(&self) -> Vec<Instant> {
        let conns = self.accepted.lock().unwrap();
        conns
            .iter()
            .filter(|c| c.spoke.load(Ordering::Relaxed))
            .map(|c| c.at)
            .collect()
    }

    /// Connections accepted since `since`.
    pub fn accepted_since(&self, since: Instant) -> usize {
        self.accepted().iter().filter(|at| **at >= since).count()
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.control.send_modify(|c| c.epoch += 1);
        self.task.abort();
    }
}

async fn serve(
    listener: TcpListener,
    backend: SocketAddr,
    control: watch::Receiver<Control>,
    accepted: Arc<Mutex<Vec<Conn>>>,
) {
    while let Ok((client, _)) = listener.accept().await {
        let spoke = Arc::new(AtomicBool::new(false));
        accepted.lock().unwrap().push(Conn {
            at: Instant::now(),
            spoke: spoke.clone(),
        });
        let now = *control.borrow();
        let control = control.clone();
        match now.mode {
            Mode::Balance if now.backend_up => {
                tokio::spawn(balance(client, backend, control, now.epoch, spoke));
            }
            Mode::Balance => {
                tokio::spawn(turn_away(client, spoke));
            }
            Mode::AcceptClose => drop(client),
            Mode::Refuse(code) => {
                tokio::spawn(answer(client, Some(code), spoke));
            }
            Mode::Silent => {
                tokio::spawn(answer(client, None, spoke));
            }
            Mode::NoPuback => {
                tokio::spawn(answer(client, Some(0), spoke));
            }
        }
    }
}

/// Forward to `to`, or close at once when it does not accept; close when the backend goes
/// down (`epoch` moves on).
async fn balance(
    client: TcpStream,
    to: SocketAddr,
    mut control: watch::Receiver<Control>,
    epoch: u64,
    spoke: Arc<AtomicBool>,
) {
    let Ok(server) = TcpStream::connect(to).await else {
        return turn_away(client, spoke).await;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = cr.read(&mut buf).await {
            if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            spoke.store(true, Ordering::Relaxed);
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = sr.read(&mut buf).await {
            if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let cut = async move {
        while control.changed().await.is_ok() {
            if control.borrow().epoch != epoch {
                return;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = cut => {}
    }
}

/// The backend is down: the client's first bytes, if any come while the balancer would try
/// its backend (100 ms), say what kind of connection it was; then it is closed without a
/// byte sent.
async fn turn_away(client: TcpStream, spoke: Arc<AtomicBool>) {
    let mut byte = [0u8; 1];
    let peek = tokio::time::timeout(Duration::from_millis(100), client.peek(&mut byte)).await;
    if let Ok(Ok(n)) = peek {
        spoke.store(n > 0, Ordering::Relaxed);
    }
}

/// Read the client's bytes; after the first, answer with a CONNACK of `code` when one is
/// given (a refusal is followed by a close; code 0 by silence), then read until the client
/// closes.
async fn answer(mut client: TcpStream, code: Option<u8>, spoke: Arc<AtomicBool>) {
    let mut buf = [0u8; 4096];
    let mut answered = false;
    while let Ok(n) = client.read(&mut buf).await {
        if n == 0 {
            return;
        }
        spoke.store(true, Ordering::Relaxed);
        if let (Some(code), false) = (code, answered) {
            answered = true;
            if client.write_all(&[0x20, 0x02, 0x00, code]).await.is_err() || code != 0 {
                return;
            }
        }
    }
}
