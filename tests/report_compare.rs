//! The README's comparison: every fix as JSON, fixed rules as Teltonika, Queclink and Traccar
//! Client send (a fix every 30 s, or after 100 m, or a 10 degree turn above 10 km/h), and the
//! adaptive policy with the compact payload, over the tour (city, roundabouts, highway, a
//! parked spell; 1 Hz, a good receiver's noise, four seeds). Kept share, largest error of
//! the redrawn track while moving, payload per driving hour.
//!
//! `cargo test --release --test report_compare -- --nocapture` prints the table.

mod support;

use gps_agent::report::measure::{max_and_p95, payload_bytes, run, Batching, Run};
use gps_agent::report::{Counts, Settings};
use support::drives::{decode, fixed_rules, nmea, nmea_keeping, tour};

fn adaptive(max_error_m: f64) -> Settings {
    Settings::adaptive(max_error_m)
}

struct Row {
    accepted: usize,
    kept: usize,
    max_error_m: f64,
    hours: f64,
    json_50: usize,
    cbor_50: usize,
    cbor_minute: usize,
}

fn row(r: &Run, moving: &[bool], hours: f64) -> Row {
    let errors: Vec<Option<f64>> = r
        .errors(false)
        .into_iter()
        .zip(moving)
        .map(|(e, m)| e.filter(|_| *m))
        .collect();
    let (j, c, _) = payload_bytes(&r.sent, "truck-042", Batching::Count(50));
    let (_, m, _) = payload_bytes(&r.sent, "truck-042", Batching::Every(60_000));
    Row {
        accepted: r.accepted.len(),
        kept: r.sent.len(),
        max_error_m: max_and_p95(&errors).0,
        hours,
        json_50: j,
        cbor_50: c,
        cbor_minute: m,
    }
}

fn add(a: &mut Row, b: Row) {
    a.accepted += b.accepted;
    a.kept += b.kept;
    a.max_error_m = a.max_error_m.max(b.max_error_m);
    a.hours += b.hours;
    a.json_50 += b.json_50;
    a.cbor_50 += b.cbor_50;
    a.cbor_minute += b.cbor_minute;
}

#[test]
fn adaptive_reporting_beats_fixed_rules_on_error_and_bytes() {
    let zero = || Row {
        accepted: 0,
        kept: 0,
        max_error_m: 0.0,
        hours: 0.0,
        json_50: 0,
        cbor_50: 0,
        cbor_minute: 0,
    };
    let (mut all, mut fixed, mut a10, mut a25) = (zero(), zero(), zero(), zero());
    for seed in [2026u64, 1, 2, 3] {
        let fixes = tour(seed);
        let hours = (fixes[fixes.len() - 1].time_ms - fixes[0].time_ms) as f64 / 3_600_000.0;
        let adaptive10 = run(adaptive(10.0), &fixes);
        // Errors are compared while moving: parked wander is nobody's track.
        let moving: Vec<bool> = adaptive10.parked().iter().map(|p| !p).collect();
        let every = run(
            Settings {
                adaptive: false,
                ..adaptive(10.0)
            },
            &fixes,
        );
        let kept = fixed_rules(&fixes);
        let teltonika = Run {
            settings: adaptive(10.0),
            accepted: fixes.clone(),
            sent: kept.iter().map(|&i| fixes[i]).collect(),
            kept,
            counts: Counts::default(),
        };
        add(&mut all, row(&every, &moving, hours));
        add(&mut fixed, row(&teltonika, &moving, hours));
        add(&mut a10, row(&adaptive10, &moving, hours));
        add(&mut a25, row(&run(adaptive(25.0), &fixes), &moving, hours));
    }
    println!("| policy | kept share | max error while moving | payload per driving hour, batches of 50 | one message a minute |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, r, compact) in [
        ("every fix, JSON", &all, false),
        ("fixed rules 30 s / 100 m / 10 deg, JSON", &fixed, false),
        ("fixed rules 30 s / 100 m / 10 deg, CBOR", &fixed, true),
        ("adaptive 10 m, CBOR", &a10, true),
        ("adaptive 25 m, CBOR", &a25, true),
    ] {
        let per_hour = |b: usize| b as f64 / r.hours / 1000.0;
        let batch = if compact { r.cbor_50 } else { r.json_50 };
        let minute = if compact {
            format!("{:.1} KB", per_hour(r.cbor_minute))
        } else {
            "-".into()
        };
        println!(
            "| {name} | {:.1}% | {:.2} m | {:.1} KB | {minute} |",
            100.0 * r.kept as f64 / r.accepted as f64,
            r.max_error_m,
            per_hour(batch)
        );
    }
    assert!(a10.max_error_m <= 10.0);
    assert!(
        a10.max_error_m < fixed.max_error_m,
        "adaptive bounds the error, fixed rules do not"
    );
    assert!(a10.cbor_50 < fixed.cbor_50, "and sends fewer bytes");
}

/// The wire bench (benches/wire.rs) feeds the daemon these fixes as NMEA: what the agent
/// reads back must be the drive, to the printed precision.
#[test]
fn the_nmea_printed_for_a_drive_reads_back_as_the_same_fixes() {
    let fixes = tour(7);
    let back = decode(&nmea(&fixes));
    assert_eq!(back.len(), fixes.len());
    for (a, b) in fixes.iter().zip(&back) {
        assert_eq!(a.time_ms, b.time_ms);
        assert!(
            (a.lat - b.lat).abs() < 1e-7 && (a.lon - b.lon).abs() < 1e-7,
            "{a:?} {b:?}"
        );
        assert!((a.speed_mps.unwrap_or(0.0) - b.speed_mps.unwrap_or(0.0)).abs() < 0.001);
        assert_eq!(a.sats, b.sats);
    }
    // The fixes fixed rules keep, the other epochs printed without a fix: exactly the kept
    // ones are accepted.
    let kept = fixed_rules(&fixes);
    let set: std::collections::HashSet<usize> = kept.iter().copied().collect();
    let back = decode(&nmea_keeping(&fixes, |i| set.contains(&i)));
    let times: Vec<i64> = back.iter().map(|f| f.time_ms).collect();
    let want: Vec<i64> = kept.iter().map(|&i| fixes[i].time_ms).collect();
    assert_eq!(times, want);
}
