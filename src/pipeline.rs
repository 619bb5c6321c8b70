//! The one way from receiver bytes to verdicts: [`gnss`](crate::gnss)'s decoder and
//! [`validate`](crate::validate)'s validator joined, so the daemon's ingest thread, `parse`,
//! `parse --report`, the tests, the bench and the fuzz target all judge a capture alike.
//!
//! In: the receiver's bytes in any chunking ([`Pipeline::feed`]), and what happens to the
//! line: it fell quiet ([`Pipeline::line_quiet`]), it ended ([`Pipeline::finish`]), the
//! thresholds changed ([`Pipeline::revalidate`]). Out: every verdict in receiver order,
//! handed to a sink: one per epoch (a fix the motion check holds comes one epoch late,
//! before its successor's), and one `checksum` rejection per sentence dropped for its
//! checksum, after the verdict of the epoch it followed. It owns the receiver's time: the
//! newest time of day any sentence carried ([`Pipeline::receiver_time`]), which a serial
//! reader is handed to tell a frozen receiver from a live one.
//!
//! Never reads a clock, never does I/O but [`read`]'s, never allocates on the way through.

use std::io::{self, Read};

use crate::config::ValidateConfig;
use crate::gnss::{Decoded, Decoder, SentenceStats};
use crate::rejection::{Reason, Rejection};
use crate::validate::{Validator, Verdict};

/// Receiver bytes in, verdicts out, in receiver order.
#[derive(Debug)]
pub struct Pipeline {
    decoder: Decoder,
    validator: Validator,
    /// Checksum rejections that came while the validator held a fix for its successor's
    /// verdict: they came after that fix, so they go out after its verdict. All alike (no
    /// time, no position), so a count is enough.
    held_checksums: u64,
    /// Fixes accepted by validators replaced at a [`Pipeline::revalidate`].
    accepted_before: u64,
}

impl Pipeline {
    /// Sentences without a checksum are dropped when `require_checksum`; epochs are judged
    /// by `validate`'s thresholds.
    pub fn new(require_checksum: bool, validate: ValidateConfig) -> Self {
        Pipeline {
            decoder: Decoder::new(require_checksum),
            validator: Validator::new(validate),
            held_checksums: 0,
            accepted_before: 0,
        }
    }

    /// As the agent's settings say (`gnss.require_checksum`, `[validate]`).
    pub fn of(settings: &crate::config::Settings) -> Self {
        Pipeline::new(settings.gnss.require_checksum, settings.validate.clone())
    }

    /// Bytes as they came (any chunking, garbage included): the verdicts they complete.
    pub fn feed(&mut self, bytes: &[u8], sink: &mut impl FnMut(Verdict)) {
        let Pipeline {
            decoder,
            validator,
            held_checksums,
            ..
        } = self;
        decoder.feed(bytes, &mut |event| {
            judge(event, validator, held_checksums, sink);
        });
    }

    /// The line has been quiet a while (the receiver stopped, was unplugged, the ignition
    /// went off): the epoch being assembled ends, and a held fix is decided without its
    /// successor, so the last fix before the silence is not kept waiting. A partial line
    /// stays; it may still be completed.
    pub fn line_quiet(&mut self, sink: &mut impl FnMut(Verdict)) {
        let Pipeline {
            decoder,
            validator,
            held_checksums,
            ..
        } = self;
        decoder.line_quiet(&mut |event| judge(event, validator, held_checksums, sink));
        self.settle(sink);
    }

    /// The input ended: what the decoder holds, then the held fix. The pipeline stays
    /// usable: later bytes are judged against the same earlier fixes.
    pub fn finish(&mut self, sink: &mut impl FnMut(Verdict)) {
        let Pipeline {
            decoder,
            validator,
            held_checksums,
            ..
        } = self;
        decoder.finish(&mut |event| judge(event, validator, held_checksums, sink));
        self.settle(sink);
    }

    /// New thresholds (a SIGHUP reload): the held fix is decided under the old ones, then
    /// the track of earlier fixes starts afresh under the new ones. An epoch being
    /// assembled is judged by the new ones when it completes.
    pub fn revalidate(&mut self, validate: ValidateConfig, sink: &mut impl FnMut(Verdict)) {
        self.settle(sink);
        self.accepted_before += self.validator.accepted();
        self.validator = Validator::new(validate);
    }

    /// The receiver's newest UTC time of day (ms) any sentence carried, whether or not it
    /// completed an epoch: how a receiver repeating one epoch is told from a live one.
    pub fn receiver_time(&self) -> Option<u32> {
        self.decoder.latest_time_of_day_ms()
    }

