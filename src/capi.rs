//! The C allocation API (cargo feature `override`): `malloc`, `free` and the
//! rest, exported unmangled so that segalloc takes over every allocation of the
//! process.
//!
//! Two ways in:
//! - `cargo build --release --features override` also builds
//!   `target/release/libsegalloc.so`; `LD_PRELOAD` it into any program.
//! - A Rust binary that links segalloc with the feature gets these definitions
//!   from the rlib; the linker then resolves libc's own `malloc` calls (and its
//!   C dependencies') to them, since an executable's symbols come first.
//!
//! Semantics follow glibc: `errno` is `ENOMEM` on failure, `malloc(0)` is a
//! unique live block, `realloc(p, 0)` frees `p` and returns null,
//! `posix_memalign` returns `EINVAL` for an alignment that is not a power of
//! two multiple of `sizeof(void *)`, `aligned_alloc` sets `EINVAL` for one that
//! is not a power of two (glibc 2.38 and later), and `memalign` rounds such an
//! alignment up. Any power-of-two alignment is served (above
//! [`crate::MAX_ALIGN`] with a mapping of its own); one that no address space
//! holds fails with `ENOMEM`.
//!
//! Every block handed out is at least 16-aligned (`max_align_t`), so plain
//! `malloc` asks the engine for alignment 16.
//!
//! Freeing a pointer segalloc did not hand out is undefined, as with any
//! allocator: the engine aborts when it can tell, and may fault when the
//! segment-aligned address below the pointer is unmapped.

use crate::alloc;
use crate::os::set_errno;
use crate::size_class::MIN_ALIGN;
use core::ffi::{c_int, c_void};
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Out of memory: glibc sets `errno` and returns null.
#[cold]
pub(crate) fn enomem() -> *mut c_void {
    set_errno(libc::ENOMEM);
    ptr::null_mut()
}

/// `malloc` of `size` bytes at `align` (a power of two, at least 16), null
/// with `errno = ENOMEM` on failure. C frees without a size, so the
/// statistics count the whole block as requested.
#[inline(always)]
fn alloc_or_enomem(size: usize, align: usize) -> *mut c_void {
    alloc::malloc_whole_c(size, align).cast()
}

/// The OS page size, read once (sysconf neither allocates nor locks).
fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let p = PAGE.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    // SAFETY: sysconf only reads a value the kernel gave at exec.
    let s = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let s = if s > 0 && (s as usize).is_power_of_two() {
        s as usize
    } else {
        4096
    };
    PAGE.store(s, Ordering::Relaxed);
    s
}

/// C `malloc`: `size` bytes, 16-aligned; null with `errno = ENOMEM` on failure.
/// `malloc(0)` returns a unique block.
#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    alloc_or_enomem(size, MIN_ALIGN)
}

/// C `free`: gives back a block from any function here; null is a no-op.
///
/// # Safety
/// `p` is null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // Null needs no test of its own: `alloc::free` looks `p - 1` up in the
    // segment registry, which holds nothing that far up, and its cold path
    // returns for null. It reads the thread's heap first (for its tag), an
    // initial-exec TLS load that is valid in every thread at any time: no
    // call, so no re-entry (the dynamic loader calls free(NULL) while it
    // updates a thread's TLS vector).
    // SAFETY: per the contract `p` is null or a live block of ours.
    unsafe { alloc::free(p.cast(), alloc::UNSIZED) }
}

/// C `calloc`: zeroed memory for `n` objects of `size` bytes; null with
/// `errno = ENOMEM` when `n * size` overflows or memory runs out.
#[no_mangle]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(size) else {
        return enomem();
    };
    let p = alloc::zalloc_whole(total, MIN_ALIGN);
    if p.is_null() {
        return enomem();
    }
    p.cast()
}

/// C `realloc`: `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees `p`
/// and returns null (as glibc does); on failure returns null with `errno =
/// ENOMEM` and leaves `p` intact.
///
/// # Safety
/// `p` is null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        return malloc(size);
    }
    if size == 0 {
        // SAFETY: `p` is a live block of ours.
        unsafe { free(p) };
        return ptr::null_mut();
    }
    // SAFETY: `p` is live; C does not know its old size, which UNSIZED says
    // (the engine then copies up to the usable size).
    let q = unsafe { alloc::realloc_whole(p.cast(), alloc::UNSIZED, MIN_ALIGN, size) };
    if q.is_null() {
        return enomem();
    }
    q.cast()
}

