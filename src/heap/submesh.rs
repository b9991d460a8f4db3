//! Meshing at OS-page granularity, the heap's part: which OS pages of which
//! pages to merge (see `crate::mesh::sub` for the mapping and
//! `page::share` for the pages' lists), and what a page that shares OS
//! pages gives back when it is freed.
//!
//! Whole-page meshing (`heap::mesh`) needs two 64 KiB pages whose live
//! blocks are all disjoint: with one block in ten live at random that
//! happens with probability 0.99^n for n blocks a page, never below 256
//! bytes. Here the unit is the OS page, 4 KiB: 0.99^16 = 85% for 256-byte
//! blocks, 52% for 64 bytes, 8% for 16 bytes. It runs after whole-page
//! meshing in the same pass (which costs one mapping per 64 KiB given
//! back), over what that left, across every segment of the heap.
//!
//! A pass: the candidates are one-slice pages of the heap's own (not
//! private) segments, wholly carved, in use, not full, not the current page
//! of their class, at most half live, and in no whole-page group. For each
//! its occupancy bitmap (`Page::occupied`: blocks that may hold data, those
//! on `thread_free` or in flight included) and the OS pages it covers. By
//! class, the sparsest page B first: among up to [`PROBES`] other
//! candidates A, fullest first, the one whose OS pages `k` (where both have
//! blocks and no block overlapping `k` holds data there in both) give back the
//! most OS pages per mapping added is chosen and B's merged onto A's; B's
//! remaining OS pages go on to the next A. The mappings, not the pairs, run
//! out first on random frees, so this runs in rounds over every class
//! ([`TIERS`]), each taking only merges that give back at least so many OS
//! pages per run mapped (4, then 3, 2, 1.5, 1, then any): the budget goes
//! to the thriftiest merges of any class first. Both pages first take off their
//! lists the blocks the other's data will overlap (B: every free block over
//! the merged OS pages; A: those B occupies), then `mesh::sub::merge` copies
//! and maps. The bitmaps then take the merge, per OS page (`Occ`): at
//! each merged OS page A's holds B's data too and B's counts as full, so
//! later merges see the physical page's occupancy, while a straddler's
//! other half counts only where its own page's data is.
//!
//! Statistics: each OS page merged is counted in the heap's
//! `meshed_in_pages` (memory of a page in use that is no longer its own),
//! and taken off again when a page mapped onto a shared OS page is freed
//! and the OS page has one page fewer.

use super::window::STEP_US;
use super::{in_use_pages, Heap};
use crate::mesh::sub;
use crate::os::{self, Source, OS_PAGE};
use crate::page::{sparse, Page, IN_FULL, LIVE_WORDS};
use crate::segment::{self, Segment};
use core::ptr;

/// Candidates one pass looks at, at most.
const MAX_CAND: usize = 16_384;
/// Other pages tried for each page whose OS pages are to go.
const PROBES: usize = 64;
/// The rounds of a pass: in round `t` a merge must give back at least
/// `TIERS[t]` sixteenths of an OS page per run it may map (4, 3, 2, 1.5, 1
/// OS pages, then any). Each run can split a mapping in three and the
/// mappings are bounded (`mesh::sub`'s budget): on `benches/c/frag.c` a
/// simulation of the pass on its candidates' occupancy bitmaps gave back
/// 30% more under the same budget than one round of 1 per run and one of
/// any, class by class (README, Meshing).
pub(super) const TIERS: [usize; 6] = [64, 48, 32, 24, 16, 0];
/// Bytes of the pass's scratch: a bitmap and an entry per candidate.
const SCRATCH: usize = MAX_CAND * (core::mem::size_of::<Occ>() + core::mem::size_of::<Cand>());

/// A candidate's occupancy kept per OS page: the blocks that may hold data
/// at their first OS page (`lo`) and at the OS pages after it (`hi`, which
/// only a block straddling an OS page boundary has). A block live in the
/// page counts at every OS page it covers; a block excluded for a merged
/// OS page counts there only, and a block another page's data fills at an
/// OS page only there: the other half of a straddler excluded for OS page
/// `k` holds nothing at `k+1` (its data, if any, stays where it was).
/// Where a block covers more than two OS pages, `hi` stands for all but
/// the first (more than is occupied, never less).
#[repr(C)]
struct Occ {
    lo: [u64; LIVE_WORDS],
    hi: [u64; LIVE_WORDS],
}

