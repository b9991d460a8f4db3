//! Meshing (`segalloc::mesh`, option `mesh`): pages of one size class whose
//! live blocks sit at disjoint offsets are merged onto one physical page.
//!
//! - a program's own SIGSEGV handler still gets its own faults, and without
//!   one a fault still kills the process (children, before any merge here);
//! - sparse pages with disjoint blocks are merged: RSS drops, every block
//!   keeps its contents, and a block reads and writes the same through its
//!   page's address and the merged page's;
//! - allocation afterwards never hands out a block that overlaps a live one;
//!   realloc and frees through both addresses work, and once everything is
//!   freed the merged pages are dissolved;
//! - a thread writing into blocks while their pages are merged loses no
//!   write (the fault handler holds it back);
//! - after `fork`, neither process sees the other's writes;
//! - the OS pages of a merged page that hold no live block any more are
//!   given back by `collect()` (punched out of the shared memory, for every
//!   address of it), stay given back across a `fork`, and come back
//!   zero-filled and usable when blocks are handed out there again;
//! - `collect()` meshes with the option on;
//! - another thread freeing blocks (batched, through both kinds of address)
//!   while the owner merges again and again loses and doubles nothing;
//! - merged pages of a thread that exits are taken over, and dissolve when
//!   their blocks are freed by another thread;
//! - double frees, realloc after free and interior pointers through either
//!   address of a merged block abort with the usual message (children);
//! - churn: thousands of short threads, each merging its pages and handing
//!   its survivors to the next, which checks and frees them;
//! - forks while another thread writes into merged blocks: the writer is
//!   held back during the copy and loses no write; each child sees its own
//!   private copy;
//! - a program that closes segalloc's memfd and opens a file under its
//!   number (a daemon closing every descriptor above 2) never gets heap
//!   data in the file: merged blocks keep their contents, meshing stops
//!   with one line on stderr, and frees, `collect()` and a `fork` still
//!   work (in a child).
//!
//! One binary without libtest's harness (`harness = false`): one thread, so
//! that RSS figures are this test's own and `fork` copies no other thread.

