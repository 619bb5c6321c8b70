//! The policy's rules at their exact boundaries, on hand-made drives in a local metre frame.

use super::cone::Frame;
use super::measure::{max_and_p95, run};
use super::*;
use crate::fix::FixMode;

fn settings() -> Settings {
    Settings::adaptive(10.0)
}

/// A fix `east`, `north` metres from a point in Munich, at `t_ms`, with a speed.
fn at(t_ms: i64, east: f64, north: f64, speed: Option<f64>) -> Fix {
    let (lat, lon) = Frame::at(48.137, 11.576).position(east, north);
    Fix {
        time_ms: 1_773_475_200_000 + t_ms,
        lat,
        lon,
        alt_m: Some(519.0),
        speed_mps: speed,
        course_deg: Some(90.0),
        hdop: Some(0.9),
        sats: Some(9),
        mode: FixMode::ThreeD,
        event: None,
    }
}

/// Seconds after the start of each kept fix, with its event, including those `finish` keeps.
fn kept(s: Settings, fixes: &[Fix]) -> Vec<(f64, Option<Event>)> {
    run(s, fixes)
        .sent
        .iter()
        .map(|f| ((f.time_ms - 1_773_475_200_000) as f64 / 1000.0, f.event))
        .collect()
}

fn times(k: &[(f64, Option<Event>)]) -> Vec<f64> {
    k.iter().map(|(t, _)| *t).collect()
}

/// 10 m/s east, one fix a second, for `secs` seconds from `t0` at `x0`.
fn cruise(t0_s: i64, x0: f64, secs: i64) -> Vec<Fix> {
    (0..secs)
        .map(|i| at((t0_s + i) * 1000, x0 + 10.0 * i as f64, 0.0, Some(10.0)))
        .collect()
}

#[test]
fn mode_all_keeps_every_fix_as_it_came() {
    let fixes = cruise(0, 0.0, 50);
    let s = Settings {
        adaptive: false,
        ..settings()
    };
    let r = run(s, &fixes);
    assert_eq!(r.sent, fixes);
    assert_eq!(r.counts.kept, 50);
    assert_eq!(r.counts.dropped, 0);
}

#[test]
fn a_straight_drive_at_constant_speed_keeps_one_fix_per_max_interval() {
    // 0..=180 s: the window may reach exactly 60 s, no further.
    let k = kept(settings(), &cruise(0, 0.0, 181));
    assert_eq!(times(&k), vec![0.0, 60.0, 120.0, 180.0]);
}

#[test]
fn max_interval_is_met_exactly_with_irregular_fixes() {
    // A window of exactly max_interval_s may close on its last fix; 1 ms more may not (an
    // interval shorter than the 5 s gap, so the interval rule alone decides).
    let s = Settings {
        max_interval_ms: 4_000,
        ..settings()
    };
    let line = |ts: &[i64]| -> Vec<Fix> {
        ts.iter()
            .map(|&t| at(t, t as f64 / 100.0, 0.0, Some(10.0)))
            .collect()
    };
    assert_eq!(times(&kept(s, &line(&[0, 2_000, 4_000]))), vec![0.0, 4.0]);
    assert_eq!(
        times(&kept(s, &line(&[0, 2_000, 4_001]))),
        vec![0.0, 2.0, 4.001]
    );
}

#[test]
fn a_fix_off_the_line_by_just_under_the_bound_is_dropped_and_just_over_it_is_kept() {
    for (off, kept_middle) in [(9.9, false), (10.01, true), (-9.9, false), (-10.01, true)] {
        let fixes = [
            at(0, 0.0, 0.0, Some(10.0)),
            at(1_000, 10.0, off, Some(10.0)),
            at(2_000, 20.0, 0.0, Some(10.0)),
        ];
        let expect = if kept_middle {
            vec![0.0, 1.0, 2.0]
        } else {
            vec![0.0, 2.0]
        };
        assert_eq!(times(&kept(settings(), &fixes)), expect, "offset {off} m");
    }
}

#[test]
fn a_fix_early_or_late_on_the_line_counts_its_time_error() {
    // On the straight line, but where the car was 1.05 s later: 10.5 m ahead in time.
    let fixes = [
        at(0, 0.0, 0.0, Some(10.0)),
        at(1_000, 20.5, 0.0, Some(10.0)),
        at(2_000, 20.0, 0.0, Some(10.0)),
        at(3_000, 30.0, 0.0, Some(10.0)),
    ];
    let k = kept(settings(), &fixes);
    assert!(
        k.len() >= 3,
        "the fix 10 m ahead of its time is not smoothed away: {k:?}"
    );
}

#[test]
fn a_corner_keeps_the_fix_before_the_turn_and_every_fix_stays_within_the_bound() {
    let mut fixes = cruise(0, 0.0, 30);
    fixes.extend((0..30).map(|i| at((30 + i) * 1000, 290.0, 10.0 * (i + 1) as f64, Some(10.0))));
    let r = run(settings(), &fixes);
    let (max, _) = max_and_p95(&r.errors(false));
    assert!(max <= 10.0, "{max}");
    assert!(r.sent.len() <= 4, "{:?}", r.kept);
    assert_eq!(
        r.counts.kept + r.counts.dropped,
        fixes.len() as u64,
        "every fix decided after finish"
    );
}

