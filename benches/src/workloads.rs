//! Whole-program workloads modelled on the programs of mimalloc-bench.
//!
//! Every workload does exactly the same work under every allocator: the
//! request stream comes from seeded [`Rng`]s, and each thread's decisions
//! depend only on its own generator, never on scheduling. Each returns a
//! checksum (usually the wrapping sum of the tags of all freed [`Obj`]s) that
//! must be identical across allocators; the runner checks that, so the work
//! cannot be optimised away or silently corrupted.

use crate::obj::Obj;
use crate::rng::Rng;
use std::alloc::{alloc, dealloc, handle_alloc_error, realloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread;

/// Parameters of one workload run.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Worker threads (single-threaded workloads ignore it).
    pub threads: usize,
    /// Multiplier on the amount of work; 1.0 is the default size.
    pub scale: f64,
    /// Live heap in bytes, used only by the `heap` scaling workload.
    pub heap: usize,
}

/// A named workload.
pub struct Workload {
    /// Name used on the command line and in tables.
    pub name: &'static str,
    /// Whether it uses `Params::threads`.
    pub multithreaded: bool,
    /// One-line description of what it models.
    pub about: &'static str,
    /// Runs the workload and returns its checksum.
    pub run: fn(&Params) -> u64,
}

/// Workloads of the default whole-program comparison, in report order.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "larson",
        multithreaded: true,
        about: "server: short-lived threads replace random objects in arrays inherited from other threads",
        run: larson,
    },
    Workload {
        name: "shared-table",
        multithreaded: true,
        about: "threads swap new 16 B-1 KiB objects into random slots of a shared AtomicPtr table and free what they get back",
        run: shared_table,
    },
    Workload {
        name: "xmalloc",
        multithreaded: true,
        about: "producer threads allocate, consumer threads free (all frees are cross-thread)",
        run: xmalloc,
    },
    Workload {
        name: "threadchurn",
        multithreaded: true,
        about: "thousands of short threads, each allocating a little and handing some objects back",
        run: thread_churn,
    },
    Workload {
        name: "thread-waves",
        multithreaded: true,
        about: "waves of short threads allocate thousands of objects each and hand most to main, which frees them during the next wave",
        run: thread_waves,
    },
    Workload {
        name: "cache-scratch",
        multithreaded: true,
        about: "threads free an object allocated by main, then write their own small objects (allocator-induced false sharing)",
        run: cache_scratch,
    },
    Workload {
        name: "cache-thrash",
        multithreaded: true,
        about: "threads repeatedly allocate and write small objects (false sharing between threads' blocks)",
        run: cache_thrash,
    },
    Workload {
        name: "mstress",
        multithreaded: true,
        about: "rptest/mstress: log-random sizes 16 B-16 KiB, live set swinging 1/8x-1x, some cross-thread frees",
        run: mstress,
    },
    Workload {
        name: "glibc-thread",
        multithreaded: true,
        about: "glibc bench-malloc-thread: each thread replaces random 64 B objects in its own working set",
        run: glibc_thread,
    },
    Workload {
        name: "realloc-large",
        multithreaded: false,
        about: "four interleaved buffers grown by realloc from 4 KiB to 32 MiB, contents verified",
        run: realloc_large,
    },
    Workload {
        name: "vec-grow-shrink",
        multithreaded: true,
        about: "Vec<u64>s pushed from empty to 8 MiB then truncated and shrink_to_fit, among many small Vec<u8>s growing and shrinking",
        run: vec_grow_shrink,
    },
    Workload {
        name: "fragment",
        multithreaded: false,
        about: "fill with small objects, free 90%, then allocate larger objects; survivors pile up",
        run: fragment,
    },
];

/// The live-heap scaling workload (used by `--scaling`, not in the default table).
pub const HEAP: Workload = Workload {
    name: "heap",
    multithreaded: false,
    about: "fill a live heap of the requested size with 16-1024 B objects, then churn a fixed number of them",
    run: heap,
};

/// Looks a workload up by name, including [`HEAP`].
pub fn find(name: &str) -> Option<&'static Workload> {
    WORKLOADS
        .iter()
        .chain(std::iter::once(&HEAP))
        .find(|w| w.name == name)
}

fn scaled(base: usize, scale: f64) -> usize {
    ((base as f64 * scale).round() as usize).max(1)
}

