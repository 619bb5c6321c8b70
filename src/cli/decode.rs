//! `gps-agent decode [FILE|-]`: captured fixes messages in, the fixes they carry out as JSON
//! Lines (the fix form of the spec, `seq` being the buffer's), so an operator can read what
//! was sent, in either encoding: the compact CBOR (`v` 2) or JSON (`v` 1).
//!
//! The input holds one or more messages as a subscriber saved them (`mosquitto_sub -N` or
//! with a newline after each): a message starting with `{` is JSON, one starting with a CBOR
//! map head (0xA0-0xBF) is v2, whitespace between messages is skipped. A summary line goes
//! to stderr. Exit 65 (`EX_DATAERR`) at the first message that cannot be read, after the
//! fixes of the messages before it.

use crate::fix::{fix_from_json, Fix, Numbered};
use crate::uplink::cbor;
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

/// Every message in `bytes`, in order: each fix to `sink`.
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
        let (fixes, used) = match first {
            b'{' => {
                let mut stream =
                    serde_json::Deserializer::from_slice(rest).into_iter::<serde_json::Value>();
                let value = match stream.next() {
                    Some(Ok(v)) => v,
                    Some(Err(e)) => return Err(fail(format!("not JSON: {e}"))),
                    None => break,
                };
                let used = stream.byte_offset();
                summary.json_messages += 1;
                (json_fixes(&value).map_err(fail)?, used)
            }
            0xa0..=0xbf => {
                let (message, used) = cbor::decode_prefix(rest).map_err(|e| fail(e.to_string()))?;
                summary.cbor_messages += 1;
                (message.fixes, used)
            }
            b => {
                return Err(fail(format!(
                    "starts with byte {b:#04x}: neither JSON ({{) nor a CBOR map"
                )))
            }
        };
        summary.bytes += used as u64;
        for (seq, fix) in &fixes {
            sink(*seq, fix).map_err(DecodeFailure::Write)?;
            summary.fixes += 1;
        }
        at += used.max(1);
        index += 1;
    }
    Ok(summary)
}

/// The fixes of a v1 JSON message.
fn json_fixes(v: &serde_json::Value) -> Result<Vec<(u64, Fix)>, String> {
    if v.get("v").and_then(serde_json::Value::as_u64) != Some(1) {
        return Err(format!(
            "v is {}, not 1",
            v.get("v").unwrap_or(&serde_json::Value::Null)
        ));
    }
    let fixes = v
        .get("fixes")
        .and_then(serde_json::Value::as_array)
        .ok_or("no fixes array")?;
    fixes
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let (seq, fix) = fix_from_json(f).map_err(|e| format!("fix {i}: {e}"))?;
            Ok((seq.ok_or(format!("fix {i}: no seq"))?, fix))
        })
        .collect()
}
