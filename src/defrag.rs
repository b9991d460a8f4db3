//! Cooperative defragmentation: segalloc tells the owner of a block whether
//! moving it would help empty a page, and places the moved block in the
//! densest pages of its class. In Rust the owner of a `Box`, `Vec`, `String`
//! or map may move its data whenever it likes; a long-lived cache that lost
//! most of its entries can so give back the pages its survivors are
//! scattered over (Redis's "active defragmentation" does this over jemalloc).
//!
//! - [`should_move`]: whether the block sits in a page worth emptying (at
//!   most half of its blocks live) that is not the page currently serving
//!   new blocks of its class. No lock, no walk: the page is found by masking
//!   the address, and its count of live blocks read with a relaxed load, so
//!   any thread may ask about any block (the answer is approximate while the
//!   page's owner is allocating from it).
//! - [`alloc_dense`] / [`move_block`]: allocate for a move, in the current
//!   page of the class if it is more than half full (or filling from fresh
//!   memory), else the fullest such page near the head of the class's queue,
//!   else a fresh page; never in a page worth emptying.
//! - [`Relocate`] and [`relocate`]: move a `Box<T>`, `Box<[T]>`, `Box<str>`,
//!   `Vec<T>` or `String` only when [`should_move`] picks it.
//! - [`MapPass`]: an incremental pass over a `HashMap`, `BTreeMap` (or, with
//!   the `hashbrown` feature, a `hashbrown::HashMap` or `HashTable`)
//!   relocating its values, in steps bounded by a [`Budget`] of entries or
//!   time.
//!
//! Moved blocks come from the calling thread's heap; the old ones are freed
//! as any free is (a page of another thread's heap is emptied once that
//! thread collects its frees, on its next slow path or
//! [`collect`](crate::collect)). Large blocks (above
//! [`LARGE_THRESHOLD`](crate::LARGE_THRESHOLD)) and blocks of first-class
//! heaps ([`Heap`](crate::Heap)) are never picked.
//!
//! ```
//! # #[global_allocator] static G: segalloc::SegAlloc = segalloc::SegAlloc;
//! use segalloc::defrag::{Budget, MapPass};
//! use std::collections::HashMap;
//!
//! let mut cache: HashMap<u64, Vec<u8>> = (0..10_000).map(|i| (i, vec![i as u8; 100])).collect();
//! cache.retain(|k, _| k % 10 == 0); // 90% gone, survivors scattered
//! let mut pass = MapPass::new();
//! loop {
//!     // Between requests: at most 256 entries per step.
//!     let step = pass.step(&mut cache, Budget::entries(256));
//!     if step.finished {
//!         assert!(step.pass_moved > 0);
//!         break;
//!     }
//! }
//! segalloc::collect(); // give the emptied pages back
//! assert!(cache.iter().all(|(k, v)| v.len() == 100 && v[0] == *k as u8));
//! ```

use crate::page::{self, Page};
use crate::segment::{registry, segment_of, Segment};
use crate::thread;
use core::alloc::Layout;
use core::marker::PhantomData;
use core::ptr;
use core::sync::atomic::{AtomicU8, Ordering};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

mod maps;
mod moving;

pub(crate) use moving::malloc_dense;
use moving::move_sparse;

/// Whether moving the live block at `ptr` would help empty its page: the
/// page is a small-block page of segalloc's global heaps whose blocks are at
/// most half live, and it is not the page serving new blocks of its class.
/// False for null, for large blocks and for blocks of first-class heaps.
///
/// Costs a few loads (no lock, no walk of the page); safe to call from any
/// thread about any thread's block. For another thread's block the answer
/// may be out of date by the time it returns.
///
/// # Safety
/// `ptr` is null or a live block returned by segalloc (its start).
///
/// ```
/// # #[global_allocator] static G: segalloc::SegAlloc = segalloc::SegAlloc;
/// let b = Box::new(7u64);
/// // SAFETY: a live block of the global allocator, which is segalloc.
/// let m = unsafe { segalloc::defrag::should_move(&*b as *const u64 as *const u8) };
/// assert!(!m); // it came from the current page of its class
/// ```
#[inline]
pub unsafe fn should_move(ptr: *const u8) -> bool {
    // SAFETY: per the contract (null is not passed on).
    !ptr.is_null() && unsafe { sparse_page_of(ptr) }.is_some()
}

