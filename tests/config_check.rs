//! `config::parse_str` / `config::load`: every kind of problem names the right key and line,
//! all problems of a file come out in one pass, the example file is the defaults.

use gps_agent::config::{self, Config, ConfigError, GnssSource, Problem, Settings};
use gps_agent::error::{Classified, ErrorClass};

fn problems(text: &str) -> Vec<Problem> {
    match config::parse_str(text) {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(ConfigError::Invalid { problems }) => problems,
        Err(other) => panic!("expected Invalid, got {other}"),
    }
}

/// The one problem of `text`, asserting there is exactly one.
fn only_problem(text: &str) -> Problem {
    let mut all = problems(text);
    assert_eq!(all.len(), 1, "expected one problem, got {all:#?}");
    all.remove(0)
}

fn assert_problem(text: &str, key: &str, line: Option<usize>, message_part: &str) {
    let p = only_problem(text);
    assert_eq!(p.key, key, "{p}");
    assert_eq!(p.line, line, "{p}");
    assert!(
        p.message.contains(message_part),
        "{p:?} should mention {message_part:?}"
    );
}

#[test]
fn the_example_file_checks_clean_and_shows_exactly_the_defaults() {
    let text = include_str!("../config/example.toml");
    let cfg = config::parse_str(text).unwrap();
    assert_eq!(cfg, Settings::default());
}

#[test]
fn the_cellular_file_is_the_defaults_with_adaptive_reporting_the_compact_payload_a_longer_linger_and_tls(
) {
    let text = include_str!("../config/cellular.toml");
    let mut table: toml::Table = toml::from_str(text).unwrap();
    let mqtt = table["mqtt"].as_table_mut().unwrap();
    assert_eq!(
        mqtt["url"].as_str(),
        Some("mqtts://broker.example.com:8883")
    );
    // Checked without TLS here: with mqtts:// and no ca_file the check reads the system's
    // roots, which a build machine need not have.
    mqtt.insert("url".into(), "mqtt://broker.example.com:8883".into());
    let cellular = config::parse_str(&toml::to_string(&table).unwrap()).unwrap();
    let want = config::parse_str(
        "[report]\nmode = \"adaptive\"\n\n\
         [mqtt]\nurl = \"mqtt://broker.example.com:8883\"\npayload = \"cbor\"\nlinger_s = 120\n",
    )
    .unwrap();
    assert_eq!(cellular, want);
}

#[test]
fn the_example_file_mentions_every_key_of_every_section() {
    // The example documents every key: a key added to a section must be added there too.
    let text = include_str!("../config/example.toml");
    let table: toml::Table = toml::from_str(text).unwrap();
    let counted: usize = table
        .values()
        .filter_map(|v| v.as_table())
        .map(|t| t.len())
        .sum();
    // device 1, gnss 6, validate 11, report 6, buffer 8, history 3, mqtt 19, health 1 (the
    // optional mqtt keys are shown commented out).
    assert_eq!(counted, 55);
}

#[test]
fn an_empty_file_gives_all_defaults() {
    assert_eq!(config::parse_str("").unwrap(), Settings::default());
    assert_eq!(
        config::parse_str("# only a comment\n\n").unwrap(),
        Settings::default()
    );
}

#[test]
fn the_defaults_pass_their_own_checks() {
    assert_eq!(Config::default().check(), vec![]);
}

#[test]
fn a_syntax_error_names_its_line() {
    let p = only_problem("[gnss]\nbaud = 9600\npath = \"/dev/ttyS0\n");
    assert_eq!(p.line, Some(3), "{p}");
    assert!(p.message.starts_with("invalid TOML"), "{p}");
}

#[test]
fn a_duplicate_key_is_a_syntax_error_on_the_second_line() {
    let p = only_problem("[gnss]\nbaud = 9600\nbaud = 4800\n");
    assert_eq!(p.line, Some(3), "{p}");
}

#[test]
fn an_unknown_key_is_named_with_its_section_and_line() {
    assert_problem(
        "[gnss]\nbaud = 9600\nbuad = 4800\n",
        "gnss.buad",
        Some(3),
        "unknown key `buad`",
    );
}

