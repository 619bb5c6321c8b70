//! One agent per state: an exclusive lock on `<buffer path>.lock`, beside the buffer and its
//! crash journal, held for the whole run.
//!
//! Two agents on one configuration would share the buffer and the journal (the same seqs
//! given to two fixes) and displace each other's MQTT session, so `run` takes the lock
//! before anything starts, and a second agent exits at once ([`LockError::Held`], exit 75).
//! The lock is the kernel's (`flock`), not the file's presence: the kernel releases it when
//! the holder's last descriptor closes, so a killed agent (SIGKILL, OOM, power) never leaves
//! a stale lock, and the file itself stays (removing a lock file invites two holders). It
//! holds the holder's pid as text, for the second agent's message. The offline commands
//! (`buffer stats`, `dead-letters`, `requeue`) never take it: SQLite's own locking makes
//! them safe beside the daemon.
//!
//! A lock file that cannot be made (a read-only or missing state directory) does not keep
//! the agent from running: it runs without the lock, says so (`AGENT_LOCK_UNAVAILABLE`) and
//! tries again at each heartbeat; so it does when the file is deleted or replaced under it
//! (`rm buffer.db*`). Never follows a symbolic link.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Classified, ErrorClass};

/// The lock file of the buffer at `buffer`.
pub fn lock_path(buffer: &Path) -> PathBuf {
    let mut name = buffer.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Why the state lock is not held.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it: another agent runs on this state.
    #[error(
        "another gps-agent{holder} runs on this buffer (it holds {path}); one agent per buffer"
    )]
    Held { path: PathBuf, holder: String },
    /// The lock file cannot be opened or made.
    #[error("cannot open the state lock {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
}

impl Classified for LockError {
    fn code(&self) -> &'static str {
        match self {
            LockError::Held { .. } => "AGENT_STATE_LOCKED",
            LockError::Open { .. } => "AGENT_LOCK_UNAVAILABLE",
        }
    }

    fn class(&self) -> ErrorClass {
        match self {
            // Nothing this agent can do: the other one must stop.
            LockError::Held { .. } => ErrorClass::Permanent,
            // The directory may become writable (a late mount): tried again.
            LockError::Open { .. } => ErrorClass::Transient,
        }
    }
}

/// The lock, held while this value lives.
#[derive(Debug)]
pub struct StateLock {
    path: PathBuf,
    /// The locked file and its identity (device, inode), while held.
    held: Option<(File, (u64, u64))>,
}

impl StateLock {
    /// Takes the lock of the buffer at `buffer`. `Err(Held)` when another process has it;
    /// a lock file that cannot be made gives a lock not held, with the error that says why.
    pub fn acquire(buffer: &Path) -> Result<(StateLock, Option<LockError>), LockError> {
        let mut lock = StateLock {
            path: lock_path(buffer),
            held: None,
        };
        match lock.take() {
            Ok(()) => Ok((lock, None)),
            Err(e @ LockError::Held { .. }) => Err(e),
            Err(e) => Ok((lock, Some(e))),
        }
    }

    /// Whether the lock is held now.
    pub fn is_held(&self) -> bool {
        self.held.is_some()
    }

    /// At each heartbeat: still the file at the path, and held? If it was deleted or
    /// replaced, or could not be made before, the lock is taken again; the error says why
    /// it is not held.
    pub fn refresh(&mut self) -> Result<(), LockError> {
        let current = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        match &self.held {
            Some((_, id)) if current == Some(*id) => Ok(()),
            _ => {
                self.held = None;
                self.take()
            }
        }
    }

    fn take(&mut self) -> Result<(), LockError> {
        let open_err = |source| LockError::Open {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(open_err)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.path)
            .map_err(open_err)?;
        // SAFETY: flock on a descriptor this function owns; no pointers.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let source = io::Error::last_os_error();
            if source.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(LockError::Held {
                    path: self.path.clone(),
                    holder: holder(&mut file),
                });
            }
            return Err(open_err(source));
        }
        // The pid is for people; the lock is the kernel's, so a failed write changes nothing.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        let meta = file.metadata().map_err(open_err)?;
        self.held = Some((file, (meta.dev(), meta.ino())));
        Ok(())
    }
}

/// ` (pid N)` as the holder wrote it in the file, or nothing if it did not.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.take(32).read_to_string(&mut text);
    match text.trim().parse::<u32>() {
        Ok(pid) => format!(" (pid {pid})"),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_buffer_is_refused_naming_the_holder_until_the_first_goes() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = dir.path().join("state").join("buffer.db");
        let (first, error) = StateLock::acquire(&buffer).unwrap();
        assert!(first.is_held() && error.is_none());
        // flock locks belong to the open file: a second open in this process is refused
        // as another process's would be.
        let refused = StateLock::acquire(&buffer).unwrap_err();
        assert_eq!(refused.code(), "AGENT_STATE_LOCKED");
        assert_eq!(
            refused.to_string(),
            format!(
                "another gps-agent (pid {}) runs on this buffer (it holds {}); one agent per buffer",
                std::process::id(),
                lock_path(&buffer).display()
            )
        );
        drop(first);
        let (again, _) = StateLock::acquire(&buffer).unwrap();
        assert!(again.is_held());
    }

    #[test]
    fn a_lock_file_deleted_under_the_holder_is_made_and_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = dir.path().join("buffer.db");
        let (mut lock, _) = StateLock::acquire(&buffer).unwrap();
        std::fs::remove_file(lock_path(&buffer)).unwrap();
        // A newcomer could now lock a new file at the path: the holder's refresh does first.
        lock.refresh().unwrap();
        assert!(lock.is_held());
        assert_eq!(
            StateLock::acquire(&buffer).unwrap_err().code(),
            "AGENT_STATE_LOCKED"
        );
    }

    #[test]
    fn a_symlinked_lock_file_is_not_followed_and_the_agent_runs_without_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = dir.path().join("buffer.db");
        let target = dir.path().join("someone-elses-file");
        std::fs::write(&target, "precious").unwrap();
        std::os::unix::fs::symlink(&target, lock_path(&buffer)).unwrap();
        let (lock, error) = StateLock::acquire(&buffer).unwrap();
        assert!(!lock.is_held());
        assert_eq!(error.map(|e| e.code()), Some("AGENT_LOCK_UNAVAILABLE"));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    }
}
