//! The compact payload, `v` 2 (`../shared/spec/INTERFACE.md`, "Compact payload"): one CBOR
//! map (RFC 8949) whose values are columns of integers, one element per fix, the position,
//! time, seq and altitude columns delta-coded, every integer in CBOR's shortest form.
//!
//! In: a batch of buffered fixes, as for the JSON form ([`super::payload`]). Out: messages
//! of at most `max_message_bytes`, each with the seqs it carries, and the fixes no message
//! can carry as dead letters, by the same rules as the JSON encoder. Written by hand (a few
//! hundred lines instead of a CBOR crate): the message is sized exactly before it is written,
//! so each message is one allocation of its final size, and nothing is allocated per fix.
//!
//! Units (the resolution a decoded fix keeps): time 1 ms, latitude and longitude 1e-7
//! degree (1.1 cm), altitude 1 dm, speed 1 cm/s, course 0.1 degree, HDOP 0.1. Keys are
//! written in the order of the spec's table. An optional column is written when at least
//! one fix of the message has a value, with null for the fixes that have none; `e` holds 0
//! for a fix without an event.
//!
//! **The lean header** (the spec's header form for metered links, the only one written): no
//! `d` (the topic names the device), and `s` as the stream id's 16 bytes (a CBOR byte
//! string) instead of its 32 hex characters: `s` and its value take 19 bytes where `d`, `s`
//! and theirs took 48 (a nine-character device id), 29 bytes less in every message. A
//! stream id that is not 32 lowercase hex characters (none the buffer makes) is written as
//! text.
//!
//! A backfill's messages ([`encode_backfill`]) carry one more entry, `request` (text), as the
//! spec's fixes messages on the backfill topic do; the decoder reads it.
//!
//! [`read_prefix`] reads such a message back a fix at a time (for `gps-agent decode`;
//! [`decode`] collects them, for the tests); it accepts both header forms (with `d` and `s`
//! as text, as agents before the lean header wrote it, and the lean one) and any valid CBOR
//! encoding of the same map (longer integer forms, keys in any order, unknown keys skipped),
//! not only what [`encode`] writes. It holds nothing but the message's bytes and one fix: a
//! claimed length is never reserved, only walked, so a message costs no more memory than it
//! has bytes.

use crate::error::{Classified, ErrorClass};
use crate::fix::{Event, Fix, FixMode};
use crate::uplink::error::UplinkError;
use crate::uplink::payload::{Encoded, FixBatch, Message};

/// Payload format version, the `v` key.
pub const PAYLOAD_VERSION: u64 = 2;

/// Columns after `v` and `s`, in the order they are written.
const KEYS: [&str; COLUMNS] = ["q", "t", "la", "lo", "al", "sp", "co", "hd", "sa", "m", "e"];
const COLUMNS: usize = 11;
/// Columns written for every message (`q`, `t`, `la`, `lo`); the others only when a fix of
/// the message has a value.
const REQUIRED: usize = 4;
/// Delta-coded columns: `q`, `t`, `la`, `lo`, `al`.
const DELTA: [bool; COLUMNS] = [
    true, true, true, true, true, false, false, false, false, false, false,
];
const EVENT: usize = 10;

/// CBOR major types.
const UNSIGNED: u8 = 0;
const NEGATIVE: u8 = 1;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;
const SIMPLE: u8 = 7;
const NULL: u8 = 0xf6;

/// A fix's values in the payload's integer units; `None` where the fix has none.
fn values(seq: u64, fix: &Fix) -> [Option<i64>; COLUMNS] {
    let scaled = |v: Option<f64>, scale: f64| {
        v.filter(|x| x.is_finite())
            .map(|x| (x * scale).round() as i64)
    };
    [
        Some(i64::try_from(seq).unwrap_or(i64::MAX)),
        Some(fix.time_ms),
        Some((fix.lat * 1e7).round() as i64),
        Some((fix.lon * 1e7).round() as i64),
        scaled(fix.alt_m, 10.0),
        scaled(fix.speed_mps, 100.0),
        // 359.96 degrees is 3600 tenths: the same direction as 0.
        scaled(fix.course_deg, 10.0).map(|c| c.rem_euclid(3600)),
        scaled(fix.hdop, 10.0),
        fix.sats.map(i64::from),
        Some(i64::from(fix.mode.as_u8())),
        Some(fix.event.map_or(0, |e| i64::from(e.as_u8()))),
    ]
}

