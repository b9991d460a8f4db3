//! When a heap gives its free memory back to the OS: the purge policy.
//!
//! An empty page returns its slices to its segment, where the part it touched
//! stays resident ("dirty"), so that the next page cut there costs no page
//! faults. Dirty bytes beyond the heap's budget (see [`Heap::dirty_budget`];
//! the oldest first, down to three quarters of it), or free for longer than
//! the purge delay (option `purge_delay_ms`; each slice's time is kept in
//! its segment), are purged with `madvise`; a wholly free
//! segment goes to a small process-wide cache or is unmapped, unless it is
//! the only one the heap keeps in reserve. Past the soft limit (option
//! `limit_soft`) every dirty slice is purged at the next check, with no
//! delay and no budget.
//!
//! Inside pages in use, the OS pages that hold no live block go back too
//! (sub-page purge, the mechanism in `page::purge`), on the same terms:
//! the purge delay after a full page got room back (a page coming back from
//! the full list arms it, see [`Heap::arm_sub_purge`]; a heap whose pages
//! never fill never needs it), at once past the soft limit, and on
//! `collect()`. Only pages that are at most half used (for `collect()`,
//! pages of more than one slice with any free block: they hold one to
//! seven blocks of over 8 KiB, each worth a system call, and only the
//! timed purge has to fear taking back memory about to be reused), never
//! the current page of a class, and only with huge pages
//! off (purging 4 KiB of a huge page splits it) and the option `sub_purge`
//! on (the default). The background purger
//! does not do it: it may not touch the lists of a page whose owner's fast
//! paths run.
//!
//! With the option `mesh` on, the same timed step meshes too (issue 13),
//! class by class as `collect()` does for the whole heap (whole pages, the
//! sub-page purge, then OS pages), its work bounded with the purge's, from
//! an allocation slow path (never a free's: see [`Heap::maybe_purge`]). The
//! background purger does not mesh, for the same reason: its handshake keeps
//! the owner's slow paths out, not its fast paths, and the owner's `free`
//! pushes onto any page's list, and its `malloc` pops from the current
//! ones, without a lock or an atomic.

use super::window::{another_window, STEP_US};
use super::{carved_bytes, Heap};
use crate::options::purge_delay_ms;
use crate::os;
use crate::page::{self, Page};
use crate::segment::{self, Segment, SLICE_SIZE};
use crate::size_class::NUM_CLASSES;

/// A timed step that ran for `t` is followed by no meshing for
/// `STEP_DUTY * t`, and a pass it left unfinished goes on no sooner, so
/// that the timed steps take at most about 1/(STEP_DUTY + 1) of the
/// owner's time, whatever the heap's size: a program that frees at random
/// arms a step at every page that gets room back. Each step is bounded in
/// time (`window::STEP_US`); before that bound, one took a class whole and
/// could be long: the first of `tests/mesh_schedule.rs` took 85 ms (2,166
/// OS pages merged). A cap of 32 (3%) postponed the next step past what
/// that test waits for. Under callgrind (a slowed clock, so long steps),
/// `segalloc-bench --only fragment` with `SEGALLOC_MESH=1` ran 873 M
/// instructions with the cap against 1,627 M without (README, Meshing).
const STEP_DUTY: u64 = 8;

