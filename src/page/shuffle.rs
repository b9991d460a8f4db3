//! Fresh blocks from a random start (issue 13, with the option `mesh`): a
//! page's first carve begins at a random block among its first 16 (or
//! its first OS page's worth, if fewer), and the blocks before it are
//! held back (`Page::deferred`) until the page is wholly carved; then they
//! come last. So a page hands out its blocks in address order from a
//! random block, with one jump back, and the blocks a program keeps in
//! step with the order it allocated (every eighth, say) sit at offsets
//! that differ from page to page: two pages keep disjoint offsets unless
//! their starts agree modulo the step (7 pairs in 8 for every eighth), at
//! every OS page alike, so meshing (`crate::mesh`) can merge them whole or
//! by OS pages. In address order every page keeps the same offsets and
//! none are disjoint. Frees at random leave random offsets anyway.
//!
//! Why not more random: until 2026-11-29 each OS page's worth was rotated
//! (a jump back every OS page), before that shuffled (a random walk in
//! each OS page). A program that walks its blocks in allocation order, as
//! the Rust suite's `fragment` does, paid for both: 1.37x its time with
//! meshing on (its scheduled meshing held off) for the shuffle, 1.18-1.29x
//! for the rotation, 1.10x with one random start a page (README, Meshing).
//! `tests/mesh_schedule.rs` (every eighth block kept) merges more with it
//! too: 1,616-1,680 OS pages, against 1,088 for the rotation and 1,171
//! for the shuffle (whole pages now keep disjoint offsets).
//!
//! Slow path only: one draw from the heap's own generator a page.

use crate::remote::{set_next, Block};
use core::ptr;

/// The state of a generator that never shuffles (a first-class heap's).
/// A generator that reaches it (one state in 2^64) stops shuffling.
pub(crate) const NEVER: u64 = u64::MAX;

/// The first carve starts among this many bytes of blocks: an OS page.
const RUN_BYTES: usize = crate::os::OS_PAGE;
/// And among this many blocks at most: as many offsets modulo a step of
/// 16 or less as a whole OS page would give, while the blocks held back
/// (touched by the carve, but handed out last, so a page in use touches
/// that much more before it is wholly carved) stay under 16.
const MAX_START: usize = 16;

/// A step of the heap's generator (xorshift64*), seeding it first if it
/// is 0 (from its own address and the clock: no system call for
/// randomness on the allocation path).
fn next(state: &mut u64) -> u64 {
    if *state == 0 {
        let seed = (state as *mut u64 as u64) ^ crate::os::now_ms().rotate_left(32);
        *state = splitmix(seed) | 1;
    }
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// SplitMix64's finaliser: spreads the seed's bits.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Links blocks `0 .. n` of `bs` bytes from `start`, a page's first
/// carve, from a random one among the first OS page's worth (at most the
/// first [`MAX_START`]) on, in address order: returns that list, and
/// pushes the blocks before it on `held` (in descending address order, so
/// that reversed they run in address order), with their count.
///
/// # Safety
/// The blocks lie inside one page, carved by nobody else yet, `n > 0`, and
/// `held` is null.
pub(crate) unsafe fn carve(
    start: *mut u8,
    n: usize,
    bs: usize,
    state: &mut u64,
    held: &mut *mut Block,
) -> (*mut Block, usize) {
    let run = (RUN_BYTES / bs).min(MAX_START).clamp(1, n);
    let r = (((next(state) >> 32) * run as u64) >> 32) as usize;
    let block = |o: usize| {
        // SAFETY: per the contract, block `o` is in the page.
        unsafe { start.add(o * bs).cast::<Block>() }
    };
    // SAFETY: blocks of the page, ours to link (per the contract).
    unsafe {
        for o in 0..r {
            set_next(block(o), *held);
            *held = block(o);
        }
        for o in r..n - 1 {
            set_next(block(o), block(o + 1));
        }
        set_next(block(n - 1), ptr::null_mut());
    }
    (block(r), r)
}

#[cfg(test)]
mod tests {
    use super::carve;
    use crate::remote::next_of;

    /// Walks the list from `b`: the block indices.
    fn indices(mut b: *mut crate::remote::Block, start: *mut u8, bs: usize) -> Vec<usize> {
        let mut seen = Vec::new();
        while !b.is_null() {
            seen.push((b as usize - start as usize) / bs);
            // SAFETY: a block of the list just built.
            b = unsafe { next_of(b) };
        }
        seen
    }

    /// Every block once: from a random block below an OS page's worth to
    /// the end in address order, the ones before it held back (highest
    /// address first); the start is not always the first block.
    #[test]
    fn a_first_carve_starts_at_a_random_block_and_holds_the_ones_before() {
        for (bs, n) in [
            (16usize, 256usize),
            (256, 16),
            (1024, 4),
            (48, 85),
            (64, 10),
        ] {
            let run = (4096 / bs).min(16).clamp(1, n);
            let mut mem = vec![0u64; n * bs / 8 + 1];
            let start = mem.as_mut_ptr().cast::<u8>();
            let mut state = 0;
            let mut late = 0;
            for _ in 0..32 {
                let mut held = core::ptr::null_mut();
                // SAFETY: n blocks of bs bytes in our buffer.
                let (list, h) = unsafe { carve(start, n, bs, &mut state, &mut held) };
                let (list, held) = (indices(list, start, bs), indices(held, start, bs));
                assert!(h < run, "block size {bs}: started at {h}");
                assert_eq!(list, (h..n).collect::<Vec<_>>(), "block size {bs}");
                assert_eq!(held, (0..h).rev().collect::<Vec<_>>(), "block size {bs}");
                late += usize::from(h != 0);
            }
            assert!(
                late > 0,
                "block size {bs}: always started at the first block"
            );
        }
    }
}
