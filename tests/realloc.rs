//! `realloc` preserves contents across every size-class boundary, into the
//! directly-mapped large range and back down, at several alignments; the
//! result keeps the layout's alignment; a block allocated on one thread can be
//! reallocated and freed on another; std's `Vec` growth/shrink paths work.
mod common;

use common::{assert_aligned, check, fill, Rng};
use segalloc::{usable_size, SegAlloc, LARGE_THRESHOLD};
use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static GLOBAL: SegAlloc = SegAlloc;

/// Sizes 1..=1024 one by one (every small class boundary), then steps of
/// 1/16 (finer than the 12.5% class spacing) up to 4 MiB, well past
/// `LARGE_THRESHOLD`.
fn growth_chain() -> Vec<usize> {
    let mut v: Vec<usize> = (1..=1024).collect();
    let mut s = 1024;
    while s < 4 * 1024 * 1024 {
        s += s / 16 + 1;
        v.push(s);
    }
    v.extend([LARGE_THRESHOLD - 1, LARGE_THRESHOLD, LARGE_THRESHOLD + 1]);
    v.sort_unstable();
    v.dedup();
    v
}

/// Walk a block through `chain`, reallocating at each step and checking that
/// the common prefix survived, the alignment holds and `usable_size` covers
/// the request.
///
/// # Safety
/// `p` is a live block allocated with `layout`, filled with pattern `id`
/// over `layout.size()` bytes. Returns the final block and its layout.
unsafe fn walk(mut p: *mut u8, mut layout: Layout, id: u64, chain: &[usize]) -> (*mut u8, Layout) {
    for &new_size in chain {
        let old = layout.size();
        let q = unsafe { SegAlloc.realloc(p, layout, new_size) };
        let new_layout = Layout::from_size_align(new_size, layout.align()).unwrap();
        assert!(
            !q.is_null(),
            "realloc {layout:?} -> {new_size} returned null"
        );
        assert_aligned(q, new_layout, "realloc");
        let usable = unsafe { usable_size(q) };
        assert!(usable >= new_size, "usable_size {usable} < {new_size}");
        let keep = old.min(new_size);
        unsafe {
            check(
                q,
                keep,
                id,
                &format!("realloc {old} -> {new_size} (align {})", layout.align()),
            );
            // Extend the pattern over the new tail so the next step checks it too.
            if new_size > old {
                let tail = std::slice::from_raw_parts_mut(q.add(old), new_size - old);
                for (i, b) in tail.iter_mut().enumerate() {
                    *b = common::pattern_byte(id, old + i);
                }
            }
        }
        p = q;
        layout = new_layout;
    }
    (p, layout)
}

#[test]
fn grow_through_every_class_into_mmap_and_back() {
    let up = growth_chain();
    let down: Vec<usize> = up.iter().rev().copied().collect();
    for (id, align) in [1usize, 8, 16, 64, 4096, 65536].into_iter().enumerate() {
        let id = id as u64;
        let layout = Layout::from_size_align(1, align).unwrap();
        unsafe {
            let p = SegAlloc.alloc(layout);
            assert!(!p.is_null());
            fill(p, 1, id);
            let (p, layout) = walk(p, layout, id, &up);
            assert!(layout.size() > LARGE_THRESHOLD);
            let (p, layout) = walk(p, layout, id, &down);
            assert_eq!(layout.size(), 1);
            check(p, 1, id, "after full round trip");
            SegAlloc.dealloc(p, layout);
        }
    }
}

#[test]
fn random_jumps_between_small_and_large() {
    // Jumps that skip many classes at once: small <-> large, large <-> large,
    // shrinking in place candidates, tiny <-> medium.
    let mut rng = Rng::new(7);
    for id in 0..40u64 {
        let align = [8usize, 16, 32, 256][rng.range(0, 3)];
        let layout = Layout::from_size_align(rng.range(1, 300), align).unwrap();
        let chain: Vec<usize> = (0..30)
            .map(|_| match rng.range(0, 3) {
                0 => rng.range(1, 256),
                1 => rng.range(257, LARGE_THRESHOLD),
                _ => rng.range(LARGE_THRESHOLD + 1, 3 * 1024 * 1024),
            })
            .collect();
        unsafe {
            let p = SegAlloc.alloc(layout);
            assert!(!p.is_null());
            fill(p, layout.size(), id);
            let (p, layout) = walk(p, layout, id, &chain);
            check(p, layout.size(), id, "random chain end");
            SegAlloc.dealloc(p, layout);
        }
    }
}

