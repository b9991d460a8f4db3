//! The heap profiler's mappings (feature `profiling`): a sampled small block
//! is served by a mapping of its own (`large::sampled`), so the profiler
//! must neither take the mappings the rest of the process needs nor keep
//! the freed ones in an idle process. Each case runs in a child process
//! (this binary's `child` test), with its own variables and a timeout:
//! the figures are process-wide.

use std::time::Duration;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

mod common;

const CASE: &str = "SEGALLOC_PROFILE_MAPPINGS_CASE";

/// The number of mappings of this process: the lines of `/proc/self/maps`,
/// read into a buffer on the stack (no allocation, so no sample is taken
/// and no cached mapping reused while counting).
fn mappings() -> usize {
    let mut buf = [0u8; 16 << 10];
    let mut lines = 0;
    // SAFETY: a NUL-terminated path, reads into our buffer within its
    // length, and the descriptor we opened.
    unsafe {
        let fd = libc::open(c"/proc/self/maps".as_ptr(), libc::O_RDONLY);
        assert!(fd >= 0);
        loop {
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            assert!(n >= 0);
            if n == 0 {
                break;
            }
            lines += buf[..n as usize].iter().filter(|&&b| b == b'\n').count();
        }
        libc::close(fd);
    }
    lines
}

/// The kernel's limit on a process's mappings.
fn max_map_count() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .map_or(65_530, |s| s.trim().parse().unwrap())
}

/// What each case checks, in the child.
#[test]
fn child() {
    let Ok(case) = std::env::var(CASE) else {
        return;
    };
    match case.as_str() {
        "many_live_samples" => {
            // Nearly every 64-byte block sampled (rate 16 bytes), and more
            // of them live than the process may have mappings: past the
            // profiler's bound they are ordinary blocks, and every
            // allocation succeeds (before, the substitutes took every
            // mapping and an allocation aborted).
            let limit = max_map_count();
            let n = limit + limit / 4;
            let v: Vec<Box<[u8; 64]>> = (0..n).map(|i| Box::new([i as u8; 64])).collect();
            let s = segalloc::stats();
            let p = segalloc::profile::snapshot();
            eprintln!(
                "{n} live blocks: {} sampled, {} samples dropped, {} mappings (limit {limit})",
                s.sampled_objects,
                p.dropped,
                mappings()
            );
            assert!(
                s.sampled_objects <= limit / 2 + 64,
                "{} live substitutes, limit {limit}",
                s.sampled_objects
            );
            assert!(
                s.sampled_objects > limit / 4,
                "{} sampled",
                s.sampled_objects
            );
            assert!(p.dropped > 0, "no sample dropped");
            // Segments and large blocks still get mappings, from another
            // thread (a new heap) too.
            let big: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 1 << 20]).collect();
            std::thread::spawn(|| {
                let w: Vec<Box<[u8; 1000]>> = (0..20_000).map(|_| Box::new([3; 1000])).collect();
                assert!(w.iter().all(|b| b.iter().all(|&x| x == 3)));
            })
            .join()
            .unwrap();
            assert!(v.iter().enumerate().all(|(i, b)| b[63] == i as u8));
            assert!(big.iter().enumerate().all(|(i, b)| b[12345] == i as u8));
            drop(v);
            // The profile, the vectors and the harness hold a few samples.
            let left = segalloc::stats().sampled_objects;
            assert!(left < 1000, "{left} substitutes live after the frees");
        }
        "idle_gives_back" => {
            // 3,000-byte blocks at a 4 KiB rate: about one in two sampled,
            // each in a 4 KiB mapping; freed, up to 256 of them stay
            // cached for the next samples. With the background purger an
            // idle process unmaps them once they have waited the purge
            // delay (before, only the next free of a sample did).
            let on = std::env::var("SEGALLOC_BACKGROUND").is_ok_and(|v| v == "1");
            let delay = 100;
            let v: Vec<Vec<u8>> = (0..2000).map(|_| Vec::with_capacity(3000)).collect();
            let sampled = segalloc::stats().sampled_objects;
            assert!(sampled > 500, "{sampled} sampled");
            drop(v);
            let before = mappings();
            // Idle: nothing allocated from here to the second count.
            std::thread::sleep(Duration::from_millis(5 * delay));
            let after = mappings();
            eprintln!("background {on}: {before} mappings after the frees, {after} idle");
            if on {
                assert!(
                    after + 200 <= before,
                    "{before} mappings after the frees, {after} after {} ms idle",
                    5 * delay
                );
            } else {
                assert!(
                    after + 50 > before,
                    "{before} then {after} without a purger"
                );
            }
        }
        other => panic!("unknown case {other}"),
    }
}

fn run(case: &str, env: &[(&str, &str)]) -> String {
    common::run_case(CASE, case, env)
}

#[test]
fn samples_never_take_the_mappings_the_process_needs() {
    let err = run(
        "many_live_samples",
        &[("SEGALLOC_PROF", "1"), ("SEGALLOC_PROF_RATE", "16")],
    );
    for line in err.lines().filter(|l| l.contains("live blocks")) {
        println!("{line}");
    }
}

#[test]
fn an_idle_process_gives_back_the_sampled_blocks_mappings() {
    for on in ["1", "0"] {
        let err = run(
            "idle_gives_back",
            &[
                ("SEGALLOC_PROF", "1"),
                ("SEGALLOC_PROF_RATE", "4K"),
                ("SEGALLOC_BACKGROUND", on),
                ("SEGALLOC_PURGE_DELAY_MS", "100"),
            ],
        );
        for line in err.lines().filter(|l| l.starts_with("background ")) {
            println!("{line}");
        }
    }
}
