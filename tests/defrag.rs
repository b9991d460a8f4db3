//! Cooperative defragmentation (`segalloc::defrag`): which blocks
//! `should_move` picks, contents after relocation in every size class and
//! across threads, the map passes converging, and the value types. Each
//! test that looks at pages runs in a thread of its own, whose heap no other
//! test allocates from.

use segalloc::defrag::{self, defrag_map, should_move, Budget, MapPass, Relocate};
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::thread;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

/// Pages of blocks up to 8 KiB span one 64 KiB slice, aligned to it.
const SLICE: usize = 64 << 10;

fn addr<T: ?Sized>(b: &T) -> *const u8 {
    (b as *const T).cast()
}

fn in_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    thread::spawn(f).join().unwrap()
}

/// `n` boxes of `size` bytes, box `i` filled with `i as u8`; then all but
/// every `keep`-th freed, scattering the survivors over sparse pages.
fn scattered(size: usize, n: usize, keep: usize) -> Vec<(usize, Box<[u8]>)> {
    let mut all: Vec<(usize, Box<[u8]>)> = (0..n)
        .map(|i| (i, vec![i as u8; size].into_boxed_slice()))
        .collect();
    all.retain(|(i, _)| i % keep == keep - 1);
    all
}

fn intact(v: &[(usize, Box<[u8]>)], size: usize) -> bool {
    v.iter()
        .all(|(i, b)| b.len() == size && b.iter().all(|&x| x == *i as u8))
}

#[test]
fn should_move_is_never_true_for_the_current_page() {
    in_thread(|| {
        let v = scattered(64, 8192, 8);
        // The next block of the class comes from the current page.
        let probe = Box::new([0u8; 64]);
        let current = addr(&*probe) as usize / SLICE;
        let (mut here, mut elsewhere, mut picked) = (0, 0, 0);
        for (_, b) in &v {
            // SAFETY: live boxes of the global allocator, segalloc.
            let m = unsafe { should_move(addr(&**b)) };
            if addr(&**b) as usize / SLICE == current {
                assert!(!m, "a block of the current page was picked");
                here += 1;
            } else {
                elsewhere += 1;
                picked += m as usize;
            }
        }
        assert!(here > 0 && elsewhere > 0, "{here} {elsewhere}");
        // Pages 1/8 full, unless the thread took over a parked heap whose
        // pages hold other live blocks.
        assert!(picked * 10 >= elsewhere * 9, "{picked} of {elsewhere}");
        // Pages more than half full are left alone.
        let full = scattered(64, 8192, 1);
        // SAFETY: as above.
        assert!(full
            .iter()
            .all(|(_, b)| !unsafe { should_move(addr(&**b)) }));
        // Null, large blocks and first-class heaps' blocks never.
        let large = vec![1u8; segalloc::LARGE_THRESHOLD + 1];
        let heap = segalloc::Heap::new();
        let mut hv = segalloc::allocator_api2::vec::Vec::<u8, _>::with_capacity_in(64, &heap);
        hv.push(1);
        // SAFETY: null, and live blocks of segalloc.
        unsafe {
            assert!(!should_move(core::ptr::null()));
            assert!(!should_move(large.as_ptr()));
            assert!(!should_move(hv.as_ptr()));
        }
    });
}

/// Moved blocks never go back into a page worth emptying: every page the
/// scattered survivors sit in is carved to its end and at most 1/8 live,
/// but for the current one, which may still be filling from fresh memory.
/// No block may land in one of them while survivors remain there (once
/// emptied, its slices may serve a fresh page).
#[test]
fn moved_blocks_land_outside_the_sparse_pages() {
    in_thread(|| {
        let mut v = scattered(704, 4096, 8);
        let probe = vec![0u8; 704].into_boxed_slice();
        let current = addr(&*probe) as usize / SLICE;
        let mut left: HashMap<usize, usize> = HashMap::new();
        for (_, b) in &v {
            let page = addr(&**b) as usize / SLICE;
            if page != current {
                *left.entry(page).or_default() += 1;
            }
        }
        let mut moved = 0;
        for (_, b) in &mut v {
            let from = addr(&**b) as usize / SLICE;
            if b.relocate() {
                moved += 1;
                if let Some(n) = left.get_mut(&from) {
                    *n -= 1;
                }
                let to = addr(&**b) as usize / SLICE;
                let still = left.get(&to).copied().unwrap_or(0);
                assert!(
                    still == 0,
                    "moved into a sparse page with {still} survivors ({moved} moved)"
                );
            }
        }
        assert!(moved * 10 >= v.len() * 8, "{moved} of {}", v.len());
        assert!(intact(&v, 704));
    });
}

