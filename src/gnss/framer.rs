//! Framing: raw receiver bytes in, checked NMEA sentences out, one byte at a time.
//!
//! The framer owns one fixed-size line buffer and nothing else: no allocation, ever, whatever
//! arrives. It resynchronises on `$`/`!`, ends lines at `\r` or `\n`, skips `#` comment lines
//! of log files silently, verifies the `*hh` checksum and reports every line it throws away
//! (over-long, non-ASCII, NUL runs, cut short, bad or missing checksum) so the decoder can
//! count it. It never interprets sentence contents; that is `sentence`'s job.

use heapless::Vec;

/// Longest sentence kept, `$` to checksum included: the `nmea` crate's own limit
/// (`nmea::SENTENCE_MAX_LEN`), itself gpsd's, which already allows the known over-long
/// receivers (Trimble GGA of 91, Skytraq PSTI of 100).
pub const MAX_SENTENCE_LEN: usize = nmea::SENTENCE_MAX_LEN;

/// Buffer size: the longest sentence plus room to append a computed `*hh` (and slack), so a
/// sentence at the limit never overflows while we still decide whether it is too long.
const BUFFER_LEN: usize = 128;

/// Why a line was thrown away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// `*hh` present but wrong, or not two hex digits.
    BadChecksum,
    /// No `*hh` and checksums are required.
    MissingChecksum,
    /// Longer than [`MAX_SENTENCE_LEN`].
    TooLong,
    /// A byte outside printable ASCII inside a sentence.
    NonAscii,
    /// A run of NUL bytes (one report per run, whether inside a sentence or between them).
    Nul,
    /// A new `$`/`!` arrived before the line ended: the earlier sentence was cut short.
    Truncated,
}

/// One framing result.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed<'a> {
    /// A complete `$...*hh` sentence (or `!...*hh`), checksum verified, ASCII only, without
    /// line ending. `checksum_added` is true when the receiver sent none and we computed it
    /// (only when checksums are not required).
    Sentence {
        text: &'a str,
        checksum_added: bool,
    },
    Dropped(Dropped),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between lines: waiting for `$`, `!` or `#` at a line start.
    Idle,
    /// Idle, but not at a line start (garbage seen since the last line end): a `#` here is
    /// not a comment, only `$`/`!` or a line end matter.
    Garbage,
    /// Inside a `#` comment line: everything up to the line end is ignored.
    Comment,
    /// Collecting a sentence into the buffer.
    Sentence,
    /// The current line was already dropped; wait for a line end or a new `$`/`!`.
    Skipping,
}

/// Bytes to sentences with a fixed buffer. See the module documentation.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8, BUFFER_LEN>,
    state: State,
    /// Inside a run of NULs (reported once, at its first byte).
    in_nul_run: bool,
    require_checksum: bool,
}

impl Framer {
    pub fn new(require_checksum: bool) -> Self {
        Framer {
            buf: Vec::new(),
            state: State::Idle,
            in_nul_run: false,
            require_checksum,
        }
    }

    /// Take one byte; returns what it completed, if anything.
    pub fn push(&mut self, byte: u8) -> Option<Framed<'_>> {
        if byte == 0 {
            let first = !self.in_nul_run;
            self.in_nul_run = true;
            // A NUL inside a sentence spoils it; the run itself is what we report.
            if self.state == State::Sentence {
                self.state = State::Skipping;
            }
            return first.then_some(Framed::Dropped(Dropped::Nul));
        }
        self.in_nul_run = false;

