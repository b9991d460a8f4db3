//! Sub-page purge: giving back the parts of a page in use that hold no
//! live block, and taking them back when the page runs out of blocks.
//!
//! A page is cut into 16 purge units of `span` OS pages each (see
//! [`Page::unit`]): a one-slice page (64 KiB) into its 16 OS pages of 4
//! KiB, a page of `s` slices into units of `4s` KiB. One-slice pages hold
//! blocks up to 32 KiB, so a unit there holds parts of blocks or many
//! blocks; pages of larger blocks hold one to seven of them, so each block
//! covers at least two units, and a free one gives back all of its units
//! that no live neighbour reaches into. After random frees most units may
//! hold free blocks only, yet the page stays in use for the few live ones.
//! [`Page::purge_free_os_pages`] walks the page's local lists (`free` and
//! `local_free`) once each into a bitmap of free blocks, finds the units
//! every block overlapping which is free, rebuilds the lists in address
//! order without the blocks that overlap those units, records the units in
//! the page's `purged` bitmap and the blocks in `purged_blocks`, and purges
//! them with `madvise`. A purged unit reads back as zeros, so no free list
//! may run through it: a free block straddling from a purged unit into a
//! kept one leaves the lists too (its part in the kept unit is unused
//! until the run comes back). So the invariant, checked in debug builds:
//!
//! - every block that overlaps a purged unit is free and on no list;
//!   every block on `free` or `local_free` overlaps no purged unit.
//!
//! Only blocks the owner holds locally are taken: the caller collects the
//! page's `thread_free` first, and blocks batched by other threads (see
//! `remote_batch`) or still on `thread_free` count as live, their units
//! kept. When `free`, `local_free` and the uncarved tail are all exhausted,
//! [`Page::unpurge_next`] (from `refill_local`) threads the blocks of the
//! lowest run of purged units onto `free` again: the writes of their links
//! fault the memory back in, as carving fresh blocks does.
//!
//! Meshing at OS-page granularity (`share`, `crate::mesh::sub`) takes
//! one-slice pages only, where a unit is an OS page: its `shared` bits and
//! these share the index.
//!
//! The fast paths never read `purged`; the statistics count purged bytes
//! through the heap (see `heap::purge`).

use super::{Block, Page};
use crate::os::{self, OS_PAGE};
use crate::remote::{next_of, set_next};
use crate::segment::SLICE_SIZE;
use core::ptr;

/// Purge units in a page (OS pages in a one-slice page), so the bitmap is
/// a `u16`.
const OS_PAGES: usize = SLICE_SIZE / OS_PAGE;
/// The most blocks a page holds (16-byte blocks in a one-slice page; a
/// page of more slices holds at most seven, see `heap::span_for`).
const MAX_BLOCKS: usize = SLICE_SIZE / 16;
const _: () = assert!(OS_PAGES == 16);

