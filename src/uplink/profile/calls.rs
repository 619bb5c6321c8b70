//! A platform's command channel mapped onto the remote commands (`../shared/spec/INTERFACE.md`
//! "Remote commands"): a platform's call (ThingsBoard RPC, an Azure direct method, a
//! Cumulocity operation) becomes the spec's request JSON for the commands stage, under an id
//! of the profile's making, and the stage's answer goes back where the platform waits for it.
//! [`Routes`] remembers, per request id, where that is (bounded: the oldest are forgotten;
//! an answer that finds no route is dropped and said). Nothing here runs a command.
//!
//! A call whose parameters are a signed envelope (`{"body": ..., "sig": ...}`, for
//! `[commands] public_key_file`) goes to the stage as it came: its id is the body's, and the
//! platform's own id only routes the answer.

use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::sync::Mutex;

/// How long a platform's call stays valid as a request: the platforms time their calls out
/// themselves (ThingsBoard's RPC timeout, Azure's `responseTimeoutInSeconds`), so this only
/// bounds how long the id is remembered as answered.
pub const REQUEST_TTL_MS: i64 = 10 * 60 * 1000;

/// Most routes remembered: more than the commands stage's inbox and outbox together.
pub const MAX_ROUTES: usize = 64;

/// Where an answer goes back, per platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `v1/devices/me/rpc/response/{request}`.
    ThingsBoard { request: String },
    /// `$iothub/methods/res/{status}/?$rid={rid}`.
    Azure { rid: String },
    /// `503`/`502` for the operation's fragment (`c8y_Command`, `c8y_Restart`).
    Cumulocity { fragment: &'static str },
}

/// Request id -> route, the newest [`MAX_ROUTES`].
#[derive(Debug, Default)]
pub struct Routes(Mutex<VecDeque<(String, Route)>>);

impl Routes {
    pub fn remember(&self, id: String, route: Route) {
        let Ok(mut all) = self.0.lock() else { return };
        if all.len() >= MAX_ROUTES {
            all.pop_front();
        }
        all.push_back((id, route));
    }

    /// The route of `id` (kept: `config.set` may answer twice, the second time to say it
    /// rolled back).
    pub fn find(&self, id: &str) -> Option<Route> {
        let all = self.0.lock().ok()?;
        all.iter()
            .rev()
            .find(|(i, _)| i == id)
            .map(|(_, r)| r.clone())
    }
}

/// The spec's request for a platform's call of `cmd` with `params`, under `id`, valid
/// [`REQUEST_TTL_MS`] from `now_ms`; a signed envelope as it came. Returns the request's
/// bytes and the id its answer will carry (`None`: an envelope whose body names no id; the
/// stage answers it with none, and that answer cannot be routed).
pub fn request(id: &str, cmd: &str, params: Value, now_ms: i64) -> (Vec<u8>, Option<String>) {
    if let Some(envelope) = signed(&params) {
        let body_id = envelope
            .get("body")
            .and_then(Value::as_str)
            .and_then(|b| serde_json::from_str::<Value>(b).ok())
            .and_then(|b| b.get("id").and_then(Value::as_str).map(str::to_owned));
        return (
            Value::Object(envelope.clone()).to_string().into_bytes(),
            body_id,
        );
    }
    let args = match params {
        Value::Null => Value::Object(Map::new()),
        other => other,
    };
    let expires = crate::fix::format_time_ms(now_ms.saturating_add(REQUEST_TTL_MS));
    let text = json!({"id": id, "cmd": cmd, "args": args, "expires": expires}).to_string();
    (text.into_bytes(), Some(id.to_owned()))
}

/// `params` as a signed envelope: an object of exactly `body` and `sig`.
fn signed(params: &Value) -> Option<&Map<String, Value>> {
    let o = params.as_object()?;
    (o.len() == 2 && o.contains_key("body") && o.contains_key("sig")).then_some(o)
}

/// A backfill message as the commands stage makes it, read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Backfill {
    /// The request's id.
    pub request: String,
    /// The buffer's stream.
    pub stream: String,
    /// `(seq, fix)` in order.
    pub fixes: Vec<(u64, crate::fix::Fix)>,
}

/// The fixes of a backfill message as the commands stage makes it (the spec's JSON fixes
/// message with `"request": id`). A profile or format that shapes fixes its own way
/// re-encodes them.
pub fn read_backfill(message: &[u8]) -> Option<Backfill> {
    let v: Value = serde_json::from_slice(message).ok()?;
    let request = v.get("request")?.as_str()?.to_owned();
    let stream = v.get("stream")?.as_str()?.to_owned();
    let fixes = v
        .get("fixes")?
        .as_array()?
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            let (seq, fix) = crate::fix::fix_from_json(f).ok()?;
            Some((seq.unwrap_or(i as u64), fix))
        })
        .collect();
    Some(Backfill {
        request,
        stream,
        fixes,
    })
}

