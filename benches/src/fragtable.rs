//! `--frag`: the fragmentation workload (`segalloc_bench::frag`) under
//! each allocator, and under segalloc again with `SEGALLOC_MESH=1`, one
//! child process each, printed as a Markdown table of resident memory
//! against the live bytes. One run each: the figures are resident memory,
//! which the machine's load does not change.

use segalloc_bench::dispatch::ENV_VAR;
use segalloc_bench::frag::{Figures, Sizes};
use segalloc_bench::Alloc;
use std::process::{Command, Stdio};

const MIB: f64 = 1048576.0;

/// Runs the workload in a child under `alloc` (with meshing on if
/// `mesh`); returns its figures and checksum.
fn run_child(alloc: Alloc, mesh: bool, scale: f64, sizes: Sizes) -> Result<(Figures, u64), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    let scale = scale.to_string();
    cmd.args(["worker", alloc.name(), sizes.worker(), "1", &scale, "0"])
        .env(ENV_VAR, alloc.name())
        .env_remove("SEGALLOC_MESH")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    if mesh {
        cmd.env("SEGALLOC_MESH", "1");
    }
    let out = cmd.output().map_err(|e| format!("spawn failed: {e}"))?;
    if !out.status.success() {
        return Err(format!("worker failed ({})", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let figures = text
        .lines()
        .find_map(Figures::parse)
        .ok_or("worker printed no figures")?;
    let sum = text
        .lines()
        .find_map(|l| l.strip_prefix("checksum ")?.parse().ok())
        .ok_or("worker printed no checksum")?;
    Ok((figures, sum))
}

/// `x` MiB and, in parentheses, what lies over `base` divided by `of`.
fn cell(x: usize, base: usize, of: usize) -> String {
    format!(
        "{:.1} MiB ({:.2}x)",
        x as f64 / MIB,
        x.saturating_sub(base) as f64 / of.max(1) as f64
    )
}

/// Runs every allocator of `allocs` (segalloc twice) and prints the
/// table; returns whether every run succeeded with one checksum.
pub fn run(allocs: &[Alloc], scale: f64, sizes: Sizes) -> bool {
    let mut rows = Vec::new();
    for &a in allocs {
        rows.push((a, false));
        if a == Alloc::Segalloc {
            rows.push((a, true));
        }
    }
    println!("| allocator | live | after the frees | after the give-back call: RSS | PSS | after the refill: RSS | PSS |");
    println!("|---|---|---|---|---|---|---|");
    let mut ok = true;
    let mut sums = Vec::new();
    for (a, mesh) in rows {
        let name = if mesh {
            format!("{}, `SEGALLOC_MESH=1`", a.name())
        } else {
            a.name().to_string()
        };
        eprint!("{} {name}: ", sizes.worker());
        match run_child(a, mesh, scale, sizes) {
            Ok((f, sum)) => {
                eprintln!("ok");
                sums.push(sum);
                let both = f.live + f.refill;
                println!(
                    "| {name} | {:.1} MiB | {} | {} | {} | {} | {} |",
                    f.live as f64 / MIB,
                    cell(f.rss_freed, f.base, f.live),
                    cell(f.rss_collected, f.base, f.live),
                    cell(f.pss_collected, f.base, f.live),
                    cell(f.rss_refilled, f.base, both),
                    cell(f.pss_refilled, f.base, both),
                );
            }
            Err(e) => {
                eprintln!("FAILED: {e}");
                ok = false;
            }
        }
    }
    sums.dedup();
    if sums.len() > 1 {
        eprintln!("checksum mismatch: {sums:?}");
        ok = false;
    }
    ok
}
