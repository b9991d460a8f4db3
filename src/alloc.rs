//! Where a pointer goes: the allocation and free paths shared by the
//! `GlobalAlloc` front end and the C ABI.
//!
//! malloc: requests up to [`DIRECT_MAX`] bytes with alignment up to 16 read
//! the thread's heap pointer, index `direct` with the rounded size, and pop the
//! page's `free` list: a TLS load, three dependent loads, two stores, no atomic
//! and no lock. Anything else goes to [`malloc_generic`] (other small sizes and
//! alignments, then the large path); an empty page goes to the heap's slow path.
//!
//! free: the segment header is found by masking the pointer; a huge segment is
//! unmapped, a small one gives the page through `slice_head`. If the calling
//! thread owns the segment the block goes on the page's `local_free` (plain
//! stores); otherwise it is pushed on the page's `thread_free` with one CAS.

use crate::heap::{self, DIRECT_MAX};
use crate::large;
use crate::page::{self, Block};
use crate::segment::{segment_of, Segment, KIND_HUGE, KIND_SMALL, SLICE_SIZE};
use crate::size_class::{class_for, class_of, MAX_SMALL, MIN_ALIGN};
use crate::thread;
use crate::atomic::Ordering;
use core::ptr;

/// Allocates `size` bytes aligned to `align` (a power of two). Null on failure.
#[inline(always)]
pub(crate) fn malloc(size: usize, align: usize) -> *mut u8 {
    if align <= MIN_ALIGN && size <= DIRECT_MAX {
        // Rounding to the alignment keeps 16-aligned requests off the 8-aligned
        // classes; for alignment 8 or less it changes nothing.
        let s = (size + align - 1) & !(align - 1);
        let h = thread::heap();
        // SAFETY: `h` is this thread's heap or the never-written empty heap;
        // `(s + 7) / 8 < DIRECT_SLOTS` since `s <= DIRECT_MAX`; direct slots
        // hold pages of this heap or the empty page, which `pop` allows.
        unsafe {
            let p = (*h).direct[(s + 7) >> 3];
            let b = page::pop(p);
            if !b.is_null() {
                return b;
            }
            return malloc_slow(h, class_of(s));
        }
    }
    malloc_generic(size, align)
}

/// Small requests outside the direct range or with alignment above 16, and
/// large requests.
#[inline(never)]
fn malloc_generic(size: usize, align: usize) -> *mut u8 {
    if align <= SLICE_SIZE && size <= MAX_SMALL {
        if let Some(c) = class_for(size, align) {
            let h = thread::heap();
            // SAFETY: as in `malloc`; `current_page` gives a page of this heap or
            // the empty page.
            unsafe {
                let b = page::pop((*h).current_page(c));
                if !b.is_null() {
                    return b;
                }
                return malloc_slow(h, c);
            }
        }
    }
    large::alloc(size, align)
}

/// The current page of class `c` is empty (or the heap is not set up yet).
#[cold]
#[inline(never)]
unsafe fn malloc_slow(mut h: *mut heap::Heap, c: usize) -> *mut u8 {
    if thread::is_empty_heap(h) {
        h = thread::init_heap();
        if h.is_null() {
            return ptr::null_mut();
        }
    }
    // SAFETY: `h` is the calling thread's own heap.
    unsafe { heap::alloc_from_new_page(&mut *h, c) }
}

/// Allocates zeroed memory, skipping the memset for memory fresh from the OS.
pub(crate) fn zalloc(size: usize, align: usize) -> *mut u8 {
    let p = malloc(size, align);
    if p.is_null() {
        return p;
    }
    let seg = segment_of(p);
    // SAFETY: `p` is a live block of `size` bytes we just allocated; its
    // segment header is valid. For a small block, the page's FREE_ZERO flag
    // describes the list `p` was popped from (only this thread changes it).
    unsafe {
        if (*seg).kind == KIND_HUGE {
            return p; // a fresh mapping
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

/// Frees a block from [`malloc`].
///
/// # Safety
/// `p` is a live block returned by this allocator.
#[inline(always)]
pub(crate) unsafe fn free(p: *mut u8) {
    let seg = segment_of(p);
    // SAFETY: `p` is live, so its segment header is valid and the page found
    // through it is the block's; ownership decides who may touch the page.
    unsafe {
        if (*seg).kind != KIND_SMALL {
            return free_huge(seg);
        }
        let page = (*seg).page_of(p);
        let h = thread::heap();
        if (*seg).owner.load(Ordering::Relaxed) == h as usize {
            if (*page).free_local(p) {
                (*h).free_slow(page);
            }
        } else {
            free_remote(seg, page, p);
        }
    }
}

#[cold]
#[inline(never)]
unsafe fn free_huge(seg: *mut Segment) {
    // SAFETY: the caller's block lives in `seg`.
    unsafe {
        if (*seg).kind == KIND_HUGE {
            large::free(seg);
        } else {
            crate::fatal("free of a pointer segalloc does not own", seg.cast());
        }
    }
}

/// Frees a block of a segment owned by another thread (or abandoned).
#[inline(never)]
unsafe fn free_remote(seg: *mut Segment, page: *mut page::Page, p: *mut u8) {
    // SAFETY: the block is live until the push, so its page and segment are too.
    unsafe {
        let bit = 1u64 << (*seg).page_index(page);
        // Flag first: once the block is pushed its page may be freed at once.
        if (*seg).thread_freed.load(Ordering::Relaxed) & bit == 0 {
            (*seg).thread_freed.fetch_or(bit, Ordering::Release);
        }
        page::free_remote(&*page, p);
    }
}

/// Usable size of the live block `p`.
///
/// # Safety
/// `p` is a live block returned by this allocator.
pub(crate) unsafe fn usable_size(p: *const u8) -> usize {
    let seg = segment_of(p);
    // SAFETY: `p` is live, so its segment header is valid.
    unsafe {
        if (*seg).kind == KIND_HUGE {
            large::usable_size(seg)
        } else {
            (*(*seg).page_of(p)).block_size
        }
    }
}

/// Resizes `p` to `new_size` bytes with alignment `align`, in place when its
/// size class (or mapping) allows; else moves it, copying `min(old_size,
/// new_size)` bytes. Null on failure, `p` then left intact.
///
/// # Safety
/// `p` is a live block of at least `old_size` bytes aligned to `align`.
pub(crate) unsafe fn realloc(p: *mut u8, old_size: usize, align: usize, new_size: usize) -> *mut u8 {
    let seg = segment_of(p);
    // SAFETY: `p` is live, so its segment header (and page) are valid.
    unsafe {
        if (*seg).kind == KIND_HUGE {
            if align <= large::MAX_ALIGN {
                let q = large::resize(seg, p, new_size);
                if !q.is_null() {
                    return q;
                }
                if new_size > MAX_SMALL {
                    return ptr::null_mut(); // the OS said no; `p` is intact
                }
            }
        } else {
            let page = (*seg).page_of(p);
            let bs = (*page).block_size;
            if new_size <= bs && align <= SLICE_SIZE {
                if let Some(c) = class_for(new_size, align) {
                    if c == (*page).class as usize {
                        return p;
                    }
                }
            }
        }
        let q = malloc(new_size, align);
        if q.is_null() {
            return q;
        }
        ptr::copy_nonoverlapping(p, q, old_size.min(new_size).min(usable_size(p)));
        free(p);
        q
    }
}
