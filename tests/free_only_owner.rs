//! A thread that frees much and allocates little must still get back what
//! other threads free into its pages.
//!
//! Waves of short-lived threads (none parked: option `parked_heaps` 0, so
//! each exiting thread abandons its segments) allocate small blocks, free a
//! quarter and hand the rest to this thread, which frees a wave's blocks
//! while the next wave runs and allocates next to nothing. Freeing into the
//! abandoned segments makes this thread their owner, and the next waves'
//! threads, settling batches of frees, push blocks onto those segments'
//! pages for it to collect. Before the free side's upkeep (`alloc::upkeep`)
//! it never collected them: after 300 waves, with 5 MiB live, the process
//! had 585 MiB mapped and 78 MiB resident, growing with every wave (the C
//! `threadchurn` benchmark showed it first). Here RSS and segalloc's mappings after
//! the last wave must stay within a bound of what they were after the
//! first `BASELINE_AT` waves, and every block's contents are checked.
//!
//! One test in the binary: no other test's threads disturb the figures.
mod common;

use common::{check, fill, mib, mib_delta, rss_bytes, Rng, MIB};
use std::thread;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

const WAVES: usize = 300;
const THREADS: usize = 4;
const BLOCKS: usize = 10_000;
const BASELINE_AT: usize = 50;
/// About five waves' worth of live blocks; the unfixed code grew by 21 MiB
/// (and this code by 0.9).
const MAX_RSS_GROWTH: usize = 8 * MIB;
/// Of segalloc's mappings (`Stats::mapped`, not the process's virtual size,
/// which glibc's cache of thread stacks makes vary by tens of MiB).
const MAX_MAPPED_GROWTH: usize = 64 * MIB;

/// A wave's thread: its blocks (id, contents) handed to the main thread.
fn wave_thread(wave: usize, t: usize) -> Vec<(u64, Box<[u8]>)> {
    let mut rng = Rng::new((wave * THREADS + t) as u64 + 1);
    let mut kept = Vec::with_capacity(BLOCKS);
    for i in 0..BLOCKS {
        let size = if rng.chance(1, 4) {
            rng.range(65, 256)
        } else {
            rng.range(16, 64)
        };
        let id = ((wave * THREADS + t) * BLOCKS + i) as u64;
        let mut b = vec![0u8; size].into_boxed_slice();
        // SAFETY: `b` is `size` writable bytes.
        unsafe { fill(b.as_mut_ptr(), size, id) };
        if rng.chance(1, 4) {
            // SAFETY: `b` is `size` readable bytes.
            unsafe { check(b.as_ptr(), size, id, "freed by its thread") };
        } else {
            kept.push((id, b));
        }
    }
    kept
}

fn free_wave(blocks: Vec<Vec<(u64, Box<[u8]>)>>) {
    for wave in blocks {
        for (id, b) in wave {
            // SAFETY: `b` is readable.
            unsafe { check(b.as_ptr(), b.len(), id, "freed by the main thread") };
        }
    }
}

#[test]
fn a_thread_that_only_frees_collects_what_others_free_into_its_pages() {
    common::no_sampling();
    segalloc::set_option("parked_heaps", "0").unwrap();
    let mut prev: Vec<Vec<(u64, Box<[u8]>)>> = Vec::new();
    let mut base = (0, 0);
    for wave in 0..WAVES {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| thread::spawn(move || wave_thread(wave, t)))
            .collect();
        free_wave(std::mem::take(&mut prev));
        prev = handles.into_iter().map(|h| h.join().unwrap()).collect();
        if wave + 1 == BASELINE_AT {
            base = (rss_bytes(), segalloc::stats().mapped);
        }
    }
    let (rss, vm) = (rss_bytes(), segalloc::stats().mapped);
    free_wave(prev);
    eprintln!(
        "after {BASELINE_AT} waves: RSS {}, mapped {}; after {WAVES}: RSS {} ({}), mapped {} ({})",
        mib(base.0),
        mib(base.1),
        mib(rss),
        mib_delta(rss, base.0),
        mib(vm),
        mib_delta(vm, base.1)
    );
    assert!(
        rss <= base.0 + MAX_RSS_GROWTH,
        "RSS grew by {} over {} waves",
        mib_delta(rss, base.0),
        WAVES - BASELINE_AT
    );
    assert!(
        vm <= base.1 + MAX_MAPPED_GROWTH,
        "segalloc's mappings grew by {} over {} waves",
        mib_delta(vm, base.1),
        WAVES - BASELINE_AT
    );
}
