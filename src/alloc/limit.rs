//! What an allocation does when the memory limit (option `limit`) refused
//! it: the calling thread's heap gives back what it can, and the allocation
//! is tried once more. Cold paths, kept out of the allocation paths' bodies.

use super::pop_from_new_page;
use crate::{heap, large, large_cache, remote_batch, thread};
use core::ptr;

/// A large block; under a memory limit that it would pass, the calling
/// thread's heap gives back what it can first ([`collect_for_limit`]) and
/// it is tried once more. Not inlined into `malloc_generic` (the fast path
/// of small blocks above the direct range), which calls it where it called
/// `large::alloc`.
#[inline(never)]
pub(super) fn large_within_limit(size: usize, align: usize) -> *mut u8 {
    let p = large::alloc(size, align);
    if p.is_null() && collect_for_limit() {
        return large::alloc(size, align);
    }
    p
}

/// With a memory limit set (option `limit`), an allocation failed: the
/// calling thread's heap collects and purges what it holds free (as
/// `collect()` does) and the caches are emptied, so that the allocation can
/// be tried again within the limit. False without a limit (the failure was
/// the OS's). Called outside the heap's slow paths.
#[cold]
#[inline(never)]
fn collect_for_limit() -> bool {
    if crate::options::LIMIT.get() == 0 {
        return false;
    }
    let h = thread::heap();
    if !thread::is_empty_heap(h) {
        // SAFETY: the calling thread's own heap, not the empty one, and its
        // inbox; none of its slow paths is running (we are outside them).
        unsafe {
            thread::owning(h, |heap| {
                remote_batch::collect(heap, &*thread::inbox(h));
                heap.collect();
            })
        }
    }
    large_cache::drain();
    crate::large::drain_sampled();
    true
}

/// `malloc_slow` found no memory: under a memory limit, tries once more
/// after [`collect_for_limit`]. Kept out of `malloc_slow`, whose inlining
/// a second copy of the page path would change.
///
/// # Safety
/// As `malloc_slow`, with `h` a real heap.
#[cold]
#[inline(never)]
pub(super) unsafe fn retry_within_limit(h: *mut heap::Heap, c: usize, size: usize) -> *mut u8 {
    if !collect_for_limit() {
        return ptr::null_mut();
    }
    // SAFETY: per the contract, the calling thread's own heap.
    unsafe { thread::owning(h, |heap| pop_from_new_page(heap, c, size)) }
}
