//! Feeding a simulated drive to a reader: into a real pseudo-terminal at the drive's rate (as
//! the demo's simulated receiver does), into a log all at once, and into a closed pipe.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gps_agent::error::{Classified, ErrorClass};
use gps_agent::sim::{
    write_log, write_paced, write_realtime, Drive, DriveSpec, Pacer, SimError, STOP_POLL,
};
use serialport::TTYPort;
use std::cell::Cell;

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
    assert!(first_at.is_some());
    // Six epochs at 10 Hz: the last goes out 500 ms after the first, never sooner (how much
    // later depends on the machine; the schedule itself is checked on a test clock below).
    assert!(
        last_at >= Duration::from_millis(500),
        "too fast: {last_at:?}"
    );
}

/// A clock that moves only when the feed sleeps; stops the feed at `stop_at`.
struct TestClock {
    t0: Instant,
    now: Cell<Duration>,
    stop_at: Option<Duration>,
    stop: Arc<AtomicBool>,
}

impl Pacer for TestClock {
    fn now(&self) -> Instant {
        self.t0 + self.now.get()
    }
    fn sleep(&self, d: Duration) {
        assert!(
            d <= STOP_POLL,
            "one sleep of {d:?}: a stop would wait that long"
        );
        self.now.set(self.now.get() + d);
        if self.stop_at.is_some_and(|at| self.now.get() >= at) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// Records at what time (on the test clock) each write came.
struct Stamped<'a> {
    clock: &'a TestClock,
    at: Vec<Duration>,
}

impl std::io::Write for Stamped<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.at.push(self.clock.now.get());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn test_clock(stop_at: Option<Duration>) -> TestClock {
    TestClock {
        t0: Instant::now(),
        now: Cell::new(Duration::ZERO),
        stop_at,
        stop: Arc::new(AtomicBool::new(false)),
    }
}

#[test]
fn epoch_k_goes_out_k_periods_after_the_first_at_1_5_and_10_hz() {
    for rate in [1u8, 5, 10] {
        let clock = test_clock(None);
        let mut out = Stamped {
            clock: &clock,
            at: Vec::new(),
        };
        let written = write_paced(
            Drive::new(spec(12, rate)).unwrap(),
            &mut out,
            &clock.stop,
            &clock,
        )
        .unwrap();
        assert_eq!(written, 12);
        let period = Duration::from_millis(1000 / u64::from(rate));
        let mut epochs: Vec<Duration> = out.at.clone();
        epochs.dedup();
        let want: Vec<Duration> = (0..12u32).map(|k| period * k).collect();
        assert_eq!(epochs, want, "{rate} Hz");
    }
}

#[test]
fn the_realtime_feed_stops_within_one_poll_when_asked() {
    // A ten-minute drive at 1 Hz, stopped 150 ms in: only the first epoch was due.
    let clock = test_clock(Some(Duration::from_millis(150)));
    let mut out = Vec::new();
    let written = write_paced(
        Drive::new(spec(600, 1)).unwrap(),
        &mut out,
        &clock.stop,
        &clock,
    )
    .unwrap();
    assert_eq!(written, 1);
    assert_eq!(out, log_bytes(spec(1, 1)));
    assert!(
        clock.now.get() <= Duration::from_millis(150) + STOP_POLL,
        "returned at {:?} on the feed's clock",
        clock.now.get()
    );
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
