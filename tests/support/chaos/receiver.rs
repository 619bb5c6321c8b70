//! The chaos run's GNSS receiver: the simulator's drive paced at its rate
//! ([`gps_agent::sim::write_paced`]) into a pseudo-terminal under a udev-style name, the
//! way a receiver's UART prints whether anyone listens or not.
//!
//! A real serial port loses what the receiver prints while no process holds it open (the
//! kernel does not read a closed USB serial device) and while the receiver is unplugged. A
//! pty would instead keep those bytes for the next reader, so the receiver looks before
//! every epoch: unplugged, or no agent holding the port (the master sees a hang-up), and the
//! epoch is not written. Every epoch is recorded with its fate and the moment it was printed,
//! and copied to one of two logs: `fed.nmea` (exactly the bytes the port carried, for
//! `gps-agent parse`) or `unfed.nmea` (what nobody could read).

use gps_agent::sim::{write_paced, Drive, DriveSpec, RealTime};
use serialport::{SerialPort, TTYPort};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::pty::receiver_at;

/// What became of one printed epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Written to the port while an agent held it.
    Fed,
    /// No process held the port (the agent was down or had not reopened it yet).
    PortClosed,
    /// The receiver was unplugged.
    Unplugged,
    /// The write failed or timed out (an agent holding the port but not reading it).
    WriteFailed,
}

/// One epoch as the receiver printed it.
#[derive(Debug, Clone, Copy)]
pub struct Printed {
    /// Receiver time of the epoch (ms since the Unix epoch), as its sentences say.
    pub time_ms: i64,
    /// When its bytes went out (or would have).
    pub at: Instant,
    pub fate: Fate,
}

/// What the receiver printed over the run.
pub struct Feed {
    pub printed: Vec<Printed>,
    /// The bytes the port carried.
    pub fed: PathBuf,
    /// The bytes printed while nobody could read them.
    pub unfed: PathBuf,
}

/// How long a write may wait for room in the pty (an agent holding the port but not
/// reading it); past that the epoch is [`Fate::WriteFailed`].
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an unplug waits for the agent to read what was already written: a healthy
/// agent reads within milliseconds; bytes still unread after this are lost to the unplug.
const UNPLUG_DRAIN: Duration = Duration::from_secs(2);

pub struct Receiver {
    link: PathBuf,
    port: Arc<Mutex<Option<TTYPort>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Feed>>,
    /// When printing started, the first epoch's receiver time and the period (ms).
    clock: Option<(Instant, i64, i64)>,
}

impl Receiver {
    /// A receiver plugged in at `link`, not printing yet.
    pub fn plug_in(link: &Path) -> Receiver {
        Receiver {
            link: link.to_path_buf(),
            port: Arc::new(Mutex::new(Some(open_master(link)))),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
            clock: None,
        }
    }

    /// The receiver time of the first epoch due at or after `at` (epochs are due on a fixed
    /// schedule; one printed late is printed after its due time, never before).
    pub fn time_due(&self, at: Instant) -> i64 {
        let (started, first_ms, period_ms) = self.clock.expect("printing");
        let since = i64::try_from(at.saturating_duration_since(started).as_millis()).unwrap();
        first_ms + (since + period_ms - 1) / period_ms * period_ms
    }

    /// Whether a process holds the port open now.
    pub fn held(&self) -> bool {
        self.port.lock().unwrap().as_ref().is_some_and(slave_open)
    }

