//! ThingsBoard's device MQTT API (<https://thingsboard.io/docs/reference/mqtt-api/>):
//! the device's access token as the CONNECT user name (no password), time-series data on
//! `v1/devices/me/telemetry` as `[{"ts": ms, "values": {...}}]` (each fix at its own receiver
//! time, so a backlog lands at the times it was driven), and the agent's state as client-side
//! attributes on `v1/devices/me/attributes` (`{"state": "online", "device": ..., "version":
//! ...}`). ThingsBoard keeps attributes itself, so nothing is retained; the last will is the
//! `offline` attributes, which a broker in front of ThingsBoard (or a ThingsBoard that honours
//! wills) publishes when the agent vanishes.
//!
//! Session limits (<https://thingsboard.io/docs/reference/mqtt-api/>, "Get session limits
//! RPC"): after each CONNACK the agent subscribes to `v1/devices/me/rpc/response/+` and asks
//! once with the client-side RPC `{"method":"getSessionLimits","params":{}}` on
//! `v1/devices/me/rpc/request/1`, as ThingsBoard's own SDK (tb-mqtt-client) does. The
//! answer (`maxPayloadSize`, `maxInflightMessages`, `rateLimits` of `messages`,
//! `telemetryMessages` and `telemetryDataPoints`, each `count:seconds,...`, all enforced at
//! once) caps the session's messages, window and pace; nothing waits for it, and an older
//! ThingsBoard that never answers leaves the agent on its own settings. Each key-value of a
//! fix is a data point.
//!
//! The values: `latitude`, `longitude` (degrees), `altitude` (metres), `speed` (m/s),
//! `course` (degrees), `hdop`, `sats`, and `seq` and `stream` so a consumer can check
//! delivery as with the fleet contract; a value the fix does not have is left out.

use super::calls::{self, Route, Routes};
use super::{Identity, Profile, Publish, SessionLimits};
use crate::config::ProfileName;
use crate::fix::Fix;
use crate::uplink::credentials::Password;
use crate::uplink::error::UplinkError;
use crate::uplink::pace::{parse_rates, Rates};
use crate::uplink::payload::{pack, status_payload, Encoded, FixBatch, LinkState};
use serde::Serialize;
use serde_json::Value;
use std::time::SystemTime;

pub const TELEMETRY: &str = "v1/devices/me/telemetry";
pub const ATTRIBUTES: &str = "v1/devices/me/attributes";
/// Server-side RPC: requests arrive on `.../request/{id}`, answers go to `.../response/{id}`.
pub const RPC_REQUEST: &str = "v1/devices/me/rpc/request/";
pub const RPC_RESPONSE: &str = "v1/devices/me/rpc/response/";
/// The client-side RPC that asks for the session's limits, and its id (one a connection).
pub const SESSION_LIMITS: &str = "getSessionLimits";
pub const SESSION_LIMITS_ID: &str = "1";

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
            points: 0,
        }
    }

    /// Each key-value is a data point.
    fn points(&self, fix: &Fix) -> u64 {
        let optional = [
            fix.alt_m.is_some(),
            fix.speed_mps.is_some(),
            fix.course_deg.is_some(),
            fix.hdop.is_some(),
            fix.sats.is_some(),
        ];
        // latitude, longitude, seq, stream, and what the fix has.
        4 + optional.iter().filter(|has| **has).count() as u64
    }

    /// Server-side RPC when commands are on; the responses to the agent's own calls always.
    fn subscriptions(&self, commands: bool) -> Vec<String> {
        let mut filters = Vec::new();
        if commands {
            filters.push(format!("{RPC_REQUEST}+"));
        }
        filters.push(format!("{RPC_RESPONSE}+"));
        filters
    }

    /// `getSessionLimits`, with the request the documentation shows.
    fn limits_request(&self) -> Option<Publish> {
        Some(Publish {
            topic: format!("{RPC_REQUEST}{SESSION_LIMITS_ID}"),
            payload: format!(r#"{{"method":"{SESSION_LIMITS}","params":{{}}}}"#).into_bytes(),
            retain: false,
            points: 0,
        })
    }

    fn limits(&self, topic: &str, payload: &[u8]) -> Option<Result<SessionLimits, String>> {
        (topic.strip_prefix(RPC_RESPONSE)? == SESSION_LIMITS_ID).then(|| session_limits(payload))
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
        if method == SESSION_LIMITS {
            // The agent's own call, seen again through a plain broker: a server never makes it.
            return Vec::new();
        }
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
    fn backfill(&self, message: &[u8], max_message_bytes: usize) -> Vec<Publish> {
        super::backfill_as_fixes(self, &self.device, message, max_message_bytes)
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
            points: 0,
        })
    }
}

