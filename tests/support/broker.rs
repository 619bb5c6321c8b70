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
    super::wait::poll(within, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    })
    .is_some()
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
    /// When the subscriber's event loop handed it over.
    pub at: Instant,
}

/// One fix of a fixes message, as the back end would file it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedFix {
    pub stream: String,
    pub seq: u64,
    pub fix: gps_agent::fix::Fix,
}

impl Received {
    /// The seqs a fixes message carries (JSON or the compact CBOR); none for any other topic.
    pub fn fix_seqs(&self) -> Vec<u64> {
        if !self.topic.ends_with("/fixes") {
            return Vec::new();
        }
        if self.is_cbor() {
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

    /// A v2 payload: a CBOR map (v1 is a JSON object, `{`).
    pub fn is_cbor(&self) -> bool {
        self.payload
            .first()
            .is_some_and(|b| (0xa0..=0xbf).contains(b))
    }

    /// The fixes a fixes message carries (JSON v1 or CBOR v2), in the message's order; none
    /// for any other topic.
    pub fn fixes(&self) -> Vec<ReceivedFix> {
        if !self.topic.ends_with("/fixes") {
            return Vec::new();
        }
        if self.is_cbor() {
            let m = gps_agent::uplink::cbor::decode(&self.payload).unwrap();
            return m
                .fixes
                .into_iter()
                .map(|(seq, fix)| ReceivedFix {
                    stream: m.stream.clone(),
                    seq,
                    fix,
                })
                .collect();
        }
        let v: serde_json::Value = serde_json::from_slice(&self.payload).unwrap();
        let stream = v["stream"].as_str().unwrap().to_string();
        v["fixes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let (seq, fix) = gps_agent::fix::fix_from_json(f).unwrap();
                ReceivedFix {
                    stream: stream.clone(),
                    seq: seq.unwrap(),
                    fix,
                }
            })
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
        Self::connect(broker.addr, filter, credentials, None).await
    }

    /// A subscriber whose session outlives its connection (clean session off, client id
    /// `id`), for brokers that restart: one that keeps sessions (mosquitto with persistence)
    /// hands over what arrived meanwhile; one that lost the session is subscribed again.
    pub async fn start_persistent(broker: &TestBroker, filter: &str, id: &str) -> Subscriber {
        Self::connect(broker.addr, filter, None, Some(id)).await
    }

    async fn connect(
        addr: SocketAddr,
        filter: &str,
        credentials: Option<(&str, &str)>,
        persistent_id: Option<&str>,
    ) -> Subscriber {
        let id = persistent_id.map_or_else(|| super::unique("sub"), str::to_string);
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(1024 * 1024, 1024 * 1024);
        options.set_clean_session(persistent_id.is_none());
        if let Some((user, password)) = credentials {
            options.set_credentials(user, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let (tx, rx) = mpsc::channel(1024);
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn({
            let client = client.clone();
            let filter = filter.to_string();
            async move {
                let mut subscribed = Some(subscribed_tx);
                // The last error said, so a broker that is away for a while is one line.
                let mut last_error = String::new();
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                            last_error.clear();
                            // Each connection without a session (the first, and any after
                            // the broker lost its state) subscribes: the event loop sends it
                            // next.
                            if ack.session_present {
                                continue;
                            }
                            if let Err(e) = client.try_subscribe(&filter, QoS::AtLeastOnce) {
                                eprintln!("test subscriber: subscribe: {e}");
                            }
                        }
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
                                at: Instant::now(),
                            };
                            if tx.send(msg).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let e = e.to_string();
                            if e != last_error {
                                eprintln!("test subscriber: {e}");
                                last_error = e;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
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
        let _ = super::wait::poll_async(within, async || {
            if let Some(msg) = self.next(Duration::from_millis(100)).await {
                seqs.extend(msg.fix_seqs());
            }
            seqs.len() as u64 >= n
        })
        .await;
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
