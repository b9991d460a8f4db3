//! The lock-free protocols between a page's owner and the threads that free
//! its blocks, apart from the rest of the engine so that loom can check them:
//! `tests/loom.rs` compiles this very file over loom's atomics (the rest of the
//! crate cannot build under loom: thread-locals, `const` statics).
//!
//! - [`ThreadFreeStack`]: a page's `thread_free`. Any thread pushes a block with
//!   a CAS (Release, publishing the block's link); only the owner takes, and it
//!   takes everything at once with a swap (Acquire). With no single-block pop
//!   there is no ABA: a push only needs the head it links to to still be the
//!   head, whatever happened to that block in between.
//! - [`HintBits`]: a segment's `thread_freed`. A freer sets its page's bit
//!   before pushing (after the push the page may be gone), the owner swaps the
//!   bitmap to zero and collects the flagged pages. A push can land after the
//!   owner collected the page its bit named, so a hint can be missed: the owner
//!   also scans its full pages before growing, and a missed hint only delays
//!   reuse (see `heap`).
//!
//! - [`Inbox`]: a heap's inbox of batched remote frees (see `remote_batch`).
//!   A thread that frees blocks of another heap gathers them in a [`Batch`]
//!   (plain memory of its own, in its [`Outbox`]) and pushes the whole batch
//!   with one CAS (Release); the owner takes every batch at once with a swap
//!   (Acquire). A batch is a chain of blocks through their first words, and
//!   a push links the batch's last block to the inbox's head, so the inbox
//!   is one chain. Most blocks are not on the chain itself: a block of four
//!   words or more on the chain (a *carrier*, tagged in its own link's low
//!   bits) holds, from its fourth word on, the addresses of
//!   blocks batched after it, its third word their count. The owner reads a
//!   carrier's addresses and then loads those blocks independently of each
//!   other (with write prefetches), instead of waiting for each block's link
//!   before it can load the next block: the freer wrote every block last,
//!   so each is a cache miss, and a chain makes them one after the other.
//!   The second word of every batched block keeps the freed mark (see
//!   `freed`), through which a block freed twice is caught.
//!   When the owner exits it closes its inbox (a
//!   sentinel head), so later pushes fail and their blocks go the per-block
//!   way; a new owner of the same heap slot reopens it. A push that read the
//!   head before a close and lands after the reopen reaches the new owner,
//!   which checks for every block it takes that it owns the block's segment.
//!
//! Block links are plain memory. Under loom they are `loom::cell::UnsafeCell`s,
//! so that loom also checks that every link is read after it was written.

use crate::atomic::{AtomicPtr, AtomicU64, Ordering};
use core::ptr;

/// A free block: its first word links to the next free block (the second
/// holds the freed mark, see `freed`).
#[repr(C)]
pub(crate) struct Block {
    #[cfg(not(loom))]
    pub(crate) next: *mut Block,
    #[cfg(loom)]
    next: loom::cell::UnsafeCell<*mut Block>,
    /// Words 2 to 4 (a carrier's count and two addresses); word 1, the
    /// freed mark, is not modelled.
    #[cfg(loom)]
    words: [loom::cell::UnsafeCell<usize>; 3],
}

#[cfg(loom)]
impl Block {
    /// A fake block for the loom models.
    pub(crate) fn new() -> Block {
        Block {
            next: loom::cell::UnsafeCell::new(ptr::null_mut()),
            words: core::array::from_fn(|_| loom::cell::UnsafeCell::new(0)),
        }
    }
}

/// With the `secure` feature, links are stored XOR-ed with a per-process
/// random key and the block's own address, so that a program overwriting a
/// freed block cannot make the allocator hand out an address of its choosing
/// (a forged link decodes to garbage, which `page::pop` rejects).
#[cfg(all(feature = "secure", not(loom)))]
pub(crate) static LINK_KEY: core::sync::atomic::AtomicUsize =
    core::sync::atomic::AtomicUsize::new(0x9e37_79b9_7f4a_7c15);

