//! Implicit im2col: the im2col matrices of `conv.rs` as [`PackB`] operands
//! of the GEMM, packed straight from the image into B~ micro-panels.
//!
//! An explicit im2col matrix is `KH * KW` times bigger than the image (900
//! KiB for one 32 x 28 x 28 image and a 3x3 kernel, more than L2 holds), and
//! the GEMM would read it once more to pack it. Here the GEMM asks for one
//! `kc x nc` block at a time and we fill its micro-panels from the image,
//! which stays in L2. The image is first copied with its zero padding
//! around it, so packing never tests for the border: every entry of the
//! matrix is a plain read of the padded image.
//!
//! Shape legend (as in `conv.rs`; `HP = H + 2 PH`, `WP = W + 2 PW` padded):
//! ```text
//! cols   (R, L)   cols[(c*KH + i)*KW + j, oh*OW + ow]  = xpad[c, oh*S + i, ow*S + j]
//! rows   (L, R')  rows[oh*OW + ow, (i*KW + j)*C + c]   = xhwc[oh*S + i, ow*S + j, c]
//! ```
//! `cols` ([`Im2col`]) is the B of the forward pass, read from the padded
//! image `xpad` (C, HP, WP). `rows` ([`Im2row`]) is the B of the weight
//! gradient, `cols^T` with its columns reordered so that the fastest index
//! is the channel: read from a padded channels-last copy `xhwc` (HP, WP, C),
//! each run of a micro-panel row is then consecutive channels of one pixel,
//! a contiguous copy instead of a gather across the rows of `cols`.

use super::super::gemm::{DirectB, GemmScalar, MaskedRuns, PackB, MAX_KC, SEGMENT};
use super::super::transpose::{transpose_into_frame, transpose_into_frame_mapped, Frame};
use std::sync::{Arc, Mutex, PoisonError};

/// Sizes of one padded input image and the kernel sliding over it.
#[derive(Clone, Copy, Debug)]
pub(super) struct PaddedGeometry {
    /// Channels C.
    pub c: usize,
    /// Padded height HP and width WP.
    pub hp: usize,
    pub wp: usize,
    /// Kernel height KH and width KW.
    pub kh: usize,
    pub kw: usize,
    /// Stride S.
    pub stride: usize,
    /// Output height OH and width OW.
    pub out_h: usize,
    pub out_w: usize,
}

impl PaddedGeometry {
    /// The sides `(HQ, WQ) = (ceil(HP / S), ceil(WP / S))` of the `S x S`
    /// phase planes that [`pad_chw_phases`] splits each padded channel into
    /// (the padded channel itself at stride 1).
    pub(super) fn phase_sides(&self) -> (usize, usize) {
        (self.hp.div_ceil(self.stride), self.wp.div_ceil(self.stride))
    }

    /// Elements of a padded image in phase planes, `C * S^2 * HQ * WQ`
    /// (`C * HP * WP` at stride 1).
    pub(super) fn phased_len(&self) -> usize {
        let (hq, wq) = self.phase_sides();
        self.c * self.stride * self.stride * hq * wq
    }
}

/// Copies one image `x` (C, H, W) into `xpad` (C, H + 2 PH, W + 2 PW), zeros
/// around it.
pub(super) fn pad_chw<T: GemmScalar>(x: &[T], (h, w): (usize, usize), (ph, pw): (usize, usize), xpad: &mut [T]) {
    let (hp, wp) = (h + 2 * ph, w + 2 * pw);
    for (x_c, xpad_c) in x.chunks_exact(h * w).zip(xpad.chunks_exact_mut(hp * wp)) {
        xpad_c[..ph * wp].fill(T::ZERO);
        xpad_c[(ph + h) * wp..].fill(T::ZERO);
        for (x_row, xpad_row) in x_c.chunks_exact(w).zip(xpad_c[ph * wp..].chunks_exact_mut(wp)) {
            xpad_row[..pw].fill(T::ZERO);
            xpad_row[pw..pw + w].copy_from_slice(x_row);
            xpad_row[pw + w..].fill(T::ZERO);
        }
    }
}

