//! Winograd's minimal filtering F(2x2, 3x3) and F(4x4, 3x3): a 3x3
//! convolution (stride 1, padding 1) with 16 multiplications per 2 x 2
//! outputs instead of 36, or 36 per 4 x 4 outputs instead of 144. The
//! smaller one is explained first; the larger one is the same construction
//! with six points instead of four ("Four by four", below).
//!
//! In one dimension, two outputs of a 3-tap filter `g` over four inputs
//! `d0..d3` (`y0 = d0 g0 + d1 g1 + d2 g2`, `y1 = d1 g0 + d2 g1 + d3 g2`) take
//! four products instead of six:
//!
//! ```text
//! m0 = (d0 - d2) g0            m1 = (d1 + d2) (g0 + g1 + g2) / 2
//! m3 = (d1 - d3) g2            m2 = (d2 - d1) (g0 - g1 + g2) / 2
//! y0 = m0 + m1 + m2            y1 = m1 - m2 - m3
//! ```
//!
//! that is `y = A^T [(G g) . (B^T d)]` with `.` the element-wise product and
//!
//! ```text
//!        | 1  0 -1  0 |          | 1    0    0   |
//! B^T =  | 0  1  1  0 |     G =  | 1/2  1/2  1/2 |     A^T = | 1  1  1  0 |
//!        | 0 -1  1  0 |          | 1/2 -1/2  1/2 |           | 0  1 -1 -1 |
//!        | 0  1  0 -1 |          | 0    0    1   |
//! ```
//!
//! Nested in two dimensions, a 2 x 2 output tile of one filter over its 4 x 4
//! input tile `d` is `Y = A^T [(G g G^T) . (B^T d B)] A`. Over C channels
//! the products are summed before the (linear) output transform, so at each
//! of the 16 positions of the 4 x 4 transformed tile the sum over channels
//! is a matrix product:
//!
//! ```text
//! U[pos] (K, C) = (G w[k, c] G^T)[pos]              the filters, once per call
//! V[pos] (C, T) = (B^T d[c, t] B)[pos]              T tiles of the images
//! M[pos] (K, T) = U[pos] @ V[pos]                   16 GEMMs
//! out tile [k, t] = A^T M[., k, t] A  (+ bias)
//! ```
//!
//! Input tiles overlap by two pixels (a tile's 2 x 2 outputs need its 4 x 4
//! inputs); tiles past the image's edge read zeros and their outputs are
//! dropped. A direct 3x3 convolution spends 9 multiply-adds per output and
//! channel pair, this one 16 / 4 = 4 (7 x 7 images: 16 tiles cover 8 x 8,
//! 5.2): the 16 products are 2.25 (1.7) times less arithmetic.
//!
//! The backward passes are the adjoint of the same computation, so they are
//! exact in exact arithmetic too:
//!
//! - grad input is the forward convolution of `dout` with the flipped kernel
//!   (`Conv2dGeometry::flipped`), itself 3x3, stride 1, padding 1.
//! - grad weight: with `dM = A dY A^T` for each output tile (zero outside the
//!   image), `dU[pos] (K, C) = sum_tiles dM[pos] (K, T) @ V[pos]^T (T, C)`, 16
//!   GEMMs summed over the batch, and `dw[k, c] = G^T dU[., k, c] G`.
//!
//! # Layout
//!
//! Each step of a transform is the same arithmetic for every channel, so
//! the images are copied channels last (`(2 TH + 2, 2 TW + 2, C)`, zero
//! padded) and every step runs over the C channels of one tile at once, in
//! vectors (compiled for AVX-512 or AVX2 where the CPU has them, see
//! [`vectorized`]). So V and M are stored transposed, `(T, C)` and `(T, K)`
//! for each position, and the GEMMs are `M[pos]^T = V[pos]^T @ U[pos]^T`.
//! With AVX-512F nothing is packed: both are read where they lie
//! (`gemm/unpacked.rs`; packing `V[pos]^T` had cost 14% of the 14 x 14
//! passes, as much as the arithmetic it fed at 32 channels); elsewhere
//! `U[pos]^T` (C, K) is read in place ([`Stored`]) and `V[pos]^T` packed. A
//! first version kept V as (C, T) and ran the steps over runs of tiles (7 or
//! 14 a tile row); the short runs and the stride-2 gathers made it slower
//! than im2col everywhere.
//!
//! A tile's transform runs [`LANES`] channels at a time (the tail one at a
//! time), its 16 values held in registers from the row step to the column
//! step; through a buffer of the tile's channels (session 19's code), each
//! value made an extra store and two extra loads. Session 20 (Intel Xeon
//! model 167, batch 64, three alternations, medians): forward 32 -> 32 at
//! 28 x 28 2.53-2.57 -> 2.33-2.38 ms, 64 -> 64 at 14 x 14 1.87-1.91 ->
//! 1.79-1.82; the course UNet's forward 137.6-139.2 -> 134.2-135.2 ms, its
//! training step 0.450-0.455 -> 0.442-0.444 s. The output transform adds the
//! bias as it writes a pixel, the same sum as a pass over the image after.
//! The images and output gradients go channels last straight into their
//! zero-padded frames (`implicit::pad_hwc`), not through a buffer copied row
//! by row into a frame zeroed whole: forward 28 x 28 2.36-2.38 -> 2.26-2.32
//! ms, grad weight 2.77-2.82 -> 2.52-2.53 (14 x 14: 2.07-2.08 -> 1.93-1.97),
//! the course UNet's forward 135.9-137.5 -> 131.0-133.5 ms and training
//! step 0.444-0.450 -> 0.420-0.427 s (three alternations, same machine).
//! Tried and not kept: V, M and dM interleaved as `(T, 16, C)`, a tile's 16
//! positions side by side (the GEMMs reading rows 16 C apart): forward 28 x
//! 28 2.25-2.29 -> 2.31-2.33 ms, grad weight 14 x 14 1.92-1.94 -> 2.31-2.37.
//!
//! # Where it pays (Intel Xeon of sessions 10-13, batch 64, two threads)
//!
//! Forward, grad input and grad weight, alternated with the im2col passes
//! four times (ms, each pass's median of 40-60 calls):
//!
//! ```text
//! 64 -> 64 channels, 14 x 14     4.0-5.2 / 4.1-5.0 / 4.3-5.2   against  5.0-6.0 / 5.0-5.4 / 5.1-5.8
//! 128 -> 64, 14 x 14             9.0-9.6 / 8.4-9.5 / 9.3-10.7  against 10.4-14.3 / 11.2-14.2 / 10.5-14.0
//! 64 -> 64, 7 x 7 (fwd, dx)      1.8-2.0 / 1.8-1.9             against  2.0-2.2 / 2.0-2.1
//! 128 -> 64, 7 x 7 (fwd, dx)     3.4-3.9 / 3.1-3.3             against  3.3-4.7 / 3.7-3.9
//! ```
//!
//! With 32 channels (the 28 x 28 level) and for the weight gradient at 7 x
//! 7 it was slower then, so those kept im2col ([`MIN_CHANNELS`],
//! [`MIN_SIDE_WEIGHT_GRAD`]; 32 channels moved in session 19, below). Two
//! later steps, each alternated three times with the step before: the copies
//! to and from channels last as 16 x 16 block transposes in registers
//! (`kernels/transpose.rs`; element by element they were about 12% of the
//! passes), the 14 x 14 passes 5-10% faster; the
//! products unpacked, 14 x 14 64 -> 64 3.4-4.5 against 4.3-5.1 ms a pass,
//! 128 -> 64 7.0-8.0 against 7.6-9.0, 7 x 7 forward and grad input 1.3-1.6
//! against 1.5-2.1. All of it against im2col (the code of session 12),
//! three alternations, forward / grad input / grad weight:
//!
//! ```text
//! 64 -> 64, 14 x 14     2.9-3.5 / 3.0-3.1 / 3.7-3.9   against  4.6-5.9 / 4.6-5.8 / 4.8-5.6
//! 128 -> 64, 14 x 14    6.2-9.7 / 5.9-9.4 / 5.9-7.6   against  9.1-11.3 / 11.0-14.2 / 9.1-13.9
//! 64 -> 64, 7 x 7       1.25-1.43 / 1.27-1.45         against  1.79-2.21 / 2.09-2.20
//! 128 -> 64, 7 x 7      2.2-3.1 / 2.3-3.1             against  3.3-4.6 / 3.5-4.4
//! ```
//!
//! With both steps, 32 channels (28 x 28 x 32) came out even with im2col in
//! six alternations, so [`MIN_CHANNELS`] stayed at 64 then.
//!
//! Session 18 moved the filter transforms onto the threads, and at 32
//! channels the transforms now pay: session 19 (Intel Xeon model 167, batch
//! 64, two threads, `examples/conv_pass`, medians of 150 passes, three
//! alternations of im2col against Winograd, ms, forward / grad input / grad
//! weight):
//!
//! ```text
//! 32 -> 32, 28 x 28     3.26-3.44 / 3.19-3.48 / 3.40-3.51   against  3.02-3.20 / 2.99-3.12 / 3.46-3.51
//! 32 -> 32, 14 x 14     0.92-0.96 / 0.91-0.95 / 0.85-0.87   against  0.78-0.83 / 0.75-0.79 / 0.80-0.87
//! 32 -> 32, 7 x 7       0.35-0.36 / 0.36-0.39               against  0.25-0.26 / 0.245-0.253
//! ```
//!
//! so [`MIN_CHANNELS`] is 32: the course UNet's 28 x 28 level and the quick
//! preset's 14 x 14 and 7 x 7 levels (then; its 14 x 14 level has had 16
//! channels since session 38) run here too (its training step 0.149-0.159
//! -> 0.143-0.152 s, the course UNet's forward 178-183 -> 165-179 ms, three
//! alternations of `examples/unet_step` and `examples/unet_forward`). At 16
//! channels (the quick preset's 28 x 28 level) Winograd took twice the time.
//!
//! # Four by four
//!
//! F(4x4, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016) takes four outputs of a 3-tap filter from six inputs with
//! six products, `y = A^T [(G g) . (B^T d)]`, the polynomials evaluated at
//! 0, 1, -1, 2, -2 and infinity:
//!
//! ```text
//!        | 4  0 -5  0  1  0 |         |  1/4    0     0   |
//!        | 0 -4 -4  1  1  0 |         | -1/6  -1/6  -1/6  |        | 1  1  1  1  1  0 |
//! B^T =  | 0  4 -4 -1  1  0 |    G =  | -1/6   1/6  -1/6  |  A^T = | 0  1 -1  2 -2  0 |
//!        | 0 -2 -1  2  1  0 |         |  1/24  1/12  1/6  |        | 0  1  1  4  4  0 |
//!        | 0  2 -1 -2  1  0 |         |  1/24 -1/12  1/6  |        | 0  1 -1  8 -8  1 |
//!        | 0  4  0 -5  0  1 |         |  0     0     1    |
//! ```
//!
//! Nested, a 4 x 4 output tile comes from its 6 x 6 input tile through 36
//! GEMMs, one a position: 2.25 multiply-adds per output and channel pair
//! against F(2x2)'s 4 and the direct 9, and the input and output transforms
//! cost about what F(2x2)'s do per output. Its tiles cover a side in steps of
//! four, so a side of 14 takes four tiles (16 pixels, 256 transformed for
//! 196) where F(2x2) takes seven (exactly 14): the forward takes F(4x4) only
//! where both cover the same padded image (sides 4 j and 4 j + 3: 28 and 7
//! in the UNets), F(2x2) elsewhere ([`tile_side`]); the grad input, a
//! forward convolution, the same. The weight gradient keeps F(2x2): its
//! bound (below) grows with the tile. Session 30 (Intel Xeon model 167,
//! batch 64, `examples/conv_pass`, medians): forward 32 -> 32 at 28 x 28
//! 2.75-3.07 -> 2.13-2.39 ms (300 passes, four alternations); 64 -> 64 at 7
//! x 7 forward 0.78-0.83 -> 0.76-0.81 ms and grad input 0.79-0.87 ->
//! 0.75-0.76 (1,000 passes, three alternations; the fastest passes
//! 0.71-0.75 -> 0.63-0.65); at 14 x 14 F(4x4) took 2.22-2.45 ms against
//! F(2x2)'s 2.06-2.14 (the tiles past the edge, and products of 64 rows
//! instead of 98). Forward, grad input and grad weight together at 28 x 28
//! 9.80 -> 8.37 ms. The course UNet's forward 174-180 -> 162-168 ms and
//! training step 0.559-0.575 -> 0.540-0.547 s (`examples/unet_forward` and
//! `examples/unet_step`, two alternations, the three and four fastest). A
//! tile's rows and columns are returned by `#[inline(always)]` functions, so
//! the arrays are built in place: zeroing the 6 x 6 x 16 array first cost a
//! `memset` a tile (4% of the 28 x 28 forward), and closures in its place
//! were not inlined into the AVX-512 copy; 28 x 28 forward 2.20-2.42 ->
//! 2.06-2.17 ms (three alternations).
//!
//! # Rounding
//!
//! F(2x2)'s transforms only add, subtract and halve; F(4x4)'s also multiply
//! by 2, 4, 5 and 8 (exact but for the 5) and by 1/4, 1/6, 1/12 and 1/24,
//! and its products carry values up to about 20 times the inputs, so its
//! error is larger: on the conv tests' random data (`f32_matches_naive`) the
//! worst element of a geometry reaches 1.5-9% of the tolerance below with
//! F(4x4), 0.11-0.15% with F(2x2).
//! The forward and grad-input results meet the im2col passes' tolerance
//! against the f64 oracle; the
//! weight gradient's sums pair every output gradient of a tile with every
//! input value of it, so its error is bounded by the whole tile's products
//! instead of the weight's own (`winograd_weight_bound` in the conv tests).