/// `reallocarray`: `realloc(p, n * size)`, failing with `ENOMEM` (and `p`
/// intact) when the product overflows.
///
/// # Safety
/// `p` is null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(size) else {
        return enomem();
    };
    // SAFETY: forwarded contract.
    unsafe { realloc(p, total) }
}

/// `posix_memalign`: stores a block of `size` bytes aligned to `align` in
/// `*out` and returns 0; returns `EINVAL` when `align` is not a power of two
/// multiple of `sizeof(void *)`, `ENOMEM` when memory runs out (then `*out` is
/// left alone). `errno` is not changed.
///
/// # Safety
/// `out` is valid for a pointer write.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || align < core::mem::size_of::<*mut c_void>() {
        return libc::EINVAL;
    }
    let align = align.max(MIN_ALIGN);
    let p = alloc::malloc_whole(size, align);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller passes a writable pointer slot.
    unsafe { *out = p.cast() };
    0
}

/// C11 `aligned_alloc`: `size` bytes aligned to `align`, any power of two;
/// null with `errno = EINVAL` for another alignment (glibc 2.38 and later),
/// `ENOMEM` when memory runs out or `align` exceeds 2 MiB.
#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    alloc_or_enomem(size, align.max(MIN_ALIGN))
}

/// `memalign`: `size` bytes aligned to `align`; an alignment that is not a
/// power of two is rounded up to one (as glibc does), and one above
/// `SIZE_MAX / 2 + 1` fails with `EINVAL`.
#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    let Some(a) = align.checked_next_power_of_two() else {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    };
    alloc_or_enomem(size, a.max(MIN_ALIGN))
}

/// `valloc`: `size` bytes aligned to the page size.
#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    alloc_or_enomem(size, page_size())
}

/// `pvalloc`: `size` rounded up to whole pages, page-aligned.
#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = page_size();
    let Some(rounded) = size.checked_add(page - 1) else {
        return enomem();
    };
    alloc_or_enomem(rounded & !(page - 1), page)
}

/// `malloc_usable_size`: the bytes usable in the block `p` (at least what was
/// asked for), 0 for null.
///
/// # Safety
/// `p` is null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    // SAFETY: `p` is a live block of ours.
    unsafe { alloc::usable_size(p.cast()) }
}

/// C23 `free_sized`: `free`, the size being only a hint.
///
/// # Safety
/// As [`free`].
#[no_mangle]
pub unsafe extern "C" fn free_sized(p: *mut c_void, _size: usize) {
    // SAFETY: forwarded contract.
    unsafe { free(p) }
}

/// C23 `free_aligned_sized`: `free`, the alignment and size being only hints.
///
/// # Safety
/// As [`free`].
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, _align: usize, _size: usize) {
    // SAFETY: forwarded contract.
    unsafe { free(p) }
}

/// `malloc_trim`: returns what the calling thread can to the OS (see
/// [`crate::collect`]); always reports that memory may have been released.
#[no_mangle]
pub extern "C" fn malloc_trim(_pad: usize) -> c_int {
    crate::collect();
    1
}

/// glibc's `struct mallinfo2`, filled from segalloc's own figures.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MallInfo2 {
    /// Committed bytes of the small-object heap (segalloc's `committed`
    /// minus large objects).
    pub arena: usize,
    /// Free blocks inside pages in use, over all size classes.
    pub ordblks: usize,
    /// Unused by segalloc (0).
    pub smblks: usize,
    /// Live large (directly mapped) objects.
    pub hblks: usize,
    /// Usable bytes of the live large objects.
    pub hblkhd: usize,
    /// Unused (0, as in glibc).
    pub usmblks: usize,
    /// Unused by segalloc (0).
    pub fsmblks: usize,
    /// Bytes handed out (segalloc's `allocated`).
    pub uordblks: usize,
    /// Committed bytes free but not handed out (external fragmentation).
    pub fordblks: usize,
    /// Wholly free memory that `malloc_trim` would give back (`free_pages`).
    pub keepcost: usize,
}

