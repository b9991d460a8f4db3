//! `realloc`: in place when the block's class or mapping allows, through
//! the large-block cache when a small block grows towards the large range,
//! else a move (allocate, copy, free) through `alloc`'s paths.

#[cfg(feature = "secure")]
use super::misuse::check_live_block;
use super::misuse::{check_huge, freed_again, freed_again_remote, not_a_block, not_ours_or_freed};
use super::{counted, free, malloc_in, usable_size, UNSIZED};
use crate::atomic::Ordering;
use crate::freed;
use crate::large;
use crate::os;
use crate::page;
use crate::segment::{registry, segment_of, Segment, SLICE_SIZE};
use crate::size_class::{class_for, MAX_SMALL, MIN_ALIGN};
use crate::thread;
use core::ptr;

/// A small block that `realloc` grows past this size takes a cached large
/// mapping if one fits in place (see `realloc_in`): half the large
/// threshold, where a block takes eight slices or more, a page of its own.
const GROW_TO_LARGE: usize = MAX_SMALL / 2;

/// Resizes `p` (asked for with `old_size` bytes, [`UNSIZED`] if unknown) to
/// `new_size` bytes with alignment `align`, in place when its size class (or
/// mapping) allows, or when it shrinks to at least half of its block;
/// else moves it, copying what fits. Null on failure, `p` then left intact.
///
/// # Safety
/// `p` is a live block of at least `old_size` bytes aligned to `align`.
pub(crate) unsafe fn realloc(
    p: *mut u8,
    old_size: usize,
    align: usize,
    new_size: usize,
) -> *mut u8 {
    // SAFETY: forwarded contract.
    unsafe { realloc_in::<false>(p, old_size, align, new_size) }
}

/// [`realloc`] for callers that free without a size (C): the new block counts
/// as wholly requested, as with [`malloc_whole`].
///
/// # Safety
/// As [`realloc`].
#[cfg_attr(not(feature = "override"), allow(dead_code))]
pub(crate) unsafe fn realloc_whole(
    p: *mut u8,
    old_size: usize,
    align: usize,
    new_size: usize,
) -> *mut u8 {
    // SAFETY: forwarded contract.
    unsafe { realloc_in::<true>(p, old_size, align, new_size) }
}

/// `realloc` found a freed mark on `p`: aborts if it is free (see
/// [`freed_again`]); a block with the batched mark, or one of another
/// thread's page, is taken as freed (see `freed`).
///
/// # Safety
/// `p` is a small block of `page` in `seg`.
#[cold]
#[inline(never)]
unsafe fn realloc_of_freed(seg: *mut Segment, page: *mut page::Page, p: *mut u8) {
    const WHAT: &str = "realloc of a freed block";
    // SAFETY: per the contract; the lists are walked only by their owner.
    unsafe {
        if (*seg).owner.load(Ordering::Relaxed) == thread::heap() as usize
            && freed::is_marked(p, (*seg).freed_key)
        {
            freed_again(page, p, WHAT);
        } else {
            freed_again_remote(p, WHAT);
        }
    }
}

