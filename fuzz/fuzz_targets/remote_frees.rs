//! Fuzzes frees from several threads (batched remote frees, `remote_batch`):
//! the input becomes two to four roles' streams of operations, each role run
//! by an OS thread that a "restart" replaces with a fresh one (which takes
//! over the role's blocks: the exited thread's batches must reach their
//! owners, its segments are abandoned, its heap slot is reused). Blocks move
//! between roles through mailboxes, in ones or all at once, and are freed by
//! whoever holds them; a role may own a first-class `Heap` whose blocks other
//! roles free through the global allocator, and drop it once none of its
//! blocks is live elsewhere.
//!
//! Checked: every block's contents before it is freed, no overlap between
//! live blocks, and at the end, with every thread joined and every block
//! freed, `requested` and `live_blocks()` exactly back to where they were and
//! `committed == allocated + metadata + external`. segalloc is called
//! directly (`GlobalAlloc`, `Allocator`); the harness itself uses the system
//! allocator, so it does not disturb the statistics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use segalloc::allocator_api2::alloc::Allocator;
use segalloc::SegAlloc;
use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug)]
enum Op {
    Alloc {
        size: usize,
    },
    /// `n` blocks of one size: fills pages, and batches.
    Burst {
        size: usize,
        n: usize,
    },
    Free {
        idx: u8,
    },
    Send {
        idx: u8,
        to: u8,
    },
    /// Every block held goes to another role (producer/consumer).
    SendAll {
        to: u8,
    },
    Collect,
    /// The role's thread exits; a new one carries on with its blocks.
    Restart,
    /// `n` blocks from the role's first-class heap.
    HeapAlloc {
        size: usize,
        n: usize,
    },
    /// Drops the role's heap if none of its blocks is live elsewhere.
    HeapDrop,
}

/// Sizes: mostly small (batched), some up to 8 KiB, some beyond (pushed
/// one by one), a few large.
fn size(a: u8, b: u8) -> usize {
    let ab = a as usize | (b as usize) << 8;
    match a % 8 {
        0..=3 => 1 + ab % 512,
        4 | 5 => 1 + ab % 8192,
        6 => 8193 + ab % 60_000,
        _ if b < 8 => (1 << 20) + ab,
        _ => 16 * (1 + b as usize % 16),
    }
}

/// Sizes of first-class heap blocks: block sizes exactly. (A heap's block
/// freed through the global allocator takes its size off the freeing
/// thread's counters, and the heap's drop can only take off what its live
/// blocks' pages hold; the two agree when the size asked is the block size.)
const HEAP_SIZES: [usize; 12] = [16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256];

fn decode(data: &[u8]) -> Vec<Vec<Op>> {
    let Some((&first, rest)) = data.split_first() else {
        return Vec::new();
    };
    let roles = 2 + (first % 3) as usize;
    let mut streams = vec![Vec::new(); roles];
    for c in rest.chunks_exact(4) {
        let (r, tag, a, b) = (c[0], c[1], c[2], c[3]);
        let op = match tag % 16 {
            0..=4 => Op::Alloc { size: size(a, b) },
            5 => Op::Burst {
                size: size(b, a & 7),
                n: 1 + a as usize % 100,
            },
            6 | 7 => Op::Free { idx: a },
            8..=10 => Op::Send { idx: a, to: b },
            11 => Op::SendAll { to: a },
            12 => Op::Collect,
            13 => Op::Restart,
            14 => Op::HeapAlloc {
                size: HEAP_SIZES[b as usize % HEAP_SIZES.len()],
                n: 1 + a as usize % 40,
            },
            _ => Op::HeapDrop,
        };
        streams[r as usize % roles].push(op);
    }
    streams
}

fn pattern(id: u64, i: usize) -> u8 {
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 ^ (i as u8).wrapping_mul(31)
}

/// Positions that carry a block's pattern: all up to 4 KiB, then a stride.
fn positions(size: usize) -> impl Iterator<Item = usize> {
    (0..size.min(4096)).chain((4096..size).step_by(509))
}

