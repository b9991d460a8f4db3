//! Batched remote frees: a thread that frees blocks of other threads' heaps
//! gathers them per destination heap and hands each batch over with one
//! atomic operation, instead of one CAS per block on each block's page (as
//! snmalloc's message queues and jemalloc's cache flushes do).
//!
//! On by default (cargo feature `remote-batch`); without the feature
//! `alloc::free_remote` never batches, and the inboxes stay empty.
//!
//! The freer ([`add`], from `alloc::free_remote`) batches a block when it is
//! at most [`BATCH_BLOCK_MAX`] bytes and its segment belongs to a thread's
//! heap: not abandoned (owner 0: the freer takes the segment over, as
//! before) and not a first-class heap's (`Segment::private`, below). The
//! batches live in the freer's own heap ([`Outbox`], plain memory), one per
//! destination for up to `OUT_SLOTS` destinations. A batch is handed over
//! when it holds `BATCH_BLOCKS` blocks or `BATCH_BYTES` bytes, when its slot
//! is needed for another destination, on the freer's allocation slow path,
//! at its exit and on `collect()`; so a block is never stranded, and a
//! thread withholds at most `OUT_SLOTS * BATCH_BYTES` from other heaps, for
//! no longer than until its next slow path. Handing over is one CAS on the
//! destination's [`Inbox`], which lives beside its heap in the heap slot
//! (slots are never unmapped, so any thread may push to any slot's inbox).
//!
//! A block in a batch still counts in its page's `used`: its page, and so its
//! segment, stay in use, so whoever holds a batch holds valid blocks.
//!
//! A batch is a chain of carriers (see `remote`): blocks of four words or
//! more that hold the addresses of the blocks batched after them, so that
//! the owner loads a batch's blocks in parallel rather than one link after
//! another. The owner reads a carrier's addresses only after checking its
//! freed mark, and no more than the carrier's block size holds
//! ([`carrier_room`]).
//!
//! The owner takes its whole inbox with one swap on its slow path (each time
//! a current page runs dry, before the slow path looks for pages), in
//! `collect()`, at exit, and in the free side's upkeep (every
//! `heap::UPKEEP_EVERY` free-side slow events, see `alloc::upkeep`, so that
//! a thread that frees much and allocates little settles too), and settles
//! each block: if it owns the block's
//! segment, a local free (cheaper than a `thread_free` push the owner would
//! collect page by page); if not (its heap slot changed hands since the freer
//! read the segment's owner, and the segment was abandoned or taken over), the
//! block goes the per-block way: the owner takes an abandoned segment over, or
//! pushes the block on its page's `thread_free` and flags the page.
//!
//! Exit: the thread hands its own batches over and settles its inbox. If its
//! heap is parked (see `park`) the inbox stays open, and batches wait there
//! for the thread that adopts the heap, which settles them as local frees.
//! A heap given up (not parked, or retired from the parked list) has its
//! inbox closed and settled before it abandons its segments. A push to a
//! closed inbox fails, and the pusher settles the blocks itself (and frees
//! per block into that heap from then on, while its inbox stays closed); a
//! new thread taking the slot from the pool reopens the inbox. The races (a push against the close and the reopen) are
//! modelled in `tests/loom.rs`.
//!
//! First-class heaps free all their segments at once without visiting blocks
//! (`Heap::release_all`), so a batch pending for one would point into memory
//! given back. Their segments are marked (`Segment::private`, set whenever a
//! heap obtains a segment) and never batched into: frees of their blocks by
//! other threads go on `thread_free`, which `release_all` collects first. A
//! first-class heap's inbox stays closed, in case its slot address is still
//! some freer's destination from a previous owner.
//!
//! Statistics: the freer counts the free as it batches the block (a free, the
//! requested bytes, and one block pending), as it did when it pushed it;
//! whoever frees the block into its page takes it off the pending blocks of
//! its own counters. The sums over all heaps stay exact.

use crate::atomic::Ordering;
use crate::heap::Heap;
use crate::page;
use crate::remote::{for_each_block, Block, Inbox, ARRAY_AT};
use crate::segment::{segment_of, Segment, ABANDONED};
use static_assertions::const_assert;

/// Blocks up to this size are batched; larger ones go on their page's
/// `thread_free` at once, so that big blocks are not withheld.
pub(crate) const BATCH_BLOCK_MAX: usize = 8 * 1024;

