//! Segments: large aligned regions cut into slices, and slices into pages.
//!
//! A segment is [`SEGMENT_SIZE`] bytes aligned to its own size, so the header of
//! the segment holding any pointer is `ptr & !(SEGMENT_SIZE - 1)`, and the page
//! is found from the slice index `(ptr - segment) >> SLICE_SHIFT` through
//! `slice_page`. No search, and no header on small blocks.
//!
//! Slice 0 holds the header (the page descriptors for all slices); slices
//! 1..[`SLICES`] are handed out as pages of 1 to 16 slices. A segment belongs to
//! one thread's heap (`owner`), which alone carves, frees and reuses its slices;
//! other threads only push frees onto a page's `thread_free` and set the page's
//! bit in `thread_freed` so the owner knows where to look.
//!
//! Large requests get a *huge* segment of their own: the same header prefix at
//! the aligned base, the block at a page offset after it, and the mapping sized
//! to the request. The header's `kind` tells the two apart on free; a freed
//! huge segment waiting in the large-block cache is marked [`KIND_CACHED`], so
//! that a second free of its block is caught instead of corrupting the cache.
//!
//! When its thread exits, a segment with live blocks is *abandoned*: its owner
//! becomes 0 and it goes on a global list, from which another thread reclaims
//! it when it needs memory.

use crate::atomic::{AtomicUsize, Ordering};
use crate::os::{self, Source};
use crate::page::Page;
use crate::remote::HintBits;
use core::mem::{align_of, offset_of, size_of};
use core::ptr;
use static_assertions::const_assert;

/// log2 of the segment size.
pub(crate) const SEGMENT_SHIFT: usize = 22;
/// Every segment is this large and aligned to it: 4 MiB.
pub(crate) const SEGMENT_SIZE: usize = 1 << SEGMENT_SHIFT;
pub(crate) const SEGMENT_MASK: usize = SEGMENT_SIZE - 1;
/// log2 of the slice size.
pub(crate) const SLICE_SHIFT: usize = 16;
/// Pages are made of 64 KiB slices.
pub(crate) const SLICE_SIZE: usize = 1 << SLICE_SHIFT;
/// Slices per segment (slice 0 is the header).
pub(crate) const SLICES: usize = SEGMENT_SIZE / SLICE_SIZE;
/// Bitmap of the slices that can hold pages: all but the header's. With the
/// `secure` feature the last slice is a guard (no access) instead, so a
/// buffer overflow off the end of a segment faults before it reaches the
/// next one.
#[cfg(not(feature = "secure"))]
const ALL_PAGE_SLICES: u64 = !1;
#[cfg(feature = "secure")]
const ALL_PAGE_SLICES: u64 = !1 & !(1 << (SLICES - 1));
/// The longest page, in slices: one block of the largest class (1 MiB).
pub(crate) const MAX_SPAN: usize = 16;
/// Where the block of a huge segment starts when its alignment does not ask
/// for more: right after the page that holds the header prefix.
pub(crate) const HUGE_BLOCK_OFFSET: usize = os::OS_PAGE;

const_assert!(SLICES == 64); // the slice bitmaps are u64
const_assert!(SLICE_SIZE * MAX_SPAN < SEGMENT_SIZE);
const_assert!(crate::size_class::MAX_SMALL <= MAX_SPAN * SLICE_SIZE);
const_assert!(SLICE_SIZE % os::OS_PAGE == 0);
const_assert!(crate::counters::SLICE_BYTES == SLICE_SIZE);

/// Which kind of segment a header describes.
pub(crate) const KIND_SMALL: usize = 0x5e6a_110c;
pub(crate) const KIND_HUGE: usize = 0x5e6a_1e6e;
/// A huge segment whose block was freed and that waits in the large-block
/// cache (`large_cache`) for reuse: not a live block.
pub(crate) const KIND_CACHED: usize = 0x5e6a_cac4;

/// A field of no size that starts a new cache line in a `repr(C)` struct.
#[repr(C, align(64))]
struct LineStart;

