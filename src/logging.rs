//! Logs: `tracing` JSON lines (text on a terminal), with `component`, `code`, `class` and
//! `seq` fields where known, so journald and log shippers can filter by code.
//!
//! **Repeats are throttled**: a warning or error with a `code` field is logged the first time,
//! then at most once per [`THROTTLE_INTERVAL`] per code; what was held back is counted and
//! reported by [`report_suppressed`] (called from the agent's main loop) as one line per code
//! with the count. A broken receiver or a dead link cannot flood the journal or wear the
//! flash. Informational and debug events are never throttled. The table of codes is fixed
//! (64); codes beyond it are not throttled rather than lost.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// One log line per code per this interval, at most.
pub const THROTTLE_INTERVAL: Duration = Duration::from_secs(60);
const MAX_CODES: usize = 64;

/// Where logs go: `run` writes to stdout (journald takes it); the offline subcommands to
/// stderr, so their stdout stays data; the demo to a file, so its terminal tells only the
/// demo's story.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output<'a> {
    Stdout,
    Stderr,
    /// Appended to this file, as text; stderr when it cannot be opened.
    File(&'a std::path::Path),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Install the global subscriber. `level` is a level or an `EnvFilter` directive; a bad one
/// falls back to `info`. A second call is ignored.
pub fn init(output: Output<'_>, format: Option<Format>, level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    if let Output::File(path) = output {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        if let Ok(file) = file {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(ThrottleLayer::global())
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(false)
                        .with_writer(Mutex::new(file)),
                )
                .try_init();
            return;
        }
        return init(Output::Stderr, format, level);
    }
    let is_terminal = match output {
        Output::Stdout => std::io::stdout().is_terminal(),
        Output::Stderr | Output::File(_) => std::io::stderr().is_terminal(),
    };
    let format = format.unwrap_or(if is_terminal {
        Format::Text
    } else {
        Format::Json
    });
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(ThrottleLayer::global());
    let _ = match (format, output) {
        (Format::Json, Output::Stdout) => registry
            .with(json_layer().with_writer(std::io::stdout))
            .try_init(),
        (Format::Json, Output::Stderr) => registry
            .with(json_layer().with_writer(std::io::stderr))
            .try_init(),
        (Format::Text, Output::Stdout) => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stdout))
            .try_init(),
        (Format::Text, Output::Stderr | Output::File(_)) => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        (Format::Json, Output::File(_)) => registry
            .with(json_layer().with_writer(std::io::stderr))
            .try_init(),
    };
}

type JsonLayer<S> = tracing_subscriber::fmt::Layer<
    S,
    tracing_subscriber::fmt::format::JsonFields,
    tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json>,
>;

fn json_layer<S>() -> JsonLayer<S>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
}

/// Per-code state: when the current window began, and how many were held back in it.
#[derive(Debug, Clone)]
struct Entry {
    code: heapless::String<40>,
    window_start: Instant,
    suppressed: u64,
}

/// The throttle's table, shared by the layer and [`report_suppressed`].
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    entries: Mutex<heapless::Vec<Entry, MAX_CODES>>,
}

impl Throttle {
    pub const fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            entries: Mutex::new(heapless::Vec::new()),
        }
    }

    /// Should an event with `code` at `now` be logged?
    pub fn admit(&self, code: &str, now: Instant) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = entries.iter_mut().find(|e| e.code.as_str() == code) {
            if now.saturating_duration_since(e.window_start) < self.interval {
                e.suppressed += 1;
                return false;
            }
            e.window_start = now;
            return true;
        }
        let mut name = heapless::String::new();
        if name.push_str(code).is_ok() {
            // A full table: the code goes unthrottled rather than unlogged.
            let _ = entries.push(Entry {
                code: name,
                window_start: now,
                suppressed: 0,
            });
        }
        true
    }

    /// Codes whose window has ended with events held back: (code, count). Their counts are
    /// reset; the window goes on, so the next event of the code is still held back until the
    /// window ends.
    pub fn take_suppressed(&self, now: Instant) -> Vec<(String, u64)> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for e in entries.iter_mut() {
            if e.suppressed > 0 && now.saturating_duration_since(e.window_start) >= self.interval {
                out.push((e.code.as_str().to_owned(), e.suppressed));
                e.suppressed = 0;
                e.window_start = now;
            }
        }
        out
    }
}

