//! Exit and fork handlers, registered with the C library.
//!
//! On glibc the handlers go straight to `__cxa_atexit` and
//! `__register_atfork` with this object's `__dso_handle`, which is all that
//! `atexit` and `pthread_atfork` do: those two are not exported by
//! `libc.so.6` but linked statically from `libc_nonshared.a`, and their
//! calls go through the PLT, which the linker puts after the whole `.text`.
//! Calling them made a program's start-up touch the last pages of the
//! library's code, and the kernel maps file pages around each fault in
//! 64 KiB runs (fault-around), so each program kept up to 60 KiB more of
//! the library resident for those two jumps. Elsewhere the portable calls
//! are used.
//!
//! Neither panics. glibc keeps the first handlers in static tables, so the
//! few registered here allocate nothing; a failure (ENOMEM) is returned as
//! false and leaves the program without that handler, as `atexit` would.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
use core::ffi::c_void;

/// Runs `f` at `exit` (on glibc also when this library is unloaded). Returns
/// false if the C library could not register it.
pub(crate) fn at_exit(f: extern "C" fn()) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: glibc's own `atexit` makes this very call: the handler is
        // cast to take the (null) argument, which the C calling convention
        // lets a function without parameters ignore. `f` lives as long as
        // the process; `__dso_handle` is this object's handle.
        unsafe {
            let f = core::mem::transmute::<extern "C" fn(), extern "C" fn(*mut c_void)>(f);
            gnu::__cxa_atexit(f, core::ptr::null_mut(), gnu::dso()) == 0
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(f) == 0 }
    }
}

/// A fork handler: called with no argument, like `pthread_atfork`'s.
pub(crate) type ForkHandler = extern "C" fn();

/// Registers fork handlers as `pthread_atfork` does (prepare handlers run in
/// the reverse order of registration, the others in order). Returns false if
/// the C library could not register them.
pub(crate) fn at_fork(prepare: ForkHandler, parent: ForkHandler, child: ForkHandler) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: the handlers live as long as the process; `__dso_handle`
        // is this object's handle, the one `pthread_atfork` passes.
        unsafe { gnu::__register_atfork(Some(prepare), Some(parent), Some(child), gnu::dso()) == 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        // SAFETY: as above.
        unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) == 0 }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod gnu {
    use core::ffi::{c_int, c_void};

    extern "C" {
        /// Defined by the compiler's start files (`crtbegin*.o`) in every
        /// executable and shared object: the handle glibc ties exit and fork
        /// handlers to, so that they are dropped when the object is unloaded.
        static __dso_handle: u8;
        pub(super) fn __cxa_atexit(
            f: extern "C" fn(*mut c_void),
            arg: *mut c_void,
            dso: *const c_void,
        ) -> c_int;
        pub(super) fn __register_atfork(
            prepare: Option<super::ForkHandler>,
            parent: Option<super::ForkHandler>,
            child: Option<super::ForkHandler>,
            dso: *const c_void,
        ) -> c_int;
    }

    /// This object's `__dso_handle`.
    pub(super) fn dso() -> *const c_void {
        // Only the address is taken, never the value (no `unsafe` needed).
        core::ptr::addr_of!(__dso_handle).cast()
    }
}
