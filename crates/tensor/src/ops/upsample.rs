//! Nearest-neighbour upsampling by an integer factor, as in the UNet decoder.
//!
//! Shapes: `x` `[N, C, H, W]` -> `[N, C, H s, W s]`; output pixel (i, j) copies
//! input pixel (i / s, j / s).

use crate::element::Float;
use crate::error::{Error, Result};
use crate::op::Op;
use crate::tensor::Tensor;

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
        let mut out = Vec::with_capacity(planes * oh * ow);
        for p in 0..planes {
            for i in 0..oh {
                let row = &x[(p * h + i / scale) * w..][..w];
                for j in 0..ow {
                    out.push(row[j / scale]);
                }
            }
        }
        Ok(Tensor::from_op(out, &[self.dims()[0], self.dims()[1], oh, ow], Op::UpsampleNearest2d { x: self.clone(), scale }))
    }
}

// Each input pixel feeds a scale x scale block of outputs: its gradient is the
// sum of g over that block.
pub(crate) fn upsample_nearest2d_backward<T: Float>(x: &Tensor<T>, scale: usize, g: &Tensor<T>) -> Result<Tensor<T>> {
    let (planes, h, w) = (x.dims()[0] * x.dims()[1], x.dims()[2], x.dims()[3]);
    let (oh, ow) = (h * scale, w * scale);
    let gd = g.contiguous_data();
    let mut grad = vec![T::ZERO; x.elem_count()];
    for p in 0..planes {
        for i in 0..oh {
            for j in 0..ow {
                grad[(p * h + i / scale) * w + j / scale] += gd[(p * oh + i) * ow + j];
            }
        }
    }
    Tensor::from_vec(grad, x.dims())
}
