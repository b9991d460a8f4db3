//! segalloc: a segment-based, size-class segregated memory allocator with
//! per-thread heaps.
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;
//!
//! let v: Vec<u64> = (0..1000).collect();
//! assert_eq!(v.iter().sum::<u64>(), 499_500);
//! ```
//!
//! # Where a pointer goes
//! Read the modules in the order data flows:
//! - `os`: mmap, brk, madvise, mremap; the only system calls.
//! - `size_class`: a request's size becomes one of 116 block sizes.
//! - `options`: the runtime options, in one table.
//! - `counters`: what the layers below `stats` count into.
//! - `freed`: the mark of a free small block, which catches double frees.
//! - `segment`: 4 MiB aligned regions cut into 64 KiB slices; from any pointer,
//!   masking finds the segment header and a shift finds the page.
//! - `page`: the blocks of one size class and their three free lists.
//! - `heap`: a thread's pages per size class, and the slow path that finds or
//!   makes a page.
//! - `remote_batch`: frees of blocks of other threads' heaps, gathered per
//!   heap and handed over in batches (the lock-free inbox is in `remote`).
//! - `large`: requests above [`LARGE_THRESHOLD`] get a mapping of their own;
//!   `large_cache` keeps freed ones resident for a while, for reuse.
//! - `stats`: the snapshot of what is held, read from the counters.
//! - [`pagemap`]: an SVG picture of every segment's pages and their
//!   occupancy, drawn from copies of the segment headers.
//! - `thread`: a heap per thread, handed back when the thread exits.
//! - `alloc`: malloc, free, realloc over all of the above; [`SegAlloc`] is the
//!   `GlobalAlloc` front end.
//! - `region`: first-class heaps ([`Heap`]), for collections through the
//!   `Allocator` trait, freed all at once; `pool`: typed pools ([`Pool`]).
//! - `sample` and [`profile`] (feature `profiling`): the sampled heap
//!   profiler; a byte countdown per heap picks allocations, served as
//!   marked large blocks, whose stacks and figures `profile` writes out.
//! - [`defrag`]: cooperative defragmentation: which live blocks to move so
//!   that sparse pages empty, and where to put them.
//!
//! # Guarantees
//! - Allocation never panics, never takes a std lock and never allocates
//!   through the global allocator; failure (out of memory, a size near
//!   `isize::MAX`, an alignment no address space holds) returns null. Any
//!   power-of-two alignment is served (above [`MAX_ALIGN`], with a mapping
//!   of its own).
//! - Blocks are aligned as the layout asks, and to 16 bytes whenever it asks
//!   for 16 or more (see `size_class` for the four 8-aligned classes that keep
//!   waste under 12.5% between 64 and 128 bytes).
//! - Requests of 64 bytes or more waste less than 12.5% of their block.
//! - Misuse that segalloc detects (always: a freed pointer it does not own,
//!   mapped or not, an interior pointer of a small or large block, a double
//!   free or realloc of a freed block; with the `secure` feature also
//!   overwritten free-list links and overflows off a segment's end) aborts
//!   after one line on stderr naming the error and the address.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
// Under loom only `atomic` and `remote` can build (thread-locals and `const`
// statics cannot); `tests/loom.rs` compiles those two files itself.
#![cfg(not(loom))]

mod alloc;
mod atomic;
mod background;
#[cfg(feature = "override")]
mod capi;
#[cfg(feature = "override")]
mod capi_heap;
mod counters;
pub mod defrag;
mod freed;
mod handshake;
mod heap;
mod large;
mod large_cache;
mod mesh;
mod options;
mod os;
mod page;
pub mod pagemap;
mod park;
mod pool;
#[cfg(feature = "profiling")]
pub mod profile;
mod region;
mod remote;
mod remote_batch;
mod report;
#[cfg(feature = "profiling")]
mod sample;
mod segment;
mod size_class;
mod startup;
mod stats;
mod thread;

