//! Distances and likelihoods in nats: the KL divergence between diagonal Gaussians
//! (every L_{t-1} and L_T), and the discretised Gaussian decoder p(x_0 | x_1) (L_0).
//!
//! Shapes: all tensors are elementwise and broadcast together (typically `[B, ...]`).
//! Everything returned here is per element, in nats; [`crate::bound`] averages over
//! the data axes and converts to bits per dimension.

use crate::error::Result;
use tensor::{Float, Tensor};

/// Pixel values are 256 levels spread evenly over [-1, 1]: bins of width 2/255,
/// whose half-width is 1/255.
pub const BIN_HALF_WIDTH: f64 = 1.0 / 255.0;
/// Below this value a pixel is in the lowest bin, which extends to -infinity.
pub const LOWEST_BIN_EDGE: f64 = -0.999;
/// Above this value a pixel is in the highest bin, which extends to +infinity.
pub const HIGHEST_BIN_EDGE: f64 = 0.999;
/// Probabilities are floored here before the log, as in the reference.
pub const PROBABILITY_FLOOR: f64 = 1e-12;

/// KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats
/// (the closed form used for every term of Ho et al. eq. 5; notes 002 §3.2):
/// `1/2 (-1 + logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2))`.
///
/// # Errors
/// Broadcasting errors when the shapes do not agree.
pub fn normal_kl<T: Float>(mean1: &Tensor<T>, logvar1: &Tensor<T>, mean2: &Tensor<T>, logvar2: &Tensor<T>) -> Result<Tensor<T>> {
    let variance_ratio = logvar1.sub(logvar2)?.exp();
    let mean_term = mean1.sub(mean2)?.sqr().mul(&logvar2.neg().exp())?;
    let total = logvar2.sub(logvar1)?.add(&variance_ratio)?.add(&mean_term)?.add_scalar(-T::ONE);
    Ok(total.mul_scalar(T::from_f64(0.5)))
}

/// sqrt(2 / pi).
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
/// The cubic coefficient of the tanh approximation.
const TANH_CDF_CUBIC: f64 = 0.044_715;

/// The standard normal CDF by the tanh approximation the reference uses (Page 1977;
/// the same curve as the tanh GELU):
/// `Phi(x) ~ 1/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`. Built from tensor ops,
/// so it is differentiable.
///
/// # Errors
/// None in practice (elementwise ops on one tensor).
pub fn approx_standard_normal_cdf<T: Float>(x: &Tensor<T>) -> Result<Tensor<T>> {
    let cubic = x.mul(x)?.mul(x)?.mul_scalar(T::from_f64(TANH_CDF_CUBIC));
    let half = T::from_f64(0.5);
    Ok(x.add(&cubic)?.mul_scalar(T::from_f64(SQRT_2_OVER_PI)).tanh().affine(half, half))
}

/// The same approximation on one f64.
#[must_use]
pub fn approx_standard_normal_cdf_f64(x: f64) -> f64 {
    0.5 * (1.0 + (SQRT_2_OVER_PI * (x + TANH_CDF_CUBIC * x * x * x)).tanh())
}

/// 2 / sqrt(pi).
const TWO_OVER_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;
/// Below this |x| [`erf`] uses its power series, above it the continued fraction of erfc.
const ERF_SERIES_LIMIT: f64 = 3.0;

/// erf(x) = 2/sqrt(pi) int_0^x exp(-s^2) ds, to about 1e-15 relative error.
///
/// For |x| < 3 the series with positive terms (no cancellation)
/// `erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (1 * 3 * ... * (2n+1))`
/// (Abramowitz & Stegun 7.1.6); above, `1 - erfc(x)` with erfc's continued fraction.
#[must_use]
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x.abs() >= ERF_SERIES_LIMIT {
        return x.signum() * (1.0 - erfc_continued_fraction(x.abs()));
    }
    let two_x_squared = 2.0 * x * x;
    let (mut term, mut sum, mut n) = (x, x, 0.0);
    while term.abs() > 1e-17 * sum.abs() {
        n += 1.0;
        term *= two_x_squared / (2.0 * n + 1.0);
        sum += term;
    }
    TWO_OVER_SQRT_PI * (-x * x).exp() * sum
}

/// erfc(x) = 1 - erf(x), accurate in the upper tail (relative error about 1e-14
/// where erfc is tiny), which the exact decoder needs for its edge bins.
#[must_use]
pub fn erfc(x: f64) -> f64 {
    if x >= ERF_SERIES_LIMIT {
        erfc_continued_fraction(x)
    } else {
        1.0 - erf(x)
    }
}

