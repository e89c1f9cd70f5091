//! Parameter initialisation, seeded from a [`tensor::Rng`] so that one seed gives
//! one model.
//!
//! We use PyTorch's defaults for `nn.Linear` and `nn.Conv2d`: weights are
//! `kaiming_uniform_(a = sqrt(5))`, which works out to `U(-b, b)` with
//! `b = sqrt(6 / ((1 + a^2) fan_in)) = 1 / sqrt(fan_in)`, and biases are `U(-b, b)`
//! with the same bound. `fan_in` is the number of inputs of one output unit: `in`
//! for a linear layer, `C kh kw` for a convolution. GroupNorm starts as the
//! identity map (weight 1, bias 0).
//!
//! The DDPM code instead zero-initialises the last convolution of each residual
//! branch and of the output; we keep PyTorch's defaults so that every layer
//! receives a gradient from the first step and the gradient checks are not
//! trivially zero. [`crate::UNet::zero_branch_outputs`] applies the DDPM code's
//! start to a fresh UNet (`ddpm train --zero-init true`).

use tensor::{Float, Rng, Tensor};

/// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` entries of shape `dims`.
#[must_use]
pub fn uniform_fan_in<T: Float>(dims: &[usize], fan_in: usize, rng: &mut Rng) -> Tensor<T> {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Tensor::rand_uniform(dims, -bound, bound, rng)
}
