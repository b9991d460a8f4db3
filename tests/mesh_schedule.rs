//! Meshing on the purge schedule (issue 13): with the option `mesh` on,
//! a thread whose blocks were freed at random gets memory back through
//! meshing without calling `collect()`, `mesh()` or `malloc_trim`: its
//! allocation slow paths run the timed step once the purge delay has
//! passed. With the option off the same program merges nothing (the
//! control, which shows that the program itself never meshes).
//!
//! The program: pages of 64-byte blocks (merged by OS pages) and of
//! 512-byte blocks (merged whole, or by OS pages), a random tenth kept and
//! written; then, every purge delay, one more 4000-byte block (a fresh page
//! every 16 blocks, so an allocation slow path). Checked: pages and OS
//! pages merged, bytes given back, PSS lower by more than the new blocks
//! take, every kept block's contents, the statistics' identity, and that
//! freeing everything leaves nothing shared.
//!
//! Then randomised block order: with `mesh` on, a fresh page hands out
//! its blocks from a random start, so a program that keeps every eighth
//! block it allocated (frees in step with allocation, not at random)
//! leaves them at random offsets, and `mesh()` merges OS pages; with it
//! off (address order) every page keeps the same offsets and nothing
//! merges.
//!
//! One binary without libtest's harness: one thread, so the heap, the
//! slow paths and the figures are this test's own.

mod common;
use common::{mib, pss_bytes, Rng};
use std::alloc::{alloc, dealloc, Layout};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

const PAGE: usize = 64 << 10;
/// The purge delay the test runs with, ms.
const DELAY_MS: u64 = 20;
/// The size of the blocks whose allocation slow paths run the timed step.
const REFILL: usize = 4000;

fn main() {
    // Meshing merges pages of small blocks; a block the heap profiler
    // sampled (`SEGALLOC_PROF=1` in the environment) is in a mapping of its
    // own, outside every page, so this test's addresses and counts assume
    // sampling off (what sampling changes is tests/profile*.rs's).
    #[cfg(feature = "profiling")]
    segalloc::profile::stop();
    segalloc::set_option("purge_delay_ms", &DELAY_MS.to_string()).unwrap();
    // The control first: with the option off nothing is merged.
    let off = run(false);
    assert_eq!(off.pages, 0, "merged whole pages with meshing off");
    assert_eq!(off.os_pages, 0, "merged OS pages with meshing off");
    let on = run(true);
    assert!(on.pages > 0, "no whole page merged by the timed step");
    assert!(on.os_pages > 0, "no OS page merged by the timed step");
    assert!(
        on.released >= 1 << 20,
        "the timed step gave back {} through meshing",
        mib(on.released)
    );
    // Against the control, which gives back what the sub-page purge can
    // (the timed step may also run before the first figure, at any slow
    // path once a purge delay has passed since the frees: in `pss_bytes`
    // itself on a loaded machine).
    let (net_on, net_off) = (
        on.pss_after.saturating_sub(on.refill),
        off.pss_after.saturating_sub(off.refill),
    );
    assert!(
        net_on + on.released / 2 <= net_off,
        "PSS less the new blocks: {} with meshing, {} without; {} released",
        mib(net_on),
        mib(net_off),
        mib(on.released)
    );
    fresh_blocks_go_forward();
    let (in_order, shuffled) = (kept_in_step(false), kept_in_step(true));
    assert_eq!(in_order, 0, "merged pages kept in address order");
    assert!(
        shuffled >= 64,
        "fresh blocks from a random start: only {shuffled} OS pages merged"
    );
    println!("mesh_schedule: all passed");
}

