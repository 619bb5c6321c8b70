//! Where the gpsd regression corpus is, for the tests that read real receiver captures.
//!
//! `GPS_AGENT_CORPUS`, else `../shared/nmea-corpus` beside the checkout. A clone of the
//! repository alone has no corpus: then the test says on stderr that it skipped and why, and
//! passes, unless `GPS_AGENT_REQUIRE_CORPUS=1` (CI sets it), when a missing corpus fails it.
//! Include it on its own with `#[path = "support/corpus.rs"] mod corpus;` so a test that
//! needs only this does not build the whole harness.

#![allow(dead_code)] // Each test file uses a different part.

use std::io::Write;
use std::path::PathBuf;

/// The corpus directory, or `None` (after saying so) when it is absent and not required.
pub fn dir(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("GPS_AGENT_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/nmea-corpus"
            ))
        });
    let present = std::fs::read_dir(&dir).is_ok_and(|mut entries| {
        entries.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log")))
    });
    if present {
        return Some(dir);
    }
    let required = std::env::var("GPS_AGENT_REQUIRE_CORPUS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{test}: no gpsd corpus at {} and GPS_AGENT_REQUIRE_CORPUS=1 (set GPS_AGENT_CORPUS)",
        dir.display()
    );
    // Straight to the process's stderr: the test harness captures `eprintln!`, and a skip
    // must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "{test}: SKIPPED: no gpsd corpus at {} (set GPS_AGENT_CORPUS, or GPS_AGENT_REQUIRE_CORPUS=1 to make this a failure)",
        dir.display()
    );
    None
}

/// Every `.log` of the corpus, sorted; `None` as [`dir`].
pub fn logs(test: &str) -> Option<Vec<PathBuf>> {
    let dir = dir(test)?;
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    Some(logs)
}