use rayon::prelude::*;

use super::super::elementwise::vectorized;
use super::super::gemm::scratch::with_scratch;
use super::super::gemm::{gemm_packed_b, gemm_unpacked, DirectB, GemmScalar, Kernel, MatMut, MatRef, PackB, SEGMENT};
use super::super::transpose::transpose;
use super::implicit::{pad_hwc, pad_hwc_mapped};
use super::{add_partials_in_order, per_image_threading, row_major, row_major_mut, Conv2dGeometry, Fused, WEIGHT_GRAD_CHUNK};

/// F(4x4, 3x3), the forward's and grad input's: outputs and positions of
/// a tile a side.
const F4: usize = 4;
const F4_SIDE: usize = 6;

/// Positions of a transformed 6 x 6 tile, one GEMM each.
const POSITIONS_F4: usize = F4_SIDE * F4_SIDE;

/// F(2x2, 3x3), the weight gradient's, and the forward's where F(4x4)'s
/// larger tiles would reach further past the image ([`tile_side`]).
const F2: usize = 2;

/// Positions of a transformed 4 x 4 tile.
const POSITIONS_F2: usize = 16;

/// The output tile side of the forward (and grad input) of an H x W image:
/// [`F4`] where its tiles cover the same padded image as [`F2`]'s (a side
/// of 4 j or 4 j + 3: 28 and 7, not 14, whose four tiles of four would
/// transform 256 pixels for its 196).
pub(super) fn tile_side(h: usize, w: usize) -> usize {
    let same_cover = |side: usize| side.div_ceil(F4) * F4 == side.div_ceil(F2) * F2;
    if same_cover(h) && same_cover(w) {
        F4
    } else {
        F2
    }
}