// A batched block keeps its link and the freed mark; the hint bit in its
// link needs 8-aligned blocks (size_class asserts sizes are multiples of 8).
const_assert!(crate::size_class::class_size(0) >= 16);

/// Makes slot `i` of `h`'s outbox, which `Outbox::slot` (or a claim after
/// an eviction) gave the thread heap `dest`, whose inbox is `inbox`, the
/// last block's slot; `None` when `dest`'s inbox refused our last batch
/// and is still closed (its thread exited): the caller frees per block,
/// rather than batch blocks only to have them refused again. (Finding the
/// slot is the caller's, `alloc::upkeep::batch_slot`: an eviction hands a
/// batch over, inside the handshake.)
///
/// # Safety
/// `h` is the calling thread's heap; `inbox` is `dest`'s.
#[inline]
pub(crate) unsafe fn use_slot(
    h: &mut Heap,
    i: usize,
    dest: usize,
    inbox: *const Inbox,
) -> Option<usize> {
    if h.outbox.was_refused(i) {
        // SAFETY: `inbox` is a heap slot's (never unmapped).
        if unsafe { (*inbox).is_closed() } {
            return None;
        }
        h.outbox.set_refused(i, false);
    }
    h.outbox.set_last(i, dest);
    Some(i)
}

/// Adds `p`, a block of `bytes` bytes freed by `h`'s thread, to slot `i`'s
/// batch (from `Outbox::last_slot_for` or [`use_slot`]). Returns whether
/// the batch is full: the caller then hands it over ([`hand_over`]).
///
/// # Safety
/// `h` is the calling thread's heap; `p` is a live block of at most
/// [`BATCH_BLOCK_MAX`] bytes the caller gives up, counted as freed and
/// marked batched; its segment is not private and was owned by slot `i`'s
/// destination when the caller looked.
#[inline(always)]
#[must_use]
pub(crate) unsafe fn add(h: &mut Heap, i: usize, p: *mut u8, bytes: usize) -> bool {
    // SAFETY: per the contract; the outbox is this thread's.
    unsafe { h.outbox.add(i, p.cast(), bytes) }
}

/// The thread's allocation slow path: hands over its batches and settles
/// those in its inbox. Cheap when there are none.
///
/// # Safety
/// `h` is the calling thread's heap and `inbox` its inbox.
#[inline(always)]
pub(crate) unsafe fn slow_path(h: &mut Heap, inbox: &Inbox) {
    if !h.outbox.is_empty() || !inbox.is_empty() {
        // SAFETY: per the contract.
        unsafe { collect(h, inbox) }
    }
}

/// Hands over every batch of `h` and settles every batch in its inbox.
///
/// # Safety
/// As for [`slow_path`].
#[cold]
#[inline(never)]
pub(crate) unsafe fn collect(h: &mut Heap, inbox: &Inbox) {
    // SAFETY: per the contract.
    unsafe {
        hand_over_all(h, true);
        let list = inbox.take();
        if !list.is_null() {
            settle_all(h, list, true);
        }
    }
}

/// Thread exit: hands over the thread's batches and settles those in its
/// inbox, leaving the inbox open: a heap that is parked goes on taking
/// batches for the thread that adopts it (see `park`). Takes no segment
/// over.
///
/// # Safety
/// As for [`slow_path`]; the thread allocates nothing through `h` afterwards.
pub(crate) unsafe fn exit(h: &mut Heap, inbox: &Inbox) {
    // SAFETY: per the contract.
    unsafe {
        hand_over_all(h, false);
        let list = inbox.take();
        if !list.is_null() {
            settle_all(h, list, false);
        }
    }
}

/// A heap given up, before it abandons its segments (its thread exited and
/// it was not parked, or it was retired from the parked list): closes its
/// inbox and settles what was in it. Later pushes are refused, and their
/// freers free per block.
///
/// # Safety
/// The caller has `h` to itself (its thread's own, or taken off the parked
/// list), `inbox` is its inbox, and `h`'s outbox is empty.
pub(crate) unsafe fn close(h: &mut Heap, inbox: &Inbox) {
    debug_assert!(h.outbox.is_empty());
    // SAFETY: per the contract.
    unsafe {
        let list = inbox.close();
        if !list.is_null() {
            settle_all(h, list, false);
        }
    }
}

/// # Safety
/// As for [`slow_path`].
unsafe fn hand_over_all(h: &mut Heap, adopt: bool) {
    while let Some(i) = h.outbox.first_pending() {
        // SAFETY: per the contract.
        unsafe { hand_over(h, i, adopt) };
    }
}

