//! Runtime options read from the environment at start-up: each case runs in
//! a child process (this binary, the `child` test) with its own variables,
//! and must finish within a timeout. The memory limits are in
//! tests/limits.rs, every option's effect from each source in
//! tests/option_effects.rs.

use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

const CASE: &str = "SEGALLOC_OPTIONS_TEST_CASE";

mod common;
use common::{huge_page_advised, kernel_thp_on};

/// Runs `case` with `env` set; returns its stderr, after checking it passed.
fn run(case: &str, env: &[(&str, &str)]) -> String {
    common::run_case(CASE, case, env)
}

fn option(name: &str) -> usize {
    segalloc::runtime_options()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("no option {name}"))
        .get()
}

/// A thread leaves a live block behind and exits; returns how many segments
/// were abandoned right after (none when its heap was parked whole).
fn abandoned_after_a_thread_exits() -> usize {
    let p = std::thread::spawn(|| Box::into_raw(Box::new([7u8; 100])) as usize)
        .join()
        .unwrap();
    let n = segalloc::stats().segments_abandoned;
    // SAFETY: the box leaked above, freed once.
    drop(unsafe { Box::from_raw(p as *mut [u8; 100]) });
    n
}

/// Threads this process had right after the constructor below allocated,
/// before `main` (case `premain` only).
static THREADS_BEFORE_MAIN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A constructor that allocates (case `premain` only): with background
/// purging on, it must not start the purger thread before `main`.
#[used]
#[link_section = ".init_array"]
static ALLOCATE_BEFORE_MAIN: extern "C" fn() = allocate_before_main;

extern "C" fn allocate_before_main() {
    // SAFETY: a NUL-terminated name; the value is only compared.
    let case = unsafe { libc::getenv(c"SEGALLOC_OPTIONS_TEST_CASE".as_ptr()) };
    // SAFETY: a non-null result of getenv is a NUL-terminated string.
    if case.is_null() || unsafe { std::ffi::CStr::from_ptr(case) } != c"premain" {
        return;
    }
    let v: Vec<Box<[u8; 1000]>> = (0..4096).map(|_| Box::new([1; 1000])).collect();
    drop(v);
    THREADS_BEFORE_MAIN.store(
        std::fs::read_dir("/proc/self/task").unwrap().count(),
        std::sync::atomic::Ordering::SeqCst,
    );
}

/// Whether a thread named `segalloc-purge` runs in this process.
fn purger_runs() -> bool {
    std::fs::read_dir("/proc/self/task").unwrap().any(|t| {
        std::fs::read_to_string(t.unwrap().path().join("comm"))
            .is_ok_and(|c| c.trim() == "segalloc-purge")
    })
}

/// Stops the heap profiler in this child (feature `profiling`, when a run
/// forces sampling on with `SEGALLOC_PROF=1`), for the cases that count the
/// resident memory of their small blocks as pages of their size classes: a
/// sampled block has a mapping of its own (8 KiB for a 1000-byte block),
/// given back at its free. What sampling leaves in an idle process is
/// tests/profile_mappings.rs's.
fn without_sampling() {
    #[cfg(feature = "profiling")]
    segalloc::profile::stop();
}

