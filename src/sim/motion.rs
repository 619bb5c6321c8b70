//! The simulated car and the sky above it: where the car truly is, how fast it goes, which
//! way it points, and how many satellites the receiver uses.
//!
//! In: a time step and whether the car is in a tunnel. Out: the true state, read by the drive
//! to print sentences. City driving: pull away, cruise at 50-90 km/h, brake for lights,
//! wait, turn at junctions; speed and course change smoothly, within what a car can do
//! (acceleration, braking and lateral acceleration limits). Position integrates speed and
//! course on the WGS84 ellipsoid, locally (fine for a city). Never prints anything, never
//! reads a clock.
//!
//! Beyond city blocks, a drive may have [`Scene`]s at set times (opt-in: a drive without
//! them takes exactly the steps, and random draws, it always took): a roundabout (slow to
//! roundabout speed, veer right, round the island to the left, veer right out), a highway
//! stretch (100-130 km/h, no lights, no junctions), and a parked spell (brake, stand with
//! the engine off for minutes while the receiver keeps reporting, pull away).

use super::rng::SplitMix64;

/// WGS84 semi-major axis (m) and first eccentricity squared.
const WGS84_A: f64 = 6_378_137.0;
const WGS84_E2: f64 = 6.694_379_990_14e-3;

/// Cruise speeds of city and ring roads, m/s (50 and 90 km/h).
const CRUISE_MIN_MPS: f64 = 50.0 / 3.6;
const CRUISE_MAX_MPS: f64 = 90.0 / 3.6;
/// A calm driver's limits, m/s².
const ACCEL_MAX: f64 = 2.0;
const BRAKE_MAX: f64 = 2.5;
const LATERAL_ACCEL_MAX: f64 = 2.0;
/// Steering cannot turn the car faster than this, whatever the speed, °/s.
const YAW_RATE_MAX: f64 = 18.0;
/// How quickly speed closes on its target (per second): about 2.5 s time constant.
const APPROACH_PER_S: f64 = 0.4;
/// The car does not drive off the map: past this latitude it turns back.
const LAT_LIMIT: f64 = 85.0;
/// Highway speeds, m/s (100 and 130 km/h).
const HIGHWAY_MIN_MPS: f64 = 100.0 / 3.6;
const HIGHWAY_MAX_MPS: f64 = 130.0 / 3.6;
/// Speed round a roundabout, m/s (about 22 km/h): the lateral limit then allows a radius of
/// about 19 m, a town roundabout's.
const ROUNDABOUT_MPS: f64 = 6.0;
/// Veer right into the roundabout and out of it, degrees.
const ROUNDABOUT_VEER_DEG: f64 = 60.0;

/// Something other than city blocks, at a time into the drive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scene {
    /// Seconds after the first epoch when it begins (the car first finishes braking or
    /// turning if it is).
    pub at_s: u32,
    pub kind: SceneKind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SceneKind {
    /// Leave by the exit this many degrees round the island, counted from the entry: 90
    /// (first, right), 180 (straight on), 270 (left), 360 (back the way it came).
    Roundabout { exit_deg: u16 },
    /// Highway speeds for this long, then back to the city.
    Highway { secs: u32 },
    /// Brake, stand this long (engine off; the receiver keeps its fix), pull away.
    Parked { secs: u32 },
}

impl SceneKind {
    /// Exits a roundabout has.
    pub const ROUNDABOUT_EXITS: [u16; 4] = [90, 180, 270, 360];
}

/// The scene under way.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Active {
    /// Slowing to roundabout speed; then the turns.
    Roundabout {
        exit_deg: u16,
        turning: bool,
    },
    Highway {
        until_s: f64,
    },
    Parked {
        secs: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Closing on `target_mps` (up or down) before cruising.
    Accelerate,
    /// Holding about `target_mps`.
    Cruise,
    /// Braking for a red light.
    Brake,
    /// Waiting at the light.
    Stopped,
}