/// Fewest input and output channels for which the transforms pay (see "Where
/// it pays"). The 16 GEMMs have a `k` of C (forward) or K (grad input); with 16
/// channels each micro-tile of C is loaded and stored for 16 multiply-adds a
/// column, and the passes took twice as long as im2col's.
pub(super) const MIN_CHANNELS: usize = 32;

/// Smallest image side for the weight gradient: at 7 x 7 it was slower than
/// im2col (16 tiles an image, so the GEMMs' `k` is 64 per four images).
pub(super) const MIN_SIDE_WEIGHT_GRAD: usize = 14;

/// Tiles a group of images brings to each GEMM, at least: 7 x 7 images have
/// 4 tiles each (16 with F(2x2)), and a product with so few rows is mostly
/// overhead.
const MIN_GROUP_TILES: usize = 64;

/// Fewest filters a task of the weight gradient's last transform takes (a
/// filter is 64 additions and halvings).
const FILTERS_PER_TASK: usize = 256;

/// Extra elements after a matrix the GEMM reads in place: the direct
/// microkernel reads up to two segments past a row's last column (see
/// `gemm/direct.rs`).
const SLACK: usize = 2 * SEGMENT;

/// True if this file computes the forward and grad-input passes of `g`:
/// 3x3, stride 1, padding 1, at least [`MIN_CHANNELS`] input and output
/// channels.
pub(super) fn applies(g: &Conv2dGeometry) -> bool {
    g.kh == 3 && g.kw == 3 && g.stride == 1 && g.padding == 1 && g.c >= MIN_CHANNELS && g.k >= MIN_CHANNELS
}

/// True if this file computes the weight gradient of `g`: [`applies`], and
/// sides of at least [`MIN_SIDE_WEIGHT_GRAD`].
pub(super) fn applies_to_weight_grad(g: &Conv2dGeometry) -> bool {
    applies(g) && g.h.min(g.w) >= MIN_SIDE_WEIGHT_GRAD
}

/// The m x m output tiles of an H x W image (H x W out, padding 1): m = 4
/// or 2 in the forward ([`tile_side`]), 2 in the weight gradient.
#[derive(Clone, Copy, Debug)]
struct Tiles {
    h: usize,
    w: usize,
    /// Tile rows and columns, `ceil(H / m)` and `ceil(W / m)`.
    th: usize,
    tw: usize,
    /// The side of an output tile.
    m: usize,
}

impl Tiles {
    fn new(h: usize, w: usize, m: usize) -> Tiles {
        Tiles { h, w, th: h.div_ceil(m), tw: w.div_ceil(m), m }
    }

    fn per_image(&self) -> usize {
        self.th * self.tw
    }

    /// Images per GEMM: enough for [`MIN_GROUP_TILES`] rows.
    fn group(&self) -> usize {
        MIN_GROUP_TILES.div_ceil(self.per_image().max(1))
    }

    /// The zero-padded image every tile's (m + 2) x (m + 2) inputs fall in:
    /// (m TH + 2, m TW + 2), rows and columns past the padding where m does
    /// not divide a side.
    fn padded(&self) -> (usize, usize) {
        (self.m * self.th + 2, self.m * self.tw + 2)
    }

    /// Pixels of [`Tiles::padded`].
    fn padded_pixels(&self) -> usize {
        let (rows, cols) = self.padded();
        rows * cols
    }
}

/// Channels a step of a transform holds at once: a vector register of f32
/// with AVX-512. A tile's 16 values stay in registers from its row step to
/// its column step (see "Layout").
const LANES: usize = 16;

/// `N` consecutive channels of one pixel or position.
type Lanes<T, const N: usize> = [T; N];

/// `src[..N]`.
#[inline(always)]
fn load<T: GemmScalar, const N: usize>(src: &[T]) -> Lanes<T, N> {
    let mut v = [T::ZERO; N];
    v.copy_from_slice(&src[..N]);
    v
}

/// `dst[..N] = v`.
#[inline(always)]
fn store<T: Copy, const N: usize>(dst: &mut [T], v: Lanes<T, N>) {
    dst[..N].copy_from_slice(&v);
}

/// `f(a[i], b[i])` lane by lane: one step of a transform.
#[inline(always)]
fn lanewise<T: Copy, const N: usize>(a: Lanes<T, N>, b: Lanes<T, N>, f: impl Fn(T, T) -> T) -> Lanes<T, N> {
    let mut out = a;
    for i in 0..N {
        out[i] = f(a[i], b[i]);
    }
    out
}

/// `0 - a[i]` lane by lane.
#[inline(always)]
fn negated<T: GemmScalar, const N: usize>(a: Lanes<T, N>) -> Lanes<T, N> {
    lanewise(a, a, |_, b| T::ZERO - b)
}

/// `f(a[i], b[i], c[i])` lane by lane.
#[inline(always)]
fn lanewise3<T: Copy, const N: usize>(a: Lanes<T, N>, b: Lanes<T, N>, c: Lanes<T, N>, f: impl Fn(T, T, T) -> T) -> Lanes<T, N> {
    let mut out = a;
    for i in 0..N {
        out[i] = f(a[i], b[i], c[i]);
    }
    out
}

/// `G g` of F(4x4, 3x3) for one column (or row) `g` of a filter: `g0 / 4`,
/// `-(g0 + g1 + g2) / 6`, `-(g0 - g1 + g2) / 6`, `(g0 + 2 g1 + 4 g2) / 24`,
/// `(g0 - 2 g1 + 4 g2) / 24`, `g2`.
#[inline(always)]
fn filter_f4<T: GemmScalar>(g0: T, g1: T, g2: T) -> [T; F4_SIDE] {
    let (two, four) = (T::cast(2.0), T::cast(4.0));
    let (sixth, twenty_fourth) = (T::cast(-1.0 / 6.0), T::cast(1.0 / 24.0));
    let (even, odd) = (g0 + g2 * four, g1 * two);
    [g0 * T::cast(0.25), (g0 + g1 + g2) * sixth, (g0 - g1 + g2) * sixth, (even + odd) * twenty_fourth, (even - odd) * twenty_fourth, g2]
}

