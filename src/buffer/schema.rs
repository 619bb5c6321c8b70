//! The file: its layout, its version and what happens to a file that is not ours or is
//! damaged. In: a path. Out: an open, checked, current-version connection, or a verdict that
//! the file must be moved aside. Never deletes a file (only its own temporary ones); never
//! opens a file of a newer version for writing. A new file is made whole under a temporary
//! name and linked into place, so the path never names a half-made one.
//!
//! Layout (version 3), in 1 KiB pages (4 KiB in files made before the buffer committed each
//! fix on its own):
//! - `meta(key, value)`: `stream` (32 hex chars, random, made with the file), `last_seq`
//!   (written whenever rows are deleted, so a seq is never reused after its row left), and
//!   `evicted` (total fixes dropped by the capacity policy).
//! - `fixes`: one row per pending fix; `seq` is the rowid. Time in integer ms, lat/lon REAL
//!   (exact round trip of the sentence's digits), optionals as scaled integers in the units
//!   the payload rounds to (mm, mm/s, milli-degrees, centi-HDOP; 1-3 bytes each instead of 8)
//!   or NULL when the receiver did not say. `event` is 1 (stop) or 2 (start) on a fix the
//!   report stage marked, NULL otherwise.
//! - `dead_letters(seq, code, reason, time_ms, payload)`: fixes the broker will never take;
//!   `time_ms` is when they were set aside (host clock), `payload` the fix's JSON.
//! - `history`: the local history (see `history.rs`), made at open when `[history]` is on
//!   and dropped when it is off. It needs no version of its own: an older agent ignores a
//!   table it does not know, so a file with it stays version 3.
//!
//! Version history: 1 had no `dead_letters` table and no `evicted` counter; 2 had no
//! `fixes.event` column (a dead letter keeps its event in its JSON payload in every version).

use super::error::{classify, failure_of, BufferError, Failure};
use crate::fix::{Fix, FixMode};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `PRAGMA application_id` of a gps-agent buffer ("GPSB"): tells our files from other
/// SQLite databases that happen to sit at the configured path.
pub const APPLICATION_ID: i32 = 0x4750_5342;
/// `PRAGMA user_version` this build writes; older files are migrated forward.
pub const SCHEMA_VERSION: i64 = 3;

/// Page size of a new file (bytes).
pub(crate) const PAGE_SIZE: i64 = 1024;

/// How long a reader or writer waits for the other process's lock (CLI next to the daemon).
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The WAL is truncated back to this after a checkpoint, so it never holds on to space.
const JOURNAL_SIZE_LIMIT: i64 = 4 * 1024 * 1024;

/// The definitions of [`value_columns`], as `fixes` and `history` declare them.
macro_rules! value_column_defs {
    () => {
        "lat REAL NOT NULL,
        lon REAL NOT NULL,
        alt_mm INTEGER,
        speed_mmps INTEGER,
        course_mdeg INTEGER,
        hdop_c INTEGER,
        sats INTEGER,
        mode INTEGER NOT NULL"
    };
}
pub(crate) use value_column_defs;

const CREATE_V3: &str = concat!(
    "
    CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
    CREATE TABLE fixes (
        seq INTEGER PRIMARY KEY,
        time_ms INTEGER NOT NULL,
        ",
    value_column_defs!(),
    ",
        event INTEGER
    );
    CREATE TABLE dead_letters (
        seq INTEGER PRIMARY KEY,
        code TEXT NOT NULL,
        reason TEXT NOT NULL,
        time_ms INTEGER NOT NULL,
        payload TEXT NOT NULL
    );
"
);

/// Why a file found at startup cannot be used and is moved aside.
#[derive(Debug)]
pub(crate) enum Unusable {
    Corrupt(String),
    Fatal(BufferError),
}

