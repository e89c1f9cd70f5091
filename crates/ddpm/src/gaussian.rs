//! Diagonal Gaussians: the one family of distributions every step of DDPM lives in.
//!
//! Shapes: `mean`, `variance` and `log_variance` all have the shape of the data
//! batch `[B, ...]`.

use crate::error::Result;
use tensor::{Float, Tensor};

/// ln(2 pi).
pub(crate) const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// A diagonal Gaussian N(mean, diag(variance)), with its log-variance kept beside
/// the variance (the reference clips the log-variance separately from the variance
/// at t = 0, so the two are not always `exp`/`ln` of each other).
#[derive(Clone, Debug)]
pub struct DiagonalGaussian<T: Float> {
    /// The mean, `[B, ...]`.
    pub mean: Tensor<T>,
    /// The variance, `[B, ...]`.
    pub variance: Tensor<T>,
    /// The log of the variance, `[B, ...]`.
    pub log_variance: Tensor<T>,
}

/// The reparameterisation trick (Kingma & Welling 2014; notes 002 §2.4.1):
/// a draw from N(mean, exp(log_variance)) written as `mean + exp(log_variance / 2) * noise`
/// with `noise ~ N(0, I)`, so the sample is a differentiable function of the mean
/// and variance.
///
/// # Errors
/// Broadcasting errors when the shapes do not agree.
pub fn reparameterize<T: Float>(mean: &Tensor<T>, log_variance: &Tensor<T>, noise: &Tensor<T>) -> Result<Tensor<T>> {
    Ok(mean.add(&log_variance.mul_scalar(T::from_f64(0.5)).exp().mul(noise)?)?)
}

/// The log-density of N(mean, exp(log_variance)) at `x`, elementwise, in nats:
/// `-1/2 (ln 2 pi + log_variance + (x - mean)^2 / exp(log_variance))`.
///
/// # Errors
/// Broadcasting errors when the shapes do not agree.
pub fn normal_log_density<T: Float>(x: &Tensor<T>, mean: &Tensor<T>, log_variance: &Tensor<T>) -> Result<Tensor<T>> {
    let squared = x.sub(mean)?.sqr().mul(&log_variance.neg().exp())?;
    Ok(squared.add(log_variance)?.add_scalar(T::from_f64(LN_2PI)).mul_scalar(T::from_f64(-0.5)))
}