/// `ut (36, C, K)`: `G w[k, c] G^T` of each 3 x 3 filter `filter(k, c)` (row
/// major), position `pos = 6 r + s` of the 6 x 6 result, stored as the GEMMs'
/// B (`U[pos]^T`).
///
/// Row `r` of the result fills positions `6 r .. 6 r + 6`, one contiguous
/// `(6, C, K)` slab of `ut`, so the six rows are six tasks on the threads;
/// within a slab the loop runs along K, so each of its six positions is
/// written in order. Every value is the same expression of the same nine
/// weights in any order of the loops, so the bits do not depend on it.
fn transform_weight_f4<T: GemmScalar>(k: usize, c: usize, filter: impl Fn(usize, usize) -> [T; 9] + Sync, ut: &mut [T]) {
    ut[..POSITIONS_F4 * c * k].par_chunks_exact_mut(F4_SIDE * c * k).enumerate().for_each(|(r, slab)| {
        for ci in 0..c {
            for ki in 0..k {
                let w = filter(ki, ci);
                // Row r of G w: the transform of each column of w.
                let gw: [T; 3] = std::array::from_fn(|j| filter_f4(w[j], w[3 + j], w[6 + j])[r]);
                // (G w) G^T: the same along the row.
                for (s, v) in filter_f4(gw[0], gw[1], gw[2]).into_iter().enumerate() {
                    slab[(s * c + ci) * k + ki] = v;
                }
            }
        }
    });
}

/// `ut (16, C, K)`: `G w[k, c] G^T` of each 3 x 3 filter `filter(k, c)` (row
/// major), position `pos = 4 r + s` of the 4 x 4 result, stored as the GEMMs'
/// B (`U[pos]^T`).
///
/// Row `r` of the result fills positions `4 r .. 4 r + 4`, one contiguous
/// `(4, C, K)` slab of `ut`, so the four rows are four tasks on the threads;
/// within a slab the loop runs along K, so each of its four positions is
/// written in order. Every value is the same expression of the same nine
/// weights in any order of the loops, so the bits do not depend on it.
fn transform_weight_f2<T: GemmScalar>(k: usize, c: usize, filter: impl Fn(usize, usize) -> [T; 9] + Sync, ut: &mut [T]) {
    ut[..POSITIONS_F2 * c * k].par_chunks_exact_mut(4 * c * k).enumerate().for_each(|(r, slab)| {
        for ci in 0..c {
            for ki in 0..k {
                let w = filter(ki, ci);
                // Row r of G w: g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2 or
                // g2 of each column of w.
                let [g0, g1, g2] = std::array::from_fn(|j| {
                    let (g0, g1, g2) = (w[j], w[3 + j], w[6 + j]);
                    match r {
                        0 => g0,
                        1 => (g0 + g1 + g2) * T::HALF,
                        2 => (g0 - g1 + g2) * T::HALF,
                        _ => g2,
                    }
                });
                // (G w) G^T: the same along the row.
                let row = [g0, (g0 + g1 + g2) * T::HALF, (g0 - g1 + g2) * T::HALF, g2];
                for (s, &v) in row.iter().enumerate() {
                    slab[(s * c + ci) * k + ki] = v;
                }
            }
        }
    });
}

/// The filters of a convolution, transformed: `ut (P, C, K)` plus slack, P the
/// positions of the tile side `side`.
pub(super) struct Filters<T> {
    ut: Vec<T>,
    c: usize,
    k: usize,
    side: usize,
}

impl<T: GemmScalar> Filters<T> {
    /// `weight` is (K, C, 3, 3), for images of `side` ([`tile_side`]).
    pub(super) fn new(k: usize, c: usize, weight: &[T], side: usize) -> Filters<T> {
        Filters::transformed(k, c, side, |ki, ci| std::array::from_fn(|tap| weight[(ki * c + ci) * 9 + tap]))
    }

    /// The filters of the grad-input convolution: `weight` (K, C, 3, 3)
    /// flipped to (C, K, 3, 3) (see `Conv2dGeometry::flipped`): filter `(c,
    /// k)` of the flipped convolution is filter `(k, c)` of `weight` with its
    /// nine taps in reverse order, read where it lies.
    pub(super) fn flipped(g: &Conv2dGeometry, weight: &[T], side: usize) -> Filters<T> {
        Filters::transformed(g.c, g.k, side, |ci, ki| std::array::from_fn(|tap| weight[(ki * g.c + ci) * 9 + 8 - tap]))
    }

    /// `K x C` filters, `filter(k, c)` each, transformed for the tile side
    /// `side`.
    fn transformed(k: usize, c: usize, side: usize, filter: impl Fn(usize, usize) -> [T; 9] + Sync) -> Filters<T> {
        let mut ut = vec![T::ZERO; positions(side) * c * k + SLACK];
        match side {
            F4 => transform_weight_f4(k, c, filter, &mut ut),
            _ => transform_weight_f2(k, c, filter, &mut ut),
        }
        Filters { ut, c, k, side }
    }

    /// `U[pos]^T` (C, K) as a GEMM's B.
    fn position(&self, pos: usize) -> Stored<'_, T> {
        Stored { data: &self.ut[pos * self.c * self.k..], rows: self.c, cols: self.k, ld: self.k }
    }
}

/// `B^T d` of F(4x4, 3x3) for six inputs `d0 .. d5` in a row (or column):
/// `4 d0 - 5 d2 + d4`, `(d4 - 4 d2) +- (d3 - 4 d1)`, `(d4 - d2) +- 2 (d3 -
/// d1)`, `4 d1 - 5 d3 + d5`.
#[inline(always)]
fn input_f4<T: GemmScalar>([d0, d1, d2, d3, d4, d5]: [T; F4_SIDE]) -> [T; F4_SIDE] {
    let (two, four, five) = (T::cast(2.0), T::cast(4.0), T::cast(5.0));
    let (a, b) = (d4 - d2 * four, d3 - d1 * four);
    let (c, d) = (d4 - d2, (d3 - d1) * two);
    [d0 * four - d2 * five + d4, a + b, a - b, c + d, c - d, d1 * four - d3 * five + d5]
}

/// `A^T m` of F(4x4, 3x3) for six positions `m0 .. m5` in a row (or column):
/// `m0 + (m1 + m2) + (m3 + m4)`, `(m1 - m2) + 2 (m3 - m4)`, `(m1 + m2) + 4
/// (m3 + m4)`, `(m1 - m2) + 8 (m3 - m4) + m5`.
#[inline(always)]
fn output_f4<T: GemmScalar>([m0, m1, m2, m3, m4, m5]: [T; F4_SIDE]) -> [T; F4] {
    let (a, b, c, d) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
    [m0 + a + c, b + d * T::cast(2.0), a + c * T::cast(4.0), b + d * T::cast(8.0) + m5]
}

/// The positions (GEMMs) of an output tile side, [`F4`] or [`F2`].
fn positions(side: usize) -> usize {
    if side == F4 {
        POSITIONS_F4
    } else {
        POSITIONS_F2
    }
}

