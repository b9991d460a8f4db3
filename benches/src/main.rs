//! Whole-program allocator comparison runner.
//!
//! `cargo run --release -p segalloc-bench -- [options]` runs every workload in
//! a fresh child process per (repetition, workload, allocator), interleaving
//! the allocators (their order rotated each repetition), and prints one Markdown table of median wall time and peak
//! RSS. The child is this same binary (`worker` subcommand); its global
//! allocator is the [`Dispatch`] forwarder, whose selection is fixed from
//! the environment before the first allocation of the process, so the
//! allocator can be chosen at run time without ever mixing two heaps.

mod chart;
mod fragtable;
mod report;

use report::{Measured, Row};
use segalloc_bench::dispatch::{self, ENV_VAR};
use segalloc_bench::workloads::{self, Params, HEAP, WORKLOADS};
use segalloc_bench::{Alloc, Dispatch};
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: Dispatch = Dispatch;

const USAGE: &str = "\
usage: segalloc-bench [options]
       segalloc-bench worker <alloc> <workload> <threads> <scale> <heap-bytes>

options:
  --reps N          repetitions per (workload, allocator), median reported (default 5)
  --quick           smoke test: 1 repetition, scale 0.1, small scaling sweep
  --scale F         multiply the amount of work (default 1.0)
  --threads N       threads for multithreaded workloads (default 2)
  --only A,B        run only these workloads (names below; in --scaling, the thread-scaling set)
  --allocs A,B      allocators, first-listed column first (default segalloc,mimalloc,jemalloc,system)
  --svg PATH        where to write the bar chart (default benches/results/whole-program.svg,
                    or benches/results/scaling.svg with --scaling)
  --scaling         measure thread scaling (1,2,4,8,16 threads) and live-heap scaling instead
  --frag            the fragmentation workload instead: RSS and PSS against the live bytes after
                    random frees, the allocator's give-back call and a refill (segalloc also with
                    SEGALLOC_MESH=1); one run each
  --frag-large      the same with 8,000 blocks of 8-128 KiB instead of 2 million of 16-512 bytes
  --max-heap SIZE   largest live heap for --scaling, e.g. 1G, 256M (default 1G, capped by MemAvailable/4)
  -h, --help        this text
";

/// Command-line options of the runner.
struct Opts {
    reps: usize,
    scale: f64,
    threads: usize,
    only: Option<Vec<String>>,
    allocs: Vec<Alloc>,
    svg: Option<PathBuf>,
    scaling: bool,
    frag: Option<segalloc_bench::frag::Sizes>,
    quick: bool,
    max_heap: usize,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.trim_end_matches("ib").trim_end_matches('b');
    let (num, mult) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1usize << 10),
        Some('m') => (&s[..s.len() - 1], 1 << 20),
        Some('g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<f64>()
        .map(|n| (n * mult as f64) as usize)
        .map_err(|_| format!("bad size: {s}"))
}

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        reps: 5,
        scale: 1.0,
        threads: 2,
        only: None,
        allocs: Alloc::ALL.to_vec(),
        svg: None,
        scaling: false,
        frag: None,
        quick: false,
        max_heap: 1 << 30,
    };
    let mut reps = None;
    let mut scale = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--reps" => reps = Some(val()?.parse().map_err(|_| "bad --reps")?),
            "--scale" => scale = Some(val()?.parse().map_err(|_| "bad --scale")?),
            "--threads" => o.threads = val()?.parse().map_err(|_| "bad --threads")?,
            "--only" => o.only = Some(val()?.split(',').map(str::to_owned).collect()),
            "--allocs" => {
                o.allocs = val()?
                    .split(',')
                    .map(|s| Alloc::parse(s).ok_or(format!("unknown allocator {s}")))
                    .collect::<Result<_, _>>()?
            }
            "--svg" => o.svg = Some(PathBuf::from(val()?)),
            "--scaling" => o.scaling = true,
            "--frag" => o.frag = Some(segalloc_bench::frag::Sizes::Small),
            "--frag-large" => o.frag = Some(segalloc_bench::frag::Sizes::Large),
            "--quick" => o.quick = true,
            "--max-heap" => o.max_heap = parse_size(val()?)?,
            "-h" | "--help" => return Err(String::new()),
            _ => return Err(format!("unknown option {a}")),
        }
    }
    o.reps = reps.unwrap_or(if o.quick { 1 } else { 5 });
    o.scale = scale.unwrap_or(if o.quick { 0.1 } else { 1.0 });
    if o.reps == 0 || o.threads == 0 || o.allocs.is_empty() || o.scale <= 0.0 {
        return Err("--reps, --threads, --scale and --allocs must be positive/non-empty".into());
    }
    if let Some(only) = &o.only {
        for w in only {
            if workloads::find(w).is_none() {
                return Err(format!("unknown workload {w}"));
            }
        }
    }
    Ok(o)
}

