//! The model as the commands run it: every call counted on a [`Progress`], and every
//! output checked to be finite.
//!
//! A model with NaN or infinite weights predicts NaN, and a clamp to [-1, 1] turns
//! NaN samples into a black picture that looks like a result. The check stops at
//! the first non-finite prediction instead, naming the timestep.

use crate::error::{Error, Result};
use crate::run::model::Model;
use crate::run::progress::Progress;
use ddpm::NoisePredictor;
use std::cell::Cell;
use tensor::Tensor;

/// `model`, counted and checked.
#[derive(Debug)]
pub struct Watched<'a> {
    model: &'a Model,
    progress: &'a Progress,
    /// The code timestep of the first non-finite prediction.
    non_finite_at: Cell<Option<usize>>,
}

impl<'a> Watched<'a> {
    /// Wraps `model`; each prediction moves `progress` by one.
    #[must_use]
    pub fn new(model: &'a Model, progress: &'a Progress) -> Self {
        Watched { model, progress, non_finite_at: Cell::new(None) }
    }

    /// The result of a computation that called this model: a non-finite prediction
    /// becomes [`Error::NonFinite`] (exit code 1), other errors pass through.
    ///
    /// # Errors
    /// As described.
    pub fn verdict<T, E: Into<Error>>(&self, result: std::result::Result<T, E>) -> Result<T> {
        match (self.non_finite_at.get(), result) {
            (Some(t), _) => Err(Error::NonFinite { what: format!("the model's prediction at timestep t = {t} (code index)") }),
            (None, result) => result.map_err(Into::into),
        }
    }
}

impl NoisePredictor<f32> for Watched<'_> {
    fn predict(&self, x_t: &Tensor<f32>, t: &[usize]) -> tensor::Result<Tensor<f32>> {
        let output = self.model.predict(x_t, t)?;
        self.progress.inc();
        if output.to_vec().iter().any(|v| !v.is_finite()) {
            let step = t.first().copied().unwrap_or(0);
            self.non_finite_at.set(Some(step));
            return Err(tensor::Error::InvalidArgument { op: "model prediction", msg: format!("not finite at t = {step}") });
        }
        Ok(output)
    }
}
