//! First-class heaps: [`Heap`], a private heap that collections allocate in
//! through the `Allocator` trait, and that frees everything at once.
//!
//! A `Heap` is built from the same parts as a thread's heap: a pool slot
//! (`thread::HeapSlot`) holds an internal `heap::Heap` and its counters, and
//! the segments it takes are owned by that internal heap's address. So blocks
//! come from the same size classes and pages, through the same fast path (one
//! indexed load and a pop), and the process-wide [`stats`](crate::stats) count
//! them like any other.
//!
//! Why it is fast to drop: the heap knows its segments and its large objects
//! (kept on a list through their headers, since each is a mapping of its own),
//! so dropping or resetting it gives back whole segments and mappings without
//! visiting a single block.
//!
//! Threads: a `Heap` is `Send` but not `Sync`. Allocation takes `&Heap` and
//! mutates through interior mutability, which is sound because a `&Heap` can
//! never reach two threads: only one thread at a time allocates from, frees
//! into or drops a heap, exactly as only one thread uses its own heap. That is
//! also why no loom model is needed for it: no state of a `Heap` is shared
//! between threads, and the one cross-thread path (below) is the global
//! allocator's, which loom already checks.
//!
//! Blocks that leave through the wrong door: a block of a `Heap` freed through
//! the global allocator (which the `Allocator` contract forbids, but which must
//! not corrupt anything) finds a segment whose owner is not the calling
//! thread's heap, and is pushed on its page's `thread_free` like any
//! cross-thread free; the `Heap` collects it later. A large block freed that
//! way stays mapped until the heap is dropped or reset: the heap marks its
//! large blocks by writing its id in their header's `owner`, and `large`
//! leaves blocks so marked to their heap. A heap's large blocks never go to
//! the process-wide large-block cache: they are unmapped when freed, and
//! when the heap is dropped or reset.
//!
//! Lifetimes: after a `Heap` is dropped (or reset) its memory belongs to
//! others, so a collection allocated in it must not outlive it. The borrow
//! checker sees to that: a `Vec<T, &'a Heap>` or `Box<T, &'a Heap>` borrows the
//! heap for `'a`, and `Heap::reset` takes `&mut self`.

use crate::atomic::Ordering;
use crate::counters::LargeCounts;
use crate::heap::{self, DIRECT_MAX};
use crate::large;
use crate::page;
use crate::segment::{
    registry, segment_of, Segment, HUGE_BLOCK_OFFSET, KIND_HUGE, KIND_SMALL, SLICE_SIZE,
};
use crate::size_class::{class_for, class_of, MAX_SMALL, MIN_ALIGN};
use crate::stats::{self, Stats};
use crate::thread::{self, HeapSlot};
use allocator_api2::alloc::{AllocError, Allocator};
use core::alloc::Layout;
use core::cell::Cell;
use core::fmt;
use core::mem::{offset_of, size_of};
use core::ptr::{self, NonNull};
use static_assertions::const_assert;

// A heap's large objects are linked through the `owner`, `next` and `prev`
// fields of their headers, which must lie before the block.
const_assert!(offset_of!(Segment, owner) + size_of::<usize>() <= HUGE_BLOCK_OFFSET);
const_assert!(offset_of!(Segment, next) + size_of::<usize>() <= HUGE_BLOCK_OFFSET);
const_assert!(offset_of!(Segment, prev) + size_of::<usize>() <= HUGE_BLOCK_OFFSET);

