//! The large-block cache, through the global allocator: a freed large block
//! is reused without a system call (in place, at the same address), what a
//! program reads from a reused block is what it wrote (and zero for a zeroed
//! allocation), the cache stays within its 64 MiB budget, gives its memory
//! back 100 ms after it was last used and at `collect()`, reused blocks
//! resize correctly, and threads allocating and freeing large blocks at once
//! keep their contents.
//!
//! The tests share the process-wide cache, so each holds [`serial`] and
//! starts from an empty cache. They run one after another on the main
//! thread (`harness = false`): the counts of system calls they compare are
//! process-wide, and a test thread the harness started meanwhile could map
//! a segment between two snapshots.

mod common;

use common::{mib, rss_bytes, Rng, MIB};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

fn main() {
    run(
        "a_freed_block_is_reused_in_place_without_a_system_call",
        a_freed_block_is_reused_in_place_without_a_system_call,
    );
    run(
        "a_reused_block_is_realigned_and_its_header_rewritten",
        a_reused_block_is_realigned_and_its_header_rewritten,
    );
    run(
        "zeroed_allocations_of_reused_memory_read_zero",
        zeroed_allocations_of_reused_memory_read_zero,
    );
    run(
        "the_cache_stays_within_its_budget",
        the_cache_stays_within_its_budget,
    );
    run(
        "cached_blocks_are_purged_once_unused_for_the_delay",
        cached_blocks_are_purged_once_unused_for_the_delay,
    );
    run("collect_empties_the_cache", collect_empties_the_cache);
    run(
        "reused_blocks_resize_with_mremap",
        reused_blocks_resize_with_mremap,
    );
    run(
        "a_reused_block_grows_into_its_cached_tail_in_place",
        a_reused_block_grows_into_its_cached_tail_in_place,
    );
    run(
        "a_shrunk_block_stays_and_grows_back_into_its_tail_without_a_system_call",
        a_shrunk_block_stays_and_grows_back_into_its_tail_without_a_system_call,
    );
    run(
        "threads_allocating_and_freeing_large_blocks_keep_their_contents",
        threads_allocating_and_freeing_large_blocks_keep_their_contents,
    );
    #[cfg(feature = "profiling")]
    run(
        "a_sampled_small_block_grows_into_a_cached_mapping",
        a_sampled_small_block_grows_into_a_cached_mapping,
    );
    println!("large_cache: all passed");
}

fn run(name: &str, test: fn()) {
    println!("test {name} ...");
    test();
    println!("test {name} ... ok");
}

/// The most the cache holds (`large_cache::BUDGET`).
const BUDGET: usize = 128 * MIB;
/// The header page before a large block's data.
const HEADER: usize = 4096;
/// Longer than the purge delay (100 ms), with room for a coarse clock.
const PAST_THE_DELAY: Duration = Duration::from_millis(250);

/// One test at a time, each starting from an empty cache.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    segalloc::collect();
    assert_eq!(segalloc::stats().large_cached, 0, "collect() empties it");
    g
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// The mapping a block of `size` bytes (alignment up to a page) needs.
fn mapping(size: usize) -> usize {
    (HEADER + size).next_multiple_of(4096)
}

fn alloc(size: usize) -> *mut u8 {
    // SAFETY: a non-zero size.
    let p = unsafe { GLOBAL.alloc(layout(size)) };
    assert!(!p.is_null(), "alloc of {size} bytes failed");
    p
}

fn free(p: *mut u8, size: usize) {
    // SAFETY: the callers pass blocks from `alloc` with their size.
    unsafe { GLOBAL.dealloc(p, layout(size)) }
}

/// Writes a pattern of `seed` into the first bytes of every page and the last
/// byte of the block.
fn stamp(p: *mut u8, size: usize, seed: u64) {
    // SAFETY: the callers pass live blocks of `size` bytes.
    unsafe {
        for off in (0..size - 8).step_by(4096) {
            p.add(off).cast::<u64>().write_unaligned(seed ^ off as u64);
        }
        p.add(size - 1).write(seed as u8);
    }
}

/// Whether the block holds what [`stamp`] wrote.
fn stamped(p: *const u8, size: usize, seed: u64) -> bool {
    // SAFETY: the callers pass live blocks of `size` bytes.
    unsafe {
        (0..size - 8)
            .step_by(4096)
            .all(|off| p.add(off).cast::<u64>().read_unaligned() == seed ^ off as u64)
            && p.add(size - 1).read() == seed as u8
    }
}

