//! The atomics every lock-free protocol in segalloc is written over.
//!
//! Under `--cfg loom` these are loom's model-checked atomics; otherwise they are
//! `core::sync::atomic`. Keeping the shim this thin means the code loom checks is
//! the code that ships.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
