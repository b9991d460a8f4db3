//! The sampled heap profiler (feature `profiling`): estimates against exact
//! counts kept here (at three rates), frees of sampled blocks, the leak
//! report, the pprof output decoded back, many threads, fork, statistics
//! exact with sampling on, `SEGALLOC_PROF`/`SEGALLOC_PROF_OUT` in a child
//! process writing its files at exit, the C ABI and python3 under
//! `LD_PRELOAD`, and stacks through frame pointers in a C program built
//! with them.
//!
//! The tests share the profiler (one process-wide table), so they take a
//! lock and identify their sites by function name.

use segalloc::profile::{self, Profile};
use std::hint::black_box;
use std::io::Read;
use std::sync::Mutex;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

mod common;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sums the figures of every site whose stack names `f`.
fn site_figures(p: &Profile, f: &str) -> (u64, u64, u64) {
    let mut t = (0, 0, 0);
    for (s, names) in p.named_sites() {
        if names.iter().any(|n| n.contains(f)) {
            t.0 += s.live_bytes;
            t.1 += s.live_blocks;
            t.2 += s.alloc_bytes;
        }
    }
    t
}

#[inline(never)]
fn site_small(out: &mut Vec<Vec<u8>>, n: usize, size: usize) {
    for _ in 0..n {
        out.push(black_box(Vec::with_capacity(size)));
    }
}

#[inline(never)]
fn site_medium(out: &mut Vec<Vec<u8>>, n: usize, size: usize) {
    for _ in 0..n {
        out.push(black_box(Vec::with_capacity(size)));
    }
}

#[inline(never)]
fn site_large(out: &mut Vec<Vec<u8>>, n: usize, size: usize) {
    for _ in 0..n {
        out.push(black_box(Vec::with_capacity(size)));
    }
}

#[inline(never)]
#[allow(clippy::vec_box)] // The boxes are the 24-byte allocations measured.
fn site_tiny(out: &mut Vec<Box<[u64; 3]>>, n: usize) {
    for _ in 0..n {
        out.push(black_box(Box::new([0u64; 3])));
    }
}

#[inline(never)]
fn site_churn(n: usize, size: usize) {
    for _ in 0..n {
        drop(black_box(Vec::<u8>::with_capacity(size)));
    }
}

fn within(est: u64, exact: u64, tol: f64) -> bool {
    (est as f64 - exact as f64).abs() <= tol * exact as f64
}

/// Every site holding at least 5% of the live heap is estimated within
/// 10% of the exact figure (8 KiB rate, 32 MiB per site: the relative
/// standard error is about sqrt(rate / bytes) = 1.6% for the small sites,
/// so 10% is some 6 standard errors: not flaky). Then every block is
/// freed, and the sites' live figures go to zero.
#[test]
fn estimates_match_exact_counts_and_frees_remove_samples() {
    let _g = serial();
    profile::start(8 << 10);
    let mib16 = 32 << 20;
    // The vectors holding the blocks are allocated here, not at the sites.
    let mut small = Vec::with_capacity(mib16 / 400);
    let mut medium = Vec::with_capacity(mib16 / 4000);
    let mut large = Vec::with_capacity(mib16 / 100_000);
    let mut tiny = Vec::with_capacity(mib16 / 24);
    site_small(&mut small, mib16 / 400, 400);
    site_medium(&mut medium, mib16 / 4000, 4000);
    site_large(&mut large, mib16 / 100_000, 100_000);
    site_tiny(&mut tiny, mib16 / 24);
    site_churn(40_000, 1000);
    let p = profile::snapshot();
    let exact = [
        ("site_small", small.len() * 400, small.len()),
        ("site_medium", medium.len() * 4000, medium.len()),
        ("site_large", large.len() * 100_000, large.len()),
        ("site_tiny", tiny.len() * 24, tiny.len()),
    ];
    for (name, bytes, blocks) in exact {
        let (est, est_blocks, _) = site_figures(&p, name);
        eprintln!(
            "{name}: estimated {est} bytes in {est_blocks} blocks, exact {bytes} in {blocks}"
        );
        assert!(
            within(est, bytes as u64, 0.10),
            "{name}: estimated {est}, exact {bytes}"
        );
        assert!(
            within(est_blocks, blocks as u64, 0.10),
            "{name}: estimated {est_blocks} blocks, exact {blocks}"
        );
    }
    // Freed at once: nothing live, but counted as allocated.
    let (live, _, total) = site_figures(&p, "site_churn");
    assert_eq!(live, 0, "site_churn holds nothing");
    assert!(
        within(total, 40_000_000, 0.10),
        "site_churn allocated {total}"
    );
    // Block bytes are at least the requested ones, for every site.
    for s in &p.sites {
        assert!(s.live_block_bytes >= s.live_bytes);
    }
    drop((small, medium, large, tiny));
    let p = profile::snapshot();
    for name in ["site_small", "site_medium", "site_large", "site_tiny"] {
        assert_eq!(
            site_figures(&p, name).0,
            0,
            "{name} still live after its frees"
        );
    }
    profile::stop();
}

