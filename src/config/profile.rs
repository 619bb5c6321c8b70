//! `[mqtt] profile`: which platform's device contract the uplink speaks
//! (`../shared/spec/INTERFACE.md`, "Platform profiles"), and the checks each platform's own
//! limits call for, so that `check-config` refuses what the platform would refuse at the
//! first connection (or, worse, accept and drop silently). What a profile does on the wire is
//! `crate::uplink::profile`'s; this file only names the profile and checks the keys.

use super::{BrokerUrl, MqttConfig, Problem};
use serde::Deserialize;

/// The platform the uplink talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProfileName {
    /// The spec's own `fleet/{id}/...` topics (the default).
    #[default]
    Fleet,
    /// ThingsBoard's device MQTT API.
    Thingsboard,
    /// AWS IoT Core.
    Aws,
    /// Azure IoT Hub.
    Azure,
    /// Cumulocity IoT (SmartREST 2.0 static templates).
    Cumulocity,
}

impl ProfileName {
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileName::Fleet => "fleet",
            ProfileName::Thingsboard => "thingsboard",
            ProfileName::Aws => "aws",
            ProfileName::Azure => "azure",
            ProfileName::Cumulocity => "cumulocity",
        }
    }
}

/// AWS IoT Core's limits that bite (<https://docs.aws.amazon.com/general/latest/gr/iot-core.html>,
/// "AWS IoT Core message broker and protocol limits and quotas").
pub mod aws {
    /// Keep-alive the broker accepts, seconds.
    pub const KEEP_ALIVE_S: std::ops::RangeInclusive<u32> = 30..=1200;
    /// Forward slashes in a topic, at most.
    pub const MAX_TOPIC_SLASHES: usize = 7;
    /// Bytes of a topic (UTF-8), at most.
    pub const MAX_TOPIC_BYTES: usize = 256;
    /// Bytes of a message payload, at most.
    pub const MAX_MESSAGE_BYTES: u32 = 128 * 1024;
}

/// Cumulocity's MQTT packet limit (<https://cumulocity.com/docs/device-integration/mqtt/>,
/// "MQTT implementation": 16,184 bytes), which every message of several SmartREST lines
/// stays within, whatever `max_message_bytes` says.
pub const CUMULOCITY_MAX_MESSAGE_BYTES: u32 = 16_184;

/// The longest topic the agent publishes or subscribes to under the fleet contract, for a
/// device and prefix: `{prefix}/{device}/cmd/result`.
fn longest_fleet_topic(prefix: &str, device: &str) -> String {
    format!("{prefix}/{device}/cmd/result")
}

/// Every problem the profile finds with `[mqtt]` (and the device id), keyed as the file is.
pub fn check(m: &MqttConfig, broker: Option<&BrokerUrl>, device: &str, out: &mut Vec<Problem>) {
    let needs_tls = |out: &mut Vec<Problem>, platform: &str| {
        if broker.is_some_and(|b| !b.tls) {
            out.push(Problem::new(
                "mqtt.url",
                format!("{platform} takes only TLS connections: use mqtts://"),
            ));
        }
    };
    let sets_client_id = |out: &mut Vec<Problem>, what: &str| {
        if m.client_id.as_deref().is_some_and(|id| id != device) {
            out.push(Problem::new(
                "mqtt.client_id",
                format!(
                    "profile {:?} uses {what}: leave client_id out",
                    m.profile.as_str()
                ),
            ));
        }
    };
    if m.sas_key_file.is_some() && m.profile != ProfileName::Azure {
        out.push(Problem::new(
            "mqtt.sas_key_file",
            "only profile \"azure\" signs SAS tokens".into(),
        ));
    }
    match m.profile {
        ProfileName::Fleet => {}
        ProfileName::Thingsboard => {
            if m.password_file.is_none() && m.username.is_none() {
                out.push(Problem::new(
                    "mqtt.password_file",
                    "ThingsBoard needs the device's access token: its file here (or, less \
                     safely, mqtt.username)"
                        .into(),
                ));
            }
        }
        ProfileName::Aws => {
            needs_tls(out, "AWS IoT Core");
            sets_client_id(out, "the thing name (the device id) as client id");
            if !aws::KEEP_ALIVE_S.contains(&m.keep_alive_s) {
                out.push(Problem::new(
                    "mqtt.keep_alive_s",
                    format!(
                        "{} is outside AWS IoT Core's {} to {} seconds",
                        m.keep_alive_s,
                        aws::KEEP_ALIVE_S.start(),
                        aws::KEEP_ALIVE_S.end()
                    ),
                ));
            }
            if m.max_message_bytes > aws::MAX_MESSAGE_BYTES {
                out.push(Problem::new(
                    "mqtt.max_message_bytes",
                    format!(
                        "{} is above AWS IoT Core's {} bytes a message",
                        m.max_message_bytes,
                        aws::MAX_MESSAGE_BYTES
                    ),
                ));
            }
            let topic = longest_fleet_topic(&m.topic_prefix, device);
            let slashes = topic.matches('/').count();
            if slashes > aws::MAX_TOPIC_SLASHES || topic.len() > aws::MAX_TOPIC_BYTES {
                out.push(Problem::new(
                    "mqtt.topic_prefix",
                    format!(
                        "topic {topic:?} has {slashes} slashes and {} bytes; AWS IoT Core takes \
                         at most {} and {}",
                        topic.len(),
                        aws::MAX_TOPIC_SLASHES,
                        aws::MAX_TOPIC_BYTES
                    ),
                ));
            }
            if m.client_cert.is_none() || m.client_key.is_none() {
                out.push(Problem::new(
                    "mqtt.client_cert",
                    "AWS IoT Core authenticates devices by their certificate: set client_cert \
                     and client_key"
                        .into(),
                ));
            }
        }
        ProfileName::Azure => {
            needs_tls(out, "Azure IoT Hub");
            sets_client_id(out, "the device id as client id");
            for (key, set) in [
                ("mqtt.username", m.username.is_some()),
                ("mqtt.password_file", m.password_file.is_some()),
            ] {
                if set {
                    out.push(Problem::new(
                        key,
                        "profile \"azure\" makes the user name and the SAS token itself: leave \
                         it out"
                            .into(),
                    ));
                }
            }
            let x509 = m.client_cert.is_some() && m.client_key.is_some();
            if m.sas_key_file.is_none() && !x509 {
                out.push(Problem::new(
                    "mqtt.sas_key_file",
                    "Azure IoT Hub needs the device's key (sas_key_file) or its X.509 \
                     certificate (client_cert, client_key)"
                        .into(),
                ));
            }
        }
        ProfileName::Cumulocity => {
            // Cumulocity serves plain MQTT on 1883 and TLS on 8883: either is the tenant's.
            sets_client_id(out, "d:{device} as client id");
            match &m.username {
                Some(u)
                    if u.split_once('/')
                        .is_some_and(|(t, n)| !t.is_empty() && !n.is_empty()) => {}
                _ => out.push(Problem::new(
                    "mqtt.username",
                    "Cumulocity needs {tenant}/{user}".into(),
                )),
            }
            if m.password_file.is_none() {
                out.push(Problem::new(
                    "mqtt.password_file",
                    "Cumulocity needs the user's password".into(),
                ));
            }
        }
    }
}
