//! `--plot FILE.svg`: the latency distribution of a run as an HDR-style
//! percentile plot (x: percentile on a "nines" scale, y: latency in ms on
//! a log scale), one line per series.

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use plotters::prelude::*;

/// The label of a position on the "nines" axis: 0 is 0 %, 1 is 90 %, 2 is
/// 99 %, 3 is 99.9 %.
fn label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let digits = (x.round() as usize).saturating_sub(2);
    format!("{p:.digits$}%")
}

/// The points of one series: (nines, ms), from p0 to the last percentile
/// the sample count supports.
fn points(h: &Histogram<u64>, xmax: f64) -> Vec<(f64, f64)> {
    (0..=400)
        .map(|i| xmax * f64::from(i) / 400.0)
        .map(|x| {
            let p = 1.0 - 10f64.powf(-x);
            (x, (h.value_at_quantile(p) as f64 / 1000.0).max(0.001))
        })
        .collect()
}

/// Draws the series to an SVG file.
pub fn draw(path: &str, title: &str, series: &[(String, Histogram<u64>)]) -> anyhow::Result<()> {
    let series: Vec<_> = series.iter().filter(|(_, h)| !h.is_empty()).collect();
    if series.is_empty() {
        bail!("--plot: this run recorded no latencies");
    }
    let most = series.iter().map(|(_, h)| h.len()).max().unwrap_or(1);
    let xmax = (most as f64).log10().clamp(1.0, 5.0).floor();
    let lines: Vec<(&String, Vec<(f64, f64)>)> =
        series.iter().map(|(n, h)| (n, points(h, xmax))).collect();
    let ymin = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .fold(f64::INFINITY, f64::min);
    let ymax = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .fold(0.0, f64::max);
    let (ymin, ymax) = (ymin * 0.8, ymax * 1.25);

    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    let run = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..xmax, (ymin..ymax).log_scale())?;
        chart
            .configure_mesh()
            .x_labels(xmax as usize + 1)
            .x_label_formatter(&|x| label(*x))
            .y_label_formatter(&|y| crate::stats::fmt_ms(*y))
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .draw()?;
        let colors = [
            BLUE,
            RED,
            RGBColor(0, 150, 0),
            MAGENTA,
            RGBColor(0, 150, 160),
            BLACK,
            RGBColor(230, 130, 0),
        ];
        for (i, (name, pts)) in lines.iter().enumerate() {
            let color = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    run()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("draw {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis() {
        assert_eq!(label(0.0), "0%");
        assert_eq!(label(2.0), "99%");
        assert_eq!(label(3.0), "99.9%");
    }
}