/// The true state of the car.
#[derive(Debug, Clone)]
pub(crate) struct Car {
    pub lat: f64,
    pub lon: f64,
    pub alt_m: f64,
    pub speed_mps: f64,
    /// Degrees true, `[0, 360)`.
    pub course_deg: f64,
    base_alt_m: f64,
    odometer_m: f64,
    phase: Phase,
    phase_left_s: f64,
    target_mps: f64,
    /// Signed degrees of a junction turn still to make (positive: right).
    turn_left_deg: f64,
    /// Slow bends of the road, °/s, a bounded, mean-reverting random walk.
    bend_dps: f64,
    rng: SplitMix64,
    /// Scenes still to come, the next last (empty: city blocks only).
    scenes: Vec<Scene>,
    active: Option<Active>,
    /// Turns queued after the current one (a roundabout's right-left-right).
    queued_turns: heapless::Deque<f64, 3>,
    elapsed_s: f64,
}

impl Car {
    /// A car parked at `(lat, lon)`, about to pull away, pointing a seeded direction.
    #[cfg(test)]
    pub(crate) fn parked(lat: f64, lon: f64, alt_m: f64, rng: SplitMix64) -> Car {
        Car::parked_with(lat, lon, alt_m, rng, &[])
    }

    /// A car parked at `(lat, lon)`, about to pull away, pointing a seeded direction, with
    /// scenes to drive through.
    pub(crate) fn parked_with(
        lat: f64,
        lon: f64,
        alt_m: f64,
        mut rng: SplitMix64,
        scenes: &[Scene],
    ) -> Car {
        let mut scenes = scenes.to_vec();
        // Next scene last, so it is popped.
        scenes.sort_by_key(|s| std::cmp::Reverse(s.at_s));
        let course_deg = rng.range(0.0, 360.0);
        Car {
            lat,
            lon,
            alt_m,
            speed_mps: 0.0,
            course_deg,
            base_alt_m: alt_m,
            odometer_m: 0.0,
            phase: Phase::Stopped,
            phase_left_s: 3.0,
            target_mps: 0.0,
            turn_left_deg: 0.0,
            bend_dps: 0.0,
            rng,
            scenes,
            active: None,
            queued_turns: heapless::Deque::new(),
            elapsed_s: 0.0,
        }
    }

    /// Advance the car by `dt` seconds. In a tunnel the road is straight and there are no
    /// lights: the car keeps going, as it does in life.
    pub(crate) fn step(&mut self, dt: f64, in_tunnel: bool) {
        let v0 = self.speed_mps;
        let c0 = self.course_deg;
        self.plan(dt, in_tunnel);
        let v1 = self.next_speed(dt);
        self.speed_mps = v1;
        let v = 0.5 * (v0 + v1);

        let yaw = self.yaw_rate(dt, v, in_tunnel);
        let dc = yaw * dt;
        let heading = (c0 + 0.5 * dc).to_radians();
        self.course_deg = (c0 + dc).rem_euclid(360.0);

        let distance = v * dt;
        self.odometer_m += distance;
        self.advance(distance * heading.cos(), distance * heading.sin());
        // Gentle hills: a few metres over some hundreds of metres of road.
        let d = self.odometer_m;
        self.alt_m = self.base_alt_m + 12.0 * (d / 700.0).sin() + 4.0 * ((d / 230.0) + 1.0).sin()
            - 4.0 * 1f64.sin();
    }

    /// Move by `north` and `east` metres on the ellipsoid (meridian and prime-vertical radii
    /// at the current latitude).
    fn advance(&mut self, north: f64, east: f64) {
        let phi = self.lat.to_radians();
        let w = (1.0 - WGS84_E2 * phi.sin().powi(2)).sqrt();
        let meridian = WGS84_A * (1.0 - WGS84_E2) / (w * w * w);
        let prime_vertical = WGS84_A / w;
        self.lat += (north / meridian).to_degrees();
        self.lon += (east / (prime_vertical * phi.cos())).to_degrees();
        self.lon = (self.lon + 180.0).rem_euclid(360.0) - 180.0;
        if self.lat.abs() > LAT_LIMIT {
            self.lat = self.lat.clamp(-LAT_LIMIT, LAT_LIMIT);
            self.course_deg = (180.0 - self.course_deg).rem_euclid(360.0);
        }
    }

