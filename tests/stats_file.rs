//! The statistics file (`SEGALLOC_STATS_FILE`): a running program's
//! statistics rewritten every second by the background thread, and once
//! more at exit, without the program calling anything. Each case runs in a
//! child process (this binary's `child` test, under the marker variable)
//! with a timeout, since the variable is read once per process.

use std::alloc::{alloc, dealloc, Layout};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

mod common;

const CASE: &str = "SEGALLOC_STATS_FILE_CASE";

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("segalloc-stats-file-{}", std::process::id()));
    fs::create_dir_all(&d).unwrap();
    d
}

/// A byte count as the table prints it ("512 B", "3.9 MiB") at the start
/// of `s`.
fn bytes(s: &str) -> f64 {
    let mut w = s.split_whitespace();
    let n: f64 = w.next().unwrap().parse().unwrap();
    n * match w.next().unwrap().trim_end_matches([',', ':']) {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1048576.0,
        "GiB" => 1073741824.0,
        u => panic!("unit {u} in {s:?}"),
    }
}

/// The live bytes of the report's "pages now" line.
fn live_now(report: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.starts_with("pages now: "))
        .unwrap_or_else(|| panic!("no pages-now line in:\n{report}"));
    let after = line.split(": ").nth(2).unwrap();
    bytes(after)
}

