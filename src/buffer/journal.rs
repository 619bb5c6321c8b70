//! The crash journal: each appended fix as one `write` to an append-only file beside the
//! buffer (`<path>-fixlog`), so that a fix survives the process (SIGKILL, OOM, panic) the
//! moment it is appended, while SQLite takes the fixes of a whole sync interval in one
//! transaction (see the tiers of durability in [`super`]).
//!
//! In: `(seq, fix)` as the buffer appends them. Out: at open, the records a crash left
//! behind, for the buffer to insert. Emptied after each sync, when SQLite holds everything
//! it held durably. Never synced itself: what a power cut may take from it is what it may take
//! from SQLite's unsynced WAL too. So a record may be torn, zeroed or stale after a cut;
//! each carries its stream's tag, its seq and a checksum, and reading goes on past a record
//! that does not check out (a journal truncated from outside while the agent ran is written
//! on behind a hole of zeros). A checksum only says a record is whole, not that it holds a
//! fix: anyone who can write the file can compute it, so the buffer checks each replayed fix
//! as the validator checks a live one (`crate::validate::ranges::stored`).
//!
//! The file is the agent's own: it is never opened through a symbolic link, and nothing but
//! a regular file with no other name is opened or written (see [`open_file`]).
//!
//! Record layout (88 bytes, little-endian): magic `GJ`, version 1, presence bits; the
//! stream's tag (FNV-1a of the stream id); seq; `time_ms`; `lat`; `lon`; `alt_m`,
//! `speed_mps`, `course_deg`, `hdop` (f64, 0 when absent); `sats`, mode, event, a pad byte;
//! FNV-1a 64 of the 80 bytes before it. A record of seq 0 is a fix for the local history alone
//! (`history.rs`); the presence bit [`ALSO_HISTORY`] on a queued fix's record says it is the
//! history's too (one record instead of two for a fix queued in the epoch it was accepted).
//! An agent before the history reads neither: seq 0 is never above its last seq, and it
//! ignores a presence bit it does not know.

use super::error::BufferError;
use super::files::FileId;
use crate::fix::{Event, Fix, FixMode};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One record's size on disk.
pub(crate) const RECORD_LEN: usize = 88;
const BODY_LEN: usize = 80;
const MAGIC: [u8; 2] = *b"GJ";
const VERSION: u8 = 1;
/// Most records the journal holds (and reads back at open): room for `commit_max` fixes
/// between two syncs is asked for, at most this many.
const MAX_RECORDS: usize = 1 << 16;
/// Zeros for emptying the journal, a piece at a time.
static ZEROS: [u8; 4096] = [0; 4096];

const ALT: u8 = 1;
const SPEED: u8 = 2;
const COURSE: u8 = 4;
const HDOP: u8 = 8;
const SATS: u8 = 16;
/// The queued fix is the local history's too.
const ALSO_HISTORY: u8 = 32;

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The tag of a stream id, written into each record.
pub(crate) fn stream_tag(stream: &str) -> u64 {
    fnv1a(stream.as_bytes())
}

/// The journal's path beside the buffer's.
pub(crate) fn path_of(db: &Path) -> PathBuf {
    super::files::with_suffix(db, "-fixlog")
}