/// Segment header, at the segment's aligned base.
#[repr(C)]
pub(crate) struct Segment {
    /// [`KIND_SMALL`], [`KIND_HUGE`] or [`KIND_CACHED`]; anything else is
    /// not ours.
    pub(crate) kind: usize,
    // --- huge segments use the fields up to `split`, and `owner`, `next`
    // and `prev` (first-class heaps' large blocks, see `region`) ---
    /// Bytes mapped for a huge segment (from the base).
    pub(crate) map_size: usize,
    /// Offset of a huge segment's block from the base.
    pub(crate) block_offset: usize,
    /// Bytes asked for the huge block (for statistics).
    pub(crate) requested: usize,
    /// Bytes at the start of a huge block that may hold a previous block's
    /// data (0 when the block is a fresh mapping, which reads zero): what a
    /// zeroed allocation must clear.
    pub(crate) stale: usize,
    /// Non-zero when the huge block was cut from the front of a larger cached
    /// mapping whose rest (right after the block) went back to the cache
    /// under this token: freed, the block joins it again if it is still there.
    /// Cleared whenever the mapping is resized or moved.
    pub(crate) split: usize,
    /// The heap profiler's sample slot of the huge block (`sample::record`),
    /// 0 when it is not a sampled block (feature `profiling`).
    #[cfg(feature = "profiling")]
    pub(crate) prof_slot: usize,
    /// For the heap profiler's substitute of a small block, the usable size
    /// it reports (`alloc::usable_size`): the block an unsampled allocation
    /// would have had; 0 for any other huge block (feature `profiling`).
    #[cfg(feature = "profiling")]
    pub(crate) prof_usable: usize,
    // --- small segments ---
    /// Address of the owning heap, or 0 while abandoned. For a huge segment:
    /// the first-class heap whose large block it is (set by `region`), or 0
    /// for a block of the global allocator; `large` leaves the former to
    /// their heap (never caches, frees or moves them itself).
    pub(crate) owner: AtomicUsize,
    /// What a free block of this segment holds in its second word (see
    /// `freed`); beside `owner`, which every free reads anyway.
    pub(crate) freed_key: usize,
    /// Owned by a first-class heap, which frees all its segments at once:
    /// other threads never batch their frees into it (see `remote_batch`).
    /// Set when a heap obtains the segment, so stable while a block lives.
    pub(crate) private: bool,
    /// Bit i: page i may have frees on its `thread_free` (a hint, see heap).
    pub(crate) thread_freed: HintBits,
    /// For each slice, where the descriptor of the page covering it lies:
    /// its byte offset from the segment's base (that of `pages` plus the
    /// first slice times the descriptor size), so that `free` finds it with
    /// one load and one add: no multiply, and no third `lea` operand, which
    /// LLVM splits into two instructions. `pages[0]`'s (set at creation)
    /// for slices no page covers (never in use).
    slice_page: [u16; SLICES],
    /// For each slice, the size class of the page covering it: what a
    /// thread freeing a block of another heap reads, rather than the page
    /// descriptor, whose line the owner writes at every allocation.
    pub(crate) slice_class: [u8; SLICES],
    // --- from here on, what only the owner writes as pages come and go, on
    // lines of their own: the fields above are read by every free, from
    // any thread ---
    _owner_fields: LineStart,
    /// Links in the owner's segment lists, or in the abandoned list.
    pub(crate) next: *mut Segment,
    pub(crate) prev: *mut Segment,
    /// Bit i: slice i is free.
    pub(crate) free_slices: u64,
    /// Bit i: slice i is free but still resident (freed and not yet purged).
    pub(crate) dirty_slices: u64,
    /// Pages in use.
    pub(crate) used_pages: u32,
    pub(crate) source: Source,
    /// Which of the owner's lists the segment is on: no free slice left.
    pub(crate) in_full_list: bool,
    /// On the abandoned (or brk free) list; read and written under its lock.
    pub(crate) on_shared_list: bool,
    /// For each slice, how many bytes from its start may be resident: touched
    /// since the slice was last purged (or came fresh from the OS). Purges
    /// give back just that, and a page on slices that were never touched
    /// knows its memory reads zero.
    pub(crate) touched: [u32; SLICES],
    /// For each slice, when it was last freed (`os::now_ms`, the low 32
    /// bits, compared wrapping): the owner's timed purge gives back only
    /// dirty slices that have been free for the purge delay (see
    /// `heap::purge`).
    pub(crate) freed_at: [u32; SLICES],
    /// Page descriptors, indexed by a page's first slice.
    pub(crate) pages: [Page; SLICES],
    /// For each slice, its part in meshing (`mesh`): 0 when the slice's
    /// page is not meshed. Kept last, and only read and written by `mesh`
    /// and `heap::mesh` (and [`Segment::meshed`]).
    pub(crate) mesh: [core::sync::atomic::AtomicU32; SLICES],
}

