//! Statistics: what segalloc holds, and where the memory went.
//!
//! Three kinds of figures:
//! - counted only on slow paths (page, segment and OS events, cross-thread
//!   frees, reallocations, large objects): committed, mapped, metadata, free
//!   pages, pages per class, resident;
//! - worked out from what each page's fast paths leave behind, at slow-path
//!   events (see `page`): allocations, frees and live blocks per class, and so
//!   `allocated` and the split of external fragmentation; the fast paths pay
//!   nothing for them;
//! - with the cargo feature `stats` (on by default), `requested`, and so
//!   internal fragmentation: the one figure the fast paths count, one add on
//!   the page per allocation and per free. Without the feature small blocks'
//!   `requested` reads 0 (large blocks are always counted). With the feature
//!   `override` (the C front end, where `free` does not say the size), every
//!   small block counts as wholly requested and nothing is counted per block:
//!   `requested` is the live blocks times their size.
//!
//! Counting is per thread and costs no atomic read-modify-write: each heap
//! keeps its own counters ([`HeapCounters`]), which only its thread writes
//! (a relaxed load and store, i.e. a plain add) and any thread may read. All
//! counters are deltas that are never reset, so a block allocated by one thread
//! and freed by another is +1 on one heap and -1 on the other, and the sum over
//! every heap is exact. Heaps of exited threads go back to a pool with their
//! counters intact, and [`stats`] sums over every heap ever made, so nothing is
//! lost when threads exit. A thread that frees before it ever allocated counts
//! into a shared set of atomic counters instead (a cold path).
//!
//! A page's counts reach its heap's counters whenever its `free` list runs dry
//! (every page in use does, at least once per its capacity of allocations),
//! when it is freed, and when its thread exits; [`stats`] and
//! [`thread_stats`] take the calling thread's own pages' counts first. So a
//! snapshot is exact for the calling thread and for threads that have exited,
//! and for each other running thread it may lag by what that thread's pages
//! did since their `free` lists last ran dry: at most one page's worth of
//! blocks (its capacity) per page in use. Frees by other threads are
//! counted at once, by the freer, so the lag can leave a class with more
//! frees than allocations counted (its row of [`stats`] then reads as a
//! wrapping delta below zero, which the table prints signed), and a process
//! with little live can have more in all; [`stats`] reads such totals
//! (`allocated`, `requested`, `free_in_pages`) as 0 or what the pages hold,
//! rather than as a negative number wrapped to about 2^64.
//!
//! Large objects and OS calls are counted with shared atomics: each such event
//! is a system call anyway.
//!
//! Where the committed memory goes (all in bytes):
//! ```text
//! committed = allocated + metadata + external
//! external  = free_in_pages + free_pages
//! ```
//! - `allocated`: live small blocks at their block size, plus large blocks at
//!   their usable size;
//! - `metadata`: segment headers, heaps, and each large block's header page;
//! - `free_in_pages`: the rest of the pages in use: free blocks (including
//!   those freed by other threads and not yet collected, `remote_pending`),
//!   blocks never carved yet, and the tail that fits no block;
//! - `free_pages`: wholly free pages the heaps still hold, resident, ready
//!   for reuse until they are purged, and freed large blocks held by the
//!   large-block cache (also shown alone as `large_cached`).

use crate::counters::{HeapCounters, LargeCounts, SHARED};
use crate::heap::span_for;
use crate::os::{self, OS_PAGE};
use crate::segment::{Segment, SLICE_SIZE};
use crate::size_class::{class_size, NUM_CLASSES};
use core::sync::atomic::Ordering;

/// Small blocks count as wholly requested: the C front end's build, where
/// nothing counts requested bytes (see `counters::COUNT_REQUESTED`).
const WHOLE_BLOCKS: bool = cfg!(all(feature = "stats", feature = "override"));

/// Figures of one size class in a [`Stats`] snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Block size of the class, in bytes.
    pub block_size: usize,
    /// Blocks handed out and not yet freed.
    pub live_blocks: usize,
    /// Bytes asked for by the live blocks (the sum of their layouts' sizes).
    pub requested: usize,
    /// Pages of this class in use.
    pub pages: usize,
    /// Blocks of those pages that are not live (free, freed by another thread
    /// and not yet collected, or not yet carved).
    pub free_blocks: usize,
}