/// One configuration to measure under every allocator.
struct Case {
    label: String,
    workload: &'static str,
    params: Params,
}

/// Result of one child process.
struct Sample {
    wall: Duration,
    maxrss_kib: u64,
    checksum: u64,
}

fn run_child(alloc: Alloc, case: &Case) -> Result<Sample, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let p = &case.params;
    let start = Instant::now();
    let mut child = Command::new(exe)
        .arg("worker")
        .arg(alloc.name())
        .arg(case.workload)
        .arg(p.threads.to_string())
        .arg(p.scale.to_string())
        .arg(p.heap.to_string())
        .env(ENV_VAR, alloc.name())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn failed: {e}"))?;
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout is piped")
        .read_to_string(&mut out)
        .map_err(|e| e.to_string())?;
    // wait4 instead of Child::wait: it also returns the child's rusage,
    // whose ru_maxrss is the peak RSS of exactly this one run.
    let mut status = 0;
    // SAFETY: rusage is plain data; zeroed is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers; the pid is our un-reaped child.
    let r = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    let wall = start.elapsed();
    if r < 0 {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("worker failed (wait status {status:#x})"));
    }
    let checksum = out
        .trim()
        .strip_prefix("checksum ")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("worker printed no checksum: {out:?}"))?;
    Ok(Sample {
        wall,
        maxrss_kib: ru.ru_maxrss as u64,
        checksum,
    })
}

