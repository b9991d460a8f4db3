//! Verification stress (issue 6, part 3): 16 threads on 2 cores, bounded
//! rounds, with segalloc as the global allocator.
//!
//! Each round spawns 16 fresh workers (thread churn) in a ring of channels.
//! A worker allocates blocks of mixed sizes (tiny to 2 MiB) and alignments
//! (1 to 64 KiB), runs realloc chains on some, sends some to its neighbour
//! (producer/consumer: the neighbour verifies and frees them, a cross-thread
//! free), and hands some back to the main thread as survivors, which outlive
//! the worker (so its segments are abandoned with live blocks). The next
//! round's workers free the previous round's survivors, into abandoned or
//! reclaimed segments. Every block carries a pattern of its id, verified on
//! every realloc and before every free.
//!
//! At the end, with every worker joined and every block freed,
//! `stats().requested` and `stats().live_blocks()` are exactly what they were
//! at the start, and the committed memory identity holds.
mod common;

use common::{Blk, Rng};
use segalloc::SegAlloc;
use std::sync::mpsc;
use std::thread;

#[global_allocator]
static GLOBAL: SegAlloc = SegAlloc;

const THREADS: usize = 16;
const ROUNDS: usize = 12;
const OPS: usize = 2500;

fn random_size(rng: &mut Rng) -> usize {
    match rng.range(0, 99) {
        0..=59 => rng.range(1, 256),
        60..=84 => rng.range(257, 16 * 1024),
        85..=97 => rng.range(16 * 1024, 256 * 1024),
        _ => rng.range(256 * 1024, 2 << 20),
    }
}

fn random_align(rng: &mut Rng) -> usize {
    match rng.range(0, 19) {
        0..=11 => 1 << rng.range(0, 3),
        12..=16 => 16,
        17 | 18 => 1 << rng.range(5, 12),
        _ => 1 << rng.range(13, 16),
    }
}

/// One worker: returns its survivors (blocks that outlive it).
fn worker(
    t: usize,
    round: usize,
    inherit: Vec<Blk>,
    rx: mpsc::Receiver<Blk>,
    next: mpsc::Sender<Blk>,
) -> Vec<Blk> {
    let mut rng = Rng::new((round * THREADS + t) as u64);
    let base = ((round * THREADS + t) as u64) << 32;
    let mut mine: Vec<Blk> = Vec::new();
    let mut survivors = Vec::new();
    // Free the previous round's survivors: their owners have exited.
    drop(inherit);
    for i in 0..OPS {
        while let Ok(b) = rx.try_recv() {
            drop(b); // a cross-thread free, verified first
        }
        match rng.range(0, 9) {
            0..=3 => mine.push(Blk::new(
                random_size(&mut rng),
                random_align(&mut rng),
                base + i as u64,
            )),
            4 if !mine.is_empty() => {
                // A realloc chain: grow and shrink a few times.
                let k = rng.range(0, mine.len() - 1);
                for _ in 0..rng.range(1, 4) {
                    let s = random_size(&mut rng);
                    mine[k].resize(s);
                }
            }
            5 | 6 if !mine.is_empty() => {
                let k = rng.range(0, mine.len() - 1);
                let b = mine.swap_remove(k);
                // The neighbour may have finished: then the block comes back
                // and is freed here.
                if let Err(mpsc::SendError(b)) = next.send(b) {
                    drop(b);
                }
            }
            7 if !mine.is_empty() => {
                let k = rng.range(0, mine.len() - 1);
                survivors.push(mine.swap_remove(k));
            }
            _ if !mine.is_empty() => {
                let k = rng.range(0, mine.len() - 1);
                drop(mine.swap_remove(k));
            }
            _ => {}
        }
        // Bound what one thread holds.
        if mine.len() > 200 {
            mine.truncate(100);
        }
    }
    drop(mine);
    drop(next);
    // Whatever the previous worker sent after we stopped is freed here.
    for b in rx {
        drop(b);
    }
    survivors
}

/// Runs the rounds; returns the survivors of the last round.
fn rounds() -> Vec<Blk> {
    let mut survivors: Vec<Blk> = Vec::new();
    for round in 0..ROUNDS {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel::<Blk>()).unzip();
        // Deal the previous round's survivors out to the new workers.
        let mut shares: Vec<Vec<Blk>> = (0..THREADS).map(|_| Vec::new()).collect();
        for (i, b) in survivors.drain(..).enumerate() {
            shares[(i * 7) % THREADS].push(b);
        }
        let handles: Vec<_> = rxs
            .into_iter()
            .zip(shares)
            .enumerate()
            .map(|(t, (rx, inherit))| {
                let next = txs[(t + 1) % THREADS].clone();
                thread::spawn(move || worker(t, round, inherit, rx, next))
            })
            .collect();
        drop(txs);
        for h in handles {
            // A native join: the thread has fully exited (its heap handed over).
            survivors.extend(h.join().expect("worker panicked"));
        }
        for b in &survivors {
            b.verify("survivor");
        }
    }
    survivors
}

#[test]
fn sixteen_threads_exact_accounting() {
    let started = std::time::Instant::now();
    // Warm up what std allocates once (thread and channel machinery), so that
    // only the workload counts between the two snapshots.
    thread::spawn(mpsc::channel::<u8>).join().unwrap();
    let before = segalloc::stats();

    let survivors = rounds();
    let kept = survivors.len();
    for b in &survivors {
        b.verify("final");
    }
    drop(survivors);

    let after = segalloc::stats();
    // Printing allocates (the captured output), so only after the snapshot.
    println!(
        "{ROUNDS} rounds x {THREADS} threads in {:?}; {kept} survivors at the end; \
         {} allocations, {} cross-thread frees",
        started.elapsed(),
        after.allocations - before.allocations,
        after.cross_thread_frees - before.cross_thread_frees
    );
    assert_eq!(
        after.requested, before.requested,
        "requested bytes did not come back exactly"
    );
    assert_eq!(
        after.live_blocks(),
        before.live_blocks(),
        "live blocks did not come back"
    );
    assert_eq!(
        after.committed,
        after.allocated + after.metadata + after.external_fragmentation(),
        "committed != allocated + metadata + external"
    );
    assert!(after.cross_thread_frees > before.cross_thread_frees);
}
