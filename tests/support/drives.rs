//! Simulated drives as the report stage sees them: the simulator's NMEA through the real
//! decoder and validator, and receiver noise added to the accepted fixes (a seeded
//! Gauss-Markov wander plus white jitter, as a receiver under an open sky or in a street
//! canyon shows), until the simulator's own noise model lands.

#![allow(dead_code)]

use gps_agent::config::ValidateSettings;
use gps_agent::fix::Fix;
use gps_agent::gnss::{Decoded, Decoder};
use gps_agent::report::cone::{distance_m, Frame};
use gps_agent::sim::{Drive, DriveSpec};
use gps_agent::validate::Validator;

/// The accepted fixes of a simulated drive.
pub fn accepted(spec: DriveSpec) -> Vec<Fix> {
    let mut bytes = Vec::new();
    for epoch in Drive::new(spec).expect("a valid spec") {
        epoch.write_nmea(&mut bytes);
    }
    decode(&bytes)
}

/// The fixes the agent accepts from NMEA text (its decoder and validator, default settings).
pub fn decode(nmea: &[u8]) -> Vec<Fix> {
    let mut decoder = Decoder::new(true);
    let mut validator = Validator::new(ValidateSettings::default());
    let mut fixes = Vec::new();
    let mut events = Vec::new();
    decoder.feed(nmea, &mut |e| events.push(e));
    decoder.finish(&mut |e| events.push(e));
    for e in events {
        if let Decoded::Epoch(epoch) = e {
            validator.push(&epoch, &mut |verdict| fixes.extend(verdict.ok()));
        }
    }
    validator.finish(&mut |verdict| fixes.extend(verdict.ok()));
    fixes
}

/// The accepted fixes of the simulator's half-hour tour (seed) as a good receiver under an
/// open sky reports them.
pub fn tour(seed: u64) -> Vec<Fix> {
    let clean = accepted(DriveSpec {
        seed,
        ..DriveSpec::tour()
    });
    noisy(&clean, Noise::OPEN_SKY, seed)
}

/// How noisy a receiver is.
#[derive(Debug, Clone, Copy)]
pub struct Noise {
    /// Standard deviation of the slowly wandering part, metres (per axis).
    pub wander_m: f64,
    /// Its correlation time, seconds.
    pub tau_s: f64,
    /// Standard deviation of the epoch-to-epoch jitter, metres.
    pub jitter_m: f64,
    /// Standard deviation of the speed error, m/s (speeds stay at or above 0).
    pub speed_mps: f64,
}

impl Noise {
    /// A good receiver under an open sky.
    pub const OPEN_SKY: Noise = Noise {
        wander_m: 1.5,
        tau_s: 60.0,
        jitter_m: 0.3,
        speed_mps: 0.05,
    };
    /// A street canyon: metres of multipath wander.
    pub const CANYON: Noise = Noise {
        wander_m: 4.0,
        tau_s: 20.0,
        jitter_m: 1.0,
        speed_mps: 0.2,
    };
}

/// A small seeded generator (PCG-like) with normal draws.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// `fixes` with receiver noise added (positions and speeds), seeded.
pub fn noisy(fixes: &[Fix], noise: Noise, seed: u64) -> Vec<Fix> {
    let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
    let (mut wx, mut wy) = (0.0, 0.0);
    let mut last_ms: Option<i64> = None;
    fixes
        .iter()
        .map(|f| {
            let dt = last_ms.map_or(1.0, |t| ((f.time_ms - t) as f64 / 1000.0).max(0.0));
            last_ms = Some(f.time_ms);
            // First-order Gauss-Markov: stationary deviation `wander_m`.
            let a = (-dt / noise.tau_s).exp();
            let b = noise.wander_m * (1.0 - a * a).sqrt();
            wx = a * wx + b * rng.normal();
            wy = a * wy + b * rng.normal();
            let (jx, jy) = (noise.jitter_m * rng.normal(), noise.jitter_m * rng.normal());
            let (lat, lon) = Frame::at(f.lat, f.lon).position(wx + jx, wy + jy);
            Fix {
                lat,
                lon,
                speed_mps: f
                    .speed_mps
                    .map(|v| (v + noise.speed_mps * rng.normal()).abs()),
                ..*f
            }
        })
        .collect()
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

/// `fixes` as a receiver would print them: an RMC and a GGA per fix, with checksums, 6
/// decimals of arc minutes (about 2 mm), so the agent reads back what was written.
pub fn nmea(fixes: &[Fix]) -> String {
    nmea_keeping(fixes, |_| true)
}

/// As [`nmea`], but an epoch whose index `keep` refuses is printed as a receiver without a
/// fix prints it (RMC status V, GGA quality 0): the agent rejects it (`no_fix`) while its
/// time still runs at the receiver's rate, so a replay of the fixes fixed rules keep is
/// paced as the drive was.
pub fn nmea_keeping(fixes: &[Fix], keep: impl Fn(usize) -> bool) -> String {
    use std::fmt::Write as _;
    fn angle(value: f64, degree_digits: usize, pos: char, neg: char) -> String {
        let hemisphere = if value < 0.0 { neg } else { pos };
        let v = value.abs();
        let degrees = v.trunc();
        let minutes = (v - degrees) * 60.0;
        format!(
            "{:0width$}{:09.6},{hemisphere}",
            degrees as u32,
            minutes,
            width = degree_digits
        )
    }
    fn line(out: &mut String, body: &str) {
        let sum = body.bytes().fold(0u8, |a, b| a ^ b);
        let _ = write!(out, "${body}*{sum:02X}\r\n");
    }
    let mut out = String::new();
    for (i, f) in fixes.iter().enumerate() {
        let t = chrono::DateTime::from_timestamp_millis(f.time_ms).unwrap_or_default();
        let hms = t.format("%H%M%S%.3f");
        if !keep(i) {
            line(
                &mut out,
                &format!("GPRMC,{hms},V,,,,,,,{},,,N", t.format("%d%m%y")),
            );
            line(&mut out, &format!("GPGGA,{hms},,,,,0,00,,,M,,M,,"));
            continue;
        }
        let (lat, lon) = (angle(f.lat, 2, 'N', 'S'), angle(f.lon, 3, 'E', 'W'));
        let knots = f.speed_mps.unwrap_or(0.0) * 3600.0 / 1852.0;
        let course = f.course_deg.map_or(String::new(), |c| format!("{c:.2}"));
        line(
            &mut out,
            &format!(
                "GPRMC,{hms},A,{lat},{lon},{knots:.3},{course},{},,,A",
                t.format("%d%m%y")
            ),
        );
        line(
            &mut out,
            &format!(
                "GPGGA,{hms},{lat},{lon},1,{:02},{:.2},{:.1},M,46.9,M,,",
                f.sats.unwrap_or(8),
                f.hdop.unwrap_or(1.0),
                f.alt_m.unwrap_or(500.0)
            ),
        );
    }
    out
}