/// With `mesh` on, a fresh page hands out its blocks from a random one
/// (among its first OS page's) to its end, and the ones before it once
/// the page is wholly carved: a program walking its blocks in allocation
/// order walks each page forward, with one jump back (to the held-back
/// first blocks), not one each OS page (the rotation this replaced) or a
/// random walk (the shuffle before it).
fn fresh_blocks_go_forward() {
    const BS: usize = 256;
    const PER: usize = PAGE / BS;
    segalloc::collect();
    segalloc::set_option("mesh", "1").unwrap();
    let all: Vec<usize> = (0..64 * PER)
        .map(|_| {
            // SAFETY: a non-zero size.
            let p = unsafe { alloc(layout(BS)) } as usize;
            assert!(p != 0);
            p
        })
        .collect();
    segalloc::set_option("mesh", "0").unwrap();
    // Each page's blocks, in the order they were handed out.
    let mut pages: Vec<(usize, Vec<usize>)> = Vec::new();
    for &p in &all {
        let base = p & !(PAGE - 1);
        match pages.last_mut() {
            Some((b, v)) if *b == base => v.push(p),
            _ => pages.push((base, vec![p])),
        }
    }
    let (mut whole, mut late_starts) = (0, 0);
    for (base, order) in &pages {
        if order.len() != PER {
            continue; // the page in use before, or the last one
        }
        whole += 1;
        let mut sorted = order.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            PER,
            "page {base:#x}: a block handed out twice"
        );
        let back = order.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(
            back <= 1,
            "page {base:#x}: {back} jumps back in allocation order"
        );
        late_starts += usize::from(order[0] != *base);
    }
    println!(
        "fresh blocks: {whole} whole pages, each forward but for one jump back; \
         {late_starts} started past their first block"
    );
    assert!(
        whole >= 60,
        "only {whole} pages handed out whole, in one go"
    );
    assert!(
        late_starts >= whole / 2,
        "{late_starts} of {whole} pages started past their first block"
    );
    for &p in &all {
        // SAFETY: allocated above with this layout, freed once.
        unsafe { dealloc(p as *mut u8, layout(BS)) };
    }
}

/// Fills 128 pages of 256-byte blocks with the option `mesh` at `shuffle`,
/// keeps every eighth block allocated, and meshes (`mesh()`, whatever the
/// option says). Returns the OS pages merged (whole pages count 16).
fn kept_in_step(shuffle: bool) -> usize {
    const BS: usize = 256;
    segalloc::collect();
    segalloc::set_option("mesh", if shuffle { "1" } else { "0" }).unwrap();
    let all: Vec<usize> = (0..128 * PAGE / BS)
        .map(|_| {
            // SAFETY: a non-zero size.
            let p = unsafe { alloc(layout(BS)) } as usize;
            assert!(p != 0);
            p
        })
        .collect();
    let mut kept = Vec::with_capacity(all.len() / 8);
    for (i, &p) in all.iter().enumerate() {
        if i % 8 == 0 {
            write_block(p, BS);
            kept.push(p);
        } else {
            // SAFETY: allocated above with this layout, freed once.
            unsafe { dealloc(p as *mut u8, layout(BS)) };
        }
    }
    segalloc::set_option("mesh", "0").unwrap();
    let m0 = segalloc::mesh_stats();
    segalloc::mesh();
    let m1 = segalloc::mesh_stats();
    for &p in &kept {
        assert!(block_ok(p, BS), "a kept block changed");
        // SAFETY: live blocks of ours with this layout.
        unsafe { dealloc(p as *mut u8, layout(BS)) };
    }
    segalloc::collect();
    let merged = (m1.pages_meshed - m0.pages_meshed) * 16 + m1.os_pages_meshed - m0.os_pages_meshed;
    println!(
        "every eighth block kept, fresh blocks {}: {merged} OS pages merged",
        if shuffle {
            "from a random start"
        } else {
            "in address order"
        }
    );
    merged
}

/// What one run saw.
struct Seen {
    /// Whole pages and OS pages the timed step merged (from the fill on).
    pages: usize,
    os_pages: usize,
    /// Bytes meshing gave back, after the steps.
    released: usize,
    pss_after: usize,
    /// Bytes of the blocks allocated to reach the slow paths.
    refill: usize,
}

fn layout(bs: usize) -> Layout {
    Layout::from_size_align(bs, 8).unwrap()
}