fn put(buf: &mut [u8; RECORD_LEN], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

fn get8(buf: &[u8], at: usize) -> [u8; 8] {
    let mut out = [0u8; 8];
    if let Some(src) = buf.get(at..at + 8) {
        out.copy_from_slice(src);
    }
    out
}

/// One record for `(seq, fix)` of the stream tagged `tag`.
pub(crate) fn encode(tag: u64, seq: u64, fix: &Fix) -> [u8; RECORD_LEN] {
    encode_with(tag, seq, fix, 0)
}

/// [`encode`] with `flags` among the presence bits ([`ALSO_HISTORY`]).
fn encode_with(tag: u64, seq: u64, fix: &Fix, flags: u8) -> [u8; RECORD_LEN] {
    let mut b = [0u8; RECORD_LEN];
    let mut present = flags;
    let mut opt = |v: Option<f64>, bit: u8| {
        v.map_or(0.0, |x| {
            present |= bit;
            x
        })
    };
    let alt = opt(fix.alt_m, ALT);
    let speed = opt(fix.speed_mps, SPEED);
    let course = opt(fix.course_deg, COURSE);
    let hdop = opt(fix.hdop, HDOP);
    if fix.sats.is_some() {
        present |= SATS;
    }
    put(&mut b, 0, &MAGIC);
    put(&mut b, 2, &[VERSION, present]);
    put(&mut b, 4, &tag.to_le_bytes());
    put(&mut b, 12, &seq.to_le_bytes());
    put(&mut b, 20, &fix.time_ms.to_le_bytes());
    for (i, v) in [fix.lat, fix.lon, alt, speed, course, hdop]
        .iter()
        .enumerate()
    {
        put(&mut b, 28 + 8 * i, &v.to_le_bytes());
    }
    put(
        &mut b,
        76,
        &[
            fix.sats.unwrap_or(0),
            fix.mode.as_u8(),
            fix.event.map_or(0, Event::as_u8),
            0,
        ],
    );
    let sum = fnv1a(b.get(..BODY_LEN).unwrap_or(&[]));
    put(&mut b, BODY_LEN, &sum.to_le_bytes());
    b
}

/// A record read back: its stream's tag, its seq and its fix; `None` when it does not check
/// out (torn, zeroed, another format).
pub(crate) fn decode(b: &[u8]) -> Option<Record> {
    let body = b.get(..BODY_LEN)?;
    if b.len() < RECORD_LEN
        || body.get(..2)? != MAGIC
        || *body.get(2)? != VERSION
        || u64::from_le_bytes(get8(b, BODY_LEN)) != fnv1a(body)
    {
        return None;
    }
    let present = *body.get(3)?;
    let f = |i: usize| f64::from_le_bytes(get8(b, 28 + 8 * i));
    let opt = |i: usize, bit: u8| (present & bit != 0).then(|| f(i));
    let fix = Fix {
        time_ms: i64::from_le_bytes(get8(b, 20)),
        lat: f(0),
        lon: f(1),
        alt_m: opt(2, ALT),
        speed_mps: opt(3, SPEED),
        course_deg: opt(4, COURSE),
        hdop: opt(5, HDOP),
        sats: (present & SATS != 0).then(|| body.get(76).copied().unwrap_or(0)),
        mode: FixMode::from_u8(*body.get(77)?)?,
        event: match *body.get(78)? {
            0 => None,
            e => Some(Event::from_u8(e)?),
        },
    };
    Some((
        u64::from_le_bytes(get8(b, 4)),
        u64::from_le_bytes(get8(b, 12)),
        fix,
    ))
}

/// A record read back: its stream's tag, its seq, its fix.
pub(crate) type Record = (u64, u64, Fix);

/// The open journal.
#[derive(Debug)]
pub(crate) struct Journal {
    file: File,
    path: PathBuf,
    tag: u64,
    /// Where the next record goes (positioned writes, not `O_APPEND`, so every write names
    /// its offset).
    end: u64,
    /// The bytes from the start that may hold anything but zeros: what [`Journal::clear`]
    /// zeroes (whatever the file held at open counts, garbage after a power cut too).
    dirty: u64,
    /// The file's allocated length: records beyond it do not fit.
    room: u64,
    /// At open, records before the last good one that did not check out and were read past:
    /// zeroed (the file truncated from outside while the agent ran, then written on behind
    /// the hole), torn or left half-cleared by a power cut.
    skipped: usize,
    /// Records waiting to go out with the next write (history records: see [`stage`]).
    ///
    /// [`stage`]: Journal::stage
    staged: Vec<u8>,
}

impl Journal {
    /// Opens (or creates) the journal beside `db`, with room for `records` records, and
    /// reads what it holds, in order, reading past records that do not check out. The
    /// records stay until [`clear`](Self::clear). Only a regular file with no other name is
    /// opened, never through a symbolic link ([`open_file`]).
    ///
    /// The room is written with zeros at once, so that each record later overwrites blocks
    /// the file already has: no block allocation and no size change per fix, and no
    /// `ENOSPC` halfway through a sync interval.
    pub(crate) fn open(
        db: &Path,
        stream: &str,
        records: usize,
    ) -> Result<(Journal, Vec<Record>), BufferError> {
        let path = path_of(db);
        let mut file = open_file(&path)?;
        let io = |op| {
            let path = path.clone();
            move |source| BufferError::Journal { path, op, source }
        };
        let mut found = Vec::new();
        let mut record = [0u8; RECORD_LEN];
        // Bad slots since the last good record, all bad slots before it, and the slot after
        // it.
        let (mut bad, mut skipped, mut slots, mut end) = (0usize, 0usize, 0usize, 0usize);
        while slots < MAX_RECORDS && read_record(&mut file, &mut record).map_err(io("read"))? {
            slots += 1;
            match decode(&record) {
                Some(r) => {
                    if record.get(3).is_some_and(|p| p & ALSO_HISTORY != 0) {
                        found.push((r.0, 0, r.2));
                    }
                    found.push(r);
                    skipped += std::mem::take(&mut bad);
                    end = slots;
                }
                None => bad += 1,
            }
        }
        let len = file.metadata().map_err(io("look at"))?.len();
        let want = (records.clamp(1, MAX_RECORDS) * RECORD_LEN) as u64;
        if len < want {
            allocate(&file, len, want).map_err(io("allocate"))?;
        }
        let journal = Journal {
            file,
            path,
            tag: stream_tag(stream),
            end: (end * RECORD_LEN) as u64,
            dirty: len,
            room: len.max(want),
            skipped,
            staged: Vec::with_capacity(4 * RECORD_LEN),
        };
        Ok((journal, found))
    }

    /// The stream the next records belong to (after a new stream began).
    pub(crate) fn set_stream(&mut self, stream: &str) {
        self.tag = stream_tag(stream);
    }

    pub(crate) fn tag(&self) -> u64 {
        self.tag
    }

    /// Records read past at open (see the field).
    pub(crate) fn skipped(&self) -> usize {
        self.skipped
    }

    /// One `write` of the record (with those staged before it): in the kernel when this
    /// returns, so it survives the process. A short write is an error (the next open reads
    /// past the torn record).
    pub(crate) fn append(&mut self, seq: u64, fix: &Fix) -> Result<(), BufferError> {
        // The same fix staged for the history just before: one record says both.
        let history = encode(self.tag, 0, fix);
        let flags = if self.staged.ends_with(&history) {
            self.staged.truncate(self.staged.len() - RECORD_LEN);
            ALSO_HISTORY
        } else {
            0
        };
        self.staged
            .extend_from_slice(&encode_with(self.tag, seq, fix, flags));
        self.write_staged()
    }

    /// A history record (seq 0: no seq of the stream), written with the next
    /// [`append`](Self::append) or [`flush`](Self::flush): a fix the history alone keeps
    /// costs no `write` of its own when a queued fix follows it in the same epoch.
    pub(crate) fn stage(&mut self, fix: &Fix) {
        self.staged.extend_from_slice(&encode(self.tag, 0, fix));
    }

    /// Writes what is staged.
    pub(crate) fn flush(&mut self) -> Result<(), BufferError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        self.write_staged()
    }

    fn write_staged(&mut self) -> Result<(), BufferError> {
        let staged = std::mem::take(&mut self.staged);
        let written = self.write_at_end(&staged);
        // The allocation is kept for the next records.
        self.staged = staged;
        self.staged.clear();
        written
    }

    fn write_at_end(&mut self, records: &[u8]) -> Result<(), BufferError> {
        let io = |source| BufferError::Journal {
            path: self.path.clone(),
            op: "write",
            source,
        };
        let len = records.len() as u64;
        if self.end + len > self.room {
            return Err(io(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "the crash journal is full ({} records)",
                    self.room / RECORD_LEN as u64
                ),
            )));
        }
        // A write that fails may still have left part of these bytes: the next clear zeroes
        // them too (so after a failed write the clear always touches the disk, and a disk
        // that refuses writes gives the journal up to a retry, however little it held).
        self.dirty = self.dirty.max(self.end + len);
        let n = self.file.write_at(records, self.end).map_err(io)?;
        if n as u64 != len {
            return Err(io(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write to the crash journal ({n} of {len} bytes)"),
            )));
        }
        self.end += len;
        self.dirty = self.dirty.max(self.end);
        Ok(())
    }

    /// Empties the journal: everything it held is durable in SQLite. Its records are
    /// overwritten with zeros (the blocks stay allocated). Not synced: records a power cut
    /// brings back are older than SQLite's last seq and are skipped at open.
    pub(crate) fn clear(&mut self) -> Result<(), BufferError> {
        let mut at = 0u64;
        while at < self.dirty {
            let n = usize::try_from(self.dirty - at)
                .unwrap_or(ZEROS.len())
                .min(ZEROS.len());
            let written = self
                .file
                .write_at(ZEROS.get(..n).unwrap_or(&ZEROS), at)
                .and_then(|w| match w {
                    0 => Err(io::ErrorKind::WriteZero.into()),
                    w => Ok(w),
                })
                .map_err(|source| BufferError::Journal {
                    path: self.path.clone(),
                    op: "empty",
                    source,
                })?;
            at += written as u64;
        }
        self.dirty = 0;
        self.end = 0;
        // Staged records are of rows the sync made durable.
        self.staged.clear();
        Ok(())
    }

    /// Checks, while it is empty, that the path still names this file with all its room, and
    /// mends what an outsider did: a file deleted is made anew at the path; whatever was put
    /// in its place (a file, a symbolic link) is not ours, so it is moved aside
    /// (`<path>.displaced-<utc>`, never written) and a new file made; a truncated one gets
    /// its room written again. Without this, records would go on into a file no restart
    /// reads, or behind a hole. `Ok(None)` when all was well; `Ok(Some(what))` names what
    /// was mended.
    pub(crate) fn mend(&mut self) -> Result<Option<&'static str>, BufferError> {
        let io = |op| {
            let path = self.path.clone();
            move |source| BufferError::Journal { path, op, source }
        };
        let open = self.file.metadata().map_err(io("look at"))?;
        // Not following a link: a link at the path is not the open file, whatever it names.
        let at_path = match std::fs::symlink_metadata(&self.path) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io("look at")(e)),
        };
        let same = at_path
            .as_ref()
            .is_some_and(|m| FileId::of(m) == FileId::of(&open));
        // The path names the open file only while it has a link: a delete or a rename over
        // it leaves the path naming another file, or none.
        if !same {
            let what = if at_path.is_some() {
                super::schema::move_aside_as(&self.path, "displaced")?;
                "replaced"
            } else {
                "deleted or moved"
            };
            let file = open_file(&self.path)?;
            allocate(&file, 0, self.room).map_err(io("allocate"))?;
            self.file = file;
            self.end = 0;
            self.dirty = 0;
            return Ok(Some(what));
        }
        if open.len() < self.room {
            allocate(&self.file, open.len(), self.room).map_err(io("allocate"))?;
            return Ok(Some("truncated"));
        }
        Ok(None)
    }

    /// Whether it holds anything since the last clear.
    pub(crate) fn is_empty(&self) -> bool {
        self.dirty == 0
    }
}

