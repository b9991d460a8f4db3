//! First-class heaps (`segalloc::Heap`) and typed pools (`segalloc::Pool`)
//! with segalloc as the global allocator: collections in a heap, dropping and
//! resetting with live blocks, a heap moved to another thread, blocks freed
//! through the wrong door, pool churn, and a randomized comparison against a
//! shadow model.

mod common;

use common::{fill, first_mismatch, Rng};
use segalloc::allocator_api2::alloc::Allocator;
use segalloc::allocator_api2::boxed::Box as HBox;
use segalloc::allocator_api2::vec::Vec as HVec;
use segalloc::{Heap, Pool};
use std::alloc::Layout;
use std::ptr::NonNull;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

#[test]
fn collections_in_a_heap_keep_their_contents() {
    let heap = Heap::new();
    // A Vec of boxed strings, a hash map, and a large vector, all in the heap.
    let mut boxes: HVec<HBox<String, &Heap>, &Heap> = HVec::new_in(&heap);
    for i in 0..10_000 {
        boxes.push(HBox::new_in(format!("item {i}"), &heap));
    }
    let mut map = hashbrown::HashMap::new_in(&heap);
    for i in 0..50_000u64 {
        map.insert(i, i * i);
    }
    let mut big: HVec<u64, &Heap> = HVec::new_in(&heap);
    big.extend(0..1_000_000u64); // grows through the large path (mremap)
    for (i, b) in boxes.iter().enumerate() {
        assert_eq!(**b, format!("item {i}"));
    }
    for i in 0..50_000u64 {
        assert_eq!(map[&i], i * i);
    }
    assert!(big.iter().enumerate().all(|(i, &v)| v == i as u64));
    map.retain(|k, _| k % 3 == 0);
    assert_eq!(map.len(), 16_667);
    boxes.truncate(10);
    big.shrink_to(1000);
    let s = heap.stats();
    // The boxes and the vector of them, the map's table, the big vector's.
    assert_eq!(s.live_blocks(), 10 + 1 + 1 + 1, "{s}");
    assert!(s.requested > 8 * 1_000_000 && s.large_objects >= 1, "{s}");
    drop((boxes, map, big));
    let s = heap.stats();
    assert_eq!(
        (s.live_blocks(), s.requested, s.large_objects),
        (0, 0, 0),
        "{s}"
    );
    assert_eq!(s.allocations, s.frees);
}

/// A block its owner frees is the next one of its class handed out (last
/// in, first out: `page`'s notes), while the page still has untouched
/// blocks; and a zeroed allocation that gets it back from a page carved
/// from fresh memory is zero all through, not only in its link word.
/// Fails if the owner's frees wait on `local_free` (the first `assert_eq`),
/// or if the page keeps saying its `free` list is zero after such a free
/// (the zero check).
#[test]
fn owner_frees_come_back_first_and_zeroed_ones_are_zero() {
    let heap = Heap::new();
    let l = Layout::from_size_align(200, 8).unwrap();
    let a = heap.allocate(l).unwrap().cast::<u8>();
    let b = heap.allocate(l).unwrap().cast::<u8>();
    let c = heap.allocate(l).unwrap().cast::<u8>();
    // SAFETY: live blocks of `l` from `heap`, each freed once.
    unsafe {
        b.as_ptr().write_bytes(0xa5, l.size());
        heap.deallocate(b, l);
        let z = heap.allocate_zeroed(l).unwrap().cast::<u8>();
        assert_eq!(z, b, "the block freed last comes back first");
        let bytes = std::slice::from_raw_parts(z.as_ptr(), l.size());
        assert!(bytes.iter().all(|&x| x == 0), "zeroed: {bytes:?}");
        heap.deallocate(a, l);
        heap.deallocate(c, l);
        let d = heap.allocate(l).unwrap().cast::<u8>();
        let e = heap.allocate(l).unwrap().cast::<u8>();
        assert_eq!((d, e), (c, a));
        for p in [z, d, e] {
            heap.deallocate(p, l);
        }
    }
}

