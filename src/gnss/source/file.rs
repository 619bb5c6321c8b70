//! File source: replays an NMEA log, as fast as the consumer takes it (`pace = "fast"`) or
//! at the receiver's own rhythm (`pace = "realtime"`: sleeping by the difference of
//! successive sentence times, capped at [`MAX_PACE_SLEEP`] so a gap in the log does not
//! stall the replay).
//!
//! The thread ends at end of file (the consumer then sees the channel close and finishes
//! its decoder), on a read error (`GNSS_FILE_READ`, recorded in the status) or on stop.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use super::{
    deliver, sleep_unless_stopped, Chunk, SourceHandle, SourceStatus, CHANNEL_CAPACITY, CHUNK_LEN,
};
use crate::config::Pace;
use crate::gnss::error::GnssError;
use crate::gnss::sentence::{self, Parsed};

/// Longest wait between two sentences in realtime replay.
pub const MAX_PACE_SLEEP: Duration = Duration::from_secs(2);

const DAY_MS: u32 = 86_400_000;

#[derive(Debug, Clone, PartialEq)]
pub struct FileSettings {
    pub path: PathBuf,
    pub pace: Pace,
}

/// Start the replay thread. The file is opened in the thread; a failure to open is
/// recorded as `GNSS_FILE_READ` in the status and ends the thread. Errors only when the
/// thread cannot be spawned.
pub fn spawn(settings: FileSettings, stop: Arc<AtomicBool>) -> io::Result<SourceHandle> {
    let (tx, chunks) = sync_channel(CHANNEL_CAPACITY);
    let status = Arc::new(SourceStatus::default());
    let thread_status = Arc::clone(&status);
    let thread = std::thread::Builder::new()
        .name("gnss-file".into())
        .spawn(move || {
            if let Err(error) = run(&settings, &stop, &tx, &thread_status) {
                thread_status.record(&error);
            }
            thread_status.set_connected(false);
        })?;
    Ok(SourceHandle::threaded(chunks, status, thread))
}

fn run(
    settings: &FileSettings,
    stop: &AtomicBool,
    tx: &SyncSender<Chunk>,
    status: &SourceStatus,
) -> Result<(), GnssError> {
    let read_error = |source| GnssError::FileRead {
        path: settings.path.clone(),
        source,
    };
    let mut file = File::open(&settings.path).map_err(read_error)?;
    status.set_connected(true);
    let mut buf = [0u8; CHUNK_LEN];
    let mut pacer = Pacer::default();
    let mut line = Chunk::new();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        status.add_bytes(n);
        let bytes = buf.get(..n).unwrap_or(&[]);
        match settings.pace {
            Pace::Fast => {
                if !deliver(tx, Chunk::from_slice(bytes).unwrap_or_default(), stop) {
                    return Ok(());
                }
            }
            Pace::Realtime => {
                // Line by line, so the wait happens before the sentence that is later.
                for &b in bytes {
                    // Cannot fail: the line is flushed below whenever it is full.
                    let _ = line.push(b);
                    let end = b == b'\n';
                    if end {
                        let wait = pacer.wait_before(&line);
                        if !wait.is_zero() && !sleep_unless_stopped(wait, stop) {
                            return Ok(());
                        }
                    }
                    if (end || line.is_full()) && !deliver(tx, core::mem::take(&mut line), stop) {
                        return Ok(());
                    }
                }
            }
        }
    }
    if !line.is_empty() {
        deliver(tx, line, stop);
    }
    Ok(())
}

/// Realtime pacing: remembers the last sentence time seen.
#[derive(Debug, Default)]
struct Pacer {
    last_time_ms: Option<u32>,
}

impl Pacer {
    /// How long to wait before delivering `line`: the time since the previous sentence
    /// time, when this line carries a later one; capped; zero otherwise.
    fn wait_before(&mut self, line: &[u8]) -> Duration {
        let text = match core::str::from_utf8(line) {
            Ok(t) => t.trim_end_matches(['\r', '\n', ' ']),
            Err(_) => return Duration::ZERO,
        };
        let Parsed::Observation(obs) = sentence::parse(text) else {
            return Duration::ZERO;
        };
        let Some(t) = obs.time_of_day_ms() else {
            return Duration::ZERO;
        };
        let previous = self.last_time_ms.replace(t);
        match previous {
            // Later the same day, or across midnight.
            Some(p) if t != p => {
                let delta = (t + DAY_MS - p) % DAY_MS;
                Duration::from_millis(u64::from(delta)).min(MAX_PACE_SLEEP)
            }
            _ => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const LOG: &str = "# a comment\r\n\
        $GPGGA,120000.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*73\r\n\
        $GPGGA,120000.50,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*76\r\n\
        $GPGGA,120001.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*72\r\n";

    fn replay(pace: Pace) -> (Vec<u8>, Duration, Arc<SourceStatus>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.nmea");
        std::fs::write(&path, LOG).unwrap();
        let started = Instant::now();
        let handle = spawn(
            FileSettings { path, pace },
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap();
        let mut got = Vec::new();
        while let Ok(chunk) = handle.chunks.recv_timeout(Duration::from_secs(5)) {
            got.extend_from_slice(&chunk);
        }
        let status = Arc::clone(&handle.status);
        handle.join();
        (got, started.elapsed(), status)
    }

    #[test]
    fn fast_replay_delivers_the_whole_file_at_once() {
        let (got, took, status) = replay(Pace::Fast);
        assert_eq!(got, LOG.as_bytes());
        assert!(took < Duration::from_millis(500), "{took:?}");
        assert_eq!(status.bytes(), LOG.len() as u64);
    }

    #[test]
    fn realtime_replay_waits_by_the_sentence_times() {
        let (got, took, _) = replay(Pace::Realtime);
        assert_eq!(got, LOG.as_bytes());
        assert!(took >= Duration::from_millis(950), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[test]
    fn pacing_is_capped_and_crosses_midnight() {
        let mut p = Pacer::default();
        let at = |hms: &str| {
            let body = format!("GPGGA,{hms},4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,");
            format!(
                "${body}*{:02X}\r\n",
                crate::gnss::framer::xor(body.as_bytes())
            )
        };
        assert_eq!(p.wait_before(at("235959.5").as_bytes()), Duration::ZERO);
        assert_eq!(
            p.wait_before(at("000000.0").as_bytes()),
            Duration::from_millis(500)
        );
        assert_eq!(p.wait_before(at("010000.0").as_bytes()), MAX_PACE_SLEEP);
    }

    #[test]
    fn a_missing_log_is_recorded_as_file_read() {
        let (tx_stop, path) = (
            Arc::new(AtomicBool::new(false)),
            PathBuf::from("/nonexistent/x.log"),
        );
        let handle = spawn(
            FileSettings {
                path,
                pace: Pace::Fast,
            },
            tx_stop,
        )
        .unwrap();
        assert!(handle.chunks.recv_timeout(Duration::from_secs(5)).is_err());
        let status = Arc::clone(&handle.status);
        handle.join();
        assert_eq!(status.last_error().map(|e| e.code), Some("GNSS_FILE_READ"));
    }
}
