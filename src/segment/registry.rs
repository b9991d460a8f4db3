//! Which 4 MiB stretches of address space start a segalloc segment, of
//! which kind, and which heap owns a small one: two bytes each over the
//! 47-bit user address space (64 MiB of zero-filled `.bss`, resident only
//! where segments live: one 4 KiB page of it covers 8 GiB). Every `free`
//! and `realloc` reads its pointer's entry before any header, so a pointer
//! into memory segalloc never mapped is reported rather than faulting, and
//! a small block is told from a large one without reading the header.
//!
//! A small segment's entry is its owning heap's *tag* (see [`Tag`]) when the
//! heap has one, so `free` learns in one compare of the entry with the
//! calling thread's tag both that the pointer is a small block's and that
//! the thread owns it: a shift, a bounds compare, a load and a compare with
//! the heap's tag, no header read (the segment's `owner` says the same,
//! and is what every other path reads).
//!
//! Only the stretch holding a header is marked; a pointer deeper into a
//! large block finds its stretch unmarked (see [`large_base_below`]).

use super::{Segment, SEGMENT_SHIFT, SEGMENT_SIZE};
use core::sync::atomic::{AtomicU16, Ordering};

const ADDRESS_BITS: usize = 47;
const ENTRIES: usize = 1 << (ADDRESS_BITS - SEGMENT_SHIFT);
/// Not a segment of segalloc's.
pub(crate) const NONE: u8 = 0;
/// A small segment (mapped, kept free, or from the break).
pub(crate) const SMALL: u8 = 1;
/// A huge segment, live or waiting in the large-block cache.
pub(crate) const LARGE: u8 = 2;

/// A heap's tag: what the registry holds for a small segment the heap owns,
/// so that `free` compares it with the calling thread's. Tags are handed to
/// heap slots as they are made and stay with the slot, as its address (the
/// segment's `owner`) does; [`NO_TAG`] never matches an entry.
pub(crate) type Tag = u16;
/// The tag of a heap that has none (the empty heap, and slots past the
/// last tag): no entry holds it, so its frees take the path that reads the
/// segment's header.
pub(crate) const NO_TAG: Tag = Tag::MAX;
/// The first tag handed out; lower entries are kinds.
pub(crate) const FIRST_TAG: Tag = 3;

// Entries: the kinds' codes, or a small segment's owner's tag.
const E_NONE: u16 = 0;
const E_LARGE: u16 = 1;
/// A small segment whose owner has no tag, or that has no owner.
const E_SMALL: u16 = 2;
static_assertions::const_assert!(E_SMALL < FIRST_TAG && FIRST_TAG < NO_TAG);

static MAP: [AtomicU16; ENTRIES] = [const { AtomicU16::new(E_NONE) }; ENTRIES];

const fn kind_of(e: u16) -> u8 {
    match e {
        E_NONE => NONE,
        E_LARGE => LARGE,
        _ => SMALL,
    }
}

