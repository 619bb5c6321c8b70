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
use crate::uplink::credentials::Password;
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

/// One message the agent sends besides fixes (its state, the last will).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
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

    /// Filters to subscribe (QoS 1) after each CONNACK; `commands`: remote commands are on.
    fn subscriptions(&self, _commands: bool) -> Vec<String> {
        Vec::new()
    }

    /// What to publish after the state at each connection (Cumulocity's supported
    /// operations).
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

    /// Where an answer of the commands stage (the spec's JSON) goes; `None`: nowhere known.
    fn answer(&self, _answer: &[u8]) -> Option<Publish> {
        None
    }

    /// A backfill message of the commands stage (the spec's JSON fixes message with
    /// `"request"`), as the platform takes history; `None`: it cannot be read.
    fn backfill(&self, message: &[u8]) -> Option<Publish>;
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
