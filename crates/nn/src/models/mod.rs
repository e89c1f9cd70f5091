//! The two noise predictors `eps_theta(x_t, t)` of the course, and the digit
//! classifier that judges their samples.

pub mod classifier;

pub mod mlp;
pub mod unet;
pub mod unet_config;
