//! The timed step (`heap::purge`) in slices of bounded time.
//!
//! A timed step took a size class whole: its sub-page purge, and with the
//! option `mesh` on its meshing. On a heap of a million sparse blocks a
//! class took up to about 100 ms with meshing and 37 ms without, all inside
//! one allocation (and Redis stalled for up to 330 ms). Now a step stops at
//! the first merge or window boundary after [`STEP_US`] (at a window
//! boundary, after half of it), and the next step resumes where this one
//! stopped ([`Cursor`]), as soon as the duty cycle allows (`heap::purge`).
//! A class is taken in the order it was before, a window of its segments
//! (along [`Heap::segments`]) at a time:
//! - windows of about 32 pages of the class ([`WINDOW_WORK`]): each meshed
//!   whole (`heap::mesh`, whose merges pair pages of one segment), then
//!   purged inside its pages;
//! - then, with meshing on, windows of 32K free blocks ([`OS_WINDOW_WORK`])
//!   for the OS-page merges (`heap::submesh`), round by round
//!   (`submesh::TIERS`), partners found across the window. Larger windows
//!   give back more (Redis: windows of 32 pages 152 MiB, these 144, the
//!   whole class at once 125), but each step gathers its window's
//!   candidates (a walk of their free lists) before its first merge, and
//!   gathering the whole class took up to 90 ms in Redis's 16-byte class.
//!
//! Progress: the deadline is read after a merge (of a whole page or of OS
//! pages) or a whole window, never before a step's first, so every step
//! merges something or moves past a window. A step stopped inside a
//! window's whole-page merges leaves the cursor on that window, which the
//! next step does again (what was merged is merged; the rest is tried
//! again); stopped inside the OS-page merges, on that round and page (in
//! `submesh`'s order, by live blocks, which the merges do not change), and
//! the deadline is read after each page there too, whose merges get a
//! step's time after the gathering. The sub-page purge of a window is not
//! cut short: it is bounded by the window's pages. Positions count
//! segments along the heap's lists, which may change between steps: a pass
//! may then look at a segment twice, or miss one, which the next pass
//! looks at.

use super::submesh::TIERS;
use super::{in_use_pages, Heap};
use crate::segment::Segment;
use core::ptr;

/// How long a timed step works before it stops at the next merge or
/// window boundary (µs).
pub(super) const STEP_US: u64 = 3_000;
/// How much a window of segments takes, at least (unless the heap has
/// less): pages of the class, and their free blocks (what walking their
/// lists costs, a cache miss each).
#[derive(Clone, Copy)]
struct Work {
    pages: usize,
    blocks: usize,
}

/// A window for the whole-page merges (which pair pages of one segment)
/// and the sub-page purge: few enough pages that what it does before its
/// first merge takes a millisecond or two.
const WINDOW_WORK: Work = Work {
    pages: 32,
    blocks: usize::MAX,
};
/// Segments a window holds, at most.
const WINDOW_SEGS: usize = 64;
/// A window for the OS-page merges, whose partners are found across it:
/// as many pages as 32K free blocks (about 2 ms to walk), 280 of 512-byte
/// blocks at one in ten live, 9 of 16-byte ones. Windows of 32 pages gave
/// back 20% less in Redis than the whole class did (152 MiB against 125,
/// both at the mapping budget), and gathering a whole class at each step
/// took up to 90 ms in Redis's 16-byte class.
const OS_WINDOW_WORK: Work = Work {
    pages: usize::MAX,
    blocks: 1 << 15,
};
/// Segments an OS-page window holds, at most.
const OS_WINDOW_SEGS: usize = 256;

/// Where the timed step stands in its size class.
#[derive(Clone, Copy)]
pub(super) struct Cursor {
    /// The class.
    class: usize,
    /// What the class has yet to do.
    stage: Stage,
    /// The mapping budget was read in this class's pass (`mesh::sub`).
    budget_read: bool,
}