/// Sets [`LINK_KEY`] from the kernel's per-process random bytes; called once,
/// before the first page exists.
#[cfg(all(feature = "secure", not(loom)))]
pub(crate) fn init_link_key() {
    // SAFETY: AT_RANDOM points to 16 random bytes the kernel placed on the
    // initial stack; they stay mapped for the life of the process.
    let key = unsafe {
        let p = libc::getauxval(libc::AT_RANDOM) as *const usize;
        if p.is_null() {
            return;
        }
        p.read_unaligned()
    };
    LINK_KEY.store(key | 1, core::sync::atomic::Ordering::Relaxed);
}

/// What a link of block `b` is XOR-ed with: 0 unless `secure`.
#[inline(always)]
fn link_mask(b: *const Block) -> usize {
    #[cfg(all(feature = "secure", not(loom)))]
    {
        LINK_KEY.load(core::sync::atomic::Ordering::Relaxed) ^ (b as usize).rotate_left(29)
    }
    #[cfg(not(all(feature = "secure", not(loom))))]
    {
        let _ = b;
        0
    }
}

/// Writes `b`'s link.
///
/// # Safety
/// The caller has exclusive access to the block `b`.
#[inline(always)]
pub(crate) unsafe fn set_next(b: *mut Block, next: *mut Block) {
    #[cfg(not(loom))]
    // SAFETY: per the contract, `b` is a valid block nobody else touches.
    unsafe {
        (*b).next = (next as usize ^ link_mask(b)) as *mut Block;
    }
    #[cfg(loom)]
    // SAFETY: as above; loom checks the exclusivity.
    unsafe {
        (*b).next.with_mut(|p| *p = next);
    }
}

/// Reads `b`'s link.
///
/// # Safety
/// `b` is a valid block whose link was written before (happens-before) this.
#[inline(always)]
pub(crate) unsafe fn next_of(b: *const Block) -> *mut Block {
    #[cfg(not(loom))]
    // SAFETY: per the contract.
    unsafe {
        ((*b).next as usize ^ link_mask(b)) as *mut Block
    }
    #[cfg(loom)]
    // SAFETY: per the contract; loom checks the ordering.
    unsafe {
        (*b).next.with(|p| *p)
    }
}

/// Blocks freed by threads that do not own their page: a lock-free stack that
/// any thread pushes on and only the owner empties, all at once.
#[repr(transparent)]
pub(crate) struct ThreadFreeStack(AtomicPtr<Block>);

