//! Batched remote frees (`remote_batch`): a thread that frees blocks of other
//! threads' heaps gathers them per destination and hands them over in
//! batches. With segalloc as the global allocator:
//! - producer/consumer stress with more threads than cores, every block's
//!   contents checked before it is freed, statistics exact after the joins;
//! - a thread that exits with a batch still gathered: the batch reaches its
//!   owner (nothing stays pending), the statistics are exact;
//! - frees gathered for a heap whose thread exits meanwhile (its segments
//!   abandoned, its heap slot taken by a new thread);
//! - blocks of a first-class `Heap` freed by another thread through the
//!   global allocator, then the `Heap` dropped and its memory reused while
//!   that thread still runs: nothing is corrupted;
//! - waves of threads that exit (their heaps parked whole, inboxes open)
//!   while long-lived freers free their blocks in batches and the next
//!   wave takes the parked heaps over, with parking on and off.
//!
//! The tests read process-wide statistics, so they run one at a time, on
//! the main thread with no test harness (`harness = false`): a harness's
//! thread allocating while a test measures (a finished test's result) made
//! the exact figures fail now and then (by 96 bytes, under load).

mod common;

use common::{check, fill, Blk, Rng};
use segalloc::allocator_api2::alloc::Allocator;
use std::alloc::{dealloc, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::thread;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

fn main() {
    if cfg!(not(feature = "stats")) {
        println!("remote_batch: skipped (needs the feature stats)");
        return;
    }
    let mut n = 0;
    let mut run = |name: &str, test: fn()| {
        println!("test {name} ...");
        test();
        println!("test {name} ... ok");
        n += 1;
    };
    run("producer_consumer_stress", producer_consumer_stress);
    #[cfg(feature = "remote-batch")]
    run(
        "thread_exit_hands_its_batch_over",
        thread_exit_hands_its_batch_over,
    );
    run("collect_hands_batches_over", collect_hands_batches_over);
    run("batches_for_an_exited_heap", batches_for_an_exited_heap);
    run(
        "first_class_heap_blocks_freed_elsewhere",
        first_class_heap_blocks_freed_elsewhere,
    );
    run(
        "parked_heaps_take_batches_while_adopted",
        parked_heaps_take_batches_while_adopted,
    );
    println!("remote_batch: {n} passed, 0 failed");
}

/// One test at a time: they compare process-wide statistics.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The figures that must come back exactly once every thread has joined.
fn exact(before: &segalloc::Stats, after: &segalloc::Stats, what: &str) {
    assert_eq!(after.requested, before.requested, "{what}: requested bytes");
    assert_eq!(
        after.live_blocks(),
        before.live_blocks(),
        "{what}: live blocks"
    );
    assert_eq!(
        after.committed,
        after.allocated + after.metadata + after.external_fragmentation(),
        "{what}: committed != allocated + metadata + external"
    );
}

/// Warms up what std allocates once and keeps (thread and channel
/// machinery, and the context a thread caches the first time it blocks on a
/// channel), and collects, so that a snapshot taken next is a baseline.
fn baseline() -> segalloc::Stats {
    for _ in 0..2 {
        let (tx, rx) = mpsc::channel::<u8>();
        let t = thread::spawn(move || {
            thread::sleep(std::time::Duration::from_millis(5));
            tx.send(1).unwrap();
        });
        rx.recv().unwrap(); // blocks: caches this thread's channel context
        t.join().unwrap();
    }
    segalloc::collect();
    segalloc::stats()
}

fn producer_consumer_stress() {
    let _serial = serial();
    const PRODUCERS: u64 = 3;
    const CONSUMERS: usize = 3;
    const BATCHES: u64 = 300;
    const PER_BATCH: u64 = 150;
    let before = baseline();
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..CONSUMERS)
        .map(|_| mpsc::sync_channel::<Vec<Blk>>(4))
        .unzip();
    let consumers: Vec<_> = rxs
        .into_iter()
        .enumerate()
        .map(|(c, rx)| {
            thread::spawn(move || {
                let mut rng = Rng::new(1000 + c as u64);
                let mut own = Vec::new();
                let mut n = 0u64;
                for batch in rx {
                    for b in batch {
                        n += 1;
                        drop(b); // checked, then a cross-thread free
                                 // Now and then an allocation of our own, so that
                                 // slow paths hand batches over too.
                        if rng.chance(1, 16) {
                            own.push(Blk::new(rng.range(16, 512), 8, u64::MAX - n));
                            if own.len() > 64 {
                                own.swap_remove(rng.range(0, own.len() - 1));
                            }
                        }
                    }
                }
                n
            })
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|t| {
            let txs = txs.clone();
            thread::spawn(move || {
                let mut rng = Rng::new(t);
                for batch in 0..BATCHES {
                    let v: Vec<Blk> = (0..PER_BATCH)
                        .map(|i| {
                            let size = match rng.range(0, 19) {
                                0 => rng.range(4097, 20_000), // some not batched
                                1..=4 => rng.range(257, 4096),
                                _ => rng.range(1, 256),
                            };
                            Blk::new(size, 8, (t << 40) | (batch << 16) | i)
                        })
                        .collect();
                    txs[(batch as usize + t as usize) % CONSUMERS]
                        .send(v)
                        .unwrap();
                }
            })
        })
        .collect();
    drop(txs);
    for p in producers {
        p.join().unwrap();
    }
    let freed: u64 = consumers.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(freed, PRODUCERS * BATCHES * PER_BATCH);
    let after = segalloc::stats();
    exact(&before, &after, "producer/consumer");
    assert!(after.cross_thread_frees > before.cross_thread_frees);
}

/// Two-step handshake without allocating: the freer must not hit a slow
/// path (which hands batches over) between its frees and its exit.
struct Steps(AtomicUsize);

impl Steps {
    const fn new() -> Steps {
        Steps(AtomicUsize::new(0))
    }
    fn set(&self, n: usize) {
        self.0.store(n, Ordering::Release);
    }
    fn wait(&self, n: usize) {
        while self.0.load(Ordering::Acquire) < n {
            thread::yield_now();
        }
    }
}

#[cfg(feature = "remote-batch")]
fn thread_exit_hands_its_batch_over() {
    let _serial = serial();
    const N: usize = 20; // fewer than a batch holds: it stays gathered
    static STEP: Steps = Steps::new();
    STEP.set(0);
    let before = baseline();
    let blocks: Vec<Blk> = (0..N).map(|i| Blk::new(48, 8, i as u64)).collect();
    let freer = thread::spawn(move || {
        drop(blocks);
        STEP.set(1);
        STEP.wait(2);
    });
    STEP.wait(1);
    // The freer counted its frees, but holds the blocks in its batch for us
    // (with the vector's buffer and the thread's closure, also ours):
    // collecting finds nothing.
    segalloc::collect();
    let held = segalloc::stats().remote_pending - before.remote_pending;
    assert!(
        held >= N * 48,
        "the freer's batch is not gathered: {held} bytes pending"
    );
    // It exits: the batch comes to our inbox, and our collect takes it.
    STEP.set(2);
    freer.join().unwrap();
    segalloc::collect();
    let after = segalloc::stats();
    assert_eq!(
        after.remote_pending, before.remote_pending,
        "blocks stranded after the freer exited"
    );
    exact(&before, &after, "exit with a pending batch");
}

fn collect_hands_batches_over() {
    let _serial = serial();
    static STEP: Steps = Steps::new();
    STEP.set(0);
    let before = baseline();
    let blocks: Vec<Blk> = (0..30).map(|i| Blk::new(100, 8, i)).collect();
    let freer = thread::spawn(move || {
        drop(blocks);
        segalloc::collect(); // hands the batch over now
        STEP.set(1);
        STEP.wait(2);
    });
    STEP.wait(1);
    segalloc::collect();
    let mid = segalloc::stats();
    assert_eq!(
        mid.remote_pending, before.remote_pending,
        "collect() in the freer did not hand its batch over"
    );
    STEP.set(2);
    freer.join().unwrap();
    exact(&before, &segalloc::stats(), "collect");
}

/// Blocks gathered for a heap whose thread exits meanwhile: the batch that
/// was already handed over is settled at its exit; the one still gathered
/// is handed over later, to a closed inbox or to a new thread that took the
/// same heap slot, while the freer has taken over some of the exited
/// thread's segments by freeing into them.
fn batches_for_an_exited_heap() {
    let _serial = serial();
    let before = baseline();
    for round in 0..20u64 {
        // Survivors of the owner, held by us all along, checked at the end.
        let (to_freer, freer_rx) = mpsc::channel::<Vec<Blk>>();
        let (keep_tx, keep_rx) = mpsc::channel::<Vec<Blk>>();
        let owner = thread::spawn(move || {
            let mut rng = Rng::new(round);
            let mk = |rng: &mut Rng, i: u64| Blk::new(rng.range(16, 1024), 8, (round << 32) | i);
            let first: Vec<Blk> = (0..100).map(|i| mk(&mut rng, i)).collect();
            let second: Vec<Blk> = (100..200).map(|i| mk(&mut rng, i)).collect();
            let kept: Vec<Blk> = (200..300).map(|i| mk(&mut rng, i)).collect();
            to_freer.send(first).unwrap();
            to_freer.send(second).unwrap();
            keep_tx.send(kept).unwrap();
            // Exits now: its heap is parked (inbox open) or, past the
            // parking limit, its segments abandoned and its inbox closed.
        });
        let (step_tx, step_rx) = mpsc::channel::<()>();
        let (ack_tx, ack_rx) = mpsc::channel::<()>();
        let freer = thread::spawn(move || {
            let first = freer_rx.recv().unwrap();
            let second = freer_rx.recv().unwrap();
            // Gathered for the owner (a batch of 64 goes at once).
            drop(first);
            ack_tx.send(()).unwrap();
            step_rx.recv().unwrap(); // the owner has exited
                                     // Frees into abandoned segments: taken over on the spot.
            drop(second);
            ack_tx.send(()).unwrap();
            step_rx.recv().unwrap(); // a new thread may hold the owner's slot
                                     // Hands the rest over: to a closed inbox or to the newcomer.
            segalloc::collect();
            ack_tx.send(()).unwrap();
        });
        ack_rx.recv().unwrap();
        owner.join().unwrap();
        step_tx.send(()).unwrap();
        ack_rx.recv().unwrap();
        // A newcomer, likely in the exited owner's heap slot, allocating
        // (and so taking its inbox) while and after the freer hands over.
        let (nc_tx, nc_rx) = mpsc::channel::<()>();
        let newcomer = thread::spawn(move || {
            let mut mine: Vec<Blk> = (0..50).map(|i| Blk::new(64, 8, (9 << 56) | i)).collect();
            nc_rx.recv().unwrap();
            mine.extend((50..400).map(|i| Blk::new(64, 8, (9 << 56) | i)));
            for b in &mine {
                b.verify("newcomer's own");
            }
        });
        step_tx.send(()).unwrap();
        ack_rx.recv().unwrap();
        nc_tx.send(()).unwrap();
        freer.join().unwrap();
        newcomer.join().unwrap();
        let kept = keep_rx.recv().unwrap();
        for b in &kept {
            b.verify("survivor of an exited owner");
        }
    }
    segalloc::collect();
    let after = segalloc::stats();
    exact(&before, &after, "batches for exited heaps");
}

/// Blocks of a first-class `Heap` freed through the global allocator by
/// another thread, which then waits without allocating (no slow path, so
/// anything it gathered stays gathered); the `Heap` is dropped and its memory
/// unmapped (even rounds) or reused by new blocks (odd rounds), and only then
/// does that thread hand its batches over. Had those blocks been batched,
/// their stale addresses would point into unmapped memory or into other
/// blocks now.
fn first_class_heap_blocks_freed_elsewhere() {
    let _serial = serial();
    static STEP: Steps = Steps::new();
    let before = baseline();
    for round in 0..6u64 {
        STEP.set(0);
        let (ptrs_tx, ptrs_rx) = mpsc::channel::<Vec<(usize, u64)>>();
        let layout = Layout::from_size_align(64, 8).unwrap();
        let other = thread::spawn(move || {
            let ptrs = ptrs_rx.recv().unwrap();
            for &(p, id) in &ptrs {
                // SAFETY: a live 64-byte block of the Heap, handed to us.
                unsafe {
                    check(p as *const u8, 64, id, "heap block");
                    dealloc(p as *mut u8, layout); // the wrong door, on purpose
                }
            }
            drop(ptrs);
            STEP.set(1);
            STEP.wait(2);
            segalloc::collect(); // hands over whatever it gathered
            STEP.set(3);
            // More slow paths, then the exit hands over again.
            let mine: Vec<Blk> = (0..2000).map(|i| Blk::new(64, 8, (7 << 56) | i)).collect();
            drop(mine);
        });
        let heap = segalloc::Heap::new();
        let mut mine = Vec::new();
        let mut theirs = Vec::new();
        for i in 0..1000u64 {
            let p = heap.allocate(layout).unwrap().as_ptr() as *mut u8;
            // SAFETY: 64 bytes at `p` are ours.
            unsafe { fill(p, 64, (round << 32) | i) };
            if i % 4 == 3 {
                mine.push(p);
            } else {
                theirs.push((p as usize, (round << 32) | i));
            }
        }
        ptrs_tx.send(theirs).unwrap();
        STEP.wait(1);
        for (k, &p) in mine.iter().enumerate() {
            let i = 4 * k as u64 + 3;
            // SAFETY: a live block of the heap, freed once through it.
            unsafe {
                check(p, 64, (round << 32) | i, "heap block kept");
                heap.deallocate(NonNull::new(p).unwrap(), layout);
            }
        }
        drop(mine);
        drop(heap); // gives its segments back, visiting no block
        let reuse: Vec<Blk> = if round % 2 == 0 {
            segalloc::collect(); // unmaps the free segments
            Vec::new()
        } else {
            // New segments come from the cache of free ones first.
            (0..1500)
                .map(|i| Blk::new(8000, 8, (5 << 56) | i))
                .collect()
        };
        STEP.set(2);
        STEP.wait(3);
        for b in &reuse {
            b.verify("block in reused memory");
        }
        other.join().unwrap();
        drop(reuse);
    }
    segalloc::collect();
    exact(&before, &segalloc::stats(), "first-class heap");
}

/// Waves of worker threads (more than cores) that allocate, hand two thirds
/// of their blocks to long-lived freers in chunks, keep some for the main
/// thread and exit: their heaps are parked whole with their inboxes open,
/// the freers' batches for them arrive while they wait, and the next wave's
/// threads take them over and settle those batches on their slow paths.
/// The main thread frees what it kept every few waves (more remote frees
/// into parked or adopted heaps). Every block is checked before it is
/// freed (a block handed out twice would carry another block's pattern),
/// and the statistics come back exactly. Run with parking on (the default)
/// and off (`parked_heaps` 0: exited heaps abandon their segments).
fn parked_heaps_take_batches_while_adopted() {
    let _serial = serial();
    let parked = segalloc::runtime_options()
        .find(|o| o.name == "parked_heaps")
        .expect("the option exists")
        .get();
    assert!(parked > 0, "parking is on by default");
    for parking in [true, false] {
        if !parking {
            segalloc::set_option("parked_heaps", "0").unwrap();
        }
        let before = baseline();
        let (tx, rx) = mpsc::channel::<Vec<Blk>>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        let freers: Vec<_> = (0..3)
            .map(|f| {
                let rx = rx.clone();
                thread::spawn(move || {
                    let mut freed = 0usize;
                    loop {
                        let next = rx.lock().unwrap().recv();
                        let Ok(mut chunk) = next else { break };
                        // Dropping checks each block, then frees it.
                        while let Some(b) = chunk.pop() {
                            drop(b);
                            freed += 1;
                        }
                        // Now and then hand every gathered batch over at once.
                        if freed % (97 + f) < 50 {
                            segalloc::collect();
                        }
                    }
                    freed
                })
            })
            .collect();
        let (mut kept, mut handed) = (Vec::new(), 0usize);
        for wave in 0..30u64 {
            let workers: Vec<_> = (0..6u64)
                .map(|w| {
                    let tx = tx.clone();
                    thread::spawn(move || {
                        let id0 = (wave << 40) | (w << 32);
                        let mut rng = Rng::new(id0 + 1);
                        let mut mine: Vec<Blk> = (0..300)
                            .map(|i| Blk::new(rng.range(8, 700), 8, id0 | i))
                            .collect();
                        let mut keep = Vec::new();
                        let mut handed = 0;
                        while !mine.is_empty() {
                            let n = rng.range(1, 60).min(mine.len());
                            let chunk: Vec<Blk> = mine.drain(..n).collect();
                            match rng.range(0, 6) {
                                0..=3 => {
                                    handed += chunk.len();
                                    tx.send(chunk).unwrap();
                                }
                                4 => keep.extend(chunk),
                                _ => drop(chunk), // freed by their owner
                            }
                        }
                        (keep, handed)
                    })
                })
                .collect();
            for w in workers {
                let (k, h) = w.join().unwrap();
                kept.extend(k);
                handed += h;
            }
            if wave % 4 == 3 {
                kept.clear(); // each checked as it is freed
            }
        }
        drop(tx);
        let freed: usize = freers.into_iter().map(|f| f.join().unwrap()).sum();
        assert_eq!(freed, handed, "every handed block was freed once");
        drop((kept, rx)); // the channel's own blocks too
        segalloc::collect();
        let after = segalloc::stats();
        exact(
            &before,
            &after,
            if parking {
                "parked heaps with batches"
            } else {
                "abandoned heaps with batches"
            },
        );
    }
    segalloc::set_option("parked_heaps", &parked.to_string()).unwrap();
}
