//! Memory goes back to the OS: a workload allocates ~256 MiB (half in small
//! objects across many size classes, half in large directly-mapped blocks),
//! touches all of it, frees everything in shuffled order and calls
//! `segalloc::collect()`; RSS must come back within `SLACK` of where it
//! started. A second phase does the same with the allocations made on worker
//! threads that exit before the main thread frees the blocks, so the pages of
//! exited threads must be reclaimed too.
//!
//! RSS is read from /proc/self/statm. This binary has a single test so no
//! other test's allocations disturb the figures.
mod common;

use common::{check, fill, mib, mib_delta, rss_bytes, Rng, MIB};
use segalloc::{SegAlloc, LARGE_THRESHOLD};
use std::alloc::{GlobalAlloc, Layout};
use std::thread;

#[global_allocator]
static GLOBAL: SegAlloc = SegAlloc;

/// Large blocks are drawn from LARGE_THRESHOLD+1 ..= LARGE_MAX.
const LARGE_MAX: usize = 4 * MIB;
const SMALL_TOTAL: usize = 128 * MIB;
const LARGE_TOTAL: usize = 128 * MIB;
/// RSS must return to within this of the starting point.
const SLACK: usize = 32 * MIB;
/// The peak must rise by at least this much, or the measurement is broken.
const MIN_PEAK_RISE: usize = 200 * MIB;

struct Block(*mut u8, Layout, u64);
// SAFETY: a Block exclusively owns its allocation.
unsafe impl Send for Block {}

/// Allocate and touch about `small + large` bytes; `seed` varies the mix.
fn allocate(small: usize, large: usize, seed: u64) -> Vec<Block> {
    let mut rng = Rng::new(seed);
    let mut blocks = Vec::new();
    let mut id = seed << 32;
    let mut push = |size: usize, align: usize, blocks: &mut Vec<Block>| {
        let layout = Layout::from_size_align(size, align).unwrap();
        let p = unsafe { SegAlloc.alloc(layout) };
        assert!(!p.is_null(), "alloc {layout:?} failed");
        // Touch every page (the pattern write does) so RSS really rises.
        unsafe { fill(p, size, id) };
        blocks.push(Block(p, layout, id));
        id += 1;
    };
    let mut done = 0;
    while done < small {
        // Mostly tiny, some up to a few KiB, a few medium: many size classes.
        let size = match rng.range(0, 99) {
            0..=59 => rng.range(8, 256),
            60..=94 => rng.range(257, 4096),
            _ => rng.range(4097, LARGE_THRESHOLD),
        };
        push(size, 8, &mut blocks);
        done += size;
    }
    let mut done = 0;
    while done < large {
        let size = rng.range(LARGE_THRESHOLD + 1, LARGE_MAX);
        push(size, 16, &mut blocks);
        done += size;
    }
    blocks
}

/// Verify and free every block in a shuffled order (so no page empties
/// neatly in allocation order).
fn free_shuffled(mut blocks: Vec<Block>, seed: u64) {
    let mut rng = Rng::new(seed);
    for i in (1..blocks.len()).rev() {
        blocks.swap(i, rng.range(0, i));
    }
    for Block(p, layout, id) in blocks.drain(..) {
        unsafe {
            check(p, layout.size(), id, "before free");
            SegAlloc.dealloc(p, layout);
        }
    }
}

#[test]
fn rss_returns_after_free_and_collect() {
    segalloc::collect();
    let start = rss_bytes();
    let mut log = format!("start: {}\n", mib(start));
    let mut failures = Vec::new();

    // Phase 1: one thread allocates and frees.
    let blocks = allocate(SMALL_TOTAL, LARGE_TOTAL, 1);
    let peak = rss_bytes();
    free_shuffled(blocks, 2);
    let freed = rss_bytes();
    segalloc::collect();
    let collected = rss_bytes();
    log += &format!(
        "phase 1 (single thread): peak {} ({}), after free {} ({}), after collect {} ({})\n",
        mib(peak),
        mib_delta(peak, start),
        mib(freed),
        mib_delta(freed, start),
        mib(collected),
        mib_delta(collected, start)
    );
    if peak < start + MIN_PEAK_RISE {
        failures.push("phase 1 peak did not rise: RSS measurement is not working");
    }
    if collected > start + SLACK {
        failures.push("phase 1: RSS did not come back after free + collect()");
    }

    // Phase 2: 4 threads allocate a quarter each and exit; main frees.
    let handles: Vec<_> = (0..4u64)
        .map(|t| thread::spawn(move || allocate(SMALL_TOTAL / 4, LARGE_TOTAL / 4, 10 + t)))
        .collect();
    let blocks: Vec<Block> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let peak = rss_bytes();
    free_shuffled(blocks, 3);
    segalloc::collect();
    let collected = rss_bytes();
    log += &format!(
        "phase 2 (4 exited threads, freed on main): peak {} ({}), after collect {} ({})\n",
        mib(peak),
        mib_delta(peak, start),
        mib(collected),
        mib_delta(collected, start)
    );
    if peak < start + MIN_PEAK_RISE {
        failures.push("phase 2 peak did not rise: RSS measurement is not working");
    }
    if collected > start + SLACK {
        failures.push("phase 2: RSS did not come back after remote free + collect()");
    }

    println!("{log}");
    assert!(
        failures.is_empty(),
        "{}\n(slack {}, RSS from /proc/self/statm)\n{log}",
        failures.join("\n"),
        mib(SLACK)
    );
}
