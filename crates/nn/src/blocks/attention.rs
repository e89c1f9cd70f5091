//! Single-head self-attention over the pixels of a feature map, with a residual
//! connection (the DDPM UNet uses it at the 16x16 resolution; the course UNet at 7x7).
//!
//! Shapes: `x` `[B, C, H, W]`, `L = H W` positions.
//!
//! ```text
//! q, k, v = split(qkv(norm(x)))                     each [B, C, L]   (qkv: 1x1 conv C -> 3C)
//! a[b, :, i] = sum_j softmax_j(q_i . k_j / sqrt(C)) v_j            [B, C, L]
//! out = x + proj(a)                                                (proj: 1x1 conv C -> C)
//! ```

use crate::error::{Error, Result};
use crate::layers::conv2d::Conv2d;
use crate::layers::group_norm::GroupNorm;
use crate::module::{join, Module};
use tensor::{Float, Rng, Tensor};

/// The self-attention block.
#[derive(Clone, Debug)]
pub struct AttentionBlock<T: Float> {
    pub norm: GroupNorm<T>,
    /// 1x1 convolution `C -> 3C`: queries, keys and values, in that order.
    pub qkv: Conv2d<T>,
    /// 1x1 output projection `C -> C`.
    pub proj: Conv2d<T>,
}

impl<T: Float> AttentionBlock<T> {
    /// Attention over `channels` channels with GroupNorm over `groups` groups.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] when `groups` does not divide `channels`.
    pub fn new(channels: usize, groups: usize, rng: &mut Rng) -> Result<Self> {
        Ok(AttentionBlock {
            norm: GroupNorm::new(groups, channels)?,
            qkv: Conv2d::pointwise(channels, 3 * channels, rng),
            proj: Conv2d::pointwise(channels, channels, rng),
        })
    }

    /// `x [B, C, H, W] -> x + attention [B, C, H, W]`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `x` is not `[B, C, H, W]`.
    pub fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        if x.rank() != 4 {
            return Err(Error::ShapeMismatch {
                op: "AttentionBlock::forward",
                msg: format!("x needs shape [B, C, H, W], got {:?}", x.dims()),
            });
        }
        let (b, c, h, w) = (x.dims()[0], x.dims()[1], x.dims()[2], x.dims()[3]);
        // [B, 3C, L]: q, k, v stacked, as `attention_qkv` takes them.
        let qkv = self.qkv.forward(&self.norm.forward(x)?)?.reshape(&[b, 3 * c, h * w])?;
        let a = qkv.attention_qkv()?.reshape(&[b, c, h, w])?; // [B, C, H, W]
        Ok(x.add(&self.proj.forward(&a)?)?)
    }

    /// Multiply-adds times two for `n` maps of side `size`: the two 1x1
    /// convolutions plus `q^T k` and `v softmax^T` (`2 L^2 C` each).
    #[must_use]
    pub fn flops(&self, n: usize, size: usize) -> f64 {
        let (c, l) = (self.proj.weight.dims()[0], size * size);
        self.qkv.flops(n, size) + self.proj.flops(n, size) + 2.0 * 2.0 * (n * l * l * c) as f64
    }
}

impl<T: Float> Module<T> for AttentionBlock<T> {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor<T>)) {
        self.norm.visit_params(&join(prefix, "norm"), f);
        self.qkv.visit_params(&join(prefix, "qkv"), f);
        self.proj.visit_params(&join(prefix, "proj"), f);
    }

    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor<T>)) {
        self.norm.visit_params_mut(&join(prefix, "norm"), f);
        self.qkv.visit_params_mut(&join(prefix, "qkv"), f);
        self.proj.visit_params_mut(&join(prefix, "proj"), f);
    }
}
