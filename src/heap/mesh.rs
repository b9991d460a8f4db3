//! Meshing, the heap's part: which pages to merge, and the bookkeeping of
//! merged pages (see `crate::mesh` for the mapping and the invariants).
//!
//! Only the owning thread meshes its own heap's pages, on `collect()` with
//! the option `mesh` on, or through `segalloc::mesh()`, or one size class
//! at a time in its timed purge with the option on (`heap::purge`). A pass, per segment
//! (the two pages of a merge are always in one segment) and per size class:
//! - candidates are pages of one slice in use, not on the full list, not
//!   the current page of their class, with at most three quarters of their
//!   blocks live, once other threads' frees are collected;
//! - each page's live blocks are read off its lists into a bitmap: a block
//!   on neither `free` nor `local_free` counts as live, so a block freed by
//!   another thread and not collected yet (on `thread_free`, or in a batch
//!   on its way) is kept, never lost;
//! - the sparsest page B (at most half live, itself no primary) goes into
//!   the fullest page A whose bitmap is disjoint from B's and which has room
//!   for another alias; A's bitmap then takes B's bits, so A can take more.
//!
//! A merge: the counts of both pages are taken, `crate::mesh::merge` copies
//! and remaps, A's lists are rebuilt around the union of live blocks (A's
//! `used` takes B's), B leaves its queue and is closed as an alias. B's
//! slices stay taken in the segment but leave the heap's `used_slices` and
//! the class's page count, so `committed` drops by a slice; they return to
//! the segment, with nothing resident, when A is freed ([`Heap::unmesh`]).
//!
//! Frees that reach an alias: through the free slow path (`alloc`), through
//! a batch (`remote_batch`), both redirected to A; or pushed on the alias's
//! `thread_free` by a thread that saw the page before it closed: collected
//! here, from the segment's `thread_freed` hints and by a sweep of every
//! alias at each pass.

use super::{in_use_pages, unfull_threshold, Heap};
use crate::mesh::{self, MAX_ALIASES};
use crate::os::{self, Source};
use crate::page::{sparse, Page, IN_FULL, LIVE_WORDS};
use crate::remote::next_of;
use crate::segment::{Segment, SLICES};
use core::ptr;

/// Bytes of the pass's scratch bitmaps: one per slice.
const SCRATCH: usize = SLICES * LIVE_WORDS * 8;

impl Heap {
    /// Merges this heap's sparse pages with disjoint live blocks, of size
    /// class `class` only if given (the timed step, `purge`), else of every
    /// class. Returns how many pages were merged into others.
    /// `crate::mesh::setup` must have succeeded.
    ///
    /// # Safety
    /// Called by the owning thread, inside its handshake.
    pub(crate) unsafe fn mesh_pass(&mut self, class: Option<usize>) -> usize {
        self.with_scratch(|heap, scratch| {
            let mut merged = 0;
            for s in heap.segments() {
                // SAFETY: `s` is one of ours (its successor read already,
                // so the sweep may release it).
                merged += unsafe { heap.mesh_one(s, scratch, class, u64::MAX) }.map_or(0, |m| m.0);
            }
            merged
        })
        .unwrap_or(0)
    }

    /// [`mesh_pass`](Self::mesh_pass) over the segments of `segs` (ours)
    /// only, stopping after a merge that ends at or after `deadline`
    /// (precise clock, µs; `u64::MAX` for none); an entry whose segment the
    /// pass released is set to null. Returns the pages merged and whether
    /// it stopped early.
    ///
    /// # Safety
    /// As for [`mesh_pass`](Self::mesh_pass).
    pub(super) unsafe fn mesh_over(
        &mut self,
        segs: &mut [*mut Segment],
        class: Option<usize>,
        deadline: u64,
    ) -> (usize, bool) {
        self.with_scratch(|heap, scratch| {
            let (mut merged, mut late) = (0, false);
            for s in segs.iter_mut().filter(|s| !s.is_null()) {
                // SAFETY: `*s` is one of ours, per the contract.
                match unsafe { heap.mesh_one(*s, scratch, class, deadline) } {
                    Some((n, l)) => (merged, late) = (merged + n, l),
                    None => *s = ptr::null_mut(),
                }
                if late {
                    break;
                }
            }
            (merged, late)
        })
        .unwrap_or((0, false))
    }

