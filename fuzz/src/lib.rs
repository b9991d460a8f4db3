//! The driver the fuzz targets share: the input becomes two or three threads'
//! streams of allocation operations, run against a [`Backend`] (segalloc's
//! `GlobalAlloc`, or its C ABI), and every result is checked against a shadow
//! model:
//! - alignment (and a usable size at least the size asked for);
//! - no overlap between live blocks (a global map of their ranges);
//! - contents: every block holds a pattern of its id, verified before every
//!   free and realloc, and the part a realloc keeps is verified after it;
//! - zeroed memory reads zero;
//! - requests that must fail (an alignment of 2^62, a size near
//!   `isize::MAX`) return null;
//! - at the end, with every block freed and every thread joined, the
//!   statistics are consistent (see [`Backend::exact_stats`]).
//!
//! Blocks travel between threads (a "send" op puts a block in another
//! thread's mailbox, which frees or reallocates it there), so cross-thread
//! frees, abandoned segments and their reclaim are exercised too.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// One way of calling the allocator under test.
pub trait Backend: Sync {
    /// Allocates `size` bytes aligned to `align` (zeroed if asked); `how`
    /// picks among equivalent entry points. Null on failure.
    fn alloc(&self, size: usize, align: usize, zeroed: bool, how: u8) -> *mut u8;
    /// Resizes a block allocated with `(size, align)`; null on failure (the
    /// block is then intact).
    ///
    /// # Safety
    /// `p` is a live block of this backend allocated with `(size, align)`.
    unsafe fn realloc(&self, p: *mut u8, size: usize, align: usize, new_size: usize) -> *mut u8;
    /// Frees a block allocated with `(size, align)`.
    ///
    /// # Safety
    /// `p` is a live block of this backend allocated with `(size, align)`.
    unsafe fn free(&self, p: *mut u8, size: usize, align: usize);
    /// Usable size of a live block.
    ///
    /// # Safety
    /// `p` is a live block of this backend.
    unsafe fn usable_size(&self, p: *mut u8) -> usize;
    /// The alignment a block of `align` may be reallocated at (`None`: do not
    /// realloc it), and that the moved block keeps.
    fn realloc_align(&self, align: usize) -> Option<usize>;
    /// The smallest alignment every block has.
    fn min_align(&self) -> usize;
    /// Whether zero-byte requests are allowed.
    fn zero_size_ok(&self) -> bool;
    /// Whether `stats().requested` and `live_blocks()` must come back exactly
    /// (false when the harness' own allocations go through segalloc too).
    fn exact_stats(&self) -> bool;
    /// Merges sparse pages (segalloc's meshing), where the backend can.
    fn mesh(&self) {}
}

/// A live block in the model.
#[derive(Clone, Copy, Debug)]
struct Live {
    p: usize,
    size: usize,
    align: usize,
    id: u64,
}

/// One operation of one thread.
#[derive(Clone, Copy, Debug)]
enum Op {
    Alloc {
        size: usize,
        align: usize,
        zeroed: bool,
        how: u8,
    },
    /// `n` blocks of one size: fills pages, so frees empty them.
    Batch {
        size: usize,
        align: usize,
        n: u8,
    },
    Free {
        idx: u8,
    },
    Realloc {
        idx: u8,
        new_size: usize,
    },
    Send {
        idx: u8,
        to: u8,
    },
    /// A request that must fail.
    Impossible {
        size: usize,
        align: usize,
        zeroed: bool,
    },
    FreeAll,
    /// Merge sparse pages with disjoint blocks (`segalloc::mesh`).
    Mesh,
}

/// segalloc's size boundaries worth hitting exactly (and one off).
fn boundary(sel: u8) -> usize {
    const B: [usize; 12] = [
        8,
        16,
        64,
        128,
        1024,
        1032,
        8192,
        65536,
        131072,
        1 << 20,
        2 << 20,
        4 << 20,
    ];
    let base = if sel & 1 == 0 {
        B[(sel as usize >> 1) % B.len()]
    } else {
        segalloc::LARGE_THRESHOLD
    };
    base + (sel as usize >> 5) % 3 - 1
}