impl Occ {
    /// Adds to `out` the blocks over OS page `k` (of a page of `bs`-byte
    /// blocks, `cap` of them) that may hold data there.
    fn at(&self, k: usize, bs: usize, cap: usize, out: &mut [u64; LIVE_WORDS]) {
        let Some((first, last)) = span(k, bs, cap) else {
            return;
        };
        for j in first..=last {
            let m = if j * bs < k * OS_PAGE {
                &self.hi
            } else {
                &self.lo
            };
            out[j / 64] |= m[j / 64] & (1 << (j % 64));
        }
    }

    /// Marks the blocks of `set` over OS page `k` as holding data there.
    fn mark(&mut self, k: usize, bs: usize, cap: usize, set: &[u64; LIVE_WORDS]) {
        let Some((first, last)) = span(k, bs, cap) else {
            return;
        };
        for j in first..=last {
            let m = if j * bs < k * OS_PAGE {
                &mut self.hi
            } else {
                &mut self.lo
            };
            m[j / 64] |= set[j / 64] & (1 << (j % 64));
        }
    }
}

/// The first and last block over OS page `k`, if any.
fn span(k: usize, bs: usize, cap: usize) -> Option<(usize, usize)> {
    let first = k * OS_PAGE / bs;
    if first >= cap {
        return None;
    }
    Some((first, (((k + 1) * OS_PAGE - 1) / bs).min(cap - 1)))
}

/// A candidate page.
#[derive(Clone, Copy)]
struct Cand {
    page: *mut Page,
    class: u8,
    used: u32,
    /// OS pages its occupied blocks cover.
    pages: u16,
}

impl Heap {
    /// Merges OS pages of this heap's sparse pages onto others', of size
    /// class `class` only if given (the timed step, `purge`), else of every
    /// class. Returns how many OS pages were merged. `crate::mesh::setup`
    /// must have succeeded.
    ///
    /// # Safety
    /// Called by the owning thread, inside its handshake.
    pub(crate) unsafe fn submesh_pass(&mut self, class: Option<usize>) -> usize {
        let segs = self.segments();
        // SAFETY: per the contract; the heap's own segments.
        unsafe {
            self.submesh_over(segs, class, (&TIERS, 0), u64::MAX, &mut false)
                .0
        }
    }

    /// [`submesh_pass`](Self::submesh_pass) over the segments `segs` (ours,
    /// none released while this runs), in the rounds `tiers` (of
    /// [`TIERS`]), the first from its `from`-th page on (see
    /// [`merge_classes`](Self::merge_classes)), reading the mapping budget first
    /// unless `budget_read` (which it then sets), and stopping after a
    /// merge that ends at or after `deadline` (precise clock, µs;
    /// `u64::MAX` for none: a timed step otherwise, which reads the budget
    /// at most once a second, see `mesh::sub::begin_timed_pass`). Returns
    /// the OS pages merged and, if it stopped early, where to go on: a
    /// round (an index of `tiers`) and a page.
    ///
    /// # Safety
    /// As for [`submesh_pass`](Self::submesh_pass).
    pub(super) unsafe fn submesh_over(
        &mut self,
        segs: impl Iterator<Item = *mut Segment>,
        class: Option<usize>,
        tiers: (&[usize], usize),
        deadline: u64,
        budget_read: &mut bool,
    ) -> (usize, Option<(usize, usize)>) {
        if self.private {
            return (0, None);
        }
        let scratch = os::map_scratch(SCRATCH);
        if scratch.is_null() {
            return (0, None);
        }
        let occ = scratch.cast::<Occ>();
        // SAFETY: the entries follow the bitmaps in the scratch mapping,
        // which is aligned for both.
        let cand = unsafe { scratch.add(MAX_CAND * core::mem::size_of::<Occ>()) }.cast::<Cand>();
        let mut n = 0;
        for s in segs {
            if n == MAX_CAND {
                break;
            }
            // SAFETY: `s` is one of ours; nothing here releases it.
            unsafe {
                if (*s).source == Source::Mmap {
                    n = self.candidates(s, occ, cand, n, class);
                }
            }
        }
        // The mapping budget (a read of `/proc/self/maps`), only when there
        // is something to merge: the timed step often finds nothing.
        if n >= 2 && !*budget_read {
            if deadline == u64::MAX {
                sub::begin_pass();
            } else {
                sub::begin_timed_pass();
            }
            *budget_read = true;
        }
        // A timed step's merges get a step's time after the gathering,
        // which can take the whole step (each step stopped here gathers
        // its window again: they would go on a page a step).
        let deadline = if deadline == u64::MAX {
            deadline
        } else {
            deadline.max(os::now_us() + STEP_US)
        };
        // SAFETY: the first `n` entries were written above, each with its
        // bitmap at the same index.
        let done = unsafe {
            let cands = core::slice::from_raw_parts_mut(cand, n);
            self.merge_classes(cands, occ, tiers, deadline)
        };
        // SAFETY: our scratch mapping, used no more.
        unsafe { os::unmap_scratch(scratch, SCRATCH) };
        done
    }

