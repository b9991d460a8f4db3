//! Typed pools: [`Pool<T>`] hands out [`PoolBox`]es of one type in O(1) and
//! takes them back in O(1), for programs that churn one kind of object.
//!
//! A pool is a first-class [`Heap`] plus a free list of `T`-sized slots: a
//! dropped `PoolBox` pushes its slot on the list (two stores), and the next
//! allocation pops it (two loads, a store), with no size-class lookup, no
//! owner check and no counting beyond the pool's own live count. Slots are
//! carved from the heap's pages when the list is empty; [`Pool::trim`] gives
//! the listed ones back to the heap, and dropping the pool frees everything.
//!
//! Like its heap, a pool is `Send` (when `T` is) but not `Sync`; a `PoolBox`
//! borrows its pool, so it stays on the pool's thread and cannot outlive it.

use crate::region::Heap;
use crate::Stats;
use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;
use core::mem::{align_of, size_of, ManuallyDrop};
use core::ops::{Deref, DerefMut};
use core::ptr::{self, NonNull};
use std::alloc::Layout;

/// A free slot: its first word links to the next.
struct Slot {
    next: *mut Slot,
}

/// A pool of `T`s. See the module docs.
///
/// ```
/// # #[global_allocator] static G: segalloc::SegAlloc = segalloc::SegAlloc;
/// #[derive(Debug, PartialEq)]
/// struct Node { key: u64, left: Option<u32>, right: Option<u32> }
///
/// let pool = segalloc::Pool::new();
/// let mut a = pool.alloc(Node { key: 1, left: None, right: None });
/// a.key += 1;
/// let b = pool.alloc(Node { key: 3, left: Some(0), right: None });
/// assert_eq!((a.key, b.key, pool.live()), (2, 3, 2));
/// drop(a); // its slot goes back on the pool's free list
/// let c = pool.alloc(Node { key: 4, left: None, right: None });
/// assert_eq!(pool.live(), 2);
/// assert_eq!(segalloc::PoolBox::into_inner(c).key, 4);
/// ```
pub struct Pool<T> {
    heap: Heap,
    /// Slots of freed objects, reused first.
    free: Cell<*mut Slot>,
    /// Objects handed out and not yet dropped.
    live: Cell<usize>,
    /// Slots on `free`.
    cached: Cell<usize>,
    _type: PhantomData<*const T>,
}

// SAFETY: the heap is `Send`; the free slots hold no `T`, and no `PoolBox`
// can exist while the pool moves (each borrows it), so the only `T`s that can
// travel with it are those a forgotten `PoolBox` left behind, which are never
// touched again: `T: Send` is more than needed, kept for plainness.
unsafe impl<T: Send> Send for Pool<T> {}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool::new()
    }
}

impl<T> fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("live", &self.live.get())
            .field("cached", &self.cached.get())
            .finish()
    }
}

impl<T> Pool<T> {
    /// The layout of a slot: a `T`, with room and alignment for a link.
    const SLOT: Layout = match Layout::from_size_align(
        if size_of::<T>() > size_of::<Slot>() {
            size_of::<T>()
        } else {
            size_of::<Slot>()
        },
        if align_of::<T>() > align_of::<Slot>() {
            align_of::<T>()
        } else {
            align_of::<Slot>()
        },
    ) {
        Ok(l) => l,
        Err(_) => panic!("a type too large for a pool"),
    };

    /// An empty pool; it takes memory at its first allocation.
    ///
    /// ```
    /// let pool: segalloc::Pool<[u8; 48]> = segalloc::Pool::new();
    /// assert_eq!(pool.live(), 0);
    /// ```
    pub fn new() -> Pool<T> {
        Pool {
            heap: Heap::new(),
            free: Cell::new(ptr::null_mut()),
            live: Cell::new(0),
            cached: Cell::new(0),
            _type: PhantomData,
        }
    }