    /// Runs `f` with the pass's scratch bitmaps (a mapping of their own,
    /// unmapped after), unless the heap is private (its blocks are freed
    /// all at once, so it is never meshed) or the scratch cannot be mapped.
    fn with_scratch<R>(
        &mut self,
        f: impl FnOnce(&mut Heap, *mut [u64; LIVE_WORDS]) -> R,
    ) -> Option<R> {
        if self.private {
            return None;
        }
        let scratch = os::map_scratch(SCRATCH).cast::<[u64; LIVE_WORDS]>();
        if scratch.is_null() {
            return None;
        }
        let r = f(self, scratch);
        // SAFETY: our scratch mapping, used no more.
        unsafe { os::unmap_scratch(scratch.cast(), SCRATCH) };
        Some(r)
    }

    /// Collects the frees pushed on the aliases of segment `s` (ours), then
    /// merges its pages (of `class` only, if given) until `deadline` (as
    /// for [`mesh_over`](Self::mesh_over)). Returns the pages merged and
    /// whether it stopped early, or `None` if collecting released the
    /// segment.
    unsafe fn mesh_one(
        &mut self,
        s: *mut Segment,
        live: *mut [u64; LIVE_WORDS],
        class: Option<usize>,
        deadline: u64,
    ) -> Option<(usize, bool)> {
        // SAFETY: `s` is ours, per the contract; merging releases nothing.
        unsafe {
            if self.collect_aliases(s) {
                return None;
            }
            if (*s).source != Source::Mmap {
                return Some((0, false));
            }
            Some(self.mesh_segment(s, live, class, deadline))
        }
    }

    /// The pass over one segment (pages of `class` only, if given), until
    /// `deadline` (as for [`mesh_over`](Self::mesh_over), which returns
    /// what this does). `live` has room for a bitmap per slice.
    unsafe fn mesh_segment(
        &mut self,
        s: *mut Segment,
        live: *mut [u64; LIVE_WORDS],
        class: Option<usize>,
        deadline: u64,
    ) -> (usize, bool) {
        // SAFETY: `s` is one of ours, and its pages; `live` per the contract.
        unsafe {
            let seg = &mut *s;
            let mut cand = [0u8; SLICES];
            let mut n = 0;
            for i in in_use_pages(seg) {
                let p = ptr::addr_of_mut!(seg.pages[i]);
                let c = (*p).class as usize;
                // Not a page with OS pages purged inside it (`page::purge`)
                // or fresh blocks held back (`page::shuffle`): its blocks
                // there are free but on no list.
                // Nor one with OS pages shared with other pages (`submesh`).
                if (*p).span != 1
                    || class.is_some_and(|k| k != c)
                    || (*p).has(IN_FULL)
                    || self.queues[c].first == p
                    || (*p).purged.get() != 0
                    || (*p).shared != 0
                    || !(*p).deferred.is_null()
                    || mesh::sub::is_member(seg, i)
                {
                    continue;
                }
                self.collect_remote(p);
                let used = (*p).used.get();
                if used == 0 || used as u64 * 4 > (*p).reserved as u64 * 3 {
                    continue;
                }
                if !(*p).live_blocks(&mut *live.add(i)) {
                    continue;
                }
                cand[n] = i as u8;
                n += 1;
            }
            // By class, then by live blocks (sparsest first).
            let key = |i: u8| {
                let p = &seg.pages[i as usize];
                (p.class, p.used.get())
            };
            cand[..n].sort_unstable_by_key(|&i| key(i));
            let mut gone = 0u64;
            let mut merged = 0;
            for bi in 0..n {
                let b = cand[bi] as usize;
                let pb = ptr::addr_of_mut!(seg.pages[b]);
                if gone & (1 << b) != 0
                    || mesh::alias_count(seg, b) > 0
                    || seg.meshed(b)
                    || !sparse((*pb).used.get(), (*pb).reserved)
                {
                    continue;
                }
                // The fullest disjoint page of the class with room.
                for ai in (0..n).rev() {
                    let a = cand[ai] as usize;
                    let pa = ptr::addr_of_mut!(seg.pages[a]);
                    if a == b || gone & (1 << a) != 0 || (*pa).class != (*pb).class {
                        continue;
                    }
                    if (*pa).used.get() + (*pb).used.get() > (*pa).reserved
                        || mesh::alias_count(seg, a) >= MAX_ALIASES
                    {
                        continue;
                    }
                    let (la, lb) = (&*live.add(a), &*live.add(b));
                    if la.iter().zip(lb).any(|(x, y)| x & y != 0) {
                        continue;
                    }
                    if self.merge(s, a, b, live) {
                        gone |= 1 << b;
                        merged += 1;
                        if deadline != u64::MAX && os::now_us() >= deadline {
                            return (merged, true);
                        }
                    }
                    break;
                }
            }
            (merged, false)
        }
    }

