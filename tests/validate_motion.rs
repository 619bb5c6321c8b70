//! The motion check through `Validator::push`/`finish` on hand-built epochs: near jumps and
//! frozen positions at 1 Hz and 10 Hz, moving and parked; what it must never reject (a
//! parked car's wander, walking pace at 10 Hz, a tunnel exit, a receiver restart, a biased
//! Doppler); one epoch late and in receiver order; the `[validate]` knobs. The thresholds'
//! exact boundaries are unit tests of `validate::kinematics`.

use chrono::NaiveDate;
use gps_agent::config::ValidateConfig;
use gps_agent::fix::Fix;
use gps_agent::gnss::epoch::{Epoch, FaaMode, GgaObs, GsaObs, RmcObs, UsedSats};
use gps_agent::rejection::Reason;
use gps_agent::validate::{Validator, Verdict};

const LAT: f64 = 48.137;
const LON: f64 = 11.575;
/// Metres per degree of latitude on the validator's sphere.
const M_PER_DEG: f64 = 111_194.93;

/// An epoch `t` seconds after 08:00:00 UTC on 2024-03-18, `north`/`east` metres from the
/// origin, with Doppler `speed` (m/s) and `course` (`None`: empty), HDOP 1, 9 satellites.
/// Positions are printed to 5 decimals of minutes, as a good receiver does.
fn at(t: f64, north: f64, east: f64, speed: f64, course: Option<f64>) -> Epoch {
    let minutes5 = |deg: f64| {
        let whole = deg.trunc();
        whole + ((deg - whole) * 60.0 * 1e5).round() / 1e5 / 60.0
    };
    let lat = minutes5(LAT + north / M_PER_DEG);
    let lon = minutes5(LON + east / (M_PER_DEG * LAT.to_radians().cos()));
    Epoch {
        time_of_day_ms: Some(8 * 3_600_000 + (t * 1000.0).round() as u32),
        date: NaiveDate::from_ymd_opt(2024, 3, 18),
        date_from_epoch: true,
        rmc: Some(RmcObs {
            valid: true,
            lat: Some(lat),
            lon: Some(lon),
            speed_knots: Some(speed / 0.514444),
            course_deg: course,
            faa_mode: Some(FaaMode::Autonomous),
        }),
        gga: Some(GgaObs {
            quality: Some(1),
            lat: Some(lat),
            lon: Some(lon),
            sats: Some(9),
            hdop: Some(1.0),
            alt_m: Some(520.0),
        }),
        gsa: Some(GsaObs {
            fix_mode: 3,
            hdop: Some(1.0),
            used: UsedSats::from_prns(1, 1..=9),
            ..GsaObs::default()
        }),
        ..Epoch::default()
    }
}

/// Driving north at `speed`: the epoch `i` of a `rate_hz` receiver.
fn north(i: u32, rate_hz: f64, speed: f64) -> Epoch {
    let t = f64::from(i) / rate_hz;
    at(t, speed * t, 0.0, speed, Some(0.0))
}

struct Run {
    v: Validator,
    out: Vec<Verdict>,
}

impl Run {
    fn new() -> Run {
        Run::with(ValidateConfig::default())
    }

    fn with(cfg: ValidateConfig) -> Run {
        Run {
            v: Validator::new(cfg),
            out: Vec::new(),
        }
    }

    /// Push one epoch; the verdicts it released.
    fn push(&mut self, e: &Epoch) -> Vec<Verdict> {
        let mut now = Vec::new();
        self.v.push(e, &mut |x| now.push(x));
        self.out.extend(now.iter().cloned());
        now
    }

    fn finish(&mut self) -> Vec<Verdict> {
        let mut now = Vec::new();
        self.v.finish(&mut |x| now.push(x));
        self.out.extend(now.iter().cloned());
        now
    }

    fn all(&mut self, epochs: impl IntoIterator<Item = Epoch>) -> &[Verdict] {
        for e in epochs {
            self.push(&e);
        }
        self.finish();
        &self.out
    }

    fn rejected(&self) -> Vec<(i64, Reason)> {
        self.out
            .iter()
            .filter_map(|v| v.as_ref().err().map(|r| (r.time_ms.unwrap(), r.reason)))
            .collect()
    }
}

