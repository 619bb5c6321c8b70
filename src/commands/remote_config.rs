//! Safe remote configuration on disk: the new file written beside the old one (write, fsync,
//! rename, fsync the directory), the previous file kept for rollback, and the confirmation
//! still owed recorded beside them, so that an agent restarted or crashed in the middle of
//! the window still rolls back a file that strands it.
//!
//! Files, beside the configuration file `config.toml`:
//! - `config.toml.previous`: the file as it was before the last `config.set` (kept after a
//!   confirmation too: an operator's way back);
//! - `config.toml.pending`: the confirmation owed ([`Pending`], JSON): which request, which
//!   file, until when, and whether it was already rolled back (its answer then still owed);
//! - `config.toml.rejected`: a file that was rolled back, for the operator to read;
//! - `config.toml.new`: a file being written (gone after the rename).
//!
//! Order of writes in [`install`]: the previous file, then the pending record, then the new
//! file. A crash anywhere leaves either the old file in force (the pending record, if any, is
//! then for a file that is not there, and [`recover`] drops it) or the new file with its
//! pending record. This module does the file work only; it never reads or applies settings.

use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What is owed for a configuration set remotely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The `config.set` request's id (the rollback's answer names it).
    pub id: String,
    /// SHA-256 (hex) of the new file and of the one it replaced.
    pub sha256: String,
    pub previous_sha256: String,
    /// Receiver-checked UTC, ms: rolled back unless a broker accepted a connection by then.
    pub deadline_ms: i64,
    /// `[commands] confirm_s` in ms: after a restart the window is at most this again, so a
    /// clock set back at boot cannot stretch it.
    pub confirm_ms: u64,
    pub state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// The new file is in force and waits for a broker to accept a connection with it.
    Waiting,
    /// The previous file is back in force; the rollback's answer is still owed.
    RolledBack,
}

/// The files beside a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub config: PathBuf,
}

impl Files {
    pub fn new(config: &Path) -> Files {
        Files {
            config: config.to_path_buf(),
        }
    }

    fn beside(&self, suffix: &str) -> PathBuf {
        let mut name = self.config.as_os_str().to_os_string();
        name.push(suffix);
        PathBuf::from(name)
    }

    pub fn previous(&self) -> PathBuf {
        self.beside(".previous")
    }

    pub fn pending(&self) -> PathBuf {
        self.beside(".pending")
    }

    pub fn rejected(&self) -> PathBuf {
        self.beside(".rejected")
    }

    fn dir(&self) -> &Path {
        match self.config.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        }
    }

    /// `bytes` at `path`, atomically: written beside it, synced, renamed over it, and the
    /// directory synced, so that after a power cut the path holds either the old or the new
    /// bytes, whole. The new file takes the permissions of the one it replaces (of the
    /// configuration file when there is none: its previous copy is as private as it).
    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.beside(".new");
        // A file made new here (the previous copy) takes the configuration file's.
        let mode = std::fs::metadata(path)
            .or_else(|_| std::fs::metadata(&self.config))
            .ok()
            .map(|m| m.permissions());
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            if let Some(mode) = mode {
                f.set_permissions(mode)?;
            }
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        sync_dir(self.dir())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Ok(()) => sync_dir(self.dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    crate::base64::hex(digest.as_ref())
}

/// Put `new` in force on disk: `old` kept as the previous file, `pending` recorded, then the
/// new file renamed over the configuration file.
pub fn install(files: &Files, old: &str, new: &str, pending: &Pending) -> io::Result<()> {
    files.write_atomically(&files.previous(), old.as_bytes())?;
    write_pending(files, pending)?;
    files.write_atomically(&files.config, new.as_bytes())
}

fn write_pending(files: &Files, pending: &Pending) -> io::Result<()> {
    let json = serde_json::to_vec(pending).map_err(io::Error::other)?;
    files.write_atomically(&files.pending(), &json)
}

/// The confirmation owed, if any (a record that cannot be read is reported as an error, not
/// taken for none).
pub fn read_pending(files: &Files) -> io::Result<Option<Pending>> {
    match std::fs::read(files.pending()) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A broker accepted a connection with the new file: nothing is owed any more.
pub fn confirm(files: &Files) -> io::Result<()> {
    files.remove(&files.pending())
}

/// The rollback's answer went out: nothing is owed any more.
pub fn answered(files: &Files) -> io::Result<()> {
    files.remove(&files.pending())
}

/// The window ran out: the previous file is put back in force (the rejected one kept
/// beside it), and the record says the rollback's answer is owed. Returns the record.
pub fn roll_back(files: &Files, pending: &Pending) -> io::Result<Pending> {
    let previous = std::fs::read(files.previous())?;
    if let Ok(rejected) = std::fs::read(&files.config) {
        files.write_atomically(&files.rejected(), &rejected)?;
    }
    let rolled = Pending {
        state: State::RolledBack,
        ..pending.clone()
    };
    // The record first: a crash after it rolls back again at the next start (the same
    // bytes), never leaves the answer unowed.
    write_pending(files, &rolled)?;
    files.write_atomically(&files.config, &previous)?;
    Ok(rolled)
}

/// What a start finds owed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtStart {
    Nothing,
    /// The new file is in force; it must be confirmed by the record's (new) deadline.
    Waiting(Pending),
    /// The previous file is in force again (rolled back now, or before the stop); the
    /// answer saying so is owed.
    RolledBack(Pending),
}

