//! The misuse checks of `free` and `realloc` that leave the fast path: each
//! ends in the one-line abort of `crate::fatal` (see the README's misuse
//! table); the cheap tests that decide to call them stay inline in `alloc`.

#[cfg(feature = "secure")]
use crate::atomic::Ordering;
#[cfg(feature = "secure")]
use crate::heap;
use crate::page;
use crate::segment::{registry, Segment, KIND_CACHED, KIND_HUGE};

/// Aborts unless `p`, a pointer into `page`'s slices, starts one of the
/// page's blocks (see `page`: a multiply and a compare). Any thread may ask.
///
/// # Safety
/// `page` is the page descriptor covering `p` in a small segment of ours.
#[inline(always)]
pub(crate) unsafe fn check_block(page: *const page::Page, p: *const u8) {
    // SAFETY: per the contract the descriptor is valid.
    if unsafe { !(*page).is_block(p) } {
        not_a_block(p, "double free");
    }
}

/// A pointer into a small segment that starts no block of a page in use:
/// an interior pointer, or one into memory no block was made of; or (with
/// the feature `profiling`) where a sampled block was, whose mapping a
/// small segment took after its free: `freed` (see [`freed_sample`]).
#[cold]
#[inline(never)]
pub(super) fn not_a_block(p: *const u8, freed: &str) -> ! {
    freed_sample(p, freed);
    crate::fatal("free or realloc of an interior or invalid pointer", p)
}

/// With the feature `profiling`: aborts with `freed` (the double free, or
/// realloc of a freed block, it is) if `p` is where the block of a freed
/// sample was (`large::freed_samples`), whose mapping has been unmapped
/// or taken by another segment since, so that the checks that follow
/// would call it a pointer segalloc does not own, or an invalid one. For
/// the misuse paths: `p` is known to start no live block.
#[cold]
#[inline(never)]
pub(super) fn freed_sample(p: *const u8, freed: &str) {
    #[cfg(feature = "profiling")]
    if crate::large::freed_samples::freed_at(p) {
        crate::fatal(freed, p);
    }
    #[cfg(not(feature = "profiling"))]
    let _ = (p, freed);
}

/// [`not_ours`] for a pointer freed or reallocated: first the check of
/// [`freed_sample`], which says `freed`.
#[cold]
#[inline(never)]
pub(super) fn not_ours_or_freed(p: *const u8, freed: &str) -> ! {
    freed_sample(p, freed);
    not_ours(p)
}

/// A pointer in no segment of segalloc's: one deep inside a large block
/// (past the header's 4 MiB stretch), or one segalloc never mapped.
#[cold]
#[inline(never)]
pub(crate) fn not_ours(p: *const u8) -> ! {
    // Large blocks up to 4 GiB are looked for (at most 1 KiB of the map read).
    if let Some(seg) = registry::large_base_below(p, 1024) {
        // SAFETY: a registered segment's header page is mapped.
        let (kind, end) = unsafe { ((*seg).kind, seg as usize + (*seg).map_size) };
        if (p as usize) < end && kind == KIND_HUGE {
            crate::fatal("free of an interior pointer of a large block", p);
        }
        if (p as usize) < end && kind == KIND_CACHED {
            crate::fatal("free or realloc of a pointer into a freed large block", p);
        }
    }
    crate::fatal("free or realloc of a pointer segalloc does not own", p)
}

/// Always on, for pointers whose segment is not a small one: the header must
/// be a live huge segment's and `p` its block. A freed block still in the
/// large-block cache says `freed` (a double free, or realloc of a freed
/// block); a pointer that is not the block, but where a freed sampled
/// block was before another block took the stretch, says `freed_sample`
/// (see [`freed_sample`]). Costs nothing on the small paths.
///
/// # Safety
/// `seg`'s first page is readable.
#[cold]
pub(super) unsafe fn check_huge(
    seg: *mut Segment,
    p: *const u8,
    freed: &str,
    freed_sample_what: &str,
) {
    // SAFETY: per the contract; the prefix fields are in the first page.
    unsafe {
        let block = seg.cast::<u8>().add((*seg).block_offset);
        if (*seg).kind == KIND_CACHED {
            if p == block {
                crate::fatal(freed, p);
            }
            freed_sample(p, freed_sample_what);
            crate::fatal("free or realloc of a pointer into a freed large block", p);
        }
        if (*seg).kind != KIND_HUGE {
            freed_sample(p, freed_sample_what);
            crate::fatal("free of a pointer segalloc does not own", p);
        }
        if p != block {
            freed_sample(p, freed_sample_what);
            crate::fatal("free of an interior pointer of a large block", p);
        }
    }
}

/// `secure`: `p` must be the start of a carved block of a page in use, and,
/// when the caller owns the page, not already free. A block freed by another
/// thread is only checked for the first two: the owner's lists are its own.
///
/// # Safety
/// `seg` is a small segment of segalloc's and `page` the page covering `p`.
#[cfg(feature = "secure")]
#[inline]
pub(crate) unsafe fn check_live_block(
    seg: *mut Segment,
    page: *mut page::Page,
    p: *const u8,
    h: *mut heap::Heap,
    what: &str,
) {
    // SAFETY: per the contract; the page's carved range and flags are only
    // read, and its lists only by their owner.
    unsafe {
        if !(*page).has(page::IN_USE) || !(*page).is_block_start(p) {
            crate::fatal("free or realloc of an interior or invalid pointer", p);
        }
        if (*seg).owner.load(Ordering::Relaxed) == h as usize && (*page).is_free_block(p) {
            crate::fatal(what, p);
        }
    }
}

/// The block `p` of `page`, a page of the calling thread's, carries the
/// freed mark (see `freed`): aborts with `what` if it is on one of the page's
/// lists; else the program wrote the mark's value itself, and nothing is
/// wrong.
///
/// # Safety
/// `page` is an in-use page owned by the calling thread (or its first-class
/// heap) and `p` one of its blocks.
#[cold]
#[inline(never)]
pub(super) unsafe fn freed_again(page: *mut page::Page, p: *mut u8, what: &str) {
    // SAFETY: per the contract, the page's lists are ours to walk.
    if unsafe { (*page).is_free_block(p) } {
        crate::fatal(what, p);
    }
}

/// A thread that does not own `p`'s page found the freed mark on it: it
/// cannot walk the owner's lists, and a live block carries the mark only if
/// the program copied it out of freed memory, so it is a second free.
#[cold]
#[inline(never)]
pub(super) fn freed_again_remote(p: *mut u8, what: &str) -> ! {
    crate::fatal(what, p)
}