#[test]
fn an_unknown_section_is_named_with_its_line() {
    assert_problem(
        "\n\n[gsm]\napn = \"x\"\n",
        "gsm",
        Some(3),
        "unknown key `gsm`",
    );
}

#[test]
fn a_value_of_the_wrong_type_is_named_with_its_line() {
    assert_problem(
        "[device]\nid = \"t\"\n[gnss]\nbaud = \"fast\"\n",
        "gnss.baud",
        Some(4),
        "invalid type",
    );
}

#[test]
fn an_unknown_choice_is_named_with_its_line() {
    assert_problem("[gnss]\nsource = \"usb\"\n", "gnss.source", Some(2), "usb");
    assert_problem(
        "[buffer]\neviction = \"newest\"\n",
        "buffer.eviction",
        Some(2),
        "newest",
    );
}

#[test]
fn a_negative_number_for_an_unsigned_key_is_named() {
    assert_problem(
        "[validate]\nmin_sats = -1\n",
        "validate.min_sats",
        Some(2),
        "-1",
    );
}

#[test]
fn every_problem_of_a_file_is_reported_in_one_pass() {
    let text = "\
[device]
id = \"a/b\"
colour = \"red\"
[gnss]
baud = 9601
pace = \"slow\"
[validate]
max_hdop = 0
jump_confirm = 1
[mqtt]
url = \"http://broker\"
[health]
listen = \"localhost:8470\"
";
    let all = problems(text);
    let found: Vec<(&str, Option<usize>)> = all.iter().map(|p| (p.key.as_str(), p.line)).collect();
    for expected in [
        ("device.colour", Some(3)),
        ("gnss.pace", Some(6)),
        ("device.id", Some(2)),
        ("gnss.baud", Some(5)),
        ("validate.max_hdop", Some(8)),
        ("validate.jump_confirm", Some(9)),
        ("mqtt.url", Some(11)),
        ("health.listen", Some(13)),
    ] {
        assert!(
            found.contains(&expected),
            "{expected:?} missing from {all:#?}"
        );
    }
    assert_eq!(all.len(), 8, "{all:#?}");
}

#[test]
fn a_problem_prints_as_one_line_with_key_line_and_message() {
    let p = only_problem("[gnss]\n\nbaud = 9601\n");
    let line = p.to_string();
    assert!(
        line.starts_with("gnss.baud (line 3): 9601 is not a standard baud rate (4800, 9600,"),
        "{line}"
    );
    assert!(!line.contains('\n'));
}

#[test]
fn a_problem_of_a_key_not_in_the_file_prints_without_a_line() {
    let mut cfg = Config::default();
    cfg.gnss.baud = 1234;
    let all = cfg.check();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].line, None);
    assert!(
        all[0].to_string().starts_with("gnss.baud: 1234"),
        "{}",
        all[0]
    );
}

#[test]
fn every_standard_baud_rate_passes_and_neighbours_do_not() {
    for baud in config::STANDARD_BAUD_RATES {
        config::parse_str(&format!("[gnss]\nbaud = {baud}\n")).unwrap();
        assert_problem(
            &format!("[gnss]\nbaud = {}\n", baud + 1),
            "gnss.baud",
            Some(2),
            "standard",
        );
    }
    assert_problem("[gnss]\nbaud = 2400\n", "gnss.baud", Some(2), "standard");
}

#[test]
fn the_baud_rate_is_not_checked_when_reading_a_file() {
    let cfg =
        config::parse_str("[gnss]\nsource = \"file\"\npath = \"log.nmea\"\nbaud = 1\n").unwrap();
    assert!(matches!(cfg.gnss.source, GnssSource::File { .. }));
}

#[test]
fn a_serial_device_must_be_an_absolute_path_and_no_path_may_be_empty() {
    assert_problem(
        "[gnss]\npath = \"ttyUSB0\"\n",
        "gnss.path",
        Some(2),
        "absolute",
    );
    assert_problem(
        "[gnss]\nsource = \"file\"\npath = \"\"\n",
        "gnss.path",
        Some(3),
        "empty",
    );
}

