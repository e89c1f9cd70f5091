//! The affine layer `y = x W^T + b`.
//!
//! Shapes: `x` `[N, in]`, `weight` `[out, in]` (PyTorch's layout), `bias` `[out]`,
//! `y` `[N, out]`.

use crate::error::Result;
use crate::init::uniform_fan_in;
use crate::module::{join, parameter, Module};
use tensor::{Float, Rng, Tensor};

/// A fully connected layer.
#[derive(Clone, Debug)]
pub struct Linear<T: Float> {
    /// `[out, in]`.
    pub weight: Tensor<T>,
    /// `[out]`.
    pub bias: Tensor<T>,
}

impl<T: Float> Linear<T> {
    /// A layer with PyTorch's default initialisation, `U(-1/sqrt(in), 1/sqrt(in))`
    /// for weight and bias (see [`crate::init`]).
    #[must_use]
    pub fn new(in_features: usize, out_features: usize, rng: &mut Rng) -> Self {
        Linear {
            weight: parameter(uniform_fan_in(&[out_features, in_features], in_features, rng)),
            bias: parameter(uniform_fan_in(&[out_features], in_features, rng)),
        }
    }

    /// `x [N, in] -> x W^T + b [N, out]`.
    ///
    /// # Errors
    /// [`crate::Error::Tensor`], the linear op's shape error, when `x` is not `[N, in]`.
    pub fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        Ok(x.linear(&self.weight, Some(&self.bias))?)
    }

    /// Multiply-adds times two for a batch of `n` rows.
    #[must_use]
    pub fn flops(&self, n: usize) -> f64 {
        2.0 * (n * self.weight.elem_count()) as f64
    }
}

impl<T: Float> Module<T> for Linear<T> {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor<T>)) {
        f(&join(prefix, "weight"), &self.weight);
        f(&join(prefix, "bias"), &self.bias);
    }

    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor<T>)) {
        f(&join(prefix, "weight"), &mut self.weight);
        f(&join(prefix, "bias"), &mut self.bias);
    }
}
