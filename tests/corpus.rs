//! Corpus test: our pipeline (decoder and validator) against gpsd's decoded output for real receiver
//! captures (`../shared/nmea-corpus`, or `GPS_AGENT_CORPUS`).
//!
//! For each log, every gpsd `TPV` with a `time` and `mode >= 2` must be matched by one of our
//! fixes (same time to the millisecond, lat/lon within 1e-6 degree) or rejected by us with a
//! reason code; none of our fixes may stand where gpsd had no fix (gpsd often leaves out the
//! first valid epoch of a log, so a couple of extra fixes per log are reported, and bounded).
//! The agreement per log and in total is printed (`cargo test --test corpus -- --nocapture`);
//! the test fails if the total drops below what the project reached.

use gps_agent::config::Config;
use gps_agent::pipeline::verdicts;
use gps_agent::rejection::Reason;
use std::collections::{BTreeMap, HashMap};

#[path = "support/corpus.rs"]
mod corpus;

/// Agreement reached by this project (matched + rejected-with-reason, over gpsd's valid
/// epochs), in tenths of a percent. Raise it when the code gets better; never lower it to pass.
const MIN_AGREEMENT_PERMILLE: u64 = 1000;
/// Our fixes where gpsd had none, over the whole corpus (see module docs). Lower it when the
/// code gets better; never raise it to pass.
const MAX_EXTRA_FIXES: u64 = 26;
/// Fixes we accepted that gpsd also had, over its valid epochs, in tenths of a percent.
const MIN_MATCHED_PERMILLE: u64 = 940;

const MS_PER_DAY: i64 = 86_400_000;

/// Logs whose gpsd dates are known to be wrong (gpsd's week-rollover guess shifted them by
/// 1024 weeks, or it took the host's date): compare by time of day only.
const COMPARE_TIME_OF_DAY_ONLY: &[&str] = &["neo-m8n.log", "rst39.log"];

/// Validation thresholds for historical captures: the default config, but dates from 2000 on
/// are taken as real (the captures are from 2001-2023; the 2020 floor and the week-rollover
/// rule have their own unit tests).
fn corpus_config() -> Config {
    let mut cfg = Config::default();
    cfg.validate.not_before_year = 2000;
    cfg
}

#[derive(Debug, Clone, Copy)]
struct GpsdFix {
    lat: Option<f64>,
    lon: Option<f64>,
}

/// gpsd's valid epochs of one log: time (ms) -> every position it reported for that time.
fn gpsd_valid_epochs(chk: &str) -> BTreeMap<i64, Vec<GpsdFix>> {
    let mut out: BTreeMap<i64, Vec<GpsdFix>> = BTreeMap::new();
    for line in chk.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["class"] != "TPV" {
            continue;
        }
        let Some(time) = v["time"].as_str() else {
            continue;
        };
        if v["mode"].as_u64().unwrap_or(0) < 2 {
            continue;
        }
        let Ok(t) = chrono::DateTime::parse_from_rfc3339(time) else {
            continue;
        };
        out.entry(t.timestamp_millis()).or_default().push(GpsdFix {
            lat: v["lat"].as_f64(),
            lon: v["lon"].as_f64(),
        });
    }
    out
}

#[derive(Debug, Default, Clone)]
struct LogResult {
    /// Our reasons for the gpsd epochs we rejected: reason -> count.
    reasons: BTreeMap<&'static str, u64>,
    gpsd: u64,
    matched: u64,
    rejected: u64,
    unexplained: u64,
    extra: u64,
    ours: u64,
}

struct Ours {
    /// time -> (lat, lon) of accepted fixes
    fixes: Vec<(i64, f64, f64)>,
    /// rejected epochs: (time ms if known, time of day ms if known, reason)
    rejections: Vec<(Option<i64>, Option<u32>, Reason)>,
}

fn run_ours(log: &[u8]) -> Ours {
    let cfg = corpus_config();
    let mut ours = Ours {
        fixes: Vec::new(),
        rejections: Vec::new(),
    };
    for verdict in verdicts(log, cfg.gnss.require_checksum, &cfg.validate) {
        match verdict {
            Ok(fix) => ours.fixes.push((fix.time_ms, fix.lat, fix.lon)),
            Err(rej) => ours
                .rejections
                .push((rej.time_ms, rej.time_of_day_ms, rej.reason)),
        }
    }
    ours
}

