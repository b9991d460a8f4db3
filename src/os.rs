//! The OS layer: every system call segalloc makes goes through here.
//!
//! Memory comes from anonymous private mappings (`mmap`), or, when the program
//! opts in with [`set_page_source`](crate::set_page_source), from the program
//! break (`sbrk`), falling back to `mmap` once the break cannot grow. Freed
//! memory is given back with `madvise(MADV_DONTNEED)` (the range stays mapped and
//! reads back as zeros) or `munmap`; large blocks grow with `mremap`, which moves
//! page-table entries instead of copying bytes.
//!
//! Invariants:
//! - Nothing here allocates or panics; failures come back as null / `false`.
//! - Every mapping returned by [`map_aligned`] starts on a multiple of the
//!   requested alignment, so the segment header is found from any interior
//!   pointer by masking.
//! - Every call is counted in [`OsCounters`] (relaxed atomics: these are cold
//!   paths, each one already a system call).

mod hooks;
pub(crate) use hooks::{at_exit, at_fork};

// Counters and hints, not protocols: plain core atomics, never modelled by loom.
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

mod thp;
pub(crate) use thp::in_force as huge_pages_in_force;

#[cfg(feature = "profiling")]
mod map_count;
#[cfg(feature = "profiling")]
pub(crate) use map_count::max_map_count;

/// The granularity of the OS calls made here.
pub(crate) const OS_PAGE: usize = 4096;

/// Counts of the system calls made, and bytes currently mapped.
pub(crate) struct OsCounters {
    pub(crate) mmap: AtomicUsize,
    pub(crate) munmap: AtomicUsize,
    pub(crate) madvise: AtomicUsize,
    pub(crate) mremap: AtomicUsize,
    pub(crate) brk: AtomicUsize,
    /// Address space currently reserved from the OS, in bytes.
    pub(crate) mapped: AtomicUsize,
    /// Mappings refused because they would have passed the memory limit.
    pub(crate) limit_hits: AtomicUsize,
    /// `madvise(MADV_DONTNEED)` calls ([`purge`]), and the bytes they covered.
    pub(crate) purges: AtomicUsize,
    pub(crate) purged: AtomicUsize,
}

pub(crate) static COUNTERS: OsCounters = OsCounters {
    mmap: AtomicUsize::new(0),
    munmap: AtomicUsize::new(0),
    madvise: AtomicUsize::new(0),
    mremap: AtomicUsize::new(0),
    brk: AtomicUsize::new(0),
    mapped: AtomicUsize::new(0),
    limit_hits: AtomicUsize::new(0),
    purges: AtomicUsize::new(0),
    purged: AtomicUsize::new(0),
};

/// What gives memory back when an allocation would pass the memory limit
/// (the option `limit`): set once by the layer that owns the process-wide
/// caches (`thread`, when the first heap is made), a plain `fn()` stored as
/// an address so that this layer imports none above it. It must not take
/// a lock that a caller of the mapping functions may hold.
pub(crate) static RECLAIM: AtomicUsize = AtomicUsize::new(0);

/// What reads the process's committed memory as the statistics define it
/// (`stats::committed_now`, a `fn() -> usize` stored as an address, set
/// with [`RECLAIM`]); until then, the address space mapped.
static COMMITTED: AtomicUsize = AtomicUsize::new(0);

/// Committed memory now: what the memory limits count (see [`COMMITTED`]).
pub(crate) fn committed() -> usize {
    let f = COMMITTED.load(Ordering::Relaxed);
    if f == 0 {
        return COUNTERS.mapped.load(Ordering::Relaxed);
    }
    // SAFETY: only `set_limit_hooks` stores here, always a `fn() -> usize`.
    let f = unsafe { core::mem::transmute::<usize, fn() -> usize>(f) };
    f()
}

/// Whether committed memory is past the soft limit (option `limit_soft`):
/// then free memory is purged at once and the caches keep nothing. One
/// relaxed load when no soft limit is set.
#[inline]
pub(crate) fn past_soft_limit() -> bool {
    let soft = crate::options::LIMIT_SOFT.get();
    soft != 0 && committed() > soft
}

