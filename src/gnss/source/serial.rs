//! Serial source: reads the receiver's device (`/dev/ttyUSB0`, a udev symlink, ...) at the
//! configured baud rate, in its consumer's own thread ([`SerialReader`], the daemon's ingest
//! thread): one wake per epoch, and while the consumer is busy the receiver's bytes wait in
//! the kernel's tty buffers, never in a queue of ours.
//!
//! It survives the device vanishing (USB unplug: read error, end of file, or open failure)
//! and coming back, reopening with exponential backoff (0.5 s doubling to 30 s), counting
//! each outage once. A receiver that goes silent, or keeps talking while the receiver time
//! the consumer hands each read stops advancing, for `stuck_after` is reported
//! (`GNSS_STUCK`) and the port reopened; while it stays stuck the wait before the next reopen
//! doubles (to at most [`STUCK_LIMIT_MAX`]), and it starts again from `stuck_after` once the
//! receiver time advances. The port stays open and read all along: a receiver that recovers
//! is seen at once. It never gives up on its own: the consumer closes it.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::stuck::StuckWatch;
use super::{Chunk, SourceHandle, SourceStatus, CHUNK_LEN};
use crate::gnss::error::GnssError;

/// The port's read timeout when it is opened; each read sets the wait its caller gives.
const READ_TIMEOUT: Duration = Duration::from_millis(200);

pub use super::stuck::STUCK_LIMIT_MAX;

/// What the serial source needs to know.
#[derive(Debug, Clone, PartialEq)]
pub struct SerialSettings {
    pub path: PathBuf,
    pub baud: u32,
    /// Silence (or no new epoch time) this long means stuck.
    pub stuck_after: Duration,
    /// First reconnect delay, doubled per failed attempt up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

/// First reconnect delay of a receiver that cannot be opened; doubled per failure.
const REOPEN_INITIAL: Duration = Duration::from_millis(500);
/// Longest reconnect delay: a receiver plugged back in is read within this.
const REOPEN_MAX: Duration = Duration::from_secs(30);

impl SerialSettings {
    /// The device at `path`, read at `baud`; stuck after `stuck_after` without a new epoch.
    pub fn new(path: PathBuf, baud: u32, stuck_after: Duration) -> Self {
        SerialSettings {
            path,
            baud,
            stuck_after,
            backoff_initial: REOPEN_INITIAL,
            backoff_max: REOPEN_MAX,
        }
    }
}

/// Reconnect delays: `initial`, doubling to `max`; `reset` after the port delivered data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next attempt, after a failure.
    pub fn on_failure(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// The source read by its consumer's own thread (the daemon's ingest thread): no reader
/// thread and no channel, so a receiver's epoch wakes one thread, not two. The consumer
/// calls [`SourceHandle::next_chunk`] with how long it may wait.
pub fn direct(settings: SerialSettings) -> SourceHandle {
    let status = Arc::new(SourceStatus::default());
    SourceHandle::direct(SerialReader::new(settings, Arc::clone(&status)), status)
}

/// The serial port as a state machine its caller drives: open (with backoff while the
/// device is missing), read, judge stuck, reopen. Each [`SerialReader::next`] waits at most
/// the time it is given, so the caller keeps its own timers.
#[derive(Debug)]
pub struct SerialReader {
    settings: SerialSettings,
    status: Arc<SourceStatus>,
    backoff: Backoff,
    /// In an outage already counted: a device absent at startup is one outage, however
    /// many attempts it takes.
    in_outage: bool,
    /// How long the next session may be stuck before the port is reopened.
    stuck_limit: Duration,
    port: Option<Port>,
    /// No attempt to open before this (backoff after a failure or an unplug).
    reopen_at: Option<Instant>,
}

/// An open port and the stuck watch of its session.
struct Port {
    port: Box<dyn serialport::SerialPort>,
    watch: StuckWatch,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port").field("watch", &self.watch).finish()
    }
}

impl SerialReader {
    pub fn new(settings: SerialSettings, status: Arc<SourceStatus>) -> Self {
        SerialReader {
            backoff: Backoff::new(settings.backoff_initial, settings.backoff_max),
            stuck_limit: settings.stuck_after,
            settings,
            status,
            in_outage: false,
            port: None,
            reopen_at: None,
        }
    }

    /// Waits at most `wait` for the receiver's bytes; `None` when none came (or the device
    /// is away and not due to be tried again yet). `receiver_time` is the newest UTC time of
    /// day (ms) the consumer's pipeline has seen from this receiver: the stuck watch's
    /// evidence of a receiver repeating one epoch.
    pub fn next(&mut self, wait: Duration, receiver_time: Option<u32>) -> Option<Chunk> {
        let deadline = Instant::now() + wait;
        if self.port.is_none() {
            if let Some(at) = self.reopen_at {
                let now = Instant::now();
                if now < at {
                    std::thread::sleep(at.min(deadline).saturating_duration_since(now));
                    if Instant::now() < at {
                        return None;
                    }
                }
            }
            self.open();
        }
        let port = self.port.as_mut()?;
        let _ = port
            .port
            .set_timeout(deadline.saturating_duration_since(Instant::now()));
        let mut buf = [0u8; CHUNK_LEN];
        let mut chunk = None;
        match read_burst(port.port.as_mut(), &mut buf) {
            Ok(0) => {
                self.gone(io::Error::from(io::ErrorKind::UnexpectedEof));
                return None;
            }
            Ok(n) => {
                port.watch.bytes(Instant::now());
                // Data flowing again: the next outage starts its backoff afresh.
                self.backoff.reset();
                self.status.add_bytes(n);
                chunk = Some(Chunk::from_slice(buf.get(..n).unwrap_or(&[])).unwrap_or_default());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                self.gone(e);
                return None;
            }
        }
        self.judge_stuck(receiver_time);
        chunk
    }

