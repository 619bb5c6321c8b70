//! The answered ids: which requests ran, and what each was answered, until the request
//! expires. A request id seen again gets the first answer again and is not run twice; one
//! whose command still runs (a backfill) gets nothing now, its one answer comes when it
//! ends. Pure and bounded: at most [`MAX_ENTRIES`] ids and [`MAX_BYTES`] of answers; when
//! full, a new request is refused (`CMD_BUSY`) rather than an id forgotten early, which
//! would let it run twice. The service writes each change to the buffer's file
//! (`crate::buffer::AnswerRow`) before the answer goes out, so this holds across a restart:
//! a command that was running when the agent stopped is answered `CMD_INTERRUPTED`.

use super::answer::Answer;
use super::error::CommandError;
use crate::buffer::AnswerRow;
use std::collections::HashMap;

/// Most ids remembered at once.
pub const MAX_ENTRIES: usize = 1024;
/// Most bytes of answers remembered at once (a `config.get` answer holds the whole file).
pub const MAX_BYTES: usize = 4 * 1024 * 1024;

/// What is known of a request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    New,
    /// Answered: these bytes again.
    Answered(Vec<u8>),
    /// Its command runs; its answer comes when it ends.
    Running,
}

#[derive(Debug, Clone)]
struct Entry {
    expires_ms: i64,
    answer: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
pub struct Ledger {
    entries: HashMap<String, Entry>,
    bytes: usize,
}

impl Ledger {
    /// The ledger as the buffer's file kept it. Commands that were running when the agent
    /// stopped are answered `CMD_INTERRUPTED` now: those rows are returned to be written.
    pub fn from_rows(rows: Vec<AnswerRow>, now_ms: i64) -> (Ledger, Vec<AnswerRow>) {
        let mut ledger = Ledger::default();
        let mut interrupted = Vec::new();
        for row in rows.into_iter().filter(|r| r.expires_ms > now_ms) {
            let answer = match row.answer {
                Some(a) => a,
                None => {
                    let a = Answer::error(&row.id, &CommandError::Interrupted).to_bytes();
                    interrupted.push(AnswerRow {
                        id: row.id.clone(),
                        expires_ms: row.expires_ms,
                        answer: Some(a.clone()),
                    });
                    a
                }
            };
            if ledger.entries.len() < MAX_ENTRIES && ledger.bytes + answer.len() <= MAX_BYTES {
                ledger.bytes += answer.len();
                ledger.entries.insert(
                    row.id,
                    Entry {
                        expires_ms: row.expires_ms,
                        answer: Some(answer),
                    },
                );
            }
        }
        (ledger, interrupted)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What is known of `id` at `now_ms` (expired ids are forgotten first).
    pub fn seen(&mut self, id: &str, now_ms: i64) -> Seen {
        self.forget_expired(now_ms);
        match self.entries.get(id) {
            None => Seen::New,
            Some(Entry {
                answer: Some(a), ..
            }) => Seen::Answered(a.clone()),
            Some(Entry { answer: None, .. }) => Seen::Running,
        }
    }

    /// `id` runs from now (until `expires_ms`); the row to write. Refused when the ledger
    /// is full.
    pub fn start(
        &mut self,
        id: &str,
        expires_ms: i64,
        now_ms: i64,
    ) -> Result<AnswerRow, CommandError> {
        self.forget_expired(now_ms);
        if self.entries.len() >= MAX_ENTRIES || self.bytes >= MAX_BYTES {
            return Err(CommandError::Busy(
                "as many answered requests as are remembered until they expire; \
                 give requests a shorter expiry",
            ));
        }
        self.entries.insert(
            id.to_owned(),
            Entry {
                expires_ms,
                answer: None,
            },
        );
        Ok(AnswerRow {
            id: id.to_owned(),
            expires_ms,
            answer: None,
        })
    }

    /// `id` was answered with `answer`; the row to write. An answer larger than what is
    /// left of [`MAX_BYTES`] is still remembered as given (the id must never run twice).
    pub fn answered(&mut self, answer: &Answer, expires_ms: i64) -> AnswerRow {
        let bytes = answer.to_bytes();
        let entry = self.entries.entry(answer.id.clone()).or_insert(Entry {
            expires_ms,
            answer: None,
        });
        self.bytes = self
            .bytes
            .saturating_sub(entry.answer.as_ref().map_or(0, Vec::len));
        self.bytes += bytes.len();
        entry.answer = Some(bytes.clone());
        AnswerRow {
            id: answer.id.clone(),
            expires_ms: entry.expires_ms,
            answer: Some(bytes),
        }
    }

    fn forget_expired(&mut self, now_ms: i64) {
        let mut freed = 0;
        self.entries.retain(|_, e| {
            let keep = e.expires_ms > now_ms;
            if !keep {
                freed += e.answer.as_ref().map_or(0, Vec::len);
            }
            keep
        });
        self.bytes = self.bytes.saturating_sub(freed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Classified;
    use serde_json::json;

    #[test]
    fn an_id_is_new_then_running_then_answered_until_it_expires() {
        let mut l = Ledger::default();
        assert_eq!(l.seen("a", 0), Seen::New);
        let row = l.start("a", 100, 0).unwrap();
        assert_eq!(row.answer, None);
        assert_eq!(l.seen("a", 50), Seen::Running);
        let answer = Answer::ok("a", json!({}));
        let row = l.answered(&answer, 100);
        assert_eq!(row.answer.as_deref(), Some(answer.to_bytes().as_slice()));
        assert_eq!(l.seen("a", 99), Seen::Answered(answer.to_bytes()));
        assert_eq!(l.seen("a", 100), Seen::New, "expired: forgotten");
        assert!(l.is_empty());
    }

    #[test]
    fn a_full_ledger_refuses_new_ids_rather_than_forget_live_ones() {
        let mut l = Ledger::default();
        for i in 0..MAX_ENTRIES {
            l.start(&i.to_string(), 1_000, 0).unwrap();
        }
        let e = l.start("one more", 1_000, 0).unwrap_err();
        assert_eq!(e.code(), "CMD_BUSY");
        assert_eq!(l.seen("0", 1), Seen::Running);
        // Once they expire there is room again.
        assert!(l.start("later", 2_000, 1_000).is_ok());
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn commands_running_at_a_stop_are_answered_interrupted_at_the_next_start() {
        let rows = vec![
            AnswerRow {
                id: "done".into(),
                expires_ms: 500,
                answer: Some(b"{\"id\":\"done\"}".to_vec()),
            },
            AnswerRow {
                id: "ran".into(),
                expires_ms: 500,
                answer: None,
            },
            AnswerRow {
                id: "old".into(),
                expires_ms: 10,
                answer: None,
            },
        ];
        let (mut l, interrupted) = Ledger::from_rows(rows, 100);
        assert_eq!(interrupted.len(), 1);
        assert_eq!(interrupted[0].id, "ran");
        let Seen::Answered(bytes) = l.seen("ran", 100) else {
            panic!("ran is answered")
        };
        let a = Answer::from_bytes("ran", &bytes).unwrap();
        assert_eq!(a.body["error"]["code"], "CMD_INTERRUPTED");
        assert_eq!(
            l.seen("done", 100),
            Seen::Answered(b"{\"id\":\"done\"}".to_vec())
        );
        assert_eq!(l.seen("old", 100), Seen::New);
    }
}
