//! Remote commands (`[commands]`, off by default): requests from the fleet's back end, each
//! checked, run once and answered once.
//!
//! Layout: [`request`] a request read and checked (size, signature, shape, expiry,
//! arguments); [`signature`] the operator's Ed25519 key and the check of a signed request;
//! `crate::base64` the decoding it needs; [`ledger`] the answered ids (each run once);
//! [`answer`] the answers' shape; [`error`] the codes; [`remote_config`] `config.set`'s
//! files on disk (atomic write, rollback across restarts); [`service`] one request in, its
//! answer and effect out (transport-independent); [`stage`] the service at run time.

pub mod answer;
pub mod error;
pub mod ledger;
pub mod remote_config;
pub mod request;
pub mod service;
pub mod signature;
pub mod stage;

use crate::config::{CommandsSettings, Problem};
use signature::PublicKey;

/// The check of `[commands] public_key_file` that `check-config`, `run` and every reload run
/// (see `crate::app::config_file`): the key must read as an Ed25519 public key. Nothing when
/// the key already has a problem of its own in `earlier` (a missing file).
pub fn key_problems(commands: &CommandsSettings, earlier: &[Problem]) -> Vec<Problem> {
    const KEY: &str = "commands.public_key_file";
    let Some(path) = &commands.public_key_file else {
        return Vec::new();
    };
    if earlier.iter().any(|p| p.key == KEY) {
        return Vec::new();
    }
    match PublicKey::from_file(path) {
        Ok(_) => Vec::new(),
        Err(why) => vec![Problem::new(KEY, format!("{why} (CMD_KEY)"))],
    }
}
