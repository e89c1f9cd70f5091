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
        let (fid, fid_stderr) = fid_with_stderr(&judged.features, FEATURES, &self.test_gaussian, seed)?;
        let (fid_floor, fid_floor_stderr) = fid_with_stderr(&floor.features, FEATURES, &self.test_gaussian, seed.wrapping_add(1))?;
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
}

/// The FID of `features` (`N x d`) against `reference`, and its bootstrap
/// standard error: the standard deviation of the FID over
/// [`BOOTSTRAP_RESAMPLES`] resamples of the `N` vectors drawn with
/// replacement (seeded).
///
/// # Errors
/// Fewer than two vectors, or a length that is not whole vectors.
pub fn fid_with_stderr(features: &[f32], d: usize, reference: &Gaussian, seed: u64) -> Result<(f64, f64)> {
    let fid = frechet_distance(&Gaussian::fit(features, d)?, reference);
    let n = features.len() / d;
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x00B0_0757_12A9);
    let mut replicates = Vec::with_capacity(BOOTSTRAP_RESAMPLES);
    for _ in 0..BOOTSTRAP_RESAMPLES {
        let resample: Vec<f32> = (0..n)
            .flat_map(|_| {
                let i = r.random_range(0..n);
                features[i * d..(i + 1) * d].iter().copied()
            })
            .collect();
        replicates.push(frechet_distance(&Gaussian::fit(&resample, d)?, reference));
    }
    let mean = replicates.iter().sum::<f64>() / replicates.len() as f64;
    let variance = replicates.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / (replicates.len() - 1) as f64;
    Ok((fid, variance.sqrt()))
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
    crate::run::validate::sample_count("--samples", count, 2)?;
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
    let mut line =
        format!("{} at step {}, {}, sampled in {seconds:.0} s", loaded.path.display(), loaded.step, sampler.describe(config.timesteps));
    if let Some(grid) = grid {
        save_sample_grid(grid, &samples)?;
        line.push_str(&format!("; first 100 samples -> {}", grid.display()));
    }
    if let Some(path) = samples_out {
        let metadata = [
            ("checkpoint", loaded.path.display().to_string()),
            ("step", loaded.step.to_string()),
            ("sampler", format!("{:?}", sampler.kind)),
            ("steps", sampler.kept_steps(loaded.config.timesteps).to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::metrics::SymMatrix;
    use rand_distr::{Distribution, StandardNormal};

    fn report(samples: usize, fid: f64, fid_floor: f64) -> EvalReport {
        EvalReport {
            samples,
            recognisable: 0.653,
            recognisable_stderr: 0.0151,
            class_entropy: 2.2614,
            class_entropy_stderr: 0.0093,
            fid,
            fid_stderr: 6.874,
            fid_floor,
            fid_floor_stderr: 0.512,
        }
    }

    /// The printed table carries each figure with its standard error, the
    /// fraction in percent.
    #[test]
    fn the_table_prints_every_figure() {
        let table = report(1000, 155.614, 17.412).table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "1000 samples (+- one standard error)");
        assert!(lines[1].starts_with("  recognisable (confidence >= 0.9)") && lines[1].ends_with("65.3% +- 1.5"), "{table}");
        assert!(lines[2].contains("(ln 10 = 2.303)") && lines[2].ends_with("2.261 +- 0.009"), "{table}");
        assert!(lines[3].starts_with("  MNIST-FID ") && lines[3].ends_with("155.61 +- 6.87"), "{table}");
        assert!(lines[4].starts_with("  MNIST-FID floor") && lines[4].ends_with("17.41 +- 0.51"), "{table}");
    }

    /// The two warnings: no more samples than features (a singular
    /// covariance; at one more there is none), and an FID below its floor
    /// (at the floor there is none).
    #[test]
    fn warns_when_the_sample_cannot_carry_the_fid() {
        assert!(fid_sample_size(&report(FEATURES + 1, 50.0, 20.0)).is_empty());
        let few = fid_sample_size(&report(FEATURES, 50.0, 20.0));
        assert_eq!(few.len(), 1);
        assert!(few[0].starts_with(&format!("{FEATURES} samples are no more than the classifier's {FEATURES} features")), "{few:?}");
        assert!(fid_sample_size(&report(1000, 20.0, 20.0)).is_empty());
        let below = fid_sample_size(&report(1000, 19.9, 20.0));
        assert_eq!(below.len(), 1);
        assert!(below[0].starts_with("the FID 19.90 is below its floor 20.00"), "{below:?}");
        assert_eq!(fid_sample_size(&report(10, 5.0, 20.0)).len(), 2);
    }

    /// `n` vectors of N(mean, I_d), row-major.
    fn normal_vectors(n: usize, d: usize, mean: f32, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<f32> {
        (0..n * d).map(|_| mean + Distribution::<f32>::sample(&StandardNormal, rng)).collect()
    }

    /// The bootstrap standard error estimates the FID's sampling spread
    /// (Monte-Carlo): features N(0.5, I_8), 200 vectors a sample, against
    /// N(0, I_8). The FID's standard deviation over 300 independent samples is
    /// the truth (its own error about 4%); the bootstrap's estimate, averaged
    /// over 30 samples (20 resamples each, so each estimate is within about
    /// 16%, the mean within 3%), lands within 20% of it (seeds 11-14 gave
    /// 0.99-1.04 of it). The mean FID is the closed form's 8 x 0.25 = 2 plus
    /// the small-sample bias, to second order d / N from the mean and d (d +
    /// 1) / 4N from the covariance.
    #[test]
    fn the_bootstrap_error_is_the_fid_spread() {
        let d = 8;
        let reference = Gaussian {
            mean: vec![0.0; d],
            cov: SymMatrix { n: d, values: (0..d * d).map(|i| if i % (d + 1) == 0 { 1.0 } else { 0.0 }).collect() },
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let fids: Vec<f64> =
            (0..300).map(|_| frechet_distance(&Gaussian::fit(&normal_vectors(200, d, 0.5, &mut rng), d).unwrap(), &reference)).collect();
        let mean_fid = fids.iter().sum::<f64>() / fids.len() as f64;
        let spread = (fids.iter().map(|f| (f - mean_fid).powi(2)).sum::<f64>() / (fids.len() - 1) as f64).sqrt();
        let (n, dims) = (200.0, d as f64);
        let expected = dims * 0.25 + dims / n + dims * (dims + 1.0) / (4.0 * n);
        assert!((mean_fid - expected).abs() < 0.05, "mean FID {mean_fid}, expected {expected}");
        let estimates: Vec<(f64, f64)> =
            (0..30).map(|seed| fid_with_stderr(&normal_vectors(200, d, 0.5, &mut rng), d, &reference, seed).unwrap()).collect();
        let mean_stderr = estimates.iter().map(|(_, e)| e).sum::<f64>() / estimates.len() as f64;
        assert!((mean_stderr / spread - 1.0).abs() < 0.2, "bootstrap {mean_stderr} against the spread {spread}");
        // Each FID is the sample's own, not a resample's.
        let features = normal_vectors(200, d, 0.5, &mut rng);
        let (fid, _) = fid_with_stderr(&features, d, &reference, 0).unwrap();
        assert_eq!(fid, frechet_distance(&Gaussian::fit(&features, d).unwrap(), &reference));
    }
}
