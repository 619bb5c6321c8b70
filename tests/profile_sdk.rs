//! The platform profiles beside the platforms' own device SDKs (issue 24): each SDK (from
//! PyPI: `tb-mqtt-client`, `azure-iot-device`, `awsiotsdk`) and the agent connect to the same
//! mosquitto, and the test compares what the broker saw of both, from its own log: client id,
//! protocol, clean session, keep-alive, user name form, subscriptions with their QoS, publish
//! topics with QoS and retain flags, and the telemetry payload's shape. What the platform's
//! contract fixes must be equal; where the platform accepts either (protocol level, clean
//! session, keep-alive) the difference is printed.
//!
//! `#[ignore]`d: needs mosquitto and the SDKs; `bash .ci/sdk.sh` installs both (a venv under
//! `target/`) and runs it with `GPS_AGENT_SDK_PYTHON` set.

mod support;

use gps_agent::sim::DriveSpec;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::agent::{drive_log, Agent};
use support::certs::TestPki;
use support::mosquitto::{Mosquitto, MosquittoOptions};

/// The venv's python with the SDKs, or a panic: these tests run only from `.ci/sdk.sh`.
fn python() -> PathBuf {
    PathBuf::from(
        std::env::var_os("GPS_AGENT_SDK_PYTHON")
            .expect("GPS_AGENT_SDK_PYTHON names the python with the SDKs: run bash .ci/sdk.sh"),
    )
}