/// A size from three bytes: tiny, small, near a class or segalloc boundary,
/// or anything up to a few MiB.
fn size(x: u8, y: u8, z: u8) -> usize {
    let yz = y as usize | (z as usize) << 8;
    match x % 6 {
        0 => y as usize % 65,
        1 => yz % 2049,
        // Class sizes are 4..7 << k; one below, at, one above.
        2 => ((4 + (y & 3) as usize) << (1 + (y >> 2) as usize % 19)) + (z as usize % 3) - 1,
        3 => boundary(y),
        4 => yz * 64,
        _ => yz % 4097 * 16,
    }
}

/// An alignment from one byte: mostly small, sometimes up to `MAX_ALIGN`.
fn align(w: u8) -> usize {
    let k = (w >> 3) as usize;
    match w % 8 {
        0..=3 => 1 << (k % 5),
        4 | 5 => (1 << (k % 22)).min(segalloc::MAX_ALIGN),
        6 => 8,
        _ => 16,
    }
}

/// Splits the input into per-thread operation streams.
fn decode(data: &[u8]) -> Vec<Vec<Op>> {
    let Some((&first, rest)) = data.split_first() else {
        return Vec::new();
    };
    let threads = 2 + (first % 2) as usize;
    let mut streams = vec![Vec::new(); threads];
    for c in rest.chunks_exact(6) {
        let (t, tag, a, b, cc, d) = (c[0], c[1], c[2], c[3], c[4], c[5]);
        let op = match tag % 16 {
            0..=4 => Op::Alloc {
                size: size(a, b, cc),
                align: align(d),
                zeroed: false,
                how: tag >> 4,
            },
            5 => Op::Alloc {
                size: size(a, b, cc),
                align: align(d),
                zeroed: true,
                how: tag >> 4,
            },
            6..=8 => Op::Free { idx: a },
            9 | 10 => Op::Realloc {
                idx: a,
                new_size: size(b, cc, d),
            },
            11 | 12 => Op::Send { idx: a, to: b },
            13 => {
                // An alignment no address space holds, or a size that
                // overflows with any header: both Layout-valid, both must
                // give null.
                let (size, align) = if a & 1 == 0 {
                    (size(b, cc, 0).max(1), 1usize << 62)
                } else {
                    let align = 1usize << (d % 12);
                    (isize::MAX as usize - (align - 1) - (b as usize), align)
                };
                Op::Impossible {
                    size,
                    align,
                    zeroed: tag & 0x10 != 0,
                }
            }
            14 => Op::Batch {
                size: size(a, b, 0),
                align: align(cc),
                n: 1 + d % 64,
            },
            _ if a % 4 == 0 => Op::Mesh,
            _ => Op::FreeAll,
        };
        streams[t as usize % threads].push(op);
    }
    streams
}

/// Positions of a block's bytes that carry its pattern: all of them up to
/// 64 KiB, then every 4093rd (the same positions whatever the block's size,
/// so a realloc's kept prefix can be checked against the old fill).
fn positions(size: usize) -> impl Iterator<Item = usize> {
    const FULL: usize = 64 * 1024;
    (0..size.min(FULL)).chain((FULL..size).step_by(4093))
}

fn pattern(id: u64, i: usize) -> u8 {
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
        ^ (i as u8).wrapping_mul(31)
        ^ (i >> 12) as u8
}

/// Shared state of one run.
struct Run<'a, B: Backend> {
    b: &'a B,
    /// Live ranges: start -> (end, id).
    ranges: Mutex<BTreeMap<usize, (usize, u64)>>,
    mailboxes: Vec<Mutex<Vec<Live>>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// Live bytes one thread may hold, so inputs cannot exhaust memory.
const BUDGET: usize = 48 << 20;