/// glibc's `mallinfo2`, answered from [`crate::stats`].
#[no_mangle]
pub extern "C" fn mallinfo2() -> MallInfo2 {
    let s = crate::stats();
    MallInfo2 {
        arena: s.committed - s.large_bytes,
        ordblks: s.classes.iter().map(|c| c.free_blocks).sum(),
        hblks: s.large_objects,
        hblkhd: s.large_bytes,
        uordblks: s.allocated,
        fordblks: s.external_fragmentation(),
        keepcost: s.free_pages,
        ..MallInfo2::default()
    }
}

/// glibc's older `struct mallinfo`: the fields of [`MallInfo2`] as `int`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MallInfo {
    /// [`MallInfo2::arena`], at most `INT_MAX`.
    pub arena: c_int,
    /// [`MallInfo2::ordblks`], at most `INT_MAX`.
    pub ordblks: c_int,
    /// 0.
    pub smblks: c_int,
    /// [`MallInfo2::hblks`], at most `INT_MAX`.
    pub hblks: c_int,
    /// [`MallInfo2::hblkhd`], at most `INT_MAX`.
    pub hblkhd: c_int,
    /// 0.
    pub usmblks: c_int,
    /// 0.
    pub fsmblks: c_int,
    /// [`MallInfo2::uordblks`], at most `INT_MAX`.
    pub uordblks: c_int,
    /// [`MallInfo2::fordblks`], at most `INT_MAX`.
    pub fordblks: c_int,
    /// [`MallInfo2::keepcost`], at most `INT_MAX`.
    pub keepcost: c_int,
}

/// glibc's deprecated `mallinfo`: [`mallinfo2`] with each figure held at
/// `INT_MAX` where glibc's would wrap (past 2 GiB), so that a program still
/// on the old call reads segalloc's figures rather than glibc's unused
/// heap's.
#[no_mangle]
pub extern "C" fn mallinfo() -> MallInfo {
    let m = mallinfo2();
    let i = |v: usize| c_int::try_from(v).unwrap_or(c_int::MAX);
    MallInfo {
        arena: i(m.arena),
        ordblks: i(m.ordblks),
        smblks: i(m.smblks),
        hblks: i(m.hblks),
        hblkhd: i(m.hblkhd),
        usmblks: i(m.usmblks),
        fsmblks: i(m.fsmblks),
        uordblks: i(m.uordblks),
        fordblks: i(m.fordblks),
        keepcost: i(m.keepcost),
    }
}

/// glibc's `malloc_info`: segalloc's figures in glibc's XML shape on `fp`
/// (one `<heap>` for the whole process: a `<size>` per size class with free
/// blocks in pages in use, then the totals glibc writes: free blocks as
/// `rest`, live large blocks as `mmap`, committed memory as `current` and
/// `max` (segalloc keeps no peak), reserved address space as `aspace`).
/// Returns 0, or -1 with `errno`
/// `EINVAL` for `options` other than 0 (as glibc), or a null `fp`.
///
/// # Safety
/// `fp` is null or an open `FILE *` the caller may write to.
#[no_mangle]
pub unsafe extern "C" fn malloc_info(options: c_int, fp: *mut libc::FILE) -> c_int {
    if options != 0 || fp.is_null() {
        crate::os::set_errno(libc::EINVAL);
        return -1;
    }
    let s = crate::stats();
    let mut out = FileOut(fp);
    let free_count: usize = s.classes.iter().map(|c| c.free_blocks).sum();
    let free_bytes: usize = s
        .classes
        .iter()
        .map(|c| c.free_blocks.saturating_mul(c.block_size))
        .sum();
    let _ = (|| -> core::fmt::Result {
        use core::fmt::Write;
        write!(out, "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n")?;
        for c in s.classes.iter().filter(|c| c.free_blocks != 0) {
            writeln!(
                out,
                "  <size from=\"{0}\" to=\"{0}\" total=\"{1}\" count=\"{2}\"/>",
                c.block_size,
                c.free_blocks.saturating_mul(c.block_size),
                c.free_blocks
            )?;
        }
        let totals = |out: &mut FileOut| -> core::fmt::Result {
            writeln!(out, "<total type=\"fast\" count=\"0\" size=\"0\"/>")?;
            writeln!(
                out,
                "<total type=\"rest\" count=\"{free_count}\" size=\"{free_bytes}\"/>"
            )
        };
        writeln!(out, "</sizes>")?;
        totals(&mut out)?;
        let system = |out: &mut FileOut| -> core::fmt::Result {
            writeln!(out, "<system type=\"current\" size=\"{}\"/>", s.committed)?;
            writeln!(out, "<system type=\"max\" size=\"{}\"/>", s.committed)?;
            writeln!(out, "<aspace type=\"total\" size=\"{}\"/>", s.mapped)?;
            writeln!(out, "<aspace type=\"mprotect\" size=\"{}\"/>", s.mapped)
        };
        system(&mut out)?;
        writeln!(out, "</heap>")?;
        totals(&mut out)?;
        writeln!(
            out,
            "<total type=\"mmap\" count=\"{}\" size=\"{}\"/>",
            s.large_objects, s.large_bytes
        )?;
        system(&mut out)?;
        writeln!(out, "</malloc>")
    })();
    0
}

