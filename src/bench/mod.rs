//! Benchmarks: `ddpm bench`'s report of the kernels against a reference, and the
//! timing of one training step.
//!
//! - [`cases`]: the problems timed (random inputs, the UNet's convolutions), shared
//!   with the criterion benches in `benches/`;
//! - [`report`]: the rows of `ddpm bench`;
//! - [`step`]: one UNet training step and one forward pass, timed.

pub mod cases;
pub mod report;
pub mod step;