#[test]
fn thresholds_and_durations_must_be_positive_and_finite() {
    for (section, key, words) in [
        ("gnss", "stuck_after_s", "above 0"),
        ("validate", "max_hdop", "positive"),
        ("validate", "max_speed_kmh", "positive"),
        ("validate", "disagree_m", "positive"),
        ("validate", "max_accel_mps2", "positive"),
        ("validate", "max_yaw_rate_dps", "positive"),
        ("validate", "position_noise_m", "positive"),
        ("buffer", "commit_interval_s", "above 0"),
        ("buffer", "disk_retry_s", "above 0"),
        ("mqtt", "puback_timeout_s", "above 0"),
        ("mqtt", "open_for_s", "above 0"),
    ] {
        for bad in ["0", "-1.5", "nan", "inf"] {
            assert_problem(
                &format!("[{section}]\n{key} = {bad}\n"),
                &format!("{section}.{key}"),
                Some(2),
                words,
            );
        }
        // The smallest sensible value passes.
        config::parse_str(&format!("[{section}]\n{key} = 0.001\n")).unwrap();
    }
}

#[test]
fn motion_limits_have_a_ceiling_past_which_the_check_could_reject_nothing() {
    for (key, max) in [
        ("max_accel_mps2", "100"),
        ("max_yaw_rate_dps", "720"),
        ("position_noise_m", "1000"),
    ] {
        config::parse_str(&format!("[validate]\n{key} = {max}\n")).unwrap();
        assert_problem(
            &format!("[validate]\n{key} = {max}.5\n"),
            &format!("validate.{key}"),
            Some(2),
            "at most",
        );
    }
    let cfg = config::parse_str("[validate]\nmotion_check = false\n").unwrap();
    assert!(!cfg.validate.motion_check);
}

#[test]
fn timers_have_a_ceiling_so_a_typo_cannot_switch_them_off() {
    for (section, key, max) in [
        ("gnss", "stuck_after_s", 3_600),
        ("buffer", "commit_interval_s", 3_600),
        ("buffer", "disk_retry_s", 86_400),
        ("mqtt", "puback_timeout_s", 86_400),
        ("mqtt", "backoff_reset_after_s", 86_400),
        ("mqtt", "permanent_retry_s", 86_400),
    ] {
        config::parse_str(&format!("[{section}]\n{key} = {max}\n")).unwrap();
        assert_problem(
            &format!("[{section}]\n\n{key} = {}\n", max + 1),
            &format!("{section}.{key}"),
            Some(3),
            &format!("at most {max}"),
        );
    }
}

#[test]
fn integer_seconds_are_accepted_for_float_keys() {
    let cfg = config::parse_str("[gnss]\nstuck_after_s = 5\n").unwrap();
    assert_eq!(cfg.gnss.stuck_after, std::time::Duration::from_secs(5));
}

#[test]
fn jump_confirm_must_be_between_2_and_the_track_capacity() {
    for ok in [2, 16] {
        config::parse_str(&format!("[validate]\njump_confirm = {ok}\n")).unwrap();
    }
    for bad in [0, 1, 17] {
        assert_problem(
            &format!("[validate]\njump_confirm = {bad}\n"),
            "validate.jump_confirm",
            Some(2),
            "between 2 and 16",
        );
    }
}

#[test]
fn not_before_year_must_be_a_gps_era_year() {
    config::parse_str("[validate]\nnot_before_year = 1980\n").unwrap();
    assert_problem(
        "[validate]\nnot_before_year = 1979\n",
        "validate.not_before_year",
        Some(2),
        "1979",
    );
}

