//! The MLP denoiser of the course notes, for 2-D toy data and flattened MNIST.
//!
//! Shape legend: `B` batch, `D` data dimension (2 for the toy sets, 784 for MNIST),
//! `S` sinusoidal time features, `H` hidden width.
//!
//! ```text
//! h   = [x_t, sinusoidal(t)]               [B, D + S]
//! h   = SiLU(Linear(h))                    [B, H]      (depth times, the first from D + S)
//! eps = Linear(h)                          [B, D]
//! ```
//!
//! Parameter names: `input.weight`, `hidden.0.weight`, ..., `output.bias`.

use crate::error::{Error, Result};
use crate::layers::linear::Linear;
use crate::layers::timestep_embedding::{timestep_embedding, timesteps_to_f64};
use crate::module::{join, Module};
use tensor::{Float, Rng, Tensor};

/// The hyper-parameters of the MLP denoiser.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MlpConfig {
    /// `D`, the size of one flattened sample.
    pub data_dim: usize,
    /// `H`, the width of the hidden layers.
    pub hidden_dim: usize,
    /// Number of hidden layers (each a Linear followed by SiLU), at least 1.
    pub depth: usize,
    /// `S`, the size of the sinusoidal timestep features (even, at least 4).
    pub time_embed_dim: usize,
}

impl MlpConfig {
    /// For the 2-D toy data sets: `D = 2`, 3 hidden layers of 128, `S = 32`.
    #[must_use]
    pub fn toy_2d() -> Self {
        MlpConfig { data_dim: 2, hidden_dim: 128, depth: 3, time_embed_dim: 32 }
    }

    /// For flattened 28x28 MNIST: `D = 784`, 3 hidden layers of 1024, `S = 128`.
    #[must_use]
    pub fn mnist() -> Self {
        MlpConfig { data_dim: 784, hidden_dim: 1024, depth: 3, time_embed_dim: 128 }
    }

    /// How many weights [`MlpDenoiser::new`] makes, from the sizes alone and
    /// saturating at `u64::MAX` (see [`UNetConfig::parameter_count`](crate::UNetConfig::parameter_count)):
    /// `(D + S) H + H`, then `depth - 1` times `H H + H`, then `H D + D`.
    #[must_use]
    pub fn parameter_count(&self) -> u64 {
        let size = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        let linear = |i: u64, o: u64| i.saturating_mul(o).saturating_add(o);
        let (d, h) = (size(self.data_dim), size(self.hidden_dim));
        let hidden = linear(h, h).saturating_mul(size(self.depth).saturating_sub(1));
        linear(d.saturating_add(size(self.time_embed_dim)), h).saturating_add(hidden).saturating_add(linear(h, d))
    }
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self::toy_2d()
    }
}

/// The MLP noise predictor.
#[derive(Clone, Debug)]
pub struct MlpDenoiser<T: Float> {
    pub config: MlpConfig,
    /// `Linear(D + S, H)`.
    pub input: Linear<T>,
    /// `depth - 1` layers `Linear(H, H)`.
    pub hidden: Vec<Linear<T>>,
    /// `Linear(H, D)`.
    pub output: Linear<T>,
}

impl<T: Float> MlpDenoiser<T> {
    /// A freshly initialised MLP (see [`crate::init`]).
    ///
    /// ```
    /// use nn::{MlpConfig, MlpDenoiser};
    /// let mlp = MlpDenoiser::<f32>::new(&MlpConfig::toy_2d(), &mut tensor::rng(0))?;
    /// let x_t = tensor::Tensor::zeros(&[5, 2]);
    /// assert_eq!(mlp.forward(&x_t, &[0, 1, 2, 3, 999])?.dims(), &[5, 2]);
    /// # Ok::<(), nn::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero size or depth, or an odd or tiny
    /// `time_embed_dim`.
    pub fn new(config: &MlpConfig, rng: &mut Rng) -> Result<Self> {
        let MlpConfig { data_dim, hidden_dim, depth, time_embed_dim } = *config;
        if data_dim == 0 || hidden_dim == 0 || depth == 0 || time_embed_dim < 4 || time_embed_dim % 2 != 0 {
            return Err(Error::InvalidArgument { op: "MlpDenoiser::new", msg: format!("invalid configuration {config:?}") });
        }
        Ok(MlpDenoiser {
            config: config.clone(),
            input: Linear::new(data_dim + time_embed_dim, hidden_dim, rng),
            hidden: (1..depth).map(|_| Linear::new(hidden_dim, hidden_dim, rng)).collect(),
            output: Linear::new(hidden_dim, data_dim, rng),
        })
    }

    /// The predicted noise: `x_t [B, ...]` with `D` elements per sample, `t` the
    /// `B` timesteps -> `[B, ...]`, the shape of `x_t`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when a sample does not have `D` elements or `t`
    /// does not have `B` entries.
    pub fn forward(&self, x_t: &Tensor<T>, t: &[usize]) -> Result<Tensor<T>> {
        let b = x_t.dims().first().copied().unwrap_or(0);
        if x_t.rank() < 2 || b != t.len() || x_t.elem_count() != b * self.config.data_dim {
            return Err(Error::ShapeMismatch {
                op: "MlpDenoiser::forward",
                msg: format!(
                    "x_t {:?} with {} timesteps; expected B samples of {} elements and B timesteps",
                    x_t.dims(),
                    t.len(),
                    self.config.data_dim
                ),
            });
        }
        let x = x_t.reshape(&[b, self.config.data_dim])?; // [B, D]
        let features = timestep_embedding(&timesteps_to_f64(t), self.config.time_embed_dim)?; // [B, S]
        let mut h = self.input.forward(&Tensor::cat(&[x, features], 1)?)?.silu(); // [B, H]
        for layer in &self.hidden {
            h = layer.forward(&h)?.silu();
        }
        Ok(self.output.forward(&h)?.reshape(x_t.dims())?) // [B, ...]
    }
}

impl<T: Float> Module<T> for MlpDenoiser<T> {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor<T>)) {
        self.input.visit_params(&join(prefix, "input"), f);
        for (i, layer) in self.hidden.iter().enumerate() {
            layer.visit_params(&join(prefix, &format!("hidden.{i}")), f);
        }
        self.output.visit_params(&join(prefix, "output"), f);
    }

    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor<T>)) {
        self.input.visit_params_mut(&join(prefix, "input"), f);
        for (i, layer) in self.hidden.iter_mut().enumerate() {
            layer.visit_params_mut(&join(prefix, &format!("hidden.{i}")), f);
        }
        self.output.visit_params_mut(&join(prefix, "output"), f);
    }
}