/// Copies one image `x` (C, H, W), padded by `P` on every side, into its
/// phase planes `xq` (C, S, S, HQ, WQ) for the stride `S` of `g`: plane `(c,
/// a, b)` holds the padded pixels `(S*y + a, S*x + b)`, `y < HQ`, `x < WQ`,
/// zero where that pixel is padding or past the padded image. So a stride-`S`
/// convolution reads each plane with stride 1 ([`Im2col`]). At stride 1 the
/// one plane is the padded channel, and this is [`pad_chw`].
pub(super) fn pad_chw_phases<T: GemmScalar>(x: &[T], (h, w): (usize, usize), p: usize, g: &PaddedGeometry, xq: &mut [T]) {
    let s = g.stride;
    if s == 1 {
        pad_chw(x, (h, w), (p, p), xq);
        return;
    }
    let (hq, wq) = g.phase_sides();
    for (x_c, xq_c) in x.chunks_exact(h * w).zip(xq.chunks_exact_mut(s * s * hq * wq)) {
        for (phase, plane) in xq_c.chunks_exact_mut(hq * wq).enumerate() {
            let (a, b) = (phase / s, phase % s);
            // The columns x of the plane whose pixel S*x + b - P is in the image.
            let inside = super::inside(wq, w, s, p, b);
            for (y, row) in plane.chunks_exact_mut(wq).enumerate() {
                let Some(image_y) = (s * y + a).checked_sub(p).filter(|&image_y| image_y < h) else {
                    row.fill(T::ZERO);
                    continue;
                };
                let x_row = &x_c[image_y * w..][..w];
                row[..inside.start].fill(T::ZERO);
                row[inside.end..].fill(T::ZERO);
                for (q, v) in inside.clone().zip(&mut row[inside.clone()]) {
                    *v = x_row[s * q + b - p];
                }
            }
        }
    }
}

/// Copies one image `x` (C, H, W) into the frame `xhwc` (FH, FW, C):
/// channels last, its first pixel at row and column P, zeros around it and
/// in `xhwc` past the frame. The image is transposed in 16 x 16 blocks
/// straight to its pixels in the frame (see `kernels/transpose.rs`), and only
/// the frame around it is zeroed. (Pixel by pixel, gathering each pixel's C
/// values from the C planes, was 1.4% of a course UNet step; through a
/// buffer of the image channels last, then copied row by row, was one more
/// pass over the image.)
///
/// # Panics
/// If the frame is smaller than the image after P rows and columns, or
/// `xhwc` smaller than the frame.
pub(super) fn pad_hwc<T: GemmScalar>(x: &[T], (c, h, w): (usize, usize, usize), p: usize, (fh, fw): (usize, usize), xhwc: &mut [T]) {
    let frame = hwc_frame((c, h, w), p, (fh, fw), xhwc.len());
    transpose_into_frame(x, (c, h * w), h * w, xhwc, frame);
    zero_around_image(c, (h, w), p, fw, xhwc);
}

/// [`pad_hwc`] of the image after `map`: channel `i`'s plane goes through
/// `map(i, plane, mapped)` on its way into the frame (see
/// [`transpose_into_frame_mapped`]).
///
/// # Panics
/// As [`pad_hwc`].
pub(super) fn pad_hwc_mapped<T: GemmScalar>(
    x: &[T],
    (c, h, w): (usize, usize, usize),
    p: usize,
    (fh, fw): (usize, usize),
    xhwc: &mut [T],
    map: impl Fn(usize, &[T], &mut [T]),
) {
    let frame = hwc_frame((c, h, w), p, (fh, fw), xhwc.len());
    transpose_into_frame_mapped(x, (c, h * w), h * w, xhwc, frame, map);
    zero_around_image(c, (h, w), p, fw, xhwc);
}

/// Where the pixels of a (C, H, W) image go in a channels-last (FH, FW, C)
/// frame of `len` elements, its first pixel at row and column P.
///
/// # Panics
/// If the image does not fit.
fn hwc_frame((c, h, w): (usize, usize, usize), p: usize, (fh, fw): (usize, usize), len: usize) -> Frame {
    assert!(
        fh >= h + p && fw >= w + p && fh * fw * c <= len,
        "pad_hwc: a ({c}, {h}, {w}) image at {p} does not fit a ({fh}, {fw}) frame in {len} elements"
    );
    Frame { width: w.max(1), frame_width: fw.max(1), first: (p * fw + p) * c, pixel_stride: c }
}