/// A private heap: allocate collections in it through the `Allocator` trait
/// of [`allocator_api2`](crate::allocator_api2) (re-exported by segalloc),
/// then drop or [`reset`](Heap::reset) it to free everything it holds at
/// once, without visiting each block.
///
/// ```
/// # #[global_allocator] static G: segalloc::SegAlloc = segalloc::SegAlloc;
/// use segalloc::allocator_api2::{boxed::Box, vec::Vec};
///
/// let heap = segalloc::Heap::new();
/// let mut v = Vec::new_in(&heap);
/// v.extend(0..1000u32);
/// let b = Box::new_in([7u8; 100], &heap);
/// assert_eq!(v.iter().sum::<u32>(), 499_500);
/// assert_eq!(heap.stats().live_blocks(), 2);
/// drop((v, b));
/// assert_eq!(heap.stats().live_blocks(), 0);
/// ```
///
/// Collections borrow the heap, so none can outlive it:
///
/// ```compile_fail
/// # use segalloc::allocator_api2::vec::Vec;
/// let v = {
///     let heap = segalloc::Heap::new();
///     let mut v = Vec::new_in(&heap);
///     v.push(1u8);
///     v
/// }; // error: `heap` does not live long enough
/// ```
///
/// A `Heap` may move to another thread (`Send`) but not be shared (`!Sync`),
/// so a `&Heap`, and a collection holding one, stays on one thread:
///
/// ```compile_fail
/// fn shared<T: Sync>(_: &T) {}
/// shared(&segalloc::Heap::new());
/// ```
///
/// Creating a heap costs nothing: it takes its memory at its first
/// allocation. Every method is O(1) but [`reset`](Heap::reset) and drop,
/// which are O(segments + large objects), and [`stats`](Heap::stats).
pub struct Heap {
    /// The internal heap: the shared empty heap until the first allocation,
    /// then the private heap of a pool slot (its address owns our segments).
    inner: Cell<*mut heap::Heap>,
    /// Our large objects, linked through their headers' `next`/`prev`.
    large: Cell<*mut Segment>,
    /// What we know of them, for [`Heap::stats`].
    large_counts: Cell<LargeCounts>,
}

// SAFETY: everything a `Heap` refers to (its slot, its segments, its large
// mappings) is reached only through it, so moving it hands all of it over;
// the new thread then writes the slot's counters, which other threads only
// read (relaxed atomics). Other threads that free its blocks by mistake use
// the global allocator's lock-free remote path. Not `Sync`: see the module
// docs.
unsafe impl Send for Heap {}

impl Default for Heap {
    fn default() -> Self {
        Heap::new()
    }
}

impl fmt::Debug for Heap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heap")
            .field("heap", &self.inner.get())
            .field("large_objects", &self.large_counts.get().live)
            .finish()
    }
}

impl Heap {
    /// An empty heap. It takes no memory until its first allocation.
    ///
    /// ```
    /// let heap = segalloc::Heap::new();
    /// assert_eq!(heap.stats().committed, 0);
    /// ```
    pub fn new() -> Heap {
        Heap {
            inner: Cell::new(thread::empty_heap()),
            large: Cell::new(ptr::null_mut()),
            large_counts: Cell::new(LargeCounts::default()),
        }
    }

    /// The internal heap's address, which owns our segments (0 before the
    /// first allocation, matching no segment).
    #[inline(always)]
    fn id(&self) -> usize {
        let h = self.inner.get();
        if thread::is_empty_heap(h) {
            0
        } else {
            h as usize
        }
    }

    /// The internal heap, taking a pool slot for it at the first call.
    #[cold]
    fn acquire(&self) -> *mut heap::Heap {
        let mut h = self.inner.get();
        if thread::is_empty_heap(h) {
            h = thread::private_heap();
            if h.is_null() {
                return h;
            }
            self.inner.set(h);
        }
        h
    }

    /// Allocates a block of `size` (non-zero) bytes aligned to `align`, as
    /// `alloc::malloc` does but from this heap. Null on failure.
    #[inline]
    pub(crate) fn alloc_block(&self, size: usize, align: usize) -> *mut u8 {
        let h = self.inner.get();
        if align <= MIN_ALIGN && size <= DIRECT_MAX {
            let s = (size + align - 1) & !(align - 1);
            // SAFETY: `h` is our private heap, or the never-written empty heap
            // whose pages are all the empty page; the slot is below
            // `DIRECT_SLOTS` since `size <= DIRECT_MAX` and `align <=
            // MIN_ALIGN` (see `direct_slot`); `pop` allows both kinds of
            // page, and only this thread uses the heap (`!Sync`).
            unsafe {
                let p = *(*h).direct.get_unchecked(heap::direct_slot(size, align));
                let b = page::pop(p);
                if !b.is_null() {
                    // A page with a block is never the empty page: it is ours.
                    (*p).note_alloc(size);
                    return b;
                }
                return self.alloc_slow(class_of(s), size);
            }
        }
        self.alloc_generic(size, align)
    }