/// Opens `path` read-write and checks it; creates a fresh file if there is none.
pub(crate) fn open_checked(path: &Path) -> Result<Connection, Unusable> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_new(path).map_err(Unusable::Fatal)?;
        }
        _ => {
            if let Ok(meta) = std::fs::metadata(path) {
                // A new file never appears at the path empty (see `create_new`): an empty
                // one lost its content.
                if meta.len() == 0 {
                    return Err(Unusable::Corrupt("zero-length file".into()));
                }
            }
        }
    }
    // NO_MUTEX: a rusqlite `Connection` is never shared between threads (it is not `Sync`;
    // the daemon's sits behind its own mutex), so SQLite's per-call locking is pure cost:
    // a mutex pair around every column read.
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| {
        Unusable::Fatal(BufferError::Open {
            path: path.to_path_buf(),
            source,
        })
    })?;
    let verdict = |op: &'static str| {
        move |e: rusqlite::Error| match failure_of(&e) {
            Failure::Corrupt => Unusable::Corrupt(format!("{op}: {e}")),
            _ => Unusable::Fatal(classify(path, op, e)),
        }
    };
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(verdict("busy_timeout"))?;
    let app_id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(verdict("read header"))?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(verdict("quick_check"))?;
    if check != "ok" {
        return Err(Unusable::Corrupt(format!("quick_check: {check}")));
    }
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(verdict("read schema"))?;
    if app_id == 0 && tables == 0 {
        create(&conn, path).map_err(Unusable::Fatal)?;
    } else if app_id != APPLICATION_ID {
        return Err(Unusable::Corrupt(format!(
            "not a gps-agent buffer (application_id {app_id:#x}, {tables} tables)"
        )));
    }
    configure(&conn, path).map_err(Unusable::Fatal)?;
    migrate(&conn, path)?;
    // Our id and version, but the tables we rely on are missing: damaged, not ours to fix.
    let stream = read_stream(&conn).map_err(verdict("read meta"))?;
    if stream.is_none() {
        return Err(Unusable::Corrupt("meta has no stream id".into()));
    }
    Ok(conn)
}

/// Temporary names beside the buffer: a file being created (`new`) or written back
/// (`restore`, see `rescue`). They never hold a fix that is not also elsewhere.
pub(crate) fn temp_name(path: &Path, kind: &str) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join(format!(".{name}.{kind}-{}", std::process::id()))
}

/// Removes temporary files an earlier run left when it died half-way (any process id).
pub(crate) fn remove_leftover_temps(path: &Path) {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefixes = [format!(".{name}.new-"), format!(".{name}.restore-")];
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if prefixes.iter().any(|p| file.starts_with(p.as_str())) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Makes a new buffer file at `path` whole or not at all: created and synced under a
/// temporary name, then linked into place. A power cut while it is made leaves no
/// half-made file at the path (which the next start would have to take for a damaged one).
fn create_new(path: &Path) -> Result<(), BufferError> {
    let file_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| BufferError::File { path: p, source }
    };
    let tmp = temp_name(path, "new");
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(super::files::with_suffix(&tmp, suffix));
    }
    let conn = Connection::open_with_flags(
        &tmp,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )
    .map_err(|source| BufferError::Open {
        path: tmp.clone(),
        source,
    })?;
    let made = create(&conn, &tmp);
    // The last connection checkpoints the WAL into the file (synced) and removes the WAL.
    let closed = conn
        .close()
        .map_err(|(_, e)| classify(&tmp, "close new file", e));
    let linked = made
        .and(closed)
        .and_then(|()| super::files::sync_file(&tmp).map_err(file_err(&tmp)))
        .and_then(|()| match link_into_place(&tmp, path) {
            // Another process made it meanwhile: that one is opened and checked.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            other => other.map_err(file_err(path)),
        })
        .and_then(|()| super::files::sync_dir(path).map_err(file_err(path)));
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(super::files::with_suffix(&tmp, suffix));
    }
    linked
}

/// Gives `tmp` the name `path` without ever replacing a file there (`AlreadyExists` then):
/// a hard link, or on a file system without them (vfat) a rename after a look.
pub(crate) fn link_into_place(tmp: &Path, path: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(tmp, path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(std::io::ErrorKind::AlreadyExists.into());
            }
            std::fs::rename(tmp, path)
        }
        other => other,
    }
}

