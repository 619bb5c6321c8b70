//! Queries on a buffer file that need no daemon state: the stats the CLI prints, the dead
//! letters list, and requeueing dead letters. They work on any connection, so the CLI can
//! run them next to the running daemon (WAL readers do not block the writer; the writer
//! waits `busy_timeout` for `requeue`). They never assign seqs: a requeued fix keeps its own.

use super::error::{classify, BufferError};
use super::schema::{read_meta_u64, read_stream, row_to_fix, FIX_COLUMNS};
use crate::fix::{format_time_ms, Fix, Numbered};
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;
use std::path::Path;

/// What is in the file. Key names are the outside interface (`buffer stats`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BufferStats {
    /// Fixes waiting for the broker (on disk, plus those held in memory while the disk fails).
    pub depth: u64,
    pub oldest_seq: Option<u64>,
    pub newest_seq: Option<u64>,
    /// The last seq assigned, acknowledged or not.
    pub last_seq: u64,
    pub oldest_time: Option<String>,
    pub newest_time: Option<String>,
    pub stream: String,
    /// Size of the database file plus its WAL.
    pub bytes: u64,
    /// Fixes dropped by the capacity policy since the file was made.
    pub evicted: u64,
    pub dead_letters: u64,
    /// Handed to the uplink, not yet acknowledged (daemon only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u64>,
    /// Fixes held in the memory ring, without a seq yet (daemon only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_memory: Option<u64>,
    /// Fixes lost for good since start: unreadable in a damaged file, or held in memory only
    /// when the agent stopped (daemon only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    /// The local history (`[history]`), when the file keeps one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<super::HistoryStats>,
}

/// Stats read from the file alone (exact depth by counting).
pub fn file_stats(conn: &Connection, path: &Path) -> Result<BufferStats, BufferError> {
    let depth: i64 = conn
        .query_row("SELECT count(*) FROM fixes", [], |r| r.get(0))
        .map_err(|e| classify(path, "count fixes", e))?;
    stats_with_depth(conn, path, depth.max(0) as u64)
}

/// Stats with a depth the caller already knows (the daemon keeps it counted).
pub(crate) fn stats_with_depth(
    conn: &Connection,
    path: &Path,
    depth: u64,
) -> Result<BufferStats, BufferError> {
    let io = |op| move |e| classify(path, op, e);
    // Two rowid lookups instead of min()/max() in one query, which would scan.
    let end = |order: &str| -> rusqlite::Result<Option<(u64, i64)>> {
        conn.prepare_cached(&format!(
            "SELECT seq, time_ms FROM fixes ORDER BY seq {order} LIMIT 1"
        ))?
        .query_row([], |r| Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get(1)?)))
        .optional()
    };
    let oldest = end("ASC").map_err(io("oldest fix"))?;
    let newest = end("DESC").map_err(io("newest fix"))?;
    let dead_letters: i64 = conn
        .query_row("SELECT count(*) FROM dead_letters", [], |r| r.get(0))
        .map_err(io("count dead letters"))?;
    let max_dead: Option<i64> = conn
        .query_row("SELECT max(seq) FROM dead_letters", [], |r| r.get(0))
        .map_err(io("newest dead letter"))?;
    let meta_last = read_meta_u64(conn, "last_seq").map_err(io("read meta"))?;
    let last_seq = meta_last
        .max(newest.map_or(0, |n| n.0))
        .max(max_dead.unwrap_or(0).max(0) as u64);
    let evicted = read_meta_u64(conn, "evicted").map_err(io("read meta"))?;
    let stream = read_stream(conn)
        .map_err(io("read meta"))?
        .unwrap_or_default();
    Ok(BufferStats {
        depth,
        oldest_seq: oldest.map(|o| o.0),
        newest_seq: newest.map(|n| n.0),
        last_seq,
        oldest_time: oldest.map(|o| format_time_ms(o.1)),
        newest_time: newest.map(|n| format_time_ms(n.1)),
        stream,
        bytes: file_bytes(path),
        evicted,
        dead_letters: dead_letters.max(0) as u64,
        in_flight: None,
        in_memory: None,
        lost: None,
        history: super::history::file_history_stats(conn, path)?,
    })
}

