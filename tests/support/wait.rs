//! The one way a test waits: for a condition, up to a deadline, and on failure it says what it
//! waited for. A test never sleeps and then asserts; it names the condition the sleep stood
//! for and waits for that. The deadline is a hang guard, not a measurement: a loaded machine
//! may take long, so deadlines are generous and nothing asserts on how long a wait took.
//!
//! A probe answers `bool` (the condition holds) or `Option<T>` (the value the test waited for).
//! [`until`] / [`until_async`] fail the test after the deadline; [`poll`] / [`poll_async`]
//! return `None` instead, for callers that add what they saw to the failure message or treat
//! "not within" as an answer. The async flavours yield to the runtime between probes, so an
//! in-process broker or publisher on the same runtime keeps running.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// Between two probes.
const EVERY: Duration = Duration::from_millis(20);

/// What a probe answers: met (with a value) or not yet.
pub trait Met {
    type Value;
    fn met(self) -> Option<Self::Value>;
}

impl Met for bool {
    type Value = ();
    fn met(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Met for Option<T> {
    type Value = T;
    fn met(self) -> Option<T> {
        self
    }
}

/// Probes until met; `None` once `within` has passed without it (the probe runs at least once,
/// and once more at the deadline).
pub fn poll<R: Met>(within: Duration, mut probe: impl FnMut() -> R) -> Option<R::Value> {
    let deadline = Instant::now() + within;
    loop {
        let last = Instant::now() >= deadline;
        if let Some(v) = probe().met() {
            return Some(v);
        }
        if last {
            return None;
        }
        std::thread::sleep(EVERY.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// Probes until met; fails the test, naming `what`, once `within` has passed.
pub fn until<R: Met>(what: impl Display, within: Duration, probe: impl FnMut() -> R) -> R::Value {
    poll(within, probe).unwrap_or_else(|| panic!("waited {within:?} for {what}, in vain"))
}

/// [`poll`] for async tests: yields to the runtime between probes.
pub async fn poll_async<R: Met>(
    within: Duration,
    mut probe: impl AsyncFnMut() -> R,
) -> Option<R::Value> {
    let deadline = Instant::now() + within;
    loop {
        let last = Instant::now() >= deadline;
        if let Some(v) = probe().await.met() {
            return Some(v);
        }
        if last {
            return None;
        }
        tokio::time::sleep(EVERY.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// [`until`] for async tests: yields to the runtime between probes.
pub async fn until_async<R: Met>(
    what: impl Display,
    within: Duration,
    probe: impl AsyncFnMut() -> R,
) -> R::Value {
    poll_async(within, probe)
        .await
        .unwrap_or_else(|| panic!("waited {within:?} for {what}, in vain"))
}
