//! Fuzzes the first-class heaps of the C ABI (`segalloc_heap_*`, feature
//! `override`, declared in `include/segalloc.h`): each thread of the driver
//! allocates from a heap of its own (made at its first allocation), and
//! frees, reallocates and resizes through it, blocks of its own and blocks
//! other threads sent it (which `segalloc_heap_free` and
//! `segalloc_heap_realloc` take from any heap). The driver checks every
//! result against its shadow model; once every block is freed and every
//! thread joined, the heaps are destroyed. See `src/lib.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use segalloc_fuzz::{run, Backend};
use std::cell::Cell;
use std::ffi::c_void;
use std::sync::Mutex;

#[repr(C)]
struct SegallocHeap {
    _opaque: [u8; 0],
}

extern "C" {
    fn segalloc_heap_new() -> *mut SegallocHeap;
    fn segalloc_heap_destroy(h: *mut SegallocHeap);
    fn segalloc_heap_malloc(h: *mut SegallocHeap, size: usize) -> *mut c_void;
    fn segalloc_heap_calloc(h: *mut SegallocHeap, n: usize, size: usize) -> *mut c_void;
    fn segalloc_heap_realloc(h: *mut SegallocHeap, p: *mut c_void, size: usize) -> *mut c_void;
    fn segalloc_heap_aligned_alloc(h: *mut SegallocHeap, align: usize, size: usize) -> *mut c_void;
    fn segalloc_heap_free(h: *mut SegallocHeap, p: *mut c_void);
    fn malloc_usable_size(p: *mut c_void) -> usize;
}

/// The heaps made during one input, destroyed after it.
static HEAPS: Mutex<Vec<usize>> = Mutex::new(Vec::new());

thread_local! {
    static MINE: Cell<*mut SegallocHeap> = const { Cell::new(std::ptr::null_mut()) };
}

/// The calling thread's heap, made at its first use.
fn mine() -> *mut SegallocHeap {
    MINE.with(|m| {
        if m.get().is_null() {
            // SAFETY: a plain C call.
            let h = unsafe { segalloc_heap_new() };
            assert!(!h.is_null(), "segalloc_heap_new failed");
            HEAPS.lock().unwrap().push(h as usize);
            m.set(h);
        }
        m.get()
    })
}

struct HeapC;

impl Backend for HeapC {
    fn alloc(&self, size: usize, align: usize, zeroed: bool, how: u8) -> *mut u8 {
        let h = mine();
        // SAFETY: our thread's own heap; plain C calls.
        unsafe {
            if zeroed && align <= 16 {
                return if size.is_multiple_of(8) {
                    segalloc_heap_calloc(h, size / 8, 8)
                } else {
                    segalloc_heap_calloc(h, size, 1)
                }
                .cast();
            }
            let p = if align <= 16 && how % 2 == 0 {
                segalloc_heap_malloc(h, size)
            } else {
                segalloc_heap_aligned_alloc(h, align, size)
            }
            .cast::<u8>();
            if zeroed && !p.is_null() {
                p.write_bytes(0, size);
            }
            p
        }
    }

    unsafe fn realloc(&self, p: *mut u8, _size: usize, _align: usize, new_size: usize) -> *mut u8 {
        // SAFETY: the caller passes a live block of segalloc's; our heap.
        unsafe { segalloc_heap_realloc(mine(), p.cast(), new_size).cast() }
    }

    unsafe fn free(&self, p: *mut u8, _size: usize, _align: usize) {
        // SAFETY: as for `realloc`.
        unsafe { segalloc_heap_free(mine(), p.cast()) }
    }

    unsafe fn usable_size(&self, p: *mut u8) -> usize {
        // SAFETY: the caller passes a live block of segalloc's.
        unsafe { malloc_usable_size(p.cast()) }
    }

    fn realloc_align(&self, _align: usize) -> Option<usize> {
        // The heap's realloc keeps only malloc's alignment.
        Some(16)
    }

    fn min_align(&self) -> usize {
        16
    }

    fn zero_size_ok(&self) -> bool {
        true
    }

    fn exact_stats(&self) -> bool {
        false
    }
}

fuzz_target!(|data: &[u8]| {
    run(&HeapC, data);
    // Every block is freed and every thread joined: no heap is in use.
    for h in HEAPS.lock().unwrap().drain(..) {
        // SAFETY: a heap made above, no longer used by anyone.
        unsafe { segalloc_heap_destroy(h as *mut SegallocHeap) };
    }
});
