//! The fleet's back end as the commands tests play it: a plain MQTT client that publishes
//! requests on `fleet/{id}/cmd` and reads answers on `fleet/{id}/cmd/result` and backfill
//! messages on `fleet/{id}/backfill`; requests that expire in ten minutes; drives that end
//! now (the agent's clock follows the receiver's when they disagree).

use super::broker::{Received, Subscriber, TestBroker};
use gps_agent::sim::DriveSpec;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall time now, Unix ms.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn rfc3339(ms: i64) -> String {
    gps_agent::fix::format_time_ms(ms)
}

/// A request that expires in ten minutes.
pub fn request(id: &str, cmd: &str, args: Value) -> String {
    json!({"id": id, "cmd": cmd, "args": args, "expires": rfc3339(now_ms() + 600_000)}).to_string()
}

/// A drive of `epochs` 1 Hz epochs that ends now (the agent's clock follows the receiver's
/// when they disagree; ending now keeps them together), as a log file.
pub fn drive_now(dir: &Path, epochs: u32) -> PathBuf {
    super::agent::drive_log(
        dir,
        DriveSpec {
            epochs,
            start_time_ms: (now_ms() / 1000) * 1000 - i64::from(epochs) * 1000 - 5_000,
            ..DriveSpec::default()
        },
    )
}

/// The back end: answers on the result topic, requests published on the command topic.
pub struct Backend {
    sub: Subscriber,
    cmd: String,
    /// Every answer read so far, in order.
    pub answers: Vec<Value>,
    /// Every backfill message read so far.
    pub backfill: Vec<Value>,
}

impl Backend {
    pub async fn start(broker: &TestBroker, device: &str) -> Backend {
        let sub = Subscriber::start(broker, &format!("fleet/{device}/cmd/result")).await;
        sub.client
            .subscribe(
                format!("fleet/{device}/backfill"),
                rumqttc::QoS::AtLeastOnce,
            )
            .await
            .unwrap();
        Backend {
            sub,
            cmd: format!("fleet/{device}/cmd"),
            answers: Vec::new(),
            backfill: Vec::new(),
        }
    }

    pub async fn publish(&self, payload: impl Into<Vec<u8>>) {
        self.sub
            .client
            .publish(&self.cmd, rumqttc::QoS::AtLeastOnce, false, payload.into())
            .await
            .unwrap();
    }

    fn file(&mut self, msg: Received) {
        let v: Value = if msg.is_cbor() {
            // A backfill in the compact form, read into the JSON form's fields.
            let m = gps_agent::uplink::cbor::decode(&msg.payload).unwrap();
            let fixes: Vec<Value> = m
                .fixes
                .iter()
                .map(|(seq, f)| json!({"seq": seq, "time": rfc3339(f.time_ms), "lat": f.lat, "lon": f.lon}))
                .collect();
            json!({"v": 2, "stream": m.stream, "request": m.request, "fixes": fixes})
        } else {
            serde_json::from_slice(&msg.payload).unwrap()
        };
        if msg.topic.ends_with("/backfill") {
            self.backfill.push(v);
        } else {
            self.answers.push(v);
        }
    }

    /// The next answer to `id` not seen before (the first of `answers` with that id after
    /// `skip` of them), waiting up to `within`.
    pub async fn answer_after(&mut self, id: &str, skip: usize, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(a) = self.answers.iter().filter(|a| a["id"] == id).nth(skip) {
                return Some(a.clone());
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = self.sub.next(left).await?;
            self.file(msg);
        }
    }

    /// Publish `req` once and wait for its answer.
    pub async fn ask(&mut self, id: &str, req: String) -> Value {
        let before = self.answers.iter().filter(|a| a["id"] == id).count();
        self.publish(req).await;
        self.answer_after(id, before, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("no answer to {id}"))
    }

    /// Publish `req` every half second until its first answer comes: the agent subscribes
    /// when it connects, and a request before that reaches nobody.
    pub async fn ask_until_subscribed(&mut self, id: &str, req: String) -> Value {
        for _ in 0..60 {
            self.publish(req.clone()).await;
            if let Some(a) = self.answer_after(id, 0, Duration::from_millis(500)).await {
                return a;
            }
        }
        panic!("the agent never answered {id}");
    }

    /// The fixes of backfill `id`'s messages, in order, once `n` arrived (fewer if they do
    /// not within `within`); every message names the request.
    pub async fn backfill_fixes(&mut self, id: &str, n: usize, within: Duration) -> Vec<Value> {
        let count = |b: &Backend| {
            b.backfill
                .iter()
                .map(|m| m["fixes"].as_array().map_or(0, Vec::len))
                .sum::<usize>()
        };
        self.until(within, |b| count(b) >= n).await;
        let mut fixes = Vec::new();
        for m in &self.backfill {
            assert_eq!(m["request"], id, "{m}");
            fixes.extend(m["fixes"].as_array().into_iter().flatten().cloned());
        }
        fixes
    }

    /// Read answers and backfill messages until `pred` holds of them, up to `within`.
    pub async fn until(&mut self, within: Duration, pred: impl Fn(&Backend) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !pred(self) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(msg) = self.sub.next(left).await else {
                return false;
            };
            self.file(msg);
        }
        true
    }
}
