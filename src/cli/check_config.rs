//! `gps-agent check-config`: exit 0 when the file is valid, 78 with one line per problem.

use crate::config::{self, ConfigError};
use std::path::Path;

pub fn run(path: &Path) -> i32 {
    match config::load(path) {
        Ok(_) => {
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
