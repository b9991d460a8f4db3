//! A forwarding global allocator that sends every request to one of the
//! benchmarked allocators, chosen at run time.
//!
//! A process can only have one `#[global_allocator]`, so the bench binaries
//! install [`Dispatch`] and pick the real allocator through a static selector.
//! The selector must only change while no block from the previous allocator
//! is live, because a block freed by the wrong allocator corrupts its heap.
//! Two policies keep that true:
//!
//! * Whole-program workers: the selector is read from the environment
//!   variable [`ENV_VAR`] on the very first allocation of the process, before
//!   any block exists, and never changes afterwards.
//! * Criterion micro benchmarks: [`with_allocator`] flips the selector for the
//!   duration of one closure that frees everything it allocates.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicU8, Ordering};
use std::alloc::System;

/// Environment variable naming the allocator a worker process runs on.
pub const ENV_VAR: &str = "SEGALLOC_BENCH_ALLOC";

/// One of the allocators under comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Alloc {
    /// `segalloc::SegAlloc`, the allocator this repository builds.
    Segalloc = 0,
    /// `std::alloc::System` (glibc malloc on Linux).
    System = 1,
    /// `mimalloc::MiMalloc`.
    Mimalloc = 2,
    /// `tikv_jemallocator::Jemalloc`.
    Jemalloc = 3,
}

/// Sentinel: the selector has not been initialised from the environment yet.
const UNSET: u8 = u8::MAX;

static SELECTED: AtomicU8 = AtomicU8::new(UNSET);

impl Alloc {
    /// Every allocator, in the default report order.
    pub const ALL: [Alloc; 4] = [
        Alloc::Segalloc,
        Alloc::Mimalloc,
        Alloc::Jemalloc,
        Alloc::System,
    ];

    /// The name used on the command line, in tables and in [`ENV_VAR`].
    pub fn name(self) -> &'static str {
        match self {
            Alloc::Segalloc => "segalloc",
            Alloc::System => "system",
            Alloc::Mimalloc => "mimalloc",
            Alloc::Jemalloc => "jemalloc",
        }
    }

    /// Parses a name as printed by [`Alloc::name`] (plus a few aliases).
    pub fn parse(s: &str) -> Option<Alloc> {
        Self::from_bytes(s.as_bytes())
    }

    // Byte-based so the environment can be parsed without allocating.
    fn from_bytes(b: &[u8]) -> Option<Alloc> {
        match b {
            b"segalloc" | b"seg" => Some(Alloc::Segalloc),
            b"system" | b"sys" | b"glibc" => Some(Alloc::System),
            b"mimalloc" | b"mi" => Some(Alloc::Mimalloc),
            b"jemalloc" | b"je" => Some(Alloc::Jemalloc),
            _ => None,
        }
    }

    fn from_u8(v: u8) -> Alloc {
        match v {
            0 => Alloc::Segalloc,
            2 => Alloc::Mimalloc,
            3 => Alloc::Jemalloc,
            _ => Alloc::System,
        }
    }
}

/// The allocator requests are currently forwarded to.
///
/// The first call in a process fixes the selection from [`ENV_VAR`]
/// (falling back to [`Alloc::System`] when unset or unknown).
#[inline]
pub fn current() -> Alloc {
    Alloc::from_u8(selected())
}

#[inline(always)]
fn selected() -> u8 {
    let s = SELECTED.load(Ordering::Relaxed);
    if s != UNSET {
        s
    } else {
        init_from_env()
    }
}

#[cold]
fn init_from_env() -> u8 {
    // getenv does not allocate; we may be inside the very first malloc call.
    // SAFETY: the name is a valid NUL-terminated string; nothing in this
    // process calls setenv concurrently with its first allocation.
    let v = unsafe { libc::getenv(c"SEGALLOC_BENCH_ALLOC".as_ptr()) };
    let alloc = if v.is_null() {
        Alloc::System
    } else {
        // SAFETY: getenv returned a valid C string.
        let bytes = unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes();
        Alloc::from_bytes(bytes).unwrap_or(Alloc::System)
    };
    match SELECTED.compare_exchange(UNSET, alloc as u8, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => alloc as u8,
        Err(already) => already,
    }
}

/// Runs `f` with every global allocation forwarded to `alloc`, then switches
/// back to [`Alloc::System`].
///
/// Contract (not checkable cheaply, so keep it in mind): `f` must free every
/// block it allocates before returning, its return value must not own heap
/// memory, and no other thread may allocate while `f` runs. Criterion runs
/// its measurement loop on the calling thread, so wrapping the body of one
/// iteration satisfies this.
pub fn with_allocator<R>(alloc: Alloc, f: impl FnOnce() -> R) -> R {
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            SELECTED.store(Alloc::System as u8, Ordering::Relaxed);
        }
    }
    assert_eq!(
        current(),
        Alloc::System,
        "with_allocator must start from the System allocator"
    );
    SELECTED.store(alloc as u8, Ordering::Relaxed);
    let _restore = Restore;
    f()
}

/// Forwards each request to the allocator chosen by the selector.
///
/// Install with `#[global_allocator] static A: Dispatch = Dispatch;`.
pub struct Dispatch;

// Expands `$body` once per allocator with `$a` bound to a reference to it, so
// every arm is a direct, inlinable call.
macro_rules! forward {
    ($a:ident => $body:expr) => {
        match selected() {
            0 => {
                let $a = &segalloc::SegAlloc;
                $body
            }
            2 => {
                let $a = &mimalloc::MiMalloc;
                $body
            }
            3 => {
                let $a = &tikv_jemallocator::Jemalloc;
                $body
            }
            _ => {
                let $a = &System;
                $body
            }
        }
    };
}

// SAFETY: every method forwards to an allocator that upholds the GlobalAlloc
// contract; the selector policy above guarantees a block is always returned
// to the allocator that produced it.
unsafe impl GlobalAlloc for Dispatch {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        forward!(a => unsafe { a.alloc(layout) })
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        forward!(a => unsafe { a.alloc_zeroed(layout) })
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        forward!(a => unsafe { a.dealloc(ptr, layout) })
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        forward!(a => unsafe { a.realloc(ptr, layout, new_size) })
    }
}
