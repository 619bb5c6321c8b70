//! Why a request was not run, or did not do what it asked: one code per reason, in the answer
//! (`"error": {"code", "message"}`), the logs (once a minute per code) and the metrics
//! (`gps_agent_commands_total{result=code}`).

use crate::config::Problem;
use crate::error::{Classified, ErrorClass};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    /// Not a request: not JSON, not an object, a missing or wrongly typed `id`, `cmd` or
    /// `expires`.
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request of {bytes} bytes; at most {max} are read")]
    TooLarge { bytes: usize, max: usize },
    #[error("request expired at {expires}")]
    Expired { expires: String },
    #[error("unknown command {0:?}")]
    Unknown(String),
    /// Unsigned, or signed with another key, or its body changed, while a key is configured.
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
    /// `config.set`: the file does not pass `check-config`.
    #[error("the configuration does not pass check-config: {} problem(s)", .0.len())]
    InvalidConfig(Vec<Problem>),
    /// `config.set` with `if_sha256` that is not the file in force.
    #[error("the configuration in force is {actual}, not {expected}")]
    Conflict { expected: String, actual: String },
    /// `config.set` changing `[commands]`, which only a hand on the vehicle may change.
    #[error("[commands] cannot be changed remotely")]
    Forbidden,
    /// Something of the same kind is under way (a backfill, a configuration waiting for its
    /// confirmation), or the agent holds as many answered ids as it keeps.
    #[error("busy: {0}")]
    Busy(&'static str),
    /// What the command needs is off or missing (the local history, the buffer file).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The command ran and failed (a file could not be written).
    #[error("failed: {0}")]
    Failed(String),
    /// The agent stopped while the command ran; it is not run again under the same id.
    #[error("the agent restarted while this request ran; ask again with a new id")]
    Interrupted,
    /// `config.set`: no broker endpoint accepted a connection with the new file in time.
    #[error(
        "no broker endpoint accepted a connection with the new configuration within {confirm_s} s; \
         the previous file is in force again"
    )]
    RolledBack { confirm_s: f64 },
}

impl CommandError {
    /// Every code, for metrics series that exist before the first request.
    pub const CODES: [&'static str; 14] = [
        "CMD_MALFORMED",
        "CMD_TOO_LARGE",
        "CMD_EXPIRED",
        "CMD_UNKNOWN",
        "CMD_UNAUTHORIZED",
        "CMD_INVALID_ARGS",
        "CMD_INVALID_CONFIG",
        "CMD_CONFLICT",
        "CMD_FORBIDDEN",
        "CMD_BUSY",
        "CMD_UNAVAILABLE",
        "CMD_FAILED",
        "CMD_INTERRUPTED",
        "CMD_ROLLED_BACK",
    ];
}

impl Classified for CommandError {
    fn code(&self) -> &'static str {
        match self {
            CommandError::Malformed(_) => "CMD_MALFORMED",
            CommandError::TooLarge { .. } => "CMD_TOO_LARGE",
            CommandError::Expired { .. } => "CMD_EXPIRED",
            CommandError::Unknown(_) => "CMD_UNKNOWN",
            CommandError::Unauthorized(_) => "CMD_UNAUTHORIZED",
            CommandError::InvalidArgs(_) => "CMD_INVALID_ARGS",
            CommandError::InvalidConfig(_) => "CMD_INVALID_CONFIG",
            CommandError::Conflict { .. } => "CMD_CONFLICT",
            CommandError::Forbidden => "CMD_FORBIDDEN",
            CommandError::Busy(_) => "CMD_BUSY",
            CommandError::Unavailable(_) => "CMD_UNAVAILABLE",
            CommandError::Failed(_) => "CMD_FAILED",
            CommandError::Interrupted => "CMD_INTERRUPTED",
            CommandError::RolledBack { .. } => "CMD_ROLLED_BACK",
        }
    }

    fn class(&self) -> ErrorClass {
        match self {
            CommandError::Busy(_)
            | CommandError::Unavailable(_)
            | CommandError::Failed(_)
            | CommandError::Interrupted
            | CommandError::RolledBack { .. } => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed_once() {
        let errors = [
            CommandError::Malformed(String::new()),
            CommandError::TooLarge { bytes: 0, max: 0 },
            CommandError::Expired {
                expires: String::new(),
            },
            CommandError::Unknown(String::new()),
            CommandError::Unauthorized(""),
            CommandError::InvalidArgs(String::new()),
            CommandError::InvalidConfig(Vec::new()),
            CommandError::Conflict {
                expected: String::new(),
                actual: String::new(),
            },
            CommandError::Forbidden,
            CommandError::Busy(""),
            CommandError::Unavailable(String::new()),
            CommandError::Failed(String::new()),
            CommandError::Interrupted,
            CommandError::RolledBack { confirm_s: 0.0 },
        ];
        let codes: Vec<&str> = errors.iter().map(Classified::code).collect();
        assert_eq!(codes, CommandError::CODES);
    }
}
