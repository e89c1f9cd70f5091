//! The SiLU (swish) activation, `silu(x) = x sigmoid(x)`, as a layer without
//! parameters; the op and its gradient live in the tensor crate.

use crate::module::Module;
use tensor::{Float, Tensor};

/// `x -> x sigmoid(x)`, elementwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Silu;

impl Silu {
    /// Applies the activation; any shape.
    #[must_use]
    pub fn forward<T: Float>(&self, x: &Tensor<T>) -> Tensor<T> {
        x.silu()
    }
}

impl<T: Float> Module<T> for Silu {
    fn visit_params(&self, _prefix: &str, _f: &mut dyn FnMut(&str, &Tensor<T>)) {}

    fn visit_params_mut(&mut self, _prefix: &str, _f: &mut dyn FnMut(&str, &mut Tensor<T>)) {}
}
