//! The forward (noising) process q: one step, the closed form from x_0, sampling by
//! reparameterisation, and the two inversions between x_0 and the noise.
//!
//! Shapes: `x_start` (x_0), `x_prev`, `x_t` and `noise` are `[B, ...]`; `t` holds one
//! code timestep per batch item (`t.len() == B`, code index = paper t - 1, see
//! [`crate::schedule`]).

use crate::error::Result;
use crate::gaussian::DiagonalGaussian;
use crate::schedule::{coefficient_at, NoiseSchedule};
use tensor::{Float, Tensor};

/// A `[B, 1, ..]` coefficient broadcast to the full shape `dims` (for variances,
/// which the reference returns at the shape of `x`).
pub(crate) fn full_coefficient<T: Float>(op: &'static str, values: &[f64], t: &[usize], dims: &[usize]) -> Result<Tensor<T>> {
    Ok(coefficient_at::<T>(op, values, t, dims)?.broadcast_to(dims)?.contiguous()?)
}

/// One forward step q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)
/// (Ho et al. eq. 2; notes 003 eq. 1): its mean, variance and log-variance.
///
/// # Errors
/// A timestep out of range or not one per batch item.
pub fn q_step_mean_variance<T: Float>(schedule: &NoiseSchedule, x_prev: &Tensor<T>, t: &[usize]) -> Result<DiagonalGaussian<T>> {
    let op = "q_step_mean_variance";
    Ok(DiagonalGaussian {
        mean: x_prev.mul(&coefficient_at(op, &schedule.sqrt_alphas, t, x_prev.dims())?)?,
        variance: full_coefficient(op, &schedule.betas, t, x_prev.dims())?,
        log_variance: full_coefficient(op, &schedule.log_betas, t, x_prev.dims())?,
    })
}

/// A draw from one forward step: x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) noise
/// (Ho et al. eq. 2 by reparameterisation).
///
/// # Errors
/// A timestep out of range, not one per batch item, or `noise` of another shape.
pub fn q_step_sample<T: Float>(schedule: &NoiseSchedule, x_prev: &Tensor<T>, t: &[usize], noise: &Tensor<T>) -> Result<Tensor<T>> {
    let op = "q_step_sample";
    let signal = x_prev.mul(&coefficient_at(op, &schedule.sqrt_alphas, t, x_prev.dims())?)?;
    Ok(signal.add(&noise.mul(&coefficient_at(op, &schedule.sqrt_betas, t, noise.dims())?)?)?)
}

/// The closed form q(x_t | x_0) = N(sqrt(alpha-bar_t) x_0, (1 - alpha-bar_t) I)
/// (Ho et al. eq. 4; notes 002 §2.4.2, notes 003 eq. 3): mean, variance, log-variance.
///
/// # Errors
/// A timestep out of range or not one per batch item.
pub fn q_mean_variance<T: Float>(schedule: &NoiseSchedule, x_start: &Tensor<T>, t: &[usize]) -> Result<DiagonalGaussian<T>> {
    let op = "q_mean_variance";
    let dims = x_start.dims();
    Ok(DiagonalGaussian {
        mean: x_start.mul(&coefficient_at(op, &schedule.sqrt_alphas_cumprod, t, dims)?)?,
        variance: full_coefficient(op, &schedule.one_minus_alphas_cumprod, t, dims)?,
        log_variance: full_coefficient(op, &schedule.log_one_minus_alphas_cumprod, t, dims)?,
    })
}

/// A draw from q(x_t | x_0) by reparameterisation:
/// `x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) noise` (Ho et al. eq. 4 and
/// the x_t(x_0, eps) of §3.2; Algorithm 1 line 5).
///
/// # Errors
/// A timestep out of range, not one per batch item, or `noise` of another shape.
pub fn q_sample<T: Float>(schedule: &NoiseSchedule, x_start: &Tensor<T>, t: &[usize], noise: &Tensor<T>) -> Result<Tensor<T>> {
    let op = "q_sample";
    let signal = x_start.mul(&coefficient_at(op, &schedule.sqrt_alphas_cumprod, t, x_start.dims())?)?;
    let scaled_noise = noise.mul(&coefficient_at(op, &schedule.sqrt_one_minus_alphas_cumprod, t, noise.dims())?)?;
    Ok(signal.add(&scaled_noise)?)
}