/// Hands slot `i`'s batch over to its destination's inbox; if that is
/// closed (its thread exited), settles the blocks here, which with `adopt`
/// may take segments over: hence the handshake.
///
/// # Safety
/// As for [`slow_path`], inside the thread's handshake (`thread::owning`).
#[inline(never)]
pub(crate) unsafe fn hand_over(h: &mut Heap, i: usize, adopt: bool) {
    let (batch, inbox) = h.outbox.take(i);
    if batch.is_empty() {
        return;
    }
    // SAFETY: `inbox` is the inbox of a heap slot (never unmapped); the batch
    // holds live blocks we gave up, in segments still in use because of them.
    unsafe {
        if !(*inbox).push(batch) {
            h.outbox.set_refused(i, true);
            settle_all(h, batch.first, adopt);
        }
    }
}

/// Settles every block of the batches in `list`.
///
/// # Safety
/// As for [`slow_path`]; `list` came from our inbox, or is a batch of ours
/// that its destination refused.
unsafe fn settle_all(h: &mut Heap, list: *mut Block, adopt: bool) {
    // SAFETY: per the contract, the blocks are ours to settle; `settle`
    // stops a cyclic list.
    unsafe { for_each_block(list, |b| carrier_room(b), |b| settle(h, b, adopt)) };
}

/// How many addresses the batched block `b` can carry (words past its
/// third); 0 if it is not marked as batched (`settle` then reports it).
///
/// # Safety
/// As for [`settle`].
#[inline(always)]
unsafe fn carrier_room(b: *mut Block) -> usize {
    let p = b.cast::<u8>();
    let seg = segment_of(p);
    #[cfg(feature = "secure")]
    check_batched(seg, p);
    // SAFETY: a batched block is live, so its segment and page are in use.
    unsafe {
        if !crate::freed::is_marked(p, crate::freed::batched((*seg).freed_key)) {
            return 0;
        }
        let (page, _) = batched_page(seg, p);
        ((*page).block_size / core::mem::size_of::<usize>()).saturating_sub(ARRAY_AT)
    }
}

/// The page of `p`, a batched block of `seg`, and the block's address
/// there: a page merged into another since the block was freed has its
/// block live on at the same offset in the other (see `mesh`).
///
/// # Safety
/// `p` is a live block of `seg`, a segment in use.
#[inline(always)]
unsafe fn batched_page(seg: *mut Segment, p: *mut u8) -> (*mut page::Page, *mut u8) {
    // SAFETY: per the contract.
    unsafe {
        let page = (*seg).page_of(p);
        if (*page).has(page::IN_USE) {
            return (page, p);
        }
        let p = crate::mesh::redirect(seg, p);
        ((*seg).page_of(p), p)
    }
}

/// Frees `b`, a block freed (and counted) by some thread and batched, into
/// its page: locally if `h` owns its segment; else the per-block way.
/// `adopt`: whether `h` may take over the segment if it is abandoned.
///
/// # Safety
/// As for [`slow_path`]; `b` is a live block given to us alone.
unsafe fn settle(h: &mut Heap, b: *mut Block, adopt: bool) {
    let p = b.cast::<u8>();
    let seg = segment_of(p);
    #[cfg(feature = "secure")]
    check_batched(seg, p);
    let me = h as *mut Heap as usize;
    // SAFETY: the block is ours to settle, and its segment in use.
    unsafe {
        let key = (*seg).freed_key;
        if !crate::freed::is_marked(p, crate::freed::batched(key)) {
            // Its owner freed it again while it waited (and may have handed
            // it out since), or the program wrote into it after the free, or
            // it was settled before (a block pushed twice makes a cycle).
            freed_while_batched(p);
        }
        crate::freed::mark(p, key);
    }
    // SAFETY: `b` is live, so its segment and page are in use. Only `h`
    // makes a segment `h`'s or stops it being so, so `owner == me` is exact;
    // any other value may be stale, which the per-block way copes with.
    unsafe {
        let (page, p) = batched_page(seg, p);
        let mut owner = (*seg).owner.load(Ordering::Relaxed);
        if owner == 0 && adopt && ABANDONED.remove(seg) {
            // Its thread has exited: take it over, as a free into it would.
            h.reclaim(seg);
            owner = me;
        }
        if owner == me {
            // A page's class is always below NUM_CLASSES.
            h.k()
                .class
                .get_unchecked((*page).class as usize)
                .remote_pending
                .sub(1);
            if (*page).free_collected(p) {
                h.free_slow(page);
            }
        } else {
            // Flag first: once the block is pushed its page may be freed.
            (*seg).thread_freed.set(1u64 << (*seg).page_index(page));
            page::free_remote(&*page, p);
        }
    }
}

