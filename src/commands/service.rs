//! The commands service: one request's bytes and `now` in, its answer and what the agent must
//! do out. Transport-independent (the MQTT uplink hands it requests today; platform RPCs can
//! map onto the same call), and free of the agent's runtime: what it needs to know of the
//! agent comes in as [`Facts`], what the agent must do goes out as an [`Effect`], and the
//! rows to write to the buffer's file go out with it ([`Handled::rows`]; written before the
//! answer is published). It does the file work of `config.set` itself (see
//! [`super::remote_config`]), nothing else on disk.

use super::answer::Answer;
use super::error::CommandError;
use super::ledger::{Ledger, Seen};
use super::remote_config::{self, Files, Pending, State};
use super::request::{self, Cmd, Refused, Request};
use super::signature::PublicKey;
use crate::buffer::AnswerRow;
use crate::config::{CommandsSettings, ConfigError, Settings};
use serde_json::{json, Value};
use std::path::PathBuf;

/// What the service knows of the agent when a request comes.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The `/health` snapshot now.
    pub snapshot: Value,
}

/// What the agent must do after an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// The uplink reconnects now (after the answer went out).
    Reconnect,
    /// A new configuration file is in force on disk: apply it as SIGHUP does and watch for
    /// a broker to accept a connection with it until `pending.deadline_ms`.
    Apply {
        pending: Pending,
        /// Its `[mqtt]` equals the running one: the connection in force confirms it.
        mqtt_unchanged: bool,
    },
    /// Republish a window of the local history; answered when it ends
    /// ([`Service::finished`]).
    Backfill {
        id: String,
        expires_ms: i64,
        from_ms: i64,
        to_ms: i64,
        max_fixes: Option<u64>,
    },
}

/// One request handled.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    /// Nothing while the request's command still runs (a repeated id of a backfill).
    pub answer: Option<Answer>,
    pub effect: Option<Effect>,
    /// To write to the buffer's file before the answer goes out.
    pub rows: Vec<AnswerRow>,
    /// For metrics and logs: `ok`, `repeat`, or the error's code.
    pub outcome: &'static str,
    /// The error, when there is one (logged by the caller).
    pub error: Option<CommandError>,
}

/// The service's state: the answered ids, the operator's key, the configuration file.
#[derive(Debug)]
pub struct Service {
    ledger: Ledger,
    key: Option<PublicKey>,
    /// `[commands]` as it runs: a new file must carry the same.
    commands: CommandsSettings,
    /// The running `[mqtt]`, to tell whether a new file changes it.
    running: Settings,
    /// The configuration file (`None` without one: `config.get` and `config.set` are
    /// unavailable).
    config: Option<PathBuf>,
    /// The file's text as in force (`None`: not told; `config.get` reads the file).
    in_force: Option<String>,
    /// A backfill runs (one at a time).
    backfilling: bool,
    /// A `config.set` waits for its confirmation (one at a time).
    confirming: bool,
    version: &'static str,
}

impl Service {
    /// The service on `settings`, with the ledger as the buffer's file kept it (`rows`);
    /// returns the rows of commands interrupted by the last stop, to write back. The key
    /// was checked with the configuration; one that cannot be read now refuses every
    /// request (`key_error`), never runs them unsigned.
    pub fn new(
        settings: &Settings,
        config: Option<PathBuf>,
        rows: Vec<AnswerRow>,
        now_ms: i64,
    ) -> (Service, Vec<AnswerRow>, Option<String>) {
        let (ledger, interrupted) = Ledger::from_rows(rows, now_ms);
        let (key, key_error) = match &settings.commands.public_key_file {
            None => (None, None),
            Some(path) => match PublicKey::from_file(path) {
                Ok(k) => (Some(k), None),
                Err(e) => (None, Some(e)),
            },
        };
        let service = Service {
            ledger,
            key,
            commands: settings.commands.clone(),
            running: settings.clone(),
            config,
            in_force: None,
            backfilling: false,
            confirming: false,
            version: env!("CARGO_PKG_VERSION"),
        };
        (service, interrupted, key_error)
    }

