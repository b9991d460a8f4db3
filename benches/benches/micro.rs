//! Criterion micro benchmarks: segalloc vs System vs mimalloc vs jemalloc.
//!
//! Every group measures all four allocators in the same run so their ratios
//! are comparable. Raw groups call each allocator's `GlobalAlloc` impl
//! directly; collection groups (Vec, Box, String, HashMap, BTreeMap) go
//! through the [`Dispatch`] global allocator, with the selector flipped only
//! inside one measured iteration that builds and drops the whole structure.
//! Run with `cargo bench -p segalloc-bench --bench micro [-- FILTER]`.

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use segalloc_bench::dispatch::with_allocator;
use segalloc_bench::{Alloc, Dispatch};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::hint::black_box;
use std::time::Duration;

#[global_allocator]
static GLOBAL: Dispatch = Dispatch;

const SIZES: [usize; 9] = [
    16,
    64,
    256,
    1 << 10,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
];

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("valid layout")
}

/// One alloc immediately followed by its free: the fast path.
fn alloc_free<A: GlobalAlloc>(b: &mut criterion::Bencher, a: &A, size: usize) {
    let l = layout(size);
    b.iter(|| {
        // SAFETY: non-zero layout; the block is freed with the same layout.
        unsafe {
            // black_box keeps LLVM from pairing up and deleting malloc/free.
            let p = black_box(a.alloc(l));
            assert!(!p.is_null());
            p.write(1);
            a.dealloc(p, l);
        }
    });
}

/// Allocate `BATCH` blocks, then free them all in allocation order.
fn batch<A: GlobalAlloc>(b: &mut criterion::Bencher, a: &A, size: usize) {
    let l = layout(size);
    // Allocated once, outside the measurement, by the default (System) heap.
    let mut ptrs: Vec<*mut u8> = Vec::with_capacity(BATCH);
    b.iter(|| {
        // SAFETY: every block is allocated and freed with layout `l`.
        unsafe {
            for _ in 0..BATCH {
                let p = a.alloc(l);
                assert!(!p.is_null());
                p.write(1);
                ptrs.push(p);
            }
            for p in ptrs.drain(..) {
                a.dealloc(black_box(p), l);
            }
        }
    });
}
const BATCH: usize = 1000;

/// Grow one block by doubling from 16 B to 1 MiB with `realloc`, then free it.
fn realloc_growth<A: GlobalAlloc>(b: &mut criterion::Bencher, a: &A, _: ()) {
    b.iter(|| {
        // SAFETY: the block is always passed back with its current layout.
        unsafe {
            let mut size = 16;
            let mut p = a.alloc(layout(size));
            assert!(!p.is_null());
            p.write(1);
            while size < 1 << 20 {
                p = a.realloc(p, layout(size), size * 2);
                assert!(!p.is_null());
                size *= 2;
                p.add(size - 1).write(1);
            }
            a.dealloc(black_box(p), layout(size));
        }
    });
}

fn configure(g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    // Short windows keep the whole suite to a few minutes.
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
}

// Expands one group that runs `$f` against each allocator's concrete type,
// so every call is statically dispatched.
macro_rules! raw_group {
    ($c:expr, $name:expr, $thr:expr, $f:ident, $arg:expr) => {{
        let mut g = $c.benchmark_group($name);
        configure(&mut g);
        g.throughput($thr);
        g.bench_function("segalloc", |b| $f(b, &segalloc::SegAlloc, $arg));
        g.bench_function("mimalloc", |b| $f(b, &mimalloc::MiMalloc, $arg));
        g.bench_function("jemalloc", |b| $f(b, &tikv_jemallocator::Jemalloc, $arg));
        g.bench_function("system", |b| $f(b, &System, $arg));
        g.finish();
    }};
}

fn raw(c: &mut Criterion) {
    for size in SIZES {
        raw_group!(
            c,
            format!("alloc_free/{size}"),
            Throughput::Elements(1),
            alloc_free,
            size
        );
    }
    for size in [16, 256, 4096] {
        raw_group!(
            c,
            format!("batch{BATCH}/{size}"),
            Throughput::Elements(BATCH as u64),
            batch,
            size
        );
    }
    raw_group!(
        c,
        "realloc_growth/16B-1MiB",
        Throughput::Elements(1),
        realloc_growth,
        ()
    );
}

