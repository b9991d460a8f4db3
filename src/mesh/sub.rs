//! Meshing at OS-page granularity, the mapping part: OS page `k` of a page
//! B is mapped onto the physical OS page behind OS page `k` of a page A of
//! the same size class (in any segment), when the blocks overlapping it
//! are disjoint. Both pages stay in use, each with its own blocks and
//! descriptor, so a free through either address reaches the page it
//! belongs to and no free needs redirecting; each page keeps the blocks it
//! must not use off its lists (`page::share`). The heap picks the pairs
//! (`heap::submesh`).
//!
//! # Memory
//! The physical pages are *slots* of the same memfd as the whole-page
//! groups, past them: [`CHUNKS`] chunks of 16 slots (one page's worth).
//! Each page that takes part has a *record*: its start, the chunk and slot
//! behind each of its shared OS pages (`on[k]`, always slot `k`: the
//! same offset in the page), and its *home* chunk, from which a fresh
//! physical page for its OS page `k` is slot `k` (free, as nothing else
//! uses a home's slots). A slot counts the pages mapped onto it
//! (`refs`, at most [`MAX_SHARERS`]); at zero it is punched out of the
//! memfd. A chunk is free when no slot is used and no record has it as
//! home. The segment's word of the slice is [`SUB`] with the record plus
//! one, and [`FROZEN`] while OS pages of it are write-protected for a copy.
//!
//! # A merge
//! Under [`LOCK`]: A's OS pages that are not shared yet and B's are
//! write-protected (writers wait in the fault handler), the merged page
//! (A's OS page with B's blocks over it) is written into the slot with
//! `pwrite`, or B's blocks are written straight into A's page when that is
//! a slot already (at offsets no page uses, see `page::share`), and the
//! slot is mapped over A's and B's OS pages, a run of adjacent OS pages
//! with one call (adjacent slots of a chunk, so the kernel can keep a run
//! as one mapping). A mapping that fails leaves the OS page as it was when
//! the kernel left the old one in place; when the old one is gone, fresh
//! memory is mapped there and the page's data read back from the slot
//! (which holds it), so no block is lost (if even that fails, the process
//! aborts with a message).
//!
//! # Bounds
//! Every run mapped can split its segment's mapping in three, against the
//! kernel's limit (`vm.max_map_count`, 65,530 by default): a pass reads how
//! many mappings the process has and maps no more runs than would take it
//! past half the limit at two new mappings a run ([`begin_pass`]). Runs
//! also count in the mesh's ranges (for the record). [`MAX_RECS`] pages
//! take part at most, in [`CHUNKS`] chunks (1 GiB of shared memory).
//!
//! # Freeing
//! A page freed with no live block: fresh private memory is mapped over its
//! shared OS pages, its slots lose a reference (a slot with none is punched
//! out), its record and home chunk are given up.
//!
//! # fork
//! As for whole pages: every record's shared OS pages are frozen and
//! write-protected, every slot in use is copied into the child's memfd, and
//! the child maps its copy over every range.

use super::{fd, freeze, GROUP_MASK, LEN, LOCK, MAX_GROUPS, RANGES, STATE};
use crate::os::OS_PAGE;
use crate::page::LIVE_WORDS;
use crate::segment::{Segment, SLICE_SIZE};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// The slice's page has a record (the word's low bits: record plus one).
pub(crate) const SUB: u32 = 1 << 26;
/// Records at most (pages taking part): their index plus one fits a `u16`.
pub(crate) const MAX_RECS: usize = 16_384;
/// Chunks of slots: 1 GiB of memfd past the whole-page groups.
const CHUNKS: usize = 16_384;
/// Pages one physical OS page is mapped into at most.
pub(crate) const MAX_SHARERS: u8 = 8;
/// OS pages per page (one slice).
const OS_PAGES: usize = SLICE_SIZE / OS_PAGE;
const _: () = assert!(OS_PAGES == 16 && MAX_RECS < u16::MAX as usize);
const _: () = assert!((MAX_RECS as u32) < GROUP_MASK);

