//! `gps-agent parse FILE|-`: an NMEA capture in, accepted fixes out as JSON Lines, through the
//! same [`Pipeline`] as the daemon, so operators can check a receiver's capture.
//!
//! Thresholds come from `--config` (or `GPS_AGENT_CONFIG`) when given, else from
//! `/etc/gps-agent/config.toml` when it exists, else from the defaults. A summary line goes to
//! stderr at the end; stdout carries only fixes (and rejections with `--all`).
//!
//! `--report` prints instead what the configuration's `[report]` would make of the accepted
//! fixes ([`super::report`]): to tune the policy on a real drive before deploying it.

use crate::config::Settings;
use crate::fix::{format_time_ms, Numbered};
use crate::pipeline::{self, Pipeline, ReadError};
use crate::rejection::Rejection;
use crate::validate::Verdict;
use serde_json::json;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct ParseArgs {
    /// NMEA log to read, or `-` for standard input.
    pub input: PathBuf,
    /// Also print each rejected epoch with its reason.
    #[arg(long, conflicts_with = "report")]
    pub all: bool,
    /// Print what `[report]` keeps of the accepted fixes (kept share, track error, gaps,
    /// payload bytes) instead of the fixes.
    #[arg(long)]
    pub report: bool,
}

pub fn run(args: &ParseArgs, config_path: Option<&Path>) -> i32 {
    let cfg = match super::config_or_default(config_path) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    let input: Box<dyn Read> = if args.input.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        match std::fs::File::open(&args.input) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("gps-agent parse: cannot open {}: {e}", args.input.display());
                return super::EXIT_NOINPUT;
            }
        }
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let summary = if args.report {
        let mut fixes = Vec::new();
        parse_stream(input, &cfg, &mut |verdict, _| {
            if let Ok(fix) = verdict {
                fixes.push(*fix);
            }
            Ok(())
        })
        .and_then(|summary| {
            super::report::write(&mut out, &cfg, &fixes).map_err(ReadError::Sink)?;
            Ok(summary)
        })
    } else {
        parse_stream(input, &cfg, &mut |verdict, seq| {
            let line = match verdict {
                Ok(fix) => serde_json::to_string(&Numbered { seq, fix }).ok(),
                Err(rej) => args.all.then(|| rejection_json(rej)),
            };
            match line {
                Some(line) => writeln!(out, "{line}"),
                None => Ok(()),
            }
        })
    };
    match summary.and_then(|s| out.flush().map(|()| s).map_err(ReadError::Sink)) {
        Ok(summary) => {
            eprintln!("{summary}");
            0
        }
        Err(ReadError::Read(e)) => {
            eprintln!("gps-agent parse: read error: {e}");
            1
        }
        // A closed pipe (`| head`) is the reader's choice, not a failure.
        Err(ReadError::Sink(e)) if e.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(ReadError::Sink(e)) => {
            eprintln!("gps-agent parse: write error: {e}");
            1
        }
    }
}

/// What a run saw, for the closing line on stderr.
#[derive(Debug, Default, Clone)]
pub struct ParseSummary {
    pub bytes: u64,
    pub epochs: u64,
    pub accepted: u64,
    pub rejected: crate::rejection::ReasonCounts,
    pub sentences: Option<crate::gnss::SentenceStats>,
}

impl std::fmt::Display for ParseSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "parse: {} bytes, {} epochs, {} fixes accepted, {} rejected",
            self.bytes,
            self.epochs,
            self.accepted,
            self.rejected.total()
        )?;
        let mut first = true;
        for (reason, n) in self.rejected.iter() {
            write!(
                f,
                "{}{} {}",
                if first { " (" } else { ", " },
                reason.as_str(),
                n
            )?;
            first = false;
        }
        if !first {
            write!(f, ")")?;
        }
        if let Some(s) = &self.sentences {
            if let Ok(j) = serde_json::to_string(s) {
                write!(f, "; sentences {j}")?;
            }
        }
        Ok(())
    }
}

/// A whole capture through the agent's [`Pipeline`] (the configuration's checksum rule and
/// thresholds): each verdict to `sink` in receiver order, with the number of fixes accepted
/// before it (an accepted fix's `seq`). Stops at the sink's first error.
pub fn parse_stream(
    input: impl Read,
    cfg: &Settings,
    sink: &mut impl FnMut(&Verdict, u64) -> io::Result<()>,
) -> Result<ParseSummary, ReadError<io::Error>> {
    let mut pipeline = Pipeline::of(cfg);
    let mut summary = ParseSummary::default();
    summary.bytes = pipeline::read(input, &mut pipeline, &mut |verdict| {
        let seq = summary.accepted;
        match &verdict {
            Ok(_) => summary.accepted += 1,
            Err(rej) => summary.rejected.add(rej.reason),
        }
        sink(&verdict, seq)
    })?;
    summary.epochs = pipeline.sentences().epochs;
    summary.sentences = Some(*pipeline.sentences());
    Ok(summary)
}

/// `{"rejected": "<reason>", "time": ..., "lat": ..., "lon": ...}` with what was known.
pub fn rejection_json(rej: &Rejection) -> String {
    let mut v = json!({ "rejected": rej.reason.as_str() });
    if let Some(t) = rej.time_ms {
        v["time"] = json!(format_time_ms(t));
    }
    if let Some(lat) = rej.lat.filter(|x| x.is_finite()) {
        v["lat"] = json!(lat);
    }
    if let Some(lon) = rej.lon.filter(|x| x.is_finite()) {
        v["lon"] = json!(lon);
    }
    v.to_string()
}
