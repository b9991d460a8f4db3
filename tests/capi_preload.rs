//! Real programs under `LD_PRELOAD=libsegalloc.so` (the C API, feature
//! `override`): the symbol table, a C program checking every exported function
//! and its edge cases, the system's python3 churning in threads and forking,
//! and command-line tools (sort, grep; sqlite3 and git when installed). Each
//! program must exit 0 and print exactly what it prints without the preload.
//!
//! The test builds the cdylib itself (`preload::cdylib`), so it runs
//! under a plain `cargo test`. Set `SEGALLOC_PRELOAD_SO` to use an already
//! built library instead.
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};

mod common;

#[path = "common/preload.rs"]
mod preload;
use preload::{cdylib, compile_c, have, run, scratch, MANIFEST};

/// Runs the command `make()` builds twice, without and with the preload;
/// both must exit 0 and print the same stdout (and stderr when
/// `same_stderr`). Returns the preloaded run's output.
fn compare(make: impl Fn() -> Command, dir: &Path, tag: &str, same_stderr: bool) -> Output {
    let plain = run(make(), dir, &format!("{tag}.plain"));
    let mut cmd = make();
    cmd.env("LD_PRELOAD", cdylib());
    let pre = run(cmd, dir, &format!("{tag}.preload"));
    let show = |o: &Output| {
        format!(
            "status {:?}\n--- stdout (first 2000 bytes)\n{}\n--- stderr\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout[..o.stdout.len().min(2000)]),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(
        plain.status.success(),
        "{tag} fails even without the preload:\n{}",
        show(&plain)
    );
    assert!(
        pre.status.success(),
        "{tag} fails under the preload:\n{}",
        show(&pre)
    );
    assert!(
        plain.stdout == pre.stdout,
        "{tag}: stdout differs under the preload:\n{}",
        show(&pre)
    );
    if same_stderr {
        assert!(
            plain.stderr == pre.stderr,
            "{tag}: stderr differs:\n{}",
            show(&pre)
        );
    }
    pre
}

/// Every C entry point the issue lists is exported, as a defined function.
#[test]
fn cdylib_exports_the_c_api() {
    let so = cdylib();
    if !have("nm") {
        println!("note: nm not found; symbol check skipped");
        return;
    }
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(so)
        .output()
        .expect("nm");
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    let exported: Vec<&str> = table
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_addr, kind, name) = (f.next()?, f.next()?, f.next()?);
            (kind == "T").then_some(name)
        })
        .collect();
    for name in [
        "malloc",
        "free",
        "calloc",
        "realloc",
        "reallocarray",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
        "valloc",
        "pvalloc",
        "malloc_usable_size",
        "free_sized",
        "free_aligned_sized",
        "__libc_malloc",
        "__libc_free",
        "__libc_calloc",
        "__libc_realloc",
        "__libc_memalign",
        "malloc_stats",
        "mallinfo2",
        "mallinfo",
        "malloc_info",
    ] {
        assert!(
            exported.contains(&name),
            "{name} not exported; nm -D says:\n{table}"
        );
    }
    // Nothing of Rust's leaks out: only the C API.
    assert!(
        !exported
            .iter()
            .any(|n| n.starts_with("_ZN") || n.starts_with("_R")),
        "Rust symbols exported:\n{table}"
    );
}

