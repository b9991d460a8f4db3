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

/// One turn of a spin-wait: the CPU's pause hint, or under loom a yield, so
/// that the model runs the thread being waited for instead of spinning.
#[inline]
pub(crate) fn spin() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}

/// loom's atomics, except that `load` and `store` are read-modify-writes (a
/// load writes back what it read, a store is a swap), with the same orderings.
///
/// loom 0.7 remembers only the last access to an atomic for its partial-order
/// reduction, so when thread A loads, then thread B loads and does an RMW
/// (every CAS loop, and the hint bits' test-then-set), the race between A's
/// load and B's RMW is never seen and the interleavings where B's RMW comes
/// first are never run (tokio-rs/loom#392): the models passed without checking
/// the concurrent cases at all (one execution each). As an RMW, every load
/// conflicts with every access and all orders are explored (up to the
/// preemption bound). Stores are swaps because loom orders a plain store and a
/// concurrent RMW only partially, and then lets a later RMW of the storing
/// thread read the other thread's older value (a coherence violation that
/// fails correct models).
///
/// The price: a relaxed load reads the latest value of the order explored,
/// never an older one (for one location that stands for an earlier
/// interleaving, also explored), and a store never breaks a release sequence.
/// What loom still checks fully is the happens-before that Release/Acquire
/// pairs give to plain memory (the block links and the owner's fields).
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
                    self.0.swap(v, order);
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
            self.0.swap(p, order);
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