/// Seed for thread/chunk `a` in round `b`, distinct for every pair.
fn seed(a: usize, b: usize) -> u64 {
    ((a as u64) << 32) ^ b as u64 ^ 0x5EED
}

fn free_all(objs: impl IntoIterator<Item = Obj>) -> u64 {
    objs.into_iter().fold(0u64, |s, o| s.wrapping_add(o.free()))
}

fn join_sum(handles: Vec<thread::JoinHandle<u64>>) -> u64 {
    handles.into_iter().fold(0u64, |s, h| {
        s.wrapping_add(h.join().expect("workload thread panicked"))
    })
}

/// larson: each round spawns fresh threads that take over the previous
/// round's arrays, so most frees hit blocks allocated by a thread that has
/// already exited.
fn larson(p: &Params) -> u64 {
    const SLOTS: usize = 1000;
    const ROUNDS: usize = 40;
    let t = p.threads;
    let ops = (scaled(40_000_000, p.scale) / (ROUNDS * t)).max(1);
    // The main thread allocates the first generation, as in larson.
    let mut chunks: Vec<Vec<Obj>> = (0..t)
        .map(|c| {
            let mut r = Rng::new(seed(c, 0));
            (0..SLOTS)
                .map(|_| Obj::new(r.range(16, 1000), r.next_u64()))
                .collect()
        })
        .collect();
    let mut sum = 0u64;
    for round in 1..=ROUNDS {
        let handles: Vec<_> = chunks
            .into_iter()
            .enumerate()
            .map(|(c, mut chunk)| {
                thread::spawn(move || {
                    let mut r = Rng::new(seed(c, round));
                    let mut s = 0u64;
                    for _ in 0..ops {
                        let old = chunk.swap_remove(r.below(SLOTS));
                        s = s.wrapping_add(old.free());
                        chunk.push(Obj::new(r.range(16, 1000), r.next_u64()));
                    }
                    (chunk, s)
                })
            })
            .collect();
        chunks = handles
            .into_iter()
            .map(|h| {
                let (chunk, s) = h.join().expect("larson thread panicked");
                sum = sum.wrapping_add(s);
                chunk
            })
            .collect();
        // Hand each array to a different thread slot next round.
        chunks.rotate_left(1);
    }
    sum.wrapping_add(free_all(chunks.into_iter().flatten()))
}

/// Size of a `shared-table` object, derived from its tag so that whichever
/// thread swaps it out can rebuild the [`Obj`] from a thin pointer:
/// log-distributed over 16 B-1 KiB (six power-of-two bands).
fn table_size(tag: u64) -> usize {
    let lo = 16usize << ((tag >> 32) % 6);
    lo + ((tag >> 40) as usize & (lo - 1))
}

fn table_obj(tag: u64) -> *mut u8 {
    Obj::new(table_size(tag), tag).into_raw()
}

/// Verifies and frees a `shared-table` object, returning its tag.
///
/// # Safety
///
/// `ptr` must come from [`table_obj`] and be owned by the caller.
unsafe fn table_free(ptr: *mut u8) -> u64 {
    // SAFETY: the block is live and starts with its tag (caller's contract).
    let tag = unsafe { ptr.cast::<u64>().read() };
    // SAFETY: table_obj made the block with exactly this size; Obj::free
    // also checks the last byte, which a wrong size or block would miss.
    unsafe { Obj::from_raw(ptr, table_size(tag)) }.free()
}

