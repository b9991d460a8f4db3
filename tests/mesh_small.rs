//! Meshing at OS-page granularity (`segalloc::mesh`): small size classes,
//! whose 64 KiB pages are never wholly disjoint after random frees, get
//! their 4 KiB OS pages merged onto other pages' when the blocks over them
//! are disjoint.
//!
//! - 16 to 112-byte blocks, a random tenth kept: OS pages are merged, PSS
//!   drops, every kept block keeps its contents and shows through a second
//!   address (the page it was merged onto), new blocks never overlap live
//!   ones, realloc works, and once every block is freed (through its own
//!   address, whichever page it is) no shared OS page is left and the
//!   statistics' identity holds throughout;
//! - blocks straddling two OS pages (kept more often than the rest), whose
//!   halves may be merged onto different pages or one half not at all:
//!   each half keeps its bytes, shows wherever else it is mapped, takes a
//!   write through there, and the blocks free and refill cleanly;
//! - after `fork`, neither process sees the other's writes;
//! - another thread freeing blocks while the owner merges again and again
//!   loses and doubles nothing;
//! - a thread writing into blocks while their OS pages are merged loses no
//!   write;
//! - a free through the other address of a merged block (a block its page
//!   must not use) aborts as a double free (children);
//! - churn: thousands of short threads, each merging OS pages of its own
//!   and handing its survivors to the next, which checks and frees them
//!   (pages of exited threads, with shared OS pages, taken over and freed).
//!
//! One binary without libtest's harness: RSS and PSS figures are this
//! test's own, and `fork` copies no other thread.