/// The estimates at two more rates, each site within the larger of 10%
/// and four standard errors (`sqrt(rate / bytes)`) of its exact bytes and
/// blocks: 1 KiB (8 MiB a site) and 64 KiB (96 MiB a site).
#[test]
fn estimates_match_at_several_rates() {
    let _g = serial();
    for (rate, bytes) in [(1usize << 10, 8usize << 20), (64 << 10, 96 << 20)] {
        profile::start(rate);
        let mut small = Vec::with_capacity(bytes / 400);
        let mut medium = Vec::with_capacity(bytes / 4000);
        site_small(&mut small, bytes / 400, 400);
        site_medium(&mut medium, bytes / 4000, 4000);
        let p = profile::snapshot();
        profile::stop();
        let tol = (4.0 * (rate as f64 / bytes as f64).sqrt()).max(0.10);
        for (name, exact, blocks) in [
            ("site_small", small.len() * 400, small.len()),
            ("site_medium", medium.len() * 4000, medium.len()),
        ] {
            let (est, est_blocks, _) = site_figures(&p, name);
            assert!(
                within(est, exact as u64, tol),
                "rate {rate}: {name} estimated {est}, exact {exact}"
            );
            assert!(
                within(est_blocks, blocks as u64, tol),
                "rate {rate}: {name} estimated {est_blocks} blocks, exact {blocks}"
            );
        }
        drop((small, medium));
        let p = profile::snapshot();
        assert_eq!(site_figures(&p, "site_small").0, 0);
        assert_eq!(site_figures(&p, "site_medium").0, 0);
    }
}

#[inline(never)]
fn site_leaks(n: usize) {
    for _ in 0..n {
        std::mem::forget(black_box(vec![1u8; 1000]));
    }
}

#[inline(never)]
fn site_frees(n: usize) {
    let v: Vec<Vec<u8>> = (0..n).map(|_| black_box(vec![2u8; 1000])).collect();
    drop(v);
}

/// The report lists the site that leaked, and not the one that freed:
/// of this file's sites, exactly the leaking one, with its bytes.
#[test]
fn leak_report_lists_the_leaking_site() {
    let _g = serial();
    profile::start(16 << 10);
    site_leaks(4000);
    site_frees(4000);
    let p = profile::snapshot();
    profile::stop();
    let mut out = Vec::new();
    p.write_report(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("site_leaks"), "{text}");
    assert!(!text.contains("site_frees"), "{text}");
    let leaks = p.leaks();
    assert!(leaks
        .iter()
        .any(|s| p.names(s).iter().any(|n| n.contains("site_leaks"))));
    // Exactly the leaking site among this file's sites, with about the
    // bytes it leaked (4 MB at 16 KiB: a standard error of 6%; 4 of them).
    let mut leaked = 0;
    for s in &leaks {
        let names = p.names(s);
        if let Some(n) = names.iter().find(|n| n.contains("profile::site_")) {
            assert!(n.contains("site_leaks"), "{n} listed as leaking\n{text}");
            leaked += s.live_bytes;
        }
    }
    assert!(
        within(leaked, 4_000_000, 0.25),
        "site_leaks: {leaked} bytes"
    );
}

// --- a protobuf reader, just enough for profile.proto ---

fn varint(b: &[u8], i: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let x = b[*i];
        *i += 1;
        v |= u64::from(x & 0x7f) << shift;
        if x < 0x80 {
            return v;
        }
        shift += 7;
    }
}

enum Val<'a> {
    Int(u64),
    Bytes(&'a [u8]),
}

fn fields(b: &[u8]) -> Vec<(u64, Val<'_>)> {
    let mut i = 0;
    let mut v = Vec::new();
    while i < b.len() {
        let k = varint(b, &mut i);
        match k & 7 {
            0 => v.push((k >> 3, Val::Int(varint(b, &mut i)))),
            2 => {
                let n = varint(b, &mut i) as usize;
                v.push((k >> 3, Val::Bytes(&b[i..i + n])));
                i += n;
            }
            w => panic!("unexpected wire type {w}"),
        }
    }
    v
}

fn ints(b: &[u8]) -> Vec<u64> {
    let mut i = 0;
    let mut v = Vec::new();
    while i < b.len() {
        v.push(varint(b, &mut i));
    }
    v
}