/// Runs `work` under each allocator via the dispatcher. `work` must free
/// everything it allocates and return only plain data.
fn collection_group(c: &mut Criterion, name: &str, elements: u64, work: fn() -> u64) {
    let mut g = c.benchmark_group(name);
    configure(&mut g);
    g.throughput(Throughput::Elements(elements));
    for a in Alloc::ALL {
        g.bench_function(a.name(), |b| b.iter(|| with_allocator(a, work)));
    }
    g.finish();
}

const N: u64 = 10_000;

fn vec_push() -> u64 {
    let mut v = Vec::new();
    for i in 0..N * 10 {
        v.push(black_box(i));
    }
    v.iter().sum()
}

fn box_churn() -> u64 {
    // A ring of 64 live boxes of varying size, replaced round-robin.
    let mut ring: Vec<Box<[u8]>> = (0..64)
        .map(|i| vec![i as u8; 16].into_boxed_slice())
        .collect();
    let mut s = 0u64;
    for i in 0..N as usize {
        let size = (i * 37) % 1024 + 1;
        let new = vec![i as u8; size].into_boxed_slice();
        let old = std::mem::replace(&mut ring[i % 64], new);
        s += old.len() as u64;
    }
    s
}

fn string_build() -> u64 {
    let mut parts: Vec<String> = Vec::new();
    for i in 0..N / 10 {
        let mut s = String::new();
        for j in 0..10 {
            let _ = write!(s, "{i}:{j},");
        }
        parts.push(s);
    }
    let joined = parts.concat();
    joined.len() as u64
}

fn hashmap_churn() -> u64 {
    let mut m: HashMap<u64, Vec<u8>> = HashMap::new();
    for i in 0..N {
        m.insert(i, vec![0; (i % 64) as usize]);
    }
    for i in (0..N).step_by(2) {
        m.remove(&i);
    }
    for i in N..N + N / 2 {
        m.insert(i, vec![1; 8]);
    }
    m.len() as u64
}

fn btreemap_churn() -> u64 {
    let mut m: BTreeMap<u64, u64> = BTreeMap::new();
    for i in 0..N {
        m.insert(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), i);
    }
    for i in (0..N).step_by(2) {
        m.remove(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }
    for i in N..N + N / 2 {
        m.insert(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), i);
    }
    m.len() as u64
}

fn collections(c: &mut Criterion) {
    collection_group(c, "vec_push/100k_u64", N * 10, vec_push);
    collection_group(c, "box_churn/10k", N, box_churn);
    collection_group(c, "string_build/10k", N, string_build);
    collection_group(c, "hashmap_churn/10k", N, hashmap_churn);
    collection_group(c, "btreemap_churn/10k", N, btreemap_churn);
}

// --- First-class heaps and pools: building and dropping a structure of
// many blocks in a `segalloc::Heap` (freed block by block, or all at once by
// dropping the heap) against the global allocators, and `Pool<T>` churn
// against `Box<T>`.

use segalloc::allocator_api2::boxed::Box as HBox;
use segalloc::allocator_api2::vec::Vec as HVec;

const BIG: u64 = 100_000;

/// A map of 100k keys to small vectors (100k + 1 blocks), built and dropped.
fn map_global() -> u64 {
    let mut m: hashbrown::HashMap<u64, Vec<u8>> = hashbrown::HashMap::new();
    for i in 0..BIG {
        m.insert(i, vec![i as u8; 16]);
    }
    m.len() as u64
}

fn map_in_heap(drop_each: bool) -> u64 {
    map_in(&segalloc::Heap::new(), drop_each)
}

fn map_in(heap: &segalloc::Heap, drop_each: bool) -> u64 {
    let mut m = hashbrown::HashMap::new_in(heap);
    for i in 0..BIG {
        let mut v = HVec::with_capacity_in(16, heap);
        v.resize(16, i as u8);
        m.insert(i, v);
    }
    let n = m.len() as u64;
    if drop_each {
        drop(m);
    } else {
        std::mem::forget(m); // the heap's drop frees it all
    }
    n
}

