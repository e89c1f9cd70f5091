//! Stochastic gradient descent with momentum, as `torch.optim.SGD` (no dampening,
//! no Nesterov):
//!
//! ```text
//! g <- g + wd p          (L2 weight decay)
//! b <- mu b + g          (momentum_buffer)
//! p <- p - lr b
//! ```
//!
//! PyTorch sets `b <- g` on the first step; here `b` starts at zero, so the first
//! `mu b + g` is `g` exactly and needs no branch of its own.

use super::{for_each_param_with_grad, Optimizer, StateTable};
use crate::error::Result;
use crate::module::Module;
use tensor::{Float, GradStore, Tensor};

/// SGD with heavy-ball momentum.
#[derive(Clone, Debug)]
pub struct Sgd<T: Float> {
    pub lr: f64,
    /// `mu`; 0 gives plain SGD.
    pub momentum: f64,
    pub weight_decay: f64,
    step: u64,
    state: StateTable<T>,
}

const KINDS: &[&str] = &["momentum_buffer"];

impl<T: Float> Sgd<T> {
    /// SGD with learning rate `lr` and momentum `momentum`, no weight decay.
    #[must_use]
    pub fn new(lr: f64, momentum: f64) -> Self {
        Sgd { lr, momentum, weight_decay: 0.0, step: 0, state: StateTable::new(KINDS) }
    }
}

impl<T: Float> Optimizer<T> for Sgd<T> {
    fn step(&mut self, model: &mut dyn Module<T>, grads: &GradStore<T>) -> Result<()> {
        self.step += 1;
        let (lr, mu, wd) = (self.lr, self.momentum, self.weight_decay);
        let state = &mut self.state;
        for_each_param_with_grad(model, grads, |name, param, grad| {
            let [buffer] = state.buffers(name, param.dims())? else { unreachable!("one kind") };
            let grad = grad.contiguous_data();
            param.update_data(|p| {
                for ((p, &g), b) in p.iter_mut().zip(grad.iter()).zip(buffer.iter_mut()) {
                    let g = g.to_f64() + wd * p.to_f64();
                    let b64 = mu * b.to_f64() + g;
                    *b = T::from_f64(b64);
                    *p = T::from_f64(p.to_f64() - lr * b64);
                }
            });
            Ok(())
        })
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn steps(&self) -> u64 {
        self.step
    }

    fn state_tensors(&self) -> Vec<(String, Tensor<T>)> {
        let mut out = vec![("step".to_string(), Tensor::scalar(T::from_f64(self.step as f64)))];
        out.extend(self.state.tensors());
        out
    }

    fn load_state_tensors(&mut self, named: &[(String, Tensor<T>)]) -> Result<()> {
        self.step = self.state.load(named)?.unwrap_or(0);
        Ok(())
    }
}
