//! The `[mqtt]` keys: each range and dependency check names its key and line, the example's
//! values are the defaults, and a checked section maps onto `PublisherSettings`.

use gps_agent::config::{self, ConfigError, MqttConfig, Problem};
use gps_agent::error::Classified;
use gps_agent::uplink::publisher::PublisherSettings;
use std::time::Duration;

fn problems(text: &str) -> Vec<Problem> {
    match config::parse_str(text) {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(ConfigError::Invalid { problems }) => problems,
        Err(other) => panic!("expected Invalid, got {other}"),
    }
}

fn assert_problem(text: &str, key: &str, line: Option<usize>, message_part: &str) {
    let all = problems(text);
    assert_eq!(all.len(), 1, "expected one problem, got {all:#?}");
    let p = &all[0];
    assert_eq!(p.key, key, "{p}");
    assert_eq!(p.line, line, "{p}");
    assert!(
        p.message.contains(message_part),
        "{p:?} should mention {message_part:?}"
    );
}

#[test]
fn out_of_range_numbers_name_their_key_and_line() {
    let cases = [
        ("batch_max = 0", "mqtt.batch_max", "between 1 and 1000"),
        ("batch_max = 5000", "mqtt.batch_max", "between 1 and 1000"),
        ("max_message_bytes = 100", "mqtt.max_message_bytes", "bytes"),
        ("inflight = 0", "mqtt.inflight", "between 1 and 1000"),
        ("puback_timeout_s = 0.0", "mqtt.puback_timeout_s", "above 0"),
        (
            "backoff_initial_s = -1.0",
            "mqtt.backoff_initial_s",
            "above 0",
        ),
        (
            "backoff_reset_after_s = nan",
            "mqtt.backoff_reset_after_s",
            "above 0",
        ),
        ("failure_threshold = 0", "mqtt.failure_threshold", "below 1"),
        ("open_for_s = 0", "mqtt.open_for_s", "above 0"),
        (
            "permanent_retry_s = -5",
            "mqtt.permanent_retry_s",
            "above 0",
        ),
        (
            "keep_alive_s = 0",
            "mqtt.keep_alive_s",
            "between 1 and 65535",
        ),
        (
            "keep_alive_s = 70000",
            "mqtt.keep_alive_s",
            "between 1 and 65535",
        ),
    ];
    for (line, key, part) in cases {
        let text = format!("[device]\nid = \"t\"\n\n[mqtt]\n{line}\n");
        assert_problem(&text, key, Some(5), part);
    }
}

#[test]
fn a_backoff_ceiling_below_its_start_is_a_problem_of_the_ceiling() {
    assert_problem(
        "[mqtt]\nbackoff_initial_s = 10.0\nbackoff_max_s = 5.0\n",
        "mqtt.backoff_max_s",
        Some(3),
        "below backoff_initial_s",
    );
}

#[test]
fn a_password_file_without_a_user_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    let text = format!("[mqtt]\npassword_file = {:?}\n", pw.display().to_string());
    assert_problem(&text, "mqtt.password_file", Some(2), "needs mqtt.username");
}

#[test]
fn missing_certificate_files_are_named_with_their_lines() {
    let text = "[mqtt]\nurl = \"mqtts://broker.example\"\nca_file = \"/nonexistent/ca.pem\"\n\
                client_cert = \"/nonexistent/c.pem\"\nclient_key = \"/nonexistent/k.pem\"\n";
    let all = problems(text);
    let keys: Vec<(&str, Option<usize>)> = all.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        keys,
        vec![
            ("mqtt.ca_file", Some(3)),
            ("mqtt.client_cert", Some(4)),
            ("mqtt.client_key", Some(5)),
        ],
        "{all:#?}"
    );
    assert!(all
        .iter()
        .all(|p| p.message.contains("not a readable file")));
}

#[test]
fn tls_keys_with_a_plain_url_are_refused_as_unused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "x").unwrap();
    let text = format!(
        "[mqtt]\nurl = \"mqtt://broker\"\nca_file = {:?}\n",
        ca.display().to_string()
    );
    assert_problem(&text, "mqtt.ca_file", Some(3), "only used with mqtts://");
    assert_problem(
        "[mqtt]\nserver_name = \"broker.example\"\n",
        "mqtt.server_name",
        Some(2),
        "only used with mqtts://",
    );
}

#[test]
fn a_client_certificate_needs_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("c.pem");
    std::fs::write(&cert, "x").unwrap();
    let text = format!(
        "[mqtt]\nurl = \"mqtts://broker\"\nclient_cert = {:?}\n",
        cert.display().to_string()
    );
    assert_problem(&text, "mqtt.client_cert", Some(3), "needs mqtt.client_key");
}

#[test]
fn a_server_name_must_be_a_dns_name_or_address() {
    assert_problem(
        "[mqtt]\nurl = \"mqtts://10.0.0.1\"\nserver_name = \"not a name!\"\n",
        "mqtt.server_name",
        Some(3),
        "not a DNS name",
    );
    let settings = config::parse_str(
        "[mqtt]\nurl = \"mqtts://10.0.0.1\"\nserver_name = \"broker.example.com\"\n",
    )
    .unwrap();
    assert_eq!(
        settings.mqtt.server_name.as_deref(),
        Some("broker.example.com")
    );
}

