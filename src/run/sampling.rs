//! Drawing samples from a trained model and saving them as pictures: a PNG grid
//! for images, a scatter plot beside the data for 2-D toy sets.

use crate::error::Result;
use crate::render::image::save_grid;
use crate::render::plot::{Plot, Series};
use crate::render::raster::save_png;
use crate::run::config::{Dataset, TrainConfig};
use crate::run::model::Model;
use crate::run::progress::Progress;
use crate::run::watched::Watched;
use ddpm::sampler::{sample_ancestral_respaced, sample_ddim, sample_langevin, DdimOptions, LangevinOptions, Trajectory};
use ddpm::schedule::evenly_spaced_timesteps;
use std::path::Path;
use tensor::rng;

/// The sampling algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SamplerKind {
    /// Ancestral sampling, Algorithm 2 of Ho et al.
    Ddpm,
    /// DDIM (Song et al. 2021) on a subsequence of timesteps.
    Ddim,
    /// Annealed Langevin dynamics driven by the score -eps / sqrt(1 - alpha_bar_t).
    Langevin,
}

/// How to sample.
#[derive(Clone, Copy, Debug)]
pub struct SamplerChoice {
    pub kind: SamplerKind,
    /// Timesteps used (DDIM and ancestral sampling, evenly spaced) or noise levels
    /// visited (Langevin); `None` for all T of the model's.
    pub steps: Option<usize>,
    /// DDIM's eta.
    pub eta: f64,
}

impl SamplerChoice {
    /// DDIM with 50 steps and eta 1: the default of `sample` and `eval` and the
    /// sampler of the training-time grids. At the same 50 model calls eta 1 scored
    /// better than eta 0 on the quick preset's models (3.7-5.1 points recognisable,
    /// 26-53 of MNIST-FID) and at least as well on the course UNet (chapter 10,
    /// "The sampler's noise").
    pub const DDIM_50: SamplerChoice = SamplerChoice { kind: SamplerKind::Ddim, steps: Some(50), eta: 1.0 };

    /// Ancestral sampling over every timestep: Ho et al.'s Algorithm 2 as written.
    pub const ANCESTRAL: SamplerChoice = SamplerChoice { kind: SamplerKind::Ddpm, steps: None, eta: 1.0 };

    /// The steps a sampler takes when `--steps` is not given: 50 for DDIM and
    /// Langevin, every timestep for ancestral sampling.
    #[must_use]
    pub fn default_steps(kind: SamplerKind) -> Option<usize> {
        match kind {
            SamplerKind::Ddpm => None,
            SamplerKind::Ddim | SamplerKind::Langevin => SamplerChoice::DDIM_50.steps,
        }
    }

    /// The timesteps (or Langevin's noise levels) used with a model of `timesteps`.
    #[must_use]
    pub fn kept_steps(&self, timesteps: usize) -> usize {
        self.steps.map_or(timesteps, |steps| steps.min(timesteps))
    }

    /// The code timesteps the sampler visits with a model of `timesteps`, increasing:
    /// [`Self::kept_steps`] of them, evenly spaced, the first and the last included.
    ///
    /// # Errors
    /// A step count below 2 (see [`crate::run::validate::sampler`]).
    pub fn timesteps(&self, timesteps: usize) -> Result<Vec<usize>> {
        Ok(evenly_spaced_timesteps(timesteps, self.kept_steps(timesteps))?)
    }

    /// "DDIM-50, eta 1", "ancestral, 1000 steps", "ancestral, 50 of 1000 steps",
    /// "Langevin, 10 levels x 5 steps": the sampler as `sample` and `eval` report it,
    /// for a model of `timesteps` steps.
    #[must_use]
    pub fn describe(&self, timesteps: usize) -> String {
        let kept = self.kept_steps(timesteps);
        match self.kind {
            SamplerKind::Ddpm if kept == timesteps => format!("ancestral, {timesteps} steps"),
            SamplerKind::Ddpm => format!("ancestral, {kept} of {timesteps} steps"),
            SamplerKind::Ddim => format!("DDIM-{kept}, eta {}", self.eta),
            SamplerKind::Langevin => format!("Langevin, {kept} levels x {LANGEVIN_STEPS_PER_LEVEL} steps"),
        }
    }
}

/// Langevin steps at each noise level.
const LANGEVIN_STEPS_PER_LEVEL: usize = 5;
/// Langevin step-size ratio r in delta_t = r (1 - alpha-bar_t).
const LANGEVIN_STEP_RATIO: f64 = 0.1;