/// Whether committing `extra` more bytes would put committed memory past
/// the soft limit: for memory that is about to be kept rather than given
/// back (a freed large block the cache would hold).
#[inline]
pub(crate) fn past_soft_limit_with(extra: usize) -> bool {
    let soft = crate::options::LIMIT_SOFT.get();
    soft != 0 && committed().saturating_add(extra) > soft
}

/// Calls [`RECLAIM`], if set.
fn reclaim() {
    let f = RECLAIM.load(Ordering::Relaxed);
    if f != 0 {
        // SAFETY: only `set_limit_hooks` stores here, always a `fn()`.
        let f = unsafe { core::mem::transmute::<usize, fn()>(f) };
        f();
    }
}

/// Whether committing `extra` more bytes keeps committed memory within the
/// hard limit (option `limit`; always, without one). No side effect: see
/// [`within_limit`].
#[inline]
pub(crate) fn fits_limit(extra: usize) -> bool {
    let limit = crate::options::LIMIT.get();
    limit == 0 || committed().saturating_add(extra) <= limit
}

/// Whether `extra` more bytes may be committed under the memory limit
/// (committed memory as the statistics count it: pages in use, resident
/// free memory, large blocks, metadata; purged memory does not count): if
/// not, the caches are given back ([`RECLAIM`]) and the check made again;
/// a refusal is counted. Committing past the soft limit gives the caches
/// back too, but is never refused for it.
pub(crate) fn within_limit(extra: usize) -> bool {
    crate::options::init_once();
    let soft = crate::options::LIMIT_SOFT.get();
    if soft != 0 {
        let past = committed().saturating_add(extra) > soft;
        // One verbose line each time memory crosses the soft limit upwards.
        static WAS_PAST: AtomicUsize = AtomicUsize::new(0);
        if WAS_PAST.swap(past as usize, Ordering::Relaxed) == 0 && past {
            crate::options::verbose(|l| {
                l.push(b"past the soft limit of ");
                l.number(soft);
                l.push(b" bytes: purging at once, caches emptied");
            });
        }
        if past {
            reclaim();
        }
    }
    let limit = crate::options::LIMIT.get();
    if fits_limit(extra) {
        return true;
    }
    reclaim();
    if fits_limit(extra) {
        return true;
    }
    count(&COUNTERS.limit_hits);
    crate::options::verbose(|l| {
        l.push(b"committing ");
        l.number(extra);
        l.push(b" more bytes would pass the limit of ");
        l.number(limit);
        l.push(b" (");
        l.number(committed());
        l.push(b" committed): the allocation fails");
    });
    false
}

/// Sets what [`within_limit`] calls to give memory back, and what reads
/// committed memory.
pub(crate) fn set_limit_hooks(reclaim: fn(), committed: fn() -> usize) {
    COMMITTED.store(committed as usize, Ordering::Relaxed);
    RECLAIM.store(reclaim as usize, Ordering::Relaxed);
}

