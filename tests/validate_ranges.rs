//! Absurd values with valid checksums (issue 14, item 5), through the real binary: `gps-agent
//! parse` rejects each impossible field as `out_of_range` or drops it from the fix, and the
//! daemon publishes exactly the numbers `parse` prints for the same sentences.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;
use support::agent::Agent;
use support::broker::{Subscriber, TestBroker};

/// `$body*hh\r\n` with the right checksum.
fn sentence(body: &str) -> String {
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}\r\n")
}

/// One epoch of a parked receiver at second `s` after 08:00:00 on 2024-03-18, with the
/// RMC and GGA fields that differ given.
struct Epoch<'a> {
    s: u32,
    lat: &'a str,
    knots: &'a str,
    course: &'a str,
    hdop: &'a str,
    alt: &'a str,
}

const GOOD: Epoch<'static> = Epoch {
    s: 0,
    lat: "4808.2200",
    knots: "0.05",
    course: "",
    hdop: "1.10",
    alt: "519.4",
};

fn epoch(e: &Epoch) -> String {
    let t = format!("0800{:02}.00", e.s);
    sentence(&format!(
        "GPRMC,{t},A,{},N,01134.5000,E,{},{},180324,,,A",
        e.lat, e.knots, e.course
    )) + &sentence(&format!(
        "GPGGA,{t},{},N,01134.5000,E,1,09,{},{},M,47.0,M,,",
        e.lat, e.hdop, e.alt
    ))
}

/// The capture: good epochs around each absurd one, and what `parse` must say of each
/// second (`None`: a fix).
fn capture() -> (String, Vec<(u32, Option<&'static str>)>) {
    let absurd: [(Epoch, Option<&str>); 8] = [
        (
            Epoch {
                knots: "1e30",
                ..GOOD
            },
            Some("out_of_range"),
        ),
        (
            Epoch {
                knots: "-50.0",
                ..GOOD
            },
            Some("out_of_range"),
        ),
        (
            Epoch {
                course: "-720.0",
                ..GOOD
            },
            Some("out_of_range"),
        ),
        (
            Epoch {
                alt: "-100000000.0",
                ..GOOD
            },
            Some("out_of_range"),
        ),
        (
            Epoch {
                alt: "1e308",
                ..GOOD
            },
            Some("out_of_range"),
        ),
        (
            Epoch {
                lat: "4860.0000",
                ..GOOD
            },
            Some("out_of_range"),
        ),
        // Kept, without the field: an HDOP no geometry gives.
        (
            Epoch {
                hdop: "1e-320",
                ..GOOD
            },
            None,
        ),
        // Kept, course 0: 360° is north.
        (
            Epoch {
                course: "360.0",
                knots: "0.5",
                ..GOOD
            },
            None,
        ),
    ];
    let mut text = String::new();
    let mut expected = Vec::new();
    let mut s = 0;
    for (bad, outcome) in absurd {
        for e in [Epoch { s, ..GOOD }, Epoch { s: s + 1, ..bad }] {
            text += &epoch(&e);
        }
        expected.push((s, None));
        expected.push((s + 1, outcome));
        s += 2;
    }
    text += &epoch(&Epoch { s, ..GOOD });
    expected.push((s, None));
    (text, expected)
}

/// Second of the minute of an RFC 3339 time `2024-03-18T08:00:ss.000Z`.
fn second(time: &str) -> u32 {
    time[17..19].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_and_the_payload_print_the_same_numbers_and_refuse_the_same_values() {
    let dir = tempfile::tempdir().unwrap();
    let (text, expected) = capture();
    let log = dir.path().join("absurd.nmea");
    std::fs::write(&log, &text).unwrap();

    // parse --all: one line per epoch, in receiver order.
    let out = Command::new(env!("CARGO_BIN_EXE_gps-agent"))
        .env_remove("GPS_AGENT_CONFIG")
        .args(["parse", "--all"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), expected.len(), "{lines:#?}");
    let mut parsed: BTreeMap<u32, Value> = BTreeMap::new();
    for (line, (s, outcome)) in lines.iter().zip(&expected) {
        match outcome {
            Some(reason) => assert_eq!(line["rejected"], *reason, "second {s}: {line}"),
            None => {
                assert!(line.get("rejected").is_none(), "second {s}: {line}");
                assert_eq!(second(line["time"].as_str().unwrap()), *s);
                parsed.insert(*s, line.clone());
            }
        }
    }
    assert!(parsed[&13].get("hdop").is_none(), "{}", parsed[&13]);
    assert_eq!(parsed[&15]["course_deg"], 0.0, "{}", parsed[&15]);
    assert_eq!(parsed[&12]["hdop"], 1.1);

    // The daemon: the same capture replayed, the fixes as the broker receives them.
    let broker = TestBroker::start();
    let device = support::unique("truck");
    let mut sub = Subscriber::start(&broker, &format!("fleet/{device}/fixes")).await;
    let agent = Agent::replay(
        dir.path(),
        &device,
        &broker.url(),
        &log.display().to_string(),
    );
    let mut published: BTreeMap<u32, Value> = BTreeMap::new();
    let _ = support::wait::poll_async(Duration::from_secs(30), async || {
        if let Some(msg) = sub.next(Duration::from_millis(100)).await {
            let v: Value = serde_json::from_slice(&msg.payload).unwrap();
            for f in v["fixes"].as_array().unwrap() {
                published.insert(second(f["time"].as_str().unwrap()), f.clone());
            }
        }
        published.len() >= parsed.len()
    })
    .await;
    let (exit, _) = agent.terminate();
    assert_eq!(exit, 0);
    assert_eq!(
        published.keys().collect::<Vec<_>>(),
        parsed.keys().collect::<Vec<_>>()
    );
    for (s, fix) in &parsed {
        let mut theirs = published[s].clone();
        let mut ours = fix.clone();
        // The seq is each output's own numbering (parse: 0-based index; buffer: its rowid).
        for v in [&mut theirs, &mut ours] {
            v.as_object_mut().unwrap().remove("seq");
        }
        assert_eq!(theirs, ours, "second {s}");
    }
}
