//! Where a heap's pages come from and where they go: a new page is cut
//! from the free slices of the heap's segments, else from a segment of an
//! exited thread it takes over, else (after checking its full pages for
//! frees) from a new segment; an empty page gives its slices back to its
//! segment, and a wholly free segment goes back beyond the one kept in
//! reserve. What happens to the dirty slices afterwards is `purge`'s.

use super::{span_for, Heap, RECLAIM_TRIES};
use crate::page::{Page, FRESH_TAIL, IN_USE};
use crate::segment::{self, Segment, ABANDONED, SLICE_SIZE};
use crate::size_class::CLASS_SIZES;
use core::ptr;

impl Heap {
    /// A new page of class `c`: from our segments' free slices, else from a
    /// reclaimed abandoned segment, else (after checking every full page for
    /// frees) from a new segment.
    pub(super) unsafe fn new_page(&mut self, c: usize) -> *mut Page {
        let span = span_for(CLASS_SIZES[c] as usize);
        self.expire_kept(c);
        self.maybe_purge(ptr::null_mut());
        // SAFETY: every segment reached is one of ours (or just became ours).
        unsafe {
            if let Some(p) = self.page_from_segments(c, span) {
                return p;
            }
            let tries = if self.private { 0 } else { RECLAIM_TRIES };
            for _ in 0..tries {
                let s = ABANDONED.pop();
                if s.is_null() {
                    break;
                }
                self.reclaim(s);
                // Reclaimed pages of this class may have room.
                let p = self.queues[c].first;
                if !p.is_null() && self.refill(p) {
                    return p;
                }
                if let Some(p) = self.page_from_segments(c, span) {
                    return p;
                }
            }
            if self.collect_full_pages(c) {
                let p = self.queues[c].first;
                if !p.is_null() && self.refill(p) {
                    return p;
                }
                if let Some(p) = self.page_from_segments(c, span) {
                    return p;
                }
            }
            self.page_from_new_segment(c, span)
        }
    }

    /// Looks for `span` free slices in our segments.
    pub(super) unsafe fn page_from_segments(&mut self, c: usize, span: usize) -> Option<*mut Page> {
        let mut s = self.avail.first;
        while !s.is_null() {
            // SAFETY: `s` is one of our segments.
            unsafe {
                if let Some(i) = (*s).find_run(span) {
                    let p = self.init_page(s, i, span, c);
                    // Null: past the memory limit.
                    return (!p.is_null()).then_some(p);
                }
                s = (*s).next;
            }
        }
        None
    }

    /// Checks every full page for frees by other threads (the flags can miss
    /// one, see the module docs). Returns whether any page came back.
    pub(super) unsafe fn collect_full_pages(&mut self, _c: usize) -> bool {
        let mut any = false;
        let mut p = self.full.first;
        while !p.is_null() {
            // SAFETY: pages on the full list are in-use pages of ours; the
            // successor is read before `p` may be freed.
            unsafe {
                let next = (*p).next;
                if self.collect_remote(p) > 0 {
                    any = true;
                    // Before growing, any free block is worth reusing.
                    self.settle(p, 1);
                }
                p = next;
            }
        }
        any
    }

    /// Makes slices `i..i + span` of `s` a page of class `c`, current in its
    /// queue; null if that would pass the memory limit.
    pub(super) unsafe fn init_page(
        &mut self,
        s: *mut Segment,
        i: usize,
        span: usize,
        c: usize,
    ) -> *mut Page {
        // SAFETY: `s` is ours, and the run is free, so no one else refers to it.
        unsafe {
            if !self.may_commit(s, i, span) {
                return ptr::null_mut();
            }
            let seg = &mut *s;
            let resident = seg.take_run(i, span);
            self.dirty_bytes -= resident;
            seg.set_page(i, span);
            for k in &mut seg.slice_class[i..i + span] {
                *k = c as u8;
            }
            if seg.used_pages == 0 {
                self.free_segments -= 1;
            }
            seg.used_pages += 1;
            self.used_slices += span;
            self.peak_slices = self.peak_slices.max(self.used_slices);
            let k = self.k();
            k.class[c].pages.add(1);
            k.pages_obtained.add(1);
            k.used_slices.add(span);
            k.dirty_bytes.sub(resident);
            if seg.free_slices == 0 {
                self.avail.remove(s);
                self.full_segs.push(s);
                seg.in_full_list = true;
            }
            let bs = CLASS_SIZES[c] as usize;
            let start = seg.slice_addr(i);
            let p = ptr::addr_of_mut!(seg.pages[i]);
            debug_assert!((*p).thread_free.is_empty());
            (*p).reset(start, bs, Page::blocks_in(span * SLICE_SIZE, bs));
            (*p).class = c as u8;
            (*p).span = span as u8;
            // Slices never touched since they came from the OS or were
            // purged read zero.
            (*p).flags = IN_USE | if resident == 0 { FRESH_TAIL } else { 0 };
            self.enqueue(p, true);
            let ok = self.refill(p);
            debug_assert!(ok);
            p
        }
    }

    /// Gives an empty page's slices back to its segment. Returns whether the
    /// segment was released to the OS as a result.
    ///
    /// # Safety
    /// `p` is an in-use page of ours with `used == 0`, on no list.
    pub(super) unsafe fn free_page(&mut self, p: *mut Page) -> bool {
        // SAFETY: per the contract; the page's segment is one of ours.
        unsafe {
            self.fold(p, true);
            let s = segment::segment_of(p.cast());
            let seg = &mut *s;
            let i = seg.page_index(p);
            let span = (*p).span as usize;
            let touched = self.touched_on_free(s, i, p);
            let resident = seg.free_run(i, span, touched);
            (*p).close();
            seg.used_pages -= 1;
            self.dirty_bytes += resident;
            self.used_slices -= span;
            let k = self.k();
            k.class[(*p).class as usize].pages.sub(1);
            k.pages_returned.add(1);
            k.used_slices.sub(span);
            k.dirty_bytes.add(resident);
            if seg.in_full_list {
                self.full_segs.remove(s);
                self.avail.push(s);
                seg.in_full_list = false;
            }
            if seg.used_pages == 0 {
                // One wholly free segment stays in reserve; others go to the
                // process-wide cache, where any thread can pick them up.
                if self.free_segments >= 1 {
                    self.release_segment(s);
                    return true;
                }
                self.free_segments += 1;
            }
            // A defragmentation step checks once, at its end.
            if !self.moving {
                self.maybe_purge(s);
            }
            false
        }
    }
}
