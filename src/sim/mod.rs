//! The project's own NMEA simulator: a deterministic drive through a city, printed as the
//! sentences a GPS receiver would send, for `gps-agent demo` and for tests of the daemon.
//!
//! In: a [`DriveSpec`] (start time and place, length, rate, seed, an optional tunnel, an
//! optional rate of damaged lines, talker, precision, and opt-in receiver noise
//! ([`noise`]) and labelled faults ([`faults`])). Out: a [`Drive`], an iterator of
//! [`SimEpoch`]s; each carries the truth (where the car really was, how fast, which way, how
//! many satellites) beside the NMEA lines printed for it, so a test downstream can check that
//! every good epoch became a fix and every damaged or no-fix one did not. [`write_log`] and
//! [`write_realtime`] send the lines to a file or a pseudo-terminal.
//!
//! The same spec always gives the same bytes: all randomness comes from the seed, never from
//! the host clock or the OS. The simulator never reads the agent's code (decoder, validator):
//! it is an independent witness of what a receiver says.

pub mod faults;
mod feed;
mod motion;
pub mod noise;
mod rng;
mod sentences;

use chrono::{DateTime, Datelike};
use thiserror::Error;
use tracing::error;

use crate::error::{Classified, ErrorClass};

pub use faults::{FaultKind, FaultSpec};
pub use feed::{write_log, write_paced, write_realtime, Pacer, RealTime, STOP_POLL};
pub use motion::{Scene, SceneKind};
pub use noise::NoiseSpec;
pub use sentences::{
    checksum, Corruption, Line, Reading, SentenceKind, LINE_CAPACITY, MPS_PER_KNOT,
};

use motion::{Car, Sky};
use rng::SplitMix64;

/// Sentences printed per epoch: RMC, GGA, GSA, VTG, with room to spare.
pub const SENTENCES_PER_EPOCH: usize = 8;

/// Geoid separation printed in GGA. A constant: the simulator's altitudes are above mean sea
/// level already, and no check downstream depends on the separation.
const GEOID_SEPARATION_M: f64 = 47.0;

/// Below this speed (m/s) the receiver leaves course empty: standing still, it means nothing.
const COURSE_MIN_SPEED_MPS: f64 = 0.1;

/// Independent random streams of one seed (see `rng`).
const STREAM_MOTION: u64 = 1;
const STREAM_SKY: u64 = 2;
const STREAM_CORRUPTION: u64 = 3;
const STREAM_NOISE: u64 = 4;
const STREAM_FAULTS: u64 = 5;

/// What drive to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct DriveSpec {
    /// UTC time of the first epoch, milliseconds since the Unix epoch. Floored to the 10 ms
    /// that `hhmmss.ss` can say.
    pub start_time_ms: i64,
    /// Where the car is parked at the start, WGS84 degrees (latitude, longitude).
    pub start: (f64, f64),
    /// Altitude above mean sea level at the start, metres.
    pub start_alt_m: f64,
    /// Number of epochs (the drive lasts `epochs / rate_hz` seconds).
    pub epochs: u32,
    /// Epochs per second: 1, 5 or 10, as receivers offer.
    pub rate_hz: u8,
    /// Everything random (route, speeds, satellites, damage) follows from it.
    pub seed: u64,
    /// `(first_epoch, epochs)` without a fix: the car keeps driving, the receiver sees no sky.
    pub tunnel: Option<(u32, u32)>,
    /// Every Nth sentence of the drive is damaged (flipped digit, wrong checksum or cut short,
    /// chosen by the seed). `None`: a clean line.
    pub corrupt_every: Option<u32>,
    /// Talker id: `GP` (GPS only) or `GN` (multi-constellation).
    pub talker: [u8; 2],
    /// Decimals of minutes in latitude and longitude: 4 for ordinary receivers, up to 8 for
    /// RTK-like ones.
    pub precision_decimals: u8,
    /// Roundabouts, highway stretches and parked spells at set times; empty (city blocks
    /// only, the drive as it always was) by default.
    pub scenes: Vec<Scene>,
    /// Receiver noise (`None`: the receiver prints the truth, as every drive did before).
    pub noise: Option<NoiseSpec>,
    /// Labelled faults (`None`: none).
    pub faults: Option<FaultSpec>,
}