mod common;
use common::{in_child, pss_bytes, rss_bytes, wait_child};
use std::alloc::{alloc, dealloc, realloc, Layout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

/// Block size (a size class), and blocks per 64 KiB page.
const BS: usize = 256;
const PAGE: usize = 64 << 10;
const PER: usize = PAGE / BS;

fn main() {
    // Meshing merges pages of small blocks; a block the heap profiler
    // sampled (`SEGALLOC_PROF=1` in the environment) is in a mapping of its
    // own, outside every page, so this test's addresses and counts assume
    // sampling off (what sampling changes is tests/profile*.rs's).
    #[cfg(feature = "profiling")]
    segalloc::profile::stop();
    program_handler_still_gets_its_faults();
    a_fault_without_a_handler_still_kills();
    meshes_disjoint_pages_and_keeps_every_block();
    writer_loses_no_write_while_its_pages_are_merged();
    fork_after_meshing_shares_nothing();
    merged_pages_give_back_their_free_os_pages();
    collect_meshes_with_the_option_on();
    other_threads_free_while_pages_are_merged();
    merged_pages_outlive_their_thread();
    misuse_of_merged_blocks_is_caught();
    thread_churn_with_meshing();
    fork_while_a_writer_writes();
    a_file_under_the_memfd_s_number_is_never_written();
    println!("mesh: all passed");
}

fn layout() -> Layout {
    Layout::from_size_align(BS, 8).unwrap()
}

/// What block `p` holds in word `w`.
fn pattern(p: usize, w: usize, salt: u64) -> u64 {
    (p as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (w as u64) << 3 ^ salt
}

fn write_block(p: *mut u8, salt: u64) {
    for w in 0..BS / 8 {
        // SAFETY: a live block of BS bytes of ours.
        unsafe {
            p.cast::<u64>()
                .add(w)
                .write_volatile(pattern(p as usize, w, salt))
        };
    }
}

fn block_ok(p: *const u8, salt: u64) -> bool {
    (0..BS / 8).all(|w| {
        // SAFETY: a live block of BS bytes of ours.
        unsafe { p.cast::<u64>().add(w).read_volatile() == pattern(p as usize, w, salt) }
    })
}

/// Fills `pages` pages' worth of blocks, and frees all but one in four, so
/// that four neighbouring pages of a segment keep disjoint offsets: a block
/// is kept when its index in its page is its page's slice index modulo 4.
/// Returns the kept blocks, each written with its pattern.
fn sparse_pages(pages: usize, salt: u64) -> Vec<usize> {
    let mut all = Vec::with_capacity(pages * PER);
    for _ in 0..pages * PER {
        // SAFETY: a non-zero size.
        let p = unsafe { alloc(layout()) };
        assert!(!p.is_null());
        all.push(p as usize);
    }
    let mut kept = Vec::with_capacity(pages * PER / 4 + 16);
    for &p in &all {
        let slice = (p >> 16) & 63;
        let index = (p & (PAGE - 1)) / BS;
        if index % 4 == slice % 4 {
            write_block(p as *mut u8, salt);
            kept.push(p);
        } else {
            // SAFETY: allocated above with this layout.
            unsafe { dealloc(p as *mut u8, layout()) };
        }
    }
    kept
}

fn free_all(blocks: &[usize]) {
    for &p in blocks {
        // SAFETY: live blocks of ours with this layout.
        unsafe { dealloc(p as *mut u8, layout()) };
    }
}

/// For block `p`, its alias: the same offset in a neighbouring page of its
/// segment that shows the same contents (the page it was merged with).
fn alias_of(p: usize, salt: u64) -> Option<usize> {
    let slice = (p >> 16) & 63;
    for d in [-3isize, -2, -1, 1, 2, 3, 4, -4, 5, -5, 6, -6, 7, -7] {
        let s = slice as isize + d;
        // Slice 63 is a guard (no access) with the `secure` feature.
        if !(1..63).contains(&s) {
            continue;
        }
        let q = (p as isize + d * PAGE as isize) as usize;
        // The pattern holds `p`'s address: only `p`'s own memory shows it.
        if block_ok_at(q, p, salt) {
            return Some(q);
        }
    }
    None
}

/// Whether the memory at `q` holds `p`'s pattern.
fn block_ok_at(q: usize, p: usize, salt: u64) -> bool {
    (0..BS / 8).all(|w| {
        // SAFETY: `q` lies in a page of one of our segments (mapped).
        unsafe { (q as *const u64).add(w).read_volatile() == pattern(p, w, salt) }
    })
}

fn meshes_disjoint_pages_and_keeps_every_block() {
    segalloc::collect();
    let salt = 1;
    let kept = sparse_pages(256, salt);
    let (before, pss_before) = (rss_bytes(), pss_bytes());
    let stats0 = segalloc::mesh_stats();
    let merged = segalloc::mesh();
    let after = rss_bytes();
    let stats1 = segalloc::mesh_stats();
    println!(
        "mesh: {merged} pages merged; RSS {:.1} -> {:.1} MiB; {:?}",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        stats1
    );
    assert!(merged >= 100, "only {merged} pages merged");
    assert_eq!(stats1.pages_meshed - stats0.pages_meshed, merged);
    assert!(stats1.bytes_released >= merged * PAGE);
    assert!(
        before >= after + 6 * 1048576,
        "RSS {before} -> {after}: under 6 MiB given back"
    );
    let st = segalloc::stats();
    assert_eq!(st.mesh, stats1);
    assert_eq!(
        st.committed,
        st.allocated + st.metadata + st.external_fragmentation(),
        "the statistics' identity after meshing"
    );
    let row = st.classes.iter().find(|r| r.block_size == BS).unwrap();
    assert!(row.live_blocks >= kept.len() && row.live_blocks < kept.len() + 16);
    // The merged pages left the class's page count.
    assert!(row.pages * PER >= row.live_blocks && row.pages <= 256 - merged);
    for &p in &kept {
        assert!(block_ok(p as *const u8, salt), "block {p:#x} changed");
    }
    // Every block read through its own address: RSS counts the merged
    // pages again at each address that touched them; PSS, once.
    let pss_after = pss_bytes();
    println!(
        "mesh: after reading every block: RSS {:.1} MiB, PSS {:.1} -> {:.1} MiB",
        rss_bytes() as f64 / 1048576.0,
        pss_before as f64 / 1048576.0,
        pss_after as f64 / 1048576.0
    );
    assert!(
        pss_before >= pss_after + 6 * 1048576,
        "PSS {pss_before} -> {pss_after}: under 6 MiB given back"
    );
    // The statistics count merged pages once, as PSS does.
    let (resident, rss_now) = (segalloc::stats().resident, rss_bytes());
    assert!(
        resident + 6 * 1048576 <= rss_now && resident <= pss_after + 2 * 1048576,
        "stats().resident {resident}, RSS {rss_now}, PSS {pss_after}"
    );
    // Both addresses: a write through one reads back through the other.
    let mut aliased = 0;
    for &p in kept.iter().step_by(7) {
        if let Some(q) = alias_of(p, salt) {
            aliased += 1;
            // SAFETY: `q` maps the same memory as the live block `p`.
            unsafe { (q as *mut u64).write_volatile(0x5555) };
            // SAFETY: a live block of ours.
            assert_eq!(unsafe { (p as *const u64).read_volatile() }, 0x5555);
            write_block(p as *mut u8, salt);
        }
    }
    assert!(aliased > 0, "no block shows through two addresses");

    // New blocks never overlap live ones.
    let mut fresh = Vec::new();
    for _ in 0..64 * PER {
        // SAFETY: a non-zero size.
        let p = unsafe { alloc(layout()) };
        write_block(p, 2);
        fresh.push(p as usize);
    }
    for &p in &kept {
        assert!(block_ok(p as *const u8, salt), "block {p:#x} overwritten");
    }
    for &p in &fresh {
        assert!(block_ok(p as *const u8, 2), "new block {p:#x} overwritten");
    }
    // realloc through whatever address a block has: in place and moved.
    let mut kept = kept;
    for p in kept.iter_mut().step_by(5).take(2000) {
        // SAFETY: a live block of ours with this layout.
        let q = unsafe { realloc(*p as *mut u8, layout(), 200) };
        assert!(!q.is_null());
        for w in 0..200 / 8 {
            // SAFETY: the first 200 bytes were kept.
            assert_eq!(
                unsafe { q.cast::<u64>().add(w).read() },
                pattern(*p, w, salt)
            );
        }
        // SAFETY: as above; back to BS bytes, then moved to a larger one.
        let r = unsafe { realloc(q, Layout::from_size_align(200, 8).unwrap(), 1000) };
        assert!(!r.is_null());
        for w in 0..200 / 8 {
            // SAFETY: as above.
            assert_eq!(
                unsafe { r.cast::<u64>().add(w).read() },
                pattern(*p, w, salt)
            );
        }
        // SAFETY: as above.
        let s = unsafe { realloc(r, Layout::from_size_align(1000, 8).unwrap(), BS) };
        write_block(s, salt);
        *p = s as usize;
    }
    for &p in &kept {
        assert!(block_ok(p as *const u8, salt), "block {p:#x} changed");
    }
    // Frees through every address; then the merged pages dissolve.
    free_all(&kept);
    free_all(&fresh);
    segalloc::collect();
    let s = segalloc::mesh_stats();
    assert_eq!(s.groups, 0, "merged pages left after freeing all: {s:?}");
    assert_eq!(s.bytes_released, 0);
    // And the memory is ordinary again: fill it once more.
    let again = sparse_pages(64, 3);
    for &p in &again {
        assert!(block_ok(p as *const u8, 3));
    }
    free_all(&again);
    segalloc::collect();
}

fn writer_loses_no_write_while_its_pages_are_merged() {
    // A write must meet a page being copied at least once: a few tries on a
    // busy machine.
    for _ in 0..10 {
        if writer_round() > 0 {
            return;
        }
    }
    panic!("the writer never met a page being merged");
}

/// One try: returns how many writes were held back.
fn writer_round() -> usize {
    segalloc::collect();
    let kept = Arc::new(sparse_pages(256, 4));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = common::spawn_writer(kept.clone(), stop.clone(), Some(BS));
    std::thread::sleep(Duration::from_millis(20));
    let held = segalloc::mesh_stats().writes_held;
    let merged = segalloc::mesh();
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Release);
    let round = writer.join().unwrap();
    let held = segalloc::mesh_stats().writes_held - held;
    println!(
        "mesh: {merged} pages merged under a writer ({round} rounds, {held} writes held back)"
    );
    assert!(merged >= 100, "only {merged} pages merged");
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
    free_all(&kept);
    segalloc::collect();
    held
}

fn fork_after_meshing_shares_nothing() {
    segalloc::collect();
    let kept = sparse_pages(128, 5);
    let merged = segalloc::mesh();
    assert!(merged >= 50, "only {merged} pages merged");
    let probe: Vec<usize> = kept.iter().copied().step_by(3).take(2000).collect();
    let mut fds = [0; 2];
    // SAFETY: a plain pipe.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: one thread: the child gets a consistent copy.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // The child: its writes, then the parent's, which it must not see.
        let mut ok = probe.iter().all(|&p| block_ok(p as *const u8, 5));
        for &p in &probe {
            write_block(p as *mut u8, 6);
        }
        let mut b = 0u8;
        // SAFETY: the pipe's read end.
        unsafe { libc::read(fds[0], (&mut b as *mut u8).cast(), 1) };
        ok &= probe.iter().all(|&p| block_ok(p as *const u8, 6));
        ok &= kept
            .iter()
            .all(|&p| probe.contains(&p) || block_ok(p as *const u8, 5));
        // SAFETY: ends the child without running the parent's exit code.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    assert!(pid > 0);
    for &p in &probe {
        write_block(p as *mut u8, 7);
    }
    // SAFETY: the pipe's write end.
    unsafe { libc::write(fds[1], [1u8].as_ptr().cast(), 1) };
    let status = wait_child(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child saw the parent's writes, or lost its own (status {status})"
    );
    for &p in &probe {
        assert!(
            block_ok(p as *const u8, 7),
            "the parent sees the child's write"
        );
    }
    // SAFETY: our pipe.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    free_all(&kept);
    segalloc::collect();
    assert_eq!(segalloc::mesh_stats().groups, 0);
}

/// Of the pages holding `blocks`, those with any of OS pages `8..16` (their
/// upper half) resident, as `mincore` says: for a merged page that is its
/// shared memory's state, whatever the address.
fn pages_with_upper_half_resident(blocks: &[usize]) -> Vec<usize> {
    let os_page = common::page_size();
    let mut pages: Vec<usize> = blocks.iter().map(|&p| p & !(PAGE - 1)).collect();
    pages.sort_unstable();
    pages.dedup();
    pages
        .into_iter()
        .filter(|&base| {
            let mut v = vec![0u8; PAGE / 2 / os_page];
            // SAFETY: the upper half of one of our pages, mapped; `v` has
            // a byte for each OS page of it.
            let r = unsafe {
                libc::mincore(
                    (base + PAGE / 2) as *mut libc::c_void,
                    PAGE / 2,
                    v.as_mut_ptr(),
                )
            };
            assert_eq!(r, 0, "mincore of {base:#x}");
            v.iter().any(|&b| b & 1 != 0)
        })
        .collect()
}

fn merged_pages_give_back_their_free_os_pages() {
    segalloc::collect();
    let all = sparse_pages(128, 11);
    let merged = segalloc::mesh();
    assert!(merged >= 50, "only {merged} pages merged");
    // Now the blocks of each page's upper half go: in every merged page
    // (four pages' blocks) OS pages 8..16 hold nothing live any more.
    let (kept, gone): (Vec<usize>, Vec<usize>) =
        all.iter().partition(|&&p| p & (PAGE - 1) < PAGE / 2);
    free_all(&gone);
    let purged0 = segalloc::stats().purged_in_pages;
    let pss0 = pss_bytes();
    segalloc::collect();
    let st = segalloc::stats();
    let pss1 = pss_bytes();
    let groups = segalloc::mesh_stats().groups;
    let resident = pages_with_upper_half_resident(&kept);
    println!(
        "mesh: {merged} pages merged into {groups} groups; after freeing their \
         upper halves, collect: PSS {:.1} -> {:.1} MiB, purged in pages +{:.1} MiB, \
         {} pages with their upper half resident",
        pss0 as f64 / 1048576.0,
        pss1 as f64 / 1048576.0,
        (st.purged_in_pages - purged0) as f64 / 1048576.0,
        resident.len()
    );
    assert!(groups >= 10, "{groups} merged pages");
    // Only the class's current page is never purged inside.
    assert!(
        resident.len() <= 1,
        "pages whose free upper half stayed resident: {resident:x?}"
    );
    // Each page left in use but the current one gave back its upper half:
    // a merged page once, for all of its addresses.
    assert!(
        st.purged_in_pages - purged0 >= (128 - merged - 1) * PAGE / 2,
        "purged in pages: {} -> {}",
        purged0,
        st.purged_in_pages
    );
    assert!(
        pss0 >= pss1 + groups * PAGE / 2,
        "PSS {pss0} -> {pss1}: less than the merged pages' upper halves"
    );
    common::identity_holds(&st);
    assert!(
        st.resident <= pss1 + 2 * 1048576,
        "stats().resident {} against PSS {pss1}",
        st.resident
    );
    for &p in &kept {
        assert!(block_ok(p as *const u8, 11), "block {p:#x} changed");
    }
    // A fork copies what the merged pages hold and no more: the given-back
    // halves stay given back in the parent, and the child has its own copy.
    let (status, _) = in_child(|| {
        let mut ok = kept.iter().all(|&p| block_ok(p as *const u8, 11));
        for &p in &kept {
            write_block(p as *mut u8, 12);
        }
        ok &= kept.iter().all(|&p| block_ok(p as *const u8, 12));
        if !ok {
            // SAFETY: ends the child without running the parent's exit code.
            unsafe { libc::_exit(1) };
        }
    });
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child's copy of the merged pages was wrong (status {status})"
    );
    for &p in &kept {
        assert!(
            block_ok(p as *const u8, 11),
            "the parent sees the child's write"
        );
    }
    let after_fork = pages_with_upper_half_resident(&kept);
    assert!(
        after_fork.len() <= 1,
        "fork brought back given-back OS pages: {after_fork:x?}"
    );
    // Blocks handed out there again come back usable, and overlap nothing.
    let mut fresh = Vec::new();
    for _ in 0..gone.len() {
        // SAFETY: a non-zero size.
        let p = unsafe { alloc(layout()) };
        assert!(!p.is_null());
        write_block(p, 13);
        fresh.push(p as usize);
    }
    for &p in &kept {
        assert!(block_ok(p as *const u8, 11), "block {p:#x} overwritten");
    }
    for &p in &fresh {
        assert!(block_ok(p as *const u8, 13), "new block {p:#x} overwritten");
    }
    common::identity_holds(&segalloc::stats());
    free_all(&kept);
    free_all(&fresh);
    segalloc::collect();
    assert_eq!(segalloc::mesh_stats().groups, 0);
}

