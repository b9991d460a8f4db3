//! Giving a segment's dirty free slices back to the OS: `madvise` over
//! their resident parts, or with huge pages on only whole free huge pages.

use super::{run_mask, Segment, ALL_PAGE_SLICES, SLICES, SLICE_SIZE};
use crate::os;
use static_assertions::const_assert;

/// Purges the resident part of every dirty slice of `seg` (one `madvise` per
/// contiguous stretch) and returns how many bytes it gave back. With huge
/// pages in force (option `thp`, where the kernel has them), only whole
/// huge pages ([`purge_huge_pages`]).
pub(crate) fn purge_dirty(seg: &mut Segment) -> usize {
    purge_dirty_in(seg, u64::MAX)
}

/// [`purge_dirty`] of the dirty slices in `mask` only (all of them with huge
/// pages on, which are purged whole).
pub(crate) fn purge_dirty_in(seg: &mut Segment, mask: u64) -> usize {
    if os::huge_pages_in_force() {
        return purge_huge_pages(seg);
    }
    let mut purged = 0;
    let mut d = seg.dirty_slices & mask;
    // The stretch being gathered: [start, end).
    let (mut start, mut end) = (0usize, 0usize);
    while d != 0 {
        let k = d.trailing_zeros() as usize;
        d &= d - 1;
        let t = seg.touched[k] as usize;
        seg.touched[k] = 0;
        if t == 0 {
            continue;
        }
        let a = seg.slice_addr(k) as usize;
        if a != end {
            os::purge(start as *mut u8, end - start);
            start = a;
        }
        end = a + t;
        purged += t;
        if t < SLICE_SIZE {
            // The stretch cannot go on past an untouched tail.
            os::purge(start as *mut u8, end - start);
            (start, end) = (0, 0);
        }
    }
    os::purge(start as *mut u8, end - start);
    seg.dirty_slices &= !mask;
    purged
}

/// Slices per transparent huge page.
const HUGE_SLICES: usize = os::HUGE_PAGE / SLICE_SIZE;
const_assert!(SLICES % HUGE_SLICES == 0);
/// Slices that never hold a page but may be purged with their huge page:
/// the guard (with `secure`); never the header.
const GUARD_SLICES: u64 = !ALL_PAGE_SLICES & !1;

/// With huge pages on: purges, with one `madvise` each, the 2 MiB-aligned
/// huge pages of `seg` whose slices are all free and some dirty, and leaves
/// the dirty slices of the others resident. Purging part of a huge page
/// would split it into 4 KiB pages (and the kernel frees the purged part
/// only when it gets round to splitting it), which undoes what the option
/// asks for; the free slices left behind are reused first by the next
/// pages. The header's huge page is never purged while the segment is
/// mapped. Returns the bytes given back.
fn purge_huge_pages(seg: &mut Segment) -> usize {
    let mut purged = 0;
    for first in (0..SLICES).step_by(HUGE_SLICES) {
        let mask = run_mask(first, HUGE_SLICES);
        if (seg.free_slices | GUARD_SLICES) & mask != mask || seg.dirty_slices & mask == 0 {
            continue;
        }
        purged += seg.dirty_bytes(mask);
        seg.touched[first..first + HUGE_SLICES].fill(0);
        seg.dirty_slices &= !mask;
        os::purge(seg.slice_addr(first), os::HUGE_PAGE);
    }
    purged
}
