//! The spec's own contract (`../shared/spec/INTERFACE.md`, "MQTT"): fixes on
//! `{prefix}/{device}/fixes` as JSON (`v` 1) or the compact CBOR (`v` 2), the retained
//! `online`/`offline` status on `{prefix}/{device}/status`, which is also the last will.
//!
//! AWS IoT Core (`profile = "aws"`) takes this contract as it is
//! (<https://docs.aws.amazon.com/iot/latest/developerguide/mqtt.html>: QoS 0 and 1, retained
//! messages, last will): what differs is the client id (the thing name, the device id),
//! mutual TLS with the device certificate, ALPN `x-amzn-mqtt-ca` on port 443 (the TLS
//! settings') and the limits `check-config` holds the keys to
//! (`crate::config::profile::aws`).

use super::{Identity, Profile, Publish};
use crate::config::{PayloadFormat, ProfileName};
use crate::uplink::credentials::Password;
use crate::uplink::payload::{status_payload, Encoded, FixBatch, LinkState, Topics};
use std::time::SystemTime;

#[derive(Debug)]
pub struct Fleet {
    name: ProfileName,
    device: String,
    topics: Topics,
    client_id: String,
    credentials: Option<(String, Password)>,
    payload: PayloadFormat,
}

impl Fleet {
    pub fn new(
        name: ProfileName,
        device: &str,
        topic_prefix: &str,
        client_id: &str,
        credentials: Option<(String, Password)>,
        payload: PayloadFormat,
    ) -> Self {
        Fleet {
            name,
            device: device.to_owned(),
            topics: Topics::new(topic_prefix, device),
            client_id: client_id.to_owned(),
            credentials,
            payload,
        }
    }
}

impl Profile for Fleet {
    fn name(&self) -> ProfileName {
        self.name
    }

    fn identity(&self, _now: SystemTime) -> Identity {
        Identity {
            client_id: self.client_id.clone(),
            credentials: self.credentials.clone(),
            renew_at: None,
        }
    }

    fn fixes_topic(&self) -> &str {
        &self.topics.fixes
    }

    fn encode(&self, batch: &FixBatch<'_>, max_message_bytes: usize) -> Encoded {
        super::spec_message(self.payload, batch, max_message_bytes)
    }

    fn status(&self, state: LinkState) -> Publish {
        Publish {
            topic: self.topics.status.clone(),
            payload: status_payload(state, &self.device),
            retain: true,
            points: 0,
        }
    }

    fn subscriptions(&self, commands: bool) -> Vec<String> {
        if commands {
            vec![self.topics.cmd.clone()]
        } else {
            Vec::new()
        }
    }

    fn requests(&self, topic: &str, payload: &[u8], _: u64, _: i64) -> Vec<Vec<u8>> {
        if topic != self.topics.cmd {
            return Vec::new();
        }
        vec![payload.to_vec()]
    }

    /// On `{prefix}/{device}/backfill`, as it is (split when over the cap).
    /// In the fixes messages' format: the commands stage's JSON as it is (split under the
    /// cap), or the compact CBOR with `request` as one more key (a backfill of an hour at
    /// 1 Hz: about 60 KB instead of 620 KB on a metered link).
    fn backfill(&self, message: &[u8], max_message_bytes: usize) -> Vec<Publish> {
        let payloads = match self.payload {
            PayloadFormat::Json => super::calls::split_backfill(message, max_message_bytes),
            PayloadFormat::Cbor => match super::calls::read_backfill(message) {
                Some(b) => {
                    let batch = FixBatch {
                        device: &self.device,
                        stream: &b.stream,
                        fixes: &b.fixes,
                    };
                    crate::uplink::cbor::encode_backfill(&batch, &b.request, max_message_bytes)
                        .messages
                        .into_iter()
                        .map(|m| m.payload)
                        .collect()
                }
                None => Vec::new(),
            },
        };
        payloads
            .into_iter()
            .map(|payload| Publish {
                topic: self.topics.backfill.clone(),
                payload,
                retain: false,
                points: 0,
            })
            .collect()
    }

    fn answer(&self, answer: &[u8]) -> Option<Publish> {
        Some(Publish {
            topic: self.topics.result.clone(),
            payload: answer.to_vec(),
            retain: false,
            points: 0,
        })
    }
}
