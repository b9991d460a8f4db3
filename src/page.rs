//! Pages: runs of slices that serve blocks of one size class.
//!
//! A page keeps three free lists:
//! - `free`: what allocation pops from, and where the owning thread's
//!   frees go (last in, first out);
//! - `local_free`: blocks other threads freed, once the owner has taken
//!   them (collected from `thread_free` or settled from a batch, see
//!   `remote_batch`), and the lists the slow paths rebuild;
//! - `thread_free`: an atomic stack that other threads push freed blocks on.
//!
//! Only the segment's owning thread touches the plain fields. When `free` runs
//! dry the owner takes `thread_free` in one atomic swap, then `local_free`,
//! and only then carves fresh blocks out of the untouched end of the page, so
//! memory is touched (and becomes resident) no sooner than it is needed.
//!
//! # Why the owner's frees go on `free`
//! mimalloc pushes them on `local_free`, which becomes `free` when `free`
//! runs dry: a block freed is handed out again only after every block on
//! `free` before it, by which time a program that touches other memory in
//! between has pushed it out of the cache, and every allocation writes to
//! a cold block. Pushed on `free`, the block the next allocation of the
//! class gets is the one freed last (as from glibc's tcache): C larson
//! (random replacement of blocks of 16-1000 bytes) took a quarter fewer
//! first-level misses in cachegrind. The cost is one increment of `placed`
//! on the free fast path (see below); refills from `local_free` become
//! rare, which more than pays for it where a thread frees what it
//! allocated (callgrind, C churn: 0.8 instruction fewer per pair).
//! `FREE_ZERO` (fresh, zero blocks on `free`) is cleared by the first free
//! after such a carve, which the carve sends to the slow path (see
//! [`Page::end_free_zero`]), so the fast path does not test it.
//!
//! `used` counts blocks handed out and not yet back on `free`/`local_free`:
//! a block on `thread_free` still counts until the owner collects it. So a page
//! whose `used` is zero has no live block and no free in flight, and nobody
//! else can be touching it.
//!
//! # Which pointers are blocks
//! Every free checks that its pointer starts a block this page carved,
//! without a division: `recip` is `floor(2^64 / block_size) + 1`, so for an
//! offset `n` from the page start (below 2^22), `n * recip mod 2^64` is
//! `k * e` when `n` is the `k`-th block's start (`e = recip * block_size mod
//! 2^64`, `0 < e <= block_size`) and at least `recip` (at least 2^44)
//! otherwise. So `n * recip mod 2^64 < reserved * e` (kept in `limit`) holds
//! exactly for the starts of the page's blocks: one subtract, multiply and
//! compare (the proof is in [`block_start_recip`]; a unit test checks every
//! class and offset). A page not in use has `limit` 0, so every pointer into
//! it fails. The bound is the blocks the page holds, not those carved so
//! far, so that `limit` does not change while a block of the page is live:
//! other threads read it, as plain memory, when they free one.
//!
//! # Statistics without per-block counting
//! The fast paths count nothing but what they must: `used`, `placed` on the
//! owner's free, and with the `stats` feature the bytes requested (`req`,
//! one add). How many blocks were allocated and freed locally is worked
//! out when the heap settles the page (see [`Page::take_counts`]): blocks
//! reach the fast path only through `free`, and every block put there is
//! counted in `placed` (a run at a time by the slow paths, one at a time by
//! the owner's frees), so the allocations since the counts were last taken
//! are `placed` less what is still on `free`, and the local frees are the
//! allocations less the growth of `used` (other threads' frees, counted by
//! their freers, are kept out of that growth through `fold_used`). What is
//! still on `free` is worked out, not walked: every carved block is in use,
//! on `free`, on `local_free` or in a purged OS page, so only `local_free`
//! (other threads' collected frees, usually short) is walked, and when
//! `free` has run dry, as it has whenever the page is refilled, nothing is.

use crate::counters::COUNT_REQUESTED;
pub(crate) use crate::remote::Block;
use crate::remote::ThreadFreeStack;
use crate::remote::{next_of, set_next};
use core::mem::offset_of;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use static_assertions::const_assert;