fn pattern(p: usize, w: usize) -> u64 {
    (p as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (w as u64) << 3
}

fn write_block(p: usize, bs: usize) {
    for w in 0..bs / 8 {
        // SAFETY: a live block of `bs` bytes of ours.
        unsafe { (p as *mut u64).add(w).write_volatile(pattern(p, w)) };
    }
}

fn block_ok(p: usize, bs: usize) -> bool {
    (0..bs / 8).all(|w| {
        // SAFETY: a live block of `bs` bytes of ours.
        unsafe { (p as *const u64).add(w).read_volatile() == pattern(p, w) }
    })
}

fn identity(what: &str) {
    let st = segalloc::stats();
    assert_eq!(
        st.committed,
        st.allocated + st.metadata + st.external_fragmentation(),
        "the statistics' identity {what}"
    );
}

/// Fills `pages` pages of blocks of each size of `sizes`, then keeps a
/// random tenth, written, and frees the rest; returns the kept blocks by
/// size. Every allocation comes before the first free, so no slow path
/// runs the timed step before the caller looks (a free's never does).
fn sparse(sizes: &[usize], pages: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let all: Vec<Vec<usize>> = sizes
        .iter()
        .map(|&bs| {
            (0..pages * (PAGE / bs))
                .map(|_| {
                    // SAFETY: a non-zero size.
                    let p = unsafe { alloc(layout(bs)) };
                    assert!(!p.is_null());
                    p as usize
                })
                .collect()
        })
        .collect();
    let mut kept = Vec::new();
    for (blocks, &bs) in all.iter().zip(sizes) {
        let mut k = Vec::with_capacity(blocks.len() / 8);
        for &p in blocks {
            if rng.chance(1, 10) {
                write_block(p, bs);
                k.push(p);
            } else {
                // SAFETY: allocated above with this layout, freed once.
                unsafe { dealloc(p as *mut u8, layout(bs)) };
            }
        }
        kept.push(k);
    }
    kept
}

/// The program, with the option `mesh` set to `mesh`; frees everything
/// at the end.
fn run(mesh: bool) -> Seen {
    segalloc::set_option("mesh", if mesh { "1" } else { "0" }).unwrap();
    let m0 = segalloc::mesh_stats();
    let mut rng = Rng::new(13);
    let sizes = [64usize, 512];
    let kept = sparse(&sizes, 192, &mut rng);
    // Read every kept block through its own address first, so that PSS
    // counts what the program sees (as the README's figures do).
    for (k, &bs) in kept.iter().zip(&sizes) {
        assert!(k.iter().all(|&p| block_ok(p, bs)));
    }
    let pss_before = pss_bytes();
    // Allocation slow paths, a purge delay apart, until merging stops
    // (1 s with nothing new after the first merge: a step that meshed for
    // t meshes again only 8 t later, see `heap::purge`'s MESH_DUTY) or
    // 6 s pass (1 s for the control: some 45 steps).
    let mut refill = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(if mesh { 6 } else { 1 });
    let (mut last, mut quiet) = (0, 0);
    while Instant::now() < deadline && quiet < 1000 / (DELAY_MS + 2) {
        std::thread::sleep(Duration::from_millis(DELAY_MS + 2));
        for _ in 0..PAGE / 4096 {
            // SAFETY: a non-zero size.
            let p = unsafe { alloc(layout(REFILL)) };
            assert!(!p.is_null());
            refill.push(p as usize);
        }
        let m = segalloc::mesh_stats();
        let now = m.pages_meshed + m.os_pages_meshed;
        if now > 0 && now == last {
            quiet += 1;
        } else {
            quiet = 0;
        }
        last = now;
    }
    let m1 = segalloc::mesh_stats();
    for (k, &bs) in kept.iter().zip(&sizes) {
        assert!(
            k.iter().all(|&p| block_ok(p, bs)),
            "a kept block of {bs} bytes changed"
        );
    }
    let pss_after = pss_bytes();
    identity("after the timed steps");
    let seen = Seen {
        pages: m1.pages_meshed - m0.pages_meshed,
        os_pages: m1.os_pages_meshed - m0.os_pages_meshed,
        released: m1.bytes_released,
        pss_after,
        refill: refill.len() * 4096,
    };
    println!(
        "mesh {}: {} pages and {} OS pages merged by the timed step, {} given back; PSS {} -> {} ({} of new blocks)",
        mesh as u8,
        seen.pages,
        seen.os_pages,
        mib(seen.released),
        mib(pss_before),
        mib(pss_after),
        mib(seen.refill)
    );
    // Nothing more merges while everything is freed and collected.
    segalloc::set_option("mesh", "0").unwrap();
    for (k, &bs) in kept.iter().zip(&sizes) {
        for &p in k {
            // SAFETY: live blocks of ours with this layout.
            unsafe { dealloc(p as *mut u8, layout(bs)) };
        }
    }
    for &p in &refill {
        // SAFETY: as above.
        unsafe { dealloc(p as *mut u8, layout(REFILL)) };
    }
    segalloc::collect();
    let end = segalloc::mesh_stats();
    assert_eq!(end.shared_os_pages, 0, "shared OS pages left: {end:?}");
    assert_eq!(end.groups, 0, "merged pages left: {end:?}");
    identity("after freeing everything");
    seen
}
