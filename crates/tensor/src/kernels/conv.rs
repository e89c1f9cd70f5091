//! 2-d convolution (cross-correlation, as in PyTorch), forward and backward,
//! NCHW, dilation 1, groups 1, as im2col + GEMM.
//!
//! Shape legend:
//! ```text
//! N  batch size            C  input channels      H, W    input height, width
//! K  output channels       KH, KW kernel size     S, P    stride, padding
//! OH = (H + 2P - KH) / S + 1,  OW = (W + 2P - KW) / S + 1
//! L  = OH * OW   output positions per image
//! R  = C * KH * KW   rows of the im2col matrix (one per weight of a filter)
//! ```
//!
//! The definition, with `x` zero outside the image (the padding):
//! ```text
//! out[n, k, oh, ow] = bias[k] + sum_{c, i, j} weight[k, c, i, j] * x[n, c, oh*S + i - P, ow*S + j - P]
//! ```
//!
//! im2col turns it into a matrix product. Gather every input value a
//! filter weight touches into `cols[n]`, an (R, L) matrix:
//! `cols[(c*KH + i)*KW + j, oh*OW + ow] = x[n, c, oh*S + i - P, ow*S + j - P]`.
//! The weight, stored (K, C, KH, KW), is already an (K, R) matrix, so
//!
//! ```text
//! forward      out[n]  (K, L) = weight (K, R)   @ cols[n] (R, L)     (+ bias[k] on row k)
//! grad input   dcols   (R, L) = weight^T (R, K) @ dout[n] (K, L);    dx[n] = col2im(dcols)
//! grad weight  dweight (K, R) = sum_n dout[n] (K, L) @ cols[n]^T (L, R)
//! grad bias    dbias[k]       = sum_{n, oh, ow} dout[n, k, oh, ow]
//! ```
//!
//! col2im is the adjoint of im2col: it adds each entry of `dcols` back onto
//! the input position it was gathered from (positions overlap when the
//! stride is smaller than the kernel, hence `+=`).
//!
//! A 1x1 convolution with stride 1 and no padding needs no im2col: `cols[n]`
//! is `x[n]` itself viewed as (C, H*W). Its grad input is `weight^T @
//! dout[n]` written straight into `dx[n]`; its grad weight copies `x[n]`
//! channels last, as `Im2row` does, and multiplies `dout[n]` by that stored
//! (H*W, C) matrix with nothing packed while it fits a quarter of L2. (As a
//! flipped convolution, with a padded copy of `dout[n]` and a copy-out, the
//! grad input took 1.3-2.5 times as long at the UNets' shapes; the grad
//! weight as a product with the strided view `x[n]^T`, whose B~ panels were
//! gathered column by column, 1.3-2.2 times; see `benches/SPEED.md`, session
//! 34.)
//!
//! # Implicit im2col
//!
//! The im2col matrix is `KH * KW` times the image (900 KiB per image at
//! 32 x 28 x 28, more than L2), and the GEMM would read it once more to pack
//! it. So the fast paths never store it: the GEMM takes B as a
//! [`PackB`](super::gemm::PackB), and `conv/implicit.rs` packs B~
//! micro-panels straight from a zero-padded copy of the image, which stays
//! in L2:
//!
//! - forward, stride 1: `cols` in padded coordinates, whose rows are
//!   contiguous slices of the padded image (`Im2col`); the GEMM writes
//!   (K, OH * WP) and the copy-out drops the `WP - OW` junk columns.
//! - grad input, stride 1 and `P < KH, KW`: a forward convolution of `dout`
//!   with the flipped kernel (see `Conv2dGeometry::flipped`); no `dcols`, no
//!   col2im.
//! - grad weight: `dweight (K, R') = sum_n dout[n] @ rows[n]`, `rows` =
//!   `cols^T` with its columns in the order (i, j, c), packed from a
//!   channels-last copy of the image (`Im2row`): each micro-panel row is a
//!   run of consecutive channels instead of a gather across the rows of
//!   `cols`. The (c, i, j) order of `grad_w` is restored at the end. With
//!   fewer than 32 columns (`R' < THIN_MAX_R`, a 1-channel image's first
//!   convolution has 9) it is `K R'` dot products over the output pixels
//!   instead, since a micro-panel of the GEMM would be mostly zeros.
//!
//! In the first two the A of every image's product is the same (the weight,
//! or the flipped weight), so it is packed once per call ([`PackedA`]), not
//! once per image: at 7 x 7 pixels packing it was a quarter of an image's
//! product.
//!
//! With few output channels (at most 64, so two to six A~ micro-panels)
//! the B~ micro-panels are not packed at all: both matrices are also
//! [`DirectB`](super::gemm::DirectB)s, whose rows the AVX-512 microkernel
//! reads where they lie in the padded image (`Im2row` when C is a multiple
//! of 16); see `gemm/direct.rs`. Bit-identical to packing them.
//!
//! Read that way, the forward and the grad input at stride 1 need no padded
//! copy at all when the output rows are as long as the input rows (`2P + 1 =
//! KW`, every 3x3 convolution with padding 1): `Im2colInPlace` numbers the
//! columns `oh * W + ow`, so each row of `cols` is a run of the image
//! itself, and the entries that fall in the padding (a run crossing from one
//! image row to the next, or above and below the image) are lanes that the
//! microkernel's masked loads leave at zero. The GEMM then writes the output
//! itself: no padded copy, no junk columns, no copy-out. Bit-identical to
//! the padded path. At the quick UNet's shapes (batch 64, two threads,
//! session 41, time against the padded path's) the forward took 0.88-0.96
//! of it at 16 channels 28 x 28, 0.84-0.86 at 14 x 14 and 0.68-0.71 from 16
//! to 32 channels at 7 x 7, the grad input 0.87-0.94, 0.86-0.90 and
//! 0.65-0.68; the quick UNet's training step 4.0% less (see
//! `benches/SPEED.md`).
//!
//! At stride S > 1 the forward reads the same way from the image split into
//! `S x S` phase planes (every S-th pixel of every S-th row, from each of
//! the S^2 starting pixels), where each row of `cols` is a contiguous run
//! again (see `Im2col`). The grad input at stride S > 1 keeps the explicit
//! `dcols` and col2im.
//!
//! # Winograd
//!
//! A 3x3 convolution with stride 1 and padding 1 and at least 32 channels
//! in and out (every level of the course UNet, the 14 x 14 and 7 x 7 levels
//! of the quick preset's) takes `conv/winograd.rs` instead: F(2x2, 3x3), 16
//! GEMMs over transformed 4 x 4 tiles, 2.25 times fewer multiplications; the
//! weight gradient too from 14 x 14 on. Its header has the algorithm, the measurements and the rounding.
//!
//! # Fused forward
//!
//! The Winograd forward copies each image into a channels-last frame before
//! it transforms it, and each output image out of a channels-last buffer
//! after. [`conv2d_forward_fused`] uses both copies: a map of the input's
//! planes (a group norm's scale, shift and SiLU) is applied on the way in,
//! an update of the output's planes (a residual block's additions) right
//! after the way out, so neither the mapped input nor the output before its
//! update is a pass over memory of its own. Bit-identical to the three
//! steps done one after the other.
//!
//! Threads: images are independent in the forward and grad-input passes, so
//! rayon runs one image per task (each task with its own reused scratch
//! buffers and a single-threaded GEMM). The weight gradient sums over
//! images; to keep the result independent of the thread count, the batch is
//! cut into fixed chunks of `WEIGHT_GRAD_CHUNK` images, each chunk sums its
//! images in order into its own partial, and the partials are added in chunk
//! order.

