//! The noise schedule beta_1..beta_T and every constant derived from it, in f64.
//!
//! # Timestep indexing (used everywhere in this crate)
//!
//! The paper numbers the diffusion steps `t = 1..T`; the code indexes arrays from 0,
//! as the reference implementation does. **A code index `t` is the paper's `t + 1`**:
//! `betas[0]` is the paper's beta_1, `alphas_cumprod[t]` is alpha-bar_{t+1}, and
//! `t = T - 1` is the paper's last step `T`. A function documented with the paper's
//! equation `q(x_t | x_{t-1})` takes the code index of the paper's `t`, so the code
//! index `0` stands for the paper's `x_1` drawn from `x_0`.
//!
//! # Shapes
//!
//! Every array here is `[T]`. [`coefficient_at`] turns an array into a tensor
//! `[B, 1, .., 1]` holding one value per batch item, ready to broadcast over a batch
//! `x` of shape `[B, ...]` (`B` batch, `...` any number of data axes).

use crate::error::{Error, Result};
use crate::names::by_name;
use tensor::{Float, Tensor};

/// The named beta schedules of the reference implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    /// Ho et al. 2020: betas evenly spaced from 1e-4 to 0.02 (for T = 1000).
    Linear,
    /// Nichol & Dhariwal 2021 eq. 17: alpha-bar follows a squared cosine.
    Cosine,
}

impl BetaSchedule {
    /// The names of the schedules, as `FromStr` and `Display` spell them.
    pub const NAMES: [(&'static str, BetaSchedule); 2] = [("linear", BetaSchedule::Linear), ("cosine", BetaSchedule::Cosine)];

    /// The `T` betas of this schedule.
    #[must_use]
    pub fn betas(self, num_timesteps: usize) -> Vec<f64> {
        match self {
            BetaSchedule::Linear => linear_betas(num_timesteps),
            BetaSchedule::Cosine => cosine_betas(num_timesteps),
        }
    }
}

by_name!(BetaSchedule, "schedule");

/// `numpy.linspace(start, stop, n)`: `start + i * (stop - start) / (n - 1)`, with the
/// last value set to `stop` exactly, as NumPy does.
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (n - 1) as f64;
            let mut v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
            v[n - 1] = stop;
            v
        }
    }
}

/// The linear schedule of Ho et al. 2020 §4, rescaled so any `T` spans the same
/// total noise: `betas = linspace(1e-4 * 1000/T, 0.02 * 1000/T, T)` (for T = 1000
/// exactly the paper's 1e-4..0.02; notes 001 use the same range).
#[must_use]
pub fn linear_betas(num_timesteps: usize) -> Vec<f64> {
    let scale = 1000.0 / num_timesteps as f64;
    linspace(scale * 1e-4, scale * 0.02, num_timesteps)
}

/// The cosine schedule (Nichol & Dhariwal 2021 eq. 17):
/// `alpha_bar(s) = cos^2((s + 0.008) / 1.008 * pi / 2)` for `s = t / T`, and
/// `beta_i = min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999)`. The cap
/// keeps the last steps from having beta = 1 (which would make alpha-bar zero).
#[must_use]
pub fn cosine_betas(num_timesteps: usize) -> Vec<f64> {
    const OFFSET: f64 = 0.008;
    let alpha_bar = |s: f64| ((s + OFFSET) / (1.0 + OFFSET) * std::f64::consts::FRAC_PI_2).cos().powi(2);
    betas_for_alpha_bar(num_timesteps, alpha_bar, 0.999)
}

/// Betas that make the cumulative product follow `alpha_bar(t / T)`: since
/// alpha-bar_t = prod_{s <= t} (1 - beta_s), `beta_i = 1 - alpha_bar((i+1)/T) / alpha_bar(i/T)`,
/// capped at `max_beta`.
#[must_use]
pub fn betas_for_alpha_bar(num_timesteps: usize, alpha_bar: impl Fn(f64) -> f64, max_beta: f64) -> Vec<f64> {
    let n = num_timesteps as f64;
    (0..num_timesteps).map(|i| (1.0 - alpha_bar((i + 1) as f64 / n) / alpha_bar(i as f64 / n)).min(max_beta)).collect()
}

