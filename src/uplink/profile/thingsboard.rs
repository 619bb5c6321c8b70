//! ThingsBoard's device MQTT API (<https://thingsboard.io/docs/reference/mqtt-api/>):
//! the device's access token as the CONNECT user name (no password), time-series data on
//! `v1/devices/me/telemetry` as `[{"ts": ms, "values": {...}}]` (each fix at its own receiver
//! time, so a backlog lands at the times it was driven), and the agent's state as client-side
//! attributes on `v1/devices/me/attributes` (`{"state": "online", "device": ..., "version":
//! ...}`). ThingsBoard keeps attributes itself, so nothing is retained; the last will is the
//! `offline` attributes, which a broker in front of ThingsBoard (or a ThingsBoard that honours
//! wills) publishes when the agent vanishes.
//!
//! The values: `latitude`, `longitude` (degrees), `altitude` (metres), `speed` (m/s),
//! `course` (degrees), `hdop`, `sats`, and `seq` and `stream` so a consumer can check
//! delivery as with the fleet contract; a value the fix does not have is left out.

use super::calls::{self, Route, Routes};
use super::{Identity, Profile, Publish};
use crate::config::ProfileName;
use crate::fix::Fix;
use crate::uplink::credentials::Password;
use crate::uplink::error::UplinkError;
use crate::uplink::payload::{pack, status_payload, Encoded, FixBatch, LinkState};
use serde::Serialize;
use serde_json::Value;
use std::time::SystemTime;

pub const TELEMETRY: &str = "v1/devices/me/telemetry";
pub const ATTRIBUTES: &str = "v1/devices/me/attributes";
/// Server-side RPC: requests arrive on `.../request/{id}`, answers go to `.../response/{id}`.
pub const RPC_REQUEST: &str = "v1/devices/me/rpc/request/";
pub const RPC_RESPONSE: &str = "v1/devices/me/rpc/response/";

#[derive(Debug)]
pub struct ThingsBoard {
    device: String,
    client_id: String,
    token: Password,
    routes: Routes,
}

impl ThingsBoard {
    pub fn new(device: &str, client_id: &str, token: Password) -> Self {
        ThingsBoard {
            device: device.to_owned(),
            client_id: client_id.to_owned(),
            token,
            routes: Routes::default(),
        }
    }
}

#[derive(Serialize)]
struct Values<'a> {
    latitude: f64,
    longitude: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    altitude: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    speed: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    course: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hdop: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sats: Option<u8>,
    seq: u64,
    stream: &'a str,
}

#[derive(Serialize)]
struct Point<'a> {
    ts: i64,
    values: Values<'a>,
}

/// One telemetry element of `fix`.
fn point<'a>(seq: u64, fix: &Fix, stream: &'a str) -> Point<'a> {
    Point {
        ts: fix.time_ms,
        values: Values {
            latitude: fix.lat,
            longitude: fix.lon,
            altitude: fix.alt_m,
            speed: fix.speed_mps,
            course: fix.course_deg,
            hdop: fix.hdop,
            sats: fix.sats,
            seq,
            stream,
        },
    }
}

impl Profile for ThingsBoard {
    fn name(&self) -> ProfileName {
        ProfileName::Thingsboard
    }

    fn identity(&self, _now: SystemTime) -> Identity {
        Identity {
            client_id: self.client_id.clone(),
            credentials: Some((self.token.reveal().to_owned(), Password::new(""))),
            renew_at: None,
        }
    }

    fn fixes_topic(&self) -> &str {
        TELEMETRY
    }

    fn encode(&self, batch: &FixBatch<'_>, max_message_bytes: usize) -> Encoded {
        pack(
            batch.fixes,
            max_message_bytes,
            b"[",
            b",",
            b"]",
            |out, seq, fix| {
                serde_json::to_writer(out, &point(seq, fix, batch.stream))
                    .map_err(|source| UplinkError::Encode { seq, source })
            },
        )
    }

    fn status(&self, state: LinkState) -> Publish {
        Publish {
            topic: ATTRIBUTES.to_owned(),
            payload: status_payload(state, &self.device),
            retain: false,
        }
    }

    fn subscriptions(&self, commands: bool) -> Vec<String> {
        if commands {
            vec![format!("{RPC_REQUEST}+")]
        } else {
            Vec::new()
        }
    }

