//! The fully resolved configuration of a training run: a preset, overridden by the
//! flags given. It is saved as `config.json` in the run folder and inside every
//! checkpoint, so a checkpoint alone says how to rebuild its model and schedule.

use crate::cli::{Dataset, LossKind, ModelKind, PredictionKind, Preset, ScheduleKind, TrainArgs, VarianceKind};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The architecture of the noise predictor: the `nn` crate's own configs, saved
/// in the run's JSON with a `kind` tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ModelConfig {
    /// The UNet of the course.
    Unet(nn::UNetConfig),
    /// The MLP denoiser of the course notes.
    Mlp(nn::MlpConfig),
}

/// Everything that determines a training run. Same config and seed, same weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub data: Dataset,
    pub model: ModelConfig,
    pub schedule: ScheduleKind,
    pub timesteps: usize,
    pub loss: LossKind,
    pub hybrid_lambda: f64,
    pub variance: VarianceKind,
    pub prediction: PredictionKind,
    pub batch: usize,
    pub lr: f64,
    pub warmup: usize,
    pub grad_clip: f64,
    pub ema_decay: f64,
    pub steps: usize,
    /// Seconds; 0 for no budget.
    pub time_budget: f64,
    pub seed: u64,
    pub checkpoint_every: usize,
    pub sample_every: usize,
    pub samples: usize,
}

impl TrainConfig {
    /// The starting values of a preset.
    #[must_use]
    pub fn preset(preset: Preset) -> Self {
        let mnist_base = TrainConfig {
            data: Dataset::Mnist,
            model: ModelConfig::Unet(nn::UNetConfig::default()),
            schedule: ScheduleKind::Linear,
            timesteps: 1000,
            loss: LossKind::Simple,
            hybrid_lambda: 0.001,
            variance: VarianceKind::FixedLarge,
            prediction: PredictionKind::Eps,
            batch: 64,
            lr: 1e-3,
            warmup: 100,
            grad_clip: 1.0,
            ema_decay: 0.999,
            steps: 2000,
            time_budget: 0.0,
            seed: 0,
            checkpoint_every: 500,
            sample_every: 0,
            samples: 64,
        };
        match preset {
            // A 16-channel UNet (453,825 parameters), small enough to learn digit
            // shapes in the steps that ten minutes on two cores buy. The EMA window
            // is short (decay 0.995, about 200 steps): after 1000 steps a decay of
            // 0.999 still holds 0.999^1000 = 37% of the random initialisation, and
            // its samples were blots where the raw weights already drew digits
            // (measured).
            Preset::Quick => TrainConfig {
                ema_decay: 0.995,
                model: ModelConfig::Unet(nn::UNetConfig { base_channels: 16, ..nn::UNetConfig::default() }),
                // About 0.19 s a step on two AVX-512 cores (0.44 s on AVX2): 2000
                // steps and the final samples take under seven minutes. The budget
                // is a safety net for a slower machine (a run it cuts short is no
                // longer reproducible).
                steps: 2000,
                time_budget: 560.0,
                ..mnist_base
            },
            // The course UNet (1,623,169 parameters), sized for what two CPU cores
            // buy: at about 0.52 s a step (AVX-512, measured), 8,000 steps of batch
            // 64 take 70 minutes. The DDPM paper's EMA decay of 0.9999 averages
            // over 10,000 steps, more than the whole run, so the window here is
            // 1,000 steps (0.999).
            Preset::Course => TrainConfig {
                warmup: 200,
                steps: 8000,
                checkpoint_every: 500,
                sample_every: 1000,
                ..mnist_base
            },
            // Measured: hidden 128 / T = 200 / 4000 steps leaves a diffuse cloud;
            // hidden 256 with T = 1000 draws a sharp spiral and still runs in
            // well under a minute.
            Preset::Toy => TrainConfig {
                data: Dataset::SwissRoll,
                model: ModelConfig::Mlp(nn::MlpConfig { hidden_dim: 256, ..nn::MlpConfig::toy_2d() }),
                batch: 256,
                lr: 1e-3,
                warmup: 100,
                ema_decay: 0.995,
                steps: 10_000,
                checkpoint_every: 1000,
                samples: 1000,
                ..mnist_base
            },
        }
    }