extern "C" fn exit_42(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: async-signal-safe.
    unsafe { libc::_exit(42) };
}

/// Maps a page no one may touch.
fn forbidden_page() -> *mut u8 {
    // SAFETY: a fresh anonymous mapping.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p.cast()
}

fn program_handler_still_gets_its_faults() {
    // SAFETY: one thread.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: installs a plain handler.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = exit_42 as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
        }
        let kept = sparse_pages(16, 8);
        let merged = segalloc::mesh();
        let ok = merged > 0 && kept.iter().all(|&p| block_ok(p as *const u8, 8));
        if !ok {
            // SAFETY: ends the child.
            unsafe { libc::_exit(1) };
        }
        // SAFETY: a deliberate fault, which the handler above must get.
        unsafe { forbidden_page().write_volatile(1) };
        // SAFETY: ends the child.
        unsafe { libc::_exit(2) };
    }
    let status = wait_child(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 42,
        "the program's handler did not get its fault (status {status})"
    );
}

fn a_fault_without_a_handler_still_kills() {
    // SAFETY: one thread.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: restores the default action (Rust's runtime has a handler
        // for stack overflows, which chains to it anyway).
        unsafe { libc::signal(libc::SIGSEGV, libc::SIG_DFL) };
        // No core file.
        let lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a plain call.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &lim) };
        let _kept = sparse_pages(16, 9);
        if segalloc::mesh() == 0 {
            // SAFETY: ends the child.
            unsafe { libc::_exit(1) };
        }
        // SAFETY: a deliberate fault.
        unsafe { forbidden_page().write_volatile(1) };
        // SAFETY: ends the child.
        unsafe { libc::_exit(2) };
    }
    let status = wait_child(pid);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV,
        "a fault did not kill the child (status {status})"
    );
}

