//! The `ddpm` program and its data loaders.

pub mod data;
pub mod error;
