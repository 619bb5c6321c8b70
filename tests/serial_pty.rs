//! The serial source against real pseudo-terminals: the test holds the master end (the
//! "receiver") and points a udev-style symlink at the slave end (the "device").

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gps_agent::gnss::source::serial::{self, SerialSettings};
use gps_agent::gnss::source::SourceHandle;
use gps_agent::gnss::{Decoded, Decoder};
use serialport::TTYPort;
use support::pty::receiver_at;

fn rmc(second: u32) -> String {
    let body =
        format!("GPRMC,1200{second:02}.00,A,4807.03800001,N,01131.00000000,E,0.5,54.7,230324,,,A");
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}\r\n")
}

fn settings(path: PathBuf, stuck_after: Duration) -> SerialSettings {
    SerialSettings {
        path,
        baud: 9600,
        stuck_after,
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
    }
}

/// Keep writing sentences of increasing seconds from `first` until the decoder has
/// produced an epoch of `want_second`, or fail after `limit`.
fn feed_until_epoch(
    master: &mut TTYPort,
    source: &SourceHandle,
    decoder: &mut Decoder,
    first: u32,
    want_second: u32,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    let mut second = first;
    let want_ms = (12 * 3600 + want_second) * 1000;
    loop {
        assert!(
            Instant::now() < deadline,
            "no epoch for second {want_second} within {limit:?}; status: outages {} connected {}",
            source.status.outages(),
            source.status.connected()
        );
        let _ = master.write_all(rmc(second).as_bytes());
        second = (second + 1).min(59);
        let mut found = false;
        while let Ok(chunk) = source.chunks.recv_timeout(Duration::from_millis(100)) {
            decoder.feed(&chunk, &mut |d| {
                if let Decoded::Epoch(e) = d {
                    source
                        .status
                        .note_receiver_time(e.time_of_day_ms.unwrap_or(0));
                    if e.time_of_day_ms == Some(want_ms) {
                        assert!(
                            (e.rmc.and_then(|r| r.lat).unwrap_or(0.0) - (48.0 + 7.03800001 / 60.0))
                                .abs()
                                < 1e-9
                        );
                        found = true;
                    }
                }
            });
        }
        if found {
            return;
        }
    }
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn fixes_are_read_through_the_port_and_a_vanished_receiver_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("gps0");
    let mut master = receiver_at(&link);
    let stop = Arc::new(AtomicBool::new(false));
    let source = serial::spawn(
        settings(link.clone(), Duration::from_secs(30)),
        Arc::clone(&stop),
    )
    .unwrap();
    let mut decoder = Decoder::new(true);

    feed_until_epoch(
        &mut master,
        &source,
        &mut decoder,
        0,
        1,
        Duration::from_secs(10),
    );
    assert!(source.status.connected());
    assert_eq!(source.status.outages(), 0);

    // Unplug: the far end closes; the device node goes away.
    drop(master);
    let _ = std::fs::remove_file(&link);
    wait_for("the outage to be counted", Duration::from_secs(5), || {
        source.status.outages() >= 1 && !source.status.connected()
    });
    assert!(source.status.last_error().is_some());

    // Plug back in (a new pty under the same name): reading resumes.
    let mut master = receiver_at(&link);
    feed_until_epoch(
        &mut master,
        &source,
        &mut decoder,
        20,
        22,
        Duration::from_secs(10),
    );
    assert!(source.status.connected());
    assert_eq!(source.status.outages(), 1, "one unplug, one outage");
    assert!(
        source.status.errors().get("GNSS_DEVICE_GONE")
            + source.status.errors().get("GNSS_DEVICE_OPEN")
            >= 1
    );

    // The reader notices the stop flag within one read timeout; joining must not hang.
    stop.store(true, Ordering::Relaxed);
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        source.join();
        let _ = done_tx.send(());
    });
    assert!(
        done.recv_timeout(Duration::from_secs(30)).is_ok(),
        "the serial thread did not stop"
    );
}

#[test]
fn a_silent_receiver_is_reported_stuck_and_the_port_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("gps0");
    let mut master = receiver_at(&link);
    let stop = Arc::new(AtomicBool::new(false));
    let source = serial::spawn(
        settings(link.clone(), Duration::from_millis(400)),
        Arc::clone(&stop),
    )
    .unwrap();
    wait_for("a stuck report", Duration::from_secs(5), || {
        source.status.stuck_events() >= 1
    });
    assert_eq!(
        source.status.errors().get("GNSS_STUCK"),
        source.status.stuck_events()
    );
    assert_eq!(source.status.outages(), 0, "stuck is not an outage");
    // Reopened and still reading.
    let mut decoder = Decoder::new(true);
    feed_until_epoch(
        &mut master,
        &source,
        &mut decoder,
        0,
        1,
        Duration::from_secs(5),
    );
    stop.store(true, Ordering::Relaxed);
    source.join();
}

#[test]
fn a_receiver_repeating_the_same_epoch_time_is_reported_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("gps0");
    let mut master = receiver_at(&link);
    let stop = Arc::new(AtomicBool::new(false));
    let source = serial::spawn(
        settings(link.clone(), Duration::from_millis(600)),
        Arc::clone(&stop),
    )
    .unwrap();
    let mut decoder = Decoder::new(true);
    // The same second ten times a second: bytes flow, the time stands still, and since no
    // sentence of a later time comes, no epoch is ever completed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while source.status.stuck_events() == 0 {
        assert!(Instant::now() < deadline, "frozen receiver not reported");
        let _ = master.write_all(rmc(5).as_bytes());
        while let Ok(chunk) = source.chunks.recv_timeout(Duration::from_millis(100)) {
            decoder.feed(&chunk, &mut |_| {});
            if let Some(t) = decoder.latest_time_of_day_ms() {
                source.status.note_receiver_time(t);
            }
        }
    }
    let error = source.status.last_error().unwrap();
    assert_eq!(error.code, "GNSS_STUCK");
    assert!(error.message.contains("time not advancing"), "{error:?}");
    stop.store(true, Ordering::Relaxed);
    source.join();
}

#[test]
fn a_receiver_that_stays_stuck_is_reopened_ever_less_often_until_its_time_advances() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("gps0");
    let mut master = receiver_at(&link);
    let stop = Arc::new(AtomicBool::new(false));
    let stuck_after = Duration::from_millis(200);
    let source = serial::spawn(settings(link.clone(), stuck_after), Arc::clone(&stop)).unwrap();

    // Silent: each reopen allows the next session twice as long (the arithmetic has its
    // unit tests in gnss::source::stuck; here, that the source lives by it).
    wait_for(
        "the limit to grow to 800 ms",
        Duration::from_secs(20),
        || source.status.stuck_limit() == Duration::from_millis(800),
    );
    assert!(source.status.stuck_events() >= 2);
    assert_eq!(
        source.status.last_error().map(|e| e.code),
        Some("GNSS_STUCK")
    );

    // Its time advances in this session: the next session is back at stuck_after.
    let before = source.status.stuck_events();
    let mut decoder = Decoder::new(true);
    for second in 10..14 {
        let _ = master.write_all(rmc(second).as_bytes());
        while let Ok(chunk) = source.chunks.recv_timeout(Duration::from_millis(50)) {
            decoder.feed(&chunk, &mut |_| {});
            if let Some(t) = decoder.latest_time_of_day_ms() {
                source.status.note_receiver_time(t);
            }
        }
    }
    wait_for(
        "a session back at stuck_after",
        Duration::from_secs(20),
        || source.status.stuck_events() > before && source.status.stuck_limit() == stuck_after,
    );
    stop.store(true, Ordering::Relaxed);
    source.join();
}