/// The kind of segment whose header is at `seg` (a multiple of
/// [`SEGMENT_SIZE`], as [`super::segment_of`] gives), [`NONE`] if none.
#[inline(always)]
pub(crate) fn kind(seg: *const Segment) -> u8 {
    match MAP.get(opaque(seg as usize >> SEGMENT_SHIFT)) {
        // Relaxed: the segment was recorded before any of its blocks
        // was handed out, and a block reaches its freer through the
        // program's own synchronisation.
        Some(k) => kind_of(k.load(Ordering::Relaxed)),
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

/// `i`, through an empty `asm!` that LLVM must keep where it is (unlike
/// [`opaque`], it is not `pure`, so two of them are neither merged nor
/// moved above a branch). Emits nothing.
#[inline(always)]
fn barrier(mut i: usize) -> usize {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    // SAFETY: an empty template: it reads and writes nothing but `i`'s
    // register, which it leaves as it was.
    unsafe {
        core::arch::asm!("/* {0} */", inout(reg) i, options(nomem, nostack, preserves_flags));
    }
    i
}

/// What [`small_segment_by_owner`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Small {
    /// A small segment whose owner's tag is the one asked about.
    Owned(*mut Segment),
    /// A small segment of another heap, of a heap without a tag, or of none.
    Other(*mut Segment),
    /// Not a small segment of segalloc's.
    No,
}

/// The segment of `p` (as [`super::segment_of`] gives) if the registry
/// marks it a small one's, and whether its owner's tag is `tag`. The entry
/// is compared with `tag` first, so that a free by the owner takes one
/// compare, and a free by another thread one more.
///
/// The index is computed once, from `p - 1`, and the header's address made
/// from it after the lookup, in the same register: two instructions fewer
/// on every free than masking a copy of `p - 1` beside the shift.
///
/// The entry can be trusted to say "yours" without a fence: only the
/// owning thread sets its own tag (when it creates, takes or adopts a
/// segment, see [`set_owner`]), and a segment leaves a heap only by that
/// heap's thread (abandonment) or with the whole heap (parking, whose
/// handover orders it before the next thread's frees). A stale entry can
/// only make a free take the header's path.
#[inline(always)]
pub(crate) fn small_segment_by_owner(p: *const u8, tag: Tag) -> Small {
    let i = opaque((p as usize).wrapping_sub(1) >> SEGMENT_SHIFT);
    let Some(e) = MAP.get(i) else {
        return Small::No;
    };
    // Relaxed: see above, and `kind`.
    match e.load(Ordering::Relaxed) {
        // The header's address made from the index in its own register,
        // after the compare. Were both arms to make it alike, LLVM would
        // make it once, before the compare, from a copy of the index (one
        // instruction more on the owner's path): the other arm's index
        // goes through a barrier LLVM cannot merge or hoist.
        e if e == tag => Small::Owned((i << SEGMENT_SHIFT) as *mut Segment),
        e if e >= E_SMALL => Small::Other((barrier(i) << SEGMENT_SHIFT) as *mut Segment),
        _ => Small::No,
    }
}

/// The segment of `p` if the registry marks it a small one's.
#[cfg(test)]
pub(crate) fn small_segment_of(p: *const u8) -> Option<*mut Segment> {
    match small_segment_by_owner(p, NO_TAG) {
        Small::Owned(seg) | Small::Other(seg) => Some(seg),
        Small::No => None,
    }
}

/// The segment of `p` if it is a small one whose owner's tag is `tag`.
#[cfg(test)]
pub(crate) fn owned_segment_of(p: *const u8, tag: Tag) -> Option<*mut Segment> {
    match small_segment_by_owner(p, tag) {
        Small::Owned(seg) => Some(seg),
        _ => None,
    }
}

/// Records the owner of the small segment at `seg` by its tag
/// ([`NO_TAG`] for none, or an owner without a tag).
pub(crate) fn set_owner(seg: *const Segment, tag: Tag) {
    if let Some(e) = MAP.get(seg as usize >> SEGMENT_SHIFT) {
        e.store(if tag == NO_TAG { E_SMALL } else { tag }, Ordering::Relaxed);
    }
}

/// Whether `seg` is the header of a segment of segalloc's (any kind).
#[inline]
pub(crate) fn contains(seg: *const Segment) -> bool {
    kind(seg) != NONE
}

/// Records the segment at `base` as of kind `k` (a small one with no
/// owner: see [`set_owner`]).
pub(crate) fn set(base: *const u8, k: u8) {
    let e = match k {
        NONE => E_NONE,
        LARGE => E_LARGE,
        _ => E_SMALL,
    };
    if let Some(m) = MAP.get(base as usize >> SEGMENT_SHIFT) {
        m.store(e, Ordering::Relaxed);
    }
}

/// Forgets every segment whose header lies in `[addr, addr + len)`,
/// being unmapped (a cached large mapping may have absorbed the
/// mappings after it, each with its own header).
pub(crate) fn forget(addr: *const u8, len: usize) {
    let first = (addr as usize).div_ceil(SEGMENT_SIZE);
    let end = (addr as usize).saturating_add(len).div_ceil(SEGMENT_SIZE);
    for e in MAP.get(first..end.min(ENTRIES)).unwrap_or(&[]) {
        e.store(E_NONE, Ordering::Relaxed);
    }
}

/// Calls `f` with the stretch (an address shifted right by
/// `SEGMENT_SHIFT`) and kind of every segment recorded, in address
/// order (for diagnostics). Pages of the map that `mincore` reports
/// never touched hold no entry and are skipped, so the walk reads a few
/// KiB rather than the 64 MiB (and adds no resident memory); a segment
/// recorded during the walk may be missed.
pub(crate) fn for_each(mut f: impl FnMut(usize, u8)) {
    const BATCH: usize = 512;
    let start = MAP.as_ptr() as usize;
    let first = start & !(crate::os::OS_PAGE - 1);
    let end = start + core::mem::size_of_val(&MAP);
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
            let entry = core::mem::size_of::<AtomicU16>();
            let lo = ((at + k * crate::os::OS_PAGE).max(start) - start) / entry;
            let hi = ((at + (k + 1) * crate::os::OS_PAGE).min(end) - start) / entry;
            for (i, e) in MAP[lo..hi].iter().enumerate() {
                let kind = kind_of(e.load(Ordering::Relaxed));
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
        match kind_of(MAP[j].load(Ordering::Relaxed)) {
            NONE => continue,
            LARGE => return Some((j << SEGMENT_SHIFT) as *mut Segment),
            _ => return None,
        }
    }
    None
}