use rayon::prelude::*;

use super::elementwise::{lane_dot, lane_sum, vectorized};
use super::gemm::scratch::with_scratch;
use super::gemm::{
    gemm_packed_b, gemm_prepacked, gemm_unpacked, gemm_with, CacheSizes, GemmScalar, Kernel, MatMut, MatRef, PackedA, Threading,
};
use implicit::{pad_chw, pad_chw_phases, pad_hwc, Im2col, Im2colInPlace, Im2row, InPlaceGeometry, PaddedGeometry};

mod implicit;
mod winograd;

/// Sizes of a 2-d convolution (see the legend at the top of `conv.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeometry {
    /// Batch size N.
    pub n: usize,
    /// Input channels C.
    pub c: usize,
    /// Input height H.
    pub h: usize,
    /// Input width W.
    pub w: usize,
    /// Output channels K.
    pub k: usize,
    /// Kernel height KH.
    pub kh: usize,
    /// Kernel width KW.
    pub kw: usize,
    /// Stride S (both directions), at least 1.
    pub stride: usize,
    /// Zero padding P on every side.
    pub padding: usize,
}

impl Conv2dGeometry {
    /// Output height `OH = (H + 2P - KH) / S + 1`.
    ///
    /// # Panics
    /// If the padded input is smaller than the kernel, or the stride is 0.
    pub fn out_h(&self) -> usize {
        self.assert_valid();
        (self.h + 2 * self.padding - self.kh) / self.stride + 1
    }

    /// Output width `OW = (W + 2P - KW) / S + 1`.
    ///
    /// # Panics
    /// If the padded input is smaller than the kernel, or the stride is 0.
    pub fn out_w(&self) -> usize {
        self.assert_valid();
        (self.w + 2 * self.padding - self.kw) / self.stride + 1
    }

    /// Multiply-adds times 2 of the forward pass: `2 N K OH OW C KH KW`.
    /// Each backward pass (grad input, grad weight) costs the same.
    pub fn flops(&self) -> f64 {
        2.0 * (self.n * self.k * self.out_h() * self.out_w()) as f64 * (self.c * self.kh * self.kw) as f64
    }

    fn assert_valid(&self) {
        assert!(
            self.stride >= 1
                && self.kh >= 1
                && self.kw >= 1
                && self.h + 2 * self.padding >= self.kh
                && self.w + 2 * self.padding >= self.kw,
            "conv2d: kernel {}x{} (stride {}, padding {}) does not fit a {}x{} input",
            self.kh,
            self.kw,
            self.stride,
            self.padding,
            self.h,
            self.w
        );
    }

    /// Output positions per image, `L = OH * OW`.
    fn l(&self) -> usize {
        self.out_h() * self.out_w()
    }

    /// Rows of the im2col matrix, `R = C * KH * KW`.
    fn r(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// True if `cols[n]` is `x[n]` itself: 1x1 kernel, stride 1, no padding.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0
    }

    /// The input as the implicit im2col of `implicit.rs` sees it, padded.
    fn padded(&self) -> PaddedGeometry {
        PaddedGeometry {
            c: self.c,
            hp: self.h + 2 * self.padding,
            wp: self.w + 2 * self.padding,
            kh: self.kh,
            kw: self.kw,
            stride: self.stride,
            out_h: self.out_h(),
            out_w: self.out_w(),
        }
    }

    /// The forward pass as [`Im2colInPlace`] reads it, if it can: stride 1,
    /// output rows as long as input rows (`2 P = KW - 1`) and `P < KH`.
    fn in_place(&self) -> Option<InPlaceGeometry> {
        let fits = self.stride == 1 && 2 * self.padding + 1 == self.kw && self.padding < self.kh;
        (fits && !self.is_pointwise()).then_some(InPlaceGeometry {
            c: self.c,
            h: self.h,
            w: self.w,
            kh: self.kh,
            kw: self.kw,
            ph: self.padding,
            pw: self.padding,
        })
    }

