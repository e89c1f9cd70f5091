//! Matrix transpose between strided rows: `dst[j, i] = src[i, j]`, the copy
//! between channel-major images `(C, H W)` and channels-last ones `(H W, C)`
//! (Winograd's transforms run over the channels of a pixel, see
//! `conv/winograd.rs`).
//!
//! Element by element, every write of a transpose lands a row away from the
//! last; at 14 x 14 x 64 the copies to and from channels last were about a
//! tenth of a Winograd convolution's time. For f32 on a CPU with AVX-512F,
//! whole 16 x 16 blocks are transposed in registers instead: sixteen row
//! loads, four rounds of sixteen shuffles, sixteen row stores. The edges
//! that do not fill a block go element by element, as does f64.
//!
//! The rows written need not follow each other: [`transpose_into_frame`]
//! puts pixel `(y, x)` of an image inside a larger frame (a convolution's
//! zero padding around it), so an image goes channels last into its padded
//! frame in one pass.

#![deny(unsafe_op_in_unsafe_fn)]

use super::gemm::scratch::with_scratch;
use super::gemm::{GemmScalar, MatRef};

/// Rows and columns of a block transposed in registers.
const BLOCK: usize = 16;

/// `dst[j * dst_rs + i] = src[i * src_rs + j]` for `i < rows`, `j < cols`.
///
/// # Panics
/// If `src` or `dst` is too short for those indices.
pub fn transpose<T: GemmScalar>(src: &[T], (rows, cols): (usize, usize), src_rs: usize, dst: &mut [T], dst_rs: usize) {
    let frame = Frame { width: cols.max(1), frame_width: cols.max(1), first: 0, pixel_stride: dst_rs };
    transpose_into_frame(src, (rows, cols), src_rs, dst, frame);
}

/// Where [`transpose_into_frame`] writes the columns of its source: column
/// `j` is pixel `(j / width, j % width)` of an image, and becomes the row
/// of `dst` at `first + ((j / width) frame_width + j % width) pixel_stride`
/// (an image channels last inside a wider frame: the zero padding of a
/// convolution around it). A plain transpose is one image row, `width =
/// frame_width = cols`.
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    pub width: usize,
    pub frame_width: usize,
    pub first: usize,
    pub pixel_stride: usize,
}

impl Frame {
    /// The row of column `j`, or `None` if it overflows `usize`.
    fn checked_row(self, j: usize) -> Option<usize> {
        (j / self.width).checked_mul(self.frame_width)?.checked_add(j % self.width)?.checked_mul(self.pixel_stride)?.checked_add(self.first)
    }

    /// The rows of columns `j0, j0 + 1, ...`, counted along (no division a
    /// column).
    fn rows_from(self, j0: usize) -> impl Iterator<Item = usize> {
        let (mut y, mut x) = (j0 / self.width, j0 % self.width);
        std::iter::from_fn(move || {
            let row = self.first + (y * self.frame_width + x) * self.pixel_stride;
            x += 1;
            if x == self.width {
                (x, y) = (0, y + 1);
            }
            Some(row)
        })
    }
}

/// `dst[row(j) + i] = src[i * src_rs + j]` for `i < rows`, `j < cols`,
/// `row(j)` as [`Frame`] says; the rest of `dst` is left as it is.
///
/// # Panics
/// If `src` is too short, if the frame's rows overlap (`pixel_stride <
/// rows` or `frame_width < width`), or if its last row ends past `dst`.
pub fn transpose_into_frame<T: GemmScalar>(src: &[T], (rows, cols): (usize, usize), src_rs: usize, dst: &mut [T], frame: Frame) {
    if rows == 0 || cols == 0 {
        return;
    }
    // Checked arithmetic (the source as a checked view): a wrapped product would
    // pass the bound and let the AVX-512 blocks read and write out of bounds in a
    // release build. The rows grow with the column, so the last one bounds them all.
    assert!(
        frame.width > 0
            && frame.width <= frame.frame_width
            && rows <= frame.pixel_stride
            && cols <= src_rs
            && MatRef::new(src, rows, cols, src_rs, 1).is_some()
            && frame.checked_row(cols - 1).and_then(|last| last.checked_add(rows)).is_some_and(|end| end <= dst.len()),
        "transpose: a ({rows}, {cols}) matrix with row stride {src_rs} into {frame:?} does not fit slices of {} and {}",
        src.len(),
        dst.len()
    );
    let (block_rows, block_cols) = blocks_in_registers(src, (rows, cols), src_rs, dst, frame);
    // The edges (or everything): the columns right of the blocks, then the
    // rows under them.
    for (j, row) in (block_cols..cols).zip(frame.rows_from(block_cols)) {
        for i in 0..block_rows {
            dst[row + i] = src[i * src_rs + j];
        }
    }
    for (j, row) in (0..cols).zip(frame.rows_from(0)) {
        for i in block_rows..rows {
            dst[row + i] = src[i * src_rs + j];
        }
    }
}

