//! Misuse gets a clear answer, not silent corruption: each misuse runs in a
//! child process (this same binary, the `child` test, told what to do by an
//! environment variable), which must die of SIGABRT after one line on stderr
//! that names the error and the address.
//!
//! Always on, from the owning thread and from others: a free of a pointer
//! segalloc does not own, mapped or not (the segment registry), a free of
//! an interior pointer of a small block (the block-start check) or of a
//! large block, a double free (or realloc after free) of a large block while
//! its mapping waits in the large-block cache, and a double free or realloc
//! of a freed small block (the freed mark, `src/freed.rs`). With the
//! `secure` feature (`cargo test --release --features secure --test
//! misuse`) also an overwrite of a freed block's link detected when the free
//! list reaches it.

use std::alloc::{GlobalAlloc, Layout};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

const SCENARIO: &str = "SEGALLOC_MISUSE_SCENARIO";

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// A 4 MiB-aligned address inside a fresh mapping of our own (not segalloc's),
/// whose first page reads zero.
fn foreign_aligned() -> *mut u8 {
    // SAFETY: an anonymous mapping; we only read and write inside it.
    unsafe {
        let len = 12 << 20;
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        let aligned = (p as usize + (4 << 20) - 1) & !((4 << 20) - 1);
        aligned as *mut u8
    }
}

