//! The counters behind the statistics, which the allocator's layers write:
//! per-heap counters ([`HeapCounters`]) that only their heap's thread writes
//! and any thread reads, and shared atomics ([`SHARED`]) for events that are
//! system calls anyway (segments, large blocks) or come from threads without
//! a heap. Below `segment`, `heap` and `large`, which count into them; the
//! snapshot that reads them all is `stats`, above. See `stats` for what each
//! figure means and how exact it is.

use crate::size_class::NUM_CLASSES;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Whether the fast paths count requested bytes: with the `stats` feature,
/// except in the C front end's build (`override`), where every small block
/// counts as wholly requested (C frees without a size) and so needs no
/// counting: the snapshot takes live blocks times their size.
pub(crate) const COUNT_REQUESTED: bool = cfg!(all(feature = "stats", not(feature = "override")));

/// A counter written by one thread and read by any: a relaxed load and store,
/// so the owner pays a plain add and readers see a whole value.
#[repr(transparent)]
pub(crate) struct Counter(AtomicUsize);

impl Counter {
    pub(crate) const fn new() -> Self {
        Counter(AtomicUsize::new(0))
    }
    /// Adds `n` (wrapping). Only the owning thread may call this.
    #[inline(always)]
    pub(crate) fn add(&self, n: usize) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
    /// Subtracts `n` (wrapping). Only the owning thread may call this.
    #[inline(always)]
    pub(crate) fn sub(&self, n: usize) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_sub(n),
            Ordering::Relaxed,
        );
    }
    #[inline]
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bytes the heaps' counters of committed memory add up to: slices of
/// pages in use, less the OS pages purged inside them, plus resident free
/// slices (see `stats`). Kept beside those per-heap counters ([`Committed`])
/// so that the memory limit reads the process's committed memory in one
/// load; an atomic add at each page event (a slow path, never the fast
/// ones).
pub(crate) static HEAP_COMMITTED: AtomicUsize = AtomicUsize::new(0);

/// The slice size (`segment::SLICE_SIZE`, checked there): what one unit of
/// `used_slices` commits.
pub(crate) const SLICE_BYTES: usize = 1 << 16;

/// A per-heap counter of committed memory: a [`Counter`] whose changes, `UNIT`
/// bytes each (negative: taken off), also go to [`HEAP_COMMITTED`].
#[repr(transparent)]
pub(crate) struct Committed<const UNIT: isize>(Counter);

impl<const UNIT: isize> Committed<UNIT> {
    pub(crate) const fn new() -> Self {
        Committed(Counter::new())
    }
    /// Adds `n` (wrapping). Only the owning thread may call this.
    #[inline]
    pub(crate) fn add(&self, n: usize) {
        self.0.add(n);
        HEAP_COMMITTED.fetch_add(n.wrapping_mul(UNIT as usize), Ordering::Relaxed);
    }
    /// Subtracts `n` (wrapping). Only the owning thread may call this.
    #[inline]
    pub(crate) fn sub(&self, n: usize) {
        self.0.sub(n);
        HEAP_COMMITTED.fetch_sub(n.wrapping_mul(UNIT as usize), Ordering::Relaxed);
    }
    #[inline]
    pub(crate) fn get(&self) -> usize {
        self.0.get()
    }
}

/// A counter of requested bytes: counts only where the fast paths count them
/// ([`COUNT_REQUESTED`]). Elsewhere adding does nothing.
#[repr(transparent)]
pub(crate) struct FastCounter(Counter);

impl FastCounter {
    pub(crate) const fn new() -> Self {
        FastCounter(Counter::new())
    }
    #[inline(always)]
    pub(crate) fn add(&self, n: usize) {
        if COUNT_REQUESTED {
            self.0.add(n);
        }
    }
    #[inline(always)]
    pub(crate) fn sub(&self, n: usize) {
        if COUNT_REQUESTED {
            self.0.sub(n);
        }
    }
    #[inline]
    pub(crate) fn get(&self) -> usize {
        self.0.get()
    }
}

/// Per size class counters of one heap, side by side so that an allocation or
/// a free touches one cache line.
#[repr(C, align(64))]
pub(crate) struct ClassCounters {
    pub(crate) allocs: Counter,
    pub(crate) frees: Counter,
    pub(crate) requested: FastCounter,
    /// Pages of this class made (+) and freed (-).
    pub(crate) pages: Counter,
    /// Blocks pushed on other heaps' `thread_free` (+) and collected (-).
    pub(crate) remote_pending: Counter,
}