impl Default for DriveSpec {
    /// Ten clean minutes at 1 Hz through Munich on a March morning in 2026.
    fn default() -> Self {
        DriveSpec {
            // 2026-03-14T08:00:00Z
            start_time_ms: 1_773_475_200_000,
            start: (48.137_154, 11.576_124),
            start_alt_m: 519.0,
            epochs: 600,
            rate_hz: 1,
            seed: 2026,
            tunnel: None,
            corrupt_every: None,
            talker: *b"GP",
            precision_decimals: 4,
            scenes: Vec::new(),
            noise: None,
            faults: None,
        }
    }
}

impl DriveSpec {
    /// The demo's drive: the default ten minutes with a 25-second tunnel in the middle and a
    /// dozen damaged lines.
    pub fn demo() -> Self {
        DriveSpec {
            tunnel: Some((300, 25)),
            corrupt_every: Some(200),
            ..DriveSpec::default()
        }
    }

    /// Half an hour of everything a fleet vehicle meets, at 1 Hz: city blocks with lights
    /// and junction turns, a roundabout taken straight on, a highway stretch of ten minutes,
    /// a roundabout taken left, a five-minute parked spell, city again.
    pub fn tour() -> Self {
        let scene = |at_s, kind| Scene { at_s, kind };
        DriveSpec {
            epochs: 1800,
            scenes: vec![
                scene(240, SceneKind::Roundabout { exit_deg: 180 }),
                scene(420, SceneKind::Highway { secs: 600 }),
                scene(1080, SceneKind::Roundabout { exit_deg: 270 }),
                scene(1260, SceneKind::Parked { secs: 300 }),
            ],
            ..DriveSpec::default()
        }
    }

    /// Milliseconds between epochs.
    pub fn period_ms(&self) -> i64 {
        1000 / i64::from(self.rate_hz.max(1))
    }

    /// Whether epoch `index` is in the tunnel (no fix).
    pub fn in_tunnel(&self, index: u32) -> bool {
        match self.tunnel {
            Some((first, len)) => index >= first && index - first < len,
            None => false,
        }
    }

    fn check(&self) -> Result<(), SimError> {
        if !matches!(self.rate_hz, 1 | 5 | 10) {
            return Err(SimError::Rate {
                rate_hz: self.rate_hz,
            });
        }
        if !(1..=8).contains(&self.precision_decimals) {
            return Err(SimError::Precision {
                decimals: self.precision_decimals,
            });
        }
        if !self.talker.iter().all(u8::is_ascii_uppercase) {
            return Err(SimError::Talker {
                talker: self.talker,
            });
        }
        let (lat, lon) = self.start;
        if !(lat.abs() <= 80.0 && lon.abs() <= 180.0) {
            return Err(SimError::Start { lat, lon });
        }
        if !(-1000.0..=9000.0).contains(&self.start_alt_m) {
            return Err(SimError::Altitude {
                alt_m: self.start_alt_m,
            });
        }
        if self.corrupt_every == Some(0) {
            return Err(SimError::CorruptEvery);
        }
        for scene in &self.scenes {
            let ok = match scene.kind {
                SceneKind::Roundabout { exit_deg } => {
                    SceneKind::ROUNDABOUT_EXITS.contains(&exit_deg)
                }
                SceneKind::Highway { secs } | SceneKind::Parked { secs } => secs > 0,
            };
            if !ok || self.scenes.len() > MAX_SCENES {
                return Err(SimError::Scene { scene: *scene });
            }
        }
        if self.noise.is_some_and(|n| !n.is_valid()) {
            return Err(SimError::Noise);
        }
        if self.faults.is_some_and(|f| !f.is_valid()) {
            return Err(SimError::Faults);
        }
        let last = i64::from(self.epochs.saturating_sub(1))
            .checked_mul(self.period_ms())
            .and_then(|span| self.start_time_ms.checked_add(span));
        let two_digit_year = |ms: i64| {
            DateTime::from_timestamp_millis(ms).is_some_and(|t| (2000..=2099).contains(&t.year()))
        };
        match last {
            Some(last) if two_digit_year(self.start_time_ms) && two_digit_year(last) => Ok(()),
            _ => Err(SimError::Time {
                start_time_ms: self.start_time_ms,
                epochs: self.epochs,
            }),
        }
    }
}

/// Most scenes one drive takes.
pub const MAX_SCENES: usize = 256;

