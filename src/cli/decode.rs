//! `gps-agent decode [FILE|-]`: captured fixes messages in, the fixes they carry out as JSON
//! Lines (the fix form of the spec, `seq` being the buffer's), so an operator can read what
//! was sent, in either encoding: the compact CBOR (`v` 2) or JSON (`v` 1).
//!
//! The input holds one or more messages as a subscriber saved them (`mosquitto_sub -N` or
//! with a newline after each): a message starting with `{` is JSON, one starting with a CBOR
//! map head (0xA0-0xBF) is v2, whitespace between messages is skipped. A summary line goes
//! to stderr. Exit 65 (`EX_DATAERR`) at the first message that cannot be read, after the
//! fixes of the messages before it.
//!
//! Memory is the input and a fix at a time, whatever a message claims: both encodings are
//! read as streams (CBOR by [`cbor::read_prefix`], JSON through serde visitors that keep only
//! a fix's keys), never built as trees, and nothing is reserved from a claimed length.

use crate::fix::{fix_from_json, Fix, Numbered};
use crate::uplink::cbor;
use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;

/// Exit code for input that is not what it should be (sysexits `EX_DATAERR`).
pub const EXIT_DATAERR: i32 = 65;

/// The largest input read: a message is at most 16 MiB (`mqtt.max_message_bytes`).
const MAX_INPUT_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// Captured message(s), or `-` (the default) for standard input.
    #[arg(default_value = "-")]
    pub input: PathBuf,
}

pub fn run(args: &DecodeArgs) -> i32 {
    let mut bytes = Vec::new();
    let read = if args.input.as_os_str() == "-" {
        io::stdin()
            .lock()
            .take(MAX_INPUT_BYTES)
            .read_to_end(&mut bytes)
    } else {
        match std::fs::File::open(&args.input) {
            Ok(f) => f.take(MAX_INPUT_BYTES).read_to_end(&mut bytes),
            Err(e) => {
                eprintln!(
                    "gps-agent decode: cannot open {}: {e}",
                    args.input.display()
                );
                return super::EXIT_NOINPUT;
            }
        }
    };
    if let Err(e) = read {
        eprintln!("gps-agent decode: read error: {e}");
        return 1;
    }
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = decode_all(&bytes, &mut |seq, fix| {
        serde_json::to_writer(&mut out, &Numbered { seq, fix })
            .map_err(io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
    });
    let flushed = out.flush();
    match (result, flushed) {
        (Ok(summary), Ok(())) => {
            eprintln!("{summary}");
            0
        }
        (Err(DecodeFailure::Write(e)), _) | (Ok(_), Err(e)) => {
            if e.kind() == io::ErrorKind::BrokenPipe {
                0
            } else {
                eprintln!("gps-agent decode: write error: {e}");
                1
            }
        }
        (Err(DecodeFailure::Message { index, at, why }), _) => {
            eprintln!("gps-agent decode: message {index} (byte {at}): {why}");
            EXIT_DATAERR
        }
    }
}

/// What was read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DecodeSummary {
    pub json_messages: u64,
    pub cbor_messages: u64,
    pub fixes: u64,
    /// Payload bytes of the messages.
    pub bytes: u64,
}

impl std::fmt::Display for DecodeSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "decode: {} messages ({} v1 JSON, {} v2 CBOR), {} fixes, {} payload bytes",
            self.json_messages + self.cbor_messages,
            self.json_messages,
            self.cbor_messages,
            self.fixes,
            self.bytes
        )?;
        if self.fixes > 0 {
            write!(f, " ({:.1} per fix)", self.bytes as f64 / self.fixes as f64)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
pub enum DecodeFailure {
    /// Message `index` (0-based) starting at byte `at` is not a fixes message.
    Message {
        index: u64,
        at: usize,
        why: String,
    },
    Write(io::Error),
}

/// Every message in `bytes`, in order: each fix to `sink`. A message's fixes go out only
/// once the whole message has been read without fault. Memory: `bytes` and a fix at a time,
/// whatever lengths a message claims.
pub fn decode_all(
    bytes: &[u8],
    sink: &mut impl FnMut(u64, &Fix) -> io::Result<()>,
) -> Result<DecodeSummary, DecodeFailure> {
    let mut summary = DecodeSummary::default();
    let mut at = 0;
    let mut index = 0u64;
    loop {
        while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        let Some(&first) = bytes.get(at) else { break };
        let rest = bytes.get(at..).unwrap_or_default();
        let fail = |why: String| DecodeFailure::Message { index, at, why };
        let mut written: io::Result<()> = Ok(());
        let mut fixes = 0u64;
        let mut emit = |seq: u64, fix: &Fix| {
            if written.is_ok() {
                written = sink(seq, fix);
                fixes += 1;
            }
        };
        let used = match first {
            b'{' => {
                let used = json_message(rest, &mut emit).map_err(fail)?;
                summary.json_messages += 1;
                used
            }
            0xa0..=0xbf => {
                let (_, used) =
                    cbor::read_prefix(rest, &mut emit).map_err(|e| fail(e.to_string()))?;
                summary.cbor_messages += 1;
                used
            }
            b => {
                return Err(fail(format!(
                    "starts with byte {b:#04x}: neither JSON ({{) nor a CBOR map"
                )))
            }
        };
        written.map_err(DecodeFailure::Write)?;
        summary.fixes += fixes;
        summary.bytes += used as u64;
        at += used.max(1);
        index += 1;
    }
    Ok(summary)
}

/// The v1 JSON message at the start of `rest`: its fixes to `emit` once all of it has been
/// read without fault; returns the bytes it took. Read as a stream, never as a tree: a fix
/// at a time, unknown keys skipped unread.
fn json_message(rest: &[u8], emit: &mut impl FnMut(u64, &Fix)) -> Result<usize, String> {
    // Its extent first (skipping values keeps nothing), then checked whole, then handed out.
    let mut extent = serde_json::Deserializer::from_slice(rest).into_iter::<IgnoredAny>();
    match extent.next() {
        Some(Ok(_)) => {}
        Some(Err(e)) => return Err(format!("not JSON: {e}")),
        None => return Err("not JSON: nothing".into()),
    }
    let message = rest.get(..extent.byte_offset()).unwrap_or_default();
    let read = |emit: Emit<'_>| {
        let mut de = serde_json::Deserializer::from_slice(message);
        let seed = JsonMessage { emit };
        seed.deserialize(&mut de).map_err(|e| e.to_string())
    };
    read(None)?;
    read(Some(emit))?;
    Ok(message.len())
}