impl ClassCounters {
    #[allow(clippy::declare_interior_mutable_const)] // a template for fresh values
    const NEW: ClassCounters = ClassCounters {
        allocs: Counter::new(),
        frees: Counter::new(),
        requested: FastCounter::new(),
        pages: Counter::new(),
        remote_pending: Counter::new(),
    };
}

/// One heap's counters. See the module docs.
#[repr(C)]
pub(crate) struct HeapCounters {
    pub(crate) class: [ClassCounters; NUM_CLASSES],
    pub(crate) realloc_in_place: Counter,
    pub(crate) realloc_moved: Counter,
    pub(crate) remote_frees: Counter,
    pub(crate) pages_obtained: Counter,
    pub(crate) pages_returned: Counter,
    /// Slices held by pages in use.
    pub(crate) used_slices: Committed<{ SLICE_BYTES as isize }>,
    /// Resident bytes of free slices.
    pub(crate) dirty_bytes: Committed<1>,
    /// Bytes of pages in use given back to the OS (sub-page purge, see
    /// `page::purge`): added by the heap that purges them, taken off by the
    /// heap that takes them back, so only the sum over heaps means anything.
    pub(crate) purged_in_pages: Committed<-1>,
    /// Bytes of pages in use that meshing at OS-page granularity gave back
    /// (an OS page per page mapped onto a shared one beyond the first, see
    /// `heap::submesh`): added by the heap that merges, taken off by the
    /// heap that frees a page of a shared OS page; only the sum means
    /// anything.
    pub(crate) meshed_in_pages: Committed<-1>,
    /// The heap profiler's substitutes as this heap's thread sees them
    /// (`thread_stats` only; `stats` counts them from [`Shared::sampled`]).
    #[cfg(feature = "profiling")]
    pub(crate) sampled: ThreadSampled,
}

/// The heap profiler's substitutes of small blocks (see [`Sampled`]) that
/// one thread made and freed, so that its `thread_stats` counts each as the
/// small allocation it stands for: made at the sample (where its heap also
/// counted the small block taken and given back), freed by whichever thread
/// frees it (the large-block path, which counts in no heap).
#[cfg(feature = "profiling")]
pub(crate) struct ThreadSampled {
    /// Substitutes this thread made.
    pub(crate) made: Counter,
    /// Substitutes this thread freed.
    pub(crate) freed: Counter,
    /// Their requested bytes: added when made or grown in place, taken off
    /// when freed or shrunk (wrapping).
    pub(crate) requested: Counter,
    /// Their block bytes (the classes' sizes), likewise.
    pub(crate) block: Counter,
}

#[cfg(feature = "profiling")]
impl ThreadSampled {
    #[allow(clippy::declare_interior_mutable_const)] // a template for fresh values
    const NEW: ThreadSampled = ThreadSampled {
        made: Counter::new(),
        freed: Counter::new(),
        requested: Counter::new(),
        block: Counter::new(),
    };
    /// This thread made a substitute of a `block`-byte block for a request
    /// of `requested` bytes. Owner only.
    pub(crate) fn made(&self, requested: usize, block: usize) {
        self.made.add(1);
        self.requested.add(requested);
        self.block.add(block);
    }
    /// This thread freed a substitute. Owner only.
    pub(crate) fn freed(&self, requested: usize, block: usize) {
        self.freed.add(1);
        self.requested.sub(requested);
        self.block.sub(block);
    }
}

impl HeapCounters {
    #[allow(clippy::declare_interior_mutable_const)] // a template for fresh values
    pub(crate) const NEW: HeapCounters = HeapCounters {
        class: [ClassCounters::NEW; NUM_CLASSES],
        realloc_in_place: Counter::new(),
        realloc_moved: Counter::new(),
        remote_frees: Counter::new(),
        pages_obtained: Counter::new(),
        pages_returned: Counter::new(),
        used_slices: Committed::new(),
        dirty_bytes: Committed::new(),
        purged_in_pages: Committed::new(),
        meshed_in_pages: Committed::new(),
        #[cfg(feature = "profiling")]
        sampled: ThreadSampled::NEW,
    };
}

