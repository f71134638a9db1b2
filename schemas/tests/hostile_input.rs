//! Records read back from Kafka topics, which any Kafka client can write:
//! inputs the fuzzer (fuzz/, target `avro_decode`) found, kept as
//! regressions. Decoding them must fail cleanly, without asking the
//! allocator for more than the input could justify.
//!
//! The test binary counts allocations (its own global allocator), so an
//! up-front reservation of gigabytes is seen even where the operating
//! system would have lent the address space.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use schemas::{
    Codec, FailureEnvelope, GatheredContext, SynthesizedEnhancement, TicketUpdated, ValidatedJob, WebhookReceived,
};

/// The system allocator, remembering the largest single request.
struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);
/// The tests measure one at a time (the counter is process-wide).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

/// A `synthesized_enhancement` record (150 bytes) whose `timings` map
/// declares 134 million entries: apache-avro 0.21 reserved them all up
/// front (10.8 GB; the process aborts when the allocation fails). Fixed in
/// vendor/apache-avro (README there).
const MAP_COUNT: &[u8] = include_bytes!("fixtures/map_count_oom.avro");

/// The largest single allocation any decoder may make for these inputs.
const LIMIT: usize = 1 << 20;

fn decode_everything(bytes: &[u8]) {
    let codec = Codec::builtin();
    let _ = codec.decode::<WebhookReceived>(bytes);
    let _ = codec.decode::<ValidatedJob>(bytes);
    let _ = codec.decode::<GatheredContext>(bytes);
    let _ = codec.decode::<TicketUpdated>(bytes);
    let _ = codec.decode::<FailureEnvelope>(bytes);
}

#[test]
fn found_by_the_fuzzer_a_huge_map_count_fails_without_a_huge_allocation() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let codec = Codec::builtin();
    LARGEST.store(0, Ordering::Relaxed);
    assert!(codec.decode::<SynthesizedEnhancement>(MAP_COUNT).is_err());
    decode_everything(MAP_COUNT);
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= LIMIT,
        "largest allocation {largest} bytes for a {}-byte record",
        MAP_COUNT.len()
    );
}

#[test]
fn a_huge_declared_string_length_fails_without_a_huge_allocation() {
    // A valid record whose first string length is rewritten to 2^28.
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let codec = Codec::builtin();
    let record: WebhookReceived = serde_json::from_value(serde_json::json!({
        "meta": {"job_id": "j", "correlation_id": "c", "tenant_id": "t", "ticket_id": "1",
                 "event": "e", "webhook_id": "w", "received_at_ms": 1},
        "payload_json": "{}"
    }))
    .unwrap();
    let good = codec.encode(&record).unwrap();
    // Header is 10 bytes; the datum starts with `job_id`'s length (1 -> zigzag 2).
    assert_eq!(good[10], 2);
    let mut long_string = good[..10].to_vec();
    long_string.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x02]); // zigzag 2^28
    long_string.extend_from_slice(&good[11..]);
    LARGEST.store(0, Ordering::Relaxed);
    assert!(codec.decode::<WebhookReceived>(&long_string).is_err());
    decode_everything(&long_string);
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest <= LIMIT, "largest allocation {largest} bytes");
}