/// A raw block that may cross threads.
struct Block(*mut u8, Layout, u64);
// SAFETY: the block is exclusively owned by whoever holds the `Block`.
unsafe impl Send for Block {}

#[test]
fn realloc_on_another_thread() {
    // Allocate on worker threads, then realloc (small -> large -> small) and
    // free on the main thread after the workers have exited.
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                (0..64u64)
                    .map(|i| {
                        let id = t * 1000 + i;
                        let layout = Layout::from_size_align(16 + i as usize * 40, 16).unwrap();
                        let p = unsafe { SegAlloc.alloc(layout) };
                        assert!(!p.is_null());
                        unsafe { fill(p, layout.size(), id) };
                        Block(p, layout, id)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let blocks: Vec<Block> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    for Block(p, layout, id) in blocks {
        let chain = [layout.size() * 2, LARGE_THRESHOLD + 4096, 24];
        unsafe {
            let (p, layout) = walk(p, layout, id, &chain);
            SegAlloc.dealloc(p, layout);
        }
    }
}

#[test]
fn vec_and_string_growth_and_shrink() {
    // std's RawVec grows by doubling and shrinks via realloc in shrink_to_fit.
    let mut v: Vec<u32> = Vec::new();
    for i in 0..2_000_000u32 {
        v.push(i.wrapping_mul(2_654_435_761));
    }
    v.truncate(1000);
    v.shrink_to_fit();
    assert!(v.capacity() >= 1000);
    for (i, &x) in v.iter().enumerate() {
        assert_eq!(x, (i as u32).wrapping_mul(2_654_435_761));
    }
    v.truncate(3);
    v.shrink_to_fit();
    assert_eq!(v, [0, 2_654_435_761, 5_308_871_522u64 as u32]);

    let mut s = String::new();
    for i in 0..100_000 {
        s.push_str(&i.to_string());
    }
    let total: usize = (0..100_000).map(|i: i32| i.to_string().len()).sum();
    assert_eq!(s.len(), total);
    assert!(s.starts_with("0123456789101112"));
    assert!(s.ends_with("9999899999"));
    s.truncate(5);
    s.shrink_to_fit();
    assert_eq!(s, "01234");
}

/// Shrinking a small block to at least half of its block keeps it where it
/// is, with its contents (no copy); below half it moves to a smaller class.
/// Blocks of the 8-byte-aligned classes move rather than hand a 16-byte
/// multiple an 8-aligned block.
#[test]
fn shrinking_to_half_a_block_stays_in_place() {
    for (id, (size, align)) in [(1000usize, 8usize), (4000, 16), (200_000, 8), (640, 64)]
        .into_iter()
        .enumerate()
    {
        let id = 100 + id as u64;
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: each realloc and free is given the live block and the
        // layout it was made with; reads stay within the sizes asked for.
        unsafe {
            let p = SegAlloc.alloc(layout);
            assert!(!p.is_null());
            fill(p, size, id);
            let bs = usable_size(p);
            // Half the block exactly: in place.
            let half = bs / 2;
            let q = SegAlloc.realloc(p, layout, half);
            assert_eq!(q, p, "{size} -> {half} (block {bs}) stays");
            assert_eq!(usable_size(q), bs);
            check(q, half, id, "shrunk in place");
            // Below half of the block: a smaller one.
            let l2 = Layout::from_size_align(half, align).unwrap();
            let quarter = bs / 4;
            let r = SegAlloc.realloc(q, l2, quarter);
            assert_ne!(r, p, "{half} -> {quarter} (block {bs}) moves");
            assert!(usable_size(r) < bs);
            assert_aligned(r, Layout::from_size_align(quarter, align).unwrap(), "moved");
            check(r, quarter, id, "shrunk by moving");
            SegAlloc.dealloc(r, Layout::from_size_align(quarter, align).unwrap());
        }
    }
    // A 120-byte block (8-aligned class) cut to 64 bytes: a 16-aligned one.
    let layout = Layout::from_size_align(120, 8).unwrap();
    // SAFETY: as above.
    unsafe {
        let ps: Vec<*mut u8> = (0..8).map(|_| SegAlloc.alloc(layout)).collect();
        for (i, &p) in ps.iter().enumerate() {
            fill(p, 120, 200 + i as u64);
            let q = SegAlloc.realloc(p, layout, 64);
            let l = Layout::from_size_align(64, 8).unwrap();
            assert_aligned(q, l, "120 -> 64");
            check(q, 64, 200 + i as u64, "120 -> 64");
            SegAlloc.dealloc(q, l);
        }
    }
}
