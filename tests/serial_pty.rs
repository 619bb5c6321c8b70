//! The serial reader the daemon uses ([`serial::direct`]: the port read in its consumer's own
//! thread) against real pseudo-terminals: the test holds the master end (the "receiver") and
//! points a udev-style symlink at the slave end (the "device"). The test's thread is the
//! consumer, as the ingest thread is in the daemon: it reads through the agent's pipeline and
//! hands each read the pipeline's receiver time.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gps_agent::config::ValidateConfig;
use gps_agent::fix::Fix;
use gps_agent::gnss::source::serial::{self, SerialSettings};
use gps_agent::gnss::source::{Next, SourceHandle};
use gps_agent::pipeline::Pipeline;
use serialport::TTYPort;
use support::pty::receiver_at;

/// 12:00:`second` on 2024-03-23, at 8 decimals of minutes.
fn rmc(second: u32) -> String {
    let body =
        format!("GPRMC,1200{second:02}.00,A,4807.03800001,N,01131.00000000,E,0.5,54.7,230324,,,A");
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}\r\n")
}

/// 12:00:`second` in ms of the day.
fn at(second: u32) -> i64 {
    i64::from((12 * 3600 + second) * 1000)
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

/// The port as the ingest thread reads it, and the fixes it yielded.
struct Consumer {
    source: SourceHandle,
    pipeline: Pipeline,
    fixes: Vec<Fix>,
}

impl Consumer {
    fn new(settings: SerialSettings) -> Self {
        Consumer {
            source: serial::direct(settings),
            pipeline: Pipeline::new(true, ValidateConfig::default()),
            fixes: Vec::new(),
        }
    }

    /// One read of at most 50 ms, through the pipeline.
    fn read(&mut self) {
        let receiver_time = self.pipeline.receiver_time();
        if let Next::Chunk(chunk) = self
            .source
            .next_chunk(Duration::from_millis(50), receiver_time)
        {
            let fixes = &mut self.fixes;
            self.pipeline.feed(&chunk, &mut |v| fixes.extend(v.ok()));
        }
    }

    /// Reads until `done` holds, doing `before_each` before each read; fails after `limit`,
    /// naming `what` it waited for.
    fn read_until(
        &mut self,
        what: &str,
        limit: Duration,
        mut before_each: impl FnMut(),
        mut done: impl FnMut(&Self) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "no {what} within {limit:?}; outages {}, stuck {}, connected {}, fixes {}, last error {:?}",
                self.source.status.outages(),
                self.source.status.stuck_events(),
                self.source.status.connected(),
                self.fixes.len(),
                self.source.status.last_error()
            );
            before_each();
            self.read();
        }
    }

    /// Reads until `done` holds, the receiver silent.
    fn listen_until(&mut self, what: &str, limit: Duration, done: impl FnMut(&Self) -> bool) {
        self.read_until(what, limit, || {}, done);
    }

    /// Reads until the fix of 12:00:`want` is out, the receiver writing `rmc(second)`
    /// before each read for `second` from `first` on (a fix is out once the next second's
    /// sentence arrives).
    fn talk_until_fix(&mut self, receiver: &mut TTYPort, first: u32, want: u32) {
        let mut second = first;
        let talk = || {
            let _ = receiver.write_all(rmc(second).as_bytes());
            second = (second + 1).min(59);
        };
        let what = format!("fix of 12:00:{want:02}");
        self.read_until(&what, Duration::from_secs(10), talk, |c| {
            c.fixes
                .iter()
                .any(|f| f.time_ms.rem_euclid(86_400_000) == at(want))
        });
    }
}