/// The database file and its WAL, as the file system counts them.
pub(crate) fn file_bytes(path: &Path) -> u64 {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = path.as_os_str().to_os_string();
    wal.push("-wal");
    len(path) + len(Path::new(&wal))
}

/// One dead letter, as `buffer dead-letters` prints it (one JSON line each).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    pub seq: u64,
    pub code: String,
    pub reason: String,
    /// When it was set aside (host clock, RFC 3339).
    pub time: String,
    /// The fix as it would have been published.
    pub fix: serde_json::Value,
}

/// Dead letters in seq order, at most `limit`.
pub fn list_dead_letters(
    conn: &Connection,
    path: &Path,
    limit: usize,
) -> Result<Vec<DeadLetter>, BufferError> {
    let io = |op| move |e| classify(path, op, e);
    let mut stmt = conn
        .prepare(
            "SELECT seq, code, reason, time_ms, payload FROM dead_letters ORDER BY seq LIMIT ?1",
        )
        .map_err(io("list dead letters"))?;
    let rows = stmt
        .query_map([limit.min(i64::MAX as usize) as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
            ))
        })
        .map_err(io("list dead letters"))?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, code, reason, time_ms, payload) = row.map_err(io("list dead letters"))?;
        let fix = serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload));
        out.push(DeadLetter {
            seq: seq.max(0) as u64,
            code,
            reason,
            time: format_time_ms(time_ms),
            fix,
        });
    }
    Ok(out)
}

/// Moves fixes from `fixes` to `dead_letters`, in the caller's transaction. Returns how many
/// moved (seqs not pending are skipped).
pub(crate) fn move_to_dead_letters(
    conn: &Connection,
    seqs: &[u64],
    code: &str,
    reason: &str,
    now_ms: i64,
) -> rusqlite::Result<u64> {
    let mut moved = 0;
    for &seq in seqs {
        let row = conn
            .prepare_cached(&format!(
                "SELECT seq, {FIX_COLUMNS} FROM fixes WHERE seq = ?1"
            ))?
            .query_row([seq as i64], row_to_fix)
            .optional()?;
        let Some((seq, fix)) = row else { continue };
        let payload = serde_json::to_string(&Numbered { seq, fix: &fix })
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        conn.prepare_cached(
            "INSERT OR REPLACE INTO dead_letters (seq, code, reason, time_ms, payload)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(rusqlite::params![seq as i64, code, reason, now_ms, payload])?;
        conn.prepare_cached("DELETE FROM fixes WHERE seq = ?1")?
            .execute([seq as i64])?;
        moved += 1;
    }
    Ok(moved)
}

/// Code of a dead letter made from a row that could not be read back into a fix.
pub(crate) const CORRUPT_RECORD: &str = "BUFFER_CORRUPT_RECORD";

/// Moves row `seq`, which does not read back as a fix, to `dead_letters` with its raw columns
/// (SQL literals, as `quote()` prints them) for an operator to look at, in the caller's
/// transaction. Returns 1 if it moved.
pub(crate) fn set_aside_corrupt_row(
    conn: &Connection,
    seq: u64,
    why: &str,
    now_ms: i64,
) -> rusqlite::Result<u64> {
    let seq = seq.min(i64::MAX as u64) as i64;
    let moved = conn
        .prepare_cached(&format!(
            "INSERT OR REPLACE INTO dead_letters (seq, code, reason, time_ms, payload)
             SELECT seq, '{CORRUPT_RECORD}', ?2, ?3,
                    json_object('seq', seq, 'corrupt_row',
                        json_array(quote(time_ms), quote(lat), quote(lon), quote(alt_mm),
                            quote(speed_mmps), quote(course_mdeg), quote(hdop_c), quote(sats),
                            quote(mode), quote(event)))
             FROM fixes WHERE seq = ?1"
        ))?
        .execute(rusqlite::params![seq, why, now_ms])?;
    conn.prepare_cached("DELETE FROM fixes WHERE seq = ?1")?
        .execute([seq])?;
    Ok(moved as u64)
}

/// Sets aside a crash journal record that is not a fix the validator would pass (`why`),
/// under the seq it was given, with what it claimed (`claimed_seq` and its fields; a number
/// JSON cannot hold, NaN or infinite, as text), in the caller's transaction.
pub(crate) fn set_aside_journal_record(
    conn: &Connection,
    seq: u64,
    claimed_seq: u64,
    fix: &Fix,
    why: &str,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let number = |v: f64| {
        serde_json::Number::from_f64(v).map_or_else(
            || serde_json::Value::String(v.to_string()),
            serde_json::Value::Number,
        )
    };
    let optional = |v: Option<f64>| v.map_or(serde_json::Value::Null, number);
    let payload = serde_json::json!({
        "seq": seq,
        "journal_record": {
            "seq": claimed_seq,
            "time_ms": fix.time_ms,
            "lat": number(fix.lat),
            "lon": number(fix.lon),
            "alt_m": optional(fix.alt_m),
            "speed_mps": optional(fix.speed_mps),
            "course_deg": optional(fix.course_deg),
            "hdop": optional(fix.hdop),
            "sats": fix.sats,
            "mode": fix.mode.as_u8(),
        },
    });
    conn.prepare_cached(
        "INSERT OR REPLACE INTO dead_letters (seq, code, reason, time_ms, payload)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(rusqlite::params![
        seq.min(i64::MAX as u64) as i64,
        CORRUPT_RECORD,
        format!("crash journal record refused: {why}"),
        now_ms,
        payload.to_string()
    ])?;
    Ok(())
}

