//! The per-thread heap: which page serves the next block of each size class,
//! and the slow path that finds or makes one.
//!
//! A heap belongs to one thread and is touched only by it (the heap itself has
//! no atomics). It keeps:
//! - `direct`: for requests up to [`DIRECT_MAX`] bytes, the page currently
//!   serving each 8-byte size step, so the fast path is one indexed load and
//!   a pop; slots of classes with no page point at a shared empty page, so a
//!   missing page costs no extra branch;
//! - a queue of pages per size class (the first one is the current page), and
//!   a list of full pages, which are left alone until frees bring them back;
//! - the segments it owns, split by whether they still have free slices.
//!
//! Frees by other threads land on a page's `thread_free` and flag the page in
//! its segment's `thread_freed` bitmap. The owner reads those bitmaps when a
//! size class runs out of free blocks, so pages on the full list come back
//! without being scanned. The flag is set just before the push (after it the
//! page may already be gone), so rarely a push lands after the owner cleared
//! the flag; every full page is therefore also checked before the heap asks
//! the OS for a new segment. A missed flag can delay reuse, never lose a block.
//! (Most frees by other threads of blocks up to 8 KiB come in batches through
//! the heap's inbox instead, freed locally on the slow path: see
//! `remote_batch`.)
//!
//! Memory goes back to the OS in three steps: an empty page returns its slices
//! to its segment (the part it touched stays resident, "dirty"); dirty bytes
//! beyond the heap's budget, or older than the purge delay (option `purge_delay_ms`), are purged
//! with `madvise`; and a wholly free segment goes to a small process-wide
//! cache or is unmapped, unless it is the only one the heap keeps in reserve
//! (the policy is in `purge`). Inside sparse pages still in use, the OS
//! pages that hold no live block go back too, a purge delay after a page
//! left the full list (sub-page purge: the policy in `purge`, the mechanism
//! in `page::purge`). [`Heap::collect`] does all of it at once.
//! Where its pages come from and go is in `pages`; what a heap does apart
//! from allocating (taking over segments of exited threads, thread exit,
//! `collect`) is in `lifecycle`.

use crate::counters::HeapCounters;
use crate::os;
use crate::page::{Page, FREE_ZERO, IN_FULL};
use crate::remote::Outbox;
use crate::segment::{registry, Segment, MAX_SPAN, SLICES, SLICE_SIZE};
use crate::size_class::{class_size, CLASS_SIZES, NUM_CLASSES};
use core::ptr;
use static_assertions::const_assert;

mod dense;
mod lists;
mod pages;
use dense::pop_counted;
use lists::{PageQueue, SegList};
mod kept;
mod lifecycle;
mod mesh;
mod nudge;
mod purge;
mod submesh;
mod window;

/// Requests up to this size use the `direct` table.
pub(crate) const DIRECT_MAX: usize = 1024;
/// One slot per 8-byte step up to [`DIRECT_MAX`].
pub(crate) const DIRECT_SLOTS: usize = DIRECT_MAX / 8 + 1;

/// The `direct` slot of a request of `size <= DIRECT_MAX` bytes aligned to
/// `align <= MIN_ALIGN`: the size rounded up to the alignment and to 8,
/// divided by 8, which keeps 16-aligned requests off the 8-aligned classes
/// (slot 0 for a size of 0). `t + 1` is that multiple of 8, so LLVM folds
/// the slot's address to `direct + 1 + t`: three instructions fewer than
/// `(size + align - 1) & !(align - 1)` rounded to 8.
#[inline(always)]
pub(crate) const fn direct_slot(size: usize, align: usize) -> usize {
    let t = size.wrapping_sub(1) | (align - 1) | 7;
    t.wrapping_add(1) >> 3
}
/// Abandoned segments beyond this many are purged of free slices when abandoned.
const ABANDONED_DIRTY_MAX: usize = 8;
/// How many abandoned segments one slow path may try to reclaim.
const RECLAIM_TRIES: usize = 8;

