//! The buffer's three files as the file system sees them, beside SQLite's view: whether the
//! path still names the file the agent holds open, whether the main file shrank under it,
//! and the syncs SQLite does not do by itself under `synchronous = NORMAL`.
//!
//! In: the buffer's path. Out: a [`Verdict`] after each look, and `fdatasync`s of the WAL,
//! the main file and the directory. It never writes, renames or deletes anything.
//!
//! Why a look of our own: an unlinked file stays readable and writable through the
//! descriptors that hold it, so SQLite does not notice `rm buffer.db` and would go on storing
//! fixes in a file that vanishes at exit; and a file truncated to zero bytes under it reads
//! as zeros only once a page is not in SQLite's cache any more. One `stat` of the main file
//! per commit catches both: another inode (or none) at the path, or a size smaller than
//! seen before (the main file never shrinks: no `VACUUM`, no `auto_vacuum`, and a checkpoint
//! only grows it). After each append the cheaper half of it: an `fstat` of an `O_PATH`
//! descriptor of the main file (no path lookup; unlinked, by `rm` or a file renamed over it,
//! or shorter). The path itself, the `-wal` and the `-shm` are compared at each sync and
//! once a second.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A file's identity: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub(crate) fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// What a look at the paths found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Fine,
    /// The path (`which` of the three) no longer names the open file: deleted, renamed or
    /// replaced.
    Gone {
        which: &'static str,
    },
    /// The main file is shorter than it was: truncated under the agent.
    Shrunk {
        was: u64,
        now: u64,
    },
}

/// The open files' identities and the handle the WAL is synced through.
#[derive(Debug)]
pub(crate) struct Watch {
    db: FileId,
    /// The main file, opened `O_PATH`: only for `fstat`. Closing such a descriptor does not
    /// drop SQLite's POSIX locks on the file, as closing a readable one would.
    db_path_fd: File,
    /// Largest size of the main file seen.
    db_len: u64,
    /// Size of the WAL at the last look at all three.
    wal_len: u64,
    /// Our own descriptor of the WAL SQLite writes: `fdatasync` on it flushes the same inode.
    wal: File,
    wal_id: FileId,
    shm: Option<FileId>,
}

pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_os_string();
    p.push(suffix);
    PathBuf::from(p)
}

impl Watch {
    /// Takes the identities of the files SQLite just opened at `path` (the WAL exists once a
    /// WAL-mode file has been read).
    pub(crate) fn new(path: &Path) -> io::Result<Watch> {
        let db_path_fd = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(path)?;
        let meta = db_path_fd.metadata()?;
        let wal = File::open(with_suffix(path, "-wal"))?;
        let wal_meta = wal.metadata()?;
        let wal_id = FileId::of(&wal_meta);
        let shm = std::fs::metadata(with_suffix(path, "-shm"))
            .ok()
            .map(|m| FileId::of(&m));
        Ok(Watch {
            db: FileId::of(&meta),
            db_path_fd,
            db_len: meta.len(),
            wal_len: wal_meta.len(),
            wal,
            wal_id,
            shm,
        })
    }

    /// The main file: still at `path`, and not shorter than before. One `stat`.
    pub(crate) fn check_db(&mut self, path: &Path) -> Verdict {
        match std::fs::metadata(path) {
            Ok(meta) if FileId::of(&meta) == self.db => {
                if meta.len() < self.db_len {
                    return Verdict::Shrunk {
                        was: self.db_len,
                        now: meta.len(),
                    };
                }
                self.db_len = meta.len();
                Verdict::Fine
            }
            Ok(_) => Verdict::Gone { which: "db" },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Verdict::Gone { which: "db" },
            // Cannot look (permissions changed, I/O error): the writes will tell.
            Err(_) => Verdict::Fine,
        }
    }

    /// The open main file, without a path lookup: unlinked (deleted, or replaced by a file
    /// renamed over it) or shorter than before. A file renamed away is the path's check.
    pub(crate) fn check_open(&mut self) -> Verdict {
        match self.db_path_fd.metadata() {
            Ok(meta) if meta.nlink() == 0 => Verdict::Gone { which: "db" },
            Ok(meta) if meta.len() < self.db_len => Verdict::Shrunk {
                was: self.db_len,
                now: meta.len(),
            },
            Ok(meta) => {
                self.db_len = meta.len();
                Verdict::Fine
            }
            // Cannot look: the path's check and the writes will tell.
            Err(_) => Verdict::Fine,
        }
    }

    /// All three files.
    pub(crate) fn check_all(&mut self, path: &Path) -> Verdict {
        let verdict = self.check_db(path);
        if verdict != Verdict::Fine {
            return verdict;
        }
        // The WAL's size when it is ours; `u64::MAX` when it cannot be looked at (the writes
        // will tell).
        let look = |suffix: &str, id: FileId| match std::fs::metadata(with_suffix(path, suffix)) {
            Ok(meta) => (FileId::of(&meta) == id).then_some(meta.len()),
            Err(e) if e.kind() != io::ErrorKind::NotFound => Some(u64::MAX),
            Err(_) => None,
        };
        let same = |suffix: &str, id: FileId| look(suffix, id).is_some();
        match look("-wal", self.wal_id) {
            Some(len) => self.wal_len = len,
            None => return Verdict::Gone { which: "wal" },
        }
        if let Some(shm) = self.shm {
            if !same("-shm", shm) {
                return Verdict::Gone { which: "shm" };
            }
        }
        Verdict::Fine
    }

    /// The main file and the WAL as last seen: an upper bound of the bytes the database's
    /// pages take (a page beyond the main file's end lives in a WAL frame of its size or
    /// more).
    pub(crate) fn bytes_seen(&self) -> u64 {
        self.db_len.saturating_add(self.wal_len)
    }

    /// Makes every frame SQLite has written to the WAL durable.
    pub(crate) fn sync_wal(&self) -> io::Result<()> {
        self.wal.sync_data()
    }
}

/// `fsync` of a file by path (the main file after it was created or copied).
pub(crate) fn sync_file(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// `fsync` of the directory holding `path`: makes a created, renamed or linked name durable.
pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}