/// Whether the pages below `upto` still hold what [`stamp`] wrote (the block
/// was stamped with at least `upto` bytes).
fn prefix_stamped(p: *const u8, upto: usize, seed: u64) -> bool {
    // SAFETY: the callers pass live blocks of at least `upto` bytes.
    unsafe {
        (0..upto - 8)
            .step_by(4096)
            .all(|off| p.add(off).cast::<u64>().read_unaligned() == seed ^ off as u64)
    }
}

/// Whether all `size` bytes at `p` are zero.
fn all_zero(p: *const u8, size: usize) -> bool {
    // SAFETY: the callers pass live blocks of `size` bytes.
    let s = unsafe { std::slice::from_raw_parts(p, size) };
    let (head, words, tail) = unsafe { s.align_to::<u64>() };
    head.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

fn identity_holds(s: &segalloc::Stats) {
    assert_eq!(
        s.committed,
        s.allocated + s.metadata + s.external_fragmentation(),
        "{s}"
    );
    assert!(s.large_cached <= s.free_pages, "{s}");
}

fn a_freed_block_is_reused_in_place_without_a_system_call() {
    let _g = serial();
    let p = alloc(10 * MIB);
    stamp(p, 10 * MIB, 1);
    free(p, 10 * MIB);
    let s0 = segalloc::stats();
    assert_eq!(s0.large_cached, mapping(10 * MIB));
    identity_holds(&s0);

    // A little smaller: the whole mapping, where it is.
    let size = 10 * MIB - 100_000;
    let q = alloc(size);
    let s1 = segalloc::stats();
    assert_eq!(q, p, "the same address");
    assert_eq!(s1.os_calls, s0.os_calls, "no system call at all");
    assert_eq!(s1.large_cached, 0);
    assert_eq!(s1.large_objects, s0.large_objects + 1);
    // SAFETY: a live block.
    assert_eq!(unsafe { segalloc::usable_size(q) }, 10 * MIB);
    stamp(q, size, 2);
    assert!(stamped(q, size, 2));
    free(q, size);

    // Much smaller: cut from the front, the rest stays cached; freed, the
    // block joins its rest again, and the whole is reused once more.
    let r = alloc(3 * MIB);
    let s2 = segalloc::stats();
    assert_eq!(r, p);
    assert_eq!(s2.os_calls, s0.os_calls);
    assert_eq!(s2.large_cached, mapping(10 * MIB) - mapping(3 * MIB));
    // SAFETY: a live block.
    assert_eq!(unsafe { segalloc::usable_size(r) }, 3 * MIB);
    stamp(r, 3 * MIB, 3);
    assert!(stamped(r, 3 * MIB, 3));
    free(r, 3 * MIB);
    assert_eq!(segalloc::stats().large_cached, mapping(10 * MIB));
    let t = alloc(10 * MIB);
    assert_eq!(t, p);
    assert_eq!(segalloc::stats().os_calls, s0.os_calls);
    free(t, 10 * MIB);
}

fn a_reused_block_is_realigned_and_its_header_rewritten() {
    let _g = serial();
    let p = alloc(6 * MIB);
    free(p, 6 * MIB);
    // 1 MiB alignment puts the block 1 MiB into the same mapping.
    let l = Layout::from_size_align(5 * MIB, MIB).unwrap();
    // SAFETY: a non-zero size.
    let q = unsafe { GLOBAL.alloc(l) };
    assert_eq!(q as usize, p as usize - HEADER + MIB);
    // SAFETY: a live block.
    assert_eq!(unsafe { segalloc::usable_size(q) }, 5 * MIB + HEADER);
    stamp(q, 5 * MIB, 4);
    // Freeing finds the block where the new header says it is (a stale
    // offset would abort: an interior pointer).
    // SAFETY: the block just allocated with `l`.
    unsafe { GLOBAL.dealloc(q, l) };
    let r = alloc(6 * MIB);
    assert_eq!(r, p);
    // SAFETY: a live block.
    assert_eq!(unsafe { segalloc::usable_size(r) }, 6 * MIB);
    free(r, 6 * MIB);
}

fn zeroed_allocations_of_reused_memory_read_zero() {
    let _g = serial();
    // Reused in place.
    let p = alloc(8 * MIB);
    // SAFETY: a live block of 8 MiB.
    unsafe { p.write_bytes(0xAB, 8 * MIB) };
    free(p, 8 * MIB);
    // SAFETY: a non-zero size.
    let z = unsafe { GLOBAL.alloc_zeroed(layout(8 * MIB)) };
    assert_eq!(z, p, "reused");
    assert!(all_zero(z, 8 * MIB));
    free(z, 8 * MIB);
    segalloc::collect();

    // Grown: the cached 3 MiB moved and extended with mremap.
    let p = alloc(3 * MIB);
    // SAFETY: a live block of 3 MiB.
    unsafe { p.write_bytes(0xCD, 3 * MIB) };
    free(p, 3 * MIB);
    let s0 = segalloc::stats();
    // SAFETY: a non-zero size.
    let z = unsafe { GLOBAL.alloc_zeroed(layout(12 * MIB)) };
    let s1 = segalloc::stats();
    assert_eq!(s1.os_calls.mremap, s0.os_calls.mremap + 1, "grown: {s1}");
    assert_eq!(s1.large_cached, 0);
    assert!(all_zero(z, 12 * MIB));
    free(z, 12 * MIB);
    segalloc::collect();

    // Moved: the tail of a cut mapping, which does not start on a segment
    // boundary.
    let p = alloc(20 * MIB);
    // SAFETY: a live block of 20 MiB.
    unsafe { p.write_bytes(0xEE, 20 * MIB) };
    free(p, 20 * MIB);
    let front = alloc(5 * MIB);
    assert_eq!(front, p);
    let s0 = segalloc::stats();
    // SAFETY: a non-zero size.
    let z = unsafe { GLOBAL.alloc_zeroed(layout(14 * MIB)) };
    let s1 = segalloc::stats();
    assert_eq!(s1.os_calls.mremap, s0.os_calls.mremap + 1, "moved: {s1}");
    assert_eq!(s1.large_cached, 0);
    assert!(all_zero(z, 14 * MIB));
    free(z, 14 * MIB);
    free(front, 5 * MIB);
}

fn the_cache_stays_within_its_budget() {
    let _g = serial();
    // What is measured is the budget, not the purge delay: on a loaded
    // machine the loop below can outlast the default 100 ms, and the first
    // blocks freed would leave the cache by age (CI failed so).
    let delay = segalloc::runtime_options()
        .find(|o| o.name == "purge_delay_ms")
        .unwrap()
        .get();
    segalloc::set_option("purge_delay_ms", "3600000").unwrap();
    let s0 = segalloc::stats();
    let mut rng = Rng::new(7);
    let blocks: Vec<(*mut u8, usize)> = (0..40)
        .map(|_| {
            let size = rng.range(MIB + 1, 30 * MIB);
            let p = alloc(size);
            stamp(p, size, size as u64);
            (p, size)
        })
        .collect();
    let live: usize = blocks.iter().map(|&(_, n)| mapping(n)).sum();
    for &(p, size) in &blocks {
        assert!(stamped(p, size, size as u64));
        free(p, size);
        let s = segalloc::stats();
        assert!(s.large_cached <= BUDGET, "{}: {s}", mib(s.large_cached));
        identity_holds(&s);
    }
    let s = segalloc::stats();
    assert!(s.large_cached > BUDGET / 2, "the budget is used: {s}");
    assert!(
        s.mapped <= s0.mapped + BUDGET + 4 * MIB,
        "{} of {} freed stays mapped",
        mib(s.mapped - s0.mapped),
        mib(live)
    );
    // A block longer than the whole budget (grown from the longest cached
    // mapping) is unmapped at once when freed.
    let p = alloc(BUDGET + MIB);
    let s1 = segalloc::stats();
    assert!(s1.large_cached < s.large_cached, "it took cached memory");
    free(p, BUDGET + MIB);
    let s2 = segalloc::stats();
    assert_eq!(s2.large_cached, s1.large_cached);
    assert_eq!(s2.os_calls.munmap, s1.os_calls.munmap + 1);
    segalloc::set_option("purge_delay_ms", &delay.to_string()).unwrap();
}

fn cached_blocks_are_purged_once_unused_for_the_delay() {
    let _g = serial();
    let rss0 = rss_bytes();
    let p = alloc(16 * MIB);
    stamp(p, 16 * MIB, 5); // every page resident
    free(p, 16 * MIB);
    let s0 = segalloc::stats();
    let rss1 = rss_bytes();
    assert_eq!(s0.large_cached, mapping(16 * MIB));
    assert!(rss1 >= rss0 + 12 * MIB, "{} -> {}", mib(rss0), mib(rss1));

    // Any small-allocation slow path checks: a new thread's first one.
    thread::sleep(PAST_THE_DELAY);
    thread::spawn(|| drop(Box::new(7u64))).join().unwrap();
    let s1 = segalloc::stats();
    let rss2 = rss_bytes();
    assert_eq!(s1.large_cached, 0, "{s1}");
    assert!(s1.os_calls.munmap > s0.os_calls.munmap);
    assert!(rss2 + 12 * MIB <= rss1, "{} -> {}", mib(rss1), mib(rss2));

    // And so does the next large allocation.
    let p = alloc(16 * MIB);
    stamp(p, 16 * MIB, 6);
    free(p, 16 * MIB);
    assert_eq!(segalloc::stats().large_cached, mapping(16 * MIB));
    thread::sleep(PAST_THE_DELAY);
    let q = alloc(2 * MIB);
    let s2 = segalloc::stats();
    assert_eq!(s2.large_cached, 0, "purged before looking: {s2}");
    free(q, 2 * MIB);
    // Used again before the delay: kept.
    let r = alloc(2 * MIB);
    assert_eq!(r, q);
    free(r, 2 * MIB);
}

fn collect_empties_the_cache() {
    let _g = serial();
    let sizes = [5 * MIB, 9 * MIB + 123, 13 * MIB];
    let ps: Vec<*mut u8> = sizes.iter().map(|&n| alloc(n)).collect();
    for (&p, &n) in ps.iter().zip(&sizes) {
        stamp(p, n, 9);
        free(p, n);
    }
    let s0 = segalloc::stats();
    assert_eq!(
        s0.large_cached,
        sizes.iter().map(|&n| mapping(n)).sum::<usize>()
    );
    identity_holds(&s0);
    segalloc::collect();
    let s1 = segalloc::stats();
    assert_eq!(s1.large_cached, 0);
    assert!(s1.os_calls.munmap >= s0.os_calls.munmap + sizes.len());
    assert!(s1.committed + s0.large_cached <= s0.committed, "{s0}\n{s1}");
    assert!(s1.mapped + s0.large_cached <= s0.mapped);
    identity_holds(&s1);
    let text = s1.to_string();
    assert!(text.contains("0 B of them cached large blocks"), "{text}");
}

fn reused_blocks_resize_with_mremap() {
    let _g = serial();
    let p = alloc(20 * MIB);
    free(p, 20 * MIB);
    // Cut from the cached mapping, with its tail cached right after it.
    let q = alloc(10 * MIB);
    assert_eq!(q, p);
    stamp(q, 10 * MIB, 10);
    let s0 = segalloc::stats();
    // SAFETY: a live block of 10 MiB; each result is the live block.
    unsafe {
        // Growing cannot stay in place (the tail is there): mremap moves it.
        let q = GLOBAL.realloc(q, layout(10 * MIB), 30 * MIB);
        assert!(!q.is_null());
        assert!(stamped(q, 10 * MIB, 10));
        assert_eq!(segalloc::usable_size(q), 30 * MIB);
        let s1 = segalloc::stats();
        assert!(s1.os_calls.mremap > s0.os_calls.mremap);
        assert_eq!(s1.reallocs_moved, s0.reallocs_moved, "no copy");
        stamp(q, 30 * MIB, 11);
        // Shrinking stays in place.
        let r = GLOBAL.realloc(q, layout(30 * MIB), 3 * MIB + 5);
        assert_eq!(r, q);
        assert_eq!(segalloc::usable_size(r), 3 * MIB + 4096);
        assert!(prefix_stamped(r, 3 * MIB, 11));
        GLOBAL.dealloc(r, layout(3 * MIB + 5));
    }

    // A mapping reused whole is longer than asked: usable size says so, and
    // a resize within it or below it keeps the block.
    segalloc::collect();
    let p = alloc(9 * MIB);
    free(p, 9 * MIB);
    let size = 8 * MIB + MIB / 2;
    let q = alloc(size);
    assert_eq!(q, p);
    // SAFETY: a live block; each result is the live block.
    unsafe {
        assert_eq!(segalloc::usable_size(q), 9 * MIB);
        stamp(q, size, 12);
        let r = GLOBAL.realloc(q, layout(size), 9 * MIB);
        assert_eq!(r, q, "fits the mapping as it is");
        let r = GLOBAL.realloc(r, layout(9 * MIB), 8 * MIB);
        assert_eq!(r, q);
        assert_eq!(segalloc::usable_size(r), 8 * MIB);
        assert!(prefix_stamped(r, 8 * MIB, 12));
        GLOBAL.dealloc(r, layout(8 * MIB));
    }
    let s = segalloc::stats();
    assert_eq!(s.large_objects, s0.large_objects - 1);
    identity_holds(&s);
}

fn a_reused_block_grows_into_its_cached_tail_in_place() {
    let _g = serial();
    let p = alloc(32 * MIB);
    stamp(p, 32 * MIB, 20);
    free(p, 32 * MIB);
    let q = alloc(2 * MIB);
    assert_eq!(q, p);
    stamp(q, 2 * MIB, 21);
    let s0 = segalloc::stats();
    assert_eq!(s0.large_cached, mapping(32 * MIB) - mapping(2 * MIB));
    // Doubling like a Vec: each step takes the front of the tail back.
    let mut size = 2 * MIB;
    for next in [4 * MIB, 8 * MIB, 16 * MIB, 32 * MIB] {
        // SAFETY: a live block of `size` bytes.
        let r = unsafe { GLOBAL.realloc(q, layout(size), next) };
        assert_eq!(r, q, "grown in place to {}", mib(next));
        assert!(prefix_stamped(r, 2 * MIB, 21));
        size = next;
        let s = segalloc::stats();
        assert_eq!(s.os_calls, s0.os_calls, "no system call");
        assert_eq!(s.large_cached, mapping(32 * MIB) - mapping(next));
        assert_eq!(s.large_bytes, s0.large_bytes - 2 * MIB + next);
        identity_holds(&s);
    }
    free(q, size);
    assert_eq!(segalloc::stats().large_cached, mapping(32 * MIB));
}

fn a_shrunk_block_stays_and_grows_back_into_its_tail_without_a_system_call() {
    let _g = serial();
    let size = 16 * MIB;
    let p = alloc(size);
    stamp(p, size, 30);
    let s0 = segalloc::stats();
    // Halved like a vector cut back: the block stays where it is, its tail
    // goes to the cache, still mapped: no system call.
    let mut cur = size;
    for next in [8 * MIB, 4 * MIB, 2 * MIB, MIB + MIB / 2] {
        // SAFETY: a live block of `cur` bytes.
        let q = unsafe { GLOBAL.realloc(p, layout(cur), next) };
        assert_eq!(q, p, "shrunk in place to {}", mib(next));
        cur = next;
        // SAFETY: a live block.
        assert_eq!(unsafe { segalloc::usable_size(q) }, next);
        assert!(prefix_stamped(q, next, 30));
        let s = segalloc::stats();
        assert_eq!(s.os_calls, s0.os_calls, "no system call");
        assert_eq!(s.large_cached, mapping(size) - mapping(next));
        assert_eq!(s.large_bytes, s0.large_bytes - size + next);
        assert_eq!(s.requested, s0.requested - size + next);
        identity_holds(&s);
    }
    // To a small size at least half of it: it stays once more...
    let small = 800 * 1024;
    // SAFETY: a live block of `cur` bytes.
    let q = unsafe { GLOBAL.realloc(p, layout(cur), small) };
    assert_eq!(q, p, "a large block halved to a small size stays");
    assert!(prefix_stamped(q, small, 30));
    // ...but not below half, nor once it is no longer large.
    let tiny = 300 * 1024;
    // SAFETY: a live block of `small` bytes.
    let r = unsafe { GLOBAL.realloc(q, layout(small), tiny) };
    assert_ne!(r, p, "moved to a small block");
    assert!(prefix_stamped(r, tiny, 30));
    // Its mapping went to the cache, one with its tail again.
    let s1 = segalloc::stats();
    assert_eq!(s1.large_cached, mapping(size));
    assert_eq!(s1.large_objects, s0.large_objects - 1);
    assert_eq!(s1.os_calls.munmap, s0.os_calls.munmap);
    assert_eq!(s1.os_calls.mremap, s0.os_calls.mremap);
    identity_holds(&s1);

    // Grown back by doubling: past half the large threshold, the block
    // takes the cached mapping where it is, then its tail: no system call.
    let mut q = r;
    cur = tiny;
    let sg = segalloc::stats();
    for next in [600 * 1024, MIB + MIB / 2, 3 * MIB, 6 * MIB, 12 * MIB, size] {
        // SAFETY: a live block of `cur` bytes.
        let n = unsafe { GLOBAL.realloc(q, layout(cur), next) };
        assert!(!n.is_null());
        assert!(prefix_stamped(n, tiny, 30), "kept across {}", mib(next));
        assert_eq!(n, p, "in the cached mapping, in place");
        q = n;
        cur = next;
    }
    let s2 = segalloc::stats();
    assert_eq!(s2.os_calls, sg.os_calls, "no system call");
    assert_eq!(
        s2.reallocs_moved - sg.reallocs_moved,
        1,
        "one copy, into it"
    );
    assert_eq!(s2.large_cached, 0);
    assert_eq!(
        (s2.large_bytes, s2.requested),
        (s0.large_bytes, s0.requested)
    );
    identity_holds(&s2);
    free(q, size);
    assert_eq!(segalloc::stats().large_cached, mapping(size));
}

fn threads_allocating_and_freeing_large_blocks_keep_their_contents() {
    let _g = serial();
    let before = segalloc::stats();
    // Blocks handed between threads, so some are freed by another thread.
    let shared: &'static Mutex<Vec<(usize, usize, u64)>> =
        Box::leak(Box::new(Mutex::new(Vec::new())));
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            thread::spawn(move || {
                let mut rng = Rng::new(100 + t);
                let mut mine: Vec<(*mut u8, usize, u64)> = Vec::new();
                for i in 0..150u64 {
                    let size = rng.range(MIB + 1, 8 * MIB);
                    let seed = (t << 32) | i;
                    let p = alloc(size);
                    stamp(p, size, seed);
                    mine.push((p, size, seed));
                    if mine.len() > 3 {
                        let (p, size, seed) = mine.remove(rng.range(0, 3));
                        assert!(stamped(p, size, seed), "thread {t} block {seed:x}");
                        if i % 4 == 0 {
                            shared.lock().unwrap().push((p as usize, size, seed));
                        } else {
                            free(p, size);
                        }
                    }
                    if i % 3 == 0 {
                        let other = shared.lock().unwrap().pop();
                        if let Some((p, size, seed)) = other {
                            assert!(stamped(p as *const u8, size, seed), "handed block {seed:x}");
                            free(p as *mut u8, size);
                        }
                    }
                }
                for (p, size, seed) in mine {
                    assert!(stamped(p, size, seed));
                    free(p, size);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for (p, size, seed) in shared.lock().unwrap().drain(..) {
        assert!(stamped(p as *const u8, size, seed));
        free(p as *mut u8, size);
    }
    let s = segalloc::stats();
    assert_eq!(s.large_objects, before.large_objects);
    assert!(s.large_cached <= BUDGET);
    identity_holds(&s);
}

/// A small block the heap profiler sampled (feature `profiling`), growing
/// towards the large range, goes where the unsampled block would: into a
/// mapping of the cache, in place. (It went to a fresh small block, which
/// left the cached mapping unused: with `SEGALLOC_PROF=1` the test above
/// failed so at random, 7 runs in 10, when its 300 KiB block was sampled.)
/// Last: it stops the sampling `SEGALLOC_PROF=1` started.
#[cfg(feature = "profiling")]
fn a_sampled_small_block_grows_into_a_cached_mapping() {
    let _g = serial();
    let size = 2 * MIB;
    let p = alloc(size);
    free(p, size);
    assert_eq!(segalloc::stats().large_cached, mapping(size));
    // A mean of one byte between samples: the next allocation is sampled.
    segalloc::profile::start(1);
    let small = 300 * 1024;
    let s = alloc(small);
    segalloc::profile::stop();
    stamp(s, small, 40);
    // A sampled small block has a mapping of its own, its block 512 bytes
    // past a 4 MiB boundary (in its header's page), where no block of a
    // small segment starts.
    assert_eq!(s as usize % (4 * MIB), 512, "sampled");
    let grown = 600 * 1024;
    // SAFETY: a live block of `small` bytes.
    let q = unsafe { GLOBAL.realloc(s, layout(small), grown) };
    assert_eq!(q, p, "in the cached mapping, in place");
    assert!(prefix_stamped(q, small, 40));
    // Cut from the front of the cached mapping, whose rest stays cached.
    assert_eq!(
        segalloc::stats().large_cached,
        mapping(size) - mapping(grown)
    );
    free(q, grown);
}
