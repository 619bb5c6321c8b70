//! Azure IoT Hub's MQTT device contract
//! (<https://learn.microsoft.com/azure/iot/iot-mqtt-connect-to-iot-hub>): client id = the
//! device id; user name `{hub}/{device}/?api-version=2021-04-12`; password a SAS token
//! (<https://learn.microsoft.com/azure/iot-hub/authenticate-authorization-sas>) signed with the
//! device key from `sas_key_file` (base64, as the portal shows it), or none when the device
//! authenticates with its X.509 certificate; TLS only.
//!
//! Telemetry goes to `devices/{id}/messages/events/` with the content type and encoding as
//! the system properties `$.ct` and `$.ce` in the topic's property bag, URL-encoded as the
//! Azure SDKs write them (`%24.ct=application%2Fjson&%24.ce=utf-8`; CBOR is
//! `application%2Fcbor` with no encoding). IoT Hub refuses retained messages, so the agent's
//! state goes to the device twin's reported properties
//! (`$iothub/twin/PATCH/properties/reported/?$rid={n}`), and the last will, which IoT Hub
//! takes only as telemetry, is the `offline` state as a message with the property
//! `gps-agent=status`.
//!
//! A SAS token lives [`TOKEN_LIFETIME`]; the session renews it by reconnecting
//! [`RENEW_BEFORE`] ahead of its expiry (IoT Hub closes a connection whose token expired).

use super::calls::{self, Route, Routes};
use super::{Identity, Profile, Publish};
use crate::base64;
use crate::config::{PayloadFormat, ProfileName};
use crate::uplink::credentials::Password;
use crate::uplink::error::UplinkError;
use crate::uplink::payload::{status_payload, Encoded, FixBatch, LinkState};
use serde_json::Value;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Direct methods arrive on `$iothub/methods/POST/{method}/?$rid={rid}`; the answer goes to
/// `$iothub/methods/res/{status}/?$rid={rid}`.
pub const METHODS: &str = "$iothub/methods/POST/";
/// Responses to twin requests (the reported-properties patches): subscribed, as the hub
/// expects of a device that updates its twin, and not otherwise read.
pub const TWIN_RESPONSES: &str = "$iothub/twin/res/#";

/// The API version the user name names.
pub const API_VERSION: &str = "2021-04-12";
/// How long a SAS token the agent signs is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// How long before its token expires a session reconnects with a new one (a tenth of the
/// lifetime when that is shorter).
pub const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// The device's symmetric key: never shown in a log, a `Debug` or a panic.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceKey(Vec<u8>);

impl DeviceKey {
    pub fn new(bytes: Vec<u8>) -> Self {
        DeviceKey(bytes)
    }

    /// The key in `path`: base64 on its first line, as the portal shows it. Errors name the
    /// file, never its contents.
    pub fn from_file(path: &Path) -> Result<Self, UplinkError> {
        let text = Password::from_file(path)?;
        match base64::decode(text.reveal().as_bytes()) {
            Some(bytes) if !bytes.is_empty() => Ok(DeviceKey(bytes)),
            _ => Err(UplinkError::TlsConfig {
                path: path.to_path_buf(),
                why: "the device key is not base64".into(),
            }),
        }
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceKey(<redacted>)")
    }
}

/// `text` percent-encoded as a URL query value: everything but RFC 3986's unreserved
/// characters.
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A SAS token for `{hub}/devices/{device}`, valid until `expiry` (seconds since the Unix
/// epoch): `SharedAccessSignature sr=…&sig=…&se=…`, the signature HMAC-SHA256 over the
/// encoded resource, a newline and the expiry.
pub fn sas_token(hub: &str, device: &str, key: &DeviceKey, expiry: u64) -> String {
    let resource = url_encode(&format!("{hub}/devices/{device}"));
    let signed = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key.0),
        format!("{resource}\n{expiry}").as_bytes(),
    );
    let sig = url_encode(&base64::encode(signed.as_ref()));
    format!("SharedAccessSignature sr={resource}&sig={sig}&se={expiry}")
}

#[derive(Debug)]
pub struct Azure {
    hub: String,
    device: String,
    key: Option<DeviceKey>,
    payload: PayloadFormat,
    lifetime: Duration,
    events: String,
    /// Request ids of twin updates.
    rid: AtomicU64,
    routes: Routes,
}

