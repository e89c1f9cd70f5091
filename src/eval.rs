//! `ddpm eval`: how good are a model's samples, in numbers.
//!
//! The shipped classifier (`data/classifier.safetensors`) judges `N` samples:
//! - recognisable: the fraction it assigns one class with probability >= 0.9;
//! - class entropy: the entropy (nats) of the histogram of its predicted classes,
//!   `ln 10 = 2.303` when every digit is drawn equally often;
//! - MNIST-FID: the Frechet distance between Gaussians fitted to its 128 features
//!   of the samples and of the 10,000 test images;
//! - the FID floor: the same distance for `N` real training images, so that the
//!   floor carries the same small-sample bias as the samples' FID.

use crate::classifier;
use crate::cli::{Dataset, EvalArgs, SamplerArgs};
use crate::config::TrainConfig;
use crate::data::mnist::{MnistSplit, Split};
use crate::data_dir::load_mnist;
use crate::error::{Error, Result};
use crate::image::save_grid;
use crate::metrics::{class_entropy, frechet_distance, Gaussian};
use crate::model::{Loaded, Model};
use crate::progress::Progress;
use crate::sampling::{draw_in_batches, model_calls, SamplerChoice, SAMPLE_BATCH};
use nn::models::classifier::{CLASSES, FEATURES};
use nn::Classifier;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::Path;
use std::time::Instant;

/// The confidence above which a sample counts as recognisable.
pub const CONFIDENCE: f32 = 0.9;

/// The figures of `ddpm eval`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EvalReport {
    pub samples: usize,
    pub recognisable: f64,
    pub class_entropy: f64,
    pub fid: f64,
    pub fid_floor: f64,
}

impl EvalReport {
    /// The lines printed by `ddpm eval`.
    #[must_use]
    pub fn table(&self) -> String {
        format!(
            "{} samples\n  recognisable (confidence >= {CONFIDENCE})  {:>7.1}%\n  class entropy (ln 10 = {:.3})      {:>7.3}\n  MNIST-FID                           {:>7.2}\n  MNIST-FID floor (train vs test)     {:>7.2}",
            self.samples,
            100.0 * self.recognisable,
            10f64.ln(),
            self.class_entropy,
            self.fid,
            self.fid_floor
        )
    }
}

/// `count` samples `[N, 1, 28, 28]` as one row-major vector, drawn in batches of
/// [`crate::sampling::SAMPLE_BATCH`] (batch `i` with the seed `seed + i`).
///
/// # Errors
/// Sampler settings out of range, or a model that predicts NaN.
pub fn draw_many(model: &Model, config: &TrainConfig, sampler: SamplerChoice, count: usize, seed: u64, progress: &Progress) -> Result<Vec<f32>> {
    Ok(draw_in_batches(model, config, sampler, count, seed, &[], progress)?.sample.to_vec())
}

/// The classifier, with what every score is measured against: the Gaussian of its
/// features of the test set (computed once), and the training split for the floor.
#[derive(Debug)]
pub struct Judge {
    classifier: Classifier<f32>,
    test_gaussian: Gaussian,
    train: MnistSplit,
}

impl Judge {
    /// Runs `classifier` over the 10,000 test images.
    ///
    /// # Errors
    /// Data errors.
    pub fn new(classifier: Classifier<f32>) -> Result<Self> {
        let test = load_mnist(Split::Test)?;
        let test_features = classifier::judge(&classifier, &test.gather_images(&(0..test.len()).collect::<Vec<_>>())?)?.features;
        let test_gaussian = Gaussian::fit(&test_features, FEATURES)?;
        Ok(Judge { classifier, test_gaussian, train: load_mnist(Split::Train)? })
    }

    /// The verdict on `samples` (`N` images of 28x28 in [-1, 1]), with the floor
    /// from `N` training images drawn with `seed`.
    ///
    /// # Errors
    /// Fewer than two samples, or a length that is not whole images.
    pub fn score(&self, samples: &[f32], seed: u64) -> Result<EvalReport> {
        let judged = classifier::judge(&self.classifier, samples)?;
        let n = judged.probs.len() / CLASSES;
        let predictions = judged.predictions();
        let recognisable = predictions.iter().filter(|(_, p)| *p >= CONFIDENCE).count() as f64 / n as f64;
        let classes: Vec<usize> = predictions.iter().map(|(c, _)| *c).collect();
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        let floor = classifier::judge(&self.classifier, &self.train.gather_images(&order[..n.min(self.train.len())])?)?;
        Ok(EvalReport {
            samples: n,
            recognisable,
            class_entropy: class_entropy(&classes, CLASSES),
            fid: frechet_distance(&Gaussian::fit(&judged.features, FEATURES)?, &self.test_gaussian),
            fid_floor: frechet_distance(&Gaussian::fit(&floor.features, FEATURES)?, &self.test_gaussian),
        })
    }
}

/// `ddpm eval`: draws `--samples` samples from a checkpoint and scores them.
/// Also returns a line about the run (sampler, time, grid).
///
/// # Errors
/// A bad checkpoint or classifier, a toy-data checkpoint, or bad flags.
pub fn eval(args: &EvalArgs) -> Result<(EvalReport, String)> {
    let SamplerArgs { sampler: kind, steps, eta } = args.sampling;
    if args.samples < 2 || steps == 0 {
        return Err(Error::InvalidArgument { what: "--samples/--steps", reason: "need at least 2 samples and 1 step".into() });
    }
    let loaded = Loaded::read(&args.checkpoint)?;
    if loaded.config.data != Dataset::Mnist {
        return Err(Error::InvalidArgument { what: "--checkpoint", reason: "eval needs a checkpoint trained on MNIST".into() });
    }
    crate::validate::sampler(&args.sampling, loaded.config.timesteps)?;
    if let Some(grid) = &args.grid {
        crate::validate::png_output("--grid", grid)?;
    }
    let judge = Judge::new(classifier::load(&args.classifier.clone().unwrap_or_else(classifier::default_path))?)?;
    let model = loaded.model(args.raw_weights)?;
    let mut config = loaded.config.clone();
    if let Some(variance) = args.variance {
        config.variance = variance;
    }
    let sampler = SamplerChoice { kind, steps, eta };
    let started = Instant::now();
    let progress = Progress::new("eval", (args.samples.div_ceil(SAMPLE_BATCH) * model_calls(&config, sampler)) as u64, "model calls");
    let samples = draw_many(&model, &config, sampler, args.samples, args.seed, &progress)?;
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    let report = judge.score(&samples, args.seed)?;
    let mut line = format!("{} at step {}, {kind:?} sampler, sampled in {seconds:.0} s", loaded.path.display(), loaded.step);
    if let Some(grid) = &args.grid {
        save_sample_grid(grid, &samples)?;
        line.push_str(&format!("; first 100 samples -> {}", grid.display()));
    }
    Ok((report, line))
}

/// The first (up to) 100 of `samples` as a 10-column grid.
///
/// # Errors
/// I/O errors naming the file.
pub fn save_sample_grid(path: &Path, samples: &[f32]) -> Result<()> {
    let n = (samples.len() / 784).min(100);
    save_grid(path, &samples[..n * 784], n, 28, 28, 10).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}