fn collect_meshes_with_the_option_on() {
    segalloc::collect();
    let kept = sparse_pages(64, 10);
    let before = segalloc::mesh_stats().pages_meshed;
    segalloc::set_option("mesh", "1").unwrap();
    segalloc::collect();
    segalloc::set_option("mesh", "0").unwrap();
    assert!(segalloc::mesh_stats().pages_meshed > before);
    for &p in &kept {
        assert!(block_ok(p as *const u8, 10));
    }
    free_all(&kept);
    segalloc::collect();
}

fn other_threads_free_while_pages_are_merged() {
    for round in 0..3u64 {
        segalloc::collect();
        let salt = 20 + round;
        let kept = sparse_pages(256, salt);
        let (mine, theirs): (Vec<usize>, Vec<usize>) =
            kept.iter().partition(|&&p| (p / BS) % 2 == 0);
        let (tx, rx) = std::sync::mpsc::channel::<Vec<usize>>();
        let consumer = std::thread::spawn(move || {
            for batch in rx {
                for p in batch {
                    assert!(block_ok(p as *const u8, salt), "block {p:#x} changed");
                    // SAFETY: a live block handed over to this thread.
                    unsafe { dealloc(p as *mut u8, layout()) };
                }
            }
        });
        let mut merged = 0;
        for (i, chunk) in theirs.chunks(128).enumerate() {
            tx.send(chunk.to_vec()).unwrap();
            if i % 8 == 0 {
                merged += segalloc::mesh();
            }
        }
        drop(tx);
        consumer.join().unwrap();
        merged += segalloc::mesh();
        assert!(merged > 0);
        for &p in &mine {
            assert!(block_ok(p as *const u8, salt), "block {p:#x} changed");
        }
        // New blocks overlap none of ours.
        let fresh: Vec<usize> = (0..32 * PER)
            .map(|_| {
                // SAFETY: a non-zero size.
                let p = unsafe { alloc(layout()) };
                write_block(p, 99);
                p as usize
            })
            .collect();
        for &p in &mine {
            assert!(block_ok(p as *const u8, salt), "block {p:#x} overwritten");
        }
        free_all(&mine);
        free_all(&fresh);
        segalloc::collect();
        let s = segalloc::mesh_stats();
        assert_eq!(s.groups, 0, "round {round}: merged pages left: {s:?}");
    }
}

