//! The simulator's opt-in scenes (roundabout, highway stretch, parked spell): each happens as
//! described, within what a car can do, and a drive without scenes prints the very bytes it
//! printed before scenes existed.

use gps_agent::error::Classified;
use gps_agent::sim::{Drive, DriveSpec, Scene, SceneKind, SimEpoch};

fn fnv(spec: DriveSpec) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut buf = Vec::new();
    for e in Drive::new(spec).unwrap() {
        buf.clear();
        e.write_nmea(&mut buf);
        for b in &buf {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[test]
fn drives_without_scenes_are_byte_identical_to_before_scenes_existed() {
    // Hashes of the bytes printed by the simulator before scenes were added.
    let pinned: [(u8, u64, u64); 9] = [
        (1, 2026, 0x3728_d68e_aca1_79b4),
        (1, 7, 0xb40b_6e15_1948_22c7),
        (1, 99, 0x4bfa_6eb1_1ded_b310),
        (5, 2026, 0x35ad_3a7d_d39e_2d83),
        (5, 7, 0x9046_f8d7_a250_31bf),
        (5, 99, 0x751f_e2dc_3d72_4a5c),
        (10, 2026, 0xc590_a424_d424_220b),
        (10, 7, 0x5c4d_0a9b_4276_36df),
        (10, 99, 0x814a_c1b4_624c_ec5a),
    ];
    for (rate_hz, seed, hash) in pinned {
        let spec = DriveSpec {
            rate_hz,
            seed,
            epochs: 3000,
            ..DriveSpec::demo()
        };
        assert_eq!(fnv(spec), hash, "{rate_hz} Hz, seed {seed}");
    }
}

fn tour(seed: u64, rate_hz: u8) -> Vec<SimEpoch> {
    let spec = DriveSpec {
        seed,
        rate_hz,
        epochs: 1800 * u32::from(rate_hz),
        ..DriveSpec::tour()
    };
    Drive::new(spec).unwrap().collect()
}

fn turned(a: f64, b: f64) -> f64 {
    let d = (b - a).rem_euclid(360.0);
    if d > 180.0 {
        d - 360.0
    } else {
        d
    }
}

#[test]
fn the_tour_has_a_highway_stretch_a_roundabout_and_a_parked_spell() {
    for seed in [2026, 1, 2, 3] {
        let e = tour(seed, 1);
        // Highway speeds (above 90 km/h) only in the stretch scheduled from 420 s.
        let fast: Vec<u32> = e
            .iter()
            .filter(|x| x.speed_mps > 25.1)
            .map(|x| x.index)
            .collect();
        assert!(
            fast.len() > 400,
            "seed {seed}: {} s at highway speed",
            fast.len()
        );
        assert!(
            fast.iter().all(|&i| (420..1100).contains(&i)),
            "seed {seed}"
        );
        let top = e.iter().map(|x| x.speed_mps).fold(0.0, f64::max);
        assert!(top <= 130.0 / 3.6 + 1e-9, "seed {seed}: {top}");

        // The parked spell: at least 300 s in a row standing, after 1260 s.
        let mut run = 0;
        let mut longest = (0, 0);
        for x in &e {
            run = if x.speed_mps == 0.0 { run + 1 } else { 0 };
            if run > longest.0 {
                longest = (run, x.index);
            }
        }
        assert!(
            longest.0 >= 300 && longest.1 > 1260,
            "seed {seed}: {longest:?}"
        );

        // The roundabout taken left after 1080 s: at about 6 m/s, the course swings right,
        // then far round to the left.
        let slow_turning: Vec<&SimEpoch> = e
            .iter()
            .filter(|x| x.index >= 1080 && x.index < 1260 && (x.speed_mps - 6.0).abs() < 0.5)
            .collect();
        let (mut left, mut most_right, mut swing) = (0.0f64, 0.0f64, 0.0f64);
        for w in slow_turning.windows(2) {
            if w[1].index == w[0].index + 1 {
                left += -turned(w[0].course_deg, w[1].course_deg);
                most_right = most_right.min(left);
                swing = swing.max(left - most_right);
            }
        }
        // Veer right 60, round the island 210 left, veer right 60: 90 left in all.
        assert!(
            swing > 200.0,
            "seed {seed}: {swing} degrees round the island"
        );
        assert!(
            (left - 90.0).abs() < 15.0,
            "seed {seed}: {left} degrees in all"
        );
    }
}

#[test]
fn scenes_stay_within_what_a_car_can_do_at_every_rate() {
    for rate_hz in [1u8, 10] {
        let e = tour(2026, rate_hz);
        let dt = 1.0 / f64::from(rate_hz);
        for w in e.windows(2) {
            let accel = (w[1].speed_mps - w[0].speed_mps) / dt;
            assert!(
                (-2.5 - 1e-9..=2.0 + 1e-9).contains(&accel),
                "{accel} at {}",
                w[1].index
            );
            let yaw = turned(w[0].course_deg, w[1].course_deg).abs() / dt;
            assert!(yaw <= 18.0 + 1e-9, "{yaw} deg/s at {}", w[1].index);
            let lateral = yaw.to_radians() * w[1].speed_mps.max(w[0].speed_mps);
            assert!(lateral <= 2.0 + 0.2, "{lateral} m/s2 at {}", w[1].index);
        }
    }
}

#[test]
fn an_undrivable_scene_is_refused_with_its_code() {
    let spec = DriveSpec {
        scenes: vec![Scene {
            at_s: 10,
            kind: SceneKind::Roundabout { exit_deg: 45 },
        }],
        ..DriveSpec::default()
    };
    assert_eq!(Drive::new(spec).unwrap_err().code(), "SIM_SCENE");
    let spec = DriveSpec {
        scenes: vec![Scene {
            at_s: 10,
            kind: SceneKind::Parked { secs: 0 },
        }],
        ..DriveSpec::default()
    };
    assert_eq!(Drive::new(spec).unwrap_err().code(), "SIM_SCENE");
}