/// Bits `lo..hi` (`lo <= hi <= 16`).
const fn bits(lo: usize, hi: usize) -> u16 {
    (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16
}

impl Page {
    /// The bytes of a purge unit of this page: a sixteenth of it, `span`
    /// OS pages.
    #[inline]
    pub(crate) fn unit(&self) -> usize {
        usize::from(self.span.max(1)) * OS_PAGE
    }

    /// The bytes of the units in `m`, a bitmap as `purged`.
    #[inline]
    pub(crate) fn units_bytes(&self, m: u16) -> usize {
        m.count_ones() as usize * self.unit()
    }

    /// The purge units block `k` touches, as a bitmap.
    #[inline]
    pub(super) fn os_pages_of(&self, k: usize) -> u16 {
        let a = k * self.block_size;
        let b = a + self.block_size;
        let unit = self.unit();
        bits(a / unit, b.div_ceil(unit))
    }

    /// Whether `b`, a carved block of this page, is free on no list: in
    /// purged units, or excluded over a shared one (see `share`).
    /// Owner only.
    #[inline]
    pub(crate) fn in_purged(&self, b: *const u8) -> bool {
        if !self.off_list() {
            return false;
        }
        let k = self.index_of(b.cast_mut().cast());
        self.os_pages_of(k) & self.purged.get() != 0 || self.is_excluded(k)
    }

    /// Whether `b`, a carved block of this page, lies in purged OS pages.
    /// Any thread: a live block's answer is always no (see
    /// [`Purged`](super::Purged)); a freed block's may be stale for a
    /// thread other than the owner.
    pub(crate) fn in_purged_os_pages(&self, b: *const u8) -> bool {
        let m = self.purged.get();
        m != 0 && self.os_pages_of(self.index_of(b.cast_mut().cast())) & m != 0
    }

    /// The index of block `b` of this page.
    #[inline]
    pub(super) fn index_of(&self, b: *mut Block) -> usize {
        (b as usize - self.start as usize) / self.block_size
    }

    /// Gives back to the OS every purge unit of this page that holds no
    /// live block (see the module docs), and returns the bytes purged
    /// (0 if nothing could go). Owner only, with the page's `thread_free`
    /// collected (what is still on it or in other threads' batches counts
    /// as live).
    ///
    /// # Safety
    /// The page is in use and owned by the caller, whose lists hold valid
    /// blocks of it.
    pub(crate) unsafe fn purge_free_os_pages(&mut self) -> usize {
        // SAFETY: per the contract; the page's memory is its own.
        unsafe { self.purge_free_os_pages_by(os::purge) }
    }

    /// [`purge_free_os_pages`](Self::purge_free_os_pages), giving each run
    /// of OS pages back with `give(start, bytes)`: for a page whose memory
    /// is shared with others (a merged page's primary, see `crate::mesh`),
    /// a way that frees it for all of them.
    ///
    /// # Safety
    /// As for `purge_free_os_pages`; `give` makes the run read zero (or
    /// leaves it as it is) and touches nothing else.
    pub(crate) unsafe fn purge_free_os_pages_by(
        &mut self,
        mut give: impl FnMut(*mut u8, usize),
    ) -> usize {
        let bs = self.block_size;
        let unit = self.unit();
        let cap = self.capacity as usize;
        if cap == 0 || cap > MAX_BLOCKS {
            return 0;
        }
        // Which blocks are on `free` and on `local_free`: one walk of each
        // (a cache miss per block, the cost of it all), bounded.
        let mut listed = [[0u64; MAX_BLOCKS / 64]; 2];
        let mut n = 0;
        for (which, head) in [self.free, self.local_free].into_iter().enumerate() {
            let mut b = head;
            while !b.is_null() {
                if n == cap || !self.holds(b.cast()) {
                    return 0; // not a list of this page: leave it alone
                }
                let k = self.index_of(b);
                listed[which][k / 64] |= 1 << (k % 64);
                n += 1;
                // SAFETY: blocks on our lists hold links we wrote.
                b = unsafe { next_of(b) };
            }
        }
        let is_listed = |k: usize| (listed[0][k / 64] | listed[1][k / 64]) & (1 << (k % 64)) != 0;
        // The OS pages that may go: every block overlapping them free (on
        // a list, or on none as it overlaps a purged OS page), and holding
        // part of a carved block (an OS page wholly past them was never
        // touched; one partly past them may be carved next).
        let carved = cap * bs;
        let mut new = 0u16;
        for o in 0..OS_PAGES {
            let (lo, hi) = (o * unit, (o + 1) * unit);
            if lo >= carved {
                break;
            }
            // Not an OS page shared with other pages: its memory is theirs
            // too (and `madvise` would free nothing of it).
            if (self.purged.get() | self.shared) & (1 << o) != 0
                || (hi > carved && cap < self.reserved as usize)
            {
                continue;
            }
            let (first, last) = (lo / bs, ((hi - 1) / bs).min(cap - 1));
            // An excluded block (`share`) is free here, and its bytes in an
            // OS page that is not shared are no other page's.
            let all_free = (first..=last).all(|k| {
                is_listed(k) || self.os_pages_of(k) & self.purged.get() != 0 || self.is_excluded(k)
            });
            if all_free {
                new |= 1 << o;
            }
        }
        if new == 0 {
            return 0;
        }
        // Rebuild both lists in address order without the blocks that
        // overlap the new OS pages: all are free, and none may keep a link
        // in memory that reads zero. Links are written only in blocks that
        // stay, whose OS pages stay resident.
        let mut gone = [0u32; 2];
        for (which, bitmap) in listed.iter().enumerate() {
            let mut head: *mut Block = ptr::null_mut();
            let mut tail: *mut Block = ptr::null_mut();
            for (w, &word) in bitmap.iter().enumerate() {
                let mut m = word;
                while m != 0 {
                    let k = w * 64 + m.trailing_zeros() as usize;
                    m &= m - 1;
                    if self.os_pages_of(k) & new != 0 {
                        gone[which] += 1;
                        continue;
                    }
                    // SAFETY: block `k` is a free block of this page.
                    let b = unsafe { self.start.add(k * bs) }.cast::<Block>();
                    if tail.is_null() {
                        head = b;
                    } else {
                        // SAFETY: `tail` is a free block that stays.
                        unsafe { set_next(tail, b) };
                    }
                    tail = b;
                }
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
        // The blocks left on `free` were put there and not handed out: keep
        // `placed - len(free)` (the allocations since the counts were taken).
        self.placed = self.placed.wrapping_sub(gone[0]);
        self.purged_blocks += (gone[0] + gone[1]) as u16;
        self.purged.set(self.purged.get() | new);
        self.notify_every_free();
        let mut bytes = 0;
        let mut m = new;
        while m != 0 {
            let lo = m.trailing_zeros() as usize;
            let hi = lo + (m >> lo).trailing_ones() as usize;
            m &= !bits(lo, hi);
            // SAFETY: OS pages of this page every block of which is free and
            // now on no list (and maybe the tail no block uses).
            give(unsafe { self.start.add(lo * unit) }, (hi - lo) * unit);
            bytes += (hi - lo) * unit;
        }
        self.debug_check();
        bytes
    }

    /// Threads the blocks overlapping the lowest run of purged OS pages
    /// onto `free` (which is empty) and takes the run off `purged`. Returns
    /// whether `free` is non-empty now. Owner only.
    pub(crate) fn unpurge_next(&mut self) -> bool {
        debug_assert!(self.free.is_null() && self.local_free.is_null());
        let bs = self.block_size;
        let unit = self.unit();
        let cap = self.capacity as usize;
        while self.purged.get() != 0 {
            let lo = self.purged.get().trailing_zeros() as usize;
            let mut hi = lo + 1;
            // The blocks overlapping `lo..hi`, grown while the last of them
            // reaches into further purged OS pages (they go together).
            let first = lo * unit / bs;
            let mut last;
            loop {
                last = ((hi * unit - 1) / bs).min(cap.saturating_sub(1));
                let end = ((last + 1) * bs).div_ceil(unit).min(OS_PAGES);
                let more = self.purged.get() & bits(hi, end.max(hi));
                if more == 0 {
                    break;
                }
                hi = 16 - more.leading_zeros() as usize;
            }
            self.purged.set(self.purged.get() & !bits(lo, hi));
            if !self.off_list() {
                self.end_notify_every_free();
            }
            if first >= cap {
                continue;
            }
            // Blocks that overlap a shared OS page stay off the lists (see
            // `share`): their memory may be another page's block.
            let mut head: *mut Block = ptr::null_mut();
            let mut n = 0u32;
            for k in (first..=last).rev() {
                if self.os_pages_of(k) & self.shared != 0 {
                    continue;
                }
                // SAFETY: block `k` is a carved block of this page on no
                // list; memory of it that reads zero is faulted in by this
                // write.
                unsafe {
                    let b = self.start.add(k * bs).cast::<Block>();
                    set_next(b, head);
                    head = b;
                }
                n += 1;
            }
            if n == 0 {
                continue;
            }
            self.free = head;
            debug_assert!(n <= u32::from(self.purged_blocks));
            self.purged_blocks -= n as u16;
            self.placed = self.placed.wrapping_add(n);
            self.end_free_zero();
            return true;
        }
        false
    }

    /// Checks the invariant of the module docs (debug builds only).
    fn debug_check(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        for head in [self.free, self.local_free] {
            let mut b = head;
            let mut steps = self.capacity;
            while !b.is_null() && steps > 0 {
                steps -= 1;
                let k = self.index_of(b);
                assert_eq!(
                    self.os_pages_of(k) & self.purged.get(),
                    0,
                    "a listed block in a purged OS page"
                );
                // SAFETY: as in `purge_free_os_pages`.
                b = unsafe { next_of(b) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::tests::{full_page, full_page_of};

    fn fill(p: *mut u8, bs: usize, k: usize) {
        for w in 0..bs / 8 {
            // SAFETY: inside block `k` of the caller's page.
            unsafe {
                p.add(k * bs + w * 8)
                    .cast::<u64>()
                    .write((k * 1000 + w) as u64 ^ 0x5a5a)
            };
        }
    }

    fn check(p: *mut u8, bs: usize, k: usize) {
        for w in 0..bs / 8 {
            // SAFETY: as in `fill`.
            let v = unsafe { p.add(k * bs + w * 8).cast::<u64>().read() };
            assert_eq!(v, (k * 1000 + w) as u64 ^ 0x5a5a, "block {k} word {w}");
        }
    }

    /// Every block reachable from `free` and `local_free`, each once.
    fn listed(page: &Page) -> Vec<usize> {
        let mut seen = vec![false; page.reserved as usize];
        let mut out = Vec::new();
        for head in [page.free, page.local_free] {
            let mut b = head;
            while !b.is_null() {
                let k = page.index_of(b);
                assert!(!seen[k], "block {k} listed twice");
                seen[k] = true;
                out.push(k);
                // SAFETY: a list of the test's page.
                b = unsafe { next_of(b) };
            }
        }
        out
    }

    /// Hands out every free block of `page` (its lists, its uncarved
    /// tail, then its purged units) and passes each one's index to `got`;
    /// asserts that none is handed out twice or is `live`, and that nothing
    /// is left purged. Returns how many.
    fn hand_out_all(
        page: &mut Page,
        live: impl Fn(usize) -> bool,
        mut got: impl FnMut(usize),
    ) -> usize {
        let mut seen = vec![false; page.reserved as usize];
        let mut n = 0;
        while page.refill_local() {
            loop {
                // SAFETY: the test's page, refilled.
                let b = unsafe { super::super::pop(page) };
                if b.is_null() {
                    break;
                }
                let k = page.index_of(b.cast());
                assert!(!seen[k] && !live(k), "block {k} handed out twice or live");
                seen[k] = true;
                n += 1;
                got(k);
            }
        }
        assert_eq!(page.purged.get(), 0);
        assert_eq!(page.purged_blocks, 0);
        n
    }

    fn resident(p: *mut u8, o: usize) -> bool {
        let mut v = [0u8; 1];
        // SAFETY: inside the test's mapping.
        assert!(os::mincore(unsafe { p.add(o * OS_PAGE) }, OS_PAGE, &mut v));
        v[0] & 1 != 0
    }

    /// A sparse page: its free OS pages are purged, its lists then hold
    /// every other free block exactly once and none in a purged OS page,
    /// live blocks keep their contents, and the purged blocks come back
    /// (faulted in again) only once the lists run dry, each once.
    #[test]
    fn purges_a_sparse_page_and_takes_it_back() {
        for bs in [16usize, 48, 112, 640, 1536, 3072, 5120, 8192] {
            let (mut page, mem) = full_page(bs);
            let n = page.reserved as usize;
            for k in 0..n {
                fill(mem, bs, k);
            }
            // Live: every third block of the first quarter, so the OS
            // pages of the other three quarters hold free blocks only. The
            // free blocks of even index reach `free`, the others stay on
            // `local_free`.
            let live: Vec<usize> = (0..n / 4).filter(|k| k % 3 == 0).collect();
            let is_live = |k: usize| live.contains(&k);
            for k in (0..n).filter(|&k| !is_live(k) && k % 2 == 0) {
                // SAFETY: a block of the page handed out above.
                unsafe { page.free_local(mem.add(k * bs), 0) };
            }
            assert!(page.refill_local() && page.local_free.is_null());
            for k in (0..n).filter(|&k| !is_live(k) && k % 2 == 1) {
                // SAFETY: as above.
                unsafe { page.free_local(mem.add(k * bs), 0) };
            }
            let before = page.capacity - page.used.get();
            // SAFETY: the page is ours; its lists hold valid blocks.
            let bytes = unsafe { page.purge_free_os_pages() };
            let on_lists = listed(&page);
            assert_eq!(
                on_lists.len() as u32 + u32::from(page.purged_blocks),
                before,
                "bs {bs}: a free block lost"
            );
            assert_eq!(bytes, page.purged.get().count_ones() as usize * OS_PAGE);
            for &k in &on_lists {
                assert_eq!(
                    page.os_pages_of(k) & page.purged.get(),
                    0,
                    "bs {bs}: block {k} listed in a purged OS page"
                );
            }
            for &k in &live {
                assert_eq!(
                    page.os_pages_of(k) & page.purged.get(),
                    0,
                    "bs {bs}: live block {k} purged"
                );
                check(mem, bs, k);
            }
            for o in 0..OS_PAGES {
                if page.purged.get() & (1 << o) != 0 {
                    assert!(!resident(mem, o), "bs {bs}: OS page {o} still resident");
                }
            }
            // Three quarters of the page, less an OS page or two where a
            // free block straddles into the live quarter.
            assert!(bytes >= 9 * OS_PAGE, "bs {bs}: only {bytes} bytes purged");
            // SAFETY: as above: nothing more to purge the second time.
            assert_eq!(unsafe { page.purge_free_os_pages() }, 0);
            // Free half the live blocks: more OS pages go (blocks over an
            // OS page's edge into purged ones count as free), none comes back.
            let (now_free, live): (Vec<usize>, Vec<usize>) = live.iter().partition(|&&k| k < n / 8);
            let is_live = |k: usize| live.contains(&k);
            for &k in &now_free {
                // SAFETY: as above.
                unsafe { page.free_local(mem.add(k * bs), 0) };
            }
            let purged_before = page.purged.get();
            // SAFETY: as above.
            let more = unsafe { page.purge_free_os_pages() };
            assert_eq!(page.purged.get() & purged_before, purged_before);
            assert_eq!(
                more,
                (page.purged.get() & !purged_before).count_ones() as usize * OS_PAGE
            );
            assert!(
                more > 0,
                "bs {bs}: freeing half the live blocks purged nothing"
            );
            let listed2 = listed(&page);
            assert_eq!(
                listed2.len() as u32 + u32::from(page.purged_blocks),
                page.capacity - page.used.get(),
                "bs {bs}: a free block lost the second time"
            );
            for &k in &live {
                check(mem, bs, k);
            }
            // A purged block is free to the double-free check (`secure`).
            for k in (0..n).filter(|&k| page.os_pages_of(k) & page.purged.get() != 0) {
                // SAFETY: a block start of the page.
                assert!(
                    page.is_free_block(unsafe { mem.add(k * bs) }),
                    "bs {bs}: block {k}"
                );
            }
            // Hand every free block out again: the listed ones first, then
            // the purged ones, each once, reading zero past the link.
            let got = hand_out_all(&mut page, is_live, |_| ());
            assert_eq!(got, n - live.len(), "bs {bs}");
            for &k in &live {
                check(mem, bs, k);
            }
            page.close();
            // SAFETY: the test's mapping, no longer used.
            os::unmap(mem, SLICE_SIZE);
        }
    }

    /// A page with one live block: all OS pages but the one(s) it touches go.
    #[test]
    fn one_live_block_keeps_only_its_os_pages() {
        for bs in [16usize, 80, 1024, 6144, 8192] {
            let (mut page, mem) = full_page(bs);
            let n = page.reserved as usize;
            let keep = n / 2;
            fill(mem, bs, keep);
            for k in (0..n).filter(|&k| k != keep) {
                // SAFETY: a block of the page handed out above.
                unsafe { page.free_local(mem.add(k * bs), 0) };
            }
            // SAFETY: the page is ours.
            let bytes = unsafe { page.purge_free_os_pages() };
            let keep_pages = page.os_pages_of(keep);
            // OS pages kept: those of the live block and of free blocks
            // straddling into them (and, for blocks over 4 KiB, chains).
            assert_eq!(page.purged.get() & keep_pages, 0);
            assert!(
                bytes >= (OS_PAGES - 4) * OS_PAGE,
                "bs {bs}: only {bytes} purged"
            );
            check(mem, bs, keep);
            // Nothing more to purge the second time.
            // SAFETY: as above.
            assert_eq!(unsafe { page.purge_free_os_pages() }, 0);
            let listed = listed(&page);
            assert_eq!(listed.len() + page.purged_blocks as usize, n - 1);
            // Free the last block: the page is empty with OS pages purged.
            // SAFETY: the live block.
            unsafe { page.free_local(mem.add(keep * bs), 0) };
            page.purged.set(0);
            page.close();
            // SAFETY: the test's mapping, no longer used.
            os::unmap(mem, SLICE_SIZE);
        }
    }

    /// Pages of more than one slice (one to seven blocks over 8 KiB, as
    /// `heap::span_for` cuts them): with one block live, every purge unit
    /// that no live block reaches goes, the live block keeps its contents,
    /// and the free blocks come back once each when the lists run dry.
    #[test]
    fn purges_the_free_blocks_of_a_page_of_several_slices() {
        // (block size, slices): 11 KiB in 2 (11 blocks), 24 KiB in 2 (5),
        // 48 KiB in 3 (4), 144 KiB in 9 (4).
        for (bs, span) in [(11264usize, 2usize), (24576, 2), (49152, 3), (147456, 9)] {
            let (mut page, mem) = full_page_of(bs, span);
            let n = page.reserved as usize;
            let unit = span * OS_PAGE;
            assert_eq!(page.unit(), unit);
            assert!(n >= 4, "bs {bs}: {n} blocks");
            for k in 0..n {
                fill(mem, bs, k);
            }
            let keep = n / 2;
            for k in (0..n).filter(|&k| k != keep) {
                // SAFETY: a block of the page handed out above.
                unsafe { page.free_local(mem.add(k * bs), 0) };
            }
            // SAFETY: the page is ours; its lists hold valid blocks.
            let bytes = unsafe { page.purge_free_os_pages() };
            let kept = page.os_pages_of(keep);
            assert_eq!(
                page.purged.get() & kept,
                0,
                "bs {bs}: the live block purged"
            );
            assert_eq!(bytes, page.units_bytes(page.purged.get()));
            // Every unit the blocks reach but the live block's.
            let used_units = (n * bs).div_ceil(unit);
            assert_eq!(
                page.purged.get().count_ones() as usize,
                used_units - kept.count_ones() as usize,
                "bs {bs}: {:016b} purged, live block on {kept:016b}",
                page.purged.get()
            );
            for o in 0..OS_PAGES {
                if page.purged.get() & (1 << o) != 0 {
                    for q in 0..span {
                        // SAFETY: inside the page's mapping.
                        let p = unsafe { mem.add(o * unit) };
                        assert!(!resident(p, q), "bs {bs}: unit {o} still resident");
                    }
                }
            }
            check(mem, bs, keep);
            for &k in &listed(&page) {
                assert_eq!(
                    page.os_pages_of(k) & page.purged.get(),
                    0,
                    "bs {bs}: block {k}"
                );
            }
            // SAFETY: as above: nothing more the second time.
            assert_eq!(unsafe { page.purge_free_os_pages() }, 0);
            assert_eq!(
                listed(&page).len() + page.purged_blocks as usize,
                n - 1,
                "bs {bs}: a free block lost"
            );
            // A purged block is free to the double-free check.
            for k in (0..n).filter(|&k| page.os_pages_of(k) & page.purged.get() != 0) {
                // SAFETY: a block start of the page.
                assert!(
                    page.in_purged(unsafe { mem.add(k * bs) }),
                    "bs {bs}: block {k}"
                );
            }
            // Writable, whatever its memory was.
            let got = hand_out_all(&mut page, |k| k == keep, |k| fill(mem, bs, k));
            assert_eq!(got, n - 1, "bs {bs}");
            check(mem, bs, keep);
            for k in (0..n).filter(|&k| k != keep) {
                check(mem, bs, k);
            }
            page.close();
            // SAFETY: the test's mapping, no longer used.
            os::unmap(mem, span * SLICE_SIZE);
        }
    }
}
