//! A defragmentation step holds back the timed sub-page purge of the
//! calling thread's heap: the step is emptying the very pages that purge
//! would walk, one `madvise` per free OS page, just before the whole pages
//! go back. The purge runs at the first check after the step. The purge
//! of wholly free slices is checked once, at the step's end.
//!
//! `madvise` counts are process-wide, so this binary runs without the test
//! harness, on the main thread alone. The other purges are kept out of the
//! count: no purge budget to pass (`purge_min`), freed segments kept
//! resident (`segment_cache_resident`), and a purge delay longer than the
//! step, after which the sub-page purge is due when the step starts.
use segalloc::defrag::{Budget, MapPass};
use std::collections::BTreeMap;
use std::time::Duration;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

const DELAY_MS: u64 = 300;

fn madvise_calls() -> usize {
    segalloc::stats().os_calls.madvise
}

fn value(k: u64) -> Vec<u8> {
    vec![(k % 251) as u8; 200 + (k % 7) as usize * 100]
}

fn main() {
    for (name, v) in [
        ("purge_delay_ms", DELAY_MS.to_string()),
        ("purge_min", "1G".to_string()),
        ("segment_cache_resident", "1G".to_string()),
        ("sub_purge", "1".to_string()),
    ] {
        segalloc::set_option(name, &v).unwrap();
    }
    // Pages fill up, then lose 90% of their blocks at random: the pages
    // that come back from the full list arm the timed sub-page purge.
    let mut map: BTreeMap<u64, Vec<u8>> = (0..60_000).map(|k| (k, value(k))).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    map.retain(|_, _| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % 10 == 0
    });
    std::thread::sleep(Duration::from_millis(DELAY_MS + 50));

    let before = madvise_calls();
    let mut pass = MapPass::new();
    let p = pass.step(&mut map, Budget::UNLIMITED);
    let during = madvise_calls() - before;
    assert!(
        p.finished && p.moved > 1000,
        "the pass moved {} values",
        p.moved
    );
    assert!(map.iter().all(|(k, v)| *v == value(*k)), "contents changed");
    // The timed purge of wholly free slices, due too, makes a few (1 when
    // this was written); the sub-page purge inside the step made 1,286.
    assert!(
        during <= 64,
        "the step made {during} madvise calls: the timed sub-page purge ran inside it"
    );

    // After the step the purge is still due: the next slow path runs it.
    let before = madvise_calls();
    let fresh: Vec<Box<[u8; 4000]>> = (0..2000).map(|_| Box::new([1u8; 4000])).collect();
    drop(fresh);
    assert!(
        madvise_calls() > before,
        "the sub-page purge did not run after the step"
    );

    // The purge of wholly free slices waits for the step's end too (a
    // check per page the step empties was work for nothing), and is made
    // there: slices free for the purge delay when the step starts are given
    // back by the time it returns, with no allocation after it.
    let mut map: BTreeMap<u64, Vec<u8>> = (0..60_000).map(|k| (k, value(k))).collect();
    map.retain(|k, _| k % 10 == 0);
    let whole: Vec<Box<[u8; 4000]>> = (0..4000).map(|_| Box::new([1u8; 4000])).collect();
    drop(whole); // whole pages free: dirty slices
    std::thread::sleep(Duration::from_millis(DELAY_MS + 50));
    let before = madvise_calls();
    let q = MapPass::new().step(&mut map, Budget::UNLIMITED);
    assert!(
        q.finished && q.moved > 1000,
        "the pass moved {} values",
        q.moved
    );
    assert!(map.iter().all(|(k, v)| *v == value(*k)), "contents changed");
    assert!(
        madvise_calls() > before,
        "the purge due was not made by the step's end"
    );
    println!(
        "defrag_purge: ok ({} and {} values moved)",
        p.moved, q.moved
    );
}
