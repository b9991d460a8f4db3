//! The memory limits (`SEGALLOC_LIMIT`, `SEGALLOC_LIMIT_SOFT`) set from the
//! environment: each case runs in a child process (this binary, the `child`
//! test) with its own variables, and must finish within a timeout. (Set from
//! Rust and C: tests/option_effects.rs; under `LD_PRELOAD`:
//! tests/capi_preload.rs with tests/preload/limit.c.)

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

mod common;

const CASE: &str = "SEGALLOC_LIMITS_TEST_CASE";

fn option(name: &str) -> usize {
    segalloc::runtime_options()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("no option {name}"))
        .get()
}

/// Runs `case` with `env` set; returns its stderr, after checking it passed.
fn run(case: &str, env: &[(&str, &str)]) -> String {
    common::run_case(CASE, case, env)
}

/// What each case checks, in the child.
#[test]
fn child() {
    let Ok(case) = std::env::var(CASE) else {
        return;
    };
    // Committed memory as the small and large blocks take it: a block the
    // heap profiler samples (`SEGALLOC_PROF=1`) takes a mapping of its own,
    // at least 8 KiB, which the limits count as they should (see the
    // README's "Heap profiling"); at a high rate that alone passes them.
    common::no_sampling();
    drop(vec![1u8; 100]); // the first heap: the options are read
    match case.as_str() {
        "limit" => {
            use std::alloc::{alloc, dealloc, Layout};
            assert_eq!(option("limit"), 64 << 20);
            let big = Layout::from_size_align(100 << 20, 8).unwrap();
            // SAFETY: a valid layout; null is the expected answer.
            let p = unsafe { alloc(big) };
            assert!(
                p.is_null(),
                "100 MiB under a 64 MiB limit: {p:p} {:?}",
                segalloc::stats().os_calls
            );
            assert!(Vec::<u8>::new().try_reserve(100 << 20).is_err());
            for round in 0..3u8 {
                let v = vec![round; 40 << 20];
                assert!(v.iter().step_by(4096).all(|&b| b == round));
            }
            // Small blocks: they fail too, then work again once freed.
            let l = Layout::from_size_align(60 << 10, 8).unwrap();
            let mut held = Vec::with_capacity(4096);
            loop {
                // SAFETY: a valid layout; freed below.
                let p = unsafe { alloc(l) };
                if p.is_null() {
                    break;
                }
                // SAFETY: a fresh block of 60 KiB.
                unsafe { p.write_bytes(1, 60 << 10) };
                held.push(p);
                assert!(held.len() < 4096, "no failure in 240 MiB");
            }
            assert!(
                held.len() * (60 << 10) > 40 << 20,
                "failed early: {}",
                held.len()
            );
            for p in held {
                // SAFETY: blocks allocated above with `l`.
                unsafe { dealloc(p, l) };
            }
            segalloc::collect();
            let v = vec![3u8; 30 << 20];
            assert_eq!(v[12345], 3);
            assert!(segalloc::stats().os_calls.limit_hits >= 3);
        }
        "limit_unbounded" => limit_unbounded(),
        "limit_recommit" => limit_recommit(),
        "soft" => soft_limit_workload(),
        other => panic!("unknown case {other}"),
    }
}