/// Once ordinary allocation has made a sparse page the current one (its
/// holes serve new blocks), moves still go elsewhere: a page at most half
/// live never takes moved blocks, current or not.
#[test]
fn moves_skip_a_sparse_current_page() {
    in_thread(|| {
        let mut v = scattered(704, 4096, 8);
        let pages: std::collections::HashSet<usize> =
            v.iter().map(|(_, b)| addr(&**b) as usize / SLICE).collect();
        // Allocate until a block comes from a page of survivors other than
        // the page current at first (which may still be carving fresh
        // blocks, and so take moved ones): that page is now the current
        // page of the class, carved to its end, with holes to serve.
        let mut fill = vec![vec![1u8; 704].into_boxed_slice()];
        let first = addr(&*fill[0]) as usize / SLICE;
        let sparse = loop {
            let b = vec![1u8; 704].into_boxed_slice();
            let page = addr(&*b) as usize / SLICE;
            fill.push(b);
            if page != first && pages.contains(&page) {
                break page;
            }
            assert!(fill.len() < 4096, "no sparse page became current");
        };
        let mut moved = 0;
        for (_, b) in &mut v {
            if b.relocate() {
                moved += 1;
                let to = addr(&**b) as usize / SLICE;
                assert_ne!(to, sparse, "moved into the sparse current page");
            }
        }
        assert!(moved * 10 >= v.len() * 7, "{moved} of {}", v.len());
        assert!(intact(&v, 704));
        assert!(fill.iter().all(|b| b.iter().all(|&x| x == 1)));
    });
}

/// A thread's heap handed over at its exit (not parked) leaves no page
/// marked current: every survivor in its sparse pages is picked. Runs in a
/// child process of its own (this test alone), so that no other test's
/// thread takes the segments over meanwhile.
#[test]
fn pages_of_an_exited_thread_are_not_current() {
    const CHILD: &str = "SEGALLOC_DEFRAG_TEST_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "pages_of_an_exited_thread_are_not_current"])
            .args(["--test-threads", "1"])
            .env(CHILD, "1")
            // Without the heap profiler's sampling, which CI turns on for
            // this file (SEGALLOC_PROF=1): a sampled survivor lives in a
            // mapping of its own and is never picked.
            .env_remove("SEGALLOC_PROF")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > std::time::Duration::from_secs(60) {
                let _ = child.kill();
                panic!("the child hung");
            }
            thread::sleep(std::time::Duration::from_millis(10));
        };
        assert!(status.success(), "child: {status:?} (its stderr is above)");
        return;
    }
    segalloc::set_option("parked_heaps", "0").unwrap();
    let v = in_thread(|| scattered(80, 2048, 8));
    let picked = v
        .iter()
        // SAFETY: live boxes of segalloc.
        .filter(|(_, b)| unsafe { should_move(addr(&**b)) })
        .count();
    assert_eq!(picked, v.len(), "{picked} of {} picked", v.len());
    assert!(intact(&v, 80));
}

/// Every size class: survivors of a scattered fill keep their contents
/// when relocated; in every class whose pages hold at least 8 blocks (those
/// up to 8 KiB; pages of bigger blocks hold one to seven, and a page of one
/// block is never sparse) some move; a second round moves almost nothing.
#[test]
fn relocation_keeps_contents_in_every_size_class() {
    let sizes: Vec<usize> = segalloc::stats()
        .classes
        .iter()
        .map(|c| c.block_size)
        .collect();
    assert!(sizes.len() > 100);
    for chunk in sizes.chunks(16) {
        let chunk = chunk.to_vec();
        in_thread(move || {
            for &size in &chunk {
                // Enough blocks for 4 pages of the class or more.
                let per_page = (SLICE / size).max(1);
                let n = (4 * per_page).max(32);
                let mut v = scattered(size, n, 8);
                let moved = v
                    .iter_mut()
                    .map(|(_, b)| b.relocate() as usize)
                    .sum::<usize>();
                assert!(intact(&v, size), "class {size}: contents changed");
                // With the heap profiler sampling (CI runs this file with
                // SEGALLOC_PROF=1), a sampled block lives in a mapping of its
                // own and never moves: the few survivors of a big class (a
                // 120 KiB block is sampled one time in five at the default
                // rate) may all be such.
                let sampling = std::env::var_os("SEGALLOC_PROF").is_some_and(|v| v == "1");
                if size <= 8 << 10 && !(sampling && v.len() < 16) {
                    assert!(moved > 0, "class {size}: nothing moved");
                }
                let again = v
                    .iter_mut()
                    .map(|(_, b)| b.relocate() as usize)
                    .sum::<usize>();
                // The survivors of the page that was current during the
                // first round may move now: at most half a page of them,
                // and at least the one survivor such a page can hold in the
                // classes whose pages hold few blocks (which happens when
                // the last block allocated is not on the current page, as
                // when the heap profiler served it from a mapping of its
                // own: `SEGALLOC_PROF=1`).
                assert!(
                    again <= v.len() / 10 + (per_page / 2).max(1),
                    "class {size}: a second round moved {again} of {}",
                    v.len()
                );
                assert!(intact(&v, size));
            }
        });
    }
}

