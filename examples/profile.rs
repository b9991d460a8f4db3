//! The heap profiler on a program with four allocation sites of known
//! sizes: prints the top sites with their estimated and exact live bytes,
//! and writes `target/profile-example.{pb.gz,folded,svg,leaks.txt}`.
//!
//! ```text
//! cargo run --release --features profiling --example profile
//! go tool pprof -top target/profile-example.pb.gz   # if Go is installed
//! ```

use std::hint::black_box;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

/// 48 MiB live in 100-byte buffers (rounded up to their size class).
#[inline(never)]
fn names(out: &mut Vec<Vec<u8>>) {
    for _ in 0..(48 << 20) / 100 {
        out.push(black_box(Vec::with_capacity(100)));
    }
}

/// 32 MiB live in 64 KiB buffers.
#[inline(never)]
fn buffers(out: &mut Vec<Vec<u8>>) {
    for _ in 0..512 {
        out.push(black_box(vec![0u8; 64 << 10]));
    }
}

/// 16 MiB live in 2 MiB images (large blocks).
#[inline(never)]
fn images(out: &mut Vec<Vec<u8>>) {
    for _ in 0..8 {
        out.push(black_box(vec![0u8; 2 << 20]));
    }
}

/// 256 MiB allocated and freed at once in 1000-byte messages: nothing live.
#[inline(never)]
fn messages() {
    for _ in 0..(256 << 20) / 1000 {
        drop(black_box(Vec::<u8>::with_capacity(1000)));
    }
}

fn main() {
    segalloc::profile::start(0);
    let mut a = Vec::with_capacity((48 << 20) / 100);
    let mut b = Vec::with_capacity(512);
    let mut c = Vec::with_capacity(8);
    names(&mut a);
    buffers(&mut b);
    images(&mut c);
    messages();
    let exact = [
        ("profile::names", 48u64 << 20),
        ("profile::buffers", 32 << 20),
        ("profile::images", 16 << 20),
        ("profile::messages", 0),
    ];
    let p = segalloc::profile::snapshot();
    println!(
        "rate {} bytes, {} samples ({} live, {} dropped), {} bytes live (estimated)",
        p.rate,
        p.samples,
        p.live_samples,
        p.dropped,
        p.live_bytes()
    );
    // Sites are stacks (return addresses): an unrolled loop makes several.
    // Sum them per function of this program, the innermost one named.
    let mut by_fn: Vec<(String, u64, u64, u64, u64)> = Vec::new();
    for (s, frames) in p.named_sites() {
        let f = frames
            .iter()
            .find(|n| n.starts_with("profile::"))
            .cloned()
            .unwrap_or_else(|| frames.first().cloned().unwrap_or_default());
        let i = match by_fn.iter().position(|e| e.0 == f) {
            Some(i) => i,
            None => {
                by_fn.push((f, 0, 0, 0, 0));
                by_fn.len() - 1
            }
        };
        by_fn[i].1 += s.live_bytes;
        by_fn[i].2 += s.live_blocks;
        by_fn[i].3 += s.live_waste();
        by_fn[i].4 += s.alloc_bytes;
    }
    by_fn.sort_by(|a, b| b.1.cmp(&a.1).then(b.4.cmp(&a.4)));
    println!(
        "{:>10} {:>10} {:>8} {:>8} {:>10}  function",
        "live", "exact", "blocks", "waste", "allocated"
    );
    for (f, live, blocks, waste, alloc) in by_fn.iter().take(6) {
        let exact = exact
            .iter()
            .find(|(n, _)| n == f)
            .map_or(String::from("-"), |(_, b)| b.to_string());
        println!("{live:>10} {exact:>10} {blocks:>8} {waste:>8} {alloc:>10}  {f}");
    }
    std::fs::create_dir_all("target").unwrap();
    p.write_files("target/profile-example").unwrap();
    println!("wrote target/profile-example.{{pb.gz,folded,svg,leaks.txt}}");
    drop((a, b, c));
}
