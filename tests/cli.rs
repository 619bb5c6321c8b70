//! The real binary: `parse` and `check-config` as an operator runs them.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gps-agent"));
    // Never pick up a config from the machine running the tests.
    c.env_remove("GPS_AGENT_CONFIG");
    c
}

#[path = "support/corpus.rs"]
mod corpus;

/// The test PKI, for a `ca_file`; only its CA is used here.
#[path = "support/certs.rs"]
#[allow(dead_code)]
mod certs;

/// A simulated drive (with a tunnel and damaged lines) written to `dir`.
fn drive_log(dir: &tempfile::TempDir) -> PathBuf {
    let spec = gps_agent::sim::DriveSpec {
        epochs: 240,
        tunnel: Some((100, 20)),
        corrupt_every: Some(60),
        ..gps_agent::sim::DriveSpec::default()
    };
    let path = dir.path().join("drive.nmea");
    let file = std::fs::File::create(&path).unwrap();
    gps_agent::sim::write_log(gps_agent::sim::Drive::new(spec).unwrap(), file).unwrap();
    path
}

/// A config that takes the corpus's historical dates as real.
fn historical_config(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[validate]\nnot_before_year = 2000\n").unwrap();
    path
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

#[test]
fn parse_prints_accepted_fixes_with_the_spec_keys_numbered_from_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["parse", "--config"])
        .arg(historical_config(&dir))
        .arg(drive_log(&dir))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fixes = json_lines(&out.stdout);
    // 240 epochs, 20 in the tunnel, a few with a damaged line.
    assert!((200..=220).contains(&fixes.len()), "{} fixes", fixes.len());
    for (i, f) in fixes.iter().enumerate() {
        assert_eq!(f["seq"], i as u64);
        for key in ["time", "lat", "lon", "mode"] {
            assert!(f.get(key).is_some(), "missing {key} in {f}");
        }
        let t = f["time"].as_str().unwrap();
        assert!(
            t.ends_with('Z') && t.len() == "2020-03-18T13:28:20.600Z".len(),
            "{t}"
        );
        assert!(matches!(f["mode"].as_str(), Some("2d" | "3d")));
        for (k, v) in f.as_object().unwrap() {
            assert!(
                !v.is_null(),
                "{k} is null: optional keys are omitted, never null"
            );
        }
    }
    let times: Vec<&str> = fixes.iter().map(|f| f["time"].as_str().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "fix times strictly increase"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fixes accepted"),
        "summary on stderr: {stderr}"
    );
}

#[test]
fn parse_all_adds_the_tunnel_and_the_damaged_lines_as_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let log = drive_log(&dir);
    let fixes = bin().arg("parse").arg(&log).output().unwrap();
    let all = bin().args(["parse", "--all"]).arg(&log).output().unwrap();
    assert!(fixes.status.success() && all.status.success());
    let (fixes, all) = (json_lines(&fixes.stdout), json_lines(&all.stdout));
    let accepted: Vec<&serde_json::Value> =
        all.iter().filter(|l| l.get("rejected").is_none()).collect();
    assert_eq!(accepted.len(), fixes.len(), "--all adds, never drops");
    let reasons: Vec<&str> = all.iter().filter_map(|l| l["rejected"].as_str()).collect();
    assert_eq!(
        reasons.iter().filter(|r| **r == "no_fix").count(),
        20,
        "the tunnel: {reasons:?}"
    );
    assert!(reasons.contains(&"checksum"), "{reasons:?}");
}

