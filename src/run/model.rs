//! The noise predictor of a run (the UNet or the MLP) behind one type, and the
//! loading of a trained one from a checkpoint.

use crate::error::{Error, Result};
use crate::run::config::{ModelConfig, TrainConfig};
use ddpm::NoisePredictor;
use nn::{Checkpoint, MlpDenoiser, Mode, Module, UNet};
use std::path::{Path, PathBuf};
use tensor::{rng, Tensor};

/// A UNet (images `[B, 1, H, W]`) or an MLP (vectors `[B, D]`), in f32.
// A run holds one model; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Model {
    Unet(UNet<f32>),
    Mlp(MlpDenoiser<f32>),
}

/// Checkpoint metadata keys.
pub const CONFIG_KEY: &str = "config";
pub const STEP_KEY: &str = "step";
pub const ELAPSED_KEY: &str = "elapsed_seconds";
pub const FORMAT_KEY: &str = "format";
pub const FORMAT: &str = "diffusion-course-checkpoint-1";

impl Model {
    /// A freshly initialised model; the weights depend only on `seed`.
    ///
    /// # Errors
    /// An invalid architecture.
    pub fn new(config: &ModelConfig, seed: u64) -> Result<Self> {
        let mut r = rng(seed);
        Ok(match config {
            ModelConfig::Unet(unet) => Model::Unet(UNet::new(unet, &mut r)?),
            ModelConfig::Mlp(mlp) => Model::Mlp(MlpDenoiser::new(mlp, &mut r)?),
        })
    }

    /// The predicted noise (or x_0) for `x_t` at code timesteps `t`.
    ///
    /// # Errors
    /// Shape errors naming the model and the shapes.
    pub fn forward(&self, x_t: &Tensor<f32>, t: &[usize]) -> nn::Result<Tensor<f32>> {
        match self {
            Model::Unet(m) => m.forward(x_t, t),
            Model::Mlp(m) => m.forward(x_t, t),
        }
    }
}

impl Module<f32> for Model {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor<f32>)) {
        match self {
            Model::Unet(m) => m.visit_params(prefix, f),
            Model::Mlp(m) => m.visit_params(prefix, f),
        }
    }

    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor<f32>)) {
        match self {
            Model::Unet(m) => m.visit_params_mut(prefix, f),
            Model::Mlp(m) => m.visit_params_mut(prefix, f),
        }
    }

    fn set_mode(&mut self, mode: Mode) {
        match self {
            Model::Unet(m) => m.set_mode(mode),
            Model::Mlp(m) => m.set_mode(mode),
        }
    }
}

// ddpm's samplers and losses take any function of tensors, so they speak the tensor
// crate's errors: the model's error crosses with its message unchanged.
impl NoisePredictor<f32> for Model {
    fn predict(&self, x_t: &Tensor<f32>, t: &[usize]) -> tensor::Result<Tensor<f32>> {
        self.forward(x_t, t).map_err(nn::Error::into_tensor_error)
    }
}

/// A checkpoint path: the file itself, or `checkpoint.safetensors` in a run folder.
#[must_use]
pub fn checkpoint_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("checkpoint.safetensors")
    } else {
        path.to_path_buf()
    }
}

/// A trained model read back: its config, step, and weights.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub config: TrainConfig,
    pub step: usize,
    pub checkpoint: Checkpoint<f32>,
}

impl Loaded {
    /// Reads a checkpoint written by `ddpm train` and checks its metadata.
    ///
    /// # Errors
    /// A missing or corrupt file, or a safetensors file of another program.
    pub fn read(path: &Path) -> Result<Self> {
        let path = checkpoint_path(path);
        if !path.exists() {
            return Err(Error::InvalidArgument { what: "--checkpoint", reason: format!("{} does not exist", path.display()) });
        }
        let checkpoint = Checkpoint::<f32>::load(&path)?;
        let source = path.display().to_string();
        let bad = |reason: String| Error::Format { file: source.clone(), offset: 0, reason };
        if checkpoint.metadata.get(FORMAT_KEY).map(String::as_str) != Some(FORMAT) {
            return Err(bad(format!("not a checkpoint of this program (no {FORMAT_KEY:?} = {FORMAT:?} in the metadata)")));
        }
        let config: TrainConfig = serde_json::from_str(checkpoint.metadata_value(CONFIG_KEY, &source)?)
            .map_err(|e| bad(format!("the config in the metadata does not parse: {e}")))?;
        let step = checkpoint.metadata_value(STEP_KEY, &source)?.parse().map_err(|e| bad(format!("bad step: {e}")))?;
        // The config rebuilds the model, so it is checked before it is believed: a
        // size no flag would accept, or a model larger than the weights the file
        // holds, is an error here, not an allocation that fails later.
        config.validate().map_err(|e| bad(format!("the config in the metadata is refused: {e}")))?;
        let parameters = config.model.parameter_count();
        for (part, weights) in [("model", &checkpoint.model), ("EMA", &checkpoint.ema)] {
            let held: u64 = weights.iter().map(|(_, w)| w.elem_count() as u64).sum();
            if !weights.is_empty() && held != parameters {
                return Err(bad(format!("its config describes a model of {parameters} parameters, but its {part} weights hold {held}")));
            }
        }
        Ok(Loaded { path, config, step, checkpoint })
    }

    /// The model with the EMA weights (or the raw weights with `raw`).
    ///
    /// # Errors
    /// Weights that do not fit the config's architecture (names the parameter).
    pub fn model(&self, raw: bool) -> Result<Model> {
        let mut model = Model::new(&self.config.model, self.config.seed)?;
        let weights = if raw || self.checkpoint.ema.is_empty() { &self.checkpoint.model } else { &self.checkpoint.ema };
        model.load_named_params(weights).map_err(|e| Error::Format {
            file: self.path.display().to_string(),
            offset: 0,
            reason: format!("the weights do not fit the model of its config: {e}"),
        })?;
        model.set_mode(Mode::Eval);
        Ok(model)
    }
}