/// `f` of each lane's six values: one step of an F(4x4) transform, `N`
/// channels at once.
#[inline(always)]
fn lanewise6<T: GemmScalar, const N: usize, const OUT: usize>(
    v: [Lanes<T, N>; F4_SIDE],
    f: impl Fn([T; F4_SIDE]) -> [T; OUT],
) -> [Lanes<T, N>; OUT] {
    let mut out = [[T::ZERO; N]; OUT];
    for i in 0..N {
        let y = f([v[0][i], v[1][i], v[2][i], v[3][i], v[4][i], v[5][i]]);
        for (o, y) in out.iter_mut().zip(y) {
            o[i] = y;
        }
    }
    out
}

/// `d B` of one row of a 6 x 6 input tile, its six inputs at `src[at(s) ..]`.
#[inline(always)]
fn input_row_f4<T: GemmScalar, const N: usize>(src: &[T], at: impl Fn(usize) -> usize) -> [Lanes<T, N>; F4_SIDE] {
    let d = |s: usize| load::<T, N>(&src[at(s)..]);
    lanewise6([d(0), d(1), d(2), d(3), d(4), d(5)], input_f4)
}

/// `A^T m` of one column of six positions at `src[at(r) ..]`.
#[inline(always)]
fn output_column_f4<T: GemmScalar, const N: usize>(src: &[T], at: impl Fn(usize) -> usize) -> [Lanes<T, N>; F4] {
    let m = |r: usize| load::<T, N>(&src[at(r)..]);
    lanewise6([m(0), m(1), m(2), m(3), m(4), m(5)], output_f4)
}

/// Row `a` of `(A^T M) A` from the six columns `q` of `A^T M`.
#[inline(always)]
fn output_row_f4<T: GemmScalar, const N: usize>(q: &[[Lanes<T, N>; F4]; F4_SIDE], a: usize) -> [Lanes<T, N>; F4] {
    lanewise6([q[0][a], q[1][a], q[2][a], q[3][a], q[4][a], q[5][a]], output_f4)
}

/// `B^T d B` of one 6 x 6 tile, channels `c0 .. c0 + N`: `d[r][s]` at
/// `xt[pixel(r, s) + c0 ..]`, position `pos` to `vt[position(pos) + c0 ..]`.
#[inline(always)]
fn input_tile_f4<T: GemmScalar, const N: usize>(
    xt: &[T],
    pixel: impl Fn(usize, usize) -> usize,
    vt: &mut [T],
    position: impl Fn(usize) -> usize,
    c0: usize,
) {
    // d B: the row transform of each tile row r (built in place: an array
    // zeroed first and then filled cost a `memset` a tile).
    let row = |r: usize| input_row_f4::<T, N>(xt, |s| pixel(r, s) + c0);
    let h = [row(0), row(1), row(2), row(3), row(4), row(5)];
    // B^T (d B): the column transform, into the 36 positions.
    for s in 0..F4_SIDE {
        let column = lanewise6([h[0][s], h[1][s], h[2][s], h[3][s], h[4][s], h[5][s]], input_f4);
        for (r, v) in column.into_iter().enumerate() {
            store(&mut vt[position(F4_SIDE * r + s) + c0..], v);
        }
    }
}

/// F(4x4)'s `A^T M A + bias` of one tile, its 36 positions to 4 x 4 outputs,
/// channels `c0 .. c0 + N`, with the arguments of [`output_tile`].
#[inline(always)]
fn output_tile_f4<T: GemmScalar, const N: usize>(
    mt: &[T],
    position: impl Fn(usize) -> usize,
    bias: Option<&[T]>,
    yt: &mut [T],
    pixel: impl Fn(usize, usize) -> Option<usize>,
    c0: usize,
) {
    // A^T M: q[s][a] from column s of the six rows (built in place, as in
    // `input_tile_f4`).
    let column = |s: usize| output_column_f4::<T, N>(mt, |r| position(F4_SIDE * r + s) + c0);
    let q = [column(0), column(1), column(2), column(3), column(4), column(5)];
    let bias = bias.map(|bias| load::<T, N>(&bias[c0..]));
    // (A^T M) A, plus the bias.
    for a in 0..F4 {
        let y = output_row_f4(&q, a);
        for (b, y) in y.into_iter().enumerate() {
            if let Some(offset) = pixel(a, b) {
                store(&mut yt[offset + c0..], bias.map_or(y, |bias| lanewise(y, bias, |y, b| y + b)));
            }
        }
    }
}

/// `vt (P, T, C)` rows `first ..`: `B^T d B` of each input tile of one
/// padded channels-last image `xt`, tile `ty TW + tx` in row `first + ty TW +
/// tx` of each position's (T, C) matrix, `t_all` rows a position; P is 16 or
/// 36 as the tiles are `M` = 2 or 4 outputs a side (`tiles.m`; a constant, so
/// that each copy calls its own tile transform with no branch in the loop).
#[inline(always)]
fn transform_input<T: GemmScalar, const M: usize>(xt: &[T], c: usize, tiles: Tiles, first: usize, t_all: usize, vt: &mut [T]) {
    debug_assert_eq!(tiles.m, M);
    let wp = M * tiles.tw + 2;
    let full = c / LANES * LANES;
    for ty in 0..tiles.th {
        for tx in 0..tiles.tw {
            let t = first + ty * tiles.tw + tx;
            let pixel = |r: usize, s: usize| ((M * ty + r) * wp + M * tx + s) * c;
            let position = |pos: usize| (pos * t_all + t) * c;
            for c0 in (0..full).step_by(LANES) {
                match M {
                    F4 => input_tile_f4::<T, LANES>(xt, pixel, vt, position, c0),
                    _ => input_tile::<T, LANES>(xt, pixel, vt, position, c0),
                }
            }
            for c0 in full..c {
                match M {
                    F4 => input_tile_f4::<T, 1>(xt, pixel, vt, position, c0),
                    _ => input_tile::<T, 1>(xt, pixel, vt, position, c0),
                }
            }
        }
    }
}

/// `B^T d B` of one tile, channels `c0 .. c0 + N`: `d[r][s]` at `xt[pixel(r,
/// s) + c0 ..]`, position `pos` to `vt[position(pos) + c0 ..]`.
#[inline(always)]
fn input_tile<T: GemmScalar, const N: usize>(
    xt: &[T],
    pixel: impl Fn(usize, usize) -> usize,
    vt: &mut [T],
    position: impl Fn(usize) -> usize,
    c0: usize,
) {
    // d B: the row transform of each tile row r.
    let mut h = [[[T::ZERO; N]; 4]; 4];
    for (r, h) in h.iter_mut().enumerate() {
        let d = |s: usize| load::<T, N>(&xt[pixel(r, s) + c0..]);
        let (d0, d1, d2, d3) = (d(0), d(1), d(2), d(3));
        *h = [
            lanewise(d0, d2, |a, b| a - b),
            lanewise(d1, d2, |a, b| a + b),
            lanewise(d2, d1, |a, b| a - b),
            lanewise(d1, d3, |a, b| a - b),
        ];
    }
    // B^T (d B): the column transform, into the 16 positions.
    for s in 0..4 {
        let (h0, h1, h2, h3) = (h[0][s], h[1][s], h[2][s], h[3][s]);
        store(&mut vt[position(s) + c0..], lanewise(h0, h2, |a, b| a - b));
        store(&mut vt[position(4 + s) + c0..], lanewise(h1, h2, |a, b| a + b));
        store(&mut vt[position(8 + s) + c0..], lanewise(h2, h1, |a, b| a - b));
        store(&mut vt[position(12 + s) + c0..], lanewise(h1, h3, |a, b| a - b));
    }
}

