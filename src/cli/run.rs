//! `gps-agent run`: load the configuration, start the runtime, run the agent
//! (`crate::app::run`) until SIGTERM or SIGINT.

use crate::app::{self, recv_signal, signal_stream, RunOptions, StartError};
use crate::config::ConfigError;
use crate::error::Classified;
use std::path::Path;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Runs the daemon; returns the process exit code (78 for a configuration that cannot be
/// used, 75 when another agent runs on the same buffer, both before anything starts).
pub fn run(config_path: &Path) -> i32 {
    // A configuration set remotely whose confirmation window ran out while the agent was
    // down is rolled back before the file is read (see `commands::remote_config`).
    let remote_config = recover_remote_config(config_path);
    let (cfg, config_text) = match crate::app::config_file::load(config_path) {
        Ok(loaded) => (loaded.settings, loaded.text),
        Err(ConfigError::Invalid { problems }) => {
            for p in &problems {
                error!(component = "config", code = "CONFIG_INVALID", problem = %p,
                    path = %config_path.display(), "configuration invalid");
                eprintln!("{}: {}", config_path.display(), p);
            }
            return super::EXIT_CONFIG;
        }
        Err(e) => {
            error!(component = "config", code = e.code(), error = %e, "configuration unreadable");
            eprintln!("{}: {}", config_path.display(), e);
            return super::EXIT_CONFIG;
        }
    };
    for w in crate::config::warnings(&cfg) {
        warn!(component = "config", code = w.code, key = w.key, warning = %w.message,
            "configuration exposes the agent");
    }
    // One thread runs every task (uplink, health server, main loop): they wait on the
    // network and on timers, and one thread wakes less often than two that hand tasks to
    // each other. SQLite runs on the blocking pool, the serial port on the ingest thread.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("gps-agent")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(component = "agent", error = %e, "cannot start the async runtime");
            return 1;
        }
    };
    let opts = RunOptions {
        config_path: Some(config_path.to_path_buf()),
        remote_config,
        config_text: Some(config_text),
        ..RunOptions::default()
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        // The handlers are in place before anything starts (the task below first runs when
        // this thread next waits, after the health endpoint may already answer): a SIGTERM
        // from the first moment is a clean stop, never the default death by signal.
        use tokio::signal::unix::SignalKind;
        let term = signal_stream(SignalKind::terminate());
        let int = signal_stream(SignalKind::interrupt());
        let signals = tokio::spawn(cancel_on_terminate(shutdown.clone(), term, int));
        let result = app::run(cfg, opts, shutdown).await;
        signals.abort();
        match result {
            Ok(()) => 0,
            Err(e) => {
                error!(component = "agent", code = e.code(), class = e.class().as_str(),
                    error = %e, "agent could not start");
                eprintln!("gps-agent run: {e}");
                match e {
                    StartError::Locked(_) => super::EXIT_LOCKED,
                    StartError::Stage(_) => 1,
                }
            }
        }
    })
}

/// SIGTERM or SIGINT cancel `token` (a second one is left to the default: the agent is
/// already stopping within bounded time).
async fn cancel_on_terminate(
    token: CancellationToken,
    mut term: crate::app::SignalStream,
    mut int: crate::app::SignalStream,
) {
    tokio::select! {
        Some(()) = recv_signal(&mut term) => info!(component = "agent", signal = "SIGTERM", "shutdown requested"),
        Some(()) = recv_signal(&mut int) => info!(component = "agent", signal = "SIGINT", "shutdown requested"),
    }
    token.cancel();
}

/// Finish what a stop interrupted of a remote `config.set` (nothing when none was owed).
fn recover_remote_config(config_path: &Path) -> Option<crate::commands::remote_config::AtStart> {
    use crate::commands::remote_config::{recover, AtStart, Files};
    let now_ms = crate::clock::Clock::default().utc_ms();
    match recover(&Files::new(config_path), now_ms) {
        Ok(AtStart::Nothing) => None,
        Ok(at) => {
            if let AtStart::RolledBack(p) = &at {
                warn!(component = "commands", code = "CMD_ROLLED_BACK", id = %p.id,
                    "a configuration set remotely was not confirmed in time; the previous file is back");
            }
            Some(at)
        }
        Err(e) => {
            warn!(component = "commands", code = "CMD_FAILED", error = %e,
                "the record of a configuration set remotely cannot be read; the file in place is used");
            None
        }
    }
}
