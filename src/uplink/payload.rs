//! Topic names and message bodies of `../shared/spec/INTERFACE.md` ("MQTT").
//!
//! In: a batch of buffered fixes `(seq, Fix)`, oldest first, with the device id and the
//! buffer's stream id. Out: one or more JSON messages
//! `{"v":1,"device":"…","stream":"…","fixes":[…]}`, each at most `max_message_bytes` of
//! payload, each remembering the seqs it carries so a PUBACK can acknowledge exactly those.
//! A fix that cannot fit in any message on its own is returned apart as a dead letter: it
//! would be refused for ever and must not block the fixes behind it. This module never
//! reorders, drops or duplicates a fix silently.

use crate::fix::{Fix, Numbered};
use crate::uplink::error::UplinkError;

/// Payload format version, the `v` key.
pub const PAYLOAD_VERSION: u32 = 1;

/// The topics of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `{prefix}/{device}/fixes`: QoS 1, not retained.
    pub fixes: String,
    /// `{prefix}/{device}/status`: QoS 1, retained, also the last will.
    pub status: String,
    /// `{prefix}/{device}/cmd`: remote commands in (subscribed with `[commands] enabled`).
    pub cmd: String,
    /// `{prefix}/{device}/cmd/result`: their answers, QoS 1, not retained.
    pub result: String,
    /// `{prefix}/{device}/backfill`: fixes a `backfill` command republishes.
    pub backfill: String,
}

impl Topics {
    pub fn new(prefix: &str, device: &str) -> Self {
        Topics {
            fixes: format!("{prefix}/{device}/fixes"),
            status: format!("{prefix}/{device}/status"),
            cmd: format!("{prefix}/{device}/cmd"),
            result: format!("{prefix}/{device}/cmd/result"),
            backfill: format!("{prefix}/{device}/backfill"),
        }
    }
}

/// Fixes to publish, as the buffer hands them out: `(seq, fix)`, oldest first.
#[derive(Debug, Clone, Copy)]
pub struct FixBatch<'a> {
    pub device: &'a str,
    pub stream: &'a str,
    pub fixes: &'a [(u64, Fix)],
}

/// One encoded message and the seqs it carries (in order; not necessarily contiguous, the
/// buffer's eviction may have thinned the range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub seqs: Vec<u64>,
    pub payload: Vec<u8>,
}

/// The result of encoding a batch.
#[derive(Debug, Default)]
pub struct Encoded {
    /// Messages in seq order, each within the size limit.
    pub messages: Vec<Message>,
    /// Fixes no message can ever carry, with why: to be dead-lettered by the buffer.
    pub dead_letters: Vec<(u64, UplinkError)>,
}

/// Split `batch` into messages of at most `max_message_bytes` payload bytes, keeping order.
pub fn encode(batch: &FixBatch<'_>, max_message_bytes: usize) -> Encoded {
    let head = envelope_head(batch.device, batch.stream);
    pack(
        batch.fixes,
        max_message_bytes,
        &head,
        b",",
        b"]}",
        |out, seq, fix| {
            serde_json::to_writer(out, &Numbered { seq, fix })
                .map_err(|source| UplinkError::Encode { seq, source })
        },
    )
}

/// Fixes packed into messages `head element sep element ... tail` of at most `max` bytes,
/// in order. `element` writes one fix (it may fail: that fix is a dead letter); a fix whose
/// message alone would be over `max` is a dead letter too ([`UplinkError::TooLarge`]).
pub(crate) fn pack(
    fixes: &[(u64, Fix)],
    max: usize,
    head: &[u8],
    sep: &[u8],
    tail: &[u8],
    mut element: impl FnMut(&mut Vec<u8>, u64, &Fix) -> Result<(), UplinkError>,
) -> Encoded {
    let empty = head.len() + tail.len();
    let mut out = Encoded::default();
    let mut seqs: Vec<u64> = Vec::new();
    let mut body: Vec<u8> = Vec::new();
    let mut one: Vec<u8> = Vec::with_capacity(256);
    let finish = |seqs: Vec<u64>, body: &mut Vec<u8>| {
        let mut payload = Vec::with_capacity(empty + body.len());
        payload.extend_from_slice(head);
        payload.append(body);
        payload.extend_from_slice(tail);
        Message { seqs, payload }
    };
    for (seq, fix) in fixes {
        let seq = *seq;
        one.clear();
        if let Err(e) = element(&mut one, seq, fix) {
            out.dead_letters.push((seq, e));
            continue;
        }
        let alone = empty + one.len();
        if alone > max {
            out.dead_letters
                .push((seq, UplinkError::TooLarge { bytes: alone, max }));
            continue;
        }
        if !seqs.is_empty() && empty + body.len() + sep.len() + one.len() > max {
            out.messages
                .push(finish(std::mem::take(&mut seqs), &mut body));
        }
        if !seqs.is_empty() {
            body.extend_from_slice(sep);
        }
        body.extend_from_slice(&one);
        seqs.push(seq);
    }
    if !seqs.is_empty() {
        out.messages.push(finish(seqs, &mut body));
    }
    out
}

