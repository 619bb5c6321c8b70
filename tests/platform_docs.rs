//! The platforms' own documented examples as golden payloads: each example below comes from
//! the documentation page cited above it, and each platform has one check of its message
//! shape (`tests/support/platform.rs`). The documented examples must pass the check (so the check says what the platform
//! says), a form the platform documents for something else must not (so the check can
//! fail), and what the agent's profile makes must pass it, field for field. Library level,
//! no broker: `tests/profile_conformance.rs` checks the same contracts over MQTT through the
//! real binary, and `tests/profile_sdk.rs` beside the platforms' own SDKs.

mod support;

use gps_agent::config::PayloadFormat;
use gps_agent::fix::{Fix, FixMode};
use gps_agent::uplink::credentials::Password;
use gps_agent::uplink::payload::FixBatch;
use gps_agent::uplink::profile::{for_settings, Profile, ProfileSettings, Publish};
use serde_json::{json, Value};
use support::platform::{azure_events, azure_rid, c8y_400, c8y_401, c8y_answer, tb_telemetry};

const DEVICE: &str = "truck-042";
const STREAM: &str = "0123456789abcdef0123456789abcdef";

/// Three fixes one second apart, one without altitude and speed.
fn fixes() -> Vec<(u64, Fix)> {
    (0..3)
        .map(|i| {
            (
                i + 1,
                Fix {
                    time_ms: 1_765_000_000_000 + i as i64 * 1000,
                    lat: 48.137_154 + i as f64 * 1e-4,
                    lon: 11.576_124 - i as f64 * 1e-4,
                    alt_m: (i != 1).then_some(519.5),
                    speed_mps: (i != 1).then_some(13.9),
                    course_deg: Some(87.5),
                    hdop: Some(0.9),
                    sats: Some(11),
                    mode: FixMode::ThreeD,
                    event: None,
                },
            )
        })
        .collect()
}

fn profile(settings: ProfileSettings, format: PayloadFormat) -> Box<dyn Profile> {
    let credentials = Some(("t12345/device".to_owned(), Password::new("secret")));
    for_settings(&settings, DEVICE, "fleet", DEVICE, &credentials, format)
}

/// The profile's fixes messages for [`fixes`], all in one.
fn encoded(p: &dyn Profile) -> Vec<u8> {
    let fixes = fixes();
    let e = p.encode(
        &FixBatch {
            device: DEVICE,
            stream: STREAM,
            fixes: &fixes,
        },
        64 * 1024,
    );
    assert!(e.dead_letters.is_empty());
    assert_eq!(e.messages.len(), 1);
    e.messages[0].payload.clone()
}

/// A command the platform delivered, answered as the commands stage answers it: where the
/// answer goes and what it holds.
fn round_trip(p: &dyn Profile, topic: &str, payload: &[u8], ok: bool) -> Publish {
    let requests = p.requests(topic, payload, 1, 1_765_000_000_000);
    assert_eq!(requests.len(), 1, "{topic}");
    let request: Value = serde_json::from_slice(&requests[0]).unwrap();
    let id = request["id"].as_str().unwrap();
    let answer = if ok {
        json!({"id": id, "ok": true, "result": {"version": "0.1.0"}})
    } else {
        json!({"id": id, "ok": false, "error": {"code": "CMD_UNKNOWN", "message": "unknown command"}})
    };
    p.answer(answer.to_string().as_bytes()).unwrap()
}

// ---- ThingsBoard ------------------------------------------------------------------------

/// <https://thingsboard.io/docs/reference/mqtt-api/telemetry/>, "Array of objects with
/// client-side timestamp" (topic `v1/devices/me/telemetry`).
const TB_TELEMETRY: &str = r#"[{"ts": 1451649600000, "values": {"temperature": 22.5, "humidity": 61}}, {"ts": 1451649601000, "values": {"temperature": 22.7, "humidity": 60}}]"#;
/// The same page, "Simple key-value": the platform stamps it with the time it arrived,
/// which a backlog must never be.
const TB_TELEMETRY_SERVER_TIME: &str = r#"{"temperature": 22.5, "humidity": 61}"#;
/// <https://thingsboard.io/docs/reference/mqtt-api/>, "Server-side RPC": a call arrives on
/// `v1/devices/me/rpc/request/$request_id` as `{"method": ..., "params": ...}` and is
/// answered on `v1/devices/me/rpc/response/$request_id`.
const TB_RPC_REQUEST_TOPIC: &str = "v1/devices/me/rpc/request/42";
const TB_RPC_REQUEST: &str = r#"{"method": "ping", "params": {}}"#;
const TB_RPC_RESPONSE_TOPIC: &str = "v1/devices/me/rpc/response/42";