/// Zeroes what the image's pixels do not cover in the frame of [`pad_hwc`].
fn zero_around_image<T: GemmScalar>(c: usize, (h, w): (usize, usize), p: usize, fw: usize, xhwc: &mut [T]) {
    // The zeros: up to the first pixel, between image rows, after the last.
    let len = xhwc.len();
    let row_start = |y: usize| (((p + y) * fw + p) * c).min(len);
    xhwc[..row_start(0)].fill(T::ZERO);
    for y in 0..h {
        xhwc[row_start(y) + w * c..row_start(y + 1)].fill(T::ZERO);
    }
    xhwc[row_start(h)..].fill(T::ZERO);
}

/// `dst.copy_from_slice(&src[..dst.len()])`, with a fixed-length copy (a
/// few vector moves, not a call to `memcpy`) for the common lengths: a whole
/// micro-panel row of 8 or 16.
#[inline]
fn copy_run<T: Copy>(dst: &mut [T], src: &[T]) {
    match dst.len() {
        16 => copy_fixed::<T, 16>(dst, src),
        8 => copy_fixed::<T, 8>(dst, src),
        len => dst.copy_from_slice(&src[..len]),
    }
}

#[inline]
fn copy_fixed<T: Copy, const N: usize>(dst: &mut [T], src: &[T]) {
    let dst: &mut [T; N] = dst.try_into().expect("dst is N long");
    *dst = src[..N].try_into().expect("src is N long");
}

/// Zeroes columns `width..nr` of every `nr`-wide row of a micro-panel.
fn zero_columns_past<T: GemmScalar>(panel: &mut [T], width: usize, nr: usize) {
    if width < nr {
        for row in panel.chunks_exact_mut(nr) {
            row[width..].fill(T::ZERO);
        }
    }
}

/// The im2col matrix of a convolution in padded coordinates, never stored:
/// `cols` is (R, OH * WP) at stride 1 and (R, OH * WQ) at stride S (see the
/// top of the file).
///
/// With stride 1, row `(c, i, j)` of the im2col matrix, output pixel
/// `(oh, ow)`, reads `xpad[c, oh + i, ow + j]`, which in the flattened
/// padded image is `xpad[(c*HP + i)*WP + j + (oh*WP + ow)]`. So if the
/// columns are numbered `oh*WP + ow` over the padded width, `ow < WP`
/// instead of `ow < OW`, every row of the matrix is one contiguous slice of
/// `xpad`, shifted by `(c*HP + i)*WP + j`, and a micro-panel row is a plain
/// `NR`-element copy. The `WP - OW` extra columns per output row read across
/// the row's end and produce junk outputs that the caller drops (7% more
/// work at 28 x 28 with padding 1; a packing gather per element cost more).
///
/// At stride S the same trick works on the phase planes of
/// [`pad_chw_phases`]: row `(c, i, j)`, output pixel `(oh, ow)` reads the
/// padded pixel `(S*oh + i, S*ow + j)`, which is pixel `(oh + i/S, ow + j/S)`
/// of the plane `(c, i%S, j%S)`, whose rows are WQ long; so with the columns
/// numbered `oh*WQ + ow`, row `(c, i, j)` is the slice of `xpad` from
/// `((c*S + i%S)*S + j%S)*HQ*WQ + (i/S)*WQ + j/S` on. Every stride reads
/// contiguous runs, and the GEMM and its direct microkernel need no strided
/// gather (an explicit im2col at stride 2 gathered every element alone).
///
/// `xpad` (the padded image, or its phase planes) must extend `MAX_NR + KW`
/// elements past its end, so that the junk columns of the last panel stay in
/// bounds; see [`Im2col::slack`].
pub(super) struct Im2col<'a, T> {
    pub xpad: &'a [T],
    pub g: PaddedGeometry,
}

