//! GNSS ingest: bytes from a receiver to [`epoch::Epoch`]s.
//!
//! The data's way: a source (`source`: serial port or log file) yields bytes; `framer` cuts
//! them into checksummed sentences in a fixed buffer; `sentence` parses each with the `nmea`
//! crate into a small, copyable observation (`observation`); `epoch` groups the
//! observations of one UTC time.
//! [`Decoder`] ties framer, parser and assembler together: bytes in, [`Decoded`] out, with
//! no heap allocation per sentence. Validation of an epoch is `crate::validate`'s job, not
//! this module's; this module never drops an epoch for being implausible.

pub mod epoch;
pub mod error;
pub mod framer;
pub mod observation;
pub mod sentence;
pub mod source;

use serde::Serialize;

pub use epoch::{Assembler, Epoch};
pub use error::{ErrorCounts, GnssError};
pub use framer::{Dropped, Framed, Framer};
pub use sentence::{Observation, Parsed};

/// What the decoder hands out.
// Boxing the epoch would cost an allocation per epoch; values are handed to a callback one
// at a time, never stored in bulk, so the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decoded {
    /// The sentences of one UTC time, complete.
    Epoch(Epoch),
    /// A sentence dropped for a bad checksum, or a missing one where checksums are required;
    /// validation counts these as `checksum` rejections.
    BadChecksum,
}

/// Counters of sentences by result. Every framed line lands in exactly one of `ok`,
/// `checksum`, `too_long`, `non_ascii`, `nul`, `malformed`, `proprietary`, `unsupported`
/// (and `missing_checksum` when checksums are required); when they are not required,
/// `missing_checksum` additionally counts the sentences accepted without one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SentenceStats {
    /// Parsed into an observation.
    pub ok: u64,
    /// Bad checksum.
    pub checksum: u64,
    /// No `*hh`.
    pub missing_checksum: u64,
    /// Over the 102-character NMEA limit.
    pub too_long: u64,
    /// A byte outside printable ASCII inside a sentence.
    pub non_ascii: u64,
    /// Runs of NUL bytes.
    pub nul: u64,
    /// Framed and checksummed, but not parseable (including sentences cut short by a new `$`).
    pub malformed: u64,
    /// `$P...` vendor sentences.
    pub proprietary: u64,
    /// Valid, but a type we do not use (GSV, TXT, AIS, ...).
    pub unsupported: u64,
    /// Epochs emitted.
    pub epochs: u64,
}

/// Bytes in, epochs out. Owns a [`Framer`] and an [`Assembler`]. No heap allocation per
/// sentence: the framer's buffer is fixed, observations and epochs are `Copy`.
#[derive(Debug)]
pub struct Decoder {
    framer: Framer,
    assembler: Assembler,
    stats: SentenceStats,
    /// The UTC time of day of the newest sentence that carried one.
    latest_time: Option<u32>,
}

impl Decoder {
    pub fn new(require_checksum: bool) -> Self {
        Decoder {
            framer: Framer::new(require_checksum),
            assembler: Assembler::new(),
            stats: SentenceStats::default(),
            latest_time: None,
        }
    }

    /// Feed any bytes (any chunking, garbage included); calls `sink` for each completed epoch
    /// and for each dropped sentence that validation must count.
    pub fn feed(&mut self, bytes: &[u8], sink: &mut impl FnMut(Decoded)) {
        for &byte in bytes {
            if let Some(framed) = self.framer.push(byte) {
                handle(
                    framed,
                    &mut self.assembler,
                    &mut self.stats,
                    &mut self.latest_time,
                    sink,
                );
            }
        }
    }

    /// End of input: emit the epoch being assembled, if any.
    pub fn finish(&mut self, sink: &mut impl FnMut(Decoded)) {
        if let Some(framed) = self.framer.flush() {
            handle(
                framed,
                &mut self.assembler,
                &mut self.stats,
                &mut self.latest_time,
                sink,
            );
        }
        let stats = &mut self.stats;
        self.assembler.finish(&mut |epoch| {
            stats.epochs += 1;
            sink(Decoded::Epoch(epoch));
        });
    }

    /// The line has been quiet for a while (the receiver stopped, or was unplugged): emit
    /// the epoch being assembled instead of holding it until the next epoch begins, which
    /// may be never. A partial line stays in the framer; it may still be completed.
    pub fn line_quiet(&mut self, sink: &mut impl FnMut(Decoded)) {
        let stats = &mut self.stats;
        self.assembler.finish(&mut |epoch| {
            stats.epochs += 1;
            sink(Decoded::Epoch(epoch));
        });
    }

    pub fn stats(&self) -> &SentenceStats {
        &self.stats
    }

    /// The UTC time of day (ms) of the newest sentence that carried one, whether or not it
    /// completed an epoch: how a stuck receiver is told from a live one.
    pub fn latest_time_of_day_ms(&self) -> Option<u32> {
        self.latest_time
    }
}

