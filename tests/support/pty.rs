//! A GNSS receiver as a pseudo-terminal pair: the test holds the master end (the receiver)
//! and a udev-style symlink points at the slave end (the device the agent opens); a drive fed
//! to it in real time.

use gps_agent::sim::{Drive, DriveSpec};
use serialport::{SerialPort, TTYPort};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::Duration;

/// A new pty pair whose slave is reachable at `link`. Returns the master.
pub fn receiver_at(link: &Path) -> TTYPort {
    let (master, slave) = TTYPort::pair().expect("pty pair");
    // serialport opens the master without close-on-exec: every agent the test starts
    // afterwards would hold a copy, and dropping the test's master would then never hang
    // up the terminal (an unplug the agent could not see).
    // SAFETY: F_SETFD on a descriptor the TTYPort owns; no pointers involved.
    let rc = unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    assert_eq!(rc, 0, "FD_CLOEXEC: {}", std::io::Error::last_os_error());
    let name = slave.name().expect("slave name");
    drop(slave);
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(name, link).expect("symlink");
    master
}

/// The whole drive of `spec` written to `receiver` in real time, on a thread of its own. The
/// thread returns the epochs written and the master, still open: closing it hangs up the
/// terminal, and what the agent has not read yet would be lost.
pub fn feed_realtime(spec: DriveSpec, mut receiver: TTYPort) -> JoinHandle<(u32, TTYPort)> {
    std::thread::spawn(move || {
        let never = AtomicBool::new(false);
        // Until the agent opens the device the pty refuses writes: start over until the
        // drive goes through (nothing was read before).
        let written = loop {
            let drive = Drive::new(spec.clone()).unwrap();
            match gps_agent::sim::write_realtime(drive, &mut receiver, &never) {
                Ok(n) => break n,
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        (written, receiver)
    })
}
