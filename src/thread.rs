//! Thread lifecycle: each thread's heap, from its first allocation to its exit.
//!
//! A thread-local pointer names the thread's heap. It starts out pointing at a
//! shared static heap that is always empty (every direct slot is the empty
//! page), so a thread's first allocation simply misses on the fast path and
//! lands in [`init_heap`], with no "initialised?" branch on the fast path. The
//! thread-local is a plain pointer with a static initial value, so an access
//! costs one TLS load: no lazy-init check, no destructor registration, and no
//! `__tls_get_addr` call in the shared library either (see `slot`).
//!
//! Thread exit is seen through a pthread key whose destructor parks the heap
//! whole for the next thread to start (see `park`), or, when enough heaps are
//! parked already, abandons its segments (see [`Heap::abandon`]) and returns
//! the heap to a pool. A parked heap that no thread takes within
//! `PURGE_DELAY_MS` is retired (purged and abandoned) by the next allocation
//! slow path of any thread. The pointer goes back to the empty heap, so an
//! allocation made by a later destructor just starts a new heap (maybe the
//! one just parked), which the key destroys in turn.
//!
//! Heaps are carved from OS pages, never from the global allocator.

use crate::counters::{HeapCounters, SHARED};
use crate::handshake::Handshake;
use crate::heap::Heap;
use crate::os;
use crate::page::Page;
use crate::park;
use crate::remote::Inbox;
use crate::segment::registry;
use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

/// A static that is only written by code that proved exclusive access.
#[repr(transparent)]
pub(crate) struct Shared<T>(UnsafeCell<T>);
// SAFETY: the empty page and heap are never written (every path that writes a
// page or heap first checks that it is not the empty one).
unsafe impl<T> Sync for Shared<T> {}

/// The page that stands for "no page": its `free` list is always null.
pub(crate) static EMPTY_PAGE: Shared<Page> = Shared(UnsafeCell::new(Page::EMPTY));
/// A heap, its statistics and its inbox of batched remote frees. The
/// counters and the inbox sit beside the heap, not in it, so that other
/// threads (reading the counters, pushing batches) never alias the owner's
/// `&mut Heap`.
#[repr(C)]
pub(crate) struct HeapSlot {
    /// First, so a slot's address is its heap's.
    pub(crate) heap: Heap,
    pub(crate) counters: HeapCounters,
    /// Open while a thread owns the heap, closed otherwise (see `remote`).
    pub(crate) inbox: Inbox,
    /// Who may touch the heap's segments: its thread or the background
    /// purger (see `handshake`).
    pub(crate) handshake: Handshake,
    /// The purger's notes, which only it reads and writes: the epoch it
    /// last saw, and when (µs, precise clock).
    pub(crate) seen_epoch: AtomicUsize,
    pub(crate) seen_at: AtomicUsize,
}

impl HeapSlot {
    const fn new() -> HeapSlot {
        HeapSlot {
            heap: Heap::new(EMPTY_PAGE.0.get()),
            counters: HeapCounters::NEW,
            inbox: Inbox::new_closed(),
            handshake: Handshake::new(),
            seen_epoch: AtomicUsize::new(0),
            seen_at: AtomicUsize::new(0),
        }
    }
}

/// The heap every thread starts with: never allocates, never written.
static EMPTY_SLOT: Shared<HeapSlot> = Shared(UnsafeCell::new(HeapSlot::new()));

/// The calling thread's heap (maybe the empty heap).
#[inline(always)]
pub(crate) fn heap() -> *mut Heap {
    slot::get().cast()
}

/// The counters of heap `h`, which must not be the empty heap.
#[inline(always)]
pub(crate) fn counters(h: *mut Heap) -> *const HeapCounters {
    // SAFETY: every heap but the empty one lives in a pool slot (the pointer
    // came from the slot, so it may reach the slot's counters).
    unsafe { core::ptr::addr_of!((*h.cast::<HeapSlot>()).counters) }
}