/// When the step after one that began at `start` and ended at `end` may
/// run (µs).
fn resume_at(start: u64, end: u64) -> u64 {
    end.saturating_add(end.saturating_sub(start).saturating_mul(STEP_DUTY))
}

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
    ///
    /// Out of line, as it was before [`maybe_purge_slices`](Self::maybe_purge_slices)
    /// was split from it: the free and allocation slow paths call it, and
    /// the C library's start-up code layout (`link/hot-text.ld`) names it.
    #[inline(never)]
    pub(super) fn maybe_purge(&mut self, keep: *mut Segment) {
        if self.sub_purge_at() != 0 {
            self.sub_purge_step(keep);
        }
        self.maybe_purge_slices(keep);
    }

    /// The timed sub-page purge (and meshing) if it is due, for every
    /// allocation slow path, not only those that need a new page: a program
    /// that frees most of its blocks at random and then allocates from what
    /// it freed needs no new page, and its sparse pages would stay resident.
    /// One load while nothing is armed.
    ///
    /// # Safety
    /// Called by the owner inside its handshake, holding on to none of its
    /// pages (meshing may free any, and release its segment).
    #[inline(always)]
    pub(crate) unsafe fn sub_purge_if_due(&mut self) {
        if self.sub_purge_at() != 0 {
            self.sub_purge_step(core::ptr::null_mut());
        }
    }

    /// The sub-page purge (and meshing) step of [`maybe_purge`](Self::maybe_purge),
    /// if due; `keep` as there.
    #[inline(never)]
    fn sub_purge_step(&mut self, keep: *mut Segment) {
        if !self.sub_purge_due(os::now_ms()) {
            return;
        }
        // With meshing, only where no caller holds on to a segment (`keep`,
        // a free slow path): collecting an alias's frees may empty and
        // release one. The next allocation slow path does it.
        let mesh = self.mesh_scheduled();
        if mesh && !keep.is_null() {
            return;
        }
        let start = os::now_us();
        if mesh && start < self.mesh_not_before {
            // The whole step waits (the sub-page purge too, which walks the
            // same classes in the same order), armed for when it may mesh
            // again.
            self.set_sub_purge_at(self.mesh_not_before / 1000 + 1);
            return;
        }
        let mesh = mesh && crate::mesh::setup();
        self.purge_in_pages_and_mesh(true, mesh);
        let resume = resume_at(start, os::now_us());
        if mesh {
            self.mesh_not_before = resume;
        }
        // A pass the step's time bound cut short goes on as soon as the
        // duty cycle allows, not a purge delay later.
        if self.sub_purge_left != 0 {
            self.set_sub_purge_at(resume / 1000 + 1);
        }
    }

    /// The part of [`maybe_purge`](Self::maybe_purge) for the dirty slices
    /// of free pages (not the sub-page purge inside pages in use). Inlined
    /// into it, so that its code stays as it was.
    #[inline(always)]
    fn maybe_purge_slices(&mut self, keep: *mut Segment) {
        if self.dirty_bytes == 0 {
            return;
        }
        // What a purge could not give back does not count against the
        // budget, or every slow path would purge again for nothing.
        if self.dirty_bytes > self.dirty_budget() + self.stuck_dirty {
            self.purge_over_budget(keep);
            return;
        }
        if os::past_soft_limit() {
            // Purge harder: no delay, no budget, no kept segments.
            self.purge_in_pages();
            self.purge_all(keep);
            segment::trim_free_segments();
            return;
        }
        let now = os::now_ms();
        if self.purge_at == 0 {
            self.purge_at = now + purge_delay_ms();
        } else if now >= self.purge_at {
            self.purge_ripe(keep, now);
            // The room to regrow is the most used within about the last
            // delay: the slices in use and those freed too recently to be
            // purged (else the budget, left with no room for them, would
            // purge at the next free what the timed purge just kept).
            self.peak_slices = self.used_slices + self.dirty_bytes.div_ceil(SLICE_SIZE);
            segment::trim_free_segments();
        }
    }

    /// The timed purge: gives back the dirty slices that have been free for
    /// the purge delay (each slice's `Segment::freed_at`), and the wholly
    /// free segments as [`purge_all`](Self::purge_all) does. Slices freed
    /// since wait for a later round, due when the oldest of them has waited
    /// the delay: purging memory freed a moment ago, only to fault it in
    /// again, is what the delay is for. With huge pages in force,
    /// everything, as before (huge pages are purged whole).
    pub(super) fn purge_ripe(&mut self, keep: *mut Segment, now: u64) {
        if os::huge_pages_in_force() {
            self.purge_all(keep);
            return;
        }
        let wait = self.purge_aged(keep, now, purge_delay_ms());
        self.after_aged_purge(now, wait);
    }

    /// The dirty slices hold more than the heap's budget: purges them
    /// oldest first (free for the purge delay, then for half of it, and so
    /// on) until they hold at most three quarters of the budget, so that
    /// the memory freed last, the likeliest to be used again soon, stays
    /// resident. (Purging every dirty slice here, as it once did, made C
    /// `mstress` purge 72 MiB in a one-second run and fault most of it in
    /// again.) With huge pages in force, everything.
    fn purge_over_budget(&mut self, keep: *mut Segment) {
        if os::huge_pages_in_force() {
            self.purge_all(keep);
            return;
        }
        let now = os::now_ms();
        let target = self.dirty_budget() / 4 * 3;
        let mut age = purge_delay_ms();
        loop {
            let wait = self.purge_aged(keep, now, age);
            if self.dirty_bytes <= target || age == 0 {
                self.after_aged_purge(now, wait);
                return;
            }
            age /= 2;
        }
    }

    /// Sets the next timed purge after [`purge_aged`](Self::purge_aged)
    /// left slices that still have `wait` ms to wait.
    fn after_aged_purge(&mut self, now: u64, wait: u64) {
        self.stuck_dirty = 0;
        self.purge_at = if self.dirty_bytes == 0 || wait == u64::MAX {
            0
        } else {
            now + wait
        };
    }

    /// Releases every wholly free segment but one (never `keep`), as
    /// [`purge_all`](Self::purge_all) does, and purges the dirty slices free
    /// for `min_age` ms or more at `now`. Returns the least time any slice
    /// left dirty has to wait until it has been free for the purge delay
    /// (`u64::MAX` if none is left).
    fn purge_aged(&mut self, keep: *mut Segment, now: u64, min_age: u64) -> u64 {
        let delay = purge_delay_ms();
        let mut wait = u64::MAX;
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
                    let mut ripe = 0u64;
                    let mut d = (*s).dirty_slices;
                    while d != 0 {
                        let k = d.trailing_zeros() as usize;
                        d &= d - 1;
                        let age = u64::from((now as u32).wrapping_sub((*s).freed_at[k]));
                        if age >= min_age {
                            ripe |= 1 << k;
                        } else {
                            wait = wait.min(delay.saturating_sub(age).max(1));
                        }
                    }
                    if ripe != 0 {
                        let purged = segment::purge_dirty_in(&mut *s, ripe);
                        self.dirty_bytes -= purged;
                        self.k().dirty_bytes.sub(purged);
                    }
                }
                s = next;
            }
        }
        wait
    }

    /// The background purger's purge of an idle heap (see `background`):
    /// what the heap's own timed purge would do at its next slow path. Its
    /// thread is kept out by the handshake meanwhile, so writing the heap's
    /// counters here is as if it wrote them.
    pub(crate) fn purge_idle(&mut self) {
        self.purge_all(core::ptr::null_mut());
        self.peak_slices = self.used_slices;
    }

    /// Whether the heap's timed sub-page purge (and meshing) is due at
    /// `now` (ms, `os::now_ms`).
    pub(super) fn sub_purge_due(&self, now: u64) -> bool {
        let at = self.sub_purge_at();
        at != 0 && !self.moving && now >= at
    }

    /// When the timed sub-page purge is due (ms, `os::now_ms`), or 0 if it
    /// is not armed.
    #[inline(always)]
    fn sub_purge_at(&self) -> u64 {
        self.sub_purge_at
            .load(core::sync::atomic::Ordering::Relaxed)
    }

    /// Sets when the timed sub-page purge is due (0: not armed).
    pub(super) fn set_sub_purge_at(&mut self, at: u64) {
        self.sub_purge_at
            .store(at, core::sync::atomic::Ordering::Relaxed);
    }

    /// Whether heap `h`'s timed sub-page purge may be due at `now` (ms):
    /// for the background purger, which has not taken the heap.
    ///
    /// # Safety
    /// `h` is a heap in a pool slot (never unmapped).
    pub(crate) unsafe fn sub_purge_maybe_due(h: *const Heap, now: u64) -> bool {
        // SAFETY: per the contract.
        let at = unsafe { Heap::sub_purge_deadline(h) };
        at != 0 && now >= at
    }

    /// When heap `h`'s timed sub-page purge is due (ms, 0 if not armed), as
    /// far as the background purger, which has not taken the heap, can
    /// tell.
    ///
    /// # Safety
    /// As for [`sub_purge_maybe_due`](Self::sub_purge_maybe_due).
    pub(crate) unsafe fn sub_purge_deadline(h: *const Heap) -> u64 {
        // SAFETY: per the contract; the deadline is atomic.
        unsafe {
            (*core::ptr::addr_of!((*h).sub_purge_at)).load(core::sync::atomic::Ordering::Relaxed)
        }
    }

    /// Whether the heap's timed purge is due at `now` (ms, `os::now_ms`):
    /// what its next slow path would purge (see [`maybe_purge`](Self::maybe_purge)).
    pub(crate) fn timed_purge_due(&self, now: u64) -> bool {
        self.purge_at != 0 && now >= self.purge_at
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
        // Free for 0 ms or more: every dirty slice.
        self.purge_aged(keep, os::now_ms(), 0);
        self.stuck_dirty = self.dirty_bytes;
    }
}

