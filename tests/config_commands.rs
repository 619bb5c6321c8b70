//! `[commands]` in the config file, and the layers of the check: `crate::config` depends on
//! nothing above it, while the files the stages will load (the uplink's password and
//! certificates, the commands' public key) are checked by the one function above it that
//! `check-config`, `run`, SIGHUP and `config.set` share, each problem with its key and line.

mod support;

use gps_agent::app::config_file;
use gps_agent::config::{self, CommandsSettings, ConfigError, Problem};
use std::process::Command;
use std::time::Duration;
use support::signing::SigningKey;

fn problems(result: Result<impl std::fmt::Debug, ConfigError>) -> Vec<Problem> {
    match result {
        Err(ConfigError::Invalid { problems }) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn commands_are_off_by_default_with_a_five_minute_confirmation() {
    let s = config::parse_str("").unwrap();
    assert_eq!(
        s.commands,
        CommandsSettings {
            enabled: false,
            confirm: Duration::from_secs(300),
            public_key_file: None,
        }
    );
    let on = config::parse_str("[commands]\nenabled = true\nconfirm_s = 12.5\n").unwrap();
    assert!(on.commands.enabled);
    assert_eq!(on.commands.confirm, Duration::from_millis(12_500));
}

#[test]
fn a_confirmation_window_out_of_range_is_named_with_its_key_and_line() {
    for bad in ["0", "-1", "86401", "nan"] {
        let p = problems(config::parse_str(&format!(
            "[commands]\nenabled = true\nconfirm_s = {bad}\n"
        )));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(
            (p[0].key.as_str(), p[0].line),
            ("commands.confirm_s", Some(3))
        );
    }
}

#[test]
fn a_key_file_that_is_missing_or_not_a_key_is_a_problem_of_its_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = problems(config_file::parse(
        "[commands]\n\npublic_key_file = \"/nonexistent/commands.pub\"\n",
    ));
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert_eq!(
        (missing[0].key.as_str(), missing[0].line),
        ("commands.public_key_file", Some(3))
    );
    assert!(missing[0].message.contains("not a readable file"));

    let garbage = dir.path().join("garbage.pub");
    std::fs::write(&garbage, "ssh-rsa AAAAB3NzaC1yc2E\n").unwrap();
    let text = format!(
        "[commands]\npublic_key_file = {:?}\n",
        garbage.display().to_string()
    );
    // `crate::config` alone does not read the key: that is the commands stage's.
    config::parse_str(&text).unwrap();
    let p = problems(config_file::parse(&text));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        (p[0].key.as_str(), p[0].line),
        ("commands.public_key_file", Some(2))
    );
    assert!(p[0].message.contains("CMD_KEY"), "{}", p[0]);

    let key = SigningKey::generate();
    for (name, text) in [
        ("pem.pub", key.public_pem()),
        ("raw.pub", key.public_base64()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let s = config_file::parse(&format!(
            "[commands]\nenabled = true\npublic_key_file = {:?}\n",
            path.display().to_string()
        ))
        .unwrap();
        assert_eq!(s.commands.public_key_file.as_deref(), Some(path.as_path()));
    }
}

#[test]
fn the_uplink_s_files_are_checked_above_config_with_their_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("password");
    std::fs::write(&pw, "").unwrap();
    let text = format!(
        "[device]\nid = \"t\"\n[mqtt]\nusername = \"truck\"\npassword_file = {:?}\n",
        pw.display().to_string()
    );
    config::parse_str(&text).unwrap();
    let p = problems(config_file::parse(&text));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        (p[0].key.as_str(), p[0].line),
        ("mqtt.password_file", Some(5))
    );
    assert!(p[0].message.contains("MQTT_TLS_CONFIG"), "{}", p[0]);
}

#[test]
fn check_config_names_a_broken_key_file_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("commands.pub");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nMC4CAQA=\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[commands]\nenabled = true\npublic_key_file = {:?}\n",
            key.display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gps-agent"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(
        text.contains("commands.public_key_file (line 3)") && text.contains("-pubout"),
        "{text}"
    );
}

/// The `use crate::...` paths of a source file.
fn crate_imports(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("use crate::"))
        .map(|rest| rest.split([':', ';', '{']).next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn config_depends_on_nothing_above_it() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![root.join("config.rs")];
    for entry in std::fs::read_dir(root.join("config")).unwrap() {
        files.push(entry.unwrap().path());
    }
    // Shared types below every stage are allowed; no stage is.
    let allowed = ["config", "error"];
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let imports = crate_imports(&text);
        for module in &imports {
            assert!(
                allowed.contains(&module.as_str()),
                "{}: use crate::{module}",
                file.display()
            );
        }
        // Nor any path into a stage in the code (the docs may point at their readers).
        let code = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for stage in [
            "uplink", "validate", "buffer", "report", "gnss", "health", "commands", "app",
        ] {
            assert!(
                !code.contains(&format!("crate::{stage}")),
                "{} names crate::{stage}",
                file.display()
            );
        }
    }
}