#[inline]
fn count(c: &AtomicUsize) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Rounds `n` up to a multiple of `align` (a power of two), or `None` on overflow.
#[inline]
pub(crate) const fn round_up(n: usize, align: usize) -> Option<usize> {
    match n.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// A transparent huge page (x86-64).
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// Maps `size` bytes (a multiple of [`OS_PAGE`]) of zeroed, readable and writable
/// memory, at `hint` if that range is free. Returns null on failure.
fn mmap_at(hint: usize, size: usize) -> *mut u8 {
    count(&COUNTERS.mmap);
    // SAFETY: an anonymous private mapping with no MAP_FIXED cannot disturb any
    // existing mapping; the kernel treats `hint` only as a suggestion.
    let p = unsafe {
        libc::mmap(
            hint as *mut libc::c_void,
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        let e = errno();
        crate::options::verbose(|l| {
            l.push(b"mmap of ");
            l.number(size);
            l.push(b" bytes failed, errno ");
            l.number(e as usize);
        });
        return ptr::null_mut();
    }
    thp::advise(p, size);
    COUNTERS.mapped.fetch_add(size, Ordering::Relaxed);
    p.cast()
}

/// Sets the calling thread's `errno` (C's allocation functions report
/// running out of memory so).
#[inline]
pub(crate) fn set_errno(e: i32) {
    // SAFETY: `__errno_location` returns the calling thread's errno slot,
    // which is always valid to write (it lives in libc's initial-exec TLS).
    unsafe { *libc::__errno_location() = e };
}

/// The calling thread's `errno`.
pub(crate) fn errno() -> i32 {
    // SAFETY: glibc's errno location is valid for the calling thread.
    unsafe { *libc::__errno_location() }
}

/// A coarse monotonic clock in milliseconds (a vDSO read, no system call).
pub(crate) fn now_ms() -> u64 {
    let (s, ns) = clock(libc::CLOCK_MONOTONIC_COARSE);
    s * 1000 + ns / 1_000_000
}

/// The precise monotonic clock in microseconds (a vDSO read, no system
/// call): for the background purger, whose looks must not fall a clock
/// tick short of a deadline.
pub(crate) fn now_us() -> u64 {
    let (s, ns) = clock(libc::CLOCK_MONOTONIC);
    s * 1_000_000 + ns / 1000
}

/// Seconds and nanoseconds of the clock `id`.
fn clock(id: libc::clockid_t) -> (u64, u64) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(id, &mut ts) };
    (ts.tv_sec as u64, ts.tv_nsec as u64)
}

/// Reads the start of the file at `path` into `buf` (no allocation);
/// returns the bytes read, 0 if it cannot be read.
fn read_file(path: &core::ffi::CStr, buf: &mut [u8]) -> usize {
    // SAFETY: opening a NUL-terminated path read-only, reading into our
    // buffer within its length, and closing the descriptor we opened.
    let n = unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return 0;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    n.max(0) as usize
}

/// Resident memory of the whole process, from /proc/self/statm (0 if unknown).
/// Reads into a stack buffer: no allocation.
pub(crate) fn resident_bytes() -> usize {
    let mut buf = [0u8; 128];
    let n = read_file(c"/proc/self/statm", &mut buf);
    if n == 0 {
        return 0;
    }
    // The second field is the resident set in pages.
    let mut fields = buf[..n].split(|&b| b == b' ');
    let _size = fields.next();
    let mut pages = 0usize;
    for &d in fields.next().unwrap_or(&[]) {
        if !d.is_ascii_digit() {
            break;
        }
        pages = pages.wrapping_mul(10).wrapping_add((d - b'0') as usize);
    }
    pages * OS_PAGE
}

/// Unmaps `[p, p + size)`, which must be a range segalloc mapped and no longer uses.
pub(crate) fn unmap(p: *mut u8, size: usize) {
    if size == 0 {
        return;
    }
    count(&COUNTERS.munmap);
    // SAFETY: the caller owns the range and nothing refers to it any more;
    // munmap of an owned anonymous range has no other effect.
    let rc = unsafe { libc::munmap(p.cast(), size) };
    if rc == 0 {
        COUNTERS.mapped.fetch_sub(size, Ordering::Relaxed);
    }
}

/// Where the next aligned mapping is tried first. Placing segments in a region
/// of their own, one after the other, makes the first `mmap` land aligned
/// almost always, so an aligned reservation usually costs one system call.
static NEXT_HINT: AtomicUsize = AtomicUsize::new(HINT_START);
const HINT_START: usize = 0x2000_0000_0000; // 32 TiB
const HINT_END: usize = 0x5000_0000_0000; // 80 TiB

/// Maps `size` bytes aligned to `align` (a power of two, at least [`OS_PAGE`]).
/// `size` must be a multiple of [`OS_PAGE`]. Returns null on failure.
pub(crate) fn map_aligned(size: usize, align: usize) -> *mut u8 {
    if !within_limit(size) {
        return ptr::null_mut();
    }
    map_aligned_unlimited(size, align)
}

