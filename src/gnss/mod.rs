//! GNSS ingest: bytes from a receiver to [`epoch::Epoch`]s.
//!
//! The data's way: a source (`source`: serial port or log file) yields bytes; `framer` cuts
//! them into checksummed sentences in a fixed buffer; `sentence` parses each with the `nmea`
//! crate into a small, copyable observation; `epoch` groups the observations of one UTC time.
//! Validation of an epoch is `crate::validate`'s job, not this module's.

pub mod epoch;
