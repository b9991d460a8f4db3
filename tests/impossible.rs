//! Impossible requests return null instead of panicking or aborting: sizes
//! near `isize::MAX` (where internal `size + align` or header arithmetic would
//! overflow), sizes no address space can hold, and alignments whose
//! mapping no address space can hold (1 << 62). Also through `alloc_zeroed` and `realloc` (a
//! failed realloc must leave the old block intact), through std's fallible
//! `try_reserve`, and the allocator keeps working afterwards.
mod common;

use common::{check, fill};
use segalloc::{SegAlloc, MAX_ALIGN};
use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashMap;

#[global_allocator]
static GLOBAL: SegAlloc = SegAlloc;

const IMAX: usize = isize::MAX as usize;

/// Valid `Layout`s (size rounded up to align fits in isize) that no machine
/// can satisfy: 2^62 bytes and more exceed even a 57-bit address space.
fn huge_layouts() -> Vec<Layout> {
    let mut v = Vec::new();
    for align in [1usize, 8, 16, 64, 4096, 65536, MAX_ALIGN] {
        for size in [
            IMAX,
            IMAX - 1,
            IMAX - 4095,
            IMAX - 65536,
            1 << 62,
            (1 << 62) + 1,
        ] {
            // Keep only sizes that form a valid Layout with this alignment.
            if let Ok(l) = Layout::from_size_align(size & !(align - 1), align) {
                v.push(l);
            }
        }
    }
    v
}

/// Alignments the allocator must refuse: an `align`-aligned mapping of
/// `align` bytes and more does not fit in any address space (any smaller
/// power of two is served, see `tests/alignment.rs`).
fn refused_alignments() -> Vec<usize> {
    vec![1 << 62]
}

#[test]
fn huge_sizes_return_null() {
    for l in huge_layouts() {
        let p = unsafe { SegAlloc.alloc(l) };
        assert!(p.is_null(), "alloc({l:?}) returned {p:p}, expected null");
        let p = unsafe { SegAlloc.alloc_zeroed(l) };
        assert!(
            p.is_null(),
            "alloc_zeroed({l:?}) returned {p:p}, expected null"
        );
    }
}

#[test]
fn alignment_beyond_any_address_space_returns_null() {
    for align in refused_alignments() {
        for size in [1usize, 8, 4096, 100_000, 1 << 20] {
            let l = Layout::from_size_align(size, align).unwrap();
            let p = unsafe { SegAlloc.alloc(l) };
            assert!(p.is_null(), "alloc({l:?}) returned {p:p}, expected null");
            let p = unsafe { SegAlloc.alloc_zeroed(l) };
            assert!(
                p.is_null(),
                "alloc_zeroed({l:?}) returned {p:p}, expected null"
            );
        }
    }
}

#[test]
fn failed_realloc_keeps_old_block() {
    for (id, size) in [24usize, 1000, 200_000].into_iter().enumerate() {
        let id = id as u64;
        let l = Layout::from_size_align(size, 8).unwrap();
        unsafe {
            let p = SegAlloc.alloc(l);
            assert!(!p.is_null());
            fill(p, size, id);
            // new_size rounded up to the alignment must not overflow isize.
            for new_size in [IMAX - 7, IMAX - 4096 * 2 + 1, 1 << 62] {
                let q = SegAlloc.realloc(p, l, new_size);
                assert!(q.is_null(), "realloc({size} -> {new_size}) returned {q:p}");
                check(p, size, id, "old block after failed realloc");
            }
            SegAlloc.dealloc(p, l);
        }
    }
}

/// The error must come from the allocator (null), not from std's own
/// capacity-overflow check, or the allocator was never asked.
fn assert_alloc_error(debug: String) {
    assert!(
        debug.contains("AllocError"),
        "expected the allocator to fail, got: {debug}"
    );
}

#[test]
fn std_try_reserve_reports_alloc_error() {
    // Vec::try_reserve passes capacity checks for these and reaches the
    // allocator, which must return null so std reports AllocError.
    let mut v: Vec<u8> = vec![1, 2, 3];
    for extra in [IMAX - 64, 1usize << 62, (1usize << 62) + 12345] {
        let e = v
            .try_reserve(extra)
            .expect_err("try_reserve of an impossible size succeeded");
        assert_alloc_error(format!("{e:?}"));
    }
    assert_eq!(v, [1, 2, 3]);
    let mut words: Vec<u64> = Vec::new();
    // 2^59 words = 2^62 bytes: a valid layout, impossible to map.
    let e = words.try_reserve_exact(1 << 59).unwrap_err();
    assert_alloc_error(format!("{e:?}"));
    let mut m: HashMap<u64, u64> = HashMap::new();
    m.insert(1, 2);
    // ~2^57 buckets of 17 bytes: valid layout, impossible to map.
    let e = m.try_reserve(1 << 56).unwrap_err();
    assert_alloc_error(format!("{e:?}"));
    assert_eq!(m[&1], 2);
}

#[test]
fn allocator_still_works_after_failures() {
    for l in huge_layouts() {
        assert!(unsafe { SegAlloc.alloc(l) }.is_null());
    }
    // Normal traffic afterwards, from several threads.
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let bad = Layout::from_size_align(16, 1 << 62).unwrap();
                let mut blocks = Vec::new();
                for i in 0..2000u64 {
                    assert!(unsafe { SegAlloc.alloc(bad) }.is_null());
                    let id = t * 10_000 + i;
                    let size = 1 + (i as usize * 97) % 5000;
                    let mut b = vec![0u8; size];
                    unsafe { fill(b.as_mut_ptr(), size, id) };
                    blocks.push((b, id));
                }
                for (b, id) in &blocks {
                    unsafe { check(b.as_ptr(), b.len(), *id, "after failures") };
                }
                blocks.len()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 2000);
    }
}
