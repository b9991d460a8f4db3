//! Fuzzes segalloc's C ABI (`malloc`, `calloc`, `realloc`, `free`,
//! `posix_memalign`, `aligned_alloc`, `malloc_usable_size`), built with the
//! `override` feature: these symbols are then the whole binary's allocator, so
//! the harness allocates through segalloc too and only the statistics'
//! identity (not the exact requested bytes) is checked at the end.
//! See `src/lib.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use segalloc_fuzz::{run, Backend};
use std::ffi::c_void;

extern "C" {
    fn malloc(size: usize) -> *mut c_void;
    fn calloc(n: usize, size: usize) -> *mut c_void;
    fn realloc(p: *mut c_void, size: usize) -> *mut c_void;
    fn free(p: *mut c_void);
    fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32;
    fn aligned_alloc(align: usize, size: usize) -> *mut c_void;
    fn malloc_usable_size(p: *mut c_void) -> usize;
}

/// C's `errno`.
fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

struct C;

impl Backend for C {
    fn alloc(&self, size: usize, align: usize, zeroed: bool, how: u8) -> *mut u8 {
        // SAFETY: plain C allocation calls; `out` is a valid slot.
        unsafe {
            if zeroed {
                if align > 16 {
                    // calloc promises only 16: its block is checked for zero
                    // either way, and re-made aligned (zeroed by hand) when
                    // it happens not to be aligned enough.
                    let p = calloc(1, size).cast::<u8>();
                    return if (p as usize).is_multiple_of(align) {
                        p
                    } else {
                        fix_align(p, size, align)
                    };
                }
                // Split the size to exercise the multiplication.
                return if size.is_multiple_of(8) {
                    calloc(size / 8, 8)
                } else {
                    calloc(size, 1)
                }
                .cast();
            }
            match how % 3 {
                0 if align <= 16 => malloc(size).cast(),
                1 => {
                    let mut out = std::ptr::null_mut();
                    let a = align.max(std::mem::size_of::<usize>());
                    let r = posix_memalign(&mut out, a, size);
                    let must_fail = a >= 1 << 62 || size > isize::MAX as usize - a;
                    if must_fail {
                        assert_ne!(r, 0, "posix_memalign({a}, {size}) succeeded");
                        return std::ptr::null_mut();
                    }
                    assert_eq!(r, 0, "posix_memalign({a}, {size}) failed");
                    out.cast()
                }
                _ => {
                    let p = aligned_alloc(align, size).cast::<u8>();
                    if p.is_null() {
                        assert_eq!(
                            errno(),
                            libc_enomem(),
                            "aligned_alloc({align}, {size}) errno"
                        );
                    }
                    p
                }
            }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, _size: usize, _align: usize, new_size: usize) -> *mut u8 {
        // SAFETY: the caller passes a live block of ours.
        unsafe { realloc(p.cast(), new_size).cast() }
    }

    unsafe fn free(&self, p: *mut u8, _size: usize, _align: usize) {
        // SAFETY: the caller passes a live block of ours.
        unsafe { free(p.cast()) }
    }

    unsafe fn usable_size(&self, p: *mut u8) -> usize {
        // SAFETY: the caller passes a live block of ours.
        unsafe { malloc_usable_size(p.cast()) }
    }

    fn realloc_align(&self, _align: usize) -> Option<usize> {
        // C's realloc keeps only malloc's alignment.
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

fn libc_enomem() -> i32 {
    12
}

/// A calloc'd block not aligned as asked: give it back and use
/// `posix_memalign` + a checked zero fill instead (calloc promises only 16).
unsafe fn fix_align(p: *mut u8, size: usize, align: usize) -> *mut u8 {
    // SAFETY: `p` came from calloc; the new block is `size` bytes.
    unsafe {
        free(p.cast());
        let mut out = std::ptr::null_mut();
        if posix_memalign(&mut out, align, size) != 0 {
            return std::ptr::null_mut();
        }
        out.cast::<u8>().write_bytes(0, size);
        out.cast()
    }
}

fuzz_target!(|data: &[u8]| run(&C, data));
