//! When a heap gives its free memory back to the OS: the purge policy.
//!
//! An empty page returns its slices to its segment, where the part it touched
//! stays resident ("dirty"), so that the next page cut there costs no page
//! faults. Dirty bytes beyond the heap's budget (see [`Heap::dirty_budget`])
//! are purged with `madvise`, all at once; so are, at the timed purge that
//! runs every purge delay (option `purge_delay_ms`) while the heap holds
//! dirty slices, those that have stayed free since the previous timed
//! purge, one to two delays (see [`Heap::purge_aged`]); a wholly free
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

    /// Purges the dirty slices when they hold more than the budget (see
    /// [`dirty_budget`](Self::dirty_budget)), and at the timed purge those
    /// that have waited a purge delay (option `purge_delay_ms`; see
    /// [`timed_purge`](Self::timed_purge)): memory freed and soon reused
    /// costs no system call, and memory left free goes back to the OS shortly.
    /// Never releases `keep` (the segment the caller is working in).
    pub(super) fn maybe_purge(&mut self, keep: *mut Segment) {
        if self.dirty_bytes == 0 {
            return;
        }
        // What a purge could not give back does not count against the
        // budget, or every slow path would purge again for nothing.
        if self.dirty_bytes > self.dirty_budget() + self.stuck_dirty {
            // What has waited a purge delay first: often enough, and then
            // the memory freed just now stays for reuse.
            self.purge_aged(keep);
            if self.dirty_bytes > self.dirty_budget() + self.stuck_dirty {
                self.purge_all(keep);
            }
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
            self.timed_purge(keep, now);
            self.peak_slices = self.used_slices;
            segment::trim_free_segments();
        }
    }

    /// The timed purge: gives back the dirty slices that have stayed free
    /// since the previous one (a purge delay at least), and marks the other
    /// dirty slices, to go at the next one, a purge delay later, unless a
    /// page takes them by then. Purging every dirty slice here gave back
    /// memory freed a moment before with memory idle for the whole delay,
    /// and a heap that frees and cuts pages all the time (larson) faulted
    /// much of it in again at once.
    pub(super) fn timed_purge(&mut self, keep: *mut Segment, now: u64) {
        self.purge_aged(keep);
        let mut s = self.avail.first;
        while !s.is_null() {
            // SAFETY: `s` is one of ours.
            unsafe {
                (*s).aged_slices = (*s).dirty_slices;
                s = (*s).next;
            }
        }
        self.purge_at = if self.dirty_bytes > 0 {
            now + purge_delay_ms()
        } else {
            0
        };
    }

    /// Purges the dirty slices marked at the last timed purge that are still
    /// free, and releases every wholly free segment but one (never `keep`),
    /// as [`purge_all`](Self::purge_all) does.
    fn purge_aged(&mut self, keep: *mut Segment) {
        let mut s = self.avail.first;
        while !s.is_null() {
            // SAFETY: `s` is one of ours; dirty slices hold no live data. Its
            // successor is read before it may be released.
            unsafe {
                let next = (*s).next;
                if (*s).used_pages == 0 && s != keep && self.free_segments > 1 {
                    self.release_segment(s);
                    self.free_segments -= 1;
                } else if (*s).aged_slices != 0 {
                    let seg = &mut *s;
                    let purged = segment::purge_dirty_in(seg, seg.aged_slices);
                    self.dirty_bytes -= purged;
                    self.k().dirty_bytes.sub(purged);
                }
                s = next;
            }
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