/// [`should_move`]'s answer for a live block `ptr` (not null) of segalloc,
/// with what it found on the way when the block should move: its segment
/// and its page, which the move reuses rather than finding them again.
///
/// # Safety
/// `ptr` is a live block returned by segalloc (its start).
#[inline(always)]
unsafe fn sparse_page_of(ptr: *const u8) -> Option<(*mut Segment, *mut Page)> {
    let seg = segment_of(ptr);
    // A large block, or a pointer that is not segalloc's: nothing to move
    // (and no header to read).
    if registry::kind(seg) != registry::SMALL {
        return None;
    }
    // SAFETY: `ptr` is in a small segment of ours, so its header is valid;
    // `private` does not change while a block of the segment is live, and
    // the segment gives the block's page, which stays in use with it.
    unsafe {
        if (*seg).private {
            return None;
        }
        let page = (*seg).page_of(ptr);
        let (used, reserved, current) = page::occupancy(page);
        (!current && page::sparse(used, reserved)).then_some((seg, page))
    }
}

/// Allocates a block for `layout` in the densest pages of its class (see
/// the module docs): the allocation a move should use. A large layout gets
/// an ordinary large block. Free it as any block of segalloc (through the
/// global allocator when segalloc is it). Null when out of memory.
///
/// # Safety
/// As [`GlobalAlloc::alloc`](core::alloc::GlobalAlloc::alloc): `layout` has
/// a non-zero size.
pub unsafe fn alloc_dense(layout: Layout) -> *mut u8 {
    malloc_dense(layout.size(), layout.align(), false)
}

/// Moves the live block `ptr` of `layout` into a dense page if
/// [`should_move`] picks it, copying its contents and freeing it. Returns
/// the address of the block to use from now on: the new one, or `ptr` when
/// it stays (not worth moving, or out of memory).
///
/// # Safety
/// `ptr` is a live block of segalloc allocated (or last resized) with
/// `layout`, and nothing refers into it (after a move it is freed).
///
/// ```
/// use core::alloc::Layout;
/// let layout = Layout::from_size_align(48, 8).unwrap();
/// // SAFETY: a block of segalloc of `layout`, moved then freed once.
/// unsafe {
///     let p = segalloc::defrag::alloc_dense(layout);
///     p.write(42);
///     let p = segalloc::defrag::move_block(p, layout);
///     assert_eq!(*p, 42);
///     core::alloc::GlobalAlloc::dealloc(&segalloc::SegAlloc, p, layout);
/// }
/// ```
pub unsafe fn move_block(ptr: *mut u8, layout: Layout) -> *mut u8 {
    // SAFETY: per the contract.
    unsafe { move_sparse(ptr, layout, layout.size()) }
}

/// Whether the global allocator is segalloc, found once: a block of the
/// global allocator lies in a segment of the calling thread's heap exactly
/// when segalloc handed it out. Inline: a pass asks for every value.
#[inline]
fn global_is_segalloc() -> bool {
    match GLOBAL_IS_SEGALLOC.load(Ordering::Relaxed) {
        YES => true,
        NO => false,
        _ => probe_global(),
    }
}

/// Not known yet.
const UNKNOWN: u8 = 0;
/// The global allocator is segalloc.
const YES: u8 = 1;
/// It is not.
const NO: u8 = 2;
/// What [`global_is_segalloc`] found: `UNKNOWN`, `YES` or `NO`.
static GLOBAL_IS_SEGALLOC: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Finds out, once, for [`global_is_segalloc`].
#[cold]
#[inline(never)]
fn probe_global() -> bool {
    let probe = Box::new(0u64);
    let seg = segment_of((&*probe as *const u64).cast());
    let ours = thread::with_heap(|h| h.owns(seg)).unwrap_or(false);
    drop(probe);
    GLOBAL_IS_SEGALLOC.store(if ours { YES } else { NO }, Ordering::Relaxed);
    ours
}