fn int(fs: &[(u64, Val<'_>)], f: u64) -> u64 {
    fs.iter()
        .find_map(|(k, v)| match v {
            Val::Int(x) if *k == f => Some(*x),
            _ => None,
        })
        .unwrap_or(0)
}

#[inline(never)]
fn site_pprof(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|_| black_box(vec![3u8; 2000])).collect()
}

/// The pprof output gunzips and decodes: five sample types, the string
/// table starting with "", every sample's locations and every location's
/// functions defined, inuse_space summing to the profile's live bytes, and
/// our site's function named.
#[test]
fn pprof_output_decodes() {
    let _g = serial();
    profile::start(16 << 10);
    let keep = site_pprof(4000);
    let p = profile::snapshot();
    profile::stop();
    let mut gz = Vec::new();
    p.write_pprof(&mut gz).unwrap();
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .unwrap();
    let top = fields(&raw);
    let strings: Vec<String> = top
        .iter()
        .filter_map(|(k, v)| match v {
            Val::Bytes(b) if *k == 6 => Some(String::from_utf8(b.to_vec()).unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(strings[0], "");
    let types: Vec<String> = top
        .iter()
        .filter_map(|(k, v)| match v {
            Val::Bytes(b) if *k == 1 => Some(strings[int(&fields(b), 1) as usize].clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        types,
        [
            "alloc_objects",
            "alloc_space",
            "inuse_objects",
            "inuse_space",
            "inuse_block_space"
        ]
    );
    let mappings: Vec<u64> = top
        .iter()
        .filter_map(|(k, v)| match v {
            Val::Bytes(b) if *k == 3 => Some(int(&fields(b), 1)),
            _ => None,
        })
        .collect();
    assert!(!mappings.is_empty(), "no mapping");
    let mut locs = std::collections::HashMap::new();
    let mut funcs = std::collections::HashMap::new();
    for (k, v) in &top {
        if let (4 | 5, Val::Bytes(b)) = (*k, v) {
            let fs = fields(b);
            if *k == 4 {
                let lines: Vec<u64> = fs
                    .iter()
                    .filter_map(|(k, v)| match v {
                        Val::Bytes(l) if *k == 4 => Some(int(&fields(l), 1)),
                        _ => None,
                    })
                    .collect();
                let m = int(&fs, 2);
                assert!(m == 0 || mappings.contains(&m), "location's mapping {m}");
                locs.insert(int(&fs, 1), lines);
            } else if *k == 5 {
                funcs.insert(int(&fs, 1), strings[int(&fs, 2) as usize].clone());
            }
        }
    }
    let mut inuse = 0;
    let mut named = false;
    let mut samples = 0;
    for (k, v) in &top {
        let Val::Bytes(b) = v else { continue };
        if *k != 2 {
            continue;
        }
        samples += 1;
        let fs = fields(b);
        let mut ids = Vec::new();
        let mut vals = Vec::new();
        for (k, v) in &fs {
            if let Val::Bytes(x) = v {
                if *k == 1 {
                    ids = ints(x);
                } else if *k == 2 {
                    vals = ints(x);
                }
            }
        }
        assert_eq!(vals.len(), 5);
        inuse += vals[3];
        for id in ids {
            let lines = locs.get(&id).expect("a sample's location is defined");
            for f in lines {
                let name = funcs.get(f).expect("a location's function is defined");
                named |= name.contains("site_pprof");
            }
        }
    }
    assert_eq!(samples, p.sites.len());
    assert_eq!(inuse, p.live_bytes());
    assert!(named, "no function named site_pprof");
    assert_eq!(int(&top, 12), 16 << 10, "period");
    drop(keep);
}

#[inline(never)]
fn site_thread(out: &mut Vec<Vec<u8>>, n: usize) {
    for _ in 0..n {
        out.push(black_box(vec![4u8; 700]));
    }
}

/// Four threads sample at once; their site's estimate is within 10%.
#[test]
fn many_threads_sample_at_once() {
    let _g = serial();
    profile::start(8 << 10);
    let n = (8 << 20) / 700;
    let barrier = std::sync::Barrier::new(5);
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                sc.spawn(|| {
                    let mut v = Vec::with_capacity(n);
                    site_thread(&mut v, n);
                    barrier.wait(); // snapshot taken
                    barrier.wait();
                    drop(v);
                })
            })
            .collect();
        barrier.wait();
        let p = profile::snapshot();
        barrier.wait();
        for h in hs {
            h.join().unwrap();
        }
        let (est, _, _) = site_figures(&p, "site_thread");
        let exact = 4 * n as u64 * 700;
        assert!(within(est, exact, 0.10), "estimated {est}, exact {exact}");
    });
    let p = profile::snapshot();
    assert_eq!(site_figures(&p, "site_thread").0, 0);
    profile::stop();
}

/// Not a test of its own: the child process of `env_starts_and_writes_at_exit`.
#[test]
fn child_leaks_at_exit() {
    if std::env::var_os("PROFILE_TEST_CHILD").is_none() {
        return;
    }
    site_leaks(20_000);
    let v = site_pprof(100);
    drop(v);
}

/// `SEGALLOC_PROF=1` starts sampling at the first allocation, and
/// `SEGALLOC_PROF_OUT` writes the four files at exit, the report naming the
/// leaking site.
#[test]
fn env_starts_and_writes_at_exit() {
    let dir = std::env::temp_dir().join(format!("segalloc-prof-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = dir.join("heap");
    let st = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_leaks_at_exit", "--test-threads=1"])
        .env("PROFILE_TEST_CHILD", "1")
        .env("SEGALLOC_PROF", "1")
        .env("SEGALLOC_PROF_RATE", "64K")
        .env("SEGALLOC_PROF_OUT", &prefix)
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    let read = |ext: &str| std::fs::read(format!("{}.{ext}", prefix.display())).unwrap();
    let report = String::from_utf8(read("leaks.txt")).unwrap();
    assert!(report.contains("site_leaks"), "{report}");
    let folded = String::from_utf8(read("folded")).unwrap();
    assert!(folded.lines().any(|l| l.contains("site_leaks")), "{folded}");
    let svg = String::from_utf8(read("svg")).unwrap();
    assert!(common::check_xml(&svg) > 3, "an SVG with frames");
    assert!(svg.contains("site_leaks"));
    let gz = read("pb.gz");
    assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Builds the preload library (features `override,profiling`) in the
/// target directory `target_name` (with `rustflags` if given: one target
/// directory for each), and `tests/preload/profile.c` with `cflags` in
/// the scratch directory `name` (emptied first, so one for each test):
/// the library, the program and the scratch directory. None (and a note)
/// without a C compiler.
fn preload_build(
    name: &str,
    target_name: &str,
    rustflags: Option<&str>,
    cflags: &[&str],
) -> Option<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
    use std::path::Path;
    use std::process::Command;
    let have_cc = Command::new("cc").arg("--version").output().is_ok();
    if !have_cc {
        println!("note: no C compiler (cc); skipped");
        return None;
    }
    let manifest = env!("CARGO_MANIFEST_DIR");
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join(target_name);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args([
            "build",
            "--release",
            "--features",
            "override,profiling",
            "--lib",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(manifest);
    if let Some(f) = rustflags {
        build.env("RUSTFLAGS", f);
    }
    let out = build.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let so = target.join("release/libsegalloc.so");
    let exe = scratch.join("profile");
    let out = Command::new("cc")
        .args(cflags)
        .arg("-o")
        .arg(&exe)
        .arg(Path::new(manifest).join("tests/preload/profile.c"))
        .arg("-ldl")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some((so, exe, scratch))
}

/// The C ABI under `LD_PRELOAD`: `tests/preload/profile.c` sets the option
/// `prof` (which starts sampling) and leaks from one function, starts
/// sampling again with `segalloc_prof_start`, leaks from another, churns in another,
/// and dumps with `segalloc_prof_dump`; `SEGALLOC_PROF_OUT` writes again at
/// exit. Both reports name the leaking function and not the churning one.
/// Builds the preload library with `override,profiling` in a target
/// directory of its own (the first run takes a minute or two); skipped
/// without a C compiler.
#[test]
fn c_abi_dump_under_preload() {
    let Some((so, exe, scratch)) =
        preload_build("prof-preload", "prof-preload-target", None, &["-O1", "-g"])
    else {
        return;
    };
    let dump = scratch.join("dump");
    let at_exit = scratch.join("exit");
    let out = std::process::Command::new(&exe)
        .arg(&dump)
        .env("LD_PRELOAD", &so)
        .env("SEGALLOC_PROF_OUT", &at_exit)
        // The program starts sampling itself and checks what each step
        // did (and, in the tests below, which unwinder took every stack):
        // not with sampling started at its first allocation, as a run of
        // this suite with `SEGALLOC_PROF=1` would have it.
        .env_remove("SEGALLOC_PROF")
        .env_remove("SEGALLOC_PROF_RATE")
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "{out:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for prefix in [&dump, &at_exit] {
        let report = std::fs::read_to_string(format!("{}.leaks.txt", prefix.display())).unwrap();
        assert!(report.contains("leak_site"), "{report}");
        assert!(!report.contains("churn_site"), "{report}");
        // Sampled after `segalloc_option_set("prof", "1")`, before the
        // start, at the rate set through the C ABI (128 KiB): about 60
        // samples live of its 8 MiB, about 14 at the default 512 KiB.
        let samples = live_samples_of(&report, "option_site");
        assert!(
            samples >= 32,
            "option_site: {samples} live samples\n{report}"
        );
        let gz = std::fs::read(format!("{}.pb.gz", prefix.display())).unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    }
}

/// The leak report's stacks (file and line of every frame, innermost
/// first), by site, of the sites naming `function`.
fn stacks_naming(report: &str, function: &str) -> Vec<Vec<String>> {
    report
        .split("\n#")
        .skip(1)
        .map(|site| {
            site.lines()
                .skip(1)
                .take_while(|l| !l.is_empty())
                .map(|l| l.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|frames| frames.iter().any(|l| l.starts_with(function)))
        .collect()
}

/// Stacks by segalloc's own walk of the unwind tables (the default,
/// `SEGALLOC_PROF_UNWIND=dwarf`) from C under `LD_PRELOAD`, in a build with
/// no frame pointers (`tests/preload/profile.c` at `-O2`, the library at
/// its default): every stack came by the walk (none by the system
/// unwinder, which the report's first line would count), and the sites'
/// stacks, symbolised, are those the system unwinder gives
/// (`SEGALLOC_PROF_UNWIND=unwinder`) for the same program: `leak_site`,
/// `option_site` and then `main`, through to the C library's start.
/// Shares the library of `c_abi_dump_under_preload`.
#[test]
fn c_stacks_by_the_unwind_tables() {
    let Some((so, exe, scratch)) =
        preload_build("prof-dwarf", "prof-preload-target", None, &["-O2", "-g"])
    else {
        return;
    };
    let mut reports = Vec::new();
    for unwind in ["dwarf", "unwinder"] {
        let dump = scratch.join(unwind);
        // Chosen through the C ABI (the program's second argument).
        let out = std::process::Command::new(&exe)
            .arg(&dump)
            .arg(unwind)
            .env("LD_PRELOAD", &so)
            .env_remove("SEGALLOC_PROF_UNWIND")
            // As in `c_abi_dump_under_preload`.
            .env_remove("SEGALLOC_PROF")
            .env_remove("SEGALLOC_PROF_RATE")
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stdout == b"ok\n",
            "{unwind}: {out:?}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report = std::fs::read_to_string(format!("{}.leaks.txt", dump.display())).unwrap();
        let head = report.lines().next().unwrap().to_string();
        if unwind == "dwarf" {
            assert!(head.contains(", 0 by the system's)"), "{report}");
        } else {
            assert!(head.contains(": 0 by its cached walk"), "{report}");
        }
        reports.push(report);
    }
    for f in ["leak_site", "option_site"] {
        let (fast, sys) = (stacks_naming(&reports[0], f), stacks_naming(&reports[1], f));
        assert!(!fast.is_empty(), "{f}: {}", reports[0]);
        assert_eq!(fast, sys, "{f}:\n{}\n{}", reports[0], reports[1]);
        let at = |s: &str| fast[0].iter().position(|l| l.starts_with(s));
        let (Some(l), Some(m)) = (at(f), at("main")) else {
            panic!("{f} and main not both in {:?}", fast[0]);
        };
        assert!(l < m, "{:?}", fast[0]);
    }
}

/// Stacks through frame pointers (`SEGALLOC_PROF_UNWIND=fp`, and the option
/// set through the C ABI instead), in a build
/// with them throughout: the preload library built with `-C
/// force-frame-pointers=yes`, `tests/preload/profile.c` with `-O2
/// -fno-omit-frame-pointer`. Every stack came through frame pointers, and
/// the leaking site's stack names `leak_site` and then its caller `main`
/// (the unwinder is never asked: a walk that failed would fall back to it,
/// which the report's count would show). Builds a library of its own (a
/// few minutes the first time).
#[test]
fn c_stacks_through_frame_pointers() {
    let Some((so, exe, scratch)) = fp_preload_build("prof-fp") else {
        return;
    };
    // The unwinder chosen from the environment, then through the C ABI
    // (`segalloc_option_set("prof_unwind", "fp")`, the program's second
    // argument) with the default (dwarf) in the environment.
    for by_c in [false, true] {
        let dump = scratch.join(if by_c { "dump-c" } else { "dump-env" });
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg(&dump)
            .env("LD_PRELOAD", &so)
            // As in `c_abi_dump_under_preload`.
            .env_remove("SEGALLOC_PROF")
            .env_remove("SEGALLOC_PROF_RATE");
        if by_c {
            cmd.arg("fp").env_remove("SEGALLOC_PROF_UNWIND");
        } else {
            cmd.env("SEGALLOC_PROF_UNWIND", "fp");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success() && out.stdout == b"ok\n",
            "{out:?}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report = std::fs::read_to_string(format!("{}.leaks.txt", dump.display())).unwrap();
        let head = report.lines().next().unwrap();
        assert!(head.contains(" 0 by the unwinder"), "by C {by_c}: {report}");
        assert!(
            !head.contains("(0 stacks by frame"),
            "by C {by_c}: {report}"
        );
        // The first site (the most bytes) is the leak: its frames, innermost
        // first, name leak_site and then main.
        let frames: Vec<&str> = report
            .split("\n#1 ")
            .nth(1)
            .unwrap()
            .lines()
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect();
        let at = |f: &str| frames.iter().position(|l| l.trim_start().starts_with(f));
        let (Some(l), Some(m)) = (at("leak_site"), at("main")) else {
            panic!("leak_site and main not both in {frames:?}\n{report}");
        };
        assert!(l < m, "{report}");
        assert!(!report.contains("churn_site"), "{report}");
    }
}

/// The unwinder chosen from Rust (`set_option("prof_unwind", ..)`): a Rust
/// program built with frame pointers throughout, against the library built
/// the same way (`tests/preload/prof_unwind.rs`, compiled here with rustc),
/// takes every stack by frame pointers with `fp` and every one with the
/// unwinder with `dwarf`, as the report's first line counts them (the
/// environment at its default, dwarf). Skipped without a C compiler, as the
/// library's build is shared with the test above.
#[test]
fn rust_set_option_chooses_the_unwinder() {
    use std::process::Command;
    let Some((so, _, scratch)) = fp_preload_build("prof-fp-rust") else {
        return;
    };
    let release = so.parent().unwrap();
    let exe = scratch.join("prof_unwind");
    let out = Command::new("rustc")
        .args([
            "--edition",
            "2021",
            "-O",
            "-C",
            "force-frame-pointers=yes",
            "--extern",
        ])
        .arg(format!(
            "segalloc={}",
            release.join("libsegalloc.rlib").display()
        ))
        .arg("-L")
        .arg(format!("dependency={}", release.join("deps").display()))
        .arg("-o")
        .arg(&exe)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/preload/prof_unwind.rs"
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for unwind in ["fp", "dwarf"] {
        let out = Command::new(&exe)
            .arg(unwind)
            .env_remove("SEGALLOC_PROF_UNWIND")
            // As in `c_abi_dump_under_preload`.
            .env_remove("SEGALLOC_PROF")
            .env_remove("SEGALLOC_PROF_RATE")
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{unwind}: {out:?}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (fp_none, unwinder_none) = (
            head.contains("(0 stacks by frame pointers"),
            head.contains(" 0 by the unwinder"),
        );
        assert_eq!(
            (fp_none, unwinder_none),
            (unwind == "dwarf", unwind == "fp"),
            "{unwind}: {head}"
        );
    }
}

/// [`preload_build`] with frame pointers throughout (the library with `-C
/// force-frame-pointers=yes`, the C program with `-fno-omit-frame-pointer`),
/// in one target directory that the tests needing such a library share.
fn fp_preload_build(
    name: &str,
) -> Option<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
    preload_build(
        name,
        "prof-fp-target",
        Some("-C force-frame-pointers=yes"),
        &["-O2", "-g", "-fno-omit-frame-pointer"],
    )
}

/// The live samples of the site of a leak report whose stack names
/// `function` (the figure ending its `#k` line); 0 if no site does.
fn live_samples_of(report: &str, function: &str) -> u64 {
    report
        .split("\n#")
        .skip(1)
        .find(|site| {
            site.lines()
                .skip(1)
                .any(|l| l.trim_start().starts_with(function))
        })
        .map_or(0, |site| {
            let head = site.lines().next().unwrap();
            let before = head.trim_end().strip_suffix(" live samples").unwrap();
            before.rsplit(' ').next().unwrap().parse().unwrap()
        })
}

/// A real program under `LD_PRELOAD`: python3 with the profiling preload
/// library, `SEGALLOC_PROF=1` and `SEGALLOC_PROF_OUT`, builds a list of
/// 100,000 byte strings of 1000 bytes; its output is the same as without
/// the library, and at exit the four files are written, the report with
/// samples and live bytes of the order of the list's. Skipped without
/// python3 or a C compiler.
#[test]
fn python_under_preload_writes_a_profile_at_exit() {
    use std::process::Command;
    if Command::new("python3").arg("--version").output().is_err() {
        println!("note: no python3; skipped");
        return;
    }
    let Some((so, _, scratch)) =
        preload_build("prof-python", "prof-preload-target", None, &["-O1", "-g"])
    else {
        return;
    };
    let script =
        "x = [bytes([i % 256]) * 1000 for i in range(100000)]\nprint(sum(len(b) for b in x))";
    let plain = Command::new("python3")
        .args(["-c", script])
        .output()
        .unwrap();
    let prefix = scratch.join("python");
    let out = Command::new("python3")
        .args(["-c", script])
        .env("LD_PRELOAD", &so)
        .env("SEGALLOC_PROF", "1")
        .env("SEGALLOC_PROF_RATE", "64K")
        .env("SEGALLOC_PROF_OUT", &prefix)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, plain.stdout);
    assert_eq!(out.stdout, b"100000000\n");
    let read = |ext: &str| std::fs::read(format!("{}.{ext}", prefix.display())).unwrap();
    let report = String::from_utf8(read("leaks.txt")).unwrap();
    // "... rate 65536 bytes; N samples taken ..." then "B bytes live ...".
    let num_after = |key: &str| -> u64 {
        let i = report
            .find(key)
            .unwrap_or_else(|| panic!("{key} in {report}"));
        let head = report[..i].trim_end();
        let start = head
            .rfind(|c: char| !c.is_ascii_digit())
            .map_or(0, |j| j + 1);
        head[start..].parse().unwrap()
    };
    let samples = num_after(" samples taken");
    let live = num_after(" bytes live");
    // 100 MB allocated at 64 KiB: about 1,500 samples; whatever python
    // still holds at exit is what the report shows.
    assert!(samples > 500, "{samples} samples\n{report}");
    assert!(live > 0, "{report}");
    assert_eq!(&read("pb.gz")[..2], &[0x1f, 0x8b]);
    assert!(!read("folded").is_empty());
    assert!(common::check_xml(&String::from_utf8(read("svg")).unwrap()) > 3);
}

#[inline(never)]
fn site_forked_child() -> Vec<Vec<u8>> {
    (0..64).map(|_| black_box(vec![5u8; 4096])).collect()
}

/// `fork` while two other threads sample every allocation (so the table's
/// lock is often held; with the fork handlers' taking of it removed, this
/// failed in 3 runs of 4): each child samples, frees sampled blocks and takes a
/// snapshot, and exits 0 within its alarm's 10 s (a lock left held would
/// hang it until the alarm kills it).
#[test]
fn fork_while_sampling() {
    let _g = serial();
    profile::start(256);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|sc| {
        for _ in 0..2 {
            sc.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    drop(black_box(site_forked_child()));
                }
            });
        }
        let mut failure = None;
        for _ in 0..200 {
            // SAFETY: the child only allocates, snapshots and `_exit`s; the
            // allocator's fork handlers make its locks usable there.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0);
            if pid == 0 {
                // SAFETY: in the child: an alarm, then `_exit`.
                unsafe {
                    libc::alarm(10);
                    drop(black_box(site_forked_child()));
                    let n = profile::snapshot().samples;
                    libc::_exit(if n > 0 { 0 } else { 3 });
                }
            }
            let mut status = 0;
            // SAFETY: waiting for our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                failure = Some(status);
                break;
            }
        }
        // Stopped before any assertion, so that a failure ends the test.
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(failure, None, "a child's wait status");
    });
    profile::stop();
}

/// Not a test of its own: the child process of
/// `statistics_stay_exact_with_sampling_on` (alone in its process, so that
/// no other thread allocates between its snapshots).
#[test]
fn child_statistics_with_sampling() {
    if std::env::var_os("PROFILE_STATS_CHILD").is_none() {
        return;
    }
    // Warm up what the loop below allocates once (the vector of blocks,
    // and whatever the unwinder and the snapshot set up at their first use).
    let mut v: Vec<Vec<u8>> = Vec::with_capacity(20_000);
    profile::start(1 << 10);
    for _ in 0..100 {
        drop(black_box(vec![0u8; 5000]));
    }
    drop(profile::snapshot());
    profile::stop();
    let base = segalloc::stats();
    common::identity_holds(&base);
    let tb = segalloc::thread_stats();
    // 1 KiB rate: about one block in 4 of 300 bytes, one in 2 of 900, is
    // served by a mapping of its own.
    profile::start(1 << 10);
    let mut held = 0;
    for i in 0..20_000 {
        let size = [24, 300, 900, 5000][i % 4];
        v.push(black_box(Vec::with_capacity(size)));
        held += size;
    }
    let s = segalloc::stats();
    let ts = segalloc::thread_stats();
    let p = profile::snapshot();
    profile::stop();
    // (Nothing printed: the harness captures it in a growing buffer.)
    common::identity_holds(&s);
    // The thread's own view counts the samples as what they stand for too
    // (all were made by this thread).
    assert_eq!(
        ts.allocations - tb.allocations,
        20_000,
        "thread allocations"
    );
    assert_eq!(ts.frees, tb.frees, "thread frees");
    assert_eq!(ts.requested - tb.requested, held, "thread requested");
    assert_eq!(ts.live_blocks() - tb.live_blocks(), 20_000, "thread live");
    assert_eq!(
        ts.sampled_objects - tb.sampled_objects,
        s.sampled_objects - base.sampled_objects
    );
    assert!(s.sampled_objects > 1000, "{} sampled", s.sampled_objects);
    assert!(p.live_samples as usize >= s.sampled_objects);
    assert_eq!(s.requested - base.requested, held, "requested");
    assert_eq!(s.live_blocks() - base.live_blocks(), 20_000, "live blocks");
    assert_eq!(s.allocations - base.allocations, 20_000, "allocations");
    assert_eq!(s.frees, base.frees, "frees");
    assert_eq!(s.large_objects, base.large_objects, "no large object");
    assert_eq!(s.large_bytes, base.large_bytes, "no large byte");
    // Allocated at their classes' block sizes, exactly as unsampled.
    let blocks: usize = v
        .iter()
        // SAFETY: live blocks of segalloc.
        .map(|b| unsafe { segalloc::usable_size(b.as_ptr()) })
        .sum();
    assert_eq!(s.allocated - base.allocated, blocks, "allocated");
    drop(p);
    // Another thread frees the last half: its own view counts every free,
    // the samples' among them, and the bytes they asked for.
    let half: Vec<Vec<u8>> = v.split_off(10_000);
    let half_bytes: usize = half.iter().map(|b| b.capacity()).sum();
    let (frees, requested) = std::thread::spawn(move || {
        let mut half = half;
        let a = segalloc::thread_stats();
        half.clear(); // the blocks, not yet the vector's own buffer
        let b = segalloc::thread_stats();
        (b.frees - a.frees, a.requested.wrapping_sub(b.requested))
    })
    .join()
    .unwrap();
    assert_eq!(frees, 10_000, "the other thread's frees");
    assert_eq!(requested, half_bytes, "the other thread's requested");
    v.clear();
    let after = segalloc::stats();
    common::identity_holds(&after);
    assert_eq!(after.requested, base.requested);
    assert_eq!(after.live_blocks(), base.live_blocks());
    // Blocks sampled before `base` (with `SEGALLOC_PROF=1` sampling runs
    // from start-up) may still be live: back to the base, not to 0.
    assert_eq!(after.sampled_objects, base.sampled_objects);
    assert_eq!(after.sampled_bytes, base.sampled_bytes);
    // The snapshot allocated and freed some; the clear freed the 20,000.
    assert_eq!(
        after.frees - s.frees,
        after.allocations - s.allocations + 20_000
    );
    assert_eq!(after.large_objects, base.large_objects);
    drop(v);
}

/// With sampling on, `stats()` counts sampled blocks as the small blocks
/// they stand for (`sampled_objects`), never as large objects, and every
/// figure moves as it would without sampling (see `child_statistics_with_sampling`).
#[test]
fn statistics_stay_exact_with_sampling_on() {
    let st = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_statistics_with_sampling",
            "--test-threads=1",
        ])
        .env("PROFILE_STATS_CHILD", "1")
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}{}",
        String::from_utf8_lossy(&st.stdout),
        String::from_utf8_lossy(&st.stderr)
    );
}