/// `out` (K, H, W) of one image from `mt (P, T, K)` rows `first ..`: `A^T M A`
/// of each tile plus `bias[k]`, the outputs past the image's edge dropped; P
/// is 16 or 36 as the tiles are `M` = 2 or 4 outputs a side (`tiles.m`, as in
/// [`transform_input`]). `yt` holds H W K (the image channels last).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn transform_output<T: GemmScalar, const M: usize>(
    mt: &[T],
    k: usize,
    tiles: Tiles,
    first: usize,
    t_all: usize,
    bias: Option<&[T]>,
    out: &mut [T],
    yt: &mut [T],
) {
    let Tiles { h, w, th, tw, .. } = tiles;
    debug_assert_eq!(tiles.m, M);
    let full = k / LANES * LANES;
    for ty in 0..th {
        for tx in 0..tw {
            let t = first + ty * tw + tx;
            let position = |pos: usize| (pos * t_all + t) * k;
            // Pixel (M ty + a, M tx + b), if inside the image.
            let pixel = |a: usize, b: usize| (M * ty + a < h && M * tx + b < w).then(|| ((M * ty + a) * w + M * tx + b) * k);
            for c0 in (0..full).step_by(LANES) {
                match M {
                    F4 => output_tile_f4::<T, LANES>(mt, position, bias, yt, pixel, c0),
                    _ => output_tile::<T, LANES>(mt, position, bias, yt, pixel, c0),
                }
            }
            for c0 in full..k {
                match M {
                    F4 => output_tile_f4::<T, 1>(mt, position, bias, yt, pixel, c0),
                    _ => output_tile::<T, 1>(mt, position, bias, yt, pixel, c0),
                }
            }
        }
    }
    // Channels last to (K, H, W).
    transpose(yt, (h * w, k), k, out, h * w);
}

/// `A^T M A + bias` of one tile, channels `c0 .. c0 + N`: position `pos` at
/// `mt[position(pos) + c0 ..]`, output `(a, b)` to `yt[pixel(a, b) + c0 ..]`
/// where `pixel` gives an offset (inside the image).
#[inline(always)]
fn output_tile<T: GemmScalar, const N: usize>(
    mt: &[T],
    position: impl Fn(usize) -> usize,
    bias: Option<&[T]>,
    yt: &mut [T],
    pixel: impl Fn(usize, usize) -> Option<usize>,
    c0: usize,
) {
    let m = |pos: usize| load::<T, N>(&mt[position(pos) + c0..]);
    // A^T M: q[a][s] from column s of the four rows.
    let mut q = [[[T::ZERO; N]; 4]; 2];
    let [q0, q1] = &mut q;
    for (s, (q0, q1)) in q0.iter_mut().zip(q1).enumerate() {
        let (m0, m1, m2, m3) = (m(s), m(4 + s), m(8 + s), m(12 + s));
        *q0 = lanewise3(m0, m1, m2, |a, b, c| a + b + c);
        *q1 = lanewise3(m1, m2, m3, |a, b, c| a - b - c);
    }
    let bias = bias.map(|bias| load::<T, N>(&bias[c0..]));
    // (A^T M) A, plus the bias.
    for (a, q) in q.iter().enumerate() {
        let y = [lanewise3(q[0], q[1], q[2], |a, b, c| a + b + c), lanewise3(q[1], q[2], q[3], |a, b, c| a - b - c)];
        for (b, y) in y.into_iter().enumerate() {
            if let Some(offset) = pixel(a, b) {
                store(&mut yt[offset + c0..], bias.map_or(y, |bias| lanewise(y, bias, |y, b| y + b)));
            }
        }
    }
}

/// `dmt (16, T, K)` rows `first ..`: `A dY A^T` of each output tile of one
/// image's `dout` (K, H, W), zero for the outputs past the image's edge.
/// `dt` holds 2 TH 2 TW K (the gradients channels last).
#[inline(always)]
fn transform_output_grad<T: GemmScalar>(dout: &[T], k: usize, tiles: Tiles, first: usize, t_all: usize, dmt: &mut [T], dt: &mut [T]) {
    let Tiles { h, w, th, tw, .. } = tiles;
    let wt = 2 * tw;
    pad_hwc(dout, (k, h, w), 0, (2 * th, wt), dt);
    let full = k / LANES * LANES;
    for ty in 0..th {
        for tx in 0..tw {
            let t = first + ty * tw + tx;
            let pixel = |a: usize, b: usize| ((2 * ty + a) * wt + 2 * tx + b) * k;
            let position = |pos: usize| (pos * t_all + t) * k;
            for c0 in (0..full).step_by(LANES) {
                output_grad_tile::<T, LANES>(dt, pixel, dmt, position, c0);
            }
            for c0 in full..k {
                output_grad_tile::<T, 1>(dt, pixel, dmt, position, c0);
            }
        }
    }
}

/// `A dY A^T` of one tile, channels `c0 .. c0 + N`: `dy[a][b]` at
/// `dt[pixel(a, b) + c0 ..]`, position `pos` to `dmt[position(pos) + c0 ..]`.
#[inline(always)]
fn output_grad_tile<T: GemmScalar, const N: usize>(
    dt: &[T],
    pixel: impl Fn(usize, usize) -> usize,
    dmt: &mut [T],
    position: impl Fn(usize) -> usize,
    c0: usize,
) {
    // A dY: e[r][b] = dy0, dy0 + dy1, dy0 - dy1, -dy1 (rows a).
    let e: [[Lanes<T, N>; 2]; 4] = {
        let dy = |a: usize, b: usize| load::<T, N>(&dt[pixel(a, b) + c0..]);
        let [(d00, d10), (d01, d11)] = [(dy(0, 0), dy(1, 0)), (dy(0, 1), dy(1, 1))];
        [
            [d00, d01],
            [lanewise(d00, d10, |a, b| a + b), lanewise(d01, d11, |a, b| a + b)],
            [lanewise(d00, d10, |a, b| a - b), lanewise(d01, d11, |a, b| a - b)],
            [negated(d10), negated(d11)],
        ]
    };
    // (A dY) A^T: dm[r][s] = e0, e0 + e1, e0 - e1, -e1 (columns b).
    for (r, [e0, e1]) in e.into_iter().enumerate() {
        store(&mut dmt[position(4 * r) + c0..], e0);
        store(&mut dmt[position(4 * r + 1) + c0..], lanewise(e0, e1, |a, b| a + b));
        store(&mut dmt[position(4 * r + 2) + c0..], lanewise(e0, e1, |a, b| a - b));
        store(&mut dmt[position(4 * r + 3) + c0..], negated(e1));
    }
}