fn worker(args: &[String]) -> Result<(), String> {
    let [alloc, name, threads, scale, heap] = args else {
        return Err("worker needs <alloc> <workload> <threads> <scale> <heap-bytes>".into());
    };
    let alloc = Alloc::parse(alloc).ok_or("unknown allocator")?;
    // The dispatcher chose its allocator from the environment at the first
    // allocation; refuse to measure the wrong one.
    if dispatch::current() != alloc {
        return Err(format!(
            "worker must be started with {ENV_VAR}={} (running on {})",
            alloc.name(),
            dispatch::current().name()
        ));
    }
    if let Some(sizes) = segalloc_bench::frag::Sizes::from_worker(name) {
        let scale = scale.parse().map_err(|_| "bad scale")?;
        let (sum, figures) = segalloc_bench::frag::run(scale, sizes);
        println!("{}", figures.line());
        println!("checksum {sum}");
        return Ok(());
    }
    let w = workloads::find(name).ok_or("unknown workload")?;
    let params = Params {
        threads: threads.parse().map_err(|_| "bad threads")?,
        scale: scale.parse().map_err(|_| "bad scale")?,
        heap: heap.parse().map_err(|_| "bad heap")?,
    };
    let sum = (w.run)(&params);
    println!("checksum {sum}");
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs every case under every allocator, `reps` times, interleaved so slow
/// drifts of the machine affect all allocators alike, the allocators' order
/// rotated by one each repetition so that none always runs first (right
/// after another workload's last run) or last.
fn measure(cases: &[Case], o: &Opts) -> (Vec<Row>, bool) {
    let mut samples: HashMap<(usize, Alloc), Vec<Sample>> = HashMap::new();
    let mut failed: HashMap<(usize, Alloc), String> = HashMap::new();
    let total = o.reps * cases.len() * o.allocs.len();
    let mut done = 0;
    let started = Instant::now();
    for rep in 0..o.reps {
        for (ci, case) in cases.iter().enumerate() {
            let n = o.allocs.len();
            for k in 0..n {
                let alloc = o.allocs[(k + rep) % n];
                done += 1;
                if failed.contains_key(&(ci, alloc)) {
                    continue;
                }
                eprint!(
                    "[{done}/{total} {:.0}s] rep {} {} {}: ",
                    started.elapsed().as_secs_f64(),
                    rep + 1,
                    case.label,
                    alloc.name()
                );
                match run_child(alloc, case) {
                    Ok(s) => {
                        eprintln!(
                            "{:.3}s {:.1} MiB",
                            s.wall.as_secs_f64(),
                            s.maxrss_kib as f64 / 1024.0
                        );
                        samples.entry((ci, alloc)).or_default().push(s);
                    }
                    Err(e) => {
                        eprintln!("FAILED: {e}");
                        failed.insert((ci, alloc), e);
                    }
                }
            }
        }
    }
    let mut ok = failed.is_empty();
    let rows = cases
        .iter()
        .enumerate()
        .map(|(ci, case)| {
            // Same work under every allocator must give the same checksum.
            let mut sums: Vec<u64> = o
                .allocs
                .iter()
                .flat_map(|a| samples.get(&(ci, *a)).into_iter().flatten())
                .map(|s| s.checksum)
                .collect();
            sums.sort_unstable();
            sums.dedup();
            let mismatch = sums.len() > 1;
            if mismatch {
                eprintln!("checksum mismatch in {}: {sums:?}", case.label);
                ok = false;
            }
            let cells = o
                .allocs
                .iter()
                .map(|a| {
                    samples
                        .get(&(ci, *a))
                        .filter(|_| !mismatch)
                        .map(|s| Measured {
                            secs: median(s.iter().map(|x| x.wall.as_secs_f64()).collect()),
                            rss_mib: median(
                                s.iter().map(|x| x.maxrss_kib as f64 / 1024.0).collect(),
                            ),
                        })
                })
                .collect();
            Row {
                label: case.label.clone(),
                cells,
            }
        })
        .collect();
    (rows, ok)
}

fn selected_workloads(o: &Opts, default: &[&'static str]) -> Vec<&'static str> {
    match &o.only {
        Some(only) => only
            .iter()
            .filter_map(|n| workloads::find(n).map(|w| w.name))
            .collect(),
        None => default.to_vec(),
    }
}

fn mem_available() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn human_bytes(b: usize) -> String {
    if b >= 1 << 30 {
        format!("{} GiB", b >> 30)
    } else {
        format!("{} MiB", b >> 20)
    }
}

fn write_chart(o: &Opts, default_name: &str, title: &str, rows: &[Row]) {
    let path = o.svg.clone().unwrap_or_else(|| {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/results")).join(default_name)
    });
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    match chart::ratio_chart(&path, title, &o.allocs, rows) {
        Ok(()) => eprintln!("wrote {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}

fn run(o: &Opts) -> bool {
    eprintln!(
        "allocators: {}; reps {}, scale {}, threads {}",
        o.allocs
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(", "),
        o.reps,
        o.scale,
        o.threads
    );
    let params = |threads| Params {
        threads,
        scale: o.scale,
        heap: 0,
    };
    if let Some(sizes) = o.frag {
        return fragtable::run(&o.allocs, o.scale, sizes);
    }
    if !o.scaling {
        let all: Vec<_> = WORKLOADS.iter().map(|w| w.name).collect();
        let cases: Vec<Case> = selected_workloads(o, &all)
            .into_iter()
            .map(|w| Case {
                label: w.to_string(),
                workload: w,
                params: params(o.threads),
            })
            .collect();
        let (rows, ok) = measure(&cases, o);
        print!("{}", report::table(&o.allocs, &rows, true));
        write_chart(o, "whole-program.svg", "whole-program comparison", &rows);
        return ok;
    }

    // Thread scaling: same total work split over more threads.
    let counts: &[usize] = if o.quick {
        &[1, 2, 4]
    } else {
        &[1, 2, 4, 8, 16]
    };
    let mut cases = Vec::new();
    for w in selected_workloads(o, &["larson", "mstress"]) {
        for &t in counts {
            cases.push(Case {
                label: format!("{w} {t}t"),
                workload: w,
                params: params(t),
            });
        }
    }
    let (thread_rows, ok1) = measure(&cases, o);

    // Live-heap scaling: 1 MiB .. max in powers of 4, capped so one run
    // (live data plus allocator overhead) fits comfortably in memory.
    let cap = mem_available().map_or(usize::MAX, |m| m / 4);
    let max = o
        .max_heap
        .min(cap)
        .min(if o.quick { 16 << 20 } else { usize::MAX });
    let mut heaps = vec![1usize << 20];
    while heaps.last().unwrap() * 4 <= max {
        heaps.push(heaps.last().unwrap() * 4);
    }
    let cases: Vec<Case> = heaps
        .iter()
        .map(|&h| Case {
            label: format!("heap {}", human_bytes(h)),
            workload: HEAP.name,
            params: Params {
                threads: 1,
                scale: o.scale,
                heap: h,
            },
        })
        .collect();
    let (heap_rows, ok2) = measure(&cases, o);
    print!("{}", report::table(&o.allocs, &thread_rows, false));
    println!();
    print!("{}", report::table(&o.allocs, &heap_rows, false));
    let all: Vec<Row> = thread_rows.into_iter().chain(heap_rows).collect();
    write_chart(o, "scaling.svg", "thread and live-heap scaling", &all);
    ok1 && ok2
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        return match worker(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let o = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}\n");
            }
            eprint!("{USAGE}\nworkloads:\n");
            for w in WORKLOADS.iter().chain(std::iter::once(&HEAP)) {
                eprintln!("  {:<16} {}", w.name, w.about);
            }
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    if run(&o) {
        ExitCode::SUCCESS
    } else {
        eprintln!("some runs failed or disagreed; see above");
        ExitCode::FAILURE
    }
}
