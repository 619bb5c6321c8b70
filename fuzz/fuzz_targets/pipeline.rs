//! Fuzz target: arbitrary bytes through framing, parsing, epoch assembly and validation.
//! Nothing may panic, hang or grow without bound; every accepted fix must satisfy the
//! validator's own promises (finite, in range, not 0,0).

#![no_main]

use gps_agent::config::ValidateConfig;
use gps_agent::gnss::{Decoded, Decoder};
use gps_agent::validate::Validator;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunking and strictness, so splits across feeds are explored.
    let (head, rest) = match data.split_first() {
        Some((h, r)) => (*h, r),
        None => return,
    };
    let chunk = usize::from(head % 64) + 1;
    let mut decoder = Decoder::new(head & 0x80 == 0);
    let mut validator = Validator::new(ValidateConfig::default());
    let mut check = |ev: Decoded| {
        if let Decoded::Epoch(epoch) = ev {
            if let Ok(fix) = validator.check(&epoch) {
                assert!(fix.lat.is_finite() && fix.lon.is_finite());
                assert!((-90.0..=90.0).contains(&fix.lat));
                assert!((-180.0..=180.0).contains(&fix.lon));
                assert!(!(fix.lat == 0.0 && fix.lon == 0.0));
            }
        }
    };
    for piece in rest.chunks(chunk) {
        decoder.feed(piece, &mut check);
    }
    decoder.finish(&mut check);
});
