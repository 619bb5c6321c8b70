//! What the kept fixes cost as payload: the compact v2 against JSON over the tour (city,
//! roundabouts, highway, a parked spell) at 1 Hz with adaptive reporting (10 m), with a good
//! receiver's noise, device id `truck-042` and the buffer's 32-character stream id.
//!
//! Batches: messages of `batch_max` (50) fixes, as the uplink takes them from a backlog, and
//! one message a minute, as a live fix waiting up to 60 s for company makes them. The 24-byte
//! target is per kept fix in batches of 50; a one-a-minute message adds its envelope (the
//! lean header's stream id, the keys, the first values in full: about 70 bytes) to three or
//! four fixes.

mod support;

use gps_agent::fix::Fix;
use gps_agent::report::measure::{payload_bytes, run, Batching};
use gps_agent::report::Settings;
use support::drives::tour;

/// The kept fixes of the tour (seed).
fn kept(seed: u64) -> Vec<Fix> {
    let fixes = tour(seed);
    let s = Settings::adaptive(10.0);
    run(s, &fixes).sent
}

#[test]
fn a_kept_fix_costs_at_most_24_bytes_in_v2_in_batches_of_batch_max() {
    let (mut fixes, mut v2, mut v1, mut v2_minute, mut messages_minute) = (0, 0, 0, 0, 0);
    for seed in [2026u64, 1, 2, 3] {
        let k = kept(seed);
        let (j, c, _) = payload_bytes(&k, "truck-042", Batching::Count(50));
        let (_, m, n) = payload_bytes(&k, "truck-042", Batching::Every(60_000));
        println!(
            "seed {seed}: {} kept fixes; batches of 50: v2 {:.1} B/fix, v1 {:.1} B/fix; one message a minute ({n} messages): v2 {:.1} B/fix",
            k.len(),
            c as f64 / k.len() as f64,
            j as f64 / k.len() as f64,
            m as f64 / k.len() as f64
        );
        assert!(c * 6 < j, "v2 is a sixth of JSON or less");
        (fixes, v2, v1) = (fixes + k.len(), v2 + c, v1 + j);
        (v2_minute, messages_minute) = (v2_minute + m, messages_minute + n);
    }
    let per_fix = v2 as f64 / fixes as f64;
    println!(
        "four tours: {fixes} kept fixes, v2 {per_fix:.2} B/fix (v1 {:.1}) in batches of 50; {:.1} B/fix in {messages_minute} one-a-minute messages",
        v1 as f64 / fixes as f64,
        v2_minute as f64 / fixes as f64
    );
    assert!(per_fix <= 24.0, "{per_fix} bytes per kept fix");
}