    /// The driver's decisions: when to pull away, cruise, brake, turn.
    fn plan(&mut self, dt: f64, in_tunnel: bool) {
        if !self.scenes.is_empty() || self.active.is_some() {
            self.elapsed_s += dt;
            self.scene(in_tunnel);
        }
        if in_tunnel && matches!(self.phase, Phase::Brake | Phase::Stopped) {
            self.pull_away(false);
        }
        self.phase_left_s -= dt;
        match self.phase {
            Phase::Stopped => {
                if self.phase_left_s <= 0.0 {
                    self.pull_away(true);
                }
            }
            Phase::Accelerate => {
                if (self.target_mps - self.speed_mps).abs() < 0.5 {
                    self.phase = Phase::Cruise;
                    self.phase_left_s = self.rng.range(15.0, 45.0);
                }
            }
            Phase::Cruise => {
                // The traffic ahead nudges the speed a little.
                let (low, high) = self.speed_range();
                self.target_mps =
                    (self.target_mps + self.rng.range(-0.3, 0.3) * dt).clamp(low, high);
                if matches!(self.active, Some(Active::Roundabout { .. })) {
                    return;
                }
                if self.phase_left_s <= 0.0 {
                    let lights = !matches!(self.active, Some(Active::Highway { .. }));
                    if lights && !in_tunnel && self.rng.chance(0.55) {
                        self.phase = Phase::Brake;
                    } else {
                        self.phase = Phase::Accelerate;
                        self.target_mps = self.rng.range(low, high);
                    }
                }
            }
            Phase::Brake => {
                if self.speed_mps <= 0.0 {
                    self.phase = Phase::Stopped;
                    self.phase_left_s = match self.active {
                        Some(Active::Parked { secs }) => f64::from(secs),
                        _ => self.rng.range(8.0, 35.0),
                    };
                }
            }
        }
    }

    /// Cruise speeds of the road the car is on.
    fn speed_range(&self) -> (f64, f64) {
        match self.active {
            Some(Active::Highway { .. }) => (HIGHWAY_MIN_MPS, HIGHWAY_MAX_MPS),
            Some(Active::Roundabout { .. }) => (ROUNDABOUT_MPS, ROUNDABOUT_MPS),
            _ => (CRUISE_MIN_MPS, CRUISE_MAX_MPS),
        }
    }

    /// Start the next scene when its time has come, and end the one under way when it is
    /// done. Only for drives with scenes.
    fn scene(&mut self, in_tunnel: bool) {
        match self.active {
            None => {
                let due = self
                    .scenes
                    .last()
                    .is_some_and(|s| f64::from(s.at_s) <= self.elapsed_s);
                // A scene waits for the car to be on its way, straight, out of a tunnel.
                let ready = !in_tunnel
                    && self.turn_left_deg == 0.0
                    && matches!(self.phase, Phase::Accelerate | Phase::Cruise);
                if !(due && ready) {
                    return;
                }
                let Some(next) = self.scenes.pop() else {
                    return;
                };
                match next.kind {
                    SceneKind::Roundabout { exit_deg } => {
                        self.active = Some(Active::Roundabout {
                            exit_deg,
                            turning: false,
                        });
                        self.phase = Phase::Accelerate;
                        self.target_mps = ROUNDABOUT_MPS;
                    }
                    SceneKind::Highway { secs } => {
                        self.active = Some(Active::Highway {
                            until_s: self.elapsed_s + f64::from(secs),
                        });
                        self.phase = Phase::Accelerate;
                        self.target_mps = self.rng.range(HIGHWAY_MIN_MPS, HIGHWAY_MAX_MPS);
                    }
                    SceneKind::Parked { secs } => {
                        self.active = Some(Active::Parked { secs });
                        self.phase = Phase::Brake;
                    }
                }
            }
            Some(Active::Roundabout { exit_deg, turning }) => {
                if !turning && (self.speed_mps - ROUNDABOUT_MPS).abs() < 0.3 {
                    // Right-positive: veer right, round the island left, veer right out;
                    // the heading changes by 180 - exit_deg in all.
                    let round = ROUNDABOUT_VEER_DEG * 2.0 + f64::from(exit_deg) - 180.0;
                    self.turn_left_deg = ROUNDABOUT_VEER_DEG;
                    self.queued_turns.clear();
                    let _ = self.queued_turns.push_back(-round);
                    let _ = self.queued_turns.push_back(ROUNDABOUT_VEER_DEG);
                    self.active = Some(Active::Roundabout {
                        exit_deg,
                        turning: true,
                    });
                } else if turning && self.turn_left_deg == 0.0 {
                    match self.queued_turns.pop_front() {
                        Some(next) => self.turn_left_deg = next,
                        None => {
                            self.active = None;
                            self.phase = Phase::Accelerate;
                            self.target_mps = self.rng.range(CRUISE_MIN_MPS, CRUISE_MAX_MPS);
                        }
                    }
                }
            }
            Some(Active::Highway { until_s }) => {
                if self.elapsed_s >= until_s {
                    self.active = None;
                    self.phase = Phase::Accelerate;
                    self.target_mps = self.rng.range(CRUISE_MIN_MPS, CRUISE_MAX_MPS);
                }
            }
            Some(Active::Parked { .. }) => {
                if self.phase == Phase::Accelerate {
                    // Pulled away: the spell is over.
                    self.active = None;
                }
            }
        }
    }

