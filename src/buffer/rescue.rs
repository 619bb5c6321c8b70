//! The buffer file changed under the running agent: what it does about it.
//!
//! - **Deleted or replaced** (`rm buffer.db*`, a cleanup job, a file moved over it): the
//!   agent still holds the old inode open and it is intact, but it vanishes when the agent
//!   stops. [`Buffer::restore`] copies the open database (`VACUUM INTO`, through the agent's
//!   own connection, so it sees exactly what was committed) to a temporary name, syncs it,
//!   moves whatever now sits at the path aside (`<path>.displaced-<utc>`, never deleted),
//!   links the copy into place and continues on it: same stream, same seqs, same fixes in
//!   flight. `BUFFER_FILE_GONE`, degraded until restart (someone deleted the agent's state);
//!   unhealthy while the copy cannot be made (then retried every `disk_retry_s`, and once
//!   more at shutdown).
//! - **Truncated or damaged** (`truncate -s 0`, a main file that shrank, `SQLITE_CORRUPT`
//!   while running): [`Buffer::quarantine`] moves the set aside (`<path>.corrupt-<utc>`), starts
//!   a new stream at the path and writes into it, oldest first, what can still be read: rows
//!   SQLite still has in its page cache or the WAL (a damaged range is skipped over), the
//!   fixes committed since the last sync (kept in memory), then the memory ring. They get new
//!   seqs in the new stream; fixes acknowledged are left out; what cannot be read is counted
//!   as lost. `BUFFER_CORRUPT`, unhealthy until restart. Dead letters stay in the moved file
//!   (`gps-agent buffer dead-letters --db <moved file>`).
//!
//! The old connection is closed without a checkpoint (`SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE`):
//! SQLite would otherwise checkpoint and then delete the WAL and `-shm` *by name*, which are
//! the new file's by then.

use super::schema::{self, Unusable};
use super::{adopt, files, row_to_fix, Buffer, BufferError, Opened, StoredFix, FIX_COLUMNS};
use crate::error::{Classified, ErrorClass};
use crate::status::Status;
use rusqlite::config::DbConfig;
use rusqlite::Connection;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tracing::{error, warn};

/// Most attempts to skip over damaged ranges while salvaging (each doubles the jump).
const SALVAGE_SEEKS: u32 = 10_000;

/// Closes a connection whose files now belong to someone else's path, touching nothing by
/// name.
fn close_quietly(conn: Connection) {
    let _ = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
    if let Err((conn, e)) = conn.close() {
        warn!(component = "buffer", error = %e, "closing the old buffer connection failed");
        drop(conn);
    }
}

fn open_new(path: &Path) -> Result<Opened, BufferError> {
    let conn = match schema::open_checked(path) {
        Ok(conn) => conn,
        Err(Unusable::Fatal(e)) => return Err(e),
        Err(Unusable::Corrupt(detail)) => {
            return Err(BufferError::Corrupt {
                path: path.to_path_buf(),
                detail,
            })
        }
    };
    adopt(conn, path)
}

impl Buffer {
    /// The path no longer names the open file (`which`: "db", "wal" or "shm"): write the open
    /// database back to the path and continue there.
    pub(super) fn restore(&mut self, which: &'static str, now: Instant) {
        if self.faults.rescuing() {
            return;
        }
        let depth = self.depth();
        if !self.faults.restore_pending() {
            error!(component = "buffer", code = "BUFFER_FILE_GONE", class = "critical",
                path = %self.path.display(), file = which, depth,
                "the buffer file was deleted or replaced under the running agent; writing it back");
        }
        match self.write_back() {
            Ok(displaced) => {
                self.faults.restored();
                self.faults.rescues_mut().restored += 1;
                self.faults.raise_alarm(Status::Degraded);
                let moved = displaced
                    .map(|p| format!("; what was at the path was moved to {}", p.display()))
                    .unwrap_or_default();
                let message = format!(
                    "the buffer's {which} file was deleted or replaced while the agent ran; \
                     {depth} pending fixes written back to {}{moved}",
                    self.path.display()
                );
                warn!(component = "buffer", code = "BUFFER_FILE_GONE", path = %self.path.display(),
                    depth, stream = %self.stream, "buffer file written back to its path; nothing lost");
                self.faults
                    .set_error("BUFFER_FILE_GONE", ErrorClass::Critical, message);
            }
            Err(e) => {
                self.faults.restore_failed(now);
                let message = format!(
                    "the buffer's {which} file was deleted or replaced while the agent ran and \
                     cannot be written back ({e}); {depth} fixes are safe only until the agent stops"
                );
                error!(component = "buffer", code = "BUFFER_FILE_GONE", cause = e.code(), error = %e,
                    depth, "buffer file cannot be written back to its path; retrying");
                self.faults
                    .set_error("BUFFER_FILE_GONE", ErrorClass::Critical, message);
            }
        }
    }

