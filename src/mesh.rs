//! Meshing, the part below the heap: physical memory that two or more
//! virtual pages share, the table of merged pages, the fault handler that
//! holds writers back while a page is being merged, and `fork`.
//!
//! Mesh (Powers, Tench, Berger, McGregor, PLDI 2019) merges pages of one
//! size class whose live blocks sit at disjoint offsets: the blocks of one
//! page (B) are copied into the other's (A) physical page at the same
//! offsets, and both virtual ranges are mapped onto that one physical page.
//! No address changes. Here the heap decides what to merge (`heap::mesh`);
//! this module does the mapping.
//!
//! # Memory
//! Only merged pages are shared. One `memfd` per process (created at the
//! first merge, `MFD_CLOEXEC`) is cut into [`MAX_GROUPS`] chunks of one
//! slice (64 KiB); group `g` is chunk `g`. A *group* is a primary page A
//! (still an ordinary in-use page of its heap) and up to [`MAX_ALIASES`]
//! aliases, all mapped `MAP_SHARED|MAP_FIXED` onto the chunk. Only pages of
//! one slice are merged (blocks up to 8 KiB), and only two pages of the same
//! segment (so they share an owner, a `freed` key, and a fate when their
//! thread exits). When the primary empties, [`release`] maps fresh private
//! anonymous memory over every range of the group and punches the chunk out
//! of the memfd, so all of its slices return to ordinary use.
//!
//! # The segment's word per slice
//! `Segment::mesh[i]`: 0 for a slice of no group; otherwise the group plus
//! one (`GROUP_MASK`), with [`ALIAS`] for an alias, and [`FROZEN`] while the
//! slice is write-protected for a copy (a merge, or a fork). Written under
//! [`LOCK`] (and by `heap::mesh` only through this module), read by any
//! thread (the fault handler, a free through an alias).
//!
//! # Invariants
//! - A primary is in use while its group exists: the group is released
//!   only when the primary is freed, with no live block, so no block of any
//!   alias is live, in flight to another thread's batch, or on an alias's
//!   `thread_free` (every such block counts in the primary's `used`).
//! - An alias's page descriptor is closed (`limit` 0), so every pointer into
//!   it fails `is_block` and a free through it reaches the slow path, which
//!   finds the primary through [`alias_target`]. Its slices stay taken in
//!   the segment until the group is released.
//! - While a range is write-protected its slice words carry [`FROZEN`]; the
//!   fault handler (`fault`) makes a writer that faults there wait until the
//!   bit is gone and then retry its write, which lands in the merged page.
//!   The merging thread itself never writes to a frozen range.
//! - One merge, release or fork at a time, under [`LOCK`] (a spin lock, as
//!   on the other cold paths; never taken on an allocation fast path).
//!
//! # fork
//! The prepare handler freezes every group, copies each chunk into a fresh
//! memfd, and keeps the groups frozen through the fork; the child maps its
//! new memfd over every range (so it shares nothing with the parent), the
//! parent unfreezes and closes it. A writer in the parent waits for the
//! length of the copy. The handlers are registered with the first heap,
//! before `thread`'s, so this prepare handler runs after every other
//! library's (which may take locks that a held-back writer holds) and after
//! segalloc's own. If the copy cannot be made (no memory for it), the child
//! aborts with a message rather than share the pages or see a torn copy.
//!
//! # Not handled
//! A system call that writes into a block while its page is frozen (`read`
//! into a buffer, say) fails with `EFAULT` instead of waiting: the kernel
//! raises no signal for it. A SIGSEGV handler the program installs after
//! the first merge replaces this one, and writers then crash during a
//! merge. Both are as in Mesh.

use crate::segment::{registry, slice_index, Segment, SEGMENT_MASK, SLICES, SLICE_SIZE};
use core::ptr;
use core::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

mod fault;
mod resident;
pub(crate) use resident::resident;
pub(crate) mod sub;