mod mesh;
mod notify;
mod purge;
pub(crate) use mesh::LIVE_WORDS;
mod share;
pub(crate) use share::set_excluded_table;
mod shuffle;
pub(crate) use shuffle::NEVER as NO_SHUFFLE;
mod used;
pub(crate) use used::{Used, NOTIFY_EVERY};

/// The page is carved from segment slices and serves a size class.
pub(crate) const IN_USE: u8 = 1;
/// The page has no free block and sits on the heap's full list.
pub(crate) const IN_FULL: u8 = 2;
/// The page's uncarved tail is still zero (it came fresh from the OS).
pub(crate) const FRESH_TAIL: u8 = 4;
/// Every block on `free` is zero apart from its link word. While it is set,
/// every free of the owner goes to the slow path, which clears it (see
/// [`Page::end_free_zero`]).
pub(crate) const FREE_ZERO: u8 = 8;

/// How many bytes of blocks to carve at a time when a page extends its free list.
pub(crate) const EXTEND_BYTES: usize = 4096;

/// Metadata of one page; lives in the segment header, never in the page itself.
///
/// Two cache lines, kept apart so that threads freeing blocks of the page
/// (which read the second) do not share a line with the owner's writes at
/// every allocation and every settled remote free (the first). With 120
/// unaligned bytes per page, the owner's `free`, `used` and `fold_used`
/// writes (its own or a neighbouring page's) sat on the line holding
/// `start`, `recip` and `limit`, which every free reads: each remote free
/// then missed, and so did each block the owner settled after it.
#[repr(C, align(64))]
pub(crate) struct Page {
    // --- line 1: written by the owner on its fast paths and when it settles
    // other threads' frees ---
    pub(crate) free: *mut Block,
    /// Blocks in use, and the count at or below which a free by the owner
    /// needs the owner's attention (see [`Used`]).
    pub(crate) used: Used,
    /// Bytes requested by allocations from this page less those freed to it
    /// by its owner, since the counts were last taken (wrapping; `stats`).
    req: usize,
    pub(crate) local_free: *mut Block,
    /// Blocks put on `free` (at its refills and by the owner's frees, or
    /// left on it when the counts were last taken) that had not been counted
    /// as allocated yet.
    placed: u32,
    /// `used` when the counts were last taken, less other threads' frees
    /// collected since.
    fold_used: u32,
    /// Links in the owning heap's page queue (or its full list).
    pub(crate) next: *mut Page,
    pub(crate) prev: *mut Page,
    /// Carved blocks that are free and on no list: in purged units
    /// (`purged`), excluded over shared ones (`shared`), or held back
    /// (`deferred`). Owner only.
    pub(crate) purged_blocks: u16,
    /// OS pages of a one-slice page mapped onto physical memory shared with
    /// other pages (meshing at OS-page granularity, see `share`): the free
    /// blocks overlapping them are on no list (counted in `purged_blocks`)
    /// and marked in `excluded`. Owner only, slow paths only.
    pub(crate) shared: u16,
    /// Which bitmap of `share::EXCLUDED` marks this page's blocks kept off
    /// its lists because they overlap `shared` OS pages: the mesh layer's
    /// record of the page plus one (0 while `shared` is 0). Owner only.
    pub(crate) rec: u16,
    /// Rounds an empty page kept as the only one of its class has yet to
    /// wait before it is freed; 0 when not kept (see `heap::kept`). Owner
    /// only.
    pub(crate) kept: u8,
    // --- line 2: read by any thread freeing a block of the page, written
    // by the owner only on slow paths (and `thread_free` by other threads'
    // unbatched frees) ---
    pub(crate) start: *mut u8,
    /// [`block_start_recip`] of `block_size`: see the module docs.
    recip: u64,
    /// `reserved * (recip * block_size mod 2^64)`, 0 while the page is not
    /// in use: what [`is_block`](Self::is_block) compares with. Written
    /// only while no block of the page is live.
    limit: u64,
    pub(crate) block_size: usize,
    pub(crate) thread_free: ThreadFreeStack,
    /// Blocks carved so far; `capacity <= reserved`.
    pub(crate) capacity: u32,
    /// Blocks that fit in the page.
    pub(crate) reserved: u32,
    pub(crate) class: u8,
    pub(crate) flags: u8,
    /// Slices the page spans.
    pub(crate) span: u8,
    /// The first page of its class queue: the one serving new blocks of its
    /// class. Written by the owner when the queue's head changes, read by
    /// any thread (`defrag::should_move`).
    current: AtomicBool,
    /// Purge units of the page given back to the OS while it is in use (bit
    /// `o`: bytes `o * u .. (o + 1) * u` from `start`, `u` = `span` OS
    /// pages, see [`Page::unit`]), and how many carved blocks lie in them
    /// (`purged_blocks`), on no list (see `purge`). Written by the owner on slow paths only, read by any
    /// thread (a non-owner's `realloc` checks a block against it).
    pub(crate) purged: Purged,
    /// Fresh blocks carved but held back until the page is wholly carved
    /// (with the option `mesh`, see `shuffle`): free, on no list, counted
    /// in `purged_blocks`, linked in descending address order. Owner only,
    /// slow paths only.
    pub(crate) deferred: *mut Block,
}

