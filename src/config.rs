//! Configuration: the TOML file, its documented defaults, and the checks `check-config` runs.
//!
//! Stages: the text is parsed into a spanned TOML table (syntax errors, with their lines);
//! serde reads that table into the raw structs below (unknown keys and wrong types
//! rejected); then [`Config::settings`] checks ranges and paths and builds the typed
//! [`Settings`] the agent runs on, reporting every problem with its key. Every problem found
//! is returned at once, each naming its dotted key and 1-based line, so an operator fixes the
//! file in one pass. `check-config` and `run` use this one check. This module only reads: it
//! never creates the buffer directory, opens the device or resolves host names.

mod broker;
pub mod profile;
mod settings;

pub use broker::BrokerUrl;
pub use profile::ProfileName;
pub use settings::{
    BufferSettings, CommandsSettings, DeviceSettings, GnssSettings, GnssSource, HealthSettings,
    HistorySettings, MqttSettings, ReportSettings, Settings, ValidateSettings,
};

use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU32, NonZeroU64, NonZeroUsize};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Classified, ErrorClass};

/// The whole file. Every section may be left out; each key has a documented default.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub device: DeviceConfig,
    pub gnss: GnssConfig,
    pub validate: ValidateConfig,
    pub report: ReportConfig,
    pub buffer: BufferConfig,
    pub history: HistoryConfig,
    pub mqtt: MqttConfig,
    pub commands: CommandsConfig,
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
    /// Judge each fix against its neighbours, the receiver's Doppler speed and course and
    /// the vehicle's limits (`frozen`, `inconsistent`; see `crate::validate::kinematics`).
    pub motion_check: bool,
    /// Largest acceleration of the vehicle in any direction (braking, pulling away,
    /// cornering), m/s².
    pub max_accel_mps2: f64,
    /// Largest rate at which the vehicle's heading turns, degrees per second.
    pub max_yaw_rate_dps: f64,
    /// How far a fix may stray from where its neighbours put it from noise alone, metres at
    /// HDOP 1 (scaled by the HDOP above 1).
    pub position_noise_m: f64,
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
            motion_check: true,
            max_accel_mps2: 10.0,
            max_yaw_rate_dps: 60.0,
            position_noise_m: 12.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportMode {
    /// Every accepted fix is buffered and sent.
    All,
    /// Only the fixes `crate::report` keeps: the track within `max_error_m`, at least one
    /// fix per interval, stop and start events.
    Adaptive,
}

/// `[report]`: which accepted fixes are kept (buffered and sent). The keys after `mode` are
/// used with `mode = "adaptive"` only, and checked always.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    pub mode: ReportMode,
    /// Every accepted fix lies within this many metres of the track rebuilt from the kept
    /// fixes, interpolated linearly in time between them.
    pub max_error_m: f64,
    /// A kept fix at least this often while moving (seconds).
    pub max_interval_s: f64,
    /// ... and while stopped.
    pub parked_interval_s: f64,
    /// Below this speed (m/s) for `stop_after_s`, the vehicle has stopped.
    pub stop_speed_mps: f64,
    pub stop_after_s: f64,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            mode: ReportMode::All,
            max_error_m: 10.0,
            max_interval_s: 60.0,
            parked_interval_s: 900.0,
            stop_speed_mps: 0.8,
            stop_after_s: 30.0,
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
    /// Every fix is in the crash journal at once (it survives a crash); at most this long
    /// later (seconds) it is committed and the WAL synced, so it survives a power cut too:
    /// the loss window on a power cut.
    pub commit_interval_s: f64,
    /// Sync after this many fixes even if the interval has not passed.
    pub commit_max: u32,
    /// Capacity in fixes.
    pub max_fixes: u64,
    /// Capacity in bytes of the database file.
    pub max_bytes: u64,
    pub eviction: EvictionPolicy,
    /// Fixes held in memory while the disk cannot be written (disk full, read-only).
    pub memory_ring: u32,
    /// Seconds between attempts to write to the disk again after a failure (and to use a
    /// crash journal again that could not be used). Short: fixes flow again at most this long
    /// after the disk is back.
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
            disk_retry_s: 5.0,
        }
    }
}

/// The local history (`[history]`): every accepted fix, also those `[report]` did not keep,
/// stays in the buffer's file for `backfill`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Days of receiver time an accepted fix is kept; 0 turns the history off (and removes
    /// what an earlier run kept).
    pub keep_days: f64,
    /// Most bytes the history takes in the buffer's file; the oldest fixes go first
    /// (counted).
    pub max_bytes: u64,
    /// Most fixes per second a backfill publishes.
    pub backfill_rate: f64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            keep_days: 7.0,
            max_bytes: 64 * 1024 * 1024,
            backfill_rate: 200.0,
        }
    }
}

