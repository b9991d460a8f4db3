//! Heaps of exited threads, kept whole for the next thread.
//!
//! A thread that exits leaves its heap here as it is: pages, the blocks still
//! live in them, the free memory its segments keep resident, and the
//! counters. The next thread to start takes the most recently parked heap
//! and allocates from warm memory at once, where it would otherwise take
//! over abandoned segments one by one (or new ones) and fault their memory
//! in again. Blocks of a parked heap freed by other threads meanwhile wait
//! in its inbox (batched, see `remote_batch`) or on their pages'
//! `thread_free`, as for a running owner, and the adopter collects them as
//! it needs memory.
//!
//! A heap parked for the purge delay (option `purge_delay_ms`) with no thread to adopt it is
//! retired by the next allocation slow path of any thread (its free memory
//! purged, its segments abandoned as at a thread exit), and `collect()`
//! retires them all. What parked heaps hold is bounded process-wide: at most
//! the option `parked_heaps` wait at once (a thread exiting past that abandons its heap
//! at once), and their resident free memory is at most
//! [`PARKED_DIRTY_MAX`] in all (a heap that would exceed it is purged before
//! it is parked).
//!
//! The list is under a spin lock (taken once per thread start and exit);
//! the deadline beside it is only a hint read without the lock, so that the
//! slow path checks for due heaps with one load when none is parked.

use crate::heap::Heap;
use crate::options::purge_delay_ms;
use crate::os;
use core::ptr;
// A hint, not a protocol: a plain core atomic, like the OS counters.
use core::sync::atomic::{AtomicU64, Ordering};

/// At most this many resident free bytes (the heaps' dirty slices) wait in
/// parked heaps, in all: as much as the process keeps in abandoned segments
/// and its cache of free segments together.
pub(crate) const PARKED_DIRTY_MAX: usize = 16 << 20;

/// Parked heaps, newest first (linked through `Heap::next_free`), so the
/// oldest, the next to retire, are at the tail.
pub(crate) struct Parked {
    head: *mut Heap,
    count: usize,
    /// The sum of the parked heaps' resident free bytes (which do not
    /// change while they are parked).
    dirty: usize,
}
// SAFETY: the heaps on the list belong to no thread; they are only reached
// under the lock.
unsafe impl Send for Parked {}

/// The parked heaps.
pub(crate) static PARKED: spin::Mutex<Parked> = spin::Mutex::new(Parked {
    head: ptr::null_mut(),
    count: 0,
    dirty: 0,
});

/// When the oldest parked heap is due for retirement (monotonic ms), or 0
/// when none is parked. Written under the lock.
static DEADLINE: AtomicU64 = AtomicU64::new(0);

/// What [`park`] did with a heap.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Parking {
    /// Parked: the list owns the heap now.
    Parked,
    /// Not parked: the option `parked_heaps` heaps wait already.
    Full,
    /// Not parked: its resident free memory would take the parked heaps
    /// past [`PARKED_DIRTY_MAX`]; purged, it would fit.
    TooDirty,
}

/// Parks `h`, the heap of an exiting thread, unless the option `parked_heaps` heaps
/// already wait or its resident free memory does not fit (then `h` is left
/// alone).
///
/// # Safety
/// `h` is a thread heap no thread uses any more, on no list.
pub(crate) unsafe fn park(h: *mut Heap) -> Parking {
    let now = os::now_ms();
    // SAFETY: per the contract, `h` is ours to read and link.
    let dirty = unsafe { (*h).dirty() };
    let mut list = PARKED.lock();
    if list.count >= crate::options::PARKED_HEAPS.get() {
        return Parking::Full;
    }
    if list.dirty + dirty > PARKED_DIRTY_MAX {
        return Parking::TooDirty;
    }
    // SAFETY: as above.
    unsafe {
        (*h).parked_at = now;
        (*h).next_free = list.head;
    }
    list.head = h;
    list.count += 1;
    list.dirty += dirty;
    if list.count == 1 {
        DEADLINE.store(due_at(now), Ordering::Relaxed);
    }
    Parking::Parked
}

/// Takes the most recently parked heap (the warmest), or null.
pub(crate) fn unpark() -> *mut Heap {
    if DEADLINE.load(Ordering::Relaxed) == 0 {
        return ptr::null_mut();
    }
    let mut list = PARKED.lock();
    let h = list.head;
    if !h.is_null() {
        // SAFETY: heaps on the list are valid; taken off it, `h` is ours.
        unsafe {
            list.head = (*h).next_free;
            list.dirty -= (*h).dirty();
        }
        list.count -= 1;
        // The oldest stays unless the list is now empty.
        if list.count == 0 {
            DEADLINE.store(0, Ordering::Relaxed);
        }
    }
    h
}

/// Whether some parked heap has waited the purge delay (option `purge_delay_ms`): one load when
/// none is parked.
#[inline]
pub(crate) fn any_due() -> bool {
    let d = DEADLINE.load(Ordering::Relaxed);
    d != 0 && os::now_ms() >= d
}

/// Takes off the list every heap that has waited the purge delay (option `purge_delay_ms`) (every
/// heap with `all`) and returns them linked through `next_free`, for the
/// caller to retire.
pub(crate) fn take_due(all: bool) -> *mut Heap {
    let now = os::now_ms();
    let mut list = PARKED.lock();
    // The due heaps are a tail of the list (parked_at never grows along it).
    let mut link: *mut *mut Heap = &mut list.head;
    let mut kept = 0;
    // SAFETY: heaps on the list are valid; `link` points at the head or at
    // the `next_free` of a heap on the list, all under the lock.
    unsafe {
        while !(*link).is_null() && !all && due_at((**link).parked_at) > now {
            link = &mut (**link).next_free;
            kept += 1;
        }
        let due = *link;
        *link = ptr::null_mut();
        list.count = kept;
        let mut d = due;
        while !d.is_null() {
            list.dirty -= (*d).dirty();
            d = (*d).next_free;
        }
        let deadline = if kept == 0 {
            0
        } else {
            // The new tail, the oldest left.
            let mut t = list.head;
            while !(*t).next_free.is_null() {
                t = (*t).next_free;
            }
            due_at((*t).parked_at)
        };
        DEADLINE.store(deadline, Ordering::Relaxed);
        due
    }
}

/// When a heap parked at `t` is due (never 0, which means "none parked").
fn due_at(t: u64) -> u64 {
    t.saturating_add(purge_delay_ms()).max(1)
}