/// Does the misuse named by the environment; never returns normally when the
/// check works.
#[test]
fn child() {
    let Ok(which) = std::env::var(SCENARIO) else {
        return;
    };
    // SAFETY: none of this is safe: each arm misuses the allocator on purpose,
    // in a child process, to check that segalloc stops it.
    unsafe {
        match which.as_str() {
            "foreign_mapped" => {
                let p = foreign_aligned().add(64);
                GLOBAL.dealloc(p, layout(16));
            }
            "large_interior" => {
                let p = GLOBAL.alloc(layout(3 << 20));
                GLOBAL.dealloc(p.add(4096), layout(3 << 20));
            }
            "large_double_free" => {
                let p = GLOBAL.alloc(layout(3 << 20));
                GLOBAL.dealloc(p, layout(3 << 20));
                GLOBAL.dealloc(p, layout(3 << 20));
            }
            "large_realloc_freed" => {
                let p = GLOBAL.alloc(layout(5 << 20));
                GLOBAL.dealloc(p, layout(5 << 20));
                let q = GLOBAL.realloc(p, layout(5 << 20), 6 << 20);
                GLOBAL.dealloc(q, layout(6 << 20));
            }
            "large_freed_interior" => {
                let p = GLOBAL.alloc(layout(3 << 20));
                GLOBAL.dealloc(p, layout(3 << 20));
                GLOBAL.dealloc(p.add(64 << 10), layout(16));
            }
            "double_free" => {
                let keep = GLOBAL.alloc(layout(64));
                let p = GLOBAL.alloc(layout(64));
                GLOBAL.dealloc(p, layout(64));
                GLOBAL.dealloc(p, layout(64));
                GLOBAL.dealloc(keep, layout(64));
            }
            "owner_then_thread" | "thread_then_owner" => {
                let keep = GLOBAL.alloc(layout(64));
                let p = GLOBAL.alloc(layout(64)) as usize;
                let by_thread = move || {
                    std::thread::spawn(move || GLOBAL.dealloc(p as *mut u8, layout(64)))
                        .join()
                        .unwrap()
                };
                if which == "thread_then_owner" {
                    by_thread();
                    GLOBAL.dealloc(p as *mut u8, layout(64));
                } else {
                    GLOBAL.dealloc(p as *mut u8, layout(64));
                    by_thread();
                }
                for _ in 0..100_000 {
                    std::hint::black_box(GLOBAL.alloc(layout(64)));
                }
                GLOBAL.dealloc(keep, layout(64));
            }
            "small_interior" => {
                let p = GLOBAL.alloc(layout(64));
                GLOBAL.dealloc(p.add(16), layout(48));
            }
            "small_interior_thread" => {
                let p = GLOBAL.alloc(layout(64)) as usize;
                std::thread::spawn(move || GLOBAL.dealloc((p + 8) as *mut u8, layout(56)))
                    .join()
                    .unwrap();
            }
            "realloc_interior" => {
                let p = GLOBAL.alloc(layout(64));
                let q = GLOBAL.realloc(p.add(16), layout(48), 200);
                GLOBAL.dealloc(q, layout(200));
            }
            "foreign_unmapped" => {
                GLOBAL.dealloc(0x1234_5670_0040 as *mut u8, layout(16));
            }
            "foreign_unmapped_thread" => {
                std::thread::spawn(|| GLOBAL.dealloc(0x1234_5670_0040 as *mut u8, layout(16)))
                    .join()
                    .unwrap();
            }
            "foreign_high" => {
                GLOBAL.dealloc(0xffff_8000_0000_1000_usize as *mut u8, layout(16));
            }
            "large_interior_deep" | "large_interior_deep_thread" => {
                // Past the 4 MiB stretch that holds the block's header.
                let p = GLOBAL.alloc(layout(12 << 20)) as usize + (9 << 20);
                if which == "large_interior_deep" {
                    GLOBAL.dealloc(p as *mut u8, layout(16));
                } else {
                    std::thread::spawn(move || GLOBAL.dealloc(p as *mut u8, layout(16)))
                        .join()
                        .unwrap();
                }
            }
            "purged_large_double_free" | "purged_large_double_free_thread" => {
                // As below, in pages of several slices (48 KiB blocks, four
                // to a page of three slices): a freed block in a page that
                // keeps others live is given back whole, its mark with it.
                // Two stay live in each page, so that the second free does
                // not empty it (which the slow path would check anyway).
                segalloc::set_option("mesh", "0").unwrap();
                #[cfg(feature = "profiling")]
                segalloc::profile::stop();
                let l = layout(48 << 10);
                let ps: Vec<usize> = (0..64).map(|_| GLOBAL.alloc(l) as usize).collect();
                let live = |i: usize| i % 4 == 0 || i % 4 == 3;
                // Before the frees: a timed purge may run among them.
                let before = segalloc::stats().purged_in_pages;
                for (i, &p) in ps.iter().enumerate() {
                    if !live(i) {
                        GLOBAL.dealloc(p as *mut u8, l);
                    }
                }
                segalloc::collect();
                assert!(
                    segalloc::stats().purged_in_pages >= before + (48 << 10),
                    "nothing purged"
                );
                let p = ps[1];
                if which == "purged_large_double_free" {
                    GLOBAL.dealloc(p as *mut u8, l);
                } else {
                    free_on_another_thread_and_settle(p, l);
                }
                for (i, &q) in ps.iter().enumerate() {
                    if live(i) {
                        GLOBAL.dealloc(q as *mut u8, l);
                    }
                }
            }
            "purged_double_free"
            | "purged_double_free_thread"
            | "purged_realloc"
            | "purged_realloc_thread" => {
                // The check of purged OS pages, so no meshing (with
                // SEGALLOC_MESH=1 the shuffled pages below are disjoint:
                // `collect()` would merge them whole and purge nothing).
                segalloc::set_option("mesh", "0").unwrap();
                // Blocks in pages only: a block the heap profiler sampled
                // (`SEGALLOC_PROF=1`) lives in a mapping of its own, where
                // nothing is purged, and may be the one picked below.
                #[cfg(feature = "profiling")]
                segalloc::profile::stop();
                // Sparse pages of 512-byte blocks: one block in 32 stays.
                let l = layout(512);
                let ps: Vec<usize> = (0..2048).map(|_| GLOBAL.alloc(l) as usize).collect();
                let live: Vec<usize> = ps.iter().copied().step_by(32).collect();
                for (i, &p) in ps.iter().enumerate() {
                    if i % 32 != 0 {
                        GLOBAL.dealloc(p as *mut u8, l);
                    }
                }
                segalloc::collect(); // purges the OS pages with no live block
                assert!(segalloc::stats().purged_in_pages > 0, "nothing purged");
                let os_page = |p: usize| p & !4095;
                // A freed block alone in its OS page (its memory given back).
                let p = ps
                    .iter()
                    .copied()
                    .enumerate()
                    .find(|&(i, p)| {
                        i % 32 != 0
                            && i < 1024
                            && !live.iter().any(|&q| os_page(q) == os_page(p))
                            && os_page(p) == os_page(p + 511)
                    })
                    .map(|(_, p)| p)
                    .expect("a block in a purged OS page");
                match which.as_str() {
                    "purged_double_free" => GLOBAL.dealloc(p as *mut u8, l),
                    "purged_realloc" => {
                        let q = GLOBAL.realloc(p as *mut u8, l, 500);
                        GLOBAL.dealloc(q, layout(500));
                    }
                    // In place (same class), by a thread that does not own
                    // the page: nothing would free it, so only the check
                    // at the realloc can catch it.
                    "purged_realloc_thread" => {
                        let q = std::thread::spawn(move || {
                            GLOBAL.realloc(p as *mut u8, l, 500) as usize
                        })
                        .join()
                        .unwrap();
                        GLOBAL.dealloc(q as *mut u8, layout(500));
                    }
                    _ => free_on_another_thread_and_settle(p, l),
                }
                for &q in &live {
                    GLOBAL.dealloc(q as *mut u8, l);
                }
            }
            "realloc_freed" => {
                let keep = GLOBAL.alloc(layout(100));
                let p = GLOBAL.alloc(layout(100));
                GLOBAL.dealloc(p, layout(100));
                let q = GLOBAL.realloc(p, layout(100), 200);
                GLOBAL.dealloc(q, layout(200));
                GLOBAL.dealloc(keep, layout(100));
            }
            "overwrite_freed" => {
                let a = GLOBAL.alloc(layout(48));
                GLOBAL.dealloc(a, layout(48));
                // A use after free overwrites the link the allocator keeps there.
                (a as *mut u64).write(0x4141_4141_4141_4141);
                for _ in 0..100_000 {
                    std::hint::black_box(GLOBAL.alloc(layout(48)));
                }
            }
            "remote_double_free" => {
                // Freed twice, each time by a thread that does not own it: the
                // page's list of remote frees loops back on the block. The
                // owner finds the loop when it next collects them.
                let keep = GLOBAL.alloc(layout(64));
                let p = GLOBAL.alloc(layout(64)) as usize;
                for _ in 0..2 {
                    std::thread::spawn(move || GLOBAL.dealloc(p as *mut u8, layout(64)))
                        .join()
                        .unwrap();
                }
                for _ in 0..100_000 {
                    std::hint::black_box(GLOBAL.alloc(layout(64)));
                }
                GLOBAL.dealloc(keep, layout(64));
            }
            #[cfg(feature = "profiling")]
            "sampled_double_free_cached"
            | "sampled_double_free"
            | "sampled_realloc_freed"
            | "sampled_double_free_foreign" => {
                // A small block sampled by the heap profiler lives in a
                // mapping of its own, its block 512 bytes past a 4 MiB
                // boundary, in its header's page (where no block of a
                // small segment ever starts: a segment's header is there).
                segalloc::profile::start(1);
                let l = layout(1000);
                let p = (0..1000)
                    .map(|_| GLOBAL.alloc(l))
                    .find(|&p| p as usize % (4 << 20) == 512)
                    .expect("a sampled block");
                GLOBAL.dealloc(p, l);
                if which != "sampled_double_free_cached" {
                    // Unmaps the freed samples' mappings kept for reuse.
                    segalloc::profile::stop();
                }
                if which == "sampled_double_free_foreign" {
                    // Another mapping takes the address space.
                    let base = p.sub(512);
                    let q = libc::mmap(
                        base.cast(),
                        4 << 20,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                        -1,
                        0,
                    );
                    assert_eq!(q, base.cast(), "the stretch was not free");
                }
                if which == "sampled_realloc_freed" {
                    let q = GLOBAL.realloc(p, l, 2000);
                    GLOBAL.dealloc(q, layout(2000));
                } else {
                    GLOBAL.dealloc(p, l);
                }
            }
            other => panic!("unknown scenario {other}"),
        }
    }
    // Reaching here means the misuse went unnoticed.
    std::process::exit(3);
}

