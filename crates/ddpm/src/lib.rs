//! The mathematics of denoising diffusion probabilistic models (Ho et al. 2020), one
//! function per equation, in the naming of improved-diffusion's `gaussian_diffusion.py`.
//!
//! Placeholder docs; the derivation table follows.

pub mod bound;
pub mod error;
pub mod forward;
pub mod gaussian;
pub mod likelihood;
pub mod loss;
pub mod posterior;
pub mod predictor;
pub mod reverse;
pub mod sampler;
pub mod schedule;

pub use bound::{calc_bpd_loop, mean_flat, prior_bpd, vb_terms_bpd, BoundTerms, VbTerms};
pub use error::{Error, Result};
pub use forward::{predict_eps_from_xstart, predict_xstart_from_eps, q_mean_variance, q_sample, q_step_mean_variance, q_step_sample};
pub use gaussian::{normal_log_density, reparameterize, DiagonalGaussian};
pub use likelihood::{
    approx_standard_normal_cdf, discretized_gaussian_log_likelihood, discretized_gaussian_log_likelihood_exact, erf, erfc,
    normal_kl, standard_normal_cdf,
};
pub use loss::{noise_mse_weight, sample_timesteps, training_losses, LossKind, TrainingLosses, TrainingOptions};
pub use posterior::{q_posterior_mean_from_eps, q_posterior_mean_variance};
pub use predictor::{DatasetOptimalPredictor, GaussianOptimalPredictor, NoisePredictor};
pub use reverse::{p_mean_variance, predict_xstart, Parameterization, ReverseOptions, ReverseStep, VarianceKind};
pub use sampler::{
    ddim_step, p_sample, sample_ancestral, sample_ddim, sample_langevin, DdimOptions, Frame, LangevinOptions, SampleStep, Trajectory,
};
pub use schedule::{coefficient_at, cosine_betas, evenly_spaced_timesteps, linear_betas, BetaSchedule, NoiseSchedule};
