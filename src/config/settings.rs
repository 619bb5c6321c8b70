//! Checked settings: what the agent runs on. Built once, by [`super::check`], from the raw
//! TOML structs; every value already has its real type (`Duration`, `NonZero*`, a parsed
//! [`BrokerUrl`], a `SocketAddr`), so no stage re-checks, falls back or parses again.
//! Defaults live in one place, the raw structs' `Default`: [`Settings::default`] is the
//! checked form of an empty file.

use super::{BrokerUrl, EvictionPolicy, Pace, PayloadFormat, ReportMode};
use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

/// The whole configuration, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub device: DeviceSettings,
    pub gnss: GnssSettings,
    pub validate: ValidateSettings,
    pub report: ReportSettings,
    pub buffer: BufferSettings,
    pub mqtt: MqttSettings,
    pub commands: CommandsSettings,
    pub health: HealthSettings,
}

impl Default for Settings {
    /// The checked form of an empty file (a unit test proves the defaults check clean).
    fn default() -> Self {
        super::Config::default().settings(&mut Vec::new())
    }
}

/// Thresholds of `crate::validate`, each within its range (`[validate]`, checked). The
/// validator uses them as they are: nothing is clamped or defaulted where they are read.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidateSettings {
    /// Reject fixes with HDOP above this. Positive.
    pub max_hdop: f64,
    /// Reject fixes with fewer satellites than this (when the receiver says how many).
    pub min_sats: u8,
    /// Reject a fix whose implied speed from the previous accepted fix is above this. Positive.
    pub max_speed_kmh: f64,
    /// Consistent fixes in a row that confirm a jump: 2 to [`Self::MAX_JUMP_CONFIRM`].
    pub jump_confirm: u8,
    /// Positions of one epoch further apart than this (metres) disagree. Positive.
    pub disagree_m: f64,
    /// Dates before this year are invalid or rollover-corrected; 1980 to 2100.
    pub not_before_year: i32,
    /// Correct GPS week-rollover dates by 1024 weeks (true) or reject them (false).
    pub rollover_fix: bool,
    /// Judge each fix against its neighbours (`frozen`, `inconsistent`).
    pub motion_check: bool,
    /// Largest acceleration of the vehicle, m/s²: positive, at most 100.
    pub max_accel_mps2: f64,
    /// Largest yaw rate, degrees per second: positive, at most 720.
    pub max_yaw_rate_dps: f64,
    /// Position noise at HDOP 1, metres: positive, at most 1000.
    pub position_noise_m: f64,
}

impl ValidateSettings {
    /// Largest `jump_confirm`: the validator's jump track holds this many candidates.
    pub const MAX_JUMP_CONFIRM: u8 = 16;
}

impl Default for ValidateSettings {
    fn default() -> Self {
        Settings::default().validate
    }
}

/// `[report]`, checked: the mode, and the adaptive policy's bound, intervals and stop rule,
/// each within its range (`crate::report` converts them to its units, nothing more).
#[derive(Debug, Clone, PartialEq)]
pub struct ReportSettings {
    pub mode: ReportMode,
    /// Metres; above 0, at most 10 km.
    pub max_error_m: f64,
    /// Seconds; above 0, at most a day.
    pub max_interval_s: f64,
    /// Seconds; at least `max_interval_s`, at most a day.
    pub parked_interval_s: f64,
    /// m/s; above 0, at most 10.
    pub stop_speed_mps: f64,
    /// Seconds; above 0, at most an hour.
    pub stop_after_s: f64,
}

impl Default for ReportSettings {
    fn default() -> Self {
        Settings::default().report
    }
}

/// Remote commands (`[commands]`), checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandsSettings {
    /// Subscribe to `{prefix}/{device}/cmd` and answer requests.
    pub enabled: bool,
    /// `config.set` rolls back unless a broker endpoint accepts a connection with the new
    /// file within this.
    pub confirm: Duration,
    /// Ed25519 public key: only requests signed with its private key are run.
    pub public_key_file: Option<PathBuf>,
}

