//! With the `override` feature, a Rust binary that links segalloc gets the C
//! API from the rlib: its own `malloc` calls and those libc makes internally
//! (strdup, and so std's System allocator) land in segalloc.
//!
//! Runs only with the feature: `cargo test --release --features override
//! --test capi_override`. This whole test binary, harness included, then
//! allocates through segalloc.
#![cfg(feature = "override")]

use std::ffi::{c_void, CStr};

/// Which object a function's address lies in, by `dladdr`.
fn object_of(f: *const c_void) -> String {
    // SAFETY: Dl_info is plain data; dladdr only fills it.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr reads no memory of ours beyond `info`, which it writes.
    assert_ne!(unsafe { libc::dladdr(f, &mut info) }, 0, "dladdr failed");
    // SAFETY: on success dli_fname is a NUL-terminated path owned by the loader.
    unsafe { CStr::from_ptr(info.dli_fname) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn malloc_resolves_to_the_executable_not_libc() {
    let name = c"malloc";
    // SAFETY: dlsym with RTLD_DEFAULT looks up a NUL-terminated name.
    let m = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    assert!(!m.is_null());
    let obj = object_of(m);
    assert!(!obj.contains("libc.so"), "malloc still comes from {obj}");
    assert_eq!(obj, object_of(libc::free as *const c_void));
}

#[test]
fn libc_internal_allocations_are_segalloc_blocks() {
    // SAFETY: strdup of a NUL-terminated string; the copy is freed below.
    unsafe {
        let s = libc::strdup(c"hello".as_ptr());
        assert!(!s.is_null());
        // segalloc's smallest class is 16 bytes; glibc would say 24.
        assert_eq!(libc::malloc_usable_size(s.cast()), 16);
        assert_eq!(segalloc::usable_size(s.cast()), 16);
        libc::free(s.cast());
    }
}

#[test]
fn std_system_allocator_goes_through_segalloc() {
    // No #[global_allocator] here: std uses System, which calls malloc.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut v: Vec<String> = Vec::new();
                for i in 0..20_000 {
                    v.push(format!("{t}-{i}"));
                    if v.len() > 1000 {
                        v.drain(..500);
                    }
                }
                let b = Box::new([0u8; 100]);
                // SAFETY: the box is a live block from System, i.e. malloc.
                let u = unsafe { segalloc::usable_size(b.as_ptr()) };
                (v.len(), u)
            })
        })
        .collect();
    for t in threads {
        let (n, u) = t.join().unwrap();
        assert!(n > 0);
        assert_eq!(u, 112, "a 100-byte box is a 112-byte segalloc block");
    }
}