impl Heap {
    /// Whether cutting a page from the free slices `i..i + span` of `s`
    /// stays within the memory limit (option `limit`): it commits what of
    /// them is not resident already (fresh or purged slices). One load
    /// without a limit.
    ///
    /// # Safety
    /// `s` is one of this heap's segments and the slices are free.
    #[inline]
    pub(super) unsafe fn may_commit(&mut self, s: *mut Segment, i: usize, span: usize) -> bool {
        // SAFETY: per the contract.
        crate::options::LIMIT.get() == 0 || unsafe { self.may_commit_over(s, i, span) }
    }

    /// [`may_commit`](Self::may_commit) with a limit set. Over it, this
    /// heap's own free memory goes back first (this is its slow path, so
    /// its segments are ours to purge), then the process-wide caches
    /// (`os::within_limit`); only if still over does the allocation fail.
    #[cold]
    unsafe fn may_commit_over(&mut self, s: *mut Segment, i: usize, span: usize) -> bool {
        // SAFETY: per the contract; the slices stay free (a purge only
        // clears their dirty bits), and `s` is kept.
        unsafe {
            let extra = |seg: &Segment| {
                let resident: usize = seg.touched[i..i + span].iter().map(|&t| t as usize).sum();
                (span * SLICE_SIZE).saturating_sub(resident)
            };
            if os::fits_limit(extra(&*s)) {
                return true;
            }
            self.purge_in_pages();
            self.purge_all(s);
            os::within_limit(extra(&*s))
        }
    }