    /// The preset of `args`, overridden by every flag that was given.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the flag when a value is out of range or
    /// does not fit the chosen model or data.
    pub fn from_args(args: &TrainArgs) -> Result<Self> {
        let mut c = TrainConfig::preset(args.preset);
        if let Some(data) = args.data {
            c.data = data;
        }
        // Changing the data between MNIST and a toy set also changes the model's
        // input, so the model follows the data unless it is chosen explicitly.
        let kind = args.model.unwrap_or(match (&c.model, c.data) {
            (_, Dataset::Mnist) if args.data.is_some() => ModelKind::Unet,
            (_, d) if d != Dataset::Mnist => ModelKind::Mlp,
            (ModelConfig::Unet(_), _) => ModelKind::Unet,
            (ModelConfig::Mlp(_), _) => ModelKind::Mlp,
        });
        c.model = match (kind, &c.model) {
            (ModelKind::Unet, ModelConfig::Unet(_)) => c.model.clone(),
            (ModelKind::Unet, _) => ModelConfig::Unet(nn::UNetConfig::default()),
            (ModelKind::Mlp, ModelConfig::Mlp(_)) if (c.data == Dataset::Mnist) == (c.model_data_dim() == Some(784)) => c.model.clone(),
            (ModelKind::Mlp, _) if c.data == Dataset::Mnist => ModelConfig::Mlp(nn::MlpConfig::mnist()),
            (ModelKind::Mlp, _) => ModelConfig::Mlp(nn::MlpConfig::toy_2d()),
        };
        match &mut c.model {
            ModelConfig::Unet(unet) => {
                if let Some(b) = args.base_channels {
                    unet.base_channels = b;
                }
                if let Some(m) = &args.channel_mults {
                    unet.channel_mults = m.clone();
                }
                if args.hidden.is_some() || args.depth.is_some() {
                    return Err(invalid("--hidden/--depth", "they set the MLP; the model is the UNet (use --model mlp)"));
                }
            }
            ModelConfig::Mlp(mlp) => {
                if let Some(h) = args.hidden {
                    mlp.hidden_dim = h;
                }
                if let Some(d) = args.depth {
                    mlp.depth = d;
                }
                if args.base_channels.is_some() || args.channel_mults.is_some() {
                    return Err(invalid("--base-channels/--channel-mults", "they set the UNet; the model is the MLP (use --model unet)"));
                }
            }
        }
        if kind == ModelKind::Unet && c.data != Dataset::Mnist {
            return Err(invalid("--model", "the UNet takes 28x28 images; use --model mlp for 2-D toy data"));
        }
        macro_rules! take {
            ($($field:ident),*) => { $(if let Some(v) = args.$field.clone() { c.$field = v; })* };
        }
        take!(schedule, timesteps, loss, hybrid_lambda, variance, prediction, batch, lr, warmup, grad_clip, ema_decay, steps, time_budget, seed, checkpoint_every, sample_every, samples);
        c.validate()?;
        Ok(c)
    }

    fn model_data_dim(&self) -> Option<usize> {
        match &self.model {
            ModelConfig::Mlp(mlp) => Some(mlp.data_dim),
            ModelConfig::Unet(_) => None,
        }
    }

    /// Checks every value's range.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the flag.
    pub fn validate(&self) -> Result<()> {
        let positive = [("--timesteps", self.timesteps), ("--batch", self.batch), ("--steps", self.steps), ("--samples", self.samples)];
        for (flag, v) in positive {
            if v == 0 {
                return Err(invalid(flag, "must be at least 1"));
            }
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(invalid("--lr", &format!("must be a positive number, got {}", self.lr)));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(invalid("--ema-decay", &format!("must be in [0, 1), got {}", self.ema_decay)));
        }
        for (flag, v) in [("--grad-clip", self.grad_clip), ("--time-budget", self.time_budget), ("--hybrid-lambda", self.hybrid_lambda)] {
            crate::validate::finite_non_negative(flag, v)?;
        }
        if let ModelConfig::Mlp(mlp) = &self.model {
            for (flag, v) in [("--hidden", mlp.hidden_dim), ("--depth", mlp.depth)] {
                if v == 0 {
                    return Err(invalid(flag, "must be at least 1"));
                }
            }
        }
        if self.schedule == ScheduleKind::Linear && self.timesteps <= 20 {
            return Err(invalid("--timesteps", "the linear schedule needs T > 20 (beta_T = 20 / T must stay below 1)"));
        }
        if let ModelConfig::Unet(unet) = &self.model {
            unet.validate().map_err(|e| invalid("--base-channels/--channel-mults", &e.to_string()))?;
        }
        Ok(())
    }