/// The inbox of heap `h`: any heap address (the owner of a segment), even
/// of an exited thread; heap slots are never unmapped.
#[inline(always)]
pub(crate) fn inbox(h: *mut Heap) -> *const Inbox {
    // SAFETY: as in `counters`.
    unsafe { core::ptr::addr_of!((*h.cast::<HeapSlot>()).inbox) }
}

/// The handshake of heap `h` with the background purger: any heap but the
/// empty one.
#[inline(always)]
pub(crate) fn handshake(h: *mut Heap) -> &'static Handshake {
    // SAFETY: as in `counters`; the handshake is only used through shared
    // references.
    unsafe { &*core::ptr::addr_of!((*h.cast::<HeapSlot>()).handshake) }
}

/// Runs `f` on the calling thread's own heap `h` (not the empty one) inside
/// its handshake with the background purger.
///
/// # Safety
/// `h` is the calling thread's heap, not the empty one.
#[inline]
pub(crate) unsafe fn owning<R>(h: *mut Heap, f: impl FnOnce(&mut Heap) -> R) -> R {
    let hs = handshake(h);
    let took = hs.enter();
    // SAFETY: per the contract; the purger keeps out until `leave`.
    let r = f(unsafe { &mut *h });
    if took {
        hs.leave();
    }
    r
}

/// Calls `f` on every heap slot made so far, under the pool's lock (which
/// `f` must not take). A slot's heap may be in use by its thread: `f`
/// reaches it only through the slot's handshake, and the other fields only
/// field by field.
pub(crate) fn for_each_slot(mut f: impl FnMut(*mut HeapSlot)) {
    let pool = POOL.lock();
    let mut c = pool.chunk;
    while !c.is_null() {
        // SAFETY: as in `for_each_heap`.
        unsafe {
            let mut slot = c as usize + core::mem::size_of::<Chunk>();
            while slot + SLOT_SIZE <= (*c).end {
                f(slot as *mut HeapSlot);
                slot += SLOT_SIZE;
            }
            c = (*c).prev;
        }
    }
}

/// Whether `h` is the shared empty heap.
#[inline(always)]
pub(crate) fn is_empty_heap(h: *mut Heap) -> bool {
    h == EMPTY_SLOT.0.get().cast()
}

/// The thread-local heap pointer, reached without a call.
///
/// In a shared library a Rust `thread_local!` uses the general-dynamic TLS
/// model: every access calls `__tls_get_addr`. So with the `override` feature
/// (the C front end: the `LD_PRELOAD` library, or the C API linked into a
/// program) on x86-64 Linux, the pointer is a TLS symbol declared in assembly
/// and read with the initial-exec model: one load of its thread-pointer
/// offset (from the GOT in a shared library; the linker turns it into a
/// constant in an executable) and one `%fs`-relative load. Its initial value,
/// the shared empty heap, is in the TLS image, so a thread that never ran
/// segalloc code (started before the library was loaded, or before `main`)
/// still reads a valid heap.
///
/// Initial-exec variables live in the static TLS block every thread gets at
/// creation. A preloaded library is loaded before any thread exists; a
/// `dlopen`ed one takes its 8 bytes from glibc's reserve for this purpose,
/// and glibc copies the image into every thread already running (so the
/// library is marked `STATIC_TLS`). `fork` copies the calling thread's block
/// with the rest of its memory. `tests/capi_preload.rs` checks all of these.
#[cfg(all(feature = "override", target_arch = "x86_64", target_os = "linux"))]
mod slot {
    use super::{HeapSlot, EMPTY_SLOT};
    use core::arch::{asm, global_asm};

    /// The symbol's name: hidden, so a shared library does not export it.
    macro_rules! sym_name {
        () => {
            "__segalloc_thread_heap"
        };
    }

    global_asm!(
        ".pushsection .tdata,\"awT\",@progbits",
        ".p2align 3",
        concat!(".globl ", sym_name!()),
        concat!(".hidden ", sym_name!()),
        concat!(".type ", sym_name!(), ", @object"),
        concat!(".size ", sym_name!(), ", 8"),
        concat!(sym_name!(), ":"),
        ".quad {empty}",
        ".popsection",
        empty = sym EMPTY_SLOT,
    );