    /// A configuration set remotely waits for its confirmation (from a start that found
    /// one owed): no second one until it is settled.
    pub fn set_confirming(&mut self, confirming: bool) {
        self.confirming = confirming;
    }

    /// The settings in force changed (a reload or a rollback).
    pub fn set_running(&mut self, settings: Settings) {
        self.running = settings;
    }

    /// Handle one request's bytes at `now_ms` (receiver-checked UTC).
    pub fn handle(&mut self, raw: &[u8], now_ms: i64, facts: &Facts) -> Handled {
        let key_missing = self.commands.public_key_file.is_some() && self.key.is_none();
        let read = if key_missing {
            Err(Refused {
                id: None,
                error: CommandError::Unauthorized("the configured public key cannot be read"),
            })
        } else {
            request::read(raw, now_ms, self.key.as_ref())
        };
        match read {
            Err(refused) => self.refused(refused, now_ms),
            Ok(req) => self.request(req, now_ms, facts),
        }
    }

    fn refused(&mut self, refused: Refused, now_ms: i64) -> Handled {
        let Refused { id, error } = refused;
        // An id answered before gets that answer again, unless the request is not
        // authorized: an answer is never shown to a request that could not be trusted.
        if let (Some(id), false) = (&id, matches!(error, CommandError::Unauthorized(_))) {
            if let Seen::Answered(bytes) = self.ledger.seen(id, now_ms) {
                return repeat(id, &bytes);
            }
        }
        Handled {
            answer: id.as_deref().map(|id| Answer::error(id, &error)),
            effect: None,
            rows: Vec::new(),
            outcome: crate::error::Classified::code(&error),
            error: Some(error),
        }
    }

    fn request(&mut self, req: Request, now_ms: i64, facts: &Facts) -> Handled {
        match self.ledger.seen(&req.id, now_ms) {
            Seen::Answered(bytes) => return repeat(&req.id, &bytes),
            Seen::Running => {
                return Handled {
                    answer: None,
                    effect: None,
                    rows: Vec::new(),
                    outcome: "repeat",
                    error: None,
                }
            }
            Seen::New => {}
        }
        let start = match self.ledger.start(&req.id, req.expires_ms, now_ms) {
            Ok(row) => row,
            Err(e) => {
                return self.refused(
                    Refused {
                        id: Some(req.id),
                        error: e,
                    },
                    now_ms,
                )
            }
        };
        let (result, effect) = self.run(&req, now_ms, facts);
        let (answer, outcome, error) = match result {
            Ok(None) => {
                // Runs on: its start is recorded, its answer comes when it ends.
                return Handled {
                    answer: None,
                    effect,
                    rows: vec![start],
                    outcome: "ok",
                    error: None,
                };
            }
            Ok(Some(value)) => (Answer::ok(&req.id, value), "ok", None),
            Err(e) => (
                Answer::error(&req.id, &e),
                crate::error::Classified::code(&e),
                Some(e),
            ),
        };
        let row = self.ledger.answered(&answer, req.expires_ms);
        Handled {
            answer: Some(answer),
            effect,
            rows: vec![row],
            outcome,
            error,
        }
    }

    /// A running command (a backfill) ended with `result`: its one answer, and its row.
    pub fn finished(
        &mut self,
        id: &str,
        expires_ms: i64,
        result: Result<Value, CommandError>,
    ) -> (Answer, AnswerRow) {
        self.backfilling = false;
        let answer = match result {
            Ok(v) => Answer::ok(id, v),
            Err(e) => Answer::error(id, &e),
        };
        let row = self.ledger.answered(&answer, expires_ms);
        (answer, row)
    }

    /// The confirmation of a remote configuration is settled (confirmed or rolled back).
    pub fn settled(&mut self) {
        self.confirming = false;
    }

