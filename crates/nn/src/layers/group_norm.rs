//! Group normalisation (Wu & He 2018) as a layer with its affine parameters.
//!
//! Shapes: `x` `[N, C, *]`, `weight` and `bias` `[C]`. The `C` channels are split
//! into `G` groups; each (sample, group) is normalised by its own mean and
//! variance, then scaled by `weight[c]` and shifted by `bias[c]`.

use crate::error::{Error, Result};
use crate::module::{join, parameter, Module};
use tensor::{Float, Tensor};

/// PyTorch's default `eps` for `nn.GroupNorm`.
pub const GROUP_NORM_EPS: f64 = 1e-5;

/// A GroupNorm layer, initialised to the identity affine map (weight 1, bias 0).
#[derive(Clone, Debug)]
pub struct GroupNorm<T: Float> {
    pub groups: usize,
    pub eps: f64,
    /// `[C]`.
    pub weight: Tensor<T>,
    /// `[C]`.
    pub bias: Tensor<T>,
}

impl<T: Float> GroupNorm<T> {
    /// `groups` groups over `channels` channels.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `groups` is zero or does not divide `channels`.
    pub fn new(groups: usize, channels: usize) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(Error::InvalidArgument {
                op: "GroupNorm::new",
                msg: format!("{channels} channels do not split into {groups} groups"),
            });
        }
        Ok(GroupNorm {
            groups,
            eps: GROUP_NORM_EPS,
            weight: parameter(Tensor::ones(&[channels])),
            bias: parameter(Tensor::zeros(&[channels])),
        })
    }

    /// `x [N, C, *] -> [N, C, *]`.
    ///
    /// # Errors
    /// [`crate::Error::Tensor`], the group-norm op's shape error, when `x` does not
    /// have `C` channels.
    pub fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        Ok(x.group_norm(self.groups, &self.weight, &self.bias, self.eps)?)
    }

    /// `silu(forward(x))` in one pass ([`Tensor::group_norm_silu`]): the same
    /// values as `self.forward(x)?.silu()`, one tensor fewer kept for the backward.
    ///
    /// # Errors
    /// As [`GroupNorm::forward`].
    pub fn forward_silu(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        Ok(x.group_norm_silu(self.groups, &self.weight, &self.bias, self.eps)?)
    }
}

impl<T: Float> Module<T> for GroupNorm<T> {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor<T>)) {
        f(&join(prefix, "weight"), &self.weight);
        f(&join(prefix, "bias"), &self.bias);
    }

    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor<T>)) {
        f(&join(prefix, "weight"), &mut self.weight);
        f(&join(prefix, "bias"), &mut self.bias);
    }
}