impl<T: GemmScalar> Im2col<'_, T> {
    /// Elements needed past the padded image.
    pub(super) fn slack(g: &PaddedGeometry) -> usize {
        MAX_NR + g.kw
    }

    /// [`PackB::pack_b`] for micro-panels `NR` wide: each row is the slice
    /// of `xpad` that [`DirectB::row_offsets`] locates, from the panel's first
    /// column on.
    fn pack_panels<const NR: usize>(&self, pc: usize, kc: usize, jc: usize, nc: usize, dst: &mut [T]) {
        let mut rows = [0; MAX_KC];
        let rows = &mut rows[..kc];
        self.row_offsets(pc, rows);
        for (panel, dst) in dst[..nc.div_ceil(NR) * kc * NR].chunks_exact_mut(kc * NR).enumerate() {
            let first = jc + panel * NR;
            for (dst_row, &row) in dst.chunks_exact_mut(NR).zip(rows.iter()) {
                let start = row + first;
                let dst_row: &mut [T; NR] = dst_row.try_into().expect("rows are NR long");
                *dst_row = self.xpad[start..start + NR].try_into().expect("slices of NR elements");
            }
            zero_columns_past(dst, NR.min(jc + nc - first), NR);
        }
    }
}

impl<T: GemmScalar> PackB<T> for Im2col<'_, T> {
    fn rows(&self) -> usize {
        self.g.c * self.g.kh * self.g.kw
    }

    fn cols(&self) -> usize {
        self.g.out_h * self.g.phase_sides().1
    }

    fn pack_b(&self, pc: usize, kc: usize, jc: usize, nc: usize, nr: usize, dst: &mut [T]) {
        // A compile-time width makes each row copy a few vector moves.
        match nr {
            4 => self.pack_panels::<4>(pc, kc, jc, nc, dst),
            8 => self.pack_panels::<8>(pc, kc, jc, nc, dst),
            16 => self.pack_panels::<16>(pc, kc, jc, nc, dst),
            32 => self.pack_panels::<32>(pc, kc, jc, nc, dst),
            _ => unreachable!("no microkernel has NR = {nr}"),
        }
    }

    fn direct(&self) -> Option<&dyn DirectB<T>> {
        Some(self)
    }
}

/// Read in place, row `(c, i, j)` is the slice of `xpad` that starts at
/// `(c*HP + i)*WP + j` (at stride S: `((c*S + i%S)*S + j%S)*HQ*WQ +
/// (i/S)*WQ + j/S`), and column `col` lies `col` further on: every run of
/// columns is contiguous. The junk columns of the last segment read the slack.
impl<T: GemmScalar> DirectB<T> for Im2col<'_, T> {
    fn base(&self) -> &[T] {
        self.xpad
    }

    fn row_offsets(&self, pc: usize, offsets: &mut [usize]) {
        let g = &self.g;
        let (s, (hq, wq)) = (g.stride, g.phase_sides());
        tap_offsets(pc, (g.kh, g.kw), offsets, |c, i, j| (((c * s + i % s) * s + j % s) * hq + i / s) * wq + j / s);
    }

    fn segment_offset(&self, col: usize) -> usize {
        col
    }
}

/// `offsets[p] = offset(c, i, j)` for the rows `pc + p` of an im2col
/// matrix, whose row `(c*KH + i)*KW + j` is tap `(i, j)` of channel `c`:
/// (c, i, j) stepped like an odometer rather than divided out for each row.
#[inline]
fn tap_offsets(pc: usize, (kh, kw): (usize, usize), offsets: &mut [usize], offset: impl Fn(usize, usize, usize) -> usize) {
    let taps = kh * kw;
    let (mut c, mut i, mut j) = (pc / taps, pc % taps / kw, pc % kw);
    for slot in offsets {
        *slot = offset(c, i, j);
        j += 1;
        if j == kw {
            (i, j) = (i + 1, 0);
            if i == kh {
                (c, i) = (c + 1, 0);
            }
        }
    }
}

/// Widest micro-panel of any kernel (the AVX-512 one's NR).
const MAX_NR: usize = 32;

/// The reordered transposed im2col matrix `rows` (L, R') of one padded
/// channels-last image `xhwc` (HP, WP, C), never stored: see the top of the file.
pub(super) struct Im2row<'a, T> {
    pub xhwc: &'a [T],
    pub g: PaddedGeometry,
}

impl<T> Im2row<'_, T> {
    /// Where column `(i*KW + j)*C + c` lies relative to a row's pixel: the
    /// pixel `(i, j)` further on, channel `c` of it.
    fn column_offset(&self, col: usize) -> usize {
        let g = &self.g;
        let (ij, channel) = (col / g.c, col % g.c);
        ((ij / g.kw) * g.wp + ij % g.kw) * g.c + channel
    }
}

