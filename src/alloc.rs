//! Where a pointer goes: the allocation and free paths shared by the
//! `GlobalAlloc` front end and the C ABI.
//!
//! malloc: requests up to [`DIRECT_MAX`] bytes with alignment up to 16 read
//! the thread's heap pointer, index `direct` with the rounded size, and pop the
//! page's `free` list: a TLS load, three dependent loads, two stores, no atomic
//! and no lock. Anything else goes to [`malloc_generic`] (other small sizes and
//! alignments, then the large path); an empty page goes to the heap's slow path.
//!
//! free: the segment header is found by masking the pointer; a huge segment
//! goes to the large-block cache (or is unmapped), a small one gives the page
//! through `slice_page`. If the calling thread owns the segment the block
//! goes on the page's `local_free` (plain stores); otherwise it joins the
//! calling thread's batch of frees for the owning heap (`remote_batch`),
//! handed over with one CAS per batch, or (for big blocks, first-class heaps'
//! blocks, and threads that cannot have a heap) is pushed on the page's
//! `thread_free` with one CAS.

use crate::atomic::Ordering;
use crate::background;
use crate::counters::SHARED;
use crate::freed;
use crate::heap::{self, DIRECT_MAX};
use crate::large;
use crate::large_cache;
use crate::page::{self, Block};
use crate::remote_batch;
use crate::segment::{self, registry, segment_of, Segment, KIND_HUGE, SLICE_SIZE};
use crate::size_class::{class_for, class_of, CLASS_SIZES, MAX_SMALL, MIN_ALIGN};
use crate::thread;
use core::ptr;

mod limit;
mod misuse;
mod realloc;
mod upkeep;

#[cfg(feature = "secure")]
pub(crate) use misuse::check_live_block;
pub(crate) use misuse::{check_block, not_ours};
use misuse::{check_huge, freed_again, freed_again_remote, not_a_block, not_ours_or_freed};
#[cfg_attr(not(feature = "override"), allow(unused_imports))]
pub(crate) use realloc::{realloc, realloc_whole};

/// The `size` to pass to [`free`] and [`realloc`] when the caller does not know
/// the size it asked for (C's `free`); the block then counts as wholly
/// requested, so such allocations should be made with [`malloc_whole`].
#[cfg_attr(not(feature = "override"), allow(dead_code))]
pub(crate) const UNSIZED: usize = usize::MAX;
// No `Layout` has it as its size (`GlobalAlloc::dealloc` relies on that).
static_assertions::const_assert!(UNSIZED > isize::MAX as usize);

/// Allocates `size` bytes aligned to `align` (a power of two). Null on failure.
/// The statistics count `size` bytes as requested.
#[inline(always)]
pub(crate) fn malloc(size: usize, align: usize) -> *mut u8 {
    malloc_in::<false, false>(size, align)
}

/// [`malloc`] for callers that free without a size (C): the statistics count
/// the whole block as requested, as [`free`] with [`UNSIZED`] takes it back.
/// The block size is read from the page the block came from, so this costs
/// no size-class lookup.
#[cfg_attr(not(feature = "override"), allow(dead_code))]
#[inline(always)]
pub(crate) fn malloc_whole(size: usize, align: usize) -> *mut u8 {
    malloc_in::<true, false>(size, align)
}

/// [`malloc_whole`] for C's `malloc`: when it returns null, `errno` is
/// `ENOMEM`. The slow paths set it themselves, so that every way out of the
/// fast path is a tail call and the fast path needs no stack frame (a caller
/// that tested for null after the call would need one: two instructions
/// more on every `malloc`).
#[cfg_attr(not(feature = "override"), allow(dead_code))]
#[inline(always)]
pub(crate) fn malloc_whole_c(size: usize, align: usize) -> *mut u8 {
    malloc_in::<true, true>(size, align)
}

/// `p`, with `errno` set to `ENOMEM` if it is null and `ENOMEM` is asked for.
#[inline(always)]
fn enomem_if_null<const ENOMEM: bool>(p: *mut u8) -> *mut u8 {
    if ENOMEM && p.is_null() {
        crate::os::set_errno(libc::ENOMEM);
    }
    p
}

/// The bytes a block of class `c` counts as requested: `size`, or with `WHOLE`
/// the block size.
#[inline(always)]
fn counted<const WHOLE: bool>(size: usize, c: usize) -> usize {
    if WHOLE {
        crate::size_class::class_size(c)
    } else {
        size
    }
}

