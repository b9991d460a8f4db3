//! Large objects: requests above [`MAX_SMALL`] bytes (or aligned beyond a
//! slice) get a mapping of their own, a *huge segment*.
//!
//! The mapping starts on a segment boundary with the segment header prefix,
//! so `free` finds it by the same masking as small blocks and tells it apart by
//! `kind`. The block starts one OS page in (or at its alignment, if larger),
//! so the header never shares a page with the block and alignments up to
//! [`MAX_ALIGN`] are served. Freeing unmaps the whole mapping; growing it uses
//! `mremap`, in place when the address space after it is free and otherwise by
//! moving the pages, never by copying bytes.

use crate::os::{self, round_up, OS_PAGE};
use crate::segment::{Segment, HUGE_BLOCK_OFFSET, KIND_HUGE, SEGMENT_SIZE};
use crate::size_class::MAX_SMALL;
use crate::stats::SHARED;
use core::ptr;

/// The largest alignment segalloc serves; larger requests return null.
///
/// It is half a segment, because a huge block must start inside the first
/// segment-sized stretch of its mapping for `free` to find the header.
pub const MAX_ALIGN: usize = SEGMENT_SIZE / 2;

/// Maps a block of `size` bytes aligned to `align`. Null on failure.
pub(crate) fn alloc(size: usize, align: usize) -> *mut u8 {
    if align > MAX_ALIGN {
        return ptr::null_mut();
    }
    let offset = HUGE_BLOCK_OFFSET.max(align);
    let Some(map) = offset.checked_add(size).and_then(|n| round_up(n, OS_PAGE)) else {
        return ptr::null_mut();
    };
    if map > isize::MAX as usize {
        return ptr::null_mut();
    }
    let base = os::map_aligned(map, SEGMENT_SIZE);
    if base.is_null() {
        return base;
    }
    let seg = base.cast::<Segment>();
    // SAFETY: a fresh mapping of `map` bytes; the header prefix fits before
    // `offset` (checked in segment.rs), so these writes touch no block byte.
    unsafe {
        ptr::addr_of_mut!((*seg).kind).write(KIND_HUGE);
        ptr::addr_of_mut!((*seg).map_size).write(map);
        ptr::addr_of_mut!((*seg).block_offset).write(offset);
        ptr::addr_of_mut!((*seg).requested).write(size);
    }
    SHARED.large_alloc(map - offset, size);
    #[cfg(feature = "secure")]
    crate::segment::registry::add(base);
    // SAFETY: offset < map.
    unsafe { base.add(offset) }
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

/// Unmaps the huge segment `seg`.
///
/// # Safety
/// `seg` is the header of a live huge segment whose block the caller frees.
pub(crate) unsafe fn free(seg: *mut Segment) {
    // A block of a first-class heap freed through the global allocator (a
    // misuse, see `region`): that heap unmaps it when dropped or reset.
    // SAFETY: per the contract the header is readable.
    if unsafe { crate::region::owned_large(seg) } {
        return;
    }
    // SAFETY: per the contract.
    let (map, usable, requested) = unsafe { ((*seg).map_size, usable_size(seg), (*seg).requested) };
    SHARED.large_free(usable, requested);
    #[cfg(feature = "secure")]
    crate::segment::registry::remove(seg.cast());
    os::unmap(seg.cast(), map);
}

/// Resizes the huge block `p` (header `seg`) to `new_size` bytes, keeping its
/// contents and alignment. Returns the block's new address, or null when the
/// caller must move it (a small size) or the OS refused (then `p` is intact).
///
/// # Safety
/// `seg` is the header of the live huge segment holding `p`.
pub(crate) unsafe fn resize(seg: *mut Segment, p: *mut u8, new_size: usize) -> *mut u8 {
    // SAFETY: per the contract the header is readable. A first-class heap's
    // block must not move under the heap's list of them (see `region`).
    if new_size <= MAX_SMALL || unsafe { crate::region::owned_large(seg) } {
        return ptr::null_mut();
    }
    // SAFETY: per the contract the header is ours.
    let (map, offset, requested) =
        unsafe { ((*seg).map_size, (*seg).block_offset, (*seg).requested) };
    let Some(new_map) = offset
        .checked_add(new_size)
        .and_then(|n| round_up(n, OS_PAGE))
    else {
        return ptr::null_mut();
    };
    if new_map > isize::MAX as usize {
        return ptr::null_mut();
    }
    if new_map == map {
        // SAFETY: the header is ours.
        unsafe { (*seg).requested = new_size };
        SHARED.large_resize((map - offset, requested), (map - offset, new_size));
        return p;
    }
    let base = seg.cast::<u8>();
    let new_base = if new_map < map || os::remap_in_place(base, map, new_map) {
        if new_map < map {
            // Shrinking in place always works; count it the same way.
            os::remap_in_place(base, map, new_map);
        }
        base
    } else {
        os::remap_aligned(base, map, new_map, SEGMENT_SIZE)
    };
    if new_base.is_null() {
        return ptr::null_mut();
    }
    #[cfg(feature = "secure")]
    if new_base != base {
        crate::segment::registry::remove(base);
        crate::segment::registry::add(new_base);
    }
    let seg = new_base.cast::<Segment>();
    // SAFETY: the header moved with the mapping; `new_map` bytes are mapped.
    unsafe {
        ptr::addr_of_mut!((*seg).map_size).write(new_map);
        ptr::addr_of_mut!((*seg).requested).write(new_size);
    }
    SHARED.large_resize((map - offset, requested), (new_map - offset, new_size));
    // SAFETY: offset < new_map.
    unsafe { new_base.add(offset) }
}