    /// Run `req`: `Ok(Some(result))` answered now, `Ok(None)` answered later.
    #[allow(clippy::type_complexity)]
    fn run(
        &mut self,
        req: &Request,
        now_ms: i64,
        facts: &Facts,
    ) -> (Result<Option<Value>, CommandError>, Option<Effect>) {
        match &req.cmd {
            Cmd::Ping => (
                Ok(Some(json!({
                    "version": self.version,
                    "uptime_s": facts.snapshot.get("uptime_s").cloned().unwrap_or(Value::Null),
                    "status": facts.snapshot.get("status").cloned().unwrap_or(Value::Null),
                }))),
                None,
            ),
            Cmd::Status => (Ok(Some(facts.snapshot.clone())), None),
            Cmd::ConfigGet => (self.config_get().map(Some), None),
            Cmd::Reconnect => (
                Ok(Some(json!({"reconnecting": true}))),
                Some(Effect::Reconnect),
            ),
            Cmd::ConfigSet { toml, if_sha256 } => {
                match self.config_set(&req.id, toml, if_sha256.as_deref(), now_ms) {
                    Ok((value, effect)) => (Ok(Some(value)), Some(effect)),
                    Err(e) => (Err(e), None),
                }
            }
            Cmd::Backfill {
                from_ms,
                to_ms,
                max_fixes,
            } => {
                if self.backfilling {
                    return (
                        Err(CommandError::Busy("a backfill runs; one at a time")),
                        None,
                    );
                }
                if self.running.buffer.history.keep.is_none() {
                    return (
                        Err(CommandError::Unavailable(
                            "the local history is off ([history] keep_days = 0)".into(),
                        )),
                        None,
                    );
                }
                self.backfilling = true;
                (
                    Ok(None),
                    Some(Effect::Backfill {
                        id: req.id.clone(),
                        expires_ms: req.expires_ms,
                        from_ms: *from_ms,
                        to_ms: *to_ms,
                        max_fixes: *max_fixes,
                    }),
                )
            }
        }
    }

    fn config_path(&self) -> Result<&PathBuf, CommandError> {
        self.config.as_ref().ok_or_else(|| {
            CommandError::Unavailable("the agent runs without a configuration file".into())
        })
    }

    /// The configuration file's text as in force: what the agent runs on, even when the
    /// file on disk was edited since and not reloaded (or a reload refused it).
    pub fn set_in_force(&mut self, text: String) {
        self.in_force = Some(text);
    }

    fn config_get(&self) -> Result<Value, CommandError> {
        let path = self.config_path()?;
        let text = match &self.in_force {
            Some(text) => text.clone(),
            None => std::fs::read_to_string(path)
                .map_err(|e| CommandError::Failed(format!("{}: {e}", path.display())))?,
        };
        let sha256 = remote_config::sha256_hex(text.as_bytes());
        Ok(json!({"toml": text, "sha256": sha256}))
    }

