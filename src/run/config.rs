//! The fully resolved configuration of a training run: a preset, overridden by the
//! flags given. It is saved as `config.json` in the run folder and inside every
//! checkpoint, so a checkpoint alone says how to rebuild its model and schedule.

use crate::error::{Error, Result};
use clap::ValueEnum;
use ddpm::{
    BetaSchedule, LossKind, NoiseSchedule, Parameterization, ReverseOptions, TimestepSampling, TimestepWeighting, TrainingOptions,
    VarianceKind,
};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The starting values of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// A small UNet on MNIST that finishes in at most 10 minutes on 2 cores.
    Quick,
    /// The course UNet (1.6M parameters) on MNIST, the full run.
    Course,
    /// An MLP on the swiss roll, under a minute.
    Toy,
}

/// The training data: MNIST digits or a 2-D toy set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dataset {
    Mnist,
    SwissRoll,
    TwoMoons,
    EightGaussians,
    Checkerboard,
}

/// The kind of noise predictor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    Unet,
    Mlp,
}

/// The learning rate after the warmup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrScheduleKind {
    /// Warmup, then the peak rate to the end.
    #[default]
    Constant,
    /// Warmup, then a half cosine down to 0 at the last step.
    Cosine,
}

/// The weight of each timestep's error in L_simple, as the command line names it
/// (the `ddpm` crate's [`TimestepWeighting`] with `--min-snr-gamma`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossWeightKind {
    /// Every timestep alike (L_simple).
    #[default]
    Uniform,
    /// Min-SNR-gamma: the nearly clean timesteps weigh less (see --min-snr-gamma).
    MinSnr,
}

/// `config.json` spells the `ddpm` crate's choices by their names (`Display` and
/// `FromStr`), the names the command line accepts.
mod by_name {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub fn deserialize<'de, T: FromStr, D: Deserializer<'de>>(deserializer: D) -> Result<T, D::Error>
    where
        T::Err: Display,
    {
        String::deserialize(deserializer)?.parse().map_err(D::Error::custom)
    }
}

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

impl ModelConfig {
    /// How many parameters the model has, from its sizes alone (saturating).
    #[must_use]
    pub fn parameter_count(&self) -> u64 {
        match self {
            ModelConfig::Unet(unet) => unet.parameter_count(),
            ModelConfig::Mlp(mlp) => mlp.parameter_count(),
        }
    }
}

/// Everything that determines a training run. Same config and seed, same weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub data: Dataset,
    pub model: ModelConfig,
    #[serde(with = "by_name")]
    pub schedule: BetaSchedule,
    pub timesteps: usize,
    #[serde(with = "by_name")]
    pub loss: LossKind,
    pub hybrid_lambda: f64,
    #[serde(with = "by_name")]
    pub variance: VarianceKind,
    #[serde(with = "by_name")]
    pub prediction: Parameterization,
    pub batch: usize,
    pub lr: f64,
    pub warmup: usize,
    /// The fields marked `default` came after the first runs were saved: a config
    /// without them reads as the recipe those runs used.
    #[serde(default)]
    pub lr_schedule: LrScheduleKind,
    #[serde(default)]
    pub loss_weight: LossWeightKind,
    #[serde(default = "default_min_snr_gamma")]
    pub min_snr_gamma: f64,
    #[serde(default, with = "by_name")]
    pub timestep_sampling: TimestepSampling,
    pub grad_clip: f64,
    /// Adam's second-moment decay: how many recent steps the per-weight scale of the
    /// update averages over (about 1 / (1 - beta2)).
    #[serde(default = "default_adam_beta2")]
    pub adam_beta2: f64,
    pub ema_decay: f64,
    #[serde(default)]
    pub ema_warmup: bool,
    /// Fresh UNet weights with the last layer of every residual and attention
    /// branch, and the output convolution, at zero (`nn::UNet::zero_branch_outputs`).
    #[serde(default)]
    pub zero_init: bool,
    pub steps: usize,
    /// Seconds; 0 for no budget.
    pub time_budget: f64,
    pub seed: u64,
    pub checkpoint_every: usize,
    pub sample_every: usize,
    pub samples: usize,
    /// A trained model to start from instead of fresh weights (its EMA weights, with
    /// a new optimizer and EMA): fine-tuning. `None` in every config written before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
}