/// tests/preload/capi_check.c: every function and edge case, threads, fork
/// from a multi-threaded parent, dlopen/dlclose of an allocating library.
#[test]
fn c_program_checks_every_function() {
    let so = cdylib();
    if !have("cc") {
        println!("note: no C compiler (cc); C API program skipped");
        return;
    }
    let dir = scratch("c");
    let src = Path::new(MANIFEST).join("tests/preload");
    let exe = dir.join("capi_check");
    let lib = dir.join("libcapi_dlib.so");
    for (args, what) in [
        (
            vec![
                "-O1".into(),
                "-pthread".into(),
                "-o".into(),
                exe.clone().into_os_string(),
                src.join("capi_check.c").into_os_string(),
                "-ldl".into(),
            ],
            "capi_check",
        ),
        (
            vec![
                "-O1".into(),
                "-shared".into(),
                "-fPIC".into(),
                "-o".into(),
                lib.clone().into_os_string(),
                src.join("capi_dlib.c").into_os_string(),
            ],
            "capi_dlib",
        ),
    ] {
        let out = Command::new("cc").args(&args).output().expect("run cc");
        assert!(
            out.status.success(),
            "cc {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Against glibc: proves the checks themselves are right.
    let plain = run(
        {
            let mut c = Command::new(&exe);
            c.arg(&lib);
            c
        },
        &dir,
        "plain",
    );
    assert!(
        plain.status.success(),
        "capi_check fails against glibc:\n{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let mut c = Command::new(&exe);
    c.arg("--segalloc").arg(&lib).env("LD_PRELOAD", so);
    let pre = run(c, &dir, "preload");
    let stderr = String::from_utf8_lossy(&pre.stderr);
    assert!(
        pre.status.success(),
        "capi_check under segalloc: {:?}\n{stderr}",
        pre.status
    );
    assert_eq!(plain.stdout, pre.stdout);
    // malloc_stats wrote segalloc's statistics table, and nothing else went
    // to stderr.
    assert!(
        stderr.starts_with("segalloc: requested ") && stderr.contains("os calls: mmap"),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("capi_check"), "stderr: {stderr}");
}

/// Runs tests/preload/churn.py (20,000 rounds) with and without the
/// preload, with `env` set, in scratch directory `name`; returns the
/// preloaded run's output, checked as `compare` does. `None` without python3.
fn python_churn(name: &str, env: &[(&str, &str)]) -> Option<Output> {
    cdylib();
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    if !have(python) {
        println!("note: python3 not found; skipped");
        return None;
    }
    let dir = scratch(name);
    let script = Path::new(MANIFEST).join("tests/preload/churn.py");
    let make = || {
        let mut c = Command::new(python);
        c.arg(&script).arg("20000").env("PYTHONHASHSEED", "0");
        c.envs(env.iter().copied());
        c
    };
    Some(compare(make, &dir, "churn", true))
}

/// The system's python3: dicts, lists, strings and C extensions in four
/// threads, and a fork while they run.
#[test]
fn python_threads_and_fork() {
    let Some(out) = python_churn("python", &[]) else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(text.contains("status 0"), "{text}");
}

/// The same with background purging on and a 10 ms purge delay: the purger
/// thread is made from inside `malloc` (its `pthread_create` calls `malloc`
/// again), purges the heaps of python's threads between their bursts, and
/// the forked child starts its own; every run must exit (no hang) with the
/// same output.
#[test]
fn python_with_background_purging() {
    let env = [
        ("SEGALLOC_BACKGROUND", "1"),
        ("SEGALLOC_PURGE_DELAY_MS", "10"),
    ];
    let Some(out) = python_churn("python-background", &env) else {
        return;
    };
    assert!(String::from_utf8_lossy(&out.stdout).contains("status 0"));
}

/// A deterministic text file of `lines` lines of words and numbers.
fn write_words(path: &Path, lines: usize) {
    const WORDS: [&str; 12] = [
        "alpha", "beta", "gamma", "delta", "segment", "slice", "page", "heap", "free", "list",
        "arena", "zebra",
    ];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut text = String::with_capacity(lines * 40);
    for i in 0..lines {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let w = |k: u64| WORDS[(k % WORDS.len() as u64) as usize];
        text.push_str(&format!(
            "{} {} {}{} {}\n",
            w(x),
            x % 100_000,
            w(x >> 8),
            x >> 40,
            i
        ));
    }
    fs::write(path, text).expect("write words");
}

/// sort and grep always; sqlite3 and git when installed. Also checks that
/// the preload is really mapped into the programs it runs.
#[test]
fn command_line_tools() {
    let so = cdylib();
    let dir = scratch("tools");

    let maps = run(
        {
            let mut c = Command::new("cat");
            c.arg("/proc/self/maps").env("LD_PRELOAD", so);
            c
        },
        &dir,
        "maps",
    );
    assert!(
        String::from_utf8_lossy(&maps.stdout).contains("libsegalloc"),
        "preload not mapped"
    );

    let words = dir.join("words.txt");
    write_words(&words, 300_000);
    for (tag, args) in [
        (
            "sort",
            vec!["--parallel=2", "-S", "64M", "-k2,2n", "-k1,1", "-s"],
        ),
        ("sort-unique", vec!["-u", "-k3,3"]),
        ("grep", vec!["-E", "-n", "(gamma|heap) [0-9]+7 "]),
        ("grep-count", vec!["-c", "-i", "SEGMENT"]),
    ] {
        let prog = tag.split('-').next().unwrap_or(tag);
        let make = || {
            let mut c = Command::new(prog);
            c.args(&args).arg(&words).env("LC_ALL", "C");
            c
        };
        let out = compare(make, &dir, tag, true);
        assert!(!out.stdout.is_empty(), "{tag} printed nothing");
    }

    if have("sqlite3") {
        let sql = "\
            CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v REAL);\n\
            WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100000)\n\
              INSERT INTO t SELECT i, printf('name-%d-%s', i % 977, hex(i * 7919)), i * 0.5 FROM c;\n\
            CREATE INDEX t_name ON t(name);\n\
            SELECT count(*), sum(v), count(DISTINCT name) FROM t;\n\
            SELECT name, count(*) AS n, total(v) FROM t GROUP BY name ORDER BY n DESC, name LIMIT 5;\n\
            SELECT group_concat(id) FROM (SELECT id FROM t WHERE name LIKE 'name-13-%' ORDER BY id LIMIT 20);\n\
            DELETE FROM t WHERE id % 3 = 0; VACUUM;\n\
            SELECT count(*), max(length(name)) FROM t;\n";
        let script = dir.join("script.sql");
        fs::write(&script, sql).expect("write sql");
        let make = || {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg("sqlite3 :memory: < \"$1\"")
                .arg("sh")
                .arg(&script);
            c
        };
        compare(make, &dir, "sqlite3", true);
    } else {
        println!("note: sqlite3 not found; skipped");
    }

    if have("git") {
        // One repository per run, built the same way: identical commits.
        let script = "\
            set -e; rm -rf \"$1\"; mkdir -p \"$1\"; cd \"$1\"; git init -q .\n\
            i=0; while [ $i -lt 150 ]; do printf 'file %s\\nline %s\\n' $i $((i*i)) > f$i.txt; i=$((i+1)); done\n\
            git add .; git commit -q -m first\n\
            sed -i 's/line/LINE/' f1*.txt; git commit -q -am second\n\
            git rev-parse HEAD; git log --stat --format='%H %s' | head -40\n\
            git grep -c LINE | head -20; git repack -adq; git count-objects -v | grep -v size\n";
        let home = dir.join("home");
        fs::create_dir_all(&home).expect("home");
        let repo = dir.join("repo");
        let make = || {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(script)
                .arg("sh")
                .arg(&repo)
                .env("HOME", &home)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
                .env("GIT_AUTHOR_DATE", "2000-01-01T00:00:00Z")
                .env("GIT_COMMITTER_DATE", "2000-01-01T00:00:00Z")
                .env("LC_ALL", "C");
            c
        };
        compare(make, &dir, "git", true);
    } else {
        println!("note: git not found; skipped");
    }
}

/// Many short-lived programs (the loader's and libc's start-up allocations,
/// before main and before any thread-local state of the program exists),
/// each compared with its plain run.
#[test]
fn start_up_of_many_programs() {
    cdylib();
    let dir = scratch("startup");
    let preload_dir = Path::new(MANIFEST).join("tests/preload");
    for (i, prog) in ["true", "ls", "date", "env", "id", "uname", "sh", "cat"]
        .iter()
        .enumerate()
    {
        if !have(prog) {
            continue;
        }
        let make = || {
            let mut c = Command::new(prog);
            match *prog {
                "ls" => c.arg(&preload_dir),
                "date" => c.arg("-d").arg("@0").arg("+%F").env("TZ", "UTC"),
                "env" => c.arg("-i").arg("A=1"),
                "sh" => c.arg("-c").arg("echo $((6*7))"),
                "cat" => c.arg(Path::new(MANIFEST).join("Cargo.toml")),
                _ => &mut c,
            };
            c
        };
        compare(make, &dir, &format!("{i}-{prog}"), true);
    }
}

/// tests/preload/tls_dlopen.c: the library `dlopen`ed into a running program
/// (not preloaded), used through `dlsym` by threads that existed before it was
/// loaded, by a thread made after, across cross-thread frees and reallocs,
/// and in a forked child. Its thread-local heap pointer is initial-exec TLS
/// (see `thread::slot`), which glibc must set up in threads already running.
#[test]
fn dlopened_library_serves_threads_made_before_it_and_forked_children() {
    c_program_prints_ok("tls_dlopen", &["-ldl"], |c| {
        c.arg(cdylib());
    });
}

/// fork while blocks travel between threads: pending batches of remote
/// frees, parked heaps of exited threads; each child checks and frees the
/// parent's blocks, allocates and runs threads of its own
/// (`tests/preload/fork_remote.c`).
#[test]
fn fork_while_threads_free_each_others_blocks() {
    c_program_prints_ok("fork_remote", &[], |c| {
        c.env("LD_PRELOAD", cdylib());
    });
}

/// `include/segalloc.h` as a C program uses it, linked against the library
/// (`-lsegalloc`, no preload): every declared function called as declared,
/// and the statistics struct's size contract (`tests/preload/header.c`).
#[test]
fn the_header_declares_the_library() {
    linked_c_program_prints_ok("header", false);
}

/// First-class heaps from C (`tests/preload/heap.c`, through
/// `include/segalloc.h`): contents, calloc, realloc across ranges, aligned
/// blocks, frees from another thread, exact statistics, reset, destroy.
#[test]
fn c_program_uses_first_class_heaps() {
    // Linked for the heap functions, and preloaded as well (the same
    // object: the loader maps it once).
    linked_c_program_prints_ok("heap", true);
}

/// [`c_program_prints_ok`] for a program built with `include/segalloc.h`
/// and linked against the library (`-lsegalloc`, with its directory as the
/// runpath), preloaded too with `preload`.
fn linked_c_program_prints_ok(name: &str, preload: bool) {
    let so = cdylib();
    let dir = so.parent().unwrap().to_str().unwrap().to_owned();
    let include = format!("-I{MANIFEST}/include");
    let (l, rpath) = (format!("-L{dir}"), format!("-Wl,-rpath,{dir}"));
    c_program_prints_ok(
        name,
        &[&include, "-Wall", "-Werror", &l, "-lsegalloc", &rpath],
        |c| {
            // cargo's LD_LIBRARY_PATH, which the loader searches before the
            // runpath, holds the test build's library (without the C API).
            c.env_remove("LD_LIBRARY_PATH");
            if preload {
                c.env("LD_PRELOAD", so);
            }
        },
    );
}

/// Compiles `tests/preload/<name>.c` (with `extra` flags after it), runs it
/// as `setup` prepares the command, and asserts it exits 0 printing `ok`.
/// Skipped, with a note, without a C compiler.
fn c_program_prints_ok(name: &str, extra: &[&str], setup: impl FnOnce(&mut Command)) {
    let dir = scratch(name);
    let Some(exe) = compile_c(&dir, name, extra) else {
        return;
    };
    let mut c = Command::new(&exe);
    setup(&mut c);
    let o = run(c, &dir, name);
    assert!(
        o.status.success() && o.stdout == b"ok\n",
        "{name}: {:?}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// One instruction of an `objdump -d` listing.
struct Insn {
    addr: u64,
    mnemonic: String,
    /// The branch target, for jumps.
    target: Option<u64>,
}

/// The library's disassembly (`objdump -d`).
fn objdump(so: &Path) -> String {
    let out = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(so)
        .output()
        .expect("objdump");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines of function `name` in a disassembly, and its instructions.
/// objdump labels an address with one of its names: when the compiler
/// merged `name` with an alias of identical code (`malloc` and
/// `__libc_malloc`), the function is found at `name`'s address.
fn function<'a>(listing: &'a str, name: &str) -> (Vec<&'a str>, Vec<Insn>) {
    let header = match listing.lines().any(|l| l.ends_with(&format!("<{name}>:"))) {
        true => format!("<{name}>:"),
        false => {
            // The label at `name`'s address in the dynamic symbol table.
            let so = cdylib();
            let out = Command::new("nm")
                .args(["-D", "--defined-only"])
                .arg(so)
                .output()
                .expect("nm");
            let syms = String::from_utf8_lossy(&out.stdout).into_owned();
            let addr = syms
                .lines()
                .find_map(|l| {
                    let mut f = l.split_whitespace();
                    let (a, _, n) = (f.next()?, f.next()?, f.next()?);
                    (n == name).then(|| a.trim_start_matches('0').to_string())
                })
                .unwrap_or_else(|| panic!("{name}: not in the dynamic symbol table"));
            let line = listing
                .lines()
                .find(|l| l.ends_with(">:") && l.trim_start_matches('0').starts_with(&addr))
                .unwrap_or_else(|| panic!("{name}: no function at {addr}"));
            line[line.find('<').unwrap()..].to_string()
        }
    };
    let body: Vec<&str> = listing
        .lines()
        .skip_while(|l| !l.ends_with(&header))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    let insns = body
        .iter()
        .filter_map(|line| {
            let (addr, rest) = line.trim().split_once(':')?;
            let addr = u64::from_str_radix(addr.trim(), 16).ok()?;
            let mut f = rest.split_whitespace();
            let mnemonic = f.next().unwrap_or("").to_string();
            let target = f.next().and_then(|t| u64::from_str_radix(t, 16).ok());
            Some(Insn {
                addr,
                mnemonic,
                target,
            })
        })
        .collect();
    (body, insns)
}

/// The fewest instructions on a path from the entry of `insns` to a `ret`
/// that passes no `call` (a jump out of the function counts as a call: a
/// tail call), or None when every path calls.
fn shortest_call_free_path(insns: &[Insn]) -> Option<usize> {
    use std::collections::{HashMap, VecDeque};
    let index: HashMap<u64, usize> = insns.iter().enumerate().map(|(i, x)| (x.addr, i)).collect();
    let mut dist = vec![usize::MAX; insns.len()];
    let mut queue = VecDeque::from([(0usize, 1usize)]);
    while let Some((i, d)) = queue.pop_front() {
        if i >= insns.len() || dist[i] <= d {
            continue;
        }
        dist[i] = d;
        let m = insns[i].mnemonic.as_str();
        if m.starts_with("ret") {
            return Some(d);
        }
        if m.starts_with("call") || m == "ud2" || m == "int3" {
            continue;
        }
        if m.starts_with('j') {
            match insns[i].target.and_then(|t| index.get(&t)) {
                Some(&t) => queue.push_back((t, d + 1)),
                None => continue, // a jump elsewhere: a tail call
            }
            if m == "jmp" {
                continue;
            }
        }
        queue.push_back((i + 1, d + 1));
    }
    None
}

/// The C fast paths in the shared library make no call: no `__tls_get_addr`
/// anywhere in `malloc` or `free`, no stack frame before their fast path's
/// `ret`, and a path from entry to `ret` through no call at all (the fast
/// path), of a few dozen instructions at most (`free`'s
/// is 42 with the default checks: registry, block start, freed mark; a
/// null pointer takes its cold path). With `secure` the library is built
/// with it too: `free` may keep a stack frame and its call-free path is
/// longer (76 instructions).
#[test]
fn malloc_and_free_fast_paths_make_no_call() {
    let so = cdylib();
    if !have("objdump") {
        println!("note: objdump not found; machine-code check skipped");
        return;
    }
    let listing = objdump(so);
    for name in ["malloc", "free", "calloc", "realloc", "malloc_usable_size"] {
        let (body, insns) = function(&listing, name);
        assert!(insns.len() > 3, "{name}: not found in the disassembly");
        let calls = insns
            .iter()
            .filter(|x| x.mnemonic.starts_with("call"))
            .count();
        assert!(
            !body.iter().any(|l| l.contains("__tls_get_addr")),
            "{name} calls __tls_get_addr:\n{}",
            body.join("\n")
        );
        if name == "malloc" || name == "free" {
            // No stack frame either: every way off the fast path is a tail
            // call, so nothing is pushed before the fast path's `ret`. Not
            // so with `secure`, whose `free` decodes and checks links and
            // keeps its registers on the stack (the hardened build pays).
            let mut entry = body.iter().take_while(|l| !l.contains("\tret"));
            assert!(
                cfg!(feature = "secure")
                    || !entry.any(|l| l.contains("\tpush") || l.contains(",%rsp")),
                "{name}: its fast path sets up a stack frame:\n{}",
                body.join("\n")
            );
            // `secure`'s free: 76 instructions (2026-11-29).
            let most = if cfg!(feature = "secure") { 80 } else { 44 };
            let path = shortest_call_free_path(&insns);
            assert!(
                matches!(path, Some(n) if n <= most),
                "{name}: no call-free path to ret of at most {most} instructions \
                 ({path:?}; {calls} calls in the body):\n{}",
                body.join("\n")
            );
        }
    }
}

/// Runs `tests/preload/misuse.c` under the preload, once per scenario (double
/// frees, interior pointers of small and large blocks, pointers segalloc
/// never mapped; by the owning thread and by another): each
/// misuse must end in SIGABRT with a line naming it (`expect`), never a hang
/// (`run` kills a program after `preload::TIMEOUT`) or an exit; the scenario
/// without misuse must exit 0.
#[test]
fn misuses_abort_by_default() {
    let so = cdylib();
    let dir = scratch("misuse");
    let Some(exe) = compile_c(&dir, "misuse", &[]) else {
        return;
    };
    let cases = [
        ("double_free", "double free"),
        ("double_free_later", "double free"),
        ("thread_then_owner", "double free"),
        ("owner_then_thread", "double free"),
        ("two_threads", "double free"),
        ("realloc_freed", "realloc of a freed block"),
        ("interior", "interior or invalid pointer"),
        ("interior_thread", "interior or invalid pointer"),
        ("realloc_interior", "interior or invalid pointer"),
        ("unmapped", "segalloc does not own"),
        ("unmapped_thread", "segalloc does not own"),
        ("high", "segalloc does not own"),
        ("large_interior", "interior pointer of a large block"),
        ("large_interior_deep", "interior pointer of a large block"),
        ("none", ""),
    ];
    // Every scenario runs; the failures are reported together.
    let mut failures = Vec::new();
    for (scenario, expect) in cases {
        let mut c = Command::new(&exe);
        c.arg(scenario).env("LD_PRELOAD", so);
        let o = run(c, &dir, scenario);
        let stderr = String::from_utf8_lossy(&o.stderr);
        if expect.is_empty() {
            if !o.status.success() {
                failures.push(format!("{scenario}: {:?}\n{stderr}", o.status));
            }
            continue;
        }
        if o.status.signal() != Some(libc::SIGABRT) {
            failures.push(format!(
                "{scenario}: expected an abort, got {:?}\n{stderr}",
                o.status
            ));
            continue;
        }
        let line = stderr.lines().find(|l| l.starts_with("segalloc: "));
        match line {
            Some(line) if line.contains(expect) && line.contains(" at 0x") => {}
            _ => failures.push(format!(
                "{scenario}: no line saying {expect:?} and where in\n{stderr}"
            )),
        }
        if stderr.lines().count() != 1 {
            failures.push(format!("{scenario}: more than one line:\n{stderr}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `SEGALLOC_LIMIT` through the C ABI: `tests/preload/limit.c` must see
/// `ENOMEM` past the limit and working allocations under it.
#[test]
fn memory_limit_gives_enomem() {
    c_program_prints_ok("limit", &[], |c| {
        c.env("LD_PRELOAD", cdylib()).env("SEGALLOC_LIMIT", "64M");
    });
    // Without bound under 256 MiB: ENOMEM near the limit (committed memory
    // as `mallinfo2` reports it), and the program goes on after freeing.
    c_program_prints_ok("limit", &[], |c| {
        c.arg("unbounded")
            .env("LD_PRELOAD", cdylib())
            .env("SEGALLOC_LIMIT", "256M");
    });
}

/// Background purging under `LD_PRELOAD` never starts its thread before
/// `main`: `tests/preload/premain.c` allocates in a constructor and counts
/// its threads there, then finds the purger running once `main` allocated.
#[test]
fn the_background_purger_waits_for_main() {
    c_program_prints_ok("premain", &[], |c| {
        c.env("LD_PRELOAD", cdylib())
            .env("SEGALLOC_BACKGROUND", "1");
    });
}

/// A process whose threads of its own have all ended, the last by
/// `pthread_exit`, exits though the background thread runs
/// (`tests/preload/pthread_exit.c`: a forked child whose thread returns,
/// and a `main` that calls `pthread_exit`); both hung before.
#[test]
fn a_process_exits_when_its_last_thread_calls_pthread_exit() {
    c_program_prints_ok("pthread_exit", &["-pthread"], |c| {
        c.env("LD_PRELOAD", cdylib())
            .env("SEGALLOC_BACKGROUND", "1");
    });
}

/// The background purger's nudge under `LD_PRELOAD`: a C program that,
/// after freeing nine in ten of its blocks at random, allocates only from
/// what it freed gets its sparse pages purged (`tests/preload/nudge.c`).
#[test]
fn background_purger_nudges_a_c_program_that_allocates_from_what_it_freed() {
    c_program_prints_ok("nudge", &[], |c| {
        c.env("LD_PRELOAD", cdylib())
            .env("SEGALLOC_BACKGROUND", "1")
            .env("SEGALLOC_PURGE_DELAY_MS", "50");
    });
}

/// A C program's statistics, followed while it runs from the file the
/// background thread rewrites every second (`SEGALLOC_STATS_FILE`), the
/// program calling nothing of segalloc's (`tests/preload/stats_file.c`).
#[test]
fn a_c_program_s_statistics_file_follows_it_while_it_runs() {
    let dir = std::env::temp_dir().join(format!("segalloc-cstats-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let var = dir.join("c.%p").display().to_string();
    c_program_prints_ok("stats_file", &[], |c| {
        c.env("LD_PRELOAD", cdylib())
            .env("SEGALLOC_STATS_FILE", &var);
    });
    // The last report, at exit, and nothing else.
    let files: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    fs::remove_dir_all(&dir).unwrap();
}

/// Every runtime option set and read back through the C ABI
/// (`segalloc_option_set`, `segalloc_option_get`, `mallopt`), by name and by
/// variable name, with bad values and names refused, and read before the
/// program's first allocation as the environment set it
/// (`tests/preload/options.c`).
#[test]
fn every_option_through_the_c_abi() {
    c_program_prints_ok("options", &["-ldl"], |c| {
        c.env("LD_PRELOAD", cdylib())
            .env("SEGALLOC_PURGE_DELAY_MS", "300");
    });
}

/// Active defragmentation from C: `tests/preload/defrag.c` moves what
/// `segalloc_should_move` picks with `segalloc_defrag_realloc`, blocks of
/// two threads, and checks contents, convergence and the edge cases.
#[test]
fn c_program_defragments() {
    c_program_prints_ok("defrag", &["-ldl"], |c| {
        c.env("LD_PRELOAD", cdylib());
    });
}

/// `SEGALLOC_PAGE_MAP` under the preload: `tests/preload/pagemap.c` exits
/// holding 1000 of 2000 blocks of 3000 bytes, and the page map written at
/// exit is well-formed and shows exactly those 1000 live blocks in the
/// pages of their class.
#[test]
fn c_program_writes_page_map_at_exit() {
    let map = scratch("pagemap").join("map.svg");
    c_program_prints_ok("pagemap", &[], |c| {
        // Every block in a page: a block the heap profiler samples (a
        // library built with `profiling`, run with `SEGALLOC_PROF=1`)
        // lives in a mapping of its own, in no page's count.
        c.env("LD_PRELOAD", cdylib())
            .env("SEGALLOC_PAGE_MAP", &map)
            .env_remove("SEGALLOC_PROF");
    });
    if !have("cc") {
        return;
    }
    let svg = fs::read_to_string(&map).expect("page map written at exit");
    common::check_xml(&svg);
    let mut live = 0;
    let mut pages = 0;
    for t in common::cell_titles(&svg, "page") {
        let (_, rest) = t.split_once(": ").unwrap();
        let (bs, rest) = rest.split_once(" B blocks, ").unwrap();
        if (3000..3500).contains(&bs.parse::<usize>().unwrap()) {
            live += rest.split('/').next().unwrap().parse::<usize>().unwrap();
            pages += 1;
        }
    }
    assert_eq!(live, 1000, "{pages} pages");
}