/// Decelerating to a stop at `x` by `t0`, then standing.
fn stand(t0_s: i64, x: f64, secs: i64, speed: f64) -> Vec<Fix> {
    (0..secs)
        .map(|i| at((t0_s + i) * 1000, x, 0.0, Some(speed)))
        .collect()
}

#[test]
fn slow_for_exactly_stop_after_s_is_a_stop_and_a_second_less_is_not() {
    let mut fixes = cruise(0, 0.0, 10);
    // Standing from t = 10 s with speed 0.79 (below 0.8): the stop falls at 40 s.
    fixes.extend(stand(10, 95.0, 31, 0.79));
    let k = kept(settings(), &fixes);
    assert_eq!(k.iter().filter(|(_, e)| *e == Some(Event::Stop)).count(), 1);
    assert!(k.contains(&(40.0, Some(Event::Stop))), "{k:?}");

    // 29 s slow, then one fix at the threshold (0.8 is not below it): no stop.
    let mut fixes = cruise(0, 0.0, 10);
    fixes.extend(stand(10, 95.0, 30, 0.2));
    fixes.push(at(40_000, 95.0, 0.0, Some(0.8)));
    fixes.extend(stand(41, 95.0, 29, 0.2));
    let k = kept(settings(), &fixes);
    assert!(k.iter().all(|(_, e)| e.is_none()), "{k:?}");
}

#[test]
fn wander_while_parked_sends_nothing_but_the_heartbeat() {
    let mut fixes = cruise(0, 0.0, 10);
    fixes.extend(stand(10, 95.0, 40, 0.0));
    // Twenty minutes parked: positions wander up to 25 m (inside 3 x max_error_m), speeds
    // up to 0.6 m/s, as a receiver under trees does; one speed spike of one epoch.
    let mut state = 7u64;
    for i in 0..1200 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let a = (state >> 11) as f64 / (1u64 << 53) as f64 * std::f64::consts::TAU;
        let r = 25.0 * ((state >> 7) % 1000) as f64 / 1000.0;
        let speed = if i == 500 {
            2.5
        } else {
            0.6 * ((state >> 3) % 100) as f64 / 100.0
        };
        fixes.push(at(
            (50 + i) * 1000,
            95.0 + r * a.cos(),
            r * a.sin(),
            Some(speed),
        ));
    }
    let k = kept(settings(), &fixes);
    let stop_at = k
        .iter()
        .find(|(_, e)| *e == Some(Event::Stop))
        .map(|(t, _)| *t)
        .expect("a stop");
    let after: Vec<f64> = times(&k).into_iter().filter(|t| *t > stop_at).collect();
    // The heartbeat 900 s after the stop (the fix before the one past it), then the last
    // fix at finish; nothing for the wander or the spike.
    assert_eq!(after.len(), 2, "{k:?}");
    assert!(
        after[0] - stop_at <= 900.0 && after[0] - stop_at > 899.0,
        "{k:?}"
    );
    assert!(k.iter().all(|(_, e)| *e != Some(Event::Start)), "{k:?}");
}

#[test]
fn parked_interval_is_met_exactly() {
    let s = Settings {
        parked_interval_ms: 100_000,
        ..settings()
    };
    let mut fixes = stand(0, 0.0, 40, 0.0);
    // Stop at 30 s; then fixes every 5 s: the heartbeat lands at most 100 s after.
    fixes.extend((0..60).map(|i| at(40_000 + i * 5_000, 0.0, 0.0, Some(0.0))));
    let k = kept(s, &fixes);
    let t = times(&k);
    assert_eq!(t[..3], [0.0, 30.0, 130.0], "{k:?}");
    assert!(t.windows(2).all(|w| w[1] - w[0] <= 100.0), "{k:?}");
}

#[test]
fn moving_again_for_two_seconds_is_a_start_on_the_first_moving_fix() {
    let mut fixes = stand(0, 0.0, 40, 0.0);
    // Pulling away at 40 s: 1.0, 2.0, 3.0 m/s.
    for (i, v) in [1.0, 2.0, 3.0, 4.0, 5.0].iter().enumerate() {
        let t = 40 + i as i64;
        fixes.push(at(t * 1000, 0.5 * v * (i + 1) as f64, 0.0, Some(*v)));
    }
    let k = kept(settings(), &fixes);
    assert!(k.contains(&(30.0, Some(Event::Stop))), "{k:?}");
    assert!(k.contains(&(40.0, Some(Event::Start))), "{k:?}");

    // Moving for one second only, then standing again: nothing.
    let mut fixes = stand(0, 0.0, 40, 0.0);
    fixes.push(at(40_000, 0.0, 0.0, Some(1.5)));
    fixes.push(at(41_000, 0.0, 0.0, Some(1.5)));
    fixes.extend(stand(42, 0.0, 20, 0.0));
    let k = kept(settings(), &fixes);
    assert!(k.iter().all(|(_, e)| *e != Some(Event::Start)), "{k:?}");
    assert_eq!(times(&k), vec![0.0, 30.0, 61.0], "{k:?}");
}