    /// The port is closed (the source stops).
    pub fn close(&mut self) {
        self.port = None;
        self.status.set_connected(false);
    }

    fn open(&mut self) {
        match open(&self.settings) {
            Ok(port) => {
                self.in_outage = false;
                self.reopen_at = None;
                self.status.set_connected(true);
                self.status.set_stuck_limit(self.stuck_limit);
                tracing::info!(port = %self.settings.path.display(), baud = self.settings.baud,
                    stuck_limit_ms = u64::try_from(self.stuck_limit.as_millis()).unwrap_or(u64::MAX),
                    "gnss device open");
                self.port = Some(Port {
                    port,
                    watch: StuckWatch::new(self.stuck_limit, Instant::now()),
                });
            }
            Err(error) => {
                // Counted before it is recorded: whoever sees the error sees it counted.
                if !self.in_outage {
                    self.status.count_outage();
                    self.in_outage = true;
                }
                self.status.record(&error);
                self.reopen_at = Some(Instant::now() + self.backoff.on_failure());
            }
        }
    }

    /// The device failed (unplugged, an I/O error): an outage, reopened after the backoff.
    fn gone(&mut self, source: io::Error) {
        self.port = None;
        self.status.set_connected(false);
        // Counted before it is recorded: whoever sees the error sees it counted.
        self.status.count_outage();
        self.in_outage = true;
        self.status.record(&GnssError::DeviceGone {
            path: self.settings.path.clone(),
            source,
        });
        self.reopen_at = Some(Instant::now() + self.backoff.on_failure());
    }

    /// Silent, or its time not advancing, for the session's limit: reported, and the port
    /// reopened at once, with a longer limit while it stays stuck.
    fn judge_stuck(&mut self, receiver_time: Option<u32>) {
        let now = Instant::now();
        let Some(port) = self.port.as_mut() else {
            return;
        };
        port.watch.receiver_time(receiver_time, now);
        let Some(stuck) = port.watch.verdict(now) else {
            return;
        };
        // Counted before it is recorded: whoever sees the error sees it counted.
        self.status.count_stuck();
        self.status.record(&GnssError::Stuck {
            path: self.settings.path.clone(),
            what: stuck.as_str(),
            silent: port.watch.limit(),
        });
        self.stuck_limit = port.watch.next_limit(self.settings.stuck_after);
        self.port = None;
        self.status.set_connected(false);
        self.reopen_at = None;
    }
}

fn open(settings: &SerialSettings) -> Result<Box<dyn serialport::SerialPort>, GnssError> {
    serialport::new(settings.path.to_string_lossy(), settings.baud)
        .timeout(READ_TIMEOUT)
        .open()
        .map_err(|source| match source.kind() {
            serialport::ErrorKind::Io(io::ErrorKind::PermissionDenied) => GnssError::Permission {
                path: settings.path.clone(),
                source,
            },
            _ => GnssError::DeviceOpen {
                path: settings.path.clone(),
                baud: settings.baud,
                source,
            },
        })
}

/// One read as it comes (up to [`READ_TIMEOUT`]), then, when that read filled the buffer,
/// whatever else the port already holds: a burst larger than the buffer is handed on as one
/// chunk where it can be, so the ingest thread wakes once an epoch rather than once a buffer,
/// without any further wait. A read that did not fill the buffer took all the tty held:
/// asking again would cost a system call an epoch for nothing. Returns the bytes read (0: end
/// of file, the device is gone).
fn read_burst(port: &mut dyn serialport::SerialPort, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = port.read(buf)?;
    if filled == 0 || filled < buf.len() {
        return Ok(filled);
    }
    // Bounded: each round reads at least one byte into a buffer of fixed size.
    while port.bytes_to_read().is_ok_and(|n| n > 0) {
        let Some(free) = buf.get_mut(filled..).filter(|b| !b.is_empty()) else {
            break;
        };
        match port.read(free) {
            Ok(n) if n > 0 => filled += n,
            // The bytes already read are handed on; an error comes back at the next read.
            _ => break,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let delays: Vec<_> = (0..9).map(|_| b.on_failure().as_millis()).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        b.reset();
        assert_eq!(b.on_failure(), Duration::from_millis(500));
    }

    #[test]
    fn a_missing_device_counts_one_outage_however_many_attempts_fail() {
        let dir = tempfile::tempdir().unwrap();
        let settings = SerialSettings {
            path: dir.path().join("no-such-tty"),
            baud: 9600,
            stuck_after: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(2),
        };
        let mut source = direct(settings);
        // Each read waits out the backoff (at most 2 ms) and tries again.
        while source.status.errors().get("GNSS_DEVICE_OPEN") < 3 {
            assert!(matches!(
                source.next_chunk(Duration::from_millis(5), None),
                super::super::Next::Quiet
            ));
        }
        assert_eq!(source.status.outages(), 1);
        assert!(!source.status.connected());
        assert_eq!(
            source.status.last_error().map(|e| e.code),
            Some("GNSS_DEVICE_OPEN")
        );
        source.close();
    }
}