/// A snapshot of segalloc's memory, from [`stats`] or [`thread_stats`].
///
/// Byte figures are fields; derived figures are methods. After all threads
/// that allocated have joined, `requested` is exact to the byte and
/// `committed == allocated + metadata + external_fragmentation()` holds
/// exactly. While other threads run, each counter is read whole but they are
/// not read at one instant, so a snapshot may be off by what changed while it
/// was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Bytes asked for by live allocations (the sum of their layouts' sizes).
    pub requested: usize,
    /// Bytes handed out for them: block sizes, and usable sizes of large blocks.
    pub allocated: usize,
    /// Memory obtained from the OS and not given back (touched or dirty).
    pub committed: usize,
    /// Resident memory of the whole process (from /proc/self/statm), or 0
    /// where it cannot be read. While merged pages exist (see
    /// [`crate::mesh()`]) each counts once, not once per address that
    /// touched it as the kernel's RSS does (read from `/proc/self/smaps`).
    pub resident: usize,
    /// Address space segalloc has reserved from the OS.
    pub mapped: usize,
    /// segalloc's own bookkeeping: segment headers, heaps, large-block headers.
    pub metadata: usize,
    /// Free blocks inside pages in use (part of external fragmentation),
    /// less the OS pages of them given back to the OS (`purged_in_pages`).
    pub free_in_pages: usize,
    /// Bytes of pages in use given back to the OS because they held only
    /// free blocks (sub-page purge; counted in neither `committed` nor
    /// `free_in_pages`). Each purge also counts in `os_calls.purged`.
    pub purged_in_pages: usize,
    /// Bytes of pages in use that meshing at OS-page granularity gives back
    /// now: OS pages mapped onto another page's physical OS page (see
    /// [`crate::mesh()`]; counted in neither `committed` nor
    /// `free_in_pages`).
    pub meshed_in_pages: usize,
    /// Wholly free pages held, still resident (part of external fragmentation),
    /// including the freed large blocks kept in the cache (`large_cached`).
    pub free_pages: usize,
    /// Bytes of blocks freed by other threads and not yet collected by their
    /// owner: the nearest thing segalloc has to blocks parked in thread caches.
    /// Already included in `free_in_pages`.
    pub remote_pending: usize,
    /// Allocations made (small and large).
    pub allocations: usize,
    /// Frees made (small and large).
    pub frees: usize,
    /// Reallocations that kept the block where it was.
    pub reallocs_in_place: usize,
    /// Reallocations that moved the block (large ones moved by mremap count
    /// as in place: no byte is copied).
    pub reallocs_moved: usize,
    /// Frees of blocks owned by another thread's heap (or an abandoned one).
    pub cross_thread_frees: usize,
    /// Pages made from segment slices.
    pub pages_obtained: usize,
    /// Pages given back to their segment.
    pub pages_returned: usize,
    /// Segments obtained from the OS.
    pub segments_obtained: usize,
    /// Segments given back to the OS.
    pub segments_returned: usize,
    /// Segments whose thread exited with live blocks, waiting to be reclaimed.
    pub segments_abandoned: usize,
    /// Live large (directly mapped) objects.
    pub large_objects: usize,
    /// Usable bytes of the live large objects.
    pub large_bytes: usize,
    /// Bytes of freed large blocks kept mapped for reuse (at most 128 MiB;
    /// unmapped when unused for 100 ms, or by [`collect`](crate::collect)).
    /// Already included in `free_pages`; not in `large_objects` or
    /// `large_bytes`, which count live blocks only.
    pub large_cached: usize,
    /// Live small blocks the heap profiler sampled (feature `profiling`;
    /// else 0): each is served by a mapping of its own (see
    /// [`crate::profile`]) but counted as the block it stands for, in
    /// [`live_blocks`](Self::live_blocks), `allocations`, `requested` and
    /// `allocated` (at its size class's block size), not in `large_objects`
    /// nor in its class's row (whose figures are those of its pages). The
    /// rest of its mapping is the profiler's overhead, in `metadata`.
    pub sampled_objects: usize,
    /// Block bytes of the [`sampled_objects`](Self::sampled_objects) (their
    /// size classes' block sizes), part of `allocated`.
    pub sampled_bytes: usize,
    /// System calls: mmap, munmap, madvise, mremap, brk.
    pub os_calls: OsCalls,
    /// Meshing, process-wide (see [`crate::mesh()`]): pages merged, bytes
    /// the merged pages give back now (already out of `committed` and
    /// `resident`).
    pub mesh: crate::MeshStats,
    /// Per size class, indexed by class.
    pub classes: [ClassStats; NUM_CLASSES],
}

