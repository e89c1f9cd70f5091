//! The MNIST classifier that judges samples: training it (`ddpm classifier train`),
//! reading the shipped weights (`data/classifier.safetensors`), and running it over
//! a set of images for its class probabilities and features.
//!
//! The classifier is trained with this engine, like everything else: AdamW, a
//! linear warmup then a linear decay of the learning rate to zero, and random
//! shifts of up to two pixels as augmentation.

use crate::data::dir::load_mnist;
use crate::data::mnist::{MnistSplit, Split};
use crate::error::{Error, Result};
use nn::models::classifier::{CLASSES, FEATURES};
use nn::{Adam, Checkpoint, Classifier, Module, Optimizer};
use rand::seq::SliceRandom;
use rand::{Rng as _, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tensor::{no_grad, Rng, Tensor};

/// The metadata `format` of a classifier file.
pub const FORMAT: &str = "diffusion-course-classifier-1";
/// Pixels of one image.
const PIXELS: usize = 28 * 28;
/// Images per forward pass when only evaluating.
const EVAL_BATCH: usize = 500;
/// The largest shift of the augmentation, in pixels, each way.
const MAX_SHIFT: i64 = 2;
/// Steps of linear learning-rate warmup.
const WARMUP: usize = 100;

/// `classifier.safetensors` in the data folder (`data/` of this repository unless
/// `--data-dir` or `DDPM_DATA_DIR` says otherwise).
#[must_use]
pub fn default_path() -> PathBuf {
    crate::data::dir::classifier_path()
}

/// Reads a classifier written by [`train`].
///
/// # Errors
/// A missing or corrupt file, or a safetensors file that is not a classifier.
pub fn load(path: &Path) -> Result<Classifier<f32>> {
    if !path.exists() {
        return Err(Error::InvalidArgument {
            what: "--classifier",
            reason: format!("{} does not exist (train one with `ddpm classifier train`)", path.display()),
        });
    }
    let checkpoint = Checkpoint::<f32>::load(path)?;
    let file = path.display().to_string();
    if checkpoint.metadata.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(Error::format(&file, 0, format!("not a classifier of this program (no \"format\" = {FORMAT:?} in the metadata)")));
    }
    let mut classifier = Classifier::new(&mut tensor::rng(0));
    classifier
        .load_named_params(&checkpoint.model)
        .map_err(|e| Error::format(&file, 0, format!("the weights do not fit the classifier: {e}")))?;
    Ok(classifier)
}

/// What the classifier says about a set of images.
#[derive(Clone, Debug)]
pub struct Judged {
    /// `[N, 10]` row-major: the class probabilities.
    pub probs: Vec<f32>,
    /// `[N, F]` row-major: the features.
    pub features: Vec<f32>,
}

impl Judged {
    /// The predicted class and its probability, per image.
    #[must_use]
    pub fn predictions(&self) -> Vec<(usize, f32)> {
        self.probs
            .chunks(CLASSES)
            .map(|p| p.iter().copied().enumerate().fold((0, f32::NEG_INFINITY), |best, (c, q)| if q > best.1 { (c, q) } else { best }))
            .collect()
    }
}

/// Runs the classifier over `images` (`N` images of 28x28 in [-1, 1], row-major).
///
/// # Errors
/// A length that is not a multiple of 784.
pub fn judge(classifier: &Classifier<f32>, images: &[f32]) -> Result<Judged> {
    if !images.len().is_multiple_of(PIXELS) {
        return Err(Error::InvalidArgument {
            what: "images",
            reason: format!("{} values are not a whole number of 28x28 images", images.len()),
        });
    }
    let (mut probs, mut features) = (Vec::new(), Vec::new());
    no_grad(|| -> Result<()> {
        for chunk in images.chunks(EVAL_BATCH * PIXELS) {
            let x = Tensor::from_vec(chunk.to_vec(), &[chunk.len() / PIXELS, 1, 28, 28])?;
            let f = classifier.features(&x)?; // [B, F]
            probs.extend(classifier.output.forward(&f)?.softmax(1)?.to_vec());
            features.extend(f.to_vec());
        }
        Ok(())
    })?;
    debug_assert_eq!(features.len(), images.len() / PIXELS * FEATURES);
    Ok(Judged { probs, features })
}

/// The fraction of `split` that the classifier labels correctly.
///
/// # Errors
/// Data errors.
pub fn accuracy(classifier: &Classifier<f32>, split: &MnistSplit) -> Result<f64> {
    let judged = judge(classifier, &split.gather_images(&(0..split.len()).collect::<Vec<_>>())?)?;
    let correct = judged.predictions().iter().zip(split.labels()).filter(|((c, _), &label)| *c == usize::from(label)).count();
    Ok(correct as f64 / split.len() as f64)
}

/// Moves a 28x28 image by `dy` rows and `dx` columns, filling the uncovered
/// border with the background value -1.
fn shift(image: &mut [f32], dy: i64, dx: i64) {
    let source = image.to_vec();
    for y in 0..28i64 {
        for x in 0..28i64 {
            let (sy, sx) = (y - dy, x - dx);
            let inside = (0..28).contains(&sy) && (0..28).contains(&sx);
            image[(y * 28 + x) as usize] = if inside { source[(sy * 28 + sx) as usize] } else { -1.0 };
        }
    }
}

