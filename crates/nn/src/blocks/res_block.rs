//! The residual block of the DDPM UNet, conditioned on the time embedding.
//!
//! Shapes: `x` `[B, Cin, H, W]`, `temb` `[B, E]`, output `[B, Cout, H, W]`.
//!
//! ```text
//! h   = conv1(SiLU(norm1(x)))                  [B, Cout, H, W]
//! h  += time_proj(SiLU(temb))[:, :, None, None] one shift per channel
//! h   = conv2(dropout(SiLU(norm2(h))))
//! out = skip(x) + h                            skip = 1x1 conv if Cin != Cout, else identity
//! ```

use crate::error::Result;
use crate::layers::conv2d::Conv2d;
use crate::layers::dropout::Dropout;
use crate::layers::group_norm::GroupNorm;
use crate::layers::linear::Linear;
use crate::module::{join, Mode, Module};
use tensor::{Addend, Float, Rng, Tensor};

/// A time-conditioned residual block.
#[derive(Clone, Debug)]
pub struct ResBlock<T: Float> {
    pub norm1: GroupNorm<T>,
    pub conv1: Conv2d<T>,
    /// `Linear(E, Cout)`: the per-channel shift from the time embedding.
    pub time_proj: Linear<T>,
    pub norm2: GroupNorm<T>,
    pub dropout: Dropout,
    pub conv2: Conv2d<T>,
    /// The 1x1 convolution of the skip path, present when `Cin != Cout`.
    pub skip: Option<Conv2d<T>>,
}

impl<T: Float> ResBlock<T> {
    /// A block from `in_channels` to `out_channels`, conditioned on a time
    /// embedding of size `embed_dim`, with GroupNorm over `groups` groups.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] when `groups` does not divide both
    /// channel counts or `dropout` is not in `[0, 1)`.
    pub fn new(in_channels: usize, out_channels: usize, embed_dim: usize, groups: usize, dropout: f64, rng: &mut Rng) -> Result<Self> {
        Ok(ResBlock {
            norm1: GroupNorm::new(groups, in_channels)?,
            conv1: Conv2d::same3x3(in_channels, out_channels, rng),
            time_proj: Linear::new(embed_dim, out_channels, rng),
            norm2: GroupNorm::new(groups, out_channels)?,
            dropout: Dropout::new(dropout, rng)?,
            conv2: Conv2d::same3x3(out_channels, out_channels, rng),
            skip: (in_channels != out_channels).then(|| Conv2d::pointwise(in_channels, out_channels, rng)),
        })
    }

    /// `x [B, Cin, H, W]`, `temb [B, E]` -> `[B, Cout, H, W]`.
    ///
    /// # Errors
    /// A shape error when `x` or `temb` do not fit the block.
    pub fn forward(&self, x: &Tensor<T>, temb: &Tensor<T>) -> Result<Tensor<T>> {
        let shift = self.time_proj.forward(&temb.silu())?; // [B, Cout]
        let (b, c) = (shift.dims()[0], shift.dims()[1]);
        let h = self.conv1.forward_after_norm_silu(&self.norm1, x, Some(Addend::Right(&shift.reshape(&[b, c, 1, 1])?)))?; // [B, Cout, H, W]
        let skip = match &self.skip {
            Some(skip) => skip.forward(x)?,
            None => x.clone(),
        };
        if self.dropout.is_identity() {
            self.conv2.forward_after_norm_silu(&self.norm2, &h, Some(Addend::Left(&skip)))
        } else {
            Ok(skip.add(&self.conv2.forward(&self.dropout.forward(&self.norm2.forward_silu(&h)?)?)?)?)
        }
    }

    /// Multiply-adds times two of the convolutions and the projection, for `n`
    /// images of side `size`.
    #[must_use]
    pub fn flops(&self, n: usize, size: usize) -> f64 {
        self.conv1.flops(n, size)
            + self.time_proj.flops(n)
            + self.conv2.flops(n, size)
            + self.skip.as_ref().map_or(0.0, |s| s.flops(n, size))
    }
}

impl<T: Float> Module<T> for ResBlock<T> {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor<T>)) {
        self.norm1.visit_params(&join(prefix, "norm1"), f);
        self.conv1.visit_params(&join(prefix, "conv1"), f);
        self.time_proj.visit_params(&join(prefix, "time_proj"), f);
        self.norm2.visit_params(&join(prefix, "norm2"), f);
        self.conv2.visit_params(&join(prefix, "conv2"), f);
        if let Some(skip) = &self.skip {
            skip.visit_params(&join(prefix, "skip"), f);
        }
    }

    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor<T>)) {
        self.norm1.visit_params_mut(&join(prefix, "norm1"), f);
        self.conv1.visit_params_mut(&join(prefix, "conv1"), f);
        self.time_proj.visit_params_mut(&join(prefix, "time_proj"), f);
        self.norm2.visit_params_mut(&join(prefix, "norm2"), f);
        self.conv2.visit_params_mut(&join(prefix, "conv2"), f);
        if let Some(skip) = &mut self.skip {
            skip.visit_params_mut(&join(prefix, "skip"), f);
        }
    }

    fn set_mode(&mut self, mode: Mode) {
        Module::<T>::set_mode(&mut self.dropout, mode);
    }
}