fn compare(name: &str, gpsd: &BTreeMap<i64, Vec<GpsdFix>>, ours: &Ours) -> LogResult {
    let tod_only = COMPARE_TIME_OF_DAY_ONLY.contains(&name);
    let key = |t: i64| {
        if tod_only {
            t.rem_euclid(MS_PER_DAY)
        } else {
            t
        }
    };
    let mut gpsd_by_key: HashMap<i64, &Vec<GpsdFix>> = HashMap::new();
    for (t, v) in gpsd {
        gpsd_by_key.insert(key(*t), v);
    }
    let our_fixes: HashMap<i64, (f64, f64)> = ours
        .fixes
        .iter()
        .map(|(t, la, lo)| (key(*t), (*la, *lo)))
        .collect();
    let mut r = LogResult {
        gpsd: gpsd.len() as u64,
        ours: ours.fixes.len() as u64,
        ..Default::default()
    };
    for (t, positions) in gpsd {
        let k = key(*t);
        let matched = our_fixes.get(&k).is_some_and(|(la, lo)| {
            positions.iter().any(|p| {
                p.lat.is_some_and(|x| (x - la).abs() <= 1e-6)
                    && p.lon.is_some_and(|x| (x - lo).abs() <= 1e-6)
            })
        });
        let tod = t.rem_euclid(MS_PER_DAY);
        let rejected = ours.rejections.iter().find(|(rt, rtod, _)| match rt {
            Some(rt) => key(*rt) == k,
            None => rtod.is_some_and(|x| i64::from(x) == tod),
        });
        if matched {
            r.matched += 1;
        } else if let Some((_, _, reason)) = rejected {
            r.rejected += 1;
            *r.reasons.entry(reason.as_str()).or_default() += 1;
        } else {
            r.unexplained += 1;
        }
    }
    r.extra = our_fixes
        .keys()
        .filter(|k| !gpsd_by_key.contains_key(k))
        .count() as u64;
    r
}

#[test]
fn our_fixes_agree_with_gpsd_over_the_corpus() {
    let Some(logs) = corpus::logs("our_fixes_agree_with_gpsd_over_the_corpus") else {
        return;
    };
    assert!(
        logs.len() >= 60,
        "expected the gpsd corpus, found {} logs",
        logs.len()
    );

    let mut total = LogResult::default();
    println!(
        "{:<30} {:>6} {:>7} {:>8} {:>11} {:>6} {:>6} {:>9}",
        "log", "gpsd", "matched", "rejected", "unexplained", "extra", "ours", "agreement"
    );
    for log in &logs {
        let name = log
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        let data = std::fs::read(log).expect("read log");
        let chk = std::fs::read_to_string(log.with_extension("log.chk")).expect("read chk");
        let gpsd = gpsd_valid_epochs(&chk);
        let ours = run_ours(&data);
        let r = compare(&name, &gpsd, &ours);
        let agreement = if r.gpsd == 0 {
            100.0
        } else {
            100.0 * (r.matched + r.rejected) as f64 / r.gpsd as f64
        };
        let reasons: Vec<String> = r.reasons.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!(
            "{:<30} {:>6} {:>7} {:>8} {:>11} {:>6} {:>6} {:>8.1}%  {}",
            name,
            r.gpsd,
            r.matched,
            r.rejected,
            r.unexplained,
            r.extra,
            r.ours,
            agreement,
            reasons.join(", ")
        );
        for (k, n) in &r.reasons {
            *total.reasons.entry(k).or_default() += n;
        }
        total.gpsd += r.gpsd;
        total.matched += r.matched;
        total.rejected += r.rejected;
        total.unexplained += r.unexplained;
        total.extra += r.extra;
        total.ours += r.ours;
    }
    let agreement_permille = 1000 * (total.matched + total.rejected) / total.gpsd.max(1);
    let matched_permille = 1000 * total.matched / total.gpsd.max(1);
    println!(
        "{:<30} {:>6} {:>7} {:>8} {:>11} {:>6} {:>6} {:>8.1}%",
        "TOTAL",
        total.gpsd,
        total.matched,
        total.rejected,
        total.unexplained,
        total.extra,
        total.ours,
        agreement_permille as f64 / 10.0
    );
    let reasons: Vec<String> = total
        .reasons
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!("our reasons where gpsd had a fix: {}", reasons.join(", "));
    println!(
        "corpus: agreement {:.1}% (matched {:.1}%, rejected with a reason {}), extra fixes {}",
        agreement_permille as f64 / 10.0,
        matched_permille as f64 / 10.0,
        total.rejected,
        total.extra
    );
    assert!(
        agreement_permille >= MIN_AGREEMENT_PERMILLE,
        "agreement {agreement_permille}‰ fell below {MIN_AGREEMENT_PERMILLE}‰"
    );
    assert!(
        matched_permille >= MIN_MATCHED_PERMILLE,
        "matched {matched_permille}‰ fell below {MIN_MATCHED_PERMILLE}‰"
    );
    assert!(
        total.extra <= MAX_EXTRA_FIXES,
        "{} fixes of ours where gpsd had none (max {MAX_EXTRA_FIXES})",
        total.extra
    );
}
