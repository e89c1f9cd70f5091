//! 2-D convolution (cross-correlation, as in every DL framework), NCHW.
//!
//! Shapes: `x` `[N, C, H, W]`, `weight` `[K, C, kh, kw]`, `bias` `[K]`, output
//! `[N, K, OH, OW]` with `OH = (H + 2 padding - kh) / stride + 1` (same for W).
//! The arithmetic lives in [`crate::kernels::conv`]; this file checks shapes and
//! wires the three kernels (forward, grad-input, grad-weight) into the autograd.

use crate::element::Float;
use crate::error::{Error, Result};
use crate::kernels::conv::{conv2d_backward_input, conv2d_backward_weight, conv2d_forward, Conv2dGeometry};
use crate::op::Op;
use crate::tensor::Tensor;

pub(crate) fn geometry<T: Float>(
    x: &Tensor<T>,
    weight: &Tensor<T>,
    bias: Option<&Tensor<T>>,
    stride: usize,
    padding: usize,
) -> Result<Conv2dGeometry> {
    let err = |msg: String| Error::ShapeMismatch { op: "conv2d", msg };
    if x.rank() != 4 || weight.rank() != 4 {
        return Err(err(format!("needs x [N, C, H, W] and weight [K, C, kh, kw], got x {:?} and weight {:?}", x.dims(), weight.dims())));
    }
    let (n, c, h, w) = (x.dims()[0], x.dims()[1], x.dims()[2], x.dims()[3]);
    let (k, wc, kh, kw) = (weight.dims()[0], weight.dims()[1], weight.dims()[2], weight.dims()[3]);
    if wc != c {
        return Err(err(format!("x {:?} has {c} channels but weight {:?} expects {wc}", x.dims(), weight.dims())));
    }
    if let Some(b) = bias {
        if b.dims() != [k] {
            return Err(err(format!("bias {:?} for weight {:?} should be [{k}]", b.dims(), weight.dims())));
        }
    }
    if stride == 0 {
        return Err(Error::InvalidArgument { op: "conv2d", msg: "stride must be at least 1".into() });
    }
    if h + 2 * padding < kh || w + 2 * padding < kw {
        return Err(err(format!("kernel {kh}x{kw} larger than the padded input {}x{}", h + 2 * padding, w + 2 * padding)));
    }
    Ok(Conv2dGeometry { n, c, h, w, k, kh, kw, stride, padding })
}

impl<T: Float> Tensor<T> {
    /// `y[n, k] = bias[k] + sum_c x[n, c] (*) weight[k, c]` with stride and zero padding.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for wrong ranks, channel counts or bias size,
    /// [`Error::InvalidArgument`] for a zero stride.
    pub fn conv2d(&self, weight: &Tensor<T>, bias: Option<&Tensor<T>>, stride: usize, padding: usize) -> Result<Tensor<T>> {
        let g = geometry(self, weight, bias, stride, padding)?;
        let mut out = crate::pool::for_overwrite(g.n * g.k * g.out_h() * g.out_w());
        let bias_data = bias.map(|b| b.contiguous_data());
        conv2d_forward(&g, &self.contiguous_data(), &weight.contiguous_data(), bias_data.as_deref(), &mut out);
        let op = Op::Conv2d { x: self.clone(), weight: weight.clone(), bias: bias.cloned(), stride, padding };
        Ok(Tensor::from_op(out, &[g.n, g.k, g.out_h(), g.out_w()], op))
    }
}

// y = x (*) w + b:
//   dL/dx = the "transposed convolution" of g with w (col2im of W^T G),
//   dL/dw = sum over images of g correlated with x (G X_col^T),
//   dL/db = sum of g over n, oh, ow.
// dL/dx only `with_grad_x`: the first convolution's input is the noisy image,
// which needs none.
pub(crate) fn conv2d_backward<T: Float>(
    x: &Tensor<T>,
    weight: &Tensor<T>,
    has_bias: bool,
    stride: usize,
    padding: usize,
    g: &Tensor<T>,
    with_grad_x: bool,
) -> Result<Vec<Option<Tensor<T>>>> {
    let geo = geometry(x, weight, None, stride, padding)?;
    let (gd, wd, xd) = (g.contiguous_data(), weight.contiguous_data(), x.contiguous_data());
    let grad_x = if with_grad_x {
        let mut grad_x = crate::pool::for_overwrite(x.elem_count());
        conv2d_backward_input(&geo, &gd, &wd, &mut grad_x);
        Some(Tensor::from_vec(grad_x, x.dims())?)
    } else {
        None
    };
    let mut grad_w = crate::pool::for_overwrite(weight.elem_count());
    let mut grad_b = crate::pool::zeroed(geo.k);
    conv2d_backward_weight(&geo, &xd, &gd, &mut grad_w, has_bias.then_some(grad_b.as_mut_slice()));
    let mut grads = vec![grad_x, Some(Tensor::from_vec(grad_w, weight.dims())?)];
    if has_bias {
        grads.push(Some(Tensor::from_vec(grad_b, &[geo.k])?));
    }
    Ok(grads)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dL/dx is computed only when asked for; the weight and bias gradients are
    /// the same either way.
    #[test]
    fn grad_x_only_when_asked() -> Result<()> {
        let mut r = crate::rng(3);
        let x = Tensor::<f64>::randn(&[2, 3, 5, 4], &mut r);
        let w = Tensor::<f64>::randn(&[4, 3, 3, 3], &mut r);
        let g = Tensor::<f64>::randn(&[2, 4, 5, 4], &mut r);
        let with = conv2d_backward(&x, &w, true, 1, 1, &g, true)?;
        let without = conv2d_backward(&x, &w, true, 1, 1, &g, false)?;
        assert_eq!(with[0].as_ref().map(|gx| gx.dims().to_vec()), Some(vec![2, 3, 5, 4]));
        assert!(without[0].is_none());
        for (a, b) in with[1..].iter().zip(&without[1..]) {
            let (a, b) = (a.as_ref().expect("a weight or bias gradient"), b.as_ref().expect("a weight or bias gradient"));
            assert_eq!(a.to_vec(), b.to_vec());
        }
        assert_eq!(without.len(), 3);
        Ok(())
    }
}