/// A C `FILE *` to format into (through `fwrite`, which may allocate: not an
/// allocation path).
struct FileOut(*mut libc::FILE);

impl core::fmt::Write for FileOut {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        // SAFETY: `self.0` is the caller's open FILE (see `malloc_info`).
        let n = unsafe { libc::fwrite(s.as_ptr().cast(), 1, s.len(), self.0) };
        if n == s.len() {
            Ok(())
        } else {
            Err(core::fmt::Error)
        }
    }
}

/// glibc's `malloc_stats`: segalloc's statistics table on stderr.
#[no_mangle]
pub extern "C" fn malloc_stats() {
    segalloc_stats_print(2);
}

/// Writes segalloc's statistics table (the `Display` of [`crate::Stats`]) to
/// the file descriptor `fd`, without allocating.
#[no_mangle]
pub extern "C" fn segalloc_stats_print(fd: c_int) {
    crate::stats::write_fd(fd, &crate::stats());
}

/// Sets the runtime option `name` (e.g. `"purge_delay_ms"`, or its variable's
/// name `"SEGALLOC_PURGE_DELAY_MS"`) from `value`, written as in the
/// environment (see [`crate::set_option`] and the README's table). Returns 0,
/// or `EINVAL` (the value in force kept) for an unknown name, a malformed or
/// out-of-range value (both also named on one line on stderr, as by
/// `set_option`), or a null or non-UTF-8 argument.
///
/// # Safety
/// `name` and `value` are null or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn segalloc_option_set(
    name: *const core::ffi::c_char,
    value: *const core::ffi::c_char,
) -> c_int {
    if name.is_null() || value.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: per the contract, both are NUL-terminated strings.
    let (n, v) = unsafe {
        (
            core::ffi::CStr::from_ptr(name).to_str(),
            core::ffi::CStr::from_ptr(value).to_str(),
        )
    };
    match (n, v) {
        (Ok(n), Ok(v)) if crate::set_option(n, v).is_ok() => 0,
        _ => libc::EINVAL,
    }
}

/// The value in force of the runtime option `name` (or its variable's name
/// `"SEGALLOC_..."`) as a number: bytes, milliseconds or a count, 0 or 1 for
/// a flag, the index of the word for a choice (see the README's table).
/// -1 for an unknown name, or a null or non-UTF-8 argument.
///
/// # Safety
/// `name` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn segalloc_option_get(name: *const core::ffi::c_char) -> core::ffi::c_long {
    if name.is_null() {
        return -1;
    }
    // SAFETY: per the contract, a NUL-terminated string.
    let n = unsafe { core::ffi::CStr::from_ptr(name) };
    match crate::options::find(n.to_bytes()) {
        Some(o) => o.get() as core::ffi::c_long,
        None => -1,
    }
}

/// `segalloc::mesh()` from C: `malloc_trim`'s work, then merges the calling
/// thread's sparse pages whose live blocks sit at disjoint offsets onto one
/// physical page each, whatever the option `mesh` says. Returns how many
/// pages were merged into others (0 where meshing cannot be set up).
#[no_mangle]
pub extern "C" fn segalloc_mesh() -> usize {
    crate::mesh()
}

/// Whether the live block `p` should be moved to help empty its page: 1 when
/// it sits in a page at most half live that is not the one serving new
/// blocks of its size (see `segalloc::defrag::should_move`), else 0 (also
/// for null and large blocks). No lock, a few loads; any thread may ask
/// about any block. For programs that defragment actively (as Redis does
/// with jemalloc's hint): `if (segalloc_should_move(p)) p =
/// segalloc_defrag_realloc(p, size);`, then fix up the references to `p`.
///
/// # Safety
/// `p` is null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn segalloc_should_move(p: *const c_void) -> c_int {
    // SAFETY: per the contract.
    c_int::from(unsafe { crate::defrag::should_move(p.cast()) })
}

