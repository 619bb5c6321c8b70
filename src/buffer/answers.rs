//! The remote commands' answered ids, kept in the buffer's file so that a request is never
//! run twice, also across a restart or a crash: `answers(id TEXT PRIMARY KEY, expires_ms,
//! answer)`, one row per request id until the request expires; `answer` is what was
//! published (NULL while the command still runs). The commands stage bounds how many rows
//! there are and how large (`crate::commands::ledger`); this room only stores them, and
//! drops the expired ones with every write.
//!
//! The table is made at its first write; files without it (earlier versions, or agents that
//! never took a command) read as holding no answers, and older agents ignore it.

use rusqlite::{Connection, OptionalExtension};

/// One answered (or running) request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerRow {
    pub id: String,
    /// Receiver-checked UTC, ms: the row is dropped after it.
    pub expires_ms: i64,
    /// The answer as published; `None` while the command runs.
    pub answer: Option<Vec<u8>>,
}

const CREATE: &str = "CREATE TABLE IF NOT EXISTS answers \
    (id TEXT PRIMARY KEY, expires_ms INTEGER NOT NULL, answer BLOB)";

/// The rows that expire after `now_ms`.
pub(super) fn load(conn: &Connection, now_ms: i64) -> rusqlite::Result<Vec<AnswerRow>> {
    let exists: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'answers'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT id, expires_ms, answer FROM answers WHERE expires_ms > ?1 ORDER BY expires_ms",
    )?;
    let rows = stmt.query_map([now_ms], |r| {
        Ok(AnswerRow {
            id: r.get(0)?,
            expires_ms: r.get(1)?,
            answer: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// Write `rows` (replacing rows of the same id) and drop the expired ones, in the caller's
/// open transaction.
pub(super) fn write(conn: &Connection, rows: &[AnswerRow], now_ms: i64) -> rusqlite::Result<()> {
    conn.execute_batch(CREATE)?;
    let mut put = conn.prepare_cached(
        "INSERT OR REPLACE INTO answers (id, expires_ms, answer) VALUES (?1, ?2, ?3)",
    )?;
    for row in rows {
        put.execute(rusqlite::params![row.id, row.expires_ms, row.answer])?;
    }
    conn.prepare_cached("DELETE FROM answers WHERE expires_ms <= ?1")?
        .execute([now_ms])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, expires_ms: i64, answer: Option<&[u8]>) -> AnswerRow {
        AnswerRow {
            id: id.into(),
            expires_ms,
            answer: answer.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn a_file_without_the_table_holds_no_answers_and_rows_live_until_they_expire() {
        let conn = Connection::open_in_memory().unwrap();
        assert_eq!(load(&conn, 0).unwrap(), Vec::new());
        write(&conn, &[row("a", 100, None), row("b", 200, Some(b"{}"))], 0).unwrap();
        // The running one is answered: replaced, not added.
        write(&conn, &[row("a", 100, Some(b"done"))], 50).unwrap();
        assert_eq!(
            load(&conn, 50).unwrap(),
            vec![row("a", 100, Some(b"done")), row("b", 200, Some(b"{}"))]
        );
        assert_eq!(load(&conn, 100).unwrap(), vec![row("b", 200, Some(b"{}"))]);
        // Each write drops what expired.
        write(&conn, &[], 150).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM answers", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }
}