impl Azure {
    pub fn new(
        hub: &str,
        device: &str,
        key: Option<DeviceKey>,
        payload: PayloadFormat,
        lifetime: Duration,
    ) -> Self {
        let properties = match payload {
            PayloadFormat::Json => "%24.ct=application%2Fjson&%24.ce=utf-8",
            PayloadFormat::Cbor => "%24.ct=application%2Fcbor",
        };
        Azure {
            hub: hub.to_owned(),
            device: device.to_owned(),
            key,
            payload,
            lifetime,
            events: format!("devices/{device}/messages/events/{properties}"),
            rid: AtomicU64::new(0),
            routes: Routes::default(),
        }
    }
}

impl Profile for Azure {
    fn name(&self) -> ProfileName {
        ProfileName::Azure
    }

    fn identity(&self, now: SystemTime) -> Identity {
        let user = format!("{}/{}/?api-version={API_VERSION}", self.hub, self.device);
        let Some(key) = &self.key else {
            // X.509: the certificate is the credential; IoT Hub still wants the user name.
            return Identity {
                client_id: self.device.clone(),
                credentials: Some((user, Password::new(""))),
                renew_at: None,
            };
        };
        let expires = now + self.lifetime;
        let expiry = expires
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Identity {
            client_id: self.device.clone(),
            credentials: Some((
                user,
                Password::new(sas_token(&self.hub, &self.device, key, expiry)),
            )),
            renew_at: Some(expires - RENEW_BEFORE.min(self.lifetime / 10)),
        }
    }

    fn fixes_topic(&self) -> &str {
        &self.events
    }

    fn encode(&self, batch: &FixBatch<'_>, max_message_bytes: usize) -> Encoded {
        super::spec_message(self.payload, batch, max_message_bytes)
    }

