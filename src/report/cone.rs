//! The geometry of the error bound: a local metric frame, and the cone of average velocities
//! that keeps every fix since the last kept one within `max_error_m` of the redrawn track.
//!
//! The back end redraws the track by interpolating latitude and longitude linearly in time
//! between consecutive kept fixes. For a kept fix `A` (at the origin, time 0) and a later fix
//! `C` kept next, a fix `P_i` at time `t_i` between them is redrawn at `v * t_i`, where
//! `v = C / t_C` is the average velocity from `A` to `C`. Its error is
//! `|P_i - v t_i| = t_i |P_i / t_i - v|`, so it is within `eps` exactly when `v` lies in the
//! disk of centre `P_i / t_i` and radius `eps / t_i`. `C` can be the next kept fix when its
//! average velocity lies in every disk of the fixes before it: the intersection of the disks,
//! a convex region that only shrinks as fixes arrive (the idea of CISED, Lin et al. 2017).
//!
//! Each disk is replaced by its inscribed regular polygon of [`SIDES`] sides, all with the
//! same edge directions, so the intersection of all of them is one polygon held as a bound
//! per direction: adding a fix and testing a fix cost [`SIDES`] multiply-adds each, with no
//! memory of the fixes themselves. Inscribed polygons lie inside their disks, so a velocity
//! inside the polygon is inside every disk: the bound is never exceeded; the price is at most
//! `1 - cos(pi / SIDES)` (0.5 %) of `eps` in the worst direction.

/// WGS84 semi-major axis (m) and first eccentricity squared.
const WGS84_A: f64 = 6_378_137.0;
const WGS84_E2: f64 = 6.694_379_990_14e-3;

/// Edges of the polygons standing in for the disks.
pub const SIDES: usize = 32;

/// Share of `max_error_m` the cone works with: covers the difference between measuring
/// distances with the scale of the segment's first fix and with that of the fix itself (at
/// most a few parts in 10,000 over the kilometres of one segment, more near the poles).
pub const EPS_SHARE: f64 = 0.998;

/// Metres per degree of latitude and of longitude at a latitude: a local equirectangular
/// frame, exact enough over the few kilometres between two kept fixes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame {
    lat0: f64,
    lon0: f64,
    m_per_deg_lat: f64,
    m_per_deg_lon: f64,
}

impl Frame {
    pub fn at(lat: f64, lon: f64) -> Frame {
        let phi = lat.to_radians();
        let w2 = 1.0 - WGS84_E2 * phi.sin().powi(2);
        let w = w2.sqrt();
        let meridian = WGS84_A * (1.0 - WGS84_E2) / (w2 * w);
        let prime_vertical = WGS84_A / w;
        Frame {
            lat0: lat,
            lon0: lon,
            m_per_deg_lat: meridian.to_radians(),
            m_per_deg_lon: (prime_vertical * phi.cos()).to_radians(),
        }
    }

    /// The position `(east, north)` metres from the frame's origin: the inverse of
    /// [`metres`](Self::metres).
    pub fn position(&self, east: f64, north: f64) -> (f64, f64) {
        (
            self.lat0 + north / self.m_per_deg_lat,
            wrap_lon(self.lon0 + east / self.m_per_deg_lon),
        )
    }

    /// `(east, north)` metres of a position from the frame's origin (across the
    /// antimeridian the short way).
    pub fn metres(&self, lat: f64, lon: f64) -> (f64, f64) {
        (
            wrap_lon(lon - self.lon0) * self.m_per_deg_lon,
            (lat - self.lat0) * self.m_per_deg_lat,
        )
    }
}

/// A longitude difference into `[-180, 180)`.
pub fn wrap_lon(d: f64) -> f64 {
    if (-180.0..180.0).contains(&d) {
        d
    } else {
        (d + 180.0).rem_euclid(360.0) - 180.0
    }
}

/// Distance in metres between two positions (local frame at the first; for the short
/// distances the report stage measures).
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (x, y) = Frame::at(lat1, lon1).metres(lat2, lon2);
    x.hypot(y)
}

/// Unit normals of the polygon's edges, and the apothem of an inscribed regular polygon of
/// a unit circle (`cos(pi / SIDES)`).
#[derive(Debug, Clone)]
pub struct Directions {
    normals: [(f64, f64); SIDES],
    apothem: f64,
}

impl Directions {
    pub fn new() -> Directions {
        let mut normals = [(0.0, 0.0); SIDES];
        for (j, n) in normals.iter_mut().enumerate() {
            let a = std::f64::consts::TAU * j as f64 / SIDES as f64;
            *n = (a.cos(), a.sin());
        }
        Directions {
            normals,
            apothem: (std::f64::consts::PI / SIDES as f64).cos(),
        }
    }
}

impl Default for Directions {
    fn default() -> Self {
        Self::new()
    }
}