    /// Small requests outside the direct range or aligned above 16, and large.
    #[inline(never)]
    fn alloc_generic(&self, size: usize, align: usize) -> *mut u8 {
        if align <= SLICE_SIZE && size <= MAX_SMALL {
            if let Some(c) = class_for(size, align) {
                let h = self.inner.get();
                // SAFETY: as in `alloc_block`; `current_page` gives one of our
                // pages or the empty page.
                unsafe {
                    let p = (*h).current_page(c);
                    let b = page::pop(p);
                    if !b.is_null() {
                        (*p).note_alloc(size);
                        return b;
                    }
                }
                return self.alloc_slow(c, size);
            }
        }
        self.alloc_large(size, align)
    }

    /// The current page of class `c` had no block (or we have no slot yet).
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, c: usize, size: usize) -> *mut u8 {
        let h = self.acquire();
        if h.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: `h` is our private heap, used by this thread alone.
        unsafe { crate::alloc::pop_from_new_page(h, c, size) }
    }

    /// A large object: its own mapping, put on our list and marked ours.
    #[cold]
    fn alloc_large(&self, size: usize, align: usize) -> *mut u8 {
        // The owner's address must be fixed before the block is marked.
        if self.acquire().is_null() {
            return ptr::null_mut();
        }
        let p = large::alloc(size, align);
        if p.is_null() {
            return p;
        }
        let seg = segment_of(p);
        // SAFETY: a fresh huge segment nobody else knows of; its header
        // fields up to `prev` lie before the block (checked above).
        unsafe {
            (*seg).owner.store(self.id(), Ordering::Relaxed);
            self.link_large(seg);
            self.count_large(seg, Way::In, true);
        }
        p
    }

    /// # Safety
    /// `seg` is a huge segment of ours on no list.
    unsafe fn link_large(&self, seg: *mut Segment) {
        let first = self.large.get();
        // SAFETY: per the contract; `first` is on our list.
        unsafe {
            (*seg).prev = ptr::null_mut();
            (*seg).next = first;
            if !first.is_null() {
                (*first).prev = seg;
            }
        }
        self.large.set(seg);
    }

    /// # Safety
    /// `seg` is on our list of large objects.
    unsafe fn unlink_large(&self, seg: *mut Segment) {
        // SAFETY: per the contract, `seg` and its neighbours are ours.
        unsafe {
            let (prev, next) = ((*seg).prev, (*seg).next);
            if prev.is_null() {
                self.large.set(next);
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
        }
    }

    /// Adds (`In`) or takes off (`Out`) the figures of `seg`; `event` counts
    /// it as an allocation or a free too (not so around a resize).
    ///
    /// # Safety
    /// `seg` is a live huge segment of ours.
    unsafe fn count_large(&self, seg: *mut Segment, way: Way, event: bool) {
        let op = match way {
            Way::In => usize::wrapping_add,
            Way::Out => usize::wrapping_sub,
        };
        let mut k = self.large_counts.get();
        // SAFETY: per the contract the header prefix is initialised.
        unsafe {
            k.live = op(k.live, 1);
            k.usable = op(k.usable, large::usable_size(seg));
            k.requested = op(k.requested, (*seg).requested);
            k.mapped = op(k.mapped, (*seg).map_size);
        }
        match (way, event) {
            (Way::In, true) => k.allocs = k.allocs.wrapping_add(1),
            (Way::Out, true) => k.frees = k.frees.wrapping_add(1),
            _ => {}
        }
        self.large_counts.set(k);
    }

    /// Frees the block `p` of `size` bytes (the size it was asked for).
    ///
    /// # Safety
    /// `p` is a live block from [`Heap::alloc_block`] of this heap.
    #[inline]
    pub(crate) unsafe fn free_block(&self, p: *mut u8, size: usize) {
        let seg = segment_of(p);
        let h = self.inner.get();
        // SAFETY: the registry knows `p`'s segment as a small one, so its
        // header and page are valid. We own its segment (checked: anything
        // else takes the global path, which copes with any live block), and
        // only this thread uses us. `check_block` makes sure `p` is a block.
        unsafe {
            if registry::kind(seg) != registry::SMALL {
                return self.free_large(seg, p, size);
            }
            if (*seg).owner.load(Ordering::Relaxed) != h as usize {
                return crate::alloc::free(p, size);
            }
            let page = (*seg).page_of(p);
            crate::alloc::check_block(page, p);
            #[cfg(feature = "secure")]
            crate::alloc::check_live_block(seg, page, p, h, "double free");
            crate::alloc::free_local(seg, h, page, p, size);
        }
    }

    /// # Safety
    /// `p` is a live block (or a misuse), not in a small segment.
    #[cold]
    unsafe fn free_large(&self, seg: *mut Segment, p: *mut u8, size: usize) {
        // A pointer in no segment of ours goes to the global path, which
        // reports it.
        if !registry::contains(seg) {
            // SAFETY: forwarded contract.
            return unsafe { crate::alloc::free(p, size) };
        }
        // SAFETY: the header of a registered segment is readable; a huge
        // segment marked with our id is on our list.
        unsafe {
            if (*seg).kind != KIND_HUGE || (*seg).owner.load(Ordering::Relaxed) != self.id() {
                return crate::alloc::free(p, size);
            }
            self.unlink_large(seg);
            self.count_large(seg, Way::Out, true);
            large::free_of_heap(seg);
        }
    }

    /// Resizes `p` in place when its size class (or its mapping) allows:
    /// returns whether it did. The block then holds `new` bytes, aligned.
    ///
    /// # Safety
    /// `p` is a live block of this heap allocated with `old`.
    unsafe fn resize_in_place(&self, p: *mut u8, old: Layout, new: Layout) -> *mut u8 {
        let seg = segment_of(p);
        let id = self.id();
        // SAFETY: `p` is live, so its header and page are valid; blocks we do
        // not own are never resized here.
        unsafe {
            if (*seg).owner.load(Ordering::Relaxed) != id || id == 0 {
                return ptr::null_mut();
            }
            let h = self.inner.get();
            let k = &*thread::counters(h);
            if (*seg).kind == KIND_SMALL {
                let page = (*seg).page_of(p);
                let c = (*page).class as usize;
                if new.align() <= SLICE_SIZE && class_for(new.size(), new.align()) == Some(c) {
                    k.class
                        .get_unchecked(c)
                        .requested
                        .add(new.size().wrapping_sub(old.size()));
                    k.realloc_in_place.add(1);
                    return p;
                }
                return ptr::null_mut();
            }
            // Large: `mremap` keeps the block's offset in a segment-aligned
            // mapping, so its alignment holds if it held before.
            if (*seg).kind != KIND_HUGE
                || new.size() <= MAX_SMALL
                || new.align() > large::MAX_ALIGN
                || (p as usize) % new.align() != 0
            {
                return ptr::null_mut();
            }
            // Off our list while the mapping may move (and unmarked, which
            // `large::resize` asks of blocks it may move).
            self.unlink_large(seg);
            self.count_large(seg, Way::Out, false);
            (*seg).owner.store(0, Ordering::Relaxed);
            let q = large::resize(seg, p, new.size());
            let now = if q.is_null() { seg } else { segment_of(q) };
            (*now).owner.store(id, Ordering::Relaxed);
            self.link_large(now);
            self.count_large(now, Way::In, false);
            if !q.is_null() {
                // Not on the slot's counter: `large::resize` counted it in
                // the process-wide figures already.
                let mut n = self.large_counts.get();
                n.reallocs = n.reallocs.wrapping_add(1);
                self.large_counts.set(n);
            }
            q
        }
    }

    /// Moves `p` to a new block of layout `new`, copying what fits.
    ///
    /// # Safety
    /// As for `Allocator::grow`/`shrink`.
    unsafe fn move_block(
        &self,
        p: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let q = self.allocate(new)?;
        // SAFETY: both blocks are live and distinct; `old` describes `p`.
        unsafe {
            ptr::copy_nonoverlapping(
                p.as_ptr(),
                q.as_ptr().cast::<u8>(),
                old.size().min(new.size()),
            );
            self.deallocate(p, old);
        }
        let h = self.inner.get();
        // SAFETY: we allocated, so `h` is our private heap (a slot).
        unsafe { (*thread::counters(h)).realloc_moved.add(1) };
        Ok(q)
    }

    /// Frees every block and large object, without visiting the blocks;
    /// `keep` keeps the (then wholly free) segments for reuse.
    fn release(&self, keep: bool) {
        let mut s = self.large.replace(ptr::null_mut());
        while !s.is_null() {
            // SAFETY: our large objects; the successor is read before the
            // mapping goes. Reset: into the large-block cache, for the
            // refill; drop: unmapped (both count them out of the
            // process-wide figures).
            unsafe {
                let next = (*s).next;
                self.count_large(s, Way::Out, true);
                if keep {
                    large::free_of_heap(s);
                } else {
                    large::release(s);
                }
                s = next;
            }
        }
        let h = self.inner.get();
        if !thread::is_empty_heap(h) {
            // SAFETY: our private heap; the callers (drop, `reset(&mut self)`)
            // hold the heap exclusively, so no block of it is used afterwards.
            unsafe { (*h).release_all(keep) };
        }
    }

    /// Frees everything the heap holds, at once, and leaves it empty and
    /// ready for reuse. Large objects go to the process-wide large-block
    /// cache (as freed large blocks do), the segments stay with
    /// the heap, wholly free, so that refilling it does not fault memory in
    /// again: like a thread's heap, it keeps enough resident to grow back to
    /// its peak and purges the rest 100 ms later, at its next allocation that
    /// needs a page (drop the heap to give everything back now).
    /// Takes `&mut self`, so no collection allocated in it can be alive.
    ///
    /// ```
    /// # #[global_allocator] static G: segalloc::SegAlloc = segalloc::SegAlloc;
    /// let mut heap = segalloc::Heap::new();
    /// for round in 0..3 {
    ///     let mut v = segalloc::allocator_api2::vec::Vec::new_in(&heap);
    ///     v.extend((0..10_000u64).map(|i| i * round));
    ///     core::mem::forget(v); // no need to free: reset does it
    ///     heap.reset();
    ///     assert_eq!(heap.stats().live_blocks(), 0);
    /// }
    /// ```
    pub fn reset(&mut self) {
        self.release(true);
    }

    /// This heap's own statistics: its live blocks and bytes, pages, segments
    /// and large objects, and what it allocated and freed since it was made
    /// (frees through the global allocator, a misuse, count for the thread
    /// that made them). Process-wide figures (`resident`, `os_calls`,
    /// `segments_abandoned`) read 0; `mapped` and `metadata` are this heap's.
    ///
    /// ```
    /// # #[global_allocator] static G: segalloc::SegAlloc = segalloc::SegAlloc;
    /// let heap = segalloc::Heap::new();
    /// let b = segalloc::allocator_api2::boxed::Box::new_in([0u64; 4], &heap);
    /// let s = heap.stats();
    /// assert_eq!((s.live_blocks(), s.requested, s.allocated), (1, 32, 32));
    /// assert!(s.committed >= s.allocated + s.metadata);
    /// # drop(b);
    /// ```
    pub fn stats(&self) -> Stats {
        let h = self.inner.get();
        let (segments, meta) = if thread::is_empty_heap(h) {
            (0, 0)
        } else {
            // SAFETY: our private heap, used by this thread alone.
            unsafe {
                (*h).fold_all();
                ((*h).segment_count(), size_of::<HeapSlot>())
            }
        };
        // SAFETY: every heap, the empty one included, lives in a slot whose
        // counters are only accessed through shared references.
        let k = unsafe { &*thread::counters(h) };
        stats::heap_stats(k, segments, self.large_counts.get(), meta)
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        self.release(false);
        let h = self.inner.replace(thread::empty_heap());
        if !thread::is_empty_heap(h) {
            // SAFETY: our slot, emptied by `release` and not used again.
            unsafe { thread::release_private_heap(h) };
        }
    }
}