unsafe fn realloc_in<const WHOLE: bool>(
    p: *mut u8,
    old_size: usize,
    align: usize,
    new_size: usize,
) -> *mut u8 {
    let seg = segment_of(p);
    let kind = registry::kind(seg);
    if kind == registry::NONE {
        not_ours_or_freed(p, "realloc of a freed block");
    }
    let mut q = ptr::null_mut();
    // SAFETY: the registry knows the segment, so its header is valid; `p`
    // is checked to be a live block of it (below) before it is used.
    unsafe {
        if kind != registry::SMALL {
            check_huge(
                seg,
                p,
                "realloc of a freed large block",
                "realloc of a freed block",
            );
            if large::owned_by_heap(seg) {
                // A first-class heap's block (a misuse, see `region`) must
                // not move under its heap: only shrinking to a small block,
                // which leaves the old one to the heap, is done.
                if new_size > MAX_SMALL {
                    return ptr::null_mut();
                }
            } else if align <= large::MAX_ALIGN && os::mremap_usable() {
                #[cfg(feature = "profiling")]
                let substitute = large::substitute_request(seg);
                let q = large::resize(seg, p, new_size);
                if !q.is_null() {
                    // A substitute resized in place: its new request.
                    #[cfg(feature = "profiling")]
                    if let (Some((old, _)), Some(k)) = (substitute, super::own_counters()) {
                        let new = large::substitute_request(seg).map_or(old, |r| r.0);
                        k.sampled.requested.add(new.wrapping_sub(old));
                    }
                    return q;
                }
                // A small size, or the OS said no: out of memory (then the
                // copy below fails too, leaving `p` intact), or a mapping
                // `mremap` cannot take whole (the program split it with
                // `mprotect` or `madvise`): move it by copying.
            }
            // The profiler's substitute of a small block growing out of its
            // class: where the small block it stands for would go (below),
            // so that sampling does not change where a growing vector ends
            // up (it went to a fresh small block, and the cached mapping
            // then stayed unused; `tests/large_cache.rs` caught it).
            #[cfg(feature = "profiling")]
            if let Some((_, block)) = large::substitute_request(seg) {
                if new_size > block && new_size > GROW_TO_LARGE {
                    q = large::alloc_cached(new_size, align);
                }
            }
        } else {
            let page = (*seg).page_of(p);
            if !(*page).is_block(p) {
                // A block of a page merged into another (`mesh`): resized
                // through the merged page's address.
                let q = crate::mesh::alias_target(seg, p);
                if !q.is_null() {
                    return realloc_in::<WHOLE>(q, old_size, align, new_size);
                }
                not_a_block(p, "realloc of a freed block");
            }
            #[cfg(feature = "secure")]
            check_live_block(seg, page, p, thread::heap(), "realloc of a freed block");
            if freed::is_freed(p, (*seg).freed_key) {
                realloc_of_freed(seg, page, p);
            }
            // A free block whose memory was given back lost its mark; the
            // page's map of purged OS pages tells, to any thread (a live
            // block is never in one), and its owner knows its excluded
            // blocks too (`page::share`).
            let owner = (*seg).owner.load(Ordering::Relaxed) == thread::heap() as usize;
            (*page).check_not_purged_realloc(p, owner);
            let bs = (*page).block_size;
            if new_size <= bs && align <= SLICE_SIZE {
                let c = (*page).class as usize;
                // Its own class, or a block at most twice the new size
                // (mimalloc's rule): a vector cut back by halves is copied
                // every other step, not at every one. `p` is aligned to
                // `align` already (the contract); the 16-byte alignment a
                // fresh block of the new size would have is checked (blocks
                // of the 8-aligned classes may lack it).
                if (new_size >= bs / 2 && p as usize % MIN_ALIGN == 0)
                    || class_for(new_size, align) == Some(c)
                {
                    if let Some(k) = thread::current_counters() {
                        let old = if old_size == UNSIZED { bs } else { old_size };
                        let new = counted::<WHOLE>(new_size, c);
                        k.class[c].requested.add(new.wrapping_sub(old));
                        k.realloc_in_place.add(1);
                    }
                    return p;
                }
            }
            if new_size > bs && new_size > GROW_TO_LARGE {
                // Growing towards the large range (a vector doubling): a
                // mapping of the large-block cache, if one fits where it
                // is, rather than a page of its own. It is resident, so no
                // page faults, it adds nothing to the resident set, and
                // the block grows on into its tail without copying.
                q = large::alloc_cached(new_size, align);
            }
        }
        if q.is_null() {
            q = malloc_in::<WHOLE, false>(new_size, align);
            if q.is_null() {
                return q;
            }
        }
        ptr::copy_nonoverlapping(p, q, old_size.min(new_size).min(usable_size(p)));
        free(p, old_size);
        if let Some(k) = thread::current_counters() {
            k.realloc_moved.add(1);
        }
        q
    }
}
