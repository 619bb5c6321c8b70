//! The command line (`../shared/spec/INTERFACE.md`, "Command line"): one file per
//! subcommand; each returns the process exit code.

pub mod status;

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    0
}