/// Bytes of a CBOR head (major type and argument) for `arg`.
fn head_len(arg: u64) -> usize {
    match arg {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Bytes of an integer in its shortest form.
fn int_len(v: i64) -> usize {
    head_len(if v < 0 { !(v as u64) } else { v as u64 })
}

fn write_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    match arg {
        0..=23 => out.push(m | arg as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, arg as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(arg as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(arg as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&arg.to_be_bytes());
        }
    }
}

fn write_int(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        // -1 - n: the argument is the bitwise complement, never overflows.
        write_head(out, NEGATIVE, !(v as u64));
    } else {
        write_head(out, UNSIGNED, v as u64);
    }
}

fn write_text(out: &mut Vec<u8>, s: &str) {
    write_head(out, TEXT, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Bytes of a stream id as a 16-byte CBOR byte string (16 + 1 head).
const STREAM_ID_LEN: usize = 16;

/// The stream id's 16 bytes when it is 32 lowercase hex characters, as the buffer makes it.
fn stream_id(stream: &str) -> Option<[u8; STREAM_ID_LEN]> {
    let hex = stream.as_bytes();
    if hex.len() != 2 * STREAM_ID_LEN {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut id = [0u8; STREAM_ID_LEN];
    for (byte, pair) in id.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(id)
}

/// Bytes `s` takes: a byte string of the id, or text.
fn stream_len(stream: &str) -> usize {
    match stream_id(stream) {
        Some(_) => head_len(STREAM_ID_LEN as u64) + STREAM_ID_LEN,
        None => head_len(stream.len() as u64) + stream.len(),
    }
}

fn write_stream(out: &mut Vec<u8>, stream: &str) {
    match stream_id(stream) {
        Some(id) => {
            write_head(out, BYTES, STREAM_ID_LEN as u64);
            out.extend_from_slice(&id);
        }
        None => write_text(out, stream),
    }
}

/// The size of one message, kept as fixes are added, so a batch is split where the next
/// fix would not fit without writing anything twice.
#[derive(Debug, Clone, Copy)]
struct Sizer {
    /// `v` and `s` with their keys, and the map head (at most 13 entries: one byte).
    fixed: usize,
    fixes: usize,
    /// Per column, the bytes of its elements so far (a null counted as one byte, should the
    /// column turn out present).
    element_bytes: [usize; COLUMNS],
    present: [bool; COLUMNS],
    /// Running values of the delta-coded columns (0 before the first value).
    running: [i64; COLUMNS],
}

impl Sizer {
    fn new(stream: &str) -> Sizer {
        let text = |s: &str| head_len(s.len() as u64) + s.len();
        let fixed =
            1 + text("v") + int_len(PAYLOAD_VERSION as i64) + text("s") + stream_len(stream);
        let mut present = [false; COLUMNS];
        present[..REQUIRED].fill(true);
        Sizer {
            fixed,
            fixes: 0,
            element_bytes: [0; COLUMNS],
            present,
            running: [0; COLUMNS],
        }
    }

    fn add(&mut self, v: &[Option<i64>; COLUMNS]) {
        self.fixes += 1;
        for c in 0..COLUMNS {
            self.element_bytes[c] += match v[c] {
                None => 1,
                Some(x) if DELTA[c] => {
                    let d = x.wrapping_sub(self.running[c]);
                    self.running[c] = x;
                    int_len(d)
                }
                Some(x) => int_len(x),
            };
            // `e` is present only when a fix has an event (0 is "none").
            let has = if c == EVENT {
                v[c].is_some_and(|e| e != 0)
            } else {
                v[c].is_some()
            };
            self.present[c] |= has;
        }
    }

    fn total(&self) -> usize {
        let array = head_len(self.fixes as u64);
        self.fixed
            + (0..COLUMNS)
                .filter(|&c| self.present[c])
                .map(|c| {
                    head_len(KEYS[c].len() as u64) + KEYS[c].len() + array + self.element_bytes[c]
                })
                .sum::<usize>()
    }
}

/// Split `batch` into v2 messages of at most `max_message_bytes`, keeping order; a fix that
/// does not fit alone is a dead letter (`MQTT_TOO_LARGE`).
pub fn encode(batch: &FixBatch<'_>, max_message_bytes: usize) -> Encoded {
    let mut out = Encoded::default();
    let empty = Sizer::new(batch.stream);
    let mut sizer = empty;
    // The fixes of the message being sized, as a range of `batch.fixes` (skipping dead
    // letters: their seqs are left out of `members`).
    let mut members: Vec<usize> = Vec::new();
    for (i, (seq, fix)) in batch.fixes.iter().enumerate() {
        let v = values(*seq, fix);
        let mut alone = empty;
        alone.add(&v);
        if alone.total() > max_message_bytes {
            out.dead_letters.push((
                *seq,
                UplinkError::TooLarge {
                    bytes: alone.total(),
                    max: max_message_bytes,
                },
            ));
            continue;
        }
        let mut with = sizer;
        with.add(&v);
        if !members.is_empty() && with.total() > max_message_bytes {
            out.messages.push(write(batch, &members, sizer.total()));
            members.clear();
            with = alone;
        }
        sizer = with;
        members.push(i);
    }
    if !members.is_empty() {
        out.messages.push(write(batch, &members, sizer.total()));
    }
    out
}

/// A backfill's messages (`../shared/spec/INTERFACE.md`, "Remote commands": fixes messages
/// with `"request": id`): as [`encode`] makes them, each with one more entry, `request`
/// and the request's id as text, after the columns; within `max_message_bytes` with it.
pub fn encode_backfill(batch: &FixBatch<'_>, request: &str, max_message_bytes: usize) -> Encoded {
    let extra = head_len(REQUEST.len() as u64)
        + REQUEST.len()
        + head_len(request.len() as u64)
        + request.len();
    let mut encoded = encode(batch, max_message_bytes.saturating_sub(extra));
    for m in &mut encoded.messages {
        // The map's head is one byte (at most 2 + COLUMNS entries, under 24): one more.
        if let Some(first) = m.payload.first_mut() {
            debug_assert!((0xa0..0xb7).contains(first), "a one-byte map head");
            *first += 1;
        }
        write_text(&mut m.payload, REQUEST);
        write_text(&mut m.payload, request);
    }
    encoded
}

/// The key a backfill's messages add.
const REQUEST: &str = "request";

/// One message of the fixes at `members` (indices into the batch), `size` bytes long.
fn write(batch: &FixBatch<'_>, members: &[usize], size: usize) -> Message {
    let fixes = || members.iter().filter_map(|&i| batch.fixes.get(i));
    let mut present = [false; COLUMNS];
    present[..REQUIRED].fill(true);
    for (seq, fix) in fixes() {
        let v = values(*seq, fix);
        for c in REQUIRED..COLUMNS {
            present[c] |= if c == EVENT {
                v[c].is_some_and(|e| e != 0)
            } else {
                v[c].is_some()
            };
        }
    }
    let mut payload = Vec::with_capacity(size);
    let entries = 2 + present.iter().filter(|p| **p).count();
    write_head(&mut payload, MAP, entries as u64);
    write_text(&mut payload, "v");
    write_int(&mut payload, PAYLOAD_VERSION as i64);
    write_text(&mut payload, "s");
    write_stream(&mut payload, batch.stream);
    for c in (0..COLUMNS).filter(|&c| present[c]) {
        write_text(&mut payload, KEYS[c]);
        write_head(&mut payload, ARRAY, members.len() as u64);
        let mut running = 0i64;
        for (seq, fix) in fixes() {
            match values(*seq, fix)[c] {
                None => payload.push(NULL),
                Some(x) if DELTA[c] => {
                    write_int(&mut payload, x.wrapping_sub(running));
                    running = x;
                }
                Some(x) => write_int(&mut payload, x),
            }
        }
    }
    debug_assert_eq!(payload.len(), size, "the sizer and the writer agree");
    let mut seqs = Vec::with_capacity(members.len());
    seqs.extend(fixes().map(|(seq, _)| *seq));
    Message { seqs, payload }
}

/// A v2 message read back.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedMessage {
    /// `d`, when the message has it (the lean header leaves it to the topic).
    pub device: Option<String>,
    /// `s` as text: a byte string's 16 bytes as 32 lowercase hex characters.
    pub stream: String,
    /// `request`, in a backfill's messages.
    pub request: Option<String>,
    /// `(seq, fix)`, in the message's order.
    pub fixes: Vec<(u64, Fix)>,
}

/// Why a message is not a v2 payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("byte {at}: {what}")]
    Cbor { at: usize, what: &'static str },
    #[error("not a v2 payload: {0}")]
    Shape(String),
}

impl Classified for DecodeError {
    fn code(&self) -> &'static str {
        "PAYLOAD_DECODE"
    }

    fn class(&self) -> ErrorClass {
        ErrorClass::Permanent
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

/// Nesting deeper than this is not a payload (and must not exhaust the stack).
const MAX_DEPTH: usize = 16;

impl<'a> Reader<'a> {
    fn fail(&self, what: &'static str) -> DecodeError {
        DecodeError::Cbor { at: self.at, what }
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| self.fail("ends early"))?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .ok_or_else(|| self.fail("too long"))?;
        let bytes: &'a [u8] = self.bytes;
        let s = bytes
            .get(self.at..end)
            .ok_or_else(|| self.fail("ends early"))?;
        self.at = end;
        Ok(s)
    }

    /// Major type, additional information and argument.
    fn head(&mut self) -> Result<(u8, u8, u64), DecodeError> {
        let b = self.byte()?;
        let (major, info) = (b >> 5, b & 0x1f);
        let arg = match info {
            0..=23 => u64::from(info),
            24 => u64::from(self.byte()?),
            25 => u64::from(u16::from_be_bytes([self.byte()?, self.byte()?])),
            26 => {
                let s = self.take(4)?;
                u64::from(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
            }
            27 => {
                let s = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(s);
                u64::from_be_bytes(a)
            }
            31 => return Err(self.fail("indefinite lengths are not used")),
            _ => return Err(self.fail("reserved additional information")),
        };
        Ok((major, info, arg))
    }

    fn len(&self, arg: u64) -> Result<usize, DecodeError> {
        // Every element takes at least a byte: a longer count than the bytes left is a lie.
        usize::try_from(arg)
            .ok()
            .filter(|n| *n <= self.bytes.len() - self.at.min(self.bytes.len()))
            .ok_or_else(|| self.fail("length beyond the message"))
    }

    /// Past one data item of any kind, nested ones included; nothing is kept, so a claimed
    /// length costs no memory, only the bytes it really covers.
    fn skip(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(self.fail("nested too deep"));
        }
        let (major, _, arg) = self.head()?;
        match major {
            2 | 3 => {
                let n = self.len(arg)?;
                self.take(n)?;
            }
            4 => {
                for _ in 0..self.len(arg)? {
                    self.skip(depth + 1)?;
                }
            }
            5 => {
                for _ in 0..self.len(arg)? {
                    self.skip(depth + 1)?;
                    self.skip(depth + 1)?;
                }
            }
            6 => self.skip(depth + 1)?,
            // Integers, simple values and floats: the head was all of it.
            _ => {}
        }
        Ok(())
    }

    /// A text string, borrowed from the message.
    fn text(&mut self) -> Result<Option<&'a str>, DecodeError> {
        let (major, _, arg) = self.head()?;
        if major != TEXT {
            return Ok(None);
        }
        self.text_body(arg).map(Some)
    }

    /// The `arg` bytes of a text string whose head was read.
    fn text_body(&mut self, arg: u64) -> Result<&'a str, DecodeError> {
        let n = self.len(arg)?;
        let at = self.at;
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::Cbor {
            at,
            what: "text is not UTF-8",
        })
    }

    /// `s`: text, or a byte string of the stream id's 16 bytes; `None` for anything else.
    fn stream(&mut self) -> Result<Option<Stream<'a>>, DecodeError> {
        let (major, _, arg) = self.head()?;
        match major {
            TEXT => self.text_body(arg).map(|t| Some(Stream::Text(t))),
            BYTES if arg == STREAM_ID_LEN as u64 => {
                let mut id = [0u8; STREAM_ID_LEN];
                id.copy_from_slice(self.take(STREAM_ID_LEN)?);
                Ok(Some(Stream::Id(id)))
            }
            _ => Ok(None),
        }
    }

    /// An integer (`Ok(Some(Some(v)))`), a null (`Ok(Some(None))`), or something else
    /// (`Ok(None)`, read no further than its head).
    fn int_or_null(&mut self) -> Result<Option<Option<i128>>, DecodeError> {
        let (major, info, arg) = self.head()?;
        Ok(match major {
            UNSIGNED => Some(Some(i128::from(arg))),
            NEGATIVE => Some(Some(-1 - i128::from(arg))),
            SIMPLE if info == NULL & 0x1f => Some(None),
            _ => None,
        })
    }
}