/// [`map_aligned`] without the memory limit's check (the caller made it).
fn map_aligned_unlimited(size: usize, align: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two() && align >= OS_PAGE && size % OS_PAGE == 0);
    let Some(span) = round_up(size, align) else {
        return ptr::null_mut();
    };
    let mut hint = NEXT_HINT.fetch_add(span, Ordering::Relaxed);
    if hint > HINT_END || hint.checked_add(span).is_none_or(|end| end > HINT_END) {
        // Wrap around; the kernel skips whatever is still in use there.
        NEXT_HINT.store(HINT_START, Ordering::Relaxed);
        hint = 0;
    }
    let hint = round_up(hint, align).unwrap_or(0);
    let p = mmap_at(hint, size);
    if p.is_null() {
        return p;
    }
    if (p as usize) & (align - 1) == 0 {
        return p;
    }
    // Unlucky: over-map by `align` and trim both ends.
    unmap(p, size);
    let Some(over) = size.checked_add(align) else {
        return ptr::null_mut();
    };
    let p = mmap_at(0, over);
    if p.is_null() {
        return p;
    }
    let start = round_up(p as usize, align).unwrap_or(0);
    let head = start - p as usize;
    let tail = over - head - size;
    unmap(p, head);
    // SAFETY: `start + size` lies within the mapping of `over` bytes at `p`.
    unmap(unsafe { p.add(head + size) }, tail);
    start as *mut u8
}

/// Gives the physical memory of `[p, p + size)` back to the OS while keeping the
/// range mapped; it reads back as zeros. Both ends must be [`OS_PAGE`]-aligned.
pub(crate) fn purge(p: *mut u8, size: usize) {
    if size == 0 {
        return;
    }
    count(&COUNTERS.madvise);
    count(&COUNTERS.purges);
    COUNTERS.purged.fetch_add(size, Ordering::Relaxed);
    // SAFETY: the range is owned by segalloc and holds no live data; DONTNEED on
    // a private anonymous range only drops its pages.
    unsafe {
        libc::madvise(p.cast(), size, libc::MADV_DONTNEED);
    }
}

/// Makes `[p, p + size)` inaccessible (a guard: any access faults).
#[cfg(feature = "secure")]
pub(crate) fn protect_none(p: *mut u8, size: usize) {
    // SAFETY: the range is segalloc's and is never handed out.
    unsafe {
        libc::mprotect(p.cast(), size, libc::PROT_NONE);
    }
}

/// Whether large blocks may be resized with `mremap`. Not under valgrind
/// (memcheck does not follow the pages `mremap` moves or grows, and reports
/// accesses to them as invalid), which is detected from its preload library
/// in `LD_PRELOAD`; `SEGALLOC_NO_MREMAP=1` turns it off too. Then a large
/// block is resized by allocating, copying and freeing. Read once.
pub(crate) fn mremap_usable() -> bool {
    static STATE: AtomicUsize = AtomicUsize::new(0); // 0 unknown, 1 yes, 2 no
    match STATE.load(Ordering::Relaxed) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    let has = |var: &core::ffi::CStr, needle: &[u8]| -> bool {
        // SAFETY: getenv with a NUL-terminated name; a non-null result is a
        // NUL-terminated string we only read.
        unsafe {
            let v = libc::getenv(var.as_ptr());
            if v.is_null() {
                return false;
            }
            let bytes = core::ffi::CStr::from_ptr(v).to_bytes();
            needle.is_empty() || bytes.windows(needle.len()).any(|w| w == needle)
        }
    };
    let usable = !has(c"SEGALLOC_NO_MREMAP", b"") && !has(c"LD_PRELOAD", b"vgpreload");
    STATE.store(if usable { 1 } else { 2 }, Ordering::Relaxed);
    usable
}

/// Resizes the mapping `[p, p + old)` to `new` bytes without moving it.
/// Returns whether it succeeded (shrinking always does).
pub(crate) fn remap_in_place(p: *mut u8, old: usize, new: usize) -> bool {
    if new > old && !within_limit(new - old) {
        return false;
    }
    count(&COUNTERS.mremap);
    // SAFETY: without MREMAP_MAYMOVE the kernel only grows into free address
    // space after the mapping or drops its tail; nothing else is touched.
    let q = unsafe { libc::mremap(p.cast(), old, new, 0) };
    if q == libc::MAP_FAILED {
        return false;
    }
    if new > old {
        COUNTERS.mapped.fetch_add(new - old, Ordering::Relaxed);
    } else {
        COUNTERS.mapped.fetch_sub(old - new, Ordering::Relaxed);
    }
    true
}