/// Blocks in pages of another thread's heap, its thread alive and
/// allocating from its own pages while another relocates them.
#[test]
fn blocks_of_other_threads_move_safely() {
    let (tx, rx) = mpsc::channel::<Vec<(usize, Box<[u8]>)>>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let owner = thread::spawn(move || {
        tx.send(scattered(96, 16384, 10)).unwrap();
        // Churn in our own heap while the other thread reads our pages.
        let mut ring: Vec<Box<[u8]>> = Vec::new();
        let mut i = 0usize;
        while done_rx.try_recv().is_err() {
            ring.push(vec![i as u8; 96].into_boxed_slice());
            if ring.len() > 2000 {
                ring.swap_remove(i % 2000);
            }
            i += 1;
        }
        assert!(ring.iter().all(|b| b.len() == 96));
    });
    let mut v = rx.recv().unwrap();
    let movers: Vec<_> = (0..2)
        .map(|t| {
            let mut part: Vec<_> = v
                .iter()
                .enumerate()
                .filter(|(k, _)| k % 2 == t)
                .map(|(_, (i, b))| (*i, b.clone()))
                .collect();
            thread::spawn(move || {
                let moved = part
                    .iter_mut()
                    .map(|(_, b)| b.relocate() as usize)
                    .sum::<usize>();
                assert!(intact(&part, 96));
                moved
            })
        })
        .collect();
    let moved_here = v
        .iter_mut()
        .map(|(_, b)| b.relocate() as usize)
        .sum::<usize>();
    let moved_there: usize = movers.into_iter().map(|h| h.join().unwrap()).sum();
    done_tx.send(()).unwrap();
    owner.join().unwrap();
    assert!(intact(&v, 96));
    assert!(
        moved_here > v.len() / 2,
        "{moved_here} of {} moved",
        v.len()
    );
    // The clones were allocated by their threads, densely or not: no claim
    // on how many moved, only on their contents (checked in the threads).
    let _ = moved_there;
}

fn fragmented_map(n: u64) -> HashMap<u64, Vec<u8>> {
    let mut m: HashMap<u64, Vec<u8>> = (0..n)
        .map(|k| (k, vec![k as u8; 16 + (k as usize * 37) % 700]))
        .collect();
    m.retain(|k, _| k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60 < 2); // ~1/8 stay
    m
}

fn map_intact<'a>(m: impl IntoIterator<Item = (&'a u64, &'a Vec<u8>)>) -> bool {
    m.into_iter()
        .all(|(k, v)| v.len() == 16 + (*k as usize * 37) % 700 && v.iter().all(|&x| x == *k as u8))
}

#[test]
fn hash_map_pass_in_steps_converges() {
    in_thread(|| {
        let mut m = fragmented_map(60_000);
        let mut pass = MapPass::new();
        let mut steps = 0;
        let mut changed = 0u64;
        let first = loop {
            let p = pass.step(&mut m, Budget::entries(500));
            assert!(p.visited <= 500);
            steps += 1;
            if p.finished {
                break p;
            }
            // The map changes between steps.
            m.insert(1_000_000 + changed, vec![(1_000_000 + changed) as u8; 16]);
            m.remove(&(1_000_000 + changed));
            changed += 1;
        };
        assert!(steps > 5, "{steps}");
        assert!(first.pass_moved * 2 > m.len(), "{first:?} of {}", m.len());
        assert!(map_intact(&m));
        let second = defrag_map(&mut m);
        assert!(second.finished);
        // What moves now is mostly the survivors of pages that were
        // current while the first pass went by them.
        assert!(
            second.moved * 40 <= m.len(),
            "second pass moved {} of {}",
            second.moved,
            m.len()
        );
    });
}

