//! `gps-agent parse --report LOG`: what the configuration's `[report]` makes of a capture's
//! accepted fixes (`super::parse` reads them through the pipeline), to tune it on a real
//! drive: kept against accepted (and against the offline optimum), the
//! synchronized error of the redrawn track (largest and 95th percentile, while moving), the
//! longest gap between kept fixes, the events, and what the kept fixes cost as payload in
//! JSON (`v` 1) and CBOR (`v` 2), per fix and per hour of the capture.
//!
//! Payload is counted for two batchings, both printed: messages of `mqtt.batch_max` fixes
//! (a backlog drained after a coverage gap) and one message per minute of receiver time (a
//! live fix waiting up to 60 s for company). Only payload bytes: MQTT, TLS and TCP/IP add
//! their own per message.

use crate::config::Settings as AgentSettings;
use crate::fix::{Event, Fix};
use crate::report::measure::{self, max_and_p95, payload_bytes, Batching};
use crate::report::Settings;
use std::io::Write;

/// The report on `fixes`, a capture's accepted fixes in receiver order.
pub fn write(out: &mut impl Write, cfg: &AgentSettings, fixes: &[Fix]) -> std::io::Result<()> {
    let settings = Settings::from_config(&cfg.report);
    let r = measure::run(settings, fixes);
    let r_cfg = &cfg.report;
    if settings.adaptive {
        writeln!(
            out,
            "report: adaptive, max_error_m {}, max_interval_s {}, parked_interval_s {}, stop_speed_mps {}, stop_after_s {}",
            r_cfg.max_error_m, r_cfg.max_interval_s, r_cfg.parked_interval_s, r_cfg.stop_speed_mps, r_cfg.stop_after_s
        )?;
    } else {
        writeln!(out, "report: all (every accepted fix is kept)")?;
    }
    let (accepted, kept) = (fixes.len(), r.sent.len());
    let share = if accepted > 0 {
        100.0 * kept as f64 / accepted as f64
    } else {
        0.0
    };
    write!(
        out,
        "kept: {kept} of {accepted} accepted fixes ({share:.1}%)"
    )?;
    if settings.adaptive && accepted > 0 {
        let optimum = r.optimum();
        write!(
            out,
            "; the offline optimum under the same rules keeps {optimum} ({:.2} x)",
            kept as f64 / optimum.max(1) as f64
        )?;
    }
    writeln!(out)?;
    let count = |e: Event| r.sent.iter().filter(|f| f.event == Some(e)).count();
    let parked = r.parked().iter().filter(|p| **p).count();
    writeln!(
        out,
        "events: {} stop, {} start; {parked} accepted fixes while stopped",
        count(Event::Stop),
        count(Event::Start)
    )?;
    let (max, p95) = max_and_p95(&r.errors(true));
    writeln!(
        out,
        "synchronized error while moving: max {max:.2} m, 95th percentile {p95:.2} m"
    )?;
    let span_ms = match (fixes.first(), fixes.last()) {
        (Some(a), Some(b)) => (b.time_ms - a.time_ms).max(0),
        _ => 0,
    };
    writeln!(
        out,
        "longest gap between kept fixes: {:.1} s (capture spans {:.1} min)",
        r.longest_gap_ms() as f64 / 1000.0,
        span_ms as f64 / 60_000.0
    )?;
    let hours = span_ms as f64 / 3_600_000.0;
    let batch_max = cfg.mqtt.batch_max.get();
    for (what, batching) in [
        (
            format!("in messages of {batch_max} (mqtt.batch_max)"),
            Batching::Count(batch_max),
        ),
        ("one message a minute".to_string(), Batching::Every(60_000)),
    ] {
        let (v1, v2, messages) = payload_bytes(&r.sent, &cfg.device.id, batching);
        let per_fix = |b: usize| b as f64 / kept.max(1) as f64;
        write!(
            out,
            "payload {what}, {messages} messages: v1 JSON {v1} B ({:.1} B/fix), v2 CBOR {v2} B ({:.1} B/fix)",
            per_fix(v1),
            per_fix(v2)
        )?;
        if hours > 0.0 {
            write!(
                out,
                "; per hour {:.1} KB and {:.1} KB",
                v1 as f64 / hours / 1000.0,
                v2 as f64 / hours / 1000.0
            )?;
        }
        writeln!(out)?;
    }
    Ok(())
}