/// System calls made so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OsCalls {
    /// `mmap` calls.
    pub mmap: usize,
    /// `munmap` calls.
    pub munmap: usize,
    /// `madvise` calls (purges).
    pub madvise: usize,
    /// `mremap` calls.
    pub mremap: usize,
    /// `sbrk` calls.
    pub brk: usize,
    /// Mappings refused because they would have passed the memory limit
    /// (the option `limit`): each is an allocation that failed.
    pub limit_hits: usize,
    /// Of the `madvise` calls, purges (`MADV_DONTNEED`) ...
    pub purges: usize,
    /// ... and the bytes they covered (whether resident or not).
    pub purged: usize,
}

impl Stats {
    fn zero() -> Stats {
        Stats {
            requested: 0,
            allocated: 0,
            committed: 0,
            resident: 0,
            mapped: 0,
            metadata: 0,
            free_in_pages: 0,
            purged_in_pages: 0,
            meshed_in_pages: 0,
            free_pages: 0,
            remote_pending: 0,
            allocations: 0,
            frees: 0,
            reallocs_in_place: 0,
            reallocs_moved: 0,
            cross_thread_frees: 0,
            pages_obtained: 0,
            pages_returned: 0,
            segments_obtained: 0,
            segments_returned: 0,
            segments_abandoned: 0,
            large_objects: 0,
            large_bytes: 0,
            large_cached: 0,
            sampled_objects: 0,
            sampled_bytes: 0,
            os_calls: OsCalls::default(),
            mesh: crate::MeshStats::default(),
            classes: [ClassStats::default(); NUM_CLASSES],
        }
    }

    /// Bytes handed out beyond what was asked: `allocated - requested`.
    pub fn internal_fragmentation(&self) -> usize {
        self.allocated.saturating_sub(self.requested)
    }

    /// [`internal_fragmentation`](Self::internal_fragmentation) over `allocated`
    /// (0 when nothing is allocated).
    pub fn internal_fragmentation_ratio(&self) -> f64 {
        ratio(self.internal_fragmentation(), self.allocated)
    }

    /// Committed bytes that are neither handed out nor metadata:
    /// `free_in_pages + free_pages`.
    pub fn external_fragmentation(&self) -> usize {
        self.free_in_pages + self.free_pages
    }

    /// [`external_fragmentation`](Self::external_fragmentation) over `committed`
    /// (0 when nothing is committed).
    pub fn external_fragmentation_ratio(&self) -> f64 {
        ratio(self.external_fragmentation(), self.committed)
    }

    /// Live blocks, small and large (the profiler's
    /// [`sampled_objects`](Self::sampled_objects) among the small). (Per-class
    /// figures are wrapping deltas that may stand below zero one by one
    /// (always in one thread's snapshot, [`thread_stats`]; in [`stats`]
    /// while other threads run), and are summed as such.)
    pub fn live_blocks(&self) -> usize {
        self.classes.iter().fold(
            self.large_objects.wrapping_add(self.sampled_objects),
            |n, c| n.wrapping_add(c.live_blocks),
        )
    }

    /// Adds one heap's counters.
    fn add_heap(&mut self, h: &HeapCounters) {
        for (c, (row, k)) in self.classes.iter_mut().zip(h.class.iter()).enumerate() {
            let pending = k.remote_pending.get().wrapping_mul(class_size(c));
            self.remote_pending = self.remote_pending.wrapping_add(pending);
            row.live_blocks = row
                .live_blocks
                .wrapping_add(k.allocs.get().wrapping_sub(k.frees.get()));
            row.requested = row.requested.wrapping_add(k.requested.get());
            row.pages = row.pages.wrapping_add(k.pages.get());
            self.allocations = self.allocations.wrapping_add(k.allocs.get());
            self.frees = self.frees.wrapping_add(k.frees.get());
        }
        self.reallocs_in_place = self
            .reallocs_in_place
            .wrapping_add(h.realloc_in_place.get());
        self.reallocs_moved = self.reallocs_moved.wrapping_add(h.realloc_moved.get());
        self.cross_thread_frees = self.cross_thread_frees.wrapping_add(h.remote_frees.get());
        self.pages_obtained = self.pages_obtained.wrapping_add(h.pages_obtained.get());
        self.pages_returned = self.pages_returned.wrapping_add(h.pages_returned.get());
        self.free_pages = self.free_pages.wrapping_add(h.dirty_bytes.get());
        self.purged_in_pages = self.purged_in_pages.wrapping_add(h.purged_in_pages.get());
        self.meshed_in_pages = self.meshed_in_pages.wrapping_add(h.meshed_in_pages.get());
        self.committed = self.committed.wrapping_add(h.used_slices.get());
    }

