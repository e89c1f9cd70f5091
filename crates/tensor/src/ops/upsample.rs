//! Nearest-neighbour upsampling by an integer factor, as in the UNet decoder.
//!
//! Shapes: `x` `[N, C, H, W]` -> `[N, C, H s, W s]`; output pixel (i, j) copies
//! input pixel (i / s, j / s).

use crate::element::Float;
use crate::error::{Error, Result};
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
// sum of g over that block.
pub(crate) fn upsample_nearest2d_backward<T: Float>(x: &Tensor<T>, scale: usize, g: &Tensor<T>) -> Result<Tensor<T>> {
    let w = x.dims()[3];
    let ow = w * scale;
    let gd = g.contiguous_data();
    let mut grad = crate::pool::zeroed(x.elem_count());
    // Input row r collects the `scale` output rows it was copied to, and within
    // them the `scale` pixels each input pixel became. Rows are independent.
    let collect = |(grad_row, block): (&mut [T], &[T])| {
        for out_row in block.chunks(ow) {
            for (gv, pixels) in grad_row.iter_mut().zip(out_row.chunks(scale)) {
                *gv += pixels.iter().copied().sum::<T>();
            }
        }
    };
    if w > 0 && gd.len() >= super::PARALLEL_MIN_ELEMS {
        grad.par_chunks_mut(w).zip(gd.par_chunks(scale * ow)).for_each(collect);
    } else if w > 0 {
        grad.chunks_mut(w).zip(gd.chunks(scale * ow)).for_each(collect);
    }
    Tensor::from_vec(grad, x.dims())
}
