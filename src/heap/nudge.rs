//! The background purger's nudge: how a heap whose timed sub-page purge is
//! due gets its owner to a slow path when the owner never takes one.
//!
//! Only the owner may touch its pages' lists, so only the owner can purge
//! inside its pages or mesh them (see `purge`), and it does so from its
//! allocation slow path. A thread that frees most of what it held and then
//! keeps allocating and freeing a little (a server after a burst of
//! deletions) is served from the free blocks of its current pages and never
//! reaches that path: its sparse pages stay resident for good (Redis after
//! deleting 90% of its keys at random gave back 1 MiB of 350 in 10 s).
//!
//! So the background purger (option `background`), holding the heap in its
//! handshake while the owner is outside its slow paths, points every
//! `direct` slot of the heap at the empty page ([`Heap::nudge`]). The
//! owner's next small allocation finds no block there and takes the slow
//! path, which puts the slots back ([`Heap::unnudge`]) and runs the step.
//!
//! The owner's fast path may read a slot while the purger writes it: it
//! reads the slots with a relaxed atomic load (a plain `mov`, as before),
//! and the purger writes them with relaxed atomic stores, so it sees either
//! its own page or the empty page, and may pop from either. Everything else
//! (the flag, and the owner's own plain writes of the slots in its slow
//! paths) is ordered by the handshake, whose protocol `tests/loom.rs`
//! checks. A thread that only frees keeps its slots pointed at the empty
//! page until it allocates, which costs nothing.

use super::{Heap, DIRECT_SLOTS};
use crate::size_class::NUM_CLASSES;
use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicPtr, Ordering};

impl Heap {
    /// Points every `direct` slot of heap `h` at its empty page, unless the
    /// heap is nudged already or its timed sub-page purge is not due at `now`
    /// (ms, `os::now_ms`). Returns whether it nudged.
    ///
    /// # Safety
    /// The caller (the background purger) holds `h`, a thread's heap, in its
    /// handshake: its owner runs no slow path, though its fast paths may run.
    pub(crate) unsafe fn nudge(h: *mut Heap, now: u64) -> bool {
        // SAFETY: per the contract the fields other than `direct` are ours
        // until the handshake is given back; `direct` is written only with
        // atomic stores, as its owner's fast path reads it atomically.
        unsafe {
            if (*h).nudged || !(*h).sub_purge_due(now) {
                return false;
            }
            let empty = (*h).empty_page;
            let slots = addr_of_mut!((*h).direct).cast::<*mut crate::page::Page>();
            // By raw pointer: no reference to the slots the owner reads.
            for i in 0..DIRECT_SLOTS {
                AtomicPtr::from_ptr(slots.add(i)).store(empty, Ordering::Relaxed);
            }
            (*h).nudged = true;
        }
        true
    }

    /// Puts the `direct` slots back after a [`nudge`](Self::nudge): each
    /// class's at its current page. Owner only, in its handshake.
    #[inline]
    pub(crate) fn unnudge(&mut self) {
        if self.nudged {
            self.unnudge_slow();
        }
    }

    #[cold]
    #[inline(never)]
    fn unnudge_slow(&mut self) {
        self.nudged = false;
        for c in 0..NUM_CLASSES {
            if !self.point_direct(c) {
                break;
            }
        }
    }
}
