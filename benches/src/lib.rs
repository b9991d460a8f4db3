//! Shared code for the segalloc benchmark suite: the run-time allocator
//! dispatcher and the whole-program workloads.
//!
//! The runner binary (`src/main.rs`) re-executes itself once per
//! (workload, allocator, repetition) so each measurement gets a fresh process
//! with its own peak RSS; see `README.md` for the commands.

pub mod dispatch;
pub mod frag;
pub mod obj;
pub mod rng;
pub mod workloads;

pub use dispatch::{Alloc, Dispatch};
