//! A heap's life apart from allocating: taking over segments of exited
//! threads, giving everything back (`collect`), handing its segments over
//! at thread exit, and the wholesale release of a first-class heap.

use super::{in_use_pages, Heap, ABANDONED_DIRTY_MAX};
use crate::atomic::Ordering;
use crate::segment::{self, registry, Segment, ABANDONED};
use crate::size_class::{class_size, NUM_CLASSES};
use core::ptr;

impl Heap {
    /// Takes over an abandoned segment: its pages join our queues, empty ones
    /// are freed. May release the segment if nothing in it is live.
    ///
    /// # Safety
    /// `s` was taken off the abandoned list by this thread.
    pub(crate) unsafe fn reclaim(&mut self, s: *mut Segment) {
        // SAFETY: we hold the only reference to the abandoned segment; the
        // previous owner's writes were published through the list's lock.
        unsafe {
            let seg = &mut *s;
            seg.set_owner(self.id(), self.tag, Ordering::Release);
            seg.thread_freed.clear();
            seg.next = ptr::null_mut();
            seg.prev = ptr::null_mut();
            self.dirty_bytes += seg.dirty_bytes(u64::MAX);
            seg.in_full_list = seg.free_slices == 0;
            if seg.in_full_list {
                self.full_segs.push(s);
            } else {
                self.avail.push(s);
            }
            let mut empty = 0u64;
            for i in in_use_pages(seg) {
                let p = ptr::addr_of_mut!(seg.pages[i]);
                self.collect_remote(p);
                (*p).clear_full();
                self.used_slices += (*p).span as usize;
                if (*p).used.get() == 0 {
                    empty |= 1 << i;
                } else {
                    self.enqueue(p, false);
                }
            }
            // Frees pushed on the aliases of merged pages (`mesh`): their
            // hints were just cleared.
            if self.collect_aliases(s) {
                return;
            }
            let mut released = false;
            while empty != 0 && !released {
                let i = empty.trailing_zeros() as usize;
                empty &= empty - 1;
                released = self.free_page(ptr::addr_of_mut!(seg.pages[i]));
            }
        }
    }

    /// Collects every page's frees, frees every empty page (even the last one
    /// of a class), takes over all abandoned segments, purges the free OS
    /// pages inside sparse pages (see `purge`), releases every wholly free
    /// segment and purges all dirty slices.
    ///
    /// # Safety
    /// Called by the owning thread.
    pub(crate) unsafe fn collect(&mut self) {
        // SAFETY: all pages and segments reached are ours.
        unsafe {
            loop {
                let s = ABANDONED.pop();
                if s.is_null() {
                    break;
                }
                self.reclaim(s);
            }
            self.collect_full_pages(0);
            self.free_empty_pages();
            self.purge_in_pages();
            let mut s = self.avail.first;
            while !s.is_null() {
                let next = (*s).next;
                if (*s).used_pages == 0 {
                    self.release_segment(s);
                    self.free_segments -= 1;
                }
                s = next;
            }
            self.purge_all(ptr::null_mut());
            segment::drain_free_segments();
        }
    }

    /// Readies the heap of an exiting thread to be kept whole for the next
    /// thread (see `park`): its counts are taken, so the statistics are
    /// exact once the thread is joined; pages that other threads' frees
    /// emptied are freed; the purge policy runs, so the heap keeps no more
    /// resident free memory than a running thread's would.
    ///
    /// # Safety
    /// Called by the owning thread as it exits.
    pub(crate) unsafe fn park(&mut self) {
        // SAFETY: per the contract, the heap and its pages are ours.
        unsafe {
            self.fold_all();
            self.collect_flagged();
        }
        self.maybe_purge(ptr::null_mut());
    }

    /// Takes over a parked heap for the calling thread: collects the frees
    /// other threads made into it while it waited, so pages they emptied
    /// are reused before anything new is cut.
    ///
    /// # Safety
    /// The caller took the heap off the parked list and makes it its own.
    pub(crate) unsafe fn adopt(&mut self) {
        self.next_free = ptr::null_mut();
        // SAFETY: per the contract, the heap and its pages are ours now.
        unsafe { self.collect_flagged() };
    }