    /// Sentences by result, and epochs assembled.
    pub fn sentences(&self) -> &SentenceStats {
        self.decoder.stats()
    }

    /// Epochs accepted as fixes, across reloads.
    pub fn accepted(&self) -> u64 {
        self.accepted_before + self.validator.accepted()
    }

    /// Decide the held fix, if any.
    fn settle(&mut self, sink: &mut impl FnMut(Verdict)) {
        let Pipeline {
            validator,
            held_checksums,
            ..
        } = self;
        validator.finish(&mut |verdict| deliver(verdict, held_checksums, sink));
    }
}

/// One decoder event to the validator, or to the sink.
#[inline]
fn judge(
    event: Decoded,
    validator: &mut Validator,
    held_checksums: &mut u64,
    sink: &mut impl FnMut(Verdict),
) {
    match event {
        Decoded::Epoch(epoch) => {
            validator.push(&epoch, &mut |verdict| {
                deliver(verdict, held_checksums, sink);
            });
        }
        Decoded::BadChecksum if validator.is_holding() => *held_checksums += 1,
        Decoded::BadChecksum => sink(Err(checksum())),
    }
}

/// A verdict, then the checksum rejections held back behind it (the held fix's verdict is
/// always the first a push or finish hands out).
#[inline]
fn deliver(verdict: Verdict, held_checksums: &mut u64, sink: &mut impl FnMut(Verdict)) {
    sink(verdict);
    if *held_checksums > 0 {
        for _ in 0..std::mem::take(held_checksums) {
            sink(Err(checksum()));
        }
    }
}

fn checksum() -> Rejection {
    Rejection::new(Reason::Checksum, "bad checksum")
}

/// Why [`read`] stopped early.
#[derive(Debug)]
pub enum ReadError<E> {
    /// The input could not be read.
    Read(io::Error),
    /// The sink refused a verdict (its first error; the input is not read further).
    Sink(E),
}

/// A whole input through `pipeline`, `finish` included: every verdict to `sink`, in receiver
/// order. Returns the bytes read. Stops at the sink's first error.
pub fn read<E>(
    mut input: impl Read,
    pipeline: &mut Pipeline,
    sink: &mut impl FnMut(Verdict) -> Result<(), E>,
) -> Result<u64, ReadError<E>> {
    let mut buf = [0u8; 8192];
    let mut bytes = 0u64;
    let mut failed: Option<E> = None;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Read(e)),
        };
        bytes += n as u64;
        let chunk = buf.get(..n).unwrap_or_default();
        pipeline.feed(chunk, &mut |v| guarded(&mut failed, sink, v));
        if failed.is_some() {
            break;
        }
    }
    if failed.is_none() {
        pipeline.finish(&mut |v| guarded(&mut failed, sink, v));
    }
    match failed {
        Some(e) => Err(ReadError::Sink(e)),
        None => Ok(bytes),
    }
}

/// A verdict to a sink that may fail: after its first error, the rest are skipped.
fn guarded<E>(
    failed: &mut Option<E>,
    sink: &mut impl FnMut(Verdict) -> Result<(), E>,
    verdict: Verdict,
) {
    if failed.is_none() {
        if let Err(e) = sink(verdict) {
            *failed = Some(e);
        }
    }
}

