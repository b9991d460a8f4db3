//! Heaps of exited threads are parked whole for the next thread (`park`):
//! - a thread started after another exited allocates from that thread's warm
//!   memory, with next to no page faults, even when the exited thread's last
//!   block was freed by another thread after its exit;
//! - a parked heap that no thread takes is retired (its free memory purged)
//!   by the next allocation slow path after `PURGE_DELAY_MS`;
//! - `collect()` retires parked heaps at once;
//! - a thread that used much memory and freed it before exiting does not
//!   leave it all resident in its parked heap (16 MiB at most in all).
//!
//! One binary without libtest's harness (`harness = false` in Cargo.toml),
//! run on the main thread, so that no harness thread starts or exits between
//! the steps (each would park or take a heap).

mod common;

use common::mib;
use std::thread;
use std::time::Duration;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

/// Blocks each worker allocates: 4 MiB of 256-byte blocks.
const BLOCKS: usize = 16 * 1024;
const SIZE: usize = 256;

fn main() {
    // The page faults of blocks in pages (see `common::no_sampling`).
    common::no_sampling();
    new_thread_reuses_the_warm_memory_of_an_exited_one();
    parked_heap_is_retired_after_the_delay();
    collect_retires_parked_heaps();
    parked_heaps_keep_bounded_free_memory();
    println!("park: 4 passed, 0 failed");
}

/// Minor page faults of the calling thread so far.
fn thread_faults() -> i64 {
    // SAFETY: getrusage writes the struct we own.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru.ru_minflt
    }
}

/// Allocates and writes BLOCKS blocks of SIZE bytes; returns them.
// Separate small blocks are the point: the thread's pages of one size class.
#[allow(clippy::vec_box)]
fn fill(tag: u8) -> Vec<Box<[u8; SIZE]>> {
    (0..BLOCKS).map(|_| Box::new([tag; SIZE])).collect()
}

/// A worker allocates 4 MiB of blocks, frees all but one, which it hands
/// back, and exits; the caller frees that one.
fn worker_that_leaves_one_block() {
    let kept = thread::spawn(|| {
        let mut v = fill(1);
        let last = v.pop().unwrap();
        drop(v);
        last
    })
    .join()
    .unwrap();
    assert!(kept.iter().all(|&b| b == 1));
    drop(kept);
}

fn new_thread_reuses_the_warm_memory_of_an_exited_one() {
    // Warm up: the first worker's memory comes from the OS either way.
    worker_that_leaves_one_block();
    let mut faults = Vec::new();
    for round in 0..3 {
        worker_that_leaves_one_block();
        let f = thread::spawn(move || {
            let before = thread_faults();
            let v = fill(round as u8);
            let after = thread_faults();
            assert!(v.iter().all(|b| b.iter().all(|&x| x == round as u8)));
            after - before
        })
        .join()
        .unwrap();
        faults.push(f);
    }
    // 4 MiB faulted in afresh would be 1024 faults of 4 KiB; warm memory
    // costs a few (the thread's own stack and bookkeeping).
    let best = *faults.iter().min().unwrap();
    println!("park: page faults of the new threads: {faults:?}");
    assert!(
        best < 128,
        "a new thread took {faults:?} page faults to allocate 4 MiB that an exited thread had just freed"
    );
}

fn parked_heap_is_retired_after_the_delay() {
    segalloc::collect();
    worker_that_leaves_one_block();
    let parked = segalloc::stats().free_pages;
    assert!(
        parked >= 2 << 20,
        "the exited worker's heap kept only {} resident free memory",
        mib(parked)
    );
    thread::sleep(Duration::from_millis(250));
    // An allocation slow path (a size class this thread has no page of)
    // retires the parked heap, which purges its free memory.
    let b = Box::new([0u8; 12 * 1024]);
    std::hint::black_box(&b);
    let after = segalloc::stats().free_pages;
    assert!(
        after < 1 << 20,
        "a heap parked for 250 ms still holds resident free memory: {} -> {}\n{}",
        mib(parked),
        mib(after),
        segalloc::stats()
    );
}

fn collect_retires_parked_heaps() {
    segalloc::collect();
    worker_that_leaves_one_block();
    assert!(segalloc::stats().free_pages >= 2 << 20);
    segalloc::collect();
    let s = segalloc::stats();
    assert_eq!(s.free_pages, 0, "collect() left free memory resident:\n{s}");
}

fn parked_heaps_keep_bounded_free_memory() {
    segalloc::collect();
    // 64 MiB of blocks, all freed before the thread exits but one in 512
    // (one per 2 MiB, so no segment empties and goes back whole): within the
    // running thread's budget (what it takes to regrow to its peak).
    let kept = thread::spawn(|| {
        let v: Vec<Vec<u8>> = (0..16 * 1024).map(|i| vec![i as u8; 4000]).collect();
        v.into_iter().step_by(512).collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    let s = segalloc::stats();
    drop(kept);
    // 16 MiB for the parked heaps, 2 MiB for the cache of free segments,
    // and a little for this thread's heap.
    assert!(
        s.free_pages < 20 << 20,
        "an exited thread left {} of free memory resident:\n{s}",
        mib(s.free_pages)
    );
    segalloc::collect();
}
