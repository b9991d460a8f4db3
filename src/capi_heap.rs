//! First-class heaps for C (cargo feature `override`): `segalloc_heap_new`,
//! its `malloc`, `calloc`, `realloc`, `aligned_alloc` and `free`, `reset`
//! (free everything at once, keep the memory), `destroy` (free everything
//! and give the memory back) and `stats`, declared in `include/segalloc.h`.
//! Each is a thin shell over [`crate::Heap`], as mimalloc's `mi_heap_*` are
//! over its heaps.
//!
//! A heap is used by one thread at a time (it may move between threads, as
//! a Rust `Heap` is `Send` but not `Sync`). Any thread may free one of its
//! blocks with plain `free`, which takes the cross-thread path and reaches
//! the heap at its next allocation that needs a page.
//!
//! C frees without a size, so a small block counts its whole size class as
//! requested (as the C front end's `malloc` does), and the statistics come
//! back exactly when it is freed.

use crate::allocator_api2::alloc::Allocator;
use crate::capi::enomem;
use crate::os::set_errno;
use crate::size_class::{class_for, class_size, MAX_SMALL, MIN_ALIGN};
use crate::{alloc, Heap};
use core::alloc::Layout;
use core::ffi::{c_int, c_void};
use core::ptr::{self, NonNull};

/// A first-class heap, as C sees it: opaque, made by [`segalloc_heap_new`].
pub struct SegallocHeap {
    heap: Heap,
}

/// The layout a C request of `size` bytes at `align` is served and counted
/// with: a small one rounded up to its whole class. `None` when no layout
/// holds it.
fn whole(size: usize, align: usize) -> Option<Layout> {
    let size = size.max(1);
    let n = if size <= MAX_SMALL {
        class_for(size, align).map_or(size, class_size)
    } else {
        size
    };
    Layout::from_size_align(n, align).ok()
}

/// The heap behind a handle.
///
/// # Safety
/// `h` comes from [`segalloc_heap_new`], not yet destroyed, and no other
/// thread uses it now.
unsafe fn heap<'a>(h: *mut SegallocHeap) -> &'a Heap {
    // SAFETY: per the contract.
    unsafe { &(*h).heap }
}

/// A new, empty heap; it takes memory at its first allocation. Null with
/// `errno = ENOMEM` when even its handle cannot be had.
#[no_mangle]
pub extern "C" fn segalloc_heap_new() -> *mut SegallocHeap {
    let p = alloc::malloc_whole(
        core::mem::size_of::<SegallocHeap>(),
        core::mem::align_of::<SegallocHeap>().max(MIN_ALIGN),
    )
    .cast::<SegallocHeap>();
    if p.is_null() {
        return enomem().cast();
    }
    // SAFETY: a fresh block of the handle's size and alignment.
    unsafe { p.write(SegallocHeap { heap: Heap::new() }) };
    p
}

/// Frees every block of heap `h` at once and gives its memory back to the
/// OS; the handle is gone too. Null is a no-op.
///
/// # Safety
/// `h` is null or a live heap no other thread uses; none of its blocks is
/// used afterwards.
#[no_mangle]
pub unsafe extern "C" fn segalloc_heap_destroy(h: *mut SegallocHeap) {
    if h.is_null() {
        return;
    }
    // SAFETY: per the contract, the handle is live and ours alone; dropping
    // the heap frees its blocks; the handle's block came from `malloc_whole`.
    unsafe {
        ptr::drop_in_place(h);
        alloc::free(h.cast(), alloc::UNSIZED);
    }
}

/// Frees every block of heap `h` at once, keeping its memory for the next
/// blocks (see `segalloc::Heap::reset`).
///
/// # Safety
/// As for [`segalloc_heap_destroy`], but the heap stays usable.
#[no_mangle]
pub unsafe extern "C" fn segalloc_heap_reset(h: *mut SegallocHeap) {
    // SAFETY: per the contract, the heap is ours alone.
    unsafe { (*h).heap.reset() }
}

/// `malloc` from heap `h`: `size` bytes, 16-aligned; 0 bytes is a unique
/// block. Null with `errno = ENOMEM` on failure.
///
/// # Safety
/// `h` is a live heap no other thread uses now.
#[no_mangle]
pub unsafe extern "C" fn segalloc_heap_malloc(h: *mut SegallocHeap, size: usize) -> *mut c_void {
    // SAFETY: forwarded contract.
    unsafe { segalloc_heap_aligned_alloc(h, MIN_ALIGN, size) }
}

