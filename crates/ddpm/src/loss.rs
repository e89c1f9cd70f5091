//! Training objectives (Ho et al. §3.4, Nichol & Dhariwal 2021 §3.1) and the weight
//! that turns the bound's L_{t-1} into a noise regression.
//!
//! Shapes: `x_start` and `noise` are `[B, ...]`; `t` holds one code timestep per
//! batch item (code index = paper t - 1, see [`crate::schedule`]); per-item losses
//! are `[B]`; the returned loss is a scalar.

use crate::bound::{mean_flat, vb_terms_bpd};
use crate::error::{Error, Result};
use crate::forward::{q_sample, velocity};
use crate::names::by_name;
use crate::posterior::q_posterior_mean_variance;
use crate::predictor::NoisePredictor;
use crate::reverse::{Parameterization, ReverseOptions, VarianceKind};
use crate::schedule::{check_timesteps, NoiseSchedule};
use tensor::{Float, Rng, Tensor};

/// The weight of the noise error in L_{t-1} (Ho et al. eq. 12; notes 002 §3.2,
/// notes 003 §3.1): with sigma_t^2 fixed and the mean written in eps,
///
/// `KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) = w_t |eps - eps_theta|^2 + C`,
/// `w_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha-bar_t))`,
///
/// where C depends only on the variances (0 when sigma_t^2 = beta-tilde_t). `t` is a
/// code timestep; the paper's L_simple drops w_t (sets it to 1).
///
/// # Errors
/// [`Error::TimestepOutOfRange`], or [`Error::InvalidArgument`] for sigma^2 <= 0.
pub fn noise_mse_weight(schedule: &NoiseSchedule, t: usize, sigma_squared: f64) -> Result<f64> {
    check_timesteps("noise_mse_weight", &[t], schedule.num_timesteps())?;
    if sigma_squared.is_nan() || sigma_squared <= 0.0 {
        return Err(Error::InvalidArgument { op: "noise_mse_weight", msg: format!("sigma^2 must be positive, got {sigma_squared}") });
    }
    let (beta, alpha, alpha_cumprod) = (schedule.betas[t], schedule.alphas[t], schedule.alphas_cumprod[t]);
    Ok(beta * beta / (2.0 * sigma_squared * alpha * (1.0 - alpha_cumprod)))
}

/// Which objective to train on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    /// L_simple = E |eps - eps_theta(x_t, t)|^2 (Ho et al. eq. 14), as a mean over
    /// the data axes; for x_0 prediction, E |x_0 - x0_theta|^2; for posterior-mean
    /// prediction, E |mu-tilde_t(x_t, x_0) - mu_theta|^2; for velocity prediction,
    /// E |v - v_theta|^2.
    Simple,
    /// The bound itself: T * L_t(in bits per dimension) for a uniform t, an unbiased
    /// one-sample estimate of sum_t L_{t-1} + L_0 (the bound without the constant L_T).
    Vlb,
    /// L_simple + lambda L_vlb (Nichol & Dhariwal 2021 eq. 16), lambda being
    /// [`TrainingOptions::hybrid_lambda`].
    Hybrid,
}

/// How the regression error of each timestep is weighted in L_simple.
///
/// L_simple weights every t alike, which already departs from the bound (whose
/// weight w_t of [`noise_mse_weight`] is large at small t). Min-SNR-gamma (Hang et
/// al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy", eq. 7)
/// goes further: measured as an error on x_0, the step at t weighs
/// `min(SNR_t, gamma)`, SNR_t = alpha-bar_t / (1 - alpha-bar_t), so the nearly clean
/// timesteps, whose x_0 error is tiny and easy, stop dominating the gradient. Since
/// `|x_0 - x0_theta|^2 = |eps - eps_theta|^2 / SNR_t`, the same weighting on the noise
/// error is `min(SNR_t, gamma) / SNR_t`, on the posterior mean's error
/// `min(SNR_t, gamma) / posterior_mean_coef1_t^2`, and on the velocity's error, since
/// `|x_0 - x0_theta|^2 = (1 - alpha-bar_t) |v - v_theta|^2`,
/// `min(SNR_t, gamma) (1 - alpha-bar_t) = min(SNR_t, gamma) / (SNR_t + 1)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TimestepWeighting {
    /// Every timestep weighs 1 (Ho et al.'s L_simple).
    Uniform,
    /// Min-SNR-gamma; the paper's gamma is 5.
    MinSnr {
        /// The SNR at which the weight stops growing.
        gamma: f64,
    },
}

