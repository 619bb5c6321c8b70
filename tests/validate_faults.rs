//! Fault injection on the project's simulator: noisy drives at 1 Hz and 10 Hz, several seeds,
//! with about 3% of epochs given one labelled fault each, through the real decoder and
//! validator. Prints recall per fault kind and the share of clean epochs rejected; asserts
//! recall >= 99% for every kind (week rollover: corrected, the fix accepted with the right
//! time) and at most 0.1% of clean epochs rejected.
//!
//! `cargo test --test validate_faults -- --nocapture` runs 8 seeds of 30 minutes at 1 Hz and
//! 6 minutes at 10 Hz (about 130 faults of each kind); `GPS_AGENT_FAULT_SEEDS=40` runs more
//! seeds of longer drives (60 and 20 minutes).

use std::collections::BTreeMap;

use gps_agent::config::ValidateConfig;
use gps_agent::sim::{Drive, DriveSpec, FaultKind, FaultSpec, NoiseSpec, SentenceKind, SimEpoch};
use gps_agent::validate::Verdict;

#[derive(Debug, Default)]
struct Score {
    /// kind -> (caught, injected)
    kinds: BTreeMap<FaultKind, (u64, u64)>,
    /// Clean epochs with a fix: (rejected, all).
    clean: (u64, u64),
    /// What the misses were, for the report.
    misses: Vec<String>,
    clean_rejections: Vec<String>,
    /// Repeated times that repeated the position too (see `score`).
    absorbed: u64,
}

impl Score {
    fn add(&mut self, other: Score) {
        for (k, (c, n)) in other.kinds {
            let e = self.kinds.entry(k).or_default();
            e.0 += c;
            e.1 += n;
        }
        self.clean.0 += other.clean.0;
        self.clean.1 += other.clean.1;
        self.misses.extend(other.misses);
        self.clean_rejections.extend(other.clean_rejections);
        self.absorbed += other.absorbed;
    }
}

/// Every verdict of the drive, in order: one per epoch (every epoch's lines are intact and
/// each is assembled into exactly one epoch, a repeated time included).
fn verdicts(epochs: &[SimEpoch], cfg: &ValidateConfig) -> Vec<Verdict> {
    let mut bytes = Vec::new();
    for e in epochs {
        e.write_nmea(&mut bytes);
    }
    gps_agent::pipeline::verdicts(&bytes, true, cfg)
}

/// The fields of the epoch's RMC as printed (0 is the address).
fn rmc_fields(e: &SimEpoch) -> Vec<String> {
    let rmc = e
        .sentences
        .iter()
        .find(|s| s.kind == SentenceKind::Rmc)
        .unwrap();
    rmc.line.split(',').map(str::to_owned).collect()
}

/// The RMC's time, status and position as printed.
fn rmc_position(e: &SimEpoch) -> Vec<String> {
    rmc_fields(e)[1..7].to_vec()
}

/// The RMC's `hhmmss.ss` as milliseconds of the day.
fn printed_time_of_day(e: &SimEpoch) -> i64 {
    let f = &rmc_fields(e)[1];
    let n = |r: std::ops::Range<usize>| f[r].parse::<i64>().unwrap();
    ((n(0..2) * 60 + n(2..4)) * 60 + n(4..6)) * 1000 + n(7..9) * 10
}

fn score(spec: &DriveSpec, cfg: &ValidateConfig) -> Score {
    let epochs: Vec<SimEpoch> = Drive::new(spec.clone()).unwrap().collect();
    let verdicts = verdicts(&epochs, cfg);
    let mut s = Score::default();
    // A repeated time that also repeats the position to the last digit (a parked car at
    // 10 Hz) is the same sentence sent twice: assembly keeps the first and the repeat says
    // nothing new, so it has no verdict of its own and nothing of it can reach a fix.
    let mut absorbed = 0;
    let mut paired = Vec::new();
    let mut next = verdicts.iter();
    for (i, e) in epochs.iter().enumerate() {
        let repeat = e.fault == Some(FaultKind::RepeatedTime)
            && i > 0
            && rmc_position(e) == rmc_position(&epochs[i - 1]);
        if repeat {
            absorbed += 1;
            let kind = s.kinds.entry(FaultKind::RepeatedTime).or_default();
            kind.0 += 1;
            kind.1 += 1;
        } else {
            paired.push((e, next.next().expect("a verdict per epoch")));
        }
    }
    assert!(next.next().is_none(), "one verdict per epoch");
    s.absorbed = absorbed;
    for (e, v) in paired {
        // The verdict belongs to this epoch: same time as printed (a repeated time prints
        // the previous epoch's).
        let printed = e.time_ms - e.time_ms.rem_euclid(86_400_000) + printed_time_of_day(e);
        let time = match v {
            Ok(fix) => Some(fix.time_ms),
            Err(r) => r.time_ms,
        };
        if let (Some(t), Some(kind)) = (time, e.fault) {
            if kind != FaultKind::WeekRollover {
                assert_eq!(t, printed, "{kind:?} at {}", e.index);
            }
        } else if let Some(t) = time {
            assert_eq!(t, printed, "epoch {}", e.index);
        }
        let what = |v: &Verdict| match v {
            Ok(_) => "accepted".to_string(),
            Err(r) => r.reason.as_str().to_string(),
        };
        let label = format!(
            "seed {} {} Hz epoch {} ({:.1} m/s, hdop {:.2})",
            spec.seed, spec.rate_hz, e.index, e.speed_mps, e.hdop
        );
        match e.fault {
            Some(kind) => {
                let caught = match v {
                    Ok(fix) => kind.caught_as().is_empty() && fix.time_ms == e.time_ms,
                    Err(r) => kind.caught_as().contains(&r.reason.as_str()),
                };
                let entry = s.kinds.entry(kind).or_default();
                entry.1 += 1;
                if caught {
                    entry.0 += 1;
                } else {
                    s.misses
                        .push(format!("{} {label}: {}", kind.as_str(), what(v)));
                }
            }
            None if e.fix => {
                s.clean.1 += 1;
                if v.is_err() {
                    s.clean.0 += 1;
                    s.clean_rejections.push(format!("{label}: {}", what(v)));
                }
            }
            None => {}
        }
    }
    s
}

