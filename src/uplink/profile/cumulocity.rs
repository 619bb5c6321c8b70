//! Cumulocity's MQTT device contract (<https://cumulocity.com/docs/device-integration/mqtt/>)
//! with its SmartREST 2.0 static templates
//! (<https://cumulocity.com/docs/smartrest/mqtt-static-templates/>): client id `d:{device}`
//! (connection type `d`, the device id as its serial), user `{tenant}/{user}` with its
//! password, everything on `s/us`.
//!
//! Each fix is one `401` line, "create location update event"
//! (`401,latitude,longitude,altitude,accuracy,time`), with the fix's own receiver time, so a
//! backlog lands at the times it was driven; several lines a message, within the platform's
//! packet limit (16,184 bytes, below `max_message_bytes` when that is larger). The
//! accuracy field is left empty: HDOP is not a distance. The agent's state is a `400` event
//! (`400,gps_agent_status,online`), preceded at every connection by `100,{device},
//! c8y_GpsAgent`, which creates the device in the inventory the first time and does nothing
//! after. Cumulocity does not keep retained messages: the last will is the `offline` event.

use super::calls::{self, Route, Routes};
use super::{Identity, Profile, Publish};
use crate::config::profile::CUMULOCITY_MAX_MESSAGE_BYTES;
use crate::config::ProfileName;
use crate::fix::{format_time_ms, Fix};
use crate::uplink::credentials::Password;
use crate::uplink::payload::{pack, Encoded, FixBatch, LinkState};
use serde_json::Value;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Where a device sends SmartREST static templates.
pub const UPSTREAM: &str = "s/us";
/// The device type the `100` line gives a device it creates.
pub const DEVICE_TYPE: &str = "c8y_GpsAgent";
/// The type of the agent's state events.
pub const STATUS_EVENT: &str = "gps_agent_status";
/// Where operations arrive (SmartREST static templates, downstream).
pub const DOWNSTREAM: &str = "s/ds";
/// The operations the agent takes: `511` (a command's text) and `510` (restart, which
/// restarts the uplink: a `reconnect`).
pub const COMMAND: &str = "c8y_Command";
pub const RESTART: &str = "c8y_Restart";

#[derive(Debug)]
pub struct Cumulocity {
    device: String,
    credentials: Option<(String, Password)>,
    routes: Routes,
    /// Numbers the operations (they carry no id of their own).
    calls: AtomicU64,
}

impl Cumulocity {
    pub fn new(device: &str, credentials: Option<(String, Password)>) -> Self {
        Cumulocity {
            device: device.to_owned(),
            credentials,
            routes: Routes::default(),
            calls: AtomicU64::new(0),
        }
    }

    /// One operation line of `s/ds` addressed to this device, as a request.
    fn operation(&self, line: &str, connection: u64, now_ms: i64) -> Option<Vec<u8>> {
        let mut fields = line.splitn(3, ',');
        let template = fields.next()?;
        let serial = fields.next()?.trim_matches('"');
        if serial != self.device {
            return None;
        }
        let (fragment, cmd, params) = match template {
            "510" => (RESTART, "reconnect".to_owned(), Value::Null),
            "511" => {
                let text = unquote(fields.next()?);
                let text = text.trim();
                if text.starts_with('{') {
                    // A signed envelope, as the command's whole text.
                    let envelope: Value = serde_json::from_str(text).ok()?;
                    (COMMAND, String::new(), envelope)
                } else {
                    let (cmd, args) = text.split_once(' ').unwrap_or((text, ""));
                    let args = if args.trim().is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_str(args).unwrap_or(Value::String(args.to_owned()))
                    };
                    (COMMAND, cmd.to_owned(), args)
                }
            }
            _ => return None,
        };
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let (request, id) = calls::request(&format!("c8y-{connection}-{n}"), &cmd, params, now_ms);
        if let Some(id) = id {
            self.routes.remember(id, Route::Cumulocity { fragment });
        }
        Some(request)
    }
}

/// A SmartREST field as written: quotes removed, doubled quotes made single.
fn unquote(text: &str) -> String {
    let t = text.trim();
    match t.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => t.to_owned(),
    }
}

