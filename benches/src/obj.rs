//! A heap block that carries a check tag, used by every workload.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::ptr::NonNull;

/// Smallest block the workloads allocate: room for the 8-byte tag.
pub const MIN_SIZE: usize = 16;

/// One allocation of `size` bytes made through the global allocator.
///
/// The first 8 bytes hold a tag and the last byte a copy of the tag's low
/// byte; [`Obj::free`] checks both, so a workload that is optimised away or an
/// allocator that hands out overlapping blocks is caught, and the sum of tags
/// gives an allocator-independent checksum.
pub struct Obj {
    ptr: NonNull<u8>,
    size: usize,
}

// SAFETY: Obj uniquely owns its block, like Box<[u8]>.
unsafe impl Send for Obj {}

impl Obj {
    /// Allocates `size` bytes (at least [`MIN_SIZE`]) and writes `tag` into it.
    #[inline]
    pub fn new(size: usize, tag: u64) -> Obj {
        let size = size.max(MIN_SIZE);
        let layout = Self::layout(size);
        // SAFETY: layout has non-zero size.
        let p = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(p) else {
            handle_alloc_error(layout)
        };
        // SAFETY: the block is at least MIN_SIZE bytes and 8-aligned.
        unsafe {
            ptr.as_ptr().cast::<u64>().write(tag);
            ptr.as_ptr().add(size - 1).write(tag as u8);
        }
        Obj { ptr, size }
    }

    #[inline]
    fn layout(size: usize) -> Layout {
        // Never fails: size is bounded by what the workloads request.
        Layout::from_size_align(size, 8).expect("valid layout")
    }

    /// Size of the block in bytes.
    #[inline]
    pub fn size(&self) -> usize {
        self.size
    }

    /// Reads the tag back, panicking if either copy was overwritten.
    #[inline]
    pub fn tag(&self) -> u64 {
        // SAFETY: the block is live and was initialised in `new`.
        let (t, last) = unsafe {
            (
                self.ptr.as_ptr().cast::<u64>().read(),
                self.ptr.as_ptr().add(self.size - 1).read(),
            )
        };
        assert_eq!(t as u8, last, "heap corruption: block tag mismatch");
        t
    }

    /// Raw pointer to the block, for workloads that write into it.
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Gives up ownership without freeing the block, returning its pointer;
    /// [`Obj::from_raw`] takes it back (for workloads that keep blocks
    /// behind thin pointers such as `AtomicPtr`).
    #[inline]
    pub fn into_raw(self) -> *mut u8 {
        let p = self.ptr.as_ptr();
        std::mem::forget(self);
        p
    }

    /// Takes back a block released by [`Obj::into_raw`].
    ///
    /// # Safety
    ///
    /// `ptr` must come from [`Obj::into_raw`] on an `Obj` of exactly `size`
    /// bytes ([`Obj::size`]), and must not have been taken back before.
    #[inline]
    pub unsafe fn from_raw(ptr: *mut u8, size: usize) -> Obj {
        Obj {
            // SAFETY: into_raw only hands out non-null pointers.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            size,
        }
    }

    /// Verifies the tag, frees the block and returns the tag.
    #[inline]
    pub fn free(self) -> u64 {
        self.tag()
    }
}

impl Drop for Obj {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout and not freed before.
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.size)) }
    }
}
