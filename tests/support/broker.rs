//! An in-process rumqttd broker on a free loopback port, and a subscriber that collects what
//! reaches it.
//!
//! rumqttd cannot bind port 0 and report the port back, so a free port is found by binding a
//! std listener to `127.0.0.1:0` and dropping it; if another process grabs it in between, the
//! broker is started again on another port. The broker's threads live until the test process
//! exits (rumqttd has no stop); each test file is its own process, so that is bounded.

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Knobs of the test broker.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Largest PUBLISH payload the broker takes; larger ones get the client disconnected.
    pub max_payload_size: usize,
    /// user -> password; `None` lets anyone in.
    pub auth: Option<HashMap<String, String>>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            max_payload_size: 256 * 1024,
            auth: None,
        }
    }
}

pub struct TestBroker {
    pub addr: SocketAddr,
}

impl TestBroker {
    pub fn start() -> TestBroker {
        Self::start_with(BrokerOptions::default())
    }

    /// Start a broker and return once it accepts TCP connections (panics after 3 tries).
    pub fn start_with(options: BrokerOptions) -> TestBroker {
        for _ in 0..3 {
            let addr = free_port();
            let mut broker = rumqttd::Broker::new(config(addr, &options));
            std::thread::Builder::new()
                .name(format!("rumqttd-{}", addr.port()))
                .spawn(move || {
                    if let Err(e) = broker.start() {
                        eprintln!("test broker on {addr} stopped: {e}");
                    }
                })
                .unwrap();
            if wait_accepting(addr, Duration::from_secs(5)) {
                return TestBroker { addr };
            }
        }
        panic!("test broker did not start");
    }

    /// `mqtt://127.0.0.1:PORT`, as the agent's config would say.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// True once `addr` accepts a TCP connection, false when `within` has passed.
pub fn wait_accepting(addr: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn config(addr: SocketAddr, options: &BrokerOptions) -> rumqttd::Config {
    let mut connections = toml::Table::new();
    connections.insert("connection_timeout_ms".into(), 5000.into());
    connections.insert(
        "max_payload_size".into(),
        i64::try_from(options.max_payload_size).unwrap().into(),
    );
    connections.insert("max_inflight_count".into(), 100.into());
    connections.insert("dynamic_filters".into(), true.into());
    if let Some(auth) = &options.auth {
        let table: toml::Table = auth
            .iter()
            .map(|(u, p)| (u.clone(), toml::Value::from(p.as_str())))
            .collect();
        connections.insert("auth".into(), table.into());
    }
    let text = format!(
        r#"
        id = 0
        [router]
        max_connections = 1000
        max_outgoing_packet_count = 200
        max_segment_size = 10485760
        max_segment_count = 10

        [v4.1]
        name = "v4-test"
        listen = "{addr}"
        next_connection_delay_ms = 1
        "#
    );
    // The connection settings go in as a table, not as text: `auth` is a nested table, and
    // spliced as text its `[auth]` header would land at the top level, where rumqttd ignores it.
    let mut table: toml::Table = toml::from_str(&text).unwrap();
    table["v4"]["1"]
        .as_table_mut()
        .unwrap()
        .insert("connections".into(), connections.into());
    table.try_into().unwrap()
}

/// A message as a subscriber received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Received {
    /// The seqs a fixes message carries (JSON or the compact CBOR); none for any other topic.
    pub fn fix_seqs(&self) -> Vec<u64> {
        if !self.topic.ends_with("/fixes") {
            return Vec::new();
        }
        if self
            .payload
            .first()
            .is_some_and(|b| (0xa0..=0xbf).contains(b))
        {
            let m = gps_agent::uplink::cbor::decode(&self.payload).unwrap();
            return m.fixes.iter().map(|(seq, _)| *seq).collect();
        }
        let v: serde_json::Value = serde_json::from_slice(&self.payload).unwrap();
        v["fixes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["seq"].as_u64().unwrap())
            .collect()
    }
}

/// A QoS 1 subscriber connected straight to the broker (not through any proxy), forwarding
/// what it receives into a bounded channel.
pub struct Subscriber {
    pub client: AsyncClient,
    pub rx: mpsc::Receiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Connect, subscribe to `filter` and return once the SUBACK arrived.
    pub async fn start(broker: &TestBroker, filter: &str) -> Subscriber {
        Self::start_as(broker, filter, None).await
    }

    /// As [`Subscriber::start`], logging in with `(user, password)` when given.
    pub async fn start_as(
        broker: &TestBroker,
        filter: &str,
        credentials: Option<(&str, &str)>,
    ) -> Subscriber {
        let mut options = MqttOptions::new(
            super::unique("sub"),
            broker.addr.ip().to_string(),
            broker.addr.port(),
        );
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(1024 * 1024, 1024 * 1024);
        if let Some((user, password)) = credentials {
            options.set_credentials(user, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let (tx, rx) = mpsc::channel(1024);
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut subscribed = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        if let Some(s) = subscribed.take() {
                            let _ = s.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let msg = Received {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        };
                        if tx.send(msg).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("test subscriber: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(5), subscribed_rx)
            .await
            .expect("no SUBACK within 5 s")
            .unwrap();
        Subscriber { client, rx, task }
    }

    /// Seqs of the fix messages received until `n` distinct ones arrived or `within` passed
    /// (status messages are skipped).
    pub async fn fix_seqs(&mut self, n: u64, within: Duration) -> BTreeSet<u64> {
        let mut seqs = BTreeSet::new();
        let deadline = tokio::time::Instant::now() + within;
        while (seqs.len() as u64) < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(msg) = self.next(left).await else {
                break;
            };
            seqs.extend(msg.fix_seqs());
        }
        seqs
    }

    /// Seqs of the fix messages received until nothing arrives for `quiet`.
    pub async fn fix_seqs_until_quiet(&mut self, quiet: Duration) -> BTreeSet<u64> {
        let mut seqs = BTreeSet::new();
        while let Some(msg) = self.next(quiet).await {
            seqs.extend(msg.fix_seqs());
        }
        seqs
    }

    /// The next message, or `None` if none arrives within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Received> {
        tokio::time::timeout(within, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}
