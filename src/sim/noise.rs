//! What a real receiver adds to the truth: a position error that wanders slowly (a few
//! metres, scaled by HDOP), a little fast jitter, Doppler velocity noise, and the course that
//! follows from it (steady at speed, wild when crawling, anything when parked).
//!
//! In: the true position, speed and course of an epoch and its HDOP. Out: what the receiver
//! reports. The position error is a first-order Gauss-Markov process per axis (a correlated
//! random walk pulled back towards zero with the correlation time): this is what makes a
//! parked car wander by metres over minutes while consecutive epochs differ by centimetres,
//! as receivers with a navigation filter do. Doppler speed is measured independently of the
//! position (about 0.05-0.1 m/s), so the reported speed of a parked car is small but not
//! zero and its course points anywhere. All randomness from the drive's seed (its own
//! stream: turning noise on never changes the route); no clock.

use super::rng::SplitMix64;

/// How noisy the receiver is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseSpec {
    /// Standard deviation per horizontal axis of the slowly varying position error at
    /// HDOP 1, metres.
    pub position_sigma_m: f64,
    /// Correlation time of that error, seconds: how long it takes to wander its size.
    pub correlation_s: f64,
    /// Uncorrelated jitter per horizontal axis at HDOP 1, metres.
    pub jitter_m: f64,
    /// Doppler velocity noise per horizontal axis, m/s.
    pub velocity_sigma_mps: f64,
    /// Vertical error as a multiple of the horizontal one (receivers see worse vertically).
    pub vertical_factor: f64,
}

impl Default for NoiseSpec {
    /// A good automotive receiver under open sky: about 3.5 m horizontal RMS at HDOP 1,
    /// wandering over a minute and a half; 5 cm jitter; Doppler to 0.05 m/s per axis (about
    /// 0.07 m/s in speed).
    fn default() -> Self {
        NoiseSpec {
            position_sigma_m: 2.5,
            correlation_s: 90.0,
            jitter_m: 0.05,
            velocity_sigma_mps: 0.05,
            vertical_factor: 1.6,
        }
    }
}

impl NoiseSpec {
    /// A receiver in a street canyon: multipath makes metres of error that change within
    /// seconds, several times an open sky's jitter, Doppler to 0.2 m/s per axis.
    pub fn street_canyon() -> Self {
        NoiseSpec {
            position_sigma_m: 4.0,
            correlation_s: 20.0,
            jitter_m: 1.0,
            velocity_sigma_mps: 0.2,
            vertical_factor: 1.6,
        }
    }

    /// Every figure finite and not negative, the correlation time positive.
    pub(crate) fn is_valid(&self) -> bool {
        let figures = [
            self.position_sigma_m,
            self.jitter_m,
            self.velocity_sigma_mps,
            self.vertical_factor,
        ];
        figures.iter().all(|v| v.is_finite() && *v >= 0.0)
            && self.correlation_s.is_finite()
            && self.correlation_s > 0.0
    }
}

/// The truth of one epoch, and what the receiver reports of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    pub lat: f64,
    pub lon: f64,
    pub alt_m: f64,
    pub speed_mps: f64,
    /// Degrees true, `[0, 360)`.
    pub course_deg: f64,
}

/// The receiver's error state.
#[derive(Debug, Clone)]
pub struct ReceiverNoise {
    spec: NoiseSpec,
    rng: SplitMix64,
    /// Slowly varying error at HDOP 1, metres: north, east, up.
    error_m: [f64; 3],
}

/// Metres per degree of latitude (mean), and of longitude at the equator: the error is a
/// few metres, where the ellipsoid's detail does not matter.
const METRES_PER_DEGREE: f64 = 111_194.93;

impl ReceiverNoise {
    pub(crate) fn new(spec: NoiseSpec, mut rng: SplitMix64) -> Self {
        // Start in the stationary distribution, not at zero: a receiver has been on a while.
        let sigma = spec.position_sigma_m;
        let error_m = [
            sigma * normal(&mut rng),
            sigma * normal(&mut rng),
            sigma * spec.vertical_factor * normal(&mut rng),
        ];
        ReceiverNoise { spec, rng, error_m }
    }

    /// Let the error wander for `dt` seconds.
    pub(crate) fn step(&mut self, dt: f64) {
        let keep = (-dt / self.spec.correlation_s).exp();
        let fresh = (1.0 - keep * keep).max(0.0).sqrt();
        let sigmas = [
            self.spec.position_sigma_m,
            self.spec.position_sigma_m,
            self.spec.position_sigma_m * self.spec.vertical_factor,
        ];
        for (e, sigma) in self.error_m.iter_mut().zip(sigmas) {
            *e = *e * keep + sigma * fresh * normal(&mut self.rng);
        }
    }