/// What each case checks, in the child.
#[test]
fn child() {
    let Ok(case) = std::env::var(CASE) else {
        return;
    };
    drop(vec![1u8; 100]); // the first heap: the options are read
    match case.as_str() {
        "values" => {
            assert_eq!(option("purge_delay_ms"), 250);
            assert_eq!(option("purge_min"), 3 << 20);
            assert_eq!(option("segment_cache"), 2);
            assert_eq!(option("parked_heaps"), 0);
            assert_eq!(option("segment_cache_resident"), 512 << 10);
            assert_eq!(option("mesh"), 1);
            assert_eq!(option("sub_purge"), 0);
            assert_eq!(abandoned_after_a_thread_exits(), 1, "a heap was parked");
            // Sub-page purge off: sparse pages keep their free OS pages
            // through collect() (on, they go: tests/subpurge.rs).
            let mut v: Vec<Option<Box<[u8; 1000]>>> =
                (0..16 << 10).map(|_| Some(Box::new([1; 1000]))).collect();
            for (i, b) in v.iter_mut().enumerate() {
                if i % 64 != 0 {
                    *b = None;
                }
            }
            segalloc::collect();
            assert_eq!(segalloc::stats().purged_in_pages, 0, "purged inside pages");
            drop(v);
        }
        "bad" => {
            assert_eq!(option("purge_delay_ms"), 100, "default kept");
            assert_eq!(option("purge_min"), 1 << 20, "default kept");
        }
        "default_parks" => {
            assert_eq!(option("parked_heaps"), 8);
            assert_eq!(
                abandoned_after_a_thread_exits(),
                0,
                "the heap was not parked"
            );
        }
        "show" => {}
        "rust_set" => rust_set(),
        "premain" => {
            let before = THREADS_BEFORE_MAIN.load(std::sync::atomic::Ordering::SeqCst);
            assert_eq!(before, 1, "threads right after a constructor allocated");
            // A slow path in main starts the purger.
            let v: Vec<Box<[u8; 1000]>> = (0..4096).map(|_| Box::new([1; 1000])).collect();
            drop(v);
            assert!(purger_runs(), "no purger thread after main allocated");
        }
        "thp" | "no_thp" => {
            let v = vec![1u8; 8 << 20];
            let advised = huge_page_advised(v.as_ptr() as usize);
            assert_eq!(advised, case == "thp", "VmFlags hg on the block's mapping");
        }
        "large_cache" => {
            // Four 8 MiB blocks live at once, then freed: the cache keeps
            // what its cap lets it (by default its floor, 32 MiB).
            let cap = option("large_cache");
            let blocks: Vec<Vec<u8>> = (0..4).map(|i| vec![i as u8; 8 << 20]).collect();
            drop(blocks);
            let cached = segalloc::stats().large_cached;
            eprintln!("large_cache {cap}: {cached} bytes cached");
            assert!(cached <= cap, "{cached} cached over the cap {cap}");
            assert!(cached >= cap.min(24 << 20), "{cached} cached under {cap}");
        }
        "page_source" => {
            let brk = option("page_source") == 1;
            // Small blocks: segments, from the break when it is chosen.
            let v: Vec<Box<[u8; 64]>> = (0..100_000).map(|_| Box::new([1; 64])).collect();
            let calls = segalloc::stats().os_calls.brk;
            assert_eq!(
                calls > 0,
                brk,
                "brk calls {calls} with page_source brk {brk}"
            );
            drop(v);
        }
        "background_idle_500" => {
            without_sampling();
            // The case: 500 MiB freed by a thread that then idles;
            // its 10 MiB of live blocks sit together (allocated first).
            let on = option("background") == 1;
            let delay = option("purge_delay_ms") as u128;
            let (base, freed, samples) = idle_after_freeing(10, 500);
            let last = samples.last().unwrap().1;
            // Live blocks (10 MiB of 1000-byte blocks in 1024-byte ones)
            // plus what segalloc may keep: purge_min (1 MiB), the kept free
            // segments (2 MiB resident) and the metadata of 128 segments.
            let target = base + (10 << 20) + (3 << 20) + (1 << 20);
            let within = samples
                .iter()
                .find(|s| s.1 <= target + target / 10)
                .map(|s| s.0);
            eprintln!(
                "background {on}: RSS {} MiB after freeing 500 MiB, {} MiB idle; live plus reserve {} MiB, within 10% after {within:?}",
                freed >> 20,
                last >> 20,
                target >> 20
            );
            if on {
                let t = within.expect("RSS never came within 10% of live plus reserve");
                assert!(
                    t.as_millis() <= 2 * delay,
                    "within 10% of live plus reserve after {t:?}, past twice the purge delay ({delay} ms)"
                );
            } else {
                // The frees give most of it back at once (the heap keeps a
                // budget of free memory); the rest stays without a purger:
                // nothing goes back while the process idles. (On a loaded
                // machine the frees may outlast the purge delay, and the
                // heap's own timed purge then runs during them: RSS may be
                // within 10% already when the idling starts, which says
                // nothing about a purger.)
                let least = samples.iter().map(|s| s.1).min().unwrap();
                assert!(
                    least + (2 << 20) >= freed,
                    "memory went back without a purger: {} MiB after the frees, {} MiB idle",
                    freed >> 20,
                    least >> 20
                );
                if freed > target + target / 10 {
                    assert!(within.is_none(), "memory went back without a purger");
                }
            }
        }
        "background" => {
            without_sampling();
            let on = option("background") == 1;
            let (before, freed, later, settled) = idle_thread_rss();
            eprintln!(
                "background {on}: RSS {} MiB, {} MiB after the frees, {} MiB idle",
                before >> 20,
                freed >> 20,
                later >> 20
            );
            assert!(
                freed > before + (40 << 20),
                "the frees gave memory back at once"
            );
            if on {
                assert!(later < before + (12 << 20), "the idle heap kept its memory");
                // The target: within twice the purge delay.
                let delay = option("purge_delay_ms") as u128;
                assert!(
                    settled.as_millis() <= 2 * delay,
                    "RSS settled after {settled:?}, past twice the purge delay ({delay} ms)"
                );
            } else {
                assert!(
                    later > before + (40 << 20),
                    "memory went back without a purger"
                );
            }
        }
        "background_nudge" => {
            without_sampling();
            let on = option("background") == 1;
            let (purged, elapsed, freed) = sparse_then_steady();
            eprintln!(
                "nudge: background {on}: {} KiB purged inside pages of {} KiB freed, after {elapsed:?}",
                purged >> 10,
                freed >> 10
            );
            if on {
                assert!(
                    purged >= NUDGE_PURGED,
                    "{purged} bytes purged inside pages: the owner, allocating only from its free lists, was never brought to its slow path"
                );
            }
        }
        "background_stress" => {
            // Threads that alternate bursts of allocation with pauses about
            // as long as the purge delay, so that the purger often purges a
            // heap (tens of MiB of free pages) just as its thread comes back
            // to carve new pages from it; every block's contents are
            // checked. A purge racing its owner zeroes live blocks.
            let threads: Vec<_> = (0..6u64)
                .map(|t| {
                    std::thread::spawn(move || {
                        let mut x = t + 1;
                        let mut rnd = move || {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            x
                        };
                        let mut live: Vec<Vec<u64>> = Vec::new();
                        let mut bad = 0;
                        let end = Instant::now() + Duration::from_millis(2500);
                        while Instant::now() < end {
                            for _ in 0..2000 {
                                let n = 512 + (rnd() % 1536) as usize;
                                live.push(vec![rnd() | 1; n]);
                            }
                            bad += live.iter().filter(|v| v.iter().any(|&w| w != v[0])).count();
                            let mut i = 0;
                            live.retain(|_| {
                                i += 1;
                                i % 8 == 0
                            });
                            live.truncate(4000);
                            std::thread::sleep(Duration::from_millis(5 + rnd() % 25));
                        }
                        bad + live.iter().filter(|v| v.iter().any(|&w| w != v[0])).count()
                    })
                })
                .collect();
            let bad: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
            assert_eq!(bad, 0, "live blocks changed");
        }
        "verbose" => {
            use std::alloc::{alloc, Layout};
            // Past the limit: fails, with a line.
            let big = Layout::from_size_align(100 << 20, 8).unwrap();
            // SAFETY: a valid layout; null is the expected answer (kept
            // opaque: the compiler may assume a global allocation succeeds).
            let p = unsafe { alloc(std::hint::black_box(big)) };
            assert!(std::hint::black_box(p).is_null(), "{p:p}");
            // Beyond any address space: mmap fails, with a line.
            let set = segalloc::set_option("limit", "0");
            assert!(set.is_ok());
            let huge = Layout::from_size_align(1 << 60, 8).unwrap();
            // SAFETY: as above.
            let p = unsafe { alloc(std::hint::black_box(huge)) };
            assert!(std::hint::black_box(p).is_null(), "{p:p}");
            // Huge pages asked for: a line only if the kernel has them off.
            drop(vec![1u8; 8 << 20]);
        }
        "background_fork" => {
            assert_eq!(option("background"), 1);
            // The purger starts in this process ...
            idle_thread_rss();
            // ... and again in a forked child, which has none at first.
            // SAFETY: the child runs only the workload and `_exit`s.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0);
            if pid == 0 {
                let (before, _, later, _) = idle_thread_rss();
                let ok = later < before + (12 << 20);
                eprintln!(
                    "forked child: RSS {} MiB idle, from {} MiB",
                    later >> 20,
                    before >> 20
                );
                // SAFETY: ends the forked child without running the test
                // harness's exit path twice.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            let mut status = 0;
            // SAFETY: waits for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "the forked child's idle heap kept its memory: status {status:#x}"
            );
        }
        "thp_purge" => {
            let thp = option("thp") == 1 && kernel_thp_on();
            let before = segalloc::stats().os_calls;
            // 32 MiB of small blocks; free all but one in the first huge
            // page of each 4 MiB segment, so that each segment's second
            // huge page is wholly free and the segment is not. (Keeping
            // every 5000th block left no huge page wholly free in about
            // one run in six with the profiler sampling blocks away:
            // a segment's first huge page holds its header.)
            const SEGMENT: usize = 4 << 20;
            let mut v: Vec<Option<Box<[u8; 1000]>>> =
                (0..32 << 10).map(|_| Some(Box::new([1; 1000]))).collect();
            let mut kept_in: Vec<usize> = Vec::with_capacity(64);
            for b in v.iter_mut() {
                let a = b.as_ref().map_or(0, |b| b.as_ptr() as usize);
                if a % SEGMENT < SEGMENT / 2 && !kept_in.contains(&(a / SEGMENT)) {
                    kept_in.push(a / SEGMENT);
                    continue;
                }
                *b = None;
            }
            segalloc::collect();
            let after = segalloc::stats().os_calls;
            let (purges, purged) = (after.purges - before.purges, after.purged - before.purged);
            eprintln!("thp {thp}: {purges} purges of {purged} bytes");
            assert!(purges > 0, "nothing purged");
            assert_eq!(
                purged == purges * (2 << 20),
                thp,
                "{purges} purges of {purged} bytes: each a whole huge page with thp {thp}"
            );
            drop(v);
        }
        other => panic!("unknown case {other}"),
    }
}