/// [`transpose_into_frame`] of the source after `map`: row `i` of `src` goes
/// through `map(i, row, mapped)` (writing `mapped`, as long as the row)
/// before it is transposed. A convolution reads its input this way through a
/// per-channel map (a group norm's affine map and SiLU, see
/// `conv::InputMap`) without the mapped image ever going to memory: 16 rows
/// at a time are mapped into a scratch strip, which stays in cache, and
/// transposed from there.
///
/// # Panics
/// As [`transpose_into_frame`].
pub fn transpose_into_frame_mapped<T: GemmScalar>(
    src: &[T],
    (rows, cols): (usize, usize),
    src_rs: usize,
    dst: &mut [T],
    frame: Frame,
    map: impl Fn(usize, &[T], &mut [T]),
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        cols <= src_rs && MatRef::new(src, rows, cols, src_rs, 1).is_some(),
        "transpose: a ({rows}, {cols}) matrix with row stride {src_rs} does not fit a slice of {}",
        src.len()
    );
    with_scratch(BLOCK * cols, |strip: &mut [T]| {
        for i0 in (0..rows).step_by(BLOCK) {
            let strip_rows = BLOCK.min(rows - i0);
            for (i, mapped) in strip.chunks_exact_mut(cols).take(strip_rows).enumerate() {
                map(i0 + i, &src[(i0 + i) * src_rs..][..cols], mapped);
            }
            // Row i of the strip is row i0 + i of the matrix: i0 further along
            // every pixel of the frame.
            let frame = Frame { first: frame.first + i0, ..frame };
            transpose_into_frame(&strip[..strip_rows * cols], (strip_rows, cols), cols, dst, frame);
        }
    });
}

/// Transposes the whole 16 x 16 blocks of the matrix in registers, if `T`
/// is f32 and the CPU has AVX-512F, and returns the rows and columns they
/// cover; else does nothing and returns `(0, 0)`. A column of blocks at a
/// time, so its 16 rows of `dst` are found once.
fn blocks_in_registers<T: GemmScalar>(
    src: &[T],
    (rows, cols): (usize, usize),
    src_rs: usize,
    dst: &mut [T],
    frame: Frame,
) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() && is_x86_feature_detected!("avx512f") {
        // SAFETY: T is f32 (the same type id), so these are slices of f32.
        let (src, dst) = unsafe { (&*(src as *const [T] as *const [f32]), &mut *(dst as *mut [T] as *mut [f32])) };
        let (full_rows, full_cols) = (rows / BLOCK * BLOCK, cols / BLOCK * BLOCK);
        for j0 in (0..full_cols).step_by(BLOCK) {
            let mut dst_rows = [0; BLOCK];
            for (d, row) in dst_rows.iter_mut().zip(frame.rows_from(j0)) {
                *d = row;
            }
            for i0 in (0..full_rows).step_by(BLOCK) {
                // SAFETY: AVX-512F was detected just above; the block's rows
                // i0..i0+16 and columns j0..j0+16 lie inside `src`, and its
                // destination rows `dst_rows[c] + i0 ..][..16]` inside `dst`
                // (rows grow with the column and the last ends inside `dst`,
                // as `transpose_into_frame` checked).
                unsafe { block_16x16_avx512(src, i0 * src_rs + j0, src_rs, dst, &dst_rows, i0) };
            }
        }
        return (full_rows, full_cols);
    }
    let _ = (src, rows, cols, src_rs, dst, frame);
    (0, 0)
}

/// One 16 x 16 block: `dst[dst_rows[c] + i0 + r] = src[s + r * src_rs + c]`,
/// `r, c < 16`.
///
/// # Safety
/// The CPU must support AVX-512F, and every index above must be in bounds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block_16x16_avx512(src: &[f32], s: usize, src_rs: usize, dst: &mut [f32], dst_rows: &[usize; 16], i0: usize) {
    use std::arch::x86_64::{__m512, _mm512_loadu_ps, _mm512_storeu_ps};
    debug_assert!(s + 15 * src_rs + 16 <= src.len() && dst_rows.iter().all(|&d| d + i0 + 16 <= dst.len()));
    // SAFETY (every load): row r of the block is src[s + r * src_rs ..][..16],
    // in bounds by the caller's contract.
    let r: [__m512; 16] = std::array::from_fn(|i| unsafe { _mm512_loadu_ps(src.as_ptr().add(s + i * src_rs)) });
    let w = registers_16x16(r);
    for (row, &d) in w.iter().zip(dst_rows) {
        // SAFETY: column c of the block is dst[dst_rows[c] + i0 ..][..16], in
        // bounds by the caller's contract.
        unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add(d + i0), *row) };
    }
}

