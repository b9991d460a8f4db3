//! The SIGSEGV handler that holds writers back while a page is being
//! merged (or copied for a fork).
//!
//! A write to a frozen slice (see the parent module) faults with
//! `SEGV_ACCERR`; the handler waits, yielding, until the slice's
//! [`FROZEN`](super::FROZEN) bit is gone, and returns: the write is retried
//! and lands in the merged page. A fault that raced with the end of a freeze
//! (the bit was already gone when the handler looked) is retried: always on
//! a slice of a merged page (nothing else write-protects one), once per
//! thread and page on a slice no longer merged (a merge undone). No
//! thread-local storage: in the shared library it could call
//! `__tls_get_addr`, which may allocate. Every other fault goes to the handler the program had
//! installed before (called as it asked, with or without `SA_SIGINFO`); if
//! that was the default action (or "ignore"), it is restored and the handler
//! returns, so the fault happens again under it (a core dump with the right
//! address). The handler takes no lock and allocates nothing.

use super::{frozen, meshed, our_slice};
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The program's disposition before ours: written once, before ours is
/// installed, read only by the handler afterwards.
struct Old(UnsafeCell<MaybeUninit<libc::sigaction>>);
// SAFETY: written once under the mesh lock before the handler can run, then
// only read.
unsafe impl Sync for Old {}
static OLD: Old = Old(UnsafeCell::new(MaybeUninit::zeroed()));
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// `si_code` of a fault on a mapped page that forbids the access (Linux).
const SEGV_ACCERR: libc::c_int = 2;

/// Faults retried once on a slice that is not meshed, a word per thread
/// (by thread id, modulo): the thread id over the page number. Two threads
/// sharing a word only retry more often, never less.
static RETRIED: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];

/// Installs the handler (once). Called under the mesh lock.
pub(super) fn install() -> bool {
    if INSTALLED.load(Ordering::Relaxed) {
        return true;
    }
    // SAFETY: a zeroed sigaction is valid; we fill in ours, and the kernel
    // writes the old one into OLD, which nothing reads yet.
    unsafe {
        let mut new: libc::sigaction = MaybeUninit::zeroed().assume_init();
        new.sa_sigaction = on_segv as *const () as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
        libc::sigemptyset(&mut new.sa_mask);
        if libc::sigaction(libc::SIGSEGV, &new, (*OLD.0.get()).as_mut_ptr()) != 0 {
            return false;
        }
    }
    INSTALLED.store(true, Ordering::Release);
    true
}

extern "C" fn on_segv(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SIGSEGV.
    let (addr, code) = unsafe { ((*info).si_addr() as usize, (*info).si_code) };
    if code == SEGV_ACCERR {
        if let Some((seg, i)) = our_slice(addr) {
            if frozen(seg, i) {
                super::HELD.fetch_add(1, Ordering::Relaxed);
                while frozen(seg, i) {
                    // SAFETY: a plain system call.
                    unsafe { libc::sched_yield() };
                }
                return;
            }
            // The freeze ended between the fault and the look: a slice of a
            // merged page is writable now (nothing else write-protects
            // one), so the write is retried.
            if meshed(seg, i) {
                return;
            }
            // A slice no longer meshed (a merge that failed and was undone):
            // retried once per thread and page, then handed on.
            // SAFETY: a plain system call.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u64;
            let mark = tid << 36 | (addr as u64 >> 12) & ((1 << 36) - 1);
            let slot = &RETRIED[tid as usize % RETRIED.len()];
            if slot.swap(mark, Ordering::Relaxed) != mark {
                return;
            }
            slot.store(0, Ordering::Relaxed);
        }
    }
    chain(sig, info, ctx);
}

/// Hands a fault that is not ours to the program's previous handler.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: OLD was filled in before our handler was installed.
    let old = unsafe { (*OLD.0.get()).assume_init_ref() };
    let h = old.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        // SAFETY: restores the program's disposition; the faulting
        // instruction runs again under it.
        unsafe { libc::sigaction(sig, old, core::ptr::null_mut()) };
        return;
    }
    // SAFETY: the program installed `h` as a handler of the kind its
    // flags say.
    unsafe {
        if old.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                core::mem::transmute(h);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = core::mem::transmute(h);
            f(sig);
        }
    }
}
