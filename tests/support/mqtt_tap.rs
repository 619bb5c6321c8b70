//! A tap in front of the test broker: forwards every byte both ways, unchanged, and decodes
//! what the client sends (MQTT 3.1.1 CONNECT, PUBLISH, SUBSCRIBE), so a test can check a
//! platform's device contract byte for byte, as the platform's broker would see it: client
//! id, user name and password, keep-alive, clean session, the will, each publish's topic,
//! QoS, retain flag and payload, each subscription with its QoS.
//!
//! Bounded: one task per direction per connection; a packet larger than 1 MiB ends the
//! connection's decoding (the bytes still flow).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_PACKET: usize = 1024 * 1024;

/// What a client sent, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Connect(Connect),
    Publish {
        topic: String,
        qos: u8,
        retain: bool,
        payload: Vec<u8>,
    },
    Subscribe(Vec<(String, u8)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
    pub keep_alive: u16,
    pub clean_session: bool,
    /// Topic, payload, QoS, retain.
    pub will: Option<(String, Vec<u8>, u8, bool)>,
}

pub struct MqttTap {
    pub addr: SocketAddr,
    /// What was seen, with when the tap read it (as a platform would time it on arrival).
    seen: Arc<Mutex<Vec<(std::time::Instant, Seen)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl MqttTap {
    pub async fn start(upstream: SocketAddr) -> MqttTap {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        let Ok(broker) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let (mut cr, mut cw) = client.into_split();
                        let (mut br, mut bw) = broker.into_split();
                        let down = tokio::spawn(async move {
                            let _ = tokio::io::copy(&mut br, &mut cw).await;
                            let _ = cw.shutdown().await;
                        });
                        let mut decoder = Decoder::default();
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            for packet in decoder.feed(&buf[..n]) {
                                let at = std::time::Instant::now();
                                seen.lock().unwrap().push((at, packet));
                            }
                            if bw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = bw.shutdown().await;
                        let _ = down.await;
                    });
                }
            }
        });
        MqttTap { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen_at().into_iter().map(|(_, s)| s).collect()
    }

    /// What was seen, each with when the tap read it.
    pub fn seen_at(&self) -> Vec<(std::time::Instant, Seen)> {
        self.seen.lock().unwrap().clone()
    }

    pub fn connects(&self) -> Vec<Connect> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Connect(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    /// Every publish: topic, QoS, retain, payload.
    pub fn publishes(&self) -> Vec<(String, u8, bool, Vec<u8>)> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Publish {
                    topic,
                    qos,
                    retain,
                    payload,
                } => Some((topic, qos, retain, payload)),
                _ => None,
            })
            .collect()
    }
}

impl Drop for MqttTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Client-to-broker bytes in, whole packets out.
#[derive(Default)]
struct Decoder {
    pending: Vec<u8>,
    broken: bool,
}

impl Decoder {
    fn feed(&mut self, bytes: &[u8]) -> Vec<Seen> {
        let mut out = Vec::new();
        if self.broken {
            return out;
        }
        self.pending.extend_from_slice(bytes);
        while let Some((header, body_at, len)) = frame(&self.pending) {
            if len > MAX_PACKET {
                self.broken = true;
                self.pending.clear();
                break;
            }
            if self.pending.len() < body_at + len {
                break;
            }
            let body = self.pending[body_at..body_at + len].to_vec();
            self.pending.drain(..body_at + len);
            if let Some(seen) = decode(header, &body) {
                out.push(seen);
            }
        }
        out
    }
}

/// The fixed header: first byte, where the body starts, the body's length.
fn frame(bytes: &[u8]) -> Option<(u8, usize, usize)> {
    let header = *bytes.first()?;
    let mut len = 0usize;
    for i in 0..4 {
        let b = *bytes.get(1 + i)?;
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((header, 2 + i, len));
        }
    }
    Some((header, 5, MAX_PACKET + 1))
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from(self.u8()?) << 8 | u16::from(self.u8()?))
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = usize::from(self.u16()?);
        if self.0.len() < n {
            return None;
        }
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(b.to_vec())
    }
    fn text(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?).ok()
    }
}

fn decode(header: u8, body: &[u8]) -> Option<Seen> {
    let mut r = Reader(body);
    match header >> 4 {
        1 => {
            let _protocol = r.text()?;
            let _level = r.u8()?;
            let flags = r.u8()?;
            let keep_alive = r.u16()?;
            let client_id = r.text()?;
            let will = if flags & 0x04 != 0 {
                let topic = r.text()?;
                let payload = r.bytes()?;
                Some((topic, payload, (flags >> 3) & 3, flags & 0x20 != 0))
            } else {
                None
            };
            let username = if flags & 0x80 != 0 {
                Some(r.text()?)
            } else {
                None
            };
            let password = if flags & 0x40 != 0 {
                Some(r.bytes()?)
            } else {
                None
            };
            Some(Seen::Connect(Connect {
                client_id,
                username,
                password,
                keep_alive,
                clean_session: flags & 0x02 != 0,
                will,
            }))
        }
        3 => {
            let qos = (header >> 1) & 3;
            let topic = r.text()?;
            if qos > 0 {
                r.u16()?;
            }
            Some(Seen::Publish {
                topic,
                qos,
                retain: header & 1 != 0,
                payload: r.0.to_vec(),
            })
        }
        8 => {
            r.u16()?;
            let mut filters = Vec::new();
            while !r.0.is_empty() {
                let filter = r.text()?;
                filters.push((filter, r.u8()? & 3));
            }
            Some(Seen::Subscribe(filters))
        }
        _ => None,
    }
}
