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

/// A lean v2 message (`v`, `s` as 16 bytes, the columns) in the header form agents before
/// the lean header wrote: `d` the device id, `s` the stream id as 32 hex characters.
fn with_full_header(lean: &[u8], device: &str) -> Vec<u8> {
    assert_eq!(
        lean[1..7],
        [0x61, b'v', 0x02, 0x61, b's', 0x50],
        "a lean header"
    );
    let (id, columns) = lean[7..].split_at(16);
    let mut full = vec![lean[0] + 1];
    full.extend_from_slice(&[0x61, b'v', 0x02, 0x61, b'd', 0x60 + device.len() as u8]);
    full.extend_from_slice(device.as_bytes());
    full.extend_from_slice(&[0x61, b's', 0x78, 0x20]);
    full.extend(id.iter().flat_map(|b| format!("{b:02x}").into_bytes()));
    full.extend_from_slice(columns);
    full
}

#[test]
fn a_capture_decodes_to_the_same_fixes_in_both_header_forms() {
    let fixes = kept();
    let dir = tempfile::tempdir().unwrap();
    let (lean, full) = (dir.path().join("lean.bin"), dir.path().join("full.bin"));
    capture(&fixes, true, &lean);
    let bytes = std::fs::read(&lean).unwrap();
    let mut old = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (_, used) = cbor::read_prefix(&bytes[at..], &mut |_, _| {}).unwrap();
        old.extend(with_full_header(&bytes[at..at + used], "truck-042"));
        old.push(b'\n');
        at += used + 1;
    }
    std::fs::write(&full, &old).unwrap();
    let (from_lean, err, code) = decode(&lean);
    assert_eq!(code, 0, "{err}");
    let (from_full, err_full, code) = decode(&full);
    assert_eq!(code, 0, "{err_full}");
    assert_eq!(from_lean.len(), fixes.len());
    assert_eq!(from_lean, from_full);
    // 29 bytes a message more in the old form: `d` and `s` as text.
    let messages = fixes.len().div_ceil(50);
    assert_eq!(old.len() - bytes.len(), 29 * messages);
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

/// `gps-agent decode FILE` with its address space limited to `limit_kib` KiB (as `ulimit -v`
/// does): the exit code (`None` when a signal ended it: an allocation failure aborts) and
/// stderr.
fn decode_within(path: &Path, limit_kib: u64) -> (Option<i32>, String) {
    use std::os::unix::process::CommandExt;
    let limit = limit_kib * 1024;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gps-agent"));
    cmd.arg("decode").arg(path);
    // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
    unsafe {
        cmd.pre_exec(move || {
            let rl = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &rl) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A v2 map whose `q` column is `body`.
fn cbor_q_column(body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xa1, 0x61, b'q'];
    m.extend_from_slice(body);
    m
}

#[test]
fn arrays_nested_sixteen_deep_each_claiming_a_million_items_exit_65_under_ulimit_v_500000() {
    // 1 MiB of `array of 1,000,000 items` heads: each claim is within the bytes left, so a
    // decoder that reserves room for what is claimed asks for 32 MB per level.
    let claim = [0x9a, 0x00, 0x0f, 0x42, 0x40];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested.bin");
    let heads = claim.repeat(1024 * 1024 / claim.len() + 1);
    std::fs::write(&path, cbor_q_column(&heads)).unwrap();
    let (code, err) = decode_within(&path, 500_000);
    assert_eq!(code, Some(65), "{err}");
    assert!(
        err.starts_with("gps-agent decode: message 0 (byte 0): "),
        "{err}"
    );
}

#[test]
fn a_column_claiming_32_million_items_costs_no_more_memory_than_its_bytes() {
    // 32 MB of zeros (each an integer 0) in a `q` column that claims all of them, in a map
    // without `v`: 65 without holding 32 M decoded items (a gigabyte at 32 bytes each).
    let n: u32 = 32 * 1024 * 1024;
    let mut body = vec![0x9a];
    body.extend_from_slice(&n.to_be_bytes());
    body.resize(body.len() + n as usize, 0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zeros.bin");
    std::fs::write(&path, cbor_q_column(&body)).unwrap();
    let (code, err) = decode_within(&path, 400_000);
    assert_eq!(code, Some(65), "{err}");
    assert!(err.contains("v is None, not 2"), "{err}");
}

#[test]
fn a_json_fixes_array_of_twelve_million_numbers_exits_65_at_its_first_element() {
    // `{"v":1,"fixes":[0,0,...]}`, 24 MB: a decoder that builds the document's tree first
    // holds 12 M values of 32 bytes before it looks at one.
    let mut text = b"{\"v\":1,\"fixes\":[".to_vec();
    text.extend_from_slice(&b"0,".repeat(12 * 1024 * 1024));
    text.extend_from_slice(b"0]}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("numbers.json");
    std::fs::write(&path, text).unwrap();
    let (code, err) = decode_within(&path, 400_000);
    assert_eq!(code, Some(65), "{err}");
    assert!(
        err.contains("fix 0: invalid type: integer `0`, expected a fix object"),
        "{err}"
    );
}