const_assert!(DIRECT_MAX % 16 == 0);
const_assert!(class_size(crate::size_class::class_of(DIRECT_MAX)) == DIRECT_MAX);

/// A full page goes back to its queue once this many of its blocks are free:
/// a thirty-second of them. Waiting for a batch means a page nearly full of
/// live blocks is not moved back and forth for every single free (each move
/// would yield one block); the batch is small because the free blocks of a
/// page on the full list serve nothing. With an eighth, C `leak` (blocks
/// kept here and there among freed ones) held 10 MiB free in full pages for
/// 84 MiB live, 96.0 MiB peak RSS against 91.0 now (glibc 87.0); callgrind
/// counts +0.06% instructions on random replacement of 4096 64-byte blocks
/// under `LD_PRELOAD`, +0.11% with sizes of 16-515 bytes.
#[inline]
fn unfull_threshold(p: *const Page) -> u32 {
    // SAFETY: callers pass a valid page.
    (unsafe { (*p).reserved } / 32).max(1)
}

/// Slices a page of block size `bs` spans: one for blocks up to 8 KiB; up to
/// 128 KiB the fewest that hold a block with at most an eighth left over
/// (one to seven blocks); above that (where every class is a multiple of
/// 16 KiB) the fewest blocks that fill whole slices exactly, one to four.
/// Pages of blocks over 8 KiB are small so that they empty: a page of such
/// a class rarely holds more than a block or two at once, and the free
/// blocks of a page that stays in use serve only its class, where an empty
/// page's slices serve any (pages of eight such blocks held 4-6 MiB, a
/// third of segalloc's resident memory, at C `mstress`'s peak).
pub(crate) const fn span_for(bs: usize) -> usize {
    if bs <= SLICE_SIZE / 8 {
        1
    } else if bs <= 128 * 1024 {
        let mut n = bs.div_ceil(SLICE_SIZE);
        while (n * SLICE_SIZE % bs) * 8 > n * SLICE_SIZE {
            n += 1;
        }
        n
    } else {
        let mut n = 1;
        while (n * bs) % SLICE_SIZE != 0 {
            n += 1;
        }
        n * bs / SLICE_SIZE
    }
}
const_assert!(span_for(crate::size_class::MAX_SMALL) <= MAX_SPAN);