/// Shared atomic counters for threads without a heap, and for large objects,
/// segments and the heap pool.
pub(crate) struct Shared {
    /// Frees by threads that never allocated: per class (frees, requested, pending).
    pub(crate) orphan_frees: [AtomicUsize; NUM_CLASSES],
    pub(crate) orphan_requested: [AtomicUsize; NUM_CLASSES],
    pub(crate) orphan_pending: [AtomicUsize; NUM_CLASSES],
    pub(crate) large_allocs: AtomicUsize,
    pub(crate) large_frees: AtomicUsize,
    pub(crate) large_usable: AtomicUsize,
    pub(crate) large_requested: AtomicUsize,
    pub(crate) large_reallocs: AtomicUsize,
    pub(crate) segments_obtained: AtomicUsize,
    pub(crate) segments_returned: AtomicUsize,
    /// Bytes of OS memory holding heaps.
    pub(crate) heap_meta: AtomicUsize,
    /// Small allocations the heap profiler sampled and served from a
    /// mapping of their own (`alloc::prof_small`), which the large-block
    /// counters above count too: see [`Sampled`].
    #[cfg(feature = "profiling")]
    pub(crate) sampled: Sampled,
}

/// The heap profiler's substitutes: small allocations served by a large
/// block (see `sample`), live in the large-block counters as any large
/// block is, and here too, so that `stats` reports them as what they
/// stand for (small blocks) rather than as large objects.
#[cfg(feature = "profiling")]
pub(crate) struct Sampled {
    /// Live substitutes.
    pub(crate) live: AtomicUsize,
    /// Their block bytes: the size class blocks they stand for.
    pub(crate) block: AtomicUsize,
    /// Their mappings' usable bytes (as `large_usable` counts them).
    pub(crate) usable: AtomicUsize,
    /// Their mappings' bytes before their blocks (the header and any
    /// alignment): `large::SAMPLE_BLOCK_OFFSET` each unless aligned beyond.
    pub(crate) header: AtomicUsize,
    /// Substitutions made since start: each counted one small allocation
    /// and its free (the block taken and given back) besides the large
    /// allocation, so one allocation and one free too many.
    pub(crate) made: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)] // used only to build arrays
const Z: AtomicUsize = AtomicUsize::new(0);

pub(crate) static SHARED: Shared = Shared {
    orphan_frees: [Z; NUM_CLASSES],
    orphan_requested: [Z; NUM_CLASSES],
    orphan_pending: [Z; NUM_CLASSES],
    large_allocs: Z,
    large_frees: Z,
    large_usable: Z,
    large_requested: Z,
    large_reallocs: Z,
    segments_obtained: Z,
    segments_returned: Z,
    heap_meta: Z,
    #[cfg(feature = "profiling")]
    sampled: Sampled {
        live: Z,
        block: Z,
        usable: Z,
        header: Z,
        made: Z,
    },
};