/// Read a v2 message back into fixes (the units of the module's doc). The whole of `bytes`
/// must be the one message.
pub fn decode(bytes: &[u8]) -> Result<DecodedMessage, DecodeError> {
    let (message, used) = decode_prefix(bytes)?;
    if used != bytes.len() {
        return Err(DecodeError::Cbor {
            at: used,
            what: "bytes after the map",
        });
    }
    Ok(message)
}

/// Read the v2 message at the start of `bytes` (CBOR items delimit themselves, so captured
/// messages can follow each other); returns it and the bytes it took.
pub fn decode_prefix(bytes: &[u8]) -> Result<(DecodedMessage, usize), DecodeError> {
    let mut fixes = Vec::new();
    let (head, used) = read_prefix(bytes, &mut |seq, fix| fixes.push((seq, *fix)))?;
    Ok((
        DecodedMessage {
            device: head.device.map(str::to_owned),
            stream: head.stream.to_string(),
            request: head.request.map(str::to_owned),
            fixes,
        },
        used,
    ))
}

/// The envelope of a v2 message: who sent it, and how many fixes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// `d`: absent in the lean header (the topic names the device).
    pub device: Option<&'a str>,
    pub stream: Stream<'a>,
    /// `request`: a backfill's message names the request it answers.
    pub request: Option<&'a str>,
    pub fixes: usize,
}

