//! The `Module` abstraction: a model is a tree of layers, and every parameter has
//! a name that spells out its path in that tree (`down.0.res.1.conv1.weight`).
//!
//! The names are visited in one fixed order, the order of the forward pass, so
//! that "the k-th parameter" means the same tensor in the optimizer, the EMA and a
//! checkpoint. Parameters are leaf tensors that require a gradient; optimizers and
//! the EMA change them in place with [`Tensor::update_data`].

use tensor::{Float, Tensor};

/// Training or evaluation. Only [`crate::Dropout`] behaves differently: it drops
/// activations in training and is the identity in evaluation. (GroupNorm uses the
/// statistics of each sample, so unlike BatchNorm it has no running averages.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Train,
    Eval,
}

/// A layer or a model with named parameters.
///
/// Implementors visit their own parameters and then their children's, each under
/// `prefix` joined with the child's name by a dot ([`join`]).
pub trait Module<T: Float> {
    /// Calls `f(name, parameter)` for every parameter, in the stable order.
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor<T>));

    /// Calls `f(name, parameter)` with mutable access, in the same order as
    /// [`Module::visit_params`].
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor<T>));

    /// Switches between training and evaluation behaviour (see [`Mode`]).
    /// Layers without mode-dependent behaviour ignore it; containers pass it on.
    fn set_mode(&mut self, _mode: Mode) {}

    /// Every parameter with its full name, in the stable order.
    #[must_use]
    fn named_params(&self) -> Vec<(String, Tensor<T>)> {
        let mut out = Vec::new();
        self.visit_params("", &mut |name, p| out.push((name.to_string(), p.clone())));
        out
    }

    /// The total number of scalar parameters.
    #[must_use]
    fn num_params(&self) -> usize {
        let mut n = 0;
        self.visit_params("", &mut |_, p| n += p.elem_count());
        n
    }
}

/// `prefix.name`, or `name` at the root (empty prefix).
#[must_use]
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A new trainable parameter: a leaf that requires a gradient.
pub(crate) fn parameter<T: Float>(t: Tensor<T>) -> Tensor<T> {
    t.requires_grad()
}