fn drives() -> Vec<DriveSpec> {
    let seeds: u64 = std::env::var("GPS_AGENT_FAULT_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let long = seeds > 8;
    let mut out = Vec::new();
    for seed in 1..=seeds {
        for (rate_hz, minutes) in [
            (1u8, if long { 60 } else { 30 }),
            (10, if long { 20 } else { 6 }),
        ] {
            let epochs = minutes * 60 * u32::from(rate_hz);
            out.push(DriveSpec {
                seed: 1000 + seed,
                rate_hz,
                epochs,
                // A tunnel a third of the way: the fix drops out for 20 s and comes back.
                tunnel: Some((epochs / 3, 20 * u32::from(rate_hz))),
                talker: if seed % 2 == 0 { *b"GN" } else { *b"GP" },
                precision_decimals: if seed % 3 == 0 { 5 } else { 4 },
                noise: Some(noise_spec()),
                faults: Some(FaultSpec::default()),
                ..DriveSpec::default()
            });
        }
    }
    out
}

#[test]
fn motion_and_single_epoch_faults_are_caught_and_clean_epochs_pass() {
    let cfg = ValidateConfig::default();
    let mut total = Score::default();
    for spec in drives() {
        total.add(score(&spec, &cfg));
    }
    println!(
        "{:<16} {:>7} {:>8} {:>8}",
        "fault", "caught", "injected", "recall"
    );
    let mut injected = 0;
    let mut caught = 0;
    for (kind, (c, n)) in &total.kinds {
        println!(
            "{:<16} {:>7} {:>8} {:>7.1}%",
            kind.as_str(),
            c,
            n,
            100.0 * *c as f64 / *n as f64
        );
        injected += n;
        caught += c;
    }
    println!(
        "{:<16} {:>7} {:>8} {:>7.1}%",
        "all",
        caught,
        injected,
        100.0 * caught as f64 / injected as f64
    );
    let (rej, clean) = total.clean;
    println!(
        "clean epochs rejected: {rej} of {clean} ({:.3}%)",
        100.0 * rej as f64 / clean as f64
    );
    println!(
        "(of the repeated times, {} repeated the position too: one sentence sent twice, kept once)",
        total.absorbed
    );
    for m in total.misses.iter().take(40) {
        println!("missed: {m}");
    }
    for m in total.clean_rejections.iter().take(40) {
        println!("clean rejected: {m}");
    }
    assert_eq!(
        total.kinds.len(),
        FaultKind::ALL.len(),
        "every kind was injected"
    );
    for (kind, (c, n)) in &total.kinds {
        assert!(*n >= 20, "{kind:?}: only {n} injected");
        assert!(*c as f64 >= 0.99 * *n as f64, "{kind:?}: {c} of {n} caught");
    }
    assert!(
        rej as f64 <= 0.001 * clean as f64,
        "{rej} of {clean} clean epochs rejected"
    );
}

fn noise_spec() -> NoiseSpec {
    let v = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .and_then(|x| x.parse().ok())
            .unwrap_or(d)
    };
    NoiseSpec {
        position_sigma_m: v("NS_SIGMA", 2.5),
        correlation_s: v("NS_CORR", 90.0),
        jitter_m: v("NS_JITTER", 0.05),
        velocity_sigma_mps: v("NS_VEL", 0.05),
        vertical_factor: 1.6,
    }
}