    /// What the receiver reports of `truth` at `hdop`.
    pub(crate) fn observe(&mut self, truth: Observed, hdop: f64) -> Observed {
        let h = hdop.max(0.0);
        let jitter = self.spec.jitter_m;
        let north = (self.error_m[0] + jitter * normal(&mut self.rng)) * h;
        let east = (self.error_m[1] + jitter * normal(&mut self.rng)) * h;
        let up = self.error_m[2] * h;
        let lat = truth.lat + north / METRES_PER_DEGREE;
        let lon = truth.lon + east / (METRES_PER_DEGREE * truth.lat.to_radians().cos());
        let c = truth.course_deg.to_radians();
        let sv = self.spec.velocity_sigma_mps;
        let v_north = truth.speed_mps * c.cos() + sv * normal(&mut self.rng);
        let v_east = truth.speed_mps * c.sin() + sv * normal(&mut self.rng);
        Observed {
            lat,
            lon: (lon + 180.0).rem_euclid(360.0) - 180.0,
            alt_m: truth.alt_m + up,
            speed_mps: v_north.hypot(v_east),
            course_deg: v_east.atan2(v_north).to_degrees().rem_euclid(360.0),
        }
    }
}

/// A standard normal draw (Box-Muller).
pub(crate) fn normal(rng: &mut SplitMix64) -> f64 {
    // 1 - unit() is in (0, 1]: the logarithm stays finite.
    let u = 1.0 - rng.unit();
    let v = rng.unit();
    (-2.0 * u.ln()).sqrt() * (2.0 * core::f64::consts::PI * v).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked() -> Observed {
        Observed {
            lat: 48.137,
            lon: 11.575,
            alt_m: 519.0,
            speed_mps: 0.0,
            course_deg: 0.0,
        }
    }

    fn metres(a: &Observed, b: &Observed) -> f64 {
        let n = (b.lat - a.lat) * METRES_PER_DEGREE;
        let e = (b.lon - a.lon) * METRES_PER_DEGREE * a.lat.to_radians().cos();
        n.hypot(e)
    }

    #[test]
    fn normal_draws_have_mean_zero_and_unit_spread() {
        let mut rng = SplitMix64::new(5, 9);
        let n = 20_000;
        let draws: Vec<f64> = (0..n).map(|_| normal(&mut rng)).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
    }

    #[test]
    fn a_parked_receiver_wanders_metres_over_minutes_and_centimetres_per_epoch() {
        let mut noise = ReceiverNoise::new(NoiseSpec::default(), SplitMix64::new(3, 4));
        let truth = parked();
        let mut seen = Vec::new();
        for _ in 0..1800 {
            seen.push(noise.observe(truth, 1.0));
            noise.step(1.0);
        }
        let steps: Vec<f64> = seen.windows(2).map(|w| metres(&w[0], &w[1])).collect();
        let largest_step = steps.iter().cloned().fold(0.0, f64::max);
        assert!(largest_step < 2.0, "{largest_step}");
        let spread = seen.iter().map(|o| metres(&truth, o)).fold(0.0, f64::max);
        assert!((2.0..25.0).contains(&spread), "{spread}");
        let speeds: Vec<f64> = seen.iter().map(|o| o.speed_mps).collect();
        let mean_speed = speeds.iter().sum::<f64>() / speeds.len() as f64;
        assert!((0.02..0.15).contains(&mean_speed), "{mean_speed}");
    }

    #[test]
    fn course_noise_grows_as_speed_falls() {
        let mut noise = ReceiverNoise::new(NoiseSpec::default(), SplitMix64::new(8, 4));
        let mut spread = |speed: f64| {
            let truth = Observed {
                speed_mps: speed,
                course_deg: 90.0,
                ..parked()
            };
            (0..2000)
                .map(|_| {
                    let d = (noise.observe(truth, 1.0).course_deg - 90.0).abs();
                    d.min(360.0 - d)
                })
                .fold(0.0, f64::max)
        };
        let fast = spread(25.0);
        let slow = spread(0.5);
        assert!(fast < 1.0, "{fast}");
        assert!(slow > 10.0 * fast, "{slow} vs {fast}");
    }
}