/// Moves the block at `ptr` of the global allocator, of `layout`, with its
/// first `init` bytes initialised, if [`should_move`] picks it; returns the
/// new address. `None` (and no move) for a zero size or when the global
/// allocator is not segalloc.
///
/// # Safety
/// `ptr` is a live block of the global allocator of `layout`, owned by the
/// caller with nothing borrowing it, and `init <= layout.size()`.
#[inline]
unsafe fn relocate_block(ptr: *mut u8, layout: Layout, init: usize) -> Option<*mut u8> {
    if layout.size() == 0 || !global_is_segalloc() {
        return None;
    }
    // SAFETY: per the contract; the global allocator is segalloc, so the
    // block is one of ours.
    let q = unsafe { move_sparse(ptr, layout, init) };
    (q != ptr).then_some(q)
}

/// Heap data that can move into dense pages when [`should_move`] picks it.
///
/// Implement it for your own types by relocating their fields:
///
/// ```
/// # #[global_allocator] static G: segalloc::SegAlloc = segalloc::SegAlloc;
/// use segalloc::defrag::Relocate;
/// struct Entry { name: String, data: Vec<u32> }
/// impl Relocate for Entry {
///     fn relocate(&mut self) -> bool {
///         // `|` rather than `||`: both fields get their chance.
///         self.name.relocate() | self.data.relocate()
///     }
/// }
/// let mut e = Entry { name: "x".into(), data: vec![1, 2, 3] };
/// e.relocate();
/// assert_eq!((e.name.as_str(), e.data.as_slice()), ("x", &[1, 2, 3][..]));
/// ```
pub trait Relocate {
    /// Moves the value's heap block (not what its elements own) into a
    /// dense page if [`should_move`] picks it; returns whether it moved.
    /// Does nothing, and returns false, when the global allocator is not
    /// segalloc.
    fn relocate(&mut self) -> bool;
}

/// Moves `value`'s heap data into a dense page when it sits in a page worth
/// emptying (see [`Relocate`]); returns whether it moved. Exclusive access
/// means nothing borrows the data, and every Rust value may be moved
/// bytewise, as `Box` and `Vec` already do.
///
/// ```
/// # #[global_allocator] static G: segalloc::SegAlloc = segalloc::SegAlloc;
/// let mut boxes: Vec<Box<[u8; 64]>> = (0..4096).map(|i| Box::new([i as u8; 64])).collect();
/// let mut i = 0;
/// boxes.retain(|_| { i += 1; i % 16 == 0 }); // pages left 1/16 live
/// let moved = boxes.iter_mut().map(|b| segalloc::defrag::relocate(b) as usize).sum::<usize>();
/// assert!(moved > 0);
/// assert!(boxes.iter().enumerate().all(|(k, b)| b[0] == (16 * k + 15) as u8));
/// ```
pub fn relocate<R: Relocate + ?Sized>(value: &mut R) -> bool {
    value.relocate()
}

impl<T> Relocate for Box<T> {
    fn relocate(&mut self) -> bool {
        let layout = Layout::new::<T>();
        let p: *mut T = &mut **self;
        // SAFETY: a live block of the global allocator of `layout`, ours
        // through `&mut self`.
        match unsafe { relocate_block(p.cast(), layout, layout.size()) } {
            Some(q) => {
                // SAFETY: the old block was freed by the move: overwrite the
                // box without dropping it. `q` holds the value and was
                // allocated with the box's layout by the global allocator.
                unsafe { ptr::write(self, Box::from_raw(q.cast::<T>())) };
                true
            }
            None => false,
        }
    }
}