#[inline(always)]
fn malloc_in<const WHOLE: bool, const ENOMEM: bool>(size: usize, align: usize) -> *mut u8 {
    if align > MIN_ALIGN {
        return malloc_aligned::<WHOLE, ENOMEM>(size, align);
    }
    if size <= DIRECT_MAX {
        let slot = heap::direct_slot(size, align);
        let h = thread::heap();
        // SAFETY: `h` is this thread's heap or the never-written empty heap;
        // `slot <= DIRECT_MAX / 8 < DIRECT_SLOTS` since `size <= DIRECT_MAX`
        // and `align <= MIN_ALIGN` divides `DIRECT_MAX`; direct slots hold
        // pages of this heap or the empty page, which `pop` allows.
        unsafe {
            // Atomic, as the background purger may write the slot (see
            // `heap::nudge`); a relaxed load is a plain `mov`.
            let slots = ptr::addr_of_mut!((*h).direct).cast::<*mut page::Page>();
            let p = core::sync::atomic::AtomicPtr::from_ptr(slots.add(slot))
                .load(core::sync::atomic::Ordering::Relaxed);
            let b = page::pop(p);
            if !b.is_null() {
                // A page with a block is never the empty page: it is ours.
                (*p).note_alloc(if WHOLE { (*p).block_size } else { size });
                #[cfg(feature = "profiling")]
                if prof_tick(h, size) {
                    return prof_small::<WHOLE>(h, b, size, align, (*p).block_size);
                }
                return b;
            }
            return malloc_miss::<WHOLE, ENOMEM>(size, align, h);
        }
    }
    malloc_generic::<WHOLE, ENOMEM>(size, align)
}

/// [`malloc_generic`] for alignments above [`MIN_ALIGN`]. A function of its
/// own so that [`malloc_in`] tests the alignment and the size with a branch
/// each: with one target for both, the compiler joins the two tests into
/// flag arithmetic, two instructions more on every Rust allocation (where
/// the alignment is not a constant).
#[inline(never)]
extern "C" fn malloc_aligned<const WHOLE: bool, const ENOMEM: bool>(
    size: usize,
    align: usize,
) -> *mut u8 {
    malloc_generic::<WHOLE, ENOMEM>(size, align)
}

/// Small requests outside the direct range or with alignment above 16, and
/// large requests.
/// With `ENOMEM`, null sets `errno` (see [`malloc_whole_c`]). `extern "C"`,
/// as the slow paths `malloc` leaves by: it cannot unwind, so C's `malloc`
/// (which must not unwind either) needs no landing pad around the call and
/// makes it a tail call (see `free`).
#[inline(never)]
extern "C" fn malloc_generic<const WHOLE: bool, const ENOMEM: bool>(
    size: usize,
    align: usize,
) -> *mut u8 {
    enomem_if_null::<ENOMEM>(malloc_generic_in::<WHOLE>(size, align))
}

#[inline(always)]
fn malloc_generic_in<const WHOLE: bool>(size: usize, align: usize) -> *mut u8 {
    if align <= SLICE_SIZE && size <= MAX_SMALL {
        if let Some(c) = class_for(size, align) {
            let h = thread::heap();
            let n = counted::<WHOLE>(size, c);
            // SAFETY: as in `malloc`; `current_page` gives a page of this heap or
            // the empty page.
            unsafe {
                let p = (*h).current_page(c);
                let b = page::pop(p);
                if !b.is_null() {
                    (*p).note_alloc(n);
                    #[cfg(feature = "profiling")]
                    if prof_tick(h, size) {
                        return prof_small::<WHOLE>(h, b, size, align, (*p).block_size);
                    }
                    return b;
                }
                #[cfg(feature = "profiling")]
                return prof_slow::<WHOLE, false>(h, c, size, align);
                #[cfg(not(feature = "profiling"))]
                return malloc_slow(h, c, n);
            }
        }
    }
    #[cfg(feature = "profiling")]
    {
        let h = thread::heap();
        // SAFETY: `h` is the calling thread's heap, checked not the empty one.
        if !thread::is_empty_heap(h) && unsafe { prof_tick(h, size) } {
            return prof_large(h, size, align);
        }
    }
    limit::large_within_limit(size, align)
}