#[test]
fn fixes_are_read_through_the_port_and_a_vanished_receiver_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("gps0");
    let mut receiver = receiver_at(&link);
    let mut port = Consumer::new(settings(link.clone(), Duration::from_secs(30)));

    port.talk_until_fix(&mut receiver, 0, 1);
    let fix = port.fixes[1];
    assert!(
        (fix.lat - (48.0 + 7.038_000_01 / 60.0)).abs() < 1e-9,
        "{fix:?}"
    );
    assert!(port.source.status.connected());
    assert_eq!(port.source.status.outages(), 0);

    // Unplug: the far end closes; the device node goes away.
    drop(receiver);
    let _ = std::fs::remove_file(&link);
    port.listen_until("outage", Duration::from_secs(5), |c| {
        c.source.status.outages() >= 1 && !c.source.status.connected()
    });
    assert!(port.source.status.last_error().is_some());

    // Plug back in (a new pty under the same name): reading resumes.
    let mut receiver = receiver_at(&link);
    port.talk_until_fix(&mut receiver, 20, 22);
    assert!(port.source.status.connected());
    assert_eq!(port.source.status.outages(), 1, "one unplug, one outage");
    assert!(
        port.source.status.errors().get("GNSS_DEVICE_GONE")
            + port.source.status.errors().get("GNSS_DEVICE_OPEN")
            >= 1
    );
    let status = std::sync::Arc::clone(&port.source.status);
    port.source.close();
    assert!(!status.connected(), "closed by its consumer");
}

#[test]
fn a_silent_receiver_is_reported_stuck_and_the_port_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("gps0");
    let mut receiver = receiver_at(&link);
    let mut port = Consumer::new(settings(link.clone(), Duration::from_millis(400)));
    port.listen_until("stuck report", Duration::from_secs(5), |c| {
        c.source.status.stuck_events() >= 1
    });
    assert_eq!(
        port.source.status.errors().get("GNSS_STUCK"),
        port.source.status.stuck_events()
    );
    assert_eq!(
        port.source.status.last_error().map(|e| e.message),
        Some(format!(
            "GNSS receiver on {} stuck: no bytes for 400ms",
            link.display()
        ))
    );
    assert_eq!(port.source.status.outages(), 0, "stuck is not an outage");
    // Reopened and still reading.
    port.talk_until_fix(&mut receiver, 0, 1);
}

#[test]
fn a_receiver_repeating_the_same_epoch_time_is_reported_stuck_by_the_time_its_consumer_hands_over()
{
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("gps0");
    let mut receiver = receiver_at(&link);
    let mut port = Consumer::new(settings(link.clone(), Duration::from_millis(600)));
    // The same second before every read: bytes flow, the time stands still, and since no
    // sentence of a later time comes, no epoch is ever completed: only the pipeline's
    // receiver time, handed to each read, shows it.
    port.read_until(
        "stuck report",
        Duration::from_secs(10),
        || {
            let _ = receiver.write_all(rmc(5).as_bytes());
        },
        |c| c.source.status.stuck_events() > 0,
    );
    assert_eq!(port.pipeline.receiver_time(), Some((12 * 3600 + 5) * 1000));
    assert!(port.fixes.is_empty());
    let error = port.source.status.last_error().unwrap();
    assert_eq!(error.code, "GNSS_STUCK");
    assert!(error.message.contains("time not advancing"), "{error:?}");
}

#[test]
fn a_receiver_that_stays_stuck_is_reopened_ever_less_often_until_its_time_advances() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("gps0");
    let mut receiver = receiver_at(&link);
    let stuck_after = Duration::from_millis(200);
    let mut port = Consumer::new(settings(link.clone(), stuck_after));

    // Silent: each reopen allows the next session twice as long (the arithmetic has its
    // unit tests in gnss::source::stuck; here, that the reader lives by it).
    port.listen_until("limit grown to 800 ms", Duration::from_secs(20), |c| {
        c.source.status.stuck_limit() == Duration::from_millis(800)
    });
    assert_eq!(port.source.status.stuck_events(), 2, "200 ms, then 400 ms");
    assert_eq!(
        port.source.status.last_error().map(|e| e.code),
        Some("GNSS_STUCK")
    );

    // Its time advances in this session: the next session is back at stuck_after.
    let before = port.source.status.stuck_events();
    port.talk_until_fix(&mut receiver, 10, 12);
    port.listen_until(
        "session back at stuck_after",
        Duration::from_secs(20),
        |c| c.source.status.stuck_events() > before && c.source.status.stuck_limit() == stuck_after,
    );
}