/// A stored row-major (rows, cols) matrix with row stride `ld`, as a GEMM's B
/// ([`PackB`]), readable in place ([`DirectB`]): `data` reaches [`SLACK`]
/// past the last row.
struct Stored<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    ld: usize,
}

impl<T: GemmScalar> PackB<T> for Stored<'_, T> {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn pack_b(&self, pc: usize, kc: usize, jc: usize, nc: usize, nr: usize, dst: &mut [T]) {
        for (panel, dst) in dst[..nc.div_ceil(nr) * kc * nr].chunks_exact_mut(kc * nr).enumerate() {
            let first = jc + panel * nr;
            let width = nr.min(jc + nc - first);
            for (p, dst_row) in dst.chunks_exact_mut(nr).enumerate() {
                dst_row[..width].copy_from_slice(&self.data[(pc + p) * self.ld + first..][..width]);
                dst_row[width..].fill(T::ZERO);
            }
        }
    }

    fn direct(&self) -> Option<&dyn DirectB<T>> {
        Some(self)
    }
}

impl<T: GemmScalar> DirectB<T> for Stored<'_, T> {
    fn base(&self) -> &[T] {
        self.data
    }

    fn row_offsets(&self, pc: usize, offsets: &mut [usize]) {
        for (p, offset) in offsets.iter_mut().enumerate() {
            *offset = (pc + p) * self.ld;
        }
    }

    fn segment_offset(&self, col: usize) -> usize {
        col
    }
}

/// The forward convolution of `x` (N, C, H, W), each plane through
/// `fused.input` if given, by `filters` into `out` (N, K, H, W),
/// overwritten, each plane then updated by `fused.output` if given. Per
/// group of images: `V[pos]^T (T, C)`, then `M[pos]^T (T, K) = V[pos]^T @
/// U[pos]^T`, then the outputs.
pub(super) fn forward<T: GemmScalar>(
    filters: &Filters<T>,
    (h, w): (usize, usize),
    x: &[T],
    fused: Fused<'_, T>,
    bias: Option<&[T]>,
    out: &mut [T],
) {
    let (c, k) = (filters.c, filters.k);
    let tiles = Tiles::new(h, w, filters.side);
    let positions = positions(filters.side);
    let (chw, khw) = (c * h * w, k * h * w);
    let group = tiles.group();
    let threading = per_image_threading((x.len() / chw).div_ceil(group));
    x.par_chunks(group * chw).zip(out.par_chunks_mut(group * khw)).enumerate().for_each(|(g, (x_g, out_g))| {
        let images = x_g.len() / chw;
        let t_all = images * tiles.per_image();
        let (v_len, m_len) = (positions * t_all * c, positions * t_all * k);
        // `xt` holds an image padded channels last, then its output channels last.
        let xt_len = tiles.padded_pixels() * c.max(k);
        with_scratch(v_len + m_len + xt_len, |scratch: &mut [T]| {
            let (vt, rest) = scratch.split_at_mut(v_len);
            let (mt, xt) = rest.split_at_mut(m_len);
            vectorized(
                #[inline(always)]
                || {
                    for (image, x_n) in x_g.chunks_exact(chw).enumerate() {
                        let frame = &mut xt[..tiles.padded_pixels() * c];
                        match fused.input {
                            // Plane `channel` of image `g * group + image` of the batch.
                            Some(map) => pad_hwc_mapped(x_n, (c, h, w), 1, tiles.padded(), frame, |channel, plane, mapped| {
                                map((g * group + image) * c + channel, plane, mapped);
                            }),
                            None => pad_hwc(x_n, (c, h, w), 1, tiles.padded(), frame),
                        }
                        let first = image * tiles.per_image();
                        match tiles.m {
                            F4 => transform_input::<T, F4>(xt, c, tiles, first, t_all, vt),
                            _ => transform_input::<T, F2>(xt, c, tiles, first, t_all, vt),
                        }
                    }
                },
            );
            for (pos, mt_pos) in mt.chunks_exact_mut(t_all * k).enumerate() {
                let vt_pos = MatRef::new(&vt[pos * t_all * c..][..t_all * c], t_all, c, c, 1).expect("V fits its scratch");
                let ut_pos = row_major(&filters.ut[pos * c * k..][..c * k], c, k);
                // Nothing packed where the CPU allows (see `gemm/unpacked.rs`).
                if !gemm_unpacked(vt_pos, ut_pos, false, row_major_mut(mt_pos, t_all, k)) {
                    gemm_packed_b(
                        Kernel::best(),
                        threading,
                        T::ONE,
                        vt_pos,
                        &filters.position(pos),
                        T::ZERO,
                        row_major_mut(mt_pos, t_all, k),
                    );
                }
            }
            vectorized(
                #[inline(always)]
                || {
                    for (image, out_n) in out_g.chunks_exact_mut(khw).enumerate() {
                        let first = image * tiles.per_image();
                        match tiles.m {
                            F4 => transform_output::<T, F4>(mt, k, tiles, first, t_all, bias, out_n, xt),
                            _ => transform_output::<T, F2>(mt, k, tiles, first, t_all, bias, out_n, xt),
                        }
                        if let Some(update) = fused.output {
                            for (channel, plane) in out_n.chunks_exact_mut(h * w).enumerate() {
                                update((g * group + image) * k + channel, plane);
                            }
                        }
                    }
                },
            );
        });
    });
}