const_assert!(size_of::<Segment>() <= SLICE_SIZE);
// Offsets of descriptors fit `slice_page`'s u16.
const_assert!(offset_of!(Segment, pages) + SLICES * size_of::<Page>() <= u16::MAX as usize);
const_assert!(offset_of!(Segment, split) + size_of::<usize>() <= HUGE_BLOCK_OFFSET);
// `region` links huge segments through `next` and `prev` too.
const_assert!(offset_of!(Segment, prev) + size_of::<usize>() <= HUGE_BLOCK_OFFSET);
#[cfg(feature = "profiling")]
const_assert!(offset_of!(Segment, prof_usable) + size_of::<usize>() <= HUGE_BLOCK_OFFSET);
const_assert!(align_of::<Segment>() <= os::OS_PAGE);
// Two cache lines (see `Page`), so a descriptor never shares one with
// another page's.
const_assert!(size_of::<Page>() == 128);
const_assert!(offset_of!(Segment, pages) % 64 == 0);

/// The segment of `p`, a block or an address inside a segment past its
/// first byte. `p - 1` is masked, not `p`: a block aligned to a segment or
/// more starts exactly on a segment boundary and has its header a segment
/// below (see `large`); every other block, and every page, lies past its
/// segment's base, where the header is, so the two agree for them. Costs
/// nothing: `lea -1(p)` takes the place of a `mov`.
#[inline(always)]
pub(crate) fn segment_of(p: *const u8) -> *mut Segment {
    ((p as usize).wrapping_sub(1) & !SEGMENT_MASK) as *mut Segment
}

/// The slice index of `p` inside its segment.
#[inline(always)]
pub(crate) fn slice_index(p: *const u8) -> usize {
    ((p as usize) & SEGMENT_MASK) >> SLICE_SHIFT
}

/// The byte offset from a segment's base of `pages[i]` (see `slice_page`).
const fn page_offset(i: usize) -> u16 {
    (offset_of!(Segment, pages) + i * size_of::<Page>()) as u16
}

impl Segment {
    /// The page covering `p`, which lies in this small segment.
    ///
    /// # Safety
    /// `self` is a small segment and `p` points inside it.
    #[inline(always)]
    pub(crate) unsafe fn page_of(&self, p: *const u8) -> *mut Page {
        // SAFETY: `slice_index` is below SLICES (a mask, so no bounds
        // check), and every entry is the offset of a descriptor in `pages`
        // (see `set_page`).
        unsafe {
            let off = *self.slice_page.get_unchecked(slice_index(p)) as usize;
            ptr::from_ref(self)
                .cast::<u8>()
                .add(off)
                .cast::<Page>()
                .cast_mut()
        }
    }

    /// Makes the page with first slice `i` the one covering slices `i..i +
    /// span` (for [`page_of`](Self::page_of)).
    pub(crate) fn set_page(&mut self, i: usize, span: usize) {
        let off = page_offset(i);
        for e in &mut self.slice_page[i..i + span] {
            *e = off;
        }
    }

    /// Base address of slice `i`.
    #[inline]
    pub(crate) fn slice_addr(&self, i: usize) -> *mut u8 {
        (self as *const Segment as usize + (i << SLICE_SHIFT)) as *mut u8
    }

    /// Index of the page descriptor `page` (its first slice).
    #[inline]
    pub(crate) fn page_index(&self, page: *const Page) -> usize {
        (page as usize - ptr::addr_of!(self.pages) as usize) / size_of::<Page>()
    }

    /// First slice of a free run of `span` slices, preferring resident ones.
    pub(crate) fn find_run(&self, span: usize) -> Option<usize> {
        let mut runs = self.free_slices;
        for k in 1..span {
            runs &= self.free_slices >> k;
        }
        if runs == 0 {
            return None;
        }
        // A run whose first slice is dirty is likely dirty throughout (freed
        // together); reusing it saves page faults and keeps RSS flat.
        let warm = runs & self.dirty_slices;
        let pick = if warm != 0 { warm } else { runs };
        Some(pick.trailing_zeros() as usize)
    }