/// A block taken from a batch lost its batched mark.
#[cold]
#[inline(never)]
fn freed_while_batched(p: *mut u8) -> ! {
    crate::fatal(
        "double free or corruption (a block freed by another thread was freed again or written to)",
        p,
    )
}

/// `secure`: a block taken from a batch must be a carved block of a page in
/// use of a segment of ours (a forged link decodes to garbage).
#[cfg(feature = "secure")]
fn check_batched(seg: *mut crate::segment::Segment, p: *const u8) {
    if !crate::segment::registry::contains(seg.cast()) {
        crate::fatal("corrupted batch of remote frees", p);
    }
    // SAFETY: a registered segment's header is mapped.
    unsafe {
        if (*seg).kind != crate::segment::KIND_SMALL {
            crate::fatal("corrupted batch of remote frees", p);
        }
        let page = (*seg).page_of(p);
        if !(*page).has(page::IN_USE) && !crate::mesh::alias_target(seg, p).is_null() {
            return; // a block of a page merged into another (`mesh`)
        }
        if !(*page).has(page::IN_USE) || !(*page).is_block_start(p) {
            crate::fatal("corrupted batch of remote frees", p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::Segment;
    use crate::{alloc, thread};
    use std::sync::mpsc;

    /// Owner threads that each allocate `n` blocks of `size` bytes, hand
    /// them (and their heap's address) over, and wait; dropping the returned
    /// senders lets them collect what came back and exit.
    fn owners(k: usize, n: usize, size: usize) -> Vec<(usize, Vec<usize>, mpsc::Sender<()>)> {
        (0..k)
            .map(|_| {
                let (tx, rx) = mpsc::channel();
                let (done_tx, done_rx) = mpsc::channel::<()>();
                std::thread::spawn(move || {
                    // Blocks in pages of this heap: one the heap profiler
                    // sampled (`SEGALLOC_PROF=1`) has a mapping of its own,
                    // freed on the large path, never batched; freed here.
                    let mut blocks: Vec<usize> = Vec::with_capacity(n);
                    while blocks.len() < n {
                        let p = alloc::malloc(size, 8);
                        // SAFETY: a live block: its segment's header is mapped.
                        if unsafe { (*segment_of(p)).kind } == crate::segment::KIND_SMALL {
                            blocks.push(p as usize);
                        } else {
                            // SAFETY: allocated above, freed once.
                            unsafe { alloc::free(p, size) };
                        }
                    }
                    tx.send((thread::heap() as usize, blocks)).unwrap();
                    let _ = done_rx.recv();
                    crate::collect();
                });
                let (h, blocks) = rx.recv().unwrap();
                (h, blocks, done_tx)
            })
            .collect()
    }

    #[cfg(feature = "remote-batch")]
    fn inbox_has_batches(h: usize) -> bool {
        // SAFETY: `h` is a live thread's heap slot; a relaxed peek.
        !unsafe { (*thread::inbox(h as *mut Heap)).is_empty() }
    }

    #[test]
    #[cfg(feature = "remote-batch")]
    fn a_full_batch_is_handed_over() {
        let mut o = owners(1, crate::remote::BATCH_BLOCKS as usize, 32);
        let (h, blocks, done) = o.pop().unwrap();
        std::thread::spawn(move || {
            let (last, rest) = blocks.split_last().unwrap();
            for &p in rest {
                // SAFETY: live blocks handed to us, freed once.
                unsafe { alloc::free(p as *mut u8, 32) };
            }
            assert!(!inbox_has_batches(h), "a batch went before it was full");
            // SAFETY: as above.
            unsafe { alloc::free(*last as *mut u8, 32) };
            assert!(inbox_has_batches(h), "a full batch was not handed over");
        })
        .join()
        .unwrap();
        drop(done);
    }

    #[test]
    #[cfg(feature = "remote-batch")]
    fn a_slot_needed_for_another_destination_is_handed_over() {
        let o = owners(crate::remote::OUT_SLOTS + 1, 1, 48);
        std::thread::spawn(move || {
            for (k, (h, blocks, _)) in o.iter().enumerate() {
                // SAFETY: a live block handed to us, freed once.
                unsafe { alloc::free(blocks[0] as *mut u8, 48) };
                // Until every slot is taken, each batch stays gathered.
                let handed = o[..=k]
                    .iter()
                    .filter(|(h, _, _)| inbox_has_batches(*h))
                    .count();
                let expect = usize::from(k == crate::remote::OUT_SLOTS);
                assert_eq!(handed, expect, "after {} destinations (last {h:#x})", k + 1);
            }
            // The exit hands the rest over.
        })
        .join()
        .unwrap();
    }

    /// A batch of 64-byte blocks is a chain of carriers, each holding the
    /// addresses of the five blocks batched after it, and the walk gives
    /// every block once.
    #[test]
    fn carriers_hold_the_blocks_batched_after_them() {
        let blocks: Vec<*mut u8> = (0..12).map(|_| alloc::malloc(64, 8)).collect();
        let mut batch = crate::remote::Batch::EMPTY;
        for &p in &blocks {
            // SAFETY: our live blocks, lent to the batch until freed below.
            assert!(!unsafe { batch.add(p.cast(), 64) });
        }
        let chain = batch.take();
        let mut links = 0;
        let mut b = chain.first;
        while !b.is_null() {
            links += 1;
            // SAFETY: a block of the batch, its link written by `add`.
            let next = unsafe { crate::remote::next_of(b) };
            b = next.wrapping_byte_sub(next as usize & 7);
        }
        assert_eq!(links, 2, "12 blocks: 2 carriers of 5 each");
        let mut seen = Vec::new();
        // SAFETY: the batch's blocks are ours; `room` is a 64-byte block's.
        unsafe { for_each_block(chain.first, |_| 5, |b| seen.push(b.cast::<u8>())) };
        seen.sort_unstable();
        let mut want = blocks.clone();
        want.sort_unstable();
        assert_eq!(seen, want);
        for p in blocks {
            // SAFETY: allocated above, freed once.
            unsafe { alloc::free(p, 64) };
        }
    }

    /// A batched block of a segment that another live heap owns (as when a
    /// heap slot changed hands after the freer looked) is not freed into
    /// our heap: it goes on its page's `thread_free`, for its owner.
    #[test]
    fn settle_forwards_blocks_it_does_not_own() {
        let mut o = owners(1, 2, 64);
        let (_, blocks, done) = o.pop().unwrap();
        std::thread::spawn(move || {
            thread::with_heap(|_| ()).unwrap();
            let h = thread::heap();
            let p = blocks[0] as *mut u8;
            // SAFETY: a live block handed to us; counted as freed by us, as
            // `alloc::free_remote` does, then settled as if taken from our
            // inbox. The owner is parked, so its page stands still.
            unsafe {
                let seg: *mut Segment = segment_of(p);
                let page = (*seg).page_of(p);
                let k = (*thread::counters(h))
                    .class
                    .get_unchecked((*page).class as usize);
                k.frees.add(1);
                k.requested.sub(64);
                k.remote_pending.add(1);
                let used = (*page).used.get();
                assert!((*page).thread_free.is_empty());
                crate::freed::mark(p, crate::freed::batched((*seg).freed_key));
                settle(&mut *h, p.cast(), true);
                assert_eq!((*page).used.get(), used, "freed into a page we do not own");
                assert!(
                    !(*page).thread_free.is_empty(),
                    "not forwarded to its owner"
                );
                alloc::free(blocks[1] as *mut u8, 64);
            }
        })
        .join()
        .unwrap();
        drop(done);
    }

    /// The same for a block of our own segment: a local free.
    #[test]
    fn settle_frees_our_own_blocks_locally() {
        std::thread::spawn(|| {
            let p = alloc::malloc(64, 8);
            let q = alloc::malloc(64, 8); // keeps the page in use
            let h = thread::heap();
            // SAFETY: our live block, counted and settled once.
            unsafe {
                let page = (*segment_of(p)).page_of(p);
                let k = (*thread::counters(h))
                    .class
                    .get_unchecked((*page).class as usize);
                k.frees.add(1);
                k.requested.sub(64);
                k.remote_pending.add(1);
                let used = (*page).used.get();
                crate::freed::mark(p, crate::freed::batched((*segment_of(p)).freed_key));
                settle(&mut *h, p.cast(), true);
                assert_eq!((*page).used.get(), used - 1);
                assert_eq!((*page).local_free, p.cast::<Block>());
                assert!((*page).thread_free.is_empty());
                alloc::free(q, 64);
            }
        })
        .join()
        .unwrap();
    }
}
