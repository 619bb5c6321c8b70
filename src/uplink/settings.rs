//! The publisher's settings: the checked `[mqtt]` section ([`MqttSettings`]) as the uplink
//! runs on it, with the password read and the TLS client configuration built once
//! ([`PublisherSettings::from_settings`], which `check-config` runs too, through
//! [`file_problems`]), the broker's endpoints in order, and the pacing policy derived from
//! it. Plain data: built once per configuration, compared on SIGHUP to decide whether the
//! uplink must reconnect.

use crate::config::{BrokerUrl, MqttSettings, PayloadFormat, Problem, ProfileName};
use crate::error::Classified;
use crate::uplink::backoff::BackoffPolicy;
use crate::uplink::breaker::BreakerPolicy;
use crate::uplink::credentials::{Password, TlsClient};
use crate::uplink::error::UplinkError;
use crate::uplink::profile::{azure::DeviceKey, ProfileSettings};
use crate::uplink::reconnect::{ProbePolicy, ReconnectPolicy};
use crate::uplink::tls::{client_config, TlsSettings};
use std::sync::Arc;
use std::time::Duration;

/// Everything the publisher needs to know: the checked `[mqtt]` settings
/// ([`PublisherSettings::from_settings`]) with the password and TLS material read.
#[derive(Debug, Clone, PartialEq)]
pub struct PublisherSettings {
    /// `mqtt.url`: the broker's first endpoint.
    pub broker: BrokerUrl,
    /// `mqtt.fallback_urls`: its further endpoints, tried in turn after `broker`.
    pub fallback: Vec<BrokerUrl>,
    pub client_id: String,
    pub device: String,
    pub topic_prefix: String,
    /// User name and password sent in CONNECT (the fleet, AWS and Cumulocity profiles;
    /// the others make their own from `profile`).
    pub credentials: Option<(String, Password)>,
    /// The platform's device contract and the secrets it needs.
    pub profile: ProfileSettings,
    /// CA, client certificate and server name for `mqtts://`; ignored for `mqtt://`.
    pub tls: TlsSettings,
    /// [`TlsSettings::files_fingerprint`] when the settings were made: settings equal but
    /// for this mean a file was replaced under its path.
    pub tls_files: u64,
    /// The client configuration built from `tls` (for `mqtts://`).
    pub tls_client: TlsClient,
    /// Fixes taken from the source per message (before splitting by size).
    pub batch_max: usize,
    /// Largest payload of one message.
    pub max_message_bytes: usize,
    /// JSON (`v` 1) or the compact CBOR (`v` 2).
    pub payload: PayloadFormat,
    /// Messages between publish and PUBACK.
    pub window: u16,
    /// A message without PUBACK this long means the link is broken.
    pub puback_timeout: Duration,
    /// TCP, TLS and CONNECT together must be done (CONNACK received) within this; whole
    /// seconds, at least one (rumqttc's resolution).
    pub connect_timeout: Duration,
    pub keep_alive: Duration,
    /// How long a live fix may wait for company; zero sends each at once.
    pub linger: Duration,
    /// Reachability probes while the path to the broker is down.
    pub probe: ProbePolicy,
    pub backoff: BackoffPolicy,
    pub breaker: BreakerPolicy,
    /// Wait after a permanent failure (bad credentials, refused client id).
    pub permanent_retry: Duration,
    /// At shutdown, how long to wait for PUBACKs of messages in flight.
    pub shutdown_grace: Duration,
    /// How often to ask the source again when it said nothing is pending.
    pub idle_poll: Duration,
    /// Beyond the liveness bound, how long a probe or an attempt and its wind-down may take
    /// before `/health` calls the uplink wedged ([`PublisherSettings::wedge_after`]).
    pub wedge_margin: Duration,
}