impl<T: GemmScalar> PackB<T> for Im2row<'_, T> {
    fn rows(&self) -> usize {
        self.g.out_h * self.g.out_w
    }

    fn cols(&self) -> usize {
        self.g.c * self.g.kh * self.g.kw
    }

    fn pack_b(&self, pc: usize, kc: usize, jc: usize, nc: usize, nr: usize, dst: &mut [T]) {
        let g = &self.g;
        let mut pixels = [0; MAX_KC];
        let pixels = &mut pixels[..kc];
        self.row_offsets(pc, pixels);
        let panels = nc.div_ceil(nr);
        for (panel, dst) in dst[..panels * kc * nr].chunks_exact_mut(kc * nr).enumerate() {
            let first = jc + panel * nr;
            let width = nr.min(jc + nc - first);
            // Cut the panel's columns where the kernel offset (i, j)
            // changes: within one offset, the columns are consecutive
            // channels of one pixel, contiguous in xhwc.
            let mut col = 0;
            while col < width {
                let len = (g.c - (first + col) % g.c).min(width - col);
                let shift = self.column_offset(first + col);
                for (dst_row, &pixel) in dst.chunks_exact_mut(nr).zip(pixels.iter()) {
                    copy_run(&mut dst_row[col..col + len], &self.xhwc[pixel + shift..]);
                }
                col += len;
            }
            zero_columns_past(dst, width, nr);
        }
    }

    fn direct(&self) -> Option<&dyn DirectB<T>> {
        // A segment is one pixel's channels only if C is a multiple of it.
        self.g.c.is_multiple_of(SEGMENT).then_some(self as &dyn DirectB<T>)
    }
}

/// Read in place, row `oh*OW + ow` starts at the pixel `(oh*S, ow*S)` of
/// `xhwc`, and the segment of columns `(i*KW + j)*C + c .. + 16` is the 16
/// channels from `c` of the pixel `(i, j)` further on (C a multiple of 16).
impl<T: GemmScalar> DirectB<T> for Im2row<'_, T> {
    fn base(&self) -> &[T] {
        self.xhwc
    }

    fn row_offsets(&self, pc: usize, offsets: &mut [usize]) {
        let g = &self.g;
        let (mut oh, mut ow) = (pc / g.out_w, pc % g.out_w);
        for offset in offsets {
            *offset = (oh * g.stride * g.wp + ow * g.stride) * g.c;
            ow += 1;
            if ow == g.out_w {
                (oh, ow) = (oh + 1, 0);
            }
        }
    }

    fn segment_offset(&self, col: usize) -> usize {
        self.column_offset(col)
    }
}

/// A stride-1 convolution whose output rows are as long as its input rows
/// (`2 PW = KW - 1`, a "same" convolution along the width), for
/// [`Im2colInPlace`]: image (C, H, W), kernel KH x KW, padding PH rows and
/// PW columns, output (OH, W) with `OH = H + 2 PH - KH + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct InPlaceGeometry {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub ph: usize,
    pub pw: usize,
}

impl InPlaceGeometry {
    /// Output rows, `OH = H + 2 PH - KH + 1`.
    pub(super) fn out_h(&self) -> usize {
        self.h + 2 * self.ph + 1 - self.kh
    }

    /// Output pixels, `L = OH * W`.
    fn l(&self) -> usize {
        self.out_h() * self.w
    }

    /// The lane masks of every micro-panel, for [`Im2colInPlace`]: entry
    /// `panel * R + (c * KH + i) * KW + j` holds, for the `2 * SEGMENT`
    /// columns from `panel * 2 * SEGMENT`, the lanes whose pixel is inside
    /// the image for kernel offset `(i, j)`; columns past `L` are in none.
    /// They are the same for every image and every call, so they are made
    /// once per geometry and kept ([`TAP_MASKS`]; 25 panels of 144 rows at 16
    /// channels 28 x 28, 14 KiB).
    pub(super) fn tap_masks(&self) -> Arc<TapMasks> {
        let mut made = TAP_MASKS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(masks) = made.iter().find(|masks| masks.g == *self) {
            return Arc::clone(masks);
        }
        let masks = Arc::new(self.make_tap_masks());
        if made.len() == TAP_MASKS_KEPT {
            made.remove(0);
        }
        made.push(Arc::clone(&masks));
        masks
    }

