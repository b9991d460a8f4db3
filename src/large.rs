//! Large objects: requests above [`MAX_SMALL`] bytes (or aligned beyond a
//! slice) get a mapping of their own, a *huge segment*.
//!
//! The mapping starts on a segment boundary with the segment header prefix,
//! so `free` finds it by the same masking as small blocks and tells it apart by
//! `kind`. The block starts one OS page in (or at its alignment, if larger),
//! so the header never shares a page with the block and alignments up to
//! [`MAX_ALIGN`] are served. Growing a block uses `mremap`, in place when the
//! address space after it is free and otherwise by moving the pages, never by
//! copying bytes. Shrinking one leaves its tail mapped and resident, in the
//! cache, under a token the block keeps: growing again takes it back without
//! a system call or a page fault.
//!
//! A freed block's mapping goes to the large-block cache (`large_cache`),
//! still resident, marked [`KIND_CACHED`] so that a second free of it aborts;
//! an allocation takes cached memory back before it maps any (in place, or
//! moved and grown with `mremap`), and rewrites the whole header, so nothing
//! of the previous block's header survives. What the block may still hold of
//! the previous one is recorded (`stale`) for zeroed allocations.
//!
//! First-class heaps' large blocks (marked by a non-zero `owner` in their
//! header, written by `region`) are left to their heap: never cached, freed
//! or moved here; their heap unmaps them with [`release`].

use crate::counters::SHARED;
use crate::large_cache::{self, Found};
use crate::os::{self, round_up, OS_PAGE};
use crate::segment::{registry, Segment, HUGE_BLOCK_OFFSET, KIND_CACHED, KIND_HUGE, SEGMENT_SIZE};
use crate::size_class::MAX_SMALL;
use core::ptr;
use core::sync::atomic::Ordering;

#[cfg(feature = "profiling")]
pub(crate) mod freed_samples;
#[cfg(feature = "profiling")]
pub(crate) mod sampled;

/// The largest alignment served inside the first segment-sized stretch of
/// a block's mapping (half a segment, 2 MiB), from the large-block cache and
/// resized with `mremap` in place.
///
/// Larger alignments (any power of two, as glibc's `posix_memalign` takes)
/// are served too: such a block starts on a segment boundary, with its
/// header alone in the segment-sized stretch before it (address space, not
/// memory: one page of it is touched), where `segment_of` finds it. Their
/// mapping is always fresh, and a `realloc` asking to keep the alignment
/// moves them by copying. Only sizes and alignments whose sum does not fit
/// in an `isize`, or that the OS will not map, return null.
pub const MAX_ALIGN: usize = SEGMENT_SIZE / 2;

/// Where the block of the heap profiler's substitute of a small block
/// starts when its alignment does not ask for more: in the header's own
/// page, past every header field a huge segment has (`prev` is the last,
/// and only first-class heaps' blocks use it). A sample of a block of up
/// to 3.5 KiB so takes one page, not two: one page fault and 4 KiB fewer
/// for every fresh one. Unlike other large blocks, a write before
/// the block's start reaches its header, as one before a small block
/// reaches its neighbour.
#[cfg(feature = "profiling")]
pub(crate) const SAMPLE_BLOCK_OFFSET: usize = 512;
#[cfg(feature = "profiling")]
static_assertions::const_assert!(
    core::mem::offset_of!(Segment, prev) + core::mem::size_of::<usize>() <= SAMPLE_BLOCK_OFFSET
);

/// A block of `size` bytes aligned to `align`: cached memory if there is
/// some, else a fresh mapping. Null on failure.
pub(crate) fn alloc(size: usize, align: usize) -> *mut u8 {
    alloc_in(size, align, true)
}

/// A block of `size` bytes aligned to `align` from a mapping of the cache
/// taken where it is (no system call, resident memory), or null when the
/// cache holds none long enough. For a small block growing towards the
/// large range (see `alloc::realloc`), whatever its size.
pub(crate) fn alloc_cached(size: usize, align: usize) -> *mut u8 {
    if large_cache::cached_bytes() == 0 {
        return ptr::null_mut();
    }
    alloc_in(size, align, false)
}