/// A noise schedule and every quantity derived from it, all `[T]` and in f64
/// (improved-diffusion's `GaussianDiffusion.__init__`). Indexed by the code
/// timestep `t = paper t - 1` (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseSchedule {
    // ---- the forward process q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)  (Ho eq. 2)
    /// beta_t, the variance added at step t.
    pub betas: Vec<f64>,
    /// alpha_t = 1 - beta_t.
    pub alphas: Vec<f64>,
    /// sqrt(alpha_t) = sqrt(1 - beta_t): the scale of x_{t-1} in x_t.
    pub sqrt_alphas: Vec<f64>,
    /// sqrt(beta_t): the scale of the noise in x_t.
    pub sqrt_betas: Vec<f64>,
    /// log(beta_t): the log-variance of one forward step.
    pub log_betas: Vec<f64>,

    // ---- the closed form q(x_t | x_0) = N(sqrt(alpha-bar_t) x_0, (1 - alpha-bar_t) I)  (Ho eq. 4)
    /// alpha-bar_t = prod_{s <= t} alpha_s.
    pub alphas_cumprod: Vec<f64>,
    /// alpha-bar_{t-1}, with alpha-bar_0 = 1 (the paper's x_0 is noiseless) at code index 0.
    pub alphas_cumprod_prev: Vec<f64>,
    /// alpha-bar_{t+1}, with 0 after the last step.
    pub alphas_cumprod_next: Vec<f64>,
    /// sqrt(alpha-bar_t): the scale of x_0 in x_t.
    pub sqrt_alphas_cumprod: Vec<f64>,
    /// 1 - alpha-bar_t: the variance of q(x_t | x_0).
    pub one_minus_alphas_cumprod: Vec<f64>,
    /// sqrt(1 - alpha-bar_t): the scale of the noise in x_t.
    pub sqrt_one_minus_alphas_cumprod: Vec<f64>,
    /// log(1 - alpha-bar_t): the log-variance of q(x_t | x_0).
    pub log_one_minus_alphas_cumprod: Vec<f64>,
    /// 1 / sqrt(alpha-bar_t): the scale of x_t in x_0 = (x_t - sqrt(1 - alpha-bar_t) eps) / sqrt(alpha-bar_t).
    pub sqrt_recip_alphas_cumprod: Vec<f64>,
    /// sqrt(1 / alpha-bar_t - 1): the scale of eps in the same formula.
    pub sqrt_recipm1_alphas_cumprod: Vec<f64>,

    // ---- the posterior q(x_{t-1} | x_t, x_0) = N(mu-tilde_t, beta-tilde_t I)  (Ho eqs. 6-7)
    /// beta-tilde_t = (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t) beta_t; zero at code index 0.
    pub posterior_variance: Vec<f64>,
    /// log beta-tilde_t with the zero at index 0 replaced by beta-tilde at index 1 (the
    /// reference's convention, so the log stays finite).
    pub posterior_log_variance_clipped: Vec<f64>,
    /// The coefficient of x_0 in mu-tilde_t: sqrt(alpha-bar_{t-1}) beta_t / (1 - alpha-bar_t).
    pub posterior_mean_coef1: Vec<f64>,
    /// The coefficient of x_t in mu-tilde_t: sqrt(alpha_t) (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t).
    pub posterior_mean_coef2: Vec<f64>,

    // ---- the same mean written with the noise: mu-tilde_t = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha-bar_t) eps)  (Ho eq. 10)
    /// 1 / sqrt(alpha_t): the outer scale of the eps-form mean.
    pub recip_sqrt_alphas: Vec<f64>,
    /// beta_t / sqrt(1 - alpha-bar_t): the coefficient of eps in the eps-form mean.
    pub posterior_mean_eps_coef: Vec<f64>,
}

impl NoiseSchedule {
    /// The most timesteps a named schedule may have: a hundred times the paper's
    /// 1,000 (improved DDPM used 4,000). Ancestral sampling calls the model once a
    /// step, so more would take days to sample, and a `T` read from a flag or a file
    /// cannot ask for tables of any size.
    pub const MAX_TIMESTEPS: usize = 100_000;

