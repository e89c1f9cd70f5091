//! Line plots as SVG, written by hand: loss curves, schedules, per-timestep bits/dim.
//!
//! SVG is text, so a plot needs no font or raster library, opens in any browser,
//! and diffs cleanly. Each series is a polyline in data coordinates mapped to the
//! plot area; the y axis may be logarithmic (loss curves span decades).

use std::fmt::Write as _;
use std::path::Path;

/// One named line (or cloud of dots).
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Draw dots instead of a line (scatter plots of 2-D data).
    pub dots: bool,
}

/// A plot: title, axis labels, lines.
#[derive(Clone, Debug, Default)]
pub struct Plot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_y: bool,
    pub series: Vec<Series>,
}

const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
/// Margins around the plot area, for tick labels and titles.
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// Five "nice" tick values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-300);
    let raw = span / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(raw);
    let first = (lo / step).ceil() * step;
    (0..)
        .map(|i| first + i as f64 * step)
        .take_while(|v| *v <= hi + step * 1e-9)
        .collect()
}

fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-2) {
        format!("{v:.1e}")
    } else {
        format!("{}", (v * 1000.0).round() / 1000.0)
    }
}

impl Plot {
    /// The SVG document.
    #[must_use]
    pub fn to_svg(&self) -> String {
        let ty = |y: f64| if self.log_y { y.max(1e-300).log10() } else { y };
        let finite: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|&(x, y)| (x, ty(y))))
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in &finite {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if finite.is_empty() {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        if y1 <= y0 {
            y1 = y0 + 1.0;
        }
        let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
        let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
        let py = |y: f64| TOP + (1.0 - (y - y0) / (y1 - y0)) * ph;
        let mut svg = String::new();
        let _ = writeln!(svg, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#);
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(svg, r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#, WIDTH / 2.0, escape(&self.title));
        let _ = writeln!(svg, r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##);
        for t in ticks(x0, x1) {
            let _ = writeln!(svg, r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#ddd"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4}</text>"##, px(t), TOP, TOP + ph, TOP + ph + 16.0, label(t));
        }
        for t in ticks(y0, y1) {
            let shown = if self.log_y { 10f64.powf(t) } else { t };
            let _ = writeln!(svg, r##"<line x1="{0}" y1="{1:.1}" x2="{2}" y2="{1:.1}" stroke="#ddd"/><text x="{3}" y="{4:.1}" text-anchor="end">{5}</text>"##, LEFT, py(t), LEFT + pw, LEFT - 6.0, py(t) + 4.0, label(shown));
        }
        let _ = writeln!(svg, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, LEFT + pw / 2.0, HEIGHT - 12.0, escape(&self.x_label));
        let _ = writeln!(svg, r#"<text x="16" y="{0}" text-anchor="middle" transform="rotate(-90 16 {0})">{1}</text>"#, TOP + ph / 2.0, escape(&self.y_label));
        for (i, s) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let points: Vec<String> = s
                .points
                .iter()
                .map(|&(x, y)| (x, ty(y)))
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            if s.dots {
                for p in &points {
                    let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                    let _ = writeln!(svg, r#"<circle cx="{x}" cy="{y}" r="1.2" fill="{colour}" fill-opacity="0.5"/>"#);
                }
            } else {
                let _ = writeln!(svg, r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#, points.join(" "));
            }
            let ly = TOP + 16.0 + 16.0 * i as f64;
            let _ = writeln!(svg, r#"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="{colour}" stroke-width="2"/><text x="{3}" y="{4}">{5}</text>"#, LEFT + pw - 150.0, ly, LEFT + pw - 130.0, LEFT + pw - 124.0, ly + 4.0, escape(&s.label));
        }
        svg.push_str("</svg>\n");
        svg
    }

    /// Several plots side by side in one SVG document.
    #[must_use]
    pub fn side_by_side(plots: &[Plot]) -> String {
        let mut svg = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{HEIGHT}">"#, WIDTH * plots.len() as f64);
        svg.push('\n');
        for (i, plot) in plots.iter().enumerate() {
            let inner = plot.to_svg().replacen("<svg ", &format!(r#"<svg x="{}" "#, WIDTH * i as f64), 1);
            svg.push_str(&inner);
        }
        svg.push_str("</svg>\n");
        svg
    }

    /// Writes the SVG through a temporary file and a rename.
    ///
    /// # Errors
    /// Any I/O error, with the path in the message.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        save_svg(path, &self.to_svg())
    }
}

/// Writes an SVG document through a temporary file and a rename.
///
/// # Errors
/// Any I/O error, with the path in the message.
pub fn save_svg(path: &Path, svg: &str) -> std::io::Result<()> {
    let with_path = |e: std::io::Error| std::io::Error::other(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(with_path)?;
    }
    let tmp = path.with_extension("svg.tmp");
    std::fs::write(&tmp, svg).map_err(with_path)?;
    std::fs::rename(&tmp, path).map_err(with_path)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 1.0), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        let t = ticks(0.0, 1000.0);
        assert_eq!(t.first(), Some(&0.0));
        assert!(t.windows(2).all(|w| (w[1] - w[0] - 250.0).abs() < 1e-9), "{t:?}");
    }

    #[test]
    fn svg_has_one_polyline_per_series_and_survives_nan() {
        let plot = Plot {
            title: "loss <mse>".into(),
            log_y: true,
            series: vec![
                Series { label: "a".into(), points: vec![(0.0, 1.0), (1.0, 0.1), (2.0, f64::NAN)], dots: false },
                Series { label: "b".into(), points: vec![(0.0, 2.0)], dots: false },
            ],
            ..Plot::default()
        };
        let svg = plot.to_svg();
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("loss &lt;mse&gt;") && !svg.contains("NaN"));
    }
}