#[test]
fn parse_all_adds_rejections_with_spec_reason_codes() {
    let Some(corpus) = corpus::dir("parse_all_adds_rejections_with_spec_reason_codes") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["parse", "--all", "--config"])
        .arg(historical_config(&dir))
        .arg(corpus.join("GPSmap-76S.log"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines = json_lines(&out.stdout);
    // The Garmin handset in simulator mode: GGA quality 8, RMC V. Nothing may be accepted.
    assert!(!lines.is_empty());
    let codes = [
        "checksum",
        "no_fix",
        "estimated",
        "disagree",
        "out_of_range",
        "null_island",
        "hdop",
        "satellites",
        "speed_jump",
        "time_invalid",
        "duplicate_time",
        "incomplete",
    ];
    for l in &lines {
        let reason = l["rejected"]
            .as_str()
            .unwrap_or_else(|| panic!("accepted a fix: {l}"));
        assert!(codes.contains(&reason), "unknown reason {reason}");
    }
}

#[test]
fn parse_reads_standard_input_and_counts_bad_checksums() {
    let input = b"garbage\x00\x00\xff\r\n\
$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n\
$GPGGA,123520,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*00\r\n";
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin()
        .args(["parse", "--all", "--config"])
        .arg(historical_config(&dir))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines = json_lines(&out.stdout);
    assert!(
        lines.iter().any(|l| l["rejected"] == "checksum"),
        "the GGA with a wrong checksum is reported: {lines:?}"
    );
}

#[test]
fn parse_of_a_missing_file_exits_66() {
    let out = bin()
        .args(["parse", "/nonexistent/capture.nmea"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(66));
}

#[test]
fn check_config_accepts_the_example_config() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    let out = bin()
        .args(["check-config", "--config", example])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn check_config_accepts_the_cellular_config_once_its_ca_file_is_set() {
    // As an operator starts from it: the shipped file with its `ca_file` line filled in (the
    // file as shipped trusts the system's roots, which a build machine need not have).
    let dir = tempfile::tempdir().unwrap();
    let pki = certs::TestPki::create(dir.path());
    let shipped = include_str!("../config/cellular.toml");
    let line = "# ca_file = \"/etc/gps-agent/ca.pem\"";
    assert!(
        shipped.contains(line),
        "the cellular file names its ca_file"
    );
    let text = shipped.replacen(line, &format!("ca_file = \"{}\"", pki.ca.display()), 1);
    let (code, out) = check_config(&dir, &text);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.ends_with(": ok\n"), "{out}");
}

#[test]
fn check_config_exits_78_naming_key_and_line_for_each_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[device]\nid = \"truck-042\"\n\n[gnss]\nbaud = 9601\n\n[validate]\nmax_hdop = -1.0\n",
    )
    .unwrap();
    let out = bin()
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "one line per problem: {text}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("gnss.baud") && l.contains("line 5")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("validate.max_hdop") && l.contains("line 8")),
        "{text}"
    );
}

#[test]
fn check_config_rejects_unknown_keys_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, "[gnss]\nbuad = 9600\n").unwrap();
    let out = bin()
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("buad") && text.contains("line 2"), "{text}");
}

#[test]
fn environment_variable_names_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env.toml");
    std::fs::write(&path, "[gnss]\nbaud = 1\n").unwrap();
    let out = bin()
        .arg("check-config")
        .env("GPS_AGENT_CONFIG", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
}

/// `check-config` on `text` (written to a file in `dir`): exit code and stdout.
fn check_config(dir: &tempfile::TempDir, text: &str) -> (Option<i32>, String) {
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let out = bin()
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_config_refuses_what_run_refuses_an_empty_password_file_or_a_broken_key() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("password");
    std::fs::write(&pw, "").unwrap();
    let text = format!(
        "[mqtt]\nusername = \"truck\"\npassword_file = \"{}\"\n",
        pw.display()
    );
    let (code, out) = check_config(&dir, &text);
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("mqtt.password_file") && out.contains("MQTT_TLS_CONFIG"),
        "{out}"
    );
    // `run` uses the same check: it refuses the file before anything starts.
    let run = bin()
        .args(["run", "--config"])
        .arg(dir.path().join("config.toml"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(78));

    // A client key that is not a key.
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, "not a certificate\n").unwrap();
    std::fs::write(&key, "not a key\n").unwrap();
    let text = format!(
        "[mqtt]\nurl = \"mqtts://127.0.0.1\"\nca_file = \"{0}\"\nclient_cert = \"{0}\"\nclient_key = \"{1}\"\n",
        cert.display(),
        key.display()
    );
    let (code, out) = check_config(&dir, &text);
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("MQTT_TLS_CONFIG"), "{out}");
}

