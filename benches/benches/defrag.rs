//! Criterion benchmark of `segalloc::defrag::should_move`, the question a
//! defragmenting program asks of every block it visits: for a block of a
//! sparse page (true), of the current page (false), of another thread's
//! sparse page, and a large block (false), and the relocation of a 64-byte
//! box that stays put. Run with `cargo bench -p segalloc-bench --bench defrag`.

use criterion::{criterion_group, criterion_main, Criterion};
use segalloc::defrag::{should_move, Relocate};
use std::hint::black_box;
use std::sync::mpsc;
use std::time::Duration;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

/// 64-byte boxes, all but one in 8 freed: pages 1/8 full.
#[allow(clippy::vec_box)] // the boxes are the blocks asked about
fn scattered() -> Vec<Box<[u8; 64]>> {
    let mut v: Vec<Box<[u8; 64]>> = (0..8192).map(|i| Box::new([i as u8; 64])).collect();
    let mut i = 0;
    v.retain(|_| {
        i += 1;
        i % 8 == 0
    });
    v
}

fn addr(b: &[u8; 64]) -> *const u8 {
    b.as_ptr()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("should_move");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let v = scattered();
    let current = Box::new([0u8; 64]);
    // SAFETY (all calls below): live blocks of segalloc, the global allocator.
    let sparse = v
        .iter()
        .find(|b| unsafe { should_move(addr(b)) })
        .expect("a block in a sparse page");
    assert!(!unsafe { should_move(addr(&current)) });
    g.bench_function("sparse page (true)", |b| {
        b.iter(|| unsafe { should_move(black_box(addr(sparse))) })
    });
    g.bench_function("current page (false)", |b| {
        b.iter(|| unsafe { should_move(black_box(addr(&current))) })
    });
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let owner = std::thread::spawn(move || {
        tx.send(scattered()).unwrap();
        stop_rx.recv().unwrap();
    });
    let theirs = rx.recv().unwrap();
    let other = theirs
        .iter()
        .find(|b| unsafe { should_move(addr(b)) })
        .expect("a block in another thread's sparse page");
    g.bench_function("another thread's sparse page (true)", |b| {
        b.iter(|| unsafe { should_move(black_box(addr(other))) })
    });
    let large = vec![0u8; segalloc::LARGE_THRESHOLD * 2];
    g.bench_function("large block (false)", |b| {
        b.iter(|| unsafe { should_move(black_box(large.as_ptr())) })
    });
    let mut stay = Box::new([1u8; 64]);
    g.bench_function("relocate a Box that stays", |b| {
        b.iter(|| black_box(&mut stay).relocate())
    });
    g.finish();
    stop_tx.send(()).unwrap();
    owner.join().unwrap();
    drop(theirs);
}

criterion_group!(benches, bench);
criterion_main!(benches);
