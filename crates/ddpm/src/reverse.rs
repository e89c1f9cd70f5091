//! The learned reverse step p_theta(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I)
//! (Ho et al. eq. 1 and §3.2), built from a network's output.
//!
//! The network predicts the noise eps (Ho et al.'s choice, eq. 11) or x_0 directly;
//! either way the predicted x_0 is plugged into the posterior mean mu-tilde_t, so
//! `mu_theta(x_t, t) = mu-tilde_t(x_t, x0_theta(x_t, t))`. The variance is not
//! learned: sigma_t^2 is beta_t or beta-tilde_t (Ho et al. §3.2, the two extremes
//! that are optimal for x_0 ~ N(0, I) and for a deterministic x_0).
//!
//! Shapes: `model_output`, `x_t` are `[B, ...]`; `t` holds one code timestep per
//! batch item (code index = paper t - 1, see [`crate::schedule`]).

use crate::error::{Error, Result};
use crate::forward::{full_coefficient, predict_xstart_from_eps, predict_xstart_from_v};
use crate::names::by_name;
use crate::parameterization::predict_xstart_from_posterior_mean;
use crate::posterior::q_posterior_mean_variance;
use crate::schedule::NoiseSchedule;
use tensor::{Float, Tensor};

/// The fixed reverse variance sigma_t^2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarianceKind {
    /// sigma_t^2 = beta_t: the upper extreme, optimal for x_0 ~ N(0, I). As in the
    /// reference, the first entry is beta-tilde at code index 1 instead of beta_1, so
    /// the decoder p(x_0 | x_1) is not wider than the posterior (a slightly better bound).
    FixedLarge,
    /// sigma_t^2 = beta-tilde_t: the lower extreme, optimal for a deterministic x_0.
    /// The variance is 0 at code index 0, its log is clipped to log beta-tilde at index 1.
    FixedSmall,
}

