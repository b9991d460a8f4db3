//! segalloc (skeleton: forwards to libc until the engine lands).
#![deny(unsafe_op_in_unsafe_fn)]
use core::alloc::{GlobalAlloc, Layout};

/// Requests larger than this many bytes are mapped directly from the OS.
pub const LARGE_THRESHOLD: usize = 128 * 1024;
/// Largest supported alignment; larger alignments return null.
pub const MAX_ALIGN: usize = 2 * 1024 * 1024;

/// The allocator. Install with `#[global_allocator] static A: segalloc::SegAlloc = segalloc::SegAlloc;`.
pub struct SegAlloc;

unsafe impl GlobalAlloc for SegAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let mut p = core::ptr::null_mut();
        if unsafe { libc::posix_memalign(&mut p, l.align().max(16), l.size()) } != 0 { return core::ptr::null_mut(); }
        p.cast()
    }
    unsafe fn dealloc(&self, p: *mut u8, _l: Layout) { unsafe { libc::free(p.cast()) } }
}

/// Where segments come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSource { /// mmap (default)
 Mmap, /// brk/sbrk with mmap fallback
 Brk }
/// Select the page source for segments obtained from now on.
pub fn set_page_source(_s: PageSource) {}
/// Return free memory to the OS now.
pub fn collect() {}
/// Usable size of a block returned by segalloc.
/// # Safety
/// `p` must be live and from segalloc.
pub unsafe fn usable_size(p: *const u8) -> usize { unsafe { libc::malloc_usable_size(p as *mut _) } }
