//! The real binary over `mqtts://`: `gps-agent run` configured as a fleet would configure it
//! for AWS IoT or Azure (CA file, client certificate and key, user name, password from a file),
//! against rumqttd with password auth behind the harness's mutual-TLS front.

mod support;

use gps_agent::sim::DriveSpec;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;
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

/// A drive replayed from a file, an authenticating broker behind the mutual-TLS front, and
/// the password file: what each test starts from.
struct Setup {
    dir: tempfile::TempDir,
    pki: TestPki,
    password_file: std::path::PathBuf,
    expected: u64,
    broker: TestBroker,
    front: TlsFront,
    /// The `[gnss]` section replaying the drive.
    gnss: String,
}

impl Setup {
    /// A subscriber (with the broker's credentials) to everything `device` publishes.
    async fn subscriber(&self, device: &str) -> Subscriber {
        Subscriber::start_as(
            &self.broker,
            &format!("fleet/{device}/#"),
            Some((USER, PASSWORD)),
        )
        .await
    }

    async fn new(epochs: u32, password_text: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::create(dir.path());
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, password_text).unwrap();
        let log = drive_log(
            dir.path(),
            DriveSpec {
                epochs,
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
        Setup {
            dir,
            pki,
            password_file,
            expected,
            broker,
            front,
            gnss,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_delivers_every_fix_over_mutual_tls_with_a_password_file_and_never_logs_it() {
    let t = Setup::new(60, &format!("{PASSWORD}\n")).await;
    assert!(t.expected > 50, "{}", t.expected);
    let device = support::unique("truck");
    let mut sub = t.subscriber(&device).await;
    let mqtt = mqtt_section(&t.front.url("localhost"), &t.pki, &t.password_file, true);
    let agent = Agent::start_with_mqtt(t.dir.path(), &device, &t.gnss, &mqtt, &[]);

    let seqs = sub.fix_seqs(t.expected, Duration::from_secs(30)).await;
    assert_eq!(seqs, (1..=t.expected).collect::<BTreeSet<u64>>());

    let handshakes = t.front.handshakes();
    assert!(!handshakes.is_empty());
    for h in &handshakes {
        assert_eq!(h.sni.as_deref(), Some("localhost"), "{handshakes:?}");
        assert!(h.client_cert, "{handshakes:?}");
    }
    let (exit, _) = agent.terminate();
    assert_eq!(exit, 0);
    let text = std::fs::read_to_string(t.dir.path().join("agent.log")).unwrap();
    assert!(!text.is_empty());
    assert!(!text.contains(PASSWORD), "the password reached the log");
}

/// Wait until `/health` shows `MQTT_TLS` as the uplink's last error (and `also`); returns
/// that health, which must be a 503.
fn wait_for_mqtt_tls(
    agent: &Agent,
    also: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let (code, h) = agent.wait_health("MQTT_TLS", Duration::from_secs(10), |_, h| {
        h["components"]["mqtt"]["last_error"]["code"] == "MQTT_TLS" && also(h)
    });
    assert_eq!(code, 503, "{h}");
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_certificate_shows_as_mqtt_tls_in_health_and_is_not_hammered() {
    let t = Setup::new(30, PASSWORD).await;
    // No client certificate configured: the broker's TLS layer refuses the handshake.
    let mqtt = mqtt_section(&t.front.url("localhost"), &t.pki, &t.password_file, false);
    let agent =
        Agent::start_with_mqtt(t.dir.path(), &support::unique("truck"), &t.gnss, &mqtt, &[]);
    let h = wait_for_mqtt_tls(&agent, |h| {
        h["components"]["buffer"]["depth"].as_u64() == Some(t.expected)
    });
    let mqtt = &h["components"]["mqtt"];
    assert_eq!(mqtt["connected"], false, "{h}");
    assert_eq!(mqtt["status"], "degraded", "not connected, not wedged: {h}");
    assert!(
        mqtt["last_error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{h}"
    );
    // A permanent failure waits permanent_retry (600 s), not the 0.1 s backoff: health
    // shows the wait the uplink sleeps, and there was one attempt so far.
    assert!(
        mqtt["retry_in_s"].as_f64().is_some_and(|r| r > 500.0),
        "{h}"
    );
    assert_eq!(t.front.connections(), 1, "retried a refused certificate");
    assert_eq!(t.front.failed(), 1);
    let (exit, _) = agent.terminate();
    assert_eq!(exit, 0, "a clean stop, with the fixes kept in the buffer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_on_disk_is_used_at_once_after_sighup() {
    let t = Setup::new(30, PASSWORD).await;
    let device = support::unique("truck");
    let mut sub = t.subscriber(&device).await;
    // The device's certificate files hold one the broker refuses (as if revoked).
    let (cert, key) = (
        t.dir.path().join("device.pem"),
        t.dir.path().join("device.key"),
    );
    std::fs::copy(&t.pki.rogue_cert, &cert).unwrap();
    std::fs::copy(&t.pki.rogue_key, &key).unwrap();
    let mqtt = mqtt_section(&t.front.url("localhost"), &t.pki, &t.password_file, false)
        + &format!(
            "client_cert = \"{}\"\nclient_key = \"{}\"\n",
            cert.display(),
            key.display()
        );
    let agent = Agent::start_with_mqtt(t.dir.path(), &device, &t.gnss, &mqtt, &[]);
    wait_for_mqtt_tls(&agent, |_| true);
    assert_eq!(t.front.failed(), 1);

    // The renewed certificate lands under the same paths; `systemctl reload` sends SIGHUP.
    // Without it the agent would wait permanent_retry (600 s) before trying again.
    std::fs::copy(&t.pki.client_cert, &cert).unwrap();
    std::fs::copy(&t.pki.client_key, &key).unwrap();
    agent.signal("-HUP");
    let seqs = sub.fix_seqs(t.expected, Duration::from_secs(30)).await;
    assert_eq!(seqs, (1..=t.expected).collect::<BTreeSet<u64>>());
    let accepted: Vec<_> = t
        .front
        .handshakes()
        .into_iter()
        .filter(|h| h.client_cert)
        .collect();
    assert_eq!(
        accepted.len(),
        1,
        "one new connection, with the renewed certificate"
    );
    let (exit, _) = agent.terminate();
    assert_eq!(exit, 0);
}

/// Wait until the front has seen `n` handshakes; returns them.
async fn handshakes(front: &TlsFront, n: usize) -> Vec<support::tls_front::Handshake> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = front.handshakes();
        if seen.len() >= n {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} handshakes, waiting for {n}",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_resumes_its_tls_session_and_a_changed_ca_drops_the_ticket() {
    let t = Setup::new(20, PASSWORD).await;
    let device = support::unique("truck");
    let mut sub = t.subscriber(&device).await;
    let mqtt = mqtt_section(&t.front.url("localhost"), &t.pki, &t.password_file, true);
    let tickets = t.dir.path().join("buffer.db.tls-tickets");

    // The first trip: a full handshake; the broker's tickets land beside the buffer.
    let agent = Agent::start_with_mqtt(t.dir.path(), &device, &t.gnss, &mqtt, &[]);
    let seqs = sub.fix_seqs(t.expected, Duration::from_secs(30)).await;
    assert_eq!(seqs, (1..=t.expected).collect::<BTreeSet<u64>>());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !tickets.exists() {
        assert!(std::time::Instant::now() < deadline, "no ticket file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(agent.terminate().0, 0);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&tickets).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // The next trip (a new process): its first connection resumes.
    let agent = Agent::start_with_mqtt(t.dir.path(), &device, &t.gnss, &mqtt, &[]);
    let seen = handshakes(&t.front, 2).await;
    assert_eq!(agent.terminate().0, 0);
    let resumed: Vec<bool> = seen.iter().map(|h| h.resumed).collect();
    assert_eq!(resumed, [false, true]);

    // The CA file replaced (a second CA added): the stored tickets are dropped, unused.
    let bundle = std::fs::read_to_string(&t.pki.ca).unwrap()
        + &std::fs::read_to_string(&t.pki.other_ca).unwrap();
    std::fs::write(&t.pki.ca, bundle).unwrap();
    let agent = Agent::start_with_mqtt(t.dir.path(), &device, &t.gnss, &mqtt, &[]);
    let seen = handshakes(&t.front, 3).await;
    assert_eq!(agent.terminate().0, 0);
    assert!(!seen[2].resumed, "{seen:?}");
    let log = std::fs::read_to_string(t.dir.path().join("agent.log")).unwrap();
    assert_eq!(
        log.matches("stored TLS tickets were made under another CA")
            .count(),
        1,
        "{log}"
    );
}