#[derive(Clone, Copy)]
enum Way {
    In,
    Out,
}

/// A zero-sized block: no memory, just an aligned non-null address.
#[inline]
fn dangling(layout: Layout) -> NonNull<[u8]> {
    let p = ptr::null_mut::<u8>().wrapping_add(layout.align());
    // SAFETY: an alignment is never zero.
    NonNull::slice_from_raw_parts(unsafe { NonNull::new_unchecked(p) }, 0)
}

// SAFETY: blocks are at least `layout.size()` bytes aligned to
// `layout.align()` (the same size classes as the global allocator, checked by
// its tests and ours) and disjoint from every other live block; a block stays
// valid until deallocated or until the heap is dropped or reset, and the
// blanket `impl Allocator for &Heap` borrows the heap for as long as any
// collection uses it. Zero-sized requests get a dangling aligned address.
unsafe impl Allocator for Heap {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        match NonNull::new(self.alloc_block(layout.size(), layout.align())) {
            Some(p) => Ok(NonNull::slice_from_raw_parts(p, layout.size())),
            None => Err(AllocError),
        }
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let b = self.allocate(layout)?;
        let p = b.as_ptr().cast::<u8>();
        if layout.size() == 0 {
            return Ok(b);
        }
        let seg = segment_of(p);
        // SAFETY: `p` is a block we just allocated, of at least `size` bytes
        // (and at least 16: the smallest class). A large block knows how much
        // of it may hold old data (it may be cached memory); a small block's
        // page flag describes the list it came from (only this thread
        // changes it): if zero-filled, only the link words at its start were
        // written.
        unsafe {
            if (*seg).kind == KIND_HUGE {
                large::zero_stale(seg, p, layout.size());
                return Ok(b);
            }
            if heap::free_was_zero(&*(*seg).page_of(p)) {
                p.write_bytes(0, 16);
            } else {
                p.write_bytes(0, layout.size());
            }
        }
        Ok(b)
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: the caller passes a live block of ours and its layout.
            unsafe { self.free_block(ptr.as_ptr(), layout.size()) }
        }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if old.size() == 0 {
            return self.allocate(new);
        }
        // SAFETY: the caller passes a live block of ours allocated with `old`.
        unsafe {
            if let Some(q) = NonNull::new(self.resize_in_place(ptr.as_ptr(), old, new)) {
                return Ok(NonNull::slice_from_raw_parts(q, new.size()));
            }
            self.move_block(ptr, old, new)
        }
    }

    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: as for `grow`; the bytes past the old size are ours to zero.
        unsafe {
            let b = self.grow(ptr, old, new)?;
            b.as_ptr()
                .cast::<u8>()
                .add(old.size())
                .write_bytes(0, new.size() - old.size());
            Ok(b)
        }
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller passes a live block of ours allocated with `old`.
        unsafe {
            if new.size() == 0 {
                self.deallocate(ptr, old);
                return Ok(dangling(new));
            }
            if let Some(q) = NonNull::new(self.resize_in_place(ptr.as_ptr(), old, new)) {
                return Ok(NonNull::slice_from_raw_parts(q, new.size()));
            }
            self.move_block(ptr, old, new)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_api2::boxed::Box;
    use allocator_api2::vec::Vec;

    #[test]
    fn blocks_are_ours_and_counted() {
        let heap = Heap::new();
        assert_eq!(heap.id(), 0);
        let a = Box::new_in(5u64, &heap);
        assert_ne!(heap.id(), 0);
        let seg = segment_of((&*a as *const u64).cast());
        // SAFETY: a live block's segment header.
        assert_eq!(unsafe { (*seg).owner.load(Ordering::Relaxed) }, heap.id());
        let s = heap.stats();
        assert_eq!((s.allocations, s.live_blocks(), s.requested), (1, 1, 8));
        drop(a);
        assert_eq!(heap.stats().live_blocks(), 0);
    }

    #[test]
    fn large_objects_are_listed_and_released() {
        let mut heap = Heap::new();
        let mut v: Vec<u8, &Heap> = Vec::with_capacity_in(3 << 20, &heap);
        v.resize(3 << 20, 9);
        let w: Vec<u8, &Heap> = Vec::with_capacity_in(2 << 20, &heap);
        let k = heap.large_counts.get();
        assert_eq!((k.live, k.allocs), (2, 2));
        assert!(k.requested == 5 << 20 && k.usable >= k.requested);
        drop(w);
        assert_eq!(heap.large_counts.get().live, 1);
        // Grow through mremap: the list follows the mapping.
        v.reserve_exact(8 << 20);
        assert!(v.iter().all(|&b| b == 9));
        core::mem::forget(v);
        heap.reset();
        let k = heap.large_counts.get();
        assert_eq!((k.live, k.usable, k.requested, k.mapped), (0, 0, 0, 0));
        assert!(heap.large.get().is_null());
    }

    #[test]
    fn resize_in_place_within_a_class() {
        let heap = Heap::new();
        let l = |n| Layout::from_size_align(n, 8).unwrap();
        let p = heap.allocate(l(100)).unwrap().cast::<u8>();
        // SAFETY: a live block of ours allocated with l(100).
        unsafe {
            let q = heap.grow(p, l(100), l(104)).unwrap().cast::<u8>();
            assert_eq!(p, q, "100 and 104 bytes share a class");
            let r = heap.grow(q, l(104), l(500)).unwrap().cast::<u8>();
            assert_ne!(q, r);
            heap.deallocate(r, l(500));
        }
        let s = heap.stats();
        assert_eq!((s.live_blocks(), s.requested), (0, 0));
        assert_eq!((s.reallocs_in_place, s.reallocs_moved), (1, 1));
    }
}