/// Bytes of one merged page (pages of one slice only).
pub(crate) const LEN: usize = SLICE_SIZE;
/// Groups the memfd has room for (2 GiB of merged pages).
pub(crate) const MAX_GROUPS: usize = 1 << 15;
/// Aliases one primary may have.
pub(crate) const MAX_ALIASES: usize = 7;
/// Virtual ranges mapped onto the memfd at most: each splits its segment's
/// mapping in up to three, and the kernel allows 65,530 mappings.
const MAX_RANGES: usize = 16_384;

/// The group part of a slice's word (group + 1).
const GROUP_MASK: u32 = 0xF_FFFF;
/// The slice is an alias's.
pub(crate) const ALIAS: u32 = 1 << 24;
/// The slice is write-protected for a copy: writers wait.
pub(crate) const FROZEN: u32 = 1 << 25;

/// One merged page: where its primary and its aliases start (0: none).
#[repr(C)]
struct Group {
    a: AtomicUsize,
    aliases: [AtomicUsize; MAX_ALIASES],
}

/// Merges, releases and fork handlers, one at a time.
static LOCK: spin::Mutex<()> = spin::Mutex::new(());
/// The table of groups: [`MAX_GROUPS`] entries, mapped at set-up.
static TABLE: AtomicPtr<Group> = AtomicPtr::new(ptr::null_mut());
/// The memfd the chunks are cut from (-1 once the program closed it: see
/// [`fd`]).
static FD: AtomicI32 = AtomicI32::new(-1);
/// The memfd's device and inode, which tell it from a file the program
/// opened under its number after closing it.
static FD_ID: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// In `fork`: the copy the child takes over (-1: none).
static FORK_FD: AtomicI32 = AtomicI32::new(-1);
/// In `fork`: the copy could not be made.
static FORK_FAILED: AtomicBool = AtomicBool::new(false);
/// 0: not set up; 1: ready; 2: set-up failed (no meshing).
static STATE: AtomicU8 = AtomicU8::new(0);
/// Where to start looking for a free group.
static HINT: AtomicUsize = AtomicUsize::new(0);
/// Ranges mapped onto the memfd now.
static RANGES: AtomicUsize = AtomicUsize::new(0);

/// Pages merged into another since the process started.
pub(crate) static PAGES_MESHED: AtomicUsize = AtomicUsize::new(0);
/// Bytes the aliases alive now gave back (a slice each).
pub(crate) static RELEASED: AtomicUsize = AtomicUsize::new(0);
/// Groups alive now.
pub(crate) static GROUPS: AtomicUsize = AtomicUsize::new(0);
/// Writes the fault handler held back until a copy was done.
pub(crate) static HELD: AtomicUsize = AtomicUsize::new(0);

/// Makes meshing ready: the memfd, the group table and the fault handler.
/// Returns whether meshing can run. Allocates nothing.
pub(crate) fn setup() -> bool {
    match STATE.load(Ordering::Acquire) {
        1 => return fd() >= 0,
        2 => return false,
        _ => {}
    }
    let _g = LOCK.lock();
    if STATE.load(Ordering::Relaxed) != 0 {
        return STATE.load(Ordering::Relaxed) == 1;
    }
    let fd = new_memfd();
    let table = crate::os::map_scratch(MAX_GROUPS * core::mem::size_of::<Group>());
    if fd < 0 || table.is_null() || !sub::setup() || !fault::install() {
        if fd >= 0 {
            // SAFETY: our own descriptor, used by nothing else.
            unsafe { libc::close(fd) };
        }
        STATE.store(2, Ordering::Release);
        return false;
    }
    adopt(fd);
    TABLE.store(table.cast(), Ordering::Release);
    STATE.store(1, Ordering::Release);
    true
}

/// Registers the fork handlers: called by `thread` when the first heap is
/// made, just before its own, so that glibc runs this prepare handler after
/// every handler registered later (other libraries', which may take locks
/// that a thread held back by a freeze holds) and after segalloc's own.
/// With nothing merged the handlers only take and give back [`LOCK`].
pub(crate) fn register_fork() {
    // The handlers take LOCK, which is never held across an allocation.
    crate::os::at_fork(prepare, parent, child);
}