    /// Sets the sub-page purge (and with the option `mesh`, the timed
    /// meshing) to run a purge delay from now, unless it is already set (or
    /// this heap never does either: first-class heaps, whose blocks are
    /// freed all at once, and huge pages on without `mesh`).
    pub(super) fn arm_sub_purge(&mut self) {
        if self.private || !(sub_purge_on() || self.mesh_scheduled()) {
            return;
        }
        if self.sub_purge_at() == 0 {
            self.set_sub_purge_at(os::now_ms() + purge_delay_ms());
        } else {
            // Armed while a pass is under way: another follows it.
            self.sub_purge_again = true;
        }
    }

    /// Marks the start (`true`) or the end of a defragmentation step on this
    /// heap. Meanwhile the timed sub-page purge waits: the step is emptying
    /// the very pages it would walk, and purging their free OS pages one by
    /// one (a `madvise` each) just before the whole page goes back is work
    /// for nothing (the defragmentation example made about 450 such calls in
    /// its pass). It runs at the first check after the step, if still due.
    ///
    /// The purge of free slices waits too: a step empties pages one after
    /// the other (about one per ten values moved in the defragmentation
    /// example), and checking the purge policy for each (a clock read
    /// among others) was about 60 instructions a page, 7 per value moved
    /// (callgrind). The step's end checks it once, as a free would have
    /// (its budget then purges at once what the step left over it).
    pub(crate) fn defrag_step(&mut self, on: bool) {
        self.moving = on;
        if !on {
            self.maybe_purge_slices(core::ptr::null_mut());
        }
    }

    /// Gives back the OS pages of sparse pages in use that hold no live
    /// block (see the module docs), after collecting those pages' frees by
    /// other threads: all of them. Owner only.
    pub(crate) fn purge_in_pages(&mut self) {
        self.purge_in_pages_and_mesh(false, false);
    }

