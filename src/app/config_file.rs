//! The configuration file as the agent takes it: `crate::config`'s checks, and the check of
//! the files the stages will load from it (the uplink's password, CA, certificate and key;
//! the commands' public key), each problem named by its key and line. The one check
//! `check-config`, `run`, every SIGHUP and a remote `config.set` use, so what one accepts
//! the others can run. It only reads.

use crate::commands;
use crate::config::{self, ConfigError, Problem, Settings};
use crate::uplink::settings::file_problems;
use std::path::Path;

/// A file that passed: its settings and its text (what `config.get` answers).
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub settings: Settings,
    pub text: String,
}

/// Read and check the file at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = config::read(path)?;
    let settings = parse(&text)?;
    Ok(Loaded { settings, text })
}

/// Check config text as a file at the configured path would be checked.
pub fn parse(text: &str) -> Result<Settings, ConfigError> {
    config::parse_str_with(text, files)
}

/// The problems of the files the stages will load, for settings with `earlier` problems.
fn files(settings: &Settings, earlier: &[Problem]) -> Vec<Problem> {
    let mut out = file_problems(&settings.mqtt, &settings.device.id, earlier);
    out.extend(commands::key_problems(&settings.commands, earlier));
    out
}