    /// The grad-input pass as a forward convolution of `dout` read by
    /// [`Im2colInPlace`], if the forward is one (see [`Self::flipped`] and
    /// [`Self::in_place`]): `dout` padded by `KH-1-P` rows and `KW-1-P = P`
    /// columns (`2P + 1 = KW`), so its output rows are as long as `dout`'s.
    fn flipped_in_place(&self) -> Option<InPlaceGeometry> {
        let forward = self.in_place()?;
        Some(InPlaceGeometry { c: self.k, h: self.out_h(), w: self.out_w(), ph: self.kh - 1 - self.padding, ..forward })
    }

    /// The grad-input pass as a forward convolution, if there is one.
    ///
    /// With stride 1, `x[c, y, x']` meets `weight[k, c, i, j]` at output
    /// `(y + P - i, x' + P - j)`. Write `i = KH-1-i'` and `j = KW-1-j'`:
    /// ```text
    /// dx[c, y, x'] = sum_{k, i', j'} weight[k, c, KH-1-i', KW-1-j'] * dout[k, y + i' - (KH-1-P), x' + j' - (KW-1-P)]
    /// ```
    /// a convolution of `dout` (K, OH, OW), zero-padded by `KH-1-P` rows and
    /// `KW-1-P` columns, with the flipped kernel (C, K, KH, KW); its output
    /// is H x W. Needs stride 1 and `P <= KH-1, KW-1`; else `None`.
    fn flipped(&self) -> Option<PaddedGeometry> {
        if self.stride != 1 || self.padding >= self.kh || self.padding >= self.kw {
            return None;
        }
        Some(PaddedGeometry {
            c: self.k,
            hp: self.out_h() + 2 * (self.kh - 1 - self.padding),
            wp: self.out_w() + 2 * (self.kw - 1 - self.padding),
            kh: self.kh,
            kw: self.kw,
            stride: 1,
            out_h: self.h,
            out_w: self.w,
        })
    }

    /// Panics unless each slice has the length its shape needs.
    fn assert_lengths(&self, op: &str, lengths: &[(&str, usize, usize)]) {
        for &(name, len, want) in lengths {
            assert!(len == want, "{op}: {name} has {len} elements, geometry {self:?} needs {want}");
        }
    }
}

/// Whether the passes of `g` run Winograd's F(2x2, 3x3) (`conv/winograd.rs`)
/// rather than im2col: `(forward and grad input, grad weight)`.
#[must_use]
pub fn uses_winograd(g: &Conv2dGeometry) -> (bool, bool) {
    (winograd::applies(g), winograd::applies_to_weight_grad(g))
}

/// Images per task in the weight gradient: fixed, so that the summation
/// order (and so every bit of the result) does not depend on thread count.
const WEIGHT_GRAD_CHUNK: usize = 4;

/// Elements per task of [`add_partials_in_order`]: the block of the sum (16
/// KiB of f32) stays in L1 while every partial streams past it.
const PARTIAL_SUM_BLOCK: usize = 1 << 12;

/// Adds the partials `partials[part..]`, one after the other, into the first
/// `part` elements, and returns those: each element gets `p_0 + p_1 + ...`
/// in chunk order, so the sum is the same, bit for bit, whatever the thread
/// count. Blocks of elements run on the threads: the weight gradient of the
/// course UNet's largest 3 x 3 convolution (between 64 and 128 channels)
/// sums 16 partials of 73,728 numbers (131,072 in Winograd's domain), which
/// on one thread left the other idle.
fn add_partials_in_order<T: GemmScalar>(partials: &mut [T], part: usize) -> &mut [T] {
    let (sum, rest) = partials.split_at_mut(part);
    if part == 0 {
        return sum;
    }
    let add_block = |(b, block): (usize, &mut [T])| {
        vectorized(
            #[inline(always)]
            || {
                for partial in rest.chunks_exact(part) {
                    for (s, &p) in block.iter_mut().zip(&partial[b * PARTIAL_SUM_BLOCK..]) {
                        *s = *s + p;
                    }
                }
            },
        );
    };
    if rest.len() >= PARALLEL_PARTIAL_SUM_MIN {
        sum.par_chunks_mut(PARTIAL_SUM_BLOCK).enumerate().for_each(add_block);
    } else {
        sum.chunks_mut(PARTIAL_SUM_BLOCK).enumerate().for_each(add_block);
    }
    sum
}

/// From this many numbers to add on, [`add_partials_in_order`] splits its
/// blocks between the threads (and the im2col weight gradient puts its sum
/// back in the weight's order on the threads).
const PARALLEL_PARTIAL_SUM_MIN: usize = 1 << 15;

/// Row-major (rows, cols) view of a slice that holds exactly that matrix
/// (the convolutions' and the fused attention's).
pub(crate) fn row_major<T>(data: &[T], rows: usize, cols: usize) -> MatRef<'_, T> {
    MatRef::new(data, rows, cols, cols, 1).expect("slice length checked against the geometry")
}

pub(crate) fn row_major_mut<T>(data: &mut [T], rows: usize, cols: usize) -> MatMut<'_, T> {
    MatMut::new(data, rows, cols, cols, 1).expect("slice length checked against the geometry")
}

/// Thread policy of the GEMM inside a per-image task: single-threaded when
/// the images alone fill the cores, else rayon inside each image too. The
/// GEMM is bit-identical either way.
fn per_image_threading(images: usize) -> Threading {
    if images >= rayon::current_num_threads() {
        Threading::Single
    } else {
        Threading::Rayon
    }
}

/// The output positions `o` (rows `oh` or columns `ow`) whose input
/// position `o*S + offset - P` falls inside `0..in_len`, for kernel offset
/// `offset` (`i` or `j`); the others read padding. A contiguous range.
fn inside(out_len: usize, in_len: usize, stride: usize, padding: usize, offset: usize) -> std::ops::Range<usize> {
    // o*S + offset >= P      <=>  o >= ceil((P - offset) / S)
    let lo = padding.saturating_sub(offset).div_ceil(stride);
    // o*S + offset - P < in  <=>  o < ceil((in + P - offset) / S)
    let hi = (in_len + padding).saturating_sub(offset).div_ceil(stride).min(out_len);
    lo.min(hi)..hi
}