/// Why a drive cannot be simulated or fed.
#[derive(Debug, Error)]
pub enum SimError {
    #[error("rate of {rate_hz} Hz is not one receivers offer (1, 5 or 10)")]
    Rate { rate_hz: u8 },
    #[error("{decimals} decimals of minutes is outside 1..=8")]
    Precision { decimals: u8 },
    #[error("talker {talker:?} is not two upper-case ASCII letters")]
    Talker { talker: [u8; 2] },
    #[error("start {lat},{lon} is not a drivable place (|lat| <= 80, |lon| <= 180)")]
    Start { lat: f64, lon: f64 },
    #[error("start altitude {alt_m} m is outside -1000..=9000 m")]
    Altitude { alt_m: f64 },
    #[error("corrupt_every = 0 damages nothing; use None for a clean drive")]
    CorruptEvery,
    #[error("scene {scene:?} cannot be driven (roundabout exits 90/180/270/360, durations above 0, at most 256 scenes)")]
    Scene { scene: Scene },
    #[error("noise figures must be finite and not negative, the correlation time positive")]
    Noise,
    #[error("fault rate must be within 0..=0.25, with at least one kind")]
    Faults,
    #[error(
        "a drive of {epochs} epochs from {start_time_ms} ms leaves the years 2000-2099 that ddmmyy can say"
    )]
    Time { start_time_ms: i64, epochs: u32 },
    #[error("writing epoch {epoch} of the drive failed")]
    Write {
        epoch: u32,
        #[source]
        source: std::io::Error,
    },
}

impl Classified for SimError {
    fn code(&self) -> &'static str {
        match self {
            SimError::Rate { .. } => "SIM_RATE",
            SimError::Precision { .. } => "SIM_PRECISION",
            SimError::Talker { .. } => "SIM_TALKER",
            SimError::Start { .. } => "SIM_START",
            SimError::Altitude { .. } => "SIM_ALTITUDE",
            SimError::CorruptEvery => "SIM_CORRUPT_EVERY",
            SimError::Scene { .. } => "SIM_SCENE",
            SimError::Noise => "SIM_NOISE",
            SimError::Faults => "SIM_FAULTS",
            SimError::Time { .. } => "SIM_TIME",
            SimError::Write { .. } => "SIM_WRITE",
        }
    }

    fn class(&self) -> ErrorClass {
        match self {
            // The reader of the pseudo-terminal may come back; the feeder can be restarted.
            SimError::Write { .. } => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }
}

/// One printed line and what happened to it on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSentence {
    pub kind: SentenceKind,
    /// `$` to `\r\n`, as sent.
    pub line: Line,
    /// `Some` when the line was damaged: the sentence is lost to a checking reader.
    pub corruption: Option<Corruption>,
}

/// One epoch of the drive: the truth and the lines printed for it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimEpoch {
    /// 0-based position in the drive.
    pub index: u32,
    /// UTC, milliseconds since the Unix epoch: exactly the time the sentences print (but for
    /// a [`FaultKind::RepeatedTime`], which prints the time the previous epoch printed).
    pub time_ms: i64,
    /// Where the car truly was, WGS84 degrees (in a tunnel too, though nothing says so).
    pub lat: f64,
    pub lon: f64,
    /// Above mean sea level, metres.
    pub alt_m: f64,
    pub speed_mps: f64,
    /// Degrees true, `[0, 360)`. Printed only while moving.
    pub course_deg: f64,
    /// Satellites used (0 without a fix).
    pub sats: u8,
    /// As printed (2 decimals); 99.99 without a fix.
    pub hdop: f64,
    /// The receiver had a 3D fix (false in the tunnel).
    pub fix: bool,
    /// The fault injected into this epoch's lines, if any.
    pub fault: Option<FaultKind>,
    pub sentences: heapless::Vec<SimSentence, SENTENCES_PER_EPOCH>,
}

impl SimEpoch {
    /// Some line of this epoch was damaged.
    pub fn is_corrupted(&self) -> bool {
        self.sentences.iter().any(|s| s.corruption.is_some())
    }

    /// A fix, every line intact and no fault the agent must catch: it must accept it.
    pub fn is_good(&self) -> bool {
        self.fix && !self.is_corrupted() && self.fault.is_none_or(|f| f.caught_as().is_empty())
    }

    /// Append the epoch's lines, as sent, to `out`.
    pub fn write_nmea(&self, out: &mut Vec<u8>) {
        for s in &self.sentences {
            out.extend_from_slice(s.line.as_bytes());
        }
    }
}

/// A drive in progress: yields its epochs in order, then ends.
#[derive(Debug, Clone)]
pub struct Drive {
    spec: DriveSpec,
    start_time_ms: i64,
    next_index: u32,
    car: Car,
    sky: Sky,
    damage: SplitMix64,
    /// Sentences printed so far, for `corrupt_every`.
    printed: u64,
    noise: Option<noise::ReceiverNoise>,
    faults: Option<faults::Injector>,
}