/// `{"v":1,"device":"…","stream":"…","fixes":[` with the strings JSON-escaped.
fn envelope_head(device: &str, stream: &str) -> Vec<u8> {
    let quoted = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        "{{\"v\":{PAYLOAD_VERSION},\"device\":{},\"stream\":{},\"fixes\":[",
        quoted(device),
        quoted(stream)
    )
    .into_bytes()
}

/// What the retained status message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Online,
    Offline,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Online => "online",
            LinkState::Offline => "offline",
        }
    }
}

/// `{"state":"online","device":"…","version":"…"}`: the retained status and the last will.
pub fn status_payload(state: LinkState, device: &str) -> Vec<u8> {
    serde_json::json!({
        "state": state.as_str(),
        "device": device,
        "version": env!("CARGO_PKG_VERSION"),
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::error::Classified;
    use crate::fix::FixMode;
    use serde_json::Value;

    /// A fix of the spec's example, `i` seconds on.
    pub(crate) fn fix(i: i64) -> Fix {
        Fix {
            time_ms: 1_584_538_100_000 + i * 1000,
            lat: 41.574970205,
            lon: -93.750558641,
            alt_m: Some(278.02),
            speed_mps: Some(1.673),
            course_deg: Some(92.308),
            hdop: Some(1.0),
            sats: Some(9),
            mode: FixMode::ThreeD,
            event: None,
        }
    }

    fn fixes(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, Fix)> {
        seqs.map(|s| (s, fix(s as i64))).collect()
    }

    fn batch<'a>(f: &'a [(u64, Fix)]) -> FixBatch<'a> {
        FixBatch {
            device: "truck-042",
            stream: "s-1",
            fixes: f,
        }
    }

    fn seqs_in(payload: &[u8]) -> Vec<u64> {
        let v: Value = serde_json::from_slice(payload).unwrap();
        v["fixes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["seq"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn topics_follow_prefix_device_kind() {
        let t = Topics::new("fleet", "truck-042");
        assert_eq!(t.fixes, "fleet/truck-042/fixes");
        assert_eq!(t.status, "fleet/truck-042/status");
        assert_eq!(t.cmd, "fleet/truck-042/cmd");
        assert_eq!(t.result, "fleet/truck-042/cmd/result");
        assert_eq!(t.backfill, "fleet/truck-042/backfill");
    }

    #[test]
    fn a_small_batch_is_one_message_in_the_spec_envelope() {
        let f = fixes(1..=3);
        let enc = encode(&batch(&f), 64 * 1024);
        assert!(enc.dead_letters.is_empty());
        assert_eq!(enc.messages.len(), 1);
        let m = &enc.messages[0];
        assert_eq!(m.seqs, vec![1, 2, 3]);
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["device"], "truck-042");
        assert_eq!(v["stream"], "s-1");
        assert_eq!(v["fixes"][0]["time"], "2020-03-18T13:28:21.000Z");
        assert_eq!(v["fixes"][2]["lat"], 41.574970205);
        assert_eq!(seqs_in(&m.payload), vec![1, 2, 3]);
    }

    #[test]
    fn a_batch_over_the_limit_splits_in_order_and_every_message_fits() {
        let f = fixes(1..=50);
        let one = encode(&batch(&f[..1]), usize::MAX).messages[0]
            .payload
            .len();
        let limit = one * 7; // room for a handful of fixes each
        let enc = encode(&batch(&f), limit);
        assert!(enc.dead_letters.is_empty());
        assert!(enc.messages.len() > 5, "{} messages", enc.messages.len());
        let mut all = Vec::new();
        for m in &enc.messages {
            assert!(m.payload.len() <= limit, "{} > {limit}", m.payload.len());
            assert_eq!(seqs_in(&m.payload), m.seqs);
            all.extend_from_slice(&m.seqs);
        }
        assert_eq!(all, (1..=50).collect::<Vec<_>>());
    }

    #[test]
    fn a_message_exactly_at_the_limit_is_not_split() {
        let f = fixes(1..=4);
        let whole = encode(&batch(&f), usize::MAX).messages[0].payload.len();
        assert_eq!(encode(&batch(&f), whole).messages.len(), 1);
        assert_eq!(encode(&batch(&f), whole - 1).messages.len(), 2);
    }

    #[test]
    fn a_fix_too_large_for_any_message_is_a_dead_letter_and_does_not_block_the_rest() {
        let mut f = fixes(1..=3);
        // A 2D fix without optional keys is much shorter than the full ones around it.
        f[1].1 = Fix::bare(f[1].1.time_ms, f[1].1.lat, f[1].1.lon);
        let short = encode(&batch(&f[1..2]), usize::MAX).messages[0]
            .payload
            .len();
        let enc = encode(&batch(&f), short);
        assert_eq!(enc.messages.len(), 1);
        assert_eq!(enc.messages[0].seqs, vec![2]);
        let dead: Vec<u64> = enc.dead_letters.iter().map(|(s, _)| *s).collect();
        assert_eq!(dead, vec![1, 3]);
        assert_eq!(enc.dead_letters[0].1.code(), "MQTT_TOO_LARGE");
    }

    #[test]
    fn an_empty_batch_makes_no_message() {
        let enc = encode(&batch(&[]), 1024);
        assert!(enc.messages.is_empty() && enc.dead_letters.is_empty());
    }

    #[test]
    fn device_and_stream_ids_are_json_escaped() {
        let f = fixes(1..=1);
        let b = FixBatch {
            device: "a\"b",
            stream: "x\\y",
            fixes: &f,
        };
        let v: Value = serde_json::from_slice(&encode(&b, 4096).messages[0].payload).unwrap();
        assert_eq!(v["device"], "a\"b");
        assert_eq!(v["stream"], "x\\y");
    }

    #[test]
    fn status_payload_says_online_or_offline() {
        let v: Value = serde_json::from_slice(&status_payload(LinkState::Offline, "t")).unwrap();
        assert_eq!(v["state"], "offline");
        assert_eq!(v["device"], "t");
        let v: Value = serde_json::from_slice(&status_payload(LinkState::Online, "t")).unwrap();
        assert_eq!(v["state"], "online");
    }

    #[test]
    fn pack_splits_at_the_limit_keeps_order_and_dead_letters_what_never_fits() {
        let fixes: Vec<(u64, Fix)> = (1..=5).map(|i| (i as u64, fix(i))).collect();
        let write = |out: &mut Vec<u8>, seq: u64, _: &Fix| {
            if seq == 3 {
                out.extend_from_slice(&[b'x'; 40]);
            } else {
                out.extend_from_slice(format!("f{seq}").as_bytes());
            }
            Ok(())
        };
        // "[" + "f1,f2" + "]" = 7 bytes; a third element would make 10.
        let e = pack(&fixes, 8, b"[", b",", b"]", write);
        let shown: Vec<(Vec<u64>, String)> = e
            .messages
            .iter()
            .map(|m| {
                (
                    m.seqs.clone(),
                    String::from_utf8(m.payload.clone()).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                (vec![1, 2], "[f1,f2]".to_string()),
                (vec![4, 5], "[f4,f5]".to_string()),
            ]
        );
        assert_eq!(e.dead_letters.len(), 1);
        assert_eq!(e.dead_letters[0].0, 3);
        assert!(matches!(
            e.dead_letters[0].1,
            UplinkError::TooLarge { bytes: 42, max: 8 }
        ));
    }
}