/// col2im for one image, the adjoint of im2col: `dx` (C, H, W) is
/// overwritten with the sum of the `dcols` (R, L) entries gathered from
/// each position (`cols[(c*KH + i)*KW + j, oh*OW + ow]` was `x[c, oh*S + i -
/// P, ow*S + j - P]`, see the top of the file).
///
/// At stride 2 two other ways measured slower at the quick UNet's
/// downsampling convolutions (`benches/SPEED.md`, session 37): adding the
/// rows into the phase planes of the forward's [`pad_chw_phases`], where
/// they are contiguous runs, then reading the image out of them; and no
/// `dcols` at all, the grad input of each phase a stride-1 convolution of
/// `dout` by the taps that reach it (four small products an image).
fn col2im<T: GemmScalar>(g: &Conv2dGeometry, dcols: &[T], dx: &mut [T]) {
    let (oh_n, ow_n, s, p) = (g.out_h(), g.out_w(), g.stride, g.padding);
    dx.fill(T::ZERO);
    let mut rows = dcols.chunks_exact(oh_n * ow_n);
    for dx_c in dx.chunks_exact_mut(g.h * g.w) {
        for i in 0..g.kh {
            let oh_inside = inside(oh_n, g.h, s, p, i);
            for j in 0..g.kw {
                let ow_inside = inside(ow_n, g.w, s, p, j);
                let row = rows.next().expect("dcols has R rows");
                for oh in oh_inside.clone() {
                    let d = &row[oh * ow_n..][ow_inside.clone()];
                    let dx_row = &mut dx_c[(oh * s + i - p) * g.w..][..g.w];
                    if s == 1 {
                        let shift = ow_inside.start + j - p;
                        for (dx, &d) in dx_row[shift..shift + d.len()].iter_mut().zip(d) {
                            *dx = *dx + d;
                        }
                    } else {
                        for (ow, &d) in ow_inside.clone().zip(d) {
                            let dx = &mut dx_row[ow * s + j - p];
                            *dx = *dx + d;
                        }
                    }
                }
            }
        }
    }
}

/// Forward: `out[n] (K, L) = weight (K, R) @ cols[n] (R, L) + bias`.
///
/// `x` is (N, C, H, W), `weight` is (K, C, KH, KW), `bias` is (K), `out` is
/// (N, K, OH, OW) and is overwritten (NaN in it does not leak).
///
/// # Panics
/// If a slice length does not match the geometry.
pub fn conv2d_forward<T: GemmScalar>(g: &Conv2dGeometry, x: &[T], weight: &[T], bias: Option<&[T]>, out: &mut [T]) {
    conv2d_forward_fused(g, x, Fused::NONE, weight, bias, out);
}

/// The forward of [`conv2d_forward_fused`] off the Winograd path, image by
/// image, lengths checked.
fn forward_by_images<T: GemmScalar>(g: &Conv2dGeometry, x: &[T], weight: &[T], bias: Option<&[T]>, out: &mut [T]) {
    let (l, r, chw) = (g.l(), g.r(), g.c * g.h * g.w);
    if chw == 0 {
        // Empty images (no channels, or a side of 0 inside the padding): every
        // output is the bias alone, and there is no image to split the work by.
        for out_n in out.chunks_exact_mut((g.k * l).max(1)) {
            out_n.fill(T::ZERO);
            fill_bias(bias, out_n, l);
        }
        return;
    }
    let weight = row_major(weight, g.k, r);
    let threading = per_image_threading(g.n);
    // The implicit path packs the weight once for the whole batch.
    let packed_weight = (!g.is_pointwise()).then(|| PackedA::new(Kernel::best(), weight));
    // Read from the image itself where the GEMM reads B in place (see
    // `Im2colInPlace`), with the lane masks made once for the batch.
    let masks = g.in_place().filter(|_| packed_weight.as_ref().is_some_and(PackedA::reads_b_in_place)).map(|in_place| in_place.tap_masks());
    let images = x.par_chunks_exact(chw.max(1)).zip(out.par_chunks_exact_mut((g.k * l).max(1)));
    images.for_each(|(x_n, out_n)| match (&packed_weight, &masks) {
        (None, _) => {
            let beta = fill_bias(bias, out_n, l);
            let x_n = row_major(x_n, r, l);
            gemm_with(Kernel::best(), threading, T::ONE, weight, x_n, beta, row_major_mut(out_n, g.k, l));
        }
        (Some(packed_weight), Some(masks)) => conv_in_place(packed_weight, &Im2colInPlace::new(x_n, masks), bias, threading, out_n),
        (Some(packed_weight), None) => {
            let pg = g.padded();
            let padded_len = pg.phased_len();
            with_scratch(padded_len + Im2col::<T>::slack(&pg), |xpad: &mut [T]| {
                pad_chw_phases(x_n, (g.h, g.w), g.padding, &pg, xpad);
                xpad[padded_len..].fill(T::ZERO);
                conv_padded(packed_weight, xpad, pg, bias, threading, out_n);
            });
        }
    });
}

/// Maps plane `i` of a convolution's input (channel `i % C` of image `i /
/// C`) into a plane of the same size: `map(i, plane, mapped)` writes
/// `mapped`.
pub type PlaneMap<'a, T> = &'a (dyn Fn(usize, &[T], &mut [T]) + Sync);

/// Updates plane `i` of a convolution's output (channel `i % K` of image `i
/// / K`) in place: `update(i, plane)`.
pub type PlaneUpdate<'a, T> = &'a (dyn Fn(usize, &mut [T]) + Sync);

/// What [`conv2d_forward_fused`] does besides the convolution: a map of
/// the input's planes before, an update of the output's planes after (the
/// bias added).
#[derive(Clone, Copy)]
pub struct Fused<'a, T> {
    pub input: Option<PlaneMap<'a, T>>,
    pub output: Option<PlaneUpdate<'a, T>>,
}

