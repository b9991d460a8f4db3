//! What meshing at OS-page granularity (`heap::submesh`) needs of a page:
//! which of its blocks occupy memory, and the blocks it must stop using
//! once some of its OS pages share physical memory with other pages.
//!
//! When OS page `o` of page B is mapped onto the physical page behind OS
//! page `o` of page A (same size class, so the same block layout), both
//! pages stay in use, each with its own blocks: the physical page holds A's
//! live blocks and B's. So for every block overlapping a shared OS page at
//! most one of the sharing pages may use it (live, or on its lists); in the
//! others it is *excluded*: free, on no list, counted in `purged_blocks`,
//! and marked in the page's `excluded` bitmap, so a free of it is caught as
//! a double free (it was free already, as a purged block is). A block
//! straddling two OS pages counts as occupying both. Excluded blocks come
//! back only when the page is freed (the owner of a physical page may be
//! another heap's by then). [`Page::unpurge_next`] never threads a block
//! overlapping a shared OS page, and sub-page purge never purges one.

use super::{Block, Page, LIVE_WORDS};
use crate::os::OS_PAGE;
use crate::remote::{next_of, set_next};
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

/// The excluded-block bitmaps, one per record of the mesh layer (which
/// maps the table when meshing is set up, before any page shares memory).
static EXCLUDED: AtomicPtr<[u64; LIVE_WORDS]> = AtomicPtr::new(ptr::null_mut());

/// Installs the table of excluded-block bitmaps (zeroed memory, one bitmap
/// per record the mesh layer hands out, never unmapped).
pub(crate) fn set_excluded_table(t: *mut [u64; LIVE_WORDS]) {
    EXCLUDED.store(t, Ordering::Release);
}

/// Bitmap `rec - 1` of the table.
///
/// # Safety
/// `rec` was handed out by the mesh layer (so the table is set), and the
/// caller owns the page that holds it.
unsafe fn bitmap(rec: u16) -> *mut [u64; LIVE_WORDS] {
    // SAFETY: per the contract, inside the table.
    unsafe { EXCLUDED.load(Ordering::Acquire).add(rec as usize - 1) }
}

impl Page {
    /// Whether block `k` is excluded (see the module docs). Owner only.
    #[inline]
    pub(crate) fn is_excluded(&self, k: usize) -> bool {
        // SAFETY: a record the mesh layer gave this page (owner only).
        self.rec != 0 && unsafe { (*bitmap(self.rec))[k / 64] >> (k % 64) & 1 != 0 }
    }

    /// Sets in `occ` the bit of every carved block that may hold data: on
    /// neither `free` nor `local_free`, and not free in a purged OS page
    /// (a block that also overlaps a shared OS page counts: its memory
    /// there may be another page's). Blocks on `thread_free` or in flight
    /// to it count. Returns the OS pages those blocks overlap, or `None`
    /// (with `occ` unspecified) for a page not wholly carved (a fresh block
    /// could be carved onto another page's data) or with a corrupted list.
    /// Owner only.
    pub(crate) fn occupied(&self, occ: &mut [u64; LIVE_WORDS]) -> Option<u16> {
        let cap = self.capacity as usize;
        if cap != self.reserved as usize || cap == 0 || !self.live_blocks(occ) {
            return None;
        }
        let mut pages = 0u16;
        for k in 0..cap {
            if occ[k / 64] >> (k % 64) & 1 == 0 {
                continue;
            }
            let o = self.os_pages_of(k);
            if o & self.purged.get() != 0 && o & self.shared == 0 {
                occ[k / 64] &= !(1u64 << (k % 64));
            } else {
                pages |= o;
            }
        }
        Some(pages)
    }

