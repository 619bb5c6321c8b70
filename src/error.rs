//! Error classes shared by every stage: how a failure is handled, and its stable code.
//!
//! Each stage keeps its own `thiserror` enum beside it (`gnss::GnssError`,
//! `config::ConfigError`, `buffer::BufferError`, ...). Every variant maps to a stable,
//! machine-readable code (`GNSS_CHECKSUM`, `BUFFER_DISK_FULL`, ...) used in logs, metrics
//! labels and `/health`, and to one [`ErrorClass`] that decides what the agent does about it.

use serde::Serialize;

/// What the agent does about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// Expected to pass by itself: retry with backoff (link down, device unplugged).
    Transient,
    /// Will not pass by retrying: report, dead-letter, do not hammer (bad credentials, bad data).
    Permanent,
    /// The agent's own state is at risk: recover and raise an alarm (corrupt buffer file).
    Critical,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Critical => "critical",
        }
    }
}

/// A failure with a stable code and a class. Implemented by every stage's error enum.
pub trait Classified {
    /// Stable, machine-readable code, e.g. `GNSS_DEVICE_GONE`. Never renamed.
    fn code(&self) -> &'static str;
    /// How the agent handles it.
    fn class(&self) -> ErrorClass;
}