    /// The calling thread's heap slot.
    #[inline(always)]
    pub(super) fn get() -> *mut HeapSlot {
        let v: *mut HeapSlot;
        // SAFETY: the symbol is an 8-byte initial-exec TLS variable defined
        // above; the GOT entry holds its offset from the thread pointer, and
        // every thread's static TLS block holds it (see the module docs).
        unsafe {
            asm!(
                concat!("mov {v}, qword ptr [rip + ", sym_name!(), "@GOTTPOFF]"),
                "mov {v}, qword ptr fs:[{v}]",
                v = out(reg) v,
                options(nostack, preserves_flags, readonly, pure),
            );
        }
        v
    }

    /// Points the calling thread at `slot`.
    #[inline(always)]
    pub(super) fn set(slot: *mut HeapSlot) {
        // SAFETY: as in `get`; the variable is this thread's own.
        unsafe {
            asm!(
                concat!("mov {t}, qword ptr [rip + ", sym_name!(), "@GOTTPOFF]"),
                "mov qword ptr fs:[{t}], {v}",
                t = out(reg) _,
                v = in(reg) slot,
                options(nostack, preserves_flags),
            );
        }
    }
}

/// Elsewhere a plain `thread_local!`: in an executable (the Rust front end
/// without `override`) one `%fs`-relative load with the offset built in, one
/// instruction fewer than the initial-exec access; in a shared library, a call.
#[cfg(not(all(feature = "override", target_arch = "x86_64", target_os = "linux")))]
mod slot {
    use super::{HeapSlot, EMPTY_SLOT};
    use core::cell::Cell;

    thread_local! {
        static HEAP: Cell<*mut HeapSlot> = const { Cell::new(EMPTY_SLOT.0.get()) };
    }

    #[inline(always)]
    pub(super) fn get() -> *mut HeapSlot {
        HEAP.get()
    }

    #[inline(always)]
    pub(super) fn set(slot: *mut HeapSlot) {
        HEAP.set(slot)
    }
}

/// Unused heaps, and the chunks heap slots are carved from.
struct Pool {
    free: *mut Heap,
    /// The newest chunk; each chunk begins with a link to the previous one.
    chunk: *mut Chunk,
    chunk_next: usize,
    chunk_end: usize,
    /// Slots made so far (saturating): the next slot's tag follows.
    slots: registry::Tag,
}

/// The header of a chunk of heap slots.
#[repr(C, align(64))]
struct Chunk {
    prev: *mut Chunk,
    /// One past the last slot carved from this chunk.
    end: usize,
}
// SAFETY: only accessed under POOL's lock.
unsafe impl Send for Pool {}

static POOL: spin::Mutex<Pool> = spin::Mutex::new(Pool {
    free: ptr::null_mut(),
    chunk: ptr::null_mut(),
    chunk_next: 0,
    chunk_end: 0,
    slots: 0,
});
const POOL_CHUNK: usize = 256 * 1024;
const SLOT_SIZE: usize = core::mem::size_of::<HeapSlot>().next_multiple_of(64);
static_assertions::const_assert!(core::mem::size_of::<Chunk>() + SLOT_SIZE <= POOL_CHUNK);

/// The pthread key whose destructor runs at thread exit; created once.
static KEY: spin::Mutex<Option<libc::pthread_key_t>> = spin::Mutex::new(None);

/// The exit hook, registered once with the first heap's set-up (after the
/// options are read): prints the statistics if `show_stats` is on by then,
/// and writes the page map if `SEGALLOC_PAGE_MAP` names a file. Neither
/// allocates.
extern "C" fn at_exit() {
    crate::stats::print_at_exit();
    crate::pagemap::write_at_exit();
    #[cfg(feature = "profiling")]
    crate::profile::write_at_exit();
}

