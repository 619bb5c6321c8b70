//! Feeding a simulated drive to a reader: into a real pseudo-terminal at the drive's rate (as
//! the demo's simulated receiver does), into a log all at once, and into a closed pipe.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gps_agent::error::{Classified, ErrorClass};
use gps_agent::sim::{write_log, write_realtime, Drive, DriveSpec, SimError};
use serialport::TTYPort;

fn spec(epochs: u32, rate_hz: u8) -> DriveSpec {
    DriveSpec {
        epochs,
        rate_hz,
        corrupt_every: Some(5),
        ..DriveSpec::default()
    }
}

fn log_bytes(spec: DriveSpec) -> Vec<u8> {
    let mut out = Vec::new();
    let n = write_log(Drive::new(spec).unwrap(), &mut out).unwrap();
    assert!(n > 0);
    out
}

#[test]
fn a_log_holds_every_epoch_back_to_back() {
    let spec = spec(50, 1);
    let mut expected = Vec::new();
    for e in Drive::new(spec.clone()).unwrap() {
        e.write_nmea(&mut expected);
    }
    let mut out = Vec::new();
    assert_eq!(write_log(Drive::new(spec).unwrap(), &mut out).unwrap(), 50);
    assert_eq!(out, expected);
}

#[test]
fn the_realtime_feed_paces_epochs_at_the_drive_rate_through_a_pseudo_terminal() {
    let spec = spec(6, 10);
    let expected = log_bytes(spec.clone());
    let (mut master, mut slave) = TTYPort::pair().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let feeder = {
        let stop = Arc::clone(&stop);
        // The feeder keeps the master open until the reader is done, as the demo does: a
        // closed master hangs up the terminal and unread bytes are lost.
        std::thread::spawn(move || {
            let written = write_realtime(Drive::new(spec).unwrap(), &mut master, &stop);
            (written, master)
        })
    };

    let mut got = Vec::new();
    let mut first_at = None;
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < expected.len() && Instant::now() < deadline {
        match slave.read(&mut buf) {
            Ok(n) => {
                first_at.get_or_insert_with(|| started.elapsed());
                got.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(e) => panic!("reading the pseudo-terminal: {e}"),
        }
    }
    let last_at = started.elapsed();
    let (written, _master) = feeder.join().unwrap();
    assert_eq!(written.unwrap(), 6);
    assert_eq!(
        got, expected,
        "the reader sees the drive's bytes, unchanged"
    );
    let first_at = first_at.unwrap();
    assert!(
        first_at < Duration::from_millis(300),
        "first epoch at once: {first_at:?}"
    );
    // Six epochs at 10 Hz: the last goes out 500 ms after the first.
    assert!(
        last_at >= Duration::from_millis(500),
        "too fast: {last_at:?}"
    );
    assert!(
        last_at < Duration::from_millis(2000),
        "too slow: {last_at:?}"
    );
}

#[test]
fn the_realtime_feed_stops_promptly_when_asked() {
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            stop.store(true, Ordering::Relaxed);
        })
    };
    let started = Instant::now();
    let mut out = Vec::new();
    // A ten-minute drive at 1 Hz: only the first epoch is due before the stop.
    let written = write_realtime(Drive::new(spec(600, 1)).unwrap(), &mut out, &stop).unwrap();
    stopper.join().unwrap();
    assert_eq!(written, 1);
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out, log_bytes(spec(1, 1)));
}

#[test]
fn a_reader_that_went_away_is_a_transient_write_error() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let stop = AtomicBool::new(false);
    let err = write_realtime(Drive::new(spec(3, 10)).unwrap(), writer, &stop).unwrap_err();
    assert!(matches!(err, SimError::Write { epoch: 0, .. }), "{err:?}");
    assert_eq!(err.code(), "SIM_WRITE");
    assert_eq!(err.class(), ErrorClass::Transient);
}
