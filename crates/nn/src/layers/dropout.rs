//! Dropout: in training, each activation is zeroed with probability `p` and the
//! survivors are scaled by `1 / (1 - p)`, so the expected value is unchanged; in
//! evaluation it is the identity. DDPM uses it inside the residual blocks (0.1 on
//! CIFAR-10); the course UNet's default is `p = 0`.
//!
//! The masks come from the layer's own generator, seeded at construction, so a run
//! is reproducible without threading an RNG through every forward pass.

use crate::error::{Error, Result};
use crate::module::{Mode, Module};
use rand::RngCore;
use std::sync::atomic::{AtomicU64, Ordering};
use tensor::{rng, Float, Rng, Tensor};

/// The dropout layer (no parameters).
#[derive(Debug)]
pub struct Dropout {
    /// Probability of zeroing an activation, in `[0, 1)`.
    pub p: f64,
    mode: Mode,
    seed: u64,
    /// Forward passes made so far in training mode: mask `i` uses seed `seed + i`.
    calls: AtomicU64,
}

impl Clone for Dropout {
    fn clone(&self) -> Self {
        Dropout { p: self.p, mode: self.mode, seed: self.seed, calls: AtomicU64::new(self.calls.load(Ordering::Relaxed)) }
    }
}

impl Dropout {
    /// A dropout layer with probability `p`, in training mode.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless `0 <= p < 1`.
    pub fn new(p: f64, rng: &mut Rng) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::InvalidArgument { op: "Dropout::new", msg: format!("p = {p} is not in [0, 1)") });
        }
        Ok(Dropout { p, mode: Mode::Train, seed: rng.next_u64(), calls: AtomicU64::new(0) })
    }

    /// True if [`Dropout::forward`] returns its input as it is: in
    /// evaluation mode, or with `p = 0`.
    #[must_use]
    pub fn is_identity(&self) -> bool {
        self.mode == Mode::Eval || self.p == 0.0
    }

    /// `x * mask / (1 - p)` in training (mask entries 1 with probability `1 - p`),
    /// `x` in evaluation. Any shape.
    ///
    /// # Errors
    /// None in practice (the mask has the shape of `x`).
    pub fn forward<T: Float>(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        if self.is_identity() {
            return Ok(x.clone());
        }
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let uniform = Tensor::<T>::rand_uniform(x.dims(), 0.0, 1.0, &mut rng(self.seed.wrapping_add(call)));
        let keep = uniform.ge(&Tensor::scalar(T::from_f64(self.p)))?;
        Ok(x.mul(&keep)?.mul_scalar(T::from_f64(1.0 / (1.0 - self.p))))
    }
}

impl<T: Float> Module<T> for Dropout {
    fn visit_params(&self, _prefix: &str, _f: &mut dyn FnMut(&str, &Tensor<T>)) {}

    fn visit_params_mut(&mut self, _prefix: &str, _f: &mut dyn FnMut(&str, &mut Tensor<T>)) {}

    fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }
}