    /// Gives up a heap parked for too long: collects the frees other threads
    /// made into it, frees its empty pages (the last page a class keeps too)
    /// and purges all its free memory (the free OS pages inside its sparse
    /// pages too, see `purge`), then abandons
    /// its segments as a thread exit would (see [`Heap::abandon`]), which
    /// then has nothing resident left to hand over but live pages.
    ///
    /// # Safety
    /// The caller took the heap off the parked list: no thread uses it.
    pub(crate) unsafe fn retire(&mut self) {
        // SAFETY: per the contract, the heap and its pages are the caller's.
        unsafe {
            self.collect_full_pages(0);
            self.free_empty_pages();
            self.purge_in_pages();
            self.purge_all(ptr::null_mut());
            // Segments that emptied above went to the process-wide cache
            // with their free memory still resident.
            segment::trim_free_segments();
            self.abandon();
        }
    }

    /// Collects the frees other threads made into the pages on the class
    /// queues and frees every page left empty, even the last one of a class.
    ///
    /// # Safety
    /// Called by the thread using the heap.
    unsafe fn free_empty_pages(&mut self) {
        for c in 0..NUM_CLASSES {
            let mut p = self.queues[c].first;
            while !p.is_null() {
                // SAFETY: pages on our queues are ours; the successor is read
                // before `p` may be freed.
                unsafe {
                    let next = (*p).next;
                    self.collect_remote(p);
                    if (*p).used.get() == 0 {
                        self.unlink(p);
                        self.free_page(p);
                    }
                    p = next;
                }
            }
        }
    }