impl PublisherSettings {
    /// The defaults of `[mqtt]` for a device named `device` talking to `url` (tests, tools);
    /// the password and TLS files of the defaults are none, so only the URL can fail.
    pub fn new(url: &str, device: &str) -> Result<Self, UplinkError> {
        let broker = BrokerUrl::parse(url).map_err(|why| UplinkError::BadUrl {
            url: url.to_owned(),
            why,
        })?;
        Self::from_settings(&MqttSettings::for_broker(broker, device), device)
    }

    /// From checked `[mqtt]` settings. Reads the password file and builds the TLS
    /// configuration once, so a missing or broken file is reported at start-up
    /// (`MQTT_TLS_CONFIG`, permanent) rather than on every reconnect.
    pub fn from_settings(mqtt: &MqttSettings, device: &str) -> Result<Self, UplinkError> {
        let credentials = match (&mqtt.username, &mqtt.password_file) {
            (Some(user), Some(path)) => Some((user.clone(), Password::from_file(path)?)),
            (Some(user), None) => Some((user.clone(), Password::new(""))),
            (None, _) => None,
        };
        let (profile, credentials) = profile_settings(mqtt, credentials)?;
        let tls = TlsSettings {
            ca_file: mqtt.ca_file.clone(),
            client_cert: mqtt.client_cert.clone(),
            client_key: mqtt.client_key.clone(),
            server_name: mqtt.server_name.clone(),
            // AWS IoT Core serves MQTT on 443 only to clients that ask for it by ALPN
            // (https://docs.aws.amazon.com/iot/latest/developerguide/protocols.html).
            alpn: if mqtt.profile == ProfileName::Aws && mqtt.broker.port == 443 {
                vec![b"x-amzn-mqtt-ca".to_vec()]
            } else {
                Vec::new()
            },
            tickets: mqtt.tls_tickets.clone(),
        };
        let tls_client = if mqtt.broker.tls {
            TlsClient::new(Some(client_config(&tls)?))
        } else {
            TlsClient::new(None)
        };
        let backoff_max = mqtt.backoff_max.max(mqtt.backoff_initial);
        Ok(PublisherSettings {
            broker: mqtt.broker.clone(),
            fallback: mqtt.fallback.clone(),
            client_id: mqtt.client_id.clone(),
            device: device.to_owned(),
            topic_prefix: mqtt.topic_prefix.clone(),
            credentials,
            profile,
            tls_files: tls.files_fingerprint(),
            tls,
            tls_client,
            batch_max: mqtt.batch_max.get(),
            max_message_bytes: mqtt.max_message_bytes,
            payload: mqtt.payload,
            window: mqtt.inflight.get(),
            puback_timeout: mqtt.puback_timeout,
            connect_timeout: CONNECT_TIMEOUT,
            keep_alive: mqtt.keep_alive,
            linger: mqtt.linger,
            probe: ProbePolicy {
                interval: mqtt.probe_interval,
                max: mqtt.probe_max.max(mqtt.probe_interval),
            },
            backoff: BackoffPolicy {
                initial: mqtt.backoff_initial,
                max: backoff_max,
                reset_after: mqtt.backoff_reset_after,
            },
            // The breaker's pause grows to the backoff's ceiling: a broker that keeps
            // refusing is tried at most 3600 / backoff_max_s times an hour.
            breaker: BreakerPolicy {
                failure_threshold: mqtt.failure_threshold,
                open_for: mqtt.open_for,
                open_max: backoff_max,
            },
            permanent_retry: mqtt.permanent_retry,
            shutdown_grace: SHUTDOWN_GRACE,
            idle_poll: IDLE_POLL,
            wedge_margin: WEDGE_MARGIN,
        })
    }

    /// What paces reconnects, from these settings.
    pub fn reconnect_policy(&self) -> ReconnectPolicy {
        ReconnectPolicy {
            probe: self.probe,
            backoff: self.backoff,
            breaker: self.breaker,
            permanent_retry: self.permanent_retry,
            endpoints: 1 + self.fallback.len(),
        }
    }