/// Pragmas of every read-write connection. WAL: appends never rewrite the main file and
/// readers (the CLI) never block the writer. `synchronous = NORMAL`: a commit writes its WAL
/// frames without `fsync` (it survives the process, not yet a power cut); the buffer syncs
/// the WAL itself at most `commit_interval_s` later, and SQLite syncs at each checkpoint.
fn configure(conn: &Connection, path: &Path) -> Result<(), BufferError> {
    let io = |op| move |e| classify(path, op, e);
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(io("journal_mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(BufferError::Schema {
            path: path.to_path_buf(),
            detail: format!("journal_mode stays {mode}, WAL needed"),
        });
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(io("synchronous"))?;
    let _: i64 = conn
        .query_row(
            &format!("PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}"),
            [],
            |r| r.get(0),
        )
        .map_err(io("journal_size_limit"))?;
    // The page cache sized for the job (SQLite's default is 2 MiB): appends touch the
    // table's last pages, acks its first, a drain walks it once. 512 KiB holds every
    // interior page of a 1 M-fix buffer (about 30) many times over, and keeps a day's
    // drain from growing the agent by another 1.5 MiB of pages it will not read again.
    conn.pragma_update(None, "cache_size", -512)
        .map_err(io("cache_size"))?;
    // Appends and acks reuse a handful of statements; keep them all prepared.
    conn.set_prepared_statement_cache_capacity(32);
    Ok(())
}

fn create(conn: &Connection, path: &Path) -> Result<(), BufferError> {
    let io = |op| move |e| classify(path, op, e);
    // Must precede the first table; WAL files cannot change page size later. 1 KiB: every
    // fix is its own commit, and a commit writes whole pages to the WAL; at 10 Hz 4 KiB
    // pages wrote three times as much to the flash for the same fixes (`cargo bench --bench
    // buffer`), for 2% more file per fix. Files made with 4 KiB pages keep them.
    conn.pragma_update(None, "page_size", PAGE_SIZE)
        .map_err(io("page_size"))?;
    conn.execute_batch("PRAGMA journal_mode = WAL")
        .map_err(io("journal_mode"))?;
    let stream = new_stream_id().map_err(|detail| BufferError::Schema {
        path: path.to_path_buf(),
        detail,
    })?;
    let sql = format!(
        "BEGIN IMMEDIATE;
         {CREATE_V3}
         INSERT INTO meta VALUES ('stream', '{stream}'), ('last_seq', 0), ('evicted', 0);
         PRAGMA application_id = {APPLICATION_ID};
         PRAGMA user_version = {SCHEMA_VERSION};
         COMMIT;"
    );
    if let Err(e) = conn.execute_batch(&sql) {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(classify(path, "create schema", e));
    }
    Ok(())
}

/// Forward migrations, each in its own transaction with its version bump, applied one after
/// the other (a v1 file goes to 2, then to 3).
fn migrate(conn: &Connection, path: &Path) -> Result<(), Unusable> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| Unusable::Fatal(classify(path, "user_version", e)))?;
    if version > SCHEMA_VERSION {
        return Err(Unusable::Fatal(BufferError::Schema {
            path: path.to_path_buf(),
            detail: format!("schema version {version} is newer than this agent's {SCHEMA_VERSION}"),
        }));
    }
    if version < 1 {
        return Err(Unusable::Corrupt(format!(
            "unknown schema version {version}"
        )));
    }
    for (from, sql) in MIGRATIONS.iter().skip((version - 1) as usize) {
        if let Err(e) = conn.execute_batch(sql) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(match failure_of(&e) {
                // A file claiming our version without the tables it names is not ours.
                Failure::Other | Failure::Corrupt => {
                    Unusable::Corrupt(format!("migration {from} -> {}: {e}", from + 1))
                }
                Failure::Disk => Unusable::Fatal(classify(path, "migrate", e)),
            });
        }
        tracing::info!(path = %path.display(), from, to = from + 1, "buffer schema migrated");
    }
    Ok(())
}

/// `(from version, SQL)`: each step takes a file from `from` to `from + 1`.
const MIGRATIONS: [(i64, &str); 2] = [
    (
        1,
        "BEGIN IMMEDIATE;
        CREATE TABLE dead_letters (
            seq INTEGER PRIMARY KEY,
            code TEXT NOT NULL,
            reason TEXT NOT NULL,
            time_ms INTEGER NOT NULL,
            payload TEXT NOT NULL
        );
        INSERT OR IGNORE INTO meta VALUES ('evicted', 0);
        PRAGMA user_version = 2;
        COMMIT;",
    ),
    (
        2,
        // Nullable, no default: existing rows read as "no event", and SQLite adds such a
        // column without rewriting the table (a large backlog migrates at once).
        "BEGIN IMMEDIATE;
        ALTER TABLE fixes ADD COLUMN event INTEGER;
        PRAGMA user_version = 3;
        COMMIT;",
    ),
];