    /// Appends the candidates of segment `s` (of `class` only, if given)
    /// from entry `n` on; returns the new count.
    unsafe fn candidates(
        &mut self,
        s: *mut Segment,
        occ: *mut Occ,
        cand: *mut Cand,
        mut n: usize,
        class: Option<usize>,
    ) -> usize {
        // SAFETY: `s` is ours, and its pages; the scratch has room for
        // MAX_CAND entries.
        unsafe {
            let seg = &mut *s;
            for i in in_use_pages(seg) {
                if n == MAX_CAND {
                    break;
                }
                let p = ptr::addr_of_mut!(seg.pages[i]);
                let c = (*p).class as usize;
                if (*p).span != 1
                    || class.is_some_and(|k| k != c)
                    || (*p).has(IN_FULL)
                    || self.queues[c].first == p
                    || (seg.meshed(i) && !sub::is_member(seg, i))
                    || !(*p).deferred.is_null()
                {
                    continue;
                }
                self.collect_remote(p);
                let used = (*p).used.get();
                if used == 0 || !sparse(used, (*p).reserved) {
                    continue;
                }
                let o = &mut *occ.add(n);
                let Some(pages) = (*p).occupied(&mut o.lo) else {
                    continue;
                };
                o.hi = o.lo;
                cand.add(n).write(Cand {
                    page: p,
                    class: c as u8,
                    used,
                    pages,
                });
                n += 1;
            }
            n
        }
    }

    /// The merges, class by class, in the rounds `tiers`: entries `cands`
    /// with their bitmaps at the same index of `occ`, the first round from
    /// the page `from` on (in the order of the sort below), until `deadline`
    /// (see [`submesh_over`](Self::submesh_over), which returns what this
    /// does).
    unsafe fn merge_classes(
        &mut self,
        cands: &mut [Cand],
        occ: *mut Occ,
        (tiers, from): (&[usize], usize),
        deadline: u64,
    ) -> (usize, Option<(usize, usize)>) {
        // Sort by (class, used), moving each bitmap with its entry.
        let n = cands.len();
        // Shell sort: no allocation, and in place for both arrays.
        let key = |c: &Cand| (c.class, c.used);
        let mut gap = n / 2;
        while gap > 0 {
            for i in gap..n {
                let mut j = i;
                while j >= gap && key(&cands[j - gap]) > key(&cands[j]) {
                    cands.swap(j - gap, j);
                    // SAFETY: both indices are below `n`, distinct.
                    unsafe { ptr::swap(occ.add(j - gap), occ.add(j)) };
                    j -= gap;
                }
            }
            gap /= 2;
        }
        // Rounds over every class, each asking less of a merge than the
        // last: the mapping budget, not the pairs, runs out first on random
        // frees, so it goes to the merges that give back the most OS pages
        // per mapping, whatever their class, before any cheaper one.
        let mut merged = 0;
        for (t, &min) in tiers.iter().enumerate() {
            let mut lo = 0;
            while lo < n {
                let mut hi = lo + 1;
                while hi < n && cands[hi].class == cands[lo].class {
                    hi += 1;
                }
                let first = if t == 0 { lo.max(from) } else { lo };
                for b in first..hi {
                    // SAFETY: indices of the class's range; our pages.
                    let (n, late) = unsafe { self.merge_one(cands, occ, b, lo, hi, min, deadline) };
                    merged += n;
                    // After each page too: a round that finds no merge
                    // probes every page of the class (tens of ms).
                    if late {
                        return (merged, Some((t, b)));
                    }
                    if deadline != u64::MAX && os::now_us() >= deadline {
                        return (merged, Some((t, b + 1)));
                    }
                }
                lo = hi;
            }
        }
        (merged, None)
    }

