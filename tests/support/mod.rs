//! Shared harness of the uplink integration tests: an in-process MQTT broker ([`broker`]) and a
//! TCP fault proxy ([`proxy`]) to put between the agent and the broker, and a front end playing
//! a load balancer or a broker in trouble ([`front`]); a real mosquitto ([`mosquitto`]) with
//! test certificates ([`certs`]); a TLS front for the in-process broker ([`tls_front`]); an
//! in-memory fix source ([`source`]); a receiver on a pty ([`pty`]), and one that pauses around
//! agent restarts ([`relay`]); the power-cut shim ([`shim`]); an operator's command signing key
//! ([`signing`]) and the back end that sends commands ([`backend`]); the platforms' message
//! shapes as documented ([`platform`]); simulated drives as accepted fixes, with receiver noise ([`drives`]); the
//! chaos run of the real daemon under seeded faults ([`chaos`]); a RabbitMQ cluster
//! `.ci/cluster.sh` started ([`rabbitmq`]).
//!
//! Each test file that needs them says `mod support;`. Everything here is bounded in time:
//! waits take a deadline and fail the test rather than hang it. Nothing here knows about the
//! agent's internals; it only speaks TCP and MQTT.

#![allow(dead_code)] // Each test file uses a different part of the harness.

pub mod agent;
pub mod backend;
pub mod broker;
pub mod certs;
pub mod chaos;
pub mod drives;
pub mod front;
pub mod mosquitto;
pub mod mqtt_tap;
pub mod platform;
pub mod proxy;
pub mod pty;
pub mod publisher;
pub mod rabbitmq;
pub mod relay;
pub mod shim;
pub mod signing;
pub mod source;
pub mod tls_front;
pub mod wait;

use std::sync::atomic::{AtomicU64, Ordering};

/// A name no other test in this process (or a parallel process) uses, for topics and client
/// ids, so tests sharing a broker never see each other's messages.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// xorshift64*: reproducible random choices (kill moments, cut points) without another crate.
pub struct Prng(pub u64);

impl Prng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Waits (at most 10 s) until `cond` holds; fails the test otherwise.
pub async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    wait::until_async(what, std::time::Duration::from_secs(10), async || cond()).await
}
