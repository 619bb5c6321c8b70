//! The platforms' message shapes as their documentation gives them, one check each: what
//! the documented examples pass (`tests/platform_docs.rs`) and what the agent's messages
//! through the real binary must pass too (`tests/profile_conformance.rs`).

use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// One telemetry point: its time (Unix ms) and its values.
pub type Point = (i64, Map<String, Value>);

/// Telemetry with the device's own timestamps: an array of `{"ts": ms, "values": {...}}`,
/// nothing else; the points' times.
pub fn tb_telemetry(payload: &[u8]) -> Result<Vec<Point>, String> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    let points = v.as_array().ok_or("not an array of points")?;
    points
        .iter()
        .map(|p| {
            let o = p.as_object().ok_or("a point is not an object")?;
            let keys: BTreeSet<&str> = o.keys().map(String::as_str).collect();
            if keys != BTreeSet::from(["ts", "values"]) {
                return Err(format!("a point has keys {keys:?}"));
            }
            let ts = o["ts"].as_i64().ok_or("ts is not integer milliseconds")?;
            let values = o["values"].as_object().ok_or("values is not an object")?;
            if values.is_empty() {
                return Err("no values".into());
            }
            Ok((ts, values.clone()))
        })
        .collect()
}

/// A `401` line: the template's fields checked; the time when it has one.
pub fn c8y_401(line: &str) -> Result<Option<i64>, String> {
    let f: Vec<&str> = line.split(',').collect();
    if f[0] != "401" {
        return Err(format!("not 401: {line}"));
    }
    if f.len() < 3 || f.len() > 6 {
        return Err(format!("{} fields: {line}", f.len()));
    }
    let lat: f64 = f[1].parse().map_err(|_| format!("latitude: {line}"))?;
    let lon: f64 = f[2].parse().map_err(|_| format!("longitude: {line}"))?;
    if lat.abs() > 90.0 || lon.abs() > 180.0 {
        return Err(format!("out of range: {line}"));
    }
    for (i, name) in [(3, "altitude"), (4, "accuracy")] {
        if let Some(v) = f.get(i).filter(|v| !v.is_empty()) {
            v.parse::<f64>().map_err(|_| format!("{name}: {line}"))?;
        }
    }
    match f.get(5).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| Some(t.timestamp_millis()))
            .map_err(|_| format!("time: {line}")),
    }
}

/// A `400` line: type and text present.
pub fn c8y_400(line: &str) -> Result<(), String> {
    let f: Vec<&str> = line.splitn(3, ',').collect();
    match f.as_slice() {
        ["400", kind, text] if !kind.is_empty() && !text.is_empty() => Ok(()),
        _ => Err(format!("not a 400 with type and text: {line}")),
    }
}

/// An operation's answer: `501,{fragment}` then `503,{fragment}[,...]` or
/// `502,{fragment},{reason}`; the fragment and whether it succeeded.
pub fn c8y_answer(payload: &[u8]) -> Result<(String, bool), String> {
    let text = std::str::from_utf8(payload).map_err(|e| e.to_string())?;
    let lines: Vec<&str> = text.lines().collect();
    let [executing, done] = lines.as_slice() else {
        return Err(format!("not two lines: {text}"));
    };
    let fragment = executing
        .strip_prefix("501,")
        .filter(|f| !f.is_empty() && !f.contains(','))
        .ok_or(format!("not 501,fragment: {executing}"))?;
    if done.starts_with(&format!("503,{fragment}")) {
        return Ok((fragment.to_owned(), true));
    }
    match done.strip_prefix(&format!("502,{fragment},")) {
        Some(reason) if !reason.is_empty() => Ok((fragment.to_owned(), false)),
        _ => Err(format!("neither 503 nor 502 with a reason: {done}")),
    }
}

pub fn url_decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// A device-to-cloud topic: the device and its properties, decoded.
pub fn azure_events(topic: &str) -> Result<(String, Vec<(String, String)>), String> {
    let rest = topic.strip_prefix("devices/").ok_or("not devices/")?;
    let (device, bag) = rest
        .split_once("/messages/events/")
        .ok_or("no /messages/events/")?;
    let props = bag
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').ok_or(format!("not key=value: {p}"))?;
            Ok((url_decode(k), url_decode(v)))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((device.to_owned(), props))
}

/// `$iothub/{what}/.../?$rid={id}`: the part before `/?$rid=` and the id.
pub fn azure_rid<'a>(topic: &'a str, prefix: &str) -> Result<(&'a str, &'a str), String> {
    let rest = topic
        .strip_prefix(prefix)
        .ok_or(format!("not {prefix}: {topic}"))?;
    rest.split_once("/?$rid=")
        .filter(|(_, rid)| !rid.is_empty())
        .ok_or(format!("no $rid: {topic}"))
}