    /// Merges page `b` of `s` into page `a`, their bitmaps in `live`
    /// (disjoint); `a`'s takes `b`'s bits. Returns whether it was done.
    unsafe fn merge(
        &mut self,
        s: *mut Segment,
        a: usize,
        b: usize,
        live: *mut [u64; LIVE_WORDS],
    ) -> bool {
        // SAFETY: our segment and pages; the bitmaps are the pass's.
        unsafe {
            let seg = &mut *s;
            let pa: *mut Page = ptr::addr_of_mut!(seg.pages[a]);
            let pb: *mut Page = ptr::addr_of_mut!(seg.pages[b]);
            let bs = (*pa).block_size;
            // Counts first: they walk `free`, whose links the copy may
            // overwrite in `a`.
            self.fold(pa, true);
            self.fold(pb, true);
            if !mesh::merge(seg, a, b, &*live.add(b), bs) {
                return false;
            }
            let (la, lb) = (&mut *live.add(a), &*live.add(b));
            for (x, y) in la.iter_mut().zip(lb) {
                *x |= *y;
            }
            let cap = (*pa).capacity.max((*pb).capacity);
            let used = (*pa).used.get() + (*pb).used.get();
            (*pa).adopt(la, cap, used);
            self.unlink(pb);
            (*pb).close_alias();
            seg.used_pages -= 1;
            self.used_slices -= 1;
            let k = self.k();
            k.class[(*pb).class as usize].pages.sub(1);
            k.used_slices.sub(1);
            true
        }
    }

    /// Collects the frees other threads pushed on every alias of `s` into
    /// their primaries. Returns whether the segment was released (a primary
    /// emptied, and with it the segment).
    pub(super) unsafe fn collect_aliases(&mut self, s: *mut Segment) -> bool {
        for i in 1..SLICES {
            // SAFETY: `s` is one of ours.
            if unsafe { mesh::is_alias(&*s, i) && self.collect_alias(s, i) } {
                return true;
            }
        }
        false
    }