/// Counts `size` bytes off the profiler's countdown of heap `h`: whether it
/// went below zero (then the caller takes a cold path that samples the
/// allocation, or not: see `sample`). A subtraction and a compare.
///
/// # Safety
/// `h` is the calling thread's heap, not the empty one.
#[cfg(feature = "profiling")]
#[inline(always)]
unsafe fn prof_tick(h: *mut heap::Heap, size: usize) -> bool {
    // SAFETY: per the contract the heap is the caller's own.
    unsafe {
        let c = &mut (*h).prof.countdown;
        *c = c.wrapping_sub(size as isize);
        *c < 0
    }
}

/// The profiler's countdown of heap `h` ran out on a small block `b` of
/// `block` bytes asked for with `size` bytes and alignment `align`: if
/// `sample::decide` says so, the request is served by a large block marked
/// as a sample (its free, on the large path, finds the sample; the small
/// free path costs nothing more), a mapping of a freed sample when one is
/// kept (`large::sampled`), and `b` is freed; else `b` is returned.
///
/// # Safety
/// `h` is the calling thread's heap, not the empty one; `b` a block just
/// allocated (and counted) from it.
///
/// `extern "C"` (it cannot unwind) so that the fast paths, `extern "C"`
/// themselves in the C front end, reach it by a tail call: a call that
/// could unwind would need a guard frame around it (a `push` on every
/// `malloc`, sampled or not).
#[cfg(feature = "profiling")]
#[cold]
#[inline(never)]
unsafe extern "C" fn prof_small<const WHOLE: bool>(
    h: *mut heap::Heap,
    b: *mut u8,
    size: usize,
    align: usize,
    block: usize,
) -> *mut u8 {
    // SAFETY: per the contract the heap is ours; `b` is live and counted as
    // `malloc_in` counted it, so the free takes back what it added.
    unsafe {
        let Some(weight) = crate::sample::decide(&mut (*h).prof, size) else {
            return b;
        };
        // Each substitute is a mapping: past the bound the kernel's limit
        // on mappings sets, `b` stays (see `large::sampled::room`).
        if !large::sampled::room() {
            crate::sample::count_dropped();
            crate::sample::done(&mut (*h).prof);
            return b;
        }
        let mut stack = crate::sample::Stack::new();
        crate::sample::capture(&mut (*h).prof, &mut stack);
        let q = large::alloc_substitute(size, align);
        if q.is_null() {
            crate::sample::count_dropped();
            crate::sample::done(&mut (*h).prof);
            return b;
        }
        free(b, if WHOLE { UNSIZED } else { size });
        let slot = crate::sample::record(&stack, size, block, weight);
        let seg = segment_of(q);
        large::mark_sampled(seg, slot, block);
        if let Some((requested, block)) = large::substitute_request(seg) {
            (*h).k().sampled.made(requested, block);
        }
        crate::sample::done(&mut (*h).prof);
        q
    }
}

/// [`prof_small`] for a large request (no block taken yet).
#[cfg(feature = "profiling")]
#[cold]
#[inline(never)]
fn prof_large(h: *mut heap::Heap, size: usize, align: usize) -> *mut u8 {
    // SAFETY: `h` is the calling thread's heap, not the empty one (the
    // caller checked).
    let Some(weight) = crate::sample::decide(unsafe { &mut (*h).prof }, size) else {
        return large::alloc(size, align);
    };
    // SAFETY: as above.
    let mut stack = crate::sample::Stack::new();
    crate::sample::capture(unsafe { &mut (*h).prof }, &mut stack);
    let q = large::alloc(size, align);
    if !q.is_null() {
        let seg = segment_of(q);
        // SAFETY: `q` is the block of the live huge segment `seg`, ours.
        unsafe {
            let usable = large::usable_size(seg);
            let slot = crate::sample::record(&stack, size, usable, weight);
            large::mark_sampled(seg, slot, 0);
        }
    }
    // SAFETY: as above.
    crate::sample::done(unsafe { &mut (*h).prof });
    q
}

