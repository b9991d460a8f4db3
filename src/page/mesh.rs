//! What meshing (`heap::mesh`) needs of a page's private fields: the bitmap
//! of its live blocks, its lists rebuilt around another page's blocks, and
//! the closing of a page merged into another (an alias).

use super::{Page, FRESH_TAIL};
use crate::remote::{next_of, set_next};
use core::ptr;
use core::sync::atomic::{fence, Ordering};

/// Words of a live-block bitmap: a page of one 64 KiB slice holds at most
/// 4096 blocks (of 16 bytes).
pub(crate) const LIVE_WORDS: usize = 64;

impl Page {
    /// Sets in `live` the bit of every carved block that is on neither
    /// `free` nor `local_free` (blocks on `thread_free`, or in flight to it,
    /// count as live). False, with `live` unspecified, if the page has more
    /// blocks than the bitmap holds or a list is longer than the page (a
    /// corrupted list). Owner only.
    pub(crate) fn live_blocks(&self, live: &mut [u64; LIVE_WORDS]) -> bool {
        let cap = self.capacity as usize;
        if self.reserved as usize > LIVE_WORDS * 64 {
            return false;
        }
        *live = [0; LIVE_WORDS];
        for (w, word) in live.iter_mut().enumerate().take(cap.div_ceil(64)) {
            let n = (cap - w * 64).min(64);
            *word = if n == 64 { !0 } else { (1u64 << n) - 1 };
        }
        let mut steps = cap;
        for head in [self.free, self.local_free] {
            let mut b = head;
            while !b.is_null() {
                if steps == 0 || !self.holds(b.cast()) {
                    return false;
                }
                steps -= 1;
                let k = (b as usize - self.start as usize) / self.block_size;
                live[k / 64] &= !(1u64 << (k % 64));
                // SAFETY: blocks on the owner's lists hold links we wrote.
                b = unsafe { next_of(b) };
            }
        }
        true
    }

    /// Takes the blocks live in `live` as this page's own, `used` of them
    /// in all (those already on `thread_free` included), with `capacity`
    /// blocks carved: every other carved block goes on `free`, in address
    /// order. The counts must have been taken just before (`take_counts`).
    /// Owner only.
    ///
    /// # Safety
    /// The page's memory holds, at every offset `live` marks, a live block
    /// (its own or one merged into it), and nothing else refers to the
    /// others; `capacity <= reserved`.
    pub(crate) unsafe fn adopt(&mut self, live: &[u64; LIVE_WORDS], capacity: u32, used: u32) {
        let mut head: *mut super::Block = ptr::null_mut();
        let mut n = 0u32;
        for k in (0..capacity as usize).rev() {
            if live[k / 64] & (1u64 << (k % 64)) != 0 {
                continue;
            }
            // SAFETY: block `k` is carved and free, per the contract.
            unsafe {
                let b = self.start.add(k * self.block_size).cast();
                set_next(b, head);
                head = b;
            }
            n += 1;
        }
        self.capacity = capacity;
        self.free = head;
        self.local_free = ptr::null_mut();
        self.used.set(used);
        self.placed = n;
        self.fold_used = used;
        self.flags &= !FRESH_TAIL;
        self.end_free_zero();
    }

    /// Closes a page whose blocks were merged into another (an alias): it
    /// serves no block, counts none, and every pointer into it fails
    /// [`is_block`](Self::is_block), so frees through it take the slow path
    /// (which finds the merged page). Its `thread_free`, `capacity`,
    /// `start` and `block_size` stay: frees another thread pushed before it
    /// saw the page closed are collected from there. Owner only, after the
    /// slice's mesh word says alias.
    pub(crate) fn close_alias(&mut self) {
        self.flags = 0;
        self.free = ptr::null_mut();
        self.local_free = ptr::null_mut();
        self.used.set(0);
        self.set_current(false);
        self.next = ptr::null_mut();
        self.prev = ptr::null_mut();
        // The mesh word first: a freer that sees `limit` 0 finds the alias.
        // Other threads read `limit` as plain memory (see the module docs);
        // it is one aligned word, written once here.
        fence(Ordering::SeqCst);
        // SAFETY: a field of ours.
        unsafe { ptr::write_volatile(&mut self.limit, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::super::pop;
    use super::*;

    /// The bitmap shows exactly the blocks handed out and not freed; a
    /// rebuild around another page's blocks never hands those out; a closed
    /// alias has no block.
    #[test]
    fn live_bitmap_rebuild_and_alias() {
        let mut mem = vec![0u64; 8192]; // 64 KiB
        let start = mem.as_mut_ptr().cast::<u8>();
        let mut page = Page::EMPTY;
        page.reset(start, 64, 1024);
        let mut got = Vec::new();
        for _ in 0..100 {
            if page.free.is_null() {
                assert!(page.refill_local());
            }
            // SAFETY: our page, with a block on `free`.
            got.push(unsafe { pop(&mut page) });
        }
        for &b in got.iter().step_by(3) {
            // SAFETY: a live block of the page, freed once.
            unsafe { page.free_local(b, 64) };
        }
        let mut live = [0u64; LIVE_WORDS];
        assert!(page.live_blocks(&mut live));
        for (i, &b) in got.iter().enumerate() {
            let k = (b as usize - start as usize) / 64;
            assert_eq!(live[k / 64] >> (k % 64) & 1 == 1, i % 3 != 0, "block {k}");
        }
        let ours = live.iter().map(|w| w.count_ones()).sum::<u32>();
        assert_eq!(ours, page.used.get());
        // Another page's blocks at the odd offsets it has free.
        let mut union = live;
        let mut theirs = 0;
        for k in (1..1024).step_by(2) {
            if union[k / 64] >> (k % 64) & 1 == 0 {
                union[k / 64] |= 1 << (k % 64);
                theirs += 1;
            }
        }
        page.take_counts(true);
        // SAFETY: the bitmap marks live blocks; the rest are free.
        unsafe { page.adopt(&union, 1024, ours + theirs) };
        let mut after = [0u64; LIVE_WORDS];
        assert!(page.live_blocks(&mut after));
        assert_eq!(after, union);
        let mut n = 0;
        loop {
            // SAFETY: our page.
            let b = unsafe { pop(&mut page) };
            if b.is_null() {
                break;
            }
            let k = (b as usize - start as usize) / 64;
            assert_eq!(
                union[k / 64] >> (k % 64) & 1,
                0,
                "live block {k} handed out"
            );
            n += 1;
        }
        assert_eq!(n, 1024 - ours - theirs);
        page.close_alias();
        assert!(!page.is_block(start));
        assert!(!page.is_block(got[1]));
    }
}
