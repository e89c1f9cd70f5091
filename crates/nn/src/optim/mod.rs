//! Optimizers, gradient clipping and the learning-rate warmup.
//!
//! An optimizer walks the model's parameters in the stable order and updates each
//! in place from its gradient in a [`GradStore`]. Its per-parameter state (Adam's
//! moments, SGD's momentum) is kept by parameter name and can be read and restored
//! as named tensors, `<buffer>.<parameter name>` (`exp_avg.down.0.res.0.conv1.weight`),
//! plus the scalar `step`, so that a checkpoint can resume training exactly.

pub mod adam;
pub mod clip;
pub mod sgd;
pub mod warmup;

use crate::error::{Error, Result};
use crate::module::Module;
use std::collections::HashMap;
use tensor::{Float, GradStore, Tensor};

/// What every optimizer offers the training loop and the checkpoints.
pub trait Optimizer<T: Float> {
    /// One update of every parameter of `model` that has a gradient in `grads`
    /// (parameters without one, like PyTorch's `p.grad is None`, are left alone).
    ///
    /// # Errors
    /// [`Error::Parameter`] naming a parameter whose gradient has another shape.
    fn step(&mut self, model: &mut dyn Module<T>, grads: &GradStore<T>) -> Result<()>;

    /// The current learning rate.
    fn lr(&self) -> f64;

    /// Changes the learning rate (warmup, schedules).
    fn set_lr(&mut self, lr: f64);

    /// The number of steps taken so far.
    fn steps(&self) -> u64;

    /// The state as named tensors: every buffer as `<buffer>.<parameter>` and the
    /// step count as the scalar `step`.
    fn state_tensors(&self) -> Vec<(String, Tensor<T>)>;

    /// Restores a state written by [`Optimizer::state_tensors`].
    ///
    /// # Errors
    /// [`Error::Parameter`] naming an entry that is not `step` or a known buffer
    /// kind followed by a parameter name.
    fn load_state_tensors(&mut self, named: &[(String, Tensor<T>)]) -> Result<()>;
}

/// The per-parameter buffers of an optimizer (e.g. `exp_avg` and `exp_avg_sq`),
/// created zero-filled the first time a parameter is updated, kept by name.
#[derive(Clone, Debug)]
pub(crate) struct StateTable<T: Float> {
    /// The buffer kinds, in the order of `entries`' inner vectors.
    kinds: &'static [&'static str],
    /// Parameter names in the order they were first seen (the model's stable order).
    order: Vec<String>,
    /// For each parameter name: its shape and one buffer per kind.
    entries: HashMap<String, (Vec<usize>, Vec<Vec<T>>)>,
}

impl<T: Float> StateTable<T> {
    pub(crate) fn new(kinds: &'static [&'static str]) -> Self {
        StateTable { kinds, order: Vec::new(), entries: HashMap::new() }
    }

    /// The buffers of parameter `name` of shape `dims`, created on first use.
    pub(crate) fn buffers(&mut self, name: &str, dims: &[usize]) -> Result<&mut [Vec<T>]> {
        if !self.entries.contains_key(name) {
            let n = dims.iter().product();
            self.order.push(name.to_string());
            self.entries.insert(name.to_string(), (dims.to_vec(), vec![vec![T::from_f64(0.0); n]; self.kinds.len()]));
        }
        let (shape, buffers) = self.entries.get_mut(name).expect("inserted above");
        if shape != dims {
            return Err(Error::Parameter {
                op: "optimizer state",
                name: name.to_string(),
                msg: format!("the state has shape {shape:?}, the parameter {dims:?}"),
            });
        }
        Ok(buffers)
    }

    /// `<kind>.<name>` tensors in the stable order, kind by kind.
    pub(crate) fn tensors(&self) -> Vec<(String, Tensor<T>)> {
        let mut out = Vec::new();
        for (k, kind) in self.kinds.iter().enumerate() {
            for name in &self.order {
                let (dims, buffers) = &self.entries[name];
                let t = Tensor::from_slice(&buffers[k], dims).expect("buffers are created with the parameter's size");
                out.push((format!("{kind}.{name}"), t));
            }
        }
        out
    }

    /// Restores buffers from `<kind>.<name>` tensors; a parameter whose buffers are
    /// not all given gets zeros for the missing ones. Returns the `step` value if present.
    pub(crate) fn load(&mut self, named: &[(String, Tensor<T>)]) -> Result<Option<u64>> {
        self.order.clear();
        self.entries.clear();
        let mut step = None;
        for (key, tensor) in named {
            if key == "step" {
                step = Some(tensor.item()?.to_f64().round() as u64);
                continue;
            }
            let found = self.kinds.iter().enumerate().find_map(|(k, kind)| key.strip_prefix(kind)?.strip_prefix('.').map(|name| (k, name)));
            let Some((k, name)) = found else {
                return Err(Error::Parameter {
                    op: "load_state_tensors",
                    name: key.clone(),
                    msg: format!("neither \"step\" nor <{}>.<parameter>", self.kinds.join("|")),
                });
            };
            let buffers = self.buffers(name, tensor.dims())?;
            buffers[k] = tensor.to_vec();
        }
        Ok(step)
    }
}

/// Runs `update(name, parameter, gradient)` over every parameter of `model` that
/// has a gradient, stopping at the first error.
pub(crate) fn for_each_param_with_grad<T: Float>(
    model: &mut dyn Module<T>,
    grads: &GradStore<T>,
    mut update: impl FnMut(&str, &mut Tensor<T>, &Tensor<T>) -> Result<()>,
) -> Result<()> {
    let mut result = Ok(());
    model.visit_params_mut("", &mut |name, param| {
        if result.is_err() {
            return;
        }
        let Some(grad) = grads.get(param) else { return };
        if grad.dims() != param.dims() {
            result = Err(Error::Parameter {
                op: "optimizer step",
                name: name.to_string(),
                msg: format!("the gradient has shape {:?}, the parameter {:?}", grad.dims(), param.dims()),
            });
            return;
        }
        let grad = grad.clone();
        result = update(name, param, &grad);
    });
    result
}