/// A thread's heap. See the module docs.
#[repr(C)]
pub(crate) struct Heap {
    /// The tag the registry holds for the small segments this heap owns
    /// (see `segment::registry::Tag`): the slot's, for good.
    pub(crate) tag: registry::Tag,
    /// The page serving each 8-byte size step up to [`DIRECT_MAX`].
    pub(crate) direct: [*mut Page; DIRECT_SLOTS],
    /// The heap profiler's byte countdown and state (see `sample`).
    #[cfg(feature = "profiling")]
    pub(crate) prof: crate::sample::Prof,
    queues: [PageQueue; NUM_CLASSES],
    full: PageQueue,
    /// Owned segments with at least one free slice.
    avail: SegList,
    /// Owned segments with no free slice.
    full_segs: SegList,
    /// The shared empty page that stands for "no page".
    empty_page: *mut Page,
    /// Owned segments with no page in use.
    free_segments: usize,
    /// Resident bytes of free slices, over all owned segments.
    dirty_bytes: usize,
    /// What of `dirty_bytes` the last purge could not give back (with huge
    /// pages on, free slices sharing a huge page with a page in use).
    stuck_dirty: usize,
    /// Slices in use by pages.
    used_slices: usize,
    /// The most slices in use since the last timed purge.
    peak_slices: usize,
    /// When to purge the dirty slices (monotonic ms), or 0 if none are waiting.
    purge_at: u64,
    /// When to purge the free OS pages inside sparse pages in use (see
    /// `purge`), or 0 if no page came back from the full list since.
    /// Atomic (relaxed, a plain `mov`) so that the background purger may
    /// read it without taking the heap (see `nudge`): a stale value only
    /// makes it take the heap for nothing, or look again later.
    sub_purge_at: core::sync::atomic::AtomicU64,
    /// The class the next timed sub-page purge starts at (where the last
    /// one stopped, its work bounded).
    sub_purge_next: usize,
    /// The classes the timed sub-page purge's pass has yet to see from
    /// `sub_purge_next` on; 0 when no pass is under way.
    sub_purge_left: usize,
    /// Armed again while a pass was under way: another pass follows it.
    sub_purge_again: bool,
    /// Classes that may hold a kept empty page (see `kept`), `lo..=hi`.
    kept: (u8, u8),
    /// No timed step meshes before this (precise clock, µs): a step that
    /// meshed for `t` is followed by none for `MESH_DUTY * t` (see
    /// `purge`). 0 when none has run.
    mesh_not_before: u64,
    /// Where the timed step stopped in its size class (`window`).
    step_cursor: window::Cursor,
    /// A defragmentation step is moving blocks out of this heap's sparse
    /// pages: the timed sub-page purge, and the purge check of each page
    /// the step frees, wait (see `defrag_step`).
    moving: bool,
    /// The background purger pointed the `direct` slots at the empty page
    /// to bring the owner to a slow path (see `nudge`).
    nudged: bool,
    /// The generator that picks where fresh pages start with meshing on (see
    /// `page::shuffle`); 0 until first used, `shuffle::NEVER` in a
    /// first-class heap (which never meshes).
    carve_rng: u64,
    /// Link in the pool of unused heaps, or in the list of parked ones.
    pub(crate) next_free: *mut Heap,
    /// When the heap was parked (monotonic ms; see `park`).
    pub(crate) parked_at: u64,
    /// This heap's statistics, beside it in its pool slot; they outlive the
    /// thread (see `stats`). Null only for the shared empty heap.
    counters: *const HeapCounters,
    /// The heap of a first-class `crate::Heap`, not of a thread: it never
    /// takes over abandoned segments, whose live blocks belong to the global
    /// allocator's users and must outlive the first-class heap. Its segments
    /// are marked, so that no other thread batches frees into them.
    private: bool,
    /// Blocks of other heaps this thread freed, gathered per destination
    /// (see `remote_batch`); empty whenever the heap is not a thread's.
    pub(crate) outbox: Outbox,
    /// Free-side slow events since the last upkeep (see [`upkeep_due`](Self::upkeep_due)).
    free_events: u32,
}

/// Every this many free-side slow events (a page emptied by a free, a batch
/// of remote frees handed over, a segment taken over by a free) the freeing
/// thread settles its inbox and collects its flagged pages (`alloc::upkeep`),
/// as its allocation slow path would: a thread that frees but seldom
/// allocates still gets back the blocks others free into its pages.
pub(crate) const UPKEEP_EVERY: u32 = 16;

/// Slots of `direct` that class `c` serves: `lo..=hi`.
const fn direct_range(c: usize) -> (usize, usize) {
    let lo = if c == 0 { 0 } else { class_size(c - 1) / 8 + 1 };
    (lo, class_size(c) / 8)
}

impl Heap {
    /// An empty heap whose direct slots all point at `empty_page`.
    pub(crate) const fn new(empty_page: *mut Page) -> Heap {
        Heap {
            tag: registry::NO_TAG,
            direct: [empty_page; DIRECT_SLOTS],
            #[cfg(feature = "profiling")]
            prof: crate::sample::Prof::NEW,
            queues: [PageQueue::EMPTY; NUM_CLASSES],
            full: PageQueue::EMPTY,
            avail: SegList::EMPTY,
            full_segs: SegList::EMPTY,
            empty_page,
            free_segments: 0,
            dirty_bytes: 0,
            stuck_dirty: 0,
            used_slices: 0,
            peak_slices: 0,
            purge_at: 0,
            sub_purge_at: core::sync::atomic::AtomicU64::new(0),
            sub_purge_next: 0,
            sub_purge_left: 0,
            sub_purge_again: false,
            kept: kept::NONE,
            mesh_not_before: 0,
            step_cursor: window::Cursor::START,
            moving: false,
            nudged: false,
            carve_rng: 0,
            next_free: ptr::null_mut(),
            parked_at: 0,
            counters: ptr::null(),
            private: false,
            outbox: Outbox::EMPTY,
            free_events: 0,
        }
    }

