//! Properties of the config loader over broken files: whatever the text, `parse_str` returns
//! a config or a list of problems, never panics; and a value broken in the example file is
//! reported against its own key and line.

use gps_agent::config::{self, ConfigError};
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../config/example.toml");

/// `(line index, dotted key)` of every live `key = value` line of the example.
fn example_keys() -> Vec<(usize, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for (i, line) in EXAMPLE.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else if let Some((key, _)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
            out.push((i, format!("{section}.{}", key.trim())));
        }
    }
    out
}

/// Values of every TOML type and of no type at all, including the ones that break ranges.
fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("0.0".to_string()),
        Just("-0.0".to_string()),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("-inf".to_string()),
        Just("1e309".to_string()),
        Just("9223372036854775807".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("18446744073709551616".to_string()),
        Just("\"\"".to_string()),
        Just("\"\\u0000\"".to_string()),
        Just("\"☃\"".to_string()),
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("[1, \"a\"]".to_string()),
        Just("{}".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("".to_string()),
        Just("\"unterminated".to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        "[ -~]{0,40}".prop_map(|s| format!("{s:?}")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_text_gives_a_config_or_problems_never_a_panic(text in "\\PC{0,300}") {
        match config::parse_str(&text) {
            Ok(_) => {}
            Err(ConfigError::Invalid { problems }) => {
                prop_assert!(!problems.is_empty());
                let lines = text.lines().count().max(1) + 1;
                for p in &problems {
                    prop_assert!(p.line.is_none_or(|l| l >= 1 && l <= lines), "{p:?}");
                    prop_assert!(!p.message.is_empty());
                }
            }
            Err(other) => prop_assert!(false, "parse_str read a file? {other}"),
        }
    }

    #[test]
    fn a_broken_value_in_the_example_is_reported_at_its_key_and_line(
        pick in any::<prop::sample::Index>(),
        value in hostile_value(),
    ) {
        let keys = example_keys();
        let (index, key) = &keys[pick.index(keys.len())];
        let short = key.rsplit('.').next().unwrap();
        let text: String = EXAMPLE
            .lines()
            .enumerate()
            .map(|(i, l)| if i == *index { format!("{short} = {value}\n") } else { format!("{l}\n") })
            .collect();
        match config::parse_str(&text) {
            // Some values are fine for some keys (0 retries, any string as an id).
            Ok(_) => {}
            Err(ConfigError::Invalid { problems }) => {
                let line = index + 1;
                // At its own key and line; or, for a rule between two keys (backoff_max_s
                // below backoff_initial_s), at the other key, naming this one.
                prop_assert!(
                    problems.iter().any(|p| {
                        ((p.key == *key || p.key.is_empty()) && p.line == Some(line))
                            || (p.key != *key && p.message.contains(short))
                    }),
                    "{key} = {value} (line {line}) reported as {problems:#?}"
                );
            }
            Err(other) => prop_assert!(false, "{other}"),
        }
    }
}

#[test]
fn the_example_has_the_keys_the_property_mutates() {
    let keys = example_keys();
    assert!(keys.len() > 35, "{keys:?}");
    assert!(keys.iter().any(|(_, k)| k == "gnss.baud"));
    assert!(keys.iter().any(|(_, k)| k == "mqtt.keep_alive_s"));
}