    /// [`purge_in_pages`](Self::purge_in_pages), or with `timed` the timed
    /// step's share of its pass (bounded in time, see `window`), and with
    /// `mesh` (the timed step with the option `mesh` on, see
    /// [`Heap::mesh_scheduled`]) meshing too, class by class in the order
    /// `collect()` follows for the whole heap: whole pages of the class,
    /// then its free OS pages purged, then its OS pages merged.
    fn purge_in_pages_and_mesh(&mut self, timed: bool, mesh: bool) {
        self.set_sub_purge_at(0);
        let purge = sub_purge_on();
        if self.private || !(purge || mesh) {
            return;
        }
        let mut total = 0;
        // A timed step goes on with the pass its arming began, which ends
        // once it has seen every class; another follows only if the heap
        // was armed again meanwhile (a page back from the full list).
        // Passes that went round and round walked 32K blocks every purge
        // delay for as long as the program ran, purging nothing new (5-8
        // ms a step with a million sparse blocks).
        let (start, classes) = if !timed {
            (0, NUM_CLASSES)
        } else if self.sub_purge_left == 0 {
            self.sub_purge_again = false;
            (self.sub_purge_next, NUM_CLASSES)
        } else {
            (self.sub_purge_next, self.sub_purge_left)
        };
        // A timed step is bounded in time, class by class a window at a
        // time (`window`).
        let deadline = os::now_us() + STEP_US;
        let mut seen = classes;
        for i in 0..classes {
            let c = (start + i) % NUM_CLASSES;
            if timed && !another_window(deadline) {
                seen = i;
                break;
            }
            if self.queues[c].first.is_null() {
                continue;
            }
            if timed {
                // SAFETY: the owner, inside its slow path (the handshake);
                // with `mesh`, meshing set up by the caller, which holds on
                // to no segment.
                let (given, done) = unsafe { self.step_class(c, purge, mesh, deadline) };
                total += given;
                if !done {
                    seen = i;
                    break;
                }
                continue;
            }
            if mesh {
                // SAFETY: the owner, inside its slow path (the handshake),
                // meshing set up by the caller.
                unsafe { self.mesh_pass(Some(c)) };
            }
            if purge {
                total += self.purge_class(c);
            }
            if mesh {
                // SAFETY: as above.
                unsafe { self.submesh_pass(Some(c)) };
            }
        }
        if timed {
            self.sub_purge_next = (start + seen) % NUM_CLASSES;
            self.sub_purge_left = classes - seen;
            if seen < classes || core::mem::take(&mut self.sub_purge_again) {
                self.arm_sub_purge();
            }
        }
        self.k().purged_in_pages.add(total);
    }

    /// The sub-page purge of class `c`'s pages (not the current one).
    /// Returns the bytes given back.
    fn purge_class(&mut self, c: usize) -> usize {
        self.purge_class_in(c, false, |_| true)
    }

    /// [`purge_class`](Self::purge_class) of the pages whose segment `seg`
    /// passes `within(seg)` only, with `likely` only those likely to have a
    /// wholly free OS page.
    pub(super) fn purge_class_in(
        &mut self,
        c: usize,
        likely: bool,
        within: impl Fn(*mut Segment) -> bool,
    ) -> usize {
        let mut total = 0;
        let first = self.queues[c].first;
        if first.is_null() {
            return 0;
        }
        // SAFETY: pages on our queues are in-use pages of ours; the current
        // one (the first) is skipped.
        unsafe {
            let mut p = (*first).next;
            while !p.is_null() {
                let next = (*p).next;
                let seg = segment::segment_of(p.cast());
                if !within(seg) {
                    p = next;
                    continue;
                }
                let i = (*seg).page_index(p);
                // The primary of a merged page (`mesh`): its memory is a
                // shared memfd chunk, where `madvise` frees nothing, so its
                // free OS pages are punched out of the chunk instead (for
                // every range of the group at once). A page with shared OS
                // pages (`mesh::sub`) is purged as any other: those OS
                // pages are skipped (`page::share`).
                let group = (*seg).meshed(i) && !crate::mesh::sub::is_member(&*seg, i);
                self.collect_remote(p);
                if worth_purging(&*p, likely) {
                    total += if group {
                        let base = (*p).start as usize;
                        (*p).purge_free_os_pages_by(|q, len| {
                            crate::mesh::punch(&*seg, i, q as usize - base, len);
                        })
                    } else {
                        (*p).purge_free_os_pages()
                    };
                }
                p = next;
            }
        }
        total
    }

    /// Whether the timed purge meshes too: the option `mesh` on, and a
    /// thread's heap (a first-class heap's blocks are freed all at once).
    /// Meshing must also be set up (`crate::mesh::setup`), which the
    /// timed step checks before it starts.
    pub(super) fn mesh_scheduled(&self) -> bool {
        !self.private && crate::options::MESH.get() != 0
    }

