//! Plots as PNG: the frame of [`crate::render::plot::Frame`] (axes, ticks, labels)
//! drawn into an RGB buffer. Lines are stamped with small anti-aliased discs; text is
//! rasterised from the bundled DejaVu Sans font (`data/fonts/`, Bitstream Vera
//! licence) with `ab_glyph`, so no system font library is needed.

use crate::render::plot::{Frame, Plot, BOTTOM, COLOURS, HEIGHT, LEFT, PLOT_HEIGHT, PLOT_WIDTH, TOP, WIDTH};
use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};

static FONT_BYTES: &[u8] = include_bytes!("../../data/fonts/DejaVuSans.ttf");

/// An RGB canvas.
#[derive(Clone, Debug)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    /// Row-major RGB bytes.
    pub pixels: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Anchor {
    Start,
    Middle,
    End,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Canvas { width, height, pixels: vec![255; width * height * 3] }
    }

    /// Mixes `colour` into pixel (x, y) with opacity `alpha` in [0, 1].
    fn blend(&mut self, x: i64, y: i64, colour: [u8; 3], alpha: f32) {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 || alpha <= 0.0 {
            return;
        }
        let at = (y as usize * self.width + x as usize) * 3;
        for (c, &target) in self.pixels[at..at + 3].iter_mut().zip(&colour) {
            *c = (f32::from(*c) * (1.0 - alpha.min(1.0)) + f32::from(target) * alpha.min(1.0)).round() as u8;
        }
    }

    fn hline(&mut self, x0: f64, x1: f64, y: f64, colour: [u8; 3]) {
        for x in x0.round() as i64..=x1.round() as i64 {
            self.blend(x, y.round() as i64, colour, 1.0);
        }
    }

    fn vline(&mut self, x: f64, y0: f64, y1: f64, colour: [u8; 3]) {
        for y in y0.round() as i64..=y1.round() as i64 {
            self.blend(x.round() as i64, y, colour, 1.0);
        }
    }

    /// A polyline of width ~`2 radius`: discs stamped every half pixel, each pixel
    /// keeping the largest coverage any disc gave it, so overlaps do not darken.
    fn polyline(&mut self, points: &[(f64, f64)], colour: [u8; 3], radius: f64) {
        let mut coverage = vec![0.0f32; self.width * self.height];
        let mut stamp = |cx: f64, cy: f64| {
            let reach = radius.ceil() as i64 + 1;
            for y in cy as i64 - reach..=cy as i64 + reach {
                for x in cx as i64 - reach..=cx as i64 + reach {
                    if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
                        continue;
                    }
                    let d = ((x as f64 + 0.5 - cx).powi(2) + (y as f64 + 0.5 - cy).powi(2)).sqrt();
                    let c = (radius + 0.5 - d).clamp(0.0, 1.0) as f32;
                    let at = y as usize * self.width + x as usize;
                    coverage[at] = coverage[at].max(c);
                }
            }
        };
        if let [only] = points {
            stamp(only.0, only.1);
        }
        for w in points.windows(2) {
            let ((x0, y0), (x1, y1)) = (w[0], w[1]);
            let steps = ((x1 - x0).hypot(y1 - y0) * 2.0).ceil().max(1.0) as usize;
            for k in 0..=steps {
                let f = k as f64 / steps as f64;
                stamp(x0 + (x1 - x0) * f, y0 + (y1 - y0) * f);
            }
        }
        for (at, &c) in coverage.iter().enumerate() {
            if c > 0.0 {
                self.blend((at % self.width) as i64, (at / self.width) as i64, colour, c);
            }
        }
    }

    /// Text with its baseline at `y`, anchored at `x`.
    fn text(&mut self, font: &FontRef<'_>, text: &str, x: f64, y: f64, size: f32, anchor: Anchor) {
        let scaled = font.as_scaled(PxScale::from(size));
        let width: f32 = text.chars().map(|ch| scaled.h_advance(font.glyph_id(ch))).sum();
        let mut pen = match anchor {
            Anchor::Start => x as f32,
            Anchor::Middle => x as f32 - width / 2.0,
            Anchor::End => x as f32 - width,
        };
        for ch in text.chars() {
            let id = font.glyph_id(ch);
            let glyph = id.with_scale_and_position(PxScale::from(size), point(pen, y as f32));
            if let Some(outlined) = font.outline_glyph(glyph) {
                let bounds = outlined.px_bounds();
                outlined.draw(|gx, gy, c| {
                    self.blend(bounds.min.x as i64 + i64::from(gx), bounds.min.y as i64 + i64::from(gy), [0x22, 0x22, 0x22], c);
                });
            }
            pen += scaled.h_advance(id);
        }
    }
}