/// Shared table: threads replace each other's boxes. The table's slots are
/// `AtomicPtr`s; each thread allocates a new object, swaps it into a random
/// slot and frees the one it got back, which another thread allocated in
/// (threads-1)/threads of the cases. Which object a thread gets depends on
/// scheduling, but every object is freed exactly once (the main thread
/// drains the table at the end), so the sum of tags is fixed.
fn shared_table(p: &Params) -> u64 {
    const SLOTS: usize = 16 * 1024;
    let t = p.threads;
    let ops = scaled(5_000_000, p.scale) / t;
    let mut r = Rng::new(seed(0, 7));
    let table: Vec<AtomicPtr<u8>> = (0..SLOTS)
        .map(|_| AtomicPtr::new(table_obj(r.next_u64())))
        .collect();
    let sum = thread::scope(|sc| {
        let table = &table;
        let handles: Vec<_> = (0..t)
            .map(|id| {
                sc.spawn(move || {
                    let mut r = Rng::new(seed(id, 8));
                    let mut s = 0u64;
                    for _ in 0..ops {
                        let new = table_obj(r.next_u64());
                        // AcqRel: publish the new object's contents, and see
                        // those of the old one written by another thread.
                        let old = table[r.below(SLOTS)].swap(new, Ordering::AcqRel);
                        // SAFETY: the swap made this thread the only owner.
                        s = s.wrapping_add(unsafe { table_free(old) });
                    }
                    s
                })
            })
            .collect();
        handles.into_iter().fold(0u64, |s, h| {
            s.wrapping_add(h.join().expect("shared-table thread panicked"))
        })
    });
    table.into_iter().fold(sum, |s, slot| {
        // SAFETY: all threads are joined; the table owns what is left.
        s.wrapping_add(unsafe { table_free(slot.into_inner()) })
    })
}

/// xmalloc: producers allocate batches and send them to consumers, which free
/// them; the bounded channel keeps the live set small and steady.
fn xmalloc(p: &Params) -> u64 {
    const BATCH: usize = 128;
    let producers = (p.threads / 2).max(1);
    let consumers = (p.threads - producers).max(1);
    let total = scaled(8_000_000, p.scale);
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..consumers)
        .map(|_| mpsc::sync_channel::<Vec<Obj>>(32))
        .unzip();
    let mut handles = Vec::new();
    for rx in receivers {
        handles.push(thread::spawn(move || {
            rx.into_iter()
                .fold(0u64, |s, batch| s.wrapping_add(free_all(batch)))
        }));
    }
    for id in 0..producers {
        let senders = senders.clone();
        let count = total / producers + usize::from(id < total % producers);
        handles.push(thread::spawn(move || {
            let mut r = Rng::new(seed(id, 1));
            let mut left = count;
            let mut next = id;
            while left > 0 {
                let n = left.min(BATCH);
                let batch: Vec<Obj> = (0..n)
                    .map(|_| Obj::new(r.log_size(16, 1024), r.next_u64()))
                    .collect();
                senders[next % senders.len()]
                    .send(batch)
                    .expect("consumer hung up");
                next += 1;
                left -= n;
            }
            0
        }));
    }
    // Consumers stop once every producer's sender clone is dropped.
    drop(senders);
    join_sum(handles)
}

/// Thread churn: waves of `threads` short-lived threads; each does a little
/// work and returns a few live objects that the main thread frees.
fn thread_churn(p: &Params) -> u64 {
    const OPS: usize = 1000;
    const LIVE: usize = 64;
    const RETURNED: usize = 16;
    let total = scaled(6000, p.scale);
    let mut sum = 0u64;
    let mut started = 0;
    while started < total {
        let wave = p.threads.min(total - started);
        let handles: Vec<_> = (started..started + wave)
            .map(|id| {
                thread::spawn(move || {
                    let mut r = Rng::new(seed(id, 2));
                    let mut live: Vec<Obj> = (0..LIVE)
                        .map(|_| Obj::new(r.log_size(16, 2048), r.next_u64()))
                        .collect();
                    let mut s = 0u64;
                    for _ in 0..OPS {
                        s = s.wrapping_add(live.swap_remove(r.below(LIVE)).free());
                        live.push(Obj::new(r.log_size(16, 2048), r.next_u64()));
                    }
                    let keep = live.split_off(LIVE - RETURNED);
                    (s.wrapping_add(free_all(live)), keep)
                })
            })
            .collect();
        for h in handles {
            let (s, keep) = h.join().expect("churn thread panicked");
            sum = sum.wrapping_add(s).wrapping_add(free_all(keep));
        }
        started += wave;
    }
    sum
}

