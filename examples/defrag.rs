//! Cooperative defragmentation of a cache (`segalloc::defrag`): a map fills
//! with values of many sizes, loses 90% of its entries at random, and its
//! survivors are left scattered over pages a tenth full. A pass over the map
//! moves them into dense pages, and `collect()` gives the emptied pages
//! back.
//!
//! ```sh
//! cargo run --release --example defrag [entries]
//! ```
//!
//! Prints the statistics before and after, RSS against the live bytes plus
//! the map's table (the target: at most 1.5x), and the pass's time against
//! a clone of the surviving entries (the target: no more).

use segalloc::defrag::{Budget, MapPass, Progress};
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

type Cache = HashMap<u64, Vec<u8>>;

/// xorshift64*: a fixed sequence, so every run drops the same entries.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Minor page faults of the process so far.
fn faults() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u.ru_minflt
    }
}

fn mib(n: usize) -> f64 {
    n as f64 / (1 << 20) as f64
}

/// Bytes of the map's own table: its buckets and their control bytes.
fn table_bytes(m: &Cache) -> usize {
    let buckets = (m.capacity() * 8 / 7).next_power_of_two();
    buckets * (size_of::<(u64, Vec<u8>)>() + 1)
}

fn live_bytes(m: &Cache) -> usize {
    m.values().map(|v| v.capacity()).sum()
}

fn checksum(m: &Cache) -> u64 {
    m.iter().fold(0u64, |acc, (k, v)| {
        let mut h = *k;
        for &b in v {
            h = h.wrapping_mul(31).wrapping_add(b as u64);
        }
        acc.wrapping_add(h)
    })
}

/// The clone the pass is held against (a function of its own, so that
/// profiles such as callgrind's can tell its cost).
#[inline(never)]
fn clone_of(m: &Cache) -> Cache {
    m.clone()
}

/// One pass in steps of at most 4096 entries, as a service would run it
/// between requests: what it did, its number of steps and the longest
/// step. A function of its own, as `clone_of`.
#[inline(never)]
fn one_pass(cache: &mut Cache) -> (Progress, usize, Duration) {
    let mut pass = MapPass::new();
    let (mut steps, mut longest) = (0, Duration::ZERO);
    loop {
        let s = Instant::now();
        let p = pass.step(cache, Budget::entries(4096));
        longest = longest.max(s.elapsed());
        steps += 1;
        if p.finished {
            return (p, steps, longest);
        }
    }
}

fn show(what: &str, m: &Cache) {
    let s = segalloc::stats();
    let live = live_bytes(m);
    let table = table_bytes(m);
    println!("--- {what}");
    println!(
        "entries {}  live values {:.1} MiB  table {:.1} MiB  RSS {:.1} MiB = {:.2}x (live + table)",
        m.len(),
        mib(live),
        mib(table),
        mib(s.resident),
        s.resident as f64 / (live + table) as f64
    );
    println!("{s}");
}

fn main() {
    let entries: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(400_000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut cache = Cache::new();
    for k in 0..entries {
        // 16 to 2047 bytes, smaller ones more often.
        let r = rng.next();
        let len = 16 + ((r >> 8) % 2032) as usize * ((r & 3) as usize + 1) / 4;
        cache.insert(k, vec![(k % 251) as u8; len]);
    }
    show("1. filled", &cache);

    cache.retain(|_, _| rng.next() % 10 == 0);
    let sum = checksum(&cache);
    show("2. dropped 90% at random", &cache);

    // What the pass is held against: a clone of the survivors (dropped
    // again, which leaves the pages as they were).
    let (t, f) = (Instant::now(), faults());
    let copy = clone_of(&cache);
    let clone_time = t.elapsed();
    let clone_faults = faults() - f;
    drop(copy);

    let (f0, m0) = (faults(), segalloc::stats().os_calls.madvise);
    let t = Instant::now();
    let (progress, steps, longest) = one_pass(&mut cache);
    let pass_time = t.elapsed();
    let (f1, m1) = (faults(), segalloc::stats().os_calls.madvise);
    let t = Instant::now();
    segalloc::collect();
    let collect_time = t.elapsed();
    assert_eq!(checksum(&cache), sum, "contents changed");
    show("3. one defragmentation pass and collect()", &cache);

    let s = segalloc::stats();
    let ratio = s.resident as f64 / (live_bytes(&cache) + table_bytes(&cache)) as f64;
    println!(
        "pass: {} entries, {} moved, {steps} steps (longest {:.2} ms), {:.2} ms; collect() {:.2} ms",
        progress.pass_visited,
        progress.pass_moved,
        longest.as_secs_f64() * 1e3,
        pass_time.as_secs_f64() * 1e3,
        collect_time.as_secs_f64() * 1e3
    );
    println!(
        "  during the pass: {} page faults, {} madvise calls",
        f1 - f0,
        m1 - m0
    );
    println!(
        "clone of the survivors: {:.2} ms ({clone_faults} page faults); pass / clone = {:.2} (target <= 1)",
        clone_time.as_secs_f64() * 1e3,
        pass_time.as_secs_f64() / clone_time.as_secs_f64()
    );
    println!("RSS / (live + table) = {ratio:.2} (target <= 1.5)");
    let again = segalloc::defrag::defrag_map(&mut cache);
    println!(
        "a second pass moved {} of {} entries",
        again.moved, again.visited
    );
}
