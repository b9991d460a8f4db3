//! Dropping a first-class heap full of live objects gives its memory back:
//! the process-wide statistics return to where they were, exactly for the
//! byte counts, and the resident set shrinks back; resetting one keeps its
//! large blocks' mappings for the refill. Tests in their own binary
//! without libtest's harness (`harness = false` in Cargo.toml), run on the
//! main thread, so that no other thread allocates meanwhile: the harness's
//! own threads made the process-wide figures drift by a few hundred bytes
//! now and then.

mod common;

use common::{mib, rss_bytes, MIB};
use segalloc::allocator_api2::boxed::Box as HBox;
use segalloc::allocator_api2::vec::Vec as HVec;
use segalloc::Heap;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

fn main() {
    dropping_a_heap_with_live_blocks_returns_its_memory();
    a_reset_heap_refills_its_large_blocks_without_a_system_call();
    println!("heap_memory: 2 passed, 0 failed");
}

/// `reset` puts a heap's large blocks in the large-block cache, where the
/// refill finds them: the second and later rounds map nothing and fault
/// nothing in again for them (they used to be unmapped at each reset and
/// mapped and faulted in afresh).
fn a_reset_heap_refills_its_large_blocks_without_a_system_call() {
    segalloc::collect();
    let mut heap = Heap::new();
    let mut first = 0usize;
    for round in 0..4 {
        let before = segalloc::stats();
        let mut big = HVec::<u8, &Heap>::with_capacity_in(6 << 20, &heap);
        big.extend((0..(6 << 20)).map(|i| (i + round) as u8));
        let at = big.as_ptr() as usize;
        assert!(big.iter().enumerate().all(|(i, &b)| b == (i + round) as u8));
        let after = segalloc::stats();
        if round == 0 {
            first = at;
        } else {
            assert_eq!(at, first, "round {round}: the cached mapping, where it was");
            assert_eq!(
                after.os_calls.mmap, before.os_calls.mmap,
                "round {round}: no mapping made"
            );
        }
        std::mem::forget(big);
        heap.reset();
        let s = segalloc::stats();
        assert!(
            s.large_cached >= 6 << 20,
            "round {round}: cached at reset\n{s}"
        );
        assert_eq!(heap.stats().large_objects, 0);
    }
    drop(heap);
    segalloc::collect();
    assert_eq!(segalloc::stats().large_cached, 0);
}

fn dropping_a_heap_with_live_blocks_returns_its_memory() {
    segalloc::collect();
    let before = segalloc::stats();
    let rss_before = rss_bytes();
    for round in 0..3 {
        let heap = Heap::new();
        let mut v = HVec::new_in(&heap);
        for i in 0..300_000u64 {
            v.push(HBox::new_in([i; 4], &heap));
        }
        let mut map = hashbrown::HashMap::new_in(&heap);
        for i in 0..100_000u64 {
            map.insert(i, i);
        }
        let mut big = HVec::<u8, &Heap>::new_in(&heap);
        big.extend((0..(16 << 20)).map(|i| i as u8));
        let s = heap.stats();
        assert!(s.live_blocks() >= 300_003, "{s}");
        assert!(s.committed >= 300_000 * 32 + (16 << 20), "{s}");
        let during = segalloc::stats();
        assert!(
            during.requested >= before.requested + 300_000 * 32 + (16 << 20),
            "the process sees the heap's blocks: {during}"
        );
        let rss_during = rss_bytes();
        assert!(
            rss_during > rss_before + 20 * MIB,
            "{} -> {}",
            mib(rss_before),
            mib(rss_during)
        );
        // Nothing is freed block by block: the heap goes at once.
        std::mem::forget((v, map, big));
        drop(heap);
        let after = segalloc::stats();
        assert_eq!(after.requested, before.requested, "round {round}: {after}");
        assert_eq!(
            after.live_blocks(),
            before.live_blocks(),
            "round {round}: {after}"
        );
        assert_eq!(
            after.large_objects, before.large_objects,
            "round {round}: {after}"
        );
        assert_eq!(
            after.committed,
            after.allocated + after.metadata + after.external_fragmentation(),
            "the identity holds: {after}"
        );
        // At most the process-wide cache of free segments stays resident
        // (2 MiB of it) besides what was there.
        assert!(
            after.committed <= before.committed + 4 * MIB,
            "round {round}: committed {} -> {}",
            mib(before.committed),
            mib(after.committed)
        );
        let rss_after = rss_bytes();
        assert!(
            rss_after < rss_before + 8 * MIB,
            "round {round}: RSS {} -> {} -> {}",
            mib(rss_before),
            mib(rss_during),
            mib(rss_after)
        );
    }
}
