//! No heap allocation per fix: the report stage deciding a whole drive, and the compact
//! encoder writing a batch (one allocation for each message and its seq list, none per fix).
//! Allocations are counted per thread, so the two tests running side by side do not count
//! each other's.

mod support;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations;

use gps_agent::fix::Fix;
use gps_agent::report::{Kept, Policy, Settings};
use gps_agent::uplink::cbor;
use gps_agent::uplink::payload::FixBatch;

#[test]
fn deciding_a_drive_allocates_nothing() {
    let fixes = support::drives::tour(7);
    let mut policy = Policy::new(Settings::adaptive(10.0));
    let mut out = Kept::new();
    let mut kept = 0;
    let before = allocations();
    for fix in &fixes {
        policy.push(fix, &mut out);
        kept += out.len();
    }
    policy.finish(&mut out);
    kept += out.len();
    let allocations = allocations() - before;
    assert!(kept > 20);
    assert_eq!(allocations, 0, "{} fixes", fixes.len());
}

#[test]
fn encoding_allocates_per_message_not_per_fix() {
    let fixes: Vec<(u64, Fix)> = support::drives::tour(7)
        .into_iter()
        .take(1000)
        .enumerate()
        .map(|(i, f)| (i as u64 + 1, f))
        .collect();
    let batch = FixBatch {
        device: "truck-042",
        stream: "0123456789abcdef0123456789abcdef",
        fixes: &fixes,
    };
    let before = allocations();
    let enc = cbor::encode(&batch, 4096);
    let allocations = allocations() - before;
    let messages = enc.messages.len() as u64;
    assert!(messages > 3);
    // Each message: its payload and its seqs; the message list and the list of members
    // being sized grow by doubling (a few reallocations in all, not one per fix).
    assert!(
        allocations <= 2 * messages + 24,
        "{allocations} allocations for {messages} messages of 1000 fixes"
    );
}