fn time_ms(v: &Verdict) -> i64 {
    match v {
        Ok(f) => f.time_ms,
        Err(r) => r.time_ms.unwrap(),
    }
}

fn t0() -> i64 {
    NaiveDate::from_ymd_opt(2024, 3, 18)
        .unwrap()
        .and_hms_opt(8, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis()
}

#[test]
fn a_near_jump_while_driving_at_1_hz_is_rejected_one_epoch_late() {
    let mut run = Run::new();
    for i in 0..10 {
        run.push(&north(i, 1.0, 14.0));
    }
    // 45 m to the side at epoch 10: held, no verdict yet.
    let mut jump = north(10, 1.0, 14.0);
    let side = at(10.0, 140.0, 45.0, 14.0, Some(0.0));
    jump.rmc = side.rmc;
    jump.gga = side.gga;
    assert!(run.push(&jump).is_empty(), "held for the next epoch");
    assert!(run.v.is_holding());
    // The next epoch is back on the road: the jump was the outlier.
    let next = run.push(&north(11, 1.0, 14.0));
    assert_eq!(next.len(), 1, "{next:?}");
    let r = next[0].as_ref().unwrap_err();
    assert_eq!(r.reason, Reason::Inconsistent);
    assert_eq!(r.time_ms, Some(t0() + 10_000));
    // Epoch 11 is two seconds from the last accepted fix: too far for the vehicle's
    // freedom to say much, so it waits for epoch 12 in turn.
    let after = run.push(&north(12, 1.0, 14.0));
    let times: Vec<i64> = after.iter().map(|v| v.as_ref().unwrap().time_ms).collect();
    assert_eq!(times, vec![t0() + 11_000, t0() + 12_000]);
    assert_eq!(run.v.counts().get(Reason::Inconsistent), 1);
    assert_eq!(run.v.accepted(), 12);
}

#[test]
fn a_near_jump_while_parked_is_rejected_at_1_and_10_hz() {
    for rate in [1.0, 10.0] {
        let mut run = Run::new();
        let epochs = (0..40).map(|i| {
            let t = f64::from(i) / rate;
            // 40 m away for one epoch; 40 m in 0.1 s is also a speed jump at 10 Hz.
            let north = if i == 20 { 40.0 } else { 0.0 };
            at(t, north, 0.0, 0.05, None)
        });
        run.all(epochs);
        let rejected = run.rejected();
        assert_eq!(rejected.len(), 1, "{rate} Hz: {rejected:?}");
        let (t, reason) = rejected[0];
        assert_eq!(t, t0() + (20_000.0 / rate) as i64);
        let expected = if rate == 1.0 {
            Reason::Inconsistent
        } else {
            Reason::SpeedJump
        };
        assert_eq!(reason, expected, "{rate} Hz");
    }
}

#[test]
fn a_parked_car_wandering_metres_over_minutes_is_never_rejected() {
    for rate in [1.0, 10.0] {
        let mut run = Run::new();
        let n = (30.0 * 60.0 * rate) as u32;
        let epochs = (0..n).map(|i| {
            let t = f64::from(i) / rate;
            // A wander of up to 8 m over minutes, with centimetre jitter and Doppler noise.
            let jitter = 0.03 * ((f64::from(i) * 1.7).sin());
            let north = 6.0 * (t / 97.0).sin() + 2.0 * (t / 23.0).cos() + jitter;
            let east = 5.0 * (t / 131.0).cos() - 3.0 * (t / 41.0).sin() - jitter;
            let speed = 0.06 + 0.04 * (f64::from(i) * 0.37).sin();
            let course = (speed >= 0.1).then_some((f64::from(i) * 47.0) % 360.0);
            at(t, north, east, speed, course)
        });
        run.all(epochs);
        assert!(run.rejected().is_empty(), "{rate} Hz: {:?}", run.rejected());
        assert_eq!(run.v.accepted(), u64::from(n));
    }
}

#[test]
fn a_frozen_position_while_moving_is_rejected_at_1_and_10_hz() {
    for rate in [1.0, 10.0] {
        let mut run = Run::new();
        let epochs = (0..30).map(|i| {
            let t = f64::from(i) / rate;
            // Epochs 10-12 repeat epoch 9's position; the speed says 9 m/s throughout.
            let pos_t = if (10..=12).contains(&i) {
                9.0 / rate
            } else {
                t
            };
            at(t, 9.0 * pos_t, 0.0, 9.0, Some(0.0))
        });
        run.all(epochs);
        let rejected = run.rejected();
        let expected: Vec<(i64, Reason)> = (10..=12)
            .map(|i| (t0() + (f64::from(i) * 1000.0 / rate) as i64, Reason::Frozen))
            .collect();
        assert_eq!(rejected, expected, "{rate} Hz");
    }
}

#[test]
fn walking_pace_at_10_hz_repeats_prints_without_being_frozen() {
    // 1.4 m/s at 10 Hz moves 14 cm an epoch: less than a print step (0.0001' = 18.5 cm),
    // so consecutive prints often repeat. A coarser print (4 decimals) makes it more so.
    let mut run = Run::new();
    let epochs = (0..600).map(|i| {
        let t = f64::from(i) / 10.0;
        let mut e = at(t, 1.4 * t, 0.0, 1.4, Some(0.0));
        let four = |deg: f64| {
            let whole = deg.trunc();
            whole + ((deg - whole) * 60.0 * 1e4).round() / 1e4 / 60.0
        };
        for (lat, lon) in [
            e.rmc.as_mut().map(|r| (&mut r.lat, &mut r.lon)),
            e.gga.as_mut().map(|g| (&mut g.lat, &mut g.lon)),
        ]
        .into_iter()
        .flatten()
        {
            *lat = lat.map(four);
            *lon = lon.map(four);
        }
        e
    });
    run.all(epochs);
    assert!(run.rejected().is_empty(), "{:?}", run.rejected());
}

#[test]
fn after_a_tunnel_the_first_fix_waits_for_the_second_then_both_are_accepted() {
    let mut run = Run::new();
    for i in 0..10 {
        run.push(&north(i, 1.0, 14.0));
    }
    // 40 s without a fix; the car came out 500 m on (and turned: a new course).
    let out = |k: u32| {
        let t = 50.0 + f64::from(k);
        at(
            t,
            140.0 + 300.0,
            400.0 + 12.0 * f64::from(k),
            12.0,
            Some(90.0),
        )
    };
    assert!(run.push(&out(0)).is_empty(), "nothing to judge it by yet");
    let next = run.push(&out(1));
    assert_eq!(next.len(), 2, "{next:?}");
    assert!(next.iter().all(Result::is_ok));
    assert!(run.push(&out(2)).len() == 1, "back to deciding at once");
    assert!(run.rejected().is_empty());
}

#[test]
fn a_receiver_restart_that_shifts_the_track_re_anchors_without_losing_fixes() {
    // At epoch 20 the solution shifts 60 m east and stays there (a restart, a new
    // constellation): the new track agrees with itself, so it is taken at once.
    let mut run = Run::new();
    let epochs = (0..40).map(|i| {
        let t = f64::from(i);
        let east = if i >= 20 { 60.0 } else { 0.0 };
        at(t, 14.0 * t, east, 14.0, Some(0.0))
    });
    run.all(epochs);
    assert!(run.rejected().is_empty(), "{:?}", run.rejected());
    assert_eq!(run.v.accepted(), 40);
}

#[test]
fn a_doppler_that_lies_never_locks_the_agent_out() {
    // Speed printed in km/h in the knots field (1.852 times too fast) at 30 m/s, 1 Hz:
    // every fix is 26 m further than its Doppler says. The line through the positions
    // vouches for them.
    let mut run = Run::new();
    let epochs = (0..120).map(|i| {
        let t = f64::from(i);
        at(t, 30.0 * t, 0.0, 30.0 * 1.852, Some(0.0))
    });
    run.all(epochs);
    let rejected = run.rejected();
    assert!(rejected.len() <= 2, "{rejected:?}");
    assert!(run.v.accepted() >= 118);
    // And the order of the verdicts is the receiver's.
    let times: Vec<i64> = run.out.iter().map(time_ms).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn finish_decides_a_held_fix_and_keeps_the_anchor() {
    let mut run = Run::new();
    // The very first fix has nothing to be judged against: held.
    assert!(run.push(&north(0, 1.0, 14.0)).is_empty());
    let done = run.finish();
    assert_eq!(done.len(), 1);
    assert!(done[0].is_ok(), "nothing spoke against it");
    // The anchor stays: the next fix along the road is accepted at once.
    assert_eq!(run.push(&north(1, 1.0, 14.0)).len(), 1);
    // A jump held at the end of the input is rejected: its anchor contradicted it.
    let mut jump = north(2, 1.0, 14.0);
    jump.rmc = at(2.0, 28.0, 50.0, 14.0, Some(0.0)).rmc;
    jump.gga = at(2.0, 28.0, 50.0, 14.0, Some(0.0)).gga;
    assert!(run.push(&jump).is_empty());
    let done = run.finish();
    assert_eq!(done[0].as_ref().unwrap_err().reason, Reason::Inconsistent);
    assert!(run.finish().is_empty(), "nothing held twice");
}

#[test]
fn a_rejected_epoch_after_a_held_one_decides_it_first() {
    let mut run = Run::new();
    assert!(run.push(&north(0, 1.0, 14.0)).is_empty());
    let mut bad = north(1, 1.0, 14.0);
    bad.gga.as_mut().unwrap().hdop = Some(20.0);
    let out = run.push(&bad);
    assert_eq!(out.len(), 2);
    assert!(out[0].is_ok(), "the held fix first, in receiver order");
    assert_eq!(out[1].as_ref().unwrap_err().reason, Reason::Hdop);
}

/// 20 s north at 14 m/s, epoch 10 `east_m` to the side.
fn swerve(east_m: f64) -> impl Iterator<Item = Epoch> {
    (0..20).map(move |i| {
        let east = if i == 10 { east_m } else { 0.0 };
        at(f64::from(i), 14.0 * f64::from(i), east, 14.0, Some(0.0))
    })
}

#[test]
fn the_knobs_widen_or_switch_off_the_check() {
    let mut run = Run::new();
    run.all(swerve(30.0));
    assert_eq!(run.rejected(), vec![(t0() + 10_000, Reason::Inconsistent)]);
    let mut run = Run::with(ValidateConfig {
        position_noise_m: 25.0,
        ..ValidateConfig::default()
    });
    run.all(swerve(30.0));
    assert!(
        run.rejected().is_empty(),
        "30 m is within 25 m of noise plus freedom"
    );
    let mut run = Run::with(ValidateConfig {
        motion_check: false,
        ..ValidateConfig::default()
    });
    run.all(swerve(30.0));
    assert!(run.rejected().is_empty());
    // A gentler vehicle (a bus: 3 m/s², 20°/s) has less freedom: 20 m is too far.
    let mut run = Run::new();
    run.all(swerve(20.0));
    assert!(run.rejected().is_empty(), "a car may swerve that far");
    let mut run = Run::with(ValidateConfig {
        max_accel_mps2: 3.0,
        max_yaw_rate_dps: 20.0,
        ..ValidateConfig::default()
    });
    run.all(swerve(20.0));
    assert_eq!(run.rejected(), vec![(t0() + 10_000, Reason::Inconsistent)]);
}

// ---- one time, two positions (issue 14) ----------------------------------------------------

fn decode_all(text: &str) -> Vec<Verdict> {
    gps_agent::pipeline::verdicts(text.as_bytes(), false, &ValidateConfig::default())
}

fn reasons(out: &[Verdict]) -> Vec<Option<Reason>> {
    out.iter()
        .map(|v| v.as_ref().err().map(|r| r.reason))
        .collect()
}

/// Receiver B's longitude, 5.5 km east of receiver A's.
const B_LON: f64 = 11.0 + 38.94 / 60.0;

/// Every verdict at receiver B's position is a `disagree` rejection, and there is one.
fn b_disagrees(out: &[Verdict]) {
    let at_b = |lon: Option<f64>| lon.is_some_and(|x| (x - B_LON).abs() < 1e-9);
    assert!(
        out.iter().all(|v| match v {
            Ok(fix) => !at_b(Some(fix.lon)),
            Err(r) => !at_b(r.lon) || r.reason == Reason::Disagree,
        }),
        "{out:?}"
    );
    assert!(out
        .iter()
        .any(|v| v.as_ref().is_err_and(|r| r.reason == Reason::Disagree)));
}

#[test]
fn two_receivers_with_one_time_5_km_apart_disagree_however_they_interleave() {
    // Receiver A in Munich, receiver B 5.5 km east, same times.
    let rmc = |t: &str, lon: &str| format!("$GPRMC,{t},A,4808.2200,N,{lon},E,0.0,,180324,,,A\r\n");
    let gga = |t: &str, lon: &str| {
        format!("$GPGGA,{t},4808.2200,N,{lon},E,1,09,1.0,520.0,M,47.0,M,,\r\n")
    };
    let (a, b) = ("01134.5000", "01138.9400");
    // Whole cycles one after the other: A's are fixes, each of B's a `disagree`.
    let mut text = String::new();
    for t in ["080000.00", "080001.00", "080002.00"] {
        text += &(rmc(t, a) + &gga(t, a) + &rmc(t, b) + &gga(t, b));
    }
    let out = decode_all(&text);
    assert_eq!(out.len(), 6, "no epoch silently dropped: {out:?}");
    assert_eq!(
        reasons(&out),
        [None, Some(Reason::Disagree)].repeat(3),
        "{out:?}"
    );
    b_disagrees(&out);
    // Sentence by sentence: A's RMC, B's RMC, A's GGA, B's GGA.
    let mut text = String::new();
    for t in ["080000.00", "080001.00", "080002.00"] {
        text += &(rmc(t, a) + &rmc(t, b) + &gga(t, a) + &gga(t, b));
    }
    let out = decode_all(&text);
    b_disagrees(&out);
    assert_eq!(
        out.iter()
            .filter(|v| v.as_ref().is_err_and(|r| r.reason == Reason::Disagree))
            .count(),
        6,
        "two for each time: {out:?}"
    );
}

#[test]
fn one_sentence_sent_twice_or_by_two_talkers_is_one_fix() {
    let cycle = "$GPRMC,080000.00,A,4808.2200,N,01134.5000,E,0.0,,180324,,,A\r\n$GPGGA,080000.00,4808.2200,N,01134.5000,E,1,09,1.0,520.0,M,47.0,M,,\r\n$GPGSA,A,3,01,02,03,04,05,06,,,,,,,1.8,1.0,1.4\r\n$GPVTG,,T,,M,0.0,N,0.0,K,A\r\n";
    let talker2 = cycle.replace("$GP", "$GN");
    let out = decode_all(&format!("{cycle}{cycle}{talker2}"));
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].is_ok());
}

#[test]
fn a_repeated_time_is_a_duplicate_even_when_the_first_was_rejected() {
    let mut run = Run::new();
    run.push(&north(0, 1.0, 14.0));
    run.push(&north(1, 1.0, 14.0));
    let mut bad = north(2, 1.0, 14.0);
    bad.gga.as_mut().unwrap().hdop = Some(25.0);
    run.push(&bad);
    // The receiver repeats 08:00:02 with the position of a second later.
    let mut again = north(3, 1.0, 14.0);
    again.time_of_day_ms = bad.time_of_day_ms;
    let out = run.push(&again);
    assert_eq!(
        out.last().unwrap().as_ref().unwrap_err().reason,
        Reason::DuplicateTime
    );
}

#[test]
fn an_accepted_fix_carries_what_the_receiver_said() {
    let mut run = Run::new();
    run.all([north(0, 1.0, 14.0), north(1, 1.0, 14.0)]);
    let fix: &Fix = run.out[1].as_ref().unwrap();
    assert!((fix.speed_mps.unwrap() - 14.0).abs() < 1e-9);
    assert_eq!(fix.course_deg, Some(0.0));
}
