//! Which 4 MiB stretches of address space start a segalloc segment, and of
//! which kind: one byte each over the 47-bit user address space (32 MiB of
//! zero-filled `.bss`, resident only where segments live: one 4 KiB page
//! of it covers 16 GiB). Every `free` and `realloc` reads its pointer's
//! byte before any header, so a pointer into memory segalloc never mapped
//! is reported rather than faulting, and a small block is told from a large
//! one without reading the header: a shift, a bounds compare and a byte
//! compare (a load of the static, no pointer to follow).
//!
//! Only the stretch holding a header is marked; a pointer deeper into a
//! large block finds its stretch unmarked (see [`large_base_below`]).

use super::{Segment, SEGMENT_SHIFT, SEGMENT_SIZE};
use core::sync::atomic::{AtomicU8, Ordering};

const ADDRESS_BITS: usize = 47;
const ENTRIES: usize = 1 << (ADDRESS_BITS - SEGMENT_SHIFT);
/// Not a segment of segalloc's.
pub(crate) const NONE: u8 = 0;
/// A small segment (mapped, kept free, or from the break).
pub(crate) const SMALL: u8 = 1;
/// A huge segment, live or waiting in the large-block cache.
pub(crate) const LARGE: u8 = 2;

static MAP: [AtomicU8; ENTRIES] = [const { AtomicU8::new(NONE) }; ENTRIES];

/// The kind of segment whose header is at `seg` (a multiple of
/// [`SEGMENT_SIZE`], as [`super::segment_of`] gives), [`NONE`] if none.
#[inline(always)]
pub(crate) fn kind(seg: *const Segment) -> u8 {
    match MAP.get(opaque(seg as usize >> SEGMENT_SHIFT)) {
        // Relaxed: the segment was recorded before any of its blocks
        // was handed out, and a block reaches its freer through the
        // program's own synchronisation.
        Some(k) => k.load(Ordering::Relaxed),
        None => NONE,
    }
}

/// `i`, hidden from the optimiser: LLVM would rewrite `i < ENTRIES`,
/// `i` a shift, as a test of the unshifted value (`x >> 47 == 0`), which
/// takes a copy and a second shift, one instruction more on every free
/// than a compare of the index it computes anyway. Emits nothing.
#[inline(always)]
fn opaque(mut i: usize) -> usize {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    // SAFETY: an empty template: it reads and writes nothing but `i`'s
    // register, which it leaves as it was.
    unsafe {
        core::arch::asm!("/* {0} */", inout(reg) i, options(pure, nomem, nostack, preserves_flags));
    }
    i
}

/// The segment of `p` (as [`super::segment_of`] gives) if the registry
/// marks it a small one's. The index is computed once, from `p - 1`,
/// and the header's address made from it after the lookup, in the same
/// register: two instructions fewer on every free than masking a copy
/// of `p - 1` beside the shift.
#[inline(always)]
pub(crate) fn small_segment_of(p: *const u8) -> Option<*mut Segment> {
    let i = opaque((p as usize).wrapping_sub(1) >> SEGMENT_SHIFT);
    // Relaxed: as in `kind`.
    if MAP.get(i)?.load(Ordering::Relaxed) != SMALL {
        return None;
    }
    Some((i << SEGMENT_SHIFT) as *mut Segment)
}

/// Whether `seg` is the header of a segment of segalloc's (any kind).
#[inline]
pub(crate) fn contains(seg: *const Segment) -> bool {
    kind(seg) != NONE
}

/// Records the segment at `base` as of kind `k`.
pub(crate) fn set(base: *const u8, k: u8) {
    if let Some(e) = MAP.get(base as usize >> SEGMENT_SHIFT) {
        e.store(k, Ordering::Relaxed);
    }
}

/// Forgets every segment whose header lies in `[addr, addr + len)`,
/// being unmapped (a cached large mapping may have absorbed the
/// mappings after it, each with its own header).
pub(crate) fn forget(addr: *const u8, len: usize) {
    let first = (addr as usize).div_ceil(SEGMENT_SIZE);
    let end = (addr as usize).saturating_add(len).div_ceil(SEGMENT_SIZE);
    for e in MAP.get(first..end.min(ENTRIES)).unwrap_or(&[]) {
        e.store(NONE, Ordering::Relaxed);
    }
}

/// Calls `f` with the stretch (an address shifted right by
/// `SEGMENT_SHIFT`) and kind of every segment recorded, in address
/// order (for diagnostics). Pages of the map that `mincore` reports
/// never touched hold no entry and are skipped, so the walk reads a few
/// KiB rather than the 32 MiB (and adds no resident memory); a segment
/// recorded during the walk may be missed.
pub(crate) fn for_each(mut f: impl FnMut(usize, u8)) {
    const BATCH: usize = 512;
    let start = MAP.as_ptr() as usize;
    let first = start & !(crate::os::OS_PAGE - 1);
    let end = start + ENTRIES;
    let mut resident = [0u8; BATCH];
    let mut at = first;
    while at < end {
        let len = (end - at).min(BATCH * crate::os::OS_PAGE);
        let pages = len.div_ceil(crate::os::OS_PAGE);
        if !crate::os::mincore(at as *const u8, len, &mut resident[..pages]) {
            resident[..pages].fill(1); // unknown: read them all
        }
        for (k, &r) in resident[..pages].iter().enumerate() {
            if r & 1 == 0 {
                continue;
            }
            let lo = (at + k * crate::os::OS_PAGE).max(start) - start;
            let hi = (at + (k + 1) * crate::os::OS_PAGE).min(end) - start;
            for (i, e) in MAP[lo..hi].iter().enumerate() {
                let kind = e.load(Ordering::Relaxed);
                if kind != NONE {
                    f(lo + i, kind);
                }
            }
        }
        at += len;
    }
}

/// The header of the nearest large segment below `p`, looking back at
/// most `max` stretches past unmarked ones: for telling an interior
/// pointer deep in a large block from a foreign one (cold).
pub(crate) fn large_base_below(p: *const u8, max: usize) -> Option<*mut Segment> {
    let i = (p as usize) >> SEGMENT_SHIFT;
    for j in (i.saturating_sub(max)..i.min(ENTRIES)).rev() {
        match MAP[j].load(Ordering::Relaxed) {
            NONE => continue,
            LARGE => return Some((j << SEGMENT_SHIFT) as *mut Segment),
            _ => return None,
        }
    }
    None
}