    /// Creates a small segment owned by `owner`, whose tag is `tag` (see
    /// [`registry::Tag`]). Null when the OS says no.
    pub(crate) fn create(owner: usize, tag: registry::Tag) -> *mut Segment {
        // What a new segment commits by itself is its header; its pages
        // are counted as the heap takes them (`Heap::init_page`).
        let header = os::round_up(size_of::<Segment>(), os::OS_PAGE).unwrap_or(SLICE_SIZE);
        let (base, source) = os::alloc_segment_memory(SEGMENT_SIZE, header);
        if base.is_null() {
            return ptr::null_mut();
        }
        crate::counters::SHARED
            .segments_obtained
            .fetch_add(1, Ordering::Relaxed);
        registry::set(base, registry::SMALL);
        #[cfg(feature = "secure")]
        {
            // SAFETY: a fresh region of ours; the guard slice is never used.
            os::protect_none(unsafe { base.add(SEGMENT_SIZE - SLICE_SIZE) }, SLICE_SIZE);
        }
        let seg = base.cast::<Segment>();
        // SAFETY: `base` is a fresh, zeroed, aligned region of SEGMENT_SIZE bytes
        // (mmap/brk give zeroed memory, recycled brk segments are purged), and a
        // zeroed header is a valid empty one; we only set the non-zero fields.
        unsafe {
            (*seg).kind = KIND_SMALL;
            (*seg).owner = AtomicUsize::new(owner);
            (*seg).freed_key = crate::freed::key_for(seg as usize);
            // Slices no page covers yet find `pages[0]` (the header's, never
            // in use), not offset 0, the header itself.
            (*seg).slice_page = [page_offset(0); SLICES];
            (*seg).free_slices = ALL_PAGE_SLICES;
            (*seg).dirty_slices = 0;
            (*seg).source = source;
        }
        registry::set_owner(seg, tag);
        seg
    }

    /// Makes the heap `owner` (its id; 0 for none), whose tag is `tag`, the
    /// segment's owner: in the header, with ordering `order`, and in the
    /// registry, which `free` reads (see [`registry::small_segment_by_owner`]).
    pub(crate) fn set_owner(&self, owner: usize, tag: registry::Tag, order: Ordering) {
        self.owner.store(owner, order);
        registry::set_owner(self, tag);
    }

    /// Gives a wholly free small segment back to the OS.
    ///
    /// # Safety
    /// No page of `seg` is in use and nothing refers to it any more.
    pub(crate) unsafe fn release(seg: *mut Segment) {
        // SAFETY: per the contract, the header is ours to read and then drop.
        let source = unsafe { (*seg).source };
        crate::counters::SHARED
            .segments_returned
            .fetch_add(1, Ordering::Relaxed);
        // The break cannot shrink under other users, so brk segments are always
        // kept for reuse; a few mmap ones are too, so that threads coming and
        // going do not map and unmap a segment each, nor fault its pages in
        // again: kept segments keep their free slices resident, up to
        // `segment_cache_resident` bytes in all; past that they are purged first.
        // Past the soft limit, none are kept.
        if source == Source::Brk
            || (FREE_SEGMENTS.len() < crate::options::SEGMENT_CACHE.get() && !os::past_soft_limit())
        {
            // SAFETY: per the contract, the header is ours.
            let dirty = unsafe { (*seg).dirty_bytes(u64::MAX) };
            if CACHED_DIRTY.load(Ordering::Relaxed) + dirty
                > crate::options::SEGMENT_CACHE_RESIDENT.get()
            {
                // SAFETY: as above; purged slices read zero, so clean.
                // With huge pages on, some may stay dirty.
                unsafe {
                    purge_dirty(&mut *seg);
                    CACHED_DIRTY.fetch_add((*seg).dirty_bytes(u64::MAX), Ordering::Relaxed);
                }
            } else {
                CACHED_DIRTY.fetch_add(dirty, Ordering::Relaxed);
            }
            // Nobody's: a free through a stale pointer reads the header.
            registry::set_owner(seg, registry::NO_TAG);
            FREE_SEGMENTS.push(seg);
        } else {
            registry::set(seg.cast(), registry::NONE);
            os::unmap(seg.cast(), SEGMENT_SIZE);
        }
    }

    /// Resident bytes of the slices in `mask` that are dirty.
    pub(crate) fn dirty_bytes(&self, mask: u64) -> usize {
        let mut m = mask & self.dirty_slices;
        let mut n = 0;
        while m != 0 {
            n += self.touched[m.trailing_zeros() as usize] as usize;
            m &= m - 1;
        }
        n
    }