    /// Not connected and no probe or attempt begun for longer than this: wedged
    /// (`MQTT_WEDGED` in `/health`). The liveness bound of the reconnect policy plus
    /// `wedge_margin`.
    pub fn wedge_after(&self) -> Duration {
        self.reconnect_policy()
            .longest_wait()
            .saturating_add(self.wedge_margin)
    }

    /// Endpoint `i` of the broker: `broker`, then `fallback` (wrapping around).
    pub fn endpoint(&self, i: usize) -> &BrokerUrl {
        let n = 1 + self.fallback.len();
        match i % n {
            0 => &self.broker,
            k => self.fallback.get(k - 1).unwrap_or(&self.broker),
        }
    }
}

/// What the uplink will do with its files at start (read the password, parse the CA, the
/// client certificate and its key), done for `check-config`, `run` and every reload: a
/// problem naming the key of the file that failed, with the error's code. Nothing when
/// `[mqtt]` already has problems of its own besides its URL (`earlier`): the files are
/// judged only for a section that is otherwise right.
pub fn file_problems(mqtt: &MqttSettings, device: &str, earlier: &[Problem]) -> Vec<Problem> {
    if earlier
        .iter()
        .any(|p| p.key.starts_with("mqtt.") && p.key != "mqtt.url")
    {
        return Vec::new();
    }
    let Err(e) = PublisherSettings::from_settings(mqtt, device) else {
        return Vec::new();
    };
    let key = match &e {
        UplinkError::TlsConfig { path, .. } => [
            ("mqtt.password_file", &mqtt.password_file),
            ("mqtt.client_cert", &mqtt.client_cert),
            ("mqtt.client_key", &mqtt.client_key),
            ("mqtt.ca_file", &mqtt.ca_file),
            ("mqtt.sas_key_file", &mqtt.sas_key_file),
        ]
        .into_iter()
        .find(|(_, p)| p.as_deref() == Some(path.as_path()))
        .map_or("mqtt.ca_file", |(key, _)| key),
        _ => "mqtt.url",
    };
    vec![Problem::new(key, format!("{e} ({})", e.code()))]
}

/// Beyond the liveness bound, what a probe (5 s), an attempt (5 s) and the wind-down of a
/// session (reading rumqttc's last events, releasing fixes to the buffer) may take before
/// the uplink counts as wedged.
const WEDGE_MARGIN: Duration = Duration::from_secs(60);
/// How long a full attempt may take, from TCP to CONNACK: rumqttc's default.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// At shutdown, how long to wait for PUBACKs of messages in flight (and for `offline`).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often to ask the buffer again when it said nothing is pending (a wake-up is also
/// sent after every commit).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The TLS configuration the settings were made with, and the fingerprint of its files.
pub(crate) fn tls_made(settings: &PublisherSettings) -> Option<(u64, Arc<rustls::ClientConfig>)> {
    settings
        .tls_client
        .config()
        .map(|config| (settings.tls_files, Arc::clone(config)))
}