use core::alloc::{GlobalAlloc, Layout};

pub use large::MAX_ALIGN;
pub use mesh::MeshStats;
pub use options::{runtime_options, set_option, OptionError, OptionKind, RuntimeOption};
pub use pagemap::{page_map, PageMap};
pub use pool::{Pool, PoolBox};
pub use region::Heap;
pub use size_class::{MAX_SMALL as LARGE_THRESHOLD, MIN_ALIGN};
pub use stats::{stats, thread_stats, ClassStats, OsCalls, Stats};

/// The `allocator-api2` crate that [`Heap`] implements `Allocator` for: use
/// its `Vec`, `Box` and traits (or those of a crate built on the same
/// version, such as `hashbrown` with its `allocator-api2` feature).
pub use allocator_api2;

/// The segalloc allocator. Install it as the global allocator:
///
/// ```
/// #[global_allocator]
/// static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;
/// ```
///
/// It can also be called directly through [`GlobalAlloc`]:
///
/// ```
/// use core::alloc::{GlobalAlloc, Layout};
/// let layout = Layout::from_size_align(100, 64).unwrap();
/// // SAFETY: the layout has a non-zero size; the block is freed with it.
/// unsafe {
///     let p = segalloc::SegAlloc.alloc(layout);
///     assert!(!p.is_null() && p as usize % 64 == 0);
///     segalloc::SegAlloc.dealloc(p, layout);
/// }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SegAlloc;

// SAFETY: every method returns null or a block of at least the layout's size
// and alignment that no other live allocation overlaps (size classes, pages
// and mappings are disjoint), and frees only what it was given.
unsafe impl GlobalAlloc for SegAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        alloc::malloc(layout.size(), layout.align())
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller passes a live block of ours and its layout. A
        // layout's size is at most `isize::MAX`, so never `UNSIZED`: told
        // to the optimiser, it drops the free path's test for it.
        unsafe {
            core::hint::assert_unchecked(layout.size() <= isize::MAX as usize);
            alloc::free(ptr, layout.size())
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        alloc::zalloc(layout.size(), layout.align())
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller passes a live block of `layout` and a valid size.
        unsafe { alloc::realloc(ptr, layout.size(), layout.align(), new_size) }
    }
}

/// Where small-object segments come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSource {
    /// Anonymous `mmap` (the default).
    Mmap,
    /// The program break (`sbrk`), falling back to `mmap` when it cannot grow.
    ///
    /// Only for processes where segalloc owns the whole heap: memory taken
    /// from the break is never unmapped (freed segments are purged and reused),
    /// and another allocator moving the break at the same time only makes
    /// segalloc fall back to `mmap`. Large objects always use `mmap`.
    Brk,
}

/// Chooses where segments obtained from now on come from.
///
/// ```
/// segalloc::set_page_source(segalloc::PageSource::Brk);
/// segalloc::set_page_source(segalloc::PageSource::Mmap);
/// ```
pub fn set_page_source(source: PageSource) {
    os::set_use_brk(source == PageSource::Brk);
}

/// Returns memory to the OS now, as far as the calling thread can: hands the
/// blocks it freed of other threads' heaps over to them, collects frees other
/// threads made into its pages, frees every empty page, retires the heaps
/// exited threads left for new threads to take over (purging their free
/// memory), takes over segments abandoned by exited threads, unmaps wholly
/// free segments, purges every free slice still resident, and empties the
/// process-wide cache of freed large blocks ([`Stats::large_cached`] reads 0
/// after it).
///
/// Other running threads keep their own free pages until they allocate again
/// (a bounded amount, see the `heap` module) or call `collect` themselves;
/// the same holds for what they freed of this thread's blocks and gather to
/// hand over in batches (at most 256 KiB per thread).
///
/// ```
/// # #[global_allocator] static G: segalloc::SegAlloc = segalloc::SegAlloc;
/// drop(vec![1u8; 8 << 20]); // a large block, freed into the cache
/// segalloc::collect();
/// assert_eq!(segalloc::stats().large_cached, 0);
/// ```
///
/// With the option `mesh` on (`SEGALLOC_MESH=1`), it also meshes, as
/// [`mesh`] does.
pub fn collect() {
    collect_in(options::MESH.get() != 0);
}

