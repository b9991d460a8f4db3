//! Where a block being moved goes (`defrag`): into the densest pages of its
//! class, never back into a page worth emptying.
//!
//! A page is worth emptying (`page::sparse`) when at most half of its blocks
//! are live. A page *can take* moved blocks when fewer than half of its
//! blocks are holes (carved and not in use): for a page carved to the end,
//! exactly when it is not sparse; a fresh page, whose room is mostly not
//! carved yet, always. So a block only ever moves from a page at most half
//! live into one more than half full or filling from fresh memory, and a
//! pass converges.
//!
//! The choice, in order: the current page of the class, if it can take
//! blocks; else the page with the most live blocks that can, among the
//! first [`SCAN`] pages of the class queue, made current; else a fresh page
//! from free slices of our segments or from a new segment (not a page of a
//! reclaimed segment, which is as often as not sparse). Pages found without
//! room on the way go to the full list, as `find_page` does. The search runs
//! only when the current page cannot take the block, so its cost is shared
//! by the blocks that fill a page.

// The slow path's helpers that the dense path shares (`pop_counted`,
// `park_full`, `page_from_new_segment`) live here too, to keep heap.rs short.
use super::{span_for, Heap};
use crate::page::{self, Page};
use crate::segment::{self, Segment};
use crate::size_class::CLASS_SIZES;
use core::ptr;

/// How many pages of a class queue one search for a dense page looks at.
const SCAN: usize = 16;

/// How many bytes of blocks a page taking moved blocks carves at a time,
/// four times what the ordinary path carves: a pass fills the page, so
/// carving ahead touches no memory it would not, and a quarter of the
/// slow calls remain (callgrind, the example's pass: 7,693 of them at 236
/// instructions each with 4 KiB). Not more than a quarter of a one-slice
/// page: carved blocks not yet in use are holes, and a page with half of
/// them holes can no longer take moves (`can_take`), so carving a whole
/// 64 KiB page at once left each fresh page after one block (tried
/// 2026-11-27: 58,000 page faults in the example's pass instead of about
/// 1,000, RSS after 1.65x the live bytes instead of 1.13x).
const DENSE_EXTEND_BYTES: usize = 4 * page::EXTEND_BYTES;

/// Whether page `p` can take moved blocks (see the module docs).
///
/// # Safety
/// `p` is an in-use page of the calling thread's heap.
#[inline]
unsafe fn can_take(p: *const Page) -> bool {
    // SAFETY: per the contract.
    unsafe {
        let holes = (*p).capacity.saturating_sub((*p).used.get());
        (holes as u64) * 2 < (*p).reserved as u64
    }
}

impl Heap {
    /// Pops a block of class `c` for a request counted as `requested` bytes
    /// from the current page of the class if it can take moved blocks and
    /// has one ready (the common case during a pass: what `dense_page`
    /// checks first, without its call and without collecting frees); null
    /// when it cannot, and the caller goes on to
    /// [`alloc_dense_slow`](Self::alloc_dense_slow). Touches only the page,
    /// as the allocation fast path does: no handshake with the background
    /// purger.
    ///
    /// # Safety
    /// `self` is the calling thread's own heap (not the empty one).
    #[inline]
    pub(crate) unsafe fn alloc_dense_ready(&mut self, c: usize, requested: usize) -> *mut u8 {
        // SAFETY: per the contract, the heap and its pages are ours.
        unsafe {
            let cur = self.queues[c].first;
            if !cur.is_null() && !(*cur).free.is_null() && can_take(cur) {
                return pop_counted(cur, requested);
            }
            ptr::null_mut()
        }
    }