/// Sampled small blocks take their mappings back from the substitutes' own
/// cache (`large::sampled`): once warm, rounds of sampled blocks held and
/// freed make no system call, and none of their mappings goes through the
/// large-block cache (where large blocks would take, cut or grow them).
/// In a child process: the counts are process-wide.
#[test]
fn sampled_blocks_reuse_their_mappings() {
    let st = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_sampled_mappings", "--test-threads=1"])
        .env("PROFILE_MAPPINGS_CHILD", "1")
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}{}",
        String::from_utf8_lossy(&st.stdout),
        String::from_utf8_lossy(&st.stderr)
    );
}

#[test]
fn child_sampled_mappings() {
    if std::env::var_os("PROFILE_MAPPINGS_CHILD").is_none() {
        return;
    }
    // 3,000-byte blocks at a 4 KiB rate: about one in two sampled, each
    // served by a 4 KiB mapping (the block shares its header's page). The first round holds 200 (about 100
    // samples live at once, well within the cache's 256 mappings), the
    // rest 48 each: fewer than the first's, so all from the cache.
    fn round(v: &mut Vec<Vec<u8>>, n: usize) {
        for _ in 0..n {
            v.push(black_box(Vec::with_capacity(3000)));
        }
        v.clear();
    }
    let mut v = Vec::with_capacity(200);
    profile::start(1 << 12);
    let before = segalloc::stats();
    round(&mut v, 200);
    let made = profile::snapshot().samples;
    let a = segalloc::stats();
    for _ in 0..50 {
        round(&mut v, 48);
    }
    let b = segalloc::stats();
    let p = profile::snapshot();
    profile::stop();
    common::identity_holds(&a);
    common::identity_holds(&b);
    assert!(p.samples > made + 500, "{} samples", p.samples - made);
    assert_eq!(a.large_cached, before.large_cached, "large-block cache");
    assert_eq!(b.large_cached, before.large_cached, "large-block cache");
    let calls = |s: &segalloc::Stats| (s.os_calls.mmap, s.os_calls.munmap, s.os_calls.mremap);
    assert_eq!(calls(&b), calls(&a), "system calls over 50 warm rounds");
}
