//! Whether the program's `main` has begun: the background purger
//! (`background`) is never started before it.
//!
//! Code runs before `main` in constructors (shared libraries' ones while the
//! dynamic loader holds its lock, then the program's own), and a thread made
//! there breaks programs that expect to be single-threaded until `main`
//! (`unshare(CLONE_NEWUSER)`, `fork` without `exec`, seccomp set-up in a
//! constructor), or deadlocks when `pthread_create` needs the loader's lock.
//! jemalloc makes its background threads while it initialises, which can be
//! in a constructor; segalloc waits for `main` instead.
//!
//! glibc calls `main` from `__libc_start_main`, which the program's `_start`
//! reaches through the dynamic linker. segalloc defines that symbol: under
//! `LD_PRELOAD` (or linked as a C library) its definition comes first in
//! the lookup, and in a Rust program it is linked into the executable
//! itself, where `_start`'s reference binds to it. It hands glibc's own
//! `__libc_start_main` (found with `dlsym(RTLD_NEXT)`) a `main` that marks
//! [`MAIN`] and then calls the program's. Nothing else changes: the same
//! arguments, constructors and exit path.
//!
//! Where the hook cannot be built (not glibc, or a static executable with
//! `crt-static`, whose libc already defines the symbol), [`main_started`]
//! answers yes from the start: the purger then starts at the first slow
//! path, as before. A program that never goes through the hook (one whose
//! `_start` is not glibc's, or that `dlopen`s segalloc late) never starts
//! the purger; `SEGALLOC_VERBOSE=1` says so once.

use core::sync::atomic::{AtomicUsize, Ordering};

/// Whether this build has the hook (see the module docs).
pub(crate) const HOOKED: bool = cfg!(all(
    target_os = "linux",
    target_env = "gnu",
    not(target_feature = "crt-static")
));

/// 1 once the program's `main` was called (always, in a build without the
/// hook). Inherited by forked children.
static MAIN: AtomicUsize = AtomicUsize::new(if HOOKED { 0 } else { 1 });

/// Whether the program's `main` has begun (see the module docs).
#[inline]
pub(crate) fn main_started() -> bool {
    MAIN.load(Ordering::Relaxed) != 0
}

#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    not(target_feature = "crt-static")
))]
mod hook {
    use super::MAIN;
    use core::ffi::{c_char, c_int, c_void};
    use core::sync::atomic::{AtomicUsize, Ordering};

    type Main = unsafe extern "C" fn(c_int, *mut *mut c_char, *mut *mut c_char) -> c_int;
    type StartMain = unsafe extern "C" fn(
        Main,
        c_int,
        *mut *mut c_char,
        *mut c_void,
        *mut c_void,
        *mut c_void,
        *mut c_void,
    ) -> c_int;

    /// The program's `main`, as `_start` passed it.
    static REAL_MAIN: AtomicUsize = AtomicUsize::new(0);

    /// What glibc calls instead of the program's `main`.
    unsafe extern "C" fn main_then_program(
        argc: c_int,
        argv: *mut *mut c_char,
        envp: *mut *mut c_char,
    ) -> c_int {
        MAIN.store(1, Ordering::Relaxed);
        // SAFETY: only `__libc_start_main` below stores here, always the
        // `main` that `_start` handed it, before glibc can call us.
        unsafe {
            let main = core::mem::transmute::<usize, Main>(REAL_MAIN.load(Ordering::Relaxed));
            main(argc, argv, envp)
        }
    }

    /// glibc's `__libc_start_main`, with the program's `main` wrapped so
    /// that segalloc knows when it begins (see the module docs).
    ///
    /// # Safety
    /// Called once, by the program's `_start`, with glibc's arguments.
    #[no_mangle]
    pub unsafe extern "C" fn __libc_start_main(
        main: Main,
        argc: c_int,
        argv: *mut *mut c_char,
        init: *mut c_void,
        fini: *mut c_void,
        rtld_fini: *mut c_void,
        stack_end: *mut c_void,
    ) -> c_int {
        // SAFETY: a NUL-terminated name; RTLD_NEXT finds the definition
        // after ours (glibc's), whose type is `StartMain`.
        unsafe {
            let next = libc::dlsym(libc::RTLD_NEXT, c"__libc_start_main".as_ptr());
            if next.is_null() {
                let msg = b"segalloc: glibc's __libc_start_main not found\n";
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::abort();
            }
            REAL_MAIN.store(main as usize, Ordering::Relaxed);
            let next = core::mem::transmute::<*mut c_void, StartMain>(next);
            next(
                main_then_program,
                argc,
                argv,
                init,
                fini,
                rtld_fini,
                stack_end,
            )
        }
    }
}