#[test]
fn every_size_and_alignment_in_a_heap() {
    let heap = Heap::new();
    let mut live = Vec::new();
    for shift in 0..=12 {
        let align = 1usize << shift;
        for size in [
            0,
            1,
            7,
            8,
            15,
            16,
            17,
            100,
            1000,
            1024,
            1025,
            5000,
            70_000,
            1 << 20,
            (1 << 20) + 1,
        ] {
            let l = Layout::from_size_align(size, align).unwrap();
            let p = heap.allocate(l).expect("allocation").cast::<u8>();
            assert_eq!(p.as_ptr() as usize % align, 0, "size {size} align {align}");
            // SAFETY: a fresh block of `size` bytes.
            unsafe { fill(p.as_ptr(), size, (size * 31 + align) as u64) };
            live.push((p, l));
        }
    }
    for &(p, l) in &live {
        // SAFETY: live blocks filled above.
        unsafe {
            assert_eq!(
                first_mismatch(p.as_ptr(), l.size(), (l.size() * 31 + l.align()) as u64),
                None
            );
            heap.deallocate(p, l);
        }
    }
    assert_eq!(heap.stats().live_blocks(), 0);
    // Beyond MAX_ALIGN a block has a mapping of its own, its header a
    // segment below it: aligned, usable, freed through the heap.
    for align in [segalloc::MAX_ALIGN * 2, segalloc::MAX_ALIGN * 8] {
        let l = Layout::from_size_align(5000, align).unwrap();
        let p = heap
            .allocate(l)
            .expect("over-aligned allocation")
            .cast::<u8>();
        assert_eq!(p.as_ptr() as usize % align, 0);
        // SAFETY: a fresh block of 5000 bytes, checked and freed once.
        unsafe {
            fill(p.as_ptr(), 5000, 77);
            assert_eq!(first_mismatch(p.as_ptr(), 5000, 77), None);
            heap.deallocate(p, l);
        }
    }
    assert_eq!(heap.stats().live_blocks(), 0);
    // An alignment no address space holds: no block, and no panic.
    let l = Layout::from_size_align(8, 1 << 62).unwrap();
    assert!(heap.allocate(l).is_err());
}

#[test]
fn zeroed_allocations_read_zero_even_after_reuse() {
    let heap = Heap::new();
    for round in 0..3 {
        let mut v = Vec::new();
        for size in [8usize, 24, 100, 1000, 4096, 100_000, 2 << 20] {
            let l = Layout::from_size_align(size, 8).unwrap();
            let p = heap.allocate_zeroed(l).unwrap().cast::<u8>();
            // SAFETY: a live block of `size` bytes.
            unsafe {
                let s = std::slice::from_raw_parts_mut(p.as_ptr(), size);
                assert!(s.iter().all(|&b| b == 0), "round {round} size {size}");
                s.fill(0xAB); // dirty it for the next round
            }
            v.push((p, l));
        }
        for (p, l) in v {
            // SAFETY: live blocks of ours.
            unsafe { heap.deallocate(p, l) };
        }
    }
}

#[test]
fn reset_frees_everything_and_the_heap_is_reused() {
    let mut heap = Heap::new();
    for round in 0..5u64 {
        {
            let mut map = hashbrown::HashMap::new_in(&heap);
            for i in 0..20_000 {
                map.insert(i, HBox::new_in(i ^ round, &heap));
            }
            let big = HVec::<u8, &Heap>::with_capacity_in(3 << 20, &heap);
            assert_eq!(map[&77], HBox::new_in(77 ^ round, &heap));
            std::mem::forget((map, big));
        }
        let before = heap.stats();
        assert!(before.live_blocks() > 20_000, "{before}");
        heap.reset();
        let s = heap.stats();
        assert_eq!(
            (
                s.live_blocks(),
                s.requested,
                s.allocated,
                s.large_objects,
                s.large_bytes
            ),
            (0, 0, 0, 0, 0),
            "{s}"
        );
        assert_eq!(s.allocations, s.frees);
        assert_eq!(s.free_in_pages, 0, "reset keeps no page: {s}");
        assert!(s.mapped <= 32 << 20, "reset keeps what it needs: {s}");
    }
}

#[test]
fn a_heap_moves_to_another_thread_and_works_there() {
    let heap = Heap::new();
    let ids: Vec<u64> = {
        let v: HVec<u64, &Heap> = (0..1000).fold(HVec::new_in(&heap), |mut v, i| {
            v.push(i);
            v
        });
        v.iter().copied().collect()
    };
    let heap = std::thread::spawn(move || {
        // The heap's pages are still its own: allocate and free here.
        let mut v = HVec::new_in(&heap);
        for &i in &ids {
            v.push(HBox::new_in(i * 2, &heap));
        }
        assert!(v.iter().enumerate().all(|(i, b)| **b == i as u64 * 2));
        drop(v);
        assert_eq!(heap.stats().live_blocks(), 0);
        let keep = HBox::new_in(5u32, &heap);
        std::mem::forget(keep); // live when the heap goes back
        heap
    })
    .join()
    .unwrap();
    assert_eq!(heap.stats().live_blocks(), 1);
    let b = HBox::new_in(6u32, &heap);
    assert_eq!(*b, 6);
    drop(b);
    drop(heap);
}

