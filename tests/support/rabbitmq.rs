//! A RabbitMQ cluster that `.ci/cluster.sh` started (three nodes with the MQTT plugin), as a
//! test sees it: each node's name and MQTT address from `GPS_AGENT_RABBITMQ_NODES`, and the
//! script's `rabbitmqctl` (`GPS_AGENT_RABBITMQ_CTL`) to stop and start a node's broker while
//! its Erlang VM stays up, as an operator's `stop_app` does.
//!
//! The script owns the nodes' lives; this harness only takes a node's broker away for a
//! while, and starts again on drop whatever it stopped, so a failing test leaves the cluster
//! whole for the next.

use super::broker::{wait_accepting, TestBroker};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// Env var that makes a missing cluster a failure instead of a skip (`.ci/cluster.sh` sets it).
pub const REQUIRED_ENV: &str = "GPS_AGENT_RABBITMQ";
/// `name=host:mqtt_port` per node, space-separated.
const NODES_ENV: &str = "GPS_AGENT_RABBITMQ_NODES";
/// A rabbitmqctl that carries the cluster's cookie and epmd port.
const CTL_ENV: &str = "GPS_AGENT_RABBITMQ_CTL";

/// How long a node may take to start its broker again: a hang guard, not a bound.
const START_WITHIN: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct Node {
    /// The Erlang node name, `gpsa1@localhost`.
    pub name: String,
    /// Its MQTT listener.
    pub mqtt: SocketAddr,
}

impl Node {
    /// `mqtt://HOST:PORT`, as the agent's config says it.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.mqtt)
    }

    /// The node as a place for a test subscriber to connect to.
    pub fn for_subscriber(&self) -> TestBroker {
        TestBroker { addr: self.mqtt }
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    ctl: PathBuf,
    /// Indexes of the nodes whose broker this harness stopped and has not started again.
    stopped: Mutex<BTreeSet<usize>>,
}

impl Cluster {
    /// The cluster the environment describes. Without one: `None` (the caller skips, saying
    /// so), or a panic when [`REQUIRED_ENV`] is set, so CI never passes by skipping.
    pub fn from_env() -> Option<Cluster> {
        let (Some(nodes), Some(ctl)) = (std::env::var_os(NODES_ENV), std::env::var_os(CTL_ENV))
        else {
            assert!(
                std::env::var_os(REQUIRED_ENV).is_none(),
                "{REQUIRED_ENV} is set but {NODES_ENV} or {CTL_ENV} is not: run .ci/cluster.sh"
            );
            eprintln!("no RabbitMQ cluster: skipping (run .ci/cluster.sh, which starts one)");
            return None;
        };
        let nodes: Vec<Node> = nodes
            .to_str()
            .expect("GPS_AGENT_RABBITMQ_NODES is UTF-8")
            .split_whitespace()
            .map(|entry| {
                let (name, addr) = entry
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{NODES_ENV}: `{entry}` is not name=host:port"));
                Node {
                    name: name.to_string(),
                    mqtt: addr
                        .parse()
                        .unwrap_or_else(|e| panic!("{NODES_ENV}: `{addr}`: {e}")),
                }
            })
            .collect();
        assert!(
            nodes.len() >= 2,
            "{NODES_ENV} names {} node(s)",
            nodes.len()
        );
        Some(Cluster {
            nodes,
            ctl: ctl.into(),
            stopped: Mutex::default(),
        })
    }

    /// The node whose MQTT URL is `url`.
    pub fn node_at(&self, url: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.url() == url)
    }

    /// `rabbitmqctl stop_app` on node `i`: its broker stops (connections closed, listeners
    /// gone: its MQTT port refuses), its Erlang VM stays in the cluster's distribution.
    /// Returns once the command has finished.
    pub fn stop_app(&self, i: usize) {
        self.stopped.lock().unwrap().insert(i);
        self.ctl(i, &["stop_app"]);
    }

    /// `rabbitmqctl start_app` on node `i`; returns once its MQTT port accepts connections.
    pub fn start_app(&self, i: usize) {
        self.ctl(i, &["start_app"]);
        self.ctl(i, &["await_startup"]);
        assert!(
            wait_accepting(self.nodes[i].mqtt, START_WITHIN),
            "{}'s MQTT port {} does not accept connections after start_app",
            self.nodes[i].name,
            self.nodes[i].mqtt
        );
        self.stopped.lock().unwrap().remove(&i);
    }

    fn ctl(&self, i: usize, args: &[&str]) {
        let out = Command::new(&self.ctl)
            .args(["-n", &self.nodes[i].name])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", self.ctl.display()));
        assert!(
            out.status.success(),
            "rabbitmqctl -n {} {}: {}\n{}{}",
            self.nodes[i].name,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let stopped: Vec<usize> = self.stopped.lock().unwrap().iter().copied().collect();
        for i in stopped {
            // Best effort while a test may be panicking already: a failure here is printed.
            let out = Command::new(&self.ctl)
                .args(["-n", &self.nodes[i].name, "start_app"])
                .output();
            if !out.as_ref().is_ok_and(|o| o.status.success()) {
                eprintln!("could not start {} again: {out:?}", self.nodes[i].name);
            }
        }
    }
}