/// Thread waves: blocks that outlive their thread. Waves of `threads`
/// short-lived threads each allocate a few thousand 16 B-1 KiB objects while
/// churning a small scratch set of their own, free an eighth of the objects
/// and hand the rest to the main thread as they exit. The main thread frees
/// one wave's objects while the next wave is running, so those frees go to
/// the heaps of exited threads while new threads allocate.
fn thread_waves(p: &Params) -> u64 {
    const BLOCKS: usize = 4000;
    const SCRATCH: usize = 32;
    let total = scaled(800, p.scale);
    let mut sum = 0u64;
    let mut prev: Vec<Vec<Obj>> = Vec::new();
    let mut started = 0;
    while started < total {
        let wave = p.threads.min(total - started);
        let handles: Vec<_> = (started..started + wave)
            .map(|id| {
                thread::spawn(move || {
                    let mut r = Rng::new(seed(id, 9));
                    let mut scratch: Vec<Obj> = (0..SCRATCH)
                        .map(|_| Obj::new(r.log_size(16, 1024), r.next_u64()))
                        .collect();
                    let mut kept = Vec::with_capacity(BLOCKS);
                    let mut s = 0u64;
                    for _ in 0..BLOCKS {
                        kept.push(Obj::new(r.log_size(16, 1024), r.next_u64()));
                        let old = std::mem::replace(
                            &mut scratch[r.below(SCRATCH)],
                            Obj::new(r.log_size(16, 1024), r.next_u64()),
                        );
                        s = s.wrapping_add(old.free());
                    }
                    // Free a random eighth here, leaving holes; main gets the rest.
                    let mut handed = Vec::with_capacity(BLOCKS);
                    for o in kept {
                        if r.below(8) == 0 {
                            s = s.wrapping_add(o.free());
                        } else {
                            handed.push(o);
                        }
                    }
                    (s.wrapping_add(free_all(scratch)), handed)
                })
            })
            .collect();
        // Free the previous wave's objects while this wave runs.
        sum = sum.wrapping_add(free_all(prev.drain(..).flatten()));
        for h in handles {
            let (s, handed) = h.join().expect("wave thread panicked");
            sum = sum.wrapping_add(s);
            prev.push(handed);
        }
        started += wave;
    }
    sum.wrapping_add(free_all(prev.into_iter().flatten()))
}

// Per-thread work of the cache workloads: `objects` times, allocate an
// 8-byte object, increment each byte `REPS` times, free it.
// Separate heap blocks are the point, so Vec<Box<_>> is intended.
#[allow(clippy::vec_box)]
fn cache_work(objects: usize, firsts: Vec<Box<[u8; 8]>>) -> u64 {
    const REPS: usize = 800_000;
    drop(firsts);
    let mut s = 0u64;
    for _ in 0..objects {
        let mut b = Box::new([0u8; 8]);
        let p = b.as_mut_ptr();
        for _ in 0..REPS {
            for j in 0..8 {
                // Volatile so every write reaches the cache line: the point
                // is to expose false sharing between threads' blocks.
                // SAFETY: j < 8, the box is live.
                unsafe {
                    let q = p.add(j);
                    q.write_volatile(q.read_volatile().wrapping_add(1));
                }
            }
        }
        s = b.iter().fold(s, |s, &x| s.wrapping_add(u64::from(x)));
    }
    s
}

// Separate heap blocks are the point, so Vec<Box<_>> is intended.
#[allow(clippy::vec_box)]
fn cache(p: &Params, scratch: bool) -> u64 {
    const FIRSTS: usize = 8;
    let t = p.threads;
    let objects = scaled(1000, p.scale) / t;
    // cache-scratch: the main thread allocates small objects back to back
    // and deals them out round-robin, so each thread's objects sit between
    // other threads' ones. Each thread frees them first; an allocator that
    // reuses that memory for the thread's own objects makes the threads
    // write to shared cache lines.
    let mut firsts: Vec<Vec<Box<[u8; 8]>>> = (0..t).map(|_| Vec::new()).collect();
    if scratch {
        for i in 0..t * FIRSTS {
            firsts[i % t].push(Box::new([0u8; 8]));
        }
    }
    let handles: Vec<_> = firsts
        .into_iter()
        .map(|f| thread::spawn(move || cache_work(objects, f)))
        .collect();
    join_sum(handles)
}

fn cache_scratch(p: &Params) -> u64 {
    cache(p, true)
}

fn cache_thrash(p: &Params) -> u64 {
    cache(p, false)
}