#[test]
fn blocks_freed_through_the_global_allocator_are_collected() {
    let heap = Heap::new();
    let small = Layout::from_size_align(48, 8).unwrap();
    let large = Layout::from_size_align(3 << 20, 8).unwrap();
    let blocks: Vec<usize> = (0..1000)
        .map(|_| heap.allocate(small).unwrap().cast::<u8>().as_ptr() as usize)
        .collect();
    let l = heap.allocate(large).unwrap().cast::<u8>();
    // Misuse: free them through the global allocator, some from another
    // thread. The heap still owns them: they must not be reused globally.
    let (here, there) = blocks.split_at(500);
    for &p in here {
        // SAFETY: a live block; the global free sends it back to its heap.
        unsafe { std::alloc::dealloc(p as *mut u8, small) };
    }
    let there = there.to_vec();
    std::thread::spawn(move || {
        for p in there {
            // SAFETY: as above.
            unsafe { std::alloc::dealloc(p as *mut u8, small) };
        }
    })
    .join()
    .unwrap();
    // SAFETY: a live large block; the global free leaves it to the heap.
    unsafe {
        // A global realloc of it cannot move it from under the heap: it fails.
        assert!(std::alloc::realloc(l.as_ptr(), large, 8 << 20).is_null());
        std::alloc::dealloc(l.as_ptr(), large);
    }
    // The heap picks the small blocks up when it runs short.
    let again: Vec<NonNull<u8>> = (0..5000)
        .map(|_| heap.allocate(small).unwrap().cast())
        .collect();
    let reused = again
        .iter()
        .filter(|p| blocks.contains(&(p.as_ptr() as usize)))
        .count();
    assert!(reused > 0, "frees through the global allocator came back");
    for p in again {
        // SAFETY: live blocks of ours.
        unsafe { heap.deallocate(p, small) };
    }
    drop(heap);
}

#[test]
fn a_block_of_another_allocator_given_to_deallocate_goes_home() {
    // Contract breach, but it must not corrupt either heap.
    let a = Heap::new();
    let b = Heap::new();
    let l = Layout::from_size_align(100, 8).unwrap();
    let p = a.allocate(l).unwrap().cast::<u8>();
    // SAFETY: a live block (of `a`, which `b` hands to the global path).
    unsafe { b.deallocate(p, l) };
    let g = Box::into_raw(Box::new([1u8; 100]));
    // SAFETY: a live global block.
    unsafe { a.deallocate(NonNull::new(g).unwrap().cast(), l) };
    drop(a);
    drop(b);
}