impl VarianceKind {
    /// The names of the variances, as `FromStr` and `Display` spell them.
    pub const NAMES: [(&'static str, VarianceKind); 2] =
        [("fixed-large", VarianceKind::FixedLarge), ("fixed-small", VarianceKind::FixedSmall)];

    /// sigma_t^2 and log sigma_t^2 for every code timestep, each `[T]`.
    #[must_use]
    pub fn variances(self, schedule: &NoiseSchedule) -> (Vec<f64>, Vec<f64>) {
        match self {
            VarianceKind::FixedLarge => {
                let variance: Vec<f64> =
                    std::iter::once(schedule.posterior_variance[1]).chain(schedule.betas[1..].iter().copied()).collect();
                let log_variance = variance.iter().map(|v| v.ln()).collect();
                (variance, log_variance)
            }
            VarianceKind::FixedSmall => (schedule.posterior_variance.clone(), schedule.posterior_log_variance_clipped.clone()),
        }
    }
}

by_name!(VarianceKind, "variance");

/// What the network outputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Parameterization {
    /// The noise eps in x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps (Ho et al. eq. 11).
    #[default]
    Epsilon,
    /// x_0 itself.
    StartX,
    /// The posterior mean mu-tilde_t(x_t, x_0) itself, "the simplest parameterisation"
    /// (Ho et al. §3.2 below eq. 8); see [`crate::parameterization`].
    PosteriorMean,
    /// The velocity `v = sqrt(alpha-bar_t) eps - sqrt(1 - alpha-bar_t) x_0` (Salimans &
    /// Ho 2022, "Progressive Distillation", §4), the rate of change of x_t along the
    /// circle `x_t = cos(phi) x_0 + sin(phi) eps`, `sin(phi) = sqrt(1 - alpha-bar_t)`:
    /// see [`crate::velocity`].
    Velocity,
}

impl Parameterization {
    /// The names of the parameterisations, as `FromStr` and `Display` spell them.
    pub const NAMES: [(&'static str, Parameterization); 3] =
        [("eps", Parameterization::Epsilon), ("x0", Parameterization::StartX), ("v", Parameterization::Velocity)];
}

by_name!(Parameterization, "prediction");

/// How a model output becomes p_theta(x_{t-1} | x_t).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReverseOptions {
    /// sigma_t^2.
    pub variance: VarianceKind,
    /// What the network predicts.
    pub parameterization: Parameterization,
    /// Clip the predicted x_0 to [-1, 1], the range of the data (sampling only:
    /// clipping is not part of the bound).
    pub clip_denoised: bool,
}

impl Default for ReverseOptions {
    /// Ho et al.'s sampler: eps prediction, sigma^2 = beta, clipped x_0.
    fn default() -> Self {
        ReverseOptions { variance: VarianceKind::FixedLarge, parameterization: Parameterization::Epsilon, clip_denoised: true }
    }
}

/// p_theta(x_{t-1} | x_t) and the x_0 it was built from.
#[derive(Clone, Debug)]
pub struct ReverseStep<T: Float> {
    /// mu_theta(x_t, t), `[B, ...]`.
    pub mean: Tensor<T>,
    /// sigma_t^2, `[B, ...]`.
    pub variance: Tensor<T>,
    /// log sigma_t^2 (clipped at code index 0 for `FixedSmall`), `[B, ...]`.
    pub log_variance: Tensor<T>,
    /// x0_theta(x_t, t), the predicted x_0 (clipped if asked), `[B, ...]`.
    pub pred_xstart: Tensor<T>,
}

/// The predicted x_0 from a model output: `model_output` itself for
/// [`Parameterization::StartX`], x_0 from (x_t, eps_theta) by [`predict_xstart_from_eps`],
/// from (x_t, mu_theta) by [`predict_xstart_from_posterior_mean`], or from (x_t, v_theta)
/// by [`predict_xstart_from_v`]; clipped to [-1, 1] when `clip_denoised`.
///
/// # Errors
/// A timestep out of range, not one per batch item, or shapes that disagree.
pub fn predict_xstart<T: Float>(
    schedule: &NoiseSchedule,
    model_output: &Tensor<T>,
    x_t: &Tensor<T>,
    t: &[usize],
    parameterization: Parameterization,
    clip_denoised: bool,
) -> Result<Tensor<T>> {
    let pred_xstart = match parameterization {
        Parameterization::Epsilon => predict_xstart_from_eps(schedule, x_t, t, model_output)?,
        Parameterization::StartX => model_output.clone(),
        Parameterization::PosteriorMean => predict_xstart_from_posterior_mean(schedule, x_t, t, model_output)?,
        Parameterization::Velocity => predict_xstart_from_v(schedule, x_t, t, model_output)?,
    };
    Ok(if clip_denoised { pred_xstart.clamp(-T::ONE, T::ONE) } else { pred_xstart })
}

/// The reverse step p_theta(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I) from a
/// model output (Ho et al. eq. 1, §3.2; notes 002 §3.2, notes 003 eq. 5):
/// `mu_theta = mu-tilde_t(x_t, x0_theta)`, which for eps prediction without clipping
/// equals `1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha-bar_t) eps_theta)` (eq. 11).
///
/// # Errors
/// A timestep out of range, not one per batch item, or shapes that disagree.
pub fn p_mean_variance<T: Float>(
    schedule: &NoiseSchedule,
    model_output: &Tensor<T>,
    x_t: &Tensor<T>,
    t: &[usize],
    options: ReverseOptions,
) -> Result<ReverseStep<T>> {
    let op = "p_mean_variance";
    if model_output.dims() != x_t.dims() {
        return Err(Error::InvalidArgument {
            op,
            msg: format!("the model output {:?} must have the shape of x_t {:?}", model_output.dims(), x_t.dims()),
        });
    }
    let pred_xstart = predict_xstart(schedule, model_output, x_t, t, options.parameterization, options.clip_denoised)?;
    let posterior = q_posterior_mean_variance(schedule, &pred_xstart, x_t, t)?;
    let (variance, log_variance) = options.variance.variances(schedule);
    Ok(ReverseStep {
        mean: posterior.mean,
        variance: full_coefficient(op, &variance, t, x_t.dims())?,
        log_variance: full_coefficient(op, &log_variance, t, x_t.dims())?,
        pred_xstart,
    })
}