/// Where a v1 message's fixes go: nowhere while it is being checked.
type Emit<'e> = Option<&'e mut dyn FnMut(u64, &Fix)>;

/// A v1 message (`{"v": 1, "fixes": [...]}`, other keys skipped), each fix to `emit` when
/// there is one; fails with the reason it is not a fixes message.
struct JsonMessage<'e> {
    emit: Emit<'e>,
}

impl<'de> DeserializeSeed<'de> for JsonMessage<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for JsonMessage<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a fixes message object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let (mut version, mut fixes) = (None, false);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "v" if version.is_none() => version = Some(map.next_value::<Scalar>()?),
                "fixes" if !fixes => {
                    fixes = true;
                    map.next_value_seed(JsonFixes {
                        emit: self.emit.take(),
                    })?;
                }
                "v" | "fixes" => return Err(A::Error::custom(format!("{key} twice"))),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let version = version.map_or(Value::Null, Scalar::into_value);
        if version.as_u64() != Some(1) {
            return Err(A::Error::custom(format!("v is {version}, not 1")));
        }
        if !fixes {
            return Err(A::Error::custom("no fixes array"));
        }
        Ok(())
    }
}

/// The `fixes` array of a v1 message.
struct JsonFixes<'e> {
    emit: Emit<'e>,
}

impl<'de> DeserializeSeed<'de> for JsonFixes<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for JsonFixes<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a fixes array")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        let at = |i: usize| move |e: A::Error| A::Error::custom(format!("fix {i}: {e}"));
        while let Some(JsonFix(fields)) = seq.next_element().map_err(at(i))? {
            let (seq_no, fix) =
                fix_from_json(&Value::Object(fields)).map_err(|e| at(i)(A::Error::custom(e)))?;
            let seq_no = seq_no.ok_or_else(|| at(i)(A::Error::custom("no seq")))?;
            if let Some(emit) = self.emit.as_deref_mut() {
                emit(seq_no, &fix);
            }
            i += 1;
        }
        Ok(())
    }
}

/// The keys of one fix that [`fix_from_json`] reads, each a scalar (a nested value stands
/// as an empty array: not a number, not a string); other keys skipped unread.
struct JsonFix(Map<String, Value>);

/// The keys of the spec's fix form.
const FIX_KEYS: [&str; 11] = [
    "seq",
    "time",
    "lat",
    "lon",
    "alt_m",
    "speed_mps",
    "course_deg",
    "hdop",
    "sats",
    "mode",
    "event",
];

impl<'de> Deserialize<'de> for JsonFix {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_map(JsonFixVisitor)
    }
}

struct JsonFixVisitor;

impl<'de> Visitor<'de> for JsonFixVisitor {
    type Value = JsonFix;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a fix object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonFix, A::Error> {
        let mut fields = Map::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match FIX_KEYS.iter().find(|k| **k == key.as_ref()) {
                Some(k) => {
                    let value = map.next_value::<Scalar>()?.into_value();
                    fields.insert((*k).to_owned(), value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(JsonFix(fields))
    }
}

/// A JSON value as far as a fix's keys need it: scalars kept, anything nested skipped.
enum Scalar {
    Value(Value),
    Nested,
}

impl Scalar {
    fn into_value(self) -> Value {
        match self {
            Scalar::Value(v) => v,
            Scalar::Nested => Value::Array(Vec::new()),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Value(Value::Bool(v)))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Value(Value::from(v)))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::Value(Value::from(v)))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Value(Value::from(v)))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Value(Value::from(v)))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Value(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scalar, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(Scalar::Nested)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(Scalar::Nested)
    }
}
