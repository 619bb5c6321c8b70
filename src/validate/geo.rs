//! Distances, displacements and speeds between WGS84 positions, for the `disagree`,
//! `speed_jump` and motion checks.
//!
//! Pure functions of their arguments: no state, no clock. Haversine on a sphere of the mean
//! Earth radius: within 0.5 % of the ellipsoid, far finer than the thresholds it feeds
//! (tens of metres, hundreds of km/h).

/// Mean Earth radius (IUGG), metres.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Great-circle distance in metres between two positions in decimal degrees.
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (phi1, phi2) = (lat1.to_radians(), lat2.to_radians());
    let dphi = (lat2 - lat1).to_radians();
    let dlambda = (lon2 - lon1).to_radians();
    let h = (dphi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (dlambda / 2.0).sin().powi(2);
    // `min` keeps rounding from pushing `h` past 1 for antipodal points (asin would be NaN).
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

/// Displacement from the first position to the second as (north, east) metres, on the local
/// plane at their mean latitude. For the short legs the motion check compares (metres to a
/// few kilometres) the flat-plane error is far below a metre; across the antimeridian the
/// shorter way round is taken.
pub fn north_east_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> (f64, f64) {
    let mut dlon = lon2 - lon1;
    if dlon > 180.0 {
        dlon -= 360.0;
    } else if dlon < -180.0 {
        dlon += 360.0;
    }
    let mean_lat = (0.5 * (lat1 + lat2)).to_radians();
    (
        (lat2 - lat1).to_radians() * EARTH_RADIUS_M,
        dlon.to_radians() * EARTH_RADIUS_M * mean_lat.cos(),
    )
}

/// Speed in km/h implied by covering `distance_m` in `dt_ms` milliseconds. A non-positive
/// interval gives infinity: any movement in no time is a jump.
pub fn speed_kmh(distance_m: f64, dt_ms: i64) -> f64 {
    if dt_ms <= 0 {
        return f64::INFINITY;
    }
    distance_m / (dt_ms as f64 / 1000.0) * 3.6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_degree_of_latitude_is_about_111_km() {
        let d = distance_m(10.0, 20.0, 11.0, 20.0);
        assert!((d - 111_195.0).abs() < 10.0, "{d}");
    }

    #[test]
    fn antipodal_points_are_half_the_circumference_apart_not_nan() {
        let d = distance_m(0.0, 0.0, 0.0, 180.0);
        assert!(
            (d - std::f64::consts::PI * EARTH_RADIUS_M).abs() < 1.0,
            "{d}"
        );
    }

    #[test]
    fn north_east_agrees_with_the_great_circle_over_short_legs_and_the_antimeridian() {
        let (n, e) = north_east_m(48.0, 11.0, 48.001, 11.002);
        let d = distance_m(48.0, 11.0, 48.001, 11.002);
        assert!((n.hypot(e) - d).abs() < 0.01, "{n} {e} {d}");
        assert!(n > 0.0 && e > 0.0);
        let (n, e) = north_east_m(0.0, 179.9999, 0.0, -179.9999);
        assert!(n.abs() < 1e-9 && (e - 22.24).abs() < 0.01, "{e}");
    }

    #[test]
    fn one_kilometre_in_36_seconds_is_100_kmh() {
        assert!((speed_kmh(1000.0, 36_000) - 100.0).abs() < 1e-9);
        assert_eq!(speed_kmh(1.0, 0), f64::INFINITY);
    }
}