#[derive(Clone, Copy)]
enum Stage {
    /// Windows of segments from this position on (segments along
    /// [`Heap::segments`]): whole-page merges and the sub-page purge.
    Windows(usize),
    /// The OS-page merges of the class, windows of segments from this
    /// position on, the first from this round (an index of
    /// `submesh::TIERS`) and this page of it (in `submesh`'s order) on.
    OsPages(usize, usize, usize),
}

impl Cursor {
    /// No class under way.
    pub(super) const START: Cursor = Cursor {
        class: usize::MAX,
        stage: Stage::Windows(0),
        budget_read: false,
    };
}

/// Whether a step that must end by `deadline` may begin another window:
/// only in the first half of its time, since what a window does before
/// its first merge (its pages' lists walked, its sub-page purge) cannot be
/// cut short.
pub(super) fn another_window(deadline: u64) -> bool {
    crate::os::now_us().saturating_add(STEP_US / 2) < deadline
}

impl Heap {
    /// Purges inside class `c`'s pages (with `purge`) and meshes them (with
    /// `mesh`) from where the last step stopped, until the class is done or
    /// `deadline` (precise clock, µs) has passed. Returns the bytes purged
    /// and whether the class is done.
    ///
    /// # Safety
    /// Called by the owning thread inside its handshake; with `mesh`,
    /// meshing set up and no caller holding on to a segment (collecting an
    /// alias's frees may release one).
    pub(super) unsafe fn step_class(
        &mut self,
        c: usize,
        purge: bool,
        mesh: bool,
        deadline: u64,
    ) -> (usize, bool) {
        if self.step_cursor.class != c {
            self.step_cursor = Cursor {
                class: c,
                ..Cursor::START
            };
        }
        if !mesh && matches!(self.step_cursor.stage, Stage::OsPages(..)) {
            // The option was turned off since the last step.
            self.step_cursor = Cursor::START;
            return (0, true);
        }
        let mut given = 0;
        loop {
            match self.step_cursor.stage {
                Stage::Windows(pos) => {
                    let mut win = [ptr::null_mut(); WINDOW_SEGS];
                    let (n, last) = self.window(c, pos, &mut win, WINDOW_WORK);
                    let segs = &mut win[..n];
                    // SAFETY: the window's segments are ours; the owner, in
                    // its handshake, per the contract. `mesh_over` nulls the
                    // entries of segments it released.
                    unsafe {
                        // Stopped inside, the window is done again.
                        if mesh && self.mesh_over(segs, Some(c), deadline).1 {
                            return (given, false);
                        }
                    }
                    if purge {
                        given += self.purge_class_in(c, true, |s| segs.contains(&s));
                    }
                    self.step_cursor.stage = match (last, mesh) {
                        (false, _) => Stage::Windows(pos + n),
                        (true, true) => Stage::OsPages(0, 0, 0),
                        (true, false) => break,
                    };
                    if !another_window(deadline) {
                        return (given, false);
                    }
                }
                Stage::OsPages(pos, round, from) => {
                    let mut win = [ptr::null_mut(); OS_WINDOW_SEGS];
                    let (n, last) = self.window(c, pos, &mut win, OS_WINDOW_WORK);
                    let mut read = self.step_cursor.budget_read;
                    let segs = win[..n].iter().copied();
                    let tiers = (&TIERS[round..], from);
                    // SAFETY: as above; the OS-page merges release nothing.
                    let (_, late) =
                        unsafe { self.submesh_over(segs, Some(c), tiers, deadline, &mut read) };
                    self.step_cursor.budget_read = read;
                    if let Some((t, b)) = late {
                        self.step_cursor.stage = Stage::OsPages(pos, round + t, b);
                        return (given, false);
                    }
                    if last {
                        break;
                    }
                    self.step_cursor.stage = Stage::OsPages(pos + n, 0, 0);
                    if !another_window(deadline) {
                        return (given, false);
                    }
                }
            }
        }
        self.step_cursor = Cursor::START;
        (given, true)
    }