fn key() -> Option<libc::pthread_key_t> {
    let mut k = KEY.lock();
    if k.is_none() {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: pthread_key_create writes the key and does not allocate.
        if unsafe { libc::pthread_key_create(&mut key, Some(thread_done)) } == 0 {
            *k = Some(key);
            // Once per process, with the first heap (before its first page).
            fork::register();
            os::set_limit_hooks(reclaim_for_limit, crate::stats::committed_now);
            os::at_exit(at_exit);
            #[cfg(feature = "secure")]
            crate::remote::init_link_key();
        }
    }
    *k
}

/// Gives back what the process-wide caches hold, when a mapping would pass
/// the memory limit (see `os::within_limit`): cached large blocks and kept
/// free segments. Never a heap's own memory: the mapping may come from that
/// heap's slow path.
fn reclaim_for_limit() {
    crate::large_cache::drain();
    crate::large::drain_sampled();
    crate::segment::drain_free_segments();
}

/// A heap slot: from the pool, or carved fresh (then its counters are zero).
fn heap_from_pool() -> *mut HeapSlot {
    let mut pool = POOL.lock();
    if !pool.free.is_null() {
        let h = pool.free;
        // SAFETY: heaps on the pool's list are valid and unused.
        pool.free = unsafe { (*h).next_free };
        return h.cast();
    }
    if pool.chunk.is_null() {
        // The first heap slot: no block exists yet.
        crate::freed::init();
    }
    if pool.chunk_next + SLOT_SIZE > pool.chunk_end {
        let c = os::map_aligned(POOL_CHUNK, os::OS_PAGE).cast::<Chunk>();
        if c.is_null() {
            return ptr::null_mut();
        }
        SHARED.heap_meta.fetch_add(POOL_CHUNK, Ordering::Relaxed);
        let first = c as usize + core::mem::size_of::<Chunk>();
        // SAFETY: a fresh mapping, large enough for the header.
        unsafe {
            c.write(Chunk {
                prev: pool.chunk,
                end: first,
            })
        };
        pool.chunk = c;
        pool.chunk_next = first;
        pool.chunk_end = c as usize + POOL_CHUNK;
    }
    let slot = pool.chunk_next as *mut HeapSlot;
    pool.chunk_next += SLOT_SIZE;
    // Each new slot gets the next tag, for good; past the last, none.
    let tag = registry::FIRST_TAG.saturating_add(pool.slots);
    pool.slots = pool.slots.saturating_add(1);
    // SAFETY: `slot` lies in the current chunk; a fresh slot gets an empty
    // heap and zero counters before anyone can see it (`end` covers it only
    // from here on, under the lock).
    unsafe {
        slot.write(HeapSlot::new());
        (*slot).heap.tag = tag;
        (*pool.chunk).end = pool.chunk_next;
    }
    slot
}

/// Calls `f` on the counters of every heap slot ever made (live or pooled).
pub(crate) fn for_each_heap(mut f: impl FnMut(&HeapCounters)) {
    let pool = POOL.lock();
    // Counts moved off slots taken for first-class heaps (see `private_heap`),
    // read under the same lock as the move.
    f(&crate::counters::RETIRED);
    let mut c = pool.chunk;
    while !c.is_null() {
        // SAFETY: chunks are never unmapped; slots below `end` are initialised,
        // and their counters are only ever accessed through shared references.
        unsafe {
            let mut slot = c as usize + core::mem::size_of::<Chunk>();
            while slot + SLOT_SIZE <= (*c).end {
                f(&*ptr::addr_of!((*(slot as *const HeapSlot)).counters));
                slot += SLOT_SIZE;
            }
            c = (*c).prev;
        }
    }
}

fn heap_to_pool(h: *mut Heap) {
    let mut pool = POOL.lock();
    // SAFETY: the heap is unused from now on; its link is ours to set.
    unsafe { (*h).next_free = pool.free };
    pool.free = h;
}

