//! A publisher under test: settings with short timers, and a running `Publisher` over a
//! [`MemSource`](super::source::MemSource) with waits that fail the test instead of hanging.

use super::source::MemSource;
use super::wait;
use gps_agent::status::{MqttStatus, StatusBoard};
use gps_agent::uplink::backoff::{BackoffPolicy, Jitter};
use gps_agent::uplink::breaker::BreakerPolicy;
use gps_agent::uplink::publisher::{Publisher, PublisherSettings};
use gps_agent::uplink::reconnect::ProbePolicy;
use std::num::NonZeroU32;
use std::time::Duration;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// Settings for tests: short timers, a breaker that stays out of the way, unique client id.
pub fn fast_settings(url: &str, device: &str, topic_prefix: &str) -> PublisherSettings {
    let mut s = PublisherSettings::new(url, device).unwrap();
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
        open_max: Duration::from_millis(500),
    };
    s.probe = ProbePolicy {
        interval: Duration::from_millis(50),
        max: Duration::from_millis(200),
    };
    s.linger = Duration::ZERO;
    s.permanent_retry = Duration::from_secs(1);
    s.shutdown_grace = Duration::from_secs(2);
    s.idle_poll = Duration::from_millis(200);
    s
}

pub struct Running {
    pub source: MemSource,
    /// Where the publisher publishes its state.
    pub board: StatusBoard,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<MemSource>,
}

/// Start a publisher over `source`, jitter off.
pub fn start(settings: PublisherSettings, source: MemSource) -> Running {
    start_with_jitter(settings, source, Jitter::Off)
}

/// Start a publisher over `source` with this jitter (seeded: as in the field, reproducibly).
pub fn start_with_jitter(
    settings: PublisherSettings,
    source: MemSource,
    jitter: Jitter,
) -> Running {
    let board = StatusBoard::default();
    let publisher = Publisher::new(settings, source.clone(), board.clone()).with_jitter(jitter);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(publisher.run(shutdown.clone()));
    Running {
        source,
        board,
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

    /// The uplink's state as last published.
    pub fn status(&self) -> MqttStatus {
        self.board.read().mqtt
    }

    /// Until the published state satisfies `pred` (checked at every publication, and every
    /// 20 ms for counters that do not wake subscribers); fails after 10 s.
    pub async fn wait_status(&mut self, what: &str, pred: impl Fn(&MqttStatus) -> bool) {
        let mut changes = self.board.subscribe();
        let became = wait::poll_async(Duration::from_secs(10), async || {
            pred(&self.status()) || {
                let _ = timeout(Duration::from_millis(20), changes.changed()).await;
                pred(&self.status())
            }
        })
        .await;
        assert!(
            became.is_some(),
            "status never became {what}: {:?}",
            self.status()
        );
    }

    /// Until `n` fixes are acked; `context` adds to the failure message (a broker log).
    pub async fn wait_acked_or(&self, n: usize, within: Duration, context: impl Fn() -> String) {
        let acked = wait::poll_async(within, async || self.source.acked_count() >= n).await;
        assert!(
            acked.is_some(),
            "only {} of {n} acked; status {:?}{}",
            self.source.acked_count(),
            self.status(),
            context()
        );
    }

    pub async fn wait_acked(&self, n: usize) {
        self.wait_acked_or(n, Duration::from_secs(15), String::new)
            .await;
    }

    /// Until the status's last error has `code`; returns that status.
    pub async fn wait_error(&mut self, code: &str) -> MqttStatus {
        let what = format!("last_error {code}");
        self.wait_status(&what, |s| {
            s.last_error.as_ref().map(|e| e.code) == Some(code)
        })
        .await;
        self.status()
    }
}