/// Every option set from Rust (`set_option`, by name, with a value other
/// than its default), read back; then, for those whose effect shows at
/// once, the effect (the parent checks `show_stats` and `verbose` on
/// stderr).
fn rust_set() {
    use segalloc::OptionKind;
    use std::alloc::{alloc, Layout};
    for o in segalloc::runtime_options() {
        let (text, want): (&str, usize) = match (o.name, o.kind) {
            ("limit" | "limit_soft", _) => ("64G", 64 << 30),
            (_, OptionKind::Flag) => {
                if o.default == 0 {
                    ("1", 1)
                } else {
                    ("0", 0)
                }
            }
            (_, OptionKind::Choice(words)) => (words[1], 1),
            (_, OptionKind::Bytes) => ("3M", 3 << 20),
            (_, OptionKind::Millis) => ("250", 250),
            (_, OptionKind::Count) => ("3", 3),
        };
        assert_eq!(segalloc::set_option(o.name, text), Ok(()), "{}", o.name);
        assert_eq!(o.get(), want, "{} after set_option({text:?})", o.name);
    }
    // The effects.
    assert_eq!(
        huge_page_advised(vec![1u8; 8 << 20].as_ptr() as usize),
        kernel_thp_on(),
        "thp"
    );
    segalloc::set_option("parked_heaps", "0").unwrap();
    assert_eq!(
        abandoned_after_a_thread_exits(),
        1,
        "parked_heaps 0: a heap was parked"
    );
    segalloc::set_option("large_cache", "0").unwrap();
    drop(vec![1u8; 8 << 20]);
    assert_eq!(segalloc::stats().large_cached, 0, "large_cache 0");
    let brk = segalloc::stats().os_calls.brk;
    std::thread::spawn(|| drop((0..50_000).map(|_| Box::new([1u8; 64])).collect::<Vec<_>>()))
        .join()
        .unwrap();
    assert!(segalloc::stats().os_calls.brk > brk, "page_source brk");
    drop((0..4096).map(|_| Box::new([1u8; 1000])).collect::<Vec<_>>());
    assert!(purger_runs(), "background 1");
    segalloc::set_option("limit", "64M").unwrap();
    let big = Layout::from_size_align(100 << 20, 8).unwrap();
    // SAFETY: a valid layout; null is the expected answer (kept opaque).
    let p = unsafe { alloc(std::hint::black_box(big)) };
    assert!(std::hint::black_box(p).is_null(), "limit 64M");
    segalloc::set_option("limit", "0").unwrap();
}