/// Moves the mapping `[p, p + old)` to a fresh range of `new` bytes aligned to
/// `align`, carrying its pages over without copying them. Returns the new
/// address, or null (the old mapping is then untouched).
pub(crate) fn remap_aligned(p: *mut u8, old: usize, new: usize, align: usize) -> *mut u8 {
    // The old range goes once the pages have moved: only growth counts.
    if new > old && !within_limit(new - old) {
        return ptr::null_mut();
    }
    let dst = map_aligned_unlimited(new, align);
    if dst.is_null() {
        return dst;
    }
    count(&COUNTERS.mremap);
    // SAFETY: `dst` is a mapping we just made of exactly `new` bytes; MREMAP_FIXED
    // replaces it atomically with the pages of `[p, p + old)`, which the caller owns.
    let q = unsafe {
        libc::mremap(
            p.cast(),
            old,
            new,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            dst as *mut libc::c_void,
        )
    };
    if q == libc::MAP_FAILED {
        unmap(dst, new);
        return ptr::null_mut();
    }
    // The old range's bytes moved into the range already counted for `dst`.
    COUNTERS.mapped.fetch_sub(old, Ordering::Relaxed);
    q.cast()
}

/// Serialises moves of the program break (a cold path: once per segment).
pub(crate) static BRK_LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// Makes segments come from the program break (opt-in) instead of mmap:
/// the option `page_source`.
pub(crate) fn set_use_brk(on: bool) {
    crate::options::PAGE_SOURCE.set_by_program(on as usize);
}

/// Where a segment's memory came from; decides how it is given back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum Source {
    Mmap = 0,
    Brk = 1,
}

/// Obtains a region of `size` bytes aligned to `size` (a power of two) for a
/// segment, of which `commit` bytes count as committed at once (the
/// header; the rest as pages are cut): from the break when opted in and it
/// can grow, otherwise mmap.
pub(crate) fn alloc_segment_memory(size: usize, commit: usize) -> (*mut u8, Source) {
    if !within_limit(commit) {
        return (ptr::null_mut(), Source::Mmap);
    }
    if crate::options::PAGE_SOURCE.get() == 1 {
        let p = brk_alloc(size);
        if !p.is_null() {
            return (p, Source::Brk);
        }
    }
    (map_aligned_unlimited(size, size), Source::Mmap)
}

/// Extends the break by an aligned `size` bytes. Null when it cannot grow.
fn brk_alloc(size: usize) -> *mut u8 {
    let _guard = BRK_LOCK.lock();
    count(&COUNTERS.brk);
    // SAFETY: sbrk(0) only reads the current break.
    let cur = unsafe { libc::sbrk(0) } as usize;
    if cur == usize::MAX {
        return ptr::null_mut();
    }
    let Some(start) = round_up(cur, size) else {
        return ptr::null_mut();
    };
    let Some(grow) = (start - cur).checked_add(size) else {
        return ptr::null_mut();
    };
    let Ok(grow) = libc::intptr_t::try_from(grow) else {
        return ptr::null_mut();
    };
    count(&COUNTERS.brk);
    // SAFETY: growing the break hands us fresh zeroed memory past the old end;
    // the alignment gap below `start` is simply never used.
    let old = unsafe { libc::sbrk(grow) } as usize;
    if old == usize::MAX {
        return ptr::null_mut();
    }
    // Someone else may have moved the break between our two calls: what we own
    // is `[old, old + grow)`, so align within that (the gap below is unused).
    let Some(start) = round_up(old, size) else {
        return ptr::null_mut();
    };
    if start + size > old + grow as usize {
        return ptr::null_mut();
    }
    COUNTERS.mapped.fetch_add(size, Ordering::Relaxed);
    start as *mut u8
}