/// Hang et al.'s gamma.
fn default_min_snr_gamma() -> f64 {
    5.0
}

/// Kingma & Ba's (and PyTorch's) beta2.
fn default_adam_beta2() -> f64 {
    0.999
}

impl TrainConfig {
    /// The UNet the quick preset trains (what `ddpm bench` and the criterion
    /// bench time as the quick preset's step).
    #[must_use]
    pub fn quick_unet() -> nn::UNetConfig {
        match TrainConfig::preset(Preset::Quick).model {
            ModelConfig::Unet(unet) => unet,
            ModelConfig::Mlp(_) => unreachable!("the quick preset trains a UNet"),
        }
    }

    /// The starting values of a preset.
    #[must_use]
    pub fn preset(preset: Preset) -> Self {
        let mnist_base = TrainConfig {
            data: Dataset::Mnist,
            model: ModelConfig::Unet(nn::UNetConfig::default()),
            schedule: BetaSchedule::Linear,
            timesteps: 1000,
            loss: LossKind::Simple,
            hybrid_lambda: ddpm::HYBRID_LAMBDA,
            variance: VarianceKind::FixedLarge,
            prediction: Parameterization::Epsilon,
            batch: 64,
            lr: 1e-3,
            warmup: 100,
            lr_schedule: LrScheduleKind::Constant,
            loss_weight: LossWeightKind::Uniform,
            min_snr_gamma: default_min_snr_gamma(),
            timestep_sampling: TimestepSampling::Uniform,
            grad_clip: 1.0,
            adam_beta2: default_adam_beta2(),
            ema_decay: 0.999,
            ema_warmup: false,
            zero_init: false,
            steps: 2000,
            time_budget: 0.0,
            seed: 0,
            checkpoint_every: 500,
            sample_every: 0,
            samples: 64,
            init: None,
        };
        match preset {
            // A 16-channel UNet (236,321 parameters) and a recipe for what ten minutes on
            // two cores buy (chapter 8, "The quick preset's recipe"; each choice is a row
            // of chapter 10's tables, measured in the same time): a higher peak rate that a
            // cosine decay settles by the last step, an EMA whose decay warms up so the
            // random start does not linger in the average (the warm-up's decay stays below
            // `ema_decay` until update 1,790, so it sets all but the last 910 of 2,700;
            // chapter 10), min-SNR weighting so the nearly clean timesteps do not dominate
            // the gradient, one residual block a level instead of two, which makes a step
            // 1.44 times cheaper (in a run this short more steps beat more depth), 16
            // channels at 14 x 14 where the course UNet has 32 (`channel_mults` 1, 1, 2:
            // a step 1.26-1.28 times cheaper, and over training seeds 0-3 the 2,520 steps
            // of the same time recognised 2.0 points more on average and scored an FID 3.7
            // lower; chapter 10, "Where the channels go"), the cosine noise schedule,
            // which at 1,400 steps recognised 3.4 and 3.8 points more than the linear one
            // (training seeds 0 and 1; 3.4 at 1,600; nothing at 2,400), and logit-normal
            // timesteps, which spend the batches on the middle noise levels (over
            // training seeds 0-5, 1.42 points more recognised than uniform ones, each seed
            // 0.0 to 3.1 points ahead, FID 3.6 lower with a standard error of 2.5; chapter
            // 10, "Three more settings at 2,520 steps"; no cost in time). 2,700 steps are
            // sized to fit the ten minutes on the slowest machine measured (an estimate: it
            // has not been measured since session 14), an Intel Xeon (AVX-512, FMA peak
            // 330 GFLOP/s) whose speed moves with its neighbours and which builds a fresh
            // clone in 80-99 s: with session 11's kernels it trained 1,100 steps at 4.3 a
            // second where session 10's did 3.15 (and 2.39 in a slow hour, when 1,200 steps
            // took 10 min 9 s in all), 1.25-1.5 times faster; this code trains this UNet
            // 1.90-1.96 times as fast as session 11's code trained its preset's 1, 2, 2 UNet
            // (three alternations of 300 steps on the other Intel Xeon, session 42), so at
            // that slow rate sped up as measured (by the smallest factor) 2,700 steps take 8
            // min 15 s to 9 min 34 s with a 99 s build (chapter 10, "How many steps ten
            // minutes hold"). A fixed length, not a clock, so the run is reproducible.
            Preset::Quick => TrainConfig {
                model: ModelConfig::Unet(nn::UNetConfig {
                    base_channels: 16,
                    channel_mults: vec![1, 1, 2],
                    num_res_blocks: 1,
                    ..nn::UNetConfig::default()
                }),
                schedule: BetaSchedule::Cosine,
                lr: 2e-3,
                lr_schedule: LrScheduleKind::Cosine,
                loss_weight: LossWeightKind::MinSnr,
                timestep_sampling: TimestepSampling::LogitNormal,
                ema_decay: 0.995,
                ema_warmup: true,
                steps: 2700,
                ..mnist_base
            },
            // The course UNet (1,623,169 parameters), sized for what two CPU cores
            // buy: at about 0.52 s a step (AVX-512, measured), 8,000 steps of batch
            // 64 take 70 minutes. The DDPM paper's EMA decay of 0.9999 averages
            // over 10,000 steps, more than the whole run, so the window here is
            // 1,000 steps (0.999).
            Preset::Course => TrainConfig { warmup: 200, steps: 8000, checkpoint_every: 500, sample_every: 1000, ..mnist_base },
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

    /// The data size of the MLP (`None` for the UNet).
    #[must_use]
    pub fn model_data_dim(&self) -> Option<usize> {
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
        if !(2..=NoiseSchedule::MAX_TIMESTEPS).contains(&self.timesteps) {
            return Err(invalid("--timesteps", &format!("must be from 2 to {}, got {}", NoiseSchedule::MAX_TIMESTEPS, self.timesteps)));
        }
        let positive = [("--batch", self.batch), ("--steps", self.steps), ("--checkpoint-every", self.checkpoint_every)];
        for (flag, v) in positive {
            if v == 0 {
                return Err(invalid(flag, "must be at least 1"));
            }
        }
        crate::run::validate::sample_count("--samples", self.samples, 1)?;
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(invalid("--lr", &format!("must be a positive number, got {}", self.lr)));
        }
        // Decays of running means: 1 would never move from the start.
        for (flag, decay) in [("--adam-beta2", self.adam_beta2), ("--ema-decay", self.ema_decay)] {
            if !(0.0..1.0).contains(&decay) {
                return Err(invalid(flag, &format!("must be in [0, 1), got {decay}")));
            }
        }
        for (flag, v) in [("--grad-clip", self.grad_clip), ("--time-budget", self.time_budget), ("--hybrid-lambda", self.hybrid_lambda)] {
            crate::run::validate::finite_non_negative(flag, v)?;
        }
        if let ModelConfig::Mlp(mlp) = &self.model {
            for (flag, v) in [("--hidden", mlp.hidden_dim), ("--depth", mlp.depth)] {
                if v == 0 {
                    return Err(invalid(flag, "must be at least 1"));
                }
            }
            if self.zero_init {
                return Err(invalid("--zero-init", "it zeroes the UNet's residual branches; the MLP has none (use --zero-init false)"));
            }
        }
        if !(self.min_snr_gamma > 0.0 && self.min_snr_gamma.is_finite()) {
            return Err(invalid("--min-snr-gamma", &format!("must be a positive number, got {}", self.min_snr_gamma)));
        }
        if self.schedule == BetaSchedule::Linear && self.timesteps <= 20 {
            return Err(invalid("--timesteps", "the linear schedule needs T > 20 (beta_T = 20 / T must stay below 1)"));
        }
        if let ModelConfig::Unet(unet) = &self.model {
            unet.validate().map_err(|e| invalid("--base-channels/--channel-mults/--res-blocks", &e.to_string()))?;
        }
        // The model takes the data's examples as they are: MNIST's 1 x 28 x 28
        // images (flattened to 784 for the MLP), a toy set's 2-D points.
        let example = self.example_dims();
        let fits = match (self.data, &self.model) {
            (Dataset::Mnist, ModelConfig::Unet(_)) => example == [1, 28, 28],
            (Dataset::Mnist, ModelConfig::Mlp(_)) => example == [784],
            (_, ModelConfig::Unet(_)) => false,
            (_, ModelConfig::Mlp(_)) => example == [2],
        };
        if !fits {
            let data = self.data.to_possible_value().map_or_else(|| format!("{:?}", self.data), |v| v.get_name().to_string());
            return Err(invalid("--model", &format!("a model of examples {example:?} cannot train on --data {data}")));
        }
        let parameters = self.model.parameter_count();
        if parameters > MAX_PARAMETERS {
            let flags = match self.model {
                ModelConfig::Unet(_) => "--base-channels/--channel-mults/--res-blocks",
                ModelConfig::Mlp(_) => "--hidden/--depth",
            };
            let count = if parameters == u64::MAX { "more than 2^64".to_string() } else { parameters.to_string() };
            return Err(invalid(flags, &format!("the model would have {count} parameters; at most {MAX_PARAMETERS} are allowed")));
        }
        Ok(())
    }

    /// The run's optimizer: AdamW without weight decay, PyTorch's beta1 and eps, and
    /// this config's `lr` and `adam_beta2`.
    #[must_use]
    pub fn optimizer<T: tensor::Float>(&self) -> nn::Adam<T> {
        let mut adam = nn::Adam::adamw(self.lr, 0.0);
        adam.hyper.beta2 = self.adam_beta2;
        adam
    }

    /// The training objective of the `ddpm` crate.
    #[must_use]
    pub fn training_options(&self) -> TrainingOptions {
        let weighting = match self.loss_weight {
            LossWeightKind::Uniform => TimestepWeighting::Uniform,
            LossWeightKind::MinSnr => TimestepWeighting::MinSnr { gamma: self.min_snr_gamma },
        };
        TrainingOptions {
            loss: self.loss,
            parameterization: self.prediction,
            variance: self.variance,
            weighting,
            hybrid_lambda: self.hybrid_lambda,
            timestep_sampling: self.timestep_sampling,
        }
    }

    /// The learning rate of update number `step` (1-based).
    #[must_use]
    pub fn lr_at(&self, step: usize) -> f64 {
        let warmup = nn::LinearWarmup { base_lr: self.lr, warmup_steps: self.warmup as u64 };
        match self.lr_schedule {
            LrScheduleKind::Constant => warmup.lr_at(step as u64),
            LrScheduleKind::Cosine => nn::WarmupCosine { warmup, total_steps: self.steps as u64 }.lr_at(step as u64),
        }
    }

    /// p_theta(x_{t-1} | x_t) of this run: its variance and parameterisation.
    #[must_use]
    pub fn reverse_options(&self, clip_denoised: bool) -> ReverseOptions {
        ReverseOptions { variance: self.variance, parameterization: self.prediction, clip_denoised }
    }

    /// The noise schedule.
    ///
    /// # Errors
    /// A schedule the `ddpm` crate refuses.
    pub fn noise_schedule(&self) -> Result<NoiseSchedule> {
        Ok(NoiseSchedule::new(self.schedule, self.timesteps)?)
    }

    /// The settings that differ from `saved` and may not when a run resumes: every
    /// one that changes the math (all but the step budget and the outputs), by the
    /// name of its flag (`--model` for any setting of the model).
    #[must_use]
    pub fn fixed_on_resume(&self, saved: &TrainConfig) -> Vec<String> {
        const MAY_CHANGE: [&str; 5] = ["steps", "time_budget", "checkpoint_every", "sample_every", "samples"];
        let (now, before) = (serde_json::to_value(self), serde_json::to_value(saved));
        let (Ok(serde_json::Value::Object(now)), Ok(before)) = (now, before) else {
            return vec!["config.json".into()];
        };
        now.iter()
            .filter(|(key, value)| !MAY_CHANGE.contains(&key.as_str()) && before.get(key.as_str()) != Some(*value))
            .map(|(key, _)| format!("--{}", key.replace('_', "-")))
            .collect()
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

/// The most parameters a model may have: 4 GiB of f32 weights, which training holds
/// five times over (the weights, their gradient, Adam's two moments and the EMA),
/// beyond the memory of the machines this course runs on. A size from a flag or a
/// checkpoint is checked against it before any buffer is made.
pub const MAX_PARAMETERS: u64 = 1 << 30;

fn invalid(what: &'static str, reason: &str) -> Error {
    Error::InvalidArgument { what, reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_round_trip_and_spelling() {
        let c = TrainConfig::preset(Preset::Course);
        let json = serde_json::to_string(&c).unwrap();
        let back: TrainConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        // The spelling of the config files written before the kinds moved to `ddpm`.
        for field in
            [r#""schedule":"linear""#, r#""loss":"simple""#, r#""variance":"fixed-large""#, r#""prediction":"eps""#, r#""data":"mnist""#]
        {
            assert!(json.contains(field), "{field} not in {json}");
        }
    }

    /// The recipes the README's preset table and chapter 8 describe, with the
    /// parameter counts they quote.
    #[test]
    fn presets_are_the_recipes_the_course_documents() {
        use crate::run::model::Model;
        use nn::Module;
        let params = |c: &TrainConfig| Model::new(&c.model, 0).unwrap().num_params();
        let quick = TrainConfig::preset(Preset::Quick);
        assert_eq!(
            (quick.schedule, quick.lr, quick.lr_schedule, quick.loss_weight),
            (BetaSchedule::Cosine, 2e-3, LrScheduleKind::Cosine, LossWeightKind::MinSnr)
        );
        assert_eq!((quick.min_snr_gamma, quick.ema_decay, quick.ema_warmup, quick.steps, quick.batch), (5.0, 0.995, true, 2700, 64));
        assert_eq!(quick.timestep_sampling, TimestepSampling::LogitNormal);
        assert_eq!(params(&quick), 236_321);
        assert!(matches!(&quick.model, ModelConfig::Unet(unet) if unet.channel_mults == [1, 1, 2]));
        assert_eq!(ModelConfig::Unet(TrainConfig::quick_unet()), quick.model);
        let course = TrainConfig::preset(Preset::Course);
        assert_eq!((course.warmup, course.steps, course.checkpoint_every, course.sample_every), (200, 8000, 500, 1000));
        assert_eq!((course.ema_decay, course.lr, course.schedule), (0.999, 1e-3, BetaSchedule::Linear));
        assert_eq!(params(&course), 1_623_169);
        let toy = TrainConfig::preset(Preset::Toy);
        assert_eq!((toy.data, toy.batch, toy.lr, toy.warmup, toy.ema_decay), (Dataset::SwissRoll, 256, 1e-3, 100, 0.995));
        assert_eq!((toy.steps, toy.checkpoint_every, toy.samples, toy.model_data_dim()), (10_000, 1000, 1000, Some(2)));
        assert!(matches!(toy.model, ModelConfig::Mlp(nn::MlpConfig { hidden_dim: 256, .. })));
        assert_eq!(quick.model_data_dim(), None);
        for (preset, dir) in [(Preset::Quick, "runs/quick"), (Preset::Course, "runs/course"), (Preset::Toy, "runs/toy")] {
            assert_eq!(TrainConfig::default_run_dir(preset), PathBuf::from(dir));
        }
    }

    #[test]
    fn the_objective_and_the_reverse_process_come_from_the_config() {
        let quick = TrainConfig { min_snr_gamma: 3.0, prediction: Parameterization::StartX, ..TrainConfig::preset(Preset::Quick) };
        let options = quick.training_options();
        assert_eq!(options.weighting, TimestepWeighting::MinSnr { gamma: 3.0 });
        assert_eq!(
            (options.loss, options.parameterization, options.variance),
            (LossKind::Simple, Parameterization::StartX, VarianceKind::FixedLarge)
        );
        let uniform = TrainConfig { loss_weight: LossWeightKind::Uniform, ..quick.clone() };
        assert_eq!(uniform.training_options().weighting, TimestepWeighting::Uniform);
        let reverse = quick.reverse_options(true);
        assert_eq!(
            (reverse.variance, reverse.parameterization, reverse.clip_denoised),
            (VarianceKind::FixedLarge, Parameterization::StartX, true)
        );
    }

    /// A config saved before `adam_beta2` existed reads as the Adam those runs
    /// used (PyTorch's 0.999), and the run's optimizer takes the config's value.
    #[test]
    fn adam_s_beta2_comes_from_the_config_and_defaults_to_pytorch_s() {
        let quick = TrainConfig::preset(Preset::Quick);
        let mut json = serde_json::to_value(&quick).unwrap();
        json.as_object_mut().unwrap().remove("adam_beta2").expect("the config names adam_beta2");
        let old: TrainConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old.adam_beta2, 0.999);
        let fast = TrainConfig { adam_beta2: 0.95, lr: 3e-3, ..quick };
        let adam = fast.optimizer::<f32>().hyper;
        assert_eq!((adam.lr, adam.beta1, adam.beta2, adam.eps), (3e-3, 0.9, 0.95, 1e-8));
        assert_eq!(adam.weight_decay, nn::WeightDecay::Decoupled(0.0));
    }

    #[test]
    fn a_setting_out_of_range_or_a_model_that_does_not_fit_is_refused() {
        for preset in [Preset::Quick, Preset::Course, Preset::Toy] {
            assert!(TrainConfig::preset(preset).validate().is_ok(), "{preset:?}");
        }
        let quick = TrainConfig::preset(Preset::Quick);
        for (config, flag) in [
            (TrainConfig { lr: 0.0, ..quick.clone() }, "--lr"),
            (TrainConfig { lr: f64::INFINITY, ..quick.clone() }, "--lr"),
            (TrainConfig { adam_beta2: 1.0, ..quick.clone() }, "--adam-beta2"),
            (TrainConfig { adam_beta2: -0.5, ..quick.clone() }, "--adam-beta2"),
            (TrainConfig { adam_beta2: f64::NAN, ..quick.clone() }, "--adam-beta2"),
            (TrainConfig { min_snr_gamma: 0.0, ..quick.clone() }, "--min-snr-gamma"),
            (TrainConfig { min_snr_gamma: f64::INFINITY, ..quick.clone() }, "--min-snr-gamma"),
            (TrainConfig { checkpoint_every: 0, ..quick.clone() }, "--checkpoint-every"),
            (TrainConfig { timesteps: 1, ..quick.clone() }, "--timesteps"),
            (TrainConfig { timesteps: usize::MAX, ..quick.clone() }, "--timesteps"),
            (TrainConfig { data: Dataset::SwissRoll, ..quick.clone() }, "--model"),
            (TrainConfig { model: ModelConfig::Mlp(nn::MlpConfig::toy_2d()), ..quick.clone() }, "--model"),
            (
                TrainConfig { model: ModelConfig::Unet(nn::UNetConfig { image_size: 32, ..nn::UNetConfig::default() }), ..quick.clone() },
                "--model",
            ),
            (
                TrainConfig {
                    model: ModelConfig::Unet(nn::UNetConfig { base_channels: 1 << 20, ..nn::UNetConfig::default() }),
                    ..quick.clone()
                },
                "--base-channels",
            ),
            (
                TrainConfig { model: ModelConfig::Mlp(nn::MlpConfig { hidden_dim: 1 << 40, ..nn::MlpConfig::mnist() }), ..quick.clone() },
                "--hidden",
            ),
        ] {
            let e = config.validate().unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
    }

    #[test]
    fn resume_names_the_settings_that_changed() {
        let saved = TrainConfig::preset(Preset::Quick);
        let budget = TrainConfig { steps: 9, time_budget: 1.0, samples: 4, ..saved.clone() };
        assert!(budget.fixed_on_resume(&saved).is_empty());
        let math =
            TrainConfig { lr: 0.5, variance: VarianceKind::FixedSmall, model: ModelConfig::Mlp(nn::MlpConfig::toy_2d()), ..saved.clone() };
        assert_eq!(math.fixed_on_resume(&saved), ["--lr", "--model", "--variance"]);
    }
}