mod common;
use common::{in_child, pss_bytes, wait_child, Rng};
use std::alloc::{alloc, dealloc, realloc, Layout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

const PAGE: usize = 64 << 10;

fn main() {
    // Meshing merges pages of small blocks; a block the heap profiler
    // sampled (`SEGALLOC_PROF=1` in the environment) is in a mapping of its
    // own, outside every page, so this test's addresses and counts assume
    // sampling off (what sampling changes is tests/profile*.rs's).
    #[cfg(feature = "profiling")]
    segalloc::profile::stop();
    // Only `mesh()` merges here (not `collect()`, even with SEGALLOC_MESH=1
    // set), so that each step's figures are its own.
    segalloc::set_option("mesh", "0").unwrap();
    for bs in [16, 48, 64, 112] {
        small_class_merges_and_keeps_every_block(bs);
    }
    for bs in [48, 112, 320] {
        straddlers_keep_both_halves(bs);
    }
    fork_after_small_meshing_shares_nothing();
    other_threads_free_while_os_pages_are_merged();
    writer_loses_no_write_while_os_pages_are_merged();
    free_through_the_other_address_is_caught();
    thread_churn_with_os_page_meshing();
    println!("mesh_small: all passed");
}

fn layout(bs: usize) -> Layout {
    Layout::from_size_align(bs, 8).unwrap()
}

/// What block `p` holds in word `w`.
fn pattern(p: usize, w: usize, salt: u64) -> u64 {
    (p as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (w as u64) << 3 ^ salt
}

fn write_block(p: usize, bs: usize, salt: u64) {
    for w in 0..bs / 8 {
        // SAFETY: a live block of `bs` bytes of ours.
        unsafe { (p as *mut u64).add(w).write_volatile(pattern(p, w, salt)) };
    }
}

/// Whether the memory at `q` holds `p`'s pattern.
fn shows(q: usize, p: usize, bs: usize, salt: u64) -> bool {
    (0..bs / 8).all(|w| {
        // SAFETY: `q` lies in a block or page of ours (mapped).
        unsafe { (q as *const u64).add(w).read_volatile() == pattern(p, w, salt) }
    })
}

fn block_ok(p: usize, bs: usize, salt: u64) -> bool {
    shows(p, p, bs, salt)
}

/// Blocks of `bs` bytes filling `pages` pages, a random one in `keep_one_in`
/// kept (written with its pattern), the rest freed. Returns the kept
/// blocks and the pages they lie in.
fn sparse(bs: usize, pages: usize, keep_one_in: u64, salt: u64) -> (Vec<usize>, Vec<usize>) {
    let n = pages * (PAGE / bs);
    let mut rng = Rng::new(salt);
    let all: Vec<usize> = (0..n)
        .map(|_| {
            // SAFETY: a non-zero size.
            let p = unsafe { alloc(layout(bs)) };
            assert!(!p.is_null());
            p as usize
        })
        .collect();
    let mut kept = Vec::with_capacity(n / keep_one_in as usize + 16);
    let mut starts: Vec<usize> = all.iter().map(|&p| p & !(PAGE - 1)).collect();
    starts.sort_unstable();
    starts.dedup();
    for &p in &all {
        if rng.chance(1, keep_one_in) {
            write_block(p, bs, salt);
            kept.push(p);
        } else {
            // SAFETY: allocated above with this layout.
            unsafe { dealloc(p as *mut u8, layout(bs)) };
        }
    }
    (kept, starts)
}

fn free_all(blocks: &[usize], bs: usize) {
    for &p in blocks {
        // SAFETY: live blocks of ours with this layout.
        unsafe { dealloc(p as *mut u8, layout(bs)) };
    }
}

/// For kept block `p`, another page's address at the same offset that
/// shows `p`'s contents (the page its OS page was merged onto, or merged
/// onto it).
fn other_address(p: usize, starts: &[usize], bs: usize, salt: u64) -> Option<usize> {
    let off = p & (PAGE - 1);
    starts
        .iter()
        .map(|&s| s + off)
        .find(|&q| q != p && shows(q, p, bs, salt))
}

fn identity(what: &str) {
    let st = segalloc::stats();
    assert_eq!(
        st.committed,
        st.allocated + st.metadata + st.external_fragmentation(),
        "the statistics' identity {what}"
    );
}

fn small_class_merges_and_keeps_every_block(bs: usize) {
    segalloc::collect();
    let salt = bs as u64;
    let (kept, starts) = sparse(bs, 256, 10, salt);
    segalloc::collect(); // sub-page purge first, as `malloc_trim` does
    let m0 = segalloc::mesh_stats();
    let pss0 = pss_bytes();
    let t = Instant::now();
    segalloc::mesh();
    let took = t.elapsed();
    let m1 = segalloc::mesh_stats();
    let pss1 = pss_bytes();
    let merged = m1.os_pages_meshed - m0.os_pages_meshed;
    println!(
        "mesh_small: {bs}-byte blocks: {merged} OS pages merged onto {} in {:.0} ms; PSS {:.1} -> {:.1} MiB",
        m1.shared_os_pages,
        took.as_secs_f64() * 1000.0,
        pss0 as f64 / 1048576.0,
        pss1 as f64 / 1048576.0
    );
    // 256 pages of 16 OS pages, each with live blocks: at least a few
    // hundred pairs are disjoint even for 16-byte blocks (8% each).
    assert!(merged >= 200, "{bs}: only {merged} OS pages merged");
    assert!(m1.bytes_released >= m0.bytes_released + merged * 4096);
    assert!(
        pss0 >= pss1 + merged * 4096 / 2,
        "{bs}: PSS {pss0} -> {pss1} for {merged} OS pages merged"
    );
    identity("after meshing");
    for &p in &kept {
        assert!(block_ok(p, bs, salt), "{bs}: block {p:#x} changed");
    }
    // Some kept blocks show through a second address; a write through one
    // reads back through the other.
    let mut twice = 0;
    for &p in kept.iter().step_by(11).take(400) {
        if let Some(q) = other_address(p, &starts, bs, salt) {
            twice += 1;
            // SAFETY: `q` maps the memory of the live block `p`.
            unsafe { (q as *mut u64).write_volatile(0x5555) };
            // SAFETY: a live block of ours.
            assert_eq!(unsafe { (p as *const u64).read_volatile() }, 0x5555);
            write_block(p, bs, salt);
        }
    }
    assert!(twice > 0, "{bs}: no block shows through two addresses");
    // New blocks (as many as were freed) never overlap live ones.
    let fresh: Vec<usize> = (0..256 * (PAGE / bs) * 9 / 10)
        .map(|_| {
            // SAFETY: a non-zero size.
            let p = unsafe { alloc(layout(bs)) } as usize;
            write_block(p, bs, salt + 1);
            p
        })
        .collect();
    for &p in &kept {
        assert!(block_ok(p, bs, salt), "{bs}: block {p:#x} overwritten");
    }
    for &p in &fresh {
        assert!(
            block_ok(p, bs, salt + 1),
            "{bs}: new block {p:#x} overwritten"
        );
    }
    identity("after the refill");
    // realloc, in place and moved.
    let mut kept = kept;
    for p in kept.iter_mut().step_by(7).take(1000) {
        // SAFETY: a live block of ours with this layout.
        let q = unsafe { realloc(*p as *mut u8, layout(bs), 600) } as usize;
        assert!(q != 0);
        for w in 0..bs / 8 {
            // SAFETY: the first `bs` bytes were kept.
            assert_eq!(
                unsafe { (q as *const u64).add(w).read() },
                pattern(*p, w, salt)
            );
        }
        // SAFETY: as above, back to `bs` bytes.
        let r = unsafe { realloc(q as *mut u8, layout(600), bs) } as usize;
        write_block(r, bs, salt);
        *p = r;
    }
    for &p in &kept {
        assert!(block_ok(p, bs, salt), "{bs}: block {p:#x} changed");
    }
    free_all(&kept, bs);
    free_all(&fresh, bs);
    segalloc::collect();
    let s = segalloc::mesh_stats();
    assert_eq!(s.shared_os_pages, 0, "{bs}: shared OS pages left: {s:?}");
    assert_eq!(s.bytes_released, 0, "{bs}: {s:?}");
    identity("after freeing everything");
    // The memory is ordinary again.
    let (again, _) = sparse(bs, 32, 2, salt + 2);
    for &p in &again {
        assert!(block_ok(p, bs, salt + 2));
    }
    free_all(&again, bs);
    segalloc::collect();
}

fn fork_after_small_meshing_shares_nothing() {
    const BS: usize = 64;
    segalloc::collect();
    let (kept, _) = sparse(BS, 128, 10, 5);
    let m0 = segalloc::mesh_stats().os_pages_meshed;
    segalloc::mesh();
    assert!(segalloc::mesh_stats().os_pages_meshed > m0 + 100);
    let mut fds = [0; 2];
    // SAFETY: a plain pipe.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: one thread: the child gets a consistent copy.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut ok = kept.iter().all(|&p| block_ok(p, BS, 5));
        for &p in &kept {
            write_block(p, BS, 6);
        }
        let mut b = 0u8;
        // SAFETY: the pipe's read end.
        unsafe { libc::read(fds[0], (&mut b as *mut u8).cast(), 1) };
        ok &= kept.iter().all(|&p| block_ok(p, BS, 6));
        // SAFETY: ends the child without running the parent's exit code.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    assert!(pid > 0);
    for &p in &kept {
        write_block(p, BS, 7);
    }
    // SAFETY: the pipe's write end.
    unsafe { libc::write(fds[1], [1u8].as_ptr().cast(), 1) };
    let status = wait_child(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child saw the parent's writes, or lost its own (status {status})"
    );
    for &p in &kept {
        assert!(block_ok(p, BS, 7), "the parent sees the child's write");
    }
    // SAFETY: our pipe.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    free_all(&kept, BS);
    segalloc::collect();
    assert_eq!(segalloc::mesh_stats().shared_os_pages, 0);
}

fn other_threads_free_while_os_pages_are_merged() {
    const BS: usize = 32;
    for round in 0..3u64 {
        segalloc::collect();
        let salt = 20 + round;
        let (kept, _) = sparse(BS, 128, 8, salt);
        let (mine, theirs): (Vec<usize>, Vec<usize>) =
            kept.iter().partition(|&&p| (p / BS) % 2 == 0);
        let (tx, rx) = std::sync::mpsc::channel::<Vec<usize>>();
        let consumer = std::thread::spawn(move || {
            for batch in rx {
                for p in batch {
                    assert!(block_ok(p, BS, salt), "block {p:#x} changed");
                    // SAFETY: a live block handed over to this thread.
                    unsafe { dealloc(p as *mut u8, layout(BS)) };
                }
            }
        });
        let m0 = segalloc::mesh_stats().os_pages_meshed;
        for (i, chunk) in theirs.chunks(256).enumerate() {
            tx.send(chunk.to_vec()).unwrap();
            if i % 8 == 0 {
                segalloc::mesh();
            }
        }
        drop(tx);
        consumer.join().unwrap();
        segalloc::mesh();
        assert!(segalloc::mesh_stats().os_pages_meshed > m0);
        for &p in &mine {
            assert!(block_ok(p, BS, salt), "block {p:#x} changed");
        }
        let fresh: Vec<usize> = (0..64 * (PAGE / BS))
            .map(|_| {
                // SAFETY: a non-zero size.
                let p = unsafe { alloc(layout(BS)) } as usize;
                write_block(p, BS, 99);
                p
            })
            .collect();
        for &p in &mine {
            assert!(block_ok(p, BS, salt), "block {p:#x} overwritten");
        }
        for &p in &fresh {
            assert!(block_ok(p, BS, 99), "new block {p:#x} overwritten");
        }
        free_all(&mine, BS);
        free_all(&fresh, BS);
        segalloc::collect();
        let s = segalloc::mesh_stats();
        assert_eq!(s.shared_os_pages, 0, "round {round}: left: {s:?}");
        identity("after the threads' frees");
    }
}

fn writer_loses_no_write_while_os_pages_are_merged() {
    for _ in 0..10 {
        if writer_round() > 0 {
            return;
        }
    }
    panic!("the writer never met an OS page being merged");
}

/// One try: returns how many writes were held back.
fn writer_round() -> usize {
    const BS: usize = 48;
    segalloc::collect();
    let (kept, _) = sparse(BS, 256, 10, 4);
    let kept = Arc::new(kept);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = common::spawn_writer(kept.clone(), stop.clone(), Some(BS));
    std::thread::sleep(Duration::from_millis(20));
    let m0 = segalloc::mesh_stats();
    segalloc::mesh();
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Release);
    let round = writer.join().unwrap();
    let m1 = segalloc::mesh_stats();
    let held = m1.writes_held - m0.writes_held;
    println!(
        "mesh_small: {} OS pages merged under a writer ({round} rounds, {held} writes held back)",
        m1.os_pages_meshed - m0.os_pages_meshed
    );
    assert!(m1.os_pages_meshed > m0.os_pages_meshed);
    for (i, &p) in kept.iter().enumerate() {
        let want = round << 32 | i as u64;
        // SAFETY: live blocks of ours.
        unsafe {
            assert_eq!(
                (p as *const u64).read_volatile(),
                want,
                "block {i} lost a write"
            );
            assert_eq!((p as *const u64).add(BS / 8 - 1).read_volatile(), want);
            for w in 1..BS / 8 - 1 {
                assert_eq!(
                    (p as *const u64).add(w).read_volatile(),
                    pattern(p, w, 4),
                    "block {i} changed"
                );
            }
        }
    }
    free_all(&kept, BS);
    segalloc::collect();
    held
}

fn free_through_the_other_address_is_caught() {
    const BS: usize = 64;
    type Misuse = fn(usize, usize);
    let cases: [(&str, Misuse, &str); 3] = [
        (
            "free through the other address",
            // SAFETY (all): misuse on purpose, in a child.
            |_, q| unsafe { dealloc(q as *mut u8, layout(BS)) },
            "double free",
        ),
        (
            "free through the block's address, then the other",
            |p, q| unsafe {
                dealloc(p as *mut u8, layout(BS));
                dealloc(q as *mut u8, layout(BS));
            },
            "double free",
        ),
        (
            "realloc through the other address",
            |_, q| unsafe {
                let _ = realloc(q as *mut u8, layout(BS), 1000);
            },
            "realloc of a freed block",
        ),
    ];
    for (what, misuse, message) in cases {
        let (status, err) = in_child(|| {
            let (kept, starts) = sparse(BS, 64, 10, 40);
            segalloc::collect();
            segalloc::mesh();
            let pair = kept
                .iter()
                .find_map(|&p| other_address(p, &starts, BS, 40).map(|q| (p, q)));
            let (p, q) = pair.expect("no merged block");
            misuse(p, q);
        });
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGABRT,
            "{what}: not aborted (status {status}, stderr {err:?})"
        );
        assert!(err.contains(message), "{what}: stderr {err:?}");
    }
}

