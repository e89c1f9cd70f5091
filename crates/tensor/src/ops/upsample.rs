//! Nearest-neighbour upsampling by an integer factor, as in the UNet decoder.
//!
//! Shapes: `x` `[N, C, H, W]` -> `[N, C, H s, W s]`; output pixel (i, j) copies
//! input pixel (i / s, j / s).

use crate::element::Float;
use crate::error::{Error, Result};
use crate::kernels::elementwise::vectorized;
use crate::kernels::gemm::scratch::with_scratch;
use crate::op::Op;
use crate::tensor::Tensor;
use rayon::prelude::*;

impl<T: Float> Tensor<T> {
    /// Repeats every pixel `scale x scale` times.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] unless `x` is `[N, C, H, W]`; [`Error::InvalidArgument`] for scale 0.
    pub fn upsample_nearest2d(&self, scale: usize) -> Result<Tensor<T>> {
        if self.rank() != 4 {
            return Err(Error::ShapeMismatch { op: "upsample_nearest2d", msg: format!("needs [N, C, H, W], got {:?}", self.dims()) });
        }
        if scale == 0 {
            return Err(Error::InvalidArgument { op: "upsample_nearest2d", msg: "scale must be at least 1".into() });
        }
        let (planes, h, w) = (self.dims()[0] * self.dims()[1], self.dims()[2], self.dims()[3]);
        let x = self.contiguous_data();
        let (oh, ow) = (h * scale, w * scale);
        let mut out = crate::pool::for_overwrite(planes * oh * ow);
        // Each input row becomes one widened row (every pixel repeated `scale`
        // times), copied to `scale` output rows.
        let widen = |(input_row, block): (&[T], &mut [T])| {
            let (first, rest) = block.split_at_mut(ow);
            for (pixels, &v) in first.chunks_mut(scale).zip(input_row) {
                pixels.fill(v);
            }
            for row in rest.chunks_mut(ow) {
                row.copy_from_slice(first);
            }
        };
        if w > 0 && out.len() >= super::PARALLEL_MIN_ELEMS {
            x.par_chunks(w).zip(out.par_chunks_mut(scale * ow)).for_each(widen);
        } else if w > 0 {
            x.chunks(w).zip(out.chunks_mut(scale * ow)).for_each(widen);
        }
        Ok(Tensor::from_op(out, &[self.dims()[0], self.dims()[1], oh, ow], Op::UpsampleNearest2d { x: self.clone(), scale }))
    }
}

// Each input pixel feeds a scale x scale block of outputs: its gradient is the
// sum of g over that block, row by row of the block, each row's `scale` pixels
// summed first: `0 + (g00 + g01 + ...) + (g10 + g11 + ...) + ...`. That order
// fixes the bits; both paths below keep it.
pub(crate) fn upsample_nearest2d_backward<T: Float>(x: &Tensor<T>, scale: usize, g: &Tensor<T>) -> Result<Tensor<T>> {
    let (h, w) = (x.dims()[2], x.dims()[3]);
    let gd = g.contiguous_data();
    let mut grad = crate::pool::for_overwrite(x.elem_count());
    let plane = h * w;
    if plane == 0 {
        return Tensor::from_vec(grad, x.dims());
    }
    let parallel = gd.len() >= super::PARALLEL_MIN_ELEMS;
    if scale == 2 {
        // The UNet's factor, one plane at a time in two passes that run the
        // width of a whole plane, not of a row (7 or 14 pixels, too short for
        // a vector): the pair sums of every output row, `pairs[k] = g[2k] +
        // g[2k + 1]` (output row r's pairs are pairs[r w ..][..w]), then each
        // input row adds the pairs of its two output rows.
        let collect = |(grad_plane, g_plane): (&mut [T], &[T])| {
            with_scratch(2 * plane, |pairs: &mut [T]| {
                vectorized(
                    #[inline(always)]
                    || {
                        for (p, two) in pairs.iter_mut().zip(g_plane.chunks_exact(2)) {
                            *p = two[0] + two[1];
                        }
                        for (grad_row, rows) in grad_plane.chunks_exact_mut(w).zip(pairs.chunks_exact(2 * w)) {
                            let (top, bottom) = rows.split_at(w);
                            for ((gv, &t), &b) in grad_row.iter_mut().zip(top).zip(bottom) {
                                *gv = (T::ZERO + t) + b;
                            }
                        }
                    },
                );
            });
        };
        if parallel {
            grad.par_chunks_mut(plane).zip(gd.par_chunks(4 * plane)).for_each(collect);
        } else {
            grad.chunks_mut(plane).zip(gd.chunks(4 * plane)).for_each(collect);
        }
        return Tensor::from_vec(grad, x.dims());
    }
    backward_any_scale(&gd, scale, w, parallel, &mut grad);
    Tensor::from_vec(grad, x.dims())
}

/// The backward for any factor, into `grad` (rows of `w`): input row r
/// collects the `scale` output rows it was copied to, and within them the
/// `scale` pixels each input pixel became.
fn backward_any_scale<T: Float>(gd: &[T], scale: usize, w: usize, parallel: bool, grad: &mut [T]) {
    let ow = w * scale;
    let collect = |(grad_row, block): (&mut [T], &[T])| {
        grad_row.fill(T::ZERO);
        for out_row in block.chunks(ow) {
            for (gv, pixels) in grad_row.iter_mut().zip(out_row.chunks(scale)) {
                *gv += pixels.iter().copied().sum::<T>();
            }
        }
    };
    if parallel {
        grad.par_chunks_mut(w).zip(gd.par_chunks(scale * ow)).for_each(collect);
    } else {
        grad.chunks_mut(w).zip(gd.chunks(scale * ow)).for_each(collect);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The factor-2 path against the any-factor one, bit for bit: odd sides,
    /// planes on and off the threads, and upstream values with signed zeros.
    #[test]
    fn factor_two_sums_as_any_factor_does() -> Result<()> {
        let mut r = crate::rng(7);
        for dims in [[1, 1, 1, 1], [2, 3, 7, 5], [64, 16, 14, 14], [3, 2, 1, 9]] {
            let x = Tensor::<f32>::randn(&dims, &mut r);
            let mut g = Tensor::<f32>::randn(&[dims[0], dims[1], 2 * dims[2], 2 * dims[3]], &mut r).to_vec();
            // Whole blocks of -0 (every third column pair of every output
            // row), and lone zeros of either sign.
            let ow = 2 * dims[3];
            for (i, v) in g.iter_mut().enumerate() {
                match ((i % ow) / 2 % 3, i % 7) {
                    (0, _) => *v = -0.0,
                    (_, 3) => *v = 0.0,
                    (_, 5) => *v = -0.0,
                    _ => {}
                }
            }
            let parallel = g.len() >= super::super::PARALLEL_MIN_ELEMS;
            let g = Tensor::from_vec(g, &[dims[0], dims[1], 2 * dims[2], 2 * dims[3]])?;
            let got = upsample_nearest2d_backward(&x, 2, &g)?.to_vec();
            let mut want = vec![f32::NAN; x.elem_count()];
            backward_any_scale(&g.to_vec(), 2, dims[3], parallel, &mut want);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{dims:?}");
        }
        Ok(())
    }
}