/// How the fixes message is encoded (`[mqtt] payload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// `{"v":1,...}`, the JSON of the spec.
    Json,
    /// The compact CBOR form, `v` 2 (`crate::uplink::cbor`).
    Cbor,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// Further endpoints of the same broker (the nodes of a cluster, a second load
    /// balancer), with the credentials and TLS settings of `url`: tried in turn, at once,
    /// when the one in use is unreachable or refusing.
    pub fallback_urls: Vec<String>,
    /// Encoding of the fixes messages.
    pub payload: PayloadFormat,
    /// Topic prefix: topics are `{prefix}/{device_id}/fixes` and `.../status`.
    pub topic_prefix: String,
    /// Fixes taken from the buffer per message (before splitting by size).
    pub batch_max: u32,
    /// Largest payload of one message, in bytes; keep it at or below the broker's limit
    /// (mosquitto `message_size_limit`, AWS IoT 128 KiB).
    pub max_message_bytes: u32,
    /// Messages published and not yet acknowledged (PUBACK) at once.
    pub inflight: u16,
    /// A message without PUBACK this long means the link is broken.
    pub puback_timeout_s: f64,
    /// Reconnect backoff: ceiling of the first delay.
    pub backoff_initial_s: f64,
    /// Reconnect backoff: no delay is longer than this.
    pub backoff_max_s: f64,
    /// A connection up this long counts as healthy: the next backoff starts over.
    pub backoff_reset_after_s: f64,
    /// Consecutive failures that open the circuit breaker.
    pub failure_threshold: u32,
    /// How long the breaker stays open before one probe connection.
    pub open_for_s: f64,
    /// Wait after a permanent failure (bad credentials, TLS certificate refused).
    pub permanent_retry_s: f64,
    /// MQTT keep-alive: rumqttc pings this often, traffic or not; the broker drops the
    /// client (and publishes `offline`) after 1.5 times this without a packet.
    pub keep_alive_s: u32,
    /// A live fix waits at most this long to share a message with later ones (0 = at once);
    /// a backlog, and whatever is pending when a connection comes up, go at once.
    pub linger_s: f64,
    /// Reachability probes while the path to the broker is down: ceiling of the first
    /// interval (it grows by a twentieth of the outage so far)...
    pub probe_interval_s: f64,
    /// ... up to this.
    pub probe_max_s: f64,
    /// MQTT client id; the device id when left out.
    pub client_id: Option<String>,
    /// User name sent in CONNECT.
    pub username: Option<String>,
    /// File holding the password (first line). Kept out of the config so the config can be
    /// world-readable; the password is never logged.
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA certificates that sign the broker's certificate (`mqtts://` only);
    /// the system's roots when left out.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain for mutual TLS (with `client_key`).
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Name the broker's certificate must carry, when it differs from the URL's host (a
    /// broker reached by IP address or through a tunnel).
    pub server_name: Option<String>,
    /// The platform's device contract: `fleet` (the spec's topics), `thingsboard`, `aws`,
    /// `azure`, `cumulocity` (`crate::uplink::profile`).
    pub profile: ProfileName,
    /// Azure IoT Hub: file holding the device's symmetric key (base64, first line), which
    /// signs the SAS tokens the agent connects with.
    pub sas_key_file: Option<PathBuf>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: "mqtt://127.0.0.1:1883".into(),
            fallback_urls: Vec::new(),
            payload: PayloadFormat::Json,
            topic_prefix: "fleet".into(),
            batch_max: 50,
            max_message_bytes: 64 * 1024,
            inflight: 10,
            puback_timeout_s: 30.0,
            backoff_initial_s: 1.0,
            backoff_max_s: 300.0,
            backoff_reset_after_s: 60.0,
            failure_threshold: 5,
            open_for_s: 60.0,
            permanent_retry_s: 600.0,
            keep_alive_s: 240,
            linger_s: 60.0,
            probe_interval_s: 1.0,
            probe_max_s: 60.0,
            client_id: None,
            username: None,
            password_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            server_name: None,
            profile: ProfileName::Fleet,
            sas_key_file: None,
        }
    }
}

/// Remote commands (`[commands]`): off by default. This section cannot be changed remotely.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandsConfig {
    /// Subscribe to `{prefix}/{device}/cmd` and answer on `.../cmd/result`.
    pub enabled: bool,
    /// `config.set` rolls back to the previous file unless a broker endpoint accepts a
    /// connection with the new one within this many seconds.
    pub confirm_s: f64,
    /// Ed25519 public key (PEM, or the raw 32 bytes in base64): only requests signed with
    /// its private key are run.
    pub public_key_file: Option<PathBuf>,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        CommandsConfig {
            enabled: false,
            confirm_s: 300.0,
            public_key_file: None,
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

// ---------------------------------------------------------------------------------------------
// Reading and checking
// ---------------------------------------------------------------------------------------------

/// Baud rates serial GNSS receivers are set to in practice (the POSIX list from 4800 up). Any
/// other value is almost always a typo (`9601`) that would leave the port reading garbage.
pub const STANDARD_BAUD_RATES: [u32; 9] = [
    4800, 9600, 19200, 38400, 57600, 115_200, 230_400, 460_800, 921_600,
];

/// A config file larger than this is refused unread: a real one is a few kilobytes, and a
/// path pointing at a device or a huge log must not make the agent read without end.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// At most this many problems are reported (and this many serde passes run): enough for any
/// real file, and a bound on the retry loop that collects type and unknown-key errors.
const MAX_PROBLEMS: usize = 64;

/// Read, parse and check a config file (this module's checks; the agent adds the check of
/// the files its stages will load, see `crate::app::config_file`).
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    parse_str(&read(path)?)
}

/// The text of a config file, refused unread past [`MAX_CONFIG_BYTES`].
pub fn read(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_CONFIG_BYTES} bytes: not a config file"),
        )));
    }
    Ok(text)
}

/// Something legal that exposes the agent or its secrets: `check-config` prints it (and still
/// exits 0), `run` logs it at start with its code. Never a reason to refuse a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub key: &'static str,
    /// Stable code: `CONFIG_HEALTH_EXPOSED`, `CONFIG_SECRET_READABLE`.
    pub code: &'static str,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "warning {}: {}: {}", self.code, self.key, self.message)
    }
}

/// What an operator should know about checked settings before running them: a health
/// endpoint reachable from other hosts (it has no authentication), and secret files other
/// users can read.
pub fn warnings(settings: &Settings) -> Vec<Warning> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let listen = settings.health.listen;
    if !listen.ip().is_loopback() {
        out.push(Warning {
            key: "health.listen",
            code: "CONFIG_HEALTH_EXPOSED",
            message: format!(
                "{listen} is reachable from other hosts and the endpoint has no \
                 authentication; listen on 127.0.0.1 and tunnel to it"
            ),
        });
    }
    let mqtt = &settings.mqtt;
    for (key, path) in [
        ("mqtt.password_file", &mqtt.password_file),
        ("mqtt.client_key", &mqtt.client_key),
        ("mqtt.sas_key_file", &mqtt.sas_key_file),
    ] {
        let Some(path) = path else { continue };
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if mode & 0o004 != 0 {
            out.push(Warning {
                key,
                code: "CONFIG_SECRET_READABLE",
                message: format!(
                    "{} can be read by every user (mode {:o}); chmod 0600 or 0640",
                    path.display(),
                    mode & 0o777
                ),
            });
        }
    }
    out
}

/// Check a raw configuration built in code (the demo's): the settings, or every problem.
pub fn check(raw: &Config) -> Result<Settings, ConfigError> {
    let mut problems = Vec::new();
    let settings = raw.settings(&mut problems);
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(ConfigError::Invalid { problems })
    }
}

