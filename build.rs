//! Link options for the `LD_PRELOAD` library (the cdylib) only; the rlib and
//! the programs that link it are untouched. Both options cut the memory a
//! program keeps resident for the library itself (README, "C peak RSS of the
//! small programs"); each is skipped where it cannot apply, and the library
//! then links as before.
//!
//! - `link/hot-text.ld` puts the functions that run at start-up, at the first
//!   allocations and at exit first in the text, together (see the script).
//!   GNU ld and lld read it; mold and gold do not, so it is left out when the
//!   flags ask for either.
//! - std's unwinder comes from the static `libgcc_eh.a` instead of
//!   `libgcc_s.so.1`: rustc links `-lgcc_s`, and a directory searched first
//!   holds a `libgcc_s.so` that is a linker script naming the compiler's
//!   `libgcc_eh.a`. Loading `libgcc_s.so.1` cost every program 84 KiB
//!   resident (its start-up code, symbol tables and data); the static
//!   unwinder's functions are local to the library (the cdylib exports only
//!   the C API), so they never stand in for the program's own unwinder.
//!   Skipped if the compiler does not know `libgcc_eh.a`.
//! - Relative relocations packed (`-z pack-relative-relocs`, DT_RELR): their
//!   table shrinks from 23 KiB to under 1 KiB, and with the unwind tables
//!   after the code (see `link/hot-text.ld`) the read-only mapping before
//!   the code, which the loader always faults in, fits in 40 KiB instead
//!   of a whole 64 KiB fault-around run. Only where the C library the
//!   library links against has DT_RELR (glibc 2.36 and later define the
//!   version `GLIBC_ABI_DT_RELR`, which the linker then requires, so an
//!   older loader refuses the library by name rather than crashing).

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/hot-text.ld");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os != "linux" || target_env != "gnu" {
        return;
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let linker = env::var("RUSTC_LINKER").unwrap_or_default();
    let other_ld = flags
        .split('\x1f')
        .chain([linker.as_str()])
        .any(|f| f.contains("mold") || f.contains("gold"));
    if !other_ld {
        let script =
            PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("link/hot-text.ld");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-T,{}", script.display());
    }
    let cc = if linker.is_empty() { "cc" } else { &linker };
    if !other_ld && libc_has_relr(cc) {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,pack-relative-relocs");
    }
    if let Some(eh) = libgcc_eh(cc) {
        let dir = PathBuf::from(env::var("OUT_DIR").unwrap()).join("static-unwind");
        std::fs::create_dir_all(&dir).unwrap();
        let script = format!(
            "/* Written by segalloc's build.rs: the cdylib's -lgcc_s links the static unwinder. */\nINPUT({})\n",
            eh.display()
        );
        std::fs::write(dir.join("libgcc_s.so"), script).unwrap();
        println!("cargo:rustc-cdylib-link-arg=-L{}", dir.display());
    }
}

/// Whether the compiler's `libc.so.6` takes DT_RELR: it defines the symbol
/// version `GLIBC_ABI_DT_RELR` (glibc 2.36 and later), whose name is then in
/// its dynamic string table.
fn libc_has_relr(cc: &str) -> bool {
    let Ok(out) = Command::new(cc).arg("-print-file-name=libc.so.6").output() else {
        return false;
    };
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !path.is_absolute() {
        return false;
    }
    std::fs::read(&path).is_ok_and(|bytes| {
        let needle = b"GLIBC_ABI_DT_RELR\0";
        bytes.windows(needle.len()).any(|w| w == needle)
    })
}

/// The full path of the compiler's `libgcc_eh.a`, if it has one (and the
/// path needs no quoting in a linker script).
fn libgcc_eh(cc: &str) -> Option<PathBuf> {
    let out = Command::new(cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?;
    let path = PathBuf::from(path.trim());
    let plain = path
        .to_str()?
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"()\"',;".contains(&b));
    (out.status.success() && path.is_absolute() && path.is_file() && plain).then_some(path)
}