/// Bytes of memfd the whole-page groups and the chunks need.
pub(super) const FILE_LEN: usize = MAX_GROUPS * LEN + CHUNKS * SLICE_SIZE;

/// One page taking part. Under [`LOCK`].
#[repr(C)]
struct Rec {
    /// The page's start (0: the record is free).
    start: usize,
    /// Home chunk plus one (0: none yet).
    home: u32,
    /// Runs this page has mapped onto the memfd (in [`RANGES`]).
    ranges: u32,
    /// Per OS page: the chunk plus one whose slot `k` it is mapped onto.
    on: [u32; OS_PAGES],
}

/// One chunk of 16 slots. Under [`LOCK`].
#[repr(C)]
struct Chunk {
    /// The record plus one whose home it is (0: none).
    home: u32,
    /// Pages mapped onto each slot.
    refs: [u8; OS_PAGES],
}

static RECS: AtomicPtr<Rec> = AtomicPtr::new(ptr::null_mut());
static CHUNK: AtomicPtr<Chunk> = AtomicPtr::new(ptr::null_mut());
/// Where to start looking for a free record, and chunk.
static REC_HINT: AtomicUsize = AtomicUsize::new(0);
static CHUNK_HINT: AtomicUsize = AtomicUsize::new(0);

/// OS pages merged onto another page's since the process started.
pub(crate) static OS_PAGES_MESHED: AtomicUsize = AtomicUsize::new(0);
/// Slots in use now: physical OS pages shared by two or more pages.
pub(crate) static SLOTS: AtomicUsize = AtomicUsize::new(0);
/// Bytes given back now: an OS page for each mapping of a slot beyond the
/// first.
pub(crate) static RELEASED: AtomicUsize = AtomicUsize::new(0);

/// Runs the current pass may still map (see [`begin_pass`]).
static BUDGET: AtomicUsize = AtomicUsize::new(0);
/// The kernel's limit when it cannot be read.
const DEFAULT_MAX_MAPS: usize = 65_530;

/// Sets the number of runs a pass may map: each can add two mappings to
/// the process, which may grow to half the kernel's limit
/// (`vm.max_map_count`), the other half left to the program. Reads the
/// mappings there are now (`/proc/self/maps`, one line each), so the
/// mappings the kernel merged (adjacent runs of one chunk) are not
/// counted twice. No allocation.
pub(crate) fn begin_pass() {
    READ_AT.store(crate::os::now_ms().max(1), Ordering::Relaxed);
    let limit = count_file(c"/proc/sys/vm/max_map_count", true).unwrap_or(DEFAULT_MAX_MAPS);
    let now = count_file(c"/proc/self/maps", false).unwrap_or(limit);
    let b = (limit / 2).saturating_sub(now) / 2;
    BUDGET.store(b, Ordering::Relaxed);
    // Counted again when the budget runs out only if it was worth reading.
    RECOUNT.store(b >= 256, Ordering::Relaxed);
}

/// Whether the budget may be counted again when it runs out.
static RECOUNT: AtomicBool = AtomicBool::new(false);

/// When the budget was last read (coarse clock, ms; 0 never).
static READ_AT: AtomicU64 = AtomicU64::new(0);
/// The least time between two reads of the budget by timed steps
/// (`heap::mesh_step`), which run inside an allocation: reading
/// `/proc/self/maps` took 8 ms at 30,000 mappings and 16 ms at 60,000 on
/// this project's VM (2026-11-29). Meanwhile the budget read last goes on
/// being taken from, as counted, never more than it was.
const TIMED_READ_MS: u64 = 1000;

/// Until when (ms) the background purger will look again and read the
/// budget if asked ([`read_if_asked`]); 0 while there is none.
static READER_UNTIL: AtomicU64 = AtomicU64::new(0);
/// A timed step found the budget stale and left the read to the purger.
static ASKED: AtomicBool = AtomicBool::new(false);

