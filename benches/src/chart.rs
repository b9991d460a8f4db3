//! SVG bar chart of the time and RSS ratios, drawn with plotters' SVG
//! backend only (text is emitted as SVG `<text>`, so no font libraries are
//! needed at build or run time).

use crate::report::{baseline, geomeans, ratios, Row};
use plotters::prelude::*;
use segalloc_bench::Alloc;
use std::error::Error;
use std::path::Path;

fn color(a: Alloc) -> RGBColor {
    match a {
        Alloc::Segalloc => RGBColor(214, 39, 40),
        Alloc::Mimalloc => RGBColor(31, 119, 180),
        Alloc::Jemalloc => RGBColor(44, 160, 44),
        Alloc::System => RGBColor(127, 127, 127),
    }
}

/// Tick values for a log axis spanning `lo..hi`: 1-2-5 steps, plus 0.75
/// and 1.5 when the range is narrow.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut t = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for m in [1.0, 1.5, 2.0, 3.0, 5.0, 7.5] {
            let v = decade * m;
            if v >= lo && v <= hi {
                t.push(v);
            }
        }
        decade *= 10.0;
    }
    // Thin out to about ten labels on wide ranges.
    if t.len() > 10 {
        t.retain(|v| {
            let m = v / 10f64.powf(v.log10().floor());
            (m - 1.0).abs() < 1e-9 || (m - 2.0).abs() < 1e-9 || (m - 5.0).abs() < 1e-9
        });
    }
    t
}

/// Selects the time or the RSS ratio from a (time, RSS) pair.
type Pick = fn((f64, f64)) -> f64;

/// Writes a two-panel grouped bar chart (time ratio, peak-RSS ratio; log
/// scale, bars grow up or down from 1.0 = baseline) with one group per row,
/// plus a geometric-mean group when there is more than one row.
pub fn ratio_chart(
    path: &Path,
    title: &str,
    allocs: &[Alloc],
    rows: &[Row],
) -> Result<(), Box<dyn Error>> {
    let mut labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
    let mut values: Vec<Vec<Option<(f64, f64)>>> = rows.iter().map(|r| ratios(allocs, r)).collect();
    if rows.len() > 1 {
        labels.push("geomean".into());
        values.push(geomeans(allocs, rows));
    }
    let n = labels.len();
    let width = (160 + 95 * n as u32).max(900);
    let root = SVGBackend::new(path, (width, 820)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!(
            "{title}: ratio vs {} (lower is better)",
            allocs[baseline(allocs)].name()
        ),
        ("sans-serif", 22),
    )?;
    let panels = root.split_evenly((2, 1));
    let metrics: [(&str, Pick); 2] = [("wall time", |v| v.0), ("peak RSS", |v| v.1)];
    for (panel, (metric, pick)) in panels.iter().zip(metrics) {
        let all: Vec<f64> = values
            .iter()
            .flatten()
            .flatten()
            .map(|&v| pick(v))
            .collect();
        // Always show 1.0 with some room around it; log scale so 0.5x and 2x
        // look equally far from the baseline.
        let lo = all.iter().copied().fold(1.0f64, f64::min) / 1.25;
        let hi = all.iter().copied().fold(1.0f64, f64::max) * 1.25;
        let mut chart = ChartBuilder::on(panel)
            .caption(metric, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d(
                -2.5f64..(n as f64 - 0.5),
                (lo..hi).log_scale().with_key_points(ticks(lo, hi)),
            )?;
        let label_of = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n + 3)
            .x_label_formatter(&label_of)
            .y_labels(8)
            .y_label_formatter(&|y| {
                let s = format!("{y:.2}");
                format!("{}×", s.trim_end_matches('0').trim_end_matches('.'))
            })
            .y_desc("ratio (log scale)")
            .draw()?;
        let bar = 0.8 / allocs.len() as f64;
        for (ai, &alloc) in allocs.iter().enumerate() {
            let c = color(alloc);
            chart
                .draw_series(values.iter().enumerate().filter_map(|(ri, row)| {
                    let v = pick(row[ai]?);
                    let x0 = ri as f64 - 0.4 + ai as f64 * bar;
                    // Top-left corner first: the SVG backend does not
                    // normalise negative heights.
                    Some(Rectangle::new(
                        [(x0, v.max(1.0)), (x0 + bar * 0.9, v.min(1.0))],
                        c.filled(),
                    ))
                }))?
                .label(if ai == baseline(allocs) {
                    format!("{} (baseline)", alloc.name())
                } else {
                    alloc.name().to_string()
                })
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], c.filled()));
        }
        chart.draw_series(LineSeries::new(
            [(-2.5, 1.0), (n as f64 - 0.5, 1.0)],
            BLACK.stroke_width(1),
        ))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
