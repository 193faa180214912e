//! SVG figures of a grid run (plotters' SVG backend: text is emitted as SVG text, no
//! font stack needed):
//!
//! * `round_time_vs_n.svg` — round time against n at one m: masked for each dropout
//!   rate, and plain.
//! * `round_time_vs_m.svg` — round time against m at one n, same series.
//! * `bytes_per_client.svg` — bytes a client sends against m: masked (each n) and the
//!   plain f32 upload (no dropouts), with the 4·m payload line.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::report::{PointKey, PointSummary};

type Series = (String, Vec<(f64, f64)>);

const COLORS: [RGBColor; 7] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(0, 0, 0),
];

/// Draws the three figures into `dir`; `m_fixed` and `n_fixed` pick the slices
/// (the grid's middle values). Returns the files written.
pub fn draw_all(
    summaries: &BTreeMap<PointKey, PointSummary>,
    dir: &Path,
    m_fixed: usize,
    n_fixed: u32,
) -> Result<Vec<String>> {
    let mut written = Vec::new();
    let series_over = |x_of: fn(&PointKey) -> f64, keep: &dyn Fn(&PointKey) -> bool| -> Vec<Series> {
        let mut by: BTreeMap<(String, u32), Vec<(f64, f64)>> = BTreeMap::new();
        for (key, s) in summaries {
            if keep(key) {
                by.entry((key.0.clone(), key.3)).or_default().push((x_of(key), s.round_s.median));
            }
        }
        by.into_iter().map(|((mode, d), pts)| (format!("{mode}, {d} % dropout"), sorted(pts))).collect()
    };
    let vs_n = series_over(|k| f64::from(k.1), &|k| k.2 == m_fixed);
    let vs_m = series_over(|k| k.2 as f64, &|k| k.1 == n_fixed);
    if !vs_n.is_empty() {
        let file = "round_time_vs_n.svg";
        line_chart(
            &dir.join(file),
            &format!("Round time vs clients n (m = {m_fixed})"),
            "clients n",
            "round time (s)",
            &vs_n,
        )?;
        written.push(file.to_owned());
    }
    if !vs_m.is_empty() {
        let file = "round_time_vs_m.svg";
        line_chart(
            &dir.join(file),
            &format!("Round time vs model size m (n = {n_fixed})"),
            "m (f32 coordinates)",
            "round time (s)",
            &vs_m,
        )?;
        written.push(file.to_owned());
    }
    let mut bytes: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut payload: BTreeMap<usize, f64> = BTreeMap::new();
    for ((mode, n, m, d), s) in summaries {
        payload.insert(*m, 4.0 * *m as f64);
        if *d == 0 {
            let name = format!("{mode}, n = {n}");
            bytes.entry(name).or_default().push((*m as f64, s.bytes_sent.median));
        }
    }
    let mut series: Vec<Series> = bytes.into_iter().map(|(name, pts)| (name, sorted(pts))).collect();
    series.push(("plain f32 payload 4·m".into(), payload.into_iter().map(|(m, b)| (m as f64, b)).collect()));
    if series.iter().any(|(_, p)| !p.is_empty()) {
        let file = "bytes_per_client.svg";
        line_chart(
            &dir.join(file),
            "Bytes sent per client vs m",
            "m (f32 coordinates)",
            "bytes sent per client",
            &series,
        )?;
        written.push(file.to_owned());
    }
    Ok(written)
}

fn sorted(mut pts: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts
}

/// A log–log line chart with markers and a legend.
fn line_chart(path: &Path, title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> Result<()> {
    let all = series.iter().flat_map(|(_, p)| p.iter()).filter(|(x, y)| *x > 0.0 && *y > 0.0);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return Ok(()); // nothing to draw
    }
    // Pad, so that a single point still has a range.
    let (x0, x1, y0, y1) = (x0 / 1.5, x1 * 1.5, y0 / 1.5, y1 * 1.5);
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let style = if name.starts_with("plain") { color.stroke_width(2) } else { color.stroke_width(3) };
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(|e| err(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// 1.5k, 2M, 0.25 … for axis labels.
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.3}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.3}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.3}k", v / 1e3)
    } else if a >= 1.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.3e}")
    }
    .replace(".000", "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::RoundRow;
    use crate::e2e::report::summarize;

    #[test]
    fn draws_svg_files() {
        let mut rows = Vec::new();
        for (mode, scale) in [("masked", 2.0), ("plain", 1.0)] {
            for n in [10, 100] {
                for m in [1000usize, 10_000] {
                    rows.push(RoundRow {
                        mode: mode.into(),
                        n,
                        m,
                        dropout_pct: 0,
                        round: 1,
                        round_s: scale * f64::from(n) * m as f64 * 1e-6,
                        client_cpu_s: 0.01,
                        bytes_sent: (m as u64) * if mode == "plain" { 4 } else { 3 },
                        ..RoundRow::default()
                    });
                }
            }
        }
        let dir = std::env::temp_dir().join(format!("privagg-plot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = draw_all(&summarize(&rows), &dir, 1000, 10).unwrap();
        assert_eq!(files.len(), 3);
        for f in files {
            let svg = std::fs::read_to_string(dir.join(&f)).unwrap();
            assert!(svg.starts_with("<svg") && svg.contains("masked"), "{f}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn labels_are_short() {
        assert_eq!(short(1_000_000.0), "1M");
        assert_eq!(short(2500.0), "2.500k");
        assert_eq!(short(3.0), "3");
    }
}
