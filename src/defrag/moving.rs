//! How a block moves (see the module docs of `defrag`): the allocation in
//! a dense page, taken from the calling thread's heap, and the move itself,
//! which reuses what [`should_move`](super::should_move) found.

use super::sparse_page_of;
use crate::alloc;
use crate::page;
use crate::segment::SLICE_SIZE;
use crate::size_class::{class_for, class_size, CLASS_SIZES, MAX_SMALL};
use crate::thread;
use core::alloc::Layout;
use core::ptr;
use core::sync::atomic::Ordering;

/// Allocates a small block for `size` bytes at `align` in a dense page of
/// the calling thread's heap (see the `heap::dense` docs); a large request
/// is an ordinary allocation. `whole`: counted as the C front end counts
/// (the block size). Null when out of memory.
#[inline]
pub(crate) fn malloc_dense(size: usize, align: usize, whole: bool) -> *mut u8 {
    let class = if align <= SLICE_SIZE && size <= MAX_SMALL {
        class_for(size, align)
    } else {
        None
    };
    let Some(c) = class else {
        return if whole {
            alloc::malloc_whole(size, align)
        } else {
            alloc::malloc(size, align)
        };
    };
    let mut h = thread::heap();
    if thread::is_empty_heap(h) {
        h = thread::init_heap();
        if h.is_null() {
            return ptr::null_mut();
        }
    }
    let requested = if whole { class_size(c) } else { size };
    // SAFETY: `h` is the calling thread's own heap, not the empty one.
    unsafe { dense_block(h, c, requested) }
}

/// Pops a block of class `c` for a request counted as `requested` bytes
/// from a dense page of heap `h` (see the `heap::dense` docs): from the
/// current page when it has one ready, else searching inside the heap's
/// handshake with the background purger, as every allocation slow path
/// does (the search takes slices from segments, which the purger purges).
/// Null when out of memory.
///
/// # Safety
/// `h` is the calling thread's own heap, not the empty one.
#[inline(always)]
unsafe fn dense_block(h: *mut crate::heap::Heap, c: usize, requested: usize) -> *mut u8 {
    // SAFETY: per the contract.
    let q = unsafe { (*h).alloc_dense_ready(c, requested) };
    if !q.is_null() {
        return q;
    }
    // SAFETY: per the contract.
    unsafe { dense_block_slow(h, c, requested) }
}

/// [`dense_block`] when the current page has no block ready for a move.
///
/// # Safety
/// As for [`dense_block`].
#[cold]
#[inline(never)]
unsafe fn dense_block_slow(h: *mut crate::heap::Heap, c: usize, requested: usize) -> *mut u8 {
    // SAFETY: per the contract; the search runs inside the handshake.
    unsafe { thread::owning(h, |heap| heap.alloc_dense_slow(c, requested)) }
}

