//! `gps-agent parse FILE|-`: an NMEA capture in, accepted fixes out as JSON Lines, through the
//! same decoder and validator as the daemon, so operators can check a receiver's capture.
//!
//! Thresholds come from `--config` (or `GPS_AGENT_CONFIG`) when given, else from
//! `/etc/gps-agent/config.toml` when it exists, else from the defaults. A summary line goes to
//! stderr at the end; stdout carries only fixes (and rejections with `--all`).
//!
//! `--report` prints instead what the configuration's `[report]` would make of the capture
//! ([`super::report`]): to tune the policy on a real drive before deploying it.

use crate::config::Settings;
use crate::fix::{format_time_ms, Fix, Numbered};
use crate::gnss::{Decoded, Decoder};
use crate::rejection::{Reason, Rejection};
use crate::validate::Validator;
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
    if args.report {
        return match super::report::run(input, &mut out, &cfg) {
            Ok(summary) => match out.flush() {
                Ok(()) => {
                    eprintln!("{summary}");
                    0
                }
                Err(e) => output_error(&e),
            },
            Err(ParseStreamError::Read(e)) => {
                eprintln!("gps-agent parse: read error: {e}");
                1
            }
            Err(ParseStreamError::Write(e)) => output_error(&e),
        };
    }
    match parse_stream(input, &mut out, &cfg, args.all) {
        Ok(summary) => {
            if let Err(e) = out.flush() {
                return output_error(&e);
            }
            eprintln!("{summary}");
            0
        }
        Err(ParseStreamError::Read(e)) => {
            eprintln!("gps-agent parse: read error: {e}");
            1
        }
        Err(ParseStreamError::Write(e)) => output_error(&e),
    }
}

/// A closed pipe (`| head`) is the reader's choice, not a failure.
fn output_error(e: &io::Error) -> i32 {
    if e.kind() == io::ErrorKind::BrokenPipe {
        0
    } else {
        eprintln!("gps-agent parse: write error: {e}");
        1
    }
}

#[derive(Debug)]
pub enum ParseStreamError {
    Read(io::Error),
    Write(io::Error),
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

/// What became of one epoch (or a line that failed its checksum).
pub enum Outcome<'a> {
    Accepted(&'a Fix),
    Rejected(&'a Rejection),
}

/// Decode and validate a whole stream, writing JSON Lines to `out`.
pub fn parse_stream(
    input: impl Read,
    out: &mut impl Write,
    cfg: &Settings,
    all: bool,
) -> Result<ParseSummary, ParseStreamError> {
    parse_events(input, cfg, &mut |outcome, seq| {
        let line = match outcome {
            Outcome::Accepted(fix) => serde_json::to_string(&Numbered { seq, fix }).ok(),
            Outcome::Rejected(rej) => all.then(|| rejection_json(rej)),
        };
        match line {
            Some(line) => writeln!(out, "{line}"),
            None => Ok(()),
        }
    })
}

/// Decode and validate a whole stream; each outcome goes to `sink`, in receiver order, with
/// the number of fixes accepted before it.
pub fn parse_events(
    mut input: impl Read,
    cfg: &Settings,
    sink: &mut impl FnMut(Outcome<'_>, u64) -> io::Result<()>,
) -> Result<ParseSummary, ParseStreamError> {
    let mut decoder = Decoder::new(cfg.gnss.require_checksum);
    let mut validator = Validator::new(cfg.validate.clone());
    let mut verdicts = Verdicts {
        sink,
        summary: ParseSummary::default(),
        held_checksums: 0,
        error: None,
    };
    let mut buf = [0u8; 8192];
    // Events of one chunk, collected so the decoder's borrow ends before validation and
    // output; bounded by what one chunk can hold (at most one event per 4 input bytes).
    let mut events: Vec<Decoded> = Vec::new();
    let mut handle = |event: Decoded, verdicts: &mut Verdicts<'_, _>| match event {
        Decoded::Epoch(epoch) => {
            verdicts.summary.epochs += 1;
            validator.push(&epoch, &mut |verdict| verdicts.verdict(verdict));
        }
        Decoded::BadChecksum => verdicts.checksum(validator.is_holding()),
    };
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ParseStreamError::Read(e)),
        };
        verdicts.summary.bytes += n as u64;
        let chunk = buf.get(..n).unwrap_or(&[]);
        decoder.feed(chunk, &mut |ev| events.push(ev));
        for ev in events.drain(..) {
            handle(ev, &mut verdicts);
        }
        if let Some(e) = verdicts.error.take() {
            return Err(ParseStreamError::Write(e));
        }
    }
    decoder.finish(&mut |ev| events.push(ev));
    for ev in events.drain(..) {
        handle(ev, &mut verdicts);
    }
    validator.finish(&mut |verdict| verdicts.verdict(verdict));
    if let Some(e) = verdicts.error.take() {
        return Err(ParseStreamError::Write(e));
    }
    let mut summary = verdicts.summary;
    summary.sentences = Some(*decoder.stats());
    Ok(summary)
}

/// Verdicts to the sink, in receiver order.
struct Verdicts<'s, S> {
    sink: &'s mut S,
    summary: ParseSummary,
    /// Checksum rejections that arrived while the validator held an epoch for its
    /// successor's verdict: they came after that epoch, so they go out after its verdict.
    /// All alike (no time, no position), so a count is enough.
    held_checksums: u64,
    /// The first error of the sink; later outcomes are skipped.
    error: Option<io::Error>,
}

impl<S: FnMut(Outcome<'_>, u64) -> io::Result<()>> Verdicts<'_, S> {
    fn verdict(&mut self, verdict: crate::validate::Verdict) {
        match verdict {
            Ok(fix) => {
                let seq = self.summary.accepted;
                self.summary.accepted += 1;
                self.emit(Outcome::Accepted(&fix), seq);
            }
            Err(rej) => {
                self.summary.rejected.add(rej.reason);
                self.emit(Outcome::Rejected(&rej), self.summary.accepted);
            }
        }
        // Whatever was held back came after the held epoch: its verdict is this one (the
        // held epoch's is always the first a push or finish hands out).
        for _ in 0..std::mem::take(&mut self.held_checksums) {
            self.emit_checksum();
        }
    }

    fn checksum(&mut self, validator_holding: bool) {
        self.summary.rejected.add(Reason::Checksum);
        if validator_holding {
            self.held_checksums += 1;
        } else {
            self.emit_checksum();
        }
    }

    fn emit_checksum(&mut self) {
        let rej = Rejection::new(Reason::Checksum, "bad checksum");
        self.emit(Outcome::Rejected(&rej), self.summary.accepted);
    }

    fn emit(&mut self, outcome: Outcome<'_>, seq: u64) {
        if self.error.is_none() {
            if let Err(e) = (self.sink)(outcome, seq) {
                self.error = Some(e);
            }
        }
    }
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
