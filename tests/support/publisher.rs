//! A publisher under test: settings with short timers, and a running `Publisher` over a
//! [`MemSource`](super::source::MemSource) with waits that fail the test instead of hanging.

use super::source::MemSource;
use gps_agent::uplink::backoff::{BackoffPolicy, Jitter};
use gps_agent::uplink::breaker::BreakerPolicy;
use gps_agent::uplink::publisher::{Publisher, PublisherSettings, UplinkStatus};
use std::num::NonZeroU32;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

/// Settings for tests: short timers, a breaker that stays out of the way, unique client id.
pub fn fast_settings(url: &str, device: &str, topic_prefix: &str) -> PublisherSettings {
    let mut s = PublisherSettings::new(url, device);
    s.client_id = super::unique("agent");
    s.topic_prefix = topic_prefix.into();
    s.puback_timeout = Duration::from_secs(2);
    s.keep_alive = Duration::from_secs(5);
    s.backoff = BackoffPolicy {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        reset_after: Duration::from_secs(1),
    };
    s.breaker = BreakerPolicy {
        failure_threshold: NonZeroU32::new(100).unwrap(),
        open_for: Duration::from_millis(500),
    };
    s.permanent_retry = Duration::from_secs(1);
    s.shutdown_grace = Duration::from_secs(2);
    s.idle_poll = Duration::from_millis(200);
    s
}

pub struct Running {
    pub source: MemSource,
    pub status: watch::Receiver<UplinkStatus>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<MemSource>,
}

/// Start a publisher over `source`, jitter off.
pub fn start(settings: PublisherSettings, source: MemSource) -> Running {
    let publisher = Publisher::new(settings, source.clone()).with_jitter(Jitter::Off);
    let status = publisher.status();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(publisher.run(shutdown.clone()));
    Running {
        source,
        status,
        shutdown,
        task,
    }
}

impl Running {
    pub async fn stop(self) -> MemSource {
        self.shutdown.cancel();
        timeout(Duration::from_secs(10), self.task)
            .await
            .expect("publisher did not stop within 10 s")
            .unwrap()
    }

    pub async fn wait_status(&mut self, what: &str, pred: impl Fn(&UplinkStatus) -> bool) {
        let reached = timeout(Duration::from_secs(10), self.status.wait_for(|s| pred(s)))
            .await
            .is_ok();
        assert!(
            reached,
            "status never became {what}: {:?}",
            *self.status.borrow()
        );
    }

    /// Until `n` fixes are acked; `context` adds to the failure message (a broker log).
    pub async fn wait_acked_or(&self, n: usize, within: Duration, context: impl Fn() -> String) {
        let deadline = Instant::now() + within;
        while self.source.acked_count() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} acked; status {:?}{}",
                self.source.acked_count(),
                *self.status.borrow(),
                context()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_acked(&self, n: usize) {
        self.wait_acked_or(n, Duration::from_secs(15), String::new)
            .await;
    }

    /// Until the status's last error has `code`; returns that status.
    pub async fn wait_error(&mut self, code: &str) -> UplinkStatus {
        let reached = timeout(
            Duration::from_secs(10),
            self.status
                .wait_for(|s| s.last_error.as_ref().map(|e| e.0) == Some(code)),
        )
        .await
        .is_ok();
        let status = self.status.borrow().clone();
        assert!(reached, "last_error never became {code}: {status:?}");
        status
    }
}
