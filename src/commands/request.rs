//! A request as the back end sends it, read and checked before anything runs: its size, its
//! signature (with `[commands] public_key_file`), its shape, its id, its expiry and its
//! command's arguments. Pure: bytes and `now` in, a [`Request`] or a [`Refused`] out; the
//! refusal carries the id when one could be read, so the answer can name it.
//!
//! ```text
//! {"id": "r-1", "cmd": "config.set", "args": {...}, "expires": "2026-12-07T10:00:00Z"}
//! {"body": "<that JSON as a string>", "sig": "<base64 Ed25519 signature of body's bytes>"}
//! ```
//!
//! Keys other than these four are ignored (a back end may add its own); the arguments of
//! each command are checked strictly, so a misspelt argument is an error, not a default.

use super::error::CommandError;
use super::signature::PublicKey;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Largest request read; a larger one is refused (`CMD_TOO_LARGE`).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Longest id: it is echoed in every answer and remembered until its expiry.
pub const MAX_ID_BYTES: usize = 128;
/// Latest expiry accepted, from now: an answered id is remembered until its request
/// expires, so a request must not ask to be remembered for ever.
pub const MAX_HORIZON_MS: i64 = 24 * 3_600_000;

/// What a request asks for, with its arguments checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Cmd {
    Ping,
    Status,
    ConfigGet,
    ConfigSet {
        toml: String,
        /// Only if the file in force has this SHA-256 (hex).
        if_sha256: Option<String>,
    },
    Backfill {
        from_ms: i64,
        to_ms: i64,
        max_fixes: Option<u64>,
    },
    Reconnect,
}

impl Cmd {
    /// The command's name as requests spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Cmd::Ping => "ping",
            Cmd::Status => "status",
            Cmd::ConfigGet => "config.get",
            Cmd::ConfigSet { .. } => "config.set",
            Cmd::Backfill { .. } => "backfill",
            Cmd::Reconnect => "reconnect",
        }
    }
}

/// A request that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: String,
    pub cmd: Cmd,
    /// Receiver-checked UTC, ms: the request is not run after it, and its answer is
    /// remembered until it.
    pub expires_ms: i64,
}

/// A request that is not run, and why; `id` when it could be read (the answer names it).
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub id: Option<String>,
    pub error: CommandError,
}

/// `{"body", "sig"}`: a signed request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    body: String,
    sig: String,
}

/// Read and check `raw` at `now_ms` (receiver-checked UTC). With `key`, only a request
/// signed with its private key passes.
pub fn read(raw: &[u8], now_ms: i64, key: Option<&PublicKey>) -> Result<Request, Refused> {
    if raw.len() > MAX_REQUEST_BYTES {
        return Err(Refused {
            id: id_in(raw),
            error: CommandError::TooLarge {
                bytes: raw.len(),
                max: MAX_REQUEST_BYTES,
            },
        });
    }
    let envelope = serde_json::from_slice::<Envelope>(raw).ok();
    let body: &[u8] = match (key, &envelope) {
        (Some(key), Some(signed)) => {
            let unauthorized = |why| Refused {
                id: id_in(signed.body.as_bytes()),
                error: CommandError::Unauthorized(why),
            };
            let sig = crate::base64::decode(signed.sig.as_bytes())
                .filter(|s| s.len() == 64)
                .ok_or_else(|| unauthorized("sig is not 64 bytes of base64"))?;
            if !key.verifies(signed.body.as_bytes(), &sig) {
                return Err(unauthorized(
                    "the signature does not match the body and the configured key",
                ));
            }
            signed.body.as_bytes()
        }
        (Some(_), None) => {
            return Err(Refused {
                id: id_in(raw),
                error: CommandError::Unauthorized(
                    "requests must be signed: {\"body\": \"<request>\", \"sig\": \"<base64>\"}",
                ),
            })
        }
        // Without a key a signed request is taken as its body: unsigned ones run too.
        (None, Some(signed)) => signed.body.as_bytes(),
        (None, None) => raw,
    };
    check(body, now_ms)
}

