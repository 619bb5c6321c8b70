//! The compact payload byte for byte, its splitting rules, and the round trip.

use super::*;
use crate::fix::{Event, FixMode};
use proptest::prelude::*;

fn fix(i: i64) -> Fix {
    Fix {
        time_ms: 1_773_475_200_000 + i * 1000,
        lat: 48.137_154_3 + i as f64 * 1e-5,
        lon: 11.576_124_0 - i as f64 * 2e-5,
        alt_m: Some(519.0 + i as f64 * 0.1),
        speed_mps: Some(13.89),
        course_deg: Some(92.3),
        hdop: Some(0.9),
        sats: Some(9),
        mode: FixMode::ThreeD,
        event: None,
    }
}

/// A stream id as the buffer makes them: 32 lowercase hex characters.
const STREAM: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const STREAM_BYTES: [u8; 16] = [
    0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0,
];

fn batch<'a>(f: &'a [(u64, Fix)]) -> FixBatch<'a> {
    FixBatch {
        device: "truck-042",
        stream: STREAM,
        fixes: f,
    }
}

/// Two fixes, the second with a stop event and no satellites.
fn two_fixes() -> Vec<(u64, Fix)> {
    vec![
        (7, fix(0)),
        (
            8,
            Fix {
                event: Some(Event::Stop),
                sats: None,
                ..fix(1)
            },
        ),
    ]
}

/// The columns of [`two_fixes`], byte for byte, after the header.
fn two_fixes_columns() -> Vec<u8> {
    let mut want = Vec::new();
    // q: 7, +1
    want.extend_from_slice(&[0x61, b'q', 0x82, 0x07, 0x01]);
    // t: 1773475200000 (uint64, 9 bytes), +1000 (0x19 0x03e8)
    want.extend_from_slice(&[0x61, b't', 0x82, 0x1b]);
    want.extend_from_slice(&1_773_475_200_000u64.to_be_bytes());
    want.extend_from_slice(&[0x19, 0x03, 0xe8]);
    // la: 481371543 (0x1a, 4 bytes), +100
    want.extend_from_slice(&[0x62, b'l', b'a', 0x82, 0x1a]);
    want.extend_from_slice(&481_371_543u32.to_be_bytes());
    want.extend_from_slice(&[0x18, 100]);
    // lo: 115761240, -200 (negative: 0x38 199)
    want.extend_from_slice(&[0x62, b'l', b'o', 0x82, 0x1a]);
    want.extend_from_slice(&115_761_240u32.to_be_bytes());
    want.extend_from_slice(&[0x38, 199]);
    // al: 5190 dm, +1
    want.extend_from_slice(&[0x62, b'a', b'l', 0x82, 0x19, 0x14, 0x46, 0x01]);
    // sp: 1389 cm/s each
    want.extend_from_slice(&[0x62, b's', b'p', 0x82, 0x19, 0x05, 0x6d, 0x19, 0x05, 0x6d]);
    // co: 923 tenths
    want.extend_from_slice(&[0x62, b'c', b'o', 0x82, 0x19, 0x03, 0x9b, 0x19, 0x03, 0x9b]);
    // hd: 9
    want.extend_from_slice(&[0x62, b'h', b'd', 0x82, 0x09, 0x09]);
    // sa: 9, null
    want.extend_from_slice(&[0x62, b's', b'a', 0x82, 0x09, 0xf6]);
    // m: 3, 3
    want.extend_from_slice(&[0x61, b'm', 0x82, 0x03, 0x03]);
    // e: none (0), stop (1)
    want.extend_from_slice(&[0x61, b'e', 0x82, 0x00, 0x01]);
    want
}

/// [`two_fixes`] as agents before the lean header wrote them (a golden capture): `d` the
/// device id, `s` the stream id as text.
fn two_fixes_full_header() -> Vec<u8> {
    let mut full: Vec<u8> = vec![0xae]; // map of 14: v d s + 11 columns
    full.extend_from_slice(&[0x61, b'v', 0x02]);
    full.extend_from_slice(&[0x61, b'd', 0x69]);
    full.extend_from_slice(b"truck-042");
    full.extend_from_slice(&[0x61, b's', 0x78, 0x20]);
    full.extend_from_slice(STREAM.as_bytes());
    full.extend_from_slice(&two_fixes_columns());
    full
}