/// `s` as a message carries it: text, or the stream id's 16 bytes (the lean header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream<'a> {
    Text(&'a str),
    Id([u8; STREAM_ID_LEN]),
}

/// The stream id as text: a byte string in lowercase hex, as the buffer names the stream.
impl std::fmt::Display for Stream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stream::Text(t) => f.write_str(t),
            Stream::Id(id) => id.iter().try_for_each(|b| write!(f, "{b:02x}")),
        }
    }
}

/// Read the v2 message at the start of `bytes` and hand its fixes to `sink`, in order, only
/// once the whole message has been read without fault (a broken message yields none).
/// Returns its envelope and the bytes it took. Memory: nothing beyond `bytes` and a fix at a
/// time, whatever lengths the message claims.
pub fn read_prefix<'a>(
    bytes: &'a [u8],
    sink: &mut impl FnMut(u64, &Fix),
) -> Result<(Envelope<'a>, usize), DecodeError> {
    let layout = Layout::read(bytes)?;
    // The fixes are checked all through first, then handed out: a fault anywhere in the
    // message (a delta that overflows, a mode of 7) yields no fix of it.
    layout.fixes(bytes, &mut |_, _| {})?;
    layout.fixes(bytes, sink)?;
    Ok((layout.envelope, layout.used))
}