/// A block of `size` bytes aligned to `align` (a small request's, at most
/// a slice) for the heap profiler's substitute of a small block (see
/// [`mark_sampled`], which the caller calls next): a mapping of a freed
/// substitute if one is long enough (no system call, resident memory),
/// else a fresh one; never the large-block cache's (see `sampled`). Null
/// on failure.
#[cfg(feature = "profiling")]
pub(crate) fn alloc_substitute(size: usize, align: usize) -> *mut u8 {
    debug_assert!(align <= MAX_ALIGN);
    let offset = SAMPLE_BLOCK_OFFSET.max(align);
    let Some(need) = offset.checked_add(size).and_then(|n| round_up(n, OS_PAGE)) else {
        return ptr::null_mut();
    };
    if let Some((base, len)) = sampled::take(need) {
        // The whole mapping may hold the previous substitute's data.
        return install(base, len, offset, size, len, 0);
    }
    let base = os::map_aligned(need, SEGMENT_SIZE);
    if base.is_null() {
        return base;
    }
    install(base, need, offset, size, 0, 0)
}

/// [`alloc`], or [`alloc_cached`] without `fresh`.
fn alloc_in(size: usize, align: usize, fresh: bool) -> *mut u8 {
    if align > MAX_ALIGN {
        return alloc_over_aligned(size, align);
    }
    let offset = HUGE_BLOCK_OFFSET.max(align);
    let Some(need) = offset.checked_add(size).and_then(|n| round_up(n, OS_PAGE)) else {
        return ptr::null_mut();
    };
    if need > isize::MAX as usize {
        return ptr::null_mut();
    }
    large_cache::purge_if_due();
    let (base, map, stale, split) = if fresh {
        obtain(need)
    } else {
        match large_cache::take(need, false) {
            Found::InPlace { addr, len, split } => (addr as *mut u8, len, len, split),
            _ => return ptr::null_mut(),
        }
    };
    if base.is_null() {
        return base;
    }
    install(base, map, offset, size, stale, split)
}

/// A block aligned to `align` > [`MAX_ALIGN`] (so a multiple of a segment):
/// a fresh mapping whose base (the header) lies one segment before an
/// `align`-aligned block. Null on failure.
fn alloc_over_aligned(size: usize, align: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two() && align >= SEGMENT_SIZE);
    let offset = SEGMENT_SIZE;
    // The part of an `align`-aligned mapping before the header.
    let lead = align - SEGMENT_SIZE;
    let Some(need) = offset.checked_add(size).and_then(|n| round_up(n, OS_PAGE)) else {
        return ptr::null_mut();
    };
    let Some(over) = need.checked_add(lead) else {
        return ptr::null_mut();
    };
    if over > isize::MAX as usize {
        return ptr::null_mut();
    }
    let start = os::map_aligned(over, align);
    if start.is_null() {
        return start;
    }
    // SAFETY: `lead < over`; the first `lead` bytes are ours to unmap.
    let base = unsafe { start.add(lead) };
    os::unmap(start, lead);
    install(base, need, offset, size, 0, 0)
}

/// Writes the header of a huge segment at `base` (a mapping of `map` bytes,
/// whose first `stale` may hold old data) for a block of `size` bytes at
/// `offset`, counts it, and returns the block.
fn install(
    base: *mut u8,
    map: usize,
    offset: usize,
    size: usize,
    stale: usize,
    split: usize,
) -> *mut u8 {
    let seg = base.cast::<Segment>();
    // Headers of mappings this one absorbed in the cache are gone.
    registry::forget(base.wrapping_add(1), map - 1);
    // SAFETY: `base` starts a mapping of `map` bytes that is ours alone (fresh,
    // or taken out of the cache); the header prefix fits before `offset`
    // (checked in segment.rs), so these writes touch no block byte. Every
    // field a huge segment uses is written: nothing of a previous block's
    // header survives.
    unsafe {
        ptr::addr_of_mut!((*seg).kind).write(KIND_HUGE);
        ptr::addr_of_mut!((*seg).map_size).write(map);
        ptr::addr_of_mut!((*seg).block_offset).write(offset);
        ptr::addr_of_mut!((*seg).requested).write(size);
        ptr::addr_of_mut!((*seg).stale).write(stale.saturating_sub(offset));
        ptr::addr_of_mut!((*seg).split).write(split);
        #[cfg(feature = "profiling")]
        ptr::addr_of_mut!((*seg).prof_slot).write(0);
        #[cfg(feature = "profiling")]
        ptr::addr_of_mut!((*seg).prof_usable).write(0);
        (*seg).owner.store(0, Ordering::Relaxed);
    }
    SHARED.large_alloc(map - offset, size);
    registry::set(base, registry::LARGE);
    // SAFETY: offset < map.
    unsafe { base.add(offset) }
}

