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

use super::{Identity, Profile, Publish};
use crate::config::ProfileName;
use crate::fix::Fix;
use crate::uplink::credentials::Password;
use crate::uplink::error::UplinkError;
use crate::uplink::payload::{pack, status_payload, Encoded, FixBatch, LinkState};
use serde::Serialize;
use std::time::SystemTime;

pub const TELEMETRY: &str = "v1/devices/me/telemetry";
pub const ATTRIBUTES: &str = "v1/devices/me/attributes";

#[derive(Debug)]
pub struct ThingsBoard {
    device: String,
    client_id: String,
    token: Password,
}

impl ThingsBoard {
    pub fn new(device: &str, client_id: &str, token: Password) -> Self {
        ThingsBoard {
            device: device.to_owned(),
            client_id: client_id.to_owned(),
            token,
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
}
