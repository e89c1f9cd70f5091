//! The noise predictor eps_theta(x_t, t): the one thing a diffusion model learns.
//!
//! Anything that maps a noisy batch and its timesteps to a tensor of the same shape
//! is a [`NoisePredictor`]: a closure, the UNet, or one of the exact predictors
//! below, which know the data distribution and are used to verify the theory.
//!
//! Shapes: `x_t` and the prediction are `[B, ...]`; `t` holds one code timestep per
//! batch item (code index = paper t - 1, see [`crate::schedule`]).

use crate::schedule::{check_timesteps, NoiseSchedule};
use tensor::{Float, Tensor};

/// A model of the noise in x_t: eps_theta(x_t, t) (Ho et al. eq. 11), or x_0 when the
/// sampler is told the model predicts x_0 ([`crate::Parameterization::StartX`]).
pub trait NoisePredictor<T: Float> {
    /// The prediction for the batch `x_t` `[B, ...]` at code timesteps `t` (`[B]`),
    /// of the shape of `x_t`.
    ///
    /// # Errors
    /// Whatever the model's tensor ops report.
    fn predict(&self, x_t: &Tensor<T>, t: &[usize]) -> tensor::Result<Tensor<T>>;
}

impl<T: Float, F> NoisePredictor<T> for F
where
    F: Fn(&Tensor<T>, &[usize]) -> tensor::Result<Tensor<T>>,
{
    fn predict(&self, x_t: &Tensor<T>, t: &[usize]) -> tensor::Result<Tensor<T>> {
        self(x_t, t)
    }
}

fn predictor_error(msg: String) -> tensor::Error {
    tensor::Error::InvalidArgument { op: "NoisePredictor::predict", msg }
}

/// The best possible noise predictor for a finite dataset {x^(1), .., x^(N)} (each
/// point with equal probability): the posterior expectation (notes 000, "the
/// optimal eps_theta is an average over x_0")
///
/// `eps*(x_t, t) = E[eps | x_t] = (x_t - sqrt(alpha-bar_t) E[x_0 | x_t]) / sqrt(1 - alpha-bar_t)`,
///
/// where `E[x_0 | x_t] = sum_i w_i x^(i)` with the Bayes weights
/// `w_i ∝ q(x_t | x^(i)) ∝ exp(-|x_t - sqrt(alpha-bar_t) x^(i)|^2 / (2 (1 - alpha-bar_t)))`.
/// It minimises L_simple, and ancestral sampling with it returns the data points.
#[derive(Clone, Debug)]
pub struct DatasetOptimalPredictor {
    schedule: NoiseSchedule,
    points: Vec<Vec<f64>>,
}

impl DatasetOptimalPredictor {
    /// The predictor for `points` (each of the flattened data shape) under `schedule`.
    #[must_use]
    pub fn new(schedule: NoiseSchedule, points: Vec<Vec<f64>>) -> Self {
        DatasetOptimalPredictor { schedule, points }
    }

    /// E[x_0 | x_t] for one flattened `x_t` at code timestep `t`.
    #[must_use]
    pub fn posterior_mean_xstart(&self, x_t: &[f64], t: usize) -> Vec<f64> {
        let weights = data_posterior_weights(&self.schedule, &self.points, x_t, t);
        (0..x_t.len()).map(|d| self.points.iter().zip(&weights).map(|(p, w)| w * p[d]).sum::<f64>()).collect()
    }
}

/// q(x_0 = p_i | x_t) for a finite dataset `points` (equal priors): Bayes' rule with
/// q(x_t | x_0) = N(sqrt(alpha-bar_t) x_0, (1 - alpha-bar_t) I), normalised over `i`.
pub(crate) fn data_posterior_weights(schedule: &NoiseSchedule, points: &[Vec<f64>], x_t: &[f64], t: usize) -> Vec<f64> {
    let sqrt_alpha_cumprod = schedule.sqrt_alphas_cumprod[t];
    let noise_variance = 1.0 - schedule.alphas_cumprod[t];
    let log_weights: Vec<f64> = points
        .iter()
        .map(|p| -p.iter().zip(x_t).map(|(p, x)| (x - sqrt_alpha_cumprod * p).powi(2)).sum::<f64>() / (2.0 * noise_variance))
        .collect();
    // log-sum-exp: subtract the largest log-weight so exp never underflows to 0/0.
    let max = log_weights.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let unnormalised: Vec<f64> = log_weights.iter().map(|l| (l - max).exp()).collect();
    let total: f64 = unnormalised.iter().sum();
    unnormalised.iter().map(|w| w / total).collect()
}