/// The augmentation: each image moved by a random offset in
/// `-MAX_SHIFT..=MAX_SHIFT` along each axis.
fn random_shifts(images: &mut [f32], rng: &mut Rng) {
    for image in images.chunks_mut(PIXELS) {
        shift(image, rng.random_range(-MAX_SHIFT..=MAX_SHIFT), rng.random_range(-MAX_SHIFT..=MAX_SHIFT));
    }
}

/// How the classifier is trained.
#[derive(Clone, Copy, Debug)]
pub struct ClassifierTraining {
    /// Passes over the 60,000 training images.
    pub epochs: usize,
    /// Images per step.
    pub batch: usize,
    /// Peak learning rate of AdamW.
    pub lr: f64,
    /// Seed of the initialisation, the order and the augmentation.
    pub seed: u64,
}

/// `ddpm classifier train`: trains the classifier on the MNIST training split and
/// saves it with its test accuracy into `out`. Returns the summary line.
///
/// # Errors
/// Bad settings, data errors, or I/O errors.
pub fn train(args: &ClassifierTraining, out: &Path) -> Result<String> {
    if args.epochs == 0 || args.batch == 0 || !args.lr.is_finite() || args.lr <= 0.0 {
        return Err(Error::InvalidArgument { what: "--epochs/--batch/--lr", reason: "must be positive".into() });
    }
    crate::run::validate::writable_file("--out", out)?;
    let train_split = load_mnist(Split::Train)?;
    let test_split = load_mnist(Split::Test)?;
    let mut rng = tensor::rng(args.seed);
    let mut classifier = Classifier::<f32>::new(&mut rng);
    let mut optimizer = Adam::adamw(args.lr, 0.0);
    let steps_per_epoch = train_split.len().div_ceil(args.batch);
    let total = args.epochs * steps_per_epoch;
    let started = Instant::now();
    let mut step = 0;
    let mut log = String::new();
    for epoch in 0..args.epochs {
        let mut order: Vec<usize> = (0..train_split.len()).collect();
        order.shuffle(&mut Rng::seed_from_u64(args.seed.wrapping_add(1 + epoch as u64)));
        let mut loss_sum = 0.0;
        for batch in train_split.batches(&order, args.batch)? {
            // Warmup, then a straight line down to zero after the last step.
            let warmup = (step + 1) as f64 / WARMUP as f64;
            let decay = (total - step) as f64 / total.saturating_sub(WARMUP).max(1) as f64;
            let lr = args.lr * warmup.min(decay);
            optimizer.set_lr(lr);
            let mut images = batch.images;
            random_shifts(&mut images, &mut rng);
            let x = Tensor::from_vec(images, &[batch.indices.len(), 1, 28, 28])?;
            let labels: Vec<usize> = batch.labels.iter().map(|&l| usize::from(l)).collect();
            let loss = classifier.forward(&x)?.cross_entropy(&labels)?;
            loss_sum += f64::from(loss.item()?);
            let grads = loss.backward()?;
            drop(loss);
            optimizer.step(&mut classifier, &grads)?;
            step += 1;
        }
        let test_accuracy = accuracy(&classifier, &test_split)?;
        let line = format!(
            "epoch {}: mean loss {:.4}, test accuracy {:.2}% ({:.0} s)",
            epoch + 1,
            loss_sum / steps_per_epoch as f64,
            100.0 * test_accuracy,
            started.elapsed().as_secs_f64()
        );
        eprintln!("{line}");
        log = line;
    }
    let test_accuracy = accuracy(&classifier, &test_split)?;
    let seconds = started.elapsed().as_secs_f64();
    let metadata = BTreeMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("test_accuracy".to_string(), format!("{test_accuracy:.4}")),
        ("epochs".to_string(), args.epochs.to_string()),
        ("batch".to_string(), args.batch.to_string()),
        ("lr".to_string(), args.lr.to_string()),
        ("seed".to_string(), args.seed.to_string()),
        ("seconds".to_string(), format!("{seconds:.0}")),
    ]);
    let checkpoint = Checkpoint { model: classifier.named_params(), metadata, ..Checkpoint::default() };
    checkpoint.save(out)?;
    Ok(format!("{log}; {} steps in {seconds:.0} s -> {}", total, out.display()))
}

/// `ddpm classifier test`: the accuracy of saved weights on the MNIST test split.
///
/// # Errors
/// A missing or bad classifier file, or data errors.
pub fn test(path: &Path) -> Result<String> {
    let classifier = load(path)?;
    let test_split = load_mnist(Split::Test)?;
    let accuracy = accuracy(&classifier, &test_split)?;
    Ok(format!("{}: test accuracy {:.2}% on {} images", path.display(), 100.0 * accuracy, test_split.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shift_moves_the_pixels_and_fills_with_background() {
        let mut image = vec![0.5f32; PIXELS];
        image[0] = 1.0; // (0, 0)
        shift(&mut image, 1, 2);
        assert_eq!(image[28 + 2], 1.0, "(0, 0) moved to (1, 2)");
        assert!(image[..28].iter().all(|&v| v == -1.0), "row 0 is uncovered");
        assert!((0..28).all(|y| image[y * 28] == -1.0 && image[y * 28 + 1] == -1.0), "columns 0 and 1 are uncovered");
        assert_eq!(image.iter().filter(|&&v| v == 0.5).count(), 27 * 26 - 1, "the rest moved along");
    }
}