    /// This heap's counters.
    #[inline]
    pub(crate) fn k(&self) -> &'static HeapCounters {
        // SAFETY: set at set-up to the counters in this heap's pool slot, which
        // is never unmapped; only the empty heap has none and it never gets here.
        unsafe { &*self.counters }
    }

    /// Sets up a heap from the pool for a new thread; `counters` keeps counting
    /// where the slot's previous thread left off.
    pub(crate) fn init(&mut self, empty_page: *mut Page, counters: *const HeapCounters) {
        self.reset(empty_page);
        self.counters = counters;
        self.private = false;
        self.carve_rng = 0;
    }

    /// Sets up a heap from the pool for a first-class `crate::Heap`.
    pub(crate) fn init_private(&mut self, empty_page: *mut Page, counters: *const HeapCounters) {
        self.init(empty_page, counters);
        self.private = true;
        self.carve_rng = crate::page::NO_SHUFFLE;
    }

    /// Empties the heap (its counters stay).
    fn reset(&mut self, empty_page: *mut Page) {
        debug_assert!(self.outbox.is_empty(), "batches left in a heap's outbox");
        self.direct = [empty_page; DIRECT_SLOTS];
        #[cfg(feature = "profiling")]
        {
            self.prof = crate::sample::Prof::NEW;
        }
        self.queues = [PageQueue::EMPTY; NUM_CLASSES];
        self.full = PageQueue::EMPTY;
        self.avail = SegList::EMPTY;
        self.full_segs = SegList::EMPTY;
        self.empty_page = empty_page;
        self.free_segments = 0;
        self.dirty_bytes = 0;
        self.stuck_dirty = 0;
        self.used_slices = 0;
        self.peak_slices = 0;
        self.purge_at = 0;
        self.set_sub_purge_at(0);
        self.sub_purge_next = 0;
        self.sub_purge_left = 0;
        self.sub_purge_again = false;
        self.mesh_not_before = 0;
        self.step_cursor = window::Cursor::START;
        self.moving = false;
        self.nudged = false;
        self.next_free = ptr::null_mut();
        self.free_events = 0;
    }

    /// Counts a free-side slow event; true at every [`UPKEEP_EVERY`]th.
    #[inline]
    pub(crate) fn upkeep_due(&mut self) -> bool {
        self.free_events += 1;
        if self.free_events < UPKEEP_EVERY {
            return false;
        }
        self.free_events = 0;
        true
    }

    /// Collects other threads' frees on `p`, keeping the statistics exact.
    /// Returns how many came back.
    ///
    /// # Safety
    /// `p` is an in-use page of this heap.
    unsafe fn collect_remote(&mut self, p: *mut Page) -> u32 {
        // SAFETY: per the contract.
        unsafe {
            let n = (*p).collect_thread_free();
            if n > 0 {
                self.k().class[(*p).class as usize]
                    .remote_pending
                    .sub(n as usize);
            }
            n
        }
    }

    /// Makes `p`'s `free` list non-empty if it has any block left. Its
    /// `free` having run dry, this is where its counts are taken.
    ///
    /// # Safety
    /// `p` is an in-use page of this heap.
    unsafe fn refill(&mut self, p: *mut Page) -> bool {
        // SAFETY: per the contract.
        unsafe { self.refill_by(p, crate::page::EXTEND_BYTES) }
    }

    /// [`refill`](Self::refill), carving about `bytes` of blocks if it
    /// carves (see `page::Page::refill_local_by`).
    ///
    /// # Safety
    /// As for `refill`.
    unsafe fn refill_by(&mut self, p: *mut Page, bytes: usize) -> bool {
        // SAFETY: per the contract.
        unsafe {
            if !(*p).free.is_null() {
                return true;
            }
            self.fold(p, false);
            self.collect_remote(p);
            let purged = (*p).purged.get();
            // With meshing on, fresh pages start at a random block (see
            // `page::shuffle`): the page looks at the option only when it
            // carves, so a refill costs nothing more.
            let ok = (*p).refill_local_by(bytes, &mut self.carve_rng);
            if (*p).purged.get() != purged {
                // Purged units taken back (see `page::purge`).
                let back = (*p).units_bytes(purged & !(*p).purged.get());
                self.k().purged_in_pages.sub(back);
            }
            ok
        }
    }

    /// Adds what `p`'s fast paths did to this heap's counters (see
    /// `page::Page::take_counts`; `walk` unless `p.free` is empty).
    ///
    /// # Safety
    /// `p` is an in-use page of this heap.
    unsafe fn fold(&mut self, p: *mut Page, walk: bool) {
        // SAFETY: per the contract.
        unsafe {
            let n = (*p).take_counts(walk);
            let k = &self.k().class[(*p).class as usize];
            k.allocs.add(n.allocs as usize);
            k.frees.add(n.local_frees as usize);
            k.requested.add(n.requested);
        }
    }

    /// Takes the counts of every page in use, so that this heap's counters
    /// are exact (for a snapshot taken by its own thread).
    ///
    /// # Safety
    /// Called by the thread using this heap.
    pub(crate) unsafe fn fold_all(&mut self) {
        for list in [self.avail, self.full_segs] {
            let mut s = list.first;
            while !s.is_null() {
                // SAFETY: our segments and their in-use pages.
                unsafe {
                    for i in in_use_pages(&*s) {
                        self.fold(ptr::addr_of_mut!((*s).pages[i]), true);
                    }
                    s = (*s).next;
                }
            }
        }
    }

    #[inline]
    fn id(&self) -> usize {
        self as *const Heap as usize
    }

    /// The current page of class `c` (maybe the empty page).
    #[inline(always)]
    pub(crate) fn current_page(&self, c: usize) -> *mut Page {
        let p = self.queues[c].first;
        if p.is_null() {
            self.empty_page
        } else {
            p
        }
    }

    /// The head of class `c`'s queue changed from `old` (maybe null): moves
    /// the current-page mark (see `defrag`) and points the direct slots of
    /// the class at its current page.
    ///
    /// # Safety
    /// `old` is null or a page of this heap.
    unsafe fn sync_current(&mut self, c: usize, old: *mut Page) {
        // SAFETY: per the contract; the queue holds pages of this heap.
        unsafe {
            if !old.is_null() {
                (*old).set_current(false);
            }
            if let Some(p) = self.queues[c].first.as_ref() {
                p.set_current(true);
            }
        }
        self.point_direct(c);
    }

    /// Points the direct slots of class `c` at its current page; false if
    /// the class has none (its blocks are over [`DIRECT_MAX`]).
    fn point_direct(&mut self, c: usize) -> bool {
        if CLASS_SIZES[c] as usize > DIRECT_MAX {
            return false;
        }
        let page = self.current_page(c);
        let (lo, hi) = direct_range(c);
        for slot in &mut self.direct[lo..=hi] {
            *slot = page;
        }
        true
    }

    /// # Safety
    /// `p` is an in-use page of this heap on no list.
    unsafe fn enqueue(&mut self, p: *mut Page, front: bool) {
        // SAFETY: per the contract.
        unsafe {
            let c = (*p).class as usize;
            let old = self.queues[c].first;
            if front {
                self.queues[c].push_front(p);
            } else {
                self.queues[c].push_back(p);
            }
            if self.queues[c].first == p {
                self.sync_current(c, old);
            }
        }
    }

    /// # Safety
    /// `p` is on its class queue.
    unsafe fn dequeue(&mut self, p: *mut Page) {
        // SAFETY: per the contract.
        unsafe {
            let c = (*p).class as usize;
            let was_first = self.queues[c].first == p;
            self.queues[c].remove(p);
            if was_first {
                self.sync_current(c, p);
            }
        }
    }

    /// Moves a page with free blocks off the full list, to the back of its queue.
    ///
    /// # Safety
    /// `p` is on the full list.
    unsafe fn unfull(&mut self, p: *mut Page) {
        // SAFETY: per the contract; `p` is one of our pages.
        unsafe {
            self.full.remove(p);
            (*p).clear_full();
            self.enqueue(p, false);
        }
        // Frees made room in a full page: the free OS pages of sparse pages
        // are worth a look once the purge delay has passed.
        self.arm_sub_purge();
    }

    /// Takes a page off whichever list holds it.
    ///
    /// # Safety
    /// `p` is an in-use page of this heap.
    unsafe fn unlink(&mut self, p: *mut Page) {
        // SAFETY: per the contract, `p` is on the full list or its queue.
        unsafe {
            if (*p).has(IN_FULL) {
                self.full.remove(p);
                (*p).clear_full();
            } else {
                self.dequeue(p);
            }
        }
    }

    /// Finds a page of class `c` with a free block, making one if needed.
    /// Returns null when out of memory.
    ///
    /// # Safety
    /// Called by the owning thread.
    pub(crate) unsafe fn find_page(&mut self, c: usize) -> *mut Page {
        // SAFETY: every page reached is an in-use page of this heap.
        unsafe {
            let mut flagged_checked = false;
            loop {
                let mut p = self.queues[c].first;
                while !p.is_null() {
                    let next = (*p).next;
                    if self.refill(p) {
                        if p != self.queues[c].first {
                            self.dequeue(p);
                            self.enqueue(p, true);
                        }
                        return p;
                    }
                    self.park_full(p);
                    p = next;
                }
                if flagged_checked {
                    break;
                }
                flagged_checked = true;
                if !self.collect_flagged() {
                    break;
                }
            }
            self.new_page(c)
        }
    }

    /// Collects other threads' frees on every page flagged in the segments'
    /// `thread_freed` bitmaps. Returns whether any page gained free blocks.
    ///
    /// # Safety
    /// Called by the thread using the heap, inside its handshake, holding
    /// on to none of its pages (any may be freed, its segment released).
    pub(crate) unsafe fn collect_flagged(&mut self) -> bool {
        let mut any = false;
        for list in [self.avail, self.full_segs] {
            let mut s = list.first;
            while !s.is_null() {
                // SAFETY: `s` is one of our segments; it may be released while we
                // settle its pages, so its successor is read first.
                unsafe {
                    let next = (*s).next;
                    if (*s).thread_freed.any() {
                        let mut bits = (*s).thread_freed.take();
                        while bits != 0 {
                            let i = bits.trailing_zeros() as usize;
                            bits &= bits - 1;
                            if !(*s).page_in_use(i) {
                                // A page merged into another (`mesh`).
                                if crate::mesh::is_alias(&*s, i) {
                                    any = true;
                                    if self.collect_alias(s, i) {
                                        break;
                                    }
                                }
                                continue;
                            }
                            let p = ptr::addr_of_mut!((*s).pages[i]);
                            if self.collect_remote(p) > 0 {
                                any = true;
                                if self.settle(p, unfull_threshold(p)) {
                                    break; // the segment was released
                                }
                            }
                        }
                    }
                    s = next;
                }
            }
        }
        any
    }

    /// After frees came back to `p`: retire it if empty, or bring it back from
    /// the full list once it has `min_free` free blocks. Returns whether `p`'s
    /// segment was released.
    ///
    /// # Safety
    /// `p` is an in-use page of this heap.
    unsafe fn settle(&mut self, p: *mut Page, min_free: u32) -> bool {
        // SAFETY: per the contract.
        unsafe {
            if (*p).used.get() == 0 {
                self.unlink(p);
                return self.free_page(p);
            }
            if (*p).has(IN_FULL) && (*p).reserved - (*p).used.get() >= min_free {
                self.unfull(p);
            }
            false
        }
    }

    /// Called after a local free that made `p` empty, or left a page on the
    /// full list with enough free blocks to go back to its queue.
    ///
    /// # Safety
    /// `p` is an in-use page of this heap.
    ///
    /// `extern "C"` so that it cannot unwind, which lets C's `free` reach it
    /// with a tail call (see `alloc::free`).
    pub(crate) unsafe extern "C" fn free_slow(&mut self, p: *mut Page) {
        // SAFETY: per the contract.
        unsafe {
            // A page with purged OS pages sends every free here (see
            // `Page::notify_every_free`); the block just freed heads `free`
            // (the owner's) or `local_free` (another thread's, settled).
            // Blocks on the lists are never in purged OS pages, so the
            // other head passes.
            if !(*p).free.is_null() {
                (*p).check_not_purged((*p).free.cast());
            }
            if !(*p).local_free.is_null() {
                (*p).check_not_purged((*p).local_free.cast());
            }
            // The first free since fresh memory was carved onto `free` (see
            // `Page::end_free_zero`).
            (*p).end_free_zero();
            if (*p).used.get() == 0 {
                let c = (*p).class as usize;
                // Keep the only page of a class: freeing and reallocating one
                // block in a loop must not map and purge a page each time.
                let q = self.queues[c];
                if q.first == p && q.last == p && (*p).span == 1 {
                    self.keep_empty(p, c);
                    return;
                }
                self.unlink(p);
                self.free_page(p);
            } else if (*p).has(IN_FULL) && (*p).reserved - (*p).used.get() >= unfull_threshold(p) {
                self.unfull(p);
            }
        }
    }
}

