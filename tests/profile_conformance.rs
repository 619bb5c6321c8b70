//! The platform profiles through the real binary (issue 24): for each platform, the agent
//! replays a drive to rumqttd through a tap that decodes what the agent sends, and the test
//! checks the platform's documented device contract byte for byte as that platform's broker
//! would see it: client id, user name and password form, keep-alive, clean session, the last
//! will, each publish's topic, QoS and retain flag, and the payload's shape with every fix at
//! its own receiver time. Delivery stays exact in every profile: every fix of the drive is
//! in exactly one acknowledged message, and the agent's buffer is empty when it stops.

mod support;

use gps_agent::sim::DriveSpec;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};
use support::agent::{drive_log, parse_times, stored_rows, Agent};
use support::broker::{Subscriber, TestBroker};
use support::certs::TestPki;
use support::mosquitto::{Mosquitto, MosquittoOptions};
use support::mqtt_tap::{Connect, MqttTap};
use support::tls_front::{ClientAuth, TlsFront};

enum Broker {
    Rumqttd(TestBroker),
    Mosquitto(Mosquitto),
}

impl Broker {
    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Broker::Rumqttd(b) => b.addr,
            Broker::Mosquitto(m) => m.agent_addr,
        }
    }

    /// Where the test's back end connects (mosquitto's plain listener for subscribers).
    fn back_end(&self) -> TestBroker {
        match self {
            Broker::Rumqttd(b) => TestBroker { addr: b.addr },
            Broker::Mosquitto(m) => m.for_subscriber(),
        }
    }
}

/// The platform's back end calling the agent: `call` published on `topic` every half
/// second until something arrives on the subscriber's filter (the agent subscribes only once
/// connected; a repeated call is answered from the ledger, not run again).
async fn call(back_end: &mut Subscriber, topic: &str, call: &str) -> support::broker::Received {
    for _ in 0..60 {
        back_end
            .client
            .publish(
                topic,
                rumqttc::QoS::AtLeastOnce,
                false,
                call.as_bytes().to_vec(),
            )
            .await
            .unwrap();
        if let Some(answer) = back_end.next(std::time::Duration::from_millis(500)).await {
            return answer;
        }
    }
    panic!("no answer to {call} on {topic}");
}

/// `[mqtt]` keys, then `[commands] enabled`.
fn with_commands(mqtt: &str) -> String {
    format!("{mqtt}\nlinger_s = 0\n\n[commands]\nenabled = true")
}

struct Run {
    dir: tempfile::TempDir,
    device: String,
    /// Receiver times of the fixes the drive gives (`gps-agent parse`).
    times: BTreeSet<i64>,
    gnss: String,
    /// The broker behind the tap, kept running.
    _broker: Broker,
    tap: MqttTap,
}

impl Run {
    /// Behind the tap, rumqttd.
    async fn new() -> Run {
        Run::on(Broker::Rumqttd(TestBroker::start())).await
    }

    /// Behind the tap, a real mosquitto: for Azure, whose `$iothub/...` filters rumqttd
    /// refuses (it takes no filter starting with `$` but `$share`).
    async fn on_mosquitto() -> Run {
        assert!(
            support::mosquitto::available(),
            "needs mosquitto: bash .ci/sdk.sh"
        );
        Run::on(Broker::Mosquitto(Mosquitto::start(
            &MosquittoOptions::default(),
            None,
        )))
        .await
    }

    async fn on(broker: Broker) -> Run {
        let spec = DriveSpec {
            epochs: 40,
            ..DriveSpec::default()
        };
        Run::driving(broker, spec, "fast").await
    }