/// A segment-aligned mapping of at least `need` bytes for a block: its base,
/// its length, how many bytes from the base may hold old data, and its
/// `split` token. Null base on failure.
fn obtain(need: usize) -> (*mut u8, usize, usize, usize) {
    let (src, len, new_len) = match large_cache::take(need, os::mremap_usable()) {
        Found::InPlace { addr, len, split } => return (addr as *mut u8, len, len, split),
        Found::Move { addr, len } => (addr as *mut u8, len, len),
        Found::Grow { addr, len } => (addr as *mut u8, len, need),
        Found::Miss => return (os::map_aligned(need, SEGMENT_SIZE), need, 0, 0),
    };
    // `mremap` carries the resident pages over; a grown mapping's extension
    // is fresh (zero) memory.
    // The mapping moves (or is unmapped below): its headers are forgotten
    // first, before another thread can map that address space again.
    registry::forget(src, len);
    let base = os::remap_aligned(src, len, new_len, SEGMENT_SIZE);
    if !base.is_null() {
        return (base, new_len, len, 0);
    }
    // The OS said no (out of memory, or a mapping the program split with
    // `mprotect`/`madvise`): give the cached part back, and map afresh.
    os::unmap(src, len);
    (os::map_aligned(need, SEGMENT_SIZE), need, 0, 0)
}

/// Usable bytes of the huge block whose header is `seg`.
///
/// # Safety
/// `seg` is the header of a live huge segment.
#[inline]
pub(crate) unsafe fn usable_size(seg: *const Segment) -> usize {
    // SAFETY: per the contract the prefix fields are initialised.
    unsafe { (*seg).map_size - (*seg).block_offset }
}

/// Unmaps the mappings kept for the heap profiler's sampled small blocks
/// (see `sampled`); nothing without the feature `profiling`.
pub(crate) fn drain_sampled() {
    #[cfg(feature = "profiling")]
    sampled::drain();
}

/// Unmaps the mappings kept for the heap profiler's sampled small blocks
/// that have waited the purge delay (see `sampled`), for the background
/// purger; nothing without the feature `profiling`.
pub(crate) fn purge_sampled_if_due() {
    #[cfg(feature = "profiling")]
    sampled::purge_if_due();
}

/// Whether the huge segment `seg` is a first-class heap's block (see the
/// module docs): `region` writes the heap's id in `owner`, `alloc` writes 0.
///
/// # Safety
/// `seg` is the header of a live huge segment.
#[inline]
pub(crate) unsafe fn owned_by_heap(seg: *const Segment) -> bool {
    // SAFETY: per the contract the header is readable.
    unsafe { (*seg).owner.load(Ordering::Relaxed) != 0 }
}

/// Frees the block of the huge segment `seg`: its mapping goes to the
/// large-block cache, or is unmapped when longer than the cache holds.
///
/// # Safety
/// `seg` is the header of a live huge segment whose block the caller frees.
pub(crate) unsafe fn free(seg: *mut Segment) {
    // A block of a first-class heap freed through the global allocator (a
    // misuse, see `region`): that heap unmaps it when dropped or reset.
    // SAFETY: per the contract the header is readable.
    if unsafe { owned_by_heap(seg) } {
        return;
    }
    // The profiler's substitute of a small block: its mapping goes to the
    // substitutes' own cache (see `sampled`).
    #[cfg(feature = "profiling")]
    // SAFETY: per the contract the header is ours.
    unsafe {
        if substitute(seg) {
            // A second free finds the mark even once the mapping is gone.
            freed_samples::note(seg.cast());
            let (map, _) = count_out(seg);
            // Marked before it is published, as below.
            (*seg).kind = KIND_CACHED;
            if os::past_soft_limit_with(map) || !sampled::put(seg.cast(), map) {
                registry::forget(seg.cast(), map);
                os::unmap(seg.cast(), map);
            }
            return;
        }
    }
    let live = SHARED.large_live_mapped();
    // SAFETY: per the contract.
    let (map, split) = unsafe { count_out(seg) };
    large_cache::purge_if_due();
    if large_cache::accepts(map) {
        // Marked before it is published: once cached, another thread may
        // take it and write a live header.
        // SAFETY: the header is ours until `put` publishes it.
        unsafe { (*seg).kind = KIND_CACHED };
        large_cache::put(seg as usize, map, split, live, SHARED.large_live_mapped());
    } else {
        registry::forget(seg.cast(), map);
        os::unmap(seg.cast(), map);
    }
}

