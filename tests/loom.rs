//! Model checks of segalloc's lock-free protocols with loom.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release --test loom`.
//!
//! The crate itself cannot build under loom (thread-locals, `const` statics),
//! so this test compiles the two files that hold the protocols, `atomic.rs`
//! (loom's atomics under `--cfg loom`) and `remote.rs` (the thread-free stack,
//! the hint bits and the inbox of batches), as modules of its own: the code
//! checked is the code that ships. Blocks are fake (boxed `remote::Block`s, whose links are loom cells,
//! so loom also checks that every link is read after it was written); pages
//! and segments are small models of the owner's plain fields. The abandoned
//! list's spin lock is modelled with `loom::sync::Mutex`.
//!
//! The inbox of batched remote frees (`remote::Inbox`, with `remote::Batch`
//! and `remote::for_each_block`) is checked the same way: batches pushed
//! while the owner takes them, and a push racing the owner's exit (its inbox
//! closed) and a new thread taking the same heap slot (the inbox reopened).
//! Batches hold carriers (fake blocks with loom cells for the count and the
//! addresses they carry), so loom also checks that the owner reads what a
//! freer wrote in a carrier only after the handover.
//!
//! The handshake between a heap's owner and the background purger
//! (`handshake.rs`) is checked too: the two are never inside at once, and
//! the purger never takes a heap whose thread has exited. So is the
//! purger's nudge (`heap/nudge.rs`) on top of it: the owner's fast path
//! reads a `direct` slot the purger may point at the empty page, and the
//! owner's slow path puts it back.
//!
//! Every model is exhaustive up to a preemption bound (see [`model`]).
#![cfg(loom)]

#[path = "../src/atomic.rs"]
#[allow(dead_code)]
mod atomic;
#[path = "../src/handshake.rs"]
#[allow(dead_code)]
mod handshake;
#[path = "../src/remote.rs"]
#[allow(dead_code)]
mod remote;

use atomic::{AtomicUsize, Ordering};
use loom::cell::UnsafeCell;
use loom::sync::{Arc, Mutex};
use loom::thread;
use remote::{next_of, set_next, Block, HintBits, ThreadFreeStack};
use std::collections::HashMap;

/// (h) The purger's nudge (`heap/nudge.rs`), on the handshake of (g). The
/// owner allocates three times: its fast path reads its `direct` slot (a
/// relaxed load, as `alloc::malloc_in`), and finding the empty page there
/// it takes its slow path, which puts the slot back if the heap was
/// nudged. The purger, twice, takes the idle heap and nudges it unless it
/// is nudged already. The flag is a loom cell, so loom flags any access to
/// it the handshake leaves unordered. Checked: the fast path sees only the
/// page or the empty page; outside both sides' handshakes an emptied slot
/// always has the flag set (else no slow path would put it back); and once
/// the owner's slow path ran after a nudge, its slot is its page again.
#[test]
fn nudge_brings_the_owner_to_its_slow_path_and_back() {
    use handshake::Handshake;
    const PAGE: usize = 1;
    const EMPTY: usize = 2;
    model(5, || {
        let hs = Arc::new(Handshake::new());
        hs.open();
        let slot = Arc::new(AtomicUsize::new(PAGE));
        let nudged = Arc::new(UnsafeCell::new(false));
        let (h, sl, n) = (hs.clone(), slot.clone(), nudged.clone());
        let purger = thread::spawn(move || {
            let mut nudges = 0;
            for _ in 0..2 {
                let Some(epoch) = h.idle_epoch() else {
                    continue;
                };
                if h.try_purge(epoch) {
                    n.with_mut(|v| {
                        // SAFETY: the handshake gives the purger the heap.
                        let v = unsafe { &mut *v };
                        if !*v {
                            sl.store(EMPTY, Ordering::Relaxed);
                            *v = true;
                            nudges += 1;
                        }
                    });
                    h.purged();
                }
            }
            nudges
        });
        let mut slow = 0;
        for _ in 0..3 {
            let page = slot.load(Ordering::Relaxed);
            assert!(page == PAGE || page == EMPTY, "the slot held {page}");
            if page == EMPTY {
                assert!(hs.enter(), "the owner's slow path");
                // SAFETY: the handshake gives the owner the heap.
                nudged.with_mut(|v| unsafe {
                    assert!(*v, "an emptied slot without the nudge flag");
                    *v = false;
                });
                slot.store(PAGE, Ordering::Relaxed);
                hs.leave();
                slow += 1;
            }
        }
        let nudges = purger.join().unwrap();
        assert!(slow <= nudges, "{slow} slow paths for {nudges} nudges");
        // SAFETY: both threads are done with the heap.
        let flag = nudged.with(|v| unsafe { *v });
        let page = slot.load(Ordering::Relaxed);
        assert_eq!(page == EMPTY, flag, "slot {page} with the flag {flag}");
        assert_eq!(flag, slow < nudges, "{slow} slow paths for {nudges} nudges");
    });
}