/// One framing result through parser and assembler. A free function so the framer's borrow
/// of its buffer and the assembler's state can be used at once.
fn handle(
    framed: Framed<'_>,
    assembler: &mut Assembler,
    stats: &mut SentenceStats,
    latest_time: &mut Option<u32>,
    sink: &mut impl FnMut(Decoded),
) {
    let text = match framed {
        Framed::Sentence {
            text,
            checksum_added,
        } => {
            if checksum_added {
                stats.missing_checksum += 1;
            }
            text
        }
        Framed::Dropped(dropped) => {
            let must_count = match dropped {
                Dropped::BadChecksum => {
                    stats.checksum += 1;
                    true
                }
                Dropped::MissingChecksum => {
                    stats.missing_checksum += 1;
                    true
                }
                Dropped::TooLong => {
                    stats.too_long += 1;
                    false
                }
                Dropped::NonAscii => {
                    stats.non_ascii += 1;
                    false
                }
                Dropped::Nul => {
                    stats.nul += 1;
                    false
                }
                Dropped::Truncated => {
                    stats.malformed += 1;
                    false
                }
            };
            assembler.note_dropped();
            if must_count {
                sink(Decoded::BadChecksum);
            }
            return;
        }
    };
    match sentence::parse(text) {
        Parsed::Observation(observation) => {
            stats.ok += 1;
            if let Some(t) = observation.time_of_day_ms() {
                *latest_time = Some(t);
            }
            assembler.push(observation, &mut |epoch| {
                stats.epochs += 1;
                sink(Decoded::Epoch(epoch));
            });
        }
        Parsed::Proprietary => stats.proprietary += 1,
        Parsed::Unsupported => stats.unsupported += 1,
        Parsed::Malformed => {
            stats.malformed += 1;
            assembler.note_dropped();
        }
        Parsed::TooLong => {
            stats.too_long += 1;
            assembler.note_dropped();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gnss::framer::xor;

    fn line(body: &str) -> String {
        format!("${body}*{:02X}\r\n", xor(body.as_bytes()))
    }

    fn decode(input: &str) -> (Vec<Decoded>, SentenceStats) {
        let mut d = Decoder::new(true);
        let mut out = Vec::new();
        d.feed(input.as_bytes(), &mut |x| out.push(x));
        d.finish(&mut |x| out.push(x));
        (out, *d.stats())
    }

    #[test]
    fn a_quiet_line_ends_the_epoch_but_keeps_a_partial_sentence() {
        let rmc = line("GPRMC,120000,A,4807.038,N,01131.000,E,0.0,0.0,230394,,");
        let gga = line("GPGGA,120000,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,");
        let next = line("GPRMC,120001,A,4807.038,N,01131.000,E,0.0,0.0,230394,,");
        let (head, tail) = next.split_at(20);
        let mut d = Decoder::new(true);
        let mut out = Vec::new();
        d.feed(format!("{rmc}{gga}{head}").as_bytes(), &mut |x| out.push(x));
        assert!(out.is_empty(), "the epoch waits for its successor");
        d.line_quiet(&mut |x| out.push(x));
        let [Decoded::Epoch(e)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(e.time_of_day_ms, Some(12 * 3_600_000));
        assert!(e.rmc.is_some() && e.gga.is_some());
        d.line_quiet(&mut |x| out.push(x));
        assert_eq!(out.len(), 1, "nothing more to emit");
        d.feed(tail.as_bytes(), &mut |x| out.push(x));
        d.finish(&mut |x| out.push(x));
        let Decoded::Epoch(e) = out[1] else {
            panic!("{out:?}")
        };
        assert_eq!(
            e.time_of_day_ms,
            Some(12 * 3_600_000 + 1000),
            "completed line"
        );
        assert_eq!(d.stats().epochs, 2);
    }

    #[test]
    fn a_bad_checksum_is_reported_to_validation_and_counted_in_its_epoch() {
        let input = [
            line("GPRMC,120000,A,4807.038,N,01131.000,E,0.0,0.0,230394,,"),
            "$GPGGA,120000,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*00\r\n".into(),
        ]
        .concat();
        let (out, stats) = decode(&input);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], Decoded::BadChecksum);
        let Decoded::Epoch(e) = out[1] else {
            panic!("{out:?}")
        };
        assert_eq!(e.dropped_sentences, 1);
        assert!(e.rmc.is_some() && e.gga.is_none());
        assert_eq!((stats.ok, stats.checksum, stats.epochs), (1, 1, 1));
    }

    #[test]
    fn stats_count_each_kind_of_line() {
        let input = [
            line("PGRME,15.0,M,45.0,M,25.0,M"),
            line("GPGSV,1,1,00"),
            line("GPGGA,bad"),
            "$GPGGA,1\0\0\r\n".into(),
            "$GPRMC,no checksum\r\n".into(),
            line("GPRMC,120000,A,4807.038,N,01131.000,E,0.0,0.0,230394,,"),
        ]
        .concat();
        let (_, s) = decode(&input);
        assert_eq!(
            s,
            SentenceStats {
                ok: 1,
                checksum: 0,
                missing_checksum: 1,
                too_long: 0,
                non_ascii: 0,
                nul: 1,
                malformed: 1,
                proprietary: 1,
                unsupported: 1,
                epochs: 1,
            }
        );
    }
}