/// The 16 x 16 transpose of the rows `r` in registers: lane `i` of row `c`
/// of the result is lane `c` of `r[i]`. Four rounds of sixteen shuffles; the
/// GEMM's packing of A (`gemm/avx512.rs`) uses it too. Callable from code
/// compiled with AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) fn registers_16x16(r: [std::arch::x86_64::__m512; 16]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::{__m512, _mm512_shuffle_f32x4, _mm512_shuffle_ps, _mm512_unpackhi_ps, _mm512_unpacklo_ps};
    // Round 1: interleave pairs of rows, 32-bit elements within each 128-bit lane.
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // Round 2: 64-bit pairs within each 128-bit lane, from rows four apart.
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let (base, which) = (i / 4 * 4, i % 4);
        let (a, b) = (t[base + which / 2], t[base + 2 + which / 2]);
        if which % 2 == 0 {
            _mm512_shuffle_ps::<0x44>(a, b)
        } else {
            _mm512_shuffle_ps::<0xEE>(a, b)
        }
    });
    // Round 3 and 4: 128-bit lanes, from groups of four rows, then of eight.
    let v: [__m512; 16] = std::array::from_fn(|i| {
        let (half, j) = (i / 8 * 8, i % 8);
        let (a, b) = (u[half + j % 4], u[half + 4 + j % 4]);
        if j < 4 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xDD>(a, b)
        }
    });
    std::array::from_fn(|i| {
        let (a, b) = (v[i % 8], v[8 + i % 8]);
        if i < 8 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xDD>(a, b)
        }
    })
}