    /// The diffusion options of the `ddpm` crate.
    #[must_use]
    pub fn training_options(&self) -> ddpm::loss::TrainingOptions {
        ddpm::loss::TrainingOptions {
            loss: match self.loss {
                LossKind::Simple => ddpm::loss::LossKind::Simple,
                LossKind::Vlb => ddpm::loss::LossKind::Vlb,
                LossKind::Hybrid => ddpm::loss::LossKind::Hybrid { lambda: self.hybrid_lambda },
            },
            parameterization: self.parameterization(),
            variance: self.variance_kind(),
        }
    }

    /// Eps or x_0 prediction, as the `ddpm` crate names it.
    #[must_use]
    pub fn parameterization(&self) -> ddpm::reverse::Parameterization {
        match self.prediction {
            PredictionKind::Eps => ddpm::reverse::Parameterization::Epsilon,
            PredictionKind::X0 => ddpm::reverse::Parameterization::StartX,
        }
    }

    /// sigma_t^2 = beta_t or beta-tilde_t.
    #[must_use]
    pub fn variance_kind(&self) -> ddpm::reverse::VarianceKind {
        match self.variance {
            VarianceKind::FixedLarge => ddpm::reverse::VarianceKind::FixedLarge,
            VarianceKind::FixedSmall => ddpm::reverse::VarianceKind::FixedSmall,
        }
    }

    /// The noise schedule.
    ///
    /// # Errors
    /// A schedule the `ddpm` crate refuses.
    pub fn noise_schedule(&self) -> Result<ddpm::schedule::NoiseSchedule> {
        let kind = match self.schedule {
            ScheduleKind::Linear => ddpm::schedule::BetaSchedule::Linear,
            ScheduleKind::Cosine => ddpm::schedule::BetaSchedule::Cosine,
        };
        Ok(ddpm::schedule::NoiseSchedule::new(kind, self.timesteps)?)
    }

    /// The shape of one training example: `[1, 28, 28]` for the UNet, `[D]` for the MLP.
    #[must_use]
    pub fn example_dims(&self) -> Vec<usize> {
        match &self.model {
            ModelConfig::Unet(unet) => vec![unet.image_channels, unet.image_size, unet.image_size],
            ModelConfig::Mlp(mlp) => vec![mlp.data_dim],
        }
    }

    /// The default run folder of a preset: `runs/<preset>`.
    #[must_use]
    pub fn default_run_dir(preset: Preset) -> PathBuf {
        let name = match preset {
            Preset::Quick => "quick",
            Preset::Course => "course",
            Preset::Toy => "toy",
        };
        PathBuf::from("runs").join(name)
    }
}

fn invalid(what: &'static str, reason: &str) -> Error {
    Error::InvalidArgument { what, reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<TrainConfig> {
        let cli = crate::cli::Cli::try_parse_from(std::iter::once("ddpm").chain(std::iter::once("train")).chain(args.iter().copied())).unwrap();
        match cli.command {
            crate::cli::Command::Train(t) => TrainConfig::from_args(&t),
            _ => unreachable!(),
        }
    }

    #[test]
    fn quick_preset_is_a_small_unet_on_mnist() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.data, Dataset::Mnist);
        assert!(matches!(&c.model, ModelConfig::Unet(unet) if unet.base_channels == 16));
    }

    #[test]
    fn flags_override_the_preset_and_the_model_follows_the_data() {
        let c = parse(&["--data", "two-moons", "--steps", "7", "--lr", "0.01"]).unwrap();
        assert_eq!((c.steps, c.lr), (7, 0.01));
        assert!(matches!(&c.model, ModelConfig::Mlp(mlp) if mlp.data_dim == 2));
        let c = parse(&["--preset", "toy", "--data", "mnist"]).unwrap();
        assert!(matches!(c.model, ModelConfig::Unet(_)));
        let c = parse(&["--model", "mlp"]).unwrap();
        assert!(matches!(&c.model, ModelConfig::Mlp(mlp) if mlp.data_dim == 784));
    }

    #[test]
    fn bad_values_name_the_flag() {
        assert!(parse(&["--batch", "0"]).unwrap_err().to_string().contains("--batch"));
        assert!(parse(&["--ema-decay", "1.5"]).unwrap_err().to_string().contains("--ema-decay"));
        assert!(parse(&["--data", "swiss-roll", "--model", "unet"]).unwrap_err().to_string().contains("--model"));
        assert!(parse(&["--hidden", "4"]).unwrap_err().to_string().contains("--hidden"));
        assert!(parse(&["--timesteps", "20"]).unwrap_err().to_string().contains("--timesteps"));
    }

    #[test]
    fn config_json_round_trip() {
        let c = TrainConfig::preset(Preset::Course);
        let back: TrainConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