/// Opens the journal's file at `path` for reading and writing, or creates it when there is
/// none (exclusively: a name that appears meanwhile is not taken over). Only a regular file
/// with no other name is opened: a symbolic link is not followed (`O_NOFOLLOW`; checked
/// before the open too, so a FIFO or a device is never opened at all), and the file opened is
/// checked again by its descriptor. Anything else is refused (`BUFFER_JOURNAL_REFUSED`):
/// whoever put it there owns it, and the journal would zero it.
fn open_file(path: &Path) -> Result<File, BufferError> {
    let refused = |detail: String| BufferError::JournalRefused {
        path: path.to_path_buf(),
        detail,
    };
    let io = |op| {
        move |source| BufferError::Journal {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    match std::fs::symlink_metadata(path) {
        Ok(meta) => plain_file(&meta).map_err(refused)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return options
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(io("create"));
        }
        Err(e) => return Err(io("look at")(e)),
    }
    let file = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refused("a symbolic link".into()),
            _ => io("open")(e),
        })?;
    let meta = file.metadata().map_err(io("look at"))?;
    plain_file(&meta).map_err(refused)?;
    Ok(file)
}

/// `Err` says why `meta` is not a file the journal may write: a symbolic link, anything but
/// a regular file, a file with other names (hard links: one may be someone's file).
fn plain_file(meta: &std::fs::Metadata) -> Result<(), String> {
    let kind = meta.file_type();
    if kind.is_symlink() {
        Err("a symbolic link".into())
    } else if kind.is_dir() {
        Err("a directory".into())
    } else if !kind.is_file() {
        Err("not a regular file (a FIFO, socket or device)".into())
    } else if meta.nlink() > 1 {
        Err(format!("a file with {} names (hard links)", meta.nlink()))
    } else {
        Ok(())
    }
}