    /// Turns the summed counters into figures. Until here `committed` holds
    /// a slice count, `requested` the large objects' bytes (the profiler's
    /// sampled blocks' among them), and `metadata` the bytes of the sampled
    /// blocks' mappings beyond their blocks.
    ///
    /// `Lag::Clamp` (the process-wide snapshot): small blocks' bytes in
    /// all, allocated or requested, that stand below zero read 0, and
    /// `free_in_pages` never exceeds what the pages hold. That happens only
    /// while threads run: another thread's free of a block is counted at
    /// once by the freer, the owner's allocation when its page's free list
    /// runs dry, so a process with little live and blocks allocated lately
    /// and freed elsewhere shows more frees than allocations until the
    /// owners fold their counts (see the module docs); unclamped, the totals
    /// wrapped to about 2^64. The class rows stay wrapping deltas either way
    /// (the table prints them signed), so that the difference of two
    /// snapshots' rows is exact. `Lag::Wrap` keeps the totals as deltas too
    /// (one thread's or one heap's counters, where a block freed here but
    /// allocated elsewhere is -1 by design).
    fn finish(&mut self, segments: usize, heap_meta: usize, lag: Lag) {
        let used_bytes = self.committed.wrapping_mul(SLICE_SIZE);
        let mut small_allocated = 0usize;
        let mut small_requested = 0usize;
        for (c, row) in self.classes.iter_mut().enumerate() {
            let bs = class_size(c);
            row.block_size = bs;
            let capacity = row.pages.wrapping_mul(span_for(bs) * SLICE_SIZE / bs);
            row.free_blocks = capacity.wrapping_sub(row.live_blocks);
            if WHOLE_BLOCKS {
                row.requested = row.live_blocks.wrapping_mul(bs);
            }
            small_allocated = small_allocated.wrapping_add(row.live_blocks.wrapping_mul(bs));
            small_requested = small_requested.wrapping_add(row.requested);
        }
        // Purged OS pages of pages in use are neither committed nor free.
        let used_bytes = used_bytes
            .wrapping_sub(self.purged_in_pages)
            .wrapping_sub(self.meshed_in_pages);
        if lag == Lag::Clamp {
            small_allocated = below_zero_to_zero(small_allocated);
            small_requested = below_zero_to_zero(small_requested);
            self.free_in_pages = used_bytes.saturating_sub(small_allocated);
        } else {
            self.free_in_pages = used_bytes.wrapping_sub(small_allocated);
        }
        let header = os::round_up(core::mem::size_of::<Segment>(), OS_PAGE).unwrap_or(0);
        // Each large block's header page, and each sampled block's too.
        let headers = self.large_objects.wrapping_add(self.sampled_objects) * OS_PAGE;
        self.metadata =
            (segments.wrapping_mul(header) + heap_meta + headers).wrapping_add(self.metadata);
        let blocks = self.large_bytes.wrapping_add(self.sampled_bytes);
        self.allocated = small_allocated.wrapping_add(blocks);
        self.requested = small_requested.wrapping_add(self.requested);
        self.committed = used_bytes
            .wrapping_add(self.free_pages)
            .wrapping_add(self.metadata)
            .wrapping_add(blocks);
    }
}

/// What [`Stats::finish`] does with totals that stand below zero.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lag {
    /// Read them as 0: a process-wide snapshot, where they are lag.
    Clamp,
    /// Keep the wrapping deltas: one thread's or one heap's counters.
    Wrap,
}

/// `v` read as a signed count: 0 if it stands below zero.
fn below_zero_to_zero(v: usize) -> usize {
    if (v as isize) < 0 {
        0
    } else {
        v
    }
}