impl<T> Fused<'_, T> {
    /// Nothing besides the convolution.
    pub const NONE: Self = Fused { input: None, output: None };
}

impl<T> std::fmt::Debug for Fused<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fused")
            .field("input", &self.input.map(|_| "a plane map"))
            .field("output", &self.output.map(|_| "a plane update"))
            .finish()
    }
}

/// [`conv2d_forward`] of the input's planes through `fused.input`, its
/// output's planes then updated by `fused.output`, without the mapped
/// input or the output before its update in memory where the Winograd path
/// runs (3x3, stride 1, padding 1, at least 32 channels in and out): each
/// image goes through the map on its way into the channels-last frame that
/// path copies it to anyway, and each output image is updated while it is
/// still in cache. This is how a group norm and its SiLU feed the
/// convolution after them, and the residual block's additions follow it,
/// when no gradient is needed (`Tensor::group_norm_silu_conv2d`), saving
/// a write and a read of the activations for each. Elsewhere the mapped
/// input is made whole first, and the update is a pass over the output
/// after. The result is the same, bit for bit, as mapping `x` into a
/// buffer, calling [`conv2d_forward`] on it and updating its output.
///
/// # Panics
/// As [`conv2d_forward`].
pub fn conv2d_forward_fused<T: GemmScalar>(
    g: &Conv2dGeometry,
    x: &[T],
    fused: Fused<'_, T>,
    weight: &[T],
    bias: Option<&[T]>,
    out: &mut [T],
) {
    let (l, hw) = (g.l(), g.h * g.w);
    g.assert_lengths(
        "conv2d_forward",
        &[("x", x.len(), g.n * g.c * hw), ("weight", weight.len(), g.k * g.r()), ("out", out.len(), g.n * g.k * l)],
    );
    if let Some(bias) = bias {
        g.assert_lengths("conv2d_forward", &[("bias", bias.len(), g.k)]);
    }
    if winograd::applies(g) && hw > 0 {
        let filters = winograd::Filters::new(g.k, g.c, weight, winograd::tile_side(g.h, g.w));
        winograd::forward(&filters, (g.h, g.w), x, fused, bias, out);
        return;
    }
    match fused.input {
        Some(map) => with_scratch(x.len(), |mapped: &mut [T]| {
            mapped
                .par_chunks_mut(hw.max(1))
                .zip(x.par_chunks(hw.max(1)))
                .enumerate()
                .for_each(|(i, (mapped, plane))| map(i, plane, mapped));
            forward_by_images(g, mapped, weight, bias, out);
        }),
        None => forward_by_images(g, x, weight, bias, out),
    }
    if let Some(update) = fused.output {
        out.par_chunks_mut(l.max(1)).enumerate().for_each(|(i, plane)| update(i, plane));
    }
}

/// Fills row k of `out` (K, L) with `bias[k]` and returns the GEMM's beta
/// that adds the product onto it: 1, or 0 (and nothing filled) without a bias.
fn fill_bias<T: GemmScalar>(bias: Option<&[T]>, out: &mut [T], l: usize) -> T {
    match bias {
        Some(bias) => {
            for (out_k, &b) in out.chunks_exact_mut(l).zip(bias) {
                out_k.fill(b);
            }
            T::ONE
        }
        None => T::ZERO,
    }
}

/// A convolution of one image by [`Im2colInPlace`]: `out (M, OH, W) =
/// weight (M, R) @ cols + bias`, the image read where it lies, the weight
/// packed once for the batch. The product is the output itself; the bias is
/// added to it in a pass after, while it is in cache, as [`conv_padded`] adds
/// it to each whole sum, so the bits are the same. (Rows filled with the
/// bias for the microkernel to add onto, `beta = 1`, were 2-5% slower at 16
/// channels 28 x 28, and would round differently over several `kc` blocks.)
fn conv_in_place<T: GemmScalar>(weight: &PackedA<T>, cols: &Im2colInPlace<T>, bias: Option<&[T]>, threading: Threading, out: &mut [T]) {
    let l = cols.l();
    gemm_prepacked(threading, T::ONE, weight, cols, T::ZERO, row_major_mut(out, weight.rows(), l));
    if let Some(bias) = bias {
        for (out_k, &b) in out.chunks_exact_mut(l.max(1)).zip(bias) {
            vectorized(
                #[inline(always)]
                || out_k.iter_mut().for_each(|o| *o = *o + b),
            );
        }
    }
}

/// A convolution of one padded image by implicit im2col: `out (M, OH, OW)
/// = weight (M, R) @ cols + bias`, `xpad` (C, HP, WP) plus slack at stride
/// 1, its phase planes (C, S, S, HQ, WQ) plus slack at stride S, the weight
/// packed once for the batch. The GEMM fills an (M, OH * WQ) scratch in the
/// padded coordinates of [`Im2col`] (WQ = WP at stride 1); copying it out
/// drops the junk columns `ow >= OW`.
fn conv_padded<T: GemmScalar>(
    weight: &PackedA<T>,
    xpad: &[T],
    pg: PaddedGeometry,
    bias: Option<&[T]>,
    threading: Threading,
    out: &mut [T],
) {
    let wq = pg.phase_sides().1;
    let (m, wide) = (weight.rows(), pg.out_h * wq);
    with_scratch(m * wide, |out_wide: &mut [T]| {
        let cols = Im2col { xpad, g: pg };
        let c = row_major_mut(out_wide, m, wide);
        gemm_prepacked(threading, T::ONE, weight, &cols, T::ZERO, c);
        let rows = out.chunks_exact_mut((pg.out_h * pg.out_w).max(1));
        for (k, (out_k, wide_k)) in rows.zip(out_wide.chunks_exact(wide)).enumerate() {
            let b = bias.map_or(T::ZERO, |bias| bias[k]);
            for (out_row, wide_row) in out_k.chunks_exact_mut(pg.out_w).zip(wide_k.chunks_exact(wq)) {
                for (o, &v) in out_row.iter_mut().zip(wide_row) {
                    *o = v + b;
                }
            }
        }
    });
}

