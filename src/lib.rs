//! The `ddpm` program and its data loaders.
pub mod image;
pub mod plot;
pub mod cli;
