//! Fresh blocks in a shuffled order (issue 13, with the option `mesh`):
//! the blocks a page carves are put on its free list in a random order,
//! so that the blocks a program keeps sit at random offsets of their
//! pages even when it frees in step with the order it allocated (every
//! tenth block kept, say). Pages whose live blocks sit at random offsets
//! are the ones meshing can merge (`crate::mesh`); in allocation order
//! every page keeps the same offsets and none are disjoint. Frees at
//! random leave random offsets anyway, shuffled or not.
//!
//! Slow path only (a page carves about an OS page of blocks at a time):
//! a Fisher-Yates shuffle of up to [`RUN`] block indices on the stack, with
//! the heap's own generator, per run of blocks; the runs stay in address
//! order, so a carve still faults in its OS pages one after another.

use crate::remote::{set_next, Block};
use core::ptr;

/// The state of a generator that never shuffles (a first-class heap's).
/// A generator that reaches it (one state in 2^64) stops shuffling.
pub(crate) const NEVER: u64 = u64::MAX;

/// Blocks shuffled together at most: an OS page of the smallest blocks
/// (4096 / 16). A carve of more is shuffled run by run.
const RUN: usize = 256;

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

/// Links blocks `first .. first + n` of `bs` bytes from `start` into a
/// list, shuffled run by run (see the module docs), and returns its head.
///
/// # Safety
/// The blocks lie inside one page, carved by nobody else yet, and `n > 0`.
pub(crate) unsafe fn carve(
    start: *mut u8,
    first: usize,
    n: usize,
    bs: usize,
    state: &mut u64,
) -> *mut Block {
    let mut order = [0u16; RUN];
    let mut head: *mut Block = ptr::null_mut();
    // Back to front, so that the list runs through the runs in address
    // order, each run in its own shuffled order.
    let mut end = n;
    while end > 0 {
        let base = (end - 1) / RUN * RUN;
        let m = end - base;
        for (i, o) in order[..m].iter_mut().enumerate() {
            *o = i as u16;
        }
        for i in (1..m).rev() {
            let j = ((next(state) >> 32) * (i as u64 + 1)) >> 32;
            order.swap(i, j as usize);
        }
        for &o in order[..m].iter().rev() {
            // SAFETY: per the contract, block `first + base + o` is in the
            // page and ours to link.
            unsafe {
                let b = start.add((first + base + o as usize) * bs).cast::<Block>();
                set_next(b, head);
                head = b;
            }
        }
        end = base;
    }
    head
}

#[cfg(test)]
mod tests {
    use super::carve;
    use crate::remote::next_of;

    /// Every block once, each run of 256 a permutation of its own indices,
    /// and not in address order.
    #[test]
    fn a_carve_is_a_shuffled_permutation() {
        const BS: usize = 16;
        const N: usize = 600;
        let mut mem = vec![0u64; N * BS / 8];
        let start = mem.as_mut_ptr().cast::<u8>();
        let mut state = 0;
        // SAFETY: N blocks of BS bytes in our buffer.
        let mut b = unsafe { carve(start, 0, N, BS, &mut state) };
        let mut seen = Vec::new();
        while !b.is_null() {
            seen.push((b as usize - start as usize) / BS);
            // SAFETY: a block of the list just built.
            b = unsafe { next_of(b) };
        }
        assert_eq!(seen.len(), N);
        for (r, run) in seen.chunks(256).enumerate() {
            let mut s = run.to_vec();
            s.sort_unstable();
            assert_eq!(s, (r * 256..r * 256 + run.len()).collect::<Vec<_>>());
        }
        assert!(seen.windows(2).filter(|w| w[1] == w[0] + 1).count() < N / 4);
    }
}