    /// The named schedule with `num_timesteps` steps.
    ///
    /// # Errors
    /// [`Error::InvalidSchedule`] when `num_timesteps < 2` or above
    /// [`NoiseSchedule::MAX_TIMESTEPS`].
    pub fn new(schedule: BetaSchedule, num_timesteps: usize) -> Result<Self> {
        if num_timesteps > Self::MAX_TIMESTEPS {
            return Err(Error::InvalidSchedule {
                msg: format!("{num_timesteps} timesteps, more than the {} allowed", Self::MAX_TIMESTEPS),
            });
        }
        Self::from_betas(schedule.betas(num_timesteps))
    }

    /// Derives every constant from the betas.
    ///
    /// # Errors
    /// [`Error::InvalidSchedule`] when there are fewer than 2 betas (the clipped
    /// posterior log-variance needs beta-tilde at index 1), or a beta is outside (0, 1).
    /// A beta of exactly 1 would make alpha-bar_t zero: x_t would carry no trace of
    /// x_0, and x_0 predicted from eps would divide by sqrt(alpha-bar_t) = 0.
    pub fn from_betas(betas: Vec<f64>) -> Result<Self> {
        if betas.len() < 2 {
            return Err(Error::InvalidSchedule { msg: format!("needs at least 2 timesteps, got {}", betas.len()) });
        }
        if let Some((i, b)) = betas.iter().enumerate().find(|(_, &b)| !(b > 0.0 && b < 1.0)) {
            return Err(Error::InvalidSchedule { msg: format!("beta at code index {i} is {b}, outside (0, 1)") });
        }
        let n = betas.len();
        let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - b).collect();
        let alphas_cumprod: Vec<f64> = alphas
            .iter()
            .scan(1.0, |acc, a| {
                *acc *= a;
                Some(*acc)
            })
            .collect();
        let alphas_cumprod_prev: Vec<f64> = std::iter::once(1.0).chain(alphas_cumprod[..n - 1].iter().copied()).collect();
        let alphas_cumprod_next: Vec<f64> = alphas_cumprod[1..].iter().copied().chain(std::iter::once(0.0)).collect();
        let map = |v: &[f64], f: &dyn Fn(f64) -> f64| v.iter().map(|&x| f(x)).collect::<Vec<f64>>();

        let posterior_variance: Vec<f64> = (0..n).map(|t| betas[t] * (1.0 - alphas_cumprod_prev[t]) / (1.0 - alphas_cumprod[t])).collect();
        let posterior_log_variance_clipped: Vec<f64> =
            std::iter::once(posterior_variance[1]).chain(posterior_variance[1..].iter().copied()).map(f64::ln).collect();
        let posterior_mean_coef1 = (0..n).map(|t| betas[t] * alphas_cumprod_prev[t].sqrt() / (1.0 - alphas_cumprod[t])).collect();
        let posterior_mean_coef2 = (0..n).map(|t| (1.0 - alphas_cumprod_prev[t]) * alphas[t].sqrt() / (1.0 - alphas_cumprod[t])).collect();

        let sqrt_one_minus_alphas_cumprod = map(&alphas_cumprod, &|a| (1.0 - a).sqrt());
        let posterior_mean_eps_coef = betas.iter().zip(&sqrt_one_minus_alphas_cumprod).map(|(b, s)| b / s).collect();

