//! NMEA bytes through the real decoder and validator, every verdict in order (held fixes
//! decided one epoch late, the last one at the end). Include it on its own with
//! `#[path = "support/verdicts.rs"] mod verdicts;`.

use gps_agent::config::ValidateSettings;
use gps_agent::gnss::{Decoded, Decoder};
use gps_agent::validate::{Validator, Verdict};

pub fn of(bytes: &[u8], require_checksum: bool, cfg: &ValidateSettings) -> Vec<Verdict> {
    let mut decoder = Decoder::new(require_checksum);
    let mut validator = Validator::new(cfg.clone());
    let mut out = Vec::new();
    let mut events = Vec::new();
    decoder.feed(bytes, &mut |e| events.push(e));
    decoder.finish(&mut |e| events.push(e));
    for e in events {
        if let Decoded::Epoch(epoch) = e {
            validator.push(&epoch, &mut |v| out.push(v));
        }
    }
    validator.finish(&mut |v| out.push(v));
    out
}