/// x_0 recovered from x_t and the noise that made it, by solving q_sample for x_0
/// (Ho et al. §3.2 below eq. 9; notes 000, notes 002 §3.2):
/// `x_0 = (x_t - sqrt(1 - alpha-bar_t) eps) / sqrt(alpha-bar_t)
///      = sqrt(1/alpha-bar_t) x_t - sqrt(1/alpha-bar_t - 1) eps`.
///
/// # Errors
/// A timestep out of range, not one per batch item, or shapes that disagree.
pub fn predict_xstart_from_eps<T: Float>(schedule: &NoiseSchedule, x_t: &Tensor<T>, t: &[usize], eps: &Tensor<T>) -> Result<Tensor<T>> {
    let op = "predict_xstart_from_eps";
    let scaled_x_t = x_t.mul(&coefficient_at(op, &schedule.sqrt_recip_alphas_cumprod, t, x_t.dims())?)?;
    let scaled_eps = eps.mul(&coefficient_at(op, &schedule.sqrt_recipm1_alphas_cumprod, t, eps.dims())?)?;
    Ok(scaled_x_t.sub(&scaled_eps)?)
}

/// The velocity target of (x_0, eps) at t (Salimans & Ho 2022, §4):
/// `v = sqrt(alpha-bar_t) eps - sqrt(1 - alpha-bar_t) x_0`.
///
/// Write `x_t = cos(phi) x_0 + sin(phi) eps` with `cos(phi) = sqrt(alpha-bar_t)`, a point
/// on the arc from x_0 to eps; then `v = d x_t / d phi`, its velocity along the arc
/// rather than either end. Unlike eps, whose x_0 estimate divides by `sqrt(alpha-bar_t)`
/// (near 0 where the image is mostly noise), v gives x_0 and eps back by a rotation,
/// with coefficients at most 1:
/// `x_0 = cos(phi) x_t - sin(phi) v` ([`predict_xstart_from_v`]) and
/// `eps = sin(phi) x_t + cos(phi) v`.
///
/// # Errors
/// A timestep out of range, not one per batch item, or `noise` of another shape.
pub fn velocity<T: Float>(schedule: &NoiseSchedule, x_start: &Tensor<T>, t: &[usize], noise: &Tensor<T>) -> Result<Tensor<T>> {
    cos_minus_sin("velocity", schedule, t, noise, x_start)
}

/// x_0 recovered from x_t and a velocity v (see [`velocity`]):
/// `x_0 = sqrt(alpha-bar_t) x_t - sqrt(1 - alpha-bar_t) v`, since
/// `sqrt(alpha-bar_t) x_t = alpha-bar_t x_0 + sqrt(alpha-bar_t (1 - alpha-bar_t)) eps` and
/// `sqrt(1 - alpha-bar_t) v = sqrt(alpha-bar_t (1 - alpha-bar_t)) eps - (1 - alpha-bar_t) x_0`.
///
/// # Errors
/// A timestep out of range, not one per batch item, or shapes that disagree.
pub fn predict_xstart_from_v<T: Float>(schedule: &NoiseSchedule, x_t: &Tensor<T>, t: &[usize], v: &Tensor<T>) -> Result<Tensor<T>> {
    cos_minus_sin("predict_xstart_from_v", schedule, t, x_t, v)
}

/// `cos(phi) a - sin(phi) b` with `cos(phi) = sqrt(alpha-bar_t)`, `sin(phi) =
/// sqrt(1 - alpha-bar_t)`: the second row of the turn by phi, which makes v from
/// (eps, x_0) and, the turn being its own pattern backwards, x_0 from (x_t, v).
fn cos_minus_sin<T: Float>(op: &'static str, schedule: &NoiseSchedule, t: &[usize], a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
    let scaled_a = a.mul(&coefficient_at(op, &schedule.sqrt_alphas_cumprod, t, a.dims())?)?;
    let scaled_b = b.mul(&coefficient_at(op, &schedule.sqrt_one_minus_alphas_cumprod, t, b.dims())?)?;
    Ok(scaled_a.sub(&scaled_b)?)
}

/// The noise recovered from x_t and x_0, solving q_sample for eps:
/// `eps = (x_t - sqrt(alpha-bar_t) x_0) / sqrt(1 - alpha-bar_t)
///      = (sqrt(1/alpha-bar_t) x_t - x_0) / sqrt(1/alpha-bar_t - 1)`.
///
/// # Errors
/// A timestep out of range, not one per batch item, or shapes that disagree.
pub fn predict_eps_from_xstart<T: Float>(schedule: &NoiseSchedule, x_t: &Tensor<T>, t: &[usize], x_start: &Tensor<T>) -> Result<Tensor<T>> {
    let op = "predict_eps_from_xstart";
    let scaled_x_t = x_t.mul(&coefficient_at(op, &schedule.sqrt_recip_alphas_cumprod, t, x_t.dims())?)?;
    Ok(scaled_x_t.sub(x_start)?.div(&coefficient_at(op, &schedule.sqrt_recipm1_alphas_cumprod, t, x_t.dims())?)?)
}