    /// Merges the OS pages of candidate `b` it can onto those of others of
    /// its class (`lo..hi`), only where they give back at least `min`
    /// sixteenths of an OS page per run they may map (see [`TIERS`]).
    /// Returns the OS pages merged, and whether a merge ended at or after
    /// `deadline` (then it stops there).
    #[allow(clippy::too_many_arguments)]
    unsafe fn merge_one(
        &mut self,
        cands: &mut [Cand],
        occ: *mut Occ,
        b: usize,
        lo: usize,
        hi: usize,
        min: usize,
        deadline: u64,
    ) -> (usize, bool) {
        // SAFETY: per the caller: our pages, the pass's bitmaps.
        unsafe {
            let pb = cands[b].page;
            let mut left = cands[b].pages & !(*pb).shared;
            let mut merged = 0;
            // Rounds: the other page that takes the most OS pages per
            // mapping added (then the most OS pages), then the next.
            while left != 0 {
                let mut best = (0u16, 0usize);
                let mut best_score = (0usize, 0u32);
                let mut probes = 0;
                for a in (lo..hi).rev() {
                    if probes == PROBES {
                        break;
                    }
                    let both = left & cands[a].pages;
                    if a == b || both == 0 {
                        continue;
                    }
                    probes += 1;
                    let (oa, ob) = (&*occ.add(a), &*occ.add(b));
                    let mut mask = 0u16;
                    let mut m = both;
                    while m != 0 {
                        let k = m.trailing_zeros() as usize;
                        m &= m - 1;
                        if disjoint(&*cands[a].page, k, oa, ob) {
                            mask |= 1 << k;
                        }
                    }
                    // Runs of B's OS pages, and of A's not shared yet, are
                    // the mappings the merge may add.
                    let cost = runs(mask) + runs(mask & !(*cands[a].page).shared);
                    let n = mask.count_ones();
                    if mask == 0 || (n as usize) * 16 < min * cost {
                        continue;
                    }
                    let score = (n as usize * 16 / cost, n);
                    if score > best_score {
                        best_score = score;
                        best = (mask, a);
                    }
                }
                let (mask, a) = best;
                if mask == 0 {
                    break;
                }
                let timed = deadline != u64::MAX;
                let done =
                    self.merge_os_pages(cands[a].page, pb, mask, occ.add(a), occ.add(b), timed);
                left &= !mask;
                merged += done.count_ones() as usize;
                cands[a].pages |= done;
                if deadline != u64::MAX && os::now_us() >= deadline {
                    return (merged, true);
                }
            }
            (merged, false)
        }
    }

    /// Merges OS pages `mask` of `pb` onto `pa`'s (their bitmaps `oa`,
    /// `ob`; `timed` in a timed step, see `mesh::sub::reserve`). Returns
    /// the OS pages merged; the bitmaps take the blocks each page excluded.
    unsafe fn merge_os_pages(
        &mut self,
        pa: *mut Page,
        pb: *mut Page,
        mask: u16,
        oa: *mut Occ,
        ob: *mut Occ,
        timed: bool,
    ) -> u16 {
        // SAFETY: our pages, in use; the bitmaps are the pass's.
        unsafe {
            let sa = &*segment::segment_of(pa.cast());
            let sb = &*segment::segment_of(pb.cast());
            let (ai, bi) = (sa.page_index(pa), sb.page_index(pb));
            let Some((ra, rb)) = sub::reserve(sa, ai, sb, bi, timed) else {
                return 0;
            };
            let (bs, cap) = ((*pb).block_size, (*pb).capacity as usize);
            let mut over = [0u64; LIVE_WORDS];
            (*pb).blocks_over(mask, &mut over);
            // A gives up every block B's data will overlap at any of the
            // OS pages, whole: a straddler's other half is of no use to A.
            let mut drop_a = [0u64; LIVE_WORDS];
            let mut m = mask;
            while m != 0 {
                let k = m.trailing_zeros() as usize;
                m &= m - 1;
                (*ob).at(k, bs, cap, &mut drop_a);
            }
            // Before the copy: it writes over these blocks' links.
            (*pa).exclude(mask, &drop_a, ra);
            (*pb).exclude(mask, &over, rb);
            let done = sub::merge(
                sa,
                ai,
                ra,
                sb,
                bi,
                rb,
                mask,
                (&(*ob).lo, &(*ob).hi),
                bs,
                cap,
            );
            // From now on, at each OS page of `mask` (merged or not: more
            // than is occupied, never less), A's OS page holds B's data
            // there too, and B's is all taken (its blocks there excluded,
            // or live and copied, or A's). At the OS pages next to them
            // nothing changes: a straddler counts there only where its own
            // page's data is.
            let mut m = mask;
            while m != 0 {
                let k = m.trailing_zeros() as usize;
                m &= m - 1;
                let mut b_there = [0u64; LIVE_WORDS];
                (*ob).at(k, bs, cap, &mut b_there);
                (*oa).mark(k, bs, cap, &b_there);
                (*ob).mark(k, bs, cap, &[!0u64; LIVE_WORDS]);
            }
            self.k()
                .meshed_in_pages
                .add(done.count_ones() as usize * OS_PAGE);
            done
        }
    }