    /// Start printing `spec`'s drive at its rate, logging the bytes in `dir`.
    pub fn print(&mut self, spec: DriveSpec, dir: &Path) {
        assert!(self.thread.is_none(), "the receiver prints one drive");
        let mut sink = Sink {
            port: self.port.clone(),
            pending: Vec::new(),
            fed: BufWriter::new(File::create(dir.join("fed.nmea")).unwrap()),
            unfed: BufWriter::new(File::create(dir.join("unfed.nmea")).unwrap()),
            printed: Vec::new(),
            time_ms: spec.start_time_ms - spec.start_time_ms.rem_euclid(10),
            period_ms: spec.period_ms(),
        };
        let (fed, unfed) = (dir.join("fed.nmea"), dir.join("unfed.nmea"));
        self.clock = Some((Instant::now(), sink.time_ms, sink.period_ms));
        let stop = self.stop.clone();
        self.thread = Some(
            std::thread::Builder::new()
                .name("chaos-receiver".into())
                .spawn(move || {
                    let drive = Drive::new(spec).expect("drive");
                    // The sink swallows write errors (they are the epoch's fate), so the
                    // drive runs until it ends or is stopped.
                    write_paced(drive, &mut sink, &stop, &RealTime).expect("paced feed");
                    sink.fed.flush().unwrap();
                    sink.unfed.flush().unwrap();
                    Feed {
                        printed: sink.printed,
                        fed,
                        unfed,
                    }
                })
                .unwrap(),
        );
    }

    /// Unplug: nothing more is written, what the agent has not read within
    /// [`UNPLUG_DRAIN`] goes with the device, the device node disappears.
    pub fn unplug(&self) {
        let Some(master) = self.port.lock().unwrap().take() else {
            return;
        };
        let slave = std::fs::read_link(&self.link).unwrap();
        // Not draining within the grace is part of an unplug, not a failure.
        let _ = crate::support::wait::poll(UNPLUG_DRAIN, || unread(&slave).is_none_or(|n| n == 0));
        drop(master);
        let _ = std::fs::remove_file(&self.link);
    }

    /// Plug back in: a new device under the same name.
    pub fn replug(&self) {
        let mut port = self.port.lock().unwrap();
        assert!(port.is_none(), "plugged in already");
        *port = Some(open_master(&self.link));
    }

    /// Stop printing; returns what was printed. The port stays plugged in (closing the
    /// master would hang up the agent's terminal) until the receiver is dropped.
    pub fn stop(&mut self) -> Feed {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("printing")
            .join()
            .expect("receiver thread")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open_master(link: &Path) -> TTYPort {
    let mut master = receiver_at(link);
    master.set_timeout(WRITE_TIMEOUT).unwrap();
    master
}

/// Whether some process holds the slave end open: without one the master polls as hung up.
fn slave_open(master: &TTYPort) -> bool {
    let mut fd = libc::pollfd {
        fd: master.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, which lives for the call; timeout 0 does not block.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n >= 0 && fd.revents & libc::POLLHUP == 0
}

/// Bytes written to the pty whose slave is `slave` that no reader has taken yet; `None`
/// when the slave cannot be opened to ask (not root while the agent holds it exclusively).
fn unread(slave: &Path) -> Option<usize> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(slave)
        .ok()?;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which lives for the call.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut n) };
    (rc == 0).then_some(n.max(0) as usize)
}

/// The writer [`write_paced`] prints into: each epoch arrives as writes followed by one
/// flush, so the flush decides the epoch's fate.
struct Sink {
    port: Arc<Mutex<Option<TTYPort>>>,
    pending: Vec<u8>,
    fed: BufWriter<File>,
    unfed: BufWriter<File>,
    printed: Vec<Printed>,
    /// Receiver time of the next epoch.
    time_ms: i64,
    period_ms: i64,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let fate = match self.port.lock().unwrap().as_mut() {
            None => Fate::Unplugged,
            Some(master) if !slave_open(master) => Fate::PortClosed,
            Some(master) => match master.write_all(&self.pending) {
                Ok(()) => Fate::Fed,
                Err(_) => Fate::WriteFailed,
            },
        };
        let at = Instant::now();
        let log = if fate == Fate::Fed {
            &mut self.fed
        } else {
            &mut self.unfed
        };
        log.write_all(&self.pending)?;
        self.pending.clear();
        self.printed.push(Printed {
            time_ms: self.time_ms,
            at,
            fate,
        });
        self.time_ms += self.period_ms;
        Ok(())
    }
}