/// Gives the calling thread a heap of its own: the heap an exited thread
/// parked most recently, as it was, or an empty one. Null when out of memory.
#[cold]
#[inline(never)]
pub(crate) fn init_heap() -> *mut Heap {
    let parked = park::unpark();
    let slot = if parked.is_null() {
        heap_from_pool()
    } else {
        parked.cast::<HeapSlot>()
    };
    if slot.is_null() {
        return ptr::null_mut();
    }
    let h = slot.cast::<Heap>();
    // SAFETY: the slot is unused and ours; its counters keep their values;
    // its inbox was closed (and emptied) by its previous owner, if any. A
    // parked heap is whole and set up already, its inbox open.
    unsafe {
        if parked.is_null() {
            (*h).init(EMPTY_PAGE.0.get(), counters(h));
            (*inbox(h)).reopen();
        } else {
            (*h).adopt();
        }
    }
    // The background purger may take it while it is idle from now on.
    handshake(h).open();
    // Set before registering: pthread_setspecific may allocate (keys past the
    // first 32), and that allocation must find this heap.
    slot::set(slot);
    if let Some(k) = key() {
        // SAFETY: `k` is a live key; the value is only handed back to thread_done.
        unsafe { libc::pthread_setspecific(k, h.cast()) };
    }
    h
}

/// The key destructor: the thread is exiting.
extern "C" fn thread_done(arg: *mut libc::c_void) {
    let h = arg.cast::<Heap>();
    if h.is_null() {
        return;
    }
    slot::set(EMPTY_SLOT.0.get());
    // Wait out a purge in flight, then keep the purger out for good: the
    // heap is no longer a thread's.
    handshake(h).enter();
    handshake(h).close();
    // SAFETY: `h` is this thread's heap, which nothing else touches; after this
    // the thread allocates (if at all) from a new heap. Parked, the heap
    // belongs to the list until a thread takes it.
    unsafe {
        crate::remote_batch::exit(&mut *h, &*inbox(h));
        (*h).park();
        let mut parking = park::park(h);
        if parking == park::Parking::TooDirty {
            (*h).purge_all(ptr::null_mut());
            parking = park::park(h);
        }
        if parking == park::Parking::Parked {
            return;
        }
        crate::remote_batch::close(&mut *h, &*inbox(h));
        (*h).abandon();
    }
    heap_to_pool(h);
}

/// Retires the heaps parked for `PURGE_DELAY_MS` (all parked heaps with
/// `all`): purges their free memory and abandons their segments, as their
/// threads' exits would have, and returns them to the pool.
pub(crate) fn retire_parked(all: bool) {
    let mut h = park::take_due(all);
    while !h.is_null() {
        // SAFETY: heaps taken off the parked list belong to no thread; each
        // is ours until it goes back to the pool.
        unsafe {
            let next = (*h).next_free;
            crate::remote_batch::close(&mut *h, &*inbox(h));
            (*h).retire();
            heap_to_pool(h);
            h = next;
        }
    }
}

/// [`retire_parked`] if some parked heap is due: one load when none is
/// parked.
#[inline]
pub(crate) fn retire_parked_if_due() {
    if park::any_due() {
        retire_parked(false);
    }
}

/// The calling thread's counters, creating its heap if needed.
pub(crate) fn current_counters() -> Option<&'static HeapCounters> {
    with_heap(|_| ())?;
    // SAFETY: the thread's heap is now a pool slot, whose counters are never
    // unmapped and only accessed through shared references.
    Some(unsafe { &*counters(heap()) })
}

/// Brings the calling thread's counters up to date with what its pages did
/// (see `page::Page::take_counts`), if it has a heap.
pub(crate) fn fold_own_counts() {
    let h = heap();
    if !is_empty_heap(h) {
        // SAFETY: the thread's own heap, not the empty one.
        unsafe { owning(h, |h| h.fold_all()) };
    }
}

/// Runs `f` on the calling thread's heap, creating it if needed; `None` when
/// no heap can be had.
pub(crate) fn with_heap<R>(f: impl FnOnce(&mut Heap) -> R) -> Option<R> {
    let mut h = heap();
    if is_empty_heap(h) {
        h = init_heap();
        if h.is_null() {
            return None;
        }
    }
    // SAFETY: the heap is this thread's own and not the empty one.
    Some(f(unsafe { &mut *h }))
}