/// The crash journal as the buffer uses it: open or not (then each fix is committed on its
/// own, and opening it is tried again every `disk_retry_s`), failed since the last sync or
/// not, and the last seq it holds.
#[derive(Debug)]
pub(crate) struct CrashJournal {
    /// `None` when it could not be opened or emptied.
    journal: Option<Journal>,
    /// A write failed: each fix is committed on its own until a sync empties it.
    failed: bool,
    /// The last seq written to it (of the current stream).
    journaled_seq: u64,
    /// While there is no journal: when opening it is tried again.
    retry_at: Option<Instant>,
    retry_every: Duration,
    /// What the file held when the agent started has been read. A journal given up later
    /// (it could not be emptied after a sync) held only fixes already in the file: opened
    /// again, its records are not handed back.
    read: bool,
}

impl CrashJournal {
    pub(crate) fn new(retry_every: Duration) -> Self {
        CrashJournal {
            journal: None,
            failed: false,
            journaled_seq: 0,
            retry_at: None,
            retry_every,
            read: false,
        }
    }

    /// Opens the journal beside `db` (see [`Journal::open`]) and returns what it holds that
    /// may not be in the file yet (nothing, once the records left at start were read). On an
    /// error there is no journal until a retry at `now + disk_retry_s` opens it.
    pub(crate) fn open(
        &mut self,
        db: &Path,
        stream: &str,
        records: usize,
        now: Instant,
    ) -> Result<Vec<Record>, BufferError> {
        self.journal = None;
        match Journal::open(db, stream, records) {
            Ok((journal, found)) => {
                self.journal = Some(journal);
                self.failed = false;
                self.retry_at = None;
                Ok(if std::mem::replace(&mut self.read, true) {
                    Vec::new()
                } else {
                    found
                })
            }
            Err(e) => {
                self.retry_at = Some(now + self.retry_every);
                Err(e)
            }
        }
    }