    fn config_set(
        &mut self,
        id: &str,
        toml: &str,
        if_sha256: Option<&str>,
        now_ms: i64,
    ) -> Result<(Value, Effect), CommandError> {
        let path = self.config_path()?.clone();
        if self.confirming {
            return Err(CommandError::Busy(
                "a configuration set remotely waits for its confirmation",
            ));
        }
        let old = std::fs::read_to_string(&path)
            .map_err(|e| CommandError::Failed(format!("{}: {e}", path.display())))?;
        let old_sha = remote_config::sha256_hex(old.as_bytes());
        if let Some(expected) = if_sha256 {
            if expected != old_sha {
                return Err(CommandError::Conflict {
                    expected: expected.to_owned(),
                    actual: old_sha,
                });
            }
        }
        let new = match crate::app::config_file::parse(toml) {
            Ok(s) => s,
            Err(ConfigError::Invalid { problems }) => {
                return Err(CommandError::InvalidConfig(problems))
            }
            Err(e) => return Err(CommandError::Failed(e.to_string())),
        };
        if new.commands != self.commands {
            return Err(CommandError::Forbidden);
        }
        let sha256 = remote_config::sha256_hex(toml.as_bytes());
        let confirm_ms = u64::try_from(self.commands.confirm.as_millis()).unwrap_or(u64::MAX);
        let pending = Pending {
            id: id.to_owned(),
            sha256: sha256.clone(),
            previous_sha256: old_sha.clone(),
            deadline_ms: now_ms.saturating_add(i64::try_from(confirm_ms).unwrap_or(i64::MAX)),
            confirm_ms,
            state: State::Waiting,
        };
        remote_config::install(&Files::new(&path), &old, toml, &pending)
            .map_err(|e| CommandError::Failed(format!("writing {}: {e}", path.display())))?;
        self.confirming = true;
        let mqtt_unchanged = new.mqtt == self.running.mqtt;
        let value = json!({
            "sha256": sha256,
            "previous_sha256": old_sha,
            "confirm_by": crate::fix::format_time_ms(pending.deadline_ms),
        });
        Ok((
            value,
            Effect::Apply {
                pending,
                mqtt_unchanged,
            },
        ))
    }
}

