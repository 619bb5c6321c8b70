//! The platform's device contract (`[mqtt] profile`, `../shared/spec/INTERFACE.md` "Platform
//! profiles"): one seam that says who the agent is at CONNECT, which topics it publishes,
//! how a batch of fixes and the agent's state are shaped, and what the last will is. The
//! pipeline behind it does not change with the platform: the same buffer, adaptive policy,
//! linger, packet-limit learning, reconnect pacing and exact delivery (a fix leaves the buffer
//! only on the PUBACK of the message that carried it); the session asks its [`Profile`] and
//! never looks at which one it is.
//!
//! In: the checked settings ([`ProfileSettings`], built with the credentials). Out: a
//! [`Profile`] per configuration ([`for_settings`]). One file per platform, each citing the
//! platform's own documentation: [`fleet`] (the spec's own topics; AWS IoT Core speaks it as
//! is, its limits are `check-config`'s and its ALPN the TLS settings'), [`thingsboard`],
//! [`azure`] (with its SAS token), [`cumulocity`].

pub mod azure;
pub mod calls;
pub mod cumulocity;
pub mod fleet;
pub mod thingsboard;

use crate::config::ProfileName;
use crate::fix::Fix;
use crate::uplink::credentials::Password;
use crate::uplink::pace::Rates;
use crate::uplink::payload::{Encoded, FixBatch, LinkState};
use std::fmt;
use std::time::SystemTime;

/// What a profile needs beyond the `[mqtt]` settings every profile shares: the secrets it
/// presents, read once when the settings are made (so a missing file is reported at start).
#[derive(Debug, Clone, PartialEq)]
pub enum ProfileSettings {
    /// The spec's `fleet/{id}/...` contract, with `username`/`password_file` as configured.
    Fleet,
    /// AWS IoT Core: the fleet contract, the thing name as client id, mutual TLS.
    Aws,
    /// ThingsBoard: the device's access token is the user name.
    Thingsboard { token: Password },
    /// Azure IoT Hub: the hub's host name, and the device key that signs SAS tokens (none:
    /// the device authenticates with its X.509 certificate).
    Azure {
        hub: String,
        key: Option<azure::DeviceKey>,
        /// How long each SAS token is valid ([`azure::TOKEN_LIFETIME`]).
        token_lifetime: std::time::Duration,
    },
    /// Cumulocity: `{tenant}/{user}` and its password, as configured.
    Cumulocity,
}

impl ProfileSettings {
    pub fn name(&self) -> ProfileName {
        match self {
            ProfileSettings::Fleet => ProfileName::Fleet,
            ProfileSettings::Aws => ProfileName::Aws,
            ProfileSettings::Thingsboard { .. } => ProfileName::Thingsboard,
            ProfileSettings::Azure { .. } => ProfileName::Azure,
            ProfileSettings::Cumulocity => ProfileName::Cumulocity,
        }
    }
}

/// Who the agent is at CONNECT.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub client_id: String,
    /// User name and password.
    pub credentials: Option<(String, Password)>,
    /// When the session must reconnect with new credentials (a signed token's expiry, less a
    /// margin); `None`: never.
    pub renew_at: Option<SystemTime>,
}

/// One message the agent sends besides fixes (its state, the last will, a command's answer,
/// a backfill message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// The telemetry data points it carries, as the platform counts them (0: not telemetry).
    pub points: u64,
}

/// What the platform says of its limits for a session (ThingsBoard's `getSessionLimits`);
/// `None` or empty: what it does not limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionLimits {
    /// Payload bytes of one message, at most.
    pub max_payload_bytes: Option<usize>,
    /// Messages unacknowledged at once, at most.
    pub max_inflight: Option<usize>,
    pub rates: Rates,
}

/// A platform's device contract, as the session uses it.
pub trait Profile: Send + Sync + fmt::Debug {
    fn name(&self) -> ProfileName;

    /// Client id and credentials for a connection made at `now`.
    fn identity(&self, now: SystemTime) -> Identity;

    /// Where fixes go (QoS 1, never retained).
    fn fixes_topic(&self) -> &str;