/// mstress / rptest: random log-distributed sizes with a live set that swings
/// between 1/8 and all of `SLOTS`; a few objects are passed to the next
/// thread through a mailbox and freed there. A thread that is done keeps
/// emptying its mailbox until every thread is: before 2026-11-28 it did not,
/// and when one thread finished first, the objects sent to it piled up
/// until the end, so the peak RSS swung from 30-70 MiB to 170-370 MiB with
/// the scheduling, under every allocator.
fn mstress(p: &Params) -> u64 {
    const SLOTS: usize = 4096;
    const PERIOD: usize = 100_000;
    let t = p.threads;
    let ops = scaled(12_000_000, p.scale) / t;
    let mailboxes: Vec<Mutex<Vec<Obj>>> = (0..t).map(|_| Mutex::new(Vec::new())).collect();
    let done = AtomicUsize::new(0);
    let sum = thread::scope(|sc| {
        let mailboxes = &mailboxes;
        let done = &done;
        let handles: Vec<_> = (0..t)
            .map(|id| {
                sc.spawn(move || {
                    let mut r = Rng::new(seed(id, 3));
                    let mut live: Vec<Obj> = Vec::with_capacity(SLOTS);
                    let mut s = 0u64;
                    for op in 0..ops {
                        // Triangle wave between SLOTS/8 and SLOTS.
                        let phase = op % PERIOD;
                        let tri = if phase < PERIOD / 2 {
                            phase
                        } else {
                            PERIOD - phase
                        };
                        let target = SLOTS / 8 + tri * (SLOTS - SLOTS / 8) * 2 / PERIOD;
                        let grow = if live.len() < target {
                            r.below(4) != 0
                        } else {
                            r.below(4) == 0
                        };
                        if grow || live.is_empty() {
                            live.push(Obj::new(r.log_size(16, 16 * 1024), r.next_u64()));
                        } else {
                            let i = r.below(live.len());
                            s = s.wrapping_add(live.swap_remove(i).free());
                        }
                        if op % 256 == 255 {
                            let give = 16.min(live.len());
                            let out: Vec<Obj> = (0..give)
                                .map(|_| live.swap_remove(r.below(live.len())))
                                .collect();
                            mailboxes[(id + 1) % t].lock().unwrap().extend(out);
                            // Free what others sent us outside the lock.
                            let inbox = std::mem::take(&mut *mailboxes[id].lock().unwrap());
                            s = s.wrapping_add(free_all(inbox));
                        }
                    }
                    s = s.wrapping_add(free_all(live));
                    done.fetch_add(1, Ordering::AcqRel);
                    while done.load(Ordering::Acquire) < t {
                        let inbox = std::mem::take(&mut *mailboxes[id].lock().unwrap());
                        s = s.wrapping_add(free_all(inbox));
                        thread::yield_now();
                    }
                    s
                })
            })
            .collect();
        handles.into_iter().fold(0u64, |s, h| {
            s.wrapping_add(h.join().expect("mstress thread panicked"))
        })
    });
    let rest = mailboxes
        .into_iter()
        .map(|m| free_all(m.into_inner().unwrap()))
        .fold(0u64, u64::wrapping_add);
    sum.wrapping_add(rest)
}

/// glibc bench-malloc-thread: each thread replaces random fixed-size (64 B)
/// objects in its own working set; pure fast-path throughput.
fn glibc_thread(p: &Params) -> u64 {
    const SLOTS: usize = 4096;
    const SIZE: usize = 64;
    let t = p.threads;
    let ops = scaled(80_000_000, p.scale) / t;
    let handles: Vec<_> = (0..t)
        .map(|id| {
            thread::spawn(move || {
                let mut r = Rng::new(seed(id, 4));
                let mut slots: Vec<Option<Obj>> = (0..SLOTS).map(|_| None).collect();
                let mut s = 0u64;
                for _ in 0..ops {
                    let i = r.below(SLOTS);
                    if let Some(o) = slots[i].take() {
                        s = s.wrapping_add(o.free());
                    }
                    slots[i] = Some(Obj::new(SIZE, r.next_u64()));
                }
                s.wrapping_add(free_all(slots.into_iter().flatten()))
            })
        })
        .collect();
    join_sum(handles)
}