const_assert!(size_of::<Page>() == 128);
const_assert!(offset_of!(Page, start) == 64);

/// A page's map of purged OS pages (see `purge`): written only by the
/// page's owner, read by any thread without a data race. While a block is
/// live none of its OS pages is purged, so its bits read 0 from any thread
/// that was handed the block.
#[repr(transparent)]
pub(crate) struct Purged(AtomicU16);

impl Purged {
    #[inline(always)]
    pub(crate) fn get(&self) -> u16 {
        self.0.load(Ordering::Relaxed)
    }
    /// Owner only.
    #[inline(always)]
    pub(crate) fn set(&self, m: u16) {
        self.0.store(m, Ordering::Relaxed);
    }
}

/// What a page's fast paths did since its counts were last taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Blocks handed out.
    pub(crate) allocs: u32,
    /// Blocks freed by the owner.
    pub(crate) local_frees: u32,
    /// Bytes requested less bytes freed by the owner (wrapping).
    pub(crate) requested: usize,
}

impl Page {
    /// An empty, unused page: the state of zeroed memory. A template for
    /// statics and fresh values, never shared as a constant.
    #[allow(clippy::declare_interior_mutable_const)]
    pub(crate) const EMPTY: Page = Page {
        free: ptr::null_mut(),
        used: Used::ZERO,
        class: 0,
        flags: 0,
        span: 0,
        current: AtomicBool::new(false),
        purged: Purged(AtomicU16::new(0)),
        purged_blocks: 0,
        deferred: ptr::null_mut(),
        req: 0,
        local_free: ptr::null_mut(),
        thread_free: ThreadFreeStack::new(),
        block_size: 0,
        capacity: 0,
        reserved: 0,
        start: ptr::null_mut(),
        recip: 0,
        limit: 0,
        next: ptr::null_mut(),
        prev: ptr::null_mut(),
        placed: 0,
        fold_used: 0,
        shared: 0,
        rec: 0,
        kept: 0,
    };

    #[inline(always)]
    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Marks the page as its class's current page or not. Owner only.
    #[inline]
    pub(crate) fn set_current(&self, on: bool) {
        self.current.store(on, Ordering::Relaxed);
    }

    /// Counts `n` bytes requested by a block just popped from this page.
    /// Owner only.
    #[inline(always)]
    pub(crate) fn note_alloc(&mut self, n: usize) {
        if COUNT_REQUESTED {
            self.req = self.req.wrapping_add(n);
        }
    }

