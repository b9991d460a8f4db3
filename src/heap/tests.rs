//! Unit tests of the heap's page and segment handling.

use super::*;
use crate::size_class::class_of;

impl Heap {
    /// (segments owned, of which wholly free)
    fn census(&self) -> (usize, usize) {
        let (mut n, mut empty) = (0, 0);
        for list in [self.avail, self.full_segs] {
            let mut s = list.first;
            while !s.is_null() {
                // SAFETY: our segments, read by the owning thread.
                unsafe {
                    n += 1;
                    empty += ((*s).used_pages == 0) as usize;
                    s = (*s).next;
                }
            }
        }
        (n, empty)
    }
}

/// Fills `segments` segments' worth of 8 KiB blocks, frees them in the
/// given order, and returns the heap's census afterwards.
fn fill_and_free(segments: usize, reverse: bool) -> (usize, usize) {
    std::thread::spawn(move || {
        let n = segments * (SLICES - 1) * 8;
        // `n` blocks in segments: with the heap profiler sampling
        // (`SEGALLOC_PROF=1`), a sampled block has a mapping of its own
        // instead; those are allocated and freed too, but not counted.
        let mut v: std::vec::Vec<*mut u8> = std::vec::Vec::with_capacity(n);
        let mut in_segments = 0;
        while in_segments < n {
            let p = crate::alloc::malloc(8192, 8);
            assert!(!p.is_null());
            // SAFETY: a live block: its segment's header is mapped.
            if unsafe { (*crate::segment::segment_of(p)).kind } == crate::segment::KIND_SMALL {
                in_segments += 1;
            }
            v.push(p);
        }
        let during = crate::thread::with_heap(|h| h.census()).unwrap();
        assert!(during.0 >= segments, "{during:?}");
        if reverse {
            v.reverse();
        }
        for p in v {
            // SAFETY: live blocks from malloc, freed once.
            unsafe { crate::alloc::free(p, 8192) };
        }
        crate::thread::with_heap(|h| h.census()).unwrap()
    })
    .join()
    .unwrap()
}

#[test]
fn at_most_one_empty_segment_is_kept() {
    for reverse in [false, true] {
        let (n, empty) = fill_and_free(5, reverse);
        assert!(empty <= 1, "{empty} empty segments kept (of {n})");
        // Besides the reserve, only the segment holding the one page the
        // class keeps for reuse (see `free_slow`) may stay.
        assert!(n - empty <= 1, "{n} segments kept after freeing everything");
    }
}

