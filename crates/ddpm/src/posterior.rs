//! The forward-process posterior q(x_{t-1} | x_t, x_0): the reverse step that would
//! be exact if x_0 were known, and the target every reverse step is trained toward.
//!
//! Shapes: `x_start`, `x_t`, `eps` are `[B, ...]`; `t` holds one code timestep per
//! batch item (code index = paper t - 1, see [`crate::schedule`]).

use crate::error::Result;
use crate::forward::full_coefficient;
use crate::gaussian::DiagonalGaussian;
use crate::schedule::{coefficient_at, NoiseSchedule};
use tensor::{Float, Tensor};

/// The posterior q(x_{t-1} | x_t, x_0) = N(mu-tilde_t(x_t, x_0), beta-tilde_t I)
/// (Ho et al. eqs. 6-7; notes 002 §2.6, notes 003 §3), found by Bayes' rule
/// q(x_{t-1} | x_t, x_0) = q(x_t | x_{t-1}) q(x_{t-1} | x_0) / q(x_t | x_0) and
/// completing the square in x_{t-1}:
///
/// - `mu-tilde_t = posterior_mean_coef1_t x_0 + posterior_mean_coef2_t x_t`
///   `= sqrt(alpha-bar_{t-1}) beta_t / (1 - alpha-bar_t) x_0 + sqrt(alpha_t) (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t) x_t`;
/// - `beta-tilde_t = (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t) beta_t`.
///
/// The returned `log_variance` is the *clipped* one (`posterior_log_variance_clipped`):
/// at code index 0 the variance is 0 and its log is replaced by log beta-tilde at
/// index 1, as in the reference.
///
/// # Errors
/// A timestep out of range, not one per batch item, or shapes that disagree.
pub fn q_posterior_mean_variance<T: Float>(
    schedule: &NoiseSchedule,
    x_start: &Tensor<T>,
    x_t: &Tensor<T>,
    t: &[usize],
) -> Result<DiagonalGaussian<T>> {
    let op = "q_posterior_mean_variance";
    let dims = x_t.dims();
    let from_x_start = x_start.mul(&coefficient_at(op, &schedule.posterior_mean_coef1, t, x_start.dims())?)?;
    let from_x_t = x_t.mul(&coefficient_at(op, &schedule.posterior_mean_coef2, t, dims)?)?;
    Ok(DiagonalGaussian {
        mean: from_x_start.add(&from_x_t)?,
        variance: full_coefficient(op, &schedule.posterior_variance, t, dims)?,
        log_variance: full_coefficient(op, &schedule.posterior_log_variance_clipped, t, dims)?,
    })
}

/// The posterior mean written with the noise instead of x_0 (Ho et al. eq. 10;
/// notes 002 §3.2, notes 003 eq. 13): substituting x_0 = (x_t - sqrt(1 - alpha-bar_t) eps) / sqrt(alpha-bar_t)
/// into mu-tilde gives
/// `mu-tilde_t = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha-bar_t) eps)`.
/// With eps replaced by a prediction eps_theta this is the mean of Algorithm 2.
///
/// # Errors
/// A timestep out of range, not one per batch item, or shapes that disagree.
pub fn q_posterior_mean_from_eps<T: Float>(schedule: &NoiseSchedule, x_t: &Tensor<T>, t: &[usize], eps: &Tensor<T>) -> Result<Tensor<T>> {
    let op = "q_posterior_mean_from_eps";
    let inner = x_t.sub(&eps.mul(&coefficient_at(op, &schedule.posterior_mean_eps_coef, t, eps.dims())?)?)?;
    Ok(inner.mul(&coefficient_at(op, &schedule.recip_sqrt_alphas, t, x_t.dims())?)?)
}