    /// Pops a block of class `c` for a request counted as `requested` bytes
    /// from a dense page (see the module docs), searching for one: what
    /// [`alloc_dense_ready`](Self::alloc_dense_ready) leaves. It takes
    /// slices from segments and moves pages between lists, as an allocation
    /// slow path does: the caller holds the heap's handshake with the
    /// background purger. Null when out of memory.
    ///
    /// # Safety
    /// `self` is the calling thread's own heap (not the empty one), inside
    /// its handshake.
    #[inline(never)]
    pub(crate) unsafe fn alloc_dense_slow(&mut self, c: usize, requested: usize) -> *mut u8 {
        // SAFETY: per the contract, the heap and its pages are ours.
        unsafe { pop_counted(self.dense_page(c), requested) }
    }

    /// A page of class `c` that can take moved blocks, with a block on its
    /// `free` list; null when out of memory.
    unsafe fn dense_page(&mut self, c: usize) -> *mut Page {
        // SAFETY: every page reached is an in-use page of this heap.
        unsafe {
            let cur = self.queues[c].first;
            if !cur.is_null() && can_take(cur) && self.refill_by(cur, DENSE_EXTEND_BYTES) {
                return cur;
            }
            let (mut best, mut best_used) = (ptr::null_mut::<Page>(), 0);
            let mut p = cur;
            for _ in 0..SCAN {
                if p.is_null() {
                    break;
                }
                let next = (*p).next;
                // Other threads' frees still count as used: collect them
                // before calling a page full.
                if (*p).used.get() >= (*p).reserved && !self.refill(p) {
                    self.park_full(p);
                } else if can_take(p) && (best.is_null() || (*p).used.get() > best_used) {
                    (best, best_used) = (p, (*p).used.get());
                }
                p = next;
            }
            if !best.is_null() && self.refill_by(best, DENSE_EXTEND_BYTES) {
                if best != self.queues[c].first {
                    self.dequeue(best);
                    self.enqueue(best, true);
                }
                return best;
            }
            let span = span_for(CLASS_SIZES[c] as usize);
            if let Some(p) = self.page_from_segments(c, span) {
                return p;
            }
            self.page_from_new_segment(c, span)
        }
    }

    /// No block left in `p`: parks it on the full list until frees arrive.
    ///
    /// # Safety
    /// `p` is on its class queue.
    pub(super) unsafe fn park_full(&mut self, p: *mut Page) {
        // SAFETY: per the contract.
        unsafe {
            self.dequeue(p);
            (*p).set_full((*p).reserved - super::unfull_threshold(p));
            self.full.push_back(p);
        }
    }

    /// A page of class `c` spanning `span` slices at the start of a segment
    /// newly obtained (kept free or mapped); null when out of memory.
    pub(super) unsafe fn page_from_new_segment(&mut self, c: usize, span: usize) -> *mut Page {
        let s = segment::obtain(self.id(), self.tag);
        if s.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: a wholly free segment, ours now.
        unsafe {
            (*s).private = self.private;
            // A kept segment brings its resident free slices along.
            let dirty = (*s).dirty_bytes(u64::MAX);
            self.dirty_bytes += dirty;
            self.k().dirty_bytes.add(dirty);
            self.avail.push(s);
            self.free_segments += 1;
            self.init_page(s, 1, span, c)
        }
    }

    /// Whether `seg` is one of this heap's segments (walks them all).
    pub(crate) fn owns(&self, seg: *const Segment) -> bool {
        for list in [self.avail, self.full_segs] {
            let mut s = list.first;
            while !s.is_null() {
                if ptr::eq(s, seg) {
                    return true;
                }
                // SAFETY: our segments, read by the thread using the heap.
                s = unsafe { (*s).next };
            }
        }
        false
    }
}

/// Pops a block from `p`, a page the slow path found with a block on its
/// `free` list, and counts `requested` bytes; null when `p` is (out of
/// memory).
///
/// # Safety
/// `p` is null or a page of the calling thread's heap.
#[inline]
pub(super) unsafe fn pop_counted(p: *mut Page, requested: usize) -> *mut u8 {
    if p.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: per the contract.
    unsafe {
        let b = page::pop(p);
        (*p).note_alloc(requested);
        b
    }
}