/// Under `SEGALLOC_LIMIT=256M`: allocates without bound (small blocks and
/// large ones, each written) until an allocation fails; checks that it
/// failed only near the limit, that committed memory stayed within it, and
/// that after freeing half the program goes on allocating. Three rounds.
fn limit_unbounded() {
    use std::alloc::{alloc, dealloc, Layout};
    let limit = option("limit");
    assert_eq!(limit, 256 << 20);
    let small = Layout::from_size_align(4000, 8).unwrap();
    let large = Layout::from_size_align(3 << 20, 8).unwrap();
    let mut held: Vec<(*mut u8, Layout)> = Vec::with_capacity(1 << 17);
    for round in 0..3 {
        let mut failed = None;
        for i in 0.. {
            let l = if i % 64 == 63 { large } else { small };
            // SAFETY: a valid layout (kept opaque: the compiler may assume
            // a global allocation succeeds).
            let p = unsafe { alloc(std::hint::black_box(l)) };
            if std::hint::black_box(p).is_null() {
                failed = Some(l.size());
                break;
            }
            // SAFETY: a fresh block of `l.size()` bytes.
            unsafe { p.write_bytes(round as u8 + 1, l.size()) };
            held.push((p, l));
            assert!(held.len() < 1 << 17, "no failure in 2 GiB");
        }
        let s = segalloc::stats();
        let size = failed.unwrap();
        eprintln!(
            "round {round}: {} blocks, allocated {} MiB, committed {} MiB, mapped {} MiB when {size} bytes failed",
            held.len(),
            s.allocated >> 20,
            s.committed >> 20,
            s.mapped >> 20
        );
        assert!(
            s.committed <= limit,
            "committed {} past the limit",
            s.committed
        );
        // It failed only because it would have passed the limit: what it
        // holds plus the request (rounded up to the page it would need, a
        // 1 MiB page at most for a small block, or its mapping) is over.
        assert!(
            s.committed + size.max(1 << 20) + (4 << 20) > limit,
            "failed {} MiB under the limit",
            (limit - s.committed) >> 20
        );
        // Free the older half: the program goes on (the freed pages are
        // still resident, and go back when the next allocation needs room).
        for (p, l) in held.drain(..held.len() / 2) {
            // SAFETY: allocated above with `l`, freed once.
            unsafe { dealloc(p, l) };
        }
        let v = vec![7u8; 32 << 20];
        assert_eq!(v[(32 << 20) - 1], 7);
        let w: Vec<Box<[u8; 2000]>> = (0..10_000).map(|_| Box::new([9; 2000])).collect();
        assert!(w.iter().all(|b| b[1999] == 9));
    }
    for (p, l) in held {
        // SAFETY: allocated above with `l`.
        unsafe { dealloc(p, l) };
    }
    assert!(segalloc::stats().os_calls.limit_hits >= 3);
}

/// Under `SEGALLOC_LIMIT=256M`: a program that stays well under the limit
/// in committed memory but not in address space never fails. Each round
/// fills 160 MiB with 1000-byte blocks and frees all but one in 64 (so each
/// page keeps a live block and stays mapped; `collect()` purges the free
/// OS pages inside them), then fills 120 MiB of 3000-byte blocks in new
/// segments (the address space is past the limit, committed memory is
/// not) and frees them; blocks are written and checked throughout, and the
/// purged memory is committed again by the next round.
fn limit_recommit() {
    let limit = option("limit");
    assert_eq!(limit, 256 << 20);
    let mut most_mapped = 0;
    for round in 0..6u8 {
        let mut a: Vec<Option<Box<[u8; 1000]>>> = (0..(160 << 20) / 1000)
            .map(|_| Some(Box::new([round; 1000])))
            .collect();
        for (i, b) in a.iter_mut().enumerate() {
            if i % 64 != 0 {
                *b = None;
            }
        }
        segalloc::collect();
        let b: Vec<Box<[u8; 3000]>> = (0..(120 << 20) / 3000)
            .map(|_| Box::new([!round; 3000]))
            .collect();
        let s = segalloc::stats();
        most_mapped = most_mapped.max(s.mapped);
        eprintln!(
            "round {round}: committed {} MiB, mapped {} MiB, purged so far {} MiB",
            s.committed >> 20,
            s.mapped >> 20,
            s.os_calls.purged >> 20
        );
        assert!(b.iter().all(|x| x[2999] == !round));
        assert!(a.iter().flatten().all(|x| x[999] == round));
        assert!(s.committed < limit);
    }
    assert_eq!(segalloc::stats().os_calls.limit_hits, 0);
    assert!(
        most_mapped > limit,
        "the address space stayed under the limit ({} MiB): the case tests nothing",
        most_mapped >> 20
    );
}

