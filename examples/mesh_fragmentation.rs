//! Issue #13's scenario in Rust: fill with blocks of random sizes from 16 to
//! 512 bytes, free a random 90%, then `collect()` and `mesh()`; RSS and RSS
//! over live bytes at each step.
//!
//! `cargo run --release --example mesh_fragmentation [blocks] [keep-percent]`
//! (defaults 2,000,000 and 10).

use std::time::Instant;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

/// xorshift64*: reproducible, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    s.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<usize>()
        .unwrap()
        * 4096
}

/// Proportional set size: a page mapped at two addresses counts once, where
/// RSS counts it at each address whose page tables map it.
fn pss() -> usize {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap();
    let line = s.lines().find(|l| l.starts_with("Pss:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<usize>()
        .unwrap()
        * 1024
}

/// Mappings of the process (lines of `/proc/self/maps`): meshing splits
/// them, and the kernel allows 65,530.
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

fn mib(n: usize) -> f64 {
    n as f64 / 1048576.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let keep: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut blocks: Vec<Box<[u8]>> = Vec::with_capacity(n);
    for _ in 0..n {
        let size = 16 + (rng.next() % 497) as usize;
        blocks.push(vec![1u8; size].into_boxed_slice());
    }
    let filled = rss();
    let mut live = 0usize;
    let mut kept = Vec::with_capacity(n / 8);
    for b in blocks.drain(..) {
        if rng.next() % 100 < keep {
            live += b.len();
            kept.push(b);
        }
    }
    drop(blocks);
    let freed = rss();
    segalloc::collect();
    let collected = rss();
    let t = Instant::now();
    let merged = segalloc::mesh();
    let took = t.elapsed();
    let meshed = rss();
    let m = segalloc::mesh_stats();
    println!(
        "{n} blocks of 16-512 B, {keep}% kept: {:.1} MiB live",
        mib(live)
    );
    println!("RSS filled            {:8.1} MiB", mib(filled));
    println!(
        "RSS after the frees   {:8.1} MiB  ({:.2}x live)",
        mib(freed),
        freed as f64 / live as f64
    );
    println!(
        "RSS after collect()   {:8.1} MiB  ({:.2}x live)",
        mib(collected),
        collected as f64 / live as f64
    );
    println!(
        "RSS after mesh()      {:8.1} MiB  ({:.2}x live): {merged} merges ({} whole pages into {}, {} OS pages onto {}) in {:.0} ms, {:.1} MiB given back, {} mappings",
        mib(meshed),
        meshed as f64 / live as f64,
        m.pages_meshed,
        m.groups,
        m.os_pages_meshed,
        m.shared_os_pages,
        took.as_secs_f64() * 1000.0,
        mib(m.bytes_released),
        mappings()
    );
    // Read every surviving block (through whichever address it has).
    assert!(kept.iter().all(|b| b.iter().all(|&x| x == 1)));
    let (touched, touched_pss) = (rss(), pss());
    println!(
        "after reading every block: RSS {:.1} MiB ({:.2}x live), PSS {:.1} MiB ({:.2}x live)",
        mib(touched),
        touched as f64 / live as f64,
        mib(touched_pss),
        touched_pss as f64 / live as f64
    );
    let s = segalloc::stats();
    let mut by_class: Vec<_> = s
        .classes
        .iter()
        .filter(|r| r.pages > 0)
        .map(|r| (r.block_size, r.pages, r.live_blocks))
        .collect();
    by_class.sort();
    print!("pages per class after meshing (block size: pages, live blocks):");
    for (bs, pages, live) in by_class {
        print!(" {bs}:{pages}/{live}");
    }
    println!();
    let sum: usize = kept.iter().map(|b| b.len()).sum();
    assert_eq!(sum, live);
    assert!(kept.iter().all(|b| b.iter().all(|&x| x == 1)));
}
