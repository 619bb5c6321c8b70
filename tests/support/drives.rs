//! Simulated drives as the report stage sees them: the simulator's NMEA through the real
//! decoder and validator, and receiver noise added to the accepted fixes (a seeded
//! Gauss-Markov wander plus white jitter, as a receiver under an open sky or in a street
//! canyon shows), until the simulator's own noise model lands.

#![allow(dead_code)]

use gps_agent::config::ValidateConfig;
use gps_agent::fix::Fix;
use gps_agent::gnss::{Decoded, Decoder};
use gps_agent::report::cone::Frame;
use gps_agent::sim::{Drive, DriveSpec};
use gps_agent::validate::Validator;

/// The accepted fixes of a simulated drive.
pub fn accepted(spec: DriveSpec) -> Vec<Fix> {
    let mut decoder = Decoder::new(true);
    let mut validator = Validator::new(ValidateConfig::default());
    let mut fixes = Vec::new();
    let mut bytes = Vec::new();
    let mut take = |e: Decoded, fixes: &mut Vec<Fix>| {
        if let Decoded::Epoch(epoch) = e {
            validator.push(&epoch, &mut |verdict| fixes.extend(verdict.ok()));
        }
    };
    let mut events = Vec::new();
    for epoch in Drive::new(spec).expect("a valid spec") {
        bytes.clear();
        epoch.write_nmea(&mut bytes);
        decoder.feed(&bytes, &mut |e| events.push(e));
        for e in events.drain(..) {
            take(e, &mut fixes);
        }
    }
    decoder.finish(&mut |e| events.push(e));
    for e in events.drain(..) {
        take(e, &mut fixes);
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
