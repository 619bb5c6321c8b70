//! A GNSS receiver as a pseudo-terminal pair: the test holds the master end (the receiver)
//! and a udev-style symlink points at the slave end (the device the agent opens).

use serialport::{SerialPort, TTYPort};
use std::path::Path;

/// A new pty pair whose slave is reachable at `link`. Returns the master.
pub fn receiver_at(link: &Path) -> TTYPort {
    let (master, slave) = TTYPort::pair().expect("pty pair");
    let name = slave.name().expect("slave name");
    drop(slave);
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(name, link).expect("symlink");
    master
}