/// Before the configuration is read at start: finish what a stop interrupted. A window that
/// ran out while the agent was down is rolled back now; one still open is shortened to at
/// most `confirm_s` from now (and written back); a record of a file that is not in force
/// (the agent stopped before the new file was renamed into place) is dropped.
pub fn recover(files: &Files, now_ms: i64) -> io::Result<AtStart> {
    let Some(mut pending) = read_pending(files)? else {
        return Ok(AtStart::Nothing);
    };
    if pending.state == State::RolledBack {
        return Ok(AtStart::RolledBack(pending));
    }
    let in_force = std::fs::read(&files.config).map(|b| sha256_hex(&b))?;
    if in_force != pending.sha256 {
        confirm(files)?;
        return Ok(AtStart::Nothing);
    }
    if now_ms >= pending.deadline_ms {
        return roll_back(files, &pending).map(AtStart::RolledBack);
    }
    let latest = now_ms.saturating_add(i64::try_from(pending.confirm_ms).unwrap_or(i64::MAX));
    if pending.deadline_ms > latest {
        pending.deadline_ms = latest;
        write_pending(files, &pending)?;
    }
    Ok(AtStart::Waiting(pending))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(sha256: String, deadline_ms: i64) -> Pending {
        Pending {
            id: "r-1".into(),
            sha256,
            previous_sha256: sha256_hex(b"old"),
            deadline_ms,
            confirm_ms: 300_000,
            state: State::Waiting,
        }
    }

    fn setup() -> (tempfile::TempDir, Files) {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(&dir.path().join("config.toml"));
        std::fs::write(&files.config, "old").unwrap();
        (dir, files)
    }

    #[test]
    fn install_keeps_the_previous_file_and_records_what_is_owed() {
        let (_dir, files) = setup();
        let p = pending(sha256_hex(b"new"), 1_000);
        install(&files, "old", "new", &p).unwrap();
        assert_eq!(std::fs::read_to_string(&files.config).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(files.previous()).unwrap(), "old");
        assert_eq!(read_pending(&files).unwrap(), Some(p));
        assert!(!files.beside(".new").exists());
        confirm(&files).unwrap();
        assert_eq!(read_pending(&files).unwrap(), None);
        assert_eq!(recover(&files, 2_000).unwrap(), AtStart::Nothing);
    }

    #[test]
    fn the_previous_copy_is_as_private_as_the_configuration_file() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, files) = setup();
        std::fs::set_permissions(&files.config, std::fs::Permissions::from_mode(0o600)).unwrap();
        install(&files, "old", "new", &pending(sha256_hex(b"new"), 1_000)).unwrap();
        for path in [files.config.clone(), files.previous()] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
    }

    #[test]
    fn a_start_after_the_deadline_rolls_back_before_the_file_is_read() {
        let (_dir, files) = setup();
        let p = pending(sha256_hex(b"new"), 1_000);
        install(&files, "old", "new", &p).unwrap();
        let AtStart::RolledBack(rolled) = recover(&files, 1_000).unwrap() else {
            panic!("rolled back")
        };
        assert_eq!(rolled.state, State::RolledBack);
        assert_eq!(std::fs::read_to_string(&files.config).unwrap(), "old");
        assert_eq!(std::fs::read_to_string(files.rejected()).unwrap(), "new");
        // Until its answer went out, every start says so again.
        assert_eq!(recover(&files, 5_000).unwrap(), AtStart::RolledBack(rolled));
        answered(&files).unwrap();
        assert_eq!(recover(&files, 5_000).unwrap(), AtStart::Nothing);
    }

    #[test]
    fn a_start_within_the_window_waits_at_most_confirm_s_more() {
        let (_dir, files) = setup();
        // A clock set back at boot: the deadline looks a day away.
        let p = pending(sha256_hex(b"new"), 86_400_000);
        install(&files, "old", "new", &p).unwrap();
        let AtStart::Waiting(w) = recover(&files, 10_000).unwrap() else {
            panic!("waiting")
        };
        assert_eq!(w.deadline_ms, 310_000);
        assert_eq!(read_pending(&files).unwrap(), Some(w));
    }

    #[test]
    fn a_record_of_a_file_that_never_got_into_place_is_dropped() {
        let (_dir, files) = setup();
        // The agent stopped between the record and the rename.
        write_pending(&files, &pending(sha256_hex(b"new"), 1_000)).unwrap();
        assert_eq!(recover(&files, 5_000).unwrap(), AtStart::Nothing);
        assert_eq!(std::fs::read_to_string(&files.config).unwrap(), "old");
        assert_eq!(read_pending(&files).unwrap(), None);
    }
}