    /// The bytes of `p`, about to give its slices back to `seg`, that may be
    /// resident, for `Segment::free_run`. A page with OS pages purged gives
    /// the rest of its memory back now, so that its slice is known to read
    /// zero (the segment keeps a resident length per slice, no holes).
    ///
    /// # Safety
    /// `p` is an in-use page of ours with no live block, the page of slice
    /// `i` of `seg`.
    pub(super) unsafe fn touched_to_free(
        &mut self,
        seg: &mut Segment,
        i: usize,
        p: *mut Page,
    ) -> usize {
        // SAFETY: per the contract.
        unsafe {
            let purged = (*p).purged.get();
            if purged == 0 {
                return carved_bytes(p);
            }
            // What may be resident: the carved blocks, or more where the
            // slices held an earlier page's data (its uncarved tail).
            // (A page of more slices: all of it, at the cost of purging
            // some memory that was never touched.)
            let span = (*p).span as usize;
            let touched = if span == 1 {
                carved_bytes(p).max(seg.touched[i] as usize)
            } else {
                span * SLICE_SIZE
            };
            let unit = (*p).unit();
            let n = touched.div_ceil(unit).min(SLICE_SIZE / os::OS_PAGE);
            let mut rest = (((1u32 << n) - 1) as u16) & !purged;
            while rest != 0 {
                let lo = rest.trailing_zeros() as usize;
                let hi = lo + (rest >> lo).trailing_ones() as usize;
                rest &= !((((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16);
                os::purge((*p).start.add(lo * unit), (hi - lo) * unit);
            }
            self.k().purged_in_pages.sub((*p).units_bytes(purged));
            for k in i + 1..i + span {
                seg.touched[k] = 0;
            }
            (*p).purged.set(0);
            (*p).purged_blocks = 0;
            seg.touched[i] = 0;
            0
        }
    }
}

/// Whether sub-page purge is on: the option `sub_purge`, and huge pages not
/// in force.
fn sub_purge_on() -> bool {
    crate::options::SUB_PURGE.get() != 0 && !os::huge_pages_in_force()
}

/// Whether `p` is worth a sub-page purge: some block live (an empty page
/// goes whole), at most half of them (see `page::sparse`; any number in a
/// page of several slices, unless `likely`), and a purge unit's worth of
/// free blocks still resident. With `likely` (the timed purge), also that
/// it likely has a wholly free unit (see [`likely_free_os_page`]).
fn worth_purging(p: &Page, likely: bool) -> bool {
    let used = p.used.get();
    let resident_free = p.capacity - used - u32::from(p.purged_blocks);
    used > 0
        && (page::sparse(used, p.reserved) || (p.span > 1 && !likely))
        && resident_free as usize * p.block_size >= p.unit()
        && (!likely || likely_free_os_page(p.reserved - used, p.reserved, p.block_size, p.unit()))
}

/// Whether a page with `free` of its `reserved` blocks free, at random
/// places, is expected to have at least one wholly free purge unit (of
/// `unit` bytes) of its 16: `16 * (free / reserved)^b >= 1`, with `b`
/// blocks per unit (in fixed point, 16 fraction bits). A page of 64-byte
/// blocks needs 96% of them free; one of 512-byte blocks, 71%; a page of
/// blocks as large as a unit or larger, one free block in 16. Frees that
/// cluster beat the estimate; the timed purge skips the rest (walking a
/// page's free list costs a cache miss per block), `collect()` does not.
fn likely_free_os_page(free: u32, reserved: u32, block_size: usize, unit: usize) -> bool {
    const ONE: u64 = 1 << 16;
    let x = u64::from(free) * ONE / u64::from(reserved.max(1));
    let b = (unit / block_size).max(1);
    let mut r = 16 * ONE;
    for _ in 0..b {
        r = r * x / ONE;
        if r < ONE {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::{likely_free_os_page, resume_at, STEP_DUTY};
    use crate::os::OS_PAGE;

    #[test]
    fn a_step_is_followed_after_a_wait_in_proportion_to_its_length() {
        // A 1 ms step: none for the next 8 ms.
        assert_eq!(resume_at(10_000, 11_000), 11_000 + 1_000 * STEP_DUTY);
        // An instant step may be followed at once.
        assert_eq!(resume_at(5, 5), 5);
        // A clock that went backwards (it cannot) or huge values saturate.
        assert_eq!(resume_at(9, 5), 5);
        assert_eq!(resume_at(0, u64::MAX / 2), u64::MAX);
    }

    #[test]
    fn the_estimate_of_a_free_os_page() {
        // 16-byte blocks, 256 per OS page: hopeless unless nearly all free.
        assert!(!likely_free_os_page(3686, 4096, 16, OS_PAGE)); // 90% free
        assert!(likely_free_os_page(4090, 4096, 16, OS_PAGE));
        // 512-byte blocks, 8 per OS page: 16 * 0.9^8 = 6.9.
        assert!(likely_free_os_page(115, 128, 512, OS_PAGE));
        assert!(!likely_free_os_page(80, 128, 512, OS_PAGE)); // 16 * 0.625^8 = 0.37
                                                              // Blocks over 4 KiB: half free is enough.
        assert!(likely_free_os_page(4, 8, 8192, OS_PAGE));
    }
}