/// A vector of 100k boxed 32-byte nodes, built and dropped.
fn boxes_global() -> u64 {
    let v: Vec<Box<[u64; 4]>> = (0..BIG).map(|i| Box::new([i; 4])).collect();
    v.len() as u64
}

fn boxes_in_heap(drop_each: bool) -> u64 {
    boxes_in(&segalloc::Heap::new(), drop_each)
}

fn boxes_in(heap: &segalloc::Heap, drop_each: bool) -> u64 {
    let mut v = HVec::with_capacity_in(BIG as usize, heap);
    for i in 0..BIG {
        v.push(HBox::new_in([i; 4], heap));
    }
    let n = v.len() as u64;
    if drop_each {
        drop(v);
    } else {
        std::mem::forget(v);
    }
    n
}

/// A ring of 1024 live 48-byte objects replaced round-robin 100k times.
type Obj = [u64; 6];
const RING: usize = 1024;

fn churn_box() -> u64 {
    let mut ring: Vec<Box<Obj>> = (0..RING as u64).map(|i| Box::new([i; 6])).collect();
    let mut s = 0;
    for i in 0..BIG {
        let old = std::mem::replace(&mut ring[i as usize % RING], Box::new([i; 6]));
        s += black_box(old[0]);
    }
    s
}

fn churn_pool() -> u64 {
    let pool = segalloc::Pool::new();
    let mut ring: Vec<segalloc::PoolBox<'_, Obj>> =
        (0..RING as u64).map(|i| pool.alloc([i; 6])).collect();
    let mut s = 0;
    for i in 0..BIG {
        let old = std::mem::replace(&mut ring[i as usize % RING], pool.alloc([i; 6]));
        s += black_box(old[0]);
    }
    s
}

fn churn_heap_box() -> u64 {
    let heap = segalloc::Heap::new();
    let mut ring: Vec<HBox<Obj, &segalloc::Heap>> = (0..RING as u64)
        .map(|i| HBox::new_in([i; 6], &heap))
        .collect();
    let mut s = 0;
    for i in 0..BIG {
        let new = HBox::new_in([i; 6], &heap);
        let old = std::mem::replace(&mut ring[i as usize % RING], new);
        s += black_box(old[0]);
    }
    s
}

fn heaps(c: &mut Criterion) {
    let global = [Alloc::Segalloc, Alloc::Mimalloc];
    type Work = (
        &'static str,
        fn() -> u64,
        fn(bool) -> u64,
        fn(&segalloc::Heap, bool) -> u64,
    );
    let builds: [Work; 2] = [
        ("map_build_drop/100k", map_global, map_in_heap, map_in),
        (
            "boxes_build_drop/100k",
            boxes_global,
            boxes_in_heap,
            boxes_in,
        ),
    ];
    for (name, in_global, in_heap, in_this) in builds {
        let mut g = c.benchmark_group(name);
        configure(&mut g);
        g.throughput(Throughput::Elements(BIG));
        for a in global {
            g.bench_function(format!("global-{}", a.name()), |b| {
                b.iter(|| with_allocator(a, in_global))
            });
        }
        // Nothing here goes through the global allocator (the dispatcher
        // stays on System): the heap maps its own segments.
        g.bench_function("heap-free-each", |b| b.iter(|| in_heap(true)));
        g.bench_function("heap-drop-all", |b| b.iter(|| in_heap(false)));
        // One heap, reset after each build: its pool slot is kept.
        let mut heap = segalloc::Heap::new();
        g.bench_function("heap-reset", |b| {
            b.iter(|| {
                let n = in_this(&heap, false);
                heap.reset();
                n
            })
        });
        g.finish();
    }
    let mut g = c.benchmark_group("churn48/100k");
    configure(&mut g);
    g.throughput(Throughput::Elements(BIG));
    for a in global {
        g.bench_function(format!("box-{}", a.name()), |b| {
            b.iter(|| with_allocator(a, churn_box))
        });
    }
    g.bench_function("heap-box", |b| b.iter(churn_heap_box));
    g.bench_function("pool", |b| b.iter(churn_pool));
    g.finish();
}

criterion_group!(benches, raw, collections, heaps);
criterion_main!(benches);
