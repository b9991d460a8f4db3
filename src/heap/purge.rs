//! When a heap gives its free memory back to the OS: the purge policy.
//!
//! An empty page returns its slices to its segment, where the part it touched
//! stays resident ("dirty"), so that the next page cut there costs no page
//! faults. Dirty bytes beyond the heap's budget (see [`Heap::dirty_budget`]),
//! or older than the purge delay (option `purge_delay_ms`), are purged with `madvise`; a wholly free
//! segment goes to a small process-wide cache or is unmapped, unless it is
//! the only one the heap keeps in reserve. Past the soft limit (option
//! `limit_soft`) every dirty slice is purged at the next check, with no
//! delay and no budget.

use super::Heap;
use crate::options::purge_delay_ms;
use crate::os;
use crate::segment::{self, Segment, SLICE_SIZE};

impl Heap {
    /// Unlinks and unmaps a wholly free segment of ours. The caller keeps
    /// `free_segments` right: it counts segments kept in reserve, and a segment
    /// released as soon as it empties was never counted.
    pub(super) unsafe fn release_segment(&mut self, s: *mut Segment) {
        // SAFETY: `s` is ours, on the avail list, with no page in use.
        unsafe {
            self.avail.remove(s);
            let dirty = (*s).dirty_bytes(u64::MAX);
            self.dirty_bytes -= dirty;
            self.k().dirty_bytes.sub(dirty);
            Segment::release(s);
        }
    }

    /// Purges the dirty slices when they hold more than an eighth of the used
    /// memory (and at least the option `purge_min`), or when they have waited
    /// the purge delay (option `purge_delay_ms`): memory freed and soon reused costs no system call,
    /// and memory left free goes back to the OS shortly.
    /// Never releases `keep` (the segment the caller is working in).
    pub(super) fn maybe_purge(&mut self, keep: *mut Segment) {
        if self.dirty_bytes == 0 {
            return;
        }
        // What a purge could not give back does not count against the
        // budget, or every slow path would purge again for nothing.
        if self.dirty_bytes > self.dirty_budget() + self.stuck_dirty {
            self.purge_all(keep);
            return;
        }
        if os::past_soft_limit() {
            // Purge harder: no delay, no budget, no kept segments.
            self.purge_all(keep);
            segment::trim_free_segments();
            return;
        }
        let now = os::now_ms();
        if self.purge_at == 0 {
            self.purge_at = now + purge_delay_ms();
        } else if now >= self.purge_at {
            self.purge_all(keep);
            self.peak_slices = self.used_slices;
            segment::trim_free_segments();
        }
    }

    /// The background purger's purge of an idle heap (see `background`):
    /// what the heap's own timed purge would do at its next slow path. Its
    /// thread is kept out by the handshake meanwhile, so writing the heap's
    /// counters here is as if it wrote them.
    pub(crate) fn purge_idle(&mut self) {
        self.purge_all(core::ptr::null_mut());
        self.peak_slices = self.used_slices;
    }

    /// Resident free bytes the heap may keep: what it takes to grow back to
    /// its recent peak without faulting memory in again, plus room for churn
    /// below it, an eighth of what it uses or the option `purge_min`, whichever
    /// is more. The peak is forgotten at each timed purge, so memory a heap
    /// no longer needs goes back within the purge delay (option `purge_delay_ms`) of its next slow
    /// path. (With the room taken as the larger of the two rather than added,
    /// a heap that freed one big page and a little else purged everything,
    /// the big page included, and faulted it in again at its next use.)
    pub(super) fn dirty_budget(&self) -> usize {
        let regrow = self.peak_slices.saturating_sub(self.used_slices) * SLICE_SIZE;
        crate::options::PURGE_MIN
            .get()
            .max(self.used_slices * SLICE_SIZE / 8)
            + regrow
    }

    /// Releases every wholly free segment but one (never `keep`) and purges
    /// every dirty slice of the others (with huge pages on, those it can
    /// purge in whole huge pages, see `segment::purge_dirty`).
    pub(crate) fn purge_all(&mut self, keep: *mut Segment) {
        self.purge_at = 0;
        let mut s = self.avail.first;
        while !s.is_null() {
            // SAFETY: `s` is one of ours; dirty slices hold no live data. Its
            // successor is read before it may be released.
            unsafe {
                let next = (*s).next;
                if (*s).used_pages == 0 && s != keep && self.free_segments > 1 {
                    self.release_segment(s);
                    self.free_segments -= 1;
                } else {
                    let purged = segment::purge_dirty(&mut *s);
                    self.dirty_bytes -= purged;
                    self.k().dirty_bytes.sub(purged);
                }
                s = next;
            }
        }
        self.stuck_dirty = self.dirty_bytes;
    }
}