/// Maps `size` bytes of zeroed scratch memory for a diagnostic (the page
/// map), outside segalloc's own accounting and limit: it is not heap memory
/// and is unmapped with [`unmap_scratch`] when done. Null on failure.
pub(crate) fn map_scratch(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at no fixed address touches no
    // existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Unmaps scratch memory from [`map_scratch`].
///
/// # Safety
/// `p` and `size` are a mapping [`map_scratch`] returned, no longer used.
pub(crate) unsafe fn unmap_scratch(p: *mut u8, size: usize) {
    // SAFETY: per the contract the range is ours and unused.
    unsafe { libc::munmap(p.cast(), size) };
}

/// How [`copy_own`] can copy: 0 not tried yet, 1 `process_vm_readv`, 2 plain
/// loads (the system call is refused, e.g. by a seccomp filter).
static COPY_MODE: AtomicUsize = AtomicUsize::new(0);

/// Copies `len` bytes at `src`, memory of this process that another thread
/// may be writing or unmapping, into `dst`. Through `process_vm_readv` on
/// the process itself: the kernel copies, so a concurrent write is no data
/// race in Rust's sense (the copy may be torn, and the caller checks it) and
/// an unmapped source gives an error rather than a fault. Where the call is
/// refused, falls back to volatile word loads, which can fault if `src` is
/// unmapped meanwhile. Returns whether all `len` bytes were copied.
///
/// # Safety
/// `dst` is valid for `len` bytes of writes; `src` and `len` are multiples
/// of 8, and `src` was mapped by segalloc (it may have been unmapped since
/// only where the system call works).
pub(crate) unsafe fn copy_own(dst: *mut u8, src: *const u8, len: usize) -> bool {
    if COPY_MODE.load(Ordering::Relaxed) != 2 {
        let local = libc::iovec {
            iov_base: dst.cast(),
            iov_len: len,
        };
        let remote = libc::iovec {
            iov_base: src.cast_mut().cast(),
            iov_len: len,
        };
        // SAFETY: reads our own address space into `dst`, valid per the
        // contract; the kernel checks the source range.
        let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        if n >= 0 {
            COPY_MODE.store(1, Ordering::Relaxed);
            return n as usize == len;
        }
        let e = errno();
        if e == libc::EFAULT || e == libc::ESRCH || COPY_MODE.load(Ordering::Relaxed) == 1 {
            return false;
        }
        COPY_MODE.store(2, Ordering::Relaxed);
    }
    let words = len / 8;
    for i in 0..words {
        // SAFETY: per the contract both ranges are valid and 8-aligned; a
        // volatile load is not elided or merged (the bytes may be changing).
        unsafe {
            let w = src.cast::<u64>().add(i).read_volatile();
            dst.cast::<u64>().add(i).write(w);
        }
    }
    true
}

/// Whether every page of `[lo, hi)` is mapped readable, asked of the
/// kernel (`process_vm_readv` of one byte a page from this process, 64
/// pages a call), so nothing here can fault. False if not, or if the call
/// is refused (a seccomp filter). Allocates nothing. (For the heap
/// profiler's stack walk only.)
#[cfg(all(
    feature = "profiling",
    target_arch = "x86_64",
    target_os = "linux",
    target_env = "gnu"
))]
pub(crate) fn readable(lo: usize, hi: usize) -> bool {
    let mut bytes = [0u8; 64];
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let mut page = lo & !(OS_PAGE - 1);
    while page < hi {
        let mut remote = [libc::iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0,
        }; 64];
        let mut n = 0;
        while n < remote.len() && page < hi {
            remote[n] = libc::iovec {
                iov_base: page as *mut libc::c_void,
                iov_len: 1,
            };
            n += 1;
            page += OS_PAGE;
        }
        let local = libc::iovec {
            iov_base: bytes.as_mut_ptr().cast(),
            iov_len: n,
        };
        // SAFETY: writes at most `n` bytes into `bytes` (room for 64); the
        // kernel checks the source pages and fails on any it cannot read.
        let r = unsafe { libc::process_vm_readv(pid, &local, 1, remote.as_ptr(), n as _, 0) };
        if r != n as isize {
            return false;
        }
    }
    true
}

