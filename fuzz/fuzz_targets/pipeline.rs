//! Fuzz target: arbitrary bytes through the pipeline (framing, parsing, epoch assembly and
//! validation).
//! Nothing may panic, hang or grow without bound; every accepted fix must satisfy the
//! validator's own promises (finite, in range, not 0,0).

#![no_main]

use gps_agent::config::ValidateSettings;
use gps_agent::pipeline::Pipeline;
use gps_agent::validate::Verdict;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunking and strictness, so splits across feeds are explored.
    let (head, rest) = match data.split_first() {
        Some((h, r)) => (*h, r),
        None => return,
    };
    let chunk = usize::from(head % 64) + 1;
    let mut pipeline = Pipeline::new(head & 0x80 == 0, ValidateSettings::default());
    let mut promises = |verdict: Verdict| {
        if let Ok(fix) = verdict {
            assert!(fix.lat.is_finite() && fix.lon.is_finite());
            assert!((-90.0..=90.0).contains(&fix.lat));
            assert!((-180.0..=180.0).contains(&fix.lon));
            assert!(!(fix.lat == 0.0 && fix.lon == 0.0));
            // Every field within its physical range (`validate::ranges`).
            assert!(fix.speed_mps.is_none_or(|v| (0.0..=200.0).contains(&v)));
            assert!(fix.course_deg.is_none_or(|v| (0.0..360.0).contains(&v)));
            assert!(fix.alt_m.is_none_or(|v| (-1_000.0..=20_000.0).contains(&v)));
            assert!(fix.hdop.is_none_or(|v| v >= 0.1 && v.is_finite()));
        }
    };
    for piece in rest.chunks(chunk) {
        pipeline.feed(piece, &mut promises);
    }
    pipeline.finish(&mut promises);
});
