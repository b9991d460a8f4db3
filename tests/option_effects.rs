//! Each runtime option's effect, with the option set from the environment
//! and from Rust (`set_option`), each in a child process (this binary, the
//! `child` test) with a timeout; and with it left alone, where the effect
//! must not show, so that every probe can fail. `tests/preload/options_effect.c`
//! runs the same probes through the C ABI (see `every_option_has_its_effect_from_c`).

use std::alloc::{alloc, dealloc, Layout};
use std::process::Command;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

mod common;
use common::{huge_page_advised, kernel_thp_on, smaps_field, THP_SETTING};
#[path = "common/preload.rs"]
mod preload;

/// `<option>:<how>`, how being `env`, `rust` or `none`: the child's case.
const CASE: &str = "SEGALLOC_OPTION_EFFECT";
const MIB: usize = 1 << 20;

/// One option: the value that shows its effect, and the probe that checks
/// the effect is there (`true`) or not (`false`).
struct Effect {
    name: &'static str,
    value: &'static str,
    probe: fn(bool),
}

const EFFECTS: &[Effect] = &[
    Effect {
        name: "purge_delay_ms",
        value: "3600000",
        probe: purge_delay,
    },
    Effect {
        name: "purge_min",
        value: "1G",
        probe: purge_min,
    },
    Effect {
        name: "segment_cache",
        value: "0",
        probe: segment_cache,
    },
    Effect {
        name: "segment_cache_resident",
        value: "1G",
        probe: segment_cache_resident,
    },
    Effect {
        name: "large_cache",
        value: "0",
        probe: large_cache,
    },
    Effect {
        name: "parked_heaps",
        value: "0",
        probe: parked_heaps,
    },
    Effect {
        name: "page_source",
        value: "brk",
        probe: page_source,
    },
    Effect {
        name: "limit",
        value: "64M",
        probe: limit,
    },
    Effect {
        name: "limit_soft",
        value: "32M",
        probe: limit_soft,
    },
    Effect {
        name: "thp",
        value: "1",
        probe: thp,
    },
    Effect {
        name: "sub_purge",
        value: "0",
        probe: sub_purge,
    },
    Effect {
        name: "background",
        value: "1",
        probe: background,
    },
    Effect {
        name: "mesh",
        value: "1",
        probe: mesh,
    },
    // These two show on stderr: the parent checks (see `stderr_shows`).
    Effect {
        name: "verbose",
        value: "1",
        probe: verbose,
    },
    Effect {
        name: "show_stats",
        value: "1",
        probe: |_| drop(vec![1u8; 100]),
    },
];

/// The profiler's options (feature `profiling`), from the environment and
/// Rust only: not from C here, as the preload library of these tests is
/// built without the profiler. `prof_unwind`'s effect is tested in
/// tests/profile.rs.
#[cfg(feature = "profiling")]
const PROFILER_EFFECTS: &[Effect] = &[
    Effect {
        name: "prof_rate",
        value: "4K",
        probe: prof_rate,
    },
    Effect {
        name: "prof",
        value: "1",
        probe: prof,
    },
];

/// `prof` starts sampling within 1 MiB of allocations (at the next check
/// of a heap's countdown), whether it came from the environment or was set
/// at run time: about 14 samples in 8 MiB at the default rate, none
/// without it.
#[cfg(feature = "profiling")]
fn prof(on: bool) {
    let v = blocks(8 << 10, 1024);
    let n = segalloc::stats().sampled_objects;
    eprintln!("prof: {n} sampled blocks live");
    if on {
        assert!(n > 0, "no sampled block live");
    } else {
        assert_eq!(n, 0, "sampled blocks live without prof");
    }
    drop(v);
}
#[cfg(not(feature = "profiling"))]
const PROFILER_EFFECTS: &[Effect] = &[];

