//! `gps-agent parse FILE|-`: an NMEA capture in, accepted fixes out as JSON Lines, through the
//! same decoder and validator as the daemon, so operators can check a receiver's capture.
//!
//! Thresholds come from `--config` (or `GPS_AGENT_CONFIG`) when given, else from
//! `/etc/gps-agent/config.toml` when it exists, else from the defaults. A summary line goes to
//! stderr at the end; stdout carries only fixes (and rejections with `--all`).

use crate::config::Settings;
use crate::fix::{format_time_ms, Numbered};
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
    #[arg(long)]
    pub all: bool,
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

/// Decode and validate a whole stream, writing JSON Lines to `out`.
pub fn parse_stream(
    mut input: impl Read,
    out: &mut impl Write,
    cfg: &Settings,
    all: bool,
) -> Result<ParseSummary, ParseStreamError> {
    let mut decoder = Decoder::new(cfg.gnss.require_checksum);
    let mut validator = Validator::new(cfg.validate.clone());
    let mut printer = Printer {
        out,
        all,
        summary: ParseSummary::default(),
        held_checksums: 0,
        error: None,
    };
    let mut buf = [0u8; 8192];
    // Events of one chunk, collected so the decoder's borrow ends before validation and
    // output; bounded by what one chunk can hold (at most one event per 4 input bytes).
    let mut events: Vec<Decoded> = Vec::new();
    let mut handle = |event: Decoded, printer: &mut Printer<'_, _>| match event {
        Decoded::Epoch(epoch) => {
            printer.summary.epochs += 1;
            validator.push(&epoch, &mut |verdict| printer.verdict(verdict));
        }
        Decoded::BadChecksum => printer.checksum(validator.is_holding()),
    };
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ParseStreamError::Read(e)),
        };
        printer.summary.bytes += n as u64;
        let chunk = buf.get(..n).unwrap_or(&[]);
        decoder.feed(chunk, &mut |ev| events.push(ev));
        for ev in events.drain(..) {
            handle(ev, &mut printer);
        }
        if let Some(e) = printer.error.take() {
            return Err(ParseStreamError::Write(e));
        }
    }
    decoder.finish(&mut |ev| events.push(ev));
    for ev in events.drain(..) {
        handle(ev, &mut printer);
    }
    validator.finish(&mut |verdict| printer.verdict(verdict));
    if let Some(e) = printer.error.take() {
        return Err(ParseStreamError::Write(e));
    }
    let mut summary = printer.summary;
    summary.sentences = Some(*decoder.stats());
    Ok(summary)
}

/// Verdicts to JSON Lines, in receiver order.
struct Printer<'a, W: Write> {
    out: &'a mut W,
    all: bool,
    summary: ParseSummary,
    /// Checksum rejections that arrived while the validator held an epoch for its
    /// successor's verdict: they came after that epoch, so they are printed after its
    /// verdict. All alike (no time, no position), so a count is enough.
    held_checksums: u64,
    /// The first write error; later output is skipped.
    error: Option<io::Error>,
}

impl<W: Write> Printer<'_, W> {
    fn verdict(&mut self, verdict: crate::validate::Verdict) {
        let line = match verdict {
            Ok(fix) => {
                let seq = self.summary.accepted;
                self.summary.accepted += 1;
                serde_json::to_string(&Numbered { seq, fix: &fix }).ok()
            }
            Err(rej) => {
                self.summary.rejected.add(rej.reason);
                self.all.then(|| rejection_json(&rej))
            }
        };
        if let Some(line) = line {
            self.line(&line);
        }
        // Whatever was held back came after the held epoch: its verdict is this one (the
        // held epoch's is always the first a push or finish hands out).
        for _ in 0..std::mem::take(&mut self.held_checksums) {
            self.line(&checksum_json());
        }
    }

    fn checksum(&mut self, validator_holding: bool) {
        self.summary.rejected.add(Reason::Checksum);
        if !self.all {
            return;
        }
        if validator_holding {
            self.held_checksums += 1;
        } else {
            self.line(&checksum_json());
        }
    }

    fn line(&mut self, line: &str) {
        if self.error.is_none() {
            if let Err(e) = writeln!(self.out, "{line}") {
                self.error = Some(e);
            }
        }
    }
}

fn checksum_json() -> String {
    rejection_json(&Rejection::new(Reason::Checksum, "bad checksum"))
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
