//! `[report]` and `[mqtt] payload` in the config file: defaults, ranges with the key and its
//! line, and unknown values.

use gps_agent::config::{self, ConfigError, PayloadFormat, ReportMode};

fn problems(text: &str) -> Vec<String> {
    match config::parse_str(text) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid { problems }) => {
            problems.iter().map(ToString::to_string).collect()
        }
        Err(e) => vec![e.to_string()],
    }
}

#[test]
fn the_adaptive_keys_read_with_their_units() {
    let cfg = config::parse_str(
        "[report]\nmode = \"adaptive\"\nmax_error_m = 5.5\nmax_interval_s = 30\n\
         parked_interval_s = 600\nstop_speed_mps = 0.5\nstop_after_s = 20\n\
         [mqtt]\npayload = \"cbor\"\n",
    )
    .unwrap();
    assert_eq!(cfg.report.mode, ReportMode::Adaptive);
    assert_eq!(cfg.report.max_error_m, 5.5);
    assert_eq!(cfg.report.max_interval_s, 30.0);
    assert_eq!(cfg.mqtt.payload, PayloadFormat::Cbor);
    let s = gps_agent::report::Settings::from_config(&cfg.report);
    assert!(s.adaptive);
    assert_eq!(
        (s.max_interval_ms, s.parked_interval_ms, s.stop_after_ms),
        (30_000, 600_000, 20_000)
    );
}

#[test]
fn out_of_range_values_name_their_key_and_line() {
    let p = problems(
        "[report]\nmax_error_m = 0\nmax_interval_s = -1\nparked_interval_s = 90000\n\
         stop_speed_mps = 11\nstop_after_s = nan\n",
    );
    let want = [
        "report.max_error_m (line 2)",
        "report.max_interval_s (line 3)",
        "report.parked_interval_s (line 4)",
        "report.stop_speed_mps (line 5)",
        "report.stop_after_s (line 6)",
    ];
    for w in want {
        assert!(p.iter().any(|x| x.starts_with(w)), "{w} in {p:?}");
    }
}

#[test]
fn a_parked_interval_below_the_moving_one_is_refused() {
    let p = problems("[report]\nmax_interval_s = 120\nparked_interval_s = 60\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("report.parked_interval_s (line 3)"),
        "{p:?}"
    );
}

#[test]
fn unknown_modes_and_payloads_are_errors() {
    let p = problems("[report]\nmode = \"smart\"\n[mqtt]\npayload = \"protobuf\"\n");
    assert!(p.iter().any(|x| x.starts_with("report.mode")), "{p:?}");
    assert!(p.iter().any(|x| x.starts_with("mqtt.payload")), "{p:?}");
}
