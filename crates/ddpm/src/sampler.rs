//! Samplers: from x_T ~ N(0, I) back to x_0.
//!
//! - [`sample_ancestral`]: Ho et al. Algorithm 2, one draw from p_theta(x_{t-1} | x_t)
//!   per step ([`p_sample`]);
//! - [`sample_ddim`]: Song et al. 2021 (DDIM) eq. 12 with a noise level eta, on any
//!   increasing subsequence of the timesteps (respacing, [`NoiseSchedule::respaced`]);
//! - [`sample_langevin`]: annealed Langevin dynamics (Song & Ermon 2019) driven by the
//!   score the noise predictor implies, `grad log q(x_t) ~ -eps_theta(x_t, t) / sqrt(1 - alpha-bar_t)`.
//!
//! Every sampler is batched over the images (`shape = [B, ...]`), reproducible from a
//! seeded [`Rng`], and can record a [`Trajectory`] of (x_t, predicted x_0) at chosen
//! code timesteps for pictures. Code timestep = paper t - 1 (see [`crate::schedule`]).

use crate::error::{Error, Result};
use crate::forward::predict_eps_from_xstart;
use crate::predictor::NoisePredictor;
use crate::reverse::{p_mean_variance, predict_xstart, Parameterization, ReverseOptions};
use crate::schedule::{check_timesteps, coefficient_at, NoiseSchedule};
use tensor::{no_grad, Float, Rng, Tensor};

/// One reverse step's result.
#[derive(Clone, Debug)]
pub struct SampleStep<T: Float> {
    /// x_{t-1}, `[B, ...]`.
    pub sample: Tensor<T>,
    /// The x_0 predicted at this step, `[B, ...]`.
    pub pred_xstart: Tensor<T>,
}

/// A recorded moment of a sampling run.
#[derive(Clone, Debug)]
pub struct Frame<T: Float> {
    /// The code timestep of `x_t`.
    pub t: usize,
    /// The state before the step at `t`, `[B, ...]`.
    pub x_t: Tensor<T>,
    /// The model's predicted x_0 from `x_t`, `[B, ...]`.
    pub pred_xstart: Tensor<T>,
}

/// The final sample and the recorded frames, in sampling order (noisiest first).
#[derive(Clone, Debug)]
pub struct Trajectory<T: Float> {
    /// x_0, `[B, ...]`.
    pub sample: Tensor<T>,
    /// The frames at the requested timesteps.
    pub frames: Vec<Frame<T>>,
}

/// `1` for batch items with t > 0, `0` where t = 0 (the last step adds no noise),
/// shaped `[B, 1, .., 1]` like `dims`.
fn nonzero_mask<T: Float>(t: &[usize], dims: &[usize]) -> Result<Tensor<T>> {
    let mut shape = vec![1; dims.len()];
    shape[0] = t.len();
    Ok(Tensor::from_vec(t.iter().map(|&s| if s == 0 { T::ZERO } else { T::ONE }).collect(), &shape)?)
}

/// One draw from p_theta(x_{t-1} | x_t) (Ho et al. Algorithm 2 line 4; notes 003 eq. 13):
/// `x_{t-1} = mu_theta(x_t, t) + sigma_t z` with `z = noise`, except at code t = 0
/// (paper t = 1), where the mean is returned without noise.
///
/// # Errors
/// A timestep out of range, not one per batch item, or shapes that disagree.
pub fn p_sample<T: Float>(
    schedule: &NoiseSchedule,
    model_output: &Tensor<T>,
    x_t: &Tensor<T>,
    t: &[usize],
    options: ReverseOptions,
    noise: &Tensor<T>,
) -> Result<SampleStep<T>> {
    let reverse = p_mean_variance(schedule, model_output, x_t, t, options)?;
    let std = reverse.log_variance.mul_scalar(T::from_f64(0.5)).exp();
    let scaled_noise = std.mul(noise)?.mul(&nonzero_mask(t, x_t.dims())?)?;
    Ok(SampleStep { sample: reverse.mean.add(&scaled_noise)?, pred_xstart: reverse.pred_xstart })
}