/// erfc for x >= 3 by the continued fraction (A&S 7.1.14)
/// `erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))`,
/// evaluated by Lentz's method. Every partial numerator `n/2` is positive, so for
/// x >= 3 each `c` and `1/d` is at least x: no division by a near-zero value, and
/// the tiny-value guard of the *modified* Lentz method is never needed.
fn erfc_continued_fraction(x: f64) -> f64 {
    debug_assert!(x >= ERF_SERIES_LIMIT, "erfc_continued_fraction: {x} is below the range it converges fast in");
    let mut f = x;
    let (mut c, mut d) = (x, 0.0);
    for n in 1..500 {
        let a = f64::from(n) / 2.0;
        d = 1.0 / (x + a * d);
        c = x + a / c;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / (std::f64::consts::PI.sqrt() * f)
}

/// The exact standard normal CDF Phi(x) = erfc(-x / sqrt 2) / 2.
#[must_use]
pub fn standard_normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// log p(x_0 | x_1) for the discretised Gaussian decoder (Ho et al. eq. 13), per
/// element, in nats, with the reference's tanh CDF:
///
/// `p(x | mean, scale) = Phi((x + 1/255 - mean) / scale) - Phi((x - 1/255 - mean) / scale)`,
///
/// where the lowest bin (x < -0.999) extends to -infinity (`Phi(upper edge)`) and the
/// highest (x > 0.999) to +infinity (`1 - Phi(lower edge)`); probabilities are floored
/// at 1e-12 before the log. Built from tensor ops, so it is differentiable in `means`
/// and `log_scales`.
///
/// `x` are pixels on the 256-level grid of [-1, 1]; `log_scales` is log sigma (half
/// the log-variance).
///
/// # Errors
/// Broadcasting errors when the shapes do not agree.
pub fn discretized_gaussian_log_likelihood<T: Float>(x: &Tensor<T>, means: &Tensor<T>, log_scales: &Tensor<T>) -> Result<Tensor<T>> {
    let centered_x = x.sub(means)?;
    let inv_stdv = log_scales.neg().exp();
    let half_width = T::from_f64(BIN_HALF_WIDTH);
    let cdf_plus = approx_standard_normal_cdf(&centered_x.add_scalar(half_width).mul(&inv_stdv)?)?;
    let cdf_min = approx_standard_normal_cdf(&centered_x.add_scalar(-half_width).mul(&inv_stdv)?)?;
    let floor = |p: Tensor<T>| p.clamp(T::from_f64(PROBABILITY_FLOOR), T::max_value()).log();
    let log_cdf_plus = floor(cdf_plus.clone());
    let log_one_minus_cdf_min = floor(cdf_min.affine(-T::ONE, T::ONE));
    let log_cdf_delta = floor(cdf_plus.sub(&cdf_min)?);
    let in_lowest_bin = x.lt(&Tensor::scalar(T::from_f64(LOWEST_BIN_EDGE)))?;
    let in_highest_bin = x.gt(&Tensor::scalar(T::from_f64(HIGHEST_BIN_EDGE)))?;
    let upper_or_middle = in_highest_bin.where_cond(&log_one_minus_cdf_min, &log_cdf_delta)?;
    Ok(in_lowest_bin.where_cond(&log_cdf_plus, &upper_or_middle)?)
}

/// The same decoder with the exact normal CDF (via [`erf`]/[`erfc`]) instead of the
/// tanh approximation, computed in f64 per element. It is a reference for measuring
/// the approximation, not a training loss: no gradient flows through it.
///
/// Bin masses in the upper half are computed from the upper tail
/// `Q(a) - Q(b)` (Q = 1 - Phi) so no precision is lost to cancellation.
///
/// # Errors
/// Broadcasting errors when the shapes do not agree.
pub fn discretized_gaussian_log_likelihood_exact<T: Float>(x: &Tensor<T>, means: &Tensor<T>, log_scales: &Tensor<T>) -> Result<Tensor<T>> {
    let dims = tensor::shape::broadcast_shape("discretized_gaussian_log_likelihood_exact", x.dims(), means.dims())?;
    let dims = tensor::shape::broadcast_shape("discretized_gaussian_log_likelihood_exact", &dims, log_scales.dims())?;
    let (x, means, log_scales) =
        (x.broadcast_to(&dims)?.to_vec(), means.broadcast_to(&dims)?.to_vec(), log_scales.broadcast_to(&dims)?.to_vec());
    let data = x
        .iter()
        .zip(means.iter().zip(&log_scales))
        .map(|(&x, (&m, &s))| T::from_f64(discretized_log_probability_exact(x.to_f64(), m.to_f64(), s.to_f64())))
        .collect();
    Ok(Tensor::from_vec(data, &dims)?)
}

/// One element of [`discretized_gaussian_log_likelihood_exact`].
#[must_use]
pub fn discretized_log_probability_exact(x: f64, mean: f64, log_scale: f64) -> f64 {
    let inv_stdv = (-log_scale).exp();
    let upper = (x - mean + BIN_HALF_WIDTH) * inv_stdv;
    let lower = (x - mean - BIN_HALF_WIDTH) * inv_stdv;
    let upper_tail = |z: f64| 0.5 * erfc(z / std::f64::consts::SQRT_2);
    let probability = if x < LOWEST_BIN_EDGE {
        standard_normal_cdf(upper)
    } else if x > HIGHEST_BIN_EDGE {
        upper_tail(lower)
    } else if lower > 0.0 {
        upper_tail(lower) - upper_tail(upper)
    } else {
        standard_normal_cdf(upper) - standard_normal_cdf(lower)
    };
    probability.max(PROBABILITY_FLOOR).ln()
}