/// Parse and check config text. Returns every problem found (syntax errors alone when the
/// text is not TOML; otherwise type and unknown-key errors together with range problems).
pub fn parse_str(text: &str) -> Result<Settings, ConfigError> {
    parse_str_with(text, |_, _| Vec::new())
}

/// As [`parse_str`], with the checks of a layer above this one: `more` gets the settings
/// (placeholders where a problem was found) and the problems found so far, and returns its
/// own, keyed by dotted key; their lines are filled in here. It is how the agent checks the
/// files its stages will load (a password, certificates, a public key) without this module
/// knowing how to load them.
pub fn parse_str_with(
    text: &str,
    more: impl FnOnce(&Settings, &[Problem]) -> Vec<Problem>,
) -> Result<Settings, ConfigError> {
    let (table, syntax_errors) = toml::de::DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        let problems = syntax_errors
            .iter()
            .take(MAX_PROBLEMS)
            .map(|e| {
                let at = e.span().map(|s| s.start);
                Problem {
                    key: at
                        .and_then(|at| key_path_at(table.get_ref(), at))
                        .map(|p| p.join("."))
                        .unwrap_or_default(),
                    line: at.map(|at| line_of(text, at)),
                    message: format!("invalid TOML: {}", e.message()),
                }
            })
            .collect();
        return Err(ConfigError::Invalid { problems });
    }

    let (config, mut problems) = deserialize_collecting(table.clone(), text);
    let Some(config) = config else {
        return Err(ConfigError::Invalid { problems });
    };
    // With a bad `gnss.source` the check would judge path and baud against the default
    // source ("serial"): a second, misleading problem. Report the source alone.
    let source_unknown = problems.iter().any(|p| p.key == "gnss.source");
    let mut checks = Vec::new();
    let settings = config.settings(&mut checks);
    let more = more(&settings, &checks);
    checks.extend(more);
    for mut problem in checks {
        if source_unknown && matches!(problem.key.as_str(), "gnss.path" | "gnss.baud") {
            continue;
        }
        problem.line = key_line(table.get_ref(), &problem.key, text);
        problems.push(problem);
    }
    problems.truncate(MAX_PROBLEMS);
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(ConfigError::Invalid { problems })
    }
}

/// Deserialize, and on each serde error (wrong type, unknown key, unknown variant) record it,
/// drop the offending key and try again, so one pass reports them all. Bounded by
/// `MAX_PROBLEMS`. The config returned after errors holds defaults in place of the bad keys:
/// good enough to range-check the rest, never to run with.
fn deserialize_collecting(
    mut table: toml::Spanned<toml::de::DeTable<'_>>,
    text: &str,
) -> (Option<Config>, Vec<Problem>) {
    let mut problems = Vec::new();
    for _ in 0..MAX_PROBLEMS {
        let error = match Config::deserialize(toml::de::Deserializer::from(table.clone())) {
            Ok(config) => return (Some(config), problems),
            Err(e) => e,
        };
        let at = error.span().map(|s| s.start);
        let path = at.and_then(|at| key_path_at(table.get_ref(), at));
        let message = match error.message().strip_prefix("unknown field") {
            Some(rest) => format!("unknown key{rest}"),
            None => error.message().to_string(),
        };
        problems.push(Problem {
            key: path.as_ref().map(|p| p.join(".")).unwrap_or_default(),
            line: at.map(|at| line_of(text, at)),
            message,
        });
        let removed = path.is_some_and(|p| remove_key(table.get_mut(), &p));
        if !removed {
            // Nothing left to drop: another pass would only repeat the same error.
            return (None, problems);
        }
    }
    (None, problems)
}

/// The dotted key path whose key or value covers byte offset `at` (deepest match).
fn key_path_at(table: &toml::de::DeTable<'_>, at: usize) -> Option<Vec<String>> {
    let covers = |span: Range<usize>| span.contains(&at) || (span.is_empty() && span.start == at);
    for (key, value) in table.iter() {
        if covers(key.span()) {
            return Some(vec![key.get_ref().to_string()]);
        }
        if let toml::de::DeValue::Table(inner) = value.get_ref() {
            // Table spans differ between `[section]` headers and dotted keys: search inside
            // regardless of the span.
            if let Some(mut path) = key_path_at(inner, at) {
                path.insert(0, key.get_ref().to_string());
                return Some(path);
            }
        } else if covers(value.span()) {
            return Some(vec![key.get_ref().to_string()]);
        }
    }
    None
}

/// Remove the key at `path`; false when there is no such key.
fn remove_key(table: &mut toml::de::DeTable<'_>, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => table.remove(last.as_str()).is_some(),
        [first, rest @ ..] => match table.get_mut(first.as_str()).map(|v| v.get_mut()) {
            Some(toml::de::DeValue::Table(inner)) => remove_key(inner, rest),
            _ => false,
        },
    }
}

/// The 1-based line of a dotted key as written in the file; `None` when the key is not in the
/// file (a default). A last segment `name[i]` is the line of element `i` of the array `name`.
fn key_line(table: &toml::de::DeTable<'_>, dotted: &str, text: &str) -> Option<usize> {
    let mut table = table;
    let mut segments = dotted.split('.').peekable();
    while let Some(segment) = segments.next() {
        let indexed = segment
            .strip_suffix(']')
            .and_then(|s| s.split_once('['))
            .and_then(|(name, i)| Some((name, i.parse::<usize>().ok()?)));
        if let (Some((name, i)), None) = (indexed, segments.peek()) {
            let toml::de::DeValue::Array(items) = table.get(name)?.get_ref() else {
                return None;
            };
            return Some(line_of(text, items.get(i)?.span().start));
        }
        let (key, value) = table.get_key_value(segment)?;
        if segments.peek().is_none() {
            return Some(line_of(text, key.span().start));
        }
        match value.get_ref() {
            toml::de::DeValue::Table(inner) => table = inner,
            _ => return None,
        }
    }
    None
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(at)
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// One thing wrong with the config, as `check-config` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `gnss.baud`; empty for a syntax error outside any key.
    pub key: String,
    /// 1-based line of the key in the file; `None` when the key is not in the file.
    pub line: Option<usize>,
    pub message: String,
}