fn thread_churn_with_os_page_meshing() {
    const BS: usize = 32;
    let threads: usize = std::env::var("MESH_CHURN_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    segalloc::collect();
    let m0 = segalloc::mesh_stats().os_pages_meshed;
    let mut handed: Vec<usize> = Vec::new();
    for t in 0..threads {
        let salt = 1000 + t as u64;
        let prev = std::mem::take(&mut handed);
        handed = std::thread::spawn(move || {
            for &p in &prev {
                assert!(block_ok(p, BS, salt - 1), "block {p:#x} changed");
            }
            free_all(&prev, BS);
            let (kept, _) = sparse(BS, 8, 10, salt);
            segalloc::mesh();
            for &p in &kept {
                assert!(block_ok(p, BS, salt), "block {p:#x} changed");
            }
            kept
        })
        .join()
        .unwrap();
    }
    for &p in &handed {
        assert!(block_ok(p, BS, 1000 + threads as u64 - 1));
    }
    free_all(&handed, BS);
    segalloc::collect();
    let s = segalloc::mesh_stats();
    println!(
        "mesh_small: churn of {threads} threads merged {} OS pages; {s:?}",
        s.os_pages_meshed - m0
    );
    assert!(s.os_pages_meshed > m0);
    assert_eq!(
        s.shared_os_pages, 0,
        "shared OS pages left after the churn: {s:?}"
    );
    identity("after the churn");
}

/// Straddling blocks under OS-page meshing: each half of a live block over
/// two OS pages lives in exactly one physical place, seen through its own
/// address (and through every page its OS page was merged with).
fn straddlers_keep_both_halves(bs: usize) {
    segalloc::collect();
    let salt = 0x5a00 + bs as u64;
    let n = 256 * (PAGE / bs);
    let mut rng = Rng::new(salt);
    let all: Vec<usize> = (0..n)
        .map(|_| {
            // SAFETY: a non-zero size.
            let p = unsafe { alloc(layout(bs)) };
            assert!(!p.is_null());
            p as usize
        })
        .collect();
    let mut starts: Vec<usize> = all.iter().map(|&p| p & !(PAGE - 1)).collect();
    starts.sort_unstable();
    starts.dedup();
    let straddles = |p: usize| p / 4096 != (p + bs - 1) / 4096;
    let mut kept = Vec::new();
    for &p in &all {
        let keep = if straddles(p) {
            rng.chance(1, 3)
        } else {
            rng.chance(1, 20)
        };
        if keep {
            write_block(p, bs, salt);
            kept.push(p);
        } else {
            // SAFETY: allocated above with this layout.
            unsafe { dealloc(p as *mut u8, layout(bs)) };
        }
    }
    segalloc::collect();
    let m0 = segalloc::mesh_stats();
    segalloc::mesh();
    let merged = segalloc::mesh_stats().os_pages_meshed - m0.os_pages_meshed;
    assert!(merged > 0, "{bs}: nothing merged");
    identity("after meshing straddlers");
    // Each half of each kept straddler: its own bytes, and wherever else
    // it shows, a write there reads back through the block.
    let words = bs / 8;
    let (mut halves_elsewhere, mut split) = (0, 0);
    for &p in kept.iter().filter(|&&p| straddles(p)) {
        assert!(block_ok(p, bs, salt), "{bs}: straddler {p:#x} changed");
        let cut = (p + bs) & !4095; // the first word of the second half
        let off = p & (PAGE - 1);
        let mut shown = [false; 2];
        for (h, (w0, w1)) in [(0, (cut - p) / 8), ((cut - p) / 8, words)]
            .into_iter()
            .enumerate()
        {
            for &s in &starts {
                let q = s + off;
                if q == p {
                    continue;
                }
                let same = (w0..w1).all(|w| {
                    // SAFETY: inside a page of ours (mapped).
                    unsafe { (q as *const u64).add(w).read_volatile() == pattern(p, w, salt) }
                });
                if !same {
                    continue;
                }
                shown[h] = true;
                // SAFETY: `q + 8 * w0` maps this half of the live block `p`.
                unsafe { (q as *mut u64).add(w0).write_volatile(0xabcd) };
                // SAFETY: a live block of ours.
                let back = unsafe { (p as *const u64).add(w0).read_volatile() };
                assert_eq!(back, 0xabcd, "{bs}: half {h} of {p:#x} seen twice apart");
                write_block(p, bs, salt);
                break;
            }
        }
        halves_elsewhere += shown.iter().filter(|&&x| x).count();
        split += usize::from(shown[0] != shown[1]);
    }
    println!(
        "mesh_small: {bs}-byte straddlers: {merged} OS pages merged, {halves_elsewhere} halves shown elsewhere, {split} with one half merged only"
    );
    assert!(halves_elsewhere > 0, "{bs}: no straddler half merged");
    for &p in &kept {
        assert!(block_ok(p, bs, salt), "{bs}: block {p:#x} changed");
    }
    // Refill: new blocks never overlap a kept one, and neither is written
    // over; then everything is freed through its own address.
    let fresh: Vec<usize> = (0..n - kept.len())
        .map(|_| {
            // SAFETY: a non-zero size.
            let p = unsafe { alloc(layout(bs)) } as usize;
            write_block(p, bs, salt + 1);
            p
        })
        .collect();
    for &p in &kept {
        assert!(block_ok(p, bs, salt), "{bs}: block {p:#x} overwritten");
    }
    for &p in &fresh {
        assert!(
            block_ok(p, bs, salt + 1),
            "{bs}: new block {p:#x} overwritten"
        );
    }
    free_all(&kept, bs);
    free_all(&fresh, bs);
    segalloc::collect();
    let s = segalloc::mesh_stats();
    assert_eq!(s.shared_os_pages, 0, "{bs}: shared OS pages left: {s:?}");
    identity("after freeing the straddlers");
}
