//! Changing the resolution between UNet levels.
//!
//! - [`Downsample`]: a 3x3 convolution with stride 2 and padding 1,
//!   `[B, C, H, W] -> [B, C, ceil(H/2), ceil(W/2)]` (28 -> 14 -> 7).
//! - [`Upsample`]: nearest-neighbour x2 then a 3x3 convolution,
//!   `[B, C, H, W] -> [B, C, 2H, 2W]`.

use crate::error::Result;
use crate::layers::conv2d::Conv2d;
use crate::module::{join, Module};
use tensor::{Float, Rng, Tensor};

/// Halves the resolution with a learned strided convolution.
#[derive(Clone, Debug)]
pub struct Downsample<T: Float> {
    pub conv: Conv2d<T>,
}

impl<T: Float> Downsample<T> {
    /// A `channels -> channels` stride-2 3x3 convolution.
    #[must_use]
    pub fn new(channels: usize, rng: &mut Rng) -> Self {
        Downsample { conv: Conv2d::new(channels, channels, 3, 2, 1, rng) }
    }

    /// `x [B, C, H, W] -> [B, C, ceil(H/2), ceil(W/2)]`.
    ///
    /// # Errors
    /// A shape error when `x` does not have `C` channels.
    pub fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        self.conv.forward(x)
    }
}

/// Doubles the resolution: nearest neighbour, then a 3x3 convolution.
#[derive(Clone, Debug)]
pub struct Upsample<T: Float> {
    pub conv: Conv2d<T>,
}

impl<T: Float> Upsample<T> {
    /// Upsampling followed by a `channels -> channels` 3x3 convolution.
    #[must_use]
    pub fn new(channels: usize, rng: &mut Rng) -> Self {
        Upsample { conv: Conv2d::same3x3(channels, channels, rng) }
    }

    /// `x [B, C, H, W] -> [B, C, 2H, 2W]`.
    ///
    /// # Errors
    /// A shape error when `x` does not have `C` channels.
    pub fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        self.conv.forward(&x.upsample_nearest2d(2)?)
    }
}

impl<T: Float> Module<T> for Downsample<T> {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor<T>)) {
        self.conv.visit_params(&join(prefix, "conv"), f);
    }

    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor<T>)) {
        self.conv.visit_params_mut(&join(prefix, "conv"), f);
    }
}

impl<T: Float> Module<T> for Upsample<T> {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor<T>)) {
        self.conv.visit_params(&join(prefix, "conv"), f);
    }

    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor<T>)) {
        self.conv.visit_params_mut(&join(prefix, "conv"), f);
    }
}