#[test]
fn thingsboard_telemetry_has_the_documented_shape_with_each_fix_at_its_own_time() {
    assert_eq!(
        tb_telemetry(TB_TELEMETRY.as_bytes())
            .unwrap()
            .iter()
            .map(|(ts, _)| *ts)
            .collect::<Vec<_>>(),
        [1451649600000, 1451649601000]
    );
    assert!(tb_telemetry(TB_TELEMETRY_SERVER_TIME.as_bytes()).is_err());

    let tb = profile(
        ProfileSettings::Thingsboard {
            token: Password::new("A1_TEST_TOKEN"),
        },
        PayloadFormat::Json,
    );
    assert_eq!(tb.fixes_topic(), "v1/devices/me/telemetry");
    let points = tb_telemetry(&encoded(tb.as_ref())).unwrap();
    let fixes = fixes();
    assert_eq!(points.len(), fixes.len());
    for ((ts, values), (seq, fix)) in points.iter().zip(&fixes) {
        assert_eq!(*ts, fix.time_ms);
        assert_eq!(values["latitude"].as_f64(), Some(fix.lat));
        assert_eq!(values["longitude"].as_f64(), Some(fix.lon));
        assert_eq!(values["seq"].as_u64(), Some(*seq));
        assert_eq!(values["stream"].as_str(), Some(STREAM));
        assert_eq!(values.contains_key("altitude"), fix.alt_m.is_some());
    }
}

#[test]
fn a_thingsboard_rpc_as_documented_is_answered_on_the_response_topic_of_its_id() {
    let tb = profile(
        ProfileSettings::Thingsboard {
            token: Password::new("A1_TEST_TOKEN"),
        },
        PayloadFormat::Json,
    );
    assert!(tb
        .subscriptions(true)
        .contains(&"v1/devices/me/rpc/request/+".to_owned()));
    let answer = round_trip(
        tb.as_ref(),
        TB_RPC_REQUEST_TOPIC,
        TB_RPC_REQUEST.as_bytes(),
        true,
    );
    assert_eq!(answer.topic, TB_RPC_RESPONSE_TOPIC);
    assert!(!answer.retain);
    assert!(serde_json::from_slice::<Value>(&answer.payload).is_ok());
}

// ---- Cumulocity -------------------------------------------------------------------------

/// <https://cumulocity.com/docs/smartrest/mqtt-static-templates/>, "Create location update
/// event (401)": latitude and longitude mandatory, then altitude, accuracy, time.
const C8Y_401: &str = "401,51.151977,6.95173,67";
/// The same page, "Create basic event (400)": type and text mandatory, then time.
const C8Y_400: &str = "400,c8y_MyEvent,\"Something was triggered\"";
/// The same page, "Restart (510)" and "Command (511)" on `s/ds`, each with the device's
/// serial first; answered with "Set operation to EXECUTING (501)", "... SUCCESSFUL (503)"
/// (with optional parameters) or "... FAILED (502)" (with the reason), each naming the
/// operation's fragment.
const C8Y_511: &str = "511,{serial},execute this";
const C8Y_510: &str = "510,{serial}";

#[test]
fn cumulocity_lines_have_the_documented_static_template_fields_each_fix_at_its_own_time() {
    assert_eq!(c8y_401(C8Y_401), Ok(None));
    assert!(c8y_401(C8Y_400).is_err());
    assert!(c8y_400(C8Y_400).is_ok());
    assert!(c8y_400("400,c8y_MyEvent").is_err());

    let c8y = profile(ProfileSettings::Cumulocity, PayloadFormat::Json);
    assert_eq!(c8y.fixes_topic(), "s/us");
    let payload = String::from_utf8(encoded(c8y.as_ref())).unwrap();
    let times: Vec<Option<i64>> = payload.lines().map(|l| c8y_401(l).unwrap()).collect();
    assert_eq!(
        times,
        fixes()
            .iter()
            .map(|(_, f)| Some(f.time_ms))
            .collect::<Vec<_>>()
    );
    for state in [
        gps_agent::uplink::payload::LinkState::Online,
        gps_agent::uplink::payload::LinkState::Offline,
    ] {
        let s = c8y.status(state);
        let text = String::from_utf8(s.payload).unwrap();
        c8y_400(text.lines().last().unwrap()).unwrap();
        assert!(!s.retain, "Cumulocity keeps no retained messages");
    }
}

