//! Thread exit must not leak: 10,000 short-lived threads (8 at a time), each
//! allocating ~300 KiB in objects of mixed sizes, freeing most, and handing a
//! few back to the main thread, which keeps them alive well past the thread's
//! exit and frees them later (so pages of exited threads must be reclaimed
//! once their last block is freed remotely). RSS after the first 1,000
//! threads is the baseline; growth by 10,000 threads must stay under
//! `MAX_GROWTH`. A per-thread leak of even its touched pages (~300 KiB, let
//! alone a 4 MiB segment) would add > 2 GiB over 9,000 threads. Virtual
//! size (statm field 1) is bounded too, so segments leaked with their pages
//! given back (madvise) but never unmapped or reused also fail the test.
//!
//! RSS is read from /proc/self/statm. This binary has a single test so no
//! other test's allocations disturb the figures.
mod common;

use common::{check, fill, mib, mib_delta, rss_bytes, vm_bytes, Rng, MIB};
use std::collections::VecDeque;
use std::thread;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

const THREADS: usize = 10_000;
const BATCH: usize = 8;
const BASELINE_AT: usize = 1_000;
/// Objects the main thread keeps alive at once (about 64 threads' worth).
const KEEP: usize = 256;
const MAX_GROWTH: usize = 48 * MIB;
/// Leaking one 4 MiB segment per 36 threads would already exceed this; the
/// margin leaves room for a bounded cache of reserved segments.
const MAX_VM_GROWTH: usize = 1024 * MIB;

/// A block handed back to the main thread: contents checked on drop.
struct Kept {
    data: Vec<u8>,
    id: u64,
}

impl Drop for Kept {
    fn drop(&mut self) {
        unsafe { check(self.data.as_ptr(), self.data.len(), self.id, "kept block") };
    }
}

fn thread_body(n: u64) -> Vec<Kept> {
    let mut rng = Rng::new(n);
    let mut local: Vec<Vec<u8>> = Vec::new();
    let mut total = 0;
    // Mixed sizes touching ~300 KiB: small classes plus a few medium blocks.
    while total < 300 * 1024 {
        let size = if rng.chance(1, 20) {
            rng.range(4096, 32 * 1024)
        } else {
            rng.range(8, 1024)
        };
        let mut v = vec![0u8; size];
        unsafe { fill(v.as_mut_ptr(), size, n) };
        total += size;
        local.push(v);
    }
    // Hand 4 blocks of assorted classes back; free the rest here.
    let kept = (0..4)
        .map(|i| {
            let v = local.swap_remove(rng.range(0, local.len() - 1));
            unsafe { check(v.as_ptr(), v.len(), n, "before handing back") };
            // Re-stamp with an id unique to this block.
            let id = n * 4 + i;
            let mut data = v;
            let len = data.len();
            unsafe { fill(data.as_mut_ptr(), len, id) };
            Kept { data, id }
        })
        .collect();
    for v in &local {
        unsafe { check(v.as_ptr(), v.len(), n, "thread-local block") };
    }
    kept
}

#[test]
fn ten_thousand_threads_keep_rss_bounded() {
    let start = rss_bytes();
    let mut kept: VecDeque<Kept> = VecDeque::with_capacity(KEEP + 64);
    let mut samples: Vec<(usize, usize, usize)> = Vec::new();
    let (mut baseline, mut vm_baseline) = (0, 0);
    let mut spawned = 0;
    while spawned < THREADS {
        let handles: Vec<_> = (0..BATCH)
            .map(|i| {
                let n = (spawned + i) as u64;
                thread::spawn(move || thread_body(n))
            })
            .collect();
        for h in handles {
            kept.extend(h.join().expect("thread panicked"));
        }
        spawned += BATCH;
        // Free the oldest kept blocks: their threads exited long ago.
        while kept.len() > KEEP {
            kept.pop_front();
        }
        if spawned % 1_000 == 0 {
            let (rss, vm) = (rss_bytes(), vm_bytes());
            samples.push((spawned, rss, vm));
            if spawned == BASELINE_AT {
                (baseline, vm_baseline) = (rss, vm);
            }
        }
    }
    let (end, vm_end) = (rss_bytes(), vm_bytes());
    drop(kept);
    segalloc::collect();
    let (after_collect, vm_after_collect) = (rss_bytes(), vm_bytes());

    let table: String = samples
        .iter()
        .map(|&(n, r, v)| {
            format!(
                "  after {n:>5} threads: RSS {} ({}), virtual {} ({})\n",
                mib(r),
                mib_delta(r, baseline),
                mib(v),
                mib_delta(v, vm_baseline)
            )
        })
        .collect();
    let report = format!(
        "RSS at start {}; baseline after {BASELINE_AT} threads {}; after {THREADS} {} \
         (growth {}); after freeing all + collect() {} (virtual {})\n{table}",
        mib(start),
        mib(baseline),
        mib(end),
        mib_delta(end, baseline),
        mib(after_collect),
        mib(vm_after_collect),
    );
    println!("{report}");
    let growth = end.saturating_sub(baseline);
    assert!(
        growth <= MAX_GROWTH,
        "RSS grew by {} between thread {BASELINE_AT} and {THREADS} (limit {})\n{report}",
        mib(growth),
        mib(MAX_GROWTH)
    );
    let vm_growth = vm_end.saturating_sub(vm_baseline);
    assert!(
        vm_growth <= MAX_VM_GROWTH,
        "virtual size grew by {} between thread {BASELINE_AT} and {THREADS} (limit {})\n{report}",
        mib(vm_growth),
        mib(MAX_VM_GROWTH)
    );
    // Every checkpoint was sampled.
    assert_eq!(samples.len(), THREADS / 1_000);
}