/// [`malloc_slow`] with the profiler's count of the request (`size` bytes
/// asked for with alignment `align`, of class `c`).
///
/// # Safety
/// As [`malloc_slow`].
#[cfg(feature = "profiling")]
#[cold]
#[inline(never)]
unsafe fn prof_slow<const WHOLE: bool, const ENOMEM: bool>(
    h: *mut heap::Heap,
    c: usize,
    size: usize,
    align: usize,
) -> *mut u8 {
    // SAFETY: forwarded contract.
    let b = enomem_if_null::<ENOMEM>(unsafe { malloc_slow(h, c, counted::<WHOLE>(size, c)) });
    if !b.is_null() {
        // The heap may have been set up just now.
        let h = thread::heap();
        // SAFETY: a block was allocated, so `h` is a real heap, ours.
        unsafe {
            if prof_tick(h, size) {
                let block = crate::size_class::class_size(c);
                return prof_small::<WHOLE>(h, b, size, align, block);
            }
        }
    }
    b
}

/// The direct slot's page had no free block: finds the size class and takes
/// the slow path. Everything the slow path needs beyond the request is
/// worked out here, not in [`malloc_in`], so that nothing of it is kept
/// live (or computed) on the fast path; the request comes first, in the
/// registers it arrived in. With `ENOMEM`, null sets `errno`
/// (see [`malloc_whole_c`]); `extern "C"` as [`malloc_generic`] is.
///
/// # Safety
/// `h` is the calling thread's heap or the empty heap; `align` is at most
/// [`MIN_ALIGN`] and `size` at most [`DIRECT_MAX`].
#[cold]
#[inline(never)]
unsafe extern "C" fn malloc_miss<const WHOLE: bool, const ENOMEM: bool>(
    size: usize,
    align: usize,
    h: *mut heap::Heap,
) -> *mut u8 {
    // Rounding to the alignment keeps 16-aligned requests off the 8-aligned
    // classes.
    let c = class_of((size + align - 1) & !(align - 1));
    // SAFETY: forwarded contract.
    #[cfg(feature = "profiling")]
    return unsafe { prof_slow::<WHOLE, ENOMEM>(h, c, size, align) };
    // SAFETY: forwarded contract.
    #[cfg(not(feature = "profiling"))]
    enomem_if_null::<ENOMEM>(unsafe { malloc_slow(h, c, counted::<WHOLE>(size, c)) })
}

/// The current page of class `c` is empty (or the heap is not set up yet).
#[cold]
#[inline(never)]
unsafe fn malloc_slow(mut h: *mut heap::Heap, c: usize, size: usize) -> *mut u8 {
    if thread::is_empty_heap(h) {
        h = thread::init_heap();
        if h.is_null() {
            return ptr::null_mut();
        }
    }
    // Before the handshake: starting the thread may allocate.
    background::start_if_wanted();
    // Cached large blocks unused for a while go back to the OS even in a
    // program that no longer allocates large ones (one load when none is due).
    large_cache::purge_if_due();
    // Likewise heaps of exited threads that no new thread took.
    thread::retire_parked_if_due();
    // SAFETY: `h` is the calling thread's own heap, and its inbox.
    let b = unsafe {
        thread::owning(h, |heap| {
            remote_batch::slow_path(heap, &*thread::inbox(h));
            // The owner in its handshake, holding no page yet.
            heap.unnudge();
            heap.sub_purge_if_due();
            pop_from_new_page(heap, c, size)
        })
    };
    if b.is_null() {
        // SAFETY: as above.
        return unsafe { limit::retry_within_limit(h, c, size) };
    }
    b
}

/// Pops a block of class `c` for a request of `size` bytes from a page the
/// slow path finds or makes in heap `h`, and counts it. Null when out of memory.
///
/// # Safety
/// `h` is a real heap (not the empty one) used by the calling thread alone.
pub(crate) unsafe fn pop_from_new_page(h: *mut heap::Heap, c: usize, size: usize) -> *mut u8 {
    // SAFETY: per the contract.
    unsafe { heap::alloc_from_new_page(&mut *h, c, size) }
}

/// Allocates zeroed memory, skipping the memset for memory fresh from the OS
/// (for a large block, the part that is: it may be cached memory).
pub(crate) fn zalloc(size: usize, align: usize) -> *mut u8 {
    zalloc_in::<false>(size, align)
}

/// [`zalloc`] counted as [`malloc_whole`] counts.
#[cfg_attr(not(feature = "override"), allow(dead_code))]
pub(crate) fn zalloc_whole(size: usize, align: usize) -> *mut u8 {
    zalloc_in::<true>(size, align)
}

