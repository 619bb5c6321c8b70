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
    /// Test tool for the crash and power-cut tests: appends fixes at full speed until killed
    /// (or stdout closes), and drains the oldest like an uplink would. Prints, each on its own
    /// line: `c N` once seqs up to N are committed (they survive the process), `s N` once
    /// they are synced (they survive a power cut), `i N` when it acknowledged every seq up to
    /// N, `a N` once those acknowledgements are committed, `A N` once they are synced.
    #[command(hide = true)]
    CrashWriter {
        #[arg(long)]
        db: PathBuf,
        /// Sync interval in milliseconds (`commit_interval_s`).
        #[arg(long, default_value_t = 5)]
        commit_ms: u64,
        /// Sync after this many fixes (`commit_max`).
        #[arg(long, default_value_t = 200)]
        commit_max: u32,
        /// Acknowledge the oldest `ack_batch` fixes after every this many syncs (0: never).
        #[arg(long, default_value_t = 0)]
        ack_every: u64,
        #[arg(long, default_value_t = 50)]
        ack_batch: usize,
        /// Checkpoint at a sync once the WAL holds this many frames (default: the buffer's).
        #[arg(long)]
        checkpoint_frames: Option<i32>,
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
            checkpoint_frames,
        } => crash_writer(
            db,
            commit_ms,
            commit_max,
            (ack_every, ack_batch),
            checkpoint_frames,
        ),
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
    (ack_every, ack_batch): (u64, usize),
    checkpoint_frames: Option<i32>,
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
    if let Some(frames) = checkpoint_frames {
        buf.set_checkpoint_frames(frames);
    }
    let mut time_ms: i64 = 1_700_000_000_000 + buf.committed_seq() as i64 * 100;
    let mut out = std::io::stdout().lock();
    let mut syncs = 0u64;
    // Acknowledged, not yet in a commit; committed, not yet synced.
    let (mut acked_issued, mut acked_committed): (Option<u64>, Option<u64>) = (None, None);
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
        // Printed only after the call returned: the parent may rely on each line.
        let mut lines = String::new();
        if acked_issued.is_some() && buf.acks_waiting() == 0 {
            // A commit wrote the deletes of the acknowledgements issued before it.
            if let Some(acked) = acked_issued.take() {
                lines.push_str(&format!("a {acked}\n"));
                acked_committed = Some(acked);
            }
        }
        if let Some(seq) = appended.seq {
            lines.push_str(&format!("c {seq}\n"));
        }
        let Some(synced) = appended.synced_upto else {
            if write_lines(&mut out, &lines).is_err() {
                return Ok(());
            }
            continue;
        };
        if let Some(acked) = acked_committed.take() {
            lines.push_str(&format!("A {acked}\n"));
        }
        lines.push_str(&format!("s {synced}\n"));
        syncs += 1;
        if ack_every > 0 && syncs.is_multiple_of(ack_every) {
            buf.next_batch(ack_batch, &mut batch)?;
            if let Some(last) = batch.last().map(|s| s.seq) {
                seqs.clear();
                seqs.extend(batch.iter().map(|s| s.seq));
                // Said before the call: `ack` may already write the deletes, and the power
                // may go inside it.
                lines.push_str(&format!("i {last}\n"));
                if write_lines(&mut out, &std::mem::take(&mut lines)).is_err() {
                    return Ok(());
                }
                buf.ack(&seqs)?;
                acked_issued = Some(last);
            }
        }
        if write_lines(&mut out, &lines).is_err() {
            return Ok(());
        }
    }
}

fn write_lines(out: &mut impl Write, lines: &str) -> std::io::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    out.write_all(lines.as_bytes())?;
    out.flush()
}