/// The profile's settings with its secrets read, and the CONNECT credentials the profile
/// leaves to the configuration (none when it makes its own).
fn profile_settings(
    mqtt: &MqttSettings,
    credentials: Option<(String, Password)>,
) -> Result<(ProfileSettings, Option<(String, Password)>), UplinkError> {
    Ok(match mqtt.profile {
        ProfileName::Fleet => (ProfileSettings::Fleet, credentials),
        ProfileName::Aws => (ProfileSettings::Aws, credentials),
        ProfileName::Cumulocity => (ProfileSettings::Cumulocity, credentials),
        ProfileName::Thingsboard => {
            // The access token: from its file (kept out of the world-readable config), else
            // the user name as written.
            let token = match (&mqtt.password_file, &mqtt.username) {
                (Some(path), _) => Password::from_file(path)?,
                (None, Some(user)) => Password::new(user.clone()),
                (None, None) => Password::new(""),
            };
            (ProfileSettings::Thingsboard { token }, None)
        }
        ProfileName::Azure => {
            let key = match &mqtt.sas_key_file {
                Some(path) => Some(DeviceKey::from_file(path)?),
                None => None,
            };
            let hub = mqtt
                .server_name
                .clone()
                .unwrap_or_else(|| mqtt.broker.host.clone());
            let token_lifetime = crate::uplink::profile::azure::TOKEN_LIFETIME;
            (
                ProfileSettings::Azure {
                    hub,
                    key,
                    token_lifetime,
                },
                None,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    fn mqtt(section: &str) -> MqttSettings {
        parse_str(&format!("[device]\nid = \"truck-7\"\n[mqtt]\n{section}"))
            .unwrap()
            .mqtt
    }

    #[test]
    fn a_bad_url_is_a_permanent_url_error() {
        for url in ["http://b", "mqtt://:1883", "mqtt://b:x", "mqtts://b:99999"] {
            let e = PublisherSettings::new(url, "truck-1").unwrap_err();
            assert_eq!(e.code(), "MQTT_URL", "{url}");
            assert_eq!(e.class(), crate::error::ErrorClass::Permanent);
        }
    }

    #[test]
    fn a_password_never_shows_in_debug_output() {
        let mut s = PublisherSettings::new("mqtt://b", "truck-1").unwrap();
        s.credentials = Some(("truck-1".into(), Password::new("hunter2")));
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn settings_map_every_key_and_the_client_id_defaults_to_the_device_id() {
        let m = mqtt(
            "batch_max = 20\nmax_message_bytes = 4096\ninflight = 4\npuback_timeout_s = 7.5
backoff_initial_s = 2.0\nbackoff_max_s = 90.0\nbackoff_reset_after_s = 30.0
failure_threshold = 9\nopen_for_s = 12.0\npermanent_retry_s = 120.0\nkeep_alive_s = 45
payload = \"cbor\"\n",
        );
        let s = PublisherSettings::from_settings(&m, "truck-7").unwrap();
        assert_eq!(s.payload, PayloadFormat::Cbor);
        assert_eq!(s.client_id, "truck-7");
        assert_eq!(s.device, "truck-7");
        assert_eq!(s.broker.to_string(), "mqtt://127.0.0.1:1883");
        assert_eq!(s.batch_max, 20);
        assert_eq!(s.max_message_bytes, 4096);
        assert_eq!(s.window, 4);
        assert_eq!(s.puback_timeout, Duration::from_millis(7500));
        assert_eq!(s.backoff.initial, Duration::from_secs(2));
        assert_eq!(s.backoff.max, Duration::from_secs(90));
        assert_eq!(s.backoff.reset_after, Duration::from_secs(30));
        assert_eq!(s.breaker.failure_threshold.get(), 9);
        assert_eq!(s.breaker.open_for, Duration::from_secs(12));
        assert_eq!(s.permanent_retry, Duration::from_secs(120));
        assert_eq!(s.keep_alive, Duration::from_secs(45));
        assert!(s.credentials.is_none());

        let named = mqtt("client_id = \"custom\"\n");
        let s = PublisherSettings::from_settings(&named, "truck-7").unwrap();
        assert_eq!(s.client_id, "custom");
        // The tools' defaults are the file's defaults, but for the TLS tickets: an agent run
        // from a file keeps them beside its buffer, the tools in memory only.
        let tools = PublisherSettings::new("mqtt://127.0.0.1", "truck-7").unwrap();
        let mut from_file = mqtt("");
        assert_eq!(
            from_file.tls_tickets.as_deref(),
            Some(std::path::Path::new(
                "/var/lib/gps-agent/buffer.db.tls-tickets"
            ))
        );
        from_file.tls_tickets = None;
        let file = PublisherSettings::from_settings(&from_file, "truck-7").unwrap();
        assert_eq!(tools, file);
    }

    #[test]
    fn an_unreadable_password_file_is_tls_config() {
        let mut m = mqtt("username = \"truck-7\"\n");
        m.password_file = Some("/nonexistent/password".into());
        let e = PublisherSettings::from_settings(&m, "truck-7").unwrap_err();
        assert_eq!(e.code(), "MQTT_TLS_CONFIG");
    }
}