impl<B: Backend> Run<'_, B> {
    fn register(&self, l: &Live) {
        let end = l.p + l.size.max(1);
        let mut r = self.ranges.lock().unwrap();
        if let Some((&s, &(e, id))) = r.range(..end).next_back() {
            assert!(
                e <= l.p,
                "block {:#x}+{} (id {}) overlaps live {s:#x}..{e:#x} (id {id})",
                l.p,
                l.size,
                l.id
            );
        }
        r.insert(l.p, (end, l.id));
    }

    fn unregister(&self, l: &Live) {
        let got = self.ranges.lock().unwrap().remove(&l.p);
        assert_eq!(
            got.map(|g| g.1),
            Some(l.id),
            "block {:#x} not registered",
            l.p
        );
    }

    fn fill(&self, l: &Live) {
        for i in positions(l.size) {
            // SAFETY: `i < size`, inside the live block.
            unsafe { *(l.p as *mut u8).add(i) = pattern(l.id, i) };
        }
    }

    /// Checks the pattern of `l` at its positions below `upto`.
    fn verify(&self, l: &Live, p: usize, upto: usize, what: &str) {
        for i in positions(l.size).take_while(|&i| i < upto) {
            // SAFETY: `i < upto <= size` of the live block at `p`.
            let got = unsafe { *(p as *const u8).add(i) };
            assert_eq!(
                got,
                pattern(l.id, i),
                "{what}: block id {} at {p:#x} (size {}) corrupt at {i}",
                l.id,
                l.size
            );
        }
    }

    fn check_new(&self, p: *mut u8, size: usize, align: usize, what: &str) {
        let a = align.max(self.b.min_align());
        assert_eq!(
            p as usize % a,
            0,
            "{what}: {p:p} not aligned to {a} (size {size})"
        );
        // SAFETY: a live block we just got.
        let usable = unsafe { self.b.usable_size(p) };
        assert!(usable >= size, "{what}: usable size {usable} < {size}");
    }

    fn alloc(
        &self,
        mine: &mut Vec<Live>,
        held: &mut usize,
        size: usize,
        align: usize,
        zeroed: bool,
        how: u8,
    ) {
        let size = if self.b.zero_size_ok() {
            size
        } else {
            size.max(1)
        };
        if *held + size > BUDGET {
            return;
        }
        let p = self.b.alloc(size, align, zeroed, how);
        assert!(!p.is_null(), "alloc({size}, {align}) failed");
        self.check_new(p, size, align, "alloc");
        if zeroed {
            for i in positions(size) {
                // SAFETY: inside the new block.
                let got = unsafe { *p.add(i) };
                assert_eq!(got, 0, "zeroed alloc({size}, {align}) has {got:#x} at {i}");
            }
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let l = Live {
            p: p as usize,
            size,
            align,
            id,
        };
        self.register(&l);
        self.fill(&l);
        *held += size;
        mine.push(l);
    }

    fn free(&self, l: Live) {
        self.verify(&l, l.p, l.size, "free");
        self.unregister(&l);
        // SAFETY: a live block of ours with its allocation parameters.
        unsafe { self.b.free(l.p as *mut u8, l.size, l.align) };
    }

    fn realloc(&self, l: &mut Live, new_size: usize) {
        let Some(new_align) = self.b.realloc_align(l.align) else {
            return;
        };
        let new_size = if self.b.zero_size_ok() {
            new_size
        } else {
            new_size.max(1)
        };
        self.verify(l, l.p, l.size, "before realloc");
        self.unregister(l);
        // SAFETY: a live block of ours with its allocation parameters.
        let q = unsafe { self.b.realloc(l.p as *mut u8, l.size, l.align, new_size) };
        if q.is_null() {
            if new_size == 0 {
                // C's realloc(p, 0) frees p.
                l.size = usize::MAX;
                return;
            }
            panic!("realloc({}, {}) to {new_size} failed", l.size, l.align);
        }
        self.check_new(q, new_size, new_align, "realloc");
        self.verify(l, q as usize, l.size.min(new_size), "after realloc");
        l.p = q as usize;
        l.size = new_size;
        l.align = new_align;
        self.register(l);
        self.fill(l);
    }

    fn thread(&self, me: usize, ops: &[Op]) {
        let mut mine: Vec<Live> = Vec::new();
        let mut held = 0usize;
        for &op in ops {
            mine.extend(self.mailboxes[me].lock().unwrap().drain(..));
            match op {
                Op::Alloc {
                    size,
                    align,
                    zeroed,
                    how,
                } => self.alloc(&mut mine, &mut held, size, align, zeroed, how),
                Op::Batch { size, align, n } => {
                    for _ in 0..n {
                        self.alloc(&mut mine, &mut held, size, align, false, 0);
                    }
                }
                Op::Free { idx } if !mine.is_empty() => {
                    let l = mine.swap_remove(idx as usize % mine.len());
                    held = held.saturating_sub(l.size);
                    self.free(l);
                }
                Op::Realloc { idx, new_size } if !mine.is_empty() => {
                    let i = idx as usize % mine.len();
                    if held + new_size > BUDGET {
                        continue;
                    }
                    let old = mine[i].size;
                    self.realloc(&mut mine[i], new_size);
                    held = held.saturating_sub(old);
                    if mine[i].size == usize::MAX {
                        mine.swap_remove(i);
                    } else {
                        held += mine[i].size;
                    }
                }
                Op::Send { idx, to } if !mine.is_empty() => {
                    let l = mine.swap_remove(idx as usize % mine.len());
                    held = held.saturating_sub(l.size);
                    let to = to as usize % self.mailboxes.len();
                    self.mailboxes[to].lock().unwrap().push(l);
                }
                Op::Impossible {
                    size,
                    align,
                    zeroed,
                } => {
                    let p = self.b.alloc(size, align, zeroed, 0);
                    assert!(
                        p.is_null(),
                        "impossible request ({size}, {align}) gave {p:p}"
                    );
                }
                Op::FreeAll => {
                    for l in mine.drain(..) {
                        self.free(l);
                    }
                    held = 0;
                }
                Op::Mesh => self.b.mesh(),
                _ => {}
            }
        }
        mine.extend(self.mailboxes[me].lock().unwrap().drain(..));
        for l in mine {
            self.free(l);
        }
    }
}