fn draw(canvas: &mut Canvas, plot: &Plot, font: &FontRef<'_>) {
    let frame: Frame = plot.frame();
    let grid = [0xdd, 0xdd, 0xdd];
    for (t, text) in frame.x_ticks() {
        canvas.vline(frame.px(t), TOP, TOP + PLOT_HEIGHT, grid);
        canvas.text(font, &text, frame.px(t), TOP + PLOT_HEIGHT + 16.0, 12.0, Anchor::Middle);
    }
    for (t, text) in frame.y_ticks() {
        canvas.hline(LEFT, LEFT + PLOT_WIDTH, frame.py(t), grid);
        canvas.text(font, &text, LEFT - 6.0, frame.py(t) + 4.0, 12.0, Anchor::End);
    }
    let edge = [0x44, 0x44, 0x44];
    canvas.hline(LEFT, LEFT + PLOT_WIDTH, TOP, edge);
    canvas.hline(LEFT, LEFT + PLOT_WIDTH, TOP + PLOT_HEIGHT, edge);
    canvas.vline(LEFT, TOP, TOP + PLOT_HEIGHT, edge);
    canvas.vline(LEFT + PLOT_WIDTH, TOP, TOP + PLOT_HEIGHT, edge);
    canvas.text(font, &plot.title, WIDTH / 2.0, 24.0, 15.0, Anchor::Middle);
    canvas.text(font, &plot.x_label, LEFT + PLOT_WIDTH / 2.0, HEIGHT - BOTTOM + 38.0, 12.0, Anchor::Middle);
    // The y label sits above the axis, horizontal (no rotated text here).
    canvas.text(font, &plot.y_label, 8.0, TOP - 8.0, 12.0, Anchor::Start);
    for (i, s) in plot.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points = frame.canvas_points(s);
        if s.dots {
            for &p in &points {
                canvas.polyline(&[p], colour, 0.9);
            }
        } else {
            canvas.polyline(&points, colour, 0.9);
        }
        let ly = TOP + 16.0 + 16.0 * i as f64;
        canvas.polyline(&[(LEFT + PLOT_WIDTH - 150.0, ly), (LEFT + PLOT_WIDTH - 130.0, ly)], colour, 1.0);
        canvas.text(font, &s.label, LEFT + PLOT_WIDTH - 124.0, ly + 4.0, 12.0, Anchor::Start);
    }
}

/// Plots side by side on one canvas.
#[must_use]
pub fn render(plots: &[Plot]) -> Canvas {
    let font = FontRef::try_from_slice(FONT_BYTES).expect("the bundled font parses");
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let mut canvas = Canvas::new(w * plots.len().max(1), h);
    for (i, plot) in plots.iter().enumerate() {
        let mut panel = Canvas::new(w, h);
        draw(&mut panel, plot, &font);
        for y in 0..h {
            let src = &panel.pixels[y * w * 3..(y + 1) * w * 3];
            let at = (y * canvas.width + i * w) * 3;
            canvas.pixels[at..at + w * 3].copy_from_slice(src);
        }
    }
    canvas
}

/// Saves plots side by side as an RGB PNG (temporary file, then rename).
///
/// # Errors
/// I/O errors naming the file.
pub fn save_png(path: &std::path::Path, plots: &[Plot]) -> std::io::Result<()> {
    let canvas = render(plots);
    crate::render::image::write_png(path, canvas.width, canvas.height, png::ColorType::Rgb, &canvas.pixels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::plot::Series;

    #[test]
    fn a_line_and_the_text_leave_ink() {
        let plot = Plot {
            title: "t".into(),
            series: vec![Series { label: "a".into(), points: vec![(0.0, 0.0), (1.0, 1.0)], dots: false }],
            ..Plot::default()
        };
        let canvas = render(&[plot.clone(), plot]);
        assert_eq!((canvas.width, canvas.height), (2 * WIDTH as usize, HEIGHT as usize));
        // The diagonal passes through the middle of the plot area in the series colour.
        let (x, y) = ((LEFT + PLOT_WIDTH / 2.0) as usize, (TOP + PLOT_HEIGHT / 2.0) as usize);
        let near: Vec<&[u8]> = (y - 2..=y + 2).map(|yy| &canvas.pixels[(yy * canvas.width + x) * 3..][..3]).collect();
        assert!(near.iter().any(|p| p[2] > p[0] + 60), "no blue near the centre: {near:?}");
        // The title's glyph darkens pixels near the top centre.
        let title_ink =
            (10..30).flat_map(|yy| (300..340).map(move |xx| (yy, xx))).any(|(yy, xx)| canvas.pixels[(yy * canvas.width + xx) * 3] < 128);
        assert!(title_ink);
    }
}