#[test]
fn two_fixes_are_written_exactly_as_the_spec_says_with_the_lean_header() {
    let enc = encode(&batch(&two_fixes()), 64 * 1024);
    assert_eq!(enc.messages.len(), 1);
    let mut want: Vec<u8> = vec![0xad]; // map of 13: v s + 11 columns
    want.extend_from_slice(&[0x61, b'v', 0x02]);
    // s: the stream id's 16 bytes (byte string, 0x50); no d
    want.extend_from_slice(&[0x61, b's', 0x50]);
    want.extend_from_slice(&STREAM_BYTES);
    want.extend_from_slice(&two_fixes_columns());
    assert_eq!(enc.messages[0].payload, want);
    assert_eq!(enc.messages[0].seqs, vec![7, 8]);
    assert_eq!(
        two_fixes_full_header().len() - want.len(),
        29,
        "the lean header saves 29 bytes a message"
    );
}

#[test]
fn a_capture_decodes_to_the_same_fixes_in_both_header_forms() {
    let lean = encode(&batch(&two_fixes()), 64 * 1024).messages.remove(0);
    let lean = decode(&lean.payload).unwrap();
    let full = decode(&two_fixes_full_header()).unwrap();
    assert_eq!(lean.fixes, full.fixes);
    assert_eq!(lean.stream, STREAM);
    assert_eq!(full.stream, STREAM);
    assert_eq!(lean.device, None);
    assert_eq!(full.device.as_deref(), Some("truck-042"));
    let seqs: Vec<u64> = lean.fixes.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![7, 8]);
}

#[test]
fn a_stream_id_that_is_not_hex_is_written_as_text() {
    let f = two_fixes();
    for stream in ["s1", "0F1E2D3C4B5A69788796A5B4C3D2E1F0", &STREAM[1..]] {
        let b = FixBatch {
            stream,
            ..batch(&f)
        };
        let m = encode(&b, 64 * 1024).messages.remove(0);
        let mut head = vec![0x61, b's'];
        write_text(&mut head, stream);
        assert_eq!(m.payload[4..4 + head.len()], head[..], "{stream}");
        assert_eq!(decode(&m.payload).unwrap().stream, stream);
    }
}

#[test]
fn a_stream_byte_string_of_another_length_or_a_device_that_is_not_text_is_refused() {
    let mut short = vec![0xad, 0x61, b'v', 0x02, 0x61, b's', 0x4f];
    short.extend_from_slice(&STREAM_BYTES[..15]);
    short.extend_from_slice(&two_fixes_columns());
    assert_eq!(
        decode(&short).unwrap_err(),
        DecodeError::Shape("\"s\" has the wrong type".into())
    );
    let mut device = two_fixes_full_header();
    // d: a byte string of the same nine bytes instead of text.
    device[6] = 0x49;
    assert_eq!(
        decode(&device).unwrap_err(),
        DecodeError::Shape("\"d\" has the wrong type".into())
    );
}

