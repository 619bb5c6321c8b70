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
    /// No space left, or the file system became read-only: fixes wait in the memory ring.
    #[error("buffer {path} cannot be written ({detail}); {held} fixes held in memory")]
    DiskFull {
        path: PathBuf,
        detail: String,
        held: usize,
    },
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
            BufferError::Io { .. } => "BUFFER_IO",
            BufferError::Schema { .. } => "BUFFER_SCHEMA",
            BufferError::Payload { .. } => "BUFFER_PAYLOAD",
        }
    }

    fn class(&self) -> ErrorClass {
        match self {
            BufferError::Open { .. } | BufferError::File { .. } => ErrorClass::Transient,
            BufferError::DiskFull { .. } | BufferError::Io { .. } => ErrorClass::Transient,
            BufferError::Corrupt { .. } => ErrorClass::Critical,
            BufferError::Schema { .. } | BufferError::Payload { .. } => ErrorClass::Permanent,
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
        Failure::Disk => BufferError::DiskFull {
            path: path.to_path_buf(),
            detail: format!("{op}: {e}"),
            held: 0,
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