    /// Pushes a free block on `local_free`, counted as a free by the owner
    /// that had asked for `requested` bytes: the lists the slow paths
    /// rebuild, and (through [`free_collected`](Self::free_collected))
    /// other threads' frees; the owner's own frees go on `free` instead
    /// ([`free_owner`](Self::free_owner)). Returns whether the page now needs the owner's attention (it
    /// became empty, or it is on the full list with enough free blocks to
    /// go back to its queue, see [`set_full`](Self::set_full)).
    ///
    /// # Safety
    /// `b` is a live block of this page, and the caller is the owning thread.
    #[inline(always)]
    pub(crate) unsafe fn free_local(&mut self, b: *mut u8, requested: usize) -> bool {
        let b = b.cast::<Block>();
        // SAFETY: the block is ours to reuse now; it is at least 16 bytes.
        unsafe { set_next(b, self.local_free) };
        self.local_free = b;
        self.note_alloc(requested.wrapping_neg());
        self.dec_used_notice()
    }

    /// Pushes a block freed by the owner's program, which had asked for
    /// `requested` bytes, on `free`, where the next allocation of the class
    /// takes it back while it is still in cache (last in, first out, as
    /// glibc's tcache; see "Why `free`" in the module notes). Returns what
    /// [`free_local`](Self::free_local) returns.
    ///
    /// # Safety
    /// As for [`free_local`](Self::free_local).
    #[inline(always)]
    pub(crate) unsafe fn free_owner(&mut self, b: *mut u8, requested: usize) -> bool {
        let b = b.cast::<Block>();
        // SAFETY: the block is ours to reuse now; it is at least 16 bytes.
        unsafe { set_next(b, self.free) };
        self.free = b;
        // Put on `free`: counted as placed, so that what leaves `free` is
        // still the allocations (see `take_counts`).
        self.placed = self.placed.wrapping_add(1);
        self.note_alloc(requested.wrapping_neg());
        self.dec_used_notice()
    }

    /// Pushes a block another thread freed, and counted, and handed to the
    /// owner in a batch (see `remote_batch`). Returns what
    /// [`free_local`](Self::free_local) returns.
    ///
    /// # Safety
    /// As for [`free_local`](Self::free_local).
    #[inline]
    pub(crate) unsafe fn free_collected(&mut self, b: *mut u8) -> bool {
        // Its freer counted the free: keep it out of the local frees.
        self.fold_used = self.fold_used.wrapping_sub(1);
        // SAFETY: per the contract.
        unsafe { self.free_local(b, 0) }
    }

    /// Moves frees made by other threads onto `local_free`. Owner only.
    /// Returns how many blocks came back.
    pub(crate) fn collect_thread_free(&mut self) -> u32 {
        // The swap, the walk and the append are `remote`'s, checked by loom.
        let Some((head, n)) = self.thread_free.take_all(self.local_free, self.capacity) else {
            crate::fatal(
                "double free (a block freed twice by other threads: its page's list of remote frees loops)",
                self.start,
            );
        };
        if n == 0 {
            return 0;
        }
        if self.off_list() {
            // Blocks of purged OS pages are free already (see `purge`), and
            // so are the excluded blocks of shared ones (see `share`).
            let mut b = head;
            for _ in 0..n {
                self.check_not_purged(b.cast());
                // SAFETY: the first `n` blocks from `head` are the ones
                // just taken, each with its link.
                b = unsafe { next_of(b) };
            }
        }
        self.local_free = head;
        self.used.set(self.used.get().wrapping_sub(n));
        // Their freers counted these frees.
        self.fold_used = self.fold_used.wrapping_sub(n);
        n
    }

    /// What the fast paths did since the counts were last taken; starts
    /// counting afresh. `walk` counts the blocks still on `free` (see
    /// [`free_len`](Self::free_len); needed unless `free` is empty, as it
    /// is when the page is refilled). Owner only.
    pub(crate) fn take_counts(&mut self, walk: bool) -> Counts {
        let left = if walk { self.free_len() } else { 0 };
        debug_assert!(walk || self.free.is_null());
        let allocs = self.placed.wrapping_sub(left);
        let grown = self.used.get().wrapping_sub(self.fold_used);
        let counts = Counts {
            allocs,
            local_frees: allocs.wrapping_sub(grown),
            requested: self.req,
        };
        self.placed = left;
        self.fold_used = self.used.get();
        self.req = 0;
        counts
    }