fn merged_pages_outlive_their_thread() {
    segalloc::collect();
    let (kept, merged) = std::thread::spawn(|| {
        let kept = sparse_pages(128, 30);
        let merged = segalloc::mesh();
        (kept, merged)
    })
    .join()
    .unwrap();
    assert!(merged > 0);
    assert!(segalloc::mesh_stats().groups > 0);
    for &p in &kept {
        assert!(block_ok(p as *const u8, 30), "block {p:#x} changed");
    }
    // Freed by this thread: the exited thread's segments are taken over.
    free_all(&kept);
    segalloc::collect();
    let s = segalloc::mesh_stats();
    assert_eq!(s.groups, 0, "merged pages left: {s:?}");
    assert_eq!(s.bytes_released, 0);
}

/// A merged block and its other address.
fn merged_pair() -> (usize, usize) {
    let kept = sparse_pages(32, 40);
    assert!(segalloc::mesh() > 0);
    for &p in &kept {
        if let Some(q) = alias_of(p, 40) {
            return (p, q);
        }
    }
    panic!("no merged block");
}

fn misuse_of_merged_blocks_is_caught() {
    type Misuse = fn(usize, usize);
    let cases: [(&str, Misuse, &str); 5] = [
        (
            "free through one address, then the other",
            // SAFETY (all): misuse on purpose, in a child.
            |p, q| unsafe {
                dealloc(p as *mut u8, layout());
                dealloc(q as *mut u8, layout());
            },
            "double free",
        ),
        (
            "free through the other address, then the first",
            |p, q| unsafe {
                dealloc(q as *mut u8, layout());
                dealloc(p as *mut u8, layout());
            },
            "double free",
        ),
        (
            "realloc through one address after a free through the other",
            |p, q| unsafe {
                dealloc(q as *mut u8, layout());
                let _ = realloc(p as *mut u8, layout(), 1000);
            },
            "realloc of a freed block",
        ),
        (
            "interior pointer through the first address",
            |p, _| unsafe { dealloc((p + 16) as *mut u8, layout()) },
            "interior or invalid pointer",
        ),
        (
            "interior pointer through the other address",
            |_, q| unsafe { dealloc((q + 16) as *mut u8, layout()) },
            "interior or invalid pointer",
        ),
    ];
    for (what, misuse, message) in cases {
        let (status, err) = in_child(|| {
            let (p, q) = merged_pair();
            misuse(p, q);
        });
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGABRT,
            "{what}: not aborted (status {status}, stderr {err:?})"
        );
        assert!(err.contains(message), "{what}: stderr {err:?}");
    }
}