/// Frees the block of the huge segment `seg` of a first-class heap, which
/// the heap has taken off its list: into the large-block cache, as a block
/// of the global allocator goes (a heap that frees a large block, or is
/// reset, and then allocates one again takes it back without a system
/// call).
///
/// # Safety
/// `seg` is the header of a live huge segment of a first-class heap, on no
/// list, whose block the caller frees.
pub(crate) unsafe fn free_of_heap(seg: *mut Segment) {
    // SAFETY: per the contract; with no owner it is any freed large block.
    unsafe {
        (*seg).owner.store(0, Ordering::Relaxed);
        free(seg);
    }
}

/// Unmaps the huge segment `seg` at once, never caching it: for the large
/// blocks of first-class heaps, which give their memory back when dropped.
///
/// # Safety
/// `seg` is the header of a live huge segment whose block the caller frees.
pub(crate) unsafe fn release(seg: *mut Segment) {
    // SAFETY: per the contract.
    let (map, _) = unsafe { count_out(seg) };
    registry::forget(seg.cast(), map);
    os::unmap(seg.cast(), map);
}

/// Marks the huge block of `seg` as the heap profiler's sample `slot` (from
/// `sample::record`; 0 when the profile's table was full): its free takes
/// the sample out of the profile. `substitute_for`: 0 for a large request
/// sampled, else the size of the small block the allocation would have had
/// without sampling, which the block then stands for: its usable size
/// ([`reported_usable_size`]) is that size, and `stats` counts it as such
/// (see `counters::Sampled`), not as a large object.
///
/// # Safety
/// `seg` is the header of a live huge segment, just allocated by the caller.
#[cfg(feature = "profiling")]
pub(crate) unsafe fn mark_sampled(seg: *mut Segment, slot: u32, substitute_for: usize) {
    // SAFETY: per the contract the header is the caller's.
    unsafe {
        (*seg).prof_slot = slot as usize;
        if substitute_for != 0 {
            let usable = usable_size(seg);
            let block = substitute_for.min(usable);
            (*seg).prof_usable = block;
            SHARED.sampled_in(usable, block, (*seg).block_offset);
            if !crate::counters::COUNT_REQUESTED {
                // The C build counts small blocks as wholly requested (it
                // frees without a size): so the block this one stands for.
                let old = (*seg).requested;
                (*seg).requested = block;
                SHARED
                    .large_requested
                    .fetch_add(block.wrapping_sub(old), Ordering::Relaxed);
            }
        }
    }
}

/// The usable size of the huge block of `seg` that `usable_size` reports:
/// for the heap profiler's substitute of a small block, that block's size
/// (its size class's), so that sampling changes no caller's view; else its
/// mapping's usable bytes.
///
/// # Safety
/// `seg` is the header of a live huge segment.
#[cfg(feature = "profiling")]
#[inline]
pub(crate) unsafe fn reported_usable_size(seg: *const Segment) -> usize {
    // SAFETY: per the contract the header is readable.
    unsafe {
        if substitute(seg) {
            (*seg).prof_usable
        } else {
            usable_size(seg)
        }
    }
}

/// For the heap profiler's substitute of a small block: its requested
/// bytes and the block size it stands for; `None` for any other block.
///
/// # Safety
/// `seg` is the header of a live huge segment.
#[cfg(feature = "profiling")]
#[inline]
pub(crate) unsafe fn substitute_request(seg: *const Segment) -> Option<(usize, usize)> {
    // SAFETY: per the contract the header is readable.
    unsafe { substitute(seg).then(|| ((*seg).requested, (*seg).prof_usable)) }
}

/// Whether the huge block of `seg` is the heap profiler's substitute of a
/// small block (see [`mark_sampled`]).
///
/// # Safety
/// `seg` is the header of a live huge segment.
#[cfg(feature = "profiling")]
#[inline]
unsafe fn substitute(seg: *const Segment) -> bool {
    // SAFETY: per the contract the header is readable.
    unsafe { (*seg).prof_usable != 0 }
}

