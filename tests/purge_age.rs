//! The timed purge gives back free memory that has waited the purge delay,
//! not memory freed a moment before the deadline: two sets of pages are
//! freed 600 ms apart under a 1 s delay, and the allocation slow path
//! that comes after the first set's deadline purges the first set and
//! leaves the second resident (it was freed 500 ms before; the margins
//! allow for a loaded machine oversleeping). Residency is
//! read with `mincore` over the blocks' own pages. Then pages emptied
//! after that purge must not make the heap's budget purge the second set
//! either (the timed purge counts what it kept as room to regrow).
//!
//! A binary of its own with one test: no other test's heap activity can
//! run a purge in between.

use std::alloc::{GlobalAlloc, Layout};
use std::time::Duration;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

/// Blocks of this size get pages of their own few blocks, so freeing a set
/// empties its pages and gives their slices back as dirty memory.
const BLOCK: usize = 32 * 1024;
/// Each set: 4 MiB.
const COUNT: usize = 128;

fn alloc_set(fill: u8) -> Vec<*mut u8> {
    let layout = Layout::from_size_align(BLOCK, 8).unwrap();
    (0..COUNT)
        .map(|_| {
            // SAFETY: a non-zero size.
            let p = unsafe { GLOBAL.alloc(layout) };
            assert!(!p.is_null());
            // SAFETY: a fresh block of BLOCK bytes.
            unsafe { p.write_bytes(fill, BLOCK) };
            p
        })
        .collect()
}

fn free_set(set: &[*mut u8]) {
    let layout = Layout::from_size_align(BLOCK, 8).unwrap();
    for &p in set {
        // SAFETY: blocks of `alloc_set`, freed once.
        unsafe { GLOBAL.dealloc(p, layout) };
    }
}

/// The fraction of the OS pages under the set's blocks that are resident.
fn resident(set: &[*mut u8]) -> f64 {
    let page = 4096;
    let (mut yes, mut all) = (0usize, 0usize);
    for &p in set {
        let start = p as usize & !(page - 1);
        let end = (p as usize + BLOCK).next_multiple_of(page);
        let n = (end - start) / page;
        let mut v = vec![0u8; n];
        // SAFETY: the range lies in a mapping segalloc keeps (freed blocks'
        // slices stay mapped); `v` has one byte per page.
        let r = unsafe { libc::mincore(start as *mut libc::c_void, end - start, v.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore failed");
        yes += v.iter().filter(|&&b| b & 1 != 0).count();
        all += n;
    }
    yes as f64 / all as f64
}

#[test]
fn the_timed_purge_waits_for_each_page_its_delay() {
    // The residency of blocks in pages: a block the heap profiler sampled
    // (`SEGALLOC_PROF=1`) lives in a mapping of its own, kept resident
    // for the next sample rather than purged with the pages.
    #[cfg(feature = "profiling")]
    segalloc::profile::stop();
    segalloc::set_option("purge_delay_ms", "1000").unwrap();
    segalloc::set_option("sub_purge", "0").unwrap();
    let old = alloc_set(1);
    let recent = alloc_set(2);
    // Freed last, to run the budget check with no allocation (which would
    // take the recent set's slices back).
    let trigger = alloc_set(3);
    assert!(resident(&old) > 0.99 && resident(&recent) > 0.99);
    free_set(&old);
    std::thread::sleep(Duration::from_millis(600));
    free_set(&recent);
    std::thread::sleep(Duration::from_millis(500));
    // An allocation slow path after the old set's deadline: a size class
    // this thread has not used yet.
    let layout = Layout::from_size_align(3000, 8).unwrap();
    // SAFETY: a non-zero size; freed below.
    let p = unsafe { GLOBAL.alloc(layout) };
    assert!(!p.is_null());
    let (o, r) = (resident(&old), resident(&recent));
    // SAFETY: allocated above.
    unsafe { GLOBAL.dealloc(p, layout) };
    eprintln!("resident after the timed purge: old set {o:.2}, recent set {r:.2}");
    assert!(
        o < 0.1,
        "memory free for 1.1 s was not purged ({o:.2} resident)"
    );
    assert!(
        r > 0.9,
        "memory free for 0.5 s was purged ({r:.2} resident)"
    );
    // Pages emptied now go through the heap's budget check: the recent set
    // still counts as room to regrow, so the budget does not purge it.
    free_set(&trigger);
    let r = resident(&recent);
    eprintln!("after more pages were emptied: recent set {r:.2}");
    assert!(
        r > 0.9,
        "the budget purged memory free for 0.5 s ({r:.2} resident)"
    );
}