/// Where a message's columns are.
struct Layout<'a> {
    envelope: Envelope<'a>,
    /// Each column present: the offset of its first element.
    columns: [Option<usize>; COLUMNS],
    used: usize,
}

impl<'a> Layout<'a> {
    /// The map read through once: keys, `v`, `d`, `s`, and each column checked to be an
    /// array of integers and nulls as long as `q`.
    fn read(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { bytes, at: 0 };
        let (major, _, entries) = r.head()?;
        if major != MAP {
            return Err(DecodeError::Shape("the message is not a CBOR map".into()));
        }
        let entries = r.len(entries)?;
        let (mut version, mut device, mut stream, mut request) = (None, None, None, None);
        let mut columns: [Option<(usize, usize)>; COLUMNS] = [None; COLUMNS];
        for _ in 0..entries {
            let Some(key) = r.text()? else {
                return Err(DecodeError::Shape("a key is not text".into()));
            };
            let wrong_type = || DecodeError::Shape(format!("{key:?} has the wrong type"));
            match key {
                "v" => match r.int_or_null()? {
                    Some(Some(v)) => version = Some(v),
                    _ => return Err(wrong_type()),
                },
                "d" => device = Some(r.text()?.ok_or_else(wrong_type)?),
                "s" => stream = Some(r.stream()?.ok_or_else(wrong_type)?),
                REQUEST => request = Some(r.text()?.ok_or_else(wrong_type)?),
                k => match KEYS.iter().position(|x| *x == k) {
                    Some(c) => {
                        let (major, _, arg) = r.head()?;
                        if major != ARRAY {
                            return Err(DecodeError::Shape(format!("{key:?} is not an array")));
                        }
                        let n = r.len(arg)?;
                        let start = r.at;
                        for i in 0..n {
                            if r.int_or_null()?.is_none() {
                                return Err(DecodeError::Shape(format!(
                                    "element {i} of {k} is not an integer or null"
                                )));
                            }
                        }
                        columns[c] = Some((start, n));
                    }
                    None => r.skip(0)?,
                },
            }
        }
        if version != Some(i128::from(PAYLOAD_VERSION)) {
            return Err(DecodeError::Shape(format!("v is {version:?}, not 2")));
        }
        let stream = stream.ok_or_else(|| DecodeError::Shape("no s".into()))?;
        let n = columns[0].map_or(0, |(_, n)| n);
        for (c, col) in columns.iter().enumerate() {
            match col {
                None if c < REQUIRED || KEYS[c] == "m" => {
                    return Err(DecodeError::Shape(format!("no {} column", KEYS[c])))
                }
                Some((_, len)) if *len != n => {
                    return Err(DecodeError::Shape(format!(
                        "column {} has {len} elements, q has {n}",
                        KEYS[c]
                    )))
                }
                _ => {}
            }
        }
        Ok(Layout {
            envelope: Envelope {
                device,
                stream,
                request,
                fixes: n,
            },
            columns: columns.map(|c| c.map(|(start, _)| start)),
            used: r.at,
        })
    }