/// Runs `f` under loom, exploring every interleaving with at most `bound`
/// preemptions (`LOOM_MAX_PREEMPTIONS` overrides it). Bugs in protocols this
/// small show up within two or three; the bounds used (5 and 6) keep the
/// whole file under half a minute on two cores, where unbounded runs take
/// hours.
fn model<F: Fn() + Sync + Send + 'static>(bound: usize, f: F) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(bound);
    }
    // Counted so that a model that stops exploring (as loom#392 made them do
    // before the shim's loads became RMWs) shows up as a tiny number.
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = runs.clone();
    b.check(move || {
        r.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    let n = runs.load(std::sync::atomic::Ordering::Relaxed);
    println!("{} executions explored", n);
    assert!(n > 10, "loom explored only {n} executions");
}

/// `n` fake blocks, as raw pointers (freed by [`free_blocks`]).
fn blocks(n: usize) -> Vec<usize> {
    (0..n)
        .map(|_| Box::into_raw(Box::new(Block::new())) as usize)
        .collect()
}

fn free_blocks(bs: &[usize]) {
    for &b in bs {
        // SAFETY: made by `blocks`, freed once, no longer on any list.
        drop(unsafe { Box::from_raw(b as *mut Block) });
    }
}

/// The owner's side of a page: the plain fields `collect_thread_free` writes.
struct PageModel {
    stack: ThreadFreeStack,
    /// (local_free, used): owner only; loom checks that.
    owner: UnsafeCell<(usize, u32)>,
}

// SAFETY: `owner` is only touched by the thread owning the page (loom checks
// that every access is ordered); `stack` is atomic.
unsafe impl Sync for PageModel {}
unsafe impl Send for PageModel {}

impl PageModel {
    fn new(used: u32) -> Self {
        PageModel {
            stack: ThreadFreeStack::new(),
            owner: UnsafeCell::new((0, used)),
        }
    }

    /// `Page::collect_thread_free`: take the stack onto `local_free`, and
    /// subtract what came back from `used`.
    fn collect(&self) -> u32 {
        self.owner.with_mut(|o| {
            // SAFETY: the caller owns the page.
            let (local, used) = unsafe { &mut *o };
            let (head, n) = self
                .stack
                .take_all(*local as *mut Block, u32::MAX)
                .expect("no block pushed twice");
            if n > 0 {
                *local = head as usize;
                *used -= n;
            }
            n
        })
    }

    /// `page::free_remote`.
    fn free_remote(&self, b: usize) {
        // SAFETY: `b` is a live fake block, given up here.
        unsafe { self.stack.push(b as *mut Block) }
    }

    /// `Page::free_local`: the owner's own free.
    fn free_local(&self, b: usize) {
        self.owner.with_mut(|o| {
            // SAFETY: the caller owns the page and the block.
            let (local, used) = unsafe { &mut *o };
            unsafe { set_next(b as *mut Block, *local as *mut Block) };
            *local = b;
            *used -= 1;
        })
    }

    /// Pops the first block off `local_free` (as if reallocated); 0 if none.
    fn pop_local(&self) -> usize {
        self.owner.with_mut(|o| {
            // SAFETY: the caller owns the page.
            let (local, used) = unsafe { &mut *o };
            if *local == 0 {
                return 0;
            }
            let b = *local;
            *local = unsafe { next_of(b as *const Block) } as usize;
            *used += 1;
            b
        })
    }

    /// Walks `local_free`: how many times each block is on it, and `used`.
    fn census(&self) -> (HashMap<usize, usize>, u32) {
        self.owner.with(|o| {
            // SAFETY: the caller owns the page.
            let (local, used) = unsafe { *o };
            let mut seen = HashMap::new();
            let mut b = local as *mut Block;
            while !b.is_null() {
                *seen.entry(b as usize).or_insert(0) += 1;
                assert!(seen.len() <= 64, "cycle on local_free");
                b = unsafe { next_of(b) };
            }
            (seen, used)
        })
    }

    /// Asserts every block of `expect` is on `local_free` exactly once, nothing
    /// else is, and `used` is `live`.
    fn assert_exactly(&self, expect: &[usize], live: u32) {
        let (seen, used) = self.census();
        for b in expect {
            assert_eq!(
                seen.get(b),
                Some(&1),
                "block {b:#x} lost or duplicated: {seen:?}"
            );
        }
        assert_eq!(seen.len(), expect.len(), "stray blocks: {seen:?}");
        assert_eq!(used, live, "used count is off");
    }
}

/// (a) Two freers push two blocks each while the owner collects twice; after a
/// final collect every block is on `local_free` exactly once and `used` is 0.
#[test]
fn thread_free_push_and_collect() {
    model(6, || {
        let bs = blocks(4);
        let page = Arc::new(PageModel::new(4));
        let freers: Vec<_> = [[bs[0], bs[1]], [bs[2], bs[3]]]
            .into_iter()
            .map(|mine| {
                let page = page.clone();
                thread::spawn(move || {
                    for b in mine {
                        page.free_remote(b);
                    }
                })
            })
            .collect();
        // The owner collects while the frees are in flight.
        let mut got = page.collect();
        got += page.collect();
        for t in freers {
            t.join().unwrap();
        }
        got += page.collect();
        assert_eq!(got, 4);
        page.assert_exactly(&bs, 0);
        free_blocks(&bs);
    });
}

/// (a) A collected block is reallocated and freed remotely again while a
/// freer's CAS still holds the old head: the push-only stack has no ABA, so
/// each block ends up on `local_free` once, and the reallocated one counts.
#[test]
fn thread_free_reuse_of_a_collected_block() {
    model(6, || {
        let bs = blocks(3);
        let page = Arc::new(PageModel::new(3));
        page.free_remote(bs[0]);
        let (p1, b1) = (page.clone(), bs[1]);
        let t1 = thread::spawn(move || p1.free_remote(b1));
        let (p2, b2) = (page.clone(), bs[2]);
        let t2 = thread::spawn(move || p2.free_remote(b2));
        // Collect, reallocate the newest block and free it "remotely" again.
        page.collect();
        let again = page.pop_local();
        if again != 0 {
            page.free_remote(again);
        }
        t1.join().unwrap();
        t2.join().unwrap();
        page.collect();
        page.assert_exactly(&bs, 0);
        free_blocks(&bs);
    });
}

/// A segment of two pages and its hint bits.
struct SegModel {
    hints: HintBits,
    pages: [PageModel; 2],
}

impl SegModel {
    fn new(used: [u32; 2]) -> Self {
        SegModel {
            hints: HintBits::new(),
            pages: [PageModel::new(used[0]), PageModel::new(used[1])],
        }
    }

    /// `alloc::free_remote`: flag the page, then push.
    fn free_remote(&self, page: usize, b: usize) {
        self.hints.set(1 << page);
        self.pages[page].free_remote(b);
    }

    /// `Heap::collect_flagged`: take the bits, collect the flagged pages.
    /// Returns the bits it saw and how many blocks came back.
    fn collect_flagged(&self) -> (u64, u32) {
        if !self.hints.any() {
            return (0, 0);
        }
        let seen = self.hints.take();
        let mut bits = seen;
        let mut n = 0;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            n += self.pages[i].collect();
        }
        (seen, n)
    }

    /// `Heap::collect_full_pages`: every page, flagged or not.
    fn full_scan(&self) -> u32 {
        self.pages.iter().map(PageModel::collect).sum()
    }
}