#[test]
fn pool_churn_keeps_contents() {
    #[derive(Clone, Debug, PartialEq)]
    struct Obj {
        id: u64,
        payload: [u64; 5],
        name: String,
    }
    let obj = |id: u64| Obj {
        id,
        payload: [id, id ^ 1, id ^ 2, id ^ 3, id ^ 4],
        name: format!("o{id}"),
    };
    let pool = Pool::new();
    let mut rng = Rng::new(7);
    let mut live: Vec<(u64, segalloc::PoolBox<'_, Obj>)> = Vec::new();
    let mut next = 0u64;
    for _ in 0..200_000 {
        if live.is_empty() || rng.chance(55, 100) {
            live.push((next, pool.alloc(obj(next))));
            next += 1;
        } else {
            let i = rng.range(0, live.len() - 1);
            let (id, b) = live.swap_remove(i);
            assert_eq!(*b, obj(id));
            if rng.chance(1, 4) {
                assert_eq!(segalloc::PoolBox::into_inner(b), obj(id));
            }
        }
    }
    assert_eq!(pool.live(), live.len());
    for (id, b) in &live {
        assert_eq!(**b, obj(*id));
    }
    let n = live.len();
    drop(live);
    assert_eq!((pool.live(), pool.cached() >= n), (0, true));
    pool.trim();
    assert_eq!(pool.stats().live_blocks(), 0);
}

/// A deterministic random sequence of allocate / deallocate / grow / shrink /
/// reset on one heap, checked against a shadow model: every live block keeps
/// its bytes, is aligned, and overlaps no other; the heap's live count and
/// requested bytes match the model's.
#[test]
fn random_operations_match_a_shadow_model() {
    for seed in 0..8 {
        run_model(seed, 20_000);
    }
}

fn run_model(seed: u64, ops: usize) {
    struct Live {
        p: NonNull<u8>,
        l: Layout,
        id: u64,
    }
    let mut heap = Heap::new();
    let mut rng = Rng::new(seed);
    let mut live: Vec<Live> = Vec::new();
    let mut next_id = 0u64;
    let size = |rng: &mut Rng| match rng.range(0, 99) {
        0..=59 => rng.range(0, 256),
        60..=89 => rng.range(257, 16 << 10),
        90..=97 => rng.range(16 << 10, 1 << 20),
        _ => rng.range((1 << 20) + 1, 3 << 20),
    };
    let align = |rng: &mut Rng| 1usize << [0, 3, 3, 3, 4, 4, 5, 6, 12][rng.range(0, 8)];
    for op in 0..ops {
        match rng.range(0, 99) {
            0..=44 => {
                let l = Layout::from_size_align(size(&mut rng), align(&mut rng)).unwrap();
                let zeroed = rng.chance(1, 4);
                let b = if zeroed {
                    heap.allocate_zeroed(l)
                } else {
                    heap.allocate(l)
                };
                let p = b.expect("allocation").cast::<u8>();
                assert_eq!(p.as_ptr() as usize % l.align(), 0);
                // SAFETY: a fresh block of l.size() bytes.
                unsafe {
                    if zeroed {
                        let s = std::slice::from_raw_parts(p.as_ptr(), l.size());
                        assert!(s.iter().all(|&b| b == 0), "seed {seed} op {op}");
                    }
                    fill(p.as_ptr(), l.size(), next_id);
                }
                live.push(Live { p, l, id: next_id });
                next_id += 1;
            }
            45..=79 if !live.is_empty() => {
                let b = live.swap_remove(rng.range(0, live.len() - 1));
                // SAFETY: a live block of ours with its layout.
                unsafe {
                    assert_eq!(
                        first_mismatch(b.p.as_ptr(), b.l.size(), b.id),
                        None,
                        "seed {seed} op {op}"
                    );
                    heap.deallocate(b.p, b.l);
                }
            }
            80..=97 if !live.is_empty() => {
                let i = rng.range(0, live.len() - 1);
                let b = &mut live[i];
                let new = Layout::from_size_align(size(&mut rng), b.l.align()).unwrap();
                // SAFETY: a live block of ours; grow/shrink as the sizes say.
                unsafe {
                    let q = if new.size() >= b.l.size() {
                        heap.grow(b.p, b.l, new)
                    } else {
                        heap.shrink(b.p, b.l, new)
                    }
                    .expect("resize")
                    .cast::<u8>();
                    assert_eq!(q.as_ptr() as usize % new.align(), 0);
                    let kept = b.l.size().min(new.size());
                    assert_eq!(
                        first_mismatch(q.as_ptr(), kept, b.id),
                        None,
                        "seed {seed} op {op}"
                    );
                    fill(q.as_ptr(), new.size(), b.id);
                    b.p = q;
                    b.l = new;
                }
            }
            98 => {
                // Reset: the model forgets every block without freeing it.
                live.clear();
                heap.reset();
            }
            _ => {}
        }
        if op % 997 == 0 {
            check_model(&heap, &live, seed, op);
        }
    }
    check_model(&heap, &live, seed, ops);
    for b in live.drain(..) {
        // SAFETY: live blocks of ours.
        unsafe {
            assert_eq!(first_mismatch(b.p.as_ptr(), b.l.size(), b.id), None);
            heap.deallocate(b.p, b.l);
        }
    }
    let s = heap.stats();
    assert_eq!((s.live_blocks(), s.requested), (0, 0), "seed {seed}: {s}");

    fn check_model(heap: &Heap, live: &[Live], seed: u64, op: usize) {
        let mut spans: Vec<(usize, usize)> = live
            .iter()
            .filter(|b| b.l.size() > 0)
            .map(|b| (b.p.as_ptr() as usize, b.p.as_ptr() as usize + b.l.size()))
            .collect();
        spans.sort_unstable();
        for w in spans.windows(2) {
            assert!(
                w[0].1 <= w[1].0,
                "seed {seed} op {op}: blocks overlap: {w:x?}"
            );
        }
        let s = heap.stats();
        let requested: usize = live.iter().map(|b| b.l.size()).sum();
        assert_eq!(s.live_blocks(), spans.len(), "seed {seed} op {op}: {s}");
        assert_eq!(s.requested, requested, "seed {seed} op {op}: {s}");
        assert!(s.allocated >= s.requested);
        assert!(
            s.committed >= s.allocated + s.metadata,
            "seed {seed} op {op}: {s}"
        );
    }
}