impl<T> Relocate for Box<[T]> {
    fn relocate(&mut self) -> bool {
        let layout = Layout::for_value::<[T]>(self);
        let len = self.len();
        let p = self.as_mut_ptr();
        // SAFETY: as for `Box<T>`.
        match unsafe { relocate_block(p.cast(), layout, layout.size()) } {
            Some(q) => {
                // SAFETY: as for `Box<T>`; the slice keeps its length.
                unsafe {
                    let s = ptr::slice_from_raw_parts_mut(q.cast::<T>(), len);
                    ptr::write(self, Box::from_raw(s));
                }
                true
            }
            None => false,
        }
    }
}

impl Relocate for Box<str> {
    fn relocate(&mut self) -> bool {
        let len = self.len();
        let layout = Layout::for_value::<str>(self);
        let p = self.as_mut_ptr();
        // SAFETY: as for `Box<T>`.
        match unsafe { relocate_block(p, layout, len) } {
            Some(q) => {
                // SAFETY: as for `Box<[T]>`; the bytes copied are the same
                // UTF-8.
                unsafe {
                    let s = ptr::slice_from_raw_parts_mut(q, len) as *mut str;
                    ptr::write(self, Box::from_raw(s));
                }
                true
            }
            None => false,
        }
    }
}

impl<T> Relocate for Vec<T> {
    fn relocate(&mut self) -> bool {
        let (len, cap) = (self.len(), self.capacity());
        let Ok(layout) = Layout::array::<T>(cap) else {
            return false;
        };
        let p = self.as_mut_ptr();
        // SAFETY: a vector's buffer is a block of the global allocator of
        // `Layout::array::<T>(capacity)` (none when that is zero-sized,
        // which `relocate_block` skips); its first `len` elements are
        // initialised. Ours through `&mut self`.
        match unsafe { relocate_block(p.cast(), layout, len * size_of::<T>()) } {
            Some(q) => {
                // SAFETY: the old buffer was freed by the move: overwrite the
                // vector without dropping it; `q` holds the `len` elements
                // and has the old buffer's layout.
                unsafe { ptr::write(self, Vec::from_raw_parts(q.cast::<T>(), len, cap)) };
                true
            }
            None => false,
        }
    }
}

impl Relocate for String {
    fn relocate(&mut self) -> bool {
        // SAFETY: the bytes move unchanged, so they stay UTF-8.
        unsafe { self.as_mut_vec() }.relocate()
    }
}

impl<T: Relocate> Relocate for Option<T> {
    fn relocate(&mut self) -> bool {
        self.as_mut().is_some_and(Relocate::relocate)
    }
}

/// How much one [`MapPass::step`] may do: a number of entries, a time, or
/// both (whichever runs out first). The time is checked every 32 entries,
/// so a step visits at least that many (or the rest of the map).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    entries: usize,
    time: Option<Duration>,
}

impl Budget {
    /// No bound: the step runs the pass to its end.
    pub const UNLIMITED: Budget = Budget {
        entries: usize::MAX,
        time: None,
    };

    /// At most `n` entries per step.
    pub const fn entries(n: usize) -> Budget {
        Budget {
            entries: n,
            time: None,
        }
    }

    /// About `d` per step.
    pub const fn time(d: Duration) -> Budget {
        Budget {
            entries: usize::MAX,
            time: Some(d),
        }
    }

    /// This budget, also bounded by `d`.
    pub const fn and_time(self, d: Duration) -> Budget {
        Budget {
            entries: self.entries,
            time: Some(d),
        }
    }
}

/// What one step of a pass did, handed to [`DefragMap::defrag_from`]: it
/// calls [`more`](Meter::more) before each entry and [`visit`](Meter::visit)
/// on each value.
#[derive(Debug)]
pub struct Meter {
    left: usize,
    deadline: Option<Instant>,
    visited: usize,
    moved: usize,
}

