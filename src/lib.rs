//! The `ddpm` program and its data loaders.