    /// The lane masks of [`InPlaceGeometry::tap_masks`], made afresh.
    fn make_tap_masks(&self) -> TapMasks {
        let (taps, panels) = (self.kh * self.kw, self.l().div_ceil(2 * SEGMENT));
        let r = self.c * taps;
        let mut masks = vec![[0u16; 2]; panels * r];
        for (panel, masks) in masks.chunks_exact_mut(r.max(1)).enumerate() {
            let (tap_masks, other_channels) = masks.split_at_mut(taps);
            for lane in 0..2 * SEGMENT {
                let pixel = panel * 2 * SEGMENT + lane;
                if pixel >= self.l() {
                    break;
                }
                let (oh, ow) = (pixel / self.w, pixel % self.w);
                for (tap, mask) in tap_masks.iter_mut().enumerate() {
                    let (i, j) = (tap / self.kw, tap % self.kw);
                    let row_inside = (oh + i).checked_sub(self.ph).is_some_and(|y| y < self.h);
                    let column_inside = (ow + j).checked_sub(self.pw).is_some_and(|x| x < self.w);
                    if row_inside && column_inside {
                        mask[lane / SEGMENT] |= 1 << (lane % SEGMENT);
                    }
                }
            }
            for channel in other_channels.chunks_exact_mut(taps.max(1)) {
                channel.copy_from_slice(tap_masks);
            }
        }
        TapMasks { g: *self, masks }
    }
}

/// The tap masks made so far, the most recent last. A network meets a handful
/// of geometries, each in every step: made once per call, on the calling thread
/// while the other waited, they were 0.3% of a quick UNet step.
static TAP_MASKS: Mutex<Vec<Arc<TapMasks>>> = Mutex::new(Vec::new());

/// How many geometries' masks [`TAP_MASKS`] keeps (the oldest goes first).
const TAP_MASKS_KEPT: usize = 32;

/// The lane masks of [`InPlaceGeometry::tap_masks`], with the geometry they
/// were made for (only that function makes them).
pub(super) struct TapMasks {
    g: InPlaceGeometry,
    masks: Vec<[u16; 2]>,
}

/// The im2col matrix `cols` (R, OH * W) of a convolution in
/// [`InPlaceGeometry`], read from the image `x` (C, H, W) itself: no padded
/// copy of the image, and its columns numbered `oh * W + ow` with no junk
/// columns, so the product is the output itself.
///
/// Row `(c, i, j)`, output pixel `(oh, ow)` reads `x[c, oh + i - PH, ow + j -
/// PW]`, zero where that pixel is padding. With `OW = W`, that is the
/// element `c*H*W + i*W + j + (oh*W + ow)` of the image counted from `PH*W +
/// PW` elements before it: every row of the matrix is one run of memory
/// again, as for [`Im2col`], and the entries that fall in the padding are
/// the lanes that [`MaskedRuns::lane_masks`] clears: the left and right
/// columns of the image for `j != PW` (where a run crosses from one image
/// row to the next) and the top and bottom rows for `i != PH`. The direct
/// microkernel loads the other lanes only, so the padding is never stored;
/// the product's numbers and their order are those of [`Im2col`] on the
/// padded copy, and so are its bits.
pub(super) struct Im2colInPlace<'a, T> {
    x: &'a [T],
    g: InPlaceGeometry,
    masks: &'a [[u16; 2]],
}

impl<'a, T> Im2colInPlace<'a, T> {
    /// The matrix of the image `x` in the geometry of `masks`.
    ///
    /// # Panics
    /// If `x` is not one (C, H, W) image.
    pub(super) fn new(x: &'a [T], masks: &'a TapMasks) -> Self {
        let g = masks.g;
        assert_eq!(x.len(), g.c * g.h * g.w, "Im2colInPlace: an image of {} elements, geometry {g:?}", x.len());
        Im2colInPlace { x, g, masks: &masks.masks }
    }

    /// Output pixels, `L = OH * W`.
    pub(super) fn l(&self) -> usize {
        self.g.l()
    }
}