#[test]
fn empty_client_id_and_user_name_are_refused() {
    assert_problem(
        "[mqtt]\nclient_id = \"\"\n",
        "mqtt.client_id",
        Some(2),
        "1 to 256",
    );
    assert_problem(
        "[mqtt]\nusername = \"\"\n",
        "mqtt.username",
        Some(2),
        "must not be empty",
    );
}

#[test]
fn the_documented_defaults_are_the_issue_s_numbers() {
    let m = MqttConfig::default();
    assert_eq!(m.batch_max, 50);
    assert_eq!(m.inflight, 10);
    assert_eq!(m.puback_timeout_s, 30.0);
    assert_eq!(m.backoff_initial_s, 1.0);
    assert_eq!(m.backoff_max_s, 300.0);
    assert_eq!(m.permanent_retry_s, 600.0);
    assert_eq!(m.client_id, None);
}

#[test]
fn a_checked_section_with_credentials_maps_onto_publisher_settings() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "hunter2\n").unwrap();
    let text = format!(
        "[device]\nid = \"truck-9\"\n[mqtt]\nusername = \"truck-9\"\npassword_file = {:?}\n\
         inflight = 3\nbatch_max = 10\npuback_timeout_s = 2.5\n",
        pw.display().to_string()
    );
    let cfg = config::parse_str(&text).unwrap();
    let s = PublisherSettings::from_settings(&cfg.mqtt, &cfg.device.id).unwrap();
    assert_eq!(s.client_id, "truck-9");
    assert_eq!(s.window, 3);
    assert_eq!(s.batch_max, 10);
    assert_eq!(s.puback_timeout, Duration::from_millis(2500));
    let (user, password) = s.credentials.as_ref().unwrap();
    assert_eq!(user, "truck-9");
    assert_eq!(password.reveal(), "hunter2");
    assert!(!format!("{s:?}").contains("hunter2"));
}

#[test]
fn an_unreadable_ca_file_at_start_up_is_permanent_mqtt_tls_config() {
    // The file was there at check-config and is gone when the uplink starts.
    let mut mqtt = config::parse_str("[mqtt]\nurl = \"mqtts://127.0.0.1:8883\"\n")
        .unwrap()
        .mqtt;
    mqtt.ca_file = Some("/nonexistent/ca.pem".into());
    let e = PublisherSettings::from_settings(&mqtt, "truck-9").unwrap_err();
    assert_eq!(e.code(), "MQTT_TLS_CONFIG");
    assert_eq!(e.class(), gps_agent::error::ErrorClass::Permanent);
}

#[test]
fn every_fallback_url_is_checked_as_url_is_and_named_with_its_index_and_line() {
    let text = "[device]\nid = \"t\"\n\n[mqtt]\nurl = \"mqtt://a:1883\"\nfallback_urls = [\n  \
                \"mqtt://b:1883\",\n  \"http://c\",\n  \"mqtt://d:99999\",\n]\n";
    let all = problems(text);
    let found: Vec<(&str, Option<usize>)> = all.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        found,
        [
            ("mqtt.fallback_urls[1]", Some(8)),
            ("mqtt.fallback_urls[2]", Some(9)),
        ],
        "{all:#?}"
    );
    assert!(all[0].message.contains("mqtt:// or mqtts://"), "{}", all[0]);
    assert!(all[1].message.contains("1-65535"), "{}", all[1]);
    // On one line, every element is on it.
    assert_problem(
        "[mqtt]\nfallback_urls = [\"mqtt://b\", \"b:1883\"]\n",
        "mqtt.fallback_urls[1]",
        Some(2),
        "not a URL",
    );
}

#[test]
fn a_fallback_url_must_keep_the_scheme_of_url() {
    assert_problem(
        "[mqtt]\nurl = \"mqtts://a\"\nfallback_urls = [\"mqtts://b\", \"mqtt://c\"]\n",
        "mqtt.fallback_urls[1]",
        Some(3),
        "all are mqtt:// or all are mqtts://",
    );
}

#[test]
fn fallback_urls_map_onto_the_publisher_s_endpoints_in_order() {
    let cfg = config::parse_str(
        "[mqtt]\nurl = \"mqtt://a\"\nfallback_urls = [\"mqtt://b:1884\", \"mqtt://[::1]:1885\"]\n",
    )
    .unwrap();
    let s = PublisherSettings::from_settings(&cfg.mqtt, "t").unwrap();
    let endpoints: Vec<String> = (0..4).map(|i| s.endpoint(i).to_string()).collect();
    assert_eq!(
        endpoints,
        [
            "mqtt://a:1883",
            "mqtt://b:1884",
            "mqtt://[::1]:1885",
            "mqtt://a:1883"
        ]
    );
    assert_eq!(MqttConfig::default().fallback_urls, Vec::<String>::new());
}

#[test]
fn more_fallback_urls_than_are_tried_is_a_problem_of_the_key() {
    let many: Vec<String> = (0..17).map(|i| format!("\"mqtt://n{i}\"")).collect();
    let text = format!("[mqtt]\nfallback_urls = [{}]\n", many.join(", "));
    assert_problem(&text, "mqtt.fallback_urls", Some(2), "at most 16");
}
