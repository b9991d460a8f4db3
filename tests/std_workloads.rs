//! std collections and smart pointers under segalloc, single- and
//! multi-threaded: Vec, String, HashMap, BTreeMap, VecDeque, Box (including
//! trait objects and over-aligned types), Arc/Mutex shared across threads, and
//! collections built on one thread and dropped on another. Every value is
//! recomputed from its key and compared, so corruption fails the test.
mod common;

use common::Rng;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

fn value_for(k: u64) -> String {
    format!("value-{k}-{}", "x".repeat((k % 97) as usize))
}

#[test]
fn vec_of_vecs_mixed_sizes() {
    let mut rng = Rng::new(1);
    let vv: Vec<Vec<u64>> = (0..20_000u64)
        .map(|i| {
            (0..rng.range(0, 300) as u64)
                .map(|j| i * 1000 + j)
                .collect()
        })
        .collect();
    for (i, v) in vv.iter().enumerate() {
        for (j, &x) in v.iter().enumerate() {
            assert_eq!(x, i as u64 * 1000 + j as u64);
        }
    }
    let flat: Vec<u64> = vv.into_iter().flatten().collect();
    assert!(flat.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn hashmap_insert_remove_verify() {
    let mut m: HashMap<u64, String> = HashMap::new();
    for k in 0..100_000 {
        m.insert(k, value_for(k));
    }
    m.retain(|k, _| k % 3 != 0);
    for k in 0..100_000 {
        match m.get(&k) {
            Some(v) => assert_eq!(*v, value_for(k)),
            None => assert_eq!(k % 3, 0, "key {k} lost"),
        }
    }
    m.shrink_to_fit();
    assert_eq!(m.len(), 100_000 - 33_334);
}

#[test]
fn btreemap_and_vecdeque() {
    let mut b: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for k in 0..50_000u64 {
        b.insert(format!("{k:08}"), vec![(k % 251) as u8; (k % 200) as usize]);
    }
    for k in (0..50_000u64).step_by(2) {
        b.remove(&format!("{k:08}"));
    }
    assert_eq!(b.len(), 25_000);
    for (key, v) in &b {
        let k: u64 = key.parse().unwrap();
        assert_eq!(k % 2, 1);
        assert_eq!(v.len(), (k % 200) as usize);
        assert!(v.iter().all(|&x| x == (k % 251) as u8));
    }
    let mut q: VecDeque<Box<[u32]>> = VecDeque::new();
    for i in 0..100_000u32 {
        q.push_back(vec![i; (i % 17) as usize].into_boxed_slice());
        if i % 3 == 0 {
            let f = q.pop_front().unwrap();
            assert!(f.windows(2).all(|w| w[0] == w[1]));
        }
    }
    assert_eq!(q.len(), 100_000 - 33_334);
}

trait Shape {
    fn area(&self) -> f64;
}
struct Sq(f64);
struct Rect(f64, f64, [u64; 32]);
impl Shape for Sq {
    fn area(&self) -> f64 {
        self.0 * self.0
    }
}
impl Shape for Rect {
    fn area(&self) -> f64 {
        self.0 * self.1 + self.2.iter().sum::<u64>() as f64
    }
}

#[repr(align(4096))]
struct PageAligned([u8; 100]);
#[repr(align(128))]
struct CacheAligned(u64);

#[test]
fn boxes_trait_objects_and_overaligned_types() {
    let shapes: Vec<Box<dyn Shape>> = (0..10_000)
        .map(|i| -> Box<dyn Shape> {
            if i % 2 == 0 {
                Box::new(Sq(i as f64))
            } else {
                Box::new(Rect(i as f64, 2.0, [1; 32]))
            }
        })
        .collect();
    let total: f64 = shapes.iter().map(|s| s.area()).sum();
    let expect: f64 = (0..10_000)
        .map(|i| {
            let i = i as f64;
            if i as u64 % 2 == 0 {
                i * i
            } else {
                i * 2.0 + 32.0
            }
        })
        .sum();
    assert_eq!(total, expect);

    let pages: Vec<Box<PageAligned>> = (0..200u8)
        .map(|i| Box::new(PageAligned([i; 100])))
        .collect();
    for (i, p) in pages.iter().enumerate() {
        assert_eq!(&**p as *const PageAligned as usize % 4096, 0);
        assert!(p.0.iter().all(|&b| b == i as u8));
    }
    let lines: Vec<Box<CacheAligned>> = (0..10_000).map(|i| Box::new(CacheAligned(i))).collect();
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(&**l as *const CacheAligned as usize % 128, 0);
        assert_eq!(l.0, i as u64);
    }
}

#[test]
fn arc_shared_across_threads() {
    // Shared read-only data, per-thread results returned through join and
    // dropped on the main thread (cross-thread frees).
    let shared: Arc<Vec<String>> = Arc::new((0..10_000).map(value_for).collect());
    let handles: Vec<_> = (0..8u64)
        .map(|t| {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                let mut m: HashMap<u64, String> = HashMap::new();
                for k in (t..10_000).step_by(8) {
                    assert_eq!(shared[k as usize], value_for(k));
                    m.insert(k, shared[k as usize].to_uppercase());
                }
                m
            })
        })
        .collect();
    let mut seen = 0;
    for (t, h) in handles.into_iter().enumerate() {
        let m = h.join().unwrap();
        for (k, v) in &m {
            assert_eq!(*k % 8, t as u64);
            assert_eq!(*v, value_for(*k).to_uppercase());
        }
        seen += m.len();
    }
    assert_eq!(seen, 10_000);
    assert_eq!(Arc::strong_count(&shared), 1);
}