#[test]
fn integers_take_their_shortest_form_at_every_boundary() {
    let cases: [(i64, &[u8]); 14] = [
        (0, &[0x00]),
        (23, &[0x17]),
        (24, &[0x18, 24]),
        (255, &[0x18, 0xff]),
        (256, &[0x19, 0x01, 0x00]),
        (65_535, &[0x19, 0xff, 0xff]),
        (65_536, &[0x1a, 0, 1, 0, 0]),
        (4_294_967_295, &[0x1a, 0xff, 0xff, 0xff, 0xff]),
        (4_294_967_296, &[0x1b, 0, 0, 0, 1, 0, 0, 0, 0]),
        (-1, &[0x20]),
        (-24, &[0x37]),
        (-25, &[0x38, 24]),
        (-256, &[0x38, 0xff]),
        (-257, &[0x39, 0x01, 0x00]),
    ];
    for (v, bytes) in cases {
        let mut out = Vec::new();
        write_int(&mut out, v);
        assert_eq!(out, bytes, "{v}");
        assert_eq!(int_len(v), bytes.len(), "{v}");
    }
    let mut out = Vec::new();
    write_int(&mut out, i64::MIN);
    assert_eq!(out, [0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
}

#[test]
fn optional_columns_are_left_out_when_no_fix_has_them() {
    let full = fix(0);
    let bare = Fix::bare(full.time_ms, full.lat, full.lon);
    let f = vec![(1, bare), (2, bare)];
    let m = &encode(&batch(&f), 4096).messages[0];
    // v s q t la lo m
    assert_eq!(m.payload[0], 0xa7);
    let back = decode(&m.payload).unwrap();
    assert_eq!(back.fixes[1].1.alt_m, None);
    assert_eq!(back.fixes[1].1.mode, FixMode::TwoD);
    assert_eq!(back.fixes[1].1.event, None);
}

#[test]
fn a_null_in_a_delta_column_keeps_the_running_value() {
    let f = vec![
        (1, fix(0)),
        (
            2,
            Fix {
                alt_m: None,
                ..fix(1)
            },
        ),
        (3, fix(2)),
    ];
    let m = &encode(&batch(&f), 4096).messages[0];
    let back = decode(&m.payload).unwrap();
    assert_eq!(back.fixes[1].1.alt_m, None);
    assert_eq!(back.fixes[2].1.alt_m, Some(519.2));
}

#[test]
fn a_batch_over_the_limit_splits_in_order_and_every_message_fits() {
    let f: Vec<(u64, Fix)> = (1..=200).map(|s| (s, fix(s as i64))).collect();
    let whole = encode(&batch(&f), usize::MAX).messages[0].payload.len();
    for limit in [120, 200, 333, 1024, whole - 1, whole] {
        let enc = encode(&batch(&f), limit);
        assert!(enc.dead_letters.is_empty());
        let mut all = Vec::new();
        for m in &enc.messages {
            assert!(m.payload.len() <= limit, "{} > {limit}", m.payload.len());
            let back = decode(&m.payload).unwrap();
            let seqs: Vec<u64> = back.fixes.iter().map(|(s, _)| *s).collect();
            assert_eq!(seqs, m.seqs);
            all.extend_from_slice(&m.seqs);
        }
        assert_eq!(all, (1..=200).collect::<Vec<_>>(), "limit {limit}");
        if limit == whole {
            assert_eq!(enc.messages.len(), 1, "exactly at the limit is not split");
        }
        if limit == whole - 1 {
            assert_eq!(enc.messages.len(), 2);
        }
    }
}

#[test]
fn a_fix_too_large_for_any_message_is_a_dead_letter_and_does_not_block_the_rest() {
    let f = vec![(1, fix(1)), (2, fix(2)), (3, fix(3))];
    let alone = encode(&batch(&f[1..2]), usize::MAX).messages[0]
        .payload
        .len();
    let enc = encode(&batch(&f), alone - 1);
    assert!(enc.messages.is_empty());
    let dead: Vec<u64> = enc.dead_letters.iter().map(|(s, _)| *s).collect();
    assert_eq!(dead, vec![1, 2, 3]);
    assert_eq!(enc.dead_letters[0].1.code(), "MQTT_TOO_LARGE");
    assert!(encode(&batch(&[]), 100).messages.is_empty());
}

#[test]
fn the_decoder_refuses_what_is_not_a_v2_payload() {
    let f = vec![(1, fix(0)), (2, fix(1))];
    let good = encode(&batch(&f), 4096).messages.remove(0).payload;
    assert!(decode(&good[..good.len() - 1]).is_err(), "cut short");
    assert!(decode(b"{\"v\":1}").is_err(), "JSON");
    let mut extra = good.clone();
    extra.push(0);
    assert!(decode(&extra).is_err(), "trailing bytes");
    let mut v3 = good.clone();
    v3[3] = 0x03;
    assert!(matches!(decode(&v3), Err(DecodeError::Shape(_))));
    assert!(decode(&[0xbf]).is_err(), "indefinite map");
    assert_eq!(decode(&[]).unwrap_err().code(), "PAYLOAD_DECODE");
}

#[test]
fn a_message_broken_after_its_first_fixes_hands_out_none_of_them() {
    let f = vec![(1, fix(0)), (2, fix(1)), (3, fix(2))];
    let mut bytes = encode(&batch(&f), 4096).messages.remove(0).payload;
    let mut seen = Vec::new();
    let (envelope, used) = read_prefix(&bytes, &mut |seq, _| seen.push(seq)).unwrap();
    assert_eq!(
        (envelope.fixes, used, seen),
        (3, bytes.len(), vec![1, 2, 3])
    );
    // The last fix's `m` (no event column, so the message's last byte) becomes 7.
    let last = bytes.len() - 1;
    assert_eq!(bytes[last], 3, "the last fix's mode is the last byte");
    bytes[last] = 7;
    let mut seen = Vec::new();
    let err = read_prefix(&bytes, &mut |seq, _| seen.push(seq)).unwrap_err();
    assert_eq!(err, DecodeError::Shape("fix 2: m is not 2 or 3".into()));
    assert!(seen.is_empty(), "{seen:?}");
}

fn arb_fix() -> impl Strategy<Value = Fix> {
    (
        (
            1_600_000_000_000i64..4_000_000_000_000,
            -90.0f64..90.0,
            -180.0f64..180.0,
        ),
        (
            prop::option::of(-500.0f64..9000.0),
            prop::option::of(0.0f64..100.0),
            prop::option::of(0.0f64..360.0),
            prop::option::of(0.5f64..50.0),
            prop::option::of(0u8..40),
        ),
        (
            any::<bool>(),
            prop::option::of(prop::sample::select(vec![Event::Stop, Event::Start])),
        ),
    )
        .prop_map(
            |((time_ms, lat, lon), (alt_m, speed_mps, course_deg, hdop, sats), (three, event))| {
                Fix {
                    time_ms,
                    lat,
                    lon,
                    alt_m,
                    speed_mps,
                    course_deg,
                    hdop,
                    sats,
                    mode: if three {
                        FixMode::ThreeD
                    } else {
                        FixMode::TwoD
                    },
                    event,
                }
            },
        )
}

proptest! {
    #[test]
    fn every_fix_comes_back_within_the_stated_resolution(
        fixes in prop::collection::vec(arb_fix(), 1..80),
        first_seq in 1u64..1u64 << 40,
        gaps in prop::collection::vec(1u64..1000, 80),
        limit in 200usize..4096,
    ) {
        let mut seq = first_seq;
        let batch_fixes: Vec<(u64, Fix)> = fixes.iter().zip(&gaps).map(|(f, g)| { seq += g; (seq, *f) }).collect();
        let enc = encode(&batch(&batch_fixes), limit);
        prop_assert!(enc.dead_letters.is_empty());
        let mut back = Vec::new();
        for m in &enc.messages {
            prop_assert!(m.payload.len() <= limit);
            let d = decode(&m.payload).unwrap();
            prop_assert_eq!(d.device, None);
            prop_assert_eq!(d.stream.as_str(), STREAM);
            back.extend(d.fixes);
        }
        prop_assert_eq!(back.len(), batch_fixes.len());
        for ((s0, a), (s1, b)) in batch_fixes.iter().zip(&back) {
            prop_assert_eq!(s0, s1);
            prop_assert_eq!(a.time_ms, b.time_ms);
            prop_assert!((a.lat - b.lat).abs() <= 0.5e-7 + 1e-12);
            prop_assert!((a.lon - b.lon).abs() <= 0.5e-7 + 1e-12);
            let close = |x: Option<f64>, y: Option<f64>, res: f64| match (x, y) {
                (None, None) => true,
                (Some(x), Some(y)) => (x - y).abs() <= res / 2.0 + 1e-9,
                _ => false,
            };
            prop_assert!(close(a.alt_m, b.alt_m, 0.1));
            prop_assert!(close(a.speed_mps, b.speed_mps, 0.01));
            prop_assert!(close(a.hdop, b.hdop, 0.1));
            // A course of 359.96 comes back as 0.0: the same direction.
            prop_assert!(close(a.course_deg.map(|c| (c * 10.0).round().rem_euclid(3600.0) / 10.0), b.course_deg, 0.1));
            prop_assert_eq!(a.sats, b.sats);
            prop_assert_eq!(a.mode, b.mode);
            prop_assert_eq!(a.event, b.event);
        }
    }

    #[test]
    fn the_decoder_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode(&bytes);
    }
}