/// The request in `body` (verified, or unsigned without a key), checked at `now_ms`.
fn check(body: &[u8], now_ms: i64) -> Result<Request, Refused> {
    let malformed = |id: Option<&str>, why: String| Refused {
        id: id.map(str::to_owned),
        error: CommandError::Malformed(why),
    };
    let value: Value =
        serde_json::from_slice(body).map_err(|e| malformed(None, format!("not JSON ({e})")))?;
    let Value::Object(mut obj) = value else {
        return Err(malformed(None, "not a JSON object".into()));
    };
    let id = match obj.get("id") {
        Some(Value::String(id)) => valid_id(id).map_err(|why| malformed(None, why))?,
        Some(_) => return Err(malformed(None, "id must be a string".into())),
        None => return Err(malformed(None, "no id".into())),
    };
    let refuse = |error| Refused {
        id: Some(id.clone()),
        error,
    };
    let expires_ms = match obj.get("expires") {
        Some(Value::String(t)) => time_ms(t).ok_or_else(|| {
            refuse(CommandError::Malformed(format!(
                "expires {t:?} is not an RFC 3339 time"
            )))
        })?,
        Some(_) => return Err(malformed(Some(&id), "expires must be a string".into())),
        None => return Err(malformed(Some(&id), "no expires".into())),
    };
    if expires_ms <= now_ms {
        let expires = obj
            .get("expires")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        return Err(refuse(CommandError::Expired { expires }));
    }
    if expires_ms > now_ms.saturating_add(MAX_HORIZON_MS) {
        return Err(refuse(CommandError::Malformed(
            "expires is more than 24 h ahead (an answered id is remembered until it expires)"
                .into(),
        )));
    }
    let name = match obj.remove("cmd") {
        Some(Value::String(name)) => name,
        Some(_) => return Err(malformed(Some(&id), "cmd must be a string".into())),
        None => return Err(malformed(Some(&id), "no cmd".into())),
    };
    let args = match obj.remove("args") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(args)) => args,
        Some(_) => return Err(malformed(Some(&id), "args must be an object".into())),
    };
    let cmd = command(&name, args).map_err(refuse)?;
    Ok(Request {
        id,
        cmd,
        expires_ms,
    })
}

fn valid_id(id: &str) -> Result<String, String> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(format!("id must be 1 to {MAX_ID_BYTES} bytes"));
    }
    if id.chars().any(char::is_control) {
        return Err("id must not contain control characters".into());
    }
    Ok(id.to_owned())
}

/// RFC 3339 time as UTC ms.
fn time_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigSetArgs {
    toml: String,
    if_sha256: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackfillArgs {
    from: String,
    to: String,
    max_fixes: Option<u64>,
}

/// The command `name` with its `args`, checked.
fn command(name: &str, args: Map<String, Value>) -> Result<Cmd, CommandError> {
    let none = |cmd: Cmd, args: &Map<String, Value>| {
        if args.is_empty() {
            Ok(cmd)
        } else {
            Err(CommandError::InvalidArgs(format!(
                "{} takes no arguments",
                cmd.name()
            )))
        }
    };
    let invalid = |e: serde_json::Error| CommandError::InvalidArgs(e.to_string());
    match name {
        "ping" => none(Cmd::Ping, &args),
        "status" => none(Cmd::Status, &args),
        "config.get" => none(Cmd::ConfigGet, &args),
        "reconnect" => none(Cmd::Reconnect, &args),
        "config.set" => {
            let a: ConfigSetArgs = serde_json::from_value(Value::Object(args)).map_err(invalid)?;
            if let Some(sha) = &a.if_sha256 {
                if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(CommandError::InvalidArgs(
                        "if_sha256 must be 64 hex digits".into(),
                    ));
                }
            }
            Ok(Cmd::ConfigSet {
                toml: a.toml,
                if_sha256: a.if_sha256.map(|s| s.to_ascii_lowercase()),
            })
        }
        "backfill" => {
            let a: BackfillArgs = serde_json::from_value(Value::Object(args)).map_err(invalid)?;
            let at = |key: &str, text: &str| {
                time_ms(text).ok_or_else(|| {
                    CommandError::InvalidArgs(format!("{key} {text:?} is not an RFC 3339 time"))
                })
            };
            let (from_ms, to_ms) = (at("from", &a.from)?, at("to", &a.to)?);
            if from_ms > to_ms {
                return Err(CommandError::InvalidArgs("from is after to".into()));
            }
            if a.max_fixes == Some(0) {
                return Err(CommandError::InvalidArgs(
                    "max_fixes must be at least 1".into(),
                ));
            }
            Ok(Cmd::Backfill {
                from_ms,
                to_ms,
                max_fixes: a.max_fixes,
            })
        }
        other => {
            let shown: String = other.chars().take(64).collect();
            Err(CommandError::Unknown(shown))
        }
    }
}

