//! The heap's intrusive lists: a queue of pages (through `Page::next/prev`)
//! and a list of segments (through `Segment::next/prev`). Plain memory of
//! the owning heap.

use crate::page::Page;
use crate::segment::Segment;
use core::ptr;

#[derive(Clone, Copy)]
pub(super) struct PageQueue {
    pub(super) first: *mut Page,
    pub(super) last: *mut Page,
}

impl PageQueue {
    pub(super) const EMPTY: PageQueue = PageQueue {
        first: ptr::null_mut(),
        last: ptr::null_mut(),
    };

    /// # Safety
    /// `p` is a valid page on no list.
    pub(super) unsafe fn push_back(&mut self, p: *mut Page) {
        // SAFETY: `p` and the queue's pages are valid pages owned by this heap.
        unsafe {
            (*p).next = ptr::null_mut();
            (*p).prev = self.last;
            if self.last.is_null() {
                self.first = p;
            } else {
                (*self.last).next = p;
            }
        }
        self.last = p;
    }

    /// # Safety
    /// `p` is a valid page on no list.
    pub(super) unsafe fn push_front(&mut self, p: *mut Page) {
        // SAFETY: as in push_back.
        unsafe {
            (*p).prev = ptr::null_mut();
            (*p).next = self.first;
            if self.first.is_null() {
                self.last = p;
            } else {
                (*self.first).prev = p;
            }
        }
        self.first = p;
    }

    /// # Safety
    /// `p` is on this queue.
    pub(super) unsafe fn remove(&mut self, p: *mut Page) {
        // SAFETY: `p` and its neighbours are valid pages on this queue.
        unsafe {
            let (prev, next) = ((*p).prev, (*p).next);
            if prev.is_null() {
                self.first = next;
            } else {
                (*prev).next = next;
            }
            if next.is_null() {
                self.last = prev;
            } else {
                (*next).prev = prev;
            }
            (*p).next = ptr::null_mut();
            (*p).prev = ptr::null_mut();
        }
    }
}

/// A doubly linked list of segments, through `Segment::next/prev`.
#[derive(Clone, Copy)]
pub(super) struct SegList {
    pub(super) first: *mut Segment,
}

impl SegList {
    pub(super) const EMPTY: SegList = SegList {
        first: ptr::null_mut(),
    };

    /// # Safety
    /// `s` is a valid segment on no list.
    pub(super) unsafe fn push(&mut self, s: *mut Segment) {
        // SAFETY: `s` and the list's segments are valid and owned by this heap.
        unsafe {
            (*s).prev = ptr::null_mut();
            (*s).next = self.first;
            if !self.first.is_null() {
                (*self.first).prev = s;
            }
        }
        self.first = s;
    }

    /// # Safety
    /// `s` is on this list.
    pub(super) unsafe fn remove(&mut self, s: *mut Segment) {
        // SAFETY: `s` and its neighbours are valid segments on this list.
        unsafe {
            let (prev, next) = ((*s).prev, (*s).next);
            if prev.is_null() {
                self.first = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            (*s).next = ptr::null_mut();
            (*s).prev = ptr::null_mut();
        }
    }
}

impl super::Heap {
    /// The heap's segments, the `avail` list then `full_segs`. Each one's
    /// successor is read as it is yielded, so the caller may release the
    /// segment it was just given, but no other, and may move none between
    /// the lists while it walks.
    pub(super) fn segments(&self) -> impl Iterator<Item = *mut Segment> {
        let mut lists = [self.avail.first, self.full_segs.first];
        let mut at = 0;
        core::iter::from_fn(move || {
            while at < lists.len() {
                let s = lists[at];
                if !s.is_null() {
                    // SAFETY: per the contract, `s` is a live segment of
                    // the heap's, on the list being walked.
                    lists[at] = unsafe { (*s).next };
                    return Some(s);
                }
                at += 1;
            }
            None
        })
    }
}