/// Grad input: `dcols (R, L) = weight^T (R, K) @ grad_out[n] (K, L)`, then
/// `grad_x[n] = col2im(dcols)`.
///
/// `grad_out` is (N, K, OH, OW), `weight` is (K, C, KH, KW), `grad_x` is
/// (N, C, H, W) and is overwritten.
///
/// # Panics
/// If a slice length does not match the geometry.
pub fn conv2d_backward_input<T: GemmScalar>(g: &Conv2dGeometry, grad_out: &[T], weight: &[T], grad_x: &mut [T]) {
    let (l, r, chw) = (g.l(), g.r(), g.c * g.h * g.w);
    g.assert_lengths(
        "conv2d_backward_input",
        &[("grad_out", grad_out.len(), g.n * g.k * l), ("weight", weight.len(), g.k * r), ("grad_x", grad_x.len(), g.n * chw)],
    );
    if winograd::applies(g) {
        // The forward convolution of `dout` with the flipped kernel, also 3x3, stride 1, padding 1.
        let filters = winograd::Filters::flipped(g, weight, winograd::tile_side(g.out_h(), g.out_w()));
        winograd::forward(&filters, (g.out_h(), g.out_w()), grad_out, Fused::NONE, None, grad_x);
        return;
    }
    let threading = per_image_threading(g.n);
    if let Some(flipped) = g.flipped().filter(|_| !g.is_pointwise()) {
        // dx = conv(dout, weight flipped), see `Conv2dGeometry::flipped`
        // (a pointwise conv multiplies by weight^T below instead).
        let r_flipped = g.k * g.kh * g.kw;
        with_scratch(g.c * r_flipped, |weight_flipped: &mut [T]| {
            flip_weight(g, weight, weight_flipped);
            let weight_flipped = PackedA::new(Kernel::best(), row_major(weight_flipped, g.c, r_flipped));
            let (ph, pw) = (g.kh - 1 - g.padding, g.kw - 1 - g.padding);
            let images = grad_out.par_chunks_exact((g.k * l).max(1)).zip(grad_x.par_chunks_exact_mut(chw.max(1)));
            if let Some(ip) = g.flipped_in_place().filter(|_| weight_flipped.reads_b_in_place()) {
                let masks = ip.tap_masks();
                images
                    .for_each(|(dout_n, dx_n)| conv_in_place(&weight_flipped, &Im2colInPlace::new(dout_n, &masks), None, threading, dx_n));
                return;
            }
            images.for_each(|(dout_n, dx_n)| {
                let padded_len = g.k * flipped.hp * flipped.wp;
                with_scratch(padded_len + Im2col::<T>::slack(&flipped), |dout_pad: &mut [T]| {
                    pad_chw(dout_n, (g.out_h(), g.out_w()), (ph, pw), dout_pad);
                    dout_pad[padded_len..].fill(T::ZERO);
                    conv_padded(&weight_flipped, dout_pad, flipped, None, threading, dx_n);
                });
            });
        });
        return;
    }
    let weight_t = row_major(weight, g.k, r).t();
    let images = grad_out.par_chunks_exact((g.k * l).max(1)).zip(grad_x.par_chunks_exact_mut(chw.max(1)));
    images.for_each(|(dout_n, dx_n)| {
        let dout_n = row_major(dout_n, g.k, l);
        if g.is_pointwise() {
            gemm_with(Kernel::best(), threading, T::ONE, weight_t, dout_n, T::ZERO, row_major_mut(dx_n, r, l));
        } else {
            with_scratch(r * l, |dcols: &mut [T]| {
                gemm_with(Kernel::best(), threading, T::ONE, weight_t, dout_n, T::ZERO, row_major_mut(dcols, r, l));
                col2im(g, dcols, dx_n);
            });
        }
    });
}