#[test]
fn creeping_away_below_the_stop_speed_is_a_start_once_it_leaves_the_stop() {
    let mut fixes = stand(0, 0.0, 40, 0.0);
    // 0.5 m/s (below 0.8) for two minutes: 30 m (3 x max_error_m) after a minute.
    fixes.extend((1..=120).map(|i| at((40 + i) * 1000, 0.5 * i as f64, 0.0, Some(0.5))));
    let k = kept(settings(), &fixes);
    let start = k.iter().find(|(_, e)| *e == Some(Event::Start));
    assert!(
        start.is_some_and(|(t, _)| (100.0..=103.0).contains(t)),
        "{k:?}"
    );
}

#[test]
fn a_tunnel_keeps_the_fixes_on_both_sides_and_silence_sends_the_last_one_at_once() {
    let mut fixes = cruise(0, 0.0, 20);
    // 20 s without fixes, then on along the same line.
    fixes.extend(cruise(40, 400.0, 20));
    let k = kept(settings(), &fixes);
    assert_eq!(times(&k), vec![0.0, 19.0, 40.0, 59.0]);

    // Just over the gap (5.001 s) is a gap; exactly 5 s is not.
    let gap = |ms: i64| {
        let fixes = [
            at(0, 0.0, 0.0, Some(10.0)),
            at(1_000, 10.0, 0.0, Some(10.0)),
            at(1_000 + ms, 10.0 + ms as f64 / 100.0, 0.0, Some(10.0)),
            at(2_000 + ms, 20.0 + ms as f64 / 100.0, 0.0, Some(10.0)),
        ];
        times(&kept(settings(), &fixes)).len()
    };
    assert_eq!(gap(5_000), 2);
    assert_eq!(gap(5_001), 4);

    // The driver's silence keeps the fix still pending.
    let mut p = Policy::new(settings());
    let mut out = Kept::new();
    for f in cruise(0, 0.0, 5) {
        p.push(&f, &mut out);
    }
    assert_eq!(p.pending(), 1);
    p.silence(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].time_ms, cruise(4, 40.0, 1)[0].time_ms);
    assert_eq!(p.pending(), 0);
}

#[test]
fn a_receiver_time_jump_back_keeps_both_sides_and_starts_afresh() {
    let mut fixes = cruise(100, 0.0, 10);
    // The receiver's clock resets to 50 s earlier; the car drives on.
    fixes.extend(cruise(60, 100.0, 10));
    let k = kept(settings(), &fixes);
    assert_eq!(times(&k), vec![100.0, 109.0, 60.0, 69.0]);
    let r = run(settings(), &fixes);
    let (max, _) = max_and_p95(&r.errors(false));
    assert!(max < 1e-6, "nothing is interpolated across the jump: {max}");
}

#[test]
fn a_stop_is_found_from_positions_when_the_receiver_sends_no_speed() {
    let mut fixes: Vec<Fix> = cruise(0, 0.0, 10)
        .into_iter()
        .map(|f| Fix {
            speed_mps: None,
            ..f
        })
        .collect();
    fixes.extend(stand(10, 95.0, 40, 0.0).into_iter().map(|f| Fix {
        speed_mps: None,
        ..f
    }));
    let k = kept(settings(), &fixes);
    assert_eq!(
        k.iter().filter(|(_, e)| *e == Some(Event::Stop)).count(),
        1,
        "{k:?}"
    );
}

#[test]
fn finish_keeps_what_is_pending_and_every_fix_is_counted() {
    let mut p = Policy::new(settings());
    let mut out = Kept::new();
    let mut kept = 0;
    let fixes = cruise(0, 0.0, 30);
    for f in &fixes {
        p.push(f, &mut out);
        kept += out.len();
        let c = p.counts();
        assert_eq!(
            c.kept + c.dropped + p.pending(),
            (fixes.iter().position(|x| x == f).unwrap() + 1) as u64
        );
    }
    p.finish(&mut out);
    kept += out.len();
    assert_eq!(
        out.last().map(|f| f.time_ms),
        fixes.last().map(|f| f.time_ms)
    );
    assert_eq!(p.counts().kept as usize, kept);
    assert_eq!(p.pending(), 0);
}

#[test]
fn decisions_follow_receiver_time_only() {
    // The same fixes give the same kept fixes, whoever runs them and however often.
    let mut fixes = cruise(0, 0.0, 40);
    fixes.extend(stand(40, 395.0, 60, 0.0));
    let a = run(settings(), &fixes);
    let b = run(settings(), &fixes);
    assert_eq!(a.sent, b.sent);
    assert_eq!(a.kept, b.kept);
}