    /// Fills `out` with the segments from position `from` of
    /// [`segments`](Self::segments) on, until their pages of class `c`
    /// reach `work` (in pages or in free blocks), the segments
    /// run out, or `out` is full. Returns how many, and whether no segment
    /// follows them.
    fn window<const N: usize>(
        &self,
        c: usize,
        from: usize,
        out: &mut [*mut Segment; N],
        work: Work,
    ) -> (usize, bool) {
        let mut segs = self.segments().skip(from);
        let (mut n, mut pages, mut blocks) = (0, 0, 0);
        while n < N && pages < work.pages && blocks < work.blocks {
            let Some(s) = segs.next() else {
                return (n, true);
            };
            out[n] = s;
            n += 1;
            // SAFETY: `s` is one of ours, its header mapped.
            let seg = unsafe { &*s };
            for i in in_use_pages(seg) {
                let p = &seg.pages[i];
                if p.class as usize == c {
                    pages += 1;
                    blocks += p.capacity.saturating_sub(p.used.get()) as usize;
                }
            }
        }
        (n, segs.next().is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::SLICE_SIZE;
    use crate::size_class::class_of;

    /// On a thread of its own: 800 pages of `BS`-byte blocks, one in ten
    /// kept and written. One timed step leaves the class unfinished, the
    /// steps after it finish it within a bounded number, meshing merges OS
    /// pages on the way, and every kept block reads back as written.
    fn steps_finish_a_large_class<const BS: usize>(mesh: bool) {
        std::thread::spawn(move || {
            let c = class_of(BS);
            let n = 800 * (SLICE_SIZE / BS);
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let mut kept = std::vec::Vec::with_capacity(n / 8);
            let all: std::vec::Vec<usize> = (0..n)
                .map(|_| crate::alloc::malloc(BS, 8) as usize)
                .collect();
            for &p in &all {
                assert!(p != 0);
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x % 10 == 0 {
                    // SAFETY: a live block of BS bytes.
                    unsafe { (p as *mut u8).write_bytes(p as u8 | 1, BS) };
                    kept.push(p);
                } else {
                    // SAFETY: allocated above, freed once.
                    unsafe { crate::alloc::free(p as *mut u8, BS) };
                }
            }
            assert!(!mesh || crate::mesh::setup());
            let before = crate::mesh_stats().os_pages_meshed;
            let h = crate::thread::heap();
            // SAFETY: this thread's own heap, in its handshake.
            let steps = unsafe {
                crate::thread::owning(h, |heap| {
                    let step = |heap: &mut Heap| {
                        heap.step_class(c, true, mesh, crate::os::now_us() + STEP_US)
                            .1
                    };
                    assert!(!step(heap), "one step did a class of 800 sparse pages");
                    let mut steps = 1;
                    while !step(heap) {
                        steps += 1;
                        assert!(steps < 100_000, "the steps do not finish the class");
                    }
                    steps
                })
            };
            assert!(steps >= 2);
            if mesh {
                assert!(
                    crate::mesh_stats().os_pages_meshed > before,
                    "no OS page merged"
                );
            }
            for &p in &kept {
                // SAFETY: a live block of BS bytes, written above.
                let b = unsafe { core::slice::from_raw_parts(p as *const u8, BS) };
                assert!(b.iter().all(|&v| v == p as u8 | 1), "a kept block changed");
                // SAFETY: allocated above, freed once.
                unsafe { crate::alloc::free(p as *mut u8, BS) };
            }
            crate::collect();
        })
        .join()
        .unwrap();
    }

    /// 512-byte blocks: the sub-page purge walks their pages (an OS page
    /// of eight such blocks is wholly free with probability 0.9^8); it
    /// skips pages of small blocks, where a free OS page is unlikely.
    #[test]
    fn the_sub_page_purge_of_a_large_class_takes_several_steps() {
        steps_finish_a_large_class::<512>(false);
    }

    #[test]
    fn meshing_a_large_class_takes_several_steps() {
        steps_finish_a_large_class::<64>(true);
    }
}