/// Makes `fd` the memfd, and notes its identity.
fn adopt(fd: i32) {
    let (dev, ino) = identity(fd).unwrap_or((0, 0));
    FD_ID[0].store(dev, Ordering::Relaxed);
    FD_ID[1].store(ino, Ordering::Relaxed);
    FD.store(fd, Ordering::Relaxed);
}

/// The device and inode of the file open as `fd`, if `fstat` says.
fn identity(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: `fstat` fills the struct we pass, whatever `fd` is.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        (libc::fstat(fd, &mut st) == 0).then_some((st.st_dev, st.st_ino))
    }
}

/// The memfd, or -1 if there is none or the program has closed it. A
/// program may close descriptors it did not open (daemons close every one
/// above 2), and the number may then be another file's, which a merge,
/// punch or copy through it would overwrite: each use asks here first (an
/// `fstat` against the identity noted at creation), and once the number is
/// not the memfd's, segalloc forgets it and says so once. Meshing stops
/// then (a merge needs the descriptor to map the memfd); what is merged
/// stays as it is, each range keeping the memfd alive, and a `fork` copies
/// it for the child through the mappings. The chunks of groups released
/// since are not punched out then: their memory stays with the memfd until
/// the process ends.
pub(crate) fn fd() -> i32 {
    let fd = FD.load(Ordering::Relaxed);
    if fd < 0 {
        return -1;
    }
    let id = (
        FD_ID[0].load(Ordering::Relaxed),
        FD_ID[1].load(Ordering::Relaxed),
    );
    if identity(fd) == Some(id) {
        return fd;
    }
    if FD.swap(-1, Ordering::Relaxed) == fd {
        const MSG: &[u8] =
            b"segalloc: the program closed segalloc's meshing descriptor; meshing is off from now on\n";
        // SAFETY: writing a valid buffer to stderr.
        unsafe { libc::write(2, MSG.as_ptr().cast(), MSG.len()) };
    }
    -1
}

/// A memfd of `MAX_GROUPS` chunks and the slots of `sub` (sparse), or -1.
fn new_memfd() -> i32 {
    // SAFETY: a NUL-terminated name; the call only creates a descriptor.
    let fd = unsafe { libc::memfd_create(c"segalloc-mesh".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return -1;
    }
    // SAFETY: our fresh descriptor.
    if unsafe { libc::ftruncate(fd, sub::FILE_LEN as libc::off_t) } != 0 {
        // SAFETY: as above.
        unsafe { libc::close(fd) };
        return -1;
    }
    fd
}

/// Group `g` of the table.
///
/// # Safety
/// [`setup`] succeeded and `g < MAX_GROUPS`.
unsafe fn group(g: usize) -> &'static Group {
    // SAFETY: per the contract the table is mapped (zeroed: all free) and
    // never unmapped; `g` is in it.
    unsafe { &*TABLE.load(Ordering::Acquire).add(g) }
}

/// The word of slice `i` of `seg`.
fn word(seg: &Segment, i: usize) -> &AtomicU32 {
    &seg.mesh[i]
}

/// Whether slice `i` of `seg` is an alias's.
#[inline]
pub(crate) fn is_alias(seg: &Segment, i: usize) -> bool {
    word(seg, i).load(Ordering::Acquire) & ALIAS != 0
}

/// How many aliases the page at slice `i` of `seg` has (0 when it is no
/// primary).
pub(crate) fn alias_count(seg: &Segment, i: usize) -> usize {
    let w = word(seg, i).load(Ordering::Acquire);
    if w & (ALIAS | sub::SUB) != 0 || w & GROUP_MASK == 0 {
        return 0;
    }
    // SAFETY: a group word exists only after set-up; its index is below
    // MAX_GROUPS.
    let grp = unsafe { group((w & GROUP_MASK) as usize - 1) };
    grp.aliases
        .iter()
        .filter(|a| a.load(Ordering::Relaxed) != 0)
        .count()
}

