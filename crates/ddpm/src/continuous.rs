//! The continuous-time view of DDPM (notes 000: "DDPM = Anderson's reverse time SDE",
//! "DDIM = Fokker-Planck equation"; Song et al. 2021, "Score-based generative modeling
//! through SDEs", §3-4 and appendix B).
//!
//! As beta_t -> 0 the forward chain x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps is
//! the Euler-Maruyama discretisation of the variance-preserving SDE
//! `dx = -1/2 beta(s) x ds + sqrt(beta(s)) dw`, with `beta(s) ds = beta_t` per step.
//! Anderson (1982) showed that its time reversal is again an SDE,
//! `dx = [-1/2 beta(s) x - beta(s) grad log q_s(x)] ds + sqrt(beta(s)) dw-bar` (s running
//! backward), and that the deterministic probability-flow ODE
//! `dx/ds = -1/2 beta(s) [x + grad log q_s(x)]` has the same marginals q_s (its density
//! obeys the same Fokker-Planck equation). The score is read off the noise predictor,
//! `grad log q_t(x_t) = -eps_theta(x_t, t) / sqrt(1 - alpha-bar_t)`.
//!
//! Shapes: `x_t`, `eps`, `noise` are `[B, ...]`; `t` holds one code timestep per batch
//! item (code index = paper t - 1, see [`crate::schedule`]).

use crate::error::{Error, Result};
use crate::predictor::NoisePredictor;
use crate::schedule::{coefficient_at, NoiseSchedule};
use tensor::{no_grad, Float, Rng, Tensor};

/// One Euler-Maruyama step of Anderson's reverse-time SDE from code t to t - 1
/// (Song et al. 2021 eq. 6 for the VP SDE, eq. 32; notes 000 "DDPM = Anderson's reverse
/// time SDE"), with the step `beta(s) ds = beta_t`:
///
/// `x_{t-1} = x_t + beta_t (x_t / 2 + score) + sqrt(beta_t) z`,  `score = -eps / sqrt(1 - alpha-bar_t)`.
///
/// Ancestral sampling's mean `(x_t + beta_t score) / sqrt(alpha_t)` agrees with this drift
/// up to O(beta_t^2), since `1 / sqrt(1 - beta) = 1 + beta / 2 + O(beta^2)`. Noise is added
/// at every step, including code t = 0 (it is the SDE's, not the posterior's).
///
/// # Errors
/// A timestep out of range, not one per batch item, or shapes that disagree.
pub fn reverse_sde_step<T: Float>(
    schedule: &NoiseSchedule,
    eps: &Tensor<T>,
    x_t: &Tensor<T>,
    t: &[usize],
    noise: &Tensor<T>,
) -> Result<Tensor<T>> {
    let op = "reverse_sde_step";
    // beta_t * score = -beta_t / sqrt(1 - alpha-bar_t) * eps
    let score_coef: Vec<f64> = schedule.betas.iter().zip(&schedule.sqrt_one_minus_alphas_cumprod).map(|(b, s)| -b / s).collect();
    let x_coef: Vec<f64> = schedule.betas.iter().map(|b| 1.0 + b / 2.0).collect();
    let sqrt_betas: Vec<f64> = schedule.betas.iter().map(|b| b.sqrt()).collect();
    let dims = x_t.dims();
    let drift = x_t.mul(&coefficient_at(op, &x_coef, t, dims)?)?.add(&eps.mul(&coefficient_at(op, &score_coef, t, eps.dims())?)?)?;
    Ok(drift.add(&noise.mul(&coefficient_at(op, &sqrt_betas, t, noise.dims())?)?)?)
}

/// Samples by integrating the reverse-time SDE with [`reverse_sde_step`] from
/// x_T ~ N(0, I) over code t = T-1, .., 0, the score given by `model` as a noise
/// predictor. Runs without gradients.
///
/// # Errors
/// Model errors, or a shape without a non-empty batch axis.
pub fn sample_reverse_sde<T: Float>(
    schedule: &NoiseSchedule,
    model: &impl NoisePredictor<T>,
    shape: &[usize],
    rng: &mut Rng,
) -> Result<Tensor<T>> {
    let batch = match shape.first() {
        Some(&b) if b > 0 => b,
        _ => {
            return Err(Error::InvalidArgument {
                op: "sample_reverse_sde",
                msg: format!("the sample shape {shape:?} needs a non-empty batch axis"),
            })
        }
    };
    no_grad(|| {
        let mut x = Tensor::<T>::randn(shape, rng);
        for step in (0..schedule.num_timesteps()).rev() {
            let t = vec![step; batch];
            let eps = model.predict(&x, &t)?;
            let noise = Tensor::<T>::randn(shape, rng);
            x = reverse_sde_step(schedule, &eps, &x, &t, &noise)?;
        }
        Ok(x)
    })
}

/// The exact flow of the probability-flow ODE for Gaussian data x_0 ~ N(mean, std^2 I)
/// (Song et al. 2021 eq. 13; notes 000 "DDIM = Fokker-Planck equation"): the map that
/// carries x at noise level alpha-bar_from to noise level alpha-bar_to,
///
/// `x -> sqrt(alpha-bar_to) mean + sqrt(v_to / v_from) (x - sqrt(alpha-bar_from) mean)`,
/// `v = alpha-bar std^2 + 1 - alpha-bar`.
///
/// Derivation: the marginal is q = N(sqrt(alpha-bar) mean, v), so the ODE
/// `dx/ds = -1/2 beta (x + grad log q)` is linear in `y = x - sqrt(alpha-bar) mean`:
/// `dy/ds = 1/2 beta y (1 - v) / v`, and since `dv/ds = beta (1 - v)`, `y / sqrt(v)` is constant.
/// Deterministic DDIM (eta = 0) is a first-order discretisation of this ODE.
///
/// # Errors
/// [`Error::InvalidArgument`] when an alpha-bar is outside (0, 1], std is negative, or
/// the starting marginal is a point (alpha-bar_from = 1 and std = 0).
pub fn gaussian_probability_flow(alpha_cumprod_from: f64, alpha_cumprod_to: f64, mean: f64, std: f64, x: f64) -> Result<f64> {
    let op = "gaussian_probability_flow";
    for (name, a) in [("alpha-bar_from", alpha_cumprod_from), ("alpha-bar_to", alpha_cumprod_to)] {
        if !(a > 0.0 && a <= 1.0) {
            return Err(Error::InvalidArgument { op, msg: format!("{name} must be in (0, 1], got {a}") });
        }
    }
    if std.is_nan() || std < 0.0 {
        return Err(Error::InvalidArgument { op, msg: format!("the data std must be non-negative, got {std}") });
    }
    let variance = |a: f64| a * std * std + 1.0 - a;
    if variance(alpha_cumprod_from) <= 0.0 {
        return Err(Error::InvalidArgument {
            op,
            msg: "alpha-bar_from = 1 with std = 0: the marginal is a point, no flow starts there".to_string(),
        });
    }
    let ratio = variance(alpha_cumprod_to) / variance(alpha_cumprod_from);
    Ok(alpha_cumprod_to.sqrt() * mean + ratio.sqrt() * (x - alpha_cumprod_from.sqrt() * mean))
}