/// Takes the block of `seg` out of the statistics (and, if it is a
/// sampled block, out of the heap profile); returns its mapping's length
/// and `split` token.
///
/// # Safety
/// `seg` is the header of a live huge segment.
unsafe fn count_out(seg: *mut Segment) -> (usize, usize) {
    #[cfg(feature = "profiling")]
    // SAFETY: per the contract the header is ours.
    unsafe {
        if (*seg).prof_slot != 0 {
            crate::sample::remove((*seg).prof_slot as u32);
            (*seg).prof_slot = 0;
        }
        if substitute(seg) {
            SHARED.sampled_out(usable_size(seg), (*seg).prof_usable, (*seg).block_offset);
            (*seg).prof_usable = 0;
        }
    }
    // SAFETY: per the contract the prefix fields are initialised.
    let (map, usable, requested, split) = unsafe {
        (
            (*seg).map_size,
            usable_size(seg),
            (*seg).requested,
            (*seg).split,
        )
    };
    SHARED.large_free(usable, requested);
    (map, split)
}

/// Clears what a zeroed allocation of `size` bytes must: the part of the
/// block `p` (of the huge segment `seg`, just allocated) that may still hold
/// a previous block's data. Memory fresh from the OS reads zero already.
///
/// # Safety
/// `p` is the block of `seg`, just allocated with at least `size` bytes.
pub(crate) unsafe fn zero_stale(seg: *mut Segment, p: *mut u8, size: usize) {
    // SAFETY: per the contract `stale` is initialised and the first `size`
    // bytes of `p` are the caller's.
    unsafe {
        let n = (*seg).stale.min(size);
        if n != 0 {
            p.write_bytes(0, n);
        }
    }
}

/// Whether a huge block of `usable` bytes resized to `new_size` bytes must
/// become a small block (see [`resize`]): when it shrinks to a small size
/// below half of its usable size, or shrinks at all once it is no longer
/// above the large threshold. So a block halved from above the threshold
/// stays where it is once more (as a small block of its class would, see
/// `alloc::realloc`), but a mapping never serves a shrinking small block
/// for long.
pub(crate) const fn moves_to_small(usable: usize, new_size: usize) -> bool {
    new_size <= MAX_SMALL && new_size < usable && (usable <= MAX_SMALL || new_size < usable / 2)
}

