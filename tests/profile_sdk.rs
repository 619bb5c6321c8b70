//! The platform profiles beside the platforms' own device SDKs (issue 24): each SDK (from
//! PyPI: `tb-mqtt-client`, `azure-iot-device`, `awsiotsdk`, and Cumulocity's device agent
//! `c8ydm`) and the agent connect to the same mosquitto, and the test compares what the broker
//! saw of both, from its own log: client id, protocol, clean session, keep-alive, user name
//! form, subscriptions with their QoS, publish topics with QoS and retain flags, and the
//! telemetry payload's shape (Cumulocity: the SmartREST lines each sends, read by a subscriber
//! on the broker's other listener, since the log shows no payloads). What the platform's
//! contract fixes must be equal; where the platform accepts either (protocol level, clean
//! session, keep-alive, QoS, the templates only one of them sends) the difference is printed.
//!
//! `#[ignore]`d: needs mosquitto and the SDKs; `bash .ci/sdk.sh` installs both (venvs under
//! `target/`) and runs it with `GPS_AGENT_SDK_PYTHON` and `GPS_AGENT_C8YDM_PYTHON` set.

mod support;

use gps_agent::sim::DriveSpec;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::agent::{drive_log, Agent};
use support::broker::Subscriber;
use support::certs::TestPki;
use support::mosquitto::{Mosquitto, MosquittoOptions};

/// The python of `.ci/sdk.sh`'s venv with ThingsBoard's, Azure's and AWS's SDKs.
const SDK_PYTHON: &str = "GPS_AGENT_SDK_PYTHON";
/// The python of its venv with Cumulocity's agent: c8ydm needs paho-mqtt 1.x, ThingsBoard's
/// SDK its own paho 2.x under the same module name, so they cannot share one.
const C8YDM_PYTHON: &str = "GPS_AGENT_C8YDM_PYTHON";