/// `aligned_alloc` from heap `h`: `size` bytes aligned to `align`, a power
/// of two (else null with `errno = EINVAL`). Null with `errno = ENOMEM` on
/// failure.
///
/// # Safety
/// As for [`segalloc_heap_malloc`].
#[no_mangle]
pub unsafe extern "C" fn segalloc_heap_aligned_alloc(
    h: *mut SegallocHeap,
    align: usize,
    size: usize,
) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    let Some(l) = whole(size, align.max(MIN_ALIGN)) else {
        return enomem();
    };
    // SAFETY: per the contract.
    match unsafe { heap(h) }.allocate(l) {
        Ok(b) => b.as_ptr().cast(),
        Err(_) => enomem(),
    }
}

/// `calloc` from heap `h`: `n * size` zeroed bytes; null with `errno =
/// ENOMEM` on overflow or failure.
///
/// # Safety
/// As for [`segalloc_heap_malloc`].
#[no_mangle]
pub unsafe extern "C" fn segalloc_heap_calloc(
    h: *mut SegallocHeap,
    n: usize,
    size: usize,
) -> *mut c_void {
    let Some(l) = n.checked_mul(size).and_then(|t| whole(t, MIN_ALIGN)) else {
        return enomem();
    };
    // SAFETY: per the contract.
    match unsafe { heap(h) }.allocate_zeroed(l) {
        Ok(b) => b.as_ptr().cast(),
        Err(_) => enomem(),
    }
}

/// `realloc` in heap `h`: null `p` is `malloc`, size 0 frees `p` and returns
/// null (as glibc), else a block of `size` bytes holding what fits of `p`,
/// in place when its class or mapping allows. A `p` of another heap (or of
/// `malloc`) moves into `h`. Null with `errno = ENOMEM` on failure, `p`
/// intact.
///
/// # Safety
/// `h` as for [`segalloc_heap_malloc`]; `p` is null or a live block of
/// segalloc's, not used after a successful call.
#[no_mangle]
pub unsafe extern "C" fn segalloc_heap_realloc(
    h: *mut SegallocHeap,
    p: *mut c_void,
    size: usize,
) -> *mut c_void {
    // SAFETY: forwarded contract.
    unsafe {
        let Some(p) = NonNull::new(p.cast::<u8>()) else {
            return segalloc_heap_malloc(h, size);
        };
        if size == 0 {
            segalloc_heap_free(h, p.as_ptr().cast());
            return ptr::null_mut();
        }
        let Some(new) = whole(size, MIN_ALIGN) else {
            return enomem();
        };
        let heap = heap(h);
        // The whole block, as it was counted (a small one) or as its
        // mapping holds it (a large one, counted by its header).
        let old = Layout::from_size_align_unchecked(alloc::usable_size(p.as_ptr()), MIN_ALIGN);
        let r = if new.size() >= old.size() {
            heap.grow(p, old, new)
        } else {
            heap.shrink(p, old, new)
        };
        match r {
            Ok(b) => b.as_ptr().cast(),
            Err(_) => enomem(),
        }
    }
}

/// `free` of a block of heap `h` (null is a no-op). A block of another heap
/// or of `malloc` is freed too, as `free` would.
///
/// # Safety
/// `h` as for [`segalloc_heap_malloc`]; `p` is null or a live block of
/// segalloc's.
#[no_mangle]
pub unsafe extern "C" fn segalloc_heap_free(h: *mut SegallocHeap, p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: per the contract; C blocks are counted whole (`UNSIZED`).
    unsafe { heap(h).free_block(p.cast(), alloc::UNSIZED) }
}

/// Fills the first `size` bytes of `*out` with heap `h`'s own statistics,
/// as `segalloc_stats` does for the process (process-wide fields read 0).
/// They count the frees made through the heap; a block freed with `free`
/// by another thread counts in that thread's figures (see `Heap::stats`).
/// 0, or EINVAL for a null argument or a `size` below one field.
///
/// # Safety
/// `h` as for [`segalloc_heap_malloc`]; `out` points to `size` writable
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn segalloc_heap_stats(
    h: *mut SegallocHeap,
    out: *mut crate::capi::SegallocStats,
    size: usize,
) -> c_int {
    if h.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: per the contract.
    unsafe { crate::capi::write_stats(&heap(h).stats(), out, size) }
}