    /// Blocks on `free`, without walking it: every carved block is live
    /// (in `used`, those on `thread_free` included), on `free`, on
    /// `local_free`, or in a purged OS page or excluded (`purged_blocks`).
    /// Only `local_free` is walked, which holds nothing but collected frees
    /// of other threads: walking `free` instead, a whole page of cold links
    /// when the page had emptied, took 13% of the time of a program that
    /// frees most of its blocks at random (`fragment`, perf).
    fn free_len(&self) -> u32 {
        let off_free = self.used.get() + u32::from(self.purged_blocks) + self.local_free_len();
        let n = self.capacity.wrapping_sub(off_free);
        debug_assert_eq!(n, Self::list_len(self.free, self.capacity));
        n
    }

    /// Blocks on `local_free`, walking at most `capacity` links (a
    /// corrupted list cannot make this loop forever).
    fn local_free_len(&self) -> u32 {
        Self::list_len(self.local_free, self.capacity)
    }

    /// Links from `head` to the end of its list, at most `cap`.
    fn list_len(head: *mut Block, cap: u32) -> u32 {
        let mut n = 0;
        let mut b = head;
        while !b.is_null() && n < cap {
            n += 1;
            // SAFETY: blocks on the owner's lists are valid and hold links
            // the owner wrote.
            b = unsafe { next_of(b) };
        }
        n
    }

    /// Makes the page ready to serve blocks of `block_size` bytes from
    /// `reserved` blocks at `start`, with nothing carved and nothing counted.
    pub(crate) fn reset(&mut self, start: *mut u8, block_size: usize, reserved: u32) {
        self.free = ptr::null_mut();
        self.local_free = ptr::null_mut();
        self.used.set(0);
        self.set_current(false);
        self.capacity = 0;
        self.reserved = reserved;
        self.block_size = block_size;
        self.start = start;
        self.recip = block_start_recip(block_size);
        self.limit = u64::from(reserved) * self.recip.wrapping_mul(block_size as u64);
        self.req = 0;
        self.placed = 0;
        self.fold_used = 0;
        self.purged.set(0);
        self.purged_blocks = 0;
        self.deferred = ptr::null_mut();
        self.shared = 0;
        self.rec = 0;
        self.kept = 0;
        self.used.set_notify_at(0);
    }

    /// Makes `free` non-empty if the page has any block left, once other
    /// threads' frees have been collected: takes the local frees, or carves
    /// more of the page. Returns whether `free` is non-empty. Owner only.
    /// (The heap carves through [`refill_local_by`](Self::refill_local_by).)
    #[cfg(test)]
    pub(crate) fn refill_local(&mut self) -> bool {
        self.refill_local_by(EXTEND_BYTES, &mut shuffle::NEVER.clone())
    }

    /// [`refill_local`](Self::refill_local), carving about `bytes` of
    /// blocks if it carves (at least one block), from a random start with
    /// the option `mesh` on, drawn from `rng` (the heap's generator, see
    /// `shuffle`; never if it is `NO_SHUFFLE`).
    pub(crate) fn refill_local_by(&mut self, bytes: usize, rng: &mut u64) -> bool {
        if !self.free.is_null() {
            return true;
        }
        if !self.local_free.is_null() {
            self.free = self.local_free;
            self.local_free = ptr::null_mut();
            self.end_free_zero();
            // Every carved block that is neither live nor in a purged OS
            // page was on `local_free`.
            self.placed = self
                .placed
                .wrapping_add(self.capacity - self.used.get() - u32::from(self.purged_blocks));
            return true;
        }
        if self.capacity < self.reserved {
            self.extend(bytes, rng);
            return true;
        }
        if !self.deferred.is_null() {
            self.take_deferred();
            return true;
        }
        if self.purged.get() != 0 {
            return self.unpurge_next();
        }
        false
    }