    /// The tag of the stream the next records belong to.
    pub(crate) fn tag(&self) -> Option<u64> {
        self.journal.as_ref().map(Journal::tag)
    }

    /// Records read past at open.
    pub(crate) fn skipped(&self) -> usize {
        self.journal.as_ref().map_or(0, Journal::skipped)
    }

    /// Whether it holds anything since the last clear (`true` without a journal).
    pub(crate) fn is_empty(&self) -> bool {
        self.journal.as_ref().is_none_or(Journal::is_empty)
    }

    /// The last seq written to it (of the current stream).
    pub(crate) fn journaled_seq(&self) -> u64 {
        self.journaled_seq
    }

    /// Not what it should be: no journal, or a write failed since the last sync. Every fix
    /// is still safe (committed on its own), at more wear.
    pub(crate) fn degraded(&self) -> bool {
        self.journal.is_none() || self.failed
    }

    /// There is no journal and trying to open it again is due.
    pub(crate) fn retry_due(&self, now: Instant) -> bool {
        self.journal.is_none() && self.retry_at.is_some_and(|at| now >= at)
    }

    /// When opening it is tried again, while there is no journal.
    pub(crate) fn next_retry(&self) -> Option<Instant> {
        self.retry_at.filter(|_| self.journal.is_none())
    }

