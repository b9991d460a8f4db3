//! Statistics: what segalloc holds and where it went.
//!
//! (First part: the counters the large-object path keeps. The full snapshot
//! API builds on these.)

use core::sync::atomic::{AtomicUsize, Ordering};

/// Live large (directly mapped) objects: a count and their usable bytes.
pub(crate) struct LargeCounters {
    count: AtomicUsize,
    bytes: AtomicUsize,
}

impl LargeCounters {
    const fn new() -> Self {
        LargeCounters { count: AtomicUsize::new(0), bytes: AtomicUsize::new(0) }
    }
    /// One more large object of `bytes` usable bytes (a resize is a sub + add).
    pub(crate) fn add(&self, bytes: usize) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    pub(crate) fn sub(&self, bytes: usize) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
    /// (live large objects, their usable bytes)
    pub(crate) fn read(&self) -> (usize, usize) {
        (self.count.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }
}

/// Process-wide large-object counters (cold path: each change is a syscall).
pub(crate) static LARGE: LargeCounters = LargeCounters::new();