impl Drive {
    /// Check the spec and park the car at its start.
    pub fn new(spec: DriveSpec) -> Result<Drive, SimError> {
        spec.check()?;
        let car = Car::parked_with(
            spec.start.0,
            spec.start.1,
            spec.start_alt_m,
            SplitMix64::new(spec.seed, STREAM_MOTION),
            &spec.scenes,
        );
        let sky = Sky::open(SplitMix64::new(spec.seed, STREAM_SKY));
        Ok(Drive {
            start_time_ms: spec.start_time_ms - spec.start_time_ms.rem_euclid(10),
            next_index: 0,
            car,
            sky,
            damage: SplitMix64::new(spec.seed, STREAM_CORRUPTION),
            printed: 0,
            noise: spec
                .noise
                .map(|n| noise::ReceiverNoise::new(n, SplitMix64::new(spec.seed, STREAM_NOISE))),
            faults: spec
                .faults
                .map(|f| faults::Injector::new(f, SplitMix64::new(spec.seed, STREAM_FAULTS))),
            spec,
        })
    }

    pub fn spec(&self) -> &DriveSpec {
        &self.spec
    }

    fn epoch(&mut self, index: u32) -> SimEpoch {
        let fix = !self.spec.in_tunnel(index);
        let time_ms = self.start_time_ms + i64::from(index) * self.spec.period_ms();
        let sats = if fix { self.sky.sats } else { 0 };
        let hdop = if fix { self.sky.hdop() } else { 99.99 };
        let car = &self.car;
        let mut reading = Reading {
            time_ms,
            fix,
            lat: car.lat,
            lon: car.lon,
            alt_m: car.alt_m,
            geoid_sep_m: GEOID_SEPARATION_M,
            speed_mps: car.speed_mps,
            course_deg: (car.speed_mps >= COURSE_MIN_SPEED_MPS).then_some(car.course_deg),
            sats,
            hdop,
            prns: self.sky.prns,
            talker: self.spec.talker,
            precision: self.spec.precision_decimals,
        };
        if let (Some(noise), true) = (&mut self.noise, fix) {
            let seen = noise.observe(
                noise::Observed {
                    lat: reading.lat,
                    lon: reading.lon,
                    alt_m: reading.alt_m,
                    speed_mps: reading.speed_mps,
                    course_deg: self.car.course_deg,
                },
                hdop,
            );
            (reading.lat, reading.lon, reading.alt_m) = (seen.lat, seen.lon, seen.alt_m);
            reading.speed_mps = seen.speed_mps;
            reading.course_deg =
                (seen.speed_mps >= COURSE_MIN_SPEED_MPS).then_some(seen.course_deg);
        }
        let fault = self.faults.as_mut().and_then(|f| f.choose(index, &reading));
        let car = &self.car;
        let mut printed = heapless::Vec::new();
        for kind in SentenceKind::ALL {
            let line = match (&self.faults, &fault) {
                (Some(injector), Some(fault)) => injector.print(kind, &reading, fault),
                _ => sentences::sentence(kind, &reading),
            };
            let Ok(line) = line else {
                // Cannot happen for a checked spec (a unit test prints the widest lines);
                // losing one line is better than stopping the drive.
                error!(
                    code = "SIM_LINE_TOO_LONG",
                    sentence = kind.as_str(),
                    epoch = index,
                    "sentence dropped"
                );
                continue;
            };
            self.printed += 1;
            let sentence = match self.spec.corrupt_every {
                Some(n) if self.printed.is_multiple_of(u64::from(n)) => {
                    let wanted = Corruption::pick(&mut self.damage);
                    match sentences::corrupt(&line, wanted, &mut self.damage) {
                        Some((bad, done)) => SimSentence {
                            kind,
                            line: bad,
                            corruption: Some(done),
                        },
                        None => SimSentence {
                            kind,
                            line,
                            corruption: None,
                        },
                    }
                }
                _ => SimSentence {
                    kind,
                    line,
                    corruption: None,
                },
            };
            if printed.push(sentence).is_err() {
                error!(
                    code = "SIM_TOO_MANY_LINES",
                    epoch = index,
                    "sentence dropped"
                );
            }
        }
        SimEpoch {
            index,
            time_ms,
            lat: car.lat,
            lon: car.lon,
            alt_m: car.alt_m,
            speed_mps: car.speed_mps,
            course_deg: car.course_deg,
            sats,
            hdop,
            fix,
            fault: fault.map(|f| f.kind),
            sentences: printed,
        }
    }
}

impl Iterator for Drive {
    type Item = SimEpoch;