/// A backfill message of the commands stage (the spec's JSON fixes message with
/// `"request"`) as it is when it fits `max_message_bytes`, else as several such messages,
/// each with every field but its share of `"fixes"`, in order; a fix larger than that
/// alone goes alone. Empty: not such a message.
pub fn split_backfill(message: &[u8], max_message_bytes: usize) -> Vec<Vec<u8>> {
    if message.len() <= max_message_bytes {
        return vec![message.to_vec()];
    }
    let Ok(Value::Object(mut head)) = serde_json::from_slice::<Value>(message) else {
        return Vec::new();
    };
    let Some(Value::Array(fixes)) = head.remove("fixes") else {
        return Vec::new();
    };
    // Compact JSON: the head with `"fixes":[]`, plus each fix and a comma between.
    let message_of = |part: &[Value]| {
        let mut m = head.clone();
        m.insert("fixes".into(), Value::Array(part.to_vec()));
        serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
    };
    let base = message_of(&[]).len();
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = base;
    for (i, fix) in fixes.iter().enumerate() {
        let len = fix.to_string().len() + usize::from(i > start);
        if i > start && size + len > max_message_bytes {
            out.push(message_of(&fixes[start..i]));
            start = i;
            size = base + len - 1;
        } else {
            size += len;
        }
    }
    if start < fixes.len() {
        out.push(message_of(&fixes[start..]));
    }
    out
}

/// What an answer says: its id, whether it went well, and the answer as a JSON value.
pub fn read_answer(answer: &[u8]) -> Option<(String, bool, Value)> {
    let v: Value = serde_json::from_slice(answer).ok()?;
    let id = v.get("id")?.as_str()?.to_owned();
    let ok = v.get("ok").and_then(Value::as_bool).unwrap_or(false);
    Some((id, ok, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_becomes_a_request_under_the_profiles_id_expiring_after_the_ttl() {
        let (bytes, id) = request("tb-1-7", "ping", Value::Null, 0);
        assert_eq!(id.as_deref(), Some("tb-1-7"));
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            json!({"id": "tb-1-7", "cmd": "ping", "args": {}, "expires": "1970-01-01T00:10:00.000Z"})
        );
    }

    #[test]
    fn a_signed_envelope_goes_as_it_came_and_its_answer_carries_the_bodys_id() {
        let body =
            json!({"id": "r-9", "cmd": "ping", "expires": "2030-01-01T00:00:00Z"}).to_string();
        let params = json!({"body": body, "sig": "c2ln"});
        let (bytes, id) = request("tb-1-7", "ping", params.clone(), 0);
        assert_eq!(id.as_deref(), Some("r-9"));
        assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), params);
    }

    #[test]
    fn a_backfill_message_over_the_cap_is_split_keeping_every_field_and_every_fix_once() {
        let fixes: Vec<Value> = (0..50)
            .map(|i| json!({"seq": i, "t": "2020-03-18T13:28:20.000Z", "lat": 41.5}))
            .collect();
        let message =
            json!({"v": 1, "device": "d", "stream": "s", "fixes": fixes, "request": "r-1"})
                .to_string()
                .into_bytes();
        assert_eq!(
            split_backfill(&message, message.len()),
            vec![message.clone()]
        );
        let parts = split_backfill(&message, 500);
        assert!(parts.len() > 1);
        let mut seqs = Vec::new();
        for p in &parts {
            assert!(p.len() <= 500, "{}", p.len());
            let v: Value = serde_json::from_slice(p).unwrap();
            assert_eq!(
                (&v["request"], &v["stream"], &v["v"]),
                (&json!("r-1"), &json!("s"), &json!(1))
            );
            seqs.extend(
                v["fixes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["seq"].as_u64().unwrap()),
            );
        }
        assert_eq!(seqs, (0..50).collect::<Vec<u64>>());
        assert!(split_backfill(b"not json", 4).is_empty());
    }

    #[test]
    fn routes_keep_the_newest_and_answer_twice() {
        let routes = Routes::default();
        for i in 0..(MAX_ROUTES + 1) {
            routes.remember(format!("id-{i}"), Route::Azure { rid: i.to_string() });
        }
        assert_eq!(routes.find("id-0"), None);
        let last = format!("id-{MAX_ROUTES}");
        let route = Some(Route::Azure {
            rid: MAX_ROUTES.to_string(),
        });
        assert_eq!(routes.find(&last), route);
        assert_eq!(routes.find(&last), route);
    }
}
