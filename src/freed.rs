//! The mark of a freed small block: while a block is free, its second word
//! holds its segment's key (from a per-process secret), so that freeing it again is noticed
//! by default, at the cost of a load and a compare on each free and a store
//! on each free and allocation (glibc's tcache does the same with its
//! `tcache_key`).
//!
//! - The key is per segment (stored in its header beside `owner`, which
//!   every free reads already), derived from a per-process secret.
//! - Every free writes the mark; every allocation (`page::pop`, the only way
//!   a small block is handed out) clears it, so a live block carries it only
//!   if the program wrote the secret itself, which it can only have read out
//!   of freed memory.
//! - A free that finds the mark on a block of a page the freeing thread owns
//!   is confirmed against the page's lists before aborting (a block found
//!   on none was not free: the program left the secret there, and the free
//!   goes on). A thread that does not own the page cannot walk its lists and
//!   aborts on the mark alone.
//! - The first word of a free block is its list link, so the mark needs
//!   blocks of at least two words, as every size class has.
//!
//! The secret is a fixed constant until the first heap slot is made, then
//! random (the kernel's `AT_RANDOM` bytes): before that no small segment
//! exists, and a segment keeps its key for its life.

use core::sync::atomic::{AtomicUsize, Ordering};
use static_assertions::const_assert;

// The mark lives in a block's second word.
const_assert!(crate::size_class::class_size(0) >= 2 * core::mem::size_of::<usize>());

/// The per-process secret the keys are made from.
static SECRET: AtomicUsize = AtomicUsize::new(0x6a09_e667_f3bc_c909);

/// Makes [`SECRET`] random. Called once, before any heap (and so any small
/// segment or block) exists.
pub(crate) fn init() {
    // SAFETY: AT_RANDOM points to 16 random bytes the kernel placed on the
    // initial stack; they stay mapped for the life of the process. The
    // second half is used: `secure`'s link key takes the first.
    let secret = unsafe {
        let p = libc::getauxval(libc::AT_RANDOM) as *const usize;
        if p.is_null() {
            return;
        }
        p.add(1).read_unaligned()
    };
    SECRET.store(secret, Ordering::Relaxed);
}

/// The key of the segment at `seg` (stored in its header, so that a free
/// reads it from the cache line it reads the owner from): never 0, which a
/// fresh block's second word often is.
pub(crate) fn key_for(seg: usize) -> usize {
    (SECRET.load(Ordering::Relaxed) ^ seg) | 1
}

/// The batched mark that goes with `key` (never `key`, never 0).
#[inline(always)]
pub(crate) fn batched(key: usize) -> usize {
    key ^ 2
}

/// Whether the block at `b` carries either mark of `key`: freed into its
/// page, or batched.
///
/// # Safety
/// As for [`is_marked`].
#[inline(always)]
pub(crate) unsafe fn is_freed(b: *mut u8, key: usize) -> bool {
    // SAFETY: per the contract, the block's second word is in it.
    unsafe { (*word(b) | 2) == (key | 2) }
}

#[inline(always)]
fn word(b: *mut u8) -> *mut usize {
    // Blocks are at least two words long and word-aligned.
    b.cast::<usize>().wrapping_add(1)
}

/// Whether the block at `b` carries the freed mark `key` (its segment's).
///
/// # Safety
/// `b` is a small block of segalloc's (live or free).
#[inline(always)]
pub(crate) unsafe fn is_marked(b: *mut u8, key: usize) -> bool {
    // SAFETY: per the contract, the block's second word is in it.
    unsafe { *word(b) == key }
}

/// Marks the block at `b` freed with `key` (its segment's).
///
/// # Safety
/// `b` is a small block the caller is freeing.
#[inline(always)]
pub(crate) unsafe fn mark(b: *mut u8, key: usize) {
    // SAFETY: per the contract, the block is the caller's to write.
    unsafe { *word(b) = key }
}

/// Clears the mark of the block at `b`, being handed out.
///
/// # Safety
/// `b` is a small block the caller is handing out.
#[inline(always)]
pub(crate) unsafe fn clear(b: *mut u8) {
    // SAFETY: per the contract, the block is the caller's to write.
    unsafe { *word(b) = 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_marked_until_cleared() {
        let mut block = [0usize; 2];
        let b = block.as_mut_ptr().cast::<u8>();
        let key = key_for(4 << 20);
        // SAFETY: a two-word block of our own.
        unsafe {
            assert!(!is_marked(b, key));
            mark(b, key);
            assert!(is_marked(b, key));
            assert!(!is_marked(b, key_for(8 << 20)), "another segment's key");
            assert_eq!(*b.cast::<usize>(), 0, "the link word is left alone");
            clear(b);
            assert!(!is_marked(b, key));
        }
    }

    #[test]
    fn the_batched_mark_is_a_mark_but_not_the_key() {
        let mut block = [0usize; 2];
        let b = block.as_mut_ptr().cast::<u8>();
        let key = key_for(4 << 20);
        assert_ne!(batched(key), key);
        assert_ne!(batched(key), 0);
        // SAFETY: a two-word block of our own.
        unsafe {
            assert!(!is_freed(b, key));
            mark(b, batched(key));
            assert!(is_freed(b, key) && !is_marked(b, key));
            assert!(is_marked(b, batched(key)));
            mark(b, key);
            assert!(is_freed(b, key));
            mark(b, key ^ 4);
            assert!(!is_freed(b, key), "another bit flipped is no mark");
        }
    }

    #[test]
    fn keys_are_never_zero() {
        for seg in [0, 4 << 20, usize::MAX & !((4 << 20) - 1)] {
            assert_eq!(key_for(seg) & 1, 1);
        }
    }
}