fn repeat(id: &str, bytes: &[u8]) -> Handled {
    Handled {
        answer: Answer::from_bytes(id, bytes),
        effect: None,
        rows: Vec::new(),
        outcome: "repeat",
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-01T00:00:00Z.
    const NOW: i64 = 1_767_225_600_000;

    fn facts() -> Facts {
        Facts {
            snapshot: json!({"status": "healthy", "uptime_s": 12.5}),
        }
    }

    fn req(id: &str, cmd: &str, args: Value) -> Vec<u8> {
        json!({"id": id, "cmd": cmd, "args": args, "expires": "2026-01-01T00:10:00Z"})
            .to_string()
            .into_bytes()
    }

    /// A service on the file `text` in a temporary directory.
    fn service(text: &str) -> (tempfile::TempDir, PathBuf, Service) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        let settings = crate::app::config_file::parse(text).unwrap();
        let (s, _, key_error) = Service::new(&settings, Some(path.clone()), Vec::new(), NOW);
        assert_eq!(key_error, None);
        (dir, path, s)
    }

    #[test]
    fn an_id_runs_once_and_a_repeat_gets_the_first_answer_without_a_row() {
        let (_dir, _, mut s) = service("[commands]\nenabled = true\n");
        let first = s.handle(&req("p", "ping", json!({})), NOW, &facts());
        assert_eq!(first.outcome, "ok");
        assert_eq!(first.rows.len(), 1);
        let a = first.answer.clone().unwrap();
        assert_eq!(a.body["result"]["uptime_s"], 12.5);
        let later = Facts {
            snapshot: json!({"status": "degraded", "uptime_s": 99.0}),
        };
        let again = s.handle(&req("p", "ping", json!({})), NOW + 1_000, &later);
        assert_eq!(again.outcome, "repeat");
        assert_eq!(again.answer, Some(a));
        assert!(again.rows.is_empty());
        assert_eq!(again.effect, None);
    }

    /// The file as in force, not as on disk: edited since (no reload), `config.get`
    /// answers what the agent runs on; told of a reload, the new text.
    #[test]
    fn config_get_answers_the_file_in_force_not_an_edit_on_disk_that_was_not_reloaded() {
        let text = "[commands]\nenabled = true\n";
        let (_dir, path, mut s) = service(text);
        s.set_in_force(text.to_owned());
        let edited = format!("{text}# edited, not reloaded\n");
        std::fs::write(&path, &edited).unwrap();
        let h = s.handle(&req("g1", "config.get", json!({})), NOW, &facts());
        let a = h.answer.unwrap().body;
        assert_eq!(a["result"]["toml"], text);
        assert_eq!(
            a["result"]["sha256"],
            remote_config::sha256_hex(text.as_bytes())
        );
        s.set_in_force(edited.clone());
        let h = s.handle(&req("g2", "config.get", json!({})), NOW, &facts());
        let a = h.answer.unwrap().body;
        assert_eq!(a["result"]["toml"], edited.as_str());
    }

    #[test]
    fn an_unauthorized_request_never_sees_an_earlier_answer() {
        let (_dir, _, mut s) = service("[commands]\nenabled = true\n");
        s.handle(&req("p", "config.get", json!({})), NOW, &facts());
        // Now a key is required (as if configured): the same id, unsigned.
        s.commands.public_key_file = Some(PathBuf::from("/nonexistent"));
        let h = s.handle(&req("p", "config.get", json!({})), NOW, &facts());
        assert_eq!(h.outcome, "CMD_UNAUTHORIZED");
        assert!(h.answer.is_none(), "no id is trusted without a key");
    }

    #[test]
    fn config_set_refuses_a_changed_commands_section_and_a_stale_sha256_and_writes_nothing() {
        let text = "[commands]\nenabled = true\n";
        let (_dir, path, mut s) = service(text);
        let off = "[commands]\nenabled = false\n";
        let h = s.handle(
            &req("c1", "config.set", json!({"toml": off})),
            NOW,
            &facts(),
        );
        assert_eq!(h.outcome, "CMD_FORBIDDEN");
        let stale = "0".repeat(64);
        let h = s.handle(
            &req(
                "c2",
                "config.set",
                json!({"toml": text, "if_sha256": stale}),
            ),
            NOW,
            &facts(),
        );
        assert_eq!(h.outcome, "CMD_CONFLICT");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        let new = "[commands]\nenabled = true\n\n[report]\nmode = \"adaptive\"\n";
        let h = s.handle(
            &req("c3", "config.set", json!({"toml": new})),
            NOW,
            &facts(),
        );
        assert_eq!(h.outcome, "ok", "{:?}", h.error);
        let Some(Effect::Apply {
            pending,
            mqtt_unchanged,
        }) = h.effect
        else {
            panic!("applied")
        };
        assert!(mqtt_unchanged);
        assert_eq!(pending.deadline_ms, NOW + 300_000);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), new);
        // One at a time until it is confirmed or rolled back.
        let h = s.handle(
            &req("c4", "config.set", json!({"toml": text})),
            NOW,
            &facts(),
        );
        assert_eq!(h.outcome, "CMD_BUSY");
        s.settled();
        let h = s.handle(
            &req("c5", "config.set", json!({"toml": text})),
            NOW,
            &facts(),
        );
        assert_eq!(h.outcome, "ok");
    }

    #[test]
    fn a_backfill_runs_on_and_a_second_one_meanwhile_is_busy() {
        let (_dir, _, mut s) = service("[commands]\nenabled = true\n");
        let args = json!({"from": "2025-12-31T00:00:00Z", "to": "2025-12-31T01:00:00Z"});
        let h = s.handle(&req("b1", "backfill", args.clone()), NOW, &facts());
        assert_eq!(h.answer, None, "answered when it ends");
        assert_eq!(h.rows[0].answer, None, "recorded as running");
        assert!(matches!(h.effect, Some(Effect::Backfill { .. })));
        let repeat = s.handle(&req("b1", "backfill", args.clone()), NOW, &facts());
        assert_eq!((repeat.outcome, repeat.answer), ("repeat", None));
        let other = s.handle(&req("b2", "backfill", args.clone()), NOW, &facts());
        assert_eq!(other.outcome, "CMD_BUSY");
        let (a, row) = s.finished("b1", NOW + 600_000, Ok(json!({"fixes": 3})));
        assert_eq!(a.body["result"]["fixes"], 3);
        assert_eq!(row.answer, Some(a.to_bytes()));
        let again = s.handle(&req("b1", "backfill", args), NOW, &facts());
        assert_eq!(again.answer, Some(a));
    }
}
