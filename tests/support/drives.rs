//! Simulated drives as the report stage sees them: the simulator's NMEA (with its receiver
//! noise where asked) through the agent's pipeline; fixes printed back as the simulator
//! prints a receiver's epochs; the fixed rules trackers send by, for comparison.

#![allow(dead_code)]

use gps_agent::config::ValidateConfig;
use gps_agent::fix::Fix;
use gps_agent::report::cone::distance_m;
use gps_agent::sim::{write_reading, Drive, DriveSpec, NoiseSpec, Reading};

/// The accepted fixes of a simulated drive.
pub fn accepted(spec: DriveSpec) -> Vec<Fix> {
    let mut bytes = Vec::new();
    for epoch in Drive::new(spec).expect("a valid spec") {
        epoch.write_nmea(&mut bytes);
    }
    decode(&bytes)
}

/// The fixes the agent accepts from NMEA text (its pipeline, default settings).
pub fn decode(nmea: &[u8]) -> Vec<Fix> {
    gps_agent::pipeline::verdicts(nmea, true, &ValidateConfig::default())
        .into_iter()
        .filter_map(Result::ok)
        .collect()
}

/// The accepted fixes of the simulator's half-hour tour (seed) with the simulator's noise of
/// a good receiver under an open sky.
pub fn tour(seed: u64) -> Vec<Fix> {
    accepted(DriveSpec {
        seed,
        noise: Some(NoiseSpec::default()),
        ..DriveSpec::tour()
    })
}

/// Indices of the fixes fixed rules keep, as Teltonika, Queclink and Traccar Client send: 30 s
/// since the last kept, 100 m from it, or the course 10 degrees off it above 10 km/h; the
/// first and the last fix too.
pub fn fixed_rules(fixes: &[Fix]) -> Vec<usize> {
    let mut kept = vec![0];
    for (i, f) in fixes.iter().enumerate().skip(1) {
        let last = &fixes[*kept.last().unwrap_or(&0)];
        let turned = match (f.course_deg, last.course_deg) {
            (Some(a), Some(b)) if f.speed_mps.unwrap_or(0.0) > 10.0 / 3.6 => {
                let d = (a - b).rem_euclid(360.0);
                d.min(360.0 - d) >= 10.0
            }
            _ => false,
        };
        if f.time_ms - last.time_ms >= 30_000
            || distance_m(last.lat, last.lon, f.lat, f.lon) >= 100.0
            || turned
            || i == fixes.len() - 1
        {
            kept.push(i);
        }
    }
    kept
}

/// `fixes` as the simulator prints a receiver's epochs (RMC, GGA, GSA, VTG), with 6 decimals
/// of arc minutes (about 2 mm), so the agent reads back what was written.
pub fn nmea(fixes: &[Fix]) -> Vec<u8> {
    nmea_keeping(fixes, |_| true)
}

/// As [`nmea`], but an epoch whose index `keep` refuses is printed as a receiver without a
/// fix prints it (RMC status V, GGA quality 0): the agent rejects it (`no_fix`) while its
/// time still runs at the receiver's rate, so a replay of the fixes fixed rules keep is
/// paced as the drive was.
pub fn nmea_keeping(fixes: &[Fix], keep: impl Fn(usize) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in fixes.iter().enumerate() {
        let reading = Reading {
            fix: keep(i),
            alt_m: f.alt_m.unwrap_or(500.0),
            speed_mps: f.speed_mps.unwrap_or(0.0),
            course_deg: f.course_deg,
            sats: f.sats.unwrap_or(8),
            hdop: f.hdop.unwrap_or(1.0),
            precision: 6,
            ..Reading::new(f.time_ms, f.lat, f.lon)
        };
        write_reading(&reading, &mut out);
    }
    out
}
