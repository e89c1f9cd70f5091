//! The `ddpm` program and its data loaders.
pub mod image;
