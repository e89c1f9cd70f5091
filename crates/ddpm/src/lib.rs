//! The mathematics of denoising diffusion probabilistic models (Ho et al. 2020), one
//! function per equation, in the naming of improved-diffusion's `gaussian_diffusion.py`.

pub mod error;
pub mod forward;
pub mod gaussian;
pub mod posterior;
pub mod schedule;

pub use error::{Error, Result};
pub use forward::{predict_eps_from_xstart, predict_xstart_from_eps, q_mean_variance, q_sample, q_step_mean_variance, q_step_sample};
pub use gaussian::{normal_log_density, reparameterize, DiagonalGaussian};
pub use posterior::{q_posterior_mean_from_eps, q_posterior_mean_variance};
pub use schedule::{coefficient_at, cosine_betas, evenly_spaced_timesteps, linear_betas, BetaSchedule, NoiseSchedule};