impl Meter {
    fn new(budget: Budget) -> Meter {
        Meter {
            left: budget.entries,
            deadline: budget.time.and_then(|d| Instant::now().checked_add(d)),
            visited: 0,
            moved: 0,
        }
    }

    /// Whether the budget allows one more entry.
    pub fn more(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        match self.deadline {
            Some(d) if self.visited % 32 == 0 && self.visited > 0 => Instant::now() < d,
            _ => true,
        }
    }

    /// Relocates `value` and counts the entry.
    pub fn visit<V: Relocate + ?Sized>(&mut self, value: &mut V) {
        self.left -= 1;
        self.visited += 1;
        self.moved += value.relocate() as usize;
    }

    /// How many entries the step may visit before the meter must be asked
    /// again (0: the budget is spent), as [`more`](Self::more) would answer
    /// entry by entry: a walk visits them without a check each, then
    /// reports with [`counted`](Self::counted).
    fn allowance(&mut self) -> usize {
        if !self.more() {
            return 0;
        }
        match self.deadline {
            // The time is next checked at the next multiple of 32 visits.
            Some(_) => self.left.min(32 - self.visited % 32),
            None => self.left,
        }
    }

    /// Counts `visited` entries (at most the last [`allowance`](Self::allowance)),
    /// `moved` of them moved.
    fn counted(&mut self, visited: usize, moved: usize) {
        self.left -= visited;
        self.visited += visited;
        self.moved += moved;
    }
}

/// A collection a [`MapPass`] can walk in steps, its position kept in a
/// `Cursor` between them (the collection may change in between).
pub trait DefragMap {
    /// Where the pass stands between steps; `Default` is the start.
    type Cursor: Default;

    /// Visits entries from `cursor` on, as long as `meter` allows, moving
    /// the cursor past them; returns true when it reached the end.
    fn defrag_from(&mut self, cursor: &mut Self::Cursor, meter: &mut Meter) -> bool;
}

/// The values of a hash map in iteration order; the cursor is the number of
/// entries visited, so a step skips that many first (hash maps offer no
/// cheaper way back to a position). Entries inserted or removed between
/// steps may shift the order: some values may be visited twice or missed
/// until the next pass, which is harmless.
impl<K, V: Relocate, S> DefragMap for HashMap<K, V, S> {
    type Cursor = usize;

    fn defrag_from(&mut self, pos: &mut usize, meter: &mut Meter) -> bool {
        maps::walk_from(self.values_mut(), pos, meter)
    }
}

/// The values of a B-tree map in key order; the cursor is the last key
/// visited, so a step starts after it in O(log n), and keys inserted or
/// removed between steps are no trouble.
impl<K: Ord + Clone, V: Relocate> DefragMap for BTreeMap<K, V> {
    type Cursor = Option<K>;

    fn defrag_from(&mut self, last: &mut Option<K>, meter: &mut Meter) -> bool {
        maps::btree_from(self, last, meter)
    }
}

/// As for `std`'s `HashMap`.
#[cfg(feature = "hashbrown")]
impl<K, V: Relocate, S> DefragMap for hashbrown::HashMap<K, V, S> {
    type Cursor = usize;

    fn defrag_from(&mut self, pos: &mut usize, meter: &mut Meter) -> bool {
        maps::walk_from(self.values_mut(), pos, meter)
    }
}

/// The entries of a `hashbrown::HashTable` in bucket order; the cursor is
/// the next bucket index, so a step starts where the last one stopped at no
/// cost (a `HashMap` has no such index, neither `std`'s nor hashbrown's, and
/// walks back to its position). Empty buckets on the way cost a control
/// byte each and do not count in the budget. Entries inserted or removed
/// between steps, or a resize, may make a step visit some entries twice or
/// miss some until the next pass, which is harmless.
///
/// Each entry is relocated whole: implement [`Relocate`] for the entry type
/// (for `(K, V)` entries, a struct of your own) relocating what may move.
#[cfg(feature = "hashbrown")]
impl<T: Relocate> DefragMap for hashbrown::HashTable<T> {
    type Cursor = usize;

