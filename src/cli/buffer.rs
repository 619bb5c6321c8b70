//! `gps-agent buffer ...`: look into the store-and-forward buffer from the outside, safely
//! next to the running daemon. `stats` and `dead-letters` open the file read-only (WAL
//! readers never block the writer); `requeue` writes in one short transaction, waiting up to
//! the busy timeout for the daemon's group commit. None of them creates, migrates or moves a
//! file: that is the daemon's job at startup.
//!
//! Exit codes: 0 done, 1 error (one JSON line on stderr: `{"error": CODE, "message": ...}`).

use crate::buffer::{self, Buffer, BufferError};
use crate::config::BufferSettings;
use crate::error::Classified;
use crate::fix::{Fix, FixMode};
use clap::{Args, Subcommand};
use std::io::Write;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Args)]
pub struct BufferArgs {
    #[command(subcommand)]
    pub command: BufferCommand,
}

#[derive(Debug, Subcommand)]
pub enum BufferCommand {
    /// One JSON object: depth, oldest/newest seq and time, last_seq, stream, bytes, evicted,
    /// dead_letters.
    Stats {
        /// The buffer file (default: `[buffer] path` of the config).
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Dead letters as JSON Lines, oldest first.
    DeadLetters {
        #[arg(long)]
        db: Option<PathBuf>,
        /// At most this many lines.
        #[arg(long, default_value_t = 100_000)]
        limit: usize,
    },
    /// Dead letters back to pending (they keep their seqs); prints `{"requeued": N}`.
    Requeue {
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Test tool for the crash test: appends fixes at full speed with group commit until
    /// killed (or stdout closes), and drains the oldest like an uplink would. Prints, each
    /// on its own line: `i N` when it acknowledged every seq up to N (not yet durable),
    /// `a N` once a commit made those acks durable, `c N` once seqs up to N are committed.
    #[command(hide = true)]
    CrashWriter {
        #[arg(long)]
        db: PathBuf,
        /// Group commit interval in milliseconds.
        #[arg(long, default_value_t = 5)]
        commit_ms: u64,
        /// Group commit size.
        #[arg(long, default_value_t = 200)]
        commit_max: u32,
        /// Acknowledge the oldest `ack_batch` fixes after every this many commits (0: never).
        #[arg(long, default_value_t = 0)]
        ack_every: u64,
        #[arg(long, default_value_t = 50)]
        ack_batch: usize,
    },
}

/// Runs one `buffer` subcommand; `default_db` is the configured buffer path.
pub fn run(args: BufferArgs, default_db: &Path) -> i32 {
    let db = |p: Option<PathBuf>| p.unwrap_or_else(|| default_db.to_path_buf());
    let result = match args.command {
        BufferCommand::Stats { db: p } => stats(&db(p)),
        BufferCommand::DeadLetters { db: p, limit } => dead_letters(&db(p), limit),
        BufferCommand::Requeue { db: p } => requeue(&db(p)),
        BufferCommand::CrashWriter {
            db,
            commit_ms,
            commit_max,
            ack_every,
            ack_batch,
        } => crash_writer(db, commit_ms, commit_max, ack_every, ack_batch),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            let line = serde_json::json!({"error": e.code(), "message": e.to_string()});
            eprintln!("{line}");
            1
        }
    }
}

fn print_line(value: &impl serde::Serialize) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (`| head`) is not an error worth reporting.
    let _ = serde_json::to_writer(&mut out, value);
    let _ = writeln!(out);
}

fn stats(path: &Path) -> Result<(), BufferError> {
    let conn = buffer::open_read_only(path)?;
    print_line(&buffer::file_stats(&conn, path)?);
    Ok(())
}

fn dead_letters(path: &Path, limit: usize) -> Result<(), BufferError> {
    let conn = buffer::open_read_only(path)?;
    for letter in buffer::list_dead_letters(&conn, path, limit)? {
        print_line(&letter);
    }
    Ok(())
}

fn requeue(path: &Path) -> Result<(), BufferError> {
    let conn = buffer::open_existing(path)?;
    let n = buffer::requeue_dead_letters(&conn, path)?;
    print_line(&serde_json::json!({ "requeued": n }));
    Ok(())
}

fn crash_writer(
    db: PathBuf,
    commit_ms: u64,
    commit_max: u32,
    ack_every: u64,
    ack_batch: usize,
) -> Result<(), BufferError> {
    let cfg = BufferSettings {
        path: db,
        commit_interval: std::time::Duration::from_millis(commit_ms.max(1)),
        commit_max: usize::try_from(commit_max)
            .ok()
            .and_then(NonZeroUsize::new)
            .unwrap_or(NonZeroUsize::MIN),
        // No eviction: the crash test counts every seq from 1.
        max_fixes: NonZeroU64::MAX,
        max_bytes: u64::MAX / 2,
        ..BufferSettings::default()
    };
    let (mut buf, _) = Buffer::open(&cfg)?;
    let mut time_ms: i64 = 1_700_000_000_000 + buf.committed_seq() as i64 * 100;
    let mut out = std::io::stdout().lock();
    let mut commits = 0u64;
    // Acked in the open group: durable with its commit.
    let mut acked_in_group: Option<u64> = None;
    let mut batch = Vec::with_capacity(ack_batch);
    let mut seqs = Vec::with_capacity(ack_batch);
    loop {
        time_ms += 100;
        let fix = Fix {
            time_ms,
            lat: 41.574970205 + (time_ms % 1000) as f64 * 1e-7,
            lon: -93.750558641,
            alt_m: Some(278.02),
            speed_mps: Some(1.673),
            course_deg: Some(92.308),
            hdop: Some(1.0),
            sats: Some(9),
            mode: FixMode::ThreeD,
            event: None,
        };
        let appended = buf.append(&fix, Instant::now())?;
        let Some(seq) = appended.committed_upto else {
            continue;
        };
        // Printed only after COMMIT returned: the parent may rely on it being durable.
        let printed = match acked_in_group.take() {
            Some(acked) => writeln!(out, "a {acked}\nc {seq}"),
            None => writeln!(out, "c {seq}"),
        };
        if printed.and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
        commits += 1;
        if ack_every == 0 || !commits.is_multiple_of(ack_every) {
            continue;
        }
        buf.next_batch(ack_batch, &mut batch)?;
        let Some(last) = batch.last().map(|s| s.seq) else {
            continue;
        };
        seqs.clear();
        seqs.extend(batch.iter().map(|s| s.seq));
        buf.ack(&seqs)?;
        acked_in_group = Some(last);
        if writeln!(out, "i {last}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(());
        }
    }
}