    /// Writes the appended fix: `Ok(true)` when it is in the journal; `Ok(false)` when there
    /// is none or it failed since the last sync, `Err` when this write failed (either way
    /// the fix's transaction must commit now, and each fix after it until a sync empties
    /// the journal).
    pub(crate) fn append(&mut self, seq: u64, fix: &Fix) -> Result<bool, BufferError> {
        if self.failed {
            return Ok(false);
        }
        let Some(journal) = self.journal.as_mut() else {
            return Ok(false);
        };
        match journal.append(seq, fix) {
            Ok(()) => {
                self.journaled_seq = seq;
                Ok(true)
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// Everything it held is durable in the file: empties it, and makes it whole again if an
    /// outsider deleted, replaced or truncated it (see [`Journal::mend`]); `Ok(Some(what))`
    /// names what was mended. On an error it is given up (it would only grow) until a retry
    /// at `now + disk_retry_s`.
    pub(crate) fn clear(&mut self, now: Instant) -> Result<Option<&'static str>, BufferError> {
        let Some(journal) = self.journal.as_mut() else {
            return Ok(None);
        };
        match journal.clear().and_then(|()| journal.mend()) {
            Ok(mended) => {
                self.failed = false;
                Ok(mended)
            }
            Err(e) => {
                self.journal = None;
                self.retry_at = Some(now + self.retry_every);
                Err(e)
            }
        }
    }

    /// Stages a history record for the next write (see [`Journal::stage`]); `false` when
    /// there is no journal or it failed since the last sync.
    pub(crate) fn stage(&mut self, fix: &Fix) -> bool {
        match self.journal.as_mut() {
            Some(journal) if !self.failed => {
                journal.stage(fix);
                true
            }
            _ => false,
        }
    }

    /// Writes the staged records; `Err` when that failed (the journal is then failed until
    /// the next sync empties it).
    pub(crate) fn flush(&mut self) -> Result<(), BufferError> {
        match self.journal.as_mut() {
            Some(journal) if !self.failed => journal.flush().inspect_err(|_| self.failed = true),
            _ => Ok(()),
        }
    }

    /// A new stream began (a damaged file was replaced): the next records are its.
    pub(crate) fn new_stream(&mut self, stream: &str) {
        self.journaled_seq = 0;
        if let Some(journal) = self.journal.as_mut() {
            journal.set_stream(stream);
        }
    }
}

/// Gives the file `len` bytes of zeros from where it ends, written rather than a sparse
/// length, so the blocks are the file's from here on (a full disk says so now, not halfway
/// through a sync interval).
fn allocate(file: &File, from: u64, len: u64) -> io::Result<()> {
    let mut at = from;
    while at < len {
        let n = usize::try_from(len - at)
            .unwrap_or(ZEROS.len())
            .min(ZEROS.len());
        let written = file.write_at(ZEROS.get(..n).unwrap_or(&ZEROS), at)?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        at += written as u64;
    }
    Ok(())
}

/// Reads one whole record; `false` at the end of the file (a torn tail included).
fn read_record(file: &mut File, record: &mut [u8; RECORD_LEN]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < RECORD_LEN {
        let Some(rest) = record.get_mut(filled..) else {
            break;
        };
        match file.read(rest) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(i: i64) -> Fix {
        Fix {
            time_ms: 1_584_538_100_600 + i * 100,
            lat: 48.117_300_1 + i as f64 * 1e-5,
            lon: -11.516_666_7,
            alt_m: Some(545.4),
            speed_mps: (i % 2 == 0).then_some(12.3),
            course_deg: None,
            hdop: Some(0.9),
            sats: Some(8),
            mode: FixMode::ThreeD,
            event: (i == 3).then_some(Event::Stop),
        }
    }

    #[test]
    fn a_record_round_trips_exactly() {
        for i in 0..6 {
            let b = encode(7, 40 + i as u64, &fix(i));
            assert_eq!(decode(&b), Some((7, 40 + i as u64, fix(i))));
        }
    }

    #[test]
    fn a_torn_or_flipped_record_does_not_check_out() {
        let b = encode(7, 1, &fix(0));
        assert_eq!(decode(&b[..RECORD_LEN - 1]), None);
        for at in [0, 3, 12, 30, 77, 85] {
            let mut c = b;
            c[at] ^= 0x10;
            assert_eq!(decode(&c), None, "byte {at}");
        }
        assert_eq!(decode(&[0u8; RECORD_LEN]), None, "zeros after a power cut");
    }

    #[test]
    fn records_come_back_in_order_up_to_the_first_bad_one_and_clear_empties() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("buffer.db");
        {
            let (mut j, found) = Journal::open(&db, "s1", 16).unwrap();
            assert!(found.is_empty());
            for i in 0..3 {
                j.append(i as u64 + 1, &fix(i)).unwrap();
            }
        }
        // A torn record at the end.
        use std::io::Write;
        let mut f = OpenOptions::new().append(true).open(path_of(&db)).unwrap();
        f.write_all(&encode(stream_tag("s1"), 4, &fix(3))[..50])
            .unwrap();
        let (mut j, found) = Journal::open(&db, "s1", 16).unwrap();
        let seqs: Vec<u64> = found.iter().map(|r| r.1).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert!(found.iter().all(|r| r.0 == stream_tag("s1")));
        j.clear().unwrap();
        assert!(std::fs::read(path_of(&db)).unwrap().iter().all(|b| *b == 0));
        j.append(9, &fix(5)).unwrap();
        let (_, found) = Journal::open(&db, "s1", 16).unwrap();
        assert_eq!(found, vec![(stream_tag("s1"), 9, fix(5))]);
    }

    #[test]
    fn records_behind_a_hole_of_zeros_are_read_and_the_next_one_goes_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("buffer.db");
        {
            let (mut j, _) = Journal::open(&db, "s1", 16).unwrap();
            for i in 0..4 {
                j.append(i as u64 + 1, &fix(i)).unwrap();
            }
        }
        // Truncated from outside and written on behind the hole: two zeroed slots first.
        let path = path_of(&db);
        let bytes = std::fs::read(&path).unwrap();
        let mut holed = vec![0u8; 2 * RECORD_LEN];
        holed.extend_from_slice(&bytes[2 * RECORD_LEN..4 * RECORD_LEN]);
        std::fs::write(&path, &holed).unwrap();
        let (mut j, found) = Journal::open(&db, "s1", 16).unwrap();
        let seqs: Vec<u64> = found.iter().map(|r| r.1).collect();
        assert_eq!(seqs, vec![3, 4]);
        assert_eq!(j.skipped(), 2);
        j.append(5, &fix(5)).unwrap();
        let (_, found) = Journal::open(&db, "s1", 16).unwrap();
        let seqs: Vec<u64> = found.iter().map(|r| r.1).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
    }

    #[test]
    fn a_path_that_is_a_link_a_fifo_a_directory_or_a_second_name_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("buffer.db");
        let path = path_of(&db);
        let theirs = dir.path().join("notes.txt");
        std::fs::write(&theirs, b"someone's notes").unwrap();
        let refused = |why: &str| {
            let err = Journal::open(&db, "s1", 16).expect_err(why);
            assert_eq!(
                crate::error::Classified::code(&err),
                "BUFFER_JOURNAL_REFUSED",
                "{why}: {err}"
            );
        };
        std::os::unix::fs::symlink(&theirs, &path).unwrap();
        refused("a symbolic link");
        std::fs::remove_file(&path).unwrap();
        std::fs::hard_link(&theirs, &path).unwrap();
        refused("a hard link");
        std::fs::remove_file(&path).unwrap();
        let made = std::process::Command::new("mkfifo").arg(&path).status();
        assert!(made.unwrap().success());
        refused("a FIFO");
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        refused("a directory");
        assert_eq!(std::fs::read(&theirs).unwrap(), b"someone's notes");
    }

