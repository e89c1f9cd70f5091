//! The two noise predictors `eps_theta(x_t, t)` of the course.

pub mod mlp;
pub mod unet;
pub mod unet_config;