pub(super) fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// A snapshot of the whole process: every thread's heap, large objects, and
/// the OS calls made. Callable at any time from any thread; it does not
/// allocate.
///
/// ```
/// #[global_allocator]
/// static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;
///
/// let before = segalloc::stats().requested;
/// let v = vec![0u8; 1000];
/// let s = segalloc::stats();
/// assert_eq!(s.requested - before, 1000);
/// assert!(s.allocated >= s.requested);
/// drop(v);
/// ```
pub fn stats() -> Stats {
    crate::thread::fold_own_counts();
    let mut s = Stats::zero();
    crate::thread::for_each_heap(|h| s.add_heap(h));
    let sh = &SHARED;
    for c in 0..NUM_CLASSES {
        let frees = sh.orphan_frees[c].load(Ordering::Relaxed);
        let row = &mut s.classes[c];
        row.live_blocks = row.live_blocks.wrapping_sub(frees);
        row.requested = row
            .requested
            .wrapping_sub(sh.orphan_requested[c].load(Ordering::Relaxed));
        s.frees = s.frees.wrapping_add(frees);
        let p = sh.orphan_pending[c].load(Ordering::Relaxed);
        s.remote_pending = s.remote_pending.wrapping_add(p.wrapping_mul(class_size(c)));
    }
    let la = sh.large_allocs.load(Ordering::Relaxed);
    let lf = sh.large_frees.load(Ordering::Relaxed);
    s.large_objects = la.wrapping_sub(lf);
    s.large_bytes = sh.large_usable.load(Ordering::Relaxed);
    s.requested = sh.large_requested.load(Ordering::Relaxed);
    s.allocations = s.allocations.wrapping_add(la);
    s.frees = s.frees.wrapping_add(lf);
    #[cfg(feature = "profiling")]
    take_sampled(&mut s);
    s.reallocs_in_place = s
        .reallocs_in_place
        .wrapping_add(sh.large_reallocs.load(Ordering::Relaxed));
    let obtained = sh.segments_obtained.load(Ordering::Relaxed);
    let returned = sh.segments_returned.load(Ordering::Relaxed);
    s.segments_obtained = obtained;
    s.segments_returned = returned;
    s.segments_abandoned = crate::segment::ABANDONED.len();
    // Free slices of kept segments are resident: count them as free pages,
    // and so the cached large blocks.
    s.large_cached = crate::large_cache::cached_bytes();
    s.free_pages = s
        .free_pages
        .wrapping_add(crate::segment::CACHED_DIRTY.load(Ordering::Relaxed))
        .wrapping_add(s.large_cached)
        .wrapping_add(sampled_cached());
    s.finish(
        obtained.wrapping_sub(returned),
        sh.heap_meta.load(Ordering::Relaxed),
        Lag::Clamp,
    );
    fill_os(&mut s);
    s
}

/// Moves the heap profiler's substitutes of small blocks (see
/// `counters::Sampled`) out of the large-block figures of `s`, where the
/// shared counters have them, into `sampled_objects` and `sampled_bytes`;
/// their mappings beyond their blocks go to `metadata` (which `finish`
/// completes). Each substitution also counted one small allocation and its
/// free besides the large allocation: one of each is taken off.
#[cfg(feature = "profiling")]
fn take_sampled(s: &mut Stats) {
    let sm = &SHARED.sampled;
    let live = sm.live.load(Ordering::Relaxed);
    let block = sm.block.load(Ordering::Relaxed);
    let usable = sm.usable.load(Ordering::Relaxed);
    let header = sm.header.load(Ordering::Relaxed);
    let made = sm.made.load(Ordering::Relaxed);
    s.large_objects = s.large_objects.wrapping_sub(live);
    s.large_bytes = s.large_bytes.wrapping_sub(usable);
    s.sampled_objects = live;
    s.sampled_bytes = block;
    // `finish` counts an OS page of header for each; the header is
    // shorter (its block shares its page, see `large::SAMPLE_BLOCK_OFFSET`),
    // so the difference comes off.
    s.metadata = s
        .metadata
        .wrapping_add(usable.wrapping_sub(block))
        .wrapping_add(header)
        .wrapping_sub(live.wrapping_mul(crate::os::OS_PAGE));
    s.allocations = s.allocations.wrapping_sub(made);
    s.frees = s.frees.wrapping_sub(made);
}

/// The mappings of freed sampled small blocks the profiler keeps for the
/// next samples (`large::sampled`): resident, counted as free pages.
fn sampled_cached() -> usize {
    #[cfg(feature = "profiling")]
    return crate::large::sampled::cached_bytes();
    #[cfg(not(feature = "profiling"))]
    0
}