    /// Hands every segment over at thread exit: empty pages are freed, wholly
    /// free segments go back to the OS, the rest are purged of dirty slices
    /// and abandoned for other threads to reclaim. Leaves the heap empty.
    ///
    /// # Safety
    /// Called once by the owning thread as it exits (or by the thread that
    /// took the heap off the parked list); no block of this heap may be
    /// allocated through it afterwards.
    pub(crate) unsafe fn abandon(&mut self) {
        for list in [self.avail, self.full_segs] {
            let mut s = list.first;
            while !s.is_null() {
                // SAFETY: `s` is ours until it is pushed or released.
                unsafe {
                    let next = (*s).next;
                    let seg = &mut *s;
                    for i in in_use_pages(seg) {
                        let p = ptr::addr_of_mut!(seg.pages[i]);
                        // Counted here: whoever reclaims the page counts on
                        // from what it finds.
                        self.fold(p, true);
                        self.collect_remote(p);
                        (*p).clear_full();
                        // No longer on a queue of ours (see `defrag`).
                        (*p).set_current(false);
                        (*p).next = ptr::null_mut();
                        (*p).prev = ptr::null_mut();
                        if (*p).used.get() == 0 {
                            let span = (*p).span as usize;
                            let touched = self.touched_on_free(s, i, p);
                            let resident = seg.free_run(i, span, touched);
                            let k = self.k();
                            k.class[(*p).class as usize].pages.sub(1);
                            k.pages_returned.add(1);
                            k.used_slices.sub(span);
                            k.dirty_bytes.add(resident);
                            (*p).close();
                            seg.used_pages -= 1;
                        }
                    }
                    seg.next = ptr::null_mut();
                    seg.prev = ptr::null_mut();
                    seg.in_full_list = false;
                    if seg.used_pages == 0 {
                        self.k().dirty_bytes.sub(seg.dirty_bytes(u64::MAX));
                        Segment::release(s);
                    } else {
                        // Whoever reclaims the segment purges its free slices
                        // by its own policy (and its counters take them over);
                        // only when many wait unclaimed are they purged now,
                        // to bound what they hold.
                        if ABANDONED.len() >= ABANDONED_DIRTY_MAX {
                            self.k().dirty_bytes.sub(segment::purge_dirty(seg));
                        }
                        // Release: our page writes happen-before the reclaimer's
                        // reads (it also synchronises through the list's lock).
                        seg.set_owner(0, registry::NO_TAG, Ordering::Release);
                        ABANDONED.push(s);
                    }
                    s = next;
                }
            }
        }
        let empty = self.empty_page;
        self.reset(empty);
    }
    /// Frees every page at once, live blocks or not, without visiting the
    /// blocks: the drop (`keep` false) or reset (`keep` true) of a
    /// first-class heap. Frees other threads pushed are collected first, so
    /// the counters stay exact. Segments are given back, or with `keep` kept
    /// wholly free, their memory resident for the refill that usually follows
    /// a reset, under the usual purge policy (the budget to grow back to the
    /// peak, purged 100 ms after the next slow path). Leaves the heap empty
    /// and ready to allocate again.
    ///
    /// # Safety
    /// Called by the one thread using this private heap, and no block of it
    /// is used afterwards (nor freed: its memory may belong to anyone now).
    pub(crate) unsafe fn release_all(&mut self, keep: bool) {
        debug_assert!(self.private);
        let mut kept: *mut Segment = ptr::null_mut();
        // Live blocks per class, counted from the pages (exact) rather than
        // the counters (which other threads' frees of our blocks do not reach).
        let mut live = [0u32; NUM_CLASSES];
        for list in [self.avail, self.full_segs] {
            let mut s = list.first;
            while !s.is_null() {
                // SAFETY: `s` is ours until released; its successor is read
                // first. Its pages are ours, and once their remote frees are
                // collected no other thread refers to them (the caller's
                // contract: no block is live any more).
                unsafe {
                    let next = (*s).next;
                    let seg = &mut *s;
                    for i in in_use_pages(seg) {
                        let p = ptr::addr_of_mut!(seg.pages[i]);
                        self.fold(p, true);
                        self.collect_remote(p);
                        if let Some(n) = live.get_mut((*p).class as usize) {
                            *n = n.wrapping_add((*p).used.get());
                        }
                        let span = (*p).span as usize;
                        let touched = self.touched_to_free(seg, i, p);
                        let resident = seg.free_run(i, span, touched);
                        let k = self.k();
                        k.class[(*p).class as usize].pages.sub(1);
                        k.pages_returned.add(1);
                        k.used_slices.sub(span);
                        k.dirty_bytes.add(resident);
                        (*p).close();
                        (*p).set_current(false);
                        (*p).used.set(0);
                        (*p).next = ptr::null_mut();
                        (*p).prev = ptr::null_mut();
                        seg.used_pages -= 1;
                    }
                    seg.next = ptr::null_mut();
                    seg.prev = ptr::null_mut();
                    seg.in_full_list = false;
                    seg.thread_freed.clear();
                    if keep {
                        seg.next = kept;
                        kept = s;
                    } else {
                        self.k().dirty_bytes.sub(seg.dirty_bytes(u64::MAX));
                        Segment::release(s);
                    }
                    s = next;
                }
            }
        }
        let k = self.k();
        for (c, &n) in live.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let row = &k.class[c];
            row.frees.add(n as usize);
            // What the live blocks asked for is what this heap counted and
            // its own frees did not take back; exact unless some block was
            // freed through another allocator (whose thread took its size
            // off its own counters), hence the bound by the blocks' sizes.
            let requested = (row.requested.get() as isize).max(0) as usize;
            row.requested.sub(requested.min(n as usize * class_size(c)));
        }
        let (empty, peak) = (self.empty_page, self.peak_slices);
        self.reset(empty);
        self.peak_slices = peak;
        while !kept.is_null() {
            // SAFETY: our segments, now with no page in use; their resident
            // free slices are already in the counters' `dirty_bytes`.
            unsafe {
                let next = (*kept).next;
                self.dirty_bytes += (*kept).dirty_bytes(u64::MAX);
                self.free_segments += 1;
                self.avail.push(kept);
                kept = next;
            }
        }
        self.maybe_purge(ptr::null_mut());
    }

    /// Resident free bytes the heap keeps in its segments' free slices.
    pub(crate) fn dirty(&self) -> usize {
        self.dirty_bytes
    }

    /// Segments this heap owns.
    pub(crate) fn segment_count(&self) -> usize {
        let mut n = 0;
        for list in [self.avail, self.full_segs] {
            let mut s = list.first;
            while !s.is_null() {
                n += 1;
                // SAFETY: our segments, read by the thread using the heap.
                s = unsafe { (*s).next };
            }
        }
        n
    }
}
