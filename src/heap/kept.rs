//! Empty pages kept for a while, after mimalloc's retired pages.
//!
//! When a free empties the only page of a class, the heap keeps the page:
//! freeing and allocating one block in a loop must not give a page back and
//! cut a new one each time. But a page kept for good strands its memory in a
//! class the program may not use again for long: C `mstress` allocates one
//! block in a hundred from forty-odd classes between 1 and 64 KiB, and with
//! every emptied page of those classes kept, its peak RSS was 14 MiB where
//! glibc's is 8 (2026-11-27). So a kept page waits only for a few rounds, a
//! round being each time the heap needs a new page (the moment its memory
//! would serve), and is then freed to its segment like any other empty page,
//! where any class can reuse its slices without page faults and the purge
//! policy gives them back in time. A loop on one block of a class needs no
//! new page, so its page stays. Pages of bigger blocks wait fewer rounds
//! ([`KEEP_ROUNDS_BIGGER`] against [`KEEP_ROUNDS_SMALL`], as mimalloc waits
//! a quarter as long for them): on C `mstress`, 16 rounds for all gave a peak
//! of 12.3 MiB, 16 and 2 gave 10.4-11.1 MiB.
//!
//! The heap keeps the range of classes that may hold a kept page
//! (`kept.0..=kept.1`); a round looks at the first page of each of
//! those classes only, so no pointer to a page is kept that could outlive
//! it: a page freed or merged since it was kept is simply not found.

use super::{Heap, DIRECT_MAX};
use crate::page::Page;
use crate::size_class::NUM_CLASSES;
use static_assertions::const_assert;

/// Rounds (new pages the heap needs) an empty, kept page of blocks up to
/// [`DIRECT_MAX`] waits for a block before it is freed.
pub(super) const KEEP_ROUNDS_SMALL: u8 = 16;
/// The same for bigger blocks: a kept page strands at least one block's
/// worth of touched memory, and gives many fewer blocks for each page cut.
pub(super) const KEEP_ROUNDS_BIGGER: u8 = 2;

// The range of classes is kept in bytes.
const_assert!(NUM_CLASSES <= u8::MAX as usize);

/// An empty range of classes.
pub(super) const NONE: (u8, u8) = (u8::MAX, 0);

impl Heap {
    /// Keeps `p`, the only page of its class `c`, which a free just emptied,
    /// for a few rounds.
    ///
    /// # Safety
    /// `p` is an in-use page of this heap, the only one of class `c`.
    pub(super) unsafe fn keep_empty(&mut self, p: *mut Page, c: usize) {
        // SAFETY: per the contract.
        unsafe {
            (*p).kept = if (*p).block_size <= DIRECT_MAX {
                KEEP_ROUNDS_SMALL
            } else {
                KEEP_ROUNDS_BIGGER
            };
        }
        let c = c as u8;
        self.kept.0 = self.kept.0.min(c);
        self.kept.1 = self.kept.1.max(c);
    }

    /// A round: each kept page still empty and still the only page of
    /// its class waits one round less, and is freed when it has waited them
    /// all; a page that has blocks again is kept no more. Class `now`,
    /// about to get a page, is left alone.
    pub(super) fn expire_kept(&mut self, now: usize) {
        let (lo, hi) = self.kept;
        if lo > hi {
            return;
        }
        let mut left = NONE;
        for c in lo as usize..=hi as usize {
            let q = self.queues[c];
            let p = q.first;
            // SAFETY: a queue's pages are in-use pages of this heap.
            unsafe {
                if p.is_null() || (*p).kept == 0 {
                    continue;
                }
                if c == now || (*p).used.get() != 0 || q.last != p {
                    (*p).kept = 0;
                    continue;
                }
                (*p).kept -= 1;
                if (*p).kept == 0 {
                    self.unlink(p);
                    self.free_page(p);
                } else {
                    left = (left.0.min(c as u8), left.1.max(c as u8));
                }
            }
        }
        self.kept = left;
    }
}