/// Resizes the huge block `p` (header `seg`) to `new_size` bytes, keeping its
/// contents and alignment. Returns the block's new address, or null when the
/// caller must move it (a small size, see [`moves_to_small`]) or the OS
/// refused (then `p` is intact).
///
/// Growing first takes back the tail cut from the block's mapping if it is
/// still cached (no system call, resident pages), then asks `mremap` for the
/// rest: in place if the address space after the mapping is free, else by
/// moving it. Shrinking cuts the tail off into the cache, where it stays
/// resident for the block to grow back into: no system call either.
///
/// # Safety
/// `seg` is the header of the live huge segment holding `p`.
pub(crate) unsafe fn resize(seg: *mut Segment, p: *mut u8, new_size: usize) -> *mut u8 {
    // SAFETY: per the contract the header is readable. A first-class heap's
    // block must not move under the heap's list of them (see `region`).
    if unsafe { owned_by_heap(seg) } {
        return ptr::null_mut();
    }
    // The profiler's substitute of a small block stays in place while the
    // new size is between half its reported usable size and all of it (as
    // a small block of its class would); else it is moved (a new
    // allocation, sampled or not, and the free of this one). A sampled
    // large block resizes as any. The sample keeps the size it was taken
    // with.
    #[cfg(feature = "profiling")]
    // SAFETY: per the contract the header is ours.
    unsafe {
        if substitute(seg) {
            let u = (*seg).prof_usable;
            if new_size <= u && new_size >= u / 2 {
                let usable = usable_size(seg);
                // Wholly requested where small blocks count so (see
                // `mark_sampled`).
                let new = if crate::counters::COUNT_REQUESTED {
                    new_size
                } else {
                    u
                };
                SHARED.large_resize((usable, (*seg).requested), (usable, new));
                (*seg).requested = new;
                return p;
            }
            return ptr::null_mut();
        }
    }
    // SAFETY: per the contract the header is ours.
    let (old_map, offset, requested, split) = unsafe {
        (
            (*seg).map_size,
            (*seg).block_offset,
            (*seg).requested,
            (*seg).split,
        )
    };
    if moves_to_small(old_map - offset, new_size) {
        return ptr::null_mut();
    }
    let Some(new_map) = offset
        .checked_add(new_size)
        .and_then(|n| round_up(n, OS_PAGE))
    else {
        return ptr::null_mut();
    };
    if new_map > isize::MAX as usize {
        return ptr::null_mut();
    }
    let old = (old_map - offset, requested);
    let base = seg.cast::<u8>();
    let mut map = old_map;
    if new_map > map {
        let got = large_cache::take_tail(base as usize + map, split, new_map - map);
        if got != 0 {
            // A header the tail once had is now inside this block.
            registry::forget(base.wrapping_add(map), got);
            map += got;
            // SAFETY: the header is ours, and so is the tail (out of the
            // cache), one mapping with the block's. If only part of the
            // tail was needed, the rest stays cached right after the block.
            unsafe {
                (*seg).map_size = map;
                if map != new_map {
                    (*seg).split = 0;
                }
            }
        }
    }
    if new_map == map || (new_map < map && map != old_map) {
        // Fits as it is (with the tail taken back, perhaps a little more
        // than asked, which the usable size shows).
        // SAFETY: the header is ours.
        unsafe { (*seg).requested = new_size };
        SHARED.large_resize(old, (map - offset, new_size));
        return p;
    }
    if new_map < map {
        // Shrinking: the cut tail goes to the cache, still mapped and
        // resident, rather than back to the OS. No system call, and a block
        // that grows again (a vector cut back and refilled) takes it back in
        // place without faulting it in (see the growth above); other blocks
        // may use it meanwhile. Counted first: the tail is not the block's
        // once cached.
        let live = SHARED.large_live_mapped();
        SHARED.large_resize(old, (new_map - offset, new_size));
        // SAFETY: the header is ours.
        unsafe {
            (*seg).map_size = new_map;
            (*seg).requested = new_size;
        }
        let cut = base as usize + new_map;
        let after = SHARED.large_live_mapped();
        let token = large_cache::put_tail(cut, map - new_map, split, live, after);
        // SAFETY: the header is ours.
        unsafe { (*seg).split = token };
        return p;
    }
    let new_base = if os::remap_in_place(base, map, new_map) {
        base
    } else {
        // Forgotten before the old address space can be mapped again by
        // another thread; recorded again below wherever the block ends up.
        registry::forget(base, map);
        os::remap_aligned(base, map, new_map, SEGMENT_SIZE)
    };
    if new_base.is_null() {
        registry::set(base, registry::LARGE);
        if map != old_map {
            // The tail taken back stays with the block.
            SHARED.large_resize(old, (map - offset, requested));
        }
        return ptr::null_mut();
    }
    registry::set(new_base, registry::LARGE);
    let seg = new_base.cast::<Segment>();
    // SAFETY: the header moved with the mapping; `new_map` bytes are mapped.
    // The mapping no longer ends where a tail cut from it may start: it will
    // not join one again.
    unsafe {
        ptr::addr_of_mut!((*seg).map_size).write(new_map);
        ptr::addr_of_mut!((*seg).requested).write(new_size);
        ptr::addr_of_mut!((*seg).split).write(0);
    }
    SHARED.large_resize(old, (new_map - offset, new_size));
    // SAFETY: offset < new_map.
    unsafe { new_base.add(offset) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_block_becomes_small_only_below_half_or_once_small() {
        const M: usize = MAX_SMALL;
        // Above the threshold, or growing: it stays.
        assert!(!moves_to_small(8 * M, 2 * M));
        assert!(!moves_to_small(M / 2, M / 2 + 1));
        assert!(!moves_to_small(M / 2, 4 * M));
        // Halved to a small size from above the threshold: it stays once.
        assert!(!moves_to_small(2 * M, M));
        assert!(!moves_to_small(M + 4096, M / 2 + 2048));
        // Below half, or from a block no longer above the threshold: moves.
        assert!(moves_to_small(2 * M, M - 1));
        assert!(moves_to_small(M + 4096, M / 2));
        assert!(moves_to_small(M, M / 2));
        assert!(moves_to_small(M, M - 4096));
        assert!(moves_to_small(M / 2, 100));
        // Resized to its own size: nothing to do.
        assert!(!moves_to_small(M, M));
    }
}