    /// Carves about `bytes` of fresh blocks (at least one) from the
    /// untouched end onto `free` (which is empty), in address order; with
    /// the option `mesh` on, a page's first carve starts at a block drawn
    /// from `rng` and holds the ones before it back (`shuffle`).
    ///
    /// Out of line: inlined with the shuffle's branch, it made the heap's
    /// refill too big to be inlined into `find_page`, which cost every
    /// refill (every batch of `free` taken back from `local_free`) about 3
    /// instructions with meshing off (callgrind, C churn).
    #[inline(never)]
    fn extend(&mut self, bytes: usize, rng: &mut u64) {
        let left = (self.reserved - self.capacity) as usize;
        let n = (bytes / self.block_size).clamp(1, left);
        let bs = self.block_size;
        let mut held = 0;
        if self.capacity == 0 && n > 1 && crate::options::MESH.get() != 0 && *rng != shuffle::NEVER
        {
            debug_assert!(self.deferred.is_null());
            // SAFETY: as below; `deferred` is empty (nothing carved yet).
            let (free, h) = unsafe { shuffle::carve(self.start, n, bs, rng, &mut self.deferred) };
            self.free = free;
            held = h;
            self.purged_blocks += h as u16;
        } else {
            self.carve_in_order(n);
        }
        self.capacity += n as u32;
        self.placed = self.placed.wrapping_add((n - held) as u32);
        if self.has(FRESH_TAIL) {
            self.start_free_zero();
        } else {
            self.end_free_zero();
        }
    }

    /// Puts the blocks the carves held back (`deferred`) on `free` (which
    /// is empty), in address order: the page is wholly carved. Owner only.
    #[cold]
    fn take_deferred(&mut self) {
        let mut n = 0u32;
        let mut head: *mut Block = ptr::null_mut();
        let mut b = self.deferred;
        // SAFETY: `deferred` links carved free blocks of this page that no
        // one else refers to; reversing it writes only their links.
        unsafe {
            while !b.is_null() && n < self.capacity {
                let next = next_of(b);
                set_next(b, head);
                head = b;
                b = next;
                n += 1;
            }
        }
        debug_assert!(b.is_null() && n <= u32::from(self.purged_blocks));
        self.deferred = ptr::null_mut();
        self.free = head;
        self.purged_blocks -= n as u16;
        self.placed = self.placed.wrapping_add(n);
        // Their bytes past the link may be zero or not: calloc must zero.
        self.end_free_zero();
    }

    /// Links the `n` blocks from `capacity` on onto `free`, in address
    /// order.
    fn carve_in_order(&mut self, n: usize) {
        let bs = self.block_size;
        // SAFETY: blocks `capacity .. capacity + n` lie inside the page, which
        // the segment reserved for it; nobody else refers to them yet.
        unsafe {
            let first = self.start.add(self.capacity as usize * bs);
            let mut b = first;
            for _ in 1..n {
                let next = b.add(bs);
                set_next(b.cast(), next.cast());
                b = next;
            }
            set_next(b.cast(), ptr::null_mut());
            self.free = first.cast();
        }
    }

    /// Whether `p` lies in the carved part of this page.
    #[inline]
    pub(crate) fn holds(&self, p: *const u8) -> bool {
        (p as usize).wrapping_sub(self.start as usize) < self.capacity as usize * self.block_size
    }

    /// Whether `p`, a pointer into this page's slices, is the start of one
    /// of its blocks: one subtract, multiply and compare (see the module
    /// docs). False for every pointer into a page not in use. Any thread
    /// may ask about a page one of whose blocks it holds (which keeps the
    /// fields read here unchanged).
    #[inline(always)]
    pub(crate) fn is_block(&self, p: *const u8) -> bool {
        let n = (p as usize).wrapping_sub(self.start as usize) as u64;
        n.wrapping_mul(self.recip) < self.limit
    }

    /// Marks the page not in use, with no block: every pointer into it now
    /// fails [`is_block`](Self::is_block). Owner only, once
    /// no block of it is live.
    pub(crate) fn close(&mut self) {
        debug_assert_eq!(self.purged.get(), 0, "a page closed with purged OS pages");
        debug_assert_eq!(self.shared, 0, "a page closed with shared OS pages");
        self.flags = 0;
        self.free = ptr::null_mut();
        self.local_free = ptr::null_mut();
        self.deferred = ptr::null_mut();
        self.limit = 0;
    }

