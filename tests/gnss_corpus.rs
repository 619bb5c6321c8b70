//! The decoder over every real receiver log of the corpus (`GPS_AGENT_CORPUS`, default
//! `../shared/nmea-corpus`): no panic, and counts that match what the logs hold.

#[path = "support/corpus.rs"]
mod corpus;

use gps_agent::gnss::{Decoded, Decoder, SentenceStats};

struct Outcome {
    stats: SentenceStats,
    epochs: usize,
    with_position_time_date: usize,
    bad_checksums: usize,
}

fn decode(bytes: &[u8], chunk: usize) -> Outcome {
    let mut decoder = Decoder::new(true);
    let mut out = Outcome {
        stats: SentenceStats::default(),
        epochs: 0,
        with_position_time_date: 0,
        bad_checksums: 0,
    };
    let mut sink = |d: Decoded| match d {
        Decoded::Epoch(e) => {
            out.epochs += 1;
            let lat = e
                .rmc
                .and_then(|r| r.lat)
                .or(e.gga.and_then(|g| g.lat))
                .or(e.gns.and_then(|g| g.lat))
                .or(e.gll.and_then(|g| g.lat));
            if lat.is_some() && e.time_of_day_ms.is_some() && e.date.is_some() {
                out.with_position_time_date += 1;
            }
        }
        Decoded::BadChecksum => out.bad_checksums += 1,
    };
    for piece in bytes.chunks(chunk) {
        decoder.feed(piece, &mut sink);
    }
    decoder.finish(&mut sink);
    out.stats = *decoder.stats();
    out
}

#[test]
fn every_corpus_log_decodes_with_sensible_counts() {
    let Some(logs) = corpus::logs("every_corpus_log_decodes_with_sensible_counts") else {
        return;
    };
    assert!(
        logs.len() >= 50,
        "expected the corpus logs, found {}",
        logs.len()
    );
    let mut total = SentenceStats::default();
    for path in &logs {
        let bytes = std::fs::read(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        let o = decode(&bytes, 4096);
        let s = o.stats;
        // Every `$` line that is not a comment lands in exactly one counter (or is cut short
        // by another `$` on the same line, counted as malformed).
        let dollar_lines = bytes
            .split(|b| *b == b'\n')
            .filter(|l| l.first() != Some(&b'#') && l.contains(&b'$'))
            .count() as u64;
        let counted = s.ok
            + s.checksum
            + s.missing_checksum
            + s.too_long
            + s.non_ascii
            + s.nul
            + s.malformed
            + s.proprietary
            + s.unsupported;
        assert!(
            counted >= dollar_lines,
            "{name}: {s:?} for {dollar_lines} lines"
        );
        assert!(s.ok > 0, "{name}: nothing parsed: {s:?}");
        assert!(o.epochs > 0 && o.epochs as u64 == s.epochs, "{name}: {s:?}");
        assert_eq!(
            o.bad_checksums as u64,
            s.checksum + s.missing_checksum,
            "{name}"
        );
        // Most parsed sentences are real data, not rescue failures.
        assert!(s.malformed * 2 < s.ok, "{name}: too many malformed: {s:?}");
        total.ok += s.ok;
        total.malformed += s.malformed;
        total.epochs += s.epochs;
        total.checksum += s.checksum;
        total.proprietary += s.proprietary;
        let _ = o.with_position_time_date;
    }
    // Over the whole corpus: thousands of sentences, few malformed.
    assert!(total.ok > 5000, "{total:?}");
    assert!(total.malformed < 20, "{total:?}");
    assert!(total.epochs > 1000, "{total:?}");
}

#[test]
fn chunking_does_not_change_the_result() {
    let Some(logs) = corpus::logs("chunking_does_not_change_the_result") else {
        return;
    };
    for path in logs {
        let bytes = std::fs::read(&path).unwrap();
        let whole = decode(&bytes, bytes.len().max(1));
        let bytewise = decode(&bytes, 1);
        let odd = decode(&bytes, 7);
        assert_eq!(whole.stats, bytewise.stats, "{}", path.display());
        assert_eq!(whole.stats, odd.stats, "{}", path.display());
        assert_eq!(whole.with_position_time_date, odd.with_position_time_date);
    }
}

#[test]
fn quectel_gns_and_pre_2_3_gll_logs_yield_positioned_epochs() {
    let Some(dir) = corpus::dir("quectel_gns_and_pre_2_3_gll_logs_yield_positioned_epochs") else {
        return;
    };
    // Logs whose position sentences the nmea crate alone would reject.
    for (name, at_least) in [
        ("quectel-eg25-g.log", 20),
        ("pharos-360.log", 15),
        ("magellan315.log", 3),
    ] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let o = decode(&bytes, 4096);
        assert!(
            o.with_position_time_date >= at_least,
            "{name}: {} epochs with position, time and date ({:?})",
            o.with_position_time_date,
            o.stats
        );
    }
}