impl Default for CommandsSettings {
    fn default() -> Self {
        Settings::default().commands
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSettings {
    /// Device id in MQTT topics and payloads.
    pub id: String,
}

/// Where NMEA comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GnssSource {
    /// A receiver on a serial device.
    Serial { path: PathBuf, baud: u32 },
    /// A replayed NMEA log.
    File { path: PathBuf, pace: Pace },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GnssSettings {
    pub source: GnssSource,
    /// Without a new epoch time (or bytes) this long the receiver is stuck.
    pub stuck_after: Duration,
    /// Sentences without a checksum are dropped.
    pub require_checksum: bool,
}

impl Default for GnssSettings {
    fn default() -> Self {
        Settings::default().gnss
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferSettings {
    pub path: PathBuf,
    /// Group commit: at most this long between commits.
    pub commit_interval: Duration,
    /// Group commit: at most this many fixes per commit.
    pub commit_max: NonZeroUsize,
    /// Capacity in fixes.
    pub max_fixes: NonZeroU64,
    /// Capacity in bytes of the file.
    pub max_bytes: u64,
    pub eviction: EvictionPolicy,
    /// Fixes held in memory while the disk cannot be written.
    pub memory_ring: NonZeroUsize,
    /// Between attempts to write to a failing disk again.
    pub disk_retry: Duration,
    /// The local history, kept in the buffer's file (`[history]`).
    pub history: HistorySettings,
}

/// The local history (`[history]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistorySettings {
    /// How long (receiver time) an accepted fix is kept; `None`: no history.
    pub keep: Option<Duration>,
    /// Most bytes the history takes in the buffer's file.
    pub max_bytes: u64,
    /// A backfill publishes at most one fix per this (`1 / backfill_rate`).
    pub backfill_every: Duration,
}

impl Default for HistorySettings {
    fn default() -> Self {
        Settings::default().buffer.history
    }
}

impl Default for BufferSettings {
    fn default() -> Self {
        Settings::default().buffer
    }
}

impl BufferSettings {
    /// Where the uplink keeps its TLS session tickets across restarts: beside the buffer,
    /// named after it (`buffer.db.tls-tickets`).
    pub fn tls_tickets(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_os_string();
        name.push(".tls-tickets");
        PathBuf::from(name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSettings {
    pub broker: BrokerUrl,
    /// Further endpoints of the same broker, same scheme as `broker`, tried in turn after it.
    pub fallback: Vec<BrokerUrl>,
    /// Topics are `{topic_prefix}/{device}/fixes` and `.../status`.
    pub topic_prefix: String,
    /// The configured one, else the device id.
    pub client_id: String,
    /// Fixes taken from the buffer per message (before splitting by size).
    pub batch_max: NonZeroUsize,
    /// Largest payload of one message, bytes.
    pub max_message_bytes: usize,
    /// JSON (v 1) or the compact CBOR (v 2).
    pub payload: PayloadFormat,
    /// Messages between publish and PUBACK.
    pub inflight: NonZeroU16,
    pub puback_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub backoff_reset_after: Duration,
    pub failure_threshold: NonZeroU32,
    pub open_for: Duration,
    pub permanent_retry: Duration,
    pub keep_alive: Duration,
    /// How long a live fix may wait for company (zero: sent at once).
    pub linger: Duration,
    /// Reachability probes while the path is down: first ceiling, and the largest.
    pub probe_interval: Duration,
    pub probe_max: Duration,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub server_name: Option<String>,
    /// The platform's device contract.
    pub profile: super::ProfileName,
    /// Azure IoT Hub: the device key's file.
    pub sas_key_file: Option<PathBuf>,
    /// The TLS session tickets' file ([`BufferSettings::tls_tickets`]); in memory only when
    /// `None`.
    pub tls_tickets: Option<PathBuf>,
}

impl MqttSettings {
    /// The defaults, for a device named `device` talking to `broker` (tests, tools), with
    /// TLS session tickets in memory only.
    pub fn for_broker(broker: BrokerUrl, device: &str) -> Self {
        let mut raw = super::Config::default();
        raw.device.id = device.to_owned();
        let mut m = raw.settings(&mut Vec::new()).mqtt;
        m.broker = broker;
        m.tls_tickets = None;
        m
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    pub listen: SocketAddr,
}