/// Which pages of `[addr, addr + len)` are resident (`mincore`): bit 0 of
/// `vec[i]` for page `i`. `addr` is page-aligned and `vec` holds a byte per
/// page. False if the call fails.
pub(crate) fn mincore(addr: *const u8, len: usize, vec: &mut [u8]) -> bool {
    if vec.len() < len.div_ceil(OS_PAGE) {
        return false;
    }
    // SAFETY: `vec` has room for a byte per page of the range; mincore only
    // writes there and reads nothing of the range.
    unsafe { libc::mincore(addr.cast_mut().cast(), len, vec.as_mut_ptr()) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_maps_are_aligned_and_usable() {
        for &align in &[OS_PAGE, 1 << 16, 1 << 22, 1 << 24] {
            let size = 3 * OS_PAGE;
            let p = map_aligned(size, align);
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "align {align}");
            // SAFETY: p is a fresh mapping of `size` bytes.
            unsafe {
                assert_eq!(*p, 0, "fresh mapping reads zero");
                p.write_bytes(0xAB, size);
                assert_eq!(*p.add(size - 1), 0xAB);
            }
            unmap(p, size);
        }
    }

    #[test]
    fn purge_zeroes_but_keeps_mapping() {
        let p = map_aligned(2 * OS_PAGE, OS_PAGE);
        assert!(!p.is_null());
        // SAFETY: p is a fresh mapping of two pages.
        unsafe {
            p.write_bytes(7, 2 * OS_PAGE);
            purge(p, OS_PAGE);
            assert_eq!(*p, 0, "purged page reads zero");
            assert_eq!(*p.add(OS_PAGE), 7, "unpurged page keeps its data");
        }
        unmap(p, 2 * OS_PAGE);
    }

    #[test]
    fn remap_grows_in_place_or_moves_keeping_contents() {
        let align = 1 << 22;
        let p = map_aligned(OS_PAGE, align);
        assert!(!p.is_null());
        // SAFETY: p maps one page; after a successful remap the new range maps
        // `new` bytes with the old page's contents first.
        unsafe {
            p.write_bytes(0x5A, OS_PAGE);
            let new = 64 * OS_PAGE;
            let q = if remap_in_place(p, OS_PAGE, new) {
                p
            } else {
                remap_aligned(p, OS_PAGE, new, align)
            };
            assert!(!q.is_null());
            assert_eq!(q as usize % align, 0);
            assert_eq!(*q.add(OS_PAGE - 1), 0x5A);
            assert_eq!(*q.add(new - 1), 0, "grown part is fresh");
            // Moving on purpose must also keep the contents.
            let r = remap_aligned(q, new, 2 * new, align);
            assert!(!r.is_null());
            assert_eq!(*r, 0x5A);
            unmap(r, 2 * new);
        }
    }

    #[test]
    fn impossible_mapping_fails_cleanly() {
        assert!(map_aligned(usize::MAX & !(OS_PAGE - 1), OS_PAGE).is_null());
        assert!(map_aligned(1 << 62, 1 << 22).is_null());
    }

    #[test]
    fn resident_is_read() {
        let r = resident_bytes();
        assert!(r > 0 && r < (1 << 40), "resident {r}");
    }

    #[test]
    fn round_up_detects_overflow() {
        assert_eq!(round_up(1, 16), Some(16));
        assert_eq!(round_up(32, 16), Some(32));
        assert_eq!(round_up(usize::MAX, 16), None);
    }

    #[test]
    fn copy_own_copies_and_refuses_unmapped_memory() {
        let size = 2 * OS_PAGE;
        let p = map_scratch(size);
        assert!(!p.is_null());
        let mut dst = [0u64; 4];
        // SAFETY: `p` is a fresh mapping of `size` bytes; `dst` holds 32.
        unsafe {
            p.cast::<u64>().write(0x1234_5678);
            assert!(copy_own(dst.as_mut_ptr().cast(), p, 32));
            assert_eq!(dst[0], 0x1234_5678);
            unmap_scratch(p, size);
            // Gone: refused, not a fault (where process_vm_readv works).
            if COPY_MODE.load(Ordering::Relaxed) == 1 {
                assert!(!copy_own(dst.as_mut_ptr().cast(), p, 32));
            }
        }
    }
}