    /// Adds to `out` the carved blocks that overlap the OS pages in `mask`.
    pub(crate) fn blocks_over(&self, mask: u16, out: &mut [u64; LIVE_WORDS]) {
        let bs = self.block_size;
        let cap = self.capacity as usize;
        let mut m = mask;
        while m != 0 {
            let o = m.trailing_zeros() as usize;
            m &= m - 1;
            let first = o * OS_PAGE / bs;
            if first >= cap {
                continue;
            }
            let last = (((o + 1) * OS_PAGE - 1) / bs).min(cap - 1);
            for k in first..=last {
                out[k / 64] |= 1 << (k % 64);
            }
        }
    }

    /// OS pages `mask` of this page now share physical memory with other
    /// pages: every block in `drop` that is free here stops being usable
    /// (taken off the lists, or marked if it was free in a purged OS page),
    /// as the module docs say. `rec` is the page's record in the mesh layer
    /// (plus one), whose bitmap is zeroed when first given. Must be called before any other page's data
    /// is copied over this page's free blocks, whose links it rewrites.
    /// Owner only.
    ///
    /// # Safety
    /// The page is in use and owned by the caller; no block in `drop` is
    /// live here; `rec` is the page's record, kept while the page is in use.
    pub(crate) unsafe fn exclude(&mut self, mask: u16, drop: &[u64; LIVE_WORDS], rec: u16) {
        debug_assert!(self.rec == 0 || self.rec == rec);
        self.rec = rec;
        // SAFETY: the bitmap of the page's record (owner only).
        let ex = unsafe { &mut *bitmap(rec) };
        let mut gone = [0u32; 2];
        for (which, head_of) in [0usize, 1].into_iter().zip([self.free, self.local_free]) {
            let mut head: *mut Block = ptr::null_mut();
            let mut tail: *mut Block = ptr::null_mut();
            let mut b = head_of;
            let mut steps = self.capacity;
            // Keeps the list's order: the blocks that stay are relinked.
            while !b.is_null() && steps > 0 {
                steps -= 1;
                // SAFETY: blocks on our lists hold links we wrote.
                let next = unsafe { next_of(b) };
                let k = self.index_of(b);
                if drop[k / 64] >> (k % 64) & 1 != 0 {
                    ex[k / 64] |= 1 << (k % 64);
                    gone[which] += 1;
                } else {
                    if tail.is_null() {
                        head = b;
                    } else {
                        // SAFETY: `tail` is a free block that stays listed.
                        unsafe { set_next(tail, b) };
                    }
                    tail = b;
                }
                b = next;
            }
            if !tail.is_null() {
                // SAFETY: as above.
                unsafe { set_next(tail, ptr::null_mut()) };
            }
            if which == 0 {
                self.free = head;
            } else {
                self.local_free = head;
            }
        }
        // Blocks free in purged OS pages, already off the lists: marked.
        if self.purged.get() != 0 {
            for k in 0..self.capacity as usize {
                if drop[k / 64] >> (k % 64) & 1 != 0 && self.os_pages_of(k) & self.purged.get() != 0
                {
                    ex[k / 64] |= 1 << (k % 64);
                }
            }
        }
        // As in `purge_free_os_pages`: blocks taken off `free` were placed
        // there and not handed out.
        self.placed = self.placed.wrapping_sub(gone[0]);
        self.purged_blocks += (gone[0] + gone[1]) as u16;
        self.shared |= mask;
        self.notify_every_free();
    }

