//! The free side's share of a heap's upkeep.
//!
//! A heap settles the batches other threads hand it (its inbox) and collects
//! the blocks they push on its pages' `thread_free` lists on its allocation
//! slow path. A thread that frees much and allocates little (a consumer of
//! blocks made elsewhere, or a thread that took over the segments of exited
//! threads by freeing into them) seldom takes that path, and what others
//! free into its pages would wait there, neither reusable by it nor
//! purgeable, for as long as it does not allocate: measured before this
//! module, a main thread freeing the blocks of 300 waves of exited threads
//! ended up owning their segments, with 585 MiB mapped and 78 MiB resident
//! for 5 MiB live (`benches/c/threadchurn.c` with `SEGALLOC_PARKED_HEAPS=0`).
//!
//! So the free side's slow events (a page emptied, a batch of remote frees
//! handed over, a segment taken over) count towards an upkeep
//! (`Heap::upkeep_due`), which does what the allocation slow path does
//! first: hands over the thread's own batches, settles its inbox, and
//! collects its flagged pages. The fast paths are untouched.
//!
//! Everything here runs inside the thread's handshake with the background
//! purger (`thread::owning`): settling a batch may take a segment over and
//! free pages, which changes the heap's segment lists.

use crate::heap::Heap;
use crate::remote::Inbox;
use crate::remote_batch;
use crate::thread;

/// Counts a free-side slow event of `heap` (the calling thread's, inside its
/// handshake) and does the upkeep when it is due.
///
/// # Safety
/// `heap` is the calling thread's heap (or a first-class heap it uses), in
/// its handshake, and the caller holds on to none of its pages: any may be
/// freed and its segment released.
#[inline]
pub(crate) unsafe fn tick(heap: &mut Heap, h: *mut Heap) {
    if heap.upkeep_due() {
        // SAFETY: per the contract; a heap's inbox lives in its slot.
        unsafe { run(heap, &*thread::inbox(h)) }
    }
}

/// The upkeep: the thread's batches handed over, its inbox settled, its
/// flagged pages collected.
///
/// # Safety
/// As for [`tick`]; `inbox` is the heap's.
#[cold]
#[inline(never)]
unsafe fn run(heap: &mut Heap, inbox: &Inbox) {
    // SAFETY: per the contract.
    unsafe {
        remote_batch::slow_path(heap, inbox);
        heap.collect_flagged();
    }
}

/// The free of a block of `owner`'s (a thread's heap) by heap `h`, when
/// `owner` is not the destination of `h`'s last batched block: finds it a
/// slot in `h`'s outbox, handing another destination's batch over if every
/// slot is taken. `None`: `owner`'s inbox is closed, free per block.
///
/// # Safety
/// `h` is the calling thread's heap (not the empty one); `inbox` is
/// `owner`'s.
#[cold]
#[inline(never)]
pub(crate) unsafe fn batch_slot(h: *mut Heap, owner: usize, inbox: *const Inbox) -> Option<usize> {
    // SAFETY: per the contract; no reference to the heap is held across
    // `batch_full`, which makes its own.
    unsafe {
        let i = match (*h).outbox.slot(owner, inbox) {
            Ok(i) => i,
            Err(v) => {
                batch_full(h, v);
                (*h).outbox.claim(v, owner, inbox);
                v
            }
        };
        remote_batch::use_slot(&mut *h, i, owner, inbox)
    }
}

/// Hands over `h`'s batch in slot `i` (full, or evicted for another
/// destination), then counts the event.
///
/// # Safety
/// `h` is the calling thread's heap (not the empty one).
#[cold]
#[inline(never)]
pub(crate) unsafe fn batch_full(h: *mut Heap, i: usize) {
    // SAFETY: per the contract; the free that filled the batch (or needs
    // its slot) holds on to nothing of `h`'s.
    unsafe {
        thread::owning(h, |heap| {
            remote_batch::hand_over(heap, i, true);
            tick(heap, h);
        })
    }
}
