//! The variational bound on -log p_theta(x_0), term by term, in bits per dimension
//! (Ho et al. eq. 5; notes 002 §2.5, notes 003 §3.1):
//!
//! `L = L_T + sum_{t=2}^T L_{t-1} + L_0`, with
//! - `L_T = KL(q(x_T | x_0) || p(x_T))`: [`prior_bpd`], no trainable parameter;
//! - `L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))` and
//!   `L_0 = -log p_theta(x_0 | x_1)`: [`vb_terms_bpd`], one per timestep;
//! - the whole sum over all T steps: [`calc_bpd_loop`].
//!
//! Bits per dimension: a term in nats summed over the data axes, divided by their
//! number D and by ln 2 (so an image's cost in bits is bpd * D).
//!
//! Shapes: `x_start`, `x_t`, `model_output` are `[B, ...]`; per-item results `[B]`;
//! per-timestep tables `[B, T]` (column `t` is code timestep t = paper t - 1).

use crate::error::{Error, Result};
use crate::forward::{predict_eps_from_xstart, q_mean_variance, q_sample};
use crate::likelihood::{discretized_gaussian_log_likelihood, normal_kl};
use crate::posterior::q_posterior_mean_variance;
use crate::predictor::NoisePredictor;
use crate::reverse::{p_mean_variance, ReverseOptions};
use crate::schedule::NoiseSchedule;
use tensor::{no_grad, Float, Rng, Tensor};

/// The mean over every axis but the first: `[B, ...] -> [B]` (a `[B]` tensor is
/// returned as is).
///
/// # Errors
/// None for a tensor of rank >= 1; [`Error::InvalidArgument`] for a scalar.
pub fn mean_flat<T: Float>(x: &Tensor<T>) -> Result<Tensor<T>> {
    match x.rank() {
        0 => Err(Error::InvalidArgument { op: "mean_flat", msg: "needs a batch axis, got a scalar".to_string() }),
        1 => Ok(x.clone()),
        rank => Ok(x.mean(&(1..rank).collect::<Vec<_>>(), false)?),
    }
}

/// Nats averaged over the data axes, in bits: `mean_flat(x) / ln 2`.
fn bits_per_dim<T: Float>(nats: &Tensor<T>) -> Result<Tensor<T>> {
    Ok(mean_flat(nats)?.mul_scalar(T::from_f64(std::f64::consts::LOG2_E)))
}

/// L_T = KL(q(x_T | x_0) || N(0, I)) in bits per dimension, `[B]` (Ho et al. eq. 5,
/// first term; notes 002 §3.1). It depends only on x_0 and the schedule, so it has no
/// trainable parameter; for a schedule with alpha-bar_T ~ 0 it is nearly 0.
///
/// # Errors
/// Shape errors (a scalar `x_start`).
pub fn prior_bpd<T: Float>(schedule: &NoiseSchedule, x_start: &Tensor<T>) -> Result<Tensor<T>> {
    let batch = x_start
        .dims()
        .first()
        .copied()
        .ok_or_else(|| Error::InvalidArgument { op: "prior_bpd", msg: "x_start needs a batch axis, got a scalar".to_string() })?;
    let last = vec![schedule.num_timesteps() - 1; batch];
    let q_last = q_mean_variance(schedule, x_start, &last)?;
    let zero = Tensor::scalar(T::ZERO);
    bits_per_dim(&normal_kl(&q_last.mean, &q_last.log_variance, &zero, &zero)?)
}

/// One term of the bound per batch item and what it was computed from.
#[derive(Clone, Debug)]
pub struct VbTerms<T: Float> {
    /// L_{t-1} (or L_0 where t = 0) in bits per dimension, `[B]`.
    pub bpd: Tensor<T>,
    /// The x_0 the model predicted, `[B, ...]`.
    pub pred_xstart: Tensor<T>,
}

