//! Benchmarks: `ddpm bench`'s report of the kernels against a reference, and the
//! timing of one training step.
//!
//! - [`report`]: the rows of `ddpm bench`;
//! - [`step`]: one UNet training step and one forward pass, timed.

pub mod report;
pub mod step;