    /// `{"method": cmd, "params": args}` on `v1/devices/me/rpc/request/{n}`.
    fn requests(&self, topic: &str, payload: &[u8], connection: u64, now_ms: i64) -> Vec<Vec<u8>> {
        let Some(n) = topic.strip_prefix(RPC_REQUEST) else {
            return Vec::new();
        };
        let call: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
        let method = call
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let params = call.get("params").cloned().unwrap_or(Value::Null);
        let (request, id) = calls::request(&format!("tb-{connection}-{n}"), method, params, now_ms);
        if let Some(id) = id {
            self.routes.remember(
                id,
                Route::ThingsBoard {
                    request: n.to_owned(),
                },
            );
        }
        vec![request]
    }

    /// History as telemetry: each fix at its own time lands where it was driven.
    fn backfill(&self, message: &[u8]) -> Option<Publish> {
        let (request, fixes) = calls::read_backfill(message)?;
        let mut payload = Vec::with_capacity(fixes.len() * 200 + 2);
        payload.push(b'[');
        for (i, (seq, fix)) in fixes.iter().enumerate() {
            if i > 0 {
                payload.push(b',');
            }
            serde_json::to_writer(&mut payload, &point(*seq, fix, &request)).ok()?;
        }
        payload.push(b']');
        Some(Publish {
            topic: TELEMETRY.to_owned(),
            payload,
            retain: false,
        })
    }

    /// The answer as it is, on the RPC's response topic (ThingsBoard hands it to the caller).
    fn answer(&self, answer: &[u8]) -> Option<Publish> {
        let (id, ..) = calls::read_answer(answer)?;
        let Route::ThingsBoard { request } = self.routes.find(&id)? else {
            return None;
        };
        Some(Publish {
            topic: format!("{RPC_RESPONSE}{request}"),
            payload: answer.to_vec(),
            retain: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uplink::payload::tests::fix;

    #[test]
    fn telemetry_is_an_array_of_points_at_each_fixs_own_time() {
        let tb = ThingsBoard::new("truck-042", "truck-042", Password::new("A1_TEST_TOKEN"));
        let fixes = vec![(7, fix(0)), (8, fix(1))];
        let e = tb.encode(
            &FixBatch {
                device: "truck-042",
                stream: "s1",
                fixes: &fixes,
            },
            64 * 1024,
        );
        assert_eq!(e.messages.len(), 1);
        assert_eq!(e.messages[0].seqs, vec![7, 8]);
        let text = String::from_utf8(e.messages[0].payload.clone()).unwrap();
        assert_eq!(
            text,
            "[{\"ts\":1584538100000,\"values\":{\"latitude\":41.574970205,\"longitude\":-93.750558641,\
             \"altitude\":278.02,\"speed\":1.673,\"course\":92.308,\"hdop\":1.0,\"sats\":9,\"seq\":7,\
             \"stream\":\"s1\"}},{\"ts\":1584538101000,\"values\":{\"latitude\":41.574970205,\
             \"longitude\":-93.750558641,\"altitude\":278.02,\"speed\":1.673,\"course\":92.308,\
             \"hdop\":1.0,\"sats\":9,\"seq\":8,\"stream\":\"s1\"}}]"
        );
        let id = tb.identity(SystemTime::UNIX_EPOCH);
        let (user, password) = id.credentials.unwrap();
        assert_eq!(user, "A1_TEST_TOKEN");
        assert_eq!(password.reveal(), "");
        let status = tb.status(LinkState::Online);
        assert_eq!(status.topic, "v1/devices/me/attributes");
        assert!(!status.retain);
    }

    #[test]
    fn a_server_side_rpc_is_a_request_and_its_answer_goes_to_the_rpcs_response_topic() {
        let tb = ThingsBoard::new("d", "d", Password::new("t"));
        assert_eq!(tb.subscriptions(true), ["v1/devices/me/rpc/request/+"]);
        assert!(tb.subscriptions(false).is_empty());
        let mut got = tb.requests(
            "v1/devices/me/rpc/request/42",
            br#"{"method":"ping","params":{}}"#,
            3,
            0,
        );
        assert_eq!(got.len(), 1);
        let request: Value = serde_json::from_slice(&got.remove(0)).unwrap();
        assert_eq!(request["id"], "tb-3-42");
        assert_eq!(request["cmd"], "ping");
        let answer = br#"{"id":"tb-3-42","ok":true,"result":{"version":"x"}}"#;
        let out = tb.answer(answer).unwrap();
        assert_eq!(out.topic, "v1/devices/me/rpc/response/42");
        assert_eq!(out.payload, answer);
        assert_eq!(tb.answer(br#"{"id":"other","ok":true}"#), None);
        assert!(tb
            .requests("v1/devices/me/attributes", b"{}", 3, 0)
            .is_empty());
    }
}