    /// Collects the frees on the `thread_free` of alias `i` of `s` into its
    /// primary, and settles the primary. Returns whether `s` was released.
    pub(super) unsafe fn collect_alias(&mut self, s: *mut Segment, i: usize) -> bool {
        // SAFETY: `s` is ours; the alias's descriptor keeps its list, and
        // every block on it is live in the primary (see `crate::mesh`).
        unsafe {
            let seg = &mut *s;
            let pb = ptr::addr_of_mut!(seg.pages[i]);
            let Some((head, n)) = (*pb).thread_free.take_all(ptr::null_mut(), (*pb).capacity)
            else {
                crate::fatal(
                    "double free (a block freed twice by other threads: its page's list of remote frees loops)",
                    (*pb).start,
                );
            };
            if n == 0 {
                return false;
            }
            let start = (*pb).start as usize;
            let target = mesh::redirect(s, (*pb).start);
            let pa = seg.page_of(target);
            let mut x = head;
            while !x.is_null() {
                let next = next_of(x);
                let q = (*pa).start.add(x as usize - start);
                (*pa).free_collected(q);
                x = next;
            }
            self.k().class[(*pa).class as usize]
                .remote_pending
                .sub(n as usize);
            self.settle(pa, unfull_threshold(pa))
        }
    }

    /// The primary at slice `i` of `s` is being freed: dissolves its group
    /// and gives its aliases' slices back to the segment, with nothing
    /// resident. Fresh memory is mapped over the primary too: the caller
    /// frees its slices as untouched.
    ///
    /// # Safety
    /// `s` is ours; the primary has no live block.
    pub(super) unsafe fn unmesh(&mut self, s: *mut Segment, i: usize) {
        // SAFETY: per the contract.
        unsafe {
            let seg = &mut *s;
            let mut mask = mesh::release(seg, i);
            while mask != 0 {
                let j = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                debug_assert!(seg.pages[j].thread_free.is_empty());
                seg.touched[j] = 0;
                seg.free_run(j, 1, 0);
            }
            seg.touched[i] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::alloc;
    use crate::segment::segment_of;

    /// On a thread of its own: pages whose kept blocks sit at disjoint
    /// offsets are merged; each block of a merged page is found at the same
    /// offset of its primary, with the same bytes; frees through both kinds
    /// of address empty the pages, and `collect` dissolves the groups.
    #[test]
    fn merged_blocks_are_found_through_their_primary() {
        std::thread::spawn(|| {
            const BS: usize = 512;
            let per = 65536 / BS;
            let all: Vec<usize> = (0..16 * per)
                .map(|_| alloc::malloc(BS, 8) as usize)
                .collect();
            let mut kept = Vec::new();
            for &p in &all {
                if (p & 0xffff) / BS % 4 == (p >> 16) % 4 {
                    // SAFETY: a live block of BS bytes.
                    unsafe { (p as *mut u8).write_bytes(p as u8, BS) };
                    kept.push(p);
                } else {
                    // SAFETY: allocated above, freed once.
                    unsafe { alloc::free(p as *mut u8, BS) };
                }
            }
            let merged = crate::mesh();
            assert!(merged > 0);
            let mut aliases = 0;
            for &p in &kept {
                // A block the heap profiler sampled (`SEGALLOC_PROF=1`) has
                // a mapping of its own, not a small segment, which is all
                // `alias_target` takes.
                // SAFETY: a live block: its segment's header is mapped.
                if unsafe { (*segment_of(p as *const u8)).kind } != crate::segment::KIND_SMALL {
                    continue;
                }
                let q = crate::mesh::alias_target(segment_of(p as *const u8), p as *const u8);
                if q.is_null() {
                    continue;
                }
                aliases += 1;
                assert_ne!(q as usize, p);
                // SAFETY: both addresses map the live block.
                unsafe {
                    assert_eq!(*q, p as u8);
                    assert_eq!(*(q.add(BS - 1)), p as u8);
                    // Not a block start: no alias.
                    let inner = p as *const u8;
                    assert!(crate::mesh::alias_target(segment_of(inner), inner.add(8)).is_null());
                }
            }
            assert!(aliases > 0);
            for &p in &kept {
                // SAFETY: live blocks, freed once (through whichever address).
                unsafe { alloc::free(p as *mut u8, BS) };
            }
            crate::collect();
        })
        .join()
        .unwrap();
        assert_eq!(crate::mesh_stats().groups, 0);
    }
}