/// [`begin_pass`] for a timed step: only if the budget was never read, or
/// not for [`TIMED_READ_MS`]; and then, if the background purger runs,
/// left to it, off the allocation path.
pub(crate) fn begin_timed_pass() {
    let at = READ_AT.load(Ordering::Relaxed);
    let now = crate::os::now_ms();
    if at != 0 && now < at + TIMED_READ_MS {
        return;
    }
    if at != 0 && now < READER_UNTIL.load(Ordering::Relaxed) {
        ASKED.store(true, Ordering::Relaxed);
        return;
    }
    begin_pass();
}

/// For the background purger at each look, which will look again within
/// `next_ms`: reads the budget if a timed step asked for it.
pub(crate) fn read_if_asked(next_ms: u64) {
    let until = crate::os::now_ms().saturating_add(next_ms);
    READER_UNTIL.store(until, Ordering::Relaxed);
    if ASKED.load(Ordering::Relaxed) {
        ASKED.store(false, Ordering::Relaxed);
        begin_pass();
    }
}

/// The budget ran out: counts the mappings again (the kernel merges the
/// runs of adjacent slots of a chunk, so fewer were made than counted); in
/// a timed step (`timed`), as often as [`begin_timed_pass`] reads.
fn recount(timed: bool) {
    if RECOUNT.load(Ordering::Relaxed) {
        if timed {
            begin_timed_pass();
        } else {
            begin_pass();
        }
    }
}

/// The number in the file (`number`), or its count of lines.
fn count_file(path: &core::ffi::CStr, number: bool) -> Option<usize> {
    // SAFETY: a NUL-terminated path; a read-only descriptor of our own.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 4096];
    let mut n = 0usize;
    loop {
        // SAFETY: reads into our buffer.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r <= 0 {
            break;
        }
        for &b in &buf[..r as usize] {
            if number {
                if b.is_ascii_digit() {
                    n = n * 10 + (b - b'0') as usize;
                }
            } else if b == b'\n' {
                n += 1;
            }
        }
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    Some(n)
}

/// Takes `n` runs from the pass's budget, if it has them.
fn take_budget(n: usize) -> bool {
    BUDGET
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(n))
        .is_ok()
}

/// Maps the tables (at set-up, under [`LOCK`]). Returns whether it could.
pub(super) fn setup() -> bool {
    let recs = crate::os::map_scratch(MAX_RECS * core::mem::size_of::<Rec>());
    let chunks = crate::os::map_scratch(CHUNKS * core::mem::size_of::<Chunk>());
    let bitmaps = crate::os::map_scratch(MAX_RECS * LIVE_WORDS * 8);
    if recs.is_null() || chunks.is_null() || bitmaps.is_null() {
        return false;
    }
    RECS.store(recs.cast(), Ordering::Release);
    CHUNK.store(chunks.cast(), Ordering::Release);
    crate::page::set_excluded_table(bitmaps.cast());
    true
}

/// Record `r`. Under [`LOCK`], set up.
fn rec(r: usize) -> &'static mut Rec {
    // SAFETY: the table is mapped (zeroed) and never unmapped; `r` is
    // below MAX_RECS; only the holder of LOCK touches it.
    unsafe { &mut *RECS.load(Ordering::Acquire).add(r) }
}

/// Chunk `c`. Under [`LOCK`], set up.
fn chunk(c: usize) -> &'static mut Chunk {
    // SAFETY: as for `rec`.
    unsafe { &mut *CHUNK.load(Ordering::Acquire).add(c) }
}

/// The memfd offset of slot `k` of chunk `c`.
fn offset(c: usize, k: usize) -> usize {
    MAX_GROUPS * LEN + c * SLICE_SIZE + k * OS_PAGE
}

/// Whether slice `i` of `seg` is a page with a record.
#[inline]
pub(crate) fn is_member(seg: &Segment, i: usize) -> bool {
    seg.mesh[i].load(Ordering::Acquire) & SUB != 0
}

