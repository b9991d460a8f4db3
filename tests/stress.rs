//! Multi-threaded stress with more threads than cores, bounded iterations:
//! mixed sizes (tiny to large) and alignments, realloc chains, cross-thread
//! frees through `mpsc` channels (ring of workers and a producer/consumer
//! pair), and thread churn (rounds of workers spawned and joined). Every
//! block carries a pattern derived from its id, verified on every realloc and
//! before every free, wherever that free happens. Counters confirm that every
//! block allocated was verified and freed exactly once.
mod common;

use common::{assert_aligned, check, fill, Rng};
use segalloc::{usable_size, SegAlloc, LARGE_THRESHOLD};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::thread;

#[global_allocator]
static GLOBAL: SegAlloc = SegAlloc;

/// Per-test counters (tests in one binary run concurrently).
struct Counters {
    allocated: AtomicU64,
    freed: AtomicU64,
    verified_bytes: AtomicU64,
}

impl Counters {
    const fn new() -> Self {
        Counters {
            allocated: AtomicU64::new(0),
            freed: AtomicU64::new(0),
            verified_bytes: AtomicU64::new(0),
        }
    }
    /// After all threads joined: every block allocated was verified and
    /// freed exactly once (none lost in a channel, none freed twice).
    fn assert_balanced(&self, min_allocs: u64) {
        let (a, f) = (self.allocated.load(Relaxed), self.freed.load(Relaxed));
        let v = self.verified_bytes.load(Relaxed);
        println!("allocated {a} blocks, freed {f}, verified {v} bytes");
        assert_eq!(a, f, "allocated and freed block counts differ");
        assert!(a >= min_allocs, "workload too small: {a} allocations");
        assert!(v > 0, "nothing was verified");
    }
}

static RING: Counters = Counters::new();
static PIPE: Counters = Counters::new();

/// An owned raw block: verified and freed on drop, on whatever thread that is
/// (including inside a channel's drop when the receiver has gone away).
struct Block {
    p: *mut u8,
    layout: Layout,
    id: u64,
    stats: &'static Counters,
}

// SAFETY: a Block exclusively owns its allocation.
unsafe impl Send for Block {}

impl Block {
    fn new(size: usize, align: usize, id: u64, stats: &'static Counters) -> Block {
        let layout = Layout::from_size_align(size, align).unwrap();
        let p = unsafe { SegAlloc.alloc(layout) };
        assert!(!p.is_null(), "alloc {layout:?} returned null");
        assert_aligned(p, layout, "stress alloc");
        assert!(unsafe { usable_size(p) } >= size);
        unsafe { fill(p, size, id) };
        stats.allocated.fetch_add(1, Relaxed);
        Block {
            p,
            layout,
            id,
            stats,
        }
    }

    fn verify(&self, what: &str) {
        unsafe { check(self.p, self.layout.size(), self.id, what) };
        self.stats
            .verified_bytes
            .fetch_add(self.layout.size() as u64, Relaxed);
    }

    /// Realloc to `new_size`, check the kept prefix, re-stamp with a new id.
    fn realloc(&mut self, new_size: usize, new_id: u64) {
        self.verify("before realloc");
        let q = unsafe { SegAlloc.realloc(self.p, self.layout, new_size) };
        let nl = Layout::from_size_align(new_size, self.layout.align()).unwrap();
        assert!(!q.is_null(), "realloc {:?} -> {new_size} null", self.layout);
        assert_aligned(q, nl, "stress realloc");
        unsafe {
            check(
                q,
                self.layout.size().min(new_size),
                self.id,
                "after realloc",
            );
            fill(q, new_size, new_id);
        }
        self.p = q;
        self.layout = nl;
        self.id = new_id;
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        self.verify("before free");
        unsafe { SegAlloc.dealloc(self.p, self.layout) };
        self.stats.freed.fetch_add(1, Relaxed);
    }
}

fn random_size(rng: &mut Rng) -> usize {
    match rng.range(0, 999) {
        0..=699 => rng.range(1, 256),
        700..=949 => rng.range(257, 4096),
        950..=996 => rng.range(4097, 256 * 1024),
        _ => rng.range(LARGE_THRESHOLD + 1, 2 * LARGE_THRESHOLD),
    }
}

