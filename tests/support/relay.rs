//! A GNSS receiver on a pty for tests that kill the agent and start it again while the drive
//! goes on, and count what each kill cost.
//!
//! Bytes a receiver sends while no agent holds the port are not the agent's to lose, so the
//! feed pauses around each restart: [`Relay::quiesce`] stops it at a write boundary (between
//! two epochs, or inside one: each epoch goes out in two writes split at a random sentence)
//! and waits until the agent has read everything written; the test then kills the agent;
//! [`Relay::resume`] goes on once the next agent has opened the port. So every byte reaches
//! some agent, and a kill can cost only what the killed agent held: the epoch it was
//! assembling. The relay keeps a descriptor of the slave open, to see (`FIONREAD`) what is
//! still unread and so that a restart does not flush the terminal.

use gps_agent::sim::{Drive, DriveSpec};
use serialport::{SerialPort, TTYPort};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Relay {
    pause: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Epochs written in full so far.
    pub written: Arc<AtomicU32>,
    /// Lines (sentences) written so far.
    pub lines: Arc<AtomicU64>,
    slave: std::fs::File,
    thread: Option<JoinHandle<TTYPort>>,
}

impl Relay {
    /// A pty whose slave is at `link`, fed `spec`'s drive at its rate (paused at first, until
    /// [`Relay::resume`]). `seed` picks where each epoch is split.
    pub fn start(link: &Path, spec: DriveSpec, seed: u64) -> Relay {
        let (mut master, slave) = TTYPort::pair().expect("pty pair");
        let name = slave.name().expect("slave name");
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(&name, link).expect("symlink");
        let held = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags_noctty()
            .open(&name)
            .expect("open the slave");
        drop(slave);
        let pause = Arc::new(AtomicBool::new(true));
        let paused = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU32::new(0));
        let lines_written = Arc::new(AtomicU64::new(0));
        let (p, pd, st, w, lw) = (
            Arc::clone(&pause),
            Arc::clone(&paused),
            Arc::clone(&stop),
            Arc::clone(&written),
            Arc::clone(&lines_written),
        );
        let thread = std::thread::spawn(move || {
            let period = Duration::from_millis(spec.period_ms().unsigned_abs());
            let mut split = seed | 1;
            let mut bytes = Vec::new();
            let mut next_due = Instant::now();
            // Waits at a write boundary while paused; false once told to stop.
            let gate = |next_due: &mut Instant| -> bool {
                while p.load(Ordering::SeqCst) {
                    pd.store(true, Ordering::SeqCst);
                    if st.load(Ordering::SeqCst) {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                    *next_due = Instant::now();
                }
                pd.store(false, Ordering::SeqCst);
                !st.load(Ordering::SeqCst)
            };
            for epoch in Drive::new(spec).expect("drive") {
                bytes.clear();
                epoch.write_nmea(&mut bytes);
                let lines: Vec<usize> = bytes
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'\n')
                    .map(|(i, _)| i + 1)
                    .collect();
                split ^= split << 13;
                split ^= split >> 7;
                split ^= split << 17;
                let cut = lines[(split % lines.len() as u64) as usize];
                loop {
                    if !gate(&mut next_due) {
                        return master;
                    }
                    let now = Instant::now();
                    if now >= next_due {
                        break;
                    }
                    std::thread::sleep((next_due - now).min(Duration::from_millis(5)));
                }
                for part in [&bytes[..cut], &bytes[cut..]] {
                    if part.is_empty() {
                        continue;
                    }
                    if !gate(&mut next_due) {
                        return master;
                    }
                    master.write_all(part).expect("write to the pty");
                    master.flush().expect("flush the pty");
                    let n = part.iter().filter(|b| **b == b'\n').count();
                    lw.fetch_add(n as u64, Ordering::SeqCst);
                }
                w.fetch_add(1, Ordering::SeqCst);
                next_due += period;
            }
            master
        });
        Relay {
            pause,
            paused,
            stop,
            written,
            lines: lines_written,
            slave: held,
            thread: Some(thread),
        }
    }

    /// Bytes written and not yet read by the agent.
    pub fn unread(&self) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer, which lives for the call.
        let rc = unsafe { libc::ioctl(self.slave.as_raw_fd(), libc::FIONREAD, &mut n) };
        assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
        n.max(0) as usize
    }

    /// Stops the feed at a write boundary and waits until the agent has read everything
    /// written (panics after 10 s).
    pub fn quiesce(&self) {
        self.pause.store(true, Ordering::SeqCst);
        let read_all = super::wait::poll(Duration::from_secs(10), || {
            (self.paused.load(Ordering::SeqCst) || self.finished()) && self.unread() == 0
        });
        assert!(
            read_all.is_some(),
            "the agent did not read the feed within 10 s ({} bytes unread)",
            self.unread()
        );
    }

    pub fn resume(&self) {
        self.pause.store(false, Ordering::SeqCst);
    }

    /// The drive has been written in full.
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits until the drive is written and read (panics after `within`).
    pub fn drain(&self, within: Duration) {
        super::wait::until("the drive written and read", within, || {
            self.finished() && self.unread() == 0
        });
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.pause.store(false, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `O_NOCTTY` for opening a terminal without making it ours.
trait NoCtty {
    fn custom_flags_noctty(&mut self) -> &mut Self;
}

impl NoCtty for std::fs::OpenOptions {
    fn custom_flags_noctty(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOCTTY)
    }
}