/// Large-object realloc growth: four buffers grown in turn by 1.5x from
/// 4 KiB to 32 MiB (interleaved so none sits alone at the top of the heap),
/// writing one byte per new page and verifying every page at the end.
fn realloc_large(p: &Params) -> u64 {
    const BUFS: usize = 4;
    const START: usize = 4096;
    const MAX: usize = 32 << 20;
    const PAGE: usize = 4096;
    let layout = |size: usize| Layout::from_size_align(size, 16).expect("valid layout");
    let mark = |page: usize, buf: usize| (page.wrapping_mul(131) ^ buf) as u8;
    let mut sum = 0u64;
    for _ in 0..scaled(10, p.scale) {
        let mut bufs: Vec<(*mut u8, usize)> = (0..BUFS)
            .map(|b| {
                // SAFETY: non-zero size.
                let ptr = unsafe { alloc(layout(START)) };
                if ptr.is_null() {
                    handle_alloc_error(layout(START));
                }
                // SAFETY: START >= PAGE... only page 0 is written.
                unsafe { ptr.write(mark(0, b)) };
                (ptr, START)
            })
            .collect();
        while bufs.iter().any(|&(_, size)| size < MAX) {
            for (b, (ptr, size)) in bufs.iter_mut().enumerate() {
                if *size >= MAX {
                    continue;
                }
                let new = (*size * 3 / 2).next_multiple_of(64).min(MAX);
                // SAFETY: ptr is live with layout(size); new is non-zero.
                let np = unsafe { realloc(*ptr, layout(*size), new) };
                if np.is_null() {
                    handle_alloc_error(layout(new));
                }
                for page in size.div_ceil(PAGE)..new.div_ceil(PAGE) {
                    // SAFETY: page * PAGE < new.
                    unsafe { np.add(page * PAGE).write(mark(page, b)) };
                }
                *ptr = np;
                *size = new;
            }
        }
        for (b, (ptr, size)) in bufs.into_iter().enumerate() {
            for page in 0..size.div_ceil(PAGE) {
                // SAFETY: page * PAGE < size.
                let v = unsafe { ptr.add(page * PAGE).read() };
                assert_eq!(v, mark(page, b), "realloc lost data");
                sum = sum.wrapping_add(u64::from(v));
            }
            // SAFETY: allocated above with this layout.
            unsafe { dealloc(ptr, layout(size)) };
        }
    }
    sum
}

