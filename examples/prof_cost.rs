//! The heap profiler's cost on the allocation fast path, for callgrind:
//! `pairs` allocates and frees one 64-byte block `N` times (default 1M),
//! beside a live block of the same class (the fast paths only).
//!
//! ```text
//! cargo build --release --example prof_cost                       # feature off
//! cargo build --release --example prof_cost --features profiling  # compiled in
//! valgrind --tool=callgrind --toggle-collect='prof_cost::pairs' \
//!     target/release/examples/prof_cost [sample]
//! ```
//! With `sample` (and the feature) sampling runs at the default rate.

use core::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

#[inline(never)]
fn pairs(n: usize) {
    let l = Layout::from_size_align(64, 8).unwrap();
    for _ in 0..n {
        // SAFETY: a non-zero layout; the block is freed with it.
        unsafe {
            let p = black_box(GLOBAL.alloc(l));
            GLOBAL.dealloc(p, l);
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let sample = args.next().as_deref() == Some("sample");
    let n = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    #[cfg(feature = "profiling")]
    if sample {
        segalloc::profile::start(0);
    }
    #[cfg(not(feature = "profiling"))]
    let _ = sample;
    // A live block keeps the page in use, so the frees stay on the fast
    // path (the page never empties).
    let ballast = black_box(vec![0u8; 64]);
    pairs(1000); // warm up
    pairs(n);
    drop(ballast);
    println!("{n} pairs");
}
