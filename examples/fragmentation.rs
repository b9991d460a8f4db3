//! Builds fragmentation on purpose and shows it in segalloc's statistics.
//!
//! 1. fill: 400,000 small objects (24 to 200 bytes);
//! 2. scatter: free 7 of every 8, in a scattered pattern, so most pages keep a
//!    few live blocks (external fragmentation: free blocks inside used pages);
//! 3. larger: allocate 2,000 objects of 3 to 5 KiB, which cannot reuse the
//!    small holes;
//! 4. free everything left and call `segalloc::collect()`: the memory goes back.
//!
//! After phases 1 and 2 it also writes the page map (`segalloc::page_map`),
//! one row per segment and one cell per page coloured by its occupancy, to
//! `page-map-1-filled.svg` and `page-map-2-scattered.svg` in the directory
//! given as the first argument (default `target`): open them in a browser
//! and hover over a cell for its class and figures.
//!
//! Run with `cargo run --release --example fragmentation [dir]`.

use std::hint::black_box;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

fn phase(name: &str) {
    let s = segalloc::stats();
    println!("--- {name}");
    // The Display table, without the per-class rows of classes not in use.
    print!("{s}");
    println!();
}

/// Writes the page map of the process now to `dir/name`.
fn page_map(dir: &std::path::Path, name: &str) {
    let path = dir.join(name);
    let map = segalloc::page_map();
    let written = std::fs::File::create(&path).and_then(|f| {
        let mut w = std::io::BufWriter::new(f);
        map.write_svg(&mut w)
    });
    match written {
        Ok(()) => println!("page map: {} ({} segments)", path.display(), map.segments()),
        Err(e) => println!("page map: could not write {}: {e}", path.display()),
    }
}

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target".into()));
    phase("start");

    let mut small: Vec<Option<Vec<u8>>> = (0..400_000usize)
        .map(|i| Some(vec![(i % 251) as u8; 24 + (i * 37) % 177]))
        .collect();
    phase("1. filled with 400,000 small objects");
    page_map(&dir, "page-map-1-filled.svg");

    // Keep every eighth object, with the stride shifted per thousand so the
    // survivors are spread over every page.
    let mut kept = 0usize;
    for (i, slot) in small.iter_mut().enumerate() {
        if (i + i / 1000) % 8 != 0 {
            *slot = None;
        } else {
            kept += 1;
        }
    }
    phase(&format!(
        "2. freed 7 of 8 in a scattered pattern ({kept} left)"
    ));
    page_map(&dir, "page-map-2-scattered.svg");

    let larger: Vec<Vec<u8>> = (0..2_000usize)
        .map(|i| vec![1u8; 3 * 1024 + (i * 97) % 2048])
        .collect();
    phase("3. allocated 2,000 larger objects (3-5 KiB)");

    // Check contents before letting go, so nothing above was optimised away.
    let sum: u64 = small.iter().flatten().map(|v| v[0] as u64).sum::<u64>()
        + larger.iter().map(|v| v.len() as u64).sum::<u64>();
    black_box(sum);
    let before = segalloc::stats();
    drop(small);
    drop(larger);
    segalloc::collect();
    let after = segalloc::stats();
    phase("4. freed everything and called segalloc::collect()");
    println!(
        "collect() gave back {:.1} MiB of committed memory ({:.1} MiB -> {:.1} MiB); resident {:.1} MiB -> {:.1} MiB",
        (before.committed.saturating_sub(after.committed)) as f64 / 1048576.0,
        before.committed as f64 / 1048576.0,
        after.committed as f64 / 1048576.0,
        before.resident as f64 / 1048576.0,
        after.resident as f64 / 1048576.0
    );
}
