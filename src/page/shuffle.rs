//! Fresh blocks in a rotated order (issue 13, with the option `mesh`):
//! a page carving blocks links each OS page's worth of them in address
//! order from a random block on, wrapping once, so that the blocks a
//! program keeps sit at offsets that differ from page to page even when it
//! frees in step with the order it allocated (every eighth block kept,
//! say): two OS pages then keep disjoint offsets unless their rotations
//! agree modulo the step (7 pairs in 8 for every eighth). Such pages are
//! the ones meshing can merge (`crate::mesh`); in address order every page
//! keeps the same offsets and none are disjoint. Frees at random leave
//! random offsets anyway, rotated or not.
//!
//! A rotation, not a full shuffle: a program that walks its blocks in
//! allocation order still walks memory forward, but for one jump back an
//! OS page. The Rust suite's `fragment`, which does, took 1.37x its time
//! with a full shuffle (a random walk inside each OS page) and 1.18x with
//! the rotation, simulated cache misses unchanged (README, Meshing); the
//! shuffle merged about as much (1,171 OS pages against 1,088 in
//! `tests/mesh_schedule.rs`).
//!
//! Slow path only (a page carves about an OS page of blocks at a time):
//! one draw from the heap's own generator a run; the runs stay in address
//! order, so a carve still faults in its OS pages one after another.

use crate::remote::{set_next, Block};
use core::ptr;

/// The state of a generator that never shuffles (a first-class heap's).
/// A generator that reaches it (one state in 2^64) stops shuffling.
pub(crate) const NEVER: u64 = u64::MAX;

/// Blocks rotated together: about an OS page of them.
const RUN_BYTES: usize = crate::os::OS_PAGE;

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
/// list, run by run, each run rotated by a random amount (see the module
/// docs), and returns its head.
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
    let mut head: *mut Block = ptr::null_mut();
    // Back to front, so that the list runs through the runs in address
    // order: run `base .. end` as `r .. end`, then `base .. r`.
    let run = (RUN_BYTES / bs).max(1);
    let mut end = n;
    while end > 0 {
        let base = (end - 1) / run * run;
        let r = base + (((next(state) >> 32) * (end - base) as u64) >> 32) as usize;
        for o in (r..end).chain(base..r).rev() {
            // SAFETY: per the contract, block `first + o` is in the page
            // and ours to link.
            unsafe {
                let b = start.add((first + o) * bs).cast::<Block>();
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

    /// Every block once; each run (an OS page of blocks) is its own
    /// indices in address order but for one wrap, at an offset that is
    /// not always 0; the runs in address order.
    #[test]
    fn a_carve_is_a_rotation_of_each_run() {
        for (bs, n) in [(16usize, 600usize), (256, 40), (1024, 9), (48, 200)] {
            let run = (4096 / bs).max(1);
            let mut mem = vec![0u64; n * bs / 8 + 1];
            let start = mem.as_mut_ptr().cast::<u8>();
            let mut state = 0;
            let mut wraps = 0;
            for _ in 0..16 {
                // SAFETY: n blocks of bs bytes in our buffer.
                let seen = indices(unsafe { carve(start, 0, n, bs, &mut state) }, start, bs);
                assert_eq!(seen.len(), n);
                for (r, chunk) in seen.chunks(run).enumerate() {
                    let (lo, m) = (r * run, chunk.len());
                    let rot = chunk[0] - lo;
                    let want: Vec<usize> = (0..m).map(|k| lo + (rot + k) % m).collect();
                    assert_eq!(chunk, &want[..], "block size {bs}, run {r}");
                    wraps += usize::from(rot != 0);
                }
            }
            assert!(wraps > 0, "block size {bs}: no run was rotated");
        }
    }

    /// A carve that starts past the page's first block links only its own.
    #[test]
    fn a_carve_from_the_middle_links_its_own_blocks() {
        const BS: usize = 64;
        let mut mem = vec![0u64; 300 * BS / 8];
        let start = mem.as_mut_ptr().cast::<u8>();
        let mut state = 7;
        // SAFETY: blocks 100..300 of BS bytes in our buffer.
        let mut seen = indices(unsafe { carve(start, 100, 200, BS, &mut state) }, start, BS);
        seen.sort_unstable();
        assert_eq!(seen, (100..300).collect::<Vec<_>>());
    }
}