/// Samples drawn per call of the sampler: memory stays flat in `--count` and
/// `--samples`. The samples of batch `i` use the seed `seed + i`, so a result
/// depends on the seed and the count, not on the machine, and `sample` and `eval`
/// draw the same images for the same seed.
pub const SAMPLE_BATCH: usize = 250;

/// `count` samples (and the frames at the `record` timesteps) from `model`, in one batch.
///
/// # Errors
/// A sampler setting out of range (e.g. more DDIM steps than T), or
/// [`crate::error::Error::NonFinite`] when the model predicts NaN or infinity.
pub fn draw(
    model: &Model,
    config: &TrainConfig,
    sampler: SamplerChoice,
    count: usize,
    seed: u64,
    record: &[usize],
) -> Result<Trajectory<f32>> {
    draw_watched(&Watched::new(model, &Progress::hidden()), config, sampler, count, seed, record)
}

/// The model calls one batch of `draw` makes: one per kept timestep (DDIM and
/// ancestral sampling), or per Langevin step.
#[must_use]
pub fn model_calls(config: &TrainConfig, sampler: SamplerChoice) -> usize {
    let kept = sampler.kept_steps(config.timesteps);
    match sampler.kind {
        SamplerKind::Ddpm | SamplerKind::Ddim => kept,
        SamplerKind::Langevin => kept * LANGEVIN_STEPS_PER_LEVEL,
    }
}

/// `count` samples in batches of [`SAMPLE_BATCH`], with the progress of every
/// model call; the frames at `record` are those of the first batch.
///
/// # Errors
/// As [`draw`].
pub fn draw_in_batches(
    model: &Model,
    config: &TrainConfig,
    sampler: SamplerChoice,
    count: usize,
    seed: u64,
    record: &[usize],
    progress: &Progress,
) -> Result<Trajectory<f32>> {
    let watched = Watched::new(model, progress);
    let mut values = Vec::with_capacity(count * config.example_dims().iter().product::<usize>());
    let mut frames = Vec::new();
    for (i, start) in (0..count).step_by(SAMPLE_BATCH).enumerate() {
        let n = SAMPLE_BATCH.min(count - start);
        let batch = draw_watched(&watched, config, sampler, n, seed.wrapping_add(i as u64), if i == 0 { record } else { &[] })?;
        values.extend(batch.sample.to_vec());
        if i == 0 {
            frames = batch.frames;
        }
    }
    let mut shape = vec![count];
    shape.extend(config.example_dims());
    Ok(Trajectory { sample: tensor::Tensor::from_vec(values, &shape)?, frames })
}

fn draw_watched(
    model: &Watched<'_>,
    config: &TrainConfig,
    sampler: SamplerChoice,
    count: usize,
    seed: u64,
    record: &[usize],
) -> Result<Trajectory<f32>> {
    let schedule = config.noise_schedule()?;
    let mut shape = vec![count];
    shape.extend(config.example_dims());
    let mut r = rng(seed);
    // Model call after model call: the other workers busy-wait between ops.
    let _awake = tensor::KeepAwake::new();
    let clip_denoised = config.data == Dataset::Mnist;
    let steps = sampler.timesteps(config.timesteps)?;
    let trajectory = match sampler.kind {
        SamplerKind::Ddpm => {
            sample_ancestral_respaced(&schedule, model, &shape, &steps, config.reverse_options(clip_denoised), record, &mut r)
        }
        SamplerKind::Ddim => {
            let options = DdimOptions { eta: sampler.eta, parameterization: config.prediction, clip_denoised };
            sample_ddim(&schedule, model, &shape, &steps, options, record, &mut r)
        }
        SamplerKind::Langevin => {
            let mut levels = steps;
            levels.reverse();
            let options = LangevinOptions { levels, steps_per_level: LANGEVIN_STEPS_PER_LEVEL, step_size_ratio: LANGEVIN_STEP_RATIO };
            sample_langevin(&schedule, model, &shape, &options, record, &mut r)
        }
    };
    let trajectory = model.verdict(trajectory)?;
    // The sampler itself can overflow (e.g. Langevin's steps) with finite predictions.
    if trajectory.sample.to_vec().iter().any(|v| !v.is_finite()) {
        return Err(crate::error::Error::NonFinite { what: "a sample".into() });
    }
    Ok(trajectory)
}