        match byte {
            b'\r' | b'\n' => {
                let was = self.state;
                self.state = State::Idle;
                if was == State::Sentence {
                    return Some(self.complete());
                }
                None
            }
            b'$' | b'!' if self.state != State::Comment => {
                let cut_short = self.state == State::Sentence;
                self.start(byte);
                cut_short.then_some(Framed::Dropped(Dropped::Truncated))
            }
            b'#' if self.state == State::Idle => {
                self.state = State::Comment;
                None
            }
            _ => match self.state {
                State::Idle | State::Garbage => {
                    self.state = State::Garbage;
                    None
                }
                State::Comment | State::Skipping => None,
                State::Sentence => {
                    if !(0x20..0x7f).contains(&byte) {
                        self.state = State::Skipping;
                        return Some(Framed::Dropped(Dropped::NonAscii));
                    }
                    if self.buf.len() >= MAX_SENTENCE_LEN || self.buf.push(byte).is_err() {
                        self.state = State::Skipping;
                        return Some(Framed::Dropped(Dropped::TooLong));
                    }
                    None
                }
            },
        }
    }

    /// End of input: a last line without a line ending is still a line.
    pub fn flush(&mut self) -> Option<Framed<'_>> {
        let was = self.state;
        self.state = State::Idle;
        self.in_nul_run = false;
        if was == State::Sentence {
            return Some(self.complete());
        }
        None
    }

    fn start(&mut self, lead: u8) {
        self.buf.clear();
        // Cannot fail: the buffer was just cleared and holds far more than one byte.
        let _ = self.buf.push(lead);
        self.state = State::Sentence;
    }

    /// A line ended while collecting: check its checksum and hand it out.
    fn complete(&mut self) -> Framed<'_> {
        // Some receivers pad with spaces before the line end.
        while self.buf.last() == Some(&b' ') {
            self.buf.pop();
        }
        let checksum_added;
        match self.buf.iter().rposition(|b| *b == b'*') {
            Some(star) => {
                let body = self.buf.get(1..star).unwrap_or(&[]);
                let given = self.buf.get(star + 1..).and_then(parse_hex_pair);
                match given {
                    Some(given) if given == xor(body) => checksum_added = false,
                    _ => return Framed::Dropped(Dropped::BadChecksum),
                }
            }
            None => {
                if self.require_checksum {
                    return Framed::Dropped(Dropped::MissingChecksum);
                }
                let sum = xor(self.buf.get(1..).unwrap_or(&[]));
                let hex = hex_pair(sum);
                if self.buf.len() + 3 > MAX_SENTENCE_LEN
                    || self.buf.extend_from_slice(&[b'*', hex[0], hex[1]]).is_err()
                {
                    return Framed::Dropped(Dropped::TooLong);
                }
                checksum_added = true;
            }
        }
        match core::str::from_utf8(&self.buf) {
            Ok(text) => Framed::Sentence {
                text,
                checksum_added,
            },
            // Unreachable in practice: only printable ASCII is ever pushed.
            Err(_) => Framed::Dropped(Dropped::NonAscii),
        }
    }
}

/// NMEA checksum: XOR of every byte between `$` and `*`.
pub fn xor(body: &[u8]) -> u8 {
    body.iter().fold(0, |acc, b| acc ^ b)
}

fn parse_hex_pair(digits: &[u8]) -> Option<u8> {
    match digits {
        [hi, lo] => Some(hex_value(*hi)? << 4 | hex_value(*lo)?),
        _ => None,
    }
}

fn hex_value(d: u8) -> Option<u8> {
    match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'A'..=b'F' => Some(d - b'A' + 10),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    }
}

