//! The handshake between a thread's heap and the background purger
//! (`background`, option `background`): who may touch the heap's segments
//! (their slice bitmaps, its segment lists, its dirty-byte figures) outside
//! the fast paths.
//!
//! The fast paths only touch pages (free lists, `used`), never what a purge
//! touches, so they take no part. Every owner path that does (allocation and
//! free slow paths, `collect`, a snapshot of its own counts, thread exit)
//! runs between [`Handshake::enter`] and [`Handshake::leave`]; the purger
//! runs between [`Handshake::try_purge`] and [`Handshake::purged`]. One word
//! holds the state in its low two bits and, above them, an epoch the owner
//! bumps at each `leave`, which tells the purger whether the owner reached
//! a slow path since it last looked (an idle heap keeps its epoch).
//!
//! The owner never waits for long: the purger only takes a heap that is
//! idle, holds it for one purge, and never waits for anything the owner may
//! hold while it does. A heap not owned by a live thread (pooled, parked,
//! first-class) is [`NOT_THREAD`]: the purger never takes it, and its user
//! needs no handshake.
//!
//! One word, taken with Acquire and given back with Release, so each side
//! sees the other's writes to the heap. The word is the atomics shim's, and
//! `tests/loom.rs` checks the protocol: owner and purger never inside at
//! once, a purge never starts on a stale epoch or a closed heap.

use crate::atomic::{spin, AtomicUsize, Ordering};

/// Neither side is inside.
const IDLE: usize = 0;
/// The owner is inside one of its slow paths.
const OWNER: usize = 1;
/// The purger is purging the heap.
const PURGER: usize = 2;
/// Not a live thread's heap: the purger leaves it alone.
pub(crate) const NOT_THREAD: usize = 3;
const STATE: usize = 3;
const EPOCH: usize = 4;

/// A heap's handshake word (see the module docs).
pub(crate) struct Handshake(AtomicUsize);

impl Handshake {
    /// A heap not (yet) owned by a thread.
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        Handshake(AtomicUsize::new(NOT_THREAD))
    }

    /// A heap not (yet) owned by a thread (loom's atomics are not `const`).
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        Handshake(AtomicUsize::new(NOT_THREAD))
    }

    /// The owner makes its heap a live thread's heap, which the purger may
    /// take while idle. Called by the owner, outside `enter`.
    pub(crate) fn open(&self) {
        self.0.store(IDLE, Ordering::Release);
    }

    /// The owner's heap stops being a thread's (its thread exits). Called
    /// by the owner between `enter` and where `leave` would be.
    pub(crate) fn close(&self) {
        self.0.store(NOT_THREAD, Ordering::Release);
    }

    /// The owner starts a slow path: waits while the purger is purging (one
    /// purge at most). Returns whether it must call [`leave`](Self::leave):
    /// not when nested in another of its slow paths (a signal handler that
    /// allocates), nor for a heap that is not a thread's.
    #[inline]
    pub(crate) fn enter(&self) -> bool {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            match cur & STATE {
                IDLE => match self.0.compare_exchange_weak(
                    cur,
                    cur | OWNER,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return true,
                    Err(now) => cur = now,
                },
                PURGER => {
                    spin();
                    cur = self.0.load(Ordering::Relaxed);
                }
                _ => return false,
            }
        }
    }

    /// The owner ends a slow path that [`enter`](Self::enter) said to end:
    /// bumps the epoch, so the purger sees the heap was busy.
    #[inline]
    pub(crate) fn leave(&self) {
        let cur = self.0.load(Ordering::Relaxed);
        self.0
            .store((cur & !STATE).wrapping_add(EPOCH), Ordering::Release);
    }

    /// The epoch of an idle thread heap, `None` if the heap is busy or not
    /// a thread's.
    pub(crate) fn idle_epoch(&self) -> Option<usize> {
        let cur = self.0.load(Ordering::Relaxed);
        (cur & STATE == IDLE).then_some(cur)
    }

    /// The purger takes the heap if it is still idle at `epoch`; then it
    /// must call [`purged`](Self::purged).
    pub(crate) fn try_purge(&self, epoch: usize) -> bool {
        self.0
            .compare_exchange(epoch, epoch | PURGER, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// The purger gives the heap back, epoch unchanged.
    pub(crate) fn purged(&self) {
        let cur = self.0.load(Ordering::Relaxed);
        self.0.store(cur & !STATE, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn owner_and_purger_exclude_each_other_and_epochs_tell_idleness() {
        let h = Handshake::new();
        assert!(!h.enter(), "not a thread's heap: no handshake");
        assert_eq!(h.idle_epoch(), None);
        h.open();
        let e = h.idle_epoch().unwrap();
        assert!(h.enter());
        assert!(!h.enter(), "nested");
        assert_eq!(h.idle_epoch(), None, "busy");
        assert!(!h.try_purge(e));
        h.leave();
        let e2 = h.idle_epoch().unwrap();
        assert_ne!(e, e2, "a slow path bumps the epoch");
        assert!(!h.try_purge(e), "stale epoch");
        assert!(h.try_purge(e2));
        assert_eq!(h.idle_epoch(), None);
        h.purged();
        assert_eq!(h.idle_epoch(), Some(e2), "a purge keeps the epoch");
        assert!(h.enter());
        h.close();
        assert!(!h.enter());
        assert_eq!(h.idle_epoch(), None);
    }

    #[test]
    fn the_owner_waits_for_a_purge() {
        use std::sync::Arc;
        let h = Arc::new(Handshake::new());
        h.open();
        assert!(h.try_purge(h.idle_epoch().unwrap()));
        let h2 = h.clone();
        let t = std::thread::spawn(move || {
            let took = h2.enter();
            h2.leave();
            took
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!t.is_finished(), "the owner went in during a purge");
        h.purged();
        assert!(t.join().unwrap());
    }
}