#[test]
fn cumulocity_operations_as_documented_are_answered_executing_then_successful_or_failed() {
    assert_eq!(
        c8y_answer(b"501,c8y_Restart\n503,c8y_Restart"),
        Ok(("c8y_Restart".into(), true))
    );
    assert_eq!(
        c8y_answer(b"501,c8y_Restart\n502,c8y_Restart,\"Could not restart\""),
        Ok(("c8y_Restart".into(), false))
    );
    assert!(c8y_answer(b"503,c8y_Restart").is_err());

    let c8y = profile(ProfileSettings::Cumulocity, PayloadFormat::Json);
    assert!(c8y.subscriptions(true).contains(&"s/ds".to_owned()));
    let command = C8Y_511
        .replace("{serial}", DEVICE)
        .replace("execute this", "ping");
    let ok = round_trip(c8y.as_ref(), "s/ds", command.as_bytes(), true);
    assert_eq!(ok.topic, "s/us");
    assert_eq!(c8y_answer(&ok.payload), Ok(("c8y_Command".into(), true)));
    let failed = round_trip(c8y.as_ref(), "s/ds", command.as_bytes(), false);
    assert_eq!(
        c8y_answer(&failed.payload),
        Ok(("c8y_Command".into(), false))
    );
    let restart = C8Y_510.replace("{serial}", DEVICE);
    let restarted = round_trip(c8y.as_ref(), "s/ds", restart.as_bytes(), true);
    assert_eq!(
        c8y_answer(&restarted.payload),
        Ok(("c8y_Restart".into(), true))
    );
}

// ---- Azure IoT Hub ----------------------------------------------------------------------

/// <https://learn.microsoft.com/azure/iot-hub/iot-hub-mqtt-support>, "Sending
/// device-to-cloud messages": `devices/{device-id}/messages/events/` followed by the
/// message's properties as URL-encoded `key=value` pairs joined by `&`, the system
/// properties content type `$.ct` and content encoding `$.ce` among them.
const AZURE_EVENTS: &str =
    "devices/myDevice/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8";
/// The same page, "Respond to a direct method": a call arrives on
/// `$iothub/methods/POST/{method name}/?$rid={request id}`, the answer goes to
/// `$iothub/methods/res/{status}/?$rid={request id}`.
const AZURE_METHOD: &str = "$iothub/methods/POST/ping/?$rid=1";
/// The same page, "Update device twin's reported properties": a JSON object published on
/// `$iothub/twin/PATCH/properties/reported/?$rid={request id}`.
const AZURE_REPORTED: &str = "$iothub/twin/PATCH/properties/reported/?$rid=7";

#[test]
fn azure_topics_have_the_documented_forms_with_content_type_and_encoding() {
    let (device, props) = azure_events(AZURE_EVENTS).unwrap();
    assert_eq!(device, "myDevice");
    assert_eq!(
        props,
        [
            ("$.ct".to_owned(), "application/json".to_owned()),
            ("$.ce".to_owned(), "utf-8".to_owned())
        ]
    );
    assert!(azure_events("devices/myDevice/messages/devicebound/").is_err());

    for (format, content_type) in [
        (PayloadFormat::Json, "application/json"),
        (PayloadFormat::Cbor, "application/cbor"),
    ] {
        let azure = profile(
            ProfileSettings::Azure {
                hub: "hub.azure-devices.net".into(),
                key: None,
                token_lifetime: std::time::Duration::from_secs(3600),
            },
            format,
        );
        let (device, props) = azure_events(azure.fixes_topic()).unwrap();
        assert_eq!(device, DEVICE);
        assert!(
            props.contains(&("$.ct".to_owned(), content_type.to_owned())),
            "{props:?}"
        );
        let payload = encoded(azure.as_ref());
        match format {
            PayloadFormat::Json => {
                let v: Value = serde_json::from_slice(&payload).unwrap();
                assert_eq!(v["fixes"].as_array().unwrap().len(), 3);
            }
            PayloadFormat::Cbor => {
                let m = gps_agent::uplink::cbor::decode(&payload).unwrap();
                assert_eq!(m.fixes.len(), 3);
            }
        }
        // The agent's state: reported properties, a JSON object, never retained.
        let status = azure.status(gps_agent::uplink::payload::LinkState::Online);
        let (path, _) = azure_rid(&status.topic, "$iothub/twin/").unwrap();
        assert_eq!(path, azure_rid(AZURE_REPORTED, "$iothub/twin/").unwrap().0);
        assert!(serde_json::from_slice::<Value>(&status.payload)
            .unwrap()
            .is_object());
        assert!(!status.retain);
    }
}

#[test]
fn an_azure_direct_method_as_documented_is_answered_with_a_status_and_its_rid() {
    let azure = profile(
        ProfileSettings::Azure {
            hub: "hub.azure-devices.net".into(),
            key: None,
            token_lifetime: std::time::Duration::from_secs(3600),
        },
        PayloadFormat::Json,
    );
    assert!(azure
        .subscriptions(true)
        .contains(&"$iothub/methods/POST/#".to_owned()));
    let (method, rid) = azure_rid(AZURE_METHOD, "$iothub/methods/POST/").unwrap();
    assert_eq!((method, rid), ("ping", "1"));
    for (ok, status) in [(true, "200"), (false, "400")] {
        let answer = round_trip(azure.as_ref(), AZURE_METHOD, b"{}", ok);
        let (code, answered) = azure_rid(&answer.topic, "$iothub/methods/res/").unwrap();
        assert_eq!((code, answered), (status, rid));
        assert!(serde_json::from_slice::<Value>(&answer.payload).is_ok());
    }
}