/// For `p`, a pointer into an alias's slice of the small segment `seg`:
/// the same offset in the group's primary, if that is one of its blocks;
/// else null. Any thread may ask about a live block (which keeps its group
/// alive).
pub(crate) fn alias_target(seg: *const Segment, p: *const u8) -> *mut u8 {
    // SAFETY: `seg` is a small segment of ours, so its header is mapped.
    let w = unsafe { word(&*seg, slice_index(p)).load(Ordering::Acquire) };
    if w & ALIAS == 0 || w & GROUP_MASK == 0 {
        return ptr::null_mut();
    }
    // SAFETY: a group word exists only after set-up, below MAX_GROUPS.
    let a = unsafe { group((w & GROUP_MASK) as usize - 1) }
        .a
        .load(Ordering::Acquire);
    if a == 0 || a & !SEGMENT_MASK != seg as usize {
        return ptr::null_mut();
    }
    let q = (a + (p as usize & (LEN - 1))) as *mut u8;
    // SAFETY: the primary is a page of `seg`, in use while its group lives;
    // `is_block` reads fields that do not change while a block is live.
    unsafe {
        if (*(*seg).page_of(q)).is_block(q) {
            q
        } else {
            ptr::null_mut()
        }
    }
}

/// A batched free of `p` reached a page not in use: the page must be an
/// alias; returns the block in its primary, or aborts.
#[cold]
pub(crate) fn redirect(seg: *const Segment, p: *mut u8) -> *mut u8 {
    let q = alias_target(seg, p);
    if q.is_null() {
        crate::fatal(
            "double free or corruption (a block freed by another thread is in no page in use)",
            p,
        );
    }
    q
}

/// Write-protects `len` bytes at `p` (PROT_READ), or allows writes again.
fn protect(p: usize, writable: bool) -> bool {
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: a page of one of our segments; only its protection changes.
    unsafe { libc::mprotect(p as *mut libc::c_void, LEN, prot) == 0 }
}

/// Maps chunk `g` of `fd` over the page at `p`, its page tables filled at
/// once with `populate` (each range whose page tables map the chunk counts
/// it in the process's RSS again, so only the primary's are); aborts if the
/// kernel says no (the old mapping may be gone by then).
fn map_chunk(fd: i32, g: usize, p: usize, populate: bool) {
    // SAFETY: replaces a page of one of our segments, whose blocks live on
    // in the chunk (the caller copied them there).
    let r = unsafe {
        libc::mmap(
            p as *mut libc::c_void,
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_FIXED | if populate { libc::MAP_POPULATE } else { 0 },
            fd,
            (g * LEN) as libc::off_t,
        )
    };
    if r == libc::MAP_FAILED {
        crate::fatal("mesh: mapping a merged page failed", p as *const u8);
    }
}

/// Maps fresh private memory over the page at `p` (its data is dropped).
fn map_private(p: usize) {
    map_private_len(p, LEN);
}

/// Maps `len` bytes of `fd` at `off` over `p`, shared; aborts if the kernel
/// says no (for the child of a fork, which cannot share the parent's).
fn map_fixed(fd: i32, off: usize, p: usize, len: usize) {
    // SAFETY: replaces OS pages of one of our segments with the copy of
    // their data at `off`.
    let r = unsafe {
        libc::mmap(
            p as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd,
            off as libc::off_t,
        )
    };
    if r == libc::MAP_FAILED {
        crate::fatal("mesh: mapping a merged page failed", p as *const u8);
    }
}