impl Problem {
    /// A problem of `key`, its line not known yet (the parser fills it in).
    pub fn new(key: &str, message: String) -> Self {
        Problem {
            key: key.to_string(),
            line: None,
            message,
        }
    }
}

/// One line: `gnss.baud (line 7): 9601 is not a standard baud rate (...)`.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.key.is_empty(), self.line) {
            (false, Some(line)) => write!(f, "{} (line {line}): {}", self.key, self.message),
            (false, None) => write!(f, "{}: {}", self.key, self.message),
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (true, None) => write!(f, "{}", self.message),
        }
    }
}

fn join_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why the config cannot be used. Both are permanent: restarting will not fix the file
/// (`check-config` exits 78, `EX_CONFIG`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config, {} problem(s): {}", .problems.len(), join_problems(.problems))]
    Invalid { problems: Vec<Problem> },
}

impl Classified for ConfigError {
    fn code(&self) -> &'static str {
        match self {
            ConfigError::Read { .. } => "CONFIG_READ",
            ConfigError::Invalid { .. } => "CONFIG_INVALID",
        }
    }

    fn class(&self) -> ErrorClass {
        ErrorClass::Permanent
    }
}

/// A positive, finite number (thresholds and `_s` durations).
fn check_positive(out: &mut Vec<Problem>, key: &str, value: f64, unit: &str) {
    if !value.is_finite() || value <= 0.0 {
        out.push(Problem::new(
            key,
            format!("{value} must be a positive number of {unit}"),
        ));
    }
}

/// A duration key: positive and at most `max` seconds (past that it is a typo, and a timer
/// that never fires hides the failure it is there to catch). On a problem the value returned
/// is a placeholder: settings with problems are never handed out.
fn check_seconds(out: &mut Vec<Problem>, key: &str, value: f64, max: f64) -> Duration {
    match Duration::try_from_secs_f64(value) {
        Ok(d) if value > 0.0 && value <= max && !d.is_zero() => d,
        _ => {
            out.push(Problem::new(
                key,
                format!("{value} must be a number of seconds above 0 and at most {max}"),
            ));
            Duration::ZERO
        }
    }
}

/// MQTT's limit on a topic name, bytes of UTF-8 (a two-byte length prefix).
pub const MAX_TOPIC_BYTES: usize = 65_535;

/// Characters a topic name must not contain (MQTT 3.1.1 section 1.5.3): NUL, other control
/// characters, and the Unicode non-characters.
fn forbidden_in_topic(c: char) -> bool {
    c.is_control() || matches!(c as u32, 0xFDD0..=0xFDEF) || (c as u32 & 0xFFFE) == 0xFFFE
}

/// A value as a problem line shows it: quoted, and cut short, so a mistaken 80 KB value
/// does not become an 80 KB line.
fn shown(value: &str) -> String {
    const MAX: usize = 64;
    match value.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}… ({} bytes)", &value[..cut], value.len()),
        None => format!("{value:?}"),
    }
}

/// Longest accepted value of the `_s` timer keys: a day.
const MAX_TIMER_S: f64 = 86_400.0;

fn check_at_least(out: &mut Vec<Problem>, key: &str, value: u64, min: u64, what: &str) {
    if value < min {
        out.push(Problem::new(key, format!("{value} is below {min} {what}")));
    }
}

/// A count that must be at least 1 (the problem is pushed by the range check beside it;
/// the placeholder never leaves a failed check).
fn non_zero(value: u64) -> NonZeroU64 {
    NonZeroU64::new(value).unwrap_or(NonZeroU64::MIN)
}

fn non_zero_usize(value: u64) -> NonZeroUsize {
    usize::try_from(value)
        .ok()
        .and_then(NonZeroUsize::new)
        .unwrap_or(NonZeroUsize::MIN)
}

impl Config {
    /// Every range, path and format problem, section by section; `line` is left `None`
    /// ([`parse_str`] fills it from the file).
    pub fn check(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        self.settings(&mut out);
        out
    }

    /// The checked settings, with every problem pushed to `out`. Only when `out` stays empty
    /// are the settings real: on a problem, the offending value is a placeholder.
    pub fn settings(&self, out: &mut Vec<Problem>) -> Settings {
        let device = self.device.check(out);
        let gnss = self.gnss.check(out);
        let validate = self.validate.check(out);
        let report = self.report.check(out);
        let buffer = self.buffer.check_with_history(&self.history, out);
        let mut mqtt = self.mqtt.check(&self.device, out);
        mqtt.tls_tickets = Some(buffer.tls_tickets());
        Settings {
            device,
            gnss,
            validate,
            report,
            buffer,
            mqtt,
            commands: self.commands.check(out),
            health: self.health.check(out),
        }
    }
}

impl DeviceConfig {
    /// Longest device id accepted: it goes into every topic and payload.
    pub const MAX_ID_LEN: usize = 128;

    pub fn check(&self, out: &mut Vec<Problem>) -> DeviceSettings {
        let id = &self.id;
        if id.is_empty() {
            out.push(Problem::new("device.id", "must not be empty".into()));
        } else if id.contains(['+', '#', '/']) {
            out.push(Problem::new(
                "device.id",
                format!("{} contains an MQTT topic character (+ # /)", shown(id)),
            ));
        } else if id.chars().any(char::is_control) {
            out.push(Problem::new(
                "device.id",
                format!("{} contains control characters", shown(id)),
            ));
        } else if id.len() > Self::MAX_ID_LEN {
            out.push(Problem::new(
                "device.id",
                format!(
                    "is {} bytes long, at most {} allowed",
                    id.len(),
                    Self::MAX_ID_LEN
                ),
            ));
        }
        DeviceSettings { id: id.clone() }
    }
}