/// Longest a child may take; a hang (say, on a corrupted list) fails.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `scenario` in a child and checks it aborted with `message`.
/// Frees block `p` of layout `l` on another thread, then allocates and
/// collects until this thread, its owner, has settled the batch the free
/// went into (at its next slow path).
///
/// # Safety
/// `p` is a block of `GLOBAL`'s of layout `l` (freed or not: the misuse).
unsafe fn free_on_another_thread_and_settle(p: usize, l: Layout) {
    std::thread::spawn(move || GLOBAL.dealloc(p as *mut u8, l))
        .join()
        .unwrap();
    for _ in 0..100_000 {
        std::hint::black_box(GLOBAL.alloc(layout(64)));
    }
    segalloc::collect();
}

fn expect_abort(scenario: &str, message: &str) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env(SCENARIO, scenario)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read stderr on a thread so a chatty child cannot block on the pipe.
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut pipe, &mut buf).map(|_| buf)
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{scenario}: no abort within {TIMEOUT:?} (hung)");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = std::process::Output {
        status,
        stdout: Vec::new(),
        stderr: reader.join().unwrap().unwrap(),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{scenario}: expected an abort, got {:?}\n{stderr}",
        out.status
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with("segalloc: "))
        .unwrap_or_else(|| panic!("{scenario}: no segalloc message in\n{stderr}"));
    assert!(
        line.contains(message),
        "{scenario}: {line:?} does not say {message:?}"
    );
    assert!(
        line.contains(" at 0x"),
        "{scenario}: {line:?} names no address"
    );
}

/// Used to hang: the owner walked the looping list forever (issue 12).
#[test]
fn double_free_by_two_other_threads_aborts() {
    expect_abort("remote_double_free", "double free");
}

#[test]
fn free_of_a_foreign_pointer_aborts() {
    expect_abort("foreign_mapped", "segalloc does not own");
}