/// Resident memory, read without allocating (so this thread's heap stays
/// idle).
fn rss_now() -> usize {
    let mut buf = [0u8; 128];
    // SAFETY: a NUL-terminated path, our buffer within its length, and the
    // descriptor we opened.
    let n = unsafe {
        let fd = libc::open(c"/proc/self/statm".as_ptr(), libc::O_RDONLY);
        assert!(fd >= 0);
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    let mut fields = buf[..n as usize].split(|&b| b == b' ');
    fields.next();
    let pages = fields
        .next()
        .unwrap()
        .iter()
        .fold(0usize, |a, &d| a * 10 + (d - b'0') as usize);
    pages * 4096
}

/// One thread allocates 64 MiB (`IDLE_TEST_MIB` to change it) in 1000-byte
/// blocks, frees all but one in 1024 (so every segment keeps a page in use
/// and stays with the heap) and then sleeps, allocating nothing, for 10
/// purge delays. Returns the RSS before, right after the frees, and at the
/// end of the sleep (read by this thread, which does not allocate while
/// the other sleeps), and how long after the frees RSS took to fall within
/// 10% of that last figure (also printed).
fn idle_thread_rss() -> (usize, usize, usize, Duration) {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    let delay = option("purge_delay_ms") as u64;
    let phase = Arc::new(AtomicUsize::new(0));
    let p = phase.clone();
    let mib: usize = std::env::var("IDLE_TEST_MIB").map_or(64, |v| v.parse().unwrap());
    let before = rss_now();
    let t = std::thread::spawn(move || {
        let mut v: Vec<Option<Box<[u8; 1000]>>> = (0..(mib << 20) / 1000)
            .map(|_| Some(Box::new([7; 1000])))
            .collect();
        for (i, b) in v.iter_mut().enumerate() {
            if i % 1024 != 0 {
                *b = None;
            }
        }
        p.store(1, SeqCst);
        while p.load(SeqCst) == 1 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(v);
    });
    while phase.load(SeqCst) == 0 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let freed = rss_now();
    let idle = Instant::now();
    let mut seen = Vec::with_capacity(200);
    for _ in 0..200 {
        std::thread::sleep(std::time::Duration::from_millis(delay / 20));
        seen.push((idle.elapsed(), rss_now()));
    }
    let later = seen.last().unwrap().1;
    let settled = seen.iter().find(|s| s.1 <= later + later / 10).unwrap().0;
    eprintln!(
        "RSS {} MiB after the frees, within 10% of its final {} MiB after {settled:?} (purge delay {delay} ms)",
        freed >> 20,
        later >> 20
    );
    phase.store(2, SeqCst);
    t.join().unwrap();
    (before, freed, later, settled)
}

/// What the background purger must get purged inside sparse pages in
/// `sparse_then_steady` (of about 54 MiB freed, of which about a quarter
/// lies in wholly free OS pages).
const NUDGE_PURGED: usize = 8 << 20;

/// Fills 160,000 blocks of 256-512 bytes, frees nine in ten at random,
/// then allocates and frees a few blocks at a time for up to 5 s, as a
/// server after a burst of deletions: every allocation is served from the
/// blocks just freed, so no allocation slow path runs. Returns the bytes
/// purged inside pages in use since the frees, when the loop stopped (at
/// `NUDGE_PURGED` or 5 s), and the bytes freed; checks the live blocks.
fn sparse_then_steady() -> (usize, Duration, usize) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut v: Vec<Option<Vec<u8>>> = (0..160_000u32)
        .map(|i| Some(vec![i as u8; 256 + (rnd() % 257) as usize]))
        .collect();
    let mut freed = 0;
    for b in v.iter_mut() {
        if rnd() % 10 != 0 {
            freed += b.take().map_or(0, |b| b.len());
        }
    }
    let before = segalloc::stats().purged_in_pages;
    let start = Instant::now();
    let mut purged = 0;
    while start.elapsed() < Duration::from_secs(5) {
        let few: Vec<Vec<u8>> = (0..8).map(|i| vec![i; 300]).collect();
        drop(few);
        std::thread::sleep(Duration::from_millis(2));
        purged = segalloc::stats().purged_in_pages.saturating_sub(before);
        if purged >= NUDGE_PURGED {
            break;
        }
    }
    let elapsed = start.elapsed();
    for (i, b) in v.iter().enumerate() {
        if let Some(b) = b {
            assert!(b.iter().all(|&c| c == i as u8), "block {i} changed");
        }
    }
    (purged, elapsed, freed)
}