/// Every verdict of `bytes`, in receiver order (for tools and tests; the daemon feeds its
/// pipeline chunk by chunk).
pub fn verdicts(bytes: &[u8], require_checksum: bool, validate: &ValidateConfig) -> Vec<Verdict> {
    let mut pipeline = Pipeline::new(require_checksum, validate.clone());
    let mut out = Vec::new();
    pipeline.feed(bytes, &mut |v| out.push(v));
    pipeline.finish(&mut |v| out.push(v));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gnss::framer::xor;

    fn line(body: &str) -> String {
        format!("${body}*{:02X}\r\n", xor(body.as_bytes()))
    }

    fn rmc(second: u32, lat_min: f64) -> String {
        line(&format!(
            "GPRMC,1200{second:02},A,48{lat_min:07.4},N,01131.000,E,0.0,0.0,230324,,"
        ))
    }

    fn outline(v: &Verdict) -> String {
        match v {
            Ok(f) => format!("fix {}", f.time_ms % 60_000 / 1000),
            Err(r) => r.reason.as_str().to_string(),
        }
    }

    #[test]
    fn a_bad_checksum_after_a_held_fix_comes_after_that_fix_verdict() {
        // Standing still, then 60 m off in one second (held for its successor's verdict),
        // back where it stood, then a broken line: the held fix is `inconsistent`, and the
        // broken line, which came after it, comes after its verdict.
        let cfg = ValidateConfig::default();
        let mut input = String::new();
        for s in 0..3 {
            input += &rmc(s, 7.038);
        }
        input += &rmc(3, 7.070);
        input += &rmc(4, 7.038);
        input += "$GPGGA,bad*00\r\n";
        input += &rmc(5, 7.038);
        let got: Vec<String> = verdicts(input.as_bytes(), true, &cfg)
            .iter()
            .map(outline)
            .collect();
        assert_eq!(
            got,
            [
                "fix 0",
                "fix 1",
                "fix 2",
                "inconsistent",
                "checksum",
                "fix 4",
                "fix 5"
            ]
        );
    }

    #[test]
    fn any_chunking_gives_the_same_verdicts_as_one_feed() {
        let cfg = ValidateConfig::default();
        let mut input = String::new();
        for s in 0..20 {
            input += &rmc(s, 7.038 + f64::from(s) * 0.0001);
            if s % 7 == 3 {
                input += "$GPGGA,1*00\r\n";
            }
        }
        let whole: Vec<String> = verdicts(input.as_bytes(), true, &cfg)
            .iter()
            .map(outline)
            .collect();
        for size in [1, 3, 17, 64] {
            let mut p = Pipeline::new(true, cfg.clone());
            let mut got = Vec::new();
            for piece in input.as_bytes().chunks(size) {
                p.feed(piece, &mut |v| got.push(outline(&v)));
            }
            p.finish(&mut |v| got.push(outline(&v)));
            assert_eq!(got, whole, "chunks of {size}");
        }
        assert_eq!(whole.len(), 23);
    }

    #[test]
    fn the_receiver_time_is_the_newest_sentence_time_even_before_its_epoch_completes() {
        let mut p = Pipeline::new(true, ValidateConfig::default());
        assert_eq!(p.receiver_time(), None);
        let mut n = 0;
        p.feed(rmc(7, 7.038).as_bytes(), &mut |_| n += 1);
        assert_eq!(n, 0, "the epoch waits for its successor");
        assert_eq!(p.receiver_time(), Some((12 * 3600 + 7) * 1000));
    }

    #[test]
    fn a_quiet_line_decides_the_epoch_and_the_held_fix_at_once() {
        let cfg = ValidateConfig::default();
        let mut p = Pipeline::new(true, cfg);
        let mut got = Vec::new();
        for s in 0..3 {
            p.feed(rmc(s, 7.038).as_bytes(), &mut |v| got.push(outline(&v)));
        }
        // 60 m off while standing: held for a successor that never comes, then judged by
        // the fix before it alone, which contradicts it.
        p.feed(rmc(3, 7.070).as_bytes(), &mut |v| got.push(outline(&v)));
        assert_eq!(got, ["fix 0", "fix 1", "fix 2"]);
        p.line_quiet(&mut |v| got.push(outline(&v)));
        assert_eq!(got, ["fix 0", "fix 1", "fix 2", "inconsistent"]);
        assert_eq!(p.accepted(), 3);
    }

    #[test]
    fn new_thresholds_decide_the_held_fix_first_and_count_on() {
        let cfg = ValidateConfig::default();
        let mut p = Pipeline::new(true, cfg.clone());
        let mut got = Vec::new();
        for s in 0..3 {
            p.feed(rmc(s, 7.038).as_bytes(), &mut |v| got.push(outline(&v)));
        }
        // Epoch 3, 60 m off, is held once epoch 4 begins.
        p.feed(rmc(3, 7.070).as_bytes(), &mut |v| got.push(outline(&v)));
        p.feed(rmc(4, 7.038).as_bytes(), &mut |v| got.push(outline(&v)));
        assert_eq!(got, ["fix 0", "fix 1", "fix 2"]);
        p.revalidate(cfg, &mut |v| got.push(outline(&v)));
        assert_eq!(
            got,
            ["fix 0", "fix 1", "fix 2", "inconsistent"],
            "decided at once"
        );
        p.finish(&mut |v| got.push(outline(&v)));
        assert_eq!(got, ["fix 0", "fix 1", "fix 2", "inconsistent", "fix 4"]);
        assert_eq!(
            p.accepted(),
            4,
            "fixes accepted before the reload still count"
        );
    }
}