fn thread_churn_with_meshing() {
    let threads: usize = std::env::var("MESH_CHURN_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    segalloc::collect();
    let mut handed: Vec<usize> = Vec::new();
    let mut merged = 0;
    for t in 0..threads {
        let salt = 1000 + t as u64;
        let prev = std::mem::take(&mut handed);
        let (kept, m) = std::thread::spawn(move || {
            for &p in &prev {
                assert!(block_ok(p as *const u8, salt - 1), "block {p:#x} changed");
            }
            free_all(&prev);
            let kept = sparse_pages(8, salt);
            let m = segalloc::mesh();
            for &p in &kept {
                assert!(block_ok(p as *const u8, salt), "block {p:#x} changed");
            }
            (kept, m)
        })
        .join()
        .unwrap();
        merged += m;
        handed = kept;
    }
    for &p in &handed {
        assert!(block_ok(p as *const u8, 1000 + threads as u64 - 1));
    }
    free_all(&handed);
    segalloc::collect();
    let s = segalloc::mesh_stats();
    println!("mesh: churn of {threads} threads merged {merged} pages; {s:?}");
    assert!(merged > 0);
    assert_eq!(s.groups, 0, "merged pages left after the churn: {s:?}");
}

fn fork_while_a_writer_writes() {
    segalloc::collect();
    let kept = Arc::new(sparse_pages(128, 50));
    assert!(segalloc::mesh() > 0);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = common::spawn_writer(kept.clone(), stop.clone(), None);
    let held = segalloc::mesh_stats().writes_held;
    for _ in 0..20 {
        // SAFETY: the child only reads and writes memory and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // The child's own copy: the rest of every block intact, and
            // writable without touching the parent's.
            let ok = kept.iter().all(|&p| {
                (1..BS / 8).all(|w| {
                    // SAFETY: blocks of ours in the child's copy.
                    unsafe { (p as *const u64).add(w).read_volatile() == pattern(p, w, 50) }
                })
            });
            for &p in kept.iter() {
                // SAFETY: as above.
                unsafe { (p as *mut u64).add(1).write_volatile(0) };
            }
            // SAFETY: ends the child.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let status = wait_child(pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "a child's copy was torn (status {status})"
        );
    }
    stop.store(true, Ordering::Release);
    let round = writer.join().unwrap();
    println!(
        "mesh: 20 forks under a writer ({round} rounds, {} writes held back)",
        segalloc::mesh_stats().writes_held - held
    );
    for (i, &p) in kept.iter().enumerate() {
        // SAFETY: live blocks of ours.
        unsafe {
            assert_eq!((p as *const u64).read_volatile(), round << 32 | i as u64);
            for w in 1..BS / 8 {
                assert_eq!(
                    (p as *const u64).add(w).read_volatile(),
                    pattern(p, w, 50),
                    "a child's write reached the parent"
                );
            }
        }
    }
    free_all(&kept);
    segalloc::collect();
}