/// Dead letters back to pending, with their own seqs, in one transaction. Returns how many.
/// Rows set aside as unreadable (`BUFFER_CORRUPT_RECORD`) stay: there is no fix to send.
pub fn requeue_dead_letters(conn: &Connection, path: &Path) -> Result<u64, BufferError> {
    let io = |op| move |e| classify(path, op, e);
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(io("begin requeue"))?;
    let result = requeue_in_tx(conn, path);
    match result {
        Ok(n) => {
            conn.execute_batch("COMMIT").map_err(|e| {
                let _ = conn.execute_batch("ROLLBACK");
                classify(path, "commit requeue", e)
            })?;
            Ok(n)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

pub(crate) fn requeue_in_tx(conn: &Connection, path: &Path) -> Result<u64, BufferError> {
    let io = |op| move |e| classify(path, op, e);
    let letters: Vec<(i64, String)> = {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT seq, payload FROM dead_letters WHERE code != '{CORRUPT_RECORD}' ORDER BY seq"
            ))
            .map_err(io("read dead letters"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(io("read dead letters"))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(io("read dead letters"))?
    };
    for (seq, payload) in &letters {
        let fix = fix_from_payload(payload).map_err(|detail| BufferError::Payload {
            path: path.to_path_buf(),
            seq: (*seq).max(0) as u64,
            detail,
        })?;
        super::schema::insert_fix(conn, (*seq).max(0) as u64, &fix).map_err(io("requeue"))?;
        conn.execute("DELETE FROM dead_letters WHERE seq = ?1", [seq])
            .map_err(io("requeue"))?;
    }
    Ok(letters.len() as u64)
}

/// Reads back the fix JSON this module wrote (`Numbered`'s form).
fn fix_from_payload(payload: &str) -> Result<Fix, String> {
    let v: serde_json::Value = serde_json::from_str(payload).map_err(|e| e.to_string())?;
    crate::fix::fix_from_json(&v).map(|(_, fix)| fix)
}
