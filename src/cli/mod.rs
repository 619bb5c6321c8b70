//! The command line (`../shared/spec/INTERFACE.md`, "Command line"): one file per
//! subcommand; each returns the process exit code.

pub mod buffer;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "gps-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Look into the store-and-forward buffer.
    Buffer(buffer::BufferArgs),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    match cli.command {
        Command::Buffer(args) => buffer::run(args, &crate::config::BufferConfig::default().path),
    }
}
