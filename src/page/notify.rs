//! When the owner's frees need its attention: a page sends a free to the
//! slow path when it leaves `used` at or below `notify_at`. That is 0
//! normally (the page became empty), the unfull mark on the full list,
//! and every free while the page has blocks on no list (purged or shared
//! OS pages) or fresh zero blocks on `free` (`FREE_ZERO`, which the first
//! owner's free must clear). One compare on the fast path covers them all.

use super::{Page, FREE_ZERO, IN_FULL, NOTIFY_EVERY};

impl Page {
    /// Puts the page on the full list's terms: flagged [`IN_FULL`], and
    /// its owner's frees noticed once `unfull_at` blocks or fewer are used.
    /// While the page has purged OS pages, every free is noticed instead
    /// (see [`notify_every_free`](Self::notify_every_free)).
    #[inline]
    pub(crate) fn set_full(&mut self, unfull_at: u32) {
        // `free` is empty: nothing for the flag to describe, and the
        // notice it needs (see `FREE_ZERO`) is replaced here.
        self.flags = (self.flags | IN_FULL) & !FREE_ZERO;
        self.used.set_notify_at(if self.off_list() {
            NOTIFY_EVERY
        } else {
            unfull_at
        });
    }

    /// Takes the page off the full list's terms.
    #[inline]
    pub(crate) fn clear_full(&mut self) {
        self.flags &= !IN_FULL;
        self.used
            .set_notify_at(if self.off_list() || self.has(FREE_ZERO) {
                NOTIFY_EVERY
            } else {
                0
            });
    }

    /// `free` is fresh from the OS, zero but for its links ([`FREE_ZERO`]):
    /// the owner's next free, which puts a used block on it, must clear the
    /// flag, so every free is noticed until then (see
    /// [`end_free_zero`](Self::end_free_zero)). Only the first free after a
    /// carve of fresh memory pays for it.
    #[inline]
    pub(super) fn start_free_zero(&mut self) {
        self.flags |= FREE_ZERO;
        self.used.set_notify_at(NOTIFY_EVERY);
    }

    /// Clears [`FREE_ZERO`] (`free` may hold used blocks from now on) and
    /// the notice of every free that went with it, unless the page needs
    /// that notice for another reason (purged or shared OS pages) or is on
    /// the full list's terms (which set their own mark). Owner only.
    #[inline]
    pub(crate) fn end_free_zero(&mut self) {
        if !self.has(FREE_ZERO) {
            return;
        }
        self.flags &= !FREE_ZERO;
        if !self.off_list() && !self.has(IN_FULL) {
            self.used.set_notify_at(0);
        }
    }

    /// Whether some free blocks of the page are on no list: it has purged
    /// OS pages, or OS pages shared with other pages (see `share`). Such a
    /// page sends every free of its owner to the slow path, which checks
    /// that the block is not one of them.
    #[inline]
    pub(crate) fn off_list(&self) -> bool {
        self.purged.get() != 0 || self.shared != 0
    }

    /// Aborts if `b`, a block of this page just freed, lies in a purged OS
    /// page: it was free already (its freed mark went with the memory).
    /// Owner only.
    #[inline]
    pub(crate) fn check_not_purged(&self, b: *const u8) {
        if self.in_purged(b) {
            crate::fatal(
                "double free or corruption (a free block whose memory was given back was freed again)",
                b,
            );
        }
    }

    /// [`check_not_purged`](Self::check_not_purged) for a block about to be
    /// reallocated.
    #[inline]
    pub(crate) fn check_not_purged_realloc(&self, b: *const u8, owner: bool) {
        if if owner {
            self.in_purged(b)
        } else {
            self.in_purged_os_pages(b)
        } {
            crate::fatal(
                "realloc of a freed block (a free block whose memory was given back)",
                b,
            );
        }
    }

    /// Sends every free of the owner (and every batched free it settles) to
    /// the heap's free slow path, which makes sure the block is not in a
    /// purged OS page: such a block is free already, and its freed mark
    /// went with the memory, so only this check catches a second free of
    /// it (see `purge`). Only pages with purged OS pages, sparse pages
    /// whose frees are rare, pay for it.
    #[inline]
    pub(crate) fn notify_every_free(&mut self) {
        self.used.set_notify_at(NOTIFY_EVERY);
    }

    /// The page has no purged OS page any more: back to the terms of the
    /// full list, conservatively (a page on it is noticed at every free
    /// until its owner takes it off, which resets the mark).
    #[inline]
    pub(crate) fn end_notify_every_free(&mut self) {
        if !self.has(IN_FULL) && !self.has(FREE_ZERO) {
            self.used.set_notify_at(0);
        }
    }
}
