//! `gps-agent check-config`: exit 0 when the file is valid (printing any warning), 78 with
//! one line per problem. The unit's `ExecStartPre=` and `ExecReload=` run it, and `run`
//! checks with the same code: what passes here, the daemon can use.

use crate::app::config_file;
use crate::config::{self, ConfigError};
use std::path::Path;

pub fn run(path: &Path) -> i32 {
    match config_file::load(path) {
        Ok(config_file::Loaded { settings, .. }) => {
            for w in config::warnings(&settings) {
                println!("{}: {w}", path.display());
            }
            println!("{}: ok", path.display());
            0
        }
        Err(ConfigError::Invalid { problems }) => {
            for p in &problems {
                println!("{}: {}", path.display(), p);
            }
            super::EXIT_CONFIG
        }
        Err(e) => {
            println!("{}: {}", path.display(), e);
            super::EXIT_CONFIG
        }
    }
}