// --- First-class heaps (`crate::region`) ---

/// The shared empty heap: a first-class heap stands on it until its first
/// allocation, so that allocation misses on the fast path like a thread's.
pub(crate) fn empty_heap() -> *mut Heap {
    EMPTY_SLOT.0.get().cast()
}

/// A pool slot set up as the private heap of a first-class `crate::Heap`,
/// with counters starting at zero so that they are that heap's own figures.
/// What the slot counted before moves to the retired totals, under the lock
/// `stats()` sums under, so the process-wide sum never changes. Null when out
/// of memory.
pub(crate) fn private_heap() -> *mut Heap {
    let slot = heap_from_pool();
    if slot.is_null() {
        return ptr::null_mut();
    }
    {
        let _pool = POOL.lock();
        // SAFETY: the slot is ours and unused; its counters are only ever
        // accessed through shared references.
        crate::counters::retire(unsafe { &*ptr::addr_of!((*slot).counters) });
    }
    let h = slot.cast::<Heap>();
    // SAFETY: the slot is unused and ours. Its inbox stays closed: nobody
    // batches frees into a first-class heap's segments.
    unsafe {
        (*h).init_private(EMPTY_PAGE.0.get(), counters(h));
        let left = (*inbox(h)).close();
        debug_assert!(left.is_null(), "a pooled heap slot had batches");
    }
    h
}

/// Gives the slot of a first-class heap back to the pool.
///
/// # Safety
/// `h` came from [`private_heap`], is empty (`release_all`) and is not used
/// afterwards.
pub(crate) unsafe fn release_private_heap(h: *mut Heap) {
    heap_to_pool(h);
}

/// Fork safety: a child forked while another thread held one of segalloc's
/// spin locks would spin forever on its first slow-path allocation, so the
/// handlers take every lock before `fork` and release them on both sides.
/// Registered at the first heap's creation, so its prepare handler runs after
/// those of (nearly) every other library, whose own allocations it would block.
mod fork {
    use crate::{large_cache, os, park, segment};
    use core::mem::forget;

    pub(super) fn register() {
        // Meshing's first: its prepare handler then runs last, once every
        // other library's handler has taken its locks (see `mesh`).
        crate::mesh::register_fork();
        // A failure (ENOMEM) only leaves fork as unsafe as before.
        os::at_fork(prepare, release, release);
    }

    extern "C" fn prepare() {
        // Leaked guards: each lock stays held until `release`.
        #[cfg(feature = "profiling")]
        crate::sample::lock_for_fork();
        forget(super::KEY.lock());
        forget(super::POOL.lock());
        forget(park::PARKED.lock());
        forget(segment::ABANDONED.head.lock());
        forget(segment::FREE_SEGMENTS.head.lock());
        forget(large_cache::CACHE.lock());
        #[cfg(feature = "profiling")]
        forget(crate::large::sampled::CACHE.lock());
        forget(os::BRK_LOCK.lock());
    }

