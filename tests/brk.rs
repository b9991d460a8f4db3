//! The opt-in brk page source: `set_page_source(PageSource::Brk)` before the
//! workload, then single- and multi-threaded allocation with contents
//! verified; a foreign party moving the program break in between (as another
//! allocator would), which must not overlap segalloc's blocks (segalloc falls
//! back to mmap internally); switching back to `Mmap` with brk-backed blocks
//! still live; and RSS coming back after everything is freed and
//! `collect()` runs (brk segments are purged, not unmapped).
//!
//! One test only: the page source is process-wide and RSS is measured.
mod common;

use common::{check, fill, mib, mib_delta, rss_bytes, Rng, MIB};
use segalloc::{set_page_source, PageSource, SegAlloc, LARGE_THRESHOLD};
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;
use std::thread;

#[global_allocator]
static GLOBAL: SegAlloc = SegAlloc;

extern "C" {
    /// From the C library std already links.
    fn sbrk(increment: isize) -> *mut c_void;
}

fn program_break() -> usize {
    // SAFETY: sbrk(0) only reads the current break.
    unsafe { sbrk(0) as usize }
}

struct Block(*mut u8, Layout, u64);
// SAFETY: a Block exclusively owns its allocation.
unsafe impl Send for Block {}

impl Block {
    fn new(size: usize, align: usize, id: u64) -> Block {
        let layout = Layout::from_size_align(size, align).unwrap();
        let p = unsafe { SegAlloc.alloc(layout) };
        assert!(!p.is_null(), "alloc {layout:?} failed in brk mode");
        common::assert_aligned(p, layout, "brk mode");
        unsafe { fill(p, size, id) };
        Block(p, layout, id)
    }
    fn free(self) {
        unsafe {
            check(self.0, self.1.size(), self.2, "brk-mode block");
            SegAlloc.dealloc(self.0, self.1);
        }
    }
}

fn workload(seed: u64, n: usize) -> Vec<Block> {
    let mut rng = Rng::new(seed);
    let mut keep = Vec::new();
    let mut tmp = Vec::new();
    for i in 0..n as u64 {
        let size = match rng.range(0, 99) {
            0..=79 => rng.range(1, 512),
            80..=98 => rng.range(513, 32 * 1024),
            _ => rng.range(LARGE_THRESHOLD + 1, 2 * LARGE_THRESHOLD),
        };
        let align = 1 << rng.range(0, 6);
        let b = Block::new(size, align, (seed << 32) | i);
        if rng.chance(1, 3) {
            keep.push(b);
        } else {
            tmp.push(b);
        }
        if tmp.len() > 500 {
            tmp.drain(..).for_each(Block::free);
        }
    }
    tmp.into_iter().for_each(Block::free);
    keep
}

#[test]
fn brk_page_source_workload() {
    segalloc::collect();
    let start_rss = rss_bytes();
    let brk0 = program_break();
    set_page_source(PageSource::Brk);

    // Single-threaded and multi-threaded traffic in brk mode.
    let mut live = workload(1, 60_000);
    let handles: Vec<_> = (0..4u64)
        .map(|t| thread::spawn(move || workload(10 + t, 30_000)))
        .collect();
    for h in handles {
        live.extend(h.join().unwrap());
    }
    let brk1 = program_break();

    // Someone else grows the break between segalloc's segment requests.
    // Their memory must never be handed out by segalloc, and vice versa.
    let mut foreign = Vec::new();
    for round in 0..8u64 {
        let len = 48 * 1024 + round as usize * 4096;
        // SAFETY: growing the break by `len`; the new range is ours to use.
        let p = unsafe { sbrk(len as isize) };
        if p as isize != -1 {
            let p = p as *mut u8;
            unsafe { fill(p, len, 1000 + round) };
            foreign.push((p, len, 1000 + round));
        }
        live.extend(workload(100 + round, 5_000));
    }
    for &(p, len, id) in &foreign {
        unsafe { check(p, len, id, "foreign sbrk memory") };
    }

    // Switch back to mmap with brk-backed blocks live, keep allocating.
    set_page_source(PageSource::Mmap);
    live.extend(workload(200, 20_000));
    let peak_rss = rss_bytes();

    // Free in a shuffled order; brk blocks are freed after the switch.
    let mut rng = Rng::new(5);
    for i in (1..live.len()).rev() {
        live.swap(i, rng.range(0, i));
    }
    let n = live.len();
    live.into_iter().for_each(Block::free);
    for &(p, len, id) in &foreign {
        unsafe { check(p, len, id, "foreign sbrk memory at end") };
    }
    segalloc::collect();
    let end_rss = rss_bytes();

    let report = format!(
        "freed {n} kept blocks; program break moved {} during brk-mode workload; \
         RSS start {}, peak {} ({}), after free + collect {} ({})",
        mib_delta(brk1, brk0),
        mib(start_rss),
        mib(peak_rss),
        mib_delta(peak_rss, start_rss),
        mib(end_rss),
        mib_delta(end_rss, start_rss),
    );
    println!("{report}");
    assert!(n > 10_000, "workload kept too few blocks: {n}");
    assert!(
        end_rss <= start_rss + 32 * MIB,
        "RSS did not come back in brk mode: {report}"
    );
}