fn zalloc_in<const WHOLE: bool>(size: usize, align: usize) -> *mut u8 {
    let p = malloc_in::<WHOLE, false>(size, align);
    if p.is_null() {
        return p;
    }
    let seg = segment_of(p);
    // SAFETY: `p` is a live block of `size` bytes we just allocated; its
    // segment header is valid. For a small block, the page's FREE_ZERO flag
    // describes the list `p` was popped from (only this thread changes it).
    unsafe {
        if (*seg).kind == KIND_HUGE {
            large::zero_stale(seg, p, size);
            return p;
        }
        let page = (*seg).page_of(p);
        if heap::free_was_zero(&*page) {
            (*p.cast::<Block>()).next = ptr::null_mut();
        } else {
            p.write_bytes(0, size);
        }
    }
    p
}

/// Frees a block from [`malloc`] that was asked for with `size` bytes
/// ([`UNSIZED`] if unknown); null is a no-op (found on the cold path).
///
/// # Safety
/// `p` is null or a live block returned by this allocator.
#[inline(always)]
pub(crate) unsafe fn free(p: *mut u8, size: usize) {
    let h = thread::heap();
    // SAFETY: every heap, the empty one included, is a valid `Heap`.
    let tag = unsafe { (*h).tag };
    // SAFETY: `p` is in a small segment of ours (the registry says so), so
    // its header is valid and the page found through it covers `p`; if `p`
    // starts one of the page's blocks, it is taken as live (unless the
    // freed mark says otherwise); ownership decides who may touch the page:
    // the registry says when the calling thread's heap owns it, and
    // otherwise the header has the last word.
    // Every exit off the fast path is a tail call (no frame, no saved
    // register) to an `extern "C"` function, which cannot unwind: C's
    // `free` would otherwise wrap each call in an abort-on-unwind landing
    // pad, and an `invoke` is never a tail call. Each returns (an abort is
    // decided inside it): a call that does not return would need the stack
    // aligned, and so a frame on the fast path too.
    unsafe {
        let (seg, owned) = match registry::small_segment_by_owner(p, tag) {
            registry::Small::Owned(seg) => (seg, true),
            registry::Small::Other(seg) => (seg, false),
            registry::Small::No => return free_not_small(p),
        };
        let page = (*seg).page_of(p);
        if !(*page).is_block(p) {
            return free_not_a_block(page, p, size);
        }
        #[cfg(feature = "secure")]
        check_live_block(seg, page, p, h, "double free");
        if owned {
            free_local(seg, h, page, p, size);
        } else if (*seg).owner.load(Ordering::Relaxed) == h as usize {
            // A heap without a tag (past the last) frees its own here.
            free_local_untagged(seg, h, page, p, size);
        } else {
            // It checks the freed mark.
            free_remote(seg, page, p, size, h);
        }
    }
}

/// [`free_local`] out of line, for heaps without a tag (see
/// `registry::Tag`), so that [`free`] inlines it once.
///
/// # Safety
/// As for [`free_local`].
#[inline(never)]
unsafe extern "C" fn free_local_untagged(
    seg: *mut Segment,
    h: *mut heap::Heap,
    page: *mut page::Page,
    p: *mut u8,
    size: usize,
) {
    // SAFETY: per the contract.
    unsafe { free_local(seg, h, page, p, size) }
}

/// [`free`] of `p`, which does not start a block of `page` (the page
/// covering it): aborts. The check is made again so that this returns, as
/// [`free`]'s tail calls must (see there); were `p` a block, it is freed.
///
/// # Safety
/// As for [`free`]; `page` is the page covering `p` in a small segment.
#[cold]
#[inline(never)]
unsafe extern "C" fn free_not_a_block(page: *const page::Page, p: *mut u8, size: usize) {
    // SAFETY: per the contract.
    unsafe {
        if !(*page).is_block(p) {
            // A block of a page merged into another: freed there (`mesh`).
            let q = crate::mesh::alias_target(segment_of(p), p);
            if !q.is_null() {
                return free(q, size);
            }
            not_a_block(p, "double free");
        }
        free(p, size);
    }
}