    /// Copies the open database to the path and switches to the copy. Returns where what
    /// sat at the path went.
    fn write_back(&mut self) -> Result<Option<PathBuf>, BufferError> {
        let path = self.path.clone();
        let file_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| BufferError::File { path: p, source }
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(file_err(dir))?;
        let tmp = schema::temp_name(&path, "restore");
        let tmp_str = tmp.to_str().ok_or_else(|| BufferError::File {
            path: tmp.clone(),
            source: std::io::Error::other("the buffer path is not UTF-8"),
        })?;
        // Our own temporary names, left by an earlier attempt that failed half-way.
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let _ = std::fs::remove_file(files::with_suffix(&tmp, suffix));
        }
        self.conn
            .execute("VACUUM INTO ?1", [tmp_str])
            .map_err(|e| super::classify(&path, "copy back", e))?;
        files::sync_file(&tmp).map_err(file_err(&tmp))?;
        let displaced = schema::move_aside_as(&path, "displaced")?;
        let linked = schema::link_into_place(&tmp, &path).map_err(file_err(&path));
        let _ = std::fs::remove_file(&tmp);
        linked?;
        files::sync_dir(&path).map_err(file_err(&path))?;
        let opened = open_new(&path)?;
        if opened.stream != self.stream {
            return Err(BufferError::Schema {
                path,
                detail: format!("the copy has stream {}, not {}", opened.stream, self.stream),
            });
        }
        let old = std::mem::replace(&mut self.conn, opened.conn);
        close_quietly(old);
        self.watch = opened.watch;
        self.checkpoints.follow(opened.wal_frames);
        self.data_version = opened.data_version;
        // The copy holds exactly what was committed and is synced: the counters stand.
        self.schedule.synced(self.ledger.committed().last_seq);
        self.attach_history();
        Ok(displaced)
    }

    /// The file is damaged or was truncated under the agent: move it aside, start a new
    /// stream and write into it what can still be read.
    pub(super) fn quarantine(&mut self, reason: String, now: Instant) {
        self.rollback_to_ring();
        if !self.faults.begin_rescue() {
            // The new file failed too: hold everything in memory and try again later.
            let e = BufferError::Corrupt {
                path: self.path.clone(),
                detail: reason.clone(),
            };
            return self.quarantine_failed(reason, &e, now);
        }
        self.quarantine_inner(reason, now);
        self.faults.end_rescue();
    }

    fn quarantine_inner(&mut self, reason: String, now: Instant) {
        let known = self.depth();
        error!(component = "buffer", code = "BUFFER_CORRUPT", class = "critical",
            path = %self.path.display(), reason = %reason, depth = known,
            "buffer file damaged under the running agent; moving it aside and salvaging into a new stream");
        let moved = match schema::move_aside_as(&self.path, "corrupt") {
            Ok(moved) => moved,
            Err(e) => return self.quarantine_failed(reason, &e, now),
        };
        let opened = match files::sync_dir(&self.path)
            .map_err(|source| BufferError::File {
                path: self.path.clone(),
                source,
            })
            .and_then(|()| open_new(&self.path))
        {
            Ok(opened) => opened,
            Err(e) => return self.quarantine_failed(reason, &e, now),
        };
        // The new file from here; the old connection only for the salvage.
        let old = std::mem::replace(&mut self.conn, opened.conn);
        let old_stream = std::mem::replace(&mut self.stream, opened.stream);
        self.journal_new_stream();
        let old_synced = self.schedule.synced_seq();
        let unsynced = self.schedule.take_unsynced();
        // Fixes the uplink still has in flight: their acks must not hit the new stream.
        let acked: BTreeSet<u64> = self.deliveries.new_stream(now);
        let counters = opened.counters;
        self.ledger.reset(counters);
        self.schedule.synced(counters.last_seq);
        self.watch = opened.watch;
        self.checkpoints.follow(opened.wal_frames);
        self.data_version = opened.data_version;
        self.capacity.new_file();
        self.faults.quarantined();
        // The history stays in the file moved aside; the new one keeps what comes now.
        self.attach_history();

        let ring_before = self.faults.held().len() as u64;
        let salvaged = self.salvage(&old, old_synced, &acked, &unsynced, now);
        close_quietly(old);
        let unreadable = known.saturating_sub(ring_before + salvaged);
        self.faults.count_lost(unreadable);
        self.faults.rescues_mut().quarantined += 1;
        self.faults.raise_alarm(Status::Unhealthy);
        // The ring (fixes that never had a seq, and the salvage if the new file would not
        // take it) goes after them.
        if self.faults.writable() {
            if self.faults.held().is_empty() {
                self.sync_or_hold(now);
            } else {
                self.retry_disk(now, true);
            }
        }
        let moved = moved.unwrap_or_default();
        let message = format!(
            "buffer file damaged while running ({reason}); moved aside to {}; new stream {} \
             (was {old_stream}); {salvaged} fixes salvaged into it, {unreadable} unreadable \
             and lost",
            moved.display(),
            self.stream
        );
        error!(component = "buffer", code = "BUFFER_CORRUPT", moved_to = %moved.display(),
            stream = %self.stream, salvaged, lost = unreadable, in_memory = self.faults.held().len(),
            "damaged buffer file moved aside; a new stream holds what could be read");
        self.faults
            .set_error("BUFFER_CORRUPT", ErrorClass::Critical, message);
    }

    fn quarantine_failed(&mut self, reason: String, e: &BufferError, now: Instant) {
        error!(component = "buffer", code = "BUFFER_CORRUPT", cause = e.code(), error = %e,
            "the damaged buffer file cannot be moved aside or replaced; fixes are held in memory");
        self.faults.set_error(
            "BUFFER_CORRUPT",
            ErrorClass::Critical,
            format!("buffer file damaged while running ({reason}) and cannot be replaced: {e}"),
        );
        self.faults.quarantine_failed(reason, now);
    }

    /// Writes what the old connection can still read (synced rows, oldest first, skipping
    /// damaged ranges) and then the unsynced fixes kept in memory into the new file, in one
    /// transaction. Returns how many were written (or moved to the ring, if the new file
    /// refused them).
    fn salvage(
        &mut self,
        old: &Connection,
        old_synced: u64,
        acked: &BTreeSet<u64>,
        unsynced: &[StoredFix],
        now: Instant,
    ) -> u64 {
        let mut salvaged = 0u64;
        let result = (|| -> rusqlite::Result<()> {
            self.begin(now)?;
            let mut keep = |buffer: &mut Buffer, seq: u64, fix: &crate::fix::Fix| {
                if acked.contains(&seq) {
                    return Ok(());
                }
                if let Some(tx) = buffer.tx.as_mut() {
                    tx.fixes.push(*fix);
                }
                buffer.insert(fix)?;
                salvaged += 1;
                Ok::<(), rusqlite::Error>(())
            };
            let sql = format!(
                "SELECT seq, {FIX_COLUMNS} FROM fixes WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq"
            );
            let upto = old_synced.min(i64::MAX as u64) as i64;
            let (mut next, mut jump, mut seeks) = (1u64, 1u64, 0u32);
            'scan: while next <= old_synced && seeks < SALVAGE_SEEKS {
                seeks += 1;
                let Ok(mut stmt) = old.prepare(&sql) else {
                    // Not even the schema reads: nothing more to get from the file.
                    break;
                };
                let Ok(mut rows) = stmt.query([next.min(i64::MAX as u64) as i64, upto]) else {
                    next = next.saturating_add(jump);
                    jump = jump.saturating_mul(2);
                    continue;
                };
                loop {
                    match rows.next() {
                        Ok(Some(row)) => {
                            let Ok(seq) = row.get::<_, i64>(0) else {
                                continue;
                            };
                            let seq = seq.max(0) as u64;
                            if let Ok((_, fix)) = row_to_fix(row) {
                                keep(self, seq, &fix)?;
                            }
                            next = seq.saturating_add(1);
                            jump = 1;
                        }
                        Ok(None) => break 'scan,
                        // A page that does not read: skip ahead, further each time.
                        Err(_) => {
                            next = next.saturating_add(jump);
                            jump = jump.saturating_mul(2);
                            continue 'scan;
                        }
                    }
                }
            }
            // Committed since the last sync: from memory, whole, in order.
            for s in unsynced.iter().filter(|s| s.seq > old_synced) {
                keep(self, s.seq, &s.fix)?;
            }
            self.commit_open(now)
        })();
        if let Err(e) = result {
            // The new file would not take them: they wait in the ring for the disk.
            self.fail(e, "salvage", now);
        }
        salvaged
    }
}