/// `realloc` that always moves: a new block of `size` bytes (16-aligned) in
/// the densest pages of its size, never in a page
/// [`segalloc_should_move`] would empty, holding the first `size` bytes of
/// `p` (or all of them if fewer); `p` is freed. Null `p`: a `malloc` placed
/// the same way. `size` 0, or above segalloc's large threshold (1 MiB): as
/// `realloc`. Out of memory: null with `errno = ENOMEM`, `p` intact.
///
/// # Safety
/// `p` is null or a live block from this allocator, nothing else uses it
/// after the call (when the call did not fail).
#[no_mangle]
pub unsafe extern "C" fn segalloc_defrag_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if size == 0 || size > crate::LARGE_THRESHOLD {
        // SAFETY: forwarded contract.
        return unsafe { realloc(p, size) };
    }
    let q = crate::defrag::malloc_dense(size, MIN_ALIGN, true);
    if q.is_null() {
        return enomem();
    }
    if !p.is_null() {
        // SAFETY: `p` is live and distinct from the new block `q`; the copy
        // stays inside both. C frees without a size (UNSIZED).
        unsafe {
            let n = size.min(alloc::usable_size(p.cast()));
            ptr::copy_nonoverlapping(p.cast::<u8>(), q, n);
            alloc::free(p.cast(), alloc::UNSIZED);
        }
    }
    q.cast()
}

/// glibc's `mallopt`: `M_TRIM_THRESHOLD` (-1) sets the option `purge_min`
/// (the free memory each heap keeps resident at least, as glibc keeps that
/// much at the top of its heap before trimming). glibc's other parameters
/// have no meaning here: 0, as for an unknown one.
#[no_mangle]
pub extern "C" fn mallopt(param: c_int, value: c_int) -> c_int {
    const M_TRIM_THRESHOLD: c_int = -1;
    if param == M_TRIM_THRESHOLD && value >= 0 {
        return c_int::from(crate::options::set_number("purge_min", value as usize).is_ok());
    }
    0
}

/// The main figures of [`crate::Stats`] as a plain C struct (all bytes but
/// the counts), for `segalloc_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SegallocStats {
    /// Bytes asked for by live allocations.
    pub requested: usize,
    /// Bytes handed out for them.
    pub allocated: usize,
    /// Memory obtained from the OS and not given back.
    pub committed: usize,
    /// Resident memory of the process.
    pub resident: usize,
    /// Address space reserved.
    pub mapped: usize,
    /// segalloc's own bookkeeping.
    pub metadata: usize,
    /// Free blocks inside pages in use.
    pub free_in_pages: usize,
    /// Wholly free pages still resident.
    pub free_pages: usize,
    /// Blocks freed by other threads, not yet collected.
    pub remote_pending: usize,
    /// Allocations made.
    pub allocations: usize,
    /// Frees made.
    pub frees: usize,
    /// Frees of blocks owned by another thread.
    pub cross_thread_frees: usize,
    /// Live large objects.
    pub large_objects: usize,
    /// Usable bytes of live large objects.
    pub large_bytes: usize,
    /// Freed large blocks kept mapped for reuse (part of `free_pages`).
    /// Added last, so that the fields before keep their offsets.
    pub large_cached: usize,
}

// Plain words, no padding: `include/segalloc.h` declares the same fields and
// asserts the same size; a field is only ever added at the end.
static_assertions::const_assert_eq!(
    core::mem::size_of::<SegallocStats>(),
    15 * core::mem::size_of::<usize>()
);

/// Fills `*out`, a struct of `size` bytes (the caller's
/// `sizeof(SegallocStats)`), with a snapshot of segalloc's statistics: the
/// first `min(size, sizeof)` bytes of segalloc's own struct, whose fields
/// are only ever added at the end, so a caller built against an older,
/// shorter struct gets the fields it knows and nothing is written past it.
/// Returns 0, or EINVAL when `out` is null or `size` does not hold the
/// first field (`include/segalloc.h` declares it).
///
/// # Safety
/// `out` is null or points to `size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn segalloc_stats(out: *mut SegallocStats, size: usize) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { write_stats(&crate::stats(), out, size) }
}

