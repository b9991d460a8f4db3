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
//! Block links are plain memory. Under loom they are `loom::cell::UnsafeCell`s,
//! so that loom also checks that every link is read after it was written.

use crate::atomic::{AtomicPtr, AtomicU64, Ordering};
use core::ptr;

/// A free block: its first word links to the next free block.
#[repr(C)]
pub(crate) struct Block {
    #[cfg(not(loom))]
    pub(crate) next: *mut Block,
    #[cfg(loom)]
    next: loom::cell::UnsafeCell<*mut Block>,
}

#[cfg(loom)]
impl Block {
    /// A fake block for the loom models.
    pub(crate) fn new() -> Block {
        Block {
            next: loom::cell::UnsafeCell::new(ptr::null_mut()),
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

    /// The current head, for the owner's double-free check (`secure`): blocks
    /// on the stack stay valid until the owner takes them.
    #[cfg(all(feature = "secure", not(loom)))]
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
    #[inline(always)]
    pub(crate) fn take_all(&self, onto: *mut Block) -> (*mut Block, u32) {
        if self.is_empty() {
            return (onto, 0);
        }
        // Acquire: the pushers' link writes (Release CAS) are visible to us.
        let head = self.0.swap(ptr::null_mut(), Ordering::Acquire);
        if head.is_null() {
            return (onto, 0);
        }
        let mut n = 1;
        let mut tail = head;
        // SAFETY: every block on the stack was pushed with a valid link and is
        // ours now (push's contract); the chain ends in the null head the first
        // pusher saw after the previous swap.
        unsafe {
            loop {
                let next = next_of(tail);
                if next.is_null() {
                    break;
                }
                tail = next;
                n += 1;
            }
            set_next(tail, onto);
        }
        (head, n)
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
