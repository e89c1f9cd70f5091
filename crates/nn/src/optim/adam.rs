//! Adam (Kingma & Ba 2015) and AdamW (Loshchilov & Hutter 2019), with the exact
//! semantics of `torch.optim.Adam` and `torch.optim.AdamW`.
//!
//! For a parameter `p` with gradient `g`, at step `t` (1-based, counting this one):
//!
//! ```text
//! AdamW only:  p <- p - lr wd p                  (decoupled weight decay, first)
//! Adam only:   g <- g + wd p                     (L2 penalty folded into the gradient)
//! m <- beta1 m + (1 - beta1) g                   exp_avg
//! v <- beta2 v + (1 - beta2) g^2                 exp_avg_sq
//! p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//! ```
//!
//! The arithmetic is done in f64 per element and rounded once.

use rayon::prelude::*;

use super::{for_each_param_with_grad, Optimizer, StateTable};
use crate::error::Result;
use crate::module::Module;
use tensor::{Float, GradStore, Tensor};

/// How weight decay enters the update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WeightDecay {
    /// Adam's L2 penalty: `g <- g + wd p`.
    L2(f64),
    /// AdamW's decoupled decay: `p <- p - lr wd p` before the Adam step.
    Decoupled(f64),
}

/// The hyper-parameters of one Adam or AdamW update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: WeightDecay,
}

/// One update of one parameter, in place (see the module docs); `step` is 1-based.
///
/// Shapes: `param`, `grad`, `exp_avg`, `exp_avg_sq` all have the same length.
pub fn adam_update<T: Float>(hyper: &AdamHyper, step: u64, param: &mut [T], grad: &[T], exp_avg: &mut [T], exp_avg_sq: &mut [T]) {
    let AdamHyper { lr, beta1, beta2, eps, weight_decay } = *hyper;
    let bias_correction1 = 1.0 - beta1.powf(step as f64);
    let bias_correction2_sqrt = (1.0 - beta2.powf(step as f64)).sqrt();
    let step_size = lr / bias_correction1;
    let update = |param: &mut [T], grad: &[T], exp_avg: &mut [T], exp_avg_sq: &mut [T]| {
        for (((p, &g), m), v) in param.iter_mut().zip(grad).zip(exp_avg.iter_mut()).zip(exp_avg_sq.iter_mut()) {
            let (mut p64, mut g64) = (p.to_f64(), g.to_f64());
            match weight_decay {
                WeightDecay::Decoupled(wd) => p64 *= 1.0 - lr * wd,
                WeightDecay::L2(wd) => g64 += wd * p64,
            }
            let m64 = beta1 * m.to_f64() + (1.0 - beta1) * g64;
            let v64 = beta2 * v.to_f64() + (1.0 - beta2) * g64 * g64;
            let denom = v64.sqrt() / bias_correction2_sqrt + eps;
            p64 -= step_size * m64 / denom;
            (*p, *m, *v) = (T::from_f64(p64), T::from_f64(m64), T::from_f64(v64));
        }
    };
    // Every element is updated on its own, so chunks on the threads give the
    // same bits; the course UNet's step spent 10 ms here on one thread.
    if param.len() >= PARALLEL_MIN_PARAMS {
        let chunks = param.par_chunks_mut(PARAMS_PER_TASK).zip(grad.par_chunks(PARAMS_PER_TASK));
        let moments = exp_avg.par_chunks_mut(PARAMS_PER_TASK).zip(exp_avg_sq.par_chunks_mut(PARAMS_PER_TASK));
        chunks.zip(moments).for_each(|((p, g), (m, v))| update(p, g, m, v));
    } else {
        update(param, grad, exp_avg, exp_avg_sq);
    }
}

/// From this many numbers on, a parameter's update is split between the
/// threads (the course UNet's 3 x 3 convolutions hold 288 to 73,728, the
/// quick UNet's 144 to 9,216; a task costs rayon a microsecond or two, the
/// update of a thousand numbers several).
const PARALLEL_MIN_PARAMS: usize = 1 << 11;
/// Numbers per task of the split update: four slices of 4 KiB each (the
/// parameter, its gradient and the two moments) for one task.
const PARAMS_PER_TASK: usize = 1 << 10;

/// The Adam / AdamW optimizer with its moments per parameter.
#[derive(Clone, Debug)]
pub struct Adam<T: Float> {
    pub hyper: AdamHyper,
    step: u64,
    state: StateTable<T>,
}

const KINDS: &[&str] = &["exp_avg", "exp_avg_sq"];

impl<T: Float> Adam<T> {
    /// Adam with PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, no weight decay.
    #[must_use]
    pub fn new(lr: f64) -> Self {
        Self::with_hyper(AdamHyper { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: WeightDecay::L2(0.0) })
    }

    /// AdamW with PyTorch's defaults but the given weight decay (PyTorch's default is 0.01).
    #[must_use]
    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        Self::with_hyper(AdamHyper { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: WeightDecay::Decoupled(weight_decay) })
    }

    /// An optimizer with explicit hyper-parameters.
    #[must_use]
    pub fn with_hyper(hyper: AdamHyper) -> Self {
        Adam { hyper, step: 0, state: StateTable::new(KINDS) }
    }
}

impl<T: Float> Optimizer<T> for Adam<T> {
    fn step(&mut self, model: &mut dyn Module<T>, grads: &GradStore<T>) -> Result<()> {
        self.step += 1;
        let (hyper, step, state) = (self.hyper, self.step, &mut self.state);
        for_each_param_with_grad(model, grads, |name, param, grad| {
            let [exp_avg, exp_avg_sq] = state.buffers(name, param.dims())? else { unreachable!("two kinds") };
            let grad = grad.contiguous_data();
            param.update_data(|p| adam_update(&hyper, step, p, &grad, exp_avg, exp_avg_sq));
            Ok(())
        })
    }

    fn lr(&self) -> f64 {
        self.hyper.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.hyper.lr = lr;
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