    /// Behind the tap, `broker`; the agent replays `spec` at `pace`.
    async fn driving(broker: Broker, spec: DriveSpec, pace: &str) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let log = drive_log(dir.path(), spec);
        let times = parse_times(&log);
        assert!(times.len() > 30, "{}", times.len());
        let gnss = format!(
            "[gnss]\nsource = \"file\"\npath = \"{}\"\npace = \"{pace}\"",
            log.display()
        );
        let tap = MqttTap::start(broker.addr()).await;
        Run {
            dir,
            device: support::unique("truck"),
            times,
            gnss,
            _broker: broker,
            tap,
        }
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    fn start(&self, mqtt: &str) -> Agent {
        Agent::start_with_mqtt(self.dir.path(), &self.device, &self.gnss, mqtt, &[])
    }

    /// Publishes on `topic` until their payloads hold `n` fixes by `count`.
    async fn wait_fixes(&self, topic: &str, n: usize, count: impl Fn(&[u8]) -> usize) {
        support::wait_for(&format!("{n} fixes on {topic}"), || {
            let seen: usize = self
                .tap
                .publishes()
                .iter()
                .filter(|(t, ..)| t == topic)
                .map(|(_, _, _, p)| count(p))
                .sum();
            seen >= n
        })
        .await;
    }

    /// The agent stops cleanly and its buffer holds nothing unacknowledged.
    fn stop(&self, agent: Agent) {
        let (code, db) = agent.terminate();
        assert_eq!(code, 0);
        assert_eq!(stored_rows(&db), Vec::new(), "fixes left unacknowledged");
    }

    fn only_connect(&self) -> Connect {
        let connects = self.tap.connects();
        assert_eq!(connects.len(), 1, "{connects:?}");
        connects[0].clone()
    }
}

