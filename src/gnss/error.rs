//! Errors of GNSS ingest, each with a stable code and a class, and per-code counters.
//!
//! Sentence-level trouble (bad checksums, garbage) is not an error here: it is counted in
//! [`super::SentenceStats`] and never stops anything. These are the failures of the source
//! itself: a device that cannot be opened, vanished, or went quiet; a log that cannot be read.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Classified, ErrorClass};

#[derive(Debug, thiserror::Error)]
pub enum GnssError {
    /// The serial device could not be opened (absent, busy, not a tty).
    #[error("cannot open GNSS device {path} at {baud} baud: {source}")]
    DeviceOpen {
        path: PathBuf,
        baud: u32,
        #[source]
        source: serialport::Error,
    },
    /// Opening the device was refused by the OS.
    #[error(
        "permission denied opening GNSS device {path}: add the user to the `dialout` group \
         (usermod -aG dialout USER) or fix the device's udev permissions"
    )]
    Permission {
        path: PathBuf,
        #[source]
        source: serialport::Error,
    },
    /// The open device failed or reached end of file (USB unplugged, receiver reset).
    #[error("GNSS device {path} went away: {source}")]
    DeviceGone {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// No bytes, or the receiver's time not advancing, for longer than the session's limit.
    #[error("GNSS receiver on {path} stuck: {what} for {silent:?}")]
    Stuck {
        path: PathBuf,
        /// What stopped: `"no bytes"` or `"receiver time not advancing"`.
        what: &'static str,
        silent: Duration,
    },
    /// A replayed NMEA log could not be opened or read.
    #[error("cannot read NMEA log {path}: {source}")]
    FileRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl GnssError {
    /// Every code, in a stable order (metrics labels, counter arrays).
    pub const CODES: [&'static str; 5] = [
        "GNSS_DEVICE_OPEN",
        "GNSS_PERMISSION",
        "GNSS_DEVICE_GONE",
        "GNSS_STUCK",
        "GNSS_FILE_READ",
    ];

    fn index(&self) -> usize {
        match self {
            GnssError::DeviceOpen { .. } => 0,
            GnssError::Permission { .. } => 1,
            GnssError::DeviceGone { .. } => 2,
            GnssError::Stuck { .. } => 3,
            GnssError::FileRead { .. } => 4,
        }
    }
}

impl Classified for GnssError {
    fn code(&self) -> &'static str {
        match self {
            GnssError::DeviceOpen { .. } => "GNSS_DEVICE_OPEN",
            GnssError::Permission { .. } => "GNSS_PERMISSION",
            GnssError::DeviceGone { .. } => "GNSS_DEVICE_GONE",
            GnssError::Stuck { .. } => "GNSS_STUCK",
            GnssError::FileRead { .. } => "GNSS_FILE_READ",
        }
    }

    fn class(&self) -> ErrorClass {
        match self {
            // A receiver comes back when replugged or reset: keep retrying.
            GnssError::DeviceOpen { .. }
            | GnssError::DeviceGone { .. }
            | GnssError::Stuck { .. } => ErrorClass::Transient,
            // Retrying will not grant a group membership or create a missing log.
            GnssError::Permission { .. } | GnssError::FileRead { .. } => ErrorClass::Permanent,
        }
    }
}

/// How many times each code occurred. Lock-free, shared between the source thread and
/// whoever reports health.
#[derive(Debug, Default)]
pub struct ErrorCounts([AtomicU64; GnssError::CODES.len()]);

impl ErrorCounts {
    pub fn record(&self, error: &GnssError) {
        if let Some(c) = self.0.get(error.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The count for a code of [`GnssError::CODES`]; 0 for an unknown code.
    pub fn get(&self, code: &str) -> u64 {
        GnssError::CODES
            .iter()
            .position(|c| *c == code)
            .and_then(|i| self.0.get(i))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// `(code, count)` for every code, in the order of [`GnssError::CODES`].
    pub fn snapshot(&self) -> [(&'static str, u64); GnssError::CODES.len()] {
        let mut out = GnssError::CODES.map(|c| (c, 0));
        for (slot, counter) in out.iter_mut().zip(self.0.iter()) {
            slot.1 = counter.load(Ordering::Relaxed);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_error_tells_the_operator_about_the_dialout_group() {
        let e = GnssError::Permission {
            path: "/dev/ttyUSB0".into(),
            source: serialport::Error::new(
                serialport::ErrorKind::Io(io::ErrorKind::PermissionDenied),
                "denied",
            ),
        };
        assert_eq!(e.code(), "GNSS_PERMISSION");
        assert_eq!(e.class(), ErrorClass::Permanent);
        assert!(e.to_string().contains("dialout"), "{e}");
    }

    #[test]
    fn counts_are_kept_per_code() {
        let counts = ErrorCounts::default();
        let stuck = GnssError::Stuck {
            path: "/dev/gps0".into(),
            what: "no bytes",
            silent: Duration::from_secs(10),
        };
        counts.record(&stuck);
        counts.record(&stuck);
        assert_eq!(counts.get("GNSS_STUCK"), 2);
        assert_eq!(counts.get("GNSS_DEVICE_GONE"), 0);
        assert_eq!(stuck.class(), ErrorClass::Transient);
        assert!(counts.snapshot().contains(&("GNSS_STUCK", 2)));
    }
}