/// [`collect`], then meshes the calling thread's pages: pages of one size
/// class whose live blocks sit at disjoint offsets are merged onto one
/// physical page, and the other's memory is given back; no address changes
/// (see the README's section on meshing). Returns how many pages were
/// merged into others. Runs whatever the option `mesh` says; 0 where
/// meshing cannot be set up (no `memfd_create`).
///
/// ```
/// # #[global_allocator] static G: segalloc::SegAlloc = segalloc::SegAlloc;
/// let n = segalloc::mesh();
/// assert!(segalloc::mesh_stats().pages_meshed >= n);
/// ```
pub fn mesh() -> usize {
    collect_in(true)
}

/// What meshing did, process-wide: pages merged so far, bytes they give
/// back now, merged pages alive.
pub fn mesh_stats() -> MeshStats {
    mesh::stats()
}

/// [`collect`], meshing too with `mesh`. Returns the pages merged.
fn collect_in(mesh: bool) -> usize {
    thread::retire_parked(true);
    // Before the handshake: setting up may allocate (`pthread_atfork`).
    let mesh = mesh && mesh::setup();
    let mut merged = 0;
    if thread::with_heap(|_| ()).is_some() {
        let h = thread::heap();
        // SAFETY: the calling thread's own heap (set up above) and its inbox.
        unsafe {
            thread::owning(h, |heap| {
                remote_batch::collect(heap, &*thread::inbox(h));
                // Whole-page meshing first: a page with OS pages purged
                // inside it (which `collect` does to sparse pages) is not
                // merged whole, and what meshing leaves sparse is purged
                // inside next. Then OS pages: the wholly free ones are
                // purged by then (no mapping needed), and the rest merged.
                if mesh {
                    merged = heap.mesh_pass(None);
                }
                heap.collect();
                if mesh {
                    merged += heap.submesh_pass(None);
                }
            })
        }
    }
    large_cache::drain();
    large::drain_sampled();
    merged
}

/// Usable size of a block allocated by segalloc: at least the size asked for.
///
/// # Safety
/// `p` must be a live block returned by segalloc (through [`SegAlloc`]).
///
/// ```
/// let v: Vec<u8> = Vec::with_capacity(100);
/// # #[global_allocator] static G: segalloc::SegAlloc = segalloc::SegAlloc;
/// // SAFETY: the vector's buffer is a live block from segalloc.
/// assert_eq!(unsafe { segalloc::usable_size(v.as_ptr()) }, 104);
/// ```
pub unsafe fn usable_size(p: *const u8) -> usize {
    // SAFETY: the caller passes a live block of ours.
    unsafe { alloc::usable_size(p) }
}

/// Prints `what` and `addr` on stderr and aborts: for misuse that would
/// otherwise corrupt the heap. Never allocates.
#[cold]
pub(crate) fn fatal(what: &str, addr: *const u8) -> ! {
    let mut buf = [0u8; 160];
    let mut n = 0;
    for part in [
        b"segalloc: ".as_slice(),
        what.as_bytes(),
        b" at 0x".as_slice(),
    ] {
        for &b in part {
            if n < buf.len() {
                buf[n] = b;
                n += 1;
            }
        }
    }
    let a = addr as usize;
    for shift in (0..16).rev() {
        if n < buf.len() {
            buf[n] = b"0123456789abcdef"[(a >> (shift * 4)) & 15];
            n += 1;
        }
    }
    if n < buf.len() {
        buf[n] = b'\n';
        n += 1;
    }
    // SAFETY: writing our own buffer to stderr, then aborting.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), n);
        libc::abort()
    }
}