impl GnssConfig {
    pub fn check(&self, out: &mut Vec<Problem>) -> GnssSettings {
        if self.path.as_os_str().is_empty() {
            out.push(Problem::new("gnss.path", "must not be empty".into()));
        } else if self.source == SourceKind::Serial && !self.path.is_absolute() {
            out.push(Problem::new(
                "gnss.path",
                format!(
                    "{} must be an absolute device path for source = \"serial\" (e.g. /dev/ttyUSB0)",
                    self.path.display()
                ),
            ));
        }
        if self.source == SourceKind::Serial && !STANDARD_BAUD_RATES.contains(&self.baud) {
            let list = STANDARD_BAUD_RATES.map(|b| b.to_string()).join(", ");
            out.push(Problem::new(
                "gnss.baud",
                format!("{} is not a standard baud rate ({list})", self.baud),
            ));
        }
        let stuck_after = check_seconds(out, "gnss.stuck_after_s", self.stuck_after_s, 3_600.0);
        let path = self.path.clone();
        GnssSettings {
            source: match self.source {
                SourceKind::Serial => GnssSource::Serial {
                    path,
                    baud: self.baud,
                },
                SourceKind::File => GnssSource::File {
                    path,
                    pace: self.pace,
                },
            },
            stuck_after,
            require_checksum: self.require_checksum,
        }
    }
}

impl ValidateConfig {
    /// Earliest and latest `not_before_year` accepted: GPS time starts in 1980; a later
    /// year than this is a typo that would reject every fix.
    pub const YEAR_RANGE: std::ops::RangeInclusive<i32> = 1980..=2100;
    /// Motion limits: positive, and at most these (past them the check can reject nothing,
    /// which `motion_check = false` says plainly).
    pub const MAX_ACCEL_MPS2: f64 = 100.0;
    pub const MAX_YAW_RATE_DPS: f64 = 720.0;
    pub const MAX_POSITION_NOISE_M: f64 = 1_000.0;

    pub fn check(&self, out: &mut Vec<Problem>) -> ValidateSettings {
        check_positive(out, "validate.max_hdop", self.max_hdop, "HDOP");
        check_positive(out, "validate.max_speed_kmh", self.max_speed_kmh, "km/h");
        check_positive(out, "validate.disagree_m", self.disagree_m, "metres");
        let motion = [
            (
                "validate.max_accel_mps2",
                self.max_accel_mps2,
                Self::MAX_ACCEL_MPS2,
                "m/s²",
            ),
            (
                "validate.max_yaw_rate_dps",
                self.max_yaw_rate_dps,
                Self::MAX_YAW_RATE_DPS,
                "degrees per second",
            ),
            (
                "validate.position_noise_m",
                self.position_noise_m,
                Self::MAX_POSITION_NOISE_M,
                "metres",
            ),
        ];
        for (key, value, max, unit) in motion {
            if !value.is_finite() || value <= 0.0 || value > max {
                out.push(Problem::new(
                    key,
                    format!("{value} must be a positive number of {unit}, at most {max}"),
                ));
            }
        }
        let track = ValidateSettings::MAX_JUMP_CONFIRM;
        if !(2..=track).contains(&self.jump_confirm) {
            out.push(Problem::new(
                "validate.jump_confirm",
                format!(
                    "{} must be between 2 and {track} (1 would accept every jump)",
                    self.jump_confirm
                ),
            ));
        }
        if !Self::YEAR_RANGE.contains(&self.not_before_year) {
            out.push(Problem::new(
                "validate.not_before_year",
                format!(
                    "{} must be between {} and {}",
                    self.not_before_year,
                    Self::YEAR_RANGE.start(),
                    Self::YEAR_RANGE.end()
                ),
            ));
        }
        ValidateSettings {
            max_hdop: self.max_hdop,
            min_sats: self.min_sats,
            max_speed_kmh: self.max_speed_kmh,
            jump_confirm: self.jump_confirm,
            disagree_m: self.disagree_m,
            not_before_year: self.not_before_year,
            rollover_fix: self.rollover_fix,
            motion_check: self.motion_check,
            max_accel_mps2: self.max_accel_mps2,
            max_yaw_rate_dps: self.max_yaw_rate_dps,
            position_noise_m: self.position_noise_m,
        }
    }
}

impl ReportConfig {
    /// Largest `max_error_m`: past 10 km a "track" is a handful of heartbeats; a typo.
    pub const MAX_ERROR_M: f64 = 10_000.0;
    /// Largest `stop_speed_mps` (36 km/h): above it a slow street counts as a stop.
    pub const MAX_STOP_SPEED_MPS: f64 = 10.0;

    pub fn check(&self, out: &mut Vec<Problem>) -> ReportSettings {
        let e = self.max_error_m;
        if !e.is_finite() || e <= 0.0 || e > Self::MAX_ERROR_M {
            out.push(Problem::new(
                "report.max_error_m",
                format!(
                    "{e} must be a number of metres above 0 and at most {}",
                    Self::MAX_ERROR_M
                ),
            ));
        }
        check_seconds(
            out,
            "report.max_interval_s",
            self.max_interval_s,
            MAX_TIMER_S,
        );
        check_seconds(
            out,
            "report.parked_interval_s",
            self.parked_interval_s,
            MAX_TIMER_S,
        );
        check_seconds(out, "report.stop_after_s", self.stop_after_s, 3_600.0);
        let v = self.stop_speed_mps;
        if !v.is_finite() || v <= 0.0 || v > Self::MAX_STOP_SPEED_MPS {
            out.push(Problem::new(
                "report.stop_speed_mps",
                format!(
                    "{v} must be a speed in m/s above 0 and at most {}",
                    Self::MAX_STOP_SPEED_MPS
                ),
            ));
        }
        // A parked vehicle reporting more often than a moving one is a swapped pair.
        if self.parked_interval_s.is_finite()
            && self.max_interval_s.is_finite()
            && self.parked_interval_s < self.max_interval_s
        {
            out.push(Problem::new(
                "report.parked_interval_s",
                format!(
                    "{} is below max_interval_s ({})",
                    self.parked_interval_s, self.max_interval_s
                ),
            ));
        }
        ReportSettings {
            mode: self.mode,
            max_error_m: self.max_error_m,
            max_interval_s: self.max_interval_s,
            parked_interval_s: self.parked_interval_s,
            stop_speed_mps: self.stop_speed_mps,
            stop_after_s: self.stop_after_s,
        }
    }
}

impl BufferConfig {
    /// Smallest `max_bytes`: a SQLite file with its schema already takes tens of kilobytes.
    pub const MIN_BYTES: u64 = 64 * 1024;
    /// Largest `memory_ring`: it is RAM on a small gateway (a fix is under 100 bytes).
    pub const MAX_MEMORY_RING: u32 = 1_000_000;

