//! Configuration: the TOML file, its documented defaults, and the checks `check-config` runs.
//!
//! Stages: serde reads the raw file into these structs (unknown keys rejected), then
//! [`Config::check`] checks ranges and paths and reports every problem with its key.

use serde::Deserialize;
use std::path::PathBuf;

/// The whole file. Every section may be left out; each key has a documented default.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub device: DeviceConfig,
    pub gnss: GnssConfig,
    pub validate: ValidateConfig,
    pub report: ReportConfig,
    pub buffer: BufferConfig,
    pub mqtt: MqttConfig,
    pub health: HealthConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    /// Device id in MQTT topics and payloads.
    pub id: String,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            id: "gps-agent".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Serial,
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pace {
    /// No waiting between sentences.
    Fast,
    /// Wait as the sentence times say.
    Realtime,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GnssConfig {
    pub source: SourceKind,
    /// The serial device, or the NMEA log for `source = "file"`.
    pub path: PathBuf,
    /// Serial only; a standard rate.
    pub baud: u32,
    /// File only.
    pub pace: Pace,
    /// Seconds without a new epoch time (or without bytes) before the receiver is reported
    /// stuck (`GNSS_STUCK`) and the port reopened.
    pub stuck_after_s: f64,
    /// Sentences without a checksum are dropped (`true`, strict) or accepted.
    pub require_checksum: bool,
}

impl Default for GnssConfig {
    fn default() -> Self {
        GnssConfig {
            source: SourceKind::Serial,
            path: PathBuf::from("/dev/ttyUSB0"),
            baud: 9600,
            pace: Pace::Fast,
            stuck_after_s: 10.0,
            require_checksum: true,
        }
    }
}

/// Thresholds of `crate::validate`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidateConfig {
    /// Reject fixes with HDOP above this.
    pub max_hdop: f64,
    /// Reject fixes with fewer satellites than this (when the receiver says how many).
    pub min_sats: u8,
    /// Reject a fix whose implied speed from the previous accepted fix is above this.
    pub max_speed_kmh: f64,
    /// A new position is accepted after this many consecutive fixes consistent with each
    /// other, even though it jumped from the old one (never locked out after a tunnel).
    pub jump_confirm: u8,
    /// RMC/GGA/GNS/GLL positions of one epoch further apart than this (metres) disagree.
    pub disagree_m: f64,
    /// Dates before this year are invalid (or rollover-corrected, see `rollover_fix`).
    pub not_before_year: i32,
    /// Correct GPS week-rollover dates by 1024 weeks (true) or reject them (false).
    pub rollover_fix: bool,
}

impl Default for ValidateConfig {
    fn default() -> Self {
        ValidateConfig {
            max_hdop: 10.0,
            min_sats: 3,
            max_speed_kmh: 300.0,
            jump_confirm: 3,
            disagree_m: 50.0,
            not_before_year: 2020,
            rollover_fix: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportMode {
    /// Every accepted fix is buffered and sent.
    All,
    /// Reporting policy (later issue).
    Adaptive,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    pub mode: ReportMode,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            mode: ReportMode::All,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvictionPolicy {
    /// Drop the oldest fixes first.
    DropOldest,
    /// Drop every second fix of the oldest half: the track keeps its shape at half density.
    Thin,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    pub path: PathBuf,
    /// Group commit: at most this long between commits (seconds). The loss window on a
    /// power cut.
    pub commit_interval_s: f64,
    /// Group commit: commit after this many fixes even if the interval has not passed.
    pub commit_max: u32,
    /// Capacity in fixes.
    pub max_fixes: u64,
    /// Capacity in bytes of the database file.
    pub max_bytes: u64,
    pub eviction: EvictionPolicy,
    /// Fixes held in memory while the disk cannot be written (disk full, read-only).
    pub memory_ring: u32,
    /// Seconds between attempts to write to the disk again after a failure.
    pub disk_retry_s: f64,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            path: PathBuf::from("/var/lib/gps-agent/buffer.db"),
            commit_interval_s: 1.0,
            commit_max: 500,
            max_fixes: 1_000_000,
            max_bytes: 256 * 1024 * 1024,
            eviction: EvictionPolicy::DropOldest,
            memory_ring: 4096,
            disk_retry_s: 30.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// Topic prefix: topics are `{prefix}/{device_id}/fixes` and `.../status`.
    pub topic_prefix: String,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: "mqtt://127.0.0.1:1883".into(),
            topic_prefix: "fleet".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub listen: String,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            listen: "127.0.0.1:8470".into(),
        }
    }
}