/// One thread allocates `live_mib` MiB in 1000-byte blocks and keeps them,
/// then `freed_mib` MiB more, frees those and sleeps, allocating nothing,
/// for 10 purge delays. Returns the RSS before, right after the frees, and
/// (time since the frees, RSS) every twentieth of a delay.
fn idle_after_freeing(live_mib: usize, freed_mib: usize) -> (usize, usize, Vec<(Duration, usize)>) {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    let delay = option("purge_delay_ms") as u64;
    let phase = Arc::new(AtomicUsize::new(0));
    let p = phase.clone();
    let base = rss_now();
    let t = std::thread::spawn(move || {
        let blocks = |mib: usize| -> Vec<Box<[u8; 1000]>> {
            (0..(mib << 20) / 1000)
                .map(|_| Box::new([7; 1000]))
                .collect()
        };
        let live = blocks(live_mib);
        drop(blocks(freed_mib));
        p.store(1, SeqCst);
        while p.load(SeqCst) == 1 {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(live.iter().all(|b| b.iter().all(|&x| x == 7)));
    });
    while phase.load(SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let freed = rss_now();
    let idle = Instant::now();
    let mut seen = Vec::with_capacity(200);
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(delay / 20));
        seen.push((idle.elapsed(), rss_now()));
    }
    phase.store(2, SeqCst);
    t.join().unwrap();
    (base, freed, seen)
}