    /// The `[buffer]` section checked, with the default `[history]` (see
    /// [`BufferConfig::check_with_history`]).
    pub fn check(&self, out: &mut Vec<Problem>) -> BufferSettings {
        self.check_with_history(&HistoryConfig::default(), out)
    }

    /// The `[buffer]` and `[history]` sections checked: the history lives in the buffer's
    /// file, so its settings are the buffer's.
    pub fn check_with_history(
        &self,
        history: &HistoryConfig,
        out: &mut Vec<Problem>,
    ) -> BufferSettings {
        if let Some(message) = implausible_file_path(&self.path) {
            out.push(Problem::new("buffer.path", message));
        }
        // The loss window on a power cut: an hour is already far past any sane choice.
        let commit_interval = check_seconds(
            out,
            "buffer.commit_interval_s",
            self.commit_interval_s,
            3_600.0,
        );
        check_at_least(out, "buffer.commit_max", self.commit_max.into(), 1, "fixes");
        check_at_least(out, "buffer.max_fixes", self.max_fixes, 1, "fixes");
        check_at_least(
            out,
            "buffer.max_bytes",
            self.max_bytes,
            Self::MIN_BYTES,
            "bytes",
        );
        check_at_least(
            out,
            "buffer.memory_ring",
            self.memory_ring.into(),
            1,
            "fixes",
        );
        if self.memory_ring > Self::MAX_MEMORY_RING {
            out.push(Problem::new(
                "buffer.memory_ring",
                format!(
                    "{} is above {} fixes (it is held in RAM)",
                    self.memory_ring,
                    Self::MAX_MEMORY_RING
                ),
            ));
        }
        let disk_retry = check_seconds(out, "buffer.disk_retry_s", self.disk_retry_s, MAX_TIMER_S);
        BufferSettings {
            path: self.path.clone(),
            commit_interval,
            commit_max: non_zero_usize(self.commit_max.into()),
            max_fixes: non_zero(self.max_fixes),
            max_bytes: self.max_bytes,
            eviction: self.eviction,
            memory_ring: non_zero_usize(self.memory_ring.into()),
            disk_retry,
            history: history.check(out),
        }
    }
}

impl HistoryConfig {
    /// Longest `keep_days`: ten years (past that it is a typo; `max_bytes` bounds the file
    /// anyway).
    pub const MAX_KEEP_DAYS: f64 = 3650.0;
    /// Largest `backfill_rate`, fixes per second: a backfill must not crowd out live fixes on
    /// a cellular uplink.
    pub const MAX_BACKFILL_RATE: f64 = 10_000.0;

    pub fn check(&self, out: &mut Vec<Problem>) -> HistorySettings {
        let keep = if !self.keep_days.is_finite()
            || !(0.0..=Self::MAX_KEEP_DAYS).contains(&self.keep_days)
        {
            out.push(Problem::new(
                "history.keep_days",
                format!(
                    "{} must be a number of days from 0 (no history) to {}",
                    self.keep_days,
                    Self::MAX_KEEP_DAYS
                ),
            ));
            None
        } else if self.keep_days == 0.0 {
            None
        } else {
            Duration::try_from_secs_f64(self.keep_days * 86_400.0).ok()
        };
        check_at_least(
            out,
            "history.max_bytes",
            self.max_bytes,
            BufferConfig::MIN_BYTES,
            "bytes",
        );
        let rate = self.backfill_rate;
        if !rate.is_finite() || rate <= 0.0 || rate > Self::MAX_BACKFILL_RATE {
            out.push(Problem::new(
                "history.backfill_rate",
                format!(
                    "{rate} must be a number of fixes per second above 0 and at most {}",
                    Self::MAX_BACKFILL_RATE
                ),
            ));
        }
        HistorySettings {
            keep,
            max_bytes: self.max_bytes,
            backfill_every: Duration::try_from_secs_f64(1.0 / rate).unwrap_or(Duration::ZERO),
        }
    }
}

/// Why a buffer file path cannot work, judged without touching the disk beyond `metadata`
/// (the directory may legitimately not exist yet: systemd's `StateDirectory=` makes it).
fn implausible_file_path(path: &Path) -> Option<String> {
    let shown = path.display();
    if path.as_os_str().is_empty() {
        return Some("must not be empty".into());
    }
    let ends_with_separator = path.as_os_str().to_string_lossy().ends_with('/');
    if ends_with_separator || path.file_name().is_none() || path.is_dir() {
        return Some(format!(
            "{shown} names a directory; give a file such as /var/lib/gps-agent/buffer.db"
        ));
    }
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() && parent.exists() && !parent.is_dir() => {
            Some(format!(
                "{shown}: parent {} exists but is not a directory",
                parent.display()
            ))
        }
        _ => None,
    }
}

impl MqttConfig {
    pub fn check(&self, device: &DeviceConfig, out: &mut Vec<Problem>) -> MqttSettings {
        let broker = BrokerUrl::parse(&self.url).unwrap_or_else(|message| {
            out.push(Problem::new("mqtt.url", message));
            BrokerUrl {
                tls: false,
                host: String::new(),
                port: 1883,
            }
        });
        let prefix = &self.topic_prefix;
        let shown = shown(prefix);
        // The longest topic the agent builds: `{prefix}/{device}/status`.
        let longest = prefix.len() + 1 + device.id.len() + "/status".len();
        let problem = if prefix.is_empty() {
            Some("must not be empty".to_string())
        } else if longest > MAX_TOPIC_BYTES {
            Some(format!(
                "is {} bytes long: the topic {{prefix}}/{{device.id}}/status would be {longest} \
                 bytes, and MQTT allows {MAX_TOPIC_BYTES}",
                prefix.len()
            ))
        } else if prefix.contains(['+', '#']) {
            Some(format!("{shown} contains an MQTT wildcard (+ #)"))
        } else if prefix.starts_with('$') {
            Some(format!("{shown} starts with $, reserved for broker topics"))
        } else if prefix.split('/').any(str::is_empty) {
            Some(format!(
                "{shown} has an empty topic level (leading, trailing or double /)"
            ))
        } else if prefix.chars().any(forbidden_in_topic) {
            Some(format!(
                "{shown} contains control or non-characters, which MQTT topics must not hold"
            ))
        } else {
            None
        };
        if let Some(message) = problem {
            out.push(Problem::new("mqtt.topic_prefix", message));
        }
        let fallback = self.check_fallback(broker.tls, out);
        let timers = self.check_limits(out);
        let cellular = self.check_cellular(out);
        self.check_identity(broker.tls, out);
        profile::check(
            self,
            BrokerUrl::parse(&self.url).ok().as_ref(),
            &device.id,
            out,
        );
        MqttSettings {
            broker,
            fallback,
            topic_prefix: prefix.clone(),
            client_id: self.client_id.clone().unwrap_or_else(|| device.id.clone()),
            batch_max: non_zero_usize(self.batch_max.into()),
            max_message_bytes: usize::try_from(self.max_message_bytes).unwrap_or(usize::MAX),
            payload: self.payload,
            inflight: NonZeroU16::new(self.inflight).unwrap_or(NonZeroU16::MIN),
            puback_timeout: timers[0],
            backoff_initial: timers[1],
            backoff_max: timers[2],
            backoff_reset_after: timers[3],
            failure_threshold: NonZeroU32::new(self.failure_threshold).unwrap_or(NonZeroU32::MIN),
            open_for: timers[4],
            permanent_retry: timers[5],
            keep_alive: Duration::from_secs(self.keep_alive_s.into()),
            linger: cellular[0],
            probe_interval: cellular[1],
            probe_max: cellular[2],
            username: self.username.clone(),
            password_file: self.password_file.clone(),
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            server_name: self.server_name.clone(),
            profile: self.profile,
            sas_key_file: self.sas_key_file.clone(),
            tls_tickets: None,
        }
    }