/// Maps fresh private memory over `len` bytes at `p` (their data dropped).
fn map_private_len(p: usize, len: usize) {
    // SAFETY: replaces a page of one of our segments that holds no live
    // block (the caller's contract).
    let r = unsafe {
        libc::mmap(
            p as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if r == libc::MAP_FAILED {
        crate::fatal("mesh: unmapping a merged page failed", p as *const u8);
    }
}

/// Sets (or clears) [`FROZEN`] on slice `i` of `seg`.
fn freeze(seg: &Segment, i: usize, on: bool) {
    if on {
        word(seg, i).fetch_or(FROZEN, Ordering::SeqCst);
    } else {
        word(seg, i).fetch_and(!FROZEN, Ordering::Release);
    }
}

/// Merges page `b` (first slice `bi` of `seg`) into page `a` (`ai`): both
/// of one slice, same block size `bs`, the blocks of `b` live according to
/// `live_b` (bit k: block k) at offsets where `a` has none. Afterwards both
/// ranges show `a`'s blocks and `b`'s, and `b`'s old memory is gone. The
/// free blocks of `a` may have been overwritten: the caller rebuilds `a`'s
/// lists. Returns false, having changed nothing, when it cannot merge (no
/// group or range left, or a system call refused).
///
/// # Safety
/// The caller owns `seg` and has no reference into `a` or `b`'s memory;
/// both are in-use pages of `seg`, `b` no primary, and no block of `a`
/// is live where `live_b` has a bit.
pub(crate) unsafe fn merge(seg: &Segment, ai: usize, bi: usize, live_b: &[u64], bs: usize) -> bool {
    if STATE.load(Ordering::Acquire) != 1 {
        return false;
    }
    let _g = LOCK.lock();
    let fd = fd();
    if fd < 0 {
        return false;
    }
    let a = seg.slice_addr(ai) as usize;
    let b = seg.slice_addr(bi) as usize;
    let wa = word(seg, ai).load(Ordering::Relaxed);
    let fresh = wa & GROUP_MASK == 0;
    if RANGES.load(Ordering::Relaxed) + 2 > MAX_RANGES {
        return false;
    }
    let g = if fresh {
        match find_group() {
            Some(g) => g,
            None => return false,
        }
    } else {
        (wa & GROUP_MASK) as usize - 1
    };
    // SAFETY: set up (STATE 1), `g` below MAX_GROUPS.
    let grp = unsafe { group(g) };
    let Some(slot) = grp
        .aliases
        .iter()
        .position(|x| x.load(Ordering::Relaxed) == 0)
    else {
        return false;
    };
    // Freeze first (the handler must know the range), then protect.
    if fresh {
        freeze(seg, ai, true);
        if !protect(a, false) {
            freeze(seg, ai, false);
            return false;
        }
    }
    freeze(seg, bi, true);
    if !protect(b, false) {
        freeze(seg, bi, false);
        if fresh {
            protect(a, true);
            freeze(seg, ai, false);
        }
        return false;
    }
    let dst = if fresh {
        // SAFETY: a fresh shared view of chunk `g` at no fixed address.
        let t = unsafe {
            libc::mmap(
                ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                (g * LEN) as libc::off_t,
            )
        };
        if t == libc::MAP_FAILED {
            protect(b, true);
            freeze(seg, bi, false);
            protect(a, true);
            freeze(seg, ai, false);
            return false;
        }
        // SAFETY: `a` is readable and no one writes it (protected); `t`
        // is our own view of the chunk.
        unsafe { ptr::copy_nonoverlapping(a as *const u8, t.cast::<u8>(), LEN) };
        t.cast::<u8>()
    } else {
        // `a` is the chunk already: write through it, at offsets where `a`
        // has no live block (only the owner, us, touches those).
        a as *mut u8
    };
    for (w, &bits) in live_b.iter().enumerate() {
        let mut m = bits;
        while m != 0 {
            let k = w * 64 + m.trailing_zeros() as usize;
            m &= m - 1;
            // SAFETY: block `k` lies inside both pages (the caller's bitmap
            // covers carved blocks only); `b` is protected, so its bytes
            // are stable, and `dst + k * bs` is a free block of `a`'s.
            unsafe { ptr::copy_nonoverlapping((b + k * bs) as *const u8, dst.add(k * bs), bs) };
        }
    }
    if fresh {
        // SAFETY: our temporary view, used no more.
        unsafe { libc::munmap(dst.cast(), LEN) };
        map_chunk(fd, g, a, true);
        grp.a.store(a, Ordering::Release);
        RANGES.fetch_add(1, Ordering::Relaxed);
        GROUPS.fetch_add(1, Ordering::Relaxed);
        word(seg, ai).store((g + 1) as u32, Ordering::Release);
    }
    map_chunk(fd, g, b, false);
    grp.aliases[slot].store(b, Ordering::Release);
    RANGES.fetch_add(1, Ordering::Relaxed);
    // Clears FROZEN: waiting writers retry into the chunk.
    word(seg, bi).store(ALIAS | (g + 1) as u32, Ordering::Release);
    PAGES_MESHED.fetch_add(1, Ordering::Relaxed);
    RELEASED.fetch_add(LEN, Ordering::Relaxed);
    true
}

/// A free group, marked taken by the caller's store of its primary. Under
/// [`LOCK`].
fn find_group() -> Option<usize> {
    let start = HINT.load(Ordering::Relaxed);
    for k in 0..MAX_GROUPS {
        let g = (start + k) % MAX_GROUPS;
        // SAFETY: set up, `g` below MAX_GROUPS.
        if unsafe { group(g) }.a.load(Ordering::Relaxed) == 0 {
            HINT.store(g + 1, Ordering::Relaxed);
            return Some(g);
        }
    }
    None
}

/// Dissolves the group whose primary starts at slice `ai` of `seg`: fresh
/// private memory over the primary and every alias, the chunk punched out
/// of the memfd, the slices' words cleared. Returns the bitmap of the
/// aliases' slices, which the caller gives back to the segment.
///
/// # Safety
/// The caller owns `seg`; the primary is being freed with no live block.
pub(crate) unsafe fn release(seg: &Segment, ai: usize) -> u64 {
    let _g = LOCK.lock();
    let w = word(seg, ai).load(Ordering::Relaxed);
    if w & GROUP_MASK == 0 || w & (ALIAS | sub::SUB) != 0 {
        return 0;
    }
    let g = (w & GROUP_MASK) as usize - 1;
    // SAFETY: a group word exists only after set-up.
    let grp = unsafe { group(g) };
    let mut mask = 0u64;
    for x in &grp.aliases {
        let b = x.load(Ordering::Relaxed);
        if b == 0 {
            continue;
        }
        map_private(b);
        let bi = slice_index(b as *const u8);
        word(seg, bi).store(0, Ordering::Release);
        mask |= 1 << bi;
        x.store(0, Ordering::Relaxed);
        RANGES.fetch_sub(1, Ordering::Relaxed);
        RELEASED.fetch_sub(LEN, Ordering::Relaxed);
    }
    map_private(grp.a.load(Ordering::Relaxed));
    word(seg, ai).store(0, Ordering::Release);
    grp.a.store(0, Ordering::Release);
    RANGES.fetch_sub(1, Ordering::Relaxed);
    GROUPS.fetch_sub(1, Ordering::Relaxed);
    // SAFETY: our memfd; the chunk is mapped nowhere now.
    unsafe {
        libc::fallocate(
            fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            (g * LEN) as libc::off_t,
            LEN as libc::off_t,
        )
    };
    mask
}

/// Gives back `len` bytes at `off` of the merged page whose primary starts
/// at slice `ai` of `seg`: punched out of its chunk, so that they read zero
/// through the primary and every alias alike (`madvise` on one range would
/// free nothing of a shared page). The sub-page purge of a group's
/// primary (`heap::purge`) calls it. Should the kernel refuse, the bytes
/// stay as they are: the blocks over them come back from the page's map of
/// purged OS pages all the same, only not zeroed.
///
/// # Safety
/// The caller owns `seg`, and every block of the primary overlapping the
/// bytes is free and on no list (so nothing reads or writes them until the
/// owner threads them again, which faults fresh zeroed memory in).
pub(crate) unsafe fn punch(seg: &Segment, ai: usize, off: usize, len: usize) {
    debug_assert!(off + len <= LEN && off % crate::os::OS_PAGE == 0);
    let _g = LOCK.lock();
    let w = word(seg, ai).load(Ordering::Relaxed);
    if w & GROUP_MASK == 0 || w & (ALIAS | sub::SUB) != 0 {
        return;
    }
    let g = (w & GROUP_MASK) as usize - 1;
    // SAFETY: our memfd, and a range inside the group's own chunk.
    unsafe {
        libc::fallocate(
            fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            (g * LEN + off) as libc::off_t,
            len as libc::off_t,
        )
    };
}

/// Every range of group `g` (primary first), 0 for none.
fn ranges(grp: &Group) -> [usize; MAX_ALIASES + 1] {
    let mut r = [0; MAX_ALIASES + 1];
    r[0] = grp.a.load(Ordering::Relaxed);
    for (k, x) in grp.aliases.iter().enumerate() {
        r[k + 1] = x.load(Ordering::Relaxed);
    }
    r
}

/// Calls `f` with every group alive and its ranges (under [`LOCK`]).
fn each_group(mut f: impl FnMut(usize, &[usize; MAX_ALIASES + 1])) {
    if STATE.load(Ordering::Acquire) != 1 {
        return;
    }
    for g in 0..MAX_GROUPS {
        // SAFETY: set up, `g` below MAX_GROUPS.
        let grp = unsafe { group(g) };
        if grp.a.load(Ordering::Relaxed) != 0 {
            f(g, &ranges(grp));
        }
    }
}

/// The segment and slice of a range's start.
fn seg_of(p: usize) -> &'static Segment {
    // SAFETY: ranges are pages of our small segments, which stay mapped
    // while a group is alive.
    unsafe { &*((p & !SEGMENT_MASK) as *const Segment) }
}

/// fork, before: every group frozen and copied into a fresh memfd for the
/// child. Takes [`LOCK`] until [`parent`] or [`child`].
extern "C" fn prepare() {
    core::mem::forget(LOCK.lock());
    FORK_FD.store(-1, Ordering::Relaxed);
    FORK_FAILED.store(false, Ordering::Relaxed);
    if GROUPS.load(Ordering::Relaxed) == 0 && sub::SLOTS.load(Ordering::Relaxed) == 0 {
        return;
    }
    let fd2 = new_memfd();
    if fd2 < 0 {
        FORK_FAILED.store(true, Ordering::Relaxed);
        return;
    }
    // One check of the descriptor for the whole copy (see `fd`).
    let fd = fd();
    let mut ok = true;
    each_group(|g, r| {
        for &p in r.iter().filter(|&&p| p != 0) {
            freeze(seg_of(p), slice_index(p as *const u8), true);
            ok &= protect(p, false);
        }
        // Only what the chunk holds: reading a hole (OS pages its primary
        // gave back, `punch`) through the mapping would fault memory in.
        // (All of it if the memfd is lost: `lseek` on -1 fails.)
        for (lo, hi) in data_ranges(fd, g * LEN, (g + 1) * LEN) {
            let mut done = lo;
            while done < hi {
                // SAFETY: reads the primary's page (protected: stable) into
                // our new memfd.
                let n = unsafe {
                    libc::pwrite(
                        fd2,
                        (r[0] + done - g * LEN) as *const libc::c_void,
                        hi - done,
                        done as libc::off_t,
                    )
                };
                if n <= 0 {
                    ok = false;
                    break;
                }
                done += n as usize;
            }
        }
    });
    ok &= sub::prepare(fd, fd2);
    FORK_FAILED.store(!ok, Ordering::Relaxed);
    FORK_FD.store(fd2, Ordering::Relaxed);
}

/// The runs of `fd`'s bytes `lo..hi` that hold data (not holes), by
/// `SEEK_DATA` and `SEEK_HOLE`; all of it where the kernel cannot say.
fn data_ranges(fd: i32, lo: usize, hi: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut at = lo;
    core::iter::from_fn(move || {
        if at >= hi {
            return None;
        }
        // SAFETY: `lseek` on our own descriptor.
        let d = unsafe { libc::lseek(fd, at as libc::off_t, libc::SEEK_DATA) };
        if d < 0 {
            // ENXIO: no data from `at` to the end of the file.
            let none = crate::os::errno() == libc::ENXIO;
            let from = at;
            at = hi;
            return (!none).then_some((from, hi));
        }
        let d = d as usize;
        if d >= hi {
            at = hi;
            return None;
        }
        // SAFETY: as above.
        let h = unsafe { libc::lseek(fd, d as libc::off_t, libc::SEEK_HOLE) };
        let end = if h < 0 { hi } else { (h as usize).min(hi) };
        at = end;
        Some((d, end))
    })
}

/// fork, after, in the parent: every group writable again.
extern "C" fn parent() {
    let fd2 = FORK_FD.swap(-1, Ordering::Relaxed);
    if fd2 >= 0 {
        each_group(|_, r| {
            for &p in r.iter().filter(|&&p| p != 0) {
                protect(p, true);
                freeze(seg_of(p), slice_index(p as *const u8), false);
            }
        });
        sub::parent();
        // SAFETY: the copy is the child's; the parent's descriptor goes.
        unsafe { libc::close(fd2) };
    }
    // SAFETY: `prepare` took the lock in this thread and leaked its guard.
    unsafe { LOCK.force_unlock() };
}

/// fork, after, in the child: every range on the child's own copy.
extern "C" fn child() {
    if FORK_FAILED.load(Ordering::Relaxed) {
        // Sharing the merged pages with the parent, or a torn copy, would
        // corrupt both silently: the child stops here, loudly.
        crate::fatal(
            "mesh: fork could not copy the merged pages for the child (out of memory?)",
            ptr::null(),
        );
    }
    let fd2 = FORK_FD.swap(-1, Ordering::Relaxed);
    if fd2 >= 0 {
        each_group(|g, r| {
            for &p in r.iter().filter(|&&p| p != 0) {
                map_chunk(fd2, g, p, false);
                freeze(seg_of(p), slice_index(p as *const u8), false);
            }
        });
        sub::child(fd2);
        // (Not the number if the program closed it: it may be a file.)
        let old = fd();
        adopt(fd2);
        if old >= 0 {
            // SAFETY: the parent's memfd, mapped nowhere in the child now.
            unsafe { libc::close(old) };
        }
    }
    // SAFETY: as in `parent`.
    unsafe { LOCK.force_unlock() };
}

/// Whether slice `i` of the small segment at `seg` is frozen; a test for
/// the fault handler.
fn frozen(seg: *const Segment, i: usize) -> bool {
    // SAFETY: the caller checked that `seg` is a small segment of ours.
    unsafe { (*seg).mesh[i].load(Ordering::Acquire) & FROZEN != 0 }
}

/// Whether slice `i` of the small segment at `seg` belongs to a merged page.
fn meshed(seg: *const Segment, i: usize) -> bool {
    // SAFETY: the caller checked that `seg` is a small segment of ours.
    unsafe { (*seg).mesh[i].load(Ordering::Acquire) & GROUP_MASK != 0 }
}

/// Whether `addr` lies in a slice of one of our small segments (not the
/// header): the slice's segment if so.
fn our_slice(addr: usize) -> Option<(*const Segment, usize)> {
    let seg = (addr & !SEGMENT_MASK) as *const Segment;
    let i = slice_index(addr as *const u8);
    if i == 0 || i >= SLICES || registry::kind(seg) != registry::SMALL {
        return None;
    }
    Some((seg, i))
}

/// What meshing did, process-wide (see [`crate::mesh_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeshStats {
    /// Pages merged into another since the process started.
    pub pages_meshed: usize,
    /// Bytes that merged pages give back now: one 64 KiB slice per alias
    /// alive, and an OS page for each page mapped onto a shared OS page
    /// beyond the first.
    pub bytes_released: usize,
    /// Merged physical pages alive now.
    pub groups: usize,
    /// Writes by other threads that faulted on a page being copied (for a
    /// merge or a `fork`) and were held back until the copy was done.
    pub writes_held: usize,
    /// OS pages (4 KiB) of one page merged onto another page's since the
    /// process started (meshing at OS-page granularity).
    pub os_pages_meshed: usize,
    /// Physical OS pages that two or more pages share now.
    pub shared_os_pages: usize,
}

/// The process-wide figures.
pub(crate) fn stats() -> MeshStats {
    MeshStats {
        pages_meshed: PAGES_MESHED.load(Ordering::Relaxed),
        bytes_released: RELEASED.load(Ordering::Relaxed) + sub::RELEASED.load(Ordering::Relaxed),
        groups: GROUPS.load(Ordering::Relaxed),
        writes_held: HELD.load(Ordering::Relaxed),
        os_pages_meshed: sub::OS_PAGES_MESHED.load(Ordering::Relaxed),
        shared_os_pages: sub::SLOTS.load(Ordering::Relaxed),
    }
}
