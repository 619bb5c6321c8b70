//! Remote commands through the real binary: `gps-agent run` with `[commands] enabled`, an
//! in-process broker (rumqttd), and the back end as a plain MQTT client that publishes
//! requests on `fleet/{id}/cmd` and reads answers on `fleet/{id}/cmd/result`.

mod support;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::agent::{expected_fixes, quick_retry_mqtt, Agent};
use support::backend::{drive_now, now_ms, request, rfc3339, Backend};
use support::broker::{free_port, Subscriber, TestBroker};
use support::signing::SigningKey;

/// The value of the metric line that starts with `series` (labels included).
fn metric(agent: &Agent, series: &str) -> f64 {
    agent
        .raw("/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(series).map(str::trim))
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

fn commands_total(agent: &Agent, result: &str) -> f64 {
    metric(
        agent,
        &format!("gps_agent_commands_total{{result=\"{result}\"}} "),
    )
}

/// The `[buffer]` section (fast commits) with `extra` sections after it.
fn buffer_and(dir: &Path, extra: &str) -> String {
    format!(
        "[buffer]\npath = \"{}\"\ncommit_interval_s = 0.2\n\n{extra}",
        dir.join("buffer.db").display()
    )
}

fn gnss(log: &Path, pace: &str) -> String {
    format!(
        "[gnss]\nsource = \"file\"\npath = \"{}\"\npace = \"{pace}\"",
        log.display()
    )
}

async fn collect_fixes(sub: &mut Subscriber, n: u64, within: Duration) -> BTreeSet<u64> {
    sub.fix_seqs(n, within).await
}

/// One test's world: a drive of `epochs` replayed at `pace`, a broker, a subscriber to the
/// fixes, the back end, and the agent with `sections` (`[commands]` ...) after `[buffer]`.
struct World {
    /// Bound by each test (`dir: _dir`): the agent's files live as long as the test.
    dir: tempfile::TempDir,
    log: PathBuf,
    broker: TestBroker,
    device: String,
    fixes: Subscriber,
    backend: Backend,
    agent: Agent,
}

impl World {
    async fn start(epochs: u32, pace: &str, sections: impl Fn(&Path) -> String) -> World {
        Self::start_with_mqtt(epochs, pace, sections, "").await
    }

    /// As [`World::start`], with `mqtt` added to the `[mqtt]` section.
    async fn start_with_mqtt(
        epochs: u32,
        pace: &str,
        sections: impl Fn(&Path) -> String,
        mqtt: &str,
    ) -> World {
        let dir = tempfile::tempdir().unwrap();
        let log = drive_now(dir.path(), epochs);
        let broker = TestBroker::start();
        let device = support::unique("truck");
        let fixes = Subscriber::start(&broker, &format!("fleet/{device}/fixes")).await;
        let backend = Backend::start(&broker, &device).await;
        let agent = Agent::start_with_sections(
            dir.path(),
            &device,
            &gnss(&log, pace),
            &buffer_and(dir.path(), &sections(dir.path())),
            &format!("{}{mqtt}", quick_retry_mqtt(&broker.url())),
            &[],
        );
        World {
            dir,
            log,
            broker,
            device,
            fixes,
            backend,
            agent,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_command_is_answered_once_bad_requests_get_their_codes_and_no_fix_is_lost() {
    let World {
        log,
        mut fixes,
        mut backend,
        agent,
        dir: _dir,
        ..
    } = World::start(120, "fast", |_| "[commands]\nenabled = true\n".into()).await;
    let expected = expected_fixes(&log);

    // ping, and the same id again: the first answer, byte for byte, not run twice.
    let ping = request("p-1", "ping", json!({}));
    let first = backend.ask_until_subscribed("p-1", ping.clone()).await;
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["result"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(first["result"]["uptime_s"].is_number(), "{first}");
    assert!(first["result"]["status"].is_string(), "{first}");
    let again = backend.ask("p-1", ping).await;
    assert_eq!(again, first);
    assert_eq!(commands_total(&agent, "ok"), 1.0);
    assert!(commands_total(&agent, "repeat") >= 1.0);

    // status: the /health snapshot.
    let status = backend
        .ask("s-1", request("s-1", "status", json!({})))
        .await;
    assert_eq!(status["ok"], true, "{status}");
    assert!(
        status["result"]["components"]["mqtt"]["connected"] == true,
        "{status}"
    );

    // config.get: the file and its SHA-256.
    let got = backend
        .ask("g-1", request("g-1", "config.get", json!({})))
        .await;
    let text = std::fs::read_to_string(&agent.config).unwrap();
    assert_eq!(got["result"]["toml"], text.as_str());
    assert_eq!(
        got["result"]["sha256"],
        gps_agent::commands::remote_config::sha256_hex(text.as_bytes()).as_str()
    );
    // The file as in force: an edit on disk counts once a SIGHUP applied it.
    let edited = format!("{text}# edited on the vehicle\n");
    std::fs::write(&agent.config, &edited).unwrap();
    let got = backend
        .ask("g-2", request("g-2", "config.get", json!({})))
        .await;
    assert_eq!(got["result"]["toml"], text.as_str(), "not reloaded yet");
    agent.signal("-HUP");
    let mut n = 2;
    let got = support::wait::until_async(
        "config.get after SIGHUP",
        Duration::from_secs(20),
        async || {
            n += 1;
            let id = format!("g-{n}");
            let got = backend
                .ask(&id, request(&id, "config.get", json!({})))
                .await;
            (got["result"]["toml"] != text.as_str()).then_some(got)
        },
    )
    .await;
    assert_eq!(got["result"]["toml"], edited.as_str(), "after SIGHUP");
    std::fs::write(&agent.config, &text).unwrap();
    agent.signal("-HUP");

    // A file that does not pass check-config: each problem with its key and line.
    let bad = text.replace("[mqtt]\n", "[mqtt]\npayload = \"xml\"\n");
    let refused = backend
        .ask("c-1", request("c-1", "config.set", json!({"toml": bad})))
        .await;
    assert_eq!(refused["error"]["code"], "CMD_INVALID_CONFIG", "{refused}");
    let problem = &refused["error"]["problems"][0];
    assert_eq!(problem["key"], "mqtt.payload", "{refused}");
    let line = bad.lines().position(|l| l.starts_with("payload")).unwrap() + 1;
    assert_eq!(problem["line"], line as u64, "{refused}");
    // [commands] cannot be changed remotely.
    let off = text.replace("enabled = true", "enabled = false");
    let forbidden = backend
        .ask("c-2", request("c-2", "config.set", json!({"toml": off})))
        .await;
    assert_eq!(forbidden["error"]["code"], "CMD_FORBIDDEN", "{forbidden}");
    assert_eq!(
        std::fs::read_to_string(&agent.config).unwrap(),
        text,
        "untouched"
    );

    // Expired, unknown, malformed, oversized: answered with their codes.
    let expired = json!({"id": "e-1", "cmd": "ping", "expires": rfc3339(now_ms() - 1_000)});
    let a = backend.ask("e-1", expired.to_string()).await;
    assert_eq!(a["error"]["code"], "CMD_EXPIRED", "{a}");
    let a = backend
        .ask("u-1", request("u-1", "reboot", json!({})))
        .await;
    assert_eq!(a["error"]["code"], "CMD_UNKNOWN", "{a}");
    let a = backend
        .ask("m-1", json!({"id": "m-1", "cmd": "ping"}).to_string())
        .await;
    assert_eq!(a["error"]["code"], "CMD_MALFORMED", "{a}");
    let big = json!({"id": "big-1", "cmd": "ping", "pad": "x".repeat(70_000),
        "expires": rfc3339(now_ms() + 600_000)});
    let a = backend.ask("big-1", big.to_string()).await;
    assert_eq!(a["error"]["code"], "CMD_TOO_LARGE", "{a}");
    // Without a readable id there is no one to answer: counted only.
    backend.publish(&b"not json at all"[..]).await;
    let counted = backend
        .until(Duration::from_secs(10), |_| {
            commands_total(&agent, "CMD_MALFORMED") >= 2.0
        })
        .await
        || commands_total(&agent, "CMD_MALFORMED") >= 2.0;
    assert!(counted, "the unreadable request is counted");
    assert_eq!(commands_total(&agent, "CMD_EXPIRED"), 1.0);
    assert_eq!(commands_total(&agent, "CMD_UNKNOWN"), 1.0);
    assert_eq!(commands_total(&agent, "CMD_TOO_LARGE"), 1.0);

    // reconnect: answered, then a new connection.
    let (_, h) = agent.get("/health");
    let reconnects = h["components"]["mqtt"]["reconnects"].as_u64().unwrap();
    let a = backend
        .ask("r-1", request("r-1", "reconnect", json!({})))
        .await;
    assert_eq!(a["ok"], true, "{a}");
    let mut reconnected = false;
    for _ in 0..100 {
        let (_, h) = agent.get("/health");
        if h["components"]["mqtt"]["reconnects"].as_u64().unwrap() > reconnects
            && h["components"]["mqtt"]["connected"] == true
        {
            reconnected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reconnected, "the uplink connected again");

    // Through all of it every fix arrived.
    let seqs = collect_fixes(&mut fixes, expected, Duration::from_secs(60)).await;
    assert_eq!(seqs, (1..=expected).collect::<BTreeSet<u64>>());
    let (code, _) = agent.terminate();
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_public_key_only_a_valid_signature_over_the_body_runs_and_a_replay_after_expiry_is_refused(
) {
    let ours = SigningKey::generate();
    let theirs = SigningKey::generate();
    let World {
        mut backend,
        agent,
        dir: _dir,
        ..
    } = World::start(30, "fast", |dir| {
        let key = ours.write_public(dir);
        format!(
            "[commands]\nenabled = true\npublic_key_file = \"{}\"\n",
            key.display()
        )
    })
    .await;

    let body = request("k-1", "ping", json!({}));
    // Signed with another key: refused, until the agent is there to refuse it.
    let a = backend
        .ask_until_subscribed("k-1", theirs.sign(&body))
        .await;
    assert_eq!(a["error"]["code"], "CMD_UNAUTHORIZED", "{a}");
    // Unsigned: refused.
    let a = backend.ask("k-1", body.clone()).await;
    assert_eq!(a["error"]["code"], "CMD_UNAUTHORIZED", "{a}");
    // A changed body under our signature: refused.
    let mut changed: Value = serde_json::from_str(&ours.sign(&body)).unwrap();
    changed["body"] = Value::from(body.replace("ping", "status"));
    let a = backend.ask("k-1", changed.to_string()).await;
    assert_eq!(a["error"]["code"], "CMD_UNAUTHORIZED", "{a}");
    // Ours, over the exact body: runs.
    let a = backend.ask("k-1", ours.sign(&body)).await;
    assert_eq!(a["ok"], true, "{a}");
    assert_eq!(commands_total(&agent, "CMD_UNAUTHORIZED"), 3.0);

    // A signed request replayed after it expired: refused, whatever its signature.
    let expires = now_ms() + 2_000;
    let short = json!({"id": "k-2", "cmd": "ping", "expires": rfc3339(expires)}).to_string();
    let signed = ours.sign(&short);
    let a = backend.ask("k-2", signed.clone()).await;
    assert_eq!(a["ok"], true, "{a}");
    while now_ms() <= expires + 500 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = backend.ask("k-2", signed).await;
    assert_eq!(a["error"]["code"], "CMD_EXPIRED", "{a}");
    let (code, _) = agent.terminate();
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_pointing_at_a_dead_broker_is_rolled_back_and_every_fix_still_arrives() {
    // In real time: fixes keep coming while the agent is on the dead broker.
    let World {
        log,
        broker,
        mut fixes,
        mut backend,
        agent,
        dir: _dir,
        ..
    } = World::start(30, "realtime", |_| {
        "[commands]\nenabled = true\nconfirm_s = 4\n".into()
    })
    .await;
    let expected = expected_fixes(&log);
    let ping = request("p-1", "ping", json!({}));
    backend.ask_until_subscribed("p-1", ping).await;

    let text = std::fs::read_to_string(&agent.config).unwrap();
    let sha = gps_agent::commands::remote_config::sha256_hex(text.as_bytes());
    let dead = format!("mqtt://{}", free_port());
    let new = text.replace(&broker.url(), &dead);
    assert_ne!(new, text);
    let a = backend
        .ask(
            "set-1",
            request(
                "set-1",
                "config.set",
                json!({"toml": new, "if_sha256": sha}),
            ),
        )
        .await;
    assert_eq!(a["ok"], true, "{a}");
    assert_eq!(
        a["result"]["sha256"],
        gps_agent::commands::remote_config::sha256_hex(new.as_bytes()).as_str()
    );
    // The second answer: rolled back.
    let rolled = backend
        .answer_after("set-1", 1, Duration::from_secs(60))
        .await
        .expect("the rollback's answer");
    assert_eq!(rolled["rolled_back"], true, "{rolled}");
    assert_eq!(rolled["error"]["code"], "CMD_ROLLED_BACK", "{rolled}");
    assert_eq!(std::fs::read_to_string(&agent.config).unwrap(), text);
    let mut rejected = agent.config.as_os_str().to_owned();
    rejected.push(".rejected");
    assert_eq!(
        std::fs::read_to_string(PathBuf::from(rejected)).unwrap(),
        new
    );

    // Every fix of the drive arrives, those made while on the dead broker too.
    let seqs = collect_fixes(&mut fixes, expected, Duration::from_secs(90)).await;
    assert_eq!(seqs, (1..=expected).collect::<BTreeSet<u64>>());
    let (code, _) = agent.terminate();
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_republishes_every_accepted_fix_of_the_window_once_at_its_rate() {
    let World {
        log,
        device,
        mut fixes,
        mut backend,
        agent,
        dir: _dir,
        ..
    } = World::start(90, "fast", |_| {
        "[commands]\nenabled = true\n\n[history]\nbackfill_rate = 50\n".into()
    })
    .await;
    let (parsed, window) = parsed_window(&log);
    let n = parsed.len() as u64;
    let seqs = collect_fixes(&mut fixes, n, Duration::from_secs(60)).await;
    assert_eq!(seqs.len() as u64, n);

    let req = request("b-1", "backfill", window);
    let asked = std::time::Instant::now();
    let a = backend.ask_until_subscribed("b-1", req).await;
    // At most backfill_rate fixes a second: the window took at least n / 50 s.
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(n * 1000 / 50),
        "{n} fixes in {took:?}"
    );
    assert_eq!(a["ok"], true, "{a}");
    assert_eq!(a["result"]["fixes"], n, "{a}");
    let back = backend
        .backfill_fixes("b-1", parsed.len(), Duration::from_secs(30))
        .await;
    assert!(backend
        .backfill
        .iter()
        .all(|m| m["device"] == device.as_str()));
    let key = |f: &Value| {
        (
            f["time"].as_str().unwrap().to_owned(),
            f["lat"].as_f64().unwrap().to_bits(),
            f["lon"].as_f64().unwrap().to_bits(),
        )
    };
    assert_eq!(
        back.iter().map(key).collect::<Vec<_>>(),
        parsed.iter().map(key).collect::<Vec<_>>()
    );
    let (code, _) = agent.terminate();
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_cbor_payloads_a_backfill_comes_in_the_compact_form_every_fix_of_the_window_once() {
    let World {
        log,
        mut fixes,
        mut backend,
        agent,
        dir: _dir,
        ..
    } = World::start_with_mqtt(
        60,
        "fast",
        |_| "[commands]\nenabled = true\n\n[history]\nbackfill_rate = 1000\n".into(),
        "payload = \"cbor\"\n",
    )
    .await;
    let (parsed, window) = parsed_window(&log);
    let n = parsed.len() as u64;
    let seqs = collect_fixes(&mut fixes, n, Duration::from_secs(60)).await;
    assert_eq!(seqs.len() as u64, n);

    let a = backend
        .ask_until_subscribed("b-c", request("b-c", "backfill", window))
        .await;
    assert_eq!(a["ok"], true, "{a}");
    assert_eq!(a["result"]["fixes"], n, "{a}");
    let back = backend
        .backfill_fixes("b-c", parsed.len(), Duration::from_secs(30))
        .await;
    assert!(
        backend.backfill.iter().all(|m| m["v"] == 2),
        "every message compact"
    );
    // The compact form's resolution: 1 ms, 1e-7 degree.
    let key = |f: &Value| {
        (
            f["time"].as_str().unwrap().to_owned(),
            (f["lat"].as_f64().unwrap() * 1e7).round() as i64,
            (f["lon"].as_f64().unwrap() * 1e7).round() as i64,
        )
    };
    assert_eq!(
        back.iter().map(key).collect::<Vec<_>>(),
        parsed.iter().map(key).collect::<Vec<_>>()
    );
    let (code, _) = agent.terminate();
    assert_eq!(code, 0);
}

/// `parse` of the drive (every accepted fix, as JSON) and the backfill window of all of it.
fn parsed_window(log: &Path) -> (Vec<Value>, Value) {
    let parsed: Vec<Value> = support::agent::parse(log)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let from = parsed.first().unwrap()["time"].as_str().unwrap().to_owned();
    let to = parsed.last().unwrap()["time"].as_str().unwrap().to_owned();
    (parsed, json!({"from": from, "to": to}))
}

/// The receiver times of every fix received on `sub` until they include all of `want`
/// (or `within` passed).
async fn fix_times(sub: &mut Subscriber, want: &BTreeSet<i64>, within: Duration) -> BTreeSet<i64> {
    let mut got = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + within;
    while !want.is_subset(&got) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(msg) = sub.next(left).await else {
            break;
        };
        got.extend(msg.fixes().iter().map(|f| f.fix.time_ms));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_owed_when_the_agent_was_killed_is_made_at_the_next_start_and_answered_ids_survive(
) {
    let World {
        log,
        broker,
        mut fixes,
        mut backend,
        agent,
        dir: _dir,
        ..
    } = World::start(40, "realtime", |_| {
        "[commands]\nenabled = true\nconfirm_s = 3\n".into()
    })
    .await;
    let ping = request("p-1", "ping", json!({}));
    let first = backend.ask_until_subscribed("p-1", ping.clone()).await;
    let text = std::fs::read_to_string(&agent.config).unwrap();
    let new = text.replace(&broker.url(), &format!("mqtt://{}", free_port()));
    let a = backend
        .ask(
            "set-1",
            request("set-1", "config.set", json!({"toml": new})),
        )
        .await;
    assert_eq!(a["ok"], true, "{a}");
    // Killed inside the window, on the dead broker's file; back only after the window.
    let killed = agent.kill_keeping();
    let config = killed.config.clone();
    assert_eq!(std::fs::read_to_string(&config).unwrap(), new);
    let confirm_by =
        chrono::DateTime::parse_from_rfc3339(a["result"]["confirm_by"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
    while now_ms() <= confirm_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let agent = killed.restart();

    let rolled = backend
        .answer_after("set-1", 1, Duration::from_secs(60))
        .await
        .expect("the rollback's answer after the restart");
    assert_eq!(rolled["rolled_back"], true, "{rolled}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
    // The id answered before the kill gets that answer again: it did not run twice.
    assert_eq!(backend.ask("p-1", ping).await, first);
    // Every accepted fix of the drive arrives (the replay after the restart adds
    // duplicates, never a loss).
    let want = support::agent::parse_times(&log);
    let got = fix_times(&mut fixes, &want, Duration::from_secs(90)).await;
    assert!(
        want.is_subset(&got),
        "missing {:?}",
        want.difference(&got).collect::<Vec<_>>()
    );
    let (code, _) = agent.terminate();
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_cut_by_a_kill_is_answered_interrupted_once_at_the_next_start() {
    let World {
        log,
        mut fixes,
        mut backend,
        agent,
        dir: _dir,
        ..
    } = World::start(40, "fast", |_| {
        "[commands]\nenabled = true\n\n[history]\nbackfill_rate = 2\n".into()
    })
    .await;
    let n = expected_fixes(&log);
    assert_eq!(
        collect_fixes(&mut fixes, n, Duration::from_secs(60))
            .await
            .len() as u64,
        n
    );
    let window = json!({"from": rfc3339(now_ms() - 3_600_000), "to": rfc3339(now_ms())});
    backend.publish(request("b-1", "backfill", window)).await;
    // Running: its first message is out (2 fixes a second: the rest would take a while).
    assert!(
        backend
            .until(Duration::from_secs(20), |b| !b.backfill.is_empty())
            .await
    );
    let agent = agent.kill_keeping().restart();
    let a = backend
        .answer_after("b-1", 0, Duration::from_secs(30))
        .await
        .expect("the interrupted backfill's answer");
    assert_eq!(a["error"]["code"], "CMD_INTERRUPTED", "{a}");
    // Asked again under the same id: that answer, not a second backfill.
    let again = backend
        .ask(
            "b-1",
            request(
                "b-1",
                "backfill",
                json!({"from": rfc3339(0), "to": rfc3339(1)}),
            ),
        )
        .await;
    assert_eq!(again, a);
    let (code, _) = agent.terminate();
    assert_eq!(code, 0);
}