#[test]
fn btree_map_pass_in_steps_converges() {
    in_thread(|| {
        let mut m: BTreeMap<u64, Vec<u8>> = fragmented_map(60_000).into_iter().collect();
        let mut pass = MapPass::new();
        let mut visited = 0;
        let first = loop {
            let p = pass.step(&mut m, Budget::entries(700));
            visited += p.visited;
            if p.finished {
                break p;
            }
            // Keys removed and inserted around the cursor are no trouble.
            let k = *m.keys().nth(m.len() / 2).unwrap();
            let v = m.remove(&k).unwrap();
            m.insert(k, v);
        };
        assert_eq!(visited, first.pass_visited);
        assert_eq!(first.pass_visited, m.len(), "each key once");
        assert!(first.pass_moved * 2 > m.len());
        assert!(map_intact(&m));
        let second = defrag_map(&mut m);
        assert!(second.moved * 40 <= m.len(), "{second:?}");
    });
}

#[test]
fn time_budget_bounds_a_step() {
    in_thread(|| {
        let mut m = fragmented_map(40_000);
        let mut pass = MapPass::new();
        let p = pass.step(&mut m, Budget::time(std::time::Duration::ZERO));
        // Checked every 32 entries.
        assert_eq!(p.visited, 32);
        assert!(!p.finished);
        let p = pass.step(
            &mut m,
            Budget::entries(10).and_time(std::time::Duration::from_secs(9)),
        );
        assert_eq!((p.visited, p.pass_visited), (10, 42));
    });
}

#[cfg(feature = "hashbrown")]
#[test]
fn hashbrown_map_pass_converges() {
    in_thread(|| {
        let mut m: hashbrown::HashMap<u64, Vec<u8>> = fragmented_map(30_000).into_iter().collect();
        let first = defrag_map(&mut m);
        assert!(first.moved * 2 > m.len());
        assert!(map_intact(&m));
        assert!(defrag_map(&mut m).moved * 40 <= m.len());
    });
}

/// An entry of a `hashbrown::HashTable`: only its value moves.
#[cfg(feature = "hashbrown")]
struct Entry {
    key: u64,
    value: Vec<u8>,
}

#[cfg(feature = "hashbrown")]
impl Relocate for Entry {
    fn relocate(&mut self) -> bool {
        self.value.relocate()
    }
}

#[cfg(feature = "hashbrown")]
#[test]
fn hashbrown_table_pass_resumes_at_its_bucket() {
    use std::hash::BuildHasher;
    in_thread(|| {
        let hasher = std::collections::hash_map::RandomState::new();
        let mut t = hashbrown::HashTable::new();
        for (key, value) in fragmented_map(60_000) {
            let h = hasher.hash_one(key);
            t.insert_unique(h, Entry { key, value }, |e| hasher.hash_one(e.key));
        }
        let mut pass = MapPass::new();
        let (mut steps, mut visited) = (0, 0);
        let first = loop {
            let p = pass.step(&mut t, Budget::entries(500));
            assert!(p.visited <= 500);
            visited += p.visited;
            steps += 1;
            if p.finished {
                break p;
            }
        };
        assert!(steps > 5, "{steps}");
        // The table did not change: each entry visited exactly once.
        assert_eq!(visited, first.pass_visited);
        assert_eq!(first.pass_visited, t.len(), "each entry once");
        assert!(first.pass_moved * 2 > t.len(), "{first:?} of {}", t.len());
        assert!(map_intact(t.iter().map(|e| (&e.key, &e.value))));
        let second = defrag_map(&mut t);
        assert!(second.moved * 40 <= t.len(), "{second:?}");
    });
}

fn keep_every_16th<T>(v: &mut Vec<T>) {
    let mut i = 0;
    v.retain(|_| {
        i += 1;
        i % 16 == 1
    });
}

fn moves<R: Relocate>(v: &mut [R]) -> usize {
    v.iter_mut().map(|r| defrag::relocate(r) as usize).sum()
}

