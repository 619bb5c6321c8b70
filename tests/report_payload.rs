//! What the kept fixes cost on the wire's payload: the compact v2 against JSON over the tour
//! (city, roundabouts, highway, a parked spell) at 1 Hz with adaptive reporting.

mod support;

use gps_agent::fix::Fix;
use gps_agent::report::measure::run;
use gps_agent::report::Settings;
use gps_agent::sim::DriveSpec;
use gps_agent::uplink::payload::FixBatch;
use gps_agent::uplink::{cbor, payload};
use support::drives::{accepted, noisy, Noise};

fn settings() -> Settings {
    Settings {
        adaptive: true,
        max_error_m: 10.0,
        max_interval_ms: 60_000,
        parked_interval_ms: 900_000,
        stop_speed_mps: 0.8,
        stop_after_ms: 30_000,
    }
}

/// Bytes of the messages of `batches` in one encoding.
fn bytes(batches: &[Vec<(u64, Fix)>], compact: bool) -> usize {
    batches
        .iter()
        .map(|b| {
            let batch = FixBatch {
                device: "truck-042",
                stream: "0123456789abcdef0123456789abcdef",
                fixes: b,
            };
            let enc = if compact {
                cbor::encode(&batch, 64 * 1024)
            } else {
                payload::encode(&batch, 64 * 1024)
            };
            enc.messages.iter().map(|m| m.payload.len()).sum::<usize>()
        })
        .sum()
}

/// The kept fixes of the tour (seed), numbered as the buffer numbers them.
fn kept(seed: u64) -> Vec<(u64, Fix)> {
    let fixes = noisy(
        &accepted(DriveSpec {
            seed,
            ..DriveSpec::tour()
        }),
        Noise::OPEN_SKY,
        seed,
    );
    run(settings(), &fixes)
        .sent
        .into_iter()
        .enumerate()
        .map(|(i, f)| (i as u64 + 1, f))
        .collect()
}

/// Messages of `batch_max` fixes, as the uplink takes them from a backlog.
fn by_count(kept: &[(u64, Fix)], batch_max: usize) -> Vec<Vec<(u64, Fix)>> {
    kept.chunks(batch_max).map(<[_]>::to_vec).collect()
}

/// One message per minute of receiver time, as a live fix waiting up to 60 s for company
/// would make them.
fn by_minute(kept: &[(u64, Fix)]) -> Vec<Vec<(u64, Fix)>> {
    let mut out: Vec<Vec<(u64, Fix)>> = Vec::new();
    let Some(t0) = kept.first().map(|k| k.1.time_ms) else {
        return out;
    };
    for k in kept {
        let minute = (k.1.time_ms - t0) / 60_000;
        match out.last_mut() {
            Some(b) if (b[0].1.time_ms - t0) / 60_000 == minute => b.push(*k),
            _ => out.push(vec![*k]),
        }
    }
    out
}

#[test]
fn a_kept_fix_costs_at_most_24_bytes_in_v2_in_batches_of_batch_max() {
    let (mut fixes, mut v2, mut v1, mut v2_minute, mut messages_minute) = (0, 0, 0, 0, 0);
    for seed in [2026u64, 1, 2, 3] {
        let k = kept(seed);
        let batches = by_count(&k, 50);
        let (c, j) = (bytes(&batches, true), bytes(&batches, false));
        let minute = by_minute(&k);
        let m = bytes(&minute, true);
        println!(
            "seed {seed}: {} kept fixes; batches of 50: v2 {:.1} B/fix, v1 {:.1} B/fix; one message a minute ({} messages): v2 {:.1} B/fix",
            k.len(),
            c as f64 / k.len() as f64,
            j as f64 / k.len() as f64,
            minute.len(),
            m as f64 / k.len() as f64
        );
        assert!(c * 6 < j, "v2 is a sixth of JSON or less");
        (fixes, v2, v1) = (fixes + k.len(), v2 + c, v1 + j);
        (v2_minute, messages_minute) = (v2_minute + m, messages_minute + minute.len());
    }
    let per_fix = v2 as f64 / fixes as f64;
    println!(
        "four tours: {fixes} kept fixes, v2 {per_fix:.2} B/fix (v1 {:.1}) in batches of 50; {:.1} B/fix in {messages_minute} one-a-minute messages",
        v1 as f64 / fixes as f64,
        v2_minute as f64 / fixes as f64
    );
    assert!(per_fix <= 24.0, "{per_fix} bytes per kept fix");
}