    /// The fixes, one at a time, reading every column side by side.
    fn fixes(&self, bytes: &[u8], sink: &mut impl FnMut(u64, &Fix)) -> Result<(), DecodeError> {
        let mut cursors = self.columns.map(|c| c.map(|at| Reader { bytes, at }));
        let mut running = [0i128; COLUMNS];
        for i in 0..self.envelope.fixes {
            let mut v: [Option<i128>; COLUMNS] = [None; COLUMNS];
            for (c, cursor) in cursors.iter_mut().enumerate() {
                let Some(r) = cursor else { continue };
                v[c] = match r.int_or_null()? {
                    Some(Some(x)) if DELTA[c] => {
                        running[c] = running[c]
                            .checked_add(x)
                            .ok_or_else(|| DecodeError::Shape("a delta overflows".into()))?;
                        Some(running[c])
                    }
                    Some(x) => x,
                    None => {
                        return Err(DecodeError::Shape(format!(
                            "element {i} of {} is not an integer or null",
                            KEYS[c]
                        )))
                    }
                };
            }
            let (seq, fix) = fix_of(i, &v)?;
            sink(seq, &fix);
        }
        Ok(())
    }
}

fn fix_of(i: usize, v: &[Option<i128>; COLUMNS]) -> Result<(u64, Fix), DecodeError> {
    let need =
        |c: usize| v[c].ok_or_else(|| DecodeError::Shape(format!("fix {i} has no {}", KEYS[c])));
    let small = |c: usize, what: &str| -> Result<Option<f64>, DecodeError> {
        v[c].map(|x| {
            i64::try_from(x)
                .map(|x| x as f64)
                .map_err(|_| DecodeError::Shape(format!("fix {i}: {what} out of range")))
        })
        .transpose()
    };
    let seq = u64::try_from(need(0)?)
        .map_err(|_| DecodeError::Shape(format!("fix {i}: seq out of range")))?;
    let time_ms = i64::try_from(need(1)?)
        .map_err(|_| DecodeError::Shape(format!("fix {i}: time out of range")))?;
    let degrees =
        |c: usize| -> Result<f64, DecodeError> { Ok(small(c, KEYS[c])?.unwrap_or(f64::NAN) / 1e7) };
    need(2)?;
    need(3)?;
    let mode = v[9]
        .and_then(|m| u8::try_from(m).ok())
        .and_then(FixMode::from_u8)
        .ok_or_else(|| DecodeError::Shape(format!("fix {i}: m is not 2 or 3")))?;
    let event = match v[EVENT] {
        None | Some(0) => None,
        Some(e) => Some(
            u8::try_from(e)
                .ok()
                .and_then(Event::from_u8)
                .ok_or_else(|| DecodeError::Shape(format!("fix {i}: e is {e}")))?,
        ),
    };
    let sats = match v[8] {
        None => None,
        Some(s) => {
            Some(u8::try_from(s).map_err(|_| DecodeError::Shape(format!("fix {i}: sa is {s}")))?)
        }
    };
    Ok((
        seq,
        Fix {
            time_ms,
            lat: degrees(2)?,
            lon: degrees(3)?,
            alt_m: small(4, "al")?.map(|x| x / 10.0),
            speed_mps: small(5, "sp")?.map(|x| x / 100.0),
            course_deg: small(6, "co")?.map(|x| x / 10.0),
            hdop: small(7, "hd")?.map(|x| x / 10.0),
            sats,
            mode,
            event,
        },
    ))
}

#[cfg(test)]
mod tests;