    /// Moves `value` into the pool. Aborts through
    /// [`handle_alloc_error`](std::alloc::handle_alloc_error) when out of
    /// memory, as `Box::new` does; see [`try_alloc`](Pool::try_alloc).
    ///
    /// ```
    /// # #[global_allocator] static G: segalloc::SegAlloc = segalloc::SegAlloc;
    /// let pool = segalloc::Pool::new();
    /// let s = pool.alloc(String::from("pooled"));
    /// assert_eq!(s.len(), 6);
    /// ```
    #[inline]
    pub fn alloc(&self, value: T) -> PoolBox<'_, T> {
        match self.try_alloc(value) {
            Ok(b) => b,
            Err(_) => std::alloc::handle_alloc_error(Self::SLOT),
        }
    }

    /// Moves `value` into the pool, or hands it back when out of memory.
    ///
    /// ```
    /// let pool = segalloc::Pool::new();
    /// let b = pool.try_alloc(7u32).unwrap();
    /// assert_eq!(*b, 7);
    /// ```
    #[inline]
    pub fn try_alloc(&self, value: T) -> Result<PoolBox<'_, T>, T> {
        let slot: NonNull<T> = if size_of::<T>() == 0 {
            NonNull::dangling()
        } else {
            let head = self.free.get();
            if let Some(h) = NonNull::new(head) {
                // SAFETY: slots on the list are ours, each holding its link.
                self.free.set(unsafe { (*head).next });
                self.cached.set(self.cached.get() - 1);
                h.cast()
            } else {
                match NonNull::new(self.heap.alloc_block(Self::SLOT.size(), Self::SLOT.align())) {
                    Some(p) => p.cast(),
                    None => return Err(value),
                }
            }
        };
        // SAFETY: the slot is ours, sized and aligned for a `T`.
        unsafe { slot.as_ptr().write(value) };
        self.live.set(self.live.get() + 1);
        Ok(PoolBox {
            ptr: slot,
            pool: self,
        })
    }

    /// Objects alive (handed out and not dropped).
    pub fn live(&self) -> usize {
        self.live.get()
    }

    /// Free slots kept for reuse.
    pub fn cached(&self) -> usize {
        self.cached.get()
    }

    /// Gives the free slots back to the heap, so that emptied pages can go
    /// back to the OS. O(free slots).
    ///
    /// ```
    /// # #[global_allocator] static G: segalloc::SegAlloc = segalloc::SegAlloc;
    /// let pool = segalloc::Pool::new();
    /// let v: Vec<_> = (0..1000u64).map(|i| pool.alloc(i)).collect();
    /// drop(v);
    /// assert_eq!(pool.cached(), 1000);
    /// pool.trim();
    /// assert_eq!((pool.cached(), pool.stats().live_blocks()), (0, 0));
    /// ```
    pub fn trim(&self) {
        let mut s = self.free.replace(ptr::null_mut());
        while !s.is_null() {
            // SAFETY: slots on the list came from our heap with layout SLOT;
            // the link is read before the slot is freed.
            unsafe {
                let next = (*s).next;
                self.heap.free_block(s.cast(), Self::SLOT.size());
                s = next;
            }
        }
        self.cached.set(0);
    }

    /// The statistics of the pool's heap: free slots on the pool's list
    /// count there as live blocks, since the heap handed them out.
    pub fn stats(&self) -> Stats {
        self.heap.stats()
    }

    /// Takes a slot back from a dropped object.
    ///
    /// # Safety
    /// `slot` came from this pool and holds no live `T`.
    #[inline]
    unsafe fn give_back(&self, slot: NonNull<T>) {
        self.live.set(self.live.get() - 1);
        if size_of::<T>() == 0 {
            return;
        }
        let s = slot.as_ptr().cast::<Slot>();
        // SAFETY: per the contract; a slot has room and alignment for a link.
        unsafe { (*s).next = self.free.get() };
        self.free.set(s);
        self.cached.set(self.cached.get() + 1);
    }
}

/// An object in a [`Pool`]: derefs to `T`, and gives its slot back to the
/// pool when dropped.
pub struct PoolBox<'a, T> {
    ptr: NonNull<T>,
    pool: &'a Pool<T>,
}

impl<T> PoolBox<'_, T> {
    /// Moves the object out, giving its slot back to the pool.
    ///
    /// ```
    /// let pool = segalloc::Pool::new();
    /// let b = pool.alloc(vec![1, 2, 3]);
    /// assert_eq!(segalloc::PoolBox::into_inner(b), [1, 2, 3]);
    /// assert_eq!(pool.live(), 0);
    /// ```
    pub fn into_inner(b: Self) -> T {
        let b = ManuallyDrop::new(b);
        // SAFETY: the object is live; after the read its slot holds none, and
        // `b` is not dropped.
        unsafe {
            let v = b.ptr.as_ptr().read();
            b.pool.give_back(b.ptr);
            v
        }
    }
}

impl<T> Deref for PoolBox<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the object is live while the box is.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for PoolBox<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the object is live while the box is, and the box owns it.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for PoolBox<'_, T> {
    #[inline]
    fn drop(&mut self) {
        /// Gives the slot back even if `T`'s destructor panics.
        struct GiveBack<'p, T>(&'p Pool<T>, NonNull<T>);
        impl<T> Drop for GiveBack<'_, T> {
            fn drop(&mut self) {
                // SAFETY: the object was dropped (or its drop unwound).
                unsafe { self.0.give_back(self.1) }
            }
        }
        let _back = GiveBack(self.pool, self.ptr);
        // SAFETY: the object is live and dropped once, here.
        unsafe { ptr::drop_in_place(self.ptr.as_ptr()) };
    }
}

impl<T: fmt::Debug> fmt::Debug for PoolBox<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: fmt::Display> fmt::Display for PoolBox<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<T> AsRef<T> for PoolBox<'_, T> {
    fn as_ref(&self) -> &T {
        self
    }
}

impl<T> AsMut<T> for PoolBox<'_, T> {
    fn as_mut(&mut self) -> &mut T {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_zero_sized_types_take_none() {
        let pool = Pool::new();
        let a = pool.alloc(1u8);
        let pa = &*a as *const u8;
        drop(a);
        let b = pool.alloc(2u8);
        assert_eq!(&*b as *const u8, pa);
        assert_eq!(pool.cached(), 0);
        let z = Pool::new();
        let units: std::vec::Vec<_> = (0..10).map(|_| z.alloc(())).collect();
        assert_eq!((z.live(), z.stats().live_blocks()), (10, 0));
        drop(units);
        assert_eq!(z.live(), 0);
    }

    #[test]
    fn over_aligned_types() {
        #[repr(align(256))]
        struct A(u8);
        let pool = Pool::new();
        let v: std::vec::Vec<_> = (0..100).map(|i| pool.alloc(A(i))).collect();
        for (i, a) in v.iter().enumerate() {
            assert_eq!(&**a as *const A as usize % 256, 0);
            assert_eq!(a.0, i as u8);
        }
    }

    #[test]
    fn a_panicking_drop_still_returns_the_slot() {
        struct Bomb(#[allow(dead_code)] u64);
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("boom");
            }
        }
        let pool = Pool::new();
        let b = pool.alloc(Bomb(1));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(b)));
        assert!(r.is_err());
        assert_eq!((pool.live(), pool.cached()), (0, 1));
    }
}