/// `profile::start(0)` samples once per `prof_rate` bytes: about 1000
/// samples in 4 MiB at 4 KiB, 8 at the default 512 KiB.
#[cfg(feature = "profiling")]
fn prof_rate(on: bool) {
    segalloc::profile::start(0);
    let v = blocks(4 << 10, 1000);
    let n = segalloc::stats().sampled_objects;
    segalloc::profile::stop();
    eprintln!("prof_rate: {n} sampled blocks live");
    if on {
        assert!(n > 200, "{n} sampled blocks live");
    } else {
        assert!(n < 50, "{n} sampled blocks live");
    }
    free(v, 1000);
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// `n` blocks of `size` bytes, each written.
fn blocks(n: usize, size: usize) -> Vec<usize> {
    (0..n)
        .map(|_| {
            // SAFETY: a valid layout (kept opaque: the compiler may assume a
            // global allocation succeeds).
            let p = unsafe { alloc(std::hint::black_box(layout(size))) };
            assert!(!p.is_null(), "{size} bytes");
            // SAFETY: a fresh block of `size` bytes.
            unsafe { p.write_bytes(1, size) };
            p as usize
        })
        .collect()
}

fn free(blocks: impl IntoIterator<Item = usize>, size: usize) {
    for p in blocks {
        // SAFETY: allocated by `blocks` with this size.
        unsafe { dealloc(p as *mut u8, layout(size)) };
    }
}

/// One block in `n` of `v`, and the others.
fn one_in(v: Vec<usize>, n: usize) -> (Vec<usize>, Vec<usize>) {
    let (kept, gone): (Vec<_>, Vec<_>) = v.into_iter().enumerate().partition(|(i, _)| i % n == 0);
    let strip = |x: Vec<(usize, usize)>| x.into_iter().map(|(_, p)| p).collect();
    (strip(kept), strip(gone))
}

/// Bytes purged so far (`madvise`).
fn purged() -> usize {
    segalloc::stats().os_calls.purged
}

/// 32 MiB of 1000-byte blocks freed but one in 1024 (each segment keeps a
/// page, so the free memory stays with the heap), within the heap's budget
/// (its recent peak): only the timed purge gives it back. After three
/// default purge delays a slow path (a page of another class) must have
/// purged it, unless the delay is long.
fn purge_delay(on: bool) {
    let v = blocks(32 << 10, 1000);
    let (kept, gone) = one_in(v, 1024);
    free(gone, 1000);
    let before = purged();
    std::thread::sleep(Duration::from_millis(300));
    free(blocks(1, 5000), 5000);
    let n = purged() - before;
    eprintln!("purge_delay_ms: {} KiB purged", n >> 10);
    if on {
        assert!(n < MIB, "{n} bytes purged before the delay");
    } else {
        assert!(n > 16 * MIB, "only {n} bytes purged after the delay");
    }
    free(kept, 1000);
}

/// 32 MiB of 1000-byte blocks, those of every other 64 KiB slice freed (16
/// MiB of free one-slice holes), then 16 MiB of 128 KiB blocks, whose pages
/// span two slices and so come from other slices: once the heap is back
/// near its peak, the free holes are more than its budget (an eighth of
/// its use, at least `purge_min`) and are purged at once, unless
/// `purge_min` is larger. (With a long purge delay in both runs: a slow
/// run must not see the timed purge instead.)
fn purge_min(on: bool) {
    segalloc::set_option("purge_delay_ms", "3600000").unwrap();
    let v = blocks(32 << 10, 1000);
    let (odd, even): (Vec<usize>, Vec<usize>) = v.iter().partition(|&&p| (p >> 16) % 2 == 1);
    free(even, 1000);
    let before = purged();
    let big = blocks(128, 128 << 10);
    let n = purged() - before;
    eprintln!("purge_min: {} KiB purged", n >> 10);
    if on {
        assert!(n < MIB, "{n} bytes purged under purge_min");
    } else {
        assert!(n > 4 * MIB, "only {n} bytes purged");
    }
    free(big, 128 << 10);
    free(odd, 1000);
}

/// 24 MiB of 1000-byte blocks (seven segments), all freed: the heap keeps
/// one segment, the others go to the process-wide cache, or are unmapped
/// when it keeps none.
fn segment_cache(on: bool) {
    let v = blocks(24 << 10, 1000);
    let m1 = segalloc::stats().mapped;
    free(v, 1000);
    let m2 = segalloc::stats().mapped;
    let dropped = m1.saturating_sub(m2);
    eprintln!("segment_cache: {} KiB unmapped", dropped >> 10);
    if on {
        assert!(dropped > 8 * MIB, "only {dropped} bytes unmapped");
    } else {
        assert!(dropped < 4 * MIB, "{dropped} bytes unmapped");
    }
}

/// As `segment_cache`: the cached segments keep their free memory resident
/// up to `segment_cache_resident` bytes in all (2 MiB by default). (With
/// a long purge delay, as in `purge_min`.)
fn segment_cache_resident(on: bool) {
    segalloc::set_option("purge_delay_ms", "3600000").unwrap();
    let v = blocks(24 << 10, 1000);
    let r1 = segalloc::stats().resident;
    free(v, 1000);
    let r2 = segalloc::stats().resident;
    let dropped = r1.saturating_sub(r2);
    eprintln!("segment_cache_resident: RSS fell by {} KiB", dropped >> 10);
    if on {
        assert!(dropped < 8 * MIB, "RSS fell by {dropped} bytes");
    } else {
        assert!(dropped > 12 * MIB, "RSS fell by only {dropped} bytes");
    }
}

/// A freed 8 MiB block is cached, unless the cache may hold nothing.
fn large_cache(on: bool) {
    drop(std::hint::black_box(vec![1u8; 8 * MIB]));
    let cached = segalloc::stats().large_cached;
    assert_eq!(cached == 0, on, "{cached} bytes cached");
}

/// A thread exits holding a live block: its heap is parked whole, or its
/// segment abandoned when no heap may be parked.
fn parked_heaps(on: bool) {
    let p = std::thread::spawn(|| Box::into_raw(Box::new([7u8; 100])) as usize)
        .join()
        .unwrap();
    let n = segalloc::stats().segments_abandoned;
    // SAFETY: the box leaked above, freed once.
    drop(unsafe { Box::from_raw(p as *mut [u8; 100]) });
    assert_eq!(n, usize::from(on), "segments abandoned");
}

/// A new thread's small blocks come from segments taken from the break.
fn page_source(on: bool) {
    std::thread::spawn(|| free(blocks(50_000, 64), 64))
        .join()
        .unwrap();
    let brk = segalloc::stats().os_calls.brk;
    assert_eq!(brk > 0, on, "{brk} brk calls");
}

/// 100 MiB cannot be had under a 64 MiB limit.
fn limit(on: bool) {
    // SAFETY: a valid layout (opaque, as in `blocks`).
    let p = unsafe { alloc(std::hint::black_box(layout(100 * MIB))) };
    assert_eq!(std::hint::black_box(p).is_null(), on, "{p:p}");
    if !p.is_null() {
        // SAFETY: just allocated.
        unsafe { dealloc(p, layout(100 * MIB)) };
    }
}

/// With 40 MiB committed, past a 32 MiB soft limit, a freed 8 MiB block is
/// unmapped rather than cached.
fn limit_soft(on: bool) {
    let v = blocks(40 << 10, 1000);
    drop(std::hint::black_box(vec![1u8; 8 * MIB]));
    let cached = segalloc::stats().large_cached;
    assert_eq!(cached == 0, on, "{cached} bytes cached past the soft limit");
    free(v, 1000);
}

/// An 8 MiB block's mapping is advised for huge pages.
fn thp(on: bool) {
    let v = vec![1u8; 8 * MIB];
    assert_eq!(huge_page_advised(v.as_ptr() as usize), on, "VmFlags hg");
    // And huge pages form: the block's mapping has AnonHugePages (where the
    // kernel gives them only to advised mappings, only then).
    let huge = smaps_field(v.as_ptr() as usize, "AnonHugePages:");
    let kib: usize = huge.split_whitespace().nth(1).unwrap().parse().unwrap();
    eprintln!("thp {on}: {huge}");
    let madvise_only = std::fs::read_to_string(THP_SETTING).is_ok_and(|s| s.contains("[madvise]"));
    if on {
        assert!(kib >= 2048, "{huge}");
    } else if madvise_only {
        assert_eq!(kib, 0, "{huge}");
    }
}

/// Sparse 1000-byte pages (one block in 64 live): `collect()` gives back
/// their free OS pages, unless sub-page purge is off.
fn sub_purge(on: bool) {
    let v = blocks(16 << 10, 1000);
    let (kept, gone) = one_in(v, 64);
    free(gone, 1000);
    segalloc::collect();
    let n = segalloc::stats().purged_in_pages;
    assert_eq!(n == 0, on, "{n} bytes purged inside pages");
    free(kept, 1000);
}

/// Whether a thread named `segalloc-purge` runs in this process.
fn purger_runs() -> bool {
    std::fs::read_dir("/proc/self/task").unwrap().any(|t| {
        std::fs::read_to_string(t.unwrap().path().join("comm"))
            .is_ok_and(|c| c.trim() == "segalloc-purge")
    })
}

/// A slow path (new pages) starts the purger thread.
fn background(on: bool) {
    free(blocks(4096, 1000), 1000);
    let start = Instant::now();
    while !purger_runs() && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(purger_runs(), on, "a segalloc-purge thread");
}

/// Pages of 256-byte blocks, each keeping a quarter of its blocks at
/// offsets disjoint from its neighbours' (as tests/mesh.rs): `collect()`
/// merges them only with meshing on.
fn mesh(on: bool) {
    const BS: usize = 256;
    let v = blocks(256 * (64 << 10) / BS, BS);
    let (kept, gone): (Vec<usize>, Vec<usize>) = v
        .iter()
        .partition(|&&p| (p & 0xffff) / BS % 4 == (p >> 16) % 4);
    free(gone, BS);
    segalloc::collect();
    let n = segalloc::mesh_stats().pages_meshed;
    assert_eq!(n > 0, on, "{n} pages meshed");
    free(kept, BS);
}

/// A mapping that fails (beyond any address space): with `verbose`, a line.
fn verbose(_: bool) {
    // SAFETY: a valid layout; null is the expected answer (opaque).
    let p = unsafe { alloc(std::hint::black_box(layout(1 << 60))) };
    assert!(std::hint::black_box(p).is_null());
}

/// Whether what `verbose` and `show_stats` left on stderr is what they
/// leave on (`on`) or off.
fn stderr_shows(name: &str, err: &str, on: bool) -> Result<(), String> {
    let shown = match name {
        "verbose" => err.lines().any(|l| l.starts_with("segalloc: mmap of ")),
        "show_stats" => {
            err.lines().any(|l| l.starts_with("options:"))
                && err.lines().any(|l| l.starts_with("segalloc: requested"))
        }
        _ => return Ok(()),
    };
    if shown == on {
        Ok(())
    } else {
        Err(format!("{name} on stderr: shown {shown}, set {on}:\n{err}"))
    }
}

/// The probe of the case in `CASE`, in the child.
#[test]
fn child() {
    let Ok(case) = std::env::var(CASE) else {
        return;
    };
    if case == "refused" {
        refused();
        return;
    }
    if let Some(setting) = case.strip_prefix("thp_kernel:") {
        // Under SEGALLOC_THP=1, with the kernel's setting `setting` (a
        // file mounted over the real one): huge pages are in force, or
        // the option does nothing (no advice, sub-page purge on).
        let off = setting == "never";
        for size in [8 * MIB, 4 * MIB, 16 * MIB] {
            let v = vec![1u8; size];
            assert_eq!(huge_page_advised(v.as_ptr() as usize), !off, "VmFlags hg");
        }
        sub_purge(!off);
        return;
    }
    let (name, how) = case.split_once(':').unwrap();
    let e = EFFECTS
        .iter()
        .chain(PROFILER_EFFECTS)
        .find(|e| e.name == name)
        .unwrap();
    if how == "rust" {
        segalloc::set_option(e.name, e.value).unwrap();
    }
    drop(vec![1u8; 100]); // the first heap: the options are read
    let value = segalloc::runtime_options()
        .find(|o| o.name == name)
        .unwrap()
        .get();
    let default = segalloc::runtime_options()
        .find(|o| o.name == name)
        .unwrap()
        .default;
    assert_eq!(value != default, how != "none", "{name} is {value}");
    (e.probe)(how != "none");
}

/// A malformed value and an unknown name given to `set_option`: errors, and
/// the value in force kept (the parent checks the lines on stderr).
fn refused() {
    let delay = || {
        segalloc::runtime_options()
            .find(|o| o.name == "purge_delay_ms")
            .unwrap()
            .get()
    };
    assert_eq!(
        segalloc::set_option("purge_delay_ms", "soon"),
        Err(segalloc::OptionError::BadValue)
    );
    assert_eq!(delay(), 100);
    assert_eq!(
        segalloc::set_option("no_such_option", "1"),
        Err(segalloc::OptionError::Unknown)
    );
    assert_eq!(delay(), 100);
}

/// Whether `err` holds exactly the two lines that name what `refused` (or
/// `option_effects.c` with `bad`) gave: the malformed value and the
/// unknown name.
fn two_refusals(err: &str) -> Result<(), String> {
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("segalloc: "))
        .collect();
    match lines[..] {
        [a, b]
            if a.contains("ignoring SEGALLOC_PURGE_DELAY_MS=soon")
                && a.contains("keeping 100")
                && b.contains("ignoring no_such_option=1: no such option") =>
        {
            Ok(())
        }
        _ => Err(format!("not the two lines expected:\n{err}")),
    }
}