/// Run with the python `var` names a script of `tests/sdk/` with `args`; it must succeed.
/// Without `var` set, a panic: these tests run only from `.ci/sdk.sh`.
fn run_sdk(var: &str, script: &str, args: &[&str]) {
    let python = std::env::var_os(var)
        .unwrap_or_else(|| panic!("{var} names the python with the SDK: run bash .ci/sdk.sh"));
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let out = Command::new(python).arg(&path).args(args).output().unwrap();
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

/// Start the agent with remote commands on, so its command channel is compared too.
fn start_agent(dir: &Path, device: &str, mqtt: &str) -> Agent {
    let mqtt = format!("{mqtt}\nlinger_s = 0\n\n[commands]\nenabled = true");
    Agent::start_with_mqtt(dir, device, &gnss(dir), &mqtt, &[])
}

/// Stop the agent; it must exit 0.
fn stop_agent(agent: Agent, dir: &Path, broker: &Mosquitto) {
    let (code, _) = agent.terminate();
    let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    assert_eq!(code, 0, "agent log:\n{log}\nbroker log:\n{}", broker.log());
}

/// Run the agent until mosquitto saw it publish on `topic`, then stop it.
async fn run_agent(broker: &Mosquitto, dir: &Path, device: &str, mqtt: &str, topic: &str) {
    let agent = start_agent(dir, device, mqtt);
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
    stop_agent(agent, dir, broker);
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
    run_sdk(
        SDK_PYTHON,
        "thingsboard_device.py",
        &["127.0.0.1", &port, token],
    );
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
    // Server-side RPC (the commands), and the answer to its own `getSessionLimits` call.
    assert_eq!(
        agent.subscriptions,
        BTreeSet::from([
            ("v1/devices/me/rpc/request/+".to_string(), 1),
            ("v1/devices/me/rpc/response/+".to_string(), 1)
        ])
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
        SDK_PYTHON,
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
        SDK_PYTHON,
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

/// The SmartREST lines of one message: split at line breaks outside quoted fields (a field
/// may hold line breaks when quoted: c8ydm's `113` carries its whole configuration so).
fn smartrest_lines(payload: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut quoted = false;
    for c in payload.chars() {
        match c {
            '\n' if !quoted => lines.push(std::mem::take(&mut line)),
            _ => {
                quoted ^= c == '"';
                line.push(c);
            }
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// The SmartREST lines, each with its topic, that `sub` receives up to and with the message
/// holding the first line `last` accepts.
async fn smartrest_until(
    sub: &mut Subscriber,
    what: &str,
    last: impl Fn(&str) -> bool,
) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    let found = support::wait::poll_async(Duration::from_secs(30), async || {
        let msg = sub.next(Duration::from_millis(100)).await?;
        let lines = smartrest_lines(&String::from_utf8_lossy(&msg.payload));
        let done = lines.iter().any(|l| last(l));
        seen.extend(lines.into_iter().map(|l| (msg.topic.clone(), l)));
        done.then_some(())
    })
    .await;
    assert!(found.is_some(), "waited for {what}, in vain: {seen:#?}");
    seen
}

/// The lines sent on `topic`.
fn lines_on<'a>(lines: &'a [(String, String)], topic: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter(|(t, _)| t == topic)
        .map(|(_, l)| l.as_str())
        .collect()
}

/// The SmartREST template numbers (a line's first field) of `lines`.
fn templates(lines: &[&str]) -> BTreeSet<String> {
    lines
        .iter()
        .map(|l| l.split(',').next().unwrap_or_default().to_string())
        .collect()
}

/// The operations a device declares it takes (`114,{fragment},...`).
fn operations(lines: &[&str]) -> BTreeSet<String> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("114,"))
        .flat_map(|l| l.split(',').map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto and Cumulocity's device agent: bash .ci/sdk.sh"]
async fn cumulocity_the_agent_connects_and_publishes_as_c8ydm_does() {
    let serial = support::unique("c8y");
    let (tenant, user, password) = ("t12345", format!("device_{serial}"), "c8y-device-secret");
    let login = format!("{tenant}/{user}");
    let broker = Mosquitto::start(
        &verbose(MosquittoOptions {
            users: vec![(login.clone(), password.to_string())],
            ..MosquittoOptions::default()
        }),
        None,
    );
    // What each sends, read on the broker's anonymous listener: its log shows no payloads.
    let mut upstream = Subscriber::start(&broker.for_subscriber(), "s/#").await;
    let port = broker.agent_addr.port().to_string();
    run_sdk(
        C8YDM_PYTHON,
        "cumulocity_device.py",
        &["127.0.0.1", &port, tenant, &user, password, &serial],
    );
    // Its stop event is the last line c8ydm sends, before its DISCONNECT.
    let sdk_lines = smartrest_until(&mut upstream, "c8ydm's stop event", |l| {
        l.starts_with("400,c8y_AgentStopEvent,")
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("c8y.password");
    std::fs::write(&password_file, password).unwrap();
    let mqtt = format!(
        "url = \"{}\"\nprofile = \"cumulocity\"\nusername = \"{login}\"\npassword_file = \"{}\"",
        broker.agent_url(false),
        password_file.display()
    );
    let agent = start_agent(dir.path(), &serial, &mqtt);
    let agent_lines = smartrest_until(&mut upstream, "the agent's first 401 line", |l| {
        l.starts_with("401,")
    })
    .await;
    stop_agent(agent, dir.path(), &broker);

    let seen: Vec<Client> = clients(&broker.log())
        .into_iter()
        .filter(|c| c.id.ends_with(&serial))
        .collect();
    // Once each: c8ydm reconnects every 5 s when anything in its start fails.
    assert_eq!(seen.len(), 2, "{seen:#?}");
    let (sdk, agent) = (&seen[0], &seen[1]);
    show("Cumulocity", sdk, agent);
    // The device identifier is the serial: c8ydm sends it bare, the agent with the
    // connection type `d:` that the platform takes as the default.
    assert_eq!(sdk.id, serial);
    assert_eq!(agent.id, format!("d:{serial}"));
    eprintln!(
        "  differs, as the platform allows: client id: SDK {}, agent {}",
        sdk.id, agent.id
    );
    assert_eq!(sdk.user.as_deref(), Some(login.as_str()));
    assert_eq!(agent.user.as_deref(), Some(login.as_str()));

    // Operations arrive on s/ds: both take them there; the agent subscribes nothing else.
    let filters = |c: &Client| -> BTreeSet<String> {
        c.subscriptions.iter().map(|(f, _)| f.clone()).collect()
    };
    assert!(filters(sdk).contains("s/ds"), "{sdk:?}");
    assert_eq!(filters(agent), BTreeSet::from(["s/ds".to_string()]));
    for (filter, qos) in &agent.subscriptions {
        for (_, sdk_qos) in sdk.subscriptions.iter().filter(|(f, _)| f == filter) {
            if sdk_qos != qos {
                eprintln!("  differs, as the platform allows: {filter} at QoS: SDK {sdk_qos}, agent {qos}");
            }
        }
    }
    eprintln!(
        "  SDK only subscribes: {:?}",
        filters(sdk).difference(&filters(agent)).collect::<Vec<_>>()
    );

    // Static templates on s/us, never retained (c8ydm also uses its own template on s/uc/).
    assert!(
        agent
            .publishes
            .iter()
            .all(|(t, _, retain)| t == "s/us" && !retain),
        "{agent:?}"
    );
    assert!(sdk.publishes.iter().any(|(t, ..)| t == "s/us"), "{sdk:?}");
    assert!(
        sdk.publishes.iter().all(|(_, _, retain)| !retain),
        "{sdk:?}"
    );
    let qos = |c: &Client| -> BTreeSet<u8> {
        c.publishes
            .iter()
            .filter(|(t, ..)| t == "s/us")
            .map(|(_, q, _)| *q)
            .collect()
    };
    if qos(sdk) != qos(agent) {
        eprintln!(
            "  differs, as the platform allows: s/us at QoS: SDK {:?}, agent {:?}",
            qos(sdk),
            qos(agent)
        );
    }
    let (sdk_us, agent_us) = (lines_on(&sdk_lines, "s/us"), lines_on(&agent_lines, "s/us"));
    // Both name the device first (100 creates it when the tenant has none with this serial).
    assert!(sdk_us[0].starts_with("100,"), "{sdk_us:#?}");
    assert!(agent_us[0].starts_with("100,"), "{agent_us:#?}");
    // The agent takes operations c8ydm takes too, as the same fragments.
    let (sdk_ops, agent_ops) = (operations(&sdk_us), operations(&agent_us));
    assert_eq!(
        agent_ops,
        BTreeSet::from(["c8y_Command".to_string(), "c8y_Restart".to_string()])
    );
    assert!(agent_ops.is_subset(&sdk_ops), "{sdk_ops:?}");
    for line in sdk_us.iter().chain(&agent_us) {
        if line.starts_with("400,") {
            support::platform::c8y_400(line).unwrap();
        }
        if line.starts_with("401,") {
            support::platform::c8y_401(line).unwrap();
        }
    }
    let (sdk_t, agent_t) = (templates(&sdk_us), templates(&agent_us));
    eprintln!(
        "  templates on s/us: both {:?}; SDK only {:?}; agent only {:?}",
        sdk_t.intersection(&agent_t).collect::<Vec<_>>(),
        sdk_t.difference(&agent_t).collect::<Vec<_>>(),
        agent_t.difference(&sdk_t).collect::<Vec<_>>()
    );
    assert!(sdk_t.is_superset(&BTreeSet::from(["100".into(), "114".into(), "400".into()])));
    assert!(agent_t.is_superset(&BTreeSet::from([
        "100".into(),
        "114".into(),
        "400".into(),
        "401".into()
    ])));
}

#[test]
fn smartrest_lines_split_at_line_breaks_outside_quoted_fields() {
    assert_eq!(
        smartrest_lines("100,a,b\n113,\"x=1\ny=\"\"2\"\"\"\n400,t,text"),
        ["100,a,b", "113,\"x=1\ny=\"\"2\"\"\"", "400,t,text"]
    );
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
