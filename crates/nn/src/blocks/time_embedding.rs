//! The UNet's time embedding: the sinusoidal features of `t` through a two-layer
//! MLP, `temb = Linear2(SiLU(Linear1(sinusoidal(t))))`.
//!
//! Shapes: `t` `[B]`, sinusoidal `[B, S]`, output `[B, E]` (course UNet: S = 32,
//! E = 128).

use crate::error::Result;
use crate::layers::linear::Linear;
use crate::layers::timestep_embedding::timestep_embedding;
use crate::module::{join, Module};
use tensor::{Float, Rng, Tensor};

/// Sinusoidal(S) -> Linear(S, E) -> SiLU -> Linear(E, E).
#[derive(Clone, Debug)]
pub struct TimeEmbedding<T: Float> {
    /// `S`, the size of the sinusoidal features.
    pub sinusoidal_dim: usize,
    pub linear1: Linear<T>,
    pub linear2: Linear<T>,
}

impl<T: Float> TimeEmbedding<T> {
    /// Sinusoidal features of size `sinusoidal_dim`, embedding of size `embed_dim`.
    #[must_use]
    pub fn new(sinusoidal_dim: usize, embed_dim: usize, rng: &mut Rng) -> Self {
        TimeEmbedding {
            sinusoidal_dim,
            linear1: Linear::new(sinusoidal_dim, embed_dim, rng),
            linear2: Linear::new(embed_dim, embed_dim, rng),
        }
    }

    /// `t [B] -> temb [B, E]`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] for an odd or too small `S`.
    pub fn forward(&self, t: &[f64]) -> Result<Tensor<T>> {
        let features = timestep_embedding(t, self.sinusoidal_dim)?; // [B, S]
        self.linear2.forward(&self.linear1.forward(&features)?.silu()) // [B, E]
    }
}

impl<T: Float> Module<T> for TimeEmbedding<T> {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor<T>)) {
        self.linear1.visit_params(&join(prefix, "linear1"), f);
        self.linear2.visit_params(&join(prefix, "linear2"), f);
    }

    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor<T>)) {
        self.linear1.visit_params_mut(&join(prefix, "linear1"), f);
        self.linear2.visit_params_mut(&join(prefix, "linear2"), f);
    }
}
