//! The MQTT uplink: takes buffered fixes, publishes them at QoS 1 and reports back which
//! ones the broker acknowledged.
//!
//! Fixes flow in from the buffer (by `seq`), go out as JSON messages on
//! `{prefix}/{device}/fixes`, and flow back as "acked" (PUBACK arrived for the message that
//! carried them), "released" (the link broke first; they are pending again) or "dead letter"
//! (the broker will never take them). The uplink never deletes or reorders buffered fixes
//! itself and never acknowledges a fix on anything but a PUBACK.
//!
//! Layout: [`reconnect`] decides when to probe the network path and when to connect
//! (following the path, not a timer), with [`backoff`] and [`breaker`] for a broker that
//! refuses (pure state machines, `now` passed in); [`limit`] learns the broker's packet
//! limit; [`acks`] maps rumqttc's packet ids back to the fixes a message carried;
//! [`payload`] and [`cbor`] build topics and size-bounded messages; [`tls`] the rustls
//! configuration; [`error`] classifies failures; [`publisher`] is the async loop that
//! drives one connection at a time (its `session`) over a [`source::FixSource`] ([`link`],
//! the buffer), on [`settings`] (with [`credentials`] read once); [`probe`] does the
//! reachability probes; [`linger`] holds live fixes for company; [`pace`] keeps a
//! platform's rate limits; [`profile`] is the
//! platform's device contract (topics, payload shapes, who the agent is at CONNECT, its
//! command channel); [`remote`] is the seam to the remote commands (requests in, answers
//! out; no command logic here).

pub mod acks;
pub mod backoff;
pub mod breaker;
pub mod cbor;
pub mod credentials;
pub mod error;
pub mod limit;
pub mod linger;
pub mod link;
pub mod pace;
pub mod payload;
pub mod probe;
pub mod profile;
pub mod publisher;
pub mod reconnect;
pub mod remote;
pub mod settings;
pub mod source;
pub mod tls;
