//! systemd's notification protocol (`Type=notify`), in a few lines of our own: `READY=1` once
//! the stages are up, `WATCHDOG=1` from the main loop while it really runs, `STATUS=` with a
//! one-line summary, `STOPPING=1` on the way out.
//!
//! In: `NOTIFY_SOCKET` (a path, or an abstract name starting with `@`), `WATCHDOG_USEC` and
//! `WATCHDOG_PID` from the environment systemd gives the service. Out: datagrams. Without
//! `NOTIFY_SOCKET` (not under systemd) every call is a no-op. A failed send is logged once
//! (`SYSTEMD_NOTIFY`) and never stops the agent.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::warn;

/// Sends notifications to systemd (or nowhere, when not started by it).
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
    warned: AtomicBool,
}

impl Notifier {
    /// From the environment systemd sets for the service.
    pub fn from_env() -> Notifier {
        let socket = std::env::var("NOTIFY_SOCKET").ok();
        let usec = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok());
        // The watchdog is ours only when WATCHDOG_PID is absent or names this process.
        let ours = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        Notifier::new(socket.as_deref(), usec.filter(|_| ours))
    }

    /// For a given socket (`/run/...` or `@abstract`) and watchdog timeout in microseconds.
    pub fn new(socket: Option<&str>, watchdog_usec: Option<u64>) -> Notifier {
        let target = socket.filter(|s| !s.is_empty()).and_then(|s| {
            let addr = address(s)?;
            let sock = UnixDatagram::unbound().ok()?;
            Some((sock, addr))
        });
        Notifier {
            watchdog: watchdog_usec
                .filter(|u| *u > 0)
                .map(Duration::from_micros)
                .filter(|_| target.is_some()),
            target,
            warned: AtomicBool::new(false),
        }
    }

    /// True when running under systemd's notify protocol.
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send `WATCHDOG=1`: half of `WatchdogSec`, as systemd recommends.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    pub fn ready(&self) {
        self.send("READY=1");
    }

    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send("WATCHDOG=1");
        }
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// A one-line status for `systemctl status` (newlines would end it: replaced).
    pub fn status(&self, line: &str) {
        let clean: String = line
            .chars()
            .map(|c| if c == '\n' { ' ' } else { c })
            .take(200)
            .collect();
        self.send(&format!("STATUS={clean}"));
    }

    fn send(&self, message: &str) {
        let Some((sock, addr)) = &self.target else {
            return;
        };
        if let Err(e) = sock.send_to_addr(message.as_bytes(), addr) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                warn!(component = "agent", code = "SYSTEMD_NOTIFY", class = "transient", error = %e,
                    "cannot notify systemd (logged once)");
            }
        }
    }
}

fn address(socket: &str) -> Option<SocketAddr> {
    match socket.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes()).ok()
        }
        None => SocketAddr::from_pathname(socket).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(server: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn messages_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let n = Notifier::new(path.to_str(), Some(4_000_000));
        assert!(n.is_active());
        n.ready();
        assert_eq!(received(&server), "READY=1");
        n.status("2 lines\nin one");
        assert_eq!(received(&server), "STATUS=2 lines in one");
        n.watchdog();
        assert_eq!(received(&server), "WATCHDOG=1");
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(2)));
        n.stopping();
        assert_eq!(received(&server), "STOPPING=1");
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("gps-agent-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let n = Notifier::new(Some(&format!("@{name}")), None);
        n.ready();
        assert_eq!(received(&server), "READY=1");
    }

    #[test]
    fn without_a_socket_everything_is_a_no_op() {
        let n = Notifier::new(None, Some(1_000_000));
        assert!(!n.is_active());
        assert_eq!(n.watchdog_interval(), None);
        n.ready();
        n.watchdog();
    }

    #[test]
    fn a_vanished_socket_is_survived() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.sock");
        let n = Notifier::new(path.to_str(), None);
        n.ready();
        n.ready();
    }
}
