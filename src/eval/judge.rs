//! `ddpm eval`: how good are a model's samples, in numbers.
//!
//! The shipped classifier (`data/classifier.safetensors`) judges `N` samples:
//! - recognisable: the fraction it assigns one class with probability >= 0.9;
//! - class entropy: the entropy (nats) of the histogram of its predicted classes,
//!   `ln 10 = 2.303` when every digit is drawn equally often;
//! - MNIST-FID: the Frechet distance between Gaussians fitted to its 128 features
//!   of the samples and of the 10,000 test images;
//! - the FID floor: the same distance for `N` real training images drawn at
//!   random (seeded), so that the floor carries the same small-sample bias as the
//!   samples' FID.
//!
//! Each number comes with its standard error: binomial for the fraction, the delta
//! method for the entropy, and for the two FIDs the spread over
//! [`BOOTSTRAP_RESAMPLES`] bootstrap resamples of the `N` feature vectors (seeded).

use crate::data::dir::load_mnist;
use crate::data::mnist::{MnistSplit, Split};
use crate::error::{Error, Result};
use crate::eval::classifier;
use crate::eval::metrics::{class_entropy, class_entropy_stderr, fraction_stderr, frechet_distance, Gaussian};
use crate::render::image::save_grid;
use crate::run::commands::SampleSet;
use crate::run::config::{Dataset, TrainConfig};
use crate::run::model::{Loaded, Model};
use crate::run::progress::Progress;
use crate::run::sampling::{draw_in_batches, model_calls, SamplerChoice, SAMPLE_BATCH};
use crate::run::validate;
use ddpm::VarianceKind;
use nn::models::classifier::{CLASSES, FEATURES};
use nn::Classifier;
use rand::seq::SliceRandom;
use rand::{Rng as _, SeedableRng};
use std::path::Path;
use std::time::Instant;

/// The confidence above which a sample counts as recognisable.
pub const CONFIDENCE: f32 = 0.9;
/// Bootstrap resamples behind an FID's standard error: the error of a standard
/// error from B resamples is about 1/sqrt(2B), 16% here, enough to read it.
pub const BOOTSTRAP_RESAMPLES: usize = 20;

/// The figures of `ddpm eval`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EvalReport {
    pub samples: usize,
    pub recognisable: f64,
    pub recognisable_stderr: f64,
    pub class_entropy: f64,
    pub class_entropy_stderr: f64,
    pub fid: f64,
    pub fid_stderr: f64,
    pub fid_floor: f64,
    pub fid_floor_stderr: f64,
}

impl EvalReport {
    /// The lines printed by `ddpm eval`.
    #[must_use]
    pub fn table(&self) -> String {
        format!(
            "{} samples (+- one standard error)\n  recognisable (confidence >= {CONFIDENCE})  {:>7.1}% +- {:.1}\n  class entropy (ln 10 = {:.3})      {:>7.3} +- {:.3}\n  MNIST-FID                           {:>7.2} +- {:.2}\n  MNIST-FID floor (train vs test)     {:>7.2} +- {:.2}",
            self.samples,
            100.0 * self.recognisable,
            100.0 * self.recognisable_stderr,
            10f64.ln(),
            self.class_entropy,
            self.class_entropy_stderr,
            self.fid,
            self.fid_stderr,
            self.fid_floor,
            self.fid_floor_stderr
        )
    }
}

/// `count` samples `[N, 1, 28, 28]` as one row-major vector, drawn in batches of
/// [`SAMPLE_BATCH`] (batch `i` with the seed `seed + i`).
///
/// # Errors
/// Sampler settings out of range, or a model that predicts NaN.
pub fn draw_many(
    model: &Model,
    config: &TrainConfig,
    sampler: SamplerChoice,
    count: usize,
    seed: u64,
    progress: &Progress,
) -> Result<Vec<f32>> {
    Ok(draw_in_batches(model, config, sampler, count, seed, &[], progress)?.sample.to_vec())
}

/// Warnings for an `eval` whose FID the sample size cannot support. The FID fits a
/// Gaussian to the classifier's features of the samples: with no more samples than
/// features the covariance is singular and the distance is mostly small-sample
/// bias; and an FID below the floor (the same distance for as many real training
/// images) means the gap between model and data is smaller than that bias.
#[must_use]
pub fn fid_sample_size(report: &EvalReport) -> Vec<String> {
    let features = nn::models::classifier::FEATURES;
    let mut warnings = Vec::new();
    if report.samples <= features {
        warnings.push(format!(
            "{} samples are no more than the classifier's {features} features: their covariance is singular and the FID measures mostly the sample size; use --samples 1000 or more",
            report.samples
        ));
    }
    if report.fid < report.fid_floor {
        warnings.push(format!(
            "the FID {:.2} is below its floor {:.2} (as many real images): at {} samples the difference is noise; use more --samples",
            report.fid, report.fid_floor, report.samples
        ));
    }
    warnings
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
        let (fid, fid_stderr) = self.fid_with_stderr(&judged.features, seed)?;
        let (fid_floor, fid_floor_stderr) = self.fid_with_stderr(&floor.features, seed.wrapping_add(1))?;
        Ok(EvalReport {
            samples: n,
            recognisable,
            recognisable_stderr: fraction_stderr(recognisable, n),
            class_entropy: class_entropy(&classes, CLASSES),
            class_entropy_stderr: class_entropy_stderr(&classes, CLASSES),
            fid,
            fid_stderr,
            fid_floor,
            fid_floor_stderr,
        })
    }

    /// The FID of `features` (`N x FEATURES`) against the test set, and its bootstrap
    /// standard error: the standard deviation of the FID over resamples of the `N`
    /// vectors drawn with replacement.
    fn fid_with_stderr(&self, features: &[f32], seed: u64) -> Result<(f64, f64)> {
        let fid = frechet_distance(&Gaussian::fit(features, FEATURES)?, &self.test_gaussian);
        let n = features.len() / FEATURES;
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x00B0_0757_12A9);
        let mut replicates = Vec::with_capacity(BOOTSTRAP_RESAMPLES);
        for _ in 0..BOOTSTRAP_RESAMPLES {
            let resample: Vec<f32> = (0..n)
                .flat_map(|_| {
                    let i = r.random_range(0..n);
                    features[i * FEATURES..(i + 1) * FEATURES].iter().copied()
                })
                .collect();
            replicates.push(frechet_distance(&Gaussian::fit(&resample, FEATURES)?, &self.test_gaussian));
        }
        let mean = replicates.iter().sum::<f64>() / replicates.len() as f64;
        let variance = replicates.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / (replicates.len() - 1) as f64;
        Ok((fid, variance.sqrt()))
    }
}

