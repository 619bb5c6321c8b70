//! Benchmark: the pipeline (parse + assemble + validate) over the gpsd corpus, in sentences per second, and
//! heap allocations per sentence (counted by a counting global allocator).
//!
//! `cargo bench --bench pipeline` prints criterion's figures plus one line:
//! `pipeline: N sentences/s on one core, A allocations over M sentences (steady state)`.
//! Corpus path: `GPS_AGENT_CORPUS`, default `../shared/nmea-corpus`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gps_agent::config::ValidateConfig;
use gps_agent::pipeline::Pipeline;
use gps_agent::validate::Verdict;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

struct Counting;
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn corpus() -> Vec<u8> {
    let dir = std::env::var_os("GPS_AGENT_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/nmea-corpus"
            ))
        });
    let Ok(entries) = std::fs::read_dir(&dir) else {
        // A clone without the corpus: measure on the simulator's drive instead, and say so.
        println!(
            "no gpsd corpus at {}: measuring on a simulated 10 Hz drive (set GPS_AGENT_CORPUS)",
            dir.display()
        );
        let spec = gps_agent::sim::DriveSpec {
            rate_hz: 10,
            epochs: 6_000,
            corrupt_every: Some(200),
            ..gps_agent::sim::DriveSpec::default()
        };
        let mut all = Vec::new();
        if let Ok(drive) = gps_agent::sim::Drive::new(spec) {
            let _ = gps_agent::sim::write_log(drive, &mut all);
        }
        return all;
    };
    let mut names: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    names.sort();
    let mut all = Vec::new();
    for n in names {
        all.extend(std::fs::read(n).expect("corpus log"));
        all.push(b'\n');
    }
    all
}

fn sentence_count(data: &[u8]) -> u64 {
    data.split(|b| *b == b'\n')
        .filter(|l| l.first().is_some_and(|c| *c == b'$' || *c == b'!'))
        .count() as u64
}

/// One pass over the data; returns accepted fixes (so the work cannot be optimised away).
fn run_pass(data: &[u8], pipeline: &mut Pipeline) -> u64 {
    let mut accepted = 0u64;
    let mut count = |v: Verdict| accepted += u64::from(black_box(&v).is_ok());
    for chunk in data.chunks(4096) {
        pipeline.feed(chunk, &mut count);
    }
    pipeline.finish(&mut count);
    accepted
}

fn bench(c: &mut Criterion) {
    let data = corpus();
    let sentences = sentence_count(&data);

    // Allocation count in steady state: the second pass over the same data with warm state.
    let mut pipeline = Pipeline::new(true, ValidateConfig::default());
    run_pass(&data, &mut pipeline);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    run_pass(&data, &mut pipeline);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;

    // A plain timing too, for a one-line figure outside criterion's report.
    let passes = 50;
    let start = Instant::now();
    for _ in 0..passes {
        black_box(run_pass(&data, &mut pipeline));
    }
    let rate = (sentences * passes) as f64 / start.elapsed().as_secs_f64();
    println!(
        "pipeline: {:.0} sentences/s on one core, {allocations} allocations over {sentences} sentences (steady state)",
        rate
    );

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(sentences));
    group.bench_function("corpus_parse_assemble_validate", |b| {
        b.iter(|| {
            let mut pipeline = Pipeline::new(true, ValidateConfig::default());
            black_box(run_pass(black_box(&data), &mut pipeline))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