    /// `batch` as messages of at most `max_message_bytes` payload bytes each, in seq order,
    /// each naming the seqs it carries; fixes no message can carry apart, as dead letters.
    fn encode(&self, batch: &FixBatch<'_>, max_message_bytes: usize) -> Encoded;

    /// The agent's state as the platform keeps it (QoS 1).
    fn status(&self, state: LinkState) -> Publish;

    /// The last will: what the broker says when the agent vanishes.
    fn will(&self) -> Publish {
        self.status(LinkState::Offline)
    }

    /// The data points of `fix` as the platform counts them against its rate limits.
    fn points(&self, _fix: &Fix) -> u64 {
        1
    }

    /// Filters to subscribe (QoS 1) after each CONNACK; `commands`: remote commands are on.
    fn subscriptions(&self, _commands: bool) -> Vec<String> {
        Vec::new()
    }

    /// What to publish after the state and the subscriptions at each connection
    /// (Cumulocity's supported operations).
    fn on_connect(&self, _commands: bool) -> Vec<Publish> {
        Vec::new()
    }

    /// A message on a subscribed topic, as requests for the commands stage (none: not a
    /// command). `connection` numbers the connection: a platform may number its calls
    /// afresh in each, and a request id must not repeat.
    fn requests(
        &self,
        _topic: &str,
        _payload: &[u8],
        _connection: u64,
        _now_ms: i64,
    ) -> Vec<Vec<u8>> {
        Vec::new()
    }

    /// The request, after the subscriptions at each connection, for the platform's limits
    /// of the session (`None`: the platform has no such request). Nothing waits for the
    /// answer, [`Profile::limits`].
    fn limits_request(&self) -> Option<Publish> {
        None
    }

    /// A message on a subscribed topic as the platform's answer about its limits (`None`:
    /// not that answer; `Err`: that answer, unreadable, saying why).
    fn limits(&self, _topic: &str, _payload: &[u8]) -> Option<Result<SessionLimits, String>> {
        None
    }

    /// Where an answer of the commands stage (the spec's JSON) goes; `None`: nowhere known.
    fn answer(&self, _answer: &[u8]) -> Option<Publish> {
        None
    }

    /// A backfill message of the commands stage (the spec's JSON fixes message with
    /// `"request"`), as the platform takes history, in messages of at most
    /// `max_message_bytes` payload bytes each (a single fix larger than that alone goes
    /// alone); none: it cannot be read.
    fn backfill(&self, message: &[u8], max_message_bytes: usize) -> Vec<Publish>;
}

/// The profile of these settings.
pub fn for_settings(
    profile: &ProfileSettings,
    device: &str,
    topic_prefix: &str,
    client_id: &str,
    credentials: &Option<(String, Password)>,
    payload: crate::config::PayloadFormat,
) -> Box<dyn Profile> {
    match profile {
        ProfileSettings::Fleet | ProfileSettings::Aws => Box::new(fleet::Fleet::new(
            profile.name(),
            device,
            topic_prefix,
            client_id,
            credentials.clone(),
            payload,
        )),
        ProfileSettings::Thingsboard { token } => Box::new(thingsboard::ThingsBoard::new(
            device,
            client_id,
            token.clone(),
        )),
        ProfileSettings::Azure {
            hub,
            key,
            token_lifetime,
        } => Box::new(azure::Azure::new(
            hub,
            device,
            key.clone(),
            payload,
            *token_lifetime,
        )),
        ProfileSettings::Cumulocity => {
            Box::new(cumulocity::Cumulocity::new(device, credentials.clone()))
        }
    }
}

/// A backfill message of the commands stage re-encoded as `profile`'s own fixes messages
/// (each fix at its own time, the request's id as the stream), on its fixes topic, each
/// within `max_message_bytes`: for platforms that take history as they take live fixes.
pub(crate) fn backfill_as_fixes(
    profile: &dyn Profile,
    device: &str,
    message: &[u8],
    max_message_bytes: usize,
) -> Vec<Publish> {
    let Some(calls::Backfill { request, fixes, .. }) = calls::read_backfill(message) else {
        return Vec::new();
    };
    let batch = FixBatch {
        device,
        stream: &request,
        fixes: &fixes,
    };
    let points: std::collections::HashMap<u64, u64> = fixes
        .iter()
        .map(|(seq, fix)| (*seq, profile.points(fix)))
        .collect();
    profile
        .encode(&batch, max_message_bytes)
        .messages
        .into_iter()
        .map(|m| Publish {
            topic: profile.fixes_topic().to_owned(),
            points: m.seqs.iter().filter_map(|seq| points.get(seq)).sum(),
            payload: m.payload,
            retain: false,
        })
        .collect()
}

/// The spec's own fixes message in `format`: JSON (`v` 1) or the compact CBOR (`v` 2), as
/// the fleet contract and Azure's telemetry carry it.
pub(crate) fn spec_message(
    format: crate::config::PayloadFormat,
    batch: &FixBatch<'_>,
    max_message_bytes: usize,
) -> Encoded {
    match format {
        crate::config::PayloadFormat::Json => {
            crate::uplink::payload::encode(batch, max_message_bytes)
        }
        crate::config::PayloadFormat::Cbor => crate::uplink::cbor::encode(batch, max_message_bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PayloadFormat;
    use crate::uplink::payload::tests::fix;

    /// A backfill message as the commands stage makes it: `n` fixes, `"request"` added.
    fn backfill_message(n: u64) -> Vec<u8> {
        let fixes: Vec<(u64, Fix)> = (0..n).map(|i| (i, fix(i as i64))).collect();
        let e = crate::uplink::payload::encode(
            &FixBatch {
                device: "truck-042",
                stream: "s1",
                fixes: &fixes,
            },
            usize::MAX,
        );
        let mut v: serde_json::Value = serde_json::from_slice(&e.messages[0].payload).unwrap();
        v["request"] = "r-7".into();
        serde_json::to_vec(&v).unwrap()
    }

    fn profile(settings: ProfileSettings) -> Box<dyn Profile> {
        let credentials = Some(("t1/u".to_owned(), Password::new("pw")));
        for_settings(
            &settings,
            "truck-042",
            "fleet",
            "truck-042",
            &credentials,
            PayloadFormat::Json,
        )
    }

    /// The cap a backfill message is split under: ThingsBoard's `maxPayloadSize` as a
    /// session might learn it, Cumulocity's packet limit, AWS IoT Core's 128 KB. Each
    /// message within it, and every fix in exactly one.
    #[test]
    fn a_backfill_message_goes_in_messages_within_the_platforms_byte_cap() {
        let cumulocity = crate::config::profile::CUMULOCITY_MAX_MESSAGE_BYTES as usize;
        let aws = crate::config::profile::aws::MAX_MESSAGE_BYTES as usize;
        let cases: [(ProfileSettings, usize, u64); 3] = [
            (
                ProfileSettings::Thingsboard {
                    token: Password::new("t"),
                },
                600,
                200,
            ),
            // More than the packet limit asked for: the profile's own limit holds.
            (ProfileSettings::Cumulocity, 64 * 1024, 400),
            (ProfileSettings::Aws, aws, 1000),
        ];
        for (settings, cap, n) in cases {
            let name = settings.name();
            let limit = if name == ProfileName::Cumulocity {
                cumulocity
            } else {
                cap
            };
            let message = backfill_message(n);
            assert!(message.len() > limit, "{name:?}: {} bytes", message.len());
            let parts = profile(settings).backfill(&message, cap);
            assert!(parts.len() > 1, "{name:?}");
            let mut fixes = 0;
            for p in &parts {
                assert!(p.payload.len() <= limit, "{name:?}: {}", p.payload.len());
                assert!(!p.retain);
                let text = std::str::from_utf8(&p.payload).unwrap();
                fixes += match name {
                    ProfileName::Cumulocity => {
                        text.lines().filter(|l| l.starts_with("401,")).count()
                    }
                    ProfileName::Thingsboard => {
                        let points: serde_json::Value = serde_json::from_str(text).unwrap();
                        let points = points.as_array().unwrap();
                        assert_eq!(p.points, 9 * points.len() as u64, "{name:?}");
                        points.len()
                    }
                    _ => {
                        let v: serde_json::Value = serde_json::from_str(text).unwrap();
                        assert_eq!(v["request"], "r-7");
                        v["fixes"].as_array().unwrap().len()
                    }
                };
            }
            assert_eq!(fixes as u64, n, "{name:?}: each fix once");
        }
    }

    /// With `[mqtt] payload = "cbor"` the fleet's backfill goes in the compact form, each
    /// message naming the request and within the cap, every fix once and as it was.
    #[test]
    fn a_fleet_backfill_in_cbor_is_the_compact_form_with_its_request_and_every_fix_once() {
        let n = 3600;
        let json = backfill_message(n);
        let fleet = for_settings(
            &ProfileSettings::Fleet,
            "truck-042",
            "fleet",
            "truck-042",
            &None,
            PayloadFormat::Cbor,
        );
        for cap in [600, 64 * 1024] {
            let parts = fleet.backfill(&json, cap);
            let mut back = Vec::new();
            for p in &parts {
                assert_eq!(p.topic, "fleet/truck-042/backfill");
                assert!(!p.retain);
                assert!(p.payload.len() <= cap, "{} > {cap}", p.payload.len());
                let m = crate::uplink::cbor::decode(&p.payload).unwrap();
                assert_eq!(m.request.as_deref(), Some("r-7"));
                assert_eq!(m.stream, "s1");
                back.extend(m.fixes);
            }
            assert_eq!(
                back.iter()
                    .map(|(seq, f)| (*seq, f.time_ms))
                    .collect::<Vec<_>>(),
                (0..n)
                    .map(|i| (i, fix(i as i64).time_ms))
                    .collect::<Vec<_>>()
            );
            let bytes: usize = parts.iter().map(|p| p.payload.len()).sum();
            assert!(
                bytes * 4 < json.len(),
                "{bytes} B of CBOR for {} B of JSON",
                json.len()
            );
            eprintln!("cap {cap}: {bytes} B of CBOR for {} B of JSON", json.len());
        }
    }
}