/// A malformed value or an unknown name, from Rust (`set_option`) and from
/// C (`segalloc_option_set`), is refused with an error, named on one line on
/// stderr, and the value in force kept (from the environment: see
/// tests/options.rs, `a_bad_value_is_named_on_one_line_and_the_default_kept`).
#[test]
fn a_refused_value_or_name_is_named_on_one_line_from_rust_and_c() {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env(CASE, "refused");
    for o in segalloc::runtime_options() {
        c.env_remove(o.env);
    }
    let (status, err) = run(c, "refused");
    assert!(status.success(), "{status:?}\n{err}");
    two_refusals(&err).unwrap();
    let dir = preload::scratch("refused-c");
    let include = format!("-I{}/include", preload::MANIFEST);
    let flags = [include.as_str(), "-fno-builtin", "-ldl"];
    let Some(exe) = preload::compile_c(&dir, "option_effects", &flags) else {
        return;
    };
    let mut c = Command::new(&exe);
    c.args(["purge_delay_ms", "bad", "soon"])
        .env("LD_PRELOAD", preload::cdylib());
    for o in segalloc::runtime_options() {
        c.env_remove(o.env);
    }
    let out = preload::run(c, &dir, "refused-c");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "{:?}\n{err}",
        out.status
    );
    two_refusals(&err).unwrap();
}

