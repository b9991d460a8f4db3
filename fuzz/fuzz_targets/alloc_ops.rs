//! Fuzzes segalloc through `GlobalAlloc`, called directly (the harness and its
//! shadow model allocate with the system allocator, so they do not disturb
//! segalloc's statistics, which must come back exactly). See `src/lib.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use segalloc::SegAlloc;
use segalloc_fuzz::{run, Backend};
use std::alloc::{GlobalAlloc, Layout};

struct Global;

impl Backend for Global {
    fn alloc(&self, size: usize, align: usize, zeroed: bool, _how: u8) -> *mut u8 {
        let layout = Layout::from_size_align(size, align).expect("decoder makes valid layouts");
        // SAFETY: the layout's size is non-zero (`zero_size_ok` is false).
        unsafe {
            if zeroed {
                SegAlloc.alloc_zeroed(layout)
            } else {
                SegAlloc.alloc(layout)
            }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, size: usize, align: usize, new_size: usize) -> *mut u8 {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: the caller passes a live block of `layout`; `new_size` is
        // non-zero and small enough not to overflow when rounded to `align`.
        unsafe { SegAlloc.realloc(p, layout, new_size) }
    }

    unsafe fn free(&self, p: *mut u8, size: usize, align: usize) {
        // SAFETY: the caller passes a live block of this layout.
        unsafe { SegAlloc.dealloc(p, Layout::from_size_align(size, align).unwrap()) }
    }

    unsafe fn usable_size(&self, p: *mut u8) -> usize {
        // SAFETY: the caller passes a live block of segalloc.
        unsafe { segalloc::usable_size(p) }
    }

    fn realloc_align(&self, align: usize) -> Option<usize> {
        Some(align)
    }

    fn min_align(&self) -> usize {
        1
    }

    fn zero_size_ok(&self) -> bool {
        false
    }

    fn exact_stats(&self) -> bool {
        true
    }

    fn mesh(&self) {
        segalloc::mesh();
    }
}

fuzz_target!(|data: &[u8]| run(&Global, data));
