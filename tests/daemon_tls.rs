//! The real binary over `mqtts://`: `gps-agent run` configured as a fleet would configure it
//! for AWS IoT or Azure (CA file, client certificate and key, user name, password from a file),
//! against rumqttd with password auth behind the harness's mutual-TLS front.

mod support;

use gps_agent::sim::DriveSpec;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};
use support::agent::{drive_log, expected_fixes, Agent};
use support::broker::{BrokerOptions, Subscriber, TestBroker};
use support::certs::TestPki;
use support::tls_front::{ClientAuth, TlsFront};

const USER: &str = "truck-042";
const PASSWORD: &str = "s3cret-from-a-file";

fn authenticating_broker() -> TestBroker {
    TestBroker::start_with(BrokerOptions {
        auth: Some(HashMap::from([(USER.to_string(), PASSWORD.to_string())])),
        ..BrokerOptions::default()
    })
}

/// The `[mqtt]` section: TLS to `url`, our CA, and the client certificate when `mutual`.
fn mqtt_section(url: &str, pki: &TestPki, password_file: &Path, mutual: bool) -> String {
    let mut s = format!(
        "url = \"{url}\"\nusername = \"{USER}\"\npassword_file = \"{}\"\nca_file = \"{}\"\n\
         backoff_initial_s = 0.1\nbackoff_max_s = 0.5\npermanent_retry_s = 600\n",
        password_file.display(),
        pki.ca.display()
    );
    if mutual {
        s += &format!(
            "client_cert = \"{}\"\nclient_key = \"{}\"\n",
            pki.client_cert.display(),
            pki.client_key.display()
        );
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_delivers_every_fix_over_mutual_tls_with_a_password_file_and_never_logs_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let log = drive_log(
        dir.path(),
        DriveSpec {
            epochs: 60,
            ..DriveSpec::default()
        },
    );
    let expected = expected_fixes(&log);
    assert!(expected > 50, "{expected}");

    let broker = authenticating_broker();
    let front = TlsFront::start(broker.addr, &pki, ClientAuth::Required).await;
    let device = support::unique("truck");
    let mut sub = Subscriber::start_as(
        &broker,
        &format!("fleet/{device}/#"),
        Some((USER, PASSWORD)),
    )
    .await;

    let gnss = format!(
        "[gnss]\nsource = \"file\"\npath = \"{}\"\npace = \"fast\"",
        log.display()
    );
    let mqtt = mqtt_section(&front.url("localhost"), &pki, &password_file, true);
    let agent = Agent::start_with_mqtt(dir.path(), &device, &gnss, &mqtt, &[]);

    let seqs = sub.fix_seqs(expected, Duration::from_secs(30)).await;
    assert_eq!(seqs, (1..=expected).collect::<BTreeSet<u64>>());

    let handshakes = front.handshakes();
    assert!(!handshakes.is_empty());
    for h in &handshakes {
        assert_eq!(h.sni.as_deref(), Some("localhost"), "{handshakes:?}");
        assert!(h.client_cert, "{handshakes:?}");
    }
    let (exit, _) = agent.terminate();
    assert_eq!(exit, 0);
    let text = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert!(!text.is_empty());
    assert!(!text.contains(PASSWORD), "the password reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_certificate_shows_as_mqtt_tls_in_health_and_is_not_hammered() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, PASSWORD).unwrap();
    let log = drive_log(
        dir.path(),
        DriveSpec {
            epochs: 30,
            ..DriveSpec::default()
        },
    );
    let expected = expected_fixes(&log);

    let broker = authenticating_broker();
    let front = TlsFront::start(broker.addr, &pki, ClientAuth::Required).await;
    let gnss = format!(
        "[gnss]\nsource = \"file\"\npath = \"{}\"\npace = \"fast\"",
        log.display()
    );
    // No client certificate configured: the broker's TLS layer refuses the handshake.
    let mqtt = mqtt_section(&front.url("localhost"), &pki, &password_file, false);
    let agent = Agent::start_with_mqtt(dir.path(), &support::unique("truck"), &gnss, &mqtt, &[]);

    let deadline = Instant::now() + Duration::from_secs(10);
    let h = loop {
        let (code, h) = agent.get("/health");
        let mqtt = &h["components"]["mqtt"];
        let depth = h["components"]["buffer"]["depth"].as_u64().unwrap_or(0);
        if mqtt["last_error"]["code"] == "MQTT_TLS" && depth == expected {
            assert_eq!(code, 503, "{h}");
            break h;
        }
        assert!(Instant::now() < deadline, "no MQTT_TLS in health: {h}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mqtt = &h["components"]["mqtt"];
    assert_eq!(mqtt["connected"], false, "{h}");
    assert_ne!(mqtt["status"], "healthy", "{h}");
    assert!(
        mqtt["last_error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{h}"
    );
    // A permanent failure waits permanent_retry (600 s), not the 0.1 s backoff.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(front.connections(), 1, "retried a refused certificate");
    assert_eq!(front.failed(), 1);
    let (exit, _) = agent.terminate();
    assert_eq!(exit, 0, "a clean stop, with the fixes kept in the buffer");
}
