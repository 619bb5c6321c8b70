//! The buffer's one error enum: every way the SQLite store can fail, with the file it was
//! working on, a stable code and an [`ErrorClass`]. Disk-full and I/O failures are also folded
//! into the buffer's health (the fixes go to the memory ring); this type is what the caller
//! sees when an operation could not be done at all.

use crate::error::{Classified, ErrorClass};
use rusqlite::ErrorCode;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// The file (or its directory) could not be opened or created.
    #[error("cannot open buffer {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The directory of the buffer could not be created, or a corrupt file moved aside.
    #[error("file system error on {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is damaged while the agent runs (found at startup it is moved aside instead).
    #[error("buffer {path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    /// No space left, or the file system became read-only: fixes wait in the memory ring
    /// (how many, `/health` shows as `in_memory`; a count here would go stale).
    #[error("buffer {path} cannot be written ({detail}); fixes are held in memory")]
    DiskFull { path: PathBuf, detail: String },
    /// `fdatasync` of the WAL failed: what was committed since the last sync may not be on
    /// the disk; fixes are held in memory until a retry syncs.
    #[error("buffer {path}: sync failed: {source}")]
    Sync {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The path no longer names the open file (deleted or replaced) and it could not be
    /// written back there: the fixes are safe only while the agent runs.
    #[error("buffer {path} is no longer at its path: {detail}")]
    FileGone { path: PathBuf, detail: String },
    /// Any other SQLite failure while reading or writing.
    #[error("buffer {path}: {op} failed: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// The file was written by a newer agent (or is ours but inconsistent): not touched.
    #[error("buffer {path}: schema problem: {detail}")]
    Schema { path: PathBuf, detail: String },
    /// Fixes still held in memory when the agent had to stop: the disk kept failing with
    /// `cause` (the code of that failure, which this error carries as its own).
    #[error("buffer {path}: fixes held in memory could not be written: {detail}")]
    Held {
        path: PathBuf,
        cause: &'static str,
        detail: String,
    },
    /// The crash journal cannot be opened, written or emptied (no space, a read-only file
    /// system, an I/O error): each fix is committed on its own (the same guarantees, more
    /// wear) and the journal is tried again every `disk_retry_s`.
    #[error("crash journal {path}: {op} failed: {source}")]
    Journal {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The crash journal's path names something that is not a plain file of the agent's own
    /// (a symbolic link, a directory, a device, a FIFO, a file with other names): it is
    /// neither opened nor written, so nobody's file is ever zeroed through it.
    #[error("crash journal {path} refused: {detail}")]
    JournalRefused { path: PathBuf, detail: String },
    /// A dead letter's stored payload could not be read back into a fix.
    #[error("buffer {path}: dead letter {seq} has an unreadable payload: {detail}")]
    Payload {
        path: PathBuf,
        seq: u64,
        detail: String,
    },
}

impl Classified for BufferError {
    fn code(&self) -> &'static str {
        match self {
            BufferError::Open { .. } | BufferError::File { .. } => "BUFFER_OPEN",
            BufferError::Corrupt { .. } => "BUFFER_CORRUPT",
            BufferError::DiskFull { .. } => "BUFFER_DISK_FULL",
            BufferError::Io { .. } | BufferError::Sync { .. } => "BUFFER_IO",
            BufferError::FileGone { .. } => "BUFFER_FILE_GONE",
            BufferError::Schema { .. } => "BUFFER_SCHEMA",
            BufferError::Payload { .. } => "BUFFER_PAYLOAD",
            BufferError::Held { cause, .. } => cause,
            BufferError::Journal { .. } => "BUFFER_JOURNAL",
            BufferError::JournalRefused { .. } => "BUFFER_JOURNAL_REFUSED",
        }
    }

    fn class(&self) -> ErrorClass {
        match self {
            BufferError::Open { .. } | BufferError::File { .. } => ErrorClass::Transient,
            BufferError::DiskFull { .. } | BufferError::Io { .. } | BufferError::Sync { .. } => {
                ErrorClass::Transient
            }
            BufferError::Corrupt { .. } | BufferError::FileGone { .. } => ErrorClass::Critical,
            BufferError::Schema { .. } | BufferError::Payload { .. } => ErrorClass::Permanent,
            BufferError::Held { .. } | BufferError::Journal { .. } => ErrorClass::Transient,
            BufferError::JournalRefused { .. } => ErrorClass::Permanent,
        }
    }
}

/// How a failed SQLite call is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No space, read-only file system, or an I/O error of the device: keep fixes in memory
    /// and retry the disk later.
    Disk,
    /// The file's content is damaged.
    Corrupt,
    /// Anything else (busy, misuse, ...).
    Other,
}

pub(crate) fn failure_of(e: &rusqlite::Error) -> Failure {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull | ErrorCode::ReadOnly | ErrorCode::SystemIoFailure) => {
            Failure::Disk
        }
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Failure::Corrupt,
        _ => Failure::Other,
    }
}

/// Maps a SQLite failure of operation `op` on `path` to the variant its kind calls for.
pub(crate) fn classify(
    path: &std::path::Path,
    op: &'static str,
    e: rusqlite::Error,
) -> BufferError {
    match failure_of(&e) {
        // The device failed (EIO): the same handling as a full disk, its own code.
        Failure::Disk if e.sqlite_error_code() == Some(ErrorCode::SystemIoFailure) => {
            BufferError::Io {
                path: path.to_path_buf(),
                op,
                source: e,
            }
        }
        Failure::Disk => BufferError::DiskFull {
            path: path.to_path_buf(),
            detail: format!("{op}: {e}"),
        },
        Failure::Corrupt => BufferError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("{op}: {e}"),
        },
        Failure::Other => BufferError::Io {
            path: path.to_path_buf(),
            op,
            source: e,
        },
    }
}