#[test]
fn every_value_type_moves_and_keeps_its_contents() {
    in_thread(|| {
        let n = 4096;
        let mut boxes: Vec<Box<[u64; 6]>> = (0..n).map(|i| Box::new([i as u64; 6])).collect();
        let mut vecs: Vec<Vec<u32>> = (0..n)
            .map(|i| {
                let mut v = Vec::with_capacity(30);
                v.extend(0..(i % 20) as u32);
                v
            })
            .collect();
        let mut strings: Vec<String> = (0..n).map(|i| format!("string number {i:>20}")).collect();
        let mut strs: Vec<Box<str>> = (0..n).map(|i| format!("boxed {i:>40}").into()).collect();
        let mut opts: Vec<Option<Box<u128>>> = (0..n).map(|i| Some(Box::new(i as u128))).collect();
        keep_every_16th(&mut boxes);
        keep_every_16th(&mut vecs);
        keep_every_16th(&mut strings);
        keep_every_16th(&mut strs);
        keep_every_16th(&mut opts);
        let moved = moves(&mut boxes)
            + moves(&mut vecs)
            + moves(&mut strings)
            + moves(&mut strs)
            + moves(&mut opts);
        assert!(moved > 5 * n / 16 / 2, "{moved}");
        for (k, b) in boxes.iter().enumerate() {
            assert_eq!(**b, [(16 * k) as u64; 6]);
        }
        for (k, v) in vecs.iter().enumerate() {
            let i = 16 * k;
            assert_eq!(v.capacity(), 30);
            assert!(v.iter().copied().eq(0..(i % 20) as u32));
        }
        for (k, s) in strings.iter().enumerate() {
            assert_eq!(*s, format!("string number {:>20}", 16 * k));
        }
        for (k, s) in strs.iter().enumerate() {
            assert_eq!(&**s, format!("boxed {:>40}", 16 * k));
        }
        for (k, o) in opts.iter().enumerate() {
            assert_eq!(**o.as_ref().unwrap(), (16 * k) as u128);
        }
        // Nothing to move: no heap block.
        assert!(!Box::new(()).relocate());
        assert!(!Vec::<u8>::new().relocate());
        assert!(!None::<Box<u8>>.relocate());
        let mut big = vec![7u8; segalloc::LARGE_THRESHOLD * 2];
        assert!(!big.relocate());
        assert!(big.iter().all(|&x| x == 7));
    });
}

#[test]
fn move_block_and_alloc_dense_follow_the_layout() {
    use std::alloc::{GlobalAlloc, Layout};
    in_thread(|| {
        for align in [8, 16, 64, 4096] {
            let layout = Layout::from_size_align(200, align).unwrap();
            // SAFETY: blocks of segalloc of `layout`, each freed once.
            unsafe {
                let mut v: Vec<*mut u8> = (0..2000).map(|_| GLOBAL.alloc(layout)).collect();
                for (i, p) in v.iter().enumerate() {
                    p.write_bytes(i as u8, 200);
                }
                let mut i = 0;
                v.retain(|&p| {
                    i += 1;
                    if i % 8 == 0 {
                        return true;
                    }
                    GLOBAL.dealloc(p, layout);
                    false
                });
                let mut moved = 0;
                for (k, p) in v.iter_mut().enumerate() {
                    let q = defrag::move_block(*p, layout);
                    moved += (q != *p) as usize;
                    assert_eq!(q as usize % align, 0);
                    assert!((0..200).all(|j| *q.add(j) == (8 * k + 7) as u8));
                    *p = q;
                }
                assert!(moved > 0, "align {align}");
                for p in v {
                    GLOBAL.dealloc(p, layout);
                }
                let d = defrag::alloc_dense(layout);
                assert_eq!(d as usize % align, 0);
                GLOBAL.dealloc(d, layout);
            }
        }
    });
}

#[test]
fn a_vector_shrunk_in_place_moves_into_the_class_of_its_size() {
    // SAFETY (for the `usable_size` calls): live buffers of the global
    // allocator, segalloc.
    let usable = |x: &Vec<u8>| unsafe { segalloc::usable_size(x.as_ptr()) };
    in_thread(move || {
        // 2000 bytes (2048-byte blocks) cut to 1100: `realloc` keeps each in
        // place (at least half its block), a class above the one a fresh
        // block of 1100 bytes gets. A move takes the class of its page but
        // for such blocks, which get the class of their size.
        let mut v: Vec<Vec<u8>> = (0..4096)
            .map(|i| {
                let mut x = vec![i as u8; 2000];
                x.truncate(1100);
                x.shrink_to_fit();
                x
            })
            .collect();
        let fresh = usable(&Vec::with_capacity(1100));
        assert!(usable(&v[0]) > fresh, "the shrink was not in place");
        keep_every_16th(&mut v);
        let mut moved = 0;
        for (k, x) in v.iter_mut().enumerate() {
            if x.relocate() {
                moved += 1;
                assert_eq!(usable(x), fresh, "moved into a larger class");
            }
            assert!(x.len() == 1100 && x.iter().all(|&b| b == (16 * k) as u8));
        }
        assert!(moved > 0);
    });
}