    fn pull_away(&mut self, may_turn: bool) {
        self.phase = Phase::Accelerate;
        self.target_mps = self.rng.range(CRUISE_MIN_MPS, CRUISE_MAX_MPS);
        if may_turn && self.active.is_none() && self.rng.chance(0.5) {
            self.turn_left_deg = if self.rng.chance(0.5) { 90.0 } else { -90.0 };
        }
    }

    fn next_speed(&mut self, dt: f64) -> f64 {
        let v = self.speed_mps;
        let accel = match self.phase {
            Phase::Stopped => return 0.0,
            // Firm at speed, soft at the end, as a driver eases off the pedal.
            Phase::Brake => -(0.6 * v + 0.3).min(BRAKE_MAX),
            Phase::Accelerate | Phase::Cruise => {
                ((self.target_mps - v) * APPROACH_PER_S).clamp(-BRAKE_MAX, ACCEL_MAX)
            }
        };
        let next = v + accel * dt;
        if self.phase == Phase::Brake && next < 0.05 {
            0.0
        } else {
            // Leaving the highway the car slows at the braking limit, not at once.
            next.clamp(0.0, self.speed_range().1.max(CRUISE_MAX_MPS).max(v))
        }
    }

    /// Degrees per second the car turns over this step, at mean speed `v`.
    fn yaw_rate(&mut self, dt: f64, v: f64, in_tunnel: bool) -> f64 {
        if in_tunnel {
            self.bend_dps = 0.0;
            return 0.0;
        }
        // Mean-reverting (about 5 s): roads wiggle but run straight on the whole; turns
        // proper happen at junctions.
        self.bend_dps = (self.bend_dps * (1.0 - 0.2 * dt) + self.rng.range(-0.3, 0.3) * dt.sqrt())
            .clamp(-1.0, 1.0);
        // A car does not turn on the spot, and turns gently at speed.
        let limit = if v < 0.5 {
            0.0
        } else {
            YAW_RATE_MAX.min((LATERAL_ACCEL_MAX / v).to_degrees())
        };
        let turn = if self.turn_left_deg != 0.0 {
            (self.turn_left_deg / dt).clamp(-0.9 * limit, 0.9 * limit)
        } else {
            0.0
        };
        self.turn_left_deg -= turn * dt;
        if self.turn_left_deg.abs() < 1e-6 {
            self.turn_left_deg = 0.0;
        }
        (turn + self.bend_dps).clamp(-limit, limit)
    }
}

/// The satellites the receiver uses and the HDOP they give.
#[derive(Debug, Clone)]
pub(crate) struct Sky {
    /// Satellites used now (0 in a tunnel).
    pub sats: u8,
    /// What the open sky offers; `sats` climbs to it after a loss.
    open_sky_sats: u8,
    /// Seconds of reacquisition banked toward the next satellite.
    climb_s: f64,
    /// The PRNs in view, in the order they get used.
    pub prns: [u8; 12],
    rng: SplitMix64,
}

/// Satellites a receiver typically uses when the fix comes back.
const REACQUIRE_SATS: u8 = 4;