#[test]
fn buffer_capacities_have_minimums() {
    assert_problem(
        "[buffer]\ncommit_max = 0\n",
        "buffer.commit_max",
        Some(2),
        "below 1",
    );
    assert_problem(
        "[buffer]\nmax_fixes = 0\n",
        "buffer.max_fixes",
        Some(2),
        "below 1",
    );
    assert_problem(
        "[buffer]\nmax_bytes = 65535\n",
        "buffer.max_bytes",
        Some(2),
        "below 65536",
    );
    config::parse_str("[buffer]\nmax_bytes = 65536\n").unwrap();
    assert_problem(
        "[buffer]\nmemory_ring = 0\n",
        "buffer.memory_ring",
        Some(2),
        "below 1",
    );
    assert_problem(
        "[buffer]\nmemory_ring = 1000001\n",
        "buffer.memory_ring",
        Some(2),
        "RAM",
    );
}

#[test]
fn history_keys_are_checked_and_named_with_their_line() {
    assert_problem(
        "[history]\nkeep_days = -1\n",
        "history.keep_days",
        Some(2),
        "from 0 (no history) to 3650",
    );
    assert_problem(
        "[history]\n\nkeep_days = 3651\n",
        "history.keep_days",
        Some(3),
        "to 3650",
    );
    assert_problem(
        "[history]\nmax_bytes = 65535\n",
        "history.max_bytes",
        Some(2),
        "below 65536",
    );
    for rate in ["0", "-5", "10001"] {
        assert_problem(
            &format!("[history]\nbackfill_rate = {rate}\n"),
            "history.backfill_rate",
            Some(2),
            "fixes per second",
        );
    }
    let off = config::parse_str("[history]\nkeep_days = 0\n").unwrap();
    assert_eq!(off.buffer.history.keep, None);
    let on = config::parse_str("[history]\nkeep_days = 0.5\nbackfill_rate = 50\n").unwrap();
    assert_eq!(
        on.buffer.history.keep,
        Some(std::time::Duration::from_secs(43_200))
    );
    assert_eq!(
        on.buffer.history.backfill_every,
        std::time::Duration::from_millis(20)
    );
    assert_eq!(
        Settings::default().buffer.history.max_bytes,
        64 * 1024 * 1024
    );
}

#[test]
fn the_buffer_path_must_name_a_file_in_a_plausible_directory() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("plain-file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let cases = [
        (String::new(), "empty"),
        (dir.path().display().to_string(), "directory"),
        ("/var/lib/gps-agent/".to_string(), "directory"),
        (
            not_a_dir.join("buffer.db").display().to_string(),
            "not a directory",
        ),
    ];
    for (path, why) in cases {
        assert_problem(
            &format!("[buffer]\npath = {}\n", toml::Value::from(path.as_str())),
            "buffer.path",
            Some(2),
            why,
        );
    }
    // A directory that does not exist yet is fine: systemd makes it at start.
    let later = dir.path().join("not-yet").join("buffer.db");
    config::parse_str(&format!(
        "[buffer]\npath = {}\n",
        toml::Value::from(later.display().to_string())
    ))
    .unwrap();
}

#[test]
fn the_broker_url_must_be_mqtt_or_mqtts_with_a_host_and_a_valid_port() {
    for (url, why) in [
        ("http://broker:1883", "scheme"),
        ("broker:1883", "not a URL"),
        ("mqtt://", "no host"),
        ("mqtt://:1883", "no host"),
        ("mqtt://broker:0", "1-65535"),
        ("mqtt://broker:70000", "1-65535"),
        ("mqtt://broker:port", "1-65535"),
        ("mqtt://broker/fleet", "no path"),
        ("mqtt://user:pw@broker", "credentials"),
        ("mqtt://::1:1883", "brackets"),
    ] {
        assert_problem(
            &format!("[mqtt]\nurl = \"{url}\"\n"),
            "mqtt.url",
            Some(2),
            why,
        );
    }
}

#[test]
fn a_broker_url_gives_host_port_and_tls() {
    let broker = |url: &str| {
        let cfg = config::parse_str(&format!("[mqtt]\nurl = \"{url}\"\n")).unwrap();
        let b = cfg.mqtt.broker;
        (b.tls, b.host, b.port)
    };
    assert_eq!(broker("mqtt://10.0.0.1"), (false, "10.0.0.1".into(), 1883));
    assert_eq!(
        broker("mqtts://broker.example/"),
        (true, "broker.example".into(), 8883)
    );
    assert_eq!(broker("MQTTS://b:9000"), (true, "b".into(), 9000));
    assert_eq!(broker("mqtt://[::1]:1884"), (false, "::1".into(), 1884));
}