/// The record of the page at slice `i` of `seg` (plus one), or a new one
/// (`None` when none is left). Under [`LOCK`].
fn rec_for(seg: &Segment, i: usize) -> Option<usize> {
    let w = seg.mesh[i].load(Ordering::Relaxed);
    if w & SUB != 0 {
        return Some((w & GROUP_MASK) as usize);
    }
    if w != 0 {
        return None; // a whole-page group's
    }
    let start = REC_HINT.load(Ordering::Relaxed);
    for n in 0..MAX_RECS {
        let r = (start + n) % MAX_RECS;
        let x = rec(r);
        if x.start == 0 {
            x.start = seg.slice_addr(i) as usize;
            x.home = 0;
            x.ranges = 0;
            x.on = [0; OS_PAGES];
            REC_HINT.store(r + 1, Ordering::Relaxed);
            seg.mesh[i].store(SUB | (r + 1) as u32, Ordering::Release);
            return Some(r + 1);
        }
    }
    None
}

/// A free chunk, made the home of record `r` (plus one). Under [`LOCK`].
fn new_home(r: usize) -> Option<usize> {
    let start = CHUNK_HINT.load(Ordering::Relaxed);
    for n in 0..CHUNKS {
        let c = (start + n) % CHUNKS;
        let x = chunk(c);
        if x.home == 0 && x.refs.iter().all(|&n| n == 0) {
            x.home = r as u32;
            CHUNK_HINT.store(c + 1, Ordering::Relaxed);
            return Some(c);
        }
    }
    None
}

/// Records for the pages at slice `ai` of `sa` and `bi` of `sb` (made if
/// need be, with a home for A), so that they can mark their excluded
/// blocks before [`merge`]. `None` when there is no room (no record or
/// chunk left, or the mesh's ranges used up), having changed nothing that
/// matters (a record made stays with its page until it is freed). `timed`:
/// called from a timed step (the budget is read again less often, see
/// [`recount`]).
///
/// # Safety
/// The caller owns both pages, which are in use and distinct.
pub(crate) unsafe fn reserve(
    sa: &Segment,
    ai: usize,
    sb: &Segment,
    bi: usize,
    timed: bool,
) -> Option<(u16, u16)> {
    if STATE.load(Ordering::Acquire) != 1 {
        return None;
    }
    let _g = LOCK.lock();
    if BUDGET.load(Ordering::Relaxed) < 2 {
        recount(timed);
        if BUDGET.load(Ordering::Relaxed) < 2 {
            return None;
        }
    }
    let ra = rec_for(sa, ai)?;
    let rb = rec_for(sb, bi)?;
    if rec(ra - 1).home == 0 {
        rec(ra - 1).home = new_home(ra)? as u32 + 1;
    }
    Some((ra as u16, rb as u16))
}

/// Whether OS page `k` of record `ra`'s page can take one more page.
/// Under [`LOCK`].
fn room(ra: usize, k: usize) -> bool {
    let a = rec(ra - 1);
    a.on[k] == 0 || chunk(a.on[k] as usize - 1).refs[k] < MAX_SHARERS
}

/// Write-protects (or allows writes to) `len` bytes at `p`.
fn protect(p: usize, len: usize, writable: bool) -> bool {
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: OS pages of one of our segments; only their protection changes.
    unsafe { libc::mprotect(p as *mut libc::c_void, len, prot) == 0 }
}

