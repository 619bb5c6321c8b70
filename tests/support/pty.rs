//! A GNSS receiver as a pseudo-terminal pair: the test holds the master end (the receiver)
//! and a udev-style symlink points at the slave end (the device the agent opens).

use serialport::{SerialPort, TTYPort};
use std::os::fd::AsRawFd;
use std::path::Path;

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
