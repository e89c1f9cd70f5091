//! The `Module` abstraction: a model is a tree of layers, and every parameter has
//! a name that spells out its path in that tree (`down.0.res.1.conv1.weight`).
//!
//! The names are visited in one fixed order, the order of the forward pass, so
//! that "the k-th parameter" means the same tensor in the optimizer, the EMA and a
//! checkpoint. Parameters are leaf tensors that require a gradient; optimizers and
//! the EMA change them in place with [`Tensor::update_data`].

use crate::error::{Error, Result};
use std::collections::HashMap;
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

    /// Sets every parameter from `named` (as written by [`Module::named_params`],
    /// e.g. read from a checkpoint), copying the values in place. Strict: every
    /// parameter must be given once, with its shape, and nothing else.
    ///
    /// # Errors
    /// [`Error::Parameter`] naming a parameter that is missing, unknown to the model,
    /// given twice or of another shape.
    fn load_named_params(&mut self, named: &[(String, Tensor<T>)]) -> Result<()> {
        let mut given: HashMap<&str, &Tensor<T>> = HashMap::with_capacity(named.len());
        for (name, t) in named {
            if given.insert(name.as_str(), t).is_some() {
                return Err(parameter_error(name, "given twice".to_string()));
            }
        }
        let mut result = Ok(());
        self.visit_params_mut("", &mut |name, p| {
            if result.is_err() {
                return;
            }
            match given.remove(name) {
                None => result = Err(parameter_error(name, "a parameter of the model, missing from the input".to_string())),
                Some(t) if t.dims() != p.dims() => {
                    result = Err(parameter_error(name, format!("{:?} in the model but {:?} in the input", p.dims(), t.dims())));
                }
                Some(t) => {
                    let values = t.contiguous_data();
                    p.update_data(|d| d.copy_from_slice(&values));
                }
            }
        });
        result?;
        match given.keys().next() {
            Some(extra) => Err(parameter_error(extra, "not a parameter of the model".to_string())),
            None => Ok(()),
        }
    }

    /// The total number of scalar parameters.
    #[must_use]
    fn num_params(&self) -> usize {
        let mut n = 0;
        self.visit_params("", &mut |_, p| n += p.elem_count());
        n
    }
}

/// What [`Module::load_named_params`] found wrong with the parameter `name`.
fn parameter_error(name: &str, msg: String) -> Error {
    Error::Parameter { op: "load_named_params", name: name.to_string(), msg }
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