/// Every publish on `topic`: QoS 1, retained as `retain`.
fn assert_qos1(run: &Run, topic: &str, retain: bool) -> Vec<Vec<u8>> {
    let all: Vec<_> = run
        .tap
        .publishes()
        .into_iter()
        .filter(|(t, ..)| t == topic)
        .collect();
    assert!(!all.is_empty(), "nothing on {topic}");
    for (t, qos, r, _) in &all {
        assert_eq!((*qos, *r), (1, retain), "{t}");
    }
    all.into_iter().map(|(.., p)| p).collect()
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thingsboard_gets_the_token_as_user_telemetry_points_at_fix_times_and_state_attributes() {
    let run = Run::new().await;
    let token = "A1_TEST_TOKEN_b7Qx";
    let token_file = run.file("token", &format!("{token}\n"));
    let mqtt = format!(
        "url = \"{}\"\nprofile = \"thingsboard\"\npassword_file = \"{token_file}\"",
        run.tap.url()
    );
    let agent = run.start(&mqtt);
    let n = run.times.len();
    run.wait_fixes("v1/devices/me/telemetry", n, |p| {
        json(p).as_array().map_or(0, Vec::len)
    })
    .await;
    run.stop(agent);

    let c = run.only_connect();
    assert_eq!(c.client_id, run.device);
    assert_eq!(c.username.as_deref(), Some(token));
    assert!(c.password.as_deref().is_none_or(<[u8]>::is_empty), "{c:?}");
    assert!(c.clean_session);
    assert_eq!(c.keep_alive, 240);
    let (will_topic, will, will_qos, will_retain) = c.will.unwrap();
    assert_eq!(
        (will_topic.as_str(), will_qos, will_retain),
        ("v1/devices/me/attributes", 1, false)
    );
    assert_eq!(json(&will)["state"], "offline");

    let mut times = BTreeSet::new();
    let mut seqs = Vec::new();
    for payload in assert_qos1(&run, "v1/devices/me/telemetry", false) {
        // The shape ThingsBoard documents (`tests/support/platform.rs`).
        for (ts, values) in support::platform::tb_telemetry(&payload).unwrap() {
            for key in ["latitude", "longitude", "seq", "stream"] {
                assert!(values.contains_key(key), "{values:?}");
            }
            for key in values.keys() {
                assert!(
                    [
                        "latitude",
                        "longitude",
                        "altitude",
                        "speed",
                        "course",
                        "hdop",
                        "sats",
                        "seq",
                        "stream"
                    ]
                    .contains(&key.as_str()),
                    "{key} in {values:?}"
                );
            }
            times.insert(ts);
            seqs.push(values["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(times, run.times);
    assert_eq!(
        seqs,
        (1..=n as u64).collect::<Vec<_>>(),
        "each fix once, in order"
    );
    let states: Vec<Value> = assert_qos1(&run, "v1/devices/me/attributes", false)
        .iter()
        .map(|p| json(p)["state"].clone())
        .collect();
    assert_eq!(states, ["online", "offline"]);
    let log = std::fs::read_to_string(run.dir.path().join("agent.log")).unwrap();
    assert!(!log.contains(token), "the access token reached the log");
    // It asked for the session limits as the documentation shows; nothing answered (no
    // ThingsBoard behind rumqttd) and every fix went all the same.
    let asked = assert_qos1(&run, "v1/devices/me/rpc/request/1", false);
    assert_eq!(
        asked.iter().map(|p| json(p)).collect::<Vec<_>>(),
        [serde_json::json!({"method": "getSessionLimits", "params": {}})]
    );
    assert!(run
        .tap
        .seen()
        .contains(&support::mqtt_tap::Seen::Subscribe(vec![(
            "v1/devices/me/rpc/response/+".into(),
            1
        )])));
}

/// A ThingsBoard that answers `getSessionLimits` with a small payload limit and tight rates:
/// the agent keeps to them from the answer on, and every fix still arrives once. The
/// drive is replayed at its own 10 Hz, so the answer (a round trip through the broker)
/// comes before the first fix is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thingsboard_session_limits_cap_each_message_and_pace_messages_and_data_points() {
    const MAX_PAYLOAD: usize = 400;
    const MESSAGES_PER_S: usize = 4;
    const POINTS_PER_S: u64 = 63;
    let spec = DriveSpec {
        epochs: 36,
        rate_hz: 10,
        ..DriveSpec::default()
    };
    let run = Run::driving(Broker::Rumqttd(TestBroker::start()), spec, "realtime").await;
    let token_file = run.file("token", "TB_LIMITS_TOKEN");
    // The fake ThingsBoard: answers the agent's client-side RPC on its response topic.
    let mut platform =
        Subscriber::start(&run._broker.back_end(), "v1/devices/me/rpc/request/+").await;
    let answer = serde_json::json!({
        "maxPayloadSize": MAX_PAYLOAD,
        "maxInflightMessages": 2,
        "rateLimits": {
            "messages": "200:1,6000:60",
            "telemetryMessages": format!("{MESSAGES_PER_S}:1,100:60"),
            "telemetryDataPoints": format!("{POINTS_PER_S}:1,2000:60"),
        }
    });
    let answering = tokio::spawn(async move {
        while let Some(call) = platform.next(std::time::Duration::from_secs(60)).await {
            if json(&call.payload)["method"] == "getSessionLimits" {
                let id = call.topic.rsplit('/').next().unwrap().to_owned();
                platform
                    .client
                    .publish(
                        format!("v1/devices/me/rpc/response/{id}"),
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        answer.to_string().into_bytes(),
                    )
                    .await
                    .unwrap();
                return platform;
            }
        }
        panic!("the agent never asked for its session limits");
    });
    let mqtt = format!(
        "url = \"{}\"\nprofile = \"thingsboard\"\npassword_file = \"{token_file}\"",
        run.tap.url()
    );
    let agent = run.start(&mqtt);
    let _platform = answering.await.unwrap();
    let n = run.times.len();
    run.wait_fixes("v1/devices/me/telemetry", n, |p| {
        json(p).as_array().map_or(0, Vec::len)
    })
    .await;
    run.stop(agent);

    let telemetry: Vec<(std::time::Instant, Vec<u8>)> = run
        .tap
        .seen_at()
        .into_iter()
        .filter_map(|(at, s)| match s {
            support::mqtt_tap::Seen::Publish { topic, payload, .. }
                if topic == "v1/devices/me/telemetry" =>
            {
                Some((at, payload))
            }
            _ => None,
        })
        .collect();
    let mut seqs = Vec::new();
    let mut sent: Vec<(std::time::Instant, u64)> = Vec::new();
    for (at, payload) in &telemetry {
        assert!(payload.len() <= MAX_PAYLOAD, "{} bytes", payload.len());
        let points = json(payload);
        let mut count = 0;
        for point in points.as_array().unwrap() {
            let values = point["values"].as_object().unwrap();
            count += values.len() as u64;
            seqs.push(values["seq"].as_u64().unwrap());
        }
        sent.push((*at, count));
    }
    assert_eq!(
        seqs,
        (1..=n as u64).collect::<Vec<_>>(),
        "each fix once, in order"
    );
    for (from, _) in &sent {
        let within: Vec<u64> = sent
            .iter()
            .filter(|(at, _)| at >= from && *at < *from + std::time::Duration::from_secs(1))
            .map(|(_, p)| *p)
            .collect();
        assert!(
            within.len() <= MESSAGES_PER_S,
            "{} messages in a second",
            within.len()
        );
        let points: u64 = within.iter().sum();
        assert!(points <= POINTS_PER_S, "{points} data points in a second");
    }
    // The pace, not the payload limit alone, spread them: more than a second's worth.
    assert!(sent.len() > MESSAGES_PER_S, "{}", sent.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cumulocity_gets_d_client_id_tenant_user_and_401_lines_at_fix_times() {
    let run = Run::new().await;
    let password = run.file("password", "c8y-secret\n");
    let mqtt = format!(
        "url = \"{}\"\nprofile = \"cumulocity\"\nusername = \"t12345/device_{}\"\n\
         password_file = \"{password}\"\nmax_message_bytes = 1024",
        run.tap.url(),
        run.device
    );
    let agent = run.start(&mqtt);
    let n = run.times.len();
    let lines_401 = |p: &[u8]| {
        std::str::from_utf8(p)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("401,"))
            .count()
    };
    run.wait_fixes("s/us", n, lines_401).await;
    run.stop(agent);

    let c = run.only_connect();
    assert_eq!(c.client_id, format!("d:{}", run.device));
    assert_eq!(c.username, Some(format!("t12345/device_{}", run.device)));
    assert_eq!(c.password.as_deref(), Some(&b"c8y-secret"[..]));
    let (will_topic, will, _, will_retain) = c.will.unwrap();
    assert_eq!((will_topic.as_str(), will_retain), ("s/us", false));
    assert_eq!(will, b"400,gps_agent_status,offline");

    let payloads = assert_qos1(&run, "s/us", false);
    let first = String::from_utf8(payloads[0].clone()).unwrap();
    assert_eq!(
        first,
        format!(
            "100,{},c8y_GpsAgent\n400,gps_agent_status,online",
            run.device
        )
    );
    let mut times = BTreeSet::new();
    let mut fixes = 0;
    for p in &payloads {
        assert!(p.len() <= 1024, "{} bytes", p.len());
        for line in std::str::from_utf8(p).unwrap().lines() {
            let fields: Vec<&str> = line.split(',').collect();
            if fields[0] != "401" {
                continue;
            }
            fixes += 1;
            assert_eq!(fields.len(), 6, "{line}");
            assert_eq!(fields[4], "", "accuracy left empty: {line}");
            // The template's fields as Cumulocity documents them (`tests/support/platform.rs`).
            let time = support::platform::c8y_401(line).unwrap();
            times.insert(time.expect("each line at its fix's time"));
        }
    }
    assert_eq!(fixes, n, "each fix in one line");
    assert_eq!(times, run.times);
    assert!(
        payloads.len() > 3,
        "several messages under the 1024-byte cap"
    );
    assert_eq!(
        String::from_utf8(payloads.last().unwrap().clone()).unwrap(),
        "400,gps_agent_status,offline"
    );
}

fn seconds_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The part of `token` after `name=` up to the next `&`.
fn token_field<'a>(token: &'a str, name: &str) -> &'a str {
    token
        .split(['&', ' '])
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto (rumqttd refuses $iothub filters): bash .ci/sdk.sh"]
async fn azure_gets_the_hub_user_a_signed_sas_token_events_with_properties_and_a_twin_patch() {
    let run = Run::on_mosquitto().await;
    let pki = TestPki::create(run.dir.path());
    let front = TlsFront::start(run.tap.addr, &pki, ClientAuth::None).await;
    let key_b64 = "c2VjcmV0LWtleS1mb3ItdGVzdHM=";
    let key_file = run.file("device.key", &format!("{key_b64}\n"));
    let mqtt = format!(
        "url = \"{}\"\nprofile = \"azure\"\nsas_key_file = \"{key_file}\"\nca_file = \"{}\"",
        front.url("localhost"),
        pki.ca.display()
    );
    let before = seconds_now();
    let agent = run.start(&mqtt);
    let n = run.times.len();
    let events = "devices/".to_string()
        + &run.device
        + "/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8";
    run.wait_fixes(&events, n, |p| {
        json(p)["fixes"].as_array().map_or(0, Vec::len)
    })
    .await;
    run.stop(agent);
    let after = seconds_now();

    let c = run.only_connect();
    assert_eq!(c.client_id, run.device);
    assert_eq!(
        c.username,
        Some(format!("localhost/{}/?api-version=2021-04-12", run.device))
    );
    let token = String::from_utf8(c.password.unwrap()).unwrap();
    assert!(token.starts_with("SharedAccessSignature sr="), "{token}");
    assert_eq!(
        token_field(&token, "sr"),
        format!("localhost%2Fdevices%2F{}", run.device)
    );
    let se: u64 = token_field(&token, "se").parse().unwrap();
    assert!((before + 3600..=after + 3600).contains(&se), "{se}");
    // The signature, as Azure's SDKs make it, recomputed here from the key.
    let key = gps_agent::base64::decode(key_b64.as_bytes()).unwrap();
    let expected = gps_agent::uplink::profile::azure::sas_token(
        "localhost",
        &run.device,
        &gps_agent::uplink::profile::azure::DeviceKey::new(key),
        se,
    );
    assert_eq!(token, expected);
    let (will_topic, _, _, will_retain) = c.will.unwrap();
    assert_eq!(will_topic, events.clone() + "&gps-agent=status");
    assert!(!will_retain);

    let mut times = BTreeSet::new();
    for p in assert_qos1(&run, &events, false) {
        for fix in json(&p)["fixes"].as_array().unwrap() {
            let t = chrono::DateTime::parse_from_rfc3339(fix["time"].as_str().unwrap()).unwrap();
            times.insert(t.timestamp_millis());
        }
    }
    assert_eq!(times, run.times);
    let patches = run
        .tap
        .publishes()
        .into_iter()
        .filter(|(t, ..)| t.starts_with("$iothub/twin/PATCH/properties/reported/?$rid="))
        .collect::<Vec<_>>();
    let states: Vec<Value> = patches
        .iter()
        .map(|(.., p)| json(p)["state"].clone())
        .collect();
    assert_eq!(states, ["online", "offline"]);
    assert!(patches.iter().all(|(_, q, r, _)| *q == 1 && !*r));
    let log = std::fs::read_to_string(run.dir.path().join("agent.log")).unwrap();
    assert!(
        !log.contains(token_field(&token, "sig")),
        "the token reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_gets_the_thing_name_as_client_id_mutual_tls_and_the_fleet_topics() {
    let run = Run::new().await;
    let pki = TestPki::create(run.dir.path());
    let front = TlsFront::start(run.tap.addr, &pki, ClientAuth::Required).await;
    let mqtt = format!(
        "url = \"{}\"\nprofile = \"aws\"\nca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\nkeep_alive_s = 1200",
        front.url("localhost"),
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let agent = run.start(&mqtt);
    let n = run.times.len();
    let fixes = format!("fleet/{}/fixes", run.device);
    run.wait_fixes(&fixes, n, |p| {
        json(p)["fixes"].as_array().map_or(0, Vec::len)
    })
    .await;
    run.stop(agent);
    let c = run.only_connect();
    assert_eq!(c.client_id, run.device);
    assert_eq!(c.username, None);
    assert_eq!(c.keep_alive, 1200);
    assert!(front.handshakes().iter().all(|h| h.client_cert));
    assert_qos1(&run, &fixes, false);
    let status = assert_qos1(&run, &format!("fleet/{}/status", run.device), true);
    assert_eq!(json(&status[0])["state"], "online");
}

fn problems(text: &str) -> Vec<(String, String)> {
    match gps_agent::config::parse_str(text) {
        Ok(_) => Vec::new(),
        Err(gps_agent::config::ConfigError::Invalid { problems }) => {
            problems.into_iter().map(|p| (p.key, p.message)).collect()
        }
        Err(other) => panic!("{other}"),
    }
}

fn keys(text: &str) -> Vec<String> {
    problems(text).into_iter().map(|(k, _)| k).collect()
}

#[test]
fn check_config_holds_each_platform_to_its_limits() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let cert = file("c.pem", "x");
    let key = file("k.pem", "x");
    // AWS: TLS, a certificate, keep-alive 30..=1200, topics within 7 slashes.
    let aws = keys("[mqtt]\nprofile = \"aws\"\nurl = \"mqtt://a:1883\"\nkeep_alive_s = 20");
    for k in ["mqtt.url", "mqtt.keep_alive_s", "mqtt.client_cert"] {
        assert!(aws.contains(&k.to_string()), "{k} in {aws:?}");
    }
    let deep = keys(&format!(
        "[mqtt]\nprofile = \"aws\"\nurl = \"mqtts://a:8883\"\ntopic_prefix = \"a/b/c/d/e/f\"\n\
         client_cert = \"{cert}\"\nclient_key = \"{key}\"\nmax_message_bytes = 200000"
    ));
    assert!(deep.contains(&"mqtt.topic_prefix".to_string()), "{deep:?}");
    assert!(
        deep.contains(&"mqtt.max_message_bytes".to_string()),
        "{deep:?}"
    );
    // Azure: a key or a certificate; no user name or password of one's own.
    let azure = keys("[mqtt]\nprofile = \"azure\"\nurl = \"mqtts://h:8883\"\nusername = \"u\"");
    assert_eq!(
        azure,
        ["mqtt.username", "mqtt.sas_key_file"].map(String::from)
    );
    // Cumulocity: {tenant}/{user} and a password.
    let c8y = keys("[mqtt]\nprofile = \"cumulocity\"\nusername = \"nouser\"");
    assert_eq!(
        c8y,
        ["mqtt.username", "mqtt.password_file"].map(String::from)
    );
    // ThingsBoard: a token.
    assert_eq!(
        keys("[mqtt]\nprofile = \"thingsboard\""),
        ["mqtt.password_file"].map(String::from)
    );
    // The SAS key is only for Azure; an unknown profile is refused.
    assert_eq!(
        keys(&format!("[mqtt]\nsas_key_file = \"{key}\"")),
        ["mqtt.sas_key_file"].map(String::from)
    );
    assert_eq!(keys("[mqtt]\nprofile = \"kura\"").len(), 1);
}

#[test]
fn aws_on_port_443_offers_alpn_x_amzn_mqtt_ca_and_on_8883_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let alpn = |port: u16| {
        let text = format!(
            "[device]\nid = \"thing-1\"\n[mqtt]\nprofile = \"aws\"\nurl = \"mqtts://x.iot.eu-west-1.amazonaws.com:{port}\"\n\
             ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        );
        let settings = gps_agent::config::parse_str(&text).unwrap();
        let publisher = gps_agent::uplink::settings::PublisherSettings::from_settings(
            &settings.mqtt,
            &settings.device.id,
        )
        .unwrap();
        assert_eq!(publisher.client_id, "thing-1");
        publisher
            .tls_client
            .config()
            .unwrap()
            .alpn_protocols
            .clone()
    };
    assert_eq!(alpn(443), vec![b"x-amzn-mqtt-ca".to_vec()]);
    assert_eq!(alpn(8883), Vec::<Vec<u8>>::new());
}

/// A token that lives 2 s is renewed 0.2 s before it expires: the session closes cleanly
/// (no `offline` on the twin), connects again at once with a new token, and every fix goes
/// once, acknowledged. (The product's tokens live an hour and renew 5 minutes ahead; the
/// lifetime is the one thing shortened here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto (rumqttd refuses $iothub filters): bash .ci/sdk.sh"]
async fn azure_renews_its_sas_token_by_reconnecting_before_it_expires_losing_nothing() {
    use gps_agent::uplink::profile::azure::DeviceKey;
    use gps_agent::uplink::profile::ProfileSettings;
    use support::publisher::{fast_settings, start};
    use support::source::MemSource;

    assert!(
        support::mosquitto::available(),
        "needs mosquitto: bash .ci/sdk.sh"
    );
    let broker = Mosquitto::start(&MosquittoOptions::default(), None);
    let tap = MqttTap::start(broker.agent_addr).await;
    let device = support::unique("truck");
    let mut settings = fast_settings(&tap.url(), &device, "fleet");
    settings.profile = ProfileSettings::Azure {
        hub: "hub.example".into(),
        key: Some(DeviceKey::new(b"renew-me".to_vec())),
        token_lifetime: std::time::Duration::from_secs(2),
    };
    let source = MemSource::default();
    let mut run = start(settings, source.clone());
    // Fixes keep coming across two renewals.
    let total = 50u64;
    for seq in 1..=total {
        source.push([support::source::fix(seq)]);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    run.wait_acked(total as usize).await;
    run.wait_status("connected", |m| m.connected).await;
    let connects = tap.connects();
    assert!(connects.len() >= 2, "{} connections", connects.len());
    let tokens: BTreeSet<Vec<u8>> = connects.iter().filter_map(|c| c.password.clone()).collect();
    assert_eq!(
        tokens.len(),
        connects.len(),
        "each connection its own token"
    );
    let offline = tap
        .publishes()
        .iter()
        .filter(|(t, _, _, p)| t.starts_with("$iothub/twin/") && json(p)["state"] == "offline")
        .count();
    assert_eq!(offline, 0, "a renewal is not going offline");
    assert_eq!(run.status().last_error, None, "a renewal is not a failure");
    let source = run.stop().await;
    assert_eq!(source.acked(), (1..=total).collect::<BTreeSet<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thingsboard_rpc_runs_a_command_and_answers_on_the_rpc_response_topic() {
    let run = Run::new().await;
    let token_file = run.file("token", "TB_RPC_TOKEN");
    let mqtt = with_commands(&format!(
        "url = \"{}\"\nprofile = \"thingsboard\"\npassword_file = \"{token_file}\"",
        run.tap.url()
    ));
    let agent = run.start(&mqtt);
    let mut back_end =
        Subscriber::start(&run._broker.back_end(), "v1/devices/me/rpc/response/+").await;
    let answer = call(
        &mut back_end,
        "v1/devices/me/rpc/request/17",
        r#"{"method":"ping","params":{}}"#,
    )
    .await;
    assert_eq!(answer.topic, "v1/devices/me/rpc/response/17");
    let v = json(&answer.payload);
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["result"]["version"].is_string(), "{v}");
    let unknown = call(
        &mut back_end,
        "v1/devices/me/rpc/request/18",
        r#"{"method":"selfdestruct","params":{}}"#,
    )
    .await;
    assert_eq!(unknown.topic, "v1/devices/me/rpc/response/18");
    assert_eq!(json(&unknown.payload)["error"]["code"], "CMD_UNKNOWN");
    let subscribed: Vec<Vec<(String, u8)>> = run
        .tap
        .seen()
        .into_iter()
        .filter_map(|s| match s {
            support::mqtt_tap::Seen::Subscribe(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(
        subscribed[0],
        vec![("v1/devices/me/rpc/request/+".to_string(), 1)]
    );
    run.stop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cumulocity_operations_run_as_commands_and_are_answered_executing_then_done() {
    let run = Run::new().await;
    let password = run.file("password", "pw");
    let mqtt = with_commands(&format!(
        "url = \"{}\"\nprofile = \"cumulocity\"\nusername = \"t1/u\"\npassword_file = \"{password}\"",
        run.tap.url()
    ));
    let agent = run.start(&mqtt);
    let mut back_end = Subscriber::start(&run._broker.back_end(), "s/us").await;
    let answer = loop {
        let got = call(&mut back_end, "s/ds", &format!("511,{},ping", run.device)).await;
        let text = String::from_utf8(got.payload).unwrap();
        if text.starts_with("501,c8y_Command") {
            break text;
        }
    };
    assert_eq!(
        support::platform::c8y_answer(answer.as_bytes()),
        Ok(("c8y_Command".to_owned(), true))
    );
    let mut lines = answer.lines();
    assert_eq!(lines.next(), Some("501,c8y_Command"));
    let done = lines.next().unwrap();
    assert!(done.starts_with("503,c8y_Command,\""), "{done}");
    assert!(done.contains("version"), "{done}");
    let announced = run
        .tap
        .publishes()
        .into_iter()
        .filter(|(t, _, _, p)| t == "s/us" && p == b"114,c8y_Command,c8y_Restart")
        .count();
    assert_eq!(announced, 1, "the supported operations, once a connection");
    // A restart is a reconnect: a second CONNECT.
    let restarted = loop {
        let got = call(&mut back_end, "s/ds", &format!("510,{}", run.device)).await;
        let text = String::from_utf8(got.payload).unwrap();
        if text.starts_with("501,c8y_Restart") {
            break text;
        }
    };
    assert_eq!(
        support::platform::c8y_answer(restarted.as_bytes()),
        Ok(("c8y_Restart".to_owned(), true))
    );
    support::wait_for("a second connection", || run.tap.connects().len() >= 2).await;
    run.stop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto (rumqttd refuses $iothub filters): bash .ci/sdk.sh"]
async fn azure_direct_methods_run_as_commands_and_answer_with_status_and_rid() {
    let run = Run::on_mosquitto().await;
    let pki = TestPki::create(run.dir.path());
    let front = TlsFront::start(run.tap.addr, &pki, ClientAuth::None).await;
    let key_file = run.file("device.key", "c2VjcmV0LWtleS1mb3ItdGVzdHM=");
    let mqtt = with_commands(&format!(
        "url = \"{}\"\nprofile = \"azure\"\nsas_key_file = \"{key_file}\"\nca_file = \"{}\"",
        front.url("localhost"),
        pki.ca.display()
    ));
    let agent = run.start(&mqtt);
    let mut back_end = Subscriber::start(&run._broker.back_end(), "$iothub/methods/res/#").await;
    let answer = call(&mut back_end, "$iothub/methods/POST/ping/?$rid=41", "null").await;
    assert_eq!(answer.topic, "$iothub/methods/res/200/?$rid=41");
    assert_eq!(json(&answer.payload)["ok"], true);
    let refused = call(&mut back_end, "$iothub/methods/POST/nope/?$rid=42", "{}").await;
    assert_eq!(refused.topic, "$iothub/methods/res/400/?$rid=42");
    let subscribed: BTreeSet<(String, u8)> = run
        .tap
        .seen()
        .into_iter()
        .filter_map(|s| match s {
            support::mqtt_tap::Seen::Subscribe(f) => Some(f),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        subscribed,
        BTreeSet::from([
            ("$iothub/twin/res/#".to_string(), 1),
            ("$iothub/methods/POST/#".to_string(), 1)
        ])
    );
    run.stop(agent);
}
