//! Zero heap allocation per sentence: decoding a corpus log a second time (once the
//! test's own buffers exist) allocates nothing at all.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use gps_agent::gnss::{Decoded, Decoder};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn decoding_a_log_allocates_nothing_per_sentence() {
    let dir = std::env::var_os("GPS_AGENT_CORPUS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/nmea-corpus").into());
    // Logs that exercise the rescues (GNS, GLL, GSA), garbage and bad checksums.
    for name in [
        "quectel-eg25-g.log",
        "pharos-360.log",
        "beidou-bd.log",
        "triton400.log",
        "ublox-zed-f9p-nmea.log",
    ] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let mut epochs = 0u64;
        let run = |epochs: &mut u64| {
            let mut decoder = Decoder::new(true);
            let mut sink = |d: Decoded| {
                if let Decoded::Epoch(_) = d {
                    *epochs += 1;
                }
            };
            decoder.feed(&bytes, &mut sink);
            decoder.finish(&mut sink);
        };
        run(&mut epochs);
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        run(&mut epochs);
        let during = ALLOCATIONS.load(Ordering::Relaxed) - before;
        assert!(epochs > 0, "{name}");
        assert_eq!(during, 0, "{name}: {during} allocations while decoding");
    }
}