/// Writes the first `min(size, sizeof)` bytes of `s` as a [`SegallocStats`]
/// to `out` (see [`segalloc_stats`]).
///
/// # Safety
/// `out` is null or points to `size` writable bytes.
pub(crate) unsafe fn write_stats(s: &crate::Stats, out: *mut SegallocStats, size: usize) -> c_int {
    if out.is_null() || size < core::mem::size_of::<usize>() {
        return libc::EINVAL;
    }
    let v = SegallocStats {
        requested: s.requested,
        allocated: s.allocated,
        committed: s.committed,
        resident: s.resident,
        mapped: s.mapped,
        metadata: s.metadata,
        free_in_pages: s.free_in_pages,
        free_pages: s.free_pages,
        remote_pending: s.remote_pending,
        allocations: s.allocations,
        frees: s.frees,
        cross_thread_frees: s.cross_thread_frees,
        large_objects: s.large_objects,
        large_bytes: s.large_bytes,
        large_cached: s.large_cached,
    };
    let n = size.min(core::mem::size_of::<SegallocStats>());
    // SAFETY: per the contract, `out` has `size >= n` writable bytes; `v`
    // has `n` bytes to read; a struct of plain words, no padding.
    unsafe {
        ptr::copy_nonoverlapping(
            (&v as *const SegallocStats).cast::<u8>(),
            out.cast::<u8>(),
            n,
        )
    };
    0
}

// glibc's internal names, which some programs and libraries call directly
// (and which older dynamic loaders reach): the same functions.

/// glibc alias of [`malloc`].
#[no_mangle]
pub extern "C" fn __libc_malloc(size: usize) -> *mut c_void {
    malloc(size)
}

/// glibc alias of [`free`].
///
/// # Safety
/// As [`free`].
#[no_mangle]
pub unsafe extern "C" fn __libc_free(p: *mut c_void) {
    // SAFETY: forwarded contract.
    unsafe { free(p) }
}

/// glibc alias of [`calloc`].
#[no_mangle]
pub extern "C" fn __libc_calloc(n: usize, size: usize) -> *mut c_void {
    calloc(n, size)
}

/// glibc alias of [`realloc`].
///
/// # Safety
/// As [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded contract.
    unsafe { realloc(p, size) }
}

/// glibc alias of [`memalign`].
#[no_mangle]
pub extern "C" fn __libc_memalign(align: usize, size: usize) -> *mut c_void {
    memalign(align, size)
}

/// glibc alias of [`valloc`].
#[no_mangle]
pub extern "C" fn __libc_valloc(size: usize) -> *mut c_void {
    valloc(size)
}

/// glibc alias of [`pvalloc`].
#[no_mangle]
pub extern "C" fn __libc_pvalloc(size: usize) -> *mut c_void {
    pvalloc(size)
}

/// Starts the heap profiler (feature `profiling`): on average one sample
/// per `rate` bytes allocated (0: the default, 512 KiB or
/// `SEGALLOC_PROF_RATE`). See `segalloc::profile::start`.
#[cfg(feature = "profiling")]
#[no_mangle]
pub extern "C" fn segalloc_prof_start(rate: usize) {
    crate::profile::start(rate);
}

/// Stops the heap profiler; sampled blocks still live stay in the profile.
#[cfg(feature = "profiling")]
#[no_mangle]
pub extern "C" fn segalloc_prof_stop() {
    crate::profile::stop();
}

/// Writes the heap profile now (feature `profiling`): `path.pb.gz` (pprof),
/// `path.folded`, `path.svg` and `path.leaks.txt`, as `SEGALLOC_PROF_OUT`
/// does at exit. 0 on success, `EINVAL` for a null or non-UTF-8 path, else
/// the error number of the failed write (`EIO` if unknown).
///
/// # Safety
/// `path` is null or a NUL-terminated string.
#[cfg(feature = "profiling")]
#[no_mangle]
pub unsafe extern "C" fn segalloc_prof_dump(path: *const core::ffi::c_char) -> c_int {
    if path.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: per the contract, a NUL-terminated string.
    let Ok(prefix) = unsafe { core::ffi::CStr::from_ptr(path) }.to_str() else {
        return libc::EINVAL;
    };
    match crate::profile::snapshot().write_files(prefix) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
    }
}