    /// The page is being freed (no block live): forgets its shared OS
    /// pages and excluded blocks (its record's bitmap is zeroed for the
    /// next page to get it). Returns the shared OS pages. Owner only.
    pub(crate) fn unshare(&mut self) -> u16 {
        if self.rec != 0 {
            // SAFETY: the page's record, which it gives up now.
            unsafe { *bitmap(self.rec) = [0; LIVE_WORDS] };
        }
        let m = self.shared;
        self.shared = 0;
        self.rec = 0;
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os;
    use crate::page::pop;
    use crate::page::tests::full_page;
    use crate::segment::SLICE_SIZE;

    /// Occupancy is what is not on a list; excluding OS pages takes their
    /// free blocks (straddling ones too) off the lists for good, counts
    /// them, marks them as freed already, and the page never hands them
    /// out again, even once its lists and purged OS pages run dry.
    #[test]
    fn excluded_blocks_leave_the_lists_for_good() {
        // The mesh layer hands out records; this test takes the last one,
        // which no unit test's heap comes near.
        assert!(crate::mesh::setup());
        let rec = crate::mesh::sub::MAX_RECS as u16;
        for bs in [16usize, 48, 112, 640] {
            let (mut page, mem) = full_page(bs);
            let n = page.reserved as usize;
            // One block in ten live.
            for k in (0..n).filter(|k| k % 10 != 3) {
                // SAFETY: a block of the page handed out above.
                unsafe { page.free_local(mem.add(k * bs), 0) };
            }
            let mut occ = [0u64; LIVE_WORDS];
            let pages = page.occupied(&mut occ).expect("a wholly carved page");
            for k in 0..n {
                assert_eq!(
                    occ[k / 64] >> (k % 64) & 1 == 1,
                    k % 10 == 3,
                    "bs {bs}: {k}"
                );
            }
            let want = (0..n)
                .filter(|k| k % 10 == 3)
                .fold(0u16, |m, k| m | page.os_pages_of(k));
            assert_eq!(pages, want, "bs {bs}");
            // OS pages 2 and 3 shared: every free block over them goes.
            let mask = 0b1100u16;
            let mut over = [0u64; LIVE_WORDS];
            page.blocks_over(mask, &mut over);
            let free_over = (0..n)
                .filter(|&k| over[k / 64] >> (k % 64) & 1 != 0 && k % 10 != 3)
                .count();
            assert!(free_over > 0);
            let before = page.purged_blocks;
            // SAFETY: the page is ours; no block in `over` is live but the
            // occupied ones, which `exclude` leaves alone (not listed).
            unsafe { page.exclude(mask, &over, rec) };
            assert_eq!(usize::from(page.purged_blocks - before), free_over);
            for k in 0..n {
                let want = over[k / 64] >> (k % 64) & 1 != 0 && k % 10 != 3;
                assert_eq!(page.is_excluded(k), want, "bs {bs}: {k}");
                // SAFETY: a block start of the page.
                let b = unsafe { mem.add(k * bs) };
                if want {
                    assert!(page.in_purged(b), "bs {bs}: {k} not caught as freed");
                }
            }
            // Occupancy now counts the excluded blocks.
            let mut occ2 = [0u64; LIVE_WORDS];
            page.occupied(&mut occ2).unwrap();
            for k in 0..n {
                let want = k % 10 == 3 || page.is_excluded(k);
                assert_eq!(occ2[k / 64] >> (k % 64) & 1 == 1, want, "bs {bs}: {k}");
            }
            // Purge what can go (not the shared OS pages), then hand out
            // everything: never an excluded or live block, each once.
            // SAFETY: the page is ours.
            unsafe { page.purge_free_os_pages() };
            assert_eq!(
                page.purged.get() & mask,
                0,
                "bs {bs}: a shared OS page purged"
            );
            let mut got = vec![false; n];
            // SAFETY: the page is ours.
            unsafe {
                while page.refill_local() {
                    loop {
                        let b = pop(&mut page);
                        if b.is_null() {
                            break;
                        }
                        let k = (b as usize - mem as usize) / bs;
                        assert!(
                            !got[k] && k % 10 != 3,
                            "bs {bs}: {k} handed out twice or live"
                        );
                        assert!(!page.is_excluded(k), "bs {bs}: excluded {k} handed out");
                        got[k] = true;
                    }
                }
            }
            let handed = got.iter().filter(|&&g| g).count();
            let live = (0..n).filter(|k| k % 10 == 3).count();
            assert_eq!(handed + free_over, n - live, "bs {bs}");
            assert_eq!(page.purged.get(), 0);
            assert_eq!(usize::from(page.purged_blocks), free_over);
            page.unshare();
            page.purged_blocks = 0;
            page.close();
            // SAFETY: the test's mapping, no longer used.
            os::unmap(mem, SLICE_SIZE);
        }
    }
}
