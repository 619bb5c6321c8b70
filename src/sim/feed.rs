//! Feeding a drive to a reader: all at once into a log file, or paced in real time into a
//! pseudo-terminal as a receiver would (the demo's simulated serial port).
//!
//! In: a [`Drive`] and a byte sink. Out: the drive's lines, epoch by epoch, each epoch in one
//! write burst as receivers send them. Pacing uses the host's monotonic clock only to wait;
//! the times in the sentences come from the drive, never from the host.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::{Drive, SimError, LINE_CAPACITY, SENTENCES_PER_EPOCH};
use crate::error::Classified;

/// Longest single sleep while pacing, so a stop request is seen within this.
pub const STOP_POLL: Duration = Duration::from_millis(20);

/// Write the whole drive to `out` without waiting (an NMEA log for `parse` or a file source).
/// Returns the number of epochs written.
pub fn write_log(drive: Drive, mut out: impl Write) -> Result<u32, SimError> {
    let mut bytes = Vec::with_capacity(LINE_CAPACITY * SENTENCES_PER_EPOCH);
    let mut written = 0u32;
    for epoch in drive {
        bytes.clear();
        epoch.write_nmea(&mut bytes);
        out.write_all(&bytes).map_err(|source| SimError::Write {
            epoch: epoch.index,
            source,
        })?;
        written += 1;
    }
    out.flush().map_err(|source| SimError::Write {
        epoch: written,
        source,
    })?;
    Ok(written)
}

/// The time a paced feed runs on: the host's monotonic clock, or a test's.
pub trait Pacer {
    fn now(&self) -> Instant;
    /// Wait `d` (at most [`STOP_POLL`] at a time: the feed asks for no more).
    fn sleep(&self, d: Duration);
}

/// The host's monotonic clock: really waits.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealTime;

impl Pacer for RealTime {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Write the drive to `out` at its rate: epoch `k` goes out `k / rate_hz` seconds after the
/// first, on a fixed schedule (a slow write does not shift the ones after it). Returns the
/// number of epochs written when the drive ends or `stop` is set (checked at least every
/// 20 ms while waiting).
///
/// For a pseudo-terminal, pass the master by `&mut` and keep it open after the drive ends:
/// closing the master hangs up the terminal, and bytes the reader has not read yet are lost.
pub fn write_realtime(drive: Drive, out: impl Write, stop: &AtomicBool) -> Result<u32, SimError> {
    write_paced(drive, out, stop, &RealTime)
}

/// [`write_realtime`] on the time of `pacer` (tests drive a clock of their own).
pub fn write_paced(
    drive: Drive,
    mut out: impl Write,
    stop: &AtomicBool,
    pacer: &impl Pacer,
) -> Result<u32, SimError> {
    let period = Duration::from_millis(drive.spec().period_ms().unsigned_abs());
    let started = pacer.now();
    let mut bytes = Vec::with_capacity(LINE_CAPACITY * SENTENCES_PER_EPOCH);
    let mut written = 0u32;
    for epoch in drive {
        // Only a drive longer than the clock can count (centuries) has no due time.
        let Some(due) = period
            .checked_mul(epoch.index)
            .and_then(|offset| started.checked_add(offset))
        else {
            break;
        };
        loop {
            if stop.load(Ordering::Relaxed) {
                debug!(epochs = written, "simulated receiver stopped");
                return Ok(written);
            }
            let now = pacer.now();
            if now >= due {
                break;
            }
            pacer.sleep((due - now).min(STOP_POLL));
        }
        bytes.clear();
        epoch.write_nmea(&mut bytes);
        let sent = out.write_all(&bytes).and_then(|()| out.flush());
        if let Err(source) = sent {
            let err = SimError::Write {
                epoch: epoch.index,
                source,
            };
            warn!(code = err.code(), epoch = epoch.index, error = %err, "simulated receiver could not write");
            return Err(err);
        }
        written += 1;
    }
    debug!(epochs = written, "simulated drive finished");
    Ok(written)
}