    extern "C" fn release() {
        // SAFETY: `prepare` took each of these locks in this thread and leaked
        // its guard; the parent, or the child's only thread, now gives them back.
        unsafe {
            os::BRK_LOCK.force_unlock();
            #[cfg(feature = "profiling")]
            crate::large::sampled::CACHE.force_unlock();
            large_cache::CACHE.force_unlock();
            segment::FREE_SEGMENTS.head.force_unlock();
            segment::ABANDONED.head.force_unlock();
            park::PARKED.force_unlock();
            super::POOL.force_unlock();
            super::KEY.force_unlock();
            #[cfg(feature = "profiling")]
            crate::sample::unlock_after_fork();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_threads_start_empty_and_get_their_own_heap() {
        let t = std::thread::spawn(|| {
            let before = heap();
            let mine = with_heap(|h| h as *mut Heap as usize).unwrap();
            (is_empty_heap(before), mine, heap() as usize)
        });
        let (was_empty, mine, after) = t.join().unwrap();
        assert!(was_empty);
        assert_eq!(mine, after);
        assert!(!is_empty_heap(mine as *mut Heap));
    }

    #[test]
    fn the_registry_gives_a_segment_to_its_owner_s_tag_alone() {
        use crate::segment::registry::{owned_segment_of, small_segment_of, NO_TAG};
        // Both threads hold their heaps until both have checked.
        let both = std::sync::Arc::new(std::sync::Barrier::new(2));
        let t = || {
            let both = both.clone();
            std::thread::spawn(move || {
                // A small block (not one the heap profiler sampled, which
                // has a mapping of its own).
                let p = loop {
                    let p = crate::alloc::malloc(64, 8);
                    assert!(!p.is_null());
                    if small_segment_of(p).is_some() {
                        break p;
                    }
                };
                let tag = with_heap(|h| h.tag).unwrap();
                assert_ne!(tag, NO_TAG);
                assert_eq!(owned_segment_of(p, tag), small_segment_of(p));
                assert_eq!(owned_segment_of(p, NO_TAG), None);
                both.wait();
                // Abandoned (as at the thread's exit): nobody's tag, or the
                // tag of a thread that took the segment over meanwhile.
                with_heap(|h| unsafe { h.abandon() }).unwrap();
                assert_eq!(owned_segment_of(p, tag), None);
                assert!(small_segment_of(p).is_some());
                // Freed through the header's path, by a thread that no
                // longer owns it.
                // SAFETY: a live block from malloc, freed once.
                unsafe { crate::alloc::free(p, 64) };
                tag
            })
        };
        let (a, b) = (t(), t());
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert_ne!(a, b, "two live heaps share a tag");
    }

    #[test]
    fn a_heap_without_a_tag_frees_its_own_blocks_as_their_owner() {
        use crate::segment::registry::{small_segment_of, NO_TAG};
        std::thread::spawn(|| {
            // As a heap past the last tag is: set up, then without one
            // before its first segment.
            let tag = with_heap(|h| core::mem::replace(&mut h.tag, NO_TAG)).unwrap();
            for _ in 0..1000 {
                let p = crate::alloc::malloc(48, 8);
                assert!(!p.is_null());
                if small_segment_of(p).is_none() {
                    continue; // a block the heap profiler sampled
                }
                // SAFETY: a live block from malloc, freed once.
                unsafe { crate::alloc::free(p, 48) };
                // Freed by its owner (last in, first out), not handed to
                // another heap's batch: the next block of the class is it
                // (the profiler's samples aside).
                let q = loop {
                    let q = crate::alloc::malloc(48, 8);
                    if small_segment_of(q).is_some() {
                        break q;
                    }
                    // SAFETY: a sampled block from malloc, freed once.
                    unsafe { crate::alloc::free(q, 48) };
                };
                assert_eq!(q, p, "a heap without a tag freed its block as another's");
                // SAFETY: as above.
                unsafe { crate::alloc::free(q, 48) };
            }
            // Its segments' entries say "no tag": let them go before the
            // tag comes back, or the next thread to take this heap (parked,
            // or from the pool) would own segments the registry does not
            // give it (a state no real heap is in: a tag never changes).
            with_heap(|h| {
                // SAFETY: this thread's heap; nothing allocated from it
                // is used afterwards.
                unsafe { h.abandon() };
                h.tag = tag;
            })
            .unwrap();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn exited_threads_return_their_heap_to_the_pool() {
        let slots = || {
            let mut n = 0;
            for_each_heap(|_| n += 1);
            n
        };
        let before = slots();
        for _ in 0..200 {
            std::thread::spawn(|| with_heap(|_| ()).unwrap())
                .join()
                .unwrap();
        }
        // Other tests run threads meanwhile, so allow some growth; without
        // reuse, 200 sequential threads would carve 200 new slots.
        let grown = slots() - before;
        assert!(
            grown < 50,
            "{grown} new heap slots for 200 sequential threads"
        );
    }
}