    /// What of an empty page's slice `i` of `s` may be resident, for
    /// `Segment::free_run`, once its meshing is undone: a whole-page
    /// group's primary is dissolved (nothing resident), a page with shared
    /// OS pages gets fresh memory there, and the rest is as
    /// `touched_to_free` says.
    ///
    /// # Safety
    /// `p` is an in-use page of ours at slice `i` of `s`, with no live
    /// block.
    pub(super) unsafe fn touched_on_free(
        &mut self,
        s: *mut Segment,
        i: usize,
        p: *mut Page,
    ) -> usize {
        // SAFETY: per the contract.
        unsafe {
            let seg = &mut *s;
            if seg.meshed(i) && !sub::is_member(seg, i) {
                // OS pages punched out of its chunk (`heap::purge`) go
                // with the rest of it: fresh memory over every range.
                let purged = (*p).purged.get();
                if purged != 0 {
                    self.k().purged_in_pages.sub((*p).units_bytes(purged));
                    (*p).purged.set(0);
                    (*p).purged_blocks = 0;
                }
                self.unmesh(s, i);
                return 0;
            }
            if sub::is_member(seg, i) {
                self.unshare(seg, i, p);
            }
            self.touched_to_free(seg, i, p)
        }
    }

    /// A page with a record in `mesh::sub` is being freed (no block live):
    /// fresh memory over the OS pages it had mapped onto shared ones, which
    /// are then counted as purged ones (they read zero) for
    /// `touched_to_free`. (An OS page the page excluded blocks for but
    /// whose mapping the kernel refused is still its own: it stays as it
    /// is, to be purged there.)
    ///
    /// # Safety
    /// `p` is an in-use page of ours at slice `i` of `seg`, with no live
    /// block, and has a record.
    pub(super) unsafe fn unshare(&mut self, seg: &mut Segment, i: usize, p: *mut Page) {
        // SAFETY: per the contract.
        unsafe {
            (*p).unshare();
            let (back, mapped) = sub::release(seg, i);
            let k = self.k();
            k.meshed_in_pages.sub(back * OS_PAGE);
            // Each OS page merged onto another was counted once, in
            // `merge_os_pages`; those whose slot lost a sharer are
            // uncounted above. The shared OS pages now read zero, as
            // purged ones do: `touched_to_free` uncounts what it finds in
            // `purged`, so count them there first.
            let new = mapped & !(*p).purged.get();
            k.purged_in_pages.add((*p).units_bytes(new));
            (*p).purged.set((*p).purged.get() | new);
        }
    }
}

/// Runs of set bits in `m`.
fn runs(m: u16) -> usize {
    (m & !(m << 1)).count_ones() as usize
}

/// Whether no block overlapping OS page `k` of `page`'s layout holds data
/// there in both `oa` and `ob`.
fn disjoint(page: &Page, k: usize, oa: &Occ, ob: &Occ) -> bool {
    let (bs, cap) = (page.block_size, page.capacity as usize);
    let Some((first, last)) = span(k, bs, cap) else {
        return true;
    };
    // The block begun before `k`, if any, by `hi`; the rest by `lo`.
    let mut from = first;
    if first * bs < k * OS_PAGE {
        if ((oa.hi[first / 64] & ob.hi[first / 64]) >> (first % 64)) & 1 != 0 {
            return false;
        }
        from += 1;
    }
    if from > last {
        return true;
    }
    let (w0, w1) = (from / 64, last / 64);
    for w in w0..=w1 {
        let mut m = !0u64;
        if w == w0 {
            m &= !0u64 << (from % 64);
        }
        if w == w1 && last % 64 != 63 {
            m &= (1u64 << (last % 64 + 1)) - 1;
        }
        if oa.lo[w] & ob.lo[w] & m != 0 {
            return false;
        }
    }
    true
}