#[test]
fn variables_set_the_options() {
    run(
        "values",
        &[
            ("SEGALLOC_PURGE_DELAY_MS", "250"),
            ("SEGALLOC_PURGE_MIN", "3M"),
            ("SEGALLOC_SEGMENT_CACHE", " 2 "),
            ("SEGALLOC_PARKED_HEAPS", "0"),
            ("SEGALLOC_SEGMENT_CACHE_RESIDENT", "512K"),
            ("SEGALLOC_MESH", "1"),
            ("SEGALLOC_SUB_PURGE", "0"),
        ],
    );
}

/// Every option from Rust (`set_option`): see [`rust_set`]. `show_stats`
/// and `verbose`, set there, show on stderr.
#[test]
fn every_option_is_set_from_rust() {
    let err = run("rust_set", &[]);
    assert!(
        err.lines().any(|l| l.starts_with("options:")),
        "show_stats: {err}"
    );
    assert!(err.contains("segalloc: committing "), "verbose: {err}");
}

#[test]
fn a_bad_value_is_named_on_one_line_and_the_default_kept() {
    let err = run(
        "bad",
        &[
            ("SEGALLOC_PURGE_DELAY_MS", "soon"),
            ("SEGALLOC_PURGE_MIN", "12Q"),
        ],
    );
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("segalloc:")).collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].contains("SEGALLOC_PURGE_DELAY_MS=soon") && lines[0].contains("keeping 100"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("SEGALLOC_PURGE_MIN=12Q") && lines[1].contains("keeping 1048576"),
        "{}",
        lines[1]
    );
}

#[test]
fn heaps_are_parked_by_default() {
    run("default_parks", &[]);
}

#[test]
fn show_stats_prints_the_options_at_exit() {
    let err = run(
        "show",
        &[
            ("SEGALLOC_SHOW_STATS", "1"),
            ("SEGALLOC_SEGMENT_CACHE", "5"),
        ],
    );
    let line = err
        .lines()
        .find(|l| l.starts_with("options:"))
        .unwrap_or_else(|| panic!("no options line in\n{err}"));
    assert!(line.contains(" segment_cache=5"), "{line}");
    assert!(line.contains(" purge_delay_ms=100"), "{line}");
    for o in segalloc::runtime_options() {
        assert!(
            line.contains(&format!(" {}=", o.name)),
            "{} missing: {line}",
            o.name
        );
    }
}

#[test]
fn the_large_block_cache_keeps_what_its_option_allows() {
    run("large_cache", &[("SEGALLOC_LARGE_CACHE", "0")]);
    run("large_cache", &[("SEGALLOC_LARGE_CACHE", "16M")]);
    run("large_cache", &[]);
}

#[test]
fn the_page_source_option_takes_segments_from_the_break() {
    run("page_source", &[("SEGALLOC_PAGE_SOURCE", "brk")]);
    run("page_source", &[]);
    let err = run("page_source", &[("SEGALLOC_PAGE_SOURCE", "sbrk")]);
    assert!(
        err.contains("SEGALLOC_PAGE_SOURCE=sbrk: not one of mmap brk"),
        "{err}"
    );
}