pub(crate) fn read_stream(conn: &Connection) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = 'stream'", [], |r| {
        r.get::<_, String>(0)
    })
    .optional()
}

/// SQLite's counter of commits made by other connections to this file.
/// Asked once a second by the daemon: the statement is kept prepared.
pub(crate) fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("PRAGMA data_version")?
        .query_row([], |r| r.get(0))
}

pub(crate) fn read_meta_u64(conn: &Connection, key: &str) -> rusqlite::Result<u64> {
    let v: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?;
    Ok(v.unwrap_or(0).max(0) as u64)
}

/// 128 random bits as 32 lowercase hex characters.
fn new_stream_id() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for the stream id: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Renames `path` and its `-wal`/`-shm` to `<path>.corrupt-<utc>` (+ `-wal`/`-shm`, so the
/// set still opens together in `sqlite3`). Returns the new name of the main file.
pub(crate) fn move_aside(path: &Path) -> Result<PathBuf, BufferError> {
    move_aside_as(path, "corrupt")?.ok_or_else(|| BufferError::File {
        path: path.to_path_buf(),
        source: std::io::ErrorKind::NotFound.into(),
    })
}

/// Renames whichever of `path`, `-wal` and `-shm` exist to `<path>.<tag>-<utc>` (+ the same
/// suffixes); never overwrites. Returns the main file's new name, if it was there.
pub(crate) fn move_aside_as(path: &Path, tag: &str) -> Result<Option<PathBuf>, BufferError> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let base = path.as_os_str().to_os_string();
    let with = |p: &PathBuf, suffix: &str| {
        let mut s = p.clone().into_os_string();
        s.push(suffix);
        PathBuf::from(s)
    };
    // Two damaged files within one second: never overwrite the first.
    let mut target = None;
    for n in 0..1000u32 {
        let mut t = base.clone();
        t.push(format!(".{tag}-{stamp}"));
        if n > 0 {
            t.push(format!("-{n}"));
        }
        let t = PathBuf::from(t);
        if ["", "-wal", "-shm"].iter().all(|s| !with(&t, s).exists()) {
            target = Some(t);
            break;
        }
    }
    let target = target.ok_or_else(|| BufferError::File {
        path: path.to_path_buf(),
        source: std::io::Error::other("no free name to move the buffer file aside to"),
    })?;
    let mut main = None;
    // The main file last: a crash in between leaves it with its WAL gone, never a WAL that
    // could be replayed into another file.
    for suffix in ["-wal", "-shm", ""] {
        let from = with(&PathBuf::from(&base), suffix);
        if std::fs::symlink_metadata(&from).is_err() {
            continue;
        }
        let to = with(&target, suffix);
        std::fs::rename(&from, &to).map_err(|source| BufferError::File {
            path: from.clone(),
            source,
        })?;
        if suffix.is_empty() {
            main = Some(to);
        }
    }
    Ok(main)
}

/// Opens an existing buffer for reading only (CLI `stats`, `dead-letters`).
pub fn open_read_only(path: &Path) -> Result<Connection, BufferError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| BufferError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| classify(path, "busy_timeout", e))?;
    check_ours(&conn, path)?;
    Ok(conn)
}

/// Opens an existing buffer for writing next to a running daemon (CLI `requeue`).
pub fn open_existing(path: &Path) -> Result<Connection, BufferError> {
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(|source| {
            BufferError::Open {
                path: path.to_path_buf(),
                source,
            }
        })?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| classify(path, "busy_timeout", e))?;
    check_ours(&conn, path)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| classify(path, "synchronous", e))?;
    Ok(conn)
}