/// `transpose` by the definition: the oracle of the tests.
#[cfg(test)]
fn transpose_naive<T: Copy>(src: &[T], (rows, cols): (usize, usize), src_rs: usize, dst: &mut [T], dst_rs: usize) {
    for i in 0..rows {
        for j in 0..cols {
            dst[j * dst_rs + i] = src[i * src_rs + j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_scalar::TestScalar;

    /// Odd and block-sized shapes, padded row strides, f32 and f64, the
    /// destination poisoned with NaN: the transposed entries equal the
    /// definition's bit for bit, and the gaps between rows stay untouched.
    #[test]
    fn matches_the_definition() {
        for (rows, cols) in [(1, 1), (16, 16), (17, 33), (64, 196), (196, 64), (49, 64), (5, 100), (32, 15)] {
            for pad in [0, 3] {
                let (src_rs, dst_rs) = (cols + pad, rows + 2 * pad);
                let src32: Vec<f32> = (0..rows * src_rs).map(|i| i as f32 * 0.5 - 7.0).collect();
                let src64: Vec<f64> = src32.iter().map(|&x| f64::from(x) * 1.25).collect();
                let mut got32 = vec![f32::NAN; cols * dst_rs];
                let mut want32 = vec![f32::NAN; cols * dst_rs];
                transpose(&src32, (rows, cols), src_rs, &mut got32, dst_rs);
                transpose_naive(&src32, (rows, cols), src_rs, &mut want32, dst_rs);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got32), bits(&want32), "f32 ({rows}, {cols}) pad {pad}");
                let mut got64 = vec![f64::NAN; cols * dst_rs];
                let mut want64 = vec![f64::NAN; cols * dst_rs];
                transpose(&src64, (rows, cols), src_rs, &mut got64, dst_rs);
                transpose_naive(&src64, (rows, cols), src_rs, &mut want64, dst_rs);
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got64), bits(&want64), "f64 ({rows}, {cols}) pad {pad}");
            }
        }
    }

    /// A row stride whose product with the rows wraps `usize` (15 x stride
    /// = 14 here) is refused, not taken as a short matrix that fits: the
    /// AVX-512 blocks would read far outside `src`.
    #[test]
    #[should_panic(expected = "does not fit")]
    fn a_wrapping_row_stride_is_refused() {
        let src = [0f32; 30];
        let mut dst = [f32::NAN; 256];
        transpose(&src, (16, 16), usize::MAX / 15 + 1, &mut dst, 16);
    }

    /// The same for a frame whose last row's offset wraps: its blocks would
    /// write outside `dst`.
    #[test]
    #[should_panic(expected = "does not fit")]
    fn a_wrapping_frame_is_refused() {
        let src = [0f32; 256];
        let mut dst = [f32::NAN; 256];
        let frame = Frame { width: 16, frame_width: 16, first: 0, pixel_stride: usize::MAX / 15 + 1 };
        transpose_into_frame(&src, (16, 16), 16, &mut dst, frame);
    }

    /// Into frames: images of odd and block-sized widths in wider frames
    /// with an offset, rows of `dst` wider than the matrix (f32 blocks and
    /// their edges, f64): each column lands where the frame's formula puts
    /// it, bit for bit, and nothing else of the NaN-poisoned destination
    /// is written.
    #[test]
    fn into_a_frame_matches_the_definition() {
        for (rows, width, height) in [(16, 16, 2), (32, 7, 7), (33, 28, 3), (5, 3, 11), (48, 14, 14)] {
            let cols = width * height;
            let frame = Frame { width, frame_width: width + 3, first: 2 * rows + 5, pixel_stride: rows + 1 };
            let len = frame.checked_row(cols - 1).unwrap() + rows + 4;
            let row = |j: usize| frame.first + ((j / width) * (width + 3) + j % width) * (rows + 1);
            let src32: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.25 + 1.0).collect();
            let mut got32 = vec![f32::NAN; len];
            transpose_into_frame(&src32, (rows, cols), cols, &mut got32, frame);
            let src64: Vec<f64> = src32.iter().map(|&x| f64::from(x) * 1.5).collect();
            let mut got64 = vec![f64::NAN; len];
            transpose_into_frame(&src64, (rows, cols), cols, &mut got64, frame);
            let mut written = vec![false; len];
            for j in 0..cols {
                for i in 0..rows {
                    assert_eq!(got32[row(j) + i].to_bits(), src32[i * cols + j].to_bits(), "f32 {rows} x {width} x {height} ({i}, {j})");
                    assert_eq!(got64[row(j) + i].to_bits(), src64[i * cols + j].to_bits(), "f64 {rows} x {width} x {height} ({i}, {j})");
                    written[row(j) + i] = true;
                }
            }
            for (idx, _) in written.iter().enumerate().filter(|(_, &w)| !w) {
                assert!(got32[idx].is_nan() && got64[idx].is_nan(), "{rows} x {width} x {height}: element {idx} written");
            }
        }
    }

    /// Through a row map: strips of 16 rows and the rows past the last full
    /// strip, images of odd widths in wider frames, f32 and f64. Each entry
    /// is the map of its source value by its own row's rule, bit for bit,
    /// and nothing else of the NaN-poisoned destination is written.
    #[test]
    fn mapped_into_a_frame_matches_the_definition() {
        fn check<T: TestScalar>(rows: usize, width: usize, height: usize) {
            let cols = width * height;
            let frame = Frame { width, frame_width: width + 2, first: rows + 3, pixel_stride: rows + 2 };
            let len = frame.checked_row(cols - 1).unwrap() + rows + 5;
            let rule = |i: usize, v: T| v * T::from_f64(i as f64 + 1.5) - T::from_f64(0.25);
            let src: Vec<T> = (0..rows * (cols + 1)).map(|i| T::from_f64(i as f64 * 0.125 - 3.0)).collect();
            let mut got = vec![T::from_f64(f64::NAN); len];
            transpose_into_frame_mapped(&src, (rows, cols), cols + 1, &mut got, frame, |i, row, mapped| {
                for (m, &v) in mapped.iter_mut().zip(row) {
                    *m = rule(i, v);
                }
            });
            let mut want = vec![T::from_f64(f64::NAN); len];
            for j in 0..cols {
                for i in 0..rows {
                    want[frame.checked_row(j).unwrap() + i] = rule(i, src[i * (cols + 1) + j]);
                }
            }
            let bits = |v: &[T]| v.iter().map(|x| x.to_f64().to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{} rows, {width} x {height}", rows);
        }
        for (rows, width, height) in [(1, 1, 1), (16, 16, 1), (17, 7, 7), (33, 14, 14), (48, 5, 3), (64, 28, 2)] {
            check::<f32>(rows, width, height);
            check::<f64>(rows, width, height);
        }
    }

    /// A matrix with no rows or no columns writes nothing and maps nothing,
    /// whatever its row stride says.
    #[test]
    fn empty_matrices_write_nothing() {
        for (rows, cols) in [(0, 5), (5, 0), (0, 0)] {
            let mut dst = [f32::NAN; 8];
            transpose_into_frame_mapped(
                &[],
                (rows, cols),
                7,
                &mut dst,
                Frame { width: 1, frame_width: 1, first: 0, pixel_stride: 1 },
                |_, _, _| panic!("nothing to map"),
            );
            transpose(&[], (rows, cols), 7, &mut dst, 1);
            assert!(dst.iter().all(|v| v.is_nan()), "({rows}, {cols})");
        }
    }

    #[test]
    #[should_panic(expected = "transpose: a (3, 4) matrix")]
    fn too_short_a_destination_panics() {
        transpose(&[0.0f32; 12], (3, 4), 4, &mut [0.0; 11], 3);
    }
}