#[test]
fn thp_marks_large_mappings_for_huge_pages() {
    if !kernel_thp_on() {
        println!("note: this kernel has transparent huge pages off; skipped");
        return;
    }
    run("thp", &[("SEGALLOC_THP", "1")]);
    run("no_thp", &[]);
}

#[test]
fn verbose_tells_of_options_failures_limits_and_the_purger() {
    let err = run(
        "verbose",
        &[
            ("SEGALLOC_VERBOSE", "1"),
            ("SEGALLOC_LIMIT", "64M"),
            ("SEGALLOC_BACKGROUND", "1"),
            ("SEGALLOC_THP", "1"),
        ],
    );
    let has = |s: &str| {
        err.lines()
            .any(|l| l.starts_with("segalloc: ") && l.contains(s))
    };
    assert!(has("SEGALLOC_LIMIT=64M: limit 67108864"), "{err}");
    assert!(has("SEGALLOC_VERBOSE=1: verbose 1"), "{err}");
    assert!(has("bytes would pass the limit of 67108864"), "{err}");
    assert!(has("background purging thread started"), "{err}");
    assert!(has("mmap of "), "{err}");
    let thp_off = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .map_or(true, |s| s.contains("[never]"));
    assert_eq!(has("the option thp does nothing"), thp_off, "{err}");
    // Without it: quiet.
    let err = run(
        "verbose",
        &[("SEGALLOC_LIMIT", "64M"), ("SEGALLOC_THP", "1")],
    );
    assert!(!err.contains("segalloc:"), "{err}");
}

#[test]
fn a_background_thread_purges_idle_heaps() {
    // A 200 ms delay: the time the purge waits for a CPU on a loaded
    // machine (up to ~150 ms measured) counts less against twice the delay.
    run(
        "background",
        &[
            ("SEGALLOC_BACKGROUND", "1"),
            ("SEGALLOC_PURGE_DELAY_MS", "200"),
        ],
    );
    run("background", &[]);
}

/// The target: an idle process that freed 500 MiB comes back to
/// within 10% of its live memory plus segalloc's reserve within twice the
/// purge delay, with background purging on; without it, it does not.
#[test]
fn an_idle_process_that_freed_500_mib_returns_to_its_live_memory() {
    for on in ["1", "0"] {
        let err = run(
            "background_idle_500",
            &[
                ("SEGALLOC_BACKGROUND", on),
                ("SEGALLOC_PURGE_DELAY_MS", "200"),
            ],
        );
        for line in err.lines().filter(|l| l.starts_with("background ")) {
            println!("{line}");
        }
    }
}

/// A thread that, after freeing most of its blocks at random, allocates
/// only from what it freed never reaches its slow path, where the sub-page
/// purge runs: with background purging on, the purger brings it there
/// (`heap::nudge`), and the free OS pages inside its sparse pages go back.
#[test]
fn the_background_purger_gets_sparse_pages_purged_in_a_steady_thread() {
    for on in ["1", "0"] {
        let err = run(
            "background_nudge",
            &[
                ("SEGALLOC_BACKGROUND", on),
                ("SEGALLOC_PURGE_DELAY_MS", "50"),
            ],
        );
        for line in err.lines().filter(|l| l.starts_with("nudge: ")) {
            println!("{line}");
        }
    }
}

/// A constructor that allocates does not start the purger: it starts once
/// `main` has begun (see `src/startup.rs`).
#[test]
fn the_background_purger_never_starts_before_main() {
    let err = run(
        "premain",
        &[("SEGALLOC_BACKGROUND", "1"), ("SEGALLOC_VERBOSE", "1")],
    );
    assert!(err.contains("background purging waits for main"), "{err}");
    assert!(err.contains("background purging thread started"), "{err}");
}

#[test]
fn background_purges_never_touch_live_blocks() {
    run(
        "background_stress",
        &[
            ("SEGALLOC_BACKGROUND", "1"),
            ("SEGALLOC_PURGE_DELAY_MS", "10"),
        ],
    );
}

#[test]
fn the_background_purger_restarts_in_a_forked_child() {
    run("background_fork", &[("SEGALLOC_BACKGROUND", "1")]);
}

#[test]
fn with_thp_purges_are_whole_huge_pages() {
    run("thp_purge", &[("SEGALLOC_THP", "1")]);
    run("thp_purge", &[]);
}
