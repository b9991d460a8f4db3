//! Unit tests of `page`: the block-start check, popping and freeing.

use super::*;
use crate::segment::{MAX_SPAN, SEGMENT_SIZE, SLICE_SIZE};
use crate::size_class::{class_size, NUM_CLASSES};

/// The block-start check against division, for every class and every
/// offset in a segment (past any page's end too), with the page carved
/// whole; and at each capacity, for the blocks around its end.
#[test]
fn block_starts_are_exact_for_every_class_and_offset() {
    for c in 0..NUM_CLASSES {
        let d = class_size(c);
        let recip = block_start_recip(d);
        let e = recip.wrapping_mul(d as u64);
        assert!(e > 0 && e <= d as u64, "class {c}: e = {e}");
        let reserved = Page::blocks_in(MAX_SPAN * SLICE_SIZE, d) as u64;
        let limit = reserved * e;
        let mut r = 0; // n % d, kept as n counts up
        for n in 0..SEGMENT_SIZE as u64 {
            let start = r == 0 && n / (d as u64) < reserved;
            assert_eq!(
                n.wrapping_mul(recip) < limit,
                start,
                "class {c}, offset {n}"
            );
            r += 1;
            if r == d {
                r = 0;
            }
        }
        for cap in 0..=reserved {
            let limit = cap * e;
            for k in cap.saturating_sub(2)..(cap + 2) {
                let n = k * d as u64;
                assert_eq!(
                    n.wrapping_mul(recip) < limit,
                    k < cap,
                    "class {c}, cap {cap}, block {k}"
                );
            }
        }
    }
}

/// The 64-bit form of the reciprocal against the 128-bit definition, for
/// every block size it may be asked for.
#[test]
fn block_start_recip_is_floor_of_two_to_the_64_over_d_plus_one() {
    for d in 2..=1usize << 20 {
        let exact = ((1u128 << 64) / d as u128 + 1) as u64;
        assert_eq!(block_start_recip(d), exact, "d = {d}");
    }
}

#[test]
fn a_page_checks_its_pointers() {
    let mut mem = vec![0u64; 4096];
    let start = mem.as_mut_ptr().cast::<u8>();
    let mut page = Page::EMPTY;
    assert!(!page.is_block(start), "a page not in use has no block");
    let reserved = 4096 * 8 / 48;
    page.reset(start, 48, reserved as u32);
    // SAFETY: offsets inside `mem`.
    unsafe {
        assert!(page.is_block(start));
        assert!(page.is_block(start.add(48 * (reserved - 1))));
        assert!(!page.is_block(start.add(48 * reserved)), "past the page");
        assert!(!page.is_block(start.add(8)));
        assert!(!page.is_block(start.add(48 + 16)));
    }
    assert!(!page.is_block(start.wrapping_sub(48)));
    page.close();
    assert!(!page.is_block(start), "closed");
}

/// The owner's frees ask for attention when the page empties, and, on
/// the full list, only once enough blocks are free to move it back.
#[test]
fn frees_notify_at_empty_and_at_the_unfull_mark() {
    let mut blocks = [[0usize; 2]; 8];
    let mut page = Page::EMPTY;
    page.used.set(8);
    let mut free = |page: &mut Page, i: usize| {
        // SAFETY: a two-word block of our own, given to the page.
        unsafe { page.free_local(blocks[i].as_mut_ptr().cast(), 16) }
    };
    page.set_full(5);
    assert!(page.has(IN_FULL));
    assert!(!free(&mut page, 0), "7 used: still full");
    assert!(!free(&mut page, 1), "6 used: still full");
    assert!(free(&mut page, 2), "5 used: back to the queue");
    page.clear_full();
    assert!(!page.has(IN_FULL));
    assert!(!free(&mut page, 3));
    assert!(!free(&mut page, 4));
    assert!(!free(&mut page, 5));
    assert!(!free(&mut page, 6));
    assert!(free(&mut page, 7), "empty");
    assert_eq!(page.used.get(), 0);
}