/// How a DDIM step treats the model output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdimOptions {
    /// eta: 0 is the deterministic DDIM, 1 matches the DDPM posterior variance.
    pub eta: f64,
    /// What the network predicts.
    pub parameterization: Parameterization,
    /// Clip the predicted x_0 to [-1, 1] (the noise is then re-derived from it).
    pub clip_denoised: bool,
}

impl Default for DdimOptions {
    /// Deterministic DDIM on eps predictions, with clipping.
    fn default() -> Self {
        DdimOptions { eta: 0.0, parameterization: Parameterization::Epsilon, clip_denoised: true }
    }
}

/// One DDIM step from code t to t - 1 of `schedule` (Song et al. 2021 eq. 12):
///
/// `x_{t-1} = sqrt(alpha-bar_{t-1}) x0_theta + sqrt(1 - alpha-bar_{t-1} - sigma_t^2) eps_theta + sigma_t z`,
/// `sigma_t = eta sqrt((1 - alpha-bar_{t-1}) / (1 - alpha-bar_t)) sqrt(1 - alpha-bar_t / alpha-bar_{t-1})`,
///
/// where eps_theta is re-derived from the (possibly clipped) x0_theta, and no noise
/// is added at code t = 0. With eta = 1, sigma_t^2 is beta-tilde_t and the step has the
/// mean and variance of the DDPM posterior; with eta = 0 it is deterministic. On a
/// respaced schedule "t - 1" is the previous kept step.
///
/// # Errors
/// A timestep out of range, not one per batch item, or shapes that disagree.
pub fn ddim_step<T: Float>(
    schedule: &NoiseSchedule,
    model_output: &Tensor<T>,
    x_t: &Tensor<T>,
    t: &[usize],
    options: DdimOptions,
    noise: &Tensor<T>,
) -> Result<SampleStep<T>> {
    let op = "ddim_step";
    let pred_xstart = predict_xstart(schedule, model_output, x_t, t, options.parameterization, options.clip_denoised)?;
    let eps = predict_eps_from_xstart(schedule, x_t, t, &pred_xstart)?;
    let (alphas_cumprod, alphas_cumprod_prev) = (&schedule.alphas_cumprod, &schedule.alphas_cumprod_prev);
    let sigmas: Vec<f64> = (0..schedule.num_timesteps())
        .map(|s| {
            let (now, prev) = (alphas_cumprod[s], alphas_cumprod_prev[s]);
            options.eta * ((1.0 - prev) / (1.0 - now)).sqrt() * (1.0 - now / prev).sqrt()
        })
        .collect();
    let sqrt_alphas_cumprod_prev: Vec<f64> = alphas_cumprod_prev.iter().map(|a| a.sqrt()).collect();
    let eps_coef: Vec<f64> =
        alphas_cumprod_prev.iter().zip(&sigmas).map(|(prev, sigma)| (1.0 - prev - sigma * sigma).max(0.0).sqrt()).collect();
    let dims = x_t.dims();
    let mean = pred_xstart
        .mul(&coefficient_at(op, &sqrt_alphas_cumprod_prev, t, dims)?)?
        .add(&eps.mul(&coefficient_at(op, &eps_coef, t, dims)?)?)?;
    let scaled_noise = noise.mul(&coefficient_at(op, &sigmas, t, dims)?)?.mul(&nonzero_mask(t, dims)?)?;
    Ok(SampleStep { sample: mean.add(&scaled_noise)?, pred_xstart })
}

fn check_shape(op: &'static str, shape: &[usize]) -> Result<usize> {
    match shape.first() {
        Some(&b) if b > 0 => Ok(b),
        _ => Err(Error::InvalidArgument { op, msg: format!("the sample shape {shape:?} needs a non-empty batch axis") }),
    }
}

/// Ancestral sampling (Ho et al. Algorithm 2): x_T ~ N(0, I), then for code
/// t = T-1, .., 0 one draw from p_theta(x_{t-1} | x_t) by [`p_sample`]. Records a frame
/// before each step whose code timestep is in `record`. Runs without gradients.
///
/// # Errors
/// Model errors, a bad shape, or a recorded timestep out of range.
pub fn sample_ancestral<T: Float>(
    schedule: &NoiseSchedule,
    model: &impl NoisePredictor<T>,
    shape: &[usize],
    options: ReverseOptions,
    record: &[usize],
    rng: &mut Rng,
) -> Result<Trajectory<T>> {
    check_timesteps("sample_ancestral", record, schedule.num_timesteps())?;
    let all: Vec<usize> = (0..schedule.num_timesteps()).collect();
    ancestral_on("sample_ancestral", schedule, &all, model, shape, options, record, rng)
}