#[test]
fn free_of_an_interior_pointer_of_a_large_block_aborts() {
    expect_abort("large_interior", "interior pointer");
}

#[test]
fn double_free_of_a_large_block_aborts() {
    expect_abort("large_double_free", "double free of a large block");
}

#[test]
fn realloc_of_a_freed_large_block_aborts() {
    expect_abort("large_realloc_freed", "realloc of a freed large block");
}

#[test]
fn free_of_a_pointer_into_a_freed_large_block_aborts() {
    expect_abort("large_freed_interior", "into a freed large block");
}

/// Caught by default since issue 12 (the freed mark, see `src/freed.rs`).
#[test]
fn double_free_aborts() {
    expect_abort("double_free", "double free");
}

/// A block freed again after its OS page was purged inside its sparse page
/// (see `page::purge`): its freed mark went with the memory, and the check
/// that every free in such a page makes catches it, by the owner, by
/// another thread (when the owner settles the batch), and by realloc.
#[test]
fn double_free_of_a_block_whose_memory_was_given_back_aborts() {
    expect_abort("purged_double_free", "double free");
}

/// The same in a page of several slices (blocks over 32 KiB), whose free
/// blocks are given back whole.
#[test]
fn double_free_of_a_large_block_whose_memory_was_given_back_aborts() {
    expect_abort("purged_large_double_free", "double free");
}

#[test]
fn double_free_by_another_thread_of_a_large_block_whose_memory_was_given_back_aborts() {
    expect_abort("purged_large_double_free_thread", "double free");
}

#[test]
fn double_free_by_another_thread_of_a_block_whose_memory_was_given_back_aborts() {
    expect_abort("purged_double_free_thread", "double free");
}

#[test]
fn realloc_of_a_freed_block_whose_memory_was_given_back_aborts() {
    expect_abort("purged_realloc", "realloc of a freed block");
}

#[test]
fn realloc_by_another_thread_of_a_freed_block_whose_memory_was_given_back_aborts() {
    expect_abort("purged_realloc_thread", "realloc of a freed block");
}

#[test]
fn realloc_of_a_freed_block_aborts() {
    expect_abort("realloc_freed", "realloc of a freed block");
}

#[test]
fn double_free_by_another_thread_after_the_owner_aborts() {
    expect_abort("owner_then_thread", "double free");
}

#[test]
fn double_free_by_the_owner_after_another_thread_aborts() {
    expect_abort("thread_then_owner", "double free");
}

/// Caught by default since issue 12 (the block-start check, `src/page.rs`).
#[test]
fn free_of_an_interior_pointer_of_a_small_block_aborts() {
    expect_abort("small_interior", "interior or invalid pointer");
}

#[test]
fn free_of_an_interior_pointer_by_another_thread_aborts() {
    expect_abort("small_interior_thread", "interior or invalid pointer");
}

#[test]
fn realloc_of_an_interior_pointer_aborts() {
    expect_abort("realloc_interior", "interior or invalid pointer");
}

/// Caught by default since issue 12 (the segment registry, `src/segment.rs`).
#[test]
fn free_of_an_unmapped_pointer_aborts() {
    expect_abort("foreign_unmapped", "segalloc does not own");
}

#[test]
fn free_of_an_unmapped_pointer_by_another_thread_aborts() {
    expect_abort("foreign_unmapped_thread", "segalloc does not own");
}

#[test]
fn free_of_a_pointer_above_user_space_aborts() {
    expect_abort("foreign_high", "segalloc does not own");
}

#[test]
fn free_of_a_pointer_deep_in_a_large_block_aborts() {
    expect_abort("large_interior_deep", "interior pointer of a large block");
}

#[test]
fn free_of_a_pointer_deep_in_a_large_block_by_another_thread_aborts() {
    expect_abort(
        "large_interior_deep_thread",
        "interior pointer of a large block",
    );
}

#[cfg(feature = "secure")]
mod secure {
    use super::expect_abort;

    #[test]
    fn overwritten_free_list_link_aborts() {
        expect_abort("overwrite_freed", "corrupted free list");
    }
}

/// A small block sampled by the heap profiler (feature `profiling`) is
/// served by a mapping of its own; freed twice it must say "double free",
/// as it does unsampled, whether its mapping is still kept for reuse or
/// has been unmapped (it said "a pointer segalloc does not own" then) and
/// even taken by another mapping; and so for realloc.
#[cfg(feature = "profiling")]
#[test]
fn double_free_of_a_sampled_block_aborts_as_such() {
    expect_abort("sampled_double_free_cached", "double free");
    expect_abort("sampled_double_free", "double free");
    expect_abort("sampled_double_free_foreign", "double free");
    expect_abort("sampled_realloc_freed", "realloc of a freed block");
}