impl Sky {
    pub(crate) fn open(mut rng: SplitMix64) -> Sky {
        let mut prns = [2, 5, 7, 9, 12, 13, 15, 17, 19, 24, 28, 30];
        // Fisher-Yates, so each seed sees its own constellation.
        for i in (1..prns.len()).rev() {
            let j = rng.below(i as u32 + 1) as usize;
            prns.swap(i, j);
        }
        let sats = 7 + rng.below(6) as u8;
        Sky {
            sats,
            open_sky_sats: sats,
            climb_s: 0.0,
            prns,
            rng,
        }
    }

    /// HDOP for the satellites in use, rounded to what GGA prints: fewer satellites, worse
    /// geometry.
    pub(crate) fn hdop(&self) -> f64 {
        if self.sats == 0 {
            return 99.99;
        }
        let h = 0.55 + 5.5 / f64::from(self.sats);
        (h * 100.0).round() / 100.0
    }

    pub(crate) fn step(&mut self, dt: f64, in_tunnel: bool) {
        // Satellites rise and set: the open sky changes by one now and then.
        if self.rng.chance((0.08 * dt).min(1.0)) {
            let up = self.rng.chance(0.5);
            self.open_sky_sats = if up {
                (self.open_sky_sats + 1).min(12)
            } else {
                (self.open_sky_sats - 1).max(7)
            };
        }
        if in_tunnel {
            self.sats = 0;
            self.climb_s = 0.0;
            return;
        }
        if self.sats == 0 {
            self.sats = REACQUIRE_SATS;
            return;
        }
        if self.sats > self.open_sky_sats {
            self.sats = self.open_sky_sats;
        } else if self.sats < self.open_sky_sats {
            // One more satellite a second as the receiver tracks them again.
            self.climb_s += dt;
            if self.climb_s >= 1.0 {
                self.climb_s = 0.0;
                self.sats += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drive(dt: f64, steps: u32) -> Vec<Car> {
        let mut car = Car::parked(48.137, 11.575, 520.0, SplitMix64::new(9, 1));
        let mut out = Vec::new();
        for _ in 0..steps {
            out.push(car.clone());
            car.step(dt, false);
        }
        out
    }

    #[test]
    fn the_car_pulls_away_cruises_in_the_city_range_and_stops_for_lights() {
        let states = drive(1.0, 1200);
        let top = states.iter().map(|c| c.speed_mps).fold(0.0, f64::max);
        assert!(
            top > CRUISE_MIN_MPS && top <= CRUISE_MAX_MPS + 1e-9,
            "{top}"
        );
        let stops = states
            .windows(2)
            .filter(|w| w[0].speed_mps > 0.0 && w[1].speed_mps == 0.0)
            .count();
        assert!(stops >= 3, "only {stops} stops in 20 minutes");
    }

    #[test]
    fn speed_and_course_change_within_what_a_car_can_do() {
        for dt in [1.0, 0.2, 0.1] {
            let states = drive(dt, (1200.0 / dt) as u32);
            for w in states.windows(2) {
                let accel = (w[1].speed_mps - w[0].speed_mps) / dt;
                assert!((-BRAKE_MAX - 1e-9..=ACCEL_MAX + 1e-9).contains(&accel));
                let mut dc = (w[1].course_deg - w[0].course_deg).abs();
                dc = dc.min(360.0 - dc);
                assert!(dc / dt <= YAW_RATE_MAX + 1e-9, "{dc} in {dt}s");
            }
        }
    }

    #[test]
    fn junction_turns_happen_and_are_finished() {
        let states = drive(1.0, 1800);
        let first = states[0].course_deg;
        let far = states
            .iter()
            .map(|c| {
                let d = (c.course_deg - first).abs();
                d.min(360.0 - d)
            })
            .fold(0.0, f64::max);
        assert!(far > 60.0, "the car never turned: {far}");
    }

    #[test]
    fn the_sky_loses_every_satellite_in_a_tunnel_and_regains_them_after() {
        let mut sky = Sky::open(SplitMix64::new(1, 2));
        assert!((7..=12).contains(&sky.sats));
        sky.step(1.0, true);
        assert_eq!(sky.sats, 0);
        assert_eq!(sky.hdop(), 99.99);
        sky.step(1.0, false);
        assert_eq!(sky.sats, REACQUIRE_SATS);
        for _ in 0..20 {
            sky.step(1.0, false);
        }
        assert!(sky.sats >= 7);
        assert!(sky.hdop() < 2.0);
    }
}