/// `401,lat,lon,alt,,time` for `fix`.
fn location_line(out: &mut Vec<u8>, fix: &Fix) -> std::io::Result<()> {
    write!(out, "401,{},{},", fix.lat, fix.lon)?;
    if let Some(alt) = fix.alt_m {
        write!(out, "{alt}")?;
    }
    write!(out, ",,{}", format_time_ms(fix.time_ms))
}

/// A field of a SmartREST line: quoted when it holds a comma, a quote or a line break.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

impl Profile for Cumulocity {
    fn name(&self) -> ProfileName {
        ProfileName::Cumulocity
    }

    fn identity(&self, _now: SystemTime) -> Identity {
        Identity {
            client_id: format!("d:{}", self.device),
            credentials: self.credentials.clone(),
            renew_at: None,
        }
    }

    fn fixes_topic(&self) -> &str {
        UPSTREAM
    }

    fn encode(&self, batch: &FixBatch<'_>, max_message_bytes: usize) -> Encoded {
        let max = max_message_bytes.min(CUMULOCITY_MAX_MESSAGE_BYTES as usize);
        pack(batch.fixes, max, b"", b"\n", b"", |out, _, fix| {
            // Writing to a Vec cannot fail.
            let _ = location_line(out, fix);
            Ok(())
        })
    }

    fn status(&self, state: LinkState) -> Publish {
        let event = format!("400,{STATUS_EVENT},{}", state.as_str());
        let payload = match state {
            LinkState::Online => {
                format!("100,{},{DEVICE_TYPE}\n{event}", field(&self.device))
            }
            LinkState::Offline => event,
        };
        Publish {
            topic: UPSTREAM.to_owned(),
            payload: payload.into_bytes(),
            retain: false,
            points: 0,
        }
    }

    fn subscriptions(&self, commands: bool) -> Vec<String> {
        if commands {
            vec![DOWNSTREAM.to_owned()]
        } else {
            Vec::new()
        }
    }

    /// With commands on, the operations the device supports (`114`), so the platform's UI
    /// offers them.
    fn on_connect(&self, commands: bool) -> Vec<Publish> {
        if !commands {
            return Vec::new();
        }
        vec![Publish {
            topic: UPSTREAM.to_owned(),
            payload: format!("114,{COMMAND},{RESTART}").into_bytes(),
            retain: false,
            points: 0,
        }]
    }

    /// Each operation line on `s/ds` for this device: `510,{serial}` (restart: `reconnect`)
    /// or `511,{serial},{text}` (text: `cmd` or `cmd {json args}`, or a signed envelope).
    fn requests(&self, topic: &str, payload: &[u8], connection: u64, now_ms: i64) -> Vec<Vec<u8>> {
        if topic != DOWNSTREAM {
            return Vec::new();
        }
        let Ok(text) = std::str::from_utf8(payload) else {
            return Vec::new();
        };
        text.lines()
            .take(crate::uplink::profile::calls::MAX_ROUTES)
            .filter_map(|line| self.operation(line, connection, now_ms))
            .collect()
    }

    /// `501,{fragment}` (executing) then `503,{fragment},{result}` when it went well or
    /// `502,{fragment},{reason}` otherwise, in one message: the operation stays pending on
    /// the platform until the agent has the answer.
    fn answer(&self, answer: &[u8]) -> Option<Publish> {
        let (id, ok, v) = calls::read_answer(answer)?;
        let Route::Cumulocity { fragment } = self.routes.find(&id)? else {
            return None;
        };
        let line = if ok {
            let result = v.get("result").map(Value::to_string).unwrap_or_default();
            format!("501,{fragment}\n503,{fragment},{}", field(&result))
        } else {
            let reason = v
                .pointer("/error/message")
                .and_then(Value::as_str)
                .or_else(|| v.pointer("/error/code").and_then(Value::as_str))
                .unwrap_or("failed");
            format!("501,{fragment}\n502,{fragment},{}", field(reason))
        };
        Some(Publish {
            topic: UPSTREAM.to_owned(),
            payload: line.into_bytes(),
            retain: false,
            points: 0,
        })
    }

