//! A young thread trades its heap for the parked heap it frees into.
//!
//! A thread that starts while the thread whose blocks it inherits is still
//! exiting (C larson: each thread starts its successor, hands it its array
//! of blocks and exits) takes whatever heap is parked or pooled at its
//! first allocation: its predecessor's heap is parked only a moment later.
//! It then frees the inherited blocks as remote frees into that parked
//! heap, whose pages are the warm ones the program's blocks live in, and
//! allocates their replacements from the other heap's colder pages. So
//! when a full batch of a thread's remote frees is bound for a heap that
//! is parked, and the thread took its own heap less than [`YOUNG_US`] ago
//! (it has allocated little from it), the thread parks its own heap
//! instead (as its exit would) and takes the parked one, whose blocks the
//! batch then frees locally. mimalloc does the like by reclaiming an
//! abandoned segment when a thread frees into it.
//!
//! The trade happens at most once per thread start: the heap taken is not
//! young. The heap is taken off the parked list under the list's lock, as
//! a starting thread takes one (see `park`); its inbox stays open
//! throughout, so batches other threads hand it meanwhile wait there for
//! the new owner. Youth is measured in time, not blocks (the C `malloc`
//! fast path counts nothing): what a wrong trade costs is the remote frees
//! of the blocks the thread allocated in its first [`YOUNG_US`].

use super::{handshake, heap_to_pool, inbox, key, owning, slot, HeapSlot};
use crate::heap::Heap;
use crate::{os, park, remote_batch};

/// How long after taking its heap a thread may still trade it (µs).
pub(crate) const YOUNG_US: u64 = 5_000;
pub(crate) static DBG: [core::sync::atomic::AtomicUsize; 24] = [const { core::sync::atomic::AtomicUsize::new(0) }; 24];
pub(crate) fn dbg(i: usize, n: usize) { DBG[i].fetch_add(n, core::sync::atomic::Ordering::Relaxed); }
pub(crate) fn dbg_pub(i: usize, n: usize) { dbg(i+8, n) }
pub(crate) fn dbg_print() {
    let mut buf = [0u8; 1024]; let mut n = 0;
    for d in DBG.iter() { let v = d.load(core::sync::atomic::Ordering::Relaxed); let s = v.to_string(); for b in s.bytes() { buf[n]=b; n+=1; } buf[n]=b' '; n+=1; }
    buf[n]=b'\n'; n+=1;
    unsafe { libc::write(2, buf.as_ptr().cast(), n) };
}

/// Slot `i` of the calling thread's outbox, bound for the thread heap
/// `dest`, is full: takes `dest` for the calling thread if it is parked
/// and the calling thread's heap `h` is young (freeing the batch locally
/// there); else hands the batch over.
///
/// # Safety
/// `h` is the calling thread's heap (not the empty one), slot `i` of its
/// outbox is `dest`'s and holds a batch.
#[cold]
#[inline(never)]
pub(crate) unsafe fn batch_full(h: *mut Heap, i: usize, dest: usize) {
    // SAFETY: per the contract, `h` is ours; `dest` is a heap slot (never
    // unmapped), taken off the parked list before it is touched.
    unsafe {
        dbg(0,1);
        if (*h).young_until != 0 { dbg(1,1); }
        if (*h).young_until != 0 && park::any_parked() {
            let now = os::now_us();
            if now >= (*h).young_until {
                dbg(2,1);
                (*h).young_until = 0;
            } else if park::take(dest as *mut Heap) {
                dbg(3,1); dbg(4, (now + YOUNG_US - (*h).young_until) as usize);
                return trade(h, dest as *mut Heap, i);
            } else { dbg(5,1); dbg(if dest == (*h).dbg_claimed { 13 } else { 14 }, 1); }
        }
        remote_batch::hand_over_full(&mut *h, i);
    }
}

/// The calling thread's allocation slow path, before it hands its batches
/// over: if its heap `h` is young and one of its batches is bound for a
/// parked heap, takes that heap (see [`batch_full`]). Returns the thread's
/// heap, `h` or the one taken.
///
/// # Safety
/// `h` is the calling thread's heap (not the empty one).
#[inline]
pub(crate) unsafe fn on_slow_path(h: *mut Heap) -> *mut Heap {
    // SAFETY: per the contract.
    unsafe {
        if (*h).young_until == 0 || (*h).outbox.is_empty() || !park::any_parked() {
            return h;
        }
        take_pending(h)
    }
}

/// [`on_slow_path`] past its cheap tests.
///
/// # Safety
/// As for [`on_slow_path`].
#[cold]
#[inline(never)]
unsafe fn take_pending(h: *mut Heap) -> *mut Heap {
    // SAFETY: per the contract; the outbox's destinations are heap slots.
    unsafe {
        let now = os::now_us();
        if now >= (*h).young_until {
            (*h).young_until = 0;
            return h;
        }
        let found = (*h)
            .outbox
            .pending_dests()
            .find(|&(_, d)| park::take(d as *mut Heap));
        match found {
            Some((i, d)) => {
                dbg(6,1); dbg(4, (now + YOUNG_US - (*h).young_until) as usize);
                trade(h, d as *mut Heap, i);
                d as *mut Heap
            }
            None => h,
        }
    }
}

/// Parks (or gives up) `old`, the calling thread's heap, as its exit
/// would, and makes `new`, just taken off the parked list, the thread's
/// heap; frees slot `i`'s batch of `old`'s outbox (`new`'s blocks) there.
///
/// # Safety
/// As for [`batch_full`], with `new` taken off the parked list by us.
unsafe fn trade(old: *mut Heap, new: *mut Heap, i: usize) {
    // SAFETY: `old` is the calling thread's heap and `new` ours alone (off
    // the parked list); the steps are those of `thread_done` for `old` and
    // `init_heap` for `new`.
    unsafe {
        let (batch, _) = (*old).outbox.take(i);
        (*old).dbg_claimed = 0; (*new).dbg_claimed = 0;
        (*old).young_until = 0;
        handshake(old).enter();
        handshake(old).close();
        remote_batch::exit(&mut *old, &*inbox(old));
        (*old).park();
        let mut parking = park::park(old);
        if parking == park::Parking::TooDirty {
            (*old).purge_all(core::ptr::null_mut());
            parking = park::park(old);
        }
        if parking != park::Parking::Parked {
            remote_batch::close(&mut *old, &*inbox(old));
            (*old).abandon();
            heap_to_pool(old);
        }
        (*new).adopt();
        (*new).young_until = 0;
        handshake(new).open();
        slot::set(new.cast::<HeapSlot>());
        if let Some(k) = key() {
            // The destructor gets the heap the thread holds at its exit.
            libc::pthread_setspecific(k, new.cast());
        }
        owning(new, |heap| remote_batch::settle_chain(heap, batch.first));
    }
}