    fn next(&mut self) -> Option<SimEpoch> {
        let index = self.next_index;
        if index >= self.spec.epochs {
            return None;
        }
        let epoch = self.epoch(index);
        self.next_index = index + 1;
        let dt = self.spec.period_ms() as f64 / 1000.0;
        let in_tunnel = self.spec.in_tunnel(index + 1);
        self.car.step(dt, in_tunnel);
        self.sky.step(dt, in_tunnel);
        if let Some(noise) = &mut self.noise {
            noise.step(dt);
        }
        Some(epoch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.spec.epochs.saturating_sub(self.next_index) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Drive {}

/// The lines a receiver prints for `reading` (RMC, GGA, GSA, VTG, as a drive's epoch),
/// appended to `out`: to replay as NMEA positions that did not come from a [`Drive`] (a
/// test's or a tool's fixes). A line that does not fit [`LINE_CAPACITY`] (values no receiver
/// prints) is left out and logged, as in a drive.
pub fn write_reading(reading: &Reading, out: &mut Vec<u8>) {
    for kind in SentenceKind::ALL {
        match sentences::sentence(kind, reading) {
            Ok(line) => out.extend_from_slice(line.as_bytes()),
            Err(_) => error!(
                code = "SIM_LINE_TOO_LONG",
                sentence = kind.as_str(),
                time_ms = reading.time_ms,
                "sentence dropped"
            ),
        }
    }
}

/// Indices of the epochs of `spec` with a damaged line, in order.
pub fn corrupted_epochs(spec: &DriveSpec) -> Result<Vec<u32>, SimError> {
    Ok(Drive::new(spec.clone())?
        .filter(SimEpoch::is_corrupted)
        .map(|e| e.index)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_a_receiver_could_not_have_are_refused_with_their_code() {
        let cases = [
            (
                DriveSpec {
                    rate_hz: 2,
                    ..DriveSpec::default()
                },
                "SIM_RATE",
            ),
            (
                DriveSpec {
                    precision_decimals: 9,
                    ..DriveSpec::default()
                },
                "SIM_PRECISION",
            ),
            (
                DriveSpec {
                    talker: *b"gp",
                    ..DriveSpec::default()
                },
                "SIM_TALKER",
            ),
            (
                DriveSpec {
                    start: (f64::NAN, 0.0),
                    ..DriveSpec::default()
                },
                "SIM_START",
            ),
            (
                DriveSpec {
                    corrupt_every: Some(0),
                    ..DriveSpec::default()
                },
                "SIM_CORRUPT_EVERY",
            ),
            (
                DriveSpec {
                    start_time_ms: 4_102_444_800_000 - 1000, // 2099-12-31T23:59:59Z
                    ..DriveSpec::default()
                },
                "SIM_TIME",
            ),
            (
                DriveSpec {
                    start_time_ms: 0,
                    ..DriveSpec::default()
                },
                "SIM_TIME",
            ),
        ];
        for (spec, code) in cases {
            let err = Drive::new(spec).unwrap_err();
            assert_eq!(err.code(), code);
            assert_eq!(err.class(), ErrorClass::Permanent);
        }
    }

    #[test]
    fn the_drive_yields_exactly_its_epochs_at_the_rate() {
        for rate_hz in [1u8, 5, 10] {
            let spec = DriveSpec {
                epochs: 37,
                rate_hz,
                ..DriveSpec::default()
            };
            let drive = Drive::new(spec).unwrap();
            assert_eq!(drive.len(), 37);
            let epochs: Vec<SimEpoch> = drive.collect();
            assert_eq!(epochs.len(), 37);
            for w in epochs.windows(2) {
                assert_eq!(w[1].time_ms - w[0].time_ms, 1000 / i64::from(rate_hz));
            }
        }
    }

    #[test]
    fn start_time_is_floored_to_what_hhmmss_ss_can_say() {
        let spec = DriveSpec {
            start_time_ms: 1_773_475_200_007,
            epochs: 1,
            ..DriveSpec::default()
        };
        let first = Drive::new(spec).unwrap().next().unwrap();
        assert_eq!(first.time_ms, 1_773_475_200_000);
    }

    #[test]
    fn the_demo_drive_has_a_tunnel_and_a_few_damaged_lines() {
        let spec = DriveSpec::demo();
        let damaged = corrupted_epochs(&spec).unwrap();
        assert!((5..=20).contains(&damaged.len()), "{}", damaged.len());
        let no_fix = Drive::new(spec).unwrap().filter(|e| !e.fix).count();
        assert_eq!(no_fix, 25);
    }
}