fn big_val(key: u64, j: usize) -> u64 {
    key ^ (j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn small_val(key: u64, j: usize) -> u8 {
    (key.wrapping_add((j as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)) >> 56) as u8
}

/// Checks every element of a vector against `val` and returns their sum.
fn verify_vec<T: Copy + Into<u64> + PartialEq>(
    v: &[T],
    key: u64,
    val: impl Fn(u64, usize) -> T,
) -> u64 {
    let mut ok = true;
    let mut s = 0u64;
    for (j, &x) in v.iter().enumerate() {
        ok &= x == val(key, j);
        s = s.wrapping_add(x.into());
    }
    assert!(ok, "vector contents corrupted");
    s
}

/// One thread of `vec-grow-shrink`: `cycles` times, one of the big vectors
/// reaches 8 MiB and is cut back.
fn vec_grow_shrink_thread(id: usize, cycles: usize) -> u64 {
    const BIG: usize = 4;
    const MAX: usize = (8 << 20) / 8;
    const CHUNK: usize = 8192;
    const SMALL: usize = 1000;
    const SMALL_MAX: usize = 4096;
    const SMALL_OPS: usize = 256;
    let mut r = Rng::new(seed(id, 10));
    let mut big: Vec<(Vec<u64>, u64)> = (0..BIG).map(|_| (Vec::new(), r.next_u64())).collect();
    let mut small: Vec<(Vec<u8>, u64)> = (0..SMALL).map(|_| (Vec::new(), r.next_u64())).collect();
    let mut s = 0u64;
    let mut done = 0;
    while done < cycles {
        // Each big vector gets a random number of pushes, so they drift out
        // of phase and one is cut back while others are large.
        for (v, key) in &mut big {
            let n = r.range(1, 2 * CHUNK).min(MAX - v.len());
            for j in v.len()..v.len() + n {
                v.push(big_val(*key, j));
            }
            if v.len() == MAX && done < cycles {
                s = s.wrapping_add(verify_vec(v, *key, big_val));
                // Keep 0 or a power of two up to 2 KiB, so regrowth by
                // doubling lands on exactly 8 MiB again.
                let keep = if r.below(4) == 0 { 0 } else { 1 << r.below(9) };
                v.truncate(keep);
                v.shrink_to_fit();
                s = s.wrapping_add(verify_vec(v, *key, big_val));
                done += 1;
            }
        }
        for _ in 0..SMALL_OPS {
            let (v, key) = &mut small[r.below(SMALL)];
            match r.below(16) {
                0..=11 => {
                    let n = r.range(1, 512).min(SMALL_MAX - v.len());
                    for j in v.len()..v.len() + n {
                        v.push(small_val(*key, j));
                    }
                }
                12..=14 => {
                    s = s.wrapping_add(verify_vec(v, *key, small_val));
                    v.truncate(r.below(v.len() + 1));
                    v.shrink_to_fit();
                }
                _ => {
                    s = s.wrapping_add(verify_vec(v, *key, small_val));
                    *v = Vec::new();
                    *key = r.next_u64();
                }
            }
        }
    }
    for (v, key) in big {
        s = s.wrapping_add(verify_vec(&v, key, big_val));
    }
    for (v, key) in small {
        s = s.wrapping_add(verify_vec(&v, key, small_val));
    }
    s
}

/// Vec growth and shrink: per thread, four `Vec<u64>`s grow by `push` from
/// empty to 8 MiB (reallocation by doubling) and are then truncated and
/// shrunk with `shrink_to_fit` (an 8 MiB block reallocated down to at most
/// 2 KiB, or freed), while 1000 small `Vec<u8>`s grow by pushes of up to
/// 512 bytes (to at most 4 KiB), are truncated and shrunk, or replaced.
/// Every vector's contents are checked before it is cut back or dropped.
fn vec_grow_shrink(p: &Params) -> u64 {
    let t = p.threads;
    let cycles = scaled(64, p.scale);
    let handles: Vec<_> = (0..t)
        .map(|id| {
            let n = cycles / t + usize::from(id < cycles % t);
            thread::spawn(move || vec_grow_shrink_thread(id, n))
        })
        .collect();
    join_sum(handles)
}

/// Fragmentation: each round fills the heap with small objects, frees 90% of
/// them (keeping random survivors pinned until the end), then allocates
/// larger objects of the same total volume, which can only reuse the holes if
/// the allocator returns or coalesces partly empty small-object memory.
fn fragment(p: &Params) -> u64 {
    const ROUNDS: usize = 4;
    let per_round = scaled(1_000_000, p.scale);
    let mut r = Rng::new(seed(0, 5));
    let mut survivors: Vec<Obj> = Vec::new();
    let mut large: Vec<Obj> = Vec::new();
    let mut sum = 0u64;
    for _ in 0..ROUNDS {
        let small: Vec<Obj> = (0..per_round)
            .map(|_| Obj::new(r.range(16, 128), r.next_u64()))
            .collect();
        let mut freed = 0usize;
        for o in small {
            if r.below(10) == 0 {
                survivors.push(o);
            } else {
                freed += o.size();
                sum = sum.wrapping_add(o.free());
            }
        }
        let mut bytes = 0usize;
        while bytes < freed {
            let o = Obj::new(r.range(512, 4096), r.next_u64());
            bytes += o.size();
            large.push(o);
        }
    }
    black_box(large.len());
    sum.wrapping_add(free_all(large))
        .wrapping_add(free_all(survivors))
}

/// Live-heap scaling: fill `Params::heap` bytes with 16-1024 B objects, then
/// replace a fixed number of random ones, so extra time reflects the cost of
/// a larger heap (cache and TLB misses, metadata size).
fn heap(p: &Params) -> u64 {
    let mut r = Rng::new(seed(0, 6));
    let mut live: Vec<Obj> = Vec::with_capacity(p.heap / 520 + 1);
    let mut bytes = 0usize;
    while bytes < p.heap {
        let o = Obj::new(r.range(16, 1024), r.next_u64());
        bytes += o.size();
        live.push(o);
    }
    let mut sum = 0u64;
    for _ in 0..scaled(2_000_000, p.scale) {
        let i = r.below(live.len());
        sum = sum.wrapping_add(live.swap_remove(i).free());
        live.push(Obj::new(r.range(16, 1024), r.next_u64()));
    }
    sum.wrapping_add(free_all(live))
}