/// Moves the live block `ptr` of `layout` into a dense page if
/// [`should_move`](super::should_move) picks it: copies its first `init` bytes and frees it.
/// Returns the new address, or `ptr` when it stays (not worth it, or out of
/// memory).
///
/// What a pass runs for every value, so the lookups are made once: the
/// segment and page [`should_move`](super::should_move) found serve the free too, the page's
/// class serves the allocation (no size-to-class computation), and a block
/// of the calling thread's own page is freed by the owner's local free
/// straight away (`alloc::free` would find segment, page and owner again).
/// Anything unusual takes [`move_general`]: a thread with no heap yet, a
/// block not at a block start of the page found (a page merged by meshing
/// into another), and every move with the `secure` feature, whose `free`
/// checks more.
///
/// # Safety
/// `ptr` is a live block of segalloc allocated (or last resized) with
/// `layout`, nothing refers into it, and `init <= layout.size()`.
#[inline]
pub(super) unsafe fn move_sparse(ptr: *mut u8, layout: Layout, init: usize) -> *mut u8 {
    // SAFETY: per the contract `ptr` is a live block of ours, so not null.
    let Some((seg, page)) = (unsafe { sparse_page_of(ptr) }) else {
        return ptr;
    };
    let size = layout.size();
    let h = thread::heap();
    // SAFETY: `page` is the page of the live block `ptr`, whose fields
    // `is_block` reads (`start`, `recip`, `limit`) do not change while the
    // block is live (as `alloc::free` reads them from any thread).
    if thread::is_empty_heap(h) || cfg!(feature = "secure") || !unsafe { (*page).is_block(ptr) } {
        // SAFETY: per the contract.
        return unsafe { move_general(ptr, layout, init) };
    }
    // SAFETY: `page` is the page of a live block; `h` is the calling
    // thread's own heap, not the empty one, and `dense_class` gives a class
    // whose blocks hold `layout`. The new block `q` is fresh and `init`
    // bytes of `ptr` are initialised, so the copy is in bounds and does not
    // overlap. The old block is live, freed once: by the owner's local free
    // when its page is the calling thread's (`seg` and `page` found from it,
    // `free_local`'s contract), else by the general free.
    unsafe {
        let c = dense_class(page::live_class(page), size, layout.align());
        let q = dense_block(h, c, size);
        if q.is_null() {
            return ptr;
        }
        ptr::copy_nonoverlapping(ptr, q, init);
        if (*seg).owner.load(Ordering::Relaxed) == h as usize {
            alloc::free_local(seg, h, page, ptr, size);
        } else {
            alloc::free(ptr, size);
        }
        q
    }
}

/// The class a moved block of `size` bytes at `align` goes to, from class
/// `c` of the page it leaves: `c` itself unless a smaller class would do.
/// Every block of a class has the same alignment (blocks are whole
/// multiples of the block size from a page start at a slice boundary), so
/// the class that served the block serves the move; only a block that a
/// `realloc` shrank in place sits in a larger class than its layout needs,
/// and gets the class an allocation would (`class_for`).
#[inline(always)]
fn dense_class(c: usize, size: usize, align: usize) -> usize {
    // One compare covers class 0 too (`c - 1` wraps to no class at all).
    match CLASS_SIZES.get(c.wrapping_sub(1)) {
        Some(&below) if below as usize >= size => class_for_smaller(c, size, align),
        _ => c,
    }
}

/// [`dense_class`] for a block in a larger class than its layout needs.
#[cold]
#[inline(never)]
fn class_for_smaller(c: usize, size: usize, align: usize) -> usize {
    class_for(size, align).unwrap_or(c)
}

/// [`move_sparse`] the general way, for the cases it leaves: allocation
/// through [`malloc_dense`] and the general free. Same contract.
///
/// # Safety
/// As for [`move_sparse`].
#[cold]
#[inline(never)]
unsafe fn move_general(ptr: *mut u8, layout: Layout, init: usize) -> *mut u8 {
    let q = malloc_dense(layout.size(), layout.align(), false);
    if q.is_null() {
        return ptr;
    }
    // SAFETY: per the contract, as in `move_sparse`.
    unsafe {
        ptr::copy_nonoverlapping(ptr, q, init);
        alloc::free(ptr, layout.size());
    }
    q
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::malloc_dense;
    use crate::{alloc, thread};

    /// The dense allocation's search takes the heap's handshake with the
    /// background purger, as every slow path does: the heap's epoch moves.
    #[test]
    fn the_dense_search_takes_the_handshake() {
        std::thread::spawn(|| {
            // The thread's first allocation sets its heap up.
            let p = malloc_dense(64, 8, false);
            assert!(!p.is_null());
            let hs = thread::handshake(thread::heap());
            let before = hs.idle_epoch().expect("a thread heap, idle");
            // No page of this class yet: the search runs.
            let q = malloc_dense(500_000, 8, false);
            assert!(!q.is_null());
            let after = hs.idle_epoch().expect("idle again");
            assert_ne!(before, after, "the search ran outside the handshake");
            // SAFETY: live blocks of these sizes, freed once.
            unsafe {
                alloc::free(q, 500_000);
                alloc::free(p, 64);
            }
        })
        .join()
        .unwrap();
    }
}
