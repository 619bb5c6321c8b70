//! Zero heap allocation per sentence: the pipeline decoding and validating a log a second
//! time (once the test's own buffers exist) allocates nothing at all, one-epoch-late verdicts of the motion
//! check included. Allocations are counted per thread, so tests
//! running side by side do not count each other's.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations;

use gps_agent::config::ValidateConfig;
use gps_agent::pipeline::Pipeline;
use gps_agent::validate::Verdict;

#[path = "support/corpus.rs"]
mod corpus;

#[test]
fn decoding_a_simulated_drive_allocates_nothing_per_sentence() {
    // Ten minutes at 10 Hz with a tunnel, damaged lines, receiver noise and faults (held
    // and late-decided fixes).
    let spec = gps_agent::sim::DriveSpec {
        rate_hz: 10,
        epochs: 6_000,
        tunnel: Some((2_000, 300)),
        corrupt_every: Some(97),
        noise: Some(gps_agent::sim::NoiseSpec::default()),
        faults: Some(gps_agent::sim::FaultSpec::default()),
        ..gps_agent::sim::DriveSpec::default()
    };
    let mut bytes = Vec::new();
    gps_agent::sim::write_log(gps_agent::sim::Drive::new(spec).unwrap(), &mut bytes).unwrap();
    assert_no_allocation_per_sentence("simulated drive", &bytes);
}

#[test]
fn decoding_a_log_allocates_nothing_per_sentence() {
    let Some(dir) = corpus::dir("decoding_a_log_allocates_nothing_per_sentence") else {
        return;
    };
    // Logs that exercise the rescues (GNS, GLL, GSA), garbage and bad checksums.
    for name in [
        "quectel-eg25-g.log",
        "pharos-360.log",
        "beidou-bd.log",
        "triton400.log",
        "ublox-zed-f9p-nmea.log",
    ] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        assert_no_allocation_per_sentence(name, &bytes);
    }
}

/// Decoding and validating `bytes` a second time (buffers warm) allocates nothing, and
/// yields epochs and fixes.
fn assert_no_allocation_per_sentence(name: &str, bytes: &[u8]) {
    let cfg = ValidateConfig {
        // The captures are from 2001-2023: let their dates count, so fixes are made.
        not_before_year: 2000,
        ..ValidateConfig::default()
    };
    let mut fixes = 0u64;
    let mut run = || {
        let mut pipeline = Pipeline::new(true, cfg.clone());
        let mut count = |v: Verdict| fixes += u64::from(v.is_ok());
        pipeline.feed(bytes, &mut count);
        pipeline.finish(&mut count);
        pipeline.sentences().epochs
    };
    run();
    let before = allocations();
    let epochs = run();
    let during = allocations() - before;
    assert!(epochs > 0, "{name}");
    assert!(fixes > 0, "{name}: the validator made fixes");
    assert_eq!(
        during, 0,
        "{name}: {during} allocations while decoding and validating"
    );
}