    /// Hands slices `i..i + span` to a new page. Returns the resident bytes
    /// they bring along (0 means the page's memory reads zero).
    pub(crate) fn take_run(&mut self, i: usize, span: usize) -> usize {
        let mask = run_mask(i, span);
        debug_assert_eq!(self.free_slices & mask, mask);
        let mut resident = 0;
        for k in i..i + span {
            resident += self.touched[k] as usize;
        }
        let dirty = self.dirty_bytes(mask);
        debug_assert!(dirty <= resident);
        self.free_slices &= !mask;
        self.dirty_slices &= !mask;
        resident
    }

    /// Takes back the slices `i..i + span` of a page whose first `touched`
    /// bytes were carved. Returns the resident bytes the run now holds.
    pub(crate) fn free_run(&mut self, i: usize, span: usize, touched: usize) -> usize {
        let mut resident = 0;
        let now = os::now_ms() as u32;
        for k in 0..span {
            let t = touched.saturating_sub(k * SLICE_SIZE).min(SLICE_SIZE) as u32;
            let e = &mut self.touched[i + k];
            *e = (*e).max(t);
            resident += *e as usize;
            self.freed_at[i + k] = now;
        }
        let mask = run_mask(i, span);
        self.free_slices |= mask;
        self.dirty_slices |= mask;
        resident
    }

    /// Whether slice `i` belongs to a meshed page (one whose physical
    /// memory is shared with other pages' virtual ranges, see `mesh`).
    /// Such memory must never be purged with `MADV_DONTNEED`: on a shared
    /// mapping it frees nothing, and the data stays.
    #[inline]
    pub(crate) fn meshed(&self, i: usize) -> bool {
        self.mesh[i].load(core::sync::atomic::Ordering::Relaxed) != 0
    }

    /// Whether the page with first slice `i` is in use.
    #[inline]
    pub(crate) fn page_in_use(&self, i: usize) -> bool {
        self.pages[i].has(crate::page::IN_USE)
    }
}

/// A list of segments under a spin lock (cold paths only: once per segment).
/// Doubly linked, so a segment can be taken out of the middle.
pub(crate) struct SegmentList {
    pub(crate) head: spin::Mutex<SegPtr>,
    len: AtomicUsize,
}

pub(crate) struct SegPtr(*mut Segment);
// SAFETY: the pointer is only followed under the lock, and segments on the
// list belong to no thread.
unsafe impl Send for SegPtr {}

impl SegmentList {
    pub(crate) const fn new() -> Self {
        SegmentList {
            head: spin::Mutex::new(SegPtr(ptr::null_mut())),
            len: AtomicUsize::new(0),
        }
    }