#[test]
fn the_topic_prefix_may_have_levels_but_no_wildcards_or_empty_levels() {
    config::parse_str("[mqtt]\ntopic_prefix = \"acme/fleet\"\n").unwrap();
    for bad in ["", "fleet/+", "#", "/fleet", "fleet/", "a//b", "$SYS"] {
        let p = only_problem(&format!("[mqtt]\ntopic_prefix = \"{bad}\"\n"));
        assert_eq!(
            (p.key.as_str(), p.line),
            ("mqtt.topic_prefix", Some(2)),
            "{bad:?}: {p}"
        );
    }
}

#[test]
fn the_device_id_must_be_non_empty_without_topic_characters() {
    for bad in ["", "truck/42", "truck+", "truck#1", "tab\there"] {
        let p = only_problem(&format!("[device]\nid = {}\n", toml::Value::from(bad)));
        assert_eq!(
            (p.key.as_str(), p.line),
            ("device.id", Some(2)),
            "{bad:?}: {p}"
        );
    }
    let long = "x".repeat(129);
    assert_problem(
        &format!("[device]\nid = \"{long}\"\n"),
        "device.id",
        Some(2),
        "at most 128",
    );
    config::parse_str("[device]\nid = \"truck-042\"\n").unwrap();
}

#[test]
fn the_health_listen_address_must_be_ip_and_port() {
    for bad in ["localhost:8470", "127.0.0.1", "127.0.0.1:99999", ""] {
        assert_problem(
            &format!("[health]\nlisten = \"{bad}\"\n"),
            "health.listen",
            Some(2),
            "socket address",
        );
    }
    let cfg = config::parse_str("[health]\nlisten = \"[::1]:8470\"\n").unwrap();
    assert_eq!(cfg.health.listen.port(), 8470);
}

#[test]
fn keys_written_as_dotted_keys_or_inline_tables_get_their_line() {
    assert_problem(
        "device.id = \"x\"\ngnss.baud = 1\n",
        "gnss.baud",
        Some(2),
        "standard",
    );
    assert_problem("\ngnss = { baud = 1 }\n", "gnss.baud", Some(2), "standard");
    assert_problem("gnss.colour = 1\n", "gnss.colour", Some(1), "unknown key");
}

#[test]
fn loading_a_missing_file_is_a_permanent_read_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let err = config::load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert_eq!(err.code(), "CONFIG_READ");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.to_string().contains("absent.toml"), "{err}");
}

#[test]
fn loading_a_file_with_problems_is_a_permanent_invalid_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[gnss]\nbaud = 9601\n").unwrap();
    let err = config::load(&path).unwrap_err();
    assert_eq!(err.code(), "CONFIG_INVALID");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.to_string().contains("gnss.baud (line 2)"), "{err}");
}

#[test]
fn loading_a_good_file_returns_its_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "[device]\nid = \"truck-042\"\n[gnss]\nbaud = 115200\n",
    )
    .unwrap();
    let cfg = config::load(&path).unwrap();
    assert_eq!(cfg.device.id, "truck-042");
    assert!(matches!(
        cfg.gnss.source,
        GnssSource::Serial { baud: 115_200, .. }
    ));
    assert_eq!(cfg.buffer, Settings::default().buffer);
}

#[test]
fn loading_something_huge_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.toml");
    let big = "# padding\n".repeat(120_000);
    std::fs::write(&path, big).unwrap();
    let err = config::load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
}

#[test]
fn a_bad_source_is_reported_alone_not_with_path_problems_judged_against_the_default() {
    assert_problem(
        "[gnss]\nsource = \"files\"\npath = \"log.nmea\"\nbaud = 1\n",
        "gnss.source",
        Some(2),
        "files",
    );
}