static GLOBAL: Throttle = Throttle::new(THROTTLE_INTERVAL);

/// Log one line per code whose repeats were held back in the last interval. Called from the
/// agent's main loop (outside any logging call, so these lines are not throttled away).
pub fn report_suppressed() {
    for (code, count) in GLOBAL.take_suppressed(Instant::now()) {
        tracing::warn!(
            code = code.as_str(),
            suppressed = count,
            interval_s = THROTTLE_INTERVAL.as_secs(),
            throttle_summary = true,
            "repeated log lines held back"
        );
    }
}

/// The layer that vetoes repeats (for every output layer behind it).
pub struct ThrottleLayer {
    throttle: &'static Throttle,
}

impl ThrottleLayer {
    pub fn global() -> ThrottleLayer {
        ThrottleLayer { throttle: &GLOBAL }
    }

    pub fn with(throttle: &'static Throttle) -> ThrottleLayer {
        ThrottleLayer { throttle }
    }
}

#[derive(Default)]
struct CodeField {
    code: Option<heapless::String<40>>,
    summary: bool,
}

impl Visit for CodeField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "code" {
            let mut s = heapless::String::new();
            if s.push_str(value).is_ok() {
                self.code = Some(s);
            }
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "throttle_summary" {
            self.summary = value;
        }
    }
    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}

impl<S: Subscriber> Layer<S> for ThrottleLayer {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        // Only warnings and errors are throttled (WARN and ERROR compare below INFO).
        if *event.metadata().level() > Level::WARN {
            return true;
        }
        let mut field = CodeField::default();
        event.record(&mut field);
        match field.code {
            Some(code) if !field.summary => self.throttle.admit(&code, Instant::now()),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex as StdMutex};

    #[test]
    fn the_first_of_a_code_passes_and_repeats_are_counted_until_the_window_ends() {
        let t = Throttle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(t.admit("GNSS_DEVICE_GONE", t0));
        for i in 1..=5 {
            assert!(!t.admit("GNSS_DEVICE_GONE", t0 + Duration::from_secs(i)));
        }
        assert!(
            t.admit("MQTT_CONNECT", t0),
            "other codes have their own window"
        );
        assert!(
            t.take_suppressed(t0 + Duration::from_secs(30)).is_empty(),
            "window not over"
        );
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            t.take_suppressed(later),
            vec![("GNSS_DEVICE_GONE".to_string(), 5)]
        );
        assert!(t.take_suppressed(later).is_empty(), "counted once");
        assert!(t.admit("GNSS_DEVICE_GONE", later + Duration::from_secs(61)));
    }

    #[test]
    fn a_full_table_lets_new_codes_through_unthrottled() {
        let t = Throttle::new(Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..MAX_CODES {
            assert!(t.admit(&format!("CODE_{i}"), now));
        }
        assert!(t.admit("ONE_TOO_MANY", now));
        assert!(
            t.admit("ONE_TOO_MANY", now),
            "not in the table: never held back"
        );
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<StdMutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_the_fields_and_repeats_are_held_back() {
        static THROTTLE: Throttle = Throttle::new(Duration::from_secs(3600));
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::registry()
            .with(ThrottleLayer::with(&THROTTLE))
            .with(json_layer().with_writer(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            for seq in 0..10u64 {
                tracing::warn!(
                    component = "gnss",
                    code = "GNSS_STUCK",
                    class = "transient",
                    seq,
                    "receiver stuck"
                );
            }
            tracing::info!(component = "agent", "not throttled");
            tracing::info!(component = "agent", "not throttled");
        });
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "one warning, two infos: {text}");
        assert_eq!(lines[0]["code"], "GNSS_STUCK");
        assert_eq!(lines[0]["component"], "gnss");
        assert_eq!(lines[0]["class"], "transient");
        assert_eq!(lines[0]["seq"], 0);
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(THROTTLE.entries.lock().unwrap()[0].suppressed, 9);
    }
}