        Ok(NoiseSchedule {
            sqrt_alphas: map(&alphas, &f64::sqrt),
            sqrt_betas: map(&betas, &f64::sqrt),
            log_betas: map(&betas, &f64::ln),
            recip_sqrt_alphas: map(&alphas, &|a| 1.0 / a.sqrt()),
            posterior_mean_eps_coef,
            sqrt_alphas_cumprod: map(&alphas_cumprod, &f64::sqrt),
            one_minus_alphas_cumprod: map(&alphas_cumprod, &|a| 1.0 - a),
            sqrt_one_minus_alphas_cumprod,
            log_one_minus_alphas_cumprod: map(&alphas_cumprod, &|a| (1.0 - a).ln()),
            sqrt_recip_alphas_cumprod: map(&alphas_cumprod, &|a| (1.0 / a).sqrt()),
            sqrt_recipm1_alphas_cumprod: map(&alphas_cumprod, &|a| (1.0 / a - 1.0).sqrt()),
            betas,
            alphas,
            alphas_cumprod,
            alphas_cumprod_prev,
            alphas_cumprod_next,
            posterior_variance,
            posterior_log_variance_clipped,
            posterior_mean_coef1,
            posterior_mean_coef2,
        })
    }

    /// The number of diffusion steps `T`.
    #[must_use]
    pub fn num_timesteps(&self) -> usize {
        self.betas.len()
    }

    /// Respacing (Nichol & Dhariwal 2021 §4; DDIM §4.2): the schedule that jumps
    /// between the kept steps `use_timesteps` (code indices, increasing) of this one.
    ///
    /// The marginals q(x_t | x_0) at the kept steps must not change, so the new
    /// alpha-bar are the old ones read at those steps, and the new betas follow from
    /// alpha-bar_k = prod (1 - beta'): `beta'_k = 1 - alpha-bar[s_k] / alpha-bar[s_{k-1}]`
    /// (with alpha-bar = 1 before the first kept step). Returns the new schedule, whose
    /// code index `k` stands for the original step `use_timesteps[k]`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the steps are not strictly increasing, fewer
    /// than 2, or past the end.
    pub fn respaced(&self, use_timesteps: &[usize]) -> Result<NoiseSchedule> {
        let op = "NoiseSchedule::respaced";
        if use_timesteps.len() < 2 {
            return Err(Error::InvalidArgument { op, msg: format!("needs at least 2 kept steps, got {use_timesteps:?}") });
        }
        if use_timesteps.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::InvalidArgument { op, msg: format!("kept steps must be strictly increasing, got {use_timesteps:?}") });
        }
        check_timesteps(op, use_timesteps, self.num_timesteps())?;
        let mut last_alpha_cumprod = 1.0;
        let betas = use_timesteps
            .iter()
            .map(|&s| {
                let beta = 1.0 - self.alphas_cumprod[s] / last_alpha_cumprod;
                last_alpha_cumprod = self.alphas_cumprod[s];
                beta
            })
            .collect();
        Self::from_betas(betas)
    }
}

/// `count` timesteps evenly spread over `0..T`, always including the first and last
/// step: the kept steps of a respaced sampler (DDIM's "linear" skip).
///
/// # Errors
/// [`Error::InvalidArgument`] when `count` is below 2 or above `T`.
pub fn evenly_spaced_timesteps(num_timesteps: usize, count: usize) -> Result<Vec<usize>> {
    if count < 2 || count > num_timesteps {
        return Err(Error::InvalidArgument {
            op: "evenly_spaced_timesteps",
            msg: format!("cannot keep {count} of {num_timesteps} steps (need 2 <= count <= T)"),
        });
    }
    let last = (num_timesteps - 1) as f64;
    Ok((0..count).map(|k| (k as f64 * last / (count - 1) as f64).round() as usize).collect())
}

/// Checks that every code timestep is below `T`.
///
/// # Errors
/// [`Error::TimestepOutOfRange`] naming the first bad timestep.
pub fn check_timesteps(op: &'static str, t: &[usize], num_timesteps: usize) -> Result<()> {
    match t.iter().find(|&&s| s >= num_timesteps) {
        Some(&bad) => Err(Error::TimestepOutOfRange { op, t: bad, num_timesteps }),
        None => Ok(()),
    }
}

/// Reads `values[t_b]` for each batch item `b` into a tensor `[B, 1, .., 1]` of the
/// rank of `dims` (`[B, ...]`), so it broadcasts over the batch (the reference's
/// `_extract_into_tensor`).
///
/// # Errors
/// [`Error::BatchMismatch`] when `t.len() != dims[0]`, [`Error::TimestepOutOfRange`]
/// when a timestep is past the end of `values`.
pub fn coefficient_at<T: Float>(op: &'static str, values: &[f64], t: &[usize], dims: &[usize]) -> Result<Tensor<T>> {
    if dims.is_empty() || dims[0] != t.len() {
        return Err(Error::BatchMismatch { op, timesteps: t.len(), dims: dims.to_vec() });
    }
    check_timesteps(op, t, values.len())?;
    let mut shape = vec![1; dims.len()];
    shape[0] = t.len();
    Ok(Tensor::from_vec(t.iter().map(|&s| T::from_f64(values[s])).collect(), &shape)?)
}