/// `ddpm eval`: draws the samples of `set` from `loaded` (its raw weights with
/// `raw`; ancestral sampling with `variance` instead of the checkpoint's, if given),
/// scores them with the classifier at `classifier`, saves the first 100 into
/// `grid` and all of them into `samples_out` (see [`save_samples_file`]) if given.
/// Also returns a line about the run (sampler, time, grid).
///
/// # Errors
/// A bad checkpoint or classifier, a toy-data checkpoint, or bad settings.
pub fn eval(
    loaded: &Loaded,
    raw: bool,
    set: SampleSet,
    variance: Option<VarianceKind>,
    classifier: &Path,
    grid: Option<&Path>,
    samples_out: Option<&Path>,
) -> Result<(EvalReport, String)> {
    let SampleSet { sampler, count, seed } = set;
    if count < 2 || sampler.steps == 0 {
        return Err(Error::InvalidArgument { what: "--samples/--steps", reason: "need at least 2 samples and 1 step".into() });
    }
    if loaded.config.data != Dataset::Mnist {
        return Err(Error::InvalidArgument { what: "--checkpoint", reason: "eval needs a checkpoint trained on MNIST".into() });
    }
    validate::sampler(&sampler, loaded.config.timesteps)?;
    if let Some(grid) = grid {
        validate::png_output("--grid", grid)?;
    }
    let judge = Judge::new(classifier::load(classifier)?)?;
    let model = loaded.model(raw)?;
    let mut config = loaded.config.clone();
    if let Some(variance) = variance {
        config.variance = variance;
    }
    let started = Instant::now();
    let progress = Progress::new("eval", (count.div_ceil(SAMPLE_BATCH) * model_calls(&config, sampler)) as u64, "model calls");
    let samples = draw_many(&model, &config, sampler, count, seed, &progress)?;
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    let report = judge.score(&samples, seed)?;
    let mut line = format!("{} at step {}, {:?} sampler, sampled in {seconds:.0} s", loaded.path.display(), loaded.step, sampler.kind);
    if let Some(grid) = grid {
        save_sample_grid(grid, &samples)?;
        line.push_str(&format!("; first 100 samples -> {}", grid.display()));
    }
    if let Some(path) = samples_out {
        let metadata = [
            ("checkpoint", loaded.path.display().to_string()),
            ("step", loaded.step.to_string()),
            ("sampler", format!("{:?}", sampler.kind)),
            ("steps", sampler.steps.to_string()),
            ("eta", sampler.eta.to_string()),
            ("seed", seed.to_string()),
        ];
        save_samples_file(path, &samples, &metadata)?;
        line.push_str(&format!("; all samples -> {}", path.display()));
    }
    Ok((report, line))
}

/// The exchange format of samples between `ddpm eval` and another judge: one
/// safetensors file with the tensor `samples`, f32 `[N, 1, 28, 28]`, pixels in
/// [-1, 1] (`p / 127.5 - 1` for a pixel value p), and string metadata saying where
/// they came from (checkpoint, step, sampler, steps, eta, seed).
///
/// # Errors
/// I/O errors naming the file.
pub fn save_samples_file(path: &Path, samples: &[f32], metadata: &[(&str, String)]) -> Result<()> {
    let n = samples.len() / 784;
    let file = nn::safetensors::SafeTensors {
        tensors: vec![nn::safetensors::NamedTensor {
            name: "samples".into(),
            shape: vec![n, 1, 28, 28],
            data: nn::safetensors::TensorData::F32(samples.to_vec()),
        }],
        metadata: metadata.iter().map(|(k, v)| ((*k).to_string(), v.clone())).collect(),
    };
    Ok(file.save(path)?)
}

/// The first (up to) 100 of `samples` as a 10-column grid.
///
/// # Errors
/// I/O errors naming the file.
pub fn save_sample_grid(path: &Path, samples: &[f32]) -> Result<()> {
    let n = (samples.len() / 784).min(100);
    save_grid(path, &samples[..n * 784], n, 28, 28, 10).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}