impl Shared {
    /// A free of a class-`c` block by a thread without a heap.
    pub(crate) fn orphan_free(&self, c: usize, requested: usize) {
        self.orphan_frees[c].fetch_add(1, Ordering::Relaxed);
        self.orphan_requested[c].fetch_add(requested, Ordering::Relaxed);
        self.orphan_pending[c].fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn large_alloc(&self, usable: usize, requested: usize) {
        self.large_allocs.fetch_add(1, Ordering::Relaxed);
        self.large_usable.fetch_add(usable, Ordering::Relaxed);
        self.large_requested.fetch_add(requested, Ordering::Relaxed);
    }
    pub(crate) fn large_free(&self, usable: usize, requested: usize) {
        self.large_frees.fetch_add(1, Ordering::Relaxed);
        self.large_usable.fetch_sub(usable, Ordering::Relaxed);
        self.large_requested.fetch_sub(requested, Ordering::Relaxed);
    }
    /// Usable bytes of the live large blocks.
    pub(crate) fn large_live(&self) -> usize {
        self.large_usable.load(Ordering::Relaxed)
    }
    /// Bytes of the live large blocks' mappings, their header pages
    /// included (counted as one page each, as `metadata` counts them): what
    /// they take back from the large-block cache when freed and reallocated.
    pub(crate) fn large_live_mapped(&self) -> usize {
        let objects = self
            .large_allocs
            .load(Ordering::Relaxed)
            .wrapping_sub(self.large_frees.load(Ordering::Relaxed));
        self.large_live()
            .wrapping_add(objects.wrapping_mul(crate::os::OS_PAGE))
    }
    /// A large block of `usable` bytes, `header` bytes into its mapping,
    /// now stands for a small block of `block` bytes (the heap profiler's
    /// substitute, see [`Sampled`]).
    #[cfg(feature = "profiling")]
    pub(crate) fn sampled_in(&self, usable: usize, block: usize, header: usize) {
        self.sampled.live.fetch_add(1, Ordering::Relaxed);
        self.sampled.block.fetch_add(block, Ordering::Relaxed);
        self.sampled.usable.fetch_add(usable, Ordering::Relaxed);
        self.sampled.header.fetch_add(header, Ordering::Relaxed);
        self.sampled.made.fetch_add(1, Ordering::Relaxed);
    }
    /// The substitute [`Shared::sampled_in`] counted is freed.
    #[cfg(feature = "profiling")]
    pub(crate) fn sampled_out(&self, usable: usize, block: usize, header: usize) {
        self.sampled.live.fetch_sub(1, Ordering::Relaxed);
        self.sampled.block.fetch_sub(block, Ordering::Relaxed);
        self.sampled.usable.fetch_sub(usable, Ordering::Relaxed);
        self.sampled.header.fetch_sub(header, Ordering::Relaxed);
    }
    /// A large block resized in place (or moved by mremap) from `old` to `new`.
    pub(crate) fn large_resize(&self, old: (usize, usize), new: (usize, usize)) {
        self.large_reallocs.fetch_add(1, Ordering::Relaxed);
        self.large_usable
            .fetch_add(new.0.wrapping_sub(old.0), Ordering::Relaxed);
        self.large_requested
            .fetch_add(new.1.wrapping_sub(old.1), Ordering::Relaxed);
    }
}

/// Counts moved off pool slots taken for first-class heaps, so that those
/// heaps' counters start at zero while the process-wide sum stays the same.
/// Written only under the heap pool's lock (see `thread::private_heap`).
pub(crate) static RETIRED: HeapCounters = HeapCounters::NEW;

/// Moves everything `k` counted into [`RETIRED`] and zeroes `k`.
/// Called under the heap pool's lock, on a slot no thread uses.
pub(crate) fn retire(k: &HeapCounters) {
    fn mv(to: &Counter, from: &Counter) {
        let v = from.get();
        to.add(v);
        from.sub(v);
    }
    for (to, from) in RETIRED.class.iter().zip(k.class.iter()) {
        mv(&to.allocs, &from.allocs);
        mv(&to.frees, &from.frees);
        mv(&to.requested.0, &from.requested.0);
        mv(&to.pages, &from.pages);
        mv(&to.remote_pending, &from.remote_pending);
    }
    mv(&RETIRED.realloc_in_place, &k.realloc_in_place);
    mv(&RETIRED.realloc_moved, &k.realloc_moved);
    mv(&RETIRED.remote_frees, &k.remote_frees);
    mv(&RETIRED.pages_obtained, &k.pages_obtained);
    mv(&RETIRED.pages_returned, &k.pages_returned);
    // Moved, not changed: the process's committed memory stays the same.
    mv(&RETIRED.used_slices.0, &k.used_slices.0);
    mv(&RETIRED.dirty_bytes.0, &k.dirty_bytes.0);
    mv(&RETIRED.purged_in_pages.0, &k.purged_in_pages.0);
    mv(&RETIRED.meshed_in_pages.0, &k.meshed_in_pages.0);
    // Only a thread's own view reads these: a first-class heap starts at 0.
    #[cfg(feature = "profiling")]
    {
        let t = &k.sampled;
        for c in [&t.made, &t.freed, &t.requested, &t.block] {
            c.sub(c.get());
        }
    }
}

/// What a first-class heap knows of its large objects.
#[derive(Clone, Copy, Default)]
pub(crate) struct LargeCounts {
    pub(crate) allocs: usize,
    pub(crate) frees: usize,
    pub(crate) live: usize,
    pub(crate) usable: usize,
    pub(crate) requested: usize,
    pub(crate) mapped: usize,
    pub(crate) reallocs: usize,
}
