//! Markdown table of the medians, with ratios against a baseline allocator.

use segalloc_bench::Alloc;
use std::fmt::Write;

/// Median results of one (case, allocator) pair.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// Median wall time of the child process, in seconds.
    pub secs: f64,
    /// Median peak resident set size, in MiB.
    pub rss_mib: f64,
}

/// One table row: a case and its result per allocator (`None` if it failed).
pub struct Row {
    /// Row label (workload name, possibly with threads or heap size).
    pub label: String,
    /// One entry per allocator, in the order of the allocator list.
    pub cells: Vec<Option<Measured>>,
}

/// Index of the ratio baseline: mimalloc if measured, else the first column.
pub fn baseline(allocs: &[Alloc]) -> usize {
    allocs
        .iter()
        .position(|&a| a == Alloc::Mimalloc)
        .unwrap_or(0)
}

/// Ratios (time, RSS) of every cell against the baseline of its row.
pub fn ratios(allocs: &[Alloc], row: &Row) -> Vec<Option<(f64, f64)>> {
    let base = row.cells[baseline(allocs)];
    row.cells
        .iter()
        .map(|c| match (c, base) {
            (Some(c), Some(b)) => Some((c.secs / b.secs, c.rss_mib / b.rss_mib)),
            _ => None,
        })
        .collect()
}

/// Geometric mean of the ratios per allocator over all rows with data.
pub fn geomeans(allocs: &[Alloc], rows: &[Row]) -> Vec<Option<(f64, f64)>> {
    (0..allocs.len())
        .map(|i| {
            let rs: Vec<(f64, f64)> = rows.iter().filter_map(|r| ratios(allocs, r)[i]).collect();
            if rs.is_empty() {
                return None;
            }
            let n = rs.len() as f64;
            let (lt, lr) = rs
                .iter()
                .fold((0.0, 0.0), |(a, b), (t, r)| (a + t.ln(), b + r.ln()));
            Some(((lt / n).exp(), (lr / n).exp()))
        })
        .collect()
}

fn fmt_time(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0} ms", secs * 1000.0)
    } else {
        format!("{secs:.2} s")
    }
}

fn fmt_rss(mib: f64) -> String {
    if mib < 1024.0 {
        format!("{mib:.1} MiB")
    } else {
        format!("{:.2} GiB", mib / 1024.0)
    }
}

/// Renders the Markdown table; `geomean` appends the geometric-mean row.
pub fn table(allocs: &[Alloc], rows: &[Row], geomean: bool) -> String {
    let base = allocs[baseline(allocs)].name();
    let mut s = String::new();
    let _ = write!(s, "| workload |");
    for a in allocs {
        let _ = write!(s, " {0} time | {0} RSS |", a.name());
    }
    let _ = write!(s, "\n|---|");
    for _ in allocs {
        let _ = write!(s, "---:|---:|");
    }
    s.push('\n');
    for row in rows {
        let _ = write!(s, "| {} |", row.label);
        for (c, r) in row.cells.iter().zip(ratios(allocs, row)) {
            match (c, r) {
                (Some(c), Some((tr, rr))) => {
                    let _ = write!(
                        s,
                        " {} ({tr:.2}×) | {} ({rr:.2}×) |",
                        fmt_time(c.secs),
                        fmt_rss(c.rss_mib)
                    );
                }
                (Some(c), None) => {
                    let _ = write!(s, " {} | {} |", fmt_time(c.secs), fmt_rss(c.rss_mib));
                }
                _ => s.push_str(" failed | failed |"),
            }
        }
        s.push('\n');
    }
    if geomean {
        let _ = write!(s, "| **geomean vs {base}** |");
        for g in geomeans(allocs, rows) {
            match g {
                Some((t, r)) => {
                    let _ = write!(s, " **{t:.2}×** | **{r:.2}×** |");
                }
                None => s.push_str(" - | - |"),
            }
        }
        s.push('\n');
    }
    s
}