/// Grad weight and bias: `grad_w (K, R) = sum_n grad_out[n] (K, L) @
/// cols[n]^T (L, R)` and `grad_b[k] = sum_{n, oh, ow} grad_out[n, k, oh, ow]`.
///
/// `x` is (N, C, H, W), `grad_out` is (N, K, OH, OW); `grad_w` (K, C, KH,
/// KW) and `grad_b` (K) are overwritten. The result does not depend on the
/// number of threads (see the top of the file).
///
/// # Panics
/// If a slice length does not match the geometry.
pub fn conv2d_backward_weight<T: GemmScalar>(g: &Conv2dGeometry, x: &[T], grad_out: &[T], grad_w: &mut [T], grad_b: Option<&mut [T]>) {
    let (l, r, chw) = (g.l(), g.r(), g.c * g.h * g.w);
    g.assert_lengths(
        "conv2d_backward_weight",
        &[("x", x.len(), g.n * chw), ("grad_out", grad_out.len(), g.n * g.k * l), ("grad_w", grad_w.len(), g.k * r)],
    );
    if let Some(grad_b) = grad_b {
        g.assert_lengths("conv2d_backward_weight", &[("grad_b", grad_b.len(), g.k)]);
        // Row k of every image's grad_out, summed image by image.
        // Compiled for the CPU's widest vectors (the same sums, lane for lane);
        // a plain loop, since an iterator's fold stayed out of line, outside them.
        grad_b.par_iter_mut().enumerate().for_each(|(k, db)| {
            *db = vectorized(
                #[inline(always)]
                || {
                    let mut sum = T::ZERO;
                    for dout_n in grad_out.chunks_exact(g.k * l) {
                        sum = sum + lane_sum(&dout_n[k * l..][..l]);
                    }
                    sum
                },
            );
        });
    }
    if g.n == 0 {
        grad_w.fill(T::ZERO);
        return;
    }
    if winograd::applies_to_weight_grad(g) {
        winograd::backward_weight(g, x, grad_out, grad_w);
        return;
    }

    // One (K, R) partial sum per chunk of images, in one scratch buffer;
    // its columns are in the order (i, j, c) of `Im2row`, put back in the
    // order (c, i, j) of grad_w at the end (the same order for a pointwise
    // conv).
    let chunks = g.n.div_ceil(WEIGHT_GRAD_CHUNK);
    let kr = g.k * r;
    let chunk_x = WEIGHT_GRAD_CHUNK * chw;
    let chunk_dout = WEIGHT_GRAD_CHUNK * g.k * l;
    let threading = per_image_threading(chunks);
    // A pointwise conv's im2row matrix is the image channels last, a stored
    // (L, C) matrix the unpacked kernel can read in place, if it stays in L2.
    // Either path sums L in the same `kc` blocks: the same bits whatever L2.
    let unpacked = g.is_pointwise() && l * r * std::mem::size_of::<T>() * UNPACKED_MAX_L2_SHARE <= CacheSizes::detect().l2;
    with_scratch(chunks * kr, |partials: &mut [T]| {
        partials.par_chunks_exact_mut(kr.max(1)).zip(x.par_chunks(chunk_x.max(1)).zip(grad_out.par_chunks(chunk_dout.max(1)))).for_each(
            |(partial, (x_chunk, dout_chunk))| {
                let images = x_chunk.chunks_exact(chw.max(1)).zip(dout_chunk.chunks_exact((g.k * l).max(1)));
                for (i, (x_n, dout_n)) in images.enumerate() {
                    if !g.is_pointwise() && r < THIN_MAX_R {
                        let pg = g.padded();
                        with_scratch(pg.hp * pg.wp * g.c + l, |scratch: &mut [T]| {
                            let (xhwc, tap_plane) = scratch.split_at_mut(pg.hp * pg.wp * g.c);
                            pad_hwc(x_n, (g.c, g.h, g.w), g.padding, (pg.hp, pg.wp), xhwc);
                            vectorized(
                                #[inline(always)]
                                || weight_grad_thin(g, xhwc, dout_n, tap_plane, i > 0, partial),
                            );
                        });
                        continue;
                    }
                    let beta = if i == 0 { T::ZERO } else { T::ONE };
                    let dout_n = row_major(dout_n, g.k, l);
                    let mut partial = row_major_mut(partial, g.k, r);
                    let pg = g.padded();
                    with_scratch(pg.hp * pg.wp * g.c, |xhwc: &mut [T]| {
                        pad_hwc(x_n, (g.c, g.h, g.w), g.padding, (pg.hp, pg.wp), xhwc);
                        if unpacked && gemm_unpacked(dout_n, row_major(xhwc, l, r), i > 0, partial.rb()) {
                            return;
                        }
                        let rows = Im2row { xhwc, g: pg };
                        gemm_packed_b(Kernel::best(), threading, T::ONE, dout_n, &rows, beta, partial);
                    });
                }
            },
        );
        let sum = add_partials_in_order(partials, kr);
        if g.is_pointwise() {
            grad_w.copy_from_slice(sum);
        } else {
            // sum[k, (i*KW + j)*C + c] -> grad_w[k, (c*KH + i)*KW + j], row
            // by row (on the threads for a large gradient).
            let taps = g.kh * g.kw;
            let reorder = |(dw_k, sum_k): (&mut [T], &[T])| {
                for (ij, sum_ij) in sum_k.chunks_exact(g.c).enumerate() {
                    for (c, &v) in sum_ij.iter().enumerate() {
                        dw_k[c * taps + ij] = v;
                    }
                }
            };
            if kr >= PARALLEL_PARTIAL_SUM_MIN {
                grad_w.par_chunks_exact_mut(r).zip(sum.par_chunks_exact(r)).for_each(reorder);
            } else {
                grad_w.chunks_exact_mut(r).zip(sum.chunks_exact(r)).for_each(reorder);
            }
        }
    });
}

/// The largest share of L2 a pointwise conv's image (channels last) takes
/// for the weight gradient to read it unpacked: a quarter, so that it stays
/// there while the tiles of each band of `dout` pass over it (the quick and
/// course UNets' largest, 96 channels at 28 x 28, is 301 KB). `gemm_with`
/// reads a stored B unpacked only up to an eighth of L2; through it, that
/// 96-channel gradient took 2.16-2.17 ms, where the direct call took
/// 1.69-1.85 (Intel Xeon with 2 MiB L2, `conv_pass 96 28 32 300 dw 1`; see
/// `benches/SPEED.md`, session 34), so the call is made here.
const UNPACKED_MAX_L2_SHARE: usize = 4;

/// Below this many columns (`R = C KH KW`) the weight gradient of an image is
/// not a GEMM but `K R` dot products over its output pixels. A 1-channel
/// image's im2row matrix has 9 columns: a 32-wide micro-panel of it would be
/// 72% zeros, packed for every image: the weight gradient of the quick UNet's
/// first convolution took 2.7-4.5 ms a step that way (3-5 GFLOP/s), 1.3 ms
/// as dot products.
const THIN_MAX_R: usize = 32;