impl<T: GemmScalar> PackB<T> for Im2colInPlace<'_, T> {
    fn rows(&self) -> usize {
        self.g.c * self.g.kh * self.g.kw
    }

    fn cols(&self) -> usize {
        self.g.l()
    }

    /// Entry by entry through the lane masks (the kernels without a direct
    /// form; the AVX-512 one reads in place).
    fn pack_b(&self, pc: usize, kc: usize, jc: usize, nc: usize, nr: usize, dst: &mut [T]) {
        let mut offsets = [0; MAX_KC];
        let offsets = &mut offsets[..kc];
        self.row_offsets(pc, offsets);
        let origin = self.origin();
        for (panel, dst) in dst[..nc.div_ceil(nr) * kc * nr].chunks_exact_mut(kc * nr).enumerate() {
            let first = jc + panel * nr;
            let width = nr.min(jc + nc - first);
            for q in 0..width {
                let col = first + q;
                // One set of masks covers 2 * SEGMENT columns from a multiple of that.
                let from = col - col % (2 * SEGMENT);
                let masks = &self.lane_masks(pc, from)[..kc];
                let (h, bit) = ((col - from) / SEGMENT, 1 << ((col - from) % SEGMENT));
                for (p, (&offset, mask)) in offsets.iter().zip(masks).enumerate() {
                    dst[p * nr + q] = if mask[h] & bit != 0 { self.x[offset + col - origin] } else { T::ZERO };
                }
            }
            zero_columns_past(dst, width, nr);
        }
    }

    fn direct(&self) -> Option<&dyn DirectB<T>> {
        Some(self)
    }
}

impl<T: GemmScalar> DirectB<T> for Im2colInPlace<'_, T> {
    fn base(&self) -> &[T] {
        self.x
    }

    fn row_offsets(&self, pc: usize, offsets: &mut [usize]) {
        let g = &self.g;
        tap_offsets(pc, (g.kh, g.kw), offsets, |c, i, j| (c * g.h + i) * g.w + j);
    }

    fn segment_offset(&self, col: usize) -> usize {
        col
    }

    fn masked(&self) -> Option<&dyn MaskedRuns> {
        Some(self)
    }
}

// SAFETY: a lane that `lane_masks` sets is one of the masks that
// `InPlaceGeometry::tap_masks` made for this geometry (`Im2colInPlace::new`
// takes them with it), set only where the pixel `(oh + i - PH, ow + j - PW)`
// of output pixel `oh * W + ow < L` is inside the H x W image. For row `(c,
// i, j)`, `c < C`, that lane is the element `c*H*W + (oh + i - PH)*W + ow +
// j - PW` of `x`, which `new` checked to be one (C, H, W) image: inside
// `base()`.
unsafe impl<T: GemmScalar> MaskedRuns for Im2colInPlace<'_, T> {
    fn origin(&self) -> usize {
        self.g.ph * self.g.w + self.g.pw
    }

    fn lane_masks(&self, pc: usize, col: usize) -> &[[u16; 2]] {
        debug_assert_eq!(col % (2 * SEGMENT), 0, "a micro-panel starts at a multiple of 2 * SEGMENT");
        let r = self.g.c * self.g.kh * self.g.kw;
        &self.masks[col / (2 * SEGMENT) * r..][pc..r]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kept masks are those of the geometry asked for (the lookup compares
    /// every field), equal to masks made afresh, and the store stays bounded.
    #[test]
    fn tap_masks_kept_are_the_geometrys_own() {
        let geometry = |c, h, w| InPlaceGeometry { c, h, w, kh: 3, kw: 3, ph: 1, pw: 1 };
        for round in 0..2 {
            for (c, h, w) in [(3, 5, 6), (3, 6, 5), (2, 5, 6), (3, 5, 7)] {
                let g = geometry(c, h, w);
                let kept = g.tap_masks();
                assert_eq!(kept.g, g, "round {round}");
                assert!(kept.masks == g.make_tap_masks().masks, "{g:?}, round {round}");
            }
        }
        for h in 1..=2 * TAP_MASKS_KEPT {
            drop(geometry(1, h, 4).tap_masks());
        }
        assert!(TAP_MASKS.lock().unwrap_or_else(PoisonError::into_inner).len() <= TAP_MASKS_KEPT);
    }
}