impl ThreadFreeStack {
    /// An empty stack (the state of zeroed memory).
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        ThreadFreeStack(AtomicPtr::new(ptr::null_mut()))
    }

    /// An empty stack (loom's atomics have no `const` constructor).
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        ThreadFreeStack(AtomicPtr::new(ptr::null_mut()))
    }

    /// The current head, for the owner's double-free check: blocks on the
    /// stack stay valid until the owner takes them.
    #[cfg(not(loom))]
    pub(crate) fn peek(&self) -> *mut Block {
        self.0.load(Ordering::Acquire)
    }

    /// Whether the stack looks empty: a relaxed peek, exact only for the owner
    /// of a page nobody can free into (no live block).
    #[inline(always)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.load(Ordering::Relaxed).is_null()
    }

    /// Pushes `b`. Lock-free: one CAS in the common case. After the CAS the
    /// owner may take the block and reuse the page at once, so nothing is
    /// touched afterwards.
    ///
    /// # Safety
    /// `b` is a valid block that stays valid until the owner takes it, and the
    /// caller gives up all access to it.
    #[inline(always)]
    pub(crate) unsafe fn push(&self, b: *mut Block) {
        let mut head = self.0.load(Ordering::Relaxed);
        loop {
            // SAFETY: the block is ours until the CAS publishes it.
            unsafe { set_next(b, head) };
            // Release: the link write above is visible to the owner's Acquire swap.
            match self
                .0
                .compare_exchange_weak(head, b, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    /// Takes every block pushed so far and links them in front of `onto` (the
    /// owner's own list). Returns the new head of that list and how many
    /// blocks were taken; `(onto, 0)` when the stack was empty. Owner only.
    ///
    /// At most `limit` distinct blocks can be on the stack (the page's carved
    /// blocks): a longer chain means a block was pushed twice and the list
    /// loops, and the walk stops there and returns `None` rather than loop
    /// forever; the caller reports it.
    #[inline(always)]
    pub(crate) fn take_all(&self, onto: *mut Block, limit: u32) -> Option<(*mut Block, u32)> {
        if self.is_empty() {
            return Some((onto, 0));
        }
        // Acquire: the pushers' link writes (Release CAS) are visible to us.
        let head = self.0.swap(ptr::null_mut(), Ordering::Acquire);
        if head.is_null() {
            return Some((onto, 0));
        }
        let mut n = 1;
        let mut tail = head;
        // SAFETY: every block on the stack was pushed with a valid link and is
        // ours now (push's contract); the chain ends in the null head the first
        // pusher saw after the previous swap, unless a block was pushed twice.
        unsafe {
            loop {
                let next = next_of(tail);
                if next.is_null() {
                    break;
                }
                if n >= limit {
                    return None;
                }
                tail = next;
                n += 1;
            }
            set_next(tail, onto);
        }
        Some((head, n))
    }
}

/// One bit per page of a segment: "this page may have blocks on its
/// [`ThreadFreeStack`]". A hint for the owner, never the only way a free is
/// found (see the module docs).
#[repr(transparent)]
pub(crate) struct HintBits(AtomicU64);

impl HintBits {
    /// No bit set. Segments start zeroed, which is the same state, so only
    /// the loom models need this.
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        HintBits(AtomicU64::new(0))
    }

    /// Flags the page(s) of `bit`. A freer calls this before pushing: after
    /// the push the page may be freed and its segment released at once.
    #[inline(always)]
    pub(crate) fn set(&self, bit: u64) {
        // The relaxed test skips the RMW (and its cache-line write) for all but
        // the first free of a burst into one page.
        if self.0.load(Ordering::Relaxed) & bit == 0 {
            self.0.fetch_or(bit, Ordering::Release);
        }
    }

    /// Whether any bit looks set: a relaxed peek before [`take`](Self::take).
    #[inline(always)]
    pub(crate) fn any(&self) -> bool {
        self.0.load(Ordering::Relaxed) != 0
    }

    /// Clears the bitmap and returns the bits that were set. Owner only.
    #[inline(always)]
    pub(crate) fn take(&self) -> u64 {
        self.0.swap(0, Ordering::Acquire)
    }

    /// Clears the bitmap without looking: for a new owner, which collects every
    /// page anyway.
    #[inline(always)]
    pub(crate) fn clear(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

// --- Batches of remote frees ---------------------------------------------

/// Most blocks in one batch.
pub(crate) const BATCH_BLOCKS: u32 = 64;
/// A batch is handed over as soon as its blocks add up to this many bytes,
/// so that little memory is withheld from its owner.
pub(crate) const BATCH_BYTES: usize = 32 * 1024;
/// Destinations a thread gathers batches for at once.
pub(crate) const OUT_SLOTS: usize = 8;

/// Tag bit in a chain block's link (links are at least 8-aligned): the block
/// carries an array of other blocks of its batch, its count in the third
/// word and the blocks from the fourth word on.
const ARRAY: usize = 2;
/// Every tag bit a link may carry.
const TAGS: usize = 7;
/// Words of a carrier before its array: link, freed mark, count.
pub(crate) const ARRAY_AT: usize = 3;

/// Reads word `i` (2 or more) of block `b`.
///
/// # Safety
/// `b` is a valid block of more than `i` words, whose word `i` was written
/// before (happens-before) this.
#[inline(always)]
unsafe fn word(b: *const Block, i: usize) -> usize {
    #[cfg(not(loom))]
    // SAFETY: per the contract.
    unsafe {
        *b.cast::<usize>().add(i)
    }
    #[cfg(loom)]
    // SAFETY: per the contract; loom checks the ordering.
    unsafe {
        (*b).words[i - 2].with(|p| *p)
    }
}

/// Writes word `i` (2 or more) of block `b`.
///
/// # Safety
/// The caller has exclusive access to the block `b`, of more than `i` words.
#[inline(always)]
unsafe fn set_word(b: *mut Block, i: usize, v: usize) {
    #[cfg(not(loom))]
    // SAFETY: per the contract.
    unsafe {
        *b.cast::<usize>().add(i) = v;
    }
    #[cfg(loom)]
    // SAFETY: per the contract; loom checks the exclusivity.
    unsafe {
        (*b).words[i - 2].with_mut(|p| *p = v);
    }
}

/// Blocks one thread gathers for one destination heap: a chain through
/// their first words of *carriers*, blocks of four words or more that also
/// hold, from their fourth word on, the addresses of blocks that come after
/// them (so the owner loads those independently, not one after the other);
/// blocks too small to carry anything when no carrier has room go on the
/// chain themselves. Plain memory of the gathering thread.
#[derive(Clone, Copy)]
pub(crate) struct Batch {
    first: *mut Block,
    /// The first block added, the end of the chain: a push links it to the
    /// inbox's head.
    last: *mut Block,
    /// The tag of `last`'s link, which a push keeps.
    last_tag: usize,
    count: u32,
    bytes: usize,
    /// The chain block gathering addresses, how many it holds and how many
    /// more it can.
    carrier: *mut Block,
    carried: u32,
    room: u32,
}

/// A batch taken out of its [`Batch`], to push on an [`Inbox`] or to walk
/// with [`for_each_block`]: a chain through the blocks' first words from
/// `first` to `last` (whose link is null).
#[derive(Clone, Copy)]
pub(crate) struct Chain {
    pub(crate) first: *mut Block,
    last: *mut Block,
    last_tag: usize,
}

impl Chain {
    /// Whether it holds no block.
    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_null()
    }
}

impl Batch {
    /// No block.
    pub(crate) const EMPTY: Batch = Batch {
        first: ptr::null_mut(),
        last: ptr::null_mut(),
        last_tag: 0,
        count: 0,
        bytes: 0,
        carrier: ptr::null_mut(),
        carried: 0,
        room: 0,
    };

    /// Adds `b`, a block of `bytes` bytes. Returns whether the batch is now
    /// full (it must then be handed over before anything is added).
    ///
    /// # Safety
    /// `b` is a block the caller gives up, which stays valid until the batch
    /// is handed over and taken.
    #[inline(always)]
    pub(crate) unsafe fn add(&mut self, b: *mut Block, bytes: usize) -> bool {
        if self.room > 0 {
            // SAFETY: the carrier is ours until the batch is handed over, and
            // has room for this word; its count word too.
            unsafe {
                set_word(
                    self.carrier,
                    ARRAY_AT + self.carried as usize,
                    b as usize ^ link_mask(self.carrier),
                );
                self.carried += 1;
            }
            self.room -= 1;
            self.count += 1;
            self.bytes += bytes;
            return self.count >= BATCH_BLOCKS || self.bytes >= BATCH_BYTES;
        }
        // A block that can carry addresses goes on the chain as a carrier;
        // one too small, only when no carrier has room.
        let mut tag = 0;
        let words = bytes / core::mem::size_of::<usize>();
        if words > ARRAY_AT {
            self.seal();
            tag = ARRAY;
            self.carrier = b;
            self.carried = 0;
            self.room = (words - ARRAY_AT).min(BATCH_BLOCKS as usize) as u32;
        }
        // SAFETY: per the contract, the block is ours until handed over.
        unsafe { set_next(b, self.first.wrapping_byte_add(tag)) };
        if self.first.is_null() {
            self.last = b;
            self.last_tag = tag;
        }
        self.first = b;
        self.count += 1;
        self.bytes += bytes;
        self.count >= BATCH_BLOCKS || self.bytes >= BATCH_BYTES
    }

    /// Writes the count of the carrier gathering addresses, if any, which
    /// takes no more.
    #[inline(always)]
    fn seal(&mut self) {
        if !self.carrier.is_null() {
            // SAFETY: the carrier is a block of this batch, ours until the
            // batch is handed over; it has a third word.
            unsafe { set_word(self.carrier, 2, self.carried as usize) };
        }
    }

    /// Takes the blocks out (an empty chain if none). The batch is empty
    /// afterwards.
    #[inline(always)]
    pub(crate) fn take(&mut self) -> Chain {
        self.seal();
        let chain = Chain {
            first: self.first,
            last: self.last,
            last_tag: self.last_tag,
        };
        *self = Batch::EMPTY;
        chain
    }
}

/// A thread's outgoing batches, one per destination heap (by address).
/// Plain memory, used by its thread only.
pub(crate) struct Outbox {
    /// The destination heap of each slot; a slot keeps its destination after
    /// its batch is handed over, so the next free there finds it again.
    dest: [usize; OUT_SLOTS],
    /// Where each destination's inbox is.
    inbox: [*const Inbox; OUT_SLOTS],
    batch: [Batch; OUT_SLOTS],
    /// Bit i: slot i holds blocks.
    pending: u32,
    /// Bit i: slot i's destination refused its last batch (its inbox was
    /// closed: the heap's thread exited).
    refused: u32,
    /// The destination of the last block batched, and its slot: most frees
    /// go where the one before went. 0 when unknown; never a refused slot.
    last_dest: usize,
    last_slot: usize,
    /// The slot to hand over and reuse next when every slot holds blocks.
    victim: u32,
}

impl Outbox {
    /// No batch.
    pub(crate) const EMPTY: Outbox = Outbox {
        dest: [0; OUT_SLOTS],
        inbox: [ptr::null(); OUT_SLOTS],
        batch: [Batch::EMPTY; OUT_SLOTS],
        pending: 0,
        refused: 0,
        last_dest: 0,
        last_slot: 0,
        victim: 0,
    };

    /// Whether some slot holds blocks.
    #[inline(always)]
    pub(crate) fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// The slot gathering for `dest`: `Ok` with its own, or with one that
    /// held no block (now set to `dest` and `inbox`); `Err` with a slot to
    /// hand over first (round robin) when every slot holds blocks for other
    /// destinations, then to [`claim`](Self::claim).
    #[inline(always)]
    pub(crate) fn slot(&mut self, dest: usize, inbox: *const Inbox) -> Result<usize, usize> {
        if let Some(i) = self.dest.iter().position(|&d| d == dest) {
            return Ok(i);
        }
        let free = !self.pending & ((1 << OUT_SLOTS) - 1);
        if free == 0 {
            let v = self.victim as usize % OUT_SLOTS;
            self.victim = self.victim.wrapping_add(1);
            return Err(v);
        }
        let i = free.trailing_zeros() as usize % OUT_SLOTS;
        self.claim(i, dest, inbox);
        Ok(i)
    }

    /// The slot of the last block batched, if it was for `dest`: a slot
    /// that needs no search and was not refused.
    #[inline(always)]
    pub(crate) fn last_slot_for(&self, dest: usize) -> Option<usize> {
        (self.last_dest == dest).then_some(self.last_slot)
    }

    /// Remembers slot `i` (not refused) as [`last_slot_for`](Self::last_slot_for)'s.
    #[inline(always)]
    pub(crate) fn set_last(&mut self, i: usize, dest: usize) {
        self.last_dest = dest;
        self.last_slot = i % OUT_SLOTS;
    }

    /// Gives slot `i`, which holds no block, to `dest`.
    #[inline(always)]
    pub(crate) fn claim(&mut self, i: usize, dest: usize, inbox: *const Inbox) {
        debug_assert!(self.pending & (1 << i) == 0);
        self.refused &= !(1 << i);
        if self.last_slot == i {
            self.last_dest = 0;
        }
        self.dest[i % OUT_SLOTS] = dest;
        self.inbox[i % OUT_SLOTS] = inbox;
    }

    /// Adds `b` (of `bytes` bytes) to slot `i`'s batch; returns whether the
    /// batch is full.
    ///
    /// # Safety
    /// As for [`Batch::add`]; `i` came from [`slot`](Self::slot).
    #[inline(always)]
    pub(crate) unsafe fn add(&mut self, i: usize, b: *mut Block, bytes: usize) -> bool {
        self.pending |= 1 << i;
        // SAFETY: per the contract.
        unsafe { self.batch[i % OUT_SLOTS].add(b, bytes) }
    }

    /// Takes slot `i`'s batch out (empty if none) with its destination's
    /// inbox. The slot keeps its destination.
    pub(crate) fn take(&mut self, i: usize) -> (Chain, *const Inbox) {
        let i = i % OUT_SLOTS;
        self.pending &= !(1 << i);
        (self.batch[i].take(), self.inbox[i])
    }

    /// Whether slot `i`'s destination refused its last batch.
    #[inline(always)]
    pub(crate) fn was_refused(&self, i: usize) -> bool {
        self.refused & (1 << i) != 0
    }

    /// Records whether slot `i`'s destination refused its last batch.
    #[inline(always)]
    pub(crate) fn set_refused(&mut self, i: usize, refused: bool) {
        if refused {
            self.refused |= 1 << i;
            if self.last_slot == i {
                self.last_dest = 0;
            }
        } else {
            self.refused &= !(1 << i);
        }
    }

    /// The first slot holding blocks, if any.
    pub(crate) fn first_pending(&self) -> Option<usize> {
        (self.pending != 0).then(|| self.pending.trailing_zeros() as usize % OUT_SLOTS)
    }
}

/// The sentinel head of a closed inbox: never a block's address.
#[inline(always)]
fn closed() -> *mut Block {
    core::ptr::NonNull::<Block>::dangling().as_ptr()
}

/// A heap's inbox of batches (see the module docs): an MPSC stack any thread
/// pushes whole batches on and only the owner empties, all at once. Alone on
/// its cache line, since every thread that hands batches over writes it.
#[repr(C, align(64))]
pub(crate) struct Inbox(AtomicPtr<Block>);

impl Inbox {
    /// A closed inbox: what a heap slot starts with, until a thread owns it.
    #[cfg(not(loom))]
    pub(crate) const fn new_closed() -> Self {
        Inbox(AtomicPtr::new(
            core::ptr::NonNull::<Block>::dangling().as_ptr(),
        ))
    }

    /// A closed inbox (loom's atomics have no `const` constructor).
    #[cfg(loom)]
    pub(crate) fn new_closed() -> Self {
        Inbox(AtomicPtr::new(closed()))
    }

    /// Whether no batch waits (or the inbox is closed): a relaxed peek for
    /// the owner's slow path.
    #[inline(always)]
    pub(crate) fn is_empty(&self) -> bool {
        let head = self.0.load(Ordering::Relaxed);
        head.is_null() || head == closed()
    }

    /// Whether the inbox is closed (its heap has no thread): a relaxed peek.
    #[inline(always)]
    pub(crate) fn is_closed(&self) -> bool {
        self.0.load(Ordering::Relaxed) == closed()
    }

    /// Pushes `batch`, with one CAS in the common case. Returns false, and
    /// keeps nothing, if the inbox is closed: the batch is then the caller's
    /// again, a list ending in null, to walk with [`for_each_block`].
    ///
    /// # Safety
    /// `batch` holds blocks that stay valid until the owner takes them; on
    /// success the caller gives up all access to them.
    #[inline]
    pub(crate) unsafe fn push(&self, batch: Chain) -> bool {
        let mut head = self.0.load(Ordering::Relaxed);
        loop {
            if head == closed() {
                // The batch stays the caller's, to walk on its own: an earlier
                // attempt may have linked it to a head that the owner has
                // taken (and is settling) since.
                // SAFETY: the batch is ours; the CAS never published it.
                unsafe {
                    set_next(
                        batch.last,
                        ptr::null_mut::<Block>().wrapping_byte_add(batch.last_tag),
                    )
                };
                return false;
            }
            // SAFETY: the batch is ours until the CAS publishes it.
            unsafe { set_next(batch.last, head.wrapping_byte_add(batch.last_tag)) };
            // Release: the batch's links (and the link above) are visible to
            // the owner's Acquire swap.
            match self.0.compare_exchange_weak(
                head,
                batch.first,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(h) => head = h,
            }
        }
    }

    /// Takes every batch pushed so far; null when none. Owner of an open
    /// inbox only. Walk the result with [`for_each_block`].
    #[inline]
    pub(crate) fn take(&self) -> *mut Block {
        if self.is_empty() {
            return ptr::null_mut();
        }
        // Acquire: the pushers' writes (Release CAS) are visible to us.
        let head = self.0.swap(ptr::null_mut(), Ordering::Acquire);
        debug_assert!(head != closed(), "take from a closed inbox");
        head
    }

    /// Closes the inbox: every later push fails. Returns the batches pushed
    /// before (null when none, or when it was closed already). The owner, as
    /// it gives the heap up.
    pub(crate) fn close(&self) -> *mut Block {
        // Acquire: as in `take`.
        let head = self.0.swap(closed(), Ordering::Acquire);
        if head == closed() {
            ptr::null_mut()
        } else {
            head
        }
    }

    /// Opens a closed inbox for the heap slot's new owner. Nothing waits in
    /// a closed inbox, so nothing is lost.
    pub(crate) fn reopen(&self) {
        let old = self.0.swap(ptr::null_mut(), Ordering::Relaxed);
        debug_assert!(old == closed(), "reopen of an open inbox");
    }
}

/// Calls `f` on every block of the list `list` (as [`Inbox::take`] or
/// [`Inbox::close`] return it, or a refused [`Chain`]'s first block),
/// reading the link of a block (and the addresses a carrier holds) before
/// `f` gets it, so `f` may reuse or free it. Before reading a carrier's
/// addresses it asks `room` how many words past its third the carrier has
/// (0 if it is not a batched block at all: `f` then reports it), and reads
/// no more. A list made cyclic by a block pushed twice would be walked
/// forever: `f` must stop that (`remote_batch::settle` aborts on a block that
/// is not marked as batched, which a block it settled before no longer is).
///
/// # Safety
/// `list` came from an inbox this thread took it from (or a batch of its
/// own that was refused), and every block on it is given to `f` alone.
pub(crate) unsafe fn for_each_block(
    mut b: *mut Block,
    mut room: impl FnMut(*mut Block) -> usize,
    mut f: impl FnMut(*mut Block),
) {
    while !b.is_null() {
        // SAFETY: the batches were pushed with their links written
        // (Release), and we took them (Acquire); each link and array is read
        // before `f` may reuse its block.
        let next = unsafe { next_of(b) };
        let tag = next as usize & TAGS;
        let next = next.wrapping_byte_sub(tag);
        // The blocks to give `f`: `b`, then those it carries.
        let mut buf = [core::mem::MaybeUninit::<*mut Block>::uninit(); BATCH_BLOCKS as usize];
        buf[0].write(b);
        let mut n = 1;
        if tag & ARRAY != 0 {
            prefetch(next);
            // SAFETY: as above; `room` vouches for the words read.
            let k = unsafe { word(b, 2) }
                .min(room(b))
                .min(BATCH_BLOCKS as usize - 1);
            let mask = link_mask(b);
            for j in 0..k {
                // SAFETY: as above.
                let p = (unsafe { word(b, ARRAY_AT + j) } ^ mask) as *mut Block;
                prefetch_w(p);
                // In bounds: k < BATCH_BLOCKS.
                buf[(1 + j) % BATCH_BLOCKS as usize].write(p);
            }
            n += k;
        }
        for p in &buf[..n] {
            // SAFETY: the first `n` were written above.
            f(unsafe { p.assume_init() });
        }
        b = next;
    }
}

/// Asks the CPU to start loading `p` (a hint: any address will do).
#[inline(always)]
fn prefetch(p: *const Block) {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    #[allow(unused_unsafe)] // safe in newer toolchains
    // SAFETY: a prefetch never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p.cast(), core::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(all(target_arch = "x86_64", not(loom))))]
    let _ = p;
}

/// [`prefetch`] with the intent to write (the owner writes every block it
/// settles).
#[inline(always)]
fn prefetch_w(p: *const Block) {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    #[allow(unused_unsafe)] // safe in newer toolchains
    // SAFETY: a prefetch never faults, whatever the address.
    unsafe {
        core::arch::asm!("prefetchw [{}]", in(reg) p, options(nostack, preserves_flags, readonly))
    };
    #[cfg(not(all(target_arch = "x86_64", not(loom))))]
    let _ = p;
}
