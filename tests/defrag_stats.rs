//! The statistics stay exact through defragmentation: after blocks of
//! several threads' heaps are relocated (their threads exited, and one
//! still running), `requested` moves by exactly the bytes held, live blocks
//! by their number, and `committed = allocated + metadata + external` holds
//! to the byte. One test function, so nothing else in this binary allocates
//! while it measures.

#![cfg(feature = "stats")]

use segalloc::defrag::{defrag_map, Relocate};
use std::collections::HashMap;
use std::sync::mpsc;
use std::thread;

mod common;
use common::identity_holds;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

/// Each thread fills boxes of many sizes, keeps 1 in 8 and returns them.
fn fill(t: usize) -> Vec<Box<[u8]>> {
    let mut v: Vec<Box<[u8]>> = (0..6000)
        .map(|i| vec![(i + t) as u8; 1 + (i * 97 + t * 13) % 3000].into_boxed_slice())
        .collect();
    let mut i = 0;
    v.retain(|_| {
        i += 1;
        i % 8 == 0
    });
    v
}

fn intact(t: usize, v: &[Box<[u8]>]) -> bool {
    v.iter().enumerate().all(|(k, b)| {
        let i = 8 * k + 7;
        b.len() == 1 + (i * 97 + t * 13) % 3000 && b.iter().all(|&x| x == (i + t) as u8)
    })
}

#[test]
fn statistics_are_exact_after_relocation() {
    // Set up the runtime's lazy state (threads, a blocking receive on a
    // channel) first.
    let (tx, rx) = mpsc::channel();
    let warm = thread::spawn(move || tx.send(fill(9)).unwrap());
    drop(rx.recv().unwrap());
    warm.join().unwrap();
    let base = segalloc::stats();
    identity_holds(&base);

    // Blocks of exited threads' heaps.
    let mut held: Vec<Vec<Box<[u8]>>> = (0..3)
        .map(|t| thread::spawn(move || fill(t)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    // Blocks of a running thread's heap, relocated here while it waits.
    let (tx, rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let running = thread::spawn(move || {
        tx.send(fill(3)).unwrap();
        go_rx.recv().unwrap();
        // Collects the frees other threads made into its pages.
        segalloc::collect();
    });
    held.push(rx.recv().unwrap());
    // And a map of this thread's own.
    let mut map: HashMap<u32, String> = (0..20_000).map(|i| (i, format!("{i:>40}"))).collect();
    map.retain(|k, _| k % 10 == 0);

    let mut moved = 0;
    for v in &mut held {
        moved += v.iter_mut().map(|b| b.relocate() as usize).sum::<usize>();
    }
    moved += defrag_map(&mut map).moved;
    assert!(moved > 1000, "{moved} moved");
    go_tx.send(()).unwrap();
    running.join().unwrap();
    drop((rx, go_tx));

    for (t, v) in held.iter().enumerate() {
        assert!(intact(t, v), "thread {t}'s blocks changed");
    }
    assert!(map.iter().all(|(k, v)| *v == format!("{k:>40}")));
    let bytes = held.iter().flatten().map(|b| b.len()).sum::<usize>()
        + held.capacity() * size_of::<Vec<Box<[u8]>>>()
        + held
            .iter()
            .map(|v| v.capacity() * size_of::<Box<[u8]>>())
            .sum::<usize>()
        + map.values().map(|s| s.capacity()).sum::<usize>();
    let blocks = held.iter().map(Vec::len).sum::<usize>() + 1 + held.len() + map.len();
    // The map's table: hashbrown's one block of buckets and control bytes
    // (a group of 16 more); at most 7/8 of the buckets are usable.
    let buckets = (map.capacity() * 8 / 7).next_power_of_two();
    let table = (buckets * size_of::<(u32, String)>()).next_multiple_of(16) + buckets + 16;
    let s = segalloc::stats();
    assert_eq!(
        s.requested - base.requested,
        bytes + table,
        "requested must move by exactly what is held"
    );
    assert_eq!(
        s.live_blocks() - base.live_blocks(),
        blocks + 1,
        "live blocks"
    );
    identity_holds(&s);

    drop(held);
    drop(map);
    let after = segalloc::stats();
    assert_eq!(after.requested, base.requested, "all freed: requested back");
    assert_eq!(after.live_blocks(), base.live_blocks());
    identity_holds(&after);
}