/// Run an SDK script of `tests/sdk/` with `args`; it must succeed.
fn run_sdk(script: &str, args: &[&str]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What mosquitto saw of one client.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Client {
    id: String,
    protocol: String,
    clean_session: bool,
    keep_alive: u32,
    user: Option<String>,
    subscriptions: BTreeSet<(String, u8)>,
    /// Topic, QoS, retain.
    publishes: BTreeSet<(String, u8, bool)>,
}

/// Every client in a verbose mosquitto log, in order of connection.
fn clients(log: &str) -> Vec<Client> {
    let mut all: Vec<Client> = Vec::new();
    let mut subscribing: Option<String> = None;
    for line in log.lines() {
        let Some((_, text)) = line.split_once(": ") else {
            continue;
        };
        if let Some(rest) = text.strip_prefix("New client connected from ") {
            // "... as ID (p2, c1, k60, u'USER')."
            let Some((_, after)) = rest.split_once(" as ") else {
                continue;
            };
            let Some((id, flags)) = after.rsplit_once(" (") else {
                continue;
            };
            let flags = flags.trim_end_matches(").");
            let mut c = Client {
                id: id.to_string(),
                ..Client::default()
            };
            for flag in flags.split(", ") {
                match flag.split_at(1) {
                    ("p", v) => c.protocol = v.to_string(),
                    ("c", v) => c.clean_session = v == "1",
                    ("k", v) => c.keep_alive = v.parse().unwrap_or(0),
                    ("u", v) => c.user = Some(v.trim_matches('\'').to_string()),
                    _ => {}
                }
            }
            all.push(c);
            subscribing = None;
        } else if let Some(id) = text.strip_prefix("Received SUBSCRIBE from ") {
            subscribing = Some(id.to_string());
        } else if let Some(rest) = text.strip_prefix("Received PUBLISH from ") {
            subscribing = None;
            // "ID (d0, q1, r0, m1, 'TOPIC', ... (N bytes))"
            let Some((id, flags)) = rest.split_once(" (") else {
                continue;
            };
            let mut parts = flags.splitn(5, ", ");
            let _dup = parts.next();
            let qos = parts.next().and_then(|q| q[1..].parse().ok()).unwrap_or(9);
            let retain = parts.next() == Some("r1");
            let _mid = parts.next();
            let topic = parts
                .next()
                .and_then(|t| t.strip_prefix('\''))
                .and_then(|t| t.split_once("', ... ("))
                .map(|(t, _)| t.to_string())
                .unwrap_or_default();
            if let Some(c) = all.iter_mut().rev().find(|c| c.id == id) {
                c.publishes.insert((topic, qos, retain));
            }
        } else if let Some(id) = &subscribing {
            // "\tFILTER (QoS n)", then "ID QOS FILTER"
            if text.starts_with('\t') {
                continue;
            }
            let Some(rest) = text.strip_prefix(&format!("{id} ")) else {
                subscribing = None;
                continue;
            };
            if let Some((qos, filter)) = rest.split_once(' ') {
                if let (Ok(qos), Some(c)) =
                    (qos.parse(), all.iter_mut().rev().find(|c| &c.id == id))
                {
                    c.subscriptions.insert((filter.to_string(), qos));
                }
            }
        }
    }
    all
}

fn show(platform: &str, sdk: &Client, agent: &Client) {
    eprintln!("{platform}: what mosquitto saw\n  SDK:   {sdk:?}\n  agent: {agent:?}");
    for (what, a, b) in [
        ("protocol", sdk.protocol.clone(), agent.protocol.clone()),
        (
            "clean session",
            sdk.clean_session.to_string(),
            agent.clean_session.to_string(),
        ),
        (
            "keep-alive",
            sdk.keep_alive.to_string(),
            agent.keep_alive.to_string(),
        ),
    ] {
        if a != b {
            eprintln!("  differs, as the platform allows: {what}: SDK {a}, agent {b}");
        }
    }
}

/// The agent's subscriptions are among the SDK's, at the same QoS.
fn assert_subscriptions_within(sdk: &Client, agent: &Client) {
    for s in &agent.subscriptions {
        assert!(
            sdk.subscriptions.contains(s),
            "the agent subscribes {s:?}, the SDK does not: {:?}",
            sdk.subscriptions
        );
    }
}

/// A drive of a few fixes, as the `[gnss]` section replaying it.
fn gnss(dir: &Path) -> String {
    let log = drive_log(
        dir,
        DriveSpec {
            epochs: 10,
            ..DriveSpec::default()
        },
    );
    format!(
        "[gnss]\nsource = \"file\"\npath = \"{}\"\npace = \"fast\"",
        log.display()
    )
}

/// Run the agent (remote commands on, so its command channel is compared too) until
/// mosquitto saw it publish on `topic`, then stop it.
async fn run_agent(broker: &Mosquitto, dir: &Path, device: &str, mqtt: &str, topic: &str) {
    let mqtt = format!("{mqtt}\nlinger_s = 0\n\n[commands]\nenabled = true");
    let agent = Agent::start_with_mqtt(dir, device, &gnss(dir), &mqtt, &[]);
    let (from, on) = (
        format!("Received PUBLISH from {device} ("),
        format!("'{topic}', ..."),
    );
    support::wait_for(&format!("the agent publishing on {topic}"), || {
        broker
            .log()
            .lines()
            .any(|l| l.contains(&from) && l.contains(&on))
    })
    .await;
    let (code, _) = agent.terminate();
    let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    assert_eq!(code, 0, "agent log:\n{log}\nbroker log:\n{}", broker.log());
}

fn verbose(options: MosquittoOptions) -> MosquittoOptions {
    MosquittoOptions {
        log_packets: true,
        ..options
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto and ThingsBoard's SDK: bash .ci/sdk.sh"]
async fn thingsboard_the_agent_connects_and_publishes_as_tb_mqtt_client_does() {
    let broker = Mosquitto::start(&verbose(MosquittoOptions::default()), None);
    let dir = tempfile::tempdir().unwrap();
    let token = "TB_TOKEN_sdk_1";
    let port = broker.agent_addr.port().to_string();
    run_sdk("thingsboard_device.py", &["127.0.0.1", &port, token]);
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    let device = support::unique("tb");
    let mqtt = format!(
        "url = \"{}\"\nprofile = \"thingsboard\"\npassword_file = \"{}\"",
        broker.agent_url(false),
        token_file.display()
    );
    run_agent(
        &broker,
        dir.path(),
        &device,
        &mqtt,
        "v1/devices/me/telemetry",
    )
    .await;

    let seen = clients(&broker.log());
    assert_eq!(seen.len(), 2, "{seen:#?}");
    let (sdk, agent) = (&seen[0], &seen[1]);
    show("ThingsBoard", sdk, agent);
    assert_eq!(sdk.user.as_deref(), Some(token));
    assert_eq!(agent.user.as_deref(), Some(token));
    for topic in ["v1/devices/me/telemetry", "v1/devices/me/attributes"] {
        let published = (topic.to_string(), 1, false);
        assert!(sdk.publishes.contains(&published), "{sdk:?}");
        assert!(agent.publishes.contains(&published), "{agent:?}");
    }
    assert_subscriptions_within(sdk, agent);
    assert_eq!(
        agent.subscriptions,
        BTreeSet::from([("v1/devices/me/rpc/request/+".to_string(), 1)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto on port 8883 and Azure's SDK: bash .ci/sdk.sh"]
async fn azure_the_agent_connects_and_publishes_as_azure_iot_device_does() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let broker = Mosquitto::start(
        &verbose(MosquittoOptions {
            tls: true,
            agent_port: Some(8883),
            ..MosquittoOptions::default()
        }),
        Some(&pki),
    );
    let device = support::unique("az");
    let key = "c2VjcmV0LWtleS1mb3ItdGVzdHM=";
    run_sdk(
        "azure_device.py",
        &[&pki.ca.display().to_string(), &device, key],
    );
    let key_file = dir.path().join("device.key");
    std::fs::write(&key_file, key).unwrap();
    let mqtt = format!(
        "url = \"mqtts://localhost:8883\"\nprofile = \"azure\"\nsas_key_file = \"{}\"\nca_file = \"{}\"",
        key_file.display(),
        pki.ca.display()
    );
    let events = format!("devices/{device}/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8");
    // The SDK published on `events` too, under the same client id: the agent's own twin
    // patch (its request ids count from 1; the SDK's are UUIDs) says it is there.
    run_agent(
        &broker,
        dir.path(),
        &device,
        &mqtt,
        "$iothub/twin/PATCH/properties/reported/?$rid=1",
    )
    .await;

    let seen = clients(&broker.log());
    assert_eq!(seen.len(), 2, "{seen:#?}");
    let (sdk, agent) = (&seen[0], &seen[1]);
    show("Azure IoT Hub", sdk, agent);
    assert_eq!(sdk.id, device);
    assert_eq!(agent.id, device);
    let prefix = format!("localhost/{device}/?api-version=");
    assert!(
        sdk.user.as_deref().is_some_and(|u| u.starts_with(&prefix)),
        "{sdk:?}"
    );
    assert!(
        agent
            .user
            .as_deref()
            .is_some_and(|u| u.starts_with(&prefix)),
        "{agent:?}"
    );
    let telemetry = (events.clone(), 1, false);
    assert!(sdk.publishes.contains(&telemetry), "{sdk:?}");
    assert!(agent.publishes.contains(&telemetry), "{agent:?}");
    let twin = |c: &Client| -> BTreeSet<(u8, bool)> {
        c.publishes
            .iter()
            .filter(|(t, ..)| t.starts_with("$iothub/twin/PATCH/properties/reported/?$rid="))
            .map(|(_, q, r)| (*q, *r))
            .collect()
    };
    assert!(!twin(sdk).is_empty(), "{sdk:?}");
    assert!(twin(agent).iter().all(|(_, retain)| !retain), "{agent:?}");
    assert!(!twin(agent).is_empty(), "{agent:?}");
    assert!(
        agent.publishes.iter().all(|(_, _, retain)| !retain),
        "IoT Hub refuses retained: {agent:?}"
    );
    assert_subscriptions_within(sdk, agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto and AWS's SDK: bash .ci/sdk.sh"]
async fn aws_the_agent_connects_and_publishes_as_awsiotsdk_does() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let broker = Mosquitto::start(
        &verbose(MosquittoOptions {
            tls: true,
            require_certificate: true,
            ..MosquittoOptions::default()
        }),
        Some(&pki),
    );
    let thing = support::unique("thing");
    let port = broker.agent_addr.port().to_string();
    let path = |p: &Path| p.display().to_string();
    run_sdk(
        "aws_device.py",
        &[
            "localhost",
            &port,
            &path(&pki.client_cert),
            &path(&pki.client_key),
            &path(&pki.ca),
            &thing,
        ],
    );
    let mqtt = format!(
        "url = \"{}\"\nprofile = \"aws\"\nca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
        broker.agent_url(true),
        path(&pki.ca),
        path(&pki.client_cert),
        path(&pki.client_key)
    );
    let fixes = format!("fleet/{thing}/fixes");
    // The SDK published on `fixes` under the same client id; the state is the agent's alone.
    run_agent(
        &broker,
        dir.path(),
        &thing,
        &mqtt,
        &format!("fleet/{thing}/status"),
    )
    .await;

    let seen = clients(&broker.log());
    assert_eq!(seen.len(), 2, "{seen:#?}");
    let (sdk, agent) = (&seen[0], &seen[1]);
    show("AWS IoT Core", sdk, agent);
    assert_eq!(sdk.id, thing);
    assert_eq!(agent.id, thing);
    // The SDK's user name carries only its metrics (`?SDK=...`); the certificate is the
    // credential.
    assert_eq!(agent.user, None);
    let published = (fixes, 1, false);
    assert!(sdk.publishes.contains(&published), "{sdk:?}");
    assert!(agent.publishes.contains(&published), "{agent:?}");
    assert!((30..=1200).contains(&agent.keep_alive), "{agent:?}");
}

#[test]
fn the_log_reader_finds_connections_subscriptions_and_publishes() {
    let log = "1: New client connected from 127.0.0.1:1 as bar (p2, c0, k60, u'h/bar/?api-version=1').\n\
               2: Received SUBSCRIBE from bar\n\
               2: \t$iothub/methods/POST/# (QoS 1)\n\
               3: bar 1 $iothub/methods/POST/#\n\
               4: Received PUBLISH from bar (d0, q1, r0, m1, 'devices/bar/messages/events/', ... (8 bytes))\n\
               5: New client connected from 127.0.0.1:2 as auto-1 (p5, c1, k120).\n\
               6: Received PUBLISH from auto-1 (d0, q0, r1, m0, 'a/b', ... (2 bytes))\n";
    let seen = clients(log);
    assert_eq!(
        seen,
        vec![
            Client {
                id: "bar".into(),
                protocol: "2".into(),
                clean_session: false,
                keep_alive: 60,
                user: Some("h/bar/?api-version=1".into()),
                subscriptions: BTreeSet::from([("$iothub/methods/POST/#".into(), 1)]),
                publishes: BTreeSet::from([("devices/bar/messages/events/".into(), 1, false)]),
            },
            Client {
                id: "auto-1".into(),
                protocol: "5".into(),
                clean_session: true,
                keep_alive: 120,
                user: None,
                subscriptions: BTreeSet::new(),
                publishes: BTreeSet::from([("a/b".into(), 0, true)]),
            },
        ]
    );
}