/// Frees `p`, asked for with `size` bytes ([`UNSIZED`] if unknown), to its
/// page in heap `h`, which owns it: the local free that thread heaps and
/// first-class heaps share.
///
/// # Safety
/// `p` is a live block of `page`, a page of `h`, and `h` is the caller's own;
/// `seg` is `segment_of(p)` (the caller has it: not made again from `p`).
#[inline(always)]
pub(crate) unsafe fn free_local(
    seg: *mut Segment,
    h: *mut heap::Heap,
    page: *mut page::Page,
    p: *mut u8,
    size: usize,
) {
    // SAFETY: per the contract.
    unsafe {
        let key = (*seg).freed_key;
        if freed::is_marked(p, key) {
            // A tail call, so the fast path saves no registers for it.
            return free_local_marked(h, page, p, size);
        }
        freed::mark(p, key);
        let requested = if size == UNSIZED {
            (*page).block_size
        } else {
            size
        };
        if (*page).free_owner(p, requested) {
            if (*page).used.get() == 0 {
                free_emptied(h, page);
            } else {
                (*h).free_slow(page);
            }
        }
    }
}

/// The free slow path of heap `h`'s `page`, which the free made empty,
/// inside the handshake with the background purger: freeing the page gives
/// its slices back to its segment. (A full page that gets room again only
/// moves between the heap's page queues, which the purger never touches:
/// that path takes no handshake.)
///
/// # Safety
/// As [`free_local`].
#[cold]
#[inline(never)]
unsafe extern "C" fn free_emptied(h: *mut heap::Heap, page: *mut page::Page) {
    // SAFETY: `h` is the caller's own heap, and `page` one of its pages, which
    // nothing refers to once `free_slow` is done with it.
    unsafe {
        thread::owning(h, |heap| {
            heap.free_slow(page);
            upkeep::tick(heap, h);
        })
    }
}

/// [`free`] of a pointer whose segment the registry does not know as a
/// small one: null (C's `free` leaves its test to this path), a large
/// block, or a pointer segalloc never handed out.
///
/// # Safety
/// As for [`free`].
#[cold]
#[inline(never)]
unsafe extern "C" fn free_not_small(p: *mut u8) {
    if p.is_null() {
        return;
    }
    let seg = segment_of(p);
    if !registry::contains(seg) {
        not_ours_or_freed(p, "double free");
    }
    // SAFETY: a registered segment's header is mapped; `check_huge` makes
    // sure `p` is the live block of a huge one.
    unsafe {
        check_huge(seg, p, "double free of a large block", "double free");
        #[cfg(feature = "profiling")]
        if let Some((requested, block)) = large::substitute_request(seg) {
            if let Some(k) = own_counters() {
                k.sampled.freed(requested, block);
            }
        }
        large::free(seg);
    }
}

/// The calling thread's counters, if it has a heap (none is made for it).
#[cfg(feature = "profiling")]
fn own_counters() -> Option<&'static crate::counters::HeapCounters> {
    let h = thread::heap();
    // SAFETY: a heap other than the empty one lives in a pool slot, whose
    // counters are never unmapped.
    (!thread::is_empty_heap(h)).then(|| unsafe { &*thread::counters(h) })
}

/// [`free_local`] of a block that carries the freed mark: aborts if it is
/// free, else (the program wrote the mark's value) frees it.
///
/// # Safety
/// As for [`free_local`].
#[cold]
#[inline(never)]
unsafe extern "C" fn free_local_marked(
    h: *mut heap::Heap,
    page: *mut page::Page,
    p: *mut u8,
    size: usize,
) {
    // SAFETY: per the contract.
    unsafe {
        freed_again(page, p, "double free");
        freed::clear(p);
        free_local(segment_of(p), h, page, p, size);
    }
}

