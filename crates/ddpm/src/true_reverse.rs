//! The true reverse step q(x_{t-1} | x_t) for a finite dataset, which the learned
//! Gaussian p_theta(x_{t-1} | x_t) approximates (Ho et al. §2: "when beta_t are small,
//! the reverse has the same functional form"; notes 000 "q(x_{t-1} | x_t): 어렵다").
//!
//! For data {x^(1), .., x^(N)} with equal probabilities, conditioning on x_0 first gives
//!
//! `q(x_{t-1} | x_t) = sum_i P(x^(i) | x_t) q(x_{t-1} | x_t, x^(i))
//!                   = sum_i w_i(x_t) N(x_{t-1}; mu-tilde_t(x_t, x^(i)), beta-tilde_t I)`,
//!
//! a Gaussian mixture whose components are the posteriors of [`crate::posterior`], with
//! the Bayes weights `w_i ∝ q(x_t | x^(i))`. Its components are `coef1 |x^(i) - x^(j)|`
//! apart (coef1 = sqrt(alpha-bar_{t-1}) beta_t / (1 - alpha-bar_t), of order beta_t) and
//! `sqrt(beta-tilde_t)` wide (of order sqrt(beta_t)): as beta_t -> 0 they merge, and the
//! mixture tends to a Gaussian.
//!
//! Shapes: each data point and `x_t` are flat `[D]` slices.

use crate::error::{Error, Result};
use crate::predictor::data_posterior_weights;
use crate::schedule::{check_timesteps, NoiseSchedule};

/// A mixture of Gaussians with a shared isotropic variance: `sum_i w_i N(means[i], variance I)`.
#[derive(Clone, Debug, PartialEq)]
pub struct GaussianMixture {
    /// The mixing weights w_i, summing to 1, `[N]`.
    pub weights: Vec<f64>,
    /// The component means, `[N][D]`.
    pub means: Vec<Vec<f64>>,
    /// The shared per-coordinate variance.
    pub variance: f64,
}

impl GaussianMixture {
    /// The mixture's mean `sum_i w_i means[i]`, `[D]`.
    #[must_use]
    pub fn mean(&self) -> Vec<f64> {
        let dim = self.means.first().map_or(0, Vec::len);
        (0..dim).map(|d| self.weights.iter().zip(&self.means).map(|(w, m)| w * m[d]).sum()).collect()
    }

    /// The per-coordinate variance: `variance + sum_i w_i (means[i] - mean)^2` (law of total variance), `[D]`.
    #[must_use]
    pub fn coordinate_variances(&self) -> Vec<f64> {
        let mean = self.mean();
        (0..mean.len())
            .map(|d| self.variance + self.weights.iter().zip(&self.means).map(|(w, m)| w * (m[d] - mean[d]).powi(2)).sum::<f64>())
            .collect()
    }

    /// The log-density at `x` (`[D]`), by log-sum-exp over the components.
    #[must_use]
    pub fn log_density(&self, x: &[f64]) -> f64 {
        let log_norm = -0.5 * x.len() as f64 * (2.0 * std::f64::consts::PI * self.variance).ln();
        let logs: Vec<f64> = self
            .weights
            .iter()
            .zip(&self.means)
            .map(|(w, m)| w.ln() + log_norm - m.iter().zip(x).map(|(m, x)| (x - m).powi(2)).sum::<f64>() / (2.0 * self.variance))
            .collect();
        let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        max + logs.iter().map(|l| (l - max).exp()).sum::<f64>().ln()
    }
}

/// The true reverse step q(x_{t-1} | x_t) for the dataset `points` (equal weights) at
/// code timestep t >= 1 (paper t >= 2): the mixture of the posteriors
/// q(x_{t-1} | x_t, x^(i)) = N(mu-tilde_t(x_t, x^(i)), beta-tilde_t I) (Ho et al. eqs. 6-7)
/// with weights `w_i ∝ exp(-|x_t - sqrt(alpha-bar_t) x^(i)|^2 / (2 (1 - alpha-bar_t)))`
/// (Bayes' rule with q(x_t | x^(i)), Ho et al. eq. 4).
///
/// # Errors
/// [`Error::TimestepOutOfRange`]; [`Error::InvalidArgument`] for t = 0 (beta-tilde is 0 there:
/// the reverse step is a discrete law on the data points, not a density), no points, or
/// points whose length differs from `x_t`'s.
pub fn q_reverse_step(schedule: &NoiseSchedule, points: &[Vec<f64>], x_t: &[f64], t: usize) -> Result<GaussianMixture> {
    let op = "q_reverse_step";
    check_timesteps(op, &[t], schedule.num_timesteps())?;
    if t == 0 {
        return Err(Error::InvalidArgument { op, msg: "code t = 0 has beta-tilde = 0: the reverse step is not a density".to_string() });
    }
    if points.is_empty() {
        return Err(Error::InvalidArgument { op, msg: "the dataset is empty".to_string() });
    }
    if let Some(p) = points.iter().find(|p| p.len() != x_t.len()) {
        return Err(Error::InvalidArgument { op, msg: format!("a data point has {} values, x_t has {}", p.len(), x_t.len()) });
    }
    let (coef1, coef2) = (schedule.posterior_mean_coef1[t], schedule.posterior_mean_coef2[t]);
    Ok(GaussianMixture {
        weights: data_posterior_weights(schedule, points, x_t, t),
        means: points.iter().map(|p| p.iter().zip(x_t).map(|(p, x)| coef1 * p + coef2 * x).collect()).collect(),
        variance: schedule.posterior_variance[t],
    })
}