/// Waits up to 5 s for `path` to hold a report that `ok` accepts; returns it.
fn wait_for(path: &Path, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(s) = fs::read_to_string(path) {
            if ok(&s) {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no such report in {} within 5 s; it holds:\n{}",
            path.display(),
            fs::read_to_string(path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The report's path for process `pid` (the variable with `%p` expanded).
fn expanded(var: &str, pid: u32) -> PathBuf {
    PathBuf::from(var.replace("%p", &pid.to_string()))
}

const BLOCK: usize = 1000;
const N: usize = 8000;

#[test]
fn child() {
    let Ok(case) = std::env::var(CASE) else {
        return;
    };
    let var = std::env::var("SEGALLOC_STATS_FILE").unwrap_or_default();
    let me = std::process::id();
    let layout = Layout::from_size_align(BLOCK, 8).unwrap();
    // SAFETY: a non-zero size; each block is written, then freed once below.
    let blocks: Vec<usize> = (0..N)
        .map(|i| unsafe {
            let p = alloc(layout);
            assert!(!p.is_null());
            p.write_bytes(i as u8, BLOCK);
            p as usize
        })
        .collect();
    match case.as_str() {
        "report" => {
            let path = expanded(&var, me);
            // The first report after the blocks were made (one may have
            // been written before: the thread writes one at once).
            let held = (N * BLOCK) as f64 * 0.95;
            let first = wait_for(&path, |s| s.contains("options:") && live_now(s) >= held);
            assert!(
                first.starts_with(&format!("segalloc statistics of pid {me}, written 20")),
                "{first}"
            );
            assert!(first.contains("\nsegalloc: requested "), "{first}");
            assert!(first.contains("    block      live"), "{first}");
            let live = live_now(&first);
            // Three in four freed by this thread, which allocates no more:
            // the next reports read the pages' counts, so they show it.
            for (i, &p) in blocks.iter().enumerate() {
                if i % 4 != 0 {
                    // SAFETY: allocated above with this layout, freed once.
                    unsafe { dealloc(p as *mut u8, layout) };
                }
            }
            let later = wait_for(&path, |s| {
                s.contains("options:") && live_now(s) < live * 0.3
            });
            assert!(live_now(&later) >= live * 0.2, "{later}");
        }
        "fork" => {
            // A child of this process writes its own file only with `%p`.
            // SAFETY: fork in a process whose other threads hold no lock
            // the child needs (segalloc's fork handlers see to its own).
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // Allocates (its slow paths start its background thread,
                // when it has one), then watches the file it would write
                // for 2.5 s: it must see its own reports there (every
                // second) with `%p`, and never without.
                let v: Vec<Box<[u8; 4000]>> = (0..3000).map(|_| Box::new([1; 4000])).collect();
                let own = expanded(&var, std::process::id());
                let head = format!("segalloc statistics of pid {},", std::process::id());
                let until = Instant::now() + Duration::from_millis(2500);
                let mut saw_own = false;
                while Instant::now() < until {
                    saw_own |= fs::read_to_string(&own).is_ok_and(|r| r.starts_with(&head));
                    std::thread::sleep(Duration::from_millis(10));
                }
                drop(v);
                let right = saw_own == var.contains("%p");
                // SAFETY: ends the forked child, running the exit hooks
                // (which write the last report, if this process writes one).
                unsafe { libc::exit(if right { 0 } else { 3 }) };
            }
            let status = common::wait_child(pid);
            assert_eq!(
                status, 0,
                "the forked child (wait status {status:#x}; exit 3: it saw its own \
                 report where it should not, or none where it should)"
            );
            let mine = expanded(&var, me);
            // Read at once: a child that wrote (every second, and at its
            // exit just now) would have left its own pid there.
            let report = wait_for(&mine, |s| s.contains("options:"));
            assert!(
                report.starts_with(&format!("segalloc statistics of pid {me},")),
                "{report}"
            );
            let theirs = expanded(&var, pid as u32);
            if var.contains("%p") {
                let r = fs::read_to_string(&theirs)
                    .unwrap_or_else(|e| panic!("the child wrote no {}: {e}", theirs.display()));
                assert!(
                    r.starts_with(&format!("segalloc statistics of pid {pid},")),
                    "{r}"
                );
            } else {
                assert_eq!(theirs, mine);
            }
        }
        "idle" => std::thread::sleep(Duration::from_millis(1500)),
        other => panic!("no case {other}"),
    }
    for (i, &p) in blocks.iter().enumerate() {
        if case != "report" || i % 4 == 0 {
            // SAFETY: allocated above with this layout, freed once.
            unsafe { dealloc(p as *mut u8, layout) };
        }
    }
}

fn run(case: &str, env: &[(&str, &str)]) -> String {
    common::run_case(CASE, case, env)
}

#[test]
fn a_running_program_s_statistics_are_rewritten_and_left_at_exit() {
    let d = dir().join("report");
    fs::create_dir_all(&d).unwrap();
    let var = d.join("r.%p").display().to_string();
    run("report", &[("SEGALLOC_STATS_FILE", &var)]);
    // The child's report is there, whole, and no temporary file is left.
    let files: Vec<_> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].starts_with("r.") && !files[0].ends_with(".tmp"),
        "{files:?}"
    );
    let last = fs::read_to_string(d.join(&files[0])).unwrap();
    assert!(
        last.ends_with('\n') && last.contains("\noptions: "),
        "{last}"
    );
    // Written by the exit hook after the last frees: nothing live.
    assert!(live_now(&last) < 1048576.0, "{last}");
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_forked_child_writes_its_own_file_only_with_the_pid_in_the_path() {
    // With the background purger on too, the child has a thread of its
    // own whatever the file, which must still leave the parent's alone.
    for background in ["0", "1"] {
        for var in ["f.%p", "f"] {
            let d = dir().join(format!("fork-{}-{background}", var.len()));
            fs::create_dir_all(&d).unwrap();
            let path = d.join(var).display().to_string();
            run(
                "fork",
                &[
                    ("SEGALLOC_STATS_FILE", &path),
                    ("SEGALLOC_BACKGROUND", background),
                ],
            );
            let n = fs::read_dir(&d).unwrap().count();
            assert_eq!(n, if var.contains("%p") { 2 } else { 1 }, "{var}");
            fs::remove_dir_all(&d).unwrap();
        }
    }
}

#[test]
fn a_file_that_cannot_be_written_is_said_once_and_the_program_goes_on() {
    let err = run(
        "idle",
        &[("SEGALLOC_STATS_FILE", "/nonexistent-segalloc-dir/stats")],
    );
    let said = err.matches("could not write SEGALLOC_STATS_FILE").count();
    assert_eq!(said, 1, "{err}");
    let long = format!("/tmp/{}", "x".repeat(600));
    let err = run(
        "idle",
        &[("SEGALLOC_STATS_FILE", &long), ("SEGALLOC_VERBOSE", "1")],
    );
    assert!(
        err.contains("ignoring SEGALLOC_STATS_FILE: longer than 511 bytes"),
        "{err}"
    );
    assert!(!err.contains("background thread started"), "{err}");
}

#[test]
fn without_the_variable_no_thread_is_started() {
    let err = run("idle", &[("SEGALLOC_VERBOSE", "1")]);
    assert!(!err.contains("background"), "{err}");
    let d = dir().join("on");
    fs::create_dir_all(&d).unwrap();
    let path = d.join("s").display().to_string();
    let err = run(
        "idle",
        &[("SEGALLOC_VERBOSE", "1"), ("SEGALLOC_STATS_FILE", &path)],
    );
    assert!(
        err.contains("background thread started for SEGALLOC_STATS_FILE"),
        "{err}"
    );
    assert!(Path::new(&path).exists());
    fs::remove_dir_all(&d).unwrap();
}