/// The intersection of the velocity polygons of the fixes since the cone's origin. Fixed
/// size, `Copy`: resetting and updating never allocate.
#[derive(Debug, Clone, Copy)]
pub struct Cone {
    /// Per edge direction, the largest `n . v` allowed (the tightest polygon's edge).
    bounds: [f64; SIDES],
}

impl Cone {
    /// No constraint yet: every velocity is allowed.
    pub fn open() -> Cone {
        Cone {
            bounds: [f64::INFINITY; SIDES],
        }
    }

    /// Whether the average velocity `(x, y) / dt_s` (a fix `dt_s` seconds after the origin,
    /// `(x, y)` metres from it) keeps every fix added so far within the bound.
    pub fn admits(&self, dirs: &Directions, x: f64, y: f64, dt_s: f64) -> bool {
        let (vx, vy) = (x / dt_s, y / dt_s);
        dirs.normals
            .iter()
            .zip(&self.bounds)
            .all(|(n, b)| n.0 * vx + n.1 * vy <= *b)
    }

    /// Constrain later velocities by a fix `dt_s` after the origin at `(x, y)`: it must stay
    /// within `eps_m` of the track.
    pub fn add(&mut self, dirs: &Directions, x: f64, y: f64, dt_s: f64, eps_m: f64) {
        self.add_polygon(dirs, x, y, dt_s, eps_m / dt_s * dirs.apothem);
    }

    /// As [`add`](Self::add) with the polygon drawn around the disk instead of inside it:
    /// the cone then admits every velocity the disks admit, and a few more (the offline
    /// reference uses it to rule velocities out quickly).
    pub fn add_circumscribed(&mut self, dirs: &Directions, x: f64, y: f64, dt_s: f64, eps_m: f64) {
        self.add_polygon(dirs, x, y, dt_s, eps_m / dt_s);
    }

    fn add_polygon(&mut self, dirs: &Directions, x: f64, y: f64, dt_s: f64, reach: f64) {
        let (cx, cy) = (x / dt_s, y / dt_s);
        for (n, b) in dirs.normals.iter().zip(self.bounds.iter_mut()) {
            let edge = n.0 * cx + n.1 * cy + reach;
            if edge < *b {
                *b = edge;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_measures_a_degree_as_wgs84_says() {
        // Known values: at the equator 110,574 m per degree of latitude and 111,320 m per
        // degree of longitude; at 60 degrees 111,412 m and 55,800 m.
        let f = Frame::at(0.0, 0.0);
        assert!((f.metres(1.0, 0.0).1 - 110_574.0).abs() < 2.0);
        assert!((f.metres(0.0, 1.0).0 - 111_320.0).abs() < 2.0);
        let f = Frame::at(60.0, 10.0);
        assert!((f.metres(61.0, 10.0).1 - 111_412.0).abs() < 400.0);
        assert!((f.metres(60.0, 11.0).0 - 55_800.0).abs() < 30.0);
        // The antimeridian is crossed the short way.
        let f = Frame::at(0.0, 179.9999);
        assert!((f.metres(0.0, -179.9999).0 - 22.26).abs() < 0.01);
    }

    #[test]
    fn a_velocity_is_admitted_only_inside_every_disk() {
        let dirs = Directions::new();
        let mut cone = Cone::open();
        assert!(
            cone.admits(&dirs, 1e6, -1e6, 1.0),
            "no fix yet: anything goes"
        );
        // A fix 10 m east after 1 s, bound 5 m: velocities within 5 m/s of (10, 0).
        cone.add(&dirs, 10.0, 0.0, 1.0, 5.0);
        // An end point 2 s out at 20 m east is exactly on the line: error 0.
        assert!(cone.admits(&dirs, 20.0, 0.0, 2.0));
        // At 2 s, 29.8 m east: the fix at 1 s is 4.9 m off the line. 30.2 m: 5.1 m off.
        assert!(cone.admits(&dirs, 29.8, 0.0, 2.0));
        assert!(!cone.admits(&dirs, 30.2, 0.0, 2.0));
        // Sideways: 9.8 m north at 2 s puts the 1 s fix 4.9 m off.
        assert!(cone.admits(&dirs, 20.0, 9.6, 2.0));
        assert!(!cone.admits(&dirs, 20.0, 10.2, 2.0));
    }

    #[test]
    fn the_polygon_never_admits_a_velocity_outside_a_disk() {
        let dirs = Directions::new();
        let mut cone = Cone::open();
        cone.add(&dirs, 0.0, 0.0, 1.0, 1.0);
        // On a ring of radius 1: admitted points have |v| <= 1; some directions lose up to
        // 1 - cos(pi/32) of the radius, never more.
        for k in 0..3600 {
            let a = std::f64::consts::TAU * f64::from(k) / 3600.0;
            let (x, y) = (a.cos(), a.sin());
            assert!(!cone.admits(&dirs, 1.0001 * x, 1.0001 * y, 1.0));
            assert!(cone.admits(&dirs, 0.995 * x, 0.995 * y, 1.0), "at {a}");
        }
    }
}