/// Where the kernel has transparent huge pages off, `SEGALLOC_THP=1` is a
/// no-op (no advice; purging, sub-page purge included, as without it) and
/// `SEGALLOC_VERBOSE=1` says so in one line; where it has them on, the
/// option works and nothing is said. The kernel's setting is faked by
/// mounting a file over it in a mount namespace of the child's own
/// (`unshare -m`, which needs root): skipped, with a note, where that is
/// not allowed. The choice itself is unit-tested in `src/os/thp.rs`.
#[test]
fn thp_is_a_no_op_with_one_line_where_the_kernel_has_it_off() {
    let dir = preload::scratch("thp-kernel");
    let mount = format!("mount --bind \"$0\" {THP_SETTING} && exec \"$@\"");
    let allowed = std::path::Path::new(THP_SETTING).exists()
        && Command::new("unshare")
            .args(["-m", "sh", "-c", &mount, THP_SETTING, "true"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !allowed {
        println!("note: cannot mount over {THP_SETTING} (unshare -m needs root); skipped");
        return;
    }
    for setting in ["never", "madvise"] {
        let fake = dir.join(setting);
        let text = match setting {
            "never" => "always madvise [never]\n",
            _ => "always [madvise] never\n",
        };
        std::fs::write(&fake, text).unwrap();
        let mut c = Command::new("unshare");
        c.args(["-m", "sh", "-c", &mount])
            .arg(&fake)
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
            .env(CASE, format!("thp_kernel:{setting}"));
        for o in segalloc::runtime_options() {
            c.env_remove(o.env);
        }
        c.env("SEGALLOC_THP", "1").env("SEGALLOC_VERBOSE", "1");
        let (status, err) = run(c, &format!("thp-{setting}"));
        assert!(status.success(), "kernel {setting}: {status:?}\n{err}");
        let lines = err
            .lines()
            .filter(|l| l.starts_with("segalloc: ") && l.contains("the option thp does nothing"))
            .count();
        assert_eq!(
            lines,
            usize::from(setting == "never"),
            "kernel {setting}:\n{err}"
        );
    }
}

/// Runs `cmd` (killed after 60 s, see `preload::run`) in a scratch
/// directory of its own; its status and stderr.
fn run(cmd: Command, what: &str) -> (std::process::ExitStatus, String) {
    let tag = format!("effects-{}", what.replace(':', "-"));
    let out = preload::run(cmd, &preload::scratch(&tag), &tag);
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each option's effect: set from the environment, set from Rust, and
/// absent when it is not set (every probe must tell them apart).
#[test]
fn every_option_has_its_effect_from_the_environment_and_rust() {
    let thp_here = kernel_thp_on();
    let mut failures = Vec::new();
    for e in EFFECTS.iter().chain(PROFILER_EFFECTS) {
        if e.name == "thp" && !thp_here {
            println!("note: this kernel has transparent huge pages off; thp skipped");
            continue;
        }
        for how in ["env", "rust", "none"] {
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.args(["--exact", "child", "--nocapture", "--test-threads", "1"])
                .env(CASE, format!("{}:{how}", e.name));
            // The variables a developer may have set stay out of it.
            for o in segalloc::runtime_options() {
                c.env_remove(o.env);
            }
            if how == "env" {
                c.env(format!("SEGALLOC_{}", e.name.to_ascii_uppercase()), e.value);
            }
            let what = format!("{}:{how}", e.name);
            let (status, err) = run(c, &what);
            if !status.success() {
                failures.push(format!("{what}: {status:?}\n{err}"));
                continue;
            }
            if let Err(m) = stderr_shows(e.name, &err, how != "none") {
                failures.push(format!("{what}: {m}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Each option's effect through the C ABI under `LD_PRELOAD`
/// (`tests/preload/option_effects.c`): set with `segalloc_option_set`,
/// `purge_min` also with `mallopt(M_TRIM_THRESHOLD)`, and not set.
#[test]
fn every_option_has_its_effect_from_c() {
    let dir = preload::scratch("effects-c");
    let include = format!("-I{}/include", preload::MANIFEST);
    let Some(exe) = preload::compile_c(&dir, "option_effects", &[&include, "-fno-builtin", "-ldl"])
    else {
        return;
    };
    let thp_here = kernel_thp_on();
    let mut failures = Vec::new();
    for e in EFFECTS {
        if e.name == "thp" && !thp_here {
            println!("note: this kernel has transparent huge pages off; thp skipped");
            continue;
        }
        let mut hows = vec![("c", e.value), ("none", e.value)];
        if e.name == "purge_min" {
            hows.push(("mallopt", "1073741824"));
        }
        for (how, value) in hows {
            let mut c = Command::new(&exe);
            c.args([e.name, how, value])
                .env("LD_PRELOAD", preload::cdylib());
            for o in segalloc::runtime_options() {
                c.env_remove(o.env);
            }
            let what = format!("c-{}-{how}", e.name);
            let out = preload::run(c, &dir, &what);
            let err = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() || out.stdout != b"ok\n" {
                failures.push(format!("{what}: {:?}\n{err}", out.status));
                continue;
            }
            if let Err(m) = stderr_shows(e.name, &err, how != "none") {
                failures.push(format!("{what}: {m}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