/// Grad weight (not bias) of a convolution `applies` accepts: `grad_w` (K,
/// C, 3, 3) overwritten. Chunks of `WEIGHT_GRAD_CHUNK` images sum in order
/// into their own partial (as the im2col path does), so the result does not
/// depend on the number of threads.
pub(super) fn backward_weight<T: GemmScalar>(g: &Conv2dGeometry, x: &[T], grad_out: &[T], grad_w: &mut [T]) {
    let (c, k, h, w) = (g.c, g.k, g.h, g.w);
    let (chw, khw) = (c * h * w, k * h * w);
    let tiles = Tiles::new(h, w, F2);
    let group = tiles.group().min(WEIGHT_GRAD_CHUNK);
    let chunks = g.n.div_ceil(WEIGHT_GRAD_CHUNK);
    let threading = per_image_threading(chunks);
    let part = POSITIONS_F2 * k * c;
    with_scratch(chunks * part, |partials: &mut [T]| {
        let inputs = x.par_chunks(WEIGHT_GRAD_CHUNK * chw).zip(grad_out.par_chunks(WEIGHT_GRAD_CHUNK * khw));
        partials.par_chunks_exact_mut(part).zip(inputs).for_each(|(partial, (x_chunk, dout_chunk))| {
            let groups = x_chunk.chunks(group * chw).zip(dout_chunk.chunks(group * khw));
            for (i, (x_g, dout_g)) in groups.enumerate() {
                let t_all = x_g.len() / chw * tiles.per_image();
                let (v_len, dm_len) = (POSITIONS_F2 * t_all * c + SLACK, POSITIONS_F2 * t_all * k);
                // `xt` holds an image padded channels last, then its output
                // gradients channels last.
                let xt_len = tiles.padded_pixels() * c.max(k);
                with_scratch(v_len + dm_len + xt_len, |scratch: &mut [T]| {
                    let (vt, rest) = scratch.split_at_mut(v_len);
                    let (dmt, xt) = rest.split_at_mut(dm_len);
                    vectorized(
                        #[inline(always)]
                        || {
                            for (image, (x_n, dout_n)) in x_g.chunks_exact(chw).zip(dout_g.chunks_exact(khw)).enumerate() {
                                let first = image * tiles.per_image();
                                pad_hwc(x_n, (c, h, w), 1, tiles.padded(), &mut xt[..tiles.padded_pixels() * c]);
                                transform_input::<T, F2>(xt, c, tiles, first, t_all, vt);
                                transform_output_grad(dout_n, k, tiles, first, t_all, dmt, &mut xt[..4 * tiles.per_image() * k]);
                            }
                        },
                    );
                    let beta = if i == 0 { T::ZERO } else { T::ONE };
                    for (pos, du) in partial.chunks_exact_mut(k * c).enumerate() {
                        // dU[pos] (K, C) += dM[pos] (K, T) @ V[pos]^T (T, C)
                        let dm_pos = MatRef::new(&dmt[pos * t_all * k..][..t_all * k], k, t_all, 1, k).expect("dM fits its scratch");
                        let vt_pos = Stored { data: &vt[pos * t_all * c..], rows: t_all, cols: c, ld: c };
                        let vt_view = row_major(&vt[pos * t_all * c..][..t_all * c], t_all, c);
                        if gemm_unpacked(dm_pos, vt_view, i > 0, MatMut::new(du, k, c, c, 1).expect("a (K, C) partial")) {
                            continue;
                        }
                        gemm_packed_b(
                            Kernel::best(),
                            threading,
                            T::ONE,
                            dm_pos,
                            &vt_pos,
                            beta,
                            MatMut::new(du, k, c, c, 1).expect("a (K, C) partial"),
                        );
                    }
                });
            }
        });
        let sum = add_partials_in_order(partials, part);
        // dw[k, c] = G^T dU[., k, c] G, filter by filter on the threads.
        grad_w.par_chunks_exact_mut(9).with_min_len(FILTERS_PER_TASK).enumerate().for_each(|(kc, dw)| {
            let du = |r: usize, s: usize| sum[(r * 4 + s) * k * c + kc];
            // G^T dU, column s: du0 + (du1 + du2) / 2, (du1 - du2) / 2, (du1 + du2) / 2 + du3.
            let f: [[T; 3]; 4] = std::array::from_fn(|s| {
                let (d0, d1, d2, d3) = (du(0, s), du(1, s), du(2, s), du(3, s));
                [d0 + (d1 + d2) * T::HALF, (d1 - d2) * T::HALF, (d1 + d2) * T::HALF + d3]
            });
            // (G^T dU) G: the same along each row i.
            for (i, dw_row) in dw.chunks_exact_mut(3).enumerate() {
                let (f0, f1, f2, f3) = (f[0][i], f[1][i], f[2][i], f[3][i]);
                dw_row[0] = f0 + (f1 + f2) * T::HALF;
                dw_row[1] = (f1 - f2) * T::HALF;
                dw_row[2] = (f1 + f2) * T::HALF + f3;
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::super::flip_weight;
    use super::*;

    /// `G w G^T` of every filter, one after another: the loop the threaded
    /// transforms replaced, with the same expressions in the same order, for
    /// a tile side of 2 (the 4 x 4 `G`) or 4 (the 6 x 6 one).
    fn serial_transform(k: usize, c: usize, weight: &[f32], side: usize) -> Vec<f32> {
        let half = 0.5;
        let g_f2 = |g0: f32, g1: f32, g2: f32| vec![g0, (g0 + g1 + g2) * half, (g0 - g1 + g2) * half, g2];
        let g_f4 = |g0: f32, g1: f32, g2: f32| {
            let (even, odd) = (g0 + g2 * 4.0, g1 * 2.0);
            let (sixth, twenty_fourth) = ((-1.0 / 6.0f64) as f32, (1.0 / 24.0f64) as f32);
            vec![g0 * 0.25, (g0 + g1 + g2) * sixth, (g0 - g1 + g2) * sixth, (even + odd) * twenty_fourth, (even - odd) * twenty_fourth, g2]
        };
        let g = |g0, g1, g2| if side == F4 { g_f4(g0, g1, g2) } else { g_f2(g0, g1, g2) };
        let n = side + 2;
        let mut ut = vec![f32::NAN; n * n * c * k];
        for (kc, w) in weight.chunks_exact(9).enumerate() {
            let (ki, ci) = (kc / c, kc % c);
            let mut gw = vec![[0.0; 3]; n];
            for j in 0..3 {
                for (r, v) in g(w[j], w[3 + j], w[6 + j]).into_iter().enumerate() {
                    gw[r][j] = v;
                }
            }
            for (r, &[g0, g1, g2]) in gw.iter().enumerate() {
                for (s, v) in g(g0, g1, g2).into_iter().enumerate() {
                    ut[((r * n + s) * c + ci) * k + ki] = v;
                }
            }
        }
        ut
    }

    /// The filters transformed on the threads, straight from the weights and
    /// from the weights flipped in place, have the serial loop's bits, and
    /// write every element of a NaN-poisoned buffer.
    #[test]
    fn filters_match_the_serial_transform_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for side in [F2, F4] {
            let p = positions(side);
            for (k, c) in [(1, 1), (3, 5), (7, 2), (64, 64), (64, 128)] {
                let weight: Vec<f32> = (0..k * c * 9).map(|_| rng.random_range(-1.0..1.0)).collect();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                let expected = serial_transform(k, c, &weight, side);
                let mut poisoned = vec![f32::NAN; p * c * k];
                let filter = |ki: usize, ci: usize| std::array::from_fn(|tap| weight[(ki * c + ci) * 9 + tap]);
                match side {
                    F4 => transform_weight_f4(k, c, filter, &mut poisoned),
                    _ => transform_weight_f2(k, c, filter, &mut poisoned),
                }
                assert_eq!(bits(&poisoned), bits(&expected), "side {side} K {k} C {c}");
                assert_eq!(bits(&Filters::new(k, c, &weight, side).ut[..p * c * k]), bits(&expected), "side {side} K {k} C {c}");

                let g = Conv2dGeometry { n: 1, c, h: 7, w: 7, k, kh: 3, kw: 3, stride: 1, padding: 1 };
                let mut flipped = vec![f32::NAN; c * k * 9];
                flip_weight(&g, &weight, &mut flipped);
                let expected = serial_transform(c, k, &flipped, side);
                assert_eq!(bits(&Filters::flipped(&g, &weight, side).ut[..p * c * k]), bits(&expected), "flipped, side {side} K {k} C {c}");
            }
        }
    }

    /// F(4x4) where its tiles cover what F(2x2)'s do: sides 4 j and 4 j + 3.
    #[test]
    fn four_by_four_tiles_where_they_cover_no_more() {
        assert_eq!(tile_side(28, 28), F4);
        assert_eq!(tile_side(7, 7), F4);
        assert_eq!(tile_side(14, 14), F2);
        assert_eq!(tile_side(28, 14), F2);
        assert_eq!(tile_side(1, 1), F2);
        assert_eq!(tile_side(3, 8), F4);
        assert_eq!(tile_side(5, 4), F2);
    }
}