    fn defrag_from(&mut self, next: &mut usize, meter: &mut Meter) -> bool {
        maps::table_from(self, next, meter)
    }
}

/// What a step of a [`MapPass`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Entries this step visited.
    pub visited: usize,
    /// Values this step moved.
    pub moved: usize,
    /// Whether this step finished the pass (the next step starts another).
    pub finished: bool,
    /// Entries visited by the pass so far, this step included.
    pub pass_visited: usize,
    /// Values moved by the pass so far, this step included.
    pub pass_moved: usize,
}

/// An incremental defragmentation pass over the values of a map `M` (see
/// [`DefragMap`]): each [`step`](MapPass::step) visits entries within its
/// [`Budget`], relocating the values [`should_move`] picks, and the map may
/// be used and changed between steps. Call [`collect`](crate::collect) after
/// a pass to give the emptied pages back at once (otherwise they go back
/// under the usual purge policy).
///
/// The map's own table is not moved (it is usually a large block), nor are
/// keys (a map does not hand out `&mut` keys).
pub struct MapPass<M: DefragMap + ?Sized> {
    cursor: M::Cursor,
    visited: usize,
    moved: usize,
    _map: PhantomData<fn(&mut M)>,
}

impl<M: DefragMap + ?Sized> Default for MapPass<M> {
    fn default() -> Self {
        MapPass {
            cursor: M::Cursor::default(),
            visited: 0,
            moved: 0,
            _map: PhantomData,
        }
    }
}

impl<M: DefragMap + ?Sized> MapPass<M> {
    /// A pass at the start of the map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Visits the next entries of `map` within `budget`.
    pub fn step(&mut self, map: &mut M, budget: Budget) -> Progress {
        let mut meter = Meter::new(budget);
        let finished = {
            let _moving = Moving::start();
            map.defrag_from(&mut self.cursor, &mut meter)
        };
        self.visited += meter.visited;
        self.moved += meter.moved;
        let progress = Progress {
            visited: meter.visited,
            moved: meter.moved,
            finished,
            pass_visited: self.visited,
            pass_moved: self.moved,
        };
        if finished {
            *self = Self::default();
        }
        progress
    }
}

/// The calling thread's heap is in a defragmentation step while this lives
/// (see `Heap::defrag_step`): its timed sub-page purge and its purge checks
/// on freed pages wait. Ended on drop, so a panic in a value's `relocate`
/// ends it too. Both ends take the heap's handshake with the background
/// purger, which reads the flag and whose work the end's check does.
struct Moving(*mut crate::heap::Heap);

impl Moving {
    fn start() -> Moving {
        let h = thread::heap();
        if thread::is_empty_heap(h) {
            return Moving(ptr::null_mut());
        }
        // SAFETY: the calling thread's own heap, not the empty one.
        unsafe { thread::owning(h, |heap| heap.defrag_step(true)) };
        Moving(h)
    }
}

impl Drop for Moving {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: as in `start`; a thread's heap lives as long as it.
            unsafe { thread::owning(self.0, |heap| heap.defrag_step(false)) };
        }
    }
}

/// A whole pass over `map` at once (see [`MapPass`]).
///
/// ```
/// # #[global_allocator] static G: segalloc::SegAlloc = segalloc::SegAlloc;
/// let mut m: std::collections::BTreeMap<u32, String> = (0..5000).map(|i| (i, i.to_string())).collect();
/// m.retain(|k, _| k % 8 == 0);
/// let first = segalloc::defrag::defrag_map(&mut m);
/// let second = segalloc::defrag::defrag_map(&mut m);
/// assert!(second.moved <= first.moved);
/// assert!(m.iter().all(|(k, v)| *v == k.to_string()));
/// ```
pub fn defrag_map<M: DefragMap + ?Sized>(map: &mut M) -> Progress {
    MapPass::<M>::new().step(map, Budget::UNLIMITED)
}
