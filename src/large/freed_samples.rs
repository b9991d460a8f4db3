//! Where the heap profiler's substitutes of small blocks were freed (feature
//! `profiling`), so that a second free of one is reported as the double
//! free it is even once its mapping is gone.
//!
//! A sampled small block lives in a mapping of its own (see `sampled`). Its
//! free leaves the mapping cached and marked (a second free finds the mark),
//! but the mapping may be unmapped soon after (the cache's bounds, the purge
//! delay, `collect()`), and its address space taken by anything: then a
//! second free found no segment of segalloc's and said "a pointer segalloc
//! does not own" about a pointer segalloc handed out, or, where a small
//! segment took the stretch, "an interior or invalid pointer". Without
//! sampling the same program gets "double free" (as from glibc).
//!
//! So every free of a substitute sets one bit per 4 MiB stretch (the one
//! holding the substitute's header), in a static zero-filled map (4 MiB of
//! address space over the 47-bit user space, resident only where
//! substitutes were: one 4 KiB page covers 128 GiB). Only the paths that
//! are about to abort read it ([`freed_at`]): a free or `realloc` of a
//! pointer that is no live block. A bit is never cleared, and need not be:
//! where a stretch holds a live block at that address again (a new
//! substitute, or a large block), its free is a valid one and never gets
//! here; what a set bit changes is only which message an abort prints. A
//! pointer at a substitute's block offset (a power of two from 512 bytes
//! to 64 KiB past the stretch's start) in a marked stretch that no live block
//! starts is taken for a freed sample: segalloc handed that address out
//! and took it back, so freeing it again is a double free. (Were it a
//! pointer the program made up that happens to fall there, the message
//! would call a misuse a double free that is some other misuse.)
//!
//! Cost: an atomic OR per free of a sampled block, which makes system calls
//! of its own often enough; nothing on any other path.

use super::SAMPLE_BLOCK_OFFSET;
use crate::segment::{SEGMENT_SHIFT, SEGMENT_SIZE, SLICE_SIZE};
use core::sync::atomic::{AtomicU64, Ordering};

const ADDRESS_BITS: usize = 47;
const STRETCHES: usize = 1 << (ADDRESS_BITS - SEGMENT_SHIFT);

/// One bit per 4 MiB stretch: a substitute's header there was freed.
static MAP: [AtomicU64; STRETCHES / 64] = [const { AtomicU64::new(0) }; STRETCHES / 64];

/// Records that the substitute whose header is at `base` (a huge segment's
/// base, so a stretch's start) is being freed.
pub(crate) fn note(base: *const u8) {
    let i = base as usize >> SEGMENT_SHIFT;
    if let Some(w) = MAP.get(i / 64) {
        w.fetch_or(1 << (i % 64), Ordering::Relaxed);
    }
}

/// Whether `p` is where the block of a freed substitute was: in a stretch
/// whose substitute was freed ([`note`]), at a substitute's block offset
/// (`max(SAMPLE_BLOCK_OFFSET, alignment)`, the alignment a small
/// request's, at most 64 KiB). For the misuse paths only: the caller knows `p` starts no live
/// block.
pub(crate) fn freed_at(p: *const u8) -> bool {
    let a = p as usize;
    let offset = a & (SEGMENT_SIZE - 1);
    if !offset.is_power_of_two() || !(SAMPLE_BLOCK_OFFSET..=SLICE_SIZE).contains(&offset) {
        return false;
    }
    let i = a >> SEGMENT_SHIFT;
    MAP.get(i / 64)
        .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << (i % 64)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_the_block_offsets_of_a_stretch() {
        // A stretch no test maps (high in the user address space).
        let base = (0x7000_0000_0000usize & !(SEGMENT_SIZE - 1)) as *const u8;
        let at = |off: usize| base.wrapping_add(off);
        assert!(!freed_at(at(512)));
        assert!(!freed_at(at(4096)));
        note(base);
        for off in [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536] {
            assert!(freed_at(at(off)), "{off}");
        }
        for off in [0, 16, 256, 4096 + 16, 12288, 131072, SEGMENT_SIZE + 4096] {
            assert!(!freed_at(at(off)), "{off}");
        }
        // Its neighbours are not marked.
        assert!(!freed_at(base.wrapping_sub(SEGMENT_SIZE - 4096)));
        assert!(!freed_at(0xffff_8000_0000_1000usize as *const u8));
        note(0xffff_8000_0000_0000usize as *const u8); // above user space: ignored
    }
}