impl<T: Float> NoisePredictor<T> for DatasetOptimalPredictor {
    fn predict(&self, x_t: &Tensor<T>, t: &[usize]) -> tensor::Result<Tensor<T>> {
        let batch = x_t.dims().first().copied().unwrap_or(0);
        let dim = x_t.elem_count() / batch.max(1);
        if t.len() != batch {
            return Err(predictor_error(format!("{} timesteps for a batch of shape {:?}", t.len(), x_t.dims())));
        }
        if let Some(p) = self.points.iter().find(|p| p.len() != dim) {
            return Err(predictor_error(format!("data points have {} values, x_t has {dim} per item", p.len())));
        }
        check_timesteps("DatasetOptimalPredictor", t, self.schedule.num_timesteps()).map_err(|e| predictor_error(e.to_string()))?;
        let x: Vec<f64> = x_t.to_vec().iter().map(|v| v.to_f64()).collect();
        let mut eps = Vec::with_capacity(x.len());
        for (row, &step) in x.chunks(dim.max(1)).zip(t) {
            let mean_xstart = self.posterior_mean_xstart(row, step);
            let (s, n) = (self.schedule.sqrt_alphas_cumprod[step], self.schedule.sqrt_one_minus_alphas_cumprod[step]);
            eps.extend(row.iter().zip(&mean_xstart).map(|(x, m)| T::from_f64((x - s * m) / n)));
        }
        Tensor::from_vec(eps, x_t.dims())
    }
}

/// The best possible noise predictor for Gaussian data x_0 ~ N(mean, std^2 I): then
/// x_t ~ N(sqrt(alpha-bar_t) mean, (alpha-bar_t std^2 + 1 - alpha-bar_t) I) and
///
/// `eps*(x_t, t) = sqrt(1 - alpha-bar_t) (x_t - sqrt(alpha-bar_t) mean) / (alpha-bar_t std^2 + 1 - alpha-bar_t)`,
///
/// which is `-sqrt(1 - alpha-bar_t)` times the score of q(x_t). Exact score, so the
/// samplers can be checked against the known data distribution.
#[derive(Clone, Debug)]
pub struct GaussianOptimalPredictor {
    schedule: NoiseSchedule,
    mean: f64,
    std: f64,
}

impl GaussianOptimalPredictor {
    /// The predictor for data N(mean, std^2 I) under `schedule`.
    #[must_use]
    pub fn new(schedule: NoiseSchedule, mean: f64, std: f64) -> Self {
        GaussianOptimalPredictor { schedule, mean, std }
    }
}

impl<T: Float> NoisePredictor<T> for GaussianOptimalPredictor {
    fn predict(&self, x_t: &Tensor<T>, t: &[usize]) -> tensor::Result<Tensor<T>> {
        let batch = x_t.dims().first().copied().unwrap_or(0);
        if t.len() != batch {
            return Err(predictor_error(format!("{} timesteps for a batch of shape {:?}", t.len(), x_t.dims())));
        }
        check_timesteps("GaussianOptimalPredictor", t, self.schedule.num_timesteps()).map_err(|e| predictor_error(e.to_string()))?;
        let dim = x_t.elem_count() / batch.max(1);
        let data = x_t
            .to_vec()
            .chunks(dim.max(1))
            .zip(t)
            .flat_map(|(row, &step)| {
                let alpha_cumprod = self.schedule.alphas_cumprod[step];
                let marginal_variance = alpha_cumprod * self.std * self.std + 1.0 - alpha_cumprod;
                let scale = (1.0 - alpha_cumprod).sqrt() / marginal_variance;
                let center = alpha_cumprod.sqrt() * self.mean;
                row.iter().map(move |x| T::from_f64(scale * (x.to_f64() - center))).collect::<Vec<T>>()
            })
            .collect();
        Tensor::from_vec(data, x_t.dims())
    }
}