    /// Most `fallback_urls`: a cluster's nodes or a few balancers; each is tried in turn
    /// before the pacing waits.
    pub const MAX_FALLBACK_URLS: usize = 16;

    /// `fallback_urls`, each checked as `url` is (problems name `mqtt.fallback_urls[i]`,
    /// counted from 0), and with the scheme of `url` (`tls`): every endpoint takes the same
    /// TLS settings, and a fallback must not quietly drop TLS.
    fn check_fallback(&self, tls: bool, out: &mut Vec<Problem>) -> Vec<BrokerUrl> {
        if self.fallback_urls.len() > Self::MAX_FALLBACK_URLS {
            out.push(Problem::new(
                "mqtt.fallback_urls",
                format!(
                    "{} endpoints; at most {} are tried",
                    self.fallback_urls.len(),
                    Self::MAX_FALLBACK_URLS
                ),
            ));
            return Vec::new();
        }
        let url_ok = BrokerUrl::parse(&self.url).is_ok();
        let mut fallback = Vec::with_capacity(self.fallback_urls.len());
        for (i, url) in self.fallback_urls.iter().enumerate() {
            let key = format!("mqtt.fallback_urls[{i}]");
            match BrokerUrl::parse(url) {
                Err(message) => out.push(Problem::new(&key, message)),
                Ok(endpoint) if url_ok && endpoint.tls != tls => out.push(Problem::new(
                    &key,
                    format!(
                        "{} but mqtt.url is {:?}: every endpoint takes the TLS settings of \
                         mqtt.url, so all are mqtt:// or all are mqtts://",
                        shown(url),
                        self.url
                    ),
                )),
                Ok(endpoint) => fallback.push(endpoint),
            }
        }
        fallback
    }

    /// Largest `batch_max`: one message of fixes stays well under any broker's limit.
    pub const MAX_BATCH: u32 = 1000;
    /// Smallest `max_message_bytes`: one fix with its envelope is a few hundred bytes.
    pub const MIN_MESSAGE_BYTES: u32 = 1024;
    /// Largest `max_message_bytes`: MQTT's own limit is 256 MiB; a gateway has no use for
    /// messages that large, and the whole message is held in memory.
    pub const MAX_MESSAGE_BYTES: u32 = 16 * 1024 * 1024;
    /// Largest `inflight`: rumqttc keeps one slot per packet id; more buys nothing on a
    /// cellular link.
    pub const MAX_INFLIGHT: u16 = 1000;
    /// Longest client id MQTT 3.1.1 brokers must accept is 23; most take far more.
    pub const MAX_CLIENT_ID_LEN: usize = 256;

    /// Ranges of the numbers and timers; returns the timers in the order
    /// puback_timeout, backoff_initial, backoff_max, backoff_reset_after, open_for,
    /// permanent_retry.
    fn check_limits(&self, out: &mut Vec<Problem>) -> [Duration; 6] {
        if !(1..=Self::MAX_BATCH).contains(&self.batch_max) {
            out.push(Problem::new(
                "mqtt.batch_max",
                format!(
                    "{} must be between 1 and {}",
                    self.batch_max,
                    Self::MAX_BATCH
                ),
            ));
        }
        if !(Self::MIN_MESSAGE_BYTES..=Self::MAX_MESSAGE_BYTES).contains(&self.max_message_bytes) {
            out.push(Problem::new(
                "mqtt.max_message_bytes",
                format!(
                    "{} must be between {} and {} bytes",
                    self.max_message_bytes,
                    Self::MIN_MESSAGE_BYTES,
                    Self::MAX_MESSAGE_BYTES
                ),
            ));
        }
        if !(1..=Self::MAX_INFLIGHT).contains(&self.inflight) {
            out.push(Problem::new(
                "mqtt.inflight",
                format!(
                    "{} must be between 1 and {}",
                    self.inflight,
                    Self::MAX_INFLIGHT
                ),
            ));
        }
        let timers = [
            ("mqtt.puback_timeout_s", self.puback_timeout_s),
            ("mqtt.backoff_initial_s", self.backoff_initial_s),
            ("mqtt.backoff_max_s", self.backoff_max_s),
            ("mqtt.backoff_reset_after_s", self.backoff_reset_after_s),
            ("mqtt.open_for_s", self.open_for_s),
            ("mqtt.permanent_retry_s", self.permanent_retry_s),
        ]
        .map(|(key, value)| check_seconds(out, key, value, MAX_TIMER_S));
        if self.backoff_max_s.is_finite()
            && self.backoff_initial_s.is_finite()
            && self.backoff_max_s < self.backoff_initial_s
        {
            out.push(Problem::new(
                "mqtt.backoff_max_s",
                format!(
                    "{} is below backoff_initial_s ({})",
                    self.backoff_max_s, self.backoff_initial_s
                ),
            ));
        }
        check_at_least(
            out,
            "mqtt.failure_threshold",
            self.failure_threshold.into(),
            1,
            "failures",
        );
        // rumqttc refuses keep-alives under a second; MQTT's field is 16 bits of seconds.
        if !(1..=u32::from(u16::MAX)).contains(&self.keep_alive_s) {
            out.push(Problem::new(
                "mqtt.keep_alive_s",
                format!(
                    "{} must be between 1 and {} seconds",
                    self.keep_alive_s,
                    u16::MAX
                ),
            ));
        }
        timers
    }