    fn status(&self, state: LinkState) -> Publish {
        let rid = self.rid.fetch_add(1, Ordering::Relaxed) + 1;
        Publish {
            topic: format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}"),
            payload: status_payload(state, &self.device),
            retain: false,
            points: 0,
        }
    }

    fn will(&self) -> Publish {
        Publish {
            topic: format!(
                "devices/{}/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8&gps-agent=status",
                self.device
            ),
            payload: status_payload(LinkState::Offline, &self.device),
            retain: false,
            points: 0,
        }
    }

    fn subscriptions(&self, commands: bool) -> Vec<String> {
        let mut all = vec![TWIN_RESPONSES.to_owned()];
        if commands {
            all.push(format!("{METHODS}#"));
        }
        all
    }

    /// A direct method: its name is the command, its payload the arguments.
    fn requests(&self, topic: &str, payload: &[u8], connection: u64, now_ms: i64) -> Vec<Vec<u8>> {
        let Some((method, rid)) = topic
            .strip_prefix(METHODS)
            .and_then(|rest| rest.split_once("/?$rid="))
        else {
            return Vec::new();
        };
        let params: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
        let (request, id) =
            calls::request(&format!("azure-{connection}-{rid}"), method, params, now_ms);
        if let Some(id) = id {
            self.routes.remember(
                id,
                Route::Azure {
                    rid: rid.to_owned(),
                },
            );
        }
        vec![request]
    }

    /// Telemetry as the live fixes, marked with the message property `gps-agent=backfill`
    /// (IoT Hub routes can tell them apart); the payload is the spec's, with `"request"`.
    fn backfill(&self, message: &[u8], max_message_bytes: usize) -> Vec<Publish> {
        let topic = format!(
            "devices/{}/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8&gps-agent=backfill",
            self.device
        );
        calls::split_backfill(message, max_message_bytes)
            .into_iter()
            .map(|payload| Publish {
                topic: topic.clone(),
                payload,
                retain: false,
                points: 0,
            })
            .collect()
    }

    /// The answer as the method's response: status 200 when it went well, 400 when the
    /// request was refused, 500 when it failed running.
    fn answer(&self, answer: &[u8]) -> Option<Publish> {
        let (id, ok, v) = calls::read_answer(answer)?;
        let Route::Azure { rid } = self.routes.find(&id)? else {
            return None;
        };
        let code = v
            .pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let status = match (ok, code) {
            (true, _) => 200,
            (false, "CMD_FAILED" | "CMD_INTERRUPTED") => 500,
            (false, _) => 400,
        };
        Some(Publish {
            topic: format!("$iothub/methods/res/{status}/?$rid={rid}"),
            payload: answer.to_vec(),
            retain: false,
            points: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The token for a known key,
    /// resource and expiry is fixed (checked against Python's `hmac`/`base64`/`urllib` as the
    /// Azure SDK signs).
    #[test]
    fn a_sas_token_signs_the_encoded_resource_and_expiry() {
        let key = DeviceKey::new(base64::decode(b"c2VjcmV0LWtleS1mb3ItdGVzdHM=").unwrap());
        let token = sas_token("myhub.azure-devices.net", "bar-truck", &key, 1_700_000_000);
        assert!(token.starts_with(
            "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fbar-truck&sig="
        ));
        assert!(token.ends_with("&se=1700000000"));
        let sig = token
            .split("&sig=")
            .nth(1)
            .and_then(|s| s.split("&se=").next())
            .unwrap();
        assert_eq!(sig, SIG_1700000000);
    }

    const SIG_1700000000: &str = "ZJL3IQ1ZDxiRFe0m8OMajna62eB%2Ffu25LQ66%2B%2Bq79KU%3D";

    #[test]
    fn identity_is_the_device_the_hub_user_and_a_token_renewed_before_it_expires() {
        let key = DeviceKey::new(b"k".to_vec());
        let a = Azure::new(
            "h.azure-devices.net",
            "bar-truck",
            Some(key),
            PayloadFormat::Json,
            TOKEN_LIFETIME,
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let id = a.identity(now);
        assert_eq!(id.client_id, "bar-truck");
        let (user, token) = id.credentials.unwrap();
        assert_eq!(
            user,
            "h.azure-devices.net/bar-truck/?api-version=2021-04-12"
        );
        assert!(token.reveal().ends_with("&se=4600"));
        assert_eq!(id.renew_at, Some(now + TOKEN_LIFETIME - RENEW_BEFORE));
        assert_eq!(
            a.fixes_topic(),
            "devices/bar-truck/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8"
        );
        let s1 = a.status(LinkState::Online);
        let s2 = a.status(LinkState::Online);
        assert_eq!(s1.topic, "$iothub/twin/PATCH/properties/reported/?$rid=1");
        assert_eq!(s2.topic, "$iothub/twin/PATCH/properties/reported/?$rid=2");
        assert!(!s1.retain && !a.will().retain);
        let cbor = Azure::new("h", "d", None, PayloadFormat::Cbor, TOKEN_LIFETIME);
        assert_eq!(
            cbor.fixes_topic(),
            "devices/d/messages/events/%24.ct=application%2Fcbor"
        );
        assert_eq!(cbor.identity(now).renew_at, None);
    }

    #[test]
    fn a_direct_method_is_a_request_and_its_answer_the_methods_response() {
        let a = Azure::new("h", "d", None, PayloadFormat::Json, TOKEN_LIFETIME);
        assert_eq!(a.subscriptions(false), ["$iothub/twin/res/#"]);
        assert_eq!(
            a.subscriptions(true),
            ["$iothub/twin/res/#", "$iothub/methods/POST/#"]
        );
        let mut got = a.requests("$iothub/methods/POST/config.get/?$rid=7", b"null", 2, 0);
        let request: Value = serde_json::from_slice(&got.remove(0)).unwrap();
        assert_eq!(request["id"], "azure-2-7");
        assert_eq!(request["cmd"], "config.get");
        let ok = a
            .answer(br#"{"id":"azure-2-7","ok":true,"result":{}}"#)
            .unwrap();
        assert_eq!(ok.topic, "$iothub/methods/res/200/?$rid=7");
        let refused = a
            .answer(
                br#"{"id":"azure-2-7","ok":false,"error":{"code":"CMD_UNKNOWN","message":"x"}}"#,
            )
            .unwrap();
        assert_eq!(refused.topic, "$iothub/methods/res/400/?$rid=7");
        assert!(a
            .requests("$iothub/twin/res/204/?$rid=1", b"", 2, 0)
            .is_empty());
    }
}