/// The memfd's descriptor number, from `/proc/self/fd`.
fn memfd_number() -> Option<i32> {
    std::fs::read_dir("/proc/self/fd")
        .ok()?
        .flatten()
        .find_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            target
                .to_string_lossy()
                .contains("segalloc-mesh")
                .then(|| e.file_name().to_string_lossy().parse().ok())
                .flatten()
        })
}

fn a_file_under_the_memfd_s_number_is_never_written() {
    let path = std::env::temp_dir().join(format!("segalloc-memfd-{}", std::process::id()));
    let len = 4 << 20;
    std::fs::write(&path, vec![b'U'; len]).unwrap();
    let (status, err) = in_child(|| {
        segalloc::collect();
        let kept = sparse_pages(128, 11);
        assert!(segalloc::mesh() >= 50, "nothing merged");
        let fd = memfd_number().expect("no memfd");
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: closes segalloc's descriptor, as a daemon would, and puts
        // the file under its number.
        unsafe {
            libc::close(fd);
            let f = libc::open(c.as_ptr(), libc::O_RDWR);
            assert!(f >= 0);
            if f != fd {
                assert_eq!(libc::dup2(f, fd), fd);
                libc::close(f);
            }
        }
        // Merges, punches, releases and a fork, all of which used the
        // descriptor.
        let more = sparse_pages(128, 12);
        assert_eq!(segalloc::mesh(), 0, "merged through a closed memfd");
        assert!(kept.iter().all(|&p| block_ok(p as *const u8, 11)));
        assert!(more.iter().all(|&p| block_ok(p as *const u8, 12)));
        // SAFETY: one thread.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = kept.iter().all(|&p| block_ok(p as *const u8, 11));
            for &p in &kept {
                write_block(p as *mut u8, 13);
            }
            // SAFETY: ends the child without running the parent's exit code.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let st = wait_child(pid);
        assert!(
            libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
            "the forked child lost merged blocks (status {st})"
        );
        assert!(
            kept.iter().all(|&p| block_ok(p as *const u8, 11)),
            "the parent sees the child's writes"
        );
        free_all(&kept);
        free_all(&more);
        segalloc::collect();
    });
    let data = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(status == 0, "the child failed (status {status}): {err}");
    assert_eq!(data.len(), len, "the file changed size");
    assert!(
        data.iter().all(|&b| b == b'U'),
        "heap data written into the program's file"
    );
    assert!(
        err.contains("closed segalloc's meshing descriptor"),
        "nothing said: {err}"
    );
}