    /// Longest `linger_s`: a fix an hour late is no longer "live".
    pub const MAX_LINGER_S: f64 = 3_600.0;

    /// `linger_s` (0 allowed: at once), `probe_interval_s`, `probe_max_s`; returned in that
    /// order.
    fn check_cellular(&self, out: &mut Vec<Problem>) -> [Duration; 3] {
        let linger = match Duration::try_from_secs_f64(self.linger_s) {
            Ok(d) if self.linger_s <= Self::MAX_LINGER_S => d,
            _ => {
                out.push(Problem::new(
                    "mqtt.linger_s",
                    format!(
                        "{} must be a number of seconds from 0 to {}",
                        self.linger_s,
                        Self::MAX_LINGER_S
                    ),
                ));
                Duration::ZERO
            }
        };
        let interval = check_seconds(
            out,
            "mqtt.probe_interval_s",
            self.probe_interval_s,
            MAX_TIMER_S,
        );
        let max = check_seconds(out, "mqtt.probe_max_s", self.probe_max_s, MAX_TIMER_S);
        if self.probe_max_s.is_finite()
            && self.probe_interval_s.is_finite()
            && self.probe_max_s < self.probe_interval_s
        {
            out.push(Problem::new(
                "mqtt.probe_max_s",
                format!(
                    "{} is below probe_interval_s ({})",
                    self.probe_max_s, self.probe_interval_s
                ),
            ));
        }
        [linger, interval, max]
    }

    /// Client id, credentials and TLS files; `tls` when the broker URL is `mqtts://`.
    fn check_identity(&self, tls: bool, out: &mut Vec<Problem>) {
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > Self::MAX_CLIENT_ID_LEN {
                out.push(Problem::new(
                    "mqtt.client_id",
                    format!(
                        "must be 1 to {} bytes long (leave it out to use the device id)",
                        Self::MAX_CLIENT_ID_LEN
                    ),
                ));
            } else if id.chars().any(char::is_control) {
                out.push(Problem::new(
                    "mqtt.client_id",
                    format!("{id:?} contains control characters"),
                ));
            }
        }
        if matches!(&self.username, Some(u) if u.is_empty()) {
            out.push(Problem::new(
                "mqtt.username",
                "must not be empty (leave it out to connect without one)".into(),
            ));
        }
        // ThingsBoard's access token is the user name, read from password_file.
        if self.password_file.is_some()
            && self.username.is_none()
            && self.profile != ProfileName::Thingsboard
        {
            // MQTT 3.1.1 does not allow a password without a user name.
            out.push(Problem::new(
                "mqtt.password_file",
                "needs mqtt.username (MQTT sends no password without a user name)".into(),
            ));
        }
        let url_ok = BrokerUrl::parse(&self.url).is_ok();
        for (key, path) in [
            ("mqtt.password_file", &self.password_file),
            ("mqtt.ca_file", &self.ca_file),
            ("mqtt.client_cert", &self.client_cert),
            ("mqtt.client_key", &self.client_key),
            ("mqtt.sas_key_file", &self.sas_key_file),
        ] {
            let Some(path) = path else { continue };
            if !matches!(key, "mqtt.password_file" | "mqtt.sas_key_file") && !tls && url_ok {
                out.push(Problem::new(
                    key,
                    format!("is only used with mqtts:// but mqtt.url is {:?}", self.url),
                ));
            } else if !path.is_file() {
                out.push(Problem::new(
                    key,
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => out.push(Problem::new(
                "mqtt.client_cert",
                "needs mqtt.client_key (mutual TLS takes both)".into(),
            )),
            (None, Some(_)) => out.push(Problem::new(
                "mqtt.client_key",
                "needs mqtt.client_cert (mutual TLS takes both)".into(),
            )),
            _ => {}
        }
        if let Some(name) = &self.server_name {
            if !tls && url_ok {
                out.push(Problem::new(
                    "mqtt.server_name",
                    format!("is only used with mqtts:// but mqtt.url is {:?}", self.url),
                ));
            } else if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                out.push(Problem::new(
                    "mqtt.server_name",
                    format!("{name:?} is not a DNS name or IP address"),
                ));
            }
        }
    }
}

impl CommandsConfig {
    /// Longest `confirm_s`: a day (past that a wrong broker would strand the vehicle for
    /// longer than anyone would wait).
    pub const MAX_CONFIRM_S: f64 = 86_400.0;

    /// Ranges and the key file's presence; the key itself is read by the commands stage
    /// (whose check the agent adds to these, see `crate::app::config_file`).
    pub fn check(&self, out: &mut Vec<Problem>) -> CommandsSettings {
        let confirm = check_seconds(
            out,
            "commands.confirm_s",
            self.confirm_s,
            Self::MAX_CONFIRM_S,
        );
        if let Some(path) = &self.public_key_file {
            if !path.is_file() {
                out.push(Problem::new(
                    "commands.public_key_file",
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        CommandsSettings {
            enabled: self.enabled,
            confirm,
            public_key_file: self.public_key_file.clone(),
        }
    }
}

impl HealthConfig {
    pub fn check(&self, out: &mut Vec<Problem>) -> HealthSettings {
        let listen = self.listen_addr().unwrap_or_else(|message| {
            out.push(Problem::new("health.listen", message));
            SocketAddr::from(([127, 0, 0, 1], 0))
        });
        HealthSettings { listen }
    }

    /// `listen` as a socket address (an IP and a port: no host names, nothing is resolved).
    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.listen.parse::<SocketAddr>().map_err(|_| {
            format!(
                "{:?} is not a socket address; expected IP:port such as 127.0.0.1:8470",
                self.listen
            )
        })
    }
}