fn hex_pair(v: u8) -> [u8; 2] {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    [DIGITS[usize::from(v >> 4)], DIGITS[usize::from(v & 0x0f)]]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything the framer says about `input`, sentences as owned strings.
    fn frame(input: &[u8], require_checksum: bool) -> std::vec::Vec<Result<String, Dropped>> {
        let mut f = Framer::new(require_checksum);
        let mut out = std::vec::Vec::new();
        let mut take = |r: Option<Framed<'_>>| match r {
            Some(Framed::Sentence { text, .. }) => out.push(Ok(text.to_string())),
            Some(Framed::Dropped(d)) => out.push(Err(d)),
            None => {}
        };
        for b in input {
            take(f.push(*b));
        }
        take(f.flush());
        out
    }

    const GGA: &str = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47";

    #[test]
    fn a_clean_sentence_comes_out_without_its_line_ending() {
        let out = frame(format!("{GGA}\r\n").as_bytes(), true);
        assert_eq!(out, vec![Ok(GGA.to_string())]);
    }

    #[test]
    fn garbage_before_a_sentence_is_skipped_and_the_sentence_kept() {
        let out = frame(format!("xx\u{1}yy #no{GGA}\n").as_bytes(), true);
        assert_eq!(out, vec![Ok(GGA.to_string())]);
    }

    #[test]
    fn a_dollar_inside_a_sentence_resyncs_and_reports_the_cut_one() {
        let out = frame(format!("$GPGGA,0301{GGA}\n").as_bytes(), true);
        assert_eq!(out, vec![Err(Dropped::Truncated), Ok(GGA.to_string())]);
    }

    #[test]
    fn an_overlong_line_is_dropped_once_and_the_next_line_survives() {
        let long = format!("$GPTXT,{}*00\n", "A".repeat(300));
        let out = frame(format!("{long}{GGA}\n").as_bytes(), true);
        assert_eq!(out, vec![Err(Dropped::TooLong), Ok(GGA.to_string())]);
    }

    #[test]
    fn a_sentence_of_exactly_the_limit_is_kept() {
        let mut body = String::from("GPTXT,");
        while body.len() < MAX_SENTENCE_LEN - 4 {
            body.push('A');
        }
        let line = format!("${body}*{:02X}", xor(body.as_bytes()));
        assert_eq!(line.len(), MAX_SENTENCE_LEN);
        assert_eq!(frame(line.as_bytes(), true), vec![Ok(line.clone())]);
    }

    #[test]
    fn a_nul_run_is_reported_once_and_spoils_the_sentence_it_hits() {
        let out = frame(format!("$GPGGA,1\0\0\0\0{GGA}\n\0\0").as_bytes(), true);
        assert_eq!(
            out,
            vec![Err(Dropped::Nul), Ok(GGA.to_string()), Err(Dropped::Nul)]
        );
    }

    #[test]
    fn non_ascii_inside_a_sentence_drops_it() {
        let mut input = b"$GPGGA,12\xff3519*00\n".to_vec();
        input.extend_from_slice(GGA.as_bytes());
        let out = frame(&input, true);
        assert_eq!(out, vec![Err(Dropped::NonAscii), Ok(GGA.to_string())]);
    }

    #[test]
    fn a_sentence_split_across_feeds_is_reassembled() {
        let mut f = Framer::new(true);
        let bytes = format!("{GGA}\r\n");
        let (a, b) = bytes.as_bytes().split_at(17);
        for x in a {
            assert!(f.push(*x).is_none());
        }
        let mut got = None;
        for x in b {
            if let Some(Framed::Sentence { text, .. }) = f.push(*x) {
                got = Some(text.to_string());
            }
        }
        assert_eq!(got.as_deref(), Some(GGA));
    }

    #[test]
    fn a_wrong_or_malformed_checksum_is_reported() {
        let bad = GGA.replace("*47", "*48");
        assert_eq!(frame(bad.as_bytes(), true), vec![Err(Dropped::BadChecksum)]);
        let short = GGA.replace("*47", "*4");
        assert_eq!(
            frame(short.as_bytes(), true),
            vec![Err(Dropped::BadChecksum)]
        );
    }

    #[test]
    fn lowercase_checksum_digits_are_accepted() {
        let line = "$GPGSA,A,3,,,,,,16,18,,22,24,,,3.6,2.1,2.2*3c";
        assert_eq!(frame(line.as_bytes(), true), vec![Ok(line.to_string())]);
    }

    #[test]
    fn a_missing_checksum_is_dropped_when_required_and_completed_otherwise() {
        let bare = GGA.trim_end_matches("*47");
        assert_eq!(
            frame(bare.as_bytes(), true),
            vec![Err(Dropped::MissingChecksum)]
        );
        let mut f = Framer::new(false);
        for b in bare.as_bytes() {
            assert!(f.push(*b).is_none());
        }
        assert_eq!(
            f.flush(),
            Some(Framed::Sentence {
                text: GGA,
                checksum_added: true
            })
        );
    }

    #[test]
    fn comment_lines_are_skipped_even_when_they_contain_a_dollar() {
        let out = frame(format!("# price: $5 *00\n{GGA}\n").as_bytes(), true);
        assert_eq!(out, vec![Ok(GGA.to_string())]);
    }

    #[test]
    fn trailing_spaces_before_the_line_end_are_tolerated() {
        let out = frame(format!("{GGA}  \r\n").as_bytes(), true);
        assert_eq!(out, vec![Ok(GGA.to_string())]);
    }
}