/// The id of a request that is refused before it could be read whole (too large, not
/// signed, badly signed), when it has one: at the top, or in a signed request's body.
fn id_in(raw: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Peek {
        id: Option<Value>,
        body: Option<String>,
    }
    let peek: Peek = serde_json::from_slice(raw).ok()?;
    match (peek.id, peek.body) {
        (Some(Value::String(id)), _) => valid_id(&id).ok(),
        // The body is shorter than `raw`: the recursion ends.
        (None, Some(body)) => id_in(body.as_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Classified;

    /// 2026-01-01T00:00:00Z.
    const NOW: i64 = 1_767_225_600_000;

    fn req(json: &str) -> Result<Request, Refused> {
        read(json.as_bytes(), NOW, None)
    }

    fn code(r: Result<Request, Refused>) -> (Option<String>, &'static str) {
        let refused = r.unwrap_err();
        (refused.id, refused.error.code())
    }

    #[test]
    fn each_command_reads_with_its_arguments() {
        let r = req(r#"{"id":"r-1","cmd":"ping","expires":"2026-01-01T00:05:00Z"}"#).unwrap();
        assert_eq!(
            r,
            Request {
                id: "r-1".into(),
                cmd: Cmd::Ping,
                expires_ms: NOW + 300_000
            }
        );
        let r = req(
            r#"{"id":"b","cmd":"backfill","expires":"2026-01-01T01:00:00+01:00",
            "args":{"from":"2025-12-31T10:00:00Z","to":"2025-12-31T10:30:00.5Z","max_fixes":9}}"#,
        )
        .unwrap_err();
        assert_eq!(
            r.error.code(),
            "CMD_EXPIRED",
            "01:00+01:00 is midnight UTC: now"
        );
        let r = req(
            r#"{"id":"b","cmd":"backfill","expires":"2026-01-01T01:00:00Z",
            "args":{"from":"2025-12-31T10:00:00Z","to":"2025-12-31T10:30:00.5Z","max_fixes":9}}"#,
        )
        .unwrap();
        assert_eq!(
            r.cmd,
            Cmd::Backfill {
                from_ms: NOW - 14 * 3_600_000,
                to_ms: NOW - 13 * 3_600_000 - 1_799_500,
                max_fixes: Some(9)
            }
        );
        let sha = "AB".repeat(32);
        let r = req(&format!(
            r#"{{"id":"c","cmd":"config.set","expires":"2026-01-01T01:00:00Z",
               "args":{{"toml":"[device]\n","if_sha256":"{sha}"}},"sent_by":"ops"}}"#
        ))
        .unwrap();
        assert_eq!(
            r.cmd,
            Cmd::ConfigSet {
                toml: "[device]\n".into(),
                if_sha256: Some("ab".repeat(32))
            }
        );
    }

    #[test]
    fn what_is_not_a_request_is_malformed_with_the_id_when_it_can_be_read() {
        let exp = r#""expires":"2026-01-01T01:00:00Z""#;
        for (json, id) in [
            ("not json".to_string(), None),
            ("[1,2]".into(), None),
            (format!(r#"{{"cmd":"ping",{exp}}}"#), None),
            (format!(r#"{{"id":7,"cmd":"ping",{exp}}}"#), None),
            (format!(r#"{{"id":"","cmd":"ping",{exp}}}"#), None),
            (
                format!(r#"{{"id":"{}","cmd":"ping",{exp}}}"#, "x".repeat(129)),
                None,
            ),
            (format!(r#"{{"id":"a\nb","cmd":"ping",{exp}}}"#), None),
            (r#"{"id":"r","cmd":"ping"}"#.into(), Some("r")),
            (
                r#"{"id":"r","cmd":"ping","expires":"tomorrow"}"#.into(),
                Some("r"),
            ),
            (
                r#"{"id":"r","cmd":"ping","expires":1767229200}"#.into(),
                Some("r"),
            ),
            (format!(r#"{{"id":"r",{exp}}}"#), Some("r")),
            (format!(r#"{{"id":"r","cmd":["ping"],{exp}}}"#), Some("r")),
            (
                format!(r#"{{"id":"r","cmd":"ping","args":[],{exp}}}"#),
                Some("r"),
            ),
            (
                r#"{"id":"r","cmd":"ping","expires":"2026-01-02T00:00:01Z"}"#.into(),
                Some("r"),
            ),
        ] {
            assert_eq!(
                code(req(&json)),
                (id.map(str::to_owned), "CMD_MALFORMED"),
                "{json}"
            );
        }
    }

    #[test]
    fn expired_unknown_and_bad_arguments_have_their_codes() {
        let exp = r#""expires":"2026-01-01T01:00:00Z""#;
        let r = Some("r".to_string());
        for (json, want) in [
            (
                r#"{"id":"r","cmd":"ping","expires":"2025-12-31T23:59:59Z"}"#.to_string(),
                "CMD_EXPIRED",
            ),
            (
                r#"{"id":"r","cmd":"nope","expires":"2025-12-31T23:59:59Z"}"#.into(),
                "CMD_EXPIRED",
            ),
            (
                format!(r#"{{"id":"r","cmd":"reboot",{exp}}}"#),
                "CMD_UNKNOWN",
            ),
            (
                format!(r#"{{"id":"r","cmd":"ping","args":{{"x":1}},{exp}}}"#),
                "CMD_INVALID_ARGS",
            ),
            (
                format!(r#"{{"id":"r","cmd":"config.set",{exp}}}"#),
                "CMD_INVALID_ARGS",
            ),
            (
                format!(
                    r#"{{"id":"r","cmd":"config.set","args":{{"toml":"","if_sha256":"x"}},{exp}}}"#
                ),
                "CMD_INVALID_ARGS",
            ),
            (
                format!(
                    r#"{{"id":"r","cmd":"backfill","args":{{"form":"2025-01-01T00:00:00Z","to":"2025-01-01T00:00:00Z"}},{exp}}}"#
                ),
                "CMD_INVALID_ARGS",
            ),
            (
                format!(
                    r#"{{"id":"r","cmd":"backfill","args":{{"from":"2025-01-02T00:00:00Z","to":"2025-01-01T00:00:00Z"}},{exp}}}"#
                ),
                "CMD_INVALID_ARGS",
            ),
            (
                format!(
                    r#"{{"id":"r","cmd":"backfill","args":{{"from":"2025-01-01T00:00:00Z","to":"2025-01-01T00:00:00Z","max_fixes":0}},{exp}}}"#
                ),
                "CMD_INVALID_ARGS",
            ),
        ] {
            assert_eq!(code(req(&json)), (r.clone(), want), "{json}");
        }
    }

    #[test]
    fn a_request_over_64_kib_is_too_large_and_still_named() {
        let pad = "x".repeat(MAX_REQUEST_BYTES);
        let json = format!(r#"{{"id":"big","cmd":"ping","pad":"{pad}"}}"#);
        assert_eq!(code(req(&json)), (Some("big".into()), "CMD_TOO_LARGE"));
        let over = "x".repeat(MAX_REQUEST_BYTES + 1);
        assert_eq!(code(req(&over)), (None, "CMD_TOO_LARGE"));
        assert_eq!(
            code(req(&pad)),
            (None, "CMD_MALFORMED"),
            "64 KiB exactly is read"
        );
    }

    #[test]
    fn with_a_key_only_a_valid_signature_over_the_exact_body_runs() {
        use ring::signature::{Ed25519KeyPair, KeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pair = |_| {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
            Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
        };
        let (ours, theirs) = (pair(0), pair(1));
        let key =
            PublicKey::parse(crate::base64::hex(ours.public_key().as_ref()).as_bytes()).unwrap();
        let body = r#"{"id":"s-1","cmd":"ping","expires":"2026-01-01T01:00:00Z"}"#;
        let b64 = crate::base64::encode;
        let signed = |by: &Ed25519KeyPair, body: &str| {
            serde_json::json!({"body": body, "sig": b64(by.sign(body.as_bytes()).as_ref())})
                .to_string()
        };
        let run = |json: String| read(json.as_bytes(), NOW, Some(&key));
        assert_eq!(run(signed(&ours, body)).unwrap().id, "s-1");
        assert_eq!(
            code(run(signed(&theirs, body))),
            (Some("s-1".into()), "CMD_UNAUTHORIZED")
        );
        assert_eq!(
            code(run(body.to_string())),
            (Some("s-1".into()), "CMD_UNAUTHORIZED")
        );
        let mut changed = serde_json::from_str::<Value>(&signed(&ours, body)).unwrap();
        changed["body"] = Value::from(body.replace("ping", "status"));
        assert_eq!(
            code(run(changed.to_string())),
            (Some("s-1".into()), "CMD_UNAUTHORIZED")
        );
        let mut short = serde_json::from_str::<Value>(&signed(&ours, body)).unwrap();
        short["sig"] = Value::from("AAAA");
        assert_eq!(
            code(run(short.to_string())),
            (Some("s-1".into()), "CMD_UNAUTHORIZED")
        );
        // A signature does not make an expired request young again.
        let late = read(signed(&ours, body).as_bytes(), NOW + 3_600_000, Some(&key));
        assert_eq!(code(late), (Some("s-1".into()), "CMD_EXPIRED"));
        // Without a key, a signed request is its body.
        assert_eq!(
            read(signed(&theirs, body).as_bytes(), NOW, None)
                .unwrap()
                .cmd,
            Cmd::Ping
        );
    }
}
