//! A page's count of blocks in use, kept so that the owner's free fast path
//! learns from one decrement whether the page needs its attention.

use super::Page;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU32, Ordering};
use static_assertions::const_assert;

/// A page's count of blocks in use, kept as its distance to the mark at
/// which the owner's frees need attention (`notify_at`): 0 (the page became
/// empty), the unfull mark on the full list, or [`NOTIFY_EVERY`]. The free
/// fast path is then one decrement and a branch on its result (`dec`,
/// `jle`),
/// where `used == 0 || IN_FULL` would be two compares, and `used <=
/// notify_at` a decrement, a reload and a compare.
///
/// `slack` is `used - notify_at` (wrapping), so a free that leaves `used <=
/// notify_at` leaves `slack` at or below zero as an `i32` (counts and marks
/// stay below 2^31), and zeroed memory reads as no block in use. Both words are written only by the page's owner
/// (relaxed loads and stores, which compile to the plain adds the fast paths
/// had) and read by any thread (`defrag::should_move`) without a data race;
/// such a reader may see one word changed and not the other (see
/// [`occupancy`]).
#[repr(C)]
pub(crate) struct Used {
    slack: AtomicU32,
    notify_at: AtomicU32,
}

/// The mark that sends every free of the owner to the slow path: `used -
/// NOTIFY_EVERY` is at most zero for every count a page can hold.
pub(crate) const NOTIFY_EVERY: u32 = i32::MAX as u32;
// Every count fits below the mark (a page holds at most one block per 16
// bytes of a segment).
const_assert!((crate::segment::SEGMENT_SIZE / 16) < NOTIFY_EVERY as usize);

impl Used {
    /// No block in use, noticed when empty: the state of zeroed memory.
    #[allow(clippy::declare_interior_mutable_const)]
    pub(super) const ZERO: Used = Used {
        slack: AtomicU32::new(0),
        notify_at: AtomicU32::new(0),
    };

    /// Blocks in use.
    #[inline(always)]
    pub(crate) fn get(&self) -> u32 {
        self.slack
            .load(Ordering::Relaxed)
            .wrapping_add(self.notify_at.load(Ordering::Relaxed))
    }

    /// Owner only.
    #[inline(always)]
    pub(crate) fn set(&self, n: u32) {
        let slack = n.wrapping_sub(self.notify_at.load(Ordering::Relaxed));
        self.slack.store(slack, Ordering::Relaxed);
    }

    /// One more block in use (the allocation fast path's one increment on
    /// memory). Owner only.
    #[inline(always)]
    pub(crate) fn inc(&self) {
        self.slack.store(
            self.slack.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    /// Moves the mark, keeping the count. Owner only.
    #[inline]
    pub(crate) fn set_notify_at(&self, mark: u32) {
        let n = self.get();
        self.notify_at.store(mark, Ordering::Relaxed);
        self.set(n);
    }
}

impl Page {
    /// One block fewer in use ([`Used`]); returns whether the count is now
    /// at or below the mark. Owner only.
    #[inline(always)]
    pub(super) fn dec_used_notice(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: `used.slack` is a valid, aligned `u32` at that offset
            // of the page, which only this thread (the owner) writes; the
            // instruction is the relaxed load and store of the other arm,
            // done in memory, with the branch taken on the flags it leaves
            // (LLVM does not fuse them itself: it reloads and compares). The
            // page's address goes in as is, so no register is spent on the
            // field's.
            unsafe {
                core::arch::asm!(
                    "dec dword ptr [{page} + {used}]",
                    "jle {notice}",
                    page = in(reg) self as *const Page,
                    used = const offset_of!(Page, used) + offset_of!(Used, slack),
                    notice = label { return true; },
                    options(nostack),
                );
            }
            false
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let slack = &self.used.slack;
            let left = slack.load(Ordering::Relaxed).wrapping_sub(1);
            slack.store(left, Ordering::Relaxed);
            (left as i32) <= 0
        }
    }
}
