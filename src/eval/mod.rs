//! Evaluation: how good a model is, in numbers.
//!
//! - [`bound`]: `ddpm nll`, the variational bound on test images;
//! - [`classifier`]: the MNIST classifier that judges samples;
//! - [`metrics`]: class entropy, Gaussian fits and the Frechet distance;
//! - [`judge`]: `ddpm eval`, the classifier's verdict on a model's samples.

pub mod bound;
pub mod classifier;
pub mod judge;
pub mod metrics;