    /// Whether `p` is the start of a carved block of this page.
    #[cfg(feature = "secure")]
    pub(crate) fn is_block_start(&self, p: *const u8) -> bool {
        self.holds(p) && (p as usize - self.start as usize) % self.block_size == 0
    }

    /// Whether the block `b` is free: on `free`, `local_free` or `thread_free`,
    /// or in the page's purged OS pages (see `purge`). Walks the lists, so only for a block that looks freed (it carries the
    /// mark of `freed`, or with `secure` its first word decodes to a link of
    /// this page), and only when `b`'s first word could be a link of this
    /// page, as it is after a free. Owner only.
    pub(crate) fn is_free_block(&self, b: *const u8) -> bool {
        if self.in_purged(b) {
            return true; // free, its memory given back (see `purge`)
        }
        // SAFETY: the page is ours; its lists hold valid blocks, and blocks
        // pushed on `thread_free` stay valid until we take them.
        unsafe {
            let first = next_of(b.cast());
            if !first.is_null() && !self.holds(first.cast()) {
                return false; // live data, not a link
            }
            let on = |mut x: *mut Block| {
                let mut steps = self.capacity;
                while !x.is_null() && steps > 0 {
                    if x.cast::<u8>() == b.cast_mut() {
                        return true;
                    }
                    x = next_of(x);
                    steps -= 1;
                }
                false
            };
            on(self.free) || on(self.local_free) || on(self.thread_free.peek()) || on(self.deferred)
        }
    }

    /// Number of blocks a new page of `span_bytes` bytes holds for `block_size`.
    pub(crate) const fn blocks_in(span_bytes: usize, block_size: usize) -> u32 {
        (span_bytes / block_size) as u32
    }
}

/// `floor(2^64 / d) + 1` for a block size `d` (`1 < d <= 2^20`): with it
/// an offset `n < 2^22` is a multiple of `d` exactly when `n * recip mod
/// 2^64 < recip`, and the multiples map in order to `k * e`, `e = recip * d
/// mod 2^64`, which is what lets [`Page::is_block`] bound the index
/// with the same compare.
///
/// Why: `recip * d = 2^64 + e` with `0 < e <= d` (`e = d` for a power of
/// two). For `n = q * d + r`, `0 <= r < d`: `n * recip = q * 2^64 + q * e +
/// r * recip`. With `r = 0` that is `q * e mod 2^64 = q * e` (`q * e <= n <
/// 2^22`). With `r > 0`, `r * recip < 2^64 - 2^44 + 2^20` (as `recip <=
/// 2^64 / d + 1`) and `q * e < 2^22`, so the sum is below 2^64 and at
/// least `recip >= 2^44`, above every `k * e` of a block in a page.
pub(crate) const fn block_start_recip(d: usize) -> u64 {
    // `floor(2^64 / d)` in 64-bit arithmetic (a 128-bit division is a call
    // to compiler-builtins): `(2^64 - 1) / d`, one more when `d` divides 2^64.
    u64::MAX / d as u64 + d.is_power_of_two() as u64 + 1
}

/// Whether a page with `used` of its `reserved` blocks live is worth
/// emptying by moving its blocks out (see `defrag`): at most half are live.
/// A page with one block never is (moving it would free one page and fill
/// another).
#[inline(always)]
pub(crate) const fn sparse(used: u32, reserved: u32) -> bool {
    (used as u64) * 2 <= reserved as u64
}

/// What any thread may read of the in-use page `page` while one of its
/// blocks is live: blocks in use (an approximation when another thread owns
/// the page: it may be changing), blocks it holds, and whether it is the
/// current page of its class. Takes no reference to the page, whose owner
/// may be writing its other fields.
///
/// # Safety
/// `page` is the page of a live block.
#[inline(always)]
pub(crate) unsafe fn occupancy(page: *const Page) -> (u32, u32, bool) {
    // SAFETY: per the contract the page is in use and stays so; `used` and
    // `current` are atomics, and `reserved` does not change while a block
    // of the page is live (it is set before the page's first block is
    // handed out, which happens-before the block reached the caller).
    unsafe {
        (
            (*ptr::addr_of!((*page).used)).get(),
            ptr::addr_of!((*page).reserved).read(),
            (*ptr::addr_of!((*page).current)).load(Ordering::Relaxed),
        )
    }
}