/// A workload that keeps about 16 MiB of small blocks live, replaces a
/// quarter of them with blocks of another size each round, and in between
/// allocates groups of large blocks (4 to 12 MiB) and frees them. Checks
/// that no allocation fails and, with a soft limit, that committed memory
/// after each free stays within the limit (plus 2 MiB for the kept
/// segment's slack).
fn soft_limit_workload() {
    use std::alloc::{alloc, dealloc, Layout};
    let soft = option("limit_soft");
    let mut small: Vec<(usize, Layout)> = Vec::new();
    let mut most = 0;
    let mut after_free = |what: &str| {
        let s = segalloc::stats();
        most = most.max(s.committed);
        eprintln!(
            "{what}: committed {} MiB (allocated {}, free in pages {}, free pages {}), large cached {} MiB, mapped {} MiB",
            s.committed >> 20,
            s.allocated >> 20,
            s.free_in_pages >> 20,
            s.free_pages >> 20,
            s.large_cached >> 20,
            s.mapped >> 20
        );
    };
    for round in 0..8usize {
        // Replace a quarter of the small blocks (all of them at first).
        let keep = small.len() * 3 / 4;
        for (p, l) in small.drain(keep..) {
            // SAFETY: allocated below with `l`.
            unsafe { dealloc(p as *mut u8, l) };
        }
        let size = [48, 200, 1000, 3000][round % 4];
        let l = Layout::from_size_align(size, 8).unwrap();
        let mut live: usize = small.iter().map(|b| b.1.size()).sum();
        while live < 16 << 20 {
            live += size;
            // SAFETY: a valid layout.
            let p = unsafe { alloc(l) };
            assert!(!p.is_null(), "small allocation failed");
            // SAFETY: a fresh block of `size` bytes.
            unsafe { p.write_bytes(round as u8, size) };
            small.push((p as usize, l));
        }
        for group in [&[4usize, 12, 6][..], &[10, 8], &[5, 11, 4]] {
            let blocks: Vec<Vec<u8>> = group
                .iter()
                .map(|&mib| vec![round as u8; (mib << 20) + round * 4096])
                .collect();
            assert!(blocks.iter().all(|v| v[v.len() - 1] == round as u8));
            drop(blocks);
            after_free("large freed");
        }
    }
    for (p, l) in small {
        // SAFETY: allocated above with `l`.
        unsafe { dealloc(p as *mut u8, l) };
    }
    eprintln!(
        "most committed after a free: {} MiB (soft limit {} MiB)",
        most >> 20,
        soft >> 20
    );
    if soft != 0 {
        assert!(
            most <= soft + (2 << 20),
            "committed {} MiB after a free, past the soft limit {} MiB",
            most >> 20,
            soft >> 20
        );
    } else {
        // Without a limit the workload goes well past 32 MiB (57 MiB when
        // written), or the run with one would show nothing.
        assert!(
            most > 40 << 20,
            "committed only {} MiB without a soft limit",
            most >> 20
        );
    }
    assert_eq!(segalloc::stats().os_calls.limit_hits, 0);
}

#[test]
fn a_memory_limit_makes_allocations_fail_instead_of_growing() {
    run("limit", &[("SEGALLOC_LIMIT", "64M")]);
}

/// The limit counts committed memory (`stats().committed`): allocating
/// without bound fails near it, never past it, and the program goes on
/// after freeing; a program under it that has purged and committed again
/// a lot, with more address space than the limit, never fails.
#[test]
fn the_memory_limit_counts_committed_memory() {
    run("limit_unbounded", &[("SEGALLOC_LIMIT", "256M")]);
    run("limit_recommit", &[("SEGALLOC_LIMIT", "256M")]);
}

#[test]
fn past_the_soft_limit_memory_is_purged_and_nothing_fails() {
    run("soft", &[("SEGALLOC_LIMIT_SOFT", "32M")]);
    run("soft", &[]);
}
