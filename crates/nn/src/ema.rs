//! The exponential moving average of the weights, which DDPM samples from
//! (decay 0.9999). After each optimizer step,
//!
//! `shadow <- decay shadow + (1 - decay) param`,
//!
//! so after `n` updates towards constant weights `c` the shadow is
//! `c + (shadow_0 - c) decay^n`: it forgets its start at the rate `decay^n` and
//! averages roughly the last `1 / (1 - decay)` steps.
//!
//! With *warm-up* the decay of update `n` (0-based) is `min(decay, (1 + n) / (10 + n))`
//! (TensorFlow's `ExponentialMovingAverage` with `num_updates`): the first updates
//! average over a short window, so a short run's average is not held back by the
//! random initialisation, which the fixed decay forgets only at the rate `decay^n`.

use crate::error::{Error, Result};
use crate::module::Module;
use tensor::{Float, Tensor};

/// DDPM's EMA decay.
pub const DEFAULT_EMA_DECAY: f64 = 0.9999;

/// The averaged weights, by parameter name in the model's stable order.
#[derive(Clone, Debug)]
pub struct Ema<T: Float> {
    pub decay: f64,
    /// `(name, averaged weights)`; the tensors do not require gradients.
    pub shadow: Vec<(String, Tensor<T>)>,
    /// Updates made so far.
    pub num_updates: u64,
    /// Whether the decay warms up (see the module docs).
    pub warmup: bool,
}

impl<T: Float> Ema<T> {
    /// Starts the average at the model's current weights.
    #[must_use]
    pub fn new(model: &dyn Module<T>, decay: f64) -> Self {
        let shadow =
            model.named_params().into_iter().map(|(name, p)| (name, Tensor::from_vec(p.to_vec(), p.dims()).expect("same shape"))).collect();
        Ema { decay, shadow, num_updates: 0, warmup: false }
    }

    /// The same average with the decay warming up from 0.1 (see the module docs).
    #[must_use]
    pub fn with_warmup(self, warmup: bool) -> Self {
        Ema { warmup, ..self }
    }

    /// The decay the next update uses.
    #[must_use]
    pub fn current_decay(&self) -> f64 {
        if self.warmup {
            let n = self.num_updates as f64;
            self.decay.min((1.0 + n) / (10.0 + n))
        } else {
            self.decay
        }
    }

    /// `shadow <- decay shadow + (1 - decay) param` for every parameter, with the
    /// decay of [`Ema::current_decay`].
    ///
    /// # Errors
    /// [`Error::Parameter`] naming the first parameter that is not the one the
    /// average was started from (its name, place or shape differs).
    pub fn update(&mut self, model: &dyn Module<T>) -> Result<()> {
        let params = model.named_params();
        self.check(&params)?;
        let decay = self.current_decay();
        for ((_, shadow), (_, param)) in self.shadow.iter_mut().zip(&params) {
            let param = param.contiguous_data();
            shadow.update_data(|s| {
                for (s, &p) in s.iter_mut().zip(param.iter()) {
                    *s = T::from_f64(decay * s.to_f64() + (1.0 - decay) * p.to_f64());
                }
            });
        }
        self.num_updates += 1;
        Ok(())
    }

    /// Writes the averaged weights into `model` (usually a clone of the trained
    /// model, used for sampling).
    ///
    /// # Errors
    /// [`Error::Parameter`] as in [`Ema::update`].
    pub fn copy_to(&self, model: &mut dyn Module<T>) -> Result<()> {
        self.check(&model.named_params())?;
        let mut shadow = self.shadow.iter();
        model.visit_params_mut("", &mut |_, param| {
            let (_, s) = shadow.next().expect("checked: same count");
            let s = s.contiguous_data();
            param.update_data(|p| p.copy_from_slice(&s));
        });
        Ok(())
    }

    /// A clone of `model` carrying the averaged weights: the model to sample from.
    ///
    /// # Errors
    /// [`Error::Parameter`] as in [`Ema::update`].
    pub fn averaged_copy<M: Module<T> + Clone>(&self, model: &M) -> Result<M> {
        let mut copy = model.clone();
        self.copy_to(&mut copy)?;
        Ok(copy)
    }

    /// The model's parameters are the averaged ones: the same names, in the same
    /// order, of the same shapes.
    fn check(&self, params: &[(String, Tensor<T>)]) -> Result<()> {
        let mismatch = |name: &str, msg: String| Err(Error::Parameter { op: "Ema", name: name.to_string(), msg });
        for ((name, param), (averaged, shadow)) in params.iter().zip(&self.shadow) {
            if name != averaged || param.dims() != shadow.dims() {
                return mismatch(name, format!("{:?} in the model where the average holds {averaged} {:?}", param.dims(), shadow.dims()));
            }
        }
        let counts = format!("the model has {} parameters, the average {}", params.len(), self.shadow.len());
        match (params.get(self.shadow.len()), self.shadow.get(params.len())) {
            (Some((name, _)), _) => mismatch(name, format!("not in the average ({counts})")),
            (_, Some((name, _))) => mismatch(name, format!("averaged but not in the model ({counts})")),
            (None, None) => Ok(()),
        }
    }
}