    /// History as `401` lines with each fix's own time, like live fixes, within the
    /// packet limit as they are.
    fn backfill(&self, message: &[u8], max_message_bytes: usize) -> Vec<Publish> {
        super::backfill_as_fixes(self, &self.device, message, max_message_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uplink::payload::tests::fix;

    #[test]
    fn each_fix_is_a_401_line_at_its_own_time_several_a_message() {
        let c = Cumulocity::new("truck-042", None);
        let mut second = fix(1);
        second.alt_m = None;
        let fixes = vec![(1, fix(0)), (2, second)];
        let batch = FixBatch {
            device: "truck-042",
            stream: "s",
            fixes: &fixes,
        };
        let e = c.encode(&batch, 16_184);
        assert_eq!(e.messages.len(), 1);
        assert_eq!(e.messages[0].seqs, vec![1, 2]);
        assert_eq!(
            String::from_utf8(e.messages[0].payload.clone()).unwrap(),
            "401,41.574970205,-93.750558641,278.02,,2020-03-18T13:28:20.000Z\n\
             401,41.574970205,-93.750558641,,,2020-03-18T13:28:21.000Z"
        );
        // One line is 64 bytes: a limit of 100 takes one a message.
        let split = c.encode(&batch, 100);
        assert_eq!(split.messages.len(), 2);
        // The platform's limit holds whatever the configuration says.
        let many: Vec<(u64, Fix)> = (0..1000).map(|i| (i as u64 + 1, fix(i))).collect();
        let big = c.encode(
            &FixBatch {
                fixes: &many,
                ..batch
            },
            1 << 20,
        );
        assert!(big.messages.len() > 1);
        assert!(big.messages.iter().all(|m| m.payload.len() <= 16_184));
        assert_eq!(c.identity(SystemTime::UNIX_EPOCH).client_id, "d:truck-042");
        let online = c.status(LinkState::Online);
        assert_eq!(
            online.payload,
            b"100,truck-042,c8y_GpsAgent\n400,gps_agent_status,online"
        );
        assert_eq!(c.will().payload, b"400,gps_agent_status,offline");
        assert!(!online.retain);
        assert_eq!(field("a,b"), "\"a,b\"");
    }

    #[test]
    fn operations_are_requests_marked_executing_and_answered_503_or_502() {
        let c = Cumulocity::new("truck-042", None);
        assert_eq!(c.subscriptions(true), ["s/ds"]);
        assert_eq!(
            c.on_connect(true)[0].payload,
            b"114,c8y_Command,c8y_Restart"
        );
        let got = c.requests(
            "s/ds",
            b"511,truck-042,\"backfill {\"\"from\"\":\"\"2026-01-01T00:00:00Z\"\"}\"\n510,truck-042\n511,other,ping",
            1,
            0,
        );
        assert_eq!(got.len(), 2, "the third is another device's");
        let first: Value = serde_json::from_slice(&got[0]).unwrap();
        assert_eq!(first["cmd"], "backfill");
        assert_eq!(first["args"]["from"], "2026-01-01T00:00:00Z");
        let second: Value = serde_json::from_slice(&got[1]).unwrap();
        assert_eq!(second["cmd"], "reconnect");
        let id = first["id"].as_str().unwrap();
        let done = c
            .answer(format!(r#"{{"id":"{id}","ok":true,"result":{{"fixes":3}}}}"#).as_bytes())
            .unwrap();
        assert_eq!(
            done.payload,
            b"501,c8y_Command\n503,c8y_Command,\"{\"\"fixes\"\":3}\""
        );
        let id = second["id"].as_str().unwrap();
        let failed = c
            .answer(
                format!(r#"{{"id":"{id}","ok":false,"error":{{"code":"CMD_FAILED","message":"no link"}}}}"#)
                    .as_bytes(),
            )
            .unwrap();
        assert_eq!(failed.payload, b"501,c8y_Restart\n502,c8y_Restart,no link");
    }
}