impl TimestepWeighting {
    /// The weight of the regression error at code timestep `t`, for a network that
    /// predicts per `parameterization`.
    #[must_use]
    pub fn weight(self, schedule: &NoiseSchedule, t: usize, parameterization: Parameterization) -> f64 {
        match self {
            TimestepWeighting::Uniform => 1.0,
            TimestepWeighting::MinSnr { gamma } => {
                let alpha_cumprod = schedule.alphas_cumprod[t];
                let snr = alpha_cumprod / (1.0 - alpha_cumprod);
                // The error of each prediction in units of the x_0 error:
                // eps_err^2 = SNR x0_err^2, mu_err = posterior_mean_coef1 x0_err,
                // x0_err^2 = (1 - alpha-bar) v_err^2.
                match parameterization {
                    Parameterization::Epsilon => snr.min(gamma) / snr,
                    Parameterization::StartX => snr.min(gamma),
                    Parameterization::PosteriorMean => snr.min(gamma) / schedule.posterior_mean_coef1[t].powi(2),
                    Parameterization::Velocity => snr.min(gamma) * (1.0 - alpha_cumprod),
                }
            }
        }
    }
}
impl LossKind {
    /// The names of the objectives, as `FromStr` and `Display` spell them.
    pub const NAMES: [(&'static str, LossKind); 3] = [("simple", LossKind::Simple), ("vlb", LossKind::Vlb), ("hybrid", LossKind::Hybrid)];
}

by_name!(LossKind, "loss");

/// Nichol & Dhariwal's weight of L_vlb in the hybrid objective (their eq. 16).
pub const HYBRID_LAMBDA: f64 = 0.001;

/// The training configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainingOptions {
    /// The objective.
    pub loss: LossKind,
    /// What the network predicts.
    pub parameterization: Parameterization,
    /// sigma_t^2 of p_theta, used by the bound terms.
    pub variance: VarianceKind,
    /// The weight of each timestep's regression error (the bound term is never
    /// reweighted: it stays the bound).
    pub weighting: TimestepWeighting,
    /// The weight lambda of L_vlb in [`LossKind::Hybrid`] (unused by the others).
    pub hybrid_lambda: f64,
    /// How a training step draws its batch's timesteps (not used by
    /// [`training_losses`], which is handed them).
    pub timestep_sampling: TimestepSampling,
}

impl Default for TrainingOptions {
    /// Ho et al.: L_simple on the noise, sigma^2 = beta, every t weighted alike (and
    /// N&D's lambda for the hybrid).
    fn default() -> Self {
        TrainingOptions {
            loss: LossKind::Simple,
            parameterization: Parameterization::Epsilon,
            variance: VarianceKind::FixedLarge,
            weighting: TimestepWeighting::Uniform,
            hybrid_lambda: HYBRID_LAMBDA,
            timestep_sampling: TimestepSampling::Uniform,
        }
    }
}

/// A training loss and its parts.
#[derive(Clone, Debug)]
pub struct TrainingLosses<T: Float> {
    /// The scalar to minimise: the batch mean of the per-item loss.
    pub loss: Tensor<T>,
    /// The per-item regression error, `[B]`, for `Simple` and `Hybrid`.
    pub mse: Option<Tensor<T>>,
    /// The per-item bound term in bits per dimension (not yet multiplied by T), `[B]`,
    /// for `Vlb` and `Hybrid`.
    pub vb: Option<Tensor<T>>,
}

/// The training loss on a batch (Algorithm 1 of Ho et al., generalised): draws
/// x_t = q_sample(x_0, t, noise), asks the model, and scores its output.
///
/// The bound term is built from tensor ops, so the loss is differentiable in the
/// model output (and through it in the model's parameters). The predicted x_0 is not
/// clipped during training (clipping is for sampling).
///
/// # Errors
/// Model errors, a timestep out of range, or shapes that disagree.
pub fn training_losses<T: Float>(
    schedule: &NoiseSchedule,
    model: &impl NoisePredictor<T>,
    x_start: &Tensor<T>,
    t: &[usize],
    noise: &Tensor<T>,
    options: TrainingOptions,
) -> Result<TrainingLosses<T>> {
    let x_t = q_sample(schedule, x_start, t, noise)?;
    let model_output = model.predict(&x_t, t)?;
    if model_output.dims() != x_t.dims() {
        return Err(Error::InvalidArgument {
            op: "training_losses",
            msg: format!("the model returned shape {:?} for x_t of shape {:?}", model_output.dims(), x_t.dims()),
        });
    }
    let mse = || -> Result<Tensor<T>> {
        let target = match options.parameterization {
            Parameterization::Epsilon => noise.clone(),
            Parameterization::StartX => x_start.clone(),
            Parameterization::PosteriorMean => q_posterior_mean_variance(schedule, x_start, &x_t, t)?.mean,
            Parameterization::Velocity => velocity(schedule, x_start, t, noise)?,
        };
        let per_item = mean_flat(&model_output.sub(&target)?.sqr())?;
        match options.weighting {
            TimestepWeighting::Uniform => Ok(per_item),
            weighting => {
                let weights = t.iter().map(|&t| T::from_f64(weighting.weight(schedule, t, options.parameterization))).collect();
                Ok(per_item.mul(&Tensor::from_vec(weights, &[t.len()])?)?)
            }
        }
    };
    let scaled_vb = || -> Result<(Tensor<T>, Tensor<T>)> {
        let reverse = ReverseOptions { variance: options.variance, parameterization: options.parameterization, clip_denoised: false };
        let vb = vb_terms_bpd(schedule, &model_output, x_start, &x_t, t, reverse)?.bpd;
        Ok((vb.mul_scalar(T::from_f64(schedule.num_timesteps() as f64)), vb))
    };
    let (per_item, mse, vb) = match options.loss {
        LossKind::Simple => {
            let mse = mse()?;
            (mse.clone(), Some(mse), None)
        }
        LossKind::Vlb => {
            let (scaled, vb) = scaled_vb()?;
            (scaled, None, Some(vb))
        }
        LossKind::Hybrid => {
            let (mse, (scaled, vb)) = (mse()?, scaled_vb()?);
            (mse.add(&scaled.mul_scalar(T::from_f64(options.hybrid_lambda)))?, Some(mse), Some(vb))
        }
    };
    Ok(TrainingLosses { loss: per_item.mean_all()?, mse, vb })
}

/// `batch` code timesteps drawn uniformly from `0..T` (Algorithm 1 line 3).
#[must_use]
pub fn sample_timesteps(num_timesteps: usize, batch: usize, rng: &mut Rng) -> Vec<usize> {
    Tensor::<f64>::rand_uniform(&[batch], 0.0, num_timesteps as f64, rng)
        .to_vec()
        .into_iter()
        .map(|u| (u.floor() as usize).min(num_timesteps - 1))
        .collect()
}

/// `batch` code timesteps that split `0..T` into `batch` equal strata, one
/// timestep in each: `t_i = floor(T (u + i) / B)` for one `u ~ U[0, 1)`.
///
/// The loss of a batch is a Monte Carlo estimate of the average over t of each
/// timestep's loss (the sum over t of the bound, divided by T). Each `t_i` alone
/// is uniform on `0..T` (`(u + i) / B` is uniform on `[i / B, (i + 1) / B)`,
/// and the strata are equally likely to be item i's), so the estimate keeps its
/// mean; but the batch can no longer bunch its timesteps in one region, so it
/// varies less from batch to batch. For the mean of `t / T` over a batch, with
/// `B` dividing `T`, independent draws vary by `(T^2 - 1) / (12 T^2 B)`, the
/// strata by only `((T / B)^2 - 1) / (12 T^2)`, about `B` times less. Kingma et
/// al. 2021 ("Variational Diffusion Models") draw their continuous times this
/// way, as a low-discrepancy sampler. `--timestep-sampling stratified` trains
/// with it.
#[must_use]
pub fn stratified_timesteps(num_timesteps: usize, batch: usize, rng: &mut Rng) -> Vec<usize> {
    let u = Tensor::<f64>::rand_uniform(&[1], 0.0, 1.0, rng).to_vec()[0];
    (0..batch).map(|i| ((num_timesteps as f64 * (u + i as f64) / batch as f64).floor() as usize).min(num_timesteps - 1)).collect()
}

/// `batch` code timesteps whose fractions `t / T` follow a logit-normal law:
/// `t = floor(T sigmoid(z))` for `z ~ N(0, 1)` (Esser et al. 2024, "Scaling
/// Rectified Flow Transformers", section 3.1).
///
/// The draws crowd the middle of `0..T` and thin out at both ends: with `T` =
/// 1000, t = 500 is drawn 1.7 times as often as t = 200, 4.0 times as often as
/// t = 100 and 14 times as often as t = 50, and only 1.4% of the draws fall
/// below t = 100 (as many above 900; see [`logit_normal_timestep_probability`]).
/// Unlike the strata this changes what the batch's loss estimates: an average of
/// each timestep's loss weighted by `T P(t)` instead of the plain average, a
/// reweighting of the objective towards the middle noise levels (which Esser et
/// al. argue are the hardest to predict), on top of any weight the loss itself
/// applies (min-SNR's). `--timestep-sampling logit-normal` trains with it; the
/// quick preset does since session 39.
#[must_use]
pub fn logit_normal_timesteps(num_timesteps: usize, batch: usize, rng: &mut Rng) -> Vec<usize> {
    Tensor::<f64>::randn(&[batch], rng)
        .to_vec()
        .into_iter()
        .map(|z| ((num_timesteps as f64 / (1.0 + (-z).exp())).floor() as usize).min(num_timesteps - 1))
        .collect()
}

/// The probability that [`logit_normal_timesteps`] draws code timestep `t` of `T`:
/// `Phi(logit((t + 1) / T)) - Phi(logit(t / T))`, with `Phi` the standard normal
/// CDF, `logit(0) = -inf` and `logit(1) = +inf`.
#[must_use]
pub fn logit_normal_timestep_probability(num_timesteps: usize, t: usize) -> f64 {
    let cdf = |k: usize| {
        if k == 0 {
            0.0
        } else if k >= num_timesteps {
            1.0
        } else {
            let fraction = k as f64 / num_timesteps as f64;
            crate::likelihood::standard_normal_cdf((fraction / (1.0 - fraction)).ln())
        }
    };
    cdf(t + 1) - cdf(t)
}

/// How Algorithm 1 draws the timesteps of a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimestepSampling {
    /// Each independently uniform on `0..T` ([`sample_timesteps`], the paper's).
    #[default]
    Uniform,
    /// One in each of `B` equal strata of `0..T` ([`stratified_timesteps`]).
    Stratified,
    /// Each independently `floor(T sigmoid(z))`, `z ~ N(0, 1)`: more of the middle
    /// noise levels ([`logit_normal_timesteps`]).
    LogitNormal,
}

impl TimestepSampling {
    /// The names of the samplers, as `FromStr` and `Display` spell them.
    pub const NAMES: [(&'static str, TimestepSampling); 3] = [
        ("uniform", TimestepSampling::Uniform),
        ("stratified", TimestepSampling::Stratified),
        ("logit-normal", TimestepSampling::LogitNormal),
    ];

    /// `batch` code timesteps in `0..T`, drawn this way.
    #[must_use]
    pub fn draw(self, num_timesteps: usize, batch: usize, rng: &mut Rng) -> Vec<usize> {
        match self {
            TimestepSampling::Uniform => sample_timesteps(num_timesteps, batch, rng),
            TimestepSampling::Stratified => stratified_timesteps(num_timesteps, batch, rng),
            TimestepSampling::LogitNormal => logit_normal_timesteps(num_timesteps, batch, rng),
        }
    }
}

by_name!(TimestepSampling, "timestep sampling");