/// A live block: where, how big, its id, and (for a first-class heap's
/// block) that heap's count of live blocks.
struct Live {
    p: usize,
    size: usize,
    id: u64,
    heap: Option<Arc<AtomicUsize>>,
}

/// A role's first-class heap and its count of live blocks.
type OwnHeap = (segalloc::Heap, Arc<AtomicUsize>);

/// What a role carries from one of its threads to the next.
#[derive(Default)]
struct Role {
    mine: Vec<Live>,
    held: usize,
    heap: Option<OwnHeap>,
    pos: usize,
}

struct Run {
    ranges: Mutex<BTreeMap<usize, (usize, u64)>>,
    mailboxes: Vec<Mutex<Vec<Live>>>,
    next_id: AtomicU64,
}

/// Bytes one role may hold.
const BUDGET: usize = 32 << 20;

impl Run {
    fn register(&self, p: usize, size: usize, id: u64) {
        let end = p + size;
        let mut r = self.ranges.lock().unwrap();
        if let Some((&s, &(e, other))) = r.range(..end).next_back() {
            assert!(
                e <= p,
                "block {p:#x}+{size} (id {id}) overlaps {s:#x}..{e:#x} (id {other})"
            );
        }
        r.insert(p, (end, id));
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

    fn fill(&self, p: usize, size: usize, id: u64) {
        for i in positions(size) {
            // SAFETY: inside the live block.
            unsafe { *(p as *mut u8).add(i) = pattern(id, i) };
        }
    }

    fn verify(&self, l: &Live, what: &str) {
        for i in positions(l.size) {
            // SAFETY: inside the live block.
            let got = unsafe { *(l.p as *const u8).add(i) };
            assert_eq!(
                got,
                pattern(l.id, i),
                "{what}: block id {} at {:#x} (size {}) corrupt at {i}",
                l.id,
                l.p,
                l.size
            );
        }
    }

    fn new_block(&self, p: *mut u8, size: usize, heap: Option<Arc<AtomicUsize>>) -> Live {
        assert!(!p.is_null(), "alloc of {size} failed");
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.register(p as usize, size, id);
        self.fill(p as usize, size, id);
        Live {
            p: p as usize,
            size,
            id,
            heap,
        }
    }

    /// Frees `l` through the global allocator's door, whoever made it.
    fn free(&self, l: Live) {
        self.verify(&l, "free");
        self.unregister(&l);
        // SAFETY: a live block of segalloc's of this layout, freed once (a
        // first-class heap's block freed this way is collected by the heap).
        unsafe { SegAlloc.dealloc(l.p as *mut u8, Layout::from_size_align(l.size, 8).unwrap()) };
        if let Some(alive) = l.heap {
            alive.fetch_sub(1, Ordering::Release);
        }
    }

    /// Runs role `me` until its stream ends (true) or a restart (false).
    fn run_role(&self, me: usize, ops: &[Op], role: &mut Role) -> bool {
        while role.pos < ops.len() {
            let op = ops[role.pos];
            role.pos += 1;
            let inbox: Vec<Live> = self.mailboxes[me].lock().unwrap().drain(..).collect();
            for l in inbox {
                role.held += l.size;
                role.mine.push(l);
            }
            match op {
                Op::Alloc { size } | Op::Burst { size, .. } => {
                    let n = if let Op::Burst { n, .. } = op { n } else { 1 };
                    for _ in 0..n {
                        if role.held + size > BUDGET {
                            break;
                        }
                        let layout = Layout::from_size_align(size, 8).unwrap();
                        // SAFETY: a non-zero size.
                        let p = unsafe { SegAlloc.alloc(layout) };
                        role.mine.push(self.new_block(p, size, None));
                        role.held += size;
                    }
                }
                Op::Free { idx } if !role.mine.is_empty() => {
                    let l = role.mine.swap_remove(idx as usize % role.mine.len());
                    role.held -= l.size;
                    self.free(l);
                }
                Op::Send { idx, to } if !role.mine.is_empty() => {
                    let l = role.mine.swap_remove(idx as usize % role.mine.len());
                    role.held -= l.size;
                    let to = to as usize % self.mailboxes.len();
                    self.mailboxes[to].lock().unwrap().push(l);
                }
                Op::SendAll { to } => {
                    let to = to as usize % self.mailboxes.len();
                    role.held = 0;
                    self.mailboxes[to].lock().unwrap().append(&mut role.mine);
                }
                // Collects too, then merges sparse pages.
                Op::Collect => {
                    segalloc::mesh();
                }
                Op::Restart => return false,
                Op::HeapAlloc { size, n } => {
                    let (heap, alive) = role.heap.get_or_insert_with(|| {
                        (segalloc::Heap::new(), Arc::new(AtomicUsize::new(0)))
                    });
                    let layout = Layout::from_size_align(size, 8).unwrap();
                    for _ in 0..n {
                        let p = heap.allocate(layout).expect("heap allocation failed");
                        alive.fetch_add(1, Ordering::Relaxed);
                        let l = self.new_block(p.as_ptr().cast(), size, Some(alive.clone()));
                        role.held += size;
                        role.mine.push(l);
                    }
                }
                Op::HeapDrop => self.drop_heap(role),
                _ => {}
            }
        }
        true
    }

    /// Drops the role's heap if every live block of it is the role's own:
    /// those go with the heap, unvisited; frees of its blocks that other
    /// roles made may still be gathered in their batches, had they been
    /// batched.
    fn drop_heap(&self, role: &mut Role) {
        let Some((_, alive)) = &role.heap else { return };
        let home = role
            .mine
            .iter()
            .filter(|l| l.heap.as_ref().is_some_and(|a| Arc::ptr_eq(a, alive)))
            .count();
        if alive.load(Ordering::Acquire) != home {
            return;
        }
        let alive = alive.clone();
        let (gone, kept): (Vec<Live>, Vec<Live>) = role
            .mine
            .drain(..)
            .partition(|l| l.heap.as_ref().is_some_and(|a| Arc::ptr_eq(a, &alive)));
        role.mine = kept;
        for l in gone {
            self.verify(&l, "heap block at drop");
            self.unregister(&l);
            role.held -= l.size;
        }
        role.heap = None; // drops the heap: every block of it at once
    }
}

fuzz_target!(|data: &[u8]| {
    let streams = decode(data);
    if streams.is_empty() {
        return;
    }
    let run = Run {
        ranges: Mutex::new(BTreeMap::new()),
        mailboxes: (0..streams.len()).map(|_| Mutex::new(Vec::new())).collect(),
        next_id: AtomicU64::new(1),
    };
    let before = segalloc::stats();
    let heaps: Vec<Option<OwnHeap>> = std::thread::scope(|s| {
        let drivers: Vec<_> = streams
            .iter()
            .enumerate()
            .map(|(me, ops)| {
                let run = &run;
                // The driver only spawns and joins: it never calls segalloc.
                s.spawn(move || {
                    let mut role = Role::default();
                    loop {
                        let t = s.spawn(move || {
                            let done = run.run_role(me, ops, &mut role);
                            if done {
                                for l in role.mine.drain(..) {
                                    run.free(l);
                                }
                                role.held = 0;
                            }
                            (done, role)
                        });
                        // Joined by hand: this waits for the thread's exit
                        // (its heap handed over), not just its closure.
                        let (done, r) = t.join().unwrap();
                        role = r;
                        if done {
                            return role.heap;
                        }
                    }
                })
            })
            .collect();
        drivers.into_iter().map(|d| d.join().unwrap()).collect()
    });
    // Blocks sent to a role after it finished, then the heaps (none of whose
    // blocks is live any more).
    for m in &run.mailboxes {
        for l in m.lock().unwrap().drain(..) {
            run.free(l);
        }
    }
    drop(heaps);
    assert!(run.ranges.lock().unwrap().is_empty(), "blocks left live");
    let after = segalloc::stats();
    assert_eq!(
        after.requested, before.requested,
        "requested bytes did not come back"
    );
    assert_eq!(
        after.live_blocks(),
        before.live_blocks(),
        "live blocks did not come back"
    );
    assert_eq!(
        after.committed,
        after.allocated + after.metadata + after.external_fragmentation(),
        "committed != allocated + metadata + external: {after:?}"
    );
});
