//! Thread lifecycle: each thread's heap, from its first allocation to its exit.
//!
//! A thread-local pointer names the thread's heap. It starts out pointing at a
//! shared static heap that is always empty (every direct slot is the empty
//! page), so a thread's first allocation simply misses on the fast path and
//! lands in [`init_heap`], with no "initialised?" branch on the fast path. The
//! thread-local is a `Cell` of a raw pointer with a `const` initialiser, so an
//! access costs one TLS load: no lazy-init check, no destructor registration.
//!
//! Thread exit is seen through a pthread key whose destructor abandons the
//! heap's segments (see [`Heap::abandon`]) and returns the heap to a pool. The
//! pointer goes back to the empty heap, so an allocation made by a later
//! destructor just starts a new heap, which the key destroys in turn.
//!
//! Heaps are carved from OS pages, never from the global allocator.

use crate::heap::Heap;
use crate::os;
use crate::page::Page;
use core::cell::{Cell, UnsafeCell};
use core::ptr;

/// A static that is only written by code that proved exclusive access.
#[repr(transparent)]
pub(crate) struct Shared<T>(UnsafeCell<T>);
// SAFETY: the empty page and heap are never written (every path that writes a
// page or heap first checks that it is not the empty one).
unsafe impl<T> Sync for Shared<T> {}

/// The page that stands for "no page": its `free` list is always null.
pub(crate) static EMPTY_PAGE: Shared<Page> = Shared(UnsafeCell::new(Page::EMPTY));
/// The heap every thread starts with: never allocates, never written.
static EMPTY_HEAP: Shared<Heap> = Shared(UnsafeCell::new(Heap::new(EMPTY_PAGE.0.get())));

thread_local! {
    static HEAP: Cell<*mut Heap> = const { Cell::new(EMPTY_HEAP.0.get()) };
}

/// The calling thread's heap (maybe the empty heap).
#[inline(always)]
pub(crate) fn heap() -> *mut Heap {
    HEAP.get()
}

/// Whether `h` is the shared empty heap.
#[inline(always)]
pub(crate) fn is_empty_heap(h: *mut Heap) -> bool {
    h == EMPTY_HEAP.0.get()
}

/// Unused heaps, and the tail of the last chunk heaps are carved from.
struct Pool {
    free: *mut Heap,
    chunk_next: usize,
    chunk_end: usize,
}
// SAFETY: only accessed under POOL's lock.
unsafe impl Send for Pool {}

static POOL: spin::Mutex<Pool> =
    spin::Mutex::new(Pool { free: ptr::null_mut(), chunk_next: 0, chunk_end: 0 });
const POOL_CHUNK: usize = 64 * 1024;

/// The pthread key whose destructor runs at thread exit; created once.
static KEY: spin::Mutex<Option<libc::pthread_key_t>> = spin::Mutex::new(None);

fn key() -> Option<libc::pthread_key_t> {
    let mut k = KEY.lock();
    if k.is_none() {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: pthread_key_create writes the key and does not allocate.
        if unsafe { libc::pthread_key_create(&mut key, Some(thread_done)) } == 0 {
            *k = Some(key);
        }
    }
    *k
}

fn heap_from_pool() -> *mut Heap {
    let mut pool = POOL.lock();
    if !pool.free.is_null() {
        let h = pool.free;
        // SAFETY: heaps on the pool's list are valid and unused.
        pool.free = unsafe { (*h).next_free };
        return h;
    }
    let size = core::mem::size_of::<Heap>().next_multiple_of(64);
    if pool.chunk_next + size > pool.chunk_end {
        let c = os::map_aligned(POOL_CHUNK, os::OS_PAGE);
        if c.is_null() {
            return ptr::null_mut();
        }
        pool.chunk_next = c as usize;
        pool.chunk_end = c as usize + POOL_CHUNK;
    }
    let h = pool.chunk_next as *mut Heap;
    pool.chunk_next += size;
    h
}

fn heap_to_pool(h: *mut Heap) {
    let mut pool = POOL.lock();
    // SAFETY: the heap is unused from now on; its link is ours to set.
    unsafe { (*h).next_free = pool.free };
    pool.free = h;
}

/// Gives the calling thread a heap of its own. Null when out of memory.
#[cold]
#[inline(never)]
pub(crate) fn init_heap() -> *mut Heap {
    let h = heap_from_pool();
    if h.is_null() {
        return h;
    }
    // SAFETY: `h` is an unused, suitably aligned heap slot of ours.
    unsafe { h.write(Heap::new(EMPTY_PAGE.0.get())) };
    // Set before registering: pthread_setspecific may allocate (keys past the
    // first 32), and that allocation must find this heap.
    HEAP.set(h);
    if let Some(k) = key() {
        // SAFETY: `k` is a live key; the value is only handed back to thread_done.
        unsafe { libc::pthread_setspecific(k, h.cast()) };
    }
    h
}

/// The key destructor: the thread is exiting.
extern "C" fn thread_done(arg: *mut libc::c_void) {
    let h = arg.cast::<Heap>();
    if h.is_null() {
        return;
    }
    HEAP.set(EMPTY_HEAP.0.get());
    // SAFETY: `h` is this thread's heap, which nothing else touches; after this
    // the thread allocates (if at all) from a new heap.
    unsafe { (*h).abandon() };
    heap_to_pool(h);
}

/// Runs `f` on the calling thread's heap, creating it if needed; `None` when
/// no heap can be had.
pub(crate) fn with_heap<R>(f: impl FnOnce(&mut Heap) -> R) -> Option<R> {
    let mut h = heap();
    if is_empty_heap(h) {
        h = init_heap();
        if h.is_null() {
            return None;
        }
    }
    // SAFETY: the heap is this thread's own and not the empty one.
    Some(f(unsafe { &mut *h }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_threads_start_empty_and_get_their_own_heap() {
        let t = std::thread::spawn(|| {
            let before = heap();
            let mine = with_heap(|h| h as *mut Heap as usize).unwrap();
            (is_empty_heap(before), mine, heap() as usize)
        });
        let (was_empty, mine, after) = t.join().unwrap();
        assert!(was_empty);
        assert_eq!(mine, after);
        assert!(!is_empty_heap(mine as *mut Heap));
    }

    #[test]
    fn exited_threads_return_their_heap_to_the_pool() {
        let first = std::thread::spawn(|| with_heap(|h| h as *mut Heap as usize).unwrap())
            .join()
            .unwrap();
        // Some other test thread may take it first; try a few times.
        let reused = (0..64).any(|_| {
            std::thread::spawn(|| with_heap(|h| h as *mut Heap as usize).unwrap())
                .join()
                .unwrap()
                == first
        });
        assert!(reused, "heaps of exited threads are not reused");
    }
}