    #[test]
    fn a_link_put_in_place_of_the_open_journal_is_moved_aside_and_its_target_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("buffer.db");
        let path = path_of(&db);
        let theirs = dir.path().join("notes.txt");
        std::fs::write(&theirs, b"someone's notes").unwrap();
        let (mut j, _) = Journal::open(&db, "s1", 16).unwrap();
        j.append(1, &fix(1)).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&theirs, &path).unwrap();
        j.clear().unwrap();
        assert_eq!(j.mend().unwrap(), Some("replaced"));
        assert_eq!(std::fs::read(&theirs).unwrap(), b"someone's notes");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file() && meta.len() == 16 * RECORD_LEN as u64);
        let displaced: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                name.starts_with("buffer.db-fixlog.displaced-")
                    .then(|| std::fs::read_link(e.path()).unwrap())
            })
            .collect();
        assert_eq!(displaced, vec![theirs]);
    }

    #[test]
    fn a_fix_staged_for_the_history_and_then_queued_takes_one_record_that_says_both() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("buffer.db");
        {
            let (mut j, _) = Journal::open(&db, "s1", 16).unwrap();
            j.stage(&fix(1));
            j.append(7, &fix(1)).unwrap();
            j.stage(&fix(2));
            j.stage(&fix(3));
            j.append(8, &fix(4)).unwrap();
        }
        let bytes = std::fs::read(path_of(&db)).unwrap();
        let records = bytes
            .chunks_exact(RECORD_LEN)
            .filter(|r| r.starts_with(b"GJ"));
        assert_eq!(records.count(), 4);
        let tag = stream_tag("s1");
        let (_, found) = Journal::open(&db, "s1", 16).unwrap();
        assert_eq!(
            found,
            vec![
                (tag, 0, fix(1)),
                (tag, 7, fix(1)),
                (tag, 0, fix(2)),
                (tag, 0, fix(3)),
                (tag, 8, fix(4)),
            ]
        );
    }
}