/// First slices of the in-use pages of `seg`, as a bitmap iterator.
fn in_use_pages(seg: &Segment) -> impl Iterator<Item = usize> {
    let mut heads = 0u64;
    let mut i = 1;
    while i < SLICES {
        if seg.page_in_use(i) {
            heads |= 1 << i;
            i += seg.pages[i].span as usize;
        } else {
            i += 1;
        }
    }
    core::iter::from_fn(move || {
        if heads == 0 {
            return None;
        }
        let i = heads.trailing_zeros() as usize;
        heads &= heads - 1;
        Some(i)
    })
}

/// Pops a block for class `c` from `heap`, whose current page had none, for
/// a request counted as `requested` bytes.
///
/// # Safety
/// `heap` is the calling thread's own heap (not the empty one).
#[inline(never)]
pub(crate) unsafe fn alloc_from_new_page(heap: &mut Heap, c: usize, requested: usize) -> *mut u8 {
    // SAFETY: the heap is ours, so are its pages.
    unsafe { pop_counted(heap.find_page(c), requested) }
}

/// Bytes of `p` that its carving may have touched (so may be resident).
///
/// # Safety
/// `p` is a valid page.
unsafe fn carved_bytes(p: *const Page) -> usize {
    // SAFETY: per the contract.
    let n = unsafe { (*p).capacity as usize * (*p).block_size };
    os::round_up(n, os::OS_PAGE).unwrap_or(n)
}

/// Whether the `free` list that `p`'s last block came from was zero-filled.
#[inline]
pub(crate) fn free_was_zero(p: &Page) -> bool {
    p.has(FREE_ZERO)
}

#[cfg(test)]
mod tests;