fn random_align(rng: &mut Rng) -> usize {
    match rng.range(0, 99) {
        0..=79 => 1 << rng.range(0, 4),  // 1..16
        80..=97 => 1 << rng.range(5, 7), // 32..128
        _ => 1 << rng.range(12, 16),     // 4 KiB..64 KiB
    }
}

const WORKERS: usize = 12; // > 2 cores, so threads get preempted mid-operation
const ROUNDS: usize = 4; // worker churn: fresh threads each round
const OPS: usize = 20_000;
const MAX_LIVE: usize = 2_000;

fn worker(t: usize, round: usize, rx: mpsc::Receiver<Block>, next: mpsc::Sender<Block>) {
    let mut rng = Rng::new((round * 1000 + t) as u64);
    let mut live: Vec<Block> = Vec::new();
    let mut next_id = ((round * WORKERS + t) as u64) << 40;
    let mut id = || {
        next_id += 1;
        next_id
    };
    for _ in 0..OPS {
        match rng.range(0, 99) {
            // Allocate.
            0..=39 if live.len() < MAX_LIVE => {
                let (s, a) = (random_size(&mut rng), random_align(&mut rng));
                live.push(Block::new(s, a, id(), &RING));
            }
            // Free locally.
            0..=64 if !live.is_empty() => {
                drop(live.swap_remove(rng.range(0, live.len() - 1)));
            }
            // Realloc chain step.
            65..=79 if !live.is_empty() => {
                let i = rng.range(0, live.len() - 1);
                let s = random_size(&mut rng);
                live[i].realloc(s, id());
            }
            // Hand a block to the next worker; if it already exited, the
            // block comes back in the error and is freed here instead.
            80..=94 if !live.is_empty() => {
                let b = live.swap_remove(rng.range(0, live.len() - 1));
                if let Err(mpsc::SendError(b)) = next.send(b) {
                    drop(b);
                }
            }
            // Adopt blocks other threads sent: verify, keep some, free others.
            _ => {
                for b in rx.try_iter().take(64) {
                    b.verify("received");
                    if rng.chance(1, 2) && live.len() < MAX_LIVE {
                        live.push(b);
                    } else {
                        drop(b);
                    }
                }
            }
        }
    }
    // Whatever is still in flight to us is freed when `rx` drops (or by the
    // sender on a failed send); our own live blocks are freed here.
    drop(live);
}

#[test]
fn ring_of_workers_with_churn() {
    for round in 0..ROUNDS {
        let chans: Vec<_> = (0..WORKERS).map(|_| mpsc::channel::<Block>()).collect();
        let senders: Vec<_> = chans.iter().map(|(tx, _)| tx.clone()).collect();
        let handles: Vec<_> = chans
            .into_iter()
            .enumerate()
            .map(|(t, (_, rx))| {
                let next = senders[(t + 1) % WORKERS].clone();
                thread::spawn(move || worker(t, round, rx, next))
            })
            .collect();
        drop(senders);
        for h in handles {
            h.join().expect("worker panicked");
        }
    }
    RING.assert_balanced((WORKERS * ROUNDS * OPS / 10) as u64);
}

#[test]
fn producer_consumer_cross_thread_frees() {
    // Producers allocate, a consumer frees: every free is remote. Two
    // producers share one consumer, so remote frees race on the same pages.
    let (tx, rx) = mpsc::sync_channel::<Vec<Block>>(8);
    let producers: Vec<_> = (0..2u64)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut rng = Rng::new(100 + t);
                for batch in 0..400u64 {
                    let v: Vec<Block> = (0..100u64)
                        .map(|i| {
                            let size = rng.range(1, 2048);
                            Block::new(size, 8, (t << 40) | (batch << 16) | i, &PIPE)
                        })
                        .collect();
                    tx.send(v).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let consumer = thread::spawn(move || {
        let mut n = 0u64;
        for batch in rx {
            n += batch.len() as u64;
            drop(batch); // Block::drop verifies each one
        }
        n
    });
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(consumer.join().unwrap(), 2 * 400 * 100);
    PIPE.assert_balanced(2 * 400 * 100);
}