/// Runs one input against `b`, panicking on any inconsistency.
pub fn run<B: Backend>(b: &B, data: &[u8]) {
    let streams = decode(data);
    if streams.is_empty() {
        return;
    }
    let run = Run {
        b,
        ranges: Mutex::new(BTreeMap::new()),
        mailboxes: (0..streams.len()).map(|_| Mutex::new(Vec::new())).collect(),
        next_id: std::sync::atomic::AtomicU64::new(1),
    };
    let before = segalloc::stats();
    std::thread::scope(|s| {
        let threads: Vec<_> = streams
            .iter()
            .enumerate()
            .map(|(me, ops)| {
                let run = &run;
                s.spawn(move || run.thread(me, ops))
            })
            .collect();
        // Joined by hand: the scope's own wait ends when the closures return,
        // before the threads' exit (segalloc's heap handover) has run, which
        // would race with the statistics read below.
        for t in threads {
            t.join().unwrap();
        }
    });
    // Blocks sent to a thread after it finished.
    for m in &run.mailboxes {
        for l in m.lock().unwrap().drain(..) {
            run.free(l);
        }
    }
    assert!(run.ranges.lock().unwrap().is_empty(), "blocks left live");
    let after = segalloc::stats();
    if b.exact_stats() {
        assert_eq!(
            after.requested, before.requested,
            "requested bytes did not come back"
        );
        assert_eq!(
            after.live_blocks(),
            before.live_blocks(),
            "live blocks did not come back"
        );
    }
    assert_eq!(
        after.committed,
        after.allocated + after.metadata + after.external_fragmentation(),
        "committed != allocated + metadata + external: {after:?}"
    );
}