/// Frees a block of a segment owned by another thread (or abandoned),
/// unless it carries the freed mark (then aborts): in the common case, counts it and adds it to the calling thread's batch for
/// the owning heap (see `remote_batch`).
#[inline(never)]
unsafe extern "C" fn free_remote(
    seg: *mut Segment,
    page: *mut page::Page,
    p: *mut u8,
    size: usize,
    h: *mut heap::Heap,
) {
    // SAFETY: the block is live until we give it up, so its page and segment
    // are too; `h` is the calling thread's heap, written only if it is not
    // the empty one. A segment's `private` flag and a page's class do not
    // change while one of its blocks is live. The class comes from the
    // segment header, not from the page descriptor, whose cache line its
    // owner writes at every allocation (and classes are below NUM_CLASSES).
    unsafe {
        if freed::is_freed(p, (*seg).freed_key) {
            freed_again_remote(
                p,
                "double free (the second by a thread that does not own the block)",
            );
        }
        let owner = (*seg).owner.load(Ordering::Relaxed);
        let c = *(*seg).slice_class.get_unchecked(segment::slice_index(p)) as usize;
        let bs = *CLASS_SIZES.get_unchecked(c) as usize;
        if !cfg!(feature = "remote-batch")
            || owner == 0
            || (*seg).private
            || bs > remote_batch::BATCH_BLOCK_MAX
            || thread::is_empty_heap(h)
        {
            return free_remote_slow(seg, page, p, size, h);
        }
        let i = match (*h).outbox.last_slot_for(owner) {
            Some(i) => i,
            None => {
                // `owner` is a thread's heap (a heap slot, never unmapped).
                let inbox = thread::inbox(owner as *mut heap::Heap);
                match upkeep::batch_slot(h, owner, inbox) {
                    Some(i) => i,
                    None => return free_remote_slow(seg, page, p, size, h),
                }
            }
        };
        count_remote_free(h, c, if size == UNSIZED { bs } else { size });
        freed::mark(p, freed::batched((*seg).freed_key));
        if remote_batch::add(&mut *h, i, p, bs) {
            upkeep::batch_full(h, i);
        }
    }
}

/// Counts a free by heap `h` (not the empty one) of a block of class `c`
/// owned by another heap, which `requested` bytes were asked for.
#[inline(always)]
unsafe fn count_remote_free(h: *mut heap::Heap, c: usize, requested: usize) {
    // SAFETY: `h` is a real heap, so it has counters; `c` is a page's class.
    unsafe {
        let counters = &*thread::counters(h);
        let k = counters.class.get_unchecked(c);
        k.frees.add(1);
        k.requested.sub(requested);
        k.remote_pending.add(1);
        counters.remote_frees.add(1);
    }
}

/// The rest of [`free_remote`]: a thread without a heap yet, an abandoned
/// segment, a first-class heap's segment, or a big block.
#[cold]
#[inline(never)]
unsafe fn free_remote_slow(
    seg: *mut Segment,
    page: *mut page::Page,
    p: *mut u8,
    size: usize,
    mut h: *mut heap::Heap,
) {
    // SAFETY: as in `free_remote`.
    unsafe {
        if thread::is_empty_heap(h) {
            // A thread that frees before it ever allocated (a consumer of
            // blocks made elsewhere) gets a heap now, to batch its frees and
            // count them in its own counters rather than in shared atomics.
            h = thread::init_heap();
            if h.is_null() {
                h = thread::heap();
            } else {
                return free_remote(seg, page, p, size, h);
            }
        }
        let owner = (*seg).owner.load(Ordering::Relaxed);
        if owner == 0 && !thread::is_empty_heap(h) && segment::ABANDONED.remove(seg) {
            // Its thread has exited: adopt the segment rather than leave the
            // frees pending until some thread needs memory. Our block keeps its
            // page (and so the segment) in use through the reclaim.
            thread::owning(h, |heap| {
                heap.reclaim(seg);
                upkeep::tick(heap, h);
            });
            // Freed locally now (not marked yet).
            return free(p, size);
        }
        // Count first: once pushed, the page may be reused for another class.
        let c = (*page).class as usize;
        let requested = if size == UNSIZED {
            (*page).block_size
        } else {
            size
        };
        if thread::is_empty_heap(h) {
            SHARED.orphan_free(c, requested);
        } else {
            count_remote_free(h, c, requested);
        }
        freed::mark(p, (*seg).freed_key);
        let bit = 1u64 << (*seg).page_index(page);
        // Flag first: once the block is pushed its page may be freed at once.
        (*seg).thread_freed.set(bit);
        page::free_remote(&*page, p);
    }
}

/// Usable size of the live block `p`.
///
/// # Safety
/// `p` is a live block returned by this allocator.
pub(crate) unsafe fn usable_size(p: *const u8) -> usize {
    let seg = segment_of(p);
    // SAFETY: a segment the registry knows has a valid header; `p` is
    // live, so its page (or huge block) is the one found.
    unsafe {
        match registry::kind(seg) {
            registry::SMALL => (*(*seg).page_of(p)).block_size,
            #[cfg(feature = "profiling")]
            registry::LARGE => large::reported_usable_size(seg),
            #[cfg(not(feature = "profiling"))]
            registry::LARGE => large::usable_size(seg),
            _ => not_ours(p),
        }
    }
}