/// The bound's term at code timestep t, in bits per dimension, `[B]` (Ho et al.
/// eq. 5; notes 002 §2.5 eqs. 11-13):
///
/// - for t > 0 (paper t >= 2): `L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))`,
///   the closed-form KL of two diagonal Gaussians (the posterior with its clipped
///   log-variance, see [`q_posterior_mean_variance`]);
/// - for t = 0 (paper t = 1): `L_0 = -log p_theta(x_0 | x_1)` under the discretised
///   decoder (Ho et al. eq. 13) with mean mu_theta(x_1, 1) and variance sigma_1^2.
///
/// Built from tensor ops: differentiable with respect to `model_output`.
///
/// # Errors
/// A timestep out of range, not one per batch item, or shapes that disagree.
pub fn vb_terms_bpd<T: Float>(
    schedule: &NoiseSchedule,
    model_output: &Tensor<T>,
    x_start: &Tensor<T>,
    x_t: &Tensor<T>,
    t: &[usize],
    options: ReverseOptions,
) -> Result<VbTerms<T>> {
    let posterior = q_posterior_mean_variance(schedule, x_start, x_t, t)?;
    let reverse = p_mean_variance(schedule, model_output, x_t, t, options)?;
    let kl = bits_per_dim(&normal_kl(&posterior.mean, &posterior.log_variance, &reverse.mean, &reverse.log_variance)?)?;
    let log_scales = reverse.log_variance.mul_scalar(T::from_f64(0.5));
    let decoder_nll = bits_per_dim(&discretized_gaussian_log_likelihood(x_start, &reverse.mean, &log_scales)?.neg())?;
    let is_first_step = Tensor::from_vec(t.iter().map(|&s| if s == 0 { T::ONE } else { T::ZERO }).collect(), &[t.len()])?;
    Ok(VbTerms { bpd: is_first_step.where_cond(&decoder_nll, &kl)?, pred_xstart: reverse.pred_xstart })
}

/// The full bound on a batch and its pieces (the reference's `calc_bpd_loop`).
#[derive(Clone, Debug)]
pub struct BoundTerms<T: Float> {
    /// L_T + sum_t L_{t-1} + L_0 per item, bits per dimension, `[B]`.
    pub total_bpd: Tensor<T>,
    /// L_T per item, `[B]`.
    pub prior_bpd: Tensor<T>,
    /// The term at each code timestep (column 0 is L_0), `[B, T]`.
    pub vb: Tensor<T>,
    /// mean_flat((x0_theta - x_0)^2) at each timestep, `[B, T]`.
    pub xstart_mse: Tensor<T>,
    /// mean_flat((eps_theta - eps)^2) at each timestep, `[B, T]`.
    pub mse: Tensor<T>,
}

/// The variational bound (Ho et al. eq. 5) on a batch, summed over all T timesteps:
/// for each t, draw x_t ~ q(x_t | x_0) with fresh noise from `rng`, evaluate
/// [`vb_terms_bpd`], and add [`prior_bpd`]. Each L_{t-1} is thus a one-sample
/// estimate of its expectation over x_t. Runs without recording gradients.
///
/// # Errors
/// Model errors, or shapes that disagree.
pub fn calc_bpd_loop<T: Float>(
    schedule: &NoiseSchedule,
    model: &impl NoisePredictor<T>,
    x_start: &Tensor<T>,
    options: ReverseOptions,
    rng: &mut Rng,
) -> Result<BoundTerms<T>> {
    no_grad(|| {
        let batch = x_start.dims().first().copied().unwrap_or(0);
        let num_timesteps = schedule.num_timesteps();
        let (mut vb, mut xstart_mse, mut mse) = (vec![None; num_timesteps], vec![None; num_timesteps], vec![None; num_timesteps]);
        for step in (0..num_timesteps).rev() {
            let t = vec![step; batch];
            let noise = Tensor::<T>::randn(x_start.dims(), rng);
            let x_t = q_sample(schedule, x_start, &t, &noise)?;
            let model_output = model.predict(&x_t, &t)?;
            let terms = vb_terms_bpd(schedule, &model_output, x_start, &x_t, &t, options)?;
            let eps = predict_eps_from_xstart(schedule, &x_t, &t, &terms.pred_xstart)?;
            xstart_mse[step] = Some(mean_flat(&terms.pred_xstart.sub(x_start)?.sqr())?);
            mse[step] = Some(mean_flat(&eps.sub(&noise)?.sqr())?);
            vb[step] = Some(terms.bpd);
        }
        let stack =
            |v: Vec<Option<Tensor<T>>>| -> Result<Tensor<T>> { Ok(Tensor::stack(&v.into_iter().flatten().collect::<Vec<_>>(), 1)?) };
        let vb = stack(vb)?;
        let prior_bpd = prior_bpd(schedule, x_start)?;
        let total_bpd = vb.sum(&[1], false)?.add(&prior_bpd)?;
        Ok(BoundTerms { total_bpd, prior_bpd, vb, xstart_mse: stack(xstart_mse)?, mse: stack(mse)? })
    })
}