#[test]
fn collect_releases_the_reserve_segment() {
    let census = std::thread::spawn(|| {
        let p = crate::alloc::malloc(100, 8);
        // SAFETY: a live block, freed once.
        unsafe { crate::alloc::free(p, 100) };
        crate::thread::with_heap(|h| {
            // SAFETY: the calling thread's own heap.
            unsafe { h.collect() };
            h.census()
        })
        .unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(census, (0, 0));
}

#[test]
fn direct_ranges_tile_the_slots() {
    let mut next = 0;
    for c in 0..NUM_CLASSES {
        if class_size(c) > DIRECT_MAX {
            break;
        }
        let (lo, hi) = direct_range(c);
        assert_eq!(lo, next, "class {c}");
        assert!(hi >= lo);
        for slot in lo..=hi {
            // The fast path's index for a size s is (s + 7) / 8.
            let s = slot * 8;
            assert_eq!(class_of(s), c, "slot {slot}");
        }
        next = hi + 1;
    }
    assert_eq!(next, DIRECT_SLOTS);
}

#[test]
fn spans_are_the_fewest_slices_with_little_tail() {
    for c in 0..NUM_CLASSES {
        let bs = class_size(c);
        let span = span_for(bs);
        assert!((1..=MAX_SPAN).contains(&span), "class {c}: span {span}");
        let bytes = span * SLICE_SIZE;
        assert!(bytes / bs >= 1, "class {c}");
        if bs <= SLICE_SIZE / 8 {
            assert_eq!(span, 1, "class {c}");
        } else if bs <= 128 * 1024 {
            // One slice fewer would not hold a block with a small tail.
            let fewer = (span - 1) * SLICE_SIZE;
            assert!(
                fewer < bs || (fewer % bs) * 8 > fewer,
                "class {c}: span {span} is not the fewest"
            );
        } else {
            assert_eq!(bytes % bs, 0, "class {c}: pages above 128 KiB are exact");
        }
        assert!((bytes % bs) * 8 <= bytes, "class {c}: tail waste over 1/8");
    }
}

/// A full page goes back to its class's queue once a thirty-second of its
/// blocks are free, so blocks freed here and there among live ones serve
/// new allocations before a new page is made. Freeing one block in sixteen
/// (more than a thirty-second, less than the eighth it took before) and
/// allocating as many again makes no page; with an eighth it made one.
#[test]
fn sparse_frees_in_full_pages_are_reused() {
    let made = std::thread::spawn(|| {
        let n = 8 * 1024;
        let mut v: std::vec::Vec<*mut u8> = (0..n).map(|_| crate::alloc::malloc(64, 8)).collect();
        assert!(v.iter().all(|p| !p.is_null()));
        for p in v.iter().step_by(16) {
            // SAFETY: live blocks from malloc, freed once.
            unsafe { crate::alloc::free(*p, 64) };
        }
        let before = crate::stats::thread_stats().pages_obtained;
        for p in v.iter_mut().step_by(16) {
            *p = crate::alloc::malloc(64, 8);
            assert!(!p.is_null());
        }
        let made = crate::stats::thread_stats().pages_obtained - before;
        for p in v {
            // SAFETY: live blocks from malloc, freed once.
            unsafe { crate::alloc::free(p, 64) };
        }
        made
    })
    .join()
    .unwrap();
    assert_eq!(
        made, 0,
        "pages made while freed blocks waited in full pages"
    );
}

/// An emptied page that is the only one of its class stays while a loop
/// frees and allocates one block of the class, and is freed after a few
/// rounds of the heap needing new pages for other classes (see `kept`).
#[test]
fn kept_empty_pages_expire() {
    let (churn_pages, kept, after) = std::thread::spawn(|| {
        let size = 6656;
        let c = class_of(size);
        assert!(size > DIRECT_MAX);
        let pages = |c: usize| crate::stats::thread_stats().classes[c].pages;
        // A block from a page of the class (a block the heap profiler
        // sampled would have a mapping of its own: try again).
        let mut p = ptr::null_mut();
        for _ in 0..64 {
            p = crate::alloc::malloc(size, 8);
            assert!(!p.is_null());
            if pages(c) == 1 {
                break;
            }
        }
        assert_eq!(pages(c), 1, "no page of the class");
        // SAFETY: a live block from malloc, freed once.
        unsafe { crate::alloc::free(p, size) };
        let obtained = crate::stats::thread_stats().pages_obtained;
        for _ in 0..1000 {
            let q = crate::alloc::malloc(size, 8);
            assert!(!q.is_null());
            // SAFETY: as above.
            unsafe { crate::alloc::free(q, size) };
        }
        let churn_pages = crate::stats::thread_stats().pages_obtained - obtained;
        let kept = pages(c);
        // Rounds: fill pages of 64-byte blocks until the heap has made more
        // new pages than a kept page of this size waits for.
        let start = crate::stats::thread_stats().pages_obtained;
        let mut v = std::vec::Vec::new();
        while crate::stats::thread_stats().pages_obtained - start
            <= usize::from(kept::KEEP_ROUNDS_BIGGER)
        {
            let q = crate::alloc::malloc(64, 8);
            assert!(!q.is_null());
            v.push(q);
        }
        let after = pages(c);
        for q in v {
            // SAFETY: live blocks from malloc, freed once.
            unsafe { crate::alloc::free(q, 64) };
        }
        (churn_pages, kept, after)
    })
    .join()
    .unwrap();
    assert_eq!(churn_pages, 0, "a loop on one block made pages");
    assert_eq!(kept, 1, "the emptied page was not kept");
    assert_eq!(after, 0, "the kept page outlived its rounds");
}

/// The `direct` slot of every small request: the size rounded up to the
/// alignment and to 8, over 8; and the class its slot serves holds the
/// request at that alignment.
#[test]
fn direct_slots_round_to_the_alignment_and_to_8() {
    for align in [1, 2, 4, 8, 16] {
        for size in 0..=DIRECT_MAX {
            let slot = direct_slot(size, align);
            assert_eq!(
                slot,
                size.next_multiple_of(align).div_ceil(8),
                "size {size} align {align}"
            );
            let c = (0..crate::size_class::NUM_CLASSES)
                .find(|&c| {
                    let (lo, hi) = direct_range(c);
                    (lo..=hi).contains(&slot)
                })
                .expect("a class serves every slot");
            let b = class_size(c);
            assert!(
                b >= size && b % align == 0,
                "size {size} align {align}: {b}"
            );
        }
    }
}
