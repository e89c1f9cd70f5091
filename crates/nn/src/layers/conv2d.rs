//! 2-D convolution with a square kernel, zero padding and a stride.
//!
//! Shapes: `x` `[N, C, H, W]`, `weight` `[K, C, k, k]`, `bias` `[K]`, output
//! `[N, K, OH, OW]` with `OH = (H + 2 padding - k) / stride + 1`.

use crate::error::Result;
use crate::init::uniform_fan_in;
use crate::layers::group_norm::GroupNorm;
use crate::module::{join, parameter, Module};
use tensor::{Addend, Float, GroupNormSilu, Rng, Tensor};

/// A convolution layer.
#[derive(Clone, Debug)]
pub struct Conv2d<T: Float> {
    /// `[K, C, k, k]`.
    pub weight: Tensor<T>,
    /// `[K]`.
    pub bias: Tensor<T>,
    pub stride: usize,
    pub padding: usize,
}

impl<T: Float> Conv2d<T> {
    /// A `kernel x kernel` convolution from `in_channels` to `out_channels` with
    /// PyTorch's default initialisation, bound `1/sqrt(C k k)` (see [`crate::init`]).
    #[must_use]
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize, stride: usize, padding: usize, rng: &mut Rng) -> Self {
        let fan_in = in_channels * kernel * kernel;
        Conv2d {
            weight: parameter(uniform_fan_in(&[out_channels, in_channels, kernel, kernel], fan_in, rng)),
            bias: parameter(uniform_fan_in(&[out_channels], fan_in, rng)),
            stride,
            padding,
        }
    }

    /// A 3x3 convolution that keeps the resolution (stride 1, padding 1).
    #[must_use]
    pub fn same3x3(in_channels: usize, out_channels: usize, rng: &mut Rng) -> Self {
        Self::new(in_channels, out_channels, 3, 1, 1, rng)
    }

    /// A 1x1 convolution: a linear map of the channels at every pixel.
    #[must_use]
    pub fn pointwise(in_channels: usize, out_channels: usize, rng: &mut Rng) -> Self {
        Self::new(in_channels, out_channels, 1, 1, 0, rng)
    }

    /// Sets the weight and bias to zero: the layer then outputs zeros and
    /// passes no gradient back, while its own gradient, `dout` times its
    /// input, does not vanish, so a step can move it (see
    /// [`crate::UNet::zero_branch_outputs`]).
    pub fn zero_parameters(&mut self) {
        self.weight.update_data(|w| w.fill(T::ZERO));
        self.bias.update_data(|b| b.fill(T::ZERO));
    }

    /// `x [N, C, H, W] -> [N, K, OH, OW]`.
    ///
    /// # Errors
    /// [`crate::Error::Tensor`], the conv op's shape error, when `x` does not have `C`
    /// channels or is not 4-D.
    pub fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        Ok(x.conv2d(&self.weight, Some(&self.bias), self.stride, self.padding)?)
    }

    /// `self.forward(&norm.forward_silu(x)?)`, then the addend added on its
    /// side if one is given: how a residual block opens (the addend its time embedding,
    /// `[N, K, 1, 1]`) and closes (the addend its skip path). When no
    /// gradient is recorded, the convolution normalises `x` as it reads it
    /// and adds the addend to each output image while that is in cache, so
    /// neither the normalised activations nor the sum's first term go to
    /// memory (see [`Tensor::group_norm_silu_conv2d`]; the same values, bit
    /// for bit).
    ///
    /// # Errors
    /// [`crate::Error::Tensor`], the group norm's, the conv op's or the
    /// addition's shape error.
    pub fn forward_after_norm_silu(&self, norm: &GroupNorm<T>, x: &Tensor<T>, addend: Option<Addend<'_, T>>) -> Result<Tensor<T>> {
        let norm = GroupNormSilu { groups: norm.groups, weight: &norm.weight, bias: &norm.bias, eps: norm.eps };
        Ok(x.group_norm_silu_conv2d(&norm, &self.weight, Some(&self.bias), (self.stride, self.padding), addend)?)
    }

    /// Output side for an input side `size`.
    #[must_use]
    pub fn out_size(&self, size: usize) -> usize {
        (size + 2 * self.padding - self.weight.dims()[2]) / self.stride + 1
    }

    /// Multiply-adds times two for `n` images of side `size` (input side).
    #[must_use]
    pub fn flops(&self, n: usize, size: usize) -> f64 {
        let out = self.out_size(size);
        2.0 * (n * out * out * self.weight.elem_count()) as f64
    }
}

impl<T: Float> Module<T> for Conv2d<T> {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor<T>)) {
        f(&join(prefix, "weight"), &self.weight);
        f(&join(prefix, "bias"), &self.bias);
    }

    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor<T>)) {
        f(&join(prefix, "weight"), &mut self.weight);
        f(&join(prefix, "bias"), &mut self.bias);
    }
}
