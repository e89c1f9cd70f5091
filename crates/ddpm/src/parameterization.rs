//! The three things a network can predict for p_theta(x_{t-1} | x_t), and how they
//! weigh in the bound (Ho et al. §3.2).
//!
//! "The simplest parameterisation of mu_theta is a model that predicts mu-tilde_t, the
//! forward-process posterior mean" (Ho et al. §3.2 below eq. 8; notes 002 §3.2):
//! [`crate::Parameterization::PosteriorMean`]. Beside it are eps (Ho's choice, eq. 11), x_0
//! and the velocity v of Salimans & Ho 2022. All four define the same reverse step once
//! converted: x_0 is recovered from the prediction and plugged into mu-tilde_t (see
//! [`crate::reverse`]).
//!
//! Shapes: `x_t`, `posterior_mean` are `[B, ...]`; `t` holds one code timestep per batch
//! item (code index = paper t - 1, see [`crate::schedule`]).

use crate::error::{Error, Result};
use crate::reverse::Parameterization;
use crate::schedule::{check_timesteps, coefficient_at, NoiseSchedule};
use tensor::{Float, Tensor};

/// x_0 recovered from a predicted posterior mean, by solving
/// `mu-tilde_t = posterior_mean_coef1_t x_0 + posterior_mean_coef2_t x_t` (Ho et al. eq. 7) for x_0:
/// `x_0 = (mu - posterior_mean_coef2_t x_t) / posterior_mean_coef1_t`
/// (improved-diffusion's `_predict_xstart_from_xprev`). coef1 = sqrt(alpha-bar_{t-1}) beta_t / (1 - alpha-bar_t)
/// is positive at every t, so the division is safe.
///
/// # Errors
/// A timestep out of range, not one per batch item, or shapes that disagree.
pub fn predict_xstart_from_posterior_mean<T: Float>(
    schedule: &NoiseSchedule,
    x_t: &Tensor<T>,
    t: &[usize],
    posterior_mean: &Tensor<T>,
) -> Result<Tensor<T>> {
    let op = "predict_xstart_from_posterior_mean";
    let dims = x_t.dims();
    let from_x_t = x_t.mul(&coefficient_at(op, &schedule.posterior_mean_coef2, t, dims)?)?;
    Ok(posterior_mean.sub(&from_x_t)?.div(&coefficient_at(op, &schedule.posterior_mean_coef1, t, posterior_mean.dims())?)?)
}

/// The weight lambda_t with which the squared error of each parameterisation enters the
/// bound at code t >= 1 (paper t >= 2), for a fixed sigma_t^2:
///
/// `L_{t-1} = 1/(2 sigma_t^2) |mu-tilde_t - mu_theta|^2 + C = lambda_t |target - prediction|^2 + C`
/// (Ho et al. eq. 8), since mu-tilde_t - mu_theta equals
/// - `PosteriorMean`: the error itself, `lambda = 1 / (2 sigma^2)`;
/// - `StartX`: `coef1_t (x_0 - x0_theta)`, `lambda = coef1_t^2 / (2 sigma^2)`;
/// - `Epsilon`: `-beta_t / (sqrt(alpha_t) sqrt(1 - alpha-bar_t)) (eps - eps_theta)` (eq. 10),
///   `lambda = beta_t^2 / (2 sigma^2 alpha_t (1 - alpha-bar_t))` (eq. 12, [`crate::noise_mse_weight`]);
/// - `Velocity`: `coef1_t (x_0 - x0_theta) = -coef1_t sqrt(1 - alpha-bar_t) (v - v_theta)`
///   (x_0 is linear in v, see [`crate::predict_xstart_from_v`]),
///   `lambda = coef1_t^2 (1 - alpha-bar_t) / (2 sigma^2)`.
///
/// C depends only on the variances (0 when sigma_t^2 = beta-tilde_t).
///
/// # Errors
/// [`Error::TimestepOutOfRange`], or [`Error::InvalidArgument`] for t = 0 (L_0 is the
/// decoder, not a KL) or sigma^2 <= 0.
pub fn parameterization_mse_weight(
    schedule: &NoiseSchedule,
    parameterization: Parameterization,
    t: usize,
    sigma_squared: f64,
) -> Result<f64> {
    let op = "parameterization_mse_weight";
    check_timesteps(op, &[t], schedule.num_timesteps())?;
    if t == 0 {
        return Err(Error::InvalidArgument { op, msg: "code t = 0 is the decoder term L_0, not a Gaussian KL".to_string() });
    }
    if sigma_squared.is_nan() || sigma_squared <= 0.0 {
        return Err(Error::InvalidArgument { op, msg: format!("sigma^2 must be positive, got {sigma_squared}") });
    }
    let mean_error_scale = match parameterization {
        Parameterization::PosteriorMean => 1.0,
        Parameterization::StartX => schedule.posterior_mean_coef1[t],
        Parameterization::Epsilon => schedule.betas[t] / (schedule.alphas[t].sqrt() * schedule.sqrt_one_minus_alphas_cumprod[t]),
        Parameterization::Velocity => schedule.posterior_mean_coef1[t] * schedule.sqrt_one_minus_alphas_cumprod[t],
    };
    Ok(mean_error_scale * mean_error_scale / (2.0 * sigma_squared))
}
