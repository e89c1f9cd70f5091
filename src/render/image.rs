//! Pictures: grids of grayscale images as PNG, written atomically.
//!
//! Images arrive as model tensors: `(N, 1, H, W)` floats in `[-1, 1]` (the range
//! the diffusion works in), mapped back to bytes by `p = (x + 1) * 127.5`, clamped.

use std::fs;
use std::io::BufWriter;
use std::path::Path;

/// Pixels between neighbouring images of a grid.
const PAD: usize = 2;

/// One `[-1, 1]` value to a byte: the inverse of the loader's `p / 127.5 - 1`.
#[must_use]
pub fn to_byte(x: f32) -> u8 {
    ((x + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8
}

/// Lays `n` images of `h x w` (row-major, `[-1, 1]`) on a grid of `cols` columns
/// with a dark gap between them; returns (width, height, bytes).
///
/// # Panics
/// Never for consistent input; `images.len()` must be `n * h * w` (checked).
#[must_use]
pub fn grid(images: &[f32], n: usize, h: usize, w: usize, cols: usize) -> (usize, usize, Vec<u8>) {
    assert_eq!(images.len(), n * h * w, "grid: {} values for {n} images of {h}x{w}", images.len());
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols).max(1);
    let (width, height) = (cols * w + (cols + 1) * PAD, rows * h + (rows + 1) * PAD);
    let mut pixels = vec![0u8; width * height];
    for (i, image) in images.chunks(h * w).enumerate() {
        let (top, left) = (PAD + (i / cols) * (h + PAD), PAD + (i % cols) * (w + PAD));
        for y in 0..h {
            for x in 0..w {
                pixels[(top + y) * width + left + x] = to_byte(image[y * w + x]);
            }
        }
    }
    (width, height, pixels)
}

/// Writes an 8-bit grayscale PNG through a temporary file and a rename, so a
/// reader never sees half a picture.
///
/// # Errors
/// Any I/O or encoding error, with the path in the message.
pub fn write_gray_png(path: &Path, width: usize, height: usize, pixels: &[u8]) -> std::io::Result<()> {
    write_png(path, width, height, png::ColorType::Grayscale, pixels)
}

/// Writes an 8-bit PNG (grayscale or RGB bytes, row-major) through a temporary
/// file and a rename.
///
/// # Errors
/// Any I/O or encoding error, with the path in the message.
pub fn write_png(path: &Path, width: usize, height: usize, colour: png::ColorType, pixels: &[u8]) -> std::io::Result<()> {
    let with_path = |e: &dyn std::fmt::Display| std::io::Error::other(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| with_path(&e))?;
    }
    let tmp = path.with_extension("png.tmp");
    {
        let file = fs::File::create(&tmp).map_err(|e| with_path(&e))?;
        let mut encoder = png::Encoder::new(BufWriter::new(file), width as u32, height as u32);
        encoder.set_color(colour);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| with_path(&e))?;
        writer.write_image_data(pixels).map_err(|e| with_path(&e))?;
    }
    fs::rename(&tmp, path).map_err(|e| with_path(&e))
}

/// A grid of `(N, 1, H, W)` images in `[-1, 1]` saved as one PNG.
///
/// # Errors
/// As [`write_gray_png`].
pub fn save_grid(path: &Path, images: &[f32], n: usize, h: usize, w: usize, cols: usize) -> std::io::Result<()> {
    let (width, height, pixels) = grid(images, n, h, w, cols);
    write_gray_png(path, width, height, &pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_invert_the_loader_map() {
        for p in 0..=255u8 {
            assert_eq!(to_byte(f32::from(p) / 127.5 - 1.0), p);
        }
        assert_eq!(to_byte(-3.0), 0);
        assert_eq!(to_byte(f32::NAN), 0);
    }

    #[test]
    fn grid_places_images_with_padding() {
        // Two 1x2 images side by side: white then black.
        let (w, h, px) = grid(&[1.0, 1.0, -1.0, -1.0], 2, 1, 2, 2);
        assert_eq!((w, h), (2 * 2 + 3 * PAD, 1 + 2 * PAD));
        assert_eq!(&px[PAD * w + PAD..PAD * w + PAD + 2], &[255, 255]);
    }

    #[test]
    fn png_round_trip() {
        let dir = std::env::temp_dir().join(format!("ddpm-image-test-{}", std::process::id()));
        let path = dir.join("g.png");
        save_grid(&path, &[0.0; 3 * 4 * 5], 3, 4, 5, 2).unwrap();
        let decoder = png::Decoder::new(std::fs::File::open(&path).unwrap());
        let reader = decoder.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (2 * 5 + 3 * PAD as u32, 2 * 4 + 3 * PAD as u32));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