/// How many executions of [`hints_never_lose_a_block`] missed a hint: the
/// owner consumed the bit before the block was pushed.
static MISSED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// (b) Freers set a page's bit then push, while the owner takes the bits and
/// collects the flagged pages. A hint is never dropped unseen (after the
/// freers finish, each page's bit is set, or the owner saw it), and a final
/// full scan finds every block. Missed hints (the owner saw the bit before the
/// push) happen, which is why the heap scans full pages before growing.
#[test]
fn hints_never_lose_a_block() {
    MISSED.store(0, std::sync::atomic::Ordering::Relaxed);
    model(6, || {
        let bs = blocks(3);
        let seg = Arc::new(SegModel::new([2, 1]));
        // Two frees into page 0 (the second may skip the RMW), one into page 1.
        let (s1, b0, b1) = (seg.clone(), bs[0], bs[1]);
        let t1 = thread::spawn(move || {
            s1.free_remote(0, b0);
            s1.free_remote(0, b1);
        });
        let (s2, b2) = (seg.clone(), bs[2]);
        let t2 = thread::spawn(move || s2.free_remote(1, b2));
        let (seen, mut got) = seg.collect_flagged();
        t1.join().unwrap();
        t2.join().unwrap();
        // After the freers finished, a page with uncollected blocks has its bit
        // set, unless this very owner pass took the bit (a missed hint).
        let after = seg.hints.take();
        for i in 0..2 {
            let pending = !seg.pages[i].stack.is_empty();
            if pending && after & (1 << i) == 0 {
                assert!(seen & (1 << i) != 0, "page {i}: a hint was dropped unseen");
                MISSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        got += seg.full_scan();
        assert_eq!(got, 3, "a block was lost");
        seg.pages[0].assert_exactly(&bs[..2], 0);
        seg.pages[1].assert_exactly(&bs[2..], 0);
        free_blocks(&bs);
    });
    let missed = MISSED.load(std::sync::atomic::Ordering::Relaxed);
    println!("executions with a missed hint: {missed}");
    assert!(missed > 0, "the model never exercised a missed hint");
}

/// A small segment for the handover: owner, hints, one page, and the list
/// flag that only the abandoned list's lock guards.
struct Segment {
    owner: AtomicUsize,
    hints: HintBits,
    page: PageModel,
    /// `Segment::on_shared_list`: read and written under the list's lock.
    on_list: UnsafeCell<bool>,
}

// SAFETY: `on_list` is only touched under the list lock; the page as above.
unsafe impl Sync for Segment {}
unsafe impl Send for Segment {}

/// The abandoned list (one slot is enough: one segment), under its lock.
type List = Arc<Mutex<Option<Arc<Segment>>>>;

const A: usize = 0xA; // the exiting owner
const F: usize = 0xF; // a freer that may adopt the segment
const R: usize = 0xB; // a reclaimer looking for memory

/// `ABANDONED.push` after `owner.store(0, Release)`, as `Heap::abandon` does.
fn abandon(list: &List, seg: &Arc<Segment>) {
    seg.page.collect();
    seg.owner.store(0, Ordering::Release);
    let mut l = list.lock().unwrap();
    seg.on_list.with_mut(|f| unsafe { *f = true });
    *l = Some(seg.clone());
}

/// `Heap::reclaim` after a pop or a remove: take ownership, clear the hints,
/// collect every page.
fn reclaim(seg: &Segment, me: usize) {
    seg.owner.store(me, Ordering::Release);
    seg.hints.clear();
    seg.page.collect();
}

/// `SegmentList::pop`.
fn pop(list: &List) -> Option<Arc<Segment>> {
    let mut l = list.lock().unwrap();
    let s = l.take()?;
    s.on_list.with_mut(|f| unsafe { *f = false });
    Some(s)
}

/// `SegmentList::remove`: takes `seg` off the list if it is still there.
fn remove(list: &List, seg: &Segment) -> bool {
    let mut l = list.lock().unwrap();
    if !seg.on_list.with(|f| unsafe { *f }) {
        return false;
    }
    seg.on_list.with_mut(|f| unsafe { *f = false });
    *l = None;
    true
}

/// `alloc::free` by thread `me` of block `b` of `seg`: local if `me` owns the
/// segment; adopt it if abandoned and still listed; else a remote free.
/// Returns whether `me` adopted the segment.
fn free(list: &List, seg: &Segment, me: usize, b: usize) -> bool {
    if seg.owner.load(Ordering::Relaxed) == me {
        seg.page.free_local(b);
        return false;
    }
    if seg.owner.load(Ordering::Relaxed) == 0 && remove(list, seg) {
        reclaim(seg, me);
        seg.page.free_local(b);
        return true;
    }
    seg.hints.set(1);
    seg.page.free_remote(b);
    false
}

/// (c) The owner frees a block locally and abandons its segment; meanwhile
/// one thread frees a block of it (remotely, or by adopting the segment) and
/// another reclaims it from the list. Whoever ends up owning it sees the
/// exiting owner's writes (loom checks the ordering of every plain access)
/// and, after a final collect, every block freed, exactly once.
#[test]
fn abandon_and_reclaim_handover() {
    model(5, || {
        let bs = blocks(3);
        let list: List = Arc::new(Mutex::new(None));
        let seg = Arc::new(Segment {
            owner: AtomicUsize::new(A),
            hints: HintBits::new(),
            // Three blocks live: bs[0] freed by A, bs[1] by F, bs[2] stays live.
            page: PageModel::new(3),
            on_list: UnsafeCell::new(false),
        });

        let (l, s, b0) = (list.clone(), seg.clone(), bs[0]);
        let owner = thread::spawn(move || {
            s.page.free_local(b0);
            abandon(&l, &s);
        });
        let (l, s, b1) = (list.clone(), seg.clone(), bs[1]);
        let freer = thread::spawn(move || free(&l, &s, F, b1));
        let (l, s) = (list.clone(), seg.clone());
        let reclaimer = thread::spawn(move || match pop(&l) {
            Some(got) => {
                assert!(Arc::ptr_eq(&got, &s));
                reclaim(&got, R);
                true
            }
            None => false,
        });
        owner.join().unwrap();
        let adopted = freer.join().unwrap();
        let reclaimed = reclaimer.join().unwrap();
        assert!(!(adopted && reclaimed), "two threads took the segment");

        // Whoever owns it now (or the main thread, if nobody took it yet)
        // collects once more, as its full scan would.
        let now = seg.owner.load(Ordering::Relaxed);
        if adopted {
            assert_eq!(now, F);
        } else if reclaimed {
            assert_eq!(now, R);
        } else {
            let got = pop(&list).expect("the segment is on the list");
            reclaim(&got, R);
        }
        seg.page.collect();
        seg.page.assert_exactly(&bs[..2], 1);
        assert!(
            list.lock().unwrap().is_none(),
            "the segment is still listed"
        );
        free_blocks(&bs);
    });
}

// --- Batched remote frees: the inbox (`remote::Inbox`, `remote::Batch`) ---

use remote::{for_each_block, Batch, Chain, Inbox};

/// A freer's batch of `bs`, as `Batch::add` builds it and `Batch::take`
/// hands it over. With `carry`, the first block is a carrier (five words:
/// room for two addresses) and holds the others' addresses; without, every
/// block is too small to carry any and the batch is a chain.
fn batch_of(bs: &[usize], carry: bool) -> Chain {
    let mut batch = Batch::EMPTY;
    for (i, &b) in bs.iter().enumerate() {
        let bytes = if carry && i == 0 { 40 } else { 16 };
        // SAFETY: a live fake block, given up to the batch.
        let full = unsafe { batch.add(b as *mut Block, bytes) };
        assert!(!full);
    }
    batch.take()
}

/// Walks what `Inbox::take`/`close` returned (or a refused batch) with the
/// shipped walk, counting each block into `seen`; a walk longer than every
/// block of the model (a cycle) fails instead of looping.
fn walk(list: *mut Block, seen: &mut HashMap<usize, usize>) {
    let mut n = 0;
    // SAFETY: the list came from the inbox; its blocks are ours.
    unsafe {
        for_each_block(
            list,
            |_| 2,
            |b| {
                n += 1;
                assert!(n <= 8, "a cycle in the list");
                *seen.entry(b as usize).or_insert(0) += 1;
            },
        )
    };
}

/// (d) Two freers each hand a batch of two blocks over while the owner takes
/// its inbox twice; after a final take every block was taken exactly once
/// (loom also checks that each link was read after it was written, through
/// the push's Release and the take's Acquire).
#[test]
fn inbox_push_and_take() {
    model(6, || {
        let bs = blocks(4);
        let inbox = Arc::new(Inbox::new_closed());
        inbox.reopen();
        let freers: Vec<_> = [([bs[0], bs[1]], true), ([bs[2], bs[3]], false)]
            .into_iter()
            .map(|(mine, carry)| {
                let inbox = inbox.clone();
                thread::spawn(move || {
                    let batch = batch_of(&mine, carry);
                    // SAFETY: a batch of live fake blocks, given up.
                    assert!(
                        unsafe { inbox.push(batch) },
                        "an open inbox refused a batch"
                    );
                })
            })
            .collect();
        let mut seen = HashMap::new();
        walk(inbox.take(), &mut seen);
        walk(inbox.take(), &mut seen);
        for t in freers {
            t.join().unwrap();
        }
        walk(inbox.take(), &mut seen);
        assert!(inbox.take().is_null());
        for b in &bs {
            assert_eq!(
                seen.get(b),
                Some(&1),
                "block {b:#x} lost or taken twice: {seen:?}"
            );
        }
        assert_eq!(seen.len(), 4, "stray blocks: {seen:?}");
        free_blocks(&bs);
    });
}

/// A segment of one page, for the exit race: its owner (a heap address) and
/// the page's `thread_free` and owner-side fields.
struct BatchSeg {
    owner: AtomicUsize,
    page: PageModel,
}

/// `remote_batch::settle` by heap `me` of a batched block of `seg`: a local
/// free if `me` owns the segment, else the per-block way (`thread_free`).
fn settle(seg: &BatchSeg, me: usize, b: usize) {
    if seg.owner.load(Ordering::Relaxed) == me {
        seg.page.free_local(b);
    } else {
        seg.page.free_remote(b);
    }
}

/// The heap slot's address: the exiting owner and the thread that takes the
/// slot over next have the same one.
const SLOT: usize = 0x5107;

/// How many executions of [`inbox_close_and_reopen_race`] saw the batch
/// taken at the close, refused, and taken by the new owner.
static OUTCOMES: [std::sync::atomic::AtomicUsize; 3] = [
    std::sync::atomic::AtomicUsize::new(0),
    std::sync::atomic::AtomicUsize::new(0),
    std::sync::atomic::AtomicUsize::new(0),
];

/// (e) A freer hands a batch of two blocks of a segment over to the heap
/// that owns it, while that heap's thread exits (closes its inbox, settles
/// what was in it, abandons the segment) and a new thread takes the same heap
/// slot (reopens the inbox; with `adopt`, it also takes the segment over, so
/// the same owner address means a new owner) and takes its inbox. The batch is
/// taken at the close, or refused (the freer pushes each block on
/// `thread_free`), or taken by the new owner, who frees locally only the
/// blocks of segments it owns and forwards the rest. Either way, once the
/// segment's owner collects its page, both blocks are free exactly once.
fn close_and_reopen(adopt: bool) {
    model(5, move || {
        let bs = blocks(3);
        let inbox = Arc::new(Inbox::new_closed());
        inbox.reopen();
        // Three blocks live: bs[0], bs[1] freed by the freer; bs[2] stays.
        let seg = Arc::new(BatchSeg {
            owner: AtomicUsize::new(SLOT),
            page: PageModel::new(3),
        });

        let (i, s, mine) = (inbox.clone(), seg.clone(), [bs[0], bs[1]]);
        let freer = thread::spawn(move || {
            let batch = batch_of(&mine, true);
            // SAFETY: a batch of live fake blocks, given up.
            if unsafe { i.push(batch) } {
                return 0;
            }
            // Refused: the owner exited; each block goes the per-block way.
            let mut seen = HashMap::new();
            walk(batch.first, &mut seen);
            for &b in seen.keys() {
                settle(&s, F, b);
            }
            1
        });

        // The owner exits: close, settle what came, abandon the segment.
        let mut at_close = HashMap::new();
        walk(inbox.close(), &mut at_close);
        for &b in at_close.keys() {
            settle(&seg, SLOT, b);
        }
        seg.page.collect();
        seg.owner.store(0, Ordering::Release);

        // A new thread takes the heap slot (after the exit: the pool's lock).
        let (i, s) = (inbox.clone(), seg.clone());
        let newcomer = thread::spawn(move || {
            i.reopen();
            if adopt {
                // It takes the abandoned segment over (`Heap::reclaim`).
                s.owner.store(SLOT, Ordering::Release);
                s.page.collect();
            }
            let mut got = HashMap::new();
            walk(i.take(), &mut got);
            for &b in got.keys() {
                settle(&s, SLOT, b);
            }
            got.len()
        });
        let refused = freer.join().unwrap();
        let taken_new = newcomer.join().unwrap();
        // What the new owner's next slow path would take.
        let mut late = HashMap::new();
        walk(inbox.take(), &mut late);
        for &b in late.keys() {
            settle(&seg, SLOT, b);
        }
        let outcome = if !at_close.is_empty() {
            0
        } else if refused == 1 {
            1
        } else {
            2
        };
        assert_eq!(
            at_close.len() + 2 * refused + taken_new + late.len(),
            2,
            "the batch went two ways, or none"
        );
        OUTCOMES[outcome].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Whoever owns the segment now collects its page (a reclaimer, if
        // nobody took it over).
        if seg.owner.load(Ordering::Relaxed) == 0 {
            seg.owner.store(R, Ordering::Release);
        }
        seg.page.collect();
        seg.page.assert_exactly(&bs[..2], 1);
        free_blocks(&bs);
    });
    let seen: Vec<usize> = OUTCOMES
        .iter()
        .map(|n| n.swap(0, std::sync::atomic::Ordering::Relaxed))
        .collect();
    println!("taken at close / refused / taken by the new owner: {seen:?}");
    assert!(
        seen.iter().all(|&n| n > 0),
        "an outcome was never explored: {seen:?}"
    );
}

/// (f) A batch refused by a closed inbox is walked on its own. The inbox
/// already holds another freer's batch when a freer hands its own over and
/// the owner takes its inbox and closes it: a push attempt that loses its CAS
/// to the close has linked the refused batch to a batch the owner took. The freer
/// must walk only its own blocks, or the owner's blocks are settled twice
/// (found by the C mstress benchmark: a page's `thread_free` looped).
#[test]
fn refused_batch_is_walked_alone() {
    static REFUSED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    model(5, || {
        let bs = blocks(3);
        let inbox = Arc::new(Inbox::new_closed());
        inbox.reopen();
        // An earlier freer's batch waits in the inbox.
        // SAFETY: a batch of a live fake block, given up.
        assert!(unsafe { inbox.push(batch_of(&[bs[2]], false)) });

        let (i, mine) = (inbox.clone(), [bs[0], bs[1]]);
        let freer = thread::spawn(move || {
            let batch = batch_of(&mine, true);
            // SAFETY: a batch of live fake blocks, given up.
            if unsafe { i.push(batch) } {
                return HashMap::new();
            }
            let mut seen = HashMap::new();
            walk(batch.first, &mut seen);
            seen
        });
        // The owner's last slow path takes its inbox, then it exits.
        let mut at_close = HashMap::new();
        walk(inbox.take(), &mut at_close);
        walk(inbox.close(), &mut at_close);
        let refused = freer.join().unwrap();
        if !refused.is_empty() {
            REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut got: Vec<usize> = refused.keys().copied().collect();
            got.sort_unstable();
            let mut want = vec![bs[0], bs[1]];
            want.sort_unstable();
            assert_eq!(got, want, "a refused batch walked into other batches");
        }
        for b in &bs {
            let n = at_close.get(b).unwrap_or(&0) + refused.get(b).unwrap_or(&0);
            assert_eq!(n, 1, "block {b:#x} settled {n} times");
        }
        free_blocks(&bs);
    });
    assert!(
        REFUSED.swap(0, std::sync::atomic::Ordering::Relaxed) > 0,
        "no execution refused the batch"
    );
}

/// (e), without and with the new owner taking the segment over (one test:
/// the two share the outcome counters).
#[test]
fn inbox_close_and_reopen_race() {
    close_and_reopen(false);
    close_and_reopen(true);
}

/// (g) The handshake between a heap's owner and the background purger. The
/// owner runs two slow paths and then exits (closes the handshake inside a
/// third); the purger twice finds the heap idle and tries to take it. The
/// heap's segments are a loom cell that only the side inside touches, so
/// loom flags any access the handshake leaves unordered (the two inside at
/// once). The exit marks the cell: a purge after it fails the model.
#[test]
fn handshake_owner_and_purger_exclude_each_other() {
    use handshake::Handshake;
    const EXITED: usize = 1000;
    static PURGES: [std::sync::atomic::AtomicUsize; 3] = [
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
    ];
    model(5, || {
        let hs = Arc::new(Handshake::new());
        assert!(!hs.enter(), "not a thread's heap yet");
        hs.open();
        let heap = Arc::new(UnsafeCell::new(0usize));
        let (h, c) = (hs.clone(), heap.clone());
        let purger = thread::spawn(move || {
            let mut purges = 0;
            for _ in 0..2 {
                let Some(epoch) = h.idle_epoch() else {
                    continue;
                };
                if h.try_purge(epoch) {
                    c.with_mut(|v| {
                        // SAFETY: the handshake gives the purger the heap.
                        let v = unsafe { &mut *v };
                        assert!(*v < EXITED, "purged a heap whose thread exited");
                        *v += 100;
                    });
                    h.purged();
                    purges += 1;
                }
            }
            purges
        });
        for _ in 0..2 {
            assert!(hs.enter(), "the owner's slow path");
            // SAFETY: the handshake gives the owner the heap.
            heap.with_mut(|v| unsafe { *v += 1 });
            hs.leave();
        }
        assert!(hs.enter());
        // SAFETY: as above.
        heap.with_mut(|v| unsafe { *v += EXITED });
        hs.close();
        assert!(!hs.enter(), "closed: no handshake any more");
        assert_eq!(hs.idle_epoch(), None);
        let purges = purger.join().unwrap();
        // SAFETY: both threads are done with the heap.
        heap.with(|v| assert_eq!(unsafe { *v }, 2 + EXITED + 100 * purges));
        PURGES[purges].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    let seen: Vec<usize> = PURGES
        .iter()
        .map(|n| n.swap(0, std::sync::atomic::Ordering::Relaxed))
        .collect();
    println!("runs with 0, 1, 2 purges: {seen:?}");
    assert!(
        seen.iter().all(|&n| n > 0),
        "an outcome was never explored: {seen:?}"
    );
}