/// Maps `len` bytes of `fd` at `off` over `p` (shared, fixed). On failure,
/// makes sure `p` is still mapped with its data: if the kernel dropped the
/// old mapping, fresh memory is mapped there and filled from the memfd,
/// which holds the data (the caller wrote it there). Returns whether the
/// memfd is mapped at `p`; aborts when the range cannot be restored.
fn map_or_restore(fd: i32, off: usize, p: usize, len: usize, populate: bool) -> bool {
    // SAFETY: replaces OS pages of one of our segments whose data the
    // caller wrote to the memfd at `off`.
    let r = unsafe {
        libc::mmap(
            p as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_FIXED | if populate { libc::MAP_POPULATE } else { 0 },
            fd,
            off as libc::off_t,
        )
    };
    if r != libc::MAP_FAILED {
        return true;
    }
    // SAFETY: `msync` only asks whether the range is mapped (ENOMEM if not).
    if unsafe { libc::msync(p as *mut libc::c_void, len, libc::MS_ASYNC) } == 0 {
        return false; // the old mapping, with its data, is still there
    }
    // SAFETY: the range is unmapped: fresh private memory there, then the
    // data read back from the memfd.
    unsafe {
        let q = libc::mmap(
            p as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        );
        if q == libc::MAP_FAILED || !read_all(fd, p, len, off) {
            crate::fatal(
                "mesh: a page's memory could not be mapped again after a failed merge",
                p as *const u8,
            );
        }
    }
    false
}

/// Runs `op(done)` (one `pread` or `pwrite` of the bytes from `done` on)
/// until `len` bytes are through; false if one moves nothing or fails.
fn all_of(len: usize, mut op: impl FnMut(usize) -> isize) -> bool {
    let mut done = 0;
    while done < len {
        let n = op(done);
        if n <= 0 {
            return false;
        }
        done += n as usize;
    }
    true
}

/// Reads `len` bytes of `fd` at `off` into `p`.
fn read_all(fd: i32, p: usize, len: usize, off: usize) -> bool {
    all_of(len, |done| {
        // SAFETY: `p..p + len` is writable memory of ours.
        unsafe {
            libc::pread(
                fd,
                (p + done) as *mut libc::c_void,
                len - done,
                (off + done) as libc::off_t,
            )
        }
    })
}

/// Writes `len` bytes at `p` into `fd` at `off`.
fn write_all(fd: i32, p: usize, len: usize, off: usize) -> bool {
    all_of(len, |done| {
        // SAFETY: `p..p + len` is readable memory of ours.
        unsafe {
            libc::pwrite(
                fd,
                (p + done) as *const libc::c_void,
                len - done,
                (off + done) as libc::off_t,
            )
        }
    })
}