/// Ancestral sampling on the kept code timesteps `use_timesteps` (strictly
/// increasing) of `schedule`: Algorithm 2 run on the respaced schedule
/// ([`NoiseSchedule::respaced`]; Nichol & Dhariwal 2021 §4), with the model called at
/// the original timesteps. sigma^2 comes from the respaced schedule: `FixedLarge` is
/// its beta', `FixedSmall` its posterior variance beta-tilde', a learned variance
/// interpolates between the two. With `FixedSmall` this is DDIM with eta = 1
/// ([`sample_ddim`]) written as the posterior's mean instead of Song et al.'s eq. 12;
/// `FixedLarge` adds more noise at every step than any eta <= 1 does. Records a frame
/// before each kept step in `record`.
///
/// # Errors
/// Model errors, a bad shape, or invalid kept steps.
pub fn sample_ancestral_respaced<T: Float>(
    schedule: &NoiseSchedule,
    model: &impl NoisePredictor<T>,
    shape: &[usize],
    use_timesteps: &[usize],
    options: ReverseOptions,
    record: &[usize],
    rng: &mut Rng,
) -> Result<Trajectory<T>> {
    let respaced = schedule.respaced(use_timesteps)?;
    ancestral_on("sample_ancestral_respaced", &respaced, use_timesteps, model, shape, options, record, rng)
}

/// Algorithm 2 on `schedule`, whose code step `k` the model knows as `steps[k]`.
#[allow(clippy::too_many_arguments)]
fn ancestral_on<T: Float>(
    op: &'static str,
    schedule: &NoiseSchedule,
    steps: &[usize],
    model: &impl NoisePredictor<T>,
    shape: &[usize],
    options: ReverseOptions,
    record: &[usize],
    rng: &mut Rng,
) -> Result<Trajectory<T>> {
    let batch = check_shape(op, shape)?;
    no_grad(|| {
        let mut x = Tensor::<T>::randn(shape, rng);
        let mut frames = Vec::new();
        for (k, &step) in steps.iter().enumerate().rev() {
            let model_output = model.predict(&x, &vec![step; batch])?;
            let noise = Tensor::<T>::randn(shape, rng);
            let next = p_sample(schedule, &model_output, &x, &vec![k; batch], options, &noise)?;
            if record.contains(&step) {
                frames.push(Frame { t: step, x_t: x.clone(), pred_xstart: next.pred_xstart });
            }
            x = next.sample;
        }
        Ok(Trajectory { sample: x, frames })
    })
}

/// DDIM sampling (Song et al. 2021 eq. 12 and §4.2) on the kept code timesteps
/// `use_timesteps` (strictly increasing; all of `0..T` for the full schedule, or e.g.
/// [`crate::evenly_spaced_timesteps`] for fewer steps). The coefficients are recomputed
/// from alpha-bar at the kept steps ([`NoiseSchedule::respaced`]), and the model is
/// called with the original timesteps. Records a frame before each kept step in `record`.
///
/// # Errors
/// Model errors, a bad shape, or invalid kept steps.
pub fn sample_ddim<T: Float>(
    schedule: &NoiseSchedule,
    model: &impl NoisePredictor<T>,
    shape: &[usize],
    use_timesteps: &[usize],
    options: DdimOptions,
    record: &[usize],
    rng: &mut Rng,
) -> Result<Trajectory<T>> {
    let batch = check_shape("sample_ddim", shape)?;
    let respaced = schedule.respaced(use_timesteps)?;
    no_grad(|| {
        let mut x = Tensor::<T>::randn(shape, rng);
        let mut frames = Vec::new();
        for (k, &step) in use_timesteps.iter().enumerate().rev() {
            let model_output = model.predict(&x, &vec![step; batch])?;
            let noise = Tensor::<T>::randn(shape, rng);
            let next = ddim_step(&respaced, &model_output, &x, &vec![k; batch], options, &noise)?;
            if record.contains(&step) {
                frames.push(Frame { t: step, x_t: x.clone(), pred_xstart: next.pred_xstart });
            }
            x = next.sample;
        }
        Ok(Trajectory { sample: x, frames })
    })
}

