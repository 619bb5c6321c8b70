//! Answers, as the spec writes them: `{"id", "ok": true, "result"}` or `{"id", "ok": false,
//! "error": {"code", "message"}}`; a `config.set` that was rolled back gets a second answer
//! with `"rolled_back": true`. The problems of a refused configuration are listed under
//! `error.problems`, each with its key and line, as `check-config` prints them.

use super::error::CommandError;
use crate::error::Classified;
use serde_json::{json, Value};

/// One answer to one request id, ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub id: String,
    pub body: Value,
}

impl Answer {
    pub fn ok(id: &str, result: Value) -> Answer {
        Answer {
            id: id.to_owned(),
            body: json!({"id": id, "ok": true, "result": result}),
        }
    }

    pub fn error(id: &str, error: &CommandError) -> Answer {
        let mut e = json!({"code": error.code(), "message": error.to_string()});
        if let CommandError::InvalidConfig(problems) = error {
            e["problems"] = problems
                .iter()
                .map(|p| json!({"key": p.key, "line": p.line, "message": p.message, "text": p.to_string()}))
                .collect();
        }
        let mut body = json!({"id": id, "ok": false, "error": e});
        if matches!(error, CommandError::RolledBack { .. }) {
            body["rolled_back"] = Value::Bool(true);
        }
        Answer {
            id: id.to_owned(),
            body,
        }
    }

    /// The answer as published.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.body.to_string().into_bytes()
    }

    /// An answer stored earlier (the ledger keeps the published bytes).
    pub fn from_bytes(id: &str, bytes: &[u8]) -> Option<Answer> {
        Some(Answer {
            id: id.to_owned(),
            body: serde_json::from_slice(bytes).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Problem;

    #[test]
    fn answers_have_the_spec_s_shape() {
        assert_eq!(
            Answer::ok("r-1", json!({"version": "1"})).body,
            json!({"id": "r-1", "ok": true, "result": {"version": "1"}})
        );
        let e = Answer::error("r-2", &CommandError::Unknown("reboot".into()));
        assert_eq!(e.body["ok"], false);
        assert_eq!(e.body["error"]["code"], "CMD_UNKNOWN");
        assert!(e.body.get("rolled_back").is_none());
        let r = Answer::error("r-3", &CommandError::RolledBack { confirm_s: 300.0 });
        assert_eq!(r.body["rolled_back"], true);
        assert_eq!(r.body["error"]["code"], "CMD_ROLLED_BACK");
        let back = Answer::from_bytes("r-3", &r.to_bytes()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn a_refused_configuration_lists_each_problem_with_key_and_line() {
        let problems = vec![Problem {
            key: "mqtt.url".into(),
            line: Some(4),
            message: "scheme \"http\" must be mqtt:// or mqtts://".into(),
        }];
        let a = Answer::error("c", &CommandError::InvalidConfig(problems));
        assert_eq!(a.body["error"]["code"], "CMD_INVALID_CONFIG");
        assert_eq!(a.body["error"]["problems"][0]["key"], "mqtt.url");
        assert_eq!(a.body["error"]["problems"][0]["line"], 4);
        assert_eq!(
            a.body["error"]["problems"][0]["text"],
            "mqtt.url (line 4): scheme \"http\" must be mqtt:// or mqtts://"
        );
    }
}
