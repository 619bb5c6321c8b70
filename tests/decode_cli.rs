//! `gps-agent decode` through the real binary: captured v2 (CBOR) and v1 (JSON) messages of a
//! simulated drive's kept fixes come back as the same fix JSON lines, within the compact
//! payload's stated resolution; broken input exits 65, a missing file 66.

mod support;

use gps_agent::fix::{Fix, Numbered};
use gps_agent::report::measure::run;
use gps_agent::report::Settings;
use gps_agent::uplink::payload::FixBatch;
use gps_agent::uplink::{cbor, payload};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use support::drives::tour;

/// The kept fixes of the tour (adaptive, 10 m), numbered as the buffer would number them.
fn kept() -> Vec<(u64, Fix)> {
    let fixes = tour(1);
    let s = Settings::adaptive(10.0);
    run(s, &fixes)
        .sent
        .into_iter()
        .enumerate()
        .map(|(i, f)| (i as u64 + 1, f))
        .collect()
}

/// Messages of at most 50 fixes each, saved one after the other with a newline between
/// (as `mosquitto_sub` prints them).
fn capture(fixes: &[(u64, Fix)], cbor: bool, path: &Path) {
    let mut out = Vec::new();
    for chunk in fixes.chunks(50) {
        let batch = FixBatch {
            device: "truck-042",
            stream: "0123456789abcdef0123456789abcdef",
            fixes: chunk,
        };
        let enc = if cbor {
            cbor::encode(&batch, 64 * 1024)
        } else {
            payload::encode(&batch, 64 * 1024)
        };
        for m in enc.messages {
            out.extend_from_slice(&m.payload);
            out.push(b'\n');
        }
    }
    std::fs::write(path, out).unwrap();
}

fn decode(path: &Path) -> (Vec<Value>, String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_gps-agent"))
        .arg("decode")
        .arg(path)
        .output()
        .unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn a_captured_v2_message_decodes_to_the_json_fixes_within_the_resolution() {
    let fixes = kept();
    assert!(
        fixes.iter().any(|(_, f)| f.event.is_some()),
        "the tour has stops"
    );
    let dir = tempfile::tempdir().unwrap();
    let (v2, v1) = (dir.path().join("v2.bin"), dir.path().join("v1.json"));
    capture(&fixes, true, &v2);
    capture(&fixes, false, &v1);
    let (from_v2, err, code) = decode(&v2);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("v2 CBOR"), "{err}");
    let (from_v1, _, code) = decode(&v1);
    assert_eq!(code, 0);
    let json: Vec<Value> = fixes
        .iter()
        .map(|(seq, fix)| serde_json::to_value(Numbered { seq: *seq, fix }).unwrap())
        .collect();
    // v1: the same JSON (floats to the last digit serde_json's parser keeps).
    same_fixes(&json, &from_v1, 1e-9);
    // v2: within the compact payload's resolution.
    same_fixes(&json, &from_v2, 1.0);
}

/// Fix lines equal: exactly for integers, strings and events; floats within `scale` times
/// the v2 resolution of each key.
fn same_fixes(sent: &[Value], got: &[Value], scale: f64) {
    assert_eq!(sent.len(), got.len());
    for (a, b) in sent.iter().zip(got) {
        for key in ["seq", "time", "sats", "mode", "event"] {
            assert_eq!(a.get(key), b.get(key), "{key}: {a} vs {b}");
        }
        for (key, resolution) in [
            ("lat", 1e-7),
            ("lon", 1e-7),
            ("alt_m", 0.1),
            ("speed_mps", 0.01),
            ("course_deg", 0.1),
            ("hdop", 0.1),
        ] {
            match (a.get(key), b.get(key)) {
                (None, None) => {}
                (Some(x), Some(y)) => {
                    let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                    let d = if key == "course_deg" {
                        (x - y).abs().min(360.0 - (x - y).abs())
                    } else {
                        (x - y).abs()
                    };
                    assert!(d <= scale * resolution / 2.0 + 1e-9, "{key}: {x} vs {y}");
                }
                _ => panic!("{key} present in one only: {a} vs {b}"),
            }
        }
    }
}

#[test]
fn broken_input_exits_65_after_the_good_messages_and_a_missing_file_66() {
    let fixes = kept();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.bin");
    capture(&fixes[..10], true, &path);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0xa3, 0x61, b'v']);
    std::fs::write(&path, bytes).unwrap();
    let (lines, err, code) = decode(&path);
    assert_eq!(code, 65, "{err}");
    assert_eq!(lines.len(), 10, "the good message's fixes come out first");
    assert!(err.contains("message 1"), "{err}");
    let (_, _, code) = decode(&dir.path().join("missing"));
    assert_eq!(code, 66);
}