/// Annealed Langevin dynamics settings.
#[derive(Clone, Debug, PartialEq)]
pub struct LangevinOptions {
    /// The noise levels to visit, as code timesteps, noisiest first (decreasing t).
    pub levels: Vec<usize>,
    /// Langevin steps at each level.
    pub steps_per_level: usize,
    /// The step-size ratio r: at level t the step is `delta_t = r (1 - alpha-bar_t)`.
    pub step_size_ratio: f64,
}

/// Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) with the score
/// implied by the noise predictor: since x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps,
/// `grad log q(x_t) = -E[eps | x_t] / sqrt(1 - alpha-bar_t) ~ -eps_theta(x_t, t) / sqrt(1 - alpha-bar_t)`
/// (Ho et al. §3.2 and eq. 11; notes 000 "DDPM <-> Langevin dynamics").
///
/// Start from x ~ N(0, I); at each level t (noisiest first) take `steps_per_level` steps
/// `x <- x + delta_t / 2 * score(x) + sqrt(delta_t) z`, z ~ N(0, I).
///
/// Step-size rule: `delta_t = r (1 - alpha-bar_t)`, Song & Ermon's alpha_i ∝ sigma_i^2
/// with the VP noise variance 1 - alpha-bar_t in place of sigma_i^2. The score scales
/// like 1/sqrt(1 - alpha-bar_t), so the drift `delta_t/2 * score` and the noise
/// `sqrt(delta_t) z` both scale like sqrt(1 - alpha-bar_t): every level moves by the
/// same fraction of its own noise scale. For a Gaussian level of variance v the chain's
/// stationary variance is v / (1 - delta_t / (4 v)), so r well below 1 keeps the
/// discretisation bias small. Between levels nothing is rescaled.
///
/// The returned sample is the state after the last level; each frame holds the state
/// after a level in `record` and the x_0 implied there, (x - sqrt(1 - alpha-bar_t) eps_theta) / sqrt(alpha-bar_t).
///
/// # Errors
/// Model errors, a bad shape, levels out of range, or a non-positive step ratio.
pub fn sample_langevin<T: Float>(
    schedule: &NoiseSchedule,
    model: &impl NoisePredictor<T>,
    shape: &[usize],
    options: &LangevinOptions,
    record: &[usize],
    rng: &mut Rng,
) -> Result<Trajectory<T>> {
    let op = "sample_langevin";
    let batch = check_shape(op, shape)?;
    check_timesteps(op, &options.levels, schedule.num_timesteps())?;
    if options.step_size_ratio.is_nan() || options.step_size_ratio <= 0.0 {
        return Err(Error::InvalidArgument { op, msg: format!("the step-size ratio must be positive, got {}", options.step_size_ratio) });
    }
    no_grad(|| {
        let mut x = Tensor::<T>::randn(shape, rng);
        let mut frames = Vec::new();
        for &level in &options.levels {
            let t = vec![level; batch];
            let noise_variance = 1.0 - schedule.alphas_cumprod[level];
            let step_size = options.step_size_ratio * noise_variance;
            // delta/2 * score = -delta / (2 sqrt(1 - alpha-bar)) * eps_theta
            let eps_coef = T::from_f64(-step_size / (2.0 * noise_variance.sqrt()));
            for _ in 0..options.steps_per_level {
                let eps = model.predict(&x, &t)?;
                let z = Tensor::<T>::randn(shape, rng);
                x = x.add(&eps.mul_scalar(eps_coef))?.add(&z.mul_scalar(T::from_f64(step_size.sqrt())))?;
            }
            if record.contains(&level) {
                let eps = model.predict(&x, &t)?;
                let pred_xstart = crate::forward::predict_xstart_from_eps(schedule, &x, &t, &eps)?;
                frames.push(Frame { t: level, x_t: x.clone(), pred_xstart });
            }
        }
        Ok(Trajectory { sample: x, frames })
    })
}
