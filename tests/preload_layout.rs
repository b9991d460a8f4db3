//! The layout of the `LD_PRELOAD` library, which decides how much of it a
//! program keeps resident (build.rs, `link/hot-text.ld`): the kernel maps a
//! library's code around each page fault in 64 KiB runs, so the functions
//! that run in every program must sit together at the start of the code,
//! and the library must not load `libgcc_s.so.1`.
//!
//! Linux with glibc only (where build.rs applies both); the checks read the
//! library with `objdump` and are skipped without it.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use std::path::Path;
use std::process::Command;

#[path = "common/preload.rs"]
mod preload;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

fn have_objdump() -> bool {
    Command::new("objdump")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `objdump` run on the library with `args`.
fn objdump(so: &Path, args: &[&str]) -> String {
    let out = Command::new("objdump")
        .args(args)
        .arg(so)
        .output()
        .expect("objdump");
    assert!(out.status.success(), "objdump {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every section's name, start address and size (`objdump -h`), in address order.
fn sections(so: &Path) -> Vec<(String, u64, u64)> {
    let mut v: Vec<(String, u64, u64)> = objdump(so, &["-h"])
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // "  3 .text  000a  0000...  0000...  0001a000  2**4"
            if f.len() < 7 || f[0].parse::<usize>().is_err() {
                return None;
            }
            let size = u64::from_str_radix(f[2], 16).ok()?;
            let vma = u64::from_str_radix(f[3], 16).ok()?;
            Some((f[1].to_string(), vma, size))
        })
        .collect();
    v.retain(|s| s.1 != 0);
    v.sort_by_key(|s| s.1);
    v
}

/// Every function's name, address and size (`objdump -t`).
fn functions(so: &Path) -> Vec<(String, u64, u64)> {
    objdump(so, &["-t"])
        .lines()
        .filter_map(|l| {
            // "000000000001b9e0 g     F .text	00000000000000b3 malloc"
            let (left, right) = l.split_once('\t')?;
            let left: Vec<&str> = left.split_whitespace().collect();
            let mut right = right.split_whitespace();
            let size = u64::from_str_radix(right.next()?, 16).ok()?;
            let name = right.next_back()?.to_string();
            let addr = u64::from_str_radix(left.first()?, 16).ok()?;
            left.contains(&"F").then_some((name, addr, size))
        })
        .collect()
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == name;
    }
    if !name.starts_with(first) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// The function-name patterns of `link/hot-text.ld`: each `*(.text.PATTERN)`
/// (the script's other lines name files or output sections), in two
/// groups: what a single-threaded program runs, and then (from the comment
/// that starts the second group on) threads, remote frees, large blocks,
/// purging.
fn script_patterns() -> (Vec<String>, Vec<String>) {
    let script = std::fs::read_to_string(Path::new(MANIFEST).join("link/hot-text.ld"))
        .expect("read link/hot-text.ld");
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let mut in_second = false;
    for l in script.lines() {
        in_second |= l.trim().starts_with("/* Threads,");
        if let Some(p) = l
            .trim()
            .strip_prefix("*(.text.")
            .and_then(|p| p.strip_suffix(')'))
        {
            if in_second { &mut second } else { &mut first }.push(p.to_string());
        }
    }
    (first, second)
}

/// The functions that every program runs (start-up, first allocations,
/// exit) lie in the first 64 KiB of the library's code, with `.init`,
/// `.fini` and `.plt`, which every program runs too; and every pattern of the
/// script still names a function there, so that a renamed function cannot
/// silently drop out.
#[test]
fn start_up_code_is_first() {
    if !have_objdump() {
        println!("note: objdump not found; layout check skipped");
        return;
    }
    let so = preload::cdylib();
    let secs = sections(so);
    let code = [".init", ".fini", ".plt", ".text"];
    let start = secs
        .iter()
        .filter(|s| code.contains(&s.0.as_str()))
        .map(|s| s.1)
        .min()
        .expect("no .text")
        & !0xfff;
    // The first fault-around run of the code: what a program keeps resident.
    let end = start + (64 << 10);
    for name in [".init", ".fini", ".plt"] {
        if let Some(s) = secs.iter().find(|s| s.0 == name) {
            assert!(
                s.1 + s.2 <= end,
                "{name} is not in the first 64 KiB of the code: {secs:?}"
            );
        }
    }
    let within = |bytes: u64| -> Vec<String> {
        functions(so)
            .into_iter()
            .filter(|(_, a, size)| *a >= start && a + size <= start + bytes)
            .map(|f| f.0)
            .collect()
    };
    let first = within(64 << 10);
    for f in ["malloc", "free", "calloc", "realloc", "__libc_start_main"] {
        assert!(
            first.iter().any(|n| n == f),
            "{f} is not in the first 64 KiB of the code"
        );
    }
    // What a single-threaded program runs, in the first fault-around run;
    // the second group (threads, remote frees, large blocks, purging) right
    // after it, in the first two (it outgrew one on 2026-11-29, and a
    // `secure` build's code is longer still).
    let two = within(128 << 10);
    let (one_run, two_runs) = script_patterns();
    let stale: Vec<String> = one_run
        .into_iter()
        .filter(|p| !first.iter().any(|n| glob(p, n)))
        .chain(
            two_runs
                .into_iter()
                .filter(|p| !two.iter().any(|n| glob(p, n))),
        )
        .collect();
    assert!(
        stale.is_empty(),
        "patterns of link/hot-text.ld that match no function where they should \
         (in the first 64 KiB of the code, or 128 KiB for the second group: \
         renamed, inlined, or the list outgrew it?): {stale:?}"
    );
}

/// The library does not load `libgcc_s.so.1` (std's unwinder is linked in
/// statically), and exports no unwinder symbol that could stand in for the
/// program's own. build.rs skips the static unwinder when the C compiler
/// has no `libgcc_eh.a`; so does this test.
#[test]
fn no_libgcc_s_and_no_exported_unwinder() {
    if !have_objdump() {
        println!("note: objdump not found; check skipped");
        return;
    }
    let eh = Command::new("cc")
        .arg("-print-file-name=libgcc_eh.a")
        .output();
    let has_eh =
        eh.is_ok_and(|o| Path::new(String::from_utf8_lossy(&o.stdout).trim()).is_absolute());
    if !has_eh {
        println!("note: cc has no libgcc_eh.a; check skipped");
        return;
    }
    let so = preload::cdylib();
    let needed = objdump(so, &["-p"]);
    assert!(
        !needed
            .lines()
            .any(|l| l.contains("NEEDED") && l.contains("libgcc_s")),
        "the library still needs libgcc_s:\n{needed}"
    );
    let dynsyms = objdump(so, &["-T"]);
    let exported: Vec<&str> = dynsyms
        .lines()
        .filter(|l| !l.contains("*UND*"))
        .filter(|l| {
            l.contains("_Unwind_")
                || l.contains("__register_frame")
                || l.contains("__deregister_frame")
        })
        .collect();
    assert!(
        exported.is_empty(),
        "unwinder symbols exported: {exported:?}"
    );
}

/// What a small single-threaded C program (`tests/preload/resident.c`:
/// malloc, calloc, realloc, free, stdio) keeps resident of the library, read
/// from its own `/proc/self/smaps`: every function it runs lies in the first
/// fault-around run (64 KiB, the kernel's default) of the code, so no more
/// than that of the code is resident. Fails if a function every program runs
/// is left out of `link/hot-text.ld` (it was 132 KiB when `malloc_miss` and
/// `Page::extend` were not in the first run). Where build.rs packs the
/// relative relocations, the read-only mapping before the code (which the
/// loader faults in from its start) is shorter than a fault-around run too:
/// the unwind tables lie after the code (it was 64 KiB, now 40).
#[test]
fn resident_library_of_a_small_program() {
    let dir = preload::scratch("resident");
    let Some(exe) = preload::compile_c(&dir, "resident", &[]) else {
        return;
    };
    // The kernel maps a large page-cache folio whole when it faults around
    // in it (Linux 6.18), and a file just written (or copied) can sit in
    // folios that straddle the end of the hot code: read the library back
    // from disk, as an installed library is, so that the fault-around runs
    // alone decide what is resident.
    let so = preload::cdylib();
    if let Ok(f) = std::fs::File::open(so) {
        use std::os::fd::AsRawFd;
        let _ = f.sync_all();
        // SAFETY: an open descriptor; the advice only drops clean cached pages.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    let mut cmd = Command::new(&exe);
    cmd.env("LD_PRELOAD", so);
    let out = preload::run(cmd, &dir, "resident");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "resident failed: {stdout}");
    // "<perms> <file offset> <Rss KiB>" per mapping of the library.
    let maps: Vec<(String, u64)> = stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[0].len() == 4).then(|| (f[0].to_string(), f[2].parse().unwrap()))
        })
        .collect();
    assert!(
        !maps.is_empty(),
        "no mapping of the library found: {stdout}"
    );
    let code: u64 = maps.iter().filter(|m| m.0.contains('x')).map(|m| m.1).sum();
    // link/hot-text.ld orders the default build's functions; `secure`'s
    // (larger, and with checks of their own) are not ordered: its library
    // keeps 92-128 KiB of code resident here (2026-11-29).
    if cfg!(feature = "secure") {
        println!("note: secure build, {code} KiB of code resident (not bounded)");
        return;
    }
    assert!(
        code <= 64,
        "{code} KiB of the library's code resident, more than one 64 KiB \
         fault-around run (a function every program runs is missing from \
         link/hot-text.ld; scripts/hot-text.sh lists them): {maps:?}"
    );
    let packed = have_objdump()
        && sections(preload::cdylib())
            .iter()
            .any(|s| s.0 == ".relr.dyn");
    if packed {
        // The first mapping: the headers, the dynamic symbols, the
        // relocations and .rodata.
        let head = &maps[0];
        assert!(
            head.0 == "r--p" && head.1 < 64,
            "the read-only mapping before the code is a whole fault-around \
             run or more ({} KiB): {maps:?}",
            head.1
        );
    } else {
        println!("note: relative relocations not packed; read-only head not checked");
    }
}
