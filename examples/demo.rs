//! segalloc demo: a small multi-threaded workload with segalloc installed as
//! the global allocator, printing what it did.
//!
//! Run with `cargo run --release --example demo`.
//!
//! Four workers build Strings, Vecs and HashMaps and pass half of what they
//! build to the next worker through channels, so the receiver frees memory
//! another thread allocated. The main thread then grows one Vec from a few
//! bytes into the directly-mapped large range. RSS (from /proc/self/statm) is
//! shown before, at the peak, after freeing and after `segalloc::collect()`.
use std::collections::HashMap;
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

const WORKERS: usize = 4;
const ITEMS: usize = 50_000;

/// Page size from the aux vector (AT_PAGESZ = 6), 4 KiB if unreadable.
fn page_size() -> f64 {
    let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
    auxv.chunks_exact(16)
        .map(|e| {
            let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap());
            (word(&e[..8]), word(&e[8..]))
        })
        .find(|&(key, _)| key == 6)
        .map_or(4096.0, |(_, v)| v as f64)
}

/// Resident set size in MiB: statm field 2 (pages) times the page size.
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0.0);
    pages * page_size() / (1024.0 * 1024.0)
}

/// What one worker sends to the next.
enum Item {
    Text(String),
    Numbers(Vec<u64>),
    Table(HashMap<u64, String>),
}

/// Approximate payload size of an item, for the report.
fn payload_bytes(item: &Item) -> usize {
    match item {
        Item::Text(s) => s.len(),
        Item::Numbers(v) => v.len() * 8,
        Item::Table(m) => m.values().map(|s| s.len() + 16).sum(),
    }
}

/// Per-worker tally, returned through `join`.
#[derive(Default)]
struct Tally {
    built: usize,
    sent: usize,
    received: usize,
    bytes_received: usize,
}

fn worker(id: usize, tx: mpsc::Sender<Item>, rx: mpsc::Receiver<Item>) -> Tally {
    let mut t = Tally::default();
    let mut kept = Vec::new();
    for i in 0..ITEMS {
        let item = match i % 3 {
            0 => Item::Text(format!("worker {id} item {i} {}", "*".repeat(i % 200))),
            1 => Item::Numbers((0..(i % 500) as u64).collect()),
            _ => Item::Table((0..(i % 20) as u64).map(|k| (k, k.to_string())).collect()),
        };
        t.built += 1;
        // Hand every other item to the next worker: it will free it.
        if i % 2 == 0 {
            match tx.send(item) {
                Ok(()) => t.sent += 1,
                Err(mpsc::SendError(item)) => kept.push(item),
            }
        } else {
            kept.push(item);
        }
        if kept.len() > 1000 {
            kept.clear(); // frees locally allocated objects
        }
        for item in rx.try_iter() {
            t.received += 1;
            t.bytes_received += payload_bytes(&item);
        } // received items are dropped here: cross-thread frees
    }
    drop(tx);
    // Drain whatever is still in flight once every sender is gone.
    for item in rx {
        t.received += 1;
        t.bytes_received += payload_bytes(&item);
    }
    t
}

fn main() {
    let t0 = Instant::now();
    let rss_start = rss_mib();
    println!(
        "segalloc demo: {WORKERS} workers x {ITEMS} items, large-object threshold {} KiB",
        segalloc::LARGE_THRESHOLD / 1024
    );
    println!("RSS at start:          {rss_start:7.1} MiB");

    // A ring of channels: worker i sends to worker i+1.
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..WORKERS).map(|_| mpsc::channel::<Item>()).unzip();
    let handles: Vec<_> = rxs
        .into_iter()
        .enumerate()
        .map(|(i, rx)| {
            let tx = txs[(i + 1) % WORKERS].clone();
            thread::spawn(move || worker(i, tx, rx))
        })
        .collect();
    drop(txs);
    let tallies: Vec<Tally> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (i, t) in tallies.iter().enumerate() {
        println!(
            "  worker {i}: built {:>6}, sent {:>6}, received+freed {:>6} ({:.1} MiB)",
            t.built,
            t.sent,
            t.received,
            t.bytes_received as f64 / (1024.0 * 1024.0)
        );
    }
    let sent: usize = tallies.iter().map(|t| t.sent).sum();
    let received: usize = tallies.iter().map(|t| t.received).sum();
    println!("cross-thread frees:    {received} of {sent} sent items");

    // One Vec grown by doubling from 1 element into the mmap range.
    let mut big: Vec<u64> = Vec::new();
    let mut crossed_at = None;
    for i in 0..8_000_000u64 {
        big.push(i);
        if crossed_at.is_none() && big.capacity() * 8 > segalloc::LARGE_THRESHOLD {
            crossed_at = Some(big.capacity() * 8);
        }
    }
    let ok = big.iter().enumerate().all(|(i, &x)| x == i as u64);
    println!(
        "large Vec:             {} MiB of u64, mmap range from {} KiB, contents {}",
        big.len() * 8 / (1024 * 1024),
        crossed_at.unwrap_or(0) / 1024,
        if ok { "verified" } else { "CORRUPT" }
    );
    let rss_peak = rss_mib();
    println!("RSS at peak:           {rss_peak:7.1} MiB");
    drop(big);
    println!("RSS after free:        {:7.1} MiB", rss_mib());
    segalloc::collect();
    println!("RSS after collect():   {:7.1} MiB", rss_mib());
    println!(
        "wall time:             {:7.1} ms",
        t0.elapsed().as_secs_f64() * 1000.0
    );
    assert!(ok, "large Vec contents corrupted");
}