fn check_ours(conn: &Connection, path: &Path) -> Result<(), BufferError> {
    let (app_id, version): (i32, i64) = conn
        .query_row(
            "SELECT (SELECT application_id FROM pragma_application_id),
                    (SELECT user_version FROM pragma_user_version)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|e| classify(path, "read header", e))?;
    if app_id != APPLICATION_ID || version != SCHEMA_VERSION {
        return Err(BufferError::Schema {
            path: path.to_path_buf(),
            detail: format!(
                "not a current gps-agent buffer (application_id {app_id:#x}, version {version}); \
                 the daemon migrates or moves it aside at startup"
            ),
        });
    }
    Ok(())
}

/// The columns of a fix's values after its key and time, as `fixes` and `history` store
/// them, in the order [`values`] gives and [`fix_from_values`] reads.
macro_rules! value_columns {
    () => {
        "lat, lon, alt_mm, speed_mmps, course_mdeg, hdop_c, sats, mode"
    };
}

pub(crate) use value_columns;

/// Column list of `fixes`, in the order [`row_to_fix`] reads (after `seq`).
pub(crate) const FIX_COLUMNS: &str = concat!("time_ms, ", value_columns!(), ", event");

/// Scaled integer for an optional value: the payload rounds to these decimals anyway.
fn scaled(v: Option<f64>, scale: f64) -> Option<i64> {
    v.filter(|x| x.is_finite())
        .map(|x| (x * scale).round() as i64)
}

/// A fix's values as stored: the position exact (REAL round-trips the sentence's digits),
/// the optional values as scaled integers in the units the payload rounds to (mm, mm/s,
/// milli-degrees, centi-HDOP; 1-3 bytes each instead of 8), the mode as its number.
pub(crate) type Values = (
    f64,
    f64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<u8>,
    u8,
);

/// [`Values`] of a fix, in [`VALUE_COLUMNS`]'s order.
pub(crate) fn values(fix: &Fix) -> Values {
    (
        fix.lat,
        fix.lon,
        scaled(fix.alt_m, 1000.0),
        scaled(fix.speed_mps, 1000.0),
        scaled(fix.course_deg, 1000.0),
        scaled(fix.hdop, 100.0),
        fix.sats,
        fix.mode.as_u8(),
    )
}

/// Reads [`VALUE_COLUMNS`] from column `at` on into a fix of `time_ms` with `event`.
pub(crate) fn fix_from_values(
    r: &rusqlite::Row<'_>,
    at: usize,
    time_ms: i64,
    event: Option<crate::fix::Event>,
) -> rusqlite::Result<Fix> {
    let unscale = |v: Option<i64>, scale: f64| v.map(|x| x as f64 / scale);
    let mode: u8 = r.get(at + 7)?;
    Ok(Fix {
        time_ms,
        lat: r.get(at)?,
        lon: r.get(at + 1)?,
        alt_m: unscale(r.get(at + 2)?, 1000.0),
        speed_mps: unscale(r.get(at + 3)?, 1000.0),
        course_deg: unscale(r.get(at + 4)?, 1000.0),
        hdop: unscale(r.get(at + 5)?, 100.0),
        sats: r.get(at + 6)?,
        // Only 2 and 3 are ever written; anything else is the weaker claim.
        mode: FixMode::from_u8(mode).unwrap_or(FixMode::TwoD),
        event,
    })
}

pub(crate) fn insert_fix(conn: &Connection, seq: u64, fix: &Fix) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(concat!(
        "INSERT INTO fixes (seq, time_ms, ",
        value_columns!(),
        ", event) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    ))?;
    let v = values(fix);
    stmt.execute(rusqlite::params![
        seq as i64,
        fix.time_ms,
        v.0,
        v.1,
        v.2,
        v.3,
        v.4,
        v.5,
        v.6,
        v.7,
        fix.event.map(crate::fix::Event::as_u8),
    ])?;
    Ok(())
}

/// Reads `seq, FIX_COLUMNS` from a row.
pub(crate) fn row_to_fix(r: &rusqlite::Row<'_>) -> rusqlite::Result<(u64, Fix)> {
    let seq: i64 = r.get(0)?;
    let event: Option<u8> = r.get(10)?;
    // Only 1 and 2 are ever written; anything else is read as no event.
    let event = event.and_then(crate::fix::Event::from_u8);
    let fix = fix_from_values(r, 2, r.get(1)?, event)?;
    Ok((seq.max(0) as u64, fix))
}