    pub(crate) fn push(&self, seg: *mut Segment) {
        let mut head = self.head.lock();
        // SAFETY: the caller handed `seg` over; its links are ours to set, and
        // the old head is on the list, valid under the lock.
        unsafe {
            (*seg).prev = ptr::null_mut();
            (*seg).next = head.0;
            (*seg).on_shared_list = true;
            if !head.0.is_null() {
                (*head.0).prev = seg;
            }
        }
        head.0 = seg;
        self.len.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn pop(&self) -> *mut Segment {
        if self.len.load(Ordering::Relaxed) == 0 {
            return ptr::null_mut();
        }
        let mut head = self.head.lock();
        let seg = head.0;
        if !seg.is_null() {
            // SAFETY: segments on the list are valid until taken off it.
            unsafe { Self::unlink(&mut head, seg) };
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        seg
    }

    /// Takes `seg` off the list if it is on it; returns whether it was.
    ///
    /// # Safety
    /// `seg` is a valid segment header (it may or may not be on the list).
    pub(crate) unsafe fn remove(&self, seg: *mut Segment) -> bool {
        let mut head = self.head.lock();
        // SAFETY: `on_shared_list` is only read and written under the lock.
        unsafe {
            if !(*seg).on_shared_list {
                return false;
            }
            Self::unlink(&mut head, seg);
        }
        self.len.fetch_sub(1, Ordering::Relaxed);
        true
    }

    /// # Safety
    /// `seg` is on the list, and the lock is held (`head`).
    unsafe fn unlink(head: &mut SegPtr, seg: *mut Segment) {
        // SAFETY: `seg` and its neighbours are on the list.
        unsafe {
            let (prev, next) = ((*seg).prev, (*seg).next);
            if prev.is_null() {
                head.0 = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            (*seg).next = ptr::null_mut();
            (*seg).prev = ptr::null_mut();
            (*seg).on_shared_list = false;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

/// Segments whose thread exited while they still held live blocks.
pub(crate) static ABANDONED: SegmentList = SegmentList::new();
/// Wholly free segments kept for reuse: every brk segment, and as many mmap
/// ones as the option `segment_cache` says; at most `segment_cache_resident`
/// bytes of them stay resident (until a heap's timed purge trims them, see
/// `heap`).
pub(crate) static FREE_SEGMENTS: SegmentList = SegmentList::new();
/// Resident bytes of kept segments.
pub(crate) static CACHED_DIRTY: AtomicUsize = AtomicUsize::new(0);

/// Bitmap of slices `i..i + span`.
#[inline]
pub(crate) const fn run_mask(i: usize, span: usize) -> u64 {
    (u64::MAX >> (64 - span)) << i
}

mod purge;
pub(crate) use purge::{purge_dirty, purge_dirty_in};

/// Takes every kept segment off the list, calls `f` on it, and puts back
/// those for which `f` returns true.
fn sweep_free_segments(mut f: impl FnMut(*mut Segment) -> bool) {
    let mut kept = ptr::null_mut::<Segment>();
    loop {
        let seg = FREE_SEGMENTS.pop();
        if seg.is_null() {
            break;
        }
        // SAFETY: a kept segment belongs to nobody; taken off the list, it is
        // ours until pushed back or unmapped.
        unsafe {
            CACHED_DIRTY.fetch_sub((*seg).dirty_bytes(u64::MAX), Ordering::Relaxed);
            if f(seg) {
                CACHED_DIRTY.fetch_add((*seg).dirty_bytes(u64::MAX), Ordering::Relaxed);
                (*seg).next = kept;
                kept = seg;
            }
        }
    }
    while !kept.is_null() {
        // SAFETY: segments we took off the list, linked through `next`.
        let next = unsafe { (*kept).next };
        FREE_SEGMENTS.push(kept);
        kept = next;
    }
}

/// Purges the resident memory of the kept segments, keeping them mapped.
pub(crate) fn trim_free_segments() {
    if CACHED_DIRTY.load(Ordering::Relaxed) == 0 {
        return;
    }
    sweep_free_segments(|seg| {
        // SAFETY: the sweep hands us a segment nobody else holds.
        purge_dirty(unsafe { &mut *seg });
        true
    });
}

/// Unmaps every kept mmap segment, and purges the kept brk ones (the break
/// cannot shrink).
pub(crate) fn drain_free_segments() {
    sweep_free_segments(|seg| {
        // SAFETY: the sweep hands us a segment nobody else holds.
        unsafe {
            if (*seg).source == Source::Brk {
                purge_dirty(&mut *seg);
                true
            } else {
                registry::set(seg.cast(), registry::NONE);
                os::unmap(seg.cast(), SEGMENT_SIZE);
                false
            }
        }
    });
}

/// A segment for `owner`, whose tag is `tag`: a kept free one (its resident
/// free slices still marked dirty), or a new one from the OS.
pub(crate) fn obtain(owner: usize, tag: registry::Tag) -> *mut Segment {
    let seg = FREE_SEGMENTS.pop();
    if !seg.is_null() {
        crate::counters::SHARED
            .segments_obtained
            .fetch_add(1, Ordering::Relaxed);
        // SAFETY: a kept segment belongs to nobody and has no page in use (every
        // descriptor's flags are 0); reset what a fresh one would have.
        unsafe {
            CACHED_DIRTY.fetch_sub((*seg).dirty_bytes(u64::MAX), Ordering::Relaxed);
            (*seg).kind = KIND_SMALL;
            (*seg).set_owner(owner, tag, Ordering::Relaxed);
            (*seg).thread_freed.clear();
            (*seg).free_slices = ALL_PAGE_SLICES;
            (*seg).used_pages = 0;
            (*seg).in_full_list = false;
            (*seg).next = ptr::null_mut();
            (*seg).prev = ptr::null_mut();
        }
        return seg;
    }
    Segment::create(owner, tag)
}

/// The segment registry: which stretches of address space hold a header of
/// segalloc's, and of which kind.
pub(crate) mod registry;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_segment_of_finds_registered_small_segments_only() {
        use registry::small_segment_of;
        let seg = Segment::create(1, registry::NO_TAG);
        assert!(!seg.is_null());
        let base = seg.cast::<u8>();
        // SAFETY: addresses inside (or one past) the fresh segment.
        unsafe {
            assert_eq!(small_segment_of(base.add(1)), Some(seg));
            assert_eq!(small_segment_of(base.add(SEGMENT_SIZE)), Some(seg));
        }
        // Its base belongs to the stretch below (another test's segment, or
        // none).
        let below = base.wrapping_sub(SEGMENT_SIZE).cast::<Segment>();
        let expect = (registry::kind(below) == registry::SMALL).then_some(below);
        assert_eq!(small_segment_of(base), expect);
        for p in [0, 1 << 47, (1 << 47) + 1, usize::MAX, 1 << 63] {
            assert_eq!(small_segment_of(p as *const u8), None, "{p:#x}");
        }
        // SAFETY: a fresh segment of ours, unused.
        unsafe { Segment::release(seg) };
        // Released (unmapped or kept for reuse, registered either way as
        // what it then is): never a small one if unmapped.
        let k = registry::kind(seg);
        assert_eq!(
            small_segment_of(base.wrapping_add(1)).is_some(),
            k == registry::SMALL
        );
    }

    #[test]
    fn the_registry_names_a_small_segment_s_owner_by_its_tag() {
        use registry::{owned_segment_of, small_segment_of, NO_TAG};
        let seg = Segment::create(1, 7);
        assert!(!seg.is_null());
        let p = seg.cast::<u8>().wrapping_add(SLICE_SIZE);
        assert_eq!(owned_segment_of(p, 7), Some(seg));
        assert_eq!(owned_segment_of(p, 8), None);
        assert_eq!(owned_segment_of(p, NO_TAG), None);
        // SAFETY: our fresh segment.
        unsafe { (*seg).set_owner(2, 9, Ordering::Relaxed) };
        assert_eq!(owned_segment_of(p, 7), None);
        assert_eq!(owned_segment_of(p, 9), Some(seg));
        // SAFETY: as above.
        unsafe { (*seg).set_owner(0, NO_TAG, Ordering::Relaxed) };
        assert_eq!(owned_segment_of(p, 9), None);
        assert_eq!(owned_segment_of(p, NO_TAG), None);
        assert_eq!(small_segment_of(p), Some(seg));
        assert_eq!(registry::kind(seg), registry::SMALL);
        // Released: kept for reuse (nobody's) or unmapped (nothing).
        // SAFETY: our segment, unused.
        unsafe { Segment::release(seg) };
        assert_eq!(owned_segment_of(p, 9), None);
    }

    #[test]
    fn geometry() {
        let seg = Segment::create(1, registry::NO_TAG);
        assert!(!seg.is_null());
        assert_eq!(seg as usize % SEGMENT_SIZE, 0);
        // SAFETY: a fresh segment, released at the end.
        unsafe {
            let s = &mut *seg;
            assert_eq!(s.kind, KIND_SMALL);
            let p = s.slice_addr(5).add(123);
            // No page covers slice 5 yet: it finds the header's, never in use.
            assert_eq!(s.page_of(p), ptr::addr_of_mut!(s.pages[0]));
            assert_eq!(segment_of(p), seg);
            assert_eq!(slice_index(p), 5);
            s.set_page(3, 3);
            assert_eq!(s.page_of(p), ptr::addr_of_mut!(s.pages[3]));
            assert_eq!(s.page_index(s.page_of(p)), 3);
            Segment::release(seg);
        }
    }

    #[test]
    fn runs_prefer_resident_slices_and_respect_span() {
        let seg = Segment::create(1, registry::NO_TAG);
        // SAFETY: a fresh segment, released at the end.
        unsafe {
            let s = &mut *seg;
            assert_eq!(s.find_run(1), Some(1));
            s.free_slices = 0b1011_0110;
            assert_eq!(s.find_run(1), Some(1));
            assert_eq!(s.find_run(2), Some(1));
            s.free_slices = 0b1101_0110;
            assert_eq!(s.find_run(2), Some(1));
            s.dirty_slices = 0b1100_0000;
            assert_eq!(s.find_run(2), Some(6));
            assert_eq!(s.find_run(3), None);
            s.free_slices = ALL_PAGE_SLICES;
            s.dirty_slices = 0;
            assert_eq!(s.find_run(MAX_SPAN), Some(1));
            Segment::release(seg);
        }
    }
}