#[test]
fn check_config_refuses_topics_over_the_mqtt_limit_or_with_forbidden_characters() {
    let dir = tempfile::tempdir().unwrap();
    let huge = "a".repeat(80 * 1024);
    let (code, out) = check_config(&dir, &format!("[mqtt]\ntopic_prefix = \"{huge}\"\n"));
    assert_eq!(code, Some(78), "{}", &out[..out.len().min(300)]);
    assert!(
        out.contains("mqtt.topic_prefix") && out.contains("65535"),
        "{}",
        &out[..out.len().min(300)]
    );
    assert!(
        out.len() < 1024,
        "the line names the problem, not the value"
    );
    // Just at the limit: `{prefix}/{device}/status` is 65,535 bytes.
    let fits = "a".repeat(65_535 - 1 - "gps-agent".len() - "/status".len());
    let (code, out) = check_config(&dir, &format!("[mqtt]\ntopic_prefix = \"{fits}\"\n"));
    assert_eq!(code, Some(0), "{}", &out[..out.len().min(300)]);
    let (code, _) = check_config(&dir, &format!("[mqtt]\ntopic_prefix = \"{fits}a\"\n"));
    assert_eq!(code, Some(78));
    for bad in ["fleet\\u0000x", "fleet\\u0085x", "fleet\\uFFFFx", "fleet/#"] {
        let (code, out) = check_config(&dir, &format!("[mqtt]\ntopic_prefix = \"{bad}\"\n"));
        assert_eq!(code, Some(78), "{bad}: {out}");
        assert!(out.contains("mqtt.topic_prefix"), "{out}");
    }
}

#[test]
fn check_config_and_run_warn_where_the_endpoint_or_a_secret_is_exposed() {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("password");
    std::fs::write(&pw, "s3cret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = format!(
        "[gnss]\nsource = \"file\"\npath = \"{}\"\n[buffer]\npath = \"{}\"\n\
         [mqtt]\nusername = \"truck\"\npassword_file = \"{}\"\n[health]\nlisten = \"0.0.0.0:{port}\"\n",
        dir.path().join("none.nmea").display(),
        dir.path().join("buffer.db").display(),
        pw.display()
    );
    let (code, out) = check_config(&dir, &text);
    assert_eq!(code, Some(0), "warnings do not refuse the file: {out}");
    assert!(
        out.contains("CONFIG_HEALTH_EXPOSED") && out.contains("health.listen"),
        "{out}"
    );
    assert!(
        out.contains("CONFIG_SECRET_READABLE") && out.contains("mqtt.password_file"),
        "{out}"
    );
    assert!(!out.contains("s3cret"), "{out}");

    // The daemon says the same, with the codes, when it starts.
    let mut child = bin()
        .args(["run", "--log-format", "json", "--config"])
        .arg(dir.path().join("config.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut codes = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.contains("agent started") {
            break;
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if let Some(code) = v["code"].as_str() {
                codes.push(code.to_owned());
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        codes.iter().any(|c| c == "CONFIG_HEALTH_EXPOSED"),
        "{codes:?}"
    );
    assert!(
        codes.iter().any(|c| c == "CONFIG_SECRET_READABLE"),
        "{codes:?}"
    );
}

#[test]
fn status_help_says_what_url_and_watch_do() {
    let out = bin().args(["status", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--url", "--watch", "--config"] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("no {flag} in {help}"));
        assert!(
            line.trim().len() > flag.len() + 8 || help.contains(&format!("{flag} <")),
            "{flag} has no help text: {help}"
        );
    }
    assert!(help.contains("health") && help.contains("Ctrl-C"), "{help}");
}

#[test]
fn status_without_an_agent_at_the_configured_address_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, format!("[health]\nlisten = \"127.0.0.1:{port}\"\n")).unwrap();
    let out = bin()
        .args(["status", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")),
        "asked the configured port: {err}"
    );
}