/// The answer to `getSessionLimits`. Its fields are each optional (a ThingsBoard may leave
/// one out), but an answer with none of them, or with one of the wrong type, is not one.
fn session_limits(payload: &[u8]) -> Result<SessionLimits, String> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    let o = v.as_object().ok_or("not a JSON object")?;
    let positive = |key: &str| -> Result<Option<usize>, String> {
        match o.get(key) {
            None => Ok(None),
            Some(n) => match n.as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(0) => Ok(None),
                Some(n) => Ok(Some(n)),
                None => Err(format!("{key} is not a count: {n}")),
            },
        }
    };
    let max_payload_bytes = positive("maxPayloadSize")?;
    let max_inflight = positive("maxInflightMessages")?;
    let mut rates = Rates::default();
    if let Some(r) = o.get("rateLimits") {
        let r = r.as_object().ok_or("rateLimits is not an object")?;
        for (key, into) in [
            ("messages", &mut rates.messages),
            ("telemetryMessages", &mut rates.telemetry_messages),
            ("telemetryDataPoints", &mut rates.telemetry_points),
        ] {
            if let Some(text) = r.get(key) {
                let text = text
                    .as_str()
                    .ok_or(format!("rateLimits.{key} is not text"))?;
                *into = parse_rates(text)
                    .ok_or(format!("rateLimits.{key} is not count:seconds,...: {text}"))?;
            }
        }
    } else if max_payload_bytes.is_none() && max_inflight.is_none() {
        return Err("none of maxPayloadSize, maxInflightMessages, rateLimits".into());
    }
    Ok(SessionLimits {
        max_payload_bytes,
        max_inflight,
        rates,
    })
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
        assert_eq!(
            tb.subscriptions(true),
            [
                "v1/devices/me/rpc/request/+",
                "v1/devices/me/rpc/response/+"
            ]
        );
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

    /// The example answer of <https://thingsboard.io/docs/reference/mqtt-api/>, "Get
    /// session limits RPC", as printed there.
    const DOCUMENTED_ANSWER: &str = r#"{
  "maxPayloadSize": 65536,
  "maxInflightMessages": 100,
  "rateLimits": {
    "messages": "200:1,6000:60,14000:3600",
    "telemetryMessages": "100:1,3000:60,7000:3600",
    "telemetryDataPoints": "200:1,6000:60,14000:3600"
  }
}"#;

    #[test]
    fn the_agent_asks_for_its_session_limits_and_reads_the_documented_answer() {
        use crate::uplink::pace::Rate;
        use std::time::Duration;
        let tb = ThingsBoard::new("d", "d", Password::new("t"));
        let ask = tb.limits_request().unwrap();
        assert_eq!(ask.topic, "v1/devices/me/rpc/request/1");
        assert_eq!(
            serde_json::from_slice::<Value>(&ask.payload).unwrap(),
            serde_json::json!({"method": "getSessionLimits", "params": {}})
        );
        assert_eq!(
            tb.subscriptions(false),
            ["v1/devices/me/rpc/response/+"],
            "the answer's topic, commands or not"
        );
        let r = |count, s| Rate {
            count,
            period: Duration::from_secs(s),
        };
        let limits = tb
            .limits("v1/devices/me/rpc/response/1", DOCUMENTED_ANSWER.as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(
            limits,
            SessionLimits {
                max_payload_bytes: Some(65536),
                max_inflight: Some(100),
                rates: Rates {
                    messages: vec![r(200, 1), r(6000, 60), r(14000, 3600)],
                    telemetry_messages: vec![r(100, 1), r(3000, 60), r(7000, 3600)],
                    telemetry_points: vec![r(200, 1), r(6000, 60), r(14000, 3600)],
                },
            }
        );
        assert_eq!(tb.limits("v1/devices/me/rpc/response/2", b"{}"), None);
        assert_eq!(tb.limits("v1/devices/me/attributes", b"{}"), None);
        for bad in [
            &b"{}"[..],
            b"not json",
            br#"{"maxPayloadSize":"big"}"#,
            br#"{"rateLimits":{"messages":"ten per second"}}"#,
            br#"{"error":"timeout"}"#,
        ] {
            assert!(
                tb.limits("v1/devices/me/rpc/response/1", bad)
                    .unwrap()
                    .is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Its own call, seen again through a plain broker, is not a command.
        assert!(tb
            .requests("v1/devices/me/rpc/request/1", &ask.payload, 1, 0)
            .is_empty());
        // A fix of every value is nine data points.
        assert_eq!(tb.points(&fix(0)), 9);
    }
}