/// The size class of the in-use page `page` while one of its blocks is
/// live, read by any thread as [`occupancy`] reads `reserved`: set before
/// the page's first block is handed out, and unchanged until it is closed.
///
/// # Safety
/// `page` is the page of a live block.
#[inline(always)]
pub(crate) unsafe fn live_class(page: *const Page) -> usize {
    // SAFETY: per the contract, as for `reserved` in `occupancy`.
    unsafe { ptr::addr_of!((*page).class).read() as usize }
}

/// Pops a block from `page`'s `free` list, or returns null when it is empty.
///
/// Takes a raw pointer because the heap's unused direct slots all point at one
/// shared, always-empty page; for it this only reads `free` (null) and returns.
///
/// # Safety
/// `page` is valid, and either the calling thread owns it or its `free` is null
/// forever (the shared empty page).
#[inline(always)]
pub(crate) unsafe fn pop(page: *mut Page) -> *mut u8 {
    // SAFETY: per the contract, `page` is valid and ours (or never written).
    unsafe {
        let b = (*page).free;
        if b.is_null() {
            return ptr::null_mut();
        }
        // Blocks on `free` hold the link written when they were put there.
        let next = next_of(b);
        // Handed out: no longer looks freed (see `freed`).
        crate::freed::clear(b.cast());
        #[cfg(feature = "secure")]
        {
            if !next.is_null() && !(*page).holds(next.cast()) {
                crate::fatal(
                    "corrupted free list (a freed block was overwritten)",
                    b.cast(),
                );
            }
            // Clear the link: a block handed out must not look freed to the
            // double-free check if the program never writes its first word.
            b.cast::<usize>().write(0);
        }
        (*page).free = next;
        (*page).used.inc();
        b.cast()
    }
}

/// Pushes `b`, freed by a thread that does not own its page, on `thread_free`.
/// Lock-free: one CAS in the common case. After the CAS succeeds the page may be
/// collected and reused at once, so nothing of it is touched afterwards.
///
/// # Safety
/// `b` is a live block of `page`, and the caller gives up all access to it.
#[inline]
pub(crate) unsafe fn free_remote(page: &Page, b: *mut u8) {
    // SAFETY: per the contract the block is live and given up; it stays valid
    // until the owner takes it, since its page stays in use until then.
    unsafe { page.thread_free.push(b.cast()) }
}

/// What the page map (`pagemap`) shows of a page: read from a private copy
/// of its segment's header, so the figures may be torn if the owner was
/// changing them while the copy was taken (the caller checks them).
#[derive(Clone, Copy)]
pub(crate) struct PageView {
    pub(crate) in_use: bool,
    pub(crate) class: u8,
    pub(crate) span: u8,
    pub(crate) used: u32,
    pub(crate) reserved: u32,
    pub(crate) block_size: usize,
    /// The page serving new blocks of its class.
    pub(crate) current: bool,
}

/// Reads the [`PageView`] of `page`.
///
/// # Safety
/// `page` points into a copy of a segment header that no other thread
/// writes. Any bytes will do: the boolean `current` is read as a byte.
pub(crate) unsafe fn view(page: *const Page) -> PageView {
    // SAFETY: per the contract the copy is ours and readable; every field
    // read here is an integer (any bit pattern is valid), `current` read
    // through a byte pointer.
    unsafe {
        PageView {
            in_use: (*page).flags & IN_USE != 0,
            class: (*page).class,
            span: (*page).span,
            used: (*page).used.get(),
            reserved: (*page).reserved,
            block_size: (*page).block_size,
            current: ptr::addr_of!((*page).current).cast::<u8>().read() != 0,
        }
    }
}

#[cfg(test)]
mod tests;