/// Runs of set bits of `m`: `(lo, hi)`.
fn runs(mut m: u16) -> impl Iterator<Item = (usize, usize)> {
    core::iter::from_fn(move || {
        if m == 0 {
            return None;
        }
        let lo = m.trailing_zeros() as usize;
        let hi = lo + (m >> lo).trailing_ones() as usize;
        m &= !((((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16);
        Some((lo, hi))
    })
}

/// Copies the bytes of B's blocks marked in `occ_b` (blocks of `bs` bytes)
/// that lie in OS page `k` from `b` to `dst` (the same offsets from the
/// OS page's start).
///
/// # Safety
/// `b + k * OS_PAGE` is readable and `dst` writable for an OS page, and
/// nothing else uses the bytes written.
unsafe fn copy_blocks(
    b: usize,
    k: usize,
    occ_b: (&[u64; LIVE_WORDS], &[u64; LIVE_WORDS]),
    bs: usize,
    cap: usize,
    dst: *mut u8,
) {
    let (lo, hi) = (k * OS_PAGE, (k + 1) * OS_PAGE);
    let first = lo / bs;
    let last = ((hi - 1) / bs).min(cap.saturating_sub(1));
    for j in first..=last {
        // A block begun on an earlier OS page counts by the second bitmap.
        let occ = if j * bs < lo { occ_b.1 } else { occ_b.0 };
        if j >= cap || occ[j / 64] >> (j % 64) & 1 == 0 {
            continue;
        }
        let s = (j * bs).max(lo);
        let e = ((j + 1) * bs).min(hi);
        // SAFETY: per the contract, inside both OS pages.
        unsafe { ptr::copy_nonoverlapping((b + s) as *const u8, dst.add(s - lo), e - s) };
    }
}

/// Merges OS pages `mask` of the page at slice `bi` of `sb` (record `rb`)
/// onto those of the page at slice `ai` of `sa` (record `ra`): both of one
/// size class (`bs`-byte blocks, `cap` of them), B's blocks that may hold
/// data marked in `occ_b`, every one of which A has free and excluded:
/// kept per OS page, `occ_b.0` for each block's first OS page and `occ_b.1`
/// for those after it (a straddler is copied only where its bytes hold B's
/// data).
/// Returns the OS pages merged (fewer than `mask` when a slot is full or
/// the kernel refused a mapping; what was not merged is unchanged).
///
/// # Safety
/// The caller owns both pages (in use, distinct, with the records from
/// [`reserve`]) and has excluded, in both, the blocks the other's data
/// goes over (`page::share`); it holds no reference into their memory.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn merge(
    sa: &Segment,
    ai: usize,
    ra: u16,
    sb: &Segment,
    bi: usize,
    rb: u16,
    mask: u16,
    occ_b: (&[u64; LIVE_WORDS], &[u64; LIVE_WORDS]),
    bs: usize,
    cap: usize,
) -> u16 {
    let _g = LOCK.lock();
    let fd = fd();
    if fd < 0 {
        return 0;
    }
    let (ra, rb) = (ra as usize, rb as usize);
    let a = sa.slice_addr(ai) as usize;
    let b = sb.slice_addr(bi) as usize;
    let home = rec(ra - 1).home as usize - 1;
    let mut mask = mask;
    for k in 0..OS_PAGES {
        if mask & (1 << k) != 0 && (!room(ra, k) || rec(rb - 1).on[k] != 0) {
            mask &= !(1 << k);
        }
    }
    let fresh = mask & !on_mask(ra);
    let ranges = runs(fresh).count() + runs(mask).count();
    if mask == 0 || !take_budget(ranges) {
        return 0;
    }
    // Freeze first (the handler must know the slice), then protect.
    freeze(sa, ai, true);
    freeze(sb, bi, true);
    let mut ok_a = 0u16;
    let mut ok_b = 0u16;
    for (lo, hi) in runs(fresh) {
        if protect(a + lo * OS_PAGE, (hi - lo) * OS_PAGE, false) {
            ok_a |= bits(lo, hi);
        }
    }
    for (lo, hi) in runs(mask) {
        if protect(b + lo * OS_PAGE, (hi - lo) * OS_PAGE, false) {
            ok_b |= bits(lo, hi);
        }
    }
    // A's fresh OS pages into their slots, with B's blocks over them.
    let mut buf = [0u8; OS_PAGE];
    let mut written = 0u16;
    for k in 0..OS_PAGES {
        if ok_a & ok_b & (1 << k) == 0 {
            continue;
        }
        // SAFETY: A's OS page is protected (stable) and readable; B's too;
        // `buf` is ours.
        unsafe {
            ptr::copy_nonoverlapping((a + k * OS_PAGE) as *const u8, buf.as_mut_ptr(), OS_PAGE);
            copy_blocks(b, k, occ_b, bs, cap, buf.as_mut_ptr());
        }
        if write_all(fd, buf.as_ptr() as usize, OS_PAGE, offset(home, k)) {
            written |= 1 << k;
        }
    }
    let mut mapped_a = 0u16;
    for (lo, hi) in runs(written) {
        if map_or_restore(
            fd,
            offset(home, lo),
            a + lo * OS_PAGE,
            (hi - lo) * OS_PAGE,
            true,
        ) {
            mapped_a |= bits(lo, hi);
            rec(ra - 1).ranges += 1;
            RANGES.fetch_add(1, Ordering::Relaxed);
            for k in lo..hi {
                rec(ra - 1).on[k] = home as u32 + 1;
                chunk(home).refs[k] = 1;
                SLOTS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    // What A's protection left unmapped is writable again.
    for (lo, hi) in runs(ok_a & !mapped_a) {
        protect(a + lo * OS_PAGE, (hi - lo) * OS_PAGE, true);
    }
    // B's blocks into A's OS pages that were slots already: straight
    // through A's address, at offsets no page uses.
    let mut ready = mapped_a;
    for k in 0..OS_PAGES {
        if mask & ok_b & !fresh & (1 << k) != 0 {
            // SAFETY: A's OS page `k` is a slot, writable, and the bytes
            // written belong to no page's usable block; B's is protected.
            unsafe { copy_blocks(b, k, occ_b, bs, cap, (a + k * OS_PAGE) as *mut u8) };
            ready |= 1 << k;
        }
    }
    // B's OS pages onto the slots: one call per run of one chunk's slots.
    let mut merged = 0u16;
    let mut k = 0;
    while k < OS_PAGES {
        if ready & ok_b & (1 << k) == 0 {
            k += 1;
            continue;
        }
        let c = rec(ra - 1).on[k];
        let mut e = k + 1;
        while e < OS_PAGES && ready & ok_b & (1 << e) != 0 && rec(ra - 1).on[e] == c {
            e += 1;
        }
        // A failed mapping left B's page as it was, or restored it from the
        // slot (which holds B's blocks at their offsets).
        if map_or_restore(
            fd,
            offset(c as usize - 1, k),
            b + k * OS_PAGE,
            (e - k) * OS_PAGE,
            false,
        ) {
            merged |= bits(k, e);
            rec(rb - 1).ranges += 1;
            RANGES.fetch_add(1, Ordering::Relaxed);
            for j in k..e {
                rec(rb - 1).on[j] = c;
                chunk(c as usize - 1).refs[j] += 1;
            }
        }
        k = e;
    }
    for (lo, hi) in runs(ok_b & !merged) {
        protect(b + lo * OS_PAGE, (hi - lo) * OS_PAGE, true);
    }
    // Clears FROZEN: waiting writers retry, into the slots.
    freeze(sb, bi, false);
    freeze(sa, ai, false);
    let n = merged.count_ones() as usize;
    OS_PAGES_MESHED.fetch_add(n, Ordering::Relaxed);
    RELEASED.fetch_add(n * OS_PAGE, Ordering::Relaxed);
    merged
}

/// The OS pages of record `r` (plus one) on slots. Under [`LOCK`].
fn on_mask(r: usize) -> u16 {
    let x = rec(r - 1);
    (0..OS_PAGES)
        .filter(|&k| x.on[k] != 0)
        .fold(0, |m, k| m | 1 << k)
}

/// Bits `lo..hi`.
fn bits(lo: usize, hi: usize) -> u16 {
    (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16
}

/// The page at slice `i` of `seg`, which has a record, is being freed with
/// no live block: fresh private memory over its shared OS pages, its slots
/// dereferenced (punched out at zero), its record and home given up.
/// Returns the OS pages no longer given back (slots that had more than
/// one page and now have one less), and the OS pages of the page that were
/// on slots (which read zero now).
///
/// # Safety
/// The caller owns the page; no block of it is live.
pub(crate) unsafe fn release(seg: &Segment, i: usize) -> (usize, u16) {
    let _g = LOCK.lock();
    let w = seg.mesh[i].load(Ordering::Relaxed);
    if w & SUB == 0 {
        return (0, 0);
    }
    let r = (w & GROUP_MASK) as usize;
    let x = rec(r - 1);
    let fd = fd();
    let mut back = 0;
    let m = on_mask(r);
    for (lo, hi) in runs(m) {
        super::map_private_len(x.start + lo * OS_PAGE, (hi - lo) * OS_PAGE);
    }
    for k in 0..OS_PAGES {
        if x.on[k] == 0 {
            continue;
        }
        let c = x.on[k] as usize - 1;
        let refs = &mut chunk(c).refs[k];
        if *refs >= 2 {
            back += 1;
        }
        *refs -= 1;
        if *refs == 0 {
            SLOTS.fetch_sub(1, Ordering::Relaxed);
            // SAFETY: our memfd; the slot is mapped nowhere now.
            unsafe {
                libc::fallocate(
                    fd,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    offset(c, k) as libc::off_t,
                    OS_PAGE as libc::off_t,
                )
            };
        }
    }
    RELEASED.fetch_sub(back * OS_PAGE, Ordering::Relaxed);
    RANGES.fetch_sub(x.ranges as usize, Ordering::Relaxed);
    if x.home != 0 {
        chunk(x.home as usize - 1).home = 0;
    }
    *x = Rec {
        start: 0,
        home: 0,
        ranges: 0,
        on: [0; OS_PAGES],
    };
    seg.mesh[i].store(0, Ordering::Release);
    (back, m)
}

/// Calls `f` with the start and the on-slot OS pages of every record that
/// has some (under [`LOCK`], set up).
fn each_rec(mut f: impl FnMut(&Rec, u16)) {
    if STATE.load(Ordering::Acquire) != 1 {
        return;
    }
    for r in 0..MAX_RECS {
        let x = rec(r);
        if x.start != 0 {
            let m = on_mask(r + 1);
            if m != 0 {
                f(x, m);
            }
        }
    }
}

/// fork, before (under [`LOCK`]): every shared OS page frozen and
/// write-protected, every slot in use copied into `fd2`. Returns whether
/// every copy was made.
pub(super) fn prepare(fd: i32, fd2: i32) -> bool {
    if SLOTS.load(Ordering::Relaxed) == 0 {
        return true;
    }
    let mut ok = true;
    each_rec(|x, m| {
        let seg = super::seg_of(x.start);
        freeze(seg, crate::segment::slice_index(x.start as *const u8), true);
        for (lo, hi) in runs(m) {
            ok &= protect(x.start + lo * OS_PAGE, (hi - lo) * OS_PAGE, false);
        }
    });
    if fd < 0 {
        // The program closed the memfd (see `super::fd`): each slot in use
        // is read through a page mapped onto it (protected above: stable).
        each_rec(|x, m| {
            for k in (0..OS_PAGES).filter(|&k| m & (1 << k) != 0 && x.on[k] != 0) {
                let off = offset(x.on[k] as usize - 1, k);
                ok &= write_all(fd2, x.start + k * OS_PAGE, OS_PAGE, off);
            }
        });
        return ok;
    }
    let mut buf = [0u8; OS_PAGE];
    for c in 0..CHUNKS {
        for k in 0..OS_PAGES {
            if chunk(c).refs[k] == 0 {
                continue;
            }
            let off = offset(c, k);
            let p = buf.as_mut_ptr() as usize;
            ok &= read_all(fd, p, OS_PAGE, off) && write_all(fd2, p, OS_PAGE, off);
        }
    }
    ok
}

/// fork, after, in the parent (under [`LOCK`]): writable again.
pub(super) fn parent() {
    each_rec(|x, m| {
        for (lo, hi) in runs(m) {
            protect(x.start + lo * OS_PAGE, (hi - lo) * OS_PAGE, true);
        }
        let seg = super::seg_of(x.start);
        freeze(
            seg,
            crate::segment::slice_index(x.start as *const u8),
            false,
        );
    });
}

/// fork, after, in the child (under [`LOCK`]): every shared OS page on the
/// child's own copy.
pub(super) fn child(fd2: i32) {
    each_rec(|x, m| {
        for k in 0..OS_PAGES {
            if m & (1 << k) != 0 {
                super::map_fixed(
                    fd2,
                    offset(x.on[k] as usize - 1, k),
                    x.start + k * OS_PAGE,
                    OS_PAGE,
                );
            }
        }
        let seg = super::seg_of(x.start);
        freeze(
            seg,
            crate::segment::slice_index(x.start as *const u8),
            false,
        );
    });
}