/// Committed memory now, as [`stats`] counts it, from process-wide figures
/// only (no walk over the heaps, no lock, no allocation): what the memory
/// limits count (`os::within_limit`). The heaps' part is their running sum
/// (`counters::HEAP_COMMITTED`); the calling thread's pages' counts not
/// yet folded make no difference, as they hold no page events.
pub(crate) fn committed_now() -> usize {
    let sh = &SHARED;
    let segments = sh
        .segments_obtained
        .load(Ordering::Relaxed)
        .wrapping_sub(sh.segments_returned.load(Ordering::Relaxed));
    let header = os::round_up(core::mem::size_of::<Segment>(), OS_PAGE).unwrap_or(0);
    let large_objects = sh
        .large_allocs
        .load(Ordering::Relaxed)
        .wrapping_sub(sh.large_frees.load(Ordering::Relaxed));
    let metadata = segments
        .wrapping_mul(header)
        .wrapping_add(sh.heap_meta.load(Ordering::Relaxed))
        .wrapping_add(large_objects.wrapping_mul(OS_PAGE));
    crate::counters::HEAP_COMMITTED
        .load(Ordering::Relaxed)
        .wrapping_add(crate::segment::CACHED_DIRTY.load(Ordering::Relaxed))
        .wrapping_add(crate::large_cache::cached_bytes())
        .wrapping_add(sampled_cached())
        .wrapping_add(sh.large_usable.load(Ordering::Relaxed))
        .wrapping_add(metadata)
}

/// The calling thread's own counters: what it allocated and freed, its
/// reallocs and cross-thread frees, the pages it made and returned, and the
/// memory its pages hold. Process-wide figures (large objects, segments, OS
/// calls, resident, mapped) are left at zero. A block this thread freed but
/// another allocated counts as a negative live block here, so per-class live
/// figures are deltas; they are exact for a thread that frees only its own.
pub fn thread_stats() -> Stats {
    crate::thread::fold_own_counts();
    let mut s = Stats::zero();
    if let Some(k) = crate::thread::current_counters() {
        s.add_heap(k);
        #[cfg(feature = "profiling")]
        {
            // The profiler's substitutes this thread made count as the
            // small allocations they stand for (its heap counted the block
            // each took and gave back: that free is not one), and those it
            // freed as frees; as in `stats`, outside the class rows.
            let t = &k.sampled;
            s.frees = s
                .frees
                .wrapping_sub(t.made.get())
                .wrapping_add(t.freed.get());
            s.requested = t.requested.get();
            s.sampled_objects = t.made.get().wrapping_sub(t.freed.get());
            s.sampled_bytes = t.block.get();
        }
    }
    s.finish(0, 0, Lag::Wrap);
    s
}

fn fill_os(s: &mut Stats) {
    let c = &os::COUNTERS;
    s.mapped = c.mapped.load(Ordering::Relaxed);
    s.os_calls = OsCalls {
        mmap: c.mmap.load(Ordering::Relaxed),
        munmap: c.munmap.load(Ordering::Relaxed),
        madvise: c.madvise.load(Ordering::Relaxed),
        mremap: c.mremap.load(Ordering::Relaxed),
        brk: c.brk.load(Ordering::Relaxed),
        limit_hits: c.limit_hits.load(Ordering::Relaxed),
        purges: c.purges.load(Ordering::Relaxed),
        purged: c.purged.load(Ordering::Relaxed),
    };
    // With merged pages, counted once (see `mesh`).
    s.resident = crate::mesh::resident(os::resident_bytes());
    s.mesh = crate::mesh_stats();
}

/// The snapshot of one first-class heap: its counters (which start at zero,
/// see [`retire`]), its `segments` and large objects, and `meta` bytes of
/// bookkeeping. Process-wide figures (resident, OS calls, abandoned
/// segments) are left at zero; `mapped` is the heap's own.
pub(crate) fn heap_stats(
    k: &HeapCounters,
    segments: usize,
    large: LargeCounts,
    meta: usize,
) -> Stats {
    let mut s = Stats::zero();
    s.add_heap(k);
    s.large_objects = large.live;
    s.large_bytes = large.usable;
    s.requested = large.requested;
    s.allocations = s.allocations.wrapping_add(large.allocs);
    s.frees = s.frees.wrapping_add(large.frees);
    s.reallocs_in_place = s.reallocs_in_place.wrapping_add(large.reallocs);
    s.finish(segments, meta, Lag::Wrap);
    s.mapped = segments * crate::segment::SEGMENT_SIZE + large.mapped;
    s
}

mod display;
#[cfg(feature = "override")]
pub(crate) use display::write_fd;
pub(crate) use display::{print_at_exit, write_table, Bytes, FdOut};

#[cfg(feature = "serde")]
mod serde_impl;
