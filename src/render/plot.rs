//! Line and scatter plots: loss curves, schedules, per-timestep bits/dim, 2-D samples.
//!
//! A plot is data: series of points, a title, axis labels, and a log-y switch (loss
//! curves span decades). [`Plot::frame`] maps the data onto the canvas and picks
//! the ticks; [`super::raster`] draws it as a PNG.

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

/// Five "nice" tick values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-300);
    let raw = span / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(raw);
    let first = (lo / step).ceil() * step;
    (0..).map(|i| first + i as f64 * step).take_while(|v| *v <= hi + step * 1e-9).collect()
}

fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-2) {
        format!("{v:.1e}")
    } else {
        format!("{}", (v * 1000.0).round() / 1000.0)
    }
}

/// Where the data goes on the canvas: the data ranges (after the log of y, if
/// asked) mapped onto the plot area, and the tick values.
#[derive(Clone, Debug)]
pub struct Frame {
    x_range: (f64, f64),
    y_range: (f64, f64),
    log_y: bool,
}

impl Frame {
    /// The y value as plotted: its log10 on a log axis, where a value that is not
    /// positive has no place (NaN, dropped like any non-finite point).
    #[must_use]
    pub fn ty(&self, y: f64) -> f64 {
        match (self.log_y, y > 0.0) {
            (false, _) => y,
            (true, true) => y.log10(),
            (true, false) => f64::NAN,
        }
    }

    /// Canvas x of a data x.
    #[must_use]
    pub fn px(&self, x: f64) -> f64 {
        let (x0, x1) = self.x_range;
        LEFT + (x - x0) / (x1 - x0) * PLOT_WIDTH
    }

    /// Canvas y of a plotted y (already through [`Frame::ty`]).
    #[must_use]
    pub fn py(&self, y: f64) -> f64 {
        let (y0, y1) = self.y_range;
        TOP + (1.0 - (y - y0) / (y1 - y0)) * PLOT_HEIGHT
    }

    /// Canvas points of a series, non-finite points dropped.
    #[must_use]
    pub fn canvas_points(&self, series: &Series) -> Vec<(f64, f64)> {
        series
            .points
            .iter()
            .map(|&(x, y)| (x, self.ty(y)))
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| (self.px(x), self.py(y)))
            .collect()
    }

    /// Tick positions (data x) with their labels.
    #[must_use]
    pub fn x_ticks(&self) -> Vec<(f64, String)> {
        ticks(self.x_range.0, self.x_range.1).into_iter().map(|t| (t, label(t))).collect()
    }

    /// Tick positions (plotted y) with their labels (the value, not its log).
    /// A log axis gets round values: 1, 2 and 5 times a power of ten when it spans
    /// under three decades, whole decades otherwise.
    #[must_use]
    pub fn y_ticks(&self) -> Vec<(f64, String)> {
        let (y0, y1) = self.y_range;
        if !self.log_y {
            return ticks(y0, y1).into_iter().map(|t| (t, label(t))).collect();
        }
        let decades = (y0.floor() as i32)..=(y1.ceil() as i32);
        let step = ((y1 - y0) / 5.0).ceil().max(1.0) as i32;
        let mantissas: &[f64] = if y1 - y0 < 3.0 { &[1.0, 2.0, 5.0] } else { &[1.0] };
        decades
            .filter(|d| y1 - y0 < 3.0 || d.rem_euclid(step) == 0)
            .flat_map(|d| mantissas.iter().map(move |m| m * 10f64.powi(d)))
            .map(|v| (v.log10(), v))
            .filter(|(t, _)| *t >= y0 - 1e-9 && *t <= y1 + 1e-9)
            .map(|(t, v)| (t, label(v)))
            .collect()
    }
}

/// Canvas geometry, shared by the renderers.
pub const WIDTH: f64 = 640.0;
pub const HEIGHT: f64 = 400.0;
/// Margins around the plot area, for tick labels and titles.
pub const LEFT: f64 = 70.0;
pub const RIGHT: f64 = 20.0;
pub const TOP: f64 = 40.0;
pub const BOTTOM: f64 = 50.0;
pub const PLOT_WIDTH: f64 = WIDTH - LEFT - RIGHT;
pub const PLOT_HEIGHT: f64 = HEIGHT - TOP - BOTTOM;
/// Series colours as RGB.
pub const COLOURS: [[u8; 3]; 6] =
    [[0x1f, 0x77, 0xb4], [0xd6, 0x27, 0x28], [0x2c, 0xa0, 0x2c], [0xff, 0x7f, 0x0e], [0x94, 0x67, 0xbd], [0x8c, 0x56, 0x4b]];

impl Plot {
    /// The data ranges and mapping of this plot.
    #[must_use]
    pub fn frame(&self) -> Frame {
        let mut frame = Frame { x_range: (0.0, 1.0), y_range: (0.0, 1.0), log_y: self.log_y };
        let points: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|&(x, y)| (x, frame.ty(y))))
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        if !points.is_empty() {
            let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
            for &(x, y) in &points {
                (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
            }
            frame.x_range = (x0, if x1 > x0 { x1 } else { x0 + 1.0 });
            frame.y_range = (y0, if y1 > y0 { y1 } else { y0 + 1.0 });
        }
        frame
    }
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
    fn frame_maps_the_data_range_onto_the_plot_area_and_drops_nan() {
        let plot = Plot {
            log_y: true,
            series: vec![Series { label: "a".into(), points: vec![(0.0, 1.0), (2.0, 100.0), (1.0, f64::NAN), (1.5, 0.0)], dots: false }],
            ..Plot::default()
        };
        let frame = plot.frame();
        let points = frame.canvas_points(&plot.series[0]);
        assert_eq!(points, vec![(LEFT, TOP + PLOT_HEIGHT), (LEFT + PLOT_WIDTH, TOP)]);
        // Log axis: the middle of the plot is 10, labelled as the value, not its log.
        assert!(frame.y_ticks().iter().any(|(t, text)| (*t - 1.0).abs() < 1e-12 && text == "10"));
    }
}