/// A one-slice page of `bs`-byte blocks over fresh OS-page-aligned memory,
/// all carved and handed out: `(page, mapping)`. For the unit tests of
/// `page`'s submodules.
pub(super) fn full_page(bs: usize) -> (Page, *mut u8) {
    full_page_of(bs, 1)
}

/// [`full_page`] over `span` slices (unmap `span * SLICE_SIZE` bytes).
pub(super) fn full_page_of(bs: usize, span: usize) -> (Page, *mut u8) {
    let mem = crate::os::map_aligned(span * SLICE_SIZE, SLICE_SIZE);
    assert!(!mem.is_null());
    let mut page = Page::EMPTY;
    page.reset(mem, bs, Page::blocks_in(span * SLICE_SIZE, bs));
    page.span = span as u8;
    page.flags = IN_USE;
    let mut handed = 0;
    while page.refill_local() {
        // SAFETY: the page is ours.
        while !unsafe { pop(&mut page) }.is_null() {
            handed += 1;
        }
    }
    assert_eq!(handed, page.reserved);
    (page, mem)
}

/// `used` is kept as its distance to the mark: moving the mark keeps the
/// count, zeroed memory reads as no block in use, and with every free
/// noticed each one is, whatever the count.
#[test]
fn the_count_of_blocks_in_use_survives_its_mark_moving() {
    // SAFETY: `Used` is two integers; all zero is a valid value of each.
    let zeroed: Used = unsafe { core::mem::zeroed() };
    assert_eq!(zeroed.get(), 0);
    let mut blocks = [[0usize; 2]; 7];
    let mut page = Page::EMPTY;
    page.used.set(6);
    for mark in [3, NOTIFY_EVERY, 0, 5] {
        page.used.set_notify_at(mark);
        assert_eq!(page.used.get(), 6, "mark {mark}");
    }
    page.notify_every_free();
    for (i, b) in blocks[..6].iter_mut().enumerate() {
        // SAFETY: a two-word block of our own, given to the page.
        assert!(
            unsafe { page.free_local(b.as_mut_ptr().cast(), 16) },
            "free {i}"
        );
        assert_eq!(page.used.get(), 5 - i as u32);
    }
    page.used.inc();
    page.end_notify_every_free();
    assert_eq!(page.used.get(), 1);
    // SAFETY: as above.
    assert!(
        unsafe { page.free_local(blocks[6].as_mut_ptr().cast(), 16) },
        "empty"
    );
}

/// The counts taken without walking `free`: blocks freed by the owner go
/// on `free`, collected frees of other threads on `local_free`, and the
/// allocations are what left `free` either way.
#[test]
fn counts_are_exact_without_walking_the_free_list() {
    let bs = 64;
    let (mut page, mem) = full_page(bs);
    let n = page.reserved;
    let first = page.take_counts(true);
    assert_eq!((first.allocs, first.local_frees), (n, 0));
    let block = |k: u32| mem.wrapping_add(k as usize * bs);
    // SAFETY: each block is live and freed once, by the owner.
    unsafe {
        for k in 0..n / 2 {
            page.free_owner(block(k), bs);
        }
        for k in n / 2..n / 2 + 10 {
            page.free_collected(block(k));
        }
    }
    let after_frees = page.take_counts(true);
    assert_eq!((after_frees.allocs, after_frees.local_frees), (0, n / 2));
    for _ in 0..3 {
        // SAFETY: the page is ours.
        assert!(!unsafe { pop(&mut page) }.is_null());
    }
    let after_pops = page.take_counts(true);
    assert_eq!((after_pops.allocs, after_pops.local_frees), (3, 0));
    assert_eq!(page.free_len(), n / 2 - 3);
    assert_eq!(page.local_free_len(), 10);
    crate::os::unmap(mem, SLICE_SIZE);
}
