//! The footprint bench's receiver (`benches/footprint.sh`): the project's simulated drive as
//! a serial GPS would send it.
//!
//! - `footprint_feed pty --rate HZ --secs N LINK...`: one pseudo-terminal per `LINK` (a
//!   udev-style symlink to the slave end, for gpsd and the agent to open as their receiver),
//!   and the same drive written to every master at its rate, each epoch in one burst, for
//!   `N` seconds. The masters stay open afterwards until the process is killed: closing a
//!   master hangs up its terminal and loses what the reader has not read yet.
//! - `footprint_feed log --rate HZ --epochs N FILE`: the drive as an NMEA log, at once
//!   (a day's backlog for the drain scenario).
//!
//! Clean drives (no tunnel, no damaged lines), so every epoch is a fix for both readers.

use gps_agent::sim::{write_log, write_realtime, Drive, DriveSpec};
use serialport::{SerialPort, TTYPort};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

/// Every write goes to all masters, so both readers see the same bytes at the same moment.
struct Tee(Vec<TTYPort>);

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for port in &mut self.0 {
            port.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.iter_mut().try_for_each(Write::flush)
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: footprint_feed pty --rate HZ --secs N LINK...\n       footprint_feed log --rate HZ --epochs N FILE"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first().cloned() else {
        return usage();
    };
    let (mut rate, mut secs, mut epochs, mut paths) = (10u8, 30u32, None::<u32>, Vec::new());
    let mut it = args.into_iter().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse::<u32>().ok());
        match a.as_str() {
            "--rate" => match value().and_then(|v| u8::try_from(v).ok()) {
                Some(v) => rate = v,
                None => return usage(),
            },
            "--secs" => match value() {
                Some(v) => secs = v,
                None => return usage(),
            },
            "--epochs" => match value() {
                Some(v) => epochs = Some(v),
                None => return usage(),
            },
            _ => paths.push(PathBuf::from(a)),
        }
    }
    let spec = DriveSpec {
        rate_hz: rate,
        epochs: epochs.unwrap_or(secs.saturating_mul(u32::from(rate))),
        ..DriveSpec::default()
    };
    let drive = match Drive::new(spec) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("footprint_feed: {e}");
            return ExitCode::from(2);
        }
    };
    match (mode.as_str(), paths.as_slice()) {
        ("log", [file]) => match std::fs::File::create(file)
            .map_err(|e| e.to_string())
            .and_then(|f| write_log(drive, std::io::BufWriter::new(f)).map_err(|e| e.to_string()))
        {
            Ok(n) => {
                println!("{n} epochs written to {}", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("footprint_feed: {}: {e}", file.display());
                ExitCode::FAILURE
            }
        },
        ("pty", links) if !links.is_empty() => {
            let (mut masters, mut slaves) = (Vec::new(), Vec::new());
            for link in links {
                match receiver_at(link) {
                    Ok((m, s)) => {
                        masters.push(m);
                        slaves.push(s);
                    }
                    Err(e) => {
                        eprintln!("footprint_feed: {}: {e}", link.display());
                        return ExitCode::FAILURE;
                    }
                }
            }
            println!("ready");
            let _ = std::io::stdout().flush();
            let mut tee = Tee(masters);
            let stop = AtomicBool::new(false);
            match write_realtime(drive, &mut tee, &stop) {
                Ok(n) => println!("{n} epochs written"),
                Err(e) => {
                    let why = std::error::Error::source(&e).map(ToString::to_string);
                    eprintln!("footprint_feed: {e}: {}", why.unwrap_or_default());
                    return ExitCode::FAILURE;
                }
            }
            let _ = std::io::stdout().flush();
            // Hold both ends open (see the module doc) until killed.
            let _hold = slaves;
            loop {
                std::thread::park();
            }
        }
        _ => usage(),
    }
}

/// A pty pair whose slave is reachable at `link`, readable by gpsd's unprivileged user.
/// The slave end is returned too and must stay open: a master whose slave was never opened
/// or is closed refuses writes (EIO), and the readers may open it a moment later.
fn receiver_at(link: &std::path::Path) -> Result<(TTYPort, TTYPort), String> {
    let (master, slave) = TTYPort::pair().map_err(|e| e.to_string())?;
    let name = slave
        .name()
        .ok_or_else(|| "the pty slave has no name".to_string())?;
    // gpsd drops root for its own user before it opens a device.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("chmod {name}: {e}"))?;
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(&name, link).map_err(|e| e.to_string())?;
    Ok((master, slave))
}