/// The toy data set of a run (the points the model was trained on).
#[must_use]
pub fn toy_points(data: Dataset, n: usize, seed: u64) -> Vec<[f32; 2]> {
    use crate::data::toy::{checkerboard, eight_gaussians, swiss_roll, two_moons};
    match data {
        Dataset::SwissRoll | Dataset::Mnist => swiss_roll(n, seed),
        Dataset::TwoMoons => two_moons(n, seed),
        Dataset::EightGaussians => eight_gaussians(n, seed),
        Dataset::Checkerboard => checkerboard(n, seed),
    }
}

/// Saves samples `[N, ...]` as a PNG: a grid for images; for 2-D points, scatter
/// plots of the data and of the samples side by side.
///
/// # Errors
/// I/O errors naming the file.
pub fn save_samples(path: &Path, config: &TrainConfig, samples: &tensor::Tensor<f32>) -> Result<()> {
    let values = samples.to_vec();
    let n = samples.dims()[0];
    let io = |e: std::io::Error| crate::error::Error::Io { path: path.to_path_buf(), source: e };
    if config.data == Dataset::Mnist {
        let side = config.example_dims().iter().product::<usize>().isqrt();
        let cols = (n as f64).sqrt().ceil() as usize;
        save_grid(path, &values, n, side, side, cols).map_err(io)
    } else {
        let data = toy_points(config.data, n, config.seed);
        let scatter = |title: &str, label: &str, points: Vec<(f64, f64)>| Plot {
            title: title.to_string(),
            x_label: "x1".into(),
            y_label: "x2".into(),
            log_y: false,
            series: vec![Series { label: label.into(), points, dots: true }],
        };
        let data_plot = scatter("training data", "data", data.iter().map(|p| (f64::from(p[0]), f64::from(p[1]))).collect());
        let sample_plot = scatter("samples", "model", values.chunks(2).map(|p| (f64::from(p[0]), f64::from(p[1]))).collect());
        save_png(path, &[data_plot, sample_plot]).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::config::{ModelConfig, Preset};
    use ddpm::BetaSchedule;

    /// The toy preset's MLP, untrained, with 100 timesteps: a batch samples in milliseconds.
    fn toy() -> (TrainConfig, Model) {
        let config = TrainConfig { timesteps: 100, ..TrainConfig::preset(Preset::Toy) };
        let model = Model::new(&config.model, 0).unwrap();
        (config, model)
    }

    #[test]
    fn without_steps_ancestral_sampling_takes_every_step_and_the_others_fifty() {
        // What `sample` and `eval` run when `--steps` is not given, on a model of T = 1000.
        let calls = |kind| SamplerChoice { kind, steps: SamplerChoice::default_steps(kind), eta: 1.0 }.kept_steps(1000);
        assert_eq!([calls(SamplerKind::Ddpm), calls(SamplerKind::Ddim), calls(SamplerKind::Langevin)], [1000, 50, 50]);
        // and on a model of fewer steps than 50, all of them
        assert_eq!(SamplerChoice { steps: SamplerChoice::default_steps(SamplerKind::Ddim), ..SamplerChoice::DDIM_50 }.kept_steps(25), 25);
    }

    #[test]
    fn ancestral_sampling_over_every_step_draws_what_algorithm_2_draws_bit_for_bit() {
        // `--sampler ddpm` runs on the schedule respaced to the kept steps, all T of them
        // by default. Its betas, recomputed as 1 - alpha-bar_s / alpha-bar_(s-1), differ
        // from the schedule's in the last bits of an f64, which the f32 coefficients
        // round away: the samples are those of Algorithm 2 on the schedule itself, as
        // they were before respacing existed.
        for schedule in [BetaSchedule::Linear, BetaSchedule::Cosine] {
            let config = TrainConfig { schedule, ..TrainConfig::preset(Preset::Toy) };
            let model = Model::new(&config.model, 0).unwrap();
            let drawn = draw(&model, &config, SamplerChoice::ANCESTRAL, 64, 3, &[]).unwrap().sample.to_vec();
            let options = config.reverse_options(false);
            let direct = ddpm::sample_ancestral(&config.noise_schedule().unwrap(), &model, &[64, 2], options, &[], &mut rng(3)).unwrap();
            assert!(drawn == direct.sample.to_vec(), "{schedule:?}");
        }
    }

    #[test]
    fn describe_names_the_sampler_and_the_steps_it_takes() {
        assert_eq!(SamplerChoice::DDIM_50.describe(1000), "DDIM-50, eta 1");
        assert_eq!(SamplerChoice::DDIM_50.describe(25), "DDIM-25, eta 1");
        assert_eq!(SamplerChoice { eta: 0.5, ..SamplerChoice::DDIM_50 }.describe(1000), "DDIM-50, eta 0.5");
        assert_eq!(SamplerChoice::ANCESTRAL.describe(1000), "ancestral, 1000 steps");
        assert_eq!(SamplerChoice { steps: Some(1000), ..SamplerChoice::ANCESTRAL }.describe(1000), "ancestral, 1000 steps");
        assert_eq!(SamplerChoice { steps: Some(50), ..SamplerChoice::ANCESTRAL }.describe(1000), "ancestral, 50 of 1000 steps");
        assert_eq!(SamplerChoice { kind: SamplerKind::Ddim, steps: None, eta: 0.0 }.describe(25), "DDIM-25, eta 0");
        assert_eq!(
            SamplerChoice { kind: SamplerKind::Langevin, steps: Some(10), eta: 0.0 }.describe(1000),
            "Langevin, 10 levels x 5 steps"
        );
    }

    #[test]
    fn model_calls_is_the_number_of_predictions_a_batch_makes() {
        let (config, model) = toy();
        let cases = [
            (SamplerKind::Ddpm, None),
            (SamplerKind::Ddpm, Some(7)),
            (SamplerKind::Ddim, Some(7)),
            (SamplerKind::Ddim, Some(50)),
            (SamplerKind::Langevin, Some(7)),
        ];
        for (kind, steps) in cases {
            let sampler = SamplerChoice { kind, steps, eta: 0.0 };
            // A total no count reaches: no log line within the test.
            let progress = Progress::logged("test", u64::MAX, "model calls");
            draw_in_batches(&model, &config, sampler, 3, 0, &[], &progress).unwrap();
            assert_eq!(progress.position(), model_calls(&config, sampler) as u64, "{kind:?} with {steps:?} steps");
        }
    }

    #[test]
    fn batches_are_seeded_one_after_another_and_only_the_first_records_frames() {
        let (config, model) = toy();
        let sampler = SamplerChoice::ANCESTRAL;
        let record = [99, 50];
        let count = SAMPLE_BATCH + 3;
        let all = draw_in_batches(&model, &config, sampler, count, 7, &record, &Progress::hidden()).unwrap();
        let first = draw(&model, &config, sampler, SAMPLE_BATCH, 7, &record).unwrap();
        let second = draw(&model, &config, sampler, 3, 8, &[]).unwrap();
        assert_eq!(all.sample.dims(), [count, 2]);
        assert_eq!(all.sample.to_vec(), [first.sample.to_vec(), second.sample.to_vec()].concat());
        assert_eq!(all.frames.len(), record.len());
        for (got, want) in all.frames.iter().zip(&first.frames) {
            assert_eq!(got.t, want.t);
            assert_eq!(got.x_t.to_vec(), want.x_t.to_vec(), "frame at t = {}", got.t);
        }
    }

    #[test]
    fn only_images_are_clipped_to_the_data_range() {
        // An untrained model predicts x_0 far outside [-1, 1]; DDIM's last step
        // returns that prediction, clipped for MNIST, left as it is for 2-D points.
        let sampler = SamplerChoice { kind: SamplerKind::Ddim, steps: Some(2), eta: 0.0 };
        let mnist = TrainConfig { model: ModelConfig::Unet(nn::UNetConfig::tiny()), timesteps: 100, ..TrainConfig::preset(Preset::Quick) };
        let unet = Model::new(&mnist.model, 0).unwrap();
        let images = draw(&unet, &mnist, sampler, 4, 0, &[]).unwrap().sample.to_vec();
        assert!(images.iter().all(|v| (-1.0..=1.0).contains(v)), "{images:?}");
        let (config, mlp) = toy();
        let points = draw(&mlp, &config, sampler, 64, 0, &[]).unwrap().sample.to_vec();
        assert!(points.iter().any(|v| v.abs() > 1.0), "{points:?}");
    }

    #[test]
    fn toy_points_are_the_data_set_of_the_run() {
        use crate::data::toy::{checkerboard, eight_gaussians, swiss_roll, two_moons};
        type Generator = fn(usize, u64) -> Vec<[f32; 2]>;
        let generators: [(Dataset, Generator); 4] = [
            (Dataset::SwissRoll, swiss_roll),
            (Dataset::TwoMoons, two_moons),
            (Dataset::EightGaussians, eight_gaussians),
            (Dataset::Checkerboard, checkerboard),
        ];
        for (data, generator) in generators {
            let points = toy_points(data, 300, 5);
            assert_eq!(points.len(), 300);
            assert_eq!(points, generator(300, 5), "{data:?}");
        }
    }
}
