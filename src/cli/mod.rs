//! The command line (`../shared/spec/INTERFACE.md`, "Command line"): argument parsing and
//! logging set-up here, one file per subcommand; each returns the process exit code.
//!
//! Exit codes: 0 success; 1 failure at run time (or `status`: degraded); 2 usage error
//! (clap) or `status`: unhealthy/unreachable; 65 input that is not a fixes message
//! (`decode`, `EX_DATAERR`); 66 input file missing (`EX_NOINPUT`);
//! 69 `demo` in a build without the `demo` feature (`EX_UNAVAILABLE`); 78 configuration invalid
//! (`EX_CONFIG`, also listed in the unit's `RestartPreventExitStatus`).

pub mod buffer;
pub mod check_config;
pub mod decode;
pub mod parse;
pub mod report;
pub mod run;

use crate::config::{self, ConfigError, Settings};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};

/// Exit code for an invalid configuration (sysexits `EX_CONFIG`).
pub const EXIT_CONFIG: i32 = 78;
/// Exit code for a missing or unreadable input file (sysexits `EX_NOINPUT`).
pub const EXIT_NOINPUT: i32 = 66;
/// Exit code for a subcommand this build does not provide yet (sysexits `EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: i32 = 69;
/// Exit code of `run` when another agent holds the state (sysexits `EX_TEMPFAIL`: it may
/// be tried again once that one has stopped, as systemd's restart does).
pub const EXIT_LOCKED: i32 = 75;

/// Where the configuration is read from when neither `--config` nor `GPS_AGENT_CONFIG` says.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/gps-agent/config.toml";

#[derive(Debug, Parser)]
#[command(
    name = "gps-agent",
    version,
    about = "On-vehicle GPS telematics edge agent"
)]
pub struct Cli {
    /// Configuration file (default /etc/gps-agent/config.toml).
    #[arg(long, global = true, env = "GPS_AGENT_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log format; default json when the log output is not a terminal, text otherwise.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log level or tracing filter (e.g. `info`, `gps_agent::gnss=debug`).
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: runs until SIGTERM/SIGINT, then flushes and exits 0.
    Run,
    /// Exit 0 if the configuration is valid; exit 78 with one line per problem.
    CheckConfig,
    /// Offline: NMEA log in, accepted fixes out as JSON Lines on stdout.
    Parse(parse::ParseArgs),
    /// Offline: captured fixes messages (v2 CBOR or v1 JSON) in, their fixes out as JSON Lines.
    Decode(decode::DecodeArgs),
    /// One health snapshot from a running agent; --watch tails the stream.
    Status {
        /// The agent's health endpoint, e.g. http://127.0.0.1:8470 (default: `[health] listen`
        /// of the configuration, else 127.0.0.1:8470).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Follow the agent: one line per snapshot until interrupted (Ctrl-C).
        #[arg(long)]
        watch: bool,
    },
    /// Newcomer's demo: simulated receiver + embedded broker, no setup.
    #[cfg(feature = "demo")]
    Demo(crate::demo::DemoArgs),
    /// Newcomer's demo (not in this build: built without the `demo` feature).
    #[cfg(not(feature = "demo"))]
    Demo,
    /// Look into the store-and-forward buffer (safe while the daemon runs).
    Buffer(buffer::BufferArgs),
}

pub mod status;

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return e.exit_code();
        }
    };
    // `run` logs to stdout (journald); the offline subcommands keep stdout for their data;
    // the demo's terminal is for the demo: the agent's and the broker's logs go to a file.
    let demo_log =
        (cfg!(feature = "demo") && matches!(cli.command, Command::Demo { .. })).then(demo_log_path);
    let output = match (&cli.command, &demo_log) {
        (_, Some(path)) => crate::logging::Output::File(path),
        (Command::Run, None) => crate::logging::Output::Stdout,
        _ => crate::logging::Output::Stderr,
    };
    let format = cli.log_format.map(|f| match f {
        LogFormat::Text => crate::logging::Format::Text,
        LogFormat::Json => crate::logging::Format::Json,
    });
    crate::logging::init(output, format, &cli.log_level);
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    match cli.command {
        Command::CheckConfig => check_config::run(&config_path),
        Command::Parse(args) => parse::run(&args, cli.config.as_deref()),
        Command::Decode(args) => decode::run(&args),
        Command::Status { url, watch } => {
            let url = match url {
                Some(url) => url,
                // A configuration that cannot be read leaves the agent unfindable: exit 2.
                None => match config_or_default(cli.config.as_deref()) {
                    Ok(cfg) => status::url_for(cfg.health.listen),
                    Err(_) => return status::EXIT_UNHEALTHY,
                },
            };
            status::run(&url, watch)
        }
        Command::Buffer(args) => match config_or_default(cli.config.as_deref()) {
            Ok(cfg) => buffer::run(args, &cfg.buffer.path),
            Err(code) => code,
        },
        Command::Run => run::run(&config_path),
        #[cfg(feature = "demo")]
        Command::Demo(args) => crate::demo::run(&args, demo_log.as_deref()),
        #[cfg(not(feature = "demo"))]
        Command::Demo => {
            eprintln!("gps-agent: this build has no demo (built without the `demo` feature)");
            EXIT_UNAVAILABLE
        }
    }
}

/// Where `demo` writes the agent's and the broker's logs: a file in the temporary directory
/// that outlives the demo, named on its terminal at the start and the end.
fn demo_log_path() -> PathBuf {
    std::env::temp_dir().join(format!("gps-agent-demo-{}.log", std::process::id()))
}

/// The configuration for the offline subcommands (`parse`, `buffer`): the file named by
/// `--config`/`GPS_AGENT_CONFIG` (which must be valid), else `/etc/gps-agent/config.toml`
/// when it exists, else the defaults. Problems are printed; the error is the exit code.
pub fn config_or_default(explicit: Option<&Path>) -> Result<Settings, i32> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let default = PathBuf::from(DEFAULT_CONFIG_PATH);
            if !default.exists() {
                return Ok(Settings::default());
            }
            default
        }
    };
    match config::load(&path) {
        Ok(cfg) => Ok(cfg),
        Err(ConfigError::Invalid { problems }) => {
            for p in &problems {
                eprintln!("{}: {}", path.display(), p);
            }
            Err(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("{}: {}", path.display(), e);
            Err(EXIT_CONFIG)
        }
    }
}