#[test]
fn mutex_collections_filled_by_many_threads() {
    let map: Arc<Mutex<BTreeMap<u64, Vec<u64>>>> = Arc::default();
    let handles: Vec<_> = (0..8u64)
        .map(|t| {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                for i in 0..5_000u64 {
                    let k = i * 8 + t;
                    let v: Vec<u64> = (0..(k % 50)).map(|j| k ^ j).collect();
                    map.lock().unwrap().insert(k, v);
                    // Threads also remove each other's entries: frees of
                    // blocks allocated by another (maybe exited) thread.
                    if i % 4 == 0 && k >= 8 {
                        map.lock().unwrap().remove(&(k - 7));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let map = Arc::try_unwrap(map).unwrap().into_inner().unwrap();
    for (k, v) in &map {
        assert_eq!(v.len() as u64, k % 50);
        assert!(v.iter().enumerate().all(|(j, &x)| x == k ^ j as u64));
    }
    assert!(
        map.len() > 30_000 && map.len() <= 40_000,
        "len {}",
        map.len()
    );
}

#[test]
fn strings_through_channels_pipeline() {
    // A 3-stage pipeline: each stage frees what the previous one allocated.
    let (tx1, rx1) = mpsc::channel::<String>();
    let (tx2, rx2) = mpsc::sync_channel::<Vec<String>>(16);
    let stage1 = thread::spawn(move || {
        for i in 0..50_000u64 {
            tx1.send(value_for(i)).unwrap();
        }
    });
    let stage2 = thread::spawn(move || {
        let mut batch = Vec::new();
        for s in rx1 {
            batch.push(s.chars().rev().collect::<String>());
            if batch.len() == 100 {
                tx2.send(std::mem::take(&mut batch)).unwrap();
            }
        }
        tx2.send(batch).unwrap();
    });
    let mut n = 0u64;
    for batch in rx2 {
        for s in batch {
            let fwd: String = s.chars().rev().collect();
            assert_eq!(fwd, value_for(n));
            n += 1;
        }
    }
    stage1.join().unwrap();
    stage2.join().unwrap();
    assert_eq!(n, 50_000);
}
