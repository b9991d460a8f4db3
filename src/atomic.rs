//! The atomics every lock-free protocol in segalloc is written over.
//!
//! Under `--cfg loom` these are loom's model-checked atomics; otherwise they are
//! `core::sync::atomic`. Keeping the shim this thin means the code loom checks is
//! the code that ships.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::Ordering;
#[cfg(loom)]
pub(crate) use loom_loads::{AtomicPtr, AtomicU64, AtomicUsize};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// loom's atomics, except that `load` is a read-modify-write that writes back
/// what it read.
///
/// loom 0.7 remembers only the last access to an atomic for its partial-order
/// reduction, so when thread A loads, then thread B loads and does an RMW
/// (every CAS loop, and the hint bits' test-then-set), the race between A's
/// load and B's RMW is never seen and the interleavings where B's RMW comes
/// first are never run (tokio-rs/loom#392): the models would pass without
/// checking the concurrent cases at all. As an RMW, every load conflicts with
/// every access and all orders are explored (up to the preemption bound). The
/// price: a load reads the latest value in the order explored rather than an
/// older one that a relaxed load could also see; for one location that only
/// stands for an earlier interleaving, which is explored too.
#[cfg(loom)]
mod loom_loads {
    use loom::sync::atomic as l;
    use loom::sync::atomic::Ordering;

    /// The orderings of an RMW that stands for a load with `order`.
    fn rmw_orders(order: Ordering) -> (Ordering, Ordering) {
        (order, order)
    }

    macro_rules! int_atomic {
        ($name:ident, $int:ty) => {
            /// See the module docs.
            #[derive(Debug)]
            pub(crate) struct $name(l::$name);

            #[allow(dead_code)] // each model uses a part of the API
            impl $name {
                pub(crate) fn new(v: $int) -> Self {
                    $name(l::$name::new(v))
                }
                pub(crate) fn load(&self, order: Ordering) -> $int {
                    let (s, _) = rmw_orders(order);
                    self.0.fetch_or(0, s)
                }
                pub(crate) fn store(&self, v: $int, order: Ordering) {
                    self.0.store(v, order)
                }
                pub(crate) fn swap(&self, v: $int, order: Ordering) -> $int {
                    self.0.swap(v, order)
                }
                pub(crate) fn fetch_or(&self, v: $int, order: Ordering) -> $int {
                    self.0.fetch_or(v, order)
                }
                pub(crate) fn fetch_add(&self, v: $int, order: Ordering) -> $int {
                    self.0.fetch_add(v, order)
                }
                pub(crate) fn fetch_sub(&self, v: $int, order: Ordering) -> $int {
                    self.0.fetch_sub(v, order)
                }
                pub(crate) fn compare_exchange(
                    &self,
                    current: $int,
                    new: $int,
                    success: Ordering,
                    failure: Ordering,
                ) -> Result<$int, $int> {
                    self.0.compare_exchange(current, new, success, failure)
                }
                pub(crate) fn compare_exchange_weak(
                    &self,
                    current: $int,
                    new: $int,
                    success: Ordering,
                    failure: Ordering,
                ) -> Result<$int, $int> {
                    self.0.compare_exchange_weak(current, new, success, failure)
                }
            }
        };
    }

    int_atomic!(AtomicU64, u64);
    int_atomic!(AtomicUsize, usize);

    /// See the module docs.
    #[derive(Debug)]
    pub(crate) struct AtomicPtr<T>(l::AtomicPtr<T>);

    #[allow(dead_code)] // each model uses a part of the API
    impl<T> AtomicPtr<T> {
        pub(crate) fn new(p: *mut T) -> Self {
            AtomicPtr(l::AtomicPtr::new(p))
        }
        pub(crate) fn load(&self, order: Ordering) -> *mut T {
            let (s, f) = rmw_orders(order);
            // A CAS that fails is still an RMW to loom; one that succeeds
            // writes back the null it read.
            let null = core::ptr::null_mut();
            match self.0.compare_exchange(null, null, s, f) {
                Ok(p) | Err(p) => p,
            }
        }
        pub(crate) fn store(&self, p: *mut T, order: Ordering) {
            self.0.store(p, order)
        }
        pub(crate) fn swap(&self, p: *mut T, order: Ordering) -> *mut T {
            self.0.swap(p, order)
        }
        pub(crate) fn compare_exchange(
            &self,
            current: *mut T,
            new: *mut T,
            success: Ordering,
            failure: Ordering,
        ) -> Result<*mut T, *mut T> {
            self.0.compare_exchange(current, new, success, failure)
        }
        pub(crate) fn compare_exchange_weak(
            &self,
            current: *mut T,
            new: *mut T,
            success: Ordering,
            failure: Ordering,
        ) -> Result<*mut T, *mut T> {
            self.0.compare_exchange_weak(current, new, success, failure)
        }
    }
}