/// The weight gradient of one image with few columns, in `Im2row`'s column
/// order: `partial (K, R)[k, (i KW + j) C + c] = sum_{oh, ow} dout (K, OH,
/// OW)[k, oh, ow] * xhwc[oh S + i, ow S + j, c]`, `xhwc` the padded image
/// channels last, (H + 2P, W + 2P, C). Column by column, the L input values
/// the column multiplies are gathered once into `tap_plane` (L) (a row of the
/// im2col matrix), then each of the K sums is one dot product in
/// [`SUM_LANES`] lanes. With `accumulate`, added to `partial`.
///
/// [`SUM_LANES`]: crate::kernels::elementwise::SUM_LANES
#[inline(always)]
fn weight_grad_thin<T: GemmScalar>(g: &Conv2dGeometry, xhwc: &[T], dout: &[T], tap_plane: &mut [T], accumulate: bool, partial: &mut [T]) {
    let (r, l, out_w, wp) = (g.r(), g.l(), g.out_w(), g.w + 2 * g.padding);
    for col in 0..r {
        let (tap, c) = (col / g.c, col % g.c);
        let (i, j) = (tap / g.kw, tap % g.kw);
        for (oh, plane_row) in tap_plane[..l].chunks_exact_mut(out_w).enumerate() {
            let start = ((oh * g.stride + i) * wp + j) * g.c + c;
            match g.stride * g.c {
                // One channel at stride 1 (a UNet's first convolution): a run.
                1 => plane_row.copy_from_slice(&xhwc[start..][..out_w]),
                step => {
                    for (v, &x) in plane_row.iter_mut().zip(xhwc[start..].iter().step_by(step)) {
                        *v = x;
                    }
                }
            }
        }
        for (k, dout_k) in dout.chunks_exact(l).enumerate() {
            let dot = lane_dot(dout_k, &tap_plane[..l]);
            let p = &mut partial[k * r + col];
            *p = if accumulate { *p + dot } else { dot };
        }
    }
}

/// `weight_flipped (C, K, KH, KW)[c, k, i, j] = weight (K, C, KH, KW)[k, c, KH-1-i, KW-1-j]`:
/// the kernel of the grad-input convolution (see `Conv2dGeometry::flipped`).
fn flip_weight<T: GemmScalar>(g: &Conv2dGeometry, weight: &[T], weight_flipped: &mut [T]) {
    let taps = g.kh * g.kw;
    for (k, weight_k) in weight.chunks_exact(g.c * taps).enumerate() {
        for (c, weight_kc) in weight_k.chunks_exact(taps).enumerate() {
            let flipped = &mut weight_flipped[(c * g.k + k) * taps..][..taps];
            for (dst, &w) in flipped.iter_mut().zip(weight_kc.iter().rev()) {
                *dst = w;
            }
        }
    }
}

/// Forward by the definition: seven nested loops, no im2col. The oracle for
/// [`conv2d_forward`]; same arguments.
pub fn conv2d_forward_naive<T: GemmScalar>(g: &Conv2dGeometry, x: &[T], weight: &[T], bias: Option<&[T]>, out: &mut [T]) {
    let (oh_n, ow_n) = (g.out_h(), g.out_w());
    for n in 0..g.n {
        for k in 0..g.k {
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let mut sum = bias.map_or(T::ZERO, |b| b[k]);
                    for c in 0..g.c {
                        for i in 0..g.kh {
                            for j in 0..g.kw {
                                if let Some(x_val) = input_at(g, x, n, c, oh * g.stride + i, ow * g.stride + j) {
                                    sum = sum + weight[((k * g.c + c) * g.kh + i) * g.kw + j] * x_val;
                                }
                            }
                        }
                    }
                    out[((n * g.k + k) * oh_n + oh) * ow_n + ow] = sum;
                }
            }
        }
    }
}

/// Grad input by the definition: every output gradient, times each weight,
/// added onto the input it touched. Oracle for [`conv2d_backward_input`].
pub fn conv2d_backward_input_naive<T: GemmScalar>(g: &Conv2dGeometry, grad_out: &[T], weight: &[T], grad_x: &mut [T]) {
    let (oh_n, ow_n) = (g.out_h(), g.out_w());
    grad_x.fill(T::ZERO);
    for n in 0..g.n {
        for k in 0..g.k {
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let d = grad_out[((n * g.k + k) * oh_n + oh) * ow_n + ow];
                    for c in 0..g.c {
                        for i in 0..g.kh {
                            for j in 0..g.kw {
                                if let Some(idx) = input_index(g, n, c, oh * g.stride + i, ow * g.stride + j) {
                                    grad_x[idx] = grad_x[idx] + d * weight[((k * g.c + c) * g.kh + i) * g.kw + j];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Grad weight and bias by the definition. Oracle for [`conv2d_backward_weight`].
pub fn conv2d_backward_weight_naive<T: GemmScalar>(
    g: &Conv2dGeometry,
    x: &[T],
    grad_out: &[T],
    grad_w: &mut [T],
    grad_b: Option<&mut [T]>,
) {
    let (oh_n, ow_n) = (g.out_h(), g.out_w());
    grad_w.fill(T::ZERO);
    let mut grad_b = grad_b;
    if let Some(db) = grad_b.as_deref_mut() {
        db.fill(T::ZERO);
    }
    for n in 0..g.n {
        for k in 0..g.k {
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let d = grad_out[((n * g.k + k) * oh_n + oh) * ow_n + ow];
                    if let Some(db) = grad_b.as_deref_mut() {
                        db[k] = db[k] + d;
                    }
                    for c in 0..g.c {
                        for i in 0..g.kh {
                            for j in 0..g.kw {
                                if let Some(x_val) = input_at(g, x, n, c, oh * g.stride + i, ow * g.stride + j) {
                                    let w = &mut grad_w[((k * g.c + c) * g.kh + i) * g.kw + j];
                                    *w = *w + d * x_val;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Index into x (N, C, H, W) of padded position `(ph, pw)` = `(ih + P, iw + P)`,
/// or `None` if it falls in the padding.
fn input_index(g: &Conv2dGeometry, n: usize, c: usize, ph: usize, pw: usize) -> Option<usize> {
    let ih = ph.checked_sub(g.padding).filter(|&ih| ih < g.h)?;
    let iw = pw.checked_sub(g.padding).filter(|&iw| iw < g.w)?;
    Some(((n * g.c + c) * g.h + ih) * g.w + iw)
}

fn input_at<T: Copy>(g: &Conv2dGeometry, x: &[T], n: usize, c: usize, ph: usize, pw: usize) -> Option<T> {
    input_index(g, n, c, ph, pw).map(|idx| x[idx])
}

#[cfg(test)]
mod tests;
