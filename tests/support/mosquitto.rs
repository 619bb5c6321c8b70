//! A real mosquitto broker for interop tests: started from a generated config on free
//! loopback ports in a temp dir, killed (and reaped) on drop.
//!
//! Every broker has a plain anonymous listener for the test's own subscriber (`sub_addr`) and
//! one listener for the agent (`agent_addr`), plain or TLS, optionally with a password file
//! and a required client certificate. `per_listener_settings` keeps the two apart.

use super::broker::{free_port, wait_accepting, TestBroker};
use super::certs::TestPki;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Env var that makes a missing mosquitto a failure instead of a skip (CI sets it).
pub const REQUIRED_ENV: &str = "GPS_AGENT_MOSQUITTO";

/// Whether `mosquitto` can run here. Without it: `false` (the caller skips, saying so), or a
/// panic when [`REQUIRED_ENV`] is set, so CI never passes by skipping.
pub fn available() -> bool {
    let found = Command::new("mosquitto")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os(REQUIRED_ENV).is_none(),
            "{REQUIRED_ENV} is set but mosquitto is not on PATH (apt-get install mosquitto)"
        );
        eprintln!("mosquitto not on PATH: skipping (set {REQUIRED_ENV} to make this fail)");
    }
    found
}

#[derive(Debug, Clone, Default)]
pub struct MosquittoOptions {
    /// Serve the agent's listener over TLS with the PKI's server certificate.
    pub tls: bool,
    /// Ask for and require a client certificate signed by the PKI's CA (mutual TLS).
    pub require_certificate: bool,
    /// `(user, password)` entries; the agent's listener then refuses anonymous clients.
    pub users: Vec<(String, String)>,
    /// Largest packet mosquitto takes; a client sending a larger one is disconnected.
    pub max_packet_size: Option<u32>,
    /// Keep sessions and queued messages across [`Mosquitto::stop`] and
    /// [`Mosquitto::start_again`] (saved to the broker's temp dir when it stops), with no
    /// limit on what is queued for a subscriber that is away meanwhile.
    pub persistence: bool,
    /// Log every packet received and sent (`log_type all`), with mosquitto's timestamp in
    /// whole seconds: [`Mosquitto::log`] then tells when each client said what.
    pub log_packets: bool,
    /// The agent's listener on this port instead of a free one (a platform SDK that dials
    /// its platform's fixed port: 8883).
    pub agent_port: Option<u16>,
}

pub struct Mosquitto {
    /// `None` between [`Mosquitto::stop`] and [`Mosquitto::start_again`].
    child: Option<Child>,
    conf: std::path::PathBuf,
    /// The agent's listener.
    pub agent_addr: SocketAddr,
    /// A plain anonymous listener for subscribers.
    pub sub_addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Start mosquitto and return once both listeners accept TCP connections. `pki` is
    /// needed for `tls`.
    pub fn start(options: &MosquittoOptions, pki: Option<&TestPki>) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let agent_addr = match options.agent_port {
            Some(port) => SocketAddr::from(([127, 0, 0, 1], port)),
            None => free_port(),
        };
        let sub_addr = free_port();
        let mut conf = String::from("per_listener_settings true\n");
        if options.persistence {
            conf += &format!(
                "persistence true\npersistence_location {}/\nmax_queued_messages 0\n",
                dir.path().display()
            );
        } else {
            conf += "persistence false\n";
        }
        conf += "log_dest stderr\nlog_type error\nlog_type warning\n";
        if options.log_packets {
            conf += "log_type all\n";
        }
        if running_as_root() {
            // As root mosquitto drops to user `mosquitto`, who cannot read the temp dir.
            conf += "user root\n";
        }
        if let Some(max) = options.max_packet_size {
            conf += &format!("max_packet_size {max}\n");
        }
        conf += &format!(
            "listener {} 127.0.0.1\nallow_anonymous true\n",
            sub_addr.port()
        );
        conf += &format!("listener {} 127.0.0.1\n", agent_addr.port());
        if options.users.is_empty() {
            conf += "allow_anonymous true\n";
        } else {
            let passwords = dir.path().join("passwords");
            write_passwords(&passwords, &options.users);
            conf += &format!(
                "allow_anonymous false\npassword_file {}\n",
                passwords.display()
            );
        }
        if options.tls {
            let pki = pki.expect("a TLS listener needs a PKI");
            conf += &format!(
                "cafile {}\ncertfile {}\nkeyfile {}\n",
                pki.ca.display(),
                pki.server_cert.display(),
                pki.server_key.display()
            );
            if options.require_certificate {
                conf += "require_certificate true\n";
            }
        }
        let conf_path = dir.path().join("mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut broker = Mosquitto {
            child: None,
            conf: conf_path,
            agent_addr,
            sub_addr,
            _dir: dir,
        };
        broker.start_again();
        broker
    }

    /// Start the broker (again, after [`Mosquitto::stop`]) on the same ports and
    /// configuration; returns once both listeners accept TCP connections.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "mosquitto is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self._dir.path().join("mosquitto.log"))
            .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start mosquitto");
        self.child = Some(child);
        let up = wait_accepting(self.agent_addr, Duration::from_secs(5))
            && wait_accepting(self.sub_addr, Duration::from_secs(5));
        if !up {
            self.kill();
            panic!("mosquitto did not start listening:\n{}", self.log());
        }
    }

    /// Stop the broker as an operator's restart does (SIGTERM: with `persistence`, sessions
    /// and queued messages are saved); returns once it has exited.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let stopped = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if stopped
            && super::wait::poll(Duration::from_secs(30), || child.try_wait().unwrap()).is_some()
        {
            return;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("mosquitto did not stop within 30 s of SIGTERM");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The agent's URL: `mqtt://127.0.0.1:PORT`, or `mqtts://localhost:PORT` with TLS.
    pub fn agent_url(&self, tls: bool) -> String {
        if tls {
            format!("mqtts://localhost:{}", self.agent_addr.port())
        } else {
            format!("mqtt://{}", self.agent_addr)
        }
    }

    /// The subscriber side, in the shape [`super::broker::Subscriber`] takes.
    pub fn for_subscriber(&self) -> TestBroker {
        TestBroker {
            addr: self.sub_addr,
        }
    }

    /// What mosquitto logged (warnings and errors; every packet with `log_packets`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

fn write_passwords(path: &Path, users: &[(String, String)]) {
    for (i, (user, password)) in users.iter().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let status = cmd
            .arg("-b")
            .arg(path)
            .arg(user)
            .arg(password)
            .stdout(Stdio::null())
            .status()
            .expect("mosquitto_passwd not found (it comes with mosquitto)");
        assert!(status.success(), "mosquitto_passwd failed");
    }
}

/// Whether this process runs as root.
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
